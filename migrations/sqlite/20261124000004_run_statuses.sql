-- Run statuses `skipped` and `abandoned`. The first release's 0001 allowed only running,
-- succeeded and failed; later releases widened that CHECK by editing 0001 in place, which this
-- migration replaces. Databases of either kind end with the same table.
--
-- SQLite cannot alter a CHECK: the table is rebuilt (columns as 0001 and 0003 left them), in the
-- migration's transaction.
CREATE TABLE batchscore_runs_new (
    run_id            TEXT PRIMARY KEY NOT NULL,
    job               TEXT NOT NULL,
    window_start      TEXT NOT NULL,
    window_end        TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    rows_read         INTEGER NOT NULL DEFAULT 0,
    rows_written      INTEGER NOT NULL DEFAULT 0,
    model_sha256      TEXT NOT NULL,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    error             TEXT,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    rows_bad          INTEGER NOT NULL DEFAULT 0,
    rows_quarantined  INTEGER NOT NULL DEFAULT 0,
    rows_skipped      INTEGER NOT NULL DEFAULT 0,
    bad_rows          TEXT
);

INSERT INTO batchscore_runs_new (run_id, job, window_start, window_end, status, rows_read,
    rows_written, model_sha256, started_at, finished_at, error, host, pid, rows_bad,
    rows_quarantined, rows_skipped, bad_rows)
SELECT run_id, job, window_start, window_end, status, rows_read, rows_written, model_sha256,
    started_at, finished_at, error, host, pid, rows_bad, rows_quarantined, rows_skipped, bad_rows
FROM batchscore_runs;

DROP TABLE batchscore_runs;
ALTER TABLE batchscore_runs_new RENAME TO batchscore_runs;
CREATE INDEX batchscore_runs_job_started ON batchscore_runs (job, started_at);
