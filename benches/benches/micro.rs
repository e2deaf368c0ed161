//! criterion micro-benchmarks: the handshake codec, host name parsing, and registry lookup.
//! Run with `cargo bench -p postern-bench --bench micro`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use postern_proto::frame::encode;
use postern_proto::{hostname, Decoder, Hello, Message, TunnelKind, TunnelSpec};
use postern_server::tunnel::registry::Registry;
use postern_server::tunnel::{Tunnel, TunnelInfo};
use postern_server::RelayMetrics;
use postern_server::{AgentHandle, Leases};
use tokio_util::sync::CancellationToken;

fn hello() -> Message {
    Message::Hello(Hello {
        token: "pst1.eyJqdGkiOiIwMTIzNDU2Nzg5YWJjZGVmIiwic3ViIjoid3MtMTIzIn0.c2lnbmF0dXJl".into(),
        client_id: Some("ws-123".into()),
        tunnels: vec![
            TunnelSpec { id: Some("ws-123".into()), ..TunnelSpec::new(TunnelKind::Http, 3000) },
            TunnelSpec::new(TunnelKind::Tcp, 5432),
        ],
        agent: "postern/0.1.0".into(),
        group: Some("0123456789abcdef".into()),
    })
}

fn codec(c: &mut Criterion) {
    let msg = hello();
    let mut frame = BytesMut::new();
    encode(&msg, &mut frame).expect("encode");
    c.bench_function("handshake encode Hello", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(256);
            encode(black_box(&msg), &mut out).expect("encode");
            out
        })
    });
    c.bench_function("handshake decode Hello", |b| {
        b.iter(|| {
            let mut buf = frame.clone();
            Decoder::new().decode(black_box(&mut buf)).expect("decode")
        })
    });
}

fn hostnames(c: &mut Criterion) {
    c.bench_function("hostname parse id-port", |b| {
        b.iter(|| hostname::parse(black_box("My-App-3000.Tunnel.Example.com:443"), black_box("tunnel.example.com")))
    });
}

fn registry(c: &mut Criterion) {
    let metrics = Arc::new(RelayMetrics::new(false).expect("metrics"));
    let reg = Registry::new(
        metrics,
        Arc::new(Leases::new(Duration::from_secs(60), None)),
        Default::default(),
        Default::default(),
    );
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    for i in 0..10_000u32 {
        let session = format!("s{i}");
        let agent = AgentHandle::pending(session.as_str().into(), "c".into(), CancellationToken::new(), 100);
        let info = TunnelInfo {
            name: format!("app{i}-3000"),
            kind: TunnelKind::Http,
            public_url: String::new(),
            public_port: None,
            local_port: 3000,
            id: format!("app{i}"),
            client_id: "c".into(),
            owner: "o".into(),
            session_id: session,
            agent_addr: addr,
            since: SystemTime::now(),
        };
        reg.insert(Tunnel::new(info, agent)).expect("insert");
    }
    c.bench_function("registry lookup among 10k tunnels", |b| b.iter(|| reg.get(black_box("app4242-3000")).is_some()));
}

criterion_group!(benches, codec, hostnames, registry);
criterion_main!(benches);
