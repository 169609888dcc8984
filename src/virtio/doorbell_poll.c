/*
 * virtio/doorbell_poll.c - the doorbell poller for poll-mode virtio-pci:
 * one host thread scanning every registered doorbell word. A word holds
 * DOORBELL_SENTINEL until the driver writes its notification; the thread
 * swaps the sentinel back in (atomic exchange, so a write racing with the
 * swap is seen on the next round, never lost) and calls the device's
 * queue_kick. The guest's write is a plain store into RAM: no VM exit.
 *
 * Latency versus CPU: while doorbells keep coming the thread spins with
 * `pause` (a round over a few words costs tens of nanoseconds, so a kick
 * is seen well within a microsecond). After DOORBELL_IDLE_SPIN_US without
 * one it sleeps between rounds, from DOORBELL_SLEEP_MIN_US doubling to
 * DOORBELL_SLEEP_MAX_US, with 1 us timer slack. Measured on the (nested)
 * development host: a nanosleep round trip costs 25-30 us of CPU, so
 * 50 us sleeps burn ~30% of a core, 1 ms sleeps ~3%; a busy device keeps
 * the thread spinning, an idle VM costs ~3% of a core instead of 100%, and
 * the first kick after a long idle period waits up to ~1 ms.
 * doorbell_poller_set_backoff(p, 0, 0, 0) makes it a pure busy poller.
 *
 * Removal: the thread holds the poller lock while it scans and kicks, so
 * when doorbell_poller_remove_device() has taken and dropped the lock the
 * device is out of the array and no call into it is in flight. Writers
 * announce themselves in `waiters` so the spinning thread steps aside
 * instead of starving them of the lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"
#include "virtio/virtio_pci.h"

#define IDLE_CHECK_ROUNDS 128 /* rounds between clock reads when idle */
#define TIMER_SLACK_NS 1000UL

struct doorbell_entry {
	volatile uint32_t *word;
	struct virtio_device *vd;
	uint16_t q;
	uint64_t *kicks;
};

struct doorbell_poller {
	pthread_t thread;
	pthread_mutex_t lock; /* the array, and every kick */
	struct doorbell_entry *v;
	size_t n, cap;
	int waiters; /* add/remove waiting for the lock */
	bool stop;
	uint32_t idle_spin_us, sleep_min_us, sleep_max_us;
	uint64_t rounds, kicks, sleeps;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* Same rule as the transport: kicks only between DRIVER_OK and reset. */
static bool serving(struct virtio_device *vd)
{
	uint8_t s = __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE);

	return (s & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) ==
	       VIRTIO_STATUS_DRIVER_OK;
}

/* One pass over every word (lock held); returns the doorbells seen. */
static unsigned int scan(struct doorbell_poller *p)
{
	unsigned int seen = 0;

	for (size_t i = 0; i < p->n; i++) {
		struct doorbell_entry *e = &p->v[i];
		uint32_t old;

		/* A plain load first keeps the line shared while idle. */
		if (__atomic_load_n(e->word, __ATOMIC_RELAXED) ==
		    DOORBELL_SENTINEL)
			continue;
		old = __atomic_exchange_n(e->word, DOORBELL_SENTINEL,
					  __ATOMIC_ACQ_REL);
		if (old == DOORBELL_SENTINEL)
			continue;
		seen++;
		if (!serving(e->vd) || !e->vd->ops->queue_kick)
			continue;
		if (e->kicks)
			__atomic_fetch_add(e->kicks, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&p->kicks, 1, __ATOMIC_RELAXED);
		e->vd->ops->queue_kick(e->vd, e->q);
	}
	return seen;
}

static void sleep_us(uint32_t us)
{
	struct timespec d = {.tv_sec = us / 1000000,
			     .tv_nsec = (long)(us % 1000000) * 1000};

	nanosleep(&d, NULL);
}

/* Idle since @idle_since: the first sleep if spinning is over, else 0. */
static uint32_t first_nap(struct doorbell_poller *p, uint64_t idle_since)
{
	uint64_t spin_ns =
		1000ULL * __atomic_load_n(&p->idle_spin_us, __ATOMIC_RELAXED);
	uint32_t min = __atomic_load_n(&p->sleep_min_us, __ATOMIC_RELAXED);

	if (!__atomic_load_n(&p->sleep_max_us, __ATOMIC_RELAXED) ||
	    clock_mono_ns() - idle_since < spin_ns)
		return 0;
	return min ? min : 1;
}

static void *poll_thread(void *arg)
{
	struct doorbell_poller *p = arg;
	uint64_t rounds = 0, idle_since = 0;
	unsigned int idle_rounds = 0;
	uint32_t nap = 0; /* current sleep, 0 while spinning */

	prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS);
	pthread_setname_np(pthread_self(), "dvmm-doorbell");
	while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		unsigned int seen;

		while (__atomic_load_n(&p->waiters, __ATOMIC_ACQUIRE))
			cpu_relax();
		pthread_mutex_lock(&p->lock);
		seen = scan(p);
		pthread_mutex_unlock(&p->lock);
		__atomic_store_n(&p->rounds, ++rounds, __ATOMIC_RELAXED);
		if (seen) {
			idle_rounds = 0;
			idle_since = 0;
			nap = 0;
			continue;
		}
		if (nap) {
			uint32_t max = __atomic_load_n(&p->sleep_max_us,
						       __ATOMIC_RELAXED);

			sleep_us(nap);
			__atomic_fetch_add(&p->sleeps, 1, __ATOMIC_RELAXED);
			nap = nap * 2 < max ? nap * 2 : max;
			continue;
		}
		cpu_relax();
		if (++idle_rounds % IDLE_CHECK_ROUNDS)
			continue;
		if (!idle_since)
			idle_since = clock_mono_ns();
		else
			nap = first_nap(p, idle_since);
	}
	return NULL;
}

struct doorbell_poller *doorbell_poller_create(void)
{
	struct doorbell_poller *p = calloc(1, sizeof(*p));
	int rc;

	if (!p)
		return NULL;
	p->idle_spin_us = DOORBELL_IDLE_SPIN_US;
	p->sleep_min_us = DOORBELL_SLEEP_MIN_US;
	p->sleep_max_us = DOORBELL_SLEEP_MAX_US;
	if (pthread_mutex_init(&p->lock, NULL)) {
		free(p);
		return NULL;
	}
	rc = pthread_create(&p->thread, NULL, poll_thread, p);
	if (rc) {
		pr_err("doorbell poller: cannot start its thread: %s",
		       strerror(rc));
		pthread_mutex_destroy(&p->lock);
		free(p);
		return NULL;
	}
	return p;
}

/* Take the lock ahead of the spinning thread. */
static void writer_lock(struct doorbell_poller *p)
{
	__atomic_fetch_add(&p->waiters, 1, __ATOMIC_ACQ_REL);
	pthread_mutex_lock(&p->lock);
}

static void writer_unlock(struct doorbell_poller *p)
{
	pthread_mutex_unlock(&p->lock);
	__atomic_fetch_sub(&p->waiters, 1, __ATOMIC_ACQ_REL);
}

int doorbell_poller_add_counted(struct doorbell_poller *p,
				volatile uint32_t *word,
				struct virtio_device *vd, uint16_t q,
				uint64_t *kicks)
{
	int rc = 0;

	if (!p || !word || !vd || !vd->ops)
		return -EINVAL;
	writer_lock(p);
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		struct doorbell_entry *v = realloc(p->v, cap * sizeof(*v));

		if (!v) {
			rc = -ENOMEM;
			goto out;
		}
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n++] = (struct doorbell_entry){
		.word = word, .vd = vd, .q = q, .kicks = kicks};
out:
	writer_unlock(p);
	return rc;
}

int doorbell_poller_add(struct doorbell_poller *p, volatile uint32_t *word,
			struct virtio_device *vd, uint16_t q)
{
	return doorbell_poller_add_counted(p, word, vd, q, NULL);
}

void doorbell_poller_remove_device(struct doorbell_poller *p,
				   struct virtio_device *vd)
{
	size_t j = 0;

	if (!p)
		return;
	writer_lock(p);
	for (size_t i = 0; i < p->n; i++)
		if (p->v[i].vd != vd)
			p->v[j++] = p->v[i];
	p->n = j;
	writer_unlock(p);
}

void doorbell_poller_destroy(struct doorbell_poller *p)
{
	if (!p)
		return;
	__atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
	pthread_join(p->thread, NULL);
	pthread_mutex_destroy(&p->lock);
	free(p->v);
	free(p);
}

void doorbell_poller_set_backoff(struct doorbell_poller *p,
				 uint32_t idle_spin_us, uint32_t sleep_min_us,
				 uint32_t sleep_max_us)
{
	if (sleep_min_us > sleep_max_us)
		sleep_min_us = sleep_max_us;
	__atomic_store_n(&p->idle_spin_us, idle_spin_us, __ATOMIC_RELAXED);
	__atomic_store_n(&p->sleep_min_us, sleep_min_us, __ATOMIC_RELAXED);
	__atomic_store_n(&p->sleep_max_us, sleep_max_us, __ATOMIC_RELAXED);
}

void doorbell_poller_get_stats(struct doorbell_poller *p,
			       struct doorbell_poller_stats *s)
{
	s->rounds = __atomic_load_n(&p->rounds, __ATOMIC_RELAXED);
	s->kicks = __atomic_load_n(&p->kicks, __ATOMIC_RELAXED);
	s->sleeps = __atomic_load_n(&p->sleeps, __ATOMIC_RELAXED);
	writer_lock(p);
	s->entries = (unsigned int)p->n;
	writer_unlock(p);
}
