"""The qemu anchor for the clone-restore benchmark: qemu's way to make a disk show another image's data
at once and copy it in behind the host's back is an overlay on that image plus `block-stream`
(copy-on-read while the stream job copies everything in). qemu-storage-daemon serves the overlay over
NBD; fio measures 4 KiB random IOPS before and during the stream in one run, exactly as for Cairn's
protected restore. Unlike Cairn, the stream copies the whole backing image (qcow2 keeps no delta map
against it), and the backing image stays attached until the stream ends."""
import json
import os
import socket
import subprocess
import time

from benchlib import free_port, run, wait_nbd


class QMP:
    """A minimal QMP client over the daemon's unix socket."""

    def __init__(self, path):
        for _ in range(300):
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        self.file = self.sock.makefile("rw")
        self.read()  # greeting
        self.execute("qmp_capabilities")

    def read(self):
        while True:
            message = json.loads(self.file.readline())
            if "event" not in message:
                return message

    def execute(self, command, **arguments):
        self.file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.file.flush()
        reply = self.read()
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error']}")
        return reply["return"]


def stream_anchor(work, size_text, fio_start, fio_finish, split_windows, ramp):
    """Returns {qemu_stream_s, qemu_randread_ratio, qemu_randwrite_ratio, ...} for a SIZE image."""
    base = os.path.join(work, "qemu-base.raw")
    run("fio", "--name=fill", "--ioengine=psync", "--rw=write", "--bs=1m", f"--size={size_text}",
        f"--filename={base}", "--refill_buffers", "--end_fsync=1")
    result = {}
    for rw in ["randread", "randwrite"]:
        overlay = os.path.join(work, "qemu-overlay.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
        port, qmp_path = free_port(), os.path.join(work, "qmp.sock")
        daemon = subprocess.Popen(
            ["qemu-storage-daemon",
             "--blockdev", f"driver=file,filename={base},node-name=base-file",
             "--blockdev", "driver=raw,file=base-file,node-name=base",
             "--blockdev", f"driver=file,filename={overlay},node-name=overlay-file",
             "--blockdev", "driver=qcow2,file=overlay-file,backing=base,node-name=overlay",
             "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}",
             "--export", "type=nbd,id=export,node-name=overlay,name=disk,writable=on",
             "--chardev", f"socket,path={qmp_path},server=on,wait=off,id=qmp", "--monitor", "chardev=qmp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            uri = f"nbd://127.0.0.1:{port}/disk"
            wait_nbd(uri)
            qmp = QMP(qmp_path)
            started = fio_start(uri, rw, "4k", 32, runtime=int(ramp + 60), iops_log=os.path.join(work, f"qemu-{rw}"))
            launched = time.monotonic()
            time.sleep(ramp)
            stream_at = time.monotonic() - launched
            qmp.execute("block-stream", **{"job-id": "stream", "device": "overlay"})
            while any(job["device"] == "stream" for job in qmp.execute("query-block-jobs")):
                time.sleep(0.05)
            stream_end = time.monotonic() - launched
            started[0].terminate()  # fio stops early on SIGTERM and still writes its logs
            try:
                fio_finish(started)
            except RuntimeError:
                pass
            result["qemu_stream_s"] = stream_end - stream_at
            try:
                before, during = split_windows(os.path.join(work, f"qemu-{rw}"), stream_at, stream_end)
                result[f"qemu_{rw}_ratio"] = during / max(before, 1e-9)
                result[f"qemu_{rw}_iops_before"] = before
                result[f"qemu_{rw}_iops_stream"] = during
            except RuntimeError as error:  # the stream ended within a window or two
                result[f"qemu_{rw}_error"] = str(error)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
            os.unlink(overlay)
    os.unlink(base)
    return result
