//! Alerts: a person told, once, when a job fails, falls behind, drifts, writes bad rows or
//! loses realized performance, and told again when it recovers.
//!
//! - [`routes`]: `alerts.toml`, where alerts go;
//! - this module: what happened ([`Alert`]) and whether it holds or cleared ([`Change`]);
//! - [`change`]: which changes a window's end, a lateness check or an evaluation makes;
//! - [`sender`]: [`Alerts`], which takes each change at each route by compare-and-set in
//!   `batchscore_alerts` ([`crate::db::alerts`]) and delivers what it took, in order;
//! - [`payload`]: what a webhook, Slack and PagerDuty receive;
//! - [`deliver`]: the request, its timeout and retries.
//!
//! State lives in the database the jobs share, so two daemons, a cron `run-job` and a backfill
//! that see one failure send one alert. Delivery happens after the window's commit, on workers
//! of its own: a slow or failing receiver never delays a window nor changes an exit code.

mod change;
pub mod deliver;
pub mod payload;
pub mod routes;
mod sender;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use self::change::{Drifted, WindowEnd, late_changes, performance_change, window_changes};
pub use self::sender::{Alerts, Counters};
use crate::db::alerts::Cause;
use crate::plan::Window;
use crate::shard::Shard;

/// The longest message an alert carries (characters): a window's error can be long.
const MESSAGE_CHARS: usize = 1000;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A window failed (not busy, not interrupted).
    Failed,
    /// The watermark lags more than the job's `late_after`.
    Late,
    /// A window drifted from its reference.
    Drift,
    /// A window had more bad rows than it accepts, or had rows quarantined.
    BadRows,
    /// A realized metric crossed its bound.
    Performance,
    /// `batchscore alerts test`.
    Test,
}

impl Event {
    /// The names a route's `events` may list.
    pub const NAMES: [&str; 6] = [
        "failed",
        "late",
        "drift",
        "bad_rows",
        "performance",
        "resolved",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failed => "failed",
            Event::Late => "late",
            Event::Drift => "drift",
            Event::BadRows => "bad_rows",
            Event::Performance => "performance",
            Event::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<Event> {
        [
            Event::Failed,
            Event::Late,
            Event::Drift,
            Event::BadRows,
            Event::Performance,
        ]
        .into_iter()
        .find(|e| e.as_str() == name)
    }

    /// A headline word for it.
    pub fn title(self) -> &'static str {
        match self {
            Event::Failed => "Window failed",
            Event::Late => "Job late",
            Event::Drift => "Drift",
            Event::BadRows => "Bad rows",
            Event::Performance => "Realized performance",
            Event::Test => "Test alert",
        }
    }

    /// PagerDuty's severity of it.
    pub fn severity(self) -> &'static str {
        match self {
            Event::Failed | Event::Late => "error",
            Event::Drift | Event::BadRows | Event::Performance => "warning",
            Event::Test => "info",
        }
    }
}

/// Whether an alert is news or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// What happened, as every route's payload tells it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub event: Event,
    pub job: String,
    /// The shard's index; `None` for what concerns the whole job.
    pub shard: Option<u32>,
    pub window: Option<Window>,
    pub run_id: Option<String>,
    pub message: String,
    /// The event's figures.
    pub details: Value,
    pub occurred_at: DateTime<Utc>,
}

impl Alert {
    fn new(event: Event, job: &str, shard: Option<Shard>, message: String) -> Alert {
        Alert {
            event,
            job: job.to_owned(),
            shard: shard.map(|s| s.index),
            window: None,
            run_id: None,
            message: payload::cut(&message, MESSAGE_CHARS),
            details: Value::Null,
            occurred_at: Utc::now(),
        }
    }

    /// One per job, shard and event: PagerDuty's incident, and what ties a resolution to its
    /// alert.
    pub fn dedup_key(&self) -> String {
        let shard = self
            .shard
            .map_or_else(|| "all".to_owned(), |s| s.to_string());
        format!("{}/{shard}/{}", self.job, self.event.as_str())
    }

    fn cause(&self) -> Cause<'_> {
        Cause {
            run_id: self.run_id.as_deref(),
            window: self.window,
            message: &self.message,
        }
    }

    fn shard_key(&self) -> i64 {
        self.shard.map_or(-1, i64::from)
    }
}

/// A condition that holds (`firing`) or has cleared.
#[derive(Debug, Clone)]
pub struct Change {
    pub alert: Alert,
    pub firing: bool,
    /// Only routes that list the event take it (rows quarantined in a committed window).
    pub only_if_named: bool,
}

impl Change {
    fn fire(alert: Alert) -> Change {
        Change {
            alert,
            firing: true,
            only_if_named: false,
        }
    }

    fn clear(alert: Alert) -> Change {
        Change {
            alert,
            firing: false,
            only_if_named: false,
        }
    }
}
