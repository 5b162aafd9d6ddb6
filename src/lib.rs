//! batchscore: score database rows with an ONNX model on a schedule.
//!
//! The data path of one run, one module each:
//! [`spec`] (job file → checked `JobSpec`) → [`plan`] (which window) → [`source`] (rows → polars
//! chunks) → [`features`] (chunk → one tensor per model input) → [`model`] (ONNX Runtime scoring) → [`sink`]
//! (predictions → results table) → [`ledger`] (the run's record), tied together by [`run`].
//! [`db`] is the one seam between SQLite and PostgreSQL; [`command`] holds the subcommands.

pub mod claim;
pub mod cli;
pub mod command;
pub mod daemon;
pub mod db;
pub mod element;
pub mod error;
pub mod features;
pub mod http;
pub mod ident;
pub mod job;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod onnxruntime;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod spec;

use std::process::ExitCode;

/// Run the parsed command line to completion and say how the process should exit.
pub fn run_cli(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command::dispatch(cli))
}
