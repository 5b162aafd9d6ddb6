-- Realized performance: a job's predictions joined with the application's own labels, one row
-- per window × model × metric (see the PostgreSQL migration for the columns).
CREATE TABLE IF NOT EXISTS batchscore_performance (
    job           VARCHAR(64) NOT NULL,
    shard         BIGINT NOT NULL,
    window_start  DATETIME(6) NOT NULL,
    window_end    DATETIME(6) NOT NULL,
    model         VARCHAR(16) NOT NULL CHECK (model IN ('champion', 'challenger')),
    metric        VARCHAR(32) NOT NULL,
    run_id        VARCHAR(64) NOT NULL,
    model_sha256  VARCHAR(64) NOT NULL,
    status        VARCHAR(16) NOT NULL CHECK (status IN ('provisional', 'final')),
    value         DOUBLE,
    detail        MEDIUMTEXT,
    evaluated_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (job, shard, window_start, window_end, model, metric),
    INDEX batchscore_performance_job_window (job, window_end)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
