//! Extreme source values: ±inf, NaN, subnormals and ±1e308 in every numeric column type, text
//! with a NUL byte and text of 10 MB, rows timestamped before 1900, after 9999 and at local
//! times inside a DST gap. Each row is scored exactly as ONNX Runtime's Python API scores it
//! (`tests/fixtures/hostile/extreme_values.json`, from `make_values.py`), or is a bad row whose
//! reason names its column. Values a database cannot hold in a column type are left out there.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use crate::support::*;

fn fixture() -> Value {
    let text =
        std::fs::read_to_string(format!("{REPO}/tests/fixtures/hostile/extreme_values.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

const FAILURE_JOB: &str = r#"
schedule = "0 * * * *"
[source]
table = "extremes"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "1d"
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "extreme_scores"
[bad_rows]
policy = "quarantine"
max_fraction = 1.0
"#;

/// The column types of `extremes`: a double, a single, a decimal and an integer column.
fn create_extremes(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => {
            "CREATE TABLE extremes (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, \
             temperature REAL, vibration REAL, pressure REAL, rpm INTEGER)"
        }
        Kind::Postgres => {
            "CREATE TABLE extremes (reading_id bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, \
             temperature float8, vibration float4, pressure numeric, rpm bigint)"
        }
        Kind::Mysql => {
            "CREATE TABLE extremes (reading_id BIGINT PRIMARY KEY, recorded_at DATETIME(6) NOT NULL, \
             temperature DOUBLE, vibration FLOAT, pressure DECIMAL(65, 30), rpm BIGINT)"
        }
    }
}

/// A value of the fixture as a SQL literal, if the database has one for it.
fn literal(kind: Kind, value: &str) -> Option<String> {
    Some(match (kind, value) {
        (Kind::Sqlite, "inf") => "9e999".to_owned(),
        (Kind::Sqlite, "-inf") => "-9e999".to_owned(),
        // SQLite stores a NaN as NULL: still a bad row.
        (Kind::Sqlite, "nan") => "(0.0 / 0.0)".to_owned(),
        (Kind::Postgres, "inf") => "'Infinity'".to_owned(),
        (Kind::Postgres, "-inf") => "'-Infinity'".to_owned(),
        (Kind::Postgres, "nan") => "'NaN'".to_owned(),
        (Kind::Postgres, number) => format!("'{number}'"),
        (Kind::Mysql, "inf" | "-inf" | "nan") => return None,
        (_, number) => number.to_owned(),
    })
}

async fn every_extreme_value_is_scored_as_python_does_or_a_bad_row(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.execute(create_extremes(kind)).await;
    let base = [
        ("temperature", "60.0"),
        ("vibration", "0.3"),
        ("pressure", "4.1"),
        ("rpm", "1000"),
    ];
    let fixture = fixture();
    // Rows in 1800 (before 1900), an hour apart.
    let at = |hour: usize| {
        let t = chrono::DateTime::parse_from_rfc3339("1800-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::TimeDelta::minutes(10 * hour as i64);
        kind.time_literal(t)
    };
    let mut inserted: BTreeMap<i64, &Value> = BTreeMap::new();
    for (i, case) in fixture["failure"].as_array().unwrap().iter().enumerate() {
        let column = case["column"].as_str().unwrap();
        let Some(value) = literal(kind, case["value"].as_str().unwrap()) else {
            continue;
        };
        let values: Vec<String> = base
            .iter()
            .map(|(c, v)| {
                if *c == column {
                    value.clone()
                } else {
                    v.to_string()
                }
            })
            .collect();
        let sql = format!(
            "INSERT INTO extremes VALUES ({i}, {}, {})",
            at(i),
            values.join(", ")
        );
        // A value the column type cannot hold is refused by the database: left out.
        if sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&p.pool)
            .await
            .is_ok()
        {
            inserted.insert(i as i64, case);
        }
    }
    assert!(inserted.len() > 20, "{} rows", inserted.len());
    p.write_job("extremes", FAILURE_JOB);
    let out = p.batchscore(&[
        "run-job",
        "extremes",
        "--from",
        "1800-01-01T00:00:00Z",
        "--to",
        "1800-01-02T00:00:00Z",
    ]);
    assert_exit(&out, 0);

    let scored: BTreeMap<i64, (i64, f64)> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, {}, {} FROM extreme_scores",
        kind.int("reading_id"),
        kind.int("failure_label"),
        kind.double("failure_probability")
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    let quote = |name: &str| kind.quote(name);
    let bad: BTreeMap<i64, String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, column_name, reason FROM batchscore_quarantine WHERE job = 'extremes'",
        kind.int(&quote("key"))
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            format!("{}: {}", r.get::<String, _>(1), r.get::<String, _>(2)),
        )
    })
    .collect();
    for (key, case) in &inserted {
        let what = format!("{} = {} (row {key})", case["column"], case["value"]);
        match case["scored"].as_bool().unwrap() {
            true => {
                let (label, probability) = scored
                    .get(key)
                    .unwrap_or_else(|| panic!("{what}: not scored ({:?})", bad.get(key)));
                assert_eq!(*label, case["label"].as_i64().unwrap(), "{what}");
                let expected = case["probability"].as_f64().unwrap();
                assert!(
                    (probability - expected).abs() < 1e-6,
                    "{what}: {probability} vs {expected}"
                );
            }
            false => {
                let reason = bad
                    .get(key)
                    .unwrap_or_else(|| panic!("{what}: not a bad row"));
                assert!(
                    reason.contains(case["column"].as_str().unwrap()),
                    "{what}: {reason}"
                );
                assert!(!scored.contains_key(key), "{what}: scored");
            }
        }
    }
    assert_eq!(scored.len() + bad.len(), inserted.len(), "every row once");
}

on_all_databases!(every_extreme_value_is_scored_as_python_does_or_a_bad_row);

const ETA_JOB: &str = r#"
schedule = "0 * * * *"
[source]
table = "orders"
key = "order_id"
timestamp = "placed_at"
features = ["distance_km", "items", "hour", "raining", "zone"]
[window]
size = "1d"
[model]
path = "{models}/delivery_eta.onnx"
[outputs]
eta_minutes = "variable"
[sink]
table = "eta"
[bad_rows]
max_fraction = 1.0
"#;

/// At local times inside Berlin's spring-forward gap (naive times, read as UTC): text with a NUL
/// byte (not on PostgreSQL, whose text cannot hold one) and 10 MB of text are bad rows naming
/// their column, and the plain order beside them is scored as ONNX Runtime's Python API scores
/// it. Rows after 9999 (where the type holds them) are in no window and break nothing.
async fn odd_text_and_times_are_scored_as_python_does(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let (text, boolean, nul, ten_megabytes) = match kind {
        Kind::Sqlite => (
            "TEXT",
            "INTEGER",
            Some("'north' || char(0) || 'south'"),
            "replace(hex(zeroblob(5242880)), '0', 'x')",
        ),
        Kind::Postgres => ("text", "boolean", None, "repeat('x', 10485760)"),
        Kind::Mysql => (
            "LONGTEXT",
            "BOOLEAN",
            Some("CONCAT('north', CHAR(0), 'south')"),
            "REPEAT('x', 10485760)",
        ),
    };
    p.execute(&format!(
        "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, placed_at {}, distance_km DOUBLE PRECISION, \
         items BIGINT, hour BIGINT, raining {boolean}, zone {text})",
        kind.time_type()
    ).replace("DOUBLE PRECISION", if kind == Kind::Mysql { "DOUBLE" } else { "DOUBLE PRECISION" }))
    .await;
    let gap = |minute: u32| match kind {
        Kind::Sqlite => format!("'2026-03-29T02:{minute:02}:00'"),
        Kind::Postgres => format!("timestamp '2026-03-29 02:{minute:02}:00'"),
        Kind::Mysql => format!("'2026-03-29 02:{minute:02}:00'"),
    };
    let truth = if kind == Kind::Postgres { "true" } else { "1" };
    let fixture = fixture();
    let plain = fixture["eta"][0]["eta_minutes"].as_f64().unwrap();
    let mut rows = vec![(1, ten_megabytes.to_owned()), (2, "'north'".to_owned())];
    if let Some(nul) = nul {
        rows.push((3, nul.to_owned()));
    }
    for (id, zone) in &rows {
        p.execute(&format!(
            "INSERT INTO orders VALUES ({id}, {}, 3.5, 2, 18, {truth}, {zone})",
            gap(10 * *id as u32)
        ))
        .await;
    }
    // After 9999: in no window (MySQL's DATETIME stops at 9999).
    match kind {
        Kind::Sqlite => p.execute("INSERT INTO orders VALUES (9, '10000-01-01T00:00:00Z', 3.5, 2, 18, 1, 'north')").await,
        Kind::Postgres => p.execute("INSERT INTO orders VALUES (9, timestamptz '10000-01-01 00:00:00Z', 3.5, 2, 18, true, 'north')").await,
        Kind::Mysql => {}
    }
    p.write_job("eta", ETA_JOB);
    let out = p.batchscore(&[
        "run-job",
        "eta",
        "--from",
        "2026-03-29T00:00:00Z",
        "--to",
        "2026-03-30T00:00:00Z",
    ]);
    assert_exit(&out, 0);
    let scored: BTreeMap<i64, f64> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, {} FROM eta",
        kind.int("order_id"),
        kind.double("eta_minutes")
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(scored.keys().collect::<Vec<_>>(), [&2]);
    assert!(
        (scored[&2] - plain).abs() < 1e-4,
        "{} vs {plain}",
        scored[&2]
    );
    let reasons: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT column_name, reason FROM batchscore_quarantine WHERE job = 'eta' ORDER BY {}",
        kind.quote("key")
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| format!("{}: {}", r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect();
    assert_eq!(reasons.len(), rows.len() - 1, "{reasons:?}");
    assert!(
        reasons[0].contains("zone") && reasons[0].contains("10485760 bytes"),
        "{reasons:?}"
    );
    if nul.is_some() {
        assert!(
            reasons[1].contains("zone") && reasons[1].contains("NUL"),
            "{reasons:?}"
        );
    }
    // A scheduled run, with the row after 9999 in the table, scores nothing of it.
    assert_exit(&p.batchscore(&["run-job", "eta"]), 0);
    assert_eq!(
        p.count("SELECT count(*) FROM eta WHERE order_id = 9").await,
        0
    );
}

on_all_databases!(odd_text_and_times_are_scored_as_python_does);
