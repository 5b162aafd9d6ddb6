//! Scoring a window end to end: exactly the window's rows, predictions equal to ONNX Runtime's
//! Python API, idempotent re-runs, empty windows; on SQLite and PostgreSQL.

use crate::support::*;

const MACHINE_FAILURE: &str = r#"
schedule = "*/30 * * * *"
[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = 25
[window]
size = "30m"
lateness = "2m"
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "machine_failure_predictions"
"#;

const DELIVERY_ETA: &str = r#"
schedule = "*/10 * * * *"
timezone = "Europe/Berlin"
[source]
query = "SELECT order_id, placed_at, distance_km, items, hour, raining, zone FROM orders WHERE placed_at >= :window_start AND placed_at < :window_end"
key = "order_id"
timestamp = "placed_at"
features = ["distance_km", "items", "hour", "raining", "zone"]
[window]
size = "30m"
[model]
path = "{models}/delivery_eta.onnx"
[outputs]
eta_minutes = "variable"
[sink]
table = "delivery_eta_predictions"
"#;

/// How a seeded table stores its timestamps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TimeForm {
    /// SQLite text `2026-01-10T00:30:00Z`
    IsoZ,
    /// SQLite text `2026-01-10 00:30:00`
    IsoSpace,
    /// SQLite text `2026-01-10T01:30:00+01:00`
    IsoOffset,
    /// SQLite integer unix seconds
    UnixSeconds,
    /// PostgreSQL timestamptz
    TimestampTz,
    /// PostgreSQL timestamp (no zone, read as UTC)
    Timestamp,
    /// MySQL DATETIME(6) (no zone, read as UTC)
    Datetime,
    /// MySQL TIMESTAMP(6) (stored in UTC, read in the session's zone, which batchscore pins to UTC)
    MysqlTimestamp,
}

impl TimeForm {
    /// The form a database's tests store times in unless they say otherwise.
    pub(crate) fn usual(kind: Kind) -> TimeForm {
        match kind {
            Kind::Sqlite => TimeForm::IsoZ,
            Kind::Postgres => TimeForm::TimestampTz,
            Kind::Mysql => TimeForm::Datetime,
        }
    }
}

fn time_literal(form: TimeForm, i: usize) -> String {
    let t = row_time(i);
    match form {
        TimeForm::IsoZ => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%SZ")),
        TimeForm::IsoSpace => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S")),
        TimeForm::IsoOffset => format!(
            "'{}'",
            t.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
                .format("%Y-%m-%dT%H:%M:%S%:z")
        ),
        TimeForm::UnixSeconds => t.timestamp().to_string(),
        TimeForm::TimestampTz => format!("'{}'::timestamptz", rfc3339(t)),
        TimeForm::Timestamp => format!("'{}'::timestamp", t.format("%Y-%m-%d %H:%M:%S")),
        TimeForm::Datetime | TimeForm::MysqlTimestamp => {
            format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"))
        }
    }
}

/// Seed `sensor_readings` with every fixture row; row `i` gets key `1000 + i` and time `row_time(i)`.
pub(crate) async fn seed_sensor_readings(p: &Project, form: TimeForm) -> Fixture {
    let fixture = Fixture::load("machine_failure");
    let ddl = match p.kind {
        Kind::Sqlite => {
            let ts = if matches!(form, TimeForm::UnixSeconds) {
                "INTEGER"
            } else {
                "TEXT"
            };
            format!(
                "CREATE TABLE sensor_readings (reading_id INTEGER PRIMARY KEY, recorded_at {ts} NOT NULL, temperature REAL, vibration REAL, pressure NUMERIC, rpm INTEGER)"
            )
        }
        Kind::Postgres => {
            let ts = if matches!(form, TimeForm::Timestamp) {
                "timestamp"
            } else {
                "timestamptz"
            };
            format!(
                "CREATE TABLE sensor_readings (reading_id bigint PRIMARY KEY, recorded_at {ts} NOT NULL, temperature double precision, vibration real, pressure numeric(8,3), rpm integer)"
            )
        }
        Kind::Mysql => {
            let ts = if matches!(form, TimeForm::MysqlTimestamp) {
                "TIMESTAMP(6)"
            } else {
                "DATETIME(6)"
            };
            format!(
                "CREATE TABLE sensor_readings (reading_id BIGINT PRIMARY KEY, recorded_at {ts} NOT NULL, temperature DOUBLE, vibration FLOAT, pressure DECIMAL(8,3), rpm INT, INDEX (recorded_at))"
            )
        }
    };
    p.execute(&ddl).await;
    let values: Vec<String> = (0..fixture.rows.len())
        .map(|i| {
            format!(
                "({}, {}, {}, {}, {}, {})",
                1000 + i,
                time_literal(form, i),
                fixture.feature(i, "temperature"),
                fixture.feature(i, "vibration"),
                fixture.feature(i, "pressure"),
                fixture.feature(i, "rpm") as i64
            )
        })
        .collect();
    p.execute(&format!(
        "INSERT INTO sensor_readings VALUES {}",
        values.join(", ")
    ))
    .await;
    fixture
}

/// Seed `orders` (text keys, a boolean feature) with every fixture row.
async fn seed_orders(p: &Project) -> Fixture {
    let fixture = Fixture::load("delivery_eta");
    let (ddl, form) = match p.kind {
        Kind::Sqlite => (
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, placed_at TEXT NOT NULL, distance_km REAL, items INTEGER, hour INTEGER, raining BOOLEAN, zone TEXT)",
            TimeForm::IsoZ,
        ),
        Kind::Postgres => (
            "CREATE TABLE orders (order_id text PRIMARY KEY, placed_at timestamptz NOT NULL, distance_km numeric, items smallint, hour bigint, raining boolean, zone varchar(16))",
            TimeForm::TimestampTz,
        ),
        Kind::Mysql => (
            "CREATE TABLE orders (order_id VARCHAR(16) PRIMARY KEY, placed_at DATETIME(6) NOT NULL, distance_km DECIMAL(10,3), items SMALLINT, hour BIGINT, raining BOOLEAN, zone VARCHAR(16))",
            TimeForm::Datetime,
        ),
    };
    p.execute(ddl).await;
    let values: Vec<String> = (0..fixture.rows.len())
        .map(|i| {
            let raining = fixture.feature(i, "raining") != 0.0;
            format!(
                "('ord-{i:04}', {}, {}, {}, {}, {}, '{}')",
                time_literal(form, i),
                fixture.feature(i, "distance_km"),
                fixture.feature(i, "items") as i64,
                fixture.feature(i, "hour") as i64,
                if p.kind == Kind::Postgres {
                    raining.to_string()
                } else {
                    (raining as i32).to_string()
                },
                fixture.text(i, "zone")
            )
        })
        .collect();
    p.execute(&format!("INSERT INTO orders VALUES {}", values.join(", ")))
        .await;
    fixture
}

/// Window [row 60, row 120): 30 minutes of rows 30 s apart.
fn window_args() -> [String; 4] {
    [
        "--from".into(),
        rfc3339(row_time(60)),
        "--to".into(),
        rfc3339(row_time(120)),
    ]
}

fn run_window(p: &Project, job: &str) -> std::process::Output {
    let [a, b, c, d] = window_args();
    p.batchscore(&["run-job", job, &a, &b, &c, &d])
}

/// Exactly rows 60..120 scored, each within 1e-5 of ONNX Runtime's Python output.
async fn assert_machine_failure_window(p: &Project, fixture: &Fixture) {
    let probabilities = p
        .results(
            "machine_failure_predictions",
            "reading_id",
            "failure_probability",
        )
        .await;
    let labels = p
        .results("machine_failure_predictions", "reading_id", "failure_label")
        .await;
    let expected_keys: Vec<String> = (60..120).map(|i| (1000 + i).to_string()).collect();
    let keys: Vec<String> = probabilities.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, expected_keys, "exactly the window's rows are scored");
    for ((key, probability), (_, label)) in probabilities.iter().zip(&labels) {
        let row = key.parse::<usize>().unwrap() - 1000;
        let expected = fixture.output(row, "probabilities", 1);
        assert!(
            (probability - expected).abs() < 1e-5,
            "row {row}: probability {probability} vs ONNX Runtime {expected}"
        );
        assert_eq!(*label, fixture.output(row, "label", 0), "row {row}: label");
    }
}

async fn classifier_scores_exactly_the_window(kind: Kind, form: TimeForm) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let fixture = seed_sensor_readings(&p, form).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    let out = run_window(&p, "machine_failure");
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("scored 60 rows"), "{}", stdout(&out));
    assert_machine_failure_window(&p, &fixture).await;
    let runs = p.runs().await;
    assert_eq!(runs, vec![("succeeded".to_owned(), 60, 60, None)]);
}

#[tokio::test]
async fn sqlite_iso_z_times() {
    classifier_scores_exactly_the_window(Kind::Sqlite, TimeForm::IsoZ).await;
}

#[tokio::test]
async fn sqlite_iso_space_times() {
    classifier_scores_exactly_the_window(Kind::Sqlite, TimeForm::IsoSpace).await;
}

#[tokio::test]
async fn sqlite_iso_offset_times() {
    classifier_scores_exactly_the_window(Kind::Sqlite, TimeForm::IsoOffset).await;
}

#[tokio::test]
async fn sqlite_unix_seconds_times() {
    classifier_scores_exactly_the_window(Kind::Sqlite, TimeForm::UnixSeconds).await;
}

#[tokio::test]
async fn postgres_timestamptz() {
    classifier_scores_exactly_the_window(Kind::Postgres, TimeForm::TimestampTz).await;
}

#[tokio::test]
async fn postgres_timestamp_without_zone() {
    classifier_scores_exactly_the_window(Kind::Postgres, TimeForm::Timestamp).await;
}

#[tokio::test]
async fn mysql_datetime() {
    classifier_scores_exactly_the_window(Kind::Mysql, TimeForm::Datetime).await;
}

#[tokio::test]
async fn mysql_timestamp() {
    classifier_scores_exactly_the_window(Kind::Mysql, TimeForm::MysqlTimestamp).await;
}

async fn regressor_with_text_keys_and_query(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let fixture = seed_orders(&p).await;
    let job = match kind {
        Kind::Postgres | Kind::Mysql => DELIVERY_ETA.to_owned(),
        // SQLite has no INTERVAL; the placeholders are bound as unix seconds there.
        Kind::Sqlite => DELIVERY_ETA.replace(
            "placed_at >= :window_start AND placed_at < :window_end",
            "unixepoch(placed_at) >= :window_start AND unixepoch(placed_at) < :window_end",
        ),
    };
    p.write_job("delivery_eta", &job);
    let out = run_window(&p, "delivery_eta");
    assert_exit(&out, 0);
    let results = p
        .results("delivery_eta_predictions", "order_id", "eta_minutes")
        .await;
    let keys: Vec<String> = results.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (60..120).map(|i| format!("ord-{i:04}")).collect();
    assert_eq!(keys, expected);
    for (key, minutes) in &results {
        let row: usize = key[4..].parse().unwrap();
        let reference = fixture.output(row, "variable", 0);
        assert!(
            (minutes - reference).abs() < 1e-5,
            "{key}: {minutes} vs ONNX Runtime {reference}"
        );
    }
}

on_all_databases!(regressor_with_text_keys_and_query);

async fn rerun_is_idempotent(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let fixture = seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    assert_exit(&run_window(&p, "machine_failure"), 0);
    let first = p
        .results(
            "machine_failure_predictions",
            "reading_id",
            "failure_probability",
        )
        .await;
    assert_exit(&run_window(&p, "machine_failure"), 0);
    let second = p
        .results(
            "machine_failure_predictions",
            "reading_id",
            "failure_probability",
        )
        .await;
    assert_eq!(first, second);
    assert_eq!(
        p.count("SELECT count(*) FROM machine_failure_predictions")
            .await,
        60
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT batchscore_run) FROM machine_failure_predictions")
            .await,
        1,
        "every row carries the latest run's number"
    );
    assert_eq!(p.runs().await.len(), 2);
    assert_machine_failure_window(&p, &fixture).await;
}

on_all_databases!(rerun_is_idempotent);

async fn empty_window_succeeds(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    let out = p.batchscore(&[
        "run-job",
        "machine_failure",
        "--from",
        "2030-01-01T00:00:00Z",
        "--to",
        "2030-01-01T00:30:00Z",
    ]);
    assert_exit(&out, 0);
    assert_eq!(p.runs().await, vec![("succeeded".to_owned(), 0, 0, None)]);
    assert_eq!(
        p.count("SELECT count(*) FROM machine_failure_predictions")
            .await,
        0
    );
}

on_all_databases!(empty_window_succeeds);

#[tokio::test]
async fn at_plans_the_latest_window_before_the_lateness_margin() {
    let p = Project::sqlite().await;
    let fixture = seed_sensor_readings(&p, TimeForm::IsoZ).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    // now = row 124 (62 min); lateness 2m → end = row 120; size 30m → start = row 60.
    let at = rfc3339(row_time(124));
    let out = p.batchscore(&["run-job", "machine_failure", "--at", &at]);
    assert_exit(&out, 0);
    assert_machine_failure_window(&p, &fixture).await;
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    let [a, b, c, d] = window_args();
    let out = p.batchscore(&["run-job", "machine_failure", &a, &b, &c, &d, "--dry-run"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("window:    [2026-01-10T00:30:00Z, 2026-01-10T01:00:00Z)  rows: 60"),
        "{text}"
    );
    for line in [
        "input  features          float32[N,4]  <- temperature (real), vibration (real), pressure (numeric), rpm (integer)",
        "output label             int64[N]      -> failure_label (integer)",
        "output probabilities[1]  float32[N,2]  -> failure_probability (float)",
    ] {
        assert!(text.contains(line), "expected {line:?} in:\n{text}");
    }
    assert!(!p.table_exists("machine_failure_predictions").await);
    assert!(!p.table_exists("batchscore_runs").await);
}

#[tokio::test]
async fn status_lists_runs_and_jobs_list_shows_jobs() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    p.write_job("machine_failure", MACHINE_FAILURE);
    assert_exit(&run_window(&p, "machine_failure"), 0);
    // A backfill moves no watermark: the job is ok (it succeeded just now), and its windows
    // are listed.
    let out = p.batchscore(&["status", "machine_failure"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("machine_failure")
            && text.contains(" ok ")
            && text.contains("succeeded")
            && text.contains("2026-01-10T00:30:00Z"),
        "{text}"
    );
    let out = p.batchscore(&["jobs", "list"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("*/30 * * * *") && text.contains("machine_failure_predictions"),
        "{text}"
    );
}

async fn bad_feature_value_fails_the_window(kind: Kind, cases: &[(&str, &str)]) {
    for (value, reason) in cases {
        let Some(p) = Project::new(kind).await else {
            return;
        };
        seed_sensor_readings(&p, TimeForm::usual(kind)).await;
        p.execute(&format!(
            "UPDATE sensor_readings SET vibration = {value} WHERE reading_id = 1090"
        ))
        .await;
        p.write_job("machine_failure", MACHINE_FAILURE);
        let out = run_window(&p, "machine_failure");
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("row with key 1090: column `vibration` {reason}")),
            "{err}"
        );
        assert!(err.contains("was not written"), "{err}");
        if kind == Kind::Mysql {
            // DDL commits on MySQL: the results table is created before the window, and stays.
            assert_eq!(
                p.count("SELECT count(*) FROM machine_failure_predictions")
                    .await,
                0,
                "nothing written"
            );
        } else {
            assert!(
                !p.table_exists("machine_failure_predictions").await,
                "nothing written, not even the table"
            );
        }
        let runs = p.runs().await;
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].0.as_str(), runs[0].2), ("failed", 0));
        assert!(runs[0].3.as_deref().unwrap().contains("vibration"));
    }
}

#[tokio::test]
async fn sqlite_null_or_text_feature_fails_the_window_and_writes_nothing() {
    bad_feature_value_fails_the_window(
        Kind::Sqlite,
        &[
            ("NULL", "is NULL"),
            ("'hot'", "holds text 'hot', not a number"),
        ],
    )
    .await;
}

#[tokio::test]
async fn postgres_null_or_nan_feature_fails_the_window_and_writes_nothing() {
    bad_feature_value_fails_the_window(Kind::Postgres, &[("NULL", "is NULL"), ("'NaN'", "is NaN")])
        .await;
}

#[tokio::test]
async fn mysql_null_feature_fails_the_window_and_writes_nothing() {
    bad_feature_value_fails_the_window(Kind::Mysql, &[("NULL", "is NULL")]).await;
}
