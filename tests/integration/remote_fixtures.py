"""Helpers for the remote delivery tests: a private DNS (nsd), receiving
peers (a second ternd, Debian's Postfix, a scripted misbehaving server), and
a small world that ties them together.

Everything listens on loopback addresses (127.0.0.0/8 needs no setup on
Linux); all outbound SMTP of the sending ternd goes to one port, smtp_port,
so each receiving peer listens on its own 127.0.0.x with that port.

  Nsd(root, zone_text).start()      authoritative for "test." on 127.0.0.1
  Postfix(root, addr, port).start() master -d with a private config dir;
                                    .reconfigure({k: v}) postconf + reload,
                                    .sendmail(from, rcpts, bytes) its sendmail(1)
  Peer(addr, port, behaviour)       scripted SMTP server in a thread
  RemoteTernd(...)                  a Ternd that may listen off 127.0.0.1
  self_signed_cert(dir, name)       PEM certificate and key via openssl(1)
  ca_signed_cert(dir, name)         a test CA plus a certificate it signed

Only the standard library and pytest; the conftest harness starts ternd.
"""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import Ternd, wait_for

NSD = "/usr/sbin/nsd"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


def free_port_on(addrs):
    """A TCP port free on every address in addrs (and on UDP 127.0.0.1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for a in addrs:
            try:
                with socket.socket() as t:
                    t.bind((a, port))
            except OSError:
                ok = False
                break
        if ok:
            return port
    raise RuntimeError("no common free port")


def free_udp_port():
    """A UDP+TCP port on 127.0.0.1 for nsd."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port for nsd")


# --- nsd ---------------------------------------------------------------------

class Nsd:
    """nsd -d serving one zone text for origin "test." on 127.0.0.1."""

    def __init__(self, root, zone_text):
        self.name = "nsd"
        self.dir = os.path.join(root, "nsd")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_udp_port()
        self.zone = os.path.join(self.dir, "test.zone")
        with open(self.zone, "w") as f:
            f.write("$ORIGIN test.\n$TTL 60\n"
                    "@ SOA ns.test. admin.test. 1 3600 600 86400 5\n"
                    "@ NS ns.test.\nns A 127.0.0.1\n" + zone_text)
        self.conf = os.path.join(self.dir, "nsd.conf")
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""server:
  ip-address: 127.0.0.1
  port: {self.port}
  username: ""
  chroot: ""
  zonesdir: "{d}"
  pidfile: "{d}/nsd.pid"
  database: ""
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "test."
  zonefile: "{self.zone}"
""")
        self.proc = None

    @property
    def resolver(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        p = os.path.join(self.dir, "nsd.log")
        return open(p).read() if os.path.exists(p) else ""

    def start(self):
        if not os.access(NSD, os.X_OK):
            pytest.fail(f"{NSD} is not installed (apt-get install nsd)")
        r = subprocess.run(["nsd-checkzone", "test", self.zone], capture_output=True, text=True)
        assert r.returncode == 0, f"bad test zone: {r.stdout}{r.stderr}"
        self.proc = subprocess.Popen([NSD, "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=10, what="nsd to answer")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            pytest.fail(f"nsd exited with {self.proc.returncode}:\n{self.log()}")
        # a minimal SOA query for "test."
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x04test\x00\x00\x06\x00\x01")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --- ternd off 127.0.0.1 ------------------------------------------------------

class RemoteTernd(Ternd):
    """A Ternd whose SMTP listener may be on any loopback address."""

    def __init__(self, root, name, listen_addr="127.0.0.1", port=None, **overrides):
        super().__init__(root, name=name, **overrides)
        if port is not None:
            self.port = port
        self.addr = listen_addr
        self.opts["smtp_listen"] = f"{listen_addr}:{self.port}"
        self.opts.update({k: str(v) for k, v in overrides.items()})

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                pytest.fail(f"{self.name} exited with status {rc} during start-up:\n{self.log()}")
            try:
                with socket.create_connection((self.addr, self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not answer on {self.addr}:{self.port}:\n{self.log()}")
            time.sleep(0.05)

    def queue(self):
        """`ternctl queue` output."""
        r = self.ternctl("queue")
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout


def self_signed_cert(d, name):
    """A self-signed certificate and key for name; returns (cert, key)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                        "-keyout", key, "-out", cert], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return cert, key


def ca_signed_cert(d, name, ca_name="Tern Test CA"):
    """A test CA and a certificate for name (subjectAltName DNS:name)
    signed by it, under d; returns (ca_cert, cert, key)."""
    ca_cert, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    cert, key, csr = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"), os.path.join(d, "cert.csr")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={ca_name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", ca_key, "-out", ca_cert],
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={name}", "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert],
    ):
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    os.chmod(key, 0o644)  # Postfix's smtpd (user postfix) reads it after dropping privileges
    return ca_cert, cert, key


# --- Postfix -----------------------------------------------------------------

class Postfix:
    """Debian's Postfix with a private configuration and queue, receiving for
    postfix.test on addr:port into <root>/postfix/mail/<user>/ (Maildir)."""

    def __init__(self, root, addr, port, domain="postfix.test"):
        self.name = "postfix"
        self.dir = os.path.join(root, "postfix")
        self.conf_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.log_path = os.path.join(self.dir, "maillog")
        for d in (self.conf_dir, self.queue_dir, self.data_dir, self.mail_dir):
            os.makedirs(d, exist_ok=True)
        self.addr, self.port, self.domain = addr, port, domain
        self.proc = None

    def _write_conf(self):
        import pwd
        owner = "postfix"
        try:
            pwd.getpwnam(owner)
        except KeyError:
            pytest.fail("no 'postfix' user: the Debian package creates it")
        # virtual mailboxes: every user is a directory owned by the postfix
        # user, so local(8)'s home directories and aliases are not involved
        uid, gid = pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid
        for d in (self.mail_dir, self.data_dir):
            os.chown(d, uid, gid)
        vmaps = os.path.join(self.conf_dir, "vmailbox")
        with open(vmaps, "w") as f:
            f.write(f"user@{self.domain} user/\n")
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{self.domain}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = texthash:{vmaps}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
maillog_file = {self.log_path}
maillog_file_prefixes = {self.dir}
alias_maps =
alias_database =
smtputf8_enable = yes
smtpd_banner = $myhostname ESMTP
biff = no
relayhost =
default_destination_concurrency_limit = 2
""")
        src = "/etc/postfix/master.cf"
        with open(src) as f:
            lines = f.read().splitlines()
        out = []
        # the listener's own address in master.cf: inet_interfaces must
        # name interface addresses, and 127.0.0.4 is only routed to lo
        for ln in lines:
            w = ln.split()
            if w and not ln.startswith((" ", "\t", "#")) and w[0] == "smtp" and w[1] == "inet":
                ln = f"{self.addr}:{self.port} inet n - n - - smtpd"
            elif w and not ln.startswith((" ", "\t", "#")) and len(w) > 4:
                # no chroot anywhere: the private queue is not under /var/spool
                w[4] = "n"
                ln = " ".join(w)
            out.append(ln)
        # the postlog service is what maillog_file writes through
        text = "\n".join(out) + "\n"
        if "postlog" not in text:
            text += "postlog unix-dgram n - n - 1 postlogd\n"
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(text)

    def start(self):
        if not os.access(POSTFIX_MASTER, os.X_OK):
            pytest.fail(f"{POSTFIX_MASTER} is missing (apt-get install postfix)")
        if os.getuid() != 0:
            pytest.skip("Postfix's master must start as root")
        self._write_conf()
        env = dict(os.environ, MAIL_CONFIG=self.conf_dir)
        r = subprocess.run(["postfix", "-c", self.conf_dir, "check"], capture_output=True, text=True,
                           env=env)
        # "postfix check" creates the queue directories with the right owners
        if r.returncode != 0:
            pytest.fail(f"postfix check failed:\n{r.stdout}{r.stderr}")
        errf = open(os.path.join(self.dir, "master.stderr"), "wb")
        self.proc = subprocess.Popen([POSTFIX_MASTER, "-c", self.conf_dir, "-d"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
        errf.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                pytest.fail(f"postfix master exited with {rc}:\n{self.log()}")
            try:
                with socket.create_connection((self.addr, self.port), timeout=2) as s:
                    s.settimeout(10)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"postfix did not answer on {self.addr}:{self.port}:\n{self.log()}")
            time.sleep(0.1)

    def reconfigure(self, settings, remove=()):
        """postconf -e each name=value in settings (and -X each name in
        remove), then SIGHUP the master (what `postfix reload` does), so
        new smtpd/smtp processes run with the new main.cf."""
        env = dict(os.environ, MAIL_CONFIG=self.conf_dir)
        if settings:
            r = subprocess.run(["postconf", "-c", self.conf_dir, "-e"]
                               + [f"{k} = {v}" for k, v in settings.items()],
                               capture_output=True, text=True, env=env)
            assert r.returncode == 0, r.stdout + r.stderr
        if remove:
            r = subprocess.run(["postconf", "-c", self.conf_dir, "-X"] + list(remove),
                               capture_output=True, text=True, env=env)
            assert r.returncode == 0, r.stdout + r.stderr
        if self.proc is not None:
            import signal
            n = self.log().count("reload")
            old = self._children()
            self.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: self.log().count("reload") > n, timeout=10, what="postfix to reload")
            # processes of the old generation (an idle smtpd, qmgr) may take one
            # more connection or job with the old main.cf: wait them out
            wait_for(lambda: not (old & self._children()), timeout=15,
                     what="postfix's old processes to exit after the reload")

    def _children(self):
        """Pids whose parent is the master."""
        out = set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                out.add(int(d))
        return out

    def sendmail(self, sender, rcpts, message):
        """Submit message (bytes) with Postfix's own sendmail(1) -C conf_dir."""
        env = dict(os.environ, MAIL_CONFIG=self.conf_dir)
        r = subprocess.run(["/usr/sbin/sendmail", "-C", self.conf_dir, "-f", sender, "-i", "--"]
                           + list(rcpts), input=message, capture_output=True, env=env, timeout=30)
        assert r.returncode == 0, (r.stdout + r.stderr).decode("utf-8", "replace")

    def messages(self, user="user"):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mail_dir, user, sub)
            if os.path.isdir(d):
                out += [os.path.join(d, f) for f in os.listdir(d)]
        return sorted(out)

    def log(self):
        out = ""
        for p in (self.log_path, os.path.join(self.dir, "master.stderr")):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out += f.read().decode("utf-8", "replace")
        return out

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --- a scripted SMTP peer -----------------------------------------------------

class Peer:
    """An SMTP server in a thread, scripted per connection.

    behaviour(n) for the n-th connection (0-based) returns a dict:
      greeting  reply line sent first (default "220 peer ESMTP")
      ehlo      extra EHLO keywords (list), e.g. ["STARTTLS"]
      rcpt      reply to RCPT TO (default "250 2.1.5 ok")
      rcpt_seq  replies to the first RCPTs over all connections, then rcpt
      drop_in_data  close the socket after reading some content
      starttls  reply to STARTTLS; then garbage instead of a TLS handshake
      stall_data  seconds to wait before answering the end of data
    Completed messages (after the final "250") are kept in self.messages
    as (mail_from, [rcpts], content bytes).
    """

    def __init__(self, addr, port, behaviour=None):
        self.addr, self.port = addr, port
        self.behaviour = behaviour or (lambda n: {})
        self.messages = []
        self.transcripts = []
        self.conns = 0
        self.nrcpt = 0
        self.in_data = threading.Event()
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                n = self.conns
                self.conns += 1
            threading.Thread(target=self._session, args=(c, n), daemon=True).start()

    def _session(self, c, n):
        b = dict(self.behaviour(n))
        log = []
        self.transcripts.append(log)
        c.settimeout(20)
        f = c.makefile("rb")

        def say(line):
            log.append("S: " + line)
            c.sendall(line.encode() + b"\r\n")

        try:
            say(b.get("greeting", "220 peer ESMTP"))
            if not b.get("greeting", "220").startswith("220"):
                f.readline()
                return
            mail, rcpts = None, []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                log.append("C: " + cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    kws = ["peer", "PIPELINING", "8BITMIME", "SIZE 10000000"] + b.get("ehlo", [])
                    for k in kws[:-1]:
                        c.sendall(f"250-{k}\r\n".encode())
                    say(f"250 {kws[-1]}")
                elif verb == "HELO":
                    say("250 peer")
                elif verb == "STARTTLS":
                    say(b.get("starttls", "220 2.0.0 go ahead"))
                    c.recv(4096)  # the ClientHello
                    c.sendall(b"this is not TLS\r\n" * 4)
                    return
                elif verb == "MAIL":
                    mail, rcpts = cmd, []
                    say("250 2.1.0 ok")
                elif verb == "RCPT":
                    with self.lock:
                        k = self.nrcpt
                        self.nrcpt += 1
                    seq = b.get("rcpt_seq", [])
                    r = seq[k] if k < len(seq) else b.get("rcpt", "250 2.1.5 ok")
                    if r.startswith("2"):
                        rcpts.append(cmd)
                    say(r)
                elif verb == "DATA":
                    if not rcpts:
                        say("554 5.5.1 no valid recipients")
                        continue
                    say("354 go ahead")
                    data = b""
                    while True:
                        dl = f.readline()
                        if not dl:
                            return
                        if b.get("drop_in_data") and len(data) > 10:
                            return  # vanish half way through the content
                        if dl == b".\r\n":
                            break
                        data += dl
                    self.in_data.set()
                    if b.get("stall_data"):
                        time.sleep(b["stall_data"])
                        return  # never answered: the client must not count it delivered
                    with self.lock:
                        self.messages.append((mail, rcpts, data))
                    say("250 2.0.0 ok: queued")
                elif verb == "RSET":
                    mail, rcpts = None, []
                    say("250 2.0.0 ok")
                elif verb == "QUIT":
                    say("221 2.0.0 bye")
                    return
                else:
                    say("502 5.5.2 what")
        except OSError:
            return
        finally:
            try:
                f.close()
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(timeout=5)


def wait_log(t, pattern, timeout=15.0):
    """Wait for a regex in a ternd's log; return the match."""
    import re
    rx = re.compile(pattern)
    return wait_for(lambda: rx.search(t.log()), timeout=timeout, what=f"log /{pattern}/ of {t.name}")


def have_postfix():
    return os.access(POSTFIX_MASTER, os.X_OK) and shutil.which("postfix") is not None
