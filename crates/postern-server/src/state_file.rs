//! Writing files in the state directory: atomically (a temporary file, synced, then renamed, so
//! a reader never sees half a key or certificate), with secrets readable by the owner only.

use std::io::Write as _;
use std::path::Path;

/// Writes `data` to `path` atomically, creating its directory; `secret` files get mode 0600,
/// others 0644.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
