//! A window's pipeline: three stages at once, joined by bounded channels so memory follows the
//! chunk size and not the window. A reader task streams the source's rows, scoring runs on the
//! blocking pool (off the async threads), and the [`Writer`] puts the results in the window's
//! transaction, which the pipeline hands back, uncommitted, with what it found.
//!
//! A challenger scores each chunk's features right after the model, and its rows go to the
//! writer beside the model's. When it fails, the rest of the window is scored without it and
//! the writer discards the challenger rows it already wrote: a window has all of its challenger
//! rows or none.

use std::sync::Arc;

use anyhow::Context;
use polars::prelude::Column;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::progress::WindowProgress;
use super::writer::{WRITE_AHEAD, Write, Writer};
use crate::bad_row::{BadRow, BadRowCounts};
use crate::challenger::Agreement;
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

/// What a window's pipeline found besides the rows it wrote.
#[derive(Default)]
pub(super) struct Findings {
    /// The bad rows, by reason.
    pub(super) bad: BadRowCounts,
    /// The window's profile, unless the job turns profiles off.
    pub(super) profile: Option<Profile>,
    /// How the challenger agreed with the model, when it scored the whole window.
    pub(super) agreement: Option<Agreement>,
}

/// Read, score and write `window`, counting into `record`; the open transaction holding every
/// row written, and what the pipeline found. A challenger that fails is recorded in `record`.
pub(super) async fn run_pipeline<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    window: Window,
    stamp: &RunStamp,
    claim: &Claim,
    record: &mut RunRecord,
    shown: &WindowProgress,
) -> anyhow::Result<(B::Tx, Findings)> {
    let mut findings = Findings {
        profile: job.spec.monitor.profile.then(|| job.empty_profile()),
        agreement: match &job.challenger {
            Some(Ok(challenger)) => Some(Agreement::new(&challenger.results)),
            _ => None,
        },
        ..Findings::default()
    };
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
        feed(job, &mut chunks, to_writer, record, &mut findings, shown),
    );
    // A failed write is why the feeder stopped early: its error comes first.
    let (tx, challenger_skipped) = written?;
    fed?;
    reader.join().await?;
    if let Some(problem) = challenger_skipped {
        findings.agreement = None;
        record
            .lineage
            .challenger_error
            .get_or_insert_with(|| format!("the challenger's rows were not written: {problem}"));
    }
    Ok((tx, findings))
}

/// Hand each chunk read to scoring, and each scored chunk to the writer, routing bad rows by the
/// job's policy; returns when the window is read, or early when the writer stops taking chunks.
/// The profile travels with the chunk being scored, which profiles it on the scoring thread.
async fn feed(
    job: &Arc<PreparedJob>,
    chunks: &mut mpsc::Receiver<SourceChunk>,
    to_writer: mpsc::Sender<Write>,
    record: &mut RunRecord,
    findings: &mut Findings,
    shown: &WindowProgress,
) -> anyhow::Result<()> {
    let bad_rows = &job.spec.bad_rows;
    let found = &mut findings.bad;
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
                let scored = previous.await.context("the scoring task panicked")??;
                findings.profile = scored.profile;
                Some((scored.scored, scored.bad, scored.challenger))
            }
            None => None,
        };
        // The challenger scores as long as it has not failed in this window.
        let challenger = findings.agreement.is_some();
        // Chunk n+1 starts scoring only once chunk n is done: ONNX Runtime's threads take every
        // core, and two runs at once slow each other down.
        scoring = next.map(|chunk| {
            spawn_scoring(Arc::clone(job), chunk, findings.profile.take(), challenger)
        });
        if let Some((scored, bad, challenged)) = done {
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
            match challenged {
                Some(Challenged::Scored(scored, agreement)) => {
                    if let Some(total) = &mut findings.agreement {
                        total.merge(&agreement);
                        if let Some(scored) = scored {
                            handed =
                                handed && to_writer.send(Write::Challenger(scored)).await.is_ok();
                        }
                    }
                }
                Some(Challenged::Failed(problem)) if findings.agreement.is_some() => {
                    tracing::warn!(problem = %problem, "the challenger failed: its rows of this window are skipped");
                    record.lineage.challenger_error =
                        Some(format!("the challenger failed to score: {problem}"));
                    findings.agreement = None;
                    handed = handed && to_writer.send(Write::DiscardChallenger).await.is_ok();
                }
                _ => {}
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

/// One chunk through scoring.
struct Scored {
    /// The chunk's scored rows, if any is left.
    scored: Option<ScoredChunk>,
    /// The rows that could not be scored.
    bad: Vec<BadRow>,
    /// The window's profile with the chunk added.
    profile: Option<Profile>,
    /// What the challenger made of the chunk, when it scored it.
    challenger: Option<Challenged>,
}

/// A chunk as the challenger scored it.
enum Challenged {
    /// Its rows (those with a finite prediction) and how it agreed with the model.
    Scored(Option<ScoredChunk>, Agreement),
    Failed(String),
}

/// Features, model (and challenger), output checks and the profile for one chunk, started on
/// the blocking pool.
fn spawn_scoring(
    job: Arc<PreparedJob>,
    chunk: SourceChunk,
    mut profile: Option<Profile>,
    challenger: bool,
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
            let scored = score_chunk(&job, &chunk, challenger);
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
        let output = scored?;
        let mut bad = output.bad;
        let Some(outputs) = output.outputs else {
            return Ok(Scored {
                scored: None,
                bad,
                profile,
                challenger: None,
            });
        };
        if let Some(profile) = &mut profile {
            profile.add_outputs(chunk.frame.width() - 1, &outputs)?;
        }
        let challenger = output.challenger.map(|challenged| match challenged {
            Err(problem) => Challenged::Failed(problem),
            Ok(theirs) => {
                let mut agreement = Agreement::default();
                if let Some(Ok(challenger)) = &job.challenger {
                    agreement = Agreement::new(&challenger.results);
                    agreement.add(&outputs, &theirs);
                }
                if let Some(profile) = &mut profile {
                    profile.add_challenger(&theirs);
                }
                // Its NaN or infinite predictions are left out of its table; the model's rows
                // decide which rows are bad.
                let (scored, _) = ScoredChunk::new(&chunk, &output.rows, theirs);
                Challenged::Scored(scored, agreement)
            }
        });
        let (scored, bad_outputs) = ScoredChunk::new(&chunk, &output.rows, outputs);
        bad.extend(bad_outputs);
        Ok(Scored {
            scored,
            bad,
            profile,
            challenger,
        })
    })
}

/// A chunk through features and model.
struct ModelOutput {
    /// The rows scored, as indexes into the chunk.
    rows: Vec<usize>,
    /// The rows that could not be.
    bad: Vec<BadRow>,
    /// The model's output columns (none when no row was left to score).
    outputs: Option<Vec<Column>>,
    /// The challenger's, or why it could not score them.
    challenger: Option<Result<Vec<Column>, String>>,
}

/// Features, model and challenger (when `challenger`) for one chunk: both models score the
/// same tensors.
fn score_chunk(
    job: &PreparedJob,
    chunk: &SourceChunk,
    challenger: bool,
) -> anyhow::Result<ModelOutput> {
    let features = extract_features(chunk, &job.inputs, &job.fill);
    if features.rows.is_empty() {
        return Ok(ModelOutput {
            rows: features.rows,
            bad: features.bad,
            outputs: None,
            challenger: None,
        });
    }
    let rows = features.rows.len();
    let outputs = job.model.score(&features.inputs, rows, &job.outputs)?;
    let challenger = match (&job.challenger, challenger) {
        (Some(Ok(c)), true) => Some(
            c.model
                .score(&features.inputs, rows, &c.outputs)
                .map_err(|e| format!("{e:#}")),
        ),
        _ => None,
    };
    Ok(ModelOutput {
        rows: features.rows,
        bad: features.bad,
        outputs: Some(outputs),
        challenger,
    })
}
