//! Drift scores of a window's profile against a reference profile, and the judgement of each
//! column against the job's thresholds.
//!
//! - Numeric columns: the population stability index over the reference's quantile bins
//!   (deciles by default): `PSI = Σ (q − p) · ln(q / p)`, with p the reference's share of a bin
//!   and q the window's.
//! - Categories (text and boolean columns): the Jensen–Shannon distance, base 2 (0 = the same
//!   distribution, 1 = no category in common), over the categories either side counts among its
//!   most frequent, plus one bucket for all the others.
//! - Every column: the change of the null rate; numeric outputs: the change of the mean, in
//!   the reference's standard deviations.
//!
//! Bins: edges are the reference's quantiles at i/bins (inclusive: the smallest value with at
//! least that share at or below it), deduplicated, so bins are `(-inf, e1], (e1, e2], …,
//! (e_last, inf)`: a window's values outside the reference's range land in the end bins.
//! Smoothing: each bin's count gets half a row (`p = (count + 0.5) / (rows + 0.5 · bins)`), so
//! an empty bin gives a large but finite PSI, and a bin of a few rows does not dominate.

use datasketches::common::SearchCriteria;
use datasketches::kll::KllFloat;
use serde::Serialize;

use super::profile::{
    ColumnProfile, Numeric, Profile, Role, TOP_CATEGORIES, Values, top_categories,
};
use crate::spec::monitor::{MonitorSpec, Thresholds};

/// Half a row per bin: see the module's documentation.
pub const SMOOTHING: f64 = 0.5;

/// How a column compares with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Beyond a threshold.
    Drift,
    Ok,
    /// Fewer usable values than `min_rows` in the window or the reference.
    TooFewRows,
    /// The reference has no profile of this column (new, or of another kind).
    NoReference,
}

impl DriftState {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftState::Drift => "drift",
            DriftState::Ok => "ok",
            DriftState::TooFewRows => "too few rows",
            DriftState::NoReference => "no reference",
        }
    }
}

/// One column's drift scores and state.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    pub column: String,
    pub role: Role,
    pub kind: &'static str,
    /// `psi` or `js`.
    pub measure: &'static str,
    pub score: Option<f64>,
    pub threshold: f64,
    pub null_rate: f64,
    pub reference_null_rate: Option<f64>,
    pub null_rate_threshold: f64,
    /// Numeric outputs: (window mean − reference mean) / reference standard deviation.
    pub mean_shift: Option<f64>,
    pub mean_shift_threshold: Option<f64>,
    pub state: DriftState,
    /// Which measures are beyond their thresholds (`psi`, `js`, `null rate`, `mean shift`).
    pub over: Vec<&'static str>,
    /// Each, with its values.
    pub reasons: Vec<String>,
    /// What the score was computed from: bins (numeric) or categories, each side's share.
    pub distribution: Option<Distribution>,
    /// How far past its threshold the worst measure is (score / threshold): the sort order.
    pub severity: f64,
}

/// The two distributions a score compares.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// Bin upper edges (numeric; the last bin is open), or category labels (the last is
    /// "(other)").
    pub labels: Vec<String>,
    /// Counts in each bin or category: the reference's, then the window's (from the sketches:
    /// whole numbers while the sketch is exact).
    pub reference: Vec<f64>,
    pub window: Vec<f64>,
}

/// Every column of a window, worst first.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub columns: Vec<ColumnDrift>,
}

impl DriftReport {
    /// The columns in drift.
    pub fn drifted(&self) -> impl Iterator<Item = &ColumnDrift> {
        self.columns.iter().filter(|c| c.state == DriftState::Drift)
    }

    /// "vibration psi 2.31 > 0.2; failure_probability mean shift 1.2σ > 0.2σ"
    pub fn summary(&self) -> String {
        self.drifted()
            .map(|c| format!("{}: {}", c.column, c.reasons.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Each column of `profile` and the threshold its score is judged against.
pub fn thresholds(profile: &Profile, t: &Thresholds) -> Vec<(Role, String, f64)> {
    profile
        .columns
        .iter()
        .map(|c| {
            let threshold = match c.values {
                Values::Numeric(_) => t.psi,
                Values::Category(_) => t.js,
            };
            (c.role, c.column.clone(), threshold)
        })
        .collect()
}

/// Compare `window` with `reference` column by column.
pub fn compare(window: &Profile, reference: &Profile, spec: &MonitorSpec) -> DriftReport {
    let mut columns: Vec<ColumnDrift> = window
        .columns
        .iter()
        .map(|column| judge(column, reference.column(column.role, &column.column), spec))
        .collect();
    columns.sort_by(|a, b| {
        a.state
            .cmp(&b.state)
            .then(b.severity.total_cmp(&a.severity))
            .then(a.column.cmp(&b.column))
    });
    DriftReport { columns }
}

fn judge(
    window: &ColumnProfile,
    reference: Option<&ColumnProfile>,
    spec: &MonitorSpec,
) -> ColumnDrift {
    let mut drift = unjudged(window, spec);
    let Some(reference) = reference.filter(|r| r.kind() == window.kind()) else {
        return drift;
    };
    drift.reference_null_rate = Some(reference.null_rate());
    if window.rows < spec.min_rows || reference.rows < spec.min_rows {
        drift.state = DriftState::TooFewRows;
        return drift;
    }
    let thresholds = &spec.thresholds;
    let mut severities = Vec::new();
    let null_change = (window.null_rate() - reference.null_rate()).abs();
    severities.push(null_change / thresholds.null_rate);
    if null_change > thresholds.null_rate {
        drift.over.push("null rate");
        drift.reasons.push(format!(
            "null rate {:.1}% (reference {:.1}%)",
            window.null_rate() * 100.0,
            reference.null_rate() * 100.0
        ));
    }
    let enough = window.valid() >= spec.min_rows && reference.valid() >= spec.min_rows;
    match (&window.values, &reference.values) {
        (Values::Numeric(w), Values::Numeric(r)) if enough => {
            severities.extend(drift.judge_numbers(w, r, spec));
        }
        (Values::Category(w), Values::Category(r)) if enough => {
            let distribution = category_shares(r, w);
            let score = js_distance(&distribution.reference, &distribution.window);
            drift.score = Some(score);
            drift.distribution = Some(distribution);
            severities.push(score / thresholds.js);
            if score > thresholds.js {
                drift.over.push("js");
                drift
                    .reasons
                    .push(format!("js {score:.3} > {}", thresholds.js));
            }
        }
        _ => {}
    }
    drift.severity = severities.into_iter().fold(0.0, f64::max);
    drift.state = match (drift.reasons.is_empty(), drift.score.is_some()) {
        (false, _) => DriftState::Drift,
        (true, true) => DriftState::Ok,
        // Too few usable values to score, and the null rate has not moved.
        (true, false) => DriftState::TooFewRows,
    };
    drift
}

/// A column's drift before it is compared with anything: its measure and thresholds.
fn unjudged(window: &ColumnProfile, spec: &MonitorSpec) -> ColumnDrift {
    let Thresholds {
        psi,
        js,
        null_rate,
        mean_shift,
    } = spec.thresholds;
    let numeric = matches!(window.values, Values::Numeric(_));
    let is_output = window.role == Role::Output;
    ColumnDrift {
        column: window.column.clone(),
        role: window.role,
        kind: window.kind(),
        measure: if numeric { "psi" } else { "js" },
        score: None,
        threshold: if numeric { psi } else { js },
        null_rate: window.null_rate(),
        reference_null_rate: None,
        null_rate_threshold: null_rate,
        mean_shift: None,
        mean_shift_threshold: (numeric && is_output).then_some(mean_shift),
        state: DriftState::NoReference,
        over: Vec::new(),
        reasons: Vec::new(),
        distribution: None,
        severity: 0.0,
    }
}

impl ColumnDrift {
    /// A numeric column against its reference: PSI over the reference's quantile bins, and for
    /// an output the shift of its mean in the reference's standard deviations. The severities
    /// (each score over its threshold).
    fn judge_numbers(&mut self, w: &Numeric, r: &Numeric, spec: &MonitorSpec) -> Vec<f64> {
        let Thresholds {
            psi, mean_shift, ..
        } = spec.thresholds;
        let mut severities = Vec::new();
        let distribution = quantile_bins(r, w, spec.bins);
        let score = psi_of(&distribution.reference, &distribution.window);
        self.score = Some(score);
        self.distribution = Some(distribution);
        severities.push(score / psi);
        if score > psi {
            self.over.push("psi");
            self.reasons.push(format!("psi {score:.3} > {psi}"));
        }
        if self.role == Role::Output {
            let std = r.std();
            let shift = match std > 0.0 {
                true => (w.mean - r.mean) / std,
                false if w.mean == r.mean => 0.0,
                false => f64::INFINITY.copysign(w.mean - r.mean),
            };
            self.mean_shift = Some(shift);
            severities.push(shift.abs() / mean_shift);
            if shift.abs() > mean_shift {
                self.over.push("mean shift");
                self.reasons.push(format!(
                    "mean {:.4} (reference {:.4}, {shift:+.2}σ)",
                    w.mean, r.mean
                ));
            }
        }
        severities
    }
}

/// Counts of the reference and the window in the reference's quantile bins.
fn quantile_bins(reference: &Numeric, window: &Numeric, bins: usize) -> Distribution {
    let mut edges: Vec<KllFloat<f64>> = Vec::with_capacity(bins - 1);
    for i in 1..bins {
        let rank = i as f64 / bins as f64;
        if let Ok(Some(edge)) = reference.sketch.quantile(rank, SearchCriteria::Inclusive)
            && edges.last().is_none_or(|last| *last < edge)
        {
            edges.push(edge);
        }
    }
    // The sketch's ranks are its retained weights over n, all whole numbers: rounding rank × n
    // gives back exact counts (of the sketch's, exact while it holds every value).
    let counts = |numeric: &Numeric| -> Vec<f64> {
        let n = numeric.sketch.n() as f64;
        match numeric.sketch.cdf(&edges, SearchCriteria::Inclusive) {
            Ok(Some(ranks)) => {
                let below: Vec<f64> = ranks.into_iter().map(|rank| (rank * n).round()).collect();
                (0..below.len())
                    .map(|i| below[i] - if i == 0 { 0.0 } else { below[i - 1] })
                    .collect()
            }
            _ => vec![0.0; edges.len() + 1],
        }
    };
    let mut labels: Vec<String> = edges
        .iter()
        .map(|e| format!("<= {}", e.into_inner()))
        .collect();
    labels.push(match edges.last() {
        Some(last) => format!("> {}", last.into_inner()),
        None => "all".to_owned(),
    });
    Distribution {
        labels,
        reference: counts(reference),
        window: counts(window),
    }
}

/// Counts of the reference and the window over the categories either counts among its
/// [`TOP_CATEGORIES`] most frequent, then the rest as one.
fn category_shares(
    reference: &datasketches::frequencies::FrequentItemsSketch<String>,
    window: &datasketches::frequencies::FrequentItemsSketch<String>,
) -> Distribution {
    let mut labels: Vec<String> = top_categories(reference, TOP_CATEGORIES)
        .into_iter()
        .chain(top_categories(window, TOP_CATEGORIES))
        .map(|(label, _)| label)
        .collect();
    labels.sort();
    labels.dedup();
    let counts = |sketch: &datasketches::frequencies::FrequentItemsSketch<String>| {
        let mut counts: Vec<f64> = labels
            .iter()
            .map(|label| sketch.estimate(label.as_str()) as f64)
            .collect();
        let counted: f64 = counts.iter().sum();
        counts.push((sketch.total_weight() as f64 - counted).max(0.0));
        counts
    };
    let (reference, window) = (counts(reference), counts(window));
    labels.push("(other)".to_owned());
    Distribution {
        labels,
        reference,
        window,
    }
}

/// Population stability index of two binned counts, each bin smoothed by [`SMOOTHING`] rows.
pub fn psi_of(reference: &[f64], window: &[f64]) -> f64 {
    let smoothed = |counts: &[f64]| -> Vec<f64> {
        let total: f64 = counts.iter().sum::<f64>() + SMOOTHING * counts.len() as f64;
        counts.iter().map(|c| (c + SMOOTHING) / total).collect()
    };
    let (p, q) = (smoothed(reference), smoothed(window));
    p.iter().zip(&q).map(|(p, q)| (q - p) * (q / p).ln()).sum()
}

/// Jensen–Shannon distance (base 2) of two counts over the same categories: the square root of
/// the mean of each side's Kullback–Leibler divergence from their average. Needs no smoothing.
pub fn js_distance(reference: &[f64], window: &[f64]) -> f64 {
    let shares = |counts: &[f64]| -> Vec<f64> {
        let total: f64 = counts.iter().sum();
        counts
            .iter()
            .map(|c| c / total.max(f64::MIN_POSITIVE))
            .collect()
    };
    let (p, q) = (shares(reference), shares(window));
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, m)| a * (a / m).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let divergence = (kl(&p, &m) + kl(&q, &m)) / 2.0;
    divergence.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from numpy and scipy on the same counts:
    /// ```python
    /// import numpy as np
    /// from scipy.spatial.distance import jensenshannon
    /// r = np.array([100., 120, 90, 0, 50]); w = np.array([80., 100, 140, 10, 3])
    /// p = (r + .5) / (r.sum() + .5 * len(r)); q = (w + .5) / (w.sum() + .5 * len(w))
    /// print(repr(((q - p) * np.log(q / p)).sum()), repr(jensenshannon(r, w, base=2)))
    /// ```
    #[test]
    fn psi_and_js_match_numpy_and_scipy() {
        let r = [100., 120., 90., 0., 50.];
        let w = [80., 100., 140., 10., 3.];
        let psi = psi_of(&r, &w);
        let js = js_distance(&r, &w);
        assert!((psi - PSI_EXPECTED).abs() < 1e-12, "{psi}");
        assert!((js - JS_EXPECTED).abs() < 1e-12, "{js}");
        assert_eq!(psi_of(&r, &r), 0.0);
        assert_eq!(js_distance(&r, &r), 0.0);
        // Disjoint distributions are as far apart as base-2 JS goes.
        assert!((js_distance(&[1., 0.], &[0., 1.]) - 1.0).abs() < 1e-12);
    }

    const PSI_EXPECTED: f64 = 0.5237177221129874;
    const JS_EXPECTED: f64 = 0.2861522193880825;
}
