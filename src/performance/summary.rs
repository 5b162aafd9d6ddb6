//! What `monitor`, `status` and `/metrics` show of realized performance: the latest final
//! window's figures and a rolling 7-day figure per model and metric, from the stored figures.

use std::collections::HashMap;

use super::metrics;
use crate::db::Backend;
use crate::db::performance::{self as store, StoredFigure};
use crate::plan::Window;

/// The latest final window's figures and a rolling 7-day figure per model and metric: what
/// `monitor`, `status` and `/metrics` show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// The latest final window.
    #[serde(skip)]
    pub window: Option<Window>,
    /// (model, metric, latest window's value, the 7 days' value), in metric order.
    pub figures: Vec<SummaryFigure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryFigure {
    pub model: String,
    pub metric: String,
    pub latest: Option<f64>,
    /// The 7 days' windows' values, weighted by their labelled rows (a mean of windows' AUCs,
    /// not an AUC of the week's rows).
    pub rolling_7d: Option<f64>,
}

impl Summary {
    pub fn latest(&self, model: &str, metric: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.model == model && f.metric == metric)
            .and_then(|f| f.latest)
    }
}

/// The job's [`Summary`] from its stored final figures.
pub async fn summary<B: Backend>(db: &B, job: &str) -> anyhow::Result<Summary> {
    let stored = store::recent_final(db.pool(), job, 7).await?;
    Ok(summarize(&stored))
}

fn summarize(stored: &[StoredFigure]) -> Summary {
    let Some(latest_end) = stored.iter().map(|f| f.window.end).max() else {
        return Summary::default();
    };
    // Each (shard, window, model)'s labelled rows: the weight of its other figures.
    let weight: HashMap<(u32, Window, &str), f64> = stored
        .iter()
        .filter(|f| f.metric == "labelled")
        .map(|f| {
            (
                (f.shard, f.window, f.model.as_str()),
                f.value.unwrap_or(0.0),
            )
        })
        .collect();
    let mut order: Vec<(&str, &str)> = Vec::new();
    // (model, metric) → (latest: sum, weight), (rolling: sum, weight)
    let mut sums: HashMap<(&str, &str), [(f64, f64); 2]> = HashMap::new();
    for f in stored {
        let Some(value) = f.value else { continue };
        let w = match is_count(&f.metric) {
            true => 1.0,
            false => *weight
                .get(&(f.shard, f.window, f.model.as_str()))
                .unwrap_or(&0.0),
        };
        let key = (f.model.as_str(), f.metric.as_str());
        if !sums.contains_key(&key) {
            order.push(key);
        }
        let entry = sums.entry(key).or_insert([(0.0, 0.0); 2]);
        entry[1].0 += value * w;
        entry[1].1 += w;
        if f.window.end == latest_end {
            entry[0].0 += value * w;
            entry[0].1 += w;
        }
    }
    let rank = |metric: &str| {
        metrics::CLASSIFICATION
            .iter()
            .chain(metrics::REGRESSION.iter())
            .position(|m| *m == metric)
            .unwrap_or(usize::MAX)
    };
    order.sort_by_key(|(model, metric)| (*model != "champion", rank(metric)));
    let latest_window = stored
        .iter()
        .find(|f| f.window.end == latest_end)
        .map(|f| f.window);
    Summary {
        window: latest_window,
        figures: order
            .into_iter()
            .map(|(model, metric)| {
                let [(ls, lw), (rs, rw)] = sums[&(model, metric)];
                let mean = |s: f64, w: f64| match (is_count(metric), w > 0.0) {
                    (true, _) => Some(s),
                    (false, true) => Some(s / w),
                    (false, false) => None,
                };
                SummaryFigure {
                    model: model.to_owned(),
                    metric: metric.to_owned(),
                    latest: mean(ls, lw),
                    rolling_7d: mean(rs, rw),
                }
            })
            .collect(),
    }
}

/// Whether a metric counts rows (summed over shards) rather than measures them (weighted by
/// their labelled rows).
fn is_count(metric: &str) -> bool {
    matches!(metric, "labelled" | "scored" | "duplicate_labels")
}
