-- Watermarks: per job, the end of the last committed window. Moved only by compare-and-set in
-- the transaction that commits that window.
CREATE TABLE IF NOT EXISTS batchscore_watermarks (
    job         text PRIMARY KEY,
    watermark   timestamptz NOT NULL,
    run_id      text,              -- the run that moved it, or NULL when set by hand
    updated_at  timestamptz NOT NULL
);

-- Claims: which run holds a job right now, until when (the lease). The holder also keeps a
-- session advisory lock, which PostgreSQL drops with its connection if the process dies.
CREATE TABLE IF NOT EXISTS batchscore_claims (
    job         text PRIMARY KEY,
    claim_id    text NOT NULL,
    host        text NOT NULL,
    pid         bigint NOT NULL,
    claimed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
