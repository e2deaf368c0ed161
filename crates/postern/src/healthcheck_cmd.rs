//! `postern healthcheck`: one bounded GET of a health endpoint, as an exit code.

use anyhow::bail;
use postern_transport::probe;

use crate::cli::HealthcheckArgs;

/// Probes the listener; `Ok` only for a 2xx answer.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    // The relay's --admin-addr grammar, so POSTERN_ADMIN_ADDR means the same to both.
    let Some(addr) = args.addr.0 else {
        bail!("the admin listener is off: nothing to probe; pass the address of a listener");
    };
    let answer = probe::get(addr, &args.path, args.timeout).await?;
    // The body on one line, short: it says why (state, last error, draining).
    let mut body = answer.body.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > 200 {
        let cut = (0..=200).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
        body.truncate(cut);
        body.push_str("...");
    }
    if !answer.status.is_success() {
        bail!("{} {} answered {} {body}", addr, args.path, answer.status)
    }
    say!("{} {}: {} {body}", addr, args.path, answer.status);
    Ok(())
}
