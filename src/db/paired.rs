//! The model's and the challenger's results side by side: the rows of the same windows (the
//! same run ids: a window's two tables are written with one) joined on the key, for
//! `batchscore compare`. Written once for every backend (see [`super::dialect`]).

use anyhow::Context;

use super::dialect::{self, Dialect};
use super::lineage::{run_params, same_run};
use crate::ident::Ident;
use crate::ledger::RunRef;
use crate::sink::{ResultType, ResultsTable};

/// One result column's values for the rows both tables hold: (model, challenger).
#[derive(Debug, Clone, PartialEq)]
pub enum PairedValues {
    Numbers(Vec<(f64, f64)>),
    Labels(Vec<(String, String)>),
}

/// For each of `results`' output columns, in order, the pairs of values `results.table` and
/// `challenger` hold for the same key in the windows `runs` wrote. Numbers are read as
/// doubles; labels (integers, text, booleans) as text. Rows where either value is null are left
/// out.
pub(crate) async fn paired_results<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    results: &ResultsTable,
    challenger: &ResultsTable,
    runs: &[RunRef],
) -> anyhow::Result<Vec<PairedValues>> {
    let mut paired: Vec<PairedValues> = results
        .outputs
        .iter()
        .map(|(_, kind)| match kind {
            ResultType::Float => PairedValues::Numbers(Vec::new()),
            _ => PairedValues::Labels(Vec::new()),
        })
        .collect();
    if runs.is_empty() {
        return Ok(paired);
    }
    let cast = |side: &str, column: &Ident, kind: ResultType| {
        let to = match kind {
            ResultType::Float => DB::DOUBLE,
            _ => DB::TEXT,
        };
        format!("CAST({side}.{} AS {to})", DB::column(column))
    };
    let selected: Vec<String> = results
        .outputs
        .iter()
        .enumerate()
        .flat_map(|(i, (column, kind))| {
            [
                format!("{} AS m{i}", cast("m", column, *kind)),
                format!("{} AS c{i}", cast("c", column, *kind)),
            ]
        })
        .collect();
    let key = DB::column(&results.key);
    let ids = dialect::placeholders(1, runs.len());
    let sql = format!(
        "SELECT {} FROM {} m JOIN {} c ON c.{key} = m.{key} AND {} WHERE m.{} IN ({})",
        selected.join(", "),
        DB::table(&results.table),
        DB::table(&challenger.table),
        same_run(("m", results.lineage), ("c", challenger.lineage)),
        results.lineage.run_column(),
        ids.join(", ")
    );
    let params = run_params(results.lineage, runs);
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .with_context(|| {
            format!(
                "reading {} and {} side by side",
                results.table, challenger.table
            )
        })?;
    for row in &rows {
        for (i, values) in paired.iter_mut().enumerate() {
            let (m, c) = (format!("m{i}"), format!("c{i}"));
            match values {
                PairedValues::Numbers(pairs) => {
                    if let (Some(a), Some(b)) = (DB::float(row, &m)?, DB::float(row, &c)?) {
                        pairs.push((a, b));
                    }
                }
                PairedValues::Labels(pairs) => {
                    if let (Some(a), Some(b)) = (DB::text(row, &m)?, DB::text(row, &c)?) {
                        pairs.push((a, b));
                    }
                }
            }
        }
    }
    Ok(paired)
}
