//! PostgreSQL, for production: [`Backend`] for a server many machines share.
//!
//! [`read`] streams a window out of the source with a binary `COPY … TO STDOUT`, [`write`](mod@write) is
//! the window's transaction (binary `COPY … FROM STDIN` or `INSERT … ON CONFLICT`), [`claim`]
//! holds a job with an advisory lock beside the claim row, [`ledger`] is the dialect of the SQL
//! shared with SQLite, and `copy` encodes and decodes binary COPY tuples.

mod claim;
mod copy;
mod ledger;
mod read;
mod write;

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use self::claim::session_tag;
pub use self::write::PgTx;
use super::{Backend, Limits, claims};
use crate::claim::{Claim, ClaimOutcome};
use crate::ident::TableName;
use crate::plan::Window;
use crate::shard::Shard;
use crate::source::{ColumnKind, KeyKind, SourceChunk, SourceShape};
use crate::spec::JobSpec;

#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    /// For the claim's own connection, outside the pool (see [`Backend::claim`]).
    options: Arc<PgConnectOptions>,
    limits: Limits,
}

impl PostgresBackend {
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("batchscore")
            // Columns of type `timestamp` (without time zone) are read as UTC.
            .options([("TimeZone", "UTC")])
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(limits.connections)
            .acquire_timeout(limits.connect)
            .connect_with(options.clone());
        let pool = super::first_connection(pool, options.connect()).await?;
        Ok(PostgresBackend {
            pool,
            options: Arc::new(options),
            limits,
        })
    }
}

/// Whether an error may go away by itself: the network, a timeout, a server that is starting,
/// shutting down or out of connections, a statement cancelled by a timeout (SQLSTATE classes 08,
/// 53, 57).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err)
        || matches!(err, sqlx::Error::Database(db)
            if db.code().is_some_and(|code| ["08", "53", "57"].iter().any(|c| code.starts_with(c))))
}

fn key_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Integer => "bigint",
        KeyKind::Text => "text",
    }
}

impl Backend for PostgresBackend {
    type Tx = PgTx;
    type Lock = PgConnection;
    type Db = sqlx::Postgres;
    const RENEWS_DURING_WINDOW: bool = true;

    fn pool(&self) -> &sqlx::Pool<sqlx::Postgres> {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
        &MIGRATOR
    }

    async fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, String>> {
        self.describe(spec).await
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        matches!(kind, ColumnKind::Timestamp)
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names = write::declared_columns(&self.pool, table)
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
        claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        self.read(spec, shape, window, shard, claim, out).await
    }

    async fn begin(&self, claim: &Claim) -> anyhow::Result<PgTx> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("opening the window's transaction")?;
        // For this transaction only: if the run freezes or is cut off, the server ends it within
        // a lease and frees the result keys it holds, so the run's successor does not wait on
        // them. A live run never waits that long: it talks to the server every chunk. (The
        // server cannot time out a statement waiting for the client's COPY data: for that, the
        // successor ends the session by its tag, see `claim`.)
        let millis = claim.lease().as_millis().max(1).to_string();
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, true), \
             set_config('idle_in_transaction_session_timeout', $1, true), \
             set_config('application_name', $2, true)",
        )
        .bind(millis)
        .bind(session_tag(&claim.claim_id))
        .execute(&mut *tx)
        .await
        .context("opening the window's transaction")?;
        Ok(PgTx(tx))
    }

    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<PgConnection>> {
        self.take_claim(claim).await
    }

    async fn renew_claim(&self, lock: &mut PgConnection, claim: &Claim) -> anyhow::Result<bool> {
        claims::renew(lock, claim).await
    }

    async fn release_claim(&self, lock: Option<PgConnection>, claim: &Claim) -> anyhow::Result<()> {
        self.give_up_claim(lock, claim).await
    }

    fn lock_wait(&self, _err: &anyhow::Error) -> Option<std::time::Duration> {
        // Waits on row locks end by statement_timeout or lock_timeout, reported as failures.
        None
    }
}
