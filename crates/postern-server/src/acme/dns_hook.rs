//! DNS-01 through an operator's program (`--acme-dns-hook`): the relay runs
//! `HOOK set <record> <value>` before asking the CA to validate, and `HOOK clear <record> <value>`
//! afterwards. `<record>` is the fully qualified TXT name (`_acme-challenge.example.com.`).
//!
//! The hook talks to the DNS provider (an RFC 2136 update with `nsupdate`, a provider's API) and
//! should return once the record is published. It gets two minutes; a non-zero exit fails the
//! order with the hook's stderr in the error.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How long one hook run may take.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `hook action record value`.
pub async fn run(hook: &Path, action: &str, record: &str, value: &str) -> Result<(), String> {
    let mut cmd = Command::new(hook);
    cmd.args([action, record, value]).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(HOOK_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("running {}: {e}", hook.display())),
        Err(_) => return Err(format!("{} {action} took longer than {}s", hook.display(), HOOK_TIMEOUT.as_secs())),
    };
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{} {action} {record} failed ({}): {}", hook.display(), out.status, stderr.trim()))
    }
}
