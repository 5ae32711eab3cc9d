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
    // A new commit changes the hash; HEAD moves on commit and checkout. Paths come from
    // `git rev-parse --git-path`, which knows where a worktree keeps HEAD and where the refs
    // are shared: a watched file that does not exist makes cargo rerun this script, and rebuild
    // everything above it, on every build (every test process that builds the daemons).
    let git_path = |name: &str| {
        Command::new("git")
            .args(["rev-parse", "--git-path", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(head) = git_path("HEAD") {
        println!("cargo:rerun-if-changed={head}");
        if let Some(r) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
        {
            // A packed ref has no file of its own; packed-refs changes when it moves.
            let loose = git_path(&r).filter(|p| std::path::Path::new(p).is_file());
            if let Some(watched) = loose.or_else(|| git_path("packed-refs")) {
                println!("cargo:rerun-if-changed={watched}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
