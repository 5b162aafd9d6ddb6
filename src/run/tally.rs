//! What a run did, counted as it goes: the daemon's metrics add it up.

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
}
