//! Public connections and requests that are cut before the agent has answered them: a connect
//! scan (`nmap -sT`), a visitor who gives up, a client cancelling HTTP/2 requests. The relay
//! resets the agent's stream each time; none of it may cost the agent its session, and every
//! other connection on the same agent keeps working (issue #13, D1).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use postern_e2e::{http_tunnel, origin, tcp, TestAgent, TestRelay, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A long-lived honest connection through a TCP tunnel: one round trip through the echo origin.
async fn round_trip(s: &mut TcpStream, i: u32) -> anyhow::Result<()> {
    let msg = format!("ping {i:08}");
    s.write_all(msg.as_bytes()).await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back)).await.context("echo stalled")??;
    anyhow::ensure!(back == msg.as_bytes(), "echo came back corrupted");
    Ok(())
}

/// Keeps `s` echoing until `stop` fires; returns how many round trips it made.
async fn keep_echoing(mut s: TcpStream, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<u32> {
    let mut i = 0;
    while !stop.is_cancelled() {
        round_trip(&mut s, i).await.with_context(|| format!("honest connection broke after {i} round trips"))?;
        i += 1;
        tokio::task::yield_now().await;
    }
    round_trip(&mut s, i).await?;
    Ok(i + 1)
}

/// The agent is still on its first session, and its tunnels still answer.
async fn same_session(agent: &TestAgent, first: &str) -> anyhow::Result<()> {
    let st = agent.state.borrow().clone();
    anyhow::ensure!(
        st.session_id.as_deref() == Some(first) && st.sessions == 1,
        "the agent lost its session: now {:?} after {} sessions (last error: {:?})",
        st.session_id,
        st.sessions,
        st.last_error
    );
    Ok(())
}

/// Connects and resets at once (SO_LINGER 0), `n` times with up to `parallel` in flight.
async fn connect_and_reset(addr: SocketAddr, n: usize, parallel: usize) -> usize {
    let mut set = tokio::task::JoinSet::new();
    let mut done = 0;
    for _ in 0..n {
        set.spawn(async move {
            let Ok(s) = TcpStream::connect(addr).await else { return false };
            let _ = s.set_zero_linger();
            drop(s);
            true
        });
        if set.len() >= parallel {
            done += usize::from(set.join_next().await.and_then(Result::ok).unwrap_or(false));
        }
    }
    while let Some(r) = set.join_next().await {
        done += usize::from(r.unwrap_or(false));
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connect_resets_on_a_tcp_tunnel_leave_the_session_and_its_connections_alone() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.max_connections_per_ip = 100_000).await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    let first = agent.state.borrow().session_id.clone().context("session id")?;

    let honest = TcpStream::connect(public).await?;
    honest.set_nodelay(true)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let echoing = tokio::spawn(keep_echoing(honest, stop.clone()));

    let flooded = connect_and_reset(public, 1_000, 64).await;
    // A few more round trips after the flood, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let trips = echoing.await?.context("honest connection")?;
    assert!(trips > 1, "the honest connection made only {trips} round trips");
    same_session(&agent, &first).await?;
    // Every connection of the flood got through to the tunnel (none found the port closed).
    assert_eq!(flooded, 1_000, "only {flooded} of the flood's connections were accepted");
    // New visitors are still served through the same session.
    let back = postern_e2e::echo_through(public, b"after the flood").await?;
    assert_eq!(back, b"after the flood");
    same_session(&agent, &first).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_http2_requests_across_connections_leave_the_session_and_its_connections_alone() -> anyhow::Result<()>
{
    let relay = TestRelay::start().await?;
    let web = origin::http("web").await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("web", web.port()), tcp(echo.port())]));
    let grants = agent.connected().await?;
    let first = agent.state.borrow().session_id.clone().context("session id")?;
    let host = format!("web-{}.localhost", web.port());
    let port: u16 = grants[1].public_url.rsplit(':').next().context("port")?.parse()?;

    let honest = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    honest.set_nodelay(true)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let echoing = tokio::spawn(keep_echoing(honest, stop.clone()));

    // The relay's public HTTP/2 server keeps its own rapid-reset limit per connection, so the
    // resets are spread over many connections, each staying under it.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (https, ca, host) = (relay.https_addr, relay.ca.clone(), host.clone());
        set.spawn(async move { cancel_requests(https, ca, &host, 20).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let trips = echoing.await?.context("honest connection")?;
    assert!(trips > 1, "the honest connection made only {trips} round trips");

    same_session(&agent, &first).await?;
    // The HTTP tunnel itself still answers, on the same session.
    let (status, _, body) = postern_e2e::http::get_status_from(&relay, &host, &[], [127, 0, 0, 1].into()).await?;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    same_session(&agent, &first).await?;
    relay.stop().await
}

/// Opens one HTTP/2 connection to the HTTPS edge, sends `n` requests on it and cancels each at
/// once: headers with END_STREAM, then the response is dropped unread, so h2 sends RST_STREAM.
async fn cancel_requests(https: SocketAddr, ca: std::path::PathBuf, host: &str, n: usize) -> anyhow::Result<()> {
    use postern_transport::tls::{client_config, server_name, Trust};
    let cfg = client_config(&Trust::CaFile(ca), &[b"h2"])?;
    let tcp = TcpStream::connect(https).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(server_name(host)?, tcp).await?;
    let (client, conn) = h2::client::handshake(tls).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await?;
    for i in 0..n {
        let req = http::Request::get(format!("https://{host}/bytes/{i}")).body(())?;
        let (response, _) = client.send_request(req, true)?;
        drop(response);
        client = client.ready().await?;
    }
    // Let the resets reach the relay before the connection goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(client);
    driver.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_http2_server_still_closes_a_rapid_reset_connection() -> anyhow::Result<()> {
    use postern_transport::tls::{client_config, server_name, Trust};
    let relay = TestRelay::start().await?;
    let web = origin::http("web").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("web", web.port())]));
    agent.connected().await?;
    let host = format!("web-{}.localhost", web.port());
    let first = agent.state.borrow().session_id.clone().context("session id")?;

    // One public connection that opens and cancels streams without end (CVE-2023-44487):
    // the relay's own public server, unlike the agent link, sends GOAWAY.
    let cfg = client_config(&Trust::CaFile(relay.ca.clone()), &[b"h2"])?;
    let tcp = TcpStream::connect(relay.https_addr).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(server_name(&host)?, tcp).await?;
    let (client, conn) = h2::client::handshake(tls).await?;
    let driver = tokio::spawn(conn);
    let mut client = Some(client);
    let mut sent = 0;
    while let Some(c) = client.take() {
        let Ok(mut ready) = c.ready().await else { break };
        let req = http::Request::get(format!("https://{host}/")).body(())?;
        let Ok((response, _)) = ready.send_request(req, true) else { break };
        drop(response);
        sent += 1;
        if sent < 10_000 {
            client = Some(ready);
        }
    }
    let closed = tokio::time::timeout(PATIENCE, driver).await.context("connection still open")?;
    assert!(sent < 10_000, "the relay never closed a connection that reset {sent} streams ({closed:?})");
    same_session(&agent, &first).await?;
    relay.stop().await
}
