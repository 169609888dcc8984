/*
 * cluster/netq.c - the global NIC (see netq.h): the home side's hooks that
 * start, stop and kick the queue pairs other nodes serve, and on those
 * nodes the pair servers (virtio_net_server_*) with a worker thread that
 * runs the home's commands. Commands wait for the server's answer; a
 * server's interrupts and link changes are one-way. Work that may touch
 * guest memory never runs on the transport thread (a DSM fault there would
 * wait for itself).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/netq.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/workq.h"
#include "virtio/devices.h"

#define NETQ_WAIT_MS 10000 /* a server's answer to start/stop */
#define NETQ_MAX_WAITS 32

struct cmd_wire {
	uint64_t id;
	uint8_t slot, pair, start, pad[5];
	struct virtio_net_pair_setup s; /* start only */
} __attribute__((packed));

struct ack_wire {
	uint64_t id;
	int32_t result;
	uint32_t pad;
} __attribute__((packed));

struct queue_wire { /* a kick to the server, an interrupt to the home */
	uint8_t slot, pad;
	uint16_t q;
} __attribute__((packed));

struct link_wire {
	uint8_t slot, pair, up, pad;
} __attribute__((packed));

struct netq;

/* A pair served here for a device homed elsewhere. */
struct netq_server {
	struct netq *nq;
	int nic, pair;
	struct virtio_net *net;
};

struct netq_nic {
	int slot; /* PCI slot: machine index + 1 */
	int home;
	int npairs;
	int node[VIRTIO_NET_MAX_PAIRS];
	const char *tap[VIRTIO_NET_MAX_PAIRS];
	struct netq_server srv[VIRTIO_NET_MAX_PAIRS];
	struct virtio_net *dev; /* at home, while attached */
	struct virtio_device *vd;
};

struct netq_home {
	struct netq *nq;
	int nic;
};

struct netq {
	const struct cluster_config *cfg;
	int self;
	struct transport *t;
	int nnics;
	struct netq_nic nic[MACHINE_MAX_NICS];
	struct netq_home home[MACHINE_MAX_NICS];

	pthread_rwlock_t lock; /* servers, dev: attach/detach vs use */

	pthread_mutex_t wlock; /* waits[], down[] */
	pthread_cond_t wcond;
	struct {
		uint64_t id; /* 0: free */
		int node;
		bool done;
		int32_t result;
	} waits[NETQ_MAX_WAITS];
	bool down[CLUSTER_MAX_NODES];
	_Atomic uint64_t seq;

	struct workq wq; /* the home's commands, other nodes' doorbells */

	_Atomic uint64_t starts, stops, kicks_sent, kicks_served, irqs_sent,
		irqs_recv, links, refused;
};

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static struct netq_nic *nic_of_slot(struct netq *nq, int slot)
{
	for (int i = 0; i < nq->nnics; i++)
		if (nq->nic[i].slot == slot)
			return &nq->nic[i];
	return NULL;
}

int netq_server_of(const struct netq *nq, int slot, uint16_t q)
{
	for (int i = 0; i < nq->nnics; i++) {
		const struct netq_nic *n = &nq->nic[i];
		int pair = q / 2;

		if (n->slot != slot)
			continue;
		if (pair >= n->npairs || n->node[pair] == n->home)
			return -1;
		return n->node[pair];
	}
	return -1;
}

/* ---- the home side: commands and their answers ---- */

static int wait_claim(struct netq *nq, int node, uint64_t id)
{
	int slot = -1;

	pthread_mutex_lock(&nq->wlock);
	for (int i = 0; i < NETQ_MAX_WAITS && slot < 0; i++) {
		if (nq->waits[i].id)
			continue;
		nq->waits[i].id = id;
		nq->waits[i].node = node;
		nq->waits[i].done = false;
		slot = i;
	}
	pthread_mutex_unlock(&nq->wlock);
	return slot;
}

/* Wait for the answer to waits[w]; the server's result or -errno. */
static int wait_answer(struct netq *nq, int w)
{
	struct timespec dl = clock_deadline_ms(NETQ_WAIT_MS);
	int rc = -ETIMEDOUT;

	pthread_mutex_lock(&nq->wlock);
	for (;;) {
		if (nq->waits[w].done) {
			rc = nq->waits[w].result;
			break;
		}
		if (nq->down[nq->waits[w].node]) {
			rc = -ECONNRESET;
			break;
		}
		if (pthread_cond_timedwait(&nq->wcond, &nq->wlock, &dl) ==
		    ETIMEDOUT)
			break;
	}
	nq->waits[w].id = 0;
	pthread_mutex_unlock(&nq->wlock);
	return rc;
}

static int send_command(struct netq *nq, int nic, unsigned int pair,
			const struct virtio_net_pair_setup *s)
{
	struct netq_nic *n = &nq->nic[nic];
	struct cmd_wire w = {.slot = (uint8_t)n->slot,
			     .pair = (uint8_t)pair,
			     .start = s != NULL};
	int node = n->node[pair], slot, rc;

	w.id = atomic_fetch_add(&nq->seq, 1) + 1;
	if (s)
		w.s = *s;
	slot = wait_claim(nq, node, w.id);
	if (slot < 0)
		return -EBUSY;
	rc = transport_send(nq->t, node, MSG_NETQ_CMD, &w, sizeof(w));
	if (rc) {
		pthread_mutex_lock(&nq->wlock);
		nq->waits[slot].id = 0;
		pthread_mutex_unlock(&nq->wlock);
		return rc;
	}
	return wait_answer(nq, slot);
}

static int home_start(void *opaque, unsigned int pair,
		      const struct virtio_net_pair_setup *s)
{
	struct netq_home *h = opaque;
	int rc;

	if (pair == 0 || (int)pair >= h->nq->nic[h->nic].npairs)
		return -EINVAL;
	count(&h->nq->starts);
	rc = send_command(h->nq, h->nic, pair, s);
	if (rc)
		pr_warn("NIC %d: node %d did not start queue pair %u: %s",
			h->nic, h->nq->nic[h->nic].node[pair], pair,
			strerror(rc < 0 ? -rc : rc));
	return rc;
}

static void home_stop(void *opaque, unsigned int pair)
{
	struct netq_home *h = opaque;
	int rc;

	if (pair == 0 || (int)pair >= h->nq->nic[h->nic].npairs)
		return;
	count(&h->nq->stops);
	rc = send_command(h->nq, h->nic, pair, NULL);
	if (rc && rc != -ECONNRESET)
		pr_warn("NIC %d: node %d did not stop queue pair %u: %s",
			h->nic, h->nq->nic[h->nic].node[pair], pair,
			strerror(rc < 0 ? -rc : rc));
}

void netq_kick(struct netq *nq, int node, int slot, uint16_t q)
{
	struct queue_wire w = {.slot = (uint8_t)slot, .q = q};
	struct netq_nic *n;

	if (node != nq->self) {
		count(&nq->kicks_sent);
		transport_send(nq->t, node, MSG_NETQ_KICK, &w, sizeof(w));
		return;
	}
	/* A doorbell of a pair served here, from the forwarder thread. */
	pthread_rwlock_rdlock(&nq->lock);
	n = nic_of_slot(nq, slot);
	if (n && q / 2 < n->npairs && n->srv[q / 2].net) {
		count(&nq->kicks_served);
		virtio_net_server_kick(n->srv[q / 2].net, q);
	}
	pthread_rwlock_unlock(&nq->lock);
}

static void home_kick(void *opaque, uint16_t q)
{
	struct netq_home *h = opaque;
	struct netq_nic *n = &h->nq->nic[h->nic];

	if (q / 2 < n->npairs && n->node[q / 2] != n->home)
		netq_kick(h->nq, n->node[q / 2], n->slot, q);
}

void netq_machine_cluster(struct netq *nq, struct machine_cluster *mcl)
{
	for (int i = 0; i < nq->nnics; i++)
		mcl->net_remote[i] =
			(struct virtio_net_remote_ops){.start = home_start,
						       .stop = home_stop,
						       .kick = home_kick,
						       .opaque = &nq->home[i]};
}

static void got_ack(struct netq *nq, int from, const struct ack_wire *a)
{
	pthread_mutex_lock(&nq->wlock);
	for (int i = 0; i < NETQ_MAX_WAITS; i++) {
		if (!a->id || nq->waits[i].id != a->id ||
		    nq->waits[i].node != from)
			continue;
		nq->waits[i].result = a->result > 0 ? -EIO : a->result;
		nq->waits[i].done = true;
		pthread_cond_broadcast(&nq->wcond);
	}
	pthread_mutex_unlock(&nq->wlock);
}

/* A server's interrupt for queue q: delivered as the device's own. */
static void got_irq(struct netq *nq, int from, const struct queue_wire *w)
{
	struct netq_nic *n;

	pthread_rwlock_rdlock(&nq->lock);
	n = nic_of_slot(nq, w->slot);
	if (!n || n->home != nq->self || w->q / 2 >= n->npairs ||
	    n->node[w->q / 2] != from || from == n->home) {
		count(&nq->refused);
	} else if (n->vd) {
		count(&nq->irqs_recv);
		n->vd->transport.notify_queue(n->vd->transport.opaque, w->q);
	}
	pthread_rwlock_unlock(&nq->lock);
}

static void got_link(struct netq *nq, int from, const struct link_wire *w)
{
	struct netq_nic *n;

	pthread_rwlock_rdlock(&nq->lock);
	n = nic_of_slot(nq, w->slot);
	if (!n || n->home != nq->self || w->pair == 0 || w->pair >= n->npairs ||
	    n->node[w->pair] != from) {
		count(&nq->refused);
	} else if (n->dev) {
		count(&nq->links);
		virtio_net_remote_link(n->dev, w->pair, w->up != 0);
	}
	pthread_rwlock_unlock(&nq->lock);
}

/* ---- the serving side ---- */

static void server_notify(void *opaque, uint16_t q)
{
	struct netq_server *s = opaque;
	struct netq_nic *n = &s->nq->nic[s->nic];
	struct queue_wire w = {.slot = (uint8_t)n->slot, .q = q};

	count(&s->nq->irqs_sent);
	transport_send(s->nq->t, n->home, MSG_NETQ_IRQ, &w, sizeof(w));
}

static void server_link(void *opaque, bool up)
{
	struct netq_server *s = opaque;
	struct netq_nic *n = &s->nq->nic[s->nic];
	struct link_wire w = {
		.slot = (uint8_t)n->slot, .pair = (uint8_t)s->pair, .up = up};

	transport_send(s->nq->t, n->home, MSG_NETQ_LINK, &w, sizeof(w));
}

/* A doorbell another node's vCPU rang, on the worker thread. */
static void run_kick(struct netq *nq, const struct queue_wire *w)
{
	struct netq_nic *n;

	pthread_rwlock_rdlock(&nq->lock);
	n = nic_of_slot(nq, w->slot);
	if (n && n->srv[w->q / 2].net) {
		count(&nq->kicks_served);
		virtio_net_server_kick(n->srv[w->q / 2].net, w->q);
	}
	pthread_rwlock_unlock(&nq->lock);
}

/* A command of the home, on the worker thread; answer it. */
static void run_command(struct netq *nq, int from, const struct cmd_wire *c)
{
	struct ack_wire a = {.id = c->id};
	struct netq_server *s;
	struct err e = {0};

	pthread_rwlock_rdlock(&nq->lock);
	s = &nic_of_slot(nq, c->slot)->srv[c->pair]; /* checked on arrival */
	if (!s->net) {
		a.result = c->start ? -ENODEV : 0;
	} else if (c->start) {
		a.result = virtio_net_server_start(s->net, &c->s, &e);
		if (a.result)
			pr_warn("NIC %d, queue pair %d: %s", s->nic, s->pair,
				e.msg);
	} else {
		virtio_net_server_stop(s->net);
	}
	pthread_rwlock_unlock(&nq->lock);
	transport_send(nq->t, from, MSG_NETQ_ACK, &a, sizeof(a));
}

static void run_job(void *opaque, const struct workq_job *j)
{
	if (j->type == MSG_NETQ_KICK)
		run_kick(opaque, (const struct queue_wire *)j->payload);
	else
		run_command(opaque, j->from,
			    (const struct cmd_wire *)j->payload);
}

/* Is @pair of the device in @slot served here for its home @from? */
static bool served_here(struct netq *nq, int from, int slot, int pair)
{
	const struct netq_nic *n = nic_of_slot(nq, slot);

	return n && n->home == from && pair > 0 && pair < n->npairs &&
	       n->node[pair] == nq->self;
}

static void got_command(struct netq *nq, int from, const struct cmd_wire *c)
{
	if (!served_here(nq, from, c->slot, c->pair) || c->start > 1) {
		count(&nq->refused);
		return;
	}
	workq_push(&nq->wq, from, MSG_NETQ_CMD, c, sizeof(*c));
}

static void got_kick(struct netq *nq, int from, const struct queue_wire *w)
{
	const struct netq_nic *n = nic_of_slot(nq, w->slot);

	/* from: any node's vCPU may ring a doorbell */
	if (!n || w->q / 2 == 0 || w->q / 2 >= n->npairs ||
	    n->node[w->q / 2] != nq->self || n->home == nq->self) {
		count(&nq->refused);
		return;
	}
	workq_push(&nq->wq, from, MSG_NETQ_KICK, w, sizeof(*w));
}

static void destroy_servers(struct netq *nq)
{
	for (int i = 0; i < nq->nnics; i++) {
		for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++) {
			if (nq->nic[i].srv[p].net)
				virtio_net_destroy(nq->nic[i].srv[p].net);
			nq->nic[i].srv[p].net = NULL;
		}
		nq->nic[i].dev = NULL;
		nq->nic[i].vd = NULL;
	}
}

static int create_server(struct netq *nq, struct machine *pc, int i, int p,
			 struct err *e)
{
	struct netq_nic *n = &nq->nic[i];
	struct netq_server *s = &n->srv[p];
	struct virtio_net_server_ops ops = {
		.notify = server_notify, .link = server_link, .opaque = s};

	s->nq = nq;
	s->nic = i;
	s->pair = p;
	if (virtio_net_server_create(&s->net, &pc->vm.mem,
				     (unsigned int)n->npairs, (unsigned int)p,
				     n->tap[p], &ops, e)) {
		char why[sizeof(e->msg)];

		snprintf(why, sizeof(why), "%s", e->msg);
		return err_set(e, e->code, "NIC %d, queue pair %d: %s", i, p,
			       why);
	}
	return 0;
}

/* At home: the device of NIC @n among the machine's own. */
static void find_home_device(struct netq_nic *n, struct machine *pc)
{
	for (int k = 0; k < pc->nvirtio; k++) {
		struct machine_virtio *mv = &pc->virtio[k];

		if (mv->kind == VIRTIO_KIND_NET && mv->transport_up &&
		    mv->vp.pci.slot == n->slot) {
			n->dev = mv->dev;
			n->vd = virtio_net_device(mv->dev);
		}
	}
}

int netq_attach(struct netq *nq, struct machine *pc, struct err *e)
{
	int rc = 0;

	pthread_rwlock_wrlock(&nq->lock);
	for (int i = 0; i < nq->nnics && !rc; i++) {
		struct netq_nic *n = &nq->nic[i];

		if (n->home == nq->self) {
			find_home_device(n, pc);
			continue;
		}
		for (int p = 1; p < n->npairs && !rc; p++)
			if (n->node[p] == nq->self)
				rc = create_server(nq, pc, i, p, e);
	}
	if (rc)
		destroy_servers(nq);
	pthread_rwlock_unlock(&nq->lock);
	return rc;
}

void netq_detach(struct netq *nq)
{
	pthread_rwlock_wrlock(&nq->lock);
	destroy_servers(nq);
	pthread_rwlock_unlock(&nq->lock);
}

void netq_peer_down(struct netq *nq, int node)
{
	if (node < 0 || node >= CLUSTER_MAX_NODES)
		return;
	pthread_mutex_lock(&nq->wlock);
	nq->down[node] = true;
	pthread_cond_broadcast(&nq->wcond);
	pthread_mutex_unlock(&nq->wlock);
}

bool netq_handle_msg(struct netq *nq, int from, uint16_t type, const void *p,
		     uint32_t len)
{
	union {
		struct cmd_wire cmd;
		struct ack_wire ack;
		struct queue_wire q;
		struct link_wire link;
	} w;
	static const uint32_t sizes[] = {
		[MSG_NETQ_CMD - MSG_NETQ_CMD] = sizeof(struct cmd_wire),
		[MSG_NETQ_ACK - MSG_NETQ_CMD] = sizeof(struct ack_wire),
		[MSG_NETQ_KICK - MSG_NETQ_CMD] = sizeof(struct queue_wire),
		[MSG_NETQ_IRQ - MSG_NETQ_CMD] = sizeof(struct queue_wire),
		[MSG_NETQ_LINK - MSG_NETQ_CMD] = sizeof(struct link_wire),
	};

	if (type < MSG_NETQ_CMD || type > MSG_NETQ_LINK)
		return false;
	if (len != sizes[type - MSG_NETQ_CMD]) {
		count(&nq->refused);
		return true;
	}
	memcpy(&w, p, len);
	switch (type) {
	case MSG_NETQ_CMD:
		got_command(nq, from, &w.cmd);
		break;
	case MSG_NETQ_ACK:
		got_ack(nq, from, &w.ack);
		break;
	case MSG_NETQ_KICK:
		got_kick(nq, from, &w.q);
		break;
	case MSG_NETQ_IRQ:
		got_irq(nq, from, &w.q);
		break;
	case MSG_NETQ_LINK:
		got_link(nq, from, &w.link);
		break;
	}
	return true;
}

json_t *netq_stats_json(struct netq *nq)
{
	int served = 0;

	pthread_rwlock_rdlock(&nq->lock);
	for (int i = 0; i < nq->nnics; i++)
		for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++)
			served += nq->nic[i].srv[p].net != NULL;
	pthread_rwlock_unlock(&nq->lock);
	return json_pack(
		"{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "pairs_served",
		served, "starts", (json_int_t)nq->starts, "stops",
		(json_int_t)nq->stops, "kicks_sent", (json_int_t)nq->kicks_sent,
		"kicks_served", (json_int_t)nq->kicks_served, "irqs_sent",
		(json_int_t)nq->irqs_sent, "irqs_recv",
		(json_int_t)nq->irqs_recv, "links", (json_int_t)nq->links,
		"refused", (json_int_t)nq->refused);
}

/* NIC i of the machine: its slot and pairs from the cluster file. */
static void add_nics(struct netq *nq, const struct cluster_config *c)
{
	int ndisks = 0;

	for (int i = 0; i < c->ndevices; i++)
		ndisks += c->dev[i].type == CLUSTER_DEV_DISK;
	for (int i = 0; i < c->ndevices; i++) {
		const struct cluster_device *d = &c->dev[i];
		struct netq_nic *n = &nq->nic[nq->nnics];

		if (d->type != CLUSTER_DEV_NET)
			continue;
		n->slot = ndisks + nq->nnics + 1;
		n->home = d->node;
		n->npairs = d->npairs > 1 ? d->npairs : 1;
		n->node[0] = d->node;
		n->tap[0] = d->tap;
		for (int p = 1; p < n->npairs; p++) {
			n->node[p] = d->pair[p].node;
			n->tap[p] = d->pair[p].tap;
		}
		nq->home[nq->nnics] =
			(struct netq_home){.nq = nq, .nic = nq->nnics};
		nq->nnics++;
	}
}

int netq_create(struct netq **out, const struct cluster_config *c, int self,
		struct transport *t, struct err *e)
{
	struct netq *nq = calloc(1, sizeof(*nq));
	pthread_condattr_t ca;
	int rc;

	if (!nq)
		return err_set(e, -ENOMEM, "out of memory");
	nq->cfg = c;
	nq->self = self;
	nq->t = t;
	add_nics(nq, c);
	pthread_rwlock_init(&nq->lock, NULL);
	pthread_condattr_init(&ca); /* deadlines are CLOCK_MONOTONIC */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&nq->wlock, NULL);
	pthread_cond_init(&nq->wcond, &ca);
	pthread_condattr_destroy(&ca);
	rc = workq_start(&nq->wq, run_job, nq);
	if (rc) {
		netq_destroy(nq);
		return err_set(e, rc, "cannot start the NIC queue worker: %s",
			       strerror(-rc));
	}
	*out = nq;
	return 0;
}

void netq_destroy(struct netq *nq)
{
	if (!nq)
		return;
	workq_stop(&nq->wq);
	destroy_servers(nq);
	pthread_rwlock_destroy(&nq->lock);
	pthread_mutex_destroy(&nq->wlock);
	pthread_cond_destroy(&nq->wcond);
	free(nq);
}
