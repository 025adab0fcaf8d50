#!/usr/bin/env python3
"""Remote mirror benchmark: mirrored against unmirrored writes on the same primary, in one run,
plus the resync after a fracture during which ~1 % of the volume changed, the same resync with
`--checksum` after those extents were rewritten with the bytes they held, and CPU seconds per GiB
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


def qmp(path, *commands):
    """Runs QMP commands on a unix socket; returns the last answer's "return"."""
    import socket as sk
    conn = sk.socket(sk.AF_UNIX)
    conn.connect(path)
    stream = conn.makefile("rw")
    json.loads(stream.readline())  # greeting
    answer = None
    for command in ({"execute": "qmp_capabilities"},) + commands:
        stream.write(json.dumps(command) + "\n")
        stream.flush()
        while True:
            answer = json.loads(stream.readline())
            if "return" in answer or "error" in answer:
                break
        if "error" in answer:
            raise RuntimeError(f"QMP {command}: {answer['error']}")
    conn.close()
    return answer["return"]


def qemu_active_mirror():
    """qemu's active mirror on the same workload: qemu-storage-daemon exports a raw file over NBD and
    mirrors it (blockdev-mirror, copy-mode=write-blocking: a guest write completes once both sides have
    it) to a qemu-nbd target on loopback."""
    source, target = os.path.join(WORK, "qsd-source.raw"), os.path.join(WORK, "qsd-target.raw")
    for path in (source, target):
        run("truncate", "-s", SIZE, path)
    target_port, export_port = free_port(), free_port()
    socket_path = os.path.join(WORK, "qmp.sock")
    nbd = subprocess.Popen(["qemu-nbd", "-f", "raw", "-x", "t", "-b", "127.0.0.1", "-p", str(target_port), "-t",
                            "--cache=writeback", "-e", "8", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # qemu-storage-daemon gives up at once if the target is not listening yet (the run then has no qemu
    # numbers): wait for qemu-nbd's port first.
    import socket as sk
    for _ in range(100):
        try:
            sk.create_connection(("127.0.0.1", target_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    qsd = subprocess.Popen([
        "qemu-storage-daemon",
        "--blockdev", f"driver=file,node-name=f0,filename={source},cache.direct=off",
        "--blockdev", "driver=raw,node-name=src,file=f0",
        "--blockdev", f"driver=nbd,node-name=dst,server.type=inet,server.host=127.0.0.1,server.port={target_port},export=t",
        "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={export_port}",
        "--export", "type=nbd,id=e0,node-name=src,name=src,writable=on",
        "--chardev", f"socket,id=qmp0,path={socket_path},server=on,wait=off",
        "--monitor", "chardev=qmp0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(socket_path):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        qmp(socket_path, {"execute": "blockdev-mirror", "arguments": {
            "job-id": "m0", "device": "src", "target": "dst", "sync": "full", "copy-mode": "write-blocking"}})
        for _ in range(600):
            jobs = qmp(socket_path, {"execute": "query-block-jobs"})
            if jobs and jobs[0].get("ready"):
                break
            time.sleep(0.1)
        uri = f"nbd://127.0.0.1:{export_port}/src"
        return {
            "randwrite-4k-qd32": fio(uri, "randwrite-4k-qd32", "randwrite", "4k", 32),
            "write-1m-qd8": fio(uri, "write-1m-qd8", "write", "1M", 8),
        }
    finally:
        for process in (qsd, nbd):
            process.terminate()
            process.wait(timeout=30)


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

        try:
            qemu = qemu_active_mirror()
            results["qemu-active-mirror"] = qemu
            for job in ("randwrite-4k-qd32", "write-1m-qd8"):
                results[job]["ratio_to_qemu_active_mirror"] = (
                    results[job]["mirrored"]["bytes_per_second"] / qemu[job]["bytes_per_second"]
                    if qemu[job]["bytes_per_second"] else None)
                log(f"{job}: cairn mirrored / qemu active mirror = {results[job]['ratio_to_qemu_active_mirror']:.2f}")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            results["qemu-active-mirror"] = {"error": str(error)}
            log(f"qemu active mirror: {error}")

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

        # Checksum-compare resync (re-establish --checksum, DRBD's csums-alg): sever, write the same 1 % again
        # with the bytes it already holds (an over-marked change map, as after a crash), resync comparing
        # digests first. Compared with the plain resync above, which sent every dirty extent.
        cli(pdir, "mirror", "sever", "mir")
        for i in range(0, len(commands), 2000):
            run("qemu-io", "-f", "raw", f"nbd://127.0.0.1:{nbd}/mir", *commands[i:i + 2000])
        changed = json.loads(cli(pdir, "mirror", "status", "mir", "--json"))
        before = changed["bytesReplicated"]
        start = time.monotonic()
        cli(pdir, "mirror", "re-establish", "mir", "--checksum", "--wait")
        seconds = time.monotonic() - start
        after = json.loads(cli(pdir, "mirror", "status", "mir", "--json"))
        checksum_sent = after["bytesReplicated"] - before
        last = after.get("lastResync") or {}
        results["resync-checksum"] = {
            "dirty_extents": changed["dirtyExtents"], "compared": last.get("compared"), "sent": last.get("sent"),
            "skipped": last.get("skipped"), "bytes_sent": checksum_sent, "seconds": seconds,
            "ratio_bytes_to_plain_resync": checksum_sent / sent if sent else None,
            "ratio_seconds_to_plain_resync": seconds / results["resync"]["seconds"] if results["resync"]["seconds"] else None,
        }
        log(f"resync --checksum: {checksum_sent} bytes ({last.get('compared')} compared, {last.get('sent')} sent, "
            f"{last.get('skipped')} skipped) in {seconds:.2f} s; plain resync sent {sent} bytes")
        print(json.dumps(results, indent=2, sort_keys=True))
    finally:
        for process in (primary, target):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
