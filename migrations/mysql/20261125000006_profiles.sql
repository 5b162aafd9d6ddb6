-- Drift monitoring: a profile of every committed window, one row per feature and output column,
-- written in the window's transaction, and the reference `batchscore monitor set-reference`
-- stores (see the other databases' 0006 for the columns).
CREATE TABLE IF NOT EXISTS batchscore_profiles (
    run_id        VARCHAR(64) NOT NULL,
    job           VARCHAR(64) NOT NULL,
    shard         BIGINT NOT NULL,
    window_start  DATETIME(6) NOT NULL,
    window_end    DATETIME(6) NOT NULL,
    column_name   VARCHAR(64) NOT NULL,
    role          VARCHAR(16) NOT NULL CHECK (role IN ('feature', 'output')),
    kind          VARCHAR(16) NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     BIGINT NOT NULL,
    null_count    BIGINT NOT NULL,
    bad_count     BIGINT NOT NULL,
    mean          DOUBLE,
    std           DOUBLE,
    m2            DOUBLE,
    min_value     DOUBLE,
    max_value     DOUBLE,
    summary       MEDIUMTEXT NOT NULL,
    sketch        MEDIUMBLOB NOT NULL,
    PRIMARY KEY (run_id, role, column_name),
    -- With the shard: a window's profile replaces its shard's earlier ones by a range DELETE,
    -- which must not scan (and lock) other shards' rows, written concurrently.
    INDEX batchscore_profiles_job_window (job, shard, window_end)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS batchscore_references (
    job           VARCHAR(64) NOT NULL,
    column_name   VARCHAR(64) NOT NULL,
    window_start  DATETIME(6) NOT NULL,
    window_end    DATETIME(6) NOT NULL,
    windows       BIGINT NOT NULL,
    set_at        DATETIME(6) NOT NULL,
    role          VARCHAR(16) NOT NULL CHECK (role IN ('feature', 'output')),
    kind          VARCHAR(16) NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     BIGINT NOT NULL,
    null_count    BIGINT NOT NULL,
    bad_count     BIGINT NOT NULL,
    mean          DOUBLE,
    std           DOUBLE,
    m2            DOUBLE,
    min_value     DOUBLE,
    max_value     DOUBLE,
    summary       MEDIUMTEXT NOT NULL,
    sketch        MEDIUMBLOB NOT NULL,
    PRIMARY KEY (job, role, column_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
