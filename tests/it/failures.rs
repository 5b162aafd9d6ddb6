//! The failure model: connection resets, a silent network, a frozen holder superseded after its
//! lease (scheduled windows and backfills), a daemon riding out an outage, and SQLite's write
//! lock held by another writer; on PostgreSQL and MySQL. Network failures go through the TCP
//! proxy in `support/proxy.rs`; every wait is bounded.

use std::collections::BTreeMap;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{
    Daemon, assert_every_eligible_row_scored_once, create_readings, feed, insert_now, stop_daemon,
    wait_for_windows,
};
use crate::support::proxy::Proxy;
use crate::support::*;
use crate::windows::{assert_same_predictions, at, job, ledger, predictions, ts};

/// Four thirty-minute windows of 3,000 rows, in chunks of 100: long enough to be caught
/// mid-window.
fn catch_up_job() -> String {
    job("all")
        .replace("size = \"10m\"", "size = \"30m\"")
        .replace("chunk_rows = 400", "chunk_rows = 100")
}

const ROWS: usize = 12_000;
const ROWS_PER_WINDOW: i64 = 3_000;

/// A project with the catch-up job, its rows and its watermark at t0. On MySQL, in chunks of
/// 10: its windows write faster, and the tests must catch one with writes uncommitted.
async fn catch_up_project_on(kind: Kind) -> Option<Project> {
    let p = Project::new(kind).await?;
    p.seed_synthetic(ROWS).await;
    let job = match kind {
        Kind::Mysql => catch_up_job().replace("chunk_rows = 100", "chunk_rows = 10"),
        _ => catch_up_job(),
    };
    p.write_job("job", &job);
    assert_exit(&p.batchscore(&["migrate"]), 0);
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    Some(p)
}

/// The predictions of the same job over the same rows, run once without trouble.
async fn reference_on(kind: Kind, args: &[&str]) -> BTreeMap<i64, (i64, f64)> {
    let p = catch_up_project_on(kind).await.expect("the database is up");
    assert_exit(&p.batchscore(args), 0);
    predictions(&p).await
}

fn spawn_through(p: &Project, url: &str, args: &[&str]) -> Child {
    p.command(args)
        .env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_through(p: &Project, url: &str, args: &[&str]) -> Output {
    p.command(args).env("DATABASE_URL", url).output().unwrap()
}

/// Run `args` until it exits 0, retrying while the job is busy (75), for at most `seconds`.
/// Returns how long it took.
fn run_until_done(p: &Project, url: &str, args: &[&str], seconds: u64) -> Duration {
    let started = Instant::now();
    loop {
        let out = run_through(p, url, args);
        match out.status.code() {
            Some(0) => return started.elapsed(),
            Some(75) | Some(1) if started.elapsed() < Duration::from_secs(seconds) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => assert_exit(&out, 0),
        }
    }
}

/// Wait until one of the proxy's connections holds a window's transaction that has written
/// something to the results table, for at most 20 s.
async fn wait_for_open_writes(p: &Project, proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ports: Vec<String> = proxy
            .upstream_ports()
            .iter()
            .map(|port| port.to_string())
            .collect();
        let writing = p
            .count(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(ARRAY[{}]::int[]) \
                 AND backend_xid IS NOT NULL AND query LIKE '%\"predictions\"%'",
                ports.join(", ")
            ))
            .await;
        if writing > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a window with uncommitted writes"
        );
        // Often: a window's transaction lasts a fraction of a second.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Wait until a window's transaction on MySQL has written results it has not committed, for
/// at most 20 s: a READ UNCOMMITTED session sees more rows than the committed windows wrote.
async fn wait_for_open_writes_mysql(p: &Project) {
    use sqlx::Row;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = p.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .execute(&mut *conn)
        .await
        .unwrap();
    let sql = "SELECT (SELECT count(*) FROM predictions) - (SELECT CAST(COALESCE(SUM(rows_written), 0) AS SIGNED) \
               FROM batchscore_runs WHERE status = 'succeeded')";
    loop {
        let uncommitted = match sqlx::raw_sql(sql).fetch_one(&mut *conn).await {
            Ok(row) => row.get::<i64, _>(0),
            Err(_) => 0, // no results table yet
        };
        if uncommitted > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a window with uncommitted writes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Not back to the pool in READ UNCOMMITTED.
    conn.close_on_drop();
}

/// Spawn `args` so that its open writes can be waited for (`wait_for_writes`): on PostgreSQL
/// through a proxy (returned, to keep it running), whose ports find the run's sessions; on MySQL
/// the database shows them.
fn spawn_watched(p: &Project, args: &[&str]) -> (Child, Option<Proxy>) {
    match p.kind {
        Kind::Postgres => {
            let (proxy, url) = Proxy::in_front_of(&p.url);
            (spawn_through(p, &url, args), Some(proxy))
        }
        _ => (spawn_through(p, &p.url, args), None),
    }
}

/// Wait until a run spawned by `spawn_watched` holds a window with uncommitted writes.
async fn wait_for_writes(p: &Project, proxy: Option<&Proxy>) {
    match proxy {
        Some(proxy) => wait_for_open_writes(p, proxy).await,
        None => wait_for_open_writes_mysql(p).await,
    }
}

/// Every committed window of the ledger is whole, and none is left `running`.
fn assert_whole_and_finished(rows: &[(String, String, String, i64)]) {
    for (start, end, status, written) in rows {
        assert!(
            status != "succeeded" || *written == ROWS_PER_WINDOW,
            "window [{start}, {end}) {status} with {written} rows"
        );
        assert_ne!(status, "running", "window [{start}, {end}) left running");
    }
}

/// Every committed window is whole, each window of the catch-up was committed exactly once,
/// none is left `running`, and the results equal an uninterrupted run's.
async fn assert_exactly_once(p: &Project, reference: &BTreeMap<i64, (i64, f64)>) {
    let rows = ledger(p).await;
    assert_whole_and_finished(&rows);
    for minutes in [0, 30, 60, 90] {
        let succeeded = rows
            .iter()
            .filter(|r| r.0 == ts(minutes) && r.2 == "succeeded")
            .count();
        assert!(
            succeeded >= 1,
            "window at {minutes} min was never committed"
        );
    }
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(120).as_str()));
    assert_same_predictions(&predictions(p).await, reference);
}

async fn connection_resets_anywhere_in_a_catch_up_lose_and_double_nothing(kind: Kind) {
    let Some(p) = catch_up_project_on(kind).await else {
        return;
    };
    let (proxy, url) = Proxy::in_front_of(&p.url);
    let run = ["run-job", "job", "--at", &at(121), "--lease", "5s"];
    let succeeded = "SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'";
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut reset_mid_run = 0;
    for round in 0..10 {
        assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
        let before = p.count(succeeded).await;
        let mut child = spawn_through(&p, &url, &run);
        // Reset after 0 to 3 windows of this run have committed, plus 0 to 60 ms: in the claim,
        // a read, a write or a commit, in any window.
        let milestone = (round % 4) as i64;
        while child.try_wait().unwrap().is_none() && p.count(succeeded).await < before + milestone {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 60));
        if child.try_wait().unwrap().is_none() {
            reset_mid_run += 1;
        }
        proxy.reset_all();
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "round {round}: exit {:?}: {}",
            out.status.code(),
            stderr(&out)
        );
        for (start, end, status, written) in ledger(&p).await {
            assert!(
                status != "succeeded" || written == ROWS_PER_WINDOW,
                "round {round}: window [{start}, {end}) {status} with {written} rows"
            );
        }
        run_until_done(&p, &url, &run, 30);
        assert_eq!(
            p.watermark("job").await.as_deref(),
            Some(ts(120).as_str()),
            "round {round}"
        );
    }
    assert!(
        reset_mid_run >= 7,
        "only {reset_mid_run} of 10 resets hit a running process"
    );
    let reference = reference_on(kind, &["run-job", "job", "--at", &at(121)]).await;
    assert_exactly_once(&p, &reference).await;
}

on_all_databases!(connection_resets_anywhere_in_a_catch_up_lose_and_double_nothing: postgres, mysql);

async fn a_silent_network_mid_window_gives_up_within_the_lease_and_writes_nothing(kind: Kind) {
    let Some(p) = catch_up_project_on(kind).await else {
        return;
    };
    let (proxy, url) = Proxy::in_front_of(&p.url);
    let run = ["run-job", "job", "--at", &at(121), "--lease", "4s"];
    let child = spawn_through(&p, &url, &run);
    match kind {
        Kind::Mysql => wait_for_open_writes_mysql(&p).await,
        _ => wait_for_open_writes(&p, &proxy).await,
    }
    proxy.go_silent();
    let silent = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = silent.elapsed();
    eprintln!("figure: a silent network, lease 4 s: the run gave up after {took:.1?}");
    assert!(
        took < Duration::from_secs(4 + 30),
        "gave up after {took:?}, more than lease + 30 s"
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("did not answer"), "{err}");
    // Committed windows are whole; the open one is not in the results, now or once the server
    // has ended the silent sessions (their transaction idled past the lease).
    let committed: i64 = ledger(&p)
        .await
        .iter()
        .filter(|r| r.2 == "succeeded")
        .map(|r| r.3)
        .sum();
    drop(proxy);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(predictions(&p).await.len() as i64, committed);
    // The next run finishes the job, exactly.
    run_until_done(&p, &p.url, &run, 30);
    let reference = reference_on(kind, &["run-job", "job", "--at", &at(121)]).await;
    assert_exactly_once(&p, &reference).await;
}

on_all_databases!(a_silent_network_mid_window_gives_up_within_the_lease_and_writes_nothing: postgres, mysql);

/// Freeze a holder mid-window (SIGSTOP), let a successor take the job over after the lease,
/// then wake the holder: it must exit 75 and write nothing, and the results must equal an
/// uninterrupted run's.
async fn frozen_holder_is_superseded(kind: Kind, args: &[&str]) {
    let Some(p) = catch_up_project_on(kind).await else {
        return;
    };
    let mut run = args.to_vec();
    run.extend(["--lease", "3s"]);
    let (holder, proxy) = spawn_watched(&p, &run);
    wait_for_writes(&p, proxy.as_ref()).await;
    signal(&holder, "STOP");
    let frozen = Instant::now();
    // The successor writes the keys the frozen holder wrote but did not commit: the server ends
    // the holder's transaction within the lease, so it does not wait on them for long.
    let took = run_until_done(&p, &p.url, &run, 30);
    eprintln!(
        "figure: frozen holder, lease 3 s: the successor finished {:.1?} after the freeze",
        frozen.elapsed()
    );
    assert!(
        frozen.elapsed() < Duration::from_secs(3 + 12),
        "the successor took over {:?} after the freeze (lease 3 s), its own run taking {took:?}",
        frozen.elapsed()
    );
    signal(&holder, "CONT");
    let out = holder.wait_with_output().unwrap();
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.contains("took the job over"), "{err}");
    let reference = reference_on(kind, args).await;
    let rows = ledger(&p).await;
    assert_whole_and_finished(&rows);
    // Each window was committed once, by the successor; the frozen holder's window is marked
    // abandoned (or failed, if it woke before its successor marked it).
    for minutes in [0, 30, 60, 90] {
        let of_window: Vec<&str> = rows
            .iter()
            .filter(|r| r.0 == ts(minutes) && r.2 != "skipped")
            .map(|r| r.2.as_str())
            .collect();
        assert_eq!(
            of_window.iter().filter(|s| **s == "succeeded").count(),
            1,
            "window at {minutes} min: {of_window:?}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.2 == "abandoned" || (r.2 == "failed" && r.0 == ts(0))),
        "the frozen holder's window is marked abandoned: {rows:?}"
    );
    assert_same_predictions(&predictions(&p).await, &reference);
}

async fn a_frozen_holder_is_superseded_after_its_lease_and_writes_nothing(kind: Kind) {
    frozen_holder_is_superseded(kind, &["run-job", "job", "--at", &at(121)]).await;
}

on_all_databases!(a_frozen_holder_is_superseded_after_its_lease_and_writes_nothing: postgres, mysql);

async fn a_frozen_backfill_is_superseded_after_its_lease_and_writes_nothing(kind: Kind) {
    frozen_holder_is_superseded(
        kind,
        &["run-job", "job", "--from", &at(0), "--to", &at(120)],
    )
    .await;
}

on_all_databases!(a_frozen_backfill_is_superseded_after_its_lease_and_writes_nothing: postgres, mysql);

/// The server sessions of a run's window (its reader and its transaction), by the tag each
/// carries: PostgreSQL's `application_name`, MySQL's named locks.
async fn window_sessions(p: &Project, claim_id: &str) -> i64 {
    match p.kind {
        Kind::Postgres => {
            p.count(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchscore {claim_id}'"
            ))
            .await
        }
        _ => {
            p.count(&format!(
                "SELECT (IS_USED_LOCK('batchscore read {claim_id}') IS NOT NULL) \
                 + (IS_USED_LOCK('batchscore write {claim_id}') IS NOT NULL)"
            ))
            .await
        }
    }
}

/// A child that is killed (SIGKILL, which ends a stopped process too) if the test fails before
/// waiting for it.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&self) -> &Child {
        self.0.as_ref().unwrap()
    }

    fn wait_with_output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether no transaction holds the claim row's lock: a holder inside its window's fencing
/// check holds it until its commit.
async fn claim_row_unlocked(p: &Project) -> bool {
    let mut tx = p.pool.begin().await.unwrap();
    let locked = sqlx::query("SELECT claim_id FROM batchscore_claims FOR UPDATE NOWAIT")
        .fetch_all(&mut *tx)
        .await
        .is_err();
    tx.rollback().await.unwrap();
    !locked
}

/// A run that takes the job over ends the superseded holder's window sessions, whose open
/// transaction holds the rows it must write. The lease is long, so the server's own timeouts
/// would keep them for a minute: only the successor can have ended them, and it says so.
async fn the_successor_ends_the_superseded_holders_sessions(kind: Kind) {
    use sqlx::Row;
    let Some(p) = catch_up_project_on(kind).await else {
        return;
    };
    let run = [
        "run-job",
        "job",
        "--from",
        &at(0),
        "--to",
        &at(120),
        "--lease",
        "60s",
    ];
    let (holder, proxy) = spawn_watched(&p, &run);
    let holder = KillOnDrop(Some(holder));
    // Stopped with writes open, but not inside its fencing check: a successor would wait on
    // the claim row's lock, not on the sessions this test is about.
    for attempt in 1.. {
        wait_for_writes(&p, proxy.as_ref()).await;
        signal(holder.child(), "STOP");
        if claim_row_unlocked(&p).await {
            break;
        }
        assert!(
            attempt < 20,
            "the holder was always stopped in its fencing check"
        );
        signal(holder.child(), "CONT");
    }
    let claim_id: String = sqlx::query("SELECT claim_id FROM batchscore_claims")
        .fetch_one(&p.pool)
        .await
        .unwrap()
        .get(0);
    assert!(
        window_sessions(&p, &claim_id).await >= 1,
        "the frozen holder's window sessions are there"
    );
    // Its lease lapses (by the database's clock, as if a minute had passed).
    let lapsed = match kind {
        Kind::Postgres => "now() - interval '1 second'",
        _ => "UTC_TIMESTAMP(6) - INTERVAL 1 SECOND",
    };
    p.execute(&format!(
        "UPDATE batchscore_claims SET expires_at = {lapsed}"
    ))
    .await;
    let successor = p.batchscore(&run);
    assert_exit(&successor, 0);
    assert!(
        stderr(&successor).contains("ended the server sessions of the run whose claim lapsed"),
        "{}",
        stderr(&successor)
    );
    assert_eq!(window_sessions(&p, &claim_id).await, 0);
    signal(holder.child(), "CONT");
    let out = holder.wait_with_output();
    assert_exit(&out, 75);
    let reference = reference_on(kind, &run).await;
    assert_same_predictions(&predictions(&p).await, &reference);
}

on_all_databases!(the_successor_ends_the_superseded_holders_sessions: postgres, mysql);

/// The fencing check alone: a holder whose claim was taken while it was paused, with its
/// transaction still open (the lease is long, so the server has not ended it), commits nothing.
async fn a_superseded_holder_with_its_transaction_open_commits_nothing(kind: Kind) {
    let Some(p) = catch_up_project_on(kind).await else {
        return;
    };
    // Four windows, so the pause lands in one of them; a long lease, so the server keeps the
    // paused transaction open.
    let run = [
        "run-job",
        "job",
        "--from",
        &at(0),
        "--to",
        &at(120),
        "--lease",
        "60s",
    ];
    let (holder, proxy) = spawn_watched(&p, &run);
    wait_for_writes(&p, proxy.as_ref()).await;
    signal(&holder, "STOP");
    let succeeded = "SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'";
    let committed = p.count(succeeded).await;
    // Another run took the job over (as one would after the lease lapsed).
    p.execute("UPDATE batchscore_claims SET claim_id = 'successor', pid = 1")
        .await;
    signal(&holder, "CONT");
    let out = holder.wait_with_output().unwrap();
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("took the job over"),
        "{}",
        stderr(&out)
    );
    // Nothing was committed after the pause: not the open window, not a later one.
    assert_eq!(p.count(succeeded).await, committed);
    assert_eq!(
        predictions(&p).await.len() as i64,
        committed * ROWS_PER_WINDOW
    );
}

on_all_databases!(a_superseded_holder_with_its_transaction_open_commits_nothing: postgres, mysql);

async fn the_daemon_rides_out_a_database_outage(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &crate::daemon::job("scores_a", "1s", 1000));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let (proxy, url) = Proxy::in_front_of(&p.url);
    let feeding = feed(&p);
    let mut command = p.command(&["daemon", "--listen", "127.0.0.1:0", "--lease", "3s"]);
    command.env("DATABASE_URL", &url);
    let daemon = Daemon::spawn(command);
    let port = daemon.port();
    wait_for_windows(&p, "a", 1, 30).await;
    proxy.refuse();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        // Alive and scheduling: a down database is not a reason to restart the daemon.
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.forward();
    let back = chrono::Utc::now();
    let forwarding = Instant::now();
    eventually(30, "windows committed after the outage", || async {
        p.count(&format!(
            "SELECT count(*) FROM batchscore_runs WHERE job = 'a' AND status = 'succeeded' \
             AND window_end > {}",
            p.kind.time_literal(back)
        ))
        .await
            >= 2
    })
    .await;
    eprintln!(
        "figure: daemon after a 10 s outage: two windows committed {:.1?} after the database came back",
        forwarding.elapsed()
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("batchscore_runs_total{job=\"a\",outcome=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failed >= 1.0, "failed runs are counted:\n{metrics}");
    drop(feeding);
    let (code, err) = stop_daemon(daemon, Duration::from_secs(15));
    assert_eq!(code, 0, "{err}");
    // Contiguous windows, every row of them scored once: nothing lost or doubled.
    assert_every_eligible_row_scored_once(&p, "a", "scores_a", 5).await;
}

on_all_databases!(the_daemon_rides_out_a_database_outage: postgres, mysql);

#[tokio::test]
async fn sqlite_write_lock_held_by_another_writer_exits_75_after_the_busy_timeout() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    // An application writing in a long transaction.
    let mut writer = p.pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let started = Instant::now();
    let out = p.batchscore(&["run-job", "job", "--at", &at(21), "--lease", "4s"]);
    eprintln!(
        "figure: SQLite write lock held, lease 4 s: exit after {:.1?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4 + 10),
        "waited {:?}",
        started.elapsed()
    );
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(
        err.contains("locked by another writer") && err.contains("busy timeout"),
        "{err}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *writer)
        .await
        .unwrap();
    drop(writer);
    assert_eq!(predictions(&p).await.len(), 0);
    assert!(p.runs().await.is_empty(), "nothing was written");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &at(21), "--lease", "4s"]),
        0,
    );
}

/// A source read that waits for a lock (here an application's: a PostgreSQL advisory lock the
/// job's query takes, a MySQL table locked with LOCK TABLES) ends within the lease, as every
/// other wait does: the run fails (exit 1) naming the lock wait, writes nothing, and the next
/// run scores the window. Before, the keeper's heartbeat kept the claim alive and the read
/// waited forever.
async fn a_source_read_waiting_on_a_lock_ends_within_the_lease(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    let (job, lock, unlock, message) = match kind {
        Kind::Postgres => (
            job("all").replace(
                "table = \"sensor_readings\"",
                "query = \"SELECT * FROM sensor_readings WHERE pg_advisory_xact_lock_shared(4242)::text = ''\"",
            ),
            "SELECT pg_advisory_lock(4242)",
            "SELECT pg_advisory_unlock(4242)",
            "lock timeout",
        ),
        Kind::Mysql => (
            job("all"),
            "LOCK TABLES sensor_readings WRITE",
            "UNLOCK TABLES",
            "Lock wait timeout",
        ),
        Kind::Sqlite => unreachable!("a SQLite reader never waits on a writer (WAL)"),
    };
    p.write_job("job", &job);
    assert_exit(&p.batchscore(&["migrate"]), 0);
    // The application's session, holding the lock.
    let mut app = p.pool.acquire().await.unwrap();
    sqlx::raw_sql(lock).execute(&mut *app).await.unwrap();
    let started = Instant::now();
    let mut child = p
        .command(&["run-job", "job", "--at", &at(21), "--lease", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited_on = child.try_wait().unwrap().is_none();
    eprintln!(
        "measured: {kind:?}, lease 3 s: the blocked read ended the run after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if waited_on {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    // Unlocked before any assertion, or the project's clean-up would wait on the lock too.
    sqlx::raw_sql(unlock).execute(&mut *app).await.unwrap();
    drop(app);
    assert!(
        !waited_on,
        "the read still waited after 40 s with a 3 s lease"
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(message), "{}", stderr(&out));
    assert!(predictions(&p).await.is_empty(), "nothing written");
    assert_eq!(
        ledger(&p)
            .await
            .iter()
            .map(|r| r.2.as_str())
            .collect::<Vec<_>>(),
        ["failed"]
    );
    // The lock gone, the next run scores the window.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_eq!(predictions(&p).await.len(), 1000);
}

on_all_databases!(a_source_read_waiting_on_a_lock_ends_within_the_lease: postgres, mysql);
