//! The ONNX model: loaded once per run from the bytes it hashed, checked against the job, and
//! scored in bulk by ONNX Runtime.
//!
//! A run reads the model file once: the bytes it hashes are the bytes it scores with, so
//! `model_version` on every result row names exactly the model that produced it, even if the
//! file is replaced while the run is going.

mod onnxruntime;
mod zipmap;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, Tensor, TensorElementType, TensorRef, ValueType};
use polars::prelude::*;
use sha2::{Digest, Sha256};

pub use self::zipmap::Labels;
use crate::element::Element;
use crate::error::ConfigError;
use crate::features::{InputFeed, InputTensor, TensorData};
use crate::sink::ResultType;
use crate::spec::{JobSpec, OutputSpec, Pick};

/// One result column bound to the model output that fills it.
#[derive(Debug, Clone)]
pub struct BoundOutput {
    pub spec: OutputSpec,
    pub read: OutputRead,
    pub result_type: ResultType,
}

/// How a result column's values are read out of the model's output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputRead {
    /// A 1-D tensor, or column `column` of a 2-D one.
    Tensor { element: Element, column: usize },
    /// One class's probability out of a ZipMap (a sequence of maps, one per row).
    ZipMap { label: ClassLabel },
}

/// A ZipMap class label, of the type the map's keys have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabel {
    Integer(i64),
    Text(String),
}

/// The model's inputs and outputs matched to the job: which columns feed which input, and
/// which output fills which result column.
#[derive(Debug, Clone)]
pub struct Binding {
    pub inputs: Vec<InputFeed>,
    pub outputs: Vec<BoundOutput>,
}

/// A model input as the model declares it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub name: String,
    pub dtype: ValueType,
}

pub struct Model {
    pub path: PathBuf,
    /// sha256 of the file's bytes, hex: the `model_version` written with every result.
    pub sha256: String,
    /// Inputs and outputs as declared, copied out of the session (its handles are not `Send`).
    pub inputs: Vec<ModelInput>,
    outputs: Vec<(String, ValueType)>,
    /// The class labels of each ZipMap output, by output name, as the model file lists them.
    zipmaps: HashMap<String, Labels>,
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
        Model::open(&spec.name, &spec.model.path, spec.model.sha256.as_deref())
    }

    /// Read, hash and load the model file at `path` for `job`, checking the `pinned` sha256.
    pub fn open(job: &str, path: &Path, pinned: Option<&str>) -> Result<Model, ConfigError> {
        let problem = |p: String| ConfigError::job(job, p);
        let bytes = read_model(path).map_err(problem)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = pinned
            && expected != sha256
        {
            return Err(problem(format!(
                "model file {} has sha256 {sha256}, but model.sha256 in the job file pins {expected}",
                path.display()
            )));
        }
        let environment = onnxruntime::environment()?;
        // Its threads are the environment's one pool (see `onnxruntime::environment`).
        let session = Session::builder(environment)
            .and_then(|mut builder| builder.commit_from_memory(&bytes))
            .map_err(|e| {
                problem(format!(
                    "model file {} is not a model ONNX Runtime can load: {e}",
                    path.display()
                ))
            })?;
        Ok(Model {
            path: path.to_owned(),
            sha256,
            inputs: session
                .inputs()
                .iter()
                .map(|i| ModelInput {
                    name: i.name().to_owned(),
                    dtype: i.dtype().clone(),
                })
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| (o.name().to_owned(), o.dtype().clone()))
                .collect(),
            zipmaps: zipmap::zipmap_labels(&bytes),
            session: Mutex::new(session),
        })
    }

    /// Match the job to this model: feed every input from its columns (by `[inputs]`, by name,
    /// or all features into a single input) and bind each result column to its output.
    /// Every problem names the model file.
    pub fn bind(&self, spec: &JobSpec) -> Result<Binding, String> {
        let bound = || -> Result<Binding, String> {
            let inputs = self
                .match_inputs(spec)?
                .into_iter()
                .map(|(input, columns)| self.feed(spec, input, columns))
                .collect::<Result<_, _>>()?;
            let outputs = spec
                .outputs
                .iter()
                .map(|output| self.bind_output(output))
                .collect::<Result<_, _>>()?;
            Ok(Binding { inputs, outputs })
        };
        bound().map_err(|problem| {
            let path = self.path.display().to_string();
            match problem.contains(&path) {
                true => problem,
                false => format!("model {path}: {problem}"),
            }
        })
    }

    /// Each model input, in the model's order, with the feature columns that feed it.
    fn match_inputs(&self, spec: &JobSpec) -> Result<Vec<(&ModelInput, Vec<usize>)>, String> {
        let names = || {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            names.join(", ")
        };
        let features = &spec.source.features;
        if let Some(listed) = &spec.inputs {
            if let Some(unknown) = listed
                .iter()
                .find(|l| !self.inputs.iter().any(|i| i.name == l.name))
            {
                return Err(format!(
                    "inputs.{0}: model {1} has no input `{0}` (its inputs: {2})",
                    unknown.name,
                    self.path.display(),
                    names()
                ));
            }
            return self
                .inputs
                .iter()
                .map(|input| {
                    let columns = listed
                        .iter()
                        .find(|l| l.name == input.name)
                        .map(|l| l.columns.clone())
                        .ok_or_else(|| {
                            format!(
                                "model input `{}` is fed by nothing: add it to [inputs] (model {} has inputs: {})",
                                input.name,
                                self.path.display(),
                                names()
                            )
                        })?;
                    Ok((input, columns))
                })
                .collect();
        }
        let position = |name: &str| features.iter().position(|f| f.as_str() == name);
        let by_name = self.inputs.iter().all(|i| position(&i.name).is_some());
        if by_name && (self.inputs.len() > 1 || features.len() == 1) {
            // One input per column, named after it: the standard per-column export.
            if let Some(unused) = features
                .iter()
                .find(|f| !self.inputs.iter().any(|i| i.name == f.as_str()))
            {
                return Err(format!(
                    "source.features lists `{unused}`, but model {} has no input of that name (its inputs: {})",
                    self.path.display(),
                    names()
                ));
            }
            return Ok(self
                .inputs
                .iter()
                .map(|i| (i, vec![position(&i.name).expect("matched by name")]))
                .collect());
        }
        match self.inputs.as_slice() {
            // One input: every feature, in order, as its columns.
            [input] => Ok(vec![(input, (0..features.len()).collect())]),
            _ => {
                let unmatched: Vec<&str> = self
                    .inputs
                    .iter()
                    .filter(|i| position(&i.name).is_none())
                    .map(|i| i.name.as_str())
                    .collect();
                Err(format!(
                    "model {} has {} inputs ({}), and source.features has no column named {}: \
                     name the features after the inputs, or map each input to its columns in [inputs]",
                    self.path.display(),
                    self.inputs.len(),
                    names(),
                    unmatched
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }

    /// Check that `columns` can feed `input` (element type, rank, width, a dynamic batch).
    fn feed(
        &self,
        spec: &JobSpec,
        input: &ModelInput,
        columns: Vec<usize>,
    ) -> Result<InputFeed, String> {
        let name = &input.name;
        let ValueType::Tensor { ty, shape, .. } = &input.dtype else {
            return Err(format!(
                "model input `{name}` is a {}, not a tensor; batchscore feeds tensors",
                input.dtype
            ));
        };
        let element = Element::of(*ty).ok_or_else(|| {
            format!(
                "model input `{name}` has element type {}; batchscore feeds {}",
                element_name(*ty),
                Element::SUPPORTED
            )
        })?;
        if let Some(&batch) = shape.first()
            && batch > 0
        {
            return Err(format!(
                "model input `{name}` has a fixed batch size of {batch}; export it with a dynamic first dimension"
            ));
        }
        let fed_by = || {
            let names: Vec<&str> = columns
                .iter()
                .map(|&c| spec.source.features[c].as_str())
                .collect();
            names.join(", ")
        };
        match shape.len() {
            1 if columns.len() != 1 => Err(format!(
                "model input `{name}` is 1-D ([N]), so one column feeds it, not {} ({})",
                columns.len(),
                fed_by()
            )),
            2 if shape[1] > 0 && shape[1] as usize != columns.len() => {
                Err(match spec.inputs.is_none() && self.inputs.len() == 1 {
                    true => format!(
                        "model {} expects {} features, but source.features lists {}",
                        self.path.display(),
                        shape[1],
                        columns.len()
                    ),
                    false => format!(
                        "model input `{name}` takes {} columns, but {} feed it ({})",
                        shape[1],
                        columns.len(),
                        fed_by()
                    ),
                })
            }
            rank @ (1 | 2) => Ok(InputFeed {
                name: name.clone(),
                element,
                columns,
                rank,
            }),
            rank => Err(format!(
                "model input `{name}` has {rank} dimensions; batchscore feeds [N] or [N, columns]"
            )),
        }
    }

    fn bind_output(&self, output: &OutputSpec) -> Result<BoundOutput, String> {
        let (_, dtype) = self
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
        let at = || format!("outputs.{} = {:?}", output.column, output.reference());
        let read = match dtype {
            ValueType::Tensor { ty, shape, .. } => {
                let element = Element::of(*ty).ok_or_else(|| {
                    format!(
                        "{}: output `{}` has element type {}; batchscore reads {}",
                        at(),
                        output.output,
                        element_name(*ty),
                        Element::SUPPORTED
                    )
                })?;
                let column = tensor_column(output, shape).map_err(|p| format!("{}: {p}", at()))?;
                OutputRead::Tensor { element, column }
            }
            ValueType::Sequence(item) => match item.as_ref() {
                ValueType::Map {
                    key,
                    value: TensorElementType::Float32,
                } => {
                    let label = self
                        .zipmap_label(output, *key)
                        .map_err(|p| format!("{}: {p}", at()))?;
                    OutputRead::ZipMap { label }
                }
                other => {
                    return Err(format!(
                        "{}: output `{}` is a sequence of {other}; batchscore reads tensors and ZipMaps (maps of class to float)",
                        at(),
                        output.output
                    ));
                }
            },
            other => {
                return Err(format!(
                    "{}: output `{}` is a {other}; batchscore reads tensors and ZipMaps",
                    at(),
                    output.output
                ));
            }
        };
        let result_type = match &read {
            OutputRead::Tensor { element, .. } => ResultType::for_element(*element),
            OutputRead::ZipMap { .. } => ResultType::Float,
        };
        Ok(BoundOutput {
            spec: output.clone(),
            read,
            result_type,
        })
    }

    /// The class a ZipMap reference picks, checked against the model's labels when the model
    /// file lists them.
    fn zipmap_label(
        &self,
        output: &OutputSpec,
        key: TensorElementType,
    ) -> Result<ClassLabel, String> {
        let name = &output.output;
        let labels = self.zipmaps.get(name);
        let classes = labels.map_or_else(String::new, |l| format!(" (its classes: {l})"));
        let label = match (key, &output.pick) {
            (TensorElementType::Int64, Some(Pick::Index(label))) => ClassLabel::Integer(*label),
            (TensorElementType::String, Some(Pick::Label(label))) => {
                ClassLabel::Text(label.clone())
            }
            (TensorElementType::Int64, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap with integer classes{classes}: pick one, like {name}[1]"
                ));
            }
            (TensorElementType::String, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap with string classes{classes}: pick one, like {name}[\"label\"]"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "output `{name}` is a ZipMap keyed by {other}; batchscore reads int64 or string class labels"
                ));
            }
        };
        let known = match (labels, &label) {
            (None, _) => true, // not listed in the file: checked while scoring
            (Some(Labels::Integer(all)), ClassLabel::Integer(l)) => all.contains(l),
            (Some(Labels::Text(all)), ClassLabel::Text(l)) => all.contains(l),
            (Some(_), _) => false,
        };
        if !known {
            return Err(format!(
                "ZipMap output `{name}` has no class {}{classes}",
                match &label {
                    ClassLabel::Integer(l) => l.to_string(),
                    ClassLabel::Text(l) => format!("{l:?}"),
                }
            ));
        }
        Ok(label)
    }

    /// The outputs as declared: names and types.
    pub fn outputs(&self) -> &[(String, ValueType)] {
        &self.outputs
    }

    /// The class labels of a ZipMap output, as the model file lists them.
    pub fn zipmap(&self, output: &str) -> Option<&Labels> {
        self.zipmaps.get(output)
    }

    /// The declared type of input or output `name`, as `jobs validate` shows it.
    pub fn describe(&self, name: &str) -> String {
        self.inputs
            .iter()
            .map(|i| (&i.name, &i.dtype))
            .chain(self.outputs.iter().map(|(n, t)| (n, t)))
            .find(|(n, _)| *n == name)
            .map_or_else(|| "?".to_owned(), |(_, t)| describe_type(t))
    }

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
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow::anyhow!("model session poisoned by an earlier panic"))?;
        let results = session.run(values).with_context(|| {
            format!(
                "ONNX Runtime failed to score {rows} rows with {}",
                self.path.display()
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

/// `float32[N,3]`, `seq(map(int64,float32))`: a declared type, dynamic dimensions as N.
/// The largest ONNX file: protobuf's limit (larger models keep their weights in external data
/// files, which a model loaded from memory cannot reach).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The model file's bytes, after the checks that need none of them: not empty, not larger than
/// an ONNX file can be, and starting like one (a ModelProto field). So a file that is not a model
/// at all, a gigabyte of zeros say, is refused at once, not read into memory and parsed first.
fn read_model(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read model file {shown}: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size == 0 {
        return Err(format!("model file {shown} is empty"));
    }
    if size > MAX_MODEL_BYTES {
        return Err(format!(
            "model file {shown} is {size} bytes, more than an ONNX file can hold (2 GiB)"
        ));
    }
    let mut head = [0u8; 10];
    let read = file.read(&mut head).map_err(cannot)?;
    if !starts_like_a_model(&head[..read]) {
        return Err(format!(
            "model file {shown} is not an ONNX model: it does not start like one (an ONNX \
             ModelProto's first field)"
        ));
    }
    let mut bytes = head[..read].to_vec();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// Whether `head` begins with the tag of a field an ONNX ModelProto has (numbers 1 to 26, as a
/// varint or a length-delimited field: ir_version, opset_import, graph, …).
fn starts_like_a_model(head: &[u8]) -> bool {
    let mut tag: u64 = 0;
    for (i, byte) in head.iter().take(5).enumerate() {
        tag |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let (field, wire) = (tag >> 3, tag & 7);
            return (1..=26).contains(&field) && matches!(wire, 0 | 2);
        }
    }
    false
}

fn describe_type(dtype: &ValueType) -> String {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => {
            let dims: Vec<String> = shape
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, *d) {
                    (_, d) if d > 0 => d.to_string(),
                    (0, _) => "N".to_owned(),
                    _ => "?".to_owned(),
                })
                .collect();
            format!("{}[{}]", element_name(*ty), dims.join(","))
        }
        ValueType::Sequence(item) => format!("seq({})", describe_type(item)),
        ValueType::Map { key, value } => {
            format!("map({},{})", element_name(*key), element_name(*value))
        }
        other => other.to_string(),
    }
}

/// ONNX Runtime's name for an element type ("float32"), also for types batchscore refuses.
fn element_name(ty: TensorElementType) -> String {
    Element::of(ty).map_or_else(|| format!("{ty:?}").to_lowercase(), |e| e.name().to_owned())
}

/// Which column of a tensor output a reference picks (0 for 1-D and `[N, 1]` outputs).
fn tensor_column(output: &OutputSpec, shape: &[i64]) -> Result<usize, String> {
    let name = &output.output;
    match (shape.len(), &output.pick) {
        (_, Some(Pick::Label(label))) => Err(format!(
            "output `{name}` is a tensor, not a ZipMap, so it takes a column number, not the label {label:?}"
        )),
        (1, None) => Ok(0),
        (1, Some(_)) => Err(format!("output `{name}` is 1-D, so it takes no [index]")),
        (2, Some(Pick::Index(index))) if shape[1] > 0 && *index >= shape[1] => Err(format!(
            "index {index} is out of range, output `{name}` has {} columns",
            shape[1]
        )),
        (2, Some(Pick::Index(index))) => Ok(*index as usize),
        (2, None) if shape[1] == 1 => Ok(0),
        (2, None) => Err(format!(
            "output `{name}` is 2-D with {} columns; pick one, like \"{name}[1]\"",
            if shape[1] > 0 {
                shape[1].to_string()
            } else {
                "several".to_owned()
            },
        )),
        (rank, _) => Err(format!(
            "output `{name}` has {rank} dimensions; batchscore reads 1-D or 2-D outputs"
        )),
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
