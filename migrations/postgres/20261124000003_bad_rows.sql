-- Bad rows: what each window found and where the rows went, and the quarantine itself.
ALTER TABLE batchscore_runs ADD COLUMN rows_bad bigint NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN rows_quarantined bigint NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN rows_skipped bigint NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN bad_rows text;  -- "vibration is NULL: 3; ..."

-- One row per source row a job could not score, until a later run scores it. Written in the
-- window's transaction, with the results.
CREATE TABLE IF NOT EXISTS batchscore_quarantine (
    job             text NOT NULL,
    key             text NOT NULL,
    run_id          text NOT NULL,
    column_name     text NOT NULL,
    reason          text NOT NULL,
    features        jsonb NOT NULL,  -- the row's feature values as read
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL,
    PRIMARY KEY (job, key)
);
