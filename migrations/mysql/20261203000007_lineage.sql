-- Lineage: what scored each window. Beside `model_sha256`, the model's source (its path, or the
-- registry version and the alias it was resolved from), and the challenger's sha256 and source,
-- or why it did not score the window. `batchscore models` and `run-job --rescore-model` look
-- windows up by job and model.
--
-- A challenger's outputs are profiled as `challenger:<column>`: profile column names grow to
-- 128. Each statement is one ALTER, which InnoDB applies whole or not at all, and the first
-- may run again.
ALTER TABLE batchscore_profiles MODIFY column_name VARCHAR(128) NOT NULL;
ALTER TABLE batchscore_references MODIFY column_name VARCHAR(128) NOT NULL;
ALTER TABLE batchscore_runs
    ADD COLUMN model_source      TEXT,
    ADD COLUMN challenger_sha256 VARCHAR(64),
    ADD COLUMN challenger_source TEXT,
    ADD COLUMN challenger_error  MEDIUMTEXT,
    ADD INDEX batchscore_runs_job_model (job, model_sha256);
