//! The status page: `status --html FILE`, and the daemon's `/` and `/jobs/NAME` over a seeded
//! database on every backend (what each job's row says, what a failed window's error says, what
//! is not found, what is never shown), and in a real browser (headless Chromium): the DOM, no
//! console errors, no request but the page, screenshots at desktop and phone widths.

use serde_json::Value;

use crate::daemon::start_daemon;
use crate::support::browser::{Browser, chromium};
use crate::support::*;
use crate::windows::{at, job};

/// Four jobs over the synthetic readings: `scores` committed three windows, `broken` failed one
/// on a NULL feature, `sharded` ran both its shards, `idle` never ran. Scheduled once a year, so
/// a daemon started on them runs nothing while a test looks.
async fn seeded(kind: Kind) -> Option<Project> {
    let p = Project::new(kind).await?;
    let job = |catch_up| job(catch_up).replace("*/10 * * * *", "0 0 1 1 *");
    p.seed_synthetic(3_000).await;
    p.execute("UPDATE sensor_readings SET vibration = NULL WHERE reading_id = 5")
        .await;
    p.write_job("scores", &job("all"));
    p.write_job(
        "broken",
        &(job("all").replace("\"predictions\"", "\"broken_predictions\"")
            + "[bad_rows]\npolicy = \"fail\"\n"),
    );
    p.write_job(
        "sharded",
        &job("all")
            .replace("\"predictions\"", "\"sharded_predictions\"")
            .replace("chunk_rows = 400", "chunk_rows = 400\nshards = 2"),
    );
    p.write_job(
        "idle",
        &job("all").replace("\"predictions\"", "\"idle_predictions\""),
    );
    for name in ["scores", "broken", "sharded"] {
        assert_exit(&p.batchscore(&["watermark", "set", name, &at(0)]), 0);
    }
    assert_exit(&p.batchscore(&["run-job", "scores", "--at", &at(31)]), 0);
    assert_exit(&p.batchscore(&["run-job", "broken", "--at", &at(11)]), 1);
    assert_exit(&p.batchscore(&["run-job", "sharded", "--at", &at(11)]), 0);
    Some(p)
}

/// Each job's and shard's row in the overview: (job, shard, state).
fn rows(html: &str) -> Vec<(String, Option<u32>, String)> {
    html.split("<tr")
        .skip(1)
        .filter_map(|tr| {
            let attribute = |name: &str| {
                let at = tr.find(&format!(" {name}=\""))? + name.len() + 3;
                Some(tr[at..].split('"').next()?.to_owned())
            };
            Some((
                attribute("data-job")?,
                attribute("data-shard").map(|s| s.parse().unwrap()),
                attribute("data-state")?,
            ))
        })
        .collect()
}

fn expected_rows() -> Vec<(String, Option<u32>, String)> {
    [
        ("broken", None, "failing"),
        ("idle", None, "never run"),
        ("scores", None, "ok"),
        ("sharded", None, "ok"),
        ("sharded", Some(0), "ok"),
        ("sharded", Some(1), "ok"),
    ]
    .into_iter()
    .map(|(j, s, st)| (j.to_owned(), s, st.to_owned()))
    .collect()
}

async fn status_html_writes_the_page_as_one_file(kind: Kind) {
    let Some(p) = seeded(kind).await else {
        return;
    };
    let file = p.dir.path().join("status.html");
    let out = p.batchscore(&["status", "--html", file.to_str().unwrap()]);
    // `broken` fails: a check's exit code, as without --html.
    assert_exit(&out, 1);
    let page = std::fs::read_to_string(&file).unwrap();
    assert_eq!(rows(&page), expected_rows(), "{page}");
    assert!(
        page.contains(r#"<meta http-equiv="refresh" content="30">"#),
        "{page}"
    );
    // A file has no daemon behind it to link to.
    assert!(!page.contains("href=\"/jobs/"), "{page}");
    assert!(!page.contains(&p.url) && !page.contains("://"), "{page}");

    // A job's page, without reloading.
    let out = p.batchscore(&[
        "status",
        "broken",
        "--html",
        file.to_str().unwrap(),
        "--refresh",
        "0",
    ]);
    assert_exit(&out, 1);
    let page = std::fs::read_to_string(&file).unwrap();
    assert!(!page.contains("http-equiv=\"refresh\""), "{page}");
    let failed = page
        .split("data-status=\"failed\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no failed window: {page}"));
    assert!(
        failed.contains("key 5") && failed.contains("`vibration` is NULL"),
        "the failed window's error names the row and column: {failed}"
    );
    // --refresh means nothing without --html; --json and --html do not go together.
    assert_exit(&p.batchscore(&["status", "--refresh", "5"]), 2);
    assert_exit(
        &p.batchscore(&["status", "--json", "--html", file.to_str().unwrap()]),
        2,
    );
}

on_all_databases!(status_html_writes_the_page_as_one_file);

async fn the_daemon_serves_the_status_page(kind: Kind) {
    let Some(p) = seeded(kind).await else {
        return;
    };
    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0"]);
    let port = daemon.port();

    let (status, head, body) = http_response(port, "/").unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert_eq!(rows(&body), expected_rows(), "{body}");
    assert!(body.contains("href=\"/jobs/broken\""), "{body}");
    assert!(body.contains("href=\"/jobs/sharded/shards/1\""), "{body}");
    assert!(body.contains(r#"content="30""#), "{body}");
    let (_, once) = http_get(port, "/?refresh=0").unwrap();
    assert!(!once.contains("http-equiv=\"refresh\""), "{once}");

    // A job's page: its windows, the failed one with its error; a shard's page: its windows.
    let (status, broken) = http_get(port, "/jobs/broken").unwrap();
    assert_eq!(status, 200, "{broken}");
    assert!(broken.contains("data-status=\"failed\""), "{broken}");
    assert!(broken.contains("`vibration` is NULL"), "{broken}");
    let (status, shard) = http_get(port, "/jobs/sharded/shards/1").unwrap();
    assert_eq!(status, 200, "{shard}");
    assert_eq!(
        shard.matches("data-status=\"succeeded\"").count(),
        1,
        "{shard}"
    );
    let (status, scores) = http_get(port, "/jobs/scores").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        scores.matches("data-status=\"succeeded\"").count(),
        3,
        "{scores}"
    );
    assert!(
        scores.contains("data-model=\""),
        "the model version used: {scores}"
    );
    assert!(scores.contains("<svg"), "{scores}");

    // Only what the jobs directory names is found.
    for path in [
        "/jobs/nope",
        "/jobs/..%2Fjobs%2Fscores",
        "/jobs/scores%00",
        "/jobs/sharded/shards/2",
        "/jobs/sharded/shards/x",
        "/jobs/scores/shards/1",
        "/jobs/",
        "/nope",
    ] {
        assert_eq!(http_get(port, path).unwrap().0, 404, "{path}");
    }
    // Nothing anywhere says where the database is.
    for page in [&body, &broken, &shard, &scores] {
        assert!(!page.contains(&p.url), "the database URL is shown");
    }
    daemon.signal("TERM");
    let (code, log) = daemon.wait();
    assert_eq!(code, Some(0), "{log}");
}

on_all_databases!(the_daemon_serves_the_status_page);

/// Headless Chromium loads the overview and a job's page from a daemon: every job's row and
/// state, the failed window's error, no console error, no request but to the daemon, and a
/// screenshot of each at desktop and phone widths (under the target's tmp dir, `status-page/`).
#[tokio::test]
async fn a_browser_shows_every_job_and_why_a_window_failed() {
    let Some(chromium) = chromium() else {
        return;
    };
    let p = seeded(Kind::Sqlite).await.unwrap();
    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0"]);
    let origin = format!("http://127.0.0.1:{}/", daemon.port());
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    let mut browser = Browser::launch(&chromium).await;

    for (width, height, mobile, name) in [(1280, 800, false, "desktop"), (390, 844, true, "phone")]
    {
        browser.open(&origin, (width, height), mobile).await;
        let rows = browser
            .eval(
                "[...document.querySelectorAll('#jobs tbody tr')].map(r => [r.dataset.job, \
                 r.dataset.shard ?? null, r.querySelector('.state').textContent, \
                 getComputedStyle(r.querySelector('.state')).color])",
            )
            .await;
        let seen: Vec<(String, Option<u32>, String)> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_str().map(|s| s.parse().unwrap()),
                    r[2].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(seen, expected_rows(), "{name}: {rows}");
        // The state has its colour beside its words: failing is red, never run grey.
        let colour = |job: &str| -> String {
            rows.as_array()
                .unwrap()
                .iter()
                .find(|r| r[0] == job)
                .map(|r| r[3].as_str().unwrap().to_owned())
                .unwrap()
        };
        assert_eq!(colour("broken"), "rgb(207, 34, 46)", "{rows}");
        assert_eq!(colour("idle"), "rgb(110, 119, 129)", "{rows}");
        browser
            .screenshot(&shots.join(format!("overview-{name}.png")))
            .await;

        browser
            .open(&format!("{origin}jobs/broken"), (width, height), mobile)
            .await;
        let error: Value = browser
            .eval("document.querySelector('#windows tr[data-status=failed] td.error').textContent")
            .await;
        let error = error.as_str().unwrap();
        assert!(
            error.contains("key 5") && error.contains("`vibration` is NULL"),
            "{error}"
        );
        let charts = browser
            .eval("document.querySelectorAll('svg').length")
            .await;
        assert_eq!(charts, 2);
        // Nothing spills sideways out of the page on a phone: wide tables scroll in their box.
        let overflow = browser
            .eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert_eq!(
            overflow.as_i64(),
            Some(0),
            "{name}: the page is wider than the screen"
        );
        browser
            .screenshot(&shots.join(format!("job-{name}.png")))
            .await;
    }

    assert!(browser.errors.is_empty(), "{:#?}", browser.errors);
    let elsewhere: Vec<&String> = browser
        .requests
        .iter()
        .filter(|url| !url.starts_with(&origin))
        .collect();
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:?}");
    assert_eq!(
        browser.requests.len(),
        4,
        "one request per page load: {:?}",
        browser.requests
    );
    drop(browser);
    daemon.signal("TERM");
    let (code, log) = daemon.wait();
    assert_eq!(code, Some(0), "{log}");
}
