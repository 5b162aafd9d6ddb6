//! A full disk under SQLite: the window that runs out of space fails (exit 1), the database
//! stays readable and consistent with every earlier window whole, and once space is freed the
//! next run scores the window exactly once. The database lives on a small tmpfs the test mounts
//! (it needs root); elsewhere the test is skipped, except under CI, where it must run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use crate::windows::{at, keys, predictions, ts};

/// A tmpfs of `megabytes` mounted on a directory of its own, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root and must mount a tmpfs for the disk-full test"
            );
            eprintln!("skipping: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk { path, _dir: dir })
    }

    /// Fill it, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let free = free_bytes(&self.path);
        let file = std::fs::File::create(&filler).unwrap();
        // tmpfs allocates what is written: write zeros, not a hole.
        let mut left = free.saturating_sub(leave);
        let block = vec![0u8; 64 * 1024];
        let mut out = std::io::BufWriter::new(file);
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if std::io::Write::write_all(&mut out, &block[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = std::io::Write::flush(&mut out);
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_disk_fails_the_window_and_the_next_run_completes_it() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let p = Project::sqlite_file(tempfile::tempdir().unwrap(), &disk.path.join("test.db")).await;
    p.seed_synthetic(30_000).await;
    // Windows of 100 minutes: 10,000 rows, a few megabytes of results each.
    p.write_job(
        "job",
        &crate::windows::job("all").replace("size = \"10m\"", "size = \"100m\""),
    );
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(101)]), 0);
    assert_eq!(predictions(&p).await.len(), 10_000);

    let filler = disk.fill(256 * 1024);
    let out = p.batchscore(&["run-job", "job", "--at", &at(201)]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("full") || err.contains("disk"), "{err}");

    // Readable and consistent: the first window whole, nothing of the second.
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&p.pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    assert_eq!(
        predictions(&p).await.into_keys().collect::<Vec<_>>(),
        keys(0, 100)
    );
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(100).as_str()));

    std::fs::remove_file(filler).unwrap();
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(201)]), 0);
    assert_eq!(
        predictions(&p).await.into_keys().collect::<Vec<_>>(),
        keys(0, 200)
    );
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(200).as_str()));
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
            .await,
        2,
        "each window committed once"
    );
    p.pool.close().await;
}
