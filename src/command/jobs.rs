//! `batchscore jobs list` and `batchscore jobs validate [NAME]`.

use std::process::ExitCode;

use comfy_table::{Table, presets::NOTHING};

use crate::cli::GlobalArgs;
use crate::db::{self, Backend};
use crate::error::{ConfigError, EXIT_CONFIG};
use crate::spec::{self, job_names, load_job};
use crate::{job, with_backend};

/// Name, schedule, model and results table of every job; a file that does not parse is listed
/// with its error, since listing is how people find out which job is broken.
pub fn list(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["NAME", "SCHEDULE", "TIMEZONE", "SHARDS", "MODEL", "RESULTS"]);
    for name in job_names(&global.jobs_dir)? {
        match load_job(&global.jobs_dir, &name) {
            Ok(spec) => table.add_row([
                name,
                spec.schedule.expression,
                spec.schedule.timezone.to_string(),
                spec.source.shards.to_string(),
                shown_model(&spec.model.source),
                spec.sink.table.to_string(),
            ]),
            Err(err) => table.add_row([name, format!("invalid: {err}")]),
        };
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Load, connect and [`job::prepare`] each job: exactly the checks a run does before reading.
pub async fn validate(global: &GlobalArgs, name: Option<String>) -> anyhow::Result<ExitCode> {
    let names = match name {
        Some(name) => vec![name],
        None => job_names(&global.jobs_dir)?,
    };
    // The alert routes first: a route that cannot send is found before it is needed.
    let routes_ok = match super::alerts::routes(global) {
        Ok(Some(routes)) => {
            let names: Vec<&str> = routes.routes.iter().map(|r| r.name.as_str()).collect();
            println!(
                "ok      alerts: {} route(s) in {}: {}",
                names.len(),
                routes.path.display(),
                names.join(", ")
            );
            true
        }
        Ok(None) => true,
        Err(err) => {
            println!("invalid alerts: {err}");
            false
        }
    };
    let db = db::connect(&global.database_url).await?;
    let mut failed = 0;
    for name in &names {
        let outcome = match load_job(&global.jobs_dir, name) {
            Ok(spec) => with_backend!(&db, backend => check(backend, spec).await),
            Err(err) => Err(err.into()),
        };
        match outcome {
            Ok(summary) => println!("ok      {name}: {summary}"),
            Err(err) => {
                failed += 1;
                println!("invalid {name}: {err:#}");
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} job(s) invalid", names.len());
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    if !routes_ok {
        eprintln!("error: the alert routes are invalid");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    Ok(ExitCode::SUCCESS)
}

/// The summary line of a valid job, then one indented line per model input and output.
async fn check<B: Backend>(db: &B, spec: spec::JobSpec) -> anyhow::Result<String> {
    let job = job::prepare(db, spec).await?;
    // What a run finds only when a window has a row: whether ONNX Runtime loads the models.
    let refused = job.load_models().await?;
    // A run scores without a challenger that cannot; validation refuses it.
    let challenger_problem = match &job.challenger {
        Some(Err(problem)) => Some(problem.clone()),
        _ => refused,
    };
    if let Some(problem) = challenger_problem {
        return Err(ConfigError::job(&job.spec.name, format!("[challenger]: {problem}")).into());
    }
    let mut notes = db.window_notes(&job.spec).await?;
    let mut lines = vec![format!(
        "{} features from {} -> {} (model {})",
        job.spec.source.features.len(),
        crate::source::source_description(&job.spec),
        job.results.table,
        shown_origin(&job.model.origin)
    )];
    lines.extend(
        job.describe_io()
            .iter()
            .map(|line| format!("          {line}")),
    );
    if let Some(Ok(challenger)) = &job.challenger {
        lines.push(format!(
            "          challenger {} -> {} (binds as the model does)",
            shown_origin(&challenger.model.origin),
            challenger.results.table
        ));
    }
    if let Some(labels) = &job.spec.labels {
        notes.extend(crate::performance::check(db, &job).await?);
        lines.push(format!(
            "          {}",
            crate::performance::describe(labels)
        ));
    }
    lines.extend(
        notes
            .iter()
            .map(|note| format!("          warning: {note}")),
    );
    Ok(lines.join("\n"))
}

/// A model file relative to the working directory, where it lies under it; a registry URI as
/// it is.
fn shown_model(source: &crate::spec::ModelSource) -> String {
    match source {
        crate::spec::ModelSource::File(path) => shown_path(path),
        crate::spec::ModelSource::Registry(uri) => uri.to_string(),
    }
}

/// A loaded model's origin, as [`shown_model`] shows its source.
fn shown_origin(origin: &crate::model::ModelOrigin) -> String {
    match origin {
        crate::model::ModelOrigin::File(path) => shown_path(path),
        crate::model::ModelOrigin::Registry(version) => version.to_string(),
    }
}

fn shown_path(path: &std::path::Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}
