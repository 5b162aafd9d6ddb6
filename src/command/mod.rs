//! The subcommands, one file each; [`dispatch`] routes a parsed command line to them.

pub mod jobs;
pub mod migrate;
pub mod run_job;
pub mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command, JobsCommand};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::RunJob(args) => run_job::run(global, args).await,
        Command::Jobs(JobsCommand::List) => jobs::list(global),
        Command::Jobs(JobsCommand::Validate { name }) => jobs::validate(global, name).await,
        Command::Migrate => migrate::run(global).await,
        Command::Status(args) => status::run(global, args).await,
    }
}
