/*
 * milter_conn - one milter of a session: the socket (non-blocking connect,
 * option negotiation), the queue of packets with stop-and-wait on replies,
 * timers, and the reading and checking of what the milter sends (through
 * milter_codec), with modifications kept until end of message.
 *
 * Exports (internal, milter_int.h): milter_conn_start, _close, _quit,
 * _fail, _queue, _pump, _drop_queued, _mods_clear, _body_end, _log.
 * Trusts nothing from the socket: packets are cut with a length cap
 * (MILTER_PKT_MAX) into an input buffer that grows to one packet at most;
 * output queued toward one milter is capped (max_body + MILTER_PKT_MAX);
 * SMFIR_PROGRESS may restart a timeout MILTER_PROGRESS_MAX times; the
 * replaced body is capped at max_body and its line ends made CRLF.
 * Implements: the milter protocol v6 transport (libmilter's comm.c framing).
 */
#include "policy/milter_int.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IN_START 4096 /* initial input buffer; grows to one packet at most */

/* milter_conn_log - start a line about milter m */
void milter_conn_log(struct log_line *l, enum log_level lvl, const char *event, struct milter_conn *m)
{
	struct milter_sess *s = m->s;
	log_begin(l, lvl, event);
	if (s->session_id)
		log_kv(l, "session", s->session_id);
	if (s->qid)
		log_kv(l, "qid", s->qid);
	log_kv(l, "milter", m->addr->text);
	log_kv(l, "stage", milter_sess_stage_str(s));
}

/* ---- per-milter I/O ---- */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

/* milter_conn_close - drop the socket and everything queued */
void milter_conn_close(struct milter_conn *m)
{
	if (m->ev_rd)
		event_free(m->ev_rd);
	if (m->ev_wr)
		event_free(m->ev_wr);
	if (m->ev_tm)
		event_free(m->ev_tm);
	m->ev_rd = m->ev_wr = m->ev_tm = NULL;
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	for (struct pkt *p = m->qhead, *nx; p != NULL; p = nx) {
		nx = p->next;
		free(p);
	}
	m->qhead = m->qtail = NULL;
	m->qbytes = 0;
	free(m->wbuf);
	m->wbuf = NULL;
	m->wlen = m->woff = m->wcap = 0;
	free(m->in);
	m->in = NULL;
	m->inlen = m->incap = 0;
	m->awaiting = 0;
}

/* conn_timer - (re)arm the timer for what m waits for, or stop it */
static void conn_timer(struct milter_conn *m)
{
	if (m->ev_tm == NULL)
		return;
	const struct milter_chain *ch = m->s->ch;
	unsigned secs = 0;
	if (m->st == M_CONNECTING)
		secs = ch->connect_timeout;
	else if (m->awaiting)
		secs = m->await_cmd == SMFIC_BODYEOB ? ch->eom_timeout : ch->cmd_timeout;
	else if (m->wlen > m->woff)
		secs = ch->cmd_timeout;
	if (secs == 0) {
		event_del(m->ev_tm);
		return;
	}
	struct timeval tv = {(time_t)secs, 0};
	event_add(m->ev_tm, &tv);
}

/* conn_flush - write what can be written now; -1 if m failed */
static int conn_flush(struct milter_conn *m)
{
	int progress = 0;
	while (m->woff < m->wlen) {
		ssize_t w = send(m->fd, m->wbuf + m->woff, m->wlen - m->woff, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			milter_conn_fail(m, strerror(errno));
			return -1;
		}
		m->woff += (size_t)w;
		progress = 1;
	}
	if (m->woff == m->wlen) {
		m->woff = m->wlen = 0;
		if (m->wcap > 262144) { /* give back a buffer a body chunk burst grew */
			free(m->wbuf);
			m->wbuf = NULL;
			m->wcap = 0;
		}
		event_del(m->ev_wr);
	} else {
		event_add(m->ev_wr, NULL);
	}
	if (progress || m->woff == m->wlen)
		conn_timer(m);
	return 0;
}

/* conn_wappend - bytes onto the write buffer; -1 out of memory */
static int conn_wappend(struct milter_conn *m, const char *p, size_t n)
{
	if (m->woff > 0 && m->woff == m->wlen)
		m->woff = m->wlen = 0;
	if (m->wcap - m->wlen < n) {
		if (m->woff > 0) {
			memmove(m->wbuf, m->wbuf + m->woff, m->wlen - m->woff);
			m->wlen -= m->woff;
			m->woff = 0;
		}
		if (m->wcap - m->wlen < n) {
			size_t cap = m->wcap ? m->wcap : 4096;
			while (cap - m->wlen < n)
				cap *= 2;
			char *nb = realloc(m->wbuf, cap);
			if (nb == NULL)
				return -1;
			m->wbuf = nb;
			m->wcap = cap;
		}
	}
	memcpy(m->wbuf + m->wlen, p, n);
	m->wlen += n;
	return 0;
}

/* milter_conn_pump - move queued packets to the write buffer up to the first that
 * expects a reply (stop and wait), then write */
void milter_conn_pump(struct milter_conn *m)
{
	if (m->fd < 0)
		return;
	while (!m->awaiting && m->qhead != NULL) {
		struct pkt *p = m->qhead;
		if (conn_wappend(m, p->data, p->len) < 0) {
			milter_conn_fail(m, "out of memory");
			return;
		}
		m->qhead = p->next;
		if (m->qhead == NULL)
			m->qtail = NULL;
		m->qbytes -= p->len;
		if (p->reply) {
			m->awaiting = 1;
			m->await_cmd = p->cmd;
			m->await_gen = p->gen;
			m->progress = 0;
		}
		free(p);
	}
	if (conn_flush(m) == 0)
		conn_timer(m);
}

/* milter_conn_queue - one encoded packet (in sb) onto m's queue; -1 if m failed */
int milter_conn_queue(struct milter_conn *m, struct strbuf *sb, int cmd, int reply)
{
	size_t limit = m->s->ch->max_body + MILTER_PKT_MAX;
	if (m->qbytes + (m->wlen - m->woff) + sb->len > limit) {
		strbuf_reset(sb);
		milter_conn_fail(m, "output backlog over the limit");
		return -1;
	}
	struct pkt *p = malloc(sizeof(*p) + sb->len);
	if (p == NULL) {
		strbuf_reset(sb);
		milter_conn_fail(m, "out of memory");
		return -1;
	}
	p->next = NULL;
	p->cmd = cmd;
	p->reply = reply;
	p->gen = m->s->gen;
	p->len = sb->len;
	memcpy(p->data, sb->s, sb->len);
	strbuf_reset(sb);
	if (m->qtail)
		m->qtail->next = p;
	else
		m->qhead = p;
	m->qtail = p;
	m->qbytes += p->len;
	return 0;
}

/* milter_conn_drop_queued - forget queued packets of this transaction (all, or of one command) */
void milter_conn_drop_queued(struct milter_conn *m, int only_cmd)
{
	struct pkt **pp = &m->qhead;
	m->qtail = NULL;
	while (*pp != NULL) {
		struct pkt *p = *pp;
		int drop = p->gen == m->s->gen && p->cmd != SMFIC_ABORT && p->cmd != SMFIC_QUIT &&
			   (only_cmd == 0 || p->cmd == only_cmd);
		if (drop) {
			*pp = p->next;
			m->qbytes -= p->len;
			free(p);
		} else {
			m->qtail = p;
			pp = &p->next;
		}
	}
}

/* milter_conn_quit - best effort QUIT, then close: m's part in the connection is over */
void milter_conn_quit(struct milter_conn *m, enum mstate st)
{
	if (m->fd >= 0 && (m->st == M_READY || m->st == M_NEGOTIATING)) {
		struct strbuf sb;
		strbuf_init(&sb);
		milter_codec_enc_cmd(&sb, SMFIC_QUIT);
		if (m->woff == m->wlen) /* never in the middle of a packet */
			(void)send(m->fd, sb.s, sb.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		strbuf_free(&sb);
	}
	milter_conn_close(m);
	m->st = st;
}

/* milter_conn_fail - the milter is down, timed out or broke the protocol */
void milter_conn_fail(struct milter_conn *m, const char *why)
{
	if (m->st == M_FAILED || m->st == M_DONE)
		return;
	struct milter_sess *s = m->s;
	struct log_line l;
	milter_conn_log(&l, LOG_LEVEL_WARN, "milter_error", m);
	log_kv(&l, "reason", why);
	log_kv(&l, "action", milter_default_str(s->ch->on_error));
	log_end(&l);
	milter_conn_close(m);
	m->st = M_FAILED;
	m->in_txn = 0;
	milter_sess_kick(s);
}

/* conn_connected - the socket is up: negotiate */
static void conn_connected(struct milter_conn *m)
{
	struct strbuf sb;
	strbuf_init(&sb);
	m->st = M_NEGOTIATING;
	event_free(m->ev_wr);
	m->ev_wr = event_new(m->s->ch->base, m->fd, EV_WRITE | EV_PERSIST, on_write, m);
	m->ev_rd = event_new(m->s->ch->base, m->fd, EV_READ | EV_PERSIST, on_read, m);
	if (m->ev_wr == NULL || m->ev_rd == NULL) {
		milter_conn_fail(m, "out of memory");
		return;
	}
	event_add(m->ev_rd, NULL);
	milter_codec_enc_optneg(&sb, MILTER_PROTO_VERSION, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO);
	int rc = milter_conn_queue(m, &sb, SMFIC_OPTNEG, 1);
	strbuf_free(&sb);
	if (rc == 0)
		milter_conn_pump(m);
}

/* on_connect - the non-blocking connect finished */
static void on_connect(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	(void)what;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr != 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(soerr));
		milter_conn_fail(m, why);
		return;
	}
	conn_connected(m);
}

/* milter_conn_start - open the socket and start connecting */
void milter_conn_start(struct milter_conn *m)
{
	struct event_base *base = m->s->ch->base;
	m->fd = socket(m->addr->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (m->fd < 0) {
		milter_conn_fail(m, strerror(errno));
		return;
	}
	m->ev_tm = event_new(base, -1, 0, on_timer, m);
	m->ev_wr = event_new(base, m->fd, EV_WRITE, on_connect, m);
	if (m->ev_tm == NULL || m->ev_wr == NULL) {
		milter_conn_fail(m, "out of memory");
		return;
	}
	m->st = M_CONNECTING;
	if (connect(m->fd, (const struct sockaddr *)&m->addr->ss, m->addr->sslen) == 0) {
		conn_connected(m);
		return;
	}
	if (errno != EINPROGRESS) {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		milter_conn_fail(m, why);
		return;
	}
	event_add(m->ev_wr, NULL);
	conn_timer(m);
}

/* on_timer - what m waited for did not come in time */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;
	char why[96];
	(void)fd;
	(void)what;
	if (m->st == M_CONNECTING)
		snprintf(why, sizeof(why), "connect timeout");
	else if (m->awaiting)
		snprintf(why, sizeof(why), "timeout waiting for the reply to %s",
			 milter_codec_cmd_str(m->await_cmd));
	else
		snprintf(why, sizeof(why), "write timeout");
	milter_conn_fail(m, why);
}

/* on_write - the socket can take more */
static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;
	(void)fd;
	(void)what;
	(void)conn_flush(m);
}

static void conn_packet(struct milter_conn *m, const struct milter_pkt *pkt);

/* on_read - replies from the milter */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;
	(void)what;
	for (int rounds = 0; rounds < 16 && m->fd >= 0; rounds++) {
		if (m->incap - m->inlen < 4096 && m->incap < MILTER_PKT_MAX + 4) {
			/* grow, but only as far as one packet of the largest size */
			size_t want = m->incap ? m->incap * 2 : IN_START;
			if (m->inlen >= 4) {
				size_t plen = (size_t)m->in[0] << 24 | (size_t)m->in[1] << 16 |
					      (size_t)m->in[2] << 8 | m->in[3];
				if (plen <= MILTER_PKT_MAX && plen + 4 > want)
					want = plen + 4;
			}
			if (want > MILTER_PKT_MAX + 4)
				want = MILTER_PKT_MAX + 4;
			unsigned char *nb = realloc(m->in, want);
			if (nb == NULL) {
				milter_conn_fail(m, "out of memory");
				return;
			}
			m->in = nb;
			m->incap = want;
		}
		if (m->incap == m->inlen) {
			milter_conn_fail(m, "input buffer full");
			return;
		}
		ssize_t r = recv(fd, m->in + m->inlen, m->incap - m->inlen, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				milter_conn_fail(m, strerror(errno));
			return;
		}
		if (r == 0) {
			milter_conn_fail(m, "connection closed by the milter");
			return;
		}
		m->inlen += (size_t)r;
		size_t off = 0;
		while (m->fd >= 0) {
			struct milter_pkt pkt;
			char err[160];
			ssize_t k = milter_codec_packet_next(m->in + off, m->inlen - off, MILTER_PKT_MAX,
							     &pkt, err, sizeof(err));
			if (k < 0) {
				milter_conn_fail(m, err);
				return;
			}
			if (k == 0)
				break;
			conn_packet(m, &pkt);
			off += (size_t)k;
		}
		if (m->fd < 0)
			return;
		memmove(m->in, m->in + off, m->inlen - off);
		m->inlen -= off;
		if (m->inlen == 0 && m->incap > 65536) { /* a big reply is done: shrink */
			free(m->in);
			m->in = NULL;
			m->incap = 0;
		}
	}
}

/* conn_mods_push - one modification from m (owned strings move in) */
static int conn_mods_push(struct milter_conn *m, enum milter_mod_kind k, struct milter_reply *r)
{
	if (m->nmods == m->capmods) {
		size_t cap = m->capmods ? m->capmods * 2 : 8;
		if (cap > 100000)
			return -1;
		struct milter_mod *nv = realloc(m->mods, cap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		m->mods = nv;
		m->capmods = cap;
	}
	struct milter_mod *mod = &m->mods[m->nmods++];
	memset(mod, 0, sizeof(*mod));
	mod->kind = k;
	mod->index = r->index;
	mod->name = r->name;
	mod->value = r->value;
	mod->args = r->args;
	mod->milter = m->addr->text;
	r->name = r->value = r->args = NULL;
	return 0;
}

/* milter_conn_mods_clear - forget m's modifications and replaced body */
void milter_conn_mods_clear(struct milter_conn *m)
{
	for (size_t i = 0; i < m->nmods; i++) {
		free(m->mods[i].name);
		free(m->mods[i].value);
		free(m->mods[i].args);
	}
	free(m->mods);
	m->mods = NULL;
	m->nmods = m->capmods = 0;
	strbuf_free(&m->body);
	m->body_replaced = m->body_cr = m->body_over = 0;
}

/* conn_body_put - append to the replaced body, growing within the cap; -1 over */
static int conn_body_put(struct milter_conn *m, const char *p, size_t n)
{
	struct strbuf *b = &m->body;
	if (b->len + n > m->s->ch->max_body)
		return -1;
	if (b->cap - b->len < n + 1) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->len < n + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (ns == NULL)
			return -1;
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = 0;
	return 0;
}

/* conn_body_chunk - one SMFIR_REPLBODY chunk; line ends become CRLF */
static void conn_body_chunk(struct milter_conn *m, const unsigned char *p, size_t n)
{
	if (m->body_over)
		return;
	m->body_replaced = 1;
	int bad = 0;
	size_t i = 0, run = 0;
	for (; i < n && !bad; i++) {
		char c = (char)p[i];
		if (m->body_cr) {
			m->body_cr = 0;
			bad |= conn_body_put(m, "\r\n", 2) < 0;
			if (c == '\n')
				continue;
		}
		if (c == '\r') {
			m->body_cr = 1;
		} else if (c == '\n') {
			bad |= conn_body_put(m, "\r\n", 2) < 0;
		} else {
			/* copy the run of ordinary octets at once */
			run = i;
			while (i + 1 < n && p[i + 1] != '\r' && p[i + 1] != '\n')
				i++;
			bad |= conn_body_put(m, (const char *)p + run, i - run + 1) < 0;
		}
	}
	if (bad) {
		m->body_over = 1;
		strbuf_free(&m->body);
	}
}

/* milter_conn_body_end - a pending CR, and a final CRLF */
void milter_conn_body_end(struct milter_conn *m)
{
	if (!m->body_replaced || m->body_over)
		return;
	int bad = 0;
	if (m->body_cr) {
		m->body_cr = 0;
		bad = conn_body_put(m, "\r\n", 2) < 0;
	}
	if (!bad && m->body.len > 0 &&
	    (m->body.len < 2 || memcmp(m->body.s + m->body.len - 2, "\r\n", 2) != 0))
		bad = conn_body_put(m, "\r\n", 2) < 0;
	if (bad) {
		m->body_over = 1;
		strbuf_free(&m->body);
	}
}

/* conn_packet - one packet from milter m */
static void conn_packet(struct milter_conn *m, const struct milter_pkt *pkt)
{
	char err[200];
	if (m->st == M_NEGOTIATING) {
		if (milter_codec_optneg_decode(pkt, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &m->neg, err,
					       sizeof(err)) < 0) {
			milter_conn_fail(m, err);
			return;
		}
		m->awaiting = 0;
		m->st = M_READY;
		milter_conn_pump(m);
		milter_sess_kick(m->s);
		return;
	}
	if (m->st != M_READY || !m->awaiting) {
		snprintf(err, sizeof(err), "unexpected packet 0x%02x with no command outstanding",
			 pkt->cmd);
		milter_conn_fail(m, err);
		return;
	}
	struct milter_reply r;
	int cmd = m->await_cmd;
	unsigned gen = m->await_gen;
	if (milter_codec_reply_decode(pkt, cmd, &m->neg, &r, err, sizeof(err)) < 0) {
		milter_conn_fail(m, err);
		return;
	}
	int current = gen == m->s->gen;
	switch (r.kind) {
	case MILTER_REPLY_PROGRESS:
		/* still working: the timeout starts again, a bounded number of times */
		if (++m->progress > MILTER_PROGRESS_MAX) {
			milter_conn_fail(m, "too many SMFIR_PROGRESS replies");
			return;
		}
		conn_timer(m);
		break;
	case MILTER_REPLY_REPLBODY:
		if (current)
			conn_body_chunk(m, r.body, r.bodylen);
		break;
	case MILTER_REPLY_ADDHEADER:
	case MILTER_REPLY_INSHEADER:
	case MILTER_REPLY_CHGHEADER:
	case MILTER_REPLY_CHGFROM:
	case MILTER_REPLY_ADDRCPT:
	case MILTER_REPLY_DELRCPT:
	case MILTER_REPLY_QUARANTINE: {
		static const enum milter_mod_kind map[] = {
			[MILTER_REPLY_ADDHEADER] = MILTER_MOD_ADDHEADER,
			[MILTER_REPLY_INSHEADER] = MILTER_MOD_INSHEADER,
			[MILTER_REPLY_CHGHEADER] = MILTER_MOD_CHGHEADER,
			[MILTER_REPLY_CHGFROM] = MILTER_MOD_CHGFROM,
			[MILTER_REPLY_ADDRCPT] = MILTER_MOD_ADDRCPT,
			[MILTER_REPLY_DELRCPT] = MILTER_MOD_DELRCPT,
			[MILTER_REPLY_QUARANTINE] = MILTER_MOD_QUARANTINE,
		};
		if (current && conn_mods_push(m, map[r.kind], &r) < 0) {
			milter_codec_reply_clear(&r);
			milter_conn_fail(m, "too many modifications");
			return;
		}
		break;
	}
	default:
		m->awaiting = 0;
		milter_sess_final(m, cmd, gen, &r);
		milter_codec_reply_clear(&r);
		if (m->fd >= 0)
			milter_conn_pump(m);
		return;
	}
	milter_codec_reply_clear(&r);
}
