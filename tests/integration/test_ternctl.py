"""ternctl check, ternd's refusal of bad configurations, and clean shutdown."""

import os
import pwd
import signal
import subprocess
import time

import pytest

from conftest import (REPO, TERNCTL, TERND, RawSMTP, free_port, make_message,
                      wait_messages)


def _ternctl(*args, cwd=None, timeout=20):
    if not os.access(TERNCTL, os.X_OK):
        pytest.fail(f"{TERNCTL} is not built")
    return subprocess.run([TERNCTL] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _good_conf(root, port=2525):
    path = os.path.join(root, "ternd.conf")
    with open(path, "w") as f:
        f.write("# a good configuration\n"
                "hostname = mx.example.test\n"
                f"smtp_listen = 127.0.0.1:{port}\n"
                "local_domains = example.test, localhost\n"
                "mail_dir = mail\n"
                "queue_dir = queue\n"
                "users_file = users\n"
                "aliases_file = aliases\n"
                "control_socket = run/ternd.sock\n"
                "max_message_size = 10m\n"
                "command_timeout = 5m\n")
    for name in ("users", "aliases"):
        with open(os.path.join(REPO, "etc", name)) as src, \
                open(os.path.join(root, name), "w") as dst:
            dst.write(src.read())
    os.makedirs(os.path.join(root, "run"), exist_ok=True)
    return path


def test_check_dev_config_ok():
    r = _ternctl("-c", os.path.join(REPO, "etc", "ternd.conf"), "check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_good_file_ok(tern_root):
    path = _good_conf(tern_root)
    r = _ternctl("-c", path, "check")
    assert r.returncode == 0, r.stdout + r.stderr


BAD = [
    # (line to append, key, why)
    ("bogus_key = 1", "bogus_key", "unknown key"),
    ("max_recipients = lots", "max_recipients", None),
    ("smtp_listen = localhost:25x", "smtp_listen", None),
    ("max_message_size = 12q", "max_message_size", None),
    ("command_timeout = -5", "command_timeout", None),
    ("just some words", None, None),
]


@pytest.mark.parametrize("line,key,why", BAD, ids=[b[0] for b in BAD])
def test_check_bad_file_names_file_line_key(tern_root, line, key, why):
    path = _good_conf(tern_root)
    with open(path) as f:
        n = sum(1 for _ in f)
    with open(path, "a") as f:
        f.write(line + "\n")
    lineno = n + 1
    r = _ternctl("-c", path, "check")
    assert r.returncode != 0, f"ternctl check accepted {line!r}"
    prefix = f"{path}:{lineno}: " + (f"{key}:" if key else "")
    assert prefix in r.stderr, f"expected {prefix!r} in stderr:\n{r.stderr}"
    if why:
        assert why in r.stderr
    # ternd refuses to start on the same file, with the same message
    p = subprocess.run([TERND, "-c", path], capture_output=True, text=True, timeout=20,
                       cwd=tern_root)
    assert p.returncode != 0, "ternd started on a bad configuration"
    assert prefix in p.stderr, f"expected {prefix!r} in ternd's stderr:\n{p.stderr}"


def test_ternd_override_bad_value_refused(tern_root):
    p = subprocess.run([TERND, "-c", "/dev/null", "-o", "max_errors=ten"],
                       capture_output=True, text=True, timeout=20, cwd=tern_root)
    assert p.returncode != 0
    assert "max_errors" in p.stderr, p.stderr
    p = subprocess.run([TERND, "-c", "/dev/null", "-o", "no_such_key=1"],
                       capture_output=True, text=True, timeout=20, cwd=tern_root)
    assert p.returncode != 0
    assert "no_such_key" in p.stderr, p.stderr


def test_ternd_missing_config_file_refused(tern_root):
    p = subprocess.run([TERND, "-c", os.path.join(tern_root, "nope.conf")],
                       capture_output=True, text=True, timeout=20, cwd=tern_root)
    assert p.returncode != 0
    assert "nope.conf" in p.stderr


def test_ternd_runs_from_config_file(ternd_factory, tern_root):
    """`ternd -c FILE` with relative paths resolved against FILE's directory."""
    port = free_port()
    path = _good_conf(tern_root, port)
    p = subprocess.Popen([TERND, "-c", path, "-o", f"dns_resolver=127.0.0.1:{free_port()}",
                          "-o", f"run_user={pwd.getpwuid(os.getuid()).pw_name}",
                          "-o", "allow_root=yes"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
    try:
        deadline = time.monotonic() + 20
        while True:
            assert p.poll() is None, p.stdout.read().decode(errors="replace")
            try:
                c = RawSMTP(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "ternd -c FILE did not listen"
                time.sleep(0.05)
        with c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(make_message("file-conf@example.test") + ".\r\n")
            assert c.reply()[0] == 250
        wait_messages(os.path.join(tern_root, "mail"), "alice", 1)
        assert os.path.isdir(os.path.join(tern_root, "queue"))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "timeout"
    assert rc == 0, rc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_exits_zero_promptly(ternd_factory, sig):
    t = ternd_factory()
    # an idle session and one in the middle of DATA must not hold it up
    idle = RawSMTP(t.port)
    busy = RawSMTP(t.port)
    busy.ehlo()
    assert busy.cmd("MAIL FROM:<bob@example.test>")[0] == 250
    assert busy.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert busy.cmd("DATA")[0] == 354
    busy.send("Subject: half a message\r\n\r\nhalf")
    time.sleep(0.2)
    start = time.monotonic()
    rc = t.stop(sig, timeout=10)
    took = time.monotonic() - start
    idle.close()
    busy.close()
    t.check_clean_exit(rc)
    assert took < 5, f"ternd took {took:.1f}s to exit"
    # the half message was never acknowledged, so it must not be delivered
    assert t.messages("alice") == []
    # and the log says it stopped
    assert t.log().strip(), "ternd logged nothing at all"


def test_sigterm_keeps_acknowledged_mail(ternd_factory):
    """Mail acknowledged just before SIGTERM is delivered (now or after restart)."""
    t = ternd_factory()
    with RawSMTP(t.port) as c:
        c.ehlo()
        for i in range(5):
            assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
            assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(make_message(f"term-{i}@example.test") + ".\r\n")
            assert c.reply()[0] == 250
    t.check_clean_exit(t.stop())
    t.start()
    t.wait_messages("bob", 5, timeout=20)
    time.sleep(0.5)
    assert len(t.messages("bob")) == 5


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_drops_to_run_user(ternd_factory):
    """Started as root, ternd runs as run_user and the mail it writes is that user's."""
    nobody = pwd.getpwnam("nobody")
    t = ternd_factory(run_user="nobody")
    with open(f"/proc/{t.proc.pid}/status") as f:
        ids = {l.split(":")[0]: l.split()[1:] for l in f if l.startswith(("Uid:", "Gid:"))}
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4, ids
    assert ids["Gid"] == [str(nobody.pw_gid)] * 4, ids
    with RawSMTP(t.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("priv-1@example.test") + ".\r\n")
        assert c.reply()[0] == 250
    f = t.wait_messages("alice", 1)[0]
    assert os.stat(f).st_uid == nobody.pw_uid


def test_refuses_to_run_as_root_without_allow_root(ternd_factory):
    """run_user root is refused unless allow_root = yes says so explicitly."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    t = ternd_factory(start=False, run_user="root", allow_root="no")
    p = subprocess.run(t.argv(), capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "refusing to receive and deliver mail as root" in p.stderr


def test_dkim_keygen_uses_configured_dir_and_run_user(tmp_path):
    """`ternctl dkim keygen` without --dir writes under dkim_key_dir; run as
    root, the key and its domain directory go to run_user (ternd reads keys
    after dropping root), never readable by others."""
    keydir = tmp_path / "keys"
    args = ["-c", "/dev/null", "-o", f"dkim_key_dir={keydir}"]
    owner = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    args += ["-o", f"run_user={owner}"]
    r = _ternctl(*args, "dkim", "keygen", "Example.Test", "sel1", "--type", "ed25519")
    assert r.returncode == 0, r.stderr
    assert 'sel1._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p=' in r.stdout
    key = keydir / "example.test" / "sel1.ed25519.pem"
    st = os.stat(key)
    assert st.st_mode & 0o777 == 0o600
    assert os.stat(keydir / "example.test").st_mode & 0o777 == 0o700
    assert os.stat(keydir).st_mode & 0o777 == 0o711
    want = pwd.getpwnam(owner).pw_uid
    assert st.st_uid == want and os.stat(keydir / "example.test").st_uid == want
    # an existing key is never overwritten
    r = _ternctl(*args, "dkim", "keygen", "example.test", "sel1", "--type", "ed25519")
    assert r.returncode != 0 and "File exists" in r.stderr
