"""Helpers the bench/*.py scripts share: running tools, starting `cairn serve` and qemu-nbd, waiting for
an NBD server. Import it from a script in bench/ (`from benchlib import ...`)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def log(message):
    print(time.strftime("[%H:%M:%S] ") + message, file=sys.stderr, flush=True)


def run(*args, check=True, **kwargs):
    """Runs a tool to completion; raises with its output when it fails (unless check=False)."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_nbd(uri, env=None):
    """Waits until an NBD server answers at `uri` (nbdinfo --size), for up to 30 s."""
    for _ in range(300):
        if subprocess.run(["nbdinfo", "--size", uri], capture_output=True, env=env).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no NBD server at {uri}")


def start_cairn(binary, directory, log_file, extra=(), tries=300):
    """Starts `cairn serve` on `directory` with a free NBD port; returns (process, NBD port) once its
    daemon.json and API socket exist (polled every 0.1 s, `tries` times)."""
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", directory, "--nbd-port", "0", "--log-level", "warning", *extra],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    for _ in range(tries):
        try:
            info = json.load(open(os.path.join(directory, "daemon.json")))
            if os.path.exists(os.path.join(directory, "cairn.sock")):
                return process, int(info["nbd"].rsplit(":", 1)[1])
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("cairn serve did not start")


def start_qemu_nbd(image, fmt, work, tag, extra=()):
    """qemu-nbd --cache=none --aio=native on a free port, export "disk"; returns (port, stop)."""
    port = free_port()
    pidfile = os.path.join(work, tag + ".pid")
    run("qemu-nbd", "-f", fmt, "-x", "disk", "-b", "127.0.0.1", "-p", str(port), "-t", "--cache=none",
        "--aio=native", "-e", "8", "--fork", f"--pid-file={pidfile}", *extra, image)
    for _ in range(100):
        if os.path.exists(pidfile) and open(pidfile).read().strip():
            break
        time.sleep(0.1)
    pid = int(open(pidfile).read())

    def stop():
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.1)
    return port, stop
