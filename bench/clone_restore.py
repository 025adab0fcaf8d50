#!/usr/bin/env python3
"""Clone groups: protected restore and incremental sync.

For each size (1 GiB and LARGE_SIZE, default 8 GiB; --quick: 64 MiB and 256 MiB), on a fresh pool:

  1. fill the source, `clone add --wait`, `clone fracture`, then change CHANGE_PCT % of its extents;
  2. time to first clone data: with an NBD connection to the source already open, send the restore
     request over the API socket and immediately read a changed extent; the time until that read returns
     the clone's bytes (goal < 50 ms, independent of size);
  3. restore duration (request to job end) versus os.copy_file_range of the same number of bytes between
     two files on the pool's filesystem, plus fdatasync (goal: ratio <= 1.2);
  4. 4 KiB random read and write IOPS at QD32 (fio's nbd engine) on the source before and during a
     restore, in one fio run: the source is fully changed first, fio starts, the restore is requested
     RAMP seconds later, and fio's per-interval IOPS log (LOG_MS windows) is split at the moments the
     restore started and ended; the ratio is the mean IOPS of the windows wholly inside the restore over
     the mean of those before it (goal: ratio >= 0.5). The seconds of overlap are reported;
  5. incremental sync: after changing 1 % of the volume, the bytes the sync wrote into the clone (the
     engine's slot-file counters in `cairn pool status --json`) and the extents it copied, next to the
     bytes changed.

Prints a table and writes JSON to bench/results/clone-restore-<timestamp>.json.
  6. the qemu anchor (bench/qemu_stream_anchor.py; QEMU_ANCHOR=0 skips it): a qcow2 overlay on a raw image
     of the same size served by qemu-storage-daemon, IOPS before and during `block-stream`, same split.

Usage: bench/clone-restore.sh [--quick]
       (environment: SIZES=1G,16G or LARGE_SIZE, FIRST_READ_ONLY=1 (steps 1-3), EXTENT, CHANGE_PCT, RUNTIME, RAMP, LOG_MS, QEMU_ANCHOR, CAIRN_BIN, WORKDIR)
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import nbd

from benchlib import log, run, size_bytes, start_cairn
from qemu_stream_anchor import stream_anchor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
SIZES = (os.environ["SIZES"].split(",") if os.environ.get("SIZES")
         else ["64M", "256M"] if QUICK else ["1G", os.environ.get("LARGE_SIZE", "8G")])
CHANGE_PCT = float(os.environ.get("CHANGE_PCT", "10"))
RUNTIME = int(os.environ.get("RUNTIME", "3" if QUICK else "10"))
RAMP = float(os.environ.get("RAMP", "2" if QUICK else "4"))
LOG_MS = int(os.environ.get("LOG_MS", "100" if QUICK else "250"))
EXTENT = size_bytes(os.environ.get("EXTENT", "64K"))  # bytes per delta-map bit (clone add --extent-size)
CAIRN = os.environ.get("CAIRN_BIN") or next(
    (p for p in [os.path.join(REPO, ".build/release/cairn"), os.path.join(REPO, ".build/debug/cairn")]
     if os.path.exists(p)), "cairn")
WORKDIR = os.environ.get("WORKDIR") or tempfile.mkdtemp(prefix="cairn-clone-bench-", dir="/var/tmp")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, directory):
        self.directory = directory
        self.log = open(directory + ".log", "w")
        self.process, self.port = start_cairn(CAIRN, directory, self.log, tries=600)

    def uri(self, name):
        return f"nbd://127.0.0.1:{self.port}/{name}"

    def cli(self, *args):
        return run(CAIRN, *args, "--data-dir", self.directory)

    def api(self, method, path, body=None):
        connection = UnixHTTPConnection(os.path.join(self.directory, "cairn.sock"))
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data!r}")
        return json.loads(data) if data else None

    def clone(self, name):
        return self.api("GET", f"/v1/clones/{name}")

    def wait_state(self, name, state, timeout=3600, poll=0.01):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            clone = self.clone(name)
            if clone["state"] == state:
                return clone
            time.sleep(poll)
        raise RuntimeError(f"{name} never became {state}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)
        self.log.close()


def fio_start(uri, rw, bs, depth, runtime=None, size=None, iops_log=None):
    output = os.path.join(WORKDIR, f"fio-{rw}.json")
    args = ["fio", "--name=job", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={depth}", "--output-format=json", f"--output={output}"]
    if iops_log:
        args += [f"--write_iops_log={iops_log}", f"--log_avg_msec={LOG_MS}"]
    if size:
        args.append(f"--size={size}")
    if runtime:
        args += ["--time_based", f"--runtime={runtime}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), rw, output


def fio_finish(started):
    process, rw, output = started
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"fio failed: {err}{out}")
    job = json.load(open(output))["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["iops"]


def fio(uri, rw, bs, depth, runtime=None, size=None):
    return fio_finish(fio_start(uri, rw, bs, depth, runtime, size))


def iops_windows(prefix):
    """fio's averaged IOPS log: [(end of window in seconds since the job started, IOPS)]."""
    samples = []
    with open(prefix + "_iops.1.log") as f:
        for line in f:
            fields = [x.strip() for x in line.split(",")]
            if len(fields) >= 2 and fields[0].isdigit():
                samples.append((int(fields[0]) / 1000, float(fields[1])))  # fio logs IOPS per window
    return samples


def iops_during_restore(daemon, rw, size_text, expected_restore_s):
    """One fio run: IOPS before the restore and while it runs (see step 4 above)."""
    daemon.cli("clone", "sync", "c1", "--wait")
    daemon.cli("clone", "fracture", "c1")
    fio(daemon.uri("src"), "write", "1m", 8, size=size_text)
    # Let the fill reach the disk first: otherwise both windows inherit its writeback (GiBs of dirty
    # pages) and the kernel throttles every writer while it drains.
    os.sync()
    prefix = os.path.join(WORKDIR, f"iops-{rw}")
    runtime = int(RAMP + expected_restore_s * 2 + 3)
    started = fio_start(daemon.uri("src"), rw, "4k", 32, runtime=runtime, iops_log=prefix)
    launched = time.monotonic()
    time.sleep(RAMP)
    restore_at = time.monotonic() - launched
    daemon.api("POST", "/v1/clones/c1/restore", {"protected": True})
    daemon.wait_state("c1", "fractured", poll=0.05)
    restore_end = time.monotonic() - launched
    fio_finish(started)
    mean_before, mean_during, measured = split_windows(prefix, restore_at, restore_end)
    return {f"{rw}_iops_before": mean_before, f"{rw}_iops_restore": mean_during,
            f"{rw}_ratio": mean_during / max(mean_before, 1e-9),
            f"{rw}_restore_seconds_measured": measured, f"{rw}_restore_s_full": restore_end - restore_at}


def split_windows(prefix, start, end):
    """Mean IOPS of fio's windows before `start` and inside [start, end] (seconds since fio started), and
    the seconds the second mean covers. fio's clock starts a little after the process does (connecting):
    windows near a boundary are left out, so each side counts only windows it wholly owns; the first
    second is warm-up."""
    window = LOG_MS / 1000
    samples = iops_windows(prefix)
    before = [v for t, v in samples if 1.0 <= t - window and t <= start]
    during = [v for t, v in samples if t - window >= start + window and t <= end]
    if not before or not during:
        raise RuntimeError(f"{prefix}: event {start:.2f}-{end:.2f} s, {len(samples)} windows: "
                           "too short to measure; use a larger size")
    return sum(before) / len(before), sum(during) / len(during), len(during) * window


def change_extents(uri, size, fraction, seed):
    """Writes random bytes over `fraction` of the volume's extents; returns (extents, bytes)."""
    rng = random.Random(seed)
    extents = size // EXTENT
    chosen = rng.sample(range(extents), max(1, int(extents * fraction)))
    h = nbd.NBD()
    h.connect_uri(uri)
    data = os.urandom(EXTENT)
    for extent in chosen:
        h.pwrite(data, extent * EXTENT)
    h.flush()
    h.shutdown()
    return sorted(chosen), len(chosen) * EXTENT


def copy_file_range_seconds(nbytes):
    """Time to copy `nbytes` between two files of the pool's filesystem, in the kernel, then fdatasync."""
    src, dst = os.path.join(WORKDIR, "cfr-src"), os.path.join(WORKDIR, "cfr-dst")
    with open(src, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range((nbytes + (1 << 20) - 1) >> 20):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    started = time.monotonic()
    with open(src, "rb") as s, open(dst, "wb") as d:
        done = 0
        while done < nbytes:
            done += os.copy_file_range(s.fileno(), d.fileno(), min(nbytes - done, 64 << 20), done, done)
        os.fdatasync(d.fileno())
    elapsed = time.monotonic() - started
    os.unlink(src)
    os.unlink(dst)
    return elapsed


def bench_size(size_text):
    size = size_bytes(size_text)
    directory = os.path.join(WORKDIR, f"pool-{size_text}")
    daemon = Daemon(directory)
    result = {"size": size_text}
    try:
        daemon.cli("volume", "create", "src", size_text)
        log(f"{size_text}: filling the source")
        fio(daemon.uri("src"), "write", "1m", 8, size=size_text)
        os.sync()
        started = time.monotonic()
        daemon.cli("clone", "add", "src", "--name", "c1", "--extent-size", str(EXTENT), "--wait")
        result["full_sync_s"] = time.monotonic() - started
        daemon.cli("clone", "fracture", "c1")
        changed, changed_bytes = change_extents(daemon.uri("src"), size, CHANGE_PCT / 100, 1)
        result["changed_bytes"] = changed_bytes

        # Time to first clone data, then restore duration.
        h = nbd.NBD()
        h.connect_uri(daemon.uri("src"))
        probe = changed[len(changed) // 2] * EXTENT
        c = nbd.NBD()
        c.connect_uri(daemon.uri("c1"))
        clone_bytes = c.pread(4096, probe)
        c.shutdown()
        started = time.monotonic()
        daemon.api("POST", "/v1/clones/c1/restore", {"protected": True})
        # The API answers once the state change is durable (two commits); the read follows at once.
        result["restore_api_ms"] = (time.monotonic() - started) * 1000
        data = h.pread(4096, probe)
        result["first_clone_read_ms"] = (time.monotonic() - started) * 1000
        result["first_read_is_clone_data"] = data == clone_bytes
        daemon.wait_state("c1", "fractured")
        result["restore_s"] = time.monotonic() - started
        h.shutdown()
        result["copy_file_range_s"] = copy_file_range_seconds(changed_bytes)
        result["restore_vs_copy_file_range"] = result["restore_s"] / max(result["copy_file_range_s"], 1e-9)

        if os.environ.get("FIRST_READ_ONLY") == "1":
            return result
        # IOPS before and during a restore of the whole source, in one fio run each.
        full_restore_estimate = result["restore_s"] * 100 / CHANGE_PCT
        for rw in ["randread", "randwrite"]:
            result.update(iops_during_restore(daemon, rw, size_text, full_restore_estimate))

        # Incremental sync after changing 1 %.
        daemon.cli("clone", "sync", "c1", "--wait")
        daemon.cli("clone", "fracture", "c1")
        _, one_pct = change_extents(daemon.uri("src"), size, 0.01, 2)
        before = json.loads(daemon.cli("pool", "status", "--json").stdout)
        clone = json.loads(daemon.cli("clone", "sync", "c1", "--wait", "--json").stdout)
        after = json.loads(daemon.cli("pool", "status", "--json").stdout)
        result["sync_changed_bytes"] = one_pct
        result["sync_written_bytes"] = (after["bytesWritten"] + after["bytesCopied"] + after["bytesZeroed"]
                                        - before["bytesWritten"] - before["bytesCopied"] - before["bytesZeroed"])
        result["sync_extents_copied"] = clone["job"]["done"]
        result["sync_copied_fraction"] = result["sync_written_bytes"] / size
        daemon.cli("pool", "check")
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
    if os.environ.get("QEMU_ANCHOR", "1") != "0" and os.environ.get("FIRST_READ_ONLY") != "1":
        log(f"{size_text}: qemu anchor (overlay + block-stream)")
        try:
            anchor = stream_anchor(
                WORKDIR, size_text, fio_start, fio_finish,
                lambda prefix, start, end: split_windows(prefix, start, end)[:2], RAMP)
            result.update(anchor)
        except RuntimeError as error:  # e.g. a stream too short to measure at this size
            log(f"{size_text}: qemu anchor not measured: {error}")
            result["qemu_anchor_error"] = str(error)
    return result


def main():
    log(f"cairn: {CAIRN}; work directory {WORKDIR}")
    results = [bench_size(size) for size in SIZES]
    columns = [
        ("size", "size"), ("restore_api_ms", "API ms"), ("first_clone_read_ms", "first read ms"),
        ("restore_s", "restore s"),
        ("copy_file_range_s", "cfr s"), ("restore_vs_copy_file_range", "restore/cfr"),
        ("randread_ratio", "read IOPS ratio"), ("randwrite_ratio", "write IOPS ratio"),
        ("randread_restore_seconds_measured", "read s"), ("randwrite_restore_seconds_measured", "write s"),
        ("qemu_stream_s", "qemu stream s"), ("qemu_randread_ratio", "qemu read ratio"),
        ("qemu_randwrite_ratio", "qemu write ratio"),
        ("sync_changed_bytes", "1% changed B"), ("sync_written_bytes", "sync wrote B"),
    ]
    print("  ".join(title for _, title in columns))
    for r in results:
        print("  ".join(f"{r[key]:.3f}" if isinstance(r.get(key), float) else str(r.get(key, "-"))
                        for key, _ in columns))
    os.makedirs(os.path.join(REPO, "bench/results"), exist_ok=True)
    path = os.path.join(REPO, "bench/results", time.strftime("clone-restore-%Y%m%d-%H%M%S.json"))
    json.dump({"quick": QUICK, "change_pct": CHANGE_PCT, "runtime": RUNTIME, "results": results},
              open(path, "w"), indent=2)
    log(f"results in {path}")
    if not os.environ.get("WORKDIR"):
        shutil.rmtree(WORKDIR, ignore_errors=True)


if __name__ == "__main__":
    main()
