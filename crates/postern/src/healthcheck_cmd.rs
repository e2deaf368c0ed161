//! `postern healthcheck`: one bounded GET of a health endpoint, as an exit code.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use postern_transport::probe;

use crate::cli::HealthcheckArgs;

/// Probes the listener; `Ok` only for a 2xx answer.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    if args.addr.eq_ignore_ascii_case("off") {
        bail!("the admin listener is off (POSTERN_ADMIN_ADDR=off): nothing to probe; pass the address of a listener");
    }
    let addr: SocketAddr =
        args.addr.parse().with_context(|| format!("{:?} is not an address such as 127.0.0.1:7001", args.addr))?;
    let answer = probe::get(addr, &args.path, args.timeout).await?;
    // The body on one line, short: it says why (state, last error, draining).
    let mut body = answer.body.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > 200 {
        let cut = (0..=200).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
        body.truncate(cut);
        body.push_str("...");
    }
    if answer.status.is_success() {
        say!("{} {}: {} {body}", addr, args.path, answer.status);
        Ok(())
    } else {
        bail!("{} {} answered {} {body}", addr, args.path, answer.status)
    }
}
