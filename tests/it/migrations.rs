//! batchscore's own schema across releases: a database made by an earlier release upgrades
//! cleanly, and one whose applied migrations differ from this binary's is refused with a clear
//! configuration error (exit 2) rather than silently used; on SQLite and PostgreSQL.

use sqlx::Row;

use crate::support::*;
use crate::windows::{at, job, ts};

const V1: &str = "20261124000001";
const V2: &str = "20261124000002";

/// SHA-384 of 0001 as the first release shipped it (and as it is again).
fn first_release_checksum(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => {
            "0bbd17986ce29e30efb6756a2afdfe013bd413bef83f1f1ae3f021fe739a161606334f25d1094f25f453e3617ad019c1"
        }
        Kind::Postgres => {
            "10feb1b7a0ee5891bd46640f5627ec3aace4df57a898afdce33987d0541fd64a3521370e1e8a237762a3eb84ee5f30a6"
        }
        Kind::Mysql => unreachable!("MySQL support starts after the first release"),
    }
}

fn kind_dir(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
        Kind::Mysql => "mysql",
    }
}

/// Apply a snapshot of an earlier release's migrations, with sqlx's migrator as that release did.
async fn apply_snapshot(p: &Project, snapshot: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/migrations")
        .join(snapshot)
        .join(kind_dir(p.kind));
    let migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.run(&p.pool).await.unwrap();
}

/// (version, checksum in hex, success) of every applied migration.
async fn applied(p: &Project) -> Vec<(String, String, bool)> {
    let sql = match p.kind {
        Kind::Sqlite => {
            "SELECT CAST(version AS TEXT), lower(hex(checksum)), CAST(success AS INTEGER) + 0 FROM _sqlx_migrations ORDER BY version"
        }
        Kind::Postgres => {
            "SELECT version::text, encode(checksum, 'hex'), success::int::int8 FROM _sqlx_migrations ORDER BY version"
        }
        Kind::Mysql => {
            "SELECT CAST(version AS CHAR), lower(hex(checksum)), CAST(success AS SIGNED) FROM _sqlx_migrations ORDER BY version"
        }
    };
    sqlx::query(sql)
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get::<i64, _>(2) == 1))
        .collect()
}

/// How many migrations this binary ships for `kind`: every one of them is applied.
fn shipped(kind: Kind) -> usize {
    std::fs::read_dir(
        std::path::Path::new(REPO)
            .join("migrations")
            .join(kind_dir(kind)),
    )
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "sql")
    })
    .count()
}

/// A ledger row as an earlier release wrote it.
async fn insert_old_run(p: &Project, run_id: &str, status: &str) {
    let time = match p.kind {
        Kind::Sqlite => "'2026-11-24T10:00:00.000000Z'",
        Kind::Postgres => "'2026-11-24T10:00:00Z'::timestamptz",
        Kind::Mysql => unreachable!("MySQL support starts after the first release"),
    };
    p.execute(&format!(
        "INSERT INTO batchscore_runs (run_id, job, window_start, window_end, status, model_sha256, \
         started_at, host, pid) VALUES ('{run_id}', 'old', {time}, {time}, '{status}', 'sha', {time}, 'h', 1)"
    ))
    .await;
}

async fn a_database_of_the_first_release_upgrades(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    apply_snapshot(&p, "first-release").await;
    insert_old_run(&p, "first", "succeeded").await;

    assert_exit(&p.batchscore(&["migrate"]), 0);
    let applied = applied(&p).await;
    assert_eq!(applied.len(), shipped(kind), "{applied:?}");
    assert!(
        applied.iter().all(|(_, _, success)| *success),
        "{applied:?}"
    );
    assert_eq!(applied[0].1, first_release_checksum(kind));
    assert_eq!(
        p.count(
            "SELECT count(*) FROM batchscore_runs WHERE run_id = 'first' AND status = 'succeeded'"
        )
        .await,
        1,
        "the first release's ledger is kept"
    );
    // The statuses later releases write are allowed now, and jobs run.
    insert_old_run(&p, "gone", "abandoned").await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_exit(&p.batchscore(&["migrate"]), 0);
}

// MySQL support starts with today's schema: there is no earlier MySQL release to upgrade from.
on_all_databases!(a_database_of_the_first_release_upgrades: sqlite, postgres);

async fn a_database_migrated_with_the_edited_first_migration_upgrades(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // Releases after the first shipped 0001 edited in place (its status CHECK widened).
    apply_snapshot(&p, "edited").await;
    insert_old_run(&p, "skipped-before", "skipped").await;
    // A watermark of a release before shards: it becomes shard 0 of 1, and runs continue from it.
    p.execute(&match kind {
        Kind::Sqlite => format!(
            "INSERT INTO batchscore_watermarks VALUES ('job', '{}', NULL, '{}')",
            ts(0),
            ts(0)
        ),
        Kind::Postgres => format!(
            "INSERT INTO batchscore_watermarks VALUES ('job', '{}', NULL, now())",
            ts(0)
        ),
        Kind::Mysql => unreachable!("MySQL support starts after the first release"),
    })
    .await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));

    // A run migrates on its own: the edit is recognised and recorded under the shipped checksum.
    let out = p.batchscore(&["run-job", "job", "--at", &at(21)]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out).matches("scored 1000 rows").count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(p.watermark("job").await.as_deref(), Some(ts(20).as_str()));
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_watermarks WHERE shard = 0 AND shards = 1")
            .await,
        1
    );
    let applied = applied(&p).await;
    assert_eq!(applied.len(), shipped(kind), "{applied:?}");
    assert_eq!(applied[0].1, first_release_checksum(kind));
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE run_id = 'skipped-before'")
            .await,
        1
    );
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
            .await,
        2
    );
    assert_exit(&p.batchscore(&["migrate"]), 0);
}

on_all_databases!(a_database_migrated_with_the_edited_first_migration_upgrades: sqlite, postgres);

async fn an_applied_migration_that_changed_is_refused(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let other = match kind {
        Kind::Sqlite | Kind::Mysql => "X'00'",
        Kind::Postgres => "'\\x00'::bytea",
    };
    p.execute(&format!(
        "UPDATE _sqlx_migrations SET checksum = {other} WHERE version = {V2}"
    ))
    .await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    for args in [&["migrate"][..], &["run-job", "job", "--at", &at(21)]] {
        let out = p.batchscore(args);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("migration {V2} (windows)")), "{err}");
        assert!(
            err.contains("applied migrations must never change"),
            "{err}"
        );
    }
    assert_eq!(p.count("SELECT count(*) FROM batchscore_runs").await, 0);
}

on_all_databases!(an_applied_migration_that_changed_is_refused);

async fn a_failed_or_unknown_migration_is_refused(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    assert_exit(&p.batchscore(&["migrate"]), 0);
    p.execute(&format!(
        "UPDATE _sqlx_migrations SET success = (1 = 0) WHERE version = {V1}"
    ))
    .await;
    let out = p.batchscore(&["migrate"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("failed partway"), "{}", stderr(&out));

    p.execute(&format!(
        "UPDATE _sqlx_migrations SET success = (1 = 1) WHERE version = {V1}"
    ))
    .await;
    let nothing = match kind {
        Kind::Sqlite | Kind::Mysql => "X'00'",
        Kind::Postgres => "'\\x00'::bytea",
    };
    p.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20991231000001, 'from the future', (1 = 1), {nothing}, 0)"
    ))
    .await;
    let out = p.batchscore(&["migrate"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("migrated by a newer release"),
        "{}",
        stderr(&out)
    );
}

on_all_databases!(a_failed_or_unknown_migration_is_refused);

async fn an_unreadable_migrations_table_is_an_error_not_an_empty_one(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // A table of that name that is not sqlx's (another tool's, or damaged).
    p.execute("CREATE TABLE _sqlx_migrations (id INTEGER)")
        .await;
    let out = p.batchscore(&["migrate"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("reading batchscore's applied migrations (_sqlx_migrations)"),
        "{}",
        stderr(&out)
    );
    assert!(!p.table_exists("batchscore_runs").await);
}

on_all_databases!(an_unreadable_migrations_table_is_an_error_not_an_empty_one);

/// Start `n` copies of the binary with `args` at once, as cron, the daemon and an Indexed Job's
/// pods do at a first deployment; their outputs, once all have ended.
fn at_once(p: &Project, args: &[&str], n: usize) -> Vec<std::process::Output> {
    let children: Vec<std::process::Child> = (0..n)
        .map(|_| {
            p.command(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Rounds of concurrent first starts per test: each round is a new database.
const ROUNDS: usize = 20;

async fn concurrent_migrates_on_a_new_database_all_succeed(kind: Kind) {
    for round in 0..ROUNDS {
        let Some(p) = Project::new(kind).await else {
            return;
        };
        for out in at_once(&p, &["migrate"], 8) {
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: every concurrent migrate succeeds\n{}",
                stderr(&out)
            );
        }
        let applied = applied(&p).await;
        assert_eq!(applied.len(), shipped(kind), "round {round}: {applied:?}");
        assert!(applied.iter().all(|(_, _, ok)| *ok), "{applied:?}");
    }
}

on_all_databases!(concurrent_migrates_on_a_new_database_all_succeed);

async fn concurrent_first_runs_on_a_new_database_score_once(kind: Kind) {
    let mut exits = std::collections::BTreeMap::<Option<i32>, usize>::new();
    for round in 0..ROUNDS {
        let Some(p) = Project::new(kind).await else {
            return;
        };
        p.seed_synthetic(3_000).await;
        p.write_job("job", &job("all"));
        let outs = at_once(&p, &["run-job", "job", "--at", &at(21)], 8);
        for out in &outs {
            let code = out.status.code();
            *exits.entry(code).or_default() += 1;
            assert!(
                code == Some(0) || code == Some(75),
                "round {round}: exit {code:?}, expected 0 or 75\n{}",
                stderr(out)
            );
        }
        assert!(
            outs.iter().any(|o| stdout(o).contains("scored 1000 rows")),
            "round {round}: one run scored the window"
        );
        let scored: Vec<i64> = crate::windows::predictions(&p).await.into_keys().collect();
        assert_eq!(scored, crate::windows::keys(10, 20), "round {round}");
        assert_eq!(
            p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
                .await,
            1,
            "round {round}: the window was committed once"
        );
        assert_eq!(p.watermark("job").await.as_deref(), Some(ts(20).as_str()));
        if round < 5 {
            // Then a window with rows and an empty one (no model session, no results table
            // pinned), again 8 at once.
            let outs = at_once(&p, &["run-job", "job", "--at", &at(41)], 8);
            for out in &outs {
                let code = out.status.code();
                assert!(
                    code == Some(0) || code == Some(75),
                    "round {round}, empty window: exit {code:?}\n{}",
                    stderr(out)
                );
            }
            let scored: Vec<i64> = crate::windows::predictions(&p).await.into_keys().collect();
            assert_eq!(scored, crate::windows::keys(10, 30), "round {round}");
            assert_eq!(
                p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'succeeded'")
                    .await,
                3,
                "round {round}: each window was committed once"
            );
            assert_eq!(p.watermark("job").await.as_deref(), Some(ts(40).as_str()));
        }
    }
    if !exits.is_empty() {
        eprintln!(
            "measured: {kind:?}, {ROUNDS} rounds of 8 concurrent run-job: exit codes {exits:?}"
        );
    }
}

on_all_databases!(concurrent_first_runs_on_a_new_database_score_once);
