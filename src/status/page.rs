//! The status page as HTML: the overview (`/`, `status --html`) and a job's page
//! (`/jobs/NAME`), rendered on the server from maud templates compiled into the binary. One
//! self-contained document each: inline CSS, inline SVG, no script, no font, no request to
//! anywhere, so it works offline and behind any proxy. It shows what the ledger and the job files
//! say, never the database URL or a secret.

use chrono::{DateTime, SecondsFormat, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::chart;
use super::job::{CHARTED, Detail, LISTED};
use super::{Health, JobStatus, State, span};
use crate::ledger::{RunRecord, RunStatus};
use crate::monitor::drift::DriftState;
use crate::shard::Shard;

/// Whether the page links to the daemon's other pages: a static file written by
/// `status --html` has none to link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Served,
    None,
}

/// What the page's `<meta>` allows: inline styles and inline images, nothing fetched.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'";

/// What the daemon's header allows: the same, and no framing (which only a header can say).
pub const CONTENT_SECURITY_POLICY_HEADER: &str = "default-src 'none'; \
     style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #fff;
  --head: #f6f8fa; --ok: #1a7f37; --busy: #0969da; --late: #9a6700; --failing: #cf222e;
  --never: #6e7781; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: baseline;
  padding: .75rem 1rem; border-bottom: 1px solid var(--line); background: var(--head); }
header h1 { font-size: 1.15rem; margin: 0; }
header .meta { color: var(--muted); font-size: .85rem; }
main { padding: 1rem; max-width: 1400px; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
a { color: var(--busy); }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line);
  white-space: nowrap; vertical-align: top; }
th { background: var(--head); font-weight: 600; font-size: .8rem; color: var(--muted); }
tr:last-child td { border-bottom: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.shard td:first-child { padding-left: 1.6rem; color: var(--muted); }
td.error { white-space: normal; min-width: 20rem; max-width: 48rem; color: var(--failing);
  overflow-wrap: anywhere; }
.state { display: inline-flex; align-items: center; gap: .35rem; font-weight: 600; }
.state::before { content: ""; width: .65rem; height: .65rem; border-radius: 50%;
  background: currentColor; }
.state-ok { color: var(--ok); } .state-busy { color: var(--busy); }
.state-late { color: var(--late); } .state-failing { color: var(--failing); }
.state-never-run { color: var(--never); }
.drift { color: var(--late); font-weight: 600; }
.muted { color: var(--muted); }
code { font: .85em ui-monospace, SFMono-Regular, Menlo, monospace; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: .5rem; }
figcaption { font-size: .85rem; color: var(--muted); margin-bottom: .25rem; }
svg { display: block; width: 100%; height: auto; }
svg .bar { fill: #0969da; } svg .axis { stroke: var(--line); } svg text { fill: var(--muted);
  font-size: 11px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1rem; }
dt { color: var(--muted); } dd { margin: 0; }
"#;

/// Every job, one row each, and one per shard of a sharded job.
pub fn overview(jobs: &[JobStatus], now: DateTime<Utc>, refresh: u32, links: Links) -> Markup {
    let body = html! {
        h2 { "Jobs" }
        @if jobs.is_empty() {
            p.muted { "No job files in the jobs directory, and nothing in the ledger yet." }
        } @else {
            div.scroll {
                table #jobs {
                    (status_header())
                    tbody {
                        @for job in jobs {
                            (job_rows(job, now, links))
                        }
                    }
                }
            }
        }
    };
    document("batchscore status", html! {}, body, now, refresh, links)
}

/// The columns of a job's row.
fn status_header() -> Markup {
    html! {
        thead { tr {
            th { "Job" } th { "State" } th { "Last success" } th { "Lag" }
            th { "Next run" } th { "Rows 24h" } th { "Failed 24h" }
            th { "Bad rows 24h" } th { "Drift" } th { "Metric" }
        } }
    }
}

/// A job's row, then its shards' rows.
fn job_rows(job: &JobStatus, now: DateTime<Utc>, links: Links) -> Markup {
    let linked = links == Links::Served && job.spec.is_some();
    html! {
        tr data-job=(job.job) data-state=(job.health.state.as_str()) {
            td {
                @if linked { a href=(job_href(&job.job, None)) { (job.job) } } @else { (job.job) }
                @if job.spec.is_none() { " " span.muted { "(no job file)" } }
            }
            (health_cells(&job.health, now))
            td { (next_run(job, now)) }
            (count_cells(&job.health))
            td { (drift_text(&job.drift)) }
            td { (job.metric_text()) }
        }
        @for (shard, health) in &job.shards {
            tr.shard data-job=(job.job) data-shard=(shard.index) data-state=(health.state.as_str()) {
                td {
                    @if linked {
                        a href=(job_href(&job.job, Some(*shard))) { "shard " (shard) }
                    } @else { "shard " (shard) }
                }
                (health_cells(health, now))
                td {}
                (count_cells(health))
                td {} td {}
            }
        }
    }
}

fn health_cells(health: &Health, now: DateTime<Utc>) -> Markup {
    html! {
        td { (state_badge(health.state)) }
        td {
            @match health.last_success {
                Some(t) => { (ago(t, now)) }
                None => { span.muted { "-" } }
            }
        }
        td.num {
            @match health.watermark {
                Some(w) => { (span((now - w).num_seconds())) }
                None => { span.muted { "-" } }
            }
        }
    }
}

fn count_cells(health: &Health) -> Markup {
    html! {
        td.num { (health.ledger.rows_written) }
        td.num { (health.ledger.failures) }
        td.num { (health.ledger.rows_bad) }
    }
}

fn next_run(job: &JobStatus, now: DateTime<Utc>) -> Markup {
    match (&job.spec, job.next_due) {
        (Some(_), Some(t)) => html! {
            time datetime=(iso(t)) title=(iso(t)) { "in " (span((t - now).num_seconds())) }
        },
        (Some(_), None) => html! { "never" },
        (None, _) => html! { span.muted { "-" } },
    }
}

fn drift_text(drift: &str) -> Markup {
    match drift.starts_with("drift") {
        true => html! { span.drift { (drift) } },
        false => html! { (drift) },
    }
}

/// The state in colour and in words, so it reads without the colour too.
fn state_badge(state: State) -> Markup {
    let class = format!("state state-{}", state.as_str().replace(' ', "-"));
    html! { span class=(class) { (state.as_str()) } }
}

/// A job's page: its status, a week of windows charted, its latest windows, its drift and the
/// model versions that scored it.
pub fn job(detail: &Detail, now: DateTime<Utc>, refresh: u32, links: Links) -> Markup {
    let status = &detail.status;
    let title = match detail.shard {
        Some(index) => format!("{} shard {index}", status.job),
        None => status.job.clone(),
    };
    let crumbs = html! {
        @if links == Links::Served { a href="/" { "All jobs" } " / " }
        strong { (title) }
    };
    let body = html! {
        @if let Some(spec) = &status.spec {
            dl #about {
                dt { "Schedule" } dd { code { (spec.schedule.expression) } " (" (spec.schedule.timezone.name()) ")" }
                dt { "Shards" } dd { (spec.source.shards) }
                dt { "Results table" } dd { code { (spec.sink.table) } }
            }
        }
        div.scroll {
            table #status {
                (status_header())
                tbody { (job_rows(status, now, links)) }
            }
        }
        h2 { "Windows of the last " (CHARTED.num_days()) " days" }
        div.charts {
            (chart::figure(
                "Rows per window",
                &detail.week.iter().map(|r| (r.window_start, r.window_end, r.rows_read as f64)).collect::<Vec<_>>(),
                (now - CHARTED, now),
                chart::Unit::Count,
            ))
            (chart::figure(
                "Seconds per window",
                &detail.week.iter().filter_map(|r| Some((r.window_start, r.window_end, seconds(r)?))).collect::<Vec<_>>(),
                (now - CHARTED, now),
                chart::Unit::Seconds,
            ))
        }
        h2 { "Latest windows" span.muted { " (up to " (LISTED) ")" } }
        (windows(&detail.runs))
        h2 { "Drift" }
        (drift(detail))
        h2 { "Model versions" }
        (versions(detail))
    };
    document(
        &format!("{title} · batchscore"),
        crumbs,
        body,
        now,
        refresh,
        links,
    )
}

fn windows(runs: &[RunRecord]) -> Markup {
    if runs.is_empty() {
        return html! { p.muted { "No window yet." } };
    }
    html! {
        div.scroll {
            table #windows {
                thead { tr {
                    th { "Window" } th { "Shard" } th { "Status" } th { "Rows read" }
                    th { "Rows written" } th { "Bad rows" } th { "Seconds" } th { "Model" }
                    th { "Error" }
                } }
                tbody {
                    @for run in runs {
                        tr data-run=(run.run_id) data-status=(run.status.as_str()) {
                            td { time datetime=(iso(run.window_start)) { (iso(run.window_start)) }
                                 " – " time datetime=(iso(run.window_end)) { (iso(run.window_end)) } }
                            td.num { (run.shard) }
                            td { (run_status(run.status)) }
                            td.num { (run.rows_read) }
                            td.num { (run.rows_written) }
                            td.num { (run.rows_bad) }
                            td.num { @if let Some(s) = seconds(run) { (format!("{s:.2}")) } }
                            td { code title=(run.lineage.model_sha256) { (short(&run.lineage.model_sha256)) } }
                            td.error {
                                @if matches!(run.status, RunStatus::Failed | RunStatus::Abandoned) {
                                    (scrub(run.error.as_deref().unwrap_or("")))
                                } @else if let Some(bad) = &run.bad_rows {
                                    span.muted { (scrub(bad)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn run_status(status: RunStatus) -> Markup {
    let state = match status {
        RunStatus::Succeeded => State::Ok,
        RunStatus::Running => State::Busy,
        RunStatus::Failed | RunStatus::Abandoned => State::Failing,
        RunStatus::Skipped => State::NeverRun,
    };
    let class = format!("state state-{}", state.as_str().replace(' ', "-"));
    html! { span class=(class) { (status.as_str()) } }
}

fn drift(detail: &Detail) -> Markup {
    let Some(latest) = &detail.drift else {
        let why = match &detail.status.spec {
            Some(spec) if !spec.monitor.profile => "Profiles are turned off for this job.",
            _ => "No window has been profiled yet.",
        };
        return html! { p.muted { (why) } };
    };
    html! {
        p {
            "Window " (iso(latest.window.start)) " – " (iso(latest.window.end))
            ", " (latest.rows) " rows, against "
            @match &latest.reference {
                Some(reference) => { (reference.described) }
                None => { "no reference" }
            }
        }
        div.scroll {
            table #drift {
                thead { tr {
                    th { "Column" } th { "Role" } th { "Measure" } th { "Score" }
                    th { "Threshold" } th { "Null rate" } th { "State" }
                } }
                tbody {
                    @for column in &latest.report.columns {
                        tr data-column=(column.column) data-state=(column.state.as_str()) {
                            td { code { (column.column) } }
                            td { (column.role.as_str()) }
                            td { (column.measure) }
                            td.num { @match column.score { Some(s) => { (format!("{s:.3}")) } None => { "-" } } }
                            td.num { (format!("{:.3}", column.threshold)) }
                            td.num { (format!("{:.3}", column.null_rate)) }
                            td {
                                @if column.state == DriftState::Drift {
                                    span.drift { "drift" } " " span.muted { (column.reasons.join(", ")) }
                                } @else { (column.state.as_str()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn versions(detail: &Detail) -> Markup {
    if detail.versions.is_empty() {
        return html! { p.muted { "No window committed yet." } };
    }
    html! {
        div.scroll {
            table #versions {
                thead { tr {
                    th { "Model sha256" } th { "Source" } th { "Windows" } th { "Rows written" }
                    th { "First used" } th { "Last used" }
                } }
                tbody {
                    @for v in &detail.versions {
                        tr data-model=(v.model_sha256) {
                            td { code title=(v.model_sha256) { (short(&v.model_sha256)) } }
                            td { (scrub(v.model_source.as_deref().unwrap_or("-"))) }
                            td.num { (v.windows) }
                            td.num { (v.rows_written) }
                            td { (iso(v.first_used)) }
                            td { (iso(v.last_used)) }
                        }
                    }
                }
            }
        }
    }
}

/// The document around a page's body: its head, with the policy and the refresh, and a header
/// that says when it was made.
fn document(
    title: &str,
    crumbs: Markup,
    body: Markup,
    now: DateTime<Utc>,
    refresh: u32,
    links: Links,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                // No icon: without this line a browser asks the server for /favicon.ico.
                link rel="icon" href="data:,";
                @if refresh > 0 { meta http-equiv="refresh" content=(refresh); }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "batchscore" }
                    span { (crumbs) }
                    span.meta {
                        "as of " time #generated datetime=(iso(now)) { (iso(now)) }
                        @if refresh > 0 {
                            ", reloads every " (refresh) " s"
                            @if links == Links::Served { " (" a href="?refresh=0" { "stop" } ")" }
                        } @else if links == Links::Served {
                            " (" a href="?" { "reload every 30 s" } ")"
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The path of a job's page, or of one of its shards'.
pub fn job_href(job: &str, shard: Option<Shard>) -> String {
    // Job names are file stems: percent-encode anything a path would misread.
    let name = percent_encoding::utf8_percent_encode(job, percent_encoding::NON_ALPHANUMERIC);
    match shard {
        Some(shard) => format!("/jobs/{name}/shards/{}", shard.index),
        None => format!("/jobs/{name}"),
    }
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { time datetime=(iso(t)) title=(iso(t)) { (span((now - t).num_seconds())) " ago" } }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn seconds(run: &RunRecord) -> Option<f64> {
    run.finished_at
        .map(|end| (end - run.started_at).as_seconds_f64())
}

/// The first 12 hex digits of a sha256, as `git` shortens.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `text` with the password of any URL in it masked: an error may quote a connection string.
fn scrub(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let bare = word.trim_matches(|c: char| {
                c.is_whitespace() || matches!(c, '`' | '\'' | '"' | '(' | ')' | '<' | '>' | ',')
            });
            match bare.contains("://") && bare.contains('@') {
                true => word.replace(bare, &crate::db::redact(bare)),
                false => word.to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_lose_their_passwords() {
        let error = "connecting to `postgres://scorer:s3cret@db:5432/app` failed: refused";
        let scrubbed = scrub(error);
        assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        assert!(
            scrubbed.contains("postgres://scorer:***@db:5432/app"),
            "{scrubbed}"
        );
        assert_eq!(scrub("no URL here"), "no URL here");
    }

    #[test]
    fn job_names_are_escaped_in_links() {
        assert_eq!(job_href("a b/c", None), "/jobs/a%20b%2Fc");
        assert_eq!(
            job_href("job", Some(Shard { index: 2, count: 4 })),
            "/jobs/job/shards/2"
        );
    }
}
