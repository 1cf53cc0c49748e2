/*
 * ctl_dkim - `ternctl dkim keygen DOMAIN SELECTOR [--type rsa|ed25519]
 * [--dir DIR]`: create a DKIM signing key in the layout dkim.h documents,
 * <DIR>/<domain>/<selector>.rsa.pem or .ed25519.pem (PKCS#8 PEM, mode
 * 0600, directory 0700), and print the TXT record to publish at
 * <selector>._domainkey.<domain>.
 *
 * RSA keys are 2048 bits (RFC 8301 3.2: >= 1024 required, 2048 advised);
 * the record is "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>", for
 * Ed25519 "v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>" (RFC 8463 4.2).
 * An existing key is never overwritten (O_EXCL): rotating means a new
 * selector. DIR defaults to the configuration's dkim_key_dir, where ternd
 * looks for signing keys. Run as root, the key and its directories are
 * given to run_user: ternd reads keys per message after dropping root.
 *
 * Exports: ctl_dkim_run (to be declared in ternctl.h).
 * Trusts: the domain and selector only after a strict charset check
 * (letters, digits, '-', '.', '_'; no "..", no leading '.'), since they
 * become path components.
 * Standards: RFC 6376 3.6.1, RFC 8301, RFC 8463.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/fsutil.h"
#include "ctl/ternctl.h"

int ctl_dkim_run(struct ternctl *t, int argc, char **argv);

/* ctl_dkim_name_ok - a safe DNS label sequence usable as a path component */
static int ctl_dkim_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '.' || *s == '_'))
			return 0;
	return 1;
}

/* ctl_dkim_usage - print usage, return the usage exit code */
static int ctl_dkim_usage(void)
{
	fprintf(stderr, "usage: ternctl dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--dir DIR]\n");
	return TERNCTL_EXIT_USAGE;
}

/* ctl_dkim_keygen - generate, store and print the record */
static int ctl_dkim_keygen(const char *dir, const char *domain, const char *selector, int ed,
			   const char *owner)
{
	char path[4400], ddir[4096], err[256];
	char dom[256];
	snprintf(dom, sizeof(dom), "%s", domain);
	for (char *p = dom; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
	if ((size_t)snprintf(ddir, sizeof(ddir), "%s/%s", dir, dom) >= sizeof(ddir)) {
		fprintf(stderr, "ternctl dkim: directory name too long\n");
		return TERNCTL_EXIT_USAGE;
	}
	/* why 0711 then 0700: the key directory only needs to be traversable
	 * (by run_user); each domain directory holds private keys */
	if (fs_mkdir_p(dir, 0711, err, sizeof(err)) < 0 || fs_mkdir_p(ddir, 0700, err, sizeof(err)) < 0) {
		fprintf(stderr, "ternctl dkim: %s\n", err);
		return TERNCTL_EXIT_FAIL;
	}
	snprintf(path, sizeof(path), "%s/%s.%s.pem", ddir, selector, ed ? "ed25519" : "rsa");
	/* why: ternd loads signing keys after setuid(run_user), so as root the
	 * key and its domain directory are given to that user (never the
	 * directory above: it may be any path the admin named) */
	struct passwd *pw = NULL;
	if (geteuid() == 0 && owner != NULL && owner[0] != '\0') {
		pw = getpwnam(owner);
		if (pw == NULL)
			fprintf(stderr, "ternctl dkim: warning: run_user %s does not exist: the key stays "
					"root's, which ternd running as %s could not read\n", owner, owner);
		else if (chown(ddir, pw->pw_uid, pw->pw_gid) < 0) {
			fprintf(stderr, "ternctl dkim: chown %s: %s\n", ddir, strerror(errno));
			return TERNCTL_EXIT_FAIL;
		}
	}
	EVP_PKEY *pk = ed ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") : EVP_RSA_gen(2048);
	if (!pk) {
		fprintf(stderr, "ternctl dkim: key generation failed\n");
		return TERNCTL_EXIT_FAIL;
	}
	/* why O_EXCL|0600: never clobber a key in use; never readable by others */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "ternctl dkim: %s: %s\n", path, strerror(errno));
		EVP_PKEY_free(pk);
		return TERNCTL_EXIT_FAIL;
	}
	if (pw != NULL && fchown(fd, pw->pw_uid, pw->pw_gid) < 0) {
		fprintf(stderr, "ternctl dkim: chown %s: %s\n", path, strerror(errno));
		close(fd);
		unlink(path);
		EVP_PKEY_free(pk);
		return TERNCTL_EXIT_FAIL;
	}
	FILE *f = fdopen(fd, "w");
	int ok = f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1 && fflush(f) == 0 &&
		 fsync(fd) == 0;
	if (f)
		ok = (fclose(f) == 0) && ok;
	else
		close(fd);
	if (!ok || fs_fsync_dir(ddir, err, sizeof(err)) < 0) {
		fprintf(stderr, "ternctl dkim: writing %s failed\n", path);
		unlink(path);
		EVP_PKEY_free(pk);
		return TERNCTL_EXIT_FAIL;
	}
	unsigned char der[1024], *p = der;
	size_t len = sizeof(der);
	if (ed) {
		ok = EVP_PKEY_get_raw_public_key(pk, der, &len) == 1;
	} else {
		int l = i2d_PUBKEY(pk, NULL);
		ok = l > 0 && (size_t)l <= sizeof(der) && i2d_PUBKEY(pk, &p) == l;
		len = (size_t)l;
	}
	EVP_PKEY_free(pk);
	if (!ok) {
		fprintf(stderr, "ternctl dkim: cannot encode the public key\n");
		return TERNCTL_EXIT_FAIL;
	}
	unsigned char b64[1500];
	EVP_EncodeBlock(b64, der, (int)len);
	fprintf(stderr, "private key written to %s\npublish this TXT record:\n", path);
	printf("%s._domainkey.%s. IN TXT \"v=DKIM1; k=%s; p=%s\"\n", selector, dom, ed ? "ed25519" : "rsa", b64);
	return TERNCTL_EXIT_OK;
}

/* ctl_dkim_run - "ternctl dkim ..." (argv[0] is "dkim") */
int ctl_dkim_run(struct ternctl *t, int argc, char **argv)
{
	const char *dir = NULL, *args[2];
	size_t na = 0;
	int ed = 0;
	if (argc < 2 || strcmp(argv[1], "keygen") != 0)
		return ctl_dkim_usage();
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "ed25519") == 0)
				ed = 1;
			else if (strcmp(argv[i], "rsa") != 0)
				return ctl_dkim_usage();
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else if (argv[i][0] != '-' && na < 2) {
			args[na++] = argv[i];
		} else {
			return ctl_dkim_usage();
		}
	}
	if (na != 2)
		return ctl_dkim_usage();
	if (!ctl_dkim_name_ok(args[0]) || !ctl_dkim_name_ok(args[1]) || strlen(args[1]) > 63) {
		fprintf(stderr, "ternctl dkim: bad domain or selector\n");
		return TERNCTL_EXIT_USAGE;
	}
	const char *owner = NULL;
	if (dir == NULL || geteuid() == 0) {
		/* the configuration names the key directory and run_user */
		if (ternctl_conf_load(t) < 0)
			return TERNCTL_EXIT_FAIL;
		if (dir == NULL)
			dir = t->conf.dkim_key_dir;
		owner = t->conf.run_user;
	}
	if (dir == NULL || dir[0] == '\0') {
		fprintf(stderr, "ternctl dkim: no dkim_key_dir configured; use --dir\n");
		return TERNCTL_EXIT_USAGE;
	}
	return ctl_dkim_keygen(dir, args[0], args[1], ed, owner);
}
