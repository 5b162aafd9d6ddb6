//! The SQL of the claims table (`batchscore_claims`, one row per job and shard), written once for
//! every backend: times come
//! from the database's clock ([`Dialect::NOW`]), so every holder of a job judges leases by the
//! same clock. What differs, how a backend tells a live holder from a gone one, stays with it
//! (PostgreSQL's advisory locks, SQLite's pid check).

use anyhow::Context;
use sqlx::Executor;

use super::dialect::{self, Dialect, Param, required};
use crate::claim::{Claim, Holder};

/// The claim of the shard `claim` is for, as its row says, and whether its lease lapsed by the
/// database's clock.
pub(crate) async fn holder<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    claim: &Claim,
) -> anyhow::Result<Option<(Holder, bool)>> {
    let sql = format!(
        "SELECT claim_id, host, pid, claimed_at, expires_at, expires_at <= {} AS lapsed \
         FROM batchscore_claims WHERE job = $1 AND shard = $2",
        DB::NOW
    );
    let params = vec![Param::from(&claim.job), Param::from(claim.shard.index)];
    let row = dialect::fetch_optional(executor, sql, params)
        .await
        .context("reading the job's claim")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let holder = Holder {
        claim_id: required(DB::text(&row, "claim_id")?, "claim_id")?,
        host: required(DB::text(&row, "host")?, "host")?,
        pid: required(DB::int(&row, "pid")?, "pid")?,
        claimed_at: required(DB::time(&row, "claimed_at")?, "claimed_at")?,
        expires_at: required(DB::time(&row, "expires_at")?, "expires_at")?,
    };
    Ok(Some((holder, DB::flag(&row, "lapsed")?)))
}

/// Insert the claim, or take over exactly the holder `replacing` (judged gone by the caller):
/// if anyone claimed the job in between, the row's claim id differs and nothing changes.
/// Returns whether this run now holds the job.
pub(crate) async fn take<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    claim: &Claim,
    replacing: Option<&str>,
) -> anyhow::Result<bool> {
    let sql = format!(
        "INSERT INTO batchscore_claims (job, claim_id, host, pid, claimed_at, expires_at, shard) \
         VALUES ($1, $2, $3, $4, {}, {}, $7) \
         ON CONFLICT (job, shard) DO UPDATE SET claim_id = excluded.claim_id, host = excluded.host, \
         pid = excluded.pid, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at \
         WHERE batchscore_claims.claim_id = $6 \
         RETURNING claim_id",
        DB::NOW,
        DB::later("$5"),
    );
    let params = vec![
        Param::from(&claim.job),
        Param::from(&claim.claim_id),
        Param::from(&claim.host),
        Param::from(claim.pid),
        Param::Seconds(claim.lease.as_seconds_f64()),
        Param::from(replacing),
        Param::from(claim.shard.index),
    ];
    let won = dialect::fetch_optional(executor, sql, params)
        .await
        .context("claiming the job")?;
    Ok(won.is_some())
}

/// Extend the claim's lease from now, only if this run still holds it.
pub(crate) async fn renew<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    claim: &Claim,
) -> anyhow::Result<bool> {
    let sql = format!(
        "UPDATE batchscore_claims SET expires_at = {} WHERE job = $1 AND claim_id = $2",
        DB::later("$3")
    );
    let params = vec![
        Param::from(&claim.job),
        Param::from(&claim.claim_id),
        Param::Seconds(claim.lease.as_seconds_f64()),
    ];
    let renewed = dialect::execute(executor, sql, params)
        .await
        .context("renewing the claim")?;
    Ok(renewed == 1)
}

/// Delete the claim's row, if this run still holds it.
pub(crate) async fn release<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    claim: &Claim,
) -> anyhow::Result<()> {
    let sql = "DELETE FROM batchscore_claims WHERE job = $1 AND claim_id = $2".to_owned();
    dialect::execute(
        executor,
        sql,
        vec![(&claim.job).into(), (&claim.claim_id).into()],
    )
    .await
    .context("releasing the claim")?;
    Ok(())
}
