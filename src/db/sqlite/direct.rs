//! Direct rusqlite access to a connection sqlx has handed over, for the hot loops (streaming a
//! window out, binding a chunk's results) where a prepared statement stepped directly beats
//! sqlx's per-row machinery. The one place batchscore shares a SQLite handle, and so the one
//! `unsafe` of the SQLite backend.

use sqlx::sqlite::LockedSqliteHandle;

/// Run `f` on a rusqlite view of a connection sqlx has handed over (`lock_handle`). The
/// connection stays sqlx's, transaction included; statements `f` prepares end with it.
#[allow(unsafe_code)]
pub(super) fn with_direct<T>(
    locked: &mut LockedSqliteHandle<'_>,
    f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // SAFETY: the lock keeps sqlx's worker off the handle for as long as `locked` lives, which
    // outlives `direct`; `from_handle` makes a view that never closes the handle.
    let direct = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
    f(&direct)
}

/// Run blocking database work from async code: on a multi-threaded runtime the thread's other
/// tasks move elsewhere meanwhile; on a current-thread runtime (tests) it simply runs.
pub(super) fn on_this_thread<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Bytes of heap SQLite holds in this process now: every connection's page cache, prepared
/// statements and schema, of sqlx's pools and of direct reads alike.
#[allow(unsafe_code)]
pub fn heap_bytes() -> i64 {
    // SAFETY: reads one of SQLite's own counters; takes no pointer and holds no connection.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}
