//! Test fixtures: a temporary project (jobs directory, database), seeding, and the binary.

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::{AnyPool, Row};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The first row of every seeded table is at this time; row `i` is `i * 30` seconds later.
pub fn t0() -> DateTime<Utc> {
    "2026-01-10T00:00:00Z".parse().unwrap()
}

pub fn row_time(i: usize) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(30 * i as i64)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fixture from `tests/fixtures/NAME.json`: feature rows and ONNX Runtime's outputs for them.
pub struct Fixture {
    pub rows: Vec<Value>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let text = std::fs::read_to_string(format!("{REPO}/tests/fixtures/{name}.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        Fixture {
            rows: json["rows"].as_array().unwrap().clone(),
        }
    }

    pub fn feature(&self, row: usize, column: &str) -> f64 {
        self.rows[row]["features"][column].as_f64().unwrap()
    }

    pub fn text(&self, row: usize, column: &str) -> &str {
        self.rows[row]["features"][column].as_str().unwrap()
    }

    /// Output `name`, column `index` of row `row` (1-D outputs take index 0).
    pub fn output(&self, row: usize, name: &str, index: usize) -> f64 {
        let value = &self.rows[row]["outputs"][name];
        value
            .as_array()
            .map_or(value, |a| &a[index])
            .as_f64()
            .unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A temporary project: a jobs directory and a fresh database (a SQLite file, or a PostgreSQL
/// schema of its own on the test server).
pub struct Project {
    pub dir: tempfile::TempDir,
    pub kind: Kind,
    pub url: String,
    pub pool: AnyPool,
    schema: Option<String>,
}

fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl Project {
    pub async fn sqlite() -> Project {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let pool = AnyPool::connect(&url).await.unwrap();
        Project {
            dir,
            kind: Kind::Sqlite,
            url,
            pool,
            schema: None,
        }
    }

    /// A project on its own PostgreSQL schema; `None` (test skipped) when the server is
    /// unreachable, except under CI, where that is a failure.
    pub async fn postgres() -> Option<Project> {
        sqlx::any::install_default_drivers();
        let base = postgres_base_url();
        let admin = match AnyPool::connect(&base).await {
            Ok(pool) => pool,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "skipping: PostgreSQL at {base} unreachable ({e}); set TEST_DATABASE_URL"
                );
                return None;
            }
            Err(e) => panic!("PostgreSQL at {base} unreachable under CI: {e}"),
        };
        let schema = format!("bst_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        let pool = AnyPool::connect(&url).await.unwrap();
        Some(Project {
            dir: tempfile::tempdir().unwrap(),
            kind: Kind::Postgres,
            url,
            pool,
            schema: Some(schema),
        })
    }

    pub async fn new(kind: Kind) -> Option<Project> {
        match kind {
            Kind::Sqlite => Some(Project::sqlite().await),
            Kind::Postgres => Project::postgres().await,
        }
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    /// Write `jobs/NAME.toml`; `{models}` in the text becomes the repository's models directory.
    pub fn write_job(&self, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.jobs_dir()).unwrap();
        let path = self.jobs_dir().join(format!("{name}.toml"));
        std::fs::write(&path, text.replace("{models}", &format!("{REPO}/models"))).unwrap();
        path
    }

    /// Run the binary with this project's database and jobs directory.
    pub fn batchscore(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The binary, set up for this project, to spawn and manage by hand.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_batchscore"));
        command
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("BATCHSCORE_JOBS_DIR", self.jobs_dir())
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path());
        command
    }

    /// The job's watermark as RFC 3339 text, if it has one.
    pub async fn watermark(&self, job: &str) -> Option<String> {
        let sql = match self.kind {
            Kind::Sqlite => {
                format!("SELECT watermark FROM batchscore_watermarks WHERE job = '{job}'")
            }
            Kind::Postgres => format!(
                "SELECT to_char(watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM batchscore_watermarks WHERE job = '{job}'"
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&self.pool)
            .await
            .unwrap()
            .map(|r| r.get::<String, _>(0))
    }

    /// Seed `sensor_readings` with `rows` synthetic rows, row `i` (key `i`) at `t0 + i * 0.6 s`
    /// (a thousand rows per ten minutes), with features that vary deterministically.
    pub async fn seed_synthetic(&self, rows: usize) {
        self.execute(match self.kind {
            Kind::Sqlite => {
                "CREATE TABLE sensor_readings (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, \
                 temperature REAL, vibration REAL, pressure REAL, rpm INTEGER)"
            }
            Kind::Postgres => {
                "CREATE TABLE sensor_readings (reading_id bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, \
                 temperature double precision, vibration double precision, pressure double precision, rpm integer)"
            }
        })
        .await;
        self.seed_synthetic_range(0, rows).await;
    }

    /// Insert synthetic rows with keys `from..to` (see [`Project::seed_synthetic`]).
    pub async fn seed_synthetic_range(&self, from: usize, to: usize) {
        let last = to - 1;
        let insert = match self.kind {
            Kind::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO sensor_readings SELECT i, \
                 strftime('%Y-%m-%dT%H:%M:%fZ', unixepoch('2026-01-10T00:00:00Z') + i * 0.6, 'unixepoch'), \
                 60 + (i * 37 % 200) / 10.0, (i * 13 % 60) / 10.0, 4 + (i * 7 % 20) / 10.0, 900 + (i * 101 % 2700) FROM n"
            ),
            Kind::Postgres => format!(
                "INSERT INTO sensor_readings SELECT i, timestamptz '2026-01-10T00:00:00Z' + i * interval '0.6 seconds', \
                 60 + (i * 37 % 200) / 10.0, (i * 13 % 60) / 10.0, 4 + (i * 7 % 20) / 10.0, 900 + (i * 101 % 2700) \
                 FROM generate_series({from}, {last}) AS i"
            ),
        };
        self.execute(&insert).await;
    }

    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get::<i64, _>(0)
    }

    pub async fn table_exists(&self, table: &str) -> bool {
        let sql = match self.kind {
            Kind::Sqlite => format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'"),
            Kind::Postgres => format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '{table}'"
            ),
        };
        self.count(&sql).await > 0
    }

    /// `(status, rows_read, rows_written, error)` of every ledger row, oldest first.
    pub async fn runs(&self) -> Vec<(String, i64, i64, Option<String>)> {
        if !self.table_exists("batchscore_runs").await {
            return vec![];
        }
        sqlx::query("SELECT status, rows_read, rows_written, error FROM batchscore_runs ORDER BY started_at")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Rows of a results table as (key as text, value of `column` as f64), sorted by key.
    pub async fn results(&self, table: &str, key: &str, column: &str) -> Vec<(String, f64)> {
        let sql = format!(
            "SELECT CAST({key} AS TEXT), CAST({column} AS DOUBLE PRECISION) FROM {table} ORDER BY 1"
        );
        let mut rows: Vec<(String, f64)> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop the test's schema on a thread of its own: Drop cannot await.
            let base = postgres_base_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = AnyPool::connect(&base).await {
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert the exit code, showing both streams when it is wrong.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

pub fn model_path(name: &str) -> PathBuf {
    Path::new(REPO).join("models").join(format!("{name}.onnx"))
}

/// Two tests running `body(Kind)`, `BODY::sqlite` and `BODY::postgres`, named after `body`.
macro_rules! on_both_databases {
    ($body:ident) => {
        mod $body {
            use $crate::support::Kind;

            #[tokio::test]
            async fn sqlite() {
                super::$body(Kind::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$body(Kind::Postgres).await;
            }
        }
    };
}

/// `GET path` on loopback: (status code, body), or None while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Poll `check` every 50 ms until it holds or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
