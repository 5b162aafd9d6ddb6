//! Which alerts a moment changes: a window's end ([`window_changes`]), the watermarks against
//! now ([`late_changes`]), an evaluation ([`performance_change`]). Pure: what fires and what
//! clears, for [`super::Alerts`] to take.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{Alert, Change, Event, MESSAGE_CHARS, payload};
use crate::db::ledger::ShardWatermark;
use crate::error::{BadWindow, Contention, Interrupted, Unresponsive};
use crate::plan::Window;
use crate::shard::{Shard, job_label};
use crate::spec::JobSpec;
use crate::time::time_text;

/// How a window ended, as alerts see it.
pub enum WindowEnd<'a> {
    Committed {
        run_id: &'a str,
        /// Its drift, under `on_drift = "warn"`.
        drift: Option<&'a Drifted>,
        rows_read: i64,
        rows_bad: i64,
        rows_quarantined: i64,
    },
    Failed {
        run_id: &'a str,
        error: &'a anyhow::Error,
    },
}

/// A committed window's drift: the summary and each drifted column's figures.
#[derive(Debug, Clone)]
pub struct Drifted {
    pub summary: String,
    pub columns: Vec<Value>,
}

/// What a window's end changes: a commit clears `failed`, and `drift` and `bad_rows` unless it
/// has them too; a failure fires the event of its cause. A window stopped by a signal, or
/// refused because another run holds the job, says nothing about the job's health.
pub fn window_changes(job: &str, shard: Shard, window: Window, end: &WindowEnd<'_>) -> Vec<Change> {
    let name = job_label(job, shard);
    let at = |event: Event, run_id: &str, message: String| {
        let mut alert = Alert::new(event, job, Some(shard), message);
        alert.window = Some(window);
        alert.run_id = Some(run_id.to_owned());
        alert
    };
    match *end {
        WindowEnd::Committed {
            run_id,
            drift,
            rows_read,
            rows_bad,
            rows_quarantined,
        } => {
            let recovered = |event: Event| {
                Change::clear(at(
                    event,
                    run_id,
                    format!("job `{name}`: window {window} committed"),
                ))
            };
            let mut changes = vec![recovered(Event::Failed)];
            changes.push(match drift {
                Some(drifted) => {
                    let mut alert = at(
                        Event::Drift,
                        run_id,
                        format!(
                            "job `{name}`: window {window} drifted from its reference: {}",
                            drifted.summary
                        ),
                    );
                    alert.details = json!({"columns": drifted.columns});
                    Change::fire(alert)
                }
                None => recovered(Event::Drift),
            });
            changes.push(match rows_bad {
                0 => recovered(Event::BadRows),
                bad => {
                    let mut alert = at(
                        Event::BadRows,
                        run_id,
                        format!(
                            "job `{name}`: window {window} committed with {bad} bad row(s) of {rows_read}, {rows_quarantined} quarantined"
                        ),
                    );
                    alert.details = json!({
                        "rows_read": rows_read,
                        "rows_bad": bad,
                        "rows_quarantined": rows_quarantined,
                    });
                    Change {
                        alert,
                        firing: true,
                        only_if_named: true,
                    }
                }
            });
            changes
        }
        WindowEnd::Failed { run_id, error } => {
            if error.is::<Interrupted>() || error.is::<Contention>() || error.is::<Unresponsive>() {
                return Vec::new();
            }
            let event = match error.downcast_ref::<BadWindow>() {
                Some(BadWindow::Drift { .. }) => Event::Drift,
                Some(_) => Event::BadRows,
                None => Event::Failed,
            };
            let mut alert = at(
                event,
                run_id,
                format!("job `{name}`: window {window} failed: {error:#}"),
            );
            alert.details = match error.downcast_ref::<BadWindow>() {
                Some(BadWindow::TooMany {
                    bad,
                    read,
                    max_fraction,
                    summary,
                    ..
                }) => json!({
                    "error": payload::cut(&format!("{error:#}"), MESSAGE_CHARS),
                    "rows_read": read,
                    "rows_bad": bad,
                    "fraction": *bad as f64 / (*read).max(1) as f64,
                    "max_fraction": max_fraction,
                    "reasons": summary,
                }),
                _ => json!({"error": payload::cut(&format!("{error:#}"), MESSAGE_CHARS)}),
            };
            vec![Change::fire(alert)]
        }
    }
}

/// How far behind the job's watermark may lag: `[alerts] late_after`, or twice the schedule's
/// interval (the one starting next) plus the window's lateness.
pub fn late_after(spec: &JobSpec, now: DateTime<Utc>) -> Option<TimeDelta> {
    if let Some(late) = spec.alerts.late_after {
        return Some(late);
    }
    let next = crate::schedule::next_fire(&spec.schedule, now)?;
    let after = crate::schedule::next_fire(&spec.schedule, next)?;
    Some((after - next) * 2 + spec.window.lateness)
}

/// Whether each shard of the job is late `now`, from every job's watermarks (one read serves
/// every job; a watermark of another shard count, left by a reshard, is not the job's).
pub fn late_changes(spec: &JobSpec, marks: &[ShardWatermark], now: DateTime<Utc>) -> Vec<Change> {
    marks
        .iter()
        .filter(|m| m.job == spec.name && m.shard.count == spec.source.shards)
        .filter_map(|m| late_change(spec, m.shard, m.watermark, now))
        .collect()
}

/// Whether a shard whose watermark is `watermark` is late `now`.
fn late_change(
    spec: &JobSpec,
    shard: Shard,
    watermark: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Change> {
    let bound = late_after(spec, now)?;
    let lag = now - watermark;
    let name = job_label(&spec.name, shard);
    let late = lag > bound;
    let message = match late {
        true => format!(
            "job `{name}`: its watermark {} lags {} behind now, more than {} (alerts.late_after)",
            time_text(watermark),
            seconds_text(lag),
            seconds_text(bound)
        ),
        false => format!(
            "job `{name}`: its watermark {} is back within {} of now",
            time_text(watermark),
            seconds_text(bound)
        ),
    };
    let mut alert = Alert::new(Event::Late, &spec.name, Some(shard), message);
    alert.details = json!({
        "watermark": time_text(watermark),
        "lag_seconds": lag.num_seconds(),
        "late_after_seconds": bound.num_seconds(),
    });
    Some(match late {
        true => Change::fire(alert),
        false => Change::clear(alert),
    })
}

/// Whether the job's headline realized metric, in its latest final window, is past its bound.
pub fn performance_change(spec: &JobSpec, summary: &crate::performance::Summary) -> Option<Change> {
    let labels = spec.labels.as_ref()?;
    let metric = labels.task.headline();
    let value = summary.latest("champion", metric)?;
    let crossed = match (labels.alert_below, labels.alert_above) {
        (Some(below), _) if value < below => Some(format!("below labels.alert_below = {below}")),
        (_, Some(above)) if value > above => Some(format!("above labels.alert_above = {above}")),
        _ => None,
    };
    let window = summary
        .window
        .map_or_else(String::new, |w| format!(" in window {w}"));
    let message = match &crossed {
        Some(bound) => format!(
            "job `{}`: realized {metric} {value:.4}{window}, {bound}",
            spec.name
        ),
        None => format!(
            "job `{}`: realized {metric} {value:.4}{window}, within its bounds",
            spec.name
        ),
    };
    let mut alert = Alert::new(Event::Performance, &spec.name, None, message);
    alert.window = summary.window;
    alert.details = json!({
        "metric": metric,
        "value": value,
        "alert_below": labels.alert_below,
        "alert_above": labels.alert_above,
    });
    Some(match crossed {
        Some(_) => Change::fire(alert),
        None => Change::clear(alert),
    })
}

fn seconds_text(span: TimeDelta) -> String {
    let rounded = Duration::from_secs(span.num_seconds().max(0).unsigned_abs());
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        let start = DateTime::parse_from_rfc3339("2026-01-10T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Window {
            start,
            end: start + TimeDelta::minutes(10),
        }
    }

    fn changes_of(error: anyhow::Error) -> Vec<(Event, bool)> {
        let end = WindowEnd::Failed {
            run_id: "r1",
            error: &error,
        };
        window_changes("job", Shard { index: 1, count: 2 }, window(), &end)
            .iter()
            .map(|c| (c.alert.event, c.firing))
            .collect()
    }

    #[test]
    fn a_failure_fires_the_event_of_its_cause() {
        assert_eq!(
            changes_of(anyhow::anyhow!("disk on fire")),
            [(Event::Failed, true)]
        );
        let drift = BadWindow::Drift {
            job: "job".into(),
            summary: "vibration psi 0.9".into(),
        };
        assert_eq!(changes_of(drift.into()), [(Event::Drift, true)]);
        let policy = BadWindow::Policy {
            first: "row 3".into(),
        };
        assert_eq!(changes_of(policy.into()), [(Event::BadRows, true)]);
        let busy = Contention::Busy {
            job: "job".into(),
            holder: None,
        };
        assert!(changes_of(busy.into()).is_empty(), "busy is not trouble");
    }

    #[test]
    fn a_commit_clears_what_it_does_not_have() {
        let end = WindowEnd::Committed {
            run_id: "r2",
            drift: None,
            rows_read: 10,
            rows_bad: 2,
            rows_quarantined: 2,
        };
        let changes = window_changes("job", Shard { index: 1, count: 2 }, window(), &end);
        let seen: Vec<(Event, bool, bool)> = changes
            .iter()
            .map(|c| (c.alert.event, c.firing, c.only_if_named))
            .collect();
        assert_eq!(
            seen,
            [
                (Event::Failed, false, false),
                (Event::Drift, false, false),
                (Event::BadRows, true, true)
            ]
        );
        let alert = &changes[2].alert;
        assert_eq!(alert.dedup_key(), "job/1/bad_rows");
        assert_eq!(alert.details["rows_quarantined"], 2);
        assert!(
            alert
                .message
                .starts_with("job `job (shard 1/2)`: window [2026-01-10T00:10:00Z"),
            "{}",
            alert.message
        );
    }

    #[test]
    fn messages_are_bounded() {
        let long = "e".repeat(10_000);
        let changes = changes_of(anyhow::anyhow!(long));
        assert_eq!(changes.len(), 1);
        let end = WindowEnd::Failed {
            run_id: "r",
            error: &anyhow::anyhow!("e".repeat(10_000)),
        };
        let alert = &window_changes("j", Shard { index: 0, count: 1 }, window(), &end)[0].alert;
        assert_eq!(alert.message.chars().count(), MESSAGE_CHARS);
    }
}
