//! Window planning: which half-open time range `[start, end)` a run scores.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use std::fmt;

use crate::spec::WindowSpec;

/// A half-open time range of source rows: `start <= timestamp < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {})",
            self.start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            self.end.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, Copy)]
pub enum WindowRequest {
    /// The latest complete window as of `now`: `[now - size - lateness, now - lateness)`.
    Latest { now: DateTime<Utc> },
    /// An explicit range (`--from/--to`).
    Explicit {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// Turn a request into a window, refusing empty or reversed ranges.
pub fn plan_window(spec: &WindowSpec, request: WindowRequest) -> Result<Window, String> {
    let window = match request {
        WindowRequest::Latest { now } => {
            // Whole seconds: windows read well in logs and the ledger, and every database
            // stores them exactly.
            let end = now.trunc_subsecs(0) - spec.lateness;
            Window {
                start: end - spec.size,
                end,
            }
        }
        // Microseconds: the finest time PostgreSQL stores.
        WindowRequest::Explicit { from, to } => Window {
            start: from.trunc_subsecs(6),
            end: to.trunc_subsecs(6),
        },
    };
    if window.start >= window.end {
        return Err(format!(
            "window {window} is empty: --from must be before --to"
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn spec() -> WindowSpec {
        WindowSpec {
            size: TimeDelta::minutes(30),
            lateness: TimeDelta::minutes(2),
        }
    }

    #[test]
    fn latest_window_ends_lateness_before_now() {
        let w = plan_window(
            &spec(),
            WindowRequest::Latest {
                now: t("2026-11-24T10:00:00.75Z"),
            },
        )
        .unwrap();
        assert_eq!(w.start, t("2026-11-24T09:28:00Z"));
        assert_eq!(w.end, t("2026-11-24T09:58:00Z"));
    }

    #[test]
    fn explicit_window_must_not_be_empty() {
        let at = t("2026-11-24T10:00:00Z");
        let err = plan_window(&spec(), WindowRequest::Explicit { from: at, to: at }).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
