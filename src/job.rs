//! A job ready to run: its checked spec, its loaded model, and what the database says about its
//! source and results table, all matched against each other before any row is read.
//!
//! `jobs validate` runs exactly [`prepare`]; so does every run before it plans its window.

use std::sync::Arc;

use crate::db::Backend;
use crate::error::ConfigError;
use crate::model::{BoundOutput, Model};
use crate::sink::ResultsTable;
use crate::source::SourceShape;
use crate::spec::JobSpec;

#[derive(Debug)]
pub struct PreparedJob {
    pub spec: JobSpec,
    pub model: Model,
    pub outputs: Vec<BoundOutput>,
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
    let outputs = model.bind(&spec).map_err(fail)?;

    let columns = db.describe_source(&spec).await.map_err(fail)?;
    let shape = SourceShape::check(&spec, &columns, B::timestamp_ok).map_err(fail)?;

    let mut results = ResultsTable::new(&spec, shape.key, &outputs);
    results.existing = db.table_columns(&results.table).await?;
    if let Some(existing) = &results.existing {
        results.check_existing(existing).map_err(fail)?;
    }
    Ok(Arc::new(PreparedJob {
        spec,
        model,
        outputs,
        shape,
        results,
    }))
}
