#!/usr/bin/env bash
# Build the container image (Dockerfile) with buildah, and check it the way the deploy examples use
# it: `batchscore --version`, the demo jobs on SQLite inside the image, a non-root user, every
# shared library resolved, no compiler or pip, the OCI labels; then report its size. Needs no
# Docker daemon and no registry: the base image is made here with debootstrap and imported under
# its official name, and the binary cargo builds here and the library the quick start installs
# stand in for the Dockerfile's two builder stages (see the Dockerfile: no Rust or Python image
# can be pulled here).
#
# Usage: scripts/image-test.sh
# Env:   IMAGE (default localhost/batchscore:latest), the tag given to the image built;
#        BUILDAH_STORAGE_DRIVER (default vfs); CI=true installs buildah and debootstrap when missing.
# Cache: the base image stays in buildah's store, and its root file system in
#        ${XDG_CACHE_HOME:-~/.cache}/batchscore-image/; to make it afresh, delete that and
#        `buildah --storage-driver vfs rmi docker.io/library/debian:bookworm-slim`.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-localhost/batchscore:latest}"
base=docker.io/library/debian:bookworm-slim
cache="${XDG_CACHE_HOME:-$HOME/.cache}/batchscore-image"
rootfs_tar="$cache/debian-bookworm-slim.tar"

# vfs needs no overlay support from the kernel (nested containers, CI); one driver for every call,
# since buildah will not open a store with a driver other than the one that made it.
storage_driver="${BUILDAH_STORAGE_DRIVER:-vfs}"
# chroot isolation needs no OCI runtime (runc, crun) and no user namespaces.
export BUILDAH_ISOLATION=chroot
buildah() { command buildah --storage-driver "$storage_driver" "$@"; }

fail() { echo "image test failed: $*" >&2; exit 1; }
started=$SECONDS
step() { echo "== image ($((SECONDS - started)) s): $*"; }
trap 'echo "image test failed: line $LINENO: $BASH_COMMAND" >&2' ERR

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  [[ "${CI:-}" == true ]] || fail "needs buildah and debootstrap (Debian: apt-get install buildah debootstrap)"
  step "installing buildah and debootstrap"
  # Neither an OCI runtime nor fuse-overlayfs (buildah's recommends): chroot and vfs use neither.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah debootstrap debian-archive-keyring >/dev/null
fi
buildah --version

work="$(mktemp -d)"
containers=()
cleanup() {
  for ctr in "${containers[@]}"; do buildah rm "$ctr" >/dev/null || true; done
  # --one-file-system: a debootstrap that failed may have left /proc mounted in its root.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The official slim image as debuerreotype makes it: debootstrap's minbase, Debian's suites in
# deb822 form, no documentation or translations (dpkg keeps them out later too), apt's caches
# emptied after each use. Close enough that apt behaves and the image's size means something.
make_base_rootfs() {
  local root="$work/rootfs"
  if ! debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    fail "debootstrap could not make the base image (log above)"
  fi
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/{groff,info,linda,man}/* "$root"/usr/share/lintian/overrides/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log "$root"/var/log/apt/*
  mkdir -p "$cache"
  tar --numeric-owner -C "$root" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
}

if buildah inspect --type image "$base" >/dev/null 2>&1; then
  step "base image $base: already in buildah's store"
else
  if [[ ! -f "$rootfs_tar" ]]; then
    step "making $base with debootstrap (once: kept in $cache)"
    make_base_rootfs
  fi
  step "importing $base from $rootfs_tar"
  ctr=$(buildah from scratch)
  containers+=("$ctr")
  buildah add "$ctr" "$rootfs_tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
fi

step "release binary and ONNX Runtime"
cargo build --release --locked
scripts/install-onnxruntime.sh
binary="${CARGO_TARGET_DIR:-target}/release/batchscore"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n "$version" ]] || fail "no version in Cargo.toml"
# The directory that stands in for both builder stages: out/ holds what each would make.
mkdir -p "$work/prebuilt/out"
# As the builder stage does: line tables kept (backtraces), compressed.
objcopy --compress-debug-sections=zlib "$binary" "$work/prebuilt/out/batchscore"
cp .onnxruntime/lib/libonnxruntime.so "$work/prebuilt/out/libonnxruntime.so"

step "building $image"
# The image this tag named before, removed below once nothing names it: on vfs each is a full copy.
previous=$(buildah images --quiet "$image" 2>/dev/null || true)
# --pull=never: every image it needs is in the store (the base), or replaced by a build context.
# No --layers: on vfs every cached step is a full copy of the file system, slower to write than
# the apt-get it would save.
buildah bud --pull=never --quiet \
  --build-context compiled="$work/prebuilt" --build-context onnxruntime="$work/prebuilt" \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg SOURCE="$(git remote get-url origin 2>/dev/null || true)" \
  --tag "$image" . >/dev/null
if [[ -n "$previous" && "$previous" != "$(buildah images --quiet "$image")" ]]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true
fi

step "checking the image's configuration"
inspect() { buildah inspect --type image --format "$1" "$image"; }
user=$(inspect '{{.OCIv1.Config.User}}')
uid=${user%%:*}
[[ "$uid" =~ ^[0-9]+$ && "$uid" != 0 ]] || fail "the image's user is '$user', not a numeric non-root id"
# buildah 1.28's templates have no `json`: a list prints as [a b].
[[ $(inspect '{{.OCIv1.Config.Entrypoint}}') == '[batchscore]' ]] || fail "the entrypoint is not [\"batchscore\"]"
[[ $(inspect '{{.OCIv1.Config.WorkingDir}}') == /app ]] || fail "the working directory is not /app"
label=$(inspect '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}')
[[ "$label" == "$version" ]] || fail "label org.opencontainers.image.version is '$label', Cargo.toml says $version"
echo "user $user, entrypoint [batchscore], labels: $(inspect '{{range $k, $v := .OCIv1.Config.Labels}}{{$k}}={{$v}} {{end}}')"

ctr=$(buildah from --pull=never "$image")
containers+=("$ctr")
# As the image's user, without ORT_DYLIB_PATH: buildah run passes only the image's environment.
in_image() { buildah run "$ctr" -- "$@"; }

step "inside the image"
inside_uid=$(in_image id -u)
[[ "$inside_uid" == "$uid" ]] || fail "commands run as uid $inside_uid, not the image's user $uid"
echo "user: $(in_image id)"
got=$(in_image batchscore --version)
echo "batchscore --version: $got"
[[ "$got" == "batchscore $version" ]] || fail "batchscore --version says '$got', expected 'batchscore $version'"
libraries=$(in_image ldd /usr/local/bin/batchscore /usr/local/lib/libonnxruntime.so)
! grep 'not found' <<<"$libraries" || fail "unresolved shared libraries (above)"
tools=$(in_image sh -c 'for t in cc gcc c++ clang rustc cargo python3 pip pip3; do command -v "$t"; done; true')
[[ -z "$tools" ]] || fail "build tools in the runtime image: $tools"
echo "shared libraries resolve; no compiler, cargo, python or pip"

step "the demo jobs on SQLite, in the image (its /app/jobs and /app/models)"
# The database lives in a host directory mounted at /data, as a volume would be; the image's
# user writes it and the WAL beside it.
mkdir -p "$work/data"
python3 scripts/seed-demo.py "$work/data/batchscore.db" >/dev/null
chown -R "$user" "$work/data"
demo() { buildah run --volume "$work/data:/data" "$ctr" -- batchscore --database-url sqlite:///data/batchscore.db "$@"; }
demo jobs validate
# As the quick start does: machine_failure catches up on six hours, so its labels are final.
demo watermark set machine_failure "$(date -u -d '-6 hours' +%Y-%m-%dT%H:00:00Z)"
demo run-job machine_failure 2>"$work/run.log" || { cat "$work/run.log" >&2; fail "run-job machine_failure"; }
demo run-job delivery_eta 2>"$work/run.log" || { cat "$work/run.log" >&2; fail "run-job delivery_eta"; }
demo status
python3 - "$work/data/batchscore.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for table in ["machine_failure_predictions", "delivery_eta_predictions"]:
    n = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    print(f"{table}: {n} rows")
    if n == 0:
        sys.exit(f"image test failed: the demo wrote no rows to {table}")
PY

step "$image checked: $(buildah images --format '{{.Size}}' "$image") ($base: $(buildah images --format '{{.Size}}' "$base"))"
