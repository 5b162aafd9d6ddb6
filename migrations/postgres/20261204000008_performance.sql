-- Realized performance: a job's predictions joined with the application's own labels, one row
-- per window × model × metric (`batchscore evaluate`, and the daemon and `run-job` once a
-- window's labels are due). `value` is NULL where the metric is undefined for the window (an
-- AUC with one class only); `detail` holds what one number cannot (the calibration table, as
-- JSON). A window is `provisional` until its labels' maturity has passed, then `final`; every
-- evaluation recomputes what it reads, so late labels change the stored figures.
CREATE TABLE IF NOT EXISTS batchscore_performance (
    job           text NOT NULL,
    shard         bigint NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    model         text NOT NULL CHECK (model IN ('champion', 'challenger')),
    metric        text NOT NULL,
    run_id        text NOT NULL,
    model_sha256  text NOT NULL,
    status        text NOT NULL CHECK (status IN ('provisional', 'final')),
    value         double precision,
    detail        text,
    evaluated_at  timestamptz NOT NULL,
    PRIMARY KEY (job, shard, window_start, window_end, model, metric)
);

CREATE INDEX IF NOT EXISTS batchscore_performance_job_window
    ON batchscore_performance (job, window_end);
