"""The filter (src/policy/filter.c) in a real ternd: every message through
milters and mail authentication.

  - DKIM signing of authenticated submission mail with keys made by
    `ternctl dkim keygen` (RSA and Ed25519: two signatures), delivered to a
    real Postfix (MX and the _domainkey TXT records served by nsd), and
    verified there by dkimpy (keys fetched from nsd) and by OpenDKIM's
    opendkim-testmsg (run in a private network and mount namespace whose
    /etc/resolv.conf points at a DNS server answering from the nsd zone);
  - local submission (ternctl sendmail) signed too;
  - Authentication-Results on MX mail from an untrusted client, with the
    client's forged Authentication-Results claiming our name removed;
  - a small milter (python3-milter, libmilter underneath) refusing at
    MAIL, RCPT and end of message, discarding, editing headers, the body
    and the envelope (the edited message is signed again and still
    verifies), quarantining (held in the queue);
  - a milter that is down: milter_default_action tempfail and accept;
  - SIGHUP picks up new milter settings for new connections;
  - `ternctl check` names a bad milter address with FILE:LINE.

Everything listens on loopback; nsd, Postfix and the milter are private
to the test. Postfix's master needs root (the test skips without it).
"""

import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

import dkim
import dnslib
import pytest

from conftest import (PASSWORDS, TERNCTL, Ternd, free_port, header_values, make_message,
                      read_message, sanitizer_report, wait_for)
from remote_fixtures import Nsd, Postfix, free_port_on, self_signed_cert, wait_log

HOST = "mx.example.test"
SELECTOR = "tern"

# --- the world: keys, nsd, Postfix ------------------------------------------------


def keygen(keydir, kind):
    """`ternctl dkim keygen example.test tern --type KIND`: the TXT value."""
    r = subprocess.run([TERNCTL, "-c", "/dev/null", "dkim", "keygen", "example.test", SELECTOR,
                        "--type", kind, "--dir", keydir], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r'IN TXT "([^"]+)"', r.stdout)
    assert m, r.stdout
    return m.group(1)


def txt_rdata(value):
    """A TXT value as zone-file strings of at most 200 octets each."""
    return " ".join('"%s"' % value[i:i + 200] for i in range(0, len(value), 200))


class World:
    pass


@pytest.fixture(scope="module")
def world():
    root = tempfile.mkdtemp(prefix="tern-filter-")
    os.chmod(root, 0o755)
    w = World()
    w.root = root
    w.keydir = os.path.join(root, "dkim")
    w.txt = {"rsa": keygen(w.keydir, "rsa"), "ed25519": keygen(w.keydir, "ed25519")}
    # Tern signs with both keys of one selector; DNS holds one key per name,
    # so tern._domainkey has the RSA record and the Ed25519 key is published
    # at ed._domainkey for the test that signs with selector "ed"
    zone = (f"{SELECTOR}._domainkey.example TXT {txt_rdata(w.txt['rsa'])}\n"
            f"ed._domainkey.example TXT {txt_rdata(w.txt['ed25519'])}\n"
            "example        TXT \"v=spf1 ip4:127.0.0.1 -all\"\n"
            "_dmarc.example TXT \"v=DMARC1; p=none\"\n"
            "remote         TXT \"v=spf1 ip4:127.0.0.1 -all\"\n"
            "postfix        MX 10 mx.postfix.test.\n"
            "mx.postfix     A  127.0.0.4\n")
    w.nsd = Nsd(root, zone).start()
    w.port = free_port_on(["127.0.0.4"])
    w.postfix = None
    try:
        yield w
    finally:
        if w.postfix:
            w.postfix.stop()
        w.nsd.stop()
        shutil.rmtree(root, ignore_errors=True)


def the_postfix(world):
    """Postfix for postfix.test on 127.0.0.4, started on first use."""
    if world.postfix is None:
        if os.getuid() != 0:
            pytest.skip("Postfix's master must start as root")
        pf = Postfix(world.root, "127.0.0.4", world.port)
        pf.start()
        world.postfix = pf
    return world.postfix


# --- DKIM verification -------------------------------------------------------------


def nsd_txt(world, name):
    """TXT of name from the nsd, strings joined (what a verifier fetches)."""
    q = dnslib.DNSRecord.question(name.rstrip("."), "TXT")
    a = dnslib.DNSRecord.parse(q.send("127.0.0.1", world.nsd.port, tcp=True, timeout=5))
    for rr in a.rr:
        if rr.rtype == dnslib.QTYPE.TXT:
            return b"".join(rr.rdata.data)
    return b""


def signatures(raw):
    """The DKIM-Signature fields of a message (bytes), as (index, tags dict)."""
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    head = re.sub(rb"\r?\n[ \t]+", b" ", head)
    out = []
    for line in head.splitlines():
        if line.lower().startswith(b"dkim-signature:"):
            tags = {}
            for part in line.split(b":", 1)[1].split(b";"):
                if b"=" in part:
                    k, v = part.split(b"=", 1)
                    tags[k.strip().decode()] = re.sub(rb"\s+", b"", v).decode()
            out.append(tags)
    return out


def dkimpy_verify_all(world, raw):
    """Every DKIM-Signature of raw verifies with dkimpy (keys from nsd)."""
    sigs = signatures(raw)
    assert sigs, raw[:2000]
    d = dkim.DKIM(raw)
    for i in range(len(sigs)):
        ok = d.verify(idx=i, dnsfunc=lambda name, timeout=5: nsd_txt(world, name.decode()))
        assert ok, f"dkimpy: signature {i} ({sigs[i].get('a')}) does not verify"
    return sigs


OPENDKIM_NS = r'''
import subprocess, sys
from dnslib.server import DNSServer
from dnslib.zoneresolver import ZoneResolver
zone, msg, resolv = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open(resolv, "w") as f:
    f.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
res = ZoneResolver(open(zone).read(), glob=False)
for tcp in (False, True):
    DNSServer(res, port=53, address="127.0.0.1", tcp=tcp).start_thread()
r = subprocess.run(["opendkim-testmsg"], stdin=open(msg, "rb"), capture_output=True)
sys.stdout.write(r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace"))
sys.exit(r.returncode)
'''


def opendkim_verify(world, raw):
    """opendkim-testmsg on raw: (exit status, output). It resolves through
    libc, so it runs in its own network and mount namespace with a
    resolv.conf naming a DNS server that answers from the nsd zone file."""
    if shutil.which("opendkim-testmsg") is None:
        pytest.fail("opendkim-testmsg is not installed (Debian opendkim-tools)")
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("opendkim-testmsg's DNS needs a private namespace (root, unshare)")
    d = tempfile.mkdtemp(prefix="odk-", dir=world.root)
    msg = os.path.join(d, "msg")
    with open(msg, "wb") as f:
        f.write(raw)
    r = subprocess.run(["unshare", "-mn", "/usr/bin/python3", "-c", OPENDKIM_NS, world.nsd.zone, msg,
                        os.path.join(d, "resolv.conf")], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def only_signature(raw, keep):
    """raw with every DKIM-Signature field but the keep-th (0-based) removed."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    out, n = [], 0
    for f in fields:
        if f.lower().startswith(b"dkim-signature:"):
            if n != keep:
                n += 1
                continue
            n += 1
        out.append(f)
    return b"\r\n".join(out) + sep + body


def crlf(text):
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- ternd helpers -----------------------------------------------------------------


def filter_ternd(ternd_factory, world, tmp, start=True, **opts):
    """A ternd resolving through nsd, delivering remote mail to Postfix's port,
    signing with the world's keys, with TLS submission."""
    cert, key = self_signed_cert(str(tmp), HOST)
    sub = free_port()
    o = {"dns_resolver": world.nsd.resolver, "smtp_port": world.port, "dkim_key_dir": world.keydir,
         "tls_cert": cert, "tls_key": key, "submission_listen": f"127.0.0.1:{sub}",
         "retry_min": "1s", "retry_max": "2s"}
    o.update(opts)
    t = ternd_factory(start=start, **o)
    t.sub_port = sub
    return t


def submit_authenticated(t, frm, rcpts, msg):
    """Submission: STARTTLS, AUTH PLAIN as alice, one message; the 250 text."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", t.sub_port, timeout=30) as s:
        s.ehlo("client.example.test")
        s.starttls(context=ctx)
        s.ehlo("client.example.test")
        s.login("alice@example.test", PASSWORDS["alice"])
        s.mail(frm)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
        return text.decode()


def smtp_send(port, frm, rcpts, msg, helo="client.example.test"):
    """Plain SMTP: (MAIL reply, [RCPT replies], DATA reply or None)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo(helo)
        mr = s.mail(frm)
        if mr[0] != 250:
            return mr, [], None
        rr = [s.rcpt(r) for r in rcpts]
        if not any(c == 250 for c, _ in rr):
            return mr, rr, None
        try:
            dr = s.data(msg)
        except smtplib.SMTPDataError as e:
            dr = (e.smtp_code, e.smtp_error)
        return mr, rr, dr


def signed_msg(subject, mid=None, frm="Alice <alice@example.test>", to="user@postfix.test", body=None):
    mid = mid or f"{uuid.uuid4().hex}@example.test"
    body = body or f"Hello,\r\n\r\nthis is {mid}.\r\n.leading dot\r\n"
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}").encode(), mid


def delivered(t, user, mid, timeout=20):
    """The raw bytes of the message with Message-ID mid in user's Maildir."""
    def find():
        for p in t.messages(user):
            with open(p, "rb") as f:
                b = f.read()
            if mid.encode() in b:
                return b
        return None
    return crlf(wait_for(find, timeout=timeout, what=f"{mid} for {user}"))


# --- signing -------------------------------------------------------------------------


def test_submission_signed_rsa_and_ed25519_verified_at_postfix(world, ternd_factory, tmp_path):
    """Authenticated submission, both keys: two signatures (Ed25519, RSA)
    that dkimpy and OpenDKIM verify on the copy Postfix delivered."""
    pf = the_postfix(world)
    t = filter_ternd(ternd_factory, world, tmp_path)
    msg, mid = signed_msg("signed at submission")
    text = submit_authenticated(t, "alice@example.test", ["user@postfix.test"], msg)
    qid = re.search(r"queued as (\S+)", text).group(1)
    line = wait_log(t, rf"event=filter [^\n]*qid={qid} [^\n]*").group(0)
    assert "result=queued" in line and "signed=example.test" in line, line

    def got():
        for p in pf.messages():
            with open(p, "rb") as f:
                b = f.read()
            if mid.encode() in b:
                return b
        return None
    raw = crlf(wait_for(got, timeout=30, what="the message in Postfix's Maildir"))
    sigs = signatures(raw)
    algs = sorted(s["a"] for s in sigs)
    assert algs == ["ed25519-sha256", "rsa-sha256"], sigs
    assert all(s["d"] == "example.test" and s["s"] == SELECTOR for s in sigs), sigs
    # Postfix put its Received on top; the signatures still verify
    assert re.search(rb"^Return-Path: <alice@example.test>", raw), raw[:300]
    # each signature with dkimpy against the record of its own key
    for i, s in enumerate(sigs):
        v = world.txt["ed25519" if s["a"].startswith("ed25519") else "rsa"]
        assert dkim.DKIM(only_signature(raw, i)).verify(dnsfunc=lambda name, timeout=5, v=v: v.encode()), \
            f"dkimpy: {s['a']}"
    # through DNS, as a receiver does: the RSA signature (tern._domainkey
    # holds the RSA record) with dkimpy and OpenDKIM
    rsa_i = [i for i, s in enumerate(sigs) if s["a"] == "rsa-sha256"][0]
    rsa_only = only_signature(raw, rsa_i)
    assert dkim.DKIM(rsa_only).verify(dnsfunc=lambda name, timeout=5: nsd_txt(world, name.decode()))
    rc, out = opendkim_verify(world, rsa_only)
    assert rc == 0, f"opendkim-testmsg: rc {rc}: {out}"
    # and the checks can fail: a changed body is refused by both
    bad = rsa_only.replace(b"this is", b"this was")
    try:
        accepted = dkim.DKIM(bad).verify(dnsfunc=lambda name, timeout=5: nsd_txt(world, name.decode()))
    except dkim.ValidationError:
        accepted = False  # dkimpy raises on a body hash mismatch
    assert not accepted, "dkimpy accepted a changed body"

    rc, out = opendkim_verify(world, bad)
    assert rc != 0, f"opendkim-testmsg accepted a changed body: {out}"


def test_ed25519_signature_verified_through_dns_by_opendkim(world, ternd_factory, tmp_path):
    """Only an Ed25519 key (selector "ed"): the single signature verifies
    through nsd with dkimpy and with OpenDKIM."""
    keydir = os.path.join(str(tmp_path), "keys")
    os.makedirs(os.path.join(keydir, "example.test"))
    shutil.copy(os.path.join(world.keydir, "example.test", f"{SELECTOR}.ed25519.pem"),
                os.path.join(keydir, "example.test", "ed.ed25519.pem"))
    os.chmod(os.path.join(keydir, "example.test", "ed.ed25519.pem"), 0o600)
    t = filter_ternd(ternd_factory, world, tmp_path, dkim_key_dir=keydir, dkim_selector="ed")
    msg, mid = signed_msg("ed25519 only", to="bob@example.test")
    submit_authenticated(t, "alice@example.test", ["bob@example.test"], msg)
    raw = delivered(t, "bob", mid)
    sigs = dkimpy_verify_all(world, raw)
    assert [s["a"] for s in sigs] == ["ed25519-sha256"] and sigs[0]["s"] == "ed", sigs
    rc, out = opendkim_verify(world, raw)
    assert rc == 0, f"opendkim-testmsg: rc {rc}: {out}"


def test_local_sendmail_is_signed(world, ternd_factory, tmp_path):
    """ternctl sendmail (the control socket) is local submission: signed."""
    keydir = os.path.join(str(tmp_path), "keys")
    os.makedirs(os.path.join(keydir, "example.test"))
    shutil.copy(os.path.join(world.keydir, "example.test", f"{SELECTOR}.rsa.pem"),
                os.path.join(keydir, "example.test", f"{SELECTOR}.rsa.pem"))
    t = filter_ternd(ternd_factory, world, tmp_path, dkim_key_dir=keydir, mynetworks="")
    msg, mid = signed_msg("from cron", to="bob@example.test")
    r = subprocess.run([TERNCTL, "-c", "/dev/null"] + sum((["-o", f"{k}={v}"] for k, v in t.opts.items()), [])
                       + ["sendmail", "-f", "alice@example.test", "bob@example.test"],
                       input=msg, capture_output=True, timeout=60, cwd=t.root)
    assert r.returncode == 0, r.stderr
    raw = delivered(t, "bob", mid)
    sigs = dkimpy_verify_all(world, raw)
    assert [s["a"] for s in sigs] == ["rsa-sha256"], sigs
    # local mail is not verified: no Authentication-Results
    assert b"Authentication-Results:" not in raw.split(b"\r\n\r\n")[0]


# --- verification on MX mail -----------------------------------------------------------


def test_mx_mail_gets_authentication_results_and_forged_ones_go(world, ternd_factory, tmp_path):
    """An untrusted MX client: our Authentication-Results comes first (SPF
    pass for remote.test from 127.0.0.1); a field the client wrote claiming
    our name is removed, another server's is kept; nothing is signed."""
    t = filter_ternd(ternd_factory, world, tmp_path, mynetworks="")
    mid = f"{uuid.uuid4().hex}@remote.test"
    msg = (f"Authentication-Results: {HOST}; dkim=pass header.d=bank.example\r\n"
           f"Authentication-Results: other.example; spf=pass\r\n"
           f"authentication-results: MX.EXAMPLE.TEST;\r\n\tdmarc=pass\r\n"
           f"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: forged\r\n"
           f"Message-ID: <{mid}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n").encode()
    mr, rr, dr = smtp_send(t.port, "someone@remote.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", mid)
    text = raw.decode()
    ars = header_values(read_message_bytes(raw), "Authentication-Results")
    ours = [a for a in ars if a.lower().startswith(HOST)]
    assert len(ours) == 1, ars
    assert "spf=pass" in ours[0] and "smtp.mailfrom=someone@remote.test" in ours[0], ours
    assert any(a.startswith("other.example;") for a in ars), ars
    assert "bank.example" not in text and "MX.EXAMPLE.TEST" not in text, text[:1500]
    assert "DKIM-Signature" not in text
    line = wait_log(t, rf"event=filter [^\n]*result=queued[^\n]*").group(0)
    assert "ar_removed=2" in line and "spf=pass" in line, line


def test_mx_mail_forged_results_past_a_line_that_is_no_field(world, ternd_factory, tmp_path):
    """A forged Authentication-Results claiming our name hidden behind a
    line that is no field (readers disagree on where such a header section
    ends), and one whose authserv-id sits behind comments nested deeper than
    we parse: neither reaches the mailbox as a header field of ours. The
    first becomes body (an empty line goes before the odd line), the second
    is removed."""
    t = filter_ternd(ternd_factory, world, tmp_path, mynetworks="")
    mid = f"{uuid.uuid4().hex}@remote.test"
    deep = "(" * 40 + ")" * 40
    msg = (f"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: odd\r\n"
           f"Message-ID: <{mid}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           f"Authentication-Results: {deep} {HOST}; dmarc=pass header.from=deep.example\r\n"
           f"this line has no colon\r\n"
           f"Authentication-Results: {HOST}; dkim=pass header.d=bank.example\r\n"
           f"\r\nbody\r\n").encode()
    mr, rr, dr = smtp_send(t.port, "someone@remote.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", mid)
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    head = head.decode()
    assert "deep.example" not in raw.decode(), raw.decode()[:1500]
    assert "bank.example" not in head and "this line has no colon" not in head, head
    assert b"this line has no colon" in body and b"bank.example" in body, body[:500]
    ars = header_values(read_message_bytes(raw), "Authentication-Results")
    assert len(ars) == 1 and ars[0].lower().startswith(HOST), ars
    line = wait_log(t, rf"event=filter [^\n]*result=queued[^\n]*").group(0)
    assert "ar_removed=1" in line, line


def read_message_bytes(raw):
    return raw.replace(b"\r\n", b"\n").decode("utf-8", "replace")


# --- milters --------------------------------------------------------------------------

MILTER_SRC = r'''
import sys
import time
import Milter

class T(Milter.Base):
    def __init__(self):
        self.subject = ""
        self.rcpts = []
        self.chunks = 0
    def envfrom(self, f, *args):
        if "tempfail-mail" in f:
            self.setreply("451", "4.7.1", "Milter says later")
            return Milter.TEMPFAIL
        return Milter.CONTINUE
    def envrcpt(self, to, *args):
        self.rcpts.append(to)
        if "slow" in to:
            time.sleep(1.5)
        if "reject-rcpt" in to:
            self.setreply("550", "5.7.1", "Milter refuses this recipient")
            return Milter.REJECT
        return Milter.CONTINUE
    def header(self, name, value):
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE
    def body(self, chunk):
        self.chunks += 1
        if "stall" in self.subject and self.chunks == 1:
            time.sleep(2)
        return Milter.CONTINUE
    def eom(self):
        s = self.subject
        if "slow" in s:
            time.sleep(1.5)
        if "reject" in s:
            self.setreply("554", "5.7.1", "Milter refuses the message")
            return Milter.REJECT
        if "tempfail" in s:
            return Milter.TEMPFAIL
        if "discard" in s:
            return Milter.DISCARD
        if "edit" in s:
            self.addheader("X-Milter", "seen by the test milter")
            self.chgheader("Subject", 1, "edited by the milter")
            self.addheader("X-Top", "first", 0)
        if "body" in s:
            self.replacebody(b"the milter wrote this body\r\n")
        if "envelope" in s:
            self.delrcpt("<alice@example.test>")
            self.addrcpt("<bob@example.test>")
            self.chgfrom("<changed@example.test>")
        if "quarantine" in s:
            self.quarantine("suspicious test message")
        if "delall" in s:
            for r in self.rcpts:
                self.delrcpt(r)
        if "delrefused" in s:
            self.delrcpt("<reject-rcpt@remote.test>")
        if "addar" in s:
            self.addheader("Authentication-Results", "mx.example.test; x-milter=pass")
        return Milter.ACCEPT

Milter.factory = T
Milter.set_flags(Milter.ADDHDRS + Milter.CHGHDRS + Milter.ADDRCPT + Milter.DELRCPT
                 + Milter.CHGBODY + Milter.QUARANTINE + Milter.CHGFROM)
Milter.runmilter("tern-test", "inet:%s@127.0.0.1" % sys.argv[1], 60)
'''


@pytest.fixture
def milter(tmp_path):
    """The test milter on a free port: its address for `milters`."""
    port = free_port()
    log = open(os.path.join(str(tmp_path), "milter.log"), "wb")
    p = subprocess.Popen(["/usr/bin/python3", "-c", MILTER_SRC, str(port)], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    log.close()

    def up():
        if p.poll() is not None:
            pytest.fail(f"the test milter exited: {open(os.path.join(str(tmp_path), 'milter.log')).read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=15, what="the test milter")
    yield f"inet:127.0.0.1:{port}"
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_milter_refusals_and_discard(world, ternd_factory, tmp_path, milter):
    """A milter's refusals at MAIL, RCPT and end of message reach the client
    with the milter's own text; a discard looks like success and delivers
    nothing; the one line per message says what happened."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    mr, rr, dr = smtp_send(t.port, "tempfail-mail@example.test", ["alice@example.test"], b"x\r\n")
    assert mr[0] == 451 and b"Milter says later" in mr[1], mr
    # the recipient check passes (a trusted client may relay), the milter refuses
    msg, ok_mid = signed_msg("plain", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "bob@example.test", ["reject-rcpt@remote.test", "alice@example.test"], msg)
    assert rr[0][0] == 550 and b"Milter refuses this recipient" in rr[0][1], rr
    assert rr[1][0] == 250 and dr[0] == 250, (rr, dr)
    delivered(t, "alice", ok_mid)
    refused = []
    for subject, code in (("please reject", 554), ("please tempfail", 451)):
        msg, mid = signed_msg(subject, to="alice@example.test")
        mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
        assert dr[0] == code, (subject, dr)
        if code == 554:
            assert b"Milter refuses the message" in dr[1], dr
        refused.append(mid)
    msg, mid = signed_msg("please discard", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr[0] == 250 and b"queued as" in dr[1], dr
    refused.append(mid)
    wait_log(t, r"event=filter [^\n]*result=discard")
    wait_log(t, r"event=filter [^\n]*result=reject[^\n]*why=milter")
    wait_log(t, r"event=filter [^\n]*result=tempfail")
    time.sleep(1)
    texts = [open(p, "rb").read() for p in t.messages("alice")]
    assert not any(m.encode() in b for b in texts for m in refused), "refused or discarded mail delivered"
    assert sum(1 for b in texts if ok_mid.encode() in b) == 1


def test_milter_edits_signed_after_editing(world, ternd_factory, tmp_path, milter):
    """A milter adds and changes header fields and replaces the body of a
    message Tern signs: the stored message carries the edits and the
    signatures made over the final content verify."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    msg, mid = signed_msg("edit body", to="bob@example.test")
    mr, rr, dr = smtp_send(t.port, "alice@example.test", ["bob@example.test"], msg)
    assert dr[0] == 250, dr
    raw = delivered(t, "bob", mid)
    head, _, body = raw.partition(b"\r\n\r\n")
    head += b"\r\n"
    assert b"\r\nX-Milter: seen by the test milter\r\n" in head, head
    assert b"\r\nSubject: edited by the milter\r\n" in head and b"Subject: edit body" not in head, head
    assert body == b"the milter wrote this body\r\n", body
    # X-Top went to the top of what the milter saw (our Received first);
    # our DKIM-Signature fields are prepended above everything
    fields = [f.split(b":", 1)[0] for f in re.split(rb"\r\n(?![ \t])", head)]
    assert fields.index(b"X-Top") < fields.index(b"Received"), fields
    # through DNS (tern._domainkey holds the RSA key)
    rsa_i = [i for i, s in enumerate(signatures(raw)) if s["a"] == "rsa-sha256"][0]
    dkimpy_verify_all(world, only_signature(raw, rsa_i))
    # each signature against its own key
    for i, s in enumerate(signatures(raw)):
        v = world.txt["ed25519" if s["a"].startswith("ed25519") else "rsa"]
        assert dkim.DKIM(only_signature(raw, i)).verify(dnsfunc=lambda name, timeout=5, v=v: v.encode()), s
    line = wait_log(t, r"event=filter [^\n]*result=queued[^\n]*resigned=1[^\n]*").group(0)
    assert "replbody" in line and "addheader" in line and "chgheader" in line and "insheader" in line, line


def test_milter_envelope_changes_and_quarantine(world, ternd_factory, tmp_path, milter):
    """DELRCPT, ADDRCPT and CHGFROM change the envelope before the commit;
    a quarantined message is held in the queue, not delivered."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    msg, mid = signed_msg("envelope", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "alice@example.test", ["alice@example.test"], msg)
    assert dr[0] == 250, dr
    raw = delivered(t, "bob", mid)
    assert raw.startswith(b"Return-Path: <changed@example.test>"), raw[:200]
    time.sleep(0.5)
    assert not any(mid.encode() in open(p, "rb").read() for p in t.messages("alice"))
    msg, mid = signed_msg("quarantine", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "alice@example.test", ["alice@example.test"], msg)
    assert dr[0] == 250, dr
    qid = re.search(rb"queued as (\S+)", dr[1]).group(1).decode()
    line = wait_log(t, rf"event=filter [^\n]*qid={qid} [^\n]*").group(0)
    assert "quarantine=" in line and "suspicious" in line, line
    q = t.ternctl("queue")
    assert q.returncode == 0 and qid in q.stdout and "held" in q.stdout, q.stdout + q.stderr
    time.sleep(1)
    assert not any(mid.encode() in open(p, "rb").read() for p in t.messages("alice"))


def test_milter_down_tempfail_or_accept(world, ternd_factory, tmp_path):
    """No milter listening: milter_default_action=tempfail answers 4xx
    (nothing accepted); accept lets mail through without it."""
    dead = f"inet:127.0.0.1:{free_port()}"
    t = filter_ternd(ternd_factory, world, tmp_path, start=False, milters=dead, milter_connect_timeout="2")
    t.start(wait=False)

    def greeting():
        if t.proc.poll() is not None:
            pytest.fail(f"ternd exited: {t.log()}")
        try:
            with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
                s.settimeout(10)
                return s.recv(512) or b"(closed)"
        except OSError:
            return None
    g = wait_for(greeting, timeout=20, what="a greeting")
    assert g.startswith(b"421 4.7.1 "), g
    assert re.search(r"event=policy [^\n]*stage=connect verdict=tempfail why=milter", t.log()), t.log()[-2000:]
    msg, mid = signed_msg("accepted without the milter", to="alice@example.test")
    root2 = os.path.join(str(tmp_path), "second")
    os.makedirs(root2)
    t2 = filter_ternd(ternd_factory, world, tmp_path, root=root2, milters=dead,
                      milter_default_action="accept", milter_connect_timeout="2")
    mr, rr, dr = smtp_send(t2.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    delivered(t2, "alice", mid)


class FileTernd(Ternd):
    """A Ternd reading a configuration file (SIGHUP re-reads it)."""

    def __init__(self, root, conf_path, **overrides):
        super().__init__(root, name="fileternd", **overrides)
        self.conf_path = conf_path

    def argv(self):
        a = super().argv()
        a[2] = self.conf_path
        return a


def test_sighup_picks_up_milters(world, tmp_path, milter, request):
    """A milter added to the file takes effect for new connections after
    SIGHUP; a bad milter address keeps the running configuration."""
    root = str(tmp_path)
    conf = os.path.join(root, "ternd.conf")
    with open(conf, "w") as f:
        f.write("# no milters yet\n")
    t = FileTernd(root, conf, dns_resolver=world.nsd.resolver)
    request.node._tern_daemons = [t]
    t.start()
    try:
        msg, mid = signed_msg("please reject", to="alice@example.test")
        mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
        assert dr[0] == 250, dr
        with open(conf, "w") as f:
            f.write(f"milters = {milter}\n")
        t.proc.send_signal(signal.SIGHUP)
        wait_log(t, r"event=reloaded")
        msg, mid = signed_msg("please reject", to="alice@example.test")
        mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
        assert dr[0] == 554 and b"Milter refuses the message" in dr[1], dr
        with open(conf, "w") as f:
            f.write("milters = inet:127.0.0.1:99999\n")
        n = t.log().count("reload_failed")
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: t.log().count("reload_failed") > n, what="the refused reload")
        mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
        assert dr[0] == 554, dr
    finally:
        rc = t.stop()
        rep = sanitizer_report(t.log())
        assert rep is None, rep
        assert rc == 0, t.log()[-3000:]


def test_ternctl_check_names_a_bad_milter(tmp_path):
    conf = os.path.join(str(tmp_path), "t.conf")
    with open(conf, "w") as f:
        f.write("hostname = mx.example.test\n"
                "milters = unix:/run/ok.sock, inet:milter.example\n"
                "milter_default_action = sometimes\n"
                "dkim_selector = bad..selector\n"
                "milter_eom_timeout = 0\n")
    r = subprocess.run([TERNCTL, "-c", conf, "check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"{conf}:2: milters: inet:milter.example: expected inet:host:port" in r.stderr, r.stderr
    assert f"{conf}:3: milter_default_action: expected tempfail or accept" in r.stderr, r.stderr
    assert f"{conf}:4: dkim_selector:" in r.stderr, r.stderr
    assert f"{conf}:5: milter_eom_timeout: must be 1s to 1h" in r.stderr, r.stderr
    with open(conf, "w") as f:
        f.write("hostname = mx.example.test\nusers_file = /dev/null\n"
                "milters = unix:/run/ok.sock, inet:127.0.0.1:8891, inet6:[::1]:8892\n")
    r = subprocess.run([TERNCTL, "-c", conf, "check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_client_gone_or_sigterm_during_a_milter_check(world, ternd_factory, tmp_path, milter):
    """The client disconnects while a milter decides on RCPT: the session is
    kept until the answer, then closed (no crash, nothing delivered). It
    disconnects during a slow end of message: the message is still
    committed and delivered, as for a commit in flight. SIGTERM during a
    check waits for it and exits 0."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.recv(512)
    s.sendall(b"EHLO c.example\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<slow@remote.test>\r\n")
    time.sleep(0.3)
    s.close()
    wait_log(t, r"event=disconnect [^\n]*reason=eof", timeout=10)
    msg, mid = signed_msg("slow end", to="alice@example.test")
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.recv(512)
    s.sendall(b"EHLO c.example\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    time.sleep(0.5)
    s.sendall(msg + b".\r\n")
    time.sleep(0.3)
    s.close()
    delivered(t, "alice", mid, timeout=15)
    # SIGTERM while a slow RCPT check runs: the answer, then 421, exit 0
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.settimeout(10)
    s.recv(512)
    s.sendall(b"EHLO c.example\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<slow@remote.test>\r\n")
    time.sleep(0.3)
    rc = t.stop()
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    assert b"250 2.1.5 Ok\r\n421 4.3.2 " in data, data
    t.check_clean_exit(rc)


def test_large_message_through_a_lagging_milter(world, ternd_factory, tmp_path, milter):
    """A milter that stalls on the body while the client sends 3 MB: the
    connection stops reading while the milter lags (bounded memory), then
    goes on; the message arrives whole and signed."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter, log_level="debug")
    line = "x" * 76 + "\r\n"
    body = line * (3 * 1024 * 1024 // len(line))
    msg, mid = signed_msg("stalling milter", to="alice@example.test", body=body)
    start = time.monotonic()
    mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test"], msg)
    assert dr[0] == 250, dr
    assert time.monotonic() - start >= 1.5
    raw = delivered(t, "alice", mid, timeout=30)
    assert raw.split(b"\r\n\r\n", 1)[1] == body.encode()
    assert re.search(r"event=milter_backlog_pause [^\n]*\n(.*\n)*.*event=milter_backlog_resume", t.log()), \
        "the connection never stopped reading for the lagging milter"
    rsa_i = [i for i, s in enumerate(signatures(raw)) if s["a"] == "rsa-sha256"][0]
    dkimpy_verify_all(world, only_signature(raw, rsa_i))


def test_milter_removing_every_recipient_discards(world, ternd_factory, tmp_path, milter):
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    msg, mid = signed_msg("delall", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "bob@example.test", ["alice@example.test", "bob@example.test"], msg)
    assert dr[0] == 250, dr
    line = wait_log(t, r"event=filter [^\n]*result=discard[^\n]*").group(0)
    assert "every recipient" in line and "delrcpt" in line, line
    time.sleep(1)
    for u in ("alice", "bob"):
        assert not any(mid.encode() in open(p, "rb").read() for p in t.messages(u))


def test_mx_mail_milter_edits_and_forged_results_in_one_copy(world, ternd_factory, tmp_path, milter):
    """Verified MX mail through a milter that adds header fields, one of them
    an Authentication-Results with our name (the milter's own, e.g.
    OpenDMARC's, is kept) while the client's forged one is removed."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter, mynetworks="")
    mid = f"{uuid.uuid4().hex}@remote.test"
    msg = (f"Authentication-Results: {HOST}; spf=pass smtp.mailfrom=forged\r\n"
           f"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: edit addar\r\n"
           f"Message-ID: <{mid}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n").encode()
    mr, rr, dr = smtp_send(t.port, "someone@remote.test", ["alice@example.test"], msg)
    assert dr and dr[0] == 250, (mr, rr, dr)
    raw = delivered(t, "alice", mid)
    text = raw.decode()
    assert "smtp.mailfrom=forged" not in text, text[:1500]
    ars = header_values(read_message_bytes(raw), "Authentication-Results")
    assert any("x-milter=pass" in a for a in ars), ars
    assert any("spf=pass smtp.mailfrom=someone@remote.test" in a for a in ars), ars
    assert "X-Milter: seen by the test milter" in text and "Subject: edited by the milter" in text
    line = wait_log(t, r"event=filter [^\n]*result=queued[^\n]*").group(0)
    assert "ar_removed=1" in line and "resigned" not in line, line


def test_delrcpt_of_a_refused_recipient_touches_no_other(world, ternd_factory, tmp_path, milter):
    """A RCPT the milter refused leaves the envelope again; a later DELRCPT
    naming it must not remove the recipient that took its place."""
    t = filter_ternd(ternd_factory, world, tmp_path, milters=milter)
    msg, mid = signed_msg("delrefused", to="alice@example.test")
    mr, rr, dr = smtp_send(t.port, "bob@example.test",
                           ["reject-rcpt@remote.test", "alice@example.test", "bob@example.test"], msg)
    assert [c for c, _ in rr] == [550, 250, 250] and dr[0] == 250, (rr, dr)
    delivered(t, "alice", mid)
    delivered(t, "bob", mid)
