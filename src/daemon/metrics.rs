//! The daemon's Prometheus metrics, per job: what `/metrics` serves.
//!
//! Window counters follow the ledger exactly (one increment per ledger row the daemon writes,
//! by the same status), so a scrape and `batchscore status` always agree.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::monitor::profile::Role;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub job: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColumnLabels {
    pub job: String,
    pub column: String,
    /// `feature` or `output`: a result column may share its name with a feature.
    pub role: String,
}

/// A result column the challenger is compared on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultColumnLabels {
    pub job: String,
    pub column: String,
}

/// A realized metric of one of the job's models.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelMetricLabels {
    pub job: String,
    pub metric: String,
    /// `champion` or `challenger`.
    pub model: String,
}

/// A bound on a realized metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub job: String,
    pub metric: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    /// Ledger rows written, by status: succeeded, failed, skipped.
    pub windows: Family<OutcomeLabels, Counter>,
    /// Runs (one claim, one or more windows), by outcome: ok, failed, busy, interrupted.
    pub runs: Family<OutcomeLabels, Counter>,
    /// Scheduler ticks skipped because the job was still running.
    pub ticks_skipped: Family<JobLabel, Counter>,
    pub rows_read: Family<JobLabel, Counter>,
    pub rows_written: Family<JobLabel, Counter>,
    /// Rows read but not written: bad rows (quarantined or skipped) and the rows of windows that
    /// failed.
    pub rows_rejected: Family<JobLabel, Counter>,
    /// Rows found bad (quarantined, skipped, or in a window they failed), as the ledger counts.
    pub rows_bad: Family<JobLabel, Counter>,
    pub run_seconds: Family<JobLabel, Histogram, fn() -> Histogram>,
    pub last_success: Family<JobLabel, FloatGauge>,
    pub watermark_lag: Family<JobLabel, FloatGauge>,
    pub next_run: Family<JobLabel, FloatGauge>,
    /// Seconds between the job's next two scheduled runs, for alerts in schedule periods.
    pub schedule_interval: Family<JobLabel, FloatGauge>,
    /// The job's `bad_rows.max_fraction`, for the bad-row alert.
    pub bad_rows_max_fraction: Family<JobLabel, FloatGauge>,
    /// Each feature's and output's latest drift score against the job's reference (PSI for
    /// numbers, Jensen–Shannon distance for categories).
    pub drift_score: Family<ColumnLabels, FloatGauge>,
    /// The threshold `drift_score` is judged against.
    pub drift_threshold: Family<ColumnLabels, FloatGauge>,
    /// Windows in which a column was found in drift.
    pub drift_alerts: Family<ColumnLabels, Counter>,
    /// Runs that could not reach the model registry and scored with the cached version.
    pub model_registry_errors: Family<JobLabel, Counter>,
    /// Committed windows whose challenger rows were skipped.
    pub challenger_skipped: Family<JobLabel, Counter>,
    /// The latest window's share of rows the challenger gave the model's label, per label column.
    pub challenger_agreement: Family<ResultColumnLabels, FloatGauge>,
    /// The latest window's mean absolute difference between challenger and model, per number
    /// column.
    pub challenger_mean_abs_diff: Family<ResultColumnLabels, FloatGauge>,
    /// The latest final window's realized metrics, per model (`[labels]`).
    pub model_metric: Family<ModelMetricLabels, FloatGauge>,
    /// The latest final window's labelled share of scored rows.
    pub label_coverage: Family<JobLabel, FloatGauge>,
    /// `labels.alert_below` and `labels.alert_above`, on the headline metric.
    pub model_metric_alert_below: Family<MetricLabels, FloatGauge>,
    pub model_metric_alert_above: Family<MetricLabels, FloatGauge>,
    /// Heap SQLite holds in this process (its page caches, statements, schemas), read at
    /// each scrape: bounded by the backend's soft heap limit.
    pub sqlite_memory: Gauge,
    /// Alerts delivered, by route, event and status; and deliveries that failed, by route.
    pub alerts: crate::alerts::Counters,
}

fn run_seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("batchscore");
        let metrics = Metrics {
            windows: Family::default(),
            runs: Family::default(),
            ticks_skipped: Family::default(),
            rows_read: Family::default(),
            rows_written: Family::default(),
            rows_rejected: Family::default(),
            rows_bad: Family::default(),
            run_seconds: Family::new_with_constructor(run_seconds_histogram),
            last_success: Family::default(),
            watermark_lag: Family::default(),
            next_run: Family::default(),
            schedule_interval: Family::default(),
            bad_rows_max_fraction: Family::default(),
            drift_score: Family::default(),
            drift_threshold: Family::default(),
            drift_alerts: Family::default(),
            model_registry_errors: Family::default(),
            challenger_skipped: Family::default(),
            challenger_agreement: Family::default(),
            challenger_mean_abs_diff: Family::default(),
            model_metric: Family::default(),
            label_coverage: Family::default(),
            model_metric_alert_below: Family::default(),
            model_metric_alert_above: Family::default(),
            sqlite_memory: Gauge::default(),
            alerts: crate::alerts::Counters::default(),
            registry: Registry::default(),
        };
        registry.register(
            "windows",
            "Windows recorded in the ledger, by status",
            metrics.windows.clone(),
        );
        registry.register(
            "runs",
            "Runs by outcome (ok, failed, busy, interrupted)",
            metrics.runs.clone(),
        );
        registry.register(
            "ticks_skipped",
            "Schedule ticks skipped because the job was still running",
            metrics.ticks_skipped.clone(),
        );
        registry.register("rows_read", "Source rows read", metrics.rows_read.clone());
        registry.register(
            "rows_written",
            "Result rows written",
            metrics.rows_written.clone(),
        );
        registry.register(
            "rows_rejected",
            "Rows read but not written: bad rows, and the rows of windows that failed",
            metrics.rows_rejected.clone(),
        );
        registry.register(
            "rows_bad",
            "Rows found bad (quarantined, skipped, or failing their window)",
            metrics.rows_bad.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Duration of runs",
            metrics.run_seconds.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the job's last window committed",
            metrics.last_success.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Seconds between now and the job's watermark",
            metrics.watermark_lag.clone(),
        );
        registry.register(
            "next_run_timestamp_seconds",
            "Unix time of the job's next scheduled run",
            metrics.next_run.clone(),
        );
        registry.register(
            "schedule_interval_seconds",
            "Seconds between the job's next two scheduled runs",
            metrics.schedule_interval.clone(),
        );
        registry.register(
            "bad_rows_max_fraction",
            "The job's bad_rows.max_fraction",
            metrics.bad_rows_max_fraction.clone(),
        );
        registry.register(
            "drift_score",
            "Latest drift score of a feature or output against the job's reference (PSI, or Jensen-Shannon distance for categories)",
            metrics.drift_score.clone(),
        );
        registry.register(
            "drift_threshold",
            "The threshold drift_score is judged against (monitor.psi or monitor.js)",
            metrics.drift_threshold.clone(),
        );
        registry.register(
            "drift_alerts",
            "Windows in which a feature or output was found in drift",
            metrics.drift_alerts.clone(),
        );
        registry.register(
            "model_registry_errors",
            "Runs that could not reach the model registry and scored with the version the job resolved last, from the cache",
            metrics.model_registry_errors.clone(),
        );
        registry.register(
            "challenger_skipped_windows",
            "Committed windows whose challenger rows were skipped (it failed to load or score)",
            metrics.challenger_skipped.clone(),
        );
        registry.register(
            "challenger_agreement",
            "Share of the latest window's rows the challenger gave the model's label, per label column",
            metrics.challenger_agreement.clone(),
        );
        registry.register(
            "challenger_mean_abs_diff",
            "Mean absolute difference between challenger and model on the latest window, per number column",
            metrics.challenger_mean_abs_diff.clone(),
        );
        registry.register(
            "model_metric",
            "Realized performance of the latest final window against the job's labels, per model (AUC, log loss, ... or MAE, RMSE, ...)",
            metrics.model_metric.clone(),
        );
        registry.register(
            "label_coverage",
            "Share of the latest final window's scored rows that have a label",
            metrics.label_coverage.clone(),
        );
        registry.register(
            "model_metric_alert_below",
            "labels.alert_below: the headline metric (AUC) should stay above this",
            metrics.model_metric_alert_below.clone(),
        );
        registry.register(
            "model_metric_alert_above",
            "labels.alert_above: the headline metric (MAE) should stay below this",
            metrics.model_metric_alert_above.clone(),
        );
        registry.register(
            "alerts_sent",
            "Alerts a route accepted, by event and status (firing, resolved)",
            metrics.alerts.sent.clone(),
        );
        registry.register(
            "alerts_failed",
            "Alert deliveries that failed after their tries (the run went on)",
            metrics.alerts.failed.clone(),
        );
        registry.register_with_unit(
            "sqlite_memory",
            "Heap held by SQLite in this process: page caches, statements, schemas",
            prometheus_client::registry::Unit::Bytes,
            metrics.sqlite_memory.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn label(job: &str) -> JobLabel {
        JobLabel {
            job: job.to_owned(),
        }
    }

    pub fn outcome(job: &str, outcome: &str) -> OutcomeLabels {
        OutcomeLabels {
            job: job.to_owned(),
            outcome: outcome.to_owned(),
        }
    }

    /// Every series of a job, at zero: a job's metrics are there from the moment it is
    /// scheduled, so `rate()` and `increase()` see its first run, and dashboards and alerts see
    /// every job, not only the ones that have run.
    pub fn init_job(&self, job: &str) {
        let label = Self::label(job);
        for outcome in ["succeeded", "failed", "skipped"] {
            self.windows
                .get_or_create(&Self::outcome(job, outcome))
                .inc_by(0);
        }
        for outcome in ["ok", "failed", "busy", "interrupted"] {
            self.runs
                .get_or_create(&Self::outcome(job, outcome))
                .inc_by(0);
        }
        for counter in [
            &self.ticks_skipped,
            &self.rows_read,
            &self.rows_written,
            &self.rows_rejected,
            &self.rows_bad,
            &self.model_registry_errors,
            &self.challenger_skipped,
        ] {
            counter.get_or_create(&label).inc_by(0);
        }
        drop(self.run_seconds.get_or_create(&label));
    }

    pub fn result_column(job: &str, column: &str) -> ResultColumnLabels {
        ResultColumnLabels {
            job: job.to_owned(),
            column: column.to_owned(),
        }
    }

    pub fn column(job: &str, role: &str, column: &str) -> ColumnLabels {
        ColumnLabels {
            job: job.to_owned(),
            column: column.to_owned(),
            role: role.to_owned(),
        }
    }

    /// A job's drift series, one per profiled column, at zero alerts and with its threshold. The
    /// score starts as NaN, "not judged yet": 0 would claim a perfect match with the reference,
    /// and Prometheus and Grafana treat NaN as a gap.
    pub fn init_drift(&self, job: &str, columns: &[(Role, String, f64)]) {
        for (role, column, threshold) in columns {
            let label = Self::column(job, role.as_str(), column);
            self.drift_alerts.get_or_create(&label).inc_by(0);
            self.drift_threshold.get_or_create(&label).set(*threshold);
            // A reload keeps the last score.
            if self.drift_score.get(&label).is_none() {
                self.drift_score.get_or_create(&label).set(f64::NAN);
            }
        }
    }

    /// A job's realized performance, from its stored final figures.
    pub fn set_performance(&self, job: &str, summary: &crate::performance::Summary) {
        for figure in &summary.figures {
            let Some(value) = figure.latest else { continue };
            if figure.metric == "coverage" && figure.model == "champion" {
                self.label_coverage
                    .get_or_create(&Self::label(job))
                    .set(value);
            }
            let label = ModelMetricLabels {
                job: job.to_owned(),
                metric: figure.metric.clone(),
                model: figure.model.clone(),
            };
            self.model_metric.get_or_create(&label).set(value);
        }
    }

    /// A job's realized-performance series, from `[labels]`: its bounds on the headline metric
    /// (NaN where unset: no comparison with NaN holds, so no alert fires), and the headline
    /// metric and label coverage at NaN, "not evaluated yet", until a window is final.
    pub fn init_labels(&self, job: &str, labels: &crate::spec::labels::LabelsSpec) {
        let headline = labels.task.headline();
        let label = MetricLabels {
            job: job.to_owned(),
            metric: headline.to_owned(),
        };
        self.model_metric_alert_below
            .get_or_create(&label)
            .set(labels.alert_below.unwrap_or(f64::NAN));
        self.model_metric_alert_above
            .get_or_create(&label)
            .set(labels.alert_above.unwrap_or(f64::NAN));
        let champion = ModelMetricLabels {
            job: job.to_owned(),
            metric: headline.to_owned(),
            model: "champion".to_owned(),
        };
        if self.model_metric.get(&champion).is_none() {
            self.model_metric.get_or_create(&champion).set(f64::NAN);
        }
        if self.label_coverage.get(&Self::label(job)).is_none() {
            self.label_coverage
                .get_or_create(&Self::label(job))
                .set(f64::NAN);
        }
    }

    pub fn set_time(gauge: &Family<JobLabel, FloatGauge>, job: &str, time: DateTime<Utc>) {
        gauge
            .get_or_create(&Self::label(job))
            .set(time.timestamp_micros() as f64 / 1e6);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
