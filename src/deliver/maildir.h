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

int maildir_deliver(const char *mail_dir, const char *hostname, const char *account, int fd, off_t off,
		    off_t len, const char *return_path, char *err, size_t errlen);

#endif
