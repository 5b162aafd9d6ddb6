//! The one seam between SQLite and PostgreSQL.
//!
//! [`Backend`] is everything a run needs from a database; [`sqlite`] and [`postgres`] implement
//! it with their own dialect SQL next to them. The backend is picked once from the URL scheme
//! ([`connect`]), and everything above is generic over it (see [`with_backend!`](crate::with_backend)), so no
//! `if postgres` is scattered through the run logic.

pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::claim::{Claim, ClaimOutcome};
use crate::error::ConfigError;
use crate::features::BadRow;
use crate::ident::TableName;
use crate::ledger::RunRecord;
use crate::plan::Window;
use crate::sink::{ResultsTable, RunStamp, ScoredChunk};
use crate::source::{ColumnKind, SourceChunk, SourceShape};
use crate::spec::JobSpec;

/// How long to wait for a pooled connection (or the server) before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run needs from a database. Futures are `Send` so runs can be spawned on the runtime.
pub trait Backend: Clone + Send + Sync + 'static {
    /// The window's transaction: results, the ledger and the watermark commit in it, or not at all.
    type Tx: Send;
    /// What keeps a claim held besides its row (PostgreSQL: the advisory lock's connection).
    type Lock: Send;

    /// Apply batchscore's own migrations (embedded in the binary).
    fn migrate(&self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The source's columns and their kinds, or what the database said when asked.
    fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = Result<Vec<(String, ColumnKind)>, String>> + Send;

    /// Whether a column of this kind can hold the times a window slices on.
    fn timestamp_ok(kind: &ColumnKind) -> bool;

    /// The columns of an existing table and their declared types, or `None` if there is no
    /// such table.
    fn table_columns(
        &self,
        table: &TableName,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<(String, String)>>>> + Send;

    /// How many source rows fall in the window (for `--dry-run`).
    fn count_window(
        &self,
        spec: &JobSpec,
        window: Window,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// Stream the window's rows into `out`, `spec.source.chunk_rows` at a time.
    fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        out: mpsc::Sender<SourceChunk>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Open the window's write transaction.
    fn begin(&self) -> impl Future<Output = anyhow::Result<Self::Tx>> + Send;

    fn create_results_table(
        tx: &mut Self::Tx,
        table: &ResultsTable,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Insert or replace (by key) one scored chunk.
    fn upsert_results(
        tx: &mut Self::Tx,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether the job has rows in the quarantine (a row scored later then leaves it).
    fn has_quarantined(
        tx: &mut Self::Tx,
        job: &str,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Put bad rows in the quarantine, replacing earlier entries of the same keys.
    fn quarantine(
        tx: &mut Self::Tx,
        job: &str,
        stamp: &RunStamp,
        rows: &[BadRow],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Take rows that were just scored out of the quarantine.
    fn release_quarantined(
        tx: &mut Self::Tx,
        job: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Record a run as started, committed at once so even a crashed run leaves a trace.
    fn insert_run(&self, run: &RunRecord) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Record a ledger row inside the window's transaction (a range `latest` catch-up skipped).
    fn insert_run_in(
        tx: &mut Self::Tx,
        run: &RunRecord,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Mark the job's rows still `running` as `abandoned`: called by the claim's new holder, so
    /// whoever left them is gone. Returns how many.
    fn abandon_runs(&self, job: &str) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Record how a run ended, inside the window's transaction.
    fn finish_run(
        tx: &mut Self::Tx,
        run: &RunRecord,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Record a failed run, outside any window transaction (which was rolled back).
    fn fail_run(&self, run: &RunRecord) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn commit(tx: Self::Tx) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The job's watermark: the end of its last committed window.
    fn watermark(
        &self,
        job: &str,
    ) -> impl Future<Output = anyhow::Result<Option<DateTime<Utc>>>> + Send;

    /// Every job's watermark, by job name.
    fn watermarks(
        &self,
    ) -> impl Future<Output = anyhow::Result<Vec<(String, DateTime<Utc>)>>> + Send;

    /// Move the watermark from `from` to `to` inside the window's transaction, only if it is
    /// still `from` (compare-and-set). Returns false when another run moved it first.
    fn advance_watermark(
        tx: &mut Self::Tx,
        job: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        run_id: &str,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Set the watermark to any time (the explicit `watermark set` command).
    fn set_watermark(
        &self,
        job: &str,
        to: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Claim the job for one run, or say who holds it.
    fn claim(
        &self,
        claim: &Claim,
    ) -> impl Future<Output = anyhow::Result<ClaimOutcome<Self::Lock>>> + Send;

    /// Extend the claim's lease; false if this run no longer holds it.
    fn renew_claim(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Give the claim up.
    fn release_claim(
        &self,
        lock: Self::Lock,
        claim: &Claim,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The latest runs, newest first, of one job or all.
    fn recent_runs(
        &self,
        job: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = anyhow::Result<Vec<RunRecord>>> + Send;
}

/// A connected database, either kind.
#[derive(Clone)]
pub enum Database {
    Sqlite(sqlite::SqliteBackend),
    Postgres(postgres::PostgresBackend),
}

/// Run `$body` with `$backend` bound to the concrete backend inside `$db`.
#[macro_export]
macro_rules! with_backend {
    ($db:expr, $backend:ident => $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($backend) => $body,
            $crate::db::Database::Postgres($backend) => $body,
        }
    };
}

/// Connect to `url` (`sqlite://…` or `postgres://…`); failure is a configuration error.
pub async fn connect(url: &str) -> Result<Database, ConfigError> {
    let unreachable = |problem: String| ConfigError::Database {
        target: redact(url),
        problem,
    };
    if url.starts_with("sqlite:") {
        sqlite::SqliteBackend::connect(url)
            .await
            .map(Database::Sqlite)
            .map_err(|e| unreachable(e.to_string()))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::PostgresBackend::connect(url)
            .await
            .map(Database::Postgres)
            .map_err(|e| unreachable(e.to_string()))
    } else {
        Err(unreachable(
            "the URL must start with sqlite:// or postgres:// (set --database-url or DATABASE_URL)"
                .to_owned(),
        ))
    }
}

/// The URL with any password replaced, safe for logs, errors and output.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://scorer:s3cret@db:5432/app"),
            "postgres://scorer:***@db:5432/app"
        );
        assert_eq!(redact("sqlite://batchscore.db"), "sqlite://batchscore.db");
        assert!(!redact("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }
}
