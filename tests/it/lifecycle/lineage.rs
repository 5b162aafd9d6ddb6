//! What each result row says scored it: compact lineage (the default) by two numbers that join
//! to the ledger and the model table, README's join giving each row's model, source and window;
//! `[sink] lineage = "full"` by the wide stamp on the row; and a table with the wide stamp
//! already there, filled as it is.

use sqlx::Row;

use super::*;
use crate::scoring::{TimeForm, seed_sensor_readings};

/// The join README "Results table" gives for a row's full lineage.
const LINEAGE_JOIN: &str = "FROM predictions p \
    JOIN batchscore_runs r ON r.id = p.batchscore_run \
    JOIN batchscore_models m ON m.id = p.batchscore_model";

/// The columns of `table`, in order.
async fn columns(p: &Project, table: &str) -> Vec<String> {
    let sql = match p.kind {
        Kind::Sqlite => format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
        Kind::Postgres => format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
        Kind::Mysql => format!(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
        ),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Per result row, by key: (model sha256, run id, window start) as `select` (over `from`) reads
/// them.
async fn row_lineage(
    p: &Project,
    select: [&str; 3],
    from: &str,
) -> std::collections::BTreeMap<i64, (String, String, String)> {
    let sql = format!(
        "SELECT {}, {}, {}, {} {from}",
        p.kind.int("p.reading_id"),
        select[0],
        select[1],
        p.kind.time_text(select[2]),
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// The start of the window that holds key `key` (window `k` holds keys `1000 + 40k …`), as the
/// ledger prints times.
fn window_of(key: i64) -> String {
    let k = (key - 1000) / 40;
    (t0() + TimeDelta::minutes(20 * k)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The id of the latest succeeded run of each window, by window start.
async fn committed_runs(p: &Project) -> std::collections::BTreeMap<String, String> {
    let sql = format!(
        "SELECT {}, run_id FROM batchscore_runs WHERE status = 'succeeded' ORDER BY finished_at",
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

/// Point the job at `models/current.onnx`, a copy of `model`, with `sink` as its `[sink]` body's
/// lines after `table`; the model's sha256.
fn deploy(p: &Project, model: &str, sink: &str) -> String {
    let dir = p.dir.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("current.onnx");
    std::fs::copy(onnx(model), &path).unwrap();
    let job = sensor_job(&format!("path = \"{}\"", path.display()), "").replace(
        "table = \"predictions\"\n",
        &format!("table = \"predictions\"\n{sink}\n"),
    );
    p.write_job("job", &job);
    file_sha256(&onnx(model))
}

async fn compact_lineage_joins_every_row_to_its_model_run_and_window(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    // One model scores windows 0–2, another 3–4.
    let first = deploy(&p, CHALLENGER, "");
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );
    let second = deploy(&p, CHAMPION, "");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(4)]),
        0,
    );
    assert_scored(&p, "predictions", &[(0..3, CHALLENGER), (3..5, CHAMPION)]).await;

    // Key, outputs, and two integers: no text or time on the row.
    assert_eq!(
        columns(&p, "predictions").await,
        [
            "reading_id",
            "failure_label",
            "failure_probability",
            "batchscore_run",
            "batchscore_model"
        ]
    );
    let check = |rows: &std::collections::BTreeMap<i64, (String, String, String)>,
                 runs: &std::collections::BTreeMap<String, String>,
                 sha_of: &dyn Fn(i64) -> String| {
        assert_eq!(rows.len(), 200, "README's join finds every row");
        for (key, (sha, run_id, start)) in rows {
            assert_eq!(*start, window_of(*key), "row {key}: its run's window");
            assert_eq!(*sha, sha_of(*key), "row {key}: its model");
            assert_eq!(Some(run_id), runs.get(start), "row {key}: its window's run");
        }
    };
    let joined = || row_lineage(&p, ["m.sha256", "r.run_id", "r.window_start"], LINEAGE_JOIN);
    let rows = joined().await;
    let runs = committed_runs(&p).await;
    let sha_of = |key: i64| match (key - 1000) / 40 < 3 {
        true => first.clone(),
        false => second.clone(),
    };
    check(&rows, &runs, &sha_of);
    // The source too: the model's path, through the run.
    let sources = p
        .count(&format!(
            "SELECT count(*) {LINEAGE_JOIN} WHERE r.model_source LIKE '%current.onnx%'"
        ))
        .await;
    assert_eq!(sources, 200);
    // One number per model, whatever the number of windows it scored.
    assert_eq!(p.count("SELECT count(*) FROM batchscore_models").await, 2);

    // Re-scoring the first model's windows points their rows at the new runs and model.
    let out = p.batchscore(&["run-job", "job", "--rescore-model", &first[..12]]);
    assert_exit(&out, 0);
    let rows = joined().await;
    let runs = committed_runs(&p).await;
    check(&rows, &runs, &|_| second.clone());
    assert_eq!(p.count("SELECT count(*) FROM batchscore_models").await, 2);
}

on_all_databases!(compact_lineage_joins_every_row_to_its_model_run_and_window);

async fn full_lineage_and_existing_wide_tables_keep_the_wide_row(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let full = [
        "model_version",
        "run_id",
        "window_start",
        "window_end",
        "scored_at",
    ];
    let on_row = ["p.model_version", "p.run_id", "p.window_start"];
    let from = "FROM predictions p";

    // `lineage = "full"` creates the wide table and stamps every row.
    let sha = deploy(&p, CHAMPION, "lineage = \"full\"");
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(1)]),
        0,
    );
    let mut expected = vec!["reading_id", "failure_label", "failure_probability"];
    expected.extend(full);
    assert_eq!(columns(&p, "predictions").await, expected);

    // Without `lineage`, a table that has the wide stamp keeps being filled as it is.
    deploy(&p, CHAMPION, "");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(3)]),
        0,
    );
    assert_eq!(columns(&p, "predictions").await, expected);
    let rows = row_lineage(&p, on_row, from).await;
    let runs = committed_runs(&p).await;
    assert_eq!(rows.len(), 160);
    for (key, (model, run_id, start)) in &rows {
        assert_eq!(*model, sha, "row {key}");
        assert_eq!(*start, window_of(*key), "row {key}");
        assert_eq!(Some(run_id), runs.get(start), "row {key}");
    }
    assert_scored(&p, "predictions", &[(0..4, CHAMPION)]).await;

    // Asking for compact lineage on that table is refused before anything is read, naming
    // the columns it lacks and the way out.
    deploy(&p, CHAMPION, "lineage = \"compact\"");
    let out = p.batchscore(&["run-job", "job", "--at", &after_window(4)]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("lacks column(s) batchscore_run, batchscore_model"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.count("SELECT count(*) FROM predictions").await, 160);

    // A lineage that is neither is a job file error.
    deploy(&p, CHAMPION, "lineage = \"wide\"");
    let out = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&out, 2);
    assert!(
        stdout(&out).contains("lineage = \"wide\"")
            && stdout(&out).contains("expected `compact` or `full`"),
        "{}",
        stdout(&out)
    );
}

on_all_databases!(full_lineage_and_existing_wide_tables_keep_the_wide_row);

/// A wide champion table (kept as it was) beside a compact challenger table (new): `compare`
/// pairs their rows of the same runs through the ledger.
async fn a_wide_table_and_a_compact_challenger_are_compared_by_run(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let model = format!("path = \"{}\"", onnx(CHAMPION));
    p.write_job("job", &sensor_job(&model, "lineage = \"full\""));
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(1)]),
        0,
    );
    let challenger = format!("[challenger]\npath = \"{}\"\n", onnx(CHALLENGER));
    p.write_job("job", &sensor_job(&model, &challenger));
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(4)]),
        0,
    );
    assert!(
        columns(&p, "predictions")
            .await
            .contains(&"run_id".to_owned())
    );
    assert!(
        columns(&p, "predictions_challenger")
            .await
            .contains(&"batchscore_run".to_owned())
    );
    assert_scored(&p, "predictions", &[(0..5, CHAMPION)]).await;
    assert_scored(&p, "predictions_challenger", &[(2..5, CHALLENGER)]).await;
    let out = p.batchscore(&["compare", "job", "--json"]);
    assert_exit(&out, 0);
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(got["windows"], 3, "{got}");
    let rows: Vec<&serde_json::Value> = got["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["rows"])
        .collect();
    assert_eq!(
        rows,
        [120, 120],
        "every row of the three windows, paired: {got}"
    );
}

on_all_databases!(a_wide_table_and_a_compact_challenger_are_compared_by_run);
