#!/usr/bin/env python3
"""Realized-performance benchmark: `batchscore evaluate` against reading the joined rows alone.

For each database (SQLite, PostgreSQL) and each size (default 1,000,000 and 5,000,000 rows) it
seeds N rows (bench/dataset.py, one hour of them), scores them with the light model in
one-minute windows (`run-job --from --to`: 60 windows), writes N labels (one per key, 0 or 1 by
a hash of the key, with a known_at time) into a table of their own, then times, alternating,
--repeat times:

  evaluate   the release binary, `batchscore evaluate bench` over every window: the results
             joined with the labels, every classification metric per window (an exact AUC
             included), compared with what is stored (the first run also writes the figures)
  read       reading the joined rows alone, (id, score, label) of every labelled result row
             (PostgreSQL: binary COPY out, bytes discarded; SQLite: a SELECT iterated with
             the sqlite3 module)
  read all   the same, of the columns evaluate reads: each result row's run, id, score and
             predicted label, with its label if it has one (a LEFT JOIN: coverage needs the
             unlabelled rows too)

and prints a markdown table: the medians, evaluate / read, evaluate / read all, and evaluate's
peak RSS at each size. Targets: evaluate at most 1.3x the read; peak RSS flat from 1M to 5M
rows.

Usage: bench/evaluate.py [--rows 1000000,5000000] [--only sqlite|postgres] [--repeat K]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: numpy onnxruntime psycopg[binary]; the release binary (cargo build --release).
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

from psycopg import sql

import dataset
import run

JOB = """\
description = "bench: realized performance of the light model"
schedule = "* * * * *"
[source]
table = "{table}"
key = "id"
timestamp = "ts"
features = [{features}]
chunk_rows = 10000
[window]
size = "1m"
[model]
path = "{model}"
[outputs]
score = "probabilities[1]"
predicted = "label"
[sink]
table = "bench_scores_bs"
[monitor]
profile = false
[labels]
table = "bench_labels"
key = "id"
label = "failed"
timestamp = "known_at"
maturity = "3650d"
score = "score"
predicted = "predicted"
positive = 1
"""

# A label per key, by a hash of it, correlated with nothing: the metrics' values do not matter here.
LABEL = "(({i} * 2654435761) % 1000 < 300)"
JOINED = "SELECT r.id, r.score, l.failed FROM bench_scores_bs r JOIN bench_labels l ON l.id = r.id"
JOINED_ALL = ("SELECT r.batchscore_run, r.id, r.score, r.predicted, l.failed FROM bench_scores_bs r "
              "LEFT JOIN bench_labels l ON l.id = r.id")


def seed_labels(db, rows):
    if isinstance(db, run.Sqlite):
        conn = db.connect()
        conn.executescript(f"""
DROP TABLE IF EXISTS bench_labels;
CREATE TABLE bench_labels (id INTEGER PRIMARY KEY, failed INTEGER NOT NULL, known_at TEXT NOT NULL);
INSERT INTO bench_labels SELECT id, CAST({LABEL.format(i="id")} AS INTEGER), ts FROM {dataset.TABLE};
""")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return
    with db.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_labels")
        conn.execute("CREATE TABLE bench_labels (id bigint PRIMARY KEY, failed integer NOT NULL, known_at timestamptz NOT NULL)")
        conn.execute(f"INSERT INTO bench_labels SELECT id, ({LABEL.format(i='id')})::int, ts FROM {dataset.TABLE}")
        conn.execute("VACUUM (ANALYZE) bench_labels")
        conn.execute("VACUUM (ANALYZE) bench_scores_bs")
        conn.execute("CHECKPOINT")


def read_joined(db, joined=JOINED):
    """Seconds to read the rows of `joined` (every labelled result row's id, score and label); and
    the row count."""
    if isinstance(db, run.Sqlite):
        conn = db.connect()
        started = time.perf_counter()
        rows = sum(1 for _ in conn.execute(joined))
        seconds = time.perf_counter() - started
        conn.close()
        return seconds, rows
    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(sql.SQL(joined))
    with db.connect() as conn, conn.cursor() as cur:
        started = time.perf_counter()
        with cur.copy(query) as copy:
            for _ in copy:
                pass
        seconds = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM bench_scores_bs r JOIN bench_labels l ON l.id = r.id").fetchone()[0]
    return seconds, rows


def evaluate(db, jobs_dir):
    argv = [run.BINARY, "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, "evaluate", "bench", "--json"]
    seconds, rss, stdout = run.run_child(argv)
    windows = stdout.count('"model": "champion"')
    return seconds, rss, windows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=run.os.environ.get("BENCH_DATABASE_URL", run.DEFAULT_URL))
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    started_on = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        jobs_dir = work / "jobs"
        jobs_dir.mkdir()
        features = ", ".join(f'"{f}"' for f in dataset.FEATURES)
        (jobs_dir / "bench.toml").write_text(JOB.format(table=dataset.TABLE, features=features, model=run.MODELS / "light.onnx"))
        for db in run.databases(argparse.Namespace(only=args.only, database_url=args.database_url), work):
            for rows in sizes:
                run.seed(db, rows, ["light"])
                run.migrate(db, jobs_dir)
                run.log(f"{db.name}: scoring {rows:,} rows in one-minute windows")
                run.run_child([run.BINARY, "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, "run-job", "bench",
                               "--from", run.rfc3339(dataset.START), "--to", run.rfc3339(dataset.END)])
                seed_labels(db, rows)
                evaluated, reads, reads_all, peaks = [], [], [], []
                for k in range(args.repeat):
                    seconds, rss, windows = evaluate(db, jobs_dir)
                    read, joined = read_joined(db)
                    read_all, _ = read_joined(db, JOINED_ALL)
                    run.log(f"{db.name} {rows:,}: evaluate {seconds:.2f}s ({windows} windows, {rss:.0f} MiB), read {read:.2f}s ({joined:,} rows), read all {read_all:.2f}s")
                    if joined != rows:
                        sys.exit(f"{db.name}: {joined} joined rows, expected {rows}")
                    evaluated.append(seconds)
                    reads.append(read)
                    reads_all.append(read_all)
                    peaks.append(rss)
                results.append((db.name, rows, statistics.median(evaluated), statistics.median(reads),
                                statistics.median(reads_all), max(peaks), windows))
            db.drop()
    print(f"\n### Realized performance: evaluate vs reading the joined rows ({started_on}, {run.machine()})\n")
    print(f"`python3 bench/evaluate.py --rows {args.rows} --repeat {args.repeat}`; medians of {args.repeat}.\n")
    print("| database | rows (= labels) | windows | evaluate | read joined rows | evaluate / read | read all | evaluate / read all | evaluate peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows, seconds, read, read_all, rss, windows in results:
        print(f"| {name} | {rows:,} | {windows} | {seconds:.2f} s | {read:.2f} s | {seconds / read:.2f}x "
              f"| {read_all:.2f} s | {seconds / read_all:.2f}x | {rss:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
