//! A challenger: a second model scoring the same windows as the job's model (the champion),
//! from the same decoded features, into a results table of its own in the same window
//! transaction. It never stops the champion: a challenger that cannot load, bind or score has
//! that window's rows skipped, with a warning, a counter and a note in the ledger.
//!
//! Also how the two compare: per window as they score ([`Agreement`], for the daemon's metrics),
//! and over committed windows for `batchscore compare` ([`compare_numbers`], [`compare_labels`]).

use std::collections::BTreeMap;

use polars::prelude::{ChunkCompareEq, Column};

use crate::model::{Binding, BoundOutput, Model};
use crate::sink::{ResultType, ResultsTable};

/// A challenger ready to score: its model, its outputs bound as the champion's are, and its
/// results table.
#[derive(Debug)]
pub struct Challenger {
    pub model: Model,
    pub outputs: Vec<BoundOutput>,
    pub results: ResultsTable,
}

/// Refuse a challenger whose inputs do not bind exactly as the champion's (same inputs, fed by
/// the same columns, of the same types) or whose outputs would not fill the same result
/// columns with the same types: it must score the same tensors, into the same shape of table.
pub fn check_binding(champion: &Binding, challenger: &Binding) -> Result<(), String> {
    if challenger.inputs != champion.inputs {
        let describe = |b: &Binding| {
            b.inputs
                .iter()
                .map(|i| {
                    format!(
                        "{} ({}, {} column(s))",
                        i.name,
                        i.element.name(),
                        i.columns.len()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "its inputs do not bind as the model's do: the model takes {}, the challenger {}",
            describe(champion),
            describe(challenger)
        ));
    }
    for (mine, theirs) in challenger.outputs.iter().zip(&champion.outputs) {
        if mine.result_type != theirs.result_type {
            return Err(format!(
                "output {} would fill result column `{}` with {}, the model's with {}",
                mine.spec.reference(),
                mine.spec.column,
                mine.result_type.name(),
                theirs.result_type.name()
            ));
        }
    }
    Ok(())
}

/// How far the challenger agreed with the champion on one window, per result column: for
/// numbers the mean absolute difference, for labels (integers, text, booleans) the share of
/// rows given the same label. Only rows both scored count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    pub columns: Vec<ColumnAgreement>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnAgreement {
    pub column: String,
    pub numeric: bool,
    /// Rows where both models gave a value.
    pub pairs: u64,
    /// Labels: rows with the same label.
    pub agreeing: u64,
    /// Numbers: the sum of the absolute differences.
    pub abs_diff: f64,
}

impl ColumnAgreement {
    /// The share of rows with the same label, or the mean absolute difference.
    pub fn value(&self) -> Option<f64> {
        (self.pairs > 0).then(|| match self.numeric {
            true => self.abs_diff / self.pairs as f64,
            false => self.agreeing as f64 / self.pairs as f64,
        })
    }
}

impl Agreement {
    /// An empty agreement over the job's result columns.
    pub fn new(results: &ResultsTable) -> Agreement {
        Agreement {
            columns: results
                .outputs
                .iter()
                .map(|(column, kind)| ColumnAgreement {
                    column: column.as_str().to_owned(),
                    numeric: *kind == ResultType::Float,
                    pairs: 0,
                    agreeing: 0,
                    abs_diff: 0.0,
                })
                .collect(),
        }
    }

    /// Add one chunk: the two models' output columns for the same rows, in result-column order.
    pub fn add(&mut self, champion: &[Column], challenger: &[Column]) {
        for ((column, a), b) in self.columns.iter_mut().zip(champion).zip(challenger) {
            if column.numeric {
                let (Ok(a), Ok(b)) = (a.f64(), b.f64()) else {
                    continue;
                };
                for (a, b) in a.iter().zip(b.iter()) {
                    if let (Some(a), Some(b)) = (a, b)
                        && a.is_finite()
                        && b.is_finite()
                    {
                        column.pairs += 1;
                        column.abs_diff += (a - b).abs();
                    }
                }
            } else {
                let (a, b) = (a.as_materialized_series(), b.as_materialized_series());
                let both = (a.is_not_null() & b.is_not_null()).sum().unwrap_or(0);
                let same = a.equal(b).ok().and_then(|same| same.sum()).unwrap_or(0);
                column.pairs += u64::from(both);
                column.agreeing += u64::from(same);
            }
        }
    }

    pub fn merge(&mut self, other: &Agreement) {
        if self.columns.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.columns.iter_mut().zip(&other.columns) {
            mine.pairs += theirs.pairs;
            mine.agreeing += theirs.agreeing;
            mine.abs_diff += theirs.abs_diff;
        }
    }
}

/// Champion against challenger on numbers, row by row (the same keys of the same windows).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NumberComparison {
    pub rows: usize,
    pub mean_abs_diff: f64,
    pub max_abs_diff: f64,
    /// Pearson's; `None` when either side is constant.
    pub correlation: Option<f64>,
    /// The population stability index between the two distributions, over [`PSI_BINS`]
    /// equal-width bins spanning both.
    pub psi: f64,
}

/// Bins of the PSI between champion and challenger.
pub const PSI_BINS: usize = 10;
/// The share an empty bin counts as, so the PSI stays finite.
const PSI_FLOOR: f64 = 1e-4;

/// Compare two models' numbers on the same rows (`pairs`: champion, challenger).
pub fn compare_numbers(pairs: &[(f64, f64)]) -> Option<NumberComparison> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let diffs = pairs.iter().map(|(a, b)| (a - b).abs());
    let mean_abs_diff = diffs.clone().sum::<f64>() / n;
    let max_abs_diff = diffs.fold(0.0, f64::max);
    let (mean_a, mean_b) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (a, b) in pairs {
        cov += (a - mean_a) * (b - mean_b);
        var_a += (a - mean_a).powi(2);
        var_b += (b - mean_b).powi(2);
    }
    let correlation = (var_a > 0.0 && var_b > 0.0).then(|| cov / (var_a * var_b).sqrt());
    Some(NumberComparison {
        rows: pairs.len(),
        mean_abs_diff,
        max_abs_diff,
        correlation,
        psi: psi(pairs),
    })
}

/// PSI of the challenger's distribution against the champion's, over [`PSI_BINS`] equal-width
/// bins from the smaller minimum to the larger maximum of the two (the last bin closed), each
/// share floored at [`PSI_FLOOR`]. Equal distributions give 0.
fn psi(pairs: &[(f64, f64)]) -> f64 {
    let values = pairs.iter().flat_map(|(a, b)| [*a, *b]);
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(f64::NEG_INFINITY, f64::max);
    if high <= low {
        return 0.0;
    }
    let bin = |v: f64| (((v - low) / (high - low) * PSI_BINS as f64) as usize).min(PSI_BINS - 1);
    let (mut champion, mut challenger) = ([0u64; PSI_BINS], [0u64; PSI_BINS]);
    for (a, b) in pairs {
        champion[bin(*a)] += 1;
        challenger[bin(*b)] += 1;
    }
    let n = pairs.len() as f64;
    champion
        .iter()
        .zip(&challenger)
        .map(|(a, b)| {
            let (a, b) = (
                (*a as f64 / n).max(PSI_FLOOR),
                (*b as f64 / n).max(PSI_FLOOR),
            );
            (b - a) * (b / a).ln()
        })
        .sum()
}

/// Champion against challenger on labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelComparison {
    pub rows: usize,
    pub agreement: f64,
    /// Rows by (champion's label, challenger's label).
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Compare two models' labels on the same rows (`pairs`: champion, challenger).
pub fn compare_labels(pairs: &[(String, String)]) -> Option<LabelComparison> {
    if pairs.is_empty() {
        return None;
    }
    let mut confusion: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut same = 0usize;
    for (a, b) in pairs {
        same += usize::from(a == b);
        *confusion
            .entry(a.clone())
            .or_default()
            .entry(b.clone())
            .or_default() += 1;
    }
    Some(LabelComparison {
        rows: pairs.len(),
        agreement: same as f64 / pairs.len() as f64,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_difference_correlation_and_psi() {
        let same: Vec<(f64, f64)> = (0..100).map(|i| (f64::from(i), f64::from(i))).collect();
        let c = compare_numbers(&same).unwrap();
        assert_eq!((c.mean_abs_diff, c.max_abs_diff, c.psi), (0.0, 0.0, 0.0));
        assert!((c.correlation.unwrap() - 1.0).abs() < 1e-12);
        let shifted: Vec<(f64, f64)> = (0..100)
            .map(|i| (f64::from(i), f64::from(i) + 50.0))
            .collect();
        let c = compare_numbers(&shifted).unwrap();
        assert_eq!((c.mean_abs_diff, c.max_abs_diff), (50.0, 50.0));
        assert!(c.psi > 1.0, "{}", c.psi);
        let constant = compare_numbers(&[(1.0, 2.0), (1.0, 3.0)]).unwrap();
        assert_eq!(constant.correlation, None);
        assert!(compare_numbers(&[]).is_none());
    }

    #[test]
    fn labels_compare_by_agreement_and_confusion() {
        let pairs: Vec<(String, String)> = [("0", "0"), ("0", "1"), ("1", "1"), ("1", "1")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let c = compare_labels(&pairs).unwrap();
        assert_eq!(c.agreement, 0.75);
        assert_eq!(c.confusion["0"]["1"], 1);
        assert_eq!(c.confusion["1"]["1"], 2);
    }
}
