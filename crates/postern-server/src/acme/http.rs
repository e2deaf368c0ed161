//! The HTTP client instant-acme talks to the ACME directory through: hyper over rustls with the
//! relay's crypto provider, trusting the system roots or one CA file (`--acme-ca`, for a test CA
//! such as pebble's).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use postern_transport::tls::{client_config, TlsError, Trust};

/// hyper + rustls, HTTPS only.
pub struct AcmeHttp(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl std::fmt::Debug for AcmeHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcmeHttp")
    }
}

impl AcmeHttp {
    /// Trusts `ca` if given, else the system roots.
    pub fn new(ca: Option<&Path>) -> Result<Self, TlsError> {
        let trust = match ca {
            Some(path) => Trust::CaFile(path.to_path_buf()),
            None => Trust::SystemRoots,
        };
        let tls = client_config(&trust, &[])?;
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        Ok(Self(Client::builder(TokioExecutor::new()).build(https)))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(30), fut).await {
                Ok(Ok(resp)) => Ok(BytesResponse::from(resp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Str("ACME request timed out after 30 s")),
            }
        })
    }
}
