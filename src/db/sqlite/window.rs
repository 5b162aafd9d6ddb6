//! Which rows of a SQLite source fall in a window, found through an index on the timestamp
//! column when there is one.
//!
//! SQLite types are per value, so a timestamp column may hold ISO-8601 text (`T` or space,
//! minutes with or without seconds and fractions, `Z`, an offset or nothing) or unix seconds.
//! The exact test converts each value to unix seconds (`unixepoch(…, 'subsec')`), which no index
//! can answer. So the predicate is the exact test on the rows of a few index ranges, which
//! together hold every row the exact test keeps, for every supported form:
//!
//! - numbers (unix seconds): `[start, end)` itself;
//! - text in UTC or without an offset, whose text order is time order within one separator:
//!   `[start, end)` as `YYYY-MM-DDTHH:MM` prefixes, floored to the minute and one minute wider
//!   at the end, once with `T` and once with a space;
//! - text with an offset, whose text is the local wall clock: the same ranges widened by 15 hours
//!   either side (SQLite accepts offsets up to ±14:59), keeping only values that end in an
//!   offset.
//!
//! A value whose text sorts outside these ranges although its time is inside the window would be
//! missed: the forms above cannot (the property test below compares the two predicates on random
//! mixes of them), and `jobs validate` reports values in any other form.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use sqlx::Arguments as _;
use sqlx::sqlite::SqliteArguments;

/// How far an offset can move a value's text from its time.
const MAX_OFFSET: TimeDelta = TimeDelta::hours(15);

/// Parameters the window predicate binds: `?1` and `?2` are the window in unix seconds (also
/// what `source.query`'s placeholders are bound to), then the text bounds of each range.
pub(super) const PARAMETERS: usize = 10;

/// The row's time in unix seconds, whatever form the column stores it in.
fn time_expr(column: &str) -> String {
    format!(
        "(CASE WHEN typeof({column}) IN ('integer', 'real') THEN {column} ELSE unixepoch({column}, 'subsec') END)"
    )
}

/// The window's predicate on `column` (quoted), with parameters `?1` to `?10`.
pub(super) fn predicate(column: &str) -> String {
    let time = time_expr(column);
    let range = |lower: usize| format!("{column} >= ?{lower} AND {column} < ?{}", lower + 1);
    let offset = format!("substr({column}, -6, 1) IN ('+', '-')");
    format!(
        "({} OR {} OR {} OR ({} AND {offset}) OR ({} AND {offset})) AND {time} >= ?1 AND {time} < ?2",
        range(1),
        range(3),
        range(5),
        range(7),
        range(9),
    )
}

/// A parameter value of the predicate.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bound {
    Seconds(f64),
    Text(String),
}

/// The values of `?1` to `?10` for the window `[start, end)`.
pub(super) fn bounds(start: DateTime<Utc>, end: DateTime<Utc>) -> [Bound; PARAMETERS] {
    let seconds = |t: DateTime<Utc>| Bound::Seconds(t.timestamp_micros() as f64 / 1e6);
    // A value's text starts with its wall-clock minute, so every value of a minute in
    // [floor(start), floor(end)] sorts in [prefix(floor(start)), prefix(floor(end) + 1 min)).
    let floor = |t: DateTime<Utc>| {
        t.with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(t)
    };
    let prefix = |t: DateTime<Utc>, separator: char| {
        Bound::Text(t.format(&format!("%Y-%m-%d{separator}%H:%M")).to_string())
    };
    let (low, high) = (floor(start), floor(end) + TimeDelta::minutes(1));
    let (wide_low, wide_high) = (low - MAX_OFFSET, high + MAX_OFFSET);
    [
        seconds(start),
        seconds(end),
        prefix(low, 'T'),
        prefix(high, 'T'),
        prefix(low, ' '),
        prefix(high, ' '),
        prefix(wide_low, 'T'),
        prefix(wide_high, 'T'),
        prefix(wide_low, ' '),
        prefix(wide_high, ' '),
    ]
}

impl rusqlite::ToSql for Bound {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Bound::Seconds(seconds) => (*seconds).into(),
            Bound::Text(text) => text.as_str().into(),
        })
    }
}

/// The values of `?1` to `?10` for the window `[start, end)`, as arguments of a sqlx statement.
pub(super) fn arguments(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<SqliteArguments> {
    let mut arguments = SqliteArguments::default();
    for bound in bounds(start, end) {
        match bound {
            Bound::Seconds(seconds) => arguments.add(seconds),
            Bound::Text(text) => arguments.add(text),
        }
        .map_err(anyhow::Error::from_boxed)?;
    }
    Ok(arguments)
}

/// How many values of `column` (quoted) in `from` are text in none of the forms the predicate
/// finds through the index, and one of them, for `jobs validate`.
pub(super) fn unsupported_forms(column: &str, from: &str) -> String {
    format!(
        "SELECT count(*), min({column}) FROM {from} WHERE typeof({column}) = 'text' AND NOT \
         ({column} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]' \
         OR {column} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9][:Z+-]*')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};
    use proptest::prelude::*;

    /// One stored value of instant `t` in a supported form.
    fn render(t: DateTime<Utc>, form: u8, offset_minutes: i32) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        let separator = if form & 1 == 0 { 'T' } else { ' ' };
        let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let local = offset.from_utc_datetime(&t.naive_utc());
        let text = |pattern: &str, with: &str| {
            let pattern = pattern.replace('T', &separator.to_string());
            Value::Text(format!("{}{with}", local.format(&pattern)))
        };
        let utc = |pattern: &str, with: &str| {
            let pattern = pattern.replace('T', &separator.to_string());
            Value::Text(format!("{}{with}", t.format(&pattern)))
        };
        let zone = local.format("%:z").to_string();
        match form >> 1 {
            0 => utc("%Y-%m-%dT%H:%M:%S", "Z"),
            1 => utc("%Y-%m-%dT%H:%M:%S%.3f", "Z"),
            2 => utc("%Y-%m-%dT%H:%M:%S%.6f", ""),
            3 => utc("%Y-%m-%dT%H:%M", ""),
            4 => text("%Y-%m-%dT%H:%M:%S", &zone),
            5 => text("%Y-%m-%dT%H:%M:%S%.3f", &zone),
            6 => text("%Y-%m-%dT%H:%M", &zone),
            _ => Value::Integer(t.timestamp()),
        }
    }

    fn keys(db: &rusqlite::Connection, sql: &str, bounds: &[Bound]) -> Vec<i64> {
        let mut select = db.prepare(sql).unwrap();
        for (i, bound) in bounds.iter().enumerate() {
            select.raw_bind_parameter(i + 1, bound).unwrap();
        }
        let mut rows = select.raw_query();
        let mut found = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            found.push(row.get(0).unwrap());
        }
        found.sort_unstable();
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// On any mix of supported forms, the indexed predicate keeps exactly the rows the exact
        /// one keeps, and SQLite answers it through the index.
        #[test]
        fn the_indexed_predicate_keeps_exactly_the_rows_of_the_exact_one(
            rows in prop::collection::vec((0i64..2 * 86_400_000, 0u8..16, -14 * 60i32..=14 * 60), 1..200),
            anchor in any::<prop::sample::Index>(),
            shift in -90i64..90,
            minutes in prop::sample::select(vec![1i64, 10, 30, 60, 6 * 60, 24 * 60]),
            declared in prop::sample::select(vec!["TEXT", "", "INTEGER", "DATETIME"]),
        ) {
            let base = Utc.with_ymd_and_hms(2026, 3, 28, 0, 0, 0).unwrap();
            let db = rusqlite::Connection::open_in_memory().unwrap();
            db.execute_batch(&format!(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, ts {declared}); CREATE INDEX t_ts ON t (ts);"
            )).unwrap();
            for (id, (millis, form, offset)) in rows.iter().enumerate() {
                let t = base + TimeDelta::milliseconds(*millis);
                db.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![id as i64, render(t, *form, *offset)]).unwrap();
            }
            // Windows on whole seconds, as the planner makes them, near a row's own time so that
            // rows fall on and around both edges.
            let start = base + TimeDelta::seconds(rows[anchor.index(rows.len())].0 / 1000 + shift);
            let end = start + TimeDelta::minutes(minutes);
            let bounds = bounds(start, end);
            let column = "\"ts\"";
            let exact = format!("SELECT id FROM t WHERE {0} >= ?1 AND {0} < ?2", time_expr(column));
            let indexed = format!("SELECT id FROM t WHERE {}", predicate(column));
            prop_assert_eq!(keys(&db, &indexed, &bounds), keys(&db, &exact, &bounds[..2]));
            let plan: String = db
                .prepare(&format!("EXPLAIN QUERY PLAN {indexed}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(bounds.iter()), |row| row.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ");
            prop_assert!(plan.contains("USING") && plan.contains("t_ts"), "{}", plan);
        }
    }

    #[test]
    fn a_row_on_a_window_edge_belongs_to_the_later_window() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT); CREATE INDEX t_ts ON t (ts);
             INSERT INTO t VALUES (1, '2026-03-28T10:30:00Z'), (2, '2026-03-28 10:29:59.999'),
             (3, '2026-03-28T12:30:00+02:00'), (4, '2026-03-28T10:30');",
        )
        .unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 28, h, m, 0).unwrap();
        let sql = format!("SELECT id FROM t WHERE {}", predicate("\"ts\""));
        assert_eq!(keys(&db, &sql, &bounds(at(10, 0), at(10, 30))), [2]);
        assert_eq!(keys(&db, &sql, &bounds(at(10, 30), at(11, 0))), [1, 3, 4]);
    }
}
