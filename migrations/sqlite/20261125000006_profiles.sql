-- Drift monitoring. A profile of every committed window, one row per feature and output column,
-- written in the window's transaction (so it exists exactly when the window's results do), and
-- the reference `batchscore monitor set-reference` stores: the merged profile of a range of
-- committed windows, one row per column.
--
-- `sketch` is an Apache DataSketches sketch (KLL for numeric columns, frequent items for
-- categories), which merges across windows; `summary` is JSON for people: quantiles, or the top
-- categories and the count of the rest. Times are RFC 3339 text in UTC, as in the other tables.
CREATE TABLE IF NOT EXISTS batchscore_profiles (
    run_id        TEXT NOT NULL,
    job           TEXT NOT NULL,
    shard         INTEGER NOT NULL,
    window_start  TEXT NOT NULL,
    window_end    TEXT NOT NULL,
    column_name   TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('feature', 'output')),
    kind          TEXT NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     INTEGER NOT NULL,
    null_count    INTEGER NOT NULL,
    bad_count     INTEGER NOT NULL,
    mean          REAL,
    std           REAL,
    m2            REAL,
    min_value     REAL,
    max_value     REAL,
    summary       TEXT NOT NULL,
    sketch        BLOB NOT NULL,
    PRIMARY KEY (run_id, role, column_name)
);

CREATE INDEX IF NOT EXISTS batchscore_profiles_job_window
    ON batchscore_profiles (job, window_end);

CREATE TABLE IF NOT EXISTS batchscore_references (
    job           TEXT NOT NULL,
    column_name   TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    window_end    TEXT NOT NULL,
    windows       INTEGER NOT NULL,
    set_at        TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('feature', 'output')),
    kind          TEXT NOT NULL CHECK (kind IN ('numeric', 'category')),
    row_count     INTEGER NOT NULL,
    null_count    INTEGER NOT NULL,
    bad_count     INTEGER NOT NULL,
    mean          REAL,
    std           REAL,
    m2            REAL,
    min_value     REAL,
    max_value     REAL,
    summary       TEXT NOT NULL,
    sketch        BLOB NOT NULL,
    PRIMARY KEY (job, role, column_name)
);
