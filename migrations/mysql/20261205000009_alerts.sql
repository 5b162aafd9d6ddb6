-- Alerts (alerts.toml): one row per job, shard, event and route (see the PostgreSQL migration
-- for the columns).
CREATE TABLE IF NOT EXISTS batchscore_alerts (
    job           VARCHAR(64) NOT NULL,
    shard         BIGINT NOT NULL,
    event         VARCHAR(16) NOT NULL,
    route         VARCHAR(64) NOT NULL,
    status        VARCHAR(16) NOT NULL CHECK (status IN ('firing', 'resolved')),
    opened_at     DATETIME(6) NOT NULL,
    last_sent_at  DATETIME(6) NOT NULL,
    resolved_at   DATETIME(6),
    sent          BIGINT NOT NULL,
    run_id        VARCHAR(64),
    window_start  DATETIME(6),
    window_end    DATETIME(6),
    message       TEXT NOT NULL,
    PRIMARY KEY (job, shard, event, route)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
