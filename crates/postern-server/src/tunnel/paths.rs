//! Hosts shared by path: HTTP tunnels that each serve a path prefix (`/api`) of a bare
//! `<id>` host or of a custom domain, beside the tunnel (if any) that serves the rest of that
//! host. The edge routes a request by its host, then to the longest prefix that covers its
//! path on segment boundaries (`postern_proto::route::covers`), else to the host's whole-host
//! tunnel.
//!
//! A prefix under a host belongs to one tunnel; two prefixes never conflict, even when one is
//! inside the other (the longer wins). All the tunnels of one host belong to one owner: the
//! registry checks the host's whole-host tunnel and its lease before a prefix is added
//! ([`Registry::insert_path`]); [`Registry::route`] is the edge's look-up.

use std::sync::Arc;

use dashmap::DashMap;
use postern_proto::route;

use super::registry::{NameTaken, Registry};
use super::Tunnel;
use crate::leases::Claim;

/// One path route.
#[derive(Debug, Clone)]
struct PathRoute {
    prefix: String,
    tunnel: Arc<Tunnel>,
}

/// The path routes of every shared host.
#[derive(Debug, Default)]
pub struct Paths {
    hosts: DashMap<String, Vec<PathRoute>>,
}

impl Paths {
    /// Routes `prefix` of `host` to `tunnel`, unless another tunnel has that prefix there, or
    /// another owner has any prefix there.
    pub fn insert(&self, host: &str, prefix: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        let mut routes = self.hosts.entry(host.to_string()).or_default();
        let clash = routes.iter().find(|r| r.prefix == prefix || r.tunnel.info.owner != tunnel.info.owner);
        if let Some(r) = clash {
            return match Arc::ptr_eq(&r.tunnel, tunnel) {
                true => Ok(()),
                false => Err(NameTaken(format!("{host}{prefix}"))),
            };
        }
        routes.push(PathRoute { prefix: prefix.to_string(), tunnel: tunnel.clone() });
        // Longest first, so the first that covers a path is the longest.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(())
    }

    /// The owner of `host`'s path routes, if it has any.
    pub fn owner(&self, host: &str) -> Option<String> {
        self.hosts.get(host).and_then(|r| r.first().map(|r| r.tunnel.info.owner.clone()))
    }

    /// The tunnel whose prefix of `host` covers `path` (the longest), and that prefix.
    pub fn find(&self, host: &str, path: &str) -> Option<(Arc<Tunnel>, String)> {
        let routes = self.hosts.get(host)?;
        let r = routes.iter().find(|r| route::covers(&r.prefix, path))?;
        Some((r.tunnel.clone(), r.prefix.clone()))
    }

    /// Drops every route to `tunnel` under `hosts`.
    pub fn remove(&self, tunnel: &Arc<Tunnel>, hosts: &[&str]) {
        for host in hosts {
            let emptied = match self.hosts.get_mut(*host) {
                Some(mut routes) => {
                    routes.retain(|r| !Arc::ptr_eq(&r.tunnel, tunnel));
                    routes.is_empty()
                }
                None => false,
            };
            if emptied {
                self.hosts.remove_if(*host, |_, r| r.is_empty());
            }
        }
    }
}

impl Registry {
    /// Routes the path prefix of `tunnel` (an HTTP tunnel with a `path`) under `host` (its bare
    /// `<id>`, or its custom domain), unless the prefix is taken there or the host is another
    /// owner's (its whole-host tunnel, its lease, or its other prefixes).
    pub fn insert_path(&self, host: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        let owner = &tunnel.info.owner;
        let prefix = tunnel.path.as_deref().unwrap_or("/");
        let whole = self.tunnels.get(host).is_some_and(|t| t.info.owner != *owner);
        if whole || self.leases.check_name(host, owner) != Claim::Granted {
            return Err(NameTaken(format!("{host}{prefix}")));
        }
        self.paths.insert(host, prefix, tunnel)?;
        if host.contains('.') {
            let _ = tunnel.domain.set(host.to_string());
        }
        Ok(())
    }

    /// The tunnel a request for registry key `key` (a name, alias or custom domain) and target
    /// `path` goes to: the longest path prefix of that host covering it, else the tunnel of the
    /// whole host.
    pub fn route(&self, key: &str, path: &str) -> Option<Arc<Tunnel>> {
        self.paths.find(key, path).map(|(t, _)| t).or_else(|| self.get(key))
    }
}

impl Tunnel {
    /// The request target its local service gets for `path`: without the tunnel's prefix when
    /// it strips it (`--strip-prefix`), else `path` itself.
    pub fn local_path(&self, path: &str) -> String {
        match &self.path {
            Some(prefix) if self.strip_prefix && route::covers(prefix, path) => route::strip(prefix, path),
            _ => path.to_string(),
        }
    }
}
