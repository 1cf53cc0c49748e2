/*
 * filter_edit - a stored message's header section as an editable list of
 * fields (milter header edits, forged Authentication-Results removal).
 * See filter_edit.h.
 *
 * Exports (one line each; prototypes in filter_edit.h):
 *   filter_edit_init/free        an empty list / release it
 *   filter_edit_parse            split a header section into fields
 *   filter_edit_add              append a field
 *   filter_edit_insert           insert a field before the idx-th
 *   filter_edit_change           replace or delete the idx-th field of a name
 *   filter_edit_drop_ours        drop received A-R fields claiming our id
 *   filter_edit_write            the fields as text
 *   filter_edit_name_ok          a field name we will write
 * Trusts: nothing (see filter_edit.h): the section is network input and
 * every edit comes from a milter; checks happen before anything changes.
 * Implements: RFC 5322 2.2 and 3.6.8; milter header edit semantics
 * (Sendmail's smfi_addheader / smfi_insheader / smfi_chgheader).
 */
#include "policy/filter_edit.h"

#include <stdlib.h>
#include <string.h>

#include "core/str.h"
#include "policy/authres.h"

#define NAME_MAX_LEN 997

/* filter_edit_init - an empty list */
void filter_edit_init(struct filter_edit *e)
{
	memset(e, 0, sizeof(*e));
}

/* filter_edit_free - release every field */
void filter_edit_free(struct filter_edit *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].text);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

/* filter_edit_name_ok - RFC 5322 3.6.8 ftext: 33..126 except ':' */
int filter_edit_name_ok(const char *name)
{
	size_t n = 0;
	for (; name[n]; n++) {
		unsigned char c = (unsigned char)name[n];
		if (c < 33 || c > 126 || c == ':' || n >= NAME_MAX_LEN)
			return 0;
	}
	return n > 0;
}

/* value_ok - no NUL (a C string), no control but HT, CR only as CRLF and
 * LF only after CR, each line break followed by white space (folding) */
static int value_ok(const char *v)
{
	for (size_t i = 0; v[i]; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '\r') {
			if (v[i + 1] != '\n' || (v[i + 2] != ' ' && v[i + 2] != '\t'))
				return 0;
			i++;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

/* list_insert - room for one more field at position at; -1 when full */
static int list_insert(struct filter_edit *e, size_t at, char *text, size_t len, size_t name_len,
		       enum filter_field_origin origin)
{
	if (e->n >= FILTER_EDIT_FIELDS_MAX)
		return -1;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 32;
		struct filter_field *v = realloc(e->v, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		e->v = v;
		e->cap = cap;
	}
	if (at > e->n)
		at = e->n;
	memmove(&e->v[at + 1], &e->v[at], (e->n - at) * sizeof(e->v[0]));
	e->v[at] = (struct filter_field){text, len, name_len, origin};
	e->n++;
	return 0;
}

/* field_make - "name: value\r\n" (the value is what follows the colon
 * and one space, as the milter module hands it over); NULL when refused */
static char *field_make(const char *name, const char *value, size_t *len)
{
	if (!filter_edit_name_ok(name) || !value_ok(value))
		return NULL;
	size_t nl = strlen(name), vl = strlen(value);
	int sp = 1;
	char *t = malloc(nl + 1 + (size_t)sp + vl + 3);
	if (t == NULL)
		return NULL;
	memcpy(t, name, nl);
	size_t w = nl;
	t[w++] = ':';
	if (sp)
		t[w++] = ' ';
	memcpy(t + w, value, vl);
	w += vl;
	memcpy(t + w, "\r\n", 3);
	*len = w + 2;
	return t;
}

/* line_end - index just past the line starting at i (its LF), or n */
static size_t line_end(const char *p, size_t n, size_t i)
{
	const char *lf = memchr(p + i, '\n', n - i);
	return lf ? (size_t)(lf - p) + 1 : n;
}

/* field_name_len - length of the name before ':' on a field's first line,
 * 0 if the line is not a field ("name:" with ftext only; RFC 5322 obs-
 * white space before the colon is tolerated) */
static size_t field_name_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 && p[i] != ':')
		i++;
	size_t name = i;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return (name > 0 && i < n && p[i] == ':') ? name : 0;
}

/* filter_edit_parse - see filter_edit.h */
int filter_edit_parse(struct filter_edit *e, const char *p, size_t n, int at_end, size_t *body_off)
{
	size_t i = 0;
	*body_off = 0;
	while (i < n) {
		if (p[i] == '\n' || (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')) {
			*body_off = i; /* the empty line */
			return 0;
		}
		if (p[i] == '\r' && i + 1 == n && !at_end)
			return -1; /* the empty line may be cut here */
		size_t name = field_name_len(p + i, line_end(p, n, i) - i);
		if (name == 0) {
			/* a line that is no field: the body starts here */
			*body_off = i;
			return 0;
		}
		size_t j = line_end(p, n, i);
		while (j < n && (p[j] == ' ' || p[j] == '\t'))
			j = line_end(p, n, j);
		if (j == n && !at_end)
			return -1; /* the field (or the section) may go on */
		char *t = malloc(j - i + 1);
		if (t == NULL)
			return -1;
		memcpy(t, p + i, j - i);
		t[j - i] = '\0';
		if (list_insert(e, e->n, t, j - i, name, FILTER_FIELD_RECEIVED) < 0) {
			free(t);
			return -1;
		}
		i = j;
	}
	if (!at_end)
		return -1;
	*body_off = n;
	return 0;
}

/* filter_edit_add - ADDHEADER: after the last field */
int filter_edit_add(struct filter_edit *e, const char *name, const char *value)
{
	return filter_edit_insert(e, e->n, name, value);
}

/* filter_edit_insert - INSHEADER: before the idx-th field */
int filter_edit_insert(struct filter_edit *e, size_t idx, const char *name, const char *value)
{
	size_t len;
	char *t = field_make(name, value, &len);
	if (t == NULL)
		return -1;
	if (list_insert(e, idx, t, len, strlen(name), FILTER_FIELD_ADDED) < 0) {
		free(t);
		return -1;
	}
	e->changed = 1;
	return 0;
}

/* filter_edit_change - CHGHEADER: the idx-th field of that name */
int filter_edit_change(struct filter_edit *e, size_t idx, const char *name, const char *value)
{
	if (!filter_edit_name_ok(name) || !value_ok(value))
		return -1;
	size_t nl = strlen(name), seen = 0;
	if (idx == 0)
		idx = 1; /* Sendmail counts from 1; 0 is taken as the first */
	for (size_t i = 0; i < e->n; i++) {
		struct filter_field *f = &e->v[i];
		if (f->name_len != nl || str_ncasecmp_ascii(f->text, name, nl) != 0 || ++seen < idx)
			continue;
		if (value[0] == '\0') {
			free(f->text);
			memmove(&e->v[i], &e->v[i + 1], (e->n - i - 1) * sizeof(e->v[0]));
			e->n--;
			e->changed = 1;
			return 0;
		}
		size_t len;
		char *t = field_make(name, value, &len);
		if (t == NULL)
			return -1;
		free(f->text);
		f->text = t;
		f->len = len;
		f->name_len = nl;
		f->origin = FILTER_FIELD_ADDED;
		e->changed = 1;
		return 0;
	}
	if (value[0] == '\0')
		return 0;
	return filter_edit_add(e, name, value);
}

/* filter_edit_drop_ours - received A-R fields claiming our authserv-id */
size_t filter_edit_drop_ours(struct filter_edit *e, const char *authserv_id)
{
	size_t dropped = 0, k = 0;
	for (size_t i = 0; i < e->n; i++) {
		struct filter_field *f = &e->v[i];
		if (f->origin == FILTER_FIELD_RECEIVED && authres_field_is_ours(f->text, f->len, authserv_id)) {
			free(f->text);
			dropped++;
			continue;
		}
		e->v[k++] = *f;
	}
	e->n = k;
	if (dropped)
		e->changed = 1;
	return dropped;
}

/* filter_edit_write - every field, each CRLF-ended (a bare LF at a field's
 * end, possible only in received text, is written as CRLF) */
void filter_edit_write(const struct filter_edit *e, struct strbuf *out)
{
	for (size_t i = 0; i < e->n; i++) {
		const struct filter_field *f = &e->v[i];
		const char *t = f->text;
		size_t n = f->len;
		for (size_t k = 0; k < n; k++) {
			if (t[k] == '\n' && (k == 0 || t[k - 1] != '\r'))
				strbuf_addc(out, '\r');
			strbuf_addc(out, t[k]);
		}
		if (n == 0 || t[n - 1] != '\n')
			strbuf_add(out, "\r\n", 2);
	}
}
