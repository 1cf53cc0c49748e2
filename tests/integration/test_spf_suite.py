#!/usr/bin/python3
"""
test_spf_suite - run the openspf RFC 7208 test suite (rfc7208-tests.yml,
shipped by Debian's python3-spf) through Tern's SPF module.

For each scenario a dnslib server on 127.0.0.1 serves the scenario's zone
data (UDP and TCP); each test case runs the spf_driver binary
(tests/spf/spf_driver.c) with that server as dns_resolver, in parallel.
SPF-type records are served as TXT unless the name has TXT data of its own
(the suite's convention); TIMEOUT answers SERVFAIL for the data a name lacks.

Usage: test_spf_suite.py [--driver PATH] [--suite PATH] [-v]
(driver default: $SPF_DRIVER, else build/tests/unit/policy/spf_driver)
Names are matched octet for octet (the suite has labels with ':', '/',
'%' and spaces). A TXT with no strings at all (the suite's "SPF: [ ]",
null-text) cannot be sent: RFC 1035 3.3.14 requires one or more strings
and resolvers drop the whole answer as malformed (libunbound: SERVFAIL;
dig: "malformed message packet"); it is served as the nearest legal
record, one empty string, which the checker must ignore just the same.
Exit 0 only when every case gives one of its acceptable results.
Needs: python3-yaml, python3-dnslib, python3-spf (for the suite file).
"""
import argparse
import concurrent.futures
import gzip
import os
import socket
import subprocess
import sys

import yaml
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSServer

SUITES = ["/usr/share/doc/python3-spf/rfc7208-tests.yml.gz",
          "/usr/share/doc/python3-spf/rfc7208-tests.yml"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVERS = [os.environ.get("SPF_DRIVER", "")] + \
    ([os.path.join(os.path.dirname(os.environ["TERND"]), "tests/unit/policy/spf_driver")]
     if os.environ.get("TERND") else []) + \
    [os.path.join(ROOT, b, "tests/unit/policy/spf_driver") for b in ("build-asan", "build")]

def to_bytes(s):
    if isinstance(s, bytes):
        return s
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def name_key(label):
    """A DNSLabel as the zone's key: the raw label octets joined by '.',
    lower case. (str(label) would escape a space as \\032 and never match.)"""
    return b".".join(label.label).decode("latin-1").lower()


def name_label(name):
    """Zone key text back to a DNSLabel, octet for octet."""
    return DNSLabel([p.encode("latin-1") for p in name.split(".") if p])


class Zone(BaseResolver):
    """Answers from one scenario's zonedata."""

    def __init__(self, zonedata):
        self.z = {}
        for name, recs in (zonedata or {}).items():
            self.z[to_bytes(name).decode("latin-1").lower().rstrip(".")] = recs or []

    def records(self, name, qtype):
        recs = self.z.get(name)
        out = []
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in recs)
        for r in recs:
            if not isinstance(r, dict):
                continue
            for t, v in r.items():
                if t == "SPF" and not has_txt:
                    t = "TXT"
                if t != qtype:
                    continue
                if t == "TXT":
                    if v == "NONE":
                        continue
                    parts = v if isinstance(v, list) else [v]
                    # no strings is not a legal TXT (see the module doc)
                    out.append(TXT([to_bytes(p) for p in parts] or [b""]))
                elif t == "A":
                    out.append(A(v))
                elif t == "AAAA":
                    out.append(AAAA(v))
                elif t == "MX":
                    out.append(MX(name_label(v[1]), v[0]))
                elif t == "PTR":
                    out.append(PTR(name_label(v)))
                elif t == "CNAME":
                    out.append(CNAME(name_label(v)))
        return out

    def resolve(self, request, handler):
        reply = request.reply()
        reply.header.ra = 1
        qname = name_key(request.q.qname)
        qtype = QTYPE.get(request.q.qtype)
        name = qname
        for _ in range(8):
            if name not in self.z:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            cn = self.records(name, "CNAME")
            if cn and qtype != "CNAME":
                reply.add_answer(RR(name_label(name), QTYPE.CNAME, rdata=cn[0], ttl=60))
                name = name_key(cn[0].label)
                continue
            recs = self.records(name, qtype)
            for rd in recs:
                reply.add_answer(RR(name_label(name), getattr(QTYPE, qtype), rdata=rd, ttl=60))
            if not recs and "TIMEOUT" in self.z[name]:
                reply.header.rcode = RCODE.SERVFAIL
            return reply
        return reply


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_servers(zone):
    """UDP and TCP servers on one free loopback port (retry on a clash)."""
    for _ in range(20):
        port = free_port()
        try:
            udp = DNSServer(zone, port=port, address="127.0.0.1", logger=Quiet())
        except OSError:
            continue
        try:
            tcp = DNSServer(zone, port=port, address="127.0.0.1", tcp=True, logger=Quiet())
        except OSError:
            udp.server.server_close()
            continue
        return port, [udp, tcp]
    raise RuntimeError("no free port")


class Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None


def run_case(driver, port, case):
    cmd = [driver, "127.0.0.1:%d" % port, str(case["host"]),
           str(case.get("mailfrom", "") or ""), str(case.get("helo", "") or "")]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        out = p.stdout.decode("utf-8", "replace").rstrip("\n")
    except subprocess.TimeoutExpired:
        out = "driver-timeout"
    res, _, expl = out.partition("\t")
    return res, expl


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver")
    ap.add_argument("--suite")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args(argv)
    driver = a.driver or next((d for d in DRIVERS if d and os.path.exists(d)), None)
    suite = a.suite or next((s for s in SUITES if os.path.exists(s)), None)
    if not driver or not suite:
        print("SKIP: driver or suite file missing", file=sys.stderr)
        return 77
    opener = gzip.open if suite.endswith(".gz") else open
    with opener(suite, "rb") as f:
        docs = list(yaml.safe_load_all(f))
    total = passed = 0
    failures = []
    for doc in docs:
        if not doc:
            continue
        zone = Zone(doc.get("zonedata"))
        port, servers = start_servers(zone)
        for s in servers:
            s.start_thread()
        try:
            cases = sorted(doc["tests"].items())
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
                futs = {name: ex.submit(run_case, driver, port, c) for name, c in cases}
                for name, c in cases:
                    res, expl = futs[name].result()
                    want = c["result"] if isinstance(c["result"], list) else [c["result"]]
                    ok = res in want
                    if ok and res == "fail" and "explanation" in c:
                        # the suite's driver convention: no exp= text -> "DEFAULT"
                        ok = (expl or "DEFAULT") == c["explanation"]
                    total += 1
                    if ok:
                        passed += 1
                    else:
                        failures.append("%s: got %s%s want %s%s" % (
                            name, res, (" [%s]" % expl) if expl else "", "/".join(want),
                            (" [%s]" % c["explanation"]) if "explanation" in c else ""))
                    if a.v:
                        print("%s %s" % ("ok  " if ok else "FAIL", name))
        finally:
            for s in servers:
                s.stop()
    for f in failures:
        print("FAIL " + f)
    print("spf suite: %d/%d passed" % (passed, total))
    main.failures, main.total, main.passed = failures, total, passed
    return 0 if not failures and total > 0 else 1


def test_rfc7208_suite():
    """Every case of the RFC 7208 suite (python3-spf) through Tern's SPF
    module: any case that fails fails the test."""
    rc = main([])
    assert rc != 77, "spf_driver or rfc7208-tests.yml missing (make deps; meson test builds the driver)"
    assert rc == 0, "SPF results not in the suite's acceptable set:\n" + "\n".join(main.failures)
    assert main.total >= 203 and main.passed == main.total


if __name__ == "__main__":
    sys.exit(main())
