-- Alerts (alerts.toml): one row per job, shard, event and route, the state that makes an alert
-- go out once however many processes see its cause. `status` is `firing` from the alert's first
-- delivery until the condition clears, then `resolved`; each change is taken by compare-and-set
-- (like claims), and only the process whose statement changed the row delivers. `shard` is -1
-- for what concerns the whole job (realized performance). `last_sent_at` spaces repeats by the
-- route's `repeat_every`; `sent` counts deliveries of the open alert.
CREATE TABLE IF NOT EXISTS batchscore_alerts (
    job           text NOT NULL,
    shard         bigint NOT NULL,
    event         text NOT NULL,
    route         text NOT NULL,
    status        text NOT NULL CHECK (status IN ('firing', 'resolved')),
    opened_at     timestamptz NOT NULL,
    last_sent_at  timestamptz NOT NULL,
    resolved_at   timestamptz,
    sent          bigint NOT NULL,
    run_id        text,
    window_start  timestamptz,
    window_end    timestamptz,
    message       text NOT NULL,
    PRIMARY KEY (job, shard, event, route)
);
