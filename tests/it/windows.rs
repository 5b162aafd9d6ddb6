//! Windows that are never lost, never scored twice, never half-written: watermarks, catch-up,
//! backfill, claims under races and kills, signals; on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::support::*;

/// Ten-minute windows, one minute of lateness; `{catch_up}` is filled per test.
const JOB: &str = r#"
schedule = "*/10 * * * *"
[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = 400
[window]
size = "10m"
lateness = "1m"
catch_up = "{catch_up}"
max_catch_up = 50
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "predictions"
"#;

pub(crate) fn job(catch_up: &str) -> String {
    JOB.replace("{catch_up}", catch_up)
}

/// `t0 + minutes`, as RFC 3339.
pub(crate) fn at(minutes: i64) -> String {
    rfc3339(t0() + chrono::TimeDelta::minutes(minutes))
}

pub(crate) fn ts(minutes: i64) -> String {
    // How the ledger and watermark tables print times, in both databases.
    (t0() + chrono::TimeDelta::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// (window_start, window_end, status, rows_written) of every ledger row, ordered by window.
pub(crate) async fn ledger(p: &Project) -> Vec<(String, String, String, i64)> {
    let sql = format!(
        "SELECT {}, {}, status, rows_written FROM batchscore_runs ORDER BY window_start, started_at",
        p.kind.time_text("window_start"),
        p.kind.time_text("window_end")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// key → (label, probability) of the results table.
pub(crate) async fn predictions(p: &Project) -> BTreeMap<i64, (i64, f64)> {
    if !p.table_exists("predictions").await {
        return BTreeMap::new();
    }
    let k = p.kind;
    let sql = format!(
        "SELECT {}, {}, {} FROM predictions",
        k.int("reading_id"),
        k.int("failure_label"),
        k.double("failure_probability")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Keys of synthetic rows in `[from, to)` minutes after t0 (1000 rows per ten minutes).
pub(crate) fn keys(from_minutes: i64, to_minutes: i64) -> Vec<i64> {
    (from_minutes * 100..to_minutes * 100).collect()
}

async fn catch_up_all_scores_every_missed_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(12_000).await;
    p.write_job("job", &job("all"));
    // First run: [t0+10m, t0+20m).
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(20).as_str()));
    // Five slots missed: 31, 41, 51, 61, 71.
    let out = p.batchscore(&["run-job", "job", "--at", &at(71)]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out).matches("scored 1000 rows").count(),
        5,
        "{}",
        stdout(&out)
    );
    let expected: Vec<(String, String, String, i64)> = (1..=6)
        .map(|w| (ts(w * 10), ts(w * 10 + 10), "succeeded".to_owned(), 1000))
        .collect();
    assert_eq!(
        ledger(&p).await,
        expected,
        "six contiguous windows, in order"
    );
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(70).as_str()));
    let scored: Vec<i64> = predictions(&p).await.into_keys().collect();
    assert_eq!(scored, keys(10, 70), "every row of every window, once");
    // Running again at the same time finds nothing due.
    let out = p.batchscore(&["run-job", "job", "--at", &at(71)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
}

on_all_databases!(catch_up_all_scores_every_missed_window);

async fn catch_up_latest_scores_one_window_and_records_the_gap(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(12_000).await;
    p.write_job("job", &job("latest"));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    let out = p.batchscore(&["run-job", "job", "--at", &at(71)]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("skipped missed range"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        ledger(&p).await,
        vec![
            (ts(10), ts(20), "succeeded".to_owned(), 1000),
            (ts(20), ts(60), "skipped".to_owned(), 0),
            (ts(60), ts(70), "succeeded".to_owned(), 1000),
        ]
    );
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(70).as_str()));
    let scored: Vec<i64> = predictions(&p).await.into_keys().collect();
    assert_eq!(scored, [keys(10, 20), keys(60, 70)].concat());
}

on_all_databases!(catch_up_latest_scores_one_window_and_records_the_gap);

async fn late_rows_are_scored_by_the_next_run(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(6_000).await;
    // Rows of [t0+20m, t0+21m) arrive late: after the run at t0+21m has planned up to t0+20m.
    p.execute("DELETE FROM sensor_readings WHERE reading_id >= 2000 AND reading_id < 2100")
        .await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    p.seed_synthetic_range(2000, 2100).await;
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 0);
    let scored: Vec<i64> = predictions(&p).await.into_keys().collect();
    assert_eq!(scored, keys(10, 30), "the late rows are not lost");
}

on_all_databases!(late_rows_are_scored_by_the_next_run);

async fn backfill_is_idempotent_and_leaves_the_watermark(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(12_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(51)]), 0);
    let before = predictions(&p).await;
    let watermark = p.watermark("job").await;
    // Overlaps the scored [10m, 50m) and reaches before it.
    let out = p.batchscore(&["run-job", "job", "--from", &at(0), "--to", &at(35)]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out).matches("scored 1000 rows").count(),
        3,
        "10-minute steps"
    );
    assert!(stdout(&out).contains("scored 500 rows"), "{}", stdout(&out));
    let after = predictions(&p).await;
    assert_eq!(
        p.watermark("job").await,
        watermark,
        "backfills leave the watermark alone"
    );
    for (key, value) in &before {
        assert_eq!(after.get(key), Some(value), "key {key} changed");
    }
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), keys(0, 50));
}

on_all_databases!(backfill_is_idempotent_and_leaves_the_watermark);

#[tokio::test]
async fn watermark_never_moves_into_the_future_or_back_implicitly() {
    let p = Project::sqlite().await;
    p.seed_synthetic(1_000).await;
    p.write_job("job", &job("all"));
    let future = rfc3339(chrono::Utc::now() + chrono::TimeDelta::hours(2));
    let out = p.batchscore(&["run-job", "job", "--at", &future]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("ends in the future"),
        "{}",
        stderr(&out)
    );
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(41)]), 0);
    // An earlier --at plans nothing: the watermark does not move back.
    let out = p.batchscore(&["run-job", "job", "--at", &at(21)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("up to date"));
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(40).as_str()));
    // Only the explicit command moves it back.
    let out = p.batchscore(&["watermark", "set", "job", &at(20)]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("watermark moved from 2026-01-10T00:40:00Z to 2026-01-10T00:20:00Z"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("watermark set by hand"));
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(20).as_str()));
    let out = p.batchscore(&["watermark", "show"]);
    assert!(
        stdout(&out).contains("2026-01-10T00:20:00Z"),
        "{}",
        stdout(&out)
    );
}

/// A clean, uninterrupted run over the same data: what every other scenario must end equal to.
async fn golden(kind: Kind, rows: usize, at_minutes: i64) -> BTreeMap<i64, (i64, f64)> {
    let p = Project::new(kind).await.unwrap();
    p.seed_synthetic(rows).await;
    p.write_job("job", &job("all"));
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &at(at_minutes)]),
        0,
    );
    predictions(&p).await
}

pub(crate) fn assert_same_predictions(
    actual: &BTreeMap<i64, (i64, f64)>,
    golden: &BTreeMap<i64, (i64, f64)>,
) {
    assert_eq!(
        actual.len(),
        golden.len(),
        "row count differs from the clean run"
    );
    for (key, (label, probability)) in golden {
        let (l, p) = actual
            .get(key)
            .unwrap_or_else(|| panic!("key {key} missing"));
        assert_eq!(l, label, "key {key}");
        assert!(
            (p - probability).abs() < 1e-9,
            "key {key}: {p} vs {probability}"
        );
    }
}

async fn racing_runs_commit_each_window_once(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // One long first window (the job's size is 10m; the first run scores 10m of a dense table).
    p.seed_synthetic(12_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    // Start eight at once, all planning as of t0+101m: the first run's single window.
    let at_101 = at(101);
    let children: Vec<_> = (0..8)
        .map(|_| {
            p.command(&["run-job", "job", "--at", &at_101])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap()).collect();
    assert!(
        codes.iter().all(|c| *c == 0 || *c == 75),
        "exit codes {codes:?}: {}",
        outputs.iter().map(stderr).collect::<String>()
    );
    eprintln!("race exit codes: {codes:?}");
    let scored: Vec<_> = outputs
        .iter()
        .filter(|o| stdout(o).contains("scored 1000 rows"))
        .collect();
    assert_eq!(
        scored.len(),
        1,
        "exactly one run scores the window; codes {codes:?}"
    );
    for busy in outputs.iter().filter(|o| o.status.code() == Some(75)) {
        let err = stderr(busy);
        assert!(
            err.contains("is busy") && err.contains("host ") && err.contains("pid "),
            "{err}"
        );
    }
    let succeeded: Vec<_> = ledger(&p)
        .await
        .into_iter()
        .filter(|r| r.2 == "succeeded")
        .collect();
    assert_eq!(
        succeeded,
        vec![(ts(90), ts(100), "succeeded".to_owned(), 1000)]
    );
    let skipped = ledger(&p)
        .await
        .into_iter()
        .filter(|r| r.2 == "skipped")
        .count();
    assert_eq!(
        skipped,
        codes.iter().filter(|c| **c == 75).count(),
        "every busy run is in the ledger"
    );
    assert_same_predictions(&predictions(&p).await, &golden(kind, 12_000, 101).await);
}

on_all_databases!(racing_runs_commit_each_window_once);

/// Rerun until the job is free (a killed holder's PostgreSQL session may take a moment to end).
fn rerun_until_done(p: &Project, args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = p.batchscore(args);
        match out.status.code() {
            Some(0) => return,
            Some(75) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => assert_exit(&out, 0),
        }
    }
}

async fn killed_runs_leave_whole_windows_only(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // Twelve ten-minute windows of a thousand rows each, scored from a watermark set at t0.
    p.seed_synthetic(12_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let at_121 = at(121);
    // Time clean runs, so the kills land anywhere inside one: start-up, reading, scoring,
    // writing, committing, between windows. The shortest of three counts: other tests load the
    // machine unevenly, and a kill timed past the end of a run hits nothing.
    let mut full = u64::MAX;
    for _ in 0..3 {
        assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
        let started = Instant::now();
        assert_exit(&p.batchscore(&["run-job", "job", "--at", &at_121]), 0);
        full = full.min(started.elapsed().as_millis() as u64);
    }
    let mut seed = 0x9e37_79b9_u64;
    let mut killed_mid_run = 0;
    for round in 0..20 {
        assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
        let mut child = p
            .command(&["run-job", "job", "--at", &at_121])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Within the first 70% of a clean run's time: runs vary with the machine's load.
        std::thread::sleep(Duration::from_millis((seed >> 33) % (full * 7 / 10).max(1)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever was committed is whole: each window's ledger row matches the results.
        for (start, end, status, rows) in ledger(&p).await {
            assert!(
                status != "succeeded" || rows == 1000,
                "round {round}: window [{start}, {end}) {status} with {rows} rows"
            );
        }
        rerun_until_done(&p, &["run-job", "job", "--at", &at_121]);
        assert_eq!(
            p.watermark("job").await.as_deref(),
            Some(ts(120).as_str()),
            "round {round}"
        );
        let running = ledger(&p)
            .await
            .into_iter()
            .filter(|r| r.2 == "running")
            .count();
        assert_eq!(running, 0, "round {round}: a run is stuck as running");
    }
    assert!(
        killed_mid_run >= 14,
        "only {killed_mid_run} of 20 kills hit a running process"
    );
    let golden = golden(kind, 12_000, 121).await;
    // The golden run starts without a watermark: its first window is [110m, 120m); compare the
    // rows both scored, and check every other window's rows are there too.
    let actual = predictions(&p).await;
    assert_eq!(actual.keys().copied().collect::<Vec<_>>(), keys(0, 120));
    let overlap: BTreeMap<_, _> = actual
        .iter()
        .filter(|(k, _)| golden.contains_key(k))
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_same_predictions(&overlap, &golden);
    if kind == Kind::Postgres {
        let held = p
            .count(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
                 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('batchscore job ' || current_schema() || '.job', 0)",
            )
            .await;
        assert_eq!(held, 0, "no advisory lock is left behind");
    }
}

on_all_databases!(killed_runs_leave_whole_windows_only);

async fn sigterm_rolls_back_the_open_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(60_000).await;
    // One big window: [0, 100m), 10,000 rows in small chunks, so the run is mid-window when
    // the signal arrives.
    p.write_job(
        "job",
        &job("all")
            .replace("size = \"10m\"", "size = \"100m\"")
            .replace("chunk_rows = 400", "chunk_rows = 100"),
    );
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let child = p
        .command(&["run-job", "job", "--from", &at(0), "--to", &at(100)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the window has started, then ask it to stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger(&p).await.iter().all(|r| r.2 != "running") {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "TERM");
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_exit(&out, 143);
    let err = stderr(&out);
    assert!(
        err.contains("interrupted by SIGTERM") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(
        predictions(&p).await.len(),
        0,
        "nothing of the window is written"
    );
    let rows = ledger(&p).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "failed", "the run said:\n{err}");
}

on_all_databases!(sigterm_rolls_back_the_open_window);

/// A results table a team created with narrower types than batchscore's (`integer` key and
/// label, `real` probability) cannot take binary COPY; it is written through INSERT and its
/// casts, with the same results as a table batchscore made.
async fn a_results_table_with_other_types_is_written_through_casts(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    let time = kind.time_type();
    let text = match kind {
        Kind::Mysql => "VARCHAR(64)",
        _ => "text",
    };
    p.execute(&format!(
        "CREATE TABLE predictions (reading_id integer PRIMARY KEY, failure_label integer, \
         failure_probability real, model_version {text} NOT NULL, run_id {text} NOT NULL, \
         window_start {time} NOT NULL, window_end {time} NOT NULL, scored_at {time} NOT NULL)"
    ))
    .await;
    p.write_job("job", &job("all"));
    // Two windows: the second run writes a table that already holds rows; then a backfill over
    // both replaces rows in place.
    let (first, second, backfill) = (at(11), at(21), [at(0), at(20)]);
    let runs: [&[&str]; 3] = [
        &["run-job", "job", "--at", &first],
        &["run-job", "job", "--at", &second],
        &[
            "run-job",
            "job",
            "--from",
            &backfill[0],
            "--to",
            &backfill[1],
        ],
    ];
    for args in runs {
        assert_exit(&p.batchscore(args), 0);
    }
    let actual = predictions(&p).await;
    let clean = Project::new(kind).await.unwrap();
    clean.seed_synthetic(3_000).await;
    clean.write_job("job", &job("all"));
    for args in runs {
        assert_exit(&clean.batchscore(args), 0);
    }
    let golden = predictions(&clean).await;
    assert_eq!(actual.len(), 2_000);
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>()
    );
    for (key, (label, probability)) in &golden {
        let (l, p) = actual[key];
        assert_eq!(l, *label, "key {key}");
        // `real` keeps a float32: about seven significant digits.
        assert!(
            (p - probability).abs() < 1e-6,
            "key {key}: {p} vs {probability}"
        );
    }
}

on_all_databases!(a_results_table_with_other_types_is_written_through_casts);

/// The fast write path (keys not in the table yet: a plain COPY, no ON CONFLICT) is safe when
/// another writer commits one of the window's keys after batchscore looked: the COPY waits for
/// that writer, fails on the key, and the window rolls back whole; the next run replaces the
/// row. Nothing is half-written, nothing written twice.
#[tokio::test]
async fn a_key_committed_by_another_writer_mid_window_rolls_it_back_whole() {
    let Some(p) = Project::postgres().await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    // The first window creates the results table.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(11)]), 0);
    // Another writer puts key 1500 (in the next window, [10m, 20m)) in, uncommitted.
    let mut other = p.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO predictions VALUES (1500, 7, 0.5, 0, 0)")
        .execute(&mut *other)
        .await
        .unwrap();
    let child = p
        .command(&["run-job", "job", "--at", &at(21)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // batchscore found no key of the window in the table, so it COPYs, and the unique index
    // makes it wait for the other writer's transaction.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' \
             AND transactionid::text = pg_current_xact_id()::text",
        )
        .fetch_one(&mut *other)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "batchscore never waited on the key"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    other.commit().await.unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("was not written") && err.contains("writing results to predictions"),
        "{err}"
    );
    let rows = ledger(&p).await;
    assert_eq!(rows.last().unwrap().2, "failed");
    let after_failure = predictions(&p).await;
    assert_eq!(
        after_failure.keys().copied().collect::<Vec<_>>(),
        [keys(0, 10), vec![1500]].concat()
    );
    assert_eq!(
        after_failure[&1500],
        (7, 0.5),
        "the other writer's row is untouched"
    );
    // The next run sees the key, upserts, and the window ends up as a clean run's.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    let mut after = predictions(&p).await;
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), keys(0, 20));
    after.retain(|key, _| *key >= 1000);
    assert_same_predictions(&after, &golden(Kind::Postgres, 3_000, 21).await);
}

/// A scheduled run with no window due claims nothing and loads no model: a cron tick between
/// windows costs a process start and two reads. The model is loaded (and its load time logged)
/// when a window is due, so a model that no longer loads is found then.
async fn a_run_with_nothing_due_does_not_load_the_model(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    let model = p.dir.path().join("model.onnx");
    std::fs::copy(model_path("machine_failure"), &model).unwrap();
    p.write_job(
        "job",
        &job("all").replace(
            "{models}/machine_failure.onnx",
            &model.display().to_string(),
        ),
    );
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    let first = p.batchscore(&["run-job", "job", "--at", &at(11)]);
    assert_exit(&first, 0);
    assert!(
        stderr(&first).contains("model loaded") && stderr(&first).contains("load_seconds="),
        "{}",
        stderr(&first)
    );

    std::fs::write(&model, b"not a model").unwrap();
    // Again at the same time (cron and a retry, say): the watermark is at the window's end.
    let idle = p.batchscore(&["run-job", "job", "--at", &at(11)]);
    assert_exit(&idle, 0);
    assert!(
        stdout(&idle).contains("job: up to date, no window is due"),
        "{}",
        stdout(&idle)
    );
    assert!(!stderr(&idle).contains("model loaded"), "{}", stderr(&idle));
    assert_eq!(ledger(&p).await.len(), 1, "nothing recorded");

    let due = p.batchscore(&["run-job", "job", "--at", &at(21)]);
    assert_exit(&due, 2);
    assert!(
        stderr(&due).contains("model.onnx is not an ONNX model"),
        "{}",
        stderr(&due)
    );
    assert_eq!(p.watermark("job").await, Some(ts(10)));
}

on_all_databases!(a_run_with_nothing_due_does_not_load_the_model);

/// A due window without a row needs no model session. A model whose declared inputs and
/// outputs bind the job, but which ONNX Runtime refuses (an operator it does not know), commits
/// that window without loading it; the first window with a row is refused before anything is
/// recorded, as validation refuses the model.
async fn an_empty_window_due_does_not_build_the_model_session(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(1_000).await; // minutes 0 to 10
    let mut refused = std::fs::read(model_path("machine_failure")).unwrap();
    let (op, unknown) = (
        &b"TreeEnsembleClassifier"[..],
        &b"TreeEnsembleClassifiez"[..],
    );
    let mut renamed = 0;
    for at in 0..refused.len() - op.len() {
        if &refused[at..at + op.len()] == op {
            refused[at..at + op.len()].copy_from_slice(unknown);
            renamed += 1;
        }
    }
    assert!(renamed > 0, "the model's operator");
    let model = p.dir.path().join("refused.onnx");
    std::fs::write(&model, refused).unwrap();
    p.write_job(
        "job",
        &job("all").replace(
            "{models}/machine_failure.onnx",
            &model.display().to_string(),
        ),
    );
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(10)]), 0);

    let empty = p.batchscore(&["run-job", "job", "--at", &at(21)]);
    assert_exit(&empty, 0);
    assert!(
        stdout(&empty).contains("scored 0 rows of window"),
        "{}",
        stdout(&empty)
    );
    assert!(
        !stderr(&empty).contains("model loaded"),
        "{}",
        stderr(&empty)
    );
    let committed = ledger(&p).await;
    assert_eq!(
        committed,
        [(ts(10), ts(20), "succeeded".to_owned(), 0)],
        "the empty window is committed"
    );
    assert_eq!(p.watermark("job").await, Some(ts(20)));

    p.seed_synthetic_range(2_000, 3_000).await; // minutes 20 to 30
    let due = p.batchscore(&["run-job", "job", "--at", &at(31)]);
    assert_exit(&due, 2);
    let said = stderr(&due);
    assert!(
        said.contains(&model.display().to_string())
            && said.contains("is not a model ONNX Runtime can load"),
        "{said}"
    );
    assert_eq!(ledger(&p).await, committed, "nothing recorded");
    assert_eq!(p.watermark("job").await, Some(ts(20)));
    let validate = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validate, 2);
    assert!(
        stdout(&validate).contains("is not a model ONNX Runtime can load"),
        "{}",
        stdout(&validate)
    );
}

on_all_databases!(an_empty_window_due_does_not_build_the_model_session);
