//! The one seam between SQLite, PostgreSQL and MySQL.
//!
//! [`Backend`] is a database batchscore runs on, made of small traits by concern:
//! [`SourceReader`] (`source`), [`ClaimStore`] (`claim_store`), and [`ResultsSink`] with the
//! window's [`WindowTx`] (`window_tx`). [`sqlite`], [`postgres`] and [`mysql`] implement each in
//! the file of that concern (`read.rs`, `claim.rs`, `write.rs`; `dialect.rs` is the database's
//! [`Dialect`]). SQL that is the same in every dialect is written once, as plain functions over
//! the dialect: the ledger and watermarks ([`ledger`]), the claims table ([`claim_store`]), the
//! profiles ([`profiles`]) and the migration checks ([`mod@migrate`]). The backend is picked once
//! from the URL scheme ([`connect`]), and everything above is generic over it (see
//! [`with_backend!`](crate::with_backend)), so no `if postgres` is scattered through the run
//! logic.

pub(crate) mod alerts;
pub(crate) mod claim_store;
#[cfg(test)]
mod conformance;
pub(crate) mod dialect;
pub(crate) mod ledger;
pub(crate) mod lineage;
mod migrate;
pub mod mysql;
pub(crate) mod paired;
pub(crate) mod performance;
pub mod postgres;
pub(crate) mod profiles;
pub(crate) mod prune;
pub(crate) mod source;
pub mod sqlite;
pub(crate) mod window_tx;

pub(crate) use claim_store::ClaimStore;
pub use ledger::{Replace, ShardHealth, ShardWatermark};
pub(crate) use source::{SourceHints, SourceReader};
pub(crate) use window_tx::{ResultsSink, WindowTx, discard_run};

use std::future::Future;
use std::time::Duration;

use self::dialect::Dialect;
use crate::error::{ConfigError, Unreachable, Unresponsive};

/// How long to wait for a pooled connection (or the server) before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a SQLite run waits for another connection's write lock.
const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long any one wait on the database may last, and how many connections a process keeps.
/// Runs derive the waits from their lease, so a silent database or a frozen peer holds a run up
/// for about one lease, not forever.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting, or getting a pooled connection.
    pub connect: Duration,
    /// SQLite: waiting for another connection's write lock. Shorter than the lease, so the wait
    /// ends as "locked" (exit 75), not as an unanswered step.
    pub busy: Duration,
    /// The pool's size: see [`Limits::for_runs`].
    pub connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: CONNECT_TIMEOUT,
            busy: MAX_BUSY_TIMEOUT,
            connections: Limits::connections_for(1),
        }
    }
}

impl Limits {
    /// The limits of a run holding a claim with this lease: no wait outlasts it.
    pub fn for_lease(lease: chrono::TimeDelta) -> Limits {
        let lease = lease.to_std().unwrap_or(Duration::ZERO);
        Limits {
            connect: CONNECT_TIMEOUT.min(lease),
            busy: MAX_BUSY_TIMEOUT.min(lease / 2),
            ..Limits::default()
        }
    }

    /// Room in the pool for `runs` runs at once (the daemon's `--max-concurrent`). A window
    /// holds two pooled connections from its start to its commit, its reader's and its
    /// transaction's, and writes to the ledger beside them on a third; with fewer, runs at once
    /// each hold one and wait for their second until they time out. (PostgreSQL and MySQL
    /// claims hold a connection of their own, outside the pool.)
    pub fn for_runs(self, runs: usize) -> Limits {
        Limits {
            connections: Limits::connections_for(runs),
            ..self
        }
    }

    fn connections_for(runs: usize) -> u32 {
        let runs = u32::try_from(runs.max(1)).unwrap_or(u32::MAX / 4);
        (2 * runs + 2).max(4)
    }
}

/// `future`, or [`Unresponsive`] if the database has not answered it within `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Unresponsive {
            what: what.to_owned(),
            waited: limit,
        }
        .into()),
    }
}

/// A database batchscore runs on: its pool and migrations, and the small traits of each
/// concern, each implemented in the backend's file of that concern: reading the source
/// (`read.rs`), holding claims (`claim.rs`), and the window's transaction (`write.rs`). What
/// every dialect shares is plain SQL over [`Dialect`]: the ledger and watermarks ([`ledger`]),
/// profiles ([`profiles`]), the claims table ([`claim_store`]) and migrations ([`mod@migrate`]).
/// Futures are `Send` so runs can be spawned on the runtime.
pub(crate) trait Backend:
    SourceReader + ClaimStore + ResultsSink<Tx: WindowTx<Db = Self::Db>> + Clone + Send + Sync + 'static
{
    /// The database's dialect, for the SQL written once for every backend.
    type Db: Dialect;

    /// The pool, for the statements written once for every backend.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// batchscore's own migrations for this database, embedded in the binary.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Stream the rows of a `SELECT` written for every dialect (`$N` placeholders bound to
    /// `params`), whose columns are named `c0`, `c1`, … and read as `kinds` say, to `each`, one
    /// row of borrowed [`Field`]s at a time: for reads too long to hold (realized performance's
    /// join). sqlx's rows by default; a backend whose driver copies each value (SQLite) steps
    /// the statement itself.
    fn stream_fields(
        &self,
        sql: String,
        params: Vec<dialect::Param>,
        kinds: &[FieldKind],
        each: &mut (dyn FnMut(&[Field<'_>]) -> anyhow::Result<()> + Send),
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        dialect::stream_fields::<Self::Db>(self.pool(), sql, params, kinds, each)
    }
}

/// The most columns [`Backend::stream_fields`] reads.
pub(crate) const MAX_FIELDS: usize = 8;

/// How [`Backend::stream_fields`] reads a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Int,
    Float,
    Text,
}

/// One value of a streamed row, borrowed from the driver where it can be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a str),
}

/// Apply batchscore's own migrations, after checking those already applied are the ones
/// shipped (see [`mod@migrate`]). With nothing pending it writes nothing, so a role without CREATE
/// can run jobs.
pub(crate) async fn migrate<B: Backend>(db: &B) -> anyhow::Result<()> {
    migrate::migrate(db.pool(), B::migrator()).await
}

/// A connected database, either kind.
#[derive(Clone)]
pub enum Database {
    Sqlite(sqlite::SqliteBackend),
    Postgres(postgres::PostgresBackend),
    Mysql(mysql::MySqlBackend),
}

/// Run `$body` with `$backend` bound to the concrete backend inside `$db`.
#[macro_export]
macro_rules! with_backend {
    ($db:expr, $backend:ident => $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($backend) => $body,
            $crate::db::Database::Postgres($backend) => $body,
            $crate::db::Database::Mysql($backend) => $body,
        }
    };
}

/// Connect to `url` (`sqlite://…`, `postgres://…` or `mysql://…`) with the default [`Limits`].
pub async fn connect(url: &str) -> anyhow::Result<Database> {
    connect_with(url, Limits::default()).await
}

/// The server a URL names, by its scheme.
#[derive(Clone, Copy, PartialEq)]
enum Scheme {
    Sqlite,
    Postgres,
    Mysql,
}

impl Scheme {
    fn of(url: &str) -> Option<Scheme> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Scheme::Sqlite),
            "postgres" | "postgresql" => Some(Scheme::Postgres),
            "mysql" | "mariadb" => Some(Scheme::Mysql),
            _ => None,
        }
    }

    /// The URL parameters that choose TLS and the CA, as this server's driver names them.
    fn tls_parameters(self) -> &'static str {
        match self {
            Scheme::Mysql => "ssl-mode and ssl-ca",
            _ => "sslmode and sslrootcert",
        }
    }
}

/// Connect to `url` with these [`Limits`]. A wrong URL, credentials or database name is a
/// configuration error (exit 2); a server that is down or does not answer is [`Unreachable`]
/// (exit 1: the next run may succeed).
pub async fn connect_with(url: &str, limits: Limits) -> anyhow::Result<Database> {
    let refused = |problem: String| -> anyhow::Error {
        ConfigError::Database {
            target: redact(url),
            problem,
        }
        .into()
    };
    let Some(scheme) = Scheme::of(url) else {
        return Err(refused(
            "the URL must start with sqlite://, postgres:// or mysql:// (set --database-url or DATABASE_URL)"
                .to_owned(),
        ));
    };
    if let Some(problem) = unreadable_certificate(url, scheme) {
        return Err(refused(problem));
    }
    let failed = |e: sqlx::Error, transient: fn(&sqlx::Error) -> bool| -> anyhow::Error {
        let problem = connect_problem(&e, scheme);
        match transient(&e) {
            true => Unreachable {
                target: redact(url),
                problem,
            }
            .into(),
            false => refused(problem),
        }
    };
    match scheme {
        Scheme::Sqlite => sqlite::SqliteBackend::connect(url, limits)
            .await
            .map(Database::Sqlite)
            .map_err(|e| failed(e, sqlite::is_transient)),
        Scheme::Postgres => postgres::PostgresBackend::connect(url, limits)
            .await
            .map(Database::Postgres)
            .map_err(|e| failed(e, postgres::is_transient)),
        Scheme::Mysql => mysql::MySqlBackend::connect(url, limits)
            .await
            .map(Database::Mysql)
            .map_err(|e| failed(e, mysql::is_transient)),
    }
}

/// The pool, or why its first connection failed. sqlx retries a refused connection until its
/// acquire timeout (the server may be starting), then says only "pool timed out"; so once the
/// pool has taken longer than a healthy server does, one attempt beside it says why at once: a
/// refused connection is reported as refused, in a fraction of a second, and the next run tries
/// again. A server that answers it lets the pool go on.
async fn first_connection<P, C>(
    pool: impl Future<Output = Result<P, sqlx::Error>>,
    probe: impl Future<Output = Result<C, sqlx::Error>>,
) -> Result<P, sqlx::Error> {
    const HEALTHY: Duration = Duration::from_millis(250);
    let mut pool = std::pin::pin!(pool);
    if let Ok(connected) = tokio::time::timeout(HEALTHY, &mut pool).await {
        return connected;
    }
    tokio::select! {
        connected = &mut pool => connected,
        probed = probe => match probed {
            Err(why) => Err(why),
            Ok(_) => pool.await,
        },
    }
}

/// A CA, certificate or key file the URL (or PostgreSQL's `PGSSL*` variables) names that cannot
/// be read. The driver would report it as an I/O error, which reads like a network failure
/// (exit 1, retried); it is a setting to fix. Not checked where the URL turns TLS off.
fn unreadable_certificate(url: &str, scheme: Scheme) -> Option<String> {
    const FILES: [&str; 8] = [
        "sslrootcert",
        "ssl-root-cert",
        "ssl-ca",
        "sslca",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
    ];
    if scheme == Scheme::Sqlite {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let tls_off = pairs.iter().any(|(k, v)| {
        matches!(k.as_str(), "sslmode" | "ssl-mode")
            && matches!(v.to_ascii_lowercase().as_str(), "disable" | "disabled")
    });
    if tls_off {
        return None;
    }
    let mut named: Vec<(String, String)> = Vec::new();
    if scheme == Scheme::Postgres {
        for variable in ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
            if let Ok(value) = std::env::var(variable) {
                named.push((variable.to_owned(), value));
            }
        }
    }
    named.extend(
        pairs
            .into_iter()
            .filter(|(k, _)| FILES.contains(&k.as_str())),
    );
    named.into_iter().find_map(|(name, value)| {
        // The driver takes PEM text itself as well as a path.
        let pem = value.trim().starts_with("-----BEGIN");
        let unreadable = std::fs::File::open(&value).err().filter(|_| !pem)?;
        Some(format!(
            "{name}: cannot read {value}: {unreadable} (README, TLS)"
        ))
    })
}

/// What went wrong connecting, with what to change where the driver's words do not say.
fn connect_problem(e: &sqlx::Error, scheme: Scheme) -> String {
    match e {
        e if is_tls_failure(e) => format!(
            "{e} (check the URL's {}: README, TLS)",
            scheme.tls_parameters()
        ),
        // sqlx's own words name a cargo feature of its own: what the user can change is the
        // server's TLS or the account.
        sqlx::Error::Configuration(inner)
            if scheme == Scheme::Mysql && inner.to_string().contains("RSA") =>
        {
            "the account uses caching_sha2_password (MySQL 8's default) or sha256_password, \
             whose first login needs TLS: keep the server's TLS on and the URL's ssl-mode at PREFERRED or above, \
             or use a mysql_native_password account (README, TLS)"
                .to_owned()
        }
        _ => e.to_string(),
    }
}

/// Whether a database error may go away by itself (the network, a timeout, a pool), as far as
/// any backend can tell; each backend adds what its error codes say.
fn is_transient_io(err: &sqlx::Error) -> bool {
    !is_tls_failure(err)
        && matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        )
}

/// Whether TLS failed: a certificate that does not verify, a name it does not hold, a server or
/// client that cannot agree. Settings to fix, not a network to wait for (sqlx reports rustls'
/// refusals during the handshake as I/O errors).
fn is_tls_failure(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}

/// The URL with any password replaced, safe for logs, errors and output.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://scorer:s3cret@db:5432/app"),
            "postgres://scorer:***@db:5432/app"
        );
        assert_eq!(redact("sqlite://batchscore.db"), "sqlite://batchscore.db");
        assert!(!redact("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }
}
