#!/usr/bin/env python3
"""Shard benchmark: what splitting a job into shards costs, and what N machines would reach.

It seeds N rows (default 1,000,000) of bench/dataset.py's `bench_rows` (integer keys, one hour),
and times the heavy model (bench/models/heavy.onnx, 100 trees) over that one window as a backfill
(`run-job --from --to`), each result table dropped before each run so every run writes into a
fresh table:

  unsharded       one process, `shards = 1`
  2 at once       `shards = 2`: `run-job --shard 0` and `--shard 1` started together; wall time
                  until both finished
  2 in turn       `shards = 2`: the two shard processes one after the other (sum)
  4 in turn       `shards = 4`: the four shard processes one after the other: each one's time
                  is the per-shard cost, the sum against the unsharded run is the overhead of
                  sharding (each shard reads the window's index range and keeps a quarter)

plus the database's floors for the same window (bench/run.py's: reading the window alone, and
writing N result rows with batchscore's columns), for the model of scale. Each figure is the
median of --repeat runs. Prints a markdown table on stdout, progress on stderr; drops what it
made. The results of every sharded run are checked against the unsharded run's (same ids, scores
within 1e-9): exit 1 if they differ.

Usage: bench/shards.py [--rows N] [--only postgres|sqlite] [--repeat K]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
Needs: numpy onnxruntime psycopg[binary]; the release binary (cargo build --release).
"""

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import dataset
import run

TOLERANCE = 1e-9


def job_text(shards, sink):
    text = run.JOB.format(
        model="heavy", table=dataset.TABLE, features=", ".join(f'"{f}"' for f in dataset.FEATURES),
        chunk_rows=10_000, model_path=run.MODELS / "heavy.onnx",
    )
    text = text.replace("bench_scores_bs", sink)
    return text.replace("chunk_rows = 10000", f"chunk_rows = 10000\nshards = {shards}")


def argv(db, jobs_dir, job, shard=None):
    command = [run.BINARY, "-q", "--database-url", db.url, "--jobs-dir", jobs_dir, "run-job", job,
               "--from", run.rfc3339(dataset.START), "--to", run.rfc3339(dataset.END)]
    if shard is not None:
        command += ["--shard", str(shard)]
    return [str(a) for a in command]


def together(commands):
    """Start every command at once; wall seconds until the last one finished."""
    started = time.perf_counter()
    children = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
    for child, command in zip(children, commands):
        if child.wait() != 0:
            sys.exit(f"{run.redact(' '.join(command))} exited with {child.returncode}")
    return time.perf_counter() - started


def in_turn(commands):
    """Each command after the other; the seconds of each."""
    return [run.run_child(c)[0] for c in commands]


def scores(db, table):
    with db.connect() as conn:
        rows = conn.execute(f"SELECT id, score FROM {table} ORDER BY id").fetchall()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float64)


def check(db, table, reference, what, failures):
    """The sharded run wrote what the unsharded one did: the same ids, the same scores."""
    ids, got = scores(db, table)
    if not (np.array_equal(ids, reference[0]) and np.max(np.abs(got - reference[1])) <= TOLERANCE):
        failures.append(f"{what}: other results than the unsharded run ({len(ids):,} rows)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=run.os.environ.get("BENCH_DATABASE_URL", run.DEFAULT_URL))
    args = parser.parse_args()
    if not run.BINARY.exists():
        sys.exit(f"no release binary at {run.BINARY}: cargo build --release")

    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        jobs_dir = work / "jobs"
        jobs_dir.mkdir()
        sinks = {1: "bench_scores_s1", 2: "bench_scores_s2", 4: "bench_scores_s4"}
        for shards, sink in sinks.items():
            (jobs_dir / f"heavy_s{shards}.toml").write_text(job_text(shards, sink))
        db = run.Sqlite(work) if args.only == "sqlite" else run.Postgres(args.database_url)
        run.seed(db, args.rows, ["heavy"])
        failures = []
        try:
            run.migrate(db, jobs_dir)
            timings = {k: [] for k in ("one", "two_at_once", "two_in_turn", "four_in_turn", "four_each", "read", "write")}
            for repeat in range(args.repeat):
                db.reset(tuple(sinks.values()))
                run.log(f"{db.name}: unsharded ({repeat + 1}/{args.repeat})")
                timings["one"].append(run.run_child(argv(db, jobs_dir, "heavy_s1"))[0])
                reference = scores(db, sinks[1])

                db.reset((sinks[2],))
                run.log(f"{db.name}: 2 shards at once")
                timings["two_at_once"].append(together([argv(db, jobs_dir, "heavy_s2", i) for i in range(2)]))
                check(db, sinks[2], reference, "2 shards at once", failures)

                db.reset((sinks[2],))
                run.log(f"{db.name}: 2 shards in turn")
                timings["two_in_turn"].append(sum(in_turn([argv(db, jobs_dir, "heavy_s2", i) for i in range(2)])))

                db.reset((sinks[4],))
                run.log(f"{db.name}: 4 shards in turn")
                each = in_turn([argv(db, jobs_dir, "heavy_s4", i) for i in range(4)])
                timings["four_in_turn"].append(sum(each))
                timings["four_each"].append(statistics.mean(each))
                check(db, sinks[4], reference, "4 shards in turn", failures)

                run.log(f"{db.name}: floors")
                seconds, rows = db.read_floor(run.MATRIX)
                if rows != args.rows:
                    sys.exit(f"read floor read {rows:,} rows, expected {args.rows:,}")
                timings["read"].append(seconds)
                timings["write"].append(db.write_floor(reference[0], reference[1], provenance=True))
                db.reset(tuple(sinks.values()))
        finally:
            db.drop()

    m = {k: statistics.median(v) for k, v in timings.items()}
    rate = lambda seconds: f"{args.rows / seconds:,.0f}"
    print(f"{db.name}, {args.rows:,} rows, heavy model, median of {args.repeat}; {run.machine()}\n")
    print("| run | seconds | rows/s | against unsharded |")
    print("|---|---|---|---|")
    print(f"| unsharded, 1 process | {m['one']:.2f} | {rate(m['one'])} | 1.00× |")
    print(f"| 2 shards at once (2 processes) | {m['two_at_once']:.2f} | {rate(m['two_at_once'])} | {m['two_at_once'] / m['one']:.2f}× |")
    print(f"| 2 shards in turn (sum) | {m['two_in_turn']:.2f} | | {m['two_in_turn'] / m['one']:.2f}× |")
    print(f"| 4 shards in turn (sum) | {m['four_in_turn']:.2f} | | {m['four_in_turn'] / m['one']:.2f}× |")
    print(f"| one shard of 4 (mean) | {m['four_each']:.2f} | {rate(m['four_each'] * 4)} per machine | |")
    print(f"| read floor (the window) | {m['read']:.2f} | {rate(m['read'])} | |")
    print(f"| write floor (batchscore's row) | {m['write']:.2f} | {rate(m['write'])} | |")
    per_machine = args.rows / (m["four_each"] * 4)
    ceiling = min(args.rows / m["read"], args.rows / m["write"])
    print("\nN machines, one shard each (N × the per-shard rate, up to the database's floors):\n")
    print("| N | rows/s | limited by |")
    print("|---|---|---|")
    for n in (1, 2, 4, 8, 16, 32):
        reach = n * per_machine
        print(f"| {n} | {min(reach, ceiling):,.0f} | {'scoring' if reach < ceiling else ('writing' if m['write'] > m['read'] else 'reading')} |")
    for failure in failures:
        print(f"\nDISAGREEMENT: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
