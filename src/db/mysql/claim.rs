//! MySQL claims: the shared claim row ([`claims`]), held with a named lock (`GET_LOCK`) on a
//! connection of the claim's own, which tells a live holder's session from a gone one, as
//! PostgreSQL's advisory lock does. A named lock belongs to its session: it is freed when the
//! session ends, and a rollback does not free it.

use anyhow::Context;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

use super::MySqlBackend;
use crate::claim::{Claim, ClaimOutcome};
use crate::db::claim_store::{self as claims, ClaimStore, SessionLock};

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

impl ClaimStore for MySqlBackend {
    /// The claim's own connection, holding its named lock.
    type Lock = MySqlConnection;
    const RENEWS_DURING_WINDOW: bool = true;

    fn claim_ahead(&self) {
        let (options, limit) = (Arc::clone(&self.options), self.limits.connect);
        self.claim_ahead
            .start(async move { connect(&options, limit).await });
    }

    /// The claim ([`claims::take_locked`]), on a connection of its own that lives as long as the
    /// claim and holds its named lock.
    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<MySqlConnection>> {
        let connecting = connect(&self.options, self.limits.connect);
        let conn = self.claim_ahead.take_or(connecting).await?;
        claims::take_locked::<sqlx::MySql>(conn, claim).await
    }

    async fn renew_claim(&self, lock: &mut MySqlConnection, claim: &Claim) -> anyhow::Result<bool> {
        claims::renew(lock, claim).await
    }

    async fn release_claim(
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

    fn lock_wait(&self, _err: &anyhow::Error) -> Option<std::time::Duration> {
        // Row-lock waits end by innodb_lock_wait_timeout (the lease), reported as failures.
        None
    }
}

/// A claim's own connection, its session set up, or why it could not be opened within `limit`.
async fn connect(
    options: &MySqlConnectOptions,
    limit: std::time::Duration,
) -> anyhow::Result<MySqlConnection> {
    let connecting = async {
        let mut conn = MySqlConnection::connect_with(options).await?;
        super::init_session(&mut conn).await?;
        Ok(conn)
    };
    claims::claim_connection(limit, connecting).await
}

impl SessionLock for sqlx::MySql {
    /// Session-wide (MySQL has no per-transaction setting), on the claim's own connection.
    async fn bound_waits(tx: &mut MySqlConnection) -> anyhow::Result<()> {
        sqlx::query("SET SESSION innodb_lock_wait_timeout = 2")
            .execute(tx)
            .await?;
        Ok(())
    }

    /// A named lock is not transactional: it stays if the transaction rolls back, until the
    /// connection closes, which is what becomes of the claim's connection when the claim fails.
    async fn lock(tx: &mut MySqlConnection, claim_id: &str) -> anyhow::Result<()> {
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(lock_name(claim_id))
            .fetch_one(tx)
            .await?;
        anyhow::ensure!(
            locked == Some(1),
            "the claim's named lock {} is taken",
            lock_name(claim_id)
        );
        Ok(())
    }

    async fn is_free(conn: &mut MySqlConnection, claim_id: &str) -> anyhow::Result<bool> {
        let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(?)")
            .bind(lock_name(claim_id))
            .fetch_one(conn)
            .await?;
        Ok(free == Some(1))
    }

    /// Its transaction's rows stay locked until the server ends its session (`wait_timeout`,
    /// the lease): ending it now frees them at once, as on PostgreSQL. An account may end its
    /// own sessions; otherwise the server's timeouts will.
    async fn end_sessions_of(conn: &mut MySqlConnection, claim_id: &str) {
        let mut ended = 0;
        for tag in session_tags(claim_id) {
            let holder: Result<Option<i64>, sqlx::Error> =
                sqlx::query_scalar("SELECT IS_USED_LOCK(?)")
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
}
