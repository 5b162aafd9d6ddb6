//! Realized performance: each committed window's predictions joined with the labels the
//! application records later (`[labels]`), judged per model (the champion, and the challenger
//! where one scored the window), and stored in `batchscore_performance`, provisional until the
//! labels' maturity has passed, then final.
//!
//! Evaluation reads and writes only its own table: it takes no claim and holds no lock a run
//! waits for, so it runs beside scoring (`evaluate`, the daemon after each tick, `run-job`
//! after its windows). Every evaluation recomputes what it reads, so late labels change the
//! figures, and one that finds nothing new writes nothing.

pub mod metrics;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use self::metrics::{Classified, Figure, Regressed};
use crate::db::Backend;
use crate::db::performance::{
    self as store, Committed, JoinSpec, Key, KeyRef, LabelValue, Select, StoredFigure, Truth,
};
use crate::error::ConfigError;
use crate::job::PreparedJob;
use crate::plan::Window;
use crate::sink::ResultType;
use crate::source::{ColumnKind, KeyKind};
use crate::spec::labels::{LabelsSpec, Positive, Task};
use crate::spec::{JobSpec, SourceFrom};

/// At most this many result rows are read per query. A window's labelled rows are held to sort
/// them (an exact AUC) until its last row is read: where rows come in the order they were
/// written (SQLite), that is one window at a time; where the plan reorders them (PostgreSQL's
/// hash join probing the labels), this bounds what is held.
const ROWS_PER_READ: i64 = 1_000_000;
/// At most this many windows per query (the run ids are its parameters).
const WINDOWS_PER_READ: usize = 200;
/// The daemon and `run-job` evaluate at most this many due windows at a time.
pub const DUE_PER_PASS: usize = 16;

/// A window's figures for one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluated {
    pub shard: u32,
    #[serde(serialize_with = "crate::time::serialize_time")]
    pub window_start: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_time")]
    pub window_end: DateTime<Utc>,
    /// `champion` or `challenger`.
    pub model: &'static str,
    pub run_id: String,
    pub model_sha256: String,
    /// `provisional` until the labels' maturity has passed, then `final`.
    pub status: &'static str,
    pub figures: Vec<Figure>,
}

impl Evaluated {
    pub fn value(&self, metric: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.metric == metric)
            .and_then(|f| f.value)
    }
}

/// What one evaluation did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Evaluation {
    pub windows: Vec<Evaluated>,
    /// Stored figures written because they were new or had changed: 0 when evaluating again
    /// found the labels as they were.
    pub changed: usize,
    /// Label rows for keys the job never scored, ignored (counted by `evaluate` only: it reads
    /// every label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unscored_labels: Option<i64>,
}

/// Check `[labels]` against the database before any row is read: the labels' table or query
/// and its columns, the label's type against the task, the key's against the job's, and the
/// positive class among the labels. A problem is a [`ConfigError`] naming it; a note says what
/// is fine but worth knowing.
pub async fn check<B: Backend>(db: &B, job: &PreparedJob) -> anyhow::Result<Vec<String>> {
    let Some(labels) = &job.spec.labels else {
        return Ok(Vec::new());
    };
    let name = &job.spec.name;
    let problem = |text: String| -> anyhow::Error { ConfigError::job(name, text).into() };
    let columns = describe_labels(db, &job.spec, labels).await?;
    let kind = |column: &crate::ident::Ident| {
        columns
            .iter()
            .find(|(c, _)| c == column.as_str())
            .map(|(_, kind)| kind.clone())
    };
    let what = match &labels.from {
        SourceFrom::Table(table) => format!("labels table {table}"),
        SourceFrom::Query(_) => "labels.query".to_owned(),
    };
    let have: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let missing = |field: &str, column: &crate::ident::Ident| {
        problem(format!(
            "labels.{field}: {what} has no column {column} (its columns: {})",
            have.join(", ")
        ))
    };
    let key = kind(&labels.key).ok_or_else(|| missing("key", &labels.key))?;
    let label = kind(&labels.label).ok_or_else(|| missing("label", &labels.label))?;
    if let Some(ts) = &labels.timestamp {
        let ts_kind = kind(ts).ok_or_else(|| missing("timestamp", ts))?;
        if !B::timestamp_ok(&ts_kind) {
            return Err(problem(format!(
                "labels.timestamp: column {ts} of {what} is {}, which does not hold times",
                crate::source::kind_name(&ts_kind)
            )));
        }
    }
    let key_fits = match job.results.key_kind {
        KeyKind::Integer => matches!(
            key,
            ColumnKind::Integer | ColumnKind::Numeric | ColumnKind::Dynamic
        ),
        KeyKind::Text => matches!(key, ColumnKind::Text | ColumnKind::Dynamic),
    };
    if !key_fits {
        return Err(problem(format!(
            "labels.key: column {} of {what} is {}, but the job's key {} is {}: they cannot be joined",
            labels.key,
            crate::source::kind_name(&key),
            job.spec.source.key,
            match job.results.key_kind {
                KeyKind::Integer => "an integer",
                KeyKind::Text => "text",
            }
        )));
    }
    let result_type = |column: &crate::ident::Ident| {
        job.results
            .outputs
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, t)| *t)
            .expect("checked against [outputs] when the file was read")
    };
    let mut notes = Vec::new();
    match &labels.task {
        Task::Classification {
            score,
            predicted,
            positive,
            ..
        } => {
            if result_type(score) != ResultType::Float {
                return Err(problem(format!(
                    "labels.score: result column {score} holds {} values; it must hold the positive class's probability or score (a float)",
                    result_type(score).name()
                )));
            }
            let _ = predicted;
            if matches!(label, ColumnKind::Timestamp | ColumnKind::Other(_)) {
                return Err(problem(format!(
                    "labels.label: column {} of {what} is {}, which cannot be compared with positive = {positive}",
                    labels.label,
                    crate::source::kind_name(&label)
                )));
            }
            match store::label_values(db.pool(), labels, &positive.spellings()).await? {
                None => notes.push(format!(
                    "{what} holds no labels yet: windows are evaluated once they arrive"
                )),
                Some((true, _)) => {}
                Some((false, seen)) => {
                    return Err(problem(format!(
                        "labels.positive = {positive} is never seen in column {} of {what} (values there include: {})",
                        labels.label,
                        seen.join(", ")
                    )));
                }
            }
        }
        Task::Regression { prediction } => {
            if !matches!(
                result_type(prediction),
                ResultType::Float | ResultType::Integer
            ) {
                return Err(problem(format!(
                    "labels.prediction: result column {prediction} holds {} values, which cannot be compared with a number",
                    result_type(prediction).name()
                )));
            }
            if !matches!(
                label,
                ColumnKind::Integer | ColumnKind::Real | ColumnKind::Numeric | ColumnKind::Dynamic
            ) {
                return Err(problem(format!(
                    "labels.label: column {} of {what} is {}; a regression's label must be a number",
                    labels.label,
                    crate::source::kind_name(&label)
                )));
            }
        }
    }
    Ok(notes)
}

/// How `jobs validate` shows `[labels]`: where they come from, what is judged, and when.
pub fn describe(labels: &LabelsSpec) -> String {
    let from = match &labels.from {
        SourceFrom::Table(table) => table.to_string(),
        SourceFrom::Query(_) => "labels.query".to_owned(),
    };
    let judged = match &labels.task {
        Task::Classification {
            score, positive, ..
        } => format!(
            "classification of {score} against {} = {positive}",
            labels.label
        ),
        Task::Regression { prediction } => {
            format!("regression of {prediction} against {}", labels.label)
        }
    };
    format!(
        "labels from {from}: {judged}, final {} after a window ends",
        humantime::format_duration(labels.maturity.to_std().unwrap_or_default())
    )
}

/// The labels' columns, described as a source would be (the same table-or-query rules), with
/// the problem worded for `[labels]`.
async fn describe_labels<B: Backend>(
    db: &B,
    spec: &JobSpec,
    labels: &LabelsSpec,
) -> anyhow::Result<crate::source::SourceColumns> {
    let mut as_source = spec.clone();
    as_source.source.from = labels.from.clone();
    db.describe_source(&as_source)
        .await
        .map_err(|err| match err.downcast::<ConfigError>() {
            Ok(ConfigError::Job { job, problem }) => {
                let problem = problem
                    .replacen("source table", "labels table", 1)
                    .replacen("source.query", "labels.query", 1);
                ConfigError::Job { job, problem }.into()
            }
            Ok(other) => other.into(),
            Err(err) => err,
        })
}

/// Evaluate the job's committed windows that `select` picks, store what changed, and return
/// their figures. `now` decides which are final.
pub async fn evaluate<B: Backend>(
    db: &B,
    job: &PreparedJob,
    select: Select,
    now: DateTime<Utc>,
) -> anyhow::Result<Evaluation> {
    let Some(labels) = &job.spec.labels else {
        return Ok(Evaluation::default());
    };
    let name = &job.spec.name;
    let windows = store::committed_windows(db.pool(), name, select).await?;
    let mut evaluation = Evaluation::default();
    let mut batch: Vec<Committed> = Vec::new();
    let mut rows = 0;
    for window in windows {
        if !batch.is_empty()
            && (rows + window.rows_written > ROWS_PER_READ || batch.len() == WINDOWS_PER_READ)
        {
            evaluate_batch(
                db,
                job,
                labels,
                &std::mem::take(&mut batch),
                now,
                &mut evaluation,
            )
            .await?;
            rows = 0;
        }
        rows += window.rows_written;
        batch.push(window);
    }
    if !batch.is_empty() {
        evaluate_batch(db, job, labels, &batch, now, &mut evaluation).await?;
    }
    Ok(evaluation)
}

/// Also count the labels of keys never scored (`evaluate` only): every label, less those the
/// evaluation matched when it read the whole results table; else a join over every label.
pub async fn count_unscored<B: Backend>(
    db: &B,
    job: &PreparedJob,
    evaluation: &mut Evaluation,
) -> anyhow::Result<()> {
    if let Some(labels) = &job.spec.labels
        && !evaluation.windows.is_empty()
    {
        let join = join_spec(job, labels, false);
        let champion = evaluation.windows.iter().filter(|w| w.model == "champion");
        let (mut scored, mut matched) = (0.0, 0.0);
        for w in champion {
            scored += w.value("scored").unwrap_or(0.0);
            matched +=
                w.value("labelled").unwrap_or(0.0) + w.value("duplicate_labels").unwrap_or(0.0);
        }
        let unscored =
            store::unscored_labels(db.pool(), &join, scored as i64, matched as i64).await?;
        evaluation.unscored_labels = Some(unscored);
    }
    Ok(())
}

fn join_spec<'a>(job: &'a PreparedJob, labels: &'a LabelsSpec, challenged: bool) -> JoinSpec<'a> {
    JoinSpec {
        results: &job.results.table,
        key: &job.results.key,
        key_kind: job.results.key_kind,
        challenger: job
            .spec
            .challenger
            .as_ref()
            .filter(|_| challenged)
            .map(|c| &c.table),
        labels,
    }
}

/// Whether labels read as text are the positive class, remembered for the few distinct labels a
/// column holds: parsing `1` as a number for every row was a tenth of an evaluation.
#[derive(Default)]
struct Seen(Vec<(String, bool)>);

impl Seen {
    fn positive(&mut self, positive: &Positive, text: &str) -> bool {
        if let Some((_, is)) = self.0.iter().find(|(seen, _)| seen == text) {
            return *is;
        }
        let is = positive.matches(text);
        if self.0.len() < 16 {
            self.0.push((text.to_owned(), is));
        }
        is
    }
}

/// One window's labelled rows as they arrive, each key once.
#[derive(Default)]
struct Gathered {
    /// Result rows read (a key with two labels counts once).
    scored: u64,
    /// Labels beyond a key's first.
    duplicates: u64,
    rows: Vec<Row>,
    /// Where each labelled key's row is, and whether it was labelled again (foldhash: SipHash's
    /// defence against chosen keys costs a tenth of an evaluation here).
    keys: HashMap<Key, (usize, bool), foldhash::fast::RandomState>,
    /// Keys labelled more than once: their label is settled after the scan
    /// ([`store::latest_labels`]).
    relabel: Vec<Key>,
}

/// A labelled result row: both models' predictions and the truth.
struct Row {
    score: Option<f64>,
    predicted: Option<bool>,
    challenger_score: Option<f64>,
    challenger_predicted: Option<bool>,
    truth: f64,
}

impl Gathered {
    /// A row of the join: unlabelled (`row` is `None`), or labelled.
    fn add(&mut self, key: KeyRef<'_>, row: Option<Row>) {
        let Some(row) = row else {
            self.scored += 1;
            return;
        };
        let key = key.to_owned();
        if let Some((_, again)) = self.keys.get_mut(&key) {
            // The same result row again, with another label: which one counts is settled later.
            if !*again {
                *again = true;
                self.relabel.push(key);
            }
            self.duplicates += 1;
            return;
        }
        self.scored += 1;
        self.keys.insert(key, (self.rows.len(), false));
        self.rows.push(row);
    }
}

async fn evaluate_batch<B: Backend>(
    db: &B,
    job: &PreparedJob,
    labels: &LabelsSpec,
    batch: &[Committed],
    now: DateTime<Utc>,
    evaluation: &mut Evaluation,
) -> anyhow::Result<()> {
    let challenged = batch.iter().any(|w| w.challenger_sha256.is_some());
    let join = join_spec(job, labels, challenged);
    let run_ids: Vec<String> = batch.iter().map(|w| w.run_id.clone()).collect();
    let mut gathered: HashMap<String, Gathered> = HashMap::new();
    // Rows come window by window as they were written: the last window's run id is compared
    // before any lookup.
    let mut last: Option<(String, Gathered)> = None;
    let (positive, threshold, with_predicted) = match &labels.task {
        Task::Classification {
            positive,
            threshold,
            predicted,
            ..
        } => (Some(positive), *threshold, predicted.is_some()),
        Task::Regression { .. } => (None, 0.5, false),
    };
    let mut seen = Seen::default();
    let expected: HashMap<&str, (i64, &Committed)> = batch
        .iter()
        .map(|w| (w.run_id.as_str(), (w.rows_written, w)))
        .collect();
    // Windows judged as soon as their last row was read, freeing their rows; a row of one of
    // them arriving later after all (rows out of order) sends it back to be read again alone.
    let mut early: Vec<Evaluated> = Vec::new();
    let mut judged: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut again: std::collections::HashSet<String> = std::collections::HashSet::new();
    store::joined_rows(db, &join, &run_ids, |joined| {
        let truth = match (joined.label, positive) {
            (Some(Truth::Text(text)), Some(positive)) => {
                Some(f64::from(u8::from(seen.positive(positive, text))))
            }
            (Some(Truth::Number(x)), None) => Some(x),
            _ => None,
        };
        let mut is_positive = |text: Option<&str>| match (text, positive) {
            (Some(text), Some(positive)) => seen.positive(positive, text),
            _ => false,
        };
        let row = truth.map(|truth| Row {
            score: joined.score,
            predicted: with_predicted.then(|| is_positive(joined.predicted)),
            challenger_score: joined.challenger_score,
            challenger_predicted: with_predicted.then(|| is_positive(joined.challenger_predicted)),
            truth,
        });
        if last.as_ref().is_none_or(|(run, _)| run != joined.run_id) {
            if let Some((run, window)) = last.take() {
                let complete = expected
                    .get(run.as_str())
                    .filter(|(rows, _)| window.scored as i64 >= *rows && window.relabel.is_empty());
                match complete {
                    Some((_, committed)) => {
                        early.extend(judge_window(committed, &window, labels, threshold, now));
                        judged.insert(run);
                    }
                    None => {
                        gathered.insert(run, window);
                    }
                }
            }
            if judged.contains(joined.run_id) {
                again.insert(joined.run_id.to_owned());
            }
            let window = gathered.remove(joined.run_id).unwrap_or_default();
            last = Some((joined.run_id.to_owned(), window));
        }
        let (_, window) = last.as_mut().expect("just set");
        window.add(joined.key, row);
        Ok(())
    })
    .await?;
    if let Some((run, window)) = last.take() {
        gathered.insert(run, window);
    }

    // Keys labelled twice: the label that counts, read for them alone (the latest; the scan
    // reads no times, which would cost every row).
    let relabel: Vec<Key> = gathered
        .values()
        .flat_map(|w| w.relabel.iter().cloned())
        .collect();
    if !relabel.is_empty() {
        let latest = store::latest_labels(db, labels, job.results.key_kind, &relabel).await?;
        for window in gathered.values_mut() {
            for key in std::mem::take(&mut window.relabel) {
                let (Some(&(at, _)), Some(label)) = (window.keys.get(&key), latest.get(&key))
                else {
                    continue;
                };
                window.rows[at].truth = match (label, positive) {
                    (LabelValue::Text(text), Some(positive)) => {
                        f64::from(u8::from(positive.matches(text)))
                    }
                    (LabelValue::Number(x), _) => *x,
                    (LabelValue::Text(_), None) => continue,
                };
            }
        }
    }

    if !again.is_empty() {
        // Rows out of order: those windows are read again, each alone, held whole.
        let reread: Vec<Committed> = batch
            .iter()
            .filter(|w| again.contains(&w.run_id))
            .cloned()
            .collect();
        early.retain(|e| !again.contains(&e.run_id));
        for window in reread {
            let mut alone = Evaluation::default();
            Box::pin(evaluate_alone(db, job, labels, &window, now, &mut alone)).await?;
            evaluation.changed += alone.changed;
            early.extend(alone.windows);
        }
    }
    let mut figures = early;
    for committed in batch {
        if judged.contains(&committed.run_id) {
            continue;
        }
        let window = gathered.remove(&committed.run_id).unwrap_or_default();
        figures.extend(judge_window(committed, &window, labels, threshold, now));
    }
    figures.sort_by(|a, b| {
        (a.window_end, a.shard, a.model != "champion").cmp(&(
            b.window_end,
            b.shard,
            b.model != "champion",
        ))
    });
    evaluation.changed += store_changed(db, &job.spec.name, &figures).await?;
    evaluation.windows.extend(figures);
    Ok(())
}

/// One window read by itself, every row held until the end (no early judging).
async fn evaluate_alone<B: Backend>(
    db: &B,
    job: &PreparedJob,
    labels: &LabelsSpec,
    window: &Committed,
    now: DateTime<Utc>,
    evaluation: &mut Evaluation,
) -> anyhow::Result<()> {
    let mut alone = window.clone();
    // An expected count no window reaches: nothing is judged before the scan ends.
    alone.rows_written = i64::MAX;
    evaluate_batch(
        db,
        job,
        labels,
        std::slice::from_ref(&alone),
        now,
        evaluation,
    )
    .await
}

/// Both models' figures for one window's gathered rows: provisional until the labels' maturity
/// has passed since the window ended, then final.
fn judge_window(
    committed: &Committed,
    window: &Gathered,
    labels: &LabelsSpec,
    threshold: f64,
    now: DateTime<Utc>,
) -> Vec<Evaluated> {
    let status = match committed.window.end + labels.maturity <= now {
        true => "final",
        false => "provisional",
    };
    let mut models = vec![("champion", committed.model_sha256.clone(), false)];
    if let Some(sha) = &committed.challenger_sha256 {
        models.push(("challenger", sha.clone(), true));
    }
    models
        .into_iter()
        .map(|(model, sha, challenger)| Evaluated {
            shard: committed.shard,
            window_start: committed.window.start,
            window_end: committed.window.end,
            model,
            run_id: committed.run_id.clone(),
            model_sha256: sha,
            status,
            figures: judge(window, &labels.task, threshold, challenger),
        })
        .collect()
}

/// One model's figures for a window's gathered rows.
fn judge(window: &Gathered, task: &Task, threshold: f64, challenger: bool) -> Vec<Figure> {
    let pick = |row: &Row| match challenger {
        false => (row.score, row.predicted),
        true => (row.challenger_score, row.challenger_predicted),
    };
    match task {
        Task::Classification { .. } => {
            let mut rows: Vec<Classified> = window
                .rows
                .iter()
                .filter_map(|row| {
                    let (score, predicted) = pick(row);
                    let score = score?;
                    Some(Classified {
                        score,
                        positive: row.truth == 1.0,
                        predicted: predicted.unwrap_or(score >= threshold),
                    })
                })
                .collect();
            metrics::classification(&mut rows, window.scored, window.duplicates)
        }
        Task::Regression { .. } => {
            let rows: Vec<Regressed> = window
                .rows
                .iter()
                .filter_map(|row| {
                    Some(Regressed {
                        prediction: pick(row).0?,
                        label: row.truth,
                    })
                })
                .collect();
            metrics::regression(&rows, window.scored, window.duplicates)
        }
    }
}

/// Store the figures that differ from those stored (or are new); how many were written.
async fn store_changed<B: Backend>(
    db: &B,
    job: &str,
    evaluated: &[Evaluated],
) -> anyhow::Result<usize> {
    let (Some(first), Some(last)) = (
        evaluated.iter().map(|e| e.window_end).min(),
        evaluated.iter().map(|e| e.window_end).max(),
    ) else {
        return Ok(0);
    };
    let stored = store::stored_figures(db.pool(), job, first, last, false).await?;
    let stored: HashMap<(u32, Window, &str, &str), &StoredFigure> = stored
        .iter()
        .map(|f| ((f.shard, f.window, f.model.as_str(), f.metric.as_str()), f))
        .collect();
    let mut changed = Vec::new();
    for e in evaluated {
        let window = Window {
            start: e.window_start,
            end: e.window_end,
        };
        for figure in &e.figures {
            let fresh = StoredFigure {
                shard: e.shard,
                window,
                model: e.model.to_owned(),
                metric: figure.metric.to_owned(),
                run_id: e.run_id.clone(),
                model_sha256: e.model_sha256.clone(),
                status: e.status.to_owned(),
                value: figure.value,
                detail: figure.detail.as_ref().map(|d| d.to_string()),
            };
            let same = stored
                .get(&(e.shard, window, e.model, figure.metric))
                .is_some_and(|old| same_figure(old, &fresh));
            if !same {
                changed.push(fresh);
            }
        }
    }
    store::store_figures(db.pool(), job, &changed).await?;
    Ok(changed.len())
}

/// Whether a stored figure says what a fresh one does. Values read back from a database may
/// differ in the last bits (MySQL's DOUBLE text protocol, JSON's float printing), which is not
/// a change.
fn same_figure(old: &StoredFigure, new: &StoredFigure) -> bool {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
        _ => false,
    };
    let detail = |d: &Option<String>| {
        d.as_deref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
    };
    old.run_id == new.run_id
        && old.model_sha256 == new.model_sha256
        && old.status == new.status
        && close(old.value, new.value)
        && detail(&old.detail) == detail(&new.detail)
}

/// Evaluate what is due for a job with `[labels]`: windows whose maturity has passed since they
/// were last evaluated, a bounded number at a time. What the daemon runs after each tick and
/// `run-job` after its windows.
pub async fn evaluate_due<B: Backend>(
    db: &B,
    job: &PreparedJob,
    now: DateTime<Utc>,
) -> anyhow::Result<Evaluation> {
    let Some(labels) = &job.spec.labels else {
        return Ok(Evaluation::default());
    };
    let select = Select::Due {
        ready_before: now - labels.maturity,
        limit: DUE_PER_PASS,
    };
    evaluate(db, job, select, now).await
}

/// The latest final window's figures and a rolling 7-day figure per model and metric: what
/// `monitor`, `status` and `/metrics` show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// The latest final window.
    #[serde(skip)]
    pub window: Option<Window>,
    /// (model, metric, latest window's value, the 7 days' value), in metric order.
    pub figures: Vec<SummaryFigure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryFigure {
    pub model: String,
    pub metric: String,
    pub latest: Option<f64>,
    /// The 7 days' windows' values, weighted by their labelled rows (a mean of windows' AUCs,
    /// not an AUC of the week's rows).
    pub rolling_7d: Option<f64>,
}

impl Summary {
    pub fn latest(&self, model: &str, metric: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.model == model && f.metric == metric)
            .and_then(|f| f.latest)
    }
}

/// The job's [`Summary`] from its stored final figures.
pub async fn summary<B: Backend>(db: &B, job: &str) -> anyhow::Result<Summary> {
    let stored = store::recent_final(db.pool(), job, 7).await?;
    Ok(summarize(&stored))
}

fn summarize(stored: &[StoredFigure]) -> Summary {
    let Some(latest_end) = stored.iter().map(|f| f.window.end).max() else {
        return Summary::default();
    };
    // Each (shard, window, model)'s labelled rows: the weight of its other figures.
    let weight: HashMap<(u32, Window, &str), f64> = stored
        .iter()
        .filter(|f| f.metric == "labelled")
        .map(|f| {
            (
                (f.shard, f.window, f.model.as_str()),
                f.value.unwrap_or(0.0),
            )
        })
        .collect();
    let mut order: Vec<(&str, &str)> = Vec::new();
    // (model, metric) → (latest: sum, weight), (rolling: sum, weight)
    let mut sums: HashMap<(&str, &str), [(f64, f64); 2]> = HashMap::new();
    for f in stored {
        let Some(value) = f.value else { continue };
        let counted = matches!(
            f.metric.as_str(),
            "labelled" | "scored" | "duplicate_labels"
        );
        let w = match counted {
            true => 1.0,
            false => *weight
                .get(&(f.shard, f.window, f.model.as_str()))
                .unwrap_or(&0.0),
        };
        let key = (f.model.as_str(), f.metric.as_str());
        if !sums.contains_key(&key) {
            order.push(key);
        }
        let entry = sums.entry(key).or_insert([(0.0, 0.0); 2]);
        entry[1].0 += value * w;
        entry[1].1 += w;
        if f.window.end == latest_end {
            entry[0].0 += value * w;
            entry[0].1 += w;
        }
    }
    let rank = |metric: &str| {
        metrics::CLASSIFICATION
            .iter()
            .chain(metrics::REGRESSION.iter())
            .position(|m| *m == metric)
            .unwrap_or(usize::MAX)
    };
    order.sort_by_key(|(model, metric)| (*model != "champion", rank(metric)));
    let latest_window = stored
        .iter()
        .find(|f| f.window.end == latest_end)
        .map(|f| f.window);
    Summary {
        window: latest_window,
        figures: order
            .into_iter()
            .map(|(model, metric)| {
                let [(ls, lw), (rs, rw)] = sums[&(model, metric)];
                let counted = matches!(metric, "labelled" | "scored" | "duplicate_labels");
                let mean = |s: f64, w: f64| match (counted, w > 0.0) {
                    (true, _) => Some(s),
                    (false, true) => Some(s / w),
                    (false, false) => None,
                };
                SummaryFigure {
                    model: model.to_owned(),
                    metric: metric.to_owned(),
                    latest: mean(ls, lw),
                    rolling_7d: mean(rs, rw),
                }
            })
            .collect(),
    }
}
