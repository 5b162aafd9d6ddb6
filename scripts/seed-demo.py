#!/usr/bin/env python3
"""Seed realistic demo rows for the two demo jobs into a SQLite database.

  sensor_readings  one reading a minute from each of 20 machines (machine_failure job)
  machine_failures whether a reading's machine failed within the hour after it, for readings
                   older than an hour (the labels realized performance is measured against)
  orders           a few delivery orders a minute, some already closed, each in a delivery
                   zone (a text column the delivery_eta model one-hot encodes itself)

covering the last few hours up to now, so `batchscore run-job NAME` finds a full window.
Standard library only. Re-running adds nothing twice: rows are keyed by time and machine.

--drift FACTOR seeds the last hour's sensor readings again with vibration multiplied by FACTOR
(a loose sensor mount, say), replacing that hour's rows: what `batchscore monitor` should catch.

Usage: scripts/seed-demo.py [DATABASE_FILE] [--hours N] [--drift FACTOR]
       (default batchscore.db, 6 hours, no drift)
"""

import argparse
import datetime as dt
import math
import random
import sqlite3

ZONES = ["north", "south", "east", "west", "centre"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", nargs="?", default="batchscore.db")
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--drift", type=float, default=None, metavar="FACTOR")
    args = parser.parse_args()

    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    start = now - dt.timedelta(hours=args.hours)
    rng = random.Random(7)
    db = sqlite3.connect(args.database)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS sensor_readings (
            reading_id  INTEGER PRIMARY KEY,
            machine_id  INTEGER NOT NULL,
            recorded_at TEXT NOT NULL,      -- ISO-8601, UTC
            temperature REAL,
            vibration   REAL,
            pressure    REAL,
            rpm         INTEGER
        );
        CREATE INDEX IF NOT EXISTS sensor_readings_recorded_at ON sensor_readings (recorded_at);
        CREATE TABLE IF NOT EXISTS orders (
            order_id    TEXT PRIMARY KEY,
            placed_at   TEXT NOT NULL,
            status      TEXT NOT NULL,
            distance_km REAL,
            items       INTEGER,
            hour        INTEGER,
            raining     BOOLEAN,
            zone        TEXT
        );
        CREATE INDEX IF NOT EXISTS orders_placed_at ON orders (placed_at);
        CREATE TABLE IF NOT EXISTS machine_failures (
            reading_id  INTEGER PRIMARY KEY,
            failed      INTEGER NOT NULL,   -- 1: the machine failed within the hour
            known_at    TEXT NOT NULL       -- when the application learnt it
        );
        """
    )

    readings, orders, failures = [], [], []
    minutes = int(args.hours * 60)
    for m in range(minutes + 1):
        t = start + dt.timedelta(minutes=m)
        stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        for machine in range(1, 21):
            # Machines 3 and 17 run hot and shaky: they are the ones the model should flag.
            wear = 1.0 if machine in (3, 17) else 0.0
            temperature = rng.gauss(70 + 9 * wear, 6)
            vibration = abs(rng.gauss(3 + 1.5 * wear, 1.0))
            drifted = args.drift is not None and now - t <= dt.timedelta(hours=1)
            if drifted:
                vibration *= args.drift
            pressure = rng.gauss(5 - 0.4 * wear, 0.5)
            rpm = rng.randint(900, 3600)
            key = int(t.timestamp()) // 60 * 100 + machine
            readings.append((drifted, (key, machine, stamp, round(temperature, 2), round(vibration, 3), round(pressure, 3), rpm)))
            if now - t > dt.timedelta(hours=1):
                # Hot, shaky, low-pressure readings precede failures; worn machines fail most.
                risk = 0.02 + 0.5 * wear + 0.04 * max(0.0, temperature - 75) + 0.08 * max(0.0, vibration - 3.5)
                known = (t + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                failures.append((key, int(rng.random() < min(risk, 0.95)), known))
        raining = int(2 + math.sin(m / 90) > 2.6)
        for n in range(rng.randint(1, 4)):
            placed = t + dt.timedelta(seconds=rng.randint(0, 59))
            orders.append(
                (
                    f"ord-{placed:%Y%m%d%H%M}-{n}",
                    placed.strftime("%Y-%m-%d %H:%M:%S"),
                    "open" if rng.random() < 0.85 else "cancelled",
                    round(abs(rng.gammavariate(2.0, 2.5)), 3),
                    rng.randint(1, 11),
                    placed.hour,
                    raining,
                    rng.choice(ZONES),
                )
            )
    db.executemany("INSERT OR IGNORE INTO sensor_readings VALUES (?, ?, ?, ?, ?, ?, ?)", [r for d, r in readings if not d])
    db.executemany("INSERT OR REPLACE INTO sensor_readings VALUES (?, ?, ?, ?, ?, ?, ?)", [r for d, r in readings if d])
    db.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", orders)
    db.executemany("INSERT OR IGNORE INTO machine_failures VALUES (?, ?, ?)", failures)
    db.commit()
    if args.drift is not None:
        print(f"vibration of the last hour's readings multiplied by {args.drift}")
    print(f"seeded {len(readings)} sensor readings, {len(failures)} failure labels and {len(orders)} orders from {start:%H:%M} to {now:%H:%M} UTC into {args.database}")


if __name__ == "__main__":
    main()
