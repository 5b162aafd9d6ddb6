//! `batchscore jobs new`: from a model file and a table (or query) to a job file that
//! `jobs validate` accepts as it stands, on the demo model and a per-column pipeline model; it
//! refuses to overwrite without `--force`. On SQLite and PostgreSQL.

use crate::support::*;
use crate::windows::at;

fn jobs_new(p: &Project, args: &[&str]) -> std::process::Output {
    p.batchscore(&[&["jobs", "new"][..], args].concat())
}

fn job_file(p: &Project, name: &str) -> String {
    std::fs::read_to_string(p.jobs_dir().join(format!("{name}.toml"))).unwrap()
}

async fn a_new_job_from_a_model_and_a_table_validates_and_runs(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(3_000).await;
    let model = model_path("machine_failure");
    let out = jobs_new(
        &p,
        &[
            "sensors",
            "--model",
            model.to_str().unwrap(),
            "--table",
            "sensor_readings",
        ],
    );
    assert_exit(&out, 0);
    let text = job_file(&p, "sensors");
    assert!(text.contains("key = \"reading_id\""), "{text}");
    assert!(text.contains("timestamp = \"recorded_at\""), "{text}");
    // No index on the timestamp: the line says so.
    assert!(text.contains("index it"), "{text}");
    // The single [N, 4] input takes the four feature columns, in table order.
    assert!(
        text.contains("features = [\"temperature\", \"vibration\", \"pressure\", \"rpm\"]"),
        "{text}"
    );
    // Every output, every column of the 2-D one.
    for line in [
        "label = \"label\"",
        "probabilities_0 = \"probabilities[0]\"",
        "probabilities_1 = \"probabilities[1]\"",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(text.matches("check:").count() >= 5, "{text}");
    assert_exit(&p.batchscore(&["jobs", "validate", "sensors"]), 0);
    assert_exit(&p.batchscore(&["run-job", "sensors", "--at", &at(21)]), 0);
    // The proposed window, 30 minutes with 2 of lateness: [t0 - 11m, t0 + 19m), 1,900 rows.
    assert_eq!(
        p.count("SELECT count(*) FROM sensors_predictions").await,
        1900
    );

    // It does not overwrite a job file, unless told to.
    let out = jobs_new(
        &p,
        &[
            "sensors",
            "--model",
            model.to_str().unwrap(),
            "--table",
            "sensor_readings",
        ],
    );
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = jobs_new(
        &p,
        &[
            "sensors",
            "--model",
            model.to_str().unwrap(),
            "--table",
            "sensor_readings",
            "--force",
        ],
    );
    assert_exit(&out, 0);

    // A query has no primary key: the key is a choice the file asks to confirm.
    let query = "SELECT reading_id, recorded_at, temperature, vibration, pressure, rpm FROM sensor_readings";
    let out = jobs_new(
        &p,
        &[
            "from_query",
            "--model",
            model.to_str().unwrap(),
            "--query",
            query,
        ],
    );
    assert_exit(&out, 0);
    let text = job_file(&p, "from_query");
    assert!(text.contains("key = \"reading_id\""), "{text}");
    assert!(text.contains("no primary key was found"), "{text}");
    assert_exit(&p.batchscore(&["jobs", "validate", "from_query"]), 0);
}

on_all_databases!(a_new_job_from_a_model_and_a_table_validates_and_runs);

async fn a_per_column_pipeline_is_matched_by_name(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.execute(match kind {
        Kind::Sqlite => {
            "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, updated_at TEXT NOT NULL, \
             note TEXT, region TEXT, amount REAL, items INTEGER)"
        }
        Kind::Postgres => {
            "CREATE TABLE customers (customer_id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, \
             note text, region text, amount double precision, items integer)"
        }
        Kind::Mysql => {
            "CREATE TABLE customers (customer_id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, \
             note TEXT, region TEXT, amount DOUBLE, items INT)"
        }
    })
    .await;
    p.execute("CREATE INDEX customers_updated_at ON customers (updated_at)")
        .await;
    let at = |minute| {
        p.kind
            .time_literal(t0() + chrono::TimeDelta::minutes(minute))
    };
    p.execute(&format!(
        "INSERT INTO customers VALUES (1, {}, 'a', 'east', 12.5, 3), (2, {}, 'b', 'north', 80.0, 11)",
        at(1),
        at(2)
    ))
    .await;
    let model = format!("{REPO}/tests/fixtures/churn_zipmap.onnx");
    let out = jobs_new(&p, &["churn", "--model", &model, "--table", "customers"]);
    assert_exit(&out, 0);
    let text = job_file(&p, "churn");
    assert!(text.contains("key = \"customer_id\""), "{text}");
    assert!(text.contains("timestamp = \"updated_at\""), "{text}");
    assert!(text.contains("it is indexed"), "{text}");
    assert!(
        text.contains("features = [\"region\", \"amount\", \"items\"]")
            && text.contains("matched to columns by name"),
        "{text}"
    );
    // The ZipMap's classes, read from the model file, one column each.
    for line in [
        "output_label = \"output_label\"",
        "output_probability_0 = \"output_probability[0]\"",
        "output_probability_1 = \"output_probability[1]\"",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let out = p.batchscore(&["jobs", "validate", "churn"]);
    assert_exit(&out, 0);
    let out = p.batchscore(&[
        "run-job",
        "churn",
        "--from",
        "2026-01-10T00:00:00Z",
        "--to",
        "2026-01-10T01:00:00Z",
    ]);
    assert_exit(&out, 0);
    assert_eq!(p.count("SELECT count(*) FROM churn_predictions").await, 2);
}

on_all_databases!(a_per_column_pipeline_is_matched_by_name);

#[tokio::test]
async fn the_demo_models_over_the_demo_tables_give_jobs_that_validate_and_run() {
    let p = Project::sqlite().await;
    // The quick start's tables, seeded by its own script: six hours up to now.
    let db = p.dir.path().join("test.db");
    let seeded = std::process::Command::new("python3")
        .arg(format!("{REPO}/scripts/seed-demo.py"))
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    for (name, model, table) in [
        ("failures", "machine_failure", "sensor_readings"),
        ("etas", "delivery_eta", "orders"),
    ] {
        let model = model_path(model);
        let out = jobs_new(
            &p,
            &[name, "--model", model.to_str().unwrap(), "--table", table],
        );
        assert_exit(&out, 0);
        assert_exit(&p.batchscore(&["jobs", "validate", name]), 0);
        let out = p.batchscore(&["run-job", name]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("scored"), "{}", stdout(&out));
    }
    // The machine_failure model's four inputs are the readings, not the machine's id.
    let text = job_file(&p, "failures");
    assert!(
        text.contains("features = [\"temperature\", \"vibration\", \"pressure\", \"rpm\"]"),
        "{text}"
    );
    assert!(text.contains("the others: machine_id"), "{text}");
    // The delivery model's inputs are named after the orders' columns, the text `zone` too.
    let text = job_file(&p, "etas");
    assert!(text.contains("key = \"order_id\""), "{text}");
    assert!(text.contains("timestamp = \"placed_at\""), "{text}");
    assert!(text.contains("matched to columns by name"), "{text}");
    assert!(text.contains("\"zone\""), "{text}");
}
