#!/usr/bin/env bash
# Cairn on RADOS over NBD against Ceph's own block device (fio ioengine=rbd) on the same cluster, and
# the takeover time of a standby node.
#
#   bench/rados.sh [--quick]
#
# Jobs, per side: into fresh clones of a filled base (Cairn: `volume clone base@s`; RBD: `rbd clone` of a
# protected snapshot): one 4 KiB write into each 4 MiB of the clone (QD32, every write is the first into
# its RBD object: an RBD copy-up each), and RUNTIME seconds of 4 KiB random writes (QD32); then on a plain volume/image after a sequential fill: 4 KiB random writes,
# 4 KiB random reads (QD32), 1 MiB sequential writes and reads (QD8). Cairn is reached through fio's
# nbd engine (libnbd), RBD through fio's rbd engine (librbd, no kernel client).
# Takeover: node A serves, is SIGSTOPped; the time from the stop to the first read served by the
# standby B (`qemu-io read`), with a 5 s lease.
#
# Environment knobs (defaults in brackets; --quick changes those marked *):
#   CAIRN_BIN     cairn binary [.build/release/cairn, built when missing]
#   CAIRN_CEPH_CONF, CAIRN_CEPH_KEYRING  an existing cluster [start one with scripts/ceph-cluster]
#   SIZE*         volume / image size [1G; quick 256M]
#   RUNTIME*      seconds per job [20; quick 5]
#   RESULTS_DIR   where fio's JSON goes [bench/results/rados-<timestamp>]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
[[ "${1:-}" == "--help" ]] && { sed -n '2,20p' "$0"; exit 0; }
SIZE=${SIZE:-$([ $QUICK = 1 ] && echo 256M || echo 1G)}
RUNTIME=${RUNTIME:-$([ $QUICK = 1 ] && echo 5 || echo 20)}
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results/rados-$(date -u +%Y%m%dT%H%M%SZ)}
LEASE=5
mkdir -p "$RESULTS_DIR"
WORK=$(mktemp -d /tmp/cairn-rados-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    [ -n "${OWN_CLUSTER:-}" ] && "$REPO/scripts/ceph-cluster" stop "$WORK/ceph"
    rm -rf "$WORK"
}
trap cleanup EXIT

CAIRN_BIN=${CAIRN_BIN:-$REPO/.build/release/cairn}
if [ ! -x "$CAIRN_BIN" ]; then
    (cd "$REPO" && swift build -c release --product cairn >/dev/null)
fi
if [ -z "${CAIRN_CEPH_CONF:-}" ]; then
    OWN_CLUSTER=1
    "$REPO/scripts/ceph-cluster" start "$WORK/ceph" cairn >/dev/null
    # shellcheck disable=SC1091
    source "$WORK/ceph/env"
fi
export CEPH_CONF=$CAIRN_CEPH_CONF
KEYRING_ARGS=()
[ -n "${CAIRN_CEPH_KEYRING:-}" ] && KEYRING_ARGS=(--ceph-keyring "$CAIRN_CEPH_KEYRING")
NS=bench-$$

# fio JSON → "IOPS MiB/s" of the job's direction.
summary() {
    python3 - "$1" "$2" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0][sys.argv[2]]
print(f'{job["iops"]:.0f} {job["bw_bytes"] / 2**20:.1f}')
PY
}

declare -A RESULT
run_job() { # side name rw bs qd target-args...
    local side=$1 name=$2 rw=$3 bs=$4 qd=$5; shift 5
    local dir=write; [[ $rw == *read* ]] && dir=read
    local timing=(--runtime="$RUNTIME" --time_based)
    [[ $rw == *:* ]] && timing=()
    fio --name="$name" "$@" --rw="$rw" --bs="$bs" --iodepth="$qd" "${timing[@]}" \
        --output-format=json --output="$RESULTS_DIR/$side-$name.json" >/dev/null
    RESULT[$side-$name]=$(summary "$RESULTS_DIR/$side-$name.json" "$dir")
    echo "$side $name: ${RESULT[$side-$name]} (IOPS MiB/s)"
}

start_daemon() { # data-dir extra-args... → prints the NBD port
    local dir=$1; shift
    mkdir -p "$dir"
    "$CAIRN_BIN" serve --data-dir "$dir" --nbd-port 0 --log-level warning --ceph-conf "$CAIRN_CEPH_CONF" \
        "${KEYRING_ARGS[@]}" --rados-pool "$CAIRN_RADOS_POOL" --rados-namespace "$NS" \
        --rados-lease-seconds "$LEASE" "$@" >"$dir.log" 2>&1 &
    PIDS+=($!)
    echo $! >"$dir.pid"
}
wait_port() { # data-dir
    for _ in $(seq 1 1200); do
        if [ -s "$1/daemon.json" ]; then python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nbd"].split(":")[-1])' "$1/daemon.json"; return; fi
        sleep 0.05
    done
    echo "daemon in $1 did not start: $(cat "$1.log")" >&2; exit 1
}

# ------------------------------------------------------------------------------------------- Cairn
start_daemon "$WORK/a"
PORT=$(wait_port "$WORK/a")
cli() { "$CAIRN_BIN" "$@" --data-dir "$WORK/a" >/dev/null; }
nbd() { echo "--ioengine=nbd --uri=nbd://127.0.0.1:$PORT/$1"; }
cli volume create base "$SIZE"
cli volume create plain "$SIZE"
# shellcheck disable=SC2046
fio --name=fill $(nbd base) --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
cli snapshot create base@s
cli volume clone base@s clone
cli volume clone base@s clone2
# shellcheck disable=SC2046
run_job cairn clone-first-4k write:4092k 4k 32 $(nbd clone2)
# shellcheck disable=SC2046
run_job cairn clone-randwrite-4k randwrite 4k 32 $(nbd clone)
# shellcheck disable=SC2046
fio --name=fill $(nbd plain) --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
for job in "randwrite-4k randwrite 4k 32" "randread-4k randread 4k 32" "write-1m write 1M 8" "read-1m read 1M 8"; do
    # shellcheck disable=SC2086,SC2046
    run_job cairn $job $(nbd plain)
done

# --------------------------------------------------------------------------------------------- RBD
rbd_args() { echo "--ioengine=rbd --clientname=${CAIRN_CEPH_ID:-admin} --pool=rbd --rbdname=$1"; }
rbd create --size "$SIZE" "rbd/base-$NS"
rbd create --size "$SIZE" "rbd/plain-$NS"
# shellcheck disable=SC2046
fio --name=fill $(rbd_args "base-$NS") --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
rbd snap create "rbd/base-$NS@s"
rbd snap protect "rbd/base-$NS@s"
rbd clone "rbd/base-$NS@s" "rbd/clone-$NS"
rbd clone "rbd/base-$NS@s" "rbd/clone2-$NS"
# shellcheck disable=SC2046
run_job rbd clone-first-4k write:4092k 4k 32 $(rbd_args "clone2-$NS")
# shellcheck disable=SC2046
run_job rbd clone-randwrite-4k randwrite 4k 32 $(rbd_args "clone-$NS")
# shellcheck disable=SC2046
fio --name=fill $(rbd_args "plain-$NS") --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
for job in "randwrite-4k randwrite 4k 32" "randread-4k randread 4k 32" "write-1m write 1M 8" "read-1m read 1M 8"; do
    # shellcheck disable=SC2086,SC2046
    run_job rbd $job $(rbd_args "plain-$NS")
done
rbd rm "rbd/clone-$NS" >/dev/null 2>&1 || true
rbd rm "rbd/clone2-$NS" >/dev/null 2>&1 || true
rbd snap unprotect "rbd/base-$NS@s" && rbd snap rm "rbd/base-$NS@s" >/dev/null 2>&1 || true
rbd rm "rbd/base-$NS" >/dev/null 2>&1 || true
rbd rm "rbd/plain-$NS" >/dev/null 2>&1 || true

# ------------------------------------------------------------------------------------------ takeover
A_PID=$(cat "$WORK/a.pid")
kill -STOP "$A_PID"
STOPPED=$(date +%s.%N)
start_daemon "$WORK/b" --standby
B_PORT=$(wait_port "$WORK/b")
until qemu-io -f raw -r "nbd://127.0.0.1:$B_PORT/plain" -c "read 0 4k" >/dev/null 2>&1; do sleep 0.02; done
SERVED=$(date +%s.%N)
TAKEOVER=$(python3 -c "print(f'{$SERVED - $STOPPED:.1f}')")
echo "takeover: ${TAKEOVER} s from SIGSTOP of A to the first read served by B (lease ${LEASE} s)"
kill -CONT "$A_PID"

# ------------------------------------------------------------------------------------------- report
ratio() { python3 -c "a, b = '$1'.split()[0], '$2'.split()[0]; print(f'{float(a) / max(float(b), 1):.2f}')"; }
{
    echo "date: $(date -u +%FT%TZ)  size: $SIZE  runtime: ${RUNTIME}s  command: bench/rados.sh${1:+ $1}"
    printf '%-22s %18s %18s %8s\n' job "cairn IOPS MiB/s" "rbd IOPS MiB/s" ratio
    for job in clone-first-4k clone-randwrite-4k randwrite-4k randread-4k write-1m read-1m; do
        printf '%-22s %18s %18s %8s\n' "$job" "${RESULT[cairn-$job]}" "${RESULT[rbd-$job]}" \
            "$(ratio "${RESULT[cairn-$job]}" "${RESULT[rbd-$job]}")"
    done
    echo "takeover (SIGSTOP of the owner → first read on the standby, lease ${LEASE} s): ${TAKEOVER} s"
} | tee "$RESULTS_DIR/summary.txt"
