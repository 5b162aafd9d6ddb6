//! Job files mutated at random (keys and values edited, wrong types, huge numbers, empty and
//! 1 MB strings, Unicode names, duplicate keys), each through `jobs validate` and `run-job`:
//! exit 0, or exit 2 naming the file or the job, within the lease, writing nothing.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use toml::Value;

use crate::support::*;

/// A valid job over `sensor_readings`, with every section a file may have.
const BASE: &str = r#"
description = "Failure risk"
schedule = "*/10 * * * *"
timezone = "Europe/Berlin"
[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = 400
[window]
size = "10m"
lateness = "1m"
catch_up = "all"
max_catch_up = 5
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "predictions"
[bad_rows]
policy = "quarantine"
max_fraction = 0.5
[monitor]
min_rows = 10
"#;

/// Every key of [`BASE`], as `section.key` (or `key` at the top).
const PATHS: [&str; 22] = [
    "description",
    "schedule",
    "timezone",
    "source.table",
    "source.key",
    "source.timestamp",
    "source.features",
    "source.chunk_rows",
    "window.size",
    "window.lateness",
    "window.catch_up",
    "window.max_catch_up",
    "model.path",
    "outputs.failure_label",
    "outputs.failure_probability",
    "sink.table",
    "bad_rows.policy",
    "bad_rows.max_fraction",
    "monitor.min_rows",
    "source.shards",
    "model.sha256",
    "inputs.features",
];

/// Values a hostile or careless author writes.
fn values() -> impl Strategy<Value = Value> {
    let text = |s: &str| Value::String(s.to_owned());
    prop_oneof![
        Just(text("")),
        Just(Value::String("x".repeat(1 << 20))),
        Just(text("température")),
        Just(text("名前")),
        Just(text("🙂")),
        Just(text("a\u{0}b")),
        Just(text("1000y")),
        Just(text("1000 years")),
        Just(text("30000000y")),
        Just(text("0s")),
        Just(text("-5m")),
        Just(text("1ns")),
        Just(text("99999999999999999999s")),
        Just(text("probabilities[99999999999999999999]")),
        Just(text("label[-1]")),
        Just(text("sensor_readings; DROP TABLE sensor_readings")),
        Just(text("* * * * * * * *")),
        Just(text("latest")),
        Just(Value::Integer(0)),
        Just(Value::Integer(-1)),
        Just(Value::Integer(1 << 40)),
        Just(Value::Integer(i64::MAX)),
        Just(Value::Integer(i64::MIN)),
        Just(Value::Float(f64::NAN)),
        Just(Value::Float(f64::INFINITY)),
        Just(Value::Float(1e308)),
        Just(Value::Boolean(true)),
        Just(Value::Array(vec![])),
        Just(Value::Array(vec![text("rpm"), text("rpm")])),
        Just(Value::Array(vec![Value::Integer(1), text("名前")])),
        Just(Value::Table(toml::Table::new())),
        "[a-zA-Z_][a-zA-Z0-9_]{0,70}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Integer),
    ]
}

#[derive(Clone)]
enum Mutation {
    Set(usize, Value),
    Remove(usize),
    Unknown(usize),
    /// A key written twice: a TOML error.
    Duplicate(usize),
}

impl std::fmt::Debug for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mutation::Set(p, v) => write!(f, "set {} = {}", PATHS[*p], brief(&v.to_string())),
            Mutation::Remove(p) => write!(f, "remove {}", PATHS[*p]),
            Mutation::Unknown(p) => write!(f, "add {}_typo", PATHS[*p]),
            Mutation::Duplicate(p) => write!(f, "duplicate {}", PATHS[*p]),
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = 0..PATHS.len();
    prop_oneof![
        6 => (path.clone(), values()).prop_map(|(p, v)| Mutation::Set(p, v)),
        2 => path.clone().prop_map(Mutation::Remove),
        1 => path.clone().prop_map(Mutation::Unknown),
        1 => path.prop_map(Mutation::Duplicate),
    ]
}

/// [`BASE`] with `mutations` applied, as the text of a job file.
fn mutated(mutations: &[Mutation]) -> String {
    let base = BASE.replace("{models}", &format!("{REPO}/models"));
    let mut doc: toml::Table = toml::from_str(&base).unwrap();
    let mut duplicates = Vec::new();
    for m in mutations {
        let (section, key) = match PATHS[match m {
            Mutation::Set(p, _)
            | Mutation::Remove(p)
            | Mutation::Unknown(p)
            | Mutation::Duplicate(p) => *p,
        }]
        .split_once('.')
        {
            Some((section, key)) => (Some(section), key),
            None => (None, PATHS[0]),
        };
        let table = match section {
            Some(section) => match doc
                .entry(section)
                .or_insert_with(|| Value::Table(toml::Table::new()))
            {
                Value::Table(table) => table,
                _ => continue,
            },
            None => &mut doc,
        };
        match m {
            Mutation::Set(_, value) => {
                table.insert(key.to_owned(), value.clone());
            }
            Mutation::Remove(_) => {
                table.remove(key);
            }
            Mutation::Unknown(_) => {
                table.insert(format!("{key}_typo"), Value::Integer(1));
            }
            Mutation::Duplicate(_) => duplicates.push((section, key)),
        }
    }
    let mut text = toml::to_string(&doc).unwrap_or_default();
    for (section, key) in duplicates {
        let line = format!("{key} = \"again\"\n");
        match section {
            Some(section) => text.push_str(&format!("[{section}]\n{line}")),
            None => text.insert_str(0, &line),
        }
    }
    text
}

/// Run the binary, killing it if it outlives `limit`: (output, how long it took). Its output
/// is read as it comes, so a long message cannot fill the pipe and stall it.
pub(super) fn run_bounded(p: &Project, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = p
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !waiter.is_finished() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let took = started.elapsed();
    (waiter.join().unwrap(), took)
}

/// Text cut to its first 300 characters, for messages about a case.
fn brief(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// Rows in every table but the source: what a case may not write when it fails.
async fn written(p: &Project) -> i64 {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sensor_readings' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap();
    let mut rows = 0;
    for table in tables {
        rows += p.count(&format!("SELECT count(*) FROM \"{table}\"")).await;
    }
    rows
}

/// One mutated file through `jobs validate` and a backfill: exit 0 or 2, never a crash, a hang
/// past the lease, or (on exit 2) a row.
async fn check_case(p: &Project, text: &str, seen: &mut [usize; 2]) -> Result<(), TestCaseError> {
    let path = p.write_job("hostile", text);
    let lease = Duration::from_secs(10);
    let runs: [&[&str]; 2] = [
        &["jobs", "validate", "hostile"],
        &[
            "run-job",
            "hostile",
            "--from",
            &crate::windows::at(0),
            "--to",
            &crate::windows::at(20),
            "--lease",
            "10s",
        ],
    ];
    for args in runs {
        let before = written(p).await;
        let (out, took) = run_bounded(p, args, lease + Duration::from_secs(10));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        prop_assert!(
            said.len() < 16 * 1024,
            "{args:?} said {} bytes:\n{}",
            said.len(),
            brief(&said)
        );
        let (said, text) = (brief(&said), brief(text));
        prop_assert!(took < lease, "{args:?} took {took:?}\n{said}\n{text}");
        prop_assert!(
            !said.contains("panicked"),
            "{args:?} panicked:\n{said}\n{text}"
        );
        match out.status.code() {
            Some(0) => seen[0] += 1,
            Some(2) => {
                seen[1] += 1;
                prop_assert!(
                    said.contains(&path.display().to_string()) || said.contains("job `hostile`"),
                    "{args:?}: exit 2 without naming the file or the job:\n{said}\n{text}"
                );
                prop_assert_eq!(written(p).await, before, "{:?} failed but wrote rows", args);
            }
            other => prop_assert!(false, "{args:?} exited {other:?}:\n{said}\n{text}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_job_files_exit_0_or_2_and_never_half_write() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    assert_exit(&p.batchscore(&["migrate"]), 0);
    // The issue's named cases, then random ones.
    let named: Vec<Vec<Mutation>> = vec![
        vec![Mutation::Set(8, Value::String("1000y".into()))],
        vec![Mutation::Set(7, Value::Integer(0))],
        vec![Mutation::Set(7, Value::Integer(1 << 40))],
        vec![Mutation::Set(11, Value::Integer(1 << 40))],
        vec![Mutation::Set(3, Value::String(String::new()))],
        vec![Mutation::Set(0, Value::String("x".repeat(1 << 20)))],
        vec![Mutation::Set(15, Value::String("température".into()))],
        vec![Mutation::Duplicate(4)],
        // And edits a careful author makes, which must keep working.
        vec![Mutation::Set(0, Value::String("Ausfallrisiko ✓".into()))],
        vec![Mutation::Set(7, Value::Integer(1))],
        vec![Mutation::Remove(18)],
    ];
    // Runs that exited 0 and 2: a property that held only because every case failed early, or
    // none did, would prove little.
    let mut seen = [0usize; 2];
    for case in &named {
        let text = mutated(case);
        if let Err(e) = check_case(&p, &text, &mut seen).await {
            panic!("{case:?}: {e}");
        }
    }
    // A fixed seed: the same 120 cases on every run, so the counts below cannot flake with
    // the draw (an unseeded run once drew 2 exit-0 cases); PROPTEST_RNG_SEED explores others.
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(32);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 120,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = proptest::collection::vec(mutation(), 1..4);
    let handle = tokio::runtime::Handle::current();
    let seen = std::sync::Mutex::new(seen);
    let result = runner.run(&strategy, |mutations| {
        let text = mutated(&mutations);
        let mut counts = *seen.lock().unwrap();
        let outcome =
            tokio::task::block_in_place(|| handle.block_on(check_case(&p, &text, &mut counts)));
        *seen.lock().unwrap() = counts;
        outcome
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let [ok, refused] = *seen.lock().unwrap();
    eprintln!("{ok} runs exited 0, {refused} exited 2");
    assert!(
        ok >= 5 && refused >= 20,
        "{ok} runs exited 0, {refused} exited 2"
    );
}
