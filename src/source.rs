//! The source side of a run: what the job's rows look like, and how rows become polars chunks.
//!
//! The dialect SQL that selects a window lives with each backend in [`crate::db`]; this module
//! holds what both share: the column kinds a source may have, the check that a source fits the
//! job, and the builder that turns decoded rows into a [`SourceChunk`] of at most `chunk_rows`.

use std::collections::HashMap;

use polars::prelude::*;

use crate::element::Element;
use crate::ident::Ident;
use crate::spec::JobSpec;

/// The longest text value a string feature may hold, in bytes. Categorical features are short;
/// a longer value is far more likely a mistake (a document in the wrong column) than a
/// category, and every string is copied into ONNX Runtime, so it is a bad row, not a crash.
pub const MAX_TEXT_BYTES: usize = 65_536;

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

/// A source's columns as the database describes them: each name with its kind, in order.
pub type SourceColumns = Vec<(String, ColumnKind)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Integer,
    Text,
}

/// How a chunk holds a feature's values: the type nearest the model input the feature feeds.
/// Values are converted to it as they are read (see [`ChunkBuilder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellType {
    /// Float64, for float32 and float64 inputs.
    Float,
    /// Int64, for int64 and int32 inputs: exact, where a double would round past 2^53.
    Integer,
    /// Boolean, for bool inputs.
    Boolean,
    /// Text, for string inputs.
    Text,
}

impl CellType {
    pub fn for_element(element: Element) -> CellType {
        match element {
            Element::Float32 | Element::Float64 => CellType::Float,
            Element::Int64 | Element::Int32 => CellType::Integer,
            Element::Bool => CellType::Boolean,
            Element::String => CellType::Text,
        }
    }

    /// Whether a column of `kind` can feed a cell of this type. Per-value problems (a REAL that
    /// is not whole, an integer other than 0 or 1 for a bool) are bad rows; a column that could
    /// never fit is a configuration error.
    pub fn accepts(self, kind: &ColumnKind) -> bool {
        use ColumnKind::*;
        match self {
            CellType::Float => matches!(kind, Integer | Real | Numeric | Boolean | Dynamic),
            CellType::Integer | CellType::Boolean => matches!(kind, Integer | Boolean | Dynamic),
            CellType::Text => matches!(kind, Text | Dynamic),
        }
    }
}

/// What the model needs from one feature column: the input it feeds, and that input's type.
#[derive(Debug, Clone)]
pub struct FeatureNeed {
    pub input: String,
    pub element: Element,
}

/// The checked shape of a job's source: the key's kind and each feature's kind and cell type,
/// in `source.features` order.
#[derive(Debug, Clone)]
pub struct SourceShape {
    pub key: KeyKind,
    pub features: Vec<ColumnKind>,
    pub cells: Vec<CellType>,
}

impl SourceShape {
    /// Check the described source columns against the job and against what each feature feeds
    /// (`needs`, one per feature). `timestamp_ok` is the backend's rule for which kinds can
    /// hold the window's timestamps.
    pub fn check(
        spec: &JobSpec,
        columns: &[(String, ColumnKind)],
        timestamp_ok: impl Fn(&ColumnKind) -> bool,
        needs: &[FeatureNeed],
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
        let mut cells = Vec::with_capacity(spec.source.features.len());
        for (name, need) in spec.source.features.iter().zip(needs) {
            let kind = find("feature", name)?;
            let cell = CellType::for_element(need.element);
            if !cell.accepts(kind) {
                return Err(format!(
                    "feature column `{name}` in {what} has type {}, which cannot feed model input `{}` ({}){}",
                    kind_name(kind),
                    need.input,
                    need.element,
                    match cell {
                        CellType::Float =>
                            ": numeric inputs read integer, real, numeric or boolean columns",
                        CellType::Integer =>
                            ": integer inputs read integer or boolean columns (cast a real column in source.query)",
                        CellType::Boolean => ": bool inputs read boolean or integer (0/1) columns",
                        CellType::Text =>
                            ": string inputs read text columns (cast others in source.query)",
                    }
                ));
            }
            features.push(kind.clone());
            cells.push(cell);
        }
        Ok(SourceShape {
            key,
            features,
            cells,
        })
    }
}

/// "table sensor_readings" or "source.query", for messages.
pub fn source_description(spec: &JobSpec) -> String {
    match &spec.source.from {
        crate::spec::SourceFrom::Table(table) => format!("table {table}"),
        crate::spec::SourceFrom::Query(_) => "the result of source.query".to_owned(),
    }
}

pub fn kind_name(kind: &ColumnKind) -> String {
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

/// A feature cell that could not be read as its cell type, kept to explain the row.
#[derive(Debug, Clone, PartialEq)]
pub struct CellProblem {
    pub reason: String,
    /// The value as the database held it, for the quarantine.
    pub raw: String,
}

/// Up to `chunk_rows` source rows: the key column, then one column per feature of its
/// [`CellType`] (null where the database held NULL or a value that does not fit).
#[derive(Debug)]
pub struct SourceChunk {
    pub frame: DataFrame,
    /// The cells that are null because they did not fit, by (row, feature).
    pub problems: HashMap<(usize, usize), CellProblem>,
}

impl SourceChunk {
    /// The problem behind a null cell, if it was not simply NULL.
    pub fn problem(&self, row: usize, feature: usize) -> Option<&CellProblem> {
        self.problems.get(&(row, feature))
    }
}

enum KeyBuilder {
    Integer(PrimitiveChunkedBuilder<Int64Type>),
    Text(StringChunkedBuilder),
}

enum CellBuilder {
    Float(PrimitiveChunkedBuilder<Float64Type>),
    Integer(PrimitiveChunkedBuilder<Int64Type>),
    Boolean(BooleanChunkedBuilder),
    Text(StringChunkedBuilder),
}

impl CellBuilder {
    fn new(cell: CellType, name: PlSmallStr, capacity: usize) -> Self {
        match cell {
            CellType::Float => CellBuilder::Float(PrimitiveChunkedBuilder::new(name, capacity)),
            CellType::Integer => CellBuilder::Integer(PrimitiveChunkedBuilder::new(name, capacity)),
            CellType::Boolean => CellBuilder::Boolean(BooleanChunkedBuilder::new(name, capacity)),
            CellType::Text => CellBuilder::Text(StringChunkedBuilder::new(name, capacity)),
        }
    }

    fn push_null(&mut self) {
        match self {
            CellBuilder::Float(b) => b.append_null(),
            CellBuilder::Integer(b) => b.append_null(),
            CellBuilder::Boolean(b) => b.append_null(),
            CellBuilder::Text(b) => b.append_null(),
        }
    }

    fn finish(self) -> Column {
        match self {
            CellBuilder::Float(b) => b.finish().into_column(),
            CellBuilder::Integer(b) => b.finish().into_column(),
            CellBuilder::Boolean(b) => b.finish().into_column(),
            CellBuilder::Text(b) => b.finish().into_column(),
        }
    }
}

/// A value as the database sent it, before it is converted to its feature's [`CellType`].
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Null,
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// Text as bytes: whether it is UTF-8 is checked here, once, for both backends.
    Text(&'a [u8]),
}

/// Collects decoded rows column by column, straight into polars builders, converting each
/// value to its feature's [`CellType`] (or recording why it does not fit).
pub struct ChunkBuilder {
    key_name: PlSmallStr,
    keys: KeyBuilder,
    features: Vec<CellBuilder>,
    feature_names: Vec<PlSmallStr>,
    cells: Vec<CellType>,
    problems: HashMap<(usize, usize), CellProblem>,
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
            features: Self::feature_builders(&feature_names, &shape.cells, capacity),
            key_name,
            feature_names,
            cells: shape.cells.clone(),
            problems: HashMap::new(),
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
        cells: &[CellType],
        capacity: usize,
    ) -> Vec<CellBuilder> {
        names
            .iter()
            .zip(cells)
            .map(|(name, cell)| CellBuilder::new(*cell, name.clone(), capacity))
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

    /// Push feature `feature`'s value of the current row, converted to its cell type; a value
    /// that does not fit becomes null, with the reason kept for the row's [`BadRow`](crate::bad_row::BadRow).
    pub fn push(&mut self, feature: usize, cell: Cell<'_>) {
        let builder = &mut self.features[feature];
        let unfit = match (builder, cell) {
            (builder, Cell::Null) => {
                builder.push_null();
                return;
            }
            (CellBuilder::Float(b), Cell::Float(v)) => return b.append_value(v),
            (CellBuilder::Float(b), Cell::Integer(v)) => return b.append_value(v as f64),
            (CellBuilder::Float(b), Cell::Boolean(v)) => return b.append_value(f64::from(v)),
            (CellBuilder::Integer(b), Cell::Integer(v)) => return b.append_value(v),
            (CellBuilder::Integer(b), Cell::Boolean(v)) => return b.append_value(i64::from(v)),
            (CellBuilder::Integer(b), Cell::Float(v)) => match whole(v) {
                Some(v) => return b.append_value(v),
                None => (format!("holds {v}, not a whole number"), v.to_string()),
            },
            (CellBuilder::Boolean(b), Cell::Boolean(v)) => return b.append_value(v),
            (CellBuilder::Boolean(b), Cell::Integer(v @ (0 | 1))) => return b.append_value(v == 1),
            (CellBuilder::Boolean(_), Cell::Integer(v)) => {
                (format!("holds {v}, not 0 or 1"), v.to_string())
            }
            (CellBuilder::Boolean(b), Cell::Float(v)) if v == 0.0 || v == 1.0 => {
                return b.append_value(v == 1.0);
            }
            (CellBuilder::Boolean(_), Cell::Float(v)) => {
                (format!("holds {v}, not 0 or 1"), v.to_string())
            }
            (CellBuilder::Text(b), Cell::Text(bytes)) => match checked_text(bytes) {
                Ok(text) => return b.append_value(text),
                Err(reason) => (reason, String::from_utf8_lossy(bytes).into_owned()),
            },
            (CellBuilder::Text(_), Cell::Integer(v)) => {
                (format!("holds the number {v}, not text"), v.to_string())
            }
            (CellBuilder::Text(_), Cell::Float(v)) => {
                (format!("holds the number {v}, not text"), v.to_string())
            }
            (CellBuilder::Text(_), Cell::Boolean(v)) => {
                (format!("holds the boolean {v}, not text"), v.to_string())
            }
            (_, Cell::Text(bytes)) => {
                let text = String::from_utf8_lossy(bytes);
                let shown: String = text.chars().take(40).collect();
                let reason = format!("holds text '{shown}', not a number");
                (reason, text.into_owned())
            }
        };
        self.push_unreadable(feature, unfit.0, unfit.1);
    }

    /// A cell that holds something its cell type cannot: stored as null, with the reason kept.
    pub fn push_unreadable(&mut self, feature: usize, reason: String, raw: String) {
        self.features[feature].push_null();
        self.problems
            .insert((self.rows, feature), CellProblem { reason, raw });
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
            Self::feature_builders(&self.feature_names, &self.cells, self.capacity),
        );
        let mut columns = Vec::with_capacity(features.len() + 1);
        columns.push(match keys {
            KeyBuilder::Integer(b) => b.finish().into_column(),
            KeyBuilder::Text(b) => b.finish().into_column(),
        });
        columns.extend(features.into_iter().map(CellBuilder::finish));
        let rows = std::mem::take(&mut self.rows);
        SourceChunk {
            frame: DataFrame::new(rows, columns).expect("builders hold one value per row"),
            problems: std::mem::take(&mut self.problems),
        }
    }
}

/// `v` as an integer, if it is one.
fn whole(v: f64) -> Option<i64> {
    // 2^63 is exactly representable; every f64 below it in magnitude and whole fits an i64.
    (v.fract() == 0.0 && v.abs() < 9_223_372_036_854_775_808.0).then_some(v as i64)
}

/// Text a string input can take: UTF-8, no NUL (ONNX Runtime's strings are C strings), and at
/// most [`MAX_TEXT_BYTES`].
fn checked_text(bytes: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not valid UTF-8 text".to_owned())?;
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "is {} bytes of text, over the {MAX_TEXT_BYTES}-byte limit",
            bytes.len()
        ));
    }
    if text.contains('\0') {
        return Err("holds text with a NUL character".to_owned());
    }
    Ok(text)
}

/// Replace `:window_start` and `:window_end` in a job's query with the dialect's placeholders.
pub fn bind_placeholders(query: &str, start: &str, end: &str) -> String {
    query
        .replace(":window_start", start)
        .replace(":window_end", end)
}
