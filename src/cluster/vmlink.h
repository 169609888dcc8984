/*
 * cluster/vmlink.h - one VM over the nodes: what a node's machine needs to
 * reach the parts of the VM that live elsewhere. Port I/O and MMIO for a
 * device on another node go to its home (reads and ordinary writes wait
 * for the answer; doorbell writes are one-way); PCI config accesses of a
 * remote slot go to its home; APIC messages go to the node of the
 * destination vCPU, level EOIs and device lines to node 0's IOAPIC. On the
 * home node, forwarded accesses run on one worker thread in arrival order.
 */
#ifndef DVMM_CLUSTER_VMLINK_H
#define DVMM_CLUSTER_VMLINK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/config.h"
#include "cluster/dsm.h"
#include "cluster/transport.h"
#include "machine/machine.h"
#include "util/err.h"

struct vmlink;

int vmlink_create(struct vmlink **out, const struct cluster_config *c, int self,
		  struct transport *t, struct dsm *dsm, struct err *e);
void vmlink_destroy(struct vmlink *l);

/* This node's part of the machine, and the hooks to the others. */
void vmlink_machine_cluster(struct vmlink *l, struct machine_cluster *mcl);
/* The machine is built (before its vCPUs run; this node's NIC queue pair
 * servers start here), or about to go. */
int vmlink_attach(struct vmlink *l, struct machine *pc, struct err *e);
void vmlink_detach(struct vmlink *l);

/* Peers: tell node 0 our part is built. */
void vmlink_send_ready(struct vmlink *l);
/* Node 0: wait until every peer is ready; e says which is not. */
int vmlink_wait_ready(struct vmlink *l, unsigned int timeout_ms, struct err *e);

/* A node went down: vmlink_wait_ready gives up at once. */
void vmlink_peer_down(struct vmlink *l, int node);

/* Messages 90-99; true if it was one of them. Transport thread. */
bool vmlink_handle_msg(struct vmlink *l, int from, uint16_t type,
		       const void *payload, uint32_t len);

/* Counters: forwarded accesses, one-way doorbells, interrupts sent. */
json_t *vmlink_stats_json(struct vmlink *l);

#endif
