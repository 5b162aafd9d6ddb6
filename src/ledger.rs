//! The run ledger (`batchscore_runs`): one row per window a run scored, what it read and wrote
//! and how it ended; also the runs that found their job busy and the ranges a `latest`
//! catch-up skipped.
//!
//! A window's row is inserted as `running` when it starts (in its own small transaction, so a run
//! that dies still leaves a trace) and turned into `succeeded` inside the window's transaction,
//! together with the results: the ledger never claims rows the results table does not have. The
//! next run to claim the job marks rows left `running` by a dead process as `abandoned`.

use chrono::{DateTime, Utc};
use std::fmt;

use crate::plan::Window;
use crate::shard::Shard;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Not scored: the job was busy, or the range was skipped by `catch_up = "latest"`.
    Skipped,
    /// Left `running` by a process that died; marked by the next run that claimed the job.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        match text {
            "running" => Some(RunStatus::Running),
            "succeeded" => Some(RunStatus::Succeeded),
            "failed" => Some(RunStatus::Failed),
            "skipped" => Some(RunStatus::Skipped),
            "abandoned" => Some(RunStatus::Abandoned),
            _ => None,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What scored a window, as its ledger row records it: the model, and the challenger if the job
/// has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    pub model_sha256: String,
    /// The model's path, or the registry version and the alias it was resolved from.
    pub model_source: Option<String>,
    pub challenger_sha256: Option<String>,
    pub challenger_source: Option<String>,
    /// Why the challenger did not score the window, when it did not.
    pub challenger_error: Option<String>,
}

#[cfg(test)]
impl Lineage {
    /// A model known by its sha256 alone.
    pub fn model(sha256: &str) -> Lineage {
        Lineage {
            model_sha256: sha256.to_owned(),
            ..Lineage::default()
        }
    }
}

/// A run as the ledger knows it, by both its names: the id (a UUID, what full lineage writes
/// on result rows) and the number (`batchscore_runs.id`, what compact lineage writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRef {
    pub id: String,
    pub number: i64,
}

/// One row of `batchscore_runs`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    /// The shard's index (0 for a job that is not sharded).
    pub shard: u32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub status: RunStatus,
    pub rows_read: i64,
    pub rows_written: i64,
    /// Rows found bad, whatever the policy then did with them.
    pub rows_bad: i64,
    pub rows_quarantined: i64,
    pub rows_skipped: i64,
    /// Why rows were bad: "column reason: count; ...".
    pub bad_rows: Option<String>,
    pub lineage: Lineage,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub host: String,
    pub pid: i64,
}

impl RunRecord {
    /// A new ledger row for `window`, started now by this process, with nothing counted yet.
    pub fn start(job: &str, shard: Shard, window: Window, lineage: &Lineage) -> RunRecord {
        RunRecord {
            run_id: uuid::Uuid::now_v7().to_string(),
            job: job.to_owned(),
            shard: shard.index,
            window_start: window.start,
            window_end: window.end,
            status: RunStatus::Running,
            rows_read: 0,
            rows_written: 0,
            rows_bad: 0,
            rows_quarantined: 0,
            rows_skipped: 0,
            bad_rows: None,
            lineage: lineage.clone(),
            started_at: Utc::now(),
            finished_at: None,
            error: None,
            host: crate::claim::hostname(),
            pid: i64::from(std::process::id()),
        }
    }

    /// A ledger row for a window that was not scored, with the reason in `error`.
    pub fn skipped(
        job: &str,
        shard: Shard,
        window: Window,
        lineage: &Lineage,
        reason: String,
    ) -> RunRecord {
        let record = RunRecord::start(job, shard, window, lineage);
        RunRecord {
            status: RunStatus::Skipped,
            finished_at: Some(record.started_at),
            error: Some(reason),
            ..record
        }
    }
}
