#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that drive the real binary against a
# real SQLite file, the PostgreSQL server (TEST_DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/test), MariaDB/MySQL (TEST_MYSQL_URL), the real ONNX Runtime,
# a real MLflow server (for models:/ URIs) and headless Chromium (the status page), the last three
# installed here if missing. Database, MLflow and browser tests skip when theirs is unavailable,
# except when CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
scripts/install-mlflow.sh
scripts/install-chromium.sh
# The binary also looks next to itself and in the working directory; naming the library keeps the
# tests independent of where CARGO_TARGET_DIR puts the binary.
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.onnxruntime/lib/libonnxruntime.so}"
cargo test --locked "$@"
