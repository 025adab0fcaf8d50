#!/usr/bin/python3
"""Transaction consistency of `cairn backup` through real NBD sessions (the one-way-mirror design: a backup at T holds every transaction committed before T).

  bank_backup.py run   URI_BASE VOLUME LOG --cairn BIN --data-dir D --archive FILE --method M --seed N
  bank_backup.py check URI LOG --mode backup|live
  bank_backup.py hold  URI READY GO        (a session that stays open: half a transaction, then waits)

`run` fills the accounts, then several threads run transactions, each on a libnbd connection of its own:
read two balances, write the debit, a ledger record, the credit (each with FUA), disconnect. The
application's own locks (the seed's type (a) locks) keep two transactions off the same account. In
the middle, `cairn backup start` splits the volume at T. The log records each transaction's connect and
disconnect times and when the backup was asked for and when it answered (after the split).

`check` reads an image: the balances must sum to the initial total (no half transaction); with
--mode backup every transaction finished before the backup was asked for is present and none that
connected after the split is; with --mode live every transaction is present (nothing acknowledged lost).
"""
import argparse
import json
import random
import struct
import subprocess
import sys
import threading
import time

import nbd

ACCOUNTS = 16
INITIAL = 1000
ACCOUNT_SPACING = 64 * 1024
LEDGER_BASE = 4 << 20
LEDGER_SPACING = 4096
MAX_TRANSACTIONS = 900
BLOCK = 4096


def account_offset(account):
    return account * ACCOUNT_SPACING


def ledger_offset(number):
    return LEDGER_BASE + number * LEDGER_SPACING


def record(*values):
    data = struct.pack("<%dQ" % len(values), *values)
    return data + bytes(BLOCK - len(data))


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def run(args):
    uri = args.uri_base + "/" + args.volume
    h = connect(uri)
    for account in range(ACCOUNTS):
        h.pwrite(record(INITIAL), account_offset(account))
    h.flush()
    h.shutdown()

    locks = [threading.Lock() for _ in range(ACCOUNTS)]
    counter = [0]
    counter_lock = threading.Lock()
    stop = threading.Event()
    log = []
    errors = []

    def worker(index):
        rng = random.Random(args.seed * 1000 + index)
        while not stop.is_set():
            with counter_lock:
                number = counter[0]
                counter[0] += 1
            if number >= MAX_TRANSACTIONS:
                return
            source = rng.randrange(ACCOUNTS)
            target = rng.randrange(ACCOUNTS - 1)
            if target >= source:
                target += 1
            amount = rng.randint(1, 10)
            pause = rng.uniform(0.001, 0.01)
            first, second = sorted([source, target])
            with locks[first], locks[second]:
                attached = time.monotonic()
                try:
                    c = connect(uri)
                    a = struct.unpack_from("<Q", c.pread(BLOCK, account_offset(source)))[0]
                    b = struct.unpack_from("<Q", c.pread(BLOCK, account_offset(target)))[0]
                    c.pwrite(record(a - amount), account_offset(source), nbd.CMD_FLAG_FUA)
                    time.sleep(pause)
                    c.pwrite(record(number + 1, source, target, amount), ledger_offset(number), nbd.CMD_FLAG_FUA)
                    time.sleep(pause)
                    c.pwrite(record(b + amount), account_offset(target), nbd.CMD_FLAG_FUA)
                    c.shutdown()
                except Exception as error:  # noqa: BLE001 - reported to the harness
                    errors.append("transaction %d: %s" % (number, error))
                    return
                detached = time.monotonic()
            log.append([number, attached, detached])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
    for t in threads:
        t.start()
    time.sleep(args.before)
    # One transaction certainly in flight at T: debit before the split, credit after it.
    with counter_lock:
        straddling = counter[0]
        counter[0] += 1
    with locks[0], locks[1]:
        c = connect(uri)
        a = struct.unpack_from("<Q", c.pread(BLOCK, account_offset(0)))[0]
        b = struct.unpack_from("<Q", c.pread(BLOCK, account_offset(1)))[0]
        c.pwrite(record(a - 5), account_offset(0), nbd.CMD_FLAG_FUA)
        asked = time.monotonic()
        start = subprocess.run(
            [args.cairn, "backup", "start", args.volume, "--to", args.archive, "--method", args.method, "--json",
             "--data-dir", args.data_dir], capture_output=True, text=True)
        split = time.monotonic()
        c.pwrite(record(straddling + 1, 0, 1, 5), ledger_offset(straddling), nbd.CMD_FLAG_FUA)
        c.pwrite(record(b + 5), account_offset(1), nbd.CMD_FLAG_FUA)
        c.shutdown()
    time.sleep(args.after)
    stop.set()
    for t in threads:
        t.join()
    out = {"transactions": log, "asked": asked, "split": split, "errors": errors, "straddling": straddling,
           "start_status": start.returncode, "start": start.stdout, "start_err": start.stderr}
    with open(args.log, "w") as f:
        json.dump(out, f)
    print(json.dumps({"transactions": len(log), "errors": errors, "start_status": start.returncode,
                      "backup": json.loads(start.stdout)["id"] if start.returncode == 0 else None}))


def check(args):
    with open(args.log) as f:
        log = json.load(f)
    h = connect(args.uri)
    total = sum(struct.unpack_from("<Q", h.pread(BLOCK, account_offset(a)))[0] for a in range(ACCOUNTS))
    missing, unexpected = [], []
    for number, attached, detached in log["transactions"]:
        present = struct.unpack_from("<Q", h.pread(BLOCK, ledger_offset(number)))[0] == number + 1
        if args.mode == "live" or detached < log["asked"]:
            if not present:
                missing.append(number)
        elif attached > log["split"] and present:
            unexpected.append(number)
    if struct.unpack_from("<Q", h.pread(BLOCK, ledger_offset(log["straddling"])))[0] != log["straddling"] + 1:
        missing.append(log["straddling"])
    h.shutdown()
    before = sum(1 for t in log["transactions"] if t[2] < log["asked"])
    after = sum(1 for t in log["transactions"] if t[1] > log["split"])
    result = {"ok": total == ACCOUNTS * INITIAL and not missing and not unexpected, "total": total,
              "missing": missing, "unexpected": unexpected, "finished_before": before, "started_after": after}
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


def hold(args):
    """Half a transaction on a session that then waits: it is on image A when the backup splits."""
    h = connect(args.uri)
    h.pwrite(record(INITIAL - 1), account_offset(0), nbd.CMD_FLAG_FUA)
    open(args.ready, "w").close()
    import os
    while not os.path.exists(args.go):
        time.sleep(0.05)
    h.pwrite(record(INITIAL + 1), account_offset(1), nbd.CMD_FLAG_FUA)
    h.shutdown()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("uri_base")
    r.add_argument("volume")
    r.add_argument("log")
    r.add_argument("--cairn", required=True)
    r.add_argument("--data-dir", required=True)
    r.add_argument("--archive", required=True)
    r.add_argument("--method", default="cow")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--before", type=float, default=0.5)
    r.add_argument("--after", type=float, default=0.7)
    c = sub.add_parser("check")
    c.add_argument("uri")
    c.add_argument("log")
    c.add_argument("--mode", choices=["backup", "live"], default="backup")
    o = sub.add_parser("hold")
    o.add_argument("uri")
    o.add_argument("ready")
    o.add_argument("go")
    args = parser.parse_args()
    {"run": run, "check": check, "hold": hold}[args.command](args)


if __name__ == "__main__":
    main()
