//! Property tests for the host name grammar.

use postern_proto::hostname::{label, parse, HostError};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    // DNS-label ids, hyphens inside, at most 57 characters so `-65535` still fits in 63.
    "[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?"
}

proptest! {
    #[test]
    fn id_port_roundtrip(id in id(), port in 1u16..=65535, upper in any::<bool>(), dot in any::<bool>(), with_port in any::<bool>()) {
        let mut host = format!("{}.tunnel.example.com", label(&id, port));
        if upper { host = host.to_uppercase(); }
        if dot { host.push('.'); }
        if with_port { host.push_str(":8443"); }
        let r = parse(&host, "tunnel.example.com").expect("valid");
        prop_assert_eq!(r.port, Some(port));
        prop_assert_eq!(r.id, id.clone());
        prop_assert_eq!(r.label, label(&id, port));
    }

    #[test]
    fn never_panics(host in "\\PC{0,80}", domain in "[a-zA-Z0-9.-]{0,20}") {
        let _ = parse(&host, &domain);
    }

    #[test]
    fn bad_characters_are_invalid(prefix in "[a-z]{1,5}", bad in "[_!@#$%^&*()+=/\\\\ ]", suffix in "[a-z]{0,5}") {
        let host = format!("{prefix}{bad}{suffix}.example.com");
        prop_assert!(matches!(parse(&host, "example.com"), Err(HostError::Invalid(_))));
    }
}
