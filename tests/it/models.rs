//! Models as teams export them, end to end on both databases: per-column and named inputs,
//! text, integer, boolean and float64 features, ZipMap and string outputs, LightGBM and
//! XGBoost through onnxmltools. Every prediction is compared with ONNX Runtime's Python output
//! on the same rows (`tests/fixtures/*.json`, written by `models/train.py`): numbers within
//! 1e-5, labels exactly. And the ways such a job can be wrong, each with its exit code and
//! message.

use serde_json::Value;
use sqlx::Row;

use crate::support::*;

/// A fixture's rows as a table: `id` (row `i` has key `1000 + i`), `ts` (row `i` at
/// `row_time(i)`), then the fixture's columns, declared as its `types` say.
struct Table {
    fixture: Value,
}

impl Table {
    fn load(name: &str) -> Table {
        let text = std::fs::read_to_string(format!("{REPO}/tests/fixtures/{name}.json")).unwrap();
        Table {
            fixture: serde_json::from_str(&text).unwrap(),
        }
    }

    fn columns(&self) -> Vec<String> {
        self.fixture["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    }

    fn rows(&self) -> &Vec<Value> {
        self.fixture["rows"].as_array().unwrap()
    }

    fn declared(&self, kind: Kind, column: &str) -> &'static str {
        let ty = self.fixture["types"][column].as_str().unwrap();
        match (kind, ty) {
            (Kind::Sqlite, "text") => "TEXT",
            (Kind::Sqlite, "real") => "REAL",
            (Kind::Sqlite, "integer") => "INTEGER",
            (Kind::Sqlite, "boolean") => "BOOLEAN",
            (Kind::Postgres, "text") => "text",
            (Kind::Postgres, "real") => "double precision",
            (Kind::Postgres, "integer") => "bigint",
            (Kind::Postgres, "boolean") => "boolean",
            (Kind::Mysql, "text") => "LONGTEXT",
            (Kind::Mysql, "real") => "DOUBLE",
            (Kind::Mysql, "integer") => "BIGINT",
            (Kind::Mysql, "boolean") => "BOOLEAN",
            other => panic!("unknown column type {other:?}"),
        }
    }

    /// Create `table` with the fixture's columns renamed by `rename` and insert every row.
    async fn seed_as(&self, p: &Project, table: &str, rename: &dyn Fn(&str) -> String) {
        let columns = self.columns();
        let ts = p.kind.time_type();
        let ddl: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", rename(c), self.declared(p.kind, c)))
            .collect();
        p.execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, ts {ts} NOT NULL, {})",
            ddl.join(", ")
        ))
        .await;
        let values: Vec<String> = self
            .rows()
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut cells = vec![(1000 + i).to_string(), p.kind.time_literal(row_time(i))];
                cells.extend(columns.iter().map(|c| {
                    let boolean = self.fixture["types"][c] == "boolean";
                    literal(p.kind, &row["features"][c], boolean)
                }));
                format!("({})", cells.join(", "))
            })
            .collect();
        p.execute(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
            .await;
    }

    async fn seed(&self, p: &Project, table: &str) {
        self.seed_as(p, table, &|c| c.to_owned()).await;
    }

    /// Output `name` of row `row`, picked like a job's reference: `pick` is a column number of
    /// a 2-D output or a ZipMap's class label; `None` for 1-D and `[N, 1]` outputs.
    fn expected(&self, row: usize, name: &str, pick: Option<&str>) -> Value {
        let value = &self.rows()[row]["outputs"][name];
        match (value, pick) {
            (Value::Array(items), Some(index)) => items[index.parse::<usize>().unwrap()].clone(),
            (Value::Array(items), None) => items[0].clone(),
            (Value::Object(map), Some(label)) => map[label].clone(),
            (scalar, None) => scalar.clone(),
            (other, pick) => panic!("cannot pick {pick:?} from {other}"),
        }
    }
}

/// A fixture value as an SQL literal.
fn literal(kind: Kind, value: &Value, boolean: bool) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(text) => format!("'{}'", text.replace('\'', "''")),
        Value::Bool(b) => match kind {
            Kind::Postgres => b.to_string(),
            _ => (*b as i32).to_string(),
        },
        Value::Number(n) if boolean && kind == Kind::Postgres => {
            (n.as_f64().unwrap() != 0.0).to_string()
        }
        Value::Number(n) => n.to_string(),
        other => panic!("no literal for {other}"),
    }
}

/// A job scoring the whole of `table` (all fixture rows fall in one day).
fn job(table: &str, model: &str, features: &str, extra: &str, outputs: &str) -> String {
    format!(
        r#"
schedule = "0 0 * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
{features}
[window]
size = "1d"
[model]
path = "{model}"
{extra}
[outputs]
{outputs}
[sink]
table = "predictions"
"#
    )
}

fn features_line(columns: &[String]) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    format!("features = [{}]", quoted.join(", "))
}

/// Seed `table` with the rows of `tests/fixtures/FIXTURE.json` (row `i`: key `1000 + i`).
pub(crate) async fn seed_fixture(p: &Project, fixture: &str, table: &str) {
    Table::load(fixture).seed(p, table).await;
}

/// The day job over table `data` (seeded from `fixture`) scored by `model` (relative to the
/// repository), with `extra` sections.
pub(crate) fn write_day_job(p: &Project, model: &str, fixture: &str, outputs: &str, extra: &str) {
    let features = features_line(&Table::load(fixture).columns());
    p.write_job(
        "job",
        &job(
            "data",
            &format!("{REPO}/{model}"),
            &features,
            extra,
            outputs,
        ),
    );
}

pub(crate) fn run_day(p: &Project) -> std::process::Output {
    p.batchscore(&[
        "run-job",
        "job",
        "--from",
        "2026-01-10T00:00:00Z",
        "--to",
        "2026-01-11T00:00:00Z",
    ])
}

/// `column` of `predictions` by key, as text (labels) or as a double (scores).
async fn predictions(p: &Project, column: &str, text: bool) -> Vec<(i64, Value)> {
    let ty = match (text, p.kind) {
        (true, Kind::Mysql) => "CHAR",
        (true, _) => "TEXT",
        (false, Kind::Mysql) => "DOUBLE",
        (false, _) => "DOUBLE PRECISION",
    };
    let sql = format!("SELECT id, CAST({column} AS {ty}) FROM predictions ORDER BY id");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let value = match text {
                true => Value::from(r.get::<String, _>(1)),
                false => Value::from(r.get::<f64, _>(1)),
            };
            (r.get(0), value)
        })
        .collect()
}

/// How a result column is compared with the fixture.
enum Expect<'a> {
    /// Within 1e-5 of output `name` (picked by `pick`).
    Close(&'a str, Option<&'a str>),
    /// Exactly the label (integer, string or boolean) of output `name`.
    Exact(&'a str),
}

/// Every fixture row was scored, each result column as `expect` says.
async fn assert_predictions(p: &Project, table: &Table, expect: &[(&str, Expect<'_>)]) {
    let n = table.rows().len();
    for (column, expect) in expect {
        let text = matches!(expect, Expect::Exact(_));
        let got = predictions(p, column, text).await;
        let keys: Vec<i64> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            (0..n).map(|i| 1000 + i as i64).collect::<Vec<_>>(),
            "{column}: every row scored once"
        );
        for (key, value) in &got {
            let row = (*key - 1000) as usize;
            match expect {
                Expect::Close(name, pick) => {
                    let want = table.expected(row, name, *pick).as_f64().unwrap();
                    let have = value.as_f64().unwrap();
                    assert!(
                        (have - want).abs() <= 1e-5,
                        "{column} row {row}: batchscore {have} vs ONNX Runtime {want}"
                    );
                }
                Expect::Exact(name) => {
                    // As the database shows the stored label in text.
                    let want = Value::from(match table.expected(row, name, None) {
                        Value::String(s) => s,
                        Value::Bool(b) if p.kind == Kind::Postgres => b.to_string(),
                        Value::Bool(b) => (b as i32).to_string(),
                        other => other.to_string(),
                    });
                    assert_eq!(value, &want, "{column} row {row}: label");
                }
            }
        }
    }
}

/// Seed `fixture` as table `data`, score it with `model` (features named after the fixture's
/// columns), and compare the predictions.
async fn score_fixture(
    kind: Kind,
    fixture: &str,
    model: &str,
    outputs: &str,
    expect: &[(&str, Expect<'_>)],
) -> Option<Project> {
    let p = Project::new(kind).await?;
    let table = Table::load(fixture);
    table.seed(&p, "data").await;
    let model = format!("{REPO}/{model}");
    let features = features_line(&table.columns());
    p.write_job("job", &job("data", &model, &features, "", outputs));
    let out = run_day(&p);
    assert_exit(&out, 0);
    assert_predictions(&p, &table, expect).await;
    Some(p)
}

// ---- model families ------------------------------------------------------------------------

/// The standard scikit-learn pipeline export (one-hot text, scaled numbers, one input per
/// column), matched to the columns by name, with ZipMap off.
async fn sklearn_pipeline(kind: Kind) {
    score_fixture(
        kind,
        "churn",
        "tests/fixtures/churn.onnx",
        "churned = \"label\"\np_churn = \"probabilities[1]\"",
        &[
            ("churned", Expect::Exact("label")),
            ("p_churn", Expect::Close("probabilities", Some("1"))),
        ],
    )
    .await;
}
on_all_databases!(sklearn_pipeline);

/// The same pipeline with skl2onnx's default ZipMap output, picked by class label.
async fn sklearn_pipeline_zipmap(kind: Kind) {
    score_fixture(
        kind,
        "churn_zipmap",
        "tests/fixtures/churn_zipmap.onnx",
        "churned = \"output_label\"\np_churn = \"output_probability[1]\"\np_stay = \"output_probability[0]\"",
        &[
            ("churned", Expect::Exact("output_label")),
            ("p_churn", Expect::Close("output_probability", Some("1"))),
            ("p_stay", Expect::Close("output_probability", Some("0"))),
        ],
    )
    .await;
}
on_all_databases!(sklearn_pipeline_zipmap);

/// String classes: the label into a text column, a class's probability by its name.
async fn string_classes_zipmap(kind: Kind) {
    let Some(p) = score_fixture(
        kind,
        "tier_zipmap",
        "tests/fixtures/tier_zipmap.onnx",
        "tier = \"output_label\"\np_gold = 'output_probability[\"gold\"]'\np_bronze = \"output_probability['bronze']\"",
        &[
            ("tier", Expect::Exact("output_label")),
            ("p_gold", Expect::Close("output_probability", Some("gold"))),
            ("p_bronze", Expect::Close("output_probability", Some("bronze"))),
        ],
    )
    .await
    else {
        return;
    };
    // The results table batchscore made holds the label as text.
    let declared = match p.kind {
        Kind::Sqlite => {
            "SELECT count(*) FROM pragma_table_info('predictions') WHERE name = 'tier' AND type = 'TEXT'"
        }
        Kind::Postgres => {
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'predictions' AND column_name = 'tier' AND data_type = 'text'"
        }
        Kind::Mysql => {
            "SELECT count(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'predictions' AND COLUMN_NAME = 'tier' AND DATA_TYPE = 'longtext'"
        }
    };
    assert_eq!(p.count(declared).await, 1);
}
on_all_databases!(string_classes_zipmap);

async fn lightgbm_classifier(kind: Kind) {
    score_fixture(
        kind,
        "lightgbm_classifier",
        "tests/fixtures/lightgbm_classifier.onnx",
        "label = \"label\"\np = \"probabilities[1]\"",
        &[
            ("label", Expect::Exact("label")),
            ("p", Expect::Close("probabilities", Some("1"))),
        ],
    )
    .await;
}
on_all_databases!(lightgbm_classifier);

async fn xgboost_regressor(kind: Kind) {
    score_fixture(
        kind,
        "xgboost_regressor",
        "tests/fixtures/xgboost_regressor.onnx",
        "prediction = \"variable\"",
        &[("prediction", Expect::Close("variable", None))],
    )
    .await;
}
on_all_databases!(xgboost_regressor);

async fn float64_inputs(kind: Kind) {
    score_fixture(
        kind,
        "float64_regressor",
        "tests/fixtures/float64_regressor.onnx",
        "prediction = \"variable\"",
        &[("prediction", Expect::Close("variable", None))],
    )
    .await;
}
on_all_databases!(float64_inputs);

async fn int64_input(kind: Kind) {
    score_fixture(
        kind,
        "int64_input",
        "tests/fixtures/int64_input.onnx",
        "prediction = \"variable\"",
        &[("prediction", Expect::Close("variable", None))],
    )
    .await;
}
on_all_databases!(int64_input);

/// int32, bool, 1-D string and 1-D float64 inputs; float64, string and bool outputs.
async fn every_element_type(kind: Kind) {
    score_fixture(
        kind,
        "mixed_types",
        "tests/fixtures/mixed_types.onnx",
        "total = \"total\"\ncode = \"code_out\"\nactive = \"active_out\"",
        &[
            ("total", Expect::Close("total", None)),
            ("code", Expect::Exact("code_out")),
            ("active", Expect::Exact("active_out")),
        ],
    )
    .await;
}
on_all_databases!(every_element_type);

/// Columns named otherwise than the inputs, mapped in `[inputs]`, one of them grouping columns.
async fn explicit_inputs(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let table = Table::load("churn");
    table
        .seed_as(&p, "data", &|c| format!("customer_{c}"))
        .await;
    let inputs = "[inputs]\nregion = [\"customer_region\"]\namount = [\"customer_amount\"]\nitems = [\"customer_items\"]";
    let model = format!("{REPO}/tests/fixtures/churn.onnx");
    p.write_job(
        "job",
        &job("data", &model, "", inputs, "p_churn = \"probabilities[1]\""),
    );
    assert_exit(&run_day(&p), 0);
    assert_predictions(
        &p,
        &table,
        &[("p_churn", Expect::Close("probabilities", Some("1")))],
    )
    .await;

    // One 2-D input fed from four columns, listed in [inputs] rather than source.features.
    let p = Project::new(kind).await.unwrap();
    let table = Table::load("xgboost_regressor");
    table.seed(&p, "data").await;
    let columns: Vec<String> = table.columns().iter().map(|c| format!("\"{c}\"")).collect();
    let inputs = format!("[inputs]\ninput = [{}]", columns.join(", "));
    let model = format!("{REPO}/tests/fixtures/xgboost_regressor.onnx");
    p.write_job(
        "job",
        &job("data", &model, "", &inputs, "prediction = \"variable\""),
    );
    assert_exit(&run_day(&p), 0);
    assert_predictions(
        &p,
        &table,
        &[("prediction", Expect::Close("variable", None))],
    )
    .await;
}
on_all_databases!(explicit_inputs);

/// `jobs validate` lists each input with its type and columns, each output with its type and
/// result column.
#[tokio::test]
async fn validate_shows_inputs_and_outputs() {
    let p = Project::sqlite().await;
    Table::load("churn_zipmap").seed(&p, "data").await;
    let model = format!("{REPO}/tests/fixtures/churn_zipmap.onnx");
    p.write_job(
        "job",
        &job(
            "data",
            &model,
            "features = [\"region\", \"amount\", \"items\"]",
            "",
            "churned = \"output_label\"\np_churn = \"output_probability[1]\"",
        ),
    );
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for expected in [
        "ok      job: 3 features from table data -> predictions",
        "input  region                 string[N,1]              <- region (text)",
        "input  amount                 float32[N,1]             <- amount (real)",
        "input  items                  int64[N,1]               <- items (integer)",
        "output output_label           int64[N]                 -> churned (integer)",
        "output output_probability[1]  seq(map(int64,float32))  -> p_churn (float)",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }
}

// ---- bad input -----------------------------------------------------------------------------

/// The churn table and a job on it whose `[inputs]`/`[outputs]` are `extra`/`outputs`.
async fn churn_project(kind: Kind, features: &str, extra: &str, outputs: &str) -> Option<Project> {
    let p = Project::new(kind).await?;
    Table::load("churn").seed(&p, "data").await;
    let model = format!("{REPO}/tests/fixtures/churn_zipmap.onnx");
    p.write_job("job", &job("data", &model, features, extra, outputs));
    Some(p)
}

const CHURN_FEATURES: &str = "features = [\"region\", \"amount\", \"items\"]";
const P_CHURN: &str = "p_churn = \"output_probability[1]\"";

/// `jobs validate` and `run-job` both exit 2 naming the problem, and nothing is written.
async fn assert_refused(p: &Project, expected: &[&str]) {
    let validate = p.batchscore(&["jobs", "validate", "job"]);
    assert_exit(&validate, 2);
    let run = run_day(p);
    assert_exit(&run, 2);
    for text in [stdout(&validate), stderr(&run)] {
        for needle in expected {
            assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
        }
    }
    assert!(!p.table_exists("predictions").await, "nothing is written");
}

async fn input_mapping_mistakes(kind: Kind) {
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "features = [\"region\", \"amount\", \"basket\"]",
            "",
            &[
                "job `job`",
                "has 3 inputs (region, amount, items), and source.features has no column named `items`",
                "[inputs]",
            ],
        ),
        (
            "",
            "[inputs]\nregion = [\"region\"]\namount = [\"amount\"]",
            &["model input `items` is fed by nothing: add it to [inputs]"],
        ),
        (
            "",
            "[inputs]\nregion = [\"region\"]\namount = [\"amount\"]\nitems = [\"items\"]\nbasket = []",
            &["inputs.basket must be a non-empty list"],
        ),
        (
            CHURN_FEATURES,
            "[inputs]\nregion = [\"region\"]\namount = [\"amount\"]\nitem_count = [\"items\"]",
            &[
                "inputs.item_count: model",
                "has no input `item_count` (its inputs: region, amount, items)",
            ],
        ),
        (
            "",
            "[inputs]\nregion = [\"region\"]\namount = [\"amount\", \"region\"]\nitems = [\"items\"]",
            &["inputs.amount: column `region` already feeds input `region`"],
        ),
    ];
    for (features, extra, expected) in cases {
        let Some(p) = churn_project(kind, features, extra, P_CHURN).await else {
            return;
        };
        assert_refused(&p, expected).await;
    }
}
on_all_databases!(input_mapping_mistakes);

/// A column whose type cannot feed its input is refused before any row is read, naming the
/// column, the input and both types.
async fn column_type_cannot_feed_input(kind: Kind) {
    let (real, text, ts) = match kind {
        Kind::Sqlite => ("REAL", "TEXT", "TEXT"),
        Kind::Postgres => ("double precision", "text", "timestamptz"),
        Kind::Mysql => ("DOUBLE", "TEXT", "DATETIME(6)"),
    };
    let cases = [
        (
            real,
            "feature column `region` in table data has type real, which cannot feed model input `region` (string)",
        ),
        (
            text,
            "feature column `items` in table data has type real, which cannot feed model input `items` (int64)",
        ),
    ];
    for (region, expected) in cases {
        let Some(p) = Project::new(kind).await else {
            return;
        };
        p.execute(&format!(
            "CREATE TABLE data (id bigint PRIMARY KEY, ts {ts} NOT NULL, region {region}, amount {real}, items {real})"
        ))
        .await;
        let model = format!("{REPO}/tests/fixtures/churn_zipmap.onnx");
        p.write_job("job", &job("data", &model, CHURN_FEATURES, "", P_CHURN));
        assert_refused(&p, &[expected]).await;
    }
}
on_all_databases!(column_type_cannot_feed_input);

async fn output_reference_mistakes(kind: Kind) {
    let cases: [(&str, &[&str]); 4] = [
        (
            "p = \"output_probability[7]\"",
            &[
                "outputs.p = \"output_probability[7]\": ZipMap output `output_probability` has no class 7 (its classes: 0, 1)",
            ],
        ),
        (
            "p = 'output_probability[\"yes\"]'",
            &[
                "output `output_probability` is a ZipMap with integer classes (its classes: 0, 1): pick one, like output_probability[1]",
            ],
        ),
        (
            "p = \"output_probability\"",
            &["is a ZipMap with integer classes"],
        ),
        (
            "p = 'output_label[\"1\"]'",
            &["output `output_label` is a tensor, not a ZipMap, so it takes a column number"],
        ),
    ];
    for (outputs, expected) in cases {
        let Some(p) = churn_project(kind, CHURN_FEATURES, "", outputs).await else {
            return;
        };
        assert_refused(&p, expected).await;
    }
    // A string-class ZipMap: the label must be one of its classes.
    let Some(p) = Project::new(kind).await else {
        return;
    };
    Table::load("tier_zipmap").seed(&p, "data").await;
    let model = format!("{REPO}/tests/fixtures/tier_zipmap.onnx");
    p.write_job(
        "job",
        &job(
            "data",
            &model,
            CHURN_FEATURES,
            "",
            "p = 'output_probability[\"platinum\"]'",
        ),
    );
    assert_refused(
        &p,
        &["ZipMap output `output_probability` has no class \"platinum\" (its classes: "],
    )
    .await;
}
on_all_databases!(output_reference_mistakes);

async fn fill_of_the_wrong_type(kind: Kind) {
    let Some(p) = churn_project(
        kind,
        &format!("{CHURN_FEATURES}\n[bad_rows]\nfill = {{ region = 0 }}"),
        "",
        P_CHURN,
    )
    .await
    else {
        return;
    };
    assert_refused(
        &p,
        &["bad_rows.fill.region: 0 cannot fill a string input: give a string (`region` feeds model input `region`)"],
    )
    .await;
}
on_all_databases!(fill_of_the_wrong_type);

/// Key → (column, reason) of the quarantine.
async fn quarantined(p: &Project) -> std::collections::BTreeMap<i64, (String, String)> {
    let sql = format!(
        "SELECT {}, column_name, reason FROM batchscore_quarantine WHERE job = 'job'",
        p.kind.int(&p.kind.quote("key"))
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&p.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// A NULL in a text feature is a bad row like any other: quarantined, or filled with a string
/// and scored as ONNX Runtime scores that string. Text a string input cannot take (over-long;
/// on SQLite also invalid UTF-8 or with a NUL) is a bad row, never a crash.
async fn text_bad_rows(kind: Kind) {
    let table = Table::load("churn");
    let unknown: Vec<i64> = (0..table.rows().len())
        .filter(|&i| table.rows()[i]["features"]["region"] == "unknown")
        .map(|i| 1000 + i as i64)
        .collect();
    assert_eq!(unknown.len(), 6, "the fixture's unseen-region rows");
    let model = format!("{REPO}/tests/fixtures/churn.onnx");
    let outputs = "p_churn = \"probabilities[1]\"";
    let null_unknown = "UPDATE data SET region = NULL WHERE region = 'unknown'";

    // Filled: every row scored, the filled ones as the model scores region "unknown".
    let Some(p) = Project::new(kind).await else {
        return;
    };
    table.seed(&p, "data").await;
    p.execute(null_unknown).await;
    let filled = format!("{CHURN_FEATURES}\n[bad_rows]\nfill = {{ region = \"unknown\" }}");
    p.write_job("job", &job("data", &model, &filled, "", outputs));
    assert_exit(&run_day(&p), 0);
    assert_predictions(
        &p,
        &table,
        &[("p_churn", Expect::Close("probabilities", Some("1")))],
    )
    .await;

    // Quarantined: the NULL rows and the unreadable texts, each with its reason; the rest
    // scored as ONNX Runtime scores them.
    let p = Project::new(kind).await.unwrap();
    table.seed(&p, "data").await;
    p.execute(null_unknown).await;
    let long = match kind {
        Kind::Sqlite => "printf('%.70000c', 'x')",
        Kind::Postgres | Kind::Mysql => "repeat('x', 70000)",
    };
    p.execute(&format!("UPDATE data SET region = {long} WHERE id = 1001"))
        .await;
    let mut expected: std::collections::BTreeMap<i64, (String, String)> = unknown
        .iter()
        .map(|k| (*k, ("region".to_owned(), "is NULL".to_owned())))
        .collect();
    expected.insert(
        1001,
        (
            "region".into(),
            "is 70000 bytes of text, over the 65536-byte limit".into(),
        ),
    );
    if kind == Kind::Sqlite {
        p.execute("UPDATE data SET region = CAST(X'6E6FC328' AS TEXT) WHERE id = 1002")
            .await;
        p.execute("UPDATE data SET region = 'no' || char(0) || 'rth' WHERE id = 1003")
            .await;
        expected.insert(1002, ("region".into(), "is not valid UTF-8 text".into()));
        expected.insert(
            1003,
            ("region".into(), "holds text with a NUL character".into()),
        );
    }
    let quarantine = format!("{CHURN_FEATURES}\n[bad_rows]\nmax_fraction = 0.2");
    p.write_job("job", &job("data", &model, &quarantine, "", outputs));
    assert_exit(&run_day(&p), 0);
    assert_eq!(quarantined(&p).await, expected);
    let scored = predictions(&p, "p_churn", false).await;
    assert_eq!(scored.len(), table.rows().len() - expected.len());
    for (key, value) in scored {
        assert!(!expected.contains_key(&key));
        let want = table.expected((key - 1000) as usize, "probabilities", Some("1"));
        assert!((value.as_f64().unwrap() - want.as_f64().unwrap()).abs() <= 1e-5);
    }
}
on_all_databases!(text_bad_rows);
