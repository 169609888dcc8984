/*
 * irqchip/apic_bus.h - interrupt messages as they travel between the
 * userspace interrupt controllers: what an ICR write, an MSI or an IOAPIC
 * redirection entry sends, and the pure rules for which LAPICs accept it.
 * Shared by lapic.c, ioapic.c and the routing glue (userchip.c), which may
 * carry a message to another node.
 */
#ifndef DVMM_IRQCHIP_APIC_BUS_H
#define DVMM_IRQCHIP_APIC_BUS_H

#include <stdbool.h>
#include <stdint.h>

#define APIC_MSI_BASE 0xfee00000ULL /* MSI address window 0xfeeXXXXX */

enum apic_delivery {
	APIC_DM_FIXED = 0,
	APIC_DM_LOWEST = 1,
	APIC_DM_SMI = 2,
	APIC_DM_NMI = 4,
	APIC_DM_INIT = 5,
	APIC_DM_SIPI = 6,
	APIC_DM_EXTINT = 7,
};

enum apic_shorthand {
	APIC_SH_NONE = 0,
	APIC_SH_SELF = 1,
	APIC_SH_ALL = 2, /* all including self */
	APIC_SH_ALL_BUT_SELF = 3,
};

/* One interrupt message on the (virtual) APIC bus. */
struct apic_msg {
	uint32_t dest; /* physical APIC ID, or logical destination */
	uint8_t vector;
	uint8_t delivery;  /* enum apic_delivery */
	uint8_t shorthand; /* enum apic_shorthand */
	bool logical;	   /* destination mode */
	bool level;	   /* trigger mode: level-triggered */
	bool assert;	   /* level: asserted (INIT level de-assert: false) */
	bool x2apic_dest;  /* dest is a 32-bit x2APIC destination (from an
			      x2APIC ICR); else an 8-bit xAPIC/MSI one */
	int src_vcpu;	   /* sender vCPU for SELF/ALL_BUT_SELF, -1 if none */
};

/* What a LAPIC looks like to the destination matcher. */
struct apic_target {
	int vcpu;	   /* vCPU index */
	uint32_t apic_id;  /* x2APIC ID (== initial APIC ID) */
	uint32_t ldr;	   /* logical destination register as the guest sees
			     it: xAPIC bits 31:24, x2APIC the whole 32 bits */
	uint8_t dfr_model; /* xAPIC DFR bits 31:28: 0xf flat, 0x0 cluster */
	bool x2apic;	   /* in x2APIC mode */
	bool hw_enabled;   /* IA32_APIC_BASE enable bit */
};

/*
 * Decode an MSI write (@addr in 0xfee00000-0xfeefffff, @data) into a
 * message: dest = address bits 19:12 (plus bits 11:5 of the address as
 * extended destination ID bits 14:8 when set), logical = bit 2, vector,
 * delivery mode, level and assert from the data. False if @addr is not an
 * MSI address.
 */
bool apic_msg_from_msi(uint64_t addr, uint32_t data, struct apic_msg *m);

/*
 * Does LAPIC @t accept @m? Handles the shorthands (the sender is
 * m->src_vcpu), physical destinations (0xff, or 0xffffffff for an x2APIC
 * destination, is broadcast), xAPIC flat and cluster logical mode, x2APIC
 * logical mode (cluster in bits 31:16, bitmap in 15:0; 0xffffffff
 * broadcast). A LAPIC that is hardware-disabled accepts nothing.
 */
bool apic_match(const struct apic_msg *m, const struct apic_target *t);

#endif
