#!/usr/bin/env python3
"""Train the demo and test models on synthetic data and write their fixtures.

Regenerates, deterministically (fixed seeds):
  models/machine_failure.onnx   classifier: failure risk from sensor readings
  models/delivery_eta.onnx      regressor: minutes to deliver an order
  tests/fixtures/*.json         feature rows with the predictions ONNX Runtime's
                                Python API gives for them: the reference values the
                                Rust tests compare batchscore's results against.
  tests/fixtures/overflow.onnx  a linear model whose float32 output overflows to
                                infinity for large inputs: the tests' source of bad
                                predictions.

Needs: pip install scikit-learn skl2onnx onnxruntime numpy
Run from anywhere: python3 models/train.py
"""

import json
import pathlib

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LinearRegression

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FIXTURES = ROOT / "tests" / "fixtures"


def sensor_readings(rng, n):
    """Temperature (C), vibration (mm/s), pressure (bar), rpm; failures rise with heat and shake."""
    temperature = rng.normal(70, 8, n).round(3)
    vibration = np.abs(rng.normal(3, 1.2, n)).round(3)
    pressure = rng.normal(5, 0.6, n).round(3)
    rpm = rng.integers(900, 3600, n)
    risk = 0.09 * (temperature - 70) + 1.1 * (vibration - 3) - 0.8 * (pressure - 5) + 0.0006 * (rpm - 2200)
    failed = (risk + rng.normal(0, 0.8, n) > 1.2).astype(np.int64)
    x = np.column_stack([temperature, vibration, pressure, rpm]).astype(np.float64)
    return x, failed


def deliveries(rng, n):
    """Distance (km), items, hour of day, raining; minutes grow with distance, rush hours and rain."""
    distance = np.abs(rng.gamma(2.0, 2.5, n)).round(3)
    items = rng.integers(1, 12, n)
    hour = rng.integers(0, 24, n)
    raining = rng.random(n) < 0.25
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 17) & (hour <= 20))
    minutes = 12 + 3.2 * distance + 0.9 * items + 7 * rush + 9 * raining + rng.normal(0, 3, n)
    x = np.column_stack([distance, items, hour, raining]).astype(np.float64)
    return x, minutes


def export(model, n_features, name, directory=MODELS):
    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        # Plain tensors instead of a ZipMap of dicts: batchscore reads tensors.
        options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
        target_opset=17,
    )
    path = directory / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def reference(path, x):
    """Predictions from ONNX Runtime's Python API, on the float32 matrix a scorer feeds it."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {"features": x.astype(np.float32)})
    return dict(zip(names, values))


def write_fixture(name, columns, x, outputs):
    rows = []
    for i in range(len(x)):
        row = {"features": {c: float(x[i, j]) for j, c in enumerate(columns)}, "outputs": {}}
        for out_name, value in outputs.items():
            v = value[i]
            row["outputs"][out_name] = v.tolist() if hasattr(v, "tolist") else v
        rows.append(row)
    (FIXTURES / f"{name}.json").write_text(json.dumps({"columns": columns, "rows": rows}, indent=1) + "\n")


def main():
    MODELS.mkdir(exist_ok=True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261124)

    x, y = sensor_readings(rng, 5000)
    clf = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=1).fit(x.astype(np.float32), y)
    path = export(clf, 4, "machine_failure")
    fx, _ = sensor_readings(rng, 240)
    write_fixture("machine_failure", ["temperature", "vibration", "pressure", "rpm"], fx, reference(path, fx))

    x, y = deliveries(rng, 5000)
    reg = GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=1).fit(x.astype(np.float32), y)
    path = export(reg, 4, "delivery_eta")
    fx, _ = deliveries(rng, 240)
    write_fixture("delivery_eta", ["distance_km", "items", "hour", "raining"], fx, reference(path, fx))

    # Output = 1e30 * temperature: above about 3.4e8 the float32 product is infinite.
    x = np.arange(8, dtype=np.float64).reshape(2, 4)
    overflow = LinearRegression().fit(x, [0.0, 1.0])
    overflow.coef_ = np.array([1e30, 0.0, 0.0, 0.0])
    overflow.intercept_ = 0.0
    path = export(overflow, 4, "overflow", FIXTURES)
    assert np.isinf(reference(path, np.array([[1e9, 0, 0, 0]]))["variable"]).all()

    for p in sorted([*MODELS.glob("*.onnx"), *FIXTURES.glob("*.onnx")]):
        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
