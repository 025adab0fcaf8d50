#!/usr/bin/env bash
# Clone-group benchmarks (protected restore, incremental sync): see bench/clone_restore.py and bench/README.md.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/clone_restore.py" "$@"
