-- The run ledger: one row per run of a job.
CREATE TABLE IF NOT EXISTS batchscore_runs (
    run_id        text PRIMARY KEY,
    job           text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_read     bigint NOT NULL DEFAULT 0,
    rows_written  bigint NOT NULL DEFAULT 0,
    model_sha256  text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    error         text,
    host          text NOT NULL,
    pid           bigint NOT NULL
);

CREATE INDEX IF NOT EXISTS batchscore_runs_job_started ON batchscore_runs (job, started_at);
