//! A model's life after its first deployment: versions from a real MLflow registry by alias
//! (moved between runs, the registry down, unknown names), a challenger scoring the same
//! windows into a table of its own, lineage in the ledger and `batchscore models`, and the
//! repair of what one model version wrote (`run-job --rescore-model`).
//!
//! The sensor fixture's 240 rows are 30 s apart: with 20-minute windows, window `k` holds rows
//! `40k..40k+40`, six windows in all. Both models' outputs are checked against ONNX Runtime's
//! Python API (`machine_failure.json`, `machine_failure_challenger.json`).

mod challenger;
mod lineage;
mod registry;
mod rescore;

use chrono::TimeDelta;

use crate::support::*;

/// The sensor job with `model` as its `[model]` section's body and `extra` sections after.
pub(crate) fn sensor_job(model: &str, extra: &str) -> String {
    format!(
        r#"
schedule = "*/20 * * * *"
[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = 25
[window]
size = "20m"
lateness = "1m"
[model]
{model}
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "predictions"
{extra}
"#
    )
}

pub(crate) const CHAMPION: &str = "machine_failure";
pub(crate) const CHALLENGER: &str = "machine_failure_challenger";

/// `tests/fixtures/NAME.onnx`, or the repository's `models/NAME.onnx`.
pub(crate) fn onnx(name: &str) -> String {
    let fixture = format!("{REPO}/tests/fixtures/{name}.onnx");
    match std::path::Path::new(&fixture).exists() {
        true => fixture,
        false => format!("{REPO}/models/{name}.onnx"),
    }
}

/// The sha256 of a model file, as `sha256sum` computes it.
pub(crate) fn file_sha256(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `--at` that makes a scheduled run score up to window `k` (inclusive): its end plus lateness.
pub(crate) fn after_window(k: usize) -> String {
    rfc3339(t0() + TimeDelta::minutes(20 * (k as i64 + 1) + 1))
}

/// Start the job's watermark at the first row, so scheduled runs score windows 0, 1, …
pub(crate) fn start_at_t0(p: &Project, job: &str) {
    assert_exit(&p.batchscore(&["watermark", "set", job, &rfc3339(t0())]), 0);
}

/// `table` holds exactly the rows of the windows in `parts`, each part's rows with its
/// fixture's outputs (ONNX Runtime's Python API): `(windows, fixture)`.
pub(crate) async fn assert_scored(
    p: &Project,
    table: &str,
    parts: &[(std::ops::Range<usize>, &str)],
) {
    let probabilities = p.results(table, "reading_id", "failure_probability").await;
    let labels = p.results(table, "reading_id", "failure_label").await;
    let mut expected: Vec<(String, &str)> = parts
        .iter()
        .flat_map(|(windows, fixture)| {
            (windows.start * 40..windows.end * 40).map(|i| ((1000 + i).to_string(), *fixture))
        })
        .collect();
    expected.sort();
    let keys: Vec<&String> = probabilities.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        expected.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "{table}: the rows of {parts:?}"
    );
    let fixtures: std::collections::HashMap<&str, Fixture> = parts
        .iter()
        .map(|(_, name)| (*name, Fixture::load(name)))
        .collect();
    for (((key, probability), (_, label)), (_, fixture)) in
        probabilities.iter().zip(&labels).zip(&expected)
    {
        let row = key.parse::<usize>().unwrap() - 1000;
        let fixture = &fixtures[fixture];
        let want = fixture.output(row, "probabilities", 1);
        assert!(
            (probability - want).abs() < 1e-5,
            "{table} row {row}: {probability} vs ONNX Runtime's {want}"
        );
        assert_eq!(
            *label,
            fixture.output(row, "label", 0),
            "{table} row {row}: label"
        );
    }
}

/// `(window_start, model_sha256)` of each succeeded ledger row, oldest window first (then oldest
/// commit).
pub(crate) async fn ledger_models(p: &Project) -> Vec<(String, String)> {
    use sqlx::Row;
    let sql = format!(
        "SELECT {}, model_sha256 FROM batchscore_runs WHERE status = 'succeeded' ORDER BY window_start, finished_at",
        p.kind.time_text("window_start")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The sha256s of `ledger_models`, window by window.
pub(crate) async fn window_models(p: &Project) -> Vec<String> {
    ledger_models(p)
        .await
        .into_iter()
        .map(|(_, sha)| sha)
        .collect()
}

/// `batchscore models JOB --json`.
pub(crate) fn models_json(p: &Project, job: &str) -> Vec<serde_json::Value> {
    let out = p.batchscore(&["models", job, "--json"]);
    assert_exit(&out, 0);
    serde_json::from_str::<serde_json::Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A daemon of `command` (set up by the test: its environment) listening on a port of its own,
/// polled on /metrics every 100 ms until `done` holds of the body or `seconds` pass; then
/// stopped. The last body it served.
pub(crate) fn daemon_metrics(
    mut command: std::process::Command,
    seconds: u64,
    done: impl Fn(&str) -> bool,
) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = command
        .args(["daemon", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut last = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if let Some((200, body)) = http_get(port, "/metrics") {
            last = body;
            if done(&last) {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    signal(&daemon, "TERM");
    daemon.wait().unwrap();
    last
}

/// The value of the first sample of `metric` whose labels include `label`, in a /metrics body.
pub(crate) fn sample(body: &str, metric: &str, label: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
