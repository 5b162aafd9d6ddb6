//! A job ready to run: its checked spec, its loaded model, and what the database says about its
//! source and results table, all matched against each other before any row is read.
//!
//! `jobs validate` runs exactly [`prepare`]; so does every run before it plans its window.

use anyhow::Context;
use std::sync::Arc;

use crate::db::{Backend, WindowTx};
use crate::error::ConfigError;
use crate::features::{FillValue, InputFeed};
use crate::model::{BoundOutput, Model};
use crate::monitor::profile::Profile;
use crate::sink::{ResultType, ResultsTable};
use crate::source::{CellType, FeatureNeed, SourceShape, kind_name};
use crate::spec::JobSpec;

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
}

/// Check everything that can be checked without scoring; every failure is a [`ConfigError`]
/// naming the job and the thing that is wrong.
pub async fn prepare<B: Backend>(db: &B, spec: JobSpec) -> anyhow::Result<Arc<PreparedJob>> {
    let job = spec.name.clone();
    let fail = |problem: String| ConfigError::job(&job, problem);

    // The model is loaded off the async threads: ONNX Runtime's session setup is CPU work.
    let (spec, model) =
        tokio::task::spawn_blocking(move || Model::load(&spec).map(|model| (spec, model)))
            .await??;
    let binding = model.bind(&spec).map_err(fail)?;
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
    results.existing = db.table_columns(&results.table).await?;
    if let Some(existing) = &results.existing {
        results
            .check_columns(existing, <B::Tx as WindowTx>::holds)
            .map_err(fail)?;
    }
    Ok(Arc::new(PreparedJob {
        spec,
        model,
        inputs: binding.inputs,
        outputs: binding.outputs,
        fill,
        shape,
        results,
    }))
}

impl PreparedJob {
    /// An empty profile of this job's features (numeric when read as numbers) and result columns
    /// (numeric when stored as numbers), for drift monitoring to fill as chunks stream.
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
        Profile::new(features, outputs)
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
