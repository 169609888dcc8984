/*
 * migration/vmstate.h - the KVM state of a VM that is not in its RAM: for
 * every vCPU the registers, special registers, FPU/XSAVE, XCRs, MSRs,
 * LAPIC, pending events, MP state, debug registers and TSC offset; for
 * the VM the in-kernel irqchip (PICs, IOAPIC), the PIT and kvmclock.
 * Captured from a paused VM, encoded into a versioned byte stream, decoded
 * (every length and count checked: the bytes come from the network) and
 * restored into a freshly created VM of the same shape.
 */
#ifndef DVMM_MIGRATION_VMSTATE_H
#define DVMM_MIGRATION_VMSTATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vm.h"
#include "util/err.h"

#define VMSTATE_VERSION 1
#define VMSTATE_MAX_MSRS 256
#define VMSTATE_XSAVE_MAX 16384 /* bytes of KVM_GET_XSAVE2 kept */
#define VMSTATE_XSAVE_MIN 4096	/* struct kvm_xsave (KVM_GET_XSAVE) */

struct vmstate_vcpu {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	bool has_xcrs; /* KVM_CAP_XCRS was offered: xcrs is valid */
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	struct kvm_debugregs debugregs;
	int64_t tsc_offset;
	uint32_t xsave_len; /* bytes used in xsave[] */
	uint8_t xsave[VMSTATE_XSAVE_MAX];
	uint32_t nmsrs;
	struct kvm_msr_entry msrs[VMSTATE_MAX_MSRS];
};

struct vmstate {
	int ncpus;
	uint64_t ram_size;
	bool has_irqchip; /* in-kernel PIC/IOAPIC/PIT (not --irqchip user) */
	struct kvm_irqchip pic_master, pic_slave, ioapic;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct vmstate_vcpu *vcpu; /* [ncpus] */
};

/* Capture @vm (paused: no vCPU in KVM_RUN). Allocates st->vcpu. */
int vmstate_capture(struct vm *vm, struct vmstate *st, struct err *e);
/* Restore into @vm (created with the same ncpus/RAM, not yet started). */
int vmstate_restore(struct vm *vm, const struct vmstate *st, struct err *e);
void vmstate_free(struct vmstate *st);

/* Encode into a new buffer (*out, *len; free() it). 0 or -ENOMEM. */
int vmstate_encode(const struct vmstate *st, uint8_t **out, size_t *len);
/*
 * Decode @len bytes; on success st is filled (vmstate_free it). Refuses a
 * wrong version, truncated or oversized records, counts out of range,
 * with one line in e.
 */
int vmstate_decode(const uint8_t *buf, size_t len, struct vmstate *st,
		   struct err *e);

#endif
