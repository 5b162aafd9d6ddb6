//! `[monitor]` of a job file: whether windows are profiled, the reference a window's profile is
//! compared with, the drift thresholds and what a window in drift does. The profiling and the
//! scores themselves are in [`crate::monitor`].

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

/// Default drift thresholds: PSI 0.2 (the usual "significant shift" line), Jensen–Shannon
/// distance 0.1 (Evidently's default), 5 points of null rate, a prediction mean moved by 0.2
/// of the reference's standard deviation.
pub const DEFAULT_PSI: f64 = 0.2;
pub const DEFAULT_JS: f64 = 0.1;
pub const DEFAULT_NULL_RATE: f64 = 0.05;
pub const DEFAULT_MEAN_SHIFT: f64 = 0.2;
/// Default PSI bins: the reference's deciles.
pub const DEFAULT_BINS: usize = 10;
/// Columns with fewer values than this in the window or the reference are not judged: PSI of a
/// few dozen rows is mostly noise.
pub const DEFAULT_MIN_ROWS: u64 = 100;

/// `[monitor]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// Profile every window (default). `false` writes no profiles and checks no drift.
    pub profile: bool,
    /// The job file's reference; `monitor set-reference` stores one that takes its place.
    pub reference: Option<ReferenceSpec>,
    pub on_drift: OnDrift,
    pub thresholds: Thresholds,
    pub bins: usize,
    pub min_rows: u64,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        MonitorSpec {
            profile: true,
            reference: None,
            on_drift: OnDrift::Warn,
            thresholds: Thresholds::default(),
            bins: DEFAULT_BINS,
            min_rows: DEFAULT_MIN_ROWS,
        }
    }
}

/// Where a job's reference windows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceSpec {
    /// The committed windows inside `[from, to)`.
    Fixed {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// The windows inside the `span` that ends `offset` before the window judged ends: "the same
    /// window a week earlier" is `offset = 7d` (`span` defaults to the window's size).
    Rolling {
        offset: TimeDelta,
        span: Option<TimeDelta>,
    },
}

impl ReferenceSpec {
    /// The range of windows to compare the window `[start, end)` with.
    pub fn range(self, start: DateTime<Utc>, end: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            ReferenceSpec::Fixed { from, to } => (from, to),
            ReferenceSpec::Rolling { offset, span } => {
                let to = end - offset;
                (to - span.unwrap_or(end - start), to)
            }
        }
    }

    /// How `monitor` describes it.
    pub fn describe(self) -> String {
        match self {
            ReferenceSpec::Fixed { from, to } => {
                format!(
                    "windows from {} to {}",
                    crate::time::time_text(from),
                    crate::time::time_text(to)
                )
            }
            ReferenceSpec::Rolling { offset, span } => format!(
                "the {} ending {} before the window",
                span.map_or("same window".to_owned(), |s| format!(
                    "{} of windows",
                    human(s)
                )),
                human(offset)
            ),
        }
    }
}

fn human(delta: TimeDelta) -> String {
    delta
        .to_std()
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|_| delta.to_string())
}

/// What a window in drift does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Log it, count it in the metrics, and commit the window.
    Warn,
    /// Fail the window: nothing of it is written, and the watermark stays.
    Fail,
}

/// When a column counts as drifted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Population stability index of a numeric column, over the reference's quantile bins.
    pub psi: f64,
    /// Jensen–Shannon distance (base 2, 0 to 1) of a categorical column's distribution.
    pub js: f64,
    /// Change of the null rate (NULLs and unusable values over rows), in absolute terms.
    pub null_rate: f64,
    /// Change of a numeric output's mean, in the reference's standard deviations.
    pub mean_shift: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            psi: DEFAULT_PSI,
            js: DEFAULT_JS,
            null_rate: DEFAULT_NULL_RATE,
            mean_shift: DEFAULT_MEAN_SHIFT,
        }
    }
}

// ---- the file as written -------------------------------------------------------------------

/// `[monitor]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonitorFile {
    profile: Option<bool>,
    reference: Option<ReferenceFile>,
    on_drift: Option<OnDrift>,
    psi: Option<f64>,
    js: Option<f64>,
    null_rate: Option<f64>,
    mean_shift: Option<f64>,
    bins: Option<usize>,
    min_rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFile {
    from: Option<String>,
    to: Option<String>,
    rolling: Option<String>,
    span: Option<String>,
}

impl MonitorFile {
    /// Check `[monitor]`; errors name the key.
    pub(crate) fn check(self) -> Result<MonitorSpec, String> {
        let defaults = Thresholds::default();
        let threshold = |key: &str, value: Option<f64>, default: f64, max: f64| match value {
            None => Ok(default),
            Some(v) if v > 0.0 && v <= max => Ok(v),
            Some(v) => Err(format!(
                "monitor.{key} = {v} must be greater than 0 and at most {max}"
            )),
        };
        let thresholds = Thresholds {
            psi: threshold("psi", self.psi, defaults.psi, f64::MAX)?,
            js: threshold("js", self.js, defaults.js, 1.0)?,
            null_rate: threshold("null_rate", self.null_rate, defaults.null_rate, 1.0)?,
            mean_shift: threshold("mean_shift", self.mean_shift, defaults.mean_shift, f64::MAX)?,
        };
        let bins = self.bins.unwrap_or(DEFAULT_BINS);
        if !(2..=100).contains(&bins) {
            return Err(format!("monitor.bins = {bins} must be between 2 and 100"));
        }
        let reference = self.reference.map(ReferenceFile::check).transpose()?;
        Ok(MonitorSpec {
            profile: self.profile.unwrap_or(true),
            reference,
            on_drift: self.on_drift.unwrap_or(OnDrift::Warn),
            thresholds,
            bins,
            min_rows: self.min_rows.unwrap_or(DEFAULT_MIN_ROWS).max(1),
        })
    }
}

impl ReferenceFile {
    fn check(self) -> Result<ReferenceSpec, String> {
        const FORMS: &str = "write reference = { from = \"2026-11-01T00:00:00Z\", to = \"2026-11-08T00:00:00Z\" } or reference = { rolling = \"7d\" }";
        let time = |key: &str, text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    format!("monitor.reference.{key} `{text}` is not an RFC 3339 time like 2026-11-01T00:00:00Z: {e}")
                })
        };
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text)
                .ok()
                .and_then(|d| TimeDelta::from_std(d).ok())
                .filter(|d| *d > TimeDelta::zero())
                .ok_or_else(|| {
                    format!("monitor.reference.{key} `{text}` is not a duration like 7d or 24h")
                })
        };
        match self {
            ReferenceFile {
                from: Some(from),
                to: Some(to),
                rolling: None,
                span: None,
            } => {
                let (from, to) = (time("from", &from)?, time("to", &to)?);
                if from >= to {
                    return Err("monitor.reference: `from` must be before `to`".to_owned());
                }
                Ok(ReferenceSpec::Fixed { from, to })
            }
            ReferenceFile {
                from: None,
                to: None,
                rolling: Some(offset),
                span,
            } => Ok(ReferenceSpec::Rolling {
                offset: duration("rolling", &offset)?,
                span: span.map(|s| duration("span", &s)).transpose()?,
            }),
            _ => Err(format!(
                "monitor.reference takes `from` and `to`, or `rolling` (and optionally `span`): {FORMS}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<MonitorSpec, String> {
        toml::from_str::<MonitorFile>(text)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn references_and_thresholds_parse() {
        let spec = check(
            r#"reference = { from = "2026-11-01T00:00:00Z", to = "2026-11-08T00:00:00Z" }
on_drift = "fail"
psi = 0.25"#,
        )
        .unwrap();
        assert_eq!(spec.on_drift, OnDrift::Fail);
        assert_eq!(spec.thresholds.psi, 0.25);
        assert_eq!(spec.thresholds.js, DEFAULT_JS);
        assert!(matches!(spec.reference, Some(ReferenceSpec::Fixed { .. })));

        let rolling = check(r#"reference = { rolling = "7d" }"#).unwrap();
        let window = (
            "2026-11-25T10:00:00Z".parse().unwrap(),
            "2026-11-25T10:30:00Z".parse().unwrap(),
        );
        let (from, to) = rolling.reference.unwrap().range(window.0, window.1);
        assert_eq!(from.to_rfc3339(), "2026-11-18T10:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-18T10:30:00+00:00");

        let spanned = check(r#"reference = { rolling = "7d", span = "1d" }"#).unwrap();
        let (from, _) = spanned.reference.unwrap().range(window.0, window.1);
        assert_eq!(from.to_rfc3339(), "2026-11-17T10:30:00+00:00");
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, expected) in [
            ("psi = 0", "monitor.psi = 0 must be greater than 0"),
            (
                "js = 1.5",
                "monitor.js = 1.5 must be greater than 0 and at most 1",
            ),
            ("bins = 1", "monitor.bins = 1 must be between 2 and 100"),
            (
                r#"reference = { from = "yesterday", to = "2026-11-08T00:00:00Z" }"#,
                "monitor.reference.from `yesterday` is not an RFC 3339 time",
            ),
            (
                r#"reference = { from = "2026-11-08T00:00:00Z", to = "2026-11-01T00:00:00Z" }"#,
                "`from` must be before `to`",
            ),
            (
                r#"reference = { rolling = "7d", from = "2026-11-08T00:00:00Z" }"#,
                "monitor.reference takes `from` and `to`, or `rolling`",
            ),
            (
                r#"reference = { rolling = "soon" }"#,
                "monitor.reference.rolling `soon`",
            ),
            (r#"on_drift = "panic""#, "unknown variant `panic`"),
        ] {
            let err = check(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
