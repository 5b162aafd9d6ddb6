//! The daemon's listener under abuse: 200 concurrent `/metrics` clients, 50 more reloading the
//! status page, and 50 connections that trickle a header byte every two seconds. Every scrape
//! and page is answered, the slow connections are cut off, an oversized header and a request
//! body are refused, and meanwhile a job on a one-second schedule keeps committing its windows
//! on time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::daemon::{create_readings, feed, insert_now, job, start_daemon, stop_daemon};
use crate::support::*;

/// Connect and send `head`, then one more byte every two seconds; how long until the server
/// closed the connection (or `limit`, if it never did).
fn trickle(port: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    let mut next_byte = Instant::now();
    while started.elapsed() < limit {
        if Instant::now() >= next_byte {
            if stream.write_all(b"a").is_err() {
                return started.elapsed();
            }
            next_byte += Duration::from_secs(2);
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            // Whatever the server says (a 408), it then closes.
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return started.elapsed(),
        }
    }
    limit
}

/// A raw request and the status line of its answer (None if the connection closed first).
fn raw(port: u16, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abusive_clients_neither_stall_scheduling_nor_hold_the_listener() {
    let p = Project::sqlite().await;
    create_readings(&p).await;
    insert_now(&p.pool, p.kind).await;
    p.write_job("a", &job("scores_a", "1s", 1000));
    assert_exit(&p.batchscore(&["migrate"]), 0);
    let feeding = feed(&p);
    let daemon = start_daemon(&p, &["--listen", "127.0.0.1:0"]);
    let port = daemon.port();
    crate::daemon::wait_for_windows(&p, "a", 2, 30).await;
    let storm_started = chrono::Utc::now();

    let slow: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || trickle(port, Duration::from_secs(30))))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let scrapes: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                (0..3)
                    .filter(|_| {
                        http_get(port, "/metrics").is_some_and(|(status, body)| {
                            status == 200 && body.contains("batchscore_windows_total")
                        })
                    })
                    .count()
            })
        })
        .collect();
    // People at the status page meanwhile: pages are made one at a time, on a pool of their own.
    let pages: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                ["/", "/jobs/a", "/"]
                    .into_iter()
                    .filter(|path| {
                        http_get(port, path).is_some_and(|(status, body)| {
                            status == 200 && body.contains("data-job=\"a\"")
                        })
                    })
                    .count()
            })
        })
        .collect();
    let answered: usize = scrapes.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 600, "every scrape of 200 clients answered");
    let shown: usize = pages.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(shown, 150, "every page of 50 clients shown");
    let cut_off: Vec<Duration> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let slowest = cut_off.iter().max().unwrap();
    eprintln!(
        "measured: 600 of 600 scrapes answered; the slowest trickling client was cut off after {slowest:.1?}"
    );
    assert!(
        *slowest < Duration::from_secs(15),
        "a slow client held on for {slowest:?}"
    );

    // Headers and bodies are bounded.
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = raw(port, huge_header.as_bytes());
    assert!(
        answer.as_deref().is_none_or(|a| a.contains("431")),
        "{answer:?}"
    );
    let body = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{}",
        "b".repeat(1000)
    );
    let answer = raw(port, body.as_bytes());
    assert!(
        answer.as_deref().is_some_and(|a| a.contains("413")),
        "{answer:?}"
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    drop(feeding);
    let (code, log) = stop_daemon(daemon, Duration::from_secs(20));
    assert_eq!(code, 0, "{log}");
    // Scheduling went on: during the storm, windows committed every second or so.
    let commits: Vec<f64> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT unixepoch(finished_at, 'subsec') FROM batchscore_runs WHERE job = 'a' AND status = 'succeeded' \
         AND finished_at >= '{}' ORDER BY finished_at",
        storm_started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )))
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        commits.len() >= 5,
        "{} windows committed during the storm",
        commits.len()
    );
    let longest = commits.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(longest < 4.0, "a {longest:.1} s gap between commits");
    eprintln!(
        "measured: {} windows committed during the storm, the longest gap between commits {longest:.2} s",
        commits.len()
    );
    crate::daemon::assert_every_eligible_row_scored_once(&p, "a", "scores_a", 5).await;
}
