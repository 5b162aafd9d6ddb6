//! Every job's state, shard by shard, as the ledger, the claims, the watermarks and the job files
//! say: what `batchscore status` prints and the status page ([`page`]) shows. Nothing here
//! writes.

pub mod chart;
pub mod drift;
pub mod job;
pub mod page;
pub mod pages;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use crate::db::{Backend, ShardHealth, ledger};
use crate::schedule::next_fire;
use crate::shard::Shard;
use crate::spec::{JobSpec, job_names, load_job};

/// Jobs whose drift and realized metric are read at once.
const JUDGED_AT_ONCE: usize = 4;

/// How far back "the last 24 hours" reaches.
pub const RECENT: TimeDelta = TimeDelta::hours(24);

/// A job's or a shard's state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// The latest finished window (of a shard) failed, or its process died.
    Failing,
    /// A scheduled run was due a whole schedule period ago and the watermark has not moved.
    Late,
    /// Running now (a shard's claim is held).
    Busy,
    /// No window committed yet.
    NeverRun,
    Ok,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Late => "late",
            State::Busy => "busy",
            State::NeverRun => "never run",
            State::Ok => "ok",
        }
    }

    /// Whether `status` exits 1 for it.
    pub fn unhealthy(self) -> bool {
        matches!(self, State::Failing | State::Late)
    }
}

/// What the ledger, the claims and the schedule say of one shard (or of a whole job, from its
/// shards' figures together).
#[derive(Debug, Clone)]
pub struct Health {
    pub state: State,
    pub last_success: Option<DateTime<Utc>>,
    /// The oldest shard's.
    pub watermark: Option<DateTime<Utc>>,
    /// The last 24 hours' rows written, failures and bad rows; whether the latest finished
    /// window failed.
    pub ledger: ShardHealth,
}

/// What `status` says of one job.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub job: String,
    /// `None` when the job has no file that loads (it is only in the ledger, or `jobs validate`
    /// says what is wrong with it).
    pub spec: Option<JobSpec>,
    /// The job's shards together.
    pub health: Health,
    /// One per shard of a sharded job; empty for a job of one shard.
    pub shards: Vec<(Shard, Health)>,
    pub next_due: Option<DateTime<Utc>>,
    /// The latest window against the job's reference: `ok`, `drift: COLUMNS`, `no reference`,
    /// `off` (profiles turned off) or `-` (nothing profiled yet).
    pub drift: String,
    /// The headline realized metric of the latest final window (`auc`, 0.91), without labels or
    /// a final window yet `None`.
    pub metric: Option<(String, f64)>,
}

impl JobStatus {
    /// `AUC 0.912`, or `-`.
    pub fn metric_text(&self) -> String {
        self.metric.as_ref().map_or("-".to_owned(), |(m, v)| {
            format!("{} {v:.3}", m.to_uppercase())
        })
    }
}

/// Every job's status (or one job's), as of `now`, worst shard included.
pub async fn overview<B: Backend>(
    db: &B,
    jobs_dir: &Path,
    name: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<JobStatus>> {
    let health = ledger::health(db.pool(), now - RECENT).await?;
    let running: BTreeSet<(String, u32)> = ledger::running_shards(db.pool())
        .await?
        .into_iter()
        .collect();
    let watermarks = ledger::watermarks(db.pool(), name).await?;
    let specs = known_jobs(jobs_dir, name, &health)?;
    // Each job's drift and realized metric take a few round trips of their own: a few jobs at a
    // time, so 50 jobs cost about as many round trips as a dozen.
    let listed: Vec<Option<&JobSpec>> = specs.values().map(Option::as_ref).collect();
    let mut judged = Vec::with_capacity(listed.len());
    for some in listed.chunks(JUDGED_AT_ONCE) {
        let judging = some.iter().map(|spec| judge(db, *spec));
        judged.extend(futures_util::future::join_all(judging).await);
    }
    let mut statuses = Vec::with_capacity(specs.len());
    for ((job, spec), (drift, metric)) in specs.into_iter().zip(judged) {
        let mut shards = BTreeSet::new();
        shards.extend(health.iter().filter(|h| h.job == job).map(|h| h.shard));
        shards.extend(
            watermarks
                .iter()
                .filter(|w| w.job == job)
                .map(|w| w.shard.index),
        );
        let count = match &spec {
            Some(spec) => spec.source.shards,
            None => shards.last().map_or(1, |last| last + 1),
        };
        let shard_health = |index: u32| -> Health {
            let ledger = health
                .iter()
                .find(|h| h.job == job && h.shard == index)
                .cloned()
                .unwrap_or_else(|| ShardHealth {
                    job: job.clone(),
                    shard: index,
                    ..ShardHealth::default()
                });
            let watermark = watermarks
                .iter()
                .find(|w| w.job == job && w.shard.index == index)
                .map(|w| w.watermark);
            let busy = running.contains(&(job.clone(), index));
            Health {
                state: state(spec.as_ref(), &ledger, watermark, busy, now),
                last_success: ledger.last_success,
                watermark,
                ledger,
            }
        };
        let per_shard: Vec<(Shard, Health)> = Shard::all(count)
            .map(|shard| (shard, shard_health(shard.index)))
            .collect();
        let whole = whole_job(spec.as_ref(), &job, &per_shard, &running, now);
        statuses.push(JobStatus {
            next_due: spec.as_ref().and_then(|s| next_fire(&s.schedule, now)),
            drift,
            metric,
            shards: if count > 1 { per_shard } else { Vec::new() },
            health: whole,
            spec,
            job,
        });
    }
    Ok(statuses)
}

/// The job's shards together: failing if one is, late by the oldest watermark, busy if one
/// runs, never run until one has committed.
fn whole_job(
    spec: Option<&JobSpec>,
    job: &str,
    shards: &[(Shard, Health)],
    running: &BTreeSet<(String, u32)>,
    now: DateTime<Utc>,
) -> Health {
    let mut ledger = ShardHealth {
        job: job.to_owned(),
        ..ShardHealth::default()
    };
    for (_, h) in shards {
        ledger.last_success = ledger.last_success.max(h.ledger.last_success);
        ledger.rows_written += h.ledger.rows_written;
        ledger.failures += h.ledger.failures;
        ledger.rows_bad += h.ledger.rows_bad;
        ledger.failing |= h.ledger.failing;
    }
    let watermark = shards.iter().filter_map(|(_, h)| h.watermark).min();
    let busy = running.iter().any(|(j, _)| j == job);
    Health {
        state: state(spec, &ledger, watermark, busy, now),
        last_success: ledger.last_success,
        watermark,
        ledger,
    }
}

/// A job's drift in a few words and its headline realized metric.
async fn judge<B: Backend>(db: &B, spec: Option<&JobSpec>) -> (String, Option<(String, f64)>) {
    match spec {
        Some(spec) => (drift::state(db, spec).await, headline(db, spec).await),
        None => ("-".to_owned(), None),
    }
}

/// The job's headline realized metric (AUC or MAE) of its latest final window, if it has
/// `[labels]` and one.
async fn headline<B: Backend>(db: &B, spec: &JobSpec) -> Option<(String, f64)> {
    let labels = spec.labels.as_ref()?;
    let metric = labels.task.headline();
    match crate::performance::summary(db, &spec.name).await {
        Ok(summary) => summary
            .latest("champion", metric)
            .map(|v| (metric.to_owned(), v)),
        Err(err) => {
            tracing::warn!(job = %spec.name, error = %format!("{err:#}"), "could not read realized performance");
            None
        }
    }
}

/// A state from what the ledger, the claims and the schedule say.
fn state(
    spec: Option<&JobSpec>,
    health: &ShardHealth,
    watermark: Option<DateTime<Utc>>,
    running: bool,
    now: DateTime<Utc>,
) -> State {
    if health.failing {
        return State::Failing;
    }
    if let (Some(spec), Some(watermark)) = (spec, watermark) {
        // The first run that should have moved the watermark past where it is, and then a
        // whole period for that run to finish.
        let schedule = &spec.schedule;
        let due = next_fire(schedule, watermark + spec.window.lateness);
        let grace = due.and_then(|due| next_fire(schedule, due).map(|next| next - due));
        if let (Some(due), Some(grace)) = (due, grace)
            && due + grace < now
        {
            return State::Late;
        }
    }
    if running {
        State::Busy
    } else if health.last_success.is_none() {
        State::NeverRun
    } else {
        State::Ok
    }
}

/// Jobs with a file, and jobs only the ledger knows (their file was removed); or `name` alone.
/// A job file that does not load is `None`: `jobs validate` says why, and the ledger still
/// speaks for it.
fn known_jobs(
    jobs_dir: &Path,
    name: Option<&str>,
    health: &[ShardHealth],
) -> anyhow::Result<BTreeMap<String, Option<JobSpec>>> {
    let mut specs: BTreeMap<String, Option<JobSpec>> = BTreeMap::new();
    let files = match name {
        Some(name) => vec![name.to_owned()],
        None => job_names(jobs_dir).unwrap_or_default(),
    };
    for job in files {
        let spec = match load_job(jobs_dir, &job) {
            Ok(spec) => Some(spec),
            // A job named by mistake, neither a file nor in the ledger.
            Err(err) if name.is_some() && !health.iter().any(|h| h.job == job) => {
                return Err(err.into());
            }
            Err(_) => None,
        };
        specs.insert(job, spec);
    }
    for h in health {
        if name.is_none_or(|n| n == h.job) {
            specs.entry(h.job.clone()).or_insert(None);
        }
    }
    Ok(specs)
}

/// A length of time as people read it: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(last_success: Option<DateTime<Utc>>, failing: bool) -> ShardHealth {
        ShardHealth {
            job: "job".into(),
            last_success,
            failing,
            ..ShardHealth::default()
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn states_follow_the_schedule_the_ledger_and_the_claims() {
        // Every 30 minutes, 2 minutes of lateness.
        let spec = crate::spec::parse_job(
            "job",
            "schedule = \"*/30 * * * *\"\n[source]\ntable = \"t\"\nkey = \"k\"\ntimestamp = \"ts\"\n\
             features = [\"f\"]\n[window]\nsize = \"30m\"\nlateness = \"2m\"\n[model]\npath = \"m.onnx\"\n\
             [outputs]\np = \"p\"\n[sink]\ntable = \"r\"\n",
            std::path::Path::new("/srv"),
        )
        .unwrap();
        let ok = health(Some(t("2026-11-25T09:58:00Z")), false);
        let mark = Some(t("2026-11-25T09:58:00Z"));
        // The 10:30 run moves the watermark to 10:28; until 11:00 (a period later) it is not late.
        assert_eq!(
            state(Some(&spec), &ok, mark, false, t("2026-11-25T10:45:00Z")),
            State::Ok
        );
        assert_eq!(
            state(Some(&spec), &ok, mark, false, t("2026-11-25T11:00:01Z")),
            State::Late
        );
        assert_eq!(
            state(Some(&spec), &ok, mark, true, t("2026-11-25T10:31:00Z")),
            State::Busy
        );
        let failing = health(Some(t("2026-11-25T09:58:00Z")), true);
        assert_eq!(
            state(Some(&spec), &failing, mark, true, t("2026-11-25T10:31:00Z")),
            State::Failing
        );
        let never = health(None, false);
        assert_eq!(
            state(Some(&spec), &never, None, false, t("2026-11-25T10:31:00Z")),
            State::NeverRun
        );
        assert_eq!(span(45), "45s");
        assert_eq!(span(3 * 3600 + 5 * 60), "3h 5m");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2d 4h");
    }
}
