/*
 * tests/tools/dsm_stress.c - stress test of the guest-memory DSM without
 * vCPUs: N node processes on loopback whose host threads read, write and
 * atomically increment shared pages through the DSM (each access may
 * fault and move the page). Phases, each checked exactly by every node:
 *   counters  - every thread does lock-prefixed increments of counters
 *               packed two per page; each counter's total is exact;
 *   rings     - a producer/consumer ring from node i to node i+1: items
 *               arrive complete and in order;
 *   checksum  - all threads of all nodes write interleaved words of one
 *               region; every word and the sum are checked on every node.
 * Prints "PASS ..." lines and per-node STATS; exits 0 when all passed.
 *
 * usage: dsm_stress [--nodes N] [--threads T] [--iters K] [--items M]
 *                   [--timeout SEC] [--home-chunk PAGES] [--tag STRING]
 * --home-chunk deals the pages to their homes in stripes of that many
 * (default 1: interleaved; a large value: one range per node).
 */
#include "dsm_tool.h"

#define NCOUNTERS 8 /* two per page, pages 0-3 */
#define RING_BASE 4 /* ring i: pages RING_BASE + 8 i ... */
#define RING_PAGES 8
#define RING_SLOTS 64
#define CK_PAGES 16

struct opts {
	int nodes, threads, iters, items, timeout;
	int chunk; /* --home-chunk: pages per home stripe */
};

struct worker {
	struct node *n;
	const struct opts *o;
	int tid;
	int fail;
};

static uint64_t *counter(struct node *n, int c)
{
	return (uint64_t *)(n->mem + (c / 2) * 4096 + (c % 2) * 64);
}

static int ck_base(const struct opts *o)
{
	return RING_BASE + RING_PAGES * o->nodes;
}

static uint64_t *ring_word(struct node *n, int ring, int page, int off)
{
	return (uint64_t *)(n->mem +
			    (RING_BASE + RING_PAGES * ring + page) * 4096 +
			    off);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	return x;
}

/* ------------------------------------------------------------------ */

static void *w_counters(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < w->o->iters; i++)
		__atomic_fetch_add(counter(w->n, (i + w->tid) % NCOUNTERS), 1,
				   __ATOMIC_SEQ_CST);
	return NULL;
}

static uint64_t *slot(struct node *n, int ring, uint64_t k)
{
	int s = (int)(k % RING_SLOTS);

	return ring_word(n, ring, 2 + s / 16, (s % 16) * 256);
}

static uint64_t item(int ring, uint64_t k)
{
	return mix(k * 1000003u + (uint64_t)ring);
}

static void produce(struct worker *w, int ring)
{
	uint64_t *head = ring_word(w->n, ring, 0, 0);
	uint64_t *tail = ring_word(w->n, ring, 1, 0);
	uint64_t k;

	for (k = 0; k < (uint64_t)w->o->items; k++) {
		while (k - __atomic_load_n(tail, __ATOMIC_ACQUIRE) >=
		       RING_SLOTS)
			sched_yield();
		__atomic_store_n(slot(w->n, ring, k), item(ring, k),
				 __ATOMIC_RELAXED);
		__atomic_store_n(head, k + 1, __ATOMIC_RELEASE);
	}
}

static void consume(struct worker *w, int ring)
{
	uint64_t *head = ring_word(w->n, ring, 0, 0);
	uint64_t *tail = ring_word(w->n, ring, 1, 0);
	uint64_t k, v;

	for (k = 0; k < (uint64_t)w->o->items; k++) {
		while (__atomic_load_n(head, __ATOMIC_ACQUIRE) <= k)
			sched_yield();
		v = __atomic_load_n(slot(w->n, ring, k), __ATOMIC_RELAXED);
		if (v != item(ring, k) && !w->fail++)
			fprintf(stderr,
				"node %d: ring %d item %lu = %#lx, want %#lx\n",
				w->n->self, ring, (unsigned long)k,
				(unsigned long)v, (unsigned long)item(ring, k));
		__atomic_store_n(tail, k + 1, __ATOMIC_RELEASE);
	}
}

static void *w_rings(void *arg)
{
	struct worker *w = arg;
	int nn = w->n->nnodes, self = w->n->self;

	if (w->tid == 0)
		produce(w, self);
	else if (w->tid == 1)
		consume(w, (self + nn - 1) % nn);
	return NULL;
}

static void *w_checksum(void *arg)
{
	struct worker *w = arg;
	int nw = w->o->nodes * w->o->threads;
	int me = w->n->self * w->o->threads + w->tid;
	uint64_t *r = (uint64_t *)(w->n->mem + ck_base(w->o) * 4096);
	int j;

	for (j = me; j < CK_PAGES * 512; j += nw)
		r[j] = mix((uint64_t)j);
	return NULL;
}

/* Run @fn on the node's threads and join them; failures summed. */
static int run_threads(struct node *n, const struct opts *o,
		       void *(*fn)(void *))
{
	pthread_t th[64];
	struct worker w[64];
	int i, fail = 0, nt = o->threads < 2 ? 2 : o->threads;

	for (i = 0; i < nt; i++) {
		w[i] = (struct worker){.n = n, .o = o, .tid = i};
		pthread_create(&th[i], NULL, fn, &w[i]);
	}
	for (i = 0; i < nt; i++) {
		pthread_join(th[i], NULL);
		fail += w[i].fail;
	}
	return fail;
}

/* ------------------------------------------------------------------ */

static int check_counters(struct node *n, const struct opts *o)
{
	uint64_t want = (uint64_t)o->nodes * o->threads * o->iters / NCOUNTERS,
		 v;
	int c, bad = 0;

	for (c = 0; c < NCOUNTERS; c++) {
		v = __atomic_load_n(counter(n, c), __ATOMIC_SEQ_CST);
		if (v != want && !bad++)
			fprintf(stderr, "node %d: counter %d = %lu, want %lu\n",
				n->self, c, (unsigned long)v,
				(unsigned long)want);
	}
	if (!bad)
		printf("PASS counters node=%d counters=%d each=%lu total=%lu\n",
		       n->self, NCOUNTERS, (unsigned long)want,
		       (unsigned long)want * NCOUNTERS);
	return bad;
}

static int check_checksum(struct node *n, const struct opts *o)
{
	uint64_t *r = (uint64_t *)(n->mem + ck_base(o) * 4096);
	uint64_t sum = 0, want = 0;
	int j, bad = 0;

	for (j = 0; j < CK_PAGES * 512; j++) {
		sum += r[j];
		want += mix((uint64_t)j);
		if (r[j] != mix((uint64_t)j) && !bad++)
			fprintf(stderr, "node %d: word %d = %#lx\n", n->self, j,
				(unsigned long)r[j]);
	}
	if (!bad && sum == want)
		printf("PASS checksum node=%d words=%d writers=%d sum=%#lx\n",
		       n->self, CK_PAGES * 512, o->nodes * o->threads,
		       (unsigned long)sum);
	return bad || sum != want;
}

static int phases(struct node *n, const struct opts *o)
{
	uint64_t t0 = tool_now_ns();
	int bad = 0;

	bad += run_threads(n, o, w_counters);
	if (tool_barrier(n, 1))
		return -1;
	bad += check_counters(n, o);
	if (tool_barrier(n, 2))
		return -1;
	bad += run_threads(n, o, w_rings);
	if (!bad)
		printf("PASS rings node=%d items=%d\n", n->self, o->items);
	if (tool_barrier(n, 3))
		return -1;
	bad += run_threads(n, o, w_checksum);
	if (tool_barrier(n, 4))
		return -1;
	bad += check_checksum(n, o);
	if (tool_barrier(n, 5))
		return -1;
	printf("node %d: done in %.2f s\n", n->self,
	       (tool_now_ns() - t0) / 1e9);
	return bad;
}

static int node_main(int self, int nn, const uint16_t *port, void *arg)
{
	const struct opts *o = arg;
	struct node n;
	int bad;

	if (tool_node_up(&n, self, nn, port,
			 (uint64_t)(ck_base(o) + CK_PAGES) * 4096,
			 (uint64_t)o->chunk))
		return 1;
	bad = phases(&n, o);
	tool_print_stats(&n);
	tool_node_down(&n);
	return bad ? 1 : 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
	int i, v;

	*o = (struct opts){2, 4, 2000, 2000, 60, 1};
	for (i = 1; i + 1 < argc; i += 2) {
		v = atoi(argv[i + 1]);
		if (!strcmp(argv[i], "--nodes"))
			o->nodes = v;
		else if (!strcmp(argv[i], "--threads"))
			o->threads = v;
		else if (!strcmp(argv[i], "--iters"))
			o->iters = v;
		else if (!strcmp(argv[i], "--items"))
			o->items = v;
		else if (!strcmp(argv[i], "--timeout"))
			o->timeout = v;
		else if (!strcmp(argv[i], "--home-chunk"))
			o->chunk = v;
		else if (strcmp(argv[i], "--tag")) /* --tag: for pgrep */
			return -1;
	}
	if (i != argc || o->nodes < 2 || o->nodes > 8 || o->threads < 2 ||
	    o->threads > 64 || o->iters < NCOUNTERS || o->items < 1 ||
	    o->chunk < 1)
		return -1;
	o->iters -= o->iters % NCOUNTERS;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	uint64_t t0 = tool_now_ns();

	if (parse(argc, argv, &o)) {
		fprintf(stderr, "usage: dsm_stress [--nodes 2-8] [--threads "
				"2-64] [--iters K] [--items M] [--timeout S] "
				"[--home-chunk P]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (tool_run_nodes(o.nodes, o.timeout, node_main, &o)) {
		printf("FAIL dsm_stress nodes=%d\n", o.nodes);
		return 1;
	}
	printf("PASS dsm_stress nodes=%d threads=%d iters=%d items=%d "
	       "home_chunk=%d time=%.2fs\n",
	       o.nodes, o.threads, o.iters, o.items, o.chunk,
	       (tool_now_ns() - t0) / 1e9);
	return 0;
}
