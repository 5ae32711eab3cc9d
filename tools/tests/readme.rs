//! Every command in the README's `sh` blocks runs as written (ports aside)
//! against a real cluster: `scripts/readme-commands.sh` does the work; this
//! test gives it the binaries and bounds it in time.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_run() {
    nsq_test_support::within_for(Duration::from_secs(120), async {
        // The daemons (built by the harness) and this crate's tools, side
        // by side in one directory, as the script expects.
        let bin = tempfile::tempdir().unwrap();
        let link = |name: &str, from: &Path| {
            std::os::unix::fs::symlink(from, bin.path().join(name)).unwrap();
        };
        link("nsqd", &nsq_test_support::binary("nsqd"));
        link("nsqlookupd", &nsq_test_support::binary("nsqlookupd"));
        link("nsq-job", Path::new(env!("CARGO_BIN_EXE_nsq-job")));
        link("nsq_tail", Path::new(env!("CARGO_BIN_EXE_nsq_tail")));
        link("to_nsq", Path::new(env!("CARGO_BIN_EXE_to_nsq")));
        link(
            "bench_writer",
            Path::new(env!("CARGO_BIN_EXE_bench_writer")),
        );
        link(
            "bench_reader",
            Path::new(env!("CARGO_BIN_EXE_bench_reader")),
        );
        link(
            "bench_latency",
            Path::new(env!("CARGO_BIN_EXE_bench_latency")),
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/readme-commands.sh");
        let bin_dir = bin.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .arg(bin_dir)
                .output()
                .expect("run scripts/readme-commands.sh")
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("ran "), "{text}");
    })
    .await;
}
