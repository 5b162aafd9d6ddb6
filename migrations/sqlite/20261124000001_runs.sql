-- The run ledger: one row per run of a job. Times are RFC 3339 text in UTC (fixed width, so
-- text order is time order).
CREATE TABLE IF NOT EXISTS batchscore_runs (
    run_id        TEXT PRIMARY KEY NOT NULL,
    job           TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    window_end    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_read     INTEGER NOT NULL DEFAULT 0,
    rows_written  INTEGER NOT NULL DEFAULT 0,
    model_sha256  TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    error         TEXT,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS batchscore_runs_job_started ON batchscore_runs (job, started_at);
