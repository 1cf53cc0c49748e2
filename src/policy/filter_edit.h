/*
 * filter_edit - the header section of a stored message as a list of
 * fields that policy edits (milter SMFIR_ADDHEADER / INSHEADER /
 * CHGHEADER, removal of forged Authentication-Results) change before the
 * filter writes the message again (src/policy/filter.c).
 *
 * The section is the message's first octets (our Received field first):
 * fields up to the empty line, or up to the first line that is neither a
 * field nor a continuation (the rest is body), or the end of the content.
 * A field is its name, the colon, the value and every continuation line,
 * each CRLF included; a bare LF ends a line too (never written by us:
 * the session refuses bare LF, but a stored message is still untrusted).
 *
 * Exports:
 *   filter_edit_init/free        an empty list / release it
 *   filter_edit_parse            split a header section into fields
 *   filter_edit_add              append a field (ADDHEADER)
 *   filter_edit_insert           insert before the idx-th field (INSHEADER)
 *   filter_edit_change           change / delete the idx-th field of a name
 *   filter_edit_drop_ours        drop received fields claiming our A-R id
 *   filter_edit_write            the fields as text, CRLF line ends
 *   filter_edit_name_ok          a header field name we will write
 * Trusts: nothing: the section comes from the network and names and values
 * from milters; every length is checked, names are checked (RFC 5322
 * 3.6.8 ftext), values may not hold CR or LF except as CRLF followed by
 * white space (folding), so no edit can end the header section or inject
 * a field. Edits that fail these checks are refused (-1) and not applied.
 * Implements: RFC 5322 2.2 (fields, folding), 3.6.8 (field names); the
 * milter header operations as Sendmail and Postfix apply them (indexes
 * count the fields the milter saw, our Received field included).
 */
#ifndef TERN_POLICY_FILTER_EDIT_H
#define TERN_POLICY_FILTER_EDIT_H

#include <stddef.h>

#include "core/buf.h"

#define FILTER_EDIT_HDR_MAX (1024 * 1024) /* header section octets read */
#define FILTER_EDIT_FIELDS_MAX 10000      /* fields, original and added */

enum filter_field_origin {
	FILTER_FIELD_RECEIVED, /* in the message as received */
	FILTER_FIELD_ADDED,    /* added or rewritten by a milter */
};

struct filter_field {
	char *text;   /* the whole field, CRLF-ended (owned) */
	size_t len;
	size_t name_len;
	enum filter_field_origin origin;
};

struct filter_edit {
	struct filter_field *v;
	size_t n, cap;
	int changed; /* any edit applied since parse */
};

void filter_edit_init(struct filter_edit *e);
void filter_edit_free(struct filter_edit *e);
/* filter_edit_parse - the fields at the start of p[0..n); at_end: p holds
 * the whole content. *body_off = where the rest starts (the empty line's
 * CRLF, a non-field line, or n). 0, or -1 when the section does not end
 * within p (and !at_end) or has more than FILTER_EDIT_FIELDS_MAX fields */
int filter_edit_parse(struct filter_edit *e, const char *p, size_t n, int at_end, size_t *body_off);
/* filter_edit_add - "name: value" after the last field (value: what
 * follows the colon and one space; folding as CRLF + white space) */
int filter_edit_add(struct filter_edit *e, const char *name, const char *value);
/* filter_edit_insert - before field idx (0: first); past the end: appended */
int filter_edit_insert(struct filter_edit *e, size_t idx, const char *name, const char *value);
/* filter_edit_change - the idx-th (1-based) field named name (ASCII case
 * insensitive): replaced by "name: value", or removed when value is "";
 * no such field: a non-empty value is appended (Sendmail's rule), an
 * empty one changes nothing (returns 0) */
int filter_edit_change(struct filter_edit *e, size_t idx, const char *name, const char *value);
/* filter_edit_drop_ours - remove received Authentication-Results fields
 * that claim authserv_id (authres_field_is_ours); returns how many */
size_t filter_edit_drop_ours(struct filter_edit *e, const char *authserv_id);
/* filter_edit_write - append every field to out */
void filter_edit_write(const struct filter_edit *e, struct strbuf *out);
/* filter_edit_name_ok - printable ASCII but ':' and space, 1 to 997 octets */
int filter_edit_name_ok(const char *name);

#endif
