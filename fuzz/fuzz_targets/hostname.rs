//! Fuzzes the public host name grammar: never a panic, and every accepted name is a valid
//! DNS label whose id and port put back together give the label.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_proto::hostname::{is_label, label, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (host, domain) = s.split_once('\n').unwrap_or((s, "example.com"));
    if let Ok(route) = parse(host, domain) {
        assert!(is_label(&route.label));
        match route.port {
            Some(p) => assert_eq!(label(&route.id, p), route.label),
            None => assert_eq!(route.id, route.label),
        }
    }
});
