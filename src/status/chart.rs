//! Small bar charts as inline SVG, drawn on the server: a week of windows' rows or seconds on a
//! status page, with no script and nothing fetched.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// How a chart's values read.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Seconds,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Count if value >= 1e6 => format!("{:.1}M", value / 1e6),
            Unit::Count if value >= 1e4 => format!("{:.0}k", value / 1e3),
            Unit::Count => format!("{value:.0}"),
            Unit::Seconds if value >= 10.0 => format!("{value:.0} s"),
            Unit::Seconds => format!("{value:.2} s"),
        }
    }
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Room for the value labels on the left and the dates below.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 18.0;
const TOP: f64 = 6.0;

/// A captioned chart of `points` (a window's start and end, and a value) over `range`: one bar
/// per window, as wide as the window (at least a pixel), as tall as its value against the
/// largest.
pub fn figure(
    caption: &str,
    points: &[(DateTime<Utc>, DateTime<Utc>, f64)],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    unit: Unit,
) -> Markup {
    let span = (to - from).as_seconds_f64().max(1.0);
    let plot = WIDTH - LEFT;
    let tall = HEIGHT - BOTTOM - TOP;
    let max = points.iter().map(|(_, _, v)| *v).fold(0.0_f64, f64::max);
    let x = |t: DateTime<Utc>| LEFT + ((t - from).as_seconds_f64() / span).clamp(0.0, 1.0) * plot;
    let label = format!(
        "{caption}: {} windows, the largest {}",
        points.len(),
        unit.format(max)
    );
    html! {
        figure {
            figcaption { (caption) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label)
                xmlns="http://www.w3.org/2000/svg" {
                title { (label) }
                line.axis x1=(LEFT) y1=(TOP + tall) x2=(WIDTH) y2=(TOP + tall) {}
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + tall) {}
                text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" { (unit.format(max)) }
                text x=(LEFT - 4.0) y=(TOP + tall) text-anchor="end" { "0" }
                text x=(LEFT) y=(HEIGHT - 4.0) { (from.format("%b %d")) }
                text x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { (to.format("%b %d %H:%M")) }
                @if points.is_empty() {
                    text x=(LEFT + plot / 2.0) y=(TOP + tall / 2.0) text-anchor="middle" { "no committed window" }
                }
                @for (start, end, value) in points {
                    @let h = if max > 0.0 { value / max * tall } else { 0.0 };
                    @let left = x(*start);
                    @let width = (x(*end) - left).max(1.0);
                    rect.bar x=(format!("{left:.1}")) y=(format!("{:.1}", TOP + tall - h))
                        width=(format!("{width:.1}")) height=(format!("{h:.1}")) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_as_tall_as_their_values_against_the_largest() {
        let t = |h: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::hours(h);
        let svg = figure(
            "Rows",
            &[(t(1), t(2), 50.0), (t(2), t(3), 100.0)],
            (t(0), t(4)),
            Unit::Count,
        )
        .into_string();
        let tall = HEIGHT - BOTTOM - TOP;
        assert!(svg.contains(&format!("height=\"{:.1}\"", tall)), "{svg}");
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", tall / 2.0)),
            "{svg}"
        );
        assert!(svg.contains("2 windows, the largest 100"), "{svg}");
    }
}
