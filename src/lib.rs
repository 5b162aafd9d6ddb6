//! batchscore: score database rows with an ONNX model on a schedule.
//!
//! The data path of one run, one module each:
//! [`spec`] (job file → checked `JobSpec`) → [`plan`] (which window) → [`source`] (rows → polars
//! chunks) → [`features`] (chunk → one tensor per model input) → [`model`] (ONNX Runtime scoring) → [`sink`]
//! (predictions → results table) → [`ledger`] (the run's record), tied together by [`run`].
//! [`challenger`] scores a second model on the same windows. [`db`] is the one seam between SQLite, PostgreSQL and MySQL; [`daemon`] runs jobs on their
//! schedules (with its HTTP endpoints and metrics); [`alerts`] tells a person when a job needs
//! one; [`command`] holds the subcommands.

// The public surface is what `main.rs` needs; everything else is crate-private, and its docs
// (`cargo doc --document-private-items`) link across private modules on purpose.
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod alerts;
pub(crate) mod bad_row;
pub(crate) mod challenger;
pub(crate) mod claim;
pub mod cli;
pub(crate) mod command;
pub(crate) mod daemon;
pub(crate) mod db;
pub(crate) mod element;
pub(crate) mod error;
pub(crate) mod features;
pub(crate) mod ident;
pub(crate) mod job;
pub(crate) mod ledger;
pub(crate) mod logging;
pub(crate) mod model;
pub(crate) mod monitor;
pub(crate) mod performance;
pub(crate) mod plan;
pub(crate) mod retention;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod shard;
pub(crate) mod shutdown;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod spec;
pub(crate) mod status;
pub(crate) mod time;

use std::process::ExitCode;

pub use error::exit_code;
pub use logging::init as init_logging;

/// Run the parsed command line to completion and say how the process should exit.
pub fn run_cli(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, cli::Command::Daemon(_)) {
        // Before the runtime's threads exist: see `daemon::memory`.
        daemon::memory::limit_arenas();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command::dispatch(cli))
}
