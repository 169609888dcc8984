/*
 * core/dirty_ring.h - KVM's dirty ring (KVM_CAP_DIRTY_LOG_RING), the
 * alternative to the dirty bitmap for migration: each vCPU publishes the
 * pages it dirties in a ring shared with dvmm; dvmm harvests every ring
 * into per-region bitmaps (vm_dirty_pages reads them) and hands the
 * entries back with KVM_RESET_DIRTY_RINGS. A vCPU whose ring fills exits
 * (KVM_EXIT_DIRTY_RING_FULL) and harvests before it goes on.
 */
#ifndef DVMM_CORE_DIRTY_RING_H
#define DVMM_CORE_DIRTY_RING_H

#include <stdint.h>

#include "util/err.h"

struct vm;
struct vcpu;

/* Ring entries per vCPU: a power of two in this range (0: the bitmap). */
#define DIRTY_RING_MIN 1024
#define DIRTY_RING_MAX 65536

/* Before any vCPU exists: turn the rings on with @entries each. */
int dirty_ring_enable(struct vm *vm, uint32_t entries, struct err *e);
/* Map vCPU @v's ring (after KVM_CREATE_VCPU). */
int dirty_ring_map(struct vm *vm, struct vcpu *v, struct err *e);
/* Move every published entry into the bitmaps; give them back to KVM. */
int dirty_ring_harvest(struct vm *vm);
/* Region @region's harvested pages into @bitmap (cleared in the ring's). */
int dirty_ring_take(struct vm *vm, int region, uint64_t *bitmap);
void dirty_ring_free(struct vm *vm);

#endif
