#!/usr/bin/env bash
# Install a real MLflow (tracking server + client) into .venv-mlflow/ of this project, for the
# integration tests that resolve `models:/NAME@ALIAS` and `models:/NAME/VERSION` URIs against a
# live MLflow server (tests/mlflow/registry.py starts it and registers models into it).
# Everything comes from PyPI: mlflow with its [auth] extra (Flask-WTF, for `mlflow server
# --app-name basic-auth`), plus onnx / onnxruntime / numpy for mlflow.onnx.log_model.
#
# Usage: scripts/install-mlflow.sh [--force]
# Env:   MLFLOW_VERSION (default 3.17.2), ORT_VERSION (default 1.31.1, as install-onnxruntime.sh),
#        PYTHON (default python3; needs Python >= 3.10 with the venv module)
# Prints the venv's python on its last line: `MLflow X installed in DIR (python: DIR/bin/python)`.
set -euo pipefail

version="${MLFLOW_VERSION:-3.17.2}"
ort_version="${ORT_VERSION:-1.31.1}"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-mlflow"
marker="$venv/VERSION"
want="mlflow[auth]==$version onnxruntime==$ort_version"

if [[ "${1:-}" != "--force" && -x "$venv/bin/python" && "$(cat "$marker" 2>/dev/null)" == "$want" ]]; then
  echo "MLflow $version already installed in $venv (python: $venv/bin/python)"
  exit 0
fi

command -v "$python" >/dev/null || { echo "error: $python not found; install Python 3 (>= 3.10) with venv and pip" >&2; exit 1; }
"$python" - <<'PY' || { echo "error: $python is too old; MLflow $version needs Python >= 3.10" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$venv"
fi
rm -f "$marker"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "Creating virtualenv $venv..."
  "$python" -m venv "$venv" || {
    rm -rf "$venv"
    echo "error: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi

echo "Installing mlflow[auth] $version, onnx, onnxruntime $ort_version, numpy from PyPI (a few minutes)..."
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null || true
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "mlflow[auth]==$version" "onnxruntime==$ort_version" onnx numpy || {
  echo "error: pip could not install mlflow==$version / onnxruntime==$ort_version into $venv" >&2
  exit 1
}

# Check that what the tests use imports and that the server entry point is there.
"$venv/bin/python" - "$version" <<'PY' || { echo "error: the MLflow install in $venv does not work (see above)" >&2; exit 1; }
import sys
import mlflow, mlflow.onnx, onnx, onnxruntime, flask_wtf  # noqa: F401
from mlflow import MlflowClient  # noqa: F401
if mlflow.__version__ != sys.argv[1]:
    sys.exit(f"mlflow {mlflow.__version__} installed, expected {sys.argv[1]}")
print(f"  mlflow {mlflow.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
PY
[[ -x "$venv/bin/mlflow" ]] || { echo "error: $venv/bin/mlflow is missing" >&2; exit 1; }

echo "$want" > "$marker"
echo "MLflow $version installed in $venv (python: $venv/bin/python)"
