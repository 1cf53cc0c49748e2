"""Remote delivery: a sending ternd routes through a private DNS (nsd) to
real receiving servers on other loopback addresses: a second ternd,
Debian's Postfix, and scripted peers that misbehave on purpose.

World (shared by the module, each test uses its own domain):
  nsd         127.0.0.1:<dns>   zone "test." below
  sender      127.0.0.1:<S> and 127.0.0.11:<P> (the latter for the loop test)
              dns_resolver=nsd, smtp_port=<P>, retry_min=1s, retry_max=2s
  receiver    ternd on 127.0.0.2:<P>, local_domains remote.test, fallback.test
  postfix     127.0.0.4:<P> for postfix.test (test_postfix_*)
  peers       scripted servers on 127.0.0.5 ... 127.0.0.10, port <P>
"""

import os
import re
import shutil
import signal
import smtplib
import tempfile
import time
import uuid
from email import message_from_bytes, policy

import pytest

from conftest import QUEUED_RE, header_values, make_message, read_message, sanitizer_report, wait_for
from remote_fixtures import (Nsd, Peer, Postfix, RemoteTernd, ca_signed_cert, free_port_on,
                             self_signed_cert, wait_log)

ZONE = """
remote        MX 10 mx1.remote.test.
mx1.remote    A  127.0.0.2
fallback      MX 10 mx.dead.test.
fallback      MX 20 mx1.remote.test.
mx.dead       A  127.0.0.3
dead          MX 10 mx.dead.test.
nullmx        MX 0 .
postfix       MX 10 mx.postfix.test.
mx.postfix    A  127.0.0.4
tempfail      MX 10 mx.p5.test.
mx.p5         A  127.0.0.5
permfail      MX 10 mx.p6.test.
mx.p6         A  127.0.0.6
greet421      MX 10 mx.p7.test.
greet421      MX 20 mx.p8.test.
mx.p7         A  127.0.0.7
mx.p8         A  127.0.0.8
dropdata      MX 10 mx.p9.test.
mx.p9         A  127.0.0.9
stall         MX 10 mx.p12.test.
mx.p12        A  127.0.0.12
tlsbroken     MX 10 mx.p10.test.
mx.p10        A  127.0.0.10
loop          MX 10 mx.loop.test.
mx.loop       A  127.0.0.11
"""

PEER_ADDRS = ["127.0.0.%d" % i for i in range(2, 13)]


class World:
    pass


@pytest.fixture(scope="module")
def world():
    # not under pytest's 0700 tmp tree: Postfix's daemons (user postfix)
    # must reach their queue below it
    root = tempfile.mkdtemp(prefix="tern-remote-")
    os.chmod(root, 0o755)
    w = World()
    w.root = root
    w.port = free_port_on(PEER_ADDRS)
    w.nsd = Nsd(root, ZONE).start()
    rroot = os.path.join(root, "receiver")
    os.makedirs(rroot)
    with open(os.path.join(rroot, "users"), "w") as f:
        h = "$y$j9T$n1X9lVGvrrCR4BHnA9pq7.$5oGegIwdI/wiE2P0zSCyUdkamjqUA8WMKNZZFyANq/3"
        for a in ("user@remote.test", "user@fallback.test"):
            f.write(f"{a}:{h}\n")
    cert, key = self_signed_cert(rroot, "mx1.remote.test")
    w.receiver = RemoteTernd(rroot, "receiver", listen_addr="127.0.0.2", port=w.port,
                             hostname="mx1.remote.test", local_domains="remote.test, fallback.test",
                             tls_cert=cert, tls_key=key)
    sroot = os.path.join(root, "sender")
    os.makedirs(sroot)
    w.sender = RemoteTernd(sroot, "sender", dns_resolver=w.nsd.resolver, smtp_port=w.port,
                           retry_min="1s", retry_max="2s", hostname="mx.example.test")
    w.sender.opts["smtp_listen"] = f"127.0.0.1:{w.sender.port}, 127.0.0.11:{w.port}"
    w.daemons = [w.receiver, w.sender]
    try:
        w.receiver.start()
        w.sender.start()
        yield w
    finally:
        errors = []
        for t in w.daemons:
            rc = t.stop()
            rep = sanitizer_report(t.log())
            if rep:
                errors.append(f"{t.name}: sanitizer report:\n{rep}")
            elif rc not in (0, None):
                errors.append(f"{t.name}: exit status {rc}\n{t.log()[-3000:]}")
        w.nsd.stop()
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            pytest.fail("\n".join(errors))


@pytest.fixture(autouse=True)
def _attach_logs(request, world):
    """On failure, show the daemons' logs."""
    request.node._tern_daemons = list(world.daemons)
    yield


def send(world, rcpt, subject="remote test", frm="alice@example.test"):
    """Submit one message to the sender; return its queue id."""
    mid = f"{uuid.uuid4().hex}@example.test"
    with smtplib.SMTP("127.0.0.1", world.sender.port, timeout=20) as s:
        s.ehlo("client.example.test")
        code, resp = s.mail(frm)
        assert code == 250, resp
        code, resp = s.rcpt(rcpt)
        assert code == 250, (code, resp)
        code, resp = s.data(make_message(mid, subject=subject, frm=frm, to=rcpt,
                                         body=f"body of {mid}\r\n.leading dot\r\n"))
        assert code == 250, (code, resp)
    m = QUEUED_RE.search(resp.decode())
    assert m, resp
    return m.group(1), mid


def result_line(world, qid, status=None, timeout=20.0):
    """The sender's smtp_result line for qid (with status, if given)."""
    pat = rf"event=smtp_result qid={qid} .*"
    if status:
        pat = rf"event=smtp_result qid={qid} [^\n]*status={status}[^\n]*"
    return wait_log(world.sender, pat, timeout=timeout).group(0)


def queue_entry(world, qid):
    """The `ternctl queue` block of one message ('' when not queued)."""
    out = world.sender.queue()
    blocks = re.split(r"\n(?=\S)", out)
    return next((b for b in blocks if b.startswith(qid)), "")


def files_with(paths, needle):
    return [p for p in paths if needle in read_message(p)]


# --- to a second ternd --------------------------------------------------------

def test_mx_delivery_to_second_ternd_once(world):
    qid, mid = send(world, "user@remote.test")
    line = result_line(world, qid)
    assert "status=sent" in line, line
    assert f"relay=mx1.remote.test[127.0.0.2]:{world.port}" in line, line
    assert "dsn=2.0.0" in line, line
    # opportunistic STARTTLS against the receiver's self-signed certificate
    assert re.search(r'tls="TLSv1\.[23] ', line), line
    assert re.search(rf"event=tls_out relay=mx1.remote.test\[127.0.0.2\]:{world.port} .*verify=", world.sender.log())
    files = world.receiver.wait_messages("user", 1, domain="remote.test")
    time.sleep(1.0)
    got = files_with(world.receiver.messages("user", domain="remote.test"), mid)
    assert len(got) == 1, got
    msg = read_message(got[0])
    assert f"body of {mid}\n.leading dot\n" in msg  # dot-stuffing undone by the receiver
    assert "by mx1.remote.test" in msg
    wait_for(lambda: queue_entry(world, qid) == "", timeout=10, what="the message to leave the queue")


def test_mx_fallback_to_second_mx(world):
    qid, mid = send(world, "user@fallback.test")
    line = result_line(world, qid)
    assert "status=sent" in line and "relay=mx1.remote.test[127.0.0.2]" in line, line
    assert re.search(rf"event=smtp_connect_failed relay=mx.dead.test\[127.0.0.3\]:{world.port}",
                     world.sender.log())
    world.receiver.wait_messages("user", 1, domain="fallback.test")
    assert len(files_with(world.receiver.messages("user", domain="fallback.test"), mid)) == 1


def test_null_mx_bounces(world):
    qid, _ = send(world, "someone@nullmx.test")
    line = result_line(world, qid)
    assert "status=bounced" in line and "dsn=5.1.10" in line, line
    wait_log(world.sender, rf"event=failed qid={qid} to=someone@nullmx.test")


def test_nxdomain_is_permanent(world):
    qid, _ = send(world, "someone@no-such-domain.test")
    line = result_line(world, qid)
    assert "status=bounced" in line and "dsn=5.1.2" in line, line


def test_unreachable_mx_deferred_and_queued(world):
    qid, _ = send(world, "someone@dead.test")
    line = result_line(world, qid)
    assert "status=deferred" in line and "dsn=4.4.1" in line, line
    assert "Connection refused" in line, line
    entry = queue_entry(world, qid)
    assert "someone@dead.test" in entry and "last=" in entry and "Connection refused" in entry, entry
    # retried with backoff: a second attempt shows up, still deferred
    wait_for(lambda: len(re.findall(rf"event=smtp_result qid={qid} .*status=deferred",
                                    world.sender.log())) >= 2, timeout=15, what="a retry")
    assert world.sender.ternctl("queue", "delete", qid).returncode == 0


def test_loop_to_myself_is_deferred(world):
    qid, _ = send(world, "someone@loop.test")
    line = result_line(world, qid)
    assert "status=deferred" in line and "dsn=4.4.6" in line and "loops back to myself" in line, line
    assert world.sender.ternctl("queue", "delete", qid).returncode == 0


# --- scripted peers ----------------------------------------------------------

def test_rcpt_4xx_deferred_then_retried(world):
    peer = Peer("127.0.0.5", world.port, lambda n: {"rcpt_seq": ["451 4.3.0 try later"] * 2})
    try:
        qid, mid = send(world, "x@tempfail.test")
        line = result_line(world, qid, "deferred")
        assert "dsn=4.3.0" in line and "said: 451 4.3.0 try later (in reply to RCPT TO command)" in line, line
        wait_for(lambda: peer.messages, timeout=20, what="delivery after the 4xx")
        result_line(world, qid, "sent")
        time.sleep(1.0)
        assert len([m for m in peer.messages if mid.encode() in m[2]]) == 1
        # the retries came with backoff, over the one cached connection
        assert peer.nrcpt == 3 and peer.conns == 1, (peer.nrcpt, peer.conns)
        times = [m.group(1) for m in re.finditer(
            rf"ts=\S+T\d\d:\d\d:(\d\d\.\d+)Z \S+ \S+ event=smtp_result qid={qid} ", world.sender.log())]
        assert len(times) == 3, times
    finally:
        peer.stop()


def test_rcpt_5xx_bounces(world):
    peer = Peer("127.0.0.6", world.port, lambda n: {"rcpt": "550 5.1.1 no such user here"})
    try:
        qid, _ = send(world, "x@permfail.test")
        line = result_line(world, qid)
        assert "status=bounced" in line and "dsn=5.1.1" in line, line
        assert "host mx.p6.test[127.0.0.6] said: 550 5.1.1 no such user here (in reply to RCPT TO command)" in line
        wait_log(world.sender, rf"event=failed qid={qid} ")
        assert not peer.messages
    finally:
        peer.stop()


def test_greeting_421_moves_to_next_mx(world):
    p7 = Peer("127.0.0.7", world.port, lambda n: {"greeting": "421 4.3.2 busy, go away"})
    p8 = Peer("127.0.0.8", world.port)
    try:
        qid, mid = send(world, "x@greet421.test")
        line = result_line(world, qid)
        assert "status=sent" in line and "relay=mx.p8.test[127.0.0.8]" in line, line
        assert p7.conns >= 1
        assert len(p8.messages) == 1 and mid.encode() in p8.messages[0][2]
    finally:
        p7.stop()
        p8.stop()


def test_drop_mid_data_deferred_never_twice(world):
    peer = Peer("127.0.0.9", world.port, lambda n: {"drop_in_data": True} if n == 0 else {})
    try:
        qid, mid = send(world, "x@dropdata.test")
        line = result_line(world, qid, "deferred")
        assert "lost connection" in line, line
        result_line(world, qid, "sent")
        time.sleep(1.5)
        assert len([m for m in peer.messages if mid.encode() in m[2]]) == 1, peer.messages
        content = peer.messages[0][2]
        assert b"\r\n..leading dot\r\n" in content  # dot-stuffed on the wire
    finally:
        peer.stop()


def test_broken_starttls_falls_back_to_plain_text(world):
    peer = Peer("127.0.0.10", world.port, lambda n: {"ehlo": ["STARTTLS"]} if n == 0 else {})
    try:
        qid, mid = send(world, "x@tlsbroken.test")
        line = result_line(world, qid)
        assert "status=sent" in line and "tls=none" in line, line
        assert re.search(r"event=tls_out_failed relay=mx.p10.test\[127.0.0.10\].*retry in plain text",
                         world.sender.log())
        assert peer.conns == 2
        assert len(peer.messages) == 1
    finally:
        peer.stop()


def test_sighup_then_sigterm_mid_transaction_keeps_the_message(world):
    """SIGHUP reloads (remote_set_conf); SIGTERM while the peer sits on the
    end of data: ternd exits 0, the message stays queued, and after a restart
    it is delivered."""
    s = world.sender
    s.proc.send_signal(signal.SIGHUP)
    wait_log(s, r"event=reloaded")
    peer = Peer("127.0.0.12", world.port, lambda n: {"stall_data": 30} if n == 0 else {})
    try:
        qid, mid = send(world, "x@stall.test")
        assert peer.in_data.wait(15), "the sender never reached the end of data"
        rc = s.stop()
        assert rc == 0 and sanitizer_report(s.log()) is None, s.log()[-3000:]
        assert not re.search(rf"event=smtp_result qid={qid} [^\n]*status=sent", s.log())
        s.start()
        result_line(world, qid, "sent")
        assert len([m for m in peer.messages if mid.encode() in m[2]]) == 1
    finally:
        peer.stop()


# --- Postfix -----------------------------------------------------------------

@pytest.fixture(scope="module")
def postfix(world):
    pf = Postfix(world.root, "127.0.0.4", world.port)
    world.daemons.append(pf)
    pf.start()
    yield pf
    pf.stop()


def test_postfix_receives_via_mx(world, postfix):
    qid, mid = send(world, "user@postfix.test")
    line = result_line(world, qid)
    assert "status=sent" in line and "relay=mx.postfix.test[127.0.0.4]" in line, line
    wait_for(lambda: files_with(postfix.messages(), mid), timeout=20, what="the message in Postfix's Maildir")
    assert len(files_with(postfix.messages(), mid)) == 1


def test_postfix_as_relayhost(world, postfix, tmp_path):
    t = RemoteTernd(str(tmp_path), "relaying", dns_resolver=world.nsd.resolver,
                    relayhost=f"[127.0.0.4]:{world.port}", retry_min="1s", retry_max="2s")
    world.daemons.append(t)
    t.start()
    try:
        mid = f"{uuid.uuid4().hex}@example.test"
        with smtplib.SMTP("127.0.0.1", t.port, timeout=20) as s:
            s.sendmail("alice@example.test", ["user@postfix.test"],
                       make_message(mid, to="user@postfix.test"))
        m = wait_log(t, r"event=smtp_result [^\n]*")
        assert "status=sent" in m.group(0) and f"relay=127.0.0.4[127.0.0.4]:{world.port}" in m.group(0), m.group(0)
        wait_for(lambda: files_with(postfix.messages(), mid), timeout=20, what="relayed message in Postfix")
    finally:
        rc = t.stop()
        world.daemons.remove(t)
        assert rc == 0 and sanitizer_report(t.log()) is None, t.log()[-3000:]


# --- outbound TLS policy (smtp_tls_policy, smtp_tls_policy_map, smtp_tls_ca_file)

def _policy_sender(world, tmp_path, name, **opts):
    t = RemoteTernd(str(tmp_path / name), name, dns_resolver=world.nsd.resolver, smtp_port=world.port,
                    retry_min="1s", retry_max="2s", **opts)
    os.makedirs(str(tmp_path / name), exist_ok=True)
    world.daemons.append(t)
    t.start()
    return t


def _stop(world, t):
    rc = t.stop()
    world.daemons.remove(t)
    assert rc == 0 and sanitizer_report(t.log()) is None, t.log()[-3000:]


def _submit(t, rcpt):
    mid = f"{uuid.uuid4().hex}@example.test"
    with smtplib.SMTP("127.0.0.1", t.port, timeout=20) as s:
        s.sendmail("alice@example.test", [rcpt], make_message(mid, to=rcpt))
    return mid


def test_tls_verify_against_the_configured_ca(world, tmp_path):
    """verify: the receiver's certificate checks out against smtp_tls_ca_file
    (its own self-signed certificate is the CA here): delivered under TLS."""
    ca = os.path.join(world.root, "receiver", "cert.pem")
    t = _policy_sender(world, tmp_path, "verifier", smtp_tls_policy_map="remote.test:verify",
                       smtp_tls_ca_file=ca)
    try:
        mid = _submit(t, "user@remote.test")
        m = wait_log(t, r"event=smtp_result [^\n]*status=sent[^\n]*")
        assert "tls=" in m.group(0), m.group(0)
        assert wait_log(t, r"event=tls_out [^\n]*verify=ok").group(0)
        wait_for(lambda: files_with(world.receiver.messages("user", domain="remote.test"), mid), timeout=20,
                 what="verified delivery")
    finally:
        _stop(world, t)


def test_tls_verify_with_a_wrong_ca_defers(world, tmp_path):
    """verify: a certificate that does not chain to smtp_tls_ca_file stops the
    delivery (deferred, never sent in plain text)."""
    other_dir = tmp_path / "otherca"
    other_dir.mkdir()
    ca, _ = self_signed_cert(str(other_dir), "someone.else.test")
    t = _policy_sender(world, tmp_path, "strict", smtp_tls_policy="verify", smtp_tls_ca_file=ca)
    try:
        mid = _submit(t, "user@remote.test")
        m = wait_log(t, r"event=smtp_result [^\n]*status=deferred[^\n]*")
        assert "status=sent" not in t.log()
        time.sleep(1)
        assert not files_with(world.receiver.messages("user", domain="remote.test"), mid)
    finally:
        _stop(world, t)


def test_tls_encrypt_to_a_peer_without_starttls_defers(world, tmp_path, postfix):
    """encrypt: Postfix here offers no STARTTLS, so the mail waits (deferred)
    instead of going out in plain text."""
    t = _policy_sender(world, tmp_path, "encrypter", smtp_tls_policy_map="postfix.test:encrypt")
    try:
        mid = _submit(t, "user@postfix.test")
        m = wait_log(t, r"event=smtp_result [^\n]*status=deferred[^\n]*")
        assert "TLS" in m.group(0) or "tls" in m.group(0), m.group(0)
        time.sleep(1)
        assert not files_with(postfix.messages(), mid)
    finally:
        _stop(world, t)


# --- delivery status notifications (RFC 3464) end to end ----------------------

def _dsn_for(t, mid, timeout=20.0):
    """The DSN in t's Maildir for alice@example.test whose returned headers
    carry Message-ID mid: (path, email.message.EmailMessage)."""
    def find():
        for p in t.messages("alice"):
            with open(p, "rb") as f:
                raw = f.read()
            if mid.encode() in raw and b"multipart/report" in raw:
                return p, message_from_bytes(raw, policy=policy.default)
        return None
    return wait_for(find, timeout=timeout, what=f"a DSN about {mid} for alice")


def _dsn_parts(msg):
    """(human part, delivery-status fields of the first recipient, per-message
    fields, returned-headers part) of a multipart/report."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = list(msg.iter_parts())
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    # the email package parses message/delivery-status as a list of header blocks
    blocks = parts[1].get_payload()
    assert len(blocks) >= 2, blocks
    return parts[0], blocks[1], blocks[0], parts[2]


def test_permanent_failure_returns_a_dsn_to_the_sender(world):
    peer = Peer("127.0.0.6", world.port, lambda n: {"rcpt": "550 5.1.1 no such user here"})
    rcpt = f"dsn-{uuid.uuid4().hex[:8]}@permfail.test"
    try:
        qid, mid = send(world, rcpt, subject="will bounce")
        line = result_line(world, qid)
        assert "status=bounced" in line, line
        path, msg = _dsn_for(world.sender, mid)
    finally:
        peer.stop()
    raw = read_message(path)
    # from the null reverse-path, so no DSN about this DSN can ever loop
    assert raw.startswith("Return-Path: <>\n"), raw[:200]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert "MAILER-DAEMON@" in msg["From"], msg["From"]
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.test"], msg["To"]
    text, rf, mf, orig = _dsn_parts(msg)
    assert rcpt in text.get_content()
    assert mf["Reporting-MTA"] == "dns; mx.example.test", mf["Reporting-MTA"]
    assert mf["Arrival-Date"], str(mf)
    assert rf["Final-Recipient"].lower() == f"rfc822; {rcpt}".lower(), rf["Final-Recipient"]
    assert rf["Action"] == "failed", rf["Action"]
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", rf["Status"]) and rf["Status"] == "5.1.1", rf["Status"]
    assert rf["Remote-MTA"] == "dns; mx.p6.test", rf["Remote-MTA"]
    assert re.match(r"smtp; 550 5\.1\.1 no such user here", rf["Diagnostic-Code"]), rf["Diagnostic-Code"]
    assert orig.get_content_type() == "text/rfc822-headers"
    oh = orig.get_payload(decode=True).decode()
    assert f"Message-ID: <{mid}>" in oh, oh
    assert "Subject: will bounce" in oh, oh
    assert f"body of {mid}" not in oh  # headers only (no RET=FULL)


def test_expired_message_returns_a_dsn_after_retries(world, tmp_path):
    t = RemoteTernd(str(tmp_path), "expiring", dns_resolver=world.nsd.resolver, smtp_port=world.port,
                    retry_min="1s", retry_max="1s", queue_lifetime="4s")
    world.daemons.append(t)
    t.start()
    try:
        mid = f"{uuid.uuid4().hex}@example.test"
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", t.port, timeout=20) as s:
            s.sendmail("alice@example.test", ["user@dead.test"], make_message(mid, to="user@dead.test",
                                                                              frm="alice@example.test"))
        path, msg = _dsn_for(t, mid, timeout=25)
        elapsed = time.monotonic() - t0
        log = t.log()
        deferrals = re.findall(r"event=smtp_result [^\n]*to=user@dead\.test[^\n]*status=deferred", log) or \
            re.findall(r"event=smtp_result [^\n]*status=deferred", log)
        assert len(deferrals) >= 2, log[-3000:]
        assert elapsed >= 3.0, elapsed  # not before queue_lifetime (4s, less clock granularity)
        _, rf, _, orig = _dsn_parts(msg)
        assert rf["Final-Recipient"] == "rfc822; user@dead.test", rf["Final-Recipient"]
        assert rf["Action"] == "failed", rf["Action"]
        assert re.fullmatch(r"4\.4\.\d", rf["Status"]), rf["Status"]
        assert f"Message-ID: <{mid}>" in orig.get_payload(decode=True).decode()
        assert read_message(path).startswith("Return-Path: <>\n")
        # the original is gone from the queue (and the DSN, delivered locally, too)
        wait_for(lambda: mid not in t.queue() and "user@dead.test" not in t.queue(), timeout=10,
                 what="the expired message to leave the queue")
    finally:
        _stop(world, t)


# --- Postfix as the sending MTA -------------------------------------------------

def test_postfix_sends_to_ternd(world, postfix):
    postfix.reconfigure({"relayhost": f"[127.0.0.2]:{world.port}"})
    try:
        mid = f"{uuid.uuid4().hex}@postfix.test"
        msg = (f"From: sender@postfix.test\r\nTo: user@remote.test\r\nSubject: from postfix\r\n"
               f"Message-ID: <{mid}>\r\n\r\nbody of {mid}\r\n.leading dot\r\n").encode()
        postfix.sendmail("sender@postfix.test", ["user@remote.test"], msg)
        wait_for(lambda: files_with(world.receiver.messages("user", domain="remote.test"), mid), timeout=25,
                 what="Postfix's message at the receiving ternd")
        time.sleep(1.5)  # no second copy turns up
        got = files_with(world.receiver.messages("user", domain="remote.test"), mid)
        assert len(got) == 1, got
        text = read_message(got[0])
        assert text.startswith("Return-Path: <sender@postfix.test>\n"), text[:300]
        received = header_values(text, "Received")
        assert received and re.match(r"from mx\.postfix\.test \(", received[0]) \
            and "by mx1.remote.test" in received[0], received
        assert any("by mx.postfix.test (Postfix" in r for r in received), received
        assert f"body of {mid}\n.leading dot\n" in text
        assert re.search(r"status=sent \(250 ", postfix.log()), postfix.log()[-3000:]
    finally:
        postfix.reconfigure({"relayhost": ""})


def test_postfix_tls_verify(world, postfix, tmp_path):
    """Postfix offers STARTTLS with a certificate from a test CA: a sender with
    smtp_tls_policy_map=postfix.test:verify and that CA delivers under TLS;
    with another CA it defers and never sends."""
    d = tmp_path / "pki"
    d.mkdir()
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(d), 0o755)
    ca, cert, key = ca_signed_cert(str(d), "mx.postfix.test")
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = ca_signed_cert(str(other), "mx.postfix.test", ca_name="Some Other CA")
    postfix.reconfigure({"smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
                         "smtpd_tls_security_level": "may"})
    try:
        t = _policy_sender(world, tmp_path, "pfverify", smtp_tls_policy_map="postfix.test:verify",
                           smtp_tls_ca_file=ca)
        try:
            mid = _submit(t, "user@postfix.test")
            m = wait_log(t, r"event=smtp_result [^\n]*status=(sent|deferred|bounced)[^\n]*", timeout=20)
            assert "status=sent" in m.group(0) and re.search(r'tls="TLSv1\.[23] ', m.group(0)), t.log()[-3000:]
            assert re.search(r"event=tls_out relay=mx\.postfix\.test\[127\.0\.0\.4\][^\n]*verify=ok", t.log())
            wait_for(lambda: files_with(postfix.messages(), mid), timeout=20, what="the message in Postfix")
        finally:
            _stop(world, t)
        t = _policy_sender(world, tmp_path, "pfwrongca", smtp_tls_policy_map="postfix.test:verify",
                           smtp_tls_ca_file=other_ca)
        try:
            mid = _submit(t, "user@postfix.test")
            m = wait_log(t, r"event=smtp_result [^\n]*status=(sent|deferred|bounced)[^\n]*", timeout=20)
            assert "status=deferred" in m.group(0) and "TLS handshake" in m.group(0), m.group(0)
            assert re.search(r"event=tls_out_failed relay=mx\.postfix\.test\[127\.0\.0\.4\][^\n]*"
                             r"certificate verify failed", t.log()), t.log()[-3000:]
            time.sleep(1.5)
            assert "status=sent" not in t.log()
            assert not files_with(postfix.messages(), mid)
        finally:
            _stop(world, t)
    finally:
        postfix.reconfigure({}, remove=["smtpd_tls_cert_file", "smtpd_tls_key_file",
                                        "smtpd_tls_security_level"])
