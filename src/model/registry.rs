//! Models from an MLflow Model Registry: `models:/NAME@ALIAS` resolved to a version through the
//! registry's REST API, that version's ONNX file downloaded through the server's artifact proxy
//! into a local cache keyed by content, and the cache used when the registry cannot be reached.
//!
//! The cache (`$BATCHSCORE_MODEL_CACHE`, default `$XDG_CACHE_HOME/batchscore/models`) holds
//! - `sha256/<hex>/`: one model's files (the ONNX file, and the external-data files it names),
//!   written under a temporary name and renamed into place, so a process never sees a half
//!   written model and two processes downloading at once both end with the same directory;
//! - `versions/<key>.json`: the sha256 of a registry version (versions do not change), so a run
//!   whose alias still points at a version it has asks the registry one question;
//! - `resolved/<key>.json`: the version a job's URI resolved to last, for when the registry is
//!   down.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{MODEL_FILE, ModelFiles};
use crate::error::ConfigError;
use crate::spec::{RegistryUri, RegistryVersion};

/// How long a connection to the registry may take to open, and a REST answer to arrive.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A version of a registered model, as resolved for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryVersionRef {
    pub name: String,
    pub version: u64,
    /// The alias the job named, when it named one.
    pub alias: Option<String>,
}

impl std::fmt::Display for RegistryVersionRef {
    /// `models:/churn/3 (alias champion)`: what the ledger records as the model's source.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "models:/{}/{}", self.name, self.version)?;
        match &self.alias {
            Some(alias) => write!(f, " (alias {alias})"),
            None => Ok(()),
        }
    }
}

/// A registry version in the local cache, ready to load.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub version: RegistryVersionRef,
    /// The cached ONNX file (its external-data files beside it).
    pub path: PathBuf,
    pub sha256: String,
    /// Why the registry was not asked: set when the registry could not be reached and the job's
    /// last resolution was used from the cache.
    pub registry_error: Option<String>,
}

/// Why the registry gave no model.
#[derive(Debug, thiserror::Error)]
enum RegistryError {
    /// Not reached, or a server error: a later run may succeed.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that retrying will not change: an unknown name, alias or version, a version
    /// without an ONNX file, credentials refused.
    #[error("{0}")]
    Refused(String),
}

/// Resolve `uri` for `job` and return its model from the cache, downloading it first if the
/// cache does not have it. When the registry cannot be reached, the version the job resolved
/// last is used if the cache holds it (with a warning); otherwise the error names the URI.
pub async fn fetch(job: &str, uri: &RegistryUri) -> anyhow::Result<Fetched> {
    let registry = Registry::from_env().map_err(|p| ConfigError::job(job, p))?;
    let cache = Cache::from_env().map_err(|p| ConfigError::job(job, p))?;
    match registry.fetch(&cache, uri).await {
        Ok(fetched) => {
            cache.remember(job, &registry.base, uri, &fetched)?;
            Ok(fetched)
        }
        Err(RegistryError::Refused(problem)) => Err(ConfigError::job(job, problem).into()),
        Err(RegistryError::Unreachable(problem)) => {
            let what = format!("the MLflow registry at {} {problem}", registry.base);
            match cache.last_resolved(job, &registry.base, uri) {
                Some(mut fetched) => {
                    tracing::warn!(
                        job,
                        registry = %registry.base,
                        model = %fetched.version,
                        "{what}: scoring with the version this job resolved last, from the cache"
                    );
                    fetched.registry_error = Some(what);
                    Ok(fetched)
                }
                None => Err(anyhow::anyhow!(
                    "job `{job}`: cannot resolve {uri}: {what}, and the model cache ({}) holds no \
                     version this job resolved before",
                    cache.root.display()
                )),
            }
        }
    }
}

/// The registry at `MLFLOW_TRACKING_URI`, with the credentials MLflow's own clients send.
struct Registry {
    /// The tracking URI, without a trailing slash: REST paths go after it.
    base: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
}

/// What MLflow's clients send: username and password (Basic), or a token (Bearer).
enum Credentials {
    Basic { user: String, password: String },
    Token(String),
}

/// An MLflow REST error: `{"error_code": "...", "message": "..."}`.
#[derive(Deserialize)]
struct RestError {
    error_code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct VersionAnswer {
    model_version: VersionBody,
}

#[derive(Deserialize)]
struct VersionBody {
    version: String,
}

#[derive(Deserialize)]
struct DownloadUri {
    artifact_uri: String,
}

impl Registry {
    fn from_env() -> Result<Registry, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let base = env("MLFLOW_TRACKING_URI").ok_or(
            "a model URI (models:/…) needs MLFLOW_TRACKING_URI set to the MLflow server's \
             http:// or https:// address",
        )?;
        let parsed = url::Url::parse(&base)
            .map_err(|e| format!("MLFLOW_TRACKING_URI `{base}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "MLFLOW_TRACKING_URI `{base}` is not an http:// or https:// address: batchscore \
                 talks to an MLflow tracking server's REST API"
            ));
        }
        // As MLflow's clients: username and password win over a token.
        let credentials = match (
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
            env("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(user), Some(password), _) => Some(Credentials::Basic { user, password }),
            (_, _, Some(token)) => Some(Credentials::Token(token)),
            _ => None,
        };
        // reqwest takes the process's rustls provider: ring, as sqlx's TLS (one may already be
        // installed, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(ANSWER_TIMEOUT)
            .user_agent(concat!("batchscore/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = env("MLFLOW_TRACKING_SERVER_CERT_PATH") {
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read MLFLOW_TRACKING_SERVER_CERT_PATH {path}: {e}"))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!("MLFLOW_TRACKING_SERVER_CERT_PATH {path} holds no PEM certificate: {e}")
            })?;
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        if env("MLFLOW_TRACKING_INSECURE_TLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            client = client.tls_danger_accept_invalid_certs(true);
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot set up an HTTP client for the registry: {e}"))?;
        Ok(Registry {
            base: base.trim_end_matches('/').to_owned(),
            client,
            credentials,
        })
    }

    /// Resolve `uri` to a version, and have its model in the cache.
    async fn fetch(&self, cache: &Cache, uri: &RegistryUri) -> Result<Fetched, RegistryError> {
        let (query, asked) = match &uri.version {
            RegistryVersion::Alias(alias) => (
                "registered-models/alias",
                [("name", uri.name.clone()), ("alias", alias.clone())],
            ),
            RegistryVersion::Number(number) => (
                "model-versions/get",
                [("name", uri.name.clone()), ("version", number.to_string())],
            ),
        };
        let answer: VersionAnswer = self.rest(query, &asked, uri).await?;
        let number = answer.model_version.version.parse::<u64>().map_err(|_| {
            RegistryError::Refused(format!(
                "the registry answered {uri} with version `{}`, which is not a version number",
                answer.model_version.version
            ))
        })?;
        let version = RegistryVersionRef {
            name: uri.name.clone(),
            version: number,
            alias: match &uri.version {
                RegistryVersion::Alias(alias) => Some(alias.clone()),
                RegistryVersion::Number(_) => None,
            },
        };
        if let Some(sha256) = cache.known_version(&self.base, &version)
            && let Some(path) = cache.verified(&sha256)
        {
            return Ok(Fetched {
                version,
                path,
                sha256,
                registry_error: None,
            });
        }
        let (path, sha256) = self.download(cache, &version).await?;
        cache
            .record_version(&self.base, &version, &sha256)
            .map_err(|e| RegistryError::Unreachable(format!("{e:#}")))?;
        Ok(Fetched {
            version,
            path,
            sha256,
            registry_error: None,
        })
    }

    /// Download a version's ONNX file (as its `MLmodel` names it) and the external-data files
    /// the ONNX file names, through the server's artifact proxy, into the cache.
    async fn download(
        &self,
        cache: &Cache,
        version: &RegistryVersionRef,
    ) -> Result<(PathBuf, String), RegistryError> {
        let asked = [
            ("name", version.name.clone()),
            ("version", version.version.to_string()),
        ];
        let located: DownloadUri = self
            .rest("model-versions/get-download-uri", &asked, version)
            .await?;
        let artifacts = self.artifact_url(&located.artifact_uri, version)?;
        let mlmodel = self.get(&artifacts, &["MLmodel"], version).await?;
        let onnx = onnx_file(&String::from_utf8_lossy(&mlmodel))
            .map_err(|problem| RegistryError::Refused(format!("{version}: {problem}")))?;
        let staging = cache
            .staging()
            .map_err(|e| RegistryError::Unreachable(format!("{e:#}")))?;
        let model = self.get(&artifacts, &segments(&onnx)?, version).await?;
        let mut files = ModelFiles::new(model);
        for location in files.external_locations().map_err(RegistryError::Refused)? {
            let bytes = self.get(&artifacts, &segments(&location)?, version).await?;
            files.add_external(location, bytes);
        }
        let sha256 = files.sha256();
        let path = cache
            .store(staging, &files, &sha256)
            .map_err(|e| RegistryError::Unreachable(format!("{e:#}")))?;
        tracing::info!(model = %version, sha256, "downloaded the model from the registry");
        Ok((path, sha256))
    }

    /// The proxy's URL for an artifact folder (`mlflow-artifacts:/…`, or plain HTTP).
    fn artifact_url(
        &self,
        artifact_uri: &str,
        version: &RegistryVersionRef,
    ) -> Result<url::Url, RegistryError> {
        let url = match artifact_uri.strip_prefix("mlflow-artifacts:") {
            Some(path) => format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{}",
                self.base,
                path.trim_start_matches('/')
            ),
            None if artifact_uri.starts_with("http://") || artifact_uri.starts_with("https://") => {
                artifact_uri.to_owned()
            }
            None => {
                return Err(RegistryError::Refused(format!(
                    "{version} is stored at {artifact_uri}, which batchscore reads only through \
                     the server's artifact proxy (start the server with --serve-artifacts)"
                )));
            }
        };
        url::Url::parse(&url).map_err(|e| {
            RegistryError::Refused(format!("{version}: artifact address `{url}`: {e}"))
        })
    }

    /// A REST call: `GET {base}/api/2.0/mlflow/{path}?{query}`, its JSON answer.
    async fn rest<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        asked: &(dyn std::fmt::Display + Sync),
    ) -> Result<T, RegistryError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let request = self.client.get(&url).query(query).timeout(ANSWER_TIMEOUT);
        let body = self.send(request, asked).await?;
        serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Unreachable(format!(
                "answered {path} with something that is not MLflow's JSON ({e})"
            ))
        })
    }

    /// An artifact's bytes, from the folder at `folder`.
    async fn get(
        &self,
        folder: &url::Url,
        path: &[&str],
        asked: &(dyn std::fmt::Display + Sync),
    ) -> Result<Vec<u8>, RegistryError> {
        let mut url = folder.clone();
        url.path_segments_mut()
            .map_err(|()| {
                RegistryError::Refused(format!(
                    "{asked}: artifact address {folder} cannot hold a path"
                ))
            })?
            .pop_if_empty()
            .extend(path);
        self.send(self.client.get(url), asked).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        asked: &(dyn std::fmt::Display + Sync),
    ) -> Result<Vec<u8>, RegistryError> {
        request = match &self.credentials {
            Some(Credentials::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(Credentials::Token(token)) => request.bearer_auth(token),
            None => request,
        };
        let unreachable = |e: reqwest::Error| {
            // The chain says why (refused, timed out, TLS): reqwest's own message does not.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            RegistryError::Unreachable(format!("could not be reached ({why})"))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(answer_error(status, &body, asked))
    }
}

/// What an error answer means: retry (server errors, throttling) or fix (everything else).
fn answer_error(
    status: StatusCode,
    body: &[u8],
    asked: &(dyn std::fmt::Display + Sync),
) -> RegistryError {
    let rest: Option<RestError> = serde_json::from_slice(body).ok();
    let said = rest
        .as_ref()
        .and_then(|r| r.message.clone())
        .unwrap_or_else(|| crate::spec::shortened(&String::from_utf8_lossy(body)));
    let code = rest.and_then(|r| r.error_code).unwrap_or_default();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return RegistryError::Unreachable(format!("answered {status}: {said}"));
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return RegistryError::Refused(format!(
            "the MLflow registry refused access to {asked} ({status}): set \
             MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
        ));
    }
    // MLflow answers an unknown model or version with 404 RESOURCE_DOES_NOT_EXIST, and an
    // unknown alias with 400 INVALID_PARAMETER_VALUE.
    match code.as_str() {
        "RESOURCE_DOES_NOT_EXIST" | "INVALID_PARAMETER_VALUE" => {
            RegistryError::Refused(format!("the MLflow registry has no {asked}: {said}"))
        }
        _ => RegistryError::Refused(format!(
            "the MLflow registry answered {status} for {asked}: {said}"
        )),
    }
}

/// The ONNX file an `MLmodel` names: its onnx flavour's `data`.
fn onnx_file(mlmodel: &str) -> Result<String, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(mlmodel)
        .map_err(|e| format!("its MLmodel file is not YAML: {e}"))?;
    let doc = docs.first().ok_or("its MLmodel file is empty")?;
    let flavors = &doc["flavors"];
    match flavors["onnx"]["data"].as_str() {
        Some(data) => Ok(data.to_owned()),
        None => {
            let listed: Vec<&str> = flavors
                .as_hash()
                .map(|h| h.keys().filter_map(|k| k.as_str()).collect())
                .unwrap_or_default();
            Err(format!(
                "it has no ONNX model (no onnx flavour in its MLmodel; flavours: {}). Log it with \
                 mlflow.onnx.log_model",
                if listed.is_empty() {
                    "none".to_owned()
                } else {
                    listed.join(", ")
                }
            ))
        }
    }
}

/// A relative artifact path as URL segments; anything that could leave the version's folder
/// (absolute, `..`) is refused.
fn segments(path: &str) -> Result<Vec<&str>, RegistryError> {
    let plain = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if path.is_empty() || !plain {
        return Err(RegistryError::Refused(format!(
            "the model names the file `{path}`, which is not a plain relative path"
        )));
    }
    Ok(path.split('/').collect())
}

/// The local model cache.
struct Cache {
    root: PathBuf,
}

/// `resolved/<key>.json`: what a job's URI resolved to last.
#[derive(Serialize, Deserialize)]
struct Resolution {
    job: String,
    uri: String,
    registry: String,
    version: RegistryVersionRef,
    sha256: String,
}

impl Cache {
    fn from_env() -> Result<Cache, String> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let root = match (
            env("BATCHSCORE_MODEL_CACHE"),
            env("XDG_CACHE_HOME"),
            env("HOME"),
        ) {
            (Some(dir), _, _) => PathBuf::from(dir),
            (None, Some(cache), _) => Path::new(&cache).join("batchscore/models"),
            (None, None, Some(home)) => Path::new(&home).join(".cache/batchscore/models"),
            (None, None, None) => {
                return Err("no model cache: set BATCHSCORE_MODEL_CACHE (or HOME)".to_owned());
            }
        };
        Ok(Cache { root })
    }

    /// A key for a file name: the sha256 of the parts, so any name or URI is safe on disk.
    fn key(parts: &[&str]) -> String {
        hex::encode(Sha256::digest(parts.join("\n")))
    }

    fn version_file(&self, registry: &str, version: &RegistryVersionRef) -> PathBuf {
        let number = version.version.to_string();
        let key = Cache::key(&[registry, &version.name, &number]);
        self.root.join("versions").join(format!("{key}.json"))
    }

    fn resolution_file(&self, job: &str, registry: &str, uri: &RegistryUri) -> PathBuf {
        let key = Cache::key(&[registry, job, &uri.to_string()]);
        self.root.join("resolved").join(format!("{key}.json"))
    }

    /// The sha256 this cache recorded for a registry version.
    fn known_version(&self, registry: &str, version: &RegistryVersionRef) -> Option<String> {
        let text = std::fs::read(self.version_file(registry, version)).ok()?;
        let sha: String = serde_json::from_slice(&text).ok()?;
        Some(sha)
    }

    fn record_version(
        &self,
        registry: &str,
        version: &RegistryVersionRef,
        sha256: &str,
    ) -> anyhow::Result<()> {
        write_atomically(
            &self.version_file(registry, version),
            &serde_json::to_vec(sha256)?,
        )
    }

    /// Remember what `job`'s `uri` resolved to, for when the registry is down.
    fn remember(
        &self,
        job: &str,
        registry: &str,
        uri: &RegistryUri,
        fetched: &Fetched,
    ) -> anyhow::Result<()> {
        let resolution = Resolution {
            job: job.to_owned(),
            uri: uri.to_string(),
            registry: registry.to_owned(),
            version: fetched.version.clone(),
            sha256: fetched.sha256.clone(),
        };
        write_atomically(
            &self.resolution_file(job, registry, uri),
            &serde_json::to_vec_pretty(&resolution)?,
        )
    }

    /// What `job`'s `uri` resolved to last, if the cache still holds that model intact.
    fn last_resolved(&self, job: &str, registry: &str, uri: &RegistryUri) -> Option<Fetched> {
        let text = std::fs::read(self.resolution_file(job, registry, uri)).ok()?;
        let resolution: Resolution = serde_json::from_slice(&text).ok()?;
        let path = self.verified(&resolution.sha256)?;
        Some(Fetched {
            version: resolution.version,
            path,
            sha256: resolution.sha256,
            registry_error: None,
        })
    }

    /// The cached model with this sha256, if its files are there and still hash to it; a
    /// damaged copy is removed, to be downloaded again.
    fn verified(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.root.join("sha256").join(sha256);
        let path = dir.join(MODEL_FILE);
        match ModelFiles::read(&path) {
            Ok(files) if files.sha256() == sha256 => Some(path),
            Ok(_) | Err(_) if dir.exists() => {
                tracing::warn!(dir = %dir.display(), "a cached model does not match its sha256: removing it");
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
            _ => None,
        }
    }

    /// A fresh directory to download into, inside the cache (so the rename into place is
    /// atomic).
    fn staging(&self) -> anyhow::Result<PathBuf> {
        let dir = self.root.join("tmp").join(uuid::Uuid::now_v7().to_string());
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the model cache at {}: {e}", dir.display())
        })?;
        Ok(dir)
    }

    /// Move a downloaded model into place under its sha256; the path of its ONNX file.
    fn store(&self, staging: PathBuf, files: &ModelFiles, sha256: &str) -> anyhow::Result<PathBuf> {
        let written = files.write_to(&staging);
        let target = self.root.join("sha256").join(sha256);
        let placed = written.and_then(|()| {
            std::fs::create_dir_all(self.root.join("sha256"))?;
            std::fs::rename(&staging, &target)
        });
        match placed {
            Ok(()) => Ok(target.join(MODEL_FILE)),
            // Another process put the same model there first: its copy is as good.
            Err(_) if self.verified(sha256).is_some() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(target.join(MODEL_FILE))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(anyhow::anyhow!(
                    "cannot write the model into the cache at {}: {e}",
                    target.display()
                ))
            }
        }
    }
}

/// Write `bytes` to `path` under a temporary name, then rename it into place: readers see the
/// old file or the new one, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let temporary = dir.join(format!(".{}.tmp", uuid::Uuid::now_v7()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onnx_file_is_the_onnx_flavours_data() {
        let mlmodel =
            "flavors:\n  onnx:\n    data: model.onnx\n  python_function:\n    data: model.onnx\n";
        assert_eq!(onnx_file(mlmodel).unwrap(), "model.onnx");
        let sklearn = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n  python_function: {}\n";
        let problem = onnx_file(sklearn).unwrap_err();
        assert!(
            problem.contains("no ONNX model") && problem.contains("sklearn"),
            "{problem}"
        );
    }

    #[test]
    fn artifact_paths_stay_in_their_folder() {
        assert_eq!(segments("model.onnx").unwrap(), ["model.onnx"]);
        assert_eq!(segments("data/w.bin").unwrap(), ["data", "w.bin"]);
        for bad in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert!(segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolved_versions_name_their_alias() {
        let version = RegistryVersionRef {
            name: "churn".into(),
            version: 3,
            alias: Some("champion".into()),
        };
        assert_eq!(version.to_string(), "models:/churn/3 (alias champion)");
    }
}
