#!/usr/bin/env python3
"""History benchmark: a scheduled window's cost against the size of the table it reads from.

For each database (SQLite, PostgreSQL) and each history size (default 1,000,000 and 10,000,000
rows), it seeds `hist_readings` with that many sensor readings at a steady rate of 3,472 per
30 minutes (10,000,000 rows are 60 days), ending at the same time, indexed on the timestamp,
and times the demo job's model (models/machine_failure.onnx, 4 features) on 30-minute windows,
so that every window holds the same rows whatever the history behind it:

  one window     `run-job --at END` with one window due (the watermark set 30 minutes before)
  catch-up 48    `run-job --at END` with 48 windows due (the watermark set a day before)
  empty run      `run-job --at END` with nothing due: the fixed cost of a cron tick
  backfill       `run-job --from END-104s --to END`: one window of about 200 rows, re-scored

and, on a table of one row, the fixed cost of a run with nothing due and with one row:

  empty run      as above, on the one-row table
  one-row run    one window holding one row

Each figure is the median of --repeat runs of the release binary, as whole processes (process
start, ONNX Runtime, model load, migration check, claim included), with the peak RSS of the
largest. Prints a markdown table on stdout, progress on stderr; drops what it made.

Usage: bench/history.py [--sizes 1000000,10000000] [--only sqlite|postgres] [--repeat 5]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
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

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODEL = ROOT / "models" / "machine_failure.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
SCHEMA = "batchscore_history"
DAYS = 60
# Seconds between rows: 10,000,000 rows over 60 days, about 3,472 rows per 30-minute window.
STEP = DAYS * 86400 / 10_000_000
END = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)

JOB = """schedule = "*/30 * * * *"
[source]
table = "{table}"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "30m"
lateness = "0s"
catch_up = "all"
max_catch_up = 100
[model]
path = "{model}"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "{table}_scores"
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def feature_sql(i):
    return (f"60 + ({i} * 37 % 200) / 10.0, ({i} * 13 % 60) / 10.0, "
            f"4 + ({i} * 7 % 20) / 10.0, 900 + ({i} * 101 % 2700)")


class Sqlite:
    name = "SQLite"

    def __init__(self, work):
        self.path = os.path.join(work, "history.db")
        self.url = f"sqlite://{self.path}"

    def seed(self, table, rows):
        first = END.timestamp() - rows * STEP
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(f"""
            DROP TABLE IF EXISTS {table};
            DROP TABLE IF EXISTS {table}_scores;
            CREATE TABLE {table} (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL,
                temperature REAL, vibration REAL, pressure REAL, rpm INTEGER);
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
            INSERT INTO {table} SELECT i,
                strftime('%Y-%m-%dT%H:%M:%fZ', {first} + i * {STEP}, 'unixepoch'),
                {feature_sql('i')} FROM n;
            CREATE INDEX {table}_recorded_at ON {table} (recorded_at);
        """)
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

    def drop(self):
        pass


class Postgres:
    name = "PostgreSQL"

    def __init__(self, base):
        self.base = base
        separator = "&" if "?" in base else "?"
        self.url = f"{base}{separator}options=-c%20search_path%3D{SCHEMA}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")

    def seed(self, table, rows):
        first = END - dt.timedelta(seconds=rows * STEP)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_scores")
            conn.execute(f"""CREATE TABLE {table} (reading_id bigint PRIMARY KEY,
                recorded_at timestamptz NOT NULL, temperature double precision,
                vibration double precision, pressure double precision, rpm integer)""")
            conn.execute(f"""INSERT INTO {table} SELECT i,
                timestamptz '{first.isoformat()}' + i * interval '{STEP} seconds', {feature_sql('i')}
                FROM generate_series(0, {rows - 1}) AS i""")
            conn.execute(f"CREATE INDEX {table}_recorded_at ON {table} (recorded_at)")
            conn.execute(f"VACUUM ANALYZE {table}")
            conn.execute("CHECKPOINT")

    def drop(self):
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def batchscore(db, jobs_dir, *args):
    """Run the binary; (seconds, peak RSS in MiB). Fails loudly on a non-zero exit."""
    argv = [str(BINARY), "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, *args]
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    out, err = child.stdout.read().decode(), child.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"batchscore {' '.join(args)} failed:\n{out}{err}")
    return seconds, usage.ru_maxrss / 1024, out


def timed(db, jobs_dir, job, watermark, repeat, expect):
    """Median seconds and max RSS of `run-job JOB --at END` from `watermark`, `repeat` times."""
    times, rss = [], 0.0
    for _ in range(repeat):
        batchscore(db, jobs_dir, "watermark", "set", job, rfc3339(watermark))
        seconds, peak, out = batchscore(db, jobs_dir, "run-job", job, "--at", rfc3339(END))
        if expect not in out:
            sys.exit(f"run-job {job} did not do what was timed ({expect!r}):\n{out}")
        times.append(seconds)
        rss = max(rss, peak)
    return statistics.median(times), rss


def timed_backfill(db, jobs_dir, job, seconds_back, repeat):
    """Median seconds and max RSS of `run-job JOB --from END - seconds_back --to END` (a
    backfill of one short window, which the issue's history figures were measured with)."""
    times, rss = [], 0.0
    start = END - dt.timedelta(seconds=seconds_back)
    for _ in range(repeat):
        seconds, peak, out = batchscore(db, jobs_dir, "run-job", job, "--from", rfc3339(start),
                                        "--to", rfc3339(END))
        if "scored" not in out:
            sys.exit(f"run-job {job} --from --to did not score:\n{out}")
        times.append(seconds)
        rss = max(rss, peak)
    return statistics.median(times), rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as work:
        jobs_dir = os.path.join(work, "jobs")
        os.mkdir(jobs_dir)
        dbs = []
        if args.only != "postgres":
            dbs.append(Sqlite(work))
        if args.only != "sqlite":
            dbs.append(Postgres(args.database_url))
        for db in dbs:
            try:
                batchscore(db, jobs_dir, "migrate")
                # The fixed cost, on a table of one row.
                log(f"{db.name}: one-row table")
                db.seed("hist_one", 1)
                with open(os.path.join(jobs_dir, "hist_one.toml"), "w") as f:
                    f.write(JOB.format(table="hist_one", model=MODEL))
                empty = timed(db, jobs_dir, "hist_one", END, args.repeat, "up to date")
                # One window holding the table's one row, just before END.
                one = timed(db, jobs_dir, "hist_one", END - dt.timedelta(minutes=30),
                            args.repeat, "scored 1 rows")
                results.append((db.name, "1 row", "empty run (nothing due)", *empty, 0))
                results.append((db.name, "1 row", "one-row run", *one, 1))
                for rows in sizes:
                    log(f"{db.name}: seeding {rows:,} rows ({rows * STEP / 86400:.0f} days)")
                    started = time.perf_counter()
                    db.seed("hist_readings", rows)
                    log(f"{db.name}: seeded in {time.perf_counter() - started:.0f} s")
                    with open(os.path.join(jobs_dir, "hist_readings.toml"), "w") as f:
                        f.write(JOB.format(table="hist_readings", model=MODEL))
                    per_window = round(1800 / STEP)
                    # Score the day before the catch-up once, untimed, so that every timed run
                    # writes into a table of the same size.
                    batchscore(db, jobs_dir, "watermark", "set", "hist_readings",
                               rfc3339(END - dt.timedelta(days=2)))
                    batchscore(db, jobs_dir, "run-job", "hist_readings", "--at", rfc3339(END))
                    window = timed(db, jobs_dir, "hist_readings", END - dt.timedelta(minutes=30),
                                   args.repeat, "scored")
                    catch_up = timed(db, jobs_dir, "hist_readings", END - dt.timedelta(days=1),
                                     max(1, args.repeat // 2), "scored")
                    empty = timed(db, jobs_dir, "hist_readings", END, args.repeat, "up to date")
                    # About 200 rows: 104 seconds of readings.
                    short = timed_backfill(db, jobs_dir, "hist_readings", 104, args.repeat)
                    results.append((db.name, f"{rows:,}", "one 30-minute window", *window, per_window))
                    results.append((db.name, f"{rows:,}", "catch-up of 48 windows", *catch_up, 48 * per_window))
                    results.append((db.name, f"{rows:,}", "empty run (nothing due)", *empty, 0))
                    results.append((db.name, f"{rows:,}", "backfill of 104 s", *short, round(104 / STEP)))
            finally:
                db.drop()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f}; {subprocess.run([BINARY, '-V'], capture_output=True, text=True).stdout.strip()}; "
          f"median of {args.repeat} runs (catch-up: {max(1, args.repeat // 2)})\n")
    print("| database | rows in the table | run | seconds | rows scored | peak RSS |")
    print("|---|---:|---|---:|---:|---:|")
    for name, rows, what, seconds, rss, scored in results:
        print(f"| {name} | {rows} | {what} | {seconds:.3f} | {scored:,} | {rss:.0f} MiB |")


if __name__ == "__main__":
    main()
