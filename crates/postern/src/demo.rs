//! `postern demo`: a development relay, the demo web service and a client exposing it, all in
//! this process, so one command shows the whole path working.

use anyhow::Context;
use clap::ArgMatches;
use postern_client::AgentConfig;
use postern_proto::{TunnelKind, TunnelSpec};
use postern_server::{CertResolver, Relay};
use postern_transport::tls::Trust;
use tokio::net::TcpListener;

use crate::cli::DemoArgs;
use crate::client_cmd::run_agent;
use crate::server_cmd::{banner, bind, load};
use crate::signals::shutdown_token;

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs, matches: &ArgMatches, metrics: &prometheus::Registry) -> anyhow::Result<()> {
    let shutdown = shutdown_token();
    let mut config = load(matches, None)?;
    // The dashboard needs a token: without --admin-token the demo makes one for this run.
    let admin_token = config.admin_token.get_or_insert_with(|| {
        rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect::<String>().into()
    });
    let admin_token = admin_token.expose().to_string();
    let certs = CertResolver::load(config.cert_source().context("no state directory")?)
        .context("preparing the development certificate")?;
    let ca = certs.dev().map(|d| d.ca_cert.clone()).context("the demo needs the development CA (no --tls-cert)")?;
    let listeners = bind(config.listeners()).await?;
    let origin = TcpListener::bind(args.demo_addr)
        .await
        .with_context(|| format!("binding the demo service on {} (in use? change --demo-addr)", args.demo_addr))?;
    let demo_addr = origin.local_addr()?;
    tokio::spawn(postern_client::demo::serve(origin, shutdown.clone()));
    banner(&config, &listeners, &certs)?;
    if let Some(admin) = &listeners.admin {
        say!("  dashboard:    http://{}/ui/   admin token: {admin_token}", admin.local_addr()?);
    }
    let control_port = listeners.control.local_addr()?.port();
    let https_port = listeners.https.as_ref().context("the demo needs --https-addr")?.local_addr()?.port();

    let relay = Relay::new(config, certs, metrics)?;
    let relay_task = tokio::spawn(relay.run(listeners, shutdown.clone(), std::time::Duration::from_secs(3)));
    say!("demo service: http://{demo_addr}/");
    say!("  try:          curl --cacert {} https://demo-{}.localhost:{https_port}/", ca.display(), demo_addr.port());
    say!("  tunnel (Ctrl-C to stop):");
    let spec = TunnelSpec {
        kind: TunnelKind::Http,
        local_port: demo_addr.port(),
        remote_port: None,
        id: Some("demo".into()),
        access: None,
        domain: None,
        inspect: true,
        path: None,
        strip_prefix: false,
    };
    let mut cfg = AgentConfig::new(format!("localhost:{control_port}"), "", Trust::CaFile(ca), vec![spec]);
    cfg.client_id = Some("demo".into());
    cfg.local_host = demo_addr.ip().to_string();
    run_agent(cfg, None, shutdown.clone()).await?;
    shutdown.cancel();
    relay_task.await.context("relay task panicked")??;
    Ok(())
}
