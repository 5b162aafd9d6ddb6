//! Log lines that answer questions: with `--log-format json`, each committed window says what it
//! read, wrote, quarantined and skipped, how long it took and how fast; each failure says why,
//! with the job and the window. Checked field by field in the JSON.

use serde_json::Value;

use crate::support::*;
use crate::windows::{at, job};

/// The JSON log lines of `stderr` whose message starts with `message`.
fn events(stderr: &str, message: &str) -> Vec<Value> {
    stderr
        .lines()
        // The last line of a failed command is its error, for people: not a log line.
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|event| {
            event["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

#[tokio::test]
async fn committed_and_failed_windows_log_their_figures_and_causes() {
    let p = Project::sqlite().await;
    p.seed_synthetic(6_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    let out = p.batchscore(&["--log-format", "json", "run-job", "job", "--at", &at(21)]);
    assert_exit(&out, 0);
    let committed = events(&stderr(&out), "window committed");
    assert_eq!(committed.len(), 2, "{}", stderr(&out));
    for (event, start) in committed
        .iter()
        .zip(["2026-01-10T00:00:00Z", "2026-01-10T00:10:00Z"])
    {
        let fields = &event["fields"];
        assert_eq!(fields["rows_read"], 1000, "{event}");
        assert_eq!(fields["rows_written"], 1000, "{event}");
        assert_eq!(fields["rows_quarantined"], 0, "{event}");
        assert_eq!(fields["rows_skipped"], 0, "{event}");
        let seconds = fields["seconds"].as_f64().unwrap();
        let rate = fields["rows_per_second"].as_f64().unwrap();
        assert!(seconds > 0.0 && rate > 0.0, "{event}");
        // rows per second is rows read over the window's seconds (both rounded).
        assert!((rate * seconds / 1000.0 - 1.0).abs() < 0.05, "{event}");
        let span = &event["span"];
        assert_eq!(span["job"], "job", "{event}");
        assert!(
            span["window"]
                .as_str()
                .unwrap()
                .starts_with(&format!("[{start}")),
            "{event}"
        );
        assert!(
            span["run_id"].as_str().is_some_and(|id| id.len() == 36),
            "{event}"
        );
    }

    // A window that fails says why, naming the job and the window.
    p.execute("UPDATE sensor_readings SET vibration = NULL WHERE reading_id = 2250")
        .await;
    p.write_job(
        "job",
        &format!("{}\n[bad_rows]\npolicy = \"fail\"\n", job("all")),
    );
    let out = p.batchscore(&["--log-format", "json", "run-job", "job", "--at", &at(31)]);
    assert_exit(&out, 1);
    let failed = events(&stderr(&out), "window failed");
    assert_eq!(failed.len(), 1, "{}", stderr(&out));
    let event = &failed[0];
    let error = event["fields"]["error"].as_str().unwrap();
    assert!(error.contains("vibration"), "{event}");
    assert!(error.contains("2250"), "{event}");
    // The policy stops the window at its first bad row: not every row was read.
    let read = event["fields"]["rows_read"].as_i64().unwrap();
    assert!((1..=1000).contains(&read), "{event}");
    assert_eq!(event["span"]["job"], "job", "{event}");
    assert!(
        event["span"]["window"]
            .as_str()
            .unwrap()
            .starts_with("[2026-01-10T00:20:00Z"),
        "{event}"
    );
}
