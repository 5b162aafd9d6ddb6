//! Claims taken by the commands that change a job's watermarks by hand (`watermark set`,
//! `reshard`): every shard they touch, all or none, so that no run of those shards is between
//! planning and commit meanwhile.

use crate::claim::{Claim, ClaimOutcome, DEFAULT_LEASE};
use crate::db::Backend;
use crate::error::Contention;
use crate::shard::Shard;
use crate::shard::job_label;

/// The claims of several shards of one job, held together.
pub(super) struct ShardClaims<L> {
    held: Vec<(Claim, L)>,
}

impl<L: Send + Sync + 'static> ShardClaims<L> {
    /// Claim every shard in `shards`, or none: if one is busy, give back those taken and say
    /// who holds it.
    pub(super) async fn take<B: Backend<Lock = L>>(
        db: &B,
        job: &str,
        shards: &[Shard],
        lease: chrono::TimeDelta,
    ) -> anyhow::Result<ShardClaims<L>> {
        let mut held = ShardClaims { held: Vec::new() };
        for shard in shards {
            let claim = Claim::new(job, *shard, lease);
            let outcome = match db.claim(&claim).await {
                Ok(outcome) => outcome,
                Err(err) => {
                    held.release(db).await?;
                    return Err(err);
                }
            };
            match outcome {
                ClaimOutcome::Acquired(lock) => held.held.push((claim, lock)),
                ClaimOutcome::Busy(holder) => {
                    held.release(db).await?;
                    return Err(Contention::Busy {
                        job: job_label(job, *shard),
                        holder: holder.map(|h| h.to_string()),
                    }
                    .into());
                }
            }
        }
        Ok(held)
    }

    /// Give every claim back.
    pub(super) async fn release<B: Backend<Lock = L>>(self, db: &B) -> anyhow::Result<()> {
        let mut first_error = None;
        for (claim, lock) in self.held {
            if let Err(err) = db.release_claim(Some(lock), &claim).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// [`DEFAULT_LEASE`] as a `TimeDelta`: these commands hold their claims for a moment only.
pub(super) fn humantime_lease() -> chrono::TimeDelta {
    humantime::parse_duration(DEFAULT_LEASE)
        .ok()
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .expect("DEFAULT_LEASE is a valid duration")
}
