#!/usr/bin/env python3
"""Helper for bench/nbd-fio.sh (standard library only).

  nbd_fio_report.py snapshot PID            per-thread CPU ticks of a process, as JSON on stdout
  nbd_fio_report.py brief FIO_JSON          one line: IOPS, MiB/s, p99 latency
  nbd_fio_report.py perf PERF_SCRIPT_TXT    summary of `perf script` output of the daemon by thread role
  nbd_fio_report.py report RESULTS_DIR      job x target table, ratios and goals (stdout), summary.json

Results layout (written by nbd-fio.sh):
  RESULTS_DIR/meta.json                     run parameters, versions, load averages
  RESULTS_DIR/<target>/<job>.r<N>.json      fio --output-format=json
  RESULTS_DIR/<target>/<job>.r<N>.cpu.json  {"before": snapshot, "after": snapshot} of the server process
  RESULTS_DIR/<target>/<job>.r<N>.flush     seconds an NBD FLUSH (or fsync) took right after a write job
"""

import json
import os
import re
import statistics
import sys
import time

JOBS = [
    # name, fio rw, block size, queue depth, metric shown first
    ("randwrite-4k", "randwrite", "4k", 32, "iops"),
    ("randwrite-4k-fsync32", "randwrite", "4k", 32, "iops"),
    ("randwrite-4k-fsync1", "randwrite", "4k", 32, "iops"),
    ("randread-4k", "randread", "4k", 32, "iops"),
    ("seqwrite-1m", "write", "1m", 8, "bw"),
    ("seqread-1m", "read", "1m", 8, "bw"),
]

# Goals from the issue: Cairn / qemu-nbd (O_DIRECT, aio=native).
GOALS = {"randwrite-4k": 1.5, "randwrite-4k-fsync32": 1.5, "randwrite-4k-fsync1": 1.5, "randread-4k": 1.5, "seqwrite-1m": 1.0, "seqread-1m": 1.0}

TARGET_ORDER = ["cairn", "cairn-nocsum", "cairn-direct", "cairn-writethrough", "qemu-nbd", "qemu-nbd-wb", "nbdkit-mem", "raw-file"]
CAIRN_TARGETS = ["cairn", "cairn-nocsum", "cairn-direct", "cairn-writethrough"]
TARGET_LABEL = {
    "cairn": "cairn",
    "cairn-nocsum": "cairn (no data checksums)",
    "cairn-direct": "cairn (O_DIRECT writes)",
    "cairn-writethrough": "cairn (write-through)",
    "qemu-nbd": "qemu-nbd (O_DIRECT)",
    "qemu-nbd-wb": "qemu-nbd (writeback)",
    "nbdkit-mem": "nbdkit memory",
    "raw-file": "raw file libaio O_DIRECT",
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- snapshot


def snapshot(pid):
    """utime+stime ticks of every thread of `pid` (and of the process as a whole)."""
    threads = {}
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir) if pid > 0 else []
    except FileNotFoundError:
        tids = []
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # comm is in parentheses and may contain spaces or parentheses: split at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        threads[tid] = {"comm": comm, "ticks": int(fields[11]) + int(fields[12])}
    process_ticks = None
    try:
        if pid <= 0:
            raise FileNotFoundError
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        process_ticks = int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError):
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    with open("/proc/stat") as f:
        # user nice system idle iowait irq softirq steal ...
        stat_cpu = [int(x) for x in f.readline().split()[1:9]]
    return {
        "time": time.time(),
        "pid": pid,
        "clk_tck": CLK_TCK,
        "process_ticks": process_ticks,
        "threads": threads,
        "loadavg": [float(x) for x in load],
        "stat_cpu": stat_cpu,
    }


def thread_group(pid, tid, comm):
    """Coarse class of a thread, from its name (Cairn names its I/O threads cairn-io-N and its commit
    thread cairn-commit; NIO names its event loops)."""
    if str(tid) == str(pid):
        return "main"
    if comm.startswith("NIO-ELT") or comm.startswith("NIO-SGLTN"):
        return "NIO event loop"
    return f"'{comm}'"


def cpu_delta(cpu):
    """Cores used over the job's wall time: by the server process (total, by thread class, per thread)
    and by the whole machine (from /proc/stat), so that other load on the machine can be shown."""
    before, after = cpu["before"], cpu["after"]
    wall = after["time"] - before["time"]
    if wall <= 0:
        return None
    per_thread = []
    groups = {}
    for tid, info in after["threads"].items():
        start = before["threads"].get(tid, {"ticks": 0})["ticks"]
        cores = (info["ticks"] - start) / CLK_TCK / wall
        per_thread.append((tid, info["comm"], round(cores, 3)))
        group = thread_group(after["pid"], tid, info["comm"])
        groups[group] = groups.get(group, 0.0) + cores
    total = None
    if before.get("process_ticks") is not None and after.get("process_ticks") is not None:
        total = (after["process_ticks"] - before["process_ticks"]) / CLK_TCK / wall
    per_thread.sort(key=lambda t: -t[2])
    busy = None
    if "stat_cpu" in before and "stat_cpu" in after:
        d = [a - b for a, b in zip(after["stat_cpu"], before["stat_cpu"])]
        # idle and iowait are not busy.
        busy = (sum(d) - d[3] - d[4]) / CLK_TCK / wall
    return {"server_cores": total, "server_groups": groups, "server_threads": per_thread, "machine_busy": busy}


# --------------------------------------------------------------------------- report


def fio_metrics(path):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    data = json.loads(text[text.index("{") :])
    job = data["jobs"][0]
    if job.get("error"):
        raise ValueError(f"{path}: fio job error {job['error']}")
    side = "read" if job["read"]["io_bytes"] > 0 else "write"
    s = job[side]
    pct = s.get("clat_ns", {}).get("percentile", {})

    def p(key):
        v = pct.get(key)
        return v / 1e6 if v is not None else None

    return {
        "iops": s["iops"],
        "mibps": s["bw_bytes"] / (1 << 20),
        "lat_mean_ms": s["lat_ns"]["mean"] / 1e6,
        "clat_p50_ms": p("50.000000"),
        "clat_p99_ms": p("99.000000"),
        "clat_p999_ms": p("99.900000"),
        "clat_max_ms": s["clat_ns"]["max"] / 1e6,
        "fio_cpu_pct": job["usr_cpu"] + job["sys_cpu"],
        "runtime_s": s["runtime"] / 1000,
        "total_ios": s["total_ios"],
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def collect(results):
    """{target: {job: aggregated metrics}} with the median over rounds."""
    table = {}
    for target in sorted(os.listdir(results)):
        tdir = os.path.join(results, target)
        if not os.path.isdir(tdir) or target.startswith("."):
            continue
        for job, *_ in JOBS:
            rounds = []
            for name in sorted(os.listdir(tdir)):
                m = re.fullmatch(re.escape(job) + r"\.r(\d+)\.json", name)
                if not m:
                    continue
                metrics = fio_metrics(os.path.join(tdir, name))
                base = os.path.join(tdir, f"{job}.r{m.group(1)}")
                if os.path.exists(base + ".cpu.json"):
                    with open(base + ".cpu.json") as f:
                        delta = cpu_delta(json.load(f))
                    if delta:
                        if delta["server_cores"] is not None:
                            metrics["server_cores"] = delta["server_cores"]
                            metrics["server_groups"] = delta["server_groups"]
                            metrics["server_threads"] = delta["server_threads"][:12]
                        if delta["machine_busy"] is not None:
                            fio_cores = metrics["fio_cpu_pct"] / 100
                            metrics["other_cores"] = max(
                                0.0, delta["machine_busy"] - (delta["server_cores"] or 0.0) - fio_cores)
                if os.path.exists(base + ".flush"):
                    with open(base + ".flush") as f:
                        metrics["flush_s"] = float(f.read().strip() or "nan")
                rounds.append(metrics)
            if not rounds:
                continue
            agg = {k: median([r.get(k) for r in rounds]) for k in rounds[0] if not k.startswith("server_") or k == "server_cores"}
            agg["server_cores"] = median([r.get("server_cores") for r in rounds])
            agg["server_us_per_io"] = median(
                [r["server_cores"] * 1e6 / r["iops"] for r in rounds if r.get("server_cores") is not None and r["iops"] > 0])
            agg["rounds"] = len(rounds)
            agg["iops_min"] = min(r["iops"] for r in rounds)
            agg["iops_max"] = max(r["iops"] for r in rounds)
            if "server_groups" in rounds[0]:
                groups = {}
                for g in rounds[0]["server_groups"]:
                    groups[g] = median([r.get("server_groups", {}).get(g) for r in rounds])
                agg["server_groups"] = groups
                agg["server_threads_r1"] = rounds[0]["server_threads"]
            agg["flush_s"] = median([r.get("flush_s") for r in rounds])
            agg["other_cores"] = median([r.get("other_cores") for r in rounds])
            table.setdefault(target, {})[job] = agg
    return table


def fmt(v, spec):
    if v is None:
        width = re.match(r"[<>^]?(\d*)", spec).group(1)
        return "-".rjust(int(width)) if width else "-"
    return format(v, spec)


def report(results):
    table = collect(results)
    meta = {}
    if os.path.exists(os.path.join(results, "meta.json")):
        with open(os.path.join(results, "meta.json")) as f:
            meta = json.load(f)
    targets = [t for t in TARGET_ORDER if t in table] + sorted(t for t in table if t not in TARGET_ORDER)
    out = []
    w = out.append
    rounds = max((a["rounds"] for t in table.values() for a in t.values()), default=0)
    w(f"Results: {results}")
    if meta:
        w(
            f"size={meta.get('size')} runtime={meta.get('runtime')}s ramp={meta.get('ramp')}s "
            f"numjobs={meta.get('numjobs')} rounds={meta.get('rounds')} chunk={meta.get('chunk_size') or 'default'} "
            f"write_fsync={meta.get('write_fsync')} drop_caches={meta.get('drop_caches')}"
        )
    if rounds > 1:
        w(f"Values are medians over {rounds} rounds; 'range' is the min..max IOPS over rounds.")
    w("")
    header = (
        f"{'job':<21} {'target':<25} {'IOPS':>9} {'MiB/s':>8} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99.9 ms':>8} {'max ms':>8} {'srv CPU':>7} {'us/IO':>6} {'fio CPU':>7} {'other':>6} {'flush s':>7}"
    )
    if rounds > 1:
        header += f" {'IOPS range':>17}"
    w(header)
    w("-" * len(header))
    for job, *_ in JOBS:
        for t in targets:
            a = table[t].get(job)
            if not a:
                continue
            line = (
                f"{job:<21} {TARGET_LABEL.get(t, t):<25} {a['iops']:>9.0f} {a['mibps']:>8.1f} "
                f"{fmt(a['lat_mean_ms'], '>8.3f')} {fmt(a['clat_p50_ms'], '>7.3f')} {fmt(a['clat_p99_ms'], '>7.3f')} "
                f"{fmt(a['clat_p999_ms'], '>8.3f')} {fmt(a['clat_max_ms'], '>8.1f')} "
                f"{fmt(a.get('server_cores'), '>7.2f')} {fmt(a.get('server_us_per_io'), '>6.1f')} {a['fio_cpu_pct'] / 100:>7.2f} {fmt(a.get('other_cores'), '>6.2f')} "
                f"{fmt(a.get('flush_s'), '>7.2f')}"
            )
            if rounds > 1:
                line += f" {a['iops_min']:>8.0f}..{a['iops_max']:<8.0f}"
            w(line)
        w("")
    w("srv CPU / fio CPU / other: cores used by the server process / by fio / by everything else on the")
    w("machine (other engineers' builds and tests: the noise) over the job incl. ramp, out of {} cores.".format(os.cpu_count()))
    w("us/IO: server CPU microseconds per request (srv CPU / IOPS).")
    w("flush s: time of one NBD FLUSH (fsync for raw file) sent right after the write job (not in IOPS).")
    w("")

    # Ratios and goals.
    ratios = {}
    cols = [("qemu-nbd", "cairn/qemu-nbd"), ("qemu-nbd-wb", "cairn/qemu-wb"), ("nbdkit-mem", "cairn/nbdkit-mem"),
            ("raw-file", "cairn/raw-file")]
    cols = [c for c in cols if c[0] in table]
    for cairn in [t for t in CAIRN_TARGETS if t in table and cols]:
        header = f"{'job':<21} " + " ".join(f"{label:>16}" for _, label in cols) + f" {'goal':>6}  met?"
        w(f"Ratios of {TARGET_LABEL[cairn]} (IOPS of Cairn / IOPS of the reference; same as the MiB/s ratio at equal block size)")
        w(header)
        w("-" * len(header))
        for job, *_ in JOBS:
            c = table[cairn].get(job)
            if not c:
                continue
            row = {}
            cells = []
            for t, label in cols:
                ref = table[t].get(job)
                r = c["iops"] / ref["iops"] if ref and ref["iops"] > 0 else None
                row[t] = r
                cells.append(f"{fmt(r, '>15.2f')}x" if r is not None else f"{'-':>16}")
            goal = GOALS[job]
            q = row.get("qemu-nbd")
            met = "-" if q is None else ("YES" if q >= goal else "NO")
            ratios.setdefault(cairn, {})[job] = {"ratios": row, "goal": goal, "met": None if q is None else q >= goal}
            w(f"{job:<21} " + " ".join(cells) + f" {goal:>5.1f}x  {met}")
        w("")
        w("")
    if ratios:
        w("Goal: Cairn >= 1.5x qemu-nbd (--cache=none --aio=native) on 4 KiB random I/O, >= 1.0x on sequential.")
        w("")
    if "cairn" in table:
        # Where Cairn's CPU goes.
        w("Cairn server CPU by thread class (cores, median over rounds):")
        for job, *_ in JOBS:
            a = table["cairn"].get(job)
            if not a or "server_groups" not in a:
                continue
            groups = sorted(a["server_groups"].items(), key=lambda kv: -(kv[1] or 0))
            w(f"  {job:<21} total {fmt(a.get('server_cores'), '.2f')}: " +
              ", ".join(f"{g} {v:.2f}" for g, v in groups if v and v >= 0.005))
        w("  (Busiest threads in round 1:)")
        for job, *_ in JOBS:
            a = table["cairn"].get(job)
            if a and a.get("server_threads_r1"):
                w(f"  {job:<21} " + ", ".join(f"{tid}:{comm} {c:.2f}" for tid, comm, c in a["server_threads_r1"][:10] if c >= 0.005))
        w("")

    text = "\n".join(out)
    print(text)
    with open(os.path.join(results, "table.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(results, "summary.json"), "w") as f:
        json.dump({"meta": meta, "results": table, "ratios": ratios}, f, indent=2, default=str)



# --------------------------------------------------------------------------- perf


def perf_summary(path):
    """Summarizes `perf script` output (demangled) of the Cairn daemon by thread role.

    A thread's role comes from its stacks: IOExecutor.workerLoop -> I/O executor, SelectableEventLoop.run ->
    NIO event loop (by stack rather than by name, so that it also reads profiles of older builds whose
    I/O threads were unnamed)."""
    header = re.compile(r"^(\S.*?)\s+(\d+)\s+[\d.]+:\s+\d+\s+\S+:")
    frame = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$")
    samples = []  # (tid, comm, [(addr, sym, dso)] leaf first)
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            m = header.match(line)
            if m:
                cur = (m.group(2), m.group(1), [])
                samples.append(cur)
                continue
            m = frame.match(line)
            if m and cur is not None:
                cur[2].append((m.group(1), m.group(2), os.path.basename(m.group(3))))
    if not samples:
        print("no samples")
        return
    roles = {}
    for tid, comm, stack in samples:
        syms = " ".join(s for _, s, _ in stack)
        if "IOExecutor.workerLoop" in syms:
            roles[tid] = "I/O executor"
        elif "SelectableEventLoop.run" in syms and tid not in roles:
            roles[tid] = "NIO event loop"
    by_role = {}
    for tid, comm, stack in samples:
        by_role.setdefault(roles.get(tid, f"other ({comm})"), []).append((tid, stack))
    total = len(samples)
    print(f"{total} samples (cpu-clock); share of the daemon's CPU by thread role:")
    for role, ss in sorted(by_role.items(), key=lambda kv: -len(kv[1])):
        print(f"  {role:<28} {100 * len(ss) / total:5.1f}%  ({len({t for t, _ in ss})} threads)")

    def cat(stack):
        leaf = stack[0] if stack else ("", "?", "?")
        names = [s for _, s, _ in stack]
        joined = " ".join(names)
        kernel = leaf[0].startswith("ffff")
        if "futex" in joined or "schedule" in leaf[1] or "finish_task_switch" in leaf[1]:
            return "wait/wake-up (futex, scheduler)"
        if any(k in joined for k in ("pread", "pwrite", "fdatasync", "copy_file_range", "fallocate")):
            return "file I/O syscalls"
        if any(k in joined for k in ("sendmsg", "recvmsg", "tcp_", "sock_", "writev", "readv", "__x64_sys_write",
                                     "__x64_sys_read", "epoll", "eventfd")):
            return "network / epoll / eventfd syscalls"
        if kernel:
            return "other kernel"
        if any(k in leaf[1] for k in ("swift_retain", "swift_release", "swift_bridgeObjectRetain",
                                      "swift_bridgeObjectRelease", "swift_allocObject", "swift_deallocObject",
                                      "malloc", "free", "_int_malloc", "_int_free", "cfree")):
            return "allocation and refcounting (malloc, retain/release)"
        if "Monitor.withLock" in joined or "pthread_mutex" in joined:
            return "user code under pool/executor locks"
        return "other user code"

    for role, ss in sorted(by_role.items(), key=lambda kv: -len(kv[1])):
        n = len(ss)
        print(f"\n== {role}: {n} samples ({100 * n / total:.1f}% of the daemon)")
        cats = {}
        leaves = {}
        incl = {}
        for _, stack in ss:
            c = cat(stack)
            cats[c] = cats.get(c, 0) + 1
            if stack:
                key = f"{stack[0][1]}  [{stack[0][2]}]"
                leaves[key] = leaves.get(key, 0) + 1
            for sym in {s for _, s, _ in stack}:
                incl[sym] = incl.get(sym, 0) + 1
        print("  by category (% of this role):")
        for c, k in sorted(cats.items(), key=lambda kv: -kv[1]):
            print(f"    {100 * k / n:5.1f}%  {c}")
        print("  top self (leaf) symbols:")
        for sym, k in sorted(leaves.items(), key=lambda kv: -kv[1])[:15]:
            print(f"    {100 * k / n:5.1f}%  {sym[:150]}")
        print("  top inclusive frames (samples with the frame on the stack):")
        skip = ("start_thread", "thunk for", "partial apply", "entry_SYSCALL", "do_syscall_64", "closure #1 in static",
                "ThreadOpsPosix", "setupThreadAndEventLoop")
        shown = 0
        for sym, k in sorted(incl.items(), key=lambda kv: -kv[1]):
            if any(x in sym for x in skip):
                continue
            print(f"    {100 * k / n:5.1f}%  {sym[:150]}")
            shown += 1
            if shown >= 25:
                break


def main(argv):
    if len(argv) == 3 and argv[1] == "snapshot":
        json.dump(snapshot(int(argv[2])), sys.stdout)
        print()
    elif len(argv) == 3 and argv[1] == "brief":
        m = fio_metrics(argv[2])
        print(f"{m['iops']:.0f} IOPS, {m['mibps']:.1f} MiB/s, p99 {m['clat_p99_ms']:.2f} ms")
    elif len(argv) == 3 and argv[1] == "perf":
        perf_summary(argv[2])
    elif len(argv) == 3 and argv[1] == "report":
        report(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
