#!/usr/bin/env python3
"""Benchmark `batchscore run-job` over one large window, on SQLite and PostgreSQL.

Seeds N rows (default 1,000,000: integer key, a timestamp spread over one hour, the demo
classifier's 4 float features), scores the whole window with the release binary and the demo
classifier (models/machine_failure.onnx), and prints rows/s and the process's peak RSS.

Standard library only; PostgreSQL is seeded through `psql`.

Usage: bench/bench.py [--rows N] [--chunk-rows N] [--only sqlite|postgres]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
"""

import argparse
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "batchscore"
START, END = "2026-01-10T00:00:00Z", "2026-01-10T01:00:00Z"

JOB = """
schedule = "0 * * * *"
[source]
table = "bench_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
chunk_rows = {chunk_rows}
[window]
size = "1h"
[model]
path = "{root}/models/machine_failure.onnx"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "bench_predictions"
"""

# Rows i = 1..N, i-th at START + i * 3600 / (N + 1) seconds, features drawn like the demo's.
SQLITE_SEED = """
DROP TABLE IF EXISTS bench_readings;
DROP TABLE IF EXISTS bench_predictions;
CREATE TABLE bench_readings (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL,
    temperature REAL, vibration REAL, pressure REAL, rpm INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
INSERT INTO bench_readings
SELECT i,
       strftime('%Y-%m-%dT%H:%M:%fZ', unixepoch('2026-01-10T00:00:00Z') + i * 3600.0 / ({rows} + 1), 'unixepoch'),
       60 + (abs(random()) % 2000) / 100.0,
       (abs(random()) % 600) / 100.0,
       4 + (abs(random()) % 200) / 100.0,
       900 + abs(random()) % 2700
FROM n;
"""

POSTGRES_SEED = """
DROP TABLE IF EXISTS bench_readings;
DROP TABLE IF EXISTS bench_predictions;
CREATE TABLE bench_readings (reading_id bigint PRIMARY KEY, recorded_at timestamptz NOT NULL,
    temperature double precision, vibration double precision, pressure double precision, rpm integer);
INSERT INTO bench_readings
SELECT i,
       timestamptz '2026-01-10T00:00:00Z' + make_interval(secs => i * 3600.0 / ({rows} + 1)),
       60 + random() * 20, random() * 6, 4 + random() * 2, 900 + floor(random() * 2700)::int
FROM generate_series(1, {rows}) AS i;
ANALYZE bench_readings;
"""


def run_job(url, jobs_dir):
    """Run the binary once; return (seconds, that process's peak RSS in MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(BINARY), "-q", "--database-url", url, "--jobs-dir", str(jobs_dir), "run-job", "bench", "--from", START, "--to", END],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait4 gives this child's own rusage, so each run's peak RSS is its alone.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"run-job failed:\n{stdout}\n{stderr}")
    return seconds, usage.ru_maxrss / 1024

def bench_sqlite(rows, work, jobs_dir):
    path = work / "bench.db"
    t = time.perf_counter()
    db = sqlite3.connect(path)
    db.executescript(SQLITE_SEED.format(rows=rows))
    db.close()
    print(f"  seeded {rows:,} rows into SQLite in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return run_job(f"sqlite://{path}", jobs_dir)


def bench_postgres(rows, jobs_dir):
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    t = time.perf_counter()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", POSTGRES_SEED.format(rows=rows)], check=True)
    print(f"  seeded {rows:,} rows into PostgreSQL in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    result = run_job(url, jobs_dir)
    subprocess.run(["psql", "-q", url, "-c", "DROP TABLE IF EXISTS bench_readings, bench_predictions"], check=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        jobs_dir = work / "jobs"
        jobs_dir.mkdir()
        (jobs_dir / "bench.toml").write_text(JOB.format(root=ROOT, chunk_rows=args.chunk_rows))
        results = []
        if args.only in (None, "sqlite"):
            results.append(("SQLite", *bench_sqlite(args.rows, work, jobs_dir)))
        if args.only in (None, "postgres"):
            results.append(("PostgreSQL", *bench_postgres(args.rows, jobs_dir)))

    print(f"\nbatchscore run-job, {args.rows:,} rows in one window, chunk_rows={args.chunk_rows}, demo classifier")
    print(f"{'database':<10} {'seconds':>8} {'rows/s':>10} {'peak RSS':>10}")
    for name, seconds, rss in results:
        print(f"{name:<10} {seconds:>8.2f} {args.rows / seconds:>10,.0f} {rss:>7.0f} MiB")


if __name__ == "__main__":
    main()
