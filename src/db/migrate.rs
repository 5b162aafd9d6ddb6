//! batchscore's own schema: checking what a database has applied against the migrations embedded
//! in this binary, before applying what is missing.
//!
//! sqlx's migrator checks each applied migration's checksum, but only when it runs; batchscore
//! runs it only when something is pending (so a role without CREATE can run jobs), so the check
//! is made here on every start, and every error reading the migrations table is reported.
//!
//! Applied migrations are never edited: a change to the schema is a new migration. One edit
//! shipped before this rule was enforced: 0001 once had its status CHECK widened in place, which
//! migration 0004 now does. Databases that applied the edited 0001 are recognised by its
//! checksum ([`KNOWN_EDITS`]) and their record is brought back to the file's (0004 then widens
//! a CHECK that is already wide); any other mismatch is refused.

use anyhow::Context;
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

/// Compare the database's applied migrations with `migrator`'s. Refuses (a configuration
/// error: a person must look) a migration that failed partway, one this binary does not know (a
/// newer batchscore migrated the database), and one whose file changed since it was applied.
/// Repairs the record of a [`KNOWN_EDITS`] checksum.
pub(crate) async fn check<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    migrator: &Migrator,
) -> anyhow::Result<Schema> {
    let applied = applied::<DB>(pool).await?;
    for row in &applied {
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
            repair::<DB>(pool, *version, &row.checksum, &shipped.checksum).await?;
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
async fn applied<DB: Dialect>(pool: &sqlx::Pool<DB>) -> anyhow::Result<Vec<Applied>> {
    let sql =
        "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version";
    let rows = match dialect::fetch_all(DB::on_pool(pool), sql.to_owned(), vec![]).await {
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
    pool: &sqlx::Pool<DB>,
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
    dialect::execute(DB::on_pool(pool), sql.to_owned(), params)
        .await
        .with_context(|| format!("recording migration {version} under its shipped checksum"))?;
    Ok(())
}

/// Why applying migrations failed, as a configuration error when sqlx's own checks refused them.
pub(crate) fn failed(err: sqlx::migrate::MigrateError) -> anyhow::Error {
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
