//! Features: a source chunk becomes the contiguous, row-major matrix ONNX Runtime reads.
//!
//! Every value is checked on the way: a NULL, NaN, infinite, non-numeric or out-of-range
//! feature is never scored. The first such cell fails the chunk with a message naming the row's
//! key and the column, so nothing computed from garbage reaches the results table.

use polars::prelude::*;

use crate::model::InputType;
use crate::source::SourceChunk;

/// Features of `rows` rows, `cols` per row, row-major, in the model's input element type.
#[derive(Debug)]
pub enum FeatureMatrix {
    F32 {
        rows: usize,
        cols: usize,
        values: Vec<f32>,
    },
    F64 {
        rows: usize,
        cols: usize,
        values: Vec<f64>,
    },
}

impl FeatureMatrix {
    pub fn rows(&self) -> usize {
        match self {
            FeatureMatrix::F32 { rows, .. } | FeatureMatrix::F64 { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            FeatureMatrix::F32 { cols, .. } | FeatureMatrix::F64 { cols, .. } => *cols,
        }
    }
}

/// A row that cannot be scored, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row with key {key}: column `{column}` {reason}")]
pub struct BadRow {
    pub key: String,
    pub column: String,
    pub reason: String,
}

/// Build the matrix for `chunk`, whose first column is the key and the rest the features in
/// model order.
pub fn feature_matrix(chunk: &SourceChunk, input: InputType) -> Result<FeatureMatrix, BadRow> {
    let frame = &chunk.frame;
    let rows = frame.height();
    let columns = &frame.columns()[1..];
    let cols = columns.len();
    match input {
        InputType::F32 => {
            let mut values = vec![0f32; rows * cols];
            fill(chunk, columns, cols, |i, v| {
                let narrowed = v as f32;
                values[i] = narrowed;
                narrowed.is_finite()
            })?;
            Ok(FeatureMatrix::F32 { rows, cols, values })
        }
        InputType::F64 => {
            let mut values = vec![0f64; rows * cols];
            fill(chunk, columns, cols, |i, v| {
                values[i] = v;
                true
            })?;
            Ok(FeatureMatrix::F64 { rows, cols, values })
        }
    }
}

/// Walk each feature column once, writing value `v` of row `r` at `r * cols + c` through `put`,
/// which says whether the value survived conversion to the model's type.
fn fill(
    chunk: &SourceChunk,
    columns: &[Column],
    cols: usize,
    mut put: impl FnMut(usize, f64) -> bool,
) -> Result<(), BadRow> {
    for (c, column) in columns.iter().enumerate() {
        let values = column.f64().expect("source chunks hold Float64 features");
        for (r, value) in values.iter().enumerate() {
            let reason = match value {
                // A null is a NULL in the database, unless the source kept a better reason.
                None => chunk
                    .problems
                    .iter()
                    .find(|p| p.row == r && p.feature == c)
                    .map_or("is NULL", |p| p.reason.as_str()),
                Some(v) if v.is_nan() => "is NaN",
                Some(v) if v.is_infinite() => "is infinite",
                Some(v) => {
                    if put(r * cols + c, v) {
                        continue;
                    }
                    "does not fit the model's float32 input"
                }
            };
            return Err(bad_row(&chunk.frame, r, c + 1, reason.to_owned()));
        }
    }
    Ok(())
}

fn bad_row(frame: &DataFrame, row: usize, column: usize, reason: String) -> BadRow {
    let key = frame.columns()[0]
        .get(row)
        .map(|v| match v {
            AnyValue::String(s) => format!("'{s}'"),
            other => other.to_string(),
        })
        .unwrap_or_else(|_| format!("#{row}"));
    BadRow {
        key,
        column: frame.columns()[column].name().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CellProblem;

    fn chunk(keys: Vec<i64>, a: Vec<Option<f64>>, b: Vec<Option<f64>>) -> SourceChunk {
        let rows = keys.len();
        SourceChunk {
            frame: DataFrame::new(
                rows,
                vec![
                    Column::new("id".into(), keys),
                    Column::new("a".into(), a),
                    Column::new("b".into(), b),
                ],
            )
            .unwrap(),
            problems: vec![],
        }
    }

    #[test]
    fn matrix_is_row_major_in_feature_order() {
        let c = chunk(
            vec![1, 2],
            vec![Some(1.0), Some(2.0)],
            vec![Some(10.0), Some(20.0)],
        );
        match feature_matrix(&c, InputType::F32).unwrap() {
            FeatureMatrix::F32 { rows, cols, values } => {
                assert_eq!((rows, cols), (2, 2));
                assert_eq!(values, vec![1.0, 10.0, 2.0, 20.0]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_key_and_column() {
        let cases = [
            (Some(f64::NAN), "is NaN"),
            (None, "is NULL"),
            (Some(f64::INFINITY), "is infinite"),
            (Some(1e300), "does not fit the model's float32 input"),
        ];
        for (value, reason) in cases {
            let c = chunk(
                vec![7, 8],
                vec![Some(1.0), Some(2.0)],
                vec![Some(3.0), value],
            );
            let err = feature_matrix(&c, InputType::F32).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("row with key 8: column `b` {reason}")
            );
        }
        // float64 models take values float32 cannot hold.
        let c = chunk(vec![7], vec![Some(1.0)], vec![Some(1e300)]);
        assert!(feature_matrix(&c, InputType::F64).is_ok());
    }

    #[test]
    fn unreadable_cells_report_their_reason() {
        let mut c = chunk(
            vec![7, 8],
            vec![Some(1.0), None],
            vec![Some(3.0), Some(4.0)],
        );
        c.problems.push(CellProblem {
            row: 1,
            feature: 0,
            reason: "holds text 'hot', not a number".into(),
        });
        let err = feature_matrix(&c, InputType::F32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row with key 8: column `a` holds text 'hot', not a number"
        );
    }
}
