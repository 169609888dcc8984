/*
 * util/thread.h - starting dvmm's helper threads and draining eventfds.
 * Helper threads (device back ends, the control socket) take no signals:
 * those are for the vCPU threads (the kick) and the signal thread.
 */
#ifndef DVMM_UTIL_THREAD_H
#define DVMM_UTIL_THREAD_H

#include <pthread.h>

/* pthread_create with every signal blocked in the new thread; -errno. */
int thread_start_nosignals(pthread_t *t, void *(*fn)(void *), void *arg);

/* Read a non-blocking eventfd until it is empty. */
void eventfd_drain(int fd);

#endif
