"""Dovecot reads what ternd delivers: the Maildir layout and the users file are
the contract between them (maildir:<mail_dir>/%d/%n, passwd-file accounts)."""

import imaplib
import os
import shutil
import smtplib
import socket
import time

from conftest import PASSWORDS, REPO


def _imap_fetch_all(port, user, password):
    """Log in over IMAP and return [(uid, raw message bytes)] of INBOX."""
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        typ, _ = imap.login(user, password)
        assert typ == "OK"
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        typ, data = imap.uid("SEARCH", None, "ALL")
        assert typ == "OK"
        out = []
        for uid in data[0].split():
            typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            assert typ == "OK"
            out.append((uid, parts[0][1]))
        return out
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_dovecot_reads_handmade_maildir(tern_root, dovecot_factory):
    """The harness itself: Dovecot with the dev users file serves a Maildir
    message written by hand, and refuses a wrong password."""
    mail_dir = os.path.join(tern_root, "mail")
    box = os.path.join(mail_dir, "example.test", "alice")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub))
    msg = (b"Return-Path: <bob@example.test>\n"
           b"From: bob@example.test\nTo: alice@example.test\n"
           b"Subject: hand made\nMessage-ID: <hand-1@example.test>\n\n"
           b"hello from a hand-made Maildir\n")
    name = f"{int(time.time())}.M1P{os.getpid()}.test"
    with open(os.path.join(box, "tmp", name), "wb") as f:
        f.write(msg)
    os.rename(os.path.join(box, "tmp", name), os.path.join(box, "new", name))
    users = os.path.join(tern_root, "users")
    shutil.copy(os.path.join(REPO, "etc", "users"), users)

    dc = dovecot_factory(mail_dir, users)
    got = _imap_fetch_all(dc.port, "alice@example.test", PASSWORDS["alice"])
    assert len(got) == 1
    body = got[0][1].replace(b"\r\n", b"\n")
    assert b"Subject: hand made" in body
    assert b"hello from a hand-made Maildir" in body

    imap = imaplib.IMAP4("127.0.0.1", dc.port, timeout=10)
    try:
        try:
            imap.login("alice@example.test", "wrong-password")
            raise AssertionError("Dovecot accepted a wrong password")
        except imaplib.IMAP4.error:
            pass
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError, socket.error):
            pass


def test_ternd_delivery_read_over_imap(ternd, dovecot_factory):
    """Deliver with ternd over SMTP, read back with Dovecot over IMAP."""
    body = "Line one.\r\nLine two with UTF-8: d\u00e9j\u00e0 vu.\r\n"
    msg = ("From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\n"
           "Subject: via ternd and dovecot\r\nMessage-ID: <imap-1@example.test>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.ehlo("client.example.test")
        s.sendmail("bob@example.test", ["alice@example.test"], msg.encode("utf-8"))
    ternd.wait_messages("alice", 1)

    dc = dovecot_factory(ternd.mail_dir, ternd.users)
    got = _imap_fetch_all(dc.port, "alice@example.test", PASSWORDS["alice"])
    assert len(got) == 1
    raw = got[0][1].replace(b"\r\n", b"\n").decode("utf-8")
    assert "Subject: via ternd and dovecot" in raw
    assert "Message-ID: <imap-1@example.test>" in raw
    assert "Line one.\nLine two with UTF-8: d\u00e9j\u00e0 vu.\n" in raw
    assert "Received:" in raw.split("\n\n", 1)[0]

    # bob's mailbox is empty but must be reachable with his password
    assert _imap_fetch_all(dc.port, "bob@example.test", PASSWORDS["bob"]) == []
