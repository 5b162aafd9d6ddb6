#!/usr/bin/env bash
# From a fresh clone to predictions: install ONNX Runtime, build, seed the demo rows into the
# embedded SQLite database (batchscore.db), run both demo jobs once, show what they wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
cargo build --release --locked
python3 scripts/seed-demo.py batchscore.db
export DATABASE_URL=sqlite://batchscore.db
batchscore="${CARGO_TARGET_DIR:-target}/release/batchscore"
"$batchscore" jobs validate
# Start machine_failure six hours back, so its first run catches up on windows old enough for
# their failure labels to be final: `status` then shows the model's realized AUC.
"$batchscore" watermark set machine_failure "$(date -u -d '-6 hours' +%Y-%m-%dT%H:00:00Z)"
"$batchscore" run-job machine_failure
"$batchscore" run-job delivery_eta
"$batchscore" status
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("batchscore.db")
print("\nHighest failure risk in the window just scored (machine_failure_predictions):")
print(f"{'reading_id':>12} {'machine':>8} {'recorded_at':>22} {'label':>6} {'probability':>12}")
rows = db.execute(
    """SELECT p.reading_id, r.machine_id, r.recorded_at, p.failure_label, p.failure_probability
       FROM machine_failure_predictions p JOIN sensor_readings r USING (reading_id)
       ORDER BY p.failure_probability DESC LIMIT 5"""
)
for reading_id, machine, at, label, probability in rows:
    print(f"{reading_id:>12} {machine:>8} {at:>22} {label:>6} {probability:>12.4f}")
print("\nLongest expected deliveries by zone, a text feature (delivery_eta_predictions):")
print(f"{'zone':>8} {'orders':>7} {'mean eta':>9} {'max eta':>8}")
rows = db.execute(
    """SELECT o.zone, count(*), avg(p.eta_minutes), max(p.eta_minutes)
       FROM delivery_eta_predictions p JOIN orders o USING (order_id)
       GROUP BY o.zone ORDER BY avg(p.eta_minutes) DESC"""
)
for zone, n, mean, longest in rows:
    print(f"{zone:>8} {n:>7} {mean:>9.1f} {longest:>8.1f}")
PY
