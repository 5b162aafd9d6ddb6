//! Scoring a chunk with ONNX Runtime: the chunk's input tensors in, one polars column per bound
//! output out (a tensor's column, or one class's probabilities out of a ZipMap).

use ort::session::SessionInputValue;
use ort::value::{DynMapValueType, Tensor, TensorRef};
use polars::prelude::*;

use super::Model;
use super::binding::{BoundOutput, ClassLabel, OutputRead};
use crate::element::Element;
use crate::features::{InputTensor, TensorData};

impl Model {
    /// Score one chunk's input tensors (`rows` rows); returns one polars column per bound
    /// output, in order.
    pub fn score(
        &self,
        inputs: &[InputTensor<'_>],
        rows: usize,
        outputs: &[BoundOutput],
    ) -> anyhow::Result<Vec<Column>> {
        use anyhow::Context;
        let values = inputs
            .iter()
            .map(|input| Ok((input.feed.name.as_str(), input_value(input)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut state = self.lock()?;
        let session = self.session(&mut state)?;
        let results = session.run(values).with_context(|| {
            format!(
                "ONNX Runtime failed to score {rows} rows with {}",
                self.origin
            )
        })?;
        outputs
            .iter()
            .map(|bound| {
                let value = &results[bound.spec.output.as_str()];
                extract_column(value, bound, rows)
                    .with_context(|| format!("reading output `{}`", bound.spec.reference()))
            })
            .collect()
    }
}

/// An input tensor as ONNX Runtime takes it: numbers by reference to our buffer; strings
/// copied once by ort, into the NUL-terminated strings ONNX Runtime's string tensor is filled
/// from.
fn input_value<'a>(input: &'a InputTensor<'_>) -> anyhow::Result<SessionInputValue<'a>> {
    let shape = input.shape.clone();
    Ok(match &input.data {
        TensorData::Float32(v) => TensorRef::from_array_view((shape, v.as_slice()))?
            .into_dyn()
            .into(),
        TensorData::Float64(v) => TensorRef::from_array_view((shape, v.as_slice()))?
            .into_dyn()
            .into(),
        TensorData::Int64(v) => TensorRef::from_array_view((shape, v.as_slice()))?
            .into_dyn()
            .into(),
        TensorData::Int32(v) => TensorRef::from_array_view((shape, v.as_slice()))?
            .into_dyn()
            .into(),
        TensorData::Bool(v) => TensorRef::from_array_view((shape, v.as_slice()))?
            .into_dyn()
            .into(),
        TensorData::String(v) => {
            // ort bounds string elements by `'static` (its array types are generic), so the
            // strings are owned here; it copies each into ONNX Runtime's tensor anyway.
            let texts: Vec<String> = v.iter().map(|text| (*text).to_owned()).collect();
            Tensor::from_string_array((shape, texts.as_slice()))?
                .into_dyn()
                .into()
        }
    })
}

/// The bound output's values for `rows` rows: column `column` of a tensor, or one class of a
/// ZipMap.
fn extract_column(
    value: &ort::value::DynValue,
    bound: &BoundOutput,
    rows: usize,
) -> anyhow::Result<Column> {
    let name = PlSmallStr::from(bound.spec.column.as_str());
    let (element, column) = match &bound.read {
        OutputRead::Tensor { element, column } => (*element, *column),
        OutputRead::ZipMap { label } => return zipmap_column(value, label, name, rows),
    };
    let pick = |shape: &[i64]| -> anyhow::Result<usize> {
        let width = if shape.len() == 2 {
            shape[1] as usize
        } else {
            1
        };
        anyhow::ensure!(
            shape.first().copied() == Some(rows as i64) && column < width,
            "shape {shape:?} does not hold column {column} for {rows} rows"
        );
        Ok(width)
    };
    macro_rules! numeric {
        ($t:ty, $cast:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>()?;
            let width = pick(shape)?;
            let values: Vec<$cast> = (0..rows)
                .map(|r| data[r * width + column] as $cast)
                .collect();
            Column::new(name, values)
        }};
    }
    Ok(match element {
        Element::Float32 => numeric!(f32, f64),
        Element::Float64 => numeric!(f64, f64),
        Element::Int64 => numeric!(i64, i64),
        Element::Int32 => numeric!(i32, i64),
        Element::Bool => {
            let (shape, data) = value.try_extract_tensor::<bool>()?;
            let width = pick(shape)?;
            let values: Vec<bool> = (0..rows).map(|r| data[r * width + column]).collect();
            Column::new(name, values)
        }
        Element::String => {
            let (shape, data) = value.try_extract_strings()?;
            let width = pick(shape)?;
            let values: Vec<&str> = (0..rows)
                .map(|r| data[r * width + column].as_str())
                .collect();
            Column::new(name, values)
        }
    })
}

/// Class `label`'s probability from each row's map of a ZipMap output.
fn zipmap_column(
    value: &ort::value::DynValue,
    label: &ClassLabel,
    name: PlSmallStr,
    rows: usize,
) -> anyhow::Result<Column> {
    let maps = value.try_extract_sequence::<DynMapValueType>()?;
    anyhow::ensure!(
        maps.len() == rows,
        "the ZipMap holds {} maps for {rows} rows",
        maps.len()
    );
    let missing = || anyhow::anyhow!("the ZipMap has no class {label:?}");
    let values = maps
        .iter()
        .map(|map| match label {
            ClassLabel::Integer(l) => map
                .try_extract_key_values::<i64, f32>()?
                .into_iter()
                .find(|(k, _)| k == l)
                .map(|(_, p)| f64::from(p))
                .ok_or_else(missing),
            ClassLabel::Text(l) => map
                .try_extract_key_values::<String, f32>()?
                .into_iter()
                .find(|(k, _)| k == l)
                .map(|(_, p)| f64::from(p))
                .ok_or_else(missing),
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(Column::new(name, values))
}
