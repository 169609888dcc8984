/*
 * cluster/netq.h - the global NIC: queue pairs of a multiqueue virtio-net
 * served by nodes other than the device's home. The home node keeps the
 * PCI transport, the configuration and the control queue; the node that
 * serves pair p opens its own tap, reads and writes the pair's rings and
 * buffers through the distributed memory, takes the pair's doorbells from
 * its own vCPUs directly and sends the pair's interrupts and link changes
 * to the home, which delivers them like its own.
 *
 * Wire: fixed-size little-endian structs (every node is x86-64); every
 * field a peer sends is checked against the cluster file (a pair's
 * commands only from the device's home, its interrupts and link changes
 * only from the node serving it).
 */
#ifndef DVMM_CLUSTER_NETQ_H
#define DVMM_CLUSTER_NETQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/config.h"
#include "cluster/transport.h"
#include "machine/machine.h"
#include "util/err.h"

struct netq;

int netq_create(struct netq **out, const struct cluster_config *c, int self,
		struct transport *t, struct err *e);
void netq_destroy(struct netq *nq);

/* The home side's hooks for every NIC (mcl->net_remote). */
void netq_machine_cluster(struct netq *nq, struct machine_cluster *mcl);
/* The machine is built: start this node's pair servers (opening taps). */
int netq_attach(struct netq *nq, struct machine *pc, struct err *e);
/* Before the machine goes: stop and destroy the servers. */
void netq_detach(struct netq *nq);

/* The node serving queue @q of the device in PCI slot @slot, or -1 when
 * the device's home serves it. */
int netq_server_of(const struct netq *nq, int slot, uint16_t q);
/* A doorbell of queue @q of @slot: to the node serving it (this one too). */
void netq_kick(struct netq *nq, int node, int slot, uint16_t q);

/* A peer went down: requests waiting for it give up. */
void netq_peer_down(struct netq *nq, int node);

/* Messages 110-119; true if it was one of them. Transport thread. */
bool netq_handle_msg(struct netq *nq, int from, uint16_t type,
		     const void *payload, uint32_t len);

/* Counters: pairs served here, kicks, interrupts, link changes. */
json_t *netq_stats_json(struct netq *nq);

#endif
