-- Compact lineage: a results table batchscore creates says which run and which model scored
-- each row by two integers, `batchscore_run` (batchscore_runs.id) and `batchscore_model`
-- (batchscore_models.id), instead of the wide text stamp. The run gives the window and the
-- model's source; the model gives its sha256. Existing runs are numbered as InnoDB fills the
-- new column. The ALTER is one statement, which InnoDB applies whole or not at all; the rest
-- may run again.
ALTER TABLE batchscore_runs
    ADD COLUMN id BIGINT NOT NULL AUTO_INCREMENT,
    ADD UNIQUE KEY batchscore_runs_id (id);

-- Every model that scored for batchscore, by the sha256 of its bytes; a row's number never
-- changes and is never reused.
CREATE TABLE IF NOT EXISTS batchscore_models (
    id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sha256         VARCHAR(64) NOT NULL,
    first_seen_at  DATETIME(6) NOT NULL,
    UNIQUE KEY batchscore_models_sha256 (sha256)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT IGNORE INTO batchscore_models (sha256, first_seen_at)
    SELECT sha256, MIN(started_at) FROM (
        SELECT model_sha256 AS sha256, started_at FROM batchscore_runs
        UNION ALL
        SELECT challenger_sha256, started_at FROM batchscore_runs WHERE challenger_sha256 IS NOT NULL
    ) used
    GROUP BY sha256 ORDER BY MIN(started_at);
