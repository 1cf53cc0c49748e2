/*
 * qfixture - see qfixture.h
 */
#include "qfixture.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "queue/queue.h"

int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/tern-qtest-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	char err[256];
	snprintf(fx->qdir, sizeof(fx->qdir), "%s/queue", fx->dir);
	fx->q = queue_open(fx->qdir, NULL, err, sizeof(err));
	if (fx->q == NULL)
		return -1;
	*state = fx;
	return 0;
}

int teardown(void **state)
{
	struct fixture *fx = *state;
	queue_close(fx->q);
	nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

int count(struct fixture *fx, const char *sub)
{
	char p[200];
	snprintf(p, sizeof(p), "%s/%s", fx->qdir, sub);
	DIR *d = opendir(p);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

void qpath(struct fixture *fx, char *out, size_t n, const char *sub, const char *name)
{
	int r = snprintf(out, n, "%s/%s/%s", fx->qdir, sub, name);
	assert_true(r > 0 && (size_t)r < n);
}

int exists(struct fixture *fx, const char *sub, const char *name)
{
	char p[200];
	qpath(fx, p, sizeof(p), sub, name);
	return access(p, F_OK) == 0;
}

ino_t inode(struct fixture *fx, const char *sub, const char *name)
{
	char p[200];
	struct stat st;
	qpath(fx, p, sizeof(p), sub, name);
	assert_int_equal(stat(p, &st), 0);
	return st.st_ino;
}
