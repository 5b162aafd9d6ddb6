//! A job ready to run: its checked spec, its loaded model (and challenger), and what the
//! database says about its source and results tables, all matched against each other before any
//! row is read.
//!
//! `jobs validate` runs exactly [`prepare`]; so does every run before it plans its window. A
//! run resolves its models once, here: a registry alias that moves during the run takes effect
//! at the next one, and no window is scored by two versions.

use anyhow::Context;
use std::sync::Arc;

use crate::challenger::{Challenger, check_binding};
use crate::db::{Backend, WindowTx};
use crate::error::ConfigError;
use crate::features::{FillValue, InputFeed};
use crate::ledger::Lineage;
use crate::model::{Binding, BoundOutput, Located, Model, Pinned, locate};
use crate::monitor::profile::Profile;
use crate::sink::{ResultType, ResultsTable};
use crate::source::{CellType, FeatureNeed, SourceShape, kind_name};
use crate::spec::{JobSpec, ModelSource};

#[derive(Debug)]
pub struct PreparedJob {
    pub spec: JobSpec,
    pub model: Model,
    /// Which feature columns feed which model input.
    pub inputs: Vec<InputFeed>,
    pub outputs: Vec<BoundOutput>,
    /// `bad_rows.fill` per feature, in the element type of the input the feature feeds.
    pub fill: Vec<Option<FillValue>>,
    pub shape: SourceShape,
    pub results: ResultsTable,
    /// `[challenger]`, when the job has one: ready to score, or why it cannot (the model scores
    /// anyway, and each window's ledger row says why the challenger did not).
    pub challenger: Option<Result<Challenger, String>>,
    /// The challenger's results table as it was when the job was prepared (described, with its
    /// lineage, whether or not the challenger's model loads: `compare` and `evaluate` read the
    /// rows it wrote before). `None` for a job without a challenger.
    pub challenger_table: Option<ResultsTable>,
}

/// The models a job names, found (a registry's fetched into the cache), not yet loaded.
struct Found {
    model: Located,
    /// A challenger that cannot be found is no reason not to run: its problem, as text.
    challenger: Option<Result<Located, String>>,
}

impl Found {
    async fn locate(spec: &JobSpec) -> anyhow::Result<Found> {
        let model = locate(&spec.name, &spec.model).await?;
        let challenger = match &spec.challenger {
            Some(c) => Some(
                locate(&spec.name, &c.model)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            None => None,
        };
        Ok(Found { model, challenger })
    }

    /// Why the registry was not asked (it could not be reached), for each model it applies to.
    fn registry_errors(&self) -> Vec<String> {
        let challenger = self.challenger.as_ref().and_then(|c| c.as_ref().ok());
        [Some(&self.model), challenger]
            .into_iter()
            .flatten()
            .filter_map(|l| l.registry_error.clone())
            .collect()
    }
}

/// Check everything that can be checked without scoring; every failure is a [`ConfigError`]
/// naming the job and the thing that is wrong.
pub async fn prepare<B: Backend>(db: &B, spec: JobSpec) -> anyhow::Result<Arc<PreparedJob>> {
    let found = Found::locate(&spec).await?;
    prepare_found(db, spec, found).await
}

/// For a daemon's job whose models come from a registry: resolve them again, as every run does
/// before its first window, and prepare the job again if a version changed; otherwise the job
/// as it is. With it, why the registry was not asked, if it could not be reached (the job's last
/// resolution was used from the cache).
pub async fn refresh<B: Backend>(
    db: &B,
    job: &Arc<PreparedJob>,
) -> anyhow::Result<(Arc<PreparedJob>, Vec<String>)> {
    let spec = &job.spec;
    let from_registry = |source: &ModelSource| matches!(source, ModelSource::Registry(_));
    let challenger_spec = spec.challenger.as_ref().map(|c| &c.model.source);
    if !from_registry(&spec.model.source) && !challenger_spec.is_some_and(from_registry) {
        return Ok((Arc::clone(job), Vec::new()));
    }
    let found = Found::locate(spec).await?;
    let errors = found.registry_errors();
    let same_model = found
        .model
        .sha256
        .as_ref()
        .is_none_or(|sha| *sha == job.model.sha256);
    let same_challenger = match (&found.challenger, &job.challenger) {
        (None, None) => true,
        (Some(Ok(found)), Some(Ok(loaded))) => found
            .sha256
            .as_ref()
            .is_none_or(|sha| *sha == loaded.model.sha256),
        _ => false,
    };
    if same_model && same_challenger {
        return Ok((Arc::clone(job), errors));
    }
    let prepared = prepare_found(db, spec.clone(), found).await?;
    tracing::info!(job = %spec.name, model = %prepared.model.origin, sha256 = %prepared.model.sha256, "the job's registry model changed: this run scores with the new version");
    Ok((prepared, errors))
}

async fn prepare_found<B: Backend>(
    db: &B,
    spec: JobSpec,
    found: Found,
) -> anyhow::Result<Arc<PreparedJob>> {
    let job = spec.name.clone();
    let fail = |problem: String| ConfigError::job(&job, problem);

    let pinned = Pinned::of("model.sha256", &spec.model.sha256);
    let model = Model::open_blocking(&job, found.model, pinned).await?;
    let binding = match model.bind(&spec) {
        Ok(binding) => binding,
        // A model ONNX Runtime cannot load is that, before it is a model that does not fit.
        Err(problem) => {
            tokio::task::spawn_blocking(move || model.ready()).await??;
            return Err(fail(problem).into());
        }
    };
    let needs = feature_needs(&spec, &binding.inputs);
    let fill = spec
        .bad_rows
        .fill
        .iter()
        .zip(&spec.source.features)
        .zip(&needs)
        .map(|((fill, column), need)| {
            fill.as_ref()
                .map(|f| {
                    FillValue::new(f, need.element).map_err(|p| {
                        fail(format!(
                            "bad_rows.fill.{column}: {p} (`{column}` feeds model input `{}`)",
                            need.input
                        ))
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let columns = db
        .describe_source(&spec)
        .await
        .context("describing the job's source")?;
    let shape = SourceShape::check(&spec, &columns, B::timestamp_ok, &needs).map_err(fail)?;

    let result_columns = binding
        .outputs
        .iter()
        .map(|o| (o.spec.column.clone(), o.result_type))
        .collect();
    let mut results = ResultsTable::new(&spec, shape.key, result_columns);
    if let Some(existing) = db.table_columns(&results.table).await? {
        results = results.described_as(existing);
        results
            .check_columns(<B::Tx as WindowTx>::holds)
            .map_err(fail)?;
    }
    let challenger_table = match &spec.challenger {
        None => None,
        Some(challenger) => {
            let table = results.elsewhere(challenger.table.clone());
            let existing = db
                .table_columns(&table.table)
                .await
                .context("describing the challenger's table")?;
            Some(match existing {
                Some(existing) => table.described_as(existing),
                None => table,
            })
        }
    };
    let challenger = match (found.challenger, &challenger_table) {
        (Some(located), Some(table)) => {
            let prepared = prepare_challenger::<B>(&spec, located, &binding, table).await;
            if let Err(problem) = &prepared {
                tracing::warn!(job = %job, problem = %problem, "the challenger cannot score: the model's windows are scored without it");
            }
            Some(prepared)
        }
        _ => None,
    };
    Ok(Arc::new(PreparedJob {
        spec,
        model,
        inputs: binding.inputs,
        outputs: binding.outputs,
        fill,
        shape,
        results,
        challenger,
        challenger_table,
    }))
}

/// The challenger, loaded and bound as the champion is, with its results table checked; or why
/// it cannot score.
async fn prepare_challenger<B: Backend>(
    spec: &JobSpec,
    located: Result<Located, String>,
    champion: &Binding,
    table: &ResultsTable,
) -> Result<Challenger, String> {
    let challenger_spec = spec.challenger.as_ref().expect("the job has a challenger");
    let pinned = Pinned::of("challenger.sha256", &challenger_spec.model.sha256);
    let model = Model::open_blocking(&spec.name, located?, pinned)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let binding = model.bind(spec)?;
    check_binding(champion, &binding)?;
    table.check_columns(<B::Tx as WindowTx>::holds)?;
    Ok(Challenger {
        model,
        outputs: binding.outputs,
        results: table.clone(),
    })
}

impl PreparedJob {
    /// Build the models' ONNX Runtime sessions now; a run otherwise builds them before its first
    /// window with a row (a due window with none needs no session). The model's refusal is the
    /// error; the challenger's is returned as its problem (a run scores without it, and each
    /// window's ledger row says why).
    pub async fn load_models(self: &Arc<Self>) -> anyhow::Result<Option<String>> {
        let job = Arc::clone(self);
        let loading = move || -> Result<Option<String>, ConfigError> {
            job.model.ready()?;
            let challenger = match &job.challenger {
                Some(Ok(challenger)) => challenger.model.ready().err(),
                _ => None,
            };
            Ok(challenger.map(|refused| match refused {
                ConfigError::Job { problem, .. } => problem,
                other => other.to_string(),
            }))
        };
        Ok(tokio::task::spawn_blocking(loading).await??)
    }

    /// How many of its models were taken from the cache because the registry could not be
    /// reached when the job was prepared.
    pub fn registry_errors(&self) -> u64 {
        let challenger = self.challenger.as_ref().and_then(|c| c.as_ref().ok());
        let models = std::iter::once(&self.model).chain(challenger.map(|c| &c.model));
        models.filter(|m| m.registry_error.is_some()).count() as u64
    }

    /// What scores this job's windows, as each window's ledger row records it.
    pub fn lineage(&self) -> Lineage {
        let (challenger_sha256, challenger_source, challenger_error) = match &self.challenger {
            None => (None, None, None),
            Some(Ok(c)) => (
                Some(c.model.sha256.clone()),
                Some(c.model.origin.to_string()),
                None,
            ),
            Some(Err(problem)) => (
                None,
                None,
                Some(format!("the challenger cannot score: {problem}")),
            ),
        };
        Lineage {
            model_sha256: self.model.sha256.clone(),
            model_source: Some(self.model.origin.to_string()),
            challenger_sha256,
            challenger_source,
            challenger_error,
        }
    }

    /// An empty profile of this job's features (numeric when read as numbers) and result columns
    /// (numeric when stored as numbers), and its challenger's, for drift monitoring to fill as
    /// chunks stream.
    pub fn empty_profile(&self) -> Profile {
        let features =
            self.spec
                .source
                .features
                .iter()
                .zip(&self.shape.cells)
                .map(|(name, cell)| {
                    let numeric = matches!(cell, CellType::Float | CellType::Integer);
                    (name.as_str().to_owned(), numeric)
                });
        let outputs = self.results.outputs.iter().map(|(name, kind)| {
            let numeric = matches!(kind, ResultType::Float | ResultType::Integer);
            (name.as_str().to_owned(), numeric)
        });
        let profile = Profile::new(features, outputs.clone());
        match &self.challenger {
            Some(Ok(_)) => profile.with_challenger(outputs),
            _ => profile,
        }
    }

    /// One line per model input (its type and the columns that feed it) and per result column
    /// (the output that fills it and the stored type), for `jobs validate` and `--dry-run`.
    pub fn describe_io(&self) -> Vec<String> {
        let features = &self.spec.source.features;
        let inputs = self.inputs.iter().map(|feed| {
            let columns: Vec<String> = feed
                .columns
                .iter()
                .map(|&c| format!("{} ({})", features[c], kind_name(&self.shape.features[c])))
                .collect();
            (
                "input ",
                feed.name.clone(),
                self.model.describe(&feed.name),
                format!("<- {}", columns.join(", ")),
            )
        });
        let outputs = self.outputs.iter().map(|output| {
            (
                "output",
                output.spec.reference(),
                self.model.describe(&output.spec.output),
                format!("-> {} ({})", output.spec.column, output.result_type.name()),
            )
        });
        let rows: Vec<_> = inputs.chain(outputs).collect();
        let name_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let type_width = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
        rows.into_iter()
            .map(|(what, name, ty, to)| {
                format!("{what} {name:name_width$}  {ty:type_width$}  {to}")
            })
            .collect()
    }
}

/// Per feature, in `source.features` order: the input it feeds and that input's type.
fn feature_needs(spec: &JobSpec, inputs: &[InputFeed]) -> Vec<FeatureNeed> {
    spec.source
        .features
        .iter()
        .enumerate()
        .map(|(c, _)| {
            let feed = inputs
                .iter()
                .find(|feed| feed.columns.contains(&c))
                .expect("binding feeds every feature to one input");
            FeatureNeed {
                input: feed.name.clone(),
                element: feed.element,
            }
        })
        .collect()
}
