-- The run ledger: one row per run of a job (one shard's window, a skipped range, a failure).
-- MySQL and MariaDB start at batchscore's current shapes, so their migrations skip the versions
-- that only reworked the other databases' earlier ones (0004, 0005). DDL is not transactional
-- here: every statement is IF NOT EXISTS, so a file that failed partway can run again.
-- Times are DATETIME(6) holding UTC (batchscore's sessions run with time_zone = '+00:00');
-- text that identifies is utf8mb4_bin, so job names compare as they do elsewhere (exactly).
CREATE TABLE IF NOT EXISTS batchscore_runs (
    run_id            VARCHAR(64) NOT NULL PRIMARY KEY,
    job               VARCHAR(64) NOT NULL,
    shard             BIGINT NOT NULL DEFAULT 0,
    window_start      DATETIME(6) NOT NULL,
    window_end        DATETIME(6) NOT NULL,
    status            VARCHAR(16) NOT NULL,
    rows_read         BIGINT NOT NULL DEFAULT 0,
    rows_written      BIGINT NOT NULL DEFAULT 0,
    rows_bad          BIGINT NOT NULL DEFAULT 0,
    rows_quarantined  BIGINT NOT NULL DEFAULT 0,
    rows_skipped      BIGINT NOT NULL DEFAULT 0,
    bad_rows          TEXT,
    model_sha256      VARCHAR(64) NOT NULL,
    started_at        DATETIME(6) NOT NULL,
    finished_at       DATETIME(6),
    error             MEDIUMTEXT,
    host              VARCHAR(255) NOT NULL,
    pid               BIGINT NOT NULL,
    CONSTRAINT batchscore_runs_status_check
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    INDEX batchscore_runs_job_started (job, started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
