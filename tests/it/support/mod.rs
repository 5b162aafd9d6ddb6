//! Test fixtures: a temporary project (jobs directory, database), seeding, and the binary.

pub mod browser;
pub mod mlflow;
pub mod proxy;
pub mod receiver;

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
    Mysql,
}

impl Kind {
    /// The database a test function is named after.
    pub fn of(name: &str) -> Kind {
        match name {
            "sqlite" => Kind::Sqlite,
            "postgres" => Kind::Postgres,
            "mysql" => Kind::Mysql,
            other => panic!("no database {other}"),
        }
    }

    /// SQL for a column's value as RFC 3339 text with microseconds (`…T00:00:00.000000Z`), as
    /// batchscore's SQLite tables store times.
    pub fn time_text(self, column: &str) -> String {
        match self {
            Kind::Sqlite => column.to_owned(),
            Kind::Postgres => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
            Kind::Mysql => format!("DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
        }
    }

    /// SQL for a time column's value in unix seconds, as a double.
    pub fn epoch(self, column: &str) -> String {
        match self {
            Kind::Sqlite => format!("unixepoch({column}, 'subsec')"),
            Kind::Postgres => format!("extract(epoch FROM {column})::float8"),
            Kind::Mysql => format!(
                "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) / 1e6 AS DOUBLE)"
            ),
        }
    }

    /// A time as a literal of the type the tests' time columns have.
    pub fn time_literal(self, t: DateTime<Utc>) -> String {
        match self {
            Kind::Sqlite => format!("'{}'", rfc3339(t)),
            Kind::Postgres => format!("timestamptz '{}'", rfc3339(t)),
            Kind::Mysql => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        }
    }

    /// `expr` cast to a 64-bit integer.
    pub fn int(self, expr: &str) -> String {
        format!("CAST({expr} AS {})", self.bigint())
    }

    /// `expr` cast to text.
    pub fn text(self, expr: &str) -> String {
        match self {
            Kind::Mysql => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS TEXT)"),
        }
    }

    /// `expr` cast to a double.
    pub fn double(self, expr: &str) -> String {
        match self {
            Kind::Mysql => format!("CAST({expr} AS DOUBLE)"),
            _ => format!("CAST({expr} AS DOUBLE PRECISION)"),
        }
    }

    /// A column name quoted (`key` is a reserved word in MySQL).
    pub fn quote(self, name: &str) -> String {
        match self {
            Kind::Mysql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }

    /// The type a CAST to a 64-bit integer names.
    pub fn bigint(self) -> &'static str {
        match self {
            Kind::Mysql => "SIGNED",
            _ => "BIGINT",
        }
    }

    /// The column type of the tests' time columns.
    pub fn time_type(self) -> &'static str {
        match self {
            Kind::Sqlite => "TEXT",
            Kind::Postgres => "timestamptz",
            Kind::Mysql => "DATETIME(6)",
        }
    }

    /// A derived table `n(i)` of the integers `from..=last`.
    pub fn series(self, from: usize, last: usize) -> String {
        match self {
            Kind::Sqlite => format!(
                "(WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) SELECT i FROM n) AS n"
            ),
            Kind::Postgres => format!("generate_series({from}, {last}) AS n(i)"),
            // Digits crossed, not a recursive CTE: the servers cap recursion at 1000 by default.
            Kind::Mysql => {
                let digits = (last.max(1) as f64).log10().floor() as usize + 1;
                let ten = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL \
                           SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
                let tables: Vec<String> = (0..digits).map(|k| format!("{ten} AS d{k}")).collect();
                let value: Vec<String> = (0..digits)
                    .map(|k| format!("d{k}.d * {}", 10usize.pow(k as u32)))
                    .collect();
                format!(
                    "(SELECT i FROM (SELECT {} AS i FROM {}) AS digits WHERE i BETWEEN {from} AND {last}) AS n",
                    value.join(" + "),
                    tables.join(" CROSS JOIN ")
                )
            }
        }
    }
}

/// A temporary project: a jobs directory and a fresh database (a SQLite file, or a PostgreSQL
/// schema or a MySQL database of its own on the test server).
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

fn mysql_base_url() -> String {
    std::env::var("TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

impl Project {
    pub async fn sqlite() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("test.db");
        Project::sqlite_file(dir, &file).await
    }

    /// A project whose SQLite database is the file at `path` (on a file system of the test's
    /// own, say), with its jobs in `dir`.
    pub async fn sqlite_file(dir: tempfile::TempDir, path: &Path) -> Project {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
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

    /// A project on its own MySQL (or MariaDB) database; `None` (test skipped) when the server
    /// is unreachable, except under CI, where that is a failure.
    pub async fn mysql() -> Option<Project> {
        sqlx::any::install_default_drivers();
        let base = mysql_base_url();
        let admin = match AnyPool::connect(&base).await {
            Ok(pool) => pool,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping: MySQL at {base} unreachable ({e}); set TEST_MYSQL_URL");
                return None;
            }
            Err(e) => panic!("MySQL at {base} unreachable under CI: {e}"),
        };
        let database = format!("bst_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&database);
        let url = url.to_string();
        let pool = AnyPool::connect(&url).await.unwrap();
        Some(Project {
            dir: tempfile::tempdir().unwrap(),
            kind: Kind::Mysql,
            url,
            pool,
            schema: Some(database),
        })
    }

    pub async fn new(kind: Kind) -> Option<Project> {
        match kind {
            Kind::Sqlite => Some(Project::sqlite().await),
            Kind::Postgres => Project::postgres().await,
            Kind::Mysql => Project::mysql().await,
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

    /// `alerts.toml` next to the jobs directory, where commands find it by default.
    pub fn write_routes(&self, text: &str) {
        std::fs::write(self.dir.path().join("alerts.toml"), text).unwrap();
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
        let sql = format!(
            "SELECT {} FROM batchscore_watermarks WHERE job = '{job}'",
            self.kind.time_text("watermark")
        );
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
            Kind::Mysql => {
                "CREATE TABLE sensor_readings (reading_id BIGINT PRIMARY KEY, recorded_at DATETIME(6) NOT NULL, \
                 temperature DOUBLE, vibration DOUBLE, pressure DOUBLE, rpm INT)"
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
            Kind::Mysql => format!(
                "INSERT INTO sensor_readings SELECT i, TIMESTAMPADD(MICROSECOND, i * 600000, '2026-01-10 00:00:00'), \
                 60 + (i * 37 % 200) / 10.0, (i * 13 % 60) / 10.0, 4 + (i * 7 % 20) / 10.0, 900 + (i * 101 % 2700) \
                 FROM {}",
                Kind::Mysql.series(from, last)
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
            Kind::Mysql => format!(
                "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
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
        let sql = match self.kind {
            Kind::Mysql => format!(
                "SELECT CAST({key} AS CHAR), CAST({column} AS DOUBLE) FROM {table} ORDER BY 1"
            ),
            _ => format!(
                "SELECT CAST({key} AS TEXT), CAST({column} AS DOUBLE PRECISION) FROM {table} ORDER BY 1"
            ),
        };
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
            let (base, sql) = match self.kind {
                Kind::Mysql => (
                    mysql_base_url(),
                    format!("DROP DATABASE IF EXISTS {schema}"),
                ),
                _ => (
                    postgres_base_url(),
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ),
            };
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = AnyPool::connect(&base).await {
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

/// Tests running `body(Kind)` on each database, `BODY::sqlite`, `BODY::postgres` and
/// `BODY::mysql`, named after `body`; or on the databases listed after it.
macro_rules! on_all_databases {
    ($body:ident) => {
        on_all_databases!($body: sqlite, postgres, mysql);
    };
    ($body:ident: $($database:ident),+) => {
        mod $body {
            $(
                #[tokio::test]
                async fn $database() {
                    super::$body($crate::support::Kind::of(stringify!($database))).await;
                }
            )+
        }
    };
}

/// `GET path` on loopback: (status code, body), or None while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_response(port, path).map(|(status, _, body)| (status, body))
}

/// `GET path` on loopback: (status code, header lines, body), or None while nothing listens.
pub fn http_response(port: u16, path: &str) -> Option<(u16, String, String)> {
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
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Some((status, head.to_owned(), body.to_owned()))
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

/// Run `script` with `python`, `input` as JSON on its stdin; its stdout, parsed as JSON: how the
/// tests ask Python's libraries (numpy, pandas, scikit-learn) for the reference values.
pub fn python_json(python: &str, script: &str, input: &Value) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Python reference failed");
    serde_json::from_slice(&out.stdout).unwrap()
}
