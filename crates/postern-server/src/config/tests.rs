//! The layering of relay settings, without a process: flags over environment over file over
//! defaults, for scalar, boolean, list and file-only settings.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::Duration;

use super::*;

fn layers<'a>(flags: &[&str], env: &'a dyn Fn(&str) -> Option<OsString>, file: Option<&str>) -> Layers<'a> {
    Layers {
        flags: Layers::flags_from_args(flags.iter().copied()).expect("flags parse"),
        env,
        file: file.map(|t| ("relay.toml".to_string(), t.to_string())),
    }
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    move |k| map.get(k).map(OsString::from)
}

fn no_env(_: &str) -> Option<OsString> {
    None
}

#[test]
fn the_declared_defaults() {
    let c = RelayConfig::default();
    assert_eq!(c.domain, "localhost");
    assert_eq!(c.listeners().control, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(c.listeners().https, Some("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(c.listeners().bore, None);
    assert_eq!(c.tcp_ports, PortRange::Range(20000, 29999));
    assert_eq!((c.heartbeat_interval, c.heartbeat_timeout), (Duration::from_secs(10), Duration::from_secs(20)));
    assert_eq!((c.max_streams_per_agent, c.max_tunnels_per_agent), (10_000, 32));
    assert_eq!(c.txt_proof, TxtLookup::System);
    assert!(c.acme().is_none() && c.token.is_none() && !c.http_redirect);
    // A public domain moves the listeners to every interface and the standard ports.
    let public = RelayConfig { domain: "tunnel.example".into(), ..RelayConfig::default() };
    assert_eq!(public.listeners().control, "0.0.0.0:7000".parse().unwrap());
    assert_eq!(public.listeners().http, Some("0.0.0.0:80".parse().unwrap()));
    assert_eq!(public.tcp_bind(), std::net::IpAddr::from([0, 0, 0, 0]));
    assert_eq!(public.listeners().admin, Some("127.0.0.1:7001".parse().unwrap()), "admin stays private");
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let file = r#"
        domain = "from-file.example"
        tcp_ports = "1000-2000"
        max_agents = 5
        heartbeat_interval = "1m 30s"
        http_redirect = true
        bore_addr = "127.0.0.1:7835"
    "#;
    let env = env_of(&[
        ("POSTERN_DOMAIN", "from-env.example"),
        ("POSTERN_MAX_AGENTS", "6"),
        ("POSTERN_HTTP_REDIRECT", "false"),
    ]);
    let c = RelayConfig::from_layers(&layers(&["--max-agents", "7"], &env, Some(file))).expect("load");
    assert_eq!(c.domain, "from-env.example", "environment over file");
    assert_eq!(c.max_agents, 7, "flag over environment");
    assert!(!c.http_redirect, "environment over file, for a boolean");
    assert_eq!(c.tcp_ports, PortRange::Range(1000, 2000), "file over default");
    assert_eq!(c.heartbeat_interval, Duration::from_secs(90));
    assert_eq!(c.listeners().bore, Some("127.0.0.1:7835".parse().unwrap()));
    assert_eq!(c.max_public_connections, 50_000, "default");
    // A bare boolean flag means true, and beats the environment.
    let c = RelayConfig::from_layers(&layers(&["--http-redirect"], &env, Some(file))).expect("load");
    assert!(c.http_redirect);
}

#[test]
fn a_list_comes_whole_from_one_layer() {
    let file = r#"allow_domains = ["a.example", "b.example"]"#;
    let c = RelayConfig::from_layers(&layers(&[], &no_env, Some(file))).expect("load");
    assert_eq!(c.allow_domains, ["a.example", "b.example"]);
    let env = env_of(&[("POSTERN_ALLOW_DOMAINS", "c.example,d.example")]);
    let c = RelayConfig::from_layers(&layers(&[], &env, Some(file))).expect("load");
    assert_eq!(c.allow_domains, ["c.example", "d.example"]);
    let c = RelayConfig::from_layers(&layers(&["--allow-domain", "e.example"], &env, Some(file))).expect("load");
    assert_eq!(c.allow_domains, ["e.example"]);
}

#[test]
fn the_file_holds_policies_and_nothing_unknown() {
    let file = r#"
        [[policy]]
        ids = "internal-*"
        allow_ips = ["10.0.0.0/8"]
        forward_auth = "http://127.0.0.1:4181/verify"
        forward_auth_headers = ["Remote-User"]
    "#;
    let c = RelayConfig::from_layers(&layers(&[], &no_env, Some(file))).expect("load");
    assert_eq!(c.policies.matching("internal-app").len(), 1);
    assert!(c.policies.matching("public-app").is_empty());

    let err = RelayConfig::from_layers(&layers(&[], &no_env, Some("domian = \"typo\""))).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "domian"), "{err}");
    let err = RelayConfig::from_layers(&layers(&[], &no_env, Some("tcp_ports = \"9-1\""))).unwrap_err();
    assert!(err.to_string().starts_with("config file relay.toml:"), "{err}");
    let err = RelayConfig::from_layers(&layers(&[], &no_env, Some("[[policy]]\nids = \"x\"\nallow_ips = [\"nope\"]")))
        .unwrap_err();
    assert!(err.to_string().contains("policy \"x\""), "{err}");
    // A flag that is not a setting is a command-line error.
    assert!(Layers::flags_from_args(["--domian", "x"]).is_err());
}

#[test]
fn empty_values_mean_unset_and_secrets_stay_hidden() {
    let env = env_of(&[("POSTERN_TOKEN", ""), ("POSTERN_ADMIN_TOKEN", "root"), ("POSTERN_HTTPS_ADDR", "off")]);
    let c = RelayConfig::from_layers(&layers(&[], &env, Some("token = \"from-file\""))).expect("load");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("from-file"), "an empty variable does not hide the file");
    assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("root"));
    assert_eq!(c.listeners().https, None);
    assert!(!format!("{c:?}").contains("root") && !format!("{c:?}").contains("from-file"));
}
