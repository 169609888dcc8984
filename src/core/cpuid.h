/*
 * core/cpuid.h - the CPUID a vCPU sees: KVM's supported set, with the
 * topology (APIC ids, core count) and the KVM paravirt leaves filled in.
 */
#ifndef DVMM_CORE_CPUID_H
#define DVMM_CORE_CPUID_H

#include <linux/kvm.h>

#include "util/err.h"

/* KVM_GET_SUPPORTED_CPUID, growing the buffer as needed. malloc'd. */
int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out, struct err *e);

/* Patch a copy of @base for vCPU @id of @ncpus; returns a malloc'd copy. */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *base, int id,
				  int ncpus);

#endif
