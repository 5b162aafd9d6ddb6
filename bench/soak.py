#!/usr/bin/env python3
"""Soak: the daemon running 50 jobs on one-second schedules for a long while, and whether it
stays steady (memory, open files, threads, database connections) and exact (every window once,
contiguous, every row in it scored once).

Per database (SQLite, PostgreSQL) it creates 5 small source tables that keep growing (a feeder
inserts 4 rows into each every 200 ms, stamped with the current time), 50 job files (10 per
table, each into its own results table: windows of 1 s, 1 s of lateness, the demo model
models/machine_failure.onnx), starts the release binary's daemon and samples it every 10 s:

  rss      VmRSS of the daemon (MiB)
  fds      its open file descriptors
  threads  its threads
  conns    the database's sessions of it (PostgreSQL: pg_stat_activity rows named batchscore*
           in the bench's database; SQLite: the daemon's descriptors open on the database files)
  sqlite   the heap SQLite holds in the daemon (MiB; /metrics batchscore_sqlite_memory_bytes):
           page caches, statements and schemas, which the backend bounds

Each sample is the busiest and quietest moment of a burst of 10 readings 100 ms apart: every
window opens connections of its own and closes them at its end, so a moment's counts follow the
windows in flight. After --minutes it stops the daemon (SIGTERM), stops the feeder, and checks
each job: its committed windows are contiguous and none repeats, and its results hold exactly
the source rows inside them, once.

Targets, after the first minute: RSS grows by less than 10% (the last minute's median against
the second minute's); the quietest fds, threads and connections of the last sample are no more
than the busiest of the second minute. Exit 1 if a target or a check fails.

Usage: bench/soak.py [--minutes 20] [--only sqlite|postgres] [--csv PATH] [--plot PATH.png]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: psycopg[binary]; matplotlib for --plot; the release binary (cargo build --release).
"""

import argparse
import contextlib
import csv
import datetime as dt
import os
import pathlib
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODEL = ROOT / "models" / "machine_failure.onnx"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
SCHEMA = "batchscore_soak"
TABLES = 5
JOBS_PER_TABLE = 10
SAMPLE_EVERY = 10.0
KEYS = ("rss", "fds", "threads", "conns", "sqlite")

JOB = """schedule = "* * * * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "1s"
lateness = "1s"
[model]
path = "{model}"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "{sink}"
"""


def log(message):
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Sqlite:
    name = "sqlite"

    def __init__(self, work):
        self.path = pathlib.Path(work) / "soak.db"
        self.url = f"sqlite://{self.path}?mode=rwc"

    def connect(self):
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def create(self, conn, table):
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, temperature REAL, "
                     "vibration REAL, pressure REAL, rpm INTEGER)")
        conn.execute(f"CREATE INDEX {table}_ts ON {table} (ts)")

    def insert(self, conn, table, rows):
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conn.executemany(f"INSERT INTO {table} (ts, temperature, vibration, pressure, rpm) VALUES (?, ?, ?, ?, ?)",
                         [(now, 60 + v, v / 3, 4 + v / 10, 900 + 100 * v) for v in rows])

    def epoch(self, column):
        # julianday, not unixepoch(…, 'subsec'): Python's own SQLite may predate it.
        return f"(julianday({column}) - 2440587.5) * 86400.0"

    def connections(self, pid, conn):
        return sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
                   if str(self.path) in os.path.realpath(f"/proc/{pid}/fd/{fd}"))

    def drop(self):
        pass


class Postgres:
    name = "postgres"

    def __init__(self, base_url):
        import psycopg
        self.psycopg = psycopg
        self.base = base_url
        separator = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{separator}options=-c%20search_path%3D{SCHEMA}"
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")

    def connect(self):
        conn = self.psycopg.connect(self.base, autocommit=True)
        conn.execute(f"SET search_path = {SCHEMA}")
        return conn

    def create(self, conn, table):
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, "
                     "temperature double precision, vibration double precision, pressure double precision, rpm integer)")
        conn.execute(f"CREATE INDEX {table}_ts ON {table} (ts)")

    def insert(self, conn, table, rows):
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} (ts, temperature, vibration, pressure, rpm) "
                            "VALUES (clock_timestamp(), %s, %s, %s, %s)",
                            [(60 + v, v / 3, 4 + v / 10, 900 + 100 * v) for v in rows])

    def epoch(self, column):
        return f"extract(epoch FROM {column})::float8"

    def connections(self, pid, conn):
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name LIKE 'batchscore%'").fetchone()[0]

    def drop(self):
        with self.psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def feeder(db, stop):
    """Insert 4 rows into every source table every 200 ms, until `stop` is set."""
    conn = db.connect()
    tick = 0
    while not stop.is_set():
        for t in range(TABLES):
            db.insert(conn, f"soak_src_{t}", [(tick + k) % 20 for k in range(4)])
        tick += 1
        stop.wait(0.2)
    conn.close()


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_heap(port):
    """SQLite's heap in the daemon, MiB, from its /metrics (0 where it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("batchscore_sqlite_memory_bytes "):
                    return float(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def sample(db, pid, conn, port):
    """(rss, fds, threads, conns, sqlite) as (busiest, quietest) pairs over a burst of 10
    readings."""
    readings = []
    for _ in range(10):
        rss, threads = proc_status(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        readings.append((rss, fds, threads, db.connections(pid, conn), sqlite_heap(port)))
        time.sleep(0.1)
    return {key: (max(r[i] for r in readings), min(r[i] for r in readings))
            for i, key in enumerate(KEYS)}


def check_exact(db, conn, jobs):
    """Per job: contiguous windows, none twice, results = the source rows inside them, once.
    Returns (problems, windows committed in all, rows scored in all)."""
    problems, total_windows, total_rows = [], 0, 0
    for job, table, sink in jobs:
        windows = conn.execute(
            f"SELECT {db.epoch('window_start')}, {db.epoch('window_end')}, rows_written FROM batchscore_runs "
            f"WHERE job = '{job}' AND status = 'succeeded' ORDER BY window_start").fetchall()
        if not windows:
            problems.append(f"{job}: no committed window")
            continue
        starts = [w[0] for w in windows]
        if len(set(starts)) != len(starts):
            problems.append(f"{job}: a window was committed twice")
        for a, b in zip(windows, windows[1:]):
            if a[1] != b[0]:
                problems.append(f"{job}: windows {a[:2]} and {b[:2]} are not contiguous")
                break
        first, last = windows[0][0], windows[-1][1]
        source = {r[0] for r in conn.execute(
            f"SELECT id FROM {table} WHERE {db.epoch('ts')} >= {first!r} AND {db.epoch('ts')} < {last!r}")}
        scored = [r[0] for r in conn.execute(f"SELECT id FROM {sink}")]
        if sorted(scored) != sorted(source):
            problems.append(f"{job}: {len(scored)} rows scored, {len(source)} source rows in its windows")
        if sum(w[2] for w in windows) != len(scored):
            problems.append(f"{job}: the ledger says {sum(w[2] for w in windows)} rows written, the table holds {len(scored)}")
        total_windows += len(windows)
        total_rows += len(scored)
    return problems, total_windows, total_rows


def soak(db, work, minutes, writer):
    conn = db.connect()
    jobs_dir = pathlib.Path(work) / f"jobs_{db.name}"
    jobs_dir.mkdir()
    jobs = []
    for t in range(TABLES):
        db.create(conn, f"soak_src_{t}")
        for j in range(JOBS_PER_TABLE):
            job, sink = f"soak_{t}_{j}", f"soak_scores_{t}_{j}"
            (jobs_dir / f"{job}.toml").write_text(JOB.format(table=f"soak_src_{t}", model=MODEL, sink=sink))
            jobs.append((job, f"soak_src_{t}", sink))
    env = dict(os.environ, DATABASE_URL=db.url, BATCHSCORE_JOBS_DIR=str(jobs_dir),
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".onnxruntime" / "lib" / "libonnxruntime.so"))
    subprocess.run([BINARY, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    stop = threading.Event()
    feeding = threading.Thread(target=feeder, args=(db, stop), daemon=True)
    feeding.start()
    log_path = pathlib.Path(work) / f"daemon_{db.name}.log"
    with open(log_path, "w") as daemon_log:
        port = free_port()
        daemon = subprocess.Popen([BINARY, "daemon", "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=daemon_log)
        started = time.monotonic()
        samples = []
        try:
            while (elapsed := time.monotonic() - started) < minutes * 60:
                time.sleep(max(0.0, SAMPLE_EVERY * (len(samples) + 1) - elapsed))
                if daemon.poll() is not None:
                    raise SystemExit(f"{db.name}: the daemon exited early ({daemon.returncode}); see {log_path}")
                s = sample(db, daemon.pid, conn, port)
                s["t"] = round(time.monotonic() - started)
                samples.append(s)
                writer.writerow([db.name, s["t"]] + [v for key in KEYS for v in s[key]])
                log(f"{db.name} t={s['t']:>5}s rss={s['rss'][0]:.1f} MiB fds={s['fds']} threads={s['threads']} "
                    f"conns={s['conns']} sqlite={s['sqlite'][0]:.1f} MiB")
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
            stop.set()
            feeding.join()
    problems, windows, rows = check_exact(db, conn, jobs)
    conn.close()
    if code != 0:
        problems.append(f"the daemon exited {code} on SIGTERM; see {log_path}")
    return samples, problems, windows, rows


def judge(name, samples, minutes):
    """The figures and whether each target holds."""
    after_minute = [s for s in samples if s["t"] >= 60]
    second = [s["rss"][0] for s in after_minute if s["t"] < 120] or [after_minute[0]["rss"][0]]
    last = [s["rss"][0] for s in after_minute if s["t"] > minutes * 60 - 60] or [after_minute[-1]["rss"][0]]
    baseline, final = statistics.median(second), statistics.median(last)
    growth = final / baseline - 1
    # The second minute, as for RSS: the pools have warmed up (a blocking thread that appears
    # at 70 s is the runtime's pool reaching its working size, not growth).
    start = [s for s in after_minute if s["t"] < 120] or after_minute[:1]
    end = after_minute[-1]
    verdicts = [(f"RSS {baseline:.1f} → {final:.1f} MiB ({growth * 100:+.1f}%, target < +10%)", growth < 0.10)]
    for key in ("fds", "threads", "conns"):
        busiest = max(s[key][0] for s in start)
        quietest = min(s[key][1] for s in start)
        verdicts.append((f"{key} in the second minute: {quietest}–{busiest}, at {end['t']} s: "
                         f"{end[key][1]}–{end[key][0]} (quietest at the end ≤ busiest of the second minute)",
                         end[key][1] <= busiest))
    return verdicts


def plot(all_samples, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3), dpi=110)
    for name, samples in all_samples.items():
        ax.plot([s["t"] / 60 for s in samples], [s["rss"][0] for s in samples], label=f"{name}: RSS")
        if name == "sqlite":
            ax.plot([s["t"] / 60 for s in samples], [s["sqlite"][0] for s in samples], linestyle="--",
                    label="sqlite: SQLite's heap")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("batchscore daemon, 50 jobs every second")
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--csv", help="write every sample to this CSV file")
    parser.add_argument("--plot", help="draw RSS over time into this PNG (needs matplotlib)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: cargo build --release")
    failed = False
    all_samples = {}
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.csv, "w", newline="")) if args.csv else open(os.devnull, "w")
        writer = csv.writer(out)
        writer.writerow(["database", "t", "rss_max", "rss_min", "fds_max", "fds_min", "threads_max",
                         "threads_min", "conns_max", "conns_min", "sqlite_max", "sqlite_min"])
        names = [args.only] if args.only else ["sqlite", "postgres"]
        print(f"# soak: 50 jobs every second for {args.minutes:g} minutes, "
              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores\n")
        for name in names:
            db = Sqlite(work) if name == "sqlite" else Postgres(args.database_url)
            try:
                log(f"{name}: soaking for {args.minutes:g} minutes")
                samples, problems, windows, rows = soak(db, work, args.minutes, writer)
            finally:
                db.drop()
            all_samples[name] = samples
            print(f"## {name}: {windows:,} windows committed, {rows:,} rows scored")
            for line in problems:
                print(f"- FAILED {line}")
                failed = True
            if not problems:
                print("- every job's windows contiguous, none twice, every row in them scored once")
            for text, ok in judge(name, samples, args.minutes):
                print(f"- {'ok' if ok else 'FAILED'} {text}")
                failed |= not ok
            print()
    if args.plot:
        plot(all_samples, args.plot)
        log(f"plot written to {args.plot}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
