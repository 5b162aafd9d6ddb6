//! The ONNX model: loaded once per run from the bytes it hashed, checked against the job, and
//! scored in bulk by ONNX Runtime.
//!
//! A run reads the model file once: the bytes it hashes are the bytes it scores with, so
//! `model_version` on every result row names exactly the model that produced it, even if the
//! file is replaced while the run is going.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::features::FeatureMatrix;
use crate::sink::ResultType;
use crate::spec::{JobSpec, OutputSpec};

/// The element type of the model's input tensor; features are cast to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    F32,
    F64,
}

impl InputType {
    pub fn name(self) -> &'static str {
        match self {
            InputType::F32 => "float32",
            InputType::F64 => "float64",
        }
    }
}

/// One result column bound to the model output that fills it.
#[derive(Debug, Clone)]
pub struct BoundOutput {
    pub spec: OutputSpec,
    pub element: TensorElementType,
    pub result_type: ResultType,
}

pub struct Model {
    pub path: PathBuf,
    /// sha256 of the file's bytes, hex: the `model_version` written with every result.
    pub sha256: String,
    pub input_name: String,
    pub input_type: InputType,
    /// The input's feature dimension, when the model fixes it.
    pub input_width: Option<usize>,
    /// Output names and types, copied out of the session (its own handles are not `Send`).
    outputs: Vec<(String, ValueType)>,
    // `Session::run` takes `&mut self`; scoring is serialised per model, which is what we want:
    // ONNX Runtime already spreads one batch over all cores.
    session: Mutex<Session>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Read, hash and load the model the job names; check its pinned sha256 if it has one.
    pub fn load(spec: &JobSpec) -> Result<Model, ConfigError> {
        let problem = |p: String| ConfigError::job(&spec.name, p);
        let path = &spec.model.path;
        let bytes = std::fs::read(path)
            .map_err(|e| problem(format!("cannot read model file {}: {e}", path.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = &spec.model.sha256
            && expected != &sha256
        {
            return Err(problem(format!(
                "model file {} has sha256 {sha256}, but model.sha256 in the job file pins {expected}",
                path.display()
            )));
        }
        let environment = crate::onnxruntime::environment()?;
        let session = Session::builder(environment)
            // Spinning threads wait for work by burning a core; on a small machine that core is
            // the database's and the reader's. Blocking costs microseconds per batch.
            .and_then(|builder| {
                builder
                    .with_intra_op_spinning(false)
                    .map_err(ort::Error::from)
            })
            .and_then(|mut builder| builder.commit_from_memory(&bytes))
            .map_err(|e| {
                problem(format!(
                    "model file {} is not a model ONNX Runtime can load: {e}",
                    path.display()
                ))
            })?;
        Self::from_session(path, sha256, session).map_err(problem)
    }

    fn from_session(path: &Path, sha256: String, session: Session) -> Result<Model, String> {
        let [input] = session.inputs() else {
            return Err(format!(
                "model {} has {} inputs; batchscore feeds one 2-D tensor of features",
                path.display(),
                session.inputs().len()
            ));
        };
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(format!("model input `{}` is not a tensor", input.name()));
        };
        let input_type = match ty {
            TensorElementType::Float32 => InputType::F32,
            TensorElementType::Float64 => InputType::F64,
            other => {
                return Err(format!(
                    "model input `{}` has element type {other}; batchscore feeds float32 or float64",
                    input.name()
                ));
            }
        };
        if shape.len() != 2 {
            return Err(format!(
                "model input `{}` has {} dimensions; batchscore feeds a 2-D [rows, features] tensor",
                input.name(),
                shape.len()
            ));
        }
        if shape[0] > 0 {
            return Err(format!(
                "model input `{}` has a fixed batch size of {}; export it with a dynamic first dimension",
                input.name(),
                shape[0]
            ));
        }
        Ok(Model {
            path: path.to_owned(),
            sha256,
            input_name: input.name().to_owned(),
            input_type,
            input_width: usize::try_from(shape[1]).ok(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| (o.name().to_owned(), o.dtype().clone()))
                .collect(),
            session: Mutex::new(session),
        })
    }

    /// Check the job against this model (feature count, output names, element types and
    /// indexes) and bind each result column to its output.
    pub fn bind(&self, spec: &JobSpec) -> Result<Vec<BoundOutput>, String> {
        let features = spec.source.features.len();
        if let Some(width) = self.input_width
            && width != features
        {
            return Err(format!(
                "model {} expects {width} features, but source.features lists {features}",
                self.path.display()
            ));
        }
        spec.outputs
            .iter()
            .map(|output| self.bind_output(output))
            .collect()
    }

    fn bind_output(&self, output: &OutputSpec) -> Result<BoundOutput, String> {
        let outlet = self
            .outputs
            .iter()
            .find(|(name, _)| *name == output.output)
            .ok_or_else(|| {
                let names: Vec<&str> = self.outputs.iter().map(|(name, _)| name.as_str()).collect();
                format!(
                    "outputs.{} refers to `{}`, but model {} has outputs: {}",
                    output.column,
                    output.output,
                    self.path.display(),
                    names.join(", ")
                )
            })?;
        let (_, ValueType::Tensor { ty, shape, .. }) = outlet else {
            return Err(format!(
                "output `{}` of model {} is not a tensor (a scikit-learn ZipMap? convert with skl2onnx option zipmap=False)",
                output.output,
                self.path.display()
            ));
        };
        let result_type = ResultType::for_element(*ty).ok_or_else(|| {
            format!(
                "output `{}` has element type {ty}, which batchscore cannot store",
                output.output
            )
        })?;
        match (shape.len(), output.index) {
            (1, None) => {}
            (1, Some(_)) => {
                return Err(format!(
                    "outputs.{} = \"{}\": output `{}` is 1-D, so it takes no [index]",
                    output.column,
                    output.reference(),
                    output.output
                ));
            }
            (2, Some(index)) if shape[1] > 0 && index as i64 >= shape[1] => {
                return Err(format!(
                    "outputs.{} = \"{}\": index {index} is out of range, output `{}` has {} columns",
                    output.column,
                    output.reference(),
                    output.output,
                    shape[1]
                ));
            }
            (2, None) if shape[1] != 1 => {
                return Err(format!(
                    "outputs.{} = \"{}\": output `{}` is 2-D with {} columns; pick one, like \"{}[1]\"",
                    output.column,
                    output.reference(),
                    output.output,
                    if shape[1] > 0 {
                        shape[1].to_string()
                    } else {
                        "several".to_owned()
                    },
                    output.output
                ));
            }
            (2, _) => {}
            (rank, _) => {
                return Err(format!(
                    "output `{}` has {rank} dimensions; batchscore reads 1-D or 2-D outputs",
                    output.output
                ));
            }
        }
        Ok(BoundOutput {
            spec: output.clone(),
            element: *ty,
            result_type,
        })
    }

    /// One line describing the model's signature, for `--dry-run` and `jobs validate`.
    pub fn signature(&self) -> String {
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|(name, dtype)| format!("{name}: {dtype}"))
            .collect();
        format!(
            "{}: {}[rows, {}] -> {}",
            self.input_name,
            self.input_type.name(),
            self.input_width.map_or("?".to_owned(), |w| w.to_string()),
            outputs.join(", ")
        )
    }

    /// Score one feature matrix; returns one polars column per bound output, in order.
    pub fn score(
        &self,
        matrix: &FeatureMatrix,
        outputs: &[BoundOutput],
    ) -> anyhow::Result<Vec<Column>> {
        use anyhow::Context;
        let shape = [matrix.rows(), matrix.cols()];
        let input = match matrix {
            FeatureMatrix::F32 { values, .. } => {
                ort::value::TensorRef::from_array_view((shape, values.as_slice()))?.into_dyn()
            }
            FeatureMatrix::F64 { values, .. } => {
                ort::value::TensorRef::from_array_view((shape, values.as_slice()))?.into_dyn()
            }
        };
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow::anyhow!("model session poisoned by an earlier panic"))?;
        let results = session
            .run(ort::inputs![self.input_name.as_str() => input])
            .with_context(|| {
                format!(
                    "ONNX Runtime failed to score {} rows with {}",
                    matrix.rows(),
                    self.path.display()
                )
            })?;
        outputs
            .iter()
            .map(|bound| {
                let value = &results[bound.spec.output.as_str()];
                extract_column(value, bound, matrix.rows())
                    .with_context(|| format!("reading output `{}`", bound.spec.reference()))
            })
            .collect()
    }
}

/// Pick the bound column out of an output tensor: `[rows]`, or column `index` of `[rows, k]`.
fn extract_column(
    value: &ort::value::DynValue,
    bound: &BoundOutput,
    rows: usize,
) -> anyhow::Result<Column> {
    let name = PlSmallStr::from(bound.spec.column.as_str());
    let pick = |shape: &[i64]| -> anyhow::Result<(usize, usize)> {
        let width = if shape.len() == 2 {
            shape[1] as usize
        } else {
            1
        };
        let index = bound.spec.index.unwrap_or(0);
        anyhow::ensure!(
            shape.first().copied() == Some(rows as i64) && index < width,
            "shape {shape:?} does not hold column {index} for {rows} rows"
        );
        Ok((width, index))
    };
    macro_rules! numeric {
        ($t:ty, $cast:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>()?;
            let (width, index) = pick(shape)?;
            let values: Vec<$cast> = (0..rows)
                .map(|r| data[r * width + index] as $cast)
                .collect();
            Column::new(name, values)
        }};
    }
    Ok(match bound.element {
        TensorElementType::Float32 => numeric!(f32, f64),
        TensorElementType::Float64 => numeric!(f64, f64),
        TensorElementType::Int64 => numeric!(i64, i64),
        TensorElementType::Int32 => numeric!(i32, i64),
        TensorElementType::Bool => {
            let (shape, data) = value.try_extract_tensor::<bool>()?;
            let (width, index) = pick(shape)?;
            let values: Vec<bool> = (0..rows).map(|r| data[r * width + index]).collect();
            Column::new(name, values)
        }
        TensorElementType::String => {
            let (shape, data) = value.try_extract_strings()?;
            let (width, index) = pick(shape)?;
            let values: Vec<&str> = (0..rows)
                .map(|r| data[r * width + index].as_str())
                .collect();
            Column::new(name, values)
        }
        other => anyhow::bail!("unsupported output element type {other}"),
    })
}
