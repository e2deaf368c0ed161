//! `postern token mint`: signs a scoped token with the relay's key.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use postern_proto::token::{Claims, Limits};
use postern_server::keys;
use postern_server::revocation::Revocations;

use crate::cli::{MintArgs, TokenCommand};

/// Runs a `postern token` subcommand.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Mint(args) => {
            say!("{}", mint(&args)?);
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let list = Revocations::load(&args.state_dir)?;
            if list.revoke(&args.id)? {
                say!("revoked {}; a running relay disconnects its sessions within a second", args.id);
            } else {
                say!("{} was already revoked", args.id);
            }
            Ok(())
        }
    }
}

/// Builds and signs the token.
pub fn mint(args: &MintArgs) -> anyhow::Result<String> {
    anyhow::ensure!(!args.subject.trim().is_empty(), "--subject must not be empty");
    for p in &args.ports {
        let ok = match p.split_once('-') {
            Some((lo, hi)) => lo.trim().parse::<u16>().is_ok() && hi.trim().parse::<u16>().is_ok(),
            None => p.trim().parse::<u16>().is_ok(),
        };
        anyhow::ensure!(ok, "--ports {p:?}: expected a port or LOW-HIGH");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let exp = match args.ttl.as_str() {
        "never" | "none" | "0" => None,
        ttl => Some(now + humantime::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}"))?.as_secs()),
    };
    let key = keys::load_or_create(&args.state_dir)?;
    let jti = format!("{:016x}", rand::random::<u64>());
    let claims = Claims {
        jti,
        sub: args.subject.clone(),
        ids: args.ids.clone(),
        ports: args.ports.clone(),
        iat: now,
        exp,
        admin: args.admin,
        limits: Limits {
            max_tunnels: args.max_tunnels,
            max_streams: args.max_streams,
            bandwidth: args.bandwidth,
            requests_per_sec: args.requests_per_sec,
        },
        share: args.share,
    };
    let token = key.sign(&claims)?;
    if args.kind == "bore" {
        postern_server::bore::secrets::add(&args.state_dir, &token)
            .with_context(|| format!("recording the bore token in {}", args.state_dir.display()))?;
    }
    Ok(token)
}
