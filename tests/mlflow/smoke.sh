#!/usr/bin/env bash
# End-to-end check of the real-MLflow test setup, with curl only on the REST side (what
# batchscore will do): serve, register two versions of models/machine_failure.onnx, resolve
# the alias, download model.onnx through the artifact proxy, move the alias, stop the server
# and check that no server process is left. Needs scripts/install-mlflow.sh to have run.
#
# Usage: tests/mlflow/smoke.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
py="$root/.venv-mlflow/bin/python"
reg="$root/tests/mlflow/registry.py"
[[ -x "$py" ]] || { echo "error: $py missing; run scripts/install-mlflow.sh" >&2; exit 1; }
cd "$root"

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

"$py" "$reg" serve --port "$port" --dir "$dir" >"$dir/serve.out" 2>"$dir/serve.err" &
pid=$!
for _ in $(seq 1 240); do grep -q '^ready ' "$dir/serve.out" && break; sleep 0.5; done
grep -q '^ready ' "$dir/serve.out" || { cat "$dir/serve.err"; fail "server not ready"; }
url="$(sed -n 's/^ready //p' "$dir/serve.out")"
echo "server: $url"

# v2: same graph, other bytes (a different doc_string)
"$py" - "$dir/v2.onnx" <<'PY'
import sys, onnx
m = onnx.load("models/machine_failure.onnx"); m.doc_string = "v2"; onnx.save(m, sys.argv[1])
PY
orig="$(sha256sum models/machine_failure.onnx | cut -d' ' -f1)"
v2="$(sha256sum "$dir/v2.onnx" | cut -d' ' -f1)"
[[ "$orig" != "$v2" ]] || fail "v2 has the same bytes as v1"

r1="$("$py" "$reg" register --uri "$url" --name machine_failure --model models/machine_failure.onnx --alias champion 2>"$dir/r1.err")"
r2="$("$py" "$reg" register --uri "$url" --name machine_failure --model "$dir/v2.onnx" 2>"$dir/r2.err")"
echo "v1: $r1"; echo "v2: $r2"
[[ "$(echo "$r1" | json 'd["sha256_of_model_onnx"]')" == "$orig" ]] || fail "stored v1 model.onnx differs"
[[ "$(echo "$r2" | json 'd["sha256_of_model_onnx"]')" == "$v2" ]] || fail "stored v2 model.onnx differs"

api="$url/api/2.0/mlflow"
ver="$(curl -fsS "$api/registered-models/alias?name=machine_failure&alias=champion" | json 'd["model_version"]["version"]')"
[[ "$ver" == 1 ]] || fail "champion -> $ver, expected 1"
loc="$(curl -fsS "$api/model-versions/get-download-uri?name=machine_failure&version=$ver" | json 'd["artifact_uri"]')"
path="${loc#mlflow-artifacts:}"
data="$(curl -fsS "$url/api/2.0/mlflow-artifacts/artifacts$path/MLmodel" \
  | "$py" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["flavors"]["onnx"]["data"])')"
curl -fsS -o "$dir/dl.onnx" "$url/api/2.0/mlflow-artifacts/artifacts$path/$data"
[[ "$(sha256sum "$dir/dl.onnx" | cut -d' ' -f1)" == "$orig" ]] || fail "downloaded model.onnx differs"
echo "champion -> v$ver, $loc/$data downloaded, sha256 matches"

"$py" "$reg" alias --uri "$url" --name machine_failure --alias champion --version 2 >/dev/null 2>&1
ver="$(curl -fsS "$api/registered-models/alias?name=machine_failure&alias=champion" | json 'd["model_version"]["version"]')"
[[ "$ver" == 2 ]] || fail "champion -> $ver after the move, expected 2"
echo "champion moved -> v$ver"

kill "$pid"; wait "$pid" || true; pid=""
for _ in $(seq 1 100); do pgrep -f "mlflow server --host 127.0.0.1 --port $port|uvicorn.*--port $port|_supervise --port $port" >/dev/null || break; sleep 0.1; done
if pgrep -af "mlflow server --host 127.0.0.1 --port $port|uvicorn.*--port $port|_supervise --port $port"; then fail "server processes left"; fi
echo "server stopped, no process left"
echo "mlflow smoke: OK"
