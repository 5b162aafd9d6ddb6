//! The subcommands, one file each; [`dispatch`] routes a parsed command line to them.

pub mod alerts;
pub mod compare;
pub mod daemon;
pub mod evaluate;
pub mod jobs;
pub mod jobs_new;
pub mod migrate;
pub mod models;
pub mod monitor;
pub mod prune;
pub mod reshard;
pub mod run_job;
mod shard_claims;
pub mod status;
pub mod watermark;

use std::process::ExitCode;

use crate::cli::{
    AlertsCommand, Cli, Command, JobsCommand, MonitorArgs, MonitorCommand, WatermarkCommand,
};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::RunJob(args) => run_job::run(global, args).await,
        Command::Jobs(JobsCommand::List) => jobs::list(global),
        Command::Jobs(JobsCommand::Validate { name }) => jobs::validate(global, name).await,
        Command::Jobs(JobsCommand::New {
            name,
            model,
            table,
            query,
            force,
        }) => {
            let new = jobs_new::NewJob {
                name,
                model,
                table,
                query,
                force,
            };
            jobs_new::run(global, new).await
        }
        Command::Migrate => migrate::run(global).await,
        Command::Status(args) => status::run(global, args).await,
        Command::Daemon(args) => daemon::run(global, args).await,
        Command::Watermark(WatermarkCommand::Show { name }) => watermark::show(global, name).await,
        Command::Watermark(WatermarkCommand::Set { name, time, shard }) => {
            watermark::set(global, &name, time, shard).await
        }
        Command::Alerts(AlertsCommand::Check) => alerts::check(global).await,
        Command::Alerts(AlertsCommand::Test { route }) => alerts::test(global, route).await,
        Command::Reshard { name } => reshard::run(global, &name).await,
        Command::Prune {
            older_than,
            dry_run,
        } => prune::run(global, older_than, dry_run).await,
        Command::Models { name, json } => models::run(global, &name, json).await,
        Command::Compare {
            name,
            windows,
            json,
        } => compare::run(global, &name, windows, json).await,
        Command::Evaluate {
            name,
            from,
            to,
            json,
        } => evaluate::run(global, &name, from, to, json).await,
        Command::Monitor(MonitorArgs {
            command: Some(MonitorCommand::SetReference { name, from, to, .. }),
            ..
        }) => monitor::set_reference(global, &name, from.zip(to)).await,
        Command::Monitor(MonitorArgs { name, json, .. }) => {
            let name = name.expect("clap requires NAME without a subcommand");
            monitor::show(global, &name, json).await
        }
    }
}
