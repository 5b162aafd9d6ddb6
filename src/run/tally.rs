//! What a run did, counted as it goes: the daemon's metrics add it up.

use crate::challenger::Agreement;
use crate::ledger::RunRecord;

/// What a run recorded in the ledger, counted as it goes (also when it fails part-way): the
/// daemon's metrics add these up, so they match the ledger row for row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    /// Rows read but not written: bad rows, and the rows of windows that failed.
    pub rows_rejected: u64,
    /// Rows found bad, whatever the policy did with them (the ledger's `rows_bad`).
    pub rows_bad: u64,
    /// Each column's latest drift score (PSI or Jensen–Shannon distance), by role (`feature` or
    /// `output`: the two may share a name) and name.
    pub drift_scores: std::collections::BTreeMap<(&'static str, String), f64>,
    /// Windows found in drift, per column, by role and name.
    pub drift_alerts: std::collections::BTreeMap<(&'static str, String), u64>,
    /// Committed windows whose challenger rows were skipped (it failed to load or to score).
    pub challenger_failures: u64,
    /// The latest committed window's challenger agreement, per label column: the share of rows
    /// it gave the model's label.
    pub challenger_agreement: std::collections::BTreeMap<String, f64>,
    /// The latest committed window's mean absolute difference, per number column.
    pub challenger_mean_abs_diff: std::collections::BTreeMap<String, f64>,
}

impl Tally {
    /// Count a committed window's challenger: how it agreed, or that it was skipped.
    pub(super) fn challenger(&mut self, record: &RunRecord, agreement: Option<&Agreement>) {
        if let Some(problem) = &record.lineage.challenger_error {
            tracing::warn!(problem = %problem, "the window was committed without its challenger's rows");
            self.challenger_failures += 1;
        }
        for column in agreement.iter().flat_map(|a| &a.columns) {
            let Some(value) = column.value() else {
                continue;
            };
            let into = match column.numeric {
                true => &mut self.challenger_mean_abs_diff,
                false => &mut self.challenger_agreement,
            };
            into.insert(column.column.clone(), value);
        }
    }
}
