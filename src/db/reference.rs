//! Which windows a window is compared with for drift: the reference `monitor set-reference` stored, or
//! else the job file's (a fixed range, or a rolling one relative to the window).

use chrono::{DateTime, Utc};

use super::Backend;
use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::spec::JobSpec;
use crate::spec::monitor::{ReferenceSpec, time_text};

/// A reference profile and where it came from.
pub struct Reference {
    /// "windows from … to … (stored by `monitor set-reference` at …)"
    pub described: String,
    /// The windows merged into it; 0 when the range holds no profiled window.
    pub windows: u64,
    pub profile: Profile,
    /// The range its windows were taken from.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The reference to compare `window` of `job` with; `None` when the job has none.
pub async fn reference_for<B: Backend>(
    db: &B,
    job: &JobSpec,
    window: Window,
) -> anyhow::Result<Option<Reference>> {
    if let Some(stored) = db.stored_reference(&job.name).await? {
        return Ok(Some(Reference {
            described: format!(
                "windows from {} to {} (stored by `monitor set-reference` at {})",
                time_text(stored.window.start),
                time_text(stored.window.end),
                time_text(stored.set_at)
            ),
            windows: stored.windows,
            profile: stored.profile,
            from: stored.window.start,
            to: stored.window.end,
        }));
    }
    let Some(spec) = job.monitor.reference else {
        return Ok(None);
    };
    let (from, to) = spec.range(window.start, window.end);
    let (profile, windows) = db.merged_profiles(&job.name, from, to).await?;
    let described = match spec {
        ReferenceSpec::Fixed { .. } => format!("{} (jobs/{}.toml)", spec.describe(), job.name),
        ReferenceSpec::Rolling { .. } => format!(
            "{}: windows from {} to {} (jobs/{}.toml)",
            spec.describe(),
            time_text(from),
            time_text(to),
            job.name
        ),
    };
    Ok(Some(Reference {
        described,
        windows,
        profile,
        from,
        to,
    }))
}
