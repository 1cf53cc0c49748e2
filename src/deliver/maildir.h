/*
 * maildir - local delivery into a Maildir (cr.yp.to/proto/maildir.html), the
 * layout Dovecot reads with mail_location = maildir:<mail_dir>/%d/%n.
 *
 * The message is written to tmp/ under a unique name, fsync'd, linked into
 * new/ and new/ fsync'd; only then is delivery reported done. Return-Path
 * and Delivered-To are prepended and CRLF line ends become LF, as Dovecot
 * and Postfix's local(8) write them.
 *
 * Exports:
 *   maildir_deliver   deliver content[off, off+len) of fd to the mailbox of
 *                     account "local@domain" under mail_dir; 0 delivered,
 *                     -1 temporary failure (reason in err: disk full,
 *                     permissions...), never partial
 * Trusts: the account name came from users_file; it is still checked so
 * that no path component can escape mail_dir ('/', "..", leading '.').
 */
#ifndef TERN_DELIVER_MAILDIR_H
#define TERN_DELIVER_MAILDIR_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

int maildir_deliver(const char *mail_dir, const char *hostname, const char *account, int fd, off_t off,
		    off_t len, const char *return_path, char *err, size_t errlen);

/*
 * maildir_deliver_once - the same with a name fixed by id (the queue id and
 * recipient index: "<arrival>.T<id>.<host>"), so a delivery repeated after a
 * crash can be recognised: with check_existing, a file of that name already
 * in new/ or cur/ means it was delivered (returns 0 without writing).
 * check_existing costs a directory scan: use it only for messages recovered
 * after a restart, where a delivery may have happened unrecorded.
 */
int maildir_deliver_once(const char *mail_dir, const char *hostname, const char *account, int fd, off_t off,
			 off_t len, const char *return_path, time_t arrival, const char *id,
			 int check_existing, char *err, size_t errlen);

#endif
