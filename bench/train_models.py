#!/usr/bin/env python3
"""Train the benchmark's models and write bench/models/light.onnx, heavy.onnx and pipeline.onnx.

light: LogisticRegression, a few hundred floats; scoring costs almost nothing, so a run's time is
       the database's reading and writing plus the scorer's own overhead.
heavy: GradientBoostingClassifier(n_estimators=100, max_depth=4), a tree ensemble; scoring is a
       real share of a run's time.

Both are binary classifiers over the 8 features f1..f8 of bench/dataset.py, trained on the same
distribution (uniform in [-2, 2)) with fixed seeds, so the files are reproducible and small
enough to commit. Exported with skl2onnx: input "features" FloatTensorType([None, 8]), opset 17,
zipmap disabled, so the outputs are the tensors "label" [N] and "probabilities" [N, 2]; the
benchmark stores probabilities[:, 1].

pipeline: a scikit-learn Pipeline over bench/dataset.py's pipeline table: a ColumnTransformer
       (one-hot encoding of the text columns region and channel, StandardScaler on n1..n6) and a
       LogisticRegression, exported the standard per-column way: one [N, 1] input per column,
       named after it (string for region and channel, float32 for n1..n6), zipmap disabled.

Needs: numpy pandas scikit-learn skl2onnx onnxruntime. Run from anywhere: python3 bench/train_models.py
"""

import pathlib

import numpy as np
import onnxruntime as ort
import pandas as pd
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import dataset

MODELS = pathlib.Path(__file__).resolve().parent / "models"
N_FEATURES = 8


def training_data(rng, n):
    """Features uniform in [-2, 2) like the seeded table's; a label with some nonlinear structure,
    so the trees have something to learn and their probabilities vary."""
    x = rng.uniform(-2, 2, size=(n, N_FEATURES))
    logit = (
        1.2 * x[:, 0]
        - 0.8 * x[:, 1]
        + 0.9 * x[:, 2] * x[:, 3]
        + 0.7 * np.sin(2 * x[:, 4])
        - 0.5 * x[:, 5] ** 2
        + 0.4 * x[:, 6]
        + 0.3 * np.abs(x[:, 7])
    )
    y = (logit + rng.normal(0, 0.7, n) > 0).astype(np.int64)
    return x.astype(np.float32), y


def export(model, name):
    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        # Plain tensors instead of a ZipMap of dicts: batchscore reads tensors, and so does
        # the Python job without a per-row dict.
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    stable_opsets(onx)
    path = MODELS / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def stable_opsets(onx):
    """skl2onnx lists the opset imports in set order, which varies with hash randomisation; sort
    them so the same model gives the same bytes (a stable file to commit, a stable model_version).
    convert_sklearn names the graph with a random UUID: name it after nothing random."""
    onx.graph.name = "batchscore_bench"
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)


def pipeline_data(rng, n):
    """Rows like the pipeline table's (the same text values, numbers uniform in [-2, 2)), with a
    label that depends on both text columns and the numbers."""
    frame = pd.DataFrame({
        "region": rng.choice(dataset.REGIONS, n),
        "channel": rng.choice(dataset.CHANNELS, n),
        **{name: rng.uniform(-2, 2, n) for name in dataset.NUMERIC},
    })
    lean = frame["region"].map({r: 0.4 * (k - 3.5) for k, r in enumerate(dataset.REGIONS)})
    channel = frame["channel"].map({"web": 0.5, "app": 0.9, "store": -0.6, "phone": -0.2})
    logit = lean + channel + 1.1 * frame["n1"] - 0.7 * frame["n2"] + 0.5 * frame["n3"] - 0.3 * frame["n4"] + 0.2 * frame["n5"] * frame["n6"]
    return frame, (logit + rng.normal(0, 0.7, n) > 0).astype(np.int64)


def pipeline_feeds(columns):
    """The per-column inputs of the pipeline model, from columns as the databases hold them."""
    return {name: np.asarray(values, dtype=object if name in dataset.TEXT_COLUMNS else np.float32).reshape(-1, 1)
            for name, values in columns.items()}


def export_pipeline(model):
    types = [(c, StringTensorType([None, 1]) if c in dataset.TEXT_COLUMNS else FloatTensorType([None, 1]))
             for c in dataset.PIPELINE_COLUMNS]
    onx = convert_sklearn(model, initial_types=types, options={id(model.steps[-1][1]): {"zipmap": False}},
                          target_opset={"": 17, "ai.onnx.ml": 3})
    stable_opsets(onx)
    path = MODELS / "pipeline.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def check(path, x, model):
    """The exported model gives scikit-learn's probabilities (to float32 precision)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"], session.get_outputs()
    label, probabilities = session.run(None, {"features": x})
    assert probabilities.shape == (len(x), 2)
    np.testing.assert_allclose(probabilities[:, 1], model.predict_proba(x)[:, 1], atol=1e-4)


def main():
    MODELS.mkdir(exist_ok=True)
    rng = np.random.default_rng(20261124)
    x, y = training_data(rng, 20_000)
    holdout, _ = training_data(rng, 2_000)

    models = {
        "light": LogisticRegression(max_iter=1000).fit(x, y),
        "heavy": GradientBoostingClassifier(n_estimators=100, max_depth=4, random_state=1).fit(x, y),
    }
    for name, model in models.items():
        path = export(model, name)
        check(path, holdout, model)
        print(f"wrote {path.relative_to(MODELS.parent.parent)} ({path.stat().st_size:,} bytes), "
              f"training accuracy {model.score(x, y):.3f}")

    frame, y = pipeline_data(rng, 20_000)
    prepare = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), list(dataset.TEXT_COLUMNS)),
                                 ("numbers", StandardScaler(), dataset.NUMERIC)])
    pipeline = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=1000))]).fit(frame, y)
    path = export_pipeline(pipeline)
    holdout, _ = pipeline_data(rng, 2_000)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"], session.get_outputs()
    (probabilities,) = session.run(["probabilities"], pipeline_feeds({c: holdout[c].to_numpy() for c in dataset.PIPELINE_COLUMNS}))
    np.testing.assert_allclose(probabilities[:, 1], pipeline.predict_proba(holdout)[:, 1], atol=1e-4)
    print(f"wrote {path.relative_to(MODELS.parent.parent)} ({path.stat().st_size:,} bytes), "
          f"training accuracy {pipeline.score(frame, y):.3f}")


if __name__ == "__main__":
    main()
