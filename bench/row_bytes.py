#!/usr/bin/env python3
"""Bytes per result row: the results table batchscore creates (compact lineage, the default,
and `[sink] lineage = "full"`) against `(key BIGINT, score DOUBLE)`, the least a table of
scores can be.

For each database it seeds bench_rows (dataset.py) with --rows rows, scores them with the light
model by `run-job --from --to` (one window), and measures each table holding the same rows:

  PostgreSQL  pg_total_relation_size (table, TOAST and primary key) / rows, after VACUUM ANALYZE
  SQLite      the table's and its indexes' pages in dbstat / rows, after VACUUM

The floor table is filled from batchscore's own scores (`INSERT … SELECT id, score`), so every
table holds the same keys and values. Prints a markdown table on stdout, progress on stderr.

Usage: bench/row_bytes.py [--rows 200000] [--only sqlite|postgres] [--binary PATH]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: psycopg[binary]; a batchscore binary (default target/release, else target/debug).
"""

import argparse
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile

import psycopg

import dataset

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "bench" / "models" / "light.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
SCHEMA = "batchscore_row_bytes"

JOB = """schedule = "0 * * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
features = [{features}]
[window]
size = "1h"
[model]
path = "{model}"
[outputs]
score = "probabilities[1]"
[sink]
table = "scores_{lineage}"
lineage = "{lineage}"
[monitor]
profile = false
"""

LINEAGES = ["compact", "full"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def binary(asked):
    if asked:
        return pathlib.Path(asked)
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "batchscore"
        if path.exists():
            return path
    sys.exit("no batchscore binary: cargo build --release")


def write_jobs(jobs):
    features = ", ".join(f'"{f}"' for f in dataset.FEATURES)
    for lineage in LINEAGES:
        text = JOB.format(table=dataset.TABLE, features=features, model=MODEL, lineage=lineage)
        (jobs / f"{lineage}.toml").write_text(text)


def score(exe, url, jobs):
    for lineage in LINEAGES:
        argv = [exe, "-q", "--database-url", url, "--jobs-dir", jobs, "run-job", lineage,
                "--from", dataset.START.isoformat(), "--to", dataset.END.isoformat()]
        subprocess.run(argv, check=True)


def sqlite(exe, rows, work):
    path = work / "bytes.db"
    with sqlite3.connect(path) as db:
        db.executescript(dataset.sqlite_seed_sql(rows))
    score(exe, f"sqlite://{path}", work)
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE scores_floor (id INTEGER PRIMARY KEY, score REAL NOT NULL);"
                     "INSERT INTO scores_floor SELECT id, score FROM scores_compact;")
    db.commit()
    db.execute("VACUUM")
    sizes = {}
    for table in ["scores_floor", "scores_compact", "scores_full"]:
        (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert count == rows, (table, count)
        (size,) = db.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name = ? OR name IN "
            "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?)",
            (table, table)).fetchone()
        sizes[table] = size / rows
    return sizes


def postgres(exe, rows, url):
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        db.execute(f"CREATE SCHEMA {SCHEMA}")
    sep = "&" if "?" in url else "?"
    scoped = f"{url}{sep}options=-csearch_path%3D{SCHEMA}"
    try:
        with psycopg.connect(scoped, autocommit=True) as db:
            for statement in dataset.postgres_seed_sql(rows):
                db.execute(statement)
        with tempfile.TemporaryDirectory() as jobs:
            write_jobs(pathlib.Path(jobs))
            score(exe, scoped, jobs)
        sizes = {}
        with psycopg.connect(scoped, autocommit=True) as db:
            db.execute("CREATE TABLE scores_floor (id bigint PRIMARY KEY, score double precision NOT NULL)")
            db.execute("INSERT INTO scores_floor SELECT id, score FROM scores_compact")
            for table in ["scores_floor", "scores_compact", "scores_full"]:
                db.execute(f"VACUUM ANALYZE {table}")
                (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert count == rows, (table, count)
                (size,) = db.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                sizes[table] = size / rows
        return sizes
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--binary")
    args = parser.parse_args()
    exe = binary(args.binary)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        write_jobs(work)
        if args.only in (None, "sqlite"):
            log(f"sqlite: {args.rows} rows")
            results["SQLite"] = sqlite(exe, args.rows, work)
        if args.only in (None, "postgres"):
            log(f"postgres: {args.rows} rows")
            results["PostgreSQL"] = postgres(exe, args.rows, os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    print(f"| database ({args.rows:,} rows) | (key, score) | compact (default) | full |")
    print("|---|---:|---:|---:|")
    for name, sizes in results.items():
        floor = sizes["scores_floor"]
        print(f"| {name} | {floor:.1f} B | {sizes['scores_compact']:.1f} B ({sizes['scores_compact'] / floor:.2f}×) "
              f"| {sizes['scores_full']:.1f} B ({sizes['scores_full'] / floor:.2f}×) |")


if __name__ == "__main__":
    main()
