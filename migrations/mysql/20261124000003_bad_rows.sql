-- Bad rows kept aside: one row per job and key. `key` is a reserved word here, always quoted.
-- 700 characters of key: with the job, within InnoDB's 3072-byte index limit in utf8mb4.
CREATE TABLE IF NOT EXISTS batchscore_quarantine (
    job             VARCHAR(64) NOT NULL,
    `key`           VARCHAR(700) NOT NULL,
    run_id          VARCHAR(64) NOT NULL,
    column_name     VARCHAR(64) NOT NULL,
    reason          TEXT NOT NULL,
    features        LONGTEXT NOT NULL,  -- the row's feature values as read, as JSON
    window_start    DATETIME(6) NOT NULL,
    window_end      DATETIME(6) NOT NULL,
    quarantined_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (job, `key`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
