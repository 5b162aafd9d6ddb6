//! The window's writer: the last stage of the pipeline, which owns the window's transaction.

use tokio::sync::mpsc;

use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::db::{Backend, WindowTx, ledger};
use crate::error::ConfigError;
use crate::job::PreparedJob;
use crate::sink::{ResultsTable, RunStamp, ScoredChunk};
use crate::spec::BadRowPolicy;

/// Scored chunks that may wait for the writer. The writer takes all that wait as one batch, so
/// a database slower than scoring gets fewer, larger statements: on PostgreSQL, 10,000-row
/// statements took a 1M-row run 2.5 s, 50,000-row ones 2.0 s.
pub(super) const WRITE_AHEAD: usize = 8;

/// What the window's writer does, in order, in the window's transaction.
pub(super) enum Write {
    Results(ScoredChunk),
    Quarantine(Vec<BadRow>),
}

/// The window's writer: opens the transaction when the first rows are ready (a slow source
/// query then holds no transaction, nor any lock, while it runs), holds it until every row is
/// in, then hands it back for the ledger, the watermark and the commit. It takes all the scored
/// chunks waiting for it as one batch (see [`WRITE_AHEAD`]).
pub(super) struct Writer<'a, B: Backend> {
    pub(super) db: &'a B,
    pub(super) job: &'a PreparedJob,
    pub(super) stamp: &'a RunStamp,
    pub(super) claim: &'a Claim,
    pub(super) open: Option<Open<B>>,
}

/// The window's transaction, once open.
pub(super) struct Open<B: Backend> {
    tx: B::Tx,
    /// The job's results table as the transaction found it (see [`pin_results_table`]).
    results: ResultsTable,
    /// Whether the job has rows in the quarantine, which rows scored now leave. Asked once, so
    /// jobs with none pay nothing per chunk.
    has_quarantined: bool,
}

impl<B: Backend> Writer<'_, B> {
    pub(super) async fn write_window(
        mut self,
        mut writes: mpsc::Receiver<Write>,
    ) -> anyhow::Result<B::Tx> {
        let mut batch = Vec::with_capacity(WRITE_AHEAD);
        while let Some(first) = writes.recv().await {
            let mut next = Some(first);
            while let Some(write) = next {
                match write {
                    Write::Results(scored) => batch.push(scored),
                    Write::Quarantine(bad) => {
                        // In order: results handed before these bad rows go in first.
                        self.write_results(&mut batch).await?;
                        let (job, stamp) = (self.job, self.stamp);
                        let open = self.open().await?;
                        open.tx.quarantine(&job.spec.name, stamp, &bad).await?;
                    }
                }
                next = match batch.len() < WRITE_AHEAD {
                    true => writes.try_recv().ok(),
                    false => None,
                };
            }
            self.write_results(&mut batch).await?;
        }
        self.open().await?;
        Ok(self.open.expect("opened").tx)
    }

    /// The window's transaction, opened on first use.
    async fn open(&mut self) -> anyhow::Result<&mut Open<B>> {
        if self.open.is_none() {
            let job = self.job;
            let mut tx = self.db.begin(self.claim).await?;
            let results = pin_results_table(&mut tx, job).await?;
            let has_quarantined = job.spec.bad_rows.policy == BadRowPolicy::Quarantine
                && ledger::has_quarantined::<<B::Tx as WindowTx>::Db>(tx.conn(), &job.spec.name)
                    .await?;
            self.open = Some(Open {
                tx,
                results,
                has_quarantined,
            });
        }
        Ok(self.open.as_mut().expect("opened"))
    }

    /// Write `batch` (emptying it) as one chunk.
    async fn write_results(&mut self, batch: &mut Vec<ScoredChunk>) -> anyhow::Result<()> {
        let Some(scored) = ScoredChunk::concat(std::mem::take(batch)) else {
            return Ok(());
        };
        let (job, stamp, shard) = (self.job, self.stamp, self.claim.shard);
        let open = self.open().await?;
        open.tx
            .upsert_results(&open.results, stamp, &scored, shard)
            .await?;
        if open.has_quarantined {
            open.tx
                .release_quarantined(&job.spec.name, scored.keys_as_text())
                .await?;
        }
        tracing::debug!(rows = scored.rows(), "rows written");
        Ok(())
    }
}

/// The job's results table, as the window writes it: created if it does not exist, then pinned
/// (locked as its writes lock it, and described inside the transaction) and checked to hold
/// what the window writes. The job was prepared before; a daemon prepared it hours ago. A
/// column dropped or retyped since is a configuration error naming the table and the column,
/// not a write that fails halfway or, through PostgreSQL's binary COPY, stores one type's bytes
/// as another's.
async fn pin_results_table<T: WindowTx>(
    tx: &mut T,
    job: &PreparedJob,
) -> anyhow::Result<ResultsTable> {
    let table = &job.results.table;
    let mut described = tx.pin_results_table(table).await?;
    if described.is_none() {
        // A table that existed when the job was prepared is not created again unless it is gone
        // now, so a role that may write it but not create tables can run the job.
        tx.create_results_table(&job.results).await?;
        described = tx.pin_results_table(table).await?;
    }
    let described = described
        .ok_or_else(|| anyhow::anyhow!("results table {table} is missing after it was created"))?;
    job.results
        .check_columns(&described, T::holds)
        .map_err(|problem| ConfigError::job(&job.spec.name, problem))?;
    Ok(ResultsTable {
        existing: Some(described),
        ..job.results.clone()
    })
}
