//! Codec tests: round trip, byte-at-a-time input, garbage, oversized lengths, truncation.

use bytes::BytesMut;
use postern_proto::frame::{encode, encode_to_vec, MAGIC};
use postern_proto::*;
use proptest::prelude::*;

fn sample_messages() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            token: "s3cret".into(),
            client_id: Some("ws-123".into()),
            tunnels: vec![
                TunnelSpec { remote_port: Some(20001), ..spec(TunnelKind::Tcp, 5432) },
                TunnelSpec {
                    id: Some("app".into()),
                    path: Some("/api".into()),
                    strip_prefix: true,
                    ..spec(TunnelKind::Http, 3000)
                },
            ],
            agent: "postern/0.1.0".into(),
            group: Some("g1".into()),
        }),
        Message::Welcome(Welcome {
            session_id: "a1b2".into(),
            client_id: "ws-123".into(),
            tunnels: vec![grant()],
            heartbeat_ms: 10_000,
        }),
        Message::Refused(Refused { code: RefuseCode::Unauthorized, message: "bad token".into() }),
        Message::Control(Control::Unregister),
        Message::Control(Control::Drain { deadline_ms: 30_000 }),
        Message::Control(Control::Notice { message: "hi".into() }),
        Message::Control(Control::Open { request: 7, tunnel: spec(TunnelKind::Http, 8080) }),
        Message::Control(Control::Opened { request: 7, grant: grant() }),
        Message::Control(Control::NotOpened { request: 8, code: RefuseCode::Unavailable, message: "taken".into() }),
        Message::Control(Control::Serving { request: 7 }),
        Message::Control(Control::Close { name: "tcp-20001".into() }),
        Message::Control(Control::Closed { name: "tcp-20001".into() }),
        Message::Control(Control::Change {
            request: 1,
            change: TunnelChange::Add { tunnel: spec(TunnelKind::Tcp, 5432) },
        }),
        Message::Control(Control::Change { request: 2, change: TunnelChange::Remove { name: "ws-8080".into() } }),
        Message::Control(Control::Changed { request: 1, outcome: ChangeOutcome::Done { grant: Some(grant()) } }),
        Message::Control(Control::Changed { request: 2, outcome: ChangeOutcome::Done { grant: None } }),
        Message::Control(Control::Changed {
            request: 3,
            outcome: ChangeOutcome::Refused { message: "port 22 is not in --allow-remote".into() },
        }),
        Message::Control(Control::Changed {
            request: 4,
            outcome: ChangeOutcome::Failed { code: RefuseCode::PortNotAllowed, message: "no".into() },
        }),
    ]
}

fn spec(kind: TunnelKind, local_port: u16) -> TunnelSpec {
    TunnelSpec::new(kind, local_port)
}

fn grant() -> TunnelGrant {
    TunnelGrant {
        name: "tcp-20001".into(),
        kind: TunnelKind::Tcp,
        local_port: 5432,
        public_url: "tcp://localhost:20001".into(),
        default_url: None,
        domain_url: None,
    }
}

fn encode_all(msgs: &[Message]) -> BytesMut {
    let mut b = BytesMut::new();
    for m in msgs {
        encode(m, &mut b).expect("encode");
    }
    b
}

#[test]
fn roundtrip() {
    let msgs = sample_messages();
    let mut buf = encode_all(&msgs);
    let mut dec = Decoder::new();
    for want in &msgs {
        let got = dec.decode(&mut buf).expect("decode").expect("whole frame");
        assert_eq!(&got, want);
    }
    assert!(buf.is_empty());
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
}

#[test]
fn header_bytes_are_as_documented() {
    let bytes = encode_to_vec(&Message::Control(Control::Unregister)).expect("encode");
    let body = br#"{"type":"unregister"}"#;
    assert_eq!(&bytes[..6], &[0x50, 0x53, 0x01, 0x04, 0x00, body.len() as u8]);
    assert_eq!(&bytes[6..], body);
}

#[test]
fn many_reads() {
    // Feed the stream split at every possible byte, then one byte at a time.
    let msgs = sample_messages();
    let all = encode_all(&msgs).to_vec();
    for split in 0..=all.len() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in [&all[..split], &all[split..]] {
            buf.extend_from_slice(chunk);
            while let Some(m) = dec.decode(&mut buf).expect("decode") {
                out.push(m);
            }
        }
        assert_eq!(out, msgs, "split at {split}");
    }
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in &all {
        buf.extend_from_slice(&[*b]);
        while let Some(m) = dec.decode(&mut buf).expect("decode") {
            out.push(m);
        }
    }
    assert_eq!(out, msgs);
}

#[test]
fn garbage_prefix() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    buf.extend_from_slice(&encode_to_vec(&Message::Control(Control::Unregister)).expect("encode"));
    let err = Decoder::new().decode(&mut buf).expect_err("garbage must fail");
    assert_eq!(err, DecodeError::BadMagic { found: *b"GE" });
    // Even a single wrong byte is rejected at once.
    let mut one = BytesMut::from(&b"\x16"[..]);
    assert!(matches!(Decoder::new().decode(&mut one), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn oversized_length_is_rejected_before_buffering() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[PROTOCOL_VERSION, 1, 0xff, 0xff]);
    let err = Decoder::new().decode(&mut buf).expect_err("too large");
    assert_eq!(err, DecodeError::TooLarge { len: 0xffff });
}

#[test]
fn wrong_version_and_kind() {
    let mut buf = BytesMut::from(&[0x50, 0x53, 0x09, 0x01, 0, 0][..]);
    assert_eq!(Decoder::new().decode(&mut buf), Err(DecodeError::UnsupportedVersion { found: 9 }));
    let mut buf = BytesMut::from(&[0x50, 0x53, 0x01, 0x63, 0, 0][..]);
    assert_eq!(Decoder::new().decode(&mut buf), Err(DecodeError::UnknownKind(0x63)));
}

#[test]
fn malformed_body() {
    let mut buf = BytesMut::from(&[0x50, 0x53, 0x01, 0x01, 0, 2, b'{', b'x'][..]);
    assert!(matches!(Decoder::new().decode(&mut buf), Err(DecodeError::Malformed { kind: "Hello", .. })));
}

#[test]
fn truncated_eof() {
    let all = encode_to_vec(&sample_messages()[0]).expect("encode");
    for cut in 1..all.len() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&all[..cut]);
        assert_eq!(dec.decode(&mut buf), Ok(None), "cut at {cut}");
        let err = dec.decode_eof(&mut buf).expect_err("truncated");
        assert!(matches!(err, DecodeError::Truncated { .. }), "cut at {cut}: {err:?}");
    }
}

#[test]
fn encode_refuses_oversized_body() {
    let msg = Message::Control(Control::Notice { message: "x".repeat(MAX_BODY_LEN) });
    assert!(matches!(encode_to_vec(&msg), Err(EncodeError::TooLarge { .. })));
}

#[test]
fn hello_debug_never_shows_the_token() {
    let Message::Hello(h) = &sample_messages()[0] else { unreachable!() };
    let shown = format!("{h:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&data[..]);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => { let _ = dec.decode_eof(&mut buf); break; }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn notice_roundtrip(text in "\\PC{0,200}") {
        let msg = Message::Control(Control::Notice { message: text });
        let mut buf = BytesMut::from(&encode_to_vec(&msg).expect("encode")[..]);
        prop_assert_eq!(Decoder::new().decode(&mut buf).expect("decode"), Some(msg));
    }
}
