//! Fire times: when a job's cron expression fires next, in its own time zone, right across
//! daylight-saving changes.
//!
//! tokio-cron-scheduler computes only a cron job's first tick in the job's time zone; every
//! later tick comes from `iter_after(Utc::now())`, in UTC (0.15, `Job::tick`), so a job at 10:00
//! Europe/Berlin fires at 10:00 UTC from its second run on. The daemon therefore computes each
//! fire time here and hands the scheduler one-shot jobs.
//!
//! Semantics, as in Vixie cron: a local time that does not exist (skipped by a spring-forward)
//! fires once, when the clock jumps. A local time that occurs twice (a fall-back) fires once,
//! at its first occurrence, for a fixed-time schedule; a schedule whose minute or hour field
//! is a wildcard (`*/10 * * * *`, `0 * * * *`, `@hourly`) runs on real time instead, at both
//! occurrences, so the repeated hour has its ticks like any other (Vixie cron's MIN_STAR and
//! HR_STAR entries, which it runs through a backward clock change).

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;

use crate::spec::Schedule;

/// The first fire time strictly after `after`.
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = schedule.timezone;
    let real_time = follows_real_time(&schedule.expression);
    // Walk local wall-clock times: cron speaks local time, and a DST change moves UTC under it.
    // Cron has whole seconds: start from the second `after` falls in. Inside the first pass of
    // a repeated hour, the local times before `after`'s own come again in real time: start the
    // walk from the repeat's length earlier.
    let mut local = after.trunc_subsecs(0).with_timezone(&tz).naive_local();
    if let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(&local) {
        local -= second.to_utc() - first.to_utc() + Duration::seconds(1);
    }
    // The earliest instant of a local time never decreases as the local time grows, so once a
    // candidate's earliest instant is past the best fire time found, none later can be earlier.
    let mut best: Option<DateTime<Utc>> = None;
    for _ in 0..10_000 {
        let candidate = next_local_match(schedule, local)?;
        let (earliest, repeat) = instants(&tz, candidate);
        if best.is_some_and(|best| earliest > best) {
            break;
        }
        let times = std::iter::once(earliest).chain(repeat.filter(|_| real_time));
        for t in times.filter(|t| *t > after) {
            best = Some(best.map_or(t, |best| best.min(t)));
        }
        local = candidate;
    }
    best
}

/// Whether a cron expression runs on real time through a repeated hour: its minute or hour
/// field is a wildcard (as Vixie cron decides, by the field's first character).
fn follows_real_time(expression: &str) -> bool {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.as_slice() {
        [alias] => alias.eq_ignore_ascii_case("@hourly"),
        // With a seconds field first, minute and hour are the second and third.
        [_, minute, hour, _, _, _] | [_, minute, hour, _, _, _, _] | [minute, hour, ..] => {
            minute.starts_with('*') || hour.starts_with('*')
        }
        [] => false,
    }
}

/// The instants a local time names: its only one, or the first of two (a fall-back) with the
/// second, or (skipped by a spring-forward) the instant the clock jumps.
fn instants(tz: &Tz, local: NaiveDateTime) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (t.to_utc(), None),
        LocalResult::Ambiguous(first, second) => (first.to_utc(), Some(second.to_utc())),
        LocalResult::None => (first_instant_after_gap(tz, local), None),
    }
}

/// The next local wall-clock time after `local` that matches the expression, as if there were
/// no DST (croner on a fixed-offset clock).
fn next_local_match(schedule: &Schedule, local: NaiveDateTime) -> Option<NaiveDateTime> {
    schedule
        .cron
        .find_next_occurrence(&Utc.from_utc_datetime(&local), false)
        .ok()
        .map(|t| t.naive_utc())
}

/// Where the clock lands after a spring-forward gap containing `local`.
fn first_instant_after_gap<Z: TimeZone>(tz: &Z, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..(24 * 60) {
        probe += Duration::minutes(1);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            // Gaps start on whole minutes; the first valid minute is the jump.
            return t.to_utc();
        }
    }
    Utc.from_utc_datetime(&local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use croner::parser::{CronParser, Seconds};

    fn schedule(expr: &str, tz: &str) -> Schedule {
        Schedule {
            expression: expr.to_owned(),
            cron: CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(expr)
                .unwrap(),
            timezone: tz.parse().unwrap(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let s = schedule(expr, tz);
        let mut at = t(from);
        (0..n)
            .map(|_| {
                at = next_fire(&s, at).unwrap();
                at
            })
            .collect()
    }

    #[test]
    fn ten_oclock_berlin_stays_ten_oclock_across_spring_forward() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 (CET +1 → CEST +2).
        assert_eq!(
            fires("0 10 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 4),
            vec![
                t("2026-03-28T09:00:00Z"),
                t("2026-03-29T08:00:00Z"),
                t("2026-03-30T08:00:00Z"),
                t("2026-03-31T08:00:00Z")
            ]
        );
    }

    #[test]
    fn ten_oclock_berlin_stays_ten_oclock_across_fall_back() {
        // Europe/Berlin falls back on 2026-10-25 at 03:00 (CEST +2 → CET +1).
        assert_eq!(
            fires("0 10 * * *", "Europe/Berlin", "2026-10-23T12:00:00Z", 4),
            vec![
                t("2026-10-24T08:00:00Z"),
                t("2026-10-25T09:00:00Z"),
                t("2026-10-26T09:00:00Z"),
                t("2026-10-27T09:00:00Z")
            ]
        );
    }

    #[test]
    fn a_skipped_local_time_fires_once_when_the_clock_jumps() {
        // 02:30 does not exist on 2026-03-29 in Berlin: fire at 03:00 CEST (01:00Z), once.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            vec![t("2026-03-29T01:00:00Z"), t("2026-03-30T00:30:00Z")]
        );
    }

    #[test]
    fn a_repeated_local_time_fires_once() {
        // 02:30 happens twice on 2026-10-25 in Berlin (00:30Z CEST, 01:30Z CET): fire at the first.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            vec![t("2026-10-25T00:30:00Z"), t("2026-10-26T01:30:00Z")]
        );
    }

    #[test]
    fn wildcard_schedules_run_on_real_time_through_the_repeated_hour() {
        // Berlin falls back at 01:00Z on 2026-10-25: 02:00–03:00 local happens twice.
        let every_ten: Vec<DateTime<Utc>> =
            fires("*/10 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 16);
        let expected: Vec<DateTime<Utc>> = (0..16)
            .map(|i| t("2026-10-24T23:50:00Z") + Duration::minutes(10 * i))
            .collect();
        assert_eq!(every_ten, expected, "no 70-minute gap");
        assert_eq!(
            fires("0 * * * *", "Europe/Berlin", "2026-10-24T22:30:00Z", 4),
            vec![
                t("2026-10-24T23:00:00Z"),
                t("2026-10-25T00:00:00Z"),
                t("2026-10-25T01:00:00Z"),
                t("2026-10-25T02:00:00Z")
            ],
            "hourly: no 120-minute gap"
        );
        assert_eq!(
            fires("@hourly", "Europe/Berlin", "2026-10-25T00:30:00Z", 2),
            vec![t("2026-10-25T01:00:00Z"), t("2026-10-25T02:00:00Z")]
        );
        // Seconds first: the minute field is the second one.
        assert_eq!(
            fires("0 */30 * * * *", "Europe/Berlin", "2026-10-25T00:45:00Z", 3),
            vec![
                t("2026-10-25T01:00:00Z"),
                t("2026-10-25T01:30:00Z"),
                t("2026-10-25T02:00:00Z")
            ]
        );
        // A fixed time inside the hour still fires once.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-25T00:40:00Z", 1),
            vec![t("2026-10-26T01:30:00Z")]
        );
    }

    #[test]
    fn new_york_and_seconds_schedules() {
        // America/New_York springs forward on 2026-03-08.
        assert_eq!(
            fires("0 9 * * *", "America/New_York", "2026-03-07T00:00:00Z", 2),
            vec![t("2026-03-07T14:00:00Z"), t("2026-03-08T13:00:00Z")]
        );
        assert_eq!(
            fires("*/1 * * * * *", "UTC", "2026-01-01T00:00:00.5Z", 3),
            vec![
                t("2026-01-01T00:00:01Z"),
                t("2026-01-01T00:00:02Z"),
                t("2026-01-01T00:00:03Z")
            ]
        );
    }
}
