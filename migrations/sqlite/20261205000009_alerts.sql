-- Alerts (alerts.toml): one row per job, shard, event and route (see the PostgreSQL migration
-- for the columns). Times are RFC 3339 text in UTC, as in the other tables.
CREATE TABLE IF NOT EXISTS batchscore_alerts (
    job           TEXT NOT NULL,
    shard         INTEGER NOT NULL,
    event         TEXT NOT NULL,
    route         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    opened_at     TEXT NOT NULL,
    last_sent_at  TEXT NOT NULL,
    resolved_at   TEXT,
    sent          INTEGER NOT NULL,
    run_id        TEXT,
    window_start  TEXT,
    window_end    TEXT,
    message       TEXT NOT NULL,
    PRIMARY KEY (job, shard, event, route)
);
