#!/usr/bin/env python3
"""Empty tick: what a cron run costs when there is nothing to score, with the heavy model.

Two cases, each a whole `run-job` process of the release binary (process start, migration
check, watermark read, and whatever else the run does):

  nothing due   `run-job --at T` again at the watermark: no window is due, so the run reads the
                watermarks, claims nothing and loads no model
  empty window  `run-job --at T + k minutes`: a window is due but holds no row; the run loads
                the model, claims the job, and commits the empty window's ledger row and
                watermark

on SQLite and on PostgreSQL over TLS (sslmode=require), the source being bench_rows (dataset.py,
--rows rows, all before the windows run here). Prints the median and the best of --repeat runs
as a markdown table on stdout, progress on stderr.

Usage: bench/empty_tick.py [--repeat 7] [--only sqlite|postgres]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test?sslmode=require)
Needs: psycopg[binary]; the release binary (cargo build --release).
"""

import argparse
import datetime as dt
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

import dataset

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODEL = ROOT / "bench" / "models" / "heavy.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test?sslmode=require"
SCHEMA = "batchscore_empty_tick"

JOB = """schedule = "*/30 * * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
features = [{features}]
[window]
size = "30m"
lateness = "0s"
[model]
path = "{model}"
[outputs]
score = "probabilities[1]"
[sink]
table = "empty_tick_scores"
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(url, jobs, *args):
    argv = [BINARY, "-q", "--database-url", url, "--jobs-dir", jobs, *args]
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(url, jobs, repeat):
    start = dataset.END + dt.timedelta(hours=1)
    run(url, jobs, "watermark", "set", "job", rfc3339(start))
    # A first run creates the results table and pays for the migrations: untimed.
    at = start + dt.timedelta(minutes=1)
    run(url, jobs, "run-job", "job", "--at", rfc3339(at))
    idle, empty = [], []
    for _ in range(repeat):
        idle.append(run(url, jobs, "run-job", "job", "--at", rfc3339(at)))
        at += dt.timedelta(minutes=1)
        empty.append(run(url, jobs, "run-job", "job", "--at", rfc3339(at)))
    return idle, empty


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        jobs = pathlib.Path(work) / "jobs"
        jobs.mkdir()
        features = ", ".join(f'"{f}"' for f in dataset.FEATURES)
        (jobs / "job.toml").write_text(JOB.format(table=dataset.TABLE, features=features, model=MODEL))
        if args.only in (None, "sqlite"):
            path = pathlib.Path(work) / "tick.db"
            with sqlite3.connect(path) as db:
                db.executescript(dataset.sqlite_seed_sql(args.rows))
                db.execute(f"CREATE INDEX bench_rows_ts ON {dataset.TABLE} (ts)")
            log("sqlite")
            results.append(("SQLite", *measure(f"sqlite://{path}", jobs, args.repeat)))
        if args.only in (None, "postgres"):
            base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
            with psycopg.connect(base, autocommit=True) as db:
                db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
                db.execute(f"CREATE SCHEMA {SCHEMA}")
            url = f"{base}&options=-csearch_path%3D{SCHEMA}" if "?" in base else f"{base}?options=-csearch_path%3D{SCHEMA}"
            try:
                with psycopg.connect(url, autocommit=True) as db:
                    for statement in dataset.postgres_seed_sql(args.rows):
                        db.execute(statement)
                    db.execute(f"CREATE INDEX bench_rows_ts ON {dataset.TABLE} (ts)")
                log("postgres (TLS)")
                results.append(("PostgreSQL (TLS)", *measure(url, jobs, args.repeat)))
            finally:
                with psycopg.connect(base, autocommit=True) as db:
                    db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms (best {min(xs) * 1000:.0f})"
    print(f"| database, heavy model ({args.repeat} runs) | nothing due | empty window due |")
    print("|---|---:|---:|")
    for name, idle, empty in results:
        print(f"| {name} | {ms(idle)} | {ms(empty)} |")


if __name__ == "__main__":
    main()
