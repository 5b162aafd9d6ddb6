//! One window of a run, from its ledger row to its commit: [`run_window`] records it started,
//! scores it in one transaction ([`score_window`]: open, pipeline, close) and records how it
//! ended.

use std::sync::Arc;

use chrono::Utc;

use super::lease_keeper::Keeper;
use super::pipeline::run_pipeline;
use super::progress::WindowProgress;
use super::{Advance, Run, WindowSummary};
use crate::alerts::{Drifted, WindowEnd, window_changes};
use crate::bad_row::BadRowCounts;
use crate::claim::{Claim, Lost};
use crate::db::profiles::reference_for;
use crate::db::{Backend, Replace, WindowTx, claim_store, ledger, lineage, profiles, within};
use crate::error::{BadWindow, Contention, Interrupted, Unresponsive};
use crate::job::PreparedJob;
use crate::ledger::{RunRecord, RunStatus};
use crate::monitor::drift;
use crate::monitor::profile::Profile;
use crate::plan::Window;
use crate::run::Tally;
use crate::shard::job_label;
use crate::sink::RunStamp;
use crate::spec::monitor::OnDrift;

/// One window of a run: its range, how it moves the watermark, and the missed range it records
/// (`catch_up = "latest"`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope {
    pub(super) window: Window,
    pub(super) advance: Advance,
    pub(super) gap: Option<Window>,
}

/// How long a window's probe for a first row may take (see [`run_window`]).
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Score `window` for `job` and commit it whole, or fail and write nothing but the ledger's
/// record of the failure.
#[tracing::instrument(skip_all, fields(job = %run.job.spec.name, window = %scope.window, run_id = tracing::field::Empty))]
pub(super) async fn run_window<B: Backend>(
    run: &mut Run<'_, B>,
    scope: Scope,
    keeper: &Keeper<B>,
) -> anyhow::Result<WindowSummary> {
    let (db, job) = (run.db, run.job);
    let window = scope.window;
    let shard = keeper.claim().shard;
    // The first window with a row builds the models' sessions (a due window with none needs
    // none), before its ledger row: a model ONNX Runtime refuses fails the run as it fails
    // validation, recording nothing. The probe only saves work: one that fails or does not
    // answer at once (a lock held on the source, say) counts as a row, and the window's read,
    // bounded as every read is, says what is wrong.
    if !job.model.is_ready() {
        let probe = db.count_window(&job.spec, &job.shape, window, shard, Some(1));
        let limit = PROBE_LIMIT.min(keeper.claim().lease() / 4);
        let empty = matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(0)));
        if !empty && let Some(problem) = job.load_models().await? {
            tracing::warn!(problem = %problem, "the challenger cannot score: its windows say why");
        }
    }
    let mut record = RunRecord::start(&job.spec.name, shard, window, &job.lineage());
    tracing::Span::current().record("run_id", record.run_id.as_str());
    within(
        keeper.claim().lease(),
        "recording the window's start",
        ledger::record_run(db.pool(), &record, Replace::Always),
    )
    .await?;
    let numbers = within(
        keeper.claim().lease(),
        "numbering the run and its models",
        numbers(run, &record.run_id),
    )
    .await?;
    tracing::info!("window started");
    // A bar shows rows scored of rows expected: count them first (through the window's index).
    let expected = match run.progress.wants_total() {
        true => within(
            keeper.claim().lease(),
            "counting the window's rows",
            db.count_window(&job.spec, &job.shape, window, shard, None),
        )
        .await
        .ok()
        .and_then(|n| u64::try_from(n).ok()),
        false => None,
    };
    let label = format!("{} {window}", job_label(&job.spec.name, shard));
    let shown = run.progress.window(label, expected);

    let rolled_back = format!("window {window} was rolled back, nothing of it was written");
    let scored = tokio::select! {
        // Dropping the window's future drops its transaction: nothing of it is committed (the
        // server ends it too, if it cannot reach us to say so).
        outcome = score_window(db, job, (scope, numbers), keeper.claim(), (&mut record, &mut run.tally), &shown) => outcome,
        signal = run.stop.abort.requested() => Err(Interrupted {
            signal,
            what: rolled_back.clone(),
            rolled_back: true,
        }
        .into()),
        lost = keeper.lost() => Err(lost.into_error(&job_label(&job.spec.name, shard), &rolled_back)),
    };
    if let Some(alerts) = &run.alerts {
        let end = match &scored {
            Ok(drift) => WindowEnd::Committed {
                run_id: &record.run_id,
                drift: drift.as_ref(),
                rows_read: record.rows_read,
                rows_bad: record.rows_bad,
                rows_quarantined: record.rows_quarantined,
            },
            Err(error) => WindowEnd::Failed {
                run_id: &record.run_id,
                error,
            },
        };
        alerts.raise(db, window_changes(&job.spec.name, shard, window, &end));
    }
    match scored {
        Ok(_) => Ok(committed(record, scope, &mut run.tally)),
        Err(err) => {
            let deadline = keeper.claim().lease().min(FAILURE_RECORD_DEADLINE);
            Err(failed(db, job, record, (window, deadline), err, &mut run.tally).await)
        }
    }
}

/// What compact lineage writes on each result row: the run's number and its models'.
#[derive(Debug, Clone, Copy)]
pub(super) struct Numbers {
    run: i64,
    model: i64,
    challenger: Option<i64>,
}

/// The numbers of the run `run_id` (just recorded) and of its models (asked once per run).
async fn numbers<B: Backend>(run: &mut Run<'_, B>, run_id: &str) -> anyhow::Result<Numbers> {
    let pool = run.db.pool();
    let (model, challenger) = match run.models {
        Some(models) => models,
        None => {
            let model = lineage::model_number(pool, &run.job.model.sha256).await?;
            let challenger = match &run.job.challenger {
                Some(Ok(challenger)) => {
                    Some(lineage::model_number(pool, &challenger.model.sha256).await?)
                }
                _ => None,
            };
            *run.models.insert((model, challenger))
        }
    };
    Ok(Numbers {
        run: lineage::run_number(pool, run_id).await?,
        model,
        challenger,
    })
}

/// Count a committed window.
fn committed(record: RunRecord, scope: Scope, tally: &mut Tally) -> WindowSummary {
    let seconds = (Utc::now() - record.started_at).as_seconds_f64();
    tracing::info!(
        rows_read = record.rows_read,
        rows_written = record.rows_written,
        rows_quarantined = record.rows_quarantined,
        rows_skipped = record.rows_skipped,
        seconds = (seconds * 1000.0).round() / 1000.0,
        rows_per_second = (record.rows_read as f64 / seconds.max(1e-6)).round(),
        "window committed"
    );
    tally.succeeded += 1;
    tally.skipped += u64::from(scope.gap.is_some());
    tally.rows_read += record.rows_read as u64;
    tally.rows_written += record.rows_written as u64;
    tally.rows_rejected += (record.rows_quarantined + record.rows_skipped) as u64;
    tally.rows_bad += record.rows_bad as u64;
    WindowSummary {
        run_id: record.run_id,
        window: scope.window,
        rows_written: record.rows_written,
    }
}

/// The longest a failed window's ledger record may take (or the lease, if shorter): long enough
/// for a busy machine, short enough that a silent database does not hold the exit up long.
const FAILURE_RECORD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Count a failed window and record in the ledger why it failed; the error to stop with. The
/// record has up to the lease (at most [`FAILURE_RECORD_DEADLINE`]) to be written, so a run
/// stopped by a signal on a busy machine still says why before it exits. If the database cannot
/// take it, the row stays `running` and the next run marks it abandoned.
async fn failed<B: Backend>(
    db: &B,
    job: &PreparedJob,
    mut record: RunRecord,
    (window, deadline): (Window, std::time::Duration),
    err: anyhow::Error,
    tally: &mut Tally,
) -> anyhow::Error {
    tally.failed += 1;
    tally.rows_read += record.rows_read as u64;
    tally.rows_rejected += record.rows_read as u64;
    tally.rows_bad += record.rows_bad as u64;
    record.status = RunStatus::Failed;
    // The window's transaction was rolled back: nothing went anywhere. `rows_bad` and
    // `bad_rows` still say what was found.
    record.rows_written = 0;
    record.rows_quarantined = 0;
    record.rows_skipped = 0;
    record.finished_at = Some(Utc::now());
    record.error = Some(format!("{err:#}"));
    if let Err(error) = record_failure(db, &record, deadline).await {
        tracing::warn!(
            error = %format!("{error:#}"),
            "could not record the failure in the ledger; the next run marks it abandoned"
        );
    }
    // Inside the window's span: each line names the job, the window and the run.
    if err.is::<Interrupted>() || err.is::<Contention>() || err.is::<Unresponsive>() {
        tracing::warn!(
            error = %format!("{err:#}"),
            rows_read = record.rows_read,
            "window rolled back, nothing of it was written"
        );
        return err;
    }
    tracing::error!(
        error = %format!("{err:#}"),
        rows_read = record.rows_read,
        "window failed, nothing of it was written"
    );
    err.context(format!(
        "job `{}`: window {window} was not written",
        job.spec.name
    ))
}

/// Write a failed window's ledger record, trying again until `deadline` if the database refuses
/// it: the window's own connections are being rolled back and returned meanwhile (a connection
/// dropped mid-COPY is closed by the pool, and one taken at that moment may fail), and the
/// ledger is what an operator reads to learn why the window is missing.
async fn record_failure<B: Backend>(
    db: &B,
    record: &RunRecord,
    deadline: std::time::Duration,
) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let recording = ledger::record_run(db.pool(), record, Replace::IfRunning);
        match within(left, "recording the failure", recording).await {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() + pause < until => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "could not record the failure in the ledger yet; trying again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(error) => return Err(error),
        }
    }
}

/// The window's transaction: everything in it commits together or not at all. With its drift,
/// if it drifted and still committed (`on_drift = "warn"`).
async fn score_window<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
    (scope, numbers): (Scope, Numbers),
    claim: &Claim,
    (record, tally): (&mut RunRecord, &mut Tally),
    shown: &WindowProgress,
) -> anyhow::Result<Option<Drifted>> {
    let stamp = RunStamp {
        run_id: record.run_id.clone(),
        run: numbers.run,
        window: scope.window,
        model_version: job.model.sha256.clone(),
        model: numbers.model,
        challenger_model: numbers.challenger,
        scored_at: Utc::now(),
    };
    let (tx, findings) = run_pipeline(db, job, scope.window, &stamp, claim, record, shown).await?;
    check_bad_rows(job, record, &findings.bad)?;
    let drifted = match &findings.profile {
        Some(profile) => check_drift(db, job, scope.window, profile, tally).await?,
        None => None,
    };
    close(tx, job, scope, claim, record, findings.profile.as_ref()).await?;
    tally.challenger(record, findings.agreement.as_ref());
    Ok(drifted)
}

/// Compare the window's profile with the job's reference (if it has one): a window in drift
/// fails whole under `monitor.on_drift = "fail"`, and is logged and counted otherwise. With
/// `"fail"`, a reference that cannot be read fails the window too: it could not be checked.
/// A window that drifted under `"warn"` is returned, for alerts.
async fn check_drift<B: Backend>(
    db: &B,
    job: &PreparedJob,
    window: Window,
    profile: &Profile,
    tally: &mut Tally,
) -> anyhow::Result<Option<Drifted>> {
    let monitor = &job.spec.monitor;
    // Too few rows to judge any column (an empty window, say): the reference is not read.
    if profile.columns.iter().all(|c| c.rows < monitor.min_rows) {
        return Ok(None);
    }
    let reference = match reference_for(db.pool(), &job.spec, window).await {
        Ok(Some(reference)) if reference.windows > 0 => reference,
        Ok(Some(reference)) => {
            tracing::debug!(reference = %reference.described, "no profiled window in the reference yet: drift not checked");
            return Ok(None);
        }
        Ok(None) => return Ok(None),
        Err(err) if monitor.on_drift == OnDrift::Warn => {
            tracing::warn!(error = %format!("{err:#}"), "could not read the drift reference: drift not checked");
            return Ok(None);
        }
        Err(err) => {
            return Err(err.context("reading the drift reference (monitor.on_drift = \"fail\")"));
        }
    };
    let report = drift::compare(profile, &reference.profile, monitor);
    for column in &report.columns {
        if let Some(score) = column.score {
            tally
                .drift_scores
                .insert((column.role.as_str(), column.column.clone()), score);
        }
    }
    if report.drifted().next().is_none() {
        tracing::debug!(reference = %reference.described, "no drift");
        return Ok(None);
    }
    for column in report.drifted() {
        *tally
            .drift_alerts
            .entry((column.role.as_str(), column.column.clone()))
            .or_default() += 1;
    }
    tracing::warn!(
        drifted = %report.summary(),
        reference = %reference.described,
        on_drift = if monitor.on_drift == OnDrift::Fail { "fail" } else { "warn" },
        "window drifted from its reference"
    );
    match monitor.on_drift {
        OnDrift::Warn => Ok(Some(Drifted {
            summary: report.summary(),
            columns: report
                .drifted()
                .map(|c| {
                    serde_json::json!({
                        "column": c.column,
                        "role": c.role.as_str(),
                        "measure": c.measure,
                        "score": c.score,
                        "threshold": c.threshold,
                        "reasons": c.reasons,
                    })
                })
                .collect(),
        })),
        OnDrift::Fail => Err(BadWindow::Drift {
            job: job.spec.name.clone(),
            summary: report.summary(),
        }
        .into()),
    }
}

/// A window with more bad rows than `bad_rows.max_fraction` is refused whole.
fn check_bad_rows(
    job: &PreparedJob,
    record: &RunRecord,
    found: &BadRowCounts,
) -> anyhow::Result<()> {
    if record.rows_bad == 0 {
        return Ok(());
    }
    let bad_rows = &job.spec.bad_rows;
    tracing::warn!(rows_bad = record.rows_bad, policy = bad_rows.policy.as_str(), reasons = %found.summary(), "window has bad rows");
    if record.rows_bad as f64 > bad_rows.max_fraction * record.rows_read as f64 {
        return Err(BadWindow::TooMany {
            bad: record.rows_bad,
            read: record.rows_read,
            max_fraction: bad_rows.max_fraction,
            summary: found.summary(),
            first: found.first.clone().expect("counted a bad row").to_string(),
        }
        .into());
    }
    Ok(())
}

/// Record the skipped range, move the watermark, check the claim still holds, record the window
/// as succeeded, and commit.
async fn close<T: WindowTx>(
    mut tx: T,
    job: &PreparedJob,
    scope: Scope,
    claim: &Claim,
    record: &mut RunRecord,
    profile: Option<&Profile>,
) -> anyhow::Result<()> {
    let Scope {
        window,
        advance,
        gap,
    } = scope;
    if let Some(gap) = gap {
        let reason = "catch_up = \"latest\": missed windows were not scored".to_owned();
        let skipped = RunRecord::skipped(&job.spec.name, claim.shard, gap, &job.lineage(), reason);
        ledger::record_run_in::<T::Db>(tx.conn(), &skipped).await?;
        tracing::warn!(skipped = %gap, "catch_up = latest: skipping missed windows");
    }
    if let Advance::From(from) = advance
        && !ledger::advance_watermark::<T::Db>(
            tx.conn(),
            &job.spec.name,
            claim.shard,
            from,
            window.end,
            &record.run_id,
        )
        .await?
    {
        return Err(Contention::WatermarkMoved {
            job: job_label(&job.spec.name, claim.shard),
            window: window.to_string(),
        }
        .into());
    }
    // Last, so the claim's row is locked only for the commit's round trip.
    if !claim_store::fence::<T::Db>(tx.conn(), claim).await? {
        return Err(Lost::Superseded.into_error(
            &job_label(&job.spec.name, claim.shard),
            &format!("window {window} was rolled back, nothing of it was written"),
        ));
    }
    if let Some(profile) = profile {
        let (run_id, name) = (&record.run_id, &job.spec.name);
        profiles::record_profile::<T::Db>(tx.conn(), run_id, name, claim.shard, window, profile)
            .await?;
    }
    record.status = RunStatus::Succeeded;
    record.finished_at = Some(Utc::now());
    ledger::record_run_in::<T::Db>(tx.conn(), record).await?;
    tx.commit().await
}
