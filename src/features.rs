//! Features: a source chunk becomes the contiguous, row-major matrix ONNX Runtime reads, and
//! the rows that cannot be scored are set aside with the reason.
//!
//! A NULL, NaN, infinite, non-numeric or out-of-range feature is never scored: the job's
//! `bad_rows.fill` replaces it when the job gives a value for that column, and otherwise the
//! row becomes a [`BadRow`] naming its key, the first bad column and why, with its raw values
//! for the quarantine.

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
    /// The row's feature values as read, as a JSON object (NaN and infinities as strings).
    pub features: String,
}

/// A chunk's features: the matrix of its good rows, which chunk row each matrix row is, and the
/// bad rows.
#[derive(Debug)]
pub struct Features {
    pub matrix: FeatureMatrix,
    pub rows: Vec<usize>,
    pub bad: Vec<BadRow>,
}

/// Build the features of `chunk`, whose first column is the key and the rest the features in
/// model order. `fill` holds, per feature, the value that replaces a bad one, if the job set one.
pub fn extract_features(chunk: &SourceChunk, input: InputType, fill: &[Option<f64>]) -> Features {
    match input {
        InputType::F32 => {
            let (values, rows, bad) = fill_matrix(chunk, fill, |v| {
                let narrowed = v as f32;
                narrowed.is_finite().then_some(narrowed)
            });
            Features {
                matrix: FeatureMatrix::F32 {
                    rows: rows.len(),
                    cols: fill.len(),
                    values,
                },
                rows,
                bad,
            }
        }
        InputType::F64 => {
            let (values, rows, bad) = fill_matrix(chunk, fill, Some);
            Features {
                matrix: FeatureMatrix::F64 {
                    rows: rows.len(),
                    cols: fill.len(),
                    values,
                },
                rows,
                bad,
            }
        }
    }
}

/// Walk each feature column once, writing row `r`'s value of column `c` at `r * cols + c`
/// (converted by `convert`, which refuses values the model's type cannot hold), then drop the
/// bad rows' slots so the matrix holds the good rows only, in order.
fn fill_matrix<T: Copy + Default>(
    chunk: &SourceChunk,
    fill: &[Option<f64>],
    convert: impl Fn(f64) -> Option<T>,
) -> (Vec<T>, Vec<usize>, Vec<BadRow>) {
    let frame = &chunk.frame;
    let rows = frame.height();
    let cols = fill.len();
    let mut values = vec![T::default(); rows * cols];
    // The first bad column of each row, with the reason.
    let mut first_bad: Vec<Option<(usize, String)>> = vec![None; rows];
    for (c, column) in frame.columns()[1..].iter().enumerate() {
        let column = column.f64().expect("source chunks hold Float64 features");
        for (r, value) in column.iter().enumerate() {
            let converted = match value {
                None => Err(chunk
                    .problems
                    .iter()
                    .find(|p| p.row == r && p.feature == c)
                    .map_or_else(|| "is NULL".to_owned(), |p| p.reason.clone())),
                Some(v) if v.is_nan() => Err("is NaN".to_owned()),
                Some(v) if v.is_infinite() => Err("is infinite".to_owned()),
                Some(v) => {
                    convert(v).ok_or_else(|| "does not fit the model's float32 input".to_owned())
                }
            };
            values[r * cols + c] = match converted {
                Ok(v) => v,
                Err(reason) => match fill[c].and_then(&convert) {
                    Some(filled) => filled,
                    None => {
                        first_bad[r].get_or_insert((c, reason));
                        T::default()
                    }
                },
            };
        }
    }
    let mut good = Vec::with_capacity(rows);
    let mut bad = Vec::new();
    for (r, problem) in first_bad.into_iter().enumerate() {
        match problem {
            None => {
                if good.len() != r {
                    values.copy_within(r * cols..(r + 1) * cols, good.len() * cols);
                }
                good.push(r);
            }
            Some((c, reason)) => bad.push(bad_row(
                chunk,
                r,
                frame.columns()[c + 1].name().as_str(),
                reason,
            )),
        }
    }
    values.truncate(good.len() * cols);
    (values, good, bad)
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
        let value = match column.f64().ok().and_then(|c| c.get(row)) {
            Some(v) if v.is_finite() => serde_json::json!(v),
            Some(v) => serde_json::json!(v.to_string()), // NaN, inf, -inf
            None => match chunk
                .problems
                .iter()
                .find(|p| p.row == row && p.feature == f)
            {
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

    fn f32_values(features: &Features) -> Vec<f32> {
        match &features.matrix {
            FeatureMatrix::F32 { values, .. } => values.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn matrix_is_row_major_in_feature_order() {
        let c = chunk(
            vec![1, 2],
            vec![Some(1.0), Some(2.0)],
            vec![Some(10.0), Some(20.0)],
        );
        let features = extract_features(&c, InputType::F32, &[None, None]);
        assert_eq!((features.matrix.rows(), features.matrix.cols()), (2, 2));
        assert_eq!(f32_values(&features), vec![1.0, 10.0, 2.0, 20.0]);
        assert!(features.bad.is_empty());
    }

    #[test]
    fn bad_rows_are_set_aside_naming_key_and_column() {
        let cases = [
            (Some(f64::NAN), "is NaN", "\"NaN\""),
            (None, "is NULL", "null"),
            (Some(f64::INFINITY), "is infinite", "\"inf\""),
            (
                Some(1e300),
                "does not fit the model's float32 input",
                "1e+300",
            ),
        ];
        for (value, reason, raw) in cases {
            let c = chunk(
                vec![7, 8, 9],
                vec![Some(1.0), Some(2.0), Some(3.0)],
                vec![Some(4.0), value, Some(6.0)],
            );
            let features = extract_features(&c, InputType::F32, &[None, None]);
            assert_eq!(features.rows, vec![0, 2]);
            assert_eq!(
                f32_values(&features),
                vec![1.0, 4.0, 3.0, 6.0],
                "good rows only, in order"
            );
            let [bad] = features.bad.as_slice() else {
                panic!("one bad row")
            };
            assert_eq!(
                bad.to_string(),
                format!("row with key 8: column `b` {reason}")
            );
            assert_eq!(bad.features, format!("{{\"a\":2.0,\"b\":{raw}}}"));
        }
        // float64 models take values float32 cannot hold.
        let c = chunk(vec![7], vec![Some(1.0)], vec![Some(1e300)]);
        assert!(
            extract_features(&c, InputType::F64, &[None, None])
                .bad
                .is_empty()
        );
    }

    #[test]
    fn fill_replaces_bad_values_of_its_column_only() {
        let c = chunk(
            vec![1, 2],
            vec![None, Some(f64::NAN)],
            vec![Some(5.0), None],
        );
        let features = extract_features(&c, InputType::F32, &[Some(0.5), None]);
        assert_eq!(features.rows, vec![0]);
        assert_eq!(f32_values(&features), vec![0.5, 5.0]);
        assert_eq!(
            features.bad[0].to_string(),
            "row with key 2: column `b` is NULL"
        );
    }

    #[test]
    fn the_first_bad_column_is_blamed_and_unreadable_cells_keep_their_text() {
        let mut c = chunk(vec![7, 8], vec![Some(1.0), None], vec![Some(3.0), None]);
        c.problems.push(CellProblem {
            row: 1,
            feature: 0,
            reason: "holds text 'hot', not a number".into(),
            raw: "hot".into(),
        });
        let features = extract_features(&c, InputType::F32, &[None, None]);
        assert_eq!(
            features.bad[0].to_string(),
            "row with key 8: column `a` holds text 'hot', not a number"
        );
        assert_eq!(features.bad[0].features, "{\"a\":\"hot\",\"b\":null}");
    }
}
