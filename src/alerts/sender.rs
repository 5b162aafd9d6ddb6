//! [`Alerts`]: the routes and the work in flight. Each change is taken at each route by
//! compare-and-set in `batchscore_alerts`, in the order changes were raised, and what this
//! process won is delivered on the route's own worker.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;

use super::routes::{Kind, Route, Routes};
use super::{Alert, Change, Event, Status, deliver, payload};
use crate::db::Backend;
use crate::db::alerts::{self as store, AlertKey, Fired};

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
