#!/usr/bin/python3
"""soak - mixed traffic against a real ternd for SOAK_SECONDS (default 1800).

`make soak` runs it on the sanitizer build (not part of `make test`). Two
ternds on loopback: the one under test ("mx", local domain example.test,
relayhost = the second one) and a receiver for remote.test. Traffic, in a
loop, bounded in rate:
  - local mail to alice/bob/aliases (delivered to Maildir),
  - remote mail to user@remote.test (relayed to the receiver),
  - mail to nobody@remote.test (the receiver says 550: a bounce comes back
    to alice),
  - bad clients: garbage bytes, bare-LF smuggling, over-long lines,
    disconnects in the middle of DATA.
Every minute it samples the mx ternd's resident memory and open descriptors.
At the end both ternds get SIGTERM; LeakSanitizer (the build's ASan) reports
leaks at exit. Prints a summary: sent, acknowledged, delivered, bounced,
lost, duplicated, and the memory/descriptor series; exits non-zero on loss,
duplication, sanitizer reports, or memory/descriptors that keep growing.
"""

import os
import random
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from conftest import Ternd, make_message, maildir_files, read_message, sanitizer_report  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "1800"))
SAMPLE = max(5, min(60, SECONDS // 10))


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def send_one(port, frm, rcpt, mid):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(frm, [rcpt], make_message(mid, frm=frm, to=rcpt))


def bad_client(port):
    kind = random.choice(["garbage", "smuggle", "longline", "drop"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.recv(512)
            if kind == "garbage":
                c.sendall(os.urandom(random.randint(1, 4000)))
            elif kind == "smuggle":
                c.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
                c.sendall(b"Subject: s\r\n\r\nx\n.\r\nMAIL FROM:<evil@b.test>\r\n.\r\n")
            elif kind == "longline":
                c.sendall(b"EHLO " + b"a" * 5000 + b"\r\n")
            else:
                c.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
                c.sendall(b"Subject: half\r\n\r\nhalf a message")
            c.settimeout(2)
            try:
                c.recv(4096)
            except OSError:
                pass
    except OSError:
        pass


def main():
    root = tempfile.mkdtemp(prefix="tern-soak-")
    os.chmod(root, 0o755)
    rx = Ternd(os.path.join(root, "rx"), name="receiver", local_domains="remote.test")
    with open(rx.users, "w") as f:
        f.write("user@remote.test:{PLAIN}x\n")
    mx = Ternd(os.path.join(root, "mx"), name="mx", relayhost=f"[127.0.0.1]:{rx.port}",
               retry_min="2s", retry_max="10s", mynetworks="127.0.0.0/8")
    counts = {"sent": 0, "acked": 0, "bad": 0}
    expect_local, expect_remote, expect_bounce = {}, {}, set()
    lock = threading.Lock()
    series = []
    stop = threading.Event()
    try:
        rx.start()
        mx.start()

        def worker(n):
            rnd = random.Random(n)
            while not stop.is_set():
                r = rnd.random()
                mid = f"soak-{uuid.uuid4().hex}@example.test"
                try:
                    if r < 0.5:
                        user = rnd.choice(["alice", "bob"])
                        with lock:
                            counts["sent"] += 1
                        send_one(mx.port, "carol@else.test", f"{user}@example.test", mid)
                        with lock:
                            counts["acked"] += 1
                            expect_local[mid] = user
                    elif r < 0.8:
                        with lock:
                            counts["sent"] += 1
                        send_one(mx.port, "alice@example.test", "user@remote.test", mid)
                        with lock:
                            counts["acked"] += 1
                            expect_remote[mid] = 1
                    elif r < 0.9:
                        with lock:
                            counts["sent"] += 1
                        send_one(mx.port, "alice@example.test", "nobody@remote.test", mid)
                        with lock:
                            counts["acked"] += 1
                            expect_bounce.add(mid)
                    else:
                        bad_client(mx.port)
                        with lock:
                            counts["bad"] += 1
                except (smtplib.SMTPException, OSError):
                    pass
                time.sleep(rnd.uniform(0.01, 0.05))

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < SECONDS:
            time.sleep(SAMPLE)
            rss, fds = proc_stats(mx.proc.pid)
            series.append((int(time.monotonic() - t0), rss, fds))
            print(f"t={series[-1][0]}s rss={rss}kB fds={fds} sent={counts['sent']}", flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=60)

        # let the queues drain
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if mx.ternctl("queue").stdout.strip() == "" and rx.ternctl("queue").stdout.strip() == "":
                break
            time.sleep(1)
        time.sleep(2)

        def index(paths):
            idx = {}
            for p in paths:
                msg = read_message(p)
                for line in msg.splitlines():
                    if line.lower().startswith("message-id:"):
                        idx.setdefault(line.split(":", 1)[1].strip().strip("<>"), []).append(p)
                        break
            return idx

        local = index(maildir_files(mx.mail_dir, "alice") + maildir_files(mx.mail_dir, "bob"))
        remote = index(maildir_files(rx.mail_dir, "user", domain="remote.test"))
        bounces = [read_message(p) for p in maildir_files(mx.mail_dir, "alice")
                   if "multipart/report" in read_message(p)]
        lost = [m for m in expect_local if m not in local] + [m for m in expect_remote if m not in remote]
        dups = [m for m, v in list(local.items()) + list(remote.items()) if len(v) > 1]
        bounced = sum(1 for m in expect_bounce if any(m in b for b in bounces))
        rc_mx, rc_rx = mx.stop(), rx.stop()
        reports = [r for r in (sanitizer_report(mx.log()), sanitizer_report(rx.log())) if r]

        print("\n== soak summary ==")
        print(f"duration {SECONDS}s, bad clients {counts['bad']}")
        print(f"sent {counts['sent']}  acknowledged {counts['acked']}  "
              f"delivered {len([m for m in expect_local if m in local]) + len([m for m in expect_remote if m in remote])}  "
              f"bounced {bounced}/{len(expect_bounce)}  lost {len(lost)}  duplicated {len(dups)}")
        print("rss/fds series (s, kB, fds):", series)
        marks = []
        for minute in (1, 10, 20, 30):
            near = [x for x in series if abs(x[0] - minute * 60) <= SAMPLE // 2]
            if near:
                marks.append(f"min {minute}: {near[0][1]} kB / {near[0][2]} fds")
        if marks:
            print("mx rss/fds at " + "; ".join(marks))
        print(f"exit status after SIGTERM: mx {rc_mx}, receiver {rc_rx}; sanitizers "
              f"(ASan, UBSan, LeakSanitizer at exit, ASAN_OPTIONS={os.environ.get('ASAN_OPTIONS', '')}): "
              + ("no report" if not reports else f"{len(reports)} report(s) below"))
        ok = not lost and not dups and bounced == len(expect_bounce) and not reports \
            and rc_mx == 0 and rc_rx == 0
        if len(series) >= 4:
            # flat: the last quarter's peak is within 20% (and 8 MB) of the
            # second quarter's peak; descriptors back within 16
            q = len(series) // 4
            early = max(s[1] for s in series[q:2 * q])
            late = max(s[1] for s in series[-q:])
            if late > early * 1.2 and late - early > 8192:
                print(f"memory grows: {early} kB -> {late} kB")
                ok = False
            if series[-1][2] > series[q][2] + 16:
                print(f"descriptors grow: {series[q][2]} -> {series[-1][2]}")
                ok = False
        for r in reports:
            print(r)
        print("soak:", "PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        stop.set()
        for t in (mx, rx):
            if t.proc is not None:
                t.kill9()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
