//! The one seam between SQLite, PostgreSQL and MySQL.
//!
//! [`Backend`] is everything a run needs from a database, and [`WindowTx`] what it does inside a
//! window's transaction; [`sqlite`], [`postgres`] and [`mysql`] implement them, each split by
//! concern (`read`, `write`, `ledger`, `claim`). SQL that is the same in every dialect is written once,
//! over [`dialect::Dialect`]: the ledger and watermarks ([`ledger`]), the claims ([`claims`]), the
//! profiles ([`profiles`]) and the migration checks ([`migrate`]). The backend is picked once from the URL scheme
//! ([`connect`]), and everything above is generic over it (see [`with_backend!`](crate::with_backend)), so no
//! `if postgres` is scattered through the run logic.

mod claims;
mod dialect;
mod ledger;
mod migrate;
pub mod mysql;
pub mod postgres;
mod profiles;
pub(crate) mod reference;
pub mod sqlite;

pub use ledger::{JobHealth, Replace, ShardWatermark};
pub use profiles::StoredReference;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use self::dialect::Dialect;
use crate::claim::{Claim, ClaimOutcome};
use crate::error::{ConfigError, Unreachable, Unresponsive};
use crate::features::BadRow;
use crate::ident::TableName;
use crate::ledger::RunRecord;
use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::shard::Shard;
use crate::sink::{ResultsTable, RunStamp, ScoredChunk, Written};
use crate::source::{ColumnKind, SourceChunk, SourceShape};
use crate::spec::JobSpec;

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

/// What a run needs from a database. Futures are `Send` so runs can be spawned on the runtime.
pub(crate) trait Backend: Clone + Send + Sync + 'static {
    /// The database's dialect, for the SQL written once for every backend.
    type Db: Dialect;
    /// The window's transaction: results, the ledger and the watermark commit in it, or not at all.
    type Tx: WindowTx;
    /// What keeps a claim held besides its row (PostgreSQL: the advisory lock's connection).
    type Lock: Send + Sync + 'static;
    /// Whether the claim's lease can be renewed while a window's transaction is open (it cannot
    /// on SQLite, whose one write lock the window holds).
    const RENEWS_DURING_WINDOW: bool;

    /// The pool, for the statements written once for every backend.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// batchscore's own migrations for this database, embedded in the binary.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Apply batchscore's own migrations, after checking those already applied are the ones
    /// shipped (see [`migrate`]). With nothing pending it writes nothing, so a role without
    /// CREATE can run jobs.
    fn migrate(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        migrate::migrate(self.pool(), Self::migrator())
    }

    /// The source's columns and their kinds. The inner error says what is wrong with the source
    /// (no such table, a query that does not run): a configuration error. The outer one is the
    /// database failing to answer (a dropped connection), which a retry may fix.
    fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = anyhow::Result<Result<Vec<(String, ColumnKind)>, String>>> + Send;

    /// Whether a column of this kind can hold the times a window slices on.
    fn timestamp_ok(kind: &ColumnKind) -> bool;

    /// The columns of an existing table and their declared types, or `None` if there is no
    /// such table.
    fn table_columns(
        &self,
        table: &TableName,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<(String, String)>>>> + Send;

    /// What `jobs validate` should say about what a window costs: a table without an index
    /// whose first column is the timestamp (with the `CREATE INDEX` to run), a query that does
    /// not take the window, timestamps the index cannot find. Empty when a window's cost follows
    /// its rows.
    fn window_notes(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;

    /// What `jobs new` guesses a job from: the source's single-column primary key, and the
    /// columns that can hold its timestamps, in column order, each with whether an index starts
    /// with it. `columns` is the source as [`Backend::describe_source`] described it.
    fn source_hints(
        &self,
        spec: &JobSpec,
        columns: &[(String, ColumnKind)],
    ) -> impl Future<Output = anyhow::Result<SourceHints>> + Send;

    /// How many of the shard's source rows fall in the window (for `--dry-run`).
    fn count_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// Stream the shard's rows of the window into `out`, `spec.source.chunk_rows` at a time, for
    /// the run holding `claim` (PostgreSQL tags the session with it, see [`Backend::begin`]).
    /// The shard's condition on the key ([`Shard::predicate`]) is part of the query: a shard
    /// reads only its own rows.
    fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
        claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Open the window's write transaction for the run holding `claim`. No statement in it may
    /// wait longer than the lease, nor may it sit idle longer (PostgreSQL ends it on the server).
    /// PostgreSQL also tags the session with the claim id, so a run that takes the job over
    /// from a frozen holder can end that holder's sessions, whatever they are waiting on (see
    /// [`Backend::claim`]).
    fn begin(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<Self::Tx>> + Send;

    /// Record a run in the ledger outside any window transaction: as started (committed at
    /// once, so even a crashed run leaves a trace), as skipped, or as failed after its window
    /// was rolled back ([`Replace::IfRunning`]).
    fn record_run(
        &self,
        run: &RunRecord,
        replace: Replace,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        ledger::record_run(Self::Db::on_pool(self.pool()), run, replace)
    }

    /// Mark the shard's rows still `running` as `abandoned`: called by the shard's claim's new
    /// holder, so whoever left them is gone. Returns how many.
    fn abandon_runs(
        &self,
        job: &str,
        shard: Shard,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send {
        ledger::abandon_runs(Self::Db::on_pool(self.pool()), job, shard)
    }

    /// The shard's watermark: the end of its last committed window.
    fn watermark(
        &self,
        job: &str,
        shard: Shard,
    ) -> impl Future<Output = anyhow::Result<Option<DateTime<Utc>>>> + Send {
        ledger::watermark(Self::Db::on_pool(self.pool()), job, shard)
    }

    /// The watermarks of one job or every job, by job and shard.
    fn watermarks(
        &self,
        job: Option<&str>,
    ) -> impl Future<Output = anyhow::Result<Vec<ShardWatermark>>> + Send {
        ledger::watermarks(Self::Db::on_pool(self.pool()), job)
    }

    /// Set a shard's watermark to any time (the explicit `watermark set` command).
    fn set_watermark(
        &self,
        job: &str,
        shard: Shard,
        to: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        ledger::set_watermark(Self::Db::on_pool(self.pool()), job, shard, to)
    }

    /// Move the job to `count` shards, every one at `at`, in one transaction, provided its
    /// watermarks are still `expected` (what the caller checked were level): the `reshard`
    /// command, run while it holds every old shard's claim. Returns false, changing nothing,
    /// when they moved meanwhile.
    fn reshard(
        &self,
        job: &str,
        expected: &[ShardWatermark],
        count: u32,
        at: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async move {
            let mut tx = self.pool().begin().await.context("resharding")?;
            let now = ledger::watermarks(Self::Db::on_conn(&mut *tx), Some(job)).await?;
            if now != expected {
                return Ok(false);
            }
            ledger::clear_watermarks(Self::Db::on_conn(&mut *tx), job).await?;
            for shard in Shard::all(count) {
                ledger::set_watermark(Self::Db::on_conn(&mut *tx), job, shard, at).await?;
            }
            tx.commit().await.context("resharding")?;
            Ok(true)
        }
    }

    /// Claim the job for one run, or say who holds it.
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

    /// Every job's health as the ledger says, counting what started since `since`.
    fn health(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<Vec<JobHealth>>> + Send {
        ledger::health(self.pool(), since)
    }

    /// The jobs running now (a shard's claim is held).
    fn running_jobs(&self) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send {
        ledger::running_jobs(Self::Db::on_pool(self.pool()))
    }

    /// The merged profile of `job`'s committed windows inside `[from, to)`, and how many
    /// windows it merges.
    fn merged_profiles(
        &self,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<(Profile, u64)>> + Send {
        profiles::merged_profiles(Self::Db::on_pool(self.pool()), job, from, to)
    }

    /// The range of `job`'s latest profiled window.
    fn latest_profiled_window(
        &self,
        job: &str,
    ) -> impl Future<Output = anyhow::Result<Option<Window>>> + Send {
        profiles::latest_window(Self::Db::on_pool(self.pool()), job)
    }

    /// The reference `monitor set-reference` stored for `job`, if any.
    fn stored_reference(
        &self,
        job: &str,
    ) -> impl Future<Output = anyhow::Result<Option<StoredReference>>> + Send {
        profiles::stored_reference(Self::Db::on_pool(self.pool()), job)
    }

    /// Store `job`'s reference (merged from `windows` windows in a range), or remove it.
    fn store_reference(
        &self,
        job: &str,
        reference: Option<(Window, u64, &Profile)>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            let mut tx = self.pool().begin().await?;
            profiles::store_reference::<Self::Db>(&mut tx, job, reference).await?;
            tx.commit().await.context("committing the reference")
        }
    }

    /// The latest runs, newest first, of one job or all.
    fn recent_runs(
        &self,
        job: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = anyhow::Result<Vec<RunRecord>>> + Send {
        ledger::recent_runs(Self::Db::on_pool(self.pool()), job, limit)
    }
}

/// The window's transaction, and everything done in it: the results, the quarantine, the
/// ledger row, the watermark and the fencing check commit together or not at all.
pub(crate) trait WindowTx: Send + Sized {
    type Db: Dialect;

    /// The transaction itself, for the statements written once for every backend.
    fn tx(&mut self) -> &mut sqlx::Transaction<'static, Self::Db>;

    fn into_tx(self) -> sqlx::Transaction<'static, Self::Db>;

    /// The results table's column definitions, in this dialect: key, outputs, then the stamp.
    fn results_columns(table: &ResultsTable) -> Vec<String>;

    /// Whether a column declared as `declared` (the type's name as [`Backend::table_columns`]
    /// and [`WindowTx::pin_results_table`] describe it) can hold `value`.
    fn holds(declared: &str, value: Written) -> bool;

    /// The results table's columns and declared types as this transaction sees them, after
    /// taking the lock its writes take (so no `ALTER TABLE` changes them before the commit);
    /// `None` if there is no such table.
    fn pin_results_table(
        &mut self,
        table: &TableName,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<(String, String)>>>> + Send;

    /// Before creating the results table: wait for any other window creating it to commit (the
    /// shards of a new job all start by creating it). SQLite's write lock already does.
    fn before_create(
        &mut self,
        _table: &ResultsTable,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Create the results table (`CREATE TABLE IF NOT EXISTS`).
    fn create_results_table(
        &mut self,
        table: &ResultsTable,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            self.before_create(table).await?;
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
                table.table.quoted(),
                Self::results_columns(table).join(",\n  ")
            );
            dialect::execute(Self::Db::on_conn(&mut **self.tx()), sql, vec![])
                .await
                .with_context(|| format!("creating results table {}", table.table))?;
            Ok(())
        }
    }

    /// Insert or replace (by key) one scored chunk of `shard`'s rows (only its keys can be in the
    /// chunk: a backend looking for them in the table may skip the other shards').
    fn upsert_results(
        &mut self,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
        shard: Shard,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether the job has rows in the quarantine (a row scored later then leaves it).
    fn has_quarantined(&mut self, job: &str) -> impl Future<Output = anyhow::Result<bool>> + Send {
        ledger::has_quarantined(Self::Db::on_conn(&mut **self.tx()), job)
    }

    /// Put bad rows in the quarantine, replacing earlier entries of the same keys.
    fn quarantine(
        &mut self,
        job: &str,
        stamp: &RunStamp,
        rows: &[BadRow],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Take rows that were just scored out of the quarantine.
    fn release_quarantined(
        &mut self,
        job: &str,
        keys: Vec<String>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Record a run in the ledger: how the window ended, or a range a `latest` catch-up skipped.
    fn record_run(&mut self, run: &RunRecord) -> impl Future<Output = anyhow::Result<()>> + Send {
        ledger::record_run(Self::Db::on_conn(&mut **self.tx()), run, Replace::Always)
    }

    /// Write the window's profile (replacing the shard's earlier profiles of the same range).
    fn record_profile(
        &mut self,
        run_id: &str,
        job: &str,
        shard: Shard,
        window: Window,
        profile: &Profile,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        profiles::record_profile::<Self::Db>(&mut **self.tx(), run_id, job, shard, window, profile)
    }

    /// Move the shard's watermark from `from` to `to`, only if it is still `from` and the job
    /// still has `shard.count` shards (compare-and-set). Returns false when another run moved
    /// it first, or the job was resharded.
    fn advance_watermark(
        &mut self,
        job: &str,
        shard: Shard,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        run_id: &str,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send {
        ledger::advance_watermark(
            Self::Db::on_conn(&mut **self.tx()),
            job,
            shard,
            from,
            to,
            run_id,
        )
    }

    /// The fencing check, just before the commit: renew the claim if this run still holds it,
    /// and say whether it does. A run superseded while paused then commits nothing, backfills
    /// included (which move no watermark to compare-and-set). The renewal locks the claim's row
    /// until the commit, so a takeover waits for it, then sees the lease renewed.
    fn fence(&mut self, claim: &Claim) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async move {
            claims::renew(Self::Db::on_conn(&mut **self.tx()), claim)
                .await
                .context("checking this run still holds the claim")
        }
    }

    fn commit(self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            self.into_tx()
                .commit()
                .await
                .context("committing the window")
        }
    }
}

/// What a source's catalog says that a job file needs (see [`Backend::source_hints`]).
#[derive(Debug, Clone, Default)]
pub struct SourceHints {
    pub primary_key: Option<String>,
    /// Columns that can hold the window's timestamps, and whether an index starts with each.
    pub times: Vec<(String, bool)>,
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

/// A source table described by its declared columns (none: there is no such table). The inner
/// error is a configuration error, worded; the outer one, the database failing to answer.
fn described_table(
    table: &TableName,
    declared: Result<Vec<(String, ColumnKind)>, sqlx::Error>,
    transient: fn(&sqlx::Error) -> bool,
) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, String>> {
    match declared {
        Ok(columns) if columns.is_empty() => {
            Ok(Err(format!("source table {table} does not exist")))
        }
        Ok(columns) => Ok(Ok(columns)),
        Err(e) if transient(&e) => Err(e.into()),
        Err(e) => Ok(Err(format!("cannot describe source table {table}: {e}"))),
    }
}

/// The columns of `sql` (a `SELECT … LIMIT 0`) as the database describes them, each kind by
/// `classify` from its type's name. The inner error is the statement's own (it does not run: a
/// configuration error, worded by the caller); the outer one, the database failing to answer.
async fn describe_select<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sql: String,
    classify: fn(&str) -> ColumnKind,
    transient: fn(&sqlx::Error) -> bool,
) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, sqlx::Error>> {
    use sqlx::{Column, Executor, SqlSafeStr, TypeInfo};
    match DB::on_pool(pool)
        .describe(sqlx::AssertSqlSafe(sql).into_sql_str())
        .await
    {
        Ok(described) => Ok(Ok(described
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
            .collect())),
        Err(e) if transient(&e) => Err(e.into()),
        Err(e) => Ok(Err(e)),
    }
}

/// The time columns among a source's `columns`, each with whether an index starts with it
/// (`indexed`): what `jobs new` picks a job's timestamp from (see [`SourceHints::times`]).
fn indexed_times(columns: &[(String, ColumnKind)], indexed: &[String]) -> Vec<(String, bool)> {
    columns
        .iter()
        .filter(|(_, kind)| *kind == ColumnKind::Timestamp)
        .map(|(name, _)| (name.clone(), indexed.contains(name)))
        .collect()
}

/// The note for a `source.query` whose window, as the database plans it, reads all of `table`.
fn query_scan_note(spec: &JobSpec, table: &str) -> String {
    format!(
        "source.query reads all of {table} for every window, whatever the window's size: index the \
         column it takes {ts} from, or push the window into the query (`WHERE … >= :window_start \
         AND … < :window_end` on an indexed column)",
        ts = spec.source.timestamp
    )
}

/// The note for a source table without an index on its timestamp column.
fn missing_index_note(table: &TableName, timestamp: &str, create: &str) -> String {
    format!(
        "{table} has no index whose first column is {timestamp}: every window reads the whole \
         table, so runs slow down as it grows. Create one: {create}"
    )
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
