/*
 * cluster/vtime.c - one guest time on every node (see vtime.h): the
 * clock-offset protocol between node 0 and the others, the guest TSC base
 * and kvmclock that node 0 publishes, and the slewing of each node's KVM
 * TSC offset. All TSC values here are this node's view of its host TSC
 * (rdtsc, plus the injected skew of the test hook).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <x86intrin.h>

#include "cluster/clocksync.h"
#include "cluster/vtime.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#define FIRST_BURST 32 /* probes before the VM is built */
#define BURST 8	       /* probes every RESYNC_MS after that */
#define RESYNC_MS 2000
#define PROBE_TIMEOUT_MS 200 /* an answer later than this is dropped */
#define JOIN_TIMEOUT_MS 15000
#define SLEW_STEP_MS 100
#define SLEW_PPM 1000	      /* at most 1 ms of offset change per second */
#define KHZ_TOLERANCE_PPM 200 /* frequencies closer than this are equal */

struct probe_wire {
	uint32_t seq;
	uint32_t pad;
	uint64_t t1, t2;
} __attribute__((packed));

struct base_wire {
	int64_t base;	/* guest TSC = node 0's TSC + base */
	uint64_t khz;	/* node 0's TSC frequency (KVM) */
	uint64_t clock; /* kvmclock (ns) ... */
	uint64_t tsc;	/* ... when node 0's TSC (its view) read this */
} __attribute__((packed));

struct vtime {
	struct transport *t;
	int self, nnodes;
	int64_t skew; /* test hook: cycles added to this node's TSC view */
	int64_t skew_ns;
	uint64_t khz_measured; /* rdtsc against CLOCK_MONOTONIC */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct clocksync cs;
	uint32_t seq; /* the probe in flight */
	uint64_t t1;  /* its send time */
	bool answered;
	bool have_base;
	struct base_wire base;
	struct vm *vm;	 /* attached (peers) */
	int64_t applied; /* KVM TSC offset the vCPUs have */
	int64_t desired; /* where the estimate says it should be */
	uint64_t slews, late_answers;
	bool stop;
	pthread_t thread;
	bool started;
};

static uint64_t host_tsc(const struct vtime *v)
{
	return __rdtsc() + (uint64_t)v->skew;
}

static int64_t cycles_of_ns(uint64_t khz, int64_t ns)
{
	return (int64_t)((__int128)ns * (__int128)khz / 1000000);
}

static int64_t ns_of_cycles(uint64_t khz, int64_t c)
{
	return khz ? (int64_t)((__int128)c * 1000000 / (__int128)khz) : 0;
}

/* The host TSC against CLOCK_MONOTONIC over ~20 ms: kHz. */
static uint64_t measure_khz(void)
{
	struct timespec d = {.tv_nsec = 20000000};
	uint64_t n0 = clock_mono_ns(), c0 = __rdtsc(), n1, c1;

	nanosleep(&d, NULL);
	n1 = clock_mono_ns();
	c1 = __rdtsc();
	return n1 > n0 ? (c1 - c0) * 1000000 / (n1 - n0) : 0;
}

/* DVMM_TEST_TSC_SKEW=K:NS */
static void read_skew_hook(struct vtime *v)
{
	const char *s = getenv("DVMM_TEST_TSC_SKEW");
	int node;
	long long ns;

	if (!s || sscanf(s, "%d:%lld", &node, &ns) != 2 || node != v->self)
		return;
	v->skew_ns = ns;
	v->skew = cycles_of_ns(v->khz_measured, ns);
	pr_warn("test hook: node %d sees its TSC %lld ns ahead", v->self, ns);
}

/* ---- node 0 answers probes ---- */

static void answer_probe(struct vtime *v, int from, const void *p, uint32_t len)
{
	struct probe_wire w;

	if (v->self != 0 || len != sizeof(w))
		return;
	memcpy(&w, p, sizeof(w));
	w.t2 = host_tsc(v);
	transport_send(v->t, from, MSG_TIME_RESP, &w, sizeof(w));
}

static void got_answer(struct vtime *v, int from, const void *p, uint32_t len)
{
	uint64_t t3 = host_tsc(v);
	struct probe_wire w;

	if (from != 0 || len != sizeof(w))
		return;
	memcpy(&w, p, sizeof(w));
	pthread_mutex_lock(&v->lock);
	if (w.seq == v->seq && w.t1 == v->t1 && !v->answered) {
		struct clocksync_sample s = {.t1 = w.t1, .t2 = w.t2, .t3 = t3};

		clocksync_add(&v->cs, &s);
		v->answered = true;
		pthread_cond_broadcast(&v->cond);
	} else {
		v->late_answers++;
	}
	pthread_mutex_unlock(&v->lock);
}

static void got_base(struct vtime *v, int from, const void *p, uint32_t len)
{
	if (from != 0 || len != sizeof(v->base))
		return;
	pthread_mutex_lock(&v->lock);
	memcpy(&v->base, p, sizeof(v->base));
	v->have_base = true;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

bool vtime_handle_msg(struct vtime *v, int from, uint16_t type,
		      const void *payload, uint32_t len)
{
	switch (type) {
	case MSG_TIME_REQ:
		answer_probe(v, from, payload, len);
		return true;
	case MSG_TIME_RESP:
		got_answer(v, from, payload, len);
		return true;
	case MSG_TIME_BASE:
		got_base(v, from, payload, len);
		return true;
	default:
		return false;
	}
}

/* ---- peers measure ---- */

/* One probe: false if the node is stopping. Locked. */
static bool probe(struct vtime *v)
{
	struct probe_wire w = {0};
	struct timespec dl;

	v->seq++;
	v->answered = false;
	v->t1 = host_tsc(v);
	w.seq = v->seq;
	w.t1 = v->t1;
	pthread_mutex_unlock(&v->lock);
	transport_send(v->t, 0, MSG_TIME_REQ, &w, sizeof(w));
	pthread_mutex_lock(&v->lock);
	dl = clock_deadline_ms(PROBE_TIMEOUT_MS);
	while (!v->answered && !v->stop &&
	       pthread_cond_timedwait(&v->cond, &v->lock, &dl) != ETIMEDOUT)
		;
	v->seq++; /* a late answer no longer matches */
	return !v->stop;
}

/* Locked: where the KVM offset should be now (needs base and estimate). */
static bool desired_offset(struct vtime *v, int64_t *out, uint64_t *err)
{
	int64_t theta;

	if (!v->have_base ||
	    !clocksync_offset(&v->cs, host_tsc(v), &theta, err))
		return false;
	/*
	 * guest = node 0's TSC + base = (our view + theta) + base, and our
	 * view = hardware + skew, so KVM's offset is skew + theta + base.
	 */
	*out = v->skew + theta + v->base.base;
	return true;
}

/* Locked: move the applied offset towards the desired one, bounded. */
static void slew_step(struct vtime *v)
{
	int64_t max = cycles_of_ns(v->base.khz ? v->base.khz : v->khz_measured,
				   (int64_t)SLEW_STEP_MS * 1000000 * SLEW_PPM /
					   1000000);
	int64_t d = v->desired - v->applied;

	if (!v->vm || !d)
		return;
	if (d > max)
		d = max;
	if (d < -max)
		d = -max;
	v->applied += d;
	v->slews++;
	vm_tsc_slew(v->vm, v->applied);
}

/* Locked: a new estimate; follow it only when it leaves the error bound. */
static void retarget(struct vtime *v)
{
	int64_t want;
	uint64_t err;

	if (!desired_offset(v, &want, &err))
		return;
	if ((uint64_t)llabs(want - v->applied) > err)
		v->desired = want;
}

static bool wait_ms(struct vtime *v, unsigned int ms)
{
	struct timespec dl = clock_deadline_ms(ms);

	while (!v->stop &&
	       pthread_cond_timedwait(&v->cond, &v->lock, &dl) != ETIMEDOUT)
		;
	return !v->stop;
}

static void *sync_thread(void *arg)
{
	struct vtime *v = arg;
	int n = FIRST_BURST;

	pthread_mutex_lock(&v->lock);
	while (!v->stop) {
		for (int i = 0; i < n && probe(v); i++)
			;
		clocksync_end_burst(&v->cs);
		pthread_cond_broadcast(&v->cond);
		retarget(v);
		n = BURST;
		for (int k = 0; k < RESYNC_MS / SLEW_STEP_MS && !v->stop; k++) {
			slew_step(v);
			wait_ms(v, SLEW_STEP_MS);
		}
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

int vtime_start(struct vtime *v, struct err *e)
{
	int rc;

	if (v->self == 0)
		return 0;
	rc = thread_start_nosignals(&v->thread, sync_thread, v);
	if (rc)
		return err_set(e, rc, "cannot start the clock sync thread");
	v->started = true;
	return 0;
}

/* ---- node 0 publishes, peers join ---- */

static uint64_t vm_tsc_khz(struct vm *vm)
{
	int khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);

	return khz > 0 ? (uint64_t)khz : 0;
}

int vtime_publish_base(struct vtime *v, struct vm *vm, struct err *e)
{
	struct base_wire b = {0};
	struct kvm_clock_data c;
	int64_t off;
	int rc = vm_get_tsc_offset(vm, 0, &off);

	if (rc)
		return err_set(e, rc, "cannot read the guest TSC offset: %s",
			       strerror(-rc));
	rc = vm_get_clock(vm, &c);
	if (rc)
		return err_set(e, rc, "KVM_GET_CLOCK: %s", strerror(-rc));
	/* node 0's guest = hardware + off = our view - skew + off */
	b.base = off - v->skew;
	b.khz = vm_tsc_khz(vm);
	b.clock = c.clock;
	/* the TSC at that instant: KVM's if it says, else ours just after */
	b.tsc = (c.flags & KVM_CLOCK_HOST_TSC) ?
			c.host_tsc + (uint64_t)v->skew :
			host_tsc(v);
	pthread_mutex_lock(&v->lock);
	v->base = b;
	v->have_base = true;
	v->applied = v->desired = off;
	pthread_mutex_unlock(&v->lock);
	for (int i = 1; i < v->nnodes; i++)
		transport_send(v->t, i, MSG_TIME_BASE, &b, sizeof(b));
	return 0;
}

int vtime_join(struct vtime *v, struct vm_config *vc, struct err *e)
{
	struct timespec dl = clock_deadline_ms(JOIN_TIMEOUT_MS);
	uint64_t err = 0;
	int64_t off = 0;
	bool ok;

	pthread_mutex_lock(&v->lock);
	while (!(ok = desired_offset(v, &off, &err)) && !v->stop &&
	       pthread_cond_timedwait(&v->cond, &v->lock, &dl) != ETIMEDOUT)
		;
	if (ok) {
		v->applied = v->desired = off;
		vc->set_tsc_offset = true;
		vc->tsc_offset = off;
	}
	pthread_mutex_unlock(&v->lock);
	if (!ok)
		return err_set(e, -ETIMEDOUT,
			       "node %d: no guest time from node 0 within "
			       "%d s",
			       v->self, JOIN_TIMEOUT_MS / 1000);
	pr_info("node %d: guest TSC offset %lld cycles (error %llu)", v->self,
		(long long)off, (unsigned long long)err);
	return 0;
}

/*
 * Locked: node 0's kvmclock now, from the value it published and the TSC
 * cycles since then on node 0's TSC (ours plus the estimated offset): the
 * synchronised TSCs carry the clock, not the hosts' wall clocks.
 */
static bool kvmclock_now(struct vtime *v, uint64_t *ns)
{
	int64_t theta, since;
	uint64_t err;

	if (!v->have_base || !v->base.khz ||
	    !clocksync_offset(&v->cs, host_tsc(v), &theta, &err))
		return false;
	since = (int64_t)(host_tsc(v) + (uint64_t)theta - v->base.tsc);
	*ns = v->base.clock + (uint64_t)ns_of_cycles(v->base.khz, since);
	return true;
}

/* Before the node's vCPUs first run: kvmclock as node 0's. Locked. */
static int join_kvmclock(struct vtime *v, struct vm *vm, struct err *e)
{
	struct kvm_clock_data c = {0};
	uint64_t now;

	if (!kvmclock_now(v, &now))
		return err_set(e, -EAGAIN, "no kvmclock from node 0");
	c.clock = now;
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &c))
		return err_set(e, -errno, "KVM_SET_CLOCK: %s", strerror(errno));
	return 0;
}

int vtime_attach(struct vtime *v, struct vm *vm, struct err *e)
{
	uint64_t khz = vm_tsc_khz(vm), khz0;
	int64_t diff;
	int rc = 0;

	pthread_mutex_lock(&v->lock);
	khz0 = v->base.khz;
	v->vm = v->self ? vm : NULL;
	if (v->self)
		rc = join_kvmclock(v, vm, e);
	pthread_mutex_unlock(&v->lock);
	if (rc)
		return rc;
	if (v->self == 0 || !khz0 || !khz)
		return 0;
	diff = (int64_t)khz - (int64_t)khz0;
	if ((uint64_t)llabs(diff) * 1000000 > khz0 * KHZ_TOLERANCE_PPM)
		return err_set(e, -ENOTSUP,
			       "node %d's TSC runs at %llu kHz and node 0's "
			       "at %llu kHz; dvmm does not scale guest TSCs, "
			       "so a VM cannot span them",
			       v->self, (unsigned long long)khz,
			       (unsigned long long)khz0);
	return 0;
}

void vtime_detach(struct vtime *v)
{
	pthread_mutex_lock(&v->lock);
	v->vm = NULL;
	pthread_mutex_unlock(&v->lock);
}

json_t *vtime_stats_json(struct vtime *v)
{
	uint64_t khz, err = 0;
	int64_t theta = 0;
	bool valid;
	json_t *o;

	pthread_mutex_lock(&v->lock);
	khz = v->base.khz ? v->base.khz : v->khz_measured;
	valid = v->self != 0 &&
		clocksync_offset(&v->cs, host_tsc(v), &theta, &err);
	o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "role",
		      v->self == 0 ? "reference" : "follower", "tsc_khz",
		      (json_int_t)khz, "applied_offset_cycles",
		      (json_int_t)v->applied, "desired_offset_cycles",
		      (json_int_t)v->desired, "skew_injected_ns",
		      (json_int_t)v->skew_ns, "samples",
		      (json_int_t)v->cs.samples, "bursts",
		      (json_int_t)v->cs.bursts, "slews", (json_int_t)v->slews);
	if (o && valid) {
		json_object_set_new(o, "offset_ns",
				    json_integer(ns_of_cycles(khz, theta)));
		json_object_set_new(
			o, "error_ns",
			json_integer(ns_of_cycles(khz, (int64_t)err)));
		json_object_set_new(o, "rtt_min_ns",
				    json_integer(ns_of_cycles(
					    khz, (int64_t)v->cs.ref.rtt)));
		json_object_set_new(o, "drift_ppm",
				    json_real(v->cs.drift * 1e6));
	}
	pthread_mutex_unlock(&v->lock);
	return o;
}

int vtime_create(struct vtime **out, struct transport *t, int self, int nnodes,
		 struct err *e)
{
	struct vtime *v = calloc(1, sizeof(*v));
	pthread_condattr_t ca;

	if (!v)
		return err_set(e, -ENOMEM, "out of memory");
	v->t = t;
	v->self = self;
	v->nnodes = nnodes;
	v->khz_measured = measure_khz();
	read_skew_hook(v);
	clocksync_init(&v->cs);
	pthread_mutex_init(&v->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = v;
	return 0;
}

void vtime_stop(struct vtime *v)
{
	if (!v || !v->started)
		return;
	pthread_mutex_lock(&v->lock);
	v->stop = true;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->thread, NULL);
	v->started = false;
}

void vtime_destroy(struct vtime *v)
{
	if (!v)
		return;
	vtime_stop(v);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
