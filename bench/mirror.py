#!/usr/bin/env python3
"""Remote mirror benchmark (issue 5): mirrored against unmirrored writes on the same primary, in one run,
plus the resync after a fracture during which ~1 % of the volume changed, and CPU seconds per GiB
replicated on each side.

    python3 bench/mirror.py [--quick]

Environment: CAIRN_BIN (default .build/release/cairn, else .build/debug/cairn), SIZE [1G; quick 128M],
RUNTIME seconds per fio job [15; quick 3], BENCH_WORKDIR [/tmp]. Both daemons run on this machine over
loopback: the "link" is the kernel's loopback, so the ratios measure Cairn's mirroring overhead, not a
network. Needs a quiet machine for numbers worth recording; `--quick` only checks that it runs.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, log, run, size_bytes, start_cairn  # noqa: E402

QUICK = "--quick" in sys.argv
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CAIRN_BIN") or next(
    (p for p in (f"{REPO}/.build/release/cairn", f"{REPO}/.build/debug/cairn") if os.path.exists(p)), None)
SIZE = os.environ.get("SIZE", "128M" if QUICK else "1G")
RUNTIME = int(os.environ.get("RUNTIME", "3" if QUICK else "15"))
WORK = tempfile.mkdtemp(prefix="cairn-mirror-bench-", dir=os.environ.get("BENCH_WORKDIR", "/tmp"))


def cli(directory, *args):
    return run(BIN, *args, "--data-dir", directory).stdout


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fio(uri, name, rw, bs, depth):
    result = run("fio", "--output-format=json", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}",
                 f"--bs={bs}", f"--iodepth={depth}", f"--size={SIZE}", "--time_based", f"--runtime={RUNTIME}",
                 "--randrepeat=0", "--norandommap")
    job = json.loads(result.stdout[result.stdout.index("{"):])["jobs"][0]["write"]
    return {"iops": job["iops"], "bytes_per_second": job["bw_bytes"], "bytes": job["io_bytes"]}


def main():
    secret = os.path.join(WORK, "secret")
    open(secret, "w").write("bench-secret-0123456789abcdef")
    port = free_port()
    logs = open(os.path.join(WORK, "daemons.log"), "w")
    target, _ = start_cairn(BIN, os.path.join(WORK, "target"), logs,
                            ["--replication-port", str(port), "--replication-secret-file", secret])
    primary, nbd = start_cairn(BIN, os.path.join(WORK, "primary"), logs, ["--replication-secret-file", secret])
    pdir = os.path.join(WORK, "primary")
    try:
        for name in ("plain", "mir"):
            cli(pdir, "volume", "create", name, SIZE)
        cli(pdir, "mirror", "establish", "mir", "--target", f"127.0.0.1:{port}/mir", "--wait")
        results = {"size": SIZE, "runtime": RUNTIME, "binary": BIN}
        for job, rw, bs, depth in (("randwrite-4k-qd32", "randwrite", "4k", 32), ("write-1m-qd8", "write", "1M", 8)):
            plain = fio(f"nbd://127.0.0.1:{nbd}/plain", job, rw, bs, depth)
            cpu = (cpu_seconds(primary.pid), cpu_seconds(target.pid))
            mirrored = fio(f"nbd://127.0.0.1:{nbd}/mir", job, rw, bs, depth)
            gib = mirrored["bytes"] / (1 << 30)
            results[job] = {
                "unmirrored": plain, "mirrored": mirrored,
                "ratio_iops": mirrored["iops"] / plain["iops"] if plain["iops"] else None,
                "ratio_throughput": mirrored["bytes_per_second"] / plain["bytes_per_second"] if plain["bytes_per_second"] else None,
                "cpu_seconds_per_gib_primary": (cpu_seconds(primary.pid) - cpu[0]) / gib if gib else None,
                "cpu_seconds_per_gib_target": (cpu_seconds(target.pid) - cpu[1]) / gib if gib else None,
            }
            log(f"{job}: mirrored/unmirrored = {results[job]['ratio_iops']:.2f} (IOPS)")

        # Fracture (sever), change ~1 % of the volume in scattered 4 KiB writes, resync.
        status = json.loads(cli(pdir, "mirror", "status", "mir", "--json"))
        extent = status["extentSize"]
        cli(pdir, "mirror", "sever", "mir")
        volume = size_bytes(SIZE)
        writes = max(1, volume // 100 // 4096)
        rng = random.Random(5)
        commands = []
        for _ in range(writes):
            commands += ["-c", f"write -P 0x5c {rng.randrange(volume // 4096) * 4096} 4k"]
        for i in range(0, len(commands), 2000):
            run("qemu-io", "-f", "raw", f"nbd://127.0.0.1:{nbd}/mir", *commands[i:i + 2000])
        changed = json.loads(cli(pdir, "mirror", "status", "mir", "--json"))
        before = changed["bytesReplicated"]
        start = time.monotonic()
        cli(pdir, "mirror", "re-establish", "mir", "--wait")
        seconds = time.monotonic() - start
        after = json.loads(cli(pdir, "mirror", "status", "mir", "--json"))
        sent = after["bytesReplicated"] - before
        results["resync"] = {
            "bytes_written_while_severed": writes * 4096, "dirty_extents": changed["dirtyExtents"], "extent_size": extent,
            "bytes_sent": sent, "ratio_sent_to_changed_extents": sent / (changed["dirtyExtents"] * extent),
            "seconds": seconds, "bytes_per_second": sent / seconds if seconds else None,
        }
        log(f"resync: {sent} bytes for {changed['dirtyExtents']} dirty extents of {extent} in {seconds:.2f} s")
        print(json.dumps(results, indent=2, sort_keys=True))
    finally:
        for process in (primary, target):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
