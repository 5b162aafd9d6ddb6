//! The errors callers branch on, and the exit code each one means.

use std::path::PathBuf;
use std::process::ExitCode;

/// The run failed; nothing of the window was written.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Usage or configuration error: the job, its model or the database needs fixing first.
pub const EXIT_CONFIG: u8 = 2;

/// Something a person must fix before the job can run: retrying will not help.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no job named `{name}` in {dir} (known jobs: {known})")]
    UnknownJob {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("{}: {problem}", path.display())]
    JobFile { path: PathBuf, problem: String },
    #[error("job `{job}`: {problem}")]
    Job { job: String, problem: String },
    #[error("cannot connect to the database {target}: {problem}")]
    Database { target: String, problem: String },
    #[error("{0}")]
    OnnxRuntime(String),
}

impl ConfigError {
    pub fn job(job: &str, problem: impl Into<String>) -> Self {
        ConfigError::Job {
            job: job.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Map an error to the process exit code: a configuration error anywhere in the chain is 2, anything else 1.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|cause| cause.is::<ConfigError>()) {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    }
}
