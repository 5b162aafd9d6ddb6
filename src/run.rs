//! One run of one window, from the ledger's `running` row to the commit: the window's rows are
//! read ([`crate::source`]), turned into features ([`crate::features`]), scored
//! ([`crate::model`]) and written ([`crate::sink`]) inside one transaction that also records the
//! run in the [`crate::ledger`].
//!
//! Reading runs as its own task, a bounded two chunks ahead, so memory follows the chunk size
//! and not the window; scoring runs on the blocking pool, off the async threads.

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::db::Backend;
use crate::features::feature_matrix;
use crate::job::PreparedJob;
use crate::ledger::{RunRecord, RunStatus, hostname};
use crate::plan::Window;
use crate::sink::{RunStamp, ScoredChunk};
use crate::source::SourceChunk;

/// Chunks the reader may run ahead of scoring.
const READ_AHEAD: usize = 2;

/// What a committed run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub window: Window,
    pub rows_read: i64,
    pub rows_written: i64,
}

/// Score `window` for `job` and commit it whole, or fail and write nothing but the ledger's
/// record of the failure.
#[tracing::instrument(skip_all, fields(job = %job.spec.name, window = %window, run_id = tracing::field::Empty))]
pub async fn run_window<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    window: Window,
) -> anyhow::Result<RunSummary> {
    let run_id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("run_id", run_id.as_str());
    let mut record = RunRecord {
        run_id: run_id.clone(),
        job: job.spec.name.clone(),
        window_start: window.start,
        window_end: window.end,
        status: RunStatus::Running,
        rows_read: 0,
        rows_written: 0,
        model_sha256: job.model.sha256.clone(),
        started_at: Utc::now(),
        finished_at: None,
        error: None,
        host: hostname(),
        pid: i64::from(std::process::id()),
    };
    db.insert_run(&record).await?;
    tracing::info!("run started");

    match score_window(db, job, window, &mut record).await {
        Ok(()) => {
            tracing::info!(
                rows_read = record.rows_read,
                rows_written = record.rows_written,
                "window committed"
            );
            Ok(RunSummary {
                run_id,
                window,
                rows_read: record.rows_read,
                rows_written: record.rows_written,
            })
        }
        Err(err) => {
            record.status = RunStatus::Failed;
            record.rows_written = 0; // the window's transaction was rolled back
            record.finished_at = Some(Utc::now());
            record.error = Some(format!("{err:#}"));
            if let Err(ledger_err) = db.fail_run(&record).await {
                tracing::warn!(error = %format!("{ledger_err:#}"), "could not record the failure in the ledger");
            }
            Err(err.context(format!(
                "job `{}`: window {window} was not written",
                job.spec.name
            )))
        }
    }
}

/// The window's transaction: everything in it commits together or not at all.
async fn score_window<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    window: Window,
    record: &mut RunRecord,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    B::create_results_table(&mut tx, &job.results).await?;
    let stamp = RunStamp {
        run_id: record.run_id.clone(),
        window,
        model_version: job.model.sha256.clone(),
        scored_at: Utc::now(),
    };

    let (sender, mut chunks) = mpsc::channel::<SourceChunk>(READ_AHEAD);
    let reader = tokio::spawn({
        let db = db.clone();
        let job = Arc::clone(job);
        async move { db.read_window(&job.spec, &job.shape, window, sender).await }
            .instrument(tracing::Span::current())
    });
    let written = async {
        while let Some(chunk) = chunks.recv().await {
            record.rows_read += chunk.frame.height() as i64;
            let scored = score_chunk(Arc::clone(job), chunk).await?;
            B::upsert_results(&mut tx, &job.results, &stamp, &scored).await?;
            record.rows_written += scored.rows() as i64;
            tracing::debug!(rows_written = record.rows_written, "chunk written");
        }
        anyhow::Ok(())
    }
    .await;
    if written.is_err() {
        reader.abort();
    }
    written?;
    reader.await.context("the window's reader stopped")??;

    record.status = RunStatus::Succeeded;
    record.finished_at = Some(Utc::now());
    B::finish_run(&mut tx, record).await?;
    B::commit(tx).await
}

/// Features, model and output checks for one chunk, on the blocking pool.
async fn score_chunk(job: Arc<PreparedJob>, chunk: SourceChunk) -> anyhow::Result<ScoredChunk> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let matrix = feature_matrix(&chunk, job.model.input_type)?;
        let outputs = job.model.score(&matrix, &job.outputs)?;
        let key = chunk.frame.columns()[0].clone();
        Ok(ScoredChunk::new(key, outputs)?)
    })
    .await
    .context("the scoring task panicked")?
}
