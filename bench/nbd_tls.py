#!/usr/bin/env python3
"""NBD over TLS against plaintext, Cairn and qemu-nbd side by side.

Targets, one at a time, each on a fresh, fully written device of SIZE bytes, one NBD connection:

  cairn          cairn serve, plaintext
  cairn-tls      cairn serve --tls required (X.509, TLS 1.3 as negotiated by libnbd's GnuTLS)
  qemu-nbd       qemu-nbd --cache=none --aio=native, plaintext
  qemu-nbd-tls   the same with --tls-creds (tls-creds-x509)

Jobs: 4 KiB random read and write at QD32, 1 MiB sequential read and write at QD8 (fio's nbd engine,
libnbd, `nbds://...?tls-certificates=DIR` for TLS). Prints IOPS and MiB/s, TLS / plaintext for each
server, and Cairn-with-TLS / qemu-nbd-with-TLS. Certificates are made with openssl for the run.

Usage: bench/nbd-tls.sh [--quick]   (environment: SIZE, RUNTIME, RAMP, CAIRN_BIN)
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import log, run, start_cairn, start_qemu_nbd, wait_nbd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
SIZE = os.environ.get("SIZE", "256M" if QUICK else "2G")
RUNTIME = int(os.environ.get("RUNTIME", "3" if QUICK else "12"))
RAMP = int(os.environ.get("RAMP", "1" if QUICK else "3"))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(REPO, ".build/release/cairn")
JOBS = [("randread-4k", "randread", "4k", 32), ("randwrite-4k", "randwrite", "4k", 32),
        ("seqread-1m", "read", "1M", 8), ("seqwrite-1m", "write", "1M", 8)]


def make_certificates(directory):
    script = """
        set -e
        cd "$1"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj "/CN=bench CA"
        openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
        openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem \
            -days 2 -extfile server.ext
        mkdir -p client/.pki/libnbd && cp ca-cert.pem client/.pki/libnbd/
        """
    run("/bin/sh", "-c", script, "sh", directory)
    # fio's nbd engine refuses tls-certificates= in a URI (local file access), so libnbd finds the CA in
    # its default place, $HOME/.pki/libnbd, with HOME pointing here.
    return os.path.join(directory, "client")


CLIENT_ENV = dict(os.environ)


def fio(uri, rw, bs, depth, output, timed=True):
    args = ["fio", "--name=job", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={depth}", f"--size={SIZE}", "--output-format=json", f"--output={output}"]
    if timed:
        args += ["--time_based", f"--runtime={RUNTIME}", f"--ramp_time={RAMP}"]
    run(*args, env=CLIENT_ENV)
    job = json.load(open(output))["jobs"][0]
    return job["write" if "write" in rw else "read"]


def start_cairn_volume(work, name, tls_args):
    directory = os.path.join(work, name)
    os.makedirs(directory)
    log_file = open(os.path.join(work, name + ".log"), "w")
    process, port = start_cairn(CAIRN, directory, log_file, extra=tls_args)
    run(CAIRN, "volume", "create", "disk", SIZE, "--data-dir", directory)

    def stop():
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return port, stop


def start_qemu_nbd_raw(work, name, tls_args):
    image = os.path.join(work, name + ".raw")
    run("truncate", "-s", SIZE, image)
    return start_qemu_nbd(image, "raw", work, name, extra=tls_args)


def main():
    if not os.access(CAIRN, os.X_OK):
        sys.exit(f"{CAIRN} is not built: swift build -c release --product cairn, or set CAIRN_BIN")
    work = tempfile.mkdtemp(prefix="ctls.", dir="/tmp")
    results = {"size": SIZE, "runtime": RUNTIME, "ramp": RAMP, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "loadavg": open("/proc/loadavg").read().split()[:3]}
    try:
        certificates = os.path.join(work, "pki")
        os.makedirs(certificates)
        CLIENT_ENV["HOME"] = make_certificates(certificates)
        cairn_tls = ["--tls", "required", "--tls-cert", os.path.join(certificates, "server-cert.pem"),
                     "--tls-key", os.path.join(certificates, "server-key.pem")]
        qemu_tls = ["--object", f"tls-creds-x509,id=tls0,dir={certificates},endpoint=server,verify-peer=off", "--tls-creds", "tls0"]
        targets = [("cairn", start_cairn_volume, [], False), ("cairn-tls", start_cairn_volume, cairn_tls, True),
                   ("qemu-nbd", start_qemu_nbd_raw, [], False), ("qemu-nbd-tls", start_qemu_nbd_raw, qemu_tls, True)]
        for name, start, tls_args, tls in targets:
            log(name)
            port, stop = start(work, name, tls_args)
            uri = f"nbds://127.0.0.1:{port}/disk" if tls else f"nbd://127.0.0.1:{port}/disk"
            try:
                wait_nbd(uri, env=CLIENT_ENV)
                fio(uri, "write", "1M", 8, os.path.join(work, f"{name}-fill.json"), timed=False)
                results[name] = {}
                for job, rw, bs, depth in JOBS:
                    side = fio(uri, rw, bs, depth, os.path.join(work, f"{name}-{job}.json"))
                    results[name][job] = {"iops": side["iops"], "mibs": side["bw_bytes"] / (1 << 20)}
                    log(f"  {job}: {side['iops']:.0f} IOPS")
            finally:
                stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    out = os.path.join(REPO, "bench/results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, time.strftime("nbd-tls-%Y%m%d-%H%M%S.json")), "w") as f:
        json.dump(results, f, indent=2)


def report(r):
    print(f"NBD over TLS, {r['date']}, size {r['size']}, {r['runtime']}s + {r['ramp']}s ramp per job, "
          f"load {' '.join(r['loadavg'])}")
    print(f"\n{'job':14}" + "".join(f"{t:>16}" for t in ("cairn", "cairn-tls", "qemu-nbd", "qemu-nbd-tls")) +
          f"{'cairn tls/plain':>17}{'qemu tls/plain':>16}{'cairn-tls/qemu-tls':>20}")
    for job, *_ in JOBS:
        values = [r[t][job]["iops"] for t in ("cairn", "cairn-tls", "qemu-nbd", "qemu-nbd-tls")]
        print(f"{job:14}" + "".join(f"{v:16.0f}" for v in values) +
              f"{values[1] / values[0]:17.2f}{values[3] / values[2]:16.2f}{values[1] / values[3]:20.2f}")
    print("\n(IOPS; for the 1 MiB jobs IOPS = MiB/s)")


if __name__ == "__main__":
    main()
