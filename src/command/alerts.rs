//! `batchscore alerts check` (lateness and realized performance, for cron users without a
//! daemon) and `batchscore alerts test [--route NAME]`; and [`load`], the routes as every
//! command that sends alerts reads them.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;

use crate::alerts::{self, Alerts, Counters, Status, routes};
use crate::cli::GlobalArgs;
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::shard::{Shard, job_label};
use crate::spec::{self, job_names};
use crate::with_backend;

/// The routes file of this command line, checked: `None` where there is none (and `--alerts`
/// did not ask for one). A bad file is a configuration error (exit 2), naming the route.
pub fn routes(global: &GlobalArgs) -> Result<Option<routes::Routes>, ConfigError> {
    let (path, required) = routes::locate(global.alerts_file.as_deref(), &global.jobs_dir);
    routes::load(&path, required, |var| std::env::var(var).ok())
}

/// For the commands that score (run-job, the daemon): the alerts, or, where the routes file is
/// wrong, none and an error logged. A route that cannot send must not stop the scoring; `jobs
/// validate` and `alerts check` refuse the file with exit 2.
pub fn load_for_scoring(global: &GlobalArgs, counters: Counters) -> Option<Arc<Alerts>> {
    match load(global, counters) {
        Ok(alerts) => alerts,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "alert routes unusable: scoring without alerts (batchscore jobs validate)");
            None
        }
    }
}

/// The alerts of this command line, ready to send, or `None` where there are no routes.
pub fn load(global: &GlobalArgs, counters: Counters) -> anyhow::Result<Option<Arc<Alerts>>> {
    match routes(global)? {
        Some(routes) if !routes.routes.is_empty() => {
            let alerts = Alerts::new(routes, global.public_url.clone(), counters)?;
            Ok(Some(Arc::new(alerts)))
        }
        _ => Ok(None),
    }
}

pub async fn check(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let Some(alerts) = load(global, Counters::default())? else {
        let (path, _) = routes::locate(global.alerts_file.as_deref(), &global.jobs_dir);
        println!("no alert routes in {}: nothing to send", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => check_with(backend, global, &alerts).await)?;
    alerts.settle().await;
    Ok(ExitCode::SUCCESS)
}

async fn check_with<B: Backend>(
    db: &B,
    global: &GlobalArgs,
    alerts: &Arc<Alerts>,
) -> anyhow::Result<()> {
    db::migrate(db).await?;
    let now = Utc::now();
    // Every job's watermarks in one read, as the daemon checks them.
    let marks = db::ledger::watermarks(db.pool(), None).await?;
    for name in job_names(&global.jobs_dir)? {
        let spec = match spec::load_job(&global.jobs_dir, &name) {
            Ok(spec) => spec,
            Err(err) => {
                eprintln!("warning: {err}: not checked");
                continue;
            }
        };
        let label = |index: u32| {
            let shard = Shard {
                index,
                count: spec.source.shards,
            };
            job_label(&spec.name, shard)
        };
        for shard in Shard::all(spec.source.shards) {
            if !marks.iter().any(|m| m.job == spec.name && m.shard == shard) {
                println!(
                    "{}: never run, not checked for lateness",
                    label(shard.index)
                );
            }
        }
        let mut changes = alerts::late_changes(&spec, &marks, now);
        for change in &changes {
            let state = if change.firing { "late" } else { "on time" };
            let shard = change.alert.shard.unwrap_or(0);
            println!("{}: {state}: {}", label(shard), change.alert.message);
        }
        if spec.labels.is_some() {
            let summary = crate::performance::summary(db, &spec.name).await?;
            if let Some(change) = alerts::performance_change(&spec, &summary) {
                println!("{}: {}", spec.name, change.alert.message);
                changes.push(change);
            }
        }
        alerts.raise(db, changes);
    }
    Ok(())
}

pub async fn test(global: &GlobalArgs, only: Option<String>) -> anyhow::Result<ExitCode> {
    let (path, _) = routes::locate(global.alerts_file.as_deref(), &global.jobs_dir);
    let Some(alerts) = load(global, Counters::default())? else {
        return Err(ConfigError::Alerts {
            path,
            route: None,
            problem: "no routes to test: the file is missing or holds no [[route]]".to_owned(),
        }
        .into());
    };
    let chosen: Vec<_> = alerts
        .routes()
        .iter()
        .filter(|r| only.as_ref().is_none_or(|name| &r.name == name))
        .collect();
    if chosen.is_empty() {
        let known: Vec<&str> = alerts.routes().iter().map(|r| r.name.as_str()).collect();
        return Err(ConfigError::Alerts {
            path,
            route: only,
            problem: format!("no such route (routes: {})", known.join(", ")),
        }
        .into());
    }
    let alert = alerts.test_alert();
    let mut failed = false;
    for route in chosen {
        match alerts.deliver(route, &alert, Status::Firing).await {
            Ok(answer) => println!(
                "{} ({}): HTTP {} after {} tr{}: {}",
                route.name,
                route.kind.as_str(),
                answer.status,
                answer.tries,
                if answer.tries == 1 { "y" } else { "ies" },
                answer.body.trim()
            ),
            Err(problem) => {
                failed = true;
                println!(
                    "{} ({}): FAILED: {problem}",
                    route.name,
                    route.kind.as_str()
                );
            }
        }
    }
    Ok(match failed {
        true => ExitCode::from(crate::error::EXIT_RUN_FAILED),
        false => ExitCode::SUCCESS,
    })
}
