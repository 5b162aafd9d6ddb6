//! Writing a MySQL window: the [`WindowTx`] (results, quarantine, ledger row, watermark and
//! fencing check in one InnoDB transaction), and the window's session.
//!
//! Results go in as `INSERT … SELECT … FROM JSON_TABLE(?) … ON DUPLICATE KEY UPDATE`, the rows
//! of a statement one JSON parameter (see [`upsert_sql`]). DDL commits the
//! transaction it runs in on MySQL, so the results table is created on a connection of its own
//! before the window writes (`CREATE TABLE IF NOT EXISTS`): a first window that fails leaves
//! the table, empty.

use anyhow::Context;
use sqlx::mysql::{MySqlArguments, MySqlPool};
use sqlx::{Arguments, AssertSqlSafe, MySql, Transaction};

use super::MySqlBackend;
use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::db::{ResultsSink, WindowTx};
use crate::ident::TableName;
use crate::shard::Shard;
use crate::sink::{
    ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk, StampValue, Written,
};
use crate::source::KeyKind;
use crate::spec::MetaKind;

/// Rows per multi-row statement into the quarantine: past a thousand or so, bigger statements
/// write no faster (measured on MariaDB), and the placeholders stay far below 65,535.
const ROWS_PER_INSERT: usize = 1000;

/// The JSON of results one statement carries, at most (a row more): well inside the servers'
/// default `max_allowed_packet` (16 MiB on MariaDB, 64 MiB on MySQL 8).
const JSON_BYTES: usize = 4 << 20;

/// A MySQL window's transaction, and the pool the results table is created through.
pub struct MySqlTx {
    tx: Transaction<'static, MySql>,
    pool: MySqlPool,
}

impl ResultsSink for MySqlBackend {
    type Tx = MySqlTx;

    /// Open the window's transaction on a connection of its own, closed when the window ends
    /// (its session settings die with it). For this session only: no lock wait, and no idle
    /// spell, lasts longer than the lease, so a frozen holder's session is ended by the server
    /// and its locks freed within a lease.
    async fn begin(&self, claim: &Claim) -> anyhow::Result<MySqlTx> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("opening the window's transaction")?;
        conn.close_on_drop();
        super::bound_lock_waits(&mut conn, claim)
            .await
            .context("opening the window's transaction")?;
        // Tag the session, so a run that takes the job over can end it (see `claim`).
        sqlx::query("SELECT GET_LOCK(?, 0)")
            .bind(&super::claim::session_tags(&claim.claim_id)[1])
            .execute(&mut *conn)
            .await
            .context("opening the window's transaction")?;
        let tx = Transaction::begin(conn, None)
            .await
            .context("opening the window's transaction")?;
        Ok(MySqlTx {
            tx,
            pool: self.pool.clone(),
        })
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let columns = super::read::declared_columns(&self.pool, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!columns.is_empty()).then(|| {
            columns
                .into_iter()
                .map(|(name, _, column_type)| (name, column_type))
                .collect()
        }))
    }
}

fn mysql_type(result: ResultType) -> &'static str {
    match result {
        ResultType::Float => "DOUBLE",
        ResultType::Integer => "BIGINT",
        ResultType::Boolean => "BOOLEAN",
        ResultType::Text => "LONGTEXT",
    }
}

impl WindowTx for MySqlTx {
    type Db = MySql;

    fn tx(&mut self) -> &mut Transaction<'static, MySql> {
        &mut self.tx
    }

    fn into_tx(self) -> Transaction<'static, MySql> {
        self.tx
    }

    fn results_columns(table: &ResultsTable) -> Vec<String> {
        // A text key is at most 768 characters: InnoDB's index limit in utf8mb4.
        let key_type = match table.key_kind {
            KeyKind::Integer => "BIGINT",
            KeyKind::Text => "VARCHAR(768) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        };
        let mut columns = vec![format!(
            "{} {key_type} NOT NULL PRIMARY KEY",
            table.key.backticked()
        )];
        columns.extend(
            table
                .outputs
                .iter()
                .map(|(name, ty)| format!("{} {}", name.backticked(), mysql_type(*ty))),
        );
        columns.extend(
            table
                .lineage
                .columns()
                .iter()
                .map(|(name, kind)| match kind {
                    MetaKind::Text => format!("`{name}` VARCHAR(64) NOT NULL"),
                    MetaKind::Time => format!("`{name}` DATETIME(6) NOT NULL"),
                    MetaKind::Integer => format!("`{name}` BIGINT NOT NULL"),
                }),
        );
        if table.retained {
            columns.push(format!("INDEX (`{}`)", table.expiry_column()));
        }
        columns
    }

    /// By the column's full type (`double`, `decimal(10,2)`, `bigint(20) unsigned`,
    /// `varchar(64)`, `datetime(6)`): numbers into numeric and text types (a float not into an
    /// integer column, whose conversion would round it), booleans also into integers (MySQL's
    /// boolean is `tinyint(1)`), times into DATETIME, TIMESTAMP and text. Anything else (a
    /// date, json, an enum) is refused.
    fn holds(declared: &str, value: Written) -> bool {
        let declared = declared.to_ascii_lowercase();
        let base = declared.split(['(', ' ']).next().unwrap_or_default().trim();
        let integer = matches!(
            base,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
        );
        let decimal = matches!(base, "float" | "double" | "real" | "decimal" | "numeric");
        let text = matches!(
            base,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
        );
        match value {
            Written::Integer => integer || decimal || text,
            Written::Float => decimal || text,
            Written::Boolean => integer || text,
            Written::Text => text,
            Written::Time => matches!(base, "datetime" | "timestamp") || text,
        }
    }

    /// A read of the table in the transaction takes its metadata lock until the commit, so an
    /// `ALTER TABLE` waits for the window, and the columns described here are the ones written.
    async fn pin_results_table(
        &mut self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let probe = format!("SELECT 1 FROM {} WHERE 1 = 0", table.backticked());
        match sqlx::query(AssertSqlSafe(probe))
            .persistent(false)
            .execute(&mut *self.tx)
            .await
        {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42S02") => {
                return Ok(None);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("locking results table {table}")));
            }
        }
        let columns = super::read::declared_columns(&mut *self.tx, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!columns.is_empty()).then(|| {
            columns
                .into_iter()
                .map(|(name, _, column_type)| (name, column_type))
                .collect()
        }))
    }

    async fn create_results_table(&mut self, table: &ResultsTable) -> anyhow::Result<()> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
            table.table.backticked(),
            Self::results_columns(table).join(",\n  ")
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .with_context(|| format!("creating results table {}", table.table))?;
        Ok(())
    }

    async fn upsert_results(
        &mut self,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
        _shard: Shard,
    ) -> anyhow::Result<()> {
        let columns = chunk.typed_columns()?;
        let sql = upsert_sql(table);
        let stamp = stamp.values(table.lineage);
        let mut rows = 0..0;
        while rows.end < chunk.rows() {
            // The rows as one JSON array of arrays, a statement's worth at a time.
            let mut json = String::with_capacity(JSON_BYTES + 1024);
            json.push('[');
            rows = rows.end..rows.end;
            while rows.end < chunk.rows() && json.len() < JSON_BYTES {
                if rows.end > rows.start {
                    json.push(',');
                }
                json_row(&mut json, &columns, rows.end)?;
                rows.end += 1;
            }
            json.push(']');
            let mut args = MySqlArguments::default();
            for value in &stamp {
                match value {
                    StampValue::Text(text) => args.add(*text),
                    StampValue::Time(time) => args.add(time.naive_utc()),
                    StampValue::Integer(number) => args.add(*number),
                }
                .map_err(anyhow::Error::from_boxed)?;
            }
            args.add(json).map_err(anyhow::Error::from_boxed)?;
            sqlx::query_with(AssertSqlSafe(sql.clone()), args)
                .execute(&mut *self.tx)
                .await
                .with_context(|| format!("writing results to {}", table.table))?;
        }
        Ok(())
    }

    async fn quarantine(
        &mut self,
        job: &str,
        stamp: &RunStamp,
        rows: &[BadRow],
    ) -> anyhow::Result<()> {
        for batch in rows.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO batchscore_quarantine (job, run_id, window_start, window_end, quarantined_at, \
                 `key`, column_name, reason, features) VALUES {} ON DUPLICATE KEY UPDATE \
                 run_id = VALUES(run_id), column_name = VALUES(column_name), reason = VALUES(reason), \
                 features = VALUES(features), window_start = VALUES(window_start), \
                 window_end = VALUES(window_end), quarantined_at = VALUES(quarantined_at)",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; batch.len()].join(", ")
            );
            let mut args = MySqlArguments::default();
            for row in batch {
                let add = |args: &mut MySqlArguments| -> Result<(), sqlx::error::BoxDynError> {
                    args.add(job)?;
                    args.add(stamp.run_id.as_str())?;
                    args.add(stamp.window.start.naive_utc())?;
                    args.add(stamp.window.end.naive_utc())?;
                    args.add(stamp.scored_at.naive_utc())?;
                    for value in [&row.key, &row.column, &row.reason, &row.features] {
                        args.add(value.as_str())?;
                    }
                    Ok(())
                };
                add(&mut args).map_err(anyhow::Error::from_boxed)?;
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .persistent(false)
                .execute(&mut *self.tx)
                .await
                .context("writing to batchscore_quarantine")?;
        }
        Ok(())
    }

    async fn release_quarantined(&mut self, job: &str, keys: Vec<String>) -> anyhow::Result<()> {
        for batch in keys.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "DELETE FROM batchscore_quarantine WHERE job = ? AND `key` IN ({})",
                vec!["?"; batch.len()].join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(job);
            for key in batch {
                query = query.bind(key.as_str());
            }
            query
                .execute(&mut *self.tx)
                .await
                .context("releasing scored rows from batchscore_quarantine")?;
        }
        Ok(())
    }
}

/// `INSERT … SELECT … FROM JSON_TABLE(?) … ON DUPLICATE KEY UPDATE` of a results table: the
/// stamp's five values, then the rows as one JSON array of `[key, output, …]` arrays. One string
/// parameter per statement rather than a placeholder per value: the server parses far less
/// (181,000 against 105,000 rows a second for the best multi-row `VALUES`, measured on MariaDB
/// 10.11), and a statement holds as many rows as fit in [`JSON_BYTES`].
fn upsert_sql(table: &ResultsTable) -> String {
    let names: Vec<String> = table
        .column_names()
        .iter()
        .map(|name| format!("`{name}`"))
        .collect();
    let key_type = match table.key_kind {
        KeyKind::Integer => "BIGINT",
        KeyKind::Text => "VARCHAR(768)",
    };
    let mut paths = vec![format!("c0 {key_type} PATH '$[0]'")];
    paths.extend(table.outputs.iter().enumerate().map(|(i, (_, ty))| {
        let ty = match ty {
            ResultType::Float => "DOUBLE",
            ResultType::Integer => "BIGINT",
            ResultType::Boolean => "TINYINT",
            ResultType::Text => "LONGTEXT",
        };
        format!("c{} {ty} PATH '$[{}]'", i + 1, i + 1)
    }));
    let mut selected: Vec<String> = (0..paths.len()).map(|i| format!("j.c{i}")).collect();
    selected.extend(table.lineage.columns().iter().map(|_| "?".to_owned()));
    let updates: Vec<String> = names[1..]
        .iter()
        .map(|c| format!("{c} = VALUES({c})"))
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM JSON_TABLE(?, '$[*]' COLUMNS ({})) AS j \
         ON DUPLICATE KEY UPDATE {}",
        table.table.backticked(),
        names.join(", "),
        selected.join(", "),
        paths.join(", "),
        updates.join(", ")
    )
}

/// Append row `row` of `columns` to `json` as an array; booleans as 0 and 1, NULL as null.
/// Doubles are written in their shortest exact form, so the server reads back the same bits.
fn json_row(json: &mut String, columns: &[ResultColumn<'_>], row: usize) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    json.push('[');
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        match column {
            ResultColumn::Float(values) => match values.get(row) {
                Some(v) if v.is_finite() => {
                    let _ = write!(json, "{}", serde_json::Number::from_f64(v).expect("finite"));
                }
                Some(v) => anyhow::bail!("result value {v} is not finite"),
                None => json.push_str("null"),
            },
            ResultColumn::Integer(values) => match values.get(row) {
                Some(v) => {
                    let _ = write!(json, "{v}");
                }
                None => json.push_str("null"),
            },
            ResultColumn::Boolean(values) => json.push_str(match values.get(row) {
                Some(true) => "1",
                Some(false) => "0",
                None => "null",
            }),
            ResultColumn::Text(values) => match values.get(row) {
                Some(v) => json.push_str(&serde_json::to_string(v)?),
                None => json.push_str("null"),
            },
        }
    }
    json.push(']');
    Ok(())
}
