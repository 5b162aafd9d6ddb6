-- Drift monitoring. A profile of every committed window, one row per feature and output column,
-- written in the window's transaction (so it exists exactly when the window's results do), and
-- the reference `batchscore monitor set-reference` stores: the merged profile of a range of
-- committed windows, one row per column.
--
-- `sketch` is an Apache DataSketches sketch (KLL for numeric columns, frequent items for
-- categories), which merges across windows; `summary` is JSON for people: quantiles, or the top
-- categories and the count of the rest.
CREATE TABLE IF NOT EXISTS batchscore_profiles (
    run_id        text NOT NULL,
    job           text NOT NULL,
    shard         bigint NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    column_name   text NOT NULL,
    role          text NOT NULL CHECK (role IN ('feature', 'output')),
    kind          text NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     bigint NOT NULL,
    null_count    bigint NOT NULL,
    bad_count     bigint NOT NULL,
    mean          double precision,
    std           double precision,
    m2            double precision,
    min_value     double precision,
    max_value     double precision,
    summary       text NOT NULL,
    sketch        bytea NOT NULL,
    PRIMARY KEY (run_id, role, column_name)
);

CREATE INDEX IF NOT EXISTS batchscore_profiles_job_window
    ON batchscore_profiles (job, window_end);

CREATE TABLE IF NOT EXISTS batchscore_references (
    job           text NOT NULL,
    column_name   text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    windows       bigint NOT NULL,
    set_at        timestamptz NOT NULL,
    role          text NOT NULL CHECK (role IN ('feature', 'output')),
    kind          text NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     bigint NOT NULL,
    null_count    bigint NOT NULL,
    bad_count     bigint NOT NULL,
    mean          double precision,
    std           double precision,
    m2            double precision,
    min_value     double precision,
    max_value     double precision,
    summary       text NOT NULL,
    sketch        bytea NOT NULL,
    PRIMARY KEY (job, role, column_name)
);
