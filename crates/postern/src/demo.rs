//! `postern demo`: a development relay, a small demo web service and a client exposing it, all
//! in this process, so one command shows the whole path working.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use postern_client::AgentConfig;
use postern_proto::{TunnelKind, TunnelSpec};
use postern_server::{CertResolver, CertSource, Relay, RelayConfig, RelayListeners};
use postern_transport::tls::Trust;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::client_cmd::run_agent;
use crate::signals::shutdown_token;

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs, metrics: &prometheus::Registry) -> anyhow::Result<()> {
    let shutdown = shutdown_token();
    let source = CertSource { state_dir: args.state_dir.clone(), files: None, extra_dir: None, acme_dir: None };
    let certs = CertResolver::load(source).context("preparing the development certificate")?;
    let ca = certs.dev().map(|d| d.ca_cert.clone()).context("development CA missing")?;
    let bind = |what: &'static str, flag: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} on {addr} (is something else using it? try {flag})"))
    };
    let control = bind("relay's control port", "--control-addr", args.control_addr).await?;
    let https = bind("relay's HTTPS port", "--https-addr", args.https_addr).await?;
    let http = bind("relay's HTTP port", "--http-addr", args.http_addr).await?;
    let admin = bind("relay's admin port", "--admin-addr", args.admin_addr).await?;
    let origin = bind("demo service", "--demo-addr", args.demo_addr).await?;
    let admin_addr = admin.local_addr()?;
    let control_port = control.local_addr()?.port();
    let https_port = https.local_addr()?.port();
    let demo_addr = origin.local_addr()?;
    tokio::spawn(serve_demo(origin, shutdown.clone()));

    let config = RelayConfig {
        token_key: Some(postern_server::keys::load_or_create(&args.state_dir)?),
        ..RelayConfig::default()
    };
    let relay = Relay::new(config, certs, metrics)?;
    let relay_shutdown = shutdown.clone();
    let listeners = RelayListeners { control, http: Some(http), https: Some(https), admin: Some(admin), bore: None };
    let relay_task =
        tokio::spawn(async move { relay.run(listeners, relay_shutdown, std::time::Duration::from_secs(3)).await });

    let url = format!("https://demo-{}.localhost:{https_port}/", demo_addr.port());
    say!("postern demo");
    say!("  relay:        control localhost:{control_port}, HTTPS localhost:{https_port}");
    say!("  CA:           {}", ca.display());
    say!("  demo service: http://{demo_addr}/");
    say!("  metrics:      http://{admin_addr}/metrics");
    say!("  try:          curl --cacert {} {url}", ca.display());
    say!("  tunnel (Ctrl-C to stop):");
    let spec = TunnelSpec {
        kind: TunnelKind::Http,
        local_port: demo_addr.port(),
        remote_port: None,
        id: Some("demo".into()),
        access: None,
        domain: None,
    };
    let mut cfg = AgentConfig::new(format!("localhost:{control_port}"), "", Trust::CaFile(ca), vec![spec]);
    cfg.client_id = Some("demo".into());
    cfg.local_host = demo_addr.ip().to_string();
    run_agent(cfg, None, shutdown.clone()).await?;
    shutdown.cancel();
    relay_task.await.context("relay task panicked")??;
    Ok(())
}

/// The demo web service: one small page that shows what arrived.
pub async fn serve_demo(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| page(req, peer));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn page(req: Request<hyper::body::Incoming>, peer: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("-");
    let body = format!(
        "<!doctype html>\n<title>postern demo</title>\n<h1>Hello from the postern demo service</h1>\n\
         <p>This page came through a postern tunnel.</p>\n<pre>method: {}\npath:   {}\nhost:   {}\npeer:   {}</pre>\n",
        req.method(),
        html_escape(req.uri().path()),
        html_escape(host),
        peer
    );
    Ok(Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
