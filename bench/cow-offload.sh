#!/usr/bin/env bash
# Benchmark 4 of the COPY_AND_WRITE issue: host-side copy-on-write versus Cairn's one COPY_AND_WRITE.
#
# For each chunk size (64K and 1M by default), on a volume whose source chunks are shared with a
# snapshot (the situation copy-on-write exists for):
#   host-side       READ the old chunk over NBD, WRITE it to the target, WRITE the new data: 3 round trips,
#                   the chunk crosses the wire twice
#   copy-and-write  one NBD_CMD_CAIRN_COPY_AND_WRITE carrying only the new data: 1 round trip
# and prints round trips, NBD bytes on the wire per operation, median latencies and their ratio.
#
# Starts its own daemon on a temporary pool and stops it (by PID) on exit. Short by design (the machine
# may be shared): RUNS operations per mode and chunk size, one at a time, each on a fresh shared chunk.
#
#   bench/cow-offload.sh                 # CAIRN_BIN=.build/debug/cairn, RUNS=20, BUFFER=4K
#   CAIRN_BIN=.build/release/cairn RUNS=50 CHUNKS="64K 256K 1M" bench/cow-offload.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CAIRN=${CAIRN_BIN:-.build/debug/cairn}
RUNS=${RUNS:-20}
BUFFER=${BUFFER:-4K}
BUFFER_OFFSET=${BUFFER_OFFSET:-16K}
CHUNKS=${CHUNKS:-64K 1M}
for tool in "$CAIRN" qemu-io jq; do
    command -v "$tool" >/dev/null || { echo "cow-offload: $tool not found" >&2; exit 1; }
done

pool=$(mktemp -d /tmp/cairn-bench-XXXXXX)
"$CAIRN" serve --data-dir "$pool" --nbd-port 0 --log-level warning >"$pool.log" 2>&1 &
daemon=$!
cleanup() {
    kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$pool" "$pool.log"
}
trap cleanup EXIT
for _ in $(seq 200); do
    [ -S "$pool/cairn.sock" ] && [ -f "$pool/daemon.json" ] && break
    kill -0 "$daemon" 2>/dev/null || { cat "$pool.log" >&2; exit 1; }
    sleep 0.05
done

cairn() { "$CAIRN" "$@" --data-dir "$pool"; }
bytes() { numfmt --from=iec "$1"; }

printf '%-7s %-15s %11s %11s %15s %15s\n' chunk mode "round trips" "bytes sent" "bytes received" "median latency"
for chunk in $CHUNKS; do
    size=$(bytes "$chunk")
    volume="cow-$chunk"
    # Sources in [0, RUNS) chunks, copy-and-write targets in [RUNS, 2 RUNS), host-side targets after.
    cairn volume create "$volume" "$(( (3 * RUNS + 1) * size ))" --chunk-size "$chunk" >/dev/null
    uri=$(cairn volume show "$volume" --json | jq -r .exportURI)
    qemu-io -f raw "$uri" -c "write -P 0x5a 0 $(( RUNS * size ))" >/dev/null
    cairn snapshot create "$volume@base" >/dev/null

    run() {
        cairn copy-and-write "$volume" --source 0 --target "$1" --offset "$BUFFER_OFFSET" \
            --pattern 0xc3 --length "$BUFFER" --count "$RUNS" --json "${@:2}"
    }
    offload=$(run $(( RUNS * size )))
    host=$(run $(( 2 * RUNS * size )) --host-side)
    for report in "$host" "$offload"; do
        jq -r --arg chunk "$chunk" \
            '[$chunk, .mode, .roundTrips, .bytesSent, .bytesReceived, (.latency.medianMicroseconds / 1000 | tostring | .[0:6]) + " ms"]
             | @tsv' <<<"$report" | awk -F'\t' '{ printf "%-7s %-15s %11s %11s %15s %15s\n", $1, $2, $3, $4, $5, $6 }'
    done
    jq -rn --argjson h "$host" --argjson o "$offload" --arg chunk "$chunk" \
        '"\($chunk): host-side / copy-and-write = \($h.roundTrips / $o.roundTrips) x round trips, "
         + "\((($h.bytesSent + $h.bytesReceived) / ($o.bytesSent + $o.bytesReceived)) * 10 | round / 10) x wire bytes, "
         + "\(($h.latency.medianMicroseconds / $o.latency.medianMicroseconds) * 100 | round / 100) x median latency"'
done
echo "($RUNS runs per row, $BUFFER written at +$BUFFER_OFFSET into each chunk, $(basename "$CAIRN") at $CAIRN, loopback TCP)"
