#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the status page's browser test,
# where it is missing. It needs root (apt-get); without it, say how, and leave the test to skip
# (it fails instead under CI=true).
set -euo pipefail
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$chromium" ]]; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "warning: no Chromium at $chromium; install Debian's chromium package (apt-get install chromium) for the browser test" >&2
  exit 0
fi
echo "Installing Chromium for the status page's browser test..."
# Another apt run (a buildah install, say) may hold the lock for a while: wait for it.
apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null
"$chromium" --version
