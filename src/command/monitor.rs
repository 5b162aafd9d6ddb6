//! `batchscore monitor NAME [--json]`: the latest window's drift against the job's reference, one
//! line per feature and output, worst first (exit 1 when one is in drift); and
//! `batchscore monitor set-reference NAME --from T --to T | --clear`: store the merged profile of
//! committed windows as the job's reference.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::monitor::drift::{ColumnDrift, DriftState};
use crate::plan::Window;
use crate::spec::{JobSpec, load_job};
use crate::status::drift::{Latest, latest};
use crate::time::time_text;
use crate::with_backend;

pub async fn show(global: &GlobalArgs, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let spec = load_job(&global.jobs_dir, name)?;
    let db = db::connect(&global.database_url).await?;
    let (latest, performance) = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        let performance = match &spec.labels {
            Some(_) => Some(crate::performance::summary(backend, &spec.name).await?),
            None => None,
        };
        anyhow::Ok((latest(backend, &spec).await?, performance))
    }.await)?;
    let drifted = latest
        .as_ref()
        .is_some_and(|l| l.report.drifted().next().is_some());
    if json {
        let mut out = as_json(&spec, latest.as_ref());
        if let Some(performance) = &performance {
            out["performance"] = json!({
                "window": performance.window.map(|w| json!({
                    "start": time_text(w.start),
                    "end": time_text(w.end),
                })),
                "figures": performance.figures,
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_latest(&spec, latest.as_ref());
        if let Some(performance) = &performance {
            print_performance(&spec, performance);
        }
    }
    Ok(match drifted {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    })
}

fn as_json(spec: &JobSpec, latest: Option<&Latest>) -> serde_json::Value {
    let Some(latest) = latest else {
        return json!({ "job": spec.name, "window": null, "reference": null, "drift": false, "columns": [] });
    };
    json!({
        "job": spec.name,
        "window": { "start": time_text(latest.window.start), "end": time_text(latest.window.end), "rows": latest.rows },
        "reference": latest.reference.as_ref().map(|r| json!({
            "described": r.described,
            "from": time_text(r.from),
            "to": time_text(r.to),
            "windows": r.windows,
        })),
        "on_drift": if spec.monitor.on_drift == crate::spec::monitor::OnDrift::Fail { "fail" } else { "warn" },
        "drift": latest.report.drifted().next().is_some(),
        "columns": latest.report.columns,
    })
}

/// Realized performance: the latest final window's figures and the 7 days' beside them.
fn print_performance(spec: &JobSpec, performance: &crate::performance::Summary) {
    let Some(window) = performance.window else {
        println!(
            "\nrealized performance: no final window yet (labels are final {} after a window ends)",
            spec.labels
                .as_ref()
                .map_or(String::new(), |l| humantime::format_duration(
                    l.maturity.to_std().unwrap_or_default()
                )
                .to_string())
        );
        return;
    };
    println!("\nrealized performance, latest final window {window}:");
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["MODEL", "METRIC", "LATEST", "7 DAYS"]);
    let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for f in &performance.figures {
        if f.metric == "scored" || f.metric == "duplicate_labels" {
            continue;
        }
        table.add_row([
            f.model.clone(),
            f.metric.clone(),
            shown(f.latest),
            shown(f.rolling_7d),
        ]);
    }
    println!("{table}");
}

fn print_latest(spec: &JobSpec, latest: Option<&Latest>) {
    let name = &spec.name;
    let Some(latest) = latest else {
        println!(
            "job `{name}` has no profiled window yet: every window committed from now on is profiled"
        );
        return;
    };
    println!(
        "job `{name}`, window {} ({} rows)",
        latest.window, latest.rows
    );
    match &latest.reference {
        Some(r) if r.windows > 0 => println!("reference: {}, {} windows", r.described, r.windows),
        Some(r) => println!(
            "reference: {}: no profiled window there yet, so nothing is judged",
            r.described
        ),
        None => println!(
            "no reference: set [monitor] reference in jobs/{name}.toml, or take one with `batchscore monitor set-reference {name} --from T --to T`"
        ),
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "COLUMN",
        "ROLE",
        "MEASURE",
        "SCORE",
        "THRESHOLD",
        "NULL RATE",
        "REF NULL RATE",
        "MEAN SHIFT",
        "STATE",
    ]);
    for c in &latest.report.columns {
        table.add_row([
            c.column.clone(),
            c.role.as_str().to_owned(),
            c.measure.to_owned(),
            c.score.map_or("-".to_owned(), |s| format!("{s:.4}")),
            c.threshold.to_string(),
            percent(Some(c.null_rate)),
            percent(c.reference_null_rate),
            c.mean_shift.map_or("-".to_owned(), |s| format!("{s:+.2}σ")),
            state_text(c),
        ]);
    }
    println!("{table}");
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn state_text(c: &ColumnDrift) -> String {
    match c.state {
        DriftState::Drift => format!("drift ({})", c.over.join(", ")),
        other => other.as_str().to_owned(),
    }
}

/// Store the merged profile of `name`'s committed windows inside `[from, to)` as its reference.
pub async fn set_reference(
    global: &GlobalArgs,
    name: &str,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> anyhow::Result<ExitCode> {
    let spec = load_job(&global.jobs_dir, name)?;
    let db = db::connect(&global.database_url).await?;
    let Some((from, to)) = range else {
        with_backend!(&db, backend => async {
            crate::db::migrate(backend).await?;
            crate::db::profiles::store_reference(backend.pool(), &spec.name, None).await
        }.await)?;
        println!(
            "job `{name}`: stored reference removed; {}",
            match spec.monitor.reference {
                Some(reference) => format!(
                    "jobs/{name}.toml's reference ({}) applies again",
                    reference.describe()
                ),
                None => "the job has no reference now".to_owned(),
            }
        );
        return Ok(ExitCode::SUCCESS);
    };
    if from >= to {
        return Err(ConfigError::job(name, "--from must be before --to").into());
    }
    let windows = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        let (profile, windows) = crate::db::profiles::merged_profiles(backend.pool(), &spec.name, from, to).await?;
        if windows > 0 {
            let range = Window { start: from, end: to };
            crate::db::profiles::store_reference(backend.pool(), &spec.name, Some((range, windows, &profile))).await?;
        }
        anyhow::Ok((windows, profile.columns.first().map_or(0, |c| c.rows)))
    }.await)?;
    let (windows, rows) = windows;
    if windows == 0 {
        return Err(ConfigError::job(
            name,
            format!(
                "no committed window between {} and {} has a profile: a reference is taken from windows scored (with profiles on) inside the range; `batchscore status {name}` lists the job's windows",
                time_text(from),
                time_text(to)
            ),
        )
        .into());
    }
    println!(
        "job `{name}`: reference set to {windows} windows from {} to {} ({rows} rows); `batchscore monitor {name}` compares the latest window with it",
        time_text(from),
        time_text(to)
    );
    Ok(ExitCode::SUCCESS)
}
