//! OpenID Connect with the operator's identity providers: discovery, the authorization URL
//! (code flow with PKCE, a nonce and a CSRF state), the code exchange and the ID token's
//! checks. All of it is the `openidconnect` crate's; its HTTP goes through the relay's own
//! outgoing client, with a timeout and a cap on answers.
//!
//! Discovery happens on first use and is kept for an hour (so a provider that is down when the
//! relay starts does not stop it), and again after any failure. Clocks: an ID token issued up to
//! [`CLOCK_SKEW`] in the future, or expired up to that long ago, is accepted.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::outbound::HttpsClient;

/// How far the provider's clock may be from the relay's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 1024 * 1024;
const KEEP_DISCOVERY: Duration = Duration::from_secs(3600);

/// The claims read from an ID token beyond the standard ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Groups {
    /// The `groups` claim, when the provider sends one.
    #[serde(default)]
    pub groups: Vec<String>,
}
impl AdditionalClaims for Groups {}

type Fields = IdTokenFields<
    Groups,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    Groups,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed. The visitor sees only which side failed; the log gets the detail.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached, or answered with something unusable.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the code: forged, expired, replayed, or not this client's.
    #[error("the identity provider refused the code: {0}")]
    CodeRefused(String),
    /// The ID token did not pass the checks (signature, audience, nonce, times, e-mail).
    #[error("the ID token was refused: {0}")]
    TokenInvalid(String),
}

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    /// Shown on the choice page: the configured name, else the issuer's host.
    pub name: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    scopes: Vec<String>,
    discovered: Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

/// What the relay keeps (sealed in the visitor's flow cookie) between sending the visitor to
/// the provider and its coming back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The CSRF state sent to the provider.
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub pkce: String,
}

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Their e-mail address, lowercase.
    pub email: String,
    /// Their groups, as the provider's `groups` claim lists them.
    #[serde(default)]
    pub groups: Vec<String>,
}

async fn fetch(client: HttpsClient, req: HttpRequest) -> Result<HttpResponse, OidcError> {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| OidcError::Unavailable(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| OidcError::Unavailable(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(body, MAX_ANSWER).collect())
        .await
        .map_err(|_| OidcError::Unavailable("the answer's body took too long".into()))?
        .map_err(|e| OidcError::Unavailable(format!("reading the answer: {e}")))?;
    Ok(http::Response::from_parts(parts, body.to_bytes().to_vec()))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Provider {
    /// A provider as configured.
    pub fn new(spec: &super::OidcSpec) -> Result<Self, String> {
        let issuer = IssuerUrl::new(spec.issuer.clone()).map_err(|e| format!("issuer {:?}: {e}", spec.issuer))?;
        let name = spec.name.clone().unwrap_or_else(|| issuer.url().host_str().unwrap_or("sign in").to_string());
        Ok(Self {
            name,
            issuer,
            client_id: ClientId::new(spec.client_id.clone()),
            client_secret: ClientSecret::new(spec.client_secret.clone()),
            scopes: spec.scopes.clone(),
            discovered: Mutex::new(None),
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    async fn client(&self, http: &HttpsClient, redirect: &RedirectUrl) -> Result<OidcClient, OidcError> {
        let cached = self.discovered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let metadata = match cached {
            Some((m, at)) if at.elapsed() < KEEP_DISCOVERY => m,
            _ => {
                let call = |req| fetch(http.clone(), req);
                let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &call)
                    .await
                    .map_err(|e| OidcError::Unavailable(format!("discovery: {}", chain(&e))))?;
                *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = Some((m.clone(), Instant::now()));
                m
            }
        };
        Ok(OidcClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(redirect.clone()))
    }

    fn forget(&self) {
        *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The URL to send the visitor to, and what to keep until it comes back.
    pub async fn begin(&self, http: &HttpsClient, redirect: &RedirectUrl) -> Result<(String, Pending), OidcError> {
        let client = self.client(http, redirect).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        let pending =
            Pending { state: state.secret().clone(), nonce: nonce.secret().clone(), pkce: verifier.secret().clone() };
        Ok((url.to_string(), pending))
    }

    /// Exchanges `code` and checks the ID token against `pending`; `now` is the relay's clock.
    pub async fn finish(
        &self,
        http: &HttpsClient,
        redirect: &RedirectUrl,
        code: &str,
        pending: &Pending,
        now: std::time::SystemTime,
    ) -> Result<Person, OidcError> {
        let client = self.client(http, redirect).await?;
        let call = |req| fetch(http.clone(), req);
        let exchanged = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Unavailable(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce.clone()))
            .request_async(&call)
            .await;
        let tokens = match exchanged {
            Ok(t) => t,
            Err(e @ openidconnect::RequestTokenError::ServerResponse(_)) => {
                return Err(OidcError::CodeRefused(chain(&e)))
            }
            Err(e) => {
                self.forget();
                return Err(OidcError::Unavailable(format!("code exchange: {}", chain(&e))));
            }
        };
        let id_token = openidconnect::TokenResponse::id_token(&tokens)
            .ok_or_else(|| OidcError::TokenInvalid("the answer carries no ID token".into()))?;
        let skewed: chrono::DateTime<chrono::Utc> = (now - CLOCK_SKEW).into();
        let latest: chrono::DateTime<chrono::Utc> = (now + CLOCK_SKEW).into();
        let verifier = client.id_token_verifier().set_time_fn(move || skewed).set_issue_time_verifier_fn(move |iat| {
            if iat > latest {
                Err(format!("issued at {iat}, in the future: the provider's clock is ahead of the relay's"))
            } else {
                Ok(())
            }
        });
        let claims = match id_token.claims(&verifier, &Nonce::new(pending.nonce.clone())) {
            Ok(c) => c,
            Err(e) => {
                // The provider may have rotated its keys: read them again next time.
                self.forget();
                return Err(OidcError::TokenInvalid(format!("ID token: {}", chain(&e))));
            }
        };
        let email = claims.email().ok_or_else(|| OidcError::TokenInvalid("the ID token has no email claim".into()))?;
        if claims.email_verified() == Some(false) {
            return Err(OidcError::TokenInvalid(format!("{} is not verified by the provider", email.as_str())));
        }
        Ok(Person { email: email.as_str().to_ascii_lowercase(), groups: claims.additional_claims().groups.clone() })
    }
}
