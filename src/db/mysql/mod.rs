//! MySQL and MariaDB, where many application servers keep their data: [`Backend`] for a
//! server many machines share, like PostgreSQL.
//!
//! [`read`] is the [`SourceReader`](crate::db::SourceReader), streaming a window out of the
//! source (an unbuffered result, row by row off the socket); [`write`](mod@write) the window's
//! transaction (`INSERT … SELECT … FROM JSON_TABLE(?) … ON DUPLICATE KEY UPDATE`); [`claim`] the
//! [`ClaimStore`](crate::db::ClaimStore), holding a job with a named lock (`GET_LOCK`) beside the
//! claim row (and ending a superseded holder's window sessions, tagged with named locks of their
//! own); and [`dialect`] the [`Dialect`](crate::db::dialect::Dialect) of the SQL shared with the
//! other databases.
//!
//! Every session runs with `time_zone = '+00:00'` (so `TIMESTAMP` columns read as UTC and
//! `DATETIME` columns are taken as UTC), READ COMMITTED (the compare-and-set of watermarks and
//! claims, as on PostgreSQL, without gap locks), `STRICT_ALL_TABLES`, and without
//! `ANSI_QUOTES` and `IGNORE_SPACE`, whatever the server's defaults.

mod claim;
mod dialect;
mod read;
mod write;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
};
use sqlx::{ConnectOptions, Executor};

use super::claim_store::ClaimAhead;
use super::{Backend, Limits};
use crate::claim::Claim;

#[derive(Clone)]
pub struct MySqlBackend {
    pool: MySqlPool,
    /// For the claim's own connection, outside the pool (see [`ClaimStore::claim`](crate::db::ClaimStore::claim)).
    options: Arc<MySqlConnectOptions>,
    limits: Limits,
    claim_ahead: ClaimAhead<sqlx::mysql::MySqlConnection>,
}

/// The session settings batchscore relies on, whatever the server's defaults: see the module's
/// documentation.
const SESSION: [&str; 2] = [
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(TRIM(BOTH ',' FROM REPLACE(REPLACE(\
     CONCAT(',', @@SESSION.sql_mode, ','), ',ANSI_QUOTES,', ','), ',IGNORE_SPACE,', ',')), ''), \
     'STRICT_ALL_TABLES')",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// Set up a new session (the pool's and the claim's own).
async fn init_session(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    for statement in SESSION {
        conn.execute(statement).await?;
    }
    Ok(())
}

/// For a window's session (closed with the window): no wait for a row lock or a table's
/// metadata lock, and no idle spell, lasts longer than the claim's lease.
async fn bound_lock_waits(conn: &mut MySqlConnection, claim: &Claim) -> Result<(), sqlx::Error> {
    let seconds = claim.lease().as_secs().max(1);
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET SESSION innodb_lock_wait_timeout = {seconds}, SESSION lock_wait_timeout = {seconds}, \
         SESSION wait_timeout = {seconds}"
    )))
    .await?;
    Ok(())
}

impl MySqlBackend {
    /// `mysql://…` (or `mariadb://…`, the same driver).
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_owned(),
        };
        let options = MySqlConnectOptions::from_str(&url)?
            // Whatever the URL asks: times are UTC both ways (see the module's documentation).
            .timezone(Some("+00:00".to_owned()))
            // `||` keeps MySQL's meaning in a job's query.
            .pipes_as_concat(false)
            .charset("utf8mb4")
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(limits.connections)
            .acquire_timeout(limits.connect)
            .after_connect(|conn, _| Box::pin(init_session(conn)))
            .connect_with(options.clone());
        let pool = super::first_connection(pool, options.connect()).await?;
        Ok(MySqlBackend {
            pool,
            options: Arc::new(options),
            limits,
            claim_ahead: ClaimAhead::default(),
        })
    }
}

/// Whether an error may go away by itself: the network, a timeout, a server that is starting,
/// shutting down or out of connections (for everyone: 1040; for the account: 1203
/// `max_user_connections`, 1226 its resource limits), a lock wait that timed out, a deadlock, a
/// session ended by the server (SQLSTATE class 08, and MySQL's error numbers for the rest).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err)
        || matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code.starts_with("08"))
            || db.try_downcast_ref::<MySqlDatabaseError>().is_some_and(|e| {
                matches!(
                    e.number(),
                    1040 | 1053 | 1203 | 1205 | 1213 | 1226 | 1317 | 1927 | 1969 | 3024
                )
            }))
}

impl Backend for MySqlBackend {
    type Db = sqlx::MySql;

    fn pool(&self) -> &sqlx::Pool<sqlx::MySql> {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");
        &MIGRATOR
    }
}
