//! batchscore's own schema: checking what a database has applied against the migrations embedded
//! in this binary, before applying what is missing.
//!
//! sqlx's migrator checks each applied migration's checksum, but only when it runs; batchscore
//! runs it only when something is pending (so a role without CREATE can run jobs), so the check
//! is made here on every start, and every error reading the migrations table is reported.
//!
//! Checking and applying are one critical section ([`migrate`]): processes that start together
//! on a new database (an Indexed Job's pods, cron beside the daemon) queue on the database's
//! schema lock ([`Dialect::lock_schema`]), and each checks again once it holds it. So a
//! migration another process is applying is waited for, never applied twice, and never called
//! "failed partway" (MySQL records a migration before running it, as `success = FALSE`). The
//! unlocked look before it only answers "everything is applied, as shipped": anything else is
//! judged under the lock.
//!
//! Applied migrations are never edited: a change to the schema is a new migration. One edit
//! shipped before this rule was enforced: 0001 once had its status CHECK widened in place, which
//! migration 0004 now does. Databases that applied the edited 0001 are recognised by its
//! checksum ([`KNOWN_EDITS`]) and their record is brought back to the file's (0004 then widens
//! a CHECK that is already wide); any other mismatch is refused.

use std::borrow::Cow;

use anyhow::Context;
use sqlx::Executor;
use sqlx::migrate::Migrator;

use super::dialect::{self, Dialect, Param, required};
use crate::error::ConfigError;

/// Checksums (SHA-384 of the file) of migrations as once shipped and since corrected by a new
/// migration: (version, checksum applied by earlier releases).
const KNOWN_EDITS: [(i64, &str); 2] = [
    // SQLite 0001 with the widened status CHECK (releases of 2026-11-24 after the first).
    (
        20261124000001,
        "13d96d5ca32604b3590b269df2d3ee5a4f0f59dff7f46253bf0c809df3445f4c82dd1e11c4ca8b5b72cb99cc2c83b9e8",
    ),
    // PostgreSQL 0001, the same edit.
    (
        20261124000001,
        "491b1e24eb71958b06a000315990f67bb75d72dc375b8bf8456eb2160469f0320c2d22bb8223be763fe6b45be48445cd",
    ),
];

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Every embedded migration is applied, as shipped.
    Current,
    /// Some are not applied yet.
    Pending,
}

/// One row of `_sqlx_migrations`.
struct Applied {
    version: i64,
    description: String,
    checksum: Vec<u8>,
    success: bool,
}

/// Bring batchscore's schema up to date: with nothing pending, only a read; otherwise the check
/// and the migrations run while this process holds the schema lock. A process that waited there
/// for another's migrations finds them applied and applies nothing.
pub(crate) async fn migrate<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    migrator: &'static Migrator,
) -> anyhow::Result<()> {
    if is_current(&applied(DB::on_pool(pool)).await?, migrator) {
        return Ok(());
    }
    let mut session = DB::lock_schema(pool)
        .await
        .context("taking the lock on batchscore's schema (to apply its migrations)")?;
    let conn = session.conn();
    let applied = applied(DB::on_conn(&mut *conn)).await?;
    if check::<DB>(conn, &applied, migrator).await? == Schema::Pending {
        // The lock is already ours: sqlx's migrator must not take it again (on SQLite it has
        // none; PostgreSQL's and MySQL's are the same locks, counted per session).
        let unlocked = Migrator {
            migrations: Cow::Borrowed(&migrator.migrations),
            locking: false,
            ignore_missing: migrator.ignore_missing,
            no_tx: migrator.no_tx,
            table_name: migrator.table_name.clone(),
            create_schemas: migrator.create_schemas.clone(),
        };
        unlocked
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(failed)?;
    }
    session
        .release()
        .await
        .context("releasing the lock on batchscore's schema")
}

/// Whether every embedded migration is applied, as shipped, and nothing else is: the one
/// answer that needs no lock.
fn is_current(applied: &[Applied], migrator: &Migrator) -> bool {
    applied.len() == migrator.iter().count()
        && migrator.iter().all(|m| {
            applied
                .iter()
                .any(|a| a.version == m.version && a.success && a.checksum == *m.checksum)
        })
}

/// Compare the database's applied migrations with `migrator`'s, holding the schema lock (so a
/// row with `success = FALSE` is a migration that really stopped partway). Refuses (a
/// configuration error: a person must look) a migration that failed partway, one this binary
/// does not know (a newer batchscore migrated the database), and one whose file changed since
/// it was applied. Repairs the record of a [`KNOWN_EDITS`] checksum.
async fn check<DB: Dialect>(
    conn: &mut DB::Connection,
    applied: &[Applied],
    migrator: &Migrator,
) -> anyhow::Result<Schema> {
    for row in applied {
        let Applied {
            version,
            description,
            ..
        } = row;
        if !row.success {
            return Err(schema_error(format!(
                "migration {version} ({description}) failed partway; restore the database or \
                 finish the migration by hand, then delete its row from _sqlx_migrations"
            )));
        }
        let Some(shipped) = migrator.iter().find(|m| m.version == *version) else {
            return Err(schema_error(format!(
                "the database has migration {version} ({description}), which this batchscore \
                 does not know: it was migrated by a newer release; upgrade batchscore"
            )));
        };
        if row.checksum == *shipped.checksum {
            continue;
        }
        let applied_hex = hex(&row.checksum);
        if KNOWN_EDITS.contains(&(*version, applied_hex.as_str())) {
            repair::<DB>(&mut *conn, *version, &row.checksum, &shipped.checksum).await?;
            tracing::info!(
                version,
                "recorded migration {version} under its shipped checksum (its in-place edit is now migration 20261124000004)"
            );
            continue;
        }
        return Err(schema_error(format!(
            "migration {version} ({description}) was applied from a different file than the \
             one in this batchscore (checksum {applied_hex}, expected {}): applied migrations \
             must never change",
            hex(&shipped.checksum)
        )));
    }
    let pending = migrator
        .iter()
        .any(|m| !applied.iter().any(|a| a.version == m.version));
    Ok(match pending {
        true => Schema::Pending,
        false => Schema::Current,
    })
}

/// The applied migrations; none when the table does not exist yet (a new database).
async fn applied<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
) -> anyhow::Result<Vec<Applied>> {
    let sql =
        "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version";
    let rows = match dialect::fetch_all(executor, sql.to_owned(), vec![]).await {
        Ok(rows) => rows,
        Err(err) if DB::is_undefined_table(&err) => return Ok(vec![]),
        Err(err) => {
            return Err(err).context("reading batchscore's applied migrations (_sqlx_migrations)");
        }
    };
    rows.iter()
        .map(|row| {
            Ok(Applied {
                version: required(DB::int(row, "version")?, "version")?,
                description: DB::text(row, "description")?.unwrap_or_default(),
                checksum: DB::bytes(row, "checksum")?,
                success: DB::flag(row, "success")?,
            })
        })
        .collect::<anyhow::Result<_>>()
        .context("reading batchscore's applied migrations (_sqlx_migrations)")
}

async fn repair<DB: Dialect>(
    conn: &mut DB::Connection,
    version: i64,
    from: &[u8],
    to: &[u8],
) -> anyhow::Result<()> {
    let sql = "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3";
    let params = vec![
        Param::Bytes(to.to_vec()),
        Param::from(version),
        Param::Bytes(from.to_vec()),
    ];
    dialect::execute(DB::on_conn(conn), sql.to_owned(), params)
        .await
        .with_context(|| format!("recording migration {version} under its shipped checksum"))?;
    Ok(())
}

/// Why applying migrations failed, as a configuration error when sqlx's own checks refused them.
fn failed(err: sqlx::migrate::MigrateError) -> anyhow::Error {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::VersionMismatch(_)
        | MigrateError::VersionMissing(_)
        | MigrateError::Dirty(_) => schema_error(err.to_string()),
        other => anyhow::Error::from(other).context("applying batchscore's migrations"),
    }
}

fn schema_error(problem: String) -> anyhow::Error {
    ConfigError::Schema(problem).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session in which batchscore's schema is checked and migrated, holding the database's
/// schema lock until [`SchemaSession::release`]. Dropped without it (an error), the lock goes
/// too: the transaction rolls back, or the connection closes.
pub(crate) enum SchemaSession<DB: sqlx::Database> {
    /// SQLite: a write transaction (`BEGIN IMMEDIATE`), which holds the database's one write
    /// lock; sqlx applies each migration in a savepoint inside it.
    Transaction(sqlx::Transaction<'static, DB>),
    /// A server: a connection of its own (out of the pool) holding sqlx's migration lock
    /// (PostgreSQL's advisory lock, MySQL's `GET_LOCK`), which ends with the session.
    Connection(DB::Connection),
}

impl<DB: sqlx::Database> SchemaSession<DB> {
    fn conn(&mut self) -> &mut DB::Connection {
        match self {
            SchemaSession::Transaction(tx) => tx,
            SchemaSession::Connection(conn) => conn,
        }
    }

    async fn release(self) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        match self {
            SchemaSession::Transaction(tx) => tx.commit().await,
            SchemaSession::Connection(conn) => conn.close().await,
        }
    }
}
