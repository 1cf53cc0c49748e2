"""ternctl sendmail (and ternctl installed as "sendmail"): local injection.

The message goes through ternd's control socket ("smtp") and its SMTP
engine, so it gets the same checks and the same durable queue as a network
client. Exit codes are sendmail's (sysexits.h): 0 accepted, 64 usage,
67 unknown recipient, 75 temporary failure (e.g. ternd not running).
"""

import os
import pwd
import re
import subprocess

import pytest

from conftest import HOSTNAME, TERNCTL, Ternd, headers_of, header_values, read_message

EX_USAGE, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL = 64, 65, 67, 75


def sendmail(t, *args, input=b"", symlink=False):
    """Run `ternctl sendmail ARGS` (or a "sendmail" symlink to ternctl) on input."""
    if not os.access(TERNCTL, os.X_OK):
        pytest.fail(f"{TERNCTL} is not built")
    if symlink:
        link = os.path.join(t.root, "bin", "sendmail")
        if not os.path.exists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(TERNCTL, link)
        conf = os.path.join(t.root, "ternd.conf")
        with open(conf, "w") as f:
            for k, v in t.opts.items():
                f.write(f"{k} = {v}\n")
        cmd = [link, "-C", conf]
    else:
        cmd = [TERNCTL, "-c", "/dev/null"]
        for k, v in t.opts.items():
            cmd += ["-o", f"{k}={v}"]
        cmd.append("sendmail")
    if isinstance(input, str):
        input = input.encode("utf-8")
    r = subprocess.run(cmd + list(args), input=input, capture_output=True, timeout=60, cwd=t.root)
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    return r


def one_message(t, user, domain="example.test"):
    files = t.wait_messages(user, 1, domain)
    assert len(files) == 1, files
    return read_message(files[0])


def body_of(msg):
    return msg.split("\n\n", 1)[1]


ME = pwd.getpwuid(os.getuid()).pw_name


def test_recipient_arguments(ternd):
    msg = ("From: Bob <bob@example.test>\nTo: whoever@example.test\nSubject: args\n\n"
           "line one\nline two\n")
    r = sendmail(ternd, "alice@example.test", "bob@example.test", input=msg)
    assert r.returncode == 0, r.err
    assert r.out == "" and r.err == "", "success is silent"
    for user in ("alice", "bob"):
        m = one_message(ternd, user)
        assert header_values(m, "Subject") == ["args"]
        assert header_values(m, "From") == ["Bob <bob@example.test>"]
        assert body_of(m) == "line one\nline two\n"
        # added because missing
        assert len(header_values(m, "Date")) == 1
        assert re.fullmatch(r"<[^<>@\s]+@" + re.escape(HOSTNAME) + ">", header_values(m, "Message-ID")[0])
        # the default envelope sender: the invoking user @ hostname
        assert header_values(m, "Return-Path") == [f"<{ME}@{HOSTNAME}>"]
    # delivered with CRLF normalised: no bare LF reached the store as a line end
    raw = open(ternd.messages("alice")[0], "rb").read()
    assert b"line one" in raw


def test_extract_recipients_and_remove_bcc(ternd):
    msg = ("From: bob@example.test\n"
           "To: \"Smith, Alice\" <alice@example.test>, undisclosed-recipients:;\n"
           "Cc: bob@example.test (Bob himself)\n"
           "Bcc: Hidden\n <alice@localhost>\n"
           "Subject: dash t\n"
           "Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
           "Message-ID: <fixed-id@example.test>\n"
           "\n"
           "Bcc: this is the body, not a header\n")
    r = sendmail(ternd, "-t", "-i", input=msg)
    assert r.returncode == 0, r.err
    for user, dom in (("alice", "example.test"), ("bob", "example.test"), ("alice", "localhost")):
        m = one_message(ternd, user, dom)
        assert header_values(m, "Bcc") == [], f"Bcc must be removed ({user}@{dom})"
        assert not any(h.lower().startswith("bcc") for h in headers_of(m))
        assert not any("alice@localhost" in h for h in headers_of(m)
                       if not h.lower().startswith("delivered-to:"))
        assert body_of(m) == "Bcc: this is the body, not a header\n"
        # present headers are not duplicated
        assert header_values(m, "Message-ID") == ["<fixed-id@example.test>"]
        assert header_values(m, "Date") == ["Mon, 1 Jan 2024 00:00:00 +0000"]
        assert header_values(m, "From") == ["bob@example.test"]


def test_extract_without_recipients(ternd):
    r = sendmail(ternd, "-t", input="Subject: nobody\n\nx\n")
    assert r.returncode == EX_DATAERR, r.err
    assert "no recipient" in r.err


def test_envelope_sender_option(ternd):
    r = sendmail(ternd, "-f", "bob@example.test", "alice@example.test", input="Subject: f\n\nbody\n")
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert header_values(m, "Return-Path") == ["<bob@example.test>"]
    # no From: in the input: the envelope sender is used
    assert header_values(m, "From") == ["bob@example.test"]
    r = sendmail(ternd, "-f<>", "bob@example.test", input="Subject: null\n\nbody\n")
    assert r.returncode == 0, r.err
    m = one_message(ternd, "bob")
    assert header_values(m, "Return-Path") == ["<>"]
    assert header_values(m, "From") == [f"{ME}@{HOSTNAME}"]


def test_missing_from_gets_full_name(ternd):
    r = sendmail(ternd, "-F", "Cron Daemon", "alice@example.test", input="Subject: cron\n\nout\n")
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert header_values(m, "From") == [f"Cron Daemon <{ME}@{HOSTNAME}>"]
    assert len(header_values(m, "Date")) == 1 and len(header_values(m, "Message-ID")) == 1


def test_full_name_is_quoted_and_cannot_inject(ternd):
    r = sendmail(ternd, "-F", "Evil, Name\r\nBcc: x@example.net", "alice@example.test",
                 input="Subject: inj\n\nout\n")
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    frm = header_values(m, "From")
    assert len(frm) == 1 and frm[0].startswith('"Evil, Name') and frm[0].endswith(f"<{ME}@{HOSTNAME}>")
    assert header_values(m, "Bcc") == []


def test_no_headers_at_all(ternd):
    r = sendmail(ternd, "alice@example.test", input="just a body line\nand another\n")
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert len(header_values(m, "From")) == 1
    assert body_of(m) == "just a body line\nand another\n"


def test_lone_dot(ternd):
    msg = "Subject: dots\n\nbefore\n.\nafter\n..two dots\n.leading\n"
    # without -i the lone dot ends the message
    r = sendmail(ternd, "alice@example.test", input=msg)
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert body_of(m) == "before\n"
    # -i and -oi keep it, and every dot survives the SMTP transparency
    for opt, user in (("-i", "bob"), ("-oi", "alice")):
        dom = "example.test" if user == "bob" else "localhost"
        r = sendmail(ternd, opt, f"{user}@{dom}", input=msg)
        assert r.returncode == 0, r.err
        m = one_message(ternd, user, dom)
        assert body_of(m) == "before\n.\nafter\n..two dots\n.leading\n"


def test_unknown_recipient(ternd):
    r = sendmail(ternd, "alice@example.test", "nosuchuser@example.test", input="Subject: x\n\ny\n")
    assert r.returncode == EX_NOUSER, r.err
    assert "550" in r.err
    assert "nosuchuser@example.test" in r.err
    assert "NOT sent" in r.err
    # all or nothing: alice got nothing either (the caller will retry)
    assert ternd.messages("alice") == []


def test_ternd_down(tern_root):
    t = Ternd(tern_root)  # configured, never started
    r = sendmail(t, "alice@example.test", input="Subject: x\n\ny\n")
    assert r.returncode == EX_TEMPFAIL, r.err
    assert "ternd" in r.err and "NOT sent" in r.err


def test_usage_errors(ternd):
    for args in (["-Q", "alice@example.test"], ["-bs"], ["-oX", "alice@example.test"], [], ["-f"]):
        r = sendmail(ternd, *args, input="x\n")
        assert r.returncode == EX_USAGE, (args, r.err)
    r = sendmail(ternd, "not an address", input="x\n")
    assert r.returncode == EX_USAGE, r.err
    assert ternd.messages("alice") == []


def test_symlink_as_sendmail(ternd):
    """cron-style invocation of a "sendmail" symlink, with options it must ignore."""
    r = sendmail(ternd, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oee", "-oep", "-odi", "-odb", "-bm",
                 "-v", "alice", input="Subject: cron output\n\nünïcode body\n", symlink=True)
    assert r.returncode == 0, r.err
    # -v prints the queue ID
    assert re.search(r"queued as [A-Za-z0-9]+", r.out), r.out
    # a bare name gets @hostname: alice@mx.example.test is not local here,
    # so check the queue rather than a mailbox
    assert "alice@" + HOSTNAME in ternd.ternctl("queue", "list").stdout


def test_symlink_local_delivery(ternd):
    r = sendmail(ternd, "-oi", "-f", "bob@example.test", "--", "alice@example.test",
                 input="Subject: s\n\nünïcode body\n", symlink=True)
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert body_of(m) == "ünïcode body\n"
    assert header_values(m, "Return-Path") == ["<bob@example.test>"]


def test_message_too_large(ternd_factory):
    t = ternd_factory(max_message_size="2k")
    r = sendmail(t, "alice@example.test", input="Subject: big\n\n" + ("x" * 70 + "\n") * 100)
    assert r.returncode == EX_DATAERR, r.err
    assert "552" in r.err


def test_control_socket_keeps_pipelined_bytes(ternd):
    """Bytes sent right after "smtp\\n" reach the SMTP session, not lost.

    The session may answer them, or (as ternd does for a client that talks
    before the greeting) refuse them as a pregreet: either way they arrived.
    Lost bytes would leave us with a greeting and then silence.
    """
    import socket
    import time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(ternd.sock)
    s.sendall(b"smtp\nEHLO pipelined.example\r\nQUIT\r\n")
    data = b""
    deadline = time.monotonic() + 10
    while b"221" not in data and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            if "reason=pregreet" in ternd.log():
                break
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    answered = b"\r\n250" in data and b"\r\n221" in data
    refused_as_pregreet = "client=local reason=pregreet" in ternd.log()
    assert answered or refused_as_pregreet, data


def test_control_socket_then_greeting_first(ternd):
    """What ternctl sendmail does: "smtp\\n", wait for 220, then talk."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(ternd.sock)
    s.sendall(b"smtp\n")
    assert s.recv(4096).startswith(b"220")
    s.sendall(b"EHLO me.example\r\n")
    data = b""
    while not re.search(rb"(^|\r\n)250 [^\r\n]*\r\n$", data):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.sendall(b"QUIT\r\n")
    assert s.recv(4096).startswith(b"221")
    s.close()


def test_control_socket_smtp_request_needs_line_end(ternd):
    """"smtp" without its LF before EOF is not a submission."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(ternd.sock)
    s.sendall(b"smtp")
    s.shutdown(socket.SHUT_WR)
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"ERR "), data


def test_long_lines_and_bare_cr_are_made_safe(ternd):
    """Program output with a bare CR or a 3000-octet line is delivered, not refused."""
    long = "y" * 3000
    msg = f"Subject: progress\rbar\n\nstep 1\rstep 2\n{long}\nend\n"
    r = sendmail(ternd, "alice@example.test", input=msg)
    assert r.returncode == 0, r.err
    m = one_message(ternd, "alice")
    assert header_values(m, "Subject") == ["progress bar"]
    body = body_of(m)
    assert body.startswith("step 1\nstep 2\n") and body.endswith("\nend\n")
    pieces = body.split("\n")[2:-2]
    assert "".join(pieces) == long and all(len(p) <= 998 for p in pieces)
