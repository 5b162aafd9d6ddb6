//! SQLite claims: the shared claim row ([`claims`]), judged by its lease and, since every run of
//! a SQLite database is on this one machine, by whether the holder's process still exists.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use super::SqliteBackend;
use crate::claim::{Claim, ClaimOutcome};
use crate::db::claims;

impl SqliteBackend {
    pub(super) async fn take_claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<()>> {
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

    /// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes, anywhere in `err`:
    /// another writer kept the database locked past the busy timeout.
    pub(super) fn locked(err: &anyhow::Error) -> bool {
        err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|e| matches!(super::primary_code(e), Some(5 | 6)))
        })
    }
}
