//! Fuzzes the admin API's token-mint JSON body (`postern_proto::claims::MintRequest`) through
//! its one validation: never a panic; whatever validates has a clean subject, ids and ports in
//! their grammar, an expiry after its issue time, and signs into a token that verifies to the
//! same claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_proto::claims::{parse_ports, MintRequest};
use postern_proto::token::TokenKey;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<MintRequest>(data) else { return };
    let now = 1_800_000_000;
    let Ok(claims) = req.claims("0123456789abcdef".into(), now) else { return };
    assert!(!claims.sub.is_empty() && !claims.sub.chars().any(char::is_control));
    for p in &claims.ports {
        assert!(parse_ports(p).is_ok(), "{p:?}");
    }
    for id in &claims.ids {
        assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*'));
    }
    assert!(claims.exp.is_none_or(|e| e > now));
    let key = TokenKey::from_bytes([9; 32]);
    let token = key.sign(&claims).expect("sign");
    assert_eq!(key.verify(&token, now).expect("verify"), claims);
});
