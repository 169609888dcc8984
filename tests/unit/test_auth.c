/*
 * tests/unit/test_auth.c - the cluster handshake as pure functions: mutual
 * authentication between an accepting and a dialling node, and refusal,
 * each with its own reason, of a wrong secret, protocol version, cluster
 * id, out-of-range id, our own id, a duplicate or departed node, the wrong
 * node answering a dial, a node dialling in the wrong direction, replayed
 * and reflected AUTH messages, malformed and out-of-order messages, and a
 * peer's refusal of us. Failure is sticky.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/auth.h"

#define QMAX 8

/* One end of an in-memory handshake. */
struct side {
	struct auth_cfg cfg;
	struct auth_session s;
	struct auth_peers busy;
	struct auth_out q[QMAX]; /* sent, not yet delivered */
	int nq, head;
	int rc; /* last auth_recv result */
	bool done;
	struct err e;
};

static void side_cfg(struct side *x, int self, int nnodes)
{
	memset(x, 0, sizeof(*x));
	x->cfg.self = self;
	x->cfg.nnodes = nnodes;
	x->cfg.version = CLUSTER_PROTO_VERSION;
	memcpy(x->cfg.cluster_id, "cluster-id-0123", CLUSTER_ID_LEN);
	memcpy(x->cfg.secret, "a fine secret of 32 bytes.......", 32);
	x->cfg.secret_len = 32;
}

/* Start the session (after any cfg tweaks) and queue its HELLO. */
static void side_start(struct side *x, int expect)
{
	assert_int_equal(auth_init(&x->s, &x->cfg, expect), 0);
	auth_hello(&x->s, &x->q[x->nq++]);
}

/* Deliver @from's next queued message to @to; false if none. */
static bool deliver(struct side *from, struct side *to)
{
	struct auth_out *m, out;

	/* What a failed side sent before failing still arrives. */
	if (from->head == from->nq || to->rc < 0)
		return false;
	m = &from->q[from->head++];
	to->rc = auth_recv(&to->s, m->type, m->buf, m->len, &to->busy, &out,
			   &to->e);
	if (to->rc == AUTH_DONE)
		to->done = true;
	if (out.type) {
		assert_true(to->rc >= 0);
		assert_true(to->nq < QMAX);
		to->q[to->nq++] = out;
	}
	return true;
}

/* Run the handshake to the end, alternating directions. */
static void pump(struct side *a, struct side *b)
{
	bool moved = true;

	while (moved) {
		moved = deliver(a, b);
		moved |= deliver(b, a);
	}
}

/* Node 0 accepting, node 1 dialling it, in a 3-node cluster. */
static void pair(struct side *acc, struct side *dia)
{
	side_cfg(acc, 0, 3);
	side_cfg(dia, 1, 3);
}

static void start_pair(struct side *acc, struct side *dia)
{
	side_start(acc, -1);
	side_start(dia, 0);
}

static void expect_reason(const struct side *x, int rc, const char *needle)
{
	assert_int_equal(x->rc, rc);
	assert_int_equal(x->e.code, rc);
	if (!strstr(x->e.msg, needle))
		fail_msg("reason \"%s\" lacks \"%s\"", x->e.msg, needle);
	assert_false(x->done);
}

static void test_mutual_auth(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	start_pair(&a, &b);
	pump(&a, &b);
	assert_true(a.done);
	assert_true(b.done);
	assert_int_equal(a.s.peer, 1);
	assert_int_equal(b.s.peer, 0);
	assert_int_equal(a.nq, 3); /* HELLO, AUTH, AUTH_OK */
	assert_int_equal(a.q[0].len, AUTH_HELLO_LEN);
	assert_int_equal(a.q[1].type, MSG_AUTH);
	assert_int_equal(a.q[2].type, MSG_AUTH_OK);
	assert_memory_not_equal(a.s.nonce, b.s.nonce, AUTH_NONCE_LEN);
	/* Anything after completion is refused. */
	a.done = false;
	b.head = 2;
	assert_true(deliver(&b, &a));
	expect_reason(&a, -EPROTO, "second AUTH_OK");
}

/* A short secret (the minimum) and a long one both work. */
static void test_secret_lengths(void **state)
{
	size_t lens[] = {AUTH_SECRET_MIN, CLUSTER_SECRET_MAX};
	struct side a, b;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++) {
		pair(&a, &b);
		memset(a.cfg.secret, 0x5a, sizeof(a.cfg.secret));
		memset(b.cfg.secret, 0x5a, sizeof(b.cfg.secret));
		a.cfg.secret_len = b.cfg.secret_len = lens[i];
		start_pair(&a, &b);
		pump(&a, &b);
		assert_true(a.done && b.done);
	}
}

static void test_wrong_secret(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.secret[5] ^= 1;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EACCES, "node 1 failed authentication");
	expect_reason(&b, -EACCES, "node 0 failed authentication");
	/* A secret that is a prefix of the right one fails too. */
	pair(&a, &b);
	b.cfg.secret_len = 16;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EACCES, "failed authentication");
}

static void test_wrong_version(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.version = CLUSTER_PROTO_VERSION + 1;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EPROTO, "protocol version 2, we speak 1");
	expect_reason(&b, -EPROTO, "protocol version 1, we speak 2");
}

static void test_wrong_cluster(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.cluster_id[15] ^= 0x80;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EACCES, "another cluster");
}

static void test_id_out_of_range(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.self = 3; /* a 3-node cluster has ids 0..2 */
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -ERANGE, "node id 3 out of range");
	pair(&a, &b);
	b.cfg.self = 0xffff;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -ERANGE, "node id 65535 out of range");
}

static void test_self_id(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.self = 0;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EINVAL, "our own node id 0");
}

static void test_duplicate(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	a.busy.up = 1u << 1;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EEXIST, "node 1 is already connected");
	pair(&a, &b);
	a.busy.gone = 1u << 1;
	start_pair(&a, &b);
	pump(&a, &b);
	expect_reason(&a, -EEXIST, "node 1 has already left");
	/* Other nodes being busy does not matter. */
	pair(&a, &b);
	a.busy.up = a.busy.gone = 1u << 2;
	start_pair(&a, &b);
	pump(&a, &b);
	assert_true(a.done && b.done);
}

static void test_wrong_peer_outgoing(void **state)
{
	struct side a, b;

	(void)state;
	/* Node 2 dials node 0's address, but node 1 answers there. */
	side_cfg(&a, 1, 3);
	side_cfg(&b, 2, 3);
	side_start(&a, -1);
	side_start(&b, 0);
	assert_true(deliver(&a, &b));
	expect_reason(&b, -EXDEV, "dialled node 0 but node 1 answered");
}

static void test_wrong_direction(void **state)
{
	struct side a, b;

	(void)state;
	/* Node 1 accepts a connection from node 0, which should be dialled. */
	side_cfg(&a, 1, 3);
	side_cfg(&b, 0, 3);
	side_start(&a, -1);
	side_start(&b, 1);
	assert_true(deliver(&b, &a));
	expect_reason(&a, -EINVAL, "node 0 dialled in");
}

static void test_replayed_auth(void **state)
{
	struct side a1, b1, a2, b2;
	struct auth_out old_auth;

	(void)state;
	pair(&a1, &b1);
	start_pair(&a1, &b1);
	pump(&a1, &b1);
	assert_true(a1.done && b1.done);
	old_auth = b1.q[1];
	assert_int_equal(old_auth.type, MSG_AUTH);
	/* A second session: fresh nonces, b's old AUTH replayed. */
	pair(&a2, &b2);
	start_pair(&a2, &b2);
	assert_true(deliver(&b2, &a2)); /* b2's HELLO */
	b2.q[1] = old_auth;
	b2.nq = 2;
	assert_true(deliver(&b2, &a2));
	expect_reason(&a2, -EACCES, "replayed AUTH");
}

static void test_reflected_auth(void **state)
{
	struct side a, b, mirror;

	(void)state;
	/* A stranger sends node 0's own AUTH back to it. */
	pair(&a, &b);
	start_pair(&a, &b);
	assert_true(deliver(&b, &a)); /* HELLO from "node 1" */
	mirror = b;
	mirror.q[0] = a.q[1]; /* a's AUTH */
	mirror.head = 0;
	mirror.nq = 1;
	mirror.rc = 0;
	assert_true(deliver(&mirror, &a));
	expect_reason(&a, -EACCES, "failed authentication");
}

static void feed_one(struct side *x, uint16_t type, const void *buf,
		     uint32_t len)
{
	struct auth_out out;

	x->rc = auth_recv(&x->s, type, buf, len, &x->busy, &out, &x->e);
	if (x->rc == AUTH_DONE)
		x->done = true;
}

static void test_out_of_order(void **state)
{
	uint8_t mac[AUTH_MAC_LEN] = {0};
	struct side a, b;

	(void)state;
	pair(&a, &b);
	start_pair(&a, &b);
	feed_one(&a, MSG_AUTH, mac, sizeof(mac));
	expect_reason(&a, -EPROTO, "AUTH out of order");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_AUTH_OK, NULL, 0);
	expect_reason(&a, -EPROTO, "AUTH_OK out of order");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_HELLO, b.q[0].buf, b.q[0].len);
	assert_int_equal(a.rc, AUTH_MORE);
	feed_one(&a, MSG_HELLO, b.q[0].buf, b.q[0].len);
	expect_reason(&a, -EPROTO, "second HELLO");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_PING, "hi", 2);
	expect_reason(&a, -EPROTO, "unexpected message type 67");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_HEARTBEAT, NULL, 0);
	expect_reason(&a, -EPROTO, "unexpected message type 4");
}

static void test_malformed(void **state)
{
	uint8_t hello[AUTH_HELLO_LEN + 1];
	struct side a, b;

	(void)state;
	pair(&a, &b);
	start_pair(&a, &b);
	memcpy(hello, b.q[0].buf, AUTH_HELLO_LEN);
	feed_one(&a, MSG_HELLO, hello, AUTH_HELLO_LEN - 1);
	expect_reason(&a, -EPROTO, "malformed HELLO (51 bytes)");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_HELLO, hello, 1);
	expect_reason(&a, -EPROTO, "malformed HELLO (1 bytes)");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_HELLO, hello, sizeof(hello));
	expect_reason(&a, -EPROTO, "malformed HELLO (53 bytes)");

	side_start(&a, -1);
	a.rc = 0;
	feed_one(&a, MSG_HELLO, hello, AUTH_HELLO_LEN);
	feed_one(&a, MSG_AUTH, hello, AUTH_MAC_LEN - 1);
	expect_reason(&a, -EPROTO, "malformed AUTH (31 bytes)");
}

static void test_malformed_auth_ok(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	start_pair(&a, &b);
	assert_true(deliver(&b, &a)); /* HELLO */
	assert_true(deliver(&a, &b));
	assert_true(deliver(&b, &a)); /* AUTH */
	feed_one(&a, MSG_AUTH_OK, "x", 1);
	expect_reason(&a, -EPROTO, "malformed AUTH_OK");
}

static void test_sticky_failure(void **state)
{
	struct side a, b;

	(void)state;
	pair(&a, &b);
	b.cfg.version = 9;
	start_pair(&a, &b);
	pump(&a, &b);
	assert_int_equal(a.rc, -EPROTO);
	/* The real HELLO afterwards does not revive it. */
	b.cfg.version = CLUSTER_PROTO_VERSION;
	side_start(&b, 0);
	feed_one(&a, MSG_HELLO, b.q[b.nq - 1].buf, b.q[b.nq - 1].len);
	expect_reason(&a, -EPROTO, "already failed");
}

static void test_peer_refused_us(void **state)
{
	static const char why[] = "node 1 failed\nauthentication";
	struct side a, b;

	(void)state;
	pair(&a, &b);
	start_pair(&a, &b);
	feed_one(&b, MSG_GOODBYE, why, sizeof(why) - 1);
	expect_reason(&b, -ECONNREFUSED,
		      "peer refused us: node 1 failed?authentication");
	side_start(&b, 0);
	b.rc = 0;
	feed_one(&b, MSG_GOODBYE, NULL, 0);
	expect_reason(&b, -ECONNREFUSED, "no reason given");
}

/* Every kind of refusal says something different. */
static void test_reasons_distinct(void **state)
{
	const char *r[] = {
		"failed authentication",
		"protocol version",
		"another cluster",
		"out of range",
		"our own node id",
		"already connected",
		"already left",
		"answered",
		"dialled in",
		"out of order",
		"second HELLO",
		"malformed HELLO",
		"peer refused us",
	};
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(r) / sizeof(r[0]); i++)
		for (j = 0; j < sizeof(r) / sizeof(r[0]); j++)
			if (i != j)
				assert_null(strstr(r[i], r[j]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutual_auth),
		cmocka_unit_test(test_secret_lengths),
		cmocka_unit_test(test_wrong_secret),
		cmocka_unit_test(test_wrong_version),
		cmocka_unit_test(test_wrong_cluster),
		cmocka_unit_test(test_id_out_of_range),
		cmocka_unit_test(test_self_id),
		cmocka_unit_test(test_duplicate),
		cmocka_unit_test(test_wrong_peer_outgoing),
		cmocka_unit_test(test_wrong_direction),
		cmocka_unit_test(test_replayed_auth),
		cmocka_unit_test(test_reflected_auth),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_malformed_auth_ok),
		cmocka_unit_test(test_sticky_failure),
		cmocka_unit_test(test_peer_refused_us),
		cmocka_unit_test(test_reasons_distinct),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
