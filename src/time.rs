//! Times as batchscore reads and shows them: RFC 3339, in UTC.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time as batchscore prints it: RFC 3339 in UTC, with as many fractional digits as it has.
pub fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time given on the command line (`--from`, `--to`, `--at`).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-11-24T10:00:00Z: {e}"))
}

/// Serialize a time as [`time_text`] writes it (`#[serde(serialize_with = ...)]`).
pub fn serialize_time<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time_text(*time))
}
