#!/usr/bin/env python3
"""MySQL/MariaDB benchmark: batchscore vs the Python job a team would write, on the same rows.

Seeds N rows of bench/dataset.py's table (id, ts, f1..f8) into a MySQL or MariaDB database,
then, alternating, runs
  python job   pandas.read_sql over a server-side (unbuffered) cursor in chunks, onnxruntime,
               and executemany(INSERT … ON DUPLICATE KEY UPDATE), one transaction (pymysql);
  batchscore   the release binary, `run-job --from --to` over the one-hour window,
checks that both wrote the same ids with scores within 1e-5, and prints a markdown table.
`--rss-rows 1000000,5000000` runs batchscore alone at each size and reports its peak RSS.

Usage: bench/mysql.py [--rows 1000000] [--model light|heavy] [--repeat 3] [--rss-rows N,M]
Env:   BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306/test; a database of its own,
       bench_batchscore, is created there and dropped). Seeding uses MariaDB's sequence tables.
Needs: numpy onnxruntime pandas pymysql; the release binary (cargo build --release).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse

import numpy as np
import onnxruntime as ort
import pandas as pd
import pymysql
import pymysql.cursors

import dataset
from run import BINARY, JOB, MODELS, TOLERANCE, log, rfc3339, run_child

DATABASE = "bench_batchscore"


def connect(url, database=None, **extra):
    parts = urllib.parse.urlparse(url)
    return pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                           password=urllib.parse.unquote(parts.password or ""), database=database,
                           autocommit=False, **extra)


def seed(url, rows):
    """(Re)create the bench database with `rows` rows: the values dataset.py gives every database."""
    features = ",\n       ".join(
        f"CAST((((seq * seq) % {dataset.P}) * {a} + seq * {b} + {c}) % {dataset.P} AS DOUBLE) / {dataset.P} * 4 - 2"
        for a, b, c in dataset.COEFFS)
    with connect(url) as db, db.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cur.execute(f"CREATE DATABASE {DATABASE}")
        cur.execute(f"USE {DATABASE}")
        cur.execute(f"""CREATE TABLE {dataset.TABLE} (id BIGINT PRIMARY KEY, ts DATETIME(6) NOT NULL,
                        {", ".join(f"{f} DOUBLE" for f in dataset.FEATURES)})""")
        cur.execute(f"""INSERT INTO {dataset.TABLE}
            SELECT seq, TIMESTAMPADD(MICROSECOND, seq * 3600000000 DIV ({rows} + 1), '{dataset.START:%Y-%m-%d %H:%M:%S}'),
                   {features}
            FROM seq_1_to_{rows}""")
        db.commit()


def reset(url):
    with connect(url, DATABASE) as db, db.cursor() as cur:
        for table in ("bench_scores_bs", "bench_scores_py"):
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        for table in ("batchscore_runs", "batchscore_watermarks", "batchscore_claims", "batchscore_profiles"):
            cur.execute(f"DELETE FROM {table}")
        db.commit()


PYTHON_JOB = r'''
import sys, time, urllib.parse
started = time.perf_counter()
import numpy as np, onnxruntime as ort, pandas as pd, pymysql, pymysql.cursors
url, database, model, start, end, batch = sys.argv[1:7]
parts = urllib.parse.urlparse(url)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
features = [f"f{k}" for k in range(1, 9)]
# An unbuffered (server-side) cursor: the window streams in chunks, not all at once.
read = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                       password=urllib.parse.unquote(parts.password or ""), database=database,
                       cursorclass=pymysql.cursors.SSCursor)
write = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                        password=urllib.parse.unquote(parts.password or ""), database=database, autocommit=False)
rows = 0
with write.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS bench_scores_py (id BIGINT PRIMARY KEY, score DOUBLE)")
    select = f"SELECT id, {', '.join(features)} FROM bench_rows WHERE ts >= %s AND ts < %s"
    for chunk in pd.read_sql(select, read, params=(start, end), chunksize=int(batch)):
        (probabilities,) = session.run(["probabilities"], {"features": chunk[features].to_numpy(dtype=np.float32)})
        cur.executemany("INSERT INTO bench_scores_py (id, score) VALUES (%s, %s) "
                        "ON DUPLICATE KEY UPDATE score = VALUES(score)",
                        list(zip(chunk["id"].tolist(), probabilities[:, 1].astype(np.float64).tolist())))
        rows += len(chunk)
write.commit()
print(f"rows={rows} seconds={time.perf_counter() - started:.3f}")
'''


def run_python(url, model, rows, batch):
    argv = [sys.executable, "-c", PYTHON_JOB, url, DATABASE, MODELS / f"{model}.onnx",
            f"{dataset.START:%Y-%m-%d %H:%M:%S}", f"{dataset.END:%Y-%m-%d %H:%M:%S}", batch]
    seconds, rss, out = run_child(argv)
    if f"rows={rows} " not in out:
        sys.exit(f"the Python job scored the wrong number of rows: {out}")
    return seconds, rss


def run_batchscore(url, jobs_dir, model):
    bs_url = f"{url.rsplit('/', 1)[0]}/{DATABASE}"
    argv = [BINARY, "-q", "--database-url", bs_url, "--jobs-dir", jobs_dir, "run-job", f"bench_{model}",
            "--from", rfc3339(dataset.START), "--to", rfc3339(dataset.END)]
    seconds, rss, _ = run_child(argv)
    return seconds, rss


def agreement(url, rows):
    with connect(url, DATABASE) as db, db.cursor() as cur:
        cur.execute("SELECT count(*), max(abs(b.score - p.score)), sum(b.score IS NULL) FROM bench_scores_bs b "
                    "JOIN bench_scores_py p ON p.id = b.id")
        joined, diff, nulls = cur.fetchone()
    if joined != rows or nulls:
        sys.exit(f"batchscore and the Python job disagree: {joined} common ids of {rows}, {nulls} NULL scores")
    if diff > TOLERANCE:
        sys.exit(f"batchscore and the Python job disagree: max |diff| = {diff}")
    return float(diff)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", default="light", choices=["light", "heavy"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--rss-rows", default="")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")
    work = tempfile.mkdtemp(prefix="batchscore-bench-mysql-")
    jobs_dir = os.path.join(work, "jobs")
    os.makedirs(jobs_dir)
    with open(os.path.join(jobs_dir, f"bench_{args.model}.toml"), "w") as f:
        f.write(JOB.format(model=args.model, table=dataset.TABLE, features=", ".join(f'"{c}"' for c in dataset.FEATURES),
                           chunk_rows=args.chunk_rows, model_path=MODELS / f"{args.model}.onnx"))
    version = ""
    try:
        if args.rss_rows:
            print("| rows | batchscore | peak RSS |\n|---:|---:|---:|")
            for rows in [int(n) for n in args.rss_rows.split(",")]:
                log(f"seeding {rows:,} rows")
                seed(args.database_url, rows)
                run_child([BINARY, "-q", "--database-url", f"{args.database_url.rsplit('/', 1)[0]}/{DATABASE}",
                           "--jobs-dir", jobs_dir, "migrate"])
                seconds, rss = run_batchscore(args.database_url, jobs_dir, args.model)
                print(f"| {rows:,} | {seconds:.2f} s ({rows / seconds:,.0f}/s) | {rss:.0f} MiB |")
            return 0
        log(f"seeding {args.rows:,} rows")
        seed(args.database_url, args.rows)
        with connect(args.database_url) as db, db.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
        run_child([BINARY, "-q", "--database-url", f"{args.database_url.rsplit('/', 1)[0]}/{DATABASE}",
                   "--jobs-dir", jobs_dir, "migrate"])
        runs = {"bs": [], "py": [], "bs_rss": [], "py_rss": []}
        diff = 0.0
        for i in range(args.repeat):
            reset(args.database_url)
            order = ["bs", "py"] if i % 2 == 0 else ["py", "bs"]
            for which in order:
                log(f"run {i + 1}: {which}")
                if which == "bs":
                    seconds, rss = run_batchscore(args.database_url, jobs_dir, args.model)
                else:
                    seconds, rss = run_python(args.database_url, args.model, args.rows, args.chunk_rows)
                runs[which].append(seconds)
                runs[f"{which}_rss"].append(rss)
            diff = max(diff, agreement(args.database_url, args.rows))
        bs, py = statistics.median(runs["bs"]), statistics.median(runs["py"])
        print(f"\n{args.rows:,} rows, {args.model} model, chunk_rows = Python batch = {args.chunk_rows:,}, "
              f"medians of {args.repeat} alternating runs; {version}, {os.cpu_count()} CPUs\n")
        print("| batchscore | Python job | python / batchscore | batchscore peak RSS | Python job peak RSS | max abs diff |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {bs:.2f} s ({args.rows / bs:,.0f}/s) | {py:.2f} s ({args.rows / py:,.0f}/s) | {py / bs:.2f}x | "
              f"{max(runs['bs_rss']):.0f} MiB | {max(runs['py_rss']):.0f} MiB | {diff:.2g} |")
    finally:
        with connect(args.database_url) as db, db.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
