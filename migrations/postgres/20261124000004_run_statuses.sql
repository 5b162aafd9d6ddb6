-- Run statuses `skipped` and `abandoned`. The first release's 0001 allowed only running,
-- succeeded and failed; later releases widened that CHECK by editing 0001 in place, which this
-- migration replaces. Databases of either kind end with the same constraint.
ALTER TABLE batchscore_runs DROP CONSTRAINT IF EXISTS batchscore_runs_status_check;
ALTER TABLE batchscore_runs ADD CONSTRAINT batchscore_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned'));
