//! Finding the real `nsqd` / `nsqlookupd` executables, building them first if needed.
//!
//! `cargo test --workspace` (or `-p nsq-tests`) compiles the tests but not other
//! packages' binaries, and `CARGO_BIN_EXE_*` only exists for a package's *own* binaries. So the
//! first test in each test process that needs a binary runs `cargo build` once (a `OnceLock`),
//! into the same target directory and profile the test executable itself was built in, so a
//! `cargo test --release` run exercises release binaries and nothing is built twice.
//!
//! `NSQ_TEST_BIN_DIR=/some/dir` skips the build and takes the binaries from that directory
//! instead, which lets the same suite run against other builds (e.g. upstream's Go binaries).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The directory holding the binaries, resolved (and built) once per test process. A failed
/// build is kept too, so parallel tests report the same error instead of each rebuilding.
static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The packages whose binaries the end-to-end tests start.
const PACKAGES: &[&str] = &["nsqd", "nsqlookupd", "nsqadmin"];

/// Path to the binary `name` (`"nsqd"`, `"nsqlookupd"` or `"nsqadmin"`), built on first use.
///
/// Panics with cargo's output if the build fails, or if the binary is not there afterwards.
pub fn binary(name: &str) -> PathBuf {
    let dir = BIN_DIR.get_or_init(|| match std::env::var_os("NSQ_TEST_BIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build_binaries(),
    });
    let dir = match dir {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary {} does not exist (built into {})",
        path.display(),
        dir.display()
    );
    path
}

/// The directory holding every binary of the workspace (the CLI tools too), built once per
/// test process like [`binary`]; for tests that package or run all of them.
pub fn all_binaries_dir() -> PathBuf {
    static ALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match ALL.get_or_init(|| match std::env::var_os("NSQ_TEST_BIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build(&["--workspace"]),
    }) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// The cargo target directory the tests were built in (where test
/// artifacts such as browser screenshots go, under `test-artifacts/`).
pub fn target_dir() -> PathBuf {
    target_layout().0
}

/// Where the test executable says the build output lives: `(target_dir, profile_dir_name)`.
///
/// Integration tests live at `<target>/<profile>/deps/<name>-<hash>`; the binaries of the same
/// build land in `<target>/<profile>/`.
fn target_layout() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe of the test process");
    let parent = exe
        .parent()
        .expect("test executable has a parent directory");
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().expect("deps/ has a parent")
    } else {
        parent
    };
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name is UTF-8")
        .to_owned();
    let target = profile_dir
        .parent()
        .expect("profile directory has a parent")
        .to_path_buf();
    (target, profile)
}

fn build_binaries() -> Result<PathBuf, String> {
    let packages: Vec<String> = PACKAGES.iter().map(|p| format!("--package={p}")).collect();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    build(&packages)
}

/// `cargo build --bins` with `selection` (`--package=...` or `--workspace`) into the test's
/// own target directory and profile.
fn build(selection: &[&str]) -> Result<PathBuf, String> {
    let (target_dir, profile) = target_layout();
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build").arg("--bins").args(selection);
    cmd.arg("--target-dir").arg(&target_dir);
    // The profile directory name is the profile, except that the `dev` profile builds into
    // `debug/`.
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Run from this package so cargo finds the workspace whatever the test's cwd is.
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {cargo:?} build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd:?}` failed with {}; the end-to-end tests need the nsqd, nsqlookupd and \
             nsqadmin binaries.\n--- cargo stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target_dir.join(profile))
}
