//! The SQL of drift monitoring's tables (`batchscore_profiles`, `batchscore_references`),
//! written once for every backend (see [`super::dialect`]).

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::dialect::{self, Dialect, Param, required};
use crate::monitor::profile::{ColumnProfile, Profile, StoredProfile, Values};
use crate::monitor::reference::{self, Reference, StoredReference};
use crate::plan::Window;
use crate::shard::Shard;
use crate::spec::JobSpec;

/// The profile columns both tables share, in bind order.
const PROFILE_COLUMNS: [&str; 13] = [
    "column_name",
    "role",
    "kind",
    "row_count",
    "null_count",
    "bad_count",
    "mean",
    "std",
    "m2",
    "min_value",
    "max_value",
    "summary",
    "sketch",
];

/// A column's profile as parameters, in [`PROFILE_COLUMNS`] order.
fn profile_params(column: &ColumnProfile) -> Vec<Param> {
    let finite = |v: f64| Param::Float(v.is_finite().then_some(v));
    let (mean, std, m2, min, max) = match &column.values {
        Values::Numeric(n) if n.count > 0 => (
            finite(n.mean),
            finite(n.std()),
            finite(n.m2),
            finite(n.min),
            finite(n.max),
        ),
        _ => (
            Param::Float(None),
            Param::Float(None),
            Param::Float(None),
            Param::Float(None),
            Param::Float(None),
        ),
    };
    vec![
        Param::from(&column.column),
        Param::from(column.role.as_str()),
        Param::from(column.kind()),
        Param::from(column.rows as i64),
        Param::from(column.nulls as i64),
        Param::from(column.bad as i64),
        mean,
        std,
        m2,
        min,
        max,
        Param::from(&column.summary().to_string()),
        Param::Bytes(column.sketch_bytes()),
    ]
}

fn profile_from_row<DB: Dialect>(row: &DB::Row) -> anyhow::Result<ColumnProfile> {
    let text = |c: &str| -> anyhow::Result<String> { required(DB::text(row, c)?, c) };
    let int = |c: &str| -> anyhow::Result<i64> { required(DB::int(row, c)?, c) };
    ColumnProfile::from_stored(StoredProfile {
        column: text("column_name")?,
        role: text("role")?,
        kind: text("kind")?,
        rows: int("row_count")?,
        nulls: int("null_count")?,
        bad: int("bad_count")?,
        mean: DB::float(row, "mean")?,
        m2: DB::float(row, "m2")?,
        min: DB::float(row, "min_value")?,
        max: DB::float(row, "max_value")?,
        sketch: DB::bytes(row, "sketch")?,
    })
}

/// `count` rows of `width` placeholders each, numbered from `$1`.
fn value_rows(count: usize, width: usize) -> String {
    (0..count)
        .map(|row| {
            let marks: Vec<String> = (1..=width)
                .map(|i| format!("${}", row * width + i))
                .collect();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write a committed window's profile, in the window's transaction. Profiles of the shard's
/// earlier windows inside this one (a backfill scoring a range again) are replaced: each range
/// is profiled once, as last scored. A neighbour that only overlaps it (an unaligned backfill,
/// or windows planned after `watermark set`) is kept: deleting it would drop its rows outside
/// this window from every reference, while keeping it counts the overlap twice, which a
/// reference's quantiles and rates barely notice.
pub(crate) async fn record_profile<DB: Dialect>(
    conn: &mut DB::Connection,
    run_id: &str,
    job: &str,
    shard: Shard,
    window: Window,
    profile: &Profile,
) -> anyhow::Result<()> {
    dialect::execute(
        DB::on_conn(conn),
        "DELETE FROM batchscore_profiles WHERE job = $1 AND shard = $2 AND window_start >= $3 AND window_end <= $4"
            .to_owned(),
        vec![
            job.into(),
            i64::from(shard.index).into(),
            window.start.into(),
            window.end.into(),
        ],
    )
    .await
    .context("replacing earlier profiles of the window's range")?;
    if profile.columns.is_empty() {
        return Ok(());
    }
    let width = 5 + PROFILE_COLUMNS.len();
    let sql = format!(
        "INSERT INTO batchscore_profiles (run_id, job, shard, window_start, window_end, {}) VALUES {}",
        PROFILE_COLUMNS.join(", "),
        value_rows(profile.columns.len(), width)
    );
    let mut params = Vec::with_capacity(width * profile.columns.len());
    for column in &profile.columns {
        params.extend([
            run_id.into(),
            job.into(),
            i64::from(shard.index).into(),
            window.start.into(),
            window.end.into(),
        ]);
        params.extend(profile_params(column));
    }
    dialect::execute(DB::on_conn(conn), sql, params)
        .await
        .context("writing the window's profile")?;
    Ok(())
}

/// The merged profile of `job`'s committed windows inside `[from, to)` (every shard), and how
/// many windows it merges.
pub(crate) async fn merged_profiles<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(Profile, u64)> {
    let rows = dialect::fetch_all(
        DB::on_pool(pool),
        format!(
            "SELECT run_id, {} FROM batchscore_profiles WHERE job = $1 AND window_start >= $2 AND window_end <= $3 ORDER BY window_start, shard, role, column_name",
            PROFILE_COLUMNS.join(", ")
        ),
        vec![job.into(), from.into(), to.into()],
    )
    .await
    .with_context(|| format!("reading job `{job}`'s window profiles"))?;
    let mut merged = Profile::default();
    let mut runs = std::collections::BTreeSet::new();
    for row in &rows {
        runs.insert(required(DB::text(row, "run_id")?, "run_id")?);
        merged.merge(Profile {
            columns: vec![profile_from_row::<DB>(row)?],
        })?;
    }
    Ok((merged, runs.len() as u64))
}

/// The range of `job`'s latest profiled window (the latest end, then the latest start).
pub(crate) async fn latest_window<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
) -> anyhow::Result<Option<Window>> {
    let row = dialect::fetch_optional(
        DB::on_pool(pool),
        "SELECT window_start, window_end FROM batchscore_profiles WHERE job = $1 ORDER BY window_end DESC, window_start DESC LIMIT 1"
            .to_owned(),
        vec![job.into()],
    )
    .await
    .with_context(|| format!("reading job `{job}`'s latest profile"))?;
    row.map(|row| {
        Ok(Window {
            start: required(DB::time(&row, "window_start")?, "window_start")?,
            end: required(DB::time(&row, "window_end")?, "window_end")?,
        })
    })
    .transpose()
}

pub(crate) async fn stored_reference<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
) -> anyhow::Result<Option<StoredReference>> {
    let rows = dialect::fetch_all(
        DB::on_pool(pool),
        format!(
            "SELECT window_start, window_end, windows, set_at, {} FROM batchscore_references WHERE job = $1 ORDER BY role, column_name",
            PROFILE_COLUMNS.join(", ")
        ),
        vec![job.into()],
    )
    .await
    .with_context(|| format!("reading job `{job}`'s stored reference"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut profile = Profile::default();
    for row in &rows {
        profile.columns.push(profile_from_row::<DB>(row)?);
    }
    Ok(Some(StoredReference {
        window: Window {
            start: required(DB::time(first, "window_start")?, "window_start")?,
            end: required(DB::time(first, "window_end")?, "window_end")?,
        },
        windows: required(DB::int(first, "windows")?, "windows")? as u64,
        set_at: required(DB::time(first, "set_at")?, "set_at")?,
        profile,
    }))
}

/// Store `profile` (merged from `windows` windows in `window`) as `job`'s reference, replacing
/// any; or, with `None`, remove it.
pub(crate) async fn store_reference<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    reference: Option<(Window, u64, &Profile)>,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    replace_reference::<DB>(&mut tx, job, reference).await?;
    tx.commit().await.context("committing the reference")
}

async fn replace_reference<DB: Dialect>(
    conn: &mut DB::Connection,
    job: &str,
    reference: Option<(Window, u64, &Profile)>,
) -> anyhow::Result<()> {
    dialect::execute(
        DB::on_conn(conn),
        "DELETE FROM batchscore_references WHERE job = $1".to_owned(),
        vec![job.into()],
    )
    .await
    .with_context(|| format!("removing job `{job}`'s stored reference"))?;
    let Some((window, windows, profile)) = reference else {
        return Ok(());
    };
    let width = 5 + PROFILE_COLUMNS.len();
    let sql = format!(
        "INSERT INTO batchscore_references (job, window_start, window_end, windows, set_at, {}) VALUES {}",
        PROFILE_COLUMNS.join(", "),
        value_rows(profile.columns.len(), width)
    );
    let mut params = Vec::with_capacity(width * profile.columns.len());
    for column in &profile.columns {
        params.extend([
            job.into(),
            window.start.into(),
            window.end.into(),
            (windows as i64).into(),
            Utc::now().into(),
        ]);
        params.extend(profile_params(column));
    }
    dialect::execute(DB::on_conn(conn), sql, params)
        .await
        .with_context(|| format!("storing job `{job}`'s reference"))?;
    Ok(())
}

/// The reference to compare `window` of `job` with (the stored one, else the job file's range
/// merged from the profiles: see [`crate::monitor::reference`]); `None` when the job has none.
pub(crate) async fn reference_for<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &JobSpec,
    window: Window,
) -> anyhow::Result<Option<Reference>> {
    if let Some(stored) = stored_reference(pool, &job.name).await? {
        return Ok(Some(Reference::stored(stored)));
    }
    let Some((from, to, described)) = reference::file_range(job, window) else {
        return Ok(None);
    };
    let (profile, windows) = merged_profiles(pool, &job.name, from, to).await?;
    Ok(Some(Reference {
        described,
        windows,
        profile,
        from,
        to,
    }))
}
