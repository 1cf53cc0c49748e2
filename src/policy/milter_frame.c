/*
 * milter_frame - a stored message as milter header/EOH/body events.
 * See milter_frame.h.
 *
 * Exports: milter_frame_init, milter_frame_free, milter_frame_feed,
 * milter_frame_finish.
 * Trusts nothing: octet-at-a-time state machine over two fixed buffers
 * (MILTER_FIELD_MAX for a field, MILTER_CHUNK_MAX for the body chunk);
 * nothing grows with the input.
 * Implements: RFC 5322 2.2, 2.2.3, 3.5 as described in the header.
 */
#include "policy/milter_frame.h"

#include <stdlib.h>
#include <string.h>

#include "policy/milter_codec.h"

enum frame_state {
	FRAME_LINE_START, /* at the start of a header-section line */
	FRAME_CR,         /* a CR at the start of a line: an empty line if LF follows */
	FRAME_NAME,       /* in a field name */
	FRAME_NAME_WSP,   /* white space after a name, before the colon */
	FRAME_VALUE,      /* in a value line (first or continuation) */
	FRAME_BODY,
	FRAME_DONE,
};

/* milter_frame_init - allocate the two buffers */
int milter_frame_init(struct milter_frame *f, const struct milter_frame_ops *ops, void *arg)
{
	memset(f, 0, sizeof(*f));
	f->ops = ops;
	f->arg = arg;
	f->state = FRAME_LINE_START;
	f->field = malloc(MILTER_FIELD_MAX);
	f->chunk = malloc(MILTER_CHUNK_MAX);
	if (f->field == NULL || f->chunk == NULL) {
		milter_frame_free(f);
		return -1;
	}
	return 0;
}

/* milter_frame_free - release the buffers */
void milter_frame_free(struct milter_frame *f)
{
	free(f->field);
	free(f->chunk);
	f->field = f->chunk = NULL;
	f->state = FRAME_DONE;
}

/* body_add - body octets into the chunk, handing out full chunks */
static void body_add(struct milter_frame *f, const char *p, size_t n)
{
	while (n > 0) {
		size_t k = MILTER_CHUNK_MAX - f->clen;
		if (k > n)
			k = n;
		memcpy(f->chunk + f->clen, p, k);
		f->clen += k;
		p += k;
		n -= k;
		if (f->clen == MILTER_CHUNK_MAX) {
			f->ops->body(f->arg, f->chunk, f->clen);
			f->clen = 0;
		}
	}
}

/* field_add - one octet of the current field, dropped beyond the cap */
static void field_add(struct milter_frame *f, char c)
{
	if (f->flen < MILTER_FIELD_MAX)
		f->field[f->flen++] = c;
}

/* field_flush - hand out the pending field */
static void field_flush(struct milter_frame *f)
{
	if (!f->have_field)
		return;
	size_t nlen = f->colon;
	while (nlen > 0 && (f->field[nlen - 1] == ' ' || f->field[nlen - 1] == '\t'))
		nlen--;
	f->ops->header(f->arg, f->field, nlen, f->field + f->colon + 1, f->flen - f->colon - 1);
	f->have_field = 0;
	f->flen = 0;
}

/* eoh - end of the header section (once) */
static void eoh(struct milter_frame *f)
{
	field_flush(f);
	if (!f->eoh_sent) {
		f->eoh_sent = 1;
		f->ops->eoh(f->arg);
	}
}

/* to_body - the line being read is not a field: it starts the body */
static void to_body(struct milter_frame *f)
{
	/* the pending field was flushed at the start of this line; field[]
	 * now holds this line's octets so far */
	size_t n = f->flen;
	f->flen = 0;
	f->have_field = 0;
	eoh(f);
	body_add(f, f->field, n);
	f->state = FRAME_BODY;
}

/* is_ftext - RFC 5322 2.2 field name octet */
static int is_ftext(unsigned char c)
{
	return c >= 33 && c <= 126 && c != ':';
}

/* header_octet - one octet in the header section */
static void header_octet(struct milter_frame *f, char c)
{
	switch (f->state) {
	case FRAME_LINE_START:
		if ((c == ' ' || c == '\t') && f->have_field) {
			field_add(f, '\n');
			field_add(f, c);
			f->state = FRAME_VALUE;
			return;
		}
		field_flush(f);
		if (c == '\r') {
			f->state = FRAME_CR;
		} else if (c == '\n') {
			eoh(f);
			f->state = FRAME_BODY;
		} else if (is_ftext((unsigned char)c)) {
			f->flen = 0;
			field_add(f, c);
			f->state = FRAME_NAME;
		} else {
			to_body(f);
			body_add(f, &c, 1);
		}
		return;
	case FRAME_CR:
		eoh(f);
		f->state = FRAME_BODY;
		if (c != '\n') {
			body_add(f, "\r", 1);
			body_add(f, &c, 1);
		}
		return;
	case FRAME_NAME:
		if (c == ':') {
			f->colon = f->flen;
			field_add(f, c);
			f->state = FRAME_VALUE;
		} else if (c == ' ' || c == '\t') {
			field_add(f, c);
			f->state = FRAME_NAME_WSP;
		} else if (is_ftext((unsigned char)c) && f->flen < MILTER_NAME_MAX) {
			field_add(f, c);
		} else {
			to_body(f);
			body_add(f, &c, 1);
		}
		return;
	case FRAME_NAME_WSP:
		if (c == ':') {
			f->colon = f->flen;
			field_add(f, c);
			f->state = FRAME_VALUE;
		} else if ((c == ' ' || c == '\t') && f->flen < MILTER_NAME_MAX + 64) {
			field_add(f, c);
		} else {
			to_body(f);
			body_add(f, &c, 1);
		}
		return;
	case FRAME_VALUE:
		if (f->cr) {
			f->cr = 0;
			if (c == '\n') {
				f->have_field = 1;
				f->state = FRAME_LINE_START;
				return;
			}
			field_add(f, '\r');
		}
		if (c == '\r') {
			f->cr = 1;
		} else if (c == '\n') {
			f->have_field = 1;
			f->state = FRAME_LINE_START;
		} else {
			field_add(f, c);
		}
		return;
	default:
		return;
	}
}

/* milter_frame_feed - message octets */
void milter_frame_feed(struct milter_frame *f, const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (f->state == FRAME_DONE)
			return;
		if (f->state == FRAME_BODY) {
			body_add(f, p + i, n - i);
			return;
		}
		header_octet(f, p[i++]);
	}
}

/* milter_frame_finish - end of message */
void milter_frame_finish(struct milter_frame *f)
{
	switch (f->state) {
	case FRAME_NAME:
	case FRAME_NAME_WSP:
		to_body(f);
		break;
	case FRAME_VALUE:
		f->cr = 0; /* a CR without its LF at the very end is dropped */
		f->have_field = 1;
		break;
	case FRAME_CR:
		eoh(f);
		body_add(f, "\r", 1);
		break;
	default:
		break;
	}
	if (f->state != FRAME_DONE) {
		eoh(f);
		if (f->clen > 0)
			f->ops->body(f->arg, f->chunk, f->clen);
		f->clen = 0;
	}
	f->state = FRAME_DONE;
}
