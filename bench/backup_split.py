#!/usr/bin/python3
"""Backup benchmarks: does the split stall anyone, how fast is archiving, how small is an
increment. Run on a quiet machine; numbers are ratios measured in one run.

  backup_split.py --cairn .build/release/cairn [--size 1G] [--seconds 10] [--method cow|log|mirror]
                  [--archive-only] [--repeat N] [--latency-only] [--snapshot-baseline] [--fua]

--archive-only skips the latency and incremental parts; --repeat N measures archive vs nbdcopy N times
(alternating, each a full backup with no session open), and prints every ratio, their median and the
load average before and after (the machine is shared: compare ratios within one run). Every nbdcopy is
also run with --flush: the archive is made durable (fsync) before the backup is reported done, so on a
disk slower than the page cache the ratio against `nbdcopy --flush` is the one that measures the archiver.

--latency-only stops after part 1. --snapshot-baseline also measures the new session with a plain snapshot
of the volume and no backup (every method takes the snapshot `backup-ID` at T, so B's writes pay the
engine's copy-on-write): what the split itself adds is during_drain against with_snapshot.

1. Latency of 4 KiB random writes from a new session, QD1: without a backup, then during a drain (an
   old session holds image A open), as p50/p99 and their ratio (goal p99 <= 2x); the worst latency of a
   writer that runs across the split (the split's pause; sessions are never refused).
2. Archive throughput (the backup job's rate) against `nbdcopy` of the same volume to a file
   (goal >= 0.9).
3. An incremental archive's size against the bytes changed since the full one.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import log, run, size_bytes, start_cairn  # noqa: E402

BLOCK = 4096


def latencies(uri, size, seconds, seed, flags=0):
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    data = os.urandom(BLOCK)
    result = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        offset = rng.randrange(size // BLOCK) * BLOCK
        start = time.monotonic()
        h.pwrite(data, offset, flags)
        result.append(time.monotonic() - start)
    h.shutdown()
    return result


def percentiles(values):
    ordered = sorted(values)
    return {"p50_us": ordered[len(ordered) // 2] * 1e6, "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
            "max_us": ordered[-1] * 1e6, "count": len(ordered)}


def cli(binary, directory, *args):
    return run(binary, *args, "--data-dir", directory)


def wait_backup(binary, directory, backup_id):
    while True:
        status = json.loads(cli(binary, directory, "backup", "status", backup_id, "--json").stdout)
        if status["phase"] in ("succeeded", "failed"):
            return status
        time.sleep(0.1)


def archive_vs_nbdcopy(binary, directory, uri, size, work, method, index):
    """One full backup (no session on A: the drain is immediate) and one nbdcopy of the same volume."""
    archive = os.path.join(work, f"repeat{index}.cbk")
    backup = json.loads(cli(binary, directory, "backup", "start", "v", "--to", archive, "--method", method,
                            "--json").stdout)
    status = wait_backup(binary, directory, backup["id"])
    archive_rate = status["dataBytes"] / max(status["archiveSeconds"], 1e-9) / (1 << 20)
    os.unlink(archive)
    nbdcopy_rate = nbdcopy(uri, size, work)
    flushed_rate = nbdcopy(uri, size, work, "--flush")
    return {"archive_mib_s": archive_rate, "nbdcopy_mib_s": nbdcopy_rate, "ratio": archive_rate / nbdcopy_rate,
            "nbdcopy_flush_mib_s": flushed_rate, "ratio_vs_flush": archive_rate / flushed_rate}


def nbdcopy(uri, size, work, *options):
    """MiB/s of nbdcopy from the volume to a file. `--flush` makes the file durable before it exits, as
    the archiver does with its archive: the ratio against it says what is left once both wait for the disk."""
    target = os.path.join(work, "copy.raw")
    started = time.monotonic()
    run("nbdcopy", *options, uri, target)
    rate = size / (time.monotonic() - started) / (1 << 20)
    os.unlink(target)
    return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cairn", default=".build/release/cairn")
    parser.add_argument("--size", default="1G")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--method", default="cow")
    parser.add_argument("--archive-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--snapshot-baseline", action="store_true")
    parser.add_argument("--fua", action="store_true", help="the measured writes carry FUA")
    args = parser.parse_args()
    flags = nbd.CMD_FLAG_FUA if args.fua else 0
    size = size_bytes(args.size)
    work = tempfile.mkdtemp(prefix="cairn-bench-backup-")
    directory = os.path.join(work, "pool")
    daemon, port = start_cairn(os.path.abspath(args.cairn), directory, open(os.path.join(work, "daemon.log"), "w"))
    binary = os.path.abspath(args.cairn)
    uri = f"nbd://127.0.0.1:{port}/v"
    out = {"method": args.method, "size": size, "fua": args.fua, "loadavg_before": os.getloadavg()}
    try:
        cli(binary, directory, "volume", "create", "v", str(size))
        log("filling the volume")
        run("nbdcopy", "--", "[", "nbdkit", "random", str(size), "]", uri)
        if args.archive_only:
            runs = []
            for index in range(args.repeat):
                log(f"archive vs nbdcopy, run {index + 1}/{args.repeat}")
                runs.append(archive_vs_nbdcopy(binary, directory, uri, size, work, args.method, index))
            out["runs"] = runs
            out["archive_vs_nbdcopy_median"] = statistics.median(r["ratio"] for r in runs)
            out["archive_vs_nbdcopy_flush_median"] = statistics.median(r["ratio_vs_flush"] for r in runs)
            out["loadavg_after"] = os.getloadavg()
            return

        log("latency without a backup")
        out["without_backup"] = percentiles(latencies(uri, size, args.seconds, 1, flags))
        if args.snapshot_baseline:
            log("latency after a plain snapshot")
            cli(binary, directory, "snapshot", "create", "v@plain")
            out["with_snapshot"] = percentiles(latencies(uri, size, args.seconds, 3, flags))
            out["snapshot_p99_ratio"] = out["with_snapshot"]["p99_us"] / out["without_backup"]["p99_us"]
            # Kept: deleting it starts a reclaim job that would run during the drain measured next. An
            # older snapshot costs writes nothing once a newer one (the backup's) exists.

        # An old session on A for the whole drain, and a writer that runs across the split.
        old = nbd.NBD()
        old.connect_uri(uri)
        across = []
        stop = threading.Event()

        def writer():
            h = nbd.NBD()
            h.connect_uri(uri)
            data = os.urandom(BLOCK)
            rng = random.Random(7)
            while not stop.is_set():
                start = time.monotonic()
                h.pwrite(data, rng.randrange(size // BLOCK) * BLOCK)
                across.append(time.monotonic() - start)
            h.shutdown()

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.5)
        archive = os.path.join(work, "full.cbk")
        started = time.monotonic()
        backup = json.loads(cli(binary, directory, "backup", "start", "v", "--to", archive, "--method", args.method,
                                "--json").stdout)
        out["start_call_s"] = time.monotonic() - started
        time.sleep(0.5)
        stop.set()
        thread.join()
        out["writer_across_split"] = percentiles(across)

        log("latency during the drain")
        out["during_drain"] = percentiles(latencies(uri, size, args.seconds, 2, flags))
        out["p99_ratio"] = out["during_drain"]["p99_us"] / out["without_backup"]["p99_us"]
        old.shutdown()
        status = wait_backup(binary, directory, backup["id"])
        if args.latency_only:
            return
        out["archive_rate_mib_s"] = status["dataBytes"] / max(status["archiveSeconds"], 1e-9) / (1 << 20)
        out["archive_bytes"] = status.get("archiveBytes")

        log("nbdcopy of the same volume")
        out["nbdcopy_rate_mib_s"] = nbdcopy(uri, size, work)
        out["archive_vs_nbdcopy"] = out["archive_rate_mib_s"] / out["nbdcopy_rate_mib_s"]
        out["nbdcopy_flush_rate_mib_s"] = nbdcopy(uri, size, work, "--flush")
        out["archive_vs_nbdcopy_flush"] = out["archive_rate_mib_s"] / out["nbdcopy_flush_rate_mib_s"]

        log("incremental")
        # A fresh base: the writes made during the drain above are changes since the first backup.
        base = os.path.join(work, "base.cbk")
        backup = json.loads(cli(binary, directory, "backup", "start", "v", "--to", base, "--json").stdout)
        wait_backup(binary, directory, backup["id"])
        archive = base
        changed = size // 100
        h = nbd.NBD()
        h.connect_uri(uri)
        rng = random.Random(3)
        for _ in range(changed // (64 << 10)):
            h.pwrite(os.urandom(64 << 10), rng.randrange(size // (64 << 10)) * (64 << 10))
        h.flush()
        h.shutdown()
        increment = os.path.join(work, "inc.cbk")
        backup = json.loads(cli(binary, directory, "backup", "start", "v", "--to", increment, "--since", archive,
                                "--method", args.method, "--json").stdout)
        status = wait_backup(binary, directory, backup["id"])
        out["incremental_changed_bytes"] = changed
        out["incremental_archive_bytes"] = status.get("archiveBytes")
        out["loadavg_after"] = os.getloadavg()
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)
        out["load_average"] = os.getloadavg()
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
