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
mod proto;
pub mod registry;
mod score;
mod signature;
mod zipmap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

pub use self::binding::{Binding, BoundOutput};
use self::files::ModelFiles;
use self::registry::RegistryVersionRef;
use self::signature::Signature;
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Inputs and outputs as declared: read from the file (see [`signature`]), or copied out
    /// of the session where the file's types could not be read (its handles are not `Send`).
    pub inputs: Vec<ModelInput>,
    outputs: Vec<(String, ValueType)>,
    /// The class labels of each ZipMap output, by output name, as the model file lists them.
    zipmaps: HashMap<String, Labels>,
    /// The job, and the model as errors name it ("model file PATH").
    job: String,
    shown: String,
    // `Session::run` takes `&mut self`; scoring is serialised per model, which is what we want:
    // ONNX Runtime already spreads one batch over all cores.
    session: Mutex<SessionState>,
}

/// ONNX Runtime's session of a model. Building it is most of what a short run with a heavy
/// model costs, so it is built when the first chunk is scored (or a run finds a window with a
/// row, or validation asks: [`Model::ready`]), from the bytes hashed when the model was opened.
enum SessionState {
    Pending(ModelFiles),
    Built(Session),
    /// ONNX Runtime refused the model: the error every later chunk gets.
    Refused(ConfigError),
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
    /// Find, read and hash the model `spec` names for `job` ([`Model::open`]); check its pinned
    /// sha256.
    pub async fn load(job: &str, spec: &ModelSpec) -> anyhow::Result<Model> {
        let located = locate(job, spec).await?;
        Model::open_blocking(job, located, Pinned::of("model.sha256", &spec.sha256)).await
    }

    /// [`Model::open`] off the async threads: reading and hashing a large model is CPU work.
    pub async fn open_blocking(
        job: &str,
        located: Located,
        pinned: Option<Pinned>,
    ) -> anyhow::Result<Model> {
        let job = job.to_owned();
        Ok(tokio::task::spawn_blocking(move || Model::open(&job, located, pinned)).await??)
    }

    /// Read and hash the model at `located` for `job`, checking the `pinned` sha256, and read
    /// its inputs and outputs from the file; its session is built when first needed.
    pub fn open(job: &str, located: Located, pinned: Option<Pinned>) -> Result<Model, ConfigError> {
        let problem = |p: String| ConfigError::job(job, p);
        let shown = match &located.origin {
            ModelOrigin::File(path) => format!("model file {}", path.display()),
            ModelOrigin::Registry(version) => {
                format!("model {version} (cached at {})", located.path.display())
            }
        };
        let mut files = ModelFiles::read(&located.path).map_err(problem)?;
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
        let graph = files.graph.take();
        let zipmaps = graph
            .as_ref()
            .map(zipmap::zipmap_labels)
            .unwrap_or_default();
        let (signature, session) = match graph.as_ref().and_then(Signature::read) {
            Some(signature) => (signature, SessionState::Pending(files)),
            // Types the file does not say plainly: ONNX Runtime's word, now (and its error,
            // for a file it cannot load either).
            None => {
                let session = build_session(job, &shown, files)?;
                (session_signature(&session), SessionState::Built(session))
            }
        };
        Ok(Model {
            origin: located.origin,
            sha256,
            registry_error: located.registry_error,
            inputs: signature.inputs,
            outputs: signature.outputs,
            zipmaps,
            job: job.to_owned(),
            shown,
            session: Mutex::new(session),
        })
    }

    /// Build ONNX Runtime's session now, if it is not built yet: for validation, and for a run
    /// before its first window with a row, so that a model ONNX Runtime refuses fails the run
    /// before it records anything. Blocks for as long as that takes.
    pub fn ready(&self) -> Result<(), ConfigError> {
        let mut state = self.lock()?;
        self.session(&mut state).map(|_| ())
    }

    /// Whether the session is built (or was refused): [`Model::ready`] would return at once.
    pub fn is_ready(&self) -> bool {
        self.session
            .lock()
            .map_or(true, |state| !matches!(*state, SessionState::Pending(_)))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SessionState>, ConfigError> {
        self.session
            .lock()
            .map_err(|_| ConfigError::job(&self.job, "model session poisoned by an earlier panic"))
    }

    /// The session in `state`, built first if it is pending; the refusal it got, if it was.
    fn session<'a>(&self, state: &'a mut SessionState) -> Result<&'a mut Session, ConfigError> {
        if let SessionState::Pending(files) = state {
            let files = std::mem::take(files);
            let loading = std::time::Instant::now();
            let built = build_session(&self.job, &self.shown, files);
            *state = match built.and_then(|session| self.check(session)) {
                Ok(session) => {
                    // What a run pays before its first row: with a heavy model, most of a
                    // short run.
                    tracing::info!(
                        job = %self.job,
                        model = %self.origin,
                        load_seconds = (loading.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                        "model loaded"
                    );
                    SessionState::Built(session)
                }
                Err(refused) => SessionState::Refused(refused),
            };
        }
        match state {
            SessionState::Built(session) => Ok(session),
            SessionState::Refused(refused) => Err(refused.clone()),
            SessionState::Pending(_) => unreachable!("built above"),
        }
    }

    /// `session`, if it reads the model's inputs and outputs as the file did when the job was
    /// bound to it.
    fn check(&self, session: Session) -> Result<Session, ConfigError> {
        let bound = Signature {
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        };
        match bound.differs_from(&session_signature(&session)) {
            None => Ok(session),
            Some(difference) => Err(ConfigError::job(
                &self.job,
                format!(
                    "{}: ONNX Runtime reads its inputs and outputs differently from batchscore \
                     ({difference}); please report this with the model",
                    self.shown
                ),
            )),
        }
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

/// ONNX Runtime's session of `files` (the model `shown` of `job`), in the process's one
/// environment.
fn build_session(job: &str, shown: &str, files: ModelFiles) -> Result<Session, ConfigError> {
    let environment = onnxruntime::environment()?;
    // Its threads are the environment's one pool (see `onnxruntime::environment`). The
    // external data goes in from memory too: the bytes hashed are the bytes loaded.
    let cannot = |e: ort::Error| {
        ConfigError::job(
            job,
            format!("{shown} is not a model ONNX Runtime can load: {e}"),
        )
    };
    let mut builder = Session::builder(environment).map_err(cannot)?;
    for (name, bytes) in files.external {
        builder = builder
            .with_external_initializer_file_in_memory(name, Arc::from(bytes))
            .map_err(|e| cannot(e.into()))?;
    }
    builder.commit_from_memory(&files.model).map_err(cannot)
}

/// The inputs and outputs `session` declares.
fn session_signature(session: &Session) -> Signature {
    Signature {
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
