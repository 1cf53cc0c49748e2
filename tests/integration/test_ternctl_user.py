"""ternctl user add|passwd|del|list: users_file rewritten atomically.

Every other line of the file (comments, Dovecot's extra fields, CRLF line
ends) must come back byte for byte; the new hash must be a yescrypt hash
that crypt(3) verifies; mode and owner are kept (0600 for a new file); a
running ternd is told to reload, so a new account receives mail at once.
"""

import os
import stat
import subprocess
import warnings

import pytest

from conftest import TERNCTL, RawSMTP, Ternd

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # Python >= 3.13: ask Debian's python3
        _crypt = None


def crypt_ok(password, hashed):
    """crypt(3) says password matches hashed."""
    if _crypt is not None:
        return _crypt.crypt(password, hashed) == hashed
    r = subprocess.run(["/usr/bin/python3", "-W", "ignore", "-c",
                        "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
                        password, hashed], capture_output=True, text=True, check=True)
    return r.stdout.strip() == "True"


BASE = (b"# accounts\r\n"
        b"alice@example.test:$y$j9T$n1X9lVGvrrCR4BHnA9pq7.$5oGegIwdI/wiE2P0zSCyUdkamjqUA8WMKNZZFyANq/3\r\n"
        b"\n"
        b"   # indented comment with: colons\n"
        b"bob@example.test:$y$j9T$iHqVSS888iAcORClrBnXq0$/yVXsDFd9fLDTh9OtSuUDi.K6gE2Hbf/nZQ7oTXnus.:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\n"
        b"alice@localhost:{SHA512-CRYPT}$6$abc$def\n")


def ctl(t, *args, input=b"", conf=None):
    """Run ternctl with the instance's configuration; bytes in, text out."""
    if not os.access(TERNCTL, os.X_OK):
        pytest.fail(f"{TERNCTL} is not built")
    cmd = [TERNCTL, "-c", "/dev/null"]
    for k, v in (conf if conf is not None else t.opts).items():
        cmd += ["-o", f"{k}={v}"]
    r = subprocess.run(cmd + list(args), input=input, capture_output=True, timeout=30, cwd=t.root)
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    return r


def write_users(t, data=BASE, mode=0o600):
    with open(t.users, "wb") as f:
        f.write(data)
    os.chmod(t.users, mode)


def read_users(t):
    with open(t.users, "rb") as f:
        return f.read()


def lines_of(data):
    """Lines with their line ends, as bytes."""
    return data.splitlines(keepends=True)


def hash_of(data, account):
    for line in data.splitlines():
        if line.split(b":", 1)[0].strip().lower() == account.encode().lower():
            return line.split(b":")[1].decode()
    return None


def no_temp_files(t):
    d = os.path.dirname(t.users)
    left = [n for n in os.listdir(d) if ".ternctl." in n]
    assert not left, f"temporary files left behind: {left}"


@pytest.fixture
def offline(tern_root):
    """A configuration whose ternd is not running."""
    return Ternd(tern_root)


def test_add_keeps_other_lines(offline):
    t = offline
    write_users(t)
    ino = os.stat(t.users).st_ino
    r = ctl(t, "user", "add", "carol@example.test", input=b"carol secret\n")
    assert r.returncode == 0, r.err
    assert "carol@example.test" in r.out
    assert "not running" in r.out
    assert "secret" not in r.out + r.err and "$y$" not in r.out + r.err
    new = read_users(t)
    assert new.startswith(BASE), "existing lines must be kept byte for byte"
    added = new[len(BASE):]
    # the file's first line ends in CRLF: the new line follows that style
    assert added.startswith(b"carol@example.test:$y$") and added.endswith(b"\r\n"), added
    assert added.count(b"\n") == 1
    h = hash_of(new, "carol@example.test")
    assert crypt_ok("carol secret", h)
    assert not crypt_ok("carol secret ", h)
    st = os.stat(t.users)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_ino != ino, "the file must be replaced by rename, not rewritten in place"
    no_temp_files(t)


def test_add_refuses_existing_user(offline):
    t = offline
    write_users(t)
    for who in ("alice@example.test", "ALICE@Example.Test", "bob@example.test"):
        r = ctl(t, "user", "add", who, input=b"x\n")
        assert r.returncode == 1, r.out + r.err
        assert "already exists" in r.err
    assert read_users(t) == BASE


def test_passwd_changes_only_the_hash(offline):
    t = offline
    write_users(t, mode=0o640)
    r = ctl(t, "user", "passwd", "bob@example.test", input=b"new bob pw\r\n")
    assert r.returncode == 0, r.err
    new = read_users(t)
    old_lines, new_lines = lines_of(BASE), lines_of(new)
    assert len(old_lines) == len(new_lines)
    for o, n in zip(old_lines, new_lines):
        if o.startswith(b"bob@"):
            # the extra Dovecot fields and the line end stay; only field 2 changes
            assert n.startswith(b"bob@example.test:$y$")
            assert n.endswith(b":1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\n")
            h = n.split(b":")[1].decode()
            assert crypt_ok("new bob pw", h), "CRLF on stdin must be stripped"
            assert h != hash_of(BASE, "bob@example.test")
        else:
            assert o == n
    assert stat.S_IMODE(os.stat(t.users).st_mode) == 0o640
    # CRLF line keeps its CR
    r = ctl(t, "user", "passwd", "alice@example.test", input=b"alice2\n")
    assert r.returncode == 0, r.err
    line = [l for l in lines_of(read_users(t)) if l.startswith(b"alice@example.test")][0]
    assert line.endswith(b"\r\n") and line.count(b"\r") == 1
    assert crypt_ok("alice2", line.split(b":")[1].rstrip(b"\r\n").decode())
    no_temp_files(t)


def test_passwd_and_del_refuse_missing_user(offline):
    t = offline
    write_users(t)
    r = ctl(t, "user", "passwd", "nobody@example.test", input=b"x\n")
    assert r.returncode == 1 and "no user" in r.err
    r = ctl(t, "user", "del", "nobody@example.test")
    assert r.returncode == 1 and "no user" in r.err
    assert read_users(t) == BASE


def test_del_removes_the_line(offline):
    t = offline
    write_users(t)
    r = ctl(t, "user", "del", "Bob@example.test")
    assert r.returncode == 0, r.err
    expect = b"".join(l for l in lines_of(BASE) if not l.startswith(b"bob@"))
    assert read_users(t) == expect
    r = ctl(t, "user", "del", "alice@example.test")
    assert r.returncode == 0, r.err
    assert b"alice@example.test" not in read_users(t)
    assert b"alice@localhost" in read_users(t)
    assert stat.S_IMODE(os.stat(t.users).st_mode) == 0o600


def test_list_never_prints_hashes(offline):
    t = offline
    write_users(t)
    r = ctl(t, "user", "list")
    assert r.returncode == 0, r.err
    assert r.out.split() == ["alice@example.test", "bob@example.test", "alice@localhost"]
    assert "$" not in r.out and "{" not in r.out


def test_add_creates_missing_file_0600(offline):
    t = offline
    os.unlink(t.users)
    r = ctl(t, "user", "list")
    assert r.returncode == 1
    r = ctl(t, "user", "passwd", "x@example.test", input=b"pw\n")
    assert r.returncode == 1 and not os.path.exists(t.users)
    r = ctl(t, "user", "add", "dave@example.test", input=b"dave pw\n")
    assert r.returncode == 0, r.err
    st = os.stat(t.users)
    assert stat.S_IMODE(st.st_mode) == 0o600
    data = read_users(t)
    assert data.startswith(b"dave@example.test:$y$") and data.endswith(b"\n") and data.count(b"\n") == 1
    assert crypt_ok("dave pw", hash_of(data, "dave@example.test"))


def test_file_without_final_newline(offline):
    t = offline
    write_users(t, b"alice@example.test:$y$j9T$n1X9lVGvrrCR4BHnA9pq7.$5oGegIwdI/wiE2P0zSCyUdkamjqUA8WMKNZZFyANq/3")
    r = ctl(t, "user", "add", "erin@example.test", input=b"pw")  # no newline on stdin either
    assert r.returncode == 0, r.err
    lines = read_users(t).split(b"\n")
    assert lines[0].startswith(b"alice@example.test:$y$j9T$n1X9") and lines[1].startswith(b"erin@example.test:$y$")
    assert crypt_ok("pw", hash_of(read_users(t), "erin@example.test"))


def test_symlinked_users_file(offline):
    t = offline
    real = os.path.join(t.root, "real-users")
    with open(real, "wb") as f:
        f.write(BASE)
    os.chmod(real, 0o600)
    os.unlink(t.users)
    os.symlink(real, t.users)
    r = ctl(t, "user", "add", "frank@example.test", input=b"pw\n")
    assert r.returncode == 0, r.err
    assert os.path.islink(t.users), "the symbolic link must stay; its target is replaced"
    with open(real, "rb") as f:
        assert f.read().startswith(BASE + b"frank@example.test:$y$")


BAD_ACCOUNTS = ["alice", "a:b@example.test", "a b@example.test", "a\tb@example.test", "@example.test",
                "alice@", "<alice@example.test>", "alice@[127.0.0.1]", ".alice@example.test",
                "a/b@example.test", "\"a,b\"@example.test", "alice@example..test", "alice@exa mple.test",
                "x" * 300 + "@example.test", "alice@example.test\n"]


@pytest.mark.parametrize("who", BAD_ACCOUNTS)
def test_invalid_accounts_refused(offline, who):
    t = offline
    write_users(t)
    r = ctl(t, "user", "add", who, input=b"pw\n")
    assert r.returncode == 2, r.out + r.err
    assert "invalid account" in r.err
    assert read_users(t) == BASE


@pytest.mark.parametrize("pw", [b"", b"\n", b"\r\n", b"a\0b\n", b"x" * 5000 + b"\n"])
def test_bad_passwords_refused(offline, pw):
    t = offline
    write_users(t)
    r = ctl(t, "user", "add", "gina@example.test", input=pw)
    assert r.returncode == 1, r.out + r.err
    assert read_users(t) == BASE


def test_refuses_to_write_a_file_that_would_not_load(offline):
    t = offline
    broken = BASE + b"this line is not an account\n"
    write_users(t, broken)
    r = ctl(t, "user", "add", "hank@example.test", input=b"pw\n")
    assert r.returncode == 1
    assert "would not load" in r.err
    assert read_users(t) == broken
    no_temp_files(t)


def test_users_file_unset(offline):
    t = offline
    conf = dict(t.opts)
    del conf["users_file"]
    r = ctl(t, "user", "add", "ivan@example.test", input=b"pw\n", conf=conf)
    assert r.returncode == 1 and "users_file" in r.err


def test_usage(offline):
    t = offline
    for args in (["user"], ["user", "add"], ["user", "frob", "a@example.test"], ["user", "list", "x"],
                 ["user", "add", "a@example.test", "extra"]):
        r = ctl(t, *args)
        assert r.returncode == 2, args


def test_running_ternd_reloads(ternd):
    write_users(ternd)
    with RawSMTP(ternd.port) as s:
        s.ehlo()
        assert s.cmd("MAIL FROM:<x@example.net>")[0] == 250
        assert s.cmd("RCPT TO:<kate@example.test>")[0] == 550
    r = ctl(ternd, "user", "add", "kate@example.test", input=b"kate pw\n")
    assert r.returncode == 0, r.err
    assert "reloaded" in r.out
    with RawSMTP(ternd.port) as s:
        s.ehlo()
        assert s.cmd("MAIL FROM:<x@example.net>")[0] == 250
        assert s.cmd("RCPT TO:<kate@example.test>")[0] == 250
    r = ctl(ternd, "user", "del", "kate@example.test")
    assert r.returncode == 0, r.err
    with RawSMTP(ternd.port) as s:
        s.ehlo()
        assert s.cmd("MAIL FROM:<x@example.net>")[0] == 250
        assert s.cmd("RCPT TO:<kate@example.test>")[0] == 550
    r = ctl(ternd, "reload")
    assert r.returncode == 0 and "reloaded" in r.out, r.err


def test_parallel_changes_are_not_lost(offline):
    """Concurrent ternctls serialise on the directory lock: no update is lost."""
    t = offline
    write_users(t)
    cmd = [TERNCTL, "-c", "/dev/null"]
    for k, v in t.opts.items():
        cmd += ["-o", f"{k}={v}"]
    procs = [subprocess.Popen(cmd + ["user", "add", f"p{i}@example.test"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(8)]
    for p in procs:
        p.stdin.write(b"pw\n")
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    data = read_users(t)
    assert data.startswith(BASE)
    for i in range(8):
        assert hash_of(data, f"p{i}@example.test") is not None
    no_temp_files(t)


def test_terminal_prompt_twice_without_echo(offline):
    """On a TTY the password is asked twice; a mismatch changes nothing."""
    import pty
    import termios
    t = offline
    write_users(t)
    cmd = [TERNCTL, "-c", "/dev/null"]
    for k, v in t.opts.items():
        cmd += ["-o", f"{k}={v}"]

    def run(answers):
        master, slave = pty.openpty()
        p = subprocess.Popen(cmd + ["user", "add", "tty@example.test"], stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(slave)
        err = b""
        noecho = True
        for prompt, answer in answers:
            while prompt not in err:  # the prompt comes after echo is off
                chunk = os.read(p.stderr.fileno(), 4096)
                assert chunk, err
                err += chunk
            noecho &= not (termios.tcgetattr(master)[3] & termios.ECHO)
            os.write(master, answer)
        out, rest = p.communicate(timeout=30)
        os.close(master)
        return p.returncode, out.decode(), (err + rest).decode(), noecho

    rc, out, err, noecho = run([(b"New password", b"one\n"), (b"Retype", b"two\n")])
    assert rc == 1 and "do not match" in err
    assert noecho
    assert read_users(t) == BASE
    rc, out, err, noecho = run([(b"New password", b"same pw\n"), (b"Retype", b"same pw\n")])
    assert rc == 0, err
    assert "New password for tty@example.test" in err and "Retype" in err
    assert crypt_ok("same pw", hash_of(read_users(t), "tty@example.test"))
