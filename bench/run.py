#!/usr/bin/env python3
"""Side-by-side throughput benchmark: batchscore vs the Python job vs each stage's floor.

For each database (SQLite, PostgreSQL) it seeds N rows (bench/dataset.py), then for each model
(bench/models/light.onnx, heavy.onnx over 8 float features; pipeline.onnx, a scikit-learn
pipeline over 2 text and 6 numeric columns of its own table, one input per column) runs,
interleaved and on the same data:

  python job   bench/python_job.py as its own process: what a data team would write instead
  batchscore   the release binary, `run-job --from --to` over the whole one-hour window
  read floor   reading the window alone (PostgreSQL: binary COPY out, bytes discarded;
               SQLite: a plain SELECT iterated with the sqlite3 module)
  ORT floor    ONNX Runtime scoring the whole N x 8 float32 matrix with nothing else running
               (one run over the matrix or batches of chunk_rows, whichever is faster)
  write floor  writing (id, score) alone into a fresh table with a primary key (PostgreSQL:
               binary COPY; SQLite: executemany INSERT), one transaction; and again with the
               two lineage columns batchscore adds to every result row ("batchscore's row",
               compact lineage: batchscore_run and batchscore_model)

and prints a markdown table (stdout; progress goes to stderr). It checks that batchscore and
the Python job wrote the same ids with scores within 1e-5 and exits 1 if they did not. All
bench tables are dropped afterwards (PostgreSQL: the bench works in a schema of its own, which is
dropped; SQLite: a temporary file).

`--rss-check` runs batchscore alone at 1,000,000 and 5,000,000 rows (`--rss-rows`) and prints its
peak RSS at each size: memory should follow chunk_rows, not the window.

`--challenger` runs batchscore alone on light and heavy, each as the job's model, without a
challenger and with the other as its challenger (rows into a second table), alternating,
--repeat times (at least 3); it prints the medians, what the challenger added, and that against
the challenger's own ORT floor plus its write floor (batchscore's row) and against the sum of the
two models' ORT floors. Target: the challenger adds at most its ORT floor + write floor, +15%.

`--profile-overhead` runs batchscore alone, with drift monitoring's per-window profile (the
default) and without it (`[monitor] profile = false`), alternating, --repeat times (at least 3),
and prints the medians, the overhead and both peak RSS figures.

Usage: bench/run.py [--rows N] [--only sqlite|postgres] [--models light,heavy,pipeline] [--chunk-rows N]
                    [--repeat K] [--rss-check [--rss-rows 1000000,5000000]] [--profile-overhead]
                    [--challenger]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: numpy onnxruntime pandas psycopg[binary]; the release binary (cargo build --release);
       the models (python3 bench/train_models.py, committed).
"""

import argparse
import contextlib
import os
import pathlib
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import psycopg
from psycopg import sql

import dataset

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
BINARY = ROOT / "target" / "release" / "batchscore"
MODELS = BENCH / "models"
PYTHON_JOB = BENCH / "python_job.py"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
# Everything on PostgreSQL happens in this schema (search_path set through the URL), so the bench
# never touches the tables of whoever else uses the database (e.g. the test suite), and dropping
# the schema removes every table it made, batchscore's ledger included.
SCHEMA = "batchscore_bench"
TOLERANCE = 1e-5
# The columns batchscore's results table has besides the key and the outputs (compact lineage,
# the default: the run's and the model's numbers), with values shaped like a run's: the
# provenance write floor.
PROVENANCE = ["batchscore_run", "batchscore_model"]
PROVENANCE_VALUES = (123_456, 7)
CHALLENGER_TABLE = "bench_scores_bs_challenger"



class Workload:
    """A model's source table, its columns, how to seed it and how ONNX Runtime is fed."""

    def __init__(self, table, columns, sqlite_seed, postgres_seed, feeds):
        self.table, self.columns = table, columns
        self.sqlite_seed, self.postgres_seed, self.feeds = sqlite_seed, postgres_seed, feeds
        self.select = f"SELECT id, {', '.join(columns)} FROM {table} WHERE ts >= {{}} AND ts < {{}}"


MATRIX = Workload(dataset.TABLE, dataset.FEATURES, dataset.sqlite_seed_sql, dataset.postgres_seed_sql,
                  lambda rows: {"features": dataset.feature_matrix(rows)})
PIPELINE = Workload(dataset.PIPELINE_TABLE, dataset.PIPELINE_COLUMNS, dataset.sqlite_pipeline_seed_sql,
                    dataset.postgres_pipeline_seed_sql,
                    lambda rows: {name: np.asarray(values, dtype=object if name in dataset.TEXT_COLUMNS else np.float32).reshape(-1, 1)
                                  for name, values in dataset.pipeline_columns(rows).items()})
WORKLOADS = {"light": MATRIX, "heavy": MATRIX, "pipeline": PIPELINE}

JOB = """\
description = "bench: {model} model over {table}"
schedule = "0 * * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
features = [{features}]
chunk_rows = {chunk_rows}
[window]
size = "1h"
[model]
path = "{model_path}"
[outputs]
score = "probabilities[1]"
[sink]
table = "bench_scores_bs"
"""


def redact(text):
    """text with the password of any URL in it replaced by ***: passwords are never printed."""
    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", text)


def log(message):
    print(message, file=sys.stderr, flush=True)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# Runs argv, then prints a last line: LAUNCHER exit-code seconds peak-RSS-KiB. Why a launcher:
# Linux carries a process's peak RSS across exec, and a child created by fork/vfork starts out
# with its parent's memory, so wait4 from this process (numpy, onnxruntime, a 1M-row matrix:
# hundreds of MiB) would report this process's size, not the child's. A fresh `python3 -I -S`
# that imports only what it needs is about 11 MiB: the children's own peaks are well above that.
LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
print(f"\\nLAUNCHER {os.waitstatus_to_exitcode(status)} {seconds!r} {usage.ru_maxrss}", flush=True)
"""


def run_child(argv):
    """Run argv to completion; return (wall seconds, peak RSS MiB, stdout). Exits on failure."""
    argv = [str(a) for a in argv]
    launched = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, *argv], capture_output=True, text=True)
    stdout, _, last = launched.stdout.rstrip("\n").rpartition("\n")
    if launched.returncode != 0 or not last.startswith("LAUNCHER "):
        sys.exit(f"launching {redact(' '.join(argv))} failed:\n{launched.stdout}\n{launched.stderr}")
    code, seconds, rss_kib = last.split()[1:]
    if int(code) != 0:
        sys.exit(f"{redact(' '.join(argv))} exited with {code}:\n{stdout}\n{launched.stderr}")
    return float(seconds), int(rss_kib) / 1024, stdout


class Sqlite:
    name = "SQLite"

    def __init__(self, work):
        self.path = work / "bench.db"
        self.url = f"sqlite://{self.path}"

    def connect(self):
        db = sqlite3.connect(self.path, isolation_level=None)
        # The floors get batchscore's own connection settings (WAL is set on the file by seed):
        # a floor should not pay for more durability than batchscore does.
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def seed(self, rows, workloads):
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        for workload in workloads:
            db.executescript(workload.sqlite_seed(rows))
        # WAL is a property of the file: set it once here, so every run (batchscore, which asks
        # for WAL anyway, the Python job with sqlite3's defaults, the floors) sees the same mode
        # whatever order they run in.
        db.execute("PRAGMA journal_mode = WAL")
        db.close()

    def reset(self, tables=("bench_scores_bs", "bench_scores_py", "bench_write_floor")):
        """Drop the results tables and empty the WAL so the next stage starts from the same state."""
        db = self.connect()
        for table in tables:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

    def compare(self):
        db = self.connect()
        try:
            return db.execute(COMPARE).fetchone()
        finally:
            db.close()

    def count(self, table):
        db = self.connect()
        try:
            return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            db.close()

    def read_floor(self, workload):
        """Seconds to SELECT the window's id and features and iterate every row; and the row count."""
        db = self.connect()
        bounds = [t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in (dataset.START, dataset.END)]
        started = time.perf_counter()
        rows = sum(1 for _ in db.execute(workload.select.format("?", "?"), bounds))
        seconds = time.perf_counter() - started
        db.close()
        return seconds, rows

    def write_floor(self, ids, scores, provenance=False):
        """Seconds to INSERT (id, score) into a fresh table, executemany in one transaction.

        With provenance, each row also carries the two integer columns batchscore writes
        (batchscore_run, batchscore_model), as batchscore stores them."""
        self.reset(["bench_write_floor"])
        db = self.connect()
        columns = ["id INTEGER PRIMARY KEY NOT NULL", "score REAL"]
        stamp = ()
        if provenance:
            columns += [f"{name} INTEGER NOT NULL" for name in PROVENANCE]
            stamp = PROVENANCE_VALUES
        db.execute(f"CREATE TABLE bench_write_floor ({', '.join(columns)})")
        rows = [(i, score, *stamp) for i, score in zip(ids.tolist(), scores.tolist())]  # ready before the clock
        insert = f"INSERT INTO bench_write_floor VALUES ({', '.join(['?'] * len(columns))})"
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(insert, rows)
        db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
        self.reset(["bench_write_floor"])
        return seconds

    def drop(self):
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class Postgres:
    name = "PostgreSQL"

    def __init__(self, base_url):
        self.base_url = base_url
        separator = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{separator}options=-c%20search_path%3D{SCHEMA}"

    def connect(self, autocommit=True):
        return psycopg.connect(self.url, autocommit=autocommit)

    def seed(self, rows, workloads):
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}").format(sql.Identifier(SCHEMA)))
        with self.connect() as conn:
            for workload in workloads:
                with conn.transaction():
                    for statement in workload.postgres_seed(rows):
                        conn.execute(statement)
                # VACUUM sets the hint bits and visibility map now; otherwise the first run to scan the
                # fresh table would pay for writing them.
                conn.execute(f"VACUUM (ANALYZE) {workload.table}")
            # CHECKPOINT flushes the seed's dirty pages so they are not written in the background
            # during a timed run.
            conn.execute("CHECKPOINT")

    def reset(self, tables=("bench_scores_bs", "bench_scores_py", "bench_write_floor")):
        with self.connect() as conn:
            for table in tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            # The previous stage's writes are flushed now, not during the next stage's clock.
            conn.execute("CHECKPOINT")

    def compare(self):
        with self.connect() as conn:
            return conn.execute(COMPARE).fetchone()

    def count(self, table):
        with self.connect() as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]

    def read_floor(self, workload):
        """Seconds to COPY the window's id and features out (binary) and discard them; row count."""
        query = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(
            sql.SQL(workload.select).format(sql.Literal(dataset.START), sql.Literal(dataset.END))
        )
        with self.connect() as conn, conn.cursor() as cur:
            started = time.perf_counter()
            with cur.copy(query) as copy:
                for _ in copy:
                    pass
            seconds = time.perf_counter() - started
            rows = cur.rowcount
        return seconds, rows

    def write_floor(self, ids, scores, provenance=False):
        """Seconds to COPY (id, score) into a fresh table in one transaction, commit included.

        With provenance, each row also carries the two columns batchscore writes, typed as
        batchscore types them (bigint x 2)."""
        self.reset(["bench_write_floor"])
        # The binary COPY stream is built with numpy before the clock starts, so the figure is
        # the server's ingest (and the socket), not Python building rows one by one. Each tuple:
        # field count, then per field its byte length and big-endian value.
        fields = [("id", ">i8", "bigint PRIMARY KEY"), ("score", ">f8", "double precision")]
        if provenance:
            fields += [(name, ">i8", "bigint NOT NULL") for name in PROVENANCE]
        layout = [("fields", ">i2")]
        for name, kind, _ in fields:
            layout += [(f"{name}_len", ">i4"), (name, kind)]
        tuples = np.empty(len(ids), dtype=np.dtype(layout))
        tuples["fields"] = len(fields)
        for name, kind, _ in fields:
            tuples[f"{name}_len"] = np.dtype(kind).itemsize
        tuples["id"], tuples["score"] = ids, scores
        if provenance:
            for name, value in zip(PROVENANCE, PROVENANCE_VALUES):
                tuples[name] = value
        payload = b"PGCOPY\n\xff\r\n\x00" + bytes(8) + tuples.tobytes() + b"\xff\xff"
        definition = ", ".join(f"{name} {sql_type}" for name, _, sql_type in fields)
        copy_sql = f"COPY bench_write_floor ({', '.join(name for name, _, _ in fields)}) FROM STDIN (FORMAT binary)"
        with self.connect(autocommit=False) as conn:
            conn.execute(f"CREATE TABLE bench_write_floor ({definition})")
            conn.commit()
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                view = memoryview(payload)
                for offset in range(0, len(view), 1 << 20):
                    copy.write(view[offset : offset + (1 << 20)])
            conn.commit()
            seconds = time.perf_counter() - started
        self.reset(["bench_write_floor"])
        return seconds

    def drop(self):
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


# Both results tables, joined on id: (rows batchscore wrote, rows the Python job wrote, ids in
# both, pairs with a NULL score, max |score difference|). Same SQL on both databases.
COMPARE = """
SELECT (SELECT count(*) FROM bench_scores_bs),
       (SELECT count(*) FROM bench_scores_py),
       count(*),
       sum(CASE WHEN b.score IS NULL OR p.score IS NULL THEN 1 ELSE 0 END),
       max(abs(b.score - p.score))
FROM bench_scores_bs b JOIN bench_scores_py p ON p.id = b.id
"""


def ort_floor(model_path, feeds, batch_rows):
    """(seconds, how, scores): ONNX Runtime alone scoring the inputs in one run or in batches."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rows = len(next(iter(feeds.values())))

    def part(start, stop):
        return {name: values[start:stop] for name, values in feeds.items()}

    session.run(["probabilities"], part(0, 100))  # warm-up: first-run allocations
    started = time.perf_counter()
    (probabilities,) = session.run(["probabilities"], feeds)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    for offset in range(0, rows, batch_rows):
        session.run(["probabilities"], part(offset, offset + batch_rows))
    batched = time.perf_counter() - started
    if whole <= batched:
        return whole, "one run", probabilities[:, 1].astype(np.float64)
    return batched, f"{batch_rows:,}-row batches", probabilities[:, 1].astype(np.float64)


def write_jobs(jobs_dir, models, chunk_rows):
    for model in models:
        workload = WORKLOADS[model]
        job = JOB.format(
            model=model,
            table=workload.table,
            # The pipeline model's inputs are named after its columns: matched by name.
            features=", ".join(f'"{f}"' for f in workload.columns),
            chunk_rows=chunk_rows,
            model_path=MODELS / f"{model}.onnx",
        )
        (jobs_dir / f"bench_{model}.toml").write_text(job)
        # The same job without drift monitoring's profile, for --profile-overhead.
        (jobs_dir / f"bench_{model}_noprofile.toml").write_text(job + "[monitor]\nprofile = false\n")
        # With each other model of the same source as its challenger, for --challenger.
        for other in models:
            if other != model and WORKLOADS[other] is workload:
                (jobs_dir / f"bench_{model}_vs_{other}.toml").write_text(
                    job + f'[challenger]\npath = "{MODELS / f"{other}.onnx"}"\ntable = "{CHALLENGER_TABLE}"\n')


def run_batchscore(db, jobs_dir, model, job=None):
    argv = [BINARY, "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, "run-job", job or f"bench_{model}",
            "--from", rfc3339(dataset.START), "--to", rfc3339(dataset.END)]
    seconds, rss, _ = run_child(argv)
    return seconds, rss


def run_python_job(db, model, chunk_rows, rows):
    argv = [sys.executable, PYTHON_JOB, "--database-url", db.url, "--model", MODELS / f"{model}.onnx",
            "--table", WORKLOADS[model].table,
            "--start", dataset.START.isoformat(), "--end", dataset.END.isoformat(), "--batch-rows", chunk_rows]
    seconds, rss, stdout = run_child(argv)
    fields = dict(field.split("=") for field in stdout.split())
    if int(fields.get("rows", -1)) != rows:
        sys.exit(f"the Python job scored the wrong number of rows (expected {rows}): {stdout}")
    # The job's own clock starts after its imports: the difference is interpreter start-up.
    return seconds, rss, seconds - float(fields["seconds"])


def migrate(db, jobs_dir):
    """Apply batchscore's migrations untimed, so the first timed run does not pay for them."""
    run_child([BINARY, "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, "migrate"])


def databases(args, work):
    if args.only in (None, "sqlite"):
        yield Sqlite(work)
    if args.only in (None, "postgres"):
        yield Postgres(args.database_url)


def seed(db, rows, models):
    workloads = list(dict.fromkeys(WORKLOADS[model] for model in models))
    log(f"{db.name}: seeding {rows:,} rows into {', '.join(w.table for w in workloads)}")
    started = time.perf_counter()
    db.seed(rows, workloads)
    log(f"{db.name}: seeded in {time.perf_counter() - started:.1f}s")


def side_by_side(args, work, jobs_dir):
    """The main benchmark; returns (table rows, list of disagreements)."""
    results, disagreements = [], []
    ids = np.arange(1, args.rows + 1, dtype=np.int64)
    for db in databases(args, work):
        seed(db, args.rows, args.models)
        try:
            migrate(db, jobs_dir)
            for model in args.models:
                runs = {key: [] for key in ("bs", "py", "py_startup", "read", "ort", "write", "write_wide", "bs_rss", "py_rss")}
                ort_how = set()
                diffs = []
                for repeat in range(args.repeat):
                    db.reset()
                    # Alternate who goes first across repeats, so neither always gets the
                    # other's leftovers (page cache, WAL, autovacuum).
                    order = ["py", "bs"] if repeat % 2 == 0 else ["bs", "py"]
                    for who in order:
                        if who == "py":
                            log(f"{db.name} {model}: Python job")
                            seconds, rss, startup = run_python_job(db, model, args.chunk_rows, args.rows)
                            runs["py_startup"].append(startup)
                        else:
                            log(f"{db.name} {model}: batchscore")
                            seconds, rss = run_batchscore(db, jobs_dir, model)
                        runs[who].append(seconds)
                        runs[f"{who}_rss"].append(rss)
                        db.reset([])  # checkpoint only: the next run starts without the last one's dirty pages
                    n_bs, n_py, n_both, n_null, diff = db.compare()
                    n_null = n_null or 0  # SUM over no rows is NULL
                    diff = float("nan") if diff is None else float(diff)  # no rows in common: NaN
                    diffs.append(diff)
                    if not (n_bs == n_py == n_both == args.rows and n_null == 0 and diff <= TOLERANCE):
                        disagreements.append(
                            f"{db.name} {model}: batchscore wrote {n_bs:,} rows, the Python job {n_py:,}, "
                            f"{n_both:,} ids in both (expected {args.rows:,}), {n_null} NULL scores, "
                            f"max |difference| {diff:.3g} (tolerance {TOLERANCE:g})"
                        )
                    db.reset()

                    log(f"{db.name} {model}: floors")
                    seconds, rows = db.read_floor(WORKLOADS[model])
                    if rows != args.rows:
                        sys.exit(f"{db.name} read floor read {rows:,} rows, expected {args.rows:,}")
                    runs["read"].append(seconds)
                    feeds = WORKLOADS[model].feeds(args.rows)
                    seconds, how, scores = ort_floor(MODELS / f"{model}.onnx", feeds, args.chunk_rows)
                    del feeds
                    runs["ort"].append(seconds)
                    ort_how.add(how)
                    runs["write"].append(db.write_floor(ids, scores))
                    runs["write_wide"].append(db.write_floor(ids, scores, provenance=True))
                median = {key: statistics.median(values) for key, values in runs.items() if not key.endswith("_rss")}
                results.append({
                    "database": db.name, "model": model, **median,
                    "bs_rss": max(runs["bs_rss"]), "py_rss": max(runs["py_rss"]),
                    "max_diff": float("nan") if any(d != d for d in diffs) else max(diffs), "ort_how": " / ".join(sorted(ort_how)),
                })
        finally:
            db.drop()
    return results, disagreements


def profile_overhead(args, work, jobs_dir):
    """batchscore with and without the per-window profile, alternating; returns table rows."""
    results = []
    for db in databases(args, work):
        seed(db, args.rows, args.models)
        try:
            migrate(db, jobs_dir)
            for model in args.models:
                runs = {"on": [], "off": [], "on_rss": [], "off_rss": []}
                for i in range(max(args.repeat, 3)):
                    # Alternate which goes first: neither always runs on a warmer cache.
                    order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
                    for which in order:
                        db.reset()
                        job = f"bench_{model}" if which == "on" else f"bench_{model}_noprofile"
                        log(f"{db.name} {model}: batchscore, profile {which}, run {i + 1}")
                        seconds, rss = run_batchscore(db, jobs_dir, model, job)
                        written = db.count("bench_scores_bs")
                        if written != args.rows:
                            sys.exit(f"{db.name} {model}: batchscore wrote {written:,} rows, expected {args.rows:,}")
                        runs[which].append(seconds)
                        runs[f"{which}_rss"].append(rss)
                results.append({
                    "database": db.name, "model": model, "runs": len(runs["on"]),
                    "on": statistics.median(runs["on"]), "off": statistics.median(runs["off"]),
                    "on_rss": max(runs["on_rss"]), "off_rss": max(runs["off_rss"]),
                })
        finally:
            db.drop()
    return results


def challenger_overhead(args, work, jobs_dir):
    """batchscore with and without a challenger, alternating; returns table rows."""
    results = []
    ids = np.arange(1, args.rows + 1, dtype=np.int64)
    pairs = [(m, o) for m in args.models for o in args.models if m != o and WORKLOADS[m] is WORKLOADS[o]]
    if not pairs:
        sys.exit("--challenger needs two models of one source: --models light,heavy")
    floors = {}
    for model in dict.fromkeys(m for pair in pairs for m in pair):
        feeds = WORKLOADS[model].feeds(args.rows)
        seconds, _, scores = ort_floor(MODELS / f"{model}.onnx", feeds, args.chunk_rows)
        floors[model] = (seconds, scores)
        del feeds
    tables = ["bench_scores_bs", CHALLENGER_TABLE, "bench_write_floor"]
    for db in databases(args, work):
        seed(db, args.rows, args.models)
        try:
            migrate(db, jobs_dir)
            for model, other in pairs:
                runs = {"alone": [], "with": [], "alone_rss": [], "with_rss": [], "write": []}
                for i in range(max(args.repeat, 3)):
                    order = ["alone", "with"] if i % 2 == 0 else ["with", "alone"]
                    for which in order:
                        db.reset(tables)
                        job = f"bench_{model}" if which == "alone" else f"bench_{model}_vs_{other}"
                        log(f"{db.name} {model}: batchscore, challenger {other if which == 'with' else 'none'}, run {i + 1}")
                        seconds, rss = run_batchscore(db, jobs_dir, model, job)
                        for table in ["bench_scores_bs"] + ([CHALLENGER_TABLE] if which == "with" else []):
                            written = db.count(table)
                            if written != args.rows:
                                sys.exit(f"{db.name} {job}: {written:,} rows in {table}, expected {args.rows:,}")
                        runs[which].append(seconds)
                        runs[f"{which}_rss"].append(rss)
                    db.reset(tables)
                    runs["write"].append(db.write_floor(ids, floors[other][1], provenance=True))
                results.append({
                    "database": db.name, "model": model, "challenger": other, "runs": len(runs["alone"]),
                    "alone": statistics.median(runs["alone"]), "with": statistics.median(runs["with"]),
                    "alone_rss": max(runs["alone_rss"]), "with_rss": max(runs["with_rss"]),
                    "ort": floors[other][0], "ort_model": floors[model][0],
                    "write": statistics.median(runs["write"]),
                })
        finally:
            db.drop()
    return results


def print_challenger_overhead(args, results, started_on):
    print(f"\nbatchscore alone, {args.rows:,} rows in one 1h window, chunk_rows = {args.chunk_rows:,}, "
          f"without and with a challenger (medians of {max(args.repeat, 3)} alternating runs)")
    print(f"Before: {started_on}")
    print(f"After:  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| database | model | challenger | alone | with challenger | added | challenger's ORT floor + write floor "
          "| added / that | with / both ORT floors | peak RSS alone | peak RSS with |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        added = r["with"] - r["alone"]
        floor = r["ort"] + r["write"]
        print(f"| {r['database']} | {r['model']} | {r['challenger']} | {rate(args.rows, r['alone'])} | "
              f"{rate(args.rows, r['with'])} | {added:.2f} s | {r['ort']:.2f} + {r['write']:.2f} = {floor:.2f} s | "
              f"{added / floor:.2f} | {r['with'] / (r['ort'] + r['ort_model']):.1f}x | "
              f"{r['alone_rss']:.0f} MiB | {r['with_rss']:.0f} MiB |")


def print_profile_overhead(args, results, started_on):
    print(f"\nbatchscore alone, {args.rows:,} rows in one 1h window, chunk_rows = {args.chunk_rows:,}, "
          f"with and without the per-window profile (medians of {max(args.repeat, 3)} alternating runs)")
    print(f"Before: {started_on}")
    print(f"After:  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| database | model | profile off | profile on | overhead | peak RSS off | peak RSS on |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['database']} | {r['model']} | {rate(args.rows, r['off'])} | {rate(args.rows, r['on'])} | "
              f"{(r['on'] / r['off'] - 1) * 100:+.1f}% | {r['off_rss']:.0f} MiB | {r['on_rss']:.0f} MiB |")


def rss_check(args, work, jobs_dir):
    """batchscore alone at each of --rss-rows; returns table rows."""
    results = []
    for rows in args.rss_rows:
        for db in databases(args, work):
            seed(db, rows, args.models)
            try:
                migrate(db, jobs_dir)
                for model in args.models:
                    db.reset()
                    log(f"{db.name} {model}: batchscore, {rows:,} rows")
                    seconds, rss = run_batchscore(db, jobs_dir, model)
                    written = db.count("bench_scores_bs")
                    if written != rows:
                        sys.exit(f"{db.name} {model}: batchscore wrote {written:,} rows, expected {rows:,}")
                    results.append((db.name, model, rows, seconds, rss))
            finally:
                db.drop()
    return results


def rate(rows, seconds):
    # Sub-second floors (light model scoring) keep three significant digits.
    shown = f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3g}"
    return f"{shown} s ({rows / seconds:,.0f}/s)"


def machine():
    """One line on what the figures were measured on: they mean little without it."""
    memory = ""
    with contextlib.suppress(OSError):
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    version = subprocess.run([BINARY, "-V"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs{memory}, load average {load}; {version}, onnxruntime {ort.__version__} (Python)"


def print_side_by_side(args, results, started_on):
    print(f"\n{args.rows:,} rows in one 1h window, chunk_rows = Python batch = {args.chunk_rows:,}"
          f"{f', median of {args.repeat} runs' if args.repeat > 1 else ''}")
    print(f"Before: {started_on}")
    print(f"After:  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    header = ["database", "model", "batchscore", "Python job", "read floor", "ORT floor", "write floor",
              "write floor, batchscore's row",
              "python / batchscore", "batchscore / ORT floor", "batchscore peak RSS", "Python job peak RSS",
              "max abs diff"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    for r in results:
        n = args.rows
        cells = [r["database"], r["model"], rate(n, r["bs"]), rate(n, r["py"]), rate(n, r["read"]),
                 rate(n, r["ort"]), rate(n, r["write"]), rate(n, r["write_wide"]), f"{r['py'] / r['bs']:.2f}x", f"{r['bs'] / r['ort']:.1f}x",
                 f"{r['bs_rss']:.0f} MiB", f"{r['py_rss']:.0f} MiB", f"{r['max_diff']:.2g}"]
        print("| " + " | ".join(cells) + " |")
    print("\nORT floor: the faster of one run over the whole matrix and "
          f"{args.chunk_rows:,}-row batches; Python job: wall time including interpreter start-up and imports:")
    for r in results:
        print(f"- {r['database']} {r['model']}: ORT floor from {r['ort_how']}; "
              f"Python job start-up and imports {r['py_startup']:.2f} s of its {r['py']:.2f} s")


def print_rss(args, results, started_on):
    print(f"\nbatchscore alone, one 1h window, chunk_rows = {args.chunk_rows:,}")
    print(f"Before: {started_on}")
    print(f"After:  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| database | model | rows | seconds | rows/s | peak RSS |")
    print("|---|---|---:|---:|---:|---:|")
    for name, model, rows, seconds, rss in results:
        print(f"| {name} | {model} | {rows:,} | {seconds:.2f} | {rows / seconds:,.0f} | {rss:.0f} MiB |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the window (default 1,000,000)")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one database only")
    parser.add_argument("--models", default="light,heavy,pipeline",
                        help="comma-separated: light, heavy, pipeline (default all three)")
    parser.add_argument("--chunk-rows", type=int, default=10_000,
                        help="batchscore's chunk_rows, the Python job's batch size and the ORT floor's batch (default 10,000)")
    parser.add_argument("--repeat", type=int, default=1, help="run everything K times, report medians (default 1)")
    parser.add_argument("--rss-check", action="store_true", help="run batchscore alone at --rss-rows, report peak RSS")
    parser.add_argument("--rss-rows", default="1000000,5000000", help="row counts for --rss-check")
    parser.add_argument("--profile-overhead", action="store_true",
                        help="batchscore with and without the per-window drift profile, alternating")
    parser.add_argument("--challenger", action="store_true",
                        help="batchscore with and without a challenger (light and heavy as each other's)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL),
                        help=f"PostgreSQL server (default $BENCH_DATABASE_URL or {DEFAULT_URL})")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in args.models:
        if not (MODELS / f"{model}.onnx").exists():
            parser.error(f"no model {MODELS / model}.onnx: models are light, heavy, pipeline (python3 bench/train_models.py)")
    args.rss_rows = [int(n.replace("_", "")) for n in args.rss_rows.split(",")]
    for rows in [args.rows, *args.rss_rows]:
        try:
            dataset.check_rows(rows)
        except ValueError as e:
            parser.error(str(e))
    if args.repeat < 1 or args.chunk_rows < 1:
        parser.error("--repeat and --chunk-rows must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")
    if args.only != "sqlite":
        try:
            psycopg.connect(args.database_url, connect_timeout=5).close()
        except psycopg.Error as e:
            sys.exit(f"PostgreSQL at {redact(args.database_url)} is unreachable ({e}); use --only sqlite or BENCH_DATABASE_URL")
    started_on = machine()
    work = pathlib.Path(tempfile.mkdtemp(prefix="batchscore-bench-"))
    try:
        jobs_dir = work / "jobs"
        jobs_dir.mkdir()
        write_jobs(jobs_dir, args.models, args.chunk_rows)
        if args.rss_check:
            print_rss(args, rss_check(args, work, jobs_dir), started_on)
            return 0
        if args.profile_overhead:
            print_profile_overhead(args, profile_overhead(args, work, jobs_dir), started_on)
            return 0
        if args.challenger:
            print_challenger_overhead(args, challenger_overhead(args, work, jobs_dir), started_on)
            return 0
        results, disagreements = side_by_side(args, work, jobs_dir)
        print_side_by_side(args, results, started_on)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if disagreements:
        print("\nbatchscore and the Python job DISAGREE:", *disagreements, sep="\n", file=sys.stderr)
        return 1
    print(f"\nbatchscore and the Python job agree: same {args.rows:,} ids in every run, "
          f"scores within {TOLERANCE:g} (max abs diff above).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
