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
//! - [`lease_keeper`]: the claim's lease, renewed while the run works.
//!
//! No wait on the database outlasts the claim's lease: each step outside a window has that
//! deadline ([`within`]), and a window stops as soon as the claim's [`Keeper`] cannot confirm
//! the lease, or finds the job taken over.

mod lease_keeper;
mod pipeline;
mod progress;
mod tally;
mod window;
mod writer;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tracing::Instrument;

pub use self::progress::Progress;
pub use self::tally::Tally;

use self::lease_keeper::Keeper;
use self::window::{Scope, run_window};
use crate::alerts::Alerts;
use crate::claim::{Claim, ClaimOutcome, HeldHere, Lost};
use crate::db::{Backend, Replace, ledger, within};
use crate::error::{ConfigError, Contention, Interrupted};
use crate::job::PreparedJob;
use crate::ledger::RunRecord;
use crate::plan::{Plan, Window, WindowRequest, plan_windows};
use crate::shard::{Shard, job_label};
use crate::shutdown::Stop;

/// What a committed window did.
#[derive(Debug, Clone)]
pub struct WindowSummary {
    pub run_id: String,
    pub window: Window,
    pub rows_written: i64,
}

/// What a run of one shard did: its committed windows, in order, and what it left.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub shard: Shard,
    pub windows: Vec<WindowSummary>,
    pub skipped: Option<Window>,
    pub left_behind: usize,
}

/// What a run of a job did, shard by shard.
#[derive(Debug, Clone, Default)]
pub struct JobSummary {
    /// The shards this run held, in the order it ran them.
    pub runs: Vec<RunSummary>,
    /// Shards other runs held, left to them ([`ShardChoice::Every`]).
    pub passed_over: Vec<Shard>,
}

/// Which shards of a job a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardChoice {
    /// `run-job --shard I` (or `JOB_COMPLETION_INDEX` in an Indexed Job): this one shard. If
    /// another run holds it, the run is busy (exit 75), as for a job that is not sharded.
    One(u32),
    /// Every shard this run can claim, one after another, starting at a random one so that
    /// replicas ticking together spread over the shards. Shards another run holds are left to
    /// it; only when every shard is held is the run busy.
    Every,
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

/// A run of a job, from its first shard to its last: what each of its steps works with, and what
/// it counted ([`Tally`], returned by [`Run::run_job`] whatever became of the run).
pub struct Run<'a, B: Backend> {
    db: &'a B,
    job: &'a Arc<PreparedJob>,
    /// How long the run's claims outlive their last renewal; no wait on the database outlasts it.
    lease: TimeDelta,
    stop: &'a Stop,
    progress: &'a Progress,
    tally: Tally,
    /// Where each window's end is told ([`crate::alerts`]), if anywhere.
    alerts: Option<Arc<Alerts>>,
    /// The numbers of the model and the challenger in `batchscore_models`, once asked.
    models: Option<(i64, Option<i64>)>,
}

impl<'a, B: Backend> Run<'a, B> {
    pub fn new(
        db: &'a B,
        job: &'a Arc<PreparedJob>,
        lease: TimeDelta,
        stop: &'a Stop,
        progress: &'a Progress,
    ) -> Self {
        Run {
            db,
            job,
            lease,
            stop,
            progress,
            tally: Tally::default(),
            alerts: None,
            models: None,
        }
    }

    /// Tell `alerts` how each window ends (after its commit, on tasks of their own).
    pub fn alerting(mut self, alerts: Option<Arc<Alerts>>) -> Self {
        self.alerts = alerts;
        self
    }

    /// Run the chosen shards of the job: for each, claim it, plan its windows from its
    /// watermark and score them in order, each in its own transaction. Shards are independent:
    /// one failing does not stop the others, and the first failure is returned after they ran.
    /// With it, what the run counted, whether it succeeded or not.
    pub async fn run_job(
        mut self,
        request: WindowRequest,
        choice: ShardChoice,
    ) -> (anyhow::Result<JobSummary>, Tally) {
        let outcome = self.run_shards(request, choice).await;
        (outcome, self.tally)
    }

    async fn run_shards(
        &mut self,
        request: WindowRequest,
        choice: ShardChoice,
    ) -> anyhow::Result<JobSummary> {
        let deadline = self.lease.to_std().unwrap_or_default();
        check_shards(self.db, self.job, deadline).await?;
        let shards = choose_shards(&self.job.spec.name, self.job.spec.source.shards, choice)?;
        // One shard asked for (or the only one): busy is the run's outcome, recorded as today.
        let lenient = shards.len() > 1;
        let mut summary = JobSummary::default();
        let mut first_error: Option<anyhow::Error> = None;
        let mut busy: Option<anyhow::Error> = None;
        for shard in shards {
            if let Some(signal) = self.stop.drain.signal() {
                let what = format!(
                    "stopped before shard {shard}; {} earlier shard(s) of this run finished",
                    summary.runs.len()
                );
                return Err(Interrupted {
                    signal,
                    what,
                    rolled_back: false,
                }
                .into());
            }
            let span = tracing::info_span!("run", shard = %shard);
            let outcome = self
                .run_shard(shard, request, lenient)
                .instrument(span)
                .await;
            match outcome {
                Ok(run) => summary.runs.push(run),
                Err(err)
                    if lenient
                        && err
                            .downcast_ref::<Contention>()
                            .is_some_and(Contention::is_busy) =>
                {
                    tracing::info!(shard = %shard, "{err:#}; leaving the shard to its holder");
                    summary.passed_over.push(shard);
                    busy.get_or_insert(err);
                }
                // Nothing another shard does can go better: stop here.
                Err(err) if err.is::<Interrupted>() || err.is::<ConfigError>() => return Err(err),
                Err(err) => {
                    // With other shards to go, say so now; the run's own failure is reported at
                    // the end.
                    if lenient {
                        tracing::error!(shard = %shard, error = %format!("{err:#}"), "the shard's run failed");
                    }
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        match busy {
            // A backfill reports the shards it left, whether or not it ran others.
            Some(err) if summary.runs.is_empty() && !request.is_explicit() => Err(err),
            _ => Ok(summary),
        }
    }

    /// Claim one shard and run its windows. `lenient`: the run takes every shard it can, so a
    /// busy shard is not recorded as skipped (its holder is running it).
    async fn run_shard(
        &mut self,
        shard: Shard,
        request: WindowRequest,
        lenient: bool,
    ) -> anyhow::Result<RunSummary> {
        let outcome = self.claim_and_run(shard, request, lenient).await;
        // SQLite: another writer held the database's write lock past the busy timeout.
        outcome.map_err(|err| match self.db.lock_wait(&err) {
            Some(waited) => anyhow::Error::from(Contention::DatabaseLocked {
                job: self.job.spec.name.clone(),
                waited,
            })
            .context(format!("{err:#}")),
            None => err,
        })
    }

    async fn claim_and_run(
        &mut self,
        shard: Shard,
        request: WindowRequest,
        lenient: bool,
    ) -> anyhow::Result<RunSummary> {
        let (db, job) = (self.db, self.job);
        let name = &job.spec.name;
        let claim = Claim::new(name, shard, self.lease);
        // Until the claim is released (or its release failed), its row is this run's.
        let _held = HeldHere::register(&claim);
        let claimed = within(claim.lease(), "the claim", db.claim(&claim)).await?;
        let lock = match claimed {
            ClaimOutcome::Acquired(lock) => lock,
            ClaimOutcome::Busy(holder) => {
                let busy = Contention::Busy {
                    job: job_label(name, shard),
                    holder: holder.map(|h| h.to_string()),
                };
                if !lenient && record_busy(db, job, shard, request, &busy).await {
                    self.tally.skipped += 1;
                }
                return Err(busy.into());
            }
        };
        let mut keeper = Keeper::start(db, claim, lock);
        let mut outcome = self.run_claimed(request, &mut keeper).await;
        // A run cut short by its successor fails with whatever broke first: a connection the
        // server ended, or a deadline that passed while the process was paused. Say what
        // happened instead.
        if let Err(err) = &outcome
            && !err.is::<Interrupted>()
            && !err.is::<Contention>()
            && db.lock_wait(err).is_none()
            && keeper.superseded().await
        {
            let what = format!("it stopped ({err:#}) and wrote nothing more");
            outcome = Err(Lost::Superseded.into_error(&job_label(name, shard), &what));
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

    async fn run_claimed(
        &mut self,
        request: WindowRequest,
        keeper: &mut Keeper<B>,
    ) -> anyhow::Result<RunSummary> {
        let (db, job) = (self.db, self.job);
        let name = &job.spec.name;
        let (deadline, shard) = (keeper.claim().lease(), keeper.claim().shard);
        let abandoned = within(
            deadline,
            "marking abandoned runs",
            ledger::abandon_runs(db.pool(), name, shard),
        )
        .await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "marked runs left `running` by a process that is gone as abandoned"
            );
        }
        let reading = ledger::watermark(db.pool(), name, shard);
        let watermark = within(deadline, "reading the watermark", reading).await?;
        let plan = match request {
            // Read under the claim: a rescore that ran meanwhile has rewritten these windows,
            // and the ledger now says so.
            WindowRequest::Rescore { model, range } => {
                let model = hex::encode(model);
                let listing =
                    crate::db::lineage::windows_scored_by(db.pool(), name, shard, &model, range);
                Plan::rescore(within(deadline, "listing the windows to re-score", listing).await?)
            }
            _ => plan(job, watermark, request)?,
        };
        if plan.left_behind > 0 {
            tracing::warn!(
                left_behind = plan.left_behind,
                "more windows are due than window.max_catch_up; the next run continues"
            );
        }
        if plan.windows.is_empty() && !request.is_rescore() {
            tracing::info!(watermark = ?watermark, "up to date: no window is due");
        }

        let mut windows = Vec::with_capacity(plan.windows.len());
        let mut advance = match plan.moves_watermark {
            true => Advance::From(watermark),
            false => Advance::Never,
        };
        let overall = self.progress.run(plan.windows.len());
        for (i, window) in plan.windows.iter().enumerate() {
            if let Some(signal) = self.stop.drain.signal() {
                return Err(Interrupted {
                    signal,
                    what: format!("stopped before window {window}; {i} earlier window(s) of this run were committed"),
                    rolled_back: false,
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
            windows.push(run_window(self, scope, keeper).await?);
            if let Some(bar) = &overall {
                bar.inc(1);
            }
            if let Advance::From(_) = advance {
                advance = Advance::From(Some(window.end));
            }
        }
        if let Some(bar) = overall {
            bar.finish_and_clear();
        }
        Ok(RunSummary {
            shard,
            windows,
            skipped: plan.skipped,
            left_behind: plan.left_behind,
        })
    }
}

/// The shards a run takes, in the order it runs them.
fn choose_shards(job: &str, count: u32, choice: ShardChoice) -> anyhow::Result<Vec<Shard>> {
    match choice {
        ShardChoice::One(index) => {
            Ok(Shard::select(count, Some(index)).map_err(|p| ConfigError::job(job, p))?)
        }
        ShardChoice::Every => {
            // Replicas that tick together each start at a different shard.
            let first = RandomState::new().hash_one(std::process::id()) % u64::from(count);
            let first = u32::try_from(first).expect("less than a u32 count");
            Ok((0..count)
                .map(|i| Shard {
                    index: (first + i) % count,
                    count,
                })
                .collect())
        }
    }
}

impl JobSummary {
    /// A backfill (or rescore) is asked for a range, so for every shard of it: the error naming
    /// the shards it left to other runs (exit 75), if any. A scheduled run leaves them to their
    /// holders, which score the same windows.
    pub fn left_shards(&self, job: &str, request: WindowRequest) -> Option<Contention> {
        let what = match request {
            WindowRequest::Scheduled { .. } => return None,
            WindowRequest::Backfill { from, to } => {
                let range = Window {
                    start: from,
                    end: to,
                };
                format!("the backfill of {range}")
            }
            WindowRequest::Rescore { model, range } => {
                let range = range.map_or_else(|| "every window".to_owned(), |r| r.to_string());
                format!(
                    "the rescore of model {}… ({range})",
                    &hex::encode(model)[..12]
                )
            }
        };
        if self.passed_over.is_empty() {
            return None;
        }
        let shards: Vec<String> = self.passed_over.iter().map(Shard::to_string).collect();
        Some(Contention::ShardsLeft {
            job: job.to_owned(),
            what,
            shards: shards.join(", "),
        })
    }
}

/// Refuse a job whose watermarks were written with another number of shards than its file
/// now says: its shards' rows would be split differently, so some windows would be scored
/// twice and others never. `batchscore reshard` moves a job to a new count.
async fn check_shards<B: Backend>(
    db: &B,
    job: &PreparedJob,
    deadline: std::time::Duration,
) -> anyhow::Result<()> {
    let name = &job.spec.name;
    let count = job.spec.source.shards;
    let watermarks = within(
        deadline,
        "reading the watermarks",
        ledger::watermarks(db.pool(), Some(name)),
    )
    .await?;
    if let Some(other) = watermarks.iter().find(|w| w.shard.count != count) {
        return Err(ConfigError::job(
            name,
            format!(
                "its watermarks are for {} shard(s), but the job file says shards = {count}. \
                 Changing the number of shards needs `batchscore reshard {name}`, which moves \
                 every shard to the new count without gap or overlap once their watermarks are \
                 level (see the README, \"Resharding\")",
                other.shard.count
            ),
        )
        .into());
    }
    Ok(())
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
    shard: Shard,
    request: WindowRequest,
    busy: &Contention,
) -> bool {
    // The range this run would have scored, as far as the (possibly moving) watermark says.
    let planned = match ledger::watermark(db.pool(), &job.spec.name, shard).await {
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
    let record = RunRecord::skipped(
        &job.spec.name,
        shard,
        window,
        &job.lineage(),
        busy.to_string(),
    );
    let recorded = tokio::time::timeout(
        CLEANUP_DEADLINE,
        ledger::record_run(db.pool(), &record, Replace::Always),
    )
    .await;
    let recorded = matches!(recorded, Ok(Ok(())));
    if !recorded {
        tracing::debug!("could not record the busy run in the ledger");
    }
    recorded
}
