//! Sharded jobs (`[source] shards = N`): shard processes running at once write exactly what one
//! unsharded run writes, each shard owning the keys Python's formula gives it; a killed shard
//! loses only its own window; daemon replicas spread the shards; resharding is refused until
//! the shards are level, then moves the job without gap or overlap. On SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::daemon::{create_readings, feed, insert_now, start_daemon, stop_daemon};
use crate::support::*;
use crate::windows::{at, job, ts};

/// The windows job of `windows.rs`, sharded, into `{sink}`.
fn sharded(shards: u32, sink: &str) -> String {
    job("all")
        .replace(
            "chunk_rows = 400",
            &format!("chunk_rows = 400\nshards = {shards}"),
        )
        .replace("table = \"predictions\"", &format!("table = \"{sink}\""))
}

/// Which shard of `count` each key belongs to, by the formulas the README gives, computed by
/// Python: integer keys `(k % p) * 48271 % p % count`, text keys the first 32 bits of the MD5.
fn python_shards(keys: &[String], text: bool, count: u32) -> Vec<u32> {
    let program = r#"
import hashlib, sys
count, text = int(sys.argv[1]), sys.argv[2] == "text"
p = 2147483647
for line in sys.stdin.read().splitlines():
    if text:
        h = int(hashlib.md5(line.encode()).hexdigest()[:8], 16)
    else:
        h = (int(line) % p) * 48271 % p
    print(h % count)
"#;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            program,
            &count.to_string(),
            if text { "text" } else { "int" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (the test command needs it to install ONNX Runtime)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(keys.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// key (as text) → (label, probability, shard that wrote it) of a results table.
async fn results(p: &Project, sink: &str) -> BTreeMap<String, (i64, f64, i64)> {
    let k = p.kind;
    let sql = format!(
        "SELECT {}, {}, {}, {} FROM {sink} r JOIN batchscore_runs l ON l.id = r.batchscore_run",
        k.text("r.reading_id"),
        k.int("r.failure_label"),
        k.double("r.failure_probability"),
        k.int("l.shard")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// The predictions alone: what an unsharded run and the shards must agree on.
fn predictions(results: &BTreeMap<String, (i64, f64, i64)>) -> BTreeMap<String, (i64, f64)> {
    results
        .iter()
        .map(|(k, (label, p, _))| (k.clone(), (*label, *p)))
        .collect()
}

/// Each shard wrote exactly the keys Python assigns to it.
fn assert_owned_by_formula(results: &BTreeMap<String, (i64, f64, i64)>, text: bool, count: u32) {
    let keys: Vec<String> = results.keys().cloned().collect();
    let expected = python_shards(&keys, text, count);
    let mut per_shard = vec![0; count as usize];
    for (key, shard) in keys.iter().zip(expected) {
        assert_eq!(
            results[key].2,
            i64::from(shard),
            "key {key} was written by the wrong shard"
        );
        per_shard[shard as usize] += 1;
    }
    // A hash that spreads: no shard is empty or holds most rows.
    let total: usize = per_shard.iter().sum();
    for n in &per_shard {
        assert!(
            *n > total / (count as usize * 2),
            "uneven shards: {per_shard:?}"
        );
    }
}

/// Spawn one `run-job` per shard, `JOB_COMPLETION_INDEX` set as an Indexed Job's pods have it.
fn spawn_shards(p: &Project, name: &str, count: u32, extra: &[&str]) -> Vec<Child> {
    (0..count)
        .map(|i| {
            let mut args = vec!["run-job", name];
            args.extend_from_slice(extra);
            p.command(&args)
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_all(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
}

/// The watermark of each shard, by index, as RFC 3339 with microseconds.
async fn shard_watermarks(p: &Project, name: &str) -> BTreeMap<i64, (i64, String)> {
    let watermark = p.kind.time_text("watermark");
    let sql = format!(
        "SELECT CAST(shard AS {int}), CAST(shards AS {int}), {watermark} FROM batchscore_watermarks WHERE job = '{name}'",
        int = p.kind.bigint()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

async fn four_shards_at_once_write_what_one_run_writes(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(12_000).await;
    p.write_job("whole", &sharded(1, "whole_results"));
    p.write_job("sharded", &sharded(4, "sharded_results"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    for name in ["whole", "sharded"] {
        assert_exit(&p.batchscore(&["watermark", "set", name, &at(0)]), 0);
    }
    // Six ten-minute windows from t0.
    assert_exit(&p.batchscore(&["run-job", "whole", "--at", &at(61)]), 0);
    wait_all(spawn_shards(&p, "sharded", 4, &["--at", &at(61)]));

    let whole = results(&p, "whole_results").await;
    let sharded = results(&p, "sharded_results").await;
    assert_eq!(whole.len(), 6000);
    assert_eq!(predictions(&sharded), predictions(&whole));
    assert_owned_by_formula(&sharded, false, 4);
    let watermarks = shard_watermarks(&p, "sharded").await;
    let expected: BTreeMap<i64, (i64, String)> = (0..4).map(|i| (i, (4, ts(60)))).collect();
    assert_eq!(watermarks, expected, "every shard advanced to the end");
    // Six windows per shard, each holding that shard's rows of the window.
    let windows = p
        .count(
            "SELECT count(*) FROM batchscore_runs WHERE job = 'sharded' AND status = 'succeeded'",
        )
        .await;
    assert_eq!(windows, 24);

    // Status and watermarks, per shard.
    let out = p.batchscore(&["watermark", "show", "sharded"]);
    assert_exit(&out, 0);
    for i in 0..4 {
        assert!(stdout(&out).contains(&format!("{i}/4")), "{}", stdout(&out));
    }
    // January's windows are long behind now: `status` calls the job late (exit 1).
    let out = p.batchscore(&["status", "sharded"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("SHARD"), "{}", stdout(&out));
    // Without --shard, one process takes every shard: nothing is due any more.
    let out = p.batchscore(&["run-job", "sharded", "--at", &at(61)]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out).matches("up to date").count(),
        4,
        "{}",
        stdout(&out)
    );
    // A shard that does not exist is a usage error naming the count.
    let out = p.batchscore(&["run-job", "sharded", "--shard", "4"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("shards = 4"), "{}", stderr(&out));
}

on_all_databases!(four_shards_at_once_write_what_one_run_writes);

async fn three_shards_on_text_keys_write_what_one_run_writes(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // The synthetic rows, keyed by text ("machine-…"), in a table of their own.
    p.seed_synthetic(6_000).await;
    let (text_key, create) = match kind {
        Kind::Sqlite => (
            "'machine-' || printf('%05d', reading_id)",
            "CREATE TABLE text_readings (reading_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL, \
             temperature REAL, vibration REAL, pressure REAL, rpm INTEGER)",
        ),
        Kind::Postgres => (
            "'machine-' || lpad(reading_id::text, 5, '0')",
            "CREATE TABLE text_readings (reading_id text PRIMARY KEY, recorded_at timestamptz NOT NULL, \
             temperature double precision, vibration double precision, pressure double precision, rpm integer)",
        ),
        Kind::Mysql => (
            "CONCAT('machine-', LPAD(reading_id, 5, '0'))",
            "CREATE TABLE text_readings (reading_id VARCHAR(32) PRIMARY KEY, recorded_at DATETIME(6) NOT NULL, \
             temperature DOUBLE, vibration DOUBLE, pressure DOUBLE, rpm INT)",
        ),
    };
    p.execute(create).await;
    p.execute(&format!(
        "INSERT INTO text_readings SELECT {text_key}, recorded_at, temperature, vibration, pressure, rpm \
         FROM sensor_readings"
    ))
    .await;
    let text_job = |shards| {
        sharded(
            shards,
            if shards == 1 {
                "whole_results"
            } else {
                "sharded_results"
            },
        )
        .replace("table = \"sensor_readings\"", "table = \"text_readings\"")
    };
    p.write_job("whole", &text_job(1));
    p.write_job("sharded", &text_job(3));
    // A backfill of the hour: shards split backfills the same way.
    let range = ["--from", &at(0), "--to", &at(60)];
    assert_exit(
        &p.batchscore(&[&["run-job", "whole"][..], &range].concat()),
        0,
    );
    wait_all(spawn_shards(&p, "sharded", 3, &range));

    let whole = results(&p, "whole_results").await;
    let sharded = results(&p, "sharded_results").await;
    assert_eq!(whole.len(), 6000);
    assert!(whole.keys().all(|k| k.starts_with("machine-")));
    assert_eq!(predictions(&sharded), predictions(&whole));
    assert_owned_by_formula(&sharded, true, 3);
    // A backfill leaves the watermarks alone.
    assert!(shard_watermarks(&p, "sharded").await.is_empty());
}

on_all_databases!(three_shards_on_text_keys_write_what_one_run_writes);

async fn a_killed_shard_loses_only_its_own_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // One window of 40,000 rows in chunks of 50: each shard scores for seconds.
    p.seed_synthetic(40_000).await;
    let slow = |shards: u32, sink: &str| {
        sharded(shards, sink)
            .replace("size = \"10m\"", "size = \"400m\"")
            .replace("chunk_rows = 400", "chunk_rows = 50")
    };
    p.write_job("whole", &slow(1, "whole_results"));
    p.write_job("sharded", &slow(4, "sharded_results"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    for name in ["whole", "sharded"] {
        assert_exit(&p.batchscore(&["watermark", "set", name, &at(0)]), 0);
    }
    let mut shards = spawn_shards(&p, "sharded", 4, &["--at", &at(401)]);
    eventually(30, "shard 2's window to start", || async {
        p.count("SELECT count(*) FROM batchscore_runs WHERE job = 'sharded' AND shard = 2 AND status = 'running'")
            .await
            > 0
    })
    .await;
    let mut killed = shards.remove(2);
    killed.kill().unwrap(); // SIGKILL, mid-window
    killed.wait().unwrap();
    wait_all(shards);

    let watermarks = shard_watermarks(&p, "sharded").await;
    for i in [0, 1, 3] {
        assert_eq!(watermarks[&i].1, ts(400), "shard {i} committed its window");
    }
    assert_eq!(watermarks[&2].1, ts(0), "shard 2's window is absent");
    let written = results(&p, "sharded_results").await;
    assert!(
        written.values().all(|(_, _, shard)| *shard != 2),
        "nothing of the killed shard's window was written"
    );
    let keys: Vec<String> = (0..40_000).map(|k: i64| k.to_string()).collect();
    let of_shard_2 = python_shards(&keys, false, 4)
        .iter()
        .filter(|s| **s == 2)
        .count();
    assert_eq!(
        written.len(),
        40_000 - of_shard_2,
        "the other shards' rows are all there"
    );

    // The next run of shard 2 takes over its claim and completes the window.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = p.batchscore(&["run-job", "sharded", "--shard", "2", "--at", &at(401)]);
        match out.status.code() {
            Some(75) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                assert_exit(&out, 0);
                break;
            }
        }
    }
    assert_exit(&p.batchscore(&["run-job", "whole", "--at", &at(401)]), 0);
    let whole = results(&p, "whole_results").await;
    let sharded = results(&p, "sharded_results").await;
    assert_eq!(whole.len(), 40_000);
    assert_eq!(predictions(&sharded), predictions(&whole));
    let abandoned = p
        .count("SELECT count(*) FROM batchscore_runs WHERE job = 'sharded' AND shard = 2 AND status = 'abandoned'")
        .await;
    assert_eq!(
        abandoned, 1,
        "the killed run's ledger row is marked abandoned"
    );
}

on_all_databases!(a_killed_shard_loses_only_its_own_window);

/// (shard, start, end, pid) in unix seconds of the job's committed windows, by shard and start.
async fn shard_windows(p: &Project, name: &str) -> Vec<(i64, f64, f64, i64)> {
    let sql = format!(
        "SELECT CAST(shard AS {int}), {}, {}, CAST(pid AS {int}) FROM batchscore_runs \
         WHERE job = '{name}' AND status = 'succeeded' ORDER BY shard, window_start",
        p.kind.epoch("window_start"),
        p.kind.epoch("window_end"),
        int = p.kind.bigint()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn two_daemons_spread_four_shards_and_commit_each_window_once(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    let job = crate::daemon::job("scores", "1s", 1000)
        .replace("chunk_rows = 1000", "chunk_rows = 1000\nshards = 4");
    p.write_job("a", &job);
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let feeding = feed(&p);
    let first = start_daemon(&p, &[]);
    let second = start_daemon(&p, &[]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(feeding);
    let (code, err) = stop_daemon(first, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    let (code, err) = stop_daemon(second, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");

    let windows = shard_windows(&p, "a").await;
    let mut pids = BTreeSet::new();
    for shard in 0..4 {
        let mine: Vec<_> = windows.iter().filter(|w| w.0 == shard).collect();
        assert!(
            mine.len() >= 4,
            "shard {shard}: only {} windows",
            mine.len()
        );
        for pair in mine.windows(2) {
            assert_eq!(
                pair[0].2, pair[1].1,
                "shard {shard}: windows {pair:?} are not contiguous (or one is there twice)"
            );
        }
        pids.extend(mine.iter().map(|w| w.3));
    }
    assert_eq!(pids.len(), 2, "both daemons ran shards: {pids:?}");

    // Each shard's results are exactly its rows inside its windows, once.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, {} FROM readings",
        p.kind.epoch("ts")
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap();
    let readings: Vec<(i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let keys: Vec<String> = readings.iter().map(|r| r.0.to_string()).collect();
    let owners = python_shards(&keys, false, 4);
    let mut expected = BTreeSet::new();
    for ((id, t), owner) in readings.iter().zip(owners) {
        let mine: Vec<_> = windows.iter().filter(|w| w.0 == i64::from(owner)).collect();
        let (start, end) = (mine[0].1, mine.last().unwrap().2);
        if *t >= start && *t < end {
            expected.insert(*id);
        }
    }
    let scored: BTreeSet<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM scores",
        p.kind.int("id")
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(scored, expected);
}

on_all_databases!(two_daemons_spread_four_shards_and_commit_each_window_once);

async fn resharding_is_refused_until_level_then_leaves_no_gap_or_overlap(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(12_000).await;
    p.write_job("whole", &sharded(1, "whole_results"));
    p.write_job("job", &sharded(2, "sharded_results"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    for name in ["whole", "job"] {
        assert_exit(&p.batchscore(&["watermark", "set", name, &at(0)]), 0);
    }
    // Shard 0 runs ahead: the shards are not level.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_exit(
        &p.batchscore(&["run-job", "job", "--shard", "0", "--at", &at(41)]),
        0,
    );

    // The file now says 3 shards: runs are refused, and so is resharding while not level.
    p.write_job("job", &sharded(3, "sharded_results"));
    let out = p.batchscore(&["run-job", "job", "--at", &at(61)]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("batchscore reshard job"),
        "{}",
        stderr(&out)
    );
    let out = p.batchscore(&["reshard", "job"]);
    assert_exit(&out, 2);
    let refusal = stderr(&out);
    assert!(refusal.contains("not level"), "{refusal}");
    // It says how to level them: the old count, one run at a time that ends at shard 0's mark.
    let level_at = rfc3339(t0() + chrono::TimeDelta::minutes(41));
    assert!(
        refusal.contains(&format!("batchscore run-job job --at {level_at}")),
        "{refusal}"
    );
    assert!(refusal.contains("shards = 2"), "{refusal}");

    // The documented path: level with the old count, then reshard.
    p.write_job("job", &sharded(2, "sharded_results"));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &level_at]), 0);
    p.write_job("job", &sharded(3, "sharded_results"));
    let out = p.batchscore(&["reshard", "job"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("from 2 to 3 shard(s)"),
        "{}",
        stdout(&out)
    );
    let expected: BTreeMap<i64, (i64, String)> = (0..3).map(|i| (i, (3, ts(40)))).collect();
    assert_eq!(shard_watermarks(&p, "job").await, expected);
    // A second reshard has nothing to do.
    let out = p.batchscore(&["reshard", "job"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("already has 3"), "{}", stdout(&out));

    // The three new shards continue; together with the old two they scored every row once.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(61)]), 0);
    assert_exit(&p.batchscore(&["run-job", "whole", "--at", &at(61)]), 0);
    let whole = results(&p, "whole_results").await;
    let sharded = results(&p, "sharded_results").await;
    assert_eq!(whole.len(), 6000);
    assert_eq!(predictions(&sharded), predictions(&whole));
    let windows: Vec<(i64, f64, f64, i64)> = shard_windows(&p, "job").await;
    let after: BTreeSet<i64> = windows
        .iter()
        .filter(|w| w.1 >= (t0() + chrono::TimeDelta::minutes(40)).timestamp() as f64)
        .map(|w| w.0)
        .collect();
    assert_eq!(
        after,
        BTreeSet::from([0, 1, 2]),
        "three shards after the move"
    );
}

on_all_databases!(resharding_is_refused_until_level_then_leaves_no_gap_or_overlap);

/// A claim row held by this (live) test process, as another run on this host would hold it.
async fn hold_shard(p: &Project, job: &str, shard: u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    p.execute(&format!(
        "INSERT INTO batchscore_claims (job, shard, claim_id, host, pid, claimed_at, expires_at) \
         VALUES ('{job}', {shard}, 'held-{shard}', '{}', {}, '2026-01-01T00:00:00.000000Z', \
         '2999-01-01T00:00:00.000000Z')",
        host.trim(),
        std::process::id()
    ))
    .await;
}

#[tokio::test]
async fn a_run_of_every_shard_leaves_held_shards_to_their_holders() {
    let p = Project::sqlite().await;
    p.seed_synthetic(6_000).await;
    p.write_job("job", &sharded(3, "sharded_results"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    hold_shard(&p, "job", 1).await;

    let out = p.batchscore(&["run-job", "job", "--at", &at(31)]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("job (shard 1/3): left to the run that holds it"),
        "{}",
        stdout(&out)
    );
    let watermarks = shard_watermarks(&p, "job").await;
    assert_eq!(watermarks[&0].1, ts(30));
    assert_eq!(watermarks[&1].1, ts(0), "the held shard was not run");
    assert_eq!(watermarks[&2].1, ts(30));
    // Passed over, not skipped: its holder is running it.
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'skipped'")
            .await,
        0
    );

    // Asked for by name, a held shard is busy (75) and recorded as skipped, as a job is.
    let out = p.batchscore(&["run-job", "job", "--shard", "1", "--at", &at(31)]);
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("job `job (shard 1/3)` is busy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'skipped' AND shard = 1")
            .await,
        1
    );
    // Every shard held: the run is busy.
    hold_shard(&p, "job", 0).await;
    hold_shard(&p, "job", 2).await;
    let out = p.batchscore(&["run-job", "job", "--at", &at(41)]);
    assert_exit(&out, 75);
}

/// A backfill is asked for a range, so for every shard: one it finds held by a scheduled run is
/// not silently passed over (its part of the range would never be re-scored), but named, with
/// exit 75; run again once the holder is done, it covers that shard.
#[tokio::test]
async fn a_backfill_of_every_shard_names_the_shards_it_left() {
    let p = Project::sqlite().await;
    p.seed_synthetic(6_000).await;
    p.write_job("job", &sharded(3, "sharded_results"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    hold_shard(&p, "job", 1).await;

    let out = p.batchscore(&["run-job", "job", "--from", &at(0), "--to", &at(30)]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(
        err.contains("left shard(s) 1/3 to the runs that hold them"),
        "{err}"
    );
    assert!(stdout(&out).contains("job (shard 1/3): left to the run that holds it"));
    let scored = |rows: BTreeMap<String, (i64, f64, i64)>| -> BTreeSet<i64> {
        rows.keys().map(|k| k.parse().unwrap()).collect()
    };
    let first = scored(results(&p, "sharded_results").await);
    let all: BTreeSet<i64> = (0..3000).collect();
    assert!(
        first.len() < all.len() && !first.is_empty(),
        "{}",
        first.len()
    );

    // Every shard held: still named, still 75.
    hold_shard(&p, "job", 0).await;
    hold_shard(&p, "job", 2).await;
    let out = p.batchscore(&["run-job", "job", "--from", &at(0), "--to", &at(30)]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("left shard(s)"), "{}", stderr(&out));

    // The holders are done: the backfill covers the range.
    p.execute("DELETE FROM batchscore_claims").await;
    let out = p.batchscore(&["run-job", "job", "--from", &at(0), "--to", &at(30)]);
    assert_exit(&out, 0);
    assert_eq!(scored(results(&p, "sharded_results").await), all);
}
