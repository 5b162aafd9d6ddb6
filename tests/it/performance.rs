//! Realized performance: a job's committed windows joined with the labels the application
//! records later (`[labels]`), judged per model and stored in `batchscore_performance`.
//!
//! Every figure is checked against scikit-learn (`roc_auc_score`, `log_loss`,
//! `brier_score_loss`, `precision_recall_fscore_support`, `calibration_curve`,
//! `mean_absolute_error`, `r2_score`, …) on the same rows, joined and de-duplicated by pandas
//! from the tables the test wrote, to 1e-9: a third of the keys unlabelled, NULL labels, keys
//! labelled twice (the later label wins, whichever order they were inserted in), and labels of
//! keys never scored.

use std::process::Stdio;

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::lifecycle::{CHALLENGER, CHAMPION, after_window, onnx, sensor_job, start_at_t0};
use crate::scoring::{TimeForm, seed_sensor_readings};
use crate::support::*;

/// The figures scikit-learn gives for the rows of each run, per model: `{model: {run_id:
/// {metric: value}}}`, and `unscored_labels`.
const SKLEARN: &str = r#"
import json, sys
import numpy as np
import pandas as pd
from sklearn import metrics as m
from sklearn.calibration import calibration_curve

data = json.load(sys.stdin)
raw = pd.DataFrame(data["labels"], columns=["key", "label", "ts"])
labels = raw.dropna(subset=["label"]).sort_values("ts", kind="stable").drop_duplicates("key", keep="last")
out = {}
for model, rows in data["models"].items():
    pred = pd.DataFrame(rows, columns=["key", "run_id", "score", "predicted"])
    joined = pred.merge(labels, on="key", how="inner")
    for run_id, w in joined.groupby("run_id"):
        scored = int((pred["run_id"] == run_id).sum())
        f = {"labelled": len(w), "coverage": len(w) / scored, "scored": scored}
        s = w["score"].to_numpy(float)
        if data["task"] == "classification":
            y = (w["label"] == data["positive"]).astype(int).to_numpy()
            yp = (w["predicted"] == data["positive"]).astype(int).to_numpy()
            f["positive_rate"] = y.mean()
            f["auc"] = m.roc_auc_score(y, s)
            f["log_loss"] = m.log_loss(y, s, labels=[0, 1])
            f["brier"] = m.brier_score_loss(y, s)
            f["accuracy"] = m.accuracy_score(y, yp)
            p, r, f1, _ = m.precision_recall_fscore_support(y, yp, average="binary", zero_division=0)
            f.update(precision=p, recall=r, f1=f1)
            prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
            f["calibration"] = [[float(a), float(b)] for a, b in zip(prob_true, prob_pred)]
        else:
            y = w["label"].to_numpy(float)
            f["mae"] = m.mean_absolute_error(y, s)
            f["rmse"] = m.root_mean_squared_error(y, s)
            f["bias"] = float(np.mean(s - y))
            f["r2"] = m.r2_score(y, s)
        out.setdefault(model, {})[run_id] = {k: (v if isinstance(v, list) else float(v)) for k, v in f.items()}
scored_keys = set(pd.DataFrame(data["models"]["champion"], columns=["key", "run_id", "score", "predicted"])["key"])
present = raw.dropna(subset=["label"])
out["unscored_labels"] = int((~present["key"].isin(scored_keys)).sum())
print(json.dumps(out))
"#;

/// A label the test wrote: (key, label or NULL, when it became known, in seconds after t0).
type Label = (String, Option<f64>, i64);

/// Run the scikit-learn reference on `models` (per model: key, run id, score, predicted) and
/// `labels`; `None` where the virtualenv with scikit-learn is missing (never under CI).
fn sklearn(task: &str, models: Value, labels: &[Label]) -> Option<Value> {
    let python = format!("{REPO}/.venv-mlflow/bin/python");
    if !std::path::Path::new(&python).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no .venv-mlflow under CI: scripts/install-mlflow.sh installs it"
        );
        return None;
    }
    let input = json!({
        "task": task,
        "positive": 1,
        "models": models,
        "labels": labels.iter().map(|(k, l, t)| json!([k, l, t])).collect::<Vec<_>>(),
    });
    Some(python_json(&python, SKLEARN, &input))
}

/// `(key, run_id, score, predicted)` of every row of a results table.
async fn scored_rows(
    p: &Project,
    table: &str,
    key: &str,
    score: &str,
    predicted: Option<&str>,
) -> Value {
    use sqlx::Row;
    let (text, double) = match p.kind {
        Kind::Mysql => ("CHAR", "DOUBLE"),
        _ => ("TEXT", "DOUBLE PRECISION"),
    };
    let predicted = predicted.map_or("NULL".to_owned(), |c| format!("CAST(t.{c} AS {double})"));
    let sql = format!(
        "SELECT CAST(t.{key} AS {text}), r.run_id, CAST(t.{score} AS {double}), {predicted} \
         FROM {table} t JOIN batchscore_runs r ON r.id = t.batchscore_run"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap();
    Value::Array(
        rows.iter()
            .map(|r| {
                json!([
                    r.get::<String, _>(0),
                    r.get::<String, _>(1),
                    r.get::<f64, _>(2),
                    r.get::<Option<f64>, _>(3)
                ])
            })
            .collect(),
    )
}

/// Create `table` (key, label, known_at; no primary key: a key may be labelled twice) and
/// insert `labels`.
async fn seed_labels(p: &Project, table: &str, label_type: &str, labels: &[Label]) {
    let ts = p.kind.time_type();
    p.execute(&format!(
        "CREATE TABLE {table} (reading_id BIGINT NOT NULL, failed {label_type}, known_at {ts} NOT NULL)"
    ))
    .await;
    insert_labels(p, table, labels).await;
}

async fn insert_labels(p: &Project, table: &str, labels: &[Label]) {
    if labels.is_empty() {
        return;
    }
    let values: Vec<String> = labels
        .iter()
        .map(|(key, label, at)| {
            format!(
                "({key}, {}, {})",
                label.map_or("NULL".to_owned(), |l| l.to_string()),
                p.kind.time_literal(t0() + TimeDelta::seconds(*at))
            )
        })
        .collect();
    p.execute(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
        .await;
}

/// The sensor fixture's labels: rows `rows` whose `i % 3 != 2` are labelled (a third missing),
/// failed when `i * 7 % 10 < 3`; every 11th a NULL label; every 13th labelled again later with
/// the other class (the later one counts), every 17th labelled again *earlier* with the other
/// class (inserted after, it still loses); and six keys that were never scored.
fn sensor_labels(rows: std::ops::Range<usize>) -> Vec<Label> {
    let mut labels = Vec::new();
    for i in rows {
        if i % 3 == 2 {
            continue;
        }
        let key = (1000 + i).to_string();
        let at = 30 * i as i64 + 3600;
        if i % 11 == 0 {
            labels.push((key, None, at));
            continue;
        }
        let failed = f64::from(u8::from(i * 7 % 10 < 3));
        labels.push((key.clone(), Some(failed), at));
        if i % 13 == 0 {
            labels.push((key.clone(), Some(1.0 - failed), at + 60));
        }
        if i % 17 == 0 {
            labels.push((key, Some(1.0 - failed), at - 60));
        }
    }
    for key in 9000..9006 {
        labels.push((key.to_string(), Some(1.0), 0));
    }
    labels
}

fn labels_section(extra: &str) -> String {
    format!(
        r#"
[labels]
table = "failures"
key = "reading_id"
label = "failed"
timestamp = "known_at"
maturity = "1h"
score = "failure_probability"
predicted = "failure_label"
positive = 1
{extra}"#
    )
}

/// `evaluate --json`, parsed.
fn evaluate(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["evaluate", "job", "--json"];
    all.extend(args);
    let out = p.batchscore(&all);
    assert_exit(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn assert_close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64(), want.as_f64());
    let (Some(g), Some(w)) = (g, w) else {
        panic!("{what}: {got} vs scikit-learn's {want}");
    };
    assert!(
        (g - w).abs() <= 1e-9 * w.abs().max(1.0),
        "{what}: {g} vs scikit-learn's {w}"
    );
}

/// Each of `evaluated`'s windows for `model` against scikit-learn's figures for its run.
fn assert_matches_sklearn(evaluated: &Value, model: &str, want: &Value, metrics: &[&str]) -> usize {
    let mut windows = 0;
    for w in evaluated["windows"].as_array().unwrap() {
        if w["model"] != model {
            continue;
        }
        windows += 1;
        let run = w["run_id"].as_str().unwrap();
        let want = &want[model][run];
        assert!(
            !want.is_null(),
            "scikit-learn has no rows for {model} run {run}"
        );
        let figure = |metric: &str| {
            w["figures"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["metric"] == metric)
                .unwrap_or_else(|| panic!("no {metric} in {w}"))
                .clone()
        };
        for metric in metrics {
            let what = format!("{model} window {} {metric}", w["window_start"]);
            assert_close(&figure(metric)["value"], &want[metric], &what);
        }
        if let Some(curve) = want["calibration"].as_array() {
            let bins = figure("calibration_error")["detail"].clone();
            let bins = bins.as_array().unwrap();
            assert_eq!(
                bins.len(),
                curve.len(),
                "calibration bins: {bins:?} vs {curve:?}"
            );
            for (bin, point) in bins.iter().zip(curve) {
                assert_close(&bin["fraction_positive"], &point[0], "calibration fraction");
                assert_close(&bin["mean_score"], &point[1], "calibration mean score");
            }
        }
    }
    windows
}

const CLASSIFICATION: [&str; 12] = [
    "labelled",
    "coverage",
    "scored",
    "positive_rate",
    "auc",
    "log_loss",
    "brier",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "labelled",
];

/// The classifier's figures, window by window, equal scikit-learn's; labels arriving late
/// change them, and evaluating again with nothing new changes nothing.
async fn classifier_figures_match_scikit_learn(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let mut labels = sensor_labels(0..200);
    // Window 0's unlabelled thirds arrive late, after the first evaluation.
    let late: Vec<Label> = (0..40)
        .filter(|i| i % 3 == 2)
        .map(|i| {
            (
                (1000 + i).to_string(),
                Some(f64::from(u8::from(i % 2 == 0))),
                7200,
            )
        })
        .collect();
    seed_labels(&p, "failures", "integer", &labels).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job("job", &sensor_job(&champion, &labels_section("")));
    let validated = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validated, 0);
    assert!(
        stdout(&validated).contains("labels from failures"),
        "{}",
        stdout(&validated)
    );

    // run-job scores windows 0–3, then evaluates them: their maturity passed long ago.
    start_at_t0(&p, "job");
    let ran = p.batchscore(&["run-job", "job", "--at", &after_window(3)]);
    assert_exit(&ran, 0);
    assert!(
        stdout(&ran).contains("evaluated 4 window(s) against its labels"),
        "{}",
        stdout(&ran)
    );

    // `evaluate` recomputes them: the same figures, so nothing changes.
    let first = evaluate(&p, &[]);
    assert_eq!(first["changed"], 0, "run-job stored these figures already");
    let windows = first["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 4);
    assert!(windows.iter().all(|w| w["status"] == "final"), "{first}");
    let rows = scored_rows(
        &p,
        "predictions",
        "reading_id",
        "failure_probability",
        Some("failure_label"),
    )
    .await;
    let Some(want) = sklearn("classification", json!({ "champion": rows }), &labels) else {
        return;
    };
    assert_eq!(
        assert_matches_sklearn(&first, "champion", &want, &CLASSIFICATION),
        4
    );
    assert_eq!(first["unscored_labels"], want["unscored_labels"]);
    let duplicates: f64 = windows
        .iter()
        .flat_map(|w| w["figures"].as_array().unwrap())
        .filter(|f| f["metric"] == "duplicate_labels")
        .map(|f| f["value"].as_f64().unwrap())
        .sum();
    assert!(
        duplicates >= 10.0,
        "keys labelled twice are counted: {duplicates}"
    );

    // Late labels: window 0's figures change to what scikit-learn makes of the new labels.
    insert_labels(&p, "failures", &late).await;
    labels.extend(late);
    let second = evaluate(&p, &[]);
    assert!(second["changed"].as_u64().unwrap() > 0, "{second}");
    let want = sklearn("classification", json!({ "champion": rows }), &labels).unwrap();
    assert_matches_sklearn(&second, "champion", &want, &CLASSIFICATION);
    let coverage = |v: &Value, start: &str| {
        v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["window_start"] == start)
            .unwrap()["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["metric"] == "coverage")
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let start = rfc3339(t0());
    assert!(coverage(&second, &start) > coverage(&first, &start));
    // The stored figures are the new ones.
    let stored = p
        .count(&format!(
            "SELECT CAST(value AS {}) FROM batchscore_performance WHERE metric = 'labelled' \
             AND model = 'champion' ORDER BY window_start LIMIT 1",
            match p.kind {
                Kind::Mysql => "SIGNED",
                _ => "BIGINT",
            }
        ))
        .await;
    assert_eq!(
        stored as f64,
        want["champion"][first["windows"][0]["run_id"].as_str().unwrap()]["labelled"]
            .as_f64()
            .unwrap()
    );
    // And evaluating again changes nothing.
    assert_eq!(evaluate(&p, &[])["changed"], 0);

    // --from/--to evaluate only the windows inside.
    let one = evaluate(
        &p,
        &[
            "--from",
            &rfc3339(t0() + TimeDelta::minutes(20)),
            "--to",
            &rfc3339(t0() + TimeDelta::minutes(40)),
        ],
    );
    assert_eq!(one["windows"].as_array().unwrap().len(), 1, "{one}");

    // `monitor` and `status` show the latest final window's figures.
    let monitor = p.batchscore(&["monitor", "job", "--json"]);
    let monitor: Value = serde_json::from_str(&stdout(&monitor)).unwrap();
    let auc = monitor["performance"]["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["model"] == "champion" && f["metric"] == "auc")
        .unwrap()
        .clone();
    let last_run = windows[3]["run_id"].as_str().unwrap();
    assert_close(
        &auc["latest"],
        &want["champion"][last_run]["auc"],
        "monitor's latest AUC",
    );
    assert!(auc["rolling_7d"].as_f64().is_some());
    let status = p.batchscore(&["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout(&status)).unwrap();
    let job = status
        .as_array()
        .map_or(&status["jobs"][0], |a| &a[0])
        .clone();
    assert_eq!(job["metric"]["name"], "auc", "{status}");
    assert_close(
        &job["metric"]["value"],
        &want["champion"][last_run]["auc"],
        "status's AUC",
    );
    let text = stdout(&p.batchscore(&["status"]));
    assert!(text.contains("METRIC") && text.contains("AUC 0."), "{text}");
}
on_all_databases!(classifier_figures_match_scikit_learn);

/// The same labels kept as integers, as text and as booleans give the same figures: PostgreSQL
/// reads an integer column's labels as integers, the rest as text.
async fn labels_of_any_column_type_are_judged_alike(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let labels = sensor_labels(0..200);
    let text = match kind {
        Kind::Mysql => "VARCHAR(8)",
        _ => "TEXT",
    };
    let boolean = match kind {
        Kind::Sqlite => "INTEGER",
        _ => "BOOLEAN",
    };
    seed_labels(&p, "failures", "integer", &labels).await;
    seed_labels(&p, "failures_text", text, &labels).await;
    seed_labels(&p, "failures_bool", "integer", &labels).await;
    if kind == Kind::Postgres {
        p.execute("ALTER TABLE failures_bool ALTER COLUMN failed TYPE BOOLEAN USING failed <> 0")
            .await;
    } else if kind == Kind::Mysql {
        p.execute(&format!(
            "ALTER TABLE failures_bool MODIFY failed {boolean}"
        ))
        .await;
    }
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job("job", &sensor_job(&champion, &labels_section("")));
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(3)]),
        0,
    );
    let figures = |evaluated: &Value| -> Vec<(String, String, Value)> {
        let mut all = Vec::new();
        for w in evaluated["windows"].as_array().unwrap() {
            for f in w["figures"].as_array().unwrap() {
                all.push((
                    w["window_start"].to_string(),
                    f["metric"].to_string(),
                    f["value"].clone(),
                ));
            }
        }
        all
    };
    let as_integers = evaluate(&p, &[]);
    assert_eq!(as_integers["windows"].as_array().unwrap().len(), 4);
    let auc = figures(&as_integers)
        .into_iter()
        .filter(|(_, metric, _)| metric == "\"auc\"")
        .count();
    assert_eq!(auc, 4, "{as_integers}");
    for table in ["failures_text", "failures_bool"] {
        let section =
            labels_section("").replace("table = \"failures\"", &format!("table = \"{table}\""));
        p.write_job("job", &sensor_job(&champion, &section));
        let again = evaluate(&p, &[]);
        assert_eq!(figures(&again), figures(&as_integers), "labels in {table}");
        assert_eq!(again["changed"], 0, "labels in {table}: {again}");
    }
}
on_all_databases!(labels_of_any_column_type_are_judged_alike);

/// The sensor readings and their labels, the champion's job, and its first window scored.
async fn first_window_scored(p: &Project) {
    seed_sensor_readings(p, TimeForm::usual(p.kind)).await;
    seed_labels(p, "failures", "integer", &sensor_labels(0..200)).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job("job", &sensor_job(&champion, &labels_section("")));
    start_at_t0(p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(0)]),
        0,
    );
}

/// The first evaluated window's labelled rows.
fn labelled(evaluated: &Value) -> f64 {
    evaluated["windows"][0]["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["metric"] == "labelled")
        .unwrap()["value"]
        .as_f64()
        .unwrap()
}

/// A labelled row whose score is NULL is not judged, and its label is still one of a scored
/// key: the count of labels of keys never scored does not move, whichever way it is counted
/// (PostgreSQL's join, SQLite's and MariaDB's counts).
async fn a_null_score_is_not_judged_and_its_label_is_matched(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    first_window_scored(&p).await;
    let before = evaluate(&p, &[]);
    // Key 1001 (i = 1) is labelled once, not NULL.
    p.execute("UPDATE predictions SET failure_probability = NULL WHERE reading_id = 1001")
        .await;
    let after = evaluate(&p, &[]);
    assert_eq!(labelled(&after), labelled(&before) - 1.0, "{after}");
    assert!(before["unscored_labels"].as_i64().unwrap() > 0, "{before}");
    assert_eq!(
        after["unscored_labels"], before["unscored_labels"],
        "{after}"
    );
}
on_all_databases!(a_null_score_is_not_judged_and_its_label_is_matched);

/// The child's output once it exits, failing (and killing it) if that takes longer than `limit`.
fn wait_within(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("it did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A NaN score (PostgreSQL keeps one; SQLite stores NULL, MySQL refuses it) is no score: the
/// row is not judged, and the evaluation ends. Its AUC once never did.
#[tokio::test]
async fn a_nan_score_is_not_judged() {
    let Some(p) = Project::new(Kind::Postgres).await else {
        return;
    };
    first_window_scored(&p).await;
    let before = evaluate(&p, &[]);
    p.execute("UPDATE predictions SET failure_probability = 'NaN' WHERE reading_id = 1001")
        .await;
    let mut evaluating = p.command(&["evaluate", "job", "--json"]);
    let child = evaluating.stdout(Stdio::piped()).spawn().unwrap();
    let out = wait_within(child, std::time::Duration::from_secs(60));
    assert_exit(&out, 0);
    let after: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(labelled(&after), labelled(&before) - 1.0, "{after}");
    assert_eq!(
        after["unscored_labels"], before["unscored_labels"],
        "{after}"
    );
}

/// With a challenger, both models are judged on the same labelled keys of the same windows.
async fn champion_and_challenger_are_judged_on_the_same_keys(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let labels = sensor_labels(0..240);
    seed_labels(&p, "failures", "integer", &labels).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    let challenger = format!("[challenger]\npath = \"{}\"\n", onnx(CHALLENGER));
    p.write_job(
        "job",
        &sensor_job(&champion, &format!("{challenger}{}", labels_section(""))),
    );
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );
    let evaluated = evaluate(&p, &[]);
    let windows = evaluated["windows"].as_array().unwrap();
    assert_eq!(
        windows.len(),
        6,
        "three windows, two models each: {evaluated}"
    );
    let labelled = |model: &str| -> Vec<Value> {
        windows
            .iter()
            .filter(|w| w["model"] == model)
            .map(|w| {
                w["figures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["metric"] == "labelled")
                    .unwrap()["value"]
                    .clone()
            })
            .collect()
    };
    assert_eq!(labelled("champion"), labelled("challenger"));
    let models = json!({
        "champion": scored_rows(&p, "predictions", "reading_id", "failure_probability", Some("failure_label")).await,
        "challenger": scored_rows(&p, "predictions_challenger", "reading_id", "failure_probability", Some("failure_label")).await,
    });
    let Some(want) = sklearn("classification", models, &labels) else {
        return;
    };
    assert_eq!(
        assert_matches_sklearn(&evaluated, "champion", &want, &CLASSIFICATION),
        3
    );
    assert_eq!(
        assert_matches_sklearn(&evaluated, "challenger", &want, &CLASSIFICATION),
        3
    );
    // The two models' AUCs differ: each is judged on its own scores.
    let auc = |model: &str| {
        windows.iter().find(|w| w["model"] == model).unwrap()["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["metric"] == "auc")
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert_ne!(auc("champion"), auc("challenger"));
}
on_all_databases!(champion_and_challenger_are_judged_on_the_same_keys);

/// A regressor's MAE, RMSE, bias and R² equal scikit-learn's; a third of its rows unlabelled.
async fn regressor_figures_match_scikit_learn(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let fixture = Fixture::load("float64_regressor");
    crate::models::seed_fixture(&p, "float64_regressor", "data").await;
    let labels: Vec<Label> = (0..fixture.rows.len())
        .filter(|i| i % 3 != 1)
        .flat_map(|i| {
            let key = (1000 + i).to_string();
            let truth = fixture.output(i, "variable", 0) + ((i * 37 % 11) as f64 - 5.0) / 4.0;
            let mut labels = vec![(key.clone(), Some(truth), 100)];
            if i % 7 == 0 {
                labels.push((key, Some(truth + 3.0), 200));
            }
            labels
        })
        .collect();
    let ts = p.kind.time_type();
    p.execute(&format!(
        "CREATE TABLE outcomes (id BIGINT NOT NULL, actual {}, known {ts} NOT NULL)",
        match kind {
            Kind::Postgres => "double precision",
            Kind::Mysql => "DOUBLE",
            Kind::Sqlite => "REAL",
        }
    ))
    .await;
    insert_labels(&p, "outcomes", &labels).await;
    let labels_toml = r#"
[labels]
table = "outcomes"
key = "id"
label = "actual"
timestamp = "known"
maturity = "1d"
prediction = "prediction"
alert_above = 2.5
"#;
    crate::models::write_day_job(
        &p,
        "tests/fixtures/float64_regressor.onnx",
        "float64_regressor",
        "prediction = \"variable\"",
        labels_toml,
    );
    assert_exit(&p.batchscore(&["jobs", "validate", "job"]), 0);
    assert_exit(&crate::models::run_day(&p), 0);
    let evaluated = evaluate(&p, &[]);
    assert_eq!(
        evaluated["windows"].as_array().unwrap().len(),
        1,
        "{evaluated}"
    );
    let rows = scored_rows(&p, "predictions", "id", "prediction", None).await;
    let Some(want) = sklearn("regression", json!({ "champion": rows }), &labels) else {
        return;
    };
    let metrics = [
        "labelled", "coverage", "scored", "mae", "rmse", "bias", "r2",
    ];
    assert_eq!(
        assert_matches_sklearn(&evaluated, "champion", &want, &metrics),
        1
    );
    let status: Value =
        serde_json::from_str(&stdout(&p.batchscore(&["status", "--json"]))).unwrap();
    let job = status
        .as_array()
        .map_or(&status["jobs"][0], |a| &a[0])
        .clone();
    assert_eq!(job["metric"]["name"], "mae", "{status}");
}
on_all_databases!(regressor_figures_match_scikit_learn);

/// Evaluation takes no claim: it runs while `run-job` holds the job and scores, and both end 0.
async fn evaluate_runs_beside_a_scoring_run(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(100_000).await;
    let labels: Vec<Label> = (0..4000)
        .map(|i| (i.to_string(), Some(f64::from(u8::from(i % 4 == 0))), 0))
        .collect();
    seed_labels(&p, "failures", "integer", &labels).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    let job =
        sensor_job(&champion, &labels_section("")).replace("chunk_rows = 25", "chunk_rows = 500");
    p.write_job("job", &job);
    // Windows 0 and 1 (keys 0–3999) are committed first.
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(1)]),
        0,
    );
    // Then a long run: every other window, while `evaluate` runs.
    let mut scoring = p
        .command(&["run-job", "job", "--at", &after_window(49)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let claimed = "SELECT COUNT(*) FROM batchscore_claims WHERE job = 'job'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while p.count(claimed).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never took its claim"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let evaluated = evaluate(&p, &["--to", &rfc3339(t0() + TimeDelta::minutes(40))]);
    assert_eq!(
        evaluated["windows"].as_array().unwrap().len(),
        2,
        "{evaluated}"
    );
    assert!(
        p.count(claimed).await > 0 && scoring.try_wait().unwrap().is_none(),
        "evaluate finished while the run still held the job"
    );
    assert_eq!(scoring.wait().unwrap().code(), Some(0));
}
on_all_databases!(evaluate_runs_beside_a_scoring_run);

/// Labels that cannot be evaluated are a configuration error (exit 2) naming what is wrong,
/// from `jobs validate` and `evaluate` alike, before any row is read.
async fn bad_labels_are_named(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    seed_labels(&p, "failures", "integer", &sensor_labels(0..40)).await;
    p.execute(&format!(
        "CREATE TABLE text_labels (reading_id {} NOT NULL, failed {} NOT NULL)",
        match kind {
            Kind::Mysql => "VARCHAR(20)",
            _ => "TEXT",
        },
        match kind {
            Kind::Mysql => "VARCHAR(20)",
            _ => "TEXT",
        }
    ))
    .await;
    p.execute("INSERT INTO text_labels VALUES ('1000', 'yes')")
        .await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    let cases: [(&str, String, &str); 7] = [
        ("a missing table", labels_section("").replace("table = \"failures\"", "table = \"nowhere\""), "nowhere"),
        ("a missing column", labels_section("").replace("label = \"failed\"", "label = \"broke\""), "no column broke"),
        ("a positive label never seen", labels_section("").replace("positive = 1", "positive = 7"), "positive = 7 is never seen"),
        ("a key of another type", labels_section("").replace("table = \"failures\"", "table = \"text_labels\"").replace("timestamp = \"known_at\"\n", ""), "cannot be joined"),
        ("text labels for a regression", labels_section("").replace("table = \"failures\"", &format!("query = \"SELECT CAST(reading_id AS {}) AS reading_id, failed FROM text_labels\"", match kind { Kind::Mysql => "SIGNED", _ => "BIGINT" })).replace("timestamp = \"known_at\"\n", "").replace("score = \"failure_probability\"\npredicted = \"failure_label\"\npositive = 1", "prediction = \"failure_probability\""), "must be a number"),
        ("a score that is no result column", labels_section("").replace("score = \"failure_probability\"", "score = \"risk\""), "not a result column"),
        ("a score that holds labels", labels_section("").replace("score = \"failure_probability\"", "score = \"failure_label\""), "must hold the positive class"),
    ];
    for (what, section, named) in cases {
        p.write_job("job", &sensor_job(&champion, &section));
        for args in [&["jobs", "validate", "job"][..], &["evaluate", "job"][..]] {
            let out = p.batchscore(args);
            let said = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(2), "{what}: {args:?}: {said}");
            assert!(
                said.contains(named),
                "{what}: {args:?} should name `{named}`: {said}"
            );
        }
    }
    // A job without [labels] has nothing to evaluate.
    p.write_job("job", &sensor_job(&champion, ""));
    let out = p.batchscore(&["evaluate", "job"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no [labels]"), "{}", stderr(&out));
}
on_all_databases!(bad_labels_are_named);

/// The daemon evaluates due windows after its ticks and publishes the figures on /metrics,
/// with the job's alert bound.
async fn the_daemon_publishes_realized_performance(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    seed_labels(&p, "failures", "integer", &sensor_labels(0..240)).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    let challenger = format!("[challenger]\npath = \"{}\"\n", onnx(CHALLENGER));
    p.write_job(
        "job",
        &sensor_job(
            &champion,
            &format!("{challenger}{}", labels_section("alert_below = 0.75")),
        ),
    );
    start_at_t0(&p, "job");
    let body = crate::lifecycle::daemon_metrics(p.command(&[]), 120, |body| {
        body.contains("batchscore_model_metric{") && body.contains("model=\"challenger\"")
    });
    let auc = crate::lifecycle::sample(
        &body,
        "batchscore_model_metric",
        "metric=\"auc\",model=\"champion\"",
    );
    assert!(auc.is_some_and(|a| (0.0..=1.0).contains(&a)), "{body}");
    assert!(
        crate::lifecycle::sample(
            &body,
            "batchscore_model_metric",
            "metric=\"auc\",model=\"challenger\""
        )
        .is_some(),
        "{body}"
    );
    let coverage = crate::lifecycle::sample(&body, "batchscore_label_coverage", "job=\"job\"");
    assert!(coverage.is_some_and(|c| c > 0.3 && c < 1.0), "{body}");
    assert_eq!(
        crate::lifecycle::sample(
            &body,
            "batchscore_model_metric_alert_below",
            "metric=\"auc\""
        ),
        Some(0.75)
    );
    // What it stored is final and matches a fresh evaluation.
    let finals = p
        .count(
            "SELECT COUNT(*) FROM batchscore_performance WHERE status = 'final' AND metric = 'auc'",
        )
        .await;
    assert!(finals >= 2, "{finals}");
}
on_all_databases!(the_daemon_publishes_realized_performance);

/// A realized metric past its bound is an alert (alerts.toml), told once for the whole job
/// and resolved when a later evaluation is within the bound.
#[tokio::test]
async fn a_metric_past_its_bound_alerts_once_and_resolves() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::usual(p.kind)).await;
    seed_labels(&p, "failures", "integer", &sensor_labels(0..200)).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job(
        "job",
        &sensor_job(&champion, &labels_section("alert_below = 0.999")),
    );
    let hook = crate::support::receiver::Receiver::start();
    p.write_routes(&format!(
        "[[route]]\nname = \"ml\"\nkind = \"webhook\"\nurl = \"{}\"\nevents = [\"performance\", \"resolved\"]\n",
        hook.url
    ));
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(3)]),
        0,
    );
    let alert = hook.wait_for(1, 5).await[0].clone();
    assert_eq!(alert["event"], "performance");
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["shard"], Value::Null);
    assert_eq!(alert["dedup_key"], "job/all/performance");
    assert_eq!(alert["details"]["metric"], "auc");
    assert_eq!(alert["details"]["alert_below"], 0.999);
    let auc = alert["details"]["value"].as_f64().unwrap();
    // The figure told is the one stored for the latest final window.
    let stored = evaluate(&p, &[]);
    let latest = stored["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["model"] == "champion")
        .max_by_key(|w| w["window_end"].as_str().unwrap().to_owned())
        .unwrap()
        .clone();
    let stored_auc = latest["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["metric"] == "auc")
        .unwrap()["value"]
        .clone();
    assert_close(&json!(auc), &stored_auc, "the alert's AUC");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("below labels.alert_below = 0.999")
    );
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(3)]),
        0,
    );
    assert_eq!(hook.requests().len(), 1, "told once");

    p.write_job(
        "job",
        &sensor_job(&champion, &labels_section("alert_below = 0.01")),
    );
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(4)]),
        0,
    );
    let bodies = hook.wait_for(2, 5).await;
    assert_eq!(bodies[1]["event"], "performance");
    assert_eq!(bodies[1]["status"], "resolved");
}

/// Result rows far out of the order they were written (here: rewritten in another order),
/// with a small bound on the rows held: windows are let go and read again, and the figures are
/// those of the ordered read, so nothing changes.
async fn rows_out_of_order_are_let_go_and_read_again(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    seed_labels(&p, "failures", "integer", &sensor_labels(0..200)).await;
    let champion = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job("job", &sensor_job(&champion, &labels_section("")));
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(3)]),
        0,
    );
    let ordered = evaluate(&p, &[]);
    p.execute("CREATE TABLE shuffled AS SELECT * FROM predictions")
        .await;
    p.execute("DELETE FROM predictions").await;
    p.execute("INSERT INTO predictions SELECT * FROM shuffled ORDER BY reading_id % 7, reading_id")
        .await;
    let out = p
        .command(&["evaluate", "job", "--json"])
        .env("BATCHSCORE_EVALUATE_HELD_ROWS", "8")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("windows let go"),
        "the bound was not reached: {}",
        stderr(&out)
    );
    let shuffled: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shuffled["changed"], 0, "{shuffled}");
    let figures = |e: &Value| -> Vec<(String, String, Value)> {
        let mut all: Vec<_> = e["windows"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| {
                w["figures"].as_array().unwrap().iter().map(move |f| {
                    (
                        w["window_start"].as_str().unwrap().to_owned(),
                        f["metric"].as_str().unwrap().to_owned(),
                        f["value"].clone(),
                    )
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    };
    assert_eq!(figures(&shuffled), figures(&ordered));
    assert_eq!(shuffled["windows"].as_array().unwrap().len(), 4);
}

on_all_databases!(rows_out_of_order_are_let_go_and_read_again: sqlite, postgres);
