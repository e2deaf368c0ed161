//! The h2 limits of the agent link, on a real loopback connection: what a visitor can make the
//! relay send (resets of streams the agent has not accepted yet, floods of tiny DATA frames)
//! must never close the link, because closing it drops every tunnel of the agent.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, Response};
use postern_transport::mux;
use postern_transport::splice::{stream_to_socket, NoMeter};
use tokio::net::{TcpListener, TcpStream};

/// A relay-side client and an agent-side server over loopback TCP. The server does not read
/// the connection until `start` fires, so everything the client sends before is read in one
/// batch. Each accepted stream goes to `on_stream`.
async fn link<F, Fut>(on_stream: F) -> anyhow::Result<(SendRequest<Bytes>, tokio::sync::oneshot::Sender<()>)>
where
    F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (start, started) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let Ok(mut conn) = mux::server_builder().handshake::<_, Bytes>(tcp).await else { return };
        let _ = started.await;
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(on_stream(req, respond));
        }
    });
    let tcp = TcpStream::connect(addr).await?;
    let (send, conn) = mux::client_builder().handshake::<_, Bytes>(tcp).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, start))
}

/// Answers 200 with an empty body.
async fn ok(_: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let _ = respond.send_response(Response::new(()), true);
}

/// One request that must be answered: the link is still up.
async fn still_up(send: &SendRequest<Bytes>) -> anyhow::Result<()> {
    let mut send = tokio::time::timeout(Duration::from_secs(10), send.clone().ready()).await??;
    let (response, _) = send.send_request(Request::post("http://agent/").body(())?, true)?;
    let response = tokio::time::timeout(Duration::from_secs(10), response).await??;
    anyhow::ensure!(response.status() == 200);
    Ok(())
}

#[tokio::test]
async fn thousands_of_streams_reset_before_the_agent_accepts_them_keep_the_link() -> anyhow::Result<()> {
    let (send, start) = link(ok).await?;
    let mut send = send.ready().await?;
    // h2's default lets a server take 20 of these before it closes the connection.
    for _ in 0..5_000 {
        let (response, mut body) = send.send_request(Request::post("http://agent/").body(())?, false)?;
        body.send_reset(h2::Reason::CANCEL);
        drop(response);
        send = send.ready().await?;
    }
    // Let the frames reach the agent's socket, then let it read them all at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = start.send(());
    still_up(&send).await
}

#[tokio::test]
async fn a_flood_of_one_byte_frames_to_a_busy_socket_keeps_the_link() -> anyhow::Result<()> {
    // The local side: a socket whose reader never reads (a pipe with a 64-byte buffer).
    let (deaf, writer) = tokio::io::duplex(64);
    let writer = std::sync::Mutex::new(Some(writer));
    let (send, start) = link(move |req, mut respond| {
        let writer = writer.lock().ok().and_then(|mut w| w.take());
        async move {
            let Some(writer) = writer else { return ok(req, respond).await };
            if respond.send_response(Response::new(()), false).is_ok() {
                let _ = stream_to_socket(req.into_body(), writer, &NoMeter).await;
            }
        }
    })
    .await?;
    let _ = start.send(());
    let mut ready = send.clone().ready().await?;
    let (_response, mut body) = ready.send_request(Request::post("http://agent/").body(())?, false)?;
    // 200 000 one-byte frames: h2's default overhead budget closes the connection after about
    // 65 000 of them sitting unread.
    let one = Bytes::from_static(b"x");
    for _ in 0..200_000 {
        body.send_data(one.clone(), false)?;
        tokio::task::yield_now().await;
    }
    still_up(&send).await?;
    drop(deaf);
    Ok(())
}
