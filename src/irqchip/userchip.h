/*
 * irqchip/userchip.h - the interrupt controllers of a VM that runs without
 * KVM's in-kernel irqchip (--irqchip user, and every multi-node VM): a
 * LAPIC per local vCPU, and on the node that has them the IOAPIC, the PICs
 * and the PIT; the APIC bus between them; the vCPU-loop hooks (INIT/SIPI,
 * NMI, interrupt injection with KVM_INTERRUPT and interrupt windows, HLT,
 * the x2APIC MSRs); host timers for the LAPIC timers and the PIT. Messages
 * for vCPUs of other nodes, and line changes and EOIs for an IOAPIC on
 * another node, go out through struct userchip_remote.
 */
#ifndef DVMM_IRQCHIP_USERCHIP_H
#define DVMM_IRQCHIP_USERCHIP_H

#include <jansson.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"
#include "irqchip/ioapic.h"
#include "irqchip/lapic.h"
#include "irqchip/pic.h"
#include "irqchip/pit.h"
#include "util/err.h"

#define USERCHIP_BUS_HZ 1000000000ULL /* LAPIC timer clock, as KVM's */

/* How a node reaches the rest of the cluster (all NULL on one node). */
struct userchip_remote {
	/* Deliver @m to vCPU @vcpu, which runs on another node. */
	void (*deliver)(void *opaque, int vcpu, const struct apic_msg *m);
	/* A level-triggered @vector was EOI'd; the IOAPIC is elsewhere. */
	void (*eoi)(void *opaque, uint8_t vector);
	/* A device here drives @gsi; the IOAPIC is elsewhere. */
	void (*set_line)(void *opaque, uint32_t gsi, int level);
	/* A local LAPIC's addressing changed (ID, LDR, DFR, mode). */
	void (*target_changed)(void *opaque, const struct apic_target *t);
	void *opaque;
};

struct userchip;

struct userchip_cpu {
	struct userchip *uc; /* the LAPIC callbacks' context */
	int id;
	bool lapic_up;
	struct kvm_regs reset_regs; /* the vCPU as created: INIT state */
	struct kvm_sregs reset_sregs;
	bool wait_sipi;
	bool extint; /* the PIC has an interrupt for this vCPU */
	uint64_t injected, nmis, inits, sipis;
	/* host-side lateness of the LAPIC timer (timer thread) */
	_Atomic uint64_t armed_ns;
	uint64_t late_count, late_sum_ns, late_max_ns;
};

struct userchip {
	struct vm *vm;
	bool has_ioapic; /* IOAPIC, PIC and PIT are here */
	struct ioapic ioapic;
	struct pic pic;
	struct pit pit;
	bool ioapic_up, pic_up, pit_up, lapic_mmio_up;
	struct lapic lapic[VM_MAX_CPUS]; /* the local vCPUs' */
	struct userchip_cpu cpu[VM_MAX_CPUS];
	pthread_rwlock_t target_lock;
	struct apic_target target[VM_MAX_CPUS]; /* every vCPU's */
	struct userchip_remote remote;

	/* guest TSC <-> CLOCK_MONOTONIC, for the TSC-deadline timer */
	uint64_t tsc_khz, tsc0, ns0;

	/* the timer thread: a timerfd per local LAPIC, one for the PIT */
	int epfd, stop_fd;
	int lapic_tfd[VM_MAX_CPUS];
	int pit_tfd;
	pthread_t timer_thread;
	bool timer_started;
};

/*
 * Build the controllers for @vm (created with user_irqchip): LAPICs of the
 * local vCPUs (MMIO page, MSRs), and with @with_ioapic the IOAPIC, PICs and
 * PIT; install vm->irq and vm->uchip; start the timer thread. @remote may
 * be NULL on a single node. Call before the devices are created.
 */
int userchip_create(struct userchip *uc, struct vm *vm, bool with_ioapic,
		    const struct userchip_remote *remote, struct err *e);
void userchip_destroy(struct userchip *uc);

/* From another node: deliver @m to local vCPU @vcpu. */
void userchip_deliver(struct userchip *uc, int vcpu, const struct apic_msg *m);
/* From another node: an EOI for the IOAPIC here. */
void userchip_eoi(struct userchip *uc, uint8_t vector);
/* From another node: a device there drives @gsi. */
void userchip_set_line(struct userchip *uc, uint32_t gsi, int level);
/* From another node: one of its vCPUs' LAPIC addressing. */
void userchip_update_target(struct userchip *uc, const struct apic_target *t);
/* Put @m on the bus (as an MSI or IOAPIC message would be). */
void userchip_route(struct userchip *uc, const struct apic_msg *m);

/* Counters for ctl stats: per local vCPU injections, timer, NMIs... */
json_t *userchip_stats_json(struct userchip *uc);

#endif
