//! Keeping a run's claim: renewing its lease while the run works, and saying when it is lost,
//! so the run stops at once rather than find out at its next commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::claim::{Claim, Lost};
use crate::db::{Backend, within};

/// How long a failed run asks whether it was superseded, on top of the deadline that failed.
const SUPERSEDED_CHECK: Duration = Duration::from_secs(5);

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
/// lease is renewed before each window and by the window's own commit (`WindowTx::fence`).
pub(crate) struct Keeper<B: Backend> {
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
