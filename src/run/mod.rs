//! A run of a job: claim it, plan its windows from the watermark, and score each window from
//! the ledger's `running` row to its commit. Within a window the rows are read
//! ([`crate::source`]), turned into features ([`crate::features`]), scored ([`crate::model`])
//! and written ([`crate::sink`]) inside one transaction that also records the window in the
//! [`crate::ledger`] and moves the watermark by compare-and-set.
//!
//! Large windows are written chunk by chunk *inside* that one transaction, rather than committed
//! chunk by chunk: a window is then never half-written, with no partial state to clean up or
//! resume, and readers of the results table see a window all at once.
//!
//! - this module: claim the job, plan its windows, run them in order, release the claim;
//! - [`window`]: one window, from its ledger row to its commit (open, pipeline, close);
//! - [`pipeline`]: the window's reader, scoring and writer, three stages at once;
//! - [`writer`]: the stage that owns the window's transaction;
//! - [`keeper`]: the claim's lease, renewed while the run works.
//!
//! No wait on the database outlasts the claim's lease: each step outside a window has that
//! deadline ([`within`]), and a window stops as soon as the claim's [`Keeper`] cannot confirm
//! the lease, or finds the job taken over.

mod keeper;
mod pipeline;
mod window;
mod writer;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use self::keeper::Keeper;
use self::window::{Scope, run_window};
use crate::claim::{Claim, ClaimOutcome, Lost};
use crate::db::{Backend, Replace, within};
use crate::error::{ConfigError, Contention, Interrupted};
use crate::job::PreparedJob;
use crate::ledger::{RunRecord, Tally};
use crate::plan::{Plan, Window, WindowRequest, plan_windows};
use crate::shutdown::Stop;

/// What a committed window did.
#[derive(Debug, Clone)]
pub struct WindowSummary {
    pub run_id: String,
    pub window: Window,
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
                holder: holder.map(|h| h.to_string()),
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
        tokio::time::timeout(CLEANUP_DEADLINE, db.record_run(&record, Replace::Always)).await;
    let recorded = matches!(recorded, Ok(Ok(())));
    if !recorded {
        tracing::debug!("could not record the busy run in the ledger");
    }
    recorded
}
