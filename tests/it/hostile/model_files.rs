//! Broken model files: truncated at random points, bit-flipped, overwritten with random bytes,
//! empty, a gigabyte of zeros, an input of absurd shape, an operator of a domain ONNX Runtime
//! lacks. Each is refused at validation (exit 2, naming the file) before any row is read; a
//! bit flip that leaves a loadable model may run, and nothing crashes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::job_files::run_bounded;
use crate::support::*;

/// A small deterministic generator (64-bit LCG), so the cases are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// The windows job, scoring with the model file at `model`.
fn job_with(model: &Path) -> String {
    crate::windows::job("all").replace(
        "{models}/machine_failure.onnx",
        &model.display().to_string(),
    )
}

/// `jobs validate` and `run-job` with the model at `path`: exit 2 naming the file, nothing
/// read or written; or, where `may_load` (a bit flip can leave a valid model), exit 0.
async fn assert_refused(p: &Project, path: &Path, what: &str, may_load: bool) {
    p.write_job("job", &job_with(path));
    for args in [
        &["jobs", "validate", "job"][..],
        &["run-job", "job", "--at", &crate::windows::at(21)],
    ] {
        let (out, took) = run_bounded(p, args, Duration::from_secs(60));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            took < Duration::from_secs(30),
            "{what}: {args:?} took {took:?}"
        );
        assert!(!said.contains("panicked"), "{what}: {args:?}:\n{said}");
        match out.status.code() {
            Some(2) => assert!(
                said.contains(&path.display().to_string()),
                "{what}: {args:?} does not name the file:\n{said}"
            ),
            Some(0) if may_load => {}
            other => panic!("{what}: {args:?} exited {other:?}:\n{said}"),
        }
        if out.status.code() == Some(2) {
            assert!(p.runs().await.is_empty(), "{what}: a run was recorded");
            assert!(!p.table_exists("predictions").await, "{what}: rows written");
        }
    }
    if may_load && p.table_exists("predictions").await {
        // A loadable flipped model scored: start the next case from nothing.
        p.execute("DROP TABLE predictions").await;
        p.execute("DELETE FROM batchscore_runs").await;
        p.execute("DELETE FROM batchscore_watermarks").await;
        p.execute("DELETE FROM batchscore_profiles").await;
    }
}

fn write(p: &Project, name: &str, bytes: &[u8]) -> PathBuf {
    let path = p.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn broken_model_files_are_refused_naming_the_file() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let good = std::fs::read(model_path("machine_failure")).unwrap();
    let mut rng = Lcg(7);

    assert_refused(&p, &write(&p, "empty.onnx", b""), "empty", false).await;
    for i in 0..8 {
        let at = 1 + rng.below(good.len() - 1);
        let path = write(&p, &format!("truncated_{i}.onnx"), &good[..at]);
        assert_refused(&p, &path, &format!("truncated at {at}"), false).await;
    }
    let noise: Vec<u8> = (0..20_000).map(|_| rng.below(256) as u8).collect();
    assert_refused(&p, &write(&p, "random.onnx", &noise), "random bytes", false).await;
    for i in 0..8 {
        let mut flipped = good.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(flipped.len());
            flipped[at] ^= 1 << rng.below(8);
        }
        let path = write(&p, &format!("flipped_{i}.onnx"), &flipped);
        assert_refused(&p, &path, &format!("bit flips {i}"), true).await;
    }
    // A gigabyte of zeros, sparse: refused from its first bytes, not read whole.
    let zeros = p.dir.path().join("zeros.onnx");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    assert_refused(&p, &zeros, "1 GB of zeros", false).await;

    let fixtures = Path::new(REPO).join("tests/fixtures/hostile");
    for (name, says) in [
        ("unknown_domain", "com.example.unknown:Frobnicate"),
        ("absurd_width", "expects 1000000000000 features"),
        ("absurd_batch", "fixed batch size of 1000000000000"),
    ] {
        let path = fixtures.join(format!("{name}.onnx"));
        assert_refused(&p, &path, name, false).await;
        p.write_job("job", &job_with(&path));
        let out = p.batchscore(&["jobs", "validate", "job"]);
        assert!(stdout(&out).contains(says), "{name}:\n{}", stdout(&out));
    }
}
