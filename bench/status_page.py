#!/usr/bin/env python3
"""Status page benchmark: how fast the daemon answers `/` and `/jobs/NAME` with many jobs and a
long ledger.

For each database (SQLite, PostgreSQL) it writes --jobs job files (the demo's machine_failure
job, one results table each), runs `batchscore migrate`, and seeds --ledger rows into
batchscore_runs spread over those jobs and the last 7 days (one in 50 failed, with an error),
with each job's watermark an hour back. Each job then scores its window of the last hour's
2,000 readings for real, so it has a drift profile to judge as a deployment would. Then it starts the release binary's daemon with `--listen` (every job
scheduled once a year, so nothing runs while it measures) and fetches, one request at a time:

  overview   `GET /`: every job's state, 24 h counts, drift and next run
  job page   `GET /jobs/job_007`: its status, 50 latest windows, 7 days of charts, versions

Prints a markdown table of the median, p95 and worst of --requests fetches (after a warm-up of
5), on stdout; progress on stderr. Target: under 100 ms with 50 jobs and 10,000 ledger rows.

Usage: bench/status_page.py [--only sqlite|postgres] [--jobs 50] [--ledger 10000] [--requests 100]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: psycopg[binary]; the release binary (cargo build --release).
"""

import argparse
import datetime as dt
import http.client
import os
import pathlib
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODEL = ROOT / "models" / "machine_failure.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
SCHEMA = "batchscore_status_bench"
SHA = "92c496b8afd21d76f6a0cbdb3a085837d35d6a013dc09f6a8613fbcab65b965c"

JOB = f"""schedule = "0 0 1 1 *"
[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "30m"
[model]
path = "{MODEL}"
[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"
[sink]
table = "{{sink}}"
"""

COLUMNS = (
    "run_id, job, shard, window_start, window_end, status, rows_read, rows_written, "
    "model_sha256, started_at, finished_at, error, host, pid"
)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def ledger_rows(jobs, rows, now):
    """`rows` ledger rows over `jobs` jobs, 30-minute windows back from `now`, newest last."""
    random.seed(7)
    per_job = rows // jobs
    out = []
    for j in range(jobs):
        job = f"job_{j:03d}"
        for i in range(per_job):
            end = now - dt.timedelta(minutes=30 * (per_job - i))
            start = end - dt.timedelta(minutes=30)
            started = end + dt.timedelta(seconds=5)
            finished = started + dt.timedelta(seconds=random.uniform(0.5, 3.0))
            failed = random.random() < 0.02
            out.append((
                str(uuid.uuid4()), job, 0, start, end,
                "failed" if failed else "succeeded",
                1000, 0 if failed else 1000, SHA, started, finished,
                "bad_rows.policy = \"fail\" and row with key 5: column `vibration` is NULL" if failed else None,
                "bench", 1,
            ))
    return out


def readings(since):
    """An hour of sensor readings from `since`, for each job's one real window (and profile)."""
    random.seed(11)
    return [
        (i, since + dt.timedelta(seconds=1.8 * i), random.gauss(70, 5), random.uniform(0, 6),
         random.gauss(5, 0.5), random.randint(900, 3600))
        for i in range(2000)
    ]


def sqlite_seed(path, rows, marks):
    text = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(t, dt.datetime) else t
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sensor_readings (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, "
        "temperature REAL, vibration REAL, pressure REAL, rpm INTEGER)"
    )
    db.executemany(
        f"INSERT INTO batchscore_runs ({COLUMNS}) VALUES ({', '.join('?' * 14)})",
        [tuple(text(v) for v in row) for row in rows],
    )
    db.executemany(
        "INSERT INTO sensor_readings VALUES (?, ?, ?, ?, ?, ?)",
        [(i, text(t), *f) for i, t, *f in readings(marks[0][1])],
    )
    db.executemany(
        "INSERT INTO batchscore_watermarks (job, shard, shards, watermark, run_id, updated_at) "
        "VALUES (?, 0, 1, ?, 'bench', ?)",
        [(job, text(mark), text(mark)) for job, mark in marks],
    )
    db.commit()
    db.close()


def postgres_seed(url, rows, marks):
    with psycopg.connect(url) as db:
        with db.cursor() as cur:
            cur.execute(f"SET search_path = {SCHEMA}")
            cur.execute(
                "CREATE TABLE sensor_readings (reading_id bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, "
                "temperature double precision, vibration double precision, pressure double precision, rpm integer)"
            )
            with cur.copy(f"COPY batchscore_runs ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            with cur.copy("COPY sensor_readings FROM STDIN") as copy:
                for row in readings(marks[0][1]):
                    copy.write_row(row)
            cur.executemany(
                "INSERT INTO batchscore_watermarks (job, shard, shards, watermark, run_id, updated_at) "
                "VALUES (%s, 0, 1, %s, 'bench', %s)",
                [(job, mark, mark) for job, mark in marks],
            )
            cur.execute("ANALYZE batchscore_runs")


def fetch(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        sys.exit(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, len(body)


def measure(url, env_dir, args):
    jobs_dir = env_dir / "jobs"
    jobs_dir.mkdir()
    for j in range(args.jobs):
        (jobs_dir / f"job_{j:03d}.toml").write_text(JOB.replace("{sink}", f"predictions_{j:03d}"))
    env = dict(os.environ, DATABASE_URL=url, BATCHSCORE_JOBS_DIR=str(jobs_dir), RUST_LOG="warn")
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".onnxruntime" / "lib" / "libonnxruntime.so"))
    subprocess.run([BINARY, "migrate"], env=env, check=True, capture_output=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rows = ledger_rows(args.jobs, args.ledger, now)
    marks = [(f"job_{j:03d}", now - dt.timedelta(hours=1)) for j in range(args.jobs)]
    if url.startswith("sqlite"):
        sqlite_seed(url.removeprefix("sqlite://"), rows, marks)
    else:
        postgres_seed(url.split("?")[0], rows, marks)
    log(f"  seeded {len(rows)} ledger rows over {args.jobs} jobs; scoring a real window of each")
    for job, _ in marks:
        subprocess.run([BINARY, "run-job", job], env=env, check=True, capture_output=True)
    daemon = subprocess.Popen(
        [BINARY, "daemon", "--listen", "127.0.0.1:0"],
        env=dict(env, RUST_LOG="info"), stderr=subprocess.PIPE, text=True,
    )
    port = None
    for line in daemon.stderr:
        if "/healthz and /metrics" in line and "addr=" in line:
            port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
            break
    if port is None:
        sys.exit("the daemon did not listen")
    results = {}
    try:
        for name, path in [("overview", "/"), ("job page", "/jobs/job_007")]:
            for _ in range(5):
                fetch(port, path)
            times, size = [], 0
            for _ in range(args.requests):
                elapsed, size = fetch(port, path)
                times.append(elapsed * 1000)
            times.sort()
            results[name] = (
                statistics.median(times),
                times[int(len(times) * 0.95) - 1],
                times[-1],
                size,
            )
            log(f"  {name}: median {results[name][0]:.1f} ms")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--ledger", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: cargo build --release")
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    table = []
    for backend in ["sqlite", "postgres"]:
        if args.only and args.only != backend:
            continue
        log(f"{backend}:")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            if backend == "sqlite":
                url = f"sqlite://{tmp / 'bench.db'}"
            else:
                with psycopg.connect(base, autocommit=True) as db:
                    db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
                    db.execute(f"CREATE SCHEMA {SCHEMA}")
                sep = "&" if "?" in base else "?"
                url = f"{base}{sep}options=-c%20search_path%3D{SCHEMA}"
            try:
                for name, figures in measure(url, tmp, args).items():
                    table.append((backend, name, *figures))
            finally:
                if backend == "postgres":
                    with psycopg.connect(base, autocommit=True) as db:
                        db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    print(f"\n{args.jobs} jobs, {args.ledger} ledger rows, {args.requests} requests each, one at a time\n")
    print("| database | page | median | p95 | worst | bytes |")
    print("|---|---|---:|---:|---:|---:|")
    for backend, name, median, p95, worst, size in table:
        print(f"| {backend} | {name} | {median:.1f} ms | {p95:.1f} ms | {worst:.1f} ms | {size:,} |")


if __name__ == "__main__":
    main()
