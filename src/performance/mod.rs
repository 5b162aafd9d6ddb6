//! Realized performance: each committed window's predictions joined with the labels the
//! application records later (`[labels]`), judged per model (the champion, and the challenger
//! where one scored the window), and stored in `batchscore_performance`, provisional until the
//! labels' maturity has passed, then final.
//!
//! Evaluation reads and writes only its own table: it takes no claim and holds no lock a run
//! waits for, so it runs beside scoring (`evaluate`, the daemon after each tick, `run-job`
//! after its windows). Every evaluation recomputes what it reads, so late labels change the
//! figures, and one that finds nothing new writes nothing.

mod check;
pub mod metrics;
mod summary;

pub use check::{check, describe};
pub use summary::{Summary, summary};

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use self::metrics::{Classified, Figure, Regressed};
use crate::db::Backend;
use crate::db::dialect::Dialect;
use crate::db::performance::{
    self as store, Committed, IntegerClasses, JoinSpec, Key, KeyRef, Select, StoredFigure, Truth,
};
use crate::ident::Ident;
use crate::job::PreparedJob;
use crate::ledger::RunRef;
use crate::plan::Window;
use crate::source::{ColumnKind, SourceColumns};
use crate::spec::SourceFrom;
use crate::spec::labels::{LabelsSpec, Positive, Task};

/// At most this many result rows are read per query: the results table has no index on the
/// run, so each query scans it, and fewer, larger reads scan it fewer times.
const ROWS_PER_READ: i64 = 16_000_000;
/// At most this many labelled rows of windows not yet complete are held during a read. A
/// window's labelled rows are held to sort them (an exact AUC) until its last row is read:
/// where rows come in the order they were written, that is one window at a time. Where the
/// plan reorders them (PostgreSQL hashing the results rather than the labels, rows moved by
/// updates), the windows holding the most are let go past this, and read again afterwards in
/// reads of at most this many rows, which can hold no more.
const HELD_ROWS: usize = 1_000_000;

/// [`HELD_ROWS`], or `BATCHSCORE_EVALUATE_HELD_ROWS`: a test's small bound, to let windows go
/// without a million rows.
fn held_rows() -> usize {
    std::env::var("BATCHSCORE_EVALUATE_HELD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HELD_ROWS)
}
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
    /// Label rows the join matched to the window's result rows, a key's duplicates and rows
    /// without a score included: what is left of the labels for keys never scored.
    #[serde(skip)]
    pub matched_labels: u64,
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
    if windows.is_empty() {
        return Ok(evaluation);
    }
    // Every window, of a results table one read takes whole: read with every label, where that
    // counts the labels of keys never scored on the way (see `JoinSpec::whole`).
    let rows: i64 = windows.iter().map(|w| w.rows_written).sum();
    let whole = select.is_every_window() && <B::Db as Dialect>::FULL_JOIN && rows <= ROWS_PER_READ;
    let reading = Reading {
        integers: integer_classes(db, job, labels).await,
        whole,
    };
    let let_go = evaluate_windows(
        db,
        job,
        labels,
        reading,
        windows,
        now,
        ROWS_PER_READ,
        &mut evaluation,
    )
    .await?;
    if !let_go.is_empty() {
        // Rows came too far out of order to hold: these windows again, in reads small enough
        // to hold whole.
        tracing::info!(
            job = %name,
            windows = let_go.len(),
            "result rows out of order: windows let go to stay within the rows held, read again"
        );
        let small = i64::try_from(held_rows()).unwrap_or(i64::MAX);
        let left = evaluate_windows(
            db,
            job,
            labels,
            reading.in_part(),
            let_go,
            now,
            small,
            &mut evaluation,
        )
        .await?;
        debug_assert!(
            left.is_empty(),
            "a read of at most HELD_ROWS rows holds them all"
        );
    }
    Ok(evaluation)
}

/// How the windows' rows are read: which class columns as integers, and whether the read is
/// [`JoinSpec::whole`].
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    integers: IntegerClasses,
    whole: bool,
}

impl Reading {
    /// The same, for a read of some windows only.
    fn in_part(self) -> Reading {
        Reading {
            whole: false,
            ..self
        }
    }
}

/// Evaluate `windows` in reads of at most `rows_per_read` rows (and [`WINDOWS_PER_READ`]
/// windows), or in one read when it is whole; the windows a read let go (see [`HELD_ROWS`])
/// are returned.
#[allow(clippy::too_many_arguments)]
async fn evaluate_windows<B: Backend>(
    db: &B,
    job: &PreparedJob,
    labels: &LabelsSpec,
    reading: Reading,
    windows: Vec<Committed>,
    now: DateTime<Utc>,
    rows_per_read: i64,
    evaluation: &mut Evaluation,
) -> anyhow::Result<Vec<Committed>> {
    if reading.whole {
        return evaluate_batch(db, job, labels, reading, &windows, now, true, evaluation).await;
    }
    let mut let_go = Vec::new();
    let mut batch: Vec<Committed> = Vec::new();
    let mut rows = 0;
    for window in windows {
        if !batch.is_empty()
            && (rows + window.rows_written > rows_per_read || batch.len() == WINDOWS_PER_READ)
        {
            let full = std::mem::take(&mut batch);
            let_go.extend(
                evaluate_batch(db, job, labels, reading, &full, now, true, evaluation).await?,
            );
            rows = 0;
        }
        rows += window.rows_written;
        batch.push(window);
    }
    if !batch.is_empty() {
        let_go
            .extend(evaluate_batch(db, job, labels, reading, &batch, now, true, evaluation).await?);
    }
    Ok(let_go)
}

/// [`evaluate`], and the labels of keys never scored, unless its join counted them. When it
/// read every window (`evaluate` without bounds), they are the rest of the labels: two counts,
/// read at once, rather than a join over every label. (Read beside the evaluation instead, the
/// counts slowed its scan by as much as they took.)
pub async fn evaluate_counting_unscored<B: Backend>(
    db: &B,
    job: &PreparedJob,
    select: Select,
    now: DateTime<Utc>,
) -> anyhow::Result<Evaluation> {
    let mut evaluation = evaluate(db, job, select, now).await?;
    let counts = match &job.spec.labels {
        Some(labels)
            if select.is_every_window()
                && !evaluation.windows.is_empty()
                && evaluation.unscored_labels.is_none() =>
        {
            let join = join_spec::<B::Db>(job, labels, &[], Reading::default());
            Some(store::label_counts(db.pool(), &join).await?)
        }
        _ => None,
    };
    count_unscored(db, job, &mut evaluation, counts).await?;
    Ok(evaluation)
}

/// Count the labels of keys never scored (`evaluate` only): every label, less those the
/// evaluation matched when it read the whole results table (`counts`); else a join over every
/// label.
async fn count_unscored<B: Backend>(
    db: &B,
    job: &PreparedJob,
    evaluation: &mut Evaluation,
    counts: Option<store::LabelCounts>,
) -> anyhow::Result<()> {
    if let Some(labels) = &job.spec.labels
        && !evaluation.windows.is_empty()
        && evaluation.unscored_labels.is_none()
    {
        let join = join_spec::<B::Db>(job, labels, &[], Reading::default());
        let champion = evaluation.windows.iter().filter(|w| w.model == "champion");
        let (mut scored, mut matched) = (0.0, 0);
        for w in champion {
            scored += w.value("scored").unwrap_or(0.0);
            matched += w.matched_labels;
        }
        let matched = i64::try_from(matched).unwrap_or(i64::MAX);
        let unscored =
            store::unscored_labels(db.pool(), &join, counts, scored as i64, matched).await?;
        evaluation.unscored_labels = Some(unscored);
    }
    Ok(())
}

/// The join that reads `batch`'s windows (none: the join's tables alone, for counting): the
/// challenger's table when one of them was challenged, and in window order when it reads more
/// rows than may be held from a join that may reorder them.
fn join_spec<'a, DB: Dialect>(
    job: &'a PreparedJob,
    labels: &'a LabelsSpec,
    batch: &[Committed],
    reading: Reading,
) -> JoinSpec<'a> {
    let challenged = batch.iter().any(|w| w.challenger_sha256.is_some());
    let rows: i64 = batch.iter().map(|w| w.rows_written).sum();
    JoinSpec {
        results: &job.results,
        challenger: job.challenger_table.as_ref().filter(|_| challenged),
        labels,
        integers: reading.integers,
        whole: reading.whole,
        in_window_order: DB::JOIN_REORDERS
            && usize::try_from(rows).unwrap_or(usize::MAX) > held_rows(),
    }
}

/// Which class columns of the job to read as integers: those the database keeps as integers,
/// where that judges them as their text would be (PostgreSQL: see `Dialect::INTEGER_LABELS`).
/// A table that cannot be described is read as text, as before: the join then says what is
/// wrong with it.
async fn integer_classes<B: Backend>(
    db: &B,
    job: &PreparedJob,
    labels: &LabelsSpec,
) -> IntegerClasses {
    let Task::Classification { predicted, .. } = &labels.task else {
        return IntegerClasses::default();
    };
    if !<B::Db as Dialect>::INTEGER_LABELS {
        return IntegerClasses::default();
    }
    let integer = |columns: anyhow::Result<SourceColumns>, column: &Ident| {
        columns.is_ok_and(|columns| {
            columns
                .iter()
                .any(|(c, kind)| c == column.as_str() && matches!(kind, ColumnKind::Integer))
        })
    };
    let label = integer(
        check::describe_labels(db, &job.spec, labels).await,
        &labels.label,
    );
    let mut predicted_integer = predicted.is_some();
    if let Some(column) = predicted {
        for table in std::iter::once(&job.results).chain(&job.challenger_table) {
            let mut results = job.spec.clone();
            results.source.from = SourceFrom::Table(table.table.clone());
            predicted_integer &= integer(db.describe_source(&results).await, column);
        }
    }
    IntegerClasses {
        label,
        predicted: predicted_integer,
    }
}

/// Whether labels read as text are the positive class, remembered for the few distinct labels a
/// column holds: parsing `1` as a number for every row was a tenth of an evaluation.
#[derive(Default)]
struct Seen(Vec<(String, bool)>);

impl Seen {
    /// A label as the metrics take it: 1 or 0 against the positive class, or a regression's
    /// number; `None` for a label of the other kind.
    fn truth(&mut self, label: Truth<'_>, positive: Option<&Positive>) -> Option<f64> {
        match positive {
            Some(positive) => self
                .is_positive(label, positive)
                .map(|is| f64::from(u8::from(is))),
            // A NaN label (PostgreSQL keeps one) is no label, as NULL is none.
            None => match label {
                Truth::Number(x) if !x.is_nan() => Some(x),
                _ => None,
            },
        }
    }

    /// Whether a class (a label, a predicted label) is the positive one; `None` for a number.
    fn is_positive(&mut self, class: Truth<'_>, positive: &Positive) -> Option<bool> {
        match class {
            Truth::Text(text) => Some(self.positive(positive, text)),
            Truth::Integer(i) => Some(positive.matches_integer(i)),
            Truth::Number(_) => None,
        }
    }

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

/// Evaluate the windows of `batch` from one scan. With `early`, a window is judged (and its rows
/// freed) as soon as the ledger's count of its rows has been read; without, at the end. Past
/// [`HELD_ROWS`] held, the windows holding the most are let go: they are returned, unjudged.
#[allow(clippy::too_many_arguments)]
async fn evaluate_batch<B: Backend>(
    db: &B,
    job: &PreparedJob,
    labels: &LabelsSpec,
    reading: Reading,
    batch: &[Committed],
    now: DateTime<Utc>,
    early_judging: bool,
    evaluation: &mut Evaluation,
) -> anyhow::Result<Vec<Committed>> {
    let join = join_spec::<B::Db>(job, labels, batch, reading);
    let runs: Vec<RunRef> = batch.iter().map(|w| w.run.clone()).collect();
    let mut gathered: Vec<Gathered> = Vec::with_capacity(batch.len());
    gathered.resize_with(batch.len(), Gathered::default);
    // The window whose rows are being read (rows come window by window, as they were written).
    let mut last: Option<usize> = None;
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
    // Windows judged as soon as their last row was read, freeing their rows; a row of one of
    // them arriving later after all (rows out of order) sends it back to be read again alone.
    let mut early: Vec<Evaluated> = Vec::new();
    let mut judged = vec![false; batch.len()];
    let mut again = vec![false; batch.len()];
    // Labelled rows held in `gathered` (the window being read, `last`, aside), and the windows
    // let go to stay within HELD_ROWS.
    let (mut held, bound) = (0usize, held_rows());
    let mut let_go = vec![false; batch.len()];
    let unscored = store::joined_rows(db, &join, &runs, |joined| {
        let current = match last {
            Some(at) if at == joined.run => at,
            _ => {
                let at = joined.run;
                if let_go[at] {
                    return Ok(());
                }
                if let Some(previous) = last.take() {
                    let window = &gathered[previous];
                    let complete = early_judging
                        && window.scored as i64 >= batch[previous].rows_written
                        && window.relabel.is_empty();
                    if complete {
                        let window = std::mem::take(&mut gathered[previous]);
                        early.extend(judge_window(
                            &batch[previous],
                            &window,
                            labels,
                            threshold,
                            now,
                        ));
                        judged[previous] = true;
                    } else {
                        held += window.rows.len();
                    }
                    if held > bound {
                        // Rows out of order: let the windows holding the most go, to half the
                        // bound.
                        let mut holding: Vec<(usize, usize)> = gathered
                            .iter()
                            .enumerate()
                            .filter(|(i, w)| !let_go[*i] && !w.rows.is_empty())
                            .map(|(i, w)| (w.rows.len(), i))
                            .collect();
                        holding.sort_unstable_by(|a, b| b.cmp(a));
                        for (rows, i) in holding {
                            if held <= bound / 2 {
                                break;
                            }
                            gathered[i] = Gathered::default();
                            held -= rows;
                            let_go[i] = true;
                        }
                        if let_go[at] {
                            return Ok(());
                        }
                    }
                }
                if judged[at] {
                    again[at] = true;
                }
                held -= gathered[at].rows.len();
                last = Some(at);
                at
            }
        };
        let truth = joined.label.and_then(|label| seen.truth(label, positive));
        let mut is_positive = |predicted: Option<Truth<'_>>| match (predicted, positive) {
            (Some(class), Some(positive)) => seen.is_positive(class, positive).unwrap_or(false),
            _ => false,
        };
        let row = truth.map(|truth| Row {
            score: joined.score,
            predicted: with_predicted.then(|| is_positive(joined.predicted)),
            challenger_score: joined.challenger_score,
            challenger_predicted: with_predicted.then(|| is_positive(joined.challenger_predicted)),
            truth,
        });
        gathered[current].add(joined.key, row);
        Ok(())
    })
    .await?;
    if reading.whole {
        evaluation.unscored_labels = Some(i64::try_from(unscored).unwrap_or(i64::MAX));
    }

    // Keys labelled twice: the label that counts, read for them alone (the latest; the scan
    // reads no times, which would cost every row).
    let relabel: Vec<Key> = gathered
        .iter()
        .flat_map(|w| w.relabel.iter().cloned())
        .collect();
    if !relabel.is_empty() {
        let latest = store::latest_labels(db, labels, job.results.key_kind, &relabel).await?;
        for window in &mut gathered {
            for key in std::mem::take(&mut window.relabel) {
                let (Some(&(at, _)), Some(label)) = (window.keys.get(&key), latest.get(&key))
                else {
                    continue;
                };
                if let Some(truth) = seen.truth(label.as_truth(), positive) {
                    window.rows[at].truth = truth;
                }
            }
        }
    }

    let reread: Vec<usize> = (0..batch.len())
        .filter(|&i| again[i] && !let_go[i])
        .collect();
    if !reread.is_empty() {
        // Rows out of order: those windows are read again, each alone, held whole.
        early.retain(|e| {
            !batch
                .iter()
                .position(|w| w.run.id == e.run_id)
                .is_some_and(|i| again[i])
        });
        for i in reread {
            let mut alone = Evaluation::default();
            let alone_batch = [batch[i].clone()];
            let reading = evaluate_batch(
                db,
                job,
                labels,
                reading.in_part(),
                &alone_batch,
                now,
                false,
                &mut alone,
            );
            // Read alone and judged at the end, nothing is let go: a window held whole.
            Box::pin(reading).await?;
            evaluation.changed += alone.changed;
            early.extend(alone.windows);
        }
    }
    let mut figures = early;
    for (i, committed) in batch.iter().enumerate() {
        if judged[i] || let_go[i] {
            continue;
        }
        figures.extend(judge_window(
            committed,
            &gathered[i],
            labels,
            threshold,
            now,
        ));
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
    Ok(batch
        .iter()
        .enumerate()
        .filter(|(i, _)| let_go[*i])
        .map(|(_, w)| w.clone())
        .collect())
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
            run_id: committed.run.id.clone(),
            model_sha256: sha,
            status,
            figures: judge(window, &labels.task, threshold, challenger),
            matched_labels: window.rows.len() as u64 + window.duplicates,
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
            let rows: Vec<Classified> = window
                .rows
                .iter()
                .filter_map(|row| {
                    let (score, predicted) = pick(row);
                    // A NaN (PostgreSQL keeps one) is no score, as NULL is none.
                    let score = score.filter(|s| !s.is_nan())?;
                    Some(Classified {
                        score,
                        positive: row.truth == 1.0,
                        predicted: predicted.unwrap_or(score >= threshold),
                    })
                })
                .collect();
            metrics::classification(&rows, window.scored, window.duplicates)
        }
        Task::Regression { .. } => {
            let rows: Vec<Regressed> = window
                .rows
                .iter()
                .filter_map(|row| {
                    Some(Regressed {
                        prediction: pick(row).0.filter(|p| !p.is_nan())?,
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
