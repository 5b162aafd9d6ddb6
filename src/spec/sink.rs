//! `[sink]`: the results table, how its rows say what scored them (`lineage`), and how long they
//! are kept (`retain`).

use chrono::TimeDelta;
use serde::Deserialize;

use super::{WindowSpec, parse_duration};
use crate::ident::TableName;

/// Columns batchscore writes into a results table with full lineage (`[sink] lineage = "full"`,
/// and every table made before compact lineage) besides the key and the outputs: the run's
/// stamp, in insert order, with what each holds. Validation, the backends' DDL and their
/// writers read the two lists.
pub const FULL_LINEAGE_COLUMNS: [(&str, MetaKind); 5] = [
    ("model_version", MetaKind::Text),
    ("run_id", MetaKind::Text),
    ("window_start", MetaKind::Time),
    ("window_end", MetaKind::Time),
    ("scored_at", MetaKind::Time),
];

/// The stamp of a results table with compact lineage (the default): the ledger's number of the
/// run (`batchscore_runs.id`) and of the model (`batchscore_models.id`). The window, the
/// model's source and the time are the run's.
pub const COMPACT_LINEAGE_COLUMNS: [(&str, MetaKind); 2] = [
    ("batchscore_run", MetaKind::Integer),
    ("batchscore_model", MetaKind::Integer),
];

/// Whether `column` is one batchscore writes itself into a results table, with either lineage.
pub fn is_lineage_column(column: &str) -> bool {
    FULL_LINEAGE_COLUMNS
        .iter()
        .chain(&COMPACT_LINEAGE_COLUMNS)
        .any(|(name, _)| *name == column)
}

/// What a lineage column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Text,
    Time,
    Integer,
}

/// How a results table says what scored each row (`[sink] lineage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineageColumns {
    /// Two integers that join to the ledger and the model table.
    Compact,
    /// The model's sha256, the run's id, the window and the time, as text and times.
    Full,
}

impl LineageColumns {
    /// The columns, in insert order.
    pub fn columns(self) -> &'static [(&'static str, MetaKind)] {
        match self {
            LineageColumns::Compact => &COMPACT_LINEAGE_COLUMNS,
            LineageColumns::Full => &FULL_LINEAGE_COLUMNS,
        }
    }

    /// The column that names the run.
    pub fn run_column(self) -> &'static str {
        match self {
            LineageColumns::Compact => "batchscore_run",
            LineageColumns::Full => "run_id",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub table: TableName,
    /// `lineage`: `None` takes what an existing table has, and compact for a new one.
    pub lineage: Option<LineageColumns>,
    /// `retain`: result rows whose window ended longer ago are deleted after each window.
    pub retain: Option<TimeDelta>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SinkFile {
    table: String,
    lineage: Option<LineageColumns>,
    retain: Option<String>,
}

/// `[sink]` as written, checked against the job's `window`.
pub(super) fn check_sink(file: &SinkFile, window: &WindowSpec) -> Result<SinkSpec, String> {
    let sink = SinkSpec {
        table: TableName::parse(&file.table).map_err(|e| format!("sink.table: {e}"))?,
        lineage: file.lineage,
        retain: file
            .retain
            .as_deref()
            .map(|text| parse_duration("sink.retain", text))
            .transpose()?,
    };
    if let Some(retain) = sink.retain
        && retain <= window.size + window.lateness
    {
        return Err(format!(
            "sink.retain = {:?} is not longer than window.size + window.lateness: each window's \
             rows would be deleted as soon as they were written",
            file.retain.as_deref().unwrap_or_default()
        ));
    }
    Ok(sink)
}
