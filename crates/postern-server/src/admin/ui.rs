//! The dashboard at `/ui/` on the admin listener: static assets embedded in the binary (no
//! CDN, no build step), which use only the documented API with the bearer token the user
//! pastes (kept in `sessionStorage`, never in a URL or cookie).
//!
//! - `/ui/` is the page: `Cache-Control: no-cache`, so a new relay's assets are picked up.
//! - `/ui/assets/<name>.<hash>.<ext>`: the scripts and styles under content-hashed names, cached
//!   for a year (`immutable`); a name whose hash does not match is `404`.
//! - Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
//!   script or style, no framing), `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: no-referrer`.
//!
//! The assets are `crates/postern-server/ui/`: `core.js` (helpers, API client, live updates,
//! graphs), `app.js` (the pages) and `visitors.js` (a tunnel's signed-in visitors), a style sheet, and `index.html`, which names each asset as
//! `{{name}}`, replaced here by its hashed path; uPlot (MIT, `ui/vendor/`) draws the graphs.

use std::collections::HashMap;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use super::AdminBody;

/// The policy every dashboard answer carries.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

const INDEX: &str = include_str!("../../ui/index.html");

/// The assets: logical name, bytes, content type.
const ASSETS: &[(&str, &[u8], &str)] = &[
    ("core.js", include_bytes!("../../ui/core.js"), "text/javascript; charset=utf-8"),
    ("app.js", include_bytes!("../../ui/app.js"), "text/javascript; charset=utf-8"),
    ("visitors.js", include_bytes!("../../ui/visitors.js"), "text/javascript; charset=utf-8"),
    ("app.css", include_bytes!("../../ui/app.css"), "text/css; charset=utf-8"),
    ("uPlot.iife.min.js", include_bytes!("../../ui/vendor/uPlot.iife.min.js"), "text/javascript; charset=utf-8"),
    ("uPlot.min.css", include_bytes!("../../ui/vendor/uPlot.min.css"), "text/css; charset=utf-8"),
];

/// The dashboard's page and assets, with their hashed names, built once per relay.
#[derive(Debug)]
pub struct Ui {
    index: Bytes,
    assets: HashMap<String, (&'static [u8], &'static str)>,
}

impl Default for Ui {
    fn default() -> Self {
        let mut index = INDEX.to_string();
        let mut assets = HashMap::new();
        for (name, bytes, kind) in ASSETS {
            let hash: String = Sha256::digest(bytes).iter().take(5).map(|b| format!("{b:02x}")).collect();
            let hashed = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{name}.{hash}"),
            };
            index = index.replace(&format!("{{{{{name}}}}}"), &format!("assets/{hashed}"));
            assets.insert(hashed, (*bytes, *kind));
        }
        Self { index: Bytes::from(index), assets }
    }
}

impl Ui {
    /// Bytes of the page and all assets together, as served (uncompressed).
    pub fn size(&self) -> usize {
        self.index.len() + self.assets.values().map(|(b, _)| b.len()).sum::<usize>()
    }

    /// Answers `GET /ui/<rest>`.
    pub fn serve(&self, rest: &[&str]) -> Response<AdminBody> {
        match rest {
            [] | ["index.html"] => answer(StatusCode::OK, self.index.clone(), "text/html; charset=utf-8", "no-cache"),
            ["assets", name] => match self.assets.get(*name) {
                Some((bytes, kind)) => {
                    answer(StatusCode::OK, Bytes::from_static(bytes), kind, "public, max-age=31536000, immutable")
                }
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

fn not_found() -> Response<AdminBody> {
    answer(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"), "text/plain; charset=utf-8", "no-store")
}

fn answer(status: StatusCode, body: Bytes, kind: &'static str, cache: &'static str) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `/` and `/ui` lead to the dashboard.
pub fn redirect() -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served_under_its_hash() {
        let ui = Ui::default();
        let page = String::from_utf8(ui.index.to_vec()).unwrap();
        assert!(!page.contains("{{"), "an asset the page names is not embedded: {page}");
        for hashed in ui.assets.keys() {
            assert!(page.contains(&format!("assets/{hashed}")), "{hashed} is not on the page");
            let resp = ui.serve(&["assets", hashed]);
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(resp.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        }
        assert_eq!(ui.serve(&["assets", "app.0000000000.js"]).status(), StatusCode::NOT_FOUND);
        assert!(!page.contains("<script>"), "inline script");
    }
}
