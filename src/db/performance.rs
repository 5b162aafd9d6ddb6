//! Realized performance in the database: which committed windows to evaluate, their result
//! rows joined with the application's labels (streamed, never held whole), and the figures in
//! `batchscore_performance`. Written once for every backend (see [`super::dialect`]); the
//! arithmetic is [`crate::performance`]'s.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};

use super::dialect::{self, Dialect, Param, Set, required};
use super::lineage::{run_params, same_run};
use super::{Backend, Field, FieldKind};
use crate::ident::Ident;
use crate::ledger::RunRef;
use crate::plan::Window;
use crate::sink::ResultsTable;
use crate::source::KeyKind;
use crate::spec::LineageColumns;
use crate::spec::SourceFrom;
use crate::spec::labels::{LabelsSpec, Task};

/// A committed window: the latest run that committed it, what scored it, and how many rows.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub run: RunRef,
    pub shard: u32,
    pub window: Window,
    pub model_sha256: String,
    /// The challenger that scored the window beside the model, if one did (its rows are in the
    /// challenger's table under the same run id).
    pub challenger_sha256: Option<String>,
    pub rows_written: i64,
}

/// Which committed windows to evaluate.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Select {
    /// Every window inside `[from, to)`, either bound open.
    Range {
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    },
    /// Windows that ended by `ready_before` (their labels are due) and have no final figures
    /// from their latest run yet, oldest first, at most `limit`.
    Due {
        ready_before: DateTime<Utc>,
        limit: usize,
    },
}

impl Select {
    /// Every committed window of the job (`evaluate` without bounds).
    pub fn is_every_window(self) -> bool {
        matches!(
            self,
            Select::Range {
                from: None,
                to: None
            }
        )
    }
}

/// The job's committed windows that `select` picks, oldest first: for each window (and shard),
/// its latest succeeded run, if that run wrote rows.
pub(crate) async fn committed_windows<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    select: Select,
) -> anyhow::Result<Vec<Committed>> {
    let mut params: Vec<Param> = vec![job.into()];
    let mut filter = String::new();
    let mut limit = String::new();
    match select {
        Select::Range { from, to } => {
            if let Some(from) = from {
                params.push(from.into());
                filter += &format!(" AND r.window_start >= ${}", params.len());
            }
            if let Some(to) = to {
                params.push(to.into());
                filter += &format!(" AND r.window_end <= ${}", params.len());
            }
        }
        Select::Due {
            ready_before,
            limit: most,
        } => {
            params.push(ready_before.into());
            filter += &format!(
                " AND r.window_end <= ${} AND NOT EXISTS (SELECT 1 FROM batchscore_performance p \
                 WHERE p.job = r.job AND p.shard = r.shard AND p.window_start = r.window_start \
                 AND p.window_end = r.window_end AND p.model = 'champion' \
                 AND p.metric = 'labelled' AND p.status = 'final' AND p.run_id = r.run_id)",
                params.len()
            );
            limit = format!(" LIMIT {most}");
        }
    }
    let sql = format!(
        "SELECT r.run_id, r.id, r.shard, r.window_start, r.window_end, r.model_sha256, \
         r.challenger_sha256, r.challenger_error, r.rows_written \
         FROM batchscore_runs r \
         WHERE r.job = $1 AND r.status = 'succeeded' AND r.rows_written > 0 \
         AND NOT EXISTS (SELECT 1 FROM batchscore_runs n WHERE n.job = r.job \
         AND n.shard = r.shard AND n.window_start = r.window_start \
         AND n.window_end = r.window_end AND n.status = 'succeeded' \
         AND n.finished_at > r.finished_at){filter} \
         ORDER BY r.window_end, r.shard{limit}"
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .with_context(|| format!("finding job {job}'s committed windows to evaluate"))?;
    rows.iter()
        .map(|row| {
            let challenger: Option<String> = DB::text(row, "challenger_sha256")?;
            let failed = DB::text(row, "challenger_error")?.is_some();
            Ok(Committed {
                run: RunRef {
                    id: required(DB::text(row, "run_id")?, "run_id")?,
                    number: required(DB::int(row, "id")?, "id")?,
                },
                shard: u32::try_from(required(DB::int(row, "shard")?, "shard")?)?,
                window: Window {
                    start: required(DB::time(row, "window_start")?, "window_start")?,
                    end: required(DB::time(row, "window_end")?, "window_end")?,
                },
                model_sha256: required(DB::text(row, "model_sha256")?, "model_sha256")?,
                challenger_sha256: challenger.filter(|_| !failed),
                rows_written: DB::int(row, "rows_written")?.unwrap_or(0),
            })
        })
        .collect()
}

/// What the join reads: the job's results (and its challenger's), and its labels.
pub(crate) struct JoinSpec<'a> {
    pub results: &'a ResultsTable,
    pub challenger: Option<&'a ResultsTable>,
    pub labels: &'a LabelsSpec,
    /// A classifier's columns that cross as integers rather than text.
    pub integers: IntegerClasses,
    /// Read every row of the results table, whatever its run, and every label, those of keys
    /// never scored too (a `FULL JOIN`, where the database has one): [`joined_rows`] counts
    /// them, and no count of either table is needed.
    pub whole: bool,
    /// Ask for the rows run by run (`ORDER BY` the run column): where the join may reorder
    /// them and the read holds more rows than an evaluation may, sorting them on the server
    /// costs less than letting windows go and reading them again.
    pub in_window_order: bool,
}

/// Which of a classifier's class columns are read as integers: those the database keeps as
/// integers. Text is what any label can be compared as, but printing a million integers as text
/// was a tenth of the server's work in an evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IntegerClasses {
    /// The label, in the labels.
    pub label: bool,
    /// The predicted label, in the results table (and the challenger's).
    pub predicted: bool,
}

/// A result row's key: what tells two labels for the same row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Integer(i64),
    Text(String),
}

/// A result row's key as read, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRef<'a> {
    Integer(i64),
    Text(&'a str),
}

impl KeyRef<'_> {
    pub fn to_owned(self) -> Key {
        match self {
            KeyRef::Integer(i) => Key::Integer(i),
            KeyRef::Text(text) => Key::Text(text.to_owned()),
        }
    }
}

/// One row of the join, borrowed from the driver: a result row of the window, and one label for
/// its key (or none).
#[derive(Debug)]
pub(crate) struct Joined<'a> {
    /// Which of the runs asked for wrote the row: its place among them.
    pub run: usize,
    pub key: KeyRef<'a>,
    pub score: Option<f64>,
    /// The predicted label (classification with `predicted`).
    pub predicted: Option<Truth<'a>>,
    pub challenger_score: Option<f64>,
    pub challenger_predicted: Option<Truth<'a>>,
    pub label: Option<Truth<'a>>,
}

/// A label as read: text or an integer for a classifier (compared with `positive`), a number for
/// a regressor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Truth<'a> {
    Text(&'a str),
    Integer(i64),
    Number(f64),
}

/// `FROM …` of the labels, aliased `l`.
fn labels_from<DB: Dialect>(labels: &LabelsSpec) -> String {
    match &labels.from {
        SourceFrom::Table(table) => format!("{} l", DB::table(table)),
        SourceFrom::Query(query) => format!("({query}) l"),
    }
}

/// A key column as [`Backend::stream_fields`] reads it: cast to a 64-bit integer or to text.
fn key_field<DB: Dialect>(side: &str, key: &Ident, kind: KeyKind) -> (String, FieldKind) {
    let column = DB::column(key);
    match kind {
        KeyKind::Integer => (
            format!("CAST({side}.{column} AS {})", DB::BIGINT),
            FieldKind::Int,
        ),
        KeyKind::Text => (
            format!("CAST({side}.{column} AS {})", DB::TEXT),
            FieldKind::Text,
        ),
    }
}

/// The select list of `columns` (expression, how it is read), named `c0`, `c1`, … as
/// [`Backend::stream_fields`] wants them, and their kinds.
fn select_fields(columns: &[(String, FieldKind)]) -> (String, Vec<FieldKind>) {
    debug_assert!(columns.len() <= super::MAX_FIELDS);
    let selected: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (expression, _))| format!("{expression} AS c{i}"))
        .collect();
    (
        selected.join(", "),
        columns.iter().map(|(_, kind)| *kind).collect(),
    )
}

/// Stream the result rows the `runs` wrote, each with its labels (a key with two labels
/// comes twice; one without, once with none), to `each`. Which of two labels counts is
/// [`latest_labels`]'s to say: the join reads no time, so the scan costs what reading the rows
/// does. Returns how many labels name a key with no result row, when the join is
/// [`JoinSpec::whole`] (else 0).
pub(crate) async fn joined_rows<B: Backend>(
    db: &B,
    join: &JoinSpec<'_>,
    runs: &[RunRef],
    mut each: impl FnMut(Joined<'_>) -> anyhow::Result<()> + Send,
) -> anyhow::Result<u64> {
    debug_assert!(!join.whole || B::Db::FULL_JOIN);
    let lineage = join.results.lineage;
    let labels = join.labels;
    let key = B::Db::column(&join.results.key);
    let cast = |side: &str, column: &Ident, to: &str| {
        format!("CAST({side}.{} AS {to})", B::Db::column(column))
    };
    let (double, text) = (B::Db::DOUBLE, B::Db::TEXT);
    let class = |integer: bool| match integer {
        true => (B::Db::BIGINT, FieldKind::Int),
        false => (text, FieldKind::Text),
    };
    // Each column read, as `c0`, `c1`, …: (expression, how it is read).
    let run = format!("m.{}", lineage.run_column());
    let mut columns: Vec<(String, FieldKind)> = vec![match lineage {
        LineageColumns::Compact => (run, FieldKind::Int),
        LineageColumns::Full => (run, FieldKind::Text),
    }];
    columns.push(key_field::<B::Db>(
        "m",
        &join.results.key,
        join.results.key_kind,
    ));
    let (score, predicted, label) = match &labels.task {
        Task::Classification {
            score, predicted, ..
        } => {
            let (to, kind) = class(join.integers.label);
            (
                score,
                predicted.as_ref(),
                (cast("l", &labels.label, to), kind),
            )
        }
        Task::Regression { prediction } => (
            prediction,
            None,
            (cast("l", &labels.label, double), FieldKind::Float),
        ),
    };
    columns.push((cast("m", score, double), FieldKind::Float));
    let (predicted_to, predicted_kind) = class(join.integers.predicted);
    let at_predicted = predicted.map(|p| {
        columns.push((cast("m", p, predicted_to), predicted_kind));
        columns.len() - 1
    });
    let mut from = format!("{} m", B::Db::table(&join.results.table));
    let mut at_challenger = None;
    if let Some(challenger) = join.challenger {
        columns.push((cast("c", score, double), FieldKind::Float));
        at_challenger = Some(columns.len() - 1);
        if let Some(p) = predicted {
            columns.push((cast("c", p, predicted_to), predicted_kind));
        }
        from += &format!(
            " LEFT JOIN {} c ON c.{key} = m.{key} AND {}",
            B::Db::table(&challenger.table),
            same_run(("m", lineage), ("c", challenger.lineage))
        );
    }
    columns.push(label);
    let at_label = columns.len() - 1;
    from += &format!(
        " {} JOIN {} ON l.{} = m.{key} AND l.{} IS NOT NULL",
        match join.whole {
            true => "FULL",
            false => "LEFT",
        },
        labels_from::<B::Db>(labels),
        B::Db::column(&labels.key),
        B::Db::column(&labels.label),
    );
    let (selected, kinds) = select_fields(&columns);
    let (mut sql, params) = match join.whole {
        true => (format!("SELECT {selected} FROM {from}"), Vec::new()),
        false => (
            format!(
                "SELECT {selected} FROM {from} WHERE m.{} IN ({})",
                lineage.run_column(),
                dialect::placeholders(1, runs.len()).join(", ")
            ),
            run_params(lineage, runs),
        ),
    };
    if join.in_window_order {
        sql += &format!(" ORDER BY m.{}", lineage.run_column());
    }
    // Each run by its place among `runs`: a row's run is looked up once, and the rows of one
    // window (they come window by window, as they were written) only compare with the last.
    let by_id: HashMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let by_number: HashMap<i64, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.number, i))
        .collect();
    let mut last: Option<usize> = None;
    let mut place = move |field: Field<'_>| -> Option<usize> {
        let same = |at: usize| match field {
            Field::Int(number) => runs[at].number == number,
            Field::Text(id) => runs[at].id == id,
            _ => false,
        };
        if let Some(at) = last.filter(|&at| same(at)) {
            return Some(at);
        }
        last = match field {
            Field::Int(number) => by_number.get(&number).copied(),
            Field::Text(id) => by_id.get(id).copied(),
            _ => None,
        };
        last
    };
    fn truth_at<'a>(fields: &[Field<'a>], i: usize) -> Option<Truth<'a>> {
        match fields[i] {
            Field::Text(text) => Some(Truth::Text(text)),
            Field::Int(i) => Some(Truth::Integer(i)),
            Field::Float(v) => Some(Truth::Number(v)),
            Field::Null => None,
        }
    }
    fn float_at(fields: &[Field<'_>], i: usize) -> Option<f64> {
        match fields[i] {
            Field::Float(v) => Some(v),
            _ => None,
        }
    }
    let mut unscored = 0;
    let mut row = |fields: &[Field<'_>]| -> anyhow::Result<()> {
        let label = truth_at(fields, at_label);
        let key = match fields[1] {
            Field::Int(i) => KeyRef::Integer(i),
            Field::Text(text) => KeyRef::Text(text),
            // A label of no result row (a whole join's): results keys are never NULL.
            _ if join.whole => {
                unscored += u64::from(label.is_some());
                return Ok(());
            }
            _ => anyhow::bail!("a result row without a key"),
        };
        let Some(run) = place(fields[0]) else {
            return Ok(()); // a row of a run not asked for (a whole join reads them all)
        };
        each(Joined {
            run,
            key,
            score: float_at(fields, 2),
            predicted: at_predicted.and_then(|i| truth_at(fields, i)),
            challenger_score: at_challenger.and_then(|i| float_at(fields, i)),
            challenger_predicted: at_challenger
                .filter(|_| at_predicted.is_some())
                .and_then(|i| truth_at(fields, i + 1)),
            label,
        })
    };
    db.stream_fields(sql, params, &kinds, &mut row)
        .await
        .with_context(|| format!("reading {} joined with its labels", join.results.table))?;
    Ok(unscored)
}

/// The label that counts for each of `keys` (keys labelled more than once): the latest by
/// `labels.timestamp`, and of labels equally late, or without a timestamp, the greatest.
pub(crate) async fn latest_labels<B: Backend>(
    db: &B,
    labels: &LabelsSpec,
    key_kind: KeyKind,
    keys: &[Key],
) -> anyhow::Result<std::collections::HashMap<Key, LabelValue>> {
    let mut latest: std::collections::HashMap<Key, (f64, LabelValue)> =
        std::collections::HashMap::new();
    let (text, double) = (B::Db::TEXT, B::Db::DOUBLE);
    let label = B::Db::column(&labels.label);
    let key = B::Db::column(&labels.key);
    let regression = matches!(labels.task, Task::Regression { .. });
    let mut columns = vec![
        key_field::<B::Db>("l", &labels.key, key_kind),
        match regression {
            true => (format!("CAST(l.{label} AS {double})"), FieldKind::Float),
            false => (format!("CAST(l.{label} AS {text})"), FieldKind::Text),
        },
    ];
    if let Some(ts) = &labels.timestamp {
        let column = format!("l.{}", B::Db::column(ts));
        columns.push((B::Db::epoch(&column), FieldKind::Float));
    }
    let (selected, kinds) = select_fields(&columns);
    for part in keys.chunks(500) {
        let sql = format!(
            "SELECT {selected} FROM {} WHERE l.{label} IS NOT NULL AND l.{key} IN ({})",
            labels_from::<B::Db>(labels),
            dialect::placeholders(1, part.len()).join(", ")
        );
        let params = part
            .iter()
            .map(|k| match k {
                Key::Integer(i) => Param::from(*i),
                Key::Text(t) => Param::from(t),
            })
            .collect();
        let mut each = |fields: &[Field<'_>]| -> anyhow::Result<()> {
            let key = match fields[0] {
                Field::Int(i) => Key::Integer(i),
                Field::Text(t) => Key::Text(t.to_owned()),
                _ => return Ok(()),
            };
            let value = match fields[1] {
                Field::Text(t) => LabelValue::Text(t.to_owned()),
                Field::Float(v) => LabelValue::Number(v),
                _ => return Ok(()),
            };
            let at = match fields.get(2) {
                Some(Field::Float(at)) => *at,
                _ => f64::NEG_INFINITY,
            };
            let later = |(t, v): &(f64, LabelValue)| {
                at > *t || (at == *t && value.partial_cmp(v) == Some(std::cmp::Ordering::Greater))
            };
            match latest.get(&key) {
                Some(kept) if !later(kept) => {}
                _ => {
                    latest.insert(key, (at, value));
                }
            }
            Ok(())
        };
        db.stream_fields(sql, params, &kinds, &mut each)
            .await
            .context("reading the labels of keys labelled more than once")?;
    }
    Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// A label, owned (see [`Truth`]).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub(crate) enum LabelValue {
    Text(String),
    Number(f64),
}

impl LabelValue {
    pub fn as_truth(&self) -> Truth<'_> {
        match self {
            LabelValue::Text(text) => Truth::Text(text),
            LabelValue::Number(x) => Truth::Number(*x),
        }
    }
}

/// The two counts that tell the labels of keys never scored without a join: the results
/// table's rows and the labels that are labels (not NULL), read at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabelCounts {
    pub results: i64,
    pub labels: i64,
}

/// `SELECT COUNT(*) AS n …`'s answer.
async fn count<DB: Dialect>(pool: &sqlx::Pool<DB>, sql: String) -> anyhow::Result<i64> {
    let row = dialect::fetch_optional(DB::on_pool(pool), sql, vec![])
        .await
        .context("counting labels of keys that were never scored")?;
    Ok(row
        .map(|r| DB::int(&r, "n"))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

/// [`LabelCounts`], each on a connection of its own.
pub(crate) async fn label_counts<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    join: &JoinSpec<'_>,
) -> anyhow::Result<LabelCounts> {
    let results = count(
        pool,
        format!(
            "SELECT COUNT(*) AS n FROM {}",
            DB::table(&join.results.table)
        ),
    );
    let labels = count(
        pool,
        format!(
            "SELECT COUNT(*) AS n FROM {} WHERE l.{} IS NOT NULL",
            labels_from::<DB>(join.labels),
            DB::column(&join.labels.label)
        ),
    );
    let (results, labels) = tokio::try_join!(results, labels)?;
    Ok(LabelCounts { results, labels })
}

/// How many labels name a key the job never scored (ignored by the evaluation). `scored` rows
/// were read, of which `matched` had labels; `counts` as [`label_counts`] found them. When the
/// evaluation read every row of the results table, the unscored labels are the rest of the
/// labels, counted without a join; else they are counted by one.
pub(crate) async fn unscored_labels<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    join: &JoinSpec<'_>,
    counts: Option<LabelCounts>,
    scored: i64,
    matched: i64,
) -> anyhow::Result<i64> {
    if let Some(counts) = counts
        && counts.results == scored
    {
        return Ok(counts.labels - matched);
    }
    let labels = join.labels;
    let sql = format!(
        "SELECT COUNT(*) AS n FROM {} WHERE l.{label} IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM {} m WHERE m.{} = l.{})",
        labels_from::<DB>(labels),
        DB::table(&join.results.table),
        DB::column(&join.results.key),
        DB::column(&labels.key),
        label = DB::column(&labels.label),
    );
    count(pool, sql).await
}

/// Whether the labels hold `spellings` (the positive class, as text) and, if not, up to five
/// values they do hold: `None` when there are no labels at all.
pub(crate) async fn label_values<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    labels: &LabelsSpec,
    spellings: &[String],
) -> anyhow::Result<Option<(bool, Vec<String>)>> {
    let label = format!("CAST(l.{} AS {})", DB::column(&labels.label), DB::TEXT);
    let from = labels_from::<DB>(labels);
    let ids = dialect::placeholders(1, spellings.len());
    let found = format!(
        "SELECT 1 AS found FROM {from} WHERE {label} IN ({}) LIMIT 1",
        ids.join(", ")
    );
    let params = spellings.iter().map(Param::from).collect();
    if dialect::fetch_optional(DB::on_pool(pool), found, params)
        .await
        .context("looking for the positive label")?
        .is_some()
    {
        return Ok(Some((true, Vec::new())));
    }
    let some = format!(
        "SELECT DISTINCT {label} AS v FROM {from} WHERE l.{} IS NOT NULL LIMIT 5",
        DB::column(&labels.label)
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), some, vec![])
        .await
        .context("reading the labels' values")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let values = rows
        .iter()
        .map(|r| Ok(DB::text(r, "v")?.unwrap_or_default()))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some((false, values)))
}

/// One stored figure: a window's metric for one model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredFigure {
    pub shard: u32,
    pub window: Window,
    /// `champion` or `challenger`.
    pub model: String,
    pub metric: String,
    pub run_id: String,
    pub model_sha256: String,
    /// `provisional` or `final`.
    pub status: String,
    pub value: Option<f64>,
    /// JSON, where one number cannot say it all.
    pub detail: Option<String>,
}

const COLUMNS: [&str; 12] = [
    "job",
    "shard",
    "window_start",
    "window_end",
    "model",
    "metric",
    "run_id",
    "model_sha256",
    "status",
    "value",
    "detail",
    "evaluated_at",
];

/// The job's stored figures of windows that end inside `[first_end, last_end]` (with `final_only`,
/// only final ones).
pub(crate) async fn stored_figures<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    first_end: DateTime<Utc>,
    last_end: DateTime<Utc>,
    final_only: bool,
) -> anyhow::Result<Vec<StoredFigure>> {
    let status = if final_only {
        " AND status = 'final'"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {} FROM batchscore_performance \
         WHERE job = $1 AND window_end >= $2 AND window_end <= $3{status} \
         ORDER BY window_end, shard, model, metric",
        COLUMNS[1..11].join(", ")
    );
    let params = vec![job.into(), first_end.into(), last_end.into()];
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .with_context(|| format!("reading job {job}'s stored performance"))?;
    rows.iter()
        .map(|row| {
            Ok(StoredFigure {
                shard: u32::try_from(required(DB::int(row, "shard")?, "shard")?)?,
                window: Window {
                    start: required(DB::time(row, "window_start")?, "window_start")?,
                    end: required(DB::time(row, "window_end")?, "window_end")?,
                },
                model: required(DB::text(row, "model")?, "model")?,
                metric: required(DB::text(row, "metric")?, "metric")?,
                run_id: required(DB::text(row, "run_id")?, "run_id")?,
                model_sha256: required(DB::text(row, "model_sha256")?, "model_sha256")?,
                status: required(DB::text(row, "status")?, "status")?,
                value: DB::float(row, "value")?,
                detail: DB::text(row, "detail")?,
            })
        })
        .collect()
}

/// The job's final figures of the `days` that end with its latest final window (empty if no
/// window is final yet).
pub(crate) async fn recent_final<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    days: i64,
) -> anyhow::Result<Vec<StoredFigure>> {
    let latest = dialect::fetch_optional(
        DB::on_pool(pool),
        "SELECT MAX(window_end) AS latest FROM batchscore_performance \
         WHERE job = $1 AND status = 'final'"
            .to_owned(),
        vec![job.into()],
    )
    .await
    .with_context(|| format!("reading job {job}'s latest evaluated window"))?;
    let Some(latest) = latest
        .map(|r| DB::time(&r, "latest"))
        .transpose()?
        .flatten()
    else {
        return Ok(Vec::new());
    };
    let since = latest - TimeDelta::days(days) + TimeDelta::microseconds(1);
    stored_figures(pool, job, since, latest, true).await
}

/// Write `figures` (each replacing the stored figure of its window, model and metric), in one
/// transaction.
pub(crate) async fn store_figures<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    figures: &[StoredFigure],
) -> anyhow::Result<()> {
    if figures.is_empty() {
        return Ok(());
    }
    let mut values = dialect::placeholders(1, COLUMNS.len() - 1);
    values.push(DB::NOW.to_owned());
    let set: Vec<Set<'_>> = COLUMNS[6..].iter().map(|c| Set::Inserted(c)).collect();
    let sql = DB::upsert(
        "batchscore_performance",
        &COLUMNS,
        &values,
        "job, shard, window_start, window_end, model, metric",
        &set,
        None,
    );
    let storing = || format!("storing job {job}'s performance");
    let mut tx = pool.begin().await.with_context(storing)?;
    for f in figures {
        let params = vec![
            job.into(),
            f.shard.into(),
            f.window.start.into(),
            f.window.end.into(),
            (&f.model).into(),
            (&f.metric).into(),
            (&f.run_id).into(),
            (&f.model_sha256).into(),
            (&f.status).into(),
            f.value.into(),
            (&f.detail).into(),
        ];
        dialect::execute(DB::on_conn(&mut tx), sql.clone(), params)
            .await
            .with_context(storing)?;
    }
    tx.commit().await.with_context(storing)?;
    Ok(())
}
