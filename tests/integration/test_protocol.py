"""SMTP protocol behaviour over raw sockets: exact bytes, exact replies.

EHLO keywords, PIPELINING, BDAT (CHUNKING), SIZE, line length limits, bare-LF
smuggling, garbage. RFC 5321, 2920, 3030, 1870, 6152, 6531, 2034; smuggling
per the 2023 "SMTP smuggling" reports (a lone LF is never a line end).
"""

import os
import random
import re
import time

import pytest

from conftest import (HOSTNAME, QUEUED_RE, RawSMTP, header_values, make_message,
                      read_message)


def _keywords(text):
    """EHLO reply text -> {KEYWORD: params} (first line is the greeting)."""
    out = {}
    for line in text.split("\n")[1:]:
        parts = line.split(None, 1)
        if parts:
            out[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return out


def test_greeting_and_ehlo_keywords(ternd):
    with RawSMTP(ternd.port) as c:
        assert c.greeting[0] == 220
        assert c.greeting[1].split()[0] == HOSTNAME, c.greeting
        code, text = c.ehlo()
        assert text.split()[0] == HOSTNAME, text
        kw = _keywords(text)
        for k in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                  "CHUNKING"):
            assert k in kw, f"EHLO lacks {k}: {sorted(kw)}"
        assert kw["SIZE"] == "26214400", kw["SIZE"]
        assert c.cmd("QUIT")[0] == 221
        assert c.closed()


def test_helo_and_basic_verbs(ternd):
    with RawSMTP(ternd.port) as c:
        code, text = c.cmd("HELO client.example.test")
        assert code == 250 and text.split()[0] == HOSTNAME
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("RSET")[0] == 250
        code, _ = c.cmd("VRFY alice@example.test")
        assert code in (252, 502, 550), code
        code, text = c.cmd("RCPT TO:<alice@example.test>")
        assert code == 503, (code, text)     # bad sequence: no MAIL yet
        code, text = c.cmd("DATA")
        assert code == 503, (code, text)
        code, text = c.cmd("FROBNICATE")
        assert code == 500 and text.startswith("5.5."), (code, text)
        code, text = c.cmd("MAIL FROM:<bob@example.test")  # missing >
        assert code == 501, (code, text)
        assert c.cmd("QUIT")[0] == 221


def test_pipelined_transaction_in_one_write(ternd):
    """RFC 2920: the whole envelope and DATA in one packet; replies in order."""
    with RawSMTP(ternd.port) as c:
        c.send("EHLO client.example.test\r\n"
               "MAIL FROM:<bob@example.test>\r\n"
               "RCPT TO:<alice@example.test>\r\n"
               "RCPT TO:<nobody-here@example.test>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n")
        codes = [c.reply()[0] for _ in range(6)]
        assert codes == [250, 250, 250, 550, 250, 354], codes
        # body, end of data, a second transaction and QUIT, all in one write
        c.send(make_message("pipe-1@example.test", body="first\r\n") + ".\r\n"
               "MAIL FROM:<bob@example.test>\r\n"
               "RCPT TO:<alice@example.test>\r\n"
               "DATA\r\n")
        code, text = c.reply()
        assert code == 250 and QUEUED_RE.search(text), (code, text)
        assert c.reply()[0] == 250
        assert c.reply()[0] == 250
        assert c.reply()[0] == 354
        c.send(make_message("pipe-2@example.test", body="second\r\n") + ".\r\nQUIT\r\n")
        code, text = c.reply()
        assert code == 250 and QUEUED_RE.search(text), (code, text)
        assert c.reply()[0] == 221
    ternd.wait_messages("alice", 2)
    ternd.wait_messages("bob", 1)
    time.sleep(0.5)
    assert len(ternd.messages("alice")) == 2
    assert len(ternd.messages("bob")) == 1


def test_pipelining_byte_at_a_time(ternd):
    """The same transaction dribbled one byte per write must work too."""
    with RawSMTP(ternd.port) as c:
        data = ("EHLO c.example.test\r\nMAIL FROM:<bob@example.test>\r\n"
                "RCPT TO:<alice@example.test>\r\nDATA\r\n").encode()
        for i in range(len(data)):
            c.send(data[i:i + 1])
        assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
        body = (make_message("dribble-1@example.test") + ".\r\n").encode()
        for i in range(len(body)):
            c.send(body[i:i + 1])
        code, text = c.reply()
        assert code == 250, (code, text)
    ternd.wait_messages("alice", 1)


# Each payload contains a fake end-of-data made with a lone LF or CR,
# followed by a smuggled transaction to bob. A correct server never sees
# two messages here: either one message for alice (the smuggled part is
# body text) or a refusal.
SMUGGLE_ENDINGS = [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r\n\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDINGS, ids=[repr(e)[2:-1] for e in SMUGGLE_ENDINGS])
def test_bare_lf_smuggling_never_two_messages(ternd, fake_end):
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        payload = (b"From: bob@example.test\r\nTo: alice@example.test\r\n"
                   b"Subject: outer\r\nMessage-ID: <outer@example.test>\r\n\r\nouter body"
                   + fake_end +
                   b"MAIL FROM:<evil@example.test>\r\n"
                   b"RCPT TO:<bob@example.test>\r\n"
                   b"DATA\r\n"
                   b"From: evil@example.test\r\nTo: bob@example.test\r\n"
                   b"Subject: smuggled\r\nMessage-ID: <smuggled@example.test>\r\n\r\n"
                   b"smuggled body\r\n.\r\nQUIT\r\n")
        c.send(payload)
        replies = []
        while True:
            code, text = c.reply()
            if code is None:
                break
            replies.append((code, text))
            if code == 221:
                break
    queued = [r for r in replies if r[0] == 250 and QUEUED_RE.search(r[1])]
    assert len(queued) <= 1, f"two messages accepted from one DATA: {replies}"
    # a 354 reply would mean a second DATA phase was opened
    assert not [r for r in replies if r[0] == 354], replies
    if queued:
        ternd.wait_messages("alice", 1)
    time.sleep(1.0)
    assert ternd.messages("bob") == [], "smuggled message delivered to bob"
    assert len(ternd.messages("alice")) <= 1
    for f in ternd.messages("alice"):
        m = read_message(f)
        assert header_values(m, "Subject") == ["outer"], m[:2000]


def test_bdat_chunks(ternd):
    """RFC 3030: BDAT takes octets literally, even CRLF.CRLF and lone LFs."""
    body = (b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: chunked\r\n"
            b"Message-ID: <bdat-1@example.test>\r\n\r\n"
            b"part one\r\n.\r\nnot the end\r\n")
    tail = b"part two\r\n..two dots stay two\r\nlast line\r\n"
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        c.send(b"BDAT %d\r\n" % len(body) + body)
        code, text = c.reply()
        assert code == 250, (code, text)
        c.send(b"BDAT 0\r\n")           # an empty chunk is legal
        assert c.reply()[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(tail) + tail)
        code, text = c.reply()
        assert code == 250 and QUEUED_RE.search(text), (code, text)
        # a second transaction mixing BDAT LAST in one pipelined write
        body2 = make_message("bdat-2@example.test", subject="one chunk").encode()
        c.send(b"MAIL FROM:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
               + b"BDAT %d LAST\r\n" % len(body2) + body2 + b"QUIT\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 250
        code, text = c.reply()
        assert code == 250 and QUEUED_RE.search(text), (code, text)
        assert c.reply()[0] == 221
    f = ternd.wait_messages("alice", 1)[0]
    msg = read_message(f)
    assert "part one\n.\nnot the end\npart two\n..two dots stay two\nlast line\n" in msg, msg
    ternd.wait_messages("bob", 1)


def test_data_after_bdat_is_refused(ternd):
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        c.send(b"BDAT 5\r\nabcde")
        assert c.reply()[0] == 250
        code, text = c.cmd("DATA")
        assert code == 503, (code, text)
        # RSET ends the transaction and the session still works
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("NOOP")[0] == 250


def test_size_parameter_too_large_552(ternd):
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        code, text = c.cmd("MAIL FROM:<bob@example.test> SIZE=999999999999")
        assert code == 552, (code, text)
        assert text.startswith("5.3.4"), text
        code, text = c.cmd("MAIL FROM:<bob@example.test> SIZE=1000")
        assert code == 250, (code, text)


def test_message_over_max_size_552(ternd_factory):
    t = ternd_factory(max_message_size="10k")
    with RawSMTP(t.port) as c:
        code, text = c.ehlo()
        assert _keywords(text)["SIZE"] == "10240"
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        big = make_message("big-1@example.test", body=("x" * 70 + "\r\n") * 400)  # ~29 KB
        c.send(big + ".\r\n")
        code, text = c.reply()
        assert code == 552, (code, text)
        # the session survives and can send a small one
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("small-1@example.test") + ".\r\n")
        code, text = c.reply()
        assert code == 250, (code, text)
    files = t.wait_messages("alice", 1)
    time.sleep(0.5)
    assert len(t.messages("alice")) == 1
    assert header_values(read_message(files[0]), "Message-ID") == ["<small-1@example.test>"]


def test_command_line_too_long_500_552(ternd):
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        code, text = c.cmd("NOOP " + "a" * 1100)
        assert code == 500, (code, text)
        assert text.startswith("5.5.2"), text
        # the tail of the long line must not be read as a new command
        assert c.cmd("NOOP")[0] == 250
        code, text = c.cmd("MAIL FROM:<" + "b" * 2000 + "@example.test>")
        assert code == 500 and text.startswith("5.5.2"), (code, text)
        assert c.cmd("NOOP")[0] == 250


def test_huge_line_without_crlf_does_not_hurt(ternd):
    """1 MB with no line end: the server must cap its buffer, reply or close."""
    with RawSMTP(ternd.port) as c:
        try:
            c.send(b"A" * (1 << 20))
            c.send(b"\r\n")
        except OSError:
            pass
        code, text = c.reply()
        assert code is None or 500 <= code < 600, (code, text)
    with RawSMTP(ternd.port) as c:
        assert c.greeting[0] == 220
        c.ehlo()


def test_garbage_gets_replies_and_server_stays_up(ternd):
    rnd = random.Random(1234)
    with RawSMTP(ternd.port) as c:
        seen = []
        for i in range(8):
            junk = bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(1, 200)))
            junk = junk.replace(b"\r", b"").replace(b"\n", b"")
            try:
                c.send(junk + b"\r\n")
            except OSError:
                break
            code, text = c.reply()
            if code is None:
                break
            seen.append(code)
            assert 500 <= code < 600 or code == 421, (code, text)
        assert seen, "no reply at all to garbage"
    # NUL bytes and non-ASCII in a command
    with RawSMTP(ternd.port) as c:
        code, text = c.cmd("EHLO a\x00b")
        assert code is None or code >= 500, (code, text)
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        code, _ = c.cmd("MAIL FROM:<b\x00ob@example.test>")
        assert code is None or code >= 500, code
    # TLS ClientHello and HTTP on the SMTP port
    with RawSMTP(ternd.port) as c:
        c.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64) + b"\r\n")
        code, _ = c.reply()
        assert code is None or code >= 500
    with RawSMTP(ternd.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        code, _ = c.reply()
        assert code is None or code >= 500
    # still serving
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("after-garbage@example.test") + ".\r\n")
        assert c.reply()[0] == 250
    ternd.wait_messages("alice", 1)


def test_too_many_errors_421(ternd):
    """After max_errors bad commands the server says 421 and hangs up."""
    with RawSMTP(ternd.port) as c:
        last = None
        for _ in range(30):
            try:
                code, text = c.cmd("BOGUS")
            except OSError:
                break
            if code is None:
                break
            last = code
            if code == 421:
                break
        assert last == 421, f"no 421 after 30 bad commands (last {last})"
        assert c.closed()


def test_many_concurrent_sessions(ternd):
    conns = [RawSMTP(ternd.port) for _ in range(40)]
    try:
        for c in conns:
            assert c.greeting[0] == 220
            c.ehlo()
        for i, c in enumerate(conns):
            assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
            assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        for i, c in enumerate(conns):
            assert c.cmd("DATA")[0] == 354
            c.send(make_message(f"conc-{i}@example.test") + ".\r\n")
        for c in conns:
            assert c.reply()[0] == 250
    finally:
        for c in conns:
            c.close()
    ternd.wait_messages("bob", 40, timeout=30)


def test_dot_stuffing_and_8bit_body(ternd):
    body = ("..starts with a dot\r\n"
            ".\tdot tab\r\n"
            "caf\u00e9 \u2603 8-bit and UTF-8\r\n"
            "no final newline handling is the client's job\r\n")
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test> BODY=8BITMIME SMTPUTF8")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("stuff-1@example.test", body=body) + ".\r\n")
        assert c.reply()[0] == 250
    msg = read_message(ternd.wait_messages("alice", 1)[0])
    assert (".starts with a dot\n"
            "\tdot tab\n"
            "caf\u00e9 \u2603 8-bit and UTF-8\n") in msg, msg


def test_queue_id_unique_and_in_reply(ternd):
    ids = set()
    with RawSMTP(ternd.port) as c:
        c.ehlo()
        for i in range(5):
            assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(make_message(f"qid-{i}@example.test") + ".\r\n")
            code, text = c.reply()
            assert code == 250
            assert re.match(r"2\.0\.0 Ok: queued as [A-Za-z0-9._-]+$", text), text
            ids.add(QUEUED_RE.search(text).group(1))
    assert len(ids) == 5
    ternd.wait_messages("alice", 5)
