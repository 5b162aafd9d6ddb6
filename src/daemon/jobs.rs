//! The daemon's set of jobs: every job file loaded and prepared (at start, and again on
//! SIGHUP), each added to the schedule with its metrics, and the ones removed or changed taken
//! off it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use chrono::Utc;
use uuid::Uuid;

use super::metrics::Metrics;
use super::{Daemon, Entry};
use crate::db::Backend;
use crate::job::{self, PreparedJob};
use crate::spec::{self, job_names};

/// A job file that loaded and prepared: its name, the job, and its fingerprint.
pub(super) type Loaded = (String, Arc<PreparedJob>, (String, String));

impl<B: Backend> Daemon<B> {
    /// Load and prepare every job file: the valid ones with their fingerprints, and the errors.
    pub(super) async fn load_all(&self) -> (Vec<Loaded>, Vec<(String, anyhow::Error)>) {
        let names = match job_names(&self.options.jobs_dir) {
            Ok(names) => names,
            Err(err) => return (Vec::new(), vec![("*".to_owned(), err.into())]),
        };
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for name in names {
            let path = self.options.jobs_dir.join(format!("{name}.toml"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let deadline = self.options.lease.to_std().unwrap_or_default();
            let prepared = async {
                let spec = spec::load_job(&self.options.jobs_dir, &name)?;
                let job =
                    crate::db::within(deadline, "checking the job", job::prepare(&self.db, spec))
                        .await?;
                // A daemon loads its models when it starts, so that one ONNX Runtime refuses
                // is found then, not at its first window with a row.
                if let Some(problem) = job.load_models().await? {
                    tracing::warn!(job = %name, problem = %problem, "the challenger cannot score: the model's windows are scored without it");
                }
                anyhow::Ok(job)
            }
            .await;
            match prepared {
                Ok(job) => {
                    let fingerprint = (text, job.model.sha256.clone());
                    valid.push((name, job, fingerprint));
                }
                Err(err) => invalid.push((name, err)),
            }
        }
        (valid, invalid)
    }

    pub(super) async fn add(
        self: &Arc<Self>,
        name: String,
        job: Arc<PreparedJob>,
        fingerprint: (String, String),
    ) {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
        tracing::info!(job = %name, schedule = %job.spec.schedule.expression, timezone = %job.spec.schedule.timezone, "scheduled");
        // Once per definition (a reload may change it): every series at zero, and the job's
        // tolerance for bad rows, for the bad-row alert.
        self.metrics.init_job(&name);
        self.metrics
            .model_registry_errors
            .get_or_create(&Metrics::label(&name))
            .inc_by(job.registry_errors());
        self.metrics
            .bad_rows_max_fraction
            .get_or_create(&Metrics::label(&name))
            .set(job.spec.bad_rows.max_fraction);
        if let Some(labels) = &job.spec.labels {
            self.metrics.init_labels(&name, labels);
        }
        if job.spec.monitor.profile {
            self.metrics.init_drift(
                &name,
                &crate::monitor::drift::thresholds(
                    &job.empty_profile(),
                    &job.spec.monitor.thresholds,
                ),
            );
        }
        let old = self.jobs.lock().expect("not poisoned").insert(
            name.clone(),
            Entry {
                job,
                fingerprint,
                generation,
                running: Arc::new(AtomicBool::new(false)),
                failures: Arc::new(AtomicU32::new(0)),
                tick: None,
            },
        );
        if let Some(old) = old {
            self.unschedule(old.tick).await;
        }
        self.schedule_next(&name, generation, Utc::now()).await;
    }

    pub(super) async fn unschedule(&self, tick: Option<Uuid>) {
        if let Some(tick) = tick {
            // The tick may have just fired; its generation check makes it a no-op either way.
            let _ = self.scheduler.remove(&tick).await;
        }
    }

    /// SIGHUP: re-read the jobs directory and models. Added and changed jobs take effect, removed
    /// ones stop; a job whose new definition is invalid keeps its old one.
    pub(super) async fn reload(self: &Arc<Self>) {
        tracing::info!("reloading jobs (SIGHUP)");
        let (loaded, invalid) = self.load_all().await;
        for (name, err) in &invalid {
            if self.jobs.lock().expect("not poisoned").contains_key(name) {
                tracing::error!(job = %name, error = %format!("{err:#}"), "new definition is invalid: keeps running on the old one");
            } else {
                tracing::error!(job = %name, error = %format!("{err:#}"), "invalid job: not scheduled");
            }
        }
        let present: Vec<String> = loaded
            .iter()
            .map(|(n, _, _)| n.clone())
            .chain(invalid.iter().map(|(n, _)| n.clone()))
            .collect();
        let removed: Vec<(String, Option<Uuid>)> = {
            let mut jobs = self.jobs.lock().expect("not poisoned");
            let gone: Vec<String> = jobs
                .keys()
                .filter(|n| !present.contains(n))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|n| jobs.remove(&n).map(|e| (n, e.tick)))
                .collect()
        };
        for (name, tick) in removed {
            tracing::info!(job = %name, "job file removed: unscheduled");
            self.unschedule(tick).await;
        }
        for (name, job, fingerprint) in loaded {
            let unchanged = self
                .jobs
                .lock()
                .expect("not poisoned")
                .get(&name)
                .is_some_and(|e| e.fingerprint == fingerprint);
            if !unchanged {
                self.add(name, job, fingerprint).await;
            }
        }
    }
}
