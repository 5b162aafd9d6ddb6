//! `batchscore daemon`: scheduling, no overlap, graceful shutdown, SIGHUP reload, health and
//! metrics, and two daemons on one database; all through the real binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::support::*;

/// Scores `readings` every second into `{sink}`; windows of `{size}`, one second of lateness.
const JOB: &str = r#"
schedule = "{schedule}"
[source]
table = "readings"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = {chunk_rows}
[window]
size = "{size}"
lateness = "1s"
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "{sink}"
"#;

pub(crate) fn job(sink: &str, size: &str, chunk_rows: usize) -> String {
    JOB.replace("{schedule}", "* * * * * *")
        .replace("{sink}", sink)
        .replace("{size}", size)
        .replace("{chunk_rows}", &chunk_rows.to_string())
}

pub(crate) async fn create_readings(p: &Project) {
    p.execute(match p.kind {
        Kind::Sqlite => {
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, temperature REAL, \
             vibration REAL, pressure REAL, rpm INTEGER)"
        }
        Kind::Postgres => {
            "CREATE TABLE readings (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, \
             temperature double precision, vibration double precision, pressure double precision, rpm integer)"
        }
        Kind::Mysql => {
            "CREATE TABLE readings (id BIGINT AUTO_INCREMENT PRIMARY KEY, ts DATETIME(6) NOT NULL, \
             temperature DOUBLE, vibration DOUBLE, pressure DOUBLE, rpm INT, INDEX (ts))"
        }
    })
    .await;
}

/// Insert five rows stamped with the current time, as an application would.
pub(crate) async fn insert_now(pool: &sqlx::AnyPool, kind: Kind) {
    let sql = match kind {
        Kind::Sqlite => {
            "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 60 + v, v / 3.0, 4 + v / 10.0, 900 + 100 * v \
             FROM (SELECT 1 AS v UNION ALL SELECT 5 UNION ALL SELECT 9 UNION ALL SELECT 13 UNION ALL SELECT 17)"
        }
        Kind::Postgres => {
            "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT clock_timestamp(), 60 + v, v / 3.0, 4 + v / 10.0, 900 + 100 * v FROM unnest(ARRAY[1, 5, 9, 13, 17]) AS v"
        }
        Kind::Mysql => {
            "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT UTC_TIMESTAMP(6), 60 + v, v / 3.0, 4 + v / 10.0, 900 + 100 * v \
             FROM (SELECT 1 AS v UNION ALL SELECT 5 UNION ALL SELECT 9 UNION ALL SELECT 13 UNION ALL SELECT 17) AS vs"
        }
    };
    sqlx::raw_sql(sql).execute(pool).await.unwrap();
}

/// Seed `rows` readings spread over the hour before now.
async fn seed_last_hour(p: &Project, rows: usize) {
    let sql = match p.kind {
        Kind::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT strftime('%Y-%m-%dT%H:%M:%fZ', unixepoch('now', 'subsec') - 3600 + i * 3590.0 / {rows}, 'unixepoch'), \
             60 + i % 20, (i % 60) / 10.0, 4 + (i % 20) / 10.0, 900 + i % 2700 FROM n"
        ),
        Kind::Postgres => format!(
            "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT now() - interval '3600 seconds' + i * (interval '3590 seconds' / {rows}), \
             60 + i % 20, (i % 60) / 10.0, 4 + (i % 20) / 10.0, 900 + i % 2700 FROM generate_series(1, {rows}) AS i"
        ),
        Kind::Mysql => format!(
            "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
             SELECT TIMESTAMPADD(MICROSECOND, CAST(i * 3590000000 / {rows} AS SIGNED), UTC_TIMESTAMP(6) - INTERVAL 3600 SECOND), \
             60 + i % 20, (i % 60) / 10.0, 4 + (i % 20) / 10.0, 900 + i % 2700 FROM {}",
            Kind::Mysql.series(1, rows)
        ),
    };
    p.execute(&sql).await;
}

pub(crate) fn start_daemon(p: &Project, extra: &[&str]) -> Daemon {
    let mut args = vec!["daemon"];
    args.extend_from_slice(extra);
    Daemon::spawn(p.command(&args))
}

/// A running daemon process, with its log (stderr) collected as it is written.
pub(crate) struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Daemon {
    pub(crate) fn spawn(mut command: std::process::Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let reader = std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Daemon { child, log, reader }
    }

    /// The port a daemon started with `--listen 127.0.0.1:0` listens on, as it logs it: the
    /// system picks a free one, so no other process can take it between choice and use.
    pub(crate) fn port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log.lock().unwrap().clone();
            let addr = log
                .lines()
                .find(|l| l.contains("/healthz and /metrics") && l.contains("addr="))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
            if let Some(addr) = addr {
                return addr.port();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not listen:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for it to exit: its exit code and its whole log.
    pub(crate) fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let log = self.log.lock().unwrap().clone();
        (status.code(), log)
    }
}

/// SIGTERM, then the exit code and stderr, failing if it takes longer than `within`.
pub(crate) fn stop_daemon(daemon: Daemon, within: Duration) -> (i32, String) {
    daemon.signal("TERM");
    let started = Instant::now();
    let (code, log) = daemon.wait();
    assert!(
        started.elapsed() <= within,
        "took {:?} to stop",
        started.elapsed()
    );
    (code.unwrap_or(-1), log)
}

/// Wait (at most `seconds`) until `job` has committed at least `windows` windows.
pub(crate) async fn wait_for_windows(p: &Project, job: &str, windows: i64, seconds: u64) {
    let sql = format!(
        "SELECT count(*) FROM batchscore_runs WHERE job = '{job}' AND status = 'succeeded'"
    );
    eventually(
        seconds,
        &format!("{windows} committed windows of job {job}"),
        || async { p.table_exists("batchscore_runs").await && p.count(&sql).await >= windows },
    )
    .await;
}

/// (start, end) in unix seconds of the job's committed windows, in order.
pub(crate) async fn committed_windows(p: &Project, job: &str) -> Vec<(f64, f64)> {
    let sql = format!(
        "SELECT {}, {} FROM batchscore_runs WHERE job = '{job}' AND status = 'succeeded' ORDER BY window_start",
        p.kind.epoch("window_start"),
        p.kind.epoch("window_end")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every reading: id → unix seconds.
async fn readings(p: &Project) -> BTreeMap<i64, f64> {
    let sql = format!("SELECT id, {} FROM readings", p.kind.epoch("ts"));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn scored_ids(p: &Project, sink: &str) -> Vec<i64> {
    if !p.table_exists(sink).await {
        return vec![];
    }
    let sql = format!("SELECT {} FROM {sink} ORDER BY id", p.kind.int("id"));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Windows are contiguous, and the results hold exactly the rows inside them, once.
pub(crate) async fn assert_every_eligible_row_scored_once(
    p: &Project,
    job: &str,
    sink: &str,
    min_windows: usize,
) {
    let windows = committed_windows(p, job).await;
    assert!(
        windows.len() >= min_windows,
        "job {job}: only {} windows committed",
        windows.len()
    );
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "job {job}: windows {pair:?} are not contiguous"
        );
    }
    let (start, end) = (windows[0].0, windows.last().unwrap().1);
    let eligible: Vec<i64> = readings(p)
        .await
        .into_iter()
        .filter(|(_, t)| *t >= start && *t < end)
        .map(|(id, _)| id)
        .collect();
    assert!(!eligible.is_empty());
    assert_eq!(
        scored_ids(p, sink).await,
        eligible,
        "job {job}: scored rows differ from the rows of its windows"
    );
}

/// Spawn a task that inserts rows every 100 ms until the returned sender is dropped.
pub(crate) fn feed(p: &Project) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (pool, kind) = (p.pool.clone(), p.kind);
    tokio::spawn(async move {
        loop {
            insert_now(&pool, kind).await;
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    stop
}

#[tokio::test]
async fn two_jobs_every_second_score_every_row_once() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &job("scores_a", "1s", 1000));
    p.write_job("b", &job("scores_b", "1s", 1000));
    let feeding = feed(&p);
    let daemon = start_daemon(&p, &[]);
    wait_for_windows(&p, "a", 4, 30).await;
    wait_for_windows(&p, "b", 4, 30).await;
    drop(feeding);
    let (code, err) = stop_daemon(daemon, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    assert_every_eligible_row_scored_once(&p, "a", "scores_a", 3).await;
    assert_every_eligible_row_scored_once(&p, "b", "scores_b", 3).await;
}

async fn two_daemons_on_one_database_server_commit_each_window_once(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &job("scores_a", "1s", 1000));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let feeding = feed(&p);
    let first = start_daemon(&p, &[]);
    let second = start_daemon(&p, &[]);
    wait_for_windows(&p, "a", 5, 30).await;
    drop(feeding);
    let (code, err) = stop_daemon(first, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    let (code, err) = stop_daemon(second, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    // Contiguous windows with no repeats: no window was committed twice.
    assert_every_eligible_row_scored_once(&p, "a", "scores_a", 3).await;
}

on_all_databases!(two_daemons_on_one_database_server_commit_each_window_once: postgres, mysql);

/// A first window of an hour of dense rows in small chunks: slow enough to outlast ticks.
async fn slow_project() -> Project {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    seed_last_hour(&p, 600_000).await;
    p.write_job("slow", &job("slow_scores", "1h", 50));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    p
}

async fn wait_until_running(p: &Project) {
    eventually(20, "the first window to start", || async {
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'running'")
            .await
            > 0
    })
    .await;
}

#[tokio::test]
async fn a_slow_run_skips_ticks_and_sigterm_rolls_back_within_the_grace() {
    let p = slow_project().await;
    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0", "--shutdown-grace", "1s"]);
    let port = daemon.port();
    wait_until_running(&p).await;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    // Ticks keep coming every second while the first window is being scored.
    eventually(20, "a skipped tick", || async {
        http_get(port, "/metrics").is_some_and(|(_, body)| {
            // The series is there from the start, at zero: wait for a skip.
            body.lines()
                .find_map(|l| l.strip_prefix("batchscore_ticks_skipped_total{job=\"slow\"} "))
                .is_some_and(|n| n.trim() != "0")
        })
    })
    .await;
    daemon.signal("TERM");
    // Not yet exited (the grace runs), but no longer healthy.
    eventually(5, "/healthz to turn 503", || async {
        http_get(port, "/healthz").map(|r| r.0) != Some(200)
    })
    .await;
    let started = Instant::now();
    let (code, err) = daemon.wait();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        code,
        Some(1),
        "a rolled-back window makes the exit code 1:\n{err}"
    );
    assert!(
        err.contains("tick skipped: the previous run is still going"),
        "{err}"
    );
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(
        scored_ids(&p, "slow_scores").await.is_empty(),
        "nothing half-written"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'running'")
            .await,
        0
    );

    // The next start scores the window (no watermark yet: the first window again), and a
    // graceful shutdown lets it finish.
    let daemon = start_daemon(&p, &["--shutdown-grace", "60s"]);
    wait_until_running(&p).await;
    let (code, err) = stop_daemon(daemon, Duration::from_secs(90));
    assert_eq!(code, 0, "{err}");
    let windows = committed_windows(&p, "slow").await;
    assert_eq!(windows.len(), 1, "{err}");
    let (start, end) = windows[0];
    let eligible = readings(&p)
        .await
        .into_values()
        .filter(|t| *t >= start && *t < end)
        .count();
    assert_eq!(scored_ids(&p, "slow_scores").await.len(), eligible);
}

/// Check Prometheus text: every sample line is `name{labels} number`, every family typed.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            if parts.get(1) == Some(&"TYPE") {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "unknown"].contains(&parts[3]),
                    "bad TYPE line {line:?}"
                );
            }
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()),
            "bad name in {line:?}"
        );
        assert_eq!(
            name.matches('{').count(),
            name.matches('}').count(),
            "bad labels in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_owned(), value);
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    samples
}

#[tokio::test]
async fn sighup_reloads_jobs_and_metrics_match_the_ledger() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &job("scores_a", "1s", 1000));
    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0"]);
    let port = daemon.port();
    let metric = |name: &str| {
        let name = name.to_owned();
        async move {
            http_get(port, "/metrics")
                .map(|(_, body)| parse_metrics(&body).get(&name).copied().unwrap_or(0.0))
        }
    };
    eventually(20, "two runs", || async {
        metric("batchscore_runs_total{job=\"a\",outcome=\"ok\"}")
            .await
            .unwrap_or(0.0)
            >= 2.0
    })
    .await;

    // A new schedule: once a year. Ticks stop, and the next run moves to January.
    let yearly = job("scores_a", "1s", 1000).replace("* * * * * *", "0 0 0 1 1 *");
    p.write_job("a", &yearly);
    daemon.signal("HUP");
    eventually(10, "the new schedule", || async {
        metric("batchscore_next_run_timestamp_seconds{job=\"a\"}")
            .await
            .unwrap_or(0.0)
            > (chrono::Utc::now() + chrono::TimeDelta::days(1)).timestamp() as f64
    })
    .await;
    // A run started before the reload finishes.
    eventually(10, "no window of a open", || async {
        p.count("SELECT count(*) FROM batchscore_runs WHERE job = 'a' AND status = 'running'")
            .await
            == 0
    })
    .await;
    let before = metric("batchscore_runs_total{job=\"a\",outcome=\"ok\"}")
        .await
        .unwrap();
    // Nothing to wait for: two seconds (two of the old ticks) must pass without a run.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        metric("batchscore_runs_total{job=\"a\",outcome=\"ok\"}")
            .await
            .unwrap(),
        before,
        "no more runs"
    );

    // Now idle: the counters equal the ledger.
    let committed = p
        .count("SELECT count(*) FROM batchscore_runs WHERE job = 'a' AND status = 'succeeded'")
        .await;
    assert_eq!(
        metric("batchscore_windows_total{job=\"a\",outcome=\"succeeded\"}")
            .await
            .unwrap(),
        committed as f64
    );
    let written = p
        .count("SELECT coalesce(sum(rows_written), 0) FROM batchscore_runs WHERE job = 'a'")
        .await;
    assert_eq!(
        metric("batchscore_rows_written_total{job=\"a\"}")
            .await
            .unwrap(),
        written as f64
    );
    assert!(
        metric("batchscore_watermark_lag_seconds{job=\"a\"}")
            .await
            .unwrap()
            > 0.0
    );

    // An invalid edit keeps the old definition; a new file is picked up.
    p.write_job("a", &yearly.replace("0 0 0 1 1 *", "every full moon"));
    p.write_job("b", &job("scores_b", "1s", 1000));
    daemon.signal("HUP");
    eventually(20, "job b to run", || async {
        metric("batchscore_runs_total{job=\"b\",outcome=\"ok\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert_eq!(
        metric("batchscore_runs_total{job=\"a\",outcome=\"ok\"}")
            .await
            .unwrap(),
        before,
        "a keeps its yearly schedule"
    );
    let (code, err) = stop_daemon(daemon, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("new definition is invalid: keeps running on the old one"),
        "{err}"
    );
    assert!(err.contains("every full moon"), "{err}");
}

#[tokio::test]
async fn invalid_jobs_are_reported_and_strict_refuses_them() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    p.write_job("good", &job("scores", "1s", 1000));
    p.write_job(
        "broken",
        &job("scores", "1s", 1000).replace("\"rpm\"", "\"speed\""),
    );
    let out = p.batchscore(&["daemon", "--strict"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("invalid job(s) broken and --strict is set"),
        "{}",
        stderr(&out)
    );
    // An address this machine does not have (TEST-NET-1) cannot be listened on.
    let out = p.batchscore(&["daemon", "--listen", "192.0.2.1:9464"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("daemon: cannot listen on 192.0.2.1:9464"),
        "{}",
        stderr(&out)
    );

    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0"]);
    let port = daemon.port();
    eventually(20, "the daemon to listen", || async {
        http_get(port, "/healthz").map(|r| r.0) == Some(200)
    })
    .await;
    let (code, err) = stop_daemon(daemon, Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("invalid job: not scheduled") && err.contains("feature column `speed`"),
        "{err}"
    );

    std::fs::remove_file(p.jobs_dir().join("good.toml")).unwrap();
    let out = p.batchscore(&["daemon"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no valid job"), "{}", stderr(&out));
}

/// Six jobs whose first windows run at once, each reading its window in small chunks, under
/// `--max-concurrent 6`: every window holds its reader's connection and its transaction's, so
/// a pool sized for one run starved them (each writer waited for a connection until "pool timed
/// out", and the release that followed left the claim held). The pool is sized from the
/// concurrency: every window commits, none fails.
async fn concurrent_runs_do_not_starve_the_pool(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    seed_last_hour(&p, 6_000).await;
    let jobs: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    for name in &jobs {
        p.write_job(name, &job(&format!("scores_{name}"), "1h", 50));
    }
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let daemon = start_daemon(&p, &["--max-concurrent", "6"]);
    for name in &jobs {
        wait_for_windows(&p, name, 1, 90).await;
    }
    let (code, log) = stop_daemon(daemon, Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("pool timed out"), "{log}");
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'failed'")
            .await,
        0,
        "{log}"
    );
}

on_all_databases!(concurrent_runs_do_not_starve_the_pool);

/// `[sink] retain` in the daemon: after its runs, rows of windows older than the bound are
/// deleted while newer windows keep being scored and kept.
#[tokio::test]
async fn the_daemon_deletes_rows_past_retain_after_its_runs() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &(job("scores_a", "1s", 1000) + "retain = \"3s\"\n"));
    let feeding = feed(&p);
    let daemon = start_daemon(&p, &[]);
    wait_for_windows(&p, "a", 8, 30).await;
    drop(feeding);
    let (code, log) = stop_daemon(daemon, Duration::from_secs(10));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("expired result rows deleted"), "{log}");
    // Every row left is of a window that ended after the latest run's window ended less
    // `retain` (and a second of slack for the window the last deletion did not see yet).
    let latest = p
        .count("SELECT max(CAST(unixepoch(window_end, 'subsec') * 1000 AS INTEGER)) FROM batchscore_runs WHERE status = 'succeeded'")
        .await;
    let stale = p
        .count(&format!(
            "SELECT count(*) FROM scores_a s JOIN batchscore_runs r ON r.id = s.batchscore_run \
             WHERE unixepoch(r.window_end, 'subsec') * 1000 < {latest} - 5000"
        ))
        .await;
    assert_eq!(stale, 0, "no row of a window older than retain is left");
    assert!(
        p.count("SELECT count(*) FROM scores_a").await > 0,
        "newer windows are kept"
    );
}
