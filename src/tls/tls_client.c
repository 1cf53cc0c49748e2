/*
 * tls_client - client-side TLS context for outbound SMTP. See tls_client.h
 * for the policy and why.
 */
#include "tls/tls_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/xalloc.h"
#include "tls/tls.h"

struct tls_client {
	SSL_CTX *ctx;
};

/* tls_client_new - TLS 1.2+ client context with the system trust store */
struct tls_client *tls_client_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		tls_error_string(err, errlen);
		return NULL;
	}
	/* older protocol versions have known weaknesses; peers that offer
	 * nothing better get plain text under "may", like Postfix */
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* the result is logged even when it is not enforced; a missing trust
	 * store only makes every result "unable to get local issuer" */
	if (ca_file) {
		/* "verify" destinations are checked against the operator's CAs */
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			char e[200];
			tls_error_string(e, sizeof(e));
			snprintf(err, errlen, "smtp_tls_ca_file %s: %s", ca_file, e);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ERR_clear_error();
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	struct tls_client *t = xcalloc(1, sizeof(*t));
	t->ctx = ctx;
	return t;
}

/* tls_client_free - release the context */
void tls_client_free(struct tls_client *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* tls_client_ssl - an SSL object for a connected socket */
SSL *tls_client_ssl(struct tls_client *t, int fd, const char *servername, int verify)
{
	SSL *ssl = SSL_new(t->ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1)
		goto fail;
	if (servername && *servername) {
		if (SSL_set_tlsext_host_name(ssl, servername) != 1)
			goto fail;
		/* checked against the certificate during the handshake; the
		 * outcome lands in SSL_get_verify_result */
		if (SSL_set1_host(ssl, servername) != 1)
			goto fail;
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	ERR_clear_error();
	SSL_free(ssl);
	return NULL;
}

/* tls_client_verify_str - the certificate check's outcome, for logs */
const char *tls_client_verify_str(SSL *ssl)
{
	if (SSL_get0_peer_certificate(ssl) == NULL)
		return "no certificate";
	long r = SSL_get_verify_result(ssl);
	if (r == X509_V_OK)
		return "ok";
	return X509_verify_cert_error_string(r);
}
