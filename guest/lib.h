/*
 * lib.h - the user-mode runtime of the test guest: syscall wrappers, port
 * I/O, string and formatting helpers, serial output, kvmclock time, and
 * waiting without spinning. Everything here runs at CPL3 (natively on the
 * CI machines); only the syscalls enter the emulated kernel.
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include "guest.h"

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_end(ap) __builtin_va_end(ap)
#define va_arg(ap, type) __builtin_va_arg(ap, type)

#define NSEC_PER_SEC 1000000000UL
#define NSEC_PER_MSEC 1000000UL
#define NSEC_PER_USEC 1000UL

/* ---- syscalls ---- */

static inline long syscall4(long n, long a, long b, long c, long d)
{
	register long r10 asm("r10") = d;

	asm volatile("syscall"
		     : "+a"(n), "+D"(a), "+S"(b), "+d"(c), "+r"(r10)
		     :
		     : "rcx", "r8", "r9", "r11", "memory");
	return n;
}

static inline u64 sys_rdmsr(u32 msr)
{
	return syscall4(SYS_RDMSR, msr, 0, 0, 0);
}

static inline void sys_wrmsr(u32 msr, u64 v)
{
	syscall4(SYS_WRMSR, msr, v, 0, 0);
}

static inline void sys_cpuid(u32 leaf, u32 sub, u32 r[4])
{
	syscall4(SYS_CPUID, leaf, sub, (long)r, 0);
}

static inline u64 sys_rdtsc(void)
{
	return syscall4(SYS_RDTSC, 0, 0, 0, 0);
}

void __attribute__((noreturn)) sys_exit(u32 code);

/* ---- CPU ---- */

static inline struct percpu *this_cpu(void)
{
	struct percpu *p;

	asm volatile("mov %%gs:0, %0" : "=r"(p));
	return p;
}

static inline u64 cpu_id(void)
{
	return this_cpu()->cpu;
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;

	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | (u64)hi << 32;
}

static inline void cpu_relax(void)
{
	asm volatile("pause" ::: "memory");
}

#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

/* ---- port I/O, through the kernel ---- */

u32 port_in(u16 port, int width);
void port_out(u16 port, int width, u32 v);
static inline u8 inb(u16 port) { return port_in(port, 1); }
static inline void outb(u16 port, u8 v) { port_out(port, 1, v); }

/* ---- strings and formatting ---- */

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Parse an unsigned number (0x hex or decimal); returns chars used. */
int parse_u64(const char *s, u64 *v);

/* ---- output: one call prints whole lines atomically ---- */

void console_write(const char *s, size_t len);
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- time ---- */

extern u64 lapic_hz;		/* LAPIC timer counts per second */
extern s64 tsc_offset[MAX_CPUS];	/* kernel rdtsc - user rdtsc */
u64 clock_ns(void);		/* kvmclock, this CPU */
u64 tsc_khz(void);		/* from this CPU's pvclock parameters */
void clock_init(void);		/* per CPU, before clock_ns() */

/* ---- waiting ---- */

/* Halt until *p != old, a wake-up IPI or another interrupt, or max_ns. */
void wait_change(volatile u64 *p, u64 old, u64 max_ns);
/* Wait until *p >= target; false on timeout. Halts, does not spin. */
bool wait_ge(volatile u64 *p, u64 target, u64 timeout_ns);
/* Sleep for ns (halting). */
void sleep_ns(u64 ns);
/* Set while this CPU's LAPIC timer runs periodically: no backstop then. */
extern bool timer_busy[MAX_CPUS];

/* ---- x2APIC ---- */

void send_ipi(u32 apic_id, u32 vector);

static inline void spin_lock(volatile u32 *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		while (*l)
			cpu_relax();
}

static inline void spin_unlock(volatile u32 *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

#endif
