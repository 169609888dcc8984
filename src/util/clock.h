/*
 * util/clock.h - CLOCK_MONOTONIC as dvmm uses it: nanoseconds since boot,
 * and absolute deadlines for pthread_cond_timedwait on condition variables
 * set to that clock.
 */
#ifndef DVMM_UTIL_CLOCK_H
#define DVMM_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t clock_mono_ns(void);
/* CLOCK_MONOTONIC now + @ms milliseconds. */
struct timespec clock_deadline_ms(unsigned int ms);

#endif
