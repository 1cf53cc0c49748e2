/*
 * milter_frame - cut a stored message (CRLF lines, any chunking) into the
 * events the milter protocol sends: one header field at a time (name and
 * value), end of headers, then body chunks of at most MILTER_CHUNK_MAX
 * octets. Pure: no I/O, unit-tested and fuzzed.
 *
 * A header field is a line "name:" (name is RFC 5322 ftext, white space
 * before the colon tolerated) plus the lines after it that start with a
 * space or tab. The value is everything after the colon with the final
 * CRLF removed and each inner CRLF given as a bare LF, the form Sendmail
 * and Postfix send (a DKIM milter rebuilds the CRLFs, so signatures over
 * folded fields stay right). The header section ends at an empty line
 * (which belongs to neither part) or at the first line that is not a
 * field or a continuation (which starts the body, as in Postfix).
 *
 * Exports:
 *   milter_frame_init / _free   one framer per message
 *   milter_frame_feed           message bytes in any chunking
 *   milter_frame_finish         end of message: flush what is pending
 * Trusts nothing: a field longer than MILTER_FIELD_MAX is cut (the rest
 * of it is dropped, the message itself is untouched), names longer than
 * MILTER_NAME_MAX end the header section; memory is two fixed buffers.
 * Implements: RFC 5322 2.2 (header fields), 2.2.3 (folding), 3.5 (the
 * empty line between header and body).
 */
#ifndef TERN_POLICY_MILTER_FRAME_H
#define TERN_POLICY_MILTER_FRAME_H

#include <stddef.h>

#define MILTER_FIELD_MAX 65536 /* octets of one header field kept for a milter */

struct milter_frame_ops {
	/* one field: name (no colon, trailing white space removed), value as above */
	void (*header)(void *arg, const char *name, size_t nlen, const char *value, size_t vlen);
	void (*eoh)(void *arg);
	/* body octets as stored, 1..MILTER_CHUNK_MAX per call */
	void (*body)(void *arg, const char *p, size_t n);
};

struct milter_frame {
	const struct milter_frame_ops *ops;
	void *arg;
	int state;
	int cr;          /* a CR seen, its LF not yet */
	int have_field;  /* field[] holds a complete field that may be continued */
	int eoh_sent;
	char *field;     /* name ':' value of the field being read */
	size_t flen;
	size_t colon;    /* offset of ':' in field */
	char *chunk;     /* body octets not yet handed out */
	size_t clen;
};

/* milter_frame_init - 0, or -1 when out of memory */
int milter_frame_init(struct milter_frame *f, const struct milter_frame_ops *ops, void *arg);
void milter_frame_free(struct milter_frame *f);
void milter_frame_feed(struct milter_frame *f, const char *p, size_t n);
/* milter_frame_finish - emit the pending field, end of headers if not yet,
 * and the last body chunk; later feeds are ignored */
void milter_frame_finish(struct milter_frame *f);

#endif
