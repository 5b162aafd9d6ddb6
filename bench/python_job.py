#!/usr/bin/env python3
"""The Python job a data team would write instead of batchscore, written as well as they would.

Scores one window [--start, --end) of the source table with an ONNX model and upserts
(id, score = probabilities[:, 1]) into the results table, all in one transaction:

PostgreSQL (psycopg 3): a server-side (named) cursor streams the window in batches; each batch
    is scored with onnxruntime (float32) and COPYed (binary) into a temporary staging table; one
    `INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE` moves the staging rows into the results.
SQLite (sqlite3 + pandas): `pandas.read_sql(..., chunksize=)` reads the window in chunks; each
    chunk is scored and upserted with `executemany(INSERT ... ON CONFLICT DO UPDATE)`.

A model with one input per column (the pipeline workload: a scikit-learn pipeline over text and
numeric columns) is fed as such a team feeds it: each batch becomes a pandas DataFrame and the
model gets a dict of per-column arrays (`{column: frame[[column]].to_numpy(dtype)}`, text as
object arrays); the read and write paths are the same as above.

It is what run.py compares batchscore against; it is run as its own process, so its time and
peak RSS (from wait4) include the interpreter and imports, as a cron'd script's would.
Prints one line: `rows=N seconds=S` (S measured after the imports).

Usage: python_job.py --database-url sqlite://PATH|postgres://... --model PATH
                     --start RFC3339 --end RFC3339 [--table bench_rows] [--results bench_scores_py]
                     [--batch-rows 10000]
"""

import argparse
import datetime as dt
import sqlite3
import time

import numpy as np
import onnxruntime as ort
import pandas as pd
import psycopg
from psycopg import sql

FEATURES = [f"f{k}" for k in range(1, 9)]
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(string)": object}


def score(session, x):
    """P(class 1) for each row of the float32 matrix x."""
    (probabilities,) = session.run(["probabilities"], {"features": x})
    return probabilities[:, 1]


def per_column(session):
    """The model's inputs as (column, dtype) when it takes one input per column, else None."""
    inputs = session.get_inputs()
    if len(inputs) == 1:
        return None
    return [(i.name, DTYPES[i.type]) for i in inputs]


def score_frame(session, columns, frame):
    """P(class 1) for each row of the DataFrame, each input fed from its own column."""
    feeds = {name: frame[[name]].to_numpy(dtype=dtype) for name, dtype in columns}
    (probabilities,) = session.run(["probabilities"], feeds)
    return probabilities[:, 1]


def run_postgres(url, session, table, results, start, end, batch_rows):
    columns = per_column(session)
    names = FEATURES if columns is None else [name for name, _ in columns]
    select = sql.SQL("SELECT id, {features} FROM {table} WHERE ts >= %s AND ts < %s").format(
        features=sql.SQL(", ").join(map(sql.Identifier, names)), table=sql.Identifier(table)
    )
    rows = 0
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, score double precision)").format(
                sql.Identifier(results)
            )
        )
        # ON COMMIT DROP: the staging table lives exactly as long as the window's transaction.
        conn.execute("CREATE TEMP TABLE staging (id bigint, score double precision) ON COMMIT DROP")
        writer = conn.cursor()
        # A named cursor is a server-side cursor: the window streams in batches instead of being
        # materialised client-side. Binary results skip parsing numbers from text.
        with conn.cursor(name="window_rows", binary=True) as reader:
            reader.execute(select, (start, end))
            while batch := reader.fetchmany(batch_rows):
                if columns is None:
                    matrix = np.array(batch, dtype=np.float64)
                    # Keys are exact in float64 (below 2^53); the features go to the model as float32.
                    ids = matrix[:, 0].astype(np.int64)
                    scores = score(session, matrix[:, 1:].astype(np.float32))
                else:
                    frame = pd.DataFrame(batch, columns=["id", *names])
                    ids = frame["id"].to_numpy()
                    scores = score_frame(session, columns, frame)
                with writer.copy("COPY staging (id, score) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "float8"])
                    for row in zip(ids.tolist(), scores.tolist()):
                        copy.write_row(row)
                rows += len(batch)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, score) SELECT id, score FROM staging "
                "ON CONFLICT (id) DO UPDATE SET score = EXCLUDED.score"
            ).format(sql.Identifier(results))
        )
    return rows


def run_sqlite(path, session, table, results, start, end, batch_rows):
    # The table stores ISO-8601 text with milliseconds and Z; bounds in the same form compare
    # correctly as strings.
    bounds = [t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for t in (start, end)]
    columns = per_column(session)
    names = FEATURES if columns is None else [name for name, _ in columns]
    select = f'SELECT id, {", ".join(names)} FROM "{table}" WHERE ts >= ? AND ts < ?'
    upsert = f'INSERT INTO "{results}" (id, score) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET score = excluded.score'
    rows = 0
    # isolation_level=None: we open and commit the one transaction ourselves.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{results}" (id INTEGER PRIMARY KEY, score REAL)')
        conn.execute("BEGIN")
        for chunk in pd.read_sql(select, conn, params=bounds, chunksize=batch_rows):
            if columns is None:
                scores = score(session, chunk[FEATURES].to_numpy(dtype=np.float32))
            else:
                scores = score_frame(session, columns, chunk)
            conn.executemany(upsert, zip(chunk["id"].tolist(), scores.tolist()))
            rows += len(chunk)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--start", required=True, type=dt.datetime.fromisoformat)
    parser.add_argument("--end", required=True, type=dt.datetime.fromisoformat)
    parser.add_argument("--table", default="bench_rows")
    parser.add_argument("--results", default="bench_scores_py")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()

    started = time.perf_counter()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    window = (args.table, args.results, args.start, args.end, args.batch_rows)
    if args.database_url.startswith("sqlite://"):
        rows = run_sqlite(args.database_url.removeprefix("sqlite://"), session, *window)
    elif args.database_url.startswith(("postgres://", "postgresql://")):
        rows = run_postgres(args.database_url, session, *window)
    else:
        parser.error("--database-url must start with sqlite:// or postgres://")
    print(f"rows={rows} seconds={time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    main()
