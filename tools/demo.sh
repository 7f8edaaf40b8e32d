#!/usr/bin/env bash
# The lab demo: boot a Debian kernel in QEMU, arm kdump, crash it, capture the dump, print a report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/kdumpy lab demo "$@"
