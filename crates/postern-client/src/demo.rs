//! The demo web service `postern demo` exposes: one small page that shows what arrived, so a
//! first run has something to look at through the tunnel.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the page on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
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
