-- Watermarks: per job, the end of the last committed window. Moved only by compare-and-set in
-- the transaction that commits that window.
CREATE TABLE IF NOT EXISTS batchscore_watermarks (
    job         TEXT PRIMARY KEY NOT NULL,
    watermark   TEXT NOT NULL,
    run_id      TEXT,              -- the run that moved it, or NULL when set by hand
    updated_at  TEXT NOT NULL
);

-- Claims: which run holds a job right now, until when (the lease).
CREATE TABLE IF NOT EXISTS batchscore_claims (
    job         TEXT PRIMARY KEY NOT NULL,
    claim_id    TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    claimed_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
