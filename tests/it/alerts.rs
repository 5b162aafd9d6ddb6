//! Alerts (alerts.toml) through the real binary to real HTTP receivers on 127.0.0.1: a failed
//! window told once, signed, and resolved once; Slack and PagerDuty payloads; one alert for
//! five processes; lateness under `alerts check` and the daemon; receivers that fail, hang or
//! hang up; bad routes.
//!
//! A window fails here as an application's database can make it fail: a trigger on the results
//! table refuses every insert, until it is dropped.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;

use crate::daemon::{Daemon, create_readings, feed, insert_now, job as daemon_job, stop_daemon};
use crate::support::receiver::{Answer, Receiver};
use crate::support::*;
use crate::windows::{at, job};

const SECRET: &str = "hmac key 🔑";

/// Make every insert into `table` fail, as an application's rule would.
async fn refuse_writes(p: &Project, table: &str) {
    let refusal = "the application refuses new predictions";
    p.execute(&match p.kind {
        Kind::Sqlite => format!(
            "CREATE TRIGGER app_rule BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        ),
        Kind::Postgres => format!(
            "CREATE OR REPLACE FUNCTION app_refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION '{refusal}'; END $$; \
             CREATE TRIGGER app_rule BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION app_refuse()"
        ),
        Kind::Mysql => format!(
            "CREATE TRIGGER app_rule BEFORE INSERT ON {table} FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'"
        ),
    })
    .await;
}

async fn allow_writes(p: &Project, table: &str) {
    p.execute(&match p.kind {
        Kind::Postgres => format!("DROP TRIGGER app_rule ON {table}"),
        _ => "DROP TRIGGER app_rule".to_owned(),
    })
    .await;
}

fn webhook_route(name: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\n{extra}\n"
    )
}

/// `run-job job --at at(minutes)` with the hook's URL and secret in its environment.
fn run_at(p: &Project, hook: &Receiver, minutes: i64) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = p
        .command(&["run-job", "job", "--at", &at(minutes)])
        .env("HOOK_URL", &hook.url)
        .env("HOOK_SECRET", SECRET)
        .env("BATCHSCORE_PUBLIC_URL", "http://batchscore.internal:9464/")
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// Whether `signature` is the HMAC-SHA256 of `body` under `secret`, as the README's Python
/// verifies it (Python's hmac, not this crate's).
fn python_verifies(body: &[u8], signature: &str, secret: &str) -> bool {
    let script = "import hashlib, hmac, json, sys\n\
        d = json.load(sys.stdin)\n\
        expected = 'sha256=' + hmac.new(d['secret'].encode(), d['body'].encode(), hashlib.sha256).hexdigest()\n\
        print(json.dumps(hmac.compare_digest(expected, d['signature'])))";
    let input = json!({
        "body": String::from_utf8(body.to_vec()).unwrap(),
        "signature": signature,
        "secret": secret,
    });
    python_json("python3", script, &input) == json!(true)
}

async fn failed_run_id(p: &Project) -> String {
    sqlx::query("SELECT run_id FROM batchscore_runs WHERE status = 'failed'")
        .fetch_one(&p.pool)
        .await
        .unwrap()
        .get(0)
}

async fn a_failed_window_is_sent_once_signed_and_resolved_once(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(6_000).await;
    p.write_job("job", &job("all"));
    let hook = Receiver::start();
    p.write_routes(&webhook_route("ops", ""));
    let validated = p
        .command(&["jobs", "validate"])
        .env("HOOK_URL", &hook.url)
        .env("HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert_exit(&validated, 0);
    assert!(stdout(&validated).contains("1 route(s)"));
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&run_at(&p, &hook, 11).0, 0);
    assert!(hook.requests().is_empty(), "nothing to tell yet");

    refuse_writes(&p, "predictions").await;
    let (out, _) = run_at(&p, &hook, 21);
    assert_exit(&out, 1);
    // run-job waits for its deliveries before it exits.
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "{:?}", hook.bodies());
    let (request, alert) = (&requests[0], requests[0].json());
    assert_eq!(alert["event"], "failed");
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["job"], "job");
    assert_eq!(alert["shard"], 0);
    assert_eq!(alert["window"], json!({"start": at(10), "end": at(20)}));
    assert_eq!(alert["run_id"], json!(failed_run_id(&p).await));
    assert_eq!(alert["dedup_key"], "job/0/failed");
    assert_eq!(alert["link"], "http://batchscore.internal:9464/");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.contains("the application refuses new predictions"),
        "{message}"
    );
    assert!(alert["details"]["error"].is_string() && alert["occurred_at"].is_string());
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(
        request.headers["x-batchscore-timestamp"]
            .parse::<i64>()
            .unwrap()
            > 1_700_000_000
    );
    let signature = &request.headers["x-batchscore-signature"];
    assert!(python_verifies(&request.body, signature, SECRET));
    assert!(!python_verifies(&request.body, signature, "another key"));

    // The same failure again, and a backfill of it: already told.
    assert_exit(&run_at(&p, &hook, 21).0, 1);
    assert_eq!(hook.requests().len(), 1, "{:?}", hook.bodies());

    allow_writes(&p, "predictions").await;
    assert_exit(&run_at(&p, &hook, 31).0, 0);
    let bodies = hook.wait_for(2, 5).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let resolved = &bodies[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["event"], "failed");
    assert_eq!(resolved["dedup_key"], alert["dedup_key"]);
    assert_eq!(resolved["window"]["start"], at(10));
    let request = &hook.requests()[1];
    assert!(python_verifies(
        &request.body,
        &request.headers["x-batchscore-signature"],
        SECRET
    ));
    assert_exit(&run_at(&p, &hook, 41).0, 0);
    assert_eq!(hook.requests().len(), 2, "resolved once");
    assert_eq!(
        p.count("SELECT count(*) FROM batchscore_alerts WHERE status = 'resolved'")
            .await,
        1
    );
}

on_all_databases!(a_failed_window_is_sent_once_signed_and_resolved_once);

#[tokio::test]
async fn slack_and_pagerduty_get_their_documented_shapes() {
    let p = Project::sqlite().await;
    p.seed_synthetic(6_000).await;
    p.write_job("job", &job("all"));
    let (slack, pagerduty) = (Receiver::start(), Receiver::start());
    p.write_routes(&format!(
            "[[route]]\nname = \"team-slack\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n\n\
             [[route]]\nname = \"oncall\"\nkind = \"pagerduty\"\nurl = \"{}\"\nurl_env = \"PD_KEY\"\n",
            pagerduty.url
        ),
    );
    let run = |minutes: i64| {
        p.command(&["run-job", "job", "--at", &at(minutes)])
            .env("SLACK_URL", &slack.url)
            .env("PD_KEY", "R0UT1NGKEY")
            .output()
            .unwrap()
    };
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&run(11), 0);
    refuse_writes(&p, "predictions").await;
    assert_exit(&run(21), 1);
    allow_writes(&p, "predictions").await;
    assert_exit(&run(31), 0);

    // Slack: an incoming-webhook message with Block Kit blocks and a fallback text.
    let messages = slack.wait_for(2, 5).await;
    for (message, status) in messages.iter().zip(["firing", "resolved"]) {
        assert!(
            message["text"].as_str().unwrap().contains(status),
            "{message}"
        );
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        for field in blocks[1]["fields"].as_array().unwrap() {
            assert_eq!(field["type"], "mrkdwn");
        }
        assert_eq!(blocks[2]["type"], "context");
        assert_eq!(blocks[2]["elements"][0]["type"], "mrkdwn");
    }
    let section = messages[0]["blocks"][1].to_string();
    assert!(
        section.contains("the application refuses new predictions")
            && section.contains(&at(10))
            && section.contains("*Job*\\njob"),
        "{section}"
    );
    assert!(
        messages[1]["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Resolved"),
        "{}",
        messages[1]
    );

    // PagerDuty Events API v2: trigger, then resolve with the same dedup key.
    let events = pagerduty.wait_for(2, 5).await;
    let (trigger, resolve) = (&events[0], &events[1]);
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "job/0/failed");
    let payload = &trigger["payload"];
    let summary = payload["summary"].as_str().unwrap();
    assert!(!summary.is_empty() && summary.chars().count() <= 1024);
    assert!(!payload["source"].as_str().unwrap().is_empty());
    assert!(
        ["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap())
    );
    assert!(chrono::DateTime::parse_from_rfc3339(payload["timestamp"].as_str().unwrap()).is_ok());
    assert_eq!(payload["component"], "job");
    assert_eq!(
        resolve,
        &json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": "job/0/failed"})
    );
}

/// Two daemons and three concurrent `run-job`s see the same failure: one alert, then one
/// resolution.
async fn one_failure_seen_by_five_processes_is_one_alert(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("job", &daemon_job("scores", "1s", 1000));
    let hook = Receiver::start();
    p.write_routes(&webhook_route("ops", "events = [\"failed\", \"resolved\"]"));
    let with_hook = |mut command: std::process::Command| {
        command
            .env("HOOK_URL", &hook.url)
            .env("HOOK_SECRET", SECRET);
        command
    };
    // The results table exists (the first window), then refuses writes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_exit(
        &with_hook(p.command(&["run-job", "job"])).output().unwrap(),
        0,
    );
    refuse_writes(&p, "scores").await;
    let feeding = feed(&p);
    let daemons: Vec<Daemon> = (0..2)
        .map(|_| Daemon::spawn(with_hook(p.command(&["daemon"]))))
        .collect();
    for _ in 0..3 {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                with_hook(p.command(&["run-job", "job"]))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut run in runs {
            // Off the test's thread: the feeder goes on meanwhile.
            let code = tokio::task::spawn_blocking(move || run.wait().unwrap().code())
                .await
                .unwrap();
            // 0: nothing was due yet (another process had just tried the window).
            assert!(matches!(code, Some(0 | 1 | 75)), "{code:?}");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    hook.wait_for(1, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed = p
        .count("SELECT count(*) FROM batchscore_runs WHERE status = 'failed'")
        .await;
    assert!(failed >= 4, "{failed} failed windows");
    assert_eq!(hook.requests().len(), 1, "{:?}", hook.bodies());

    allow_writes(&p, "scores").await;
    hook.wait_for(2, 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(feeding);
    for daemon in daemons {
        let (code, log) = stop_daemon(daemon, Duration::from_secs(70));
        assert_eq!(code, 0, "{log}");
    }
    let statuses: Vec<(String, String)> = hook
        .bodies()
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap().to_owned(),
                b["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed".into(), "firing".into()),
            ("failed".into(), "resolved".into())
        ],
        "{failed} failed windows, {:?}",
        hook.bodies()
    );
}

on_all_databases!(one_failure_seen_by_five_processes_is_one_alert);

/// A cron user's `alerts check`: a watermark far behind is `late`, told once; once the job
/// is current again, resolved.
async fn alerts_check_tells_a_late_job_once_and_its_recovery(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(1_000).await;
    p.write_job("job", &job("all"));
    let hook = Receiver::start();
    p.write_routes(&webhook_route("ops", ""));
    let check = || {
        p.command(&["alerts", "check"])
            .env("HOOK_URL", &hook.url)
            .env("HOOK_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = check();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("job: never run"), "{}", stdout(&out));
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    let out = check();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("job: late"), "{}", stdout(&out));
    let late = &hook.wait_for(1, 5).await[0];
    assert_eq!(late["event"], "late");
    assert_eq!(late["status"], "firing");
    assert_eq!(late["dedup_key"], "job/0/late");
    // Twice the schedule's 10 minutes plus the window's minute of lateness.
    assert_eq!(late["details"]["late_after_seconds"], 21 * 60);
    assert!(late["details"]["lag_seconds"].as_i64().unwrap() > 86_400);
    assert_exit(&check(), 0);
    assert_eq!(hook.requests().len(), 1, "told once");

    let recent = chrono::Utc::now() - chrono::TimeDelta::minutes(5);
    assert_exit(
        &p.batchscore(&["watermark", "set", "job", &rfc3339(recent)]),
        0,
    );
    let out = check();
    assert!(stdout(&out).contains("job: on time"), "{}", stdout(&out));
    let bodies = hook.wait_for(2, 5).await;
    assert_eq!(bodies[1]["event"], "late");
    assert_eq!(bodies[1]["status"], "resolved");
    assert_exit(&check(), 0);
    assert_eq!(hook.requests().len(), 2);
}

on_all_databases!(alerts_check_tells_a_late_job_once_and_its_recovery);

/// Under the daemon: a job whose windows stop committing (the source's rows cannot be written
/// anywhere) goes late, and resolves when they commit again.
#[tokio::test]
async fn the_daemon_tells_a_job_that_falls_behind_and_catches_up() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job(
        "job",
        &format!(
            "{}\n[alerts]\nlate_after = \"4s\"\n",
            daemon_job("scores", "1s", 1000)
        ),
    );
    let hook = Receiver::start();
    p.write_routes(&webhook_route("ops", "events = [\"late\", \"resolved\"]"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_exit(&p.batchscore(&["run-job", "job"]), 0);
    refuse_writes(&p, "scores").await;
    let feeding = feed(&p);
    let mut command = p.command(&["daemon", "--late-check-every", "1s"]);
    command
        .env("HOOK_URL", &hook.url)
        .env("HOOK_SECRET", SECRET);
    let daemon = Daemon::spawn(command);
    let late = hook.wait_for(1, 30).await[0].clone();
    assert_eq!(
        (late["event"].as_str(), late["status"].as_str()),
        (Some("late"), Some("firing"))
    );
    allow_writes(&p, "scores").await;
    let bodies = hook.wait_for(2, 30).await;
    assert_eq!(bodies[1]["status"], "resolved", "{bodies:?}");
    drop(feeding);
    let (code, log) = stop_daemon(daemon, Duration::from_secs(70));
    assert_eq!(code, 0, "{log}");
    assert_eq!(hook.requests().len(), 2, "{:?}", hook.bodies());
}

/// Receivers that answer 500, hang up, or never answer: the run's exit code is what it is
/// without alerts, each delivery is tried 3 times and given up within its bounds, and neither
/// the URL (which holds a token) nor the receiver's long answer is repeated.
#[tokio::test]
async fn a_hostile_receiver_changes_no_exit_code() {
    let mut baseline = None;
    for answer in [Answer::Status(500), Answer::Close, Answer::Hang] {
        let p = Project::sqlite().await;
        p.seed_synthetic(3_000).await;
        p.write_job("job", &job("all"));
        let hook = Receiver::start();
        hook.answer(answer);
        assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
        assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(11)]), 0);
        refuse_writes(&p, "predictions").await;
        let code = *baseline.get_or_insert_with(|| {
            p.batchscore(&["run-job", "job", "--at", &at(21)])
                .status
                .code()
        });
        let secret_url = format!("{}/T0/s3cr3t-t0ken", hook.url);
        p.write_routes(&webhook_route("ops", ""));
        let started = Instant::now();
        let out = p
            .command(&["run-job", "job", "--at", &at(21)])
            .env("HOOK_URL", &secret_url)
            .env("HOOK_SECRET", SECRET)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), code, "{answer:?}: {}", stderr(&out));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        let requests = hook.requests();
        assert_eq!(requests.len(), 3, "{answer:?}: tried 3 times\n{said}");
        assert!(requests.iter().all(|r| r.path == "/hook/T0/s3cr3t-t0ken"));
        // 3 tries of at most 10 s, 1 s and 4 s apart; the window itself takes well under 10 s.
        assert!(took < Duration::from_secs(50), "{answer:?} took {took:?}");
        assert!(
            said.contains("alert not delivered") && said.contains("route `ops`"),
            "{said}"
        );
        assert!(
            !said.contains("s3cr3t-t0ken") && !said.contains(&"x".repeat(201)),
            "{said}"
        );
        if answer == Answer::Status(500) {
            assert!(said.contains("HTTP 500"), "{said}");
        }
    }
}

/// The daemon goes on scheduling while a receiver fails: a healthy job's windows keep
/// committing every second, and the failed delivery is counted per route.
#[tokio::test]
async fn the_daemon_schedules_on_while_deliveries_fail() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("broken", &daemon_job("scores_broken", "1s", 1000));
    p.write_job("healthy", &daemon_job("scores_healthy", "1s", 1000));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_exit(&p.batchscore(&["run-job", "broken"]), 0);
    refuse_writes(&p, "scores_broken").await;
    let hook = Receiver::start();
    hook.answer(Answer::Hang);
    p.write_routes(&webhook_route("ops", "jobs = [\"broken\"]"));
    let feeding = feed(&p);
    let mut command = p.command(&["daemon", "--listen", "127.0.0.1:0"]);
    command
        .env("HOOK_URL", &hook.url)
        .env("HOOK_SECRET", SECRET);
    let daemon = Daemon::spawn(command);
    let port = daemon.port();
    hook.wait_for(1, 20).await;
    let hung_at = Instant::now();
    let committed =
        "SELECT count(*) FROM batchscore_runs WHERE job = 'healthy' AND status = 'succeeded'";
    let before = p.count(committed).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = p.count(committed).await - before;
    // A scheduler that waited on the receiver would commit none; a busy machine, fewer than 8.
    assert!(
        during >= 3,
        "{during} windows of the healthy job in 8 s of a hanging receiver"
    );
    // 3 tries of 10 s, 1 s and 4 s apart: counted once given up.
    let counted = "batchscore_alerts_failed_total{route=\"ops\"} 1";
    eventually(60, "the failed delivery counted", || async {
        http_get(port, "/metrics").is_some_and(|(_, body)| body.contains(counted))
    })
    .await;
    assert!(hung_at.elapsed() < Duration::from_secs(60));
    drop(feeding);
    let (code, log) = stop_daemon(daemon, Duration::from_secs(70));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(&hook.url), "the URL was logged:\n{log}");
}

#[tokio::test]
async fn bad_routes_exit_2_naming_the_route() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    for (routes, said) in [
        (
            "[[route]]\nname = \"pager\"\nkind = \"email\"\nurl = \"http://127.0.0.1:9/x\"\n",
            "route `pager`: kind `email` is not one of webhook, slack, pagerduty",
        ),
        (
            "[[route]]\nname = \"hook\"\nkind = \"webhook\"\nurl_env = \"BATCHSCORE_TEST_UNSET\"\n",
            "route `hook`: url_env names the environment variable `BATCHSCORE_TEST_UNSET`, which is not set",
        ),
        (
            "[[route]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"failed\", \"exploded\"]\n",
            "route `hook`: event `exploded` is not one of",
        ),
    ] {
        p.write_routes(routes);
        for args in [
            &["jobs", "validate"][..],
            &["alerts", "check"],
            &["alerts", "test"],
        ] {
            let out = p.batchscore(args);
            assert_exit(&out, 2);
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                text.contains(said) && text.contains("alerts.toml"),
                "{args:?}:\n{text}"
            );
        }
    }
    // An explicit --alerts file that is missing is an error too; the default one is optional.
    let out = p.batchscore(&["alerts", "check", "--alerts", "/nonexistent/alerts.toml"]);
    assert_exit(&out, 2);
    std::fs::remove_file(p.dir.path().join("alerts.toml")).unwrap();
    assert_exit(&p.batchscore(&["alerts", "check"]), 0);
}

/// A bad routes file does not stop scoring: run-job scores and says why no alert can go out.
#[tokio::test]
async fn a_bad_routes_file_does_not_stop_scoring() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    p.write_routes("[[route]]\nname = \"x\"\nkind = \"fax\"\nurl = \"http://x\"\n");
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    let out = p.batchscore(&["run-job", "job", "--at", &at(11)]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("alert routes unusable"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn alerts_test_prints_each_answer() {
    let p = Project::sqlite().await;
    let (good, bad) = (Receiver::start(), Receiver::start());
    bad.answer(Answer::Status(503));
    p.write_routes(&format!(
        "[[route]]\nname = \"good\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
             [[route]]\nname = \"bad\"\nkind = \"slack\"\nurl = \"{}\"\n",
        good.url, bad.url
    ));
    let out = p.batchscore(&["alerts", "test", "--route", "good"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("good (webhook): HTTP 200 after 1 try: ok"),
        "{}",
        stdout(&out)
    );
    let test = &good.bodies()[0];
    assert_eq!(
        (test["event"].as_str(), test["status"].as_str()),
        (Some("test"), Some("firing"))
    );
    assert!(bad.requests().is_empty());

    let out = p.batchscore(&["alerts", "test"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    let failed = text
        .lines()
        .find(|l| l.starts_with("bad (slack): FAILED"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failed.contains("HTTP 503 after 3 tries"), "{failed}");
    // The receiver answered 1000 bytes; 200 are repeated.
    assert_eq!(failed.matches('x').count(), 200, "{failed}");
    assert_eq!(bad.requests().len(), 3);
    let unknown = p.batchscore(&["alerts", "test", "--route", "nope"]);
    assert_exit(&unknown, 2);
    assert!(stderr(&unknown).contains("no such route (routes: good, bad)"));
}

/// Bad rows: a window that fails on them is a `bad_rows` alert for every route; rows
/// quarantined in a committed window only for routes that ask for `bad_rows` by name.
#[tokio::test]
async fn bad_rows_are_told_to_those_who_ask() {
    let p = Project::sqlite().await;
    p.seed_synthetic(4_000).await;
    let job_with = |max_fraction: f64| {
        format!(
            "{}\n[bad_rows]\npolicy = \"quarantine\"\nmax_fraction = {max_fraction}\n",
            job("all")
        )
    };
    p.write_job("job", &job_with(0.05));
    let (all, rows) = (Receiver::start(), Receiver::start());
    p.write_routes(&format!(
            "[[route]]\nname = \"all\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
             [[route]]\nname = \"rows\"\nkind = \"webhook\"\nurl = \"{}\"\nevents = [\"bad_rows\", \"resolved\"]\n",
            all.url, rows.url
        ),
    );
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(11)]), 0);
    // Window [10, 20): 10 of its 1000 rows bad, under the job's 5%: committed, quarantined.
    p.execute("UPDATE sensor_readings SET vibration = NULL WHERE reading_id BETWEEN 1000 AND 1009")
        .await;
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    let told = rows.wait_for(1, 5).await[0].clone();
    assert_eq!(
        (told["event"].as_str(), told["status"].as_str()),
        (Some("bad_rows"), Some("firing"))
    );
    assert_eq!(told["details"]["rows_bad"], 10);
    assert_eq!(told["details"]["rows_quarantined"], 10);
    assert!(all.requests().is_empty(), "{:?}", all.bodies());

    // Window [20, 30): 30 bad rows, over a bound of 2%: the window fails, every route hears
    // (the one that asked already has it open).
    p.execute("UPDATE sensor_readings SET vibration = NULL WHERE reading_id BETWEEN 2000 AND 2029")
        .await;
    p.write_job("job", &job_with(0.02));
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 1);
    let failed = all.wait_for(1, 5).await[0].clone();
    assert_eq!(
        (failed["event"].as_str(), failed["status"].as_str()),
        (Some("bad_rows"), Some("firing"))
    );
    assert_eq!(failed["details"]["rows_bad"], 30);
    assert_eq!(failed["details"]["max_fraction"], 0.02);
    assert_eq!(rows.requests().len(), 1);

    p.execute("UPDATE sensor_readings SET vibration = 1.5 WHERE reading_id BETWEEN 2000 AND 2029")
        .await;
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 0);
    for receiver in [&all, &rows] {
        let bodies = receiver.wait_for(2, 5).await;
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert_eq!(
            (bodies[1]["event"].as_str(), bodies[1]["status"].as_str()),
            (Some("bad_rows"), Some("resolved"))
        );
    }
}

/// An open alert is sent again once its route's `repeat_every` has passed, and not before.
#[tokio::test]
async fn an_open_alert_repeats_after_repeat_every() {
    let p = Project::sqlite().await;
    p.seed_synthetic(3_000).await;
    p.write_job("job", &job("all"));
    let hook = Receiver::start();
    p.write_routes(&webhook_route("ops", "repeat_every = \"2s\""));
    assert_exit(&p.batchscore(&["watermark", "set", "job", &at(0)]), 0);
    assert_exit(&run_at(&p, &hook, 11).0, 0);
    refuse_writes(&p, "predictions").await;
    assert_exit(&run_at(&p, &hook, 21).0, 1);
    assert_exit(&run_at(&p, &hook, 21).0, 1);
    assert_eq!(hook.requests().len(), 1, "not yet: {:?}", hook.bodies());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_exit(&run_at(&p, &hook, 21).0, 1);
    let bodies = hook.wait_for(2, 5).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        (bodies[1]["event"].as_str(), bodies[1]["status"].as_str()),
        (Some("failed"), Some("firing"))
    );
    assert_eq!(bodies[1]["dedup_key"], bodies[0]["dedup_key"]);
    assert_eq!(
        p.count("SELECT sent FROM batchscore_alerts WHERE event = 'failed'")
            .await,
        2
    );
}
