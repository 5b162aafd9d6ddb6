//! `[model]` and `[challenger]`: where a job's model comes from (a file, or a version in an
//! MLflow Model Registry, by alias or number), checked for form when the job file is read. What
//! the registry answers is `model::registry`'s.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ident::TableName;

/// The longest model path a system takes (Linux's PATH_MAX).
const MAX_PATH: usize = 4096;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file: absolute, or relative to the jobs directory's parent.
    File(PathBuf),
    /// A version in the MLflow Model Registry at `MLFLOW_TRACKING_URI`.
    Registry(RegistryUri),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::File(path) => write!(f, "{}", path.display()),
            ModelSource::Registry(uri) => write!(f, "{uri}"),
        }
    }
}

/// `models:/NAME@ALIAS` or `models:/NAME/VERSION`, as MLflow writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUri {
    pub name: String,
    pub version: RegistryVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryVersion {
    /// Whichever version the alias points at when a run starts (`@champion`).
    Alias(String),
    /// One version, for good.
    Number(u64),
}

impl fmt::Display for RegistryUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            RegistryVersion::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            RegistryVersion::Number(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

impl RegistryUri {
    /// Parse `models:/NAME@ALIAS` or `models:/NAME/VERSION`.
    pub fn parse(text: &str) -> Result<RegistryUri, String> {
        let form = "a registry URI is models:/NAME@ALIAS or models:/NAME/VERSION";
        let rest = text
            .strip_prefix("models:/")
            .ok_or_else(|| format!("`{text}` is not a registry URI: {form}"))?;
        let (name, version) = match (rest.rsplit_once('@'), rest.rsplit_once('/')) {
            (Some((name, alias)), _) => {
                let ok = !alias.is_empty()
                    && alias
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    return Err(format!(
                        "`{text}`: the alias `{alias}` is not a registry alias (letters, digits, _ and -)"
                    ));
                }
                (name, RegistryVersion::Alias(alias.to_owned()))
            }
            (None, Some((name, number))) => {
                let number = number
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("`{text}`: the version `{number}` is not a version number")
                    })?;
                (name, RegistryVersion::Number(number))
            }
            (None, None) => {
                return Err(format!(
                    "`{text}` names no version: {form} (batchscore does not guess the latest)"
                ));
            }
        };
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(format!(
                "`{text}`: `{name}` is not a registered model's name"
            ));
        }
        Ok(RegistryUri {
            name: name.to_owned(),
            version,
        })
    }
}

/// `[model]`: where the model comes from, and the sha256 it must have, when the job pins one.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub source: ModelSource,
    /// Expected sha256 of the model (hex), when the job pins one.
    pub sha256: Option<String>,
}

/// `[challenger]`: a second model scored on the same windows, into a table of its own.
#[derive(Debug, Clone)]
pub struct ChallengerSpec {
    pub model: ModelSpec,
    pub table: TableName,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelFile {
    path: Option<PathBuf>,
    uri: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChallengerFile {
    path: Option<PathBuf>,
    uri: Option<String>,
    sha256: Option<String>,
    table: Option<String>,
}

/// `[model]`: `path` or `uri`, exactly one; a path resolved against `model_base`; a pinned
/// sha256 checked for form.
pub(super) fn check_model(file: ModelFile, model_base: &Path) -> Result<ModelSpec, String> {
    check_source("model", file.path, file.uri, file.sha256, model_base)
}

/// `[challenger]`: as `[model]`, and its table (default: the results table's name with
/// `_challenger`).
pub(super) fn check_challenger(
    file: ChallengerFile,
    model_base: &Path,
    sink: &TableName,
) -> Result<ChallengerSpec, String> {
    let model = check_source("challenger", file.path, file.uri, file.sha256, model_base)?;
    let table = match file.table {
        Some(table) => TableName::parse(&table).map_err(|e| format!("challenger.table: {e}"))?,
        None => {
            let name = format!("{}_challenger", sink.name);
            let qualified = match &sink.schema {
                Some(schema) => format!("{schema}.{name}"),
                None => name,
            };
            TableName::parse(&qualified).map_err(|e| {
                format!("challenger.table: the default, sink.table with `_challenger`, is not a valid name ({e}): set one")
            })?
        }
    };
    if &table == sink {
        return Err(
            "challenger.table is sink.table: the challenger writes a table of its own".to_owned(),
        );
    }
    Ok(ChallengerSpec { model, table })
}

fn check_source(
    section: &str,
    path: Option<PathBuf>,
    uri: Option<String>,
    sha256: Option<String>,
    model_base: &Path,
) -> Result<ModelSpec, String> {
    let source = match (path, uri) {
        (Some(path), None) => {
            if path.as_os_str().len() > MAX_PATH {
                return Err(format!(
                    "{section}.path is {} bytes long, more than a path can be ({MAX_PATH})",
                    path.as_os_str().len()
                ));
            }
            ModelSource::File(model_base.join(path))
        }
        (None, Some(uri)) => ModelSource::Registry(
            RegistryUri::parse(&uri).map_err(|e| format!("{section}.uri: {e}"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(format!(
                "[{section}] takes `path` or `uri` (a registry's models:/…), not both"
            ));
        }
        (None, None) => {
            return Err(format!(
                "[{section}] needs `path` (a file) or `uri` (models:/NAME@ALIAS or models:/NAME/VERSION)"
            ));
        }
    };
    let sha256 = sha256.map(|s| s.to_ascii_lowercase());
    if let Some(sha) = &sha256
        && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("{section}.sha256 `{sha}` is not 64 hex digits"));
    }
    Ok(ModelSpec { source, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_uris_name_an_alias_or_a_version() {
        let alias = RegistryUri::parse("models:/machine failure@champion").unwrap();
        assert_eq!(alias.name, "machine failure");
        assert_eq!(alias.version, RegistryVersion::Alias("champion".into()));
        assert_eq!(alias.to_string(), "models:/machine failure@champion");
        let number = RegistryUri::parse("models:/churn/12").unwrap();
        assert_eq!(number.version, RegistryVersion::Number(12));
        assert_eq!(number.to_string(), "models:/churn/12");
        for bad in [
            "churn@champion",
            "models:/churn",
            "models:/churn/0",
            "models:/churn/latest",
            "models:/churn@",
            "models:/churn@a b",
            "models:/@champion",
        ] {
            assert!(RegistryUri::parse(bad).is_err(), "{bad}");
        }
    }
}
