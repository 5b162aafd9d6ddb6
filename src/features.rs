//! Features: a source chunk becomes the tensors ONNX Runtime reads, one per model input, each
//! contiguous and row-major in the input's element type; the rows that cannot be scored are set
//! aside with the reason.
//!
//! A NULL, NaN, infinite, unreadable or out-of-range feature is never scored: the job's
//! `bad_rows.fill` replaces it when the job gives a value for that column, and otherwise the
//! row becomes a [`BadRow`] naming its key, the first bad column and why, with its raw values
//! for the quarantine. Strings are never copied here: a string tensor holds slices of the
//! chunk's own text, copied once (into the C strings ONNX Runtime takes) when the tensor is
//! made.

use polars::prelude::*;

use crate::bad_row::{BadRow, bad_row};
use crate::element::Element;
use crate::source::SourceChunk;
use crate::spec::Fill;

/// One model input and the feature columns (indexes into `source.features`) that feed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFeed {
    pub name: String,
    pub element: Element,
    pub columns: Vec<usize>,
    /// 1 for an input shaped `[N]` (one column), 2 for `[N, columns]`.
    pub rank: usize,
}

impl InputFeed {
    /// The input's shape for `rows` rows.
    pub fn shape(&self, rows: usize) -> Vec<usize> {
        match self.rank {
            1 => vec![rows],
            _ => vec![rows, self.columns.len()],
        }
    }
}

/// A `bad_rows.fill` value, checked against the input its column feeds when the job was
/// prepared, in that input's element type.
#[derive(Debug, Clone, PartialEq)]
pub enum FillValue {
    Float32(f32),
    Float64(f64),
    Int64(i64),
    Int32(i32),
    Bool(bool),
    Text(String),
}

impl FillValue {
    /// `fill` as a value of `element`, or why it cannot be one.
    pub fn new(fill: &Fill, element: Element) -> Result<FillValue, String> {
        let whole = |v: f64| (v.fract() == 0.0).then_some(v);
        let value = match (element, fill) {
            (Element::Float32, Fill::Number(v)) => {
                Some(FillValue::Float32(*v as f32)).filter(|_| (*v as f32).is_finite())
            }
            (Element::Float64, Fill::Number(v)) => Some(FillValue::Float64(*v)),
            (Element::Int64, Fill::Number(v)) => whole(*v)
                .filter(|v| v.abs() < 9.2e18)
                .map(|v| FillValue::Int64(v as i64)),
            (Element::Int32, Fill::Number(v)) => whole(*v)
                .and_then(|v| i32::try_from(v as i64).ok())
                .map(FillValue::Int32),
            (Element::Bool, Fill::Bool(b)) => Some(FillValue::Bool(*b)),
            (Element::Bool, Fill::Number(v)) if *v == 0.0 || *v == 1.0 => {
                Some(FillValue::Bool(*v == 1.0))
            }
            (Element::String, Fill::Text(text)) => Some(FillValue::Text(text.clone())),
            _ => None,
        };
        value.ok_or_else(|| {
            let wanted = match element {
                Element::Float32 | Element::Float64 => "a number",
                Element::Int64 | Element::Int32 => "a whole number in the input's range",
                Element::Bool => "true, false, 0 or 1",
                Element::String => "a string",
            };
            format!("{fill} cannot fill a {element} input: give {wanted}")
        })
    }
}

/// The values of one input tensor, row-major, in its element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData<'a> {
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Bool(Vec<bool>),
    /// Slices of the chunk's text: no string is copied to build a tensor.
    String(Vec<&'a str>),
}

/// One model input's tensor for a chunk's good rows.
#[derive(Debug)]
pub struct InputTensor<'a> {
    pub feed: &'a InputFeed,
    pub shape: Vec<usize>,
    pub data: TensorData<'a>,
}

/// A chunk's features: a tensor per model input holding the good rows, which chunk row each
/// tensor row is, and the bad rows.
#[derive(Debug)]
pub struct Features<'a> {
    pub inputs: Vec<InputTensor<'a>>,
    pub rows: Vec<usize>,
    pub bad: Vec<BadRow>,
}

/// Build the tensors of `chunk`, whose first column is the key and the rest the features in
/// `source.features` order, each of the [`CellType`](crate::source::CellType) its input needs. `fill` holds, per feature,
/// the value that replaces a bad one, if the job set one.
pub fn extract_features<'a>(
    chunk: &'a SourceChunk,
    feeds: &'a [InputFeed],
    fill: &'a [Option<FillValue>],
) -> Features<'a> {
    let frame = &chunk.frame;
    let rows = frame.height();
    let mut element = vec![Element::Float32; fill.len()];
    for feed in feeds {
        for &c in &feed.columns {
            element[c] = feed.element;
        }
    }
    // The first bad column of each row, with the reason.
    let mut first_bad: Vec<Option<(usize, String)>> = vec![None; rows];
    let values: Vec<Values<'a>> = frame.columns()[1..]
        .iter()
        .enumerate()
        .map(|(c, column)| {
            let mut cells = Cells {
                chunk,
                feature: c,
                first_bad: &mut first_bad,
            };
            cells.convert(column, element[c], fill[c].as_ref())
        })
        .collect();

    let mut good = Vec::with_capacity(rows);
    let mut bad = Vec::new();
    for (r, problem) in first_bad.into_iter().enumerate() {
        match problem {
            None => good.push(r),
            Some((c, reason)) => bad.push(bad_row(
                chunk,
                r,
                frame.columns()[c + 1].name().as_str(),
                reason,
            )),
        }
    }
    let inputs = feeds
        .iter()
        .map(|feed| InputTensor {
            feed,
            shape: feed.shape(good.len()),
            data: gather(feed, &values, &good),
        })
        .collect();
    Features {
        inputs,
        rows: good,
        bad,
    }
}

/// A feature column converted to its input's element type, one value per chunk row (a default
/// where the row is bad).
enum Values<'a> {
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Bool(Vec<bool>),
    String(Vec<&'a str>),
}

/// The converter of one feature column: notes each row's first bad column.
struct Cells<'c, 'a> {
    chunk: &'a SourceChunk,
    feature: usize,
    first_bad: &'c mut [Option<(usize, String)>],
}

impl<'a> Cells<'_, 'a> {
    fn convert(
        &mut self,
        column: &'a Column,
        element: Element,
        fill: Option<&'a FillValue>,
    ) -> Values<'a> {
        // The chunk's cell type follows the element (`CellType::for_element`), so each arm
        // finds the polars type it expects.
        let typed = "a feature column holds the cell type of the input it feeds";
        match (element, fill) {
            (Element::Float32, fill) => {
                let fill = match fill {
                    Some(FillValue::Float32(v)) => Some(*v),
                    _ => None,
                };
                Values::Float32(self.each(column.f64().expect(typed).iter(), fill, |v| {
                    let narrowed = v as f32;
                    finite(v)?;
                    match narrowed.is_finite() {
                        true => Ok(narrowed),
                        false => Err("does not fit the model's float32 input".to_owned()),
                    }
                }))
            }
            (Element::Float64, fill) => {
                let fill = match fill {
                    Some(FillValue::Float64(v)) => Some(*v),
                    _ => None,
                };
                Values::Float64(self.each(column.f64().expect(typed).iter(), fill, |v| {
                    finite(v).map(|()| v)
                }))
            }
            (Element::Int64, fill) => {
                let fill = match fill {
                    Some(FillValue::Int64(v)) => Some(*v),
                    _ => None,
                };
                Values::Int64(self.each(column.i64().expect(typed).iter(), fill, Ok))
            }
            (Element::Int32, fill) => {
                let fill = match fill {
                    Some(FillValue::Int32(v)) => Some(*v),
                    _ => None,
                };
                Values::Int32(self.each(column.i64().expect(typed).iter(), fill, |v| {
                    i32::try_from(v).map_err(|_| "does not fit the model's int32 input".to_owned())
                }))
            }
            (Element::Bool, fill) => {
                let fill = match fill {
                    Some(FillValue::Bool(v)) => Some(*v),
                    _ => None,
                };
                Values::Bool(self.each(column.bool().expect(typed).iter(), fill, Ok))
            }
            (Element::String, fill) => {
                let fill = match fill {
                    Some(FillValue::Text(v)) => Some(v.as_str()),
                    _ => None,
                };
                Values::String(self.each(column.str().expect(typed).iter(), fill, Ok))
            }
        }
    }

    /// Convert every value by `check`; a NULL or a refused value takes `fill`, or makes the
    /// row bad (the first bad column of a row is the one blamed).
    fn each<V, T: Copy + Default>(
        &mut self,
        values: impl Iterator<Item = Option<V>>,
        fill: Option<T>,
        check: impl Fn(V) -> Result<T, String>,
    ) -> Vec<T> {
        values
            .enumerate()
            .map(|(r, value)| {
                let converted = match value {
                    Some(v) => check(v),
                    None => Err(self
                        .chunk
                        .problem(r, self.feature)
                        .map_or_else(|| "is NULL".to_owned(), |p| p.reason.clone())),
                };
                match (converted, fill) {
                    (Ok(v), _) => v,
                    (Err(_), Some(filled)) => filled,
                    (Err(reason), None) => {
                        self.first_bad[r].get_or_insert((self.feature, reason));
                        T::default()
                    }
                }
            })
            .collect()
    }
}

fn finite(v: f64) -> Result<(), String> {
    match v {
        v if v.is_nan() => Err("is NaN".to_owned()),
        v if v.is_infinite() => Err("is infinite".to_owned()),
        _ => Ok(()),
    }
}

/// The input's tensor: for each good row, its columns' values in order.
fn gather<'a>(feed: &InputFeed, values: &[Values<'a>], good: &[usize]) -> TensorData<'a> {
    fn rows<T: Copy>(columns: &[&[T]], good: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(good.len() * columns.len());
        for &r in good {
            out.extend(columns.iter().map(|column| column[r]));
        }
        out
    }
    macro_rules! gather_as {
        ($variant:ident) => {{
            let columns: Vec<&[_]> = feed
                .columns
                .iter()
                .map(|&c| match &values[c] {
                    Values::$variant(v) => v.as_slice(),
                    _ => unreachable!("every column of an input has the input's element type"),
                })
                .collect();
            TensorData::$variant(rows(&columns, good))
        }};
    }
    match feed.element {
        Element::Float32 => gather_as!(Float32),
        Element::Float64 => gather_as!(Float64),
        Element::Int64 => gather_as!(Int64),
        Element::Int32 => gather_as!(Int32),
        Element::Bool => gather_as!(Bool),
        Element::String => gather_as!(String),
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
            problems: Default::default(),
        }
    }

    fn matrix(element: Element) -> Vec<InputFeed> {
        vec![InputFeed {
            name: "features".into(),
            element,
            columns: vec![0, 1],
            rank: 2,
        }]
    }

    fn f32_values(features: &Features) -> Vec<f32> {
        match &features.inputs[0].data {
            TensorData::Float32(values) => values.clone(),
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
        let feeds = matrix(Element::Float32);
        let features = extract_features(&c, &feeds, &[None, None]);
        assert_eq!(features.inputs[0].shape, vec![2, 2]);
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
        let feeds = matrix(Element::Float32);
        for (value, reason, raw) in cases {
            let c = chunk(
                vec![7, 8, 9],
                vec![Some(1.0), Some(2.0), Some(3.0)],
                vec![Some(4.0), value, Some(6.0)],
            );
            let features = extract_features(&c, &feeds, &[None, None]);
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
        let feeds = matrix(Element::Float64);
        assert!(extract_features(&c, &feeds, &[None, None]).bad.is_empty());
    }

    #[test]
    fn fill_replaces_bad_values_of_its_column_only() {
        let c = chunk(
            vec![1, 2],
            vec![None, Some(f64::NAN)],
            vec![Some(5.0), None],
        );
        let feeds = matrix(Element::Float32);
        let fill = [Some(FillValue::Float32(0.5)), None];
        let features = extract_features(&c, &feeds, &fill);
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
        c.problems.insert(
            (1, 0),
            CellProblem {
                reason: "holds text 'hot', not a number".into(),
                raw: "hot".into(),
            },
        );
        let feeds = matrix(Element::Float32);
        let features = extract_features(&c, &feeds, &[None, None]);
        assert_eq!(
            features.bad[0].to_string(),
            "row with key 8: column `a` holds text 'hot', not a number"
        );
        assert_eq!(features.bad[0].features, "{\"a\":\"hot\",\"b\":null}");
    }

    /// Per-column inputs of every type: each tensor holds its own columns' good rows, and a
    /// NULL text is a bad row unless filled.
    #[test]
    fn one_tensor_per_input_in_each_element_type() {
        let frame = DataFrame::new(
            3,
            vec![
                Column::new("id".into(), vec![1i64, 2, 3]),
                Column::new("region".into(), vec![Some("north"), None, Some("east")]),
                Column::new(
                    "items".into(),
                    vec![Some(3i64), Some(4), Some(5_000_000_000)],
                ),
                Column::new("active".into(), vec![Some(true), Some(false), Some(true)]),
                Column::new("amount".into(), vec![Some(1.5), Some(2.5), Some(3.5)]),
            ],
        )
        .unwrap();
        let c = SourceChunk {
            frame,
            problems: Default::default(),
        };
        let feed = |name: &str, element, columns: Vec<usize>, rank| InputFeed {
            name: name.into(),
            element,
            columns,
            rank,
        };
        let feeds = vec![
            feed("region", Element::String, vec![0], 2),
            feed("items", Element::Int64, vec![1], 2),
            feed("active", Element::Bool, vec![2], 1),
            feed("amount", Element::Float64, vec![3], 2),
        ];
        let features = extract_features(&c, &feeds, &[None, None, None, None]);
        assert_eq!(features.rows, vec![0, 2]);
        assert_eq!(
            features.bad[0].to_string(),
            "row with key 2: column `region` is NULL"
        );
        assert_eq!(
            features.bad[0].features,
            r#"{"active":false,"amount":2.5,"items":4,"region":null}"#
        );
        let data: Vec<&TensorData> = features.inputs.iter().map(|i| &i.data).collect();
        assert_eq!(data[0], &TensorData::String(vec!["north", "east"]));
        assert_eq!(data[1], &TensorData::Int64(vec![3, 5_000_000_000]));
        assert_eq!(data[2], &TensorData::Bool(vec![true, true]));
        assert_eq!(data[3], &TensorData::Float64(vec![1.5, 3.5]));
        assert_eq!(features.inputs[2].shape, vec![2]);
        assert_eq!(features.inputs[0].shape, vec![2, 1]);

        // Filled, the NULL text row is scored; an int32 input refuses 5e9.
        let feeds = vec![
            feed("region", Element::String, vec![0], 2),
            feed("items", Element::Int32, vec![1], 2),
            feed("active", Element::Bool, vec![2], 2),
            feed("amount", Element::Float32, vec![3], 2),
        ];
        let fill = [Some(FillValue::Text("unknown".into())), None, None, None];
        let features = extract_features(&c, &feeds, &fill);
        assert_eq!(features.rows, vec![0, 1]);
        assert_eq!(
            features.inputs[0].data,
            TensorData::String(vec!["north", "unknown"])
        );
        assert_eq!(
            features.bad[0].to_string(),
            "row with key 3: column `items` does not fit the model's int32 input"
        );
    }

    #[test]
    fn fill_values_must_suit_their_input() {
        let ok = [
            (Fill::Number(2.0), Element::Int32, FillValue::Int32(2)),
            (Fill::Number(1.0), Element::Bool, FillValue::Bool(true)),
            (Fill::Bool(false), Element::Bool, FillValue::Bool(false)),
            (
                Fill::Text("unknown".into()),
                Element::String,
                FillValue::Text("unknown".into()),
            ),
            (Fill::Number(0.5), Element::Float64, FillValue::Float64(0.5)),
        ];
        for (fill, element, expected) in ok {
            assert_eq!(FillValue::new(&fill, element).unwrap(), expected);
        }
        let refused = [
            (Fill::Number(2.5), Element::Int64, "give a whole number"),
            (Fill::Number(3e9), Element::Int32, "give a whole number"),
            (Fill::Number(1e300), Element::Float32, "give a number"),
            (Fill::Text("x".into()), Element::Float32, "give a number"),
            (Fill::Number(1.0), Element::String, "give a string"),
            (Fill::Number(2.0), Element::Bool, "true, false, 0 or 1"),
        ];
        for (fill, element, expected) in refused {
            let err = FillValue::new(&fill, element).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
