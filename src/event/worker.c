/*
 * worker - thread pool with completions on the event loop. See worker.h.
 */
#include "event/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/xalloc.h"

struct worker_job {
	struct worker_job *next;
	worker_fn work, done;
	void *arg;
};

struct worker_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct worker_job *todo_head, *todo_tail;
	struct worker_job *done_head, *done_tail;
	pthread_t *threads;
	size_t nthreads;
	int stopping;
	int pipefd[2];
	struct event *ev;
};

static void *worker_main(void *arg)
{
	struct worker_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->todo_head == NULL && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->todo_head == NULL)
			break;
		struct worker_job *j = p->todo_head;
		p->todo_head = j->next;
		if (p->todo_head == NULL)
			p->todo_tail = NULL;
		pthread_mutex_unlock(&p->mu);
		j->work(j->arg);
		pthread_mutex_lock(&p->mu);
		j->next = NULL;
		if (p->done_tail)
			p->done_tail->next = j;
		else
			p->done_head = j;
		p->done_tail = j;
		char b = 1;
		ssize_t w = write(p->pipefd[1], &b, 1); /* wake the loop; a full pipe is fine */
		(void)w;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* worker_on_done - loop thread: run completions */
static void worker_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct worker_pool *p = arg;
	(void)what;
	char buf[256];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&p->mu);
	struct worker_job *j = p->done_head;
	p->done_head = p->done_tail = NULL;
	pthread_mutex_unlock(&p->mu);
	while (j) {
		struct worker_job *next = j->next;
		j->done(j->arg);
		free(j);
		j = next;
	}
}

struct worker_pool *worker_pool_new(struct event_base *base, size_t nthreads)
{
	struct worker_pool *p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pipe2(p->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
		free(p);
		return NULL;
	}
	p->ev = event_new(base, p->pipefd[0], EV_READ | EV_PERSIST, worker_on_done, p);
	event_add(p->ev, NULL);
	p->threads = xcalloc(nthreads, sizeof(pthread_t));
	for (size_t i = 0; i < nthreads; i++)
		if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p) == 0)
			p->nthreads++;
	return p;
}

int worker_submit(struct worker_pool *p, worker_fn work, worker_fn done, void *arg)
{
	struct worker_job *j = malloc(sizeof(*j));
	if (j == NULL)
		return -1;
	j->next = NULL;
	j->work = work;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&p->mu);
	if (p->stopping) {
		pthread_mutex_unlock(&p->mu);
		free(j);
		return -1;
	}
	if (p->todo_tail)
		p->todo_tail->next = j;
	else
		p->todo_head = j;
	p->todo_tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

void worker_pool_free(struct worker_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	struct worker_job *j = p->todo_head;
	p->todo_head = p->todo_tail = NULL;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	while (j) {
		struct worker_job *n = j->next;
		free(j);
		j = n;
	}
	for (size_t i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	j = p->done_head;
	while (j) {
		struct worker_job *n = j->next;
		free(j);
		j = n;
	}
	event_free(p->ev);
	close(p->pipefd[0]);
	close(p->pipefd[1]);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}
