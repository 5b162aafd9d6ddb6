//! A window's pipeline: three stages at once, joined by bounded channels so memory follows the
//! chunk size and not the window. A reader task streams the source's rows, scoring runs on the
//! blocking pool (off the async threads), and the [`Writer`] puts the results in the window's
//! transaction, which the pipeline hands back, uncommitted, with what it found.

use std::sync::Arc;

use anyhow::Context;
use polars::prelude::Column;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::progress::WindowProgress;
use super::writer::{WRITE_AHEAD, Write, Writer};
use crate::bad_row::{BadRow, BadRowCounts};
use crate::claim::Claim;
use crate::db::Backend;
use crate::error::BadWindow;
use crate::features::extract_features;
use crate::job::PreparedJob;
use crate::ledger::RunRecord;
use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::sink::{RunStamp, ScoredChunk};
use crate::source::SourceChunk;
use crate::spec::BadRowPolicy;

/// Chunks the reader may run ahead of scoring.
const READ_AHEAD: usize = 2;

/// Read, score and write `window`, counting into `record`; the open transaction holding every
/// row written, the bad rows found by reason, and the window's profile (unless the job turns
/// profiles off).
pub(super) async fn run_pipeline<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    window: Window,
    stamp: &RunStamp,
    claim: &Claim,
    record: &mut RunRecord,
    shown: &WindowProgress,
) -> anyhow::Result<(B::Tx, BadRowCounts, Option<Profile>)> {
    let mut found = BadRowCounts::default();
    let mut profile = job.spec.monitor.profile.then(|| job.empty_profile());
    let (sender, mut chunks) = mpsc::channel::<SourceChunk>(READ_AHEAD);
    let reader = tokio::spawn({
        let db = db.clone();
        let job = Arc::clone(job);
        let claim = claim.clone();
        async move {
            db.read_window(&job.spec, &job.shape, window, claim.shard, &claim, sender)
                .await
        }
        .instrument(tracing::Span::current())
    });
    // Abort the reader however this function ends, including when its future is dropped.
    let reader = AbortOnDrop(reader);
    let (to_writer, writes) = mpsc::channel::<Write>(WRITE_AHEAD);
    // The writer runs beside the feeder in this task, not as a task of its own: a SQLite write
    // then holds this thread and pauses the feeder, rather than competing with ONNX Runtime's
    // threads for the cores (as its own task: 10% slower with the heavy model on 2 cores); a
    // PostgreSQL write awaits the server, and the feeder goes on meanwhile.
    let writer = Writer {
        db,
        job,
        stamp,
        claim,
        open: None,
    };
    let (written, fed) = tokio::join!(
        writer.write_window(writes),
        feed(
            job,
            &mut chunks,
            to_writer,
            record,
            (&mut found, &mut profile),
            shown
        ),
    );
    // A failed write is why the feeder stopped early: its error comes first.
    let tx = written?;
    fed?;
    reader.join().await?;
    Ok((tx, found, profile))
}

/// Hand each chunk read to scoring, and each scored chunk to the writer, routing bad rows by the
/// job's policy; returns when the window is read, or early when the writer stops taking chunks.
/// The profile travels with the chunk being scored, which profiles it on the scoring thread.
async fn feed(
    job: &Arc<PreparedJob>,
    chunks: &mut mpsc::Receiver<SourceChunk>,
    to_writer: mpsc::Sender<Write>,
    record: &mut RunRecord,
    (found, profile): (&mut BadRowCounts, &mut Option<Profile>),
    shown: &WindowProgress,
) -> anyhow::Result<()> {
    let bad_rows = &job.spec.bad_rows;
    // Chunk n+1 is read (by the reader task) while chunk n scores on the blocking pool and
    // earlier chunks are written.
    let mut scoring: Option<tokio::task::JoinHandle<anyhow::Result<Scored>>> = None;
    loop {
        let next = chunks.recv().await;
        if let Some(chunk) = &next {
            record.rows_read += chunk.frame.height() as i64;
        }
        let done = match scoring.take() {
            Some(previous) => {
                let (scored, bad, profiled) =
                    previous.await.context("the scoring task panicked")??;
                *profile = profiled;
                Some((scored, bad))
            }
            None => None,
        };
        // Chunk n+1 starts scoring only once chunk n is done: ONNX Runtime's threads take every
        // core, and two runs at once slow each other down.
        scoring = next.map(|chunk| spawn_scoring(Arc::clone(job), chunk, profile.take()));
        if let Some((scored, bad)) = done {
            shown.add((bad.len() + scored.as_ref().map_or(0, |s| s.rows())) as u64);
            let mut handed = true;
            if let Some(first) = bad.first() {
                found.add(&bad);
                record.rows_bad += bad.len() as i64;
                record.bad_rows = Some(found.summary());
                match bad_rows.policy {
                    BadRowPolicy::Fail => {
                        return Err(BadWindow::Policy {
                            first: first.to_string(),
                        }
                        .into());
                    }
                    BadRowPolicy::Quarantine => {
                        record.rows_quarantined += bad.len() as i64;
                        handed = to_writer.send(Write::Quarantine(bad)).await.is_ok();
                    }
                    BadRowPolicy::Skip => record.rows_skipped += bad.len() as i64,
                }
            }
            if let Some(scored) = scored {
                record.rows_written += scored.rows() as i64;
                handed = handed && to_writer.send(Write::Results(scored)).await.is_ok();
            }
            if !handed {
                return Ok(()); // the writer failed, and says why
            }
        }
        if scoring.is_none() {
            return Ok(());
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<anyhow::Result<()>>);

impl AbortOnDrop {
    async fn join(mut self) -> anyhow::Result<()> {
        (&mut self.0).await.context("the window's reader stopped")?
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A scored chunk (if any row is left), the rows that could not be scored, and the window's
/// profile with the chunk added.
type Scored = (Option<ScoredChunk>, Vec<BadRow>, Option<Profile>);

/// Features, model, output checks and the profile for one chunk, started on the blocking pool.
fn spawn_scoring(
    job: Arc<PreparedJob>,
    chunk: SourceChunk,
    mut profile: Option<Profile>,
) -> tokio::task::JoinHandle<anyhow::Result<Scored>> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // The features are profiled on a thread of their own while the model scores: profiling
        // on the scoring thread, after it, added up to a third to a run with a light model.
        let (scored, profiled) = std::thread::scope(|scope| {
            let profiling = profile.as_mut().map(|profile| {
                let chunk = &chunk;
                std::thread::Builder::new()
                    .name("profile".into())
                    .spawn_scoped(scope, move || profile.add_features(chunk))
            });
            let scored = score_chunk(&job, &chunk);
            let profiled = match profiling {
                None => Ok(()),
                Some(Ok(thread)) => thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("profiling the chunk panicked"))),
                Some(Err(err)) => {
                    Err(anyhow::Error::new(err).context("starting a profiling thread"))
                }
            };
            (scored, profiled)
        });
        profiled?;
        let (rows, mut bad, outputs) = scored?;
        let Some(outputs) = outputs else {
            return Ok((None, bad, profile));
        };
        if let Some(profile) = &mut profile {
            profile.add_outputs(chunk.frame.width() - 1, &outputs)?;
        }
        let (scored, bad_outputs) = ScoredChunk::new(&chunk, &rows, outputs);
        bad.extend(bad_outputs);
        Ok((scored, bad, profile))
    })
}

/// A chunk through features and model: the rows scored (indexes into the chunk), the rows that
/// could not be, and the model's output columns (none when no row was left to score).
type ModelOutput = (Vec<usize>, Vec<BadRow>, Option<Vec<Column>>);

/// Features and model for one chunk.
fn score_chunk(job: &PreparedJob, chunk: &SourceChunk) -> anyhow::Result<ModelOutput> {
    let features = extract_features(chunk, &job.inputs, &job.fill);
    if features.rows.is_empty() {
        return Ok((features.rows, features.bad, None));
    }
    let outputs = job
        .model
        .score(&features.inputs, features.rows.len(), &job.outputs)?;
    Ok((features.rows, features.bad, Some(outputs)))
}
