//! A job's latest profiled window against its drift reference: what `monitor NAME`, `status`
//! and the status page say of drift.

use crate::db::Backend;
use crate::db::profiles::reference_for;
use crate::monitor::drift::{self, DriftReport};
use crate::monitor::profile::Profile;
use crate::monitor::reference::Reference;
use crate::plan::Window;
use crate::spec::JobSpec;

/// The latest window of a job, its reference and their comparison.
pub struct Latest {
    pub window: Window,
    pub rows: u64,
    pub reference: Option<Reference>,
    pub report: DriftReport,
}

/// Compare `job`'s latest profiled window with its reference; `None` when no window is profiled.
pub async fn latest<B: Backend>(db: &B, spec: &JobSpec) -> anyhow::Result<Option<Latest>> {
    let Some(window) = crate::db::profiles::latest_window(db.pool(), &spec.name).await? else {
        return Ok(None);
    };
    let (profile, _) =
        crate::db::profiles::merged_profiles(db.pool(), &spec.name, window.start, window.end)
            .await?;
    let reference = reference_for(db.pool(), spec, window).await?;
    let empty = Profile::default();
    let against = reference
        .as_ref()
        .map_or(&empty, |reference| &reference.profile);
    let report = drift::compare(&profile, against, &spec.monitor);
    let rows = profile.columns.first().map_or(0, |c| c.rows);
    Ok(Some(Latest {
        window,
        rows,
        reference,
        report,
    }))
}

/// The latest window's drift in a few words: `ok`, `drift: COLUMNS`, `no reference`, `off`
/// (profiles turned off) or `-` (nothing profiled yet); `unknown` if it cannot be read.
pub async fn state<B: Backend>(db: &B, spec: &JobSpec) -> String {
    if !spec.monitor.profile {
        return "off".to_owned();
    }
    match latest(db, spec).await {
        Ok(None) => "-".to_owned(),
        Ok(Some(latest)) => summary(&latest),
        Err(err) => {
            tracing::warn!(job = %spec.name, error = %format!("{err:#}"), "could not judge drift");
            "unknown".to_owned()
        }
    }
}

/// `ok`, `drift: COLUMNS` or `no reference`.
pub fn summary(latest: &Latest) -> String {
    let drifted: Vec<&str> = latest.report.drifted().map(|c| c.column.as_str()).collect();
    if !drifted.is_empty() {
        format!("drift: {}", drifted.join(", "))
    } else if latest.reference.as_ref().is_none_or(|r| r.windows == 0) {
        "no reference".to_owned()
    } else {
        "ok".to_owned()
    }
}
