//! Alerts: a person told, once, when a job fails, falls behind, drifts, writes bad rows or
//! loses realized performance, and told again when it recovers.
//!
//! - [`routes`]: `alerts.toml`, where alerts go;
//! - this module: what happened ([`Alert`]), which changes a window's end, a lateness check or an
//!   evaluation makes ([`Change`]), and [`Alerts`], which takes each change at each route by
//!   compare-and-set in `batchscore_alerts` ([`crate::db::alerts`]) and delivers what it took;
//! - [`payload`]: what a webhook, Slack and PagerDuty receive;
//! - [`deliver`]: the request, its timeout and retries.
//!
//! State lives in the database the jobs share, so two daemons, a cron `run-job` and a backfill
//! that see one failure send one alert. Delivery happens after the window's commit, on workers
//! of its own: a slow or failing receiver never delays a window nor changes an exit code.

pub mod deliver;
pub mod payload;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};

use self::routes::{Kind, Route, Routes};
use crate::db::Backend;
use crate::db::alerts::{self as store, AlertKey, Cause, Fired};
use crate::error::{BadWindow, Contention, Interrupted, Unresponsive};
use crate::plan::Window;
use crate::shard::{Shard, job_label};
use crate::spec::JobSpec;
use crate::time::time_text;

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

/// Whether a shard whose watermark is `watermark` is late `now`.
pub fn late_change(
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteEventLabels {
    pub route: String,
    pub event: String,
    pub status: String,
}

/// What deliveries counted: the daemon serves them in `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Deliveries a route accepted, by event and status.
    pub sent: Family<RouteEventLabels, Counter>,
    /// Deliveries that failed after their tries.
    pub failed: Family<RouteLabel, Counter>,
}

/// The open alerts (event, route) of each job (and shard) a task has read.
type OpenAlerts = std::collections::HashMap<(String, i64), Vec<(String, String)>>;

/// Work queued for a worker: a change taken at every route, or one delivery.
type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A worker that runs its work one item at a time, in the order it was queued.
struct Queue(tokio::sync::mpsc::UnboundedSender<Work>);

/// What the workers share: the routes and how to reach them, and the count of work queued and
/// not yet done (for [`Alerts::settle`]).
struct Shared {
    routes: Routes,
    client: reqwest::Client,
    host: String,
    /// The daemon's status page (`--public-url`), linked from each alert.
    link: Option<String>,
    counters: Counters,
    pending: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Shared {
    fn queue(self: &Arc<Self>) -> Queue {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Work>();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(work) = receiver.recv().await {
                work.await;
                shared.done();
            }
        });
        Queue(sender)
    }

    fn enqueue(&self, queue: &Queue, work: Work) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if queue.0.send(work).is_err() {
            self.done();
        }
    }

    fn done(&self) {
        if self
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.idle.notify_waiters();
        }
    }
}

/// The routes, and the work in flight. Changes are taken in the order they were raised, one
/// at a time (a window's drift, then the next window's clearing of it, reach the database in
/// that order); each route delivers in that order too, on a worker of its own, so a receiver
/// that hangs delays only its own route's alerts.
pub struct Alerts {
    shared: Arc<Shared>,
    changes: Queue,
    deliveries: Vec<Queue>,
}

impl Alerts {
    /// The routes, ready to send; starts the workers on the current runtime.
    pub fn new(routes: Routes, link: Option<String>, counters: Counters) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            routes,
            client: deliver::client()?,
            host: crate::claim::hostname(),
            link,
            counters,
            pending: 0.into(),
            idle: tokio::sync::Notify::new(),
        });
        let deliveries = shared
            .routes
            .routes
            .iter()
            .map(|_| shared.queue())
            .collect();
        Ok(Alerts {
            changes: shared.queue(),
            deliveries,
            shared,
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.shared.routes.routes
    }

    /// Take `changes` at every route they concern and deliver what was taken, after what was
    /// raised before: the caller goes on at once.
    pub fn raise<B: Backend>(self: &Arc<Self>, db: &B, changes: Vec<Change>) {
        if changes.is_empty() || self.routes().is_empty() {
            return;
        }
        let (alerts, db) = (Arc::clone(self), db.clone());
        let work = Box::pin(async move {
            // The open alerts of each job's shard, read once for all the clears that concern it.
            let mut open = std::collections::HashMap::new();
            for change in changes {
                alerts.take(&db, &change, &mut open).await;
            }
        });
        self.shared.enqueue(&self.changes, work);
    }

    /// Wait until everything raised so far is taken and delivered (each delivery is bounded:
    /// at most 3 tries within 60 s).
    pub async fn settle(&self) {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self
                .shared
                .pending
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            idle.await;
        }
    }

    /// One change at each route: a compare-and-set in `batchscore_alerts`, then, where this
    /// process won it, the delivery, queued on the route's worker.
    async fn take<B: Backend>(self: &Arc<Self>, db: &B, change: &Change, open: &mut OpenAlerts) {
        let alert = &change.alert;
        let scope = (alert.job.clone(), alert.shard_key());
        if !change.firing && !open.contains_key(&scope) {
            // A clear is usually of nothing: read what is open, once, and write only that.
            match store::open_alerts(db.pool(), &alert.job, alert.shard_key()).await {
                Ok(found) => {
                    open.insert(scope.clone(), found);
                }
                Err(err) => {
                    tracing::warn!(job = %alert.job, error = %format!("{err:#}"), "could not read the open alerts");
                    return;
                }
            }
        }
        let is_open = |route: &str| {
            open.get(&scope).is_some_and(|found| {
                found
                    .iter()
                    .any(|(event, r)| event == alert.event.as_str() && r == route)
            })
        };
        for (index, route) in self.routes().iter().enumerate() {
            if !route.covers(&alert.job) {
                continue;
            }
            let key = AlertKey {
                job: &alert.job,
                shard: alert.shard_key(),
                event: alert.event.as_str(),
                route: &route.name,
            };
            let status = match change.firing {
                true if !route.wants(key.event, change.only_if_named) => continue,
                true => {
                    match store::fire(db.pool(), key, route.repeat_every, alert.cause()).await {
                        Ok(Fired::Opened | Fired::Repeated) => Status::Firing,
                        Ok(Fired::Held) => continue,
                        Err(err) => {
                            tracing::warn!(job = %alert.job, route = %route.name, error = %format!("{err:#}"), "could not record the alert; not sent");
                            continue;
                        }
                    }
                }
                false if !is_open(&route.name) => continue,
                false => match store::resolve(db.pool(), key).await {
                    Ok(true) if route.wants("resolved", false) => Status::Resolved,
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(job = %alert.job, route = %route.name, error = %format!("{err:#}"), "could not record the resolution; not sent");
                        continue;
                    }
                },
            };
            let (alerts, alert) = (Arc::clone(self), alert.clone());
            // Failures are counted and logged inside; the caller's work is done already.
            let delivery = Box::pin(async move {
                let route = &alerts.routes()[index];
                let _ = alerts.deliver(route, &alert, status).await;
            });
            self.shared.enqueue(&self.deliveries[index], delivery);
        }
    }

    /// Send one alert to one route, counting how it went.
    pub async fn deliver(
        &self,
        route: &Route,
        alert: &Alert,
        status: Status,
    ) -> Result<deliver::Answer, String> {
        let link = self.shared.link.as_deref();
        let (body, headers) = match route.kind {
            Kind::Webhook => {
                let body = payload::webhook(alert, status, link);
                let mut headers = vec![(
                    "X-Batchscore-Timestamp",
                    alert.occurred_at.timestamp().to_string(),
                )];
                if let Some(secret) = &route.secret {
                    headers.push((
                        "X-Batchscore-Signature",
                        payload::signature(secret.expose(), &body),
                    ));
                }
                (body, headers)
            }
            Kind::Slack => (
                serde_json::to_vec(&payload::slack(alert, status, link)).expect("JSON"),
                Vec::new(),
            ),
            Kind::PagerDuty => {
                let key = route.routing_key.as_ref().map_or("", |k| k.expose());
                let event = payload::pagerduty(alert, status, key, &self.shared.host, link);
                (serde_json::to_vec(&event).expect("JSON"), Vec::new())
            }
        };
        let outcome = deliver::post(&self.shared.client, route, body, &headers)
            .await
            .map_err(|problem| redact(problem, route));
        match &outcome {
            Ok(answer) => {
                self.shared
                    .counters
                    .sent
                    .get_or_create(&RouteEventLabels {
                        route: route.name.clone(),
                        event: alert.event.as_str().to_owned(),
                        status: status.as_str().to_owned(),
                    })
                    .inc();
                tracing::info!(route = %route.name, job = %alert.job, event = alert.event.as_str(), status = status.as_str(), http = answer.status, tries = answer.tries, "alert delivered");
            }
            Err(problem) => {
                self.shared
                    .counters
                    .failed
                    .get_or_create(&RouteLabel {
                        route: route.name.clone(),
                    })
                    .inc();
                tracing::warn!(route = %route.name, job = %alert.job, event = alert.event.as_str(), status = status.as_str(), error = %problem, "alert not delivered");
            }
        }
        outcome
    }

    /// A test alert for `alerts test`.
    pub fn test_alert(&self) -> Alert {
        let mut alert = Alert::new(
            Event::Test,
            "batchscore",
            None,
            format!(
                "a test alert from batchscore on {}: this route works",
                self.shared.host
            ),
        );
        alert.details = json!({"test": true});
        alert
    }
}

/// `problem` with anything of the route's secrets taken out, whatever said it.
fn redact(problem: String, route: &Route) -> String {
    let mut problem = problem;
    for secret in [
        Some(&route.url),
        route.routing_key.as_ref(),
        route.secret.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if !secret.expose().is_empty() {
            problem = problem.replace(secret.expose(), "[redacted]");
        }
    }
    problem
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
