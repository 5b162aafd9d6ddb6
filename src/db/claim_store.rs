//! Claims in the database: the [`ClaimStore`] each database implements in its `claim.rs`, and
//! the SQL of the claims table (`batchscore_claims`, one row per job and shard), written once
//! for every backend. Times come from the database's clock ([`Dialect::NOW`]), so every holder
//! of a job judges leases by the same clock. A server shared by many machines (PostgreSQL,
//! MySQL) also tells a live holder from a gone one by a lock its session holds
//! ([`SessionLock`], taken by [`take_locked`]); SQLite, on one machine, by the holder's pid.
//! What a claim is, and why, is [`crate::claim`]'s.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use anyhow::Context;
use sqlx::{Connection, Executor};

use super::dialect::{self, Dialect, Param, required};
use crate::claim::{Claim, ClaimOutcome, Holder};

/// Holding a job's claim in the database: taking it, renewing its lease, giving it up.
pub(crate) trait ClaimStore {
    /// What keeps a claim held besides its row (the servers: the claim's own connection, which
    /// holds its lock).
    type Lock: Send + Sync + 'static;

    /// Whether the claim's lease can be renewed while a window's transaction is open (it cannot
    /// on SQLite, whose one write lock the window holds).
    const RENEWS_DURING_WINDOW: bool;

    /// A claim is coming: a backend whose claims hold a connection of their own opens it now,
    /// beside what the run does before it claims (an empty window's run spends most of its
    /// time connecting), for its next [`ClaimStore::claim`] to use.
    fn claim_ahead(&self) {}

    /// Claim the job's shard for one run, or say who holds it.
    fn claim(
        &self,
        claim: &Claim,
    ) -> impl Future<Output = anyhow::Result<ClaimOutcome<Self::Lock>>> + Send;

    /// Extend the claim's lease by the database's clock; false if this run no longer holds it.
    fn renew_claim(
        &self,
        lock: &mut Self::Lock,
        claim: &Claim,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Give the claim up (`lock` is `None` when its connection was lost mid-renewal).
    fn release_claim(
        &self,
        lock: Option<Self::Lock>,
        claim: &Claim,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// When `err` is this database's "locked by another writer, and the wait ran out" (SQLite's
    /// busy timeout), how long it waited: a run reports that as contention, not failure.
    fn lock_wait(&self, err: &anyhow::Error) -> Option<Duration>;
}

/// A claim's own connection, opened by `connecting` within `limit`, or why it could not be.
pub(crate) async fn claim_connection<C>(
    limit: Duration,
    connecting: impl Future<Output = Result<C, sqlx::Error>>,
) -> anyhow::Result<C> {
    tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))
        .and_then(|connected| Ok(connected?))
        .context("opening the claim's connection")
}

/// A claim's own connection, opened on a task of its own ahead of the claim (see
/// [`ClaimStore::claim_ahead`]), for the servers' claims to take.
pub(crate) struct ClaimAhead<C>(Arc<Mutex<Option<JoinHandle<anyhow::Result<C>>>>>);

impl<C> Default for ClaimAhead<C> {
    fn default() -> Self {
        ClaimAhead(Arc::default())
    }
}

impl<C> Clone for ClaimAhead<C> {
    fn clone(&self) -> Self {
        ClaimAhead(Arc::clone(&self.0))
    }
}

impl<C: Send + 'static> ClaimAhead<C> {
    /// Start opening the connection.
    pub fn start(&self, connecting: impl Future<Output = anyhow::Result<C>> + Send + 'static) {
        let opening = tokio::spawn(connecting);
        *self.0.lock().expect("not poisoned") = Some(opening);
    }

    /// The connection opened ahead, if one was and it opened; otherwise `connect`'s (a
    /// failure ahead is tried again on the claim's own deadline).
    pub async fn take_or(
        &self,
        connect: impl Future<Output = anyhow::Result<C>>,
    ) -> anyhow::Result<C> {
        let opening = self.0.lock().expect("not poisoned").take();
        match opening {
            Some(opening) => match opening.await {
                Ok(Ok(conn)) => Ok(conn),
                _ => connect.await,
            },
            None => connect.await,
        }
    }
}

/// What a server shared by many machines adds to the claim row: a lock of the claim id, held by
/// the claim's own connection for as long as the claim, by which the next run tells a holder
/// whose session ended from a live one before its lease lapses (PostgreSQL's session advisory
/// lock, MySQL's named lock: both freed when the session ends); and the ending of a superseded
/// holder's window sessions. The lock is only a hint: a holder whose lease lapsed loses the job
/// whatever its session still holds, and the fencing check keeps it from committing.
pub(crate) trait SessionLock: Dialect {
    /// Bound the claim's transaction's waits on row locks: a frozen holder may have the row
    /// locked (in its window's fencing check), which ends within its lease, but this run does
    /// not wait for that.
    fn bound_waits(tx: &mut Self::Connection) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Take `claim_id`'s lock, in the claim's transaction, before its row commits.
    fn lock(
        tx: &mut Self::Connection,
        claim_id: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether no session holds `claim_id`'s lock; the check leaves it free.
    fn is_free(
        conn: &mut Self::Connection,
        claim_id: &str,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// End the window sessions (reader, transaction) of the holder `claim_id`, which this run
    /// just took the job over from: it lost its lease, so it is frozen or cut off, and its
    /// sessions hold locks this run's writes would wait on. Best effort: the server's own
    /// timeouts end them otherwise.
    fn end_sessions_of(
        conn: &mut Self::Connection,
        claim_id: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// Take the shard's claim on `conn`, the claim's own connection, which holds the claim's lock
/// and lives as long as the claim. The holder is gone when its lease lapsed by the server's
/// clock or its lock is free; its row is then taken over by compare-and-set on its claim id
/// ([`take`]), and the new claim id locked before the row commits, so whoever sees the row can
/// tell whether its holder's session is still there.
pub(crate) async fn take_locked<DB: SessionLock>(
    mut conn: DB::Connection,
    claim: &Claim,
) -> anyhow::Result<ClaimOutcome<DB::Connection>> {
    // A holder releasing deletes its row between our read and our write: look again.
    for _ in 0..25 {
        let replacing = match holder::<DB>(DB::on_conn(&mut conn), claim).await? {
            None => None,
            Some((holder, true)) => Some(holder.claim_id),
            Some((holder, false)) => match DB::is_free(&mut conn, &holder.claim_id)
                .await
                .context("checking the holder's session")?
            {
                true => Some(holder.claim_id),
                false => {
                    let _ = conn.close().await;
                    return Ok(ClaimOutcome::Busy(Some(holder)));
                }
            },
        };
        let mut tx = conn.begin().await.context("claiming the job")?;
        DB::bound_waits(&mut tx).await.context("claiming the job")?;
        if take::<DB>(&mut tx, claim, replacing.as_deref()).await? {
            DB::lock(&mut tx, &claim.claim_id)
                .await
                .context("taking the claim's lock")?;
            if let Err(err) = tx.commit().await {
                let _ = conn.close().await; // and the lock with it
                return Err(anyhow::Error::new(err).context("claiming the job"));
            }
            if let Some(replaced) = &replacing {
                DB::end_sessions_of(&mut conn, replaced).await;
            }
            return Ok(ClaimOutcome::Acquired(conn));
        }
        tx.rollback().await.context("claiming the job")?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = conn.close().await;
    Ok(ClaimOutcome::Busy(None))
}

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

/// The fencing check, in a window's transaction just before its commit: renew the claim if this
/// run still holds it, and say whether it does. A run superseded while paused then commits
/// nothing, backfills included (which move no watermark to compare-and-set). The renewal locks
/// the claim's row until the commit, so a takeover waits for it, then sees the lease renewed.
pub(crate) async fn fence<DB: Dialect>(
    conn: &mut DB::Connection,
    claim: &Claim,
) -> anyhow::Result<bool> {
    renew(DB::on_conn(conn), claim)
        .await
        .context("checking this run still holds the claim")
}
