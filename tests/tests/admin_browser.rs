//! nsqadmin in a real headless Chromium, driven over WebDriver (chromedriver
//! with fantoccini): the overview lists a topic this test created, its
//! channel page shows the consumer, the pause button asks for confirmation
//! and then pauses the channel on nsqd, and the page updates itself; the
//! jobs page shows a dead shard and its requeue button, behind the same
//! confirmation, gives it back to the worker; a hostile node whose answers
//! carry markup gets it shown as text on every page, and none of it runs.
//! Screenshots go to `target/test-artifacts/`.
//!
//! Chromium and chromedriver come from Debian (`scripts/test-deps/chromium.sh`,
//! run by `scripts/test.sh`); without them this test fails and says so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nsq_test_support::admin::{AdminCluster, SETTLE};
use nsq_test_support::fake_node::{Answer, FakeNode};
use nsq_test_support::{target_dir, wait_until, within_for, NsqadminProcess, WAIT_POLL_INTERVAL};
use serde_json::json;

const INSTALL: &str = "scripts/test-deps/chromium.sh";

/// The whole browser test may take this long: Chromium's first start on a
/// loaded machine is slow.
const BROWSER_TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// `name` on PATH or in /usr/bin, else a failure naming the install script.
fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run {INSTALL} (as root) or scripts/test.sh")
        })
}

/// chromedriver on an ephemeral loopback port; killed on drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let mut child = Command::new(find_tool("chromedriver"))
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({INSTALL}): {e}"));
        // It prints "... started successfully on port N." once it listens.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port = rest.trim_end_matches('.').trim().parse::<u16>();
                    let _ = tx.send(port.ok());
                }
            }
        });
        match rx.recv_timeout(SETTLE) {
            Ok(Some(port)) => Chromedriver { child, port },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver did not announce its port: {other:?}")
            }
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a fresh profile and no outside network.
/// A chromedriver, a fresh browser profile and a browser session on them; the first two
/// must outlive the session (dropping them stops the driver and removes the profile).
async fn open_browser() -> (Chromedriver, tempfile::TempDir, Client) {
    let driver = Chromedriver::start();
    let profile = tempfile::Builder::new()
        .prefix("nsqadmin-chromium-")
        .tempdir()
        .expect("profile dir");
    let b = browser(&driver, profile.path()).await;
    (driver, profile, b)
}

async fn browser(driver: &Chromedriver, profile: &Path) -> Client {
    let chromium = find_tool("chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1400,1100",
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session ({INSTALL}): {e}"))
}

/// The element `sel` once the page has it (pages draw after their data
/// arrives), or a failure with every daemon's logs.
async fn wait_for(b: &Client, c: &AdminCluster, sel: &str) -> Element {
    b.wait()
        .at_most(SETTLE)
        .for_element(Locator::Css(sel))
        .await
        .unwrap_or_else(|e| c.fail(&format!("no {sel} on the page: {e}")))
}

fn save_screenshot(name: &str, png: &[u8]) -> PathBuf {
    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_a_channel_from_the_dashboard() {
    within_for(BROWSER_TEST_TIMEOUT, async {
        let c = AdminCluster::start(&["--history-interval=200ms"]);
        c.nsqd_topic_channel("browser_topic", "web").await;
        let mut producer = c.nsqd.connect().await;
        for i in 0..7 {
            producer.publish("browser_topic", format!("m{i}").as_bytes()).await;
        }
        let identify = json!({"client_id": "browser-consumer", "hostname": "consumer-host", "user_agent": "e2e/1.0"});
        let mut consumer = c.nsqd.consumer(identify, "browser_topic", "web", 1).await;
        consumer.read_message().await;

        let (_driver, _profile, b) = open_browser().await;
        let base = format!("http://{}", c.admin.http_addr());
        let css = |s: &'static str| Locator::Css(s);
        // The overview lists the topic, with figures from the sampler.
        b.goto(&format!("{base}/")).await.expect("open the overview");
        let row = wait_for(&b, &c, r#"#topics tr[data-topic="browser_topic"]"#).await;
        assert!(row.text().await.unwrap().contains("browser_topic"));
        save_screenshot("nsqadmin-overview.png", &b.screenshot().await.unwrap());

        // Topic page, then the channel page, by following links.
        row.find(css("a")).await.unwrap().click().await.unwrap();
        let name = wait_for(&b, &c, "#topic-name").await;
        assert_eq!(name.text().await.unwrap(), "browser_topic");
        let chan = wait_for(&b, &c, r#"#channels tr[data-channel="web"] a"#).await;
        chan.click().await.unwrap();
        let name = wait_for(&b, &c, "#channel-name").await;
        assert_eq!(name.text().await.unwrap(), "web");
        let clients = wait_for(&b, &c, "#clients").await;
        let text = clients.text().await.unwrap();
        assert!(text.contains("consumer-host") && text.contains("e2e/1.0"), "{text}");
        // The charts fill in from the server's samples.
        wait_for(&b, &c, ".chart path.line").await;

        // Pause, through the button and its confirmation.
        assert!(c.nsqd_channel("browser_topic", "web").unwrap()["paused"] == false);
        wait_for(&b, &c, "#btn-pause").await.click().await.unwrap();
        let dialog = wait_for(&b, &c, "#confirm").await;
        assert!(dialog.is_displayed().await.unwrap(), "the confirmation is shown");
        let question = b.find(css("#confirm-text")).await.unwrap().text().await.unwrap();
        assert_eq!(question, "Pause channel web?");
        // Nothing happens before the confirmation.
        assert!(c.nsqd_channel("browser_topic", "web").unwrap()["paused"] == false);
        b.find(css("#confirm-ok")).await.unwrap().click().await.unwrap();
        if let Err(e) = wait_until(SETTLE, "nsqd reports the channel paused", || {
            match c.nsqd_channel("browser_topic", "web") {
                Some(ch) if ch["paused"] == true => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        {
            c.fail(&e);
        }
        let flash = wait_for(&b, &c, "#flash-msg").await;
        assert_eq!(flash.text().await.unwrap(), "pause channel web: done");
        // The page redraws itself: the badge appears and the button flips.
        wait_for(&b, &c, "#paused").await;
        wait_for(&b, &c, "#btn-unpause").await;

        // Live: new messages show up without a reload.
        for i in 0..5 {
            producer.publish("browser_topic", format!("n{i}").as_bytes()).await;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let total = b.find(css("#nodes tr.total")).await;
            let text = match total {
                Ok(row) => row.text().await.unwrap_or_default(),
                Err(e) => format!("no total row: {e}"),
            };
            // Messages column: 12 have entered the channel.
            if text.split_whitespace().any(|w| w == "12") {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                c.fail(&format!("the channel page never showed 12 messages: {text}"));
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
        }
        let shot = save_screenshot("nsqadmin-channel-paused.png", &b.screenshot().await.unwrap());
        assert!(std::fs::metadata(&shot).unwrap().len() > 1000, "{shot:?}");
        b.close().await.expect("close the browser session");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_a_dead_letter_from_the_jobs_page() {
    within_for(BROWSER_TEST_TIMEOUT, async {
        let c = AdminCluster::start(&[]);
        c.nsqd_dead_letter_channel("render", "workers").await;
        let body = nsq_protocol::job::Shard {
            job: "render".into(),
            fire: "f1".into(),
            item: 0,
            load: 2,
            param: "frame-0".into(),
            payload: bytes::Bytes::new(),
        }
        .encode()
        .unwrap();
        let mut producer = c.nsqd.connect().await;
        producer.publish("render", &body).await;
        let identify = json!({"capacity": 4, "client_id": "browser-worker"});
        let mut worker = c.nsqd.consumer(identify, "render", "workers", 4).await;
        let m = worker.read_message().await;
        worker.req(m.id, 0).await; // one attempt allowed: now a dead letter

        let (_driver, _profile, b) = open_browser().await;
        let css = |s: &'static str| Locator::Css(s);
        b.goto(&format!("http://{}/", c.admin.http_addr()))
            .await
            .expect("open the overview");
        // The nav leads to the jobs page.
        wait_for(&b, &c, r#"nav a[href$="/jobs"]"#)
            .await
            .click()
            .await
            .unwrap();
        wait_for(&b, &c, r#"section.job[data-job="render"]"#).await;
        // Live: the shard shows up dead once nsqd has moved it.
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let text = match b.find(css(r#"tr[data-shard="f1:0"]"#)).await {
                Ok(row) => row.text().await.unwrap_or_default(),
                Err(e) => format!("no shard row: {e}"),
            };
            if text.contains("dead") && text.contains("frame-0") {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                c.fail(&format!(
                    "the jobs page never showed the dead shard: {text}"
                ));
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
        }
        wait_for(&b, &c, "#btn-requeue-render")
            .await
            .click()
            .await
            .unwrap();
        let dialog = wait_for(&b, &c, "#confirm").await;
        assert!(
            dialog.is_displayed().await.unwrap(),
            "the confirmation is shown"
        );
        let question = b
            .find(css("#confirm-text"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(question.contains("render.dead"), "{question}");
        save_screenshot("nsqadmin-jobs.png", &b.screenshot().await.unwrap());
        b.find(css("#confirm-ok"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The worker gets the shard again.
        let again = worker.read_message_within(SETTLE).await;
        assert_eq!(again.body, body);
        worker.fin(again.id).await;
        let flash = wait_for(&b, &c, "#flash-msg").await;
        assert_eq!(
            flash.text().await.unwrap(),
            "requeue dead letters of render: done"
        );
        b.close().await.expect("close the browser session");
    })
    .await;
}

/// Markup that runs script if a page puts it in as HTML; `n` tells which
/// field leaked.
fn hostile(n: u32) -> String {
    format!("<img src=x onerror=window.__xss={n}>")
}

/// A node whose every string is hostile: `/info`, `/stats` (topic, channel,
/// clients) and `/job/status` (job fields, workers, fires, shards).
fn hostile_node() -> FakeNode {
    let stats = serde_json::json!({
        "version": "1.3.0", "health": "OK", "start_time": 1,
        "topics": [
            {"topic_name": hostile(1), "depth": 1, "message_count": 1, "paused": false, "channels": []},
            {"topic_name": "t", "depth": 0, "message_count": 3, "paused": false, "channels": [
                {"channel_name": "c", "depth": 1, "message_count": 3, "client_count": 1, "clients": [{
                    "client_id": hostile(2), "hostname": hostile(3), "version": hostile(4),
                    "remote_address": hostile(5), "user_agent": hostile(6), "tls": true,
                    "tls_version": hostile(7), "authed": true, "auth_identity": hostile(8),
                    "connect_ts": 1_700_000_000, "ready_count": 1
                }]}
            ]},
            {"topic_name": "render", "depth": 0, "message_count": 0, "paused": false, "channels": [
                {"channel_name": "workers", "depth": 0, "dead_letter_topic": hostile(9)}
            ]}
        ]
    });
    let jobs = serde_json::json!({"jobs": [{
        "job": "render", "channel": "workers", "settling": true,
        "settle_remaining_ms": hostile(10), "min_workers": hostile(11),
        "pending_on_disk": hostile(12), "other_messages": 0,
        "workers": [{"worker": hostile(13), "remote_address": hostile(14), "capacity": 2,
                     "load": 1, "total_load": 1, "shards_taken": 1}],
        "fires": [{"fire": hostile(15), "pending": 0, "running": 1, "failed": 0, "done": 0, "dead": 0,
                   "shards": [{"item": hostile(16), "param": hostile(17), "load": hostile(18),
                               "state": hostile(19), "attempts": 1, "worker": hostile(20)}]}]
    }]});
    let node = FakeNode::start(vec![
        ("/ping", Answer::Json("\"OK\"".into())),
        ("/stats", Answer::Json(stats.to_string())),
        ("/job/status", Answer::Json(jobs.to_string())),
    ]);
    node.route("/info", node.info(&hostile(21)));
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_node_cannot_run_script_in_any_page() {
    within_for(BROWSER_TEST_TIMEOUT, async {
        let node = hostile_node();
        let admin = NsqadminProcess::start_with_nsqds(&[node.addr()], &["--history-interval=200ms"]);
        let (_driver, _profile, b) = open_browser().await;
        let base = format!("http://{}", admin.http_addr());
        let node_key = format!("127.0.0.1:{}", node.addr().port());
        let pages = [
            ("/", "#topics tr[data-topic]", 1),
            ("/nodes", "#nodes tr[data-node]", 21),
            (&*format!("/nodes/{node_key}"), "#topics tr[data-topic]", 1),
            ("/topics/t/c", "#clients td", 3),
            ("/jobs", "table.fires tr.sub", 16),
        ];
        for (path, marker, shown) in pages {
            b.goto(&format!("{base}{path}")).await.expect("open a page");
            b.wait()
                .at_most(SETTLE)
                .for_element(Locator::Css(marker))
                .await
                .unwrap_or_else(|e| admin.fail(&format!("{path}: no {marker}: {e}")));
            // Whatever the node sent became no element and ran nothing: the
            // page is drawn in one go, so once the marker is there so is
            // everything else.
            let verdict = b
                .execute(
                    "return [document.querySelectorAll('#main img, #main script, #main [onerror]').length, \
                     window.__xss === undefined ? 0 : window.__xss];",
                    vec![],
                )
                .await
                .expect("ask the page");
            if verdict != json!([0, 0]) {
                save_screenshot("nsqadmin-hostile-node.png", &b.screenshot().await.unwrap());
                admin.fail(&format!(
                    "{path}: markup from the node became elements or ran \
                     ([elements, number of the field that ran]): {verdict}"
                ));
            }
            // And it is on the page, as text (pages redraw live, so look
            // until it is there).
            let want = hostile(shown);
            let deadline = tokio::time::Instant::now() + SETTLE;
            loop {
                let main = b.find(Locator::Css("#main")).await.expect("#main");
                let text = main.text().await.unwrap_or_default();
                if text.contains(&want) {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    admin.fail(&format!("{path}: {want} is not shown as text: {text}"));
                }
                tokio::time::sleep(WAIT_POLL_INTERVAL).await;
            }
        }
        b.close().await.expect("close the browser session");
    })
    .await;
}
