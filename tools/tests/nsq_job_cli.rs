//! End to end: what `nsq-job` tells a user — a worker whose command cannot
//! start says so and stops, `status` right after `submit` shows the fire
//! waiting, `status` finds nsqds through lookupd, `--version`.

use std::process::{Command, Stdio};
use std::time::Duration;

use nsq_test_support::{NsqdProcess, NsqlookupdProcess};

const JOB: &str = env!("CARGO_BIN_EXE_nsq-job");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(JOB)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nsq-job");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nsq-job submit` of `shards` shards of `job` to `nsqd`, which must succeed; its output
/// (the fire's id).
fn submit(nsqd: &NsqdProcess, job: &str, shards: &str) -> String {
    let tcp = nsqd.tcp_addr().to_string();
    let (ok, fire, err) = run(&[
        "submit",
        "--nsqd-tcp-address",
        &tcp,
        "--job",
        job,
        "--shards",
        shards,
    ]);
    assert!(ok, "{err}");
    fire
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_after_submit_shows_waiting_fires_and_finds_nsqds_through_lookupd() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp_addr());
    let nsqd = NsqdProcess::start(&[&register]);
    let fire = submit(&nsqd, "render", "3");
    assert!(!fire.trim().is_empty());

    let http = nsqd.http_addr().to_string();
    let (ok, out, err) = run(&["status", "--nsqd-http-address", &http, "--job", "render"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("job render: 3 shards waiting in the topic for a worker to subscribe"),
        "{out}"
    );

    // Through lookupd: the nsqd registers the topic, then is listed.
    let lookupd_http = lookupd.http_addr().to_string();
    let listed =
        nsq_test_support::wait_until(Duration::from_secs(20), "nsqd listed by lookupd", || {
            let (ok, out, err) = run(&[
                "status",
                "--lookupd-http-address",
                &lookupd_http,
                "--job",
                "render",
            ]);
            if ok && out.contains("3 shards waiting") {
                Ok(out)
            } else {
                Err(format!("{out}{err}"))
            }
        })
        .await
        .unwrap_or_else(|e| nsqd.fail(&e));
    assert!(listed.contains("job render"), "{listed}");

    let (ok, out, _) = run(&["--version"]);
    assert!(ok);
    assert!(out.starts_with("nsq-job v1.3.0 (nsq-rs "), "{out}");
    let (ok, _, err) = run(&["status"]);
    assert!(!ok);
    assert!(
        err.contains("--nsqd-http-address or --lookupd-http-address required"),
        "{err}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_stops_the_worker_with_an_error() {
    let nsqd = NsqdProcess::start(&[]);
    submit(&nsqd, "broken", "1");
    let tcp = nsqd.tcp_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(JOB)
            .args([
                "work",
                "--nsqd-tcp-address",
                &tcp,
                "--job",
                "broken",
                "--capacity",
                "1",
            ])
            .args(["--", "./no-such-render.sh"])
            .stdin(Stdio::null())
            .output()
            .expect("run nsq-job work")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(
        stderr.contains("cannot start \"./no-such-render.sh\""),
        "{stderr}"
    );
    // The shard went back for a worker that can run it.
    let s = nsqd.http_get("/stats?format=json&topic=broken").json();
    let ch = &s["topics"][0]["channels"][0];
    assert_eq!(
        (&ch["depth"], &ch["in_flight_count"]),
        (&1.into(), &0.into()),
        "{ch}"
    );
}
