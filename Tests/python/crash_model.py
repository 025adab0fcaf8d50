#!/usr/bin/python3
"""Crash-consistency workload and checker for a Cairn export, driven through libnbd (a real client).

  crash_model.py run    URI LOG --seed N --baseline STATE [--blocks B] [--id-base K] [--seconds S]
  crash_model.py verify URI LOG --baseline STATE --state-out STATE2 [--blocks B]

`run` keeps up to QUEUE_DEPTH writes, FUA writes, WRITE_ZEROES and FLUSHes in flight, never two at once on
the same block, and logs every issue and completion. It stops when the server goes away (the harness
kill -9s the daemon) or after S seconds. `verify` reads the whole export after the restart and checks
every block against what the block-device contract allows: the last write that was durable (completed
before the last completed FLUSH was issued, or completed with FUA), or any write issued after it. It
writes the state it saw, the baseline of the next round.
"""
import argparse
import json
import random
import struct
import sys
import time

import nbd

BLOCK = 512
QUEUE_DEPTH = 16
MAGIC = 0xCA1B5EC7


def content(value, block):
    """Self-identifying block content for write `value` (0: zeros)."""
    if value == 0:
        return bytes(BLOCK)
    head = struct.pack("<IQI", MAGIC, value, block)
    fill = bytes(((value * 131 + block * 7 + i) & 0xFF) for i in range(256))
    return (head + fill * 2)[:BLOCK]


def identify(data, block):
    """The write id a block holds, 0 for zeros, or None for anything else."""
    if data == bytes(BLOCK):
        return 0
    magic, value, where = struct.unpack_from("<IQI", data)
    if magic != MAGIC or where != block or data != content(value, block):
        return None
    return value


def run(args):
    rng = random.Random(args.seed)
    log = open(args.log, "w", buffering=1)
    h = nbd.NBD()
    try:
        h.connect_uri(args.uri)
    except nbd.Error as error:
        log.write(f"DISCONNECTED {error}\n")
        return 0
    busy = {}  # block -> cookie
    inflight = {}  # cookie -> (id, blocks, buffer)
    next_id = args.id_base
    deadline = time.time() + args.seconds

    def retire():
        for cookie in list(inflight):
            op_id, blocks, _ = inflight[cookie]
            try:
                done = h.aio_command_completed(cookie)
            except nbd.Error:
                log.write(f"E {op_id}\n")
                done = True
            else:
                if done:
                    log.write(f"C {op_id}\n")
            if done:
                del inflight[cookie]
                for b in blocks:
                    busy.pop(b, None)

    try:
        while time.time() < deadline:
            while len(inflight) >= QUEUE_DEPTH:
                h.poll(-1)
                retire()
            kind = rng.random()
            next_id += 1
            if kind < 0.10:
                cookie = h.aio_flush()
                log.write(f"I {next_id} F 0 0\n")
                inflight[cookie] = (next_id, [], None)
            else:
                count = rng.choice([1, 1, 2, 8, 8, 16, 64, 128])
                first = rng.randrange(0, args.blocks - count)
                if count >= 8 and rng.random() < 0.5:
                    first -= first % 8  # whole 4 KiB blocks, as filesystems write
                blocks = list(range(first, first + count))
                if any(b in busy for b in blocks):
                    continue
                if kind < 0.18:
                    punch = rng.random() < 0.5
                    flags = 0 if punch else nbd.CMD_FLAG_NO_HOLE
                    cookie = h.aio_zero(count * BLOCK, first * BLOCK, flags=flags)
                    log.write(f"I {next_id} Z {first} {count}\n")
                    buffer = None
                else:
                    fua = kind > 0.88
                    data = b"".join(content(next_id, b) for b in blocks)
                    buffer = nbd.Buffer.from_bytearray(bytearray(data))
                    cookie = h.aio_pwrite(buffer, first * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
                    log.write(f"I {next_id} {'U' if fua else 'W'} {first} {count}\n")
                for b in blocks:
                    busy[b] = cookie
                inflight[cookie] = (next_id, blocks, buffer)
            h.poll(0)
            retire()
        while inflight:
            h.poll(-1)
            retire()
        log.write("END\n")
    except nbd.Error as error:
        log.write(f"DISCONNECTED {error}\n")
    return 0


def verify(args):
    baseline = json.load(open(args.baseline)) if args.baseline else [0] * args.blocks
    events = [line.split() for line in open(args.log)]
    issued = {}  # id -> (kind, first, count, position)
    completed = {}  # id -> position
    for position, event in enumerate(events):
        if event[0] == "I":
            issued[int(event[1])] = (event[2], int(event[3]), int(event[4]), position)
        elif event[0] == "C":
            completed[int(event[1])] = position
    last_flush_issue = -1
    for op_id, (kind, _, _, position) in issued.items():
        if kind == "F" and op_id in completed:
            last_flush_issue = max(last_flush_issue, position)
    # Per block, writes in issue order (never two in flight on one block, so this is their order).
    history = [[] for _ in range(args.blocks)]
    for op_id, (kind, first, count, position) in sorted(issued.items(), key=lambda item: item[1][3]):
        if kind == "F":
            continue
        value = 0 if kind == "Z" else op_id
        durable = op_id in completed and (completed[op_id] < last_flush_issue or kind == "U")
        for b in range(first, first + count):
            history[b].append((value, durable))
    h = nbd.NBD()
    h.connect_uri(args.uri)
    state = []
    failures = []
    chunk = 2048
    for start in range(0, args.blocks, chunk):
        data = h.pread(min(chunk, args.blocks - start) * BLOCK, start * BLOCK)
        for i in range(len(data) // BLOCK):
            b = start + i
            seen = identify(bytes(data[i * BLOCK:(i + 1) * BLOCK]), b)
            allowed = [baseline[b]]
            for value, durable in history[b]:
                if durable:
                    allowed = [value]
                else:
                    allowed.append(value)
            if seen is None or seen not in allowed:
                failures.append(f"block {b}: holds {seen}, allowed {allowed}")
            state.append(seen if seen is not None else -1)
    json.dump(state, open(args.state_out, "w"))
    durable_writes = sum(1 for block in history for _, durable in block if durable)
    print(f"verified {args.blocks} blocks, {len(issued)} operations, {len(completed)} completed, "
          f"{durable_writes} durable block writes, {len(failures)} violations")
    for failure in failures[:20]:
        print(failure)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "verify"])
    parser.add_argument("uri")
    parser.add_argument("log")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=131072)
    parser.add_argument("--id-base", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--baseline")
    parser.add_argument("--state-out")
    args = parser.parse_args()
    sys.exit(run(args) if args.mode == "run" else verify(args))


if __name__ == "__main__":
    main()
