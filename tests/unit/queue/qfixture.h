/*
 * qfixture - the queue unit tests' shared fixture: a queue opened on a
 * fresh temporary directory (synchronous commits), removed afterwards, and
 * helpers that look at its subdirectories (tmp/, msg/, state/, free/ ...).
 */
#ifndef TERN_TEST_QFIXTURE_H
#define TERN_TEST_QFIXTURE_H
#include <ftw.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

struct fixture {
	char dir[64];   /* the temporary directory */
	char qdir[128]; /* dir/queue, the queue_dir */
	struct queue *q;
};

/* rm_one - nftw callback removing one entry */
int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw);
/* setup/teardown - cmocka group-less per-test fixture */
int setup(void **state);
int teardown(void **state);
/* count - entries in queue/<sub> */
int count(struct fixture *fx, const char *sub);
/* qpath - queue/<sub>/<name> into out */
void qpath(struct fixture *fx, char *out, size_t n, const char *sub, const char *name);
/* exists - queue/<sub>/<name> exists */
int exists(struct fixture *fx, const char *sub, const char *name);
/* inode - of queue/<sub>/<name> (which must exist) */
ino_t inode(struct fixture *fx, const char *sub, const char *name);
#endif
