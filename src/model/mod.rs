//! The ONNX model: found ([`locate`]: a file, or a registry version in the local cache), loaded
//! once per run from the bytes it hashed, checked against the job, and scored in bulk by ONNX
//! Runtime.
//!
//! A run reads the model's files once: the bytes it hashes are the bytes it scores with, so
//! the model number on every result row (`batchscore_model`, or `model_version` with full lineage) names exactly the model that produced it, even if the
//! file is replaced or the registry's alias moves while the run is going.

mod binding;
mod files;
mod onnxruntime;
pub mod registry;
mod score;
mod zipmap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

pub use self::binding::{Binding, BoundOutput};
use self::files::ModelFiles;
use self::registry::RegistryVersionRef;
pub use self::zipmap::Labels;
use crate::element::Element;
use crate::error::ConfigError;
use crate::spec::{ModelSource, ModelSpec};

/// Where a loaded model came from: what the ledger records as its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOrigin {
    File(PathBuf),
    /// A registry version, with the alias it was resolved from.
    Registry(RegistryVersionRef),
}

impl std::fmt::Display for ModelOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelOrigin::File(path) => write!(f, "{}", path.display()),
            ModelOrigin::Registry(version) => write!(f, "{version}"),
        }
    }
}

/// A model found, not yet read: its ONNX file on disk, where it came from, and for a registry
/// version the sha256 the cache keeps it under.
#[derive(Debug, Clone)]
pub struct Located {
    pub path: PathBuf,
    pub origin: ModelOrigin,
    pub sha256: Option<String>,
    /// Set when the registry could not be reached and the job's last resolution was used.
    pub registry_error: Option<String>,
}

impl Located {
    /// A model file, as it is.
    pub fn file(path: PathBuf) -> Located {
        Located {
            origin: ModelOrigin::File(path.clone()),
            path,
            sha256: None,
            registry_error: None,
        }
    }
}

/// Find the model `spec` names for `job`: a file as it is, a registry URI resolved and its
/// version fetched into the local cache (see [`registry`]).
pub async fn locate(job: &str, spec: &ModelSpec) -> anyhow::Result<Located> {
    match &spec.source {
        ModelSource::File(path) => Ok(Located::file(path.clone())),
        ModelSource::Registry(uri) => {
            let fetched = registry::fetch(job, uri).await?;
            Ok(Located {
                path: fetched.path,
                origin: ModelOrigin::Registry(fetched.version),
                sha256: Some(fetched.sha256),
                registry_error: fetched.registry_error,
            })
        }
    }
}

/// A model input as the model declares it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub name: String,
    pub dtype: ValueType,
}

pub struct Model {
    pub origin: ModelOrigin,
    /// sha256 of the model's bytes, hex (see [`files`]): the `model_version` written with
    /// every result.
    pub sha256: String,
    /// Set when the registry could not be reached and the job's last resolution was used.
    pub registry_error: Option<String>,
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
            .field("origin", &self.origin)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The sha256 a job file pins a model to, and the setting that says so (`model.sha256`,
/// `challenger.sha256`), for the error that names it.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub setting: &'static str,
    pub sha256: String,
}

impl Pinned {
    pub fn of(setting: &'static str, sha256: &Option<String>) -> Option<Pinned> {
        sha256.clone().map(|sha256| Pinned { setting, sha256 })
    }
}

impl Model {
    /// Find, read, hash and load the model `spec` names for `job`; check its pinned sha256.
    pub async fn load(job: &str, spec: &ModelSpec) -> anyhow::Result<Model> {
        let located = locate(job, spec).await?;
        Model::open_blocking(job, located, Pinned::of("model.sha256", &spec.sha256)).await
    }

    /// [`Model::open`] off the async threads: ONNX Runtime's session setup is CPU work.
    pub async fn open_blocking(
        job: &str,
        located: Located,
        pinned: Option<Pinned>,
    ) -> anyhow::Result<Model> {
        let job = job.to_owned();
        Ok(tokio::task::spawn_blocking(move || Model::open(&job, located, pinned)).await??)
    }

    /// Read, hash and load the model at `located` for `job`, checking the `pinned` sha256.
    pub fn open(job: &str, located: Located, pinned: Option<Pinned>) -> Result<Model, ConfigError> {
        let problem = |p: String| ConfigError::job(job, p);
        let shown = match &located.origin {
            ModelOrigin::File(path) => format!("model file {}", path.display()),
            ModelOrigin::Registry(version) => {
                format!("model {version} (cached at {})", located.path.display())
            }
        };
        let files = ModelFiles::read(&located.path).map_err(problem)?;
        let sha256 = files.sha256();
        if let Some(expected) = &located.sha256
            && *expected != sha256
        {
            return Err(problem(format!(
                "{shown} has sha256 {sha256}, not the {expected} it was stored under: the model \
                 cache is damaged, remove that folder"
            )));
        }
        if let Some(Pinned {
            setting,
            sha256: expected,
        }) = &pinned
            && *expected != sha256
        {
            return Err(problem(format!(
                "{shown} has sha256 {sha256}, but {setting} in the job file pins {expected}"
            )));
        }
        let environment = onnxruntime::environment()?;
        let zipmaps = zipmap::zipmap_labels(&files.model);
        // Its threads are the environment's one pool (see `onnxruntime::environment`). The
        // external data goes in from memory too: the bytes hashed are the bytes loaded.
        let cannot =
            |e: ort::Error| problem(format!("{shown} is not a model ONNX Runtime can load: {e}"));
        let mut builder = Session::builder(environment).map_err(cannot)?;
        for (name, bytes) in files.external {
            builder = builder
                .with_external_initializer_file_in_memory(name, Arc::from(bytes))
                .map_err(|e| cannot(e.into()))?;
        }
        let session = builder.commit_from_memory(&files.model).map_err(cannot)?;
        Ok(Model {
            origin: located.origin,
            sha256,
            registry_error: located.registry_error,
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
            zipmaps,
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
