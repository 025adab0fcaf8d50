#!/usr/bin/env bash
# fio over NBD: Cairn against qemu-nbd, nbdkit memory and the raw file, in one run.
#
#   bench/nbd-fio.sh [--quick] [--help]
#
# Jobs (per target): 4k randwrite QD32 (no FLUSH, a FLUSH every 32 writes, a FLUSH after every write),
# 4k randread QD32, 1M seq write QD8, 1M seq read QD8, after a full sequential fill so that every read
# hits written data on every target.
# Targets: cairn (its default data writes), cairn-nocsum (the same with --no-data-checksums: what data
# checksums cost), cairn-direct and cairn-writethrough (the same binary with
# --data-writes direct / write-through: O_DIRECT, or page cache + writeback started per write), qemu-nbd (raw, --cache=none --aio=native), qemu-nbd-wb (raw, --cache=writeback),
# nbdkit-mem (memory plugin: the NBD ceiling), raw-file (fio libaio O_DIRECT on a file: the disk limit).
# See bench/README.md for what each number means and the caveats.
#
# Environment knobs (defaults in brackets; --quick changes the defaults marked *):
#   CAIRN_BIN     cairn binary to use [build release into .build-bench and use that]
#   SIZE*         volume / file / memory size [4G; quick 256M]
#   RUNTIME*      seconds measured per job [20; quick 3]
#   RAMP*         seconds of warm-up per job, not measured [5; quick 1]
#   CHUNK_SIZE    Cairn volume chunk size, e.g. 64K, 1M [Cairn's default, 64K]
#   CAIRN_SERVE_ARGS  extra arguments for `cairn serve`, e.g. "--io-threads 16" [none]
#   NUMJOBS       fio jobs = NBD connections per target; queue depth is per job [1]
#   ROUNDS        repeat all targets this many times, rotating the order; report medians [1]
#   TARGETS       subset/order of: cairn cairn-nocsum cairn-direct cairn-writethrough qemu-nbd qemu-nbd-wb nbdkit-mem
#                 raw-file [cairn qemu-nbd qemu-nbd-wb nbdkit-mem raw-file]
#   WRITE_FSYNC   if > 0, the write jobs without their own FLUSH rate send one every N writes [0: none]
#   JOB_FILTER    run only the jobs whose names match this extended regex [all]
#   DROP_CACHES   1: sync and drop the page cache before each read job (machine-wide!) [0]
#   PROFILE       1: perf record the Cairn daemon during PROFILE_JOBS (round 1 only) [0]
#   PROFILE_JOBS  jobs to profile with PROFILE=1 [randread-4k randwrite-4k]
#   BENCH_WORKDIR where the data files go; must not be tmpfs [/tmp if on the repo's filesystem]
#   RESULTS_DIR   where JSON results go [bench/results/<timestamp>]
#   NBD_PYTHON    python with libnbd's binding, for the FLUSH after write jobs [/usr/bin/python3]
set -euo pipefail

# The command as typed, with the knobs that were set in the environment (for meta.json and the docs).
COMMAND=""
for knob in CAIRN_BIN CAIRN_SERVE_ARGS SIZE RUNTIME RAMP CHUNK_SIZE NUMJOBS ROUNDS TARGETS WRITE_FSYNC JOB_FILTER DROP_CACHES PROFILE PROFILE_JOBS \
    BENCH_WORKDIR RESULTS_DIR NBD_PYTHON; do
    if [[ -n "${!knob:-}" ]]; then printf -v q '%q' "${!knob}"; COMMAND+="$knob=$q "; fi
done
COMMAND+="${BASH_SOURCE[0]}${*:+ $*}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$REPO/bench/nbd_fio_report.py"
PYTHON=${PYTHON:-python3}
NBD_PYTHON=${NBD_PYTHON:-/usr/bin/python3} # a python with libnbd's binding (python3-libnbd)
ALL_TARGETS="cairn cairn-nocsum cairn-direct cairn-writethrough qemu-nbd qemu-nbd-wb nbdkit-mem raw-file"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if ((QUICK)); then
    SIZE=${SIZE:-256M} RUNTIME=${RUNTIME:-3} RAMP=${RAMP:-1} ROUNDS=${ROUNDS:-1}
else
    SIZE=${SIZE:-4G} RUNTIME=${RUNTIME:-20} RAMP=${RAMP:-5} ROUNDS=${ROUNDS:-1}
fi
CHUNK_SIZE=${CHUNK_SIZE:-}
NUMJOBS=${NUMJOBS:-1}
TARGETS=${TARGETS:-cairn qemu-nbd qemu-nbd-wb nbdkit-mem raw-file}
WRITE_FSYNC=${WRITE_FSYNC:-0}
DROP_CACHES=${DROP_CACHES:-0}
PROFILE=${PROFILE:-0}
PROFILE_JOBS=${PROFILE_JOBS:-randread-4k randwrite-4k}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

SIZE_BYTES=$(numfmt --from=iec "$SIZE") || die "SIZE=$SIZE is not a size (e.g. 4G, 256M)"
((SIZE_BYTES % (1 << 20) == 0)) || die "SIZE must be a whole number of MiB"
((SIZE_BYTES % NUMJOBS == 0)) && (((SIZE_BYTES / NUMJOBS) % (1 << 20) == 0)) ||
    die "SIZE must split into NUMJOBS whole-MiB regions"
for t in $TARGETS; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || die "unknown target '$t' (known: $ALL_TARGETS)"
done
for tool in fio qemu-nbd nbdkit nbdinfo numfmt fallocate "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine"
"$NBD_PYTHON" -c 'import nbd' 2>/dev/null || die "$NBD_PYTHON cannot import nbd (apt install python3-libnbd, or set NBD_PYTHON)"

# ------------------------------------------------------------------------------------------ cleanup
PIDS=()      # every process this script started and must stop
WORK=""
# True while $1 runs. kill -0 alone is not enough: an exited child stays a zombie until waited for.
is_running() {
    local state
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        is_running "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do is_running "$pid" || break; sleep 0.1; done
        is_running "$pid" && { log "pid $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    done
    [[ -n "$WORK" && -d "$WORK" ]] && rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() { # drop $1 from PIDS once it is stopped
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Stops a process by PID with SIGTERM (SIGKILL after $2 seconds); returns its exit status if it is our child.
stop_pid() {
    local pid=$1 grace=${2:-30} i
    is_running "$pid" || { forget_pid "$pid"; return 0; }
    kill -TERM "$pid"
    for ((i = 0; i < grace * 10; i++)); do
        is_running "$pid" || break
        sleep 0.1
    done
    if is_running "$pid"; then
        log "pid $pid still running ${grace}s after SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    forget_pid "$pid"
    local status=0
    wait "$pid" 2>/dev/null || status=$?
    return $status
}

# ------------------------------------------------------------------------------------------ paths
repo_dev=$(stat -c %d "$REPO")
if [[ -z "${BENCH_WORKDIR:-}" ]]; then
    if [[ "$(stat -c %d /tmp)" == "$repo_dev" ]]; then BENCH_WORKDIR=/tmp; else BENCH_WORKDIR="$REPO/bench/results"; fi
fi
mkdir -p "$BENCH_WORKDIR"
fstype=$(df --output=fstype "$BENCH_WORKDIR" | tail -1 | tr -d " ")
[[ "$fstype" != tmpfs && "$fstype" != ramfs ]] ||
    die "BENCH_WORKDIR=$BENCH_WORKDIR is $fstype: the file-backed targets would measure RAM"
[[ "$(stat -c %d "$BENCH_WORKDIR")" == "$repo_dev" ]] ||
    log "warning: BENCH_WORKDIR=$BENCH_WORKDIR is not on the repository's filesystem"
WORK=$(mktemp -d "$BENCH_WORKDIR/cbench.XXXXXX") # short: Cairn's unix socket path must stay < 108 bytes
avail=$(df --output=avail -B1 "$WORK" | tail -1)
((avail > 2 * SIZE_BYTES + (1 << 30))) || die "$WORK has $avail bytes free; need about 2 x SIZE"

RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)

# ------------------------------------------------------------------------------------------ build
if [[ -z "${CAIRN_BIN:-}" ]] && [[ " $TARGETS " == *" cairn"* ]]; then
    log "building cairn (release, scratch path .build-bench)"
    (cd "$REPO" && swift build -c release --scratch-path "$REPO/.build-bench" --product cairn) >&2
    CAIRN_BIN="$(cd "$REPO" && swift build -c release --scratch-path "$REPO/.build-bench" --show-bin-path)/cairn"
fi
if [[ " $TARGETS " == *" cairn"* ]]; then
    [[ -x "$CAIRN_BIN" ]] || die "CAIRN_BIN=$CAIRN_BIN is not executable"
fi

# ------------------------------------------------------------------------------------------ metadata
export COMMAND SIZE SIZE_BYTES RUNTIME RAMP CHUNK_SIZE NUMJOBS ROUNDS TARGETS WRITE_FSYNC DROP_CACHES QUICK WORK REPO
export CAIRN_BIN=${CAIRN_BIN:-}
"$PYTHON" - "$RESULTS_DIR/meta.json" <<'EOF'
import json, os, platform, subprocess, sys, datetime
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"unavailable: {e}"
e = os.environ
meta = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "command": e["COMMAND"],
    "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
    "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
    "mem_total_kib": int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))),
    "workdir": e["WORK"], "workdir_fs": sh("df", "-hT", e["WORK"]).splitlines()[-1],
    "size": e["SIZE"], "size_bytes": int(e["SIZE_BYTES"]), "runtime": int(e["RUNTIME"]), "ramp": int(e["RAMP"]),
    "chunk_size": e["CHUNK_SIZE"], "numjobs": int(e["NUMJOBS"]), "rounds": int(e["ROUNDS"]),
    "targets": e["TARGETS"].split(), "write_fsync": int(e["WRITE_FSYNC"]), "drop_caches": e["DROP_CACHES"] == "1",
    "quick": e["QUICK"] == "1",
    "cairn_bin": e["CAIRN_BIN"],
    "cairn_commit": sh("git", "-C", e["REPO"], "rev-parse", "HEAD"),
    "cairn_sources_commit": sh("git", "-C", e["REPO"], "log", "-1", "--format=%H %s", "--", "Sources", "Package.swift"),
    "cairn_dirty": sh("git", "-C", e["REPO"], "status", "--porcelain", "--untracked-files=no") != "",
    "versions": {"fio": sh("fio", "--version"), "qemu-nbd": sh("qemu-nbd", "--version").splitlines()[0],
                 "nbdkit": sh("nbdkit", "--version"), "kernel": platform.version()},
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
top -b -n 1 -w 200 | head -25 >"$RESULTS_DIR/top-start.txt" 2>/dev/null || true

log "results: $RESULTS_DIR"
log "work dir: $WORK ($fstype); size $SIZE; ${RUNTIME}s + ${RAMP}s ramp per job; numjobs $NUMJOBS; rounds $ROUNDS"

# ------------------------------------------------------------------------------------------ targets
# Each start_* sets URI (or FILE for raw-file) and SERVER_PID (0 when there is no server process).
URI="" FILE="" SERVER_PID=0 CAIRN_DIR=""

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_nbd() { # waits until $1 answers an NBD handshake
    local i
    for ((i = 0; i < 300; i++)); do
        nbdinfo --size "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "no NBD server answering at $1"
}

wait_pidfile() {
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -s "$1" ]] && { cat "$1"; return 0; }
        sleep 0.1
    done
    die "pid file $1 never appeared"
}

start_cairn() { # $1 = round, $2 = data writes (direct, write-through; empty: the default), $3 = more serve flags
    CAIRN_DIR="$WORK/cairn"
    rm -rf "$CAIRN_DIR"
    mkdir -p "$CAIRN_DIR"
    local logf="$RESULTS_DIR/cairn.r$1.log"
    # Port 0: the daemon picks a free port and writes it to daemon.json (other benchmarks may be running).
    "$CAIRN_BIN" serve --data-dir "$CAIRN_DIR" --data-writes "${2:-buffered}" --nbd-port 0 --log-level "${CAIRN_LOG_LEVEL:-warning}" ${CAIRN_SERVE_ARGS:-} ${3:-} \
        </dev/null >"$logf" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i port=""
    for ((i = 0; i < 600; i++)); do
        is_running "$SERVER_PID" || { cat "$logf" >&2; die "cairn serve exited during start-up"; }
        if [[ -S "$CAIRN_DIR/cairn.sock" && -s "$CAIRN_DIR/daemon.json" ]]; then
            port=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["nbd"].rsplit(":",1)[1])' \
                "$CAIRN_DIR/daemon.json" 2>/dev/null) && break
        fi
        sleep 0.1
    done
    [[ -n "$port" ]] || die "cairn serve did not start (see $logf)"
    "$CAIRN_BIN" volume create disk "$SIZE_BYTES" --data-dir "$CAIRN_DIR" ${CHUNK_SIZE:+--chunk-size "$CHUNK_SIZE"} \
        >"$RESULTS_DIR/cairn.r$1.volume.txt"
    URI="nbd://127.0.0.1:$port/disk"
    wait_nbd "$URI"
}

stop_cairn() { # $1 = round
    local out="$RESULTS_DIR/cairn.r$1"
    "$CAIRN_BIN" pool status --data-dir "$CAIRN_DIR" >"$out.pool-status.txt" 2>&1 || log "warning: cairn pool status failed"
    "$CAIRN_BIN" pool check --data-dir "$CAIRN_DIR" >"$out.pool-check.txt" 2>&1 ||
        log "WARNING: cairn pool check reported problems: $(tr '\n' ' ' <"$out.pool-check.txt")"
    local status=0 t0=$SECONDS
    stop_pid "$SERVER_PID" 60 || status=$?
    echo "exit status $status after $((SECONDS - t0))s" >"$out.shutdown.txt"
    ((status == 0)) || log "WARNING: cairn serve exited with status $status"
    if [[ -s "$out.log" ]]; then
        log "cairn log (round $1) is not empty: $(wc -l <"$out.log") lines, e.g.:"
        head -5 "$out.log" >&2
    fi
    rm -rf "$CAIRN_DIR"
}

# qemu-nbd on a raw file preallocated with fallocate (see README: no ext4 block allocation during the
# measurement, the usual way to deploy raw images, and the fill pass writes every block anyway).
start_qemu() { # $1 = round, $2 = none|writeback
    FILE="$WORK/qemu-$2.raw"
    rm -f "$FILE"
    fallocate -l "$SIZE_BYTES" "$FILE"
    local port pidf="$WORK/qemu-$2.pid" aio=native
    [[ "$2" == none ]] || aio=threads # aio=native needs O_DIRECT
    port=$(free_port)
    rm -f "$pidf"
    qemu-nbd -f raw -x disk -b 127.0.0.1 -p "$port" -t --cache="$2" --aio="$aio" -e 8 --fork \
        --pid-file="$pidf" "$FILE" 2>"$RESULTS_DIR/qemu-nbd-$2.r$1.log"
    SERVER_PID=$(wait_pidfile "$pidf")
    PIDS+=("$SERVER_PID")
    URI="nbd://127.0.0.1:$port/disk"
    wait_nbd "$URI"
}

stop_qemu() {
    stop_pid "$SERVER_PID" 30 || true
    rm -f "$FILE"
}

start_nbdkit() { # $1 = round
    local port pidf="$WORK/nbdkit.pid"
    port=$(free_port)
    rm -f "$pidf"
    nbdkit -i 127.0.0.1 -p "$port" -P "$pidf" memory "$SIZE_BYTES" 2>"$RESULTS_DIR/nbdkit-mem.r$1.log"
    SERVER_PID=$(wait_pidfile "$pidf")
    PIDS+=("$SERVER_PID")
    URI="nbd://127.0.0.1:$port/"
    wait_nbd "$URI"
}

stop_nbdkit() { stop_pid "$SERVER_PID" 30 || true; }

start_target() { # $1 = target, $2 = round
    URI="" FILE="" SERVER_PID=0
    case "$1" in
        cairn) start_cairn "$2" "" ;;
        cairn-nocsum) start_cairn "$2" "" --no-data-checksums ;;
        cairn-direct) start_cairn "$2" direct ;;
        cairn-writethrough) start_cairn "$2" write-through ;;
        qemu-nbd) start_qemu "$2" none ;;
        qemu-nbd-wb) start_qemu "$2" writeback ;;
        nbdkit-mem) start_nbdkit "$2" ;;
        raw-file)
            FILE="$WORK/raw-file.raw"
            rm -f "$FILE"
            fallocate -l "$SIZE_BYTES" "$FILE"
            ;;
    esac
}

stop_target() { # $1 = target, $2 = round
    case "$1" in
        cairn | cairn-nocsum | cairn-direct | cairn-writethrough) stop_cairn "$2" ;;
        qemu-nbd | qemu-nbd-wb) stop_qemu ;;
        nbdkit-mem) stop_nbdkit ;;
        raw-file) rm -f "$FILE" ;;
    esac
    # Do not let one target's dirty pages be written back during the next target's jobs.
    sync -f "$WORK" 2>/dev/null || sync
}

# ------------------------------------------------------------------------------------------ fio
# Runs fio in the background and waits for it: a signal then interrupts `wait` at once (bash would run
# the trap only after a foreground fio finished) and the cleanup stops fio with the servers.
run_fio() {
    fio "$@" &
    local pid=$! status=0
    PIDS+=("$pid")
    wait "$pid" || status=$?
    forget_pid "$pid"
    return $status
}

# fio arguments that address the target.
target_args() { # $1 = target
    if [[ "$1" == raw-file ]]; then
        echo "--ioengine=libaio --direct=1 --filename=$FILE"
    else
        echo "--ioengine=nbd --uri=$URI"
    fi
}

# Sends one FLUSH (fsync for the raw file) and prints how long it took, in seconds (the connection
# set-up is not timed). libnbd's Python binding is a Debian package: use the system python for it.
flush_target() { # $1 = target
    if [[ "$1" == raw-file ]]; then
        "$PYTHON" -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY); t = time.monotonic(); os.fsync(fd); print(f"{time.monotonic() - t:.3f}")' "$FILE"
    else
        "$NBD_PYTHON" -c 'import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
t = time.monotonic()
if h.can_flush(): h.flush()
print(f"{time.monotonic() - t:.3f}"); h.shutdown()' "$URI"
    fi
}

# Fills the whole device with 1 MiB sequential writes (and a final FLUSH), so that reads hit written
# data on every target and later writes overwrite instead of allocate.
fill_target() { # $1 = target, $2 = output dir, $3 = round
    local t0=$SECONDS
    # shellcheck disable=SC2046
    run_fio --name=fill $(target_args "$1") --rw=write --bs=1M --iodepth=8 --numjobs=1 --size="$SIZE_BYTES" \
        --end_fsync=1 --output-format=json --output="$2/fill.r$3.json" >/dev/null ||
        die "fill of $1 failed (see $2/fill.r$3.json)"
    log "  fill: $SIZE in $((SECONDS - t0))s"
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches || log "warning: could not drop caches"
}

run_job() { # $1 = target, $2 = job name, $3 = rw, $4 = bs, $5 = iodepth, $6 = output dir, $7 = round, $8 = fsync
    local target=$1 job=$2 rw=$3 bs=$4 qd=$5 dir=$6 round=$7 fsync=${8:--}
    local base="$dir/$job.r$round" extra=()
    if [[ "$rw" == write || "$rw" == read ]] && ((NUMJOBS > 1)); then
        # Sequential jobs: each fio job streams through its own region of the device.
        extra+=(--size=$((SIZE_BYTES / NUMJOBS)) --offset_increment=$((SIZE_BYTES / NUMJOBS)))
    else
        extra+=(--size="$SIZE_BYTES")
    fi
    if [[ "$fsync" != - ]]; then
        extra+=(--fsync="$fsync")
    elif [[ "$rw" == *write ]] && ((WRITE_FSYNC > 0)); then
        extra+=(--fsync="$WRITE_FSYNC")
    fi
    if [[ "$rw" == *read ]] && [[ "$DROP_CACHES" == 1 ]]; then drop_caches; fi

    local profiler=0
    if [[ "$PROFILE" == 1 && "$target" == cairn* && " $PROFILE_JOBS " == *" $job "* && "$round" == 1 ]]; then
        command -v perf >/dev/null || die "PROFILE=1 but perf is not installed"
        # Software clock: hardware counters are often unavailable in VMs. Starts after the ramp.
        (sleep "$RAMP"; exec perf record -e cpu-clock -F 999 -g -p "$SERVER_PID" \
            -o "$RESULTS_DIR/perf-$target-$job.data" -- sleep "$RUNTIME") \
            >>"$RESULTS_DIR/perf-record.log" 2>&1 &
        profiler=$!
        PIDS+=("$profiler")
    fi

    "$PYTHON" "$HELPER" snapshot "$SERVER_PID" >"$base.cpu-before"
    local status=0
    # shellcheck disable=SC2046
    run_fio --name="$job" $(target_args "$target") --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs="$NUMJOBS" \
        --group_reporting --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" "${extra[@]}" \
        --output-format=json --output="$base.json" >/dev/null 2>"$base.stderr" || status=$?
    "$PYTHON" "$HELPER" snapshot "$SERVER_PID" >"$base.cpu-after"
    printf '{"before": %s, "after": %s}\n' "$(cat "$base.cpu-before")" "$(cat "$base.cpu-after")" >"$base.cpu.json"
    rm -f "$base.cpu-before" "$base.cpu-after"
    [[ -s "$base.stderr" ]] || rm -f "$base.stderr"

    if ((profiler)); then
        wait "$profiler" || log "warning: perf record failed (see $RESULTS_DIR/perf-record.log)"
        forget_pid "$profiler"
    fi
    ((status == 0)) || die "fio $job on $target failed with status $status (see $base.json, $base.stderr)"
    if [[ "$SERVER_PID" != 0 ]] && ! is_running "$SERVER_PID"; then
        die "$target server (pid $SERVER_PID) died during $job"
    fi
    if [[ "$rw" == *write ]]; then
        flush_target "$target" >"$base.flush" || die "FLUSH after $job on $target failed"
    fi
    log "  $job: $("$PYTHON" "$HELPER" brief "$base.json")$([[ -f "$base.flush" ]] && echo ", flush $(cat "$base.flush")s")"
}

JOBS=(
    # name                rw        bs iodepth fsync (FLUSH every N writes; - for WRITE_FSYNC)
    "randwrite-4k randwrite 4k 32 -"
    "randwrite-4k-fsync32 randwrite 4k 32 32"
    "randwrite-4k-fsync1 randwrite 4k 32 1"
    "randread-4k randread 4k 32 -"
    "seqwrite-1m write 1m 8 -"
    "seqread-1m read 1m 8 -"
)

read -r -a target_list <<<"$TARGETS"
n=${#target_list[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for ((k = 0; k < n; k++)); do
        target=${target_list[(k + round - 1) % n]} # rotate the order each round
        dir="$RESULTS_DIR/$target"
        mkdir -p "$dir"
        log "round $round/$ROUNDS: $target"
        start_target "$target" "$round"
        [[ -n "$URI" ]] && log "  $URI (pid $SERVER_PID)"
        fill_target "$target" "$dir" "$round"
        for spec in "${JOBS[@]}"; do
            read -r job rw bs qd fsync <<<"$spec"
            [[ -z "${JOB_FILTER:-}" || "$job" =~ $JOB_FILTER ]] || continue
            run_job "$target" "$job" "$rw" "$bs" "$qd" "$dir" "$round" "$fsync"
        done
        stop_target "$target" "$round"
    done
done

"$PYTHON" - "$RESULTS_DIR/meta.json" <<'EOF'
import datetime, json, sys
meta = json.load(open(sys.argv[1]))
meta["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
meta["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
top -b -n 1 -w 200 | head -25 >"$RESULTS_DIR/top-end.txt" 2>/dev/null || true

demangle=cat
command -v swift-demangle >/dev/null && demangle="swift-demangle --simplified"
for data in "$RESULTS_DIR"/perf-cairn-*.data; do
    [[ -f "$data" ]] || continue
    perf script -i "$data" 2>/dev/null | $demangle >"${data%.data}.script.txt" || true
    "$PYTHON" "$HELPER" perf "${data%.data}.script.txt" >"${data%.data}.summary.txt" || true
    rm -f "${data%.data}.script.txt"
    log "perf profile of the cairn daemon: ${data%.data}.summary.txt"
done

echo
"$PYTHON" "$HELPER" report "$RESULTS_DIR"
