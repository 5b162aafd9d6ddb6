//! `batchscore evaluate NAME [--from T --to T] [--json]`: the job's committed windows joined
//! with its `[labels]`, judged per model and stored (see [`crate::performance`]), then printed.
//! Evaluating again with the same labels changes nothing.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};

use crate::cli::GlobalArgs;
use crate::db::performance::Select;
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::job;
use crate::performance::{self, Evaluation};
use crate::spec::{self, labels::Task};
use crate::with_backend;

pub async fn run(
    global: &GlobalArgs,
    name: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    let Some(labels) = &spec.labels else {
        return Err(ConfigError::job(
            name,
            "it has no [labels]: say where the truth arrives (README: Realized performance)",
        )
        .into());
    };
    let task = labels.task.clone();
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ConfigError::job(name, "--from must be before --to").into());
    }
    let db = db::connect(&global.database_url).await?;
    let evaluation =
        with_backend!(&db, backend => evaluate(backend, spec, Select::Range { from, to }).await)?;
    if json {
        let out = serde_json::json!({
            "job": name,
            "windows": evaluation.windows,
            "changed": evaluation.changed,
            "unscored_labels": evaluation.unscored_labels,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print(name, &task, &evaluation);
    }
    Ok(ExitCode::SUCCESS)
}

async fn evaluate<B: Backend>(
    db: &B,
    spec: spec::JobSpec,
    select: Select,
) -> anyhow::Result<Evaluation> {
    crate::db::migrate(db).await?;
    let job = job::prepare(db, spec).await?;
    performance::check(db, &job).await?;
    performance::evaluate_counting_unscored(db, &job, select, Utc::now()).await
}

fn print(name: &str, task: &Task, evaluation: &Evaluation) {
    if evaluation.windows.is_empty() {
        println!("{name}: no committed window to evaluate");
        return;
    }
    let metrics: &[&str] = match task {
        Task::Classification { .. } => &[
            "auc",
            "log_loss",
            "brier",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "positive_rate",
        ],
        Task::Regression { .. } => &["mae", "rmse", "bias", "r2"],
    };
    let sharded = evaluation.windows.iter().any(|w| w.shard > 0);
    let mut table = Table::new();
    table.load_preset(NOTHING);
    let mut header = vec!["WINDOW"];
    if sharded {
        header.push("SHARD");
    }
    header.extend(["MODEL", "STATUS", "LABELLED", "COVERAGE"]);
    let upper: Vec<String> = metrics.iter().map(|m| m.to_uppercase()).collect();
    header.extend(upper.iter().map(String::as_str));
    table.set_header(header);
    for w in &evaluation.windows {
        let mut row = vec![crate::time::time_text(w.window_start)];
        if sharded {
            row.push(w.shard.to_string());
        }
        row.push(w.model.to_owned());
        row.push(w.status.to_owned());
        row.push(format!(
            "{}/{}",
            w.value("labelled").unwrap_or(0.0),
            w.value("scored").unwrap_or(0.0)
        ));
        row.push(
            w.value("coverage")
                .map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
        );
        row.extend(
            metrics
                .iter()
                .map(|m| w.value(m).map_or("-".into(), |v| format!("{v:.4}"))),
        );
        table.add_row(row);
    }
    println!("{table}");
    let windows = evaluation
        .windows
        .iter()
        .filter(|w| w.model == "champion")
        .count();
    let duplicates: f64 = evaluation
        .windows
        .iter()
        .filter(|w| w.model == "champion")
        .filter_map(|w| w.value("duplicate_labels"))
        .sum();
    println!(
        "\n{name}: {windows} window(s) evaluated, {} stored figure(s) changed",
        evaluation.changed
    );
    if duplicates > 0.0 {
        println!(
            "{name}: {duplicates} duplicate label(s) for one key: the latest by timestamp was used"
        );
    }
    if let Some(unscored) = evaluation.unscored_labels.filter(|n| *n > 0) {
        println!("{name}: {unscored} label(s) name keys the job never scored: ignored");
    }
}
