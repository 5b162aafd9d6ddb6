//! The ONNX model: loaded once per run from the bytes it hashed, checked against the job, and
//! scored in bulk by ONNX Runtime.
//!
//! A run reads the model file once: the bytes it hashes are the bytes it scores with, so
//! `model_version` on every result row names exactly the model that produced it, even if the
//! file is replaced while the run is going.

mod binding;
mod onnxruntime;
mod score;
mod zipmap;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use sha2::{Digest, Sha256};

pub use self::binding::BoundOutput;
pub use self::zipmap::Labels;
use crate::element::Element;
use crate::error::ConfigError;
use crate::spec::JobSpec;

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
}

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

/// `float32[N,3]`, `seq(map(int64,float32))`: a declared type, dynamic dimensions as N.
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
