//! Share links and service tokens: signed credentials for one tunnel, each backed by a record
//! (so it can be listed, counted and revoked).
//!
//! | pass | credential | used |
//! |---|---|---|
//! | share link | `https://<host>/.postern/share?pass=<id>.<sig>` | once per visit, to set a session cookie; the URL then redirects to `/`, so the secret leaves the address bar |
//! | service token | `pss1.<id>.<sig>` | on every request: `Authorization: Bearer …` or `X-Postern-Service-Token: …` |
//!
//! `sig` is an HMAC-SHA256 (the relay's key, [`super::seal`]) over the pass's kind, id, tunnel
//! and expiry: nobody without the key can make one, and one cannot be moved to another tunnel.

use super::records::{random_id, Pass, PassKind};
use super::Visitors;
use crate::clock::unix_secs;

/// Prefix of service tokens.
pub const SERVICE_PREFIX: &str = "pss1.";
/// Longest credential text looked at.
const MAX_LEN: usize = 256;

fn signed(p: &Pass) -> String {
    format!("{}|{}|{}|{}", p.kind.as_str(), p.id, p.tunnel, p.expires)
}

/// What a new pass is for.
#[derive(Debug)]
pub struct NewPass<'a> {
    /// Share link or service token.
    pub kind: PassKind,
    /// The tunnel's name.
    pub tunnel: &'a str,
    /// The tunnel's owner.
    pub owner: &'a str,
    /// A label.
    pub name: Option<String>,
    /// Lifetime, seconds.
    pub ttl_secs: u64,
    /// Uses allowed (share links).
    pub max_uses: Option<u32>,
}

impl Visitors {
    /// Records a pass and returns it with its credential: the `<id>.<sig>` of a share link, or
    /// the whole `pss1.` service token.
    pub fn issue_pass(&self, new: NewPass<'_>) -> (Pass, String) {
        let now = unix_secs();
        let pass = Pass {
            id: random_id()[..16].to_string(),
            kind: new.kind,
            tunnel: new.tunnel.to_string(),
            owner: new.owner.to_string(),
            name: new.name,
            created: now,
            expires: now.saturating_add(new.ttl_secs),
            max_uses: new.max_uses,
            uses: 0,
        };
        self.passes.add(now, pass.clone());
        let credential = format!("{}.{}", pass.id, self.sealer.sign(&signed(&pass)));
        let credential = match new.kind {
            PassKind::Share => credential,
            PassKind::Service => format!("{SERVICE_PREFIX}{credential}"),
        };
        (pass, credential)
    }

    /// The live pass of `kind` for `tunnel` of `owner` that `credential` proves, if any (a
    /// name another owner takes later does not inherit its passes).
    pub fn check_pass(&self, kind: PassKind, credential: &str, (tunnel, owner): (&str, &str)) -> Option<Pass> {
        if credential.len() > MAX_LEN {
            return None;
        }
        let credential = match kind {
            PassKind::Share => credential,
            PassKind::Service => credential.strip_prefix(SERVICE_PREFIX)?,
        };
        let (id, sig) = credential.split_once('.')?;
        let pass = self.passes.get(id, unix_secs(), |p| p.kind == kind && p.tunnel == tunnel && p.owner == owner)?;
        self.sealer.verify(&signed(&pass), sig).then_some(pass)
    }

    /// Counts one use of a share link; `None` when it is void or used up.
    pub fn use_share(&self, credential: &str, tunnel: (&str, &str)) -> Option<Pass> {
        let pass = self.check_pass(PassKind::Share, credential, tunnel)?;
        let now = unix_secs();
        self.passes.edit(now, |items| {
            let Some(p) = items.iter_mut().find(|p| p.id == pass.id) else { return (None, false) };
            if p.max_uses.is_some_and(|max| p.uses >= max) {
                return (None, false);
            }
            p.uses += 1;
            (Some(p.clone()), true)
        })
    }

    /// Revokes a pass, and ends the sessions it opened; returns it.
    pub fn revoke_pass(&self, id: &str) -> Option<Pass> {
        let pass = self.passes.remove(unix_secs(), |p| p.id == id).pop()?;
        self.end_sessions(|s| matches!(&s.who, super::records::Who::Share { pass } if pass == id));
        Some(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visitor::seal::Sealer;
    use postern_proto::token::TokenKey;

    fn visitors() -> Visitors {
        let sealer = Sealer::new(&TokenKey::from_bytes([3; 32]));
        Visitors::new(&[], sealer, None, std::time::Duration::from_secs(60), None).expect("visitors")
    }

    #[test]
    fn share_links_and_service_tokens() {
        let v = visitors();
        let new =
            |kind, max_uses| NewPass { kind, tunnel: "app-3000", owner: "team", name: None, ttl_secs: 60, max_uses };
        let (share, url) = v.issue_pass(new(PassKind::Share, Some(1)));
        assert!(v.check_pass(PassKind::Share, &url, ("other-3000", "team")).is_none(), "bound to its tunnel");
        assert!(v.check_pass(PassKind::Share, &url, ("app-3000", "next-owner")).is_none(), "and its owner");
        assert!(v.check_pass(PassKind::Service, &url, ("app-3000", "team")).is_none(), "bound to its kind");
        assert_eq!(v.use_share(&url, ("app-3000", "team")).map(|p| p.uses), Some(1));
        assert!(v.use_share(&url, ("app-3000", "team")).is_none(), "used up");
        let (_, token) = v.issue_pass(new(PassKind::Service, None));
        assert!(token.starts_with(SERVICE_PREFIX));
        assert!(v.check_pass(PassKind::Service, &token, ("app-3000", "team")).is_some());
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert!(v.check_pass(PassKind::Service, &forged, ("app-3000", "team")).is_none());
        assert!(v.revoke_pass(&share.id).is_some());
        assert!(v.check_pass(PassKind::Share, &url, ("app-3000", "team")).is_none(), "revoked");
    }
}
