-- Compact lineage: a results table batchscore creates says which run and which model scored
-- each row by two integers, `batchscore_run` (batchscore_runs.id) and `batchscore_model`
-- (batchscore_models.id), instead of the wide text stamp. The run gives the window and the
-- model's source; the model gives its sha256. Existing runs are numbered in insertion order.
ALTER TABLE batchscore_runs ADD COLUMN id INTEGER;
UPDATE batchscore_runs SET id = rowid;
CREATE UNIQUE INDEX batchscore_runs_id ON batchscore_runs (id);

-- A run's number comes from an AUTOINCREMENT sequence, not from MAX(id) + 1 or the rowid
-- (which VACUUM may renumber): a number is never given twice, even after `prune` deleted the
-- runs that held the highest ones, so a results row can never point at a later run.
CREATE TABLE batchscore_run_numbers (id INTEGER PRIMARY KEY AUTOINCREMENT);
INSERT INTO batchscore_run_numbers (id) SELECT COALESCE(MAX(id), 0) FROM batchscore_runs;
DELETE FROM batchscore_run_numbers;
CREATE TRIGGER batchscore_runs_number AFTER INSERT ON batchscore_runs WHEN NEW.id IS NULL
BEGIN
    INSERT INTO batchscore_run_numbers (id) VALUES (NULL);
    UPDATE batchscore_runs SET id = last_insert_rowid() WHERE rowid = NEW.rowid;
    DELETE FROM batchscore_run_numbers;
END;

-- Every model that scored for batchscore, by the sha256 of its bytes; a row's number never
-- changes and is never reused.
CREATE TABLE batchscore_models (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256         TEXT NOT NULL UNIQUE,
    first_seen_at  TEXT NOT NULL
);
INSERT INTO batchscore_models (sha256, first_seen_at)
    SELECT sha256, min(started_at) FROM (
        SELECT model_sha256 AS sha256, started_at FROM batchscore_runs
        UNION ALL
        SELECT challenger_sha256, started_at FROM batchscore_runs WHERE challenger_sha256 IS NOT NULL
    )
    GROUP BY sha256 ORDER BY min(started_at);
