#!/usr/bin/env python3
"""Benchmark `batchscore run-job` alone over one large window, on SQLite and PostgreSQL.

A thin wrapper kept for the command the top-level README names: it is `run.py --rss-check` at
one size. It seeds N rows (default 1,000,000; bench/dataset.py), scores the whole window with the
release binary and the light model (`--models light,heavy` for both), and prints seconds, rows/s
and the batchscore process's peak RSS. For the side-by-side comparison with the Python job and
the stage floors, run `python3 bench/run.py`.

Usage: bench/bench.py [--rows N] [--chunk-rows N] [--only sqlite|postgres] [--models light,heavy]
Env:   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
"""

import argparse
import sys

import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--models", default="light")
    args = parser.parse_args()
    argv = ["--rss-check", "--rss-rows", str(args.rows), "--chunk-rows", str(args.chunk_rows), "--models", args.models]
    if args.only:
        argv += ["--only", args.only]
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
