/*
 * cluster/node.h - the life of one node of a cluster: bring the transport
 * up (every peer authenticated), then on node 0 run the VM and, when it
 * ends, tell every peer to shut down with its exit status; on the other
 * nodes wait for that. A peer that dies or stops answering stops the VM
 * everywhere with one line naming it. Node 0 also gathers every node's
 * stats for the control socket.
 *
 * The VM itself is behind struct node_vm, so this file knows nothing of
 * the command line or the machine.
 */
#ifndef DVMM_CLUSTER_NODE_H
#define DVMM_CLUSTER_NODE_H

#include <jansson.h>
#include <stdbool.h>

#include "cluster/config.h"
#include "core/lifecycle.h"
#include "util/err.h"

/* What node 0 runs. */
struct node_vm {
	/* Boot the VM and return its exit status when it has ended. */
	int (*run)(void *opaque);
	/* End it from any thread; it must not reboot. */
	void (*stop)(void *opaque, enum vm_stop_reason reason, int code);
	/* Pause or resume its vCPUs (may block while they park); NULL: no. */
	int (*pause)(void *opaque, bool pause);
	void *opaque;
};

struct cluster_node;

/* @c must outlive the node. */
int cluster_node_create(struct cluster_node **out,
			const struct cluster_config *c, int self,
			struct err *e);
/*
 * Listen, connect to every peer and authenticate, retrying up to the
 * connect timeout; e says which node could not be reached.
 */
int cluster_node_connect(struct cluster_node *n, struct err *e);
/*
 * Node 0: run @vm, then shut the peers down. Other nodes: run their part
 * of the VM (@vm, if not NULL) on a thread and wait for node 0's shutdown,
 * a failure or a signal, then stop it. Returns the process's exit status.
 */
int cluster_node_run(struct cluster_node *n, const struct node_vm *vm);
/*
 * The VM's guest RAM (config memory bytes), kept coherent across the nodes
 * by the DSM created with the node; valid until cluster_node_destroy.
 */
void *cluster_node_ram(struct cluster_node *n);
/*
 * A stop signal arrived. Returns false while the node is still connecting
 * (the caller then simply exits: there is nothing to stop yet).
 */
bool cluster_node_signal(struct cluster_node *n, int sig);
/* Node 0: a new JSON array of every node (id, state, pid, uptime, and
 * with @with_stats the transport counters); a silent peer cannot hang it. */
json_t *cluster_node_nodes_json(struct cluster_node *n, bool with_stats);
/*
 * Node 0: pause or resume every other node's vCPUs and wait for them
 * (bounded); 0, or the first error a node reported.
 */
int cluster_node_pause_peers(struct cluster_node *n, bool pause);
/* The link between this node's part of the VM and the others'. */
struct vmlink *cluster_node_vmlink(struct cluster_node *n);
/* One guest time on every node. */
struct vtime *cluster_node_vtime(struct cluster_node *n);
/* Close every connection and free the node. */
void cluster_node_destroy(struct cluster_node *n);

#endif
