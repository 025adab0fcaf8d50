#!/usr/bin/python3
"""A fault-injecting TCP proxy for the remote-mirror tests (traffic stays on loopback).

    mirror_fault_proxy.py LISTEN_PORT TARGET_PORT CONTROL_FILE

Writes "LISTENING <port>" on stdout once it accepts connections. The mode is read from CONTROL_FILE
(one word, re-read every 20 ms) and applies to every connection:

  pass     forward both ways
  stall    hold every byte (both ways) until the mode changes; then deliver what was held
  cut      close every connection now and refuse new ones (accept, then close at once)
  corrupt  flip one byte in every 3rd chunk sent primary -> target (a damaged payload or header)
  drop     discard primary -> target bytes (the stream loses its framing)
  dup      deliver every write frame (command 20) twice: duplicate delivery
  reorder  deliver primary -> target frames pairwise swapped (a frame waits up to 50 ms for the next)

dup and reorder cut the primary -> target stream at frame boundaries (24-byte header, payload length at
bytes 16..20, 4-byte trailer), so they need the link without TLS.
"""
import os
import select
import socket
import sys
import threading
import time

listen_port, target_port, control = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


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
    held = {client: b"", upstream: b""}  # bytes waiting to go *to* this socket
    peer = {client: upstream, upstream: client}
    chunks = 0
    pending = b""          # primary -> target bytes not yet cut into frames (dup, reorder)
    parked = None          # reorder: a frame waiting for the next one, and since when
    framing = False        # once dup/reorder cut the stream, it stays cut at frame boundaries

    def frames():
        nonlocal pending
        out = []
        while len(pending) >= 24:
            total = 24 + int.from_bytes(pending[16:20], "big") + 4
            if len(pending) < total:
                break
            out.append(pending[:total])
            pending = pending[total:]
        return out
    try:
        while True:
            current = mode()
            if current == "cut":
                break
            readable, _, _ = select.select([client, upstream], [], [], 0.02)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                to = peer[sock]
                if sock is client:
                    chunks += 1
                    if current == "drop":
                        continue
                    if current == "corrupt" and chunks % 3 == 0:
                        index = len(data) // 2
                        data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
                    if current in ("dup", "reorder") or framing:
                        framing = True
                        pending += data
                        for frame in frames():
                            if current == "dup" and int.from_bytes(frame[4:6], "big") == 20:
                                held[to] += frame + frame
                            elif current == "reorder" and parked is None:
                                parked = (frame, time.monotonic())
                            elif current == "reorder":
                                held[to] += frame + parked[0]
                                parked = None
                            else:
                                held[to] += frame
                        continue
                held[to] += data
            if parked is not None and (mode() != "reorder" or time.monotonic() - parked[1] > 0.05):
                held[upstream] += parked[0]
                parked = None
            if mode() != "stall":
                for sock in (client, upstream):
                    if held[sock]:
                        sock.sendall(held[sock])
                        held[sock] = b""
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
