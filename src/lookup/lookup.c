/*
 * lookup - the recipient tables: accounts (users_file, Dovecot passwd-file
 * format) and aliases (aliases_file), and the resolution of one RCPT path
 * into the mailboxes and remote addresses it stands for.
 *
 * Exports:
 *   lookup_load/lookup_load_text/lookup_free   build and release the tables
 *   lookup_users_count/lookup_aliases_count    sizes, for logs
 *   lookup_user            canonical account for local@domain (subaddress folded)
 *   lookup_password_hash   stored hash of an account, for AUTH
 *   lookup_sender_owned    sender ownership for authenticated submission
 *   lookup_rcpt            RCPT resolution, final recipients into the envelope
 *
 * Both tables are hash maps keyed by the ASCII-lowercased "local@domain", so
 * a lookup is O(1) however many accounts there are. After loading, the
 * tables are read-only and may be shared between threads.
 *
 * Resolution of a local address (first match wins):
 *   1. an alias of the exact address: every target is resolved in turn
 *      (local targets recursively, remote targets kept as they are even
 *      when the client may not relay: the operator configured them);
 *   2. an account of the exact address;
 *   3. for "base+tag": the account "base", then the alias "base";
 *   4. for "postmaster": conf->postmaster, if its domain is local and it
 *      resolves through these same tables (a remote conf->postmaster is not
 *      used: mail to our postmaster must not be relayed off by default);
 *   5. otherwise 550 unknown user.
 * An alias that reaches itself again ("alice: alice, copy@remote") ends at
 * the account of the same name, as in Postfix; without one it is a loop.
 * An alias target that resolves to nothing is logged and skipped; an alias
 * none of whose targets resolve is an unknown user. An alias loop or a
 * nesting deeper than LOOKUP_ALIAS_DEPTH_MAX is a temporary failure, logged
 * as event=alias_loop, so an operator mistake never silently drops mail.
 * Every alias is expanded at most once per RCPT, so expansion is linear in
 * the size of the aliases file whatever its shape.
 *
 * Trusts: the files are untrusted input, parsed strictly; every address in
 * them goes through the RFC 5321 path grammar (smtp_parse_path).
 * Implements: RFC 5321 4.5.1 (postmaster), 3.6.1/3.6.2 (no source routes
 * or "%"-hacks: local parts are looked up literally, never re-routed),
 * RFC 5233 (subaddress, separator '+').
 */
#include "lookup/lookup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "smtp/smtp_parse.h"

#define LOOKUP_KEY_MAX (SMTP_LOCAL_MAX * 2 + 3 + 1 + SMTP_DOMAIN_MAX + 1)
#define LOOKUP_ALIAS_DEPTH_MAX 10
#define LOOKUP_FILE_MAX ((off_t)1 << 30) /* a 1 GiB table is a mistake, not a table */
#define LOOKUP_SUBADDR_SEP '+'

struct lookup_user {
	char *account;       /* canonical "local@domain", domain lowercased */
	char *hash;          /* "{SCHEME}..." or crypt string, may be "" */
	unsigned long line;  /* where it was defined, for duplicate errors */
};

struct lookup_alias {
	char *name;          /* "local@domain" as written, for logs */
	char **targets;      /* canonical addresses */
	size_t ntargets;
	unsigned long line;
};

struct lookup_slot {
	char *key; /* lowercased "local@domain"; NULL = empty slot */
	void *val;
};

/* open addressing, linear probing, capacity a power of two, load <= 1/2 */
struct lookup_map {
	struct lookup_slot *slots;
	size_t cap;
	size_t n;
};

struct lookup_tables {
	struct lookup_map users;   /* -> struct lookup_user */
	struct lookup_map aliases; /* -> struct lookup_alias */
};

/* ---- the hash map ---- */

/* lookup_hash - FNV-1a 64 of a NUL-terminated key */
static uint64_t lookup_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* lookup_map_find - the slot holding key, or the empty slot where it would go */
static struct lookup_slot *lookup_map_find(const struct lookup_map *m, const char *key)
{
	size_t mask = m->cap - 1;
	size_t i = (size_t)lookup_hash(key) & mask;
	while (m->slots[i].key != NULL && strcmp(m->slots[i].key, key) != 0)
		i = (i + 1) & mask;
	return &m->slots[i];
}

/* lookup_map_get - value for key, or NULL */
static void *lookup_map_get(const struct lookup_map *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	return lookup_map_find(m, key)->val;
}

/* lookup_map_grow - double the capacity and rehash */
static void lookup_map_grow(struct lookup_map *m)
{
	struct lookup_map nm = {.cap = m->cap ? m->cap * 2 : 64, .n = m->n};
	nm.slots = xcalloc(nm.cap, sizeof(*nm.slots));
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL)
			*lookup_map_find(&nm, m->slots[i].key) = m->slots[i];
	free(m->slots);
	*m = nm;
}

/* lookup_map_put - insert a new key (taking ownership); the existing value if already there */
static void *lookup_map_put(struct lookup_map *m, char *key, void *val)
{
	if ((m->n + 1) * 2 > m->cap)
		lookup_map_grow(m);
	struct lookup_slot *s = lookup_map_find(m, key);
	if (s->key != NULL)
		return s->val;
	s->key = key;
	s->val = val;
	m->n++;
	return NULL;
}

/* ---- parsing helpers ---- */

/* lookup_err - one "FILE:LINE: what" line into errs */
static void lookup_err(struct strbuf *errs, const char *file, unsigned long line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void lookup_err(struct strbuf *errs, const char *file, unsigned long line, const char *fmt, ...)
{
	if (errs == NULL)
		return;
	strbuf_addf(errs, "%s:%lu: ", file, line);
	va_list ap;
	va_start(ap, fmt);
	strbuf_vaddf(errs, fmt, ap);
	va_end(ap);
	strbuf_addc(errs, '\n');
}

/* lookup_is_space - blank for trimming (space, tab, CR) */
static int lookup_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* lookup_trim - strip blanks at both ends of [*p, *p + *n) */
static void lookup_trim(const char **p, size_t *n)
{
	while (*n > 0 && lookup_is_space(**p)) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && lookup_is_space((*p)[*n - 1]))
		(*n)--;
}

/*
 * lookup_key - the map key for local@domain: ASCII-lowercased, so "Alice"
 * and "alice" are one mailbox (as Dovecot folds them). -1 if too long.
 */
static int lookup_key(char *key, size_t cap, const char *local, size_t llen, const char *domain)
{
	size_t dlen = strlen(domain);
	if (llen + 1 + dlen + 1 > cap)
		return -1;
	memcpy(key, local, llen);
	key[llen] = '@';
	memcpy(key + llen + 1, domain, dlen + 1);
	str_lower_ascii(key);
	return 0;
}

/* lookup_addr_parse - see lookup.h */
int lookup_addr_parse(const char *s, size_t n, struct smtp_path *out, const char **why)
{
	char buf[SMTP_PATH_MAX + 3];
	if (n == 0) {
		*why = "empty address";
		return -1;
	}
	if (n + 2 > SMTP_PATH_MAX) {
		*why = "address too long";
		return -1;
	}
	if (memchr(s, '@', n) == NULL) {
		*why = "must be local@domain";
		return -1;
	}
	buf[0] = '<';
	memcpy(buf + 1, s, n);
	buf[n + 1] = '>';
	const char *detail = NULL;
	memset(out, 0, sizeof(*out));
	enum smtp_parse_error e = smtp_parse_path(buf, n + 2, 0, out, &detail);
	if (e != SMTP_PARSE_OK) {
		*why = detail ? detail : smtp_parse_error_str(e);
		return -1;
	}
	if (out->is_null || out->is_postmaster || out->domain[0] == '\0' || out->local[0] == '\0') {
		*why = "must be local@domain";
		return -1;
	}
	return 0;
}

/* lookup_addr_canon - "local@domain" from a parsed path, into a new string */
static char *lookup_addr_canon(const struct smtp_path *p)
{
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_addf(&sb, "%s@%s", p->local, p->domain);
	return strbuf_detach(&sb);
}

typedef int (*lookup_line_fn)(struct lookup_tables *t, const char *file, unsigned long line,
			      const char *p, size_t n, struct strbuf *errs);

/*
 * lookup_parse_lines - call fn for every line that is not blank or a '#'
 * comment; returns the number of bad lines. Lines end at LF; a CR before
 * it is stripped; a NUL byte anywhere makes the line bad.
 */
static int lookup_parse_lines(struct lookup_tables *t, const char *file, const char *text, size_t len,
			      lookup_line_fn fn, struct strbuf *errs)
{
	int nerr = 0;
	unsigned long lineno = 0;
	size_t pos = 0;
	while (pos < len) {
		const char *p = text + pos;
		const char *nl = memchr(p, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - p) : len - pos;
		pos += n + (nl ? 1 : 0);
		lineno++;
		if (memchr(p, '\0', n) != NULL) {
			lookup_err(errs, file, lineno, "NUL byte in line");
			nerr++;
			continue;
		}
		lookup_trim(&p, &n);
		if (n == 0 || p[0] == '#')
			continue;
		if (fn(t, file, lineno, p, n, errs) < 0)
			nerr++;
	}
	return nerr;
}

/* ---- users_file ---- */

/*
 * lookup_user_line - "user@domain:password[:uid:gid:gecos:home:shell:extra]".
 * The fields after the password belong to Dovecot's userdb and are ignored.
 */
static int lookup_user_line(struct lookup_tables *t, const char *file, unsigned long line, const char *p,
			    size_t n, struct strbuf *errs)
{
	const char *colon = memchr(p, ':', n);
	size_t ulen = colon ? (size_t)(colon - p) : n;
	const char *pw = colon ? colon + 1 : p + n;
	const char *pwend = memchr(pw, ':', (size_t)(p + n - pw));
	size_t pwlen = pwend ? (size_t)(pwend - pw) : (size_t)(p + n - pw);

	struct smtp_path path;
	const char *why = NULL;
	if (lookup_addr_parse(p, ulen, &path, &why) < 0) {
		if (strcmp(why, "must be local@domain") == 0)
			lookup_err(errs, file, line, "user must be local@domain");
		else
			lookup_err(errs, file, line, "user \"%.*s\": %s", (int)(ulen > 300 ? 300 : ulen), p, why);
		return -1;
	}
	if (path.domain_literal) {
		lookup_err(errs, file, line, "user must be local@domain");
		return -1;
	}
	/* the account names a directory under mail_dir: nothing that could
	 * step out of it or need quoting in a path (maildir checks again) */
	if (path.quoted || path.local[0] == '.' || strchr(path.local, '/') != NULL) {
		lookup_err(errs, file, line, "user \"%s\": local part not usable as a mailbox name", path.addr);
		return -1;
	}
	for (size_t i = 0; i < pwlen; i++) {
		unsigned char c = (unsigned char)pw[i];
		if (c < 0x20 || c == 0x7f) {
			lookup_err(errs, file, line, "password: control character");
			return -1;
		}
	}

	char key[LOOKUP_KEY_MAX];
	if (lookup_key(key, sizeof(key), path.local, strlen(path.local), path.domain) < 0) {
		lookup_err(errs, file, line, "user: address too long");
		return -1;
	}
	struct lookup_user *u = xcalloc(1, sizeof(*u));
	u->account = lookup_addr_canon(&path);
	u->hash = xstrndup(pw, pwlen);
	u->line = line;
	char *k = xstrdup(key);
	struct lookup_user *old = lookup_map_put(&t->users, k, u);
	if (old != NULL) {
		lookup_err(errs, file, line, "duplicate user %s (first on line %lu)", u->account, old->line);
		free(k);
		free(u->account);
		free(u->hash);
		free(u);
		return -1;
	}
	return 0;
}

/* ---- aliases_file ---- */

/* lookup_alias_free - release one alias */
static void lookup_alias_free(struct lookup_alias *a)
{
	for (size_t i = 0; i < a->ntargets; i++)
		free(a->targets[i]);
	free(a->targets);
	free(a->name);
	free(a);
}

/* lookup_alias_add_target - append a canonical target unless already listed */
static void lookup_alias_add_target(struct lookup_alias *a, char *target)
{
	for (size_t i = 0; i < a->ntargets; i++) {
		if (str_casecmp_ascii(a->targets[i], target) == 0) {
			free(target);
			return;
		}
	}
	a->targets = xrealloc(a->targets, (a->ntargets + 1) * sizeof(*a->targets));
	a->targets[a->ntargets++] = target;
}

/*
 * lookup_alias_line - "alias@domain: target[, target...]". Targets are split
 * at commas outside double quotes, so a quoted local part may hold one.
 */
static int lookup_alias_line(struct lookup_tables *t, const char *file, unsigned long line, const char *p,
			     size_t n, struct strbuf *errs)
{
	/* the alias itself ends at the first ':' outside quotes */
	size_t i = 0;
	int inq = 0;
	for (; i < n; i++) {
		if (inq && p[i] == '\\' && i + 1 < n)
			i++;
		else if (p[i] == '"')
			inq = !inq;
		else if (!inq && p[i] == ':')
			break;
	}
	if (i == n) {
		lookup_err(errs, file, line, "expected \"alias@domain: target, ...\"");
		return -1;
	}
	const char *ap = p;
	size_t alen = i;
	lookup_trim(&ap, &alen);
	struct smtp_path path;
	const char *why = NULL;
	if (lookup_addr_parse(ap, alen, &path, &why) < 0) {
		lookup_err(errs, file, line, "alias \"%.*s\": %s", (int)(alen > 300 ? 300 : alen), ap, why);
		return -1;
	}
	if (path.domain_literal) {
		lookup_err(errs, file, line, "alias \"%s\": must be local@domain", path.addr);
		return -1;
	}
	char key[LOOKUP_KEY_MAX];
	if (lookup_key(key, sizeof(key), path.local, strlen(path.local), path.domain) < 0) {
		lookup_err(errs, file, line, "alias: address too long");
		return -1;
	}

	struct lookup_alias *a = xcalloc(1, sizeof(*a));
	a->name = lookup_addr_canon(&path);
	a->line = line;
	size_t pos = i + 1;
	int bad = 0;
	while (pos <= n && !bad) {
		size_t s = pos;
		inq = 0;
		for (; pos < n; pos++) {
			if (inq && p[pos] == '\\' && pos + 1 < n)
				pos++;
			else if (p[pos] == '"')
				inq = !inq;
			else if (!inq && p[pos] == ',')
				break;
		}
		const char *tp = p + s;
		size_t tlen = pos - s;
		pos++; /* past the comma, or past the end */
		lookup_trim(&tp, &tlen);
		struct smtp_path tpath;
		if (tlen == 0) {
			lookup_err(errs, file, line, "alias %s: empty target", a->name);
			bad = 1;
		} else if (lookup_addr_parse(tp, tlen, &tpath, &why) < 0) {
			lookup_err(errs, file, line, "alias %s: target \"%.*s\": %s", a->name,
				   (int)(tlen > 300 ? 300 : tlen), tp, why);
			bad = 1;
		} else {
			lookup_alias_add_target(a, lookup_addr_canon(&tpath));
		}
	}
	if (bad) {
		lookup_alias_free(a);
		return -1;
	}
	char *k = xstrdup(key);
	struct lookup_alias *old = lookup_map_put(&t->aliases, k, a);
	if (old != NULL) {
		lookup_err(errs, file, line, "duplicate alias %s (first on line %lu)", a->name, old->line);
		free(k);
		lookup_alias_free(a);
		return -1;
	}
	return 0;
}

/* ---- loading ---- */

void lookup_free(struct lookup_tables *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->users.cap; i++) {
		struct lookup_user *u = t->users.slots[i].val;
		if (t->users.slots[i].key == NULL)
			continue;
		free(t->users.slots[i].key);
		free(u->account);
		free(u->hash);
		free(u);
	}
	for (size_t i = 0; i < t->aliases.cap; i++) {
		if (t->aliases.slots[i].key == NULL)
			continue;
		free(t->aliases.slots[i].key);
		lookup_alias_free(t->aliases.slots[i].val);
	}
	free(t->users.slots);
	free(t->aliases.slots);
	free(t);
}

/* lookup_load_named - parse both texts; error lines are prefixed with the names */
static struct lookup_tables *lookup_load_named(const char *uname, const char *utext, size_t ulen,
					       const char *aname, const char *atext, size_t alen,
					       struct strbuf *errs)
{
	struct lookup_tables *t = xcalloc(1, sizeof(*t));
	int nerr = 0;
	if (utext != NULL)
		nerr += lookup_parse_lines(t, uname, utext, ulen, lookup_user_line, errs);
	if (atext != NULL)
		nerr += lookup_parse_lines(t, aname, atext, alen, lookup_alias_line, errs);
	if (nerr > 0) {
		lookup_free(t);
		return NULL;
	}
	return t;
}

struct lookup_tables *lookup_load_text(const char *users_text, size_t ulen, const char *aliases_text,
				       size_t alen, struct strbuf *errs)
{
	return lookup_load_named("users", users_text, ulen, "aliases", aliases_text, alen, errs);
}

/* lookup_read_file - the whole file into a new buffer; -1 with "FILE: why" in errs */
static int lookup_read_file(const char *path, char **out, size_t *outlen, struct strbuf *errs)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errs)
			strbuf_addf(errs, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		if (errs)
			strbuf_addf(errs, "%s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (S_ISREG(st.st_mode) && st.st_size > LOOKUP_FILE_MAX) {
		if (errs)
			strbuf_addf(errs, "%s: file too large\n", path);
		close(fd);
		return -1;
	}
	size_t cap = 65536, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len == cap) {
			if ((off_t)cap >= LOOKUP_FILE_MAX) {
				if (errs)
					strbuf_addf(errs, "%s: file too large\n", path);
				free(buf);
				close(fd);
				return -1;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			if (errs)
				strbuf_addf(errs, "%s: %s\n", path, strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
}

struct lookup_tables *lookup_load(const char *users_file, const char *aliases_file, struct strbuf *errs)
{
	char *u = NULL, *a = NULL;
	size_t ulen = 0, alen = 0;
	if (users_file != NULL && lookup_read_file(users_file, &u, &ulen, errs) < 0)
		return NULL;
	if (aliases_file != NULL && lookup_read_file(aliases_file, &a, &alen, errs) < 0) {
		free(u);
		return NULL;
	}
	struct lookup_tables *t = lookup_load_named(users_file, u, ulen, aliases_file, a, alen, errs);
	free(u);
	free(a);
	return t;
}

size_t lookup_users_count(const struct lookup_tables *t)
{
	return t ? t->users.n : 0;
}

size_t lookup_aliases_count(const struct lookup_tables *t)
{
	return t ? t->aliases.n : 0;
}

/* ---- lookups ---- */

/* lookup_user_get - the account entry for local@domain, exact (case-insensitive) */
static const struct lookup_user *lookup_user_get(const struct lookup_tables *t, const char *local, size_t llen,
						 const char *domain)
{
	char key[LOOKUP_KEY_MAX];
	if (t == NULL || lookup_key(key, sizeof(key), local, llen, domain) < 0)
		return NULL;
	return lookup_map_get(&t->users, key);
}

/* lookup_alias_get - the alias entry for local@domain, exact (case-insensitive) */
static const struct lookup_alias *lookup_alias_get(const struct lookup_tables *t, const char *local,
						   size_t llen, const char *domain)
{
	char key[LOOKUP_KEY_MAX];
	if (t == NULL || lookup_key(key, sizeof(key), local, llen, domain) < 0)
		return NULL;
	return lookup_map_get(&t->aliases, key);
}

/* lookup_subaddr_base - length of "base" in "base+tag", 0 if no usable tag */
static size_t lookup_subaddr_base(const char *local, size_t llen)
{
	const char *sep = memchr(local, LOOKUP_SUBADDR_SEP, llen);
	if (sep == NULL || sep == local)
		return 0;
	return (size_t)(sep - local);
}

const char *lookup_user(const struct lookup_tables *t, const char *local, const char *domain)
{
	if (t == NULL || local == NULL || domain == NULL)
		return NULL;
	size_t llen = strlen(local);
	const struct lookup_user *u = lookup_user_get(t, local, llen, domain);
	if (u == NULL) {
		size_t base = lookup_subaddr_base(local, llen);
		if (base > 0)
			u = lookup_user_get(t, local, base, domain);
	}
	return u ? u->account : NULL;
}

const char *lookup_password_hash(const struct lookup_tables *t, const char *account)
{
	if (t == NULL || account == NULL)
		return NULL;
	const char *at = strrchr(account, '@');
	if (at == NULL || at == account || at[1] == '\0')
		return NULL;
	/* exact only: "alice+tag" is an address, not a login name */
	const struct lookup_user *u = lookup_user_get(t, account, (size_t)(at - account), at + 1);
	return u ? u->hash : NULL;
}

/* ---- sender ownership ---- */

/* the state of one ownership question: aliases already expanded */
struct lookup_owner_walk {
	const struct lookup_tables *t;
	const char *account;
	const struct lookup_alias **seen;
	size_t nseen, capseen;
};

/* lookup_addr_is_account - addr is the account or "account-local+tag@domain" */
static int lookup_addr_is_account(const char *account, const char *addr)
{
	if (str_casecmp_ascii(addr, account) == 0)
		return 1;
	const char *at = strrchr(addr, '@');
	const char *aat = strrchr(account, '@');
	if (at == NULL || aat == NULL)
		return 0;
	size_t base = lookup_subaddr_base(addr, (size_t)(at - addr));
	return base > 0 && base == (size_t)(aat - account) && str_ncasecmp_ascii(addr, account, base) == 0 &&
	       str_casecmp_ascii(at, aat) == 0;
}

static int lookup_owner_addr(struct lookup_owner_walk *w, const char *addr, size_t depth);

/* lookup_owner_alias - does the expansion of alias a reach the account */
static int lookup_owner_alias(struct lookup_owner_walk *w, const struct lookup_alias *a, size_t depth)
{
	/* each alias is expanded once per question (loops and diamonds end
	 * here), and nesting is capped like RCPT resolution */
	for (size_t i = 0; i < w->nseen; i++)
		if (w->seen[i] == a)
			return 0;
	if (depth >= LOOKUP_ALIAS_DEPTH_MAX)
		return 0;
	if (w->nseen == w->capseen) {
		w->capseen = w->capseen ? w->capseen * 2 : 8;
		w->seen = xrealloc(w->seen, w->capseen * sizeof(*w->seen));
	}
	w->seen[w->nseen++] = a;
	for (size_t i = 0; i < a->ntargets; i++)
		if (lookup_owner_addr(w, a->targets[i], depth + 1))
			return 1;
	return 0;
}

/* lookup_owner_addr - addr is the account, a subaddress of it, or an alias reaching it */
static int lookup_owner_addr(struct lookup_owner_walk *w, const char *addr, size_t depth)
{
	if (lookup_addr_is_account(w->account, addr))
		return 1;
	const char *at = strrchr(addr, '@');
	if (w->t == NULL || at == NULL || at == addr)
		return 0;
	size_t llen = (size_t)(at - addr);
	const struct lookup_alias *a = lookup_alias_get(w->t, addr, llen, at + 1);
	if (a == NULL) {
		size_t base = lookup_subaddr_base(addr, llen);
		if (base > 0)
			a = lookup_alias_get(w->t, addr, base, at + 1);
	}
	return a != NULL && lookup_owner_alias(w, a, depth);
}

int lookup_sender_owned(const struct lookup_tables *t, const char *account, const char *addr)
{
	if (account == NULL || addr == NULL || account[0] == '\0' || addr[0] == '\0')
		return 0;
	struct lookup_owner_walk w = {.t = t, .account = account};
	int r = lookup_owner_addr(&w, addr, 0);
	free(w.seen);
	return r;
}

/* ---- RCPT resolution ---- */

struct lookup_done {
	const struct lookup_alias *alias;
	enum smtp_rcpt_verdict verdict;
};

/* the state of resolving one RCPT: finals point into the tables or the path */
struct lookup_walk {
	const struct lookup_tables *t;
	const struct conf *conf;
	const char *rcpt; /* for logs */
	const char **finals;
	size_t nfinals, capfinals;
	const struct lookup_alias *stack[LOOKUP_ALIAS_DEPTH_MAX];
	size_t depth;
	struct lookup_done *done; /* aliases already expanded for this RCPT */
	size_t ndone, capdone;
};

static enum smtp_rcpt_verdict lookup_walk_local(struct lookup_walk *w, const char *local, size_t llen,
						const char *domain, int allow_pm);

/* lookup_walk_final - one final recipient, once */
static enum smtp_rcpt_verdict lookup_walk_final(struct lookup_walk *w, const char *addr)
{
	for (size_t i = 0; i < w->nfinals; i++)
		if (strcmp(w->finals[i], addr) == 0)
			return SMTP_RCPT_ACCEPT;
	if (w->nfinals == w->capfinals) {
		w->capfinals = w->capfinals ? w->capfinals * 2 : 8;
		w->finals = xrealloc(w->finals, w->capfinals * sizeof(*w->finals));
	}
	w->finals[w->nfinals++] = addr;
	return SMTP_RCPT_ACCEPT;
}

/* lookup_log_loop - an alias loop or too deep a nesting: the operator must fix the file */
static void lookup_log_loop(const struct lookup_walk *w, const struct lookup_alias *a, const char *reason)
{
	struct log_line l;
	log_begin(&l, LOG_LEVEL_ERR, "alias_loop");
	log_kv(&l, "rcpt", w->rcpt);
	log_kv(&l, "alias", a->name);
	log_kv(&l, "reason", reason);
	log_kvi(&l, "depth", (long long)w->depth);
	log_end(&l);
}

/* lookup_walk_target - one alias target: remote ones are final, local ones resolved */
static enum smtp_rcpt_verdict lookup_walk_target(struct lookup_walk *w, const char *target)
{
	const char *at = strrchr(target, '@');
	if (at == NULL)
		return SMTP_RCPT_UNKNOWN_USER; /* cannot happen: checked at load */
	const char *domain = at + 1;
	if (domain[0] == '[' || !conf_is_local_domain(w->conf, domain, strlen(domain)))
		return lookup_walk_final(w, target);
	return lookup_walk_local(w, target, (size_t)(at - target), domain, 1);
}

/* lookup_walk_alias - expand an alias: every target, loops and depth checked */
static enum smtp_rcpt_verdict lookup_walk_alias(struct lookup_walk *w, const struct lookup_alias *a)
{
	for (size_t i = 0; i < w->depth; i++) {
		if (w->stack[i] == a) {
			lookup_log_loop(w, a, "loop");
			return SMTP_RCPT_TEMPFAIL;
		}
	}
	/* a diamond (two paths to one alias) is not a loop: reuse the answer,
	 * which also keeps expansion linear on any file */
	for (size_t i = 0; i < w->ndone; i++)
		if (w->done[i].alias == a)
			return w->done[i].verdict;
	if (w->depth >= LOOKUP_ALIAS_DEPTH_MAX) {
		lookup_log_loop(w, a, "too deep");
		return SMTP_RCPT_TEMPFAIL;
	}
	w->stack[w->depth++] = a;
	size_t ok = 0;
	enum smtp_rcpt_verdict v = SMTP_RCPT_ACCEPT;
	for (size_t i = 0; i < a->ntargets; i++) {
		enum smtp_rcpt_verdict r = lookup_walk_target(w, a->targets[i]);
		if (r == SMTP_RCPT_TEMPFAIL) {
			v = SMTP_RCPT_TEMPFAIL;
			break;
		}
		if (r == SMTP_RCPT_ACCEPT) {
			ok++;
			continue;
		}
		struct log_line l;
		log_begin(&l, LOG_LEVEL_WARN, "alias_target_unknown");
		log_kv(&l, "rcpt", w->rcpt);
		log_kv(&l, "alias", a->name);
		log_kv(&l, "target", a->targets[i]);
		log_end(&l);
	}
	w->depth--;
	if (v == SMTP_RCPT_TEMPFAIL)
		return v;
	v = ok > 0 ? SMTP_RCPT_ACCEPT : SMTP_RCPT_UNKNOWN_USER;
	if (w->ndone == w->capdone) {
		w->capdone = w->capdone ? w->capdone * 2 : 8;
		w->done = xrealloc(w->done, w->capdone * sizeof(*w->done));
	}
	w->done[w->ndone].alias = a;
	w->done[w->ndone].verdict = v;
	w->ndone++;
	return v;
}

/*
 * lookup_walk_postmaster - "postmaster@<local>" that names nothing: use
 * conf->postmaster if it is local and resolves (never its own fallback).
 */
static enum smtp_rcpt_verdict lookup_walk_postmaster(struct lookup_walk *w)
{
	const char *pm = w->conf->postmaster;
	if (pm == NULL)
		return SMTP_RCPT_UNKNOWN_USER;
	const char *at = strrchr(pm, '@');
	if (at == NULL || at == pm)
		return SMTP_RCPT_UNKNOWN_USER;
	char domain[SMTP_DOMAIN_MAX + 1];
	size_t dlen = strlen(at + 1);
	if (dlen == 0 || dlen >= sizeof(domain) || at[1] == '[')
		return SMTP_RCPT_UNKNOWN_USER;
	memcpy(domain, at + 1, dlen + 1);
	str_lower_ascii(domain);
	if (!conf_is_local_domain(w->conf, domain, dlen))
		return SMTP_RCPT_UNKNOWN_USER;
	return lookup_walk_local(w, pm, (size_t)(at - pm), domain, 0);
}

/*
 * lookup_walk_local - resolve local@domain (domain is one of ours) in the
 * order of the file header. Local parts are matched literally: "u%x", "x!u"
 * and "\"u@x\"" are just unusual names, never routing instructions.
 */
static enum smtp_rcpt_verdict lookup_walk_local(struct lookup_walk *w, const char *local, size_t llen,
						const char *domain, int allow_pm)
{
	const struct lookup_alias *a = lookup_alias_get(w->t, local, llen, domain);
	const struct lookup_user *u = NULL;
	if (a != NULL) {
		/* "alice: alice, copy@elsewhere" keeps a copy in alice's own
		 * mailbox (Postfix's rule): an alias that reaches itself ends at
		 * the account of that name, and is a loop only without one */
		for (size_t i = 0; i < w->depth; i++)
			if (w->stack[i] == a && (u = lookup_user_get(w->t, local, llen, domain)) != NULL)
				return lookup_walk_final(w, u->account);
		return lookup_walk_alias(w, a);
	}
	u = lookup_user_get(w->t, local, llen, domain);
	if (u != NULL)
		return lookup_walk_final(w, u->account);
	size_t base = lookup_subaddr_base(local, llen);
	if (base > 0) {
		u = lookup_user_get(w->t, local, base, domain);
		if (u != NULL)
			return lookup_walk_final(w, u->account);
		a = lookup_alias_get(w->t, local, base, domain);
		if (a != NULL)
			return lookup_walk_alias(w, a);
	}
	if (allow_pm && llen == 10 && str_ncasecmp_ascii(local, "postmaster", 10) == 0)
		return lookup_walk_postmaster(w);
	return SMTP_RCPT_UNKNOWN_USER;
}

enum smtp_rcpt_verdict lookup_rcpt(const struct lookup_tables *t, const struct conf *conf,
				   const struct smtp_path *rcpt, int may_relay, struct envelope *env,
				   const char *orcpt, unsigned notify)
{
	if (rcpt == NULL || conf == NULL || env == NULL || rcpt->is_null)
		return SMTP_RCPT_UNKNOWN_USER;
	struct lookup_walk w = {.t = t, .conf = conf, .rcpt = rcpt->addr};
	enum smtp_rcpt_verdict v;
	if (rcpt->is_postmaster) {
		/* RFC 5321 4.5.1: <Postmaster> must be accepted without a domain */
		if (conf->local_domains.n > 0)
			v = lookup_walk_local(&w, "postmaster", 10, conf->local_domains.v[0], 1);
		else
			v = lookup_walk_postmaster(&w);
	} else if (rcpt->domain[0] == '\0' || rcpt->local[0] == '\0') {
		v = SMTP_RCPT_UNKNOWN_USER;
	} else if (rcpt->domain_literal || !conf_is_local_domain(conf, rcpt->domain, strlen(rcpt->domain))) {
		v = may_relay ? lookup_walk_final(&w, rcpt->addr) : SMTP_RCPT_RELAY_DENIED;
	} else {
		v = lookup_walk_local(&w, rcpt->local, strlen(rcpt->local), rcpt->domain, 1);
	}
	/* the envelope changes only on ACCEPT, and gets each mailbox once
	 * however many RCPTs (alias, subaddress, repeats) lead to it */
	if (v == SMTP_RCPT_ACCEPT) {
		const char *o = orcpt ? orcpt : (rcpt->addr[0] ? rcpt->addr : NULL);
		for (size_t i = 0; i < w.nfinals; i++)
			if (env_rcpt_find(env, w.finals[i]) < 0)
				env_rcpt_add(env, w.finals[i], o, notify);
	}
	free(w.finals);
	free(w.done);
	return v;
}
