/*
 * tests/tools/dsm_bench.c - DSM benchmark between 2 node processes on
 * loopback. Node 0 makes pages EXCLUSIVE (or SHARED) there; node 1 times
 * single accesses:
 *   read   - read fault on a page node 0 holds writable (downgrade + data)
 *   write  - write fault on a page node 0 holds writable (invalidate + data)
 *   inval  - write to a page both hold read-only (invalidate, no data)
 *   stream - pages/s reading remote pages in order with one thread
 * and, in the same run, the floor: a userfaultfd fault resolved by a local
 * handler with UFFDIO_COPY after one transport round trip that brings
 * 4 KiB (floor), and its two parts alone (uffd_local, rtt_4k).
 * Prints "BENCH name n=.. median_us=.. p99_us=.." lines.
 *
 * usage: dsm_bench [--pages N] [--stream N]
 */
#include "dsm_tool.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PGSZ 4096

struct bopts {
	int pages, stream;
};

/* The floor: a local uffd region whose handler fetches 4 KiB by RTT. */
struct floor {
	struct node *n;
	int uffd;
	uint8_t *region;
	bool remote; /* ask node 0 for the data first */
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t pongs;
	uint8_t *page; /* page-aligned */
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *ns, int n)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	printf("BENCH %s n=%d median_us=%.1f p99_us=%.1f\n", name, n,
	       ns[n / 2] / 1e3, ns[(size_t)n * 99 / 100] / 1e3);
}

/* Event-loop side: node 0 answers a PING with 4 KiB; node 1 takes it. */
static void extra(struct node *n, int from, const uint8_t *buf, uint32_t len)
{
	struct floor *f = n->extra_opaque;
	struct tool_msg m;
	uint8_t reply[sizeof(m) + PGSZ];

	memcpy(&m, buf, sizeof(m));
	if (m.op == OP_PING) {
		m.op = OP_PONG;
		memset(reply, 0x5a, sizeof(reply));
		memcpy(reply, &m, sizeof(m));
		transport_send(n->t, from, MSG_DSM_TOOL, reply, sizeof(reply));
		return;
	}
	if (!f || len != sizeof(reply))
		return;
	pthread_mutex_lock(&f->lock);
	memcpy(f->page, buf + sizeof(m), PGSZ);
	f->pongs++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

/* One 4 KiB round trip to node 0; false if the peer went away. */
static bool rtt_4k(struct floor *f)
{
	struct tool_msg m = {.op = OP_PING};
	uint64_t want;
	bool ok;

	pthread_mutex_lock(&f->lock);
	want = f->pongs + 1;
	pthread_mutex_unlock(&f->lock);
	if (transport_send(f->n->t, 0, MSG_DSM_TOOL, &m, sizeof(m)))
		return false;
	pthread_mutex_lock(&f->lock);
	while (f->pongs < want && !f->n->down)
		pthread_cond_wait(&f->cond, &f->lock);
	ok = f->pongs >= want;
	pthread_mutex_unlock(&f->lock);
	return ok;
}

static void *floor_handler(void *arg)
{
	struct floor *f = arg;
	struct uffd_msg msg;
	struct pollfd p = {f->uffd, POLLIN, 0};

	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		if (poll(&p, 1, 100) <= 0 ||
		    read(f->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		if (f->remote && !rtt_4k(f))
			break;
		struct uffdio_copy c = {
			.dst = msg.arg.pagefault.address & ~(uint64_t)4095,
			.src = (uint64_t)(uintptr_t)f->page,
			.len = PGSZ,
		};
		ioctl(f->uffd, UFFDIO_COPY, &c);
	}
	return NULL;
}

static int floor_open(struct floor *f, struct node *n, int pages)
{
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg = {.mode = UFFDIO_REGISTER_MODE_MISSING};

	memset(f, 0, sizeof(*f));
	f->n = n;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->page = aligned_alloc(PGSZ, PGSZ);
	f->region = mmap(NULL, (size_t)pages * 2 * PGSZ, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	f->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (!f->page || f->region == MAP_FAILED || f->uffd < 0 ||
	    ioctl(f->uffd, UFFDIO_API, &api))
		return -1;
	memset(f->page, 0x5a, PGSZ);
	reg.range.start = (uint64_t)(uintptr_t)f->region;
	reg.range.len = (uint64_t)pages * 2 * PGSZ;
	return ioctl(f->uffd, UFFDIO_REGISTER, &reg) ? -1 : 0;
}

/* Time a read of one byte of each of @n pages from @base. */
static uint64_t *time_reads(volatile uint8_t *base, int n)
{
	uint64_t *ns = calloc((size_t)n, sizeof(*ns)), t0;
	int i;

	for (i = 0; ns && i < n; i++) {
		t0 = tool_now_ns();
		(void)base[(size_t)i * PGSZ];
		ns[i] = tool_now_ns() - t0;
	}
	return ns;
}

static uint64_t *time_writes(volatile uint8_t *base, int n)
{
	uint64_t *ns = calloc((size_t)n, sizeof(*ns)), t0;
	int i;

	for (i = 0; ns && i < n; i++) {
		t0 = tool_now_ns();
		base[(size_t)i * PGSZ] = 1;
		ns[i] = tool_now_ns() - t0;
	}
	return ns;
}

static int bench_floor(struct node *n, int pages)
{
	struct floor f;
	pthread_t th;
	uint64_t *ns;
	int i;

	if (floor_open(&f, n, pages)) {
		fprintf(stderr, "dsm_bench: floor: userfaultfd: %s\n",
			strerror(errno));
		return -1;
	}
	n->extra_opaque = &f;
	pthread_create(&th, NULL, floor_handler, &f);
	ns = time_reads(f.region, pages);
	report("uffd_local", ns, pages);
	free(ns);
	ns = calloc((size_t)pages, sizeof(*ns));
	for (i = 0; i < pages; i++) {
		uint64_t t0 = tool_now_ns();

		rtt_4k(&f);
		ns[i] = tool_now_ns() - t0;
	}
	report("rtt_4k", ns, pages);
	free(ns);
	f.remote = true;
	ns = time_reads(f.region + (size_t)pages * PGSZ, pages);
	report("floor", ns, pages);
	free(ns);
	__atomic_store_n(&f.stop, true, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	munmap(f.region, (size_t)pages * 2 * PGSZ);
	close(f.uffd);
	return 0;
}

/* Node 0 prepares, node 1 measures; a barrier after each step. */
static int step(struct node *n, int *phase, int who,
		void (*fn)(struct node *, uint8_t *, int), uint8_t *base,
		int np)
{
	if (n->self == who)
		fn(n, base, np);
	return tool_barrier(n, ++*phase);
}

static void dirty(struct node *n, uint8_t *base, int np)
{
	(void)n;
	free(time_writes(base, np));
}

static void touch(struct node *n, uint8_t *base, int np)
{
	(void)n;
	free(time_reads(base, np));
}

static void m_read(struct node *n, uint8_t *base, int np)
{
	uint64_t *ns = time_reads(base, np);

	(void)n;
	report("dsm_read_fault", ns, np);
	free(ns);
}

static void m_write(struct node *n, uint8_t *base, int np)
{
	uint64_t *ns = time_writes(base, np);

	(void)n;
	report("dsm_write_fault", ns, np);
	free(ns);
}

static void m_inval(struct node *n, uint8_t *base, int np)
{
	uint64_t *ns = time_writes(base, np);

	(void)n;
	report("dsm_invalidate", ns, np);
	free(ns);
}

static void m_stream(struct node *n, uint8_t *base, int np)
{
	uint64_t t0 = tool_now_ns();
	double s;

	free(time_reads(base, np));
	s = (tool_now_ns() - t0) / 1e9;
	(void)n;
	printf("BENCH dsm_stream_read pages=%d pages_per_s=%.0f "
	       "MB_per_s=%.1f\n",
	       np, np / s, np * 4096.0 / s / 1e6);
}

static int node_main(int self, int nn, const uint16_t *port, void *arg)
{
	const struct bopts *o = arg;
	uint64_t np = (uint64_t)o->pages, size = (3 * np + o->stream) * PGSZ;
	uint8_t *r, *w, *v, *s;
	struct node n;
	int ph = 0, rc;

	if (tool_node_up(&n, self, nn, port, size, 1))
		return 1;
	n.extra = extra;
	r = n.mem;
	w = r + np * PGSZ;
	v = w + np * PGSZ;
	s = v + np * PGSZ;
	rc = tool_barrier(&n, ++ph);
	rc = rc ?: step(&n, &ph, 0, dirty, r, o->pages);
	rc = rc ?: step(&n, &ph, 1, m_read, r, o->pages);
	rc = rc ?: step(&n, &ph, 0, dirty, w, o->pages);
	rc = rc ?: step(&n, &ph, 1, m_write, w, o->pages);
	rc = rc ?: step(&n, &ph, 0, dirty, v, o->pages);
	rc = rc ?: step(&n, &ph, 1, touch, v, o->pages);
	rc = rc ?: step(&n, &ph, 1, m_inval, v, o->pages);
	rc = rc ?: step(&n, &ph, 0, dirty, s, o->stream);
	rc = rc ?: step(&n, &ph, 1, m_stream, s, o->stream);
	if (!rc && self == 1)
		rc = bench_floor(&n, o->pages);
	rc = rc ?: tool_barrier(&n, ++ph);
	if (self == 1)
		tool_print_stats(&n);
	n.extra = NULL;
	tool_node_down(&n);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct bopts o = {2000, 16384};
	int i;

	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--pages"))
			o.pages = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--stream"))
			o.stream = atoi(argv[i + 1]);
		else
			break;
	}
	if (i != argc || o.pages < 10 || o.stream < 10) {
		fprintf(stderr, "usage: dsm_bench [--pages N] [--stream N]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	return tool_run_nodes(2, 120, node_main, &o) ? 1 : 0;
}
