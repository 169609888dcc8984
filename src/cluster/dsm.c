/*
 * cluster/dsm.c - the DSM runtime: a memfd mapped twice (a registered
 * mapping for the users of guest RAM, an unregistered alias the DSM reads
 * page contents from), userfaultfd for missing and write-protect faults,
 * and the protocol of dsm_proto.c driven from two places under one lock:
 * the fault thread (faults -> requests) and the transport's event-loop
 * thread (messages). Page operations: install with UFFDIO_COPY (write-
 * protected for SHARED), UFFDIO_WRITEPROTECT on/off, drop with
 * fallocate(PUNCH_HOLE) so the next touch is a missing fault again.
 * Messages a node sends itself go through a local FIFO drained before the
 * lock is released, so every channel stays FIFO as the protocol assumes.
 */
#include "cluster/dsm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cluster/dsm_proto.h"
#include "util/clock.h"
#include "util/log.h"

#define PG DSM_PAGE_SIZE
#define WIRE_HDR 16
#define UFFD_BATCH 32
#define DSM_LOG_LIMIT 10 /* refused messages logged per node */

/* On the wire: this header, then PG bytes when data == DSM_D_PAGE. */
struct dsm_wire {
	uint64_t page;
	uint8_t kind, data, flags, pad[5];
};

/* A message to this node itself, waiting in the local FIFO. */
struct local_msg {
	struct dsm_pmsg m;
	uint8_t *buf; /* PG bytes or NULL */
	struct local_msg *next;
};

struct dsm {
	int self, nnodes;
	struct dsm_layout lay;
	uint64_t size, npages, nhome;
	int memfd, uffd, stopfd;
	uint8_t *base;	/* registered */
	uint8_t *alias; /* not registered: the DSM reads pages here */
	struct transport *t;
	pthread_t thread;
	bool started;

	pthread_mutex_t lock;	 /* everything below */
	struct dsm_cache *cache; /* [npages] */
	struct dsm_dir *dir;	 /* [nhome]: by dsm_home_index() */
	uint8_t **saved;	 /* same index: data kept for a grant */
	uint64_t *t_fault;	 /* [npages]: when the request went out */
	uint32_t *events;	 /* [npages]: faults, invalidations, serves */
	uint64_t *t_got;	 /* [npages]: when a copy was installed here */
	struct local_msg *lhead, *ltail;
	uint8_t *bounce; /* page-aligned: UFFDIO_COPY source */
	uint8_t *zero;	 /* page-aligned zeroes */
	uint8_t *copy;	 /* READ op output */
	uint8_t *wire;	 /* send buffer */
	struct dsm_stats st;
	uint64_t send_errors;
};

#define DSM_HOLD_NS 100000ull /* see hold_before_giving_up */

/* ------------------------------------------------------------------ */
/* Page operations                                                     */
/* ------------------------------------------------------------------ */

static uint64_t page_addr(struct dsm *d, uint64_t page)
{
	return (uint64_t)(uintptr_t)d->base + page * PG;
}

static int uffd_wp(struct dsm *d, uint64_t page, bool on)
{
	struct uffdio_writeprotect wp = {
		.range = {page_addr(d, page), PG},
		.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(d->uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

static int uffd_install(struct dsm *d, uint64_t page, const uint8_t *src,
			bool wp)
{
	struct uffdio_copy c = {
		.dst = page_addr(d, page),
		.src = (uint64_t)(uintptr_t)src,
		.len = PG,
		.mode = wp ? UFFDIO_COPY_MODE_WP : 0,
	};

	return ioctl(d->uffd, UFFDIO_COPY, &c) ? -errno : 0;
}

static int uffd_wake(struct dsm *d, uint64_t page)
{
	struct uffdio_range r = {page_addr(d, page), PG};

	return ioctl(d->uffd, UFFDIO_WAKE, &r) ? -errno : 0;
}

static int page_drop(struct dsm *d, uint64_t page)
{
	if (fallocate(d->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(page * PG), PG))
		return -errno;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

static int local_push(struct dsm *d, const struct dsm_pmsg *m,
		      const uint8_t *data)
{
	struct local_msg *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->m = *m;
	if (data) {
		l->buf = malloc(PG);
		if (!l->buf) {
			free(l);
			return -ENOMEM;
		}
		memcpy(l->buf, data, PG);
	}
	if (d->ltail)
		d->ltail->next = l;
	else
		d->lhead = l;
	d->ltail = l;
	return 0;
}

static int send_msg(struct dsm *d, const struct dsm_pmsg *m,
		    const uint8_t *data)
{
	struct dsm_wire w = {.page = m->page,
			     .kind = m->kind,
			     .data = m->data,
			     .flags = m->flags};
	uint32_t len = WIRE_HDR + (data ? PG : 0);
	int rc;

	if (data)
		d->st.pages_sent++;
	if (m->to == d->self)
		return local_push(d, m, data);
	memcpy(d->wire, &w, WIRE_HDR);
	if (data)
		memcpy(d->wire + WIRE_HDR, data, PG);
	rc = d->t ? transport_send(d->t, m->to, MSG_DSM, d->wire, len) :
		    -ENOTCONN;
	if (rc && d->send_errors++ < DSM_LOG_LIMIT)
		pr_err("dsm: send %s page %lu to node %d: %s",
		       dsm_kind_name(m->kind), (unsigned long)m->page, m->to,
		       strerror(-rc));
	d->st.msgs_sent++;
	d->st.bytes_sent += len;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Performing a step's output                                          */
/* ------------------------------------------------------------------ */

static void record_latency(struct dsm *d, uint64_t page)
{
	uint64_t ns, us;
	int b = 0;

	if (!d->t_fault[page])
		return;
	ns = clock_mono_ns() - d->t_fault[page];
	d->t_fault[page] = 0;
	us = ns / 1000;
	while (us > 1 && b < DSM_LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	d->st.lat_hist[b]++;
	d->st.lat_count++;
	d->st.lat_sum_ns += ns;
}

static uint8_t **saved_slot(struct dsm *d, uint64_t page)
{
	return &d->saved[dsm_home_index(page, &d->lay)];
}

static int op_save(struct dsm *d, uint64_t page, const uint8_t *in)
{
	uint8_t **s = saved_slot(d, page);

	if (!in)
		return -EPROTO;
	if (!*s)
		*s = malloc(PG);
	if (!*s)
		return -ENOMEM;
	memcpy(*s, in, PG);
	return 0;
}

static int op_install(struct dsm *d, uint64_t page, const struct dsm_out *o,
		      int data, const uint8_t *in)
{
	const uint8_t *src = d->zero;

	if (data == DSM_D_PAGE) {
		if (!in)
			return -EPROTO;
		memcpy(d->bounce, in, PG);
		src = d->bounce;
	} else {
		d->st.zero_grants++;
	}
	record_latency(d, page);
	d->t_got[page] = clock_mono_ns();
	return uffd_install(d, page, src, o->install_wp);
}

/* Page operations of @o, in the order the protocol needs them. */
static int do_ops(struct dsm *d, uint64_t page, const struct dsm_out *o,
		  int data, const uint8_t *in)
{
	int rc = 0;

	if (o->ops & DSM_OP_SAVE)
		rc = op_save(d, page, in);
	if (!rc && (o->ops & DSM_OP_WP))
		rc = uffd_wp(d, page, true);
	/* the page is held: the copy always works, and the home needs it */
	if (o->ops & DSM_OP_READ)
		memcpy(d->copy, d->alias + page * PG, PG);
	if (!rc && (o->ops & DSM_OP_DROP))
		rc = page_drop(d, page);
	if (!rc && (o->ops & DSM_OP_INSTALL))
		rc = op_install(d, page, o, data, in);
	if (!rc && (o->ops & DSM_OP_UNWP)) {
		if (d->cache[page].state == DSM_EXCLUSIVE && d->t_fault[page])
			record_latency(d, page);
		d->t_got[page] = clock_mono_ns();
		rc = uffd_wp(d, page, false);
	}
	if (!rc && (o->ops & DSM_OP_WAKE))
		rc = uffd_wake(d, page);
	return rc;
}

static void count_msg(struct dsm *d, const struct dsm_pmsg *m)
{
	if (m->kind == DSM_FETCH_INV && m->to != m->from)
		d->st.inval_sent++;
	if (m->kind == DSM_REQ_READ || m->kind == DSM_REQ_WRITE)
		d->st.requests++;
}

/* Messages of @o: an ACK carries the page read, a grant the saved one. */
static int do_sends(struct dsm *d, uint64_t page, const struct dsm_out *o)
{
	uint8_t **s = saved_slot(d, page);
	const uint8_t *data;
	int i, rc = 0, r;

	for (i = 0; i < o->n; i++) {
		const struct dsm_pmsg *m = &o->msg[i];

		data = NULL;
		if (m->data == DSM_D_PAGE)
			data = m->kind == DSM_ACK ? d->copy : *s;
		if (m->data == DSM_D_PAGE && !data)
			return -EPROTO;
		count_msg(d, m);
		r = send_msg(d, m, data);
		rc = rc ? rc : r;
		if (m->kind == DSM_GRANT_S || m->kind == DSM_GRANT_E) {
			free(*s);
			*s = NULL;
		}
	}
	return rc;
}

static int do_out(struct dsm *d, uint64_t page, const struct dsm_out *o,
		  int data, const uint8_t *in)
{
	int rc = do_ops(d, page, o, data, in);

	if (rc)
		pr_err("dsm: page %lu: page operation failed: %s",
		       (unsigned long)page, strerror(-rc));
	return do_sends(d, page, o) ?: rc;
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */
/* ------------------------------------------------------------------ */

static void count_recv(struct dsm *d, const struct dsm_pmsg *m)
{
	if (m->page < d->npages &&
	    (m->kind == DSM_FETCH_INV || m->kind == DSM_FETCH_DOWN ||
	     ((m->kind == DSM_REQ_READ || m->kind == DSM_REQ_WRITE) &&
	      m->from != d->self)))
		d->events[m->page]++;
	if (m->kind == DSM_FETCH_INV)
		d->st.inval_recv++;
	if (m->kind == DSM_FETCH_DOWN)
		d->st.downgrades++;
}

/* One protocol message for this node (from a peer or from itself). */
static int process(struct dsm *d, const struct dsm_pmsg *m, const uint8_t *data)
{
	struct dsm_out o = {0};
	int rc;

	if (m->kind == DSM_REQ_READ || m->kind == DSM_REQ_WRITE ||
	    m->kind == DSM_ACK)
		rc = dsm_home_msg(&d->dir[dsm_home_index(m->page, &d->lay)],
				  d->self, &d->lay, m, &o);
	else
		rc = dsm_cache_msg(&d->cache[m->page], d->self, &d->lay, m, &o);
	if (rc) {
		if (d->st.proto_errors++ < DSM_LOG_LIMIT)
			pr_warn("dsm: refused %s for page %lu from node %d: %s",
				dsm_kind_name(m->kind), (unsigned long)m->page,
				m->from, strerror(-rc));
		return rc;
	}
	count_recv(d, m);
	return do_out(d, m->page, &o, m->data, data);
}

/* Deliver what this node sent itself; called with the lock held. */
static void drain_local(struct dsm *d)
{
	struct local_msg *l;

	while ((l = d->lhead)) {
		d->lhead = l->next;
		if (!d->lhead)
			d->ltail = NULL;
		if (l->buf)
			d->st.pages_recv++;
		process(d, &l->m, l->buf);
		free(l->buf);
		free(l);
	}
}

static int parse_wire(struct dsm *d, int from, const void *payload,
		      uint32_t len, struct dsm_pmsg *m)
{
	struct dsm_wire w;

	if (len < WIRE_HDR)
		return -EPROTO;
	memcpy(&w, payload, WIRE_HDR);
	m->kind = w.kind;
	m->data = w.data;
	m->flags = w.flags;
	m->from = (int8_t)from;
	m->to = (int8_t)d->self;
	m->page = w.page;
	if (len != WIRE_HDR + (w.data == DSM_D_PAGE ? PG : 0))
		return -EPROTO;
	if (from < 0 || from >= d->nnodes || from == d->self)
		return -EPROTO;
	return dsm_pmsg_check(m, d->nnodes, d->npages);
}

/*
 * A node that has just been given a page keeps it for up to DSM_HOLD_NS
 * before answering a request to give it up, so that the vCPU that faulted
 * gets to use it at least once: without this, two vCPUs spinning on one
 * line can take the page from each other before either has run (the page
 * moves but nothing progresses). Waits outside the lock, on the transport
 * thread, for at most DSM_HOLD_NS. Measured: the cross-node ping-pong
 * round trip went from ~6.7 ms to ~4.2 ms with it (bench/multinode.sh).
 */
static void hold_before_giving_up(struct dsm *d, const void *payload,
				  uint32_t len)
{
	struct dsm_wire w;
	uint64_t got, now;

	if (len < sizeof(w))
		return;
	memcpy(&w, payload, sizeof(w));
	if ((w.kind != DSM_FETCH_INV && w.kind != DSM_FETCH_DOWN) ||
	    w.page >= d->npages)
		return;
	pthread_mutex_lock(&d->lock);
	got = d->t_got[w.page];
	pthread_mutex_unlock(&d->lock);
	now = clock_mono_ns();
	if (got && now - got < DSM_HOLD_NS) {
		struct timespec ts = {
			.tv_nsec = (long)(DSM_HOLD_NS - (now - got))};

		nanosleep(&ts, NULL);
	}
}

bool dsm_handle_msg(struct dsm *d, int from, uint16_t type, const void *payload,
		    uint32_t len)
{
	struct dsm_pmsg m;
	int rc;

	if (type != MSG_DSM)
		return false;
	hold_before_giving_up(d, payload, len);
	pthread_mutex_lock(&d->lock);
	d->st.msgs_recv++;
	d->st.bytes_recv += len;
	rc = parse_wire(d, from, payload, len, &m);
	if (rc) {
		if (d->st.proto_errors++ < DSM_LOG_LIMIT)
			pr_warn("dsm: bad message from node %d (%u bytes): %s",
				from, len, strerror(-rc));
	} else {
		if (m.data == DSM_D_PAGE)
			d->st.pages_recv++;
		process(d, &m,
			m.data == DSM_D_PAGE ?
				(const uint8_t *)payload + WIRE_HDR :
				NULL);
		drain_local(d);
	}
	pthread_mutex_unlock(&d->lock);
	return true;
}

/* ------------------------------------------------------------------ */
/* The fault thread                                                    */
/* ------------------------------------------------------------------ */

static void on_fault(struct dsm *d, const struct uffd_msg *msg)
{
	uint64_t addr = msg->arg.pagefault.address, page;
	uint64_t fl = msg->arg.pagefault.flags;
	struct dsm_out o = {0};
	bool write = fl & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE);

	page = (addr - (uint64_t)(uintptr_t)d->base) / PG;
	if (addr < (uint64_t)(uintptr_t)d->base || page >= d->npages)
		return;
	pthread_mutex_lock(&d->lock);
	d->events[page]++;
	if (fl & UFFD_PAGEFAULT_FLAG_WP)
		d->st.fault_wp++;
	else if (write)
		d->st.fault_write++;
	else
		d->st.fault_read++;
	dsm_cache_fault(&d->cache[page], d->self, &d->lay, page,
			write ? DSM_FAULT_WRITE : DSM_FAULT_READ, &o);
	if (o.n && !d->t_fault[page])
		d->t_fault[page] = clock_mono_ns();
	if (!o.n)
		d->st.fault_spurious += o.ops ? 1 : 0;
	do_out(d, page, &o, DSM_D_NONE, NULL);
	drain_local(d);
	pthread_mutex_unlock(&d->lock);
}

static void *fault_thread(void *arg)
{
	struct dsm *d = arg;
	struct uffd_msg msg[UFFD_BATCH];
	struct pollfd p[2] = {{d->uffd, POLLIN, 0}, {d->stopfd, POLLIN, 0}};
	ssize_t n;
	int i;

	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		n = read(d->uffd, msg, sizeof(msg));
		if (n < 0)
			continue; /* EAGAIN: another wakeup */
		for (i = 0; i < n / (ssize_t)sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				on_fault(d, &msg[i]);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */
/* ------------------------------------------------------------------ */

static int open_uffd(struct dsm *d, struct err *e)
{
	uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	struct uffdio_api api = {.api = UFFD_API, .features = want};
	struct uffdio_register reg = {
		.range = {(uint64_t)(uintptr_t)d->base, d->size},
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_WAKE) |
			(1ull << _UFFDIO_WRITEPROTECT);

	d->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (d->uffd < 0)
		return err_set(e, -errno,
			       "dsm: userfaultfd: %s (vm.unprivileged_"
			       "userfaultfd=0 needs CAP_SYS_PTRACE)",
			       strerror(errno));
	if (ioctl(d->uffd, UFFDIO_API, &api) || (api.features & want) != want)
		return err_set(e, -ENOTSUP,
			       "dsm: userfaultfd lacks write-protect faults on "
			       "shmem (UFFD_FEATURE_WP_HUGETLBFS_SHMEM, Linux "
			       ">= 5.19)");
	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg))
		return err_set(e, -errno, "dsm: UFFDIO_REGISTER: %s",
			       strerror(errno));
	if ((reg.ioctls & need) != need)
		return err_set(e, -ENOTSUP,
			       "dsm: userfaultfd on shmem lacks COPY/WAKE/"
			       "WRITEPROTECT");
	return 0;
}

static int map_memory(struct dsm *d, struct err *e)
{
	d->memfd = memfd_create("dvmm-dsm", MFD_CLOEXEC);
	if (d->memfd < 0)
		return err_set(e, -errno, "dsm: memfd_create: %s",
			       strerror(errno));
	if (ftruncate(d->memfd, (off_t)d->size))
		return err_set(e, -errno, "dsm: ftruncate %lu: %s",
			       (unsigned long)d->size, strerror(errno));
	d->base = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       d->memfd, 0);
	d->alias = mmap(NULL, d->size, PROT_READ, MAP_SHARED, d->memfd, 0);
	if (d->base == MAP_FAILED || d->alias == MAP_FAILED)
		return err_set(e, -ENOMEM, "dsm: mmap %lu bytes: %s",
			       (unsigned long)d->size, strerror(errno));
	return 0;
}

static int alloc_tables(struct dsm *d, struct err *e)
{
	uint64_t nhome = d->nhome, i;

	d->cache = calloc(d->npages, sizeof(*d->cache));
	d->t_fault = calloc(d->npages, sizeof(*d->t_fault));
	d->events = calloc(d->npages, sizeof(*d->events));
	d->t_got = calloc(d->npages, sizeof(*d->t_got));
	d->dir = calloc(nhome, sizeof(*d->dir));
	d->saved = calloc(nhome, sizeof(*d->saved));
	d->bounce = aligned_alloc(PG, PG);
	d->zero = aligned_alloc(PG, PG);
	d->copy = malloc(PG);
	d->wire = malloc(WIRE_HDR + PG);
	if (!d->cache || !d->t_fault || !d->events || !d->t_got || !d->dir ||
	    !d->saved || !d->bounce || !d->zero || !d->copy || !d->wire)
		return err_set(e, -ENOMEM, "dsm: out of memory for %lu pages",
			       (unsigned long)d->npages);
	memset(d->zero, 0, PG);
	for (i = 0; i < nhome; i++)
		dsm_dir_init(&d->dir[i]);
	return 0;
}

int dsm_create(struct dsm **out, const struct dsm_config *cfg, struct err *e)
{
	struct dsm *d;
	int rc;

	if (cfg->nnodes < 1 || cfg->nnodes > DSM_MAX_NODES || cfg->self < 0 ||
	    cfg->self >= cfg->nnodes || !cfg->size || cfg->size % PG)
		return err_set(e, -EINVAL, "dsm: bad configuration");
	d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(e, -ENOMEM, "dsm: out of memory");
	d->self = cfg->self;
	d->nnodes = cfg->nnodes;
	d->size = cfg->size;
	d->npages = cfg->size / PG;
	d->lay.nnodes = cfg->nnodes;
	d->lay.chunk = cfg->home_chunk ? cfg->home_chunk : 1;
	if (d->lay.chunk > d->npages)
		d->lay.chunk = d->npages;
	/* a bound on dsm_home_index() + 1 for every page */
	d->nhome = (d->npages / (d->lay.chunk * (uint64_t)d->nnodes) + 1) *
		   d->lay.chunk;
	d->memfd = d->uffd = d->stopfd = -1;
	d->base = d->alias = MAP_FAILED;
	pthread_mutex_init(&d->lock, NULL);
	rc = map_memory(d, e);
	rc = rc ? rc : alloc_tables(d, e);
	rc = rc ? rc : open_uffd(d, e);
	if (!rc) {
		d->stopfd = eventfd(0, EFD_CLOEXEC);
		if (d->stopfd < 0)
			rc = err_set(e, -errno, "dsm: eventfd: %s",
				     strerror(errno));
	}
	if (rc) {
		dsm_destroy(d);
		return rc;
	}
	*out = d;
	return 0;
}

void *dsm_base(struct dsm *d)
{
	return d->base;
}

uint64_t dsm_size(const struct dsm *d)
{
	return d->size;
}

void dsm_attach(struct dsm *d, struct transport *t)
{
	pthread_mutex_lock(&d->lock);
	d->t = t;
	pthread_mutex_unlock(&d->lock);
}

int dsm_start(struct dsm *d, struct err *e)
{
	int rc = pthread_create(&d->thread, NULL, fault_thread, d);

	if (rc)
		return err_set(e, -rc, "dsm: fault thread: %s", strerror(rc));
	d->started = true;
	return 0;
}

void dsm_get_stats(struct dsm *d, struct dsm_stats *out)
{
	pthread_mutex_lock(&d->lock);
	*out = d->st;
	pthread_mutex_unlock(&d->lock);
}

uint64_t dsm_page_events(struct dsm *d, uint64_t first, uint64_t n)
{
	uint64_t sum = 0;

	pthread_mutex_lock(&d->lock);
	for (uint64_t p = first; p < d->npages && p - first < n; p++)
		sum += d->events[p];
	pthread_mutex_unlock(&d->lock);
	return sum;
}

static void free_tables(struct dsm *d)
{
	uint64_t nhome = d->nhome, i;
	struct local_msg *l;

	while ((l = d->lhead)) {
		d->lhead = l->next;
		free(l->buf);
		free(l);
	}
	for (i = 0; d->saved && i < nhome; i++)
		free(d->saved[i]);
	free(d->saved);
	free(d->dir);
	free(d->cache);
	free(d->t_fault);
	free(d->events);
	free(d->t_got);
	free(d->bounce);
	free(d->zero);
	free(d->copy);
	free(d->wire);
}

void dsm_destroy(struct dsm *d)
{
	uint64_t one = 1;

	if (!d)
		return;
	if (d->started) {
		if (write(d->stopfd, &one, sizeof(one)) < 0)
			pr_warn("dsm: cannot stop the fault thread");
		pthread_join(d->thread, NULL);
	}
	if (d->uffd >= 0)
		close(d->uffd);
	if (d->stopfd >= 0)
		close(d->stopfd);
	if (d->base != MAP_FAILED)
		munmap(d->base, d->size);
	if (d->alias != MAP_FAILED)
		munmap(d->alias, d->size);
	if (d->memfd >= 0)
		close(d->memfd);
	free_tables(d);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static json_t *lat_json(const struct dsm_stats *s)
{
	json_t *h = json_array();
	int i;

	for (i = 0; h && i < DSM_LAT_BUCKETS; i++)
		if (s->lat_hist[i])
			json_array_append_new(
				h, json_pack("{s:I,s:I}", "lt_us",
					     (json_int_t)(2ull << i), "n",
					     (json_int_t)s->lat_hist[i]));
	return json_pack(
		"{s:I,s:f,s:o*}", "count", (json_int_t)s->lat_count, "mean_us",
		s->lat_count ? s->lat_sum_ns / 1e3 / s->lat_count : 0.0,
		"histogram", h);
}

json_t *dsm_stats_json(struct dsm *d)
{
	struct dsm_stats s;

	dsm_get_stats(d, &s);
	return json_pack(
		"{s:{s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
		"s:I,s:I,s:I,s:o*}",
		"faults", "read", (json_int_t)s.fault_read, "write",
		(json_int_t)s.fault_write, "write_protect",
		(json_int_t)s.fault_wp, "spurious",
		(json_int_t)s.fault_spurious, "requests",
		(json_int_t)s.requests, "pages_sent", (json_int_t)s.pages_sent,
		"pages_received", (json_int_t)s.pages_recv, "zero_grants",
		(json_int_t)s.zero_grants, "invalidations_sent",
		(json_int_t)s.inval_sent, "invalidations_received",
		(json_int_t)s.inval_recv, "downgrades",
		(json_int_t)s.downgrades, "msgs_sent", (json_int_t)s.msgs_sent,
		"msgs_received", (json_int_t)s.msgs_recv, "bytes_sent",
		(json_int_t)s.bytes_sent, "bytes_received",
		(json_int_t)s.bytes_recv, "protocol_errors",
		(json_int_t)s.proto_errors, "fault_latency", lat_json(&s));
}
