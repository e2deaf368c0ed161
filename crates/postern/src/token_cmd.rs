//! `postern token mint|revoke`, through the relay's one minting and revoking path
//! (`postern_server::tokens`).

use postern_server::revocation::Revocations;

use crate::cli::TokenCommand;

/// Runs a `postern token` subcommand.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Mint(args) => say!("{}", args.mint()?.token),
        TokenCommand::Revoke { id, state_dir } => {
            let list = Revocations::load(&state_dir)?;
            if postern_server::tokens::revoke(&list, &id)? {
                say!("revoked {id}; a running relay disconnects its sessions within a second");
            } else {
                say!("{id} was already revoked");
            }
        }
    }
    Ok(())
}
