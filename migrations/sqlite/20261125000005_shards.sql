-- Shards: a job split by key into `[source] shards = N` parts, each with its own watermark,
-- claim and ledger rows. Existing rows become shard 0 of 1, which is what a job without
-- `shards` is.
--
-- SQLite cannot change a primary key: the watermarks and claims tables are rebuilt, in the
-- migration's transaction.
CREATE TABLE batchscore_watermarks_new (
    job         TEXT NOT NULL,
    shard       INTEGER NOT NULL DEFAULT 0,
    shards      INTEGER NOT NULL DEFAULT 1,  -- how many shards the job had when this moved
    watermark   TEXT NOT NULL,
    run_id      TEXT,              -- the run that moved it, or NULL when set by hand
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (job, shard)
);
INSERT INTO batchscore_watermarks_new (job, watermark, run_id, updated_at)
SELECT job, watermark, run_id, updated_at FROM batchscore_watermarks;
DROP TABLE batchscore_watermarks;
ALTER TABLE batchscore_watermarks_new RENAME TO batchscore_watermarks;

CREATE TABLE batchscore_claims_new (
    job         TEXT NOT NULL,
    shard       INTEGER NOT NULL DEFAULT 0,
    claim_id    TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    claimed_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (job, shard)
);
INSERT INTO batchscore_claims_new (job, claim_id, host, pid, claimed_at, expires_at)
SELECT job, claim_id, host, pid, claimed_at, expires_at FROM batchscore_claims;
DROP TABLE batchscore_claims;
ALTER TABLE batchscore_claims_new RENAME TO batchscore_claims;

ALTER TABLE batchscore_runs ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
