/*
 * fuzz_milter - the milter reply stream decoder on hostile bytes, as a
 * milter would send them: packets cut with the length cap, the first one
 * taken as an SMFIC_OPTNEG answer, every one decoded as a reply to a
 * command chosen by the input (so modifications, SKIP and the reply text
 * checks all run), plus the message framer on the same bytes.
 * Input: octet 0 picks the context (command answered, HDR_LEADSPC,
 * actions negotiated); the rest is the stream.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "policy/milter_codec.h"
#include "policy/milter_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* f_header - a field: within the framer's limits */
static void f_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
	size_t *sum = arg;
	*sum += nlen + vlen;
	if (nlen > MILTER_NAME_MAX + 64 || vlen > MILTER_FIELD_MAX)
		__builtin_trap();
	(void)name;
	(void)value;
}

/* f_eoh - end of headers */
static void f_eoh(void *arg)
{
	(void)arg;
}

/* f_body - a chunk: never empty, never over the chunk limit */
static void f_body(void *arg, const char *p, size_t n)
{
	size_t *sum = arg;
	if (n == 0 || n > MILTER_CHUNK_MAX)
		__builtin_trap();
	*sum += n;
	(void)p;
}

static const struct milter_frame_ops ops = {f_header, f_eoh, f_body};

/* check_reply - the invariants a decoded reply promises its users */
static void check_reply(const struct milter_reply *r)
{
	if (r->text != NULL) {
		size_t n = strlen(r->text);
		if (n < 3 || n > MILTER_REPLY_MAX || (r->code < 400 || r->code > 599))
			__builtin_trap();
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)r->text[i];
			if (c == '\r' && !(i + 1 < n && r->text[i + 1] == '\n'))
				__builtin_trap();
			if (c == '\n' && !(i > 0 && r->text[i - 1] == '\r'))
				__builtin_trap();
			if ((c < 0x20 && c != '\r' && c != '\n') || c > 0x7e)
				__builtin_trap();
		}
	}
	if (r->value != NULL && r->name != NULL) {
		/* a header value: every line break is CRLF followed by white space */
		const char *v = r->value;
		for (size_t i = 0; v[i]; i++) {
			if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r' || (v[i + 1] != ' ' && v[i + 1] != '\t')))
				__builtin_trap();
			if (v[i] == '\r' && v[i + 1] != '\n')
				__builtin_trap();
		}
	}
}

/* LLVMFuzzerTestOneInput - one reply stream */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int after[] = {SMFIC_CONNECT, SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT,
				    SMFIC_DATA,    SMFIC_HEADER, SMFIC_EOH, SMFIC_BODY,
				    SMFIC_BODYEOB, SMFIC_BODYEOB, SMFIC_BODYEOB, SMFIC_ABORT};
	if (size < 1)
		return 0;
	unsigned sel = data[0];
	data++;
	size--;
	struct milter_neg neg;
	memset(&neg, 0, sizeof(neg));
	neg.version = 6;
	neg.actions = (sel & 0x80) ? MILTER_OUR_ACTIONS : (SMFIF_ADDHDRS | SMFIF_CHGBODY);
	neg.proto = (sel & 0x40) ? SMFIP_HDR_LEADSPC : 0;
	size_t off = 0;
	int first = 1;
	unsigned k = sel;
	char err[256];
	while (off < size) {
		struct milter_pkt pkt;
		ssize_t n = milter_codec_packet_next(data + off, size - off, MILTER_PKT_MAX, &pkt, err, sizeof(err));
		if (n <= 0)
			break;
		off += (size_t)n;
		if (first) {
			struct milter_neg got;
			if (milter_codec_optneg_decode(&pkt, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &got, err,
						       sizeof(err)) == 0) {
				if ((got.actions & ~MILTER_OUR_ACTIONS) || (got.proto & ~MILTER_OUR_PROTO))
					__builtin_trap();
				for (int i = 0; i < MILTER_MACRO_STAGES; i++)
					if (got.macros[i])
						(void)milter_codec_macro_wanted(got.macros[i], "{auth_type}");
				milter_codec_neg_clear(&got);
			}
			first = 0;
		}
		struct milter_reply r;
		int a = after[k++ % (sizeof(after) / sizeof(after[0]))];
		if (milter_codec_reply_decode(&pkt, a, &neg, &r, err, sizeof(err)) == 0) {
			check_reply(&r);
			milter_codec_reply_clear(&r);
		}
	}
	/* the framer on the same bytes, in two pieces */
	struct milter_frame f;
	size_t sum = 0;
	if (milter_frame_init(&f, &ops, &sum) == 0) {
		size_t half = size / 2;
		milter_frame_feed(&f, (const char *)data, half);
		milter_frame_feed(&f, (const char *)data + half, size - half);
		milter_frame_finish(&f);
		milter_frame_free(&f);
	}
	return 0;
}
