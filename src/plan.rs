//! Window planning: which half-open time ranges `[start, end)` a run scores.
//!
//! A scheduled run (no `--from/--to`) continues from the job's watermark, the end of the last
//! committed window, up to `now - lateness`. Missed schedule slots leave a longer gap, which the
//! job's `catch_up` policy turns into windows: `all` scores every missed window in order,
//! `latest` scores only the newest and reports the rest as skipped. A backfill (`--from/--to`)
//! scores an explicit range in window-size steps and leaves the watermark alone. A rescore
//! (`--rescore-model`) takes its windows from the ledger: see [`crate::db::lineage::windows_scored_by`].

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use crate::time::time_text;
use std::fmt;

use crate::spec::{CatchUp, WindowSpec};

/// A half-open time range of source rows: `start <= timestamp < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", time_text(self.start), time_text(self.end))
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, Copy)]
pub enum WindowRequest {
    /// Continue from the watermark as of `now` (the real clock, or `--at`).
    Scheduled { now: DateTime<Utc> },
    /// An explicit range (`--from/--to`): a backfill.
    Backfill {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// Re-score the committed windows whose ledger row says `model` (a sha256) scored them,
    /// within `range` if given (`--rescore-model`). Like a backfill, it leaves the watermark
    /// alone; its windows are read from the ledger once the run holds the shard.
    Rescore {
        model: [u8; 32],
        range: Option<Window>,
    },
}

impl WindowRequest {
    /// Whether the run asks for an explicit set of windows of every shard (a backfill or a
    /// rescore), rather than whatever is due.
    pub fn is_explicit(&self) -> bool {
        !matches!(self, WindowRequest::Scheduled { .. })
    }

    pub fn is_rescore(&self) -> bool {
        matches!(self, WindowRequest::Rescore { .. })
    }
}

/// The windows one run will score, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub windows: Vec<Window>,
    /// Whether committing these windows moves the watermark (scheduled runs) or not (backfills).
    pub moves_watermark: bool,
    /// `catch_up = "latest"`: the missed range that will not be scored, recorded in the ledger.
    pub skipped: Option<Window>,
    /// `catch_up = "all"`: windows still due after this run's `max_catch_up`.
    pub left_behind: usize,
}

impl Plan {
    /// A rescore's windows, as the ledger lists them: the watermark stays.
    pub fn rescore(windows: Vec<Window>) -> Plan {
        Plan {
            windows,
            moves_watermark: false,
            skipped: None,
            left_behind: 0,
        }
    }

    fn scheduled(windows: Vec<Window>) -> Plan {
        Plan {
            windows,
            moves_watermark: true,
            skipped: None,
            left_behind: 0,
        }
    }
}

/// The most windows a backfill splits into: each is a transaction and a ledger row, planned up
/// front.
pub const MAX_BACKFILL_WINDOWS: usize = 1_000_000;

/// Plan a run. `watermark` is the job's committed watermark, if it has one.
pub fn plan_windows(
    spec: &WindowSpec,
    watermark: Option<DateTime<Utc>>,
    request: WindowRequest,
) -> Result<Plan, String> {
    match request {
        WindowRequest::Rescore { .. } => {
            Err("a rescore's windows come from the ledger, not from a plan".to_owned())
        }
        WindowRequest::Backfill { from, to } => {
            // Microseconds: the finest time PostgreSQL stores.
            let (from, to) = (from.trunc_subsecs(6), to.trunc_subsecs(6));
            if from >= to {
                return Err(format!(
                    "window {} is empty: --from must be before --to",
                    Window {
                        start: from,
                        end: to
                    }
                ));
            }
            let count = windows_due(to - from, spec.size);
            let whole = Window {
                start: from,
                end: to,
            };
            if count > MAX_BACKFILL_WINDOWS {
                return Err(format!(
                    "the backfill of {whole} would be {count} windows of window.size, more than \
                     {MAX_BACKFILL_WINDOWS}: backfill it in parts"
                ));
            }
            let mut windows = Vec::with_capacity(count);
            let mut start = from;
            while start < to {
                let end = later(start, spec.size, 1)?.min(to);
                windows.push(Window { start, end });
                start = end;
            }
            Ok(Plan {
                windows,
                moves_watermark: false,
                skipped: None,
                left_behind: 0,
            })
        }
        WindowRequest::Scheduled { now } => {
            // Whole seconds: windows read well in logs and the ledger, and every database
            // stores them exactly.
            let end = now
                .trunc_subsecs(0)
                .checked_sub_signed(spec.lateness)
                .ok_or_else(|| beyond(now))?;
            let Some(watermark) = watermark else {
                // First run: one window, ending `lateness` before now.
                let start = end
                    .checked_sub_signed(spec.size)
                    .ok_or_else(|| beyond(end))?;
                return Ok(Plan::scheduled(vec![Window { start, end }]));
            };
            if watermark >= end {
                return Ok(Plan::scheduled(Vec::new())); // up to date
            }
            catch_up(spec, watermark, end)
        }
    }
}

/// `base` plus `n` windows of `size`, or why not: past the times batchscore handles.
fn later(base: DateTime<Utc>, size: TimeDelta, n: usize) -> Result<DateTime<Utc>, String> {
    let micros = i128::from(size.num_microseconds().unwrap_or(i64::MAX)) * n as i128;
    i64::try_from(micros)
        .ok()
        .and_then(|micros| base.checked_add_signed(TimeDelta::microseconds(micros)))
        .ok_or_else(|| beyond(base))
}

fn beyond(time: DateTime<Utc>) -> String {
    format!(
        "a window from {} is beyond the times batchscore handles: check window.size, \
         window.lateness and the watermark",
        time_text(time)
    )
}

/// Split `[watermark, end)` into windows of `size`, the last one taking the remainder (so a
/// run that fires a little late scores one slightly longer window rather than a sliver).
fn catch_up(
    spec: &WindowSpec,
    watermark: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Plan, String> {
    let due = windows_due(end - watermark, spec.size);
    let window = |i: usize| -> Result<Window, String> {
        let start = later(watermark, spec.size, i)?;
        let end = if i + 1 == due {
            end
        } else {
            later(start, spec.size, 1)?
        };
        Ok(Window { start, end })
    };
    Ok(match spec.catch_up {
        CatchUp::All => {
            let scored = due.min(spec.max_catch_up);
            Plan {
                left_behind: due - scored,
                ..Plan::scheduled((0..scored).map(window).collect::<Result<_, _>>()?)
            }
        }
        CatchUp::Latest => {
            let latest = window(due - 1)?;
            Plan {
                skipped: (latest.start > watermark).then_some(Window {
                    start: watermark,
                    end: latest.start,
                }),
                ..Plan::scheduled(vec![latest])
            }
        }
    })
}

/// Whole windows in `gap`, at least one.
fn windows_due(gap: TimeDelta, size: TimeDelta) -> usize {
    let whole = gap.num_microseconds().unwrap_or(i64::MAX)
        / size.num_microseconds().unwrap_or(i64::MAX).max(1);
    usize::try_from(whole).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn spec(catch_up: CatchUp) -> WindowSpec {
        WindowSpec {
            size: TimeDelta::minutes(30),
            lateness: TimeDelta::minutes(2),
            catch_up,
            max_catch_up: 4,
        }
    }

    fn scheduled(catch_up: CatchUp, watermark: Option<&str>, now: &str) -> Plan {
        plan_windows(
            &spec(catch_up),
            watermark.map(t),
            WindowRequest::Scheduled { now: t(now) },
        )
        .unwrap()
    }

    fn w(start: &str, end: &str) -> Window {
        Window {
            start: t(start),
            end: t(end),
        }
    }

    #[test]
    fn first_run_scores_one_window_ending_lateness_before_now() {
        let plan = scheduled(CatchUp::All, None, "2026-11-24T10:00:00.75Z");
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T09:28:00Z", "2026-11-24T09:58:00Z")]
        );
        assert!(plan.moves_watermark);
    }

    #[test]
    fn next_run_continues_from_the_watermark() {
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T10:30:00Z",
        );
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T09:58:00Z", "2026-11-24T10:28:00Z")]
        );
        // A late tick makes a slightly longer window, not a sliver.
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T10:30:07Z",
        );
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T09:58:00Z", "2026-11-24T10:28:07Z")]
        );
        // An early one a slightly shorter window.
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T10:20:00Z",
        );
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T09:58:00Z", "2026-11-24T10:18:00Z")]
        );
    }

    #[test]
    fn up_to_date_plans_nothing() {
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T10:00:00Z",
        );
        assert!(plan.windows.is_empty());
    }

    #[test]
    fn catch_up_all_scores_missed_windows_in_order_up_to_the_limit() {
        // Three missed slots: 10:30, 11:00, 11:30.
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T11:30:00Z",
        );
        assert_eq!(
            plan.windows,
            vec![
                w("2026-11-24T09:58:00Z", "2026-11-24T10:28:00Z"),
                w("2026-11-24T10:28:00Z", "2026-11-24T10:58:00Z"),
                w("2026-11-24T10:58:00Z", "2026-11-24T11:28:00Z"),
            ]
        );
        assert_eq!((plan.left_behind, plan.skipped), (0, None));
        // Six due, four allowed: the oldest four now, two left for the next run.
        let plan = scheduled(
            CatchUp::All,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T13:00:00Z",
        );
        assert_eq!(plan.windows.len(), 4);
        assert_eq!(plan.windows[3].end, t("2026-11-24T11:58:00Z"));
        assert_eq!(plan.left_behind, 2);
    }

    #[test]
    fn catch_up_latest_scores_the_newest_window_and_reports_the_gap() {
        let plan = scheduled(
            CatchUp::Latest,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T11:30:00Z",
        );
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T10:58:00Z", "2026-11-24T11:28:00Z")]
        );
        assert_eq!(
            plan.skipped,
            Some(w("2026-11-24T09:58:00Z", "2026-11-24T10:58:00Z"))
        );
        // No gap, nothing skipped.
        let plan = scheduled(
            CatchUp::Latest,
            Some("2026-11-24T09:58:00Z"),
            "2026-11-24T10:30:05Z",
        );
        assert_eq!(
            plan.windows,
            vec![w("2026-11-24T09:58:00Z", "2026-11-24T10:28:05Z")]
        );
        assert_eq!(plan.skipped, None);
    }

    #[test]
    fn backfill_steps_through_the_range_and_leaves_the_watermark() {
        let plan = plan_windows(
            &spec(CatchUp::All),
            Some(t("2026-11-24T12:00:00Z")),
            WindowRequest::Backfill {
                from: t("2026-11-24T08:00:00Z"),
                to: t("2026-11-24T09:10:00Z"),
            },
        )
        .unwrap();
        assert_eq!(
            plan.windows,
            vec![
                w("2026-11-24T08:00:00Z", "2026-11-24T08:30:00Z"),
                w("2026-11-24T08:30:00Z", "2026-11-24T09:00:00Z"),
                w("2026-11-24T09:00:00Z", "2026-11-24T09:10:00Z"),
            ]
        );
        assert!(!plan.moves_watermark);
    }

    #[test]
    fn empty_backfill_is_refused() {
        let at = t("2026-11-24T10:00:00Z");
        let err = plan_windows(
            &spec(CatchUp::All),
            None,
            WindowRequest::Backfill { from: at, to: at },
        )
        .unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
