//! The relay's own outgoing HTTP client (webhooks, forward-auth): HTTP and HTTPS (system roots),
//! HTTP/1.1, pooled.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use postern_transport::tls::{client_config, client_config_with_roots, TlsError, Trust};
use tracing::warn;

/// The client type.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a client; without a system trust store, HTTPS fails verification but HTTP works.
pub fn client() -> Result<HttpsClient, TlsError> {
    let tls = match client_config(&Trust::SystemRoots, &[]) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no system trust store: outgoing HTTPS (webhooks, forward-auth) will fail verification");
            client_config_with_roots(rustls::RootCertStore::empty(), &[])?
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}
