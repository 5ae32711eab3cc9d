//! Records what `--version` reports besides the upstream version: the git
//! commit this build comes from (when built from a git checkout) and the
//! rustc that built it.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        // A source tarball or a vendored copy has no git history.
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "rustc 1.95.0 (59807616e 2026-...)" -> "1.95.0"
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NSQ_RS_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=NSQ_RS_RUSTC_VERSION={rustc_version}");
    // A new commit changes the hash; HEAD moves on commit and checkout.
    if let Ok(dir) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        if dir.status.success() {
            let dir = String::from_utf8_lossy(&dir.stdout).trim().to_owned();
            println!("cargo:rerun-if-changed={dir}/HEAD");
            if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD")) {
                if let Some(r) = head.strip_prefix("ref: ") {
                    println!("cargo:rerun-if-changed={dir}/{}", r.trim());
                }
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
