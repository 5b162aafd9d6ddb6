#!/usr/bin/env python3
"""Train the benchmark's two models and write bench/models/light.onnx and bench/models/heavy.onnx.

light: LogisticRegression, a few hundred floats; scoring costs almost nothing, so a run's time is
       the database's reading and writing plus the scorer's own overhead.
heavy: GradientBoostingClassifier(n_estimators=100, max_depth=4), a tree ensemble; scoring is a
       real share of a run's time.

Both are binary classifiers over the 8 features f1..f8 of bench/dataset.py, trained on the same
distribution (uniform in [-2, 2)) with fixed seeds, so the files are reproducible and small
enough to commit. Exported with skl2onnx: input "features" FloatTensorType([None, 8]), opset 17,
zipmap disabled, so the outputs are the tensors "label" [N] and "probabilities" [N, 2]; the
benchmark stores probabilities[:, 1].

Needs: numpy scikit-learn skl2onnx onnxruntime. Run from anywhere: python3 bench/train_models.py
"""

import pathlib

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

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
    # skl2onnx lists the opset imports in set order, which varies with hash randomisation; sort
    # them so the same model gives the same bytes (a stable file to commit, a stable model_version).
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    path = MODELS / f"{name}.onnx"
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


if __name__ == "__main__":
    main()
