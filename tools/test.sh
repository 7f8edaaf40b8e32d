#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, and every test (QEMU lab tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/pytest "$@"
