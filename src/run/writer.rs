//! The window's writer: the last stage of the pipeline, which owns the window's transaction.

use tokio::sync::mpsc;

use crate::claim::Claim;
use crate::db::{Backend, WindowTx};
use crate::features::BadRow;
use crate::job::PreparedJob;
use crate::sink::{RunStamp, ScoredChunk};
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
            // A table that existed when the job was prepared is not created again, so a role
            // that may write it but not create tables can run the job.
            if job.results.existing.is_none() {
                tx.create_results_table(&job.results).await?;
            }
            let has_quarantined = job.spec.bad_rows.policy == BadRowPolicy::Quarantine
                && tx.has_quarantined(&job.spec.name).await?;
            self.open = Some(Open {
                tx,
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
            .upsert_results(&job.results, stamp, &scored, shard)
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
