//! `batchscore watermark show [NAME]` and `batchscore watermark set NAME TIME`.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{Table, presets::NOTHING};

use crate::claim::{Claim, ClaimOutcome, DEFAULT_LEASE};
use crate::cli::GlobalArgs;
use crate::db::{self, Backend};
use crate::error::{ConfigError, Contention};
use crate::{spec, with_backend};

pub async fn show(global: &GlobalArgs, name: Option<String>) -> anyhow::Result<ExitCode> {
    let db = db::connect(&global.database_url).await?;
    let watermarks = with_backend!(&db, backend => async {
        backend.migrate().await?;
        backend.watermarks().await
    }.await)?;
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["JOB", "WATERMARK", "LAG SECONDS"]);
    let now = Utc::now();
    for (job, watermark) in watermarks {
        if name.as_ref().is_some_and(|n| *n != job) {
            continue;
        }
        table.add_row([
            job,
            watermark.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            format!("{:.0}", (now - watermark).as_seconds_f64()),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Move a watermark by hand, the only way it ever moves backwards. The job's claim is taken
/// first, so no run of the job is between planning and commit meanwhile.
pub async fn set(global: &GlobalArgs, name: &str, time: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    if time > Utc::now() {
        return Err(ConfigError::job(name, "a watermark cannot be set in the future").into());
    }
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => set_with(backend, &spec.name, time).await)?;
    Ok(ExitCode::SUCCESS)
}

async fn set_with<B: Backend>(db: &B, job: &str, time: DateTime<Utc>) -> anyhow::Result<()> {
    db.migrate().await?;
    let claim = Claim::new(job, humantime_lease());
    let lock = match db.claim(&claim).await? {
        ClaimOutcome::Acquired(lock) => lock,
        ClaimOutcome::Busy(holder) => {
            return Err(Contention::Busy {
                job: job.to_owned(),
                holder: holder.map(|h| h.to_string()),
            }
            .into());
        }
    };
    let previous = db.watermark(job).await;
    let outcome = db.set_watermark(job, time).await;
    db.release_claim(Some(lock), &claim).await?;
    outcome?;
    let previous = match previous? {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => "none".to_owned(),
    };
    let time = time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    tracing::warn!(job, from = %previous, to = %time, "watermark set by hand");
    println!("{job}: watermark moved from {previous} to {time}");
    Ok(())
}

fn humantime_lease() -> chrono::TimeDelta {
    humantime::parse_duration(DEFAULT_LEASE)
        .ok()
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .expect("DEFAULT_LEASE is a valid duration")
}
