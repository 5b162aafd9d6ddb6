//! A window's transaction: the [`ResultsSink`] that opens it and the [`WindowTx`] that writes in
//! it, each database's in its `write.rs`. The results, the quarantine, the ledger row, the
//! profile, the watermark and the fencing check commit together or not at all; what is the
//! same SQL in every dialect is written once, in [`super::ledger`], [`super::profiles`] and
//! [`super::claim_store`], on the transaction's connection ([`WindowTx::conn`]).

use std::future::Future;

use anyhow::Context;

use super::dialect::{self, Dialect, Param};
use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::ident::TableName;
use crate::shard::Shard;
use crate::sink::{ResultsTable, RunStamp, ScoredChunk, Written};
use crate::spec::LineageColumns;

/// Where a window's results go: its transaction, and the results table as the database
/// describes it.
pub(crate) trait ResultsSink {
    /// The window's transaction.
    type Tx: WindowTx;

    /// Open the window's write transaction for the run holding `claim`. No statement in it may
    /// wait longer than the lease, nor may it sit idle longer (the servers end it). The servers
    /// also tag the session with the claim id, so a run that takes the job over from a frozen
    /// holder can end it, whatever it is waiting on.
    fn begin(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<Self::Tx>> + Send;

    /// The columns of an existing table and their declared types, or `None` if there is no
    /// such table.
    fn table_columns(
        &self,
        table: &TableName,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<(String, String)>>>> + Send;
}

/// The window's transaction: what only the database's own SQL can do in it.
pub(crate) trait WindowTx: Send + Sized {
    type Db: Dialect;

    /// The transaction itself.
    fn tx(&mut self) -> &mut sqlx::Transaction<'static, Self::Db>;

    fn into_tx(self) -> sqlx::Transaction<'static, Self::Db>;

    /// The transaction's connection, for the SQL written once for every backend.
    fn conn(&mut self) -> &mut <Self::Db as sqlx::Database>::Connection {
        &mut *self.tx()
    }

    /// The results table's column definitions, in this dialect: key, outputs, then the stamp.
    fn results_columns(table: &ResultsTable) -> Vec<String>;

    /// Whether a column declared as `declared` (the type's name as
    /// [`ResultsSink::table_columns`] and [`WindowTx::pin_results_table`] describe it) can hold
    /// `value`.
    fn holds(declared: &str, value: Written) -> bool;

    /// The results table's columns and declared types as this transaction sees them, after
    /// taking the lock its writes take (so no `ALTER TABLE` changes them before the commit);
    /// `None` if there is no such table.
    fn pin_results_table(
        &mut self,
        table: &TableName,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<(String, String)>>>> + Send;

    /// Before creating the results table: wait for any other window creating it to commit (the
    /// shards of a new job all start by creating it). SQLite's write lock already does.
    fn before_create(
        &mut self,
        _table: &ResultsTable,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Create the results table (`CREATE TABLE IF NOT EXISTS`).
    fn create_results_table(
        &mut self,
        table: &ResultsTable,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            self.before_create(table).await?;
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
                table.table.quoted(),
                Self::results_columns(table).join(",\n  ")
            );
            dialect::execute(Self::Db::on_conn(self.conn()), sql, vec![])
                .await
                .with_context(|| format!("creating results table {}", table.table))?;
            if table.retained {
                dialect::execute(
                    Self::Db::on_conn(self.conn()),
                    Self::expiry_index(table),
                    vec![],
                )
                .await
                .with_context(|| format!("indexing results table {}", table.table))?;
            }
            Ok(())
        }
    }

    /// `CREATE INDEX` on the table's [`ResultsTable::expiry_column`], for `[sink] retain`.
    fn expiry_index(table: &ResultsTable) -> String {
        let column = table.expiry_column();
        format!(
            "CREATE INDEX IF NOT EXISTS \"{}_{column}\" ON {} (\"{column}\")",
            table.table.name.as_str(),
            table.table.quoted()
        )
    }

    /// Insert or replace (by key) one scored chunk of `shard`'s rows (only its keys can be in the
    /// chunk: a backend looking for them in the table may skip the other shards').
    fn upsert_results(
        &mut self,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
        shard: Shard,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Put bad rows in the quarantine, replacing earlier entries of the same keys.
    fn quarantine(
        &mut self,
        job: &str,
        stamp: &RunStamp,
        rows: &[BadRow],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Take rows that were just scored out of the quarantine.
    fn release_quarantined(
        &mut self,
        job: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn commit(self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            self.into_tx()
                .commit()
                .await
                .context("committing the window")
        }
    }
}

/// Delete the rows a run wrote to `table` in this transaction (a challenger that failed part of
/// the way through a window).
pub(crate) async fn discard_run<DB: Dialect>(
    conn: &mut DB::Connection,
    table: &ResultsTable,
    stamp: &RunStamp,
) -> anyhow::Result<()> {
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1",
        DB::table(&table.table),
        table.lineage.run_column()
    );
    let run = match table.lineage {
        LineageColumns::Compact => Param::from(stamp.run),
        LineageColumns::Full => Param::from(&stamp.run_id),
    };
    dialect::execute(DB::on_conn(conn), sql, vec![run])
        .await
        .with_context(|| format!("discarding the challenger's rows from {}", table.table))?;
    Ok(())
}
