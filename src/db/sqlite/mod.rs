//! SQLite, the embedded default: [`Backend`] for a database file on this machine.
//!
//! [`read`] is the [`SourceReader`](crate::db::SourceReader), streaming a window out of the
//! source (its rows found by [`window`]); [`write`](mod@write) the window's transaction; [`claim`]
//! the [`ClaimStore`](crate::db::ClaimStore), judging a job's holder; [`dialect`] the
//! [`Dialect`](crate::db::dialect::Dialect) of the SQL shared with the servers; and [`direct`]
//! the one place a connection is driven through rusqlite.

mod claim;
mod dialect;
mod direct;

pub use direct::heap_bytes;
mod read;
mod window;
mod write;

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::dialect::Param;
use super::{Backend, Field, FieldKind, Limits};

/// Whether an error may go away by itself: the pool, I/O, or another writer holding the lock
/// (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, with their extended codes).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err) || matches!(primary_code(err), Some(5 | 6 | 10))
}

/// SQLite's primary result code of a database error (the extended code's low byte).
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    Some(db.code()?.parse::<i32>().ok()? & 0xff)
}

/// The most heap SQLite may keep in this process before it recycles cached pages rather than
/// allocate: a window's reader and writer need a few pages each; the rest is a cache the
/// operating system keeps too.
const HEAP_LIMIT: i64 = 8 << 20;

#[derive(Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    limits: Limits,
}

impl SqliteBackend {
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: the window's reader and writer run at once, and application readers are never
            // blocked by a run.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Another writer (an application's long transaction, a frozen run) holds the write
            // lock: wait this long, then report the job busy (see `lock_wait`).
            .busy_timeout(limits.busy)
            // A page cache of 1 MiB per connection rather than SQLite's 2: enough for the B-tree
            // pages a window's reads and upserts revisit (the operating system caches the file
            // besides), and the pool's caches, which fill as the database grows, stay small in a
            // daemon that runs for months.
            .pragma("cache_size", "-1024")
            // And all of them together, with statements and schemas, at most HEAP_LIMIT: past
            // it SQLite reuses its caches' least recently used pages instead of allocating new
            // ones. Each cache alone is bounded, but a daemon's pool holds a dozen connections
            // and each fills as the 50 results tables it writes grow; the soak (bench/soak.py)
            // watched them add 0.5 MiB a minute. The limit is the process's, set on every
            // connection alike.
            .pragma("soft_heap_limit", HEAP_LIMIT.to_string())
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        // Turning a new file into WAL takes its exclusive lock from inside a read, and SQLite
        // answers BUSY at once there rather than calling the busy handler (waiting could
        // deadlock). Several processes opening one new file at once (a first deployment's cron,
        // daemon and shards) meet exactly that, so the first connection is retried for as long
        // as any other lock is waited for; once the file is in WAL, the next opens only read.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match Self::open_pool(options.clone(), limits).await {
                Err(e) if primary_code(&e) == Some(5) && started.elapsed() < limits.busy => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                opened => {
                    return Ok(SqliteBackend {
                        pool: opened?,
                        limits,
                    });
                }
            }
        }
    }

    async fn open_pool(
        options: SqliteConnectOptions,
        limits: Limits,
    ) -> Result<SqlitePool, sqlx::Error> {
        SqlitePoolOptions::new()
            .max_connections(limits.connections)
            .acquire_timeout(limits.connect)
            // The shard hash of text keys, on every connection (see `read::register_functions`).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut locked = conn.lock_handle().await?;
                    direct::with_direct(&mut locked, |db| Ok(read::register_functions(db)?))
                        .map_err(|e| sqlx::Error::Configuration(e.into()))
                })
            })
            .connect_with(options)
            .await
    }
}

impl Backend for SqliteBackend {
    type Db = sqlx::Sqlite;

    fn pool(&self) -> &sqlx::Pool<sqlx::Sqlite> {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        &MIGRATOR
    }

    /// The statement stepped directly (see [`direct`]): through sqlx, each value was copied on
    /// its worker thread under a lock, which was most of a million-row join's time.
    async fn stream_fields(
        &self,
        sql: String,
        params: Vec<Param>,
        kinds: &[FieldKind],
        each: &mut (dyn FnMut(&[Field<'_>]) -> anyhow::Result<()> + Send),
    ) -> anyhow::Result<()> {
        read::stream_fields(&self.pool, sql, params, kinds, each).await
    }
}
