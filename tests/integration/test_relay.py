"""Relay control: only clients in mynetworks may send to non-local domains,
and the old address tricks (source routes, %-hack, bang paths, quoted @) never
turn a local-looking address into relaying.

The default mynetworks trusts loopback, so the untrusted cases run with
`-o mynetworks=` (empty: nobody is trusted).
"""

import os
import smtplib

import pytest

from conftest import QUEUED_RE, RawSMTP, make_message


def test_relay_denied_to_untrusted_client(ternd_factory):
    t = ternd_factory(mynetworks="")
    with RawSMTP(t.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<someone@remote.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<victim@other.test>")
        assert code == 554, (code, text)
        assert text.startswith("5.7.1"), text
        # no valid recipient: DATA is refused, not 354
        code, text = c.cmd("DATA")
        assert code in (503, 554), (code, text)
        # local mail from the same untrusted client is still accepted
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("MAIL FROM:<someone@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("QUIT")[0] == 221


RELAY_TRICKS = [
    "<@relay.other.test:victim@other.test>",          # source route to a remote
    "<@mx.example.test:victim@other.test>",           # source route via us
    "<victim%other.test@example.test>",               # percent hack
    "<other.test!victim@example.test>",               # bang path (UUCP)
    "<\"victim@other.test\"@example.test>",           # quoted @ in the local part
    "<victim@other.test@example.test>",               # two @
    "<victim@other.test.>",                           # trailing dot
    "<victim@[192.0.2.1]>",                           # address literal
    "<\"victim%other.test\"@example.test>",           # quoted percent hack
    "<victim@example.test@other.test>",               # local domain first
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_tricks_refused_to_untrusted_client(ternd_factory, rcpt):
    t = ternd_factory(mynetworks="")
    with RawSMTP(t.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<someone@remote.test>")[0] == 250
        code, text = c.cmd(f"RCPT TO:{rcpt}")
        assert code is not None and 500 <= code < 600, \
            f"RCPT TO:{rcpt} from an untrusted client must be refused (5xx), got {code} {text}"
        code, text = c.cmd("DATA")
        assert code != 354, f"DATA accepted after RCPT TO:{rcpt}"
        c.cmd("QUIT")
    # nothing was queued, nothing delivered
    for d, _dirs, files in os.walk(t.mail_dir):
        assert not [f for f in files if "/new" in d or "/cur" in d], (d, files)


def test_relay_allowed_from_mynetworks(ternd):
    """Loopback is trusted by default: remote recipients are accepted (and
    stay queued here, since DNS points at a dead port); SIGTERM at teardown
    must still be clean with mail waiting in the queue."""
    with smtplib.SMTP("127.0.0.1", ternd.port, timeout=20) as s:
        s.ehlo("client.example.test")
        code, resp = s.mail("alice@example.test")
        assert code == 250
        code, resp = s.rcpt("friend@other.test")
        assert code == 250, (code, resp)
        code, resp = s.data(make_message("relay-1@example.test", to="friend@other.test"))
        assert code == 250 and QUEUED_RE.search(resp.decode()), (code, resp)


def test_explicit_mynetworks_trusts_only_listed(ternd_factory):
    t = ternd_factory(mynetworks="192.0.2.0/24")
    with RawSMTP(t.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@remote.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<victim@other.test>")
        assert code == 554, (code, text)
