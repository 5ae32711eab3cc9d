//! End-to-end test of `nsq_to_file --topic-pattern` (topics found through
//! lookupd) and `--work-dir` (files move to `--output-dir` once closed),
//! run as a real process against real nsqd and nsqlookupd.

use std::time::Duration;

use nsq_test_support::tool::Tool;
use nsq_test_support::{wait_until, NsqdProcess, NsqlookupdProcess};

/// The files in `dir` and their contents, by name.
fn files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(e.path()).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_pattern_finds_topics_through_lookupd_and_work_dir_holds_open_files() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp_addr());
    let nsqd = NsqdProcess::start(&[&register]);
    // Topics (with a channel, so nothing is lost before the tool
    // subscribes) that exist before the tool starts.
    nsqd.create_channel("logs_a", "nsq_to_file");
    nsqd.create_channel("other", "nsq_to_file");
    let (out, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_to_file"),
        &[
            "--topic-pattern=^logs_".to_string(),
            format!("--lookupd-http-address={}", lookupd.http_addr()),
            "--topic-refresh=1s".into(),
            format!("--output-dir={}", out.path().display()),
            format!("--work-dir={}", work.path().display()),
            "--rotate-interval=500ms".into(),
        ],
        None,
    );
    // A matching topic made while the tool runs is found on a refresh.
    nsqd.create_channel("logs_b", "nsq_to_file");
    for t in ["logs_a", "logs_b", "other"] {
        nsqd.http_post(
            &format!("/pub?topic={t}"),
            format!("line of {t}").as_bytes(),
        );
    }
    wait_until(
        Duration::from_secs(20),
        "both logs_ topics in --output-dir",
        || {
            let names: Vec<String> = files(out.path()).into_iter().map(|f| f.0).collect();
            let has = |t: &str| names.iter().any(|n| n.starts_with(&format!("{t}.")));
            if has("logs_a") && has("logs_b") {
                Ok(())
            } else {
                Err(format!("{names:?}; {}", tool.stderr_so_far()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    let written = files(out.path());
    assert!(
        written.iter().all(|(n, _)| !n.starts_with("other.")),
        "{written:?}"
    );
    let lines: Vec<&str> = written.iter().flat_map(|(_, c)| c.lines()).collect();
    assert!(
        lines.contains(&"line of logs_a") && lines.contains(&"line of logs_b"),
        "{lines:?}"
    );
    // Closed files left the work dir; "other" was never consumed.
    assert!(files(work.path()).is_empty(), "{:?}", files(work.path()));
    let other = nsqd.http_get("/stats?format=json&topic=other").json();
    assert_eq!(other["topics"][0]["channels"][0]["depth"], 1, "{other}");
    tool.stop_ok().await;

    Tool::expect_failure(
        env!("CARGO_BIN_EXE_nsq_to_file"),
        &[
            "--topic-pattern=^x".to_string(),
            "--nsqd-tcp-address=127.0.0.1:1".into(),
        ],
        "--lookupd-http-address must be specified when no --topic specified",
    )
    .await;
}
