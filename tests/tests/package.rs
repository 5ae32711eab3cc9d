//! The Debian package from `scripts/deb.sh`: built from the binaries the tests already compiled
//! (a release build of the workspace takes minutes on two cores; the package layout does not
//! depend on the profile, and `scripts/deb.sh` without `--bin-dir` makes the release one),
//! installed with `dpkg -i`, then: `/usr/bin/nsqd --version`, man pages, completions, the
//! `nsq` user, `systemd-analyze verify` of the units (Debian's systemd package, installed by
//! scripts/test-deps/packaging.sh), and each installed daemon starting from its
//! `/etc/nsq/*.conf` (listen addresses overridden to free ports). Purged again at the end.
//!
//! Needs root (CI runs as root): it installs into the system.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nsq_test_support::all_binaries_dir;
use nsq_test_support::tool::wait_with_deadline;

const PACKAGE: &str = "nsq-rs";
const DAEMONS: [&str; 3] = ["nsqd", "nsqlookupd", "nsqadmin"];
const TOOLS: [&str; 7] = [
    "to_nsq",
    "nsq_tail",
    "nsq_stat",
    "nsq_to_file",
    "nsq_to_http",
    "nsq_to_nsq",
    "nsq-job",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run `cmd` to completion within `limit`, killing it past the deadline.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let Some(status) = wait_with_deadline(&mut child, limit) else {
        panic!("{what} did not finish within {limit:?}");
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let mut cmd = Command::new("dpkg");
        cmd.args(["--purge", PACKAGE]);
        let _ = run(cmd, Duration::from_secs(120));
    }
}

/// Start an installed daemon with its packaged config and free loopback ports; wait for its
/// HTTP listener line, then stop it.
fn starts_from_its_config(name: &str, data: &Path) {
    let mut cmd = Command::new(format!("/usr/bin/{name}"));
    cmd.arg(format!("--config=/etc/nsq/{name}.conf"))
        .arg("--http-address=127.0.0.1:0");
    if name != "nsqadmin" {
        cmd.arg("--tcp-address=127.0.0.1:0");
    }
    if name == "nsqd" {
        cmd.arg(format!("--data-path={}", data.display()));
    }
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let started = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let up = line.contains("HTTP: listening on 127.0.0.1:");
                seen.push(line);
                if up {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started,
        "/usr/bin/{name} --config=/etc/nsq/{name}.conf did not start:\n{}",
        seen.join("\n")
    );
}

#[test]
fn deb_package_installs_daemons_units_configs_man_pages_and_completions() {
    let mut id = Command::new("id");
    id.arg("-u");
    let uid = ok(run(id, Duration::from_secs(10)), "id -u");
    assert_eq!(
        uid.trim(),
        "0",
        "the package test installs with dpkg -i and needs root (CI runs as root)"
    );
    let bins = all_binaries_dir();
    let out = tempfile::tempdir().unwrap();
    let mut build = Command::new(repo().join("scripts/deb.sh"));
    build.arg(format!("--bin-dir={}", bins.display()));
    build.arg(format!("--out={}", out.path().display()));
    let deb = ok(run(build, Duration::from_secs(600)), "scripts/deb.sh");
    let deb = PathBuf::from(deb.trim());
    assert!(deb.is_file(), "{}", deb.display());

    let mut install = Command::new("dpkg");
    install.arg("-i").arg(&deb);
    let _installed = Installed;
    ok(run(install, Duration::from_secs(300)), "dpkg -i");

    let mut version = Command::new("/usr/bin/nsqd");
    version.arg("--version");
    let v = ok(
        run(version, Duration::from_secs(10)),
        "/usr/bin/nsqd --version",
    );
    assert!(v.starts_with("nsqd v1.3.0"), "{v}");

    for b in DAEMONS.iter().chain(&TOOLS) {
        for path in [
            format!("/usr/bin/{b}"),
            format!("/usr/share/man/man1/{b}.1.gz"),
            format!("/usr/share/bash-completion/completions/{b}"),
            format!("/usr/share/zsh/vendor-completions/_{b}"),
            format!("/usr/share/fish/vendor_completions.d/{b}.fish"),
        ] {
            assert!(Path::new(&path).is_file(), "{path} not installed");
        }
        let bash =
            std::fs::read_to_string(format!("/usr/share/bash-completion/completions/{b}")).unwrap();
        assert!(bash.contains("--"), "{b}'s bash completion names no flags");
    }
    let nsqd_completion =
        std::fs::read_to_string("/usr/share/bash-completion/completions/nsqd").unwrap();
    assert!(nsqd_completion.contains("--lookupd-tcp-address"));
    let mut getent = Command::new("getent");
    getent.args(["passwd", "nsq"]);
    ok(run(getent, Duration::from_secs(10)), "getent passwd nsq");

    for d in DAEMONS {
        let unit = std::fs::read_to_string(format!("/lib/systemd/system/{d}.service")).unwrap();
        for needed in [
            "User=nsq",
            "Restart=on-failure",
            "LimitNOFILE=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(unit.contains(needed), "{d}.service lacks {needed}");
        }
        assert!(Path::new(&format!("/etc/nsq/{d}.conf")).is_file());
    }
    let nsqd_unit = std::fs::read_to_string("/lib/systemd/system/nsqd.service").unwrap();
    assert!(nsqd_unit.contains("StateDirectory=nsqd"));
    let nsqd_conf = std::fs::read_to_string("/etc/nsq/nsqd.conf").unwrap();
    assert!(nsqd_conf.contains("data_path = \"/var/lib/nsqd\""));

    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.is_file(),
        "systemd-analyze is missing: run scripts/test-deps/packaging.sh"
    );
    let mut verify = Command::new(analyze);
    verify.arg("verify");
    for d in DAEMONS {
        verify.arg(format!("/lib/systemd/system/{d}.service"));
    }
    let out = run(verify, Duration::from_secs(60));
    ok(out, "systemd-analyze verify");

    let data = tempfile::tempdir().unwrap();
    for d in DAEMONS {
        starts_from_its_config(d, data.path());
    }
}

/// `scripts/release.sh` (here on the tests' binaries; without `--bin-dir` it makes a release
/// build): a tarball laid out as upstream's, `NAME/bin/...`, every binary stripped and
/// runnable, and a checksum file `sha256sum -c` accepts.
#[test]
fn release_tarball_is_laid_out_as_upstreams_with_a_checksum() {
    let bins = all_binaries_dir();
    let out = tempfile::tempdir().unwrap();
    let mut release = Command::new(repo().join("scripts/release.sh"));
    release.arg(format!("--bin-dir={}", bins.display()));
    release.arg(format!("--out={}", out.path().display()));
    let tarball = PathBuf::from(
        ok(run(release, Duration::from_secs(600)), "scripts/release.sh")
            .trim()
            .to_string(),
    );
    let file = tarball.file_name().unwrap().to_str().unwrap().to_string();
    let name = file.strip_suffix(".tar.gz").expect("a .tar.gz");
    assert!(
        name.starts_with("nsq-rs-") && name.contains(".linux-"),
        "{name}"
    );

    let mut check = Command::new("sha256sum");
    check
        .args(["-c", &format!("{file}.sha256")])
        .current_dir(out.path());
    ok(run(check, Duration::from_secs(60)), "sha256sum -c");

    let unpacked = tempfile::tempdir().unwrap();
    let mut untar = Command::new("tar");
    untar
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path());
    ok(run(untar, Duration::from_secs(120)), "tar -x");
    let top: Vec<String> = std::fs::read_dir(unpacked.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, [name.to_string()]);
    for b in DAEMONS.iter().chain(&TOOLS) {
        let path = unpacked.path().join(name).join("bin").join(b);
        assert!(path.is_file(), "{} missing", path.display());
        let mut sections = Command::new("readelf");
        sections.arg("-S").arg(&path);
        let s = ok(run(sections, Duration::from_secs(30)), "readelf -S");
        // `.debug_gdb_scripts` is loadable and stays; symbols and DWARF go.
        for section in [".symtab", ".debug_info", ".debug_line"] {
            assert!(!s.contains(section), "{b} is not stripped: has {section}");
        }
    }
    let mut version = Command::new(unpacked.path().join(name).join("bin/nsqd"));
    version.arg("--version");
    let v = ok(run(version, Duration::from_secs(10)), "bin/nsqd --version");
    assert!(v.starts_with("nsqd v1.3.0"), "{v}");
}
