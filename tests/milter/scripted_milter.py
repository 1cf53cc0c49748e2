#!/usr/bin/python3
"""scripted_milter - a milter for tests/integration/test_milter.py, written
with Debian's python3-milter (libmilter underneath, so it speaks the
protocol exactly as Sendmail's library does).

What it does is chosen by the message:
  MAIL FROM tempfail@...    451 4.7.1 with its own text (at MAIL)
  RCPT TO reject@...        a multi-line 550 (setmlreply, at RCPT)
  RCPT TO discard@...       DISCARD at RCPT: the message is dropped at its end
  Subject words (end of message, several may be combined):
    reject      554 5.7.1 with its own text
    tempfail    TEMPFAIL (the MTA's default 4xx)
    discard     DISCARD
    edit        add a folded X-Added, change Subject, delete X-Remove-Me,
                insert X-Top at the top
    body        replace the body (two chunks, LF line ends)
    envelope    change the sender, delete alice, add bob (with NOTIFY=NEVER)
    quarantine  quarantine the message
    progress    send SMFIR_PROGRESS a few times before answering
Every end of message (and every refusal) appends one JSON object to LOG:
the macros, the connect and HELO data, the envelope, the header fields
and the body exactly as the milter received them.

Usage: scripted_milter.py SOCKET LOG   (SOCKET: unix:/path or inet:port@host)
"""
import json
import sys
import time

import Milter

LOG = sys.argv[2]
MACROS = ["j", "_", "i", "{daemon_name}", "{client_addr}", "{client_port}", "{client_name}",
          "{if_addr}", "{auth_authen}", "{auth_type}", "{mail_addr}", "{rcpt_addr}", "v"]


def log(obj):
    with open(LOG, "a") as f:
        f.write(json.dumps(obj) + "\n")


class Scripted(Milter.Base):
    def __init__(self):
        self.conn = None
        self.helo = None
        self.reset()

    def reset(self):
        self.mail = None
        self.rcpts = []
        self.headers = []
        self.bodybuf = b""
        self.rcpt_macros = []
        self.seen_eoh = False

    def macros(self):
        return {m: self.getsymval(m) for m in MACROS}

    def connect(self, hostname, family, hostaddr):
        self.conn = [hostname, list(hostaddr) if isinstance(hostaddr, tuple) else hostaddr]
        return Milter.CONTINUE

    def hello(self, heloname):
        self.helo = heloname
        return Milter.CONTINUE

    def envfrom(self, f, *args):
        self.reset()
        self.mail = [f] + list(args)
        self.mail_macros = self.macros()
        if "tempfail@" in f:
            self.setreply("451", "4.7.1", "Scripted milter says later")
            log({"event": "mail-refused", "mail": self.mail})
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        self.rcpts.append([to] + list(args))
        self.rcpt_macros.append(self.getsymval("{rcpt_addr}"))
        if "reject@" in to:
            self.setreply("550", "5.7.1", "Scripted milter refuses", "this recipient", "really")
            return Milter.REJECT
        if "discard@" in to:
            return Milter.DISCARD
        return Milter.CONTINUE

    def header(self, name, value):
        self.headers.append([name, value])
        return Milter.CONTINUE

    def eoh(self):
        self.seen_eoh = True
        return Milter.CONTINUE

    def body(self, chunk):
        self.bodybuf += chunk
        return Milter.CONTINUE

    def eom(self):
        subject = ""
        for n, v in self.headers:
            if n.lower() == "subject":
                subject = v
        entry = {"event": "eom", "conn": self.conn, "helo": self.helo, "mail": self.mail,
                 "rcpts": self.rcpts, "headers": self.headers, "eoh": self.seen_eoh,
                 "body": self.bodybuf.decode("latin-1"), "macros": self.macros(),
                 "mail_macros": self.mail_macros, "rcpt_macros": self.rcpt_macros}
        log(entry)
        words = subject.lower().split()
        if "progress" in words:
            for _ in range(3):
                self.progress()
                time.sleep(0.7)
        if "reject" in words:
            self.setreply("554", "5.7.1", "Refused by the scripted milter")
            return Milter.REJECT
        if "tempfail" in words:
            return Milter.TEMPFAIL
        if "discard" in words:
            return Milter.DISCARD
        if "edit" in words:
            self.addheader("X-Added", "first line\n\tsecond line")
            self.chgheader("Subject", 1, "edited by the scripted milter")
            self.chgheader("X-Remove-Me", 1, "")
            self.addheader("X-Top", "inserted at the top", 0)
        if "body" in words:
            self.replacebody(b"replaced body line one\n")
            self.replacebody(b"replaced body line two\n")
        if "envelope" in words:
            self.chgfrom("<changed@example.test>")
            self.delrcpt("<alice@example.test>")
            self.addrcpt("<bob@example.test>", "NOTIFY=NEVER")
        if "quarantine" in words:
            self.quarantine("held by the scripted milter")
        return Milter.CONTINUE

    def abort(self):
        log({"event": "abort"})
        return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = Scripted
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGHDRS + Milter.ADDRCPT + Milter.ADDRCPT_PAR +
                     Milter.DELRCPT + Milter.CHGBODY + Milter.QUARANTINE + Milter.CHGFROM)
    Milter.runmilter("tern-scripted", sys.argv[1], 30)
