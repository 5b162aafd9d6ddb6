//! A run of a job: claim it, plan its windows from the watermark, and score each window from
//! the ledger's `running` row to its commit. Within a window the rows are read
//! ([`crate::source`]), turned into features ([`crate::features`]), scored ([`crate::model`])
//! and written ([`crate::sink`]) inside one transaction that also records the window in the
//! [`crate::ledger`] and moves the watermark by compare-and-set.
//!
//! Large windows are written chunk by chunk *inside* that one transaction, rather than committed
//! chunk by chunk: a window is then never half-written, with no partial state to clean up or
//! resume, and readers of the results table see a window all at once. Each window is three
//! stages at once, joined by bounded channels so memory follows the chunk size and not the
//! window: a reader task, scoring on the blocking pool (off the async threads), and the writer,
//! which opens the transaction when the first rows are ready, holds it while the rows go in and
//! takes what waits for it as one batch.
//!
//! No wait on the database outlasts the claim's lease: each step outside a window has that
//! deadline ([`within`]), and a window stops as soon as the claim's [`Keeper`] cannot confirm
//! the lease, or finds the job taken over.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::claim::{Claim, ClaimOutcome, Keeper, Lost};
use crate::db::{Backend, within};
use crate::error::{BadWindow, ConfigError, Contention, Interrupted};
use crate::features::{BadRow, extract_features};
use crate::job::PreparedJob;
use crate::ledger::{RunRecord, RunStatus, Tally};
use crate::plan::{Plan, Window, WindowRequest, plan_windows};
use crate::shutdown::Stop;
use crate::sink::{RunStamp, ScoredChunk};
use crate::source::SourceChunk;
use crate::spec::BadRowPolicy;

/// Chunks the reader may run ahead of scoring.
const READ_AHEAD: usize = 2;
/// Scored chunks that may wait for the writer. The writer takes all that wait as one batch, so
/// a database slower than scoring gets fewer, larger statements: on PostgreSQL, 10,000-row
/// statements took a 1M-row run 2.5 s, 50,000-row ones 2.0 s.
const WRITE_AHEAD: usize = 8;

/// What a committed window did.
#[derive(Debug, Clone)]
pub struct WindowSummary {
    pub run_id: String,
    pub window: Window,
    pub rows_read: i64,
    pub rows_written: i64,
}

/// What a run did: its committed windows, in order, and what it left.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub windows: Vec<WindowSummary>,
    pub skipped: Option<Window>,
    pub left_behind: usize,
}

/// How the watermark moves when a window commits.
#[derive(Debug, Clone, Copy)]
enum Advance {
    /// Scheduled windows: from the value planned from to the window's end, or not at all.
    From(Option<DateTime<Utc>>),
    /// Backfills leave the watermark alone.
    Never,
}

/// How long a ledger write after a failure, or the claim's release, may take: the run is over,
/// and the next one cleans up what these leave (abandoned rows, a lapsed lease).
const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Claim `job`, plan its windows and score them in order, each in its own transaction.
pub async fn run_job<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    request: WindowRequest,
    lease: TimeDelta,
    stop: &Stop,
    tally: &mut Tally,
) -> anyhow::Result<RunSummary> {
    let outcome = claim_and_run(db, job, request, lease, stop, tally).await;
    // SQLite: another writer held the database's write lock past the busy timeout.
    outcome.map_err(|err| match db.lock_wait(&err) {
        Some(waited) => anyhow::Error::from(Contention::DatabaseLocked {
            job: job.spec.name.clone(),
            waited,
        })
        .context(format!("{err:#}")),
        None => err,
    })
}

async fn claim_and_run<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    request: WindowRequest,
    lease: TimeDelta,
    stop: &Stop,
    tally: &mut Tally,
) -> anyhow::Result<RunSummary> {
    let name = &job.spec.name;
    let claim = Claim::new(name, lease);
    let claimed = within(claim.lease(), "the claim", db.claim(&claim)).await?;
    let lock = match claimed {
        ClaimOutcome::Acquired(lock) => lock,
        ClaimOutcome::Busy(holder) => {
            let busy = Contention::Busy {
                job: name.clone(),
                holder,
            };
            if record_busy(db, job, request, &busy).await {
                tally.skipped += 1;
            }
            return Err(busy.into());
        }
    };
    let mut keeper = Keeper::start(db, claim, lock);
    let mut outcome = run_claimed(db, job, request, &mut keeper, stop, tally).await;
    // A run cut short by its successor fails with whatever broke first: a connection the server
    // ended, or a deadline that passed while the process was paused. Say what happened instead.
    if let Err(err) = &outcome
        && !err.is::<Interrupted>()
        && !err.is::<Contention>()
        && db.lock_wait(err).is_none()
        && keeper.superseded().await
    {
        let what = format!("it stopped ({err:#}) and wrote nothing more");
        outcome = Err(Lost::Superseded.into_error(name, &what));
    }
    let (claim, lock) = keeper.finish().await;
    let released = within(
        CLEANUP_DEADLINE,
        "the claim's release",
        db.release_claim(lock, &claim),
    )
    .await;
    if let Err(err) = released {
        // The lease (and on PostgreSQL the closed connection) frees the job anyway.
        tracing::warn!(error = %format!("{err:#}"), "could not release the claim");
    }
    outcome
}

async fn run_claimed<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    request: WindowRequest,
    keeper: &mut Keeper<B>,
    stop: &Stop,
    tally: &mut Tally,
) -> anyhow::Result<RunSummary> {
    let name = &job.spec.name;
    let deadline = keeper.claim().lease();
    let abandoned = within(deadline, "marking abandoned runs", db.abandon_runs(name)).await?;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "marked runs left `running` by a process that is gone as abandoned"
        );
    }
    let watermark = within(deadline, "reading the watermark", db.watermark(name)).await?;
    let plan = plan(job, watermark, request)?;
    if plan.left_behind > 0 {
        tracing::warn!(
            left_behind = plan.left_behind,
            "more windows are due than window.max_catch_up; the next run continues"
        );
    }
    if plan.windows.is_empty() {
        tracing::info!(watermark = ?watermark, "up to date: no window is due");
    }

    let mut windows = Vec::with_capacity(plan.windows.len());
    let mut advance = match plan.moves_watermark {
        true => Advance::From(watermark),
        false => Advance::Never,
    };
    for (i, window) in plan.windows.iter().enumerate() {
        if let Some(signal) = stop.drain.signal() {
            return Err(Interrupted {
                signal,
                what: format!("stopped before window {window}; {i} earlier window(s) of this run were committed"),
            }
            .into());
        }
        keeper.renew(&format!("window {window}")).await?;
        let gap = if i == 0 { plan.skipped } else { None };
        let scope = Scope {
            window: *window,
            advance,
            gap,
        };
        windows.push(run_window(db, job, scope, keeper, stop, tally).await?);
        if let Advance::From(_) = advance {
            advance = Advance::From(Some(window.end));
        }
    }
    Ok(RunSummary {
        windows,
        skipped: plan.skipped,
        left_behind: plan.left_behind,
    })
}

fn plan(
    job: &PreparedJob,
    watermark: Option<DateTime<Utc>>,
    request: WindowRequest,
) -> anyhow::Result<Plan> {
    let name = &job.spec.name;
    let plan = plan_windows(&job.spec.window, watermark, request)
        .map_err(|p| ConfigError::job(name, p))?;
    // `--at` may be any time; the watermark still never moves past the real now.
    if plan.moves_watermark
        && let Some(last) = plan.windows.last()
        && last.end > Utc::now()
    {
        return Err(ConfigError::job(
            name,
            format!("window {last} ends in the future: --at must not be later than now"),
        )
        .into());
    }
    Ok(plan)
}

/// A run that found the job busy leaves a `skipped` row in the ledger (best effort: the job's
/// holder may be writing, and this must not wait on it). Returns whether it did.
async fn record_busy<B: Backend>(
    db: &B,
    job: &PreparedJob,
    request: WindowRequest,
    busy: &Contention,
) -> bool {
    // The range this run would have scored, as far as the (possibly moving) watermark says.
    let planned = match db.watermark(&job.spec.name).await {
        Ok(watermark) => plan_windows(&job.spec.window, watermark, request).ok(),
        Err(_) => None,
    };
    let window = match planned
        .as_ref()
        .map(|plan| (plan.windows.first(), plan.windows.last()))
    {
        Some((Some(first), Some(last))) => Window {
            start: first.start,
            end: last.end,
        },
        _ => {
            let now = Utc::now();
            Window {
                start: now,
                end: now,
            }
        }
    };
    let record = RunRecord::skipped(&job.spec.name, window, &job.model.sha256, busy.to_string());
    let recorded =
        tokio::time::timeout(std::time::Duration::from_secs(5), db.insert_run(&record)).await;
    let recorded = matches!(recorded, Ok(Ok(())));
    if !recorded {
        tracing::debug!("could not record the busy run in the ledger");
    }
    recorded
}

/// One window of a run: its range, how it moves the watermark, and the missed range it records
/// (`catch_up = "latest"`).
#[derive(Debug, Clone, Copy)]
struct Scope {
    window: Window,
    advance: Advance,
    gap: Option<Window>,
}

/// Score `window` for `job` and commit it whole, or fail and write nothing but the ledger's
/// record of the failure.
#[tracing::instrument(skip_all, fields(job = %job.spec.name, window = %scope.window, run_id = tracing::field::Empty))]
async fn run_window<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    scope: Scope,
    keeper: &Keeper<B>,
    stop: &Stop,
    tally: &mut Tally,
) -> anyhow::Result<WindowSummary> {
    let Scope { window, gap, .. } = scope;
    let mut record = RunRecord::start(&job.spec.name, window, &job.model.sha256);
    let run_id = record.run_id.clone();
    tracing::Span::current().record("run_id", run_id.as_str());
    let deadline = keeper.claim().lease();
    within(
        deadline,
        "recording the window's start",
        db.insert_run(&record),
    )
    .await?;
    tracing::info!("window started");

    let rolled_back = format!("window {window} was rolled back, nothing of it was written");
    let scored = tokio::select! {
        // Dropping the window's future drops its transaction: nothing of it is committed (the
        // server ends it too, if it cannot reach us to say so).
        outcome = score_window(db, job, scope, keeper.claim(), &mut record) => outcome,
        signal = stop.abort.requested() => Err(Interrupted {
            signal,
            what: rolled_back.clone(),
        }
        .into()),
        lost = keeper.lost() => Err(lost.into_error(&job.spec.name, &rolled_back)),
    };

    match scored {
        Ok(()) => {
            tracing::info!(
                rows_read = record.rows_read,
                rows_written = record.rows_written,
                "window committed"
            );
            tally.succeeded += 1;
            tally.skipped += u64::from(gap.is_some());
            tally.rows_read += record.rows_read as u64;
            tally.rows_written += record.rows_written as u64;
            tally.rows_rejected += (record.rows_quarantined + record.rows_skipped) as u64;
            Ok(WindowSummary {
                run_id,
                window,
                rows_read: record.rows_read,
                rows_written: record.rows_written,
            })
        }
        Err(err) => {
            tally.failed += 1;
            tally.rows_read += record.rows_read as u64;
            tally.rows_rejected += record.rows_read as u64;
            record.status = RunStatus::Failed;
            // The window's transaction was rolled back: nothing went anywhere. `rows_bad` and
            // `bad_rows` still say what was found.
            record.rows_written = 0;
            record.rows_quarantined = 0;
            record.rows_skipped = 0;
            record.finished_at = Some(Utc::now());
            record.error = Some(format!("{err:#}"));
            let recorded = tokio::time::timeout(CLEANUP_DEADLINE, db.fail_run(&record)).await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::warn!(
                    "could not record the failure in the ledger; the next run marks it abandoned"
                );
            }
            if err.is::<Interrupted>()
                || err.is::<Contention>()
                || err.is::<crate::error::Unresponsive>()
            {
                return Err(err);
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
    scope: Scope,
    claim: &Claim,
    record: &mut RunRecord,
) -> anyhow::Result<()> {
    let Scope {
        window,
        advance,
        gap,
    } = scope;
    let stamp = RunStamp {
        run_id: record.run_id.clone(),
        window,
        model_version: job.model.sha256.clone(),
        scored_at: Utc::now(),
    };

    let bad_rows = &job.spec.bad_rows;
    let mut found = BadRowCounts::default();

    let (sender, mut chunks) = mpsc::channel::<SourceChunk>(READ_AHEAD);
    let reader = tokio::spawn({
        let db = db.clone();
        let job = Arc::clone(job);
        let claim = claim.clone();
        async move {
            db.read_window(&job.spec, &job.shape, window, &claim, sender)
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
        stamp: &stamp,
        claim,
        open: None,
    };
    let (written, fed) = tokio::join!(
        writer.write_window(writes),
        feed(job, &mut chunks, to_writer, record, &mut found),
    );
    // A failed write is why the feeder stopped early: its error comes first.
    let mut tx = written?;
    fed?;
    reader.join().await?;
    if record.rows_bad > 0 {
        tracing::warn!(rows_bad = record.rows_bad, policy = bad_rows.policy.as_str(), reasons = %found.summary(), "window has bad rows");
        if record.rows_bad as f64 > bad_rows.max_fraction * record.rows_read as f64 {
            return Err(BadWindow::TooMany {
                bad: record.rows_bad,
                read: record.rows_read,
                max_fraction: bad_rows.max_fraction,
                summary: found.summary(),
                first: found.first.clone().expect("counted a bad row"),
            }
            .into());
        }
    }

    if let Some(gap) = gap {
        let reason = "catch_up = \"latest\": missed windows were not scored".to_owned();
        B::insert_run_in(
            &mut tx,
            &RunRecord::skipped(&job.spec.name, gap, &job.model.sha256, reason),
        )
        .await?;
        tracing::warn!(skipped = %gap, "catch_up = latest: skipping missed windows");
    }
    if let Advance::From(from) = advance
        && !B::advance_watermark(&mut tx, &job.spec.name, from, window.end, &record.run_id).await?
    {
        return Err(Contention::WatermarkMoved {
            job: job.spec.name.clone(),
            window,
        }
        .into());
    }
    // Last, so the claim's row is locked only for the commit's round trip.
    if !B::fence(&mut tx, claim).await? {
        return Err(Lost::Superseded.into_error(
            &job.spec.name,
            &format!("window {window} was rolled back, nothing of it was written"),
        ));
    }
    record.status = RunStatus::Succeeded;
    record.finished_at = Some(Utc::now());
    B::finish_run(&mut tx, record).await?;
    B::commit(tx).await
}

/// Hand each chunk read to scoring, and each scored chunk to the writer, routing bad rows by the
/// job's policy; returns when the window is read, or early when the writer stops taking chunks.
async fn feed(
    job: &Arc<PreparedJob>,
    chunks: &mut mpsc::Receiver<SourceChunk>,
    to_writer: mpsc::Sender<Write>,
    record: &mut RunRecord,
    found: &mut BadRowCounts,
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
            Some(previous) => Some(previous.await.context("the scoring task panicked")??),
            None => None,
        };
        // Chunk n+1 starts scoring only once chunk n is done: ONNX Runtime's threads take every
        // core, and two runs at once slow each other down.
        scoring = next.map(|chunk| spawn_scoring(Arc::clone(job), chunk));
        if let Some((scored, bad)) = done {
            let mut handed = true;
            if let Some(first) = bad.first() {
                found.add(&bad);
                record.rows_bad += bad.len() as i64;
                record.bad_rows = Some(found.summary());
                match bad_rows.policy {
                    BadRowPolicy::Fail => {
                        return Err(BadWindow::Policy {
                            first: first.clone(),
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

/// A scored chunk (if any row is left) and the rows that could not be scored.
type Scored = (Option<ScoredChunk>, Vec<BadRow>);

/// What the window's writer does, in order, in the window's transaction.
enum Write {
    Results(ScoredChunk),
    Quarantine(Vec<BadRow>),
}

/// The window's writer: opens the transaction when the first rows are ready (a slow source
/// query then holds no transaction, nor any lock, while it runs), holds it until every row is
/// in, then hands it back for the ledger, the watermark and the commit. It takes all the scored
/// chunks waiting for it as one batch (see [`WRITE_AHEAD`]).
struct Writer<'a, B: Backend> {
    db: &'a B,
    job: &'a PreparedJob,
    stamp: &'a RunStamp,
    claim: &'a Claim,
    open: Option<Open<B>>,
}

/// The window's transaction, once open.
struct Open<B: Backend> {
    tx: B::Tx,
    /// Whether the job has rows in the quarantine, which rows scored now leave. Asked once, so
    /// jobs with none pay nothing per chunk.
    has_quarantined: bool,
}

impl<B: Backend> Writer<'_, B> {
    async fn write_window(mut self, mut writes: mpsc::Receiver<Write>) -> anyhow::Result<B::Tx> {
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
                        B::quarantine(&mut open.tx, &job.spec.name, stamp, &bad).await?;
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
                B::create_results_table(&mut tx, &job.results).await?;
            }
            let has_quarantined = job.spec.bad_rows.policy == BadRowPolicy::Quarantine
                && B::has_quarantined(&mut tx, &job.spec.name).await?;
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
        let (job, stamp) = (self.job, self.stamp);
        let open = self.open().await?;
        B::upsert_results(&mut open.tx, &job.results, stamp, &scored).await?;
        if open.has_quarantined {
            B::release_quarantined(&mut open.tx, &job.spec.name, scored.keys_as_text()).await?;
        }
        tracing::debug!(rows = scored.rows(), "rows written");
        Ok(())
    }
}

/// Features, model and output checks for one chunk, started on the blocking pool.
fn spawn_scoring(
    job: Arc<PreparedJob>,
    chunk: SourceChunk,
) -> tokio::task::JoinHandle<anyhow::Result<Scored>> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let features = extract_features(&chunk, &job.inputs, &job.fill);
        let mut bad = features.bad;
        if features.rows.is_empty() {
            return Ok((None, bad));
        }
        let outputs = job
            .model
            .score(&features.inputs, features.rows.len(), &job.outputs)?;
        let (scored, bad_outputs) = ScoredChunk::new(&chunk, &features.rows, outputs);
        bad.extend(bad_outputs);
        Ok((scored, bad))
    })
}

/// Bad rows by reason, for the ledger and messages.
#[derive(Default)]
struct BadRowCounts {
    counts: std::collections::BTreeMap<String, u64>,
    first: Option<BadRow>,
}

impl BadRowCounts {
    fn add(&mut self, rows: &[BadRow]) {
        for row in rows {
            *self
                .counts
                .entry(format!("{} {}", row.column, row.reason))
                .or_default() += 1;
        }
        if self.first.is_none() {
            self.first = rows.first().cloned();
        }
    }

    /// "vibration is NULL: 3; temperature is NaN: 1", most common first.
    fn summary(&self) -> String {
        let mut counts: Vec<(&String, &u64)> = self.counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = counts
            .iter()
            .take(10)
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        parts.join("; ")
    }
}
