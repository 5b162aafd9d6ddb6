//! `batchscore status`: one line per job with its state, and an exit code a cron or
//! Nagios-style check can use; `--json` for scripts. On SQLite and PostgreSQL.

use serde_json::Value;

use crate::daemon::{create_readings, insert_now};
use crate::support::*;

/// Every minute, windows of a minute, a second of lateness: fresh rows make it `ok`.
fn minutely(policy: &str) -> String {
    crate::daemon::job("scores", "1m", 1000).replace("* * * * * *", "* * * * *")
        + &format!("\n[bad_rows]\npolicy = \"{policy}\"\n")
}

fn status_json(p: &Project, args: &[&str]) -> (i32, Value) {
    let out = p.batchscore(&[&["status", "--json"][..], args].concat());
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "{}", stderr(&out));
    (code, serde_json::from_str(&stdout(&out)).unwrap())
}

/// A claim on the job's shard 0 that lapses in the far future, as a running holder's would.
async fn hold(p: &Project) {
    let (now, later) = match p.kind {
        Kind::Sqlite => (
            "'2026-01-01T00:00:00.000000Z'",
            "'2999-01-01T00:00:00.000000Z'",
        ),
        Kind::Postgres => ("now()", "now() + interval '1 day'"),
        Kind::Mysql => ("UTC_TIMESTAMP(6)", "UTC_TIMESTAMP(6) + INTERVAL 1 DAY"),
    };
    p.execute(&format!(
        "INSERT INTO batchscore_claims (job, shard, claim_id, host, pid, claimed_at, expires_at) \
         VALUES ('a', 0, 'held', 'elsewhere', 1, {now}, {later})"
    ))
    .await;
}

async fn status_says_which_jobs_are_healthy(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    create_readings(&p).await;
    p.write_job("a", &minutely("quarantine"));
    assert_exit(&p.batchscore(&["migrate"]), 0);

    // Never run: healthy as far as a check goes.
    let (code, jobs) = status_json(&p, &[]);
    assert_eq!(code, 0);
    assert_eq!(jobs[0]["job"], "a");
    assert_eq!(jobs[0]["state"], "never run");

    // A run over fresh rows: ok, with what it wrote.
    insert_now(&p.pool, kind).await;
    // Windows end a second (the lateness) before the whole second of the run.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_exit(&p.batchscore(&["run-job", "a"]), 0);
    let (code, jobs) = status_json(&p, &[]);
    assert_eq!(code, 0, "{jobs}");
    let a = &jobs[0];
    assert_eq!(a["state"], "ok", "{a}");
    assert_eq!(a["rows_written_24h"], 5, "{a}");
    assert_eq!(a["failures_24h"], 0, "{a}");
    assert!(a["last_success_age_seconds"].as_i64().unwrap() < 60, "{a}");
    assert!(a["lag_seconds"].as_i64().unwrap() < 60, "{a}");
    assert!(a["next_run"].as_str().is_some(), "{a}");
    let out = p.batchscore(&["status"]);
    assert_exit(&out, 0);
    let line = stdout(&out)
        .lines()
        .find(|l| l.trim_start().starts_with("a "))
        .unwrap()
        .to_owned();
    assert!(line.contains(" ok ") && line.contains("ago"), "{line}");

    // Busy while a shard's claim is held.
    hold(&p).await;
    assert_eq!(status_json(&p, &[]).1[0]["state"], "busy");
    p.execute("DELETE FROM batchscore_claims").await;

    // Behind by an hour: late, exit 1.
    let hour_ago = rfc3339(chrono::Utc::now() - chrono::TimeDelta::hours(1));
    assert_exit(&p.batchscore(&["watermark", "set", "a", &hour_ago]), 0);
    let (code, jobs) = status_json(&p, &[]);
    assert_eq!(
        (code, jobs[0]["state"].as_str()),
        (1, Some("late")),
        "{jobs}"
    );
    let out = p.batchscore(&["status"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("late"), "{}", stdout(&out));
    // Caught up: ok again.
    assert_exit(&p.batchscore(&["run-job", "a"]), 0);
    assert_eq!(status_json(&p, &[]).1[0]["state"], "ok");

    // A window that fails: failing, exit 1; `status a` lists the window and its error.
    insert_now(&p.pool, kind).await;
    p.execute("UPDATE readings SET vibration = NULL WHERE id = (SELECT max(id) FROM readings)")
        .await;
    p.write_job("a", &minutely("fail"));
    // Windows end a second (the lateness) before the whole second of the run.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_exit(&p.batchscore(&["run-job", "a"]), 1);
    let (code, a) = status_json(&p, &["a"]);
    assert_eq!((code, a["state"].as_str()), (1, Some("failing")), "{a}");
    assert_eq!(a["failures_24h"], 1, "{a}");
    assert_eq!(a["bad_rows_24h"], 1, "{a}");
    let runs = a["runs"].as_array().unwrap();
    assert_eq!(runs[0]["status"], "failed", "{a}");
    assert!(
        runs[0]["error"].as_str().unwrap().contains("vibration"),
        "{a}"
    );
    let out = p.batchscore(&["status", "a"]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("failing") && stdout(&out).contains("failed"),
        "{}",
        stdout(&out)
    );
    // An unknown job is a usage error.
    assert_exit(&p.batchscore(&["status", "nope"]), 2);
}

on_all_databases!(status_says_which_jobs_are_healthy);
