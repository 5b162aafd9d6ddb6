//! `[labels]` against the database, before any row is read: the labels' table or query and its
//! columns, the label's type against the task, the key's against the job's, and the positive
//! class among the labels (what `jobs validate` and `evaluate` run first).

use crate::db::Backend;
use crate::db::performance as store;
use crate::error::ConfigError;
use crate::job::PreparedJob;
use crate::sink::ResultType;
use crate::source::{ColumnKind, KeyKind};
use crate::spec::labels::{LabelsSpec, Task};
use crate::spec::{JobSpec, SourceFrom};

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
            score, positive, ..
        } => {
            if result_type(score) != ResultType::Float {
                return Err(problem(format!(
                    "labels.score: result column {score} holds {} values; it must hold the positive class's probability or score (a float)",
                    result_type(score).name()
                )));
            }
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
pub(super) async fn describe_labels<B: Backend>(
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
