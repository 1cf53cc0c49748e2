/*
 * test_milter - the asynchronous milter client against scripted milters
 * run in threads of this test on unix sockets (and loopback TCP): every
 * stage and its macros, negotiated flags (no-send, no-reply, HDR_LEADSPC,
 * SKIP, macro lists), every reply and modification, chains of two
 * milters, ABORT and QUIT, and the failures: a milter that is down,
 * times out, drops the connection, sends garbage or modifications it did
 * not negotiate, replaces the body beyond the cap, or will not read.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/buf.h"
#include "policy/milter.h"
#include "policy/milter_codec.h"

/* ---- the scripted milter ---- */

enum fake_act { FAKE_SEND, FAKE_CLOSE, FAKE_SILENT, FAKE_SEND_CLOSE };

struct fake_pkt {
	int cmd;
	size_t len;
	unsigned char *data;
};

struct fake;
typedef enum fake_act (*fake_fn)(struct fake *f, int cmd, const unsigned char *d, size_t n,
				 struct strbuf *out);

struct fake {
	char path[128];
	int lfd;
	int tcp_port;
	pthread_t th;
	uint32_t version, actions, proto;
	const char *optneg_extra; /* raw octets after the three integers */
	size_t optneg_extra_len;
	fake_fn fn;
	int count[256];   /* commands seen, by octet */
	int nconn;        /* connections to serve */
	int no_read_after; /* stop reading after this many packets (0: never) */
	pthread_mutex_t mu;
	struct fake_pkt pkts[2048];
	size_t npkts;
	char seq[4096];   /* command octets seen, macros left out */
	size_t nseq;
};

/* put_u32 / reply helpers */
static void put_u32(struct strbuf *out, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
			      (unsigned char)v};
	strbuf_add(out, b, 4);
}

/* rep - one reply packet: cmd and data */
static void rep(struct strbuf *out, int cmd, const void *data, size_t len)
{
	put_u32(out, (uint32_t)len + 1);
	strbuf_addc(out, (char)cmd);
	strbuf_add(out, data, len);
}

/* rep_s - a reply whose data is a string with its NUL */
static void rep_s(struct strbuf *out, int cmd, const char *s)
{
	rep(out, cmd, s, strlen(s) + 1);
}

/* expects - does the fake owe a reply for cmd under its flags */
static int expects(const struct fake *f, int cmd)
{
	switch (cmd) {
	case SMFIC_CONNECT: return !(f->proto & SMFIP_NR_CONN);
	case SMFIC_HELO: return !(f->proto & SMFIP_NR_HELO);
	case SMFIC_MAIL: return !(f->proto & SMFIP_NR_MAIL);
	case SMFIC_RCPT: return !(f->proto & SMFIP_NR_RCPT);
	case SMFIC_DATA: return !(f->proto & SMFIP_NR_DATA);
	case SMFIC_HEADER: return !(f->proto & SMFIP_NR_HDR);
	case SMFIC_EOH: return !(f->proto & SMFIP_NR_EOH);
	case SMFIC_BODY: return !(f->proto & SMFIP_NR_BODY);
	case SMFIC_BODYEOB: return 1;
	default: return 0;
	}
}

/* fn_continue - the default: continue to everything */
static enum fake_act fn_continue(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	(void)d;
	(void)n;
	if (expects(f, cmd))
		rep(out, SMFIR_CONTINUE, "", 0);
	return FAKE_SEND;
}

/* read_full - n octets or -1 */
static int read_full(int fd, void *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* write_full - all octets, never SIGPIPE */
static void write_full(int fd, const void *p, size_t n)
{
	size_t off = 0;
	while (off < n) {
		ssize_t w = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* serve - one connection */
static void serve(struct fake *f, int fd)
{
	size_t seen = 0;
	for (;;) {
		unsigned char hdr[4];
		if (f->no_read_after && seen >= (size_t)f->no_read_after) {
			/* a milter that stops reading, until the MTA gives up on it */
			struct pollfd pfd = {fd, POLLRDHUP, 0};
			for (int i = 0; i < 100; i++)
				if (poll(&pfd, 1, 50) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
					break;
			return;
		}
		if (read_full(fd, hdr, 4) < 0)
			return;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
		if (len < 1 || len > 65536 + 1) /* no cmocka asserts in this thread */
			return;
		unsigned char *buf = malloc(len);
		if (read_full(fd, buf, len) < 0) {
			free(buf);
			return;
		}
		seen++;
		int cmd = buf[0];
		pthread_mutex_lock(&f->mu);
		f->count[cmd]++;
		if (f->npkts < sizeof(f->pkts) / sizeof(f->pkts[0])) {
			f->pkts[f->npkts].cmd = cmd;
			f->pkts[f->npkts].len = len - 1;
			f->pkts[f->npkts].data = malloc(len);
			memcpy(f->pkts[f->npkts].data, buf + 1, len - 1);
			f->pkts[f->npkts].data[len - 1] = 0;
			f->npkts++;
		} 
		if (cmd != SMFIC_MACRO && f->nseq + 1 < sizeof(f->seq))
			f->seq[f->nseq++] = (char)cmd;
		pthread_mutex_unlock(&f->mu);
		struct strbuf out;
		strbuf_init(&out);
		enum fake_act act = FAKE_SEND;
		if (cmd == SMFIC_OPTNEG) {
			put_u32(&out, 13 + (uint32_t)f->optneg_extra_len);
			strbuf_addc(&out, SMFIC_OPTNEG);
			put_u32(&out, f->version);
			put_u32(&out, f->actions);
			put_u32(&out, f->proto);
			strbuf_add(&out, f->optneg_extra, f->optneg_extra_len);
		} else if (cmd == SMFIC_QUIT) {
			free(buf);
			strbuf_free(&out);
			return;
		} else if (cmd != SMFIC_MACRO && cmd != SMFIC_ABORT) {
			act = f->fn(f, cmd, buf + 1, len - 1, &out);
		}
		free(buf);
		if (act == FAKE_CLOSE) {
			strbuf_free(&out);
			return;
		}
		if ((act == FAKE_SEND || act == FAKE_SEND_CLOSE) && out.len > 0)
			write_full(fd, out.s, out.len);
		strbuf_free(&out);
		if (act == FAKE_SEND_CLOSE)
			return;
	}
}

/* fake_thread - accept and serve nconn connections */
static void *fake_thread(void *arg)
{
	struct fake *f = arg;
	for (int i = 0; i < f->nconn; i++) {
		int fd = accept(f->lfd, NULL, NULL);
		if (fd < 0)
			break;
		serve(f, fd);
		close(fd);
	}
	return NULL;
}

static int fake_seq_no;

/* fake_start - listen (unix socket, or loopback TCP when tcp) and serve */
static struct fake *fake_start(fake_fn fn, uint32_t actions, uint32_t proto, int tcp)
{
	struct fake *f = calloc(1, sizeof(*f));
	f->version = 6;
	f->actions = actions;
	f->proto = proto;
	f->fn = fn ? fn : fn_continue;
	f->nconn = 1;
	pthread_mutex_init(&f->mu, NULL);
	if (tcp) {
		struct sockaddr_in sin = {0};
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		f->lfd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(f->lfd >= 0);
		assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		socklen_t sl = sizeof(sin);
		getsockname(f->lfd, (struct sockaddr *)&sin, &sl);
		f->tcp_port = ntohs(sin.sin_port);
		snprintf(f->path, sizeof(f->path), "inet:127.0.0.1:%d", f->tcp_port);
	} else {
		struct sockaddr_un sun = {0};
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof(sun.sun_path), "/tmp/tern-milter-test-%d-%d.sock", (int)getpid(),
			 fake_seq_no++);
		unlink(sun.sun_path);
		f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_int_equal(bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
		snprintf(f->path, sizeof(f->path), "unix:%s", sun.sun_path);
	}
	assert_int_equal(listen(f->lfd, 8), 0);
	return f;
}

/* fake_run - start serving (after the test set its fields) */
static void fake_run(struct fake *f)
{
	assert_int_equal(pthread_create(&f->th, NULL, fake_thread, f), 0);
}

static struct fake *fakes[16];
static size_t nfakes;

/* fake_stop - wait for the thread and close; what it saw stays readable
 * until the test's teardown (fakes_free) */
static void fake_stop(struct fake *f)
{
	pthread_join(f->th, NULL);
	close(f->lfd);
	if (strncmp(f->path, "unix:", 5) == 0)
		unlink(f->path + 5);
	assert_true(nfakes < sizeof(fakes) / sizeof(fakes[0]));
	fakes[nfakes++] = f;
}

/* fakes_free - teardown: release the stopped fakes */
static int fakes_free(void **state)
{
	(void)state;
	for (size_t k = 0; k < nfakes; k++) {
		struct fake *f = fakes[k];
		for (size_t i = 0; i < f->npkts; i++)
			free(f->pkts[i].data);
		pthread_mutex_destroy(&f->mu);
		free(f);
	}
	nfakes = 0;
	return 0;
}

/* fake_find - the k-th (0-based) packet with command cmd (macro stage for 'D') */
static const struct fake_pkt *fake_find(struct fake *f, int cmd, int stage, int k)
{
	pthread_mutex_lock(&f->mu);
	const struct fake_pkt *found = NULL;
	for (size_t i = 0; i < f->npkts && !found; i++) {
		const struct fake_pkt *p = &f->pkts[i];
		if (p->cmd != cmd || (cmd == SMFIC_MACRO && (p->len == 0 || p->data[0] != stage)))
			continue;
		if (k-- == 0)
			found = p;
	}
	pthread_mutex_unlock(&f->mu);
	return found;
}

/* macro_get - value of name in an SMFIC_MACRO packet, or NULL */
static const char *macro_get(const struct fake_pkt *p, const char *name)
{
	if (p == NULL)
		return NULL;
	const char *s = (const char *)p->data + 1, *end = (const char *)p->data + p->len;
	while (s < end) {
		const char *v = s + strlen(s) + 1;
		if (v >= end)
			return NULL;
		if (strcmp(s, name) == 0)
			return v;
		s = v + strlen(v) + 1;
	}
	return NULL;
}

/* ---- the MTA side: run stages on an event loop ---- */

struct run {
	struct event_base *base;
	int done, in_call, inside;
	struct smtp_verdict v;
	char mods[8192];
	char body[8192];
	int body_replaced;
};

static void stage_cb(void *arg, const struct smtp_verdict *v)
{
	struct run *r = arg;
	if (r->in_call)
		r->inside = 1;
	r->done++;
	r->v = *v;
}

static void eom_cb(void *arg, const struct smtp_verdict *v, const struct milter_mods *m)
{
	struct run *r = arg;
	if (r->in_call)
		r->inside = 1;
	r->done++;
	r->v = *v;
	size_t o = 0;
	r->mods[0] = 0;
	for (size_t i = 0; i < m->n; i++) {
		const struct milter_mod *x = &m->v[i];
		o += (size_t)snprintf(r->mods + o, sizeof(r->mods) - o, "%s:%u:%s=%s%s%s|",
				      milter_mod_kind_str(x->kind), x->index, x->name ? x->name : "",
				      x->value ? x->value : "", x->args ? "+" : "", x->args ? x->args : "");
	}
	r->body_replaced = m->body_replaced;
	snprintf(r->body, sizeof(r->body), "%s", m->body.s ? m->body.s : "");
}

static struct event_base *base;

/* wait - run the loop until the callback ran (at most 8 s) */
static void wait_done(struct run *r)
{
	struct timeval start, now;
	gettimeofday(&start, NULL);
	while (!r->done) {
		event_base_loop(base, EVLOOP_ONCE);
		gettimeofday(&now, NULL);
		assert_true(now.tv_sec - start.tv_sec < 8);
	}
	/* a second run of the loop must not call it again */
	struct timeval tv = {0, 20000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_int_equal(r->done, 1);
	assert_false(r->inside);
}

static struct smtp_verdict do_connect(struct milter_sess *s)
{
	struct run r = {.base = base, .in_call = 1};
	milter_sess_connect(s, stage_cb, &r);
	r.in_call = 0;
	wait_done(&r);
	return r.v;
}

static struct smtp_verdict do_helo(struct milter_sess *s, const char *helo)
{
	struct run r = {.base = base, .in_call = 1};
	milter_sess_helo(s, helo, stage_cb, &r);
	r.in_call = 0;
	wait_done(&r);
	return r.v;
}

static struct smtp_verdict do_mail(struct milter_sess *s, const char *from)
{
	static const char *const args[] = {"SIZE=100", "BODY=8BITMIME", NULL};
	struct milter_macros mac = {.auth_user = "alice", .auth_type = "PLAIN"};
	struct run r = {.base = base, .in_call = 1};
	milter_sess_mail(s, from, args, &mac, stage_cb, &r);
	r.in_call = 0;
	wait_done(&r);
	return r.v;
}

static struct smtp_verdict do_rcpt(struct milter_sess *s, const char *rcpt)
{
	struct run r = {.base = base, .in_call = 1};
	milter_sess_rcpt(s, rcpt, NULL, NULL, stage_cb, &r);
	r.in_call = 0;
	wait_done(&r);
	return r.v;
}

static struct smtp_verdict do_data(struct milter_sess *s)
{
	struct run r = {.base = base, .in_call = 1};
	milter_sess_data(s, stage_cb, &r);
	r.in_call = 0;
	wait_done(&r);
	return r.v;
}

static void do_eom(struct milter_sess *s, struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->base = base;
	r->in_call = 1;
	milter_sess_eom(s, eom_cb, r);
	r->in_call = 0;
	wait_done(r);
}

static const char MSG[] = "Received: from client.example\r\n"
			  "Subject: hello\r\n"
			  "X-Folded: a\r\n b\r\n"
			  "\r\n"
			  "Body line one\r\n"
			  "line two\r\n";

/* feed - the message in small pieces, letting the loop run between them */
static void feed(struct milter_sess *s, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i += 7) {
		milter_sess_content(s, p + i, n - i < 7 ? n - i : 7);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
}

static struct milter_chain *chain(const char *const *addrs, size_t n, enum milter_default d,
				  unsigned timeout, size_t max_body)
{
	struct milter_chain_conf c = {.addrs = addrs, .n = n, .connect_timeout = timeout,
				      .cmd_timeout = timeout, .eom_timeout = timeout, .on_error = d,
				      .hostname = "mx.tern.example", .max_body = max_body};
	char err[256];
	struct milter_chain *ch = milter_chain_new(base, &c, err, sizeof(err));
	if (ch == NULL)
		fail_msg("chain: %s", err);
	return ch;
}

static struct milter_sess *sess(struct milter_chain *ch)
{
	struct milter_conninfo ci = {.client_addr = "192.0.2.1", .client_port = 40000,
				     .client_name = "client.example", .session_id = "S1",
				     .if_addr = "198.51.100.25"};
	return milter_sess_new(ch, &ci);
}

/* full - one whole transaction that continues everywhere; returns the eom run */
static void full(struct milter_sess *s, struct run *r)
{
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_set_qid(s, "QID123");
	feed(s, MSG, sizeof(MSG) - 1);
	do_eom(s, r);
}

/* ---- tests ---- */

static void test_happy_path(void **state)
{
	(void)state;
	struct fake *f = fake_start(NULL, MILTER_OUR_ACTIONS, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	assert_int_equal(milter_chain_size(ch), 1);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_helo(s, "client.example").kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	assert_string_equal(r.mods, "");
	assert_false(r.body_replaced);
	milter_sess_abort(s); /* the transaction ended: nothing to abort at the milter */
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);

	assert_string_equal(f->seq, "OCHMRTLLLNBEQ");
	/* connect: host, family, port, address; macros */
	const struct fake_pkt *p = fake_find(f, SMFIC_CONNECT, 0, 0);
	assert_memory_equal(p->data, "client.example\0" "4\x9c\x40" "192.0.2.1\0", 28);
	const struct fake_pkt *mc = fake_find(f, SMFIC_MACRO, SMFIC_CONNECT, 0);
	assert_string_equal(macro_get(mc, "j"), "mx.tern.example");
	assert_string_equal(macro_get(mc, "{daemon_name}"), "tern");
	assert_string_equal(macro_get(mc, "{client_addr}"), "192.0.2.1");
	assert_string_equal(macro_get(mc, "{client_port}"), "40000");
	assert_string_equal(macro_get(mc, "{if_addr}"), "198.51.100.25");
	assert_string_equal(macro_get(mc, "_"), "client.example [192.0.2.1]");
	/* no TLS: no TLS macros */
	assert_null(macro_get(fake_find(f, SMFIC_MACRO, SMFIC_HELO, 0), "{tls_version}"));
	p = fake_find(f, SMFIC_HELO, 0, 0);
	assert_string_equal((const char *)p->data, "client.example");
	p = fake_find(f, SMFIC_MAIL, 0, 0);
	assert_memory_equal(p->data, "<a@example.org>\0SIZE=100\0BODY=8BITMIME\0", 39);
	const struct fake_pkt *mm = fake_find(f, SMFIC_MACRO, SMFIC_MAIL, 0);
	assert_string_equal(macro_get(mm, "{auth_authen}"), "alice");
	assert_string_equal(macro_get(mm, "{auth_type}"), "PLAIN");
	assert_string_equal(macro_get(mm, "{mail_addr}"), "a@example.org");
	assert_null(macro_get(mm, "i")); /* no queue id yet */
	p = fake_find(f, SMFIC_RCPT, 0, 0);
	assert_memory_equal(p->data, "<b@example.net>\0", 16);
	assert_string_equal(macro_get(fake_find(f, SMFIC_MACRO, SMFIC_RCPT, 0), "{rcpt_addr}"), "b@example.net");
	/* headers: one space after the colon taken off; folds as LF */
	p = fake_find(f, SMFIC_HEADER, 0, 0);
	assert_memory_equal(p->data, "Received\0from client.example\0", 29);
	p = fake_find(f, SMFIC_HEADER, 0, 1);
	assert_memory_equal(p->data, "Subject\0hello\0", 14);
	p = fake_find(f, SMFIC_HEADER, 0, 2);
	assert_memory_equal(p->data, "X-Folded\0a\n b\0", 14);
	assert_string_equal(macro_get(fake_find(f, SMFIC_MACRO, SMFIC_EOH, 0), "i"), "QID123");
	p = fake_find(f, SMFIC_BODY, 0, 0);
	assert_int_equal(p->len, strlen("Body line one\r\nline two\r\n"));
	assert_memory_equal(p->data, "Body line one\r\nline two\r\n", p->len);
	assert_string_equal(macro_get(fake_find(f, SMFIC_MACRO, SMFIC_BODYEOB, 0), "i"), "QID123");
}

/* fn_nr - a milter with no-reply flags: answers only what it must */
static void test_flags_no_send_no_reply(void **state)
{
	(void)state;
	uint32_t proto = SMFIP_NOHELO | SMFIP_NR_CONN | SMFIP_NR_HDR | SMFIP_NOBODY | SMFIP_NOEOH |
			 SMFIP_HDR_LEADSPC | SMFIP_NR_RCPT;
	struct fake *f = fake_start(NULL, 0, proto, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_set_tls(s, "TLSv1.3", "TLS_AES_256_GCM_SHA384");
	assert_int_equal(do_helo(s, "client.example").kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	/* no HELO, EOH or BODY; headers and connect went without waiting */
	assert_string_equal(f->seq, "OCMRTLLLEQ");
	/* HDR_LEADSPC: the value as stored, leading space included */
	const struct fake_pkt *p = fake_find(f, SMFIC_HEADER, 0, 1);
	assert_memory_equal(p->data, "Subject\0 hello\0", 15);
	/* the macros of a stage not sent are still sent (as Postfix does) */
	const struct fake_pkt *mh = fake_find(f, SMFIC_MACRO, SMFIC_HELO, 0);
	assert_string_equal(macro_get(mh, "{tls_version}"), "TLSv1.3");
	assert_string_equal(macro_get(mh, "{cipher}"), "TLS_AES_256_GCM_SHA384");
}

static enum fake_act fn_refuse(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_RCPT && n > 4 && memcmp(d, "<bad", 4) == 0) {
		rep_s(out, SMFIR_REPLYCODE, "550-5.1.1 No such user\r\n550 5.1.1 Really not");
		return FAKE_SEND;
	}
	if (cmd == SMFIC_RCPT && n > 5 && memcmp(d, "<temp", 5) == 0) {
		rep(out, SMFIR_TEMPFAIL, "", 0);
		return FAKE_SEND;
	}
	if (cmd == SMFIC_RCPT && n > 4 && memcmp(d, "<rej", 4) == 0) {
		rep(out, SMFIR_REJECT, "", 0);
		return FAKE_SEND;
	}
	if (cmd == SMFIC_MAIL && n > 5 && memcmp(d, "<shut", 5) == 0) {
		rep_s(out, SMFIR_REPLYCODE, "421 4.7.0 Going away");
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static void test_refusals(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_refuse, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	struct smtp_verdict v = do_rcpt(s, "bad@example.net");
	assert_int_equal(v.kind, SMTP_VERDICT_REJECT);
	assert_string_equal(v.reply, "550-5.1.1 No such user\r\n550 5.1.1 Really not");
	assert_true(smtp_verdict_reply_valid(v.kind, v.reply));
	assert_string_equal(v.why, "milter");
	v = do_rcpt(s, "temp@example.net");
	assert_int_equal(v.kind, SMTP_VERDICT_TEMPFAIL);
	assert_string_equal(v.reply, "");
	v = do_rcpt(s, "rej@example.net");
	assert_int_equal(v.kind, SMTP_VERDICT_REJECT);
	assert_string_equal(v.reply, "");
	/* a refused recipient does not end the transaction */
	assert_int_equal(do_rcpt(s, "good@example.net").kind, SMTP_VERDICT_CONTINUE);
	milter_sess_abort(s);
	v = do_mail(s, "shut@example.org");
	assert_int_equal(v.kind, SMTP_VERDICT_SHUTDOWN);
	assert_string_equal(v.reply, "421 4.7.0 Going away");
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	/* the ABORT went out after the first transaction, not after the refused MAIL */
	assert_string_equal(f->seq, "OCMRRRRAMQ");
}

static enum fake_act fn_mods(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd != SMFIC_BODYEOB)
		return fn_continue(f, cmd, d, n, out);
	rep(out, SMFIR_PROGRESS, "", 0);
	rep(out, SMFIR_ADDHEADER, "X-Spam\0yes\0", 11);
	rep(out, SMFIR_INSHEADER, "\0\0\0\0DKIM-Signature\0v=1; d=x;\n\tb=abc\0", 36);
	rep(out, SMFIR_CHGHEADER, "\0\0\0\1Subject\0\0", 13);
	rep(out, SMFIR_CHGHEADER, "\0\0\0\2X-Folded\0new\0", 17);
	rep(out, SMFIR_REPLBODY, "new body\nline", 13);
	rep(out, SMFIR_REPLBODY, " two\r\nend", 9);
	rep(out, SMFIR_CHGFROM, "<new@example.org>\0SIZE=5\0", 25);
	rep(out, SMFIR_ADDRCPT, "<r1@example.org>\0", 17);
	rep(out, SMFIR_ADDRCPT_PAR, "<r2@example.org>\0NOTIFY=NEVER\0", 30);
	rep(out, SMFIR_DELRCPT, "<b@example.net>\0", 16);
	rep(out, SMFIR_QUARANTINE, "looks bad\0", 10);
	rep(out, SMFIR_PROGRESS, "", 0);
	rep(out, SMFIR_ACCEPT, "", 0);
	return FAKE_SEND;
}

static void test_eom_modifications(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_mods, MILTER_OUR_ACTIONS, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	assert_string_equal(r.mods, "addheader:0:X-Spam=yes|"
				    "insheader:0:DKIM-Signature=v=1; d=x;\r\n\tb=abc|"
				    "chgheader:1:Subject=|"
				    "chgheader:2:X-Folded=new|"
				    "chgfrom:0:=new@example.org+SIZE=5|"
				    "addrcpt:0:=r1@example.org|"
				    "addrcpt:0:=r2@example.org+NOTIFY=NEVER|"
				    "delrcpt:0:=b@example.net|"
				    "quarantine:0:=looks bad|");
	assert_true(r.body_replaced);
	assert_string_equal(r.body, "new body\r\nline two\r\nend\r\n");
	/* a second transaction starts clean */
	milter_sess_abort(s);
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	assert_non_null(strstr(r.mods, "X-Spam"));
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

static enum fake_act fn_chgfrom(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd != SMFIC_BODYEOB)
		return fn_continue(f, cmd, d, n, out);
	rep(out, SMFIR_ADDHEADER, "X-Ok\0yes\0", 9);
	rep(out, SMFIR_CHGFROM, "<new@example.org>\0", 18);
	rep(out, SMFIR_CONTINUE, "", 0);
	return FAKE_SEND;
}

/* a modification the milter did not negotiate is a protocol error */
static void test_mod_not_negotiated(void **state)
{
	(void)state;
	for (int d = 0; d < 2; d++) {
		struct fake *f = fake_start(fn_chgfrom, SMFIF_ADDHDRS, 0, 0);
		fake_run(f);
		const char *addrs[] = {f->path};
		enum milter_default def = d ? MILTER_DEFAULT_ACCEPT : MILTER_DEFAULT_TEMPFAIL;
		struct milter_chain *ch = chain(addrs, 1, def, 5, 0);
		struct milter_sess *s = sess(ch);
		assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
		struct run r;
		full(s, &r);
		assert_int_equal(r.v.kind, d ? SMTP_VERDICT_CONTINUE : SMTP_VERDICT_TEMPFAIL);
		assert_string_equal(r.mods, ""); /* nothing from a broken milter */
		/* the milter is gone for the connection: tempfail or skipped */
		milter_sess_abort(s);
		assert_int_equal(do_mail(s, "a@example.org").kind,
				 d ? SMTP_VERDICT_CONTINUE : SMTP_VERDICT_TEMPFAIL);
		milter_sess_free(s);
		milter_chain_free(ch);
		fake_stop(f);
	}
}

static void test_milter_down(void **state)
{
	(void)state;
	/* a socket path with nothing behind it, and a closed TCP port */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {0};
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t sl = sizeof(sin);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	char closed[64];
	snprintf(closed, sizeof(closed), "inet:127.0.0.1:%d", ntohs(sin.sin_port));
	close(fd);
	const char *const down[] = {"unix:/nonexistent/tern-milter.sock", closed};
	for (int i = 0; i < 2; i++) {
		for (int d = 0; d < 2; d++) {
			const char *addrs[] = {down[i]};
			struct milter_chain *ch = chain(addrs, 1, d ? MILTER_DEFAULT_ACCEPT : MILTER_DEFAULT_TEMPFAIL, 5, 0);
			struct milter_sess *s = sess(ch);
			enum smtp_verdict_kind want = d ? SMTP_VERDICT_CONTINUE : SMTP_VERDICT_TEMPFAIL;
			struct smtp_verdict v = do_connect(s);
			assert_int_equal(v.kind, want);
			assert_string_equal(v.reply, ""); /* the table's 4xx for the stage */
			assert_int_equal(do_helo(s, "x").kind, want);
			assert_int_equal(do_mail(s, "a@b").kind, want);
			if (d) {
				struct run r;
				assert_int_equal(do_rcpt(s, "c@d").kind, want);
				assert_int_equal(do_data(s).kind, want);
				feed(s, MSG, sizeof(MSG) - 1);
				do_eom(s, &r);
				assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
			}
			milter_sess_free(s);
			milter_chain_free(ch);
		}
	}
}

static enum fake_act fn_hang_mail(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_MAIL)
		return FAKE_SILENT;
	return fn_continue(f, cmd, d, n, out);
}

static void test_timeout(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_hang_mail, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 1, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct timeval t0, t1;
	gettimeofday(&t0, NULL);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_TEMPFAIL);
	gettimeofday(&t1, NULL);
	double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
	assert_true(el >= 0.9 && el < 3.0);
	/* still tempfail later: the milter is gone */
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_TEMPFAIL);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

/* a milter that accepts but never answers the negotiation */
static void test_negotiation_timeout(void **state)
{
	(void)state;
	struct sockaddr_un sun = {0};
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "/tmp/tern-milter-test-%d-mute.sock", (int)getpid());
	unlink(sun.sun_path);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	char addr[128];
	snprintf(addr, sizeof(addr), "unix:%s", sun.sun_path);
	const char *addrs[] = {addr};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_ACCEPT, 1, 0);
	struct milter_sess *s = sess(ch);
	struct timeval t0, t1;
	gettimeofday(&t0, NULL);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE); /* skipped after 1 s */
	gettimeofday(&t1, NULL);
	assert_true(t1.tv_sec - t0.tv_sec >= 0 && t1.tv_sec - t0.tv_sec < 3);
	milter_sess_free(s);
	milter_chain_free(ch);
	close(lfd);
	unlink(sun.sun_path);
}

static enum fake_act fn_drop_rcpt(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_RCPT)
		return FAKE_CLOSE;
	return fn_continue(f, cmd, d, n, out);
}

static void test_drop(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_drop_rcpt, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	struct smtp_verdict v = do_rcpt(s, "b@example.net");
	assert_int_equal(v.kind, SMTP_VERDICT_TEMPFAIL);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

static int garbage_kind;

static enum fake_act fn_garbage(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd != SMFIC_MAIL)
		return fn_continue(f, cmd, d, n, out);
	switch (garbage_kind) {
	case 0: strbuf_add(out, "\xff\xff\xff\xff" "c", 5); break;           /* huge length */
	case 1: strbuf_add(out, "\0\0\0\0", 4); break;                       /* zero length */
	case 2: rep(out, 'Z', "", 0); break;                                 /* unknown reply */
	case 3: rep(out, SMFIR_CONTINUE, "junk", 4); break;                 /* data after continue */
	case 4: rep(out, SMFIR_CONTINUE, "", 0); rep(out, SMFIR_CONTINUE, "", 0); break; /* one too many */
	case 5: rep_s(out, SMFIR_REPLYCODE, "550 ok\r\nRSET"); break;        /* injection */
	case 6: rep(out, SMFIR_ADDHEADER, "X\0v\0", 4); break;                /* a mod before eom */
	case 7: strbuf_add(out, "\0\0\0\x10" "c", 5); break;                /* truncated, then EOF */
	default: break;
	}
	return garbage_kind == 7 ? FAKE_SEND_CLOSE : FAKE_SEND;
}

static void test_garbage(void **state)
{
	(void)state;
	for (garbage_kind = 0; garbage_kind <= 7; garbage_kind++) {
		struct fake *f = fake_start(fn_garbage, 0, 0, 0);
		fake_run(f);
		const char *addrs[] = {f->path};
		struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 2, 0);
		struct milter_sess *s = sess(ch);
		assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
		struct smtp_verdict v = do_mail(s, "a@example.org");
		if (garbage_kind == 4) {
			/* the extra reply is seen at once or at the next stage */
			if (v.kind == SMTP_VERDICT_CONTINUE)
				v = do_rcpt(s, "b@example.net");
		}
		assert_int_equal(v.kind, SMTP_VERDICT_TEMPFAIL);
		assert_string_equal(v.reply, "");
		milter_sess_free(s);
		milter_chain_free(ch);
		fake_stop(f);
	}
}

static enum fake_act fn_skip(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_BODY) {
		rep(out, SMFIR_SKIP, "", 0);
		return FAKE_SEND;
	}
	if (cmd == SMFIC_HEADER && n > 1 && d[0] == 'A') {
		rep(out, SMFIR_SKIP, "", 0);
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static void test_skip(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_skip, 0, SMFIP_SKIP, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	/* three headers (SKIP after the first), a body of three chunks (SKIP after the first) */
	milter_sess_content(s, "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 20);
	size_t bl = 3 * 65535;
	char *body = malloc(bl);
	memset(body, 'x', bl);
	milter_sess_content(s, body, bl);
	free(body);
	struct run r;
	do_eom(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	assert_int_equal(f->count[SMFIC_HEADER], 1);
	assert_int_equal(f->count[SMFIC_BODY], 1);
	assert_int_equal(f->count[SMFIC_EOH], 1);
	assert_int_equal(f->count[SMFIC_BODYEOB], 1);
}

static enum fake_act fn_add(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_BODYEOB) {
		char data[64];
		memcpy(data, "X-From", 7); /* with its NUL */
		int k = snprintf(data + 7, sizeof(data) - 7, "%s", f->path + strlen(f->path) - 6);
		rep(out, SMFIR_ADDHEADER, data, 7 + (size_t)k + 1);
		rep(out, SMFIR_CONTINUE, "", 0);
		return FAKE_SEND;
	}
	if (cmd == SMFIC_MAIL && n > 4 && memcmp(d, "<rej", 4) == 0) {
		rep(out, SMFIR_REJECT, "", 0);
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static enum fake_act fn_eom_tempfail(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_BODYEOB) {
		rep(out, SMFIR_ADDHEADER, "X-Lost\0v\0", 9);
		rep_s(out, SMFIR_REPLYCODE, "451 4.7.1 Try later");
		return FAKE_SEND;
	}
	return fn_add(f, cmd, d, n, out);
}

static void test_chain_of_two(void **state)
{
	(void)state;
	struct fake *f1 = fake_start(fn_add, MILTER_OUR_ACTIONS, 0, 0);
	struct fake *f2 = fake_start(fn_add, MILTER_OUR_ACTIONS, 0, 1); /* over TCP */
	fake_run(f1);
	fake_run(f2);
	const char *addrs[] = {f1->path, f2->path};
	struct milter_chain *ch = chain(addrs, 2, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	/* modifications in chain order */
	char want[256];
	snprintf(want, sizeof(want), "addheader:0:X-From=%s|addheader:0:X-From=%s|",
		 f1->path + strlen(f1->path) - 6, f2->path + strlen(f2->path) - 6);
	assert_string_equal(r.mods, want);
	/* the first refuses MAIL: the second never sees it */
	milter_sess_abort(s);
	assert_int_equal(do_mail(s, "rej@example.org").kind, SMTP_VERDICT_REJECT);
	milter_sess_abort(s);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f1);
	fake_stop(f2);
	assert_int_equal(f1->count[SMFIC_MAIL], 2);
	assert_int_equal(f2->count[SMFIC_MAIL], 1);
	assert_int_equal(f1->count[SMFIC_ABORT], 0);
	assert_int_equal(f2->count[SMFIC_ABORT], 0);

	/* the first tempfails at the end: its verdict wins over the second's edits */
	f1 = fake_start(fn_eom_tempfail, MILTER_OUR_ACTIONS, 0, 0);
	f2 = fake_start(fn_add, MILTER_OUR_ACTIONS, 0, 0);
	fake_run(f1);
	fake_run(f2);
	const char *addrs2[] = {f1->path, f2->path};
	ch = chain(addrs2, 2, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_TEMPFAIL);
	assert_string_equal(r.v.reply, "451 4.7.1 Try later");
	assert_string_equal(r.mods, "");
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f1);
	fake_stop(f2);
	/* both saw the whole message */
	assert_int_equal(f2->count[SMFIC_BODYEOB], 1);
	assert_int_equal(f1->count[SMFIC_HEADER], 3);
	assert_int_equal(f2->count[SMFIC_HEADER], 3);
}

static enum fake_act fn_reject_hdr(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_HEADER && n > 7 && memcmp(d, "Subject", 7) == 0) {
		rep_s(out, SMFIR_REPLYCODE, "554 5.7.1 Bad subject");
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static void test_content_refusal_and_abort(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_reject_hdr, 0, 0, 0);
	f->nconn = 1;
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_REJECT);
	assert_string_equal(r.v.reply, "554 5.7.1 Bad subject");
	milter_sess_abort(s); /* the milter left the transaction itself: no ABORT */
	/* a new transaction, aborted after RCPT: SMFIC_ABORT */
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	milter_sess_abort(s);
	/* and one left without abort by the caller: the next MAIL aborts it */
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	/* after the refused Subject nothing more of that message went out */
	assert_string_equal(f->seq, "OCMRTLLMRAMAMAQ");
}

static int conn_reply;

static enum fake_act fn_conn(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_CONNECT) {
		rep(out, conn_reply, "", 0);
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static void test_connect_level(void **state)
{
	(void)state;
	/* ACCEPT at connect: no more events; REJECT/TEMPFAIL: for the whole connection */
	const int replies[] = {SMFIR_ACCEPT, SMFIR_REJECT, SMFIR_TEMPFAIL, SMFIR_DISCARD, SMFIR_SHUTDOWN};
	const enum smtp_verdict_kind want[] = {SMTP_VERDICT_CONTINUE, SMTP_VERDICT_REJECT, SMTP_VERDICT_TEMPFAIL,
					       SMTP_VERDICT_CONTINUE, SMTP_VERDICT_SHUTDOWN};
	for (int i = 0; i < 5; i++) {
		conn_reply = replies[i];
		struct fake *f = fake_start(fn_conn, 0, 0, 0);
		fake_run(f);
		const char *addrs[] = {f->path};
		struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
		struct milter_sess *s = sess(ch);
		assert_int_equal(do_connect(s).kind, want[i]);
		assert_int_equal(do_helo(s, "x").kind, want[i]);
		assert_int_equal(do_mail(s, "a@b").kind, want[i]);
		milter_sess_free(s);
		milter_chain_free(ch);
		fake_stop(f);
		if (i == 3) /* DISCARD at connect means nothing: the milter stays */
			assert_string_equal(f->seq, "OCHMAQ");
		else
			assert_string_equal(f->seq, "OCQ");
	}
}

static enum fake_act fn_discard(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_RCPT) {
		rep(out, SMFIR_DISCARD, "", 0);
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

static void test_discard_before_eom(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_discard, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r); /* RCPT and DATA go on */
	assert_int_equal(r.v.kind, SMTP_VERDICT_DISCARD);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	/* nothing of the message after the discard; ABORT (the caller did
	 * not end the transaction) and QUIT at free */
	assert_string_equal(f->seq, "OCMRAQ");
}

static enum fake_act fn_bigbody(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd != SMFIC_BODYEOB)
		return fn_continue(f, cmd, d, n, out);
	char chunk[150];
	memset(chunk, 'z', sizeof(chunk));
	rep(out, SMFIR_REPLBODY, chunk, sizeof(chunk));
	rep(out, SMFIR_REPLBODY, chunk, sizeof(chunk));
	rep(out, SMFIR_ADDHEADER, "X\0v\0", 4);
	rep(out, SMFIR_CONTINUE, "", 0);
	return FAKE_SEND;
}

static void test_replbody_cap(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_bigbody, MILTER_OUR_ACTIONS, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_ACCEPT, 5, 200);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_TEMPFAIL);
	assert_string_equal(r.v.reply, ""); /* the table's 4xx */
	assert_string_equal(r.mods, "");
	assert_false(r.body_replaced);
	/* the milter stayed in sync: the next transaction works */
	milter_sess_abort(s);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

/* a milter that stops reading: what is queued for it stays bounded */
static void test_backlog_bounded(void **state)
{
	(void)state;
	struct fake *f = fake_start(NULL, 0, SMFIP_NR_BODY | SMFIP_NR_HDR | SMFIP_NR_EOH, 0);
	f->no_read_after = 9; /* O, D C, D M, D R, T, and one header */
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 2, 1000);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_content(s, "A: 1\r\n\r\n", 8);
	char *chunk = malloc(65536);
	memset(chunk, 'y', 65536);
	size_t most = 0;
	for (int i = 0; i < 64; i++) { /* 4 MB */
		milter_sess_content(s, chunk, 65536);
		event_base_loop(base, EVLOOP_NONBLOCK);
		size_t b = milter_sess_backlog(s);
		if (b > most)
			most = b;
	}
	free(chunk);
	assert_true(most <= 1000 + MILTER_PKT_MAX + 65536);
	struct run r;
	do_eom(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_TEMPFAIL);
	assert_int_equal(milter_sess_backlog(s), 0);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

static void test_macro_list(void **state)
{
	(void)state;
	struct fake *f = fake_start(NULL, SMFIF_SETSYMLIST, 0, 0);
	static const char lists[] = "\0\0\0\2{auth_type} i {unknown}\0" "\0\0\0\0j {client_addr}\0";
	f->optneg_extra = lists;
	f->optneg_extra_len = sizeof(lists) - 1;
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_set_qid(s, "EARLY1");
	struct milter_macros mac = {.auth_user = "bob", .auth_type = "LOGIN", .qid = "EARLY1"};
	struct run rr = {.base = base};
	milter_sess_mail(s, "a@example.org", NULL, &mac, stage_cb, &rr);
	wait_done(&rr);
	assert_int_equal(rr.v.kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	const struct fake_pkt *mc = fake_find(f, SMFIC_MACRO, SMFIC_CONNECT, 0);
	assert_string_equal(macro_get(mc, "j"), "mx.tern.example");
	assert_string_equal(macro_get(mc, "{client_addr}"), "192.0.2.1");
	assert_null(macro_get(mc, "{daemon_name}"));
	const struct fake_pkt *mm = fake_find(f, SMFIC_MACRO, SMFIC_MAIL, 0);
	assert_string_equal(macro_get(mm, "{auth_type}"), "LOGIN");
	assert_string_equal(macro_get(mm, "i"), "EARLY1");
	assert_null(macro_get(mm, "{mail_addr}"));
	assert_null(macro_get(mm, "{unknown}"));
}

static void test_no_milters_and_free_pending(void **state)
{
	(void)state;
	struct milter_chain *ch = chain(NULL, 0, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	/* a stage started and the session freed: the callback never runs */
	struct run pending = {.base = base};
	milter_sess_helo(s, "x", stage_cb, &pending);
	milter_sess_free(s);
	struct timeval tv = {0, 50000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_int_equal(pending.done, 0);
	milter_chain_free(ch);

	/* the same with a milter answering late */
	struct fake *f = fake_start(NULL, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	s = sess(ch);
	milter_sess_connect(s, stage_cb, &pending);
	milter_sess_free(s);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_int_equal(pending.done, 0);
	milter_chain_free(ch);
	fake_stop(f);
}

static void test_chain_addresses(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"nocolon", "unix:relative/path", "bogus:/x", "inet:127.0.0.1", "inet:127.0.0.1:0",
		"inet:127.0.0.1:99999", "inet:127.0.0.1:12x", "inet::25", "inet6:127.0.0.1:25",
		"inet:@127.0.0.1", "inet:25@",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct milter_chain_conf c = {.addrs = &bad[i], .n = 1};
		char err[256] = "";
		assert_null(milter_chain_new(base, &c, err, sizeof(err)));
		assert_true(err[0] != 0);
	}
	static const char *const good[] = {"unix:/run/x.sock", "local:/run/y.sock", "inet:127.0.0.1:8891",
					   "inet:8891@127.0.0.1", "inet:[127.0.0.1]:25", "inet6:[::1]:8891",
					   "inet6:8891@::1", "inet:localhost:25"};
	struct milter_chain_conf c = {.addrs = good, .n = sizeof(good) / sizeof(good[0])};
	char err[256];
	struct milter_chain *ch = milter_chain_new(base, &c, err, sizeof(err));
	if (ch == NULL)
		fail_msg("%s", err);
	assert_int_equal(milter_chain_size(ch), c.n);
	milter_chain_free(ch);
	assert_string_equal(milter_default_str(MILTER_DEFAULT_ACCEPT), "accept");
	assert_string_equal(milter_default_str(MILTER_DEFAULT_TEMPFAIL), "tempfail");
	assert_string_equal(milter_mod_kind_str(MILTER_MOD_DELRCPT), "delrcpt");
}

/* over inet: sendmail's port@host form, and IPv6 when the host has it */
static void test_inet_forms(void **state)
{
	(void)state;
	struct fake *f = fake_start(NULL, 0, 0, 1);
	fake_run(f);
	char addr[64];
	snprintf(addr, sizeof(addr), "inet:%d@127.0.0.1", f->tcp_port);
	const char *addrs[] = {addr};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	assert_string_equal(f->seq, "OCQ");
}

static enum fake_act fn_slow_header(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_HEADER)
		usleep(200000);
	return fn_continue(f, cmd, d, n, out);
}

/* abort while header replies are due: what was queued is dropped, the late
 * reply of the old transaction is ignored, the next one works */
static void test_abort_during_content(void **state)
{
	(void)state;
	struct fake *f = fake_start(fn_slow_header, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_content(s, MSG, sizeof(MSG) - 1);
	assert_true(milter_sess_backlog(s) > 0); /* the rest waits for the first header's reply */
	milter_sess_abort(s); /* e.g. the message was too big */
	assert_int_equal(do_mail(s, "c@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "d@example.net").kind, SMTP_VERDICT_CONTINUE);
	milter_sess_abort(s);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	assert_string_equal(f->seq, "OCMRTLAMRAQ");
	const struct fake_pkt *p = fake_find(f, SMFIC_MAIL, 0, 1);
	assert_memory_equal(p->data, "<c@example.org>", 15);
}

/* a milter of protocol version 2: no DATA event, no version-6 flags */
static void test_old_version(void **state)
{
	(void)state;
	struct fake *f = fake_start(NULL, 0, 0, 0);
	f->version = 2;
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
	assert_string_equal(f->seq, "OCMRLLLNBEQ");
}

/* a milter that refuses the first message at its end, then accepts the
 * second at EOH (before the end of message it was already sent) */
static int stale_eob, stale_eoh;
static enum fake_act fn_stale(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_BODYEOB && stale_eob++ == 0) {
		rep_s(out, SMFIR_REPLYCODE, "550 5.7.1 first message is spam");
		return FAKE_SEND;
	}
	if (cmd == SMFIC_EOH && stale_eoh++ == 1) {
		rep(out, SMFIR_ACCEPT, "", 0);
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

/* test_verdict_not_carried - a refusal at the end of one message never
 * speaks for the next one, whose ACCEPT came before its end of message */
static void test_verdict_not_carried(void **state)
{
	(void)state;
	stale_eob = stale_eoh = 0;
	struct fake *f = fake_start(fn_stale, 0, 0, 0);
	fake_run(f);
	const char *addrs[] = {f->path};
	struct milter_chain *ch = chain(addrs, 1, MILTER_DEFAULT_TEMPFAIL, 5, 0);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	struct run r;
	full(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_REJECT);
	milter_sess_abort(s);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	milter_sess_content(s, MSG, sizeof(MSG) - 1); /* all of it, then at once the end */
	do_eom(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_CONTINUE);
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(f);
}

static enum fake_act fn_silent_hdr(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_HEADER)
		return FAKE_SILENT;
	return fn_continue(f, cmd, d, n, out);
}

static enum fake_act fn_reject_eob(struct fake *f, int cmd, const unsigned char *d, size_t n, struct strbuf *out)
{
	if (cmd == SMFIC_BODYEOB) {
		rep_s(out, SMFIR_REPLYCODE, "550 5.7.1 virus found");
		return FAKE_SEND;
	}
	return fn_continue(f, cmd, d, n, out);
}

/* test_fail_on_last_chunk - a milter that fails while the last body chunk
 * is queued (its backlog is full) does not end the end-of-message stage
 * before the next milter was asked: that one's 550 stands, also with
 * milter_default_action = accept */
static void test_fail_on_last_chunk(void **state)
{
	(void)state;
	struct fake *a = fake_start(fn_silent_hdr, 0, 0, 0);
	struct fake *b = fake_start(fn_reject_eob, 0, SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY, 0);
	fake_run(a);
	fake_run(b);
	const char *addrs[] = {a->path, b->path};
	struct milter_chain *ch = chain(addrs, 2, MILTER_DEFAULT_ACCEPT, 5, 1);
	struct milter_sess *s = sess(ch);
	assert_int_equal(do_connect(s).kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_mail(s, "a@example.org").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_rcpt(s, "b@example.net").kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(do_data(s).kind, SMTP_VERDICT_CONTINUE);
	const char hdr[] = "Subject: x\r\n\r\n";
	size_t blen = 15 * 65535 + 65534;
	char *body = malloc(blen);
	assert_non_null(body);
	memset(body, 'a', blen);
	for (size_t i = 0; i + 1 < blen; i += 100) {
		body[i] = '\r';
		body[i + 1] = '\n';
	}
	milter_sess_content(s, hdr, sizeof(hdr) - 1);
	for (size_t i = 0; i < blen; i += 4096) {
		milter_sess_content(s, body + i, blen - i < 4096 ? blen - i : 4096);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	struct run r;
	do_eom(s, &r);
	assert_int_equal(r.v.kind, SMTP_VERDICT_REJECT);
	assert_non_null(strstr(r.v.reply, "virus found"));
	milter_sess_free(s);
	milter_chain_free(ch);
	fake_stop(a);
	fake_stop(b);
	assert_int_equal(b->count[SMFIC_BODYEOB], 1);
	free(body);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_happy_path, fakes_free),
		cmocka_unit_test_teardown(test_flags_no_send_no_reply, fakes_free),
		cmocka_unit_test_teardown(test_refusals, fakes_free),
		cmocka_unit_test_teardown(test_eom_modifications, fakes_free),
		cmocka_unit_test_teardown(test_mod_not_negotiated, fakes_free),
		cmocka_unit_test_teardown(test_milter_down, fakes_free),
		cmocka_unit_test_teardown(test_timeout, fakes_free),
		cmocka_unit_test_teardown(test_negotiation_timeout, fakes_free),
		cmocka_unit_test_teardown(test_drop, fakes_free),
		cmocka_unit_test_teardown(test_garbage, fakes_free),
		cmocka_unit_test_teardown(test_skip, fakes_free),
		cmocka_unit_test_teardown(test_chain_of_two, fakes_free),
		cmocka_unit_test_teardown(test_content_refusal_and_abort, fakes_free),
		cmocka_unit_test_teardown(test_connect_level, fakes_free),
		cmocka_unit_test_teardown(test_discard_before_eom, fakes_free),
		cmocka_unit_test_teardown(test_replbody_cap, fakes_free),
		cmocka_unit_test_teardown(test_backlog_bounded, fakes_free),
		cmocka_unit_test_teardown(test_macro_list, fakes_free),
		cmocka_unit_test_teardown(test_no_milters_and_free_pending, fakes_free),
		cmocka_unit_test_teardown(test_chain_addresses, fakes_free),
		cmocka_unit_test_teardown(test_inet_forms, fakes_free),
		cmocka_unit_test_teardown(test_abort_during_content, fakes_free),
		cmocka_unit_test_teardown(test_old_version, fakes_free),
		cmocka_unit_test_teardown(test_verdict_not_carried, fakes_free),
		cmocka_unit_test_teardown(test_fail_on_last_chunk, fakes_free),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	event_base_free(base);
	return rc;
}
