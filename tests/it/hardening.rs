//! Jobs that went wrong after they were set up (schema drift, a replaced model), hostile job
//! files, secrets in URLs, and a run with least-privilege grants on PostgreSQL.

use std::process::Output;

use crate::support::*;

const JOB: &str = r#"
schedule = "*/10 * * * *"
[source]
table = "readings"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "1h"
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "scores"
"#;

async fn seed(p: &Project) {
    let ddl = match p.kind {
        Kind::Sqlite => {
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, temperature REAL, vibration REAL, pressure REAL, rpm INTEGER); \
             INSERT INTO readings VALUES (1, '2026-01-10T00:10:00Z', 70, 3, 5, 2000), (2, '2026-01-10T01:10:00Z', 71, 3, 5, 2000)"
        }
        Kind::Postgres => {
            "CREATE TABLE readings (id bigint PRIMARY KEY, ts timestamptz NOT NULL, temperature double precision, \
             vibration double precision, pressure double precision, rpm integer); \
             INSERT INTO readings VALUES (1, '2026-01-10T00:10:00Z', 70, 3, 5, 2000), (2, '2026-01-10T01:10:00Z', 71, 3, 5, 2000)"
        }
        Kind::Mysql => {
            "CREATE TABLE readings (id BIGINT PRIMARY KEY, ts DATETIME(6) NOT NULL, temperature DOUBLE, \
             vibration DOUBLE, pressure DOUBLE, rpm INT); \
             INSERT INTO readings VALUES (1, '2026-01-10 00:10:00', 70, 3, 5, 2000), (2, '2026-01-10 01:10:00', 71, 3, 5, 2000)"
        }
    };
    p.execute(ddl).await;
}

/// Set up a job with one committed window, so drift can happen after it.
async fn set_up(kind: Kind) -> Option<Project> {
    let p = Project::new(kind).await?;
    seed(&p).await;
    p.write_job("job", JOB);
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", "2026-01-10T01:00:00Z"]),
        0,
    );
    assert_eq!(p.count("SELECT count(*) FROM scores").await, 1);
    Some(p)
}

/// The run fails with exit 2 naming `expected`, writes nothing and leaves the watermark.
async fn assert_refused(p: &Project, expected: &str) {
    let watermark = p.watermark("job").await;
    let runs = p.runs().await.len();
    let out = p.batchscore(&["run-job", "job", "--at", "2026-01-10T02:00:00Z"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("job `job`") && stderr(&out).contains(expected),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        p.count("SELECT count(*) FROM scores").await,
        1,
        "nothing written"
    );
    assert_eq!(p.watermark("job").await, watermark, "watermark unchanged");
    assert_eq!(p.runs().await.len(), runs, "no run recorded");
}

async fn schema_drift_fails_before_anything_is_written(kind: Kind) {
    let Some(p) = set_up(kind).await else { return };
    p.execute("ALTER TABLE readings DROP COLUMN rpm").await;
    assert_refused(&p, "feature column `rpm` is not in table readings").await;

    let Some(p) = set_up(kind).await else { return };
    p.execute("ALTER TABLE readings DROP COLUMN vibration; ALTER TABLE readings ADD COLUMN vibration TEXT").await;
    assert_refused(
        &p,
        "feature column `vibration` in table readings has type text, which cannot feed model input `features` (float32)",
    )
    .await;

    let Some(p) = set_up(kind).await else { return };
    p.execute("ALTER TABLE scores DROP COLUMN failure_probability")
        .await;
    assert_refused(
        &p,
        "results table scores exists but lacks column(s) failure_probability",
    )
    .await;
}

on_all_databases!(schema_drift_fails_before_anything_is_written);

#[tokio::test]
async fn a_pinned_model_that_changed_is_refused() {
    let Some(p) = set_up(Kind::Sqlite).await else {
        return;
    };
    let pinned = JOB.replace(
        "[outputs]",
        &format!("sha256 = \"{}\"\n[outputs]", "ab".repeat(32)),
    );
    p.write_job("job", &pinned);
    assert_refused(&p, "but model.sha256 in the job file pins abab").await;
}

#[tokio::test]
async fn every_result_row_names_its_model() {
    let Some(p) = set_up(Kind::Sqlite).await else {
        return;
    };
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(model_path("machine_failure")).unwrap(),
        ))
    };
    let versions = p
        .count(&format!(
            "SELECT count(*) FROM scores s JOIN batchscore_models m ON m.id = s.batchscore_model \
             WHERE m.sha256 = '{sha}'"
        ))
        .await;
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn hostile_queries_are_refused() {
    let p = Project::sqlite().await;
    seed(&p).await;
    for (query, expected) in [
        (
            "SELECT * FROM readings; DROP TABLE readings",
            "contains `;`",
        ),
        ("DELETE FROM readings", "single SELECT"),
        (
            "SELECT * FROM readings -- ; DROP TABLE readings",
            "contains `;`",
        ),
    ] {
        p.write_job(
            "job",
            &JOB.replace("table = \"readings\"", &format!("query = {query:?}")),
        );
        let out = p.batchscore(&["run-job", "job"]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    // A quoted column name in a query result cannot smuggle SQL either: names are checked.
    p.write_job(
        "job",
        &JOB.replace("\"rpm\"]", "\"rpm\\\"; DROP TABLE readings; --\"]"),
    );
    assert_exit(&p.batchscore(&["run-job", "job"]), 2);
    assert_eq!(p.count("SELECT count(*) FROM readings").await, 2);
}

#[tokio::test]
async fn passwords_never_appear_in_logs_or_output() {
    let Some(p) = Project::postgres().await else {
        return;
    };
    seed(&p).await;
    p.write_job("job", JOB);
    // Trust authentication ignores the password, so the run works and logs at trace level.
    let url = p
        .url
        .replace("postgres://postgres@", "postgres://postgres:s3cr3t-pw@");
    for args in [
        vec!["-vv", "run-job", "job", "--at", "2026-01-10T01:00:00Z"],
        vec!["-vv", "status"],
        vec!["-vv", "migrate"],
        vec!["-vv", "jobs", "validate"],
    ] {
        let out = p.command(&args).env("DATABASE_URL", &url).output().unwrap();
        // The job's window is from January: `status` calls it late, and says so with exit 1.
        assert_exit(&out, if args[1] == "status" { 1 } else { 0 });
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !all.contains("s3cr3t-pw"),
            "password leaked by {args:?}:\n{all}"
        );
    }
    let out = p
        .command(&["migrate"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(stdout(&out).contains("postgres:***@"), "{}", stdout(&out));
}

/// The owner's set-up before a least-privilege account runs jobs: batchscore's tables and the
/// results table (a first, empty backfill).
async fn owner_sets_up(p: &Project) {
    seed(p).await;
    p.write_job("job", JOB);
    assert_exit(&p.batchscore(&["migrate"]), 0);
    assert_exit(
        &p.batchscore(&[
            "run-job",
            "job",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-01T01:00:00Z",
        ]),
        0,
    );
}

/// As the account of `url`: a run of the job, `status`, and a run of a job whose results table
/// does not exist yet (which needs CREATE).
fn run_as_least_privileged(p: &Project, url: &str) -> [Output; 3] {
    let as_account = |args: &[&str]| p.command(args).env("DATABASE_URL", url).output().unwrap();
    let scored = as_account(&["run-job", "job", "--at", "2026-01-10T01:00:00Z"]);
    let status = as_account(&["status"]);
    p.write_job(
        "other",
        &JOB.replace("table = \"scores\"", "table = \"other_scores\""),
    );
    let denied = as_account(&["run-job", "other", "--at", "2026-01-10T01:00:00Z"]);
    [scored, status, denied]
}

/// The account scored the window, read the ledger and claims (`status` answers: the January
/// window is late), and nothing more: the new results table was refused with `refusal`.
async fn assert_least_privilege(p: &Project, [scored, status, denied]: [Output; 3], refusal: &str) {
    assert_exit(&scored, 0);
    assert_eq!(p.count("SELECT count(*) FROM scores").await, 1);
    assert_exit(&status, 1);
    assert!(stdout(&status).contains("late"), "{}", stdout(&status));
    assert_exit(&denied, 1);
    assert!(stderr(&denied).contains(refusal), "{}", stderr(&denied));
}

#[tokio::test]
async fn postgres_least_privilege_role_can_run_jobs() {
    let Some(p) = Project::postgres().await else {
        return;
    };
    owner_sets_up(&p).await;
    let role = format!("bst_runner_{}", uuid::Uuid::new_v4().simple());
    // Exactly the grants README.md documents.
    p.execute(&format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT USAGE ON SCHEMA {s} TO {role}; \
         GRANT SELECT ON readings TO {role}; \
         GRANT SELECT, INSERT, UPDATE ON scores TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON batchscore_runs, batchscore_watermarks, batchscore_claims, batchscore_quarantine TO {role}; \
         GRANT SELECT, INSERT, DELETE ON batchscore_profiles TO {role}; \
         GRANT SELECT ON batchscore_references TO {role}; \
         GRANT SELECT, INSERT ON batchscore_models TO {role}; \
         GRANT SELECT ON _sqlx_migrations TO {role}",
        s = current_schema(&p).await
    ))
    .await;
    let url = p
        .url
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let runs = run_as_least_privileged(&p, &url);
    p.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
    assert_least_privilege(&p, runs, "permission denied").await;
}

async fn current_schema(p: &Project) -> String {
    use sqlx::Row;
    sqlx::query("SELECT current_schema()::text")
        .fetch_one(&p.pool)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn mysql_least_privilege_user_can_run_jobs() {
    let Some(p) = Project::mysql().await else {
        return;
    };
    owner_sets_up(&p).await;
    let user = format!(
        "bst_runner_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let database = url::Url::parse(&p.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    // Exactly the grants README.md documents, one table at a time (MySQL takes one per GRANT).
    let mut grants = vec![
        format!("CREATE USER '{user}'@'%'"),
        format!("GRANT SELECT ON {database}.readings TO '{user}'@'%'"),
        format!("GRANT SELECT, INSERT, UPDATE ON {database}.scores TO '{user}'@'%'"),
    ];
    for table in [
        "batchscore_runs",
        "batchscore_watermarks",
        "batchscore_claims",
        "batchscore_quarantine",
        "batchscore_profiles",
    ] {
        grants.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.{table} TO '{user}'@'%'"
        ));
    }
    for table in ["batchscore_references", "_sqlx_migrations"] {
        grants.push(format!(
            "GRANT SELECT ON {database}.{table} TO '{user}'@'%'"
        ));
    }
    grants.push(format!(
        "GRANT SELECT, INSERT ON {database}.batchscore_models TO '{user}'@'%'"
    ));
    for grant in &grants {
        p.execute(grant).await;
    }
    let mut url = url::Url::parse(&p.url).unwrap();
    url.set_username(&user).unwrap();
    let url = url.to_string();
    let runs = run_as_least_privileged(&p, &url);
    p.execute(&format!("DROP USER '{user}'@'%'")).await;
    assert_least_privilege(&p, runs, "command denied").await;
}
