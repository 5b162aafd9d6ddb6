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

/// Take over exactly the holder `replacing` (judged gone by the caller), or insert the claim
/// where the shard has none: if anyone claimed the shard in between, the row's claim id differs
/// (or the row exists) and nothing changes. Returns whether this run now holds the shard. Two
/// statements whose row counts each say it, on every database: no `RETURNING`, no conditional
/// upsert (whose row count some databases report alike for a no-op and a write).
pub(crate) async fn take<DB: Dialect>(
    conn: &mut DB::Connection,
    claim: &Claim,
    replacing: Option<&str>,
) -> anyhow::Result<bool> {
    let params = || {
        vec![
            Param::from(&claim.job),
            Param::from(claim.shard.index),
            Param::from(&claim.claim_id),
            Param::from(&claim.host),
            Param::from(claim.pid),
            Param::Seconds(claim.lease.as_seconds_f64()),
        ]
    };
    if let Some(replacing) = replacing {
        let sql = format!(
            "UPDATE batchscore_claims SET claim_id = $3, host = $4, pid = $5, claimed_at = {}, \
             expires_at = {} WHERE job = $1 AND shard = $2 AND claim_id = $7",
            DB::NOW,
            DB::later("$6"),
        );
        let mut params = params();
        params.push(replacing.into());
        let taken = dialect::execute(DB::on_conn(conn), sql, params)
            .await
            .context("taking over the job's claim")?;
        if taken == 1 {
            return Ok(true);
        }
        // The row is gone (released meanwhile) or holds someone else: insert, or lose.
    }
    let sql = DB::upsert(
        "batchscore_claims",
        &[
            "job",
            "shard",
            "claim_id",
            "host",
            "pid",
            "claimed_at",
            "expires_at",
        ],
        &[
            &dialect::placeholders(1, 5)[..],
            &[DB::NOW.to_owned(), DB::later("$6")],
        ]
        .concat(),
        "job, shard",
        &[],
        None,
    );
    let inserted = dialect::execute(DB::on_conn(conn), sql, params())
        .await
        .context("claiming the job")?;
    Ok(inserted == 1)
}

/// Extend the claim's lease from now, only if this run still holds it.
pub(crate) async fn renew<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    claim: &Claim,
) -> anyhow::Result<bool> {
    let sql = format!(
        "UPDATE batchscore_claims SET expires_at = {} WHERE job = $1 AND shard = $2 AND claim_id = $3",
        DB::later("$4")
    );
    let params = vec![
        Param::from(&claim.job),
        Param::from(claim.shard.index),
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
    let sql =
        "DELETE FROM batchscore_claims WHERE job = $1 AND shard = $2 AND claim_id = $3".to_owned();
    dialect::execute(
        executor,
        sql,
        vec![
            (&claim.job).into(),
            claim.shard.index.into(),
            (&claim.claim_id).into(),
        ],
    )
    .await
    .context("releasing the claim")?;
    Ok(())
}
