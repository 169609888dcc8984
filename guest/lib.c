/*
 * lib.c - the user-mode runtime of the test guest (see lib.h): port I/O,
 * string/format helpers, serial output, kvmclock time and waiting.
 */
#include "lib.h"

u64 lapic_hz = 1000000000;	/* KVM's LAPIC bus; calibrated by timer/timerlat */
bool timer_busy[MAX_CPUS];

void sys_exit(u32 code)
{
	syscall4(SYS_EXIT, code, 0, 0, 0);
	for (;;)
		;
}

/* ---- port I/O: user mode cannot (PVM raises #GP even with IOPL=3) ---- */

u32 port_in(u16 port, int width)
{
	return syscall4(SYS_IN, port, width, 0, 0);
}

void port_out(u16 port, int width, u32 v)
{
	syscall4(SYS_OUT, port, width, v, 0);
}

/* ---- strings ---- */

void *memset(void *d, int c, size_t n)
{
	u8 *p = d;

	while (n--)
		*p++ = c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;

	if (p < q)
		return memcpy(d, s, n);
	while (n--)
		p[n] = q[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (u8)*a - (u8)*b;
		if (!*a)
			break;
	}
	return 0;
}

int strcmp(const char *a, const char *b)
{
	return strncmp(a, b, (size_t)-1);
}

int parse_u64(const char *s, u64 *v)
{
	const char *p = s;
	u64 base = 10, n = 0;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (;; p++) {
		int d;

		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = *p - 'A' + 10;
		else
			break;
		n = n * base + d;
	}
	*v = n;
	return (base == 16 && p == s + 2) ? 0 : p - s;
}

/* ---- formatting: %s %c %d %u %x %p with l/ll, width and 0 flag ---- */

struct outbuf {
	char *buf;
	size_t size, len;
};

static void put(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void put_num(struct outbuf *o, u64 v, int base, bool neg, int width,
		    char pad)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	while (width-- > n)
		put(o, pad);
	while (n)
		put(o, tmp[--n]);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };

	for (; *fmt; fmt++) {
		int width = 0, lng = 0;
		char pad = ' ';

		if (*fmt != '%') {
			put(&o, *fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0')
			pad = '0';
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + *fmt++ - '0';
		while (*fmt == 'l')
			lng++, fmt++;
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			int n = strlen(s ? s : "(null)");

			while (width-- > n)
				put(&o, ' ');
			for (s = s ? s : "(null)"; *s; s++)
				put(&o, *s);
			break;
		}
		case 'c':
			put(&o, va_arg(ap, int));
			break;
		case 'd': {
			s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);

			put_num(&o, v < 0 ? -(u64)v : (u64)v, 10, v < 0, width,
				pad);
			break;
		}
		case 'u':
			put_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 10,
				false, width, pad);
			break;
		case 'x':
			put_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 16,
				false, width, pad);
			break;
		case 'p':
			put(&o, '0');
			put(&o, 'x');
			put_num(&o, (u64)va_arg(ap, void *), 16, false, width,
				pad);
			break;
		case '%':
			put(&o, '%');
			break;
		default:
			put(&o, '%');
			put(&o, *fmt);
			if (!*fmt)
				fmt--;
			break;
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

/* ---- serial output ---- */

void console_write(const char *s, size_t len)
{
	spin_lock(&print_lock);
	syscall4(SYS_WRITE, (long)s, len, 0, 0);
	spin_unlock(&print_lock);
}

void printf(const char *fmt, ...)
{
	char buf[1280];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(buf))
		n = sizeof(buf) - 1;
	console_write(buf, n);
}

/* ---- time ---- */

/*
 * kvmclock. pvclock's tsc_timestamp is in guest TSC units, i.e. what
 * rdtsc returns in kernel mode. User-mode rdtsc runs natively under PVM
 * and returns the host's TSC; on the CI machines the two are the same
 * clock (PVM applies no TSC offset), on VT-x/AMD-V the CPU applies the
 * offset in user mode too. clock_init() checks this on every CPU: if a
 * kernel rdtsc falls between two user ones, the offset is 0; otherwise it
 * is estimated from the tightest bracket (good to the syscall's length,
 * tens of microseconds) and reported by main.c.
 */
s64 tsc_offset[MAX_CPUS];

static u64 guest_tsc(void)
{
	return rdtsc() + tsc_offset[cpu_id()];
}

void clock_init(void)
{
	u64 best = ~0ULL;
	s64 off = 0;

	for (int i = 0; i < 8; i++) {
		u64 u0 = rdtsc();
		u64 k = sys_rdtsc();
		u64 u1 = rdtsc();

		if (u0 <= k && k <= u1) {
			off = 0;
			break;
		}
		if (u1 - u0 < best) {
			best = u1 - u0;
			off = k - (u0 + (u1 - u0) / 2);
		}
	}
	tsc_offset[cpu_id()] = off;
}

u64 clock_ns(void)
{
	struct pvclock *pv = &pvclock[cpu_id()];
	u32 version;
	u64 ns;

	do {
		version = pv->version;
		barrier();
		u64 delta = guest_tsc() - pv->tsc_timestamp;
		s8 shift = pv->tsc_shift;

		if (shift >= 0)
			delta <<= shift;
		else
			delta >>= -shift;
		ns = pv->system_time +
		     (u64)(((unsigned __int128)delta * pv->tsc_to_system_mul) >>
			   32);
		barrier();
	} while ((version & 1) || version != pv->version);
	return ns;
}

u64 tsc_khz(void)
{
	struct pvclock *pv = &pvclock[cpu_id()];
	u64 khz = (1000000ULL << 32) / pv->tsc_to_system_mul;

	return pv->tsc_shift < 0 ? khz << -pv->tsc_shift
				 : khz >> pv->tsc_shift;
}

/* ---- waiting ---- */

void wait_change(volatile u64 *p, u64 old, u64 max_ns)
{
	u64 tmict = 0;

	if (!timer_busy[cpu_id()]) {
		if (max_ns > 4 * NSEC_PER_SEC)
			max_ns = 4 * NSEC_PER_SEC;
		tmict = max_ns * (lapic_hz / 1000) / 1000000;
		if (tmict > 0xffffffff)
			tmict = 0xffffffff;
		if (!tmict)
			tmict = 1;
	}
	syscall4(SYS_WAIT, (long)p, old, tmict, 0);
}

bool wait_ge(volatile u64 *p, u64 target, u64 timeout_ns)
{
	u64 deadline = clock_ns() + timeout_ns;

	for (;;) {
		u64 v = *p;

		if (v >= target)
			return true;
		if (clock_ns() >= deadline)
			return false;
		/* a short native spin catches quick answers cheaply */
		for (int i = 0; i < 500 && *p == v; i++)
			cpu_relax();
		if (*p == v)
			wait_change(p, v, 500 * NSEC_PER_USEC);
	}
}

void sleep_ns(u64 ns)
{
	static volatile u64 never[MAX_CPUS];
	u64 end = clock_ns() + ns;

	for (u64 now; (now = clock_ns()) < end;)
		wait_change(&never[cpu_id()], 0, end - now);
}

/* ---- x2APIC ---- */

void send_ipi(u32 apic_id, u32 vector)
{
	sys_wrmsr(X2APIC_ICR, (u64)apic_id << 32 | ICR_FIXED | vector);
}
