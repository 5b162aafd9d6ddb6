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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub job: String,
    pub outcome: String,
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
        ] {
            counter.get_or_create(&label).inc_by(0);
        }
        drop(self.run_seconds.get_or_create(&label));
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
