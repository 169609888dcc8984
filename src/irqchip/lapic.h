/*
 * irqchip/lapic.h - a local APIC emulated in dvmm (used when the VM has no
 * in-kernel irqchip, e.g. a VM spread over several nodes): both the
 * x2APIC MSR interface (0x800-0x8ff) and the xAPIC MMIO page, ID, version,
 * TPR/PPR, EOI, LDR/DFR, SVR, ISR/IRR/TMR, ESR, ICR (fixed, lowest
 * priority, NMI, INIT, SIPI; physical, logical, shorthand destinations),
 * the LVTs, LINT0/1, and the timer in one-shot, periodic and TSC-deadline
 * modes. Pure logic: sending, waking the vCPU, time and timers are the
 * caller's, through struct lapic_ops. Thread-safe: messages may be
 * delivered from any thread while the vCPU thread reads and writes.
 */
#ifndef DVMM_IRQCHIP_LAPIC_H
#define DVMM_IRQCHIP_LAPIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "irqchip/apic_bus.h"

#define LAPIC_MMIO_BASE 0xfee00000ULL
#define LAPIC_MMIO_SIZE 0x1000ULL
#define MSR_IA32_APIC_BASE 0x1b
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_X2APIC_FIRST 0x800
#define MSR_X2APIC_LAST 0x8ff

#define APIC_BASE_BSP (1ULL << 8)
#define APIC_BASE_X2APIC (1ULL << 10)
#define APIC_BASE_ENABLE (1ULL << 11)

/* Events for the vCPU loop besides fixed interrupts (lapic_take_events). */
enum lapic_event {
	LAPIC_EV_NMI = 1u << 0,
	LAPIC_EV_INIT = 1u << 1,
	LAPIC_EV_SIPI = 1u << 2,
	LAPIC_EV_EXTINT = 1u << 3, /* ask the PIC for the vector (INTA) */
	LAPIC_EV_SMI = 1u << 4,
};

struct lapic_ops {
	/* An ICR write: put @m on the bus (may come back to this LAPIC). */
	void (*send)(void *opaque, const struct apic_msg *m);
	/* EOI of a level-triggered vector (its TMR bit was set). */
	void (*eoi)(void *opaque, uint8_t vector);
	/* Something became pending: wake the vCPU / kick it out of KVM_RUN. */
	void (*kick)(void *opaque);
	/* Call lapic_timer_fire at @deadline_ns (now_ns clock); 0 cancels. */
	void (*timer_arm)(void *opaque, uint64_t deadline_ns);
	/* The time base of the timer, in nanoseconds. */
	uint64_t (*now_ns)(void *opaque);
	/* Guest TSC <-> now_ns, for the TSC-deadline timer. */
	uint64_t (*tsc_to_ns)(void *opaque, uint64_t tsc);
	uint64_t (*ns_to_tsc)(void *opaque, uint64_t ns);
};

struct lapic {
	pthread_mutex_t lock;
	const struct lapic_ops *ops;
	void *opaque;
	int vcpu;
	uint32_t apic_id;
	uint64_t bus_hz; /* timer input clock before the divider */

	uint64_t apic_base; /* IA32_APIC_BASE */
	uint32_t tpr, ldr, dfr, svr, esr, esr_pending, icr_hi;
	uint32_t icr_lo;  /* ICR bits 31:0 as last written */
	uint8_t xapic_id; /* xAPIC ID register bits 31:24 (writable) */
	uint32_t lvt[7];  /* CMCI, timer, thermal, perf, LINT0, LINT1, error */
	uint32_t irr[8], isr[8], tmr[8];
	uint32_t tdcr, tmict;
	uint64_t timer_start_ns;    /* when the current count was loaded */
	uint64_t timer_deadline_ns; /* armed deadline, 0 if none */
	uint64_t timer_seq;	    /* deadline changes, for timer_arm */
	uint64_t tsc_deadline;	    /* IA32_TSC_DEADLINE value */
	unsigned int events;	    /* enum lapic_event bits pending */
	uint8_t sipi_vector;
	int lint_level[2];
	uint64_t timer_fired; /* stats */
};

/*
 * Power-on state: xAPIC mode, enabled, base 0xfee00000 (BSP flag if
 * @bsp), SVR 0xff (software-disabled), LVTs masked, @bus_hz timer clock
 * (e.g. 1 GHz).
 */
void lapic_init(struct lapic *a, int vcpu, uint32_t apic_id, bool bsp,
		uint64_t bus_hz, const struct lapic_ops *ops, void *opaque);
void lapic_destroy(struct lapic *a);
/* INIT: registers back to their INIT state (APIC ID and base kept). */
void lapic_reset(struct lapic *a);

/*
 * MSR access from the guest: IA32_APIC_BASE, IA32_TSC_DEADLINE and the
 * x2APIC range. Returns 0, or -EINVAL when the guest must get a #GP
 * (x2APIC MSR while not in x2APIC mode, read-only/reserved register,
 * reserved bits, illegal APIC_BASE transition).
 */
int lapic_read_msr(struct lapic *a, uint32_t msr, uint64_t *val);
int lapic_write_msr(struct lapic *a, uint32_t msr, uint64_t val);
/* xAPIC MMIO at @off in the 4 KiB page (ignored in x2APIC mode). */
void lapic_mmio(struct lapic *a, uint64_t off, uint8_t *data, uint32_t len,
		bool is_write);

/* @m was matched to this LAPIC (apic_match): accept it. Kicks. */
void lapic_deliver(struct lapic *a, const struct apic_msg *m);
/* LINT0/LINT1 input pin changed (e.g. the PIC's INTR on LINT0). */
void lapic_set_lint(struct lapic *a, int pin, int level);

/* The vector to inject now (highest IRR above PPR), or -1. */
int lapic_pending_vector(struct lapic *a);
/* INTA: move the highest deliverable IRR bit to ISR; vector or -1. */
int lapic_ack(struct lapic *a);
/* Take (and clear) the pending events; *sipi gets the SIPI vector. */
unsigned int lapic_take_events(struct lapic *a, uint8_t *sipi);
/* True if an interrupt or event would wake a halted vCPU. */
bool lapic_has_wakeup(struct lapic *a, bool interrupts_enabled);

/* The armed deadline passed: raise the timer interrupt, re-arm if
 * periodic. */
void lapic_timer_fire(struct lapic *a);

/* This LAPIC as the destination matcher sees it. */
void lapic_target(struct lapic *a, struct apic_target *t);

#endif
