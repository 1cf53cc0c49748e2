#!/usr/bin/python3
"""A/B: several ternd builds under the same load, interleaved, Tern only.

What it is: the tool behind the "measured effect" of a change to ternd:
each round starts every given build in turn on a fresh queue and mail
directory, runs a warm-up and the load shape(s), stops it, and goes on to
the next build; rounds alternate the order, so slow drift of a shared
machine (other jobs, page cache, the filesystem's state) falls on every
build alike. Standard library only; uses bench.py's Tern and load driver.

Usage (as root, like bench.py):
  bench/ab.py --build NAME=/path/to/ternd [--build NAME2=...?key=value] \\
      [--shapes s10_m1,s50_m1] [--msgs 3000] [--rounds 5] [--json out.json]

Output: per build and shape, accepted msg/s, end-to-end s and CPU s per
1,000 messages as median (min-max) over the rounds; the raw runs in
--json. ternctl is taken from beside each ternd. --syscalls runs ternd
under `perf stat` and adds, per message (warm-up included), the file
system calls and ext4 events that cost the kernel time: fsync,
fdatasync, openat, renameat2, unlinkat, ftruncate, inodes allocated and
freed, discards. Those counts do not depend on the machine's load.

What it trusts: the binaries it is given. Every process it starts is
stopped and its directory removed (bench.py's cleanup).
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


EVENTS = ["syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync",
          "syscalls:sys_enter_openat", "syscalls:sys_enter_renameat2",
          "syscalls:sys_enter_rename", "syscalls:sys_enter_unlinkat",
          "syscalls:sys_enter_unlink", "syscalls:sys_enter_ftruncate",
          "ext4:ext4_allocate_inode", "ext4:ext4_free_inode",
          "ext4:ext4_discard_blocks"]


def perf_counts(path, msgs):
    """perf_counts - perf stat -x, output: event -> count per message."""
    out = {e: 0.0 for e in EVENTS}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2] in out and parts[0].isdigit():
                out[parts[2]] = int(parts[0]) / msgs
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="append", required=True,
                    help="NAME=/path/to/ternd (ternctl beside it), optionally "
                         "followed by ?key=value&key=value: ternd options of this build only")
    ap.add_argument("--shapes", default="s10_m1")
    ap.add_argument("--msgs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--opt", action="append", default=[],
                    help="extra ternd -o key=value for every build")
    ap.add_argument("--json")
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--tmp", default="/var/tmp")
    ap.add_argument("--keep", action="store_true",
                    help="leave the run directories (no inodes freed for the next run to scan past "
                         "on ext4 without a journal; remove them yourself later)")
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("ab: run as root")
    builds, build_opts = [], {}
    for b in args.build:
        name, _, path = b.partition("=")
        path, _, extra = path.partition("?")
        build_opts[name] = [kv for kv in extra.split("&") if kv]
        builds.append((name, path, os.path.join(os.path.dirname(path), "ternctl")))
    shapes = [sh for sh in bench.SHAPES_ALL if bench.shape_key(*sh) in args.shapes.split(",")]
    signal.signal(signal.SIGTERM, bench.on_signal)
    signal.signal(signal.SIGHUP, bench.on_signal)
    bench.settle(args.tmp)
    base = tempfile.mkdtemp(prefix="tern-ab-", dir=args.tmp)
    if args.keep:
        bench.log("keeping %s" % base)
    else:
        bench.CLEANUPS.append(("dir", base))
    runs = {(b[0], bench.shape_key(*sh)): [] for b in builds for sh in shapes}
    counts = {b[0]: [] for b in builds}
    try:
        for rnd in range(args.rounds):
            order = builds if rnd % 2 == 0 else list(reversed(builds))
            for name, ternd, ternctl in order:
                d = os.path.join(base, "%s-%d" % (name, rnd))
                os.makedirs(d)
                t = bench.Tern(d, ternd, ternctl, ["u%d" % i for i in range(1, 20)])
                for kv in args.opt + build_opts[name]:
                    t.opts += ["-o", kv]
                runner = bench.Runner(args)
                stat_out = os.path.join(base, "perfstat-%s-%d" % (name, rnd))
                t.start(wrap=["perf", "stat", "-x", ",", "-o", stat_out,
                              "-e", ",".join(EVENTS), "--"] if args.syscalls else None)
                total = 200 + args.msgs * len(shapes)
                try:
                    runner.load_run(t, 10, 1, 200)
                    for sh in shapes:
                        x = runner.load_run(t, sh[0], sh[1], args.msgs)
                        runs[(name, bench.shape_key(*sh))].append(x)
                        bench.log("round %d %s %s: %.0f msg/s, e2e %.2fs, %.2f CPU s/1000"
                                  % (rnd + 1, name, bench.shape_key(*sh), x["accept_rate"],
                                     x["e2e_s"], x["cpu_per_1000"]))
                finally:
                    if args.syscalls:
                        bench.kill_tree([t.root], signal.SIGTERM)
                        t.proc.wait(timeout=60)
                        counts[name].append(perf_counts(stat_out, total))
                    t.stop()
                    bench.CLEANUPS.remove(("proc", t.proc))
                    # Why: not removed until the end (bench.cleanup): on ext4
                    # without a journal every inode freed makes the next
                    # allocations in its group scan past it for minutes
                    # (recently_deleted), which would slow the next build
                    time.sleep(1)
        print("| build | shape | accepted msg/s | end to end s | CPU s / 1,000 msgs |")
        print("| --- | --- | --- | --- | --- |")
        out = {}
        for (name, key), xs in runs.items():
            s = {k: bench.summarize([x[k] for x in xs]) for k in ("accept_rate", "e2e_s", "cpu_per_1000")}
            out.setdefault(name, {})[key] = s
            print("| %s | %s | %s | %s | %s |" % (name, key, bench.cell(s["accept_rate"]),
                                                  bench.cell(s["e2e_s"], nd=2),
                                                  bench.cell(s["cpu_per_1000"], nd=2)))
        if args.syscalls:
            print()
            print("| build | " + " | ".join(e.split(":")[1].replace("sys_enter_", "") for e in EVENTS)
                  + " |  (per message)")
            print("| --- |" + " --- |" * len(EVENTS))
            for name, cs in counts.items():
                med = {e: statistics.median(c[e] for c in cs) for e in EVENTS}
                out.setdefault(name, {})["per_msg"] = med
                print("| %s | " % name + " | ".join("%.2f" % med[e] for e in EVENTS) + " |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"builds": {b[0]: b[1] for b in builds}, "msgs": args.msgs,
                           "rounds": args.rounds, "opts": args.opt,
                           "loadavg_end": os.getloadavg(), "results": out,
                           "runs": {"%s/%s" % k: v for k, v in runs.items()},
                           "counts": counts}, f, indent=1)
        return 0
    finally:
        bench.cleanup()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        bench.log("interrupted (%s)" % e)
        sys.exit(130)
