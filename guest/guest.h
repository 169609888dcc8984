/*
 * guest.h - definitions shared by the test guest's kernel (boot.S,
 * kernel.c) and its user-mode side: limits, GDT selectors, interrupt
 * vectors, syscall numbers, MSRs, the per-CPU block and the PVH structs.
 * Included from assembly too, so C-only parts sit under !__ASSEMBLER__.
 */
#ifndef GUEST_H
#define GUEST_H

#define MAX_CPUS	64		/* IPI vectors are VEC_IPI_BASE + cpu */
#define KSTACK_SIZE	8192		/* kernel work is tiny */
#define USTACK_SIZE	32768

/* GDT: null, kernel code/data, user data/code (sysret order), TSSes. */
#define SEL_KCODE	0x08
#define SEL_KDATA	0x10
#define SEL_UDATA	0x1b
#define SEL_UCODE	0x23
#define SEL_TSS0	0x28		/* + 16 * cpu */
#define GDT_ENTRIES	(5 + 2 * MAX_CPUS)

/*
 * RFLAGS for user mode: IF=1, IOPL=0. (IOPL=3 would not help on the CI
 * machines: PVM raises #GP for user-mode in/out regardless.)
 */
#define USER_RFLAGS	0x0202

/* Interrupt vectors. */
#define VEC_TIMER	0x30		/* LAPIC timer */
#define VEC_WAKE	0x31		/* IPI that only wakes a halted CPU */
#define VEC_IPI_BASE	0x40		/* fixed IPI from cpu N: 0x40 + N */
#define VEC_MSI_BASE	0x80		/* device MSI-X: 0x80 + n counts msi[n] */
#define NR_MSI_VECTORS	96		/* 0x80-0xdf */
#define VEC_SPURIOUS	0xff

/* Syscalls: number in rax, arguments in rdi, rsi, rdx, r10. */
#define SYS_WRITE	0	/* (buf, len): to the serial port */
#define SYS_EXIT	1	/* (code): debug-exit port, never returns */
#define SYS_RDMSR	2	/* (msr) -> value */
#define SYS_WRMSR	3	/* (msr, value) */
#define SYS_IN		4	/* (port, width 1/2/4) -> value */
#define SYS_OUT		5	/* (port, width, value) */
#define SYS_WAIT	6	/* (addr, old, tmict): halt if *addr == old */
#define SYS_CPUID	7	/* (leaf, subleaf, u32 out[4]) */
#define SYS_RDTSC	8	/* () -> TSC as read in kernel mode */
#define SYS_ECHO	9	/* (a, b, c, d) -> a + b + c + d, for tests */
#define SYS_FLUSH_TLB	10	/* (): reload CR3 after page table edits */
#define NR_SYSCALLS	11

/* MSRs. */
#define MSR_APIC_BASE	0x1b
#define MSR_EFER	0xc0000080
#define MSR_STAR	0xc0000081
#define MSR_LSTAR	0xc0000082
#define MSR_SFMASK	0xc0000084
#define MSR_GS_BASE	0xc0000101
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define X2APIC_ID	0x802
#define X2APIC_TPR	0x808
#define X2APIC_EOI	0x80b
#define X2APIC_SVR	0x80f
#define X2APIC_ICR	0x830
#define X2APIC_LVT_TIMER 0x832
#define X2APIC_LVT_LINT0 0x835
#define X2APIC_TMICT	0x838
#define X2APIC_TMCCT	0x839
#define X2APIC_TDCR	0x83e

#define LVT_MASKED	(1 << 16)
#define LVT_PERIODIC	(1 << 17)
#define ICR_INIT	0x4500
#define ICR_SIPI	0x4600
#define ICR_FIXED	0x4000		/* fixed, assert */
#define ICR_ALL_BUT_SELF (3 << 18)

/* Ports. */
#define PORT_COM1	0x3f8
#define PORT_DEBUG_EXIT	0xf4

/* struct percpu offsets, for boot.S (checked in kernel.c). */
#define PCPU_SELF	0
#define PCPU_CPU	8
#define PCPU_KSTACK	16
#define PCPU_USER_RSP	24
#define PCPU_TIMER	32
#define PCPU_WAKE	40
#define PCPU_SPURIOUS	48
#define PCPU_IPI	64
#define PCPU_MSI	(PCPU_IPI + 8 * MAX_CPUS)

#ifndef __ASSEMBLER__

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed char s8;
typedef int s32;
typedef long s64;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* One per CPU; IA32_GS_BASE points at it in kernel and user mode alike. */
struct percpu {
	struct percpu *self;
	u64 cpu;
	u64 kstack;		/* top of this CPU's kernel stack */
	u64 user_rsp;		/* saved by the syscall entry */
	volatile u64 timer_ticks;
	volatile u64 wakeups;
	volatile u64 spurious;
	volatile u64 online;
	volatile u64 ipi_from[MAX_CPUS];
	volatile u64 msi[NR_MSI_VECTORS];	/* MSI-X interrupts by vector */
	u32 apic_id;
} __attribute__((aligned(4096))); /* a page each: no false sharing when a
				     distributed memory moves pages */

/* KVM's pvclock time info (MSR_KVM_SYSTEM_TIME_NEW). */
struct pvclock {
	volatile u32 version;
	u32 pad0;
	volatile u64 tsc_timestamp;
	volatile u64 system_time;
	volatile u32 tsc_to_system_mul;
	volatile s8 tsc_shift;
	volatile u8 flags;
	u8 pad[2];
} __attribute__((aligned(32)));

/* PVH start info (Xen's arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
} __attribute__((packed));

struct hvm_modlist_entry {
	u64 paddr;
	u64 size;
	u64 cmdline_paddr;
	u64 reserved;
} __attribute__((packed));

struct hvm_memmap_entry {
	u64 addr;
	u64 size;
	u32 type;
	u32 reserved;
} __attribute__((packed));

#define E820_RAM 1

/* Kernel state the user side reads or fills in (kernel.c, boot.S). */
extern struct percpu percpu[MAX_CPUS];
extern struct pvclock pvclock[MAX_CPUS];
extern u8 kstacks[MAX_CPUS][KSTACK_SIZE];
extern u64 boot_start_info;		/* paddr of hvm_start_info */
extern volatile u64 ap_boot_cpu;	/* AP being started */
extern volatile u64 ap_boot_stack;	/* its kernel stack */
extern const char *volatile current_test; /* for exception reports */
extern volatile u32 print_lock;		/* serial output, kernel and user */
extern bool have_kvmclock;
extern u64 gdt[GDT_ENTRIES];
extern u64 pml4[512], pdpt_low[512];
extern u8 _image_start[], _image_end[];
extern u8 trampoline_start[], trampoline_end[];
extern u8 tr_gdtr[], tr_cr3[], tr_entry[];
extern char ap_entry64[];

void user_main(u64 cpu);		/* main.c: BSP user code */
void user_ap_main(u64 cpu);		/* main.c: AP user code */

#endif /* __ASSEMBLER__ */
#endif /* GUEST_H */
