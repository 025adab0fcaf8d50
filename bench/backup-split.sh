#!/usr/bin/env bash
# Backup benchmarks: split stall, drain latency, archive throughput, increment size.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/backup_split.py" "$@"
