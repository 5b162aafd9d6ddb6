//! A results table altered between windows: a column dropped, or its type changed to one that
//! cannot hold the output. The next window fails with exit 2 naming the table and the column;
//! nothing of it is written, and the windows before it stay as they were. Under `run-job` (the
//! job prepared after the change) and under the daemon (prepared before it).

use std::time::Duration;

use crate::daemon::{create_readings, feed, insert_now, job, start_daemon, stop_daemon};
use crate::support::*;
use crate::windows::{at, predictions};

/// SQL that replaces `failure_probability` with a column of a time type, which no probability
/// fits (SQLite's columns take any value, so there only the drop applies).
fn retype(kind: Kind, table: &str) -> Option<String> {
    let time = match kind {
        Kind::Sqlite => return None,
        Kind::Postgres => "timestamptz",
        Kind::Mysql => "DATETIME(6)",
    };
    Some(format!(
        "ALTER TABLE {table} DROP COLUMN failure_probability; \
         ALTER TABLE {table} ADD COLUMN failure_probability {time}"
    ))
}

async fn a_results_table_altered_between_runs_fails_the_next_window(kind: Kind) {
    let changes = [
        Some("ALTER TABLE predictions DROP COLUMN failure_probability".to_owned()),
        retype(kind, "predictions"),
    ];
    for change in changes.into_iter().flatten() {
        let Some(p) = Project::new(kind).await else {
            return;
        };
        p.seed_synthetic(3_000).await;
        p.write_job("job", &crate::windows::job("all"));
        assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
        assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(11)]), 0);
        let before = predictions(&p).await.len();
        assert_eq!(before, 1000);
        p.execute(&change).await;

        let out = p.batchscore(&["run-job", "job", "--at", &at(21)]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("results table predictions") && err.contains("failure_probability"),
            "{change}:\n{err}"
        );
        let keys: i64 = p.count("SELECT count(*) FROM predictions").await;
        assert_eq!(
            keys, 1000,
            "{change}: the first window intact, nothing of the second"
        );
        assert_eq!(
            p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
                .await,
            1,
            "{change}"
        );
        assert_eq!(
            p.watermark("job").await.as_deref(),
            Some(crate::windows::ts(10).as_str())
        );
    }
}

on_all_databases!(a_results_table_altered_between_runs_fails_the_next_window);

/// The daemon prepared the job before the table changed: its next window fails naming the
/// table and the column (exit 2's error, logged), and the committed windows stay whole.
async fn a_results_table_altered_under_the_daemon_fails_its_next_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &job("scores_a", "1s", 1000));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let feeding = feed(&p);
    let daemon = start_daemon(&p, &[]);
    crate::daemon::wait_for_windows(&p, "a", 2, 30).await;
    let change = retype(kind, "scores_a")
        .unwrap_or_else(|| "ALTER TABLE scores_a DROP COLUMN failure_probability".to_owned());
    p.execute(&change).await;
    eventually(30, "a failed window", || async {
        p.count("SELECT count(*) FROM batchscore_runs WHERE job = 'a' AND status = 'failed'")
            .await
            > 0
    })
    .await;
    drop(feeding);
    let (code, log) = stop_daemon(daemon, Duration::from_secs(20));
    assert_eq!(code, 0, "{log}");
    let error: String = sqlx::query_scalar(
        "SELECT error FROM batchscore_runs WHERE job = 'a' AND status = 'failed' LIMIT 1",
    )
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert!(
        error.contains("results table scores_a") && error.contains("failure_probability"),
        "{error}"
    );
    // Every committed window's rows are there, and no more.
    let written = p
        .count(&format!(
            "SELECT CAST(COALESCE(sum(rows_written), 0) AS {}) FROM batchscore_runs WHERE job = 'a' AND status = 'succeeded'",
            kind.bigint()
        ))
        .await;
    assert_eq!(p.count("SELECT count(*) FROM scores_a").await, written);
}

on_all_databases!(a_results_table_altered_under_the_daemon_fails_its_next_window);
