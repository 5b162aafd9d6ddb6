//! One run of a job at a time, however it was started (daemon, `run-job`, system cron) and on
//! however many machines: a run claims its job before planning and keeps the claim until its
//! last window is committed.
//!
//! The claim is a row in `batchscore_claims` naming the holder (run, host, pid, since when),
//! with a lease the holder renews before each window, so a crashed holder cannot block the job
//! forever. PostgreSQL also holds a session advisory lock on a connection of its own, which the
//! server drops with the connection when the process dies; SQLite, being on one machine, also
//! takes over at once from a holder on this host whose process is gone. Correctness does not
//! rest on the claim alone: each window's commit moves the watermark by compare-and-set, so a
//! run that planned from a stale watermark fails to commit instead of writing twice.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// Default lease: how long a claim outlives its last renewal. It must cover the longest window.
pub const DEFAULT_LEASE: &str = "10m";

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

    /// When the claim lapses if it is not renewed from now on.
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc::now() + self.lease
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
