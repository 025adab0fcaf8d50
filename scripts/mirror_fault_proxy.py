#!/usr/bin/python3
"""A fault-injecting TCP proxy for the remote-mirror tests (traffic stays on loopback).

    mirror_fault_proxy.py LISTEN_PORT TARGET_PORT CONTROL_FILE

Writes "LISTENING <port>" on stdout once it accepts connections. The mode is read from CONTROL_FILE
(one word, re-read every 20 ms) and applies to every connection. The primary -> target stream is cut
into whole frames (24-byte header with the payload length at bytes 16..20, then the payload and a
4-byte CRC), from the first byte of each connection, so every fault applies to whole frames and the
proxy never loses track of the framing (the link must run without TLS):

  pass     forward both ways
  stall    hold every byte (both ways) until the mode changes; then deliver what was held
  cut      close every connection now and refuse new ones (accept, then close at once)
  corrupt  flip one byte in the middle of every 3rd frame (its payload, or a short frame's header)
  corrupt-payload  flip one byte in the payload of every other frame that has one of at least 64 bytes,
           starting with the first (headers stay intact: every corruption is a checksum failure the
           receiver asks to resend, and the resent frame goes through)
  drop     lose every primary -> target frame (a lost frame); each one's command is appended to
           CONTROL_FILE.dropped
  dup      deliver every write frame (command 20) twice: duplicate delivery
  reorder  deliver frames pairwise swapped (a frame waits up to 50 ms for the next one)
"""
import select
import socket
import sys
import threading
import time

listen_port, target_port, control = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
HEADER, TRAILER, WRITE = 24, 4, 20


def mode():
    try:
        with open(control) as f:
            return f.read().strip() or "pass"
    except OSError:
        return "pass"


def pump(client):
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        client.close()
        return
    outgoing = {client: b"", upstream: b""}  # bytes waiting to go *to* this socket
    pending = b""  # primary -> target bytes not yet a whole frame
    parked = None  # reorder: (frame, since)
    count = 0
    payloads = [0]  # corrupt-payload: frames with a payload seen
    try:
        while True:
            current = mode()
            if current == "cut":
                break
            readable, _, _ = select.select([client, upstream], [], [], 0.02)
            for sock in readable:
                data = sock.recv(1 << 20)
                if not data:
                    return
                if sock is upstream:
                    outgoing[client] += data
                    continue
                pending += data
                while len(pending) >= HEADER:
                    total = HEADER + int.from_bytes(pending[16:20], "big") + TRAILER
                    if len(pending) < total:
                        break
                    frame, pending = pending[:total], pending[total:]
                    count += 1
                    if current == "drop":
                        with open(control + ".dropped", "a") as log:
                            log.write("%d\n" % int.from_bytes(frame[4:6], "big"))
                        continue
                    if current == "corrupt" and count % 3 == 0:
                        index = len(frame) // 2
                        frame = frame[:index] + bytes([frame[index] ^ 0xFF]) + frame[index + 1:]
                    if current == "corrupt-payload" and len(frame) >= HEADER + 64 + TRAILER:
                        payloads[0] += 1
                        if payloads[0] % 2 == 1:
                            index = HEADER + (len(frame) - HEADER - TRAILER) // 2
                            frame = frame[:index] + bytes([frame[index] ^ 0xFF]) + frame[index + 1:]
                    if current == "dup" and int.from_bytes(frame[4:6], "big") == WRITE:
                        frame = frame + frame
                    if current == "reorder":
                        if parked is None:
                            parked = (frame, time.monotonic())
                            continue
                        frame, parked = frame + parked[0], None
                    outgoing[upstream] += frame
            if parked is not None and (mode() != "reorder" or time.monotonic() - parked[1] > 0.05):
                outgoing[upstream] += parked[0]
                parked = None
            if mode() != "stall":
                for sock in (client, upstream):
                    if outgoing[sock]:
                        sock.sendall(outgoing[sock])
                        outgoing[sock] = b""
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(16)
print("LISTENING %d" % server.getsockname()[1], flush=True)
while True:
    client, _ = server.accept()
    if mode() == "cut":
        client.close()
        continue
    threading.Thread(target=pump, args=(client,), daemon=True).start()
