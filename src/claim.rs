//! One run of a job at a time, however it was started (daemon, `run-job`, system cron) and on
//! however many machines: a run claims its job before planning and keeps the claim, renewing its
//! lease, until its last window is committed.
//!
//! The claim is a row in `batchscore_claims` naming the holder (claim id, host, pid, since when)
//! and when its lease lapses, by the database's clock. A holder that stops renewing (killed,
//! frozen, cut off) loses the job to the next run once the lease lapses, whatever its server
//! session still holds. PostgreSQL holders also keep a session advisory lock keyed by their claim
//! id: when it is free, the holder's session is gone (the process died, the connection dropped),
//! and the next run takes over at once instead of waiting for the lease. SQLite, being on one
//! machine, takes over at once from a holder on this host whose process is gone.
//!
//! Two checks keep a superseded holder from writing, in each window's transaction: the claim id
//! is the fencing token (the commit renews the claim only if this run still holds it, see
//! [`Backend::fence`]), and scheduled windows also move the watermark by compare-and-set.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::db::{Backend, within};
use crate::error::{Contention, Unresponsive};

/// Default lease: how long a claim outlives its last renewal, and so how long a frozen or cut-off
/// holder can keep its job from others, and how long a run waits on a silent database.
pub const DEFAULT_LEASE: &str = "1m";

/// What a run puts in the claims table.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: String,
    pub claim_id: String,
    pub host: String,
    pub pid: i64,
    pub claimed_at: DateTime<Utc>,
    pub lease: TimeDelta,
}

impl Claim {
    pub fn new(job: &str, lease: TimeDelta) -> Claim {
        Claim {
            job: job.to_owned(),
            claim_id: uuid::Uuid::now_v7().to_string(),
            host: crate::ledger::hostname(),
            pid: i64::from(std::process::id()),
            claimed_at: Utc::now(),
            lease,
        }
    }

    /// When the claim lapses if it is not renewed from now on, by this host's clock (SQLite,
    /// whose clock this is; PostgreSQL computes it with the server's `clock_timestamp()`).
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc::now() + self.lease
    }

    /// The lease as a `Duration`, for deadlines.
    pub fn lease(&self) -> Duration {
        self.lease.to_std().unwrap_or(Duration::ZERO)
    }
}

/// Who holds a job's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub claim_id: String,
    pub host: String,
    pub pid: i64,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Holder {
    /// Whether a holder is certainly gone: its lease lapsed, or it ran on this host and its
    /// process no longer exists.
    pub fn is_gone(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        self.expires_at <= now || (self.host == this_host && !process_alive(self.pid))
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {}, pid {}, since {}",
            self.host,
            self.pid,
            self.claimed_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}

/// The outcome of trying to claim a job.
pub enum ClaimOutcome<L> {
    Acquired(L),
    /// Someone else holds it (`None` when the holder could not be read, e.g. it just released).
    Busy(Option<Holder>),
}

/// Whether a process with this pid exists on this machine.
pub fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to another user.
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How long a failed run asks whether it was superseded, on top of the deadline that failed.
const SUPERSEDED_CHECK: Duration = Duration::from_secs(5);

/// Why a run no longer holds its claim.
#[derive(Debug, Clone)]
pub enum Lost {
    /// Another run holds the claim now: its lease lapsed and the job was taken over.
    Superseded,
    /// No renewal was confirmed before the lease ran out: the database stopped answering.
    Unanswered(Duration),
    /// A renewal failed: the claim's connection broke.
    Failed(String),
}

impl Lost {
    /// The error a run stops with: exit 75 when superseded, 1 otherwise.
    pub fn into_error(self, job: &str, what: &str) -> anyhow::Error {
        match self {
            Lost::Superseded => Contention::Superseded {
                job: job.to_owned(),
                what: what.to_owned(),
            }
            .into(),
            Lost::Unanswered(waited) => Unresponsive {
                what: "the claim's renewal".to_owned(),
                waited,
            }
            .into(),
            Lost::Failed(error) => {
                anyhow::anyhow!("job `{job}`: renewing the claim failed ({error}); {what}")
            }
        }
    }
}

/// What the heartbeat last found.
#[derive(Debug, Clone)]
struct Standing {
    /// Renewals tried so far.
    tries: u64,
    /// Until when the lease is known to hold (from when its last confirmed renewal was sent).
    confirmed_until: Instant,
    lost: Option<Lost>,
}

/// Keeps a run's claim: renews its lease, and says when it is lost, so the run can stop at once
/// rather than find out at its next commit.
///
/// PostgreSQL renews on a task of its own, every quarter lease, on the claim's connection, while
/// windows run. SQLite cannot: a window's transaction holds the database's one write lock, so the
/// lease is renewed before each window and by the window's own commit ([`Backend::fence`]).
pub struct Keeper<B: Backend> {
    db: B,
    claim: Arc<Claim>,
    mode: Mode<B>,
}

enum Mode<B: Backend> {
    Heartbeat {
        standing: watch::Receiver<Standing>,
        wake: Arc<Notify>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Option<B::Lock>>,
    },
    BetweenWindows {
        lock: Option<B::Lock>,
    },
}

impl<B: Backend> Keeper<B> {
    /// Start keeping `claim`, just acquired with `lock`.
    pub fn start(db: &B, claim: Claim, lock: B::Lock) -> Keeper<B> {
        let claim = Arc::new(claim);
        let mode = if B::RENEWS_DURING_WINDOW {
            let (report, standing) = watch::channel(Standing {
                tries: 0,
                confirmed_until: Instant::now() + claim.lease(),
                lost: None,
            });
            let wake = Arc::new(Notify::new());
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(heartbeat(
                db.clone(),
                Arc::clone(&claim),
                lock,
                report,
                Arc::clone(&wake),
                stopped,
            ));
            Mode::Heartbeat {
                standing,
                wake,
                stop,
                task,
            }
        } else {
            Mode::BetweenWindows { lock: Some(lock) }
        };
        Keeper {
            db: db.clone(),
            claim,
            mode,
        }
    }

    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// Before a window: renew the lease (SQLite), or check the heartbeat still holds it. If the
    /// heartbeat's last confirmation is older than the lease (this process was paused), wait
    /// for a fresh one: a run superseded meanwhile must not start another window.
    pub async fn renew(&mut self, before: &str) -> anyhow::Result<()> {
        let what = format!("stopped before {before}, which was not started");
        let lease = self.claim.lease();
        match &mut self.mode {
            Mode::Heartbeat { standing, wake, .. } => {
                let last = standing.borrow().clone();
                let mut lost = last.lost.clone();
                if lost.is_none() && last.confirmed_until <= Instant::now() {
                    wake.notify_one();
                    let fresh = tokio::time::timeout(
                        lease,
                        standing.wait_for(|s| s.tries > last.tries || s.lost.is_some()),
                    )
                    .await
                    .ok()
                    .and_then(|found| found.ok().map(|found| found.lost.clone()));
                    lost = fresh.unwrap_or(Some(Lost::Unanswered(lease)));
                }
                match lost {
                    Some(lost) => Err(lost.into_error(&self.claim.job, &what)),
                    None => Ok(()),
                }
            }
            Mode::BetweenWindows { lock } => {
                let lock = lock.as_mut().expect("kept until finish");
                let renewed = within(
                    self.claim.lease(),
                    "the claim's renewal",
                    self.db.renew_claim(lock, &self.claim),
                )
                .await?;
                match renewed {
                    true => Ok(()),
                    false => Err(Lost::Superseded.into_error(&self.claim.job, &what)),
                }
            }
        }
    }

    /// Resolves when the claim is lost (never, where the lease is renewed between windows).
    pub async fn lost(&self) -> Lost {
        match &self.mode {
            Mode::Heartbeat { standing, .. } => {
                let mut standing = standing.clone();
                let lost = standing
                    .wait_for(|s| s.lost.is_some())
                    .await
                    .ok()
                    .and_then(|found| found.lost.clone());
                match lost {
                    Some(lost) => lost,
                    // The heartbeat ended without saying why: it was stopped, so nothing is lost.
                    None => std::future::pending().await,
                }
            }
            Mode::BetweenWindows { .. } => std::future::pending().await,
        }
    }

    /// After a run failed: whether that was because another run took the job over (its errors
    /// then read as connection failures, when the server ended this run's session, or as
    /// deadlines that passed while the process was paused). Asks the database once more, for at
    /// most `SUPERSEDED_CHECK` (the answer is already known if the heartbeat lost the claim).
    pub async fn superseded(&mut self) -> bool {
        let lease = SUPERSEDED_CHECK;
        match &mut self.mode {
            Mode::Heartbeat { standing, wake, .. } => {
                let last = standing.borrow().clone();
                if let Some(lost) = last.lost {
                    return matches!(lost, Lost::Superseded);
                }
                wake.notify_one();
                let answer =
                    tokio::time::timeout(lease, standing.wait_for(|s| s.tries > last.tries))
                        .await
                        .ok()
                        .and_then(|found| found.ok().map(|found| found.lost.clone()));
                matches!(answer, Some(Some(Lost::Superseded)))
            }
            Mode::BetweenWindows { lock } => {
                let lock = lock.as_mut().expect("kept until finish");
                let renewed =
                    tokio::time::timeout(lease, self.db.renew_claim(lock, &self.claim)).await;
                matches!(renewed, Ok(Ok(false)))
            }
        }
    }

    /// Stop renewing; the claim and, unless a renewal was cut short, its lock, for release.
    pub async fn finish(self) -> (Arc<Claim>, Option<B::Lock>) {
        let lock = match self.mode {
            Mode::Heartbeat { stop, task, .. } => {
                let _ = stop.send(());
                task.await.ok().flatten()
            }
            Mode::BetweenWindows { lock } => lock,
        };
        (self.claim, lock)
    }
}

/// Renew `claim` every quarter lease (or when woken) until stopped or lost, reporting each try.
/// Each renewal must be confirmed before the lease it extends runs out, measured from when the
/// last confirmed renewal was sent: a database that stops answering loses the claim within the
/// lease (or a quarter lease after it, if the process itself was paused). Returns the lock, unless a renewal was cut short (its connection is then unusable).
async fn heartbeat<B: Backend>(
    db: B,
    claim: Arc<Claim>,
    mut lock: B::Lock,
    report: watch::Sender<Standing>,
    wake: Arc<Notify>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<B::Lock> {
    let lease = claim.lease();
    let every = (lease / 4).max(Duration::from_millis(100));
    let mut confirmed_until = Instant::now() + lease;
    let mut tries = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
            _ = &mut stop => return Some(lock),
        }
        let sent = Instant::now();
        // At least a quarter lease: after this process was paused past its lease, the renewal
        // still gets to ask whether another run took over (the usual answer) rather than give up
        // on a database that was never silent.
        let left = confirmed_until
            .saturating_duration_since(sent)
            .max(lease / 4);
        let renewed = tokio::select! {
            renewed = tokio::time::timeout(left, db.renew_claim(&mut lock, &claim)) => renewed,
            _ = &mut stop => return None,
        };
        tries += 1;
        let lost = match renewed {
            Ok(Ok(true)) => {
                confirmed_until = sent + lease;
                report.send_replace(Standing {
                    tries,
                    confirmed_until,
                    lost: None,
                });
                continue;
            }
            Ok(Ok(false)) => Lost::Superseded,
            Ok(Err(err)) => Lost::Failed(format!("{err:#}")),
            Err(_) => Lost::Unanswered(lease),
        };
        tracing::warn!(lost = ?lost, "the claim is lost");
        let usable = matches!(lost, Lost::Superseded);
        report.send_replace(Standing {
            tries,
            confirmed_until,
            lost: Some(lost),
        });
        // Nothing more to renew; wait to be stopped, so the run can release what is left.
        let _ = stop.await;
        return usable.then_some(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_gone_when_its_lease_lapsed_or_its_local_process_died() {
        let now = Utc::now();
        let holder = |host: &str, pid: i64, expires_at| Holder {
            claim_id: "c".into(),
            host: host.into(),
            pid,
            claimed_at: now,
            expires_at,
        };
        let me = i64::from(std::process::id());
        let later = now + TimeDelta::minutes(5);
        assert!(!holder("here", me, later).is_gone(now, "here"));
        assert!(holder("here", me, now).is_gone(now, "here"), "lease lapsed");
        assert!(
            holder("here", i64::from(i32::MAX), later).is_gone(now, "here"),
            "no such pid"
        );
        assert!(
            !holder("there", i64::from(i32::MAX), later).is_gone(now, "here"),
            "pids of other hosts are not ours to check"
        );
    }
}
