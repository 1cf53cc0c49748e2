#!/usr/bin/python3
"""
test_dkim_interop - DKIM interoperability of Tern's module with dkimpy
(python3-dkim) and, when installed, opendkim-testmsg (opendkim-tools).

  1. Tern signs (rsa-sha256 2048 + ed25519-sha256, via the dkim_driver
     binary built from tests/unit/policy/dkim_driver.c); dkimpy verifies
     both signatures with a dnsfunc serving the published TXT records.
  2. dkimpy signs (RSA, Ed25519; relaxed and simple canonicalization);
     Tern verifies through dkim_driver with a key file standing in for DNS.
  3. Tampered messages fail on both sides.
  4. opendkim-testmsg verifies Tern's RSA signature if available (it needs
     real DNS or a key file: we use its -k/-d path only if supported;
     otherwise the check is reported as skipped).

Usage: test_dkim_interop.py [--driver PATH] [-v]; exit 0 on success.
Also collectable by pytest (test_interop).
"""
import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile

import dkim

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
# the driver sits in the same build as the ternd under test (TERND)
DRIVERS = ([os.path.join(os.path.dirname(os.environ["TERND"]), "tests/unit/policy/dkim_driver")]
           if os.environ.get("TERND") else []) + \
    [os.path.join(_REPO, b, "tests/unit/policy/dkim_driver") for b in ("build-asan", "build")]

MSG = (b"From: Alice <alice@example.com>\r\n"
       b"To: Bob <bob@example.net>\r\n"
       b"Cc: carol@example.org\r\n"
       b"Subject: Interop   test\r\n"
       b"\tfolded subject\r\n"
       b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
       b"Message-ID: <interop-1@example.com>\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n"
       b"List-Id: <interop.example.com>\r\n"
       b"\r\n"
       b"Hello Bob,\r\n"
       b"\r\n"
       b"  spaces   and\ttabs  \r\n"
       + b"x" * 5000 + b"\r\n"
       b"\r\n\r\n")


def run(cmd, data):
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError("%s: rc %d: %s" % (cmd, p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def keys(tmp):
    """Generate RSA-2048 and Ed25519 keys in Tern's layout; return TXT records
    and the dkimpy private keys."""
    d = os.path.join(tmp, "keys", "example.com")
    os.makedirs(d)
    rsa = os.path.join(d, "sel.rsa.pem")
    ed = os.path.join(d, "sel.ed25519.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa)
    openssl("genpkey", "-algorithm", "ED25519", "-out", ed)
    rsa_der = subprocess.run(["openssl", "pkey", "-in", rsa, "-pubout", "-outform", "DER"],
                             check=True, stdout=subprocess.PIPE).stdout
    ed_der = subprocess.run(["openssl", "pkey", "-in", ed, "-pubout", "-outform", "DER"],
                            check=True, stdout=subprocess.PIPE).stdout
    ed_priv_der = subprocess.run(["openssl", "pkey", "-in", ed, "-outform", "DER"],
                                 check=True, stdout=subprocess.PIPE).stdout
    txt_rsa = b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_der)
    txt_ed = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_der[-32:])
    with open(rsa, "rb") as f:
        rsa_pem = f.read()
    ed_seed_b64 = base64.b64encode(ed_priv_der[-32:])
    return os.path.join(tmp, "keys"), txt_rsa, txt_ed, rsa_pem, ed_seed_b64


def tern_verify(driver, keyfile, msg, lenient=False):
    out = run([driver, "verify", keyfile] + (["lenient"] if lenient else []), msg).decode()
    return [line.split()[0] for line in out.splitlines()], out


def check(ok, what, failures, verbose):
    if verbose or not ok:
        print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def interop(driver, verbose=False):
    failures = []
    tmp = tempfile.mkdtemp(prefix="dkim-interop-")
    try:
        keydir, txt_rsa, txt_ed, rsa_pem, ed_seed = keys(tmp)
        records = {b"rsa._domainkey.example.com.": txt_rsa, b"ed._domainkey.example.com.": txt_ed,
                   b"sel._domainkey.example.com.": None}

        # 1. Tern signs, dkimpy verifies (both signatures, via dkim.DKIM.verify(idx))
        signed = run([driver, "sign", keydir, "example.com", "sel"], MSG)
        for kind, txt in (("ed25519", txt_ed), ("rsa", txt_rsa)):
            def dnsfunc(name, timeout=5, _t=txt):
                return _t if name in (b"sel._domainkey.example.com.", "sel._domainkey.example.com.") else None
            d = dkim.DKIM(signed)
            idx = 0 if kind == "ed25519" else 1
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            check(ok, "dkimpy verifies Tern %s signature" % kind, failures, verbose)
            tampered = signed.replace(b"Hello Bob", b"Hello Rob")
            try:
                ok = dkim.DKIM(tampered).verify(idx=idx, dnsfunc=dnsfunc)
            except dkim.ValidationError:
                ok = False
            check(not ok, "dkimpy rejects tampered Tern %s signature" % kind, failures, verbose)

        # 2. dkimpy signs, Tern verifies
        keyfile = os.path.join(tmp, "keyfile")
        with open(keyfile, "wb") as f:
            f.write(b"rsa._domainkey.example.com " + txt_rsa + b"\n")
            f.write(b"ed._domainkey.example.com " + txt_ed + b"\n")
        for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")):
            for sel, key, alg in ((b"rsa", rsa_pem, b"rsa-sha256"), (b"ed", ed_seed, b"ed25519-sha256")):
                sig = dkim.sign(MSG, sel, b"example.com", key, canonicalize=canon, signature_algorithm=alg,
                                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
                what = "Tern verifies dkimpy %s %s/%s" % (alg.decode(), canon[0].decode(), canon[1].decode())
                res, out = tern_verify(driver, keyfile, sig + MSG)
                check(res == ["pass"], what + " -> " + out.strip(), failures, verbose)
                res, out = tern_verify(driver, keyfile, sig + MSG.replace(b"Bob,", b"Rob,"))
                check(res == ["fail"], what + " (tampered body) -> " + out.strip(), failures, verbose)
                res, out = tern_verify(driver, keyfile, sig + MSG.replace(b"Interop", b"Intrrop"))
                check(res == ["fail"], what + " (tampered header) -> " + out.strip(), failures, verbose)
            # l= from dkimpy: pass when nothing follows, fail (strict policy) when content is appended
            sig = dkim.sign(MSG, b"rsa", b"example.com", rsa_pem, canonicalize=canon, length=True)
            res, out = tern_verify(driver, keyfile, sig + MSG)
            check(res == ["pass"], "Tern verifies dkimpy l= signature -> " + out.strip(), failures, verbose)
            res, out = tern_verify(driver, keyfile, sig + MSG + b"APPENDED UNSIGNED TEXT\r\n")
            check(res == ["fail"], "Tern fails l= signature with appended content -> " + out.strip(),
                  failures, verbose)
            res, out = tern_verify(driver, keyfile, sig + MSG + b"APPENDED UNSIGNED TEXT\r\n", lenient=True)
            check(res == ["pass"] and "l_partial=1" in out,
                  "Tern (lenient l= policy) passes it, noting partial coverage -> " + out.strip(), failures, verbose)

        # 4. opendkim-testmsg, when installed
        tm = shutil.which("opendkim-testmsg")
        if tm:
            # opendkim-testmsg verifies only against live DNS (no key-file
            # override), so only its signing side is exercised here
            p = subprocess.run([tm, "-C", "-d", "example.com", "-s", "rsa",
                                "-k", os.path.join(keydir, "example.com", "sel.rsa.pem")],
                               input=MSG, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
            check(p.returncode == 0, "opendkim-testmsg signs (rc %d %s)" % (p.returncode, p.stderr[:200]),
                  failures, verbose)
            if p.returncode == 0:
                # opendkim-testmsg signs with rsa-sha1 (its fixed default):
                # Tern must refuse it per RFC 8301 (permerror, never pass)
                sha1 = b"a=rsa-sha1" in p.stdout
                res, out = tern_verify(driver, keyfile, p.stdout)
                want = ["permerror"] if sha1 else ["pass"]
                check(res == want, "Tern on opendkim %s signature -> %s" % ("rsa-sha1" if sha1 else "rsa-sha256",
                                                                            out.strip()), failures, verbose)
            print("opendkim-testmsg verifying Tern's signature: skipped (it needs live DNS)")
        else:
            print("opendkim-testmsg not installed: skipped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return failures


def find_driver(path=None):
    for p in ([path] if path else []) + DRIVERS:
        if p and os.access(p, os.X_OK):
            return p
    return None


def test_interop():
    driver = find_driver(os.environ.get("DKIM_DRIVER"))
    if driver is None:
        import pytest
        pytest.fail("dkim_driver not built (it is built with the unit tests: meson test)")
    assert interop(driver) == []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    driver = find_driver(a.driver)
    if not driver:
        print("dkim_driver not found", file=sys.stderr)
        return 2
    failures = interop(driver, a.v)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
