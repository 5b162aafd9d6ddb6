//! MySQL claims: the shared claim row ([`claims`]), held with a named lock (`GET_LOCK`) on a
//! connection of the claim's own, which tells a live holder's session from a gone one, as
//! PostgreSQL's advisory lock does. A named lock belongs to its session: it is freed when the
//! session ends, and a rollback does not free it.

use anyhow::Context;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use super::MySqlBackend;
use crate::claim::{Claim, ClaimOutcome, Holder};
use crate::db::claims;

/// The lock's name: the claim id is unique, and the name stays under MySQL's 64 characters.
fn lock_name(claim_id: &str) -> String {
    format!("batchscore claim {claim_id}")
}

/// The named locks a run's window sessions hold (its reader's and its transaction's), by which
/// a successor finds and ends them (see `end_sessions_of`). Not the claim's own connection,
/// which the superseded holder needs to learn it was superseded.
pub(super) fn session_tags(claim_id: &str) -> [String; 2] {
    [
        format!("batchscore read {claim_id}"),
        format!("batchscore write {claim_id}"),
    ]
}

/// What a claimer makes of the shard's current holder.
enum Judged {
    Free,
    /// Its lease lapsed, or its session ended: take over this claim id.
    Gone(String),
    Alive(Holder),
}

impl MySqlBackend {
    /// The claim row, taken over by compare-and-set on the claim id it replaces, and the named
    /// lock of the new claim id, taken before the row commits, on a connection that lives as
    /// long as the claim.
    pub(super) async fn take_claim(
        &self,
        claim: &Claim,
    ) -> anyhow::Result<ClaimOutcome<MySqlConnection>> {
        let mut conn = tokio::time::timeout(self.limits.connect, async {
            let mut conn = MySqlConnection::connect_with(&self.options).await?;
            super::init_session(&mut conn).await?;
            Ok::<_, sqlx::Error>(conn)
        })
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.limits.connect))
        .and_then(|connected| Ok(connected?))
        .context("opening the claim's connection")?;
        // A frozen holder may have the row locked (in its window's fencing check): its
        // transaction ends within its lease, but this run does not wait for that.
        sqlx::query("SET SESSION innodb_lock_wait_timeout = 2")
            .execute(&mut conn)
            .await
            .context("claiming the job")?;
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
            if claims::take::<sqlx::MySql>(&mut tx, claim, replacing.as_deref()).await? {
                let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(lock_name(&claim.claim_id))
                    .fetch_one(&mut *tx)
                    .await
                    .context("taking the claim's named lock")?;
                if locked != Some(1) {
                    anyhow::bail!(
                        "the claim's named lock {} is taken",
                        lock_name(&claim.claim_id)
                    );
                }
                if let Err(err) = tx.commit().await {
                    let _ = conn.close().await; // and the lock with it
                    return Err(anyhow::Error::new(err).context("claiming the job"));
                }
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
        lock: Option<MySqlConnection>,
        claim: &Claim,
    ) -> anyhow::Result<()> {
        let Some(mut lock) = lock else {
            // The claim's connection is gone, and its named lock with it.
            return claims::release(&self.pool, claim).await;
        };
        claims::release(&mut lock, claim).await?;
        sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(lock_name(&claim.claim_id))
            .execute(&mut lock)
            .await
            .context("releasing the claim's named lock")?;
        lock.close().await.context("closing the claim's connection")
    }
}

/// Read the shard's claim and judge its holder: gone when its lease lapsed by the server's
/// clock, or when its claim's named lock is free (its session ended).
async fn judge_holder(conn: &mut MySqlConnection, claim: &Claim) -> anyhow::Result<Judged> {
    let Some((holder, lapsed)) = claims::holder(&mut *conn, claim).await? else {
        return Ok(Judged::Free);
    };
    if lapsed {
        return Ok(Judged::Gone(holder.claim_id));
    }
    let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(?)")
        .bind(lock_name(&holder.claim_id))
        .fetch_one(&mut *conn)
        .await
        .context("checking the holder's session")?;
    if free == Some(1) {
        return Ok(Judged::Gone(holder.claim_id));
    }
    Ok(Judged::Alive(holder))
}

/// End the window sessions of the holder this run just took the job over from. It lost its
/// lease, so it is frozen or cut off, and its transaction's rows stay locked until the server
/// ends its session (`wait_timeout`, the lease): ending it now frees them at once, as on
/// PostgreSQL. An account may end its own sessions; otherwise the server's timeouts will.
async fn end_sessions_of(conn: &mut MySqlConnection, claim_id: &str) {
    let mut ended = 0;
    for tag in session_tags(claim_id) {
        let holder: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar("SELECT IS_USED_LOCK(?)")
            .bind(&tag)
            .fetch_one(&mut *conn)
            .await;
        let killed = match holder {
            Ok(Some(id)) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                    .execute(&mut *conn)
                    .await
            }
            Ok(None) => continue,
            Err(err) => Err(err),
        };
        match killed {
            Ok(_) => ended += 1,
            Err(err) => tracing::warn!(
                error = %err,
                replaced = claim_id,
                "could not end a session of the run whose claim lapsed; the server's timeouts will"
            ),
        }
    }
    if ended > 0 {
        tracing::warn!(
            ended,
            replaced = claim_id,
            "ended the server sessions of the run whose claim lapsed"
        );
    }
}
