/*
 * cluster/node.c - one node's life: transport up, the VM on node 0,
 * shutdown and failure propagation, stats for the control socket.
 *
 * Ending in order. When node 0's VM ends it sends MSG_SHUTDOWN(status) to
 * every peer; a peer answers with MSG_SHUTDOWN (the acknowledgement) and
 * waits for node 0 to close its connection before it exits with that
 * status. Node 0 closes only once every live peer has acknowledged (or a
 * few seconds passed), so no peer sees another leave before it knows the
 * VM has ended: from then on a peer going down is expected, not a failure.
 *
 * Failure. Any other PEER_DOWN stops the VM: the first one is reported as
 * "node K failed: REASON; stopping the VM". Node 0 stops its VM with an
 * error (exit status 1) and shuts the remaining peers down as above; a peer
 * exits 1 at once if node 0 failed, and otherwise waits (bounded) for node
 * 0's shutdown so that node 0 sees the failed node first, not a peer that
 * merely left because of it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/dsm.h"
#include "cluster/node.h"
#include "cluster/vmlink.h"
#include "cluster/vtime.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#define STATS_TIMEOUT_MS 1000 /* a silent peer cannot hang the socket */
#define SHUTDOWN_ACK_MS 3000  /* node 0 waits this long for the acks */
#define PAUSE_ACK_MS 12000    /* a peer parks its vCPUs (10 s at most) */

enum node_phase { NODE_CONNECTING, NODE_RUNNING, NODE_ENDING };
enum peer_state { PEER_UNKNOWN, PEER_IS_UP, PEER_IS_DOWN };

struct cluster_node {
	const struct cluster_config *cfg;
	int self;
	struct transport *t;
	struct dsm *dsm;     /* guest RAM, on every node */
	struct vmlink *link; /* the VM's parts on the other nodes */
	struct vtime *vtime; /* one guest time on every node */
	pthread_t peer_vm_thread;
	bool peer_vm_running; /* peers: the VM thread has not returned */
	int peer_vm_status;
	struct timespec started;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* anything below changed */
	enum node_phase phase;
	const struct node_vm *vm; /* node 0, while it runs the VM */
	enum peer_state peer[CLUSTER_MAX_NODES];
	char reason[CLUSTER_MAX_NODES][96]; /* why each went down */
	int failed;    /* the first node seen failing, or -1 */
	bool shutdown; /* peers: node 0 said the VM ended */
	int shutdown_status;
	bool acked[CLUSTER_MAX_NODES]; /* node 0: peers that took it */
	int signal;		       /* a stop signal arrived */

	pthread_mutex_t pause_lock; /* one pause round at a time */
	bool pause_acked[CLUSTER_MAX_NODES];
	int pause_rc[CLUSTER_MAX_NODES];

	pthread_mutex_t stats_lock; /* one stats round at a time */
	uint32_t stats_seq;	    /* under lock, as is stats[] */
	json_t *stats[CLUSTER_MAX_NODES];
};

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) +
	       (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- peers coming and going ---- */

/* A peer went down: a failure unless the VM has already ended. Locked. */
static void peer_lost(struct cluster_node *n, int node, const char *reason)
{
	if (n->phase == NODE_CONNECTING) {
		pr_info("node %d: %s (still connecting)", node, reason);
		return;
	}
	if (n->phase == NODE_ENDING || n->shutdown) {
		pr_info("node %d has left", node);
		return;
	}
	if (n->failed >= 0) {
		pr_info("node %d is down too: %s", node, reason);
		return;
	}
	n->failed = node;
	pr_err("node %d failed: %s; stopping the VM", node, reason);
	if (n->vm)
		n->vm->stop(n->vm->opaque, VM_STOP_ERROR, EXIT_FAILURE);
}

static void on_peer(void *opaque, int node, enum peer_event ev,
		    const char *reason)
{
	struct cluster_node *n = opaque;

	if (node < 0 || node >= n->cfg->nnodes || node == n->self)
		return;
	pthread_mutex_lock(&n->lock);
	if (ev == PEER_UP) {
		n->peer[node] = PEER_IS_UP; /* the transport logs it */
	} else {
		if (n->link)
			vmlink_peer_down(n->link, node);
		n->peer[node] = PEER_IS_DOWN;
		snprintf(n->reason[node], sizeof(n->reason[node]), "%s",
			 reason && reason[0] ? reason : "connection lost");
		peer_lost(n, node, n->reason[node]);
	}
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

/* ---- messages ---- */

/* Node 0 -> peer: the VM ended; peer -> node 0: the acknowledgement. */
static void got_shutdown(struct cluster_node *n, int from, const uint8_t *p,
			 uint32_t len)
{
	bool ack = false;

	if (len != 4 || (n->self != 0 && from != 0)) {
		pr_warn("node %d: unexpected shutdown message ignored", from);
		return;
	}
	pthread_mutex_lock(&n->lock);
	if (n->self == 0) {
		n->acked[from] = true;
	} else if (!n->shutdown) {
		n->shutdown = true;
		n->shutdown_status = (int)get_u32(p);
		ack = true;
	}
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	if (ack)
		transport_send(n->t, 0, MSG_SHUTDOWN, p, 4);
}

static json_t *link_json(struct cluster_node *n, int peer, bool up)
{
	struct transport_stats s;

	transport_get_stats(n->t, peer, &s);
	return json_pack("{s:i, s:b, s:I, s:I, s:I, s:I, s:I}", "peer", peer,
			 "up", up, "msgs_sent", (json_int_t)s.msgs_sent,
			 "msgs_recv", (json_int_t)s.msgs_recv, "bytes_sent",
			 (json_int_t)s.bytes_sent, "bytes_recv",
			 (json_int_t)s.bytes_recv, "sendq_waits",
			 (json_int_t)s.sendq_waits);
}

/* This node as the "nodes" array shows it. Not under lock. */
static json_t *own_json(struct cluster_node *n, bool with_stats)
{
	const struct transport_node_addr *a = &n->cfg->node[n->self];
	enum peer_state peer[CLUSTER_MAX_NODES];
	struct transport_stats all;
	json_t *o, *links;

	transport_get_stats(n->t, -1, &all); /* strangers are node-wide */
	o = json_pack("{s:i, s:s, s:s, s:i, s:i, s:f, s:I}", "id", n->self,
		      "state", "up", "host", a->host, "port", a->port, "pid",
		      (int)getpid(), "uptime_s", seconds_since(&n->started),
		      "auth_failures", (json_int_t)all.auth_failures);
	if (!o || !with_stats)
		return o;
	pthread_mutex_lock(&n->lock);
	memcpy(peer, n->peer, sizeof(peer));
	pthread_mutex_unlock(&n->lock);
	links = json_array();
	for (int i = 0; i < n->cfg->nnodes; i++)
		if (i != n->self)
			json_array_append_new(
				links, link_json(n, i, peer[i] == PEER_IS_UP));
	json_object_set_new(o, "transport", links);
	if (n->dsm)
		json_object_set_new(o, "dsm", dsm_stats_json(n->dsm));
	if (n->link)
		json_object_set_new(o, "vmlink", vmlink_stats_json(n->link));
	if (n->vtime)
		json_object_set_new(o, "vtime", vtime_stats_json(n->vtime));
	return o;
}

/* A peer answers node 0's MSG_STATS_REQ(seq) with {"seq":..,"node":{..}}. */
static void answer_stats(struct cluster_node *n, int from, const uint8_t *p,
			 uint32_t len)
{
	json_t *o;
	char *text;

	if (from != 0 || len != 4)
		return;
	o = json_pack("{s:I, s:o}", "seq", (json_int_t)get_u32(p), "node",
		      own_json(n, true));
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (text)
		transport_send(n->t, 0, MSG_STATS_RESP, text,
			       (uint32_t)strlen(text));
	free(text);
	json_decref(o);
}

static void got_stats(struct cluster_node *n, int from, const void *p,
		      uint32_t len)
{
	json_t *o = json_loadb(p, len, 0, NULL);
	json_t *node = json_object_get(o, "node");
	json_int_t seq = json_integer_value(json_object_get(o, "seq"));

	pthread_mutex_lock(&n->lock);
	if (json_is_object(node) && seq == n->stats_seq && !n->stats[from]) {
		n->stats[from] = json_incref(node);
		pthread_cond_broadcast(&n->cond);
	}
	pthread_mutex_unlock(&n->lock);
	json_decref(o);
}

/*
 * A peer pauses or resumes its vCPUs on a thread of its own: parking
 * them may need the transport thread (a vCPU waiting for a forwarded
 * access's answer), so it must not wait there.
 */
struct pause_job {
	struct cluster_node *n;
	bool pause;
};

static void *pause_thread(void *arg)
{
	struct pause_job *j = arg;
	struct cluster_node *n = j->n;
	const struct node_vm *vm;
	uint8_t p[4];
	int rc = -ENODEV;

	pthread_mutex_lock(&n->lock);
	vm = n->vm;
	pthread_mutex_unlock(&n->lock);
	if (vm && vm->pause)
		rc = vm->pause(vm->opaque, j->pause);
	put_u32(p, (uint32_t)rc);
	transport_send(n->t, 0, MSG_PAUSE_ACK, p, sizeof(p));
	free(j);
	return NULL;
}

static void start_pause(struct cluster_node *n, bool pause)
{
	struct pause_job *j = malloc(sizeof(*j));
	pthread_t t;

	if (!j)
		return;
	*j = (struct pause_job){.n = n, .pause = pause};
	if (thread_start_nosignals(&t, pause_thread, j)) {
		free(j);
		return;
	}
	pthread_detach(t);
}

static void got_pause_ack(struct cluster_node *n, int from, const void *p,
			  uint32_t len)
{
	if (n->self != 0 || len != 4)
		return;
	pthread_mutex_lock(&n->lock);
	n->pause_acked[from] = true;
	n->pause_rc[from] = (int)get_u32(p);
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static void on_msg(void *opaque, int from, uint16_t type, const void *payload,
		   uint32_t len)
{
	struct cluster_node *n = opaque;

	if (from < 0 || from >= n->cfg->nnodes || from == n->self)
		return;
	if (n->dsm && dsm_handle_msg(n->dsm, from, type, payload, len))
		return;
	if (n->link && vmlink_handle_msg(n->link, from, type, payload, len))
		return;
	if (n->vtime && vtime_handle_msg(n->vtime, from, type, payload, len))
		return;
	switch (type) {
	case MSG_SHUTDOWN:
		got_shutdown(n, from, payload, len);
		break;
	case MSG_STATS_REQ:
		answer_stats(n, from, payload, len);
		break;
	case MSG_STATS_RESP:
		if (n->self == 0)
			got_stats(n, from, payload, len);
		break;
	case MSG_PING:
		transport_send(n->t, from, MSG_PONG, payload, len);
		break;
	case MSG_PAUSE:
		if (from == 0 && len == 1)
			start_pause(n, *(const uint8_t *)payload != 0);
		break;
	case MSG_PAUSE_ACK:
		got_pause_ack(n, from, payload, len);
		break;
	default:
		pr_debug("node %d: message type %u ignored", from, type);
	}
}

/* ---- stats for node 0's control socket ---- */

/* Send @type to every peer that is up (not under lock: sends may wait). */
static void send_to_peers(struct cluster_node *n, uint16_t type, const void *p,
			  uint32_t len)
{
	enum peer_state peer[CLUSTER_MAX_NODES];

	pthread_mutex_lock(&n->lock);
	memcpy(peer, n->peer, sizeof(peer));
	pthread_mutex_unlock(&n->lock);
	for (int i = 0; i < n->cfg->nnodes; i++)
		if (i != n->self && peer[i] == PEER_IS_UP)
			transport_send(n->t, i, type, p, len);
}

/* Locked: every live peer has answered the current round. */
static bool stats_complete(struct cluster_node *n)
{
	for (int i = 0; i < n->cfg->nnodes; i++)
		if (i != n->self && n->peer[i] == PEER_IS_UP && !n->stats[i])
			return false;
	return true;
}

/* Locked: a peer's entry, from its answer or from what we know of it. */
static json_t *peer_entry(struct cluster_node *n, int i, bool with_stats)
{
	const struct transport_node_addr *a = &n->cfg->node[i];
	json_t *o;

	if (n->stats[i]) {
		o = json_deep_copy(n->stats[i]);
		if (!with_stats) {
			json_object_del(o, "transport");
			json_object_del(o, "dsm");
			json_object_del(o, "vmlink");
			json_object_del(o, "vtime");
		}
		return o;
	}
	o = json_pack("{s:i, s:s, s:s, s:i}", "id", i, "state",
		      n->peer[i] == PEER_IS_UP ? "no answer" : "down", "host",
		      a->host, "port", a->port);
	if (o && n->peer[i] == PEER_IS_DOWN)
		json_object_set_new(o, "reason", json_string(n->reason[i]));
	return o;
}

json_t *cluster_node_nodes_json(struct cluster_node *n, bool with_stats)
{
	struct timespec deadline = clock_deadline_ms(STATS_TIMEOUT_MS);
	json_t *arr = json_array();
	uint8_t seq[4];

	pthread_mutex_lock(&n->stats_lock);
	pthread_mutex_lock(&n->lock);
	put_u32(seq, ++n->stats_seq);
	for (int i = 0; i < CLUSTER_MAX_NODES; i++) {
		json_decref(n->stats[i]);
		n->stats[i] = NULL;
	}
	pthread_mutex_unlock(&n->lock);
	send_to_peers(n, MSG_STATS_REQ, seq, sizeof(seq));
	json_array_append_new(arr, own_json(n, with_stats));
	pthread_mutex_lock(&n->lock);
	while (!stats_complete(n) &&
	       pthread_cond_timedwait(&n->cond, &n->lock, &deadline) !=
		       ETIMEDOUT)
		;
	for (int i = 0; i < n->cfg->nnodes; i++)
		if (i != n->self)
			json_array_append_new(arr,
					      peer_entry(n, i, with_stats));
	pthread_mutex_unlock(&n->lock);
	pthread_mutex_unlock(&n->stats_lock);
	return arr;
}

/* ---- the node's life ---- */

int cluster_node_create(struct cluster_node **out,
			const struct cluster_config *c, int self, struct err *e)
{
	struct cluster_node *n = calloc(1, sizeof(*n));
	struct transport_config tc;
	struct dsm_config dc;
	pthread_condattr_t ca;
	int rc;

	if (!n)
		return err_set(e, -ENOMEM, "out of memory");
	n->cfg = c;
	n->self = self;
	n->failed = -1;
	clock_gettime(CLOCK_MONOTONIC, &n->started);
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->stats_lock, NULL);
	pthread_mutex_init(&n->pause_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->cond, &ca);
	pthread_condattr_destroy(&ca);
	dc = (struct dsm_config){
		.self = self, .nnodes = c->nnodes, .size = c->memory};
	rc = dsm_create(&n->dsm, &dc, e);
	if (rc) {
		n->dsm = NULL;
		cluster_node_destroy(n);
		return rc;
	}
	cluster_config_transport(c, self, &tc);
	rc = transport_tcp_create(&n->t, &tc, on_msg, on_peer, n, e);
	if (rc) {
		n->t = NULL;
		cluster_node_destroy(n);
		return rc;
	}
	dsm_attach(n->dsm, n->t);
	rc = vmlink_create(&n->link, c, self, n->t, n->dsm, e);
	if (rc) {
		n->link = NULL;
		cluster_node_destroy(n);
		return rc;
	}
	rc = vtime_create(&n->vtime, n->t, self, c->nnodes, e);
	if (rc) {
		n->vtime = NULL;
		cluster_node_destroy(n);
		return rc;
	}
	*out = n;
	return 0;
}

int cluster_node_connect(struct cluster_node *n, struct err *e)
{
	int rc = transport_start(n->t, e);

	/* the fault thread runs before anything touches guest RAM */
	if (!rc)
		rc = dsm_start(n->dsm, e);
	if (!rc)
		rc = transport_wait_connected(n->t, e);
	if (!rc)
		rc = vtime_start(n->vtime, e);
	pthread_mutex_lock(&n->lock);
	if (rc && n->shutdown) /* node 0 is already done: nothing to run */
		rc = 0;
	if (!rc) {
		n->phase = NODE_RUNNING;
		for (int i = 0; i < n->cfg->nnodes; i++) {
			if (i == n->self)
				continue;
			if (n->peer[i] == PEER_IS_DOWN && !n->shutdown)
				peer_lost(n, i, n->reason[i]);
			else if (n->peer[i] == PEER_UNKNOWN)
				n->peer[i] = PEER_IS_UP;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return rc;
}

/* Locked: every live peer has acknowledged the shutdown. */
static bool all_acked(struct cluster_node *n)
{
	for (int i = 1; i < n->cfg->nnodes; i++)
		if (n->peer[i] == PEER_IS_UP && !n->acked[i])
			return false;
	return true;
}

/* Node 0: tell every peer the VM ended, wait (bounded) for their acks. */
static void shutdown_peers(struct cluster_node *n, int status)
{
	struct timespec deadline = clock_deadline_ms(SHUTDOWN_ACK_MS);
	uint8_t p[4];

	put_u32(p, (uint32_t)status);
	send_to_peers(n, MSG_SHUTDOWN, p, sizeof(p));
	pthread_mutex_lock(&n->lock);
	while (!all_acked(n) && pthread_cond_timedwait(&n->cond, &n->lock,
						       &deadline) != ETIMEDOUT)
		;
	if (!all_acked(n))
		pr_warn("not every node acknowledged the shutdown");
	pthread_mutex_unlock(&n->lock);
}

static int run_vm_node(struct cluster_node *n, const struct node_vm *vm)
{
	int status = EXIT_FAILURE;
	bool go;

	pthread_mutex_lock(&n->lock);
	go = n->failed < 0 && !n->signal;
	if (n->signal)
		status = 128 + n->signal;
	if (go)
		n->vm = vm;
	pthread_mutex_unlock(&n->lock);
	if (go)
		status = vm->run(vm->opaque);
	pthread_mutex_lock(&n->lock);
	n->phase = NODE_ENDING;
	n->vm = NULL;
	if (n->failed >= 0 && status == 0)
		status = EXIT_FAILURE;
	pthread_mutex_unlock(&n->lock);
	shutdown_peers(n, status);
	return status;
}

/* Locked: why a peer node stops now, or -1 to keep waiting. */
static int peer_exit_status(struct cluster_node *n, bool timed_out)
{
	if (n->signal)
		return 128 + n->signal;
	if (n->failed == 0)
		return EXIT_FAILURE;
	if (n->failed == n->self) /* our part of the VM failed */
		return n->peer_vm_status ? n->peer_vm_status : EXIT_FAILURE;
	if (!n->shutdown && n->failed < 0)
		return -1;
	/* node 0 said the VM ended, or another node failed */
	if (n->peer[0] != PEER_IS_DOWN && !timed_out)
		return -1;
	if (n->failed >= 0 || !n->shutdown)
		return EXIT_FAILURE;
	return n->shutdown_status;
}

/* Peers: the local part of the VM, until it ends or is stopped. */
static void *peer_vm_thread(void *arg)
{
	struct cluster_node *n = arg;
	int status = n->vm->run(n->vm->opaque);

	pthread_mutex_lock(&n->lock);
	n->peer_vm_running = false;
	n->peer_vm_status = status;
	if (!n->shutdown && n->failed < 0) {
		/* our part ended on its own: a failure here */
		n->failed = n->self;
		pr_err("node %d: this node's part of the VM ended (status %d)",
		       n->self, status);
	}
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

static int start_peer_vm(struct cluster_node *n, const struct node_vm *vm)
{
	int rc;

	pthread_mutex_lock(&n->lock);
	n->vm = vm;
	n->peer_vm_running = true;
	pthread_mutex_unlock(&n->lock);
	rc = pthread_create(&n->peer_vm_thread, NULL, peer_vm_thread, n);
	if (rc) {
		pthread_mutex_lock(&n->lock);
		n->vm = NULL;
		n->peer_vm_running = false;
		pthread_mutex_unlock(&n->lock);
	}
	return -rc;
}

static void end_peer_vm(struct cluster_node *n, const struct node_vm *vm)
{
	vm->stop(vm->opaque, VM_STOP_POWEROFF, 0);
	pthread_join(n->peer_vm_thread, NULL);
	pthread_mutex_lock(&n->lock);
	n->vm = NULL;
	pthread_mutex_unlock(&n->lock);
}

static int run_peer_node(struct cluster_node *n, const struct node_vm *vm)
{
	/* node 0 notices a failure within dead_after_ms, then shuts us down */
	unsigned int grace =
		n->cfg->dead_after_ms ? n->cfg->dead_after_ms : 3000;
	struct timespec deadline;
	bool waiting = false, timed_out = false, vm_up = false;
	int status;

	if (vm && start_peer_vm(n, vm) == 0)
		vm_up = true;
	else if (vm)
		return EXIT_FAILURE;
	pthread_mutex_lock(&n->lock);
	while ((status = peer_exit_status(n, timed_out)) < 0) {
		if (!waiting && (n->shutdown || n->failed > 0)) {
			deadline = clock_deadline_ms(grace + SHUTDOWN_ACK_MS);
			waiting = true;
		}
		if (!waiting)
			pthread_cond_wait(&n->cond, &n->lock);
		else if (pthread_cond_timedwait(&n->cond, &n->lock,
						&deadline) == ETIMEDOUT)
			timed_out = true;
	}
	n->phase = NODE_ENDING;
	pthread_mutex_unlock(&n->lock);
	if (vm_up)
		end_peer_vm(n, vm);
	return status;
}

int cluster_node_run(struct cluster_node *n, const struct node_vm *vm)
{
	if (n->self == 0)
		return run_vm_node(n, vm);
	return run_peer_node(n, vm);
}

/* Locked: every live peer has answered the pause round. */
static bool pause_complete(struct cluster_node *n)
{
	for (int i = 1; i < n->cfg->nnodes; i++)
		if (n->peer[i] == PEER_IS_UP && !n->pause_acked[i])
			return false;
	return true;
}

int cluster_node_pause_peers(struct cluster_node *n, bool pause)
{
	struct timespec deadline = clock_deadline_ms(PAUSE_ACK_MS);
	uint8_t p = pause;
	int rc = 0;

	pthread_mutex_lock(&n->pause_lock);
	pthread_mutex_lock(&n->lock);
	memset(n->pause_acked, 0, sizeof(n->pause_acked));
	pthread_mutex_unlock(&n->lock);
	send_to_peers(n, MSG_PAUSE, &p, 1);
	pthread_mutex_lock(&n->lock);
	while (!pause_complete(n) &&
	       pthread_cond_timedwait(&n->cond, &n->lock, &deadline) !=
		       ETIMEDOUT)
		;
	for (int i = 1; i < n->cfg->nnodes && !rc; i++) {
		if (n->peer[i] != PEER_IS_UP)
			continue;
		if (!n->pause_acked[i])
			rc = -ETIMEDOUT;
		else if (n->pause_rc[i] && n->pause_rc[i] != -EALREADY)
			rc = n->pause_rc[i];
	}
	pthread_mutex_unlock(&n->lock);
	pthread_mutex_unlock(&n->pause_lock);
	return rc;
}

struct vmlink *cluster_node_vmlink(struct cluster_node *n)
{
	return n->link;
}

struct vtime *cluster_node_vtime(struct cluster_node *n)
{
	return n->vtime;
}

void *cluster_node_ram(struct cluster_node *n)
{
	return dsm_base(n->dsm);
}

bool cluster_node_signal(struct cluster_node *n, int sig)
{
	bool handled = true;

	pthread_mutex_lock(&n->lock);
	if (n->phase == NODE_CONNECTING) {
		handled = false;
	} else if (!n->signal) {
		n->signal = sig;
		if (n->vm)
			n->vm->stop(n->vm->opaque, VM_STOP_USER, 128 + sig);
		pthread_cond_broadcast(&n->cond);
	}
	pthread_mutex_unlock(&n->lock);
	return handled;
}

void cluster_node_destroy(struct cluster_node *n)
{
	if (!n)
		return;
	/* the VM is gone; peers no longer need our pages once shut down */
	vtime_stop(n->vtime);
	transport_destroy(n->t);
	vtime_destroy(n->vtime);
	vmlink_destroy(n->link);
	dsm_destroy(n->dsm);
	for (int i = 0; i < CLUSTER_MAX_NODES; i++)
		json_decref(n->stats[i]);
	pthread_cond_destroy(&n->cond);
	pthread_mutex_destroy(&n->stats_lock);
	pthread_mutex_destroy(&n->pause_lock);
	pthread_mutex_destroy(&n->lock);
	free(n);
}
