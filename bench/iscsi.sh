#!/usr/bin/env bash
# Cairn over iSCSI against Debian's tgt serving a raw file and against Cairn over NBD: qemu-img bench
# (4 KiB requests, read and -w, queue depth DEPTH) and iscsi-perf (random READ16, the only thing it does).
#
#   CAIRN_BIN=.build/release/cairn bench/iscsi.sh        # SIZE=1G COUNT=200000 DEPTH=32 PERF_SECONDS=10
#
# Every server listens on loopback only and is stopped by its pid at the end. Prints one table; the
# working files stay under $WORKDIR (default: a new directory in /tmp) for inspection.
set -euo pipefail

SIZE=${SIZE:-1G}
COUNT=${COUNT:-200000}
DEPTH=${DEPTH:-32}
PERF_SECONDS=${PERF_SECONDS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAIRN_BIN=${CAIRN_BIN:-$ROOT/.build/release/cairn}
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/cairn-iscsi-bench-XXXXXX)}
NBD_PORT=${NBD_PORT:-20809}
ISCSI_PORT=${ISCSI_PORT:-23260}
TGT_PORT=${TGT_PORT:-23261}
IQN=iqn.2026-12.dev.cairn:bench
TGT_IQN=iqn.2026-12.test.tgt:bench

for tool in qemu-img qemu-io iscsi-perf tgtd tgtadm; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install qemu-utils qemu-block-extra libiscsi-bin tgt)" >&2; exit 1; }
done
[ -x "$CAIRN_BIN" ] || { echo "no cairn binary at $CAIRN_BIN (swift build -c release --product cairn)" >&2; exit 1; }

pids=()
cleanup() {
    # tgtd ignores SIGTERM while it has targets; nothing here needs a graceful stop.
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "workdir $WORKDIR" >&2
"$CAIRN_BIN" serve --data-dir "$WORKDIR/pool" --nbd-port "$NBD_PORT" --iscsi-listen "127.0.0.1:$ISCSI_PORT" \
    --log-level warning >"$WORKDIR/cairn.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do [ -S "$WORKDIR/pool/cairn.sock" ] && [ -f "$WORKDIR/pool/daemon.json" ] && break; sleep 0.1; done
"$CAIRN_BIN" volume create bench "$SIZE" --data-dir "$WORKDIR/pool" >/dev/null

truncate -s "$SIZE" "$WORKDIR/tgt.raw"
tgtd -f --iscsi portal="127.0.0.1:$TGT_PORT" --control-port "$TGT_PORT" >"$WORKDIR/tgtd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do tgtadm -C "$TGT_PORT" --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C "$TGT_PORT" --lld iscsi --op new --mode target --tid 1 -T "$TGT_IQN"
tgtadm -C "$TGT_PORT" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$WORKDIR/tgt.raw"
tgtadm -C "$TGT_PORT" --lld iscsi --op bind --mode target --tid 1 -I ALL

declare -A URL=(
    [cairn-iscsi]="iscsi://127.0.0.1:$ISCSI_PORT/$IQN/0"
    [tgt-iscsi]="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"
    [cairn-nbd]="nbd://127.0.0.1:$NBD_PORT/bench"
)
TARGETS=${TARGETS:-cairn-iscsi tgt-iscsi cairn-nbd}

# Fill each device first so reads hit data, not holes.
for target in $TARGETS; do
    qemu-img convert -n -f raw -O raw "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"null-co\",\"size\":\"$(numfmt --from=iec "$SIZE")\",\"read-zeroes\":false}}" "${URL[$target]}" 2>/dev/null \
        || qemu-io -f raw "${URL[$target]}" -c "write -P 0x5a 0 $SIZE" >/dev/null
done

iops() {  # qemu-img bench output -> requests per second
    awk -v count="$COUNT" '/Run completed in/ { printf "%.0f", count / $4 }'
}

printf "%-12s %14s %14s %18s\n" target read-IOPS write-IOPS iscsi-perf-IOPS
for target in $TARGETS; do
    url=${URL[$target]}
    read=$(qemu-img bench -f raw -c "$COUNT" -d "$DEPTH" -s 4k "$url" 2>&1 | iops)
    write=$(qemu-img bench -f raw -w -c "$COUNT" -d "$DEPTH" -s 4k "$url" 2>&1 | iops)
    perf="-"
    if [[ $url == iscsi://* ]]; then
        perf=$(timeout $((PERF_SECONDS + 20)) iscsi-perf -r -b 8 -m "$DEPTH" -t "$PERF_SECONDS" "$url" 2>&1 \
            | grep -o 'iops average [0-9]*' | tail -1 | awk '{ print $3 }')
    fi
    printf "%-12s %14s %14s %18s\n" "$target" "$read" "$write" "${perf:--}"
done
