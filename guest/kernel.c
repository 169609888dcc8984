/*
 * kernel.c - the test guest's kernel proper: per-CPU setup (GDT/TSS/IDT,
 * syscall MSRs, x2APIC, kvmclock), the syscalls user code uses for what it
 * cannot do itself (port I/O, MSRs, TLB flushes), interrupt counting and
 * the exception handler. Everything else (ACPI, AP startup, PCI, the
 * virtio drivers, the tests) runs in user mode: on the CI machines kernel
 * mode is emulated at ~1 us per instruction, user mode runs natively.
 */
#include "guest.h"

/* ---- state ---- */

struct percpu percpu[MAX_CPUS];
struct pvclock pvclock[MAX_CPUS] __attribute__((aligned(64)));
u8 kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(16)));
static u8 ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));

u64 boot_start_info;
volatile u64 ap_boot_cpu;
volatile u64 ap_boot_stack;
const char *volatile current_test;
volatile u32 print_lock;
bool have_kvmclock;

struct tss {
	u32 reserved0;
	u64 rsp[3];
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __attribute__((packed));

static struct tss tss[MAX_CPUS] __attribute__((aligned(16)));
static u64 idt[256][2] __attribute__((aligned(16)));
static struct {
	u16 limit;
	u64 base;
} __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)idt };

_Static_assert(__builtin_offsetof(struct percpu, kstack) == PCPU_KSTACK, "");
_Static_assert(__builtin_offsetof(struct percpu, user_rsp) == PCPU_USER_RSP, "");
_Static_assert(__builtin_offsetof(struct percpu, timer_ticks) == PCPU_TIMER, "");
_Static_assert(__builtin_offsetof(struct percpu, wakeups) == PCPU_WAKE, "");
_Static_assert(__builtin_offsetof(struct percpu, spurious) == PCPU_SPURIOUS, "");
_Static_assert(__builtin_offsetof(struct percpu, ipi_from) == PCPU_IPI, "");
_Static_assert(__builtin_offsetof(struct percpu, msi) == PCPU_MSI, "");
_Static_assert(sizeof(struct tss) == 104, "");
_Static_assert(sizeof(struct pvclock) == 32, "");

/* boot.S */
extern char syscall_entry[], int3_entry[], timer_isr[], wake_isr[], spurious_isr[];
extern char ipi_stubs[], msi_stubs[], exc_stubs[];
void enter_user(void (*entry)(u64), u64 stack, u64 arg)
	__attribute__((noreturn));
void halt_forever(void) __attribute__((noreturn));

/* ---- privileged instructions ---- */

static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;

	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return lo | (u64)hi << 32;
}

static inline void wrmsr(u32 msr, u64 v)
{
	asm volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32))
		     : "memory");
}

static inline u8 inb(u16 port)
{
	u8 v;

	asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outb(u16 port, u8 v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void cpuid(u32 leaf, u32 sub, u32 r[4])
{
	asm volatile("cpuid"
		     : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
		     : "a"(leaf), "c"(sub));
}

/* ---- serial output (kernel side) ---- */

static void kwrite(const char *s, u64 len)
{
	for (u64 i = 0; i < len; i++) {
		while (!(inb(PORT_COM1 + 5) & 0x20))
			;
		outb(PORT_COM1, s[i]);
	}
}

static void kputs(const char *s)
{
	u64 n = 0;

	while (s[n])
		n++;
	kwrite(s, n);
}

static void kputnum(u64 v, int base)
{
	char buf[24];
	int i = sizeof(buf);

	do {
		buf[--i] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (base == 16) {
		buf[--i] = 'x';
		buf[--i] = '0';
	}
	kwrite(buf + i, sizeof(buf) - i);
}

static void serial_init(void)
{
	static const u8 init[][2] = {
		{ 1, 0x00 },	/* IER: no interrupts */
		{ 3, 0x80 },	/* LCR: DLAB */
		{ 0, 0x01 },	/* DLL: 115200 baud */
		{ 1, 0x00 },	/* DLM */
		{ 3, 0x03 },	/* LCR: 8N1 */
		{ 2, 0xc7 },	/* FCR: FIFO on, cleared, 14-byte trigger */
		{ 4, 0x03 },	/* MCR: DTR | RTS */
	};

	for (u64 i = 0; i < ARRAY_SIZE(init); i++)
		outb(PORT_COM1 + init[i][0], init[i][1]);
}

static void __attribute__((noreturn)) debug_exit(u32 code)
{
	asm volatile("outl %0, %1" : : "a"(code), "Nd"((u16)PORT_DEBUG_EXIT));
	halt_forever();
}

/* ---- syscalls ---- */

static long sys_write(long buf, long len, long c, long d)
{
	(void)c, (void)d;
	kwrite((const char *)buf, len);
	return len;
}

static long sys_exit(long code, long b, long c, long d)
{
	(void)b, (void)c, (void)d;
	debug_exit(code);
}

static long sys_rdmsr(long msr, long b, long c, long d)
{
	(void)b, (void)c, (void)d;
	return rdmsr(msr);
}

static long sys_wrmsr(long msr, long v, long c, long d)
{
	(void)c, (void)d;
	wrmsr(msr, v);
	return 0;
}

static long sys_in(long port, long width, long c, long d)
{
	u32 v;

	(void)c, (void)d;
	if (width == 1)
		asm volatile("inb %w1, %b0" : "=a"(v) : "d"(port));
	else if (width == 2)
		asm volatile("inw %w1, %w0" : "=a"(v) : "d"(port));
	else
		asm volatile("inl %w1, %0" : "=a"(v) : "d"(port));
	return v & (width == 1 ? 0xff : width == 2 ? 0xffff : 0xffffffff);
}

static long sys_out(long port, long width, long v, long d)
{
	(void)d;
	if (width == 1)
		asm volatile("outb %b0, %w1" : : "a"(v), "d"(port));
	else if (width == 2)
		asm volatile("outw %w0, %w1" : : "a"(v), "d"(port));
	else
		asm volatile("outl %0, %w1" : : "a"((u32)v), "d"(port));
	return 0;
}

/*
 * Halt until the next interrupt unless *addr has changed from old. The
 * check runs with interrupts off and sti;hlt is atomic, so a wake-up IPI
 * sent after the change cannot be lost. tmict != 0 arms the one-shot
 * LAPIC timer as a backstop.
 */
static long sys_wait(long addr, long old, long tmict, long d)
{
	(void)d;
	if (*(volatile u64 *)addr != (u64)old)
		return 1;
	if (tmict)
		wrmsr(X2APIC_TMICT, tmict);
	asm volatile("sti; hlt; cli" : : : "memory");
	return 0;
}

static long sys_cpuid(long leaf, long sub, long out, long d)
{
	(void)d;
	cpuid(leaf, sub, (u32 *)out);
	return 0;
}

static long sys_rdtsc(long a, long b, long c, long d)
{
	u32 lo, hi;

	(void)a, (void)b, (void)c, (void)d;
	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | (u64)hi << 32;
}

static long sys_echo(long a, long b, long c, long d)
{
	return a + b + c + d;
}

/*
 * User mode edits the page tables itself (they are user-writable memory);
 * changing an entry that may be cached (e.g. making MMIO uncached) needs
 * a TLB flush, which only CPL0 can do. This CPU only.
 */
static long sys_flush_tlb(long a, long b, long c, long d)
{
	u64 cr3;

	(void)a, (void)b, (void)c, (void)d;
	asm volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
	return 0;
}

long (*const syscall_table[NR_SYSCALLS])(long, long, long, long) = {
	[SYS_WRITE] = sys_write,
	[SYS_EXIT] = sys_exit,
	[SYS_RDMSR] = sys_rdmsr,
	[SYS_WRMSR] = sys_wrmsr,
	[SYS_IN] = sys_in,
	[SYS_OUT] = sys_out,
	[SYS_WAIT] = sys_wait,
	[SYS_CPUID] = sys_cpuid,
	[SYS_RDTSC] = sys_rdtsc,
	[SYS_ECHO] = sys_echo,
	[SYS_FLUSH_TLB] = sys_flush_tlb,
};

/* ---- exceptions ---- */

struct trap_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error;
	u64 rip, cs, rflags, rsp, ss;
};

void trap(struct trap_frame *f) __attribute__((noreturn));
void trap(struct trap_frame *f)
{
	const char *test = current_test ? current_test : "init";
	u64 cr2;

	asm volatile("mov %%cr2, %0" : "=r"(cr2));
	/* Take the print lock if we can; a stuck holder must not hide this. */
	for (int i = 0; i < 10000; i++)
		if (!__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
			break;
	kputs("FAIL ");
	kputs(test);
	kputs(": exception ");
	kputnum(f->vector, 10);
	kputs(" at ");
	kputnum(f->rip, 16);
	kputs("\nINFO exception: cpu=");
	kputnum(rdmsr(MSR_GS_BASE) ? ((struct percpu *)rdmsr(MSR_GS_BASE))->cpu
				   : 0, 10);
	kputs(" error=");
	kputnum(f->error, 16);
	kputs(" cr2=");
	kputnum(cr2, 16);
	kputs(" cs=");
	kputnum(f->cs, 16);
	kputs(" rsp=");
	kputnum(f->rsp, 16);
	kputs("\n");
	debug_exit(3);
}

/* ---- per-CPU setup ---- */

static void set_gate(int vec, const void *handler, int dpl)
{
	u64 a = (u64)handler;

	idt[vec][0] = (a & 0xffff) | (u64)SEL_KCODE << 16 |
		      (0x8eULL | dpl << 5) << 40 |
		      (a >> 16 & 0xffff) << 48;
	idt[vec][1] = a >> 32;
}

static void idt_init(void)
{
	for (int v = 0; v < 32; v++)
		set_gate(v, exc_stubs + 16 * v, 0);
	set_gate(3, int3_entry, 3);	/* PVM syscall path, see boot.S */
	for (int n = 0; n < MAX_CPUS; n++)
		set_gate(VEC_IPI_BASE + n, ipi_stubs + 16 * n, 0);
	for (int n = 0; n < NR_MSI_VECTORS; n++)
		set_gate(VEC_MSI_BASE + n, msi_stubs + 16 * n, 0);
	set_gate(VEC_TIMER, timer_isr, 0);
	set_gate(VEC_WAKE, wake_isr, 0);
	set_gate(VEC_SPURIOUS, spurious_isr, 0);
}

static void cpu_init(u64 cpu)
{
	struct percpu *p = &percpu[cpu];
	u64 t = (u64)&tss[cpu];

	p->self = p;
	p->cpu = cpu;
	p->kstack = (u64)kstacks[cpu] + KSTACK_SIZE;
	wrmsr(MSR_GS_BASE, (u64)p);

	tss[cpu].rsp[0] = p->kstack;
	tss[cpu].iomap_base = sizeof(struct tss);
	gdt[5 + 2 * cpu] = (sizeof(struct tss) - 1) | (t & 0xffffff) << 16 |
			   0x89ULL << 40 | (t >> 24 & 0xff) << 56;
	gdt[6 + 2 * cpu] = t >> 32;
	asm volatile("ltr %w0" : : "r"(SEL_TSS0 + 16 * cpu));
	asm volatile("lidt %0" : : "m"(idtr));

	wrmsr(MSR_STAR, 0x0013000800000000ULL);
	wrmsr(MSR_LSTAR, (u64)syscall_entry);
	wrmsr(MSR_SFMASK, 0x47700);	/* IF, TF, DF, IOPL, NT, AC */

	wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | 0xc00);	/* x2APIC */
	wrmsr(X2APIC_SVR, 0x100 | VEC_SPURIOUS);
	wrmsr(X2APIC_TPR, 0);
	wrmsr(X2APIC_TDCR, 0xb);		/* divide by 1 */
	wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);	/* one-shot */
	wrmsr(X2APIC_LVT_LINT0, LVT_MASKED);	/* no 8259 ExtINT */
	p->apic_id = rdmsr(X2APIC_ID);
	if (have_kvmclock)
		wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (u64)&pvclock[cpu] | 1);
	p->online = 1;
}

void kernel_main(void);
void kernel_main(void)
{
	u32 r[4];

	serial_init();
	outb(0x21, 0xff);	/* mask both 8259s: firmware left IRQ0 at vector 8 */
	outb(0xa1, 0xff);
	cpuid(1, 0, r);
	if (!(r[2] & (1 << 21))) {
		kputs("FAIL init: no x2APIC (use -cpu ...,+x2apic)\n");
		debug_exit(2);
	}
	cpuid(0x40000000, 0, r);
	if (r[1] == 0x4b4d564b && r[2] == 0x564b4d56 && r[3] == 0x4d) {
		cpuid(0x40000001, 0, r);
		have_kvmclock = r[0] & (1 << 3);
	}
	idt_init();
	cpu_init(0);
	enter_user(user_main, (u64)ustacks[0] + USTACK_SIZE - 8, 0);
}

void ap_main(void);
void ap_main(void)
{
	u64 cpu = ap_boot_cpu;

	cpu_init(cpu);
	enter_user(user_ap_main, (u64)ustacks[cpu] + USTACK_SIZE - 8, cpu);
}
