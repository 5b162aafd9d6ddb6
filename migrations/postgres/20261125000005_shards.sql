-- Shards: a job split by key into `[source] shards = N` parts, each with its own watermark,
-- claim and ledger rows. Existing rows become shard 0 of 1, which is what a job without
-- `shards` is.
ALTER TABLE batchscore_watermarks
    ADD COLUMN shard bigint NOT NULL DEFAULT 0,
    ADD COLUMN shards bigint NOT NULL DEFAULT 1,  -- how many shards the job had when this moved
    DROP CONSTRAINT batchscore_watermarks_pkey,
    ADD PRIMARY KEY (job, shard);

ALTER TABLE batchscore_claims
    ADD COLUMN shard bigint NOT NULL DEFAULT 0,
    DROP CONSTRAINT batchscore_claims_pkey,
    ADD PRIMARY KEY (job, shard);

ALTER TABLE batchscore_runs ADD COLUMN shard bigint NOT NULL DEFAULT 0;
