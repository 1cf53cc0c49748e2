"""Integration test harness: the real ternd with real clients.

Fixtures
  ternd          a running ternd (defaults below) in a private temp directory
  ternd_factory  make more: ternd_factory(mynetworks="", max_message_size="10k")
  dovecot        a private Dovecot IMAP server reading the same Maildirs
  tern_paths     the temp directory layout (mail_dir, queue_dir, users, ...)

Every ternd runs as `ternd -c /dev/null -o key=value ...` on free loopback
ports, its stderr goes to a file that is attached to the report of a failing
test, and at teardown it gets SIGTERM and must exit 0 promptly with no
sanitizer report. Processes and temp directories are removed even on failure.

Environment: TERND, TERNCTL (default build-asan/, else build/), and the
sanitizer options ASAN_OPTIONS / UBSAN_OPTIONS from `make test`.
Only the standard library and pytest are used.
"""

import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOSTNAME = "mx.example.test"
PASSWORDS = {"alice": "alice-dev-password", "bob": "bob-dev-password"}

# Sanitizer defaults if the caller did not set them (make test does).
os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")

SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"ThreadSanitizer|SUMMARY: UndefinedBehaviorSanitizer|AddressSanitizer:DEADLYSIGNAL")


def _program(env, name):
    """Path of a built program: $ENV, else build-asan/NAME, else build/NAME."""
    p = os.environ.get(env)
    if p:
        return os.path.abspath(p) if not os.path.isabs(p) else p
    for d in ("build-asan", "build"):
        cand = os.path.join(REPO, d, name)
        if os.access(cand, os.X_OK):
            return cand
    return os.path.join(REPO, "build-asan", name)


TERND = _program("TERND", "ternd")
TERNCTL = _program("TERNCTL", "ternctl")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; return it or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sanitizer_report(text):
    """The sanitizer complaint in a stderr text, or None."""
    m = SANITIZER_RE.search(text)
    if not m:
        return None
    start = text.rfind("\n", 0, max(0, m.start() - 200)) + 1
    return text[start:start + 6000]


# --- Maildir helpers ----------------------------------------------------------

def maildir_files(mail_dir, user, domain="example.test"):
    """Visible messages (new/ and cur/) of user@domain, sorted by name."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(mail_dir, domain, user, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in os.listdir(d) if not f.startswith(".")]
    return sorted(out)


def read_message(path):
    """A delivered message as text with CRLF and LF line ends both made LF."""
    with open(path, "rb") as f:
        return f.read().replace(b"\r\n", b"\n").decode("utf-8", "replace")


def headers_of(msg):
    """Unfolded header lines of a message text (up to the blank line)."""
    head = msg.split("\n\n", 1)[0]
    return re.sub(r"\n[ \t]+", " ", head).split("\n")


def header_values(msg, name):
    """All values of header NAME (case-insensitive), unfolded."""
    pre = name.lower() + ":"
    return [h[len(pre):].strip() for h in headers_of(msg) if h.lower().startswith(pre)]


def wait_messages(mail_dir, user, n, domain="example.test", timeout=10.0):
    """Wait until user@domain has at least n visible messages; return them."""
    return wait_for(lambda: (lambda fs: fs if len(fs) >= n else None)(
        maildir_files(mail_dir, user, domain)),
        timeout=timeout, what=f"{n} message(s) for {user}@{domain}")


# --- ternd --------------------------------------------------------------------

class Ternd:
    """One ternd process on private directories and a free port."""

    def __init__(self, root, name="ternd", **overrides):
        self.root = root
        self.name = name
        self.port = free_port()
        self.mail_dir = os.path.join(root, "mail")
        self.queue_dir = os.path.join(root, "queue")
        self.sock = os.path.join(root, "run", "ternd.sock")
        os.makedirs(os.path.join(root, "run"), exist_ok=True)
        self.users = os.path.join(root, "users")
        self.aliases = os.path.join(root, "aliases")
        if not os.path.exists(self.users):
            shutil.copy(os.path.join(REPO, "etc", "users"), self.users)
        if not os.path.exists(self.aliases):
            with open(self.aliases, "w") as f:
                f.write("# test aliases\n"
                        "postmaster@example.test: alice@example.test\n"
                        "team@example.test: alice@example.test, bob@example.test\n"
                        "alias-of-alias@example.test: team@example.test\n")
        # Remote mail must never leave the machine: DNS goes to a dead port.
        self.opts = {
            "hostname": HOSTNAME,
            "smtp_listen": f"127.0.0.1:{self.port}",
            "local_domains": "example.test, localhost",
            "mail_dir": self.mail_dir,
            "queue_dir": self.queue_dir,
            "users_file": self.users,
            "aliases_file": self.aliases,
            "control_socket": self.sock,
            "dns_resolver": f"127.0.0.1:{free_port()}",
            "run_user": pwd.getpwuid(os.getuid()).pw_name,
            "allow_root": "yes" if os.getuid() == 0 else "no",
        }
        self.opts.update({k: str(v) for k, v in overrides.items()})
        self.proc = None
        self.starts = 0
        self.logs = []

    def argv(self):
        """ternd's command line."""
        a = [TERND, "-c", "/dev/null"]
        for k, v in self.opts.items():
            a += ["-o", f"{k}={v}"]
        return a

    @property
    def log_path(self):
        """The stderr file of the current (or last) run."""
        return self.logs[-1] if self.logs else None

    def log(self):
        """Everything the current run wrote to stderr."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def all_logs(self):
        """stderr of every run, each under a heading."""
        out = []
        for i, p in enumerate(self.logs):
            with open(p, "rb") as f:
                out.append(f"--- {self.name} run {i + 1}: {' '.join(self.argv())}\n"
                           + f.read().decode("utf-8", "replace"))
        return "\n".join(out)

    def start(self, wait=True):
        """Start ternd; with wait, until its port answers with a 220 greeting."""
        assert self.proc is None, "already running"
        if not os.access(TERND, os.X_OK):
            pytest.fail(f"{TERND} is not built (run make, or set TERND)")
        self.starts += 1
        path = os.path.join(self.root, f"{self.name}.stderr.{self.starts}")
        self.logs.append(path)
        errf = open(path, "wb")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=errf, stderr=errf, cwd=self.root)
        errf.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20.0):
        """Wait until the SMTP port accepts and greets; fail if ternd died."""
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                pytest.fail(f"ternd exited with status {rc} during start-up:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    banner = s.recv(512)
                    if banner.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ternd did not answer on port {self.port} within {timeout}s:\n"
                            f"{self.log()}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal ternd and wait; return its exit status (negative = signal)."""
        if self.proc is None:
            return None
        p = self.proc
        self.proc = None
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            pytest.fail(f"ternd did not exit within {timeout}s of {signal.Signals(sig).name}")

    def kill9(self):
        """Crash ternd (SIGKILL): nothing of it may run afterwards."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def check_clean_exit(self, rc):
        """Exit status 0 and no sanitizer report in stderr."""
        rep = sanitizer_report(self.log())
        assert rep is None, f"sanitizer report in ternd stderr:\n{rep}"
        assert rc == 0, f"ternd exit status {rc} after SIGTERM; stderr:\n{self.log()[-4000:]}"

    def ternctl(self, *args, timeout=20):
        """Run ternctl against this instance's control socket."""
        cmd = [TERNCTL, "-c", "/dev/null"]
        for k, v in self.opts.items():
            cmd += ["-o", f"{k}={v}"]
        return subprocess.run(cmd + list(args), capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def messages(self, user, domain="example.test"):
        """Visible Maildir messages of user@domain."""
        return maildir_files(self.mail_dir, user, domain)

    def wait_messages(self, user, n, domain="example.test", timeout=10.0):
        """Wait for n messages for user@domain."""
        return wait_messages(self.mail_dir, user, n, domain, timeout)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach every ternd's and Dovecot's stderr/log to a failing test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for t in getattr(item, "_tern_daemons", []):
            try:
                text = t.all_logs() if isinstance(t, Ternd) else t.log()
            except OSError as e:
                text = f"(cannot read log: {e})"
            if len(text) > 20000:
                text = "...\n" + text[-20000:]
            rep.sections.append((f"{t.name} log ({rep.when})", text))


@pytest.fixture
def tern_root():
    """A private directory for one test, removed afterwards."""
    d = tempfile.mkdtemp(prefix="tern-it-")
    # Dovecot's unprivileged helpers must be able to traverse it.
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ternd_factory(request, tern_root):
    """Start ternds with overrides; stop them (SIGTERM, exit 0 checked) at teardown."""
    started = []
    request.node._tern_daemons = getattr(request.node, "_tern_daemons", [])

    def make(start=True, root=None, name=None, **overrides):
        n = name or ("ternd" if not started else f"ternd{len(started) + 1}")
        t = Ternd(root or tern_root, name=n, **overrides)
        started.append(t)
        request.node._tern_daemons.append(t)
        if start:
            t.start()
        return t

    yield make
    errors = []
    for t in started:
        if t.proc is None:
            rep = sanitizer_report(t.log())
            if rep:
                errors.append(f"{t.name}: sanitizer report:\n{rep}")
            continue
        rc = t.stop()
        rep = sanitizer_report(t.log())
        if rep:
            errors.append(f"{t.name}: sanitizer report:\n{rep}")
        elif rc != 0:
            errors.append(f"{t.name}: exit status {rc} after SIGTERM")
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def ternd(ternd_factory):
    """A running ternd with the default test configuration."""
    return ternd_factory()


# --- Dovecot ------------------------------------------------------------------

class Dovecot:
    """A private Dovecot IMAP server over <mail_dir>/%d/%n, users from users_file."""

    def __init__(self, root, mail_dir, users_file):
        self.name = "dovecot"
        self.root = os.path.join(root, "dovecot")
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.proc = None
        self.mail_dir = mail_dir
        uid, gid = os.getuid(), os.getgid()
        user = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid).gr_name
        home = os.path.join(self.root, "home")
        self.home = home
        # Dovecot never accesses mail as root ("userdb returned 0 as uid"), so
        # as root the mailboxes are handed to nobody before Dovecot starts.
        self.mail_uid, self.mail_gid = uid, gid
        if uid == 0:
            nobody = pwd.getpwnam("nobody")
            self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
        # As root, Dovecot's own helpers run as dovecot/dovenull (Debian
        # creates them); the users file must be readable by the auth process.
        # As an ordinary user every process runs as that user.
        if uid == 0:
            internal = "default_internal_user = dovecot\ndefault_login_user = dovenull\n"
        else:
            internal = (f"default_internal_user = {user}\ndefault_login_user = {user}\n"
                        f"default_internal_group = {group}\n")
        with open(self.conf, "w") as f:
            f.write(f"""# private Dovecot for Tern's integration tests
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = tern-test-{self.port}
{internal}protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {self.log_path}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{mail_dir}/%d/%n
mail_home = {home}/%d/%n
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%u {users_file}
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={home}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")

    def chown_mail(self):
        """As root: give the Maildirs and homes to the uid Dovecot reads them as."""
        if os.getuid() != 0:
            return
        os.makedirs(self.home, exist_ok=True)
        for top in (self.mail_dir, self.home):
            os.chown(top, self.mail_uid, self.mail_gid)
            for d, dirs, files in os.walk(top):
                for n in dirs + files:
                    os.lchown(os.path.join(d, n), self.mail_uid, self.mail_gid)

    def start(self):
        """Run dovecot -F in the background until the IMAP port greets."""
        self.chown_mail()
        errf = open(self.log_path + ".stderr", "wb")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
        errf.close()
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                pytest.fail(f"dovecot exited with {rc} at start-up:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dovecot did not answer on {self.port}:\n{self.log()}")
            time.sleep(0.1)

    def log(self):
        """Dovecot's log and stderr."""
        out = ""
        for p in (self.log_path, self.log_path + ".stderr"):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out += f.read().decode("utf-8", "replace")
        return out

    def stop(self):
        """Stop the master and its children."""
        if self.proc is None:
            return
        p = self.proc
        self.proc = None
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def dovecot_factory(request, tern_root):
    """Start a Dovecot over a mail_dir; stopped at teardown."""
    if shutil.which("dovecot") is None:
        pytest.fail("dovecot is not installed (make deps)")
    made = []
    request.node._tern_daemons = getattr(request.node, "_tern_daemons", [])

    def make(mail_dir, users_file):
        d = Dovecot(tern_root, mail_dir, users_file)
        made.append(d)
        request.node._tern_daemons.append(d)
        return d.start()

    yield make
    for d in made:
        d.stop()


# --- a raw SMTP client ----------------------------------------------------------

QUEUED_RE = re.compile(r"queued as ([A-Za-z0-9._-]+)")


class RawSMTP:
    """SMTP over a plain socket: exact bytes out, parsed replies in.

    reply() reads one (possibly multi-line) reply and returns (code, text),
    text being the lines joined by "\\n" without the codes; (None, "") at EOF.
    """

    def __init__(self, port, timeout=15.0, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        """Write bytes (or str, encoded as UTF-8) exactly as given."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One reply: (code, text); (None, partial text) when the server closed."""
        lines = []
        while True:
            try:
                line = self._line()
            except (ConnectionResetError, BrokenPipeError):
                line = None
            if line is None:
                return None, "\n".join(lines)
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError(f"malformed reply line: {line!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), "\n".join(lines)
            if line[3] != "-":
                raise AssertionError(f"malformed reply line: {line!r}")

    def cmd(self, line):
        """Send one command line (CRLF added) and read its reply."""
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self, name="client.example.test"):
        """EHLO; returns the set of upper-cased keywords (first word of each line)."""
        code, text = self.cmd(f"EHLO {name}")
        assert code == 250, (code, text)
        return code, text

    def closed(self, timeout=5.0):
        """True if the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        """Close without QUIT."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_message(msgid, subject="test", body="hello\r\n", frm="bob@example.test",
                 to="alice@example.test"):
    """A small RFC 5322 message with CRLF line ends."""
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{msgid}>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
            + body)
