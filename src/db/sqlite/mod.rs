//! SQLite, the embedded default: [`Backend`] for a database file on this machine.
//!
//! [`read`] streams a window out of the source (its rows found by [`window`]), [`write`](mod@write) is the window's transaction, [`claim`]
//! judges a job's holder, [`ledger`] is the dialect of the SQL shared with PostgreSQL, and
//! [`direct`] the one place a connection is driven through rusqlite.

mod claim;
mod direct;
mod ledger;
mod read;
mod window;
mod write;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

pub use self::write::SqliteTx;
use super::{Backend, Limits, claims};
use crate::claim::{Claim, ClaimOutcome};
use crate::ident::TableName;
use crate::plan::Window;
use crate::shard::Shard;
use crate::source::{ColumnKind, SourceChunk, SourceShape};
use crate::spec::JobSpec;

/// Whether an error may go away by itself: the pool, I/O, or another writer holding the lock
/// (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, with their extended codes).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err) || matches!(primary_code(err), Some(5 | 6 | 10))
}

/// SQLite's primary result code of a database error (the extended code's low byte).
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    Some(db.code()?.parse::<i32>().ok()? & 0xff)
}

#[derive(Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    limits: Limits,
}

impl SqliteBackend {
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: the window's reader and writer run at once, and application readers are never
            // blocked by a run.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Another writer (an application's long transaction, a frozen run) holds the write
            // lock: wait this long, then report the job busy (see `lock_wait`).
            .busy_timeout(limits.busy)
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(limits.connections)
            .acquire_timeout(limits.connect)
            // The shard hash of text keys, on every connection (see `read::register_functions`).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut locked = conn.lock_handle().await?;
                    direct::with_direct(&mut locked, |db| Ok(read::register_functions(db)?))
                        .map_err(|e| sqlx::Error::Configuration(e.into()))
                })
            })
            .connect_with(options)
            .await?;
        Ok(SqliteBackend { pool, limits })
    }
}

impl Backend for SqliteBackend {
    type Tx = SqliteTx;
    // One machine: the claim row, with the holder's pid checked on this host, is enough.
    type Lock = ();
    type Db = sqlx::Sqlite;
    const RENEWS_DURING_WINDOW: bool = false;

    fn pool(&self) -> &sqlx::Pool<sqlx::Sqlite> {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        &MIGRATOR
    }

    async fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, String>> {
        self.describe(spec).await
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        !matches!(kind, ColumnKind::Boolean | ColumnKind::Other(_))
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names = self
            .declared_columns(table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!names.is_empty()).then_some(names))
    }

    async fn window_notes(&self, spec: &JobSpec) -> anyhow::Result<Vec<String>> {
        self.notes(spec).await
    }

    async fn source_hints(
        &self,
        spec: &JobSpec,
        columns: &[(String, ColumnKind)],
    ) -> anyhow::Result<super::SourceHints> {
        self.hints(spec, columns).await
    }

    async fn count_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
    ) -> anyhow::Result<i64> {
        self.count(spec, shape, window, shard).await
    }

    async fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
        _claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        self.read(spec, shape, window, shard, out).await
    }

    async fn begin(&self, _claim: &Claim) -> anyhow::Result<SqliteTx> {
        // No server to end a frozen run's transaction: the write lock it holds keeps every other
        // writer out (they give up after the busy timeout), and it commits nothing once
        // superseded (the fencing check).
        // IMMEDIATE takes the write lock up front, so the run waits for it (busy_timeout) rather
        // than failing halfway when upgrading a read transaction.
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("opening the window's transaction")?;
        Ok(SqliteTx(tx))
    }

    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<()>> {
        self.take_claim(claim).await
    }

    async fn renew_claim(&self, _lock: &mut (), claim: &Claim) -> anyhow::Result<bool> {
        claims::renew(&self.pool, claim).await
    }

    async fn release_claim(&self, _lock: Option<()>, claim: &Claim) -> anyhow::Result<()> {
        claims::release(&self.pool, claim).await
    }

    fn lock_wait(&self, err: &anyhow::Error) -> Option<Duration> {
        Self::locked(err).then_some(self.limits.busy)
    }
}
