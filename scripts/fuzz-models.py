#!/usr/bin/env python3
"""Fuzz ONNX Runtime with broken model files: whether it can crash (not just fail) on one.

Takes every model in the repository (models/, bench/models/, tests/fixtures/), breaks a copy at
random (1 to 8 bit flips, 1 to 8 overwritten bytes, or a truncation), and in a child process
loads it with onnxruntime's Python API (the same library batchscore loads) and, when it loads,
scores a batch of 4 rows. Counts how each ended: `error` (refused at load), `ran`, `run-error`,
or a crash (the child died of a signal or exited non-zero); crashing files are kept for study.

Usage: scripts/fuzz-models.py [--cases 1000] [--seed 1] [--keep DIR]
Needs: numpy onnxruntime (the version scripts/install-onnxruntime.sh installs).
"""
import argparse
import collections
import pathlib
import random
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
import numpy as np
import onnxruntime as ort
ort.set_default_logger_severity(4)
try:
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
except Exception:
    print("error"); sys.exit(0)
feeds = {}
for i in session.get_inputs():
    shape = [d if isinstance(d, int) and 0 < d < 1000 else 4 for d in i.shape]
    if "string" in i.type:
        feeds[i.name] = np.full(shape, "a", dtype=object)
    elif "int64" in i.type:
        feeds[i.name] = np.ones(shape, dtype=np.int64)
    elif "double" in i.type:
        feeds[i.name] = np.random.rand(*shape)
    elif "bool" in i.type:
        feeds[i.name] = np.ones(shape, dtype=bool)
    else:
        feeds[i.name] = np.random.rand(*shape).astype(np.float32)
try:
    session.run(None, feeds); print("ran")
except Exception:
    print("run-error")
"""


def broken(data, rng):
    data = bytearray(data)
    kind = rng.choice(["flip", "flip", "bytes", "truncate"])
    if kind == "truncate":
        return bytes(data[: rng.randrange(len(data))]), kind
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data))
        data[at] = data[at] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.randrange(256)
    return bytes(data), kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", default=str(ROOT / "fuzz-crashes"))
    args = parser.parse_args()
    models = sorted(p for d in ("models", "bench/models", "tests/fixtures") for p in (ROOT / d).rglob("*.onnx"))
    rng = random.Random(args.seed)
    outcomes = collections.Counter()
    crashes = []
    with tempfile.TemporaryDirectory() as work:
        case = pathlib.Path(work) / "case.onnx"
        for i in range(args.cases):
            model = rng.choice(models)
            data, kind = broken(model.read_bytes(), rng)
            case.write_bytes(data)
            child = subprocess.run([sys.executable, "-c", CHILD, str(case)], capture_output=True, text=True, timeout=300)
            said = child.stdout.strip().splitlines()
            outcome = said[-1] if child.returncode == 0 and said else f"crash (exit {child.returncode})"
            outcomes[(kind, outcome)] += 1
            if outcome.startswith("crash"):
                keep = pathlib.Path(args.keep)
                keep.mkdir(exist_ok=True)
                (keep / f"{i}_{model.name}").write_bytes(data)
                crashes.append((i, model.name, kind, child.returncode))
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"{kind:9} {outcome:20} {n}")
    print(f"{len(crashes)} crash(es) in {args.cases} cases" + (f", kept in {args.keep}" if crashes else ""))
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
