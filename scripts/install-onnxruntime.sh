#!/usr/bin/env bash
# Install ONNX Runtime's shared library into .onnxruntime/lib/ of this project, where the
# batchscore binary looks for it. It comes from the `onnxruntime` wheel on PyPI (the library
# sits under onnxruntime/capi/), so no download from anywhere else is needed.
#
# Usage: scripts/install-onnxruntime.sh [--force]
# Env:   ORT_VERSION (default 1.31.1, the version ort 2.0.0-rc.15 expects), PYTHON (default python3)
set -euo pipefail

version="${ORT_VERSION:-1.31.1}"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.onnxruntime/lib"
marker="$dest/VERSION"

if [[ "${1:-}" != "--force" && -f "$dest/libonnxruntime.so" && "$(cat "$marker" 2>/dev/null)" == "$version" ]]; then
  echo "ONNX Runtime $version already installed in $dest"
  exit 0
fi

command -v "$python" >/dev/null || { echo "error: $python not found; install Python 3 with pip" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "Fetching the onnxruntime $version wheel from PyPI..."
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "onnxruntime==$version"

mkdir -p "$dest"
"$python" - "$work" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
    if not any(os.path.basename(n).startswith("libonnxruntime.so") for n in names):
        sys.exit(f"no libonnxruntime.so in {os.path.basename(wheel)}")
    for name in names:
        base = os.path.basename(name)
        # libonnxruntime.so.1.31.1 -> libonnxruntime.so, the name batchscore looks for
        target = "libonnxruntime.so" if base.startswith("libonnxruntime.so") else base
        with z.open(name) as src, open(os.path.join(dest, target), "wb") as out:
            shutil.copyfileobj(src, out)
        print(f"  {name} -> {os.path.join(dest, target)}")
PY
echo "$version" > "$marker"
echo "ONNX Runtime $version installed in $dest"
