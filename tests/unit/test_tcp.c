/*
 * tests/unit/test_tcp.c - the TCP cluster engine over real sockets on
 * 127.0.0.1: 2- and 3-node meshes (ports picked by the kernel: each node
 * listens on port 0 and later nodes learn the port), in-order delivery,
 * 1 MiB messages, back-pressure against a peer that does not read (sender
 * blocks, is released by draining or by the peer's death; the event-loop
 * thread never blocks), failure detection (silence, close, reset, garbage,
 * goodbye) with its reason, strangers (garbage, wrong secret, a duplicate
 * id, silence) refused and counted while the mesh keeps working, and
 * start-up failures naming the node. A "raw peer" is a plain socket that
 * runs the handshake itself with auth.c and msg.c, so it can misbehave.
 * Every wait is on a condition variable or a poll with a deadline.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/auth.h"
#include "cluster/msg.h"
#include "cluster/transport.h"

#define WAIT_MS 5000
#define MSG_SEQ (MSG_USER_BASE + 10) /* test messages: u64 seq + pattern */
#define MAX_EV 16

static const char secret[] = "test secret, 32 bytes long......";

/* ------------------------------------------------------------------ */
/* A node under test and what its callbacks saw                        */
/* ------------------------------------------------------------------ */

struct tnode {
	struct transport *t;
	int id;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int nev;
	int ev_node[MAX_EV];
	enum peer_event ev[MAX_EV];
	char why[MAX_EV][ERR_MSG_MAX];
	uint64_t got[CLUSTER_MAX_NODES]; /* MSG_SEQ messages per sender */
	uint64_t bad;			 /* out of order or corrupt */
	/* On a MSG_PING, send flood_n messages of flood_len to its sender. */
	int flood_n;
	uint32_t flood_len;
	int flood_rc;
	bool flood_done;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timespec deadline_in(unsigned int ms)
{
	uint64_t at = mono_ms() + ms;

	return (struct timespec){.tv_sec = (time_t)(at / 1000),
				 .tv_nsec = (long)(at % 1000) * 1000000};
}

/* Wait on n's condvar until @expr holds (evaluated under n->lock). */
#define WAIT_FOR(n, expr, ms)                                                 \
	({                                                                    \
		struct timespec dl_ = deadline_in(ms);                        \
		bool ok_;                                                     \
		pthread_mutex_lock(&(n)->lock);                               \
		while (!(ok_ = (expr)) &&                                     \
		       !pthread_cond_timedwait(&(n)->cond, &(n)->lock, &dl_)) \
			;                                                     \
		ok_ = (expr);                                                 \
		pthread_mutex_unlock(&(n)->lock);                             \
		ok_;                                                          \
	})

static void pattern(uint8_t *p, size_t n, uint64_t seq)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(seq * 131 + i);
}

static bool pattern_ok(const uint8_t *p, size_t n, uint64_t seq)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != (uint8_t)(seq * 131 + i))
			return false;
	return true;
}

/* A MSG_SEQ payload of @len >= 8 bytes. */
static void seq_payload(uint8_t *p, uint32_t len, uint64_t seq)
{
	memcpy(p, &seq, sizeof(seq));
	pattern(p + 8, len - 8, seq);
}

static bool seq_check(const uint8_t *p, uint32_t len, uint64_t want)
{
	uint64_t seq;

	if (len < 8)
		return false;
	memcpy(&seq, p, sizeof(seq));
	return seq == want && pattern_ok(p + 8, len - 8, seq);
}

static void flood(struct tnode *n, int to)
{
	uint8_t *buf = malloc(n->flood_len);
	int i, rc = 0;

	for (i = 0; i < n->flood_n && !rc; i++) {
		seq_payload(buf, n->flood_len, (uint64_t)i);
		rc = transport_send(n->t, to, MSG_SEQ, buf, n->flood_len);
	}
	free(buf);
	pthread_mutex_lock(&n->lock);
	n->flood_rc = rc;
	n->flood_done = true;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static void on_msg(void *opaque, int from, uint16_t type, const void *p,
		   uint32_t len)
{
	struct tnode *n = opaque;

	if (type == MSG_PING && n->flood_n) {
		flood(n, from);
		return;
	}
	pthread_mutex_lock(&n->lock);
	if (type != MSG_SEQ || !seq_check(p, len, n->got[from]))
		n->bad++;
	n->got[from]++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static void on_peer(void *opaque, int node, enum peer_event ev, const char *why)
{
	struct tnode *n = opaque;

	pthread_mutex_lock(&n->lock);
	if (n->nev < MAX_EV) {
		n->ev_node[n->nev] = node;
		n->ev[n->nev] = ev;
		snprintf(n->why[n->nev], ERR_MSG_MAX, "%s", why ? why : "");
		n->nev++;
	}
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

/* Index of the first @ev event about @node, or -1 (n->lock held). */
static int find_ev(struct tnode *n, int node, enum peer_event ev)
{
	int i;

	for (i = 0; i < n->nev; i++)
		if (n->ev_node[i] == node && n->ev[i] == ev)
			return i;
	return -1;
}

static int count_ev(struct tnode *n, enum peer_event ev)
{
	int i, c = 0;

	pthread_mutex_lock(&n->lock);
	for (i = 0; i < n->nev; i++)
		c += n->ev[i] == ev;
	pthread_mutex_unlock(&n->lock);
	return c;
}

static void base_cfg(struct transport_config *c, int self, int nnodes)
{
	int i;

	memset(c, 0, sizeof(*c));
	c->self = self;
	c->nnodes = nnodes;
	for (i = 0; i < nnodes; i++)
		snprintf(c->node[i].host, sizeof(c->node[i].host), "127.0.0.1");
	memcpy(c->cluster_id, "test-cluster-id!", CLUSTER_ID_LEN);
	memcpy(c->secret, secret, 32);
	c->secret_len = 32;
	c->heartbeat_ms = 50;
	c->dead_after_ms = 500;
	c->connect_timeout_ms = WAIT_MS;
	c->handshake_ms = 1000;
}

static void node_init(struct tnode *n, int id)
{
	pthread_condattr_t ca;

	memset(n, 0, sizeof(*n));
	n->id = id;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, &ca);
	pthread_condattr_destroy(&ca);
}

static void node_start(struct tnode *n, const struct transport_config *c)
{
	struct err e = {0};

	node_init(n, c->self);
	assert_int_equal(transport_tcp_create(&n->t, c, on_msg, on_peer, n, &e),
			 0);
	if (transport_start(n->t, &e))
		fail_msg("start node %d: %s", c->self, e.msg);
}

static uint16_t port_of(struct tnode *n)
{
	return n->t->cfg.node[n->id].port;
}

static void node_stop(struct tnode *n)
{
	transport_destroy(n->t);
	n->t = NULL;
	pthread_mutex_destroy(&n->lock);
	pthread_cond_destroy(&n->cond);
}

/* Start nodes 0..count-1 of an @nnodes cluster, each on a free port. */
static void mesh_start(struct tnode *n, int count, int nnodes,
		       const struct transport_config *tmpl)
{
	struct transport_config c;
	int i, j;

	for (i = 0; i < count; i++) {
		c = *tmpl;
		c.self = i;
		c.nnodes = nnodes;
		for (j = 0; j < i; j++)
			c.node[j].port = port_of(&n[j]);
		node_start(&n[i], &c);
	}
}

static void mesh_up(struct tnode *n, int count)
{
	struct err e = {0};
	int i;

	for (i = 0; i < count; i++)
		if (transport_wait_connected(n[i].t, &e))
			fail_msg("node %d: %s", i, e.msg);
}

static void send_seq(struct tnode *n, int to, uint64_t seq, uint32_t len)
{
	uint8_t *buf = malloc(len);

	seq_payload(buf, len, seq);
	assert_int_equal(transport_send(n->t, to, MSG_SEQ, buf, len), 0);
	free(buf);
}

static uint64_t stat_of(struct tnode *n, int node, size_t off)
{
	struct transport_stats st;

	transport_get_stats(n->t, node, &st);
	return *(uint64_t *)((char *)&st + off);
}

/* Poll a counter until it reaches @min (there is no event for stats). */
static bool wait_stat(struct tnode *n, int node, size_t off, uint64_t min)
{
	uint64_t end = mono_ms() + WAIT_MS;
	struct timespec ms = {0, 1000000};

	while (stat_of(n, node, off) < min) {
		if (mono_ms() >= end)
			return false;
		nanosleep(&ms, NULL);
	}
	return true;
}

#define STAT(field) offsetof(struct transport_stats, field)

/* ------------------------------------------------------------------ */
/* Raw peers: a socket speaking the protocol by hand                   */
/* ------------------------------------------------------------------ */

struct raw {
	int fd;
	struct auth_cfg cfg;
	struct auth_session s;
	struct msg_decoder dec;
	uint8_t buf[65536];
	size_t off, len;
};

static int tcp_connect(uint16_t port, int rcvbuf)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void raw_open(struct raw *r, uint16_t port, int self, int nnodes,
		     int rcvbuf)
{
	memset(r, 0, sizeof(*r));
	r->fd = tcp_connect(port, rcvbuf);
	r->cfg.self = self;
	r->cfg.nnodes = nnodes;
	r->cfg.version = CLUSTER_PROTO_VERSION;
	memcpy(r->cfg.cluster_id, "test-cluster-id!", CLUSTER_ID_LEN);
	memcpy(r->cfg.secret, secret, 32);
	r->cfg.secret_len = 32;
	msg_decoder_init(&r->dec, MSG_MAX_PAYLOAD);
}

static void raw_close(struct raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	msg_decoder_free(&r->dec);
}

/* False if the node closed the connection under us. */
static bool write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* One write per message, so a refused stranger fails at most once. */
static bool raw_send(struct raw *r, uint16_t type, const void *buf,
		     uint32_t len)
{
	uint8_t *m = malloc(MSG_HDR_SIZE + len);
	bool ok;

	assert_int_equal(msg_encode(m, MSG_HDR_SIZE + len, type, buf, len),
			 MSG_HDR_SIZE + len);
	ok = write_all(r->fd, m, MSG_HDR_SIZE + len);
	free(m);
	return ok;
}

/* Next message: 1, 0 on EOF or reset, -1 on timeout, -2 on garbage. */
static int raw_next(struct raw *r, struct msg *m, int timeout_ms)
{
	struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
	struct err e;
	size_t used;
	ssize_t n;
	int rc;

	for (;;) {
		while (r->off < r->len) {
			rc = msg_decode(&r->dec, r->buf + r->off,
					r->len - r->off, &used, m, &e);
			r->off += used;
			if (rc < 0)
				return -2;
			if (rc == 1)
				return 1;
		}
		if (poll(&pfd, 1, timeout_ms) <= 0)
			return -1;
		n = recv(r->fd, r->buf, sizeof(r->buf), 0);
		if (n <= 0)
			return 0;
		r->off = 0;
		r->len = (size_t)n;
	}
}

/* Run the handshake as node r->cfg.self dialling node @to. */
static int raw_handshake(struct raw *r, int to, struct err *e)
{
	struct auth_peers none = {0};
	struct auth_out out;
	struct msg m;
	int rc;

	assert_int_equal(auth_init(&r->s, &r->cfg, to), 0);
	auth_hello(&r->s, &out);
	raw_send(r, out.type, out.buf, out.len);
	for (;;) {
		rc = raw_next(r, &m, WAIT_MS);
		if (rc <= 0)
			return err_set(e, -EIO, "raw peer: no handshake (%d)",
				       rc);
		rc = auth_recv(&r->s, m.type, m.payload, m.len, &none, &out, e);
		if (rc < 0)
			return rc;
		if (out.type)
			raw_send(r, out.type, out.buf, out.len);
		if (rc == AUTH_DONE)
			return 0;
	}
}

/* Read until the node closes the connection; false on timeout. */
static bool raw_wait_closed(struct raw *r, char *goodbye, size_t cap)
{
	struct msg m;
	int rc;

	if (goodbye)
		goodbye[0] = '\0';
	while ((rc = raw_next(r, &m, WAIT_MS)) == 1)
		if (m.type == MSG_GOODBYE && goodbye)
			msg_printable(goodbye, cap, m.payload, m.len);
	return rc == 0 || rc == -2;
}

/* Node 0 of a 2-node cluster, with node 1 a raw peer. */
static void raw_pair(struct tnode *n, struct raw *r,
		     const struct transport_config *tmpl, int rcvbuf)
{
	struct err e = {0};

	node_start(n, tmpl);
	raw_open(r, port_of(n), 1, 2, rcvbuf);
	if (raw_handshake(r, 0, &e))
		fail_msg("raw handshake: %s", e.msg);
	assert_true(WAIT_FOR(n, find_ev(n, 1, PEER_UP) >= 0, WAIT_MS));
	assert_int_equal(transport_wait_connected(n->t, &e), 0);
}

/* Wait for node 1's PEER_DOWN and check its reason starts with @want. */
static void expect_down(struct tnode *n, int node, const char *want)
{
	int i;

	assert_true(WAIT_FOR(n, find_ev(n, node, PEER_DOWN) >= 0, WAIT_MS));
	pthread_mutex_lock(&n->lock);
	i = find_ev(n, node, PEER_DOWN);
	if (strncmp(n->why[i], want, strlen(want)))
		fail_msg("reason \"%s\", wanted \"%s...\"", n->why[i], want);
	pthread_mutex_unlock(&n->lock);
	assert_int_equal(count_ev(n, PEER_DOWN), 1);
}

/* ------------------------------------------------------------------ */
/* Meshes and delivery                                                 */
/* ------------------------------------------------------------------ */

static void test_mesh2_in_order(void **state)
{
	struct transport_config tmpl;
	struct tnode n[2];
	const uint64_t count = 20000;
	uint64_t i;

	(void)state;
	base_cfg(&tmpl, 0, 2);
	mesh_start(n, 2, 2, &tmpl);
	mesh_up(n, 2);
	assert_true(WAIT_FOR(&n[0], find_ev(&n[0], 1, PEER_UP) >= 0, WAIT_MS));
	assert_true(WAIT_FOR(&n[1], find_ev(&n[1], 0, PEER_UP) >= 0, WAIT_MS));
	for (i = 0; i < count; i++) {
		send_seq(&n[0], 1, i, 8 + (uint32_t)(i % 200));
		send_seq(&n[1], 0, i, 8 + (uint32_t)(i % 57));
	}
	assert_true(WAIT_FOR(&n[1], n[1].got[0] == count, WAIT_MS));
	assert_true(WAIT_FOR(&n[0], n[0].got[1] == count, WAIT_MS));
	assert_int_equal(n[0].bad + n[1].bad, 0);
	assert_int_equal(stat_of(&n[0], 1, STAT(msgs_sent)), count);
	assert_int_equal(stat_of(&n[1], 0, STAT(msgs_recv)), count);
	assert_int_equal(stat_of(&n[0], -1, STAT(bytes_sent)),
			 stat_of(&n[1], -1, STAT(bytes_recv)));
	assert_int_equal(stat_of(&n[0], -1, STAT(auth_failures)), 0);
	/* An orderly shutdown says goodbye. */
	node_stop(&n[1]);
	expect_down(&n[0], 1, "node 1 said goodbye: shutting down");
	assert_int_equal(transport_send(n[0].t, 1, MSG_SEQ, "12345678", 8),
			 -ENOTCONN);
	node_stop(&n[0]);
}

static void test_mesh3(void **state)
{
	struct transport_config tmpl;
	struct tnode n[3];
	const uint64_t count = 2000;
	uint64_t i;
	int a, b;

	(void)state;
	base_cfg(&tmpl, 0, 3);
	mesh_start(n, 3, 3, &tmpl);
	mesh_up(n, 3);
	for (i = 0; i < count; i++)
		for (a = 0; a < 3; a++)
			for (b = 0; b < 3; b++)
				if (a != b)
					send_seq(&n[a], b, i, 64);
	for (a = 0; a < 3; a++)
		for (b = 0; b < 3; b++)
			if (a != b)
				assert_true(WAIT_FOR(
					&n[a], n[a].got[b] == count, WAIT_MS));
	for (a = 0; a < 3; a++) {
		assert_int_equal(n[a].bad, 0);
		assert_int_equal(count_ev(&n[a], PEER_UP), 2);
		assert_int_equal(count_ev(&n[a], PEER_DOWN), 0);
	}
	for (a = 2; a >= 0; a--)
		node_stop(&n[a]);
}

static void test_large_messages(void **state)
{
	struct transport_config tmpl;
	struct tnode n[2];
	const uint64_t count = 24;
	uint8_t *big = calloc(1, MSG_MAX_PAYLOAD + 1);
	uint64_t i;

	(void)state;
	base_cfg(&tmpl, 0, 2);
	mesh_start(n, 2, 2, &tmpl);
	mesh_up(n, 2);
	for (i = 0; i < count; i++) {
		send_seq(&n[0], 1, i, MSG_MAX_PAYLOAD);
		send_seq(&n[1], 0, i, MSG_MAX_PAYLOAD - (uint32_t)i);
	}
	assert_true(WAIT_FOR(&n[1], n[1].got[0] == count, WAIT_MS));
	assert_true(WAIT_FOR(&n[0], n[0].got[1] == count, WAIT_MS));
	assert_int_equal(n[0].bad + n[1].bad, 0);
	assert_int_equal(stat_of(&n[1], 0, STAT(bytes_recv)),
			 count * MSG_MAX_PAYLOAD);
	/* What callers may not send. */
	assert_int_equal(
		transport_send(n[0].t, 1, MSG_SEQ, big, MSG_MAX_PAYLOAD + 1),
		-EMSGSIZE);
	assert_int_equal(transport_send(n[0].t, 1, MSG_HEARTBEAT, NULL, 0),
			 -EINVAL);
	assert_int_equal(transport_send(n[0].t, 0, MSG_SEQ, big, 8), -EINVAL);
	assert_int_equal(transport_send(n[0].t, 2, MSG_SEQ, big, 8), -EINVAL);
	assert_int_equal(transport_send(n[0].t, -1, MSG_SEQ, big, 8), -EINVAL);
	assert_int_equal(transport_send(n[0].t, 1, MSG_SEQ, NULL, 8), -EINVAL);
	/* An empty user message is fine. */
	assert_int_equal(transport_send(n[0].t, 1, MSG_PONG, NULL, 0), 0);
	assert_true(WAIT_FOR(&n[1], n[1].bad == 1, WAIT_MS));
	free(big);
	node_stop(&n[1]);
	node_stop(&n[0]);
}

static void test_single_node(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct err e = {0};

	(void)state;
	base_cfg(&c, 0, 1);
	node_start(&n, &c);
	assert_int_equal(transport_wait_connected(n.t, &e), 0);
	assert_int_equal(transport_start(n.t, &e), -EALREADY);
	node_stop(&n);
}

/* ------------------------------------------------------------------ */
/* Back-pressure                                                       */
/* ------------------------------------------------------------------ */

struct sender {
	struct tnode *n;
	int to, count;
	uint32_t len;
	atomic_int sent;
	int rc;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	uint8_t *buf = malloc(s->len);
	int i;

	s->rc = 0;
	for (i = 0; i < s->count; i++) {
		seq_payload(buf, s->len, (uint64_t)i);
		s->rc = transport_send(s->n->t, s->to, MSG_SEQ, buf, s->len);
		if (s->rc)
			break;
		s->sent++;
	}
	free(buf);
	return NULL;
}

/* Read @count MSG_SEQ messages from a raw peer, checking each. */
static void raw_drain(struct raw *r, int count, uint32_t len)
{
	struct msg m;
	int got = 0;

	while (got < count) {
		assert_int_equal(raw_next(r, &m, WAIT_MS), 1);
		if (m.type == MSG_HEARTBEAT)
			continue;
		assert_int_equal(m.type, MSG_SEQ);
		assert_int_equal(m.len, len);
		assert_true(seq_check(m.payload, m.len, (uint64_t)got));
		got++;
	}
}

static void bp_cfg(struct transport_config *c)
{
	base_cfg(c, 0, 2);
	c->sendq_limit = 256 * 1024;
	c->dead_after_ms = 20000; /* the raw peer sends no heartbeats */
}

static void test_backpressure(void **state)
{
	struct transport_config c;
	struct sender s = {0};
	pthread_t th;
	struct tnode n;
	struct raw r;

	(void)state;
	bp_cfg(&c);
	raw_pair(&n, &r, &c, 16384);
	s.n = &n;
	s.to = 1;
	s.count = 400; /* 25 MiB: more than socket buffers and the limit */
	s.len = 65536;
	assert_int_equal(pthread_create(&th, NULL, sender_main, &s), 0);
	assert_true(wait_stat(&n, 1, STAT(sendq_waits), 1));
	assert_true(s.sent < s.count);
	/* Reading releases the sender; everything arrives intact. */
	raw_drain(&r, s.count, s.len);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.sent, s.count);
	raw_close(&r);
	expect_down(&n, 1, "connection to node 1 lost");
	node_stop(&n);
}

static void test_blocked_sender_released_by_death(void **state)
{
	struct transport_config c;
	struct sender s = {0};
	pthread_t th;
	struct tnode n;
	struct raw r;

	(void)state;
	bp_cfg(&c);
	raw_pair(&n, &r, &c, 16384);
	s.n = &n;
	s.to = 1;
	s.count = 400;
	s.len = 65536;
	assert_int_equal(pthread_create(&th, NULL, sender_main, &s), 0);
	assert_true(wait_stat(&n, 1, STAT(sendq_waits), 1));
	raw_close(&r);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, -ENOTCONN);
	assert_true(s.sent < s.count);
	expect_down(&n, 1, "connection to node 1 lost");
	node_stop(&n);
}

static void test_blocked_sender_released_by_destroy(void **state)
{
	struct transport_config c;
	struct sender s = {0};
	pthread_t th;
	struct tnode n;
	struct raw r;

	(void)state;
	bp_cfg(&c);
	raw_pair(&n, &r, &c, 16384);
	s.n = &n;
	s.to = 1;
	s.count = 400;
	s.len = 65536;
	assert_int_equal(pthread_create(&th, NULL, sender_main, &s), 0);
	assert_true(wait_stat(&n, 1, STAT(sendq_waits), 1));
	/* destroy wakes the sender, then waits its bounded flush out. */
	transport_destroy(n.t);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, -ENOTCONN);
	assert_int_equal(count_ev(&n, PEER_DOWN), 0); /* no callbacks */
	raw_close(&r);
	pthread_mutex_destroy(&n.lock);
	pthread_cond_destroy(&n.cond);
}

static void test_loop_thread_never_blocks(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r;

	(void)state;
	bp_cfg(&c);
	raw_pair(&n, &r, &c, 16384);
	/* A handler queues 12.5 MiB for a peer that is not reading. */
	n.flood_n = 200;
	n.flood_len = 65536;
	raw_send(&r, MSG_PING, "go", 2);
	assert_true(WAIT_FOR(&n, n.flood_done, WAIT_MS));
	assert_int_equal(n.flood_rc, 0);
	assert_int_equal(stat_of(&n, 1, STAT(sendq_waits)), 0);
	raw_drain(&r, n.flood_n, n.flood_len);
	raw_close(&r);
	node_stop(&n);
}

/* ------------------------------------------------------------------ */
/* Failure detection                                                   */
/* ------------------------------------------------------------------ */

static void test_silent_peer(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r;
	uint64_t t0, dt;

	(void)state;
	base_cfg(&c, 0, 2);
	t0 = mono_ms(); /* before the node last heard from it */
	raw_pair(&n, &r, &c, 0);
	/* It says nothing more (but its socket stays open). */
	expect_down(&n, 1, "node 1 stopped answering (no message for ");
	pthread_mutex_lock(&n.lock);
	assert_non_null(strstr(n.why[find_ev(&n, 1, PEER_DOWN)], " s)"));
	pthread_mutex_unlock(&n.lock);
	dt = mono_ms() - t0;
	assert_true(dt >= c.dead_after_ms - 2); /* clocks round to ms */
	assert_true(dt < c.dead_after_ms + 1500);
	assert_int_equal(transport_send(n.t, 1, MSG_SEQ, "12345678", 8),
			 -ENOTCONN);
	raw_close(&r);
	node_stop(&n);
}

static void test_heartbeats_keep_alive(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r;
	struct msg m;
	uint64_t end;
	int beats = 0;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	/* Answer each heartbeat for 3 dead_after periods: it stays up. */
	end = mono_ms() + 3 * c.dead_after_ms;
	while (mono_ms() < end) {
		assert_int_equal(raw_next(&r, &m, WAIT_MS), 1);
		assert_int_equal(m.type, MSG_HEARTBEAT);
		raw_send(&r, MSG_HEARTBEAT, NULL, 0);
		beats++;
	}
	assert_true(beats >= 5); /* ~30 when the machine is not loaded */
	assert_int_equal(count_ev(&n, PEER_DOWN), 0);
	raw_send(&r, MSG_GOODBYE, "bye\n", 4);
	expect_down(&n, 1, "node 1 said goodbye: bye?");
	raw_close(&r);
	node_stop(&n);
}

static void test_peer_closes(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	raw_close(&r);
	expect_down(&n, 1,
		    "connection to node 1 lost: connection closed by the peer");
	node_stop(&n);
}

static void test_peer_resets(void **state)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct transport_config c;
	struct tnode n;
	struct raw r;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	setsockopt(r.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	raw_close(&r);
	expect_down(&n, 1,
		    "connection to node 1 lost: Connection reset by peer");
	node_stop(&n);
}

static void test_peer_sends_garbage(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	raw_send(&r, MSG_SEQ, "12345678", 8);
	write_all(r.fd, "\x01\x02\x03\x04garbage!", 12);
	expect_down(&n, 1, "node 1 sent a bad message: bad magic 0x04030201");
	assert_true(WAIT_FOR(&n, n.got[1] == 1, WAIT_MS)); /* before it */
	assert_true(raw_wait_closed(&r, NULL, 0));
	raw_close(&r);
	node_stop(&n);
}

static void test_peer_oversized(void **state)
{
	struct transport_config c;
	uint8_t hdr[MSG_HDR_SIZE];
	struct tnode n;
	struct raw r;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	msg_encode_hdr(hdr, MSG_SEQ, MSG_MAX_PAYLOAD + 1);
	write_all(r.fd, hdr, sizeof(hdr));
	expect_down(&n, 1,
		    "node 1 sent a bad message: type 74 message of "
		    "1048577 bytes is over the 1048576-byte limit");
	raw_close(&r);
	node_stop(&n);
}

static void test_peer_handshake_after_auth(void **state)
{
	struct transport_config c;
	struct auth_out out;
	struct tnode n;
	struct raw r;

	(void)state;
	base_cfg(&c, 0, 2);
	raw_pair(&n, &r, &c, 0);
	auth_hello(&r.s, &out);
	raw_send(&r, out.type, out.buf, out.len);
	expect_down(&n, 1, "node 1 sent a bad message: handshake message");
	raw_close(&r);
	node_stop(&n);
}

/* ------------------------------------------------------------------ */
/* Strangers                                                           */
/* ------------------------------------------------------------------ */

/* A stranger connects; returns the node's GOODBYE text once it closed. */
static void stranger_refused(struct tnode *n, struct raw *r, uint64_t *fails,
			     const char *want)
{
	char bye[256];

	assert_true(raw_wait_closed(r, bye, sizeof(bye)));
	raw_close(r);
	(*fails)++;
	assert_int_equal(stat_of(n, -1, STAT(auth_failures)), *fails);
	if (want && !strstr(bye, want))
		fail_msg("goodbye \"%s\" lacks \"%s\"", bye, want);
}

static void test_strangers_refused(void **state)
{
	struct transport_config tmpl;
	uint8_t hdr[MSG_HDR_SIZE];
	struct tnode n[2];
	struct raw r;
	struct err e;
	uint64_t fails = 0;
	int i;

	(void)state;
	/* A 3-node cluster with node 2 missing, so id 2 is free to claim. */
	base_cfg(&tmpl, 0, 3);
	tmpl.handshake_ms = 300;
	mesh_start(n, 2, 3, &tmpl);
	assert_true(WAIT_FOR(&n[0], find_ev(&n[0], 1, PEER_UP) >= 0, WAIT_MS));

	raw_open(&r, port_of(&n[0]), 2, 3, 0);
	write_all(r.fd, "GET / HTTP/1.0\r\n\r\n", 18);
	stranger_refused(&n[0], &r, &fails, "bad message: bad magic");

	raw_open(&r, port_of(&n[0]), 2, 3, 0);
	r.cfg.secret[0] ^= 1; /* it refuses node 0's AUTH, and vice versa */
	assert_int_equal(raw_handshake(&r, 0, &e), -EACCES);
	stranger_refused(&n[0], &r, &fails, "node 2 failed authentication");

	raw_open(&r, port_of(&n[0]), 1, 3, 0); /* node 1 is connected */
	assert_int_equal(raw_handshake(&r, 0, &e), -ECONNREFUSED);
	assert_non_null(strstr(e.msg, "node 1 is already connected"));
	stranger_refused(&n[0], &r, &fails, NULL);

	raw_open(&r, port_of(&n[0]), 2, 3, 0); /* says nothing */
	stranger_refused(&n[0], &r, &fails, "no handshake within 300 ms");

	raw_open(&r, port_of(&n[0]), 2, 3, 0); /* a user message first */
	raw_send(&r, MSG_SEQ, "12345678", 8);
	stranger_refused(&n[0], &r, &fails, "unexpected message type 74");

	raw_open(&r, port_of(&n[0]), 2, 3, 0); /* a huge "HELLO" */
	msg_encode_hdr(hdr, MSG_HELLO, 100000);
	assert_true(write_all(r.fd, hdr, sizeof(hdr)));
	stranger_refused(
		&n[0], &r, &fails,
		"type 1 message of 100000 bytes is over the 128-byte limit");

	/* Nothing changed for the real peers: the mesh still works. */
	for (i = 0; i < 100; i++) {
		send_seq(&n[0], 1, (uint64_t)i, 100);
		send_seq(&n[1], 0, (uint64_t)i, 100);
	}
	assert_true(WAIT_FOR(&n[1], n[1].got[0] == 100, WAIT_MS));
	assert_true(WAIT_FOR(&n[0], n[0].got[1] == 100, WAIT_MS));
	assert_int_equal(n[0].bad + n[1].bad, 0);
	assert_int_equal(count_ev(&n[0], PEER_DOWN), 0);
	assert_int_equal(count_ev(&n[0], PEER_UP), 1);
	assert_int_equal(stat_of(&n[1], -1, STAT(auth_failures)), 0);
	node_stop(&n[1]);
	node_stop(&n[0]);
}

static void test_many_silent_strangers(void **state)
{
	struct transport_config c;
	struct tnode n;
	struct raw r[40];
	int i, closed = 0;

	(void)state;
	base_cfg(&c, 0, 2);
	c.handshake_ms = 300;
	node_start(&n, &c);
	for (i = 0; i < 40; i++)
		raw_open(&r[i], port_of(&n), 1, 2, 0);
	/* The surplus is refused at once, the rest at their deadline. */
	for (i = 0; i < 40; i++) {
		closed += raw_wait_closed(&r[i], NULL, 0);
		raw_close(&r[i]);
	}
	assert_int_equal(closed, 40);
	assert_true(wait_stat(&n, -1, STAT(auth_failures), 40));
	/* The real node 1 still gets in. */
	raw_open(&r[0], port_of(&n), 1, 2, 0);
	{
		struct err e = {0};

		if (raw_handshake(&r[0], 0, &e))
			fail_msg("%s", e.msg);
	}
	assert_true(WAIT_FOR(&n, find_ev(&n, 1, PEER_UP) >= 0, WAIT_MS));
	raw_close(&r[0]);
	node_stop(&n);
}

/* ------------------------------------------------------------------ */
/* Start-up failures                                                   */
/* ------------------------------------------------------------------ */

/* A port where nobody listens: bound, not listening, kept while used. */
static int dead_port(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void test_unreachable(void **state)
{
	struct transport_config c;
	struct err e = {0};
	char want[128];
	struct tnode n;
	uint16_t port;
	uint64_t t0, dt;
	int fd = dead_port(&port);

	(void)state;
	base_cfg(&c, 1, 2);
	c.node[0].port = port;
	c.connect_timeout_ms = 400;
	t0 = mono_ms();
	node_start(&n, &c);
	assert_int_equal(transport_wait_connected(n.t, &e), -ETIMEDOUT);
	dt = mono_ms() - t0;
	snprintf(want, sizeof(want),
		 "cannot reach node 0 at 127.0.0.1:%u: Connection refused",
		 port);
	assert_string_equal(e.msg, want);
	assert_true(dt >= 390 && dt < 400 + 1500);
	node_stop(&n);
	close(fd);
}

static void test_nobody_dials_in(void **state)
{
	struct transport_config c;
	struct err e = {0};
	struct tnode n;

	(void)state;
	base_cfg(&c, 0, 2);
	c.connect_timeout_ms = 200;
	node_start(&n, &c);
	assert_int_equal(transport_wait_connected(n.t, &e), -ETIMEDOUT);
	assert_string_equal(
		e.msg, "node 1 (127.0.0.1:0) did not connect within 200 ms");
	node_stop(&n);
}

static void test_wrong_secret_nodes(void **state)
{
	struct transport_config c0, c1;
	struct err e = {0};
	struct tnode n[2];

	(void)state;
	base_cfg(&c0, 0, 2);
	c0.connect_timeout_ms = 600;
	node_start(&n[0], &c0);
	base_cfg(&c1, 1, 2);
	c1.connect_timeout_ms = 600;
	c1.node[0].port = port_of(&n[0]);
	c1.secret[31] ^= 1;
	node_start(&n[1], &c1);
	assert_int_equal(transport_wait_connected(n[1].t, &e), -ETIMEDOUT);
	if (!strstr(e.msg, "cannot reach node 0 at 127.0.0.1:") ||
	    !strstr(e.msg, "failed authentication"))
		fail_msg("node 1: %s", e.msg);
	assert_int_equal(transport_wait_connected(n[0].t, &e), -ETIMEDOUT);
	if (!strstr(e.msg, "node 1 (127.0.0.1:0) did not connect") ||
	    !strstr(e.msg, "node 1 failed authentication"))
		fail_msg("node 0: %s", e.msg);
	assert_true(stat_of(&n[0], -1, STAT(auth_failures)) >= 1);
	assert_int_equal(count_ev(&n[0], PEER_UP), 0);
	node_stop(&n[1]);
	node_stop(&n[0]);
}

static void expect_create_fails(const struct transport_config *c,
				const char *want)
{
	struct transport *t = NULL;
	struct err e = {0};

	assert_int_equal(transport_tcp_create(&t, c, on_msg, on_peer, NULL, &e),
			 -EINVAL);
	assert_null(t);
	if (!strstr(e.msg, want))
		fail_msg("\"%s\" lacks \"%s\"", e.msg, want);
}

static void test_bad_config(void **state)
{
	struct transport_config c;

	(void)state;
	base_cfg(&c, 0, 2);
	c.nnodes = 17;
	expect_create_fails(&c, "cluster of 17 nodes");
	base_cfg(&c, 2, 2);
	expect_create_fails(&c, "node id 2 out of range");
	base_cfg(&c, 0, 2);
	c.secret_len = 15;
	expect_create_fails(&c, "cluster secret of 15 bytes");
	base_cfg(&c, 0, 2);
	c.dead_after_ms = 50;
	expect_create_fails(&c, "must exceed heartbeat_ms");
	base_cfg(&c, 0, 2);
	c.node[1].host[0] = '\0';
	expect_create_fails(&c, "node 1 has no host");
}

static void test_port_in_use(void **state)
{
	struct transport_config c;
	struct err e = {0};
	struct tnode n, m;
	char want[64];

	(void)state;
	base_cfg(&c, 0, 2);
	node_start(&n, &c);
	c.node[0].port = port_of(&n);
	node_init(&m, 0);
	assert_int_equal(
		transport_tcp_create(&m.t, &c, on_msg, on_peer, &m, &e), 0);
	assert_int_equal(transport_start(m.t, &e), -EADDRINUSE);
	snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%u",
		 c.node[0].port);
	assert_non_null(strstr(e.msg, want));
	node_stop(&m);
	node_stop(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mesh2_in_order),
		cmocka_unit_test(test_mesh3),
		cmocka_unit_test(test_large_messages),
		cmocka_unit_test(test_single_node),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_blocked_sender_released_by_death),
		cmocka_unit_test(test_blocked_sender_released_by_destroy),
		cmocka_unit_test(test_loop_thread_never_blocks),
		cmocka_unit_test(test_silent_peer),
		cmocka_unit_test(test_heartbeats_keep_alive),
		cmocka_unit_test(test_peer_closes),
		cmocka_unit_test(test_peer_resets),
		cmocka_unit_test(test_peer_sends_garbage),
		cmocka_unit_test(test_peer_oversized),
		cmocka_unit_test(test_peer_handshake_after_auth),
		cmocka_unit_test(test_strangers_refused),
		cmocka_unit_test(test_many_silent_strangers),
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_nobody_dials_in),
		cmocka_unit_test(test_wrong_secret_nodes),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_port_in_use),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
