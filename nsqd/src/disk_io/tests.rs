//! The disk I/O threads' handling of a data directory that changes under
//! them.

use super::*;

fn one_record(q: &QueueHandle) -> oneshot::Receiver<io::Result<()>> {
    let mut batch = WriteBatch::default();
    batch.push(|b| b.extend_from_slice(b"a record"));
    let (done, rx) = oneshot::channel();
    q.write(batch, Weak::<NoSink>::new(), Some(done));
    rx
}

struct NoSink;

impl DiskSink for NoSink {
    fn written(&self, _: u64, _: &io::Result<()>, _: u64) {}
    fn refill(&self, _: ReadAhead) {}
}

#[tokio::test]
async fn a_queue_whose_files_went_after_the_listing_opens_from_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let io = DiskIo::for_tests(dir.path());
    for _ in 0..3 {
        one_record(&io.queue("gone")).await.unwrap().unwrap();
    }
    io.shutdown();
    // The next start lists the directory at its first open, "gone"'s
    // segments with it; then they are removed behind its back (as a
    // holder removes spill queues no saved copy refers to).
    let io = DiskIo::for_tests(dir.path());
    assert_eq!(io.queue("first").depth().await.unwrap(), 0);
    let mut removed = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("gone.")
        {
            std::fs::remove_file(path).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "nothing of the queue on disk");
    let gone = io.queue("gone");
    one_record(&gone).await.unwrap().unwrap();
    assert_eq!(gone.depth().await.unwrap(), 1);
    io.shutdown();
}
