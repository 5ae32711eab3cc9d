//! A graceful stop that cannot write what nsqd holds in memory (the disk is
//! full) must not pass for a clean one: nsqd exits non-zero and says how
//! many messages it lost. The data path is a small tmpfs this test mounts
//! (we run as root) and fills.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use nsq_test_support::NsqdProcess;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-full-disk-")
            .tempdir()
            .unwrap()
            .keep();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs (needs root): {status}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Write a file until the filesystem refuses more.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_cannot_save_messages_fails_and_counts_them() {
    const N: usize = 500;
    let disk = Tmpfs::mount("4m");
    let mut nsqd = NsqdProcess::start_with_data_dir(disk.path(), &[]);
    let mut sub = nsqd.connect().await;
    sub.sub("kept", "c").await;
    sub.abort();
    let mut p = nsqd.connect().await;
    let body = vec![b'x'; 1024];
    let bodies: Vec<&[u8]> = (0..N).map(|_| &body[..]).collect();
    p.publish_multi("kept", &bodies).await;
    drop(p);
    // Everything is in memory (default --mem-queue-size); nsqd.dat names
    // the topic and channel. Now take the disk away.
    let meta = disk.path().join("nsqd.dat");
    nsq_test_support::wait_until(
        nsq_test_support::admin::SETTLE,
        "nsqd.dat names the channel",
        || {
            let text = std::fs::read_to_string(&meta).unwrap_or_default();
            if text.contains("\"c\"") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    disk.fill();
    let status = nsqd.terminate();
    let logs = nsqd.logs();
    assert!(
        !status.success(),
        "a shutdown that lost messages exited {status}\n{logs}"
    );
    assert!(
        logs.contains(&format!("{N} messages lost")),
        "the log says how many were lost:\n{logs}"
    );
}
