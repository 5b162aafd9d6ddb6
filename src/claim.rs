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
//! `WindowTx::fence` in `db`), and scheduled windows also move the watermark by compare-and-set.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::error::{Contention, Unresponsive};
use crate::shard::Shard;

/// Default lease: how long a claim outlives its last renewal, and so how long a frozen or cut-off
/// holder can keep its job from others, and how long a run waits on a silent database.
pub const DEFAULT_LEASE: &str = "1m";

/// What a run puts in the claims table.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: String,
    /// Each shard of a job is claimed on its own.
    pub shard: Shard,
    pub claim_id: String,
    pub host: String,
    pub pid: i64,
    pub lease: TimeDelta,
}

impl Claim {
    pub fn new(job: &str, shard: Shard, lease: TimeDelta) -> Claim {
        Claim {
            job: job.to_owned(),
            shard,
            claim_id: uuid::Uuid::now_v7().to_string(),
            host: hostname(),
            pid: i64::from(std::process::id()),
            lease,
        }
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
    /// process no longer exists, or it is this process and no run of it holds the claim (a
    /// daemon whose release of it failed: its next tick takes it back instead of waiting out
    /// the lease).
    pub fn is_gone(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        let local = self.host == this_host;
        let ours = local && self.pid == i64::from(std::process::id());
        self.expires_at <= now
            || (local && !process_alive(self.pid))
            || (ours && !HeldHere::holds(&self.claim_id))
    }
}

/// The claims a run of this process is taking or holding now, by claim id: while one is
/// registered, [`Holder::is_gone`] does not call this process's row of it gone.
pub struct HeldHere(String);

static HELD_HERE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl HeldHere {
    /// Register `claim` until the guard is dropped.
    pub fn register(claim: &Claim) -> HeldHere {
        let id = claim.claim_id.clone();
        HELD_HERE.lock().expect("not poisoned").push(id.clone());
        HeldHere(id)
    }

    fn holds(claim_id: &str) -> bool {
        HELD_HERE
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|id| id == claim_id)
    }
}

impl Drop for HeldHere {
    fn drop(&mut self) {
        HELD_HERE
            .lock()
            .expect("not poisoned")
            .retain(|id| *id != self.0);
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

/// This machine's name: which host holds a job's claim (and ran a ledger's run).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether a process with this pid exists on this machine.
#[allow(unsafe_code)]
pub fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to another user.
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

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
        // Another live process of this host (init).
        let other = 1;
        let later = now + TimeDelta::minutes(5);
        assert!(!holder("here", other, later).is_gone(now, "here"));
        assert!(
            holder("here", other, now).is_gone(now, "here"),
            "lease lapsed"
        );
        assert!(
            holder("here", i64::from(i32::MAX), later).is_gone(now, "here"),
            "no such pid"
        );
        assert!(
            !holder("there", i64::from(i32::MAX), later).is_gone(now, "here"),
            "pids of other hosts are not ours to check"
        );
    }

    #[test]
    fn this_processs_claim_is_gone_once_no_run_of_it_holds_it() {
        let now = Utc::now();
        let claim = Claim::new("job", Shard { index: 0, count: 1 }, TimeDelta::minutes(1));
        let holder = Holder {
            claim_id: claim.claim_id.clone(),
            host: "here".into(),
            pid: i64::from(std::process::id()),
            claimed_at: now,
            expires_at: now + TimeDelta::minutes(5),
        };
        let held = HeldHere::register(&claim);
        assert!(
            !holder.is_gone(now, "here"),
            "a run of this process holds it"
        );
        drop(held);
        assert!(
            holder.is_gone(now, "here"),
            "left behind by a failed release"
        );
    }
}
