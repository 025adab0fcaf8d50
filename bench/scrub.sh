#!/usr/bin/env bash
# Scrub throughput: `cairn pool scrub --wait` over a filled volume against a plain sequential read of the
# pool's slot file (the disk's read speed for the same bytes), in one run.
#
#   CAIRN_BIN=.build/release/cairn bench/scrub.sh        # SIZE=4G DROP_CACHES=1
#
# DROP_CACHES=1 (the default) syncs and drops the page cache before each of the two reads, machine-wide,
# so both read the disk; DROP_CACHES=0 measures reading the page cache (checksum cost only). The pool is
# filled with one pattern write through NBD (qemu-img), so every chunk holds data. Prints one table; the
# working files stay under $WORKDIR.
set -euo pipefail

SIZE=${SIZE:-4G}
DROP_CACHES=${DROP_CACHES:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAIRN_BIN=${CAIRN_BIN:-$ROOT/.build/release/cairn}
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/cairn-scrub-bench-XXXXXX)}
NBD_PORT=${NBD_PORT:-20819}

for tool in qemu-img dd python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$CAIRN_BIN" ] || { echo "no cairn binary at $CAIRN_BIN (swift build -c release --product cairn)" >&2; exit 1; }

pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap cleanup EXIT

drop_caches() {
    if [ "$DROP_CACHES" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
}

now() { date +%s.%N; }

echo "workdir $WORKDIR" >&2
"$CAIRN_BIN" serve --data-dir "$WORKDIR/pool" --nbd-port "$NBD_PORT" --log-level warning >"$WORKDIR/cairn.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -S "$WORKDIR/pool/cairn.sock" ] && [ -f "$WORKDIR/pool/daemon.json" ] && break; sleep 0.1; done
"$CAIRN_BIN" volume create scrub "$SIZE" --data-dir "$WORKDIR/pool" >/dev/null
bytes=$(numfmt --from=iec "$SIZE")
# Non-zero data in every chunk.
step=$((256 << 20))
writes=()
for ((offset = 0; offset < bytes; offset += step)); do
    writes+=(-c "write -P 0x5a $offset $((bytes - offset < step ? bytes - offset : step))")
done
qemu-io -f raw "${writes[@]}" "nbd://127.0.0.1:$NBD_PORT/scrub" >/dev/null
"$CAIRN_BIN" pool status --data-dir "$WORKDIR/pool" >/dev/null  # the daemon is alive
slots=$(ls -S "$WORKDIR"/pool/data/slots-*.dat | head -1)

drop_caches
start=$(now)
"$CAIRN_BIN" pool scrub --wait --json --data-dir "$WORKDIR/pool" >"$WORKDIR/scrub.json"
scrub_seconds=$(python3 -c "print($(now) - $start)")

drop_caches
start=$(now)
dd if="$slots" of=/dev/null bs=1M status=none
dd_seconds=$(python3 -c "print($(now) - $start)")
file_bytes=$(stat -c %s "$slots")

python3 - "$WORKDIR/scrub.json" "$bytes" "$scrub_seconds" "$file_bytes" "$dd_seconds" "$DROP_CACHES" <<'EOF'
import json, sys
report, volume_bytes, scrub_s, file_bytes, dd_s, dropped = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
text = open(report).read()
verified = None
try:
    data = json.loads(text)
    verified = data.get("verifiedBytes") or data.get("report", {}).get("verifiedBytes")
except ValueError:
    pass
verified = verified or volume_bytes
scrub_rate = verified / scrub_s / 2**20
dd_rate = file_bytes / dd_s / 2**20
print(f"page cache dropped before each read: {'yes' if dropped == '1' else 'no'}")
print(f"{'reader':34} {'bytes':>14} {'seconds':>8} {'MiB/s':>8}")
print(f"{'cairn pool scrub (verify CRC-32C)':34} {verified:>14} {scrub_s:8.2f} {scrub_rate:8.0f}")
print(f"{'dd of the slot file (no checks)':34} {file_bytes:>14} {dd_s:8.2f} {dd_rate:8.0f}")
print(f"scrub / raw read: {scrub_rate / dd_rate:.2f}x")
EOF
