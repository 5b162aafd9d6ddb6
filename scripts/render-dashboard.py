#!/usr/bin/env python3
"""Render deploy/monitoring/grafana-dashboard.json to a PNG, from real metrics, without Grafana.

It runs the demo for a few minutes the way production would: a batchscore daemon (the release
binary) scoring two jobs every 10 seconds over rows a feeder inserts, with a burst of bad rows
midway and vibration doubled later (drift against each job's rolling reference, 30 s back), scraped by a real Prometheus (Debian's `prometheus` package) every 2 seconds. Then it
evaluates every panel's queries, as the dashboard writes them, through Prometheus's HTTP API,
and draws each panel where the dashboard places it (graphs for time series, the last value for
stat panels). What the picture shows is what the dashboard's queries return; the styling is
matplotlib's, not Grafana's.

Usage: scripts/render-dashboard.py [--minutes 3] [--out deploy/monitoring/dashboard.png]
Needs: prometheus on PATH, matplotlib, the release binary (cargo build --release), ONNX Runtime
(scripts/install-onnxruntime.sh).
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "batchscore"
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"

JOB = """schedule = "*/10 * * * * *"
[source]
table = "readings"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "10s"
lateness = "1s"
[model]
path = "{model}"
[outputs]
p = "probabilities[1]"
[sink]
table = "{sink}"
[bad_rows]
max_fraction = {max_fraction}
[monitor]
reference = {{ rolling = "30s", span = "20s" }}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer")


def feed(db_path, seconds, bad_from, bad_to, drift_from, drift_to):
    """Insert readings every 100 ms; between bad_from and bad_to, one in eight has no vibration;
    between drift_from and drift_to, vibration doubles (a loose sensor mount)."""
    db = sqlite3.connect(db_path)
    started = time.time()
    while time.time() - started < seconds:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        bad = bad_from <= time.time() - started < bad_to
        scale = 2.0 if drift_from <= time.time() - started < drift_to else 1.0
        rows = []
        for _ in range(random.randint(20, 60)):
            vibration = None if bad and random.random() < 0.125 else random.uniform(0, 6) * scale
            rows.append((now, random.uniform(60, 80), vibration, random.uniform(4, 6), random.randint(900, 3600)))
        db.executemany("INSERT INTO readings (ts, temperature, vibration, pressure, rpm) VALUES (?, ?, ?, ?, ?)", rows)
        db.commit()
        time.sleep(0.1)


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}") as response:
        return json.load(response)["data"]["result"]


def render(prometheus, start, end, out):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(16, rows * 0.55))
    figure.suptitle(f"{dashboard['title']} (rendered from the dashboard's queries; Prometheus, not Grafana)", fontsize=12, y=0.93)
    grid = figure.add_gridspec(rows, 24, hspace=8, wspace=3)
    for panel in panels:
        g = panel["gridPos"]
        axes = figure.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        axes.set_title(panel["title"], fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        series = []
        for target in panel["targets"]:
            expr = target["expr"].replace('{job=~"$job"}', "").replace('job=~"$job"', "")
            for result in query_range(prometheus, expr, start, end, 2):
                label = target["legendFormat"]
                for key, value in result["metric"].items():
                    label = label.replace("{{" + key + "}}", value)
                points = [(float(t) - start, float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((label, points))
        if panel["type"] == "stat":
            axes.axis("off")
            text = "\n".join(f"{label}: {points[-1][1]:,.0f} {unit}" for label, points in series if points) or "no data"
            axes.text(0.02, 0.5, text, fontsize=11, va="center", family="monospace")
            continue
        for label, points in series:
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1.2)
        axes.set_xlabel("seconds", fontsize=7)
        axes.set_ylabel(unit, fontsize=7)
        axes.tick_params(labelsize=7)
        if series:
            axes.legend(fontsize=6, loc="upper left")
    figure.savefig(out, dpi=90, bbox_inches="tight")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--out", default=str(ROOT / "deploy" / "monitoring" / "dashboard.png"))
    args = parser.parse_args()
    if not shutil.which("prometheus"):
        sys.exit("prometheus not found: apt-get install prometheus")
    if not BINARY.exists():
        sys.exit(f"no release binary at {BINARY}: cargo build --release")
    work = pathlib.Path(tempfile.mkdtemp())
    db_path = work / "demo.db"
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, temperature REAL, vibration REAL, pressure REAL, rpm INTEGER)")
    db.execute("CREATE INDEX readings_ts ON readings (ts)")
    db.commit()
    jobs = work / "jobs"
    jobs.mkdir()
    model = ROOT / "models" / "machine_failure.onnx"
    (jobs / "machine_failure.toml").write_text(JOB.format(model=model, sink="failure_scores", max_fraction=0.05))
    (jobs / "vibration_watch.toml").write_text(
        JOB.format(model=model, sink="vibration_scores", max_fraction=0.5).replace('[bad_rows]', '[bad_rows]\npolicy = "skip"')
    )
    daemon_port, prometheus_port = free_port(), free_port()
    env = dict(os.environ, DATABASE_URL=f"sqlite://{db_path}", BATCHSCORE_JOBS_DIR=str(jobs))
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".onnxruntime" / "lib" / "libonnxruntime.so"))
    daemon = subprocess.Popen([BINARY, "-q", "daemon", "--listen", f"127.0.0.1:{daemon_port}"], env=env)
    (work / "prometheus.yml").write_text(
        f"global: {{scrape_interval: 2s, evaluation_interval: 2s}}\n"
        f"scrape_configs:\n  - job_name: batchscore\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{daemon_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        wait_for(f"http://127.0.0.1:{daemon_port}/healthz")
        wait_for(f"{url}/-/ready")
        seconds = args.minutes * 60
        start = time.time()
        print(f"feeding rows for {seconds:.0f}s (bad rows from a third to half of the way, "
              "vibration doubled from two thirds to five sixths)", file=sys.stderr)
        feed(db_path, seconds, seconds / 3, seconds / 2, seconds * 2 / 3, seconds * 5 / 6)
        time.sleep(4)  # the last scrape
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        render(url, start, time.time(), args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        daemon.terminate()
        prometheus.terminate()
        daemon.wait()
        prometheus.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
