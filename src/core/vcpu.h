/* core/vcpu.h - vCPU threads: start, kick out of KVM_RUN. */
#ifndef DVMM_CORE_VCPU_H
#define DVMM_CORE_VCPU_H

#include "core/vm.h"

int vcpu_start_thread(struct vcpu *v);
/* Make the vCPU leave KVM_RUN soon and look at the VM state. */
void vcpu_kick(struct vcpu *v);

#endif
