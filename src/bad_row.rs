//! Bad rows: rows of a window that cannot be scored (a NULL, NaN or unreadable value, a value
//! the model's input cannot take, a NaN prediction), each with the column to blame and why.
//! Features and the model find them; the job's `[bad_rows]` policy quarantines, skips or
//! refuses them; the writer and the sink put them in the quarantine; the ledger counts them.

use polars::prelude::AnyValue;

use crate::source::SourceChunk;

/// A row that cannot be scored, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row with key {key}: column `{column}` {reason}")]
pub struct BadRow {
    pub key: String,
    pub column: String,
    pub reason: String,
    /// The row's feature values as read, as a JSON object (NaN and infinities as strings).
    pub features: String,
}

/// A [`BadRow`] for row `row` of `chunk`, blaming `column`.
pub fn bad_row(chunk: &SourceChunk, row: usize, column: &str, reason: String) -> BadRow {
    let frame = &chunk.frame;
    let key = match frame.columns()[0].get(row) {
        Ok(AnyValue::String(s)) => s.to_owned(),
        Ok(other) => other.to_string(),
        Err(_) => format!("#{row}"),
    };
    let mut raw = serde_json::Map::new();
    for (f, column) in frame.columns()[1..].iter().enumerate() {
        let value = match column.get(row) {
            Ok(AnyValue::Float64(v)) if v.is_finite() => serde_json::json!(v),
            Ok(AnyValue::Float64(v)) => serde_json::json!(v.to_string()), // NaN, inf, -inf
            Ok(AnyValue::Int64(v)) => serde_json::json!(v),
            Ok(AnyValue::Boolean(v)) => serde_json::json!(v),
            Ok(AnyValue::String(v)) => serde_json::json!(v),
            _ => match chunk.problem(row, f) {
                Some(problem) => serde_json::json!(problem.raw),
                None => serde_json::Value::Null,
            },
        };
        raw.insert(column.name().to_string(), value);
    }
    BadRow {
        key,
        column: column.to_owned(),
        reason,
        features: serde_json::Value::Object(raw).to_string(),
    }
}

/// Bad rows by reason, for the ledger and messages.
#[derive(Default)]
pub struct BadRowCounts {
    counts: std::collections::BTreeMap<String, u64>,
    pub first: Option<BadRow>,
}

impl BadRowCounts {
    pub fn add(&mut self, rows: &[BadRow]) {
        for row in rows {
            *self
                .counts
                .entry(format!("{} {}", row.column, row.reason))
                .or_default() += 1;
        }
        if self.first.is_none() {
            self.first = rows.first().cloned();
        }
    }

    /// "vibration is NULL: 3; temperature is NaN: 1", most common first.
    pub fn summary(&self) -> String {
        let mut counts: Vec<(&String, &u64)> = self.counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = counts
            .iter()
            .take(10)
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        parts.join("; ")
    }
}
