/*
 * tests/tools/dsm_tool.h - what the DSM test tools (dsm_stress, dsm_bench)
 * share: N node processes on loopback forked by one parent (free ports
 * picked first), each with a DSM region and a transport, a barrier over
 * MSG_DSM_TOOL, and a parent that waits for every child within a time
 * limit and kills the rest when one fails. Header-only: each tool is one
 * .c file linked against libdvmm.a.
 */
#ifndef DVMM_TESTS_DSM_TOOL_H
#define DVMM_TESTS_DSM_TOOL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/dsm.h"
#include "cluster/transport.h"

#define TOOL_SECRET "dsm tools: a test-only secret"
#define TOOL_CLUSTER_ID "dsm-tools-v1...."

enum tool_op { OP_ARRIVE = 1, OP_RELEASE = 2, OP_PING = 3, OP_PONG = 4 };

struct tool_msg {
	uint32_t op, phase;
};

struct node;
typedef void (*tool_extra_fn)(struct node *n, int from, const uint8_t *buf,
			      uint32_t len);

struct node {
	int self, nnodes;
	struct dsm *dsm;
	struct transport *t;
	uint8_t *mem;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int arrived[64]; /* node 0: arrivals per phase % 64 */
	int released;	 /* last phase released */
	bool down;
	bool coord_down; /* node 0, which runs the barriers, is gone */
	char why[160];
	tool_extra_fn extra; /* OP_PING / OP_PONG handling */
	void *extra_opaque;
};

static inline uint64_t tool_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void tool_on_msg(void *opaque, int from, uint16_t type,
			       const void *buf, uint32_t len)
{
	struct node *n = opaque;
	struct tool_msg m;

	if (dsm_handle_msg(n->dsm, from, type, buf, len))
		return;
	if (type != MSG_DSM_TOOL || len < sizeof(m))
		return;
	memcpy(&m, buf, sizeof(m));
	if (m.op == OP_PING || m.op == OP_PONG) {
		if (n->extra)
			n->extra(n, from, buf, len);
		return;
	}
	pthread_mutex_lock(&n->lock);
	if (m.op == OP_ARRIVE)
		n->arrived[m.phase % 64]++;
	else if (m.op == OP_RELEASE && (int)m.phase > n->released)
		n->released = (int)m.phase;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static inline void tool_on_peer(void *opaque, int node, enum peer_event ev,
				const char *why)
{
	struct node *n = opaque;

	if (ev != PEER_DOWN)
		return;
	pthread_mutex_lock(&n->lock);
	if (!n->down)
		snprintf(n->why, sizeof(n->why), "peer %d down: %s", node,
			 why ? why : "");
	n->down = true;
	if (node == 0)
		n->coord_down = true;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

/* All nodes reach @phase (1, 2, ...) before any goes on; -1 if one died. */
static inline int tool_barrier(struct node *n, int phase)
{
	struct tool_msg m = {.phase = (uint32_t)phase};
	int i, rc = 0;

	pthread_mutex_lock(&n->lock);
	if (n->self == 0) {
		while (n->arrived[phase % 64] < n->nnodes - 1 && !n->down)
			pthread_cond_wait(&n->cond, &n->lock);
		rc = n->arrived[phase % 64] < n->nnodes - 1 ? -1 : 0;
		n->arrived[phase % 64] = 0;
		m.op = OP_RELEASE;
		for (i = 1; !rc && i < n->nnodes; i++)
			rc = transport_send(n->t, i, MSG_DSM_TOOL, &m,
					    sizeof(m));
	} else {
		/*
		 * Only node 0 decides: another peer may finish and leave
		 * before node 0's release reaches us on another connection,
		 * and node 0 does not release a barrier a dead peer missed.
		 */
		m.op = OP_ARRIVE;
		rc = transport_send(n->t, 0, MSG_DSM_TOOL, &m, sizeof(m));
		while (!rc && n->released < phase && !n->coord_down)
			pthread_cond_wait(&n->cond, &n->lock);
		rc = rc || n->released < phase ? -1 : 0;
	}
	if (rc)
		fprintf(stderr, "node %d: barrier %d failed: %s\n", n->self,
			phase, n->down ? n->why : "send failed");
	pthread_mutex_unlock(&n->lock);
	return rc;
}

/* Ports for @nn nodes on 127.0.0.1 (bound, read, closed). */
static inline int tool_pick_ports(int nn, uint16_t *port)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int i, fd[CLUSTER_MAX_NODES];

	for (i = 0; i < nn; i++) {
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fd[i] < 0 ||
		    bind(fd[i], (struct sockaddr *)&a, sizeof(a)) ||
		    getsockname(fd[i], (struct sockaddr *)&a, &al))
			return -1;
		port[i] = ntohs(a.sin_port);
	}
	for (i = 0; i < nn; i++)
		close(fd[i]);
	return 0;
}

/* Bring up the DSM and the transport of node @self. */
static inline int tool_node_up(struct node *n, int self, int nn,
			       const uint16_t *port, uint64_t size,
			       uint64_t chunk)
{
	struct dsm_config dc = {
		.self = self, .nnodes = nn, .size = size, .home_chunk = chunk};
	struct transport_config c;
	struct err e = {0};
	int i;

	memset(n, 0, sizeof(*n));
	n->self = self;
	n->nnodes = nn;
	n->released = -1;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	memset(&c, 0, sizeof(c));
	c.self = self;
	c.nnodes = nn;
	for (i = 0; i < nn; i++) {
		snprintf(c.node[i].host, sizeof(c.node[i].host), "127.0.0.1");
		c.node[i].port = port[i];
	}
	memcpy(c.cluster_id, TOOL_CLUSTER_ID, CLUSTER_ID_LEN);
	c.secret_len = strlen(TOOL_SECRET);
	memcpy(c.secret, TOOL_SECRET, c.secret_len);
	c.dead_after_ms = 10000;
	if (dsm_create(&n->dsm, &dc, &e) ||
	    transport_tcp_create(&n->t, &c, tool_on_msg, tool_on_peer, n, &e))
		goto fail;
	dsm_attach(n->dsm, n->t);
	if (transport_start(n->t, &e) || transport_wait_connected(n->t, &e) ||
	    dsm_start(n->dsm, &e))
		goto fail;
	n->mem = dsm_base(n->dsm);
	n->released = 0;
	return 0;
fail:
	fprintf(stderr, "node %d: %s\n", self, e.msg);
	return -1;
}

static inline void tool_print_stats(struct node *n)
{
	json_t *j = dsm_stats_json(n->dsm);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	printf("STATS node=%d %s\n", n->self, s ? s : "(none)");
	fflush(stdout);
	free(s);
	json_decref(j);
}

static inline void tool_node_down(struct node *n)
{
	transport_destroy(n->t);
	dsm_destroy(n->dsm);
}

/*
 * Fork @nn children running @fn(self, nn, ports, arg); wait at most
 * @timeout_s for all. Returns 0 when all exit 0; kills the rest when one
 * fails or time runs out.
 */
static inline int tool_run_nodes(int nn, int timeout_s,
				 int (*fn)(int, int, const uint16_t *, void *),
				 void *arg)
{
	pid_t pid[CLUSTER_MAX_NODES];
	uint16_t port[CLUSTER_MAX_NODES];
	uint64_t end = tool_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	int i, st, left = nn, rc = 0;
	pid_t w;

	if (tool_pick_ports(nn, port))
		return -1;
	fflush(stdout);
	for (i = 0; i < nn; i++) {
		pid[i] = fork();
		if (pid[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			alarm((unsigned int)timeout_s + 5);
			_exit(fn(i, nn, port, arg) ? 1 : 0);
		}
		if (pid[i] < 0)
			return -1;
	}
	while (left) {
		w = waitpid(-1, &st, WNOHANG);
		if (w == 0 && tool_now_ns() < end) {
			usleep(10000);
			continue;
		}
		if (w <= 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
			if (w > 0)
				fprintf(stderr, "dsm tool: node pid %d %s %d\n",
					(int)w,
					WIFEXITED(st) ? "exited" : "signal",
					WIFEXITED(st) ? WEXITSTATUS(st) :
							WTERMSIG(st));
			else
				fprintf(stderr, "dsm tool: timed out\n");
			rc = -1;
		}
		for (i = 0; w > 0 && i < nn; i++)
			if (pid[i] == w)
				pid[i] = 0;
		left -= w > 0;
		if (rc)
			break;
	}
	for (i = 0; rc && i < nn; i++)
		if (pid[i] > 0)
			kill(pid[i], SIGKILL);
	for (i = 0; rc && i < nn; i++)
		if (pid[i] > 0)
			waitpid(pid[i], &st, 0);
	return rc;
}

#endif
