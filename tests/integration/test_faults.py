"""Fault injection against the real ternd: a full disk (queue and Maildir),
slow and endless-line clients, a low descriptor limit, misbehaving remote
peers, and kill -9 in rounds.

Tests
  disk full      queue (and Maildir) on a 2 MiB tmpfs: 452 4.3.1, never a 250
                 for an unstored message, tmp/ clean, recovery by itself;
                 Maildir disk full: deferred, flush after freeing, one copy;
                 queue disk full when a delivery is recorded, then kill -9
  slow clients   200 one-byte-per-2-s clients vs. one normal client (< 1 s)
  endless lines  200 x 200 KB without CRLF: 500 5.5.2 each, RSS bounded
  fd limit       nofile=64: 421 for new sessions, existing ones complete
  peers          250 then close before QUIT: delivered once; a silent peer
                 (smtp_greeting_timeout 2 s): deferred within seconds, prompt
                 shutdown, delivered once when it answers
  kill -9        5 rounds under load: counts printed, no loss, no duplicate

Each test is bounded in time and uses loopback only. The disk-full tests
mount a small tmpfs and so need root (they skip otherwise). Every ternd is
stopped by the conftest harness at teardown, which also checks exit status
0 and the absence of sanitizer reports.
"""

import errno
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import (RawSMTP, Ternd, header_values, make_message, maildir_files,
                      read_message, wait_for)

USERS = ["alice", "bob"]


# --- helpers ----------------------------------------------------------------

class Tmpfs:
    """A small tmpfs mounted on a directory; unmounted by the fixture."""

    def __init__(self, path, size):
        self.path = path
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                           capture_output=True, text=True)
        self.ok = r.returncode == 0
        self.err = r.stderr.strip()
        self.filler = os.path.join(path, "filler")

    def fill(self, leave=0):
        """Fill the file system with a filler file, then free `leave` bytes of it."""
        chunk = b"\0" * 65536
        size = 0
        with open(self.filler, "ab") as f:
            while True:
                try:
                    n = os.write(f.fileno(), chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    # the last page or so
                    try:
                        n = os.write(f.fileno(), chunk[:4096])
                    except OSError:
                        break
                size += n
            if leave:
                f.truncate(max(0, size - leave))
        return size

    def free(self):
        """Delete the filler."""
        if os.path.exists(self.filler):
            os.unlink(self.filler)

    def umount(self):
        if self.ok:
            r = subprocess.run(["umount", self.path], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", self.path], capture_output=True)
            self.ok = False


@pytest.fixture
def tmpfs(tern_root):
    """tmpfs(name, size) mounts <tern_root>/name; request BEFORE ternd_factory so
    ternd is stopped before the unmount."""
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = []

    def make(name, size="2m"):
        m = Tmpfs(os.path.join(tern_root, name), size)
        if not m.ok:
            pytest.skip(f"cannot mount a tmpfs: {m.err}")
        made.append(m)
        return m

    yield make
    for m in made:
        m.umount()


def smtp_send(port, mid, user="alice", body="hello\r\n", timeout=15.0, ehlo=True):
    """One complete transaction on a new connection.

    Returns (stage, code, text): stage is where it ended ("data" when the end of
    data was answered) and code the last reply code (None if the server closed)."""
    try:
        c = RawSMTP(port, timeout=timeout)
    except OSError as e:
        return "connect", None, str(e)
    try:
        if c.greeting[0] != 220:
            return "greeting", c.greeting[0], c.greeting[1]
        code, text = c.cmd("EHLO faults.example.test" if ehlo else "HELO faults.example.test")
        if code != 250:
            return "ehlo", code, text
        code, text = c.cmd("MAIL FROM:<bob@example.test>")
        if code != 250:
            return "mail", code, text
        code, text = c.cmd(f"RCPT TO:<{user}@example.test>")
        if code != 250:
            return "rcpt", code, text
        code, text = c.cmd("DATA")
        if code != 354:
            return "data-cmd", code, text
        msg = make_message(mid, body=body)
        c.send(msg.encode() + b".\r\n")
        code, text = c.reply()
        try:
            c.cmd("QUIT")
        except OSError:
            pass
        return "data", code, text
    except OSError as e:
        return "io", None, str(e)
    finally:
        c.close()


def index_by_msgid(mail_dir):
    """Message-ID -> [path] over every visible message of USERS."""
    out = {}
    for user in USERS:
        for f in maildir_files(mail_dir, user):
            ids = header_values(read_message(f), "Message-ID")
            mid = ids[0].strip("<>") if ids else "?"
            out.setdefault(mid, []).append(f)
    return out


def wait_delivered(mail_dir, mids, timeout=20.0):
    """Wait until every Message-ID in mids is in a Maildir; return the index."""
    def ok():
        idx = index_by_msgid(mail_dir)
        return idx if all(m in idx for m in mids) else None
    deadline = time.monotonic() + timeout
    while True:
        idx = ok()
        if idx is not None:
            return idx
        if time.monotonic() > deadline:
            idx = index_by_msgid(mail_dir)
            missing = [m for m in mids if m not in idx]
            pytest.fail(f"{len(missing)} of {len(mids)} acknowledged messages not delivered "
                        f"within {timeout}s, e.g. {missing[:5]}")
        time.sleep(0.1)


def listdir_or_empty(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def vmrss_kb(pid):
    """VmRSS of a process in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- 1. disk full -------------------------------------------------------------

@pytest.mark.parametrize("both", [False, True], ids=["queue_on_tmpfs", "queue_and_mail_on_tmpfs"])
def test_disk_full_queue_refuses_then_recovers(tmpfs, ternd_factory, tern_root, both):
    fs = tmpfs("fs", "2m")
    over = {"queue_dir": os.path.join(fs.path, "queue"), "retry_min": "1s", "retry_max": "2s"}
    if both:
        over["mail_dir"] = os.path.join(fs.path, "mail")
    t = ternd_factory(**over)
    # the harness's attributes name the default directories
    t.mail_dir = t.opts["mail_dir"]
    t.queue_dir = t.opts["queue_dir"]
    # leave ~40 KB: small messages may fit, 100 KB ones never do
    fs.fill(leave=40 * 1024)

    results = []  # (mid, stage, code, text)
    big = "x" * 76 + "\r\n"
    for i in range(4):
        mid = f"full-big-{i}@example.test"
        results.append((mid,) + smtp_send(t.port, mid, body=big * 1300))
    for i in range(6):
        mid = f"full-small-{i}@example.test"
        results.append((mid,) + smtp_send(t.port, mid, body="small\r\n"))
    # refill whatever delivery may have freed, then try again, with
    # messages larger than any file the queue's free/ pool keeps with its
    # blocks (64 KiB): a smaller one may be written into space the queue
    # already holds, which is no more a full disk for it
    fs.fill()
    for i in range(3):
        mid = f"full-zero-{i}@example.test"
        results.append((mid,) + smtp_send(t.port, mid, body=big * 1000))

    acked = [r[0] for r in results if r[1] == "data" and r[2] == 250]
    refused = [r for r in results if not (r[1] == "data" and r[2] == 250)]
    print(f"\ndisk full ({'queue+mail' if both else 'queue'} on tmpfs): "
          f"{len(results)} sent, {len(acked)} acknowledged, {len(refused)} refused")
    for r in results:
        print("  ", r)
    assert t.proc.poll() is None, "ternd died while the disk was full"
    # every big one is refused with a temporary error (452 4.3.1 or 451)
    for mid, stage, code, text in results:
        if mid.startswith(("full-big-", "full-zero-")):
            assert code in (452, 451), f"{mid}: expected 452/451 on a full disk, got {stage} {code} {text}"
        else:
            assert code in (250, 452, 451), f"{mid}: {stage} {code} {text}"
    assert any(r[2] == 452 and "4.3.1" in r[3] for r in results), \
        "no 452 4.3.1 among the refusals"
    # no partial file left in the queue's tmp/
    qtmp = os.path.join(over["queue_dir"], "tmp")
    wait_for(lambda: listdir_or_empty(qtmp) == [], timeout=5,
             what=f"queue tmp/ to be empty (has {listdir_or_empty(qtmp)})")

    # free the space: ternd accepts and delivers again by itself
    fs.free()
    for i in range(3):
        mid = f"after-{i}@example.test"
        stage, code, text = smtp_send(t.port, mid, body=big * 100)
        assert (stage, code) == ("data", 250), f"{mid} after freeing space: {stage} {code} {text}"
        acked.append(mid)
    idx = wait_delivered(t.mail_dir, acked, timeout=20)
    time.sleep(1.0)
    idx = index_by_msgid(t.mail_dir)
    dups = {m: v for m, v in idx.items() if len(v) > 1}
    assert not dups, f"delivered more than once: {dups}"
    stray = [m for m in idx if m not in acked]
    # a refused message must not be delivered (it was never acknowledged... and
    # the client was told to retry, so a delivery would be a duplicate later)
    assert not stray, f"refused messages were delivered anyway: {stray}"
    assert listdir_or_empty(qtmp) == []


def test_disk_full_maildir_defers_then_flush_delivers_once(tmpfs, ternd_factory):
    fs = tmpfs("mailfs", "2m")
    t = ternd_factory(mail_dir=os.path.join(fs.path, "mail"))
    t.mail_dir = t.opts["mail_dir"]
    # a first message creates alice's Maildir
    stage, code, text = smtp_send(t.port, "warmup@example.test")
    assert (stage, code) == ("data", 250), (stage, code, text)
    t.wait_messages("alice", 1)
    fs.fill()

    mid = "deferred-full@example.test"
    stage, code, text = smtp_send(t.port, mid, body=("y" * 76 + "\r\n") * 200)
    assert (stage, code) == ("data", 250), f"queue is not full, yet: {stage} {code} {text}"
    qid = re.search(r"queued as ([A-Za-z0-9._-]+)", text)
    qid = qid.group(1) if qid else None

    def deferred():
        r = t.ternctl("queue")
        if r.returncode != 0:
            return None
        out = r.stdout
        if "alice@example.test" in out and (qid is None or qid in out) and \
                re.search(r"(?i)space|ENOSPC|storage|error|defer|retry", out):
            return out
        return None
    out = wait_for(deferred, timeout=15, what="ternctl queue to show the deferred message with an error")
    print("\nternctl queue while the Maildir's disk is full:\n" + out)
    assert mid not in index_by_msgid(t.mail_dir), "delivered onto a full disk?"
    # nothing torn is visible
    for f in maildir_files(t.mail_dir, "alice"):
        assert read_message(f).rstrip("\n").endswith(("hello", "y" * 76)), f"torn message {f}"

    fs.free()
    r = t.ternctl("queue", "flush")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_delivered(t.mail_dir, [mid], timeout=15)
    time.sleep(1.5)
    idx = index_by_msgid(t.mail_dir)
    assert len(idx[mid]) == 1, f"delivered {len(idx[mid])} times: {idx[mid]}"
    assert len(idx["warmup@example.test"]) == 1
    body = read_message(idx[mid][0])
    assert body.rstrip("\n").endswith("y" * 76), "delivered message is truncated"
    mtmp = os.path.join(t.mail_dir, "example.test", "alice", "tmp")
    assert listdir_or_empty(mtmp) == [], f"Maildir tmp/ keeps partial files: {listdir_or_empty(mtmp)}"
    r = t.ternctl("queue")
    assert "alice@example.test" not in r.stdout, f"still queued after delivery:\n{r.stdout}"


# --- 2. slow clients ------------------------------------------------------------

def test_slow_clients_do_not_starve_a_normal_one(ternd_factory):
    t = ternd_factory(max_connections_per_ip="1000")
    slow = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        slow.append(s)
    worst = 0.0
    start = time.monotonic()
    n = 0
    try:
        payload = b"NOOP\r\n"
        step = 0
        while time.monotonic() - start < 6.0:
            for s in slow:
                try:
                    s.send(payload[step % len(payload):step % len(payload) + 1])
                except OSError:
                    pass
            step += 1
            # a normal client, measured from connect to the 250 after the data
            t0 = time.monotonic()
            stage, code, text = smtp_send(t.port, f"normal-{n}@example.test")
            dt = time.monotonic() - t0
            worst = max(worst, dt)
            assert (stage, code) == ("data", 250), (stage, code, text)
            n += 1
            time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    finally:
        alive = 0
        for s in slow:
            s.setblocking(False)
            try:
                d = s.recv(4096)
                alive += bool(d)
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            s.close()
    print(f"\nslow clients: 200 dribbling ({alive} still connected at the end), {n} normal "
          f"messages, worst connect-to-250 {worst:.3f}s")
    assert worst < 1.0, f"a normal client took {worst:.2f}s with 200 slow clients"
    t.wait_messages("alice", n)


# --- 3. endless lines ----------------------------------------------------------

def test_endless_lines_get_500_and_memory_stays_bounded(ternd_factory):
    t = ternd_factory(max_connections_per_ip="1000")
    pid = t.proc.pid
    base = vmrss_kb(pid)
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        socks.append(s)
    bufs = {s: b"" for s in socks}
    for s in socks:
        s.settimeout(10)
        while b"\r\n" not in bufs[s]:
            bufs[s] += s.recv(4096)
        assert bufs[s].startswith(b"220"), bufs[s]
        bufs[s] = b""
    chunk = b"A" * 8192
    peak = base
    total = 200 * 1024
    sent = 0
    while sent < total:
        for s in socks:
            s.sendall(chunk)
        sent += len(chunk)
        peak = max(peak, vmrss_kb(pid))
        assert t.proc.poll() is None, "ternd died under endless lines"
    # each one got 500 5.5.2 (line too long)
    bad = []
    for i, s in enumerate(socks):
        s.settimeout(10)
        try:
            while b"\r\n" not in bufs[s]:
                d = s.recv(4096)
                if not d:
                    break
                bufs[s] += d
        except OSError as e:
            bufs[s] += f"<{e}>".encode()
        if not bufs[s].startswith(b"500 5.5.2"):
            bad.append((i, bufs[s][:100]))
    peak = max(peak, vmrss_kb(pid))
    # the line ends now: each session is still usable (or closed after 500)
    normal = smtp_send(t.port, "after-long-lines@example.test")
    for s in socks:
        s.close()
    print(f"\nendless lines: RSS base {base} kB, peak {peak} kB, growth {peak - base} kB; "
          f"{200 - len(bad)}/200 got 500 5.5.2")
    assert not bad, f"{len(bad)} clients without 500 5.5.2, e.g. {bad[:3]}"
    assert peak - base < 100 * 1024, f"RSS grew by {(peak - base) // 1024} MB (base {base} kB)"
    assert normal[:2] == ("data", 250), normal
    t.wait_messages("alice", 1)


# --- 4. descriptor limit -------------------------------------------------------

def test_fd_limit_refuses_new_but_existing_complete(ternd_factory):
    if subprocess.run(["which", "prlimit"], capture_output=True).returncode != 0:
        pytest.skip("prlimit(1) is not installed (util-linux)")
    t = ternd_factory(start=False, max_connections_per_ip="1000")
    t.argv = lambda: ["prlimit", "--nofile=64:64", "--"] + Ternd.argv(t)
    t.start()
    greeted, refused, outcomes = [], 0, {}
    for i in range(120):
        try:
            c = RawSMTP(t.port, timeout=5)
        except OSError as e:
            refused += 1
            outcomes[str(e)] = outcomes.get(str(e), 0) + 1
            continue
        code = c.greeting[0]
        key = f"{code} {c.greeting[1][:40]}" if code else "closed"
        outcomes[key] = outcomes.get(key, 0) + 1
        if code == 220:
            greeted.append(c)
        else:
            refused += 1
            c.close()
        if refused >= 5:
            break
    print(f"\nfd limit 64: {len(greeted)} greeted, {refused} refused; {outcomes}")
    assert refused >= 1, f"120 connections all greeted with nofile=64: {outcomes}"
    assert not [k for k in outcomes if k not in ("closed",) and not k.startswith(("220", "421"))
                and "reset" not in k.lower() and "refused" not in k.lower()], outcomes
    assert t.proc.poll() is None, "ternd died at the descriptor limit"
    # the existing sessions still complete a transaction
    fails = []
    for i, c in enumerate(greeted[:5]):
        mid = f"fdlimit-{i}@example.test"
        try:
            c.ehlo()
            r = [c.cmd("MAIL FROM:<bob@example.test>"), c.cmd("RCPT TO:<alice@example.test>"),
                 c.cmd("DATA")]
            if r[-1][0] == 354:
                c.send(make_message(mid) + ".\r\n")
                r.append(c.reply())
        except OSError as e:
            r = [(None, str(e))]
        if [x[0] for x in r] != [250, 250, 354, 250]:
            fails.append((mid, r))
    for c in greeted:
        c.close()
    # once they are gone, new ones are served again
    time.sleep(0.5)
    after = smtp_send(t.port, "fdlimit-after@example.test")
    assert after[:2] == ("data", 250), f"after closing every session: {after}"
    print(f"existing sessions at the limit: {5 - len(fails)}/5 completed; failures {fails}")
    assert not fails, f"existing sessions could not complete a transaction at the limit: {fails}"
    t.wait_messages("alice", 6)


# --- 5. misbehaving peers -------------------------------------------------------

class ClosingPeer:
    """A scripted SMTP server: answers 250 to the end of data, then closes
    the connection without waiting for QUIT."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.messages = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(20)
        f = c.makefile("rb")
        try:
            c.sendall(b"220 closing.peer ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    c.sendall(b"250-closing.peer\r\n250 8BITMIME\r\n")
                elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    c.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go\r\n")
                    data = b""
                    while True:
                        dl = f.readline()
                        if not dl:
                            return
                        if dl == b".\r\n":
                            break
                        data += dl
                    self.messages.append(data)
                    c.sendall(b"250 2.0.0 ok: queued\r\n")
                    return  # and close, no QUIT exchange
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"502 what\r\n")
        except OSError:
            return
        finally:
            try:
                f.close()
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


def test_peer_closes_after_data_250_delivered_once(ternd_factory):
    peer = ClosingPeer()
    try:
        t = ternd_factory(relayhost=f"[127.0.0.1]:{peer.port}", retry_min="1s", retry_max="2s")
        c = RawSMTP(t.port)
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<user@remote.test>")
        assert code == 250, (code, text)
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("closing-peer@example.test", to="user@remote.test") + ".\r\n")
        code, text = c.reply()
        assert code == 250, (code, text)
        c.cmd("QUIT")
        c.close()
        wait_for(lambda: peer.messages, timeout=15, what="the peer to receive the message")
        # retry_max is 2 s: a wrongly deferred message would come back by now
        time.sleep(5.0)
        print(f"\nclosing peer: {peer.conns} connection(s), {len(peer.messages)} message(s)")
        assert len(peer.messages) == 1, f"peer got the message {len(peer.messages)} times"
        r = t.ternctl("queue")
        assert r.returncode == 0, r.stderr
        assert "user@remote.test" not in r.stdout, f"still queued:\n{r.stdout}"
        # no bounce to the sender either
        assert not maildir_files(t.mail_dir, "alice"), "a bounce was sent for a delivered message"
    finally:
        peer.stop()


def test_peer_never_greets_deferred_in_seconds_then_delivered_once(ternd_factory):
    """A remote that accepts and never sends its greeting. With
    smtp_greeting_timeout = 2s (default 300 s, RFC 5321 4.5.3.2.1) the
    attempt is given up and the message deferred within seconds, not
    bounced; ternd keeps serving local mail; SIGTERM while an outbound
    connection waits for its greeting ends ternd promptly with status 0;
    once the peer answers, the message is delivered exactly once."""
    from remote_fixtures import Peer
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    held = []
    peer = None
    try:
        t = ternd_factory(relayhost=f"[127.0.0.1]:{port}", retry_min="1s", retry_max="2s",
                          smtp_greeting_timeout="2s")
        c = RawSMTP(t.port)
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<user@remote.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("silent-peer@example.test", to="user@remote.test") + ".\r\n")
        code, text = c.reply()
        assert code == 250, (code, text)
        c.close()
        qid = re.search(r"queued as ([A-Za-z0-9._-]+)", text).group(1)
        t0 = time.monotonic()
        lsock.settimeout(15)
        conn, _ = lsock.accept()  # ternd connects and waits for a 220 that never comes
        held.append(conn)
        pat = re.compile(rf"event=deferred qid={qid} [^\n]*timed out while receiving the initial server greeting")
        wait_for(lambda: pat.search(t.log()), timeout=10, what="the deferral after the greeting timeout")
        dt = time.monotonic() - t0
        r = t.ternctl("queue")
        assert r.returncode == 0, r.stderr
        assert "user@remote.test" in r.stdout, f"message left the queue:\n{r.stdout}"
        assert not maildir_files(t.mail_dir, "alice"), "bounced while the peer was silent"
        # still serving local mail meanwhile
        assert smtp_send(t.port, "while-silent@example.test")[:2] == ("data", 250)
        t.wait_messages("alice", 1)
        # the retry (1-2 s later) connects again: SIGTERM while it waits
        conn, _ = lsock.accept()
        held.append(conn)
        t1 = time.monotonic()
        rc = t.stop()
        dt_stop = time.monotonic() - t1
        t.check_clean_exit(rc)
        # the peer wakes up: same address, now a working server
        for h in held:
            h.close()
        held.clear()
        lsock.close()
        peer = Peer("127.0.0.1", port)
        t.start()
        wait_for(lambda: peer.messages, timeout=15, what="delivery to the peer once it answers")
        time.sleep(3.0)  # retry_max 2 s: a second copy would arrive by now
        print(f"\nsilent peer: deferred {dt:.1f}s after connecting (smtp_greeting_timeout 2s); "
              f"SIGTERM with a connection waiting: exit {rc} in {dt_stop:.2f}s; after the peer "
              f"answered: {len(peer.messages)} copy over {peer.conns} connection(s)")
        assert dt < 6.0, f"deferred only {dt:.1f}s after connecting with a 2 s greeting timeout"
        assert dt_stop < 5.0, f"shutdown took {dt_stop:.1f}s with a silent peer"
        assert len(peer.messages) == 1, f"peer got the message {len(peer.messages)} times"
        assert b"silent-peer@example.test" in peer.messages[0][2]
        r = t.ternctl("queue")
        assert "user@remote.test" not in r.stdout, f"still queued:\n{r.stdout}"
        assert len(maildir_files(t.mail_dir, "alice")) == 1, "a bounce came back"
    finally:
        for h in held:
            h.close()
        lsock.close()
        if peer is not None:
            peer.stop()


# --- 6. kill -9 in rounds -------------------------------------------------------

def _round_sender(port, tag, acked, attempted, lock, stop):
    """Send messages on one connection until stop; reconnect on errors."""
    s = None
    i = 0
    while not stop.is_set():
        mid = f"k9-{tag}-{i}@example.test"
        user = USERS[i % 2]
        i += 1
        try:
            if s is None:
                s = RawSMTP(port, timeout=10)
                if s.greeting[0] != 220:
                    raise OSError("no greeting")
                s.ehlo()
            with lock:
                attempted[mid] = user
            if s.cmd("MAIL FROM:<bob@example.test>")[0] != 250:
                raise OSError("mail")
            if s.cmd(f"RCPT TO:<{user}@example.test>")[0] != 250:
                raise OSError("rcpt")
            if s.cmd("DATA")[0] != 354:
                raise OSError("data")
            s.send(make_message(mid, body=f"payload {mid}\r\n" + "filler\r\n" * 30
                                + f"END {mid}\r\n", to=f"{user}@example.test") + ".\r\n")
            code, _ = s.reply()
            if code == 250:
                with lock:
                    acked[mid] = user
            elif code is None:
                raise OSError("closed")
        except (OSError, AssertionError):
            if s is not None:
                s.close()
            s = None
            time.sleep(0.05)
    if s is not None:
        s.close()


def test_kill9_rounds_no_loss_no_duplicate(ternd_factory):
    t = ternd_factory()
    acked, attempted = {}, {}
    lock = threading.Lock()
    for rnd in range(5):
        if t.proc is None:
            t.start()
        stop = threading.Event()
        ths = [threading.Thread(target=_round_sender,
                                args=(t.port, f"{rnd}-{k}", acked, attempted, lock, stop),
                                daemon=True) for k in range(4)]
        for th in ths:
            th.start()
        time.sleep(1.0)
        t.kill9()
        stop.set()
        for th in ths:
            th.join(timeout=15)
        assert not any(th.is_alive() for th in ths)
    t.start()
    with lock:
        acked, attempted = dict(acked), dict(attempted)
    deadline = time.monotonic() + 60
    while True:
        idx = index_by_msgid(t.mail_dir)
        missing = [m for m in acked if m not in idx]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    idx = index_by_msgid(t.mail_dir)
    delivered = sum(1 for m in idx if m in attempted)
    dups = {m: v for m, v in idx.items() if len(v) > 1}
    lost = [m for m in acked if m not in idx]
    unacked_delivered = sum(1 for m in idx if m in attempted and m not in acked)
    print(f"\nkill -9 x5: sent {len(attempted)}, acknowledged {len(acked)}, "
          f"delivered {delivered} (of which not acknowledged {unacked_delivered}), "
          f"duplicated {len(dups)}, lost {len(lost)}")
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert not dups, "delivered more than once: " + "; ".join(
        f"{m} ({'acked' if m in acked else 'not acked'}): {[os.path.basename(p) for p in v]}"
        for m, v in list(dups.items())[:5])
    for mid, user in acked.items():
        assert f"/{user}/" in idx[mid][0], (mid, user, idx[mid])
        m = read_message(idx[mid][0])
        assert m.rstrip("\n").endswith(f"END {mid}"), f"torn message {idx[mid][0]}"
    qtmp = os.path.join(t.queue_dir, "tmp")
    assert listdir_or_empty(qtmp) == [], f"queue tmp/ not cleaned: {listdir_or_empty(qtmp)[:5]}"


# --- 1b. a full queue disk at the moment a delivery is recorded, then kill -9 ----

def test_full_queue_disk_when_recording_delivery_then_kill9(tmpfs, ternd_factory):
    """A message for alice (local) and a remote recipient (DNS is dead, so it
    stays queued) is accepted into the last page of the queue's disk; alice's
    delivery is deferred (her Maildir's disk is full) and then made (after
    room there and a flush) while the queue's disk is still full, so neither
    record can be written. After kill -9 and a restart with room again, alice
    must not get a second copy."""
    qfs = tmpfs("qfs", "2m")
    mfs = tmpfs("mfs", "2m")
    t = ternd_factory(queue_dir=os.path.join(qfs.path, "queue"),
                      mail_dir=os.path.join(mfs.path, "mail"))
    t.mail_dir, t.queue_dir = t.opts["mail_dir"], t.opts["queue_dir"]
    assert smtp_send(t.port, "warm@example.test")[:2] == ("data", 250)
    t.wait_messages("alice", 1)
    mfs.fill()  # alice's delivery will be deferred
    mid = "record-full@example.test"
    code, text = None, ""
    for leave in (4096, 8192, 12288):
        qfs.free()
        qfs.fill(leave=leave)  # room for the message file, hardly more
        c = RawSMTP(t.port)
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<user@remote.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message(mid) + ".\r\n")
        code, text = c.reply()
        c.close()
        if code == 250:
            break
    assert code == 250, f"could not queue into the last pages: {code} {text}"
    print(f"\nqueued with {leave} bytes left on the queue's disk")
    wait_for(lambda: "No space left" in t.ternctl("queue").stdout, timeout=15,
             what="alice's delivery to be deferred on the full Maildir disk")
    qfs.fill()   # make sure the queue's disk is full
    mfs.free()   # and the Maildir's has room
    r = t.ternctl("queue", "flush")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_delivered(t.mail_dir, [mid], timeout=15)
    time.sleep(0.5)
    log_before = t.log()
    t.kill9()
    qfs.free()
    t.start()
    time.sleep(3.0)
    idx = index_by_msgid(t.mail_dir)
    rec_failed = [ln for ln in log_before.splitlines() if "record_failed" in ln]
    print(f"full queue disk at delivery record: copies of {mid} after restart: "
          f"{len(idx.get(mid, []))}; record failures logged before kill -9:")
    for ln in rec_failed:
        print("  ", ln)
    qid = re.search(r"qid=(\S+) to=alice", "\n".join(rec_failed))
    if qid:
        print("after the restart:")
        for ln in t.log().splitlines():
            if qid.group(1) in ln:
                print("  ", ln)
    assert len(idx[mid]) == 1, (f"alice got {len(idx[mid])} copies after kill -9 "
                                f"(record failures: {rec_failed})")
