//! Progress while a window is scored: a bar on a terminal (run under `script`, which gives the
//! process a pseudo-terminal), log lines with the rows done and the rate elsewhere.

use serde_json::Value;

use crate::support::*;
use crate::windows::{at, job};

/// One window of 20,000 rows in chunks of 100: long enough to be seen in progress.
async fn long_window(p: &Project) {
    p.seed_synthetic(20_000).await;
    p.write_job(
        "job",
        &job("all")
            .replace("size = \"10m\"", "size = \"200m\"")
            .replace("chunk_rows = 400", "chunk_rows = 100"),
    );
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
}

#[tokio::test]
async fn without_a_terminal_a_long_window_logs_its_progress() {
    let p = Project::sqlite().await;
    long_window(&p).await;
    let out = p
        .command(&["--log-format", "json", "run-job", "job", "--at", &at(201)])
        // Every 100 ms instead of every 10 s, so a test window is long enough.
        .env("BATCHSCORE_PROGRESS_EVERY", "100ms")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["fields"]["message"] == "window in progress")
        .collect();
    assert!(!lines.is_empty(), "{}", stderr(&out));
    let done: Vec<u64> = lines
        .iter()
        .map(|e| e["fields"]["rows_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(*done.last().unwrap() <= 20_000, "{done:?}");
    for line in &lines {
        assert!(
            line["fields"]["rows_per_second"].as_f64().is_some(),
            "{line}"
        );
        assert_eq!(line["span"]["job"], "job", "{line}");
    }
    // Nothing drawn: no bar in a log.
    assert!(!stderr(&out).contains("ETA"), "{}", stderr(&out));
}

#[tokio::test]
async fn on_a_terminal_a_window_shows_a_bar() {
    let p = Project::sqlite().await;
    long_window(&p).await;
    let binary = env!("CARGO_BIN_EXE_batchscore");
    let command = format!("{binary} run-job job --at {}", at(201));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DATABASE_URL", &p.url)
        .env("BATCHSCORE_JOBS_DIR", p.jobs_dir())
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let screen = stdout(&out);
    // The bar: rows scored of the 20,000 expected, the rate and the ETA.
    assert!(screen.contains("/20,000 rows"), "{screen}");
    assert!(screen.contains(" rows/s, ETA"), "{screen}");
    assert!(screen.contains("scored 20000 rows"), "{screen}");
}
