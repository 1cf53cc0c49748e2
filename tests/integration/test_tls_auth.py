"""TLS (STARTTLS, implicit TLS) and SMTP AUTH with real clients.

Each test starts its own ternd with a fresh self-signed certificate and
three listeners on free loopback ports: smtp_listen (STARTTLS offered),
submission_listen (587-style: STARTTLS, then AUTH, then MAIL) and
submissions_listen (465-style implicit TLS). Clients are swaks, Python's
smtplib and ssl, openssl s_client, and raw sockets for the hostile cases
(STARTTLS command injection, CVE-2011-0411; garbage instead of a
ClientHello; password guessing).

RFCs: 3207 (STARTTLS), 4954 (AUTH), 8314 (implicit TLS), 3848 (ESMTPS/SA).
"""

import base64
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import (PASSWORDS, RawSMTP, free_port, header_values, make_message,
                      read_message)
from remote_fixtures import self_signed_cert

ALICE = "alice@example.test"
ALICE_PW = PASSWORDS["alice"]


def _no_verify_ctx():
    """A client TLS context that accepts the test's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_ternd(ternd_factory, tern_root, **overrides):
    """A ternd with a certificate and SMTP, submission and submissions listeners."""
    d = os.path.join(tern_root, "tls")
    os.makedirs(d, exist_ok=True)
    cert, key = self_signed_cert(d, "mx.example.test")
    sub, subs = free_port(), free_port()
    opts = {"tls_cert": cert, "tls_key": key,
            "submission_listen": f"127.0.0.1:{sub}",
            "submissions_listen": f"127.0.0.1:{subs}"}
    opts.update(overrides)
    t = ternd_factory(**opts)
    t.sub_port, t.subs_port = sub, subs
    return t


def need(tool):
    """Fail (not skip) when a client tool the test drives is missing."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (make deps)")


class TLSRaw(RawSMTP):
    """RawSMTP over implicit TLS (or plain, tls=False), optionally from a source address."""

    def __init__(self, port, tls=True, source=None, timeout=15.0, greet=True):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        if tls:
            s = _no_verify_ctx().wrap_socket(s)
        self.sock = s
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def starttls(self):
        """STARTTLS, expect 220, and switch the socket to TLS."""
        code, text = self.cmd("STARTTLS")
        assert code == 220, (code, text)
        assert self.buf == b"", f"bytes after the STARTTLS reply in plaintext: {self.buf!r}"
        self.sock = _no_verify_ctx().wrap_socket(self.sock)

    def auth_plain(self, user, pw):
        """AUTH PLAIN with an initial response; returns (code, text)."""
        tok = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {tok}")

    def send_mail(self, frm, to, msgid):
        """MAIL, RCPT, DATA of a small message; returns the final (code, text)."""
        code, text = self.cmd(f"MAIL FROM:<{frm}>")
        if code != 250:
            return code, text
        code, text = self.cmd(f"RCPT TO:<{to}>")
        assert code == 250, (code, text)
        code, text = self.cmd("DATA")
        assert code == 354, (code, text)
        self.send(make_message(msgid, frm=frm, to=to) + ".\r\n")
        return self.reply()


def received_of(path):
    """The Received: headers of a delivered message file."""
    return header_values(read_message(path), "Received")


# --- 1. swaks STARTTLS on the MX port -------------------------------------------

def test_swaks_starttls_on_smtp_port(ternd_factory, tern_root):
    need("swaks")
    t = tls_ternd(ternd_factory, tern_root)
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{t.port}", "--tls", "--helo", "client.example.test",
         "--from", "sender@remote.test", "--to", ALICE,
         "--header", "Subject: over starttls"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout, r.stdout
    files = t.wait_messages("alice", 1)
    rec = received_of(files[0])
    assert rec and re.search(r"\bwith ESMTPS\b", rec[0]), \
        f"Received: of a STARTTLS (unauthenticated) message must say 'with ESMTPS': {rec}"


# --- 2. swaks implicit TLS + AUTH PLAIN / LOGIN ------------------------------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_implicit_tls_auth(ternd_factory, tern_root, mech):
    need("swaks")
    t = tls_ternd(ternd_factory, tern_root)
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{t.subs_port}", "--tls-on-connect",
         "--helo", "client.example.test", "--auth", mech,
         "--auth-user", ALICE, "--auth-password", ALICE_PW,
         "--from", ALICE, "--to", "bob@example.test",
         "--header", f"Subject: auth {mech}"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"<[-~] +235 ", r.stdout), f"no 235 after AUTH {mech}:\n{r.stdout}"
    files = t.wait_messages("bob", 1)
    rec = received_of(files[0])
    assert rec and re.search(r"\bwith ESMTPSA\b", rec[0]), \
        f"Received: of an authenticated TLS submission must say 'with ESMTPSA': {rec}"


# --- 3. smtplib on the submission port -----------------------------------------

def test_smtplib_submission_starttls_login_relay(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, mynetworks="")
    with smtplib.SMTP("127.0.0.1", t.sub_port, timeout=30) as s:
        s.ehlo("client.example.test")
        assert s.has_extn("starttls")
        s.starttls(context=_no_verify_ctx())
        s.ehlo("client.example.test")
        assert s.has_extn("auth"), s.esmtp_features
        s.login(ALICE, ALICE_PW)
        refused = s.sendmail(ALICE, ["someone@nowhere-remote.test"],
                             make_message("relay1@client", frm=ALICE,
                                          to="someone@nowhere-remote.test"))
        assert refused == {}
    # DNS points at a dead port: the message must be sitting in the queue.
    r = t.ternctl("queue")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "someone@nowhere-remote.test" in r.stdout, \
        f"relayed message not listed by ternctl queue:\n{r.stdout}"


def test_submission_mail_before_auth_is_530(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, mynetworks="")
    with smtplib.SMTP("127.0.0.1", t.sub_port, timeout=30) as s:
        s.ehlo("client.example.test")
        s.starttls(context=_no_verify_ctx())
        s.ehlo("client.example.test")
        code, text = s.mail(ALICE)
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)


def test_auth_not_offered_and_refused_without_tls(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, mynetworks="")
    for port in (t.sub_port, t.port):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.example.test")
            assert not s.has_extn("auth"), \
                f"AUTH advertised without TLS on port {port}: {s.esmtp_features}"
            tok = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
            code, text = s.docmd("AUTH", f"PLAIN {tok}")
            assert code == 538 and text.startswith(b"5.7.11"), (port, code, text)
            with pytest.raises(smtplib.SMTPNotSupportedError):
                s.login(ALICE, ALICE_PW)


# --- 4. openssl s_client --------------------------------------------------------

def test_openssl_s_client_versions(ternd_factory, tern_root):
    need("openssl")
    t = tls_ternd(ternd_factory, tern_root)
    base = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{t.port}",
            "-servername", "mx.example.test", "-brief"]
    r = subprocess.run(base, input="QUIT\n", capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    m = re.search(r"Protocol version: (TLSv1\.[0-9])", out)
    assert m and m.group(1) in ("TLSv1.2", "TLSv1.3"), out
    # The client is told to allow TLS 1.1 (SECLEVEL=0), so a refusal is the server's.
    r = subprocess.run(base + ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], input="QUIT\n",
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Protocol version: TLSv1.1" not in out, \
        f"TLS 1.1 was accepted:\n{out}"
    # Same on the implicit TLS port.
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{t.subs_port}",
                        "-brief", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
                       input="QUIT\n", capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Protocol version: TLSv1.1" not in out, \
        f"TLS 1.1 was accepted on the implicit TLS port:\n{out}"


# --- 5. STARTTLS command injection (CVE-2011-0411) --------------------------

@pytest.mark.parametrize("port_attr", ["port", "sub_port"])
def test_starttls_injection_is_discarded(ternd_factory, tern_root, port_attr):
    t = tls_ternd(ternd_factory, tern_root)
    c = TLSRaw(getattr(t, port_attr), tls=False)
    try:
        c.ehlo()
        c.send("STARTTLS\r\nRSET\r\n")       # one write: RSET rides along in plaintext
        code, text = c.reply()
        assert code == 220, (code, text)
        # Nothing else may come in plaintext (no reply to the injected RSET).
        c.sock.settimeout(0.5)
        try:
            extra = c.sock.recv(4096, socket.MSG_PEEK)
        except socket.timeout:
            extra = b""
        assert c.buf + extra == b"", \
            f"plaintext after 220 to STARTTLS (injected RSET answered?): {c.buf + extra!r}"
        c.sock.settimeout(15)
        c.sock = _no_verify_ctx().wrap_socket(c.sock)
        code, text = c.cmd("EHLO client.example.test")
        assert code == 250 and "\n" in text and text.split("\n")[0].startswith(
            "mx.example.test"), \
            f"first reply after the handshake is not the EHLO reply (injected RSET " \
            f"answered after TLS?): {code} {text!r}"
        # And exactly one reply per command from here on.
        code, text = c.cmd("NOOP")
        assert code == 250, (code, text)
        c.sock.settimeout(0.5)
        try:
            extra = c.sock.recv(4096)
        except (socket.timeout, ssl.SSLError):
            extra = b""
        assert c.buf + extra == b"", f"unexpected extra reply: {c.buf + extra!r}"
    finally:
        c.close()


# --- 6. bad credentials and failure throttling -------------------------------

def test_auth_failures_throttle_and_lockout_is_per_address(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, auth_max_failures=3)
    c = TLSRaw(t.subs_port, timeout=30)
    try:
        c.ehlo()
        code, wrong_pw = c.auth_plain(ALICE, "not-the-password")
        assert code == 535 and wrong_pw.startswith("5.7.8"), (code, wrong_pw)
        t0 = time.monotonic()
        code, unknown = c.auth_plain("nobody-here@example.test", "whatever")
        took = time.monotonic() - t0
        assert code == 535, (code, unknown)
        assert unknown == wrong_pw, \
            f"unknown user and wrong password must get the same reply: {wrong_pw!r} vs {unknown!r}"
        assert took >= 0.9, f"second failure answered after {took:.2f}s, expected a delay"
        # Third failure: either its own answer is 421, or the next AUTH gets 421.
        code, text = c.auth_plain(ALICE, "still-wrong")
        if code == 535:
            code, text = c.auth_plain(ALICE, "fourth-try")
        assert code == 421 and text.startswith("4.7.0"), \
            f"after auth_max_failures=3 failures expected 421 4.7.0, got {code} {text!r}"
        assert c.closed(), "connection not closed after 421"
    finally:
        c.close()
    # The same address is locked out even with the right password ...
    c = TLSRaw(t.subs_port, timeout=30, greet=False)
    try:
        code, text = c.reply()
        if code == 220:
            c.ehlo()
            code, text = c.auth_plain(ALICE, ALICE_PW)
        assert code != 235 and code in (421, None), \
            f"locked-out address 127.0.0.1 could still log in: {code} {text!r}"
    finally:
        c.close()
    # ... but the user is not locked out from another address.
    c = TLSRaw(t.subs_port, source="127.0.0.2", timeout=30)
    try:
        assert c.greeting[0] == 220, c.greeting
        c.ehlo()
        code, text = c.auth_plain(ALICE, ALICE_PW)
        assert code == 235, f"alice locked out from 127.0.0.2 too: {code} {text!r}"
    finally:
        c.close()


# --- 7. the authenticated sender must own MAIL FROM -------------------------

def test_sender_must_belong_to_authenticated_user(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root)
    c = TLSRaw(t.subs_port)
    try:
        c.ehlo()
        code, text = c.auth_plain(ALICE, ALICE_PW)
        assert code == 235, (code, text)
        code, text = c.cmd("MAIL FROM:<bob@example.test>")
        assert code == 553 and text.startswith("5.7.1"), \
            f"alice may not send as bob: {code} {text!r}"
        for ok in ("alice+x@example.test", "postmaster@example.test", ""):
            code, text = c.cmd(f"MAIL FROM:<{ok}>")
            assert code == 250, f"MAIL FROM:<{ok}> as alice: {code} {text!r}"
            assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("MAIL FROM:<team@example.test>")
        # team@ expands to alice and bob; either answer is defensible, but it must answer.
        assert code in (250, 553), (code, text)
    finally:
        c.close()


# --- 8. per-user rate limit -------------------------------------------------

def test_rate_limit_user(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, rate_limit_user=2)
    c = TLSRaw(t.subs_port)
    try:
        c.ehlo()
        assert c.auth_plain(ALICE, ALICE_PW)[0] == 235
        for i in range(2):
            code, text = c.send_mail(ALICE, "bob@example.test", f"rl{i}@client")
            assert code == 250, f"message {i + 1} within the limit: {code} {text!r}"
        code, text = c.cmd(f"MAIL FROM:<{ALICE}>")
        assert code == 450 and text.startswith("4.7.1"), \
            f"3rd message with rate_limit_user=2: {code} {text!r}"
    finally:
        c.close()


# --- 9. plaintext and garbage on the implicit TLS port ----------------------

def test_implicit_tls_port_survives_plaintext_and_garbage(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root)
    # A plaintext SMTP client: no greeting in the clear, and closed after EHLO.
    c = TLSRaw(t.subs_port, tls=False, greet=False, timeout=15)
    try:
        c.sock.settimeout(0.5)
        try:
            early = c.sock.recv(4096)
        except socket.timeout:
            early = b""
        assert not early.startswith(b"220"), f"plaintext greeting on the TLS port: {early!r}"
        c.send("EHLO client.example.test\r\n")
        assert c.closed(timeout=10), "plaintext client not disconnected"
        assert b"250" not in c.buf, f"plaintext EHLO answered: {c.buf!r}"
    finally:
        c.close()
    # Garbage that starts like a TLS record, then random junk.
    for junk in (b"\x16\x03\x01\x00\x2a" + os.urandom(42), os.urandom(300),
                 b"\x16\x03\x03\xff\xff" + b"A" * 2000):
        c = TLSRaw(t.subs_port, tls=False, greet=False, timeout=15)
        try:
            try:
                c.send(junk)
            except OSError:
                pass
            assert c.closed(timeout=10), f"connection kept open after garbage {junk[:8]!r}"
        finally:
            c.close()
    # The server still serves a normal client on both ports.
    c = TLSRaw(t.subs_port)
    try:
        assert c.greeting[0] == 220, c.greeting
        c.ehlo()
        assert c.auth_plain(ALICE, ALICE_PW)[0] == 235
        assert c.cmd("QUIT")[0] == 221
    finally:
        c.close()
    with smtplib.SMTP("127.0.0.1", t.port, timeout=30) as s:
        s.starttls(context=_no_verify_ctx())
        assert s.noop()[0] == 250


# --- 10. hide_client_address ------------------------------------------------

def test_hide_client_address_in_received(ternd_factory, tern_root):
    t = tls_ternd(ternd_factory, tern_root, hide_client_address="yes")
    c = TLSRaw(t.subs_port)
    try:
        c.ehlo()
        assert c.auth_plain(ALICE, ALICE_PW)[0] == 235
        code, text = c.send_mail(ALICE, "bob@example.test", "hide1@client")
        assert code == 250, (code, text)
    finally:
        c.close()
    files = t.wait_messages("bob", 1)
    msg = read_message(files[0])
    rec = header_values(msg, "Received")
    assert rec and "ESMTPSA" in rec[0], rec
    assert "127.0.0.1" not in rec[0], \
        f"hide_client_address=yes but the client address is in Received: {rec[0]!r}"


# --- hostile AUTH PLAIN forms -------------------------------------------------

def test_auth_plain_authzid_cannot_impersonate(ternd_factory, tern_root):
    """authzid=bob with alice's credentials must not make the session bob's."""
    t = tls_ternd(ternd_factory, tern_root)
    c = TLSRaw(t.subs_port)
    try:
        c.ehlo()
        tok = base64.b64encode(f"bob@example.test\0{ALICE}\0{ALICE_PW}".encode()).decode()
        code, text = c.cmd(f"AUTH PLAIN {tok}")
        if code == 235:
            code, text = c.cmd("MAIL FROM:<bob@example.test>")
            assert code == 553, \
                f"authzid=bob with alice's password let alice send as bob: {code} {text!r}"
        else:
            assert code in (535, 501, 504), (code, text)
        # Malformed base64 and a cancelled exchange are syntax errors, not crashes.
        c2 = TLSRaw(t.subs_port)
        try:
            c2.ehlo()
            code, text = c2.cmd("AUTH PLAIN !!!notbase64!!!")
            assert code == 501, (code, text)
            code, text = c2.cmd("AUTH LOGIN")
            assert code == 334, (code, text)
            code, text = c2.cmd("*")
            assert code == 501, f"cancelled AUTH LOGIN: {code} {text!r}"
            code, text = c2.auth_plain(ALICE, ALICE_PW)
            assert code == 235, (code, text)
        finally:
            c2.close()
    finally:
        c.close()


def _peer_cert_cn(port):
    """The CN of the certificate the implicit-TLS port presents now."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with _no_verify_ctx().wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                       capture_output=True)
    return r.stdout.decode()


def test_sighup_reloads_certificate_without_dropping_sessions(ternd_factory, tern_root):
    """SIGHUP: new handshakes get the new certificate, and a session already
    under TLS carries on and delivers (RFC 8314 port)."""
    import signal as _signal
    t = tls_ternd(ternd_factory, tern_root)
    assert "mx.example.test" in _peer_cert_cn(t.subs_port)
    live = TLSRaw(t.subs_port)
    assert live.cmd("EHLO live.example")[0] == 250
    # replace the files in place with a certificate for another name
    d = os.path.join(tern_root, "tls2")
    os.makedirs(d, exist_ok=True)
    cert2, key2 = self_signed_cert(d, "renewed.example.test")
    shutil.copyfile(cert2, t.opts["tls_cert"])
    shutil.copyfile(key2, t.opts["tls_key"])
    t.proc.send_signal(_signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "renewed.example.test" not in _peer_cert_cn(t.subs_port):
        assert time.monotonic() < deadline, "new certificate not served after SIGHUP"
        time.sleep(0.1)
    # the session that started before the reload is still usable
    assert live.cmd("NOOP")[0] == 250
    assert live.cmd("QUIT")[0] == 221
