//! The sink: the results table applications read, created if missing and written by upsert.
//!
//! The dialect SQL (DDL, the bulk upsert) lives with each backend in [`crate::db`]; this module
//! says what the table must hold.

use chrono::{DateTime, Utc};
use polars::prelude::{
    AnyValue, BooleanChunked, Column, DataFrame, DataType, Float64Chunked, Int64Chunked,
    NewChunkedArray, StringChunked,
};

use crate::bad_row::{BadRow, bad_row};
use crate::element::Element;
use crate::ident::{Ident, TableName};
use crate::plan::Window;
use crate::source::{KeyKind, SourceChunk};
use crate::spec::{JobSpec, LineageColumns, MetaKind};

/// The stored type of a result column, from the ONNX output's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultType {
    Float,
    Integer,
    Text,
    Boolean,
}

impl ResultType {
    /// How `jobs validate` names it.
    pub fn name(self) -> &'static str {
        match self {
            ResultType::Float => "float",
            ResultType::Integer => "integer",
            ResultType::Text => "text",
            ResultType::Boolean => "boolean",
        }
    }

    /// The stored type of a tensor output's values (a ZipMap's probabilities are `Float`).
    pub fn for_element(element: Element) -> ResultType {
        match element {
            Element::Float32 | Element::Float64 => ResultType::Float,
            Element::Int64 | Element::Int32 => ResultType::Integer,
            Element::String => ResultType::Text,
            Element::Bool => ResultType::Boolean,
        }
    }
}

/// What the results table of a job holds: the key, one column per output, and the lineage
/// columns.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    pub table: TableName,
    pub key: Ident,
    pub key_kind: KeyKind,
    pub outputs: Vec<(Ident, ResultType)>,
    /// Which lineage columns the table has: as `[sink] lineage` asks, or else as an existing
    /// table has them (see [`ResultsTable::described_as`]), compact for a new one.
    pub lineage: LineageColumns,
    /// `[sink] lineage`, if the job file says.
    asked: Option<LineageColumns>,
    /// `[sink] retain`: the table batchscore creates gets an index on its run column, so
    /// deleting a window's rows finds them without reading the table.
    pub retained: bool,
    /// The table's columns and their declared types as the database described them when the job
    /// was prepared; `None` when the table did not exist (batchscore creates it).
    pub existing: Option<Vec<(String, String)>>,
}

impl ResultsTable {
    /// The results table of `spec`, with `outputs` (result column, stored type) in order.
    pub fn new(spec: &JobSpec, key_kind: KeyKind, outputs: Vec<(Ident, ResultType)>) -> Self {
        ResultsTable {
            table: spec.sink.table.clone(),
            key: spec.source.key.clone(),
            key_kind,
            outputs,
            lineage: spec.sink.lineage.unwrap_or(LineageColumns::Compact),
            asked: spec.sink.lineage,
            retained: spec.sink.retain.is_some(),
            existing: None,
        }
    }

    /// The column that says which run's window a row is of, which retention deletes by.
    pub fn expiry_column(&self) -> &'static str {
        match self.lineage {
            LineageColumns::Compact => "batchscore_run",
            LineageColumns::Full => "window_end",
        }
    }

    /// The same columns in another table (a challenger's), not yet described.
    pub fn elsewhere(&self, table: TableName) -> ResultsTable {
        ResultsTable {
            table,
            lineage: self.asked.unwrap_or(LineageColumns::Compact),
            existing: None,
            ..self.clone()
        }
    }

    /// This table as the database described it (`described`: its columns and declared types).
    /// Unless the job file says which lineage it wants, a table that has the full lineage
    /// columns and not the compact ones keeps being filled as it is: no application reading
    /// `model_version` or `run_id` from it breaks when batchscore is upgraded.
    pub fn described_as(&self, described: Vec<(String, String)>) -> ResultsTable {
        let has = |columns: &[(&str, MetaKind)]| {
            columns
                .iter()
                .all(|(name, _)| described.iter().any(|(column, _)| column == name))
        };
        let lineage = self.asked.unwrap_or(
            if has(LineageColumns::Full.columns()) && !has(LineageColumns::Compact.columns()) {
                LineageColumns::Full
            } else {
                LineageColumns::Compact
            },
        );
        ResultsTable {
            lineage,
            existing: Some(described),
            ..self.clone()
        }
    }

    /// Every column batchscore writes, in insert order.
    pub fn column_names(&self) -> Vec<&str> {
        std::iter::once(self.key.as_str())
            .chain(self.outputs.iter().map(|(c, _)| c.as_str()))
            .chain(self.lineage.columns().iter().map(|(name, _)| *name))
            .collect()
    }

    /// [`ResultsTable::column_names`], each double-quoted for SQL (they are checked identifiers).
    pub fn quoted_column_names(&self) -> Vec<String> {
        self.column_names()
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect()
    }

    /// Every column batchscore writes, with what it writes into it.
    pub fn written_columns(&self) -> Vec<(&str, Written)> {
        let key = match self.key_kind {
            KeyKind::Integer => Written::Integer,
            KeyKind::Text => Written::Text,
        };
        std::iter::once((self.key.as_str(), key))
            .chain(
                self.outputs
                    .iter()
                    .map(|(c, ty)| (c.as_str(), Written::of(*ty))),
            )
            .chain(self.lineage.columns().iter().map(|(name, kind)| {
                let written = match kind {
                    MetaKind::Text => Written::Text,
                    MetaKind::Time => Written::Time,
                    MetaKind::Integer => Written::Integer,
                };
                (*name, written)
            }))
            .collect()
    }

    /// An existing results table (as [`ResultsTable::described_as`] found it; a table not yet
    /// described passes) must have every column batchscore writes, each of a type that can hold
    /// what goes into it (as the database's `holds` judges its declared type names):
    /// a column dropped, or retyped to a date, say, is refused rather than written through a
    /// conversion that fails halfway or, worse, stores garbage.
    pub fn check_columns(&self, holds: fn(&str, Written) -> bool) -> Result<(), String> {
        let Some(described) = &self.existing else {
            return Ok(());
        };
        let missing: Vec<&str> = self
            .column_names()
            .into_iter()
            .filter(|name| !described.iter().any(|(e, _)| e == name))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "results table {} exists but lacks column(s) {}: add them, or drop the table and let batchscore create it{}",
                self.table,
                missing.join(", "),
                match self.asked {
                    None =>
                        ", or set [sink] lineage = \"full\" for a table with model_version, run_id, window_start, window_end and scored_at",
                    Some(_) => "",
                }
            ));
        }
        for (column, written) in self.written_columns() {
            let declared = described
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, ty)| ty.as_str())
                .unwrap_or_default();
            if !holds(declared, written) {
                return Err(format!(
                    "results table {}: column {column} is of type {declared}, which cannot hold {}: change its type, or drop the table and let batchscore create it",
                    self.table,
                    written.described()
                ));
            }
        }
        Ok(())
    }
}

/// What batchscore writes into a results column, for judging whether its declared type can
/// hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Integer,
    Float,
    Boolean,
    Text,
    Time,
}

impl Written {
    fn of(result: ResultType) -> Written {
        match result {
            ResultType::Float => Written::Float,
            ResultType::Integer => Written::Integer,
            ResultType::Text => Written::Text,
            ResultType::Boolean => Written::Boolean,
        }
    }

    fn described(self) -> &'static str {
        match self {
            Written::Integer => "integers",
            Written::Float => "floating-point numbers",
            Written::Boolean => "booleans",
            Written::Text => "text",
            Written::Time => "times",
        }
    }
}

/// What every result row of one run carries besides its predictions.
#[derive(Debug, Clone)]
pub struct RunStamp {
    pub run_id: String,
    /// The run's number in the ledger (`batchscore_runs.id`).
    pub run: i64,
    pub window: Window,
    pub model_version: String,
    /// The model's number (`batchscore_models.id`).
    pub model: i64,
    /// The challenger's model's number, when the job has a challenger that scores.
    pub challenger_model: Option<i64>,
    pub scored_at: DateTime<Utc>,
}

impl RunStamp {
    /// The stamp's values, in the order of `lineage`'s columns.
    pub fn values(&self, lineage: LineageColumns) -> Vec<StampValue<'_>> {
        match lineage {
            LineageColumns::Compact => {
                vec![
                    StampValue::Integer(self.run),
                    StampValue::Integer(self.model),
                ]
            }
            LineageColumns::Full => vec![
                StampValue::Text(&self.model_version),
                StampValue::Text(&self.run_id),
                StampValue::Time(self.window.start),
                StampValue::Time(self.window.end),
                StampValue::Time(self.scored_at),
            ],
        }
    }
}

/// One value of a [`RunStamp`].
#[derive(Debug, Clone, Copy)]
pub enum StampValue<'a> {
    Text(&'a str),
    Time(DateTime<Utc>),
    Integer(i64),
}

/// A scored chunk: the key column, then one column per output in [`ResultsTable::outputs`] order.
#[derive(Debug)]
pub struct ScoredChunk {
    pub frame: DataFrame,
}

impl ScoredChunk {
    /// Put the keys of the scored rows (`rows`, indexes into `chunk`) beside their predictions.
    /// A NaN or infinite prediction makes its row bad instead: a score the application would
    /// read as truth must be a real number. `None` when no row is left.
    pub fn new(
        chunk: &SourceChunk,
        rows: &[usize],
        outputs: Vec<Column>,
    ) -> (Option<ScoredChunk>, Vec<BadRow>) {
        let mut keep = vec![true; rows.len()];
        let mut bad = Vec::new();
        for output in &outputs {
            let Ok(values) = output.f64() else { continue };
            for (i, value) in values.iter().enumerate() {
                if keep[i] && value.is_some_and(|v| !v.is_finite()) {
                    keep[i] = false;
                    let reason = "is a NaN or infinite prediction of the model".to_owned();
                    bad.push(bad_row(chunk, rows[i], output.name().as_str(), reason));
                }
            }
        }
        let mut selected = vec![false; chunk.frame.height()];
        for (i, row) in rows.iter().enumerate() {
            selected[*row] = keep[i];
        }
        let key = chunk.frame.columns()[0]
            .filter(&BooleanChunked::from_slice("keep".into(), &selected))
            .expect("the mask has one entry per row");
        let mut columns = Vec::with_capacity(outputs.len() + 1);
        columns.push(key);
        let keep = BooleanChunked::from_slice("keep".into(), &keep);
        for output in outputs {
            columns.push(
                output
                    .filter(&keep)
                    .expect("the mask has one entry per scored row"),
            );
        }
        let height = columns[0].len();
        let scored = (height > 0).then(|| ScoredChunk {
            frame: DataFrame::new(height, columns).expect("the model returns one value per row"),
        });
        (scored, bad)
    }

    /// The keys, as text (how the quarantine stores them).
    pub fn keys_as_text(&self) -> Vec<String> {
        let key = &self.frame.columns()[0];
        (0..key.len())
            .map(|i| match key.get(i) {
                Ok(AnyValue::String(s)) => s.to_owned(),
                Ok(other) => other.to_string(),
                Err(_) => String::new(),
            })
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.frame.height()
    }

    /// The chunks' rows, in order, as one chunk; `None` for no chunks.
    pub fn concat(chunks: Vec<ScoredChunk>) -> Option<ScoredChunk> {
        let mut chunks = chunks.into_iter();
        let mut frame = chunks.next()?.frame;
        for chunk in chunks {
            frame
                .vstack_mut_owned(chunk.frame)
                .expect("scored chunks of one job have the same columns");
        }
        // One contiguous buffer per column, for writers that index row by row.
        frame.rechunk_mut();
        Some(ScoredChunk { frame })
    }

    /// The columns, key first, each typed once so writers need not match types per value.
    pub fn typed_columns(&self) -> anyhow::Result<Vec<ResultColumn<'_>>> {
        self.frame.columns().iter().map(ResultColumn::of).collect()
    }
}

/// A column of a [`ScoredChunk`] by its type.
pub enum ResultColumn<'a> {
    Float(&'a Float64Chunked),
    Integer(&'a Int64Chunked),
    Boolean(&'a BooleanChunked),
    Text(&'a StringChunked),
}

impl<'a> ResultColumn<'a> {
    fn of(column: &'a Column) -> anyhow::Result<Self> {
        Ok(match column.dtype() {
            DataType::Float64 => ResultColumn::Float(column.f64()?),
            DataType::Int64 => ResultColumn::Integer(column.i64()?),
            DataType::Boolean => ResultColumn::Boolean(column.bool()?),
            DataType::String => ResultColumn::Text(column.str()?),
            other => anyhow::bail!(
                "result column `{}` has unexpected type {other}",
                column.name()
            ),
        })
    }
}
