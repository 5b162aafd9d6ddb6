-- Bad rows: what each window found and where the rows went, and the quarantine itself.
ALTER TABLE batchscore_runs ADD COLUMN rows_bad INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN rows_quarantined INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN rows_skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batchscore_runs ADD COLUMN bad_rows TEXT;  -- "vibration is NULL: 3; ..."

-- One row per source row a job could not score, until a later run scores it. Written in the
-- window's transaction, with the results.
CREATE TABLE IF NOT EXISTS batchscore_quarantine (
    job             TEXT NOT NULL,
    key             TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    column_name     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    features        TEXT NOT NULL,   -- the row's feature values as read, JSON
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    quarantined_at  TEXT NOT NULL,
    PRIMARY KEY (job, key)
);
