//! What is kept no longer: `[sink] retain` deletes a job's result rows of old windows after
//! its run, in batches, and `batchscore prune` batchscore's own rows past a bound, keeping what
//! a results row, a drift reference or an open alert still needs; beside a concurrent run that
//! stays exactly-once. On every backend.

use std::process::Stdio;

use chrono::{TimeDelta, Utc};

use crate::support::*;
use crate::windows::{at, job};

/// A duration, in seconds, that puts the bound `minutes` after the synthetic data's start.
fn reaching(minutes: i64) -> String {
    let age = Utc::now() - (t0() + TimeDelta::minutes(minutes));
    format!("{}s", age.num_seconds())
}

/// Result rows, and of them those whose run's window ended by `minutes`, through README's
/// join.
async fn results_ending_by(p: &Project, minutes: i64) -> (i64, i64) {
    let all = p.count("SELECT count(*) FROM predictions").await;
    let old = p
        .count(&format!(
            "SELECT count(*) FROM predictions p JOIN batchscore_runs r ON r.id = p.batchscore_run \
             WHERE {} <= {}",
            p.kind.epoch("r.window_end"),
            (t0() + TimeDelta::minutes(minutes)).timestamp()
        ))
        .await;
    (all, old)
}

async fn retain_deletes_the_rows_of_old_windows_after_the_run(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // Two three-hour windows of 18,000 rows: the first one's rows go in two batches.
    p.seed_synthetic(36_000).await;
    let text = job("all")
        .replace("*/10 * * * *", "0 */3 * * *")
        .replace("size = \"10m\"", "size = \"3h\"")
        .replace("chunk_rows = 400", "chunk_rows = 10000")
        + &format!("retain = \"{}\"\n", reaching(240));
    p.write_job("job", &text);
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    let out = p.batchscore(&["run-job", "job", "--at", &at(361)]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out)
            .contains("job: deleted 18000 result row(s) of windows older than [sink] retain"),
        "{}",
        stdout(&out)
    );
    assert_eq!(results_ending_by(&p, 180).await, (18_000, 0));
    // The second window's rows are all there, each with its model, and the ledger keeps both
    // windows.
    let kept = p
        .count(
            "SELECT count(*) FROM predictions p JOIN batchscore_models m ON m.id = p.batchscore_model \
             WHERE p.reading_id >= 18000",
        )
        .await;
    assert_eq!(kept, 18_000);
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
            .await,
        2
    );
    // Nothing more is old enough: a second pass deletes nothing.
    let again = p.batchscore(&["run-job", "job", "--at", &at(362)]);
    assert_exit(&again, 0);
    assert!(!stdout(&again).contains("deleted"), "{}", stdout(&again));
}

on_all_databases!(retain_deletes_the_rows_of_old_windows_after_the_run);

/// `(table, rows)` as `prune` printed them.
fn pruned(out: &std::process::Output) -> Vec<(String, i64)> {
    stdout(out)
        .lines()
        .filter_map(|line| {
            let (table, rest) = line.split_once(": ")?;
            let rows = rest.split_whitespace().next()?.parse().ok()?;
            Some((table.to_owned(), rows))
        })
        .collect()
}

async fn prune_deletes_old_rows_and_keeps_what_is_needed(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 0);
    // Window 0 again: its first run is superseded, the second is what its rows point at.
    let backfill = ["run-job", "job", "--from", &at(0), "--to", &at(10)];
    assert_exit(&p.batchscore(&backfill), 0);
    let profiles = |window: i64| {
        format!(
            "SELECT count(*) FROM batchscore_profiles WHERE {} = {}",
            p.kind.epoch("window_end"),
            (t0() + TimeDelta::minutes(window)).timestamp()
        )
    };
    let window_0_profiles = p.count(&profiles(10)).await;
    assert!(window_0_profiles > 0);
    let later_profiles = p.count(&profiles(20)).await + p.count(&profiles(30)).await;

    let older_than = reaching(15);
    let dry = p.batchscore(&["prune", "--older-than", &older_than, "--dry-run"]);
    assert_exit(&dry, 0);
    let expected = vec![
        ("batchscore_runs".to_owned(), 1),
        ("batchscore_profiles".to_owned(), window_0_profiles),
        ("batchscore_quarantine".to_owned(), 0),
        ("batchscore_performance".to_owned(), 0),
    ];
    assert_eq!(pruned(&dry), expected, "{}", stdout(&dry));
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs").await,
        4,
        "a dry run deletes nothing"
    );

    // Pruned while a backfill re-scores every window: the backfill commits each window once,
    // and every result row still joins to its run and model.
    let racing = p
        .command(&["run-job", "job", "--from", &at(0), "--to", &at(30)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = p.batchscore(&["prune", "--older-than", &older_than]);
    assert_exit(&out, 0);
    let raced = racing.wait_with_output().unwrap();
    assert!(
        raced.status.success(),
        "{}",
        String::from_utf8_lossy(&raced.stderr)
    );
    let deleted = pruned(&out);
    assert!(
        deleted[0].1 >= 1,
        "the superseded run at least: {}",
        stdout(&out)
    );
    assert_eq!(p.count("SELECT count(*) FROM predictions").await, 3_000);
    let joined = p
        .count(
            "SELECT count(*) FROM predictions p JOIN batchscore_runs r ON r.id = p.batchscore_run \
             JOIN batchscore_models m ON m.id = p.batchscore_model WHERE r.status = 'succeeded'",
        )
        .await;
    assert_eq!(joined, 3_000, "every row's run is kept");
    // Each window's latest run is kept; newer windows' profiles are intact.
    let latest = p
        .count(
            "SELECT count(DISTINCT window_start) FROM batchscore_runs WHERE status = 'succeeded'",
        )
        .await;
    assert_eq!(latest, 3);
    assert!(p.count(&profiles(20)).await + p.count(&profiles(30)).await >= later_profiles);
    // Once the race is over, pruning again leaves window 0 exactly the run its rows point at.
    assert_exit(&p.batchscore(&["prune", "--older-than", &older_than]), 0);
    let window_0 = format!(
        "SELECT count(*) FROM batchscore_runs WHERE {} = {}",
        p.kind.epoch("window_end"),
        (t0() + TimeDelta::minutes(10)).timestamp()
    );
    assert_eq!(p.count(&window_0).await, 1);
    let dry = p.batchscore(&["prune", "--older-than", &older_than, "--dry-run"]);
    assert!(
        pruned(&dry).iter().all(|(_, rows)| *rows == 0),
        "{}",
        stdout(&dry)
    );
}

on_all_databases!(prune_deletes_old_rows_and_keeps_what_is_needed);

/// A job file that cannot be read could be keeping anything: prune refuses to guess.
#[tokio::test]
async fn prune_refuses_with_a_job_file_it_cannot_read() {
    let p = Project::sqlite().await;
    p.write_job("job", "schedule = \"nonsense\"");
    let out = p.batchscore(&["prune", "--dry-run"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("job.toml"), "{}", stderr(&out));
}
