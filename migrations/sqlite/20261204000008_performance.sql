-- Realized performance: a job's predictions joined with the application's own labels, one row
-- per window × model × metric (see the PostgreSQL migration for the columns). Times are RFC 3339
-- text in UTC, as in the other tables.
CREATE TABLE IF NOT EXISTS batchscore_performance (
    job           TEXT NOT NULL,
    shard         INTEGER NOT NULL,
    window_start  TEXT NOT NULL,
    window_end    TEXT NOT NULL,
    model         TEXT NOT NULL CHECK (model IN ('champion', 'challenger')),
    metric        TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    model_sha256  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('provisional', 'final')),
    value         REAL,
    detail        TEXT,
    evaluated_at  TEXT NOT NULL,
    PRIMARY KEY (job, shard, window_start, window_end, model, metric)
);

CREATE INDEX IF NOT EXISTS batchscore_performance_job_window
    ON batchscore_performance (job, window_end);
