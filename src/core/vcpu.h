/* core/vcpu.h - vCPU threads: start, kick out of KVM_RUN. */
#ifndef DVMM_CORE_VCPU_H
#define DVMM_CORE_VCPU_H

#include "core/vm.h"

int vcpu_start_thread(struct vcpu *v);
/* Set the vCPU's KVM TSC offset (its own thread, or before it runs). */
int vcpu_apply_tsc_offset(struct vcpu *v, int64_t offset);
/* The id of the vCPU whose thread calls this, or -1 on other threads. */
int vcpu_self_id(void);
/* Make the vCPU leave KVM_RUN soon and look at the VM state. */
void vcpu_kick(struct vcpu *v);
/*
 * Block the vCPU thread until @ready(@arg) holds, the vCPU is kicked, or
 * the VM leaves the running state. @ready is called with no lock held.
 */
void vcpu_block(struct vcpu *v, bool (*ready)(void *arg), void *arg);

#endif
