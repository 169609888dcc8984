/*
 * util/workq.c - the worker thread of util/workq.h: a mutex-protected list
 * of copied jobs, a condition variable to wake the worker, drained before
 * the worker ends.
 */
#include <stdlib.h>
#include <string.h>

#include "util/thread.h"
#include "util/workq.h"

static void *workq_main(void *arg)
{
	struct workq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct workq_job *j = q->head;

		if (!j && q->stop)
			break;
		if (!j) {
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		pthread_mutex_unlock(&q->lock);
		q->fn(q->opaque, j);
		free(j);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int workq_start(struct workq *q, workq_fn fn, void *opaque)
{
	int rc;

	memset(q, 0, sizeof(*q));
	q->fn = fn;
	q->opaque = opaque;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->started = true;
	rc = thread_start_nosignals(&q->thread, workq_main, q);
	if (rc)
		q->started = false;
	return rc;
}

bool workq_push(struct workq *q, int from, uint16_t type, const void *p,
		uint32_t len)
{
	struct workq_job *j = malloc(sizeof(*j) + len);

	if (!j)
		return false;
	j->next = NULL;
	j->from = from;
	j->type = type;
	j->len = len;
	memcpy(j->payload, p, len);
	pthread_mutex_lock(&q->lock);
	if (q->stop || !q->started) { /* no worker (any more) */
		pthread_mutex_unlock(&q->lock);
		free(j);
		return false;
	}
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return true;
}

void workq_stop(struct workq *q)
{
	if (!q->started)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL);
	q->started = false;
}
