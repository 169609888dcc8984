/*
 * cluster/vtime.h - one guest time on every node. Each node knows its host
 * TSC (and its frequency from KVM); every node other than 0 keeps
 * measuring the offset between its TSC and node 0's with timestamped round
 * trips (cluster/clocksync.c keeps the minimum-round-trip samples), first
 * before its part of the VM is built and then every few seconds. Node 0
 * sends the guest TSC base (guest TSC = node 0's TSC + base) and its
 * kvmclock; a node sets every vCPU's KVM TSC offset so that its guest TSC
 * is node 0's, joins the kvmclock, and afterwards only slews the offset
 * (a bounded rate of change, so the guest TSC never goes backwards).
 *
 * Test hook: DVMM_TEST_TSC_SKEW=K:NS makes node K see its host TSC NS
 * nanoseconds ahead (and program KVM as if its hardware were): the
 * protocol must measure it away, the guest must never see it.
 */
#ifndef DVMM_CLUSTER_VTIME_H
#define DVMM_CLUSTER_VTIME_H

#include <jansson.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/transport.h"
#include "core/vm.h"
#include "util/err.h"

struct vtime;

int vtime_create(struct vtime **out, struct transport *t, int self, int nnodes,
		 struct err *e);
/* Stop measuring (before the transport goes). */
void vtime_stop(struct vtime *v);
void vtime_destroy(struct vtime *v);

/* Peers: start measuring (after the transport is connected). */
int vtime_start(struct vtime *v, struct err *e);
/*
 * Node 0, its VM built and not yet running: read the guest TSC base and
 * kvmclock from it and send them to every peer.
 */
int vtime_publish_base(struct vtime *v, struct vm *vm, struct err *e);
/*
 * Peers: wait (bounded) for node 0's base and a first offset estimate, and
 * fill what the VM must be created with (TSC offset, kvmclock).
 */
int vtime_join(struct vtime *v, struct vm_config *vc, struct err *e);
/* Peers: the VM is built / gone (the slewing follows it). */
int vtime_attach(struct vtime *v, struct vm *vm, struct err *e);
void vtime_detach(struct vtime *v);

/* Messages 100-109; true if it was one of them. */
bool vtime_handle_msg(struct vtime *v, int from, uint16_t type,
		      const void *payload, uint32_t len);
/* The estimate and its error, the applied offset, the samples. */
json_t *vtime_stats_json(struct vtime *v);

#endif
