/*
 * tls_io - plain or TLS socket I/O behind one pair of calls. See tls_io.h.
 */
#include "tls/tls_io.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "tls/tls.h"

#define TLS_IO_MAX 0x7fffffff /* SSL_read/SSL_write take an int */

ssize_t tls_io_read(SSL *ssl, int fd, char *buf, size_t n, int *want_write)
{
	*want_write = 0;
	if (ssl == NULL)
		return recv(fd, buf, n, 0);
	int r = SSL_read(ssl, buf, (int)(n > TLS_IO_MAX ? TLS_IO_MAX : n));
	if (r > 0)
		return r;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		*want_write = 1;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		errno = ECONNRESET;
		return -1;
	}
}

ssize_t tls_io_write(SSL *ssl, int fd, const char *p, size_t n)
{
	if (ssl == NULL)
		return send(fd, p, n, MSG_NOSIGNAL);
	int r = SSL_write(ssl, p, (int)(n > TLS_IO_MAX ? TLS_IO_MAX : n));
	if (r > 0)
		return r;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	default:
		ERR_clear_error();
		errno = EPIPE;
		return -1;
	}
}

enum tls_io_step tls_io_handshake(SSL *ssl, char *why, size_t whylen)
{
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	if (r == 1)
		return TLS_IO_DONE;
	int e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return TLS_IO_WANT_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return TLS_IO_WANT_WRITE;
	if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
		snprintf(why, whylen, "connection closed during handshake");
	else
		tls_error_string(why, whylen);
	return TLS_IO_FAILED;
}
