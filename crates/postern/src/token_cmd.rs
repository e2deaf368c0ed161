//! `postern token mint|revoke`: the relay's one minting and revoking path
//! (`postern_server::tokens`), from the command line.

use anyhow::Context;
use postern_proto::mint::{MintRequest, TokenKind};
use postern_proto::token::Limits;
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
            if postern_server::tokens::revoke(&list, &args.id)? {
                say!("revoked {}; a running relay disconnects its sessions within a second", args.id);
            } else {
                say!("{} was already revoked", args.id);
            }
            Ok(())
        }
    }
}

/// The request the flags describe.
pub fn request(args: &MintArgs) -> anyhow::Result<MintRequest> {
    let (ttl_secs, never_expires) = match args.ttl.trim() {
        "never" => (None, true),
        ttl => (Some(humantime::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}"))?.as_secs()), false),
    };
    Ok(MintRequest {
        subject: args.subject.clone(),
        ids: args.ids.clone(),
        ports: args.ports.clone(),
        ttl_secs,
        never_expires,
        admin: args.admin,
        limits: Limits {
            max_tunnels: args.max_tunnels,
            max_streams: args.max_streams,
            bandwidth: args.bandwidth,
            requests_per_sec: args.requests_per_sec,
        },
        share: args.share,
        kind: if args.kind == "bore" { TokenKind::Bore } else { TokenKind::Postern },
    })
}

/// Builds and signs the token.
pub fn mint(args: &MintArgs) -> anyhow::Result<String> {
    let request = request(args)?;
    let key = keys::load_or_create(&args.state_dir)?;
    let now = postern_server::clock::unix_secs();
    Ok(postern_server::tokens::mint(&key, &request, Some(&args.state_dir), now)?.token)
}
