//! Release builds for x86-64 Linux lay out the functions an idle relay and client run next to
//! each other (`link-order.txt`, an lld symbol ordering file made by `benches/link-order.sh`).
//! The kernel maps code in 64 KiB windows around each page touched, so scattered start-up and
//! heartbeat code kept most of the 8 MB of text resident; packed together, idle RSS drops by
//! about 3.5 MiB (docs/benchmarks.md).
//!
//! It is only a layout: names missing from the binary are skipped, and the code is the same.
//! Skipped when a custom linker is configured (the flag is lld's; Rust links x86-64 Linux with
//! its own lld by default) or with `POSTERN_LINK_ORDER=off`.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=POSTERN_LINK_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let custom_linker = env::var_os("RUSTC_LINKER").is_some();
    let off = env::var("POSTERN_LINK_ORDER").is_ok_and(|v| v == "off");
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link-order.txt");
    if release && target && !custom_linker && !off && order.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
