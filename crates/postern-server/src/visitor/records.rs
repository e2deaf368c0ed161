//! The records of visitor identity, as the state files and the admin API hold them: sessions,
//! grants and passes (share links, service tokens). Each names its tunnel and that tunnel's
//! owner, whose token may see and end it.

use serde::{Deserialize, Serialize};

use super::book::Entry;

/// 128 random bits as 32 lowercase hexadecimal digits.
pub fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Who a session stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Who {
    /// A person who signed in with an identity provider.
    Oidc {
        /// Their e-mail, lowercase.
        email: String,
        /// Their groups.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
    /// The holder of a share link.
    Share {
        /// The link's id.
        pass: String,
    },
}

/// A visitor's sign-in to one tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Its id (what the cookie carries, sealed).
    pub id: String,
    /// The tunnel's name.
    pub tunnel: String,
    /// The tunnel's owner.
    pub owner: String,
    /// The host the cookie is for.
    pub host: String,
    /// Who.
    #[serde(flatten)]
    pub who: Who,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub expires: u64,
}

impl Entry for Session {
    fn expires(&self) -> u64 {
        self.expires
    }
    fn key(&self) -> &str {
        &self.id
    }
}

impl Session {
    /// The e-mail of a provider's sign-in.
    pub fn email(&self) -> Option<&str> {
        match &self.who {
            Who::Oidc { email, .. } => Some(email),
            Who::Share { .. } => None,
        }
    }
}

/// An e-mail address the tunnel's owner let in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    /// The tunnel's name.
    pub tunnel: String,
    /// The tunnel's owner.
    pub owner: String,
    /// Lowercase.
    pub email: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; `u64::MAX` until revoked.
    pub expires: u64,
}

impl Entry for Grant {
    fn expires(&self) -> u64 {
        self.expires
    }
    fn key(&self) -> &str {
        &self.email
    }
}

/// What a pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// A URL a browser opens once to get a session.
    Share,
    /// A bearer token programs send with every request.
    Service,
}

impl PassKind {
    /// Its name in signatures and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Share => "share",
            Self::Service => "service",
        }
    }
}

/// A share link or service token of one tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pass {
    /// Its id (16 hexadecimal digits).
    pub id: String,
    /// Share link or service token.
    pub kind: PassKind,
    /// The tunnel's name.
    pub tunnel: String,
    /// The tunnel's owner.
    pub owner: String,
    /// A label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub expires: u64,
    /// Uses allowed (share links), if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// Uses so far.
    #[serde(default)]
    pub uses: u32,
}

impl Entry for Pass {
    fn expires(&self) -> u64 {
        self.expires
    }
    fn key(&self) -> &str {
        &self.id
    }
}
