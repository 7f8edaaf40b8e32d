#!/usr/bin/env bash
# Install what kdumpy's tests and lab need on Debian 12, as root: apt packages, then a virtual
# environment at .venv with kdumpy installed editable (and its dev extras). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # lab: guests, arming and capture inside them
  qemu-system-x86 busybox-static kexec-tools cpio kmod xz-utils zstd e2fsprogs socat
  # lab: the test module for the oops/bug/warn/softlockup triggers is built against these
  linux-headers-amd64 linux-headers-6.12-amd64 make
  # foreign tools our files are checked against
  makedumpfile crash
  # the C compression libraries the collector calls through ctypes (formats/clib.py), as makedumpfile
  liblzo2-2 zlib1g libzstd1 libsnappy1v5
  # and libdeflate, which writes -c's zlib pages faster and smaller than libz
  libdeflate0
  # the HTML report is checked in a headless browser
  chromium
  # building python-lzo, and a venv for Debian's python3
  gcc liblzo2-dev python3-venv python3-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The interpreter: the first python3 on PATH that is 3.11 or newer (Debian 12's is 3.11).
PY=${KDUMPY_PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: need Python >= 3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.kdumpy-installed
# Reinstall when the project's metadata or its C helper changed (the editable install builds it).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ src/kdumpy/_pack.c -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || ! ls src/kdumpy/_pack.*.so >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  # The build is optional (kdumpy runs without it), so a failed compile would leave an old helper.
  so=$(ls -t src/kdumpy/_pack.*.so 2>/dev/null | head -1 || true)
  if [ -z "$so" ] || [ src/kdumpy/_pack.c -nt "$so" ]; then
    echo "setup: src/kdumpy/_pack.c did not build (pip install -v -e . shows why)" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/kdumpy)"
