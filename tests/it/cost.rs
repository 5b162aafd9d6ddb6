//! A window's cost follows the window: `jobs validate` says when it would not (a source table
//! without an index on its timestamp, a query that reads a whole table, SQLite times in forms
//! the index cannot find), and the `CREATE INDEX` it prints works; on SQLite and PostgreSQL.
//! (The plans themselves are checked in the unit tests of `db/sqlite/window.rs` and
//! `db/postgres/read.rs`.)

use crate::support::*;
use crate::windows::{at, job};

fn warnings(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("warning: ").map(str::to_owned))
        .collect()
}

async fn validate_names_the_missing_index_and_its_statement_works(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(1_000).await;
    p.write_job("job", &job("all"));
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    let found = warnings(&out);
    assert_eq!(found.len(), 1, "{}", stdout(&out));
    assert!(
        found[0].starts_with("sensor_readings has no index whose first column is recorded_at"),
        "{}",
        found[0]
    );
    let create = found[0].split("Create one: ").nth(1).unwrap();
    p.execute(create).await;
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    assert_eq!(warnings(&out), Vec::<String>::new(), "{}", stdout(&out));
    // Indexed, the runs score exactly as before.
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(21)]), 0);
    assert_eq!(
        p.count("SELECT count(*) FROM predictions").await,
        0,
        "1,000 rows span the first ten minutes only"
    );
    p.seed_synthetic_range(1_000, 3_000).await;
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at(31)]), 0);
    assert_eq!(p.count("SELECT count(*) FROM predictions").await, 1_000);
}

on_all_databases!(validate_names_the_missing_index_and_its_statement_works);

async fn validate_warns_of_a_query_that_reads_a_whole_table(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    p.seed_synthetic(100).await;
    // The window applies to a column the query computes: no index can bound it.
    let text = job("all").replace(
        "table = \"sensor_readings\"",
        "query = \"SELECT reading_id, recorded_at AS taken_at, temperature, vibration, pressure, rpm FROM sensor_readings ORDER BY reading_id LIMIT 1000000\"",
    );
    p.write_job(
        "job",
        &text.replace("timestamp = \"recorded_at\"", "timestamp = \"taken_at\""),
    );
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    let found = warnings(&out);
    assert!(
        found
            .iter()
            .any(|w| w.starts_with("source.query reads all of")),
        "{}",
        stdout(&out)
    );

    // A filtering query over an indexed column: the database pushes the window into it.
    p.execute("CREATE INDEX sensor_readings_recorded_at ON sensor_readings (recorded_at)")
        .await;
    let text = job("all").replace(
        "table = \"sensor_readings\"",
        "query = \"SELECT * FROM sensor_readings WHERE temperature > 0\"",
    );
    p.write_job("job", &text);
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    assert_eq!(warnings(&out), Vec::<String>::new(), "{}", stdout(&out));
}

on_all_databases!(validate_warns_of_a_query_that_reads_a_whole_table);

#[tokio::test]
async fn sqlite_validate_reports_times_in_forms_no_window_finds() {
    let p = Project::sqlite().await;
    p.seed_synthetic(100).await;
    p.execute("CREATE INDEX sensor_readings_recorded_at ON sensor_readings (recorded_at)")
        .await;
    p.execute(
        "INSERT INTO sensor_readings VALUES (100000, '2026-01-10', 60, 1, 4, 900), \
         (100001, ' 2026-01-10T00:00:05Z', 60, 1, 4, 900)",
    )
    .await;
    p.write_job("job", &job("all"));
    let out = p.batchscore(&["jobs", "validate"]);
    assert_exit(&out, 0);
    let found = warnings(&out);
    assert_eq!(found.len(), 1, "{}", stdout(&out));
    assert!(
        found[0].starts_with("2 value(s) of recorded_at are text in no supported form"),
        "{}",
        found[0]
    );
}
