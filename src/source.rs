//! The source side of a run: what the job's rows look like, and how rows become polars chunks.
//!
//! The dialect SQL that selects a window lives with each backend in [`crate::db`]; this module
//! holds what both share: the column kinds a source may have, the check that a source fits the
//! job, and the builder that turns decoded rows into a [`SourceChunk`] of at most `chunk_rows`.

use polars::prelude::*;

use crate::ident::Ident;
use crate::spec::JobSpec;

/// What batchscore makes of a column's declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Real,
    Numeric,
    Boolean,
    Text,
    Timestamp,
    /// No declared type (SQLite expressions and untyped columns): checked value by value.
    Dynamic,
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Integer,
    Text,
}

/// The checked shape of a job's source: the key's kind and each feature's kind, in order.
#[derive(Debug, Clone)]
pub struct SourceShape {
    pub key: KeyKind,
    pub features: Vec<ColumnKind>,
}

impl SourceShape {
    /// Check the described source columns against the job. `timestamp_ok` is the backend's rule
    /// for which kinds can hold the window's timestamps.
    pub fn check(
        spec: &JobSpec,
        columns: &[(String, ColumnKind)],
        timestamp_ok: impl Fn(&ColumnKind) -> bool,
    ) -> Result<SourceShape, String> {
        let what = source_description(spec);
        let find = |role: &str, name: &Ident| -> Result<&ColumnKind, String> {
            columns
                .iter()
                .find(|(column, _)| column == name.as_str())
                .map(|(_, kind)| kind)
                .ok_or_else(|| {
                    let known: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
                    format!(
                        "{role} column `{name}` is not in {what} (it has: {})",
                        known.join(", ")
                    )
                })
        };
        let key = match find("key", &spec.source.key)? {
            ColumnKind::Integer => KeyKind::Integer,
            ColumnKind::Text => KeyKind::Text,
            other => {
                return Err(format!(
                    "key column `{}` in {what} has type {}; keys must be integer or text",
                    spec.source.key,
                    kind_name(other)
                ));
            }
        };
        let timestamp = find("timestamp", &spec.source.timestamp)?;
        if !timestamp_ok(timestamp) {
            return Err(format!(
                "timestamp column `{}` in {what} has type {}, which cannot hold the times a window slices on",
                spec.source.timestamp,
                kind_name(timestamp)
            ));
        }
        let mut features = Vec::with_capacity(spec.source.features.len());
        for name in &spec.source.features {
            let kind = find("feature", name)?;
            match kind {
                ColumnKind::Integer
                | ColumnKind::Real
                | ColumnKind::Numeric
                | ColumnKind::Boolean
                | ColumnKind::Dynamic => features.push(kind.clone()),
                other => {
                    return Err(format!(
                        "feature column `{name}` in {what} has unsupported type {}; features must be integer, real, numeric or boolean",
                        kind_name(other)
                    ));
                }
            }
        }
        Ok(SourceShape { key, features })
    }
}

/// "table sensor_readings" or "source.query", for messages.
pub fn source_description(spec: &JobSpec) -> String {
    match &spec.source.from {
        crate::spec::SourceFrom::Table(table) => format!("table {table}"),
        crate::spec::SourceFrom::Query(_) => "the result of source.query".to_owned(),
    }
}

fn kind_name(kind: &ColumnKind) -> String {
    match kind {
        ColumnKind::Integer => "integer".into(),
        ColumnKind::Real => "real".into(),
        ColumnKind::Numeric => "numeric".into(),
        ColumnKind::Boolean => "boolean".into(),
        ColumnKind::Text => "text".into(),
        ColumnKind::Timestamp => "timestamp".into(),
        ColumnKind::Dynamic => "(none declared)".into(),
        ColumnKind::Other(name) => name.to_lowercase(),
    }
}

/// A value of a feature cell that could not be read as a number, kept to explain the row.
#[derive(Debug, Clone, PartialEq)]
pub struct CellProblem {
    pub row: usize,
    pub feature: usize,
    pub reason: String,
    /// The value as the database held it, for the quarantine.
    pub raw: String,
}

/// Up to `chunk_rows` source rows: the key column, then one Float64 column per feature (null
/// where the database held NULL or a value that is not a number).
#[derive(Debug)]
pub struct SourceChunk {
    pub frame: DataFrame,
    pub problems: Vec<CellProblem>,
}

enum KeyBuilder {
    Integer(PrimitiveChunkedBuilder<Int64Type>),
    Text(StringChunkedBuilder),
}

/// Collects decoded rows column by column, straight into polars builders.
pub struct ChunkBuilder {
    key_name: PlSmallStr,
    keys: KeyBuilder,
    features: Vec<PrimitiveChunkedBuilder<Float64Type>>,
    feature_names: Vec<PlSmallStr>,
    problems: Vec<CellProblem>,
    rows: usize,
    capacity: usize,
}

impl ChunkBuilder {
    pub fn new(spec: &JobSpec, shape: &SourceShape) -> Self {
        let capacity = spec.source.chunk_rows;
        let key_name = PlSmallStr::from(spec.source.key.as_str());
        let feature_names: Vec<PlSmallStr> = spec
            .source
            .features
            .iter()
            .map(|f| PlSmallStr::from(f.as_str()))
            .collect();
        ChunkBuilder {
            keys: Self::key_builder(shape.key, &key_name, capacity),
            features: Self::feature_builders(&feature_names, capacity),
            key_name,
            feature_names,
            problems: Vec::new(),
            rows: 0,
            capacity,
        }
    }

    fn key_builder(kind: KeyKind, name: &PlSmallStr, capacity: usize) -> KeyBuilder {
        match kind {
            KeyKind::Integer => {
                KeyBuilder::Integer(PrimitiveChunkedBuilder::new(name.clone(), capacity))
            }
            KeyKind::Text => KeyBuilder::Text(StringChunkedBuilder::new(name.clone(), capacity)),
        }
    }

    fn feature_builders(
        names: &[PlSmallStr],
        capacity: usize,
    ) -> Vec<PrimitiveChunkedBuilder<Float64Type>> {
        names
            .iter()
            .map(|name| PrimitiveChunkedBuilder::new(name.clone(), capacity))
            .collect()
    }

    pub fn push_int_key(&mut self, key: i64) {
        match &mut self.keys {
            KeyBuilder::Integer(b) => b.append_value(key),
            KeyBuilder::Text(b) => b.append_value(key.to_string()),
        }
    }

    pub fn push_text_key(&mut self, key: &str) {
        match &mut self.keys {
            KeyBuilder::Text(b) => b.append_value(key),
            // The backend decodes integer keys as integers; reaching here is a bug, not bad data.
            KeyBuilder::Integer(_) => unreachable!("text key pushed into an integer key column"),
        }
    }

    pub fn push_feature(&mut self, feature: usize, value: Option<f64>) {
        self.features[feature].append_option(value);
    }

    /// A cell that holds something other than a number: stored as null, with the reason kept.
    pub fn push_unreadable(&mut self, feature: usize, reason: String, raw: String) {
        self.features[feature].append_null();
        self.problems.push(CellProblem {
            row: self.rows,
            feature,
            reason,
            raw,
        });
    }

    /// Call once per row after its key and every feature were pushed.
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    pub fn is_full(&self) -> bool {
        self.rows >= self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Hand out the rows collected so far and start a fresh chunk.
    pub fn take(&mut self) -> SourceChunk {
        let kind = match self.keys {
            KeyBuilder::Integer(_) => KeyKind::Integer,
            KeyBuilder::Text(_) => KeyKind::Text,
        };
        let keys = std::mem::replace(
            &mut self.keys,
            Self::key_builder(kind, &self.key_name, self.capacity),
        );
        let features = std::mem::replace(
            &mut self.features,
            Self::feature_builders(&self.feature_names, self.capacity),
        );
        let mut columns = Vec::with_capacity(features.len() + 1);
        columns.push(match keys {
            KeyBuilder::Integer(b) => b.finish().into_column(),
            KeyBuilder::Text(b) => b.finish().into_column(),
        });
        columns.extend(features.into_iter().map(|b| b.finish().into_column()));
        let rows = std::mem::take(&mut self.rows);
        SourceChunk {
            frame: DataFrame::new(rows, columns).expect("builders hold one value per row"),
            problems: std::mem::take(&mut self.problems),
        }
    }
}

/// Replace `:window_start` and `:window_end` in a job's query with the dialect's placeholders.
pub fn bind_placeholders(query: &str, start: &str, end: &str) -> String {
    query
        .replace(":window_start", start)
        .replace(":window_end", end)
}
