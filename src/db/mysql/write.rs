//! Writing a MySQL window: the [`WindowTx`] (results, quarantine, ledger row, watermark and
//! fencing check in one InnoDB transaction), and the window's session.
//!
//! Results go in as multi-row `INSERT … ON DUPLICATE KEY UPDATE` statements. DDL commits the
//! transaction it runs in on MySQL, so the results table is created on a connection of its own
//! before the window writes (`CREATE TABLE IF NOT EXISTS`): a first window that fails leaves
//! the table, empty.

use anyhow::Context;
use sqlx::mysql::{MySqlArguments, MySqlPool};
use sqlx::{Arguments, AssertSqlSafe, MySql, Transaction};

use super::MySqlBackend;
use crate::claim::Claim;
use crate::db::WindowTx;
use crate::features::BadRow;
use crate::shard::Shard;
use crate::sink::{ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk, StampValue};
use crate::source::KeyKind;
use crate::spec::{MetaKind, RESULT_META_COLUMNS};

/// Rows per multi-row statement: past a thousand or so, bigger statements write no faster
/// (measured on MariaDB), and the placeholders stay far below the protocol's 65,535.
const ROWS_PER_INSERT: usize = 1000;

/// A MySQL window's transaction, and the pool the results table is created through.
pub struct MySqlTx {
    tx: Transaction<'static, MySql>,
    pool: MySqlPool,
}

impl MySqlBackend {
    /// Open the window's transaction on a connection of its own, closed when the window ends
    /// (its session settings die with it). For this session only: no row-lock wait, and no idle
    /// spell, lasts longer than the lease, so a frozen holder's session is ended by the server
    /// and its locks freed within a lease.
    pub(super) async fn open(&self, claim: &Claim) -> anyhow::Result<MySqlTx> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("opening the window's transaction")?;
        conn.close_on_drop();
        let seconds = claim.lease().as_secs().max(1);
        sqlx::query(AssertSqlSafe(format!(
            "SET SESSION innodb_lock_wait_timeout = {seconds}, SESSION wait_timeout = {seconds}"
        )))
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
        columns.extend(RESULT_META_COLUMNS.iter().map(|(name, kind)| match kind {
            MetaKind::Text => format!("`{name}` VARCHAR(64) NOT NULL"),
            MetaKind::Time => format!("`{name}` DATETIME(6) NOT NULL"),
        }));
        columns
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
        let names: Vec<String> = table
            .column_names()
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        let updates: Vec<String> = names[1..]
            .iter()
            .map(|c| format!("{c} = VALUES({c})"))
            .collect();
        let row = format!("({})", vec!["?"; names.len()].join(", "));
        let stamp = stamp.values();
        for first in (0..chunk.rows()).step_by(ROWS_PER_INSERT) {
            let rows = first..(first + ROWS_PER_INSERT).min(chunk.rows());
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
                table.table.backticked(),
                names.join(", "),
                vec![row.as_str(); rows.len()].join(", "),
                updates.join(", ")
            );
            let mut args = MySqlArguments::default();
            for row in rows {
                for column in &columns {
                    bind(&mut args, column, row)?;
                }
                for value in &stamp {
                    match value {
                        StampValue::Text(text) => args.add(*text),
                        StampValue::Time(time) => args.add(*time),
                    }
                    .map_err(anyhow::Error::from_boxed)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .persistent(false)
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
                    args.add(stamp.window.start)?;
                    args.add(stamp.window.end)?;
                    args.add(stamp.scored_at)?;
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

/// Add row `row` of `column` to `args`.
fn bind(args: &mut MySqlArguments, column: &ResultColumn<'_>, row: usize) -> anyhow::Result<()> {
    match column {
        ResultColumn::Float(values) => args.add(values.get(row)),
        ResultColumn::Integer(values) => args.add(values.get(row)),
        ResultColumn::Boolean(values) => args.add(values.get(row)),
        ResultColumn::Text(values) => args.add(values.get(row)),
    }
    .map_err(anyhow::Error::from_boxed)
}
