//! Which windows a window is compared with for drift: the reference `monitor set-reference`
//! stored, or else the job file's (a fixed range, or a rolling one relative to the window).
//! This is the policy; `db::profiles::reference_for` reads the profiles it names.

use chrono::{DateTime, Utc};

use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::spec::JobSpec;
use crate::spec::monitor::ReferenceSpec;
use crate::time::time_text;

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

impl Reference {
    /// The reference `monitor set-reference` stored.
    pub fn stored(stored: StoredReference) -> Reference {
        Reference {
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
        }
    }
}

/// The range of windows the job file's reference takes for `window`, and how it is described;
/// `None` when the job file names no reference.
pub fn file_range(job: &JobSpec, window: Window) -> Option<(DateTime<Utc>, DateTime<Utc>, String)> {
    let spec = job.monitor.reference?;
    let (from, to) = spec.range(window.start, window.end);
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
    Some((from, to, described))
}

/// A stored reference as `db::profiles` reads it back.
pub struct StoredReference {
    /// The range its windows were merged from.
    pub window: Window,
    pub windows: u64,
    pub set_at: DateTime<Utc>,
    pub profile: Profile,
}
