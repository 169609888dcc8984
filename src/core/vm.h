/*
 * core/vm.h - a KVM virtual machine: its RAM, its io registry, its vCPUs
 * and their threads, and its life cycle (run, pause, resume, stop). It knows
 * nothing of the devices, the cluster or migration: they plug in through
 * the io registry, the irq sink and the lifecycle callback.
 */
#ifndef DVMM_CORE_VM_H
#define DVMM_CORE_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/guest_mem.h"
#include "core/ioreg.h"
#include "core/irq.h"
#include "core/lifecycle.h"
#include "util/err.h"

#define VM_MAX_CPUS 64
#define VM_MAX_MSI_ROUTES 256

struct vm_msi_route {
	bool used;
	uint64_t addr;
	uint32_t data;
};

enum vcpu_exit_kind {
	VCPU_EXIT_IO,
	VCPU_EXIT_MMIO,
	VCPU_EXIT_HLT,
	VCPU_EXIT_INTR, /* KVM_RUN interrupted by a signal / kick */
	VCPU_EXIT_SHUTDOWN,
	VCPU_EXIT_SYSTEM_EVENT,
	VCPU_EXIT_MSR,	      /* userspace MSR (user irqchip) */
	VCPU_EXIT_IRQ_WINDOW, /* interrupt window opened (user irqchip) */
	VCPU_EXIT_OTHER,
	VCPU_EXIT_KINDS
};

extern const char *const vcpu_exit_kind_names[VCPU_EXIT_KINDS];

struct vm;
struct vcpu;

/*
 * The userspace interrupt controller's part in the vCPU loop (VMs without
 * the in-kernel irqchip; see irqchip/userchip.c).
 */
struct vcpu_irq_hooks {
	/*
	 * Before KVM_RUN: take INIT/SIPI/NMI, inject an interrupt or ask for
	 * an interrupt window. False: do not enter the guest now (an AP
	 * waiting for its SIPI); the hook has waited (vcpu_block) and the
	 * loop comes round again.
	 */
	bool (*prepare)(void *opaque, struct vcpu *v);
	/* RDMSR/WRMSR KVM left to userspace: 0, or -EINVAL for a #GP. */
	int (*msr)(void *opaque, struct vcpu *v, bool is_write, uint32_t index,
		   uint64_t *data);
	/* HLT: wait (vcpu_block) until an interrupt would wake the vCPU. */
	void (*halt)(void *opaque, struct vcpu *v);
	void *opaque;
};

struct vcpu {
	struct vm *vm;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	bool local; /* this process runs it (a cluster runs the rest) */
	int64_t tsc_applied; /* with vm->tsc_managed: the offset it has */
	_Atomic uint64_t exits[VCPU_EXIT_KINDS];
	/* vcpu_block / vcpu_kick */
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	bool wake;
	uint64_t throttle_from;	    /* vm_set_throttle: running since (ns) */
	struct kvm_dirty_gfn *ring; /* core/dirty_ring.c, NULL: none */
	uint32_t ring_fetch;
};

enum vm_state { VM_CREATED, VM_RUNNING, VM_PAUSED, VM_STOPPING };

extern const char *const vm_state_names[];

/* What the boot vCPU starts with (32-bit protected mode for PVH). */
struct vm_boot_regs {
	uint32_t entry;
	uint32_t ebx;
};

/*
 * What the boot vCPU starts with in 64-bit long mode (the Linux 64-bit boot
 * protocol): paging on with @cr3, CS 0x10 (64-bit code), DS/ES/SS 0x18,
 * the GDT at @gdt_base, interrupts off, %rsi = @rsi.
 */
struct vm_boot_regs_long {
	uint64_t entry;
	uint64_t rsi;
	uint64_t cr3;
	uint64_t gdt_base;
	uint16_t gdt_limit;
};

struct vm_config {
	const char *kvm_path;
	uint64_t ram_size;
	int ncpus;
	uint8_t *ram;	   /* ram_size bytes the caller keeps; NULL: allocate */
	bool user_irqchip; /* interrupt controllers in dvmm, not KVM */
	bool partial;	   /* a cluster node: runs only local_cpus */
	/* A cluster node other than 0: the guest TSC to join. */
	bool set_tsc_offset;
	int64_t tsc_offset;  /* KVM TSC offset of every vCPU */
	uint64_t local_cpus; /* the vCPUs this process runs (bit per id) */
	uint32_t dirty_ring; /* entries per vCPU; 0: the dirty bitmap */
};

struct vm {
	int kvm_fd;
	int vm_fd;
	int run_size;
	int ncpus;
	struct vcpu *vcpus;
	struct guest_mem mem;
	struct io_registry io;
	struct irq_sink irq;	  /* KVM_IRQ_LINE / KVM_SIGNAL_MSI */
	struct vm_lifecycle lc;	  /* handed to devices */
	struct kvm_cpuid2 *cpuid; /* supported CPUID, patched per vCPU */
	bool user_irqchip;
	/*
	 * Nice value of the vCPU threads (0: unchanged). A cluster node
	 * lowers them so that the threads that move pages and messages
	 * between the nodes get a core at once when a spinning vCPU has it.
	 */
	int vcpu_nice;
	/*
	 * The TSC offset the vCPUs should have (vm_tsc_slew); each vCPU
	 * thread applies it before entering the guest.
	 */
	_Atomic int64_t tsc_target;
	_Atomic bool tsc_managed;
	struct vcpu_irq_hooks uchip; /* set before vm_start if user_irqchip */
	struct dirty_rings *rings;   /* core/dirty_ring.c; NULL: bitmap */

	pthread_mutex_t lock;
	pthread_cond_t cond; /* state changes, parked vCPUs */
	_Atomic int state;   /* enum vm_state */
	int parked;	     /* vCPUs parked while paused */
	int running_threads; /* vCPU threads not yet finished */
	enum vm_stop_reason stop_reason;
	int stop_code;
	struct timespec started;
	_Atomic uint64_t paused_ns; /* total time spent paused */
	struct timespec pause_began;

	/* vm_set_throttle: the share of time vCPUs sleep, and the ticker */
	_Atomic int throttle_pct;
	pthread_t throttle_thread;
	bool throttle_thread_up;

	/* core/vm_io.c: MSI routes and extra memory slots */
	pthread_mutex_t route_lock;
	struct vm_msi_route msi_routes[VM_MAX_MSI_ROUTES];
	uint64_t extra_slots; /* bitmap of slots in use */
};

/* Create the VM: KVM fd, RAM, irqchip, PIT, vCPUs with CPUID and MSRs. */
int vm_create(struct vm *vm, const struct vm_config *cfg, struct err *e);
void vm_destroy(struct vm *vm);

/* Point the boot vCPU at a PVH entry (32-bit protected mode, paging off). */
int vm_set_boot_regs(struct vm *vm, const struct vm_boot_regs *b,
		     struct err *e);

/* Point the boot vCPU at a 64-bit entry (long mode, paging on). */
int vm_set_boot_regs_long(struct vm *vm, const struct vm_boot_regs_long *b,
			  struct err *e);

/* Start every vCPU thread. */
int vm_start(struct vm *vm, struct err *e);
/* Wait until the VM stops; returns the reason and sets *code. */
enum vm_stop_reason vm_wait(struct vm *vm, int *code);

/* Control: 0 or -EALREADY / -EINVAL (not running) / -ETIMEDOUT. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
void vm_stop(struct vm *vm, enum vm_stop_reason reason, int code);

enum vm_state vm_get_state(struct vm *vm);
/* Seconds since vm_start, and the running (not paused) part of it. */
double vm_uptime(struct vm *vm);
uint64_t vm_exit_count(struct vm *vm, int cpu, enum vcpu_exit_kind kind);

/*
 * Slow the guest down: every vCPU sleeps @pct percent (0-99) of the time,
 * in slices of a few ms (a ticker thread kicks them out of the guest); 0
 * lifts it. For a migration whose guest dirties memory faster than the
 * link (auto-converge). 0, or a negative errno.
 */
int vm_set_throttle(struct vm *vm, int pct);

/* (Re)register RAM region @region as KVM memslot @region with @flags. */
int vm_set_ram_slot(struct vm *vm, int region, uint32_t flags);
/* The KVM TSC offset of vCPU @cpu (guest TSC = host TSC + offset). */
int vm_get_tsc_offset(struct vm *vm, int cpu, int64_t *offset);
/*
 * Move every local vCPU's TSC offset to @offset: each vCPU thread applies
 * it before it next enters the guest (kicked now). The caller slews.
 */
void vm_tsc_slew(struct vm *vm, int64_t offset);
/* KVM_GET_CLOCK (kvmclock, with the realtime stamp where offered). */
int vm_get_clock(struct vm *vm, struct kvm_clock_data *out);

/* Signal used to kick vCPU threads out of KVM_RUN. */
#define VCPU_KICK_SIGNAL SIGUSR1

#endif
