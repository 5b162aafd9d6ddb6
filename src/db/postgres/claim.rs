//! PostgreSQL claims: the shared claim row ([`claims`]), held with a session advisory lock on a
//! connection of the claim's own, which tells a live holder's session from a gone one, and the
//! ending of a superseded holder's window sessions.

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::PostgresBackend;
use crate::claim::{Claim, ClaimOutcome, Holder};
use crate::db::claims;

/// A claim's advisory lock, keyed by its claim id (unique, so no schema in the key): held by the
/// holder's claim connection for as long as the claim, it tells a live holder's session from a
/// gone one. It is only a hint that lets the next run take over before the lease lapses: a
/// holder whose lease lapsed loses the job whatever its session still holds.
const LOCK_CLAIM: &str = "SELECT pg_advisory_lock(hashtextextended('batchscore claim ' || $1, 0))";
const TRY_LOCK_CLAIM: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('batchscore claim ' || $1, 0))";
const UNLOCK_CLAIM: &str =
    "SELECT pg_advisory_unlock(hashtextextended('batchscore claim ' || $1, 0))";

/// The `application_name` of a run's window sessions (its reader and its transaction), by which
/// a successor ends them (see `end_sessions_of`). Not the claim's own
/// connection, which the superseded holder needs to learn it was superseded.
pub(super) fn session_tag(claim_id: &str) -> String {
    format!("batchscore {claim_id}")
}

/// What a claimer makes of the job's current holder.
enum Judged {
    /// No one holds the job.
    Free,
    /// Someone held it and is gone (lease lapsed, or session ended): take over this claim id.
    Gone(String),
    Alive(Holder),
}

impl PostgresBackend {
    /// The claim row, taken over by compare-and-set on the claim id it replaces, and a session
    /// advisory lock keyed by the new claim id, on a connection of its own that lives as long as
    /// the claim: the lock is taken before the row is committed, so whoever sees the row can
    /// tell whether its holder's session is still there.
    pub(super) async fn take_claim(
        &self,
        claim: &Claim,
    ) -> anyhow::Result<ClaimOutcome<PgConnection>> {
        let mut conn = tokio::time::timeout(
            self.limits.connect,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.limits.connect))
        .and_then(|connected| Ok(connected?))
        .context("opening the claim's connection")?;
        // A holder releasing deletes its row between our read and our write: look again.
        for _ in 0..25 {
            let replacing = match judge_holder(&mut conn, claim).await? {
                Judged::Free => None,
                Judged::Gone(claim_id) => Some(claim_id),
                Judged::Alive(holder) => {
                    let _ = conn.close().await;
                    return Ok(ClaimOutcome::Busy(Some(holder)));
                }
            };
            let mut tx = conn.begin().await.context("claiming the job")?;
            // A frozen holder may have the row locked (in its window's fencing check); its
            // transaction ends within its lease, but this run does not wait for that.
            sqlx::query("SELECT set_config('lock_timeout', '2s', true)")
                .execute(&mut *tx)
                .await
                .context("claiming the job")?;
            if claims::take::<sqlx::Postgres>(&mut tx, claim, replacing.as_deref()).await? {
                sqlx::query(LOCK_CLAIM)
                    .bind(&claim.claim_id)
                    .execute(&mut *tx)
                    .await
                    .context("taking the claim's advisory lock")?;
                tx.commit().await.context("claiming the job")?;
                if let Some(replaced) = &replacing {
                    end_sessions_of(&mut conn, replaced).await;
                }
                return Ok(ClaimOutcome::Acquired(conn));
            }
            tx.rollback().await.context("claiming the job")?;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = conn.close().await;
        Ok(ClaimOutcome::Busy(None))
    }

    pub(super) async fn give_up_claim(
        &self,
        lock: Option<PgConnection>,
        claim: &Claim,
    ) -> anyhow::Result<()> {
        let Some(mut lock) = lock else {
            // The claim's connection is gone, and its lock with it.
            return claims::release(&self.pool, claim).await;
        };
        claims::release(&mut lock, claim).await?;
        sqlx::query(UNLOCK_CLAIM)
            .bind(&claim.claim_id)
            .execute(&mut lock)
            .await
            .context("releasing the claim's advisory lock")?;
        lock.close().await.context("closing the claim's connection")
    }
}

/// Read the shard's claim and judge its holder: gone when its lease lapsed by the server's
/// clock, or when its claim's advisory lock is free (its session ended).
async fn judge_holder(conn: &mut PgConnection, claim: &Claim) -> anyhow::Result<Judged> {
    let Some((holder, lapsed)) = claims::holder(&mut *conn, claim).await? else {
        return Ok(Judged::Free);
    };
    if lapsed {
        return Ok(Judged::Gone(holder.claim_id));
    }
    let session_gone: bool = sqlx::query_scalar(TRY_LOCK_CLAIM)
        .bind(&holder.claim_id)
        .fetch_one(&mut *conn)
        .await
        .context("checking the holder's session")?;
    if session_gone {
        sqlx::query(UNLOCK_CLAIM)
            .bind(&holder.claim_id)
            .execute(&mut *conn)
            .await
            .context("checking the holder's session")?;
        return Ok(Judged::Gone(holder.claim_id));
    }
    Ok(Judged::Alive(holder))
}

/// End the window sessions of the holder this run just took the job over from. It lost its
/// lease, so it is frozen or cut off; the server has not ended its sessions because they are
/// waiting on the client (a statement mid-COPY is not subject to `statement_timeout`), and they
/// hold locks this run's writes would wait on. Best effort: a role that may not signal them
/// leaves them to the server's own timeouts.
async fn end_sessions_of(conn: &mut PgConnection, claim_id: &str) {
    let ended: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(session_tag(claim_id))
    .fetch_one(conn)
    .await;
    match ended {
        Ok(0) => {}
        Ok(ended) => tracing::warn!(
            ended,
            replaced = claim_id,
            "ended the server sessions of the run whose claim lapsed"
        ),
        Err(err) => tracing::warn!(
            error = %err,
            replaced = claim_id,
            "could not end the sessions of the run whose claim lapsed; the server's timeouts will"
        ),
    }
}
