//! PostgreSQL's [`Dialect`], for the ledger, watermark, claim and migration SQL shared by the
//! backends: times are `timestamptz`, and "now" is the server's `clock_timestamp()` (not `now()`,
//! which stands still for the whole transaction).

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnection, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use crate::db::dialect::{Dialect, Param};

impl Dialect for Postgres {
    const NOW: &'static str = "clock_timestamp()";
    const COLUMNS_BY_PREPARE: bool = true;
    const FULL_JOIN: bool = true;
    const INTEGER_LABELS: bool = true;
    const JOIN_REORDERS: bool = true;

    fn later(param: &str) -> String {
        format!("clock_timestamp() + make_interval(secs => {param})")
    }

    fn epoch(expr: &str) -> String {
        format!("CAST(EXTRACT(EPOCH FROM {expr}) AS double precision)")
    }

    fn bind(
        query: Query<'static, Postgres, PgArguments>,
        param: Param,
    ) -> Query<'static, Postgres, PgArguments> {
        match param {
            Param::Text(text) => query.bind(text),
            Param::Int(value) => query.bind(value),
            Param::Time(time) => query.bind(time),
            Param::Seconds(seconds) => query.bind(seconds),
            Param::Bytes(bytes) => query.bind(bytes),
            Param::Float(value) => query.bind(value),
        }
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn text(row: &PgRow, column: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(column)
    }

    fn int(row: &PgRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(column)
    }

    fn flag(row: &PgRow, column: &str) -> Result<bool, sqlx::Error> {
        row.try_get(column)
    }

    fn bytes(row: &PgRow, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        row.try_get(column)
    }

    fn float(row: &PgRow, column: &str) -> Result<Option<f64>, sqlx::Error> {
        row.try_get(column)
    }

    fn time(row: &PgRow, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(row.try_get(column)?)
    }

    fn is_undefined_table(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"))
    }

    fn on_pool<'p>(
        pool: &'p sqlx::Pool<Postgres>,
    ) -> impl sqlx::Executor<'p, Database = Postgres> + 'p {
        pool
    }

    fn on_conn<'c>(
        conn: &'c mut PgConnection,
    ) -> impl sqlx::Executor<'c, Database = Postgres> + 'c {
        conn
    }

    /// sqlx's migration lock (the advisory lock `sqlx migrate run` takes too), on a connection
    /// out of the pool: the lock is the session's, so it ends with the connection, however this
    /// process ends.
    async fn lock_schema(
        pool: &sqlx::Pool<Postgres>,
    ) -> Result<crate::db::migrate::SchemaSession<Postgres>, sqlx::Error> {
        use sqlx::migrate::{Migrate, MigrateError};
        let mut conn = pool.acquire().await?.detach();
        conn.lock().await.map_err(|e| match e {
            MigrateError::Execute(e) => e,
            other => sqlx::Error::Migrate(Box::new(other)),
        })?;
        Ok(crate::db::migrate::SchemaSession::Connection(conn))
    }
}
