"""The benchmark's data: one deterministic generator, as SQL for SQLite and PostgreSQL and as numpy.

Row i (1..N) has key i, a timestamp START + i * 3600 / (N + 1) seconds (so N rows spread evenly
over the one-hour window [START, END)), and 8 features f1..f8 in [-2, 2), each a quadratic
congruential sequence of i modulo the prime 2^31 - 1. The SQL and numpy forms do the same exact
64-bit integer arithmetic and then the same float64 operations in the same order, so every
database and the ORT floor see identical values, run after run (no random(): a table seeded twice
is the same table, and batchscore and the Python job can be compared row by row).

The pipeline workload's table, PIPELINE_TABLE, has the same keys and timestamps, two text
columns (region: one of 8 values, channel: one of 4, each picked by i modulo a prime) and six
numeric columns n1..n6 (the f1..f6 sequences, stored as REAL / double precision): the shape of a
table a scikit-learn pipeline with one-hot encoded categories scores.

Imported by run.py (seeding, the ORT floor's inputs) and train_models.py (the training
distribution). Standard library and numpy only.
"""

import datetime as dt

import numpy as np

TABLE = "bench_rows"
FEATURES = [f"f{k}" for k in range(1, 9)]
START = dt.datetime(2026, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
END = START + dt.timedelta(hours=1)

# Modulus and per-feature coefficients. All coefficients are below 2^30 and (i*i % P) below 2^31,
# so (i*i % P) * A + i * B + C stays below 2^62 for any i up to 10^9: no 64-bit overflow (which
# PostgreSQL would report as an error and SQLite would silently turn into a float).
P = 2_147_483_647
COEFFS = [
    (48_271, 16_807, 12_345),
    (69_621, 39_373, 67_890),
    (101_111, 741_103, 13_579),
    (397_204_094, 950_706_376, 24_680),
    (630_360_016, 742_938_285, 11_111),
    (764_261_123, 1_059_975_697, 22_222),
    (905_955_135, 282_475_249, 33_333),
    (999_999_937, 622_650_073, 44_444),
]
MAX_ROWS = 1_000_000_000

PIPELINE_TABLE = "bench_pipeline_rows"
REGIONS = ["north", "south", "east", "west", "centre", "coast", "mountains", "islands"]
CHANNELS = ["web", "app", "store", "phone"]
TEXT_COLUMNS = {"region": (REGIONS, 7919), "channel": (CHANNELS, 104_729)}
NUMERIC = [f"n{k}" for k in range(1, 7)]
PIPELINE_COLUMNS = [*TEXT_COLUMNS, *NUMERIC]


def _feature_sql(a, b, c, as_float):
    v = f"((((i * i) % {P}) * {a} + i * {b} + {c}) % {P})"
    return f"{as_float(v)} / {P} * 4 - 2"


def sqlite_seed_sql(rows):
    """Script that (re)creates TABLE with `rows` rows on SQLite (run with executescript)."""
    check_rows(rows)
    features = ",\n       ".join(_feature_sql(a, b, c, lambda v: f"CAST({v} AS REAL)") for a, b, c in COEFFS)
    return f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, ts TEXT NOT NULL,
    {", ".join(f"{f} REAL" for f in FEATURES)});
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
INSERT INTO {TABLE}
SELECT i,
       strftime('%Y-%m-%dT%H:%M:%fZ', {int(START.timestamp())} + i * 3600.0 / ({rows} + 1), 'unixepoch'),
       {features}
FROM n;
"""


def postgres_seed_sql(rows):
    """Statements that (re)create TABLE with `rows` rows on PostgreSQL (current schema)."""
    check_rows(rows)
    features = ",\n       ".join(_feature_sql(a, b, c, lambda v: f"({v})::float8") for a, b, c in COEFFS)
    return [
        f"DROP TABLE IF EXISTS {TABLE}",
        f"""CREATE TABLE {TABLE} (id bigint PRIMARY KEY, ts timestamptz NOT NULL,
            {", ".join(f"{f} double precision" for f in FEATURES)})""",
        f"""INSERT INTO {TABLE}
SELECT i,
       timestamptz '{START.isoformat()}' + make_interval(secs => i * 3600.0 / ({rows} + 1)),
       {features}
FROM generate_series(1::bigint, {rows}::bigint) AS i""",
    ]


def feature_matrix(rows, dtype=np.float32):
    """The N x 8 feature matrix of rows 1..N, as the databases hold it (then cast to dtype)."""
    check_rows(rows)
    i = np.arange(1, rows + 1, dtype=np.int64)
    square = (i * i) % P
    columns = [((square * a + i * b + c) % P).astype(np.float64) / P * 4 - 2 for a, b, c in COEFFS]
    return np.column_stack(columns).astype(dtype)


def _text_sql(values, prime):
    cases = " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(values))
    return f"CASE (i * {prime}) % {len(values)} {cases} END"


def _pipeline_select(ts_sql, as_float):
    texts = [_text_sql(values, prime) for values, prime in TEXT_COLUMNS.values()]
    numbers = [_feature_sql(a, b, c, as_float) for a, b, c in COEFFS[: len(NUMERIC)]]
    return ",\n       ".join(["i", ts_sql, *texts, *numbers])


def sqlite_pipeline_seed_sql(rows):
    """Script that (re)creates PIPELINE_TABLE with `rows` rows on SQLite."""
    check_rows(rows)
    ts = f"strftime('%Y-%m-%dT%H:%M:%fZ', {int(START.timestamp())} + i * 3600.0 / ({rows} + 1), 'unixepoch')"
    return f"""
DROP TABLE IF EXISTS {PIPELINE_TABLE};
CREATE TABLE {PIPELINE_TABLE} (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, region TEXT, channel TEXT,
    {", ".join(f"{n} REAL" for n in NUMERIC)});
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
INSERT INTO {PIPELINE_TABLE}
SELECT {_pipeline_select(ts, lambda v: f"CAST({v} AS REAL)")}
FROM n;
"""


def postgres_pipeline_seed_sql(rows):
    """Statements that (re)create PIPELINE_TABLE with `rows` rows on PostgreSQL."""
    check_rows(rows)
    ts = f"timestamptz '{START.isoformat()}' + make_interval(secs => i * 3600.0 / ({rows} + 1))"
    return [
        f"DROP TABLE IF EXISTS {PIPELINE_TABLE}",
        f"""CREATE TABLE {PIPELINE_TABLE} (id bigint PRIMARY KEY, ts timestamptz NOT NULL, region text, channel text,
            {", ".join(f"{n} double precision" for n in NUMERIC)})""",
        f"""INSERT INTO {PIPELINE_TABLE}
SELECT {_pipeline_select(ts, lambda v: f"({v})::float8")}
FROM generate_series(1::bigint, {rows}::bigint) AS i""",
    ]


def pipeline_columns(rows):
    """The pipeline table's columns of rows 1..N as the databases hold them: text as object
    arrays, numbers as float64."""
    check_rows(rows)
    i = np.arange(1, rows + 1, dtype=np.int64)
    columns = {name: np.array(values, dtype=object)[(i * prime) % len(values)] for name, (values, prime) in TEXT_COLUMNS.items()}
    numbers = feature_matrix(rows, np.float64)
    for k, name in enumerate(NUMERIC):
        columns[name] = numbers[:, k]
    return columns


def check_rows(rows):
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 1 and {MAX_ROWS:,}, not {rows:,}")
