/*
 * util/workq.h - one worker thread that runs queued jobs in arrival order:
 * each job a copy of a message (sender, type, bytes) that must not be
 * handled on the thread that received it (a cluster's transport thread).
 */
#ifndef DVMM_UTIL_WORKQ_H
#define DVMM_UTIL_WORKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct workq_job {
	struct workq_job *next;
	int from;
	uint16_t type;
	uint32_t len;
	uint8_t payload[];
};

typedef void (*workq_fn)(void *opaque, const struct workq_job *j);

struct workq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct workq_job *head, *tail;
	bool stop, started;
	pthread_t thread;
	workq_fn fn;
	void *opaque;
};

/* Start the worker calling @fn for each job; 0 or -errno. */
int workq_start(struct workq *q, workq_fn fn, void *opaque);
/* Queue a copy of @len bytes at @p; false when out of memory or the
 * queue has been stopped (the lock outlives the worker, so late pushes
 * from other threads are safe). */
bool workq_push(struct workq *q, int from, uint16_t type, const void *p,
		uint32_t len);
/* Run what is queued, then end the worker; later pushes are refused. A
 * queue never started (all zero) is left alone. */
void workq_stop(struct workq *q);

#endif
