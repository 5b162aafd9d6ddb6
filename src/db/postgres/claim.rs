//! PostgreSQL claims: the shared claim row ([`claims`]), held with a session advisory lock on a
//! connection of the claim's own, which tells a live holder's session from a gone one, and the
//! ending of a superseded holder's window sessions.

use anyhow::Context;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::PostgresBackend;
use crate::claim::{Claim, ClaimOutcome};
use crate::db::claim_store::{self as claims, ClaimStore, SessionLock};

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

impl ClaimStore for PostgresBackend {
    /// The claim's own connection, holding its advisory lock.
    type Lock = PgConnection;
    const RENEWS_DURING_WINDOW: bool = true;

    fn claim_ahead(&self) {
        let (options, limit) = (Arc::clone(&self.options), self.limits.connect);
        self.claim_ahead.start(async move {
            claims::claim_connection(limit, PgConnection::connect_with(&options)).await
        });
    }

    /// The claim ([`claims::take_locked`]), on a connection of its own that lives as long as the
    /// claim and holds its advisory lock.
    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<PgConnection>> {
        let connecting = PgConnection::connect_with(&self.options);
        let connecting = claims::claim_connection(self.limits.connect, connecting);
        let conn = self.claim_ahead.take_or(connecting).await?;
        claims::take_locked::<sqlx::Postgres>(conn, claim).await
    }

    async fn renew_claim(&self, lock: &mut PgConnection, claim: &Claim) -> anyhow::Result<bool> {
        claims::renew(lock, claim).await
    }

    async fn release_claim(&self, lock: Option<PgConnection>, claim: &Claim) -> anyhow::Result<()> {
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

    fn lock_wait(&self, _err: &anyhow::Error) -> Option<std::time::Duration> {
        // Waits on row locks end by statement_timeout or lock_timeout, reported as failures.
        None
    }
}

impl SessionLock for sqlx::Postgres {
    async fn bound_waits(tx: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("SELECT set_config('lock_timeout', '2s', true)")
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn lock(tx: &mut PgConnection, claim_id: &str) -> anyhow::Result<()> {
        sqlx::query(LOCK_CLAIM).bind(claim_id).execute(tx).await?;
        Ok(())
    }

    async fn is_free(conn: &mut PgConnection, claim_id: &str) -> anyhow::Result<bool> {
        let free: bool = sqlx::query_scalar(TRY_LOCK_CLAIM)
            .bind(claim_id)
            .fetch_one(&mut *conn)
            .await?;
        if free {
            sqlx::query(UNLOCK_CLAIM)
                .bind(claim_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(free)
    }

    /// The server has not ended the superseded holder's sessions because they are waiting on
    /// the client (a statement mid-COPY is not subject to `statement_timeout`). A role that may
    /// not signal them leaves them to the server's own timeouts.
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
}
