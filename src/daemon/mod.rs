//! `batchscore daemon`: every job of the jobs directory on its own schedule, until SIGTERM.
//!
//! Jobs are validated at start (an invalid one is reported and not scheduled) and on SIGHUP,
//! which re-reads the jobs directory and model files; a job whose new definition is invalid keeps
//! running on its old one. Fire times come from [`crate::schedule`] (right across DST) and are
//! handed to tokio-cron-scheduler as one-shot jobs, one at a time per job. A tick that finds its
//! job still running is skipped: the next run catches up through the watermark. Every run goes
//! through [`crate::run::Run::run_job`], so it takes the same claim as `run-job` and system cron.
//!
//! Shutdown (SIGTERM/SIGINT): `/healthz` turns 503, nothing new starts, running windows get
//! `--shutdown-grace` to finish, then whatever is still open is rolled back.
//!
//! A database outage is ridden out, not exited on: runs fail (and are counted), a job whose run
//! failed is retried with backoff before its next tick, and once the database answers again
//! runs continue from the watermark. `/healthz` stays 200 meanwhile: it says the daemon is alive
//! and scheduling, and restarting it would not bring the database back.

mod http;
mod jobs;
pub(crate) mod memory;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use self::http::Health;
use self::jobs::Loaded;
use self::metrics::Metrics;
use crate::alerts::Alerts;
use crate::db::Backend;
use crate::error::{ConfigError, Contention, EXIT_RUN_FAILED, Interrupted};
use crate::job::{self, PreparedJob};
use crate::plan::WindowRequest;
use crate::run::{Run, ShardChoice, Tally};
use crate::schedule::next_fire;
use crate::shutdown::{Shutdown, Signal, Stop, Trigger};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub jobs_dir: PathBuf,
    pub strict: bool,
    pub max_concurrent: usize,
    pub shutdown_grace: Duration,
    pub listen: Option<SocketAddr>,
    pub lease: TimeDelta,
    /// Where alerts go (`alerts.toml`), if anywhere.
    pub alert_routes: Option<crate::alerts::routes::Routes>,
    /// Linked from alerts: the daemon as people reach it.
    pub public_url: Option<String>,
    /// How often every job's lateness is checked.
    pub late_check_every: Duration,
    /// The status page's makings, served at `/` with `listen`.
    pub pages: Option<Arc<crate::status::pages::Pages>>,
}

/// One scheduled job.
struct Entry {
    job: Arc<PreparedJob>,
    /// The job file's text and the model's hash: what a reload compares to see a change.
    fingerprint: (String, String),
    /// Bumped when the job is replaced or removed, so a tick scheduled for the old definition
    /// does nothing.
    generation: u64,
    running: Arc<AtomicBool>,
    /// Runs in a row that failed: how long the next retry waits.
    failures: Arc<AtomicU32>,
    tick: Option<Uuid>,
}

/// How a run of the daemon's ended, as `batchscore_runs_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunOutcome {
    Ok,
    /// Another run held the job (or every shard of it).
    Busy,
    /// Stopped by the shutdown.
    Interrupted,
    Failed,
}

impl RunOutcome {
    fn label(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Busy => "busy",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Failed => "failed",
        }
    }
}

/// How long to wait before retrying a job whose last `failures` runs failed: 1 s, doubling, up
/// to a minute. A retry never replaces a tick: it is skipped if the job is running by then.
fn retry_backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

struct Daemon<B: Backend> {
    db: B,
    options: DaemonOptions,
    scheduler: JobScheduler,
    jobs: Mutex<HashMap<String, Entry>>,
    watermarks: Mutex<HashMap<String, DateTime<Utc>>>,
    next_generation: std::sync::atomic::AtomicU64,
    permits: Arc<Semaphore>,
    metrics: Metrics,
    health: Health,
    stop: Stop,
    /// Each run holds a clone; shutdown takes the original and waits for the channel to close.
    runs: Mutex<Option<mpsc::Sender<()>>>,
    /// Jobs whose realized performance is being evaluated (one evaluation of a job at a time).
    evaluating: Mutex<std::collections::HashSet<String>>,
    /// Where windows' ends, lateness and realized performance are told, if anywhere.
    alerts: Option<Arc<Alerts>>,
    rolled_back: AtomicBool,
}

impl<B: Backend> http::Status for Daemon<B> {
    fn healthy(&self) -> bool {
        self.health.get()
    }

    fn metrics(&self) -> String {
        let now = Utc::now();
        for (job, watermark) in self.watermarks.lock().expect("not poisoned").iter() {
            self.metrics
                .watermark_lag
                .get_or_create(&Metrics::label(job))
                .set((now - *watermark).as_seconds_f64());
        }
        self.metrics
            .sqlite_memory
            .set(crate::db::sqlite::heap_bytes());
        self.metrics.encode()
    }

    fn pages(&self) -> Option<&crate::status::pages::Pages> {
        self.options.pages.as_deref()
    }
}

/// What stops and reloads a daemon. The command wires them to signals ([`Controls::signals`]);
/// tests drive them directly.
pub struct Controls {
    /// Trips when the daemon must stop (SIGTERM, SIGINT).
    pub stop: Shutdown,
    /// One message per reload request (SIGHUP).
    pub reloads: mpsc::Receiver<()>,
}

impl Controls {
    /// SIGTERM and SIGINT stop the daemon, SIGHUP reloads its jobs.
    pub fn signals() -> std::io::Result<Controls> {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = Shutdown::listen()?;
        let mut hangup = signal(SignalKind::hangup())?;
        let (reload, reloads) = mpsc::channel(1);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // A reload already waiting covers this one too.
                if let Err(mpsc::error::TrySendError::Closed(())) = reload.try_send(()) {
                    break;
                }
            }
        });
        Ok(Controls { stop, reloads })
    }
}

/// Run the daemon until `controls` stop it. Exit code: 0 after a clean shutdown, 1 if a window
/// had to be rolled back because it did not finish within the grace period.
pub async fn run<B: Backend>(
    db: B,
    options: DaemonOptions,
    controls: Controls,
) -> anyhow::Result<ExitCode> {
    let Controls { stop, mut reloads } = controls;
    let Started {
        daemon,
        abort,
        mut runs_done,
        loaded,
    } = start(db, options, stop.clone()).await?;
    let http_stop = Arc::new(tokio::sync::Notify::new());
    let http = match daemon.options.listen {
        Some(addr) => Some(
            http::serve(addr, Arc::clone(&daemon), {
                let stop = Arc::clone(&http_stop);
                async move { stop.notified().await }
            })
            .await?,
        ),
        None => None,
    };
    daemon.schedule_all(loaded).await?;
    let trimming = memory::trim_periodically();
    let late_checking = daemon.check_late_periodically();

    let signal = loop {
        tokio::select! {
            signal = stop.requested() => break signal,
            Some(()) = reloads.recv() => daemon.reload().await,
        }
    };
    daemon.shut_down(signal, abort, &mut runs_done).await;
    trimming.abort();
    if let Some(checking) = late_checking {
        checking.abort();
    }
    if let Some(alerts) = &daemon.alerts {
        // What the last windows raised goes out before the exit, for a few seconds: a receiver
        // that hangs must not hold a stopping pod past its grace period.
        let _ = tokio::time::timeout(Duration::from_secs(10), alerts.settle()).await;
    }
    http_stop.notify_one();
    if let Some(http) = http {
        let _ = http.await;
    }
    if daemon.rolled_back.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(EXIT_RUN_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`start`] hands the main loop.
struct Started<B: Backend> {
    daemon: Arc<Daemon<B>>,
    /// Rolls back the windows still open when the shutdown grace is over.
    abort: Trigger,
    /// Closes when every run has ended.
    runs_done: mpsc::Receiver<()>,
    loaded: Vec<Loaded>,
}

/// The daemon, before anything is scheduled: migrations applied and the jobs loaded. Refuses to
/// start with no valid job, or with an invalid one under `--strict`.
async fn start<B: Backend>(
    db: B,
    options: DaemonOptions,
    drain: Shutdown,
) -> anyhow::Result<Started<B>> {
    let deadline = options.lease.to_std().unwrap_or_default();
    crate::db::within(deadline, "applying migrations", crate::db::migrate(&db)).await?;
    let (abort_trigger, abort) = Shutdown::new();
    let scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let (runs, runs_done) = mpsc::channel::<()>(1);
    let metrics = Metrics::default();
    let alerts = match options.alert_routes.clone() {
        Some(routes) => {
            let link = options.public_url.clone();
            Some(Arc::new(Alerts::new(routes, link, metrics.alerts.clone())?))
        }
        None => None,
    };
    let daemon = Arc::new(Daemon {
        permits: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
        db,
        options,
        scheduler,
        jobs: Mutex::new(HashMap::new()),
        watermarks: Mutex::new(HashMap::new()),
        next_generation: 1.into(),
        metrics,
        health: Health::default(),
        stop: Stop { drain, abort },
        runs: Mutex::new(Some(runs)),
        evaluating: Mutex::default(),
        alerts,
        rolled_back: AtomicBool::new(false),
    });

    let (loaded, invalid) = daemon.load_all().await;
    for (name, err) in &invalid {
        tracing::error!(job = %name, error = %format!("{err:#}"), "invalid job: not scheduled");
    }
    if loaded.is_empty() {
        let dir = daemon.options.jobs_dir.display();
        return Err(ConfigError::Daemon(format!("no valid job in {dir}")).into());
    }
    if daemon.options.strict && !invalid.is_empty() {
        let names: Vec<&str> = invalid.iter().map(|(name, _)| name.as_str()).collect();
        let problem = format!("invalid job(s) {} and --strict is set", names.join(", "));
        return Err(ConfigError::Daemon(problem).into());
    }
    Ok(Started {
        daemon,
        abort: abort_trigger,
        runs_done,
        loaded,
    })
}

impl<B: Backend> Daemon<B> {
    /// Start the scheduler with the jobs [`start`] loaded, catch up the slots missed while the
    /// daemon was down, and report healthy.
    async fn schedule_all(self: &Arc<Self>, loaded: Vec<Loaded>) -> anyhow::Result<()> {
        self.scheduler
            .start()
            .await
            .context("starting the scheduler")?;
        for (name, job, fingerprint) in loaded {
            self.add(name, job, fingerprint).await;
        }
        self.catch_up_missed_slots().await;
        self.health.set(true);
        tracing::info!(
            jobs = self.jobs.lock().expect("not poisoned").len(),
            "daemon started"
        );
        Ok(())
    }

    /// Put the job's next fire time into the scheduler, as a one-shot job. (Boxed, and `Send` by
    /// signature: it schedules a tick that calls it again, a cycle the compiler cannot see
    /// through on its own.)
    fn schedule_next<'a>(
        self: &'a Arc<Self>,
        name: &'a str,
        generation: u64,
        after: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.schedule_next_inner(name, generation, after))
    }

    /// The fire time is the first slot after `after`: the previous slot, not the moment its tick
    /// ran, so a tick delivered early or late neither repeats nor skips a slot.
    async fn schedule_next_inner(
        self: &Arc<Self>,
        name: &str,
        generation: u64,
        after: DateTime<Utc>,
    ) {
        let Some(job) = self.current(name, generation).map(|(job, _)| job) else {
            return;
        };
        let schedule = &job.spec.schedule;
        let Some(at) = next_fire(schedule, after) else {
            tracing::warn!(job = %name, "the schedule never fires again");
            return;
        };
        // For alerts that speak in schedule periods ("no success for two periods"): the period
        // that starts at this slot (an irregular schedule's periods differ).
        if let Some(later) = next_fire(schedule, at) {
            let period = (later - at).as_seconds_f64();
            self.metrics
                .schedule_interval
                .get_or_create(&Metrics::label(name))
                .set(period);
        }
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        let daemon = Arc::clone(self);
        let job_name = name.to_owned();
        let tick = Job::new_one_shot_at_instant_async(Instant::now() + wait, move |_, _| {
            let daemon = Arc::clone(&daemon);
            let name = job_name.clone();
            Box::pin(async move { daemon.tick(&name, generation, at).await })
        });
        let added = match tick {
            Ok(tick) => self.scheduler.add(tick).await.map_err(anyhow::Error::from),
            Err(err) => Err(err.into()),
        };
        match added {
            Ok(uuid) => {
                Metrics::set_time(&self.metrics.next_run, name, at);
                if let Some(entry) = self.jobs.lock().expect("not poisoned").get_mut(name)
                    && entry.generation == generation
                {
                    entry.tick = Some(uuid);
                }
            }
            Err(err) => {
                tracing::error!(job = %name, error = %format!("{err:#}"), "could not schedule the next run")
            }
        }
    }

    /// The job's prepared definition and running flag, if `generation` is still current.
    fn current(&self, name: &str, generation: u64) -> Option<(Arc<PreparedJob>, Arc<AtomicBool>)> {
        let jobs = self.jobs.lock().expect("not poisoned");
        let entry = jobs.get(name).filter(|e| e.generation == generation)?;
        Some((Arc::clone(&entry.job), Arc::clone(&entry.running)))
    }

    fn failures(&self, name: &str, generation: u64) -> Option<Arc<AtomicU32>> {
        let jobs = self.jobs.lock().expect("not poisoned");
        let entry = jobs.get(name).filter(|e| e.generation == generation)?;
        Some(Arc::clone(&entry.failures))
    }

    /// A scheduler tick for the slot at `at`: schedule the next one, then start a run unless
    /// one is going.
    async fn tick(self: Arc<Self>, name: &str, generation: u64, at: DateTime<Utc>) {
        // tokio-cron-scheduler keeps one-shot times in whole seconds and polls every 500 ms: a
        // tick may arrive before its slot. Wait for it, so the run plans from the slot's time.
        if let Ok(early) = (at - Utc::now()).to_std() {
            tokio::time::sleep(early).await;
        }
        if self.stop.drain.signal().is_some() || self.current(name, generation).is_none() {
            return;
        }
        self.schedule_next(name, generation, at).await;
        self.start_run(name, generation);
    }

    fn start_run(self: &Arc<Self>, name: &str, generation: u64) {
        let Some((job, running)) = self.current(name, generation) else {
            return;
        };
        let Some(done) = self.runs.lock().expect("not poisoned").clone() else {
            return; // shutting down
        };
        if running.swap(true, Ordering::SeqCst) {
            tracing::warn!(job = %name, "tick skipped: the previous run is still going; the next run catches up from the watermark");
            self.metrics
                .ticks_skipped
                .get_or_create(&Metrics::label(name))
                .inc();
            return;
        }
        let daemon = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let permit = daemon.permits.acquire().await;
            let failed = daemon.run_once(&job).await == RunOutcome::Failed;
            running.store(false, Ordering::SeqCst);
            drop(permit);
            // `[sink] retain`: its own short statements, after the run, without its permit
            // or its claim; the next tick does not wait for it.
            let deadline = daemon.options.lease.to_std().unwrap_or_default();
            let expiring = crate::retention::expire(&daemon.db, &job, Utc::now());
            if let Err(err) =
                crate::db::within(deadline, "deleting expired result rows", expiring).await
            {
                tracing::warn!(job = %name, error = %format!("{err:#}"), "deleting expired result rows failed; the next run tries again");
            }
            drop(done);
            daemon.evaluate_beside(&job);
            if let Some(failures) = daemon.failures(&name, generation) {
                match failed {
                    true => daemon.retry_later(name, generation, &failures),
                    false => failures.store(0, Ordering::SeqCst),
                }
            }
        });
    }

    /// After a run of a job with `[labels]`: evaluate its windows whose labels are due, on a task
    /// of its own, beside scoring (it takes no claim and no run permit), a bounded number per
    /// tick; then publish its latest final figures. A job already being evaluated is left to it.
    fn evaluate_beside(self: &Arc<Self>, job: &Arc<PreparedJob>) {
        let name = job.spec.name.clone();
        if job.spec.labels.is_none()
            || !self
                .evaluating
                .lock()
                .expect("not poisoned")
                .insert(name.clone())
        {
            return;
        }
        let (daemon, job) = (Arc::clone(self), Arc::clone(job));
        tokio::spawn(async move {
            let deadline = daemon.options.lease.to_std().unwrap_or_default();
            let work = async {
                let done = crate::performance::evaluate_due(&daemon.db, &job, Utc::now()).await?;
                let summary = crate::performance::summary(&daemon.db, &name).await?;
                anyhow::Ok((done, summary))
            };
            match crate::db::within(deadline, "evaluating realized performance", work).await {
                Ok((done, summary)) => {
                    if !done.windows.is_empty() {
                        tracing::info!(job = %name, windows = done.windows.len(), changed = done.changed, "realized performance evaluated");
                    }
                    daemon.metrics.set_performance(&name, &summary);
                    if let Some(alerts) = &daemon.alerts {
                        let change = crate::alerts::performance_change(&job.spec, &summary);
                        alerts.raise(&daemon.db, change.into_iter().collect());
                    }
                }
                Err(err) => {
                    tracing::warn!(job = %name, error = %format!("{err:#}"), "evaluating realized performance failed; scoring goes on")
                }
            }
            daemon
                .evaluating
                .lock()
                .expect("not poisoned")
                .remove(&name);
        });
    }

    /// With alert routes: every job's lateness, every `late_check_every` (a minute), on a task
    /// of its own. One read of every watermark per check; what changed is raised.
    fn check_late_periodically(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let alerts = Arc::clone(self.alerts.as_ref()?);
        let daemon = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(daemon.options.late_check_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                let jobs: Vec<Arc<PreparedJob>> = daemon
                    .jobs
                    .lock()
                    .expect("not poisoned")
                    .values()
                    .map(|entry| Arc::clone(&entry.job))
                    .collect();
                let deadline = daemon.options.lease.to_std().unwrap_or_default();
                let reading = crate::db::ledger::watermarks(daemon.db.pool(), None);
                let marks = match crate::db::within(deadline, "reading watermarks", reading).await {
                    Ok(marks) => marks,
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), "could not check lateness");
                        continue;
                    }
                };
                let now = Utc::now();
                for job in jobs {
                    let changes = crate::alerts::late_changes(&job.spec, &marks, now);
                    alerts.raise(&daemon.db, changes);
                }
            }
        }))
    }

    /// After a failed run (a database outage, say), run the job again after a backoff rather
    /// than wait for its next tick, which may be hours away.
    fn retry_later(self: &Arc<Self>, name: String, generation: u64, failures: &AtomicU32) {
        let failures = failures.fetch_add(1, Ordering::SeqCst) + 1;
        let wait = retry_backoff(failures);
        tracing::info!(job = %name, failures, retry_in = ?wait, "retrying after a failed run");
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = daemon.stop.drain.requested() => return,
            }
            let idle = daemon
                .current(&name, generation)
                .is_some_and(|(_, running)| !running.load(Ordering::SeqCst));
            if idle {
                daemon.start_run(&name, generation);
            }
        });
    }

    /// Run the job once, and count what it did. A job whose models come from a registry
    /// resolves them first ([`job::refresh`]): a moved alias takes effect at this run.
    async fn run_once(&self, job: &Arc<PreparedJob>) -> RunOutcome {
        let name = job.spec.name.as_str();
        let started = Instant::now();
        let job = match self.refresh(job).await {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(job = %name, error = %format!("{err:#}"), "run failed: its model could not be resolved");
                self.metrics
                    .runs
                    .get_or_create(&Metrics::outcome(name, RunOutcome::Failed.label()))
                    .inc();
                return RunOutcome::Failed;
            }
        };
        let request = WindowRequest::Scheduled { now: Utc::now() };
        let progress = crate::run::Progress::log();
        let (outcome, tally) = Run::new(&self.db, &job, self.options.lease, &self.stop, &progress)
            .alerting(self.alerts.clone())
            .run_job(request, ShardChoice::Every)
            .await;
        self.count(name, &tally);
        let m = &self.metrics;
        m.run_seconds
            .get_or_create(&Metrics::label(name))
            .observe(started.elapsed().as_secs_f64());
        if tally.succeeded > 0 {
            Metrics::set_time(&m.last_success, name, Utc::now());
        }
        let outcome = match outcome {
            Ok(_) => RunOutcome::Ok,
            Err(err) if err.is::<Contention>() => {
                tracing::info!(job = %name, "{err:#}");
                RunOutcome::Busy
            }
            Err(err) if err.is::<Interrupted>() => {
                // Stopping between windows or shards rolls nothing back: a clean shutdown.
                if err
                    .downcast_ref::<Interrupted>()
                    .is_some_and(|i| i.rolled_back)
                {
                    self.rolled_back.store(true, Ordering::SeqCst);
                }
                tracing::warn!(job = %name, "{err:#}");
                RunOutcome::Interrupted
            }
            Err(err) => {
                tracing::error!(job = %name, error = %format!("{err:#}"), "run failed");
                RunOutcome::Failed
            }
        };
        m.runs
            .get_or_create(&Metrics::outcome(name, outcome.label()))
            .inc();
        if let Ok(Some(watermark)) = self.watermark(name).await {
            self.watermarks
                .lock()
                .expect("not poisoned")
                .insert(name.to_owned(), watermark);
        }
        outcome
    }

    /// The job as this run scores it: its registry models resolved again, and the job prepared
    /// again (and kept for the next runs) if a version changed. A registry that cannot be reached
    /// is counted; the version the job resolved last is used from the cache.
    async fn refresh(&self, job: &Arc<PreparedJob>) -> anyhow::Result<Arc<PreparedJob>> {
        let name = job.spec.name.as_str();
        let deadline = self.options.lease.to_std().unwrap_or_default();
        let refreshing = job::refresh(&self.db, job);
        let (fresh, errors) =
            crate::db::within(deadline, "resolving the job's models", refreshing).await?;
        self.metrics
            .model_registry_errors
            .get_or_create(&Metrics::label(name))
            .inc_by(errors.len() as u64);
        if !Arc::ptr_eq(job, &fresh) {
            let mut jobs = self.jobs.lock().expect("not poisoned");
            // Unless a reload replaced the job meanwhile: then its own definition stands.
            if let Some(entry) = jobs.get_mut(name).filter(|e| Arc::ptr_eq(&e.job, job)) {
                entry.fingerprint.1 = fresh.model.sha256.clone();
                entry.job = Arc::clone(&fresh);
            }
        }
        Ok(fresh)
    }

    /// Add what a run counted to the job's metrics.
    fn count(&self, name: &str, tally: &Tally) {
        let label = Metrics::label(name);
        let m = &self.metrics;
        m.windows
            .get_or_create(&Metrics::outcome(name, "succeeded"))
            .inc_by(tally.succeeded);
        m.windows
            .get_or_create(&Metrics::outcome(name, "failed"))
            .inc_by(tally.failed);
        m.windows
            .get_or_create(&Metrics::outcome(name, "skipped"))
            .inc_by(tally.skipped);
        m.rows_read.get_or_create(&label).inc_by(tally.rows_read);
        m.rows_written
            .get_or_create(&label)
            .inc_by(tally.rows_written);
        m.rows_rejected
            .get_or_create(&label)
            .inc_by(tally.rows_rejected);
        m.rows_bad.get_or_create(&label).inc_by(tally.rows_bad);
        for ((role, column), score) in &tally.drift_scores {
            m.drift_score
                .get_or_create(&Metrics::column(name, role, column))
                .set(*score);
        }
        for ((role, column), alerts) in &tally.drift_alerts {
            m.drift_alerts
                .get_or_create(&Metrics::column(name, role, column))
                .inc_by(*alerts);
        }
        m.challenger_skipped
            .get_or_create(&label)
            .inc_by(tally.challenger_failures);
        for (column, agreement) in &tally.challenger_agreement {
            m.challenger_agreement
                .get_or_create(&Metrics::result_column(name, column))
                .set(*agreement);
        }
        for (column, diff) in &tally.challenger_mean_abs_diff {
            m.challenger_mean_abs_diff
                .get_or_create(&Metrics::result_column(name, column))
                .set(*diff);
        }
    }

    /// The job's watermark, within the lease (the database may be down): for a sharded job,
    /// its oldest shard's, which is how far all of the job is scored.
    async fn watermark(&self, name: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let deadline = self.options.lease.to_std().unwrap_or_default();
        let shards = crate::db::ledger::watermarks(self.db.pool(), Some(name));
        let shards = crate::db::within(deadline, "reading the watermark", shards).await?;
        Ok(shards.iter().map(|w| w.watermark).min())
    }

    /// Slots missed while the daemon was down: a job whose watermark is a whole schedule slot
    /// behind runs now, and its catch-up policy decides what that means.
    async fn catch_up_missed_slots(self: &Arc<Self>) {
        let now = Utc::now();
        let entries: Vec<(String, u64, Arc<PreparedJob>)> = self
            .jobs
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, e)| (name.clone(), e.generation, Arc::clone(&e.job)))
            .collect();
        for (name, generation, job) in entries {
            let Ok(Some(watermark)) = self.watermark(&name).await else {
                continue;
            };
            self.watermarks
                .lock()
                .expect("not poisoned")
                .insert(name.clone(), watermark);
            let missed = next_fire(&job.spec.schedule, watermark + job.spec.window.lateness)
                .is_some_and(|slot| slot <= now);
            if missed {
                tracing::info!(job = %name, watermark = %watermark, "slots were missed while the daemon was down: catching up");
                self.start_run(&name, generation);
            }
        }
    }

    async fn shut_down(&self, signal: Signal, abort: Trigger, runs_done: &mut mpsc::Receiver<()>) {
        self.health.set(false);
        tracing::info!(grace = ?self.options.shutdown_grace, "shutting down: no new runs; running windows may finish");
        let ticks: Vec<Option<Uuid>> = self
            .jobs
            .lock()
            .expect("not poisoned")
            .values()
            .map(|e| e.tick)
            .collect();
        for tick in ticks {
            self.unschedule(tick).await;
        }
        drop(self.runs.lock().expect("not poisoned").take());
        if tokio::time::timeout(self.options.shutdown_grace, runs_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace is over: rolling back the windows still open");
            abort.trip(signal);
            // A rollback is quick; give it a few seconds before giving up on the runs.
            let _ = tokio::time::timeout(Duration::from_secs(10), runs_done.recv()).await;
        }
        tracing::info!("daemon stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Limits;
    use crate::db::sqlite::SqliteBackend;
    use crate::ledger::RunStatus;
    use crate::shutdown::Signal;

    /// Scores `readings` every second, windows of a second.
    fn job_file(sink: &str) -> String {
        format!(
            r#"schedule = "* * * * * *"
[source]
table = "readings"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "1s"
lateness = "1s"
[model]
path = "{}/models/machine_failure.onnx"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "{sink}"
"#,
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// Wait until `job` has a committed window, or fail after 20 s.
    async fn committed(db: &SqliteBackend, job: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Until the daemon has migrated the database, there is no ledger to read.
            let runs = crate::db::ledger::recent_runs(db.pool(), Some(job), 50)
                .await
                .unwrap_or_default();
            if runs.iter().any(|r| r.status == RunStatus::Succeeded) {
                return;
            }
            assert!(Instant::now() < deadline, "no committed window of {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controls_reload_and_stop_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir(&jobs_dir).unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        let db = SqliteBackend::connect(&url, Limits::default())
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, temperature REAL, \
             vibration REAL, pressure REAL, rpm INTEGER)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        std::fs::write(jobs_dir.join("a.toml"), job_file("scores_a")).unwrap();
        let options = DaemonOptions {
            jobs_dir: jobs_dir.clone(),
            strict: true,
            max_concurrent: 2,
            shutdown_grace: Duration::from_secs(5),
            listen: None,
            lease: TimeDelta::seconds(30),
            alert_routes: None,
            public_url: None,
            late_check_every: Duration::from_secs(60),
            pages: None,
        };
        let (trigger, stop) = Shutdown::new();
        let (reload, reloads) = mpsc::channel(1);
        let daemon = tokio::spawn(run(db.clone(), options, Controls { stop, reloads }));
        // Rows keep arriving, as from an application.
        let feeding = tokio::spawn({
            let pool = db.pool().clone();
            async move {
                loop {
                    sqlx::raw_sql(
                        "INSERT INTO readings (ts, temperature, vibration, pressure, rpm) \
                         VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 61, 0.3, 4.1, 1000)",
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });

        committed(&db, "a").await;
        // A job added after start runs only once a reload asks for it.
        std::fs::write(jobs_dir.join("b.toml"), job_file("scores_b")).unwrap();
        assert!(
            crate::db::ledger::recent_runs(db.pool(), Some("b"), 1)
                .await
                .unwrap()
                .is_empty()
        );
        reload.send(()).await.unwrap();
        committed(&db, "b").await;

        trigger.trip(Signal::Terminate);
        let code = tokio::time::timeout(Duration::from_secs(15), daemon)
            .await
            .expect("the daemon stops within its grace")
            .unwrap()
            .unwrap();
        feeding.abort();
        assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::SUCCESS));
        // Stopped: no window is left open, and nothing runs any more.
        let runs = crate::db::ledger::recent_runs(db.pool(), None, 1000)
            .await
            .unwrap();
        assert!(
            runs.iter().all(|r| r.status != RunStatus::Running),
            "{runs:?}"
        );
    }

    #[test]
    fn retries_back_off_from_a_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_backoff(u32::MAX), Duration::from_secs(60));
    }
}
