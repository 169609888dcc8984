/*
 * core/cpuid.c - building each vCPU's CPUID table from KVM's supported set:
 * APIC ids and a flat topology (one package, ncpus cores, one thread each),
 * the hypervisor bit, and the KVM paravirt leaves (signature and features).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/ioctl.h>

#include "core/cpuid.h"

#define CPUID_KVM_SIGNATURE 0x40000000u
#define CPUID_KVM_FEATURES 0x40000001u
#define CPUID_MAX_ENTRIES 512

static size_t cpuid_size(unsigned int nent)
{
	return sizeof(struct kvm_cpuid2) +
	       nent * sizeof(struct kvm_cpuid_entry2);
}

int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out, struct err *e)
{
	for (unsigned int nent = 64; nent <= CPUID_MAX_ENTRIES; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, cpuid_size(nent));

		if (!c)
			return err_set(e, -ENOMEM, "out of memory for CPUID");
		c->nent = nent;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return err_set(e, -errno,
				       "KVM_GET_SUPPORTED_CPUID failed: %s",
				       strerror(errno));
	}
	return err_set(e, -E2BIG, "KVM reports more than %d CPUID entries",
		       CPUID_MAX_ENTRIES);
}

/* Bits needed to number @n items (0 for 1). */
static unsigned int count_bits(unsigned int n)
{
	unsigned int b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

static void patch_entry(struct kvm_cpuid_entry2 *ent, int id, int ncpus)
{
	unsigned int core_bits = count_bits((unsigned int)ncpus);

	switch (ent->function) {
	case 1:
		ent->ebx &= 0x0000ffffu;
		ent->ebx |= (uint32_t)id << 24;
		ent->ebx |= (uint32_t)(ncpus > 255 ? 255 : ncpus) << 16;
		if (ncpus > 1)
			ent->edx |= 1u << 28; /* HTT: the count is valid */
		ent->ecx |= 1u << 31;	      /* running under a hypervisor */
		break;
	case 4:
		/* cores per package - 1 in EAX[31:26]; no shared threads */
		ent->eax &= 0x03ffc3ffu;
		ent->eax |= (uint32_t)((ncpus > 64 ? 64 : ncpus) - 1) << 26;
		break;
	case 0xb:
		/* x2APIC topology: level 0 = SMT (1 thread), 1 = core */
		ent->edx = (uint32_t)id;
		if (ent->index == 0) {
			ent->eax = 0;
			ent->ebx = 1;
			ent->ecx = (1u << 8) | 0;
		} else if (ent->index == 1) {
			ent->eax = core_bits;
			ent->ebx = (uint32_t)ncpus;
			ent->ecx = (2u << 8) | 1;
		} else {
			ent->eax = ent->ebx = 0;
			ent->ecx = ent->index;
		}
		break;
	case CPUID_KVM_SIGNATURE:
		ent->eax = CPUID_KVM_FEATURES;
		memcpy(&ent->ebx, "KVMK", 4);
		memcpy(&ent->ecx, "VMKV", 4);
		memcpy(&ent->edx, "M\0\0\0", 4);
		break;
	default:
		break;
	}
}

struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *base, int id,
				  int ncpus)
{
	struct kvm_cpuid2 *c = malloc(cpuid_size(base->nent));

	if (!c)
		return NULL;
	memcpy(c, base, cpuid_size(base->nent));
	for (unsigned int i = 0; i < c->nent; i++)
		patch_entry(&c->entries[i], id, ncpus);
	return c;
}
