//! MySQL's and MariaDB's [`Dialect`], for the ledger, watermark, claim, profile and migration
//! SQL shared by the backends: times are `DATETIME(6)` holding UTC (every batchscore session
//! runs with `time_zone = '+00:00'`), "now" is `UTC_TIMESTAMP(6)`, placeholders are positional
//! `?`, and upserts are `ON DUPLICATE KEY UPDATE` or `INSERT IGNORE`.

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlArguments, MySqlConnection, MySqlQueryResult, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, Row};

use crate::db::dialect::{Dialect, Param, Set};
use crate::ident::{Ident, TableName};

impl Dialect for MySql {
    const NOW: &'static str = "UTC_TIMESTAMP(6)";
    const BIGINT: &'static str = "SIGNED";
    const DOUBLE: &'static str = "DOUBLE";
    const TEXT: &'static str = "CHAR";

    /// Backticks: sessions run without `ANSI_QUOTES`, so `"` quotes strings.
    fn table(name: &TableName) -> String {
        name.backticked()
    }

    fn column(name: &Ident) -> String {
        name.backticked()
    }

    fn epoch(expr: &str) -> String {
        // A DATETIME is read in the session's zone: the same for every value, so the order holds.
        format!("CAST(UNIX_TIMESTAMP({expr}) AS DOUBLE)")
    }

    fn later(param: &str) -> String {
        format!("(UTC_TIMESTAMP(6) + INTERVAL CAST({param} * 1000000 AS SIGNED) MICROSECOND)")
    }

    /// MySQL takes only positional `?`: each `$N` becomes `?`, its parameter repeated in the
    /// order the placeholders appear. Only for batchscore's own SQL, which has no `$` elsewhere.
    fn placeholders(sql: String, params: Vec<Param>) -> (String, Vec<Param>) {
        let mut out = String::with_capacity(sql.len());
        let mut ordered = Vec::with_capacity(params.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
                out.push(c);
                continue;
            }
            let mut number = 0usize;
            while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                number = number * 10 + digit as usize;
                chars.next();
            }
            out.push('?');
            ordered.push(params[number - 1].clone());
        }
        (out, ordered)
    }

    /// MySQL takes `LIMIT` on a `DELETE`, and not in a subquery of `IN`.
    fn delete_some(table: &str, _key: &str, condition: &str, limit: usize) -> String {
        format!("DELETE FROM {table} WHERE {condition} LIMIT {limit}")
    }

    /// `ON DUPLICATE KEY UPDATE`, or `INSERT IGNORE` with nothing to set. MySQL assigns left to
    /// right, each assignment seeing the ones before it, so the columns `only_if` reads are set
    /// last, and each set is `IF(only_if, new, old)`. (`VALUES(c)` rather than MySQL 8's row
    /// alias, which MariaDB does not take.)
    fn upsert(
        table: &str,
        columns: &[&str],
        values: &[String],
        _key: &str,
        set: &[Set<'_>],
        only_if: Option<&str>,
    ) -> String {
        let insert = format!(
            "INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            values.join(", ")
        );
        if set.is_empty() {
            return format!("INSERT IGNORE {insert}");
        }
        let mut set = set.to_vec();
        set.sort_by_key(|s| {
            let (Set::Inserted(column) | Set::To(column, _)) = *s;
            only_if.is_some_and(|condition| {
                condition
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|word| word == column)
            })
        });
        let assignments: Vec<String> = set
            .iter()
            .map(|s| {
                let (column, new) = match *s {
                    Set::Inserted(column) => (column, format!("VALUES({column})")),
                    Set::To(column, value) => (column, value.to_owned()),
                };
                match only_if {
                    None => format!("{column} = {new}"),
                    Some(condition) => format!("{column} = IF({condition}, {new}, {column})"),
                }
            })
            .collect();
        format!(
            "INSERT {insert} ON DUPLICATE KEY UPDATE {}",
            assignments.join(", ")
        )
    }

    fn bind(
        query: Query<'static, MySql, MySqlArguments>,
        param: Param,
    ) -> Query<'static, MySql, MySqlArguments> {
        match param {
            Param::Text(text) => query.bind(text),
            Param::Int(value) => query.bind(value),
            // As DATETIME: sqlx sends a DateTime<Utc> as TIMESTAMP, whose range (1970 to 2038)
            // the server turns into NULL outside of; every session is UTC, so the naive time is
            // the UTC one.
            Param::Time(time) => query.bind(time.map(|t| t.naive_utc())),
            Param::Seconds(seconds) => query.bind(seconds),
            Param::Bytes(bytes) => query.bind(bytes),
            Param::Float(value) => query.bind(value),
        }
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        // sqlx connects with CLIENT_FOUND_ROWS: an UPDATE counts the rows it matched, so a
        // compare-and-set that matched reports 1 even when nothing changed.
        done.rows_affected()
    }

    fn text(row: &MySqlRow, column: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(column)
    }

    fn int(row: &MySqlRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(column)
    }

    fn flag(row: &MySqlRow, column: &str) -> Result<bool, sqlx::Error> {
        row.try_get(column)
    }

    fn bytes(row: &MySqlRow, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        row.try_get(column)
    }

    fn float(row: &MySqlRow, column: &str) -> Result<Option<f64>, sqlx::Error> {
        row.try_get(column)
    }

    fn time(row: &MySqlRow, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(row.try_get(column)?)
    }

    fn is_undefined_table(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("42S02"))
    }

    fn on_pool<'p>(pool: &'p sqlx::Pool<MySql>) -> impl sqlx::Executor<'p, Database = MySql> + 'p {
        pool
    }

    fn on_conn<'c>(
        conn: &'c mut MySqlConnection,
    ) -> impl sqlx::Executor<'c, Database = MySql> + 'c {
        conn
    }

    /// A named lock of batchscore's own, per database, on a connection out of the pool. Not
    /// sqlx's: it asks `GET_LOCK(…, -1)`, which MariaDB answers at once with NULL (a negative
    /// timeout is MySQL's "forever"), so concurrent migrations ran unlocked there. This waits a
    /// second at a time, checking each answer, so the caller's deadline can end the wait.
    async fn lock_schema(
        pool: &sqlx::Pool<MySql>,
    ) -> Result<crate::db::migrate::SchemaSession<MySql>, sqlx::Error> {
        let mut conn = pool.acquire().await?.detach();
        loop {
            let taken: Option<i64> = sqlx::query_scalar(
                "SELECT GET_LOCK(CONCAT('batchscore_schema:', MD5(DATABASE())), 1)",
            )
            .fetch_one(&mut conn)
            .await?;
            match taken {
                Some(1) => return Ok(crate::db::migrate::SchemaSession::Connection(conn)),
                Some(_) => continue, // another process migrates: wait on
                None => {
                    return Err(sqlx::Error::Protocol(
                        "GET_LOCK on batchscore's schema lock answered NULL".to_owned(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_placeholders_become_positional_in_order() {
        let (sql, params) = <MySql as Dialect>::placeholders(
            "a = $2 AND b = $1 OR c = $2 AND d = $10".to_owned(),
            (1..=10i64).map(Param::from).collect(),
        );
        assert_eq!(sql, "a = ? AND b = ? OR c = ? AND d = ?");
        let ints: Vec<i64> = params
            .iter()
            .map(|p| match p {
                Param::Int(Some(v)) => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ints, [2, 1, 2, 10]);
    }

    #[test]
    fn conditional_upserts_set_the_condition_column_last() {
        let sql = <MySql as Dialect>::upsert(
            "t",
            &["id", "status", "n"],
            &["?".into(), "?".into(), "?".into()],
            "id",
            &[Set::Inserted("status"), Set::Inserted("n")],
            Some("t.status = 'running'"),
        );
        assert_eq!(
            sql,
            "INSERT INTO t (id, status, n) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE \
             n = IF(t.status = 'running', VALUES(n), n), \
             status = IF(t.status = 'running', VALUES(status), status)"
        );
        let ignore = <MySql as Dialect>::upsert("t", &["id"], &["?".into()], "id", &[], None);
        assert_eq!(ignore, "INSERT IGNORE INTO t (id) VALUES (?)");
    }
}
