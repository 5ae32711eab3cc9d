//! End to end: `nsq-job submit`/`work`/`status` as real processes against a
//! real nsqd. Worker commands are shell scripts that log `start`/`end` lines
//! to a file per worker; those logs, not nsqd's word, prove capacity and
//! balance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nsq_test_support::{wait_for_value, wait_until, NsqdProcess};
use serde_json::Value;

const JOB: &str = env!("CARGO_BIN_EXE_nsq-job");
/// Bound for waits on other processes.
const PATIENCE: Duration = Duration::from_secs(30);

/// A worker command: log start, sleep `seconds` (a shell word, may use
/// the shard's variables), log end. Appends are ordered in the file as they
/// happened.
fn script(logs: &Path, seconds: &str) -> String {
    format!(
        "log={}/$NSQ_WORKER_ID.log; \
         echo \"start $NSQ_SHARD_ITEM $NSQ_SHARD_LOAD $NSQ_JOB_FIRE $NSQ_SHARD_PARAM\" >> $log; \
         sleep {seconds}; \
         echo \"end $NSQ_SHARD_ITEM $NSQ_SHARD_LOAD\" >> $log",
        logs.display()
    )
}

/// An `nsq-job work` process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(
        nsqd: &NsqdProcess,
        job: &str,
        id: &str,
        capacity: u64,
        cmd: &str,
        extra: &[&str],
    ) -> Worker {
        let child = Command::new(JOB)
            .args(["work", "--nsqd-tcp-address", &nsqd.tcp_addr().to_string()])
            .args([
                "--job",
                job,
                "--capacity",
                &capacity.to_string(),
                "--worker-id",
                id,
            ])
            .args(extra)
            .args(["--", "sh", "-c", cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsq-job work");
        Worker(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn submit(nsqd: &NsqdProcess, args: &[&str]) -> String {
    let out = Command::new(JOB)
        .args(["submit", "--nsqd-tcp-address", &nsqd.tcp_addr().to_string()])
        .args(args)
        .output()
        .expect("run nsq-job submit");
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn status(nsqd: &NsqdProcess, job: &str) -> Value {
    let s = nsqd.http_get(&format!("/job/status?job={job}")).json();
    s["jobs"][0].clone()
}

/// Wait until `n` workers have joined `job`.
async fn wait_workers(nsqd: &NsqdProcess, job: &str, n: usize) {
    wait_for_value(PATIENCE, &format!("{n} workers joined {job}"), n, || {
        status(nsqd, job)["workers"]
            .as_array()
            .map_or(0, |w| w.len())
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
}

fn fire<'a>(job: &'a Value, fire: &str) -> Option<&'a Value> {
    job["fires"].as_array()?.iter().find(|f| f["fire"] == fire)
}

/// Wait until every shard of `fire_id` is done (or `dead`, counted in).
async fn wait_fire(nsqd: &NsqdProcess, job: &str, fire_id: &str, done: u64, dead: u64) {
    wait_until(PATIENCE, "the fire is finished", || {
        let s = status(nsqd, job);
        match fire(&s, fire_id) {
            Some(f) if f["done"] == done && f["dead"] == dead => Ok(()),
            _ => Err(s.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
}

/// One worker's log: (item, load) per start and end, in order.
fn read_log(path: &PathBuf) -> Vec<(bool, u32, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0] == "start",
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_by_load_and_no_worker_exceeds_its_capacity() {
    let nsqd = NsqdProcess::start(&[]);
    let logs = tempfile::tempdir().unwrap();
    // Every shard runs equally long: a worker kept full then runs load
    // at a rate proportional to its capacity, whatever the mix.
    let cmd = script(logs.path(), "0.3");
    let capacities = [("w2", 2u64), ("w4", 4), ("w6", 6), ("w8", 8)];
    let _workers: Vec<Worker> = capacities
        .iter()
        .map(|(id, c)| Worker::start(&nsqd, "render", id, *c, &cmd, &[]))
        .collect();
    wait_workers(&nsqd, "render", 4).await;

    let load = |i: usize| (i % 4) as u64 + 1;
    let loads: Vec<String> = (0..64).map(|i| load(i).to_string()).collect();
    let params: Vec<String> = (0..64).map(|i| format!("{i}=p{i}")).collect();
    let fire_id = submit(
        &nsqd,
        &[
            "--job",
            "render",
            "--shards",
            "64",
            "--loads",
            &loads.join(","),
            "--params",
            &params.join(","),
        ],
    );
    wait_fire(&nsqd, "render", &fire_id, 64, 0).await;

    let total_load: u64 = (0..64).map(load).sum();
    let total_capacity: u64 = capacities.iter().map(|c| c.1).sum();
    let mut seen = BTreeMap::new();
    for (id, capacity) in capacities {
        let log = read_log(&logs.path().join(format!("{id}.log")));
        let mut running = 0u64;
        let mut done_load = 0u64;
        for (start, item, load) in &log {
            if *start {
                running += load;
                assert!(
                    running <= capacity,
                    "{id} held {running} > capacity {capacity}: {log:?}"
                );
                *seen.entry(*item).or_insert(0) += 1;
            } else {
                running -= load;
                done_load += load;
            }
        }
        let share = total_load as f64 * capacity as f64 / total_capacity as f64;
        assert!(
            (done_load as f64) >= share * 0.75 && (done_load as f64) <= share * 1.25,
            "{id} (capacity {capacity}) ran load {done_load}, its share is {share:.1}"
        );
    }
    assert_eq!(seen.len(), 64, "every item ran");

    // The status tool shows the same.
    let out = Command::new(JOB)
        .args([
            "status",
            "--nsqd-http-address",
            &nsqd.http_addr().to_string(),
            "--job",
            "render",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains(&format!(
                "fire {fire_id}: pending 0 running 0 failed 0 done 64 dead 0"
            )),
        "{text}"
    );
    assert!(text.contains("item   63 load    4 done"), "{text}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_shards_finish_elsewhere_within_two_seconds() {
    let nsqd = NsqdProcess::start(&[]);
    let logs = tempfile::tempdir().unwrap();
    let cmd = script(logs.path(), "1");
    let mut doomed = Worker::start(&nsqd, "crawl", "doomed", 2, &cmd, &[]);
    let _survivor = Worker::start(&nsqd, "crawl", "survivor", 4, &cmd, &[]);
    wait_workers(&nsqd, "crawl", 2).await;
    let fire_id = submit(&nsqd, &["--job", "crawl", "--shards", "4", "--load", "1"]);
    let held: Vec<u64> = wait_until(PATIENCE, "the doomed worker runs two shards", || {
        let s = status(&nsqd, "crawl");
        let items: Vec<u64> = fire(&s, &fire_id)
            .and_then(|f| f["shards"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|sh| sh["worker"] == "doomed" && sh["state"] == "running")
            .filter_map(|sh| sh["item"].as_u64())
            .collect();
        if items.len() == 2 {
            Ok(items)
        } else {
            Err(s.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));

    doomed.0.kill().unwrap();
    let killed_at = Instant::now();
    wait_until(
        Duration::from_secs(2),
        "the killed worker's shards are done elsewhere",
        || {
            let s = status(&nsqd, "crawl");
            let f = fire(&s, &fire_id).cloned().unwrap_or_default();
            let ok = held.iter().all(|item| {
                f["shards"].as_array().into_iter().flatten().any(|sh| {
                    sh["item"] == *item && sh["state"] == "done" && sh["worker"] == "survivor"
                })
            });
            if ok {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    assert!(killed_at.elapsed() <= Duration::from_secs(2));
    wait_fire(&nsqd, "crawl", &fire_id, 4, 0).await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_shard_lands_in_the_dead_letter_topic() {
    let nsqd = NsqdProcess::start(&[]);
    nsqd.create_channel("mail", "workers");
    nsqd.post_ok(
        "/channel/max_attempts?topic=mail&channel=workers&max_attempts=3",
        b"",
    );
    let cmd = "[ \"$NSQ_SHARD_ITEM\" != 1 ]";
    let _w = Worker::start(&nsqd, "mail", "w", 2, cmd, &["--requeue-delay", "50ms"]);
    let fire_id = submit(
        &nsqd,
        &["--job", "mail", "--shards", "3", "--payload", "hello"],
    );
    wait_fire(&nsqd, "mail", &fire_id, 2, 1).await;
    let s = status(&nsqd, "mail");
    let dead: Vec<&Value> = fire(&s, &fire_id).unwrap()["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|sh| sh["state"] == "dead")
        .collect();
    assert_eq!(
        (dead.len(), &dead[0]["item"], &dead[0]["attempts"]),
        (1, &Value::from(1), &Value::from(3)),
        "{s}"
    );
    let stats = nsqd.http_get("/stats?format=json&topic=mail.dead").json();
    assert_eq!(stats["topics"][0]["depth"], 1, "{stats}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settle_window_holds_dispatch_until_the_workers_joined() {
    let nsqd = NsqdProcess::start(&["--job-settle-time=60s", "--job-min-workers=2"]);
    let logs = tempfile::tempdir().unwrap();
    let cmd = script(logs.path(), "0.3");
    let fire_id = submit(&nsqd, &["--job", "batch", "--shards", "8", "--load", "1"]);
    let _first = Worker::start(&nsqd, "batch", "first", 4, &cmd, &[]);
    wait_until(
        PATIENCE,
        "the first worker joined and the job settles",
        || {
            let s = status(&nsqd, "batch");
            let pending = fire(&s, &fire_id).map(|f| f["pending"].clone());
            if s["workers"].as_array().map_or(0, |w| w.len()) == 1
                && s["settling"] == true
                && pending == Some(Value::from(8))
            {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    assert!(s_le(&status(&nsqd, "batch")["settle_remaining_ms"], 60_000));

    let _second = Worker::start(&nsqd, "batch", "second", 4, &cmd, &[]);
    wait_fire(&nsqd, "batch", &fire_id, 8, 0).await;
    assert_eq!(status(&nsqd, "batch")["settling"], false);
    // Neither worker was flooded: both ran shards, at most four each.
    for id in ["first", "second"] {
        let ran = read_log(&logs.path().join(format!("{id}.log")))
            .iter()
            .filter(|l| l.0)
            .count();
        assert!((1..=4).contains(&ran), "{id} ran {ran} shards");
    }
}

fn s_le(v: &Value, max: u64) -> bool {
    v.as_u64().is_some_and(|n| n > 0 && n <= max)
}
