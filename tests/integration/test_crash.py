"""Durability: kill -9 in the middle of a load, restart on the same queue.

Every message that got "250 ... queued as" must end up in a Maildir exactly
once; a message that did not get 250 may appear at most once; no torn file is
ever visible in new/ or cur/.
"""

import os
import re
import smtplib
import threading
import time

from conftest import (header_values, make_message, maildir_files, read_message, wait_for,
                      wait_messages)

THREADS = 10
TOTAL = 200
USERS = ["alice", "bob"]


def _sender(port, tid, per_thread, acked, attempted, lock, stop):
    """One client: sequential messages on one connection, reconnecting on errors."""
    s = None
    for i in range(per_thread):
        if stop.is_set():
            break
        mid = f"crash-{tid}-{i}@example.test"
        user = USERS[(tid + i) % len(USERS)]
        msg = make_message(mid, subject=f"crash {tid} {i}",
                           body=f"payload {mid}\r\n" + "filler line\r\n" * 20
                           + f"END-OF-MESSAGE {mid}\r\n")
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", port, timeout=15)
                s.ehlo("crash.example.test")
            with lock:
                attempted[mid] = user
            code, _ = s.mail("bob@example.test")
            if code != 250:
                continue
            code, _ = s.rcpt(f"{user}@example.test")
            if code != 250:
                continue
            code, resp = s.data(msg)
            if code == 250:
                with lock:
                    acked[mid] = user
        except (smtplib.SMTPException, OSError):
            # the server died: this message may or may not have been queued
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
            s = None
            if stop.is_set():
                break
            time.sleep(0.05)
    if s is not None:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def _received_id(path):
    """The 'id QUEUEID' of the top Received: header of a delivered file."""
    rec = header_values(read_message(path), "Received")
    m = re.search(r"\bid ([A-Za-z0-9._-]+)", rec[0]) if rec else None
    return m.group(1) if m else "?"


def _index(mail_dir):
    """Message-ID -> [(user, path)] over every visible message."""
    out = {}
    for user in USERS:
        for f in maildir_files(mail_dir, user):
            m = read_message(f)
            ids = header_values(m, "Message-ID")
            assert len(ids) == 1, f"{f}: Message-ID headers {ids}"
            mid = ids[0].strip("<>")
            # a visible message is complete: its last line is our end marker
            assert m.rstrip("\n").endswith(f"END-OF-MESSAGE {mid}"), \
                f"torn message visible in {f}:\n{m[-500:]}"
            out.setdefault(mid, []).append((user, f))
    return out


def test_kill9_under_load_loses_and_duplicates_nothing(ternd_factory):
    t = ternd_factory()
    acked, attempted = {}, {}
    lock = threading.Lock()
    stop = threading.Event()
    per_thread = TOTAL // THREADS
    threads = [threading.Thread(target=_sender,
                                args=(t.port, i, per_thread, acked, attempted, lock, stop),
                                daemon=True)
               for i in range(THREADS)]
    for th in threads:
        th.start()

    # kill -9 once about half the messages are acknowledged
    deadline = time.monotonic() + 120
    while True:
        with lock:
            n = len(acked)
        if n >= TOTAL // 2:
            break
        if not any(th.is_alive() for th in threads):
            break
        assert time.monotonic() < deadline, f"only {n} messages acknowledged in 120 s"
        time.sleep(0.005)
    t.kill9()
    stop.set()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads)
    with lock:
        acked = dict(acked)
        attempted = dict(attempted)
    assert len(acked) >= TOTAL // 2 or len(acked) == len(attempted)

    # restart on the same queue and mail directories
    t.start()
    deadline = time.monotonic() + 60
    while True:
        idx = _index(t.mail_dir)
        missing = [m for m in acked if m not in idx]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(acked)} acknowledged messages never delivered "
                f"after restart, e.g. {missing[:5]}")
        time.sleep(0.2)

    # let recovery finish whatever else it will deliver, then judge
    time.sleep(2.0)
    idx = _index(t.mail_dir)
    dups = {m: v for m, v in idx.items() if len(v) > 1}
    assert not dups, "delivered more than once: " + "; ".join(
        f"{m} ({'acknowledged' if m in acked else 'not acknowledged'}; "
        f"queue ids {[_received_id(p) for _, p in v]}, files {[os.path.basename(p) for _, p in v]})"
        for m, v in list(dups.items())[:5])
    for mid, user in acked.items():
        assert [u for u, _ in idx[mid]] == [user], (mid, idx[mid])
    unknown = [m for m in idx if m not in attempted]
    assert not unknown, f"messages nobody sent: {unknown[:5]}"

    # nothing half-written is visible; leftovers may only sit in tmp/
    for d, _dirs, files in os.walk(t.mail_dir):
        if os.path.basename(d) in ("new", "cur"):
            for f in files:
                assert os.path.getsize(os.path.join(d, f)) > 0, f"empty message {d}/{f}"

    # unacknowledged leftovers in the queue's tmp/ are removed at start-up
    # (ARCHITECTURE.md: they were never acknowledged)
    qtmp = os.path.join(t.queue_dir, "tmp")
    if os.path.isdir(qtmp):
        assert os.listdir(qtmp) == [], f"queue tmp/ not cleaned at restart: {os.listdir(qtmp)[:5]}"

    # the queue drains: `ternctl queue` lists no pending recipient (if the
    # control socket works at all; its own tests are in test_ternctl.py)
    r = t.ternctl("queue")
    if r.returncode == 0:
        deadline = time.monotonic() + 20
        while "@example.test" in r.stdout and time.monotonic() < deadline:
            time.sleep(0.5)
            r = t.ternctl("queue")
        assert "@example.test" not in r.stdout, f"queue not drained:\n{r.stdout}"


# --- the fast path: a message finished in one pass keeps no state -------------

def _send(port, mid, to="alice@example.test"):
    """One message, accepted (smtplib raises otherwise)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("fast.example.test")
        s.sendmail("bob@example.test", [to], make_message(mid, to=to))


def _ls(t, sub):
    d = os.path.join(t.queue_dir, sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _wait_queue_empty(t, timeout=15.0):
    deadline = time.monotonic() + timeout
    while _ls(t, "msg") or _ls(t, "tmp"):
        assert time.monotonic() < deadline, f"queue not empty: {_ls(t, 'msg')}"
        time.sleep(0.05)


def test_fast_path_writes_no_state_and_reuses_queue_files(ternd_factory):
    t = ternd_factory()
    state = os.path.join(t.queue_dir, "state")
    os.makedirs(state, exist_ok=True)
    # an old mtime: any entry created or removed in state/ changes it
    os.utime(state, (1_000_000_000, 1_000_000_000))
    for i in range(12):
        _send(t.port, f"fast-{i}@example.test", to=["alice@example.test", "bob@example.test"][i % 2])
    wait_messages(t.mail_dir, "alice", 6)
    wait_messages(t.mail_dir, "bob", 6)
    _wait_queue_empty(t)
    assert os.stat(state).st_mtime == 1_000_000_000, "a state record was written"
    assert _ls(t, "state") == []
    # the finished files wait in free/ and are reused, not re-created
    free = _ls(t, "free")
    assert 1 <= len(free) <= 12, free
    inodes = {os.stat(os.path.join(t.queue_dir, "free", f)).st_ino for f in free}
    _send(t.port, "fast-reuse@example.test")
    wait_messages(t.mail_dir, "alice", 7)
    _wait_queue_empty(t)
    after = {os.stat(os.path.join(t.queue_dir, "free", f)).st_ino for f in _ls(t, "free")}
    assert after == inodes, "the queue file was not taken from free/"
    assert os.stat(state).st_mtime == 1_000_000_000


def test_deferred_delivery_still_records_state(ternd_factory):
    t = ternd_factory(retry_min="1s", retry_max="1s")
    # bob's mailbox cannot be made: local delivery fails temporarily
    os.makedirs(os.path.join(t.mail_dir, "example.test"), exist_ok=True)
    with open(os.path.join(t.mail_dir, "example.test", "bob"), "w") as f:
        f.write("not a directory\n")
    _send(t.port, "slow-1@example.test", to="bob@example.test")
    wait_for(lambda: _ls(t, "state"), timeout=10, what="a state record for the deferral")
    (qid,) = _ls(t, "state")
    assert _ls(t, "msg") == [qid]
    with open(os.path.join(t.queue_dir, "state", qid)) as f:
        assert " pending 1 " in f.read()
    # the mailbox becomes usable: the retry delivers once and both files go
    os.unlink(os.path.join(t.mail_dir, "example.test", "bob"))
    assert t.ternctl("queue", "flush").returncode == 0
    wait_messages(t.mail_dir, "bob", 1)
    _wait_queue_empty(t)
    assert _ls(t, "state") == []
    assert len(maildir_files(t.mail_dir, "bob")) == 1


def test_removal_undone_by_power_loss_delivers_once(ternd_factory):
    """The removal of a finished local message is not fsync'd: a power loss
    may bring msg/QID back, with or without its state log, or an emptied
    file kept for reuse. Here the disk states are made by hand: copies of
    two committed queue files (taken while their delivery was deferred) put
    back after they were delivered, and one emptied file put back. The
    restart delivers the copies again into the same Maildir names (still
    one copy each) and drops the empty one; nothing is set aside."""
    # short retries: a flush that meets a still-running attempt is dropped
    t = ternd_factory(retry_min="1s", retry_max="1s")
    box = os.path.join(t.mail_dir, "example.test")
    os.makedirs(box, exist_ok=True)
    with open(os.path.join(box, "bob"), "w") as f:
        f.write("not a directory: bob's deliveries are deferred\n")
    with smtplib.SMTP("127.0.0.1", t.port, timeout=15) as s:
        s.ehlo("undone.example.test")
        s.sendmail("carol@example.test", ["alice@example.test", "bob@example.test"],
                   make_message("undone-1@example.test"))
        s.sendmail("carol@example.test", ["bob@example.test"], make_message("undone-2@example.test"))
    wait_for(lambda: len(_ls(t, "state")) == 2, timeout=10, what="two deferrals recorded")
    wait_messages(t.mail_dir, "alice", 1)
    copies = {}
    for qid in _ls(t, "msg"):
        path = os.path.join(t.queue_dir, "msg", qid)
        with open(path, "rb") as f:
            copies[qid] = (os.stat(path).st_ino, f.read())
    assert len(copies) == 2
    os.unlink(os.path.join(box, "bob"))
    assert t.ternctl("queue", "flush").returncode == 0
    wait_messages(t.mail_dir, "bob", 2)
    _wait_queue_empty(t)
    _send(t.port, "undone-3@example.test")
    wait_messages(t.mail_dir, "alice", 2)
    _wait_queue_empty(t)
    assert _ls(t, "state") == []
    assert t.stop() == 0
    # finished files go to free/ (small ones keep their blocks for the next
    # message to overwrite, and may have served undone-3): a lost removal
    # is the same inode back under msg/QID with its content
    by_ino = {os.stat(os.path.join(t.queue_dir, "free", n)).st_ino: n for n in _ls(t, "free")}
    for qid, (ino, data) in copies.items():
        name = by_ino[ino]
        os.rename(os.path.join(t.queue_dir, "free", name), os.path.join(t.queue_dir, "msg", qid))
        with open(os.path.join(t.queue_dir, "msg", qid), "wb") as f:
            f.write(data)
    # and a file whose emptying persisted but not its move to free/
    open(os.path.join(t.queue_dir, "msg", "0000000000000ZZ1"), "wb").close()

    t.start()
    _wait_queue_empty(t)
    time.sleep(0.5)
    got = {}
    for user in ("alice", "bob"):
        for f in maildir_files(t.mail_dir, user):
            got.setdefault(user, []).append(header_values(read_message(f), "Message-ID")[0])
    assert sorted(got["alice"]) == ["<undone-1@example.test>", "<undone-3@example.test>"], got
    assert sorted(got["bob"]) == ["<undone-1@example.test>", "<undone-2@example.test>"], got
    assert _ls(t, "corrupt") == []
    assert "queue_empty_removed" in t.log()
