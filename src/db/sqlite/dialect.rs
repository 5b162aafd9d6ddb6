//! SQLite's [`Dialect`], for the ledger, watermark, claim and migration SQL shared by the
//! backends: times are fixed-width RFC 3339 text in UTC (microseconds, `Z`), so text order is
//! time order, and "now" is SQLite's clock written the same way.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult, SqliteRow};
use sqlx::{Row, Sqlite};

use crate::db::dialect::{Dialect, Param};

/// How times are stored in batchscore's own SQLite tables.
pub(super) fn to_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn from_text(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad time `{text}` in batchscore's tables"))?
        .to_utc())
}

/// [`to_text`]'s form from SQLite's clock (milliseconds, padded to microseconds).
const NOW_FORMAT: &str = "'%Y-%m-%dT%H:%M:%f000Z'";

impl Dialect for Sqlite {
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')";
    const DOUBLE: &'static str = "REAL";

    fn epoch(expr: &str) -> String {
        // Numbers are unix seconds already; text in any ISO-8601 form SQLite reads (see window.rs).
        format!(
            "(CASE WHEN typeof({expr}) IN ('integer', 'real') THEN {expr} ELSE unixepoch({expr}, 'subsec') END)"
        )
    }

    fn later(param: &str) -> String {
        format!("strftime({NOW_FORMAT}, 'now', printf('%+.3f seconds', {param}))")
    }

    fn bind(
        query: Query<'static, Sqlite, SqliteArguments>,
        param: Param,
    ) -> Query<'static, Sqlite, SqliteArguments> {
        match param {
            Param::Text(text) => query.bind(text),
            Param::Int(value) => query.bind(value),
            Param::Time(time) => query.bind(time.map(to_text)),
            Param::Seconds(seconds) => query.bind(seconds),
            Param::Bytes(bytes) => query.bind(bytes),
            Param::Float(value) => query.bind(value),
        }
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn text(row: &SqliteRow, column: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(column)
    }

    fn int(row: &SqliteRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(column)
    }

    fn flag(row: &SqliteRow, column: &str) -> Result<bool, sqlx::Error> {
        row.try_get(column)
    }

    fn bytes(row: &SqliteRow, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        row.try_get(column)
    }

    fn float(row: &SqliteRow, column: &str) -> Result<Option<f64>, sqlx::Error> {
        row.try_get(column)
    }

    fn time(row: &SqliteRow, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let text: Option<String> = row.try_get(column)?;
        text.as_deref().map(from_text).transpose()
    }

    fn is_undefined_table(err: &sqlx::Error) -> bool {
        // SQLITE_ERROR carries no finer code for this; its message is stable.
        matches!(err, sqlx::Error::Database(db) if db.message().starts_with("no such table"))
    }

    fn on_pool<'p>(
        pool: &'p sqlx::Pool<Sqlite>,
    ) -> impl sqlx::Executor<'p, Database = Sqlite> + 'p {
        pool
    }

    fn on_conn<'c>(
        conn: &'c mut SqliteConnection,
    ) -> impl sqlx::Executor<'c, Database = Sqlite> + 'c {
        conn
    }

    async fn lock_schema(
        pool: &sqlx::Pool<Sqlite>,
    ) -> Result<crate::db::migrate::SchemaSession<Sqlite>, sqlx::Error> {
        // The database's one write lock, taken up front (waiting out the busy timeout).
        let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(crate::db::migrate::SchemaSession::Transaction(tx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_clock_times_are_stored_times() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let sql = format!("SELECT {}, {}", Sqlite::NOW, Sqlite::later("$1"));
        let (now, later): (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(90.5)
            .fetch_one(&pool)
            .await
            .unwrap();
        // Same width as stored times, so comparing the text compares the times.
        assert_eq!(now.len(), to_text(Utc::now()).len(), "{now}");
        let (now, later) = (from_text(&now).unwrap(), from_text(&later).unwrap());
        assert!((Utc::now() - now).num_seconds().abs() < 5);
        assert_eq!((later - now).num_milliseconds(), 90_500);
    }
}
