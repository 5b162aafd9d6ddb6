-- Watermarks (the end of each shard's last committed window) and claims (one run per shard at a
-- time), keyed by job and shard.
CREATE TABLE IF NOT EXISTS batchscore_watermarks (
    job         VARCHAR(64) NOT NULL,
    shard       BIGINT NOT NULL DEFAULT 0,
    shards      BIGINT NOT NULL DEFAULT 1,  -- how many shards the job had when this moved
    watermark   DATETIME(6) NOT NULL,
    run_id      VARCHAR(64),                -- the run that moved it, or NULL when set by hand
    updated_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (job, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS batchscore_claims (
    job         VARCHAR(64) NOT NULL,
    shard       BIGINT NOT NULL DEFAULT 0,
    claim_id    VARCHAR(64) NOT NULL,
    host        VARCHAR(255) NOT NULL,
    pid         BIGINT NOT NULL,
    claimed_at  DATETIME(6) NOT NULL,
    expires_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (job, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
