#!/usr/bin/env bash
# Snapshot copy-on-write benchmarks: see bench/snapshot_cow.py (and bench/README.md).
set -euo pipefail
exec python3 "$(dirname "$0")/snapshot_cow.py" "$@"
