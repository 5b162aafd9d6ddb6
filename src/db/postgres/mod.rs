//! PostgreSQL, for production: [`Backend`] for a server many machines share.
//!
//! [`read`] is the [`SourceReader`](crate::db::SourceReader), streaming a window out of the
//! source with a binary `COPY … TO STDOUT`; [`write`](mod@write) the window's transaction (binary
//! `COPY … FROM STDIN` or `INSERT … ON CONFLICT`); [`claim`] the
//! [`ClaimStore`](crate::db::ClaimStore), holding a job with an advisory lock beside the claim
//! row; [`dialect`] the [`Dialect`](crate::db::dialect::Dialect) of the SQL shared with the
//! other databases; and `copy` encodes and decodes binary COPY tuples.

mod claim;
mod copy;
mod dialect;
mod read;
mod write;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::claim_store::ClaimAhead;
use super::dialect::Param;
use super::{Backend, Field, FieldKind, Limits};
use crate::source::KeyKind;

#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    /// For the claim's own connection, outside the pool (see [`ClaimStore::claim`](crate::db::ClaimStore::claim)).
    options: Arc<PgConnectOptions>,
    limits: Limits,
    claim_ahead: ClaimAhead<sqlx::postgres::PgConnection>,
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
            claim_ahead: ClaimAhead::default(),
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
    type Db = sqlx::Postgres;

    fn pool(&self) -> &sqlx::Pool<sqlx::Postgres> {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
        &MIGRATOR
    }

    /// By binary `COPY (SELECT …) TO STDOUT`, as a window is read: through sqlx's rows, half of
    /// a million-row join's time was per-row decoding and column lookups.
    async fn stream_fields(
        &self,
        sql: String,
        params: Vec<Param>,
        kinds: &[FieldKind],
        each: &mut (dyn FnMut(&[Field<'_>]) -> anyhow::Result<()> + Send),
    ) -> anyhow::Result<()> {
        read::stream_fields(&self.pool, sql, params, kinds, each).await
    }
}
