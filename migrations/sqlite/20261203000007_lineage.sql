-- Lineage: what scored each window. Beside `model_sha256`, the model's source (its path, or the
-- registry version and the alias it was resolved from), and the challenger's sha256 and source,
-- or why it did not score the window. `batchscore models` and `run-job --rescore-model` look
-- windows up by job and model.
ALTER TABLE batchscore_runs ADD COLUMN model_source TEXT;
ALTER TABLE batchscore_runs ADD COLUMN challenger_sha256 TEXT;
ALTER TABLE batchscore_runs ADD COLUMN challenger_source TEXT;
ALTER TABLE batchscore_runs ADD COLUMN challenger_error TEXT;
CREATE INDEX IF NOT EXISTS batchscore_runs_job_model ON batchscore_runs (job, model_sha256);
