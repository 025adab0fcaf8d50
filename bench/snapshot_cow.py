#!/usr/bin/env python3
"""Snapshot and copy-on-write benchmarks: snapshots with in-engine copy-on-write.

Runs, one target at a time on this machine, 4 KiB random writes at QD32 into a fully written disk:

  cairn-nosnap      Cairn volume, no snapshot (the baseline)
  cairn-snap1       Cairn volume right after one snapshot: every first write to a chunk copies-on-write
  cairn-snap100     Cairn volume after 100 snapshots (with writes between them)
  cairn-nosnap-flush, cairn-snap1-flush   the first two with a FLUSH every FSYNC_EVERY writes (equal
                    durability: without FLUSHes only the snapshot run syncs, through its commits)
  qemu-qcow2-overlay   qemu-nbd serving a qcow2 overlay on a raw backing file (--cache=none --aio=native)
  qemu-qcow2-snapshot  qemu-nbd serving a qcow2 image with an internal snapshot
  nbdkit-cow        nbdkit's cow filter over a raw file
  *-onepass         cairn-nosnap, cairn-snap1 and qemu-qcow2-snapshot writing every 4 KiB block once
                    (fio randwrite over the whole size, not time-based): every write is a first write
                    after the snapshot, the case copy-on-write costs most

and reports IOPS, the ratios the issue sets goals for, Cairn's backend bytes written per host byte (from
the engine's slot-file counters in `cairn pool status --json`, and from /proc/PID/io), and snapshot
create latency (server side, over the API socket) on an idle and a busy volume of 1 GiB and of the
largest size Cairn accepts.

Usage: bench/snapshot-cow.sh [--quick]   (environment: SIZE, RUNTIME, RAMP, FSYNC_EVERY, CAIRN_BIN, and ONLY: a
comma-separated subset of the target names above, plus "latency", to run only those)
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, log, run, size_bytes, start_cairn, start_qemu_nbd, wait_nbd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
SIZE = os.environ.get("SIZE", "512M" if QUICK else "2G")
RUNTIME = int(os.environ.get("RUNTIME", "4" if QUICK else "15"))
RAMP = int(os.environ.get("RAMP", "1" if QUICK else "3"))
FSYNC_EVERY = int(os.environ.get("FSYNC_EVERY", "1024"))
ONLY = [n for n in os.environ.get("ONLY", "").split(",") if n]


def wanted(name):
    return not ONLY or name in ONLY
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(REPO, ".build/release/cairn")
LARGEST = 256 << 40  # Pool.maximumVolumeSize


def fio(uri, rw, bs, depth, runtime=None, size=None, end_fsync=False, output=None, fsync_every=0):
    args = ["fio", "--name=job", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={depth}", "--output-format=json", f"--output={output}"]
    if fsync_every:
        args.append(f"--fsync={fsync_every}")
    if size:
        args.append(f"--size={size}")
    if runtime:
        args += ["--time_based", f"--runtime={runtime}", f"--ramp_time={RAMP}", f"--size={SIZE}"]
    if end_fsync:
        args.append("--end_fsync=1")
    run(*args)
    job = json.load(open(output))["jobs"][0]
    return job["write"]


def proc_io(pid):
    fields = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines())
    return int(fields["write_bytes"])


class Cairn:
    def __init__(self, work, name):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.log = open(os.path.join(work, name + ".log"), "w")
        self.process, self.port = start_cairn(CAIRN, self.dir, self.log)
        self.socket = os.path.join(self.dir, "cairn.sock")

    def cli(self, *args):
        return run(CAIRN, *args, "--data-dir", self.dir)

    def uri(self, volume):
        return f"nbd://127.0.0.1:{self.port}/{volume}"

    def status(self):
        return json.loads(self.cli("pool", "status", "--json").stdout)

    def backend_bytes(self):
        s = self.status()
        return s["bytesWritten"] + s["bytesCopied"] + s["bytesZeroed"]

    def snapshot_latency(self, volume, name):
        """(API round trip, writes paused) in seconds for one snapshot creation: curl's time_total on the
        socket, and the engine's own measure of its epoch barrier from the answer."""
        out = run("curl", "-s", "-w", "\\n%{http_code} %{time_total}", "--unix-socket", self.socket,
                  "-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps({"name": name}),
                  f"http://cairn/v1/volumes/{volume}/snapshots").stdout
        body, status = out.rsplit("\n", 1)
        code, total = status.split()
        if code != "201":
            raise RuntimeError(f"snapshot create answered {code}: {body}")
        return float(total), json.loads(body)["creation"]["writesPausedMicroseconds"] / 1e6

    def stop(self):
        check = self.cli("pool", "check", "--json")
        healthy = json.loads(check.stdout)["healthy"]
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return healthy


def cairn_randwrite(work, name, snapshots, fsync_every=0, one_pass=False):
    server = Cairn(work, name)
    server.cli("volume", "create", "v", SIZE)
    uri = server.uri("v")
    wait_nbd(uri)
    fio(uri, "write", "1M", 8, size=SIZE, end_fsync=True, output=os.path.join(work, f"{name}-fill.json"))
    for i in range(snapshots):
        server.cli("snapshot", "create", f"v@s{i}")
        if snapshots > 1 and i % 10 == 9 and i != snapshots - 1:
            # Writes between snapshots, so chunks carry version chains like a volume with a history.
            run("fio", "--name=b", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k", "--iodepth=32",
                f"--size={SIZE}", "--number_ios=2000", "--output-format=json",
                f"--output={os.path.join(work, name + '-between.json')}")
    before_engine = server.backend_bytes()
    before_proc = proc_io(server.process.pid)
    if one_pass:
        result = fio(uri, "randwrite", "4k", 32, size=SIZE, output=os.path.join(work, f"{name}.json"))
    else:
        result = fio(uri, "randwrite", "4k", 32, runtime=RUNTIME, output=os.path.join(work, f"{name}.json"),
                     fsync_every=fsync_every)
    after_engine = server.backend_bytes()
    after_proc = proc_io(server.process.pid)
    # fio counts only the measured period; the ramp's writes hit the engine too.
    host_bytes = result["io_bytes"] if one_pass else result["io_bytes"] * (RUNTIME + RAMP) / RUNTIME
    healthy = server.stop()
    return {"iops": result["iops"], "host_bytes": host_bytes, "engine_bytes": after_engine - before_engine,
            "proc_write_bytes": after_proc - before_proc, "pool_check_healthy": healthy}


def external(work, name, start, one_pass=False):
    """Runs a reference target: `start` returns (uri, process or pid) after its own preparation."""
    uri, stopper = start()
    wait_nbd(uri)
    if one_pass:
        result = fio(uri, "randwrite", "4k", 32, size=SIZE, output=os.path.join(work, f"{name}.json"))
    else:
        result = fio(uri, "randwrite", "4k", 32, runtime=RUNTIME, output=os.path.join(work, f"{name}.json"))
    stopper()
    return {"iops": result["iops"]}


def filled_raw(work, name):
    path = os.path.join(work, name)
    run("fio", "--name=fill", f"--filename={path}", "--rw=write", "--bs=1M", f"--size={SIZE}", "--ioengine=psync",
        "--end_fsync=1", "--output-format=json", f"--output={path}.fill.json")
    return path


def qemu_nbd(image, fmt, work, tag):
    port, stop = start_qemu_nbd(image, fmt, work, tag)
    return f"nbd://127.0.0.1:{port}/disk", stop


def qcow2_overlay(work):
    base = filled_raw(work, "overlay-base.raw")
    overlay = os.path.join(work, "overlay.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", base, "-F", "raw", overlay)
    return qemu_nbd(overlay, "qcow2", work, "overlay")


def qcow2_snapshot(work):
    image = os.path.join(work, "internal.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", image, SIZE)
    uri, stop = qemu_nbd(image, "qcow2", work, "internal-fill")
    wait_nbd(uri)
    fio(uri, "write", "1M", 8, size=SIZE, end_fsync=True, output=os.path.join(work, "internal-fill.json"))
    stop()
    run("qemu-img", "snapshot", "-c", "s1", image)
    return qemu_nbd(image, "qcow2", work, "internal")


def nbdkit_cow(work):
    base = filled_raw(work, "cow-base.raw")
    port = free_port()
    pidfile = os.path.join(work, "nbdkit.pid")
    run("nbdkit", "-i", "127.0.0.1", "-p", str(port), "-P", pidfile, "--filter=cow", "file", base)
    for _ in range(100):
        if os.path.exists(pidfile) and open(pidfile).read().strip():
            break
        time.sleep(0.1)
    pid = int(open(pidfile).read())

    def stop():
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
    return f"nbd://127.0.0.1:{port}/", stop


def snapshot_latencies(work):
    """Snapshot create latency on volumes of 1 GiB and of the largest size, idle and under 4 KiB writes."""
    server = Cairn(work, "latency")
    results = {}
    for label, volume_size in (("1GiB", 1 << 30), ("256TiB", LARGEST)):
        volume = "v" + label
        server.cli("volume", "create", volume, str(volume_size))
        uri = server.uri(volume)
        wait_nbd(uri)
        run("fio", "--name=seed", "--ioengine=nbd", f"--uri={uri}", "--rw=write", "--bs=1M", "--iodepth=8",
            "--size=256M", "--end_fsync=1", "--output-format=json", f"--output={os.path.join(work, 'seed.json')}")
        idle = [server.snapshot_latency(volume, f"idle{i}") for i in range(10)]
        idle_paused = [p for _, p in idle]
        idle = [t for t, _ in idle]
        load = subprocess.Popen(
            ["fio", "--name=load", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k", "--iodepth=32",
             "--size=256M", "--time_based", "--runtime=600", "--output-format=json",
             f"--output={os.path.join(work, 'load.json')}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        busy = []
        for i in range(20):
            busy.append(server.snapshot_latency(volume, f"busy{i}"))
            time.sleep(0.2)
        load.send_signal(signal.SIGINT)
        load.wait(timeout=60)
        busy_paused = [p for _, p in busy]
        busy = [t for t, _ in busy]
        results[label] = {"idle": idle, "busy": busy, "idle paused": idle_paused, "busy paused": busy_paused}
    server.stop()
    return results


def main():
    if not os.access(CAIRN, os.X_OK):
        sys.exit(f"{CAIRN} is not built: swift build -c release --product cairn, or set CAIRN_BIN")
    work = tempfile.mkdtemp(prefix="csnap.", dir="/tmp")
    results = {"size": SIZE, "runtime": RUNTIME, "ramp": RAMP, "fsync_every": FSYNC_EVERY,
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "commit": run("git", "-C", REPO, "rev-parse", "--short", "HEAD").stdout.strip(),
               "loadavg": open("/proc/loadavg").read().split()[:3]}
    try:
        for name, snapshots in (("cairn-nosnap", 0), ("cairn-snap1", 1), ("cairn-snap100", 100)):
            if not wanted(name):
                continue
            log(f"{name}")
            results[name] = cairn_randwrite(work, name, snapshots)
        for name, snapshots in (("cairn-nosnap-onepass", 0), ("cairn-snap1-onepass", 1)):
            if not wanted(name):
                continue
            log(f"{name}")
            results[name] = cairn_randwrite(work, name, snapshots, one_pass=True)
        if wanted("qemu-qcow2-snapshot-onepass"):
            log("qemu-qcow2-snapshot-onepass")
            results["qemu-qcow2-snapshot-onepass"] = external(
                work, "qemu-qcow2-snapshot-onepass", lambda: qcow2_snapshot(work), one_pass=True)
            subprocess.run(["sync"])
        # The same two with a FLUSH every FSYNC_EVERY writes: without FLUSHes the no-snapshot run never
        # syncs anything (overwrites in place change no metadata), while the snapshot run's new versions
        # are committed every second, and a commit syncs the data first. Equal durability, fair ratio.
        for name, snapshots in (("cairn-nosnap-flush", 0), ("cairn-snap1-flush", 1)):
            if not wanted(name):
                continue
            log(f"{name}")
            results[name] = cairn_randwrite(work, name, snapshots, fsync_every=FSYNC_EVERY)
        for name, start in (("qemu-qcow2-overlay", lambda: qcow2_overlay(work)),
                            ("qemu-qcow2-snapshot", lambda: qcow2_snapshot(work)),
                            ("nbdkit-cow", lambda: nbdkit_cow(work))):
            if not wanted(name):
                continue
            log(f"{name}")
            results[name] = external(work, name, start)
            subprocess.run(["sync"])
        if wanted("latency"):
            log("snapshot create latency")
            results["latency"] = snapshot_latencies(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    out = os.path.join(REPO, "bench/results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, time.strftime("snapshot-cow-%Y%m%d-%H%M%S.json")), "w") as f:
        json.dump(results, f, indent=2)


def report(r):
    print(f"snapshot copy-on-write, {r['date']}, commit {r['commit']}, size {r['size']}, "
          f"{r['runtime']}s + {r['ramp']}s ramp, load {' '.join(r['loadavg'])}")
    print(f"\n{'target':28} {'4k randwrite IOPS':>18}")
    names = ("cairn-nosnap", "cairn-snap1", "cairn-snap100", "cairn-nosnap-onepass", "cairn-snap1-onepass",
             "cairn-nosnap-flush", "cairn-snap1-flush", "qemu-qcow2-overlay", "qemu-qcow2-snapshot",
             "qemu-qcow2-snapshot-onepass", "nbdkit-cow")
    for name in names:
        if name in r:
            print(f"{name:28} {r[name]['iops']:18.0f}")
    print(f"(-flush: a FLUSH every {r.get('fsync_every', FSYNC_EVERY)} writes; -onepass: every block written once)")

    def ratio(a, b):
        return r[a]["iops"] / r[b]["iops"] if a in r and b in r else None
    ratios = [
        ("after snapshot / no snapshot", ratio("cairn-snap1", "cairn-nosnap"), 0.8),
        ("100 snapshots / 1 snapshot", ratio("cairn-snap100", "cairn-snap1"), 0.95),
        ("cairn-snap1 / qcow2 overlay", ratio("cairn-snap1", "qemu-qcow2-overlay"), 2.0),
        ("cairn-snap1 / qcow2 internal snapshot", ratio("cairn-snap1", "qemu-qcow2-snapshot"), 2.0),
        ("cairn-snap1 / nbdkit cow filter", ratio("cairn-snap1", "nbdkit-cow"), 2.0),
        ("after snapshot / none, FLUSH every N", ratio("cairn-snap1-flush", "cairn-nosnap-flush"), 0.8),
        ("one pass: after snapshot / none", ratio("cairn-snap1-onepass", "cairn-nosnap-onepass"), 0.9),
        ("one pass: cairn / qcow2 internal snapshot", ratio("cairn-snap1-onepass", "qemu-qcow2-snapshot-onepass"), 2.0),
    ]
    print(f"\n{'ratio':42} {'value':>7} {'goal':>6}  met?")
    for label, value, goal in ratios:
        if value is not None:
            print(f"{label:42} {value:7.2f} {goal:6.2f}  {'yes' if value >= goal else 'NO'}")
    snap = r.get("cairn-snap1") or r.get("cairn-snap1-onepass")
    if snap:
        amplification = snap["engine_bytes"] / snap["host_bytes"]
        print(f"{'backend bytes / host byte (engine)':42} {amplification:7.2f} {'<=2.0':>6}  "
              f"{'yes' if amplification <= 2.0 else 'NO'}")
        print(f"{'backend bytes / host byte (/proc io)':42} {snap['proc_write_bytes'] / snap['host_bytes']:7.2f}"
              "   (page-cache writeback attributed to the daemon)")
    print("\nsnapshot create latency (ms; round trip: API call on the unix socket, including the commit "
          "of the cut;\n  paused: how long the engine held host writes back; goal < 5 ms)")
    for label, values in r.get("latency", {}).items():
        for mode in ("idle", "busy", "idle paused", "busy paused"):
            v = sorted(x * 1000 for x in values[mode])
            print(f"  {label:7} {mode:11} median {statistics.median(v):6.2f}  p90 {v[int(len(v) * 0.9) - 1]:6.2f}  "
                  f"max {v[-1]:6.2f}")
    print(f"\npool check after each Cairn run: "
          f"{all(r[n]['pool_check_healthy'] for n in names if n.startswith('cairn') and n in r)}")


if __name__ == "__main__":
    main()
