/*
 * ctl_user - `ternctl user add|passwd|del|list`: the accounts in
 * users_file, Dovecot's passwd-file format ("user@domain:hash[:fields]").
 *
 *   user add USER@DOMAIN      new account; password from stdin
 *   user passwd USER@DOMAIN   new password for an existing account
 *   user del USER@DOMAIN      remove the account's line
 *   user list                 the accounts, one a line (never a hash)
 *
 * The password is one line of standard input (trailing LF / CRLF
 * stripped); from a terminal it is asked twice without echo. It is hashed
 * with yescrypt (passwd_hash_new) and wiped from memory after use.
 * The file is rewritten atomically: under a lock on its directory, the new
 * text goes to a temporary file in the same directory with the old mode
 * and owner (0600 for a new file), is fsynced, renamed over the old one,
 * and the directory is fsynced. Every other line is kept byte for byte
 * (comments, Dovecot's extra fields, CRLF). The result must load with the
 * same parser ternd uses (lookup_load_text), or nothing is written.
 * Afterwards a running ternd is asked to "reload" over the control socket.
 *
 * Exports: ctl_user_run (ternctl.h).
 * Trusts: the command-line address only after the RFC 5321 path parser
 * and the mailbox-name rules lookup.c applies; the users file is parsed,
 * never trusted, and lines we do not change are copied, not interpreted.
 * Implements: RFC 5321 4.1.2 (address syntax, via smtp_parse_path).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "auth/passwd.h"
#include "core/buf.h"
#include "core/fsutil.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "ctl/ternctl.h"
#include "lookup/lookup.h"
#include "smtp/smtp_parse.h"

#define CTL_USER_PW_MAX 1024                   /* octets of a password */
#define CTL_USER_FILE_MAX (64L * 1024 * 1024)  /* as lookup.c reads */
#define CTL_USER_HASH_MAX 256
#define CTL_USER_LOCK_WAIT_SEC 30

enum ctl_user_op {
	CTL_USER_ADD,
	CTL_USER_PASSWD,
	CTL_USER_DEL,
	CTL_USER_LIST,
};

/* ctl_user_op_str - the subcommand's name */
static const char *ctl_user_op_str(enum ctl_user_op op)
{
	switch (op) {
	case CTL_USER_ADD: return "add";
	case CTL_USER_PASSWD: return "passwd";
	case CTL_USER_DEL: return "del";
	case CTL_USER_LIST: return "list";
	}
	return "?";
}

/* the users file, read under the directory lock */
struct ctl_user_file {
	char *path;     /* users_file with symbolic links resolved (we replace the target) */
	char *dir;      /* its directory */
	int dirfd;      /* open and flock()ed; fsynced after the rename */
	int exists;
	struct stat st; /* of the file, when it exists */
	char *text;
	size_t len;
};

static int ctl_user_usage(void)
{
	fputs("usage: ternctl [-c FILE] user add|passwd|del USER@DOMAIN\n"
	      "       ternctl [-c FILE] user list\n"
	      "The password is read from standard input (one line).\n",
	      stderr);
	return TERNCTL_EXIT_USAGE;
}

/*
 * ctl_user_addr_parse - "local@domain" through the RFC 5321 path parser and
 * the rules lookup.c applies to an account (it names a directory under
 * mail_dir). 0, or -1 with a static reason in *why.
 */
static int ctl_user_addr_parse(const char *s, size_t n, struct smtp_path *out, const char **why)
{
	if (lookup_addr_parse(s, n, out, why) < 0)
		return -1;
	if (out->domain_literal) {
		*why = "must be local@domain";
		return -1;
	}
	if (out->quoted || out->local[0] == '.' || strchr(out->local, '/') != NULL) {
		*why = "local part not usable as a mailbox name";
		return -1;
	}
	return 0;
}

/* ctl_user_arg_check - the command-line address: no ':' or blanks, then the parser */
static int ctl_user_arg_check(const char *s, struct smtp_path *out)
{
	const char *why = NULL;
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		/* ':' separates the fields of the file; blanks and controls
		 * would make a line Dovecot and we read differently */
		if (c == ':' || c <= 0x20 || c == 0x7f) {
			why = c == ':' ? "':' is not allowed" : "blanks and control characters are not allowed";
			break;
		}
	}
	if (why == NULL && ctl_user_addr_parse(s, strlen(s), out, &why) == 0)
		return 0;
	fputs("ternctl: invalid account \"", stderr);
	ternctl_print_safe(stderr, s, strnlen(s, 300));
	fprintf(stderr, "\": %s\n", why);
	return -1;
}

/* ctl_user_key - the case-folded key an account is matched by (as lookup.c) */
static void ctl_user_key(const struct smtp_path *p, char *key, size_t cap)
{
	snprintf(key, cap, "%s", p->addr);
	str_lower_ascii(key);
}

/*
 * ctl_user_line - split one line of n bytes at p (without its LF): *uoff
 * and *ulen locate the user field after leading blanks. 1 for an account line whose key is in
 * key (cap bytes), 0 for a blank or comment line, -1 for a line that does
 * not parse (copied as it is).
 */
static int ctl_user_line(const char *p, size_t n, size_t *uoff, size_t *ulen, char *key, size_t cap)
{
	size_t s = 0, e = n;
	while (s < e && (p[s] == ' ' || p[s] == '\t' || p[s] == '\r'))
		s++;
	while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t' || p[e - 1] == '\r'))
		e--;
	if (s == e || p[s] == '#')
		return 0;
	const char *colon = memchr(p + s, ':', e - s);
	size_t len = colon ? (size_t)(colon - (p + s)) : e - s;
	struct smtp_path path;
	const char *why;
	if (memchr(p + s, '\0', len) != NULL || ctl_user_addr_parse(p + s, len, &path, &why) < 0)
		return -1;
	*uoff = s;
	*ulen = len;
	ctl_user_key(&path, key, cap);
	return 1;
}

/* ctl_user_find - does the text hold an account line for key? */
static int ctl_user_find(const char *text, size_t len, const char *key)
{
	size_t pos = 0;
	while (pos < len) {
		const char *p = text + pos;
		const char *nl = memchr(p, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - p) : len - pos;
		pos += n + (nl ? 1 : 0);
		size_t uoff, ulen;
		char k[SMTP_PATH_MAX + 2];
		if (ctl_user_line(p, n, &uoff, &ulen, k, sizeof(k)) == 1 && strcmp(k, key) == 0)
			return 1;
	}
	return 0;
}

/*
 * ctl_user_edit - the new file text: op applied to the account key.
 * passwd keeps the line's user field, extra fields and line end and
 * replaces the second field; del drops the whole line with its line end;
 * add appends "addr:hash" with the file's line-end style. Returns the
 * number of lines changed (add: 1).
 */
static size_t ctl_user_edit(const char *text, size_t len, enum ctl_user_op op, const char *key, const char *addr,
			    const char *hash, struct strbuf *out)
{
	size_t changed = 0, pos = 0;
	int crlf = 0, first = 1;
	while (pos < len) {
		const char *p = text + pos;
		const char *nl = memchr(p, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - p) : len - pos;
		size_t whole = n + (nl ? 1 : 0);
		pos += whole;
		if (first && nl) {
			crlf = n > 0 && p[n - 1] == '\r';
			first = 0;
		}
		size_t uoff, ulen;
		char k[SMTP_PATH_MAX + 2];
		if (op == CTL_USER_ADD || ctl_user_line(p, n, &uoff, &ulen, k, sizeof(k)) != 1 || strcmp(k, key) != 0) {
			strbuf_add(out, p, whole);
			continue;
		}
		changed++;
		if (op == CTL_USER_DEL)
			continue;
		/* passwd: [0, uoff+ulen) ':' hash [next ':' .. content end) line end */
		size_t cend = n;
		if (cend > 0 && p[cend - 1] == '\r')
			cend--;
		size_t pw = uoff + ulen; /* at the ':' or the content end */
		strbuf_add(out, p, pw);
		strbuf_addc(out, ':');
		strbuf_adds(out, hash);
		if (pw < cend) {
			const char *next = memchr(p + pw + 1, ':', cend - pw - 1);
			if (next)
				strbuf_add(out, next, (size_t)(p + cend - next));
		}
		strbuf_add(out, p + cend, whole - cend);
	}
	if (op == CTL_USER_ADD) {
		const char *eol = crlf ? "\r\n" : "\n";
		if (len > 0 && text[len - 1] != '\n')
			strbuf_adds(out, eol);
		strbuf_addf(out, "%s:%s%s", addr, hash, eol);
		changed = 1;
	}
	return changed;
}

/* ctl_user_read_fd - the whole file from fd (capped) into f->text */
static int ctl_user_read_fd(int fd, struct ctl_user_file *f)
{
	struct strbuf sb;
	strbuf_init(&sb);
	char buf[65536];
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "ternctl: read %s: %s\n", f->path, strerror(errno));
			strbuf_free(&sb);
			return -1;
		}
		if (r == 0)
			break;
		if (sb.len + (size_t)r > (size_t)CTL_USER_FILE_MAX) {
			fprintf(stderr, "ternctl: %s: file too large\n", f->path);
			strbuf_free(&sb);
			return -1;
		}
		strbuf_add(&sb, buf, (size_t)r);
	}
	f->len = sb.len;
	strbuf_addc(&sb, '\0');
	f->text = strbuf_detach(&sb);
	return 0;
}

/* ctl_user_file_close - unlock and release */
static void ctl_user_file_close(struct ctl_user_file *f)
{
	if (f->dirfd >= 0)
		close(f->dirfd); /* releases the flock */
	free(f->path);
	free(f->dir);
	free(f->text);
	memset(f, 0, sizeof(*f));
	f->dirfd = -1;
}

/*
 * ctl_user_file_open - resolve users_file, take the lock (lock = 1) and
 * read it. A missing file is an error unless may_create. The lock is on
 * the directory, not the file: the file is replaced by rename, so a lock
 * on its inode would not exclude a second ternctl that opened the new one.
 */
static int ctl_user_file_open(const char *conf_path, int lock, int may_create, struct ctl_user_file *f)
{
	memset(f, 0, sizeof(*f));
	f->dirfd = -1;
	char *real = realpath(conf_path, NULL);
	if (real == NULL) {
		if (errno != ENOENT || !may_create) {
			fprintf(stderr, "ternctl: users_file %s: %s\n", conf_path, strerror(errno));
			return -1;
		}
		real = xstrdup(conf_path); /* a new file: created where the configuration says */
	}
	f->path = real;
	const char *slash = strrchr(real, '/');
	f->dir = slash == NULL ? xstrdup(".") : slash == real ? xstrdup("/") : xstrndup(real, (size_t)(slash - real));
	if (lock) {
		f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (f->dirfd < 0) {
			fprintf(stderr, "ternctl: directory %s: %s\n", f->dir, strerror(errno));
			ctl_user_file_close(f);
			return -1;
		}
		int tries = 0;
		while (flock(f->dirfd, LOCK_EX | LOCK_NB) < 0) {
			if (errno != EWOULDBLOCK && errno != EINTR) {
				fprintf(stderr, "ternctl: lock %s: %s\n", f->dir, strerror(errno));
				ctl_user_file_close(f);
				return -1;
			}
			if (++tries > CTL_USER_LOCK_WAIT_SEC * 10) {
				fprintf(stderr, "ternctl: %s is locked by another ternctl; try again\n", f->dir);
				ctl_user_file_close(f);
				return -1;
			}
			usleep(100000);
		}
	}
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT && may_create) {
			f->text = xstrdup("");
			return 0;
		}
		fprintf(stderr, "ternctl: users_file %s: %s\n", f->path, strerror(errno));
		ctl_user_file_close(f);
		return -1;
	}
	if (fstat(fd, &f->st) < 0 || !S_ISREG(f->st.st_mode)) {
		fprintf(stderr, "ternctl: users_file %s: not a regular file\n", f->path);
		close(fd);
		ctl_user_file_close(f);
		return -1;
	}
	f->exists = 1;
	int r = ctl_user_read_fd(fd, f);
	close(fd);
	if (r < 0) {
		ctl_user_file_close(f);
		return -1;
	}
	return 0;
}

/*
 * ctl_user_file_replace - the new text replaces the file, atomically and
 * durably: temp file (same directory, so rename is atomic; same mode and
 * owner, so Dovecot can still read it), fsync, rename, fsync directory.
 * A crash leaves either the old file or the new one, never a mix.
 */
static int ctl_user_file_replace(struct ctl_user_file *f, const char *text, size_t len)
{
	const char *base = strrchr(f->path, '/');
	base = base ? base + 1 : f->path;
	struct strbuf tmp;
	strbuf_init(&tmp);
	strbuf_addf(&tmp, "%s/.%s.ternctl.XXXXXX", f->dir, base);
	/* mkostemp: O_EXCL and mode 0600, so no one sees a readable
	 * half-written copy of the hashes */
	int fd = mkostemp(tmp.s, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ternctl: create a temporary file in %s: %s\n", f->dir, strerror(errno));
		strbuf_free(&tmp);
		return -1;
	}
	const char *step = NULL;
	if (f->exists && (f->st.st_uid != geteuid() || f->st.st_gid != getegid()) &&
	    fchown(fd, f->st.st_uid, f->st.st_gid) < 0)
		step = "keep the file's owner and group";
	else if (fchmod(fd, f->exists ? (f->st.st_mode & 07777) : 0600) < 0)
		step = "set the file's mode";
	else if (fs_write_all(fd, text, len) < 0)
		step = "write";
	else if (fsync(fd) < 0)
		step = "fsync";
	int e = errno;
	if (close(fd) < 0 && step == NULL) {
		step = "close";
		e = errno;
	}
	if (step == NULL && rename(tmp.s, f->path) < 0) {
		step = "rename";
		e = errno;
	}
	if (step != NULL) {
		fprintf(stderr, "ternctl: %s: %s %s: %s; the file is unchanged\n", f->path, step, tmp.s, strerror(e));
		unlink(tmp.s);
		strbuf_free(&tmp);
		return -1;
	}
	strbuf_free(&tmp);
	/* the rename is durable only once the directory is */
	if (fsync(f->dirfd) < 0) {
		fprintf(stderr, "ternctl: fsync %s: %s\n", f->dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* ctl_user_tty - the terminal whose echo is off, for the signal handler */
static struct termios ctl_user_tty_saved;
static volatile sig_atomic_t ctl_user_tty_off;

/* ctl_user_tty_restore_sig - echo back on before dying of a signal */
static void ctl_user_tty_restore_sig(int sig)
{
	if (ctl_user_tty_off)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_user_tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * ctl_user_read_line - one line of stdin into pw (cap bytes), without its
 * LF or CRLF. 0, or -1 with *why (EOF, too long, NUL).
 */
static int ctl_user_read_line(char *pw, size_t cap, const char **why)
{
	size_t n = 0;
	int c, got = 0;
	while ((c = getchar()) != EOF) {
		got = 1;
		if (c == '\n')
			break;
		if (c == '\0') {
			*why = "NUL byte in password";
			return -1;
		}
		if (n + 1 >= cap) {
			*why = "password too long";
			return -1;
		}
		pw[n++] = (char)c;
	}
	if (!got) {
		*why = "no password on standard input";
		return -1;
	}
	if (n > 0 && pw[n - 1] == '\r')
		n--;
	pw[n] = '\0';
	if (n == 0) {
		*why = "empty password";
		return -1;
	}
	return 0;
}

/*
 * ctl_user_password - the new password: a line of stdin, or on a terminal
 * asked twice with echo off. Echo stays off for both questions, so an
 * answer typed ahead is not flushed between them; it is back on before we
 * return, or before we die of a signal.
 */
static int ctl_user_password(const char *addr, char *pw, size_t cap)
{
	const char *why = NULL;
	if (!isatty(STDIN_FILENO)) {
		if (ctl_user_read_line(pw, cap, &why) == 0)
			return 0;
		fprintf(stderr, "ternctl: %s\n", why);
		return -1;
	}
	struct termios t;
	if (tcgetattr(STDIN_FILENO, &t) < 0) {
		fprintf(stderr, "ternctl: cannot read the terminal settings: %s\n", strerror(errno));
		return -1;
	}
	ctl_user_tty_saved = t;
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
	struct sigaction sa, old[4];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = ctl_user_tty_restore_sig;
	for (size_t i = 0; i < 4; i++)
		sigaction(sigs[i], &sa, &old[i]);
	t.c_lflag &= ~(tcflag_t)ECHO;
	t.c_lflag |= ECHONL;
	ctl_user_tty_off = 1;
	/* TCSAFLUSH: nothing typed before the prompt (with echo on) is taken */
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);

	char again[CTL_USER_PW_MAX + 2];
	fprintf(stderr, "New password for %s: ", addr);
	fflush(stderr);
	int r = ctl_user_read_line(pw, cap, &why);
	if (r == 0) {
		fputs("Retype the password: ", stderr);
		fflush(stderr);
		r = ctl_user_read_line(again, sizeof(again), &why);
	}
	if (r == 0 && strcmp(pw, again) != 0) {
		why = "the passwords do not match";
		r = -1;
	}
	explicit_bzero(again, sizeof(again));

	tcsetattr(STDIN_FILENO, TCSANOW, &ctl_user_tty_saved);
	ctl_user_tty_off = 0;
	for (size_t i = 0; i < 4; i++)
		sigaction(sigs[i], &old[i], NULL);
	if (r < 0)
		fprintf(stderr, "ternctl: %s\n", why);
	return r;
}

/* ctl_user_reload - ask a running ternd to re-read its tables; say what happened */
static void ctl_user_reload(struct ternctl *t)
{
	int fd = ternctl_connect(t);
	if (fd < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			printf("ternd is not running; it reads the file when it starts\n");
		else
			fprintf(stderr, "ternctl: warning: cannot reach ternd at %s (%s); reload it to use the change\n",
				t->conf.control_socket, strerror(errno));
		return;
	}
	struct strbuf reply;
	strbuf_init(&reply);
	char err[256];
	if (ternctl_send_request(fd, "reload", &reply, err, sizeof(err)) < 0) {
		fprintf(stderr, "ternctl: warning: %s; reload ternd to use the change\n", err);
	} else if (reply.len >= 3 && memcmp(reply.s, "OK\n", 3) == 0) {
		printf("ternd reloaded its tables\n");
	} else {
		fputs("ternctl: warning: ternd did not reload: ", stderr);
		size_t n = reply.len;
		const char *p = reply.s;
		if (n >= 4 && memcmp(p, "ERR ", 4) == 0) {
			p += 4;
			n -= 4;
		}
		while (n > 0 && p[n - 1] == '\n')
			n--;
		ternctl_print_safe(stderr, p, n);
		fputc('\n', stderr);
	}
	strbuf_free(&reply);
	close(fd);
}

/* ctl_user_list - print every account of the file */
static int ctl_user_list(const char *path)
{
	struct ctl_user_file f;
	if (ctl_user_file_open(path, 0, 0, &f) < 0)
		return TERNCTL_EXIT_FAIL;
	size_t pos = 0;
	while (pos < f.len) {
		const char *p = f.text + pos;
		const char *nl = memchr(p, '\n', f.len - pos);
		size_t n = nl ? (size_t)(nl - p) : f.len - pos;
		pos += n + (nl ? 1 : 0);
		size_t uoff, ulen;
		char k[SMTP_PATH_MAX + 2];
		if (ctl_user_line(p, n, &uoff, &ulen, k, sizeof(k)) == 1) {
			ternctl_print_safe(stdout, p + uoff, ulen);
			fputc('\n', stdout);
		}
	}
	ctl_user_file_close(&f);
	return TERNCTL_EXIT_OK;
}

/* ctl_user_change - add, passwd or del one account */
static int ctl_user_change(struct ternctl *t, enum ctl_user_op op, const struct smtp_path *acct)
{
	const char *path = t->conf.users_file;
	char key[SMTP_PATH_MAX + 2];
	ctl_user_key(acct, key, sizeof(key));

	/* an early look, so a wrong name is refused before the password is
	 * typed; the decision is taken again under the lock */
	struct ctl_user_file f;
	if (ctl_user_file_open(path, 0, op == CTL_USER_ADD, &f) < 0)
		return TERNCTL_EXIT_FAIL;
	int found = ctl_user_find(f.text, f.len, key);
	ctl_user_file_close(&f);
	if (op == CTL_USER_ADD && found) {
		fprintf(stderr, "ternctl: user %s already exists in %s (use \"user passwd\")\n", acct->addr, path);
		return TERNCTL_EXIT_FAIL;
	}
	if (op != CTL_USER_ADD && !found) {
		fprintf(stderr, "ternctl: no user %s in %s\n", acct->addr, path);
		return TERNCTL_EXIT_FAIL;
	}
	if (op == CTL_USER_ADD && !conf_is_local_domain(&t->conf, acct->domain, strlen(acct->domain)))
		fprintf(stderr, "ternctl: warning: %s is not in local_domains: no mail will be delivered to it\n",
			acct->domain);

	char hash[CTL_USER_HASH_MAX] = "";
	if (op != CTL_USER_DEL) {
		char pw[CTL_USER_PW_MAX + 2];
		int r = ctl_user_password(acct->addr, pw, sizeof(pw));
		if (r == 0 && passwd_hash_new(pw, hash, sizeof(hash)) < 0) {
			fprintf(stderr, "ternctl: cannot hash the password (libcrypt yescrypt)\n");
			r = -1;
		}
		/* the clear password never outlives its hashing */
		explicit_bzero(pw, sizeof(pw));
		if (r < 0)
			return TERNCTL_EXIT_FAIL;
	}

	if (ctl_user_file_open(path, 1, op == CTL_USER_ADD, &f) < 0)
		return TERNCTL_EXIT_FAIL;
	found = ctl_user_find(f.text, f.len, key);
	int rc = TERNCTL_EXIT_FAIL;
	struct strbuf out;
	strbuf_init(&out);
	if (op == CTL_USER_ADD && found) {
		fprintf(stderr, "ternctl: user %s already exists in %s\n", acct->addr, f.path);
		goto done;
	}
	if (op != CTL_USER_ADD && !found) {
		fprintf(stderr, "ternctl: no user %s in %s\n", acct->addr, f.path);
		goto done;
	}
	ctl_user_edit(f.text, f.len, op, key, acct->addr, hash, &out);
	/* never write a file ternd (and Dovecot) would then refuse */
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *lt = lookup_load_text(out.s ? out.s : "", out.len, NULL, 0, &errs);
	if (lt == NULL) {
		fprintf(stderr, "ternctl: %s would not load after this change; fix it by hand first:\n", f.path);
		ternctl_print_safe(stderr, errs.s ? errs.s : "", errs.len);
		strbuf_free(&errs);
		goto done;
	}
	lookup_free(lt);
	strbuf_free(&errs);
	if (ctl_user_file_replace(&f, out.s ? out.s : "", out.len) < 0)
		goto done;
	static const char *const verb[] = {"added to", "password changed in", "removed from", ""};
	printf("user %s %s %s\n", acct->addr, verb[op], f.path);
	rc = TERNCTL_EXIT_OK;
done:
	if (out.s)
		explicit_bzero(out.s, out.len);
	strbuf_free(&out);
	explicit_bzero(hash, sizeof(hash));
	ctl_user_file_close(&f);
	if (rc == TERNCTL_EXIT_OK) {
		fflush(stdout);
		ctl_user_reload(t);
	}
	return rc;
}

int ctl_user_run(struct ternctl *t, int argc, char **argv)
{
	static const enum ctl_user_op ops[] = {CTL_USER_ADD, CTL_USER_PASSWD, CTL_USER_DEL, CTL_USER_LIST};
	if (argc < 2)
		return ctl_user_usage();
	int op = -1;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(argv[1], ctl_user_op_str(ops[i])) == 0)
			op = (int)ops[i];
	if (op < 0 || argc != (op == CTL_USER_LIST ? 2 : 3))
		return ctl_user_usage();
	struct smtp_path acct;
	if (op != CTL_USER_LIST && ctl_user_arg_check(argv[2], &acct) < 0)
		return TERNCTL_EXIT_USAGE;
	if (ternctl_conf_load(t) < 0)
		return TERNCTL_EXIT_FAIL;
	if (t->conf.users_file == NULL || t->conf.users_file[0] == '\0') {
		fprintf(stderr, "ternctl: users_file is not set in %s\n", t->conf_path);
		return TERNCTL_EXIT_FAIL;
	}
	if (op == CTL_USER_LIST)
		return ctl_user_list(t->conf.users_file);
	return ctl_user_change(t, (enum ctl_user_op)op, &acct);
}
