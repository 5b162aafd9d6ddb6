//! The conformance suite of the database seam, run against every backend (River's
//! `riverdrivertest`): each case drives the traits ([`SourceReader`](super::SourceReader) aside,
//! which the integration tests read through every kind of source) and the SQL shared by every
//! dialect, on a fresh SQLite file, PostgreSQL schema and MySQL database. A fourth backend is
//! correct, as far as batchscore's own tables go, the day it passes these.
//!
//! The servers are `TEST_DATABASE_URL` and `TEST_MYSQL_URL` (the integration tests' defaults);
//! a case skips a server it cannot reach, except under `CI=true`, where that fails.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use polars::prelude::{Column, DataFrame};

use super::{Backend, Limits, Replace, WindowTx, claim_store, dialect, ledger, profiles};
use crate::bad_row::BadRow;
use crate::claim::{Claim, ClaimOutcome, HeldHere};
use crate::db::dialect::Dialect;
use crate::ident::Ident;
use crate::ledger::{Lineage, RunRecord, RunStatus};
use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::shard::Shard;
use crate::sink::{ResultType, ResultsTable, RunStamp, ScoredChunk};
use crate::source::{KeyKind, SourceChunk};

const JOB: &str = "conformance";
const WHOLE: Shard = Shard { index: 0, count: 1 };

fn t(minutes: i64) -> DateTime<Utc> {
    "2026-01-10T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(minutes)
}

fn window(from: i64, to: i64) -> Window {
    Window {
        start: t(from),
        end: t(to),
    }
}

/// A claim of the job held by this process (so SQLite's judge of this host's holders counts it).
fn claim(lease: TimeDelta) -> (Claim, HeldHere) {
    let claim = Claim::new(JOB, WHOLE, lease);
    let held = HeldHere::register(&claim);
    (claim, held)
}

async fn acquired<B: Backend>(db: &B, claim: &Claim) -> B::Lock {
    match db.claim(claim).await.unwrap() {
        ClaimOutcome::Acquired(lock) => lock,
        ClaimOutcome::Busy(holder) => panic!("busy: {holder:?}"),
    }
}

async fn claims_are_exclusive_renewed_taken_over_and_fenced<B: Backend>(db: B) {
    let (a, _a) = claim(TimeDelta::seconds(1));
    let mut lock_a = acquired(&db, &a).await;
    let (b, _b) = claim(TimeDelta::seconds(60));
    match db.claim(&b).await.unwrap() {
        ClaimOutcome::Busy(Some(holder)) => assert_eq!(holder.claim_id, a.claim_id),
        ClaimOutcome::Busy(None) => panic!("busy, holder unread"),
        ClaimOutcome::Acquired(_) => panic!("two holders of one claim"),
    }
    assert!(db.renew_claim(&mut lock_a, &a).await.unwrap());
    // a's lease (a second) lapses: b takes the job over, and a learns it when it renews.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lock_b = acquired(&db, &b).await;
    assert!(
        !db.renew_claim(&mut lock_a, &a).await.unwrap(),
        "a renewed a claim it lost"
    );
    // The fencing check in a window's transaction: a's fails, b's holds.
    let mut tx = db.begin(&a).await.unwrap();
    assert!(!claim_store::fence::<B::Db>(tx.conn(), &a).await.unwrap());
    drop(tx);
    let mut tx = db.begin(&b).await.unwrap();
    assert!(claim_store::fence::<B::Db>(tx.conn(), &b).await.unwrap());
    tx.commit().await.unwrap();
    // a giving up what it lost leaves b's claim alone.
    db.release_claim(Some(lock_a), &a).await.unwrap();
    let (c, _c) = claim(TimeDelta::seconds(60));
    assert!(matches!(
        db.claim(&c).await.unwrap(),
        ClaimOutcome::Busy(Some(_))
    ));
    db.release_claim(Some(lock_b), &b).await.unwrap();
    let lock_c = acquired(&db, &c).await;
    db.release_claim(Some(lock_c), &c).await.unwrap();
}

async fn watermarks_move_by_compare_and_set<B: Backend>(db: B) {
    let (claim, _held) = claim(TimeDelta::seconds(60));
    let advance = |from: Option<DateTime<Utc>>, to: DateTime<Utc>, shard: Shard| {
        let (db, claim) = (db.clone(), claim.clone());
        async move {
            let mut tx = db.begin(&claim).await.unwrap();
            let moved = ledger::advance_watermark::<B::Db>(tx.conn(), JOB, shard, from, to, "r")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            moved
        }
    };
    assert!(advance(None, t(10), WHOLE).await);
    assert!(
        !advance(None, t(20), WHOLE).await,
        "moved from a stale watermark"
    );
    assert!(
        !advance(Some(t(0)), t(20), WHOLE).await,
        "moved from a wrong watermark"
    );
    let two = Shard { index: 0, count: 2 };
    assert!(
        !advance(Some(t(10)), t(20), two).await,
        "moved under another shard count"
    );
    assert!(advance(Some(t(10)), t(20), WHOLE).await);
    assert_eq!(
        ledger::watermark(db.pool(), JOB, WHOLE).await.unwrap(),
        Some(t(20))
    );
    ledger::set_watermark(db.pool(), JOB, WHOLE, t(5))
        .await
        .unwrap();
    let level = ledger::watermarks(db.pool(), Some(JOB)).await.unwrap();
    assert_eq!(level.len(), 1);
    assert_eq!((level[0].shard, level[0].watermark), (WHOLE, t(5)));
    // Resharding is a compare-and-set of every shard's watermark, too.
    assert!(
        ledger::reshard(db.pool(), JOB, &level, 2, t(30))
            .await
            .unwrap()
    );
    assert!(
        !ledger::reshard(db.pool(), JOB, &level, 3, t(40))
            .await
            .unwrap()
    );
    let shards = ledger::watermarks(db.pool(), Some(JOB)).await.unwrap();
    let at: Vec<(Shard, DateTime<Utc>)> = shards.iter().map(|w| (w.shard, w.watermark)).collect();
    assert_eq!(
        at,
        [
            (Shard { index: 0, count: 2 }, t(30)),
            (Shard { index: 1, count: 2 }, t(30))
        ]
    );
}

/// A results table of `id` (integer) and `score` (float).
fn results_table() -> ResultsTable {
    let text = "schedule = \"0 * * * *\"\n[source]\ntable = \"s\"\nkey = \"id\"\ntimestamp = \"ts\"\n\
                features = [\"x\"]\n[window]\nsize = \"1h\"\n[model]\npath = \"m.onnx\"\n\
                [outputs]\nscore = \"p\"\n[sink]\ntable = \"conformance_results\"\n";
    let spec = crate::spec::parse_job(JOB, text, std::path::Path::new("/")).unwrap();
    let score = Ident::parse("score").unwrap();
    ResultsTable::new(&spec, KeyKind::Integer, vec![(score, ResultType::Float)])
}

fn scored(rows: &[(i64, f64)]) -> ScoredChunk {
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let scores: Vec<f64> = rows.iter().map(|r| r.1).collect();
    ScoredChunk {
        frame: DataFrame::new(
            rows.len(),
            vec![
                Column::new("id".into(), ids),
                Column::new("score".into(), scores),
            ],
        )
        .unwrap(),
    }
}

fn bad(key: &str) -> BadRow {
    BadRow {
        key: key.to_owned(),
        column: "x".to_owned(),
        reason: "is NULL".to_owned(),
        features: "{\"x\": null}".to_owned(),
    }
}

async fn read_results<B: Backend>(db: &B) -> Vec<(i64, f64)> {
    let sql = format!(
        "SELECT CAST(id AS {}) AS id, score FROM conformance_results ORDER BY id",
        B::Db::BIGINT
    );
    dialect::fetch_all(B::Db::on_pool(db.pool()), sql, vec![])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let id = B::Db::int(row, "id").unwrap().unwrap();
            (id, B::Db::float(row, "score").unwrap().unwrap())
        })
        .collect()
}

async fn upserts_replace_by_key_and_the_quarantine_releases_rows<B: Backend>(db: B) {
    let (claim, _held) = claim(TimeDelta::seconds(60));
    let table = results_table();
    let stamp = RunStamp {
        run_id: "run-1".to_owned(),
        window: window(0, 10),
        model_version: "sha".to_owned(),
        run: 1,
        model: 1,
        challenger_model: None,
        scored_at: t(11),
    };
    let mut tx = db.begin(&claim).await.unwrap();
    assert!(tx.pin_results_table(&table.table).await.unwrap().is_none());
    tx.create_results_table(&table).await.unwrap();
    let pinned = tx.pin_results_table(&table.table).await.unwrap().unwrap();
    let table = table.described_as(pinned);
    table.check_columns(<B::Tx as WindowTx>::holds).unwrap();
    tx.upsert_results(
        &table,
        &stamp,
        &scored(&[(1, 0.1), (2, 0.2), (3, 0.3)]),
        WHOLE,
    )
    .await
    .unwrap();
    tx.quarantine(JOB, &stamp, &[bad("4"), bad("5")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(read_results(&db).await, [(1, 0.1), (2, 0.2), (3, 0.3)]);

    // Rows scored again replace theirs; a quarantined row scored now leaves the quarantine.
    let mut tx = db.begin(&claim).await.unwrap();
    assert!(
        ledger::has_quarantined::<B::Db>(tx.conn(), JOB)
            .await
            .unwrap()
    );
    tx.upsert_results(
        &table,
        &stamp,
        &scored(&[(2, 0.22), (3, 0.33), (4, 0.44)]),
        WHOLE,
    )
    .await
    .unwrap();
    tx.release_quarantined(JOB, vec!["4".to_owned(), "5".to_owned()])
        .await
        .unwrap();
    assert!(
        !ledger::has_quarantined::<B::Db>(tx.conn(), JOB)
            .await
            .unwrap()
    );
    // Rolled back: nothing of it stays.
    drop(tx);
    assert_eq!(read_results(&db).await, [(1, 0.1), (2, 0.2), (3, 0.3)]);
    let mut tx = db.begin(&claim).await.unwrap();
    assert!(
        ledger::has_quarantined::<B::Db>(tx.conn(), JOB)
            .await
            .unwrap()
    );
    tx.upsert_results(
        &table,
        &stamp,
        &scored(&[(2, 0.22), (3, 0.33), (4, 0.44)]),
        WHOLE,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        read_results(&db).await,
        [(1, 0.1), (2, 0.22), (3, 0.33), (4, 0.44)]
    );
}

async fn the_ledger_records_statuses_and_abandons_what_was_left_running<B: Backend>(db: B) {
    let (claim, _held) = claim(TimeDelta::seconds(60));
    let pool = db.pool();
    let status_of = |run_id: String| async move {
        ledger::recent_runs(pool, Some(JOB), 100)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.run_id == run_id)
            .map(|r| r.status)
    };
    let run = RunRecord::start(JOB, WHOLE, window(0, 10), &Lineage::model("sha"));
    ledger::record_run(pool, &run, Replace::Always)
        .await
        .unwrap();
    assert_eq!(
        status_of(run.run_id.clone()).await,
        Some(RunStatus::Running)
    );
    let failed = RunRecord {
        status: RunStatus::Failed,
        error: Some("it broke".to_owned()),
        finished_at: Some(t(11)),
        ..run.clone()
    };
    ledger::record_run(pool, &failed, Replace::IfRunning)
        .await
        .unwrap();
    assert_eq!(status_of(run.run_id.clone()).await, Some(RunStatus::Failed));
    // A late record never overwrites a row that is no longer running.
    let late = RunRecord {
        status: RunStatus::Succeeded,
        ..run.clone()
    };
    ledger::record_run(pool, &late, Replace::IfRunning)
        .await
        .unwrap();
    assert_eq!(status_of(run.run_id.clone()).await, Some(RunStatus::Failed));

    let left = RunRecord::start(JOB, WHOLE, window(10, 20), &Lineage::model("sha"));
    ledger::record_run(pool, &left, Replace::Always)
        .await
        .unwrap();
    assert_eq!(ledger::abandon_runs(pool, JOB, WHOLE).await.unwrap(), 1);
    assert_eq!(
        status_of(left.run_id.clone()).await,
        Some(RunStatus::Abandoned)
    );

    // In a window's transaction: there when it commits, gone when it rolls back.
    let skipped = RunRecord::skipped(
        JOB,
        WHOLE,
        window(20, 30),
        &Lineage::model("sha"),
        "missed".to_owned(),
    );
    let mut tx = db.begin(&claim).await.unwrap();
    ledger::record_run_in::<B::Db>(tx.conn(), &skipped)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(status_of(skipped.run_id.clone()).await, None);
    let mut tx = db.begin(&claim).await.unwrap();
    ledger::record_run_in::<B::Db>(tx.conn(), &skipped)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        status_of(skipped.run_id.clone()).await,
        Some(RunStatus::Skipped)
    );
    let health = ledger::health(pool, t(-60)).await.unwrap();
    let ours = health
        .iter()
        .find(|h| h.job == JOB)
        .expect("the job's health");
    assert_eq!(ours.failures, 2, "the failed and the abandoned window");
}

/// A profile of one numeric feature over `values`.
fn profile(values: &[f64]) -> Profile {
    let keys: Vec<i64> = (0..values.len() as i64).collect();
    let frame = DataFrame::new(
        values.len(),
        vec![
            Column::new("id".into(), keys),
            Column::new("x".into(), values.to_vec()),
        ],
    )
    .unwrap();
    let chunk = SourceChunk {
        frame,
        problems: Default::default(),
    };
    let mut profile = Profile::new([("x".to_owned(), true)], []);
    profile.add_features(&chunk).unwrap();
    profile
}

async fn profiles_merge_by_range_and_a_window_replaces_those_inside_it<B: Backend>(db: B) {
    let (claim, _held) = claim(TimeDelta::seconds(60));
    let record = |range: Window, values: Vec<f64>| {
        let (db, claim) = (db.clone(), claim.clone());
        async move {
            let mut tx = db.begin(&claim).await.unwrap();
            let profile = profile(&values);
            let run = uuid::Uuid::now_v7().to_string();
            profiles::record_profile::<B::Db>(tx.conn(), &run, JOB, WHOLE, range, &profile)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    record(window(0, 10), vec![1.0, 2.0, 3.0]).await;
    record(window(10, 20), vec![4.0, 5.0]).await;
    let rows = |profile: &Profile| profile.columns.iter().map(|c| c.rows).sum::<u64>();
    let (merged, windows) = profiles::merged_profiles(db.pool(), JOB, t(0), t(20))
        .await
        .unwrap();
    assert_eq!((rows(&merged), windows), (5, 2));
    assert_eq!(
        profiles::latest_window(db.pool(), JOB).await.unwrap(),
        Some(window(10, 20))
    );
    // Scored again as one window: the two inside it are replaced.
    record(window(0, 20), vec![9.0]).await;
    let (merged, windows) = profiles::merged_profiles(db.pool(), JOB, t(0), t(20))
        .await
        .unwrap();
    assert_eq!((rows(&merged), windows), (1, 1));

    let stored = profile(&[1.0, 2.0]);
    profiles::store_reference(db.pool(), JOB, Some((window(0, 20), 2, &stored)))
        .await
        .unwrap();
    let read = profiles::stored_reference(db.pool(), JOB)
        .await
        .unwrap()
        .expect("the stored reference");
    assert_eq!(
        (read.window, read.windows, rows(&read.profile)),
        (window(0, 20), 2, 2)
    );
    profiles::store_reference(db.pool(), JOB, None)
        .await
        .unwrap();
    assert!(
        profiles::stored_reference(db.pool(), JOB)
            .await
            .unwrap()
            .is_none()
    );
}

// ---- the backends ---------------------------------------------------------------------------

/// Whether a server the suite cannot reach skips the case (`false` under CI).
fn skip_unreachable(server: &str, err: impl std::fmt::Display) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{server} unreachable under CI: {err}"
    );
    eprintln!("skipping: {server} unreachable ({err})");
    true
}

/// Run `case` on a fresh database of `kind`, then remove it.
async fn on<F, Fut>(kind: &str, case: F)
where
    F: FnOnce(super::Database) -> Fut,
    Fut: Future<Output = ()>,
{
    let (url, admin, cleanup): (String, Option<String>, Option<String>) = match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap().keep();
            let url = format!("sqlite://{}?mode=rwc", dir.join("c.db").display());
            (url, None, None)
        }
        "postgres" => {
            let base = std::env::var("TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let schema = format!("bsc_{}", uuid::Uuid::new_v4().simple());
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
            (
                url,
                Some(format!("CREATE SCHEMA {schema}")),
                Some(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")),
            )
        }
        _ => {
            let base = std::env::var("TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
            let database = format!("bsc_{}", uuid::Uuid::new_v4().simple());
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(&database);
            (
                url.to_string(),
                Some(format!("CREATE DATABASE {database}")),
                Some(format!("DROP DATABASE IF EXISTS {database}")),
            )
        }
    };
    let base = || match kind {
        "postgres" => std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        _ => std::env::var("TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
    };
    if let Some(create) = &admin {
        let db = match super::connect(&base()).await {
            Ok(db) => db,
            Err(err) if skip_unreachable(kind, &err) => return,
            Err(_) => unreachable!(),
        };
        crate::with_backend!(&db, backend => {
            dialect::execute(Dialect::on_pool(backend.pool()), create.clone(), vec![]).await.unwrap();
        });
    }
    let db = super::connect_with(&url, Limits::default()).await.unwrap();
    crate::with_backend!(&db, backend => super::migrate(backend).await.unwrap());
    case(db).await;
    if let Some(drop) = cleanup {
        let db = super::connect(&base()).await.unwrap();
        crate::with_backend!(&db, backend => {
            let _ = dialect::execute(Dialect::on_pool(backend.pool()), drop, vec![]).await;
        });
    }
}

/// One test per backend for each case: `case::sqlite`, `case::postgres`, `case::mysql`.
macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::on("sqlite", |db| async move {
                        crate::with_backend!(db, backend => super::$case(backend).await)
                    }).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::on("postgres", |db| async move {
                        crate::with_backend!(db, backend => super::$case(backend).await)
                    }).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    super::on("mysql", |db| async move {
                        crate::with_backend!(db, backend => super::$case(backend).await)
                    }).await;
                }
            }
        )+
    };
}

conformance!(
    claims_are_exclusive_renewed_taken_over_and_fenced,
    watermarks_move_by_compare_and_set,
    upserts_replace_by_key_and_the_quarantine_releases_rows,
    the_ledger_records_statuses_and_abandons_what_was_left_running,
    profiles_merge_by_range_and_a_window_replaces_those_inside_it,
);
