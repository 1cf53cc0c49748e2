/*
 * lookup - the recipient tables: accounts (users_file) and aliases
 * (aliases_file), and the resolution of an RCPT address into the mailboxes
 * or remote addresses it stands for.
 *
 * Exports:
 *   lookup_load/lookup_free   load both files (errors "FILE:LINE: what")
 *   lookup_load_text          the same from memory buffers (fuzzers, tests)
 *   lookup_users_count        number of accounts loaded
 *   lookup_aliases_count      number of aliases loaded
 *   lookup_user               the canonical account "local@domain" for an
 *                             address (case-insensitive, subaddress
 *                             "user+tag" folded), or NULL
 *   lookup_password_hash      the stored hash of an account (for AUTH)
 *   lookup_sender_owned       may an authenticated account use an address
 *                             as MAIL FROM (itself, a subaddress, an alias
 *                             that reaches it)
 *   lookup_addr_parse         one bare "local@domain" through RFC 5321's grammar
 *   lookup_rcpt               resolve one RCPT path: local users, aliases
 *                             (recursive, loops detected), subaddresses,
 *                             remote targets; appends final recipients to
 *                             the envelope, one per mailbox
 * Trusts: the files are untrusted input and parsed strictly.
 */
#ifndef TERN_LOOKUP_LOOKUP_H
#define TERN_LOOKUP_LOOKUP_H

#include "conf/conf.h"
#include "core/buf.h"
#include "queue/envelope.h"
#include "smtp/smtp_server.h"

struct lookup_tables;

/* lookup_load - NULL paths mean empty tables; NULL return with errs on error */
struct lookup_tables *lookup_load(const char *users_file, const char *aliases_file, struct strbuf *errs);
/* lookup_load_text - the same from buffers (NULL text = empty); errors say "users"/"aliases" as FILE */
struct lookup_tables *lookup_load_text(const char *users_text, size_t ulen, const char *aliases_text,
				       size_t alen, struct strbuf *errs);
void lookup_free(struct lookup_tables *t);
size_t lookup_users_count(const struct lookup_tables *t);
size_t lookup_aliases_count(const struct lookup_tables *t);

const char *lookup_user(const struct lookup_tables *t, const char *local, const char *domain);
const char *lookup_password_hash(const struct lookup_tables *t, const char *account);

/*
 * lookup_sender_owned - 1 if the authenticated account may send as addr
 * ("local@domain", as in smtp_path.addr), else 0. Owned are: the account
 * itself (case-insensitive); its subaddresses "local+tag@domain" (RFC
 * 5233); an alias (or "alias+tag") whose expansion, followed recursively
 * through the alias table, includes the account or a subaddress of it.
 * The null sender is the caller's decision. t may be NULL (no aliases).
 */
int lookup_sender_owned(const struct lookup_tables *t, const char *account, const char *addr);

/*
 * lookup_addr_parse - one bare address (from a table or a command line)
 * through the RFC 5321 grammar, wrapped in <>. Only "local@domain" is
 * accepted: no null path, no bare postmaster. 0, or -1 with a static
 * reason in *why.
 */
int lookup_addr_parse(const char *s, size_t n, struct smtp_path *out, const char **why);

enum smtp_rcpt_verdict lookup_rcpt(const struct lookup_tables *t, const struct conf *conf,
				   const struct smtp_path *rcpt, int may_relay, struct envelope *env,
				   const char *orcpt, unsigned notify);

#endif
