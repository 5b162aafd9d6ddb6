#!/usr/bin/env python3
"""Train the demo and test models on synthetic data and write their fixtures.

Regenerates, deterministically (fixed seeds):
  models/machine_failure.onnx   classifier: failure risk from sensor readings (one
                                float matrix input)
  models/delivery_eta.onnx      regressor: minutes to deliver an order; a pipeline
                                exported one input per column, with a text column
                                (`zone`) it one-hot encodes itself
  tests/fixtures/*.json         feature rows with the predictions ONNX Runtime's
                                Python API gives for them: the reference values the
                                Rust tests compare batchscore's results against.
  tests/fixtures/overflow.onnx  a linear model whose float32 output overflows to
                                infinity for large inputs: the tests' source of bad
                                predictions.
  tests/fixtures/<family>.onnx  the model families teams export (see `families()`):
                                a scikit-learn pipeline with ZipMap off and on, string
                                classes, LightGBM and XGBoost through onnxmltools, a
                                float64 input, an int64 input, and a hand-built graph
                                with int32, bool, string and float64 inputs.

Needs: pip install scikit-learn skl2onnx onnxruntime numpy pandas lightgbm xgboost onnxmltools onnx
Run from anywhere: python3 models/train.py
"""

import json
import pathlib

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import pandas as pd
import xgboost
from onnx import TensorProto, helper
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloatTensorType
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor

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


ZONES = ["north", "south", "east", "west", "centre"]
ZONE_DELAY = {"north": 0.0, "south": 4.0, "east": 1.5, "west": 6.0, "centre": 9.0}


def deliveries(rng, n):
    """Distance (km), items, hour of day, raining, zone; minutes grow with distance, rush hours,
    rain and the zone's traffic."""
    distance = np.abs(rng.gamma(2.0, 2.5, n)).round(3)
    items = rng.integers(1, 12, n)
    hour = rng.integers(0, 24, n)
    raining = (rng.random(n) < 0.25).astype(np.int64)
    zone = rng.choice(ZONES, n)
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 17) & (hour <= 20))
    delay = np.array([ZONE_DELAY[z] for z in zone])
    minutes = 12 + 3.2 * distance + 0.9 * items + 7 * rush + 9 * raining + delay + rng.normal(0, 3, n)
    frame = pd.DataFrame({"distance_km": distance, "items": items, "hour": hour, "raining": raining, "zone": zone})
    return frame, minutes


def stable(onx):
    """The same model as the same bytes: converters list opset imports in set order (which varies
    with hash randomisation) and may name the graph with a random UUID."""
    onx.graph.name = "batchscore_model"
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    return onx


def export(model, n_features, name, directory=MODELS):
    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        # Plain tensors instead of a ZipMap of dicts: batchscore reads tensors.
        options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
        target_opset=17,
    )
    path = directory / f"{name}.onnx"
    path.write_bytes(stable(onx).SerializeToString())
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


# ---- per-column models and the model families -------------------------------------------

# How the scorer feeds a column of each declared type into an input of each ONNX type.
NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": object}
ONNX_INPUT = {"real": FloatTensorType, "integer": Int64TensorType, "boolean": FloatTensorType, "text": StringTensorType}


def export_columns(model, types, path, zipmap=None):
    """Export a scikit-learn pipeline the standard way: one [N, 1] input per column, named after it."""
    initial = [(column, ONNX_INPUT[ty]([None, 1])) for column, ty in types.items()]
    options = {id(model.steps[-1][1]): {"zipmap": zipmap}} if zipmap is not None else None
    onx = convert_sklearn(model, initial_types=initial, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(stable(onx).SerializeToString())
    return path


def run_columns(path, frame):
    """ONNX Runtime's Python outputs for `frame`, each input fed from its columns as a scorer would."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    inputs = session.get_inputs()
    for i in inputs:
        columns = [i.name] if i.name in frame else list(frame.columns)
        values = frame[columns].to_numpy().astype(NUMPY[i.type])
        feeds[i.name] = values.reshape(-1) if len(i.shape) == 1 else values
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def jsonable(value):
    if isinstance(value, dict):  # a ZipMap row: class label -> probability
        return {str(k): float(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def write_typed_fixture(name, types, frame, path):
    """The fixture of a model: typed feature values per row and ONNX Runtime's outputs for them."""
    outputs = run_columns(path, frame)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = []
    for i in range(len(frame)):
        features = {}
        for column, ty in types.items():
            v = frame[column].iloc[i]
            features[column] = str(v) if ty == "text" else (int(v) if ty in ("integer", "boolean") else float(v))
        rows.append({"features": features, "outputs": {k: jsonable(v[i]) for k, v in outputs.items()}})
    signature = {i.name: f"{i.type}{i.shape}" for i in session.get_inputs()}
    document = {"columns": list(types), "types": types, "inputs": signature, "rows": rows}
    (FIXTURES / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")


def customers(rng, n):
    """Region (text), amount spent, items bought; churn and tier depend on all three."""
    region = rng.choice(["north", "south", "east", "west"], n)
    amount = rng.gamma(2.0, 20.0, n).round(3)
    items = rng.integers(1, 12, n)
    frame = pd.DataFrame({"region": region, "amount": amount, "items": items})
    lean = np.select([region == "north", region == "west"], [0.9, -0.6], 0.0)
    churn = (1.4 - amount / 40 - items / 10 + lean + rng.normal(0, 0.5, n) > 0.2).astype(np.int64)
    spend = amount + 6 * items + 15 * (region == "east") + rng.normal(0, 8, n)
    tier = np.select([spend > 90, spend > 55], ["gold", "silver"], "bronze")
    return frame, churn, tier


def families():
    rng = np.random.default_rng(20261125)
    types = {"region": "text", "amount": "real", "items": "integer"}
    frame, churn, tier = customers(rng, 3000)

    def pipeline(estimator):
        prepare = ColumnTransformer([("region", OneHotEncoder(handle_unknown="ignore"), ["region"]), ("numbers", StandardScaler(), ["amount", "items"])])
        return Pipeline([("prepare", prepare), ("model", estimator)])

    fixture, _, _ = customers(rng, 90)
    # Rows of a region the model never saw: what a `fill = { region = "unknown" }` row is scored as.
    fixture.loc[fixture.index[-6:], "region"] = "unknown"
    churn_model = pipeline(LogisticRegression()).fit(frame, churn)
    for name, zipmap in [("churn", False), ("churn_zipmap", True)]:
        path = export_columns(churn_model, types, FIXTURES / f"{name}.onnx", zipmap=zipmap)
        write_typed_fixture(name, types, fixture, path)
    tier_model = pipeline(LogisticRegression(max_iter=500)).fit(frame, tier)
    path = export_columns(tier_model, types, FIXTURES / "tier_zipmap.onnx", zipmap=True)
    write_typed_fixture("tier_zipmap", types, fixture, path)

    # Tree ensembles through onnxmltools: one [N, 4] float input named `input`.
    x = rng.normal(0, 1, (2000, 4)).round(3)
    label = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - x[:, 3] + rng.normal(0, 0.3, 2000) > 0).astype(np.int64)
    target = 3 * x[:, 0] - 2 * x[:, 1] ** 2 + x[:, 2] * x[:, 3] + rng.normal(0, 0.2, 2000)
    matrix = {f"f{i}": "real" for i in range(1, 5)}
    sample = pd.DataFrame(rng.normal(0, 1, (80, 4)).round(3), columns=list(matrix))
    gbm = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=1, verbose=-1).fit(x.astype(np.float32), label)
    onx = onnxmltools.convert_lightgbm(gbm, initial_types=[("input", MlFloatTensorType([None, 4]))], target_opset=15)
    path = FIXTURES / "lightgbm_classifier.onnx"
    path.write_bytes(stable(onx).SerializeToString())
    write_typed_fixture("lightgbm_classifier", matrix, sample, path)
    xgb = xgboost.XGBRegressor(n_estimators=20, max_depth=3, random_state=1).fit(x.astype(np.float32), target)
    onx = onnxmltools.convert_xgboost(xgb, initial_types=[("input", MlFloatTensorType([None, 4]))], target_opset=15)
    path = FIXTURES / "xgboost_regressor.onnx"
    path.write_bytes(stable(onx).SerializeToString())
    write_typed_fixture("xgboost_regressor", matrix, sample, path)

    # A float64 input: [N, 3] doubles, a double output.
    x3 = rng.normal(0, 1, (200, 3)).round(3)
    linear = LinearRegression().fit(x3, x3 @ np.array([1.5, -2.0, 0.25]) + 1e-3 * rng.normal(0, 1, 200))
    onx = to_onnx(linear, initial_types=[("features", DoubleTensorType([None, 3]))], target_opset=17)
    path = FIXTURES / "float64_regressor.onnx"
    path.write_bytes(stable(onx).SerializeToString())
    doubles = {f"x{i}": "real" for i in range(1, 4)}
    write_typed_fixture("float64_regressor", doubles, pd.DataFrame(rng.normal(0, 1, (60, 3)).round(3), columns=list(doubles)), path)

    # An int64 input: [N, 2] counts into a decision tree.
    counts = rng.integers(0, 50, (500, 2))
    tree = DecisionTreeRegressor(max_depth=4, random_state=1).fit(counts, counts[:, 0] * 0.7 - counts[:, 1] * 0.2)
    onx = to_onnx(tree, initial_types=[("counts", Int64TensorType([None, 2]))], target_opset=17)
    path = FIXTURES / "int64_input.onnx"
    path.write_bytes(stable(onx).SerializeToString())
    ints = {"visits": "integer", "purchases": "integer"}
    write_typed_fixture("int64_input", ints, pd.DataFrame(rng.integers(0, 50, (60, 2)), columns=list(ints)), path)

    # Every other element type: int32 and bool [N, 1], string and float64 [N]; float64, string
    # and bool outputs. Built by hand: no converter makes such a model.
    count = helper.make_tensor_value_info("count", TensorProto.INT32, ["N", 1])
    active = helper.make_tensor_value_info("active", TensorProto.BOOL, ["N", 1])
    code = helper.make_tensor_value_info("code", TensorProto.STRING, ["N"])
    value = helper.make_tensor_value_info("value", TensorProto.DOUBLE, ["N"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Squeeze", ["count", "axes"], ["count_1d"]),
        helper.make_node("Cast", ["count_1d"], ["count_f"], to=TensorProto.DOUBLE),
        helper.make_node("Squeeze", ["active", "axes"], ["active_out"]),
        helper.make_node("Cast", ["active_out"], ["active_f"], to=TensorProto.DOUBLE),
        helper.make_node("Add", ["value", "count_f"], ["partial"]),
        helper.make_node("Add", ["partial", "active_f"], ["total"]),
        helper.make_node("Identity", ["code"], ["code_out"]),
    ]
    outputs = [
        helper.make_tensor_value_info("total", TensorProto.DOUBLE, ["N"]),
        helper.make_tensor_value_info("code_out", TensorProto.STRING, ["N"]),
        helper.make_tensor_value_info("active_out", TensorProto.BOOL, ["N"]),
    ]
    graph = helper.make_graph(nodes, "mixed_types", [count, active, code, value], outputs, initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="batchscore-train")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = FIXTURES / "mixed_types.onnx"
    path.write_bytes(model.SerializeToString())
    mixed = {"count": "integer", "active": "boolean", "code": "text", "value": "real"}
    n = 60
    sample = pd.DataFrame(
        {
            "count": rng.integers(-1000, 1000, n),
            "active": rng.integers(0, 2, n),
            "code": [f"code-{i:03d}-é" for i in range(n)],
            "value": rng.normal(0, 100, n).round(3),
        }
    )
    write_typed_fixture("mixed_types", mixed, sample, path)


def main():
    MODELS.mkdir(exist_ok=True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261124)

    x, y = sensor_readings(rng, 5000)
    clf = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=1).fit(x.astype(np.float32), y)
    path = export(clf, 4, "machine_failure")
    fx, _ = sensor_readings(rng, 240)
    write_fixture("machine_failure", ["temperature", "vibration", "pressure", "rpm"], fx, reference(path, fx))

    frame, y = deliveries(rng, 5000)
    numeric = ["distance_km", "items", "hour", "raining"]
    eta = Pipeline(
        [
            ("prepare", ColumnTransformer([("zone", OneHotEncoder(handle_unknown="ignore"), ["zone"]), ("numeric", "passthrough", numeric)])),
            ("model", GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=1)),
        ]
    ).fit(frame, y)
    types = {"distance_km": "real", "items": "integer", "hour": "integer", "raining": "boolean", "zone": "text"}
    path = export_columns(eta, types, MODELS / "delivery_eta.onnx")
    fixture, _ = deliveries(rng, 240)
    write_typed_fixture("delivery_eta", types, fixture, path)

    # Output = 1e30 * temperature: above about 3.4e8 the float32 product is infinite.
    x = np.arange(8, dtype=np.float64).reshape(2, 4)
    overflow = LinearRegression().fit(x, [0.0, 1.0])
    overflow.coef_ = np.array([1e30, 0.0, 0.0, 0.0])
    overflow.intercept_ = 0.0
    path = export(overflow, 4, "overflow", FIXTURES)
    assert np.isinf(reference(path, np.array([[1e9, 0, 0, 0]]))["variable"]).all()

    families()

    for p in sorted([*MODELS.glob("*.onnx"), *FIXTURES.glob("*.onnx")]):
        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
