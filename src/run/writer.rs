//! The window's writer: the last stage of the pipeline, which owns the window's transaction.

use tokio::sync::mpsc;

use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::db::{Backend, WindowTx, discard_run, ledger};
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
    /// The challenger's rows of a chunk, for its own table.
    Challenger(ScoredChunk),
    /// The challenger failed: take out the rows of this window it already wrote.
    DiscardChallenger,
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
    /// The challenger's table as the transaction found it, while the challenger scores; or why
    /// its rows are not written.
    challenger: Option<Result<ResultsTable, String>>,
    /// Whether the job has rows in the quarantine, which rows scored now leave. Asked once, so
    /// jobs with none pay nothing per chunk.
    has_quarantined: bool,
}

impl<B: Backend> Writer<'_, B> {
    /// Write what comes until the feeder is done; the transaction, and why the challenger's
    /// rows were not written, if they were not.
    pub(super) async fn write_window(
        mut self,
        mut writes: mpsc::Receiver<Write>,
    ) -> anyhow::Result<(B::Tx, Option<String>)> {
        let mut batch = Vec::with_capacity(WRITE_AHEAD);
        let mut challenger = Vec::new();
        while let Some(first) = writes.recv().await {
            let mut next = Some(first);
            while let Some(write) = next {
                match write {
                    Write::Results(scored) => batch.push(scored),
                    Write::Challenger(scored) => challenger.push(scored),
                    Write::Quarantine(bad) => {
                        // In order: results handed before these bad rows go in first.
                        self.write_results(&mut batch).await?;
                        let (job, stamp) = (self.job, self.stamp);
                        let open = self.open().await?;
                        open.tx.quarantine(&job.spec.name, stamp, &bad).await?;
                    }
                    Write::DiscardChallenger => {
                        challenger.clear();
                        self.discard_challenger().await?;
                    }
                }
                next = match batch.len() < WRITE_AHEAD {
                    true => writes.try_recv().ok(),
                    false => None,
                };
            }
            self.write_results(&mut batch).await?;
            self.write_challenger(&mut challenger).await?;
        }
        // The tables `open` would pin: the job's, and a challenger's that can score.
        let created = |table: &ResultsTable| table.existing.is_some();
        let challenger_created = match &self.job.challenger {
            Some(Ok(challenger)) => created(&challenger.results),
            _ => true,
        };
        if self.open.is_none() && created(&self.job.results) && challenger_created {
            // Nothing to write (an empty window): its transaction holds the ledger row, the
            // watermark and the fencing check, and no results table needs pinning. A table
            // still to be created is, so a job's tables exist from its first window on.
            return Ok((self.db.begin(self.claim).await?, None));
        }
        let open = self.open().await?;
        let skipped = match &open.challenger {
            Some(Err(problem)) => Some(problem.clone()),
            _ => None,
        };
        Ok((self.open.expect("opened").tx, skipped))
    }

    /// The window's transaction, opened on first use.
    async fn open(&mut self) -> anyhow::Result<&mut Open<B>> {
        if self.open.is_none() {
            let job = self.job;
            let mut tx = self.db.begin(self.claim).await?;
            let results = pin_results_table(&mut tx, &job.results)
                .await?
                .map_err(|problem| ConfigError::job(&job.spec.name, problem))?;
            // A challenger's table that cannot take its rows is the challenger's problem only.
            let challenger = match &job.challenger {
                Some(Ok(challenger)) => Some(
                    pin_results_table(&mut tx, &challenger.results)
                        .await?
                        .map_err(|problem| format!("its table cannot take its rows: {problem}")),
                ),
                _ => None,
            };
            if let Some(Err(problem)) = &challenger {
                tracing::warn!(problem = %problem, "the challenger's rows of this window are skipped");
            }
            let has_quarantined = job.spec.bad_rows.policy == BadRowPolicy::Quarantine
                && ledger::has_quarantined::<<B::Tx as WindowTx>::Db>(tx.conn(), &job.spec.name)
                    .await?;
            self.open = Some(Open {
                tx,
                results,
                challenger,
                has_quarantined,
            });
        }
        Ok(self.open.as_mut().expect("opened"))
    }

    /// Write the challenger's `batch` (emptying it) as one chunk, into its table, stamped with its
    /// model.
    async fn write_challenger(&mut self, batch: &mut Vec<ScoredChunk>) -> anyhow::Result<()> {
        let Some(scored) = ScoredChunk::concat(std::mem::take(batch)) else {
            return Ok(());
        };
        let Some(Ok(challenger)) = &self.job.challenger else {
            return Ok(());
        };
        let stamp = RunStamp {
            model_version: challenger.model.sha256.clone(),
            model: self.stamp.challenger_model.ok_or_else(|| {
                anyhow::anyhow!("the challenger's model has no number in batchscore_models")
            })?,
            ..self.stamp.clone()
        };
        let shard = self.claim.shard;
        let open = self.open().await?;
        if let Some(Ok(table)) = &open.challenger {
            open.tx
                .upsert_results(table, &stamp, &scored, shard)
                .await?;
            tracing::debug!(rows = scored.rows(), "challenger rows written");
        }
        Ok(())
    }

    /// Take this window's challenger rows back out, and write no more of them.
    async fn discard_challenger(&mut self) -> anyhow::Result<()> {
        let stamp = self.stamp;
        let Some(open) = self.open.as_mut() else {
            return Ok(()); // nothing was written yet
        };
        if let Some(Ok(table)) = &open.challenger {
            discard_run::<<B::Tx as WindowTx>::Db>(open.tx.conn(), table, stamp).await?;
        }
        open.challenger = Some(Err("it failed to score".to_owned()));
        Ok(())
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

/// A results table (the job's, or its challenger's) as the window writes it: created if it does
/// not exist, then pinned (locked as its writes lock it, and described inside the transaction)
/// and checked to hold what the window writes: the table, or the problem with its columns. The
/// job was prepared before; a daemon prepared it hours ago. A column dropped or retyped since is
/// a configuration error naming the table and the column, not a write that fails halfway or,
/// through PostgreSQL's binary COPY, stores one type's bytes as another's.
async fn pin_results_table<T: WindowTx>(
    tx: &mut T,
    results: &ResultsTable,
) -> anyhow::Result<Result<ResultsTable, String>> {
    let table = &results.table;
    let mut described = tx.pin_results_table(table).await?;
    if described.is_none() {
        // A table that existed when the job was prepared is not created again unless it is gone
        // now, so a role that may write it but not create tables can run the job.
        tx.create_results_table(results).await?;
        described = tx.pin_results_table(table).await?;
    }
    let described = described
        .ok_or_else(|| anyhow::anyhow!("results table {table} is missing after it was created"))?;
    let pinned = results.described_as(described);
    Ok(pinned.check_columns(T::holds).map(|()| pinned))
}
