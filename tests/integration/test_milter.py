"""The milter client (src/policy/milter*.c) in a real ternd against real
milters, each private to the test on a unix socket (or loopback TCP):

  - OpenDKIM (Debian's opendkim, milter mode, a key from opendkim-genkey,
    simple/simple canonicalization so one octet of difference in what
    Tern hands it breaks the signature) signs mail passing through Tern;
    dkimpy verifies the delivered message. The same OpenDKIM in verify
    mode checks a signed message arriving through Tern (dkim=pass in its
    Authentication-Results), so the header fields and the body it saw are
    the stored ones;
  - a scripted milter (tests/milter/scripted_milter.py, python3-milter)
    that logs what it received (macros, connect data, envelope, header
    fields, body) and refuses at MAIL, RCPT (multi-line reply) and end of
    message, tempfails, discards (at RCPT and at the end), edits header
    fields (add folded, insert at the top, change, delete), replaces the
    body, changes the sender, adds and deletes recipients, quarantines and
    sends SMFIR_PROGRESS;
  - two milters in a chain (OpenDKIM and the scripted one): both edits land;
  - a milter that is down (no socket, a closed port): milter_default_action
    tempfail answers 4xx, accept lets mail through.
"""
import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time

import dkim
import pytest

from conftest import free_port, wait_for
from remote_fixtures import wait_log

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPTED = os.path.join(REPO, "tests", "milter", "scripted_milter.py")
OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"


# --- milters ----------------------------------------------------------------------


class Proc:
    """A background milter process with its log file."""

    def __init__(self, argv, log_path, sock_path=None, port=None):
        self.log_path = log_path
        f = open(log_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        f.close()
        self.sock_path, self.port = sock_path, port

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_up(self, what):
        def up():
            if self.p.poll() is not None:
                pytest.fail(f"{what} exited with {self.p.returncode}: {self.log()}")
            try:
                if self.sock_path:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(self.sock_path)
                else:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                s.close()
                return True
            except OSError:
                return False
        wait_for(up, timeout=15, what=what)

    def stop(self):
        # libmilter notices SIGTERM only every few seconds: a short grace, then KILL
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def scripted(tmp_path):
    """The scripted milter on a unix socket: (address, path of its event log)."""
    sock = os.path.join(str(tmp_path), "scripted.sock")
    events = os.path.join(str(tmp_path), "scripted.events")
    p = Proc(["/usr/bin/python3", SCRIPTED, "unix:" + sock, events],
             os.path.join(str(tmp_path), "scripted.log"), sock_path=sock)
    p.wait_up("the scripted milter")
    yield "unix:" + sock, events
    p.stop()


def scripted_events(path, event="eom"):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [e for e in (json.loads(line) for line in f if line.strip()) if e["event"] == event]


class OpenDKIM:
    """opendkim in the foreground on a unix socket, signing example.test with
    its own key; internal: the InternalHosts list (127.0.0.1 signs)."""

    def __init__(self, d, internal="127.0.0.1", canon="simple/simple"):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        r = subprocess.run([GENKEY, "-D", d, "-d", "example.test", "-s", "sel", "-b", "2048"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(os.path.join(d, "sel.txt")) as f:
            txt = f.read()
        # the TXT record's strings, joined: "v=DKIM1; h=sha256; k=rsa; p=..."
        self.txt = "".join(re.findall(r'"([^"]*)"', txt))
        self.sock = os.path.join(d, "opendkim.sock")
        # its own public key for verifying, without DNS (OpenDKIM's test hook)
        with open(os.path.join(d, "keys"), "w") as f:
            f.write(f"sel._domainkey.example.test {self.txt}\n")
        conf = os.path.join(d, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"""Syslog no
Background no
Socket local:{self.sock}
Domain example.test
Selector sel
KeyFile {d}/sel.private
Mode sv
Canonicalization {canon}
InternalHosts {internal}
RequireSafeKeys no
PidFile {d}/opendkim.pid
AlwaysAddARHeader yes
AuthservID mx.example.test
TestPublicKeys {d}/keys
""")
        self.proc = Proc([OPENDKIM, "-f", "-x", conf], os.path.join(d, "opendkim.log"), sock_path=self.sock)
        self.proc.wait_up("opendkim")
        self.addr = "unix:" + self.sock

    def dnsfunc(self, name, timeout=5):
        assert name in (b"sel._domainkey.example.test.", "sel._domainkey.example.test."), name
        return self.txt.encode()

    def stop(self):
        self.proc.stop()


@pytest.fixture
def opendkim(tmp_path):
    o = OpenDKIM(os.path.join(str(tmp_path), "opendkim"))
    yield o
    o.stop()


# --- Tern -------------------------------------------------------------------------


def milter_ternd(ternd_factory, milters, **opts):
    o = {"milters": milters, "mail_auth": "no", "milter_command_timeout": "10",
         "milter_eom_timeout": "20", "milter_connect_timeout": "5"}
    o.update(opts)
    return ternd_factory(**o)


def message(subject, msgid, frm="bob@example.test", to="alice@example.test", extra=b"",
            body=b"Hello,\r\n\r\nthis is the body.  \r\nSecond  line\twith tab\r\n"):
    return (b"From: Bob <" + frm.encode() + b">\r\n"
            b"To: <" + to.encode() + b">\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <" + msgid.encode() + b">\r\n"
            b"X-Folded: first part\r\n\tsecond part\r\n"
            + extra +
            b"\r\n" + body)


def send(port, frm, rcpts, msg, helo="client.example.test"):
    """One transaction; returns (mail reply, [rcpt replies], data reply or None)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo(helo)
        mr = s.mail(frm)
        if mr[0] != 250:
            return mr, [], None
        rr = [s.rcpt(r) for r in rcpts]
        if not any(r[0] == 250 for r in rr):
            return mr, rr, None
        s.putcmd("data")
        code, text = s.getreply()
        if code != 354:
            return mr, rr, (code, text)
        q = smtplib.quotedata(msg.decode("latin-1")).encode("latin-1")
        s.send(q + (b".\r\n" if q.endswith(b"\r\n") else b"\r\n.\r\n"))
        dr = s.getreply()
        return mr, rr, dr


def delivered(t, user, msgid, timeout=15):
    """The delivered message carrying msgid for user@example.test, as bytes
    with CRLF line ends (Maildir files hold LF)."""
    def find():
        for p in t.messages(user):
            with open(p, "rb") as f:
                b = f.read()
            if msgid.encode() in b:
                return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return None
    return wait_for(find, timeout=timeout, what=f"{msgid} for {user}")


def not_delivered(t, user, msgid, wait=1.0):
    time.sleep(wait)
    for p in t.messages(user):
        with open(p, "rb") as f:
            assert msgid.encode() not in f.read(), f"{msgid} was delivered to {user}"


def fields(raw):
    """Header fields of a message: [(name, whole field bytes)] in order."""
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    out = []
    for f in re.split(rb"\r\n(?![ \t])", head):
        if f:
            out.append((f.split(b":", 1)[0], f))
    return out


# --- OpenDKIM ---------------------------------------------------------------------


def test_opendkim_signs_mail_through_tern(ternd_factory, opendkim):
    """OpenDKIM (libmilter) signs with simple/simple canonicalization what
    Tern hands it; dkimpy verifies the delivered message, so header values
    (leading space, folding) and the body reached the milter exactly as
    stored, and its DKIM-Signature came back intact."""
    t = milter_ternd(ternd_factory, opendkim.addr)
    msg = message("signed by opendkim", "odk-1@example.test")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", "odk-1@example.test")
    sigs = [f for n, f in fields(raw) if n.lower() == b"dkim-signature"]
    assert len(sigs) == 1, raw[:2000]
    assert b"d=example.test" in sigs[0] and b"s=sel" in sigs[0], sigs[0]
    assert b"c=simple/simple" in sigs[0], sigs[0]
    assert dkim.verify(raw, dnsfunc=opendkim.dnsfunc), raw[:3000]
    # a changed octet breaks it (the check above can fail)
    bad = raw.replace(b"this is the body.", b"this is the body!")
    assert not dkim.verify(bad, dnsfunc=opendkim.dnsfunc)
    # the signature went above the fields it signs
    names = [n.lower() for n, f in fields(raw)]
    assert names.index(b"dkim-signature") < names.index(b"from"), names
    log = t.log()
    assert "milter_error" not in log, log[-3000:]


def test_opendkim_verifies_a_signed_message(ternd_factory, tmp_path):
    """OpenDKIM as a verifier (127.0.0.1 not internal): a message signed
    with its key passes (dkim=pass in the Authentication-Results it adds);
    the same message with an altered body fails."""
    o = OpenDKIM(os.path.join(str(tmp_path), "odkv"), internal="192.0.2.99")
    try:
        with open(os.path.join(o.dir, "sel.private"), "rb") as f:
            key = f.read()
        t = milter_ternd(ternd_factory, o.addr)
        results = {}
        for name, tamper in (("good", False), ("tampered", True)):
            mid = f"odkv-{name}@example.test"
            msg = message(f"verify {name}", mid)
            sig = dkim.sign(msg, b"sel", b"example.test", key, canonicalize=(b"simple", b"simple"),
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                             b"x-folded"])
            signed = sig + msg
            if tamper:
                signed = signed.replace(b"Second  line", b"Second line")
            mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], signed)
            assert dr and dr[0] == 250, (mr, rr, dr)
            raw = delivered(t, "alice", mid)
            ar = [f for n, f in fields(raw) if n.lower() == b"authentication-results"]
            assert ar, raw[:2000]
            results[name] = b" ".join(ar)
        assert b"dkim=pass" in results["good"], results
        assert b"dkim=fail" in results["tampered"] or b"dkim=neutral" in results["tampered"] \
            or b"dkim=permerror" in results["tampered"], results
    finally:
        o.stop()


# --- the scripted milter ------------------------------------------------------------


def test_scripted_milter_sees_the_transaction(ternd_factory, scripted):
    """Macros, connect data, HELO, envelope with ESMTP arguments, header
    fields (one space after the colon taken off, folds as LF) and the
    body reach a libmilter milter as Sendmail and Postfix give them."""
    addr, events = scripted
    t = milter_ternd(ternd_factory, addr)
    msg = message("just look", "look-1@example.test")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test", "bob@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    qid = re.search(rb"queued as (\S+)", dr[1]).group(1).decode()
    delivered(t, "alice", "look-1@example.test")
    ev = wait_for(lambda: scripted_events(events), what="the milter's log")[-1]
    assert ev["conn"][0] in ("localhost", "[127.0.0.1]"), ev["conn"]
    assert ev["conn"][1][0] == "127.0.0.1", ev["conn"]
    assert ev["helo"] == "client.example.test"
    assert ev["mail"][0] == "<bob@example.test>", ev["mail"]
    assert [r[0] for r in ev["rcpts"]] == ["<alice@example.test>", "<bob@example.test>"]
    assert ev["rcpt_macros"] == ["alice@example.test", "bob@example.test"], ev["rcpt_macros"]
    m = ev["macros"]
    assert m["j"] == "mx.example.test", m
    assert m["i"] == qid, (m, qid)
    assert m["{daemon_name}"], m
    assert ev["mail_macros"]["{mail_addr}"] == "bob@example.test", ev["mail_macros"]
    assert ev["mail_macros"]["{client_addr}"] == "127.0.0.1", ev["mail_macros"]
    hdrs = ev["headers"]
    names = [h[0] for h in hdrs]
    # our Received field first, then the message's own
    assert names[0] == "Received", names
    assert names[1:] == ["From", "To", "Subject", "Date", "Message-ID", "X-Folded"], names
    assert hdrs[3][1] == "just look"
    assert hdrs[6][1] == "first part\n\tsecond part", hdrs[6]
    assert ev["eoh"] is True
    assert ev["body"] == "Hello,\r\n\r\nthis is the body.  \r\nSecond  line\twith tab\r\n", ev["body"]


def test_scripted_refusals(ternd_factory, scripted):
    """Refusals carry the milter's text: 451 at MAIL, a multi-line 550 at
    RCPT (the other recipient still accepted), 554 and the default 4xx at
    the end; nothing refused is delivered."""
    addr, events = scripted
    t = milter_ternd(ternd_factory, addr)
    mr, rr, dr = send(t.port, "tempfail@example.test", ["alice@example.test"], b"x\r\n")
    assert mr[0] == 451 and b"Scripted milter says later" in mr[1], mr
    msg = message("fine", "ref-ok@example.test")
    mr, rr, dr = send(t.port, "bob@example.test", ["reject@remote.test", "alice@example.test"], msg)
    assert rr[0][0] == 550, rr
    text = rr[0][1]
    assert b"Scripted milter refuses" in text and b"this recipient" in text and b"really" in text, rr
    assert rr[1][0] == 250 and dr[0] == 250, (rr, dr)
    delivered(t, "alice", "ref-ok@example.test")
    for subject, code, words in (("please reject", 554, b"Refused by the scripted milter"),
                                 ("please tempfail", 451, b"")):
        mid = subject.replace(" ", "-") + "@example.test"
        mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], message(subject, mid))
        assert dr and dr[0] == code and words in dr[1], (subject, dr)
        not_delivered(t, "alice", mid, wait=0.2)
    # discard at the end, and at RCPT: 250 and nothing delivered
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], message("discard me", "disc-1@x"))
    assert dr and dr[0] == 250, dr
    mr, rr, dr = send(t.port, "bob@example.test", ["discard@remote.test", "alice@example.test"],
                      message("fine", "disc-2@x"))
    assert rr[0][0] == 250 and dr and dr[0] == 250, (rr, dr)
    not_delivered(t, "alice", "disc-1@x")
    not_delivered(t, "alice", "disc-2@x", wait=0)
    assert "milter_error" not in t.log(), t.log()[-3000:]


def test_scripted_edits(ternd_factory, scripted):
    """Header edits (a folded field added, one inserted at the top, one
    changed, one deleted) and a body replaced in two chunks with LF line
    ends land in the stored message, CRLF throughout."""
    addr, events = scripted
    t = milter_ternd(ternd_factory, addr)
    msg = message("edit body", "edit-1@example.test", extra=b"X-Remove-Me: please\r\n")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", "edit-1@example.test")
    head, _, body = raw.partition(b"\r\n\r\n")
    f = fields(raw)
    names = [n for n, _ in f]
    assert b"X-Remove-Me" not in names, names
    subj = [v for n, v in f if n == b"Subject"]
    assert subj == [b"Subject: edited by the scripted milter"], subj
    added = [v for n, v in f if n == b"X-Added"]
    assert added == [b"X-Added: first line\r\n\tsecond line"], added
    assert names.index(b"X-Top") < names.index(b"Received"), names
    assert body == b"replaced body line one\r\nreplaced body line two\r\n", body


def test_scripted_envelope_and_quarantine(ternd_factory, scripted):
    """CHGFROM, DELRCPT and ADDRCPT (with ESMTP arguments) change the
    envelope; QUARANTINE holds the message in the queue; SMFIR_PROGRESS
    keeps a slow milter within a short timeout."""
    addr, events = scripted
    t = milter_ternd(ternd_factory, addr, milter_eom_timeout="1")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"],
                      message("envelope progress", "env-1@example.test"))
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "bob", "env-1@example.test")
    assert raw.startswith(b"Return-Path: <changed@example.test>"), raw[:300]
    not_delivered(t, "alice", "env-1@example.test")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"],
                      message("quarantine", "quar-1@example.test"))
    assert dr and dr[0] == 250, dr
    qid = re.search(rb"queued as (\S+)", dr[1]).group(1).decode()
    q = wait_for(lambda: (lambda r: r if qid in r.stdout and "held" in r.stdout else None)(t.ternctl("queue")),
                 what="the quarantined message held in the queue")
    assert q.returncode == 0
    not_delivered(t, "alice", "quar-1@example.test")


def test_chain_opendkim_and_scripted(ternd_factory, scripted, opendkim):
    """Two milters: the scripted one adds an unsigned field, OpenDKIM signs;
    both edits are in the stored message and the signature verifies."""
    addr, events = scripted
    t = milter_ternd(ternd_factory, f"{addr}, {opendkim.addr}")
    msg = message("edit in a chain", "chain-1@example.test", extra=b"X-Remove-Me: x\r\n")
    mr, rr, dr = send(t.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", "chain-1@example.test")
    names = [n.lower() for n, _ in fields(raw)]
    assert b"x-added" in names and b"dkim-signature" in names, names
    # OpenDKIM signed the original Subject, which the scripted milter changed
    # (each milter sees the original message, as with Postfix): the
    # signature must fail for that reason alone
    assert b"Subject: edited by the scripted milter" in raw
    assert not dkim.verify(raw, dnsfunc=opendkim.dnsfunc)
    orig = raw.replace(b"Subject: edited by the scripted milter", b"Subject: edit in a chain")
    # put back what the scripted milter removed, where it was (after X-Folded)
    orig = orig.replace(b"\tsecond part\r\n", b"\tsecond part\r\nX-Remove-Me: x\r\n", 1)
    assert dkim.verify(orig, dnsfunc=opendkim.dnsfunc), orig[:3000]


# --- a milter that is down -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_dead_milter_default_action(ternd_factory, tmp_path, kind):
    """tempfail: every connection is refused with 4xx while the milter is
    missing (nothing is accepted); accept: mail flows without it."""
    dead = (f"unix:{tmp_path}/no-such-milter.sock" if kind == "unix"
            else f"inet:127.0.0.1:{free_port()}")
    t = milter_ternd(ternd_factory, dead, start=False)
    t.start(wait=False)  # it greets with 4xx, not 220

    def connected():
        try:
            return socket.create_connection(("127.0.0.1", t.port), timeout=20)
        except OSError:
            return None
    s = wait_for(connected, timeout=20, what="ternd's port")
    s.settimeout(20)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(512)
        if not chunk:
            break
        data += chunk
    if data.startswith(b"220"):
        s.sendall(b"EHLO c.example\r\nMAIL FROM:<bob@example.test>\r\n")
        time.sleep(0.5)
        data = s.recv(4096)
    s.close()
    assert re.search(rb"^4\d\d[ -]4\.", data, re.M), data
    wait_log(t, r"event=milter_error [^\n]*reason=[^\n]*action=tempfail")
    root2 = os.path.join(str(tmp_path), "accept")
    os.makedirs(root2)
    t2 = milter_ternd(ternd_factory, dead, milter_default_action="accept", root=root2)
    mr, rr, dr = send(t2.port, "bob@example.test", ["alice@example.test"], message("no milter", "dead-1@x"))
    assert dr and dr[0] == 250, (mr, rr, dr)
    delivered(t2, "alice", "dead-1@x")
