//! `batchscore compare NAME [--windows N] [--json]`: the job's model and its challenger side by
//! side on the latest windows both scored, row by row on the same keys. Per result column: for
//! labels, the agreement rate and the confusion between the two; for numbers, the mean and max
//! absolute difference, the correlation and the PSI between the two distributions.

use std::collections::BTreeSet;
use std::process::ExitCode;

use comfy_table::{Table, presets::NOTHING};

use crate::challenger::{LabelComparison, NumberComparison, compare_labels, compare_numbers};
use crate::cli::GlobalArgs;
use crate::db::lineage::challenged_windows;
use crate::db::paired::{PairedValues, paired_results};
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::job;
use crate::ledger::RunRef;
use crate::plan::Window;
use crate::spec::{self, JobSpec};
use crate::with_backend;

/// One result column, compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Compared {
    Number {
        column: String,
        #[serde(flatten)]
        figures: Option<NumberComparison>,
    },
    Label {
        column: String,
        #[serde(flatten)]
        figures: Option<LabelComparison>,
    },
}

/// What `compare` found.
#[derive(Debug, serde::Serialize)]
struct Comparison {
    job: String,
    windows: usize,
    /// The range the windows span.
    first_window_start: Option<String>,
    last_window_end: Option<String>,
    /// The sha256s of the models and challengers that scored them.
    models: BTreeSet<String>,
    challengers: BTreeSet<String>,
    columns: Vec<Compared>,
}

pub async fn run(
    global: &GlobalArgs,
    name: &str,
    windows: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    if spec.challenger.is_none() {
        return Err(
            ConfigError::job(name, "it has no [challenger] to compare its model with").into(),
        );
    }
    let db = db::connect(&global.database_url).await?;
    let comparison = with_backend!(&db, backend => compare(backend, spec, windows).await)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print(&comparison);
    }
    Ok(ExitCode::SUCCESS)
}

async fn compare<B: Backend>(db: &B, spec: JobSpec, limit: u32) -> anyhow::Result<Comparison> {
    crate::db::migrate(db).await?;
    // The result columns and their types, as the model binds them.
    let job = job::prepare(db, spec).await?;
    let table = job
        .challenger_table
        .as_ref()
        .expect("the job has a challenger");
    let windows = challenged_windows(db.pool(), &job.spec.name, limit).await?;
    let runs: Vec<RunRef> = windows.iter().map(|w| w.run.clone()).collect();
    let paired = paired_results(db.pool(), &job.results, table, &runs).await?;
    let columns = job
        .results
        .outputs
        .iter()
        .zip(paired)
        .map(|((column, _), values)| {
            let column = column.as_str().to_owned();
            match values {
                PairedValues::Numbers(pairs) => Compared::Number {
                    column,
                    figures: compare_numbers(&pairs),
                },
                PairedValues::Labels(pairs) => Compared::Label {
                    column,
                    figures: compare_labels(&pairs),
                },
            }
        })
        .collect();
    let span = windows.iter().map(|w| w.window).reduce(|a, b| Window {
        start: a.start.min(b.start),
        end: a.end.max(b.end),
    });
    Ok(Comparison {
        job: job.spec.name.clone(),
        windows: windows.len(),
        first_window_start: span.map(|s| crate::time::time_text(s.start)),
        last_window_end: span.map(|s| crate::time::time_text(s.end)),
        models: windows.iter().map(|w| w.model_sha256.clone()).collect(),
        challengers: windows
            .iter()
            .filter_map(|w| w.challenger_sha256.clone())
            .collect(),
        columns,
    })
}

fn print(comparison: &Comparison) {
    let Comparison { job, windows, .. } = comparison;
    if *windows == 0 {
        println!("{job}: no committed window has the challenger's rows yet");
        return;
    }
    let short = |shas: &BTreeSet<String>| {
        shas.iter()
            .map(|s| s[..12].to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "job:        {job}\nwindows:    {windows}, [{}, {})\nmodel:      {}\nchallenger: {}\n",
        comparison.first_window_start.as_deref().unwrap_or("?"),
        comparison.last_window_end.as_deref().unwrap_or("?"),
        short(&comparison.models),
        short(&comparison.challengers)
    );
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "COLUMN",
        "KIND",
        "ROWS",
        "AGREEMENT",
        "MEAN |DIFF|",
        "MAX |DIFF|",
        "CORRELATION",
        "PSI",
    ]);
    let dash = || "-".to_owned();
    let figure = |v: f64| format!("{v:.4}");
    for compared in &comparison.columns {
        let row = match compared {
            Compared::Number { column, figures } => match figures {
                Some(f) => [
                    column.clone(),
                    "number".into(),
                    f.rows.to_string(),
                    dash(),
                    figure(f.mean_abs_diff),
                    figure(f.max_abs_diff),
                    f.correlation.map_or_else(dash, figure),
                    figure(f.psi),
                ],
                None => [
                    column.clone(),
                    "number".into(),
                    "0".into(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                ],
            },
            Compared::Label { column, figures } => match figures {
                Some(f) => [
                    column.clone(),
                    "label".into(),
                    f.rows.to_string(),
                    format!("{:.2}%", f.agreement * 100.0),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                ],
                None => [
                    column.clone(),
                    "label".into(),
                    "0".into(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                ],
            },
        };
        table.add_row(row);
    }
    println!("{table}");
    for compared in &comparison.columns {
        if let Compared::Label {
            column,
            figures: Some(figures),
        } = compared
        {
            println!("\n{column}: rows by model's label (down) and challenger's (across)");
            println!("{}", confusion_table(figures));
        }
    }
}

fn confusion_table(figures: &LabelComparison) -> Table {
    let labels: BTreeSet<&String> = figures
        .confusion
        .iter()
        .flat_map(|(a, row)| std::iter::once(a).chain(row.keys()))
        .collect();
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(std::iter::once(String::new()).chain(labels.iter().map(|l| l.to_string())));
    for model in &labels {
        let row = figures.confusion.get(*model);
        let cells = labels.iter().map(|challenger| {
            row.and_then(|r| r.get(*challenger))
                .copied()
                .unwrap_or(0)
                .to_string()
        });
        table.add_row(std::iter::once(model.to_string()).chain(cells));
    }
    table
}
