"""Outbound SMTP AUTH toward a relayhost (smarthost), end to end.

Two ternds on loopback: the smarthost has a certificate and a
submission_listen (STARTTLS, then AUTH, then MAIL), a users file with its
own SHA-512 crypt hash and example.test as a local domain; the sender has
relayhost=[127.0.0.1]:<submission port> and relayhost_auth_file (mode
0600, "user:password"), its DNS pointed at a dead loopback port, so
nothing leaves the machine. A message sent to the sender must arrive in
the smarthost's Maildir with "ESMTPSA" in its Received (RFC 3848); a wrong
password defers with the smarthost's 535 text; an unusable file or a
smarthost without STARTTLS defers too; the password never reaches a log.

RFCs: 4954 (AUTH), 4616 (PLAIN), 3207 (STARTTLS), 3848 (ESMTPSA).
"""

import base64
import os
import re
import signal
import smtplib
import uuid

import subprocess

from conftest import free_port, header_values, make_message, read_message, wait_for
from remote_fixtures import self_signed_cert

RELAY_USER = "relay@example.test"
# a ':' inside the password: the file's line splits at the first colon only
RELAY_PW = "Smart:host-pw-7Qz"
RCPT = "alice@example.test"


def _sha512_hash(pw):
    """A $6$ (SHA-512 crypt) hash; openssl(1) rather than the deprecated crypt module."""
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=pw,
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _smarthost(ternd_factory, tern_root, tls=True):
    """The receiving ternd; .sub_port is its submission port (None without TLS)."""
    root = os.path.join(tern_root, "smarthost")
    os.makedirs(root, exist_ok=True)
    users = os.path.join(root, "users")
    with open(users, "w") as f:
        f.write(f"{RELAY_USER}:{_sha512_hash(RELAY_PW)}\n"
                "alice@example.test:$6$x$unusable\n")
    opts = {"hostname": "smarthost.example.test", "mynetworks": ""}
    if tls:
        cert, key = self_signed_cert(root, "smarthost.example.test")
        opts.update(tls_cert=cert, tls_key=key, submission_listen=f"127.0.0.1:{free_port()}")
    t = ternd_factory(root=root, name="smarthost", **opts)
    t.sub_port = int(opts["submission_listen"].rsplit(":", 1)[1]) if tls else None
    return t


def _sender(ternd_factory, tern_root, relay_port, line, mode=0o600, name="sender"):
    """The sending ternd, with an auth file holding line."""
    root = os.path.join(tern_root, name)
    os.makedirs(root, exist_ok=True)
    auth = os.path.join(root, "relay-auth")
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line)
    os.chmod(auth, mode)
    return ternd_factory(root=root, name=name, hostname="sender.test",
                         local_domains="sender.test",
                         relayhost=f"[127.0.0.1]:{relay_port}",
                         relayhost_auth_file=auth,
                         retry_min="1m", retry_max="1h")


def _send(t):
    """Submit one message for RCPT to t (from 127.0.0.1, in mynetworks); the
    envelope sender is the relay account, which the smarthost requires of an
    authenticated client."""
    mid = f"{uuid.uuid4().hex}@sender.test"
    with smtplib.SMTP("127.0.0.1", t.port, timeout=15) as s:
        s.sendmail(RELAY_USER, [RCPT], make_message(mid, frm=RELAY_USER, to=RCPT))
    return mid


def _files_with(t, mid):
    return [p for p in t.messages("alice") if mid in read_message(p)]


def _no_password_in_logs(*daemons, secrets=(RELAY_PW,)):
    for t in daemons:
        text = t.log()
        for s in secrets:
            assert s not in text, f"password in {t.name}'s log"
            # nor its base64 forms (PLAIN response, LOGIN response)
            for raw in (s.encode(), b"\0" + RELAY_USER.encode() + b"\0" + s.encode()):
                assert base64.b64encode(raw).decode() not in text, f"encoded password in {t.name}'s log"


def _queue_shows(t, needle, timeout=12.0):
    def find():
        r = t.ternctl("queue")
        return needle in (r.stdout + r.stderr) and (r.stdout + r.stderr)
    return wait_for(find, timeout=timeout, what=f"`ternctl queue` to show {needle!r}")


def test_auth_plain_under_tls_delivers_with_esmtpsa(ternd_factory, tern_root):
    smart = _smarthost(ternd_factory, tern_root)
    sender = _sender(ternd_factory, tern_root, smart.sub_port, f"{RELAY_USER}:{RELAY_PW}\n")
    mid = _send(sender)
    wait_for(lambda: _files_with(smart, mid), timeout=15, what="the relayed message in the smarthost's Maildir")
    msg = read_message(_files_with(smart, mid)[0])
    received = header_values(msg, "Received")
    assert received and "ESMTPSA" in received[0], received
    assert re.search(r"event=smtp_result [^\n]*status=sent", sender.log()), sender.log()[-3000:]
    _no_password_in_logs(sender, smart)


def test_wrong_password_defers_with_the_535_text(ternd_factory, tern_root):
    smart = _smarthost(ternd_factory, tern_root)
    wrong = "Wrong-pw-Kx93"
    sender = _sender(ternd_factory, tern_root, smart.sub_port, f"{RELAY_USER}:{wrong}")
    mid = _send(sender)
    out = _queue_shows(sender, "535")
    assert "AUTH" in out and "4.7.8 host" in out, out
    assert not _files_with(smart, mid)
    m = re.search(r"event=smtp_result [^\n]*", sender.log())
    assert m and "status=deferred" in m.group(0), sender.log()[-3000:]
    _no_password_in_logs(sender, smart, secrets=(wrong, RELAY_PW))


def test_unusable_auth_file_defers(ternd_factory, tern_root):
    smart = _smarthost(ternd_factory, tern_root)
    # readable by others: refused, mail deferred rather than sent without AUTH
    sender = _sender(ternd_factory, tern_root, smart.sub_port, f"{RELAY_USER}:{RELAY_PW}\n", mode=0o644)
    assert "event=relayhost_auth_file" in sender.log()
    _send(sender)
    _queue_shows(sender, "relayhost_auth_file unusable")
    # malformed: no colon
    sender2 = _sender(ternd_factory, tern_root, smart.sub_port, "just-a-password\n", name="sender2")
    _send(sender2)
    _queue_shows(sender2, "relayhost_auth_file unusable")
    _no_password_in_logs(sender, sender2, smart, secrets=(RELAY_PW, "just-a-password"))


def test_no_starttls_at_the_smarthost_never_sends_the_password(ternd_factory, tern_root):
    smart = _smarthost(ternd_factory, tern_root, tls=False)
    sender = _sender(ternd_factory, tern_root, smart.port, f"{RELAY_USER}:{RELAY_PW}\n")
    mid = _send(sender)
    _queue_shows(sender, "TLS")
    assert not _files_with(smart, mid)
    _no_password_in_logs(sender, smart)


def test_sighup_rereads_the_auth_file(ternd_factory, tern_root):
    """A wrong password defers; the fixed file is read at SIGHUP and the
    flushed queue then goes out authenticated."""
    smart = _smarthost(ternd_factory, tern_root)
    sender = _sender(ternd_factory, tern_root, smart.sub_port, f"{RELAY_USER}:nope-wrong\n")
    mid = _send(sender)
    _queue_shows(sender, "535")
    with open(os.path.join(sender.root, "relay-auth"), "w") as f:
        f.write(f"{RELAY_USER}:{RELAY_PW}\n")
    sender.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=reloaded" in sender.log(), timeout=10, what="the sender to reload")
    assert sender.ternctl("queue", "flush").returncode == 0
    wait_for(lambda: _files_with(smart, mid), timeout=15, what="the relayed message after SIGHUP")
    _no_password_in_logs(sender, smart, secrets=(RELAY_PW, "nope-wrong"))
