//! Starting on a data path with thousands of topics costs nothing per empty
//! queue: nsqd restores every topic and channel of `nsqd.dat` without
//! writing (and fsyncing) a disk-queue file for any of them. (Its time is
//! measured by hand, never asserted: see the README.)

use nsq_test_support::{within_for, NsqdProcess};

const TOPICS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_empty_topics_restore_without_touching_their_queues() {
    within_for(std::time::Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let topics: Vec<serde_json::Value> = (0..TOPICS)
            .map(|i| {
                serde_json::json!({
                    "name": format!("topic_{i:05}"),
                    "paused": false,
                    "channels": [{"name": "c", "paused": false}],
                })
            })
            .collect();
        let meta = serde_json::json!({"topics": topics, "version": "1.3.0"});
        std::fs::write(dir.path().join("nsqd.dat"), meta.to_string()).unwrap();

        let nsqd = NsqdProcess::start_with_data_dir(dir.path(), &[]);
        let stats = nsqd
            .http_get("/stats?format=json&include_clients=false")
            .json();
        let restored = stats["topics"].as_array().map_or(0, Vec::len);
        assert_eq!(restored, TOPICS, "every topic is back");
        // The counted cost: files nsqd created for 10,000 empty queues.
        let queue_files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".diskqueue."))
            .collect();
        assert!(
            queue_files.is_empty(),
            "{} disk-queue files written for empty queues at start, e.g. {:?}",
            queue_files.len(),
            queue_files.first()
        );
    })
    .await;
}
