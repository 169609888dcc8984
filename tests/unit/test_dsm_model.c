/*
 * tests/unit/test_dsm_model.c - a randomized state-space explorer of the
 * DSM coherence protocol. It drives the real transition functions of
 * src/cluster/dsm_proto.c: N nodes, P pages, one FIFO channel per ordered
 * pair of nodes (as TCP gives; a node's messages to itself too), random
 * reads, writes and faults, and the in-flight messages delivered in random
 * channel order. After every step it checks:
 *   - single writer: a page EXCLUSIVE on one node is INVALID on all others;
 *   - no stale copy: every SHARED/EXCLUSIVE copy holds the latest value,
 *     so a read after a completed write returns it;
 *   - the protocol functions never refuse a message the protocol sent;
 * and, whenever the channels drain (often, and at the end), that nothing
 * is left waiting (no deadlock: every request completed) and that the
 * directory matches the caches exactly. Fixed seeds; millions of steps.
 * Then random messages in random states: refused cleanly, by the
 * protocol functions and by the runtime's message handler (dsm.c), and a
 * one-node runtime whose threads fault every page in through userfaultfd.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/dsm.h"
#include "cluster/dsm_proto.h"
#include <pthread.h>

#define MN 4	 /* max nodes in the model */
#define MP 3	 /* max pages */
#define QCAP 256 /* per-channel capacity */

struct mmsg {
	struct dsm_pmsg m;
	int64_t val; /* the page contents, when m.data == DSM_D_PAGE */
};

struct chan {
	struct mmsg q[QCAP];
	int head, len;
};

struct model {
	int n, p;
	struct dsm_layout lay;
	uint64_t rng;
	struct dsm_cache cache[MN][MP];
	int64_t mem[MN][MP]; /* node's copy; -1 = not held */
	struct dsm_dir dir[MP];
	int64_t saved[MP]; /* home: data kept for the grant */
	int64_t latest[MP];
	int64_t ctr;
	struct chan ch[MN][MN];
	uint64_t steps, reads, writes, faults, delivered;
};

static uint64_t rnd(struct model *m)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return m->rng;
}

static void enqueue(struct model *m, const struct mmsg *x)
{
	struct chan *c = &m->ch[x->m.from][x->m.to];

	assert_true(c->len < QCAP);
	c->q[(c->head + c->len++) % QCAP] = *x;
}

/* Perform @out at @node for @page, as dsm.c does; @in is the message. */
static void apply(struct model *m, int node, uint64_t page,
		  const struct dsm_out *out, const struct mmsg *in)
{
	int64_t copy = m->mem[node][page];
	struct mmsg x;
	int i;

	if (out->ops & DSM_OP_SAVE)
		m->saved[page] = in->val;
	if (out->ops & DSM_OP_DROP)
		m->mem[node][page] = -1;
	if (out->ops & DSM_OP_INSTALL)
		m->mem[node][page] = in->m.data == DSM_D_ZERO ? 0 : in->val;
	for (i = 0; i < out->n; i++) {
		x.m = out->msg[i];
		x.val = -1;
		if (x.m.data == DSM_D_PAGE)
			x.val = x.m.kind == DSM_ACK ? copy : m->saved[page];
		if (x.m.data == DSM_D_PAGE)
			assert_true(x.val >= 0);
		enqueue(m, &x);
	}
}

static void check_page(struct model *m, int p)
{
	int i, excl = 0, holders = 0;

	for (i = 0; i < m->n; i++) {
		if (m->cache[i][p].state == DSM_EXCLUSIVE)
			excl++;
		if (m->cache[i][p].state != DSM_INVALID) {
			holders++;
			assert_int_equal(m->mem[i][p], m->latest[p]);
		}
	}
	assert_true(excl <= 1);
	if (excl)
		assert_int_equal(holders, 1);
}

static void do_access(struct model *m)
{
	int node = (int)(rnd(m) % (uint64_t)m->n);
	int p = (int)(rnd(m) % (uint64_t)m->p);
	bool wr = rnd(m) % 3 == 0;
	struct dsm_cache *c = &m->cache[node][p];
	struct dsm_out out = {0};
	struct mmsg none = {.val = -1};

	if (!wr && c->state != DSM_INVALID) {
		assert_int_equal(m->mem[node][p], m->latest[p]);
		m->reads++;
		return;
	}
	if (wr && c->state == DSM_EXCLUSIVE) { /* an atomic increment */
		m->mem[node][p] = m->latest[p] = ++m->ctr;
		m->writes++;
		return;
	}
	m->faults++;
	assert_int_equal(dsm_cache_fault(c, node, &m->lay, (uint64_t)p,
					 wr ? DSM_FAULT_WRITE : DSM_FAULT_READ,
					 &out),
			 0);
	apply(m, node, (uint64_t)p, &out, &none);
}

static void deliver(struct model *m, struct mmsg *x)
{
	struct dsm_out out = {0};
	int to = x->m.to, p = (int)x->m.page;

	assert_int_equal(dsm_pmsg_check(&x->m, m->n, (uint64_t)m->p), 0);
	if (x->m.kind <= DSM_REQ_WRITE || x->m.kind == DSM_ACK)
		assert_int_equal(
			dsm_home_msg(&m->dir[p], to, &m->lay, &x->m, &out), 0);
	else
		assert_int_equal(dsm_cache_msg(&m->cache[to][p], to, &m->lay,
					       &x->m, &out),
				 0);
	apply(m, to, x->m.page, &out, x);
	m->delivered++;
}

/* Deliver the head of a random non-empty channel; false if none. */
static bool deliver_one(struct model *m)
{
	int start = (int)(rnd(m) % (uint64_t)(m->n * m->n)), k, i, j;
	struct chan *c;
	struct mmsg x;

	for (k = 0; k < m->n * m->n; k++) {
		i = (start + k) / m->n % m->n;
		j = (start + k) % m->n;
		c = &m->ch[i][j];
		if (!c->len)
			continue;
		x = c->q[c->head];
		c->head = (c->head + 1) % QCAP;
		c->len--;
		deliver(m, &x);
		return true;
	}
	return false;
}

/* Quiescent: no request waits anywhere, the directory matches. */
static void check_quiet(struct model *m)
{
	int p, i;
	uint16_t sharers;

	for (p = 0; p < m->p; p++) {
		struct dsm_dir *d = &m->dir[p];

		assert_false(d->busy);
		assert_int_equal(d->qlen, 0);
		sharers = 0;
		for (i = 0; i < m->n; i++) {
			assert_int_equal(m->cache[i][p].pending, 0);
			if (m->cache[i][p].state == DSM_SHARED)
				sharers |= (uint16_t)(1u << i);
			if (m->cache[i][p].state == DSM_EXCLUSIVE)
				assert_int_equal(d->owner, i);
		}
		assert_int_equal(d->copyset, sharers);
		if (d->owner >= 0)
			assert_int_equal(sharers, 0);
	}
}

static void model_init(struct model *m, int n, int p, uint64_t seed)
{
	int i, j;

	memset(m, 0, sizeof(*m));
	m->n = n;
	m->p = p;
	m->lay.nnodes = n;
	m->lay.chunk = 1 + seed % 2; /* interleaved, or stripes of 2 */
	m->rng = seed * 0x9E3779B97F4A7C15ull + 1;
	for (j = 0; j < p; j++) {
		dsm_dir_init(&m->dir[j]);
		m->saved[j] = -1;
		for (i = 0; i < n; i++)
			m->mem[i][j] = -1;
	}
}

static void run(int n, int p, uint64_t seed, uint64_t steps)
{
	struct model *m = calloc(1, sizeof(*m));
	int j;

	assert_non_null(m);
	model_init(m, n, p, seed);
	for (m->steps = 0; m->steps < steps; m->steps++) {
		/* bias: deliver more than access, so queues stay short */
		if (rnd(m) % 8 < 3)
			do_access(m);
		else if (!deliver_one(m))
			check_quiet(m);
		for (j = 0; j < p; j++)
			check_page(m, j);
	}
	while (deliver_one(m))
		for (j = 0; j < p; j++)
			check_page(m, j);
	check_quiet(m);
	assert_true(m->writes > 0 && m->reads > 0);
	free(m);
}

static void test_two_nodes(void **state)
{
	uint64_t s;

	(void)state;
	for (s = 1; s <= 20; s++)
		run(2, 1 + (int)(s % 2), s, 400000);
}

static void test_three_nodes(void **state)
{
	uint64_t s;

	(void)state;
	for (s = 1; s <= 20; s++)
		run(3, 1 + (int)(s % 3), s, 400000);
}

static void test_four_nodes(void **state)
{
	uint64_t s;

	(void)state;
	for (s = 1; s <= 10; s++)
		run(4, 1 + (int)(s % 3), s, 400000);
}

/* One page, four nodes, heavy contention: the hardest interleavings. */
static void test_contention(void **state)
{
	uint64_t s;

	(void)state;
	for (s = 100; s < 110; s++)
		run(4, 1, s, 400000);
}

/* Random messages in random states: refused or accepted, never a crash. */
static void test_garbage(void **state)
{
	struct model m;
	struct dsm_out out;
	struct dsm_pmsg x;
	struct dsm_dir d;
	struct dsm_cache c;
	int i, rc;

	(void)state;
	model_init(&m, 3, 1, 7);
	for (i = 0; i < 200000; i++) {
		memset(&out, 0, sizeof(out));
		x.kind = (uint8_t)(rnd(&m) % 10);
		x.data = (uint8_t)(rnd(&m) % 4);
		x.flags = (uint8_t)(rnd(&m) % 3);
		x.from = (int8_t)(rnd(&m) % 4);
		x.to = (int8_t)(rnd(&m) % 4);
		x.page = rnd(&m) % 3;
		if (dsm_pmsg_check(&x, 3, 3))
			continue;
		if (i % 50 == 0) {
			dsm_dir_init(&d);
			memset(&c, 0, sizeof(c));
		}
		c.state = c.state > DSM_EXCLUSIVE ? DSM_INVALID : c.state;
		rc = dsm_home_msg(&d, x.to, &m.lay, &x, &out);
		assert_true(rc == 0 || rc == -EPROTO);
		assert_true(d.qlen <= 3);
		rc = dsm_cache_msg(&c, x.to, &m.lay, &x, &out);
		assert_true(rc == 0 || rc == -EPROTO);
		assert_true(out.n <= DSM_OUT_MAX);
	}
}

/* A runtime, or skip when this kernel/sandbox has no usable uffd. */
static struct dsm *runtime(int self, int nnodes, uint64_t pages)
{
	struct dsm_config c = {
		.self = self, .nnodes = nnodes, .size = pages * DSM_PAGE_SIZE};
	struct err e = {0};
	struct dsm *d = NULL;

	if (dsm_create(&d, &c, &e)) {
		fprintf(stderr, "skipped: %s\n", e.msg);
		return NULL;
	}
	return d;
}

/* Random and mutated MSG_DSM payloads into a node: never a crash. */
static void test_runtime_garbage(void **state)
{
	uint8_t buf[16 + DSM_PAGE_SIZE] = {0};
	static const uint32_t lens[] = {0, 8, 15, 16, 17, 4111, 4112, 4113};
	struct dsm_stats st;
	struct model m;
	struct dsm *d;
	int i, from;

	(void)state;
	d = runtime(0, 3, 32);
	if (!d)
		skip();
	model_init(&m, 3, 1, 11);
	for (i = 0; i < 100000; i++) {
		uint64_t page = rnd(&m) % 40;

		memcpy(buf, &page, 8);
		buf[8] = (uint8_t)(rnd(&m) % 10); /* kind */
		buf[9] = (uint8_t)(rnd(&m) % 4);  /* data */
		buf[10] = (uint8_t)(rnd(&m) % 3); /* flags */
		from = (int)(rnd(&m) % 5) - 1;
		assert_true(dsm_handle_msg(d, from, MSG_DSM, buf,
					   lens[rnd(&m) % 8]));
	}
	assert_false(dsm_handle_msg(d, 1, MSG_PING, buf, 16));
	dsm_get_stats(d, &st);
	assert_true(st.proto_errors > 0);
	dsm_destroy(d);
}

struct toucher {
	uint8_t *mem;
	int pages, id;
};

static void *touch_pages(void *arg)
{
	struct toucher *t = arg;
	int i;

	for (i = 0; i < t->pages; i++)
		if (i % 2 == t->id)
			t->mem[i * DSM_PAGE_SIZE + 8] = (uint8_t)(i + 1);
	for (i = 0; i < t->pages; i++)
		if (t->mem[i * DSM_PAGE_SIZE + 8] != (uint8_t)(i + 1) &&
		    t->mem[i * DSM_PAGE_SIZE + 8] != 0)
			return (void *)1;
	return NULL;
}

/* One node is its own home: every fault served locally, zero grants. */
static void test_runtime_one_node(void **state)
{
	struct toucher t[2];
	pthread_t th[2];
	struct dsm_stats st;
	struct err e = {0};
	struct dsm *d;
	void *r;
	int i, n = 256;

	(void)state;
	d = runtime(0, 1, (uint64_t)n);
	if (!d)
		skip();
	assert_int_equal(dsm_start(d, &e), 0);
	for (i = 0; i < 2; i++) {
		t[i] = (struct toucher){dsm_base(d), n, i};
		pthread_create(&th[i], NULL, touch_pages, &t[i]);
	}
	for (i = 0; i < 2; i++) {
		pthread_join(th[i], &r);
		assert_null(r);
	}
	for (i = 0; i < n; i++)
		assert_int_equal(
			((uint8_t *)dsm_base(d))[i * DSM_PAGE_SIZE + 8],
			(uint8_t)(i + 1));
	dsm_get_stats(d, &st);
	assert_true(st.fault_read + st.fault_write + st.fault_wp >=
		    (uint64_t)n);
	assert_int_equal(st.proto_errors, 0);
	assert_true(st.zero_grants >= (uint64_t)n);
	dsm_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_nodes),
		cmocka_unit_test(test_three_nodes),
		cmocka_unit_test(test_four_nodes),
		cmocka_unit_test(test_contention),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_runtime_garbage),
		cmocka_unit_test(test_runtime_one_node),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
