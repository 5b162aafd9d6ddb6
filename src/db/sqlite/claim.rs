//! SQLite claims: the shared claim row ([`claims`]), judged by its lease and, since every run of
//! a SQLite database is on this one machine, by whether the holder's process still exists.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use super::SqliteBackend;
use crate::claim::{Claim, ClaimOutcome};
use crate::db::claim_store::{self as claims, ClaimStore};

impl ClaimStore for SqliteBackend {
    // One machine: the claim row, with the holder's pid checked on this host, is enough.
    type Lock = ();
    const RENEWS_DURING_WINDOW: bool = false;

    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<()>> {
        // A holder that is finishing deletes its row between our two statements: look again.
        for _ in 0..25 {
            let replacing = match claims::holder(&self.pool, claim).await? {
                Some((holder, lapsed)) if !lapsed && !holder.is_gone(Utc::now(), &claim.host) => {
                    return Ok(ClaimOutcome::Busy(Some(holder)));
                }
                Some((gone, _)) => Some(gone.claim_id),
                None => None,
            };
            let mut conn = self.pool.acquire().await.context("claiming the job")?;
            if claims::take::<sqlx::Sqlite>(&mut conn, claim, replacing.as_deref()).await? {
                return Ok(ClaimOutcome::Acquired(()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ClaimOutcome::Busy(None))
    }

    async fn renew_claim(&self, _lock: &mut (), claim: &Claim) -> anyhow::Result<bool> {
        claims::renew(&self.pool, claim).await
    }

    async fn release_claim(&self, _lock: Option<()>, claim: &Claim) -> anyhow::Result<()> {
        claims::release(&self.pool, claim).await
    }

    /// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes, anywhere in `err`:
    /// another writer kept the database locked past the busy timeout.
    fn lock_wait(&self, err: &anyhow::Error) -> Option<Duration> {
        let locked = err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|e| matches!(super::primary_code(e), Some(5 | 6)))
        });
        locked.then_some(self.limits.busy)
    }
}
