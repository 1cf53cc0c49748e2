#!/usr/bin/python3
"""
test_mailauth - mail authentication (SPF + DKIM + DMARC, Authentication-
Results, signing) against a real authoritative DNS server (nsd on
loopback, the Nsd fixture) serving SPF, DKIM and _dmarc records.

Part 1 runs the mailauth_driver binary (tests/unit/policy/
mailauth_driver.c: the message through src/policy/mailauth.c with the
daemon's DNS module) for each case: spoofed mail from a p=reject domain
refused, dkimpy-signed mail (RSA and Ed25519) passing DKIM and DMARC,
relaxed and strict SPF alignment, p=quarantine, sp= for subdomains,
pct= sampling, no / broken policy records, RFC 7489 6.6.1 refusals,
forged Authentication-Results, and Tern's own signatures verified by
dkimpy.

Part 2 runs a real ternd (mail_auth = yes, loopback not in mynetworks,
DNS from the same nsd) end to end: spoofed mail refused with 550 5.7.1 at
the end of data, dkimpy-signed mail delivered with dkim=pass and
dmarc=pass in its Authentication-Results, a forged Authentication-Results
claiming our host name removed, p=quarantine held in the queue.

The zone is "test." (the fixture's), whose names have the default PSL
rule: the organisational domain of a.b.example.test is example.test.
"""
import base64
import os
import subprocess
import tempfile
import time

import dkim
import pytest

from conftest import HOSTNAME, QUEUED_RE, RawSMTP, header_values, read_message, wait_for
from remote_fixtures import Nsd

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DRIVERS = ([os.path.join(os.path.dirname(os.environ["TERND"]), "tests/unit/policy/mailauth_driver")]
           if os.environ.get("TERND") else []) + \
    [os.path.join(_REPO, b, "tests/unit/policy/mailauth_driver") for b in ("build-asan", "build")]
if os.environ.get("MAILAUTH_DRIVER"):
    DRIVERS.insert(0, os.environ["MAILAUTH_DRIVER"])

CLIENT = "127.0.0.1"   # SPF records below allow or refuse this address


def openssl_out(*args):
    return subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout


def make_keys(d, domain, sel):
    """RSA-2048 and Ed25519 keys in Tern's layout d/<domain>/<sel>.{rsa,ed25519}.pem;
    returns (rsa TXT, ed TXT, rsa PEM, ed25519 seed base64) for dkimpy."""
    kd = os.path.join(d, domain)
    os.makedirs(kd, exist_ok=True)
    rsa = os.path.join(kd, sel + ".rsa.pem")
    ed = os.path.join(kd, sel + ".ed25519.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", ed],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rsa_der = openssl_out("pkey", "-in", rsa, "-pubout", "-outform", "DER")
    ed_der = openssl_out("pkey", "-in", ed, "-pubout", "-outform", "DER")
    ed_priv = openssl_out("pkey", "-in", ed, "-outform", "DER")
    with open(rsa, "rb") as f:
        rsa_pem = f.read()
    return ("v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_der).decode(),
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_der[-32:]).decode(),
            rsa_pem, base64.b64encode(ed_priv[-32:]))


def txt(name, text):
    """A zone-file TXT line, split into <= 200-octet strings."""
    parts = [text[i:i + 200] for i in range(0, len(text), 200)] or [""]
    return "%s TXT %s\n" % (name, " ".join('"%s"' % p.replace('"', '\\"') for p in parts))


class World:
    pass


@pytest.fixture(scope="module")
def world():
    w = World()
    w.root = tempfile.mkdtemp(prefix="tern-mailauth-")
    os.chmod(w.root, 0o755)
    # keys dkimpy signs with (published), and Tern's own signing keys
    w.ext = make_keys(os.path.join(w.root, "extkeys"), "signed.test", "x")
    w.keydir = os.path.join(w.root, "dkim")
    w.tern = make_keys(w.keydir, "tern.test", "tern")
    zone = ""
    # spoofable p=reject domain: SPF allows only 192.0.2.1
    zone += txt("rejectdom", "v=spf1 ip4:192.0.2.1 -all")
    # an 8-bit (SMTPUTF8) MAIL FROM domain whose owner lets us pass SPF
    zone += txt("\\195\\188.evil", "v=spf1 ip4:127.0.0.1 -all")
    zone += txt("_dmarc.rejectdom", "v=DMARC1; p=reject; rua=mailto:dmarc@rejectdom.test")
    # signed by dkimpy: DKIM keys for selectors rsa and ed; SPF refuses us
    zone += txt("signed", "v=spf1 -all")
    zone += txt("_dmarc.signed", "v=DMARC1; p=reject; adkim=r")
    zone += txt("rsa._domainkey.signed", w.ext[0])
    zone += txt("ed._domainkey.signed", w.ext[1])
    # SPF passes for 127.0.0.1 at a bounce subdomain: relaxed vs strict
    zone += txt("bounce.relaxed", "v=spf1 ip4:127.0.0.1 -all")
    zone += txt("_dmarc.relaxed", "v=DMARC1; p=reject")
    zone += txt("bounce.strict", "v=spf1 ip4:127.0.0.1 -all")
    zone += txt("_dmarc.strict", "v=DMARC1; p=reject; aspf=s")
    zone += txt("strict", "v=spf1 ip4:127.0.0.1 -all")
    # quarantine, subdomain policy, sampling, broken and absent records
    zone += txt("quardom", "v=spf1 -all")
    zone += txt("_dmarc.quardom", "v=DMARC1; p=quarantine")
    zone += txt("_dmarc.subpol", "v=DMARC1; p=none; sp=reject")
    zone += txt("_dmarc.pctdom", "v=DMARC1; p=reject; pct=20")
    zone += txt("_dmarc.broken", "v=DMARC1; p=bogus")
    zone += txt("_dmarc.twice", "v=DMARC1; p=reject")
    zone += txt("_dmarc.twice", "v=DMARC1; p=none")
    zone += txt("nodmarc", "v=spf1 -all")
    # Tern's signing domain
    # one selector for both keys (Tern's layout): two records at the name
    zone += txt("tern._domainkey.tern", w.tern[0])
    zone += txt("tern._domainkey.tern", w.tern[1])
    zone += txt("_dmarc.tern", "v=DMARC1; p=reject")
    w.nsd = Nsd(w.root, zone).start()
    w.driver = next((p for p in DRIVERS if p and os.access(p, os.X_OK)), None)
    if w.driver is None:
        w.nsd.stop()
        pytest.fail("mailauth_driver not built (it is built with the unit tests)")
    yield w
    w.nsd.stop()
    subprocess.run(["rm", "-rf", w.root], check=False)


def message(frm, subject="test", extra=b"", body=b"Hello,\r\n\r\nthis is a test.\r\n"):
    """A message as stored: our Received field first."""
    if isinstance(frm, str):
        frm = frm.encode()
    return (b"Received: from client.example ([127.0.0.1]) by mx.tern.test with ESMTP id DRIVERQID\r\n"
            b"\tfor <bob@tern.test>; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            + extra +
            b"From: " + frm + b"\r\n"
            b"To: bob@tern.test\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <" + subject.encode().replace(b" ", b"-") + b"@x.test>\r\n"
            b"\r\n" + body)


def run(w, msg, mail_from, *opts, ip=CLIENT, helo="client.example"):
    p = subprocess.run([w.driver, w.nsd.resolver, ip, helo, mail_from] + list(opts), input=msg,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = p.stdout.decode(errors="replace")
    head, _, rest = out.partition("prepend:\n")
    r = dict(line.split("=", 1) for line in head.splitlines())
    prepend, _, signed = rest.partition("message:\n")
    r["prepend"] = prepend
    r["message"] = signed.encode()
    r["log"] = p.stderr.decode(errors="replace")
    return r


def ar(r):
    """The Authentication-Results field, unfolded."""
    text = r["prepend"]
    i = text.find("Authentication-Results:")
    assert i >= 0, text
    field = text[i:]
    end = field.find("\r\n", 0)
    while end >= 0 and field[end + 2:end + 3] in ("\t", " "):
        end = field.find("\r\n", end + 2)
    return field[:end].replace("\r\n", "")


def dkimpy_sign(w, msg, sel):
    key = w.ext[2] if sel == b"rsa" else w.ext[3]
    alg = b"rsa-sha256" if sel == b"rsa" else b"ed25519-sha256"
    return dkim.sign(msg, sel, b"signed.test", key, signature_algorithm=alg,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])


# --- part 1: the driver against nsd -----------------------------------------

def test_spoofed_reject(world):
    r = run(world, message("CEO <ceo@rejectdom.test>", "spoof"), "ceo@rejectdom.test")
    assert r["verdict"] == "reject"
    assert r["reply"] == ("550 5.7.1 Unauthenticated email from rejectdom.test is not accepted "
                          "due to its DMARC policy (p=reject)")
    a = ar(r)
    assert "spf=fail smtp.mailfrom=ceo@rejectdom.test" in a
    assert "dkim=none" in a
    assert "dmarc=fail (p=reject sp=reject dis=reject) header.from=rejectdom.test" in a
    # the aggregate-report line
    assert "event=dmarc_report qid=DRIVERQID source_ip=127.0.0.1 header_from=rejectdom.test" in r["log"]
    assert "disposition=reject" in r["log"] and "rua=mailto:dmarc@rejectdom.test" in r["log"]
    # with dmarc_enforce = no: marked, not refused
    r = run(world, message("ceo@rejectdom.test", "spoof2"), "ceo@rejectdom.test", "--no-enforce")
    assert r["verdict"] == "continue" and r["quarantine"] == "1"
    assert "override=local_policy" in r["log"]
    # a null sender: the HELO identity is the SPF domain
    r = run(world, message("ceo@rejectdom.test", "spoof3"), "", helo="rejectdom.test")
    assert r["verdict"] == "reject"
    assert "smtp.helo=rejectdom.test" in ar(r)


@pytest.mark.parametrize("sel", [b"rsa", b"ed"])
def test_dkimpy_signed_passes(world, sel):
    msg = message("Alice <alice@signed.test>", "signed " + sel.decode())
    signed = dkimpy_sign(world, msg, sel)
    # SPF fails (the envelope is a mailing service's), DKIM aligns
    r = run(world, signed + msg, "bounces@esp.test")
    assert r["verdict"] == "continue", r
    a = ar(r)
    assert "dkim=pass header.d=signed.test header.s=%s" % sel.decode() in a
    assert "header.a=%s" % ("rsa-sha256" if sel == b"rsa" else "ed25519-sha256") in a
    assert "dmarc=pass" in a and "header.from=signed.test" in a
    assert r["summary"].startswith("spf=none dkim=pass dmarc=pass from=signed.test")
    # tampered body: DKIM fails, DMARC fails, p=reject refuses
    r = run(world, signed + msg.replace(b"this is a test", b"this is a TEST"), "bounces@esp.test")
    assert r["verdict"] == "reject"
    assert "dkim=fail (body hash mismatch)" in ar(r)


def test_both_signatures(world):
    msg = message("alice@signed.test", "two sigs")
    both = dkimpy_sign(world, msg, b"ed") + dkimpy_sign(world, msg, b"rsa") + msg
    r = run(world, both, "alice@signed.test")
    a = ar(r)
    assert a.count("dkim=pass") == 2
    assert "dmarc=pass" in a
    # a valid signature of another domain does not make it aligned
    r = run(world, dkimpy_sign(world, message("ceo@rejectdom.test", "x"), b"rsa") +
            message("ceo@rejectdom.test", "x"), "x@esp.test")
    assert "dkim=pass header.d=signed.test" in ar(r)
    assert r["verdict"] == "reject"


def test_spf_alignment(world):
    # relaxed: MAIL FROM bounce.relaxed.test aligns with From relaxed.test
    r = run(world, message("news@relaxed.test", "relaxed"), "b@bounce.relaxed.test")
    assert r["verdict"] == "continue"
    assert "spf=pass smtp.mailfrom=b@bounce.relaxed.test" in ar(r)
    assert "dmarc=pass" in ar(r)
    # strict (aspf=s): the same shape fails and is refused
    r = run(world, message("news@strict.test", "strict"), "b@bounce.strict.test")
    assert "spf=pass" in ar(r)
    assert "dmarc=fail" in ar(r)
    assert r["verdict"] == "reject"
    # strict, exact domain: pass
    r = run(world, message("news@strict.test", "strict2"), "b@strict.test")
    assert "dmarc=pass" in ar(r) and r["verdict"] == "continue"


def test_spf_never_aligned_through_helo_when_mail_from_has_a_domain(world):
    """SPF passes for an 8-bit MAIL FROM domain (which DMARC cannot use
    for alignment); the HELO name is the spoofed From domain. SPF speaks
    for the MAIL FROM domain, never for HELO when there is one: no
    alignment, DMARC fails, p=reject refuses."""
    mail_from = "x@\u00fc.evil.test".encode().decode("utf-8")
    r = run(world, message("ceo@rejectdom.test", "helo-align"), mail_from, helo="rejectdom.test")
    assert "spf=pass" in ar(r), ar(r)
    assert "dmarc=fail" in ar(r), ar(r)
    assert r["verdict"] == "reject"


def test_quarantine_and_subdomain_policy(world):
    r = run(world, message("a@quardom.test", "quarantine"), "a@quardom.test")
    assert r["verdict"] == "continue" and r["quarantine"] == "1"
    assert "dmarc=fail (p=quarantine sp=quarantine dis=quarantine)" in ar(r)
    # sp=reject for a subdomain (record found at the organisational domain)
    r = run(world, message("a@x.subpol.test", "subdomain"), "a@x.subpol.test")
    assert r["verdict"] == "reject"
    assert "(sp=reject)" in r["reply"]
    assert "header.from=x.subpol.test" in ar(r)
    # p=none for the domain itself
    r = run(world, message("a@subpol.test", "orgdomain"), "a@subpol.test")
    assert r["verdict"] == "continue" and r["quarantine"] == "0"
    assert "dmarc=fail (p=none sp=reject dis=none)" in ar(r)


def test_pct_sampling(world):
    # pct=20: draws 0..19 apply p=reject, the others the next policy down
    r = run(world, message("a@pctdom.test", "pct1"), "a@pctdom.test", "--roll", "19")
    assert r["verdict"] == "reject"
    r = run(world, message("a@pctdom.test", "pct2"), "a@pctdom.test", "--roll", "20")
    assert r["verdict"] == "continue" and r["quarantine"] == "1"
    assert "pct=20 dis=quarantine sampled_out" in ar(r)
    assert "override=sampled_out" in r["log"]


def test_no_or_broken_policy(world):
    r = run(world, message("a@nodmarc.test", "none"), "a@nodmarc.test")
    assert r["verdict"] == "continue"
    assert "dmarc=none header.from=nodmarc.test" in ar(r)
    r = run(world, message("a@broken.test", "broken"), "a@broken.test")
    assert r["verdict"] == "continue"
    assert "dmarc=permerror" in ar(r) and "invalid p=" in ar(r)
    r = run(world, message("a@twice.test", "twice"), "a@twice.test")
    assert r["verdict"] == "continue"
    assert "dmarc=permerror (_dmarc.twice.test: 2 DMARC records)" in ar(r)


def test_from_refusals(world):
    two = message("a@rejectdom.test", "two", extra=b"From: b@nodmarc.test\r\n")
    r = run(world, two, "a@nodmarc.test")
    assert r["verdict"] == "reject"
    assert r["reply"] == "550 5.7.1 Message refused: 2 From fields (RFC 5322 3.6, RFC 7489 6.6.1)"
    r = run(world, message("a@nodmarc.test, b@rejectdom.test", "2dom"), "a@nodmarc.test")
    assert r["verdict"] == "reject" and "more than one domain" in r["reply"]
    r = run(world, message("a@[127.0.0.1]", "literal"), "a@nodmarc.test")
    assert r["verdict"] == "reject"
    r = run(world, message("=?utf-8?q?ceo@rejectdom.test?= <x@nodmarc.test>", "ew"), "x@nodmarc.test")
    assert r["verdict"] == "continue" and "header.from=nodmarc.test" in ar(r)


def test_forged_ar(world):
    forged = message("a@nodmarc.test", "forged",
                     extra=b"Authentication-Results: MX.TERN.TEST;\r\n\tdkim=pass header.d=rejectdom.test\r\n")
    r = run(world, forged, "a@nodmarc.test")
    assert r["forged_ar"] == "1"
    other = message("a@nodmarc.test", "other", extra=b"Authentication-Results: mx.other.test; spf=pass\r\n")
    assert run(world, other, "a@nodmarc.test")["forged_ar"] == "0"


def test_tern_signs_dkimpy_verifies(world):
    msg = message("Alice <alice@tern.test>", "tern signs")
    r = run(world, msg, "alice@tern.test", "--no-verify", "--sign", world.keydir, "tern")
    assert r["verdict"] == "continue"
    assert r["sign_domain"] == "tern.test"
    assert "Authentication-Results" not in r["prepend"]
    signed = r["message"]
    assert signed.count(b"DKIM-Signature:") == 2
    rsa_txt, ed_txt = world.tern[0].encode(), world.tern[1].encode()
    for idx, t in ((0, ed_txt), (1, rsa_txt)):
        def dnsfunc(name, timeout=5, _t=t):
            return _t if name in (b"tern._domainkey.tern.test.", "tern._domainkey.tern.test.") else None
        assert dkim.DKIM(signed).verify(idx=idx, dnsfunc=dnsfunc), idx
    # and Tern's own verifier through nsd: dkim=pass twice, dmarc=pass
    r2 = run(world, signed, "x@esp.test")
    assert ar(r2).count("dkim=pass header.d=tern.test header.s=tern") == 2
    assert "dmarc=pass" in ar(r2)


# --- part 2: end to end, a real ternd (mail_auth = yes) ------------------------

@pytest.fixture
def mx(world, ternd_factory):
    """ternd as an MX: DNS from nsd, loopback not trusted (so it verifies)."""
    return ternd_factory(dns_resolver=world.nsd.resolver, mynetworks="192.0.2.0/24",
                         mail_auth="yes", dmarc_enforce="yes")


def smtp_send(port, mail_from, msg, rcpt="alice@example.test"):
    """One transaction; returns the (code, text) of the end of data."""
    with RawSMTP(port) as c:
        c.ehlo("client.example")
        code, text = c.cmd("MAIL FROM:<%s>" % mail_from)
        assert code == 250, (code, text)
        code, text = c.cmd("RCPT TO:<%s>" % rcpt)
        assert code == 250, (code, text)
        code, text = c.cmd("DATA")
        assert code == 354, (code, text)
        body = msg.replace(b"\r\n.", b"\r\n..")
        c.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        res = c.reply()
        c.cmd("QUIT")
        return res


def client_message(frm, subject, extra=b""):
    """A message as a client sends it (no Received field of ours)."""
    return message(frm, subject, extra=extra).split(b"\r\n", 2)[2]


def test_e2e_spoofed_reject(world, mx):
    code, text = smtp_send(mx.port, "ceo@rejectdom.test", client_message("CEO <ceo@rejectdom.test>", "spoof"))
    assert code == 550, text
    assert text.startswith("5.7.1 ") and "DMARC" in text and "rejectdom.test" in text, text
    time.sleep(0.5)
    assert mx.messages("alice") == []
    assert "event=dmarc_report" in mx.log() and "disposition=reject" in mx.log()


@pytest.mark.parametrize("sel", [b"rsa", b"ed"])
def test_e2e_dkimpy_signed_delivered(world, mx, sel):
    msg = client_message("Alice <alice@signed.test>", "e2e signed " + sel.decode())
    signed = dkimpy_sign(world, msg, sel) + msg
    code, text = smtp_send(mx.port, "bounces@esp.test", signed)
    assert code == 250, text
    files = mx.wait_messages("alice", 1)
    got = read_message(files[0])
    ars = header_values(got, "Authentication-Results")
    assert len(ars) == 1, ars
    a = " ".join(ars[0].split())
    assert a.startswith(HOSTNAME + ";"), a
    assert "dkim=pass header.d=signed.test header.s=%s" % sel.decode() in a, a
    assert "dmarc=pass" in a and "header.from=signed.test" in a, a
    # the signature still verifies in the delivered copy (dkimpy)
    raw = open(files[0], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    key = world.ext[0] if sel == b"rsa" else world.ext[1]

    def dnsfunc(name, timeout=5):
        return key.encode() if name in (("%s._domainkey.signed.test." % sel.decode()).encode(),
                                        "%s._domainkey.signed.test." % sel.decode()) else None
    assert dkim.DKIM(raw).verify(dnsfunc=dnsfunc)


def test_e2e_forged_ar_removed(world, mx):
    extra = (b"Authentication-Results: " + HOSTNAME.upper().encode() + b";\r\n\tdkim=pass header.d=rejectdom.test\r\n"
             b"Authentication-Results: mx.other.test; spf=pass smtp.mailfrom=x@other.test\r\n")
    code, text = smtp_send(mx.port, "a@nodmarc.test", client_message("a@nodmarc.test", "forged", extra=extra))
    assert code == 250, text
    got = read_message(mx.wait_messages("alice", 1)[0])
    ars = [" ".join(v.split()) for v in header_values(got, "Authentication-Results")]
    assert len(ars) == 2, ars
    ours = [v for v in ars if v.lower().startswith(HOSTNAME + ";")]
    assert len(ours) == 1 and "dkim=none" in ours[0] and "header.d=rejectdom.test" not in ours[0], ars
    assert any(v.startswith("mx.other.test;") for v in ars), ars


def test_e2e_quarantine_marked(world, mx):
    code, text = smtp_send(mx.port, "a@quardom.test", client_message("a@quardom.test", "quarantine"))
    assert code == 250, text
    qid = QUEUED_RE.search(text).group(1)
    wait_for(lambda: "quarantine=dmarc" in mx.log(), timeout=10, what="the quarantine log line")
    time.sleep(1.0)
    assert mx.messages("alice") == []   # held, not delivered
    r = mx.ternctl("queue", "show", qid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "next=held" in r.stdout, r.stdout
    assert "dmarc=fail (p=quarantine" in r.stdout, r.stdout
