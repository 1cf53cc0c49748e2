#!/usr/bin/python3
"""10,000 concurrent idle connections held by one ternd.

What it is: `make bench` runs it after bench.py (bench/bench.sh; also on
its own: bench/conns.py --ternd build/ternd --ternctl build/ternctl). It
raises RLIMIT_NOFILE (its own and ternd's, which inherits it), starts one
ternd (bench.py's Tern: loopback, private directories, max_connections
20,000), then from this one process opens --conns connections with
non-blocking sockets and a selector (epoll), in waves of --wave, reading
each 220 greeting, and holds them all idle. Standard library only.

What it measures:
  - seconds until every connection was greeted,
  - ternd's resident memory (RSS, PSS, from /proc smaps_rollup) at rest,
    with all connections held, and after they are closed again; the
    difference per connection,
  - the kernel's memory for them: slab caches of TCP sockets, socket
    inodes, open files and epoll items (/proc/slabinfo, machine-wide, both
    ends since client and server are on this machine), and ternd's open
    descriptors,
  - a second round (close all, open them again): ternd's RSS then is the
    steady state, once freed buffers have been touched and kept by malloc,
  - ternd's CPU time while the connections sit idle (--hold seconds),
  - one full SMTP transaction (greeting to 250 after DATA) on a new
    connection while all of them are held,
  - that ternd still holds every connection at the end (none dropped).

Output: a markdown table appended to bench/results/latest.md (unless
--no-md) and bench/results/conns-<timestamp>.json.

What it trusts: the ternd given. Everything it starts is stopped and its
directory removed on exit (bench.py's cleanup).
"""

import argparse
import datetime
import json
import os
import resource
import selectors
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


SLABS = ("TCP", "sock_inode_cache", "filp", "eventpoll_epi")


def slab_bytes():
    """slab_bytes - bytes in use in the slab caches a connection costs the
    kernel (TCP socket, socket inode, open file, epoll item), machine-wide;
    None when /proc/slabinfo is not readable."""
    total = 0
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in SLABS:
                    total += int(p[1]) * int(p[3])
    except OSError:
        return None
    return total


def fd_count(pid):
    """fd_count - open descriptors of a process."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def open_idle(port, count, wave, timeout):
    """open_idle - count greeted, idle connections; (sockets, seconds)."""
    sel = selectors.DefaultSelector()
    socks = []
    t0 = time.monotonic()
    deadline = t0 + timeout
    while len(socks) < count:
        pending = {}
        for _ in range(min(wave, count - len(socks))):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError("%d connections not greeted after %ds (%d held)"
                                   % (len(pending), timeout, len(socks)))
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(512)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise RuntimeError("connection %d: %s" % (len(socks), e))
                if not data:
                    raise RuntimeError("connection %d closed before its greeting"
                                       % len(socks))
                pending[s] += data
                if b"\n" in pending[s]:
                    if not pending[s].startswith(b"220"):
                        raise RuntimeError("greeting: %r" % pending[s][:80])
                    del pending[s]
                    sel.unregister(s)
                    socks.append(s)
    sel.close()
    return socks, time.monotonic() - t0


def still_open(socks):
    """still_open - how many of the sockets the server has not closed."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0.5):
        try:
            if key.fileobj.recv(512, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    sel.close()
    return len(socks) - closed


def one_transaction(port):
    """one_transaction - (s to greeting, s to the 250 after DATA) on a new
    connection, with a plain blocking socket."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line[3:4] != b"-":
                return line

    if not reply().startswith(b"220"):
        raise RuntimeError("no greeting")
    t_greet = time.monotonic() - t0
    for cmd, want in ((b"EHLO conns.bench.test", b"250"),
                      (b"MAIL FROM:<sender@%s>" % bench.DOMAIN.encode(), b"250"),
                      (b"RCPT TO:<u1@%s>" % bench.DOMAIN.encode(), b"250"),
                      (b"DATA", b"354")):
        s.sendall(cmd + b"\r\n")
        r = reply()
        if not r.startswith(want):
            raise RuntimeError("%s: %r" % (cmd, r))
    s.sendall(b"Subject: conns\r\n\r\nhello\r\n.\r\n")
    r = reply()
    if not r.startswith(b"250"):
        raise RuntimeError("end of data: %r" % r)
    t_250 = time.monotonic() - t0
    s.sendall(b"QUIT\r\n")
    s.close()
    return t_greet, t_250


def cpu_s(pid):
    st = bench.proc_stat(pid)
    return (int(st[11]) + int(st[12])) / bench.CLK_TCK if st else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ternd", required=True)
    ap.add_argument("--ternctl", required=True)
    ap.add_argument("--conns", type=int, default=int(os.environ.get("BENCH_CONNS", 10000)))
    ap.add_argument("--wave", type=int, default=500,
                    help="connections opened at once (the listen backlog is 1024)")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to sit idle")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--tmp", default=os.environ.get("BENCH_TMP", "/var/tmp"))
    ap.add_argument("--no-md", action="store_true")
    args = ap.parse_args()

    # each end needs one descriptor per connection: ours here, ternd's
    # (which inherits the limit and raises its soft limit to the hard one)
    want = args.conns + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError) as e:
            sys.exit("conns: cannot raise RLIMIT_NOFILE to %d (hard limit %d: %s)" % (want, hard, e))
    signal.signal(signal.SIGTERM, bench.on_signal)
    signal.signal(signal.SIGHUP, bench.on_signal)
    base = tempfile.mkdtemp(prefix="tern-conns-", dir=args.tmp)
    bench.CLEANUPS.append(("dir", base))
    os.chmod(base, 0o755)
    out = {"conns": args.conns, "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
           "machine": bench.machine(base)}
    socks = []
    try:
        t = bench.Tern(base, args.ternd, args.ternctl, ["u1"])
        t.start()
        time.sleep(1)
        pid = t.root
        rest = bench.tree_mem(pid)
        slab0 = slab_bytes()
        fds0 = fd_count(pid)
        bench.log("ternd at rest: RSS %d KiB, %d fds; opening %d connections"
                  % (rest[0], fds0, args.conns))
        socks, greet_s = open_idle(t.port, args.conns, args.wave, args.timeout)
        bench.log("%d connections greeted in %.2fs" % (len(socks), greet_s))
        time.sleep(1)
        cpu0 = cpu_s(pid)
        held = bench.tree_mem(pid)
        slab1 = slab_bytes()
        fds1 = fd_count(pid)
        time.sleep(args.hold)
        idle_cpu = cpu_s(pid) - cpu0
        t_greet, t_250 = one_transaction(t.port)
        alive = still_open(socks)
        bench.log("held: RSS %d KiB, PSS %d KiB, %d fds, idle CPU %.2fs over %.0fs; "
                  "a new transaction: greeting %.1f ms, 250 %.1f ms; %d of %d still open"
                  % (held[0], held[1], fds1, idle_cpu, args.hold, t_greet * 1000,
                     t_250 * 1000, alive, len(socks)))
        for s in socks:
            s.close()
        socks = []
        time.sleep(3)
        after = bench.tree_mem(pid)
        fds2 = fd_count(pid)
        # the second round: what holding them costs once malloc has its pool
        socks, greet2_s = open_idle(t.port, args.conns, args.wave, args.timeout)
        time.sleep(1)
        held2 = bench.tree_mem(pid)
        for s in socks:
            s.close()
        socks = []
        bench.log("second round: greeted in %.2fs, RSS %d KiB" % (greet2_s, held2[0]))
        out.update({
            "greet_all_s": greet_s,
            "rss_rest_kib": rest[0], "pss_rest_kib": rest[1],
            "rss_held_kib": held[0], "pss_held_kib": held[1],
            "rss_after_kib": after[0], "pss_after_kib": after[1],
            "rss_per_conn_bytes": (held[0] - rest[0]) * 1024 / args.conns,
            "pss_per_conn_bytes": (held[1] - rest[1]) * 1024 / args.conns,
            "rss_held2_kib": held2[0], "pss_held2_kib": held2[1], "greet2_s": greet2_s,
            "rss_per_conn_steady_bytes": (held2[0] - rest[0]) * 1024 / args.conns,
            "slab_per_conn_both_ends_bytes":
                (slab1 - slab0) / args.conns if slab0 is not None else None,
            "fds_rest": fds0, "fds_held": fds1, "fds_after": fds2,
            "idle_cpu_s": idle_cpu, "hold_s": args.hold,
            "new_session_greeting_ms": t_greet * 1000, "new_session_250_ms": t_250 * 1000,
            "still_open": alive,
        })
        t.stop()
    finally:
        for s in socks:
            s.close()
        bench.cleanup()

    n = args.conns
    rows = [
        "| figure | Tern |", "| --- | --- |",
        "| connections held idle by one ternd | %s (all %sstill open after %.0f s idle) |"
        % (bench.fmt(n), "" if out["still_open"] == n else "NOT ", out["hold_s"]),
        "| s until all %s were greeted (waves of %d) | %.2f |" % (bench.fmt(n), args.wave, out["greet_all_s"]),
        "| ternd RSS at rest / holding them / after closing / holding them again, MiB "
        "| %.1f / %.1f / %.1f / %.1f |"
        % (out["rss_rest_kib"] / 1024, out["rss_held_kib"] / 1024, out["rss_after_kib"] / 1024,
           out["rss_held2_kib"] / 1024),
        "| ternd memory per idle connection: first round (RSS, PSS); steady state (RSS) "
        "| %s B, %s B; %s B |"
        % (bench.fmt(out["rss_per_conn_bytes"]), bench.fmt(out["pss_per_conn_bytes"]),
           bench.fmt(out["rss_per_conn_steady_bytes"])),
        "| kernel slab per connection, both ends (TCP, socket inode, file, epoll item) | %s |"
        % ("%s B" % bench.fmt(out["slab_per_conn_both_ends_bytes"])
           if out["slab_per_conn_both_ends_bytes"] is not None else "n/a"),
        "| ternd descriptors at rest / held / after | %d / %d / %d |"
        % (out["fds_rest"], out["fds_held"], out["fds_after"]),
        "| ternd CPU while they sit idle | %.2f s in %.0f s |" % (out["idle_cpu_s"], out["hold_s"]),
        "| a new session meanwhile: greeting / 250 after DATA | %.1f ms / %.1f ms |"
        % (out["new_session_greeting_ms"], out["new_session_250_ms"]),
    ]
    md = ("\n%s idle connections (bench/conns.py, %s, RLIMIT_NOFILE %d):\n\n%s\n"
          % (bench.fmt(n), datetime.date.today().isoformat(), out["rlimit_nofile"], "\n".join(rows)))
    out["table_md"] = md
    ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(bench.RESULTS, exist_ok=True)
    with open(os.path.join(bench.RESULTS, "conns-%s.json" % ts), "w") as f:
        json.dump(out, f, indent=1)
    if not args.no_md:
        with open(os.path.join(bench.RESULTS, "latest.md"), "a") as f:
            f.write(md)
    print(md)
    return 0 if out["still_open"] == n else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        bench.log("interrupted (%s)" % e)
        sys.exit(130)
