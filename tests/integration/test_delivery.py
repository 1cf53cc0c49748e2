"""Local delivery with real clients: swaks, Python smtplib, curl.

A message accepted with "250 ... queued as ID" must appear in
<mail_dir>/<domain>/<user>/new/ with a Received: header naming our hostname,
a Return-Path, the body intact, and the log must carry qid=ID.
"""

import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import (HOSTNAME, QUEUED_RE, RawSMTP, header_values, make_message,
                      read_message, wait_for)


def _settle(seconds=1.0):
    """Give a wrongly duplicated delivery time to show up."""
    time.sleep(seconds)


def test_swaks_delivers_to_maildir(ternd):
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed (make deps)")
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{ternd.port}", "--helo", "client.example.test",
         "--from", "bob@example.test", "--to", "alice@example.test",
         "--header", "Subject: hello from swaks",
         "--body", "This is the swaks body.\nSecond line.\n"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"<[-~] +250[ -]2\.0\.0 .*queued as ([A-Za-z0-9._-]+)", r.stdout)
    assert m, f"no '250 2.0.0 ... queued as ID' in swaks transcript:\n{r.stdout}"
    qid = m.group(1)

    files = ternd.wait_messages("alice", 1)
    assert len(files) == 1
    assert "/example.test/alice/new/" in files[0]
    msg = read_message(files[0])
    assert "This is the swaks body.\nSecond line.\n" in msg
    assert header_values(msg, "Subject") == ["hello from swaks"]
    rp = header_values(msg, "Return-Path")
    assert rp == ["<bob@example.test>"], rp
    received = header_values(msg, "Received")
    assert received, "no Received: header"
    assert re.search(r"\bby " + re.escape(HOSTNAME) + r"\b", received[0]), received[0]
    assert qid in received[0], f"queue id {qid} not in the Received: header {received[0]!r}"
    # Our trace headers come first (RFC 5321 4.4), before the message's own.
    heads = [h.split(":", 1)[0].lower() for h in msg.split("\n\n", 1)[0].split("\n")
             if h and h[0] not in " \t"]
    assert heads[0] == "return-path", heads
    trace = {"return-path", "delivered-to", "x-original-to", "received"}
    first_own = min(heads.index(h) for h in ("date", "from", "to", "subject"))
    assert heads.index("received") < first_own, heads
    assert set(heads[:first_own]) <= trace, heads

    wait_for(lambda: f"qid={qid}" in ternd.log(), timeout=5, what=f"qid={qid} in the log")
    # every log line about the message carries its qid
    for line in ternd.log().splitlines():
        if "alice@example.test" in line and "qid=" in line:
            assert f"qid={qid}" in line, line


def test_smtplib_multiple_recipients_one_copy_each(ternd):
    msg = make_message("multi-1@example.test", subject="to three", body="for alice and bob\r\n")
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.ehlo("client.example.test")
        refused = s.sendmail("carol@remote.test",
                             ["alice@example.test", "bob@example.test", "alice+tag@example.test"],
                             msg)
        assert refused == {}
    ternd.wait_messages("alice", 1)
    ternd.wait_messages("bob", 1)
    _settle()
    alice = ternd.messages("alice")
    bob = ternd.messages("bob")
    assert len(alice) == 1, f"alice and alice+tag must give alice ONE copy, got {len(alice)}"
    assert len(bob) == 1
    for f in alice + bob:
        m = read_message(f)
        assert "for alice and bob\n" in m
        assert header_values(m, "Return-Path") == ["<carol@remote.test>"]
    assert not os.path.exists(os.path.join(ternd.mail_dir, "example.test", "alice+tag"))


def test_subaddress_alone_goes_to_user(ternd):
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.sendmail("bob@example.test", ["alice+lists@example.test"],
                   make_message("tag-1@example.test"))
    ternd.wait_messages("alice", 1)


def test_domain_is_case_insensitive_and_localhost_is_local(ternd):
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.sendmail("bob@example.test", ["alice@EXAMPLE.Test"], make_message("case-1@example.test"))
        s.sendmail("bob@example.test", ["bob@localhost"], make_message("lh-1@example.test"))
    ternd.wait_messages("alice", 1)
    ternd.wait_messages("bob", 1, domain="localhost")


def test_aliases_expand(ternd):
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.sendmail("carol@remote.test", ["team@example.test"], make_message("team-1@example.test"))
        s.sendmail("carol@remote.test", ["postmaster@example.test"],
                   make_message("pm-1@example.test"))
    alice = ternd.wait_messages("alice", 2)
    ternd.wait_messages("bob", 1)
    _settle()
    assert len(ternd.messages("alice")) == 2
    assert len(ternd.messages("bob")) == 1
    ids = sorted(header_values(read_message(f), "Message-ID")[0] for f in alice)
    assert ids == ["<pm-1@example.test>", "<team-1@example.test>"]


def test_alias_and_member_in_one_message_one_copy(ternd):
    """team = alice, bob; RCPT team and alice: alice still gets one copy."""
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.sendmail("carol@remote.test", ["team@example.test", "alice@example.test"],
                   make_message("dup-1@example.test"))
    ternd.wait_messages("alice", 1)
    ternd.wait_messages("bob", 1)
    _settle()
    assert len(ternd.messages("alice")) == 1
    assert len(ternd.messages("bob")) == 1


def test_nested_alias(ternd):
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.sendmail("carol@remote.test", ["alias-of-alias@example.test"],
                   make_message("nest-1@example.test"))
    ternd.wait_messages("alice", 1)
    ternd.wait_messages("bob", 1)


def test_unknown_user_550_511(ternd):
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<nobody-here@example.test>")
        assert code == 550, (code, text)
        assert text.startswith("5.1.1"), text
        # the transaction goes on with a good recipient
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("unk-1@example.test") + ".\r\n")
        code, text = c.reply()
        assert code == 250 and QUEUED_RE.search(text), (code, text)
        assert c.cmd("QUIT")[0] == 221
    ternd.wait_messages("alice", 1)


def test_smtplib_unknown_user_refused(ternd):
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            s.sendmail("bob@example.test", ["ghost@example.test"], make_message("g@example.test"))
        code, text = ei.value.recipients["ghost@example.test"]
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)


def test_curl_delivers(ternd, tern_root):
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (make deps)")
    path = os.path.join(tern_root, "curl-msg.eml")
    with open(path, "w", newline="") as f:
        f.write(make_message("curl-1@example.test", subject="from curl",
                             body="sent by curl\r\n.leading dot line\r\n"))
    r = subprocess.run(["curl", "-sS", "--max-time", "30", f"smtp://127.0.0.1:{ternd.port}/client.example.test",
                        "--mail-from", "bob@example.test", "--mail-rcpt", "alice@example.test",
                        "-T", path, "-v"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert QUEUED_RE.search(r.stderr), r.stderr
    files = ternd.wait_messages("alice", 1)
    msg = read_message(files[0])
    assert header_values(msg, "Subject") == ["from curl"]
    # the dot-stuffed line came back unstuffed
    assert "sent by curl\n.leading dot line\n" in msg
