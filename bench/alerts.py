#!/usr/bin/env python3
"""Alerts benchmark: what alert routes cost a run, and how soon an alert arrives.

For each database (SQLite, PostgreSQL) it seeds `alert_readings` with 100 sensor readings per
30-minute window over the day before a fixed END, and times the release binary (whole
processes, median of --repeat):

  48 windows, no routes       `run-job --at END` catching up 48 committed windows, no alerts.toml
  48 windows, a route         the same with one webhook route (nothing open: after each window
                              one read of the open alerts, and nothing is written or sent)
  failing window, no routes   a window the results table refuses (a trigger), no alerts.toml
  failing window, a route     the same with the route: the alert is opened by compare-and-set
                              and delivered before the process exits

A receiver on 127.0.0.1 (Python's http.server) answers each request with 200 and records when
it arrived: the alert's latency is from the failed window's ledger row (`finished_at`) to then.
Prints a markdown table on stdout, progress on stderr; drops what it made.

Usage: bench/alerts.py [--only sqlite|postgres] [--repeat 5]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: psycopg[binary]; the release binary (cargo build --release).
"""

import argparse
import datetime as dt
import http.server
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODEL = ROOT / "models" / "machine_failure.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
SCHEMA = "batchscore_alerts_bench"
END = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
WINDOWS = 48
ROWS_PER_WINDOW = 100

JOB = f"""schedule = "*/30 * * * *"
[source]
table = "alert_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "30m"
lateness = "0s"
catch_up = "all"
max_catch_up = 100
[model]
path = "{MODEL}"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "alert_scores"
"""

ROUTES = """[[route]]
name = "bench"
kind = "webhook"
url = "{url}"
secret_env = "BENCH_HOOK_KEY"
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Receiver:
    """Answers 200 to every POST and keeps when each arrived."""

    def __init__(self):
        arrivals = self.arrivals = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrivals.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


class Sqlite:
    name = "SQLite"

    def __init__(self, work):
        self.path = os.path.join(work, "alerts.db")
        self.url = f"sqlite://{self.path}"

    def connect(self):
        return sqlite3.connect(self.path, isolation_level=None)

    def seed(self, rows, first):
        db = self.connect()
        db.executescript(f"""
            CREATE TABLE alert_readings (reading_id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL,
                temperature REAL, vibration REAL, pressure REAL, rpm INTEGER);
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
            INSERT INTO alert_readings SELECT i,
                strftime('%Y-%m-%dT%H:%M:%fZ', {first.timestamp()} + i * {1800 / ROWS_PER_WINDOW}, 'unixepoch'),
                60 + (i * 37 % 200) / 10.0, (i * 13 % 60) / 10.0, 4 + (i * 7 % 20) / 10.0, 900 + (i * 101 % 2700) FROM n;
            CREATE INDEX alert_readings_recorded_at ON alert_readings (recorded_at);
        """)
        db.close()

    def execute(self, sql):
        db = self.connect()
        db.executescript(sql)
        db.close()

    def refuse(self):
        self.execute("CREATE TRIGGER refuse BEFORE INSERT ON alert_scores "
                     "BEGIN SELECT RAISE(ABORT, 'refused by the bench'); END")

    def allow(self):
        self.execute("DROP TRIGGER refuse")

    def failed_at(self):
        db = self.connect()
        row = db.execute("SELECT max(finished_at) FROM batchscore_runs WHERE status = 'failed'").fetchone()
        db.close()
        return dt.datetime.fromisoformat(row[0].replace("Z", "+00:00")).timestamp()

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

    def execute(self, sql):
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def seed(self, rows, first):
        self.execute(f"""CREATE TABLE alert_readings (reading_id bigint PRIMARY KEY,
            recorded_at timestamptz NOT NULL, temperature double precision, vibration double precision,
            pressure double precision, rpm integer)""")
        self.execute(f"""INSERT INTO alert_readings SELECT i,
            timestamptz '{first.isoformat()}' + i * interval '{1800 / ROWS_PER_WINDOW} seconds',
            60 + (i * 37 % 200) / 10.0, (i * 13 % 60) / 10.0, 4 + (i * 7 % 20) / 10.0, 900 + (i * 101 % 2700)
            FROM generate_series(0, {rows - 1}) AS i""")
        self.execute("CREATE INDEX alert_readings_recorded_at ON alert_readings (recorded_at)")

    def refuse(self):
        self.execute("CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'refused by the bench'; END $$")
        self.execute("CREATE TRIGGER refuse BEFORE INSERT ON alert_scores FOR EACH ROW EXECUTE FUNCTION refuse()")

    def allow(self):
        self.execute("DROP TRIGGER refuse ON alert_scores")

    def failed_at(self):
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT max(finished_at) FROM batchscore_runs WHERE status = 'failed'") \
                .fetchone()[0].timestamp()

    def drop(self):
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def batchscore(db, work, *args, routes=False, expect=0):
    env = dict(os.environ, BENCH_HOOK_KEY="bench-key")
    # Not alerts.toml, which would be found next to the jobs directory without --alerts.
    alerts = os.path.join(work, "routes.toml")
    argv = [str(BINARY), "-q", "--database-url", db.url, "--jobs-dir", os.path.join(work, "jobs"), *args]
    if routes:
        argv += ["--alerts", alerts]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        sys.exit(f"batchscore {' '.join(args)} exited {done.returncode}, not {expect}:\n{done.stdout}{done.stderr}")
    return seconds


def bench(db, work, receiver, repeat):
    first = END - dt.timedelta(minutes=30 * WINDOWS)
    db.seed(WINDOWS * ROWS_PER_WINDOW, first)
    batchscore(db, work, "migrate")
    rows, before = [], len(receiver.arrivals)
    for routes in (False, True):
        times = []
        for _ in range(repeat):
            batchscore(db, work, "watermark", "set", "bench", rfc3339(first))
            times.append(batchscore(db, work, "run-job", "bench", "--at", rfc3339(END), routes=routes))
        rows.append((f"{WINDOWS} windows, {'a route' if routes else 'no routes'}", statistics.median(times), None))
    assert len(receiver.arrivals) == before, "nothing was to be sent"
    # One window from the end, refused by the results table.
    last = END - dt.timedelta(minutes=30)
    db.refuse()
    for routes in (False, True):
        times, latencies = [], []
        for _ in range(repeat):
            if routes:
                # A fresh alert each time: resolve it with a committed window in between.
                db.allow()
                batchscore(db, work, "watermark", "set", "bench", rfc3339(last - dt.timedelta(minutes=30)))
                batchscore(db, work, "run-job", "bench", "--at", rfc3339(last), routes=True)
                db.refuse()
            batchscore(db, work, "watermark", "set", "bench", rfc3339(last))
            sent = len(receiver.arrivals)
            times.append(batchscore(db, work, "run-job", "bench", "--at", rfc3339(END), routes=routes, expect=1))
            if routes:
                firing = [t for t in receiver.arrivals[sent:]]
                if len(firing) != 1:
                    sys.exit(f"{len(firing)} alerts for one failure")
                latencies.append(firing[0] - db.failed_at())
        latency = statistics.median(latencies) if latencies else None
        rows.append((f"failing window, {'a route' if routes else 'no routes'}", statistics.median(times), latency))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")
    receiver = Receiver()
    print(f"# alerts: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"median of {args.repeat}\n")
    print("| database | run | seconds | per window | alert latency |")
    print("|---|---|---:|---:|---:|")
    for name in (["sqlite", "postgres"] if not args.only else [args.only]):
        with tempfile.TemporaryDirectory() as work:
            os.mkdir(os.path.join(work, "jobs"))
            with open(os.path.join(work, "jobs", "bench.toml"), "w") as f:
                f.write(JOB)
            with open(os.path.join(work, "routes.toml"), "w") as f:
                f.write(ROUTES.format(url=receiver.url))
            db = Sqlite(work) if name == "sqlite" else Postgres(args.database_url)
            try:
                log(f"{db.name}: benching")
                for run, seconds, latency in bench(db, work, receiver, args.repeat):
                    per_window = f"{seconds / WINDOWS * 1000:.1f} ms" if run.startswith(str(WINDOWS)) else ""
                    shown = f"{latency * 1000:.0f} ms" if latency is not None else ""
                    print(f"| {db.name} | {run} | {seconds:.3f} | {per_window} | {shown} |", flush=True)
            finally:
                db.drop()


if __name__ == "__main__":
    main()
