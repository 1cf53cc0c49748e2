/*
 * passwd - password hashes in Dovecot's passwd-file forms, checked and made
 * with libxcrypt.
 *
 * Accepted stored forms: a crypt(3) string ("$y$..." yescrypt, "$2b$..."
 * bcrypt, "$6$..." SHA512-CRYPT, "$5$..."), or with a Dovecot scheme prefix
 * {CRYPT}, {BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}, {MD5-CRYPT} before a
 * crypt string. {PLAIN} and other schemes are refused (never a match).
 *
 * Exports:
 *   passwd_verify     1 match, 0 no match; constant-time comparison; a NULL
 *                     hash (unknown user) still spends a yescrypt's time so
 *                     user existence cannot be timed
 *   passwd_hash_new   a new yescrypt hash for `ternctl user add`
 * Thread-safe (crypt_r); runs slow on purpose: call off the event loop.
 */
#ifndef TERN_AUTH_PASSWD_H
#define TERN_AUTH_PASSWD_H

#include <stddef.h>

int passwd_verify(const char *stored, const char *password);
int passwd_hash_new(const char *password, char *out, size_t outlen);

#endif
