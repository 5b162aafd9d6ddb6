//! Drift monitoring: every committed window's profile equals a Python computation of the same
//! statistics, drift scores equal the reference formulas computed in Python from the raw rows,
//! a drifted window is flagged and a stable one is not, `on_drift = "fail"` writes nothing, and
//! a profile lives or dies with its window; on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::process::Stdio;

use serde_json::{Value, json};
use sqlx::Row;

use crate::support::*;

/// Hourly windows of orders scored by the delivery model: float, integer, boolean (a float input
/// of the model) and text features, one numeric output. `{monitor}` is filled per test.
const JOB: &str = r#"
schedule = "0 * * * *"
[source]
table = "orders"
key = "order_id"
timestamp = "placed_at"
features = ["distance_km", "items", "hour", "raining", "zone"]
[window]
size = "1h"
[model]
path = "{models}/delivery_eta.onnx"
[outputs]
eta_minutes = "variable"
[sink]
table = "eta"
[bad_rows]
max_fraction = 0.5
[monitor]
min_rows = 50
{monitor}
"#;

/// One order as the test inserts it.
#[derive(Clone, Debug)]
struct Order {
    id: i64,
    /// Seconds after 2026-01-10T00:00:00Z.
    second: i64,
    distance_km: Option<f64>,
    items: i64,
    hour: i64,
    raining: bool,
    zone: Option<&'static str>,
}

const ZONES: [&str; 5] = ["north", "south", "east", "west", "centre"];

/// A small deterministic generator (64-bit LCG), so the rows are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` orders spread over hour `hour` of 2026-01-10, keys from `first`. `drift` doubles the
/// distances and sends most orders to one zone.
fn orders(first: i64, hour: i64, n: i64, seed: u64, drift: bool) -> Vec<Order> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let scale = if drift { 2.0 } else { 1.0 };
            let distance =
                ((rng.next() * 8.0 + rng.next() * 4.0) * scale * 1000.0).round() / 1000.0;
            let zone_pick = rng.next();
            let zone = match drift {
                true if zone_pick < 0.7 => "north",
                _ => ZONES[(zone_pick * 5.0) as usize % 5],
            };
            Order {
                id: first + i,
                second: hour * 3600 + i * 3600 / n,
                // Every 40th order has no distance: a NULL the profile counts (and the row is
                // quarantined, so it has no prediction).
                distance_km: (i % 40 != 7).then_some(distance),
                items: 1 + (rng.next() * 10.0) as i64,
                hour: (rng.next() * 24.0) as i64,
                raining: rng.next() < 0.3,
                zone: (i % 50 != 11).then_some(zone),
            }
        })
        .collect()
}

async fn create_orders(p: &Project) {
    p.execute(match p.kind {
        Kind::Sqlite => {
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, placed_at TEXT NOT NULL, distance_km REAL, \
             items INTEGER, hour INTEGER, raining BOOLEAN, zone TEXT); CREATE INDEX orders_at ON orders (placed_at)"
        }
        Kind::Postgres => {
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, placed_at timestamptz NOT NULL, distance_km double precision, \
             items integer, hour integer, raining boolean, zone text); CREATE INDEX orders_at ON orders (placed_at)"
        }
        Kind::Mysql => {
            "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, placed_at DATETIME(6) NOT NULL, distance_km DOUBLE, \
             items INT, hour INT, raining BOOLEAN, zone VARCHAR(16), INDEX orders_at (placed_at))"
        }
    })
    .await;
}

async fn insert(p: &Project, rows: &[Order]) {
    for batch in rows.chunks(500) {
        let values: Vec<String> = batch
            .iter()
            .map(|o| {
                let at = p
                    .kind
                    .time_literal(t0() + chrono::TimeDelta::seconds(o.second));
                let raining = match (p.kind, o.raining) {
                    (Kind::Postgres, r) => r.to_string(),
                    (_, r) => i32::from(r).to_string(),
                };
                format!(
                    "({}, {at}, {}, {}, {}, {raining}, {})",
                    o.id,
                    o.distance_km.map_or("NULL".to_owned(), |d| d.to_string()),
                    o.items,
                    o.hour,
                    o.zone.map_or("NULL".to_owned(), |z| format!("'{z}'")),
                )
            })
            .collect();
        p.execute(&format!("INSERT INTO orders VALUES {}", values.join(", ")))
            .await;
    }
}

fn hour(h: i64) -> String {
    rfc3339(t0() + chrono::TimeDelta::hours(h))
}

/// The rows, as Python's reference computation reads them.
fn rows_json(rows: &[Order], eta: &BTreeMap<i64, f64>) -> Value {
    let column = |f: &dyn Fn(&Order) -> Value| -> Vec<Value> { rows.iter().map(f).collect() };
    json!({
        "distance_km": column(&|o| json!(o.distance_km)),
        "items": column(&|o| json!(o.items)),
        "hour": column(&|o| json!(o.hour)),
        // The model takes `raining` as a float input: a number to the profile.
        "raining": column(&|o| json!(if o.raining { 1.0 } else { 0.0 })),
        "zone": column(&|o| json!(o.zone)),
        "eta_minutes": column(&|o| json!(eta.get(&o.id))),
    })
}

/// The reference computation, in plain Python: each column's statistics, and PSI, JS, null
/// rate and mean shift as the README defines them, from the raw values.
const PYTHON: &str = r#"
import bisect, json, math, sys
doc = json.load(sys.stdin)
ref, cur, bins = doc["reference"], doc["window"], doc["bins"]
NUMERIC = {"distance_km", "items", "hour", "raining", "eta_minutes"}

def stats(values, column):
    present = [v for v in values if v is not None]
    out = {"rows": len(values), "nulls": len(values) - len(present)}
    if column == "eta_minutes":
        # Outputs are profiled over the rows scored: quarantined rows have no prediction.
        out = {"rows": len(present), "nulls": 0}
    if column in NUMERIC:
        n = len(present)
        mean = sum(present) / n
        out.update(mean=mean, std=math.sqrt(sum((v - mean) ** 2 for v in present) / n),
                   min=min(present), max=max(present))
    return out, present

def psi(r, w):
    r_sorted, n = sorted(r), len(r)
    edges = []
    for i in range(1, bins):
        e = r_sorted[math.ceil((i / bins) * n) - 1]
        if not edges or edges[-1] < e:
            edges.append(e)
    def counts(values):
        c = [0] * (len(edges) + 1)
        for v in values:
            c[bisect.bisect_left(edges, v)] += 1
        return c
    rc, wc = counts(r), counts(w)
    p = [(c + 0.5) / (len(r) + 0.5 * len(rc)) for c in rc]
    q = [(c + 0.5) / (len(w) + 0.5 * len(wc)) for c in wc]
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q))

def js(r, w):
    def top(values):
        counts = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    labels = sorted({k for k, _ in top(r)} | {k for k, _ in top(w)})
    def shares(values):
        c = [sum(1 for v in values if v == k) for k in labels]
        c.append(len(values) - sum(c))
        return [x / len(values) for x in c]
    p, q = shares(r), shares(w)
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0)
    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))

out = {}
for column in ref:
    (rs, rv), (ws, wv) = stats(ref[column], column), stats(cur[column], column)
    entry = {"profile": ws, "null_rate": ws["nulls"] / ws["rows"],
             "reference_null_rate": rs["nulls"] / rs["rows"]}
    if column in NUMERIC:
        entry["score"] = psi(rv, wv)
    else:
        entry["score"] = js(rv, wv)
    if column == "eta_minutes":
        entry["mean_shift"] = (ws["mean"] - rs["mean"]) / rs["std"]
    out[column] = entry
print(json.dumps(out))
"#;

fn python_reference(reference: Value, window: Value, bins: usize) -> Value {
    let input = json!({ "reference": reference, "window": window, "bins": bins });
    python_json("python3", PYTHON, &input)
}

async fn eta(p: &Project) -> BTreeMap<i64, f64> {
    sqlx::query("SELECT order_id, eta_minutes FROM eta")
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<f64, _>(1)))
        .collect()
}

/// column → (rows, nulls, bad, mean, std, min, max) of the profiles of the window ending at
/// `end` (hours after t0).
async fn stored_profile(
    p: &Project,
    end: i64,
) -> BTreeMap<
    String,
    (
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ),
> {
    let condition = format!(
        "{} = '{}'",
        p.kind.time_text("window_end"),
        hour(end).replace('Z', ".000000Z")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT column_name, row_count, null_count, bad_count, mean, std, min_value, max_value FROM batchscore_profiles WHERE {condition}"
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<String, _>(0),
            (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7)),
        )
    })
    .collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        "{what}: batchscore {a}, python {b}"
    );
}

fn monitor_json(p: &Project, job: &str) -> (i32, Value) {
    let out = p.batchscore(&["monitor", job, "--json"]);
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "{}", stderr(&out));
    (code, serde_json::from_str(&stdout(&out)).unwrap())
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {report}"))
}

async fn profiles_and_scores_equal_python(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // 150 rows a window: few enough that the sketches hold every value, so the scores are
    // exactly the formulas' on the raw rows.
    create_orders(&p).await;
    let reference = orders(0, 10, 150, 1, false);
    let window = orders(1000, 11, 150, 2, true);
    insert(&p, &reference).await;
    insert(&p, &window).await;
    p.write_job("eta", &JOB.replace("{monitor}", ""));
    assert_exit(
        &p.batchscore(&["run-job", "eta", "--from", &hour(10), "--to", &hour(12)]),
        0,
    );
    let set = p.batchscore(&[
        "monitor",
        "set-reference",
        "eta",
        "--from",
        &hour(10),
        "--to",
        &hour(11),
    ]);
    assert_exit(&set, 0);
    assert!(
        stdout(&set).contains("reference set to 1 windows"),
        "{}",
        stdout(&set)
    );

    let eta = eta(&p).await;
    let expected = python_reference(rows_json(&reference, &eta), rows_json(&window, &eta), 10);
    let stored = stored_profile(&p, 12).await;
    assert_eq!(
        stored.len(),
        6,
        "one profile row per feature and output: {stored:?}"
    );
    let (code, report) = monitor_json(&p, "eta");
    assert_eq!(code, 1, "the window drifted: {report}");
    for (name, python) in expected.as_object().unwrap() {
        let (rows, nulls, bad, mean, std, min, max) = stored[name];
        let profile = &python["profile"];
        assert_eq!(rows, profile["rows"].as_i64().unwrap(), "{name} rows");
        assert_eq!(nulls, profile["nulls"].as_i64().unwrap(), "{name} nulls");
        assert_eq!(bad, 0, "{name} bad");
        for (value, key) in [(mean, "mean"), (std, "std"), (min, "min"), (max, "max")] {
            match profile.get(key) {
                Some(expected) => close(
                    value.unwrap(),
                    expected.as_f64().unwrap(),
                    &format!("{name} {key}"),
                ),
                None => assert_eq!(value, None, "{name} {key}"),
            }
        }
        let drift = column(&report, name);
        close(
            drift["score"].as_f64().unwrap(),
            python["score"].as_f64().unwrap(),
            &format!("{name} score"),
        );
        close(
            drift["null_rate"].as_f64().unwrap(),
            python["null_rate"].as_f64().unwrap(),
            &format!("{name} null rate"),
        );
        close(
            drift["reference_null_rate"].as_f64().unwrap(),
            python["reference_null_rate"].as_f64().unwrap(),
            &format!("{name} reference null rate"),
        );
        if let Some(shift) = python.get("mean_shift") {
            close(
                drift["mean_shift"].as_f64().unwrap(),
                shift.as_f64().unwrap(),
                &format!("{name} mean shift"),
            );
        }
    }
    // Doubled distances and a zone taking most orders are what drifted.
    for name in ["distance_km", "zone"] {
        assert_eq!(column(&report, name)["state"], "drift", "{report}");
    }
    assert_eq!(column(&report, "distance_km")["measure"], "psi");
    assert_eq!(column(&report, "zone")["measure"], "js");
}

on_all_databases!(profiles_and_scores_equal_python);

async fn a_drifted_window_is_flagged_a_stable_one_is_not_and_fail_writes_nothing(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_orders(&p).await;
    // Two thousand rows a window: the sketches summarise, and sampling noise is far below the
    // thresholds.
    insert(&p, &orders(0, 10, 2000, 1, false)).await;
    insert(&p, &orders(10_000, 11, 2000, 2, false)).await;
    insert(&p, &orders(20_000, 12, 2000, 3, true)).await;
    let fixed = format!(
        "reference = {{ from = \"{}\", to = \"{}\" }}",
        hour(10),
        hour(11)
    );
    p.write_job("eta", &JOB.replace("{monitor}", &fixed));
    assert_exit(&p.batchscore(&["watermark", "set", "eta", &hour(10)]), 0);

    // The stable hour: scored, every column ok, and `monitor` exits 0.
    assert_exit(&p.batchscore(&["run-job", "eta", "--at", &hour(12)]), 0);
    let (code, report) = monitor_json(&p, "eta");
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["drift"], false);
    for c in report["columns"].as_array().unwrap() {
        assert_eq!(c["state"], "ok", "{c}");
    }
    let status = p.batchscore(&["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status[0]["drift"], "ok", "{status}");

    // The drifted hour under on_drift = "fail": the run fails, nothing of it is written.
    p.write_job(
        "eta",
        &JOB.replace("{monitor}", &format!("{fixed}\non_drift = \"fail\"")),
    );
    let written = p.count("SELECT count(*) FROM eta").await;
    let profiles = p.count("SELECT count(*) FROM batchscore_profiles").await;
    let failed = p.batchscore(&["run-job", "eta", "--at", &hour(13)]);
    assert_exit(&failed, 1);
    let message = stderr(&failed);
    assert!(
        message.contains("the window drifted from its reference and monitor.on_drift = \"fail\"")
            && message.contains("distance_km")
            && message.contains("batchscore monitor set-reference eta"),
        "{message}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM eta").await,
        written,
        "no result written"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_profiles").await,
        profiles,
        "no profile written"
    );
    assert_eq!(
        p.watermark("eta").await.unwrap(),
        crate::windows::ts(12 * 60)
    );
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'failed' AND error LIKE '%drifted%'").await,
        1
    );

    // Under "warn" the same hour is written, flagged by `monitor` and `status`.
    p.write_job("eta", &JOB.replace("{monitor}", &fixed));
    let warned = p.batchscore(&["run-job", "eta", "--at", &hour(13)]);
    assert_exit(&warned, 0);
    assert!(
        stderr(&warned).contains("window drifted from its reference"),
        "{}",
        stderr(&warned)
    );
    assert_eq!(
        p.count("SELECT count(*) FROM eta").await,
        written + 2000 - 50 - 40
    );
    let (code, report) = monitor_json(&p, "eta");
    assert_eq!(code, 1);
    let drifted: Vec<&str> = report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "drift")
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert!(
        drifted.contains(&"distance_km") && drifted.contains(&"zone"),
        "{report}"
    );
    for stable in ["items", "hour", "raining"] {
        assert_eq!(column(&report, stable)["state"], "ok", "{report}");
    }
    // Worst first.
    assert_eq!(report["columns"][0]["state"], "drift");
    let text = p.batchscore(&["monitor", "eta"]);
    assert_exit(&text, 1);
    let first_line = stdout(&text).lines().nth(3).unwrap_or_default().to_owned();
    assert!(first_line.contains("drift"), "{}", stdout(&text));
    let status = p.batchscore(&["status"]);
    assert!(stdout(&status).contains("drift: "), "{}", stdout(&status));

    // A rolling reference of the same hour a day earlier has no windows there: nothing judged.
    p.write_job(
        "eta",
        &JOB.replace("{monitor}", "reference = { rolling = \"1d\" }"),
    );
    let (code, report) = monitor_json(&p, "eta");
    assert_eq!(
        (code, report["reference"]["windows"].as_u64()),
        (0, Some(0)),
        "{report}"
    );
    // A rolling reference one hour back compares 13:00 with 12:00... which drifted too; two
    // hours back, with 11:00, which did not.
    p.write_job(
        "eta",
        &JOB.replace("{monitor}", "reference = { rolling = \"2h\" }"),
    );
    let (code, report) = monitor_json(&p, "eta");
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["reference"]["windows"], 1);
    // Clearing a stored reference that is not there is harmless; a range with no profiled
    // window is refused, naming the job.
    assert_exit(
        &p.batchscore(&["monitor", "set-reference", "eta", "--clear"]),
        0,
    );
    let empty = p.batchscore(&[
        "monitor",
        "set-reference",
        "eta",
        "--from",
        &hour(0),
        "--to",
        &hour(5),
    ]);
    assert_exit(&empty, 2);
    assert!(
        stderr(&empty).contains("job `eta`") && stderr(&empty).contains("no committed window"),
        "{}",
        stderr(&empty)
    );
}

on_all_databases!(a_drifted_window_is_flagged_a_stable_one_is_not_and_fail_writes_nothing);

async fn a_profile_lives_and_dies_with_its_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    // One window of 40,000 rows in chunks of 50: the run scores for seconds.
    p.seed_synthetic(40_000).await;
    let job = crate::windows::job("all")
        .replace("size = \"10m\"", "size = \"400m\"")
        .replace("chunk_rows = 400", "chunk_rows = 50");
    p.write_job("slow", &job);
    assert_exit(
        &p.batchscore(&["watermark", "set", "slow", &crate::windows::at(0)]),
        0,
    );
    let mut child = p
        .command(&["run-job", "slow", "--at", &crate::windows::at(401)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(30, "the window to start", || async {
        p.count("SELECT count(*) FROM batchscore_runs WHERE status = 'running'")
            .await
            > 0
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the kill"
    );
    child.kill().unwrap(); // SIGKILL, mid-window
    child.wait().unwrap();
    assert_eq!(p.count("SELECT count(*) FROM batchscore_profiles").await, 0);

    assert_exit(
        &p.batchscore(&["run-job", "slow", "--at", &crate::windows::at(401)]),
        0,
    );
    // Exactly once: one row per feature and output, each of the whole window.
    assert_eq!(p.count("SELECT count(*) FROM batchscore_profiles").await, 6);
    assert_eq!(
        p.count("SELECT count(DISTINCT run_id) FROM batchscore_profiles")
            .await,
        1
    );
    assert_eq!(
        p.count("SELECT min(row_count) FROM batchscore_profiles WHERE role = 'feature'")
            .await,
        40_000
    );
    // A backfill scoring the range again replaces it rather than adding a second.
    assert_exit(
        &p.batchscore(&[
            "run-job",
            "slow",
            "--from",
            &crate::windows::at(0),
            "--to",
            &crate::windows::at(400),
        ]),
        0,
    );
    assert_eq!(p.count("SELECT count(*) FROM batchscore_profiles").await, 6);
}

on_all_databases!(a_profile_lives_and_dies_with_its_window);

/// An unaligned backfill replaces the profiles of the windows inside its range, and keeps its
/// neighbours' that only overlap it: their rows outside the backfill stay in the reference.
async fn an_unaligned_backfill_keeps_its_neighbours_profiles(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(4_000).await;
    p.write_job("job", &crate::windows::job("all"));
    let at = crate::windows::at;
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 0);
    let temperature_rows =
        "SELECT sum(row_count) FROM batchscore_profiles WHERE column_name = 'temperature'"
            .to_owned();
    let summed = |sql: String| {
        let p = &p;
        async move {
            p.count(&format!("SELECT CAST(({sql}) AS {})", p.kind.bigint()))
                .await
        }
    };
    assert_eq!(summed(temperature_rows.clone()).await, 3_000);

    // [5m, 15m) overlaps [0, 10m) and [10m, 20m), contains neither.
    let backfill = ["run-job", "job", "--from", &at(5), "--to", &at(15)];
    assert_exit(&p.batchscore(&backfill), 0);
    assert_eq!(
        summed(temperature_rows.clone()).await,
        4_000,
        "the neighbours keep their 2,000 rows; the backfill adds its 1,000"
    );
    // The same backfill again replaces its own profile, not adds a second.
    assert_exit(&p.batchscore(&backfill), 0);
    assert_eq!(summed(temperature_rows).await, 4_000);
}

on_all_databases!(an_unaligned_backfill_keeps_its_neighbours_profiles);

/// Three hours of orders, the middle one drifted, a job whose reference is the first hour, and a
/// webhook route (`extra`: more of its fields) to a receiver: for the drift alert tests.
async fn drifting_hours_with_a_route(extra: &str) -> (Project, crate::support::receiver::Receiver) {
    let p = Project::sqlite().await;
    create_orders(&p).await;
    insert(&p, &orders(0, 10, 2000, 1, false)).await;
    insert(&p, &orders(10_000, 11, 2000, 2, true)).await;
    insert(&p, &orders(20_000, 12, 2000, 3, false)).await;
    let fixed = format!(
        "reference = {{ from = \"{}\", to = \"{}\" }}",
        hour(10),
        hour(11)
    );
    p.write_job("eta", &JOB.replace("{monitor}", &fixed));
    let hook = crate::support::receiver::Receiver::start();
    p.write_routes(&format!(
        "[[route]]\nname = \"ml\"\nkind = \"webhook\"\nurl = \"{}\"\n{extra}\n",
        hook.url
    ));
    assert_exit(&p.batchscore(&["watermark", "set", "eta", &hour(10)]), 0);
    (p, hook)
}

/// A window that drifts under `on_drift = "warn"` commits and is an alert (alerts.toml) naming
/// its columns and scores; the next stable window resolves it.
#[tokio::test]
async fn a_drifted_window_is_an_alert_until_a_stable_one_commits() {
    let (p, hook) = drifting_hours_with_a_route("").await;
    assert_exit(&p.batchscore(&["run-job", "eta", "--at", &hour(11)]), 0);
    assert!(hook.requests().is_empty());
    // Hour 11 drifted (on_drift = "warn", the default): committed, and told.
    assert_exit(&p.batchscore(&["run-job", "eta", "--at", &hour(12)]), 0);
    let alert = hook.wait_for(1, 5).await[0].clone();
    assert_eq!(alert["event"], "drift");
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["window"]["start"], hour(11));
    let columns = alert["details"]["columns"].as_array().unwrap();
    let distance = columns
        .iter()
        .find(|c| c["column"] == "distance_km")
        .unwrap_or_else(|| panic!("{alert}"));
    assert!(
        distance["score"].as_f64().unwrap() > distance["threshold"].as_f64().unwrap(),
        "{distance}"
    );
    // The same columns `monitor` reports in drift.
    let (_, report) = monitor_json(&p, "eta");
    let drifted: std::collections::BTreeSet<String> = report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] != "ok")
        .map(|c| c["column"].as_str().unwrap().to_owned())
        .collect();
    let told: std::collections::BTreeSet<String> = columns
        .iter()
        .map(|c| c["column"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(told, drifted);
    // Hour 12 is like the reference: resolved.
    assert_exit(&p.batchscore(&["run-job", "eta", "--at", &hour(13)]), 0);
    let bodies = hook.wait_for(2, 5).await;
    assert_eq!(
        (bodies[1]["event"].as_str(), bodies[1]["status"].as_str()),
        (Some("drift"), Some("resolved"))
    );
}

/// One run that scores a drifted window and then a stable one: the alert opens, then resolves,
/// in that order (alerts are taken in the order their windows ended).
#[tokio::test]
async fn a_drift_and_its_recovery_in_one_run_arrive_in_order() {
    let (p, hook) = drifting_hours_with_a_route("events = [\"drift\", \"resolved\"]").await;
    assert_exit(&p.batchscore(&["run-job", "eta", "--at", &hour(13)]), 0);
    let bodies = hook.wait_for(2, 5).await;
    let seen: Vec<(&str, &str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap(),
                b["status"].as_str().unwrap(),
                b["window"]["start"].as_str().unwrap(),
            )
        })
        .collect();
    let (eleven, twelve) = (hour(11), hour(12));
    assert_eq!(
        seen,
        [
            ("drift", "firing", eleven.as_str()),
            ("drift", "resolved", twelve.as_str())
        ]
    );
}
