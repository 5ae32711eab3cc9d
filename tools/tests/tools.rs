//! End-to-end tests of the command-line tools (`to_nsq`, `nsq_tail`, ...) run as real processes against a real nsqd on port 0.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nsq_test_support::tool::{args, Tool};
use nsq_test_support::{wait_until, NsqdProcess, NsqlookupdProcess};

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_nsq_publishes_every_record_to_every_nsqd() {
    let a = NsqdProcess::start(&[]);
    let b = NsqdProcess::start(&[]);
    // Blank records are skipped, and the last record needs no delimiter.
    let input = b"one,two,,three".to_vec();
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_to_nsq"),
        &[
            "--topic=records".to_string(),
            "--delimiter=,".into(),
            format!("--nsqd-tcp-address={}", a.tcp_addr()),
            format!("--nsqd-tcp-address={}", b.tcp_addr()),
        ],
        Some(input),
    );
    let done = tool.finish().await;
    assert!(done.status.success(), "to_nsq failed: {}", done.stderr);
    assert_eq!(done.stdout, "", "to_nsq writes nothing to stdout");
    for nsqd in [&a, &b] {
        let t = nsqd.topic_stats("records");
        assert_eq!(t["message_count"], 3, "{t}");
    }

    let bad = Tool::spawn(env!("CARGO_BIN_EXE_to_nsq"), &args(&["--topic=x"]), None);
    let done = bad.finish().await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("--nsqd-tcp-address required"));

    // go-nsq options pass through as `option,value`; unknown ones are refused.
    let bad = Tool::spawn(
        env!("CARGO_BIN_EXE_to_nsq"),
        &args(&[
            "--topic=x",
            "--nsqd-tcp-address=127.0.0.1:1",
            "--producer-opt=nope,1",
        ]),
        Some(b"x".to_vec()),
    );
    let done = bad.finish().await;
    assert!(!done.status.success());
    assert!(
        done.stderr.contains("invalid option nope"),
        "{}",
        done.stderr
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_nsq_piped_into_nsq_tail_round_trips_ten_thousand_lines() {
    let nsqd = NsqdProcess::start(&[]);
    let lines: Vec<String> = (0..10_000).map(|i| format!("line {i} of ten")).collect();
    let tail = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_tail"),
        &[
            "--topic=roundtrip".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
            "-n".into(),
            "10000".into(),
        ],
        None,
    );
    // nsq_tail's ephemeral channel must exist before anything is
    // published, or the first messages would go to no channel.
    wait_until(Duration::from_secs(10), "nsq_tail subscribed", || {
        let t = nsqd.topic_stats("roundtrip");
        match t["channels"].as_array() {
            Some(cs) if !cs.is_empty() => Ok(()),
            _ => Err(t.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));

    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let publish = Tool::spawn(
        env!("CARGO_BIN_EXE_to_nsq"),
        &[
            "--topic=roundtrip".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
        ],
        Some(input.into_bytes()),
    );
    let published = publish.finish().await;
    assert!(published.status.success(), "to_nsq: {}", published.stderr);

    let tailed = tail.finish().await;
    assert!(tailed.status.success(), "nsq_tail: {}", tailed.stderr);
    // One nsqd, one publisher, one handler: printed in publish order.
    let got: Vec<&str> = tailed.stdout.lines().collect();
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(got.len(), 10_000);
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "line {i}: nsq_tail printed {:?}, to_nsq read {:?}",
            got[i], want[i]
        );
    }
}

/// The lines nsq_stat run with `args` prints before it exits, which it must do successfully.
async fn nsq_stat_lines(args: &[String]) -> Vec<String> {
    let done = Tool::spawn(env!("CARGO_BIN_EXE_nsq_stat"), args, None)
        .finish()
        .await;
    assert!(done.status.success(), "nsq_stat: {}", done.stderr);
    done.stdout.lines().map(str::to_owned).collect()
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_stat_prints_count_rows_under_upstreams_header() {
    let nsqd = NsqdProcess::start(&[]);
    nsqd.create_channel("watched", "ch");
    for body in ["a", "b", "c"] {
        nsqd.post_ok("/pub?topic=watched", body.as_bytes());
    }
    let lines = nsq_stat_lines(&[
        "--topic=watched".to_string(),
        "--channel=ch".into(),
        format!("--nsqd-http-address={}", nsqd.http_addr()),
        "--count-of=2".into(),
        "--status-every=200ms".into(),
    ])
    .await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with("------rate------+"), "{}", lines[0]);
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "ingress", "egress", "|", "total", "mem", "disk", "inflt", "def", "|", "req", "t-o",
            "msgs", "clients"
        ]
    );
    for row in &lines[2..] {
        let values: Vec<&str> = row.split_whitespace().collect();
        // Nothing moves: no rates, three messages waiting in memory.
        assert_eq!(
            values,
            ["0", "0", "|", "3", "3", "0", "0", "0", "|", "0", "0", "3", "0"],
            "{row}"
        );
    }

    // A channel nsqd does not have is an error, as upstream.
    Tool::expect_failure(
        env!("CARGO_BIN_EXE_nsq_stat"),
        &[
            "--topic=watched".to_string(),
            "--channel=nope".into(),
            format!("--nsqd-http-address={}", nsqd.http_addr()),
            "--count=1".into(),
        ],
        "failed to find channel(nope)",
    )
    .await;
}

/// The files in `dir` by name, each with its text (gunzipped if `.gz`).
fn output_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = if name.ends_with(".gz") {
                let mut out = String::new();
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_string(&mut out)
                    .unwrap();
                out
            } else {
                String::from_utf8(raw).unwrap()
            };
            (name, text)
        })
        .collect();
    files.sort();
    files
}

/// Wait until nsq_to_file's channel of `topic` has finished all `n` messages. A message is
/// finished only after nsq_to_file fsynced it, so this means on disk.
async fn all_finished(nsqd: &NsqdProcess, topic: &str, n: usize) {
    wait_until(Duration::from_secs(20), "every message finished", || {
        let c = nsqd.channel_stats(topic, "nsq_to_file");
        if c["message_count"] == n && c["depth"] == 0 && c["in_flight_count"] == 0 {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
}

/// Sorted lines of all `files`.
fn all_lines(files: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<String> = files
        .iter()
        .flat_map(|(_, t)| t.lines().map(str::to_owned))
        .collect();
    lines.sort_unstable();
    lines
}

/// Runs nsq_to_file on 1,000 messages with a small `--rotate-size`, stops
/// it with SIGTERM once nsqd has every message finished, and returns the
/// files it left, each decoded to text.
async fn to_file_round_trip(topic: &str, extra: &[&str]) -> Vec<(String, String)> {
    let nsqd = NsqdProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![
        format!("--topic={topic}"),
        format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
        format!("--output-dir={}", dir.path().display()),
        "--rotate-size=2000".into(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let tool = Tool::spawn(env!("CARGO_BIN_EXE_nsq_to_file"), &flags, None);
    wait_until(
        Duration::from_secs(10),
        "nsq_to_file subscribed",
        || match nsqd.channel_stats(topic, "nsq_to_file")["client_count"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(nsqd.topic_stats(topic).to_string()),
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));

    let bodies: String = (0..1000).map(|i| format!("record number {i}\n")).collect();
    let published = nsqd.http_post(&format!("/mpub?topic={topic}"), bodies.as_bytes());
    assert_eq!(published.status, 200, "{}", published.text());
    all_finished(&nsqd, topic, 1000).await;

    tool.stop_ok().await;

    let files = output_files(dir.path());
    let mut want: Vec<&str> = bodies.lines().collect();
    want.sort_unstable();
    assert!(
        all_lines(&files) == want,
        "the files do not hold exactly the published messages"
    );
    files
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_file_rotates_by_size_and_keeps_every_message() {
    let files = to_file_round_trip("tofile", &[]).await;
    // ~18 KB of lines at 2,000 bytes a file.
    assert!(
        files.len() >= 5,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let host = nsq_app::os_hostname();
    let host = host.split('.').next().unwrap();
    for (name, _) in &files {
        // <TOPIC>.<HOST><REV>.<DATETIME>.log
        let rest = name.strip_prefix(&format!("tofile.{host}-")).expect(name);
        let (rev, rest) = rest.split_at(6);
        assert!(rev.bytes().all(|b| b.is_ascii_digit()), "{name}");
        assert!(rest.starts_with('.') && rest.ends_with(".log"), "{name}");
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_file_gzips_rotated_files() {
    let files = to_file_round_trip("tofilegz", &["--gzip"]).await;
    assert!(files.len() >= 5);
    assert!(files.iter().all(|(name, _)| name.ends_with(".log.gz")));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_to_file_rotates_by_interval_without_empty_files() {
    let nsqd = NsqdProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tool = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_to_file"),
        &[
            "--topic=ticks".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp_addr()),
            format!("--output-dir={}", dir.path().display()),
            "--rotate-interval=300ms".into(),
        ],
        None,
    );
    wait_until(
        Duration::from_secs(10),
        "nsq_to_file subscribed",
        || match nsqd.channel_stats("ticks", "nsq_to_file")["client_count"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(nsqd.topic_stats("ticks").to_string()),
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));

    // A message at every probe until the interval has started three files.
    let mut sent = Vec::new();
    wait_until(Duration::from_secs(20), "three files", || {
        let body = format!("tick {}", sent.len());
        let r = nsqd.http_post("/pub?topic=ticks", body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        sent.push(body);
        let n = std::fs::read_dir(dir.path()).unwrap().count();
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} files"))
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    all_finished(&nsqd, "ticks", sent.len()).await;
    tool.stop_ok().await;

    let files = output_files(dir.path());
    assert!(files.len() >= 3);
    // Each file has its own revision and at least one message.
    for (i, (name, text)) in files.iter().enumerate() {
        assert!(name.contains(&format!("-{i:06}.")), "{name}");
        assert!(!text.is_empty(), "{name} is empty");
    }
    sent.sort_unstable();
    assert_eq!(all_lines(&files), sent);
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_find_a_topic_s_nsqds_through_lookupd() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp_addr());
    let nsqds: Vec<NsqdProcess> = (0..2)
        .map(|_| NsqdProcess::start(&["--broadcast-address=127.0.0.1", &register]))
        .collect();
    for nsqd in &nsqds {
        nsqd.create_topic("found");
    }
    wait_until(Duration::from_secs(10), "lookupd lists both nsqds", || {
        let r = lookupd.http_get("/lookup?topic=found");
        match r.json()["producers"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            other => Err(format!("{other:?}: {}", r.text())),
        }
    })
    .await
    .unwrap_or_else(|e| lookupd.fail(&e));

    let lookupd_flag = format!("--lookupd-http-address={}", lookupd.http_addr());
    let dir = tempfile::tempdir().unwrap();
    let to_file = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_to_file"),
        &[
            "--topic=found".to_string(),
            lookupd_flag.clone(),
            format!("--output-dir={}", dir.path().display()),
            "--consumer-opt=client_id,file-writer".into(),
        ],
        None,
    );
    let tail = Tool::spawn(
        env!("CARGO_BIN_EXE_nsq_tail"),
        &[
            "--topic=found".to_string(),
            lookupd_flag.clone(),
            "-n".into(),
            "40".into(),
        ],
        None,
    );
    // Both tools are subscribed on both nsqds before anything is published.
    wait_until(Duration::from_secs(10), "both tools on both nsqds", || {
        for nsqd in &nsqds {
            let t = nsqd.topic_stats("found");
            let subscribed = t["channels"]
                .as_array()
                .map_or(0, |cs| cs.iter().filter(|c| c["client_count"] == 1).count());
            if subscribed != 2 {
                return Err(t.to_string());
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| lookupd.fail(&e));

    // --consumer-opt reached IDENTIFY.
    for nsqd in &nsqds {
        let c = nsqd.channel_stats("found", "nsq_to_file");
        assert_eq!(c["clients"][0]["client_id"], "file-writer", "{c}");
    }

    let mut want = Vec::new();
    for (i, nsqd) in nsqds.iter().enumerate() {
        let bodies: Vec<String> = (0..20).map(|j| format!("nsqd {i} message {j}")).collect();
        let r = nsqd.http_post("/mpub?topic=found", bodies.join("\n").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        want.extend(bodies);
    }
    want.sort_unstable();

    let tailed = tail.finish().await;
    assert!(tailed.status.success(), "nsq_tail: {}", tailed.stderr);
    let mut got: Vec<&str> = tailed.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got, want);

    wait_until(Duration::from_secs(20), "nsq_to_file finished all", || {
        for nsqd in &nsqds {
            let c = nsqd.channel_stats("found", "nsq_to_file");
            if !(c["message_count"] == 20 && c["depth"] == 0 && c["in_flight_count"] == 0) {
                return Err(c.to_string());
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| lookupd.fail(&e));

    // nsq_stat sums the channel over the nsqds lookupd names.
    let rows = nsq_stat_lines(&[
        "--topic=found".to_string(),
        "--channel=nsq_to_file".into(),
        lookupd_flag,
        "--count=1".into(),
        "--interval=100ms".into(),
    ])
    .await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let values: Vec<&str> = rows[2].split_whitespace().collect();
    assert_eq!(
        values,
        ["0", "0", "|", "0", "0", "0", "0", "0", "|", "0", "0", "40", "2"],
        "{}",
        rows[2]
    );

    to_file.stop_ok().await;
    assert_eq!(all_lines(&output_files(dir.path())), want);
}
