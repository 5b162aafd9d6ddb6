//! A challenger on live windows: it scores the same rows as the job's model, in the same
//! transaction, into a table of its own; `compare` sets the two side by side; and a challenger
//! that breaks never costs the job its window.

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

use super::*;
use crate::scoring::{TimeForm, seed_sensor_readings};

fn challenger_section(model: &str) -> String {
    format!("[challenger]\npath = \"{model}\"\n")
}

/// `(challenger_sha256, challenger_error)` of each succeeded ledger row, oldest window first.
async fn ledger_challengers(p: &Project) -> Vec<(Option<String>, Option<String>)> {
    use sqlx::Row;
    sqlx::query(
        "SELECT challenger_sha256, challenger_error FROM batchscore_runs \
         WHERE status = 'succeeded' ORDER BY window_start",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The figures `compare` must give, computed by pandas from the rows both tables hold (read
/// back from the database): the reference `compare --json` is checked against.
const COMPARE: &str = r#"
import json, sys
import numpy as np
import pandas as pd
tables = json.load(sys.stdin)
def frame(rows, name):
    return pd.DataFrame(rows, columns=["key", name]).set_index("key")
both = frame(tables["model_p"], "a").join(frame(tables["challenger_p"], "b"), how="inner")
labels = frame(tables["model_l"], "la").join(frame(tables["challenger_l"], "lb"), how="inner")
a, b = both["a"].to_numpy(), both["b"].to_numpy()
edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 11)
ca = np.maximum(np.histogram(a, bins=edges)[0] / len(a), 1e-4)
cb = np.maximum(np.histogram(b, bins=edges)[0] / len(b), 1e-4)
la = labels["la"].astype("int64").astype(str)
lb = labels["lb"].astype("int64").astype(str)
confusion = pd.crosstab(la, lb)
print(json.dumps({
    "probability": {
        "rows": len(both),
        "mean_abs_diff": float((both["a"] - both["b"]).abs().mean()),
        "max_abs_diff": float((both["a"] - both["b"]).abs().max()),
        "correlation": float(both["a"].corr(both["b"])),
        "psi": float(np.sum((cb - ca) * np.log(cb / ca))),
    },
    "label": {
        "rows": len(labels),
        "agreement": float((la == lb).mean()),
        "confusion": {x: {y: int(n) for y, n in row.items() if n} for x, row in confusion.iterrows()},
    },
}))
"#;

async fn pandas_reference(p: &Project) -> Value {
    let python = format!("{REPO}/.venv-mlflow/bin/python");
    if !std::path::Path::new(&python).exists() {
        return Value::Null;
    }
    let mut tables = serde_json::Map::new();
    for (name, table, column) in [
        ("model_p", "predictions", "failure_probability"),
        (
            "challenger_p",
            "predictions_challenger",
            "failure_probability",
        ),
        ("model_l", "predictions", "failure_label"),
        ("challenger_l", "predictions_challenger", "failure_label"),
    ] {
        tables.insert(
            name.into(),
            json!(p.results(table, "reading_id", column).await),
        );
    }
    python_json(&python, COMPARE, &Value::Object(tables))
}

fn assert_close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((g - w).abs() < 1e-6, "{what}: {g} vs numpy's {w}");
}

async fn a_challenger_scores_the_same_windows_into_its_own_table(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let challenger = onnx(CHALLENGER);
    p.write_job(
        "job",
        &sensor_job(
            &format!("path = \"{}\"", onnx(CHAMPION)),
            &challenger_section(&challenger),
        ),
    );
    let validated = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validated, 0);
    assert!(
        stdout(&validated).contains("challenger"),
        "{}",
        stdout(&validated)
    );
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );

    // Both tables hold windows 0–2, each model's rows as ONNX Runtime's Python API scores them.
    assert_scored(&p, "predictions", &[(0..3, CHAMPION)]).await;
    assert_scored(&p, "predictions_challenger", &[(0..3, CHALLENGER)]).await;
    let sha = file_sha256(&challenger);
    assert_eq!(
        ledger_challengers(&p).await,
        vec![(Some(sha.clone()), None); 3],
        "every window records the challenger that scored it"
    );
    // Its outputs are profiled beside the model's, for drift.
    let profiled = p
        .count("SELECT COUNT(DISTINCT column_name) FROM batchscore_profiles WHERE column_name LIKE 'challenger:%'")
        .await;
    assert_eq!(
        profiled, 2,
        "challenger:failure_label and challenger:failure_probability"
    );

    // `compare` against pandas on the same rows.
    let out = p.batchscore(&["compare", "job", "--json"]);
    assert_exit(&out, 0);
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let want = pandas_reference(&p).await;
    if want.is_null() {
        // The virtualenv with pandas is missing: only where CI is unset (support/mlflow.rs).
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no .venv-mlflow under CI"
        );
        return;
    }
    assert_eq!(got["windows"], 3);
    assert_eq!(got["challengers"], json!([sha]));
    assert_eq!(got["models"], json!([file_sha256(&onnx(CHAMPION))]));
    let column = |name: &str| {
        got["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["column"] == name)
            .unwrap_or_else(|| panic!("no {name} in {got}"))
            .clone()
    };
    let probability = column("failure_probability");
    assert_eq!(probability["rows"], 120);
    for figure in ["mean_abs_diff", "max_abs_diff", "correlation", "psi"] {
        assert_close(&probability[figure], &want["probability"][figure], figure);
    }
    let label = column("failure_label");
    assert_eq!(label["rows"], 120);
    assert_close(
        &label["agreement"],
        &want["label"]["agreement"],
        "agreement",
    );
    assert_eq!(label["confusion"], want["label"]["confusion"]);

    // `models` lists the challenger beside the model.
    let models = models_json(&p, "job");
    let roles: Vec<(&str, &str)> = models
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["sha256"].as_str().unwrap()))
        .collect();
    assert!(roles.contains(&("challenger", sha.as_str())), "{models:?}");
}

on_all_databases!(a_challenger_scores_the_same_windows_into_its_own_table);

/// Make inserting `reading_id = key` into `table` fail, as a constraint the application added.
async fn refuse_key(p: &Project, table: &str, key: i64) {
    match p.kind {
        Kind::Sqlite => {
            p.execute(&format!(
                "CREATE TRIGGER refuse_{key} BEFORE INSERT ON {table} WHEN NEW.reading_id = {key} \
                 BEGIN SELECT RAISE(ABORT, 'refused by the application'); END"
            ))
            .await
        }
        _ => {
            p.execute(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT refuse_{key} CHECK (reading_id <> {key})"
            ))
            .await
        }
    }
}

async fn allow_key(p: &Project, table: &str, key: i64) {
    match p.kind {
        Kind::Sqlite => p.execute(&format!("DROP TRIGGER refuse_{key}")).await,
        _ => {
            p.execute(&format!("ALTER TABLE {table} DROP CONSTRAINT refuse_{key}"))
                .await
        }
    }
}

async fn a_failed_window_writes_neither_table(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    p.write_job(
        "job",
        &sensor_job(
            &format!("path = \"{}\"", onnx(CHAMPION)),
            &challenger_section(&onnx(CHALLENGER)),
        ),
    );
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(0)]),
        0,
    );
    // The last row of window 1 cannot be written: the window's first chunk (25 rows) is already
    // in both tables by then, inside the window's transaction.
    refuse_key(&p, "predictions", 1079).await;
    let failed = p.batchscore(&["run-job", "job", "--at", &after_window(1)]);
    assert_ne!(failed.status.code(), Some(0), "{}", stderr(&failed));
    assert_scored(&p, "predictions", &[(0..1, CHAMPION)]).await;
    assert_scored(&p, "predictions_challenger", &[(0..1, CHALLENGER)]).await;

    allow_key(&p, "predictions", 1079).await;
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );
    assert_scored(&p, "predictions", &[(0..3, CHAMPION)]).await;
    assert_scored(&p, "predictions_challenger", &[(0..3, CHALLENGER)]).await;
}

on_all_databases!(a_failed_window_writes_neither_table);

#[tokio::test]
async fn a_broken_challenger_never_costs_the_job_its_window() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let broken = p.dir.path().join("broken.onnx");
    std::fs::File::create(&broken)
        .unwrap()
        .write_all(b"not an onnx model")
        .unwrap();
    p.write_job(
        "job",
        &sensor_job(
            &format!("path = \"{}\"", onnx(CHAMPION)),
            &challenger_section(&broken.display().to_string()),
        ),
    );
    // Validation refuses it, naming the challenger and its file.
    let validated = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validated, 2);
    let said = stderr(&validated) + &stdout(&validated);
    assert!(
        said.contains("challenger") && said.contains("broken.onnx"),
        "{said}"
    );

    // A run scores with the model, and records why the challenger did not.
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(1)]),
        0,
    );
    assert_scored(&p, "predictions", &[(0..2, CHAMPION)]).await;
    let challengers = ledger_challengers(&p).await;
    assert_eq!(challengers.len(), 2);
    for (sha, error) in &challengers {
        assert_eq!(sha, &None);
        let error = error.as_deref().unwrap_or_default();
        assert!(error.contains("broken.onnx"), "challenger_error: {error}");
    }
    if p.table_exists("predictions_challenger").await {
        assert_eq!(
            p.count("SELECT COUNT(*) FROM predictions_challenger").await,
            0
        );
    }

    // A challenger whose inputs are not the model's is refused before any row is read.
    p.write_job(
        "job",
        &sensor_job(
            &format!("path = \"{}\"", onnx(CHAMPION)),
            &challenger_section(&model_path("delivery_eta").display().to_string()),
        ),
    );
    let validated = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validated, 2);
    let said = stderr(&validated) + &stdout(&validated);
    assert!(said.contains("challenger"), "{said}");
}

/// Keys in `table` whose window the ledger does not say succeeded, and keys in only one of the
/// two tables: both must be none after any kill.
async fn orphans(p: &Project) -> (i64, i64) {
    let uncommitted = p
        .count(
            "SELECT COUNT(*) FROM predictions_challenger c WHERE NOT EXISTS (SELECT 1 FROM batchscore_runs r \
             WHERE r.status = 'succeeded' AND r.id = c.batchscore_run)",
        )
        .await;
    let unpaired = p
        .count(
            "SELECT (SELECT COUNT(*) FROM predictions m WHERE NOT EXISTS \
             (SELECT 1 FROM predictions_challenger c WHERE c.reading_id = m.reading_id)) \
             + (SELECT COUNT(*) FROM predictions_challenger c WHERE NOT EXISTS \
             (SELECT 1 FROM predictions m WHERE m.reading_id = c.reading_id))",
        )
        .await;
    (uncommitted, unpaired)
}

async fn a_run_killed_mid_window_leaves_neither_table_written(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // Thirty 20-minute windows of 2,000 rows, in chunks of 50: a window is many chunks, so a
    // kill lands inside one.
    p.seed_synthetic(60_000).await;
    let job = sensor_job(
        &format!("path = \"{}\"", onnx(CHAMPION)),
        &challenger_section(&onnx(CHALLENGER)),
    )
    .replace("chunk_rows = 25", "chunk_rows = 50");
    p.write_job("job", &job);
    start_at_t0(&p, "job");
    let at = after_window(29);
    let mut killed_mid_run = 0;
    for round in 0..3 {
        let mut child = p
            .command(&["run-job", "job", "--at", &at])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it once some window (this round's first) is committed and more are under way.
        let committed = p
            .count("SELECT COUNT(*) FROM batchscore_runs WHERE status = 'succeeded'")
            .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            let now = p
                .count("SELECT COUNT(*) FROM batchscore_runs WHERE status = 'succeeded'")
                .await;
            if now > committed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Into the next window: its first chunks are written by now, inside its transaction.
        tokio::time::sleep(std::time::Duration::from_millis(20 + 15 * round)).await;
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_eq!(
            orphans(&p).await,
            (0, 0),
            "round {round}: a half-written window"
        );
        let windows = p
            .count("SELECT COUNT(*) FROM batchscore_runs WHERE status = 'succeeded'")
            .await;
        for table in ["predictions", "predictions_challenger"] {
            let rows = p.count(&format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(
                rows,
                windows * 2000,
                "round {round}: {table} holds whole windows"
            );
        }
    }
    assert!(killed_mid_run >= 1, "no kill landed inside a run");
    // The next run finishes what the killed ones left, in both tables.
    let mut code = None;
    for _ in 0..10 {
        code = p.batchscore(&["run-job", "job", "--at", &at]).status.code();
        if code == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(code, Some(0));
    for table in ["predictions", "predictions_challenger"] {
        assert_eq!(
            p.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            60_000
        );
    }
    assert_eq!(orphans(&p).await, (0, 0));
}

on_all_databases!(a_run_killed_mid_window_leaves_neither_table_written);

async fn a_challenger_failing_mid_window_leaves_the_window_to_the_model(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    // Window 1 holds 39 rows: in chunks of 24, its second chunk has 15, and this challenger
    // fails on an odd number of rows, after its first chunk's rows were written.
    p.execute("DELETE FROM sensor_readings WHERE reading_id = 1079")
        .await;
    let job = sensor_job(
        &format!("path = \"{}\"", onnx(CHAMPION)),
        &challenger_section(&format!("{REPO}/tests/fixtures/fails_on_odd_chunks.onnx")),
    )
    .replace("chunk_rows = 25", "chunk_rows = 24");
    p.write_job("job", &job);
    assert_exit(&p.batchscore(&["jobs", "validate", "job"]), 0);
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );

    // The model's rows: every window, checked against ONNX Runtime's Python API.
    let fixture = Fixture::load(CHAMPION);
    let scored = p
        .results("predictions", "reading_id", "failure_probability")
        .await;
    assert_eq!(scored.len(), 119);
    for (key, probability) in &scored {
        let row = key.parse::<usize>().unwrap() - 1000;
        assert!((probability - fixture.output(row, "probabilities", 1)).abs() < 1e-5);
    }
    // The challenger's: windows 0 and 2 whole, none of window 1 (its first chunk taken back).
    let challenged = p
        .results(
            "predictions_challenger",
            "reading_id",
            "failure_probability",
        )
        .await;
    let keys: Vec<usize> = challenged.iter().map(|(k, _)| k.parse().unwrap()).collect();
    let want: Vec<usize> = (1000..1040).chain(1080..1120).collect();
    assert_eq!(keys, want);
    let challengers = ledger_challengers(&p).await;
    assert_eq!(challengers[0].1, None);
    assert_eq!(challengers[2].1, None);
    let error = challengers[1].1.as_deref().unwrap_or_default();
    assert!(
        error.contains("Reshape"),
        "window 1's challenger_error: {error}"
    );
}

on_all_databases!(a_challenger_failing_mid_window_leaves_the_window_to_the_model);

#[tokio::test]
async fn the_daemon_exports_how_the_challenger_agrees() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    // Rows in windows 0–2 only: window 2 (rows 80–119) is the latest with rows.
    p.execute("DELETE FROM sensor_readings WHERE reading_id >= 1120")
        .await;
    let job = sensor_job(
        &format!("path = \"{}\"", onnx(CHAMPION)),
        &challenger_section(&onnx(CHALLENGER)),
    )
    .replace("schedule = \"*/20 * * * *\"", "schedule = \"* * * * * *\"");
    p.write_job("job", &job);
    start_at_t0(&p, "job");
    let label = "column=\"failure_label\"";
    let number = "column=\"failure_probability\"";
    let figures = |body: &str| {
        (
            sample(body, "batchscore_challenger_agreement", label),
            sample(body, "batchscore_challenger_mean_abs_diff", number),
        )
    };
    let body = daemon_metrics(p.command(&[]), 60, |body| {
        let (a, b) = figures(body);
        a.is_some() && b.is_some()
    });
    let seen = figures(&body);

    // Window 2's figures, from ONNX Runtime's outputs for its rows.
    let (model, challenger) = (Fixture::load(CHAMPION), Fixture::load(CHALLENGER));
    let rows = 80..120;
    let agree = rows
        .clone()
        .filter(|&i| model.output(i, "label", 0) == challenger.output(i, "label", 0))
        .count() as f64
        / 40.0;
    let diff = rows
        .map(|i| {
            (model.output(i, "probabilities", 1) - challenger.output(i, "probabilities", 1)).abs()
        })
        .sum::<f64>()
        / 40.0;
    let (Some(got_agree), Some(got_diff)) = seen else {
        panic!("the daemon did not export the challenger's figures: {seen:?}");
    };
    assert!(
        (got_agree - agree).abs() < 1e-9,
        "agreement {got_agree} vs {agree}"
    );
    assert!(
        (got_diff - diff).abs() < 1e-5,
        "mean abs diff {got_diff} vs {diff}"
    );
}
