//! Drift monitoring: a profile of every committed window ([`profile`]), and drift scores of a
//! window against a reference ([`drift`]), as `[monitor]` ([`crate::spec::monitor`]) asks.
//!
//! Every window is profiled as its chunks stream (features as read, outputs as scored), and the
//! profile is written in the window's transaction: it exists exactly when the window's results
//! do. The reference is the merged profile of other committed windows: a fixed range, a rolling
//! one (the same window some time earlier), or one stored by `monitor set-reference`; which one
//! applies is chosen by [`mod@reference`], which reads it from the database; the rest touches no
//! database: profiles and scores are plain computations.

pub(crate) mod drift;
pub(crate) mod profile;
pub(crate) mod reference;
