#!/usr/bin/python3
"""Tern beside Postfix: the same SMTP load, the same machine, one after the other.

What it is: the driver behind `make bench` (bench/bench.sh builds the
optimised ternd first and calls this). Standard library only.

What it measures, for each server (Tern, then Postfix), on loopback, for a
local domain, durable queue and Maildir delivery of every message:
  - accepted messages per second (wall time of smtp-source),
  - end to end: time until the last message is a file in its Maildir new/,
  - CPU seconds per 1,000 messages (utime+stime of every server process,
    from /proc, before the load and after the queue is empty again),
  - resident memory at rest and with 1,000 idle connections (sum of RSS,
    and of PSS, over the server's process tree),
and two ceilings: the same load into Postfix's smtp-sink (no disk) and the
fdatasync rate of the filesystem holding the queues.

Output: a markdown table on stdout and in bench/results/latest.md, and the
same figures with the machine's description in bench/results/<ts>.json.

What it trusts: the binaries it is given (ternd, ternctl, postfix,
smtp-source, smtp-sink). Every process it starts is stopped and the
temporary directory removed on exit, also on failure or SIGINT/SIGTERM.

Options: see --help. `--profile` runs ternd under `perf record` for the
10-session load instead of the comparison.
"""

import argparse
import datetime
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
DOMAIN = "bench.test"
MSG_LEN = 4096
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Every process and directory to undo on the way out, newest last.
CLEANUPS = []


def log(msg):
    """log - one progress line on stderr."""
    print("bench: " + msg, file=sys.stderr, flush=True)


# --- /proc helpers -----------------------------------------------------------

def proc_stat(pid):
    """proc_stat - the fields of /proc/PID/stat after the comm, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def proc_tree(root):
    """proc_tree - root and all its descendants that are alive now."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if proc_stat(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(root):
    """tree_cpu - CPU seconds of the tree: live processes' utime+stime plus
    the root's cutime+cstime (the children it has already reaped, e.g.
    Postfix smtpd processes that reached max_use and exited)."""
    total = 0
    for pid in proc_tree(root):
        st = proc_stat(pid)
        if st is None:
            continue
        # fields after comm: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        total += int(st[11]) + int(st[12])
        if pid == root:
            total += int(st[13]) + int(st[14])
    return total / CLK_TCK


def tree_mem(root):
    """tree_mem - (sum of RSS, sum of PSS, process count) in KiB over the tree."""
    rss = pss = n = 0
    for pid in proc_tree(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except OSError:
            continue
    return rss, pss, n


def count_files(path):
    """count_files - entries in a directory (0 if it does not exist yet)."""
    try:
        with os.scandir(path) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def free_port():
    """free_port - a loopback TCP port nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=15.0):
    """wait_port - until something accepts on 127.0.0.1:port and greets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("nothing greets on port %d" % port)


def kill_tree(pids, sig=signal.SIGKILL):
    """kill_tree - signal each pid still alive (by id, never by name)."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# --- servers -----------------------------------------------------------------

class Tern:
    """Tern - ternd with a private mail, queue and run directory."""
    name = "tern"

    def __init__(self, base, ternd, ternctl, users):
        self.dir = os.path.join(base, "tern")
        self.ternd, self.ternctl = ternd, ternctl
        self.port = free_port()
        self.proc = None
        for d in ("mail", "queue", "run"):
            os.makedirs(os.path.join(self.dir, d))
        with open(os.path.join(self.dir, "users"), "w") as f:
            for u in users:
                f.write("%s@%s:{PLAIN}x\n" % (u, DOMAIN))
        self.opts = []
        for kv in ("smtp_listen=127.0.0.1:%d" % self.port,
                   "local_domains=" + DOMAIN, "hostname=tern." + DOMAIN,
                   "mail_dir=" + os.path.join(self.dir, "mail"),
                   "queue_dir=" + os.path.join(self.dir, "queue"),
                   "users_file=" + os.path.join(self.dir, "users"),
                   "control_socket=" + os.path.join(self.dir, "run/sock"),
                   "run_user=root", "allow_root=yes", "max_connections=20000",
                   "max_connections_per_ip=20000"):
            self.opts += ["-o", kv]

    def argv(self):
        """argv - the ternd command line (also used under perf)."""
        return [self.ternd, "-c", "/dev/null"] + self.opts

    def start(self, wrap=None):
        """start - ternd in the foreground as our child, log to a file."""
        logf = open(os.path.join(self.dir, "ternd.log"), "ab")
        argv = (wrap or []) + self.argv()
        # own session: Ctrl-C reaches the driver, which stops ternd in order
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        CLEANUPS.append(("proc", self.proc))
        wait_port(self.port)
        self.root = self.proc.pid
        if wrap:   # the server is perf's child
            for _ in range(50):
                kids = [p for p in proc_tree(self.proc.pid) if p != self.proc.pid]
                if kids:
                    self.root = kids[0]
                    break
                time.sleep(0.1)

    def maildir(self, user):
        return os.path.join(self.dir, "mail", DOMAIN, user, "new")

    def queue_size(self):
        return (count_files(os.path.join(self.dir, "queue", "msg")) +
                count_files(os.path.join(self.dir, "queue", "tmp")))

    def queue_listing(self):
        """queue_listing - ternctl's view of the queue (empty = all delivered)."""
        r = subprocess.run([self.ternctl, "-c", "/dev/null", "-o",
                            "control_socket=" + os.path.join(self.dir, "run/sock"),
                            "queue"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - 1100 smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# Postfix defaults are kept (fsync of the queue file in cleanup, of the
# Maildir file in virtual; in_flow_delay; process limits) except: no chroot,
# our own directories and port, the smtpd process limit raised to 1100 for
# the 1,000 idle connections, anvil's per-client limits off (one client
# address sends everything), a log file instead of syslog (Tern logs to a
# file too), and Maildir delivery through virtual(8).
POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
config_directory = {d}/etc
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{dom}
mydomain = {dom}
myorigin = {dom}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {dom}
virtual_mailbox_base = {d}/vmail
virtual_mailbox_maps = texthash:{d}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
biff = no
"""


class Postfix:
    """Postfix - Debian's postfix, private config, queue, data and mail dirs."""
    name = "postfix"

    def __init__(self, base, users):
        self.dir = os.path.join(base, "postfix")
        self.port = free_port()
        self.root = None
        self.seen = set()
        pw_uid, pw_gid = 65534, 65534  # nobody: virtual(8) needs uid >= 100
        for d in ("etc", "queue", "data", "vmail"):
            os.makedirs(os.path.join(self.dir, d))
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        os.chown(os.path.join(self.dir, "vmail"), pw_uid, pw_gid)
        etc = os.path.join(self.dir, "etc")
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN_CF.format(d=self.dir, dom=DOMAIN,
                                           uid=pw_uid, gid=pw_gid))
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(port=self.port))
        with open(os.path.join(etc, "vmailbox"), "w") as f:
            for u in users:   # trailing slash: Maildir
                f.write("%s@%s %s/%s/\n" % (u, DOMAIN, DOMAIN, u))

    def postfix(self, verb):
        subprocess.run([POSTFIX, "-c", os.path.join(self.dir, "etc"), verb],
                       check=True, capture_output=True, timeout=60)

    def start(self, wrap=None):
        CLEANUPS.append(("postfix", self))
        self.postfix("start")
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        for _ in range(100):
            try:
                with open(pidfile) as f:
                    self.root = int(f.read().split()[0])
                break
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if self.root is None:
            raise RuntimeError("postfix master did not start")
        wait_port(self.port)

    def maildir(self, user):
        return os.path.join(self.dir, "vmail", DOMAIN, user, "new")

    def queue_size(self):
        q = os.path.join(self.dir, "queue")
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _dp, _dn, files in os.walk(os.path.join(q, sub)):
                n += len(files)
        return n

    def queue_listing(self):
        return "" if self.queue_size() == 0 else "%d files" % self.queue_size()

    def remember(self):
        """remember - note every process of the tree, to kill what stop leaves."""
        if self.root:
            self.seen.update(proc_tree(self.root))

    def stop(self):
        if self.root is None:
            return
        self.remember()
        try:
            self.postfix("stop")
        except (subprocess.SubprocessError, OSError) as e:
            log("postfix stop: %s" % e)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc_stat(self.root) is not None:
            time.sleep(0.1)
        # Why: master's children (smtpd, postlogd...) exit on their own once
        # the master has gone; anything still here after a grace time is ours.
        time.sleep(0.5)
        left = []
        for pid in self.seen:
            try:
                if os.readlink("/proc/%d/exe" % pid).startswith("/usr/lib/postfix/"):
                    left.append(pid)
            except OSError:
                pass
        kill_tree(left)
        self.root = None


class Sink:
    """Sink - Postfix's smtp-sink: accepts and discards (the protocol ceiling)."""
    name = "smtp-sink"

    def __init__(self):
        self.port = free_port()
        self.proc = None

    def start(self, wrap=None):
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody",
                                      "127.0.0.1:%d" % self.port,
                                      "1024"], stdin=subprocess.DEVNULL,
                                     start_new_session=True,
                                     stdout=subprocess.DEVNULL)
        CLEANUPS.append(("proc", self.proc))
        wait_port(self.port)
        self.root = self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- load ---------------------------------------------------------------------

def smtp_source(port, sessions, msgs, per_conn, rcpt):
    """smtp_source - run the load; return wall seconds.

    per_conn == 1: one smtp-source with -s sessions (a new connection per
    message). per_conn > 1: smtp-source has no "N messages then reconnect",
    so `sessions` lanes each run `smtp-source -s 1 -d -m per_conn` one after
    the other: every connection carries exactly per_conn messages."""
    base = [SMTP_SOURCE, "-l", str(MSG_LEN), "-f", "sender@" + DOMAIN,
            "-t", "%s@%s" % (rcpt, DOMAIN), "-M", "client." + DOMAIN]
    target = "127.0.0.1:%d" % port
    errors = []
    t0 = time.monotonic()
    if per_conn == 1:
        r = subprocess.run(base + ["-s", str(sessions), "-m", str(msgs), target],
                           capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(r.stderr.strip())
    else:
        conns = msgs // per_conn
        lanes = [conns // sessions + (1 if i < conns % sessions else 0)
                 for i in range(sessions)]

        def lane(n):
            for _ in range(n):
                r = subprocess.run(base + ["-d", "-s", "1", "-m", str(per_conn),
                                           target], capture_output=True, text=True)
                if r.returncode != 0:
                    errors.append(r.stderr.strip())
                    return
        ts = [threading.Thread(target=lane, args=(n,)) for n in lanes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    wall = time.monotonic() - t0
    if errors:
        raise RuntimeError("smtp-source: " + errors[0][:500])
    return wall


def wait_delivered(srv, user, want, t0, timeout):
    """wait_delivered - poll new/ until `want` files; seconds since t0."""
    path = srv.maildir(user)
    deadline = time.monotonic() + timeout
    while True:
        n = count_files(path)
        if n >= want:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise RuntimeError("%s: %d of %d messages in %s after %ds"
                               % (srv.name, n, want, path, timeout))
        time.sleep(0.01)


def wait_queue_empty(srv, timeout=120):
    """wait_queue_empty - until the server's queue holds nothing."""
    deadline = time.monotonic() + timeout
    while srv.queue_size() > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("%s: queue not empty after %ds" % (srv.name, timeout))
        time.sleep(0.02)


def idle_connections(port, count, hold):
    """idle_connections - open `count` connections, read each greeting, idle.

    Returns (sockets, seconds until all greeted); the caller closes them."""
    sel = selectors.DefaultSelector()
    socks, pending = [], {}
    t0 = time.monotonic()
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = t0 + hold
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(512)
            except OSError:
                data = b""
            if not data:
                raise RuntimeError("connection closed before its greeting")
            pending[s] += data
            if b"\n" in pending[s]:
                if not pending[s].startswith(b"220"):
                    raise RuntimeError("greeting: %r" % pending[s][:80])
                del pending[s]
                sel.unregister(s)
    sel.close()
    if pending:
        for s in socks:
            s.close()
        raise RuntimeError("%d of %d connections never greeted" % (len(pending), count))
    return socks, time.monotonic() - t0


# --- the run ------------------------------------------------------------------

class Runner:
    def __init__(self, args):
        self.args = args
        self.user_seq = 0

    def next_user(self):
        self.user_seq += 1
        return "u%d" % self.user_seq

    def load_run(self, srv, sessions, per_conn, msgs, deliver=True):
        """load_run - one run of one load shape; a dict of its figures."""
        user = self.next_user()
        # Why: the previous run's dirty pages would otherwise be written back
        # during this one; every run starts with a clean page cache to flush.
        os.sync()
        time.sleep(0.3)
        cpu0 = tree_cpu(srv.root)
        t0 = time.monotonic()
        wall = smtp_source(srv.port, sessions, msgs, per_conn, user)
        out = {"msgs": msgs, "accept_s": wall, "accept_rate": msgs / wall}
        if deliver:
            out["e2e_s"] = wait_delivered(srv, user, msgs, t0, self.args.timeout)
            wait_queue_empty(srv)
            out["e2e_rate"] = msgs / out["e2e_s"]
        out["cpu_per_1000"] = (tree_cpu(srv.root) - cpu0) * 1000.0 / msgs
        return out


def summarize(vals):
    """summarize - median, min, max, and the runs."""
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "runs": vals}


def fsync_rate(path, seconds=3.0):
    """fsync_rate - write 512 bytes + fdatasync in a loop, single thread."""
    fn = os.path.join(path, "fsync-probe")
    fd = os.open(fn, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"x" * 512
    n = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            os.write(fd, buf)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(fn)
    return n / (time.monotonic() - t0)


def machine(path):
    """machine - nproc, memory, kernel, CPU model, filesystem of `path`."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    best, fs = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fs = mnt, "%s (%s on %s)" % (typ, dev, mnt)
                if typ == "ext4":   # no jbd2 entry: mounted without a journal
                    jbd = os.path.basename(dev)
                    has = os.path.isdir("/proc/fs/jbd2") and any(
                        n.startswith(jbd + "-") for n in os.listdir("/proc/fs/jbd2"))
                    fs = "%s (%s on %s, %s)" % (typ, dev, mnt,
                                                "journal" if has else "no journal")
    return {"nproc": os.cpu_count(), "mem_mib": mem_kb // 1024,
            "kernel": platform.release(), "cpu": cpu, "queue_fs": fs,
            "postfix": subprocess.run(["postconf", "-dh", "mail_version"],
                                      capture_output=True, text=True).stdout.strip()}


SHAPES_ALL = [(1, 1), (10, 1), (50, 1), (1, 10), (10, 10), (50, 10)]


def shape_key(s, p):
    return "s%d_m%d" % (s, p)


def shape_label(s, p):
    return "%d session%s, %d msg/conn" % (s, "" if s == 1 else "s", p)


def bench_server(runner, srv, shapes, args, results):
    """bench_server - every figure for one server, start to stop."""
    r = results.setdefault(srv.name, {})
    log("%s: start" % srv.name)
    srv.start()
    try:
        time.sleep(1)
        rest = [tree_mem(srv.root) for _ in range(3)]
        r["rss_rest_kib"] = summarize([m[0] for m in rest])
        r["pss_rest_kib"] = summarize([m[1] for m in rest])
        # warm-up: one small run, not counted (first smtpd/cleanup forks,
        # first Maildir creation, page cache)
        runner.load_run(srv, 10, 1, 200)
        for s, p in shapes:
            n = args.msgs_1 if s == 1 else args.msgs
            runs = []
            for i in range(args.runs):
                x = runner.load_run(srv, s, p, n)
                log("%s %s run %d: %.0f msg/s accepted, e2e %.2fs, %.2f CPU s/1000"
                    % (srv.name, shape_key(s, p), i + 1, x["accept_rate"],
                       x["e2e_s"], x["cpu_per_1000"]))
                runs.append(x)
            r[shape_key(s, p)] = {k: summarize([x[k] for x in runs])
                                  for k in runs[0] if k != "msgs"}
            r[shape_key(s, p)]["msgs"] = n
        if srv.queue_listing():
            raise RuntimeError("%s: queue not empty: %s" % (srv.name, srv.queue_listing()[:200]))
        time.sleep(1)
        after = [tree_mem(srv.root) for _ in range(3)]
        r["rss_after_load_kib"] = summarize([m[0] for m in after])
        idle = []
        for i in range(args.runs):
            socks, greet_s = idle_connections(srv.port, args.idle, 120)
            if isinstance(srv, Postfix):
                srv.remember()
            time.sleep(1)
            rss, pss, nproc = tree_mem(srv.root)
            idle.append((rss, pss, nproc, greet_s))
            for s in socks:
                s.close()
            log("%s idle %d run %d: RSS %d KiB, PSS %d KiB, %d processes, greeted in %.2fs"
                % (srv.name, args.idle, i + 1, rss, pss, nproc, greet_s))
            time.sleep(2)   # let the server notice the closes
        r["rss_idle_kib"] = summarize([x[0] for x in idle])
        r["pss_idle_kib"] = summarize([x[1] for x in idle])
        r["procs_idle"] = summarize([x[2] for x in idle])
        r["idle_greet_s"] = summarize([x[3] for x in idle])
    finally:
        log("%s: stop" % srv.name)
        srv.stop()


def bench_sink(runner, shapes, args, results):
    """bench_sink - the same load shapes into smtp-sink (no disk)."""
    sink = Sink()
    sink.start()
    r = results.setdefault("sink", {})
    try:
        for s, p in shapes:
            n = args.msgs_1 if s == 1 else args.msgs
            runs = [runner.load_run(sink, s, p, n, deliver=False)
                    for _ in range(args.runs)]
            r[shape_key(s, p)] = {"accept_rate": summarize([x["accept_rate"] for x in runs]),
                                  "msgs": n}
            log("smtp-sink %s: %.0f msg/s" % (shape_key(s, p),
                                              r[shape_key(s, p)]["accept_rate"]["median"]))
    finally:
        sink.stop()


TMPFS_SESSIONS = (1, 10, 50)


def bench_tern_tmpfs(runner, args, results, base):
    """bench_tern_tmpfs - the one-message-per-connection shapes into a ternd
    whose queue and Maildir are on a tmpfs: everything but the disk (its
    fsyncs return at once), the most Tern itself could do on this machine."""
    mnt = os.path.join(base, "tmpfs")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", mnt], check=True)
    CLEANUPS.append(("umount", mnt))
    users = ["u%d" % i for i in range(1, 3 * args.runs + 10)]
    tern = Tern(mnt, args.ternd, args.ternctl, users)
    r = results.setdefault("tern_tmpfs", {})
    tern.start()
    try:
        runner.load_run(tern, 10, 1, 200)
        for s in TMPFS_SESSIONS:
            n = args.msgs_1 if s == 1 else args.msgs
            runs = [runner.load_run(tern, s, 1, n) for _ in range(args.runs)]
            r[shape_key(s, 1)] = {k: summarize([x[k] for x in runs])
                                  for k in ("accept_rate", "e2e_s", "cpu_per_1000")}
            log("tern on tmpfs %s: %.0f msg/s accepted, e2e %.2fs"
                % (shape_key(s, 1), r[shape_key(s, 1)]["accept_rate"]["median"],
                   r[shape_key(s, 1)]["e2e_s"]["median"]))
    finally:
        tern.stop()


def fmt(x, nd=0):
    return ("{:,.%df}" % nd).format(x)


def cell(d, scale=1.0, nd=0):
    """cell - 'median (min-max)'."""
    return "%s (%s–%s)" % (fmt(d["median"] * scale, nd), fmt(d["min"] * scale, nd),
                           fmt(d["max"] * scale, nd))


def ratio(t, p, higher_better):
    """ratio - Tern / Postfix of the medians, with which way is better."""
    if not p:
        return "–"
    r = t / p
    return ("%.2f× %s" if r >= 0.1 else "%.3f× %s") % (r, "(higher is better)" if higher_better else "(lower is better)")


def table(results, shapes, args, mach):
    """table - the markdown table: figure | Tern | Postfix | ratio."""
    t, p, s = results["tern"], results["postfix"], results.get("sink", {})
    rows = ["| figure | Tern | Postfix | Tern/Postfix |", "| --- | --- | --- | --- |"]
    for sh in shapes:
        k = shape_key(*sh)
        lab = shape_label(*sh)
        rows.append("| accepted msg/s, %s (%d msgs) | %s | %s | %s |" % (
            lab, t[k]["msgs"], cell(t[k]["accept_rate"]), cell(p[k]["accept_rate"]),
            ratio(t[k]["accept_rate"]["median"], p[k]["accept_rate"]["median"], True)))
    for sh in shapes:
        k = shape_key(*sh)
        rows.append("| end to end s (last msg in new/), %s | %s | %s | %s |" % (
            shape_label(*sh), cell(t[k]["e2e_s"], nd=2), cell(p[k]["e2e_s"], nd=2),
            ratio(t[k]["e2e_s"]["median"], p[k]["e2e_s"]["median"], False)))
    for sh in shapes:
        k = shape_key(*sh)
        rows.append("| CPU s per 1,000 msgs (accept + delivery), %s | %s | %s | %s |" % (
            shape_label(*sh), cell(t[k]["cpu_per_1000"], nd=2), cell(p[k]["cpu_per_1000"], nd=2),
            ratio(t[k]["cpu_per_1000"]["median"], p[k]["cpu_per_1000"]["median"], False)))
    for key, lab in (("rss_rest_kib", "RSS at rest, MiB (sum over processes)"),
                     ("pss_rest_kib", "PSS at rest, MiB (shared pages split)"),
                     ("rss_after_load_kib", "RSS at rest after the load, MiB"),
                     ("rss_idle_kib", "RSS with %d idle connections, MiB" % args.idle),
                     ("pss_idle_kib", "PSS with %d idle connections, MiB" % args.idle)):
        rows.append("| %s | %s | %s | %s |" % (lab, cell(t[key], 1 / 1024, 1),
                                              cell(p[key], 1 / 1024, 1),
                                              ratio(t[key]["median"], p[key]["median"], False)))
    rows.append("| processes with %d idle connections | %s | %s | |" % (
        args.idle, fmt(t["procs_idle"]["median"]), fmt(p["procs_idle"]["median"])))
    rows.append("| s until %d idle connections all greeted | %s | %s | %s |" % (
        args.idle, cell(t["idle_greet_s"], nd=2), cell(p["idle_greet_s"], nd=2),
        ratio(t["idle_greet_s"]["median"], p["idle_greet_s"]["median"], False)))
    for sh in shapes:
        k = shape_key(*sh)
        if k in s:
            rows.append("| ceiling: smtp-sink msg/s (no disk), %s | %s | | |" % (
                shape_label(*sh), cell(s[k]["accept_rate"])))
    tt = results.get("tern_tmpfs", {})
    for n in TMPFS_SESSIONS:
        d = tt.get(shape_key(n, 1))
        if d:
            rows.append("| ceiling: Tern with queue and Maildir on tmpfs (no disk), %s: accepted msg/s; "
                        "end to end s | %s; %s | | |" % (shape_label(n, 1), cell(d["accept_rate"]),
                                                         cell(d["e2e_s"], nd=2)))
    rows.append("| ceiling: fdatasync/s on the queue filesystem (1 thread, 3 s) | %s | | |"
                % cell(results["fsync_rate"]))
    head = ("Tern vs Postfix %s, %s: %d CPUs (%s), %d MiB, Linux %s, queues on %s. "
            "%d-byte messages; each figure is the median of %d runs (min–max). "
            "Loopback, one local domain, durable queue, Maildir delivery of every message."
            % (mach["postfix"], mach["date"], mach["nproc"], mach["cpu"], mach["mem_mib"],
               mach["kernel"], mach["queue_fs"], MSG_LEN, args.runs))
    return head + "\n\n" + "\n".join(rows) + "\n"


def cleanup():
    """cleanup - stop everything started, newest first; remove the temp dir."""
    while CLEANUPS:
        kind, obj = CLEANUPS.pop()
        try:
            if kind == "proc":
                if obj.poll() is None:
                    obj.terminate()
                    try:
                        obj.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        obj.kill()
                        obj.wait()
            elif kind == "postfix":
                obj.stop()
            elif kind == "umount":
                subprocess.run(["umount", obj], capture_output=True)
            elif kind == "dir":
                many = sum(len(f) for _, _, f in os.walk(obj)) > 1000
                shutil.rmtree(obj, ignore_errors=True)
                if many:
                    removed_stamp(os.path.dirname(obj))
        except Exception as e:  # keep cleaning the rest
            log("cleanup %s: %s" % (kind, e))


# ext4 without a journal does not reuse an inode freed less than 60 s ago
# (360 s while its inode table block is dirty): every allocation in its
# block group scans past such inodes (fs/ext4/ialloc.c, recently_deleted).
# A run started right after thousands of files were removed next to its
# directory (the previous run's) measures that scan, for both servers.
EXT4_RECENTCY_S = 360
STAMP = ".tern-bench-removed"


def removed_stamp(parent):
    """removed_stamp - note that a bench directory under parent was removed."""
    try:
        with open(os.path.join(parent, STAMP), "w") as f:
            f.write("%f\n" % time.time())
    except OSError:
        pass


def settle(parent):
    """settle - on ext4 without a journal, wait until files a previous bench
    run removed under parent are older than EXT4_RECENTCY_S."""
    if "no journal" not in machine(parent)["queue_fs"]:
        return
    try:
        age = time.time() - os.stat(os.path.join(parent, STAMP)).st_mtime
    except OSError:
        return
    if 0 <= age < EXT4_RECENTCY_S:
        wait = EXT4_RECENTCY_S - age
        log("waiting %.0f s: a bench run removed its files under %s %.0f s ago, and ext4 "
            "without a journal makes new files scan past inodes freed in the last %d s"
            % (wait, parent, age, EXT4_RECENTCY_S))
        time.sleep(wait)


def on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def profile(args, base):
    """profile - ternd under perf record -g for the 10-session load."""
    tern = Tern(base, args.ternd, args.ternctl, ["u%d" % i for i in range(1, 41)])
    runner = Runner(args)
    ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = os.path.join(base, "perf.data")
    tern.start(wrap=["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384",
                     "-o", data, "--"])
    try:
        runner.load_run(tern, 10, 1, 200)
        for p in (1, 10):
            x = runner.load_run(tern, 10, p, args.msgs)
            log("profile s10_m%d: %.0f msg/s accepted, e2e %.2fs" % (p, x["accept_rate"], x["e2e_s"]))
    finally:
        # ternd stops on SIGTERM; perf, its parent, then writes perf.data
        kill_tree([tern.root], signal.SIGTERM)
        try:
            tern.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            tern.proc.send_signal(signal.SIGINT)
            tern.proc.wait(timeout=60)
    out = os.path.join(RESULTS, "profile-%s.txt" % ts)

    def report(extra, limit="0.3"):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none",
                            "--percent-limit", limit] + extra,
                           capture_output=True, text=True)
        return [line.rstrip() for line in r.stdout.splitlines()
                if line.strip() and not line.startswith("#")]

    flat = report(["--no-children", "--sort", "dso,symbol"], "0.02")
    reports = [
        ("top 40 by self time (flat profile), % of all samples", flat[:40]),
        ("user space only (ternd, libc, libevent...), % of all samples",
         [x for x in flat if "[k]" not in x][:30]),
        ("by shared object", report(["--no-children", "--sort", "dso"])),
        ("by thread (perf's pid column is the thread id; tid == pid is the"
         " event loop thread; the threads are not named)",
         report(["--no-children", "--sort", "pid"])),
        ("by thread and symbol (self time over 1%)",
         report(["--no-children", "--sort", "pid,symbol"], "1")),
        ("by thread and ternd function including callees (over 3%)",
         [x for x in report(["--children", "--sort", "pid,symbol"], "3")
          if "[.]" in x]),
        ("including callees (children), by symbol: the call paths",
         report(["--children", "--sort", "symbol"], "2")),
    ]
    with open(out, "w") as f:
        f.write("perf record -F 999 -g --call-graph dwarf: ternd (release build) under "
                "smtp-source -s 10 -l %d, %d msgs 1/conn then %d msgs 10/conn\n"
                "queue filesystem: %s\n\n" % (MSG_LEN, args.msgs, args.msgs,
                                              machine(base)["queue_fs"]))
        for title, lines in reports:
            f.write("## %s\n%s\n\n" % (title, "\n".join(lines)))
    print(open(out).read())
    log("profile written to %s" % out)


def callgrind(args, base):
    """callgrind - ternd under valgrind --tool=callgrind for a small
    10-session load: where user-space instructions go (the kernel is
    perf's part); the annotated top functions into results/."""
    tern = Tern(base, args.ternd, args.ternctl, ["u%d" % i for i in range(1, 5)])
    runner = Runner(args)
    ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = os.path.join(base, "callgrind.out")
    tern.start(wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + data,
                     "--separate-threads=no"])
    try:
        x = runner.load_run(tern, 10, 1, args.msgs)
        log("callgrind s10_m1: %d msgs, %.0f msg/s under valgrind" % (args.msgs, x["accept_rate"]))
    finally:
        kill_tree([tern.root], signal.SIGTERM)
        tern.proc.wait(timeout=300)
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", data],
                       capture_output=True, text=True)
    ri = subprocess.run(["callgrind_annotate", "--inclusive=yes", data],
                        capture_output=True, text=True)
    out = os.path.join(RESULTS, "callgrind-%s.txt" % ts)
    with open(out, "w") as f:
        f.write("valgrind --tool=callgrind: ternd (release build) under smtp-source -s 10 -l %d,"
                " %d msgs 1/conn (user-space instructions only)\n\n## self\n" % (MSG_LEN, args.msgs))
        f.write("\n".join(r.stdout.splitlines()[:60]))
        f.write("\n\n## inclusive\n")
        f.write("\n".join(ri.stdout.splitlines()[:60]))
        f.write("\n")
    print(open(out).read())
    log("callgrind written to %s" % out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ternd", required=True)
    ap.add_argument("--ternctl", required=True)
    ap.add_argument("--msgs", type=int, default=int(os.environ.get("BENCH_MSGS", 5000)))
    ap.add_argument("--msgs-1", type=int, default=int(os.environ.get("BENCH_MSGS_1", 5000)),
                    help="messages for the 1-session shapes")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--shapes", default=os.environ.get("BENCH_SHAPES", "all"),
                    help="'all' or e.g. s1_m1,s10_m10")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--tmp", default=os.environ.get("BENCH_TMP", "/var/tmp"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--callgrind", action="store_true",
                    help="ternd under callgrind (user space) for --msgs messages")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (Postfix's master and its setgid/owner checks need it)")
    shapes = SHAPES_ALL if args.shapes == "all" else \
        [sh for sh in SHAPES_ALL if shape_key(*sh) in args.shapes.split(",")]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    settle(args.tmp)
    base = tempfile.mkdtemp(prefix="tern-bench-", dir=args.tmp)
    CLEANUPS.append(("dir", base))
    os.chmod(base, 0o755)   # the postfix user walks into its queue below
    t_start = time.monotonic()
    try:
        if args.profile:
            profile(args, base)
            return 0
        if args.callgrind:
            callgrind(args, base)
            return 0
        mach = machine(base)
        mach["date"] = datetime.datetime.now().strftime("%Y-%m-%d")
        results = {}
        fs = [fsync_rate(base) for _ in range(args.runs)]
        results["fsync_rate"] = summarize(fs)
        log("fdatasync/s: %.0f" % results["fsync_rate"]["median"])
        runner = Runner(args)
        bench_sink(runner, shapes, args, results)
        users = ["u%d" % i for i in range(1, len(shapes) * args.runs + 10)]
        runner = Runner(args)
        bench_server(runner, Tern(base, args.ternd, args.ternctl, users), shapes, args, results)
        runner = Runner(args)
        bench_server(runner, Postfix(base, users), shapes, args, results)
        if os.environ.get("BENCH_TMPFS", "1") != "0":
            bench_tern_tmpfs(Runner(args), args, results, base)
        ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        md = table(results, shapes, args, mach)
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "latest.md"), "w") as f:
            f.write(md)
        with open(os.path.join(RESULTS, "%s.json" % ts), "w") as f:
            json.dump({"timestamp": ts, "machine": mach,
                       "settings": {"msgs": args.msgs, "msgs_1_session": args.msgs_1,
                                    "runs": args.runs, "idle_connections": args.idle,
                                    "msg_len": MSG_LEN,
                                    "shapes": [shape_key(*sh) for sh in shapes]},
                       "results": results, "table_md": md,
                       "elapsed_s": time.monotonic() - t_start}, f, indent=1)
        print(md)
        log("done in %.0fs; bench/results/latest.md and bench/results/%s.json"
            % (time.monotonic() - t_start, ts))
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        log("interrupted (%s)" % e)
        sys.exit(130)
