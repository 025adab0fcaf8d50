#!/usr/bin/env bash
# NBD over TLS against plaintext, Cairn and qemu-nbd side by side: see bench/nbd_tls.py.
set -euo pipefail
exec python3 "$(dirname "$0")/nbd_tls.py" "$@"
