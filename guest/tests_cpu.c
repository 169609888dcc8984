/*
 * tests_cpu.c - the per-CPU tests: `smp` (user code on every CPU, shared
 * atomics), `timer` (LAPIC timer rate on every CPU against kvmclock),
 * `ipi` (fixed IPIs between every ordered pair), `syscall` (round trips,
 * register preservation, cost) and `tsc` (TSC and kvmclock monotonic and
 * warp-free across CPUs).
 */
#include "user.h"

#define JOB_TIMEOUT (30 * NSEC_PER_SEC)

/* ---- smp ---- */

#define SMP_ITERS 1000000

static struct {
	volatile u64 slot[MAX_CPUS];
	volatile u64 shared;
	u32 apic[MAX_CPUS];
} smp;

static void smp_job(u64 cpu, void *arg)
{
	(void)arg;
	smp.apic[cpu] = sys_rdmsr(X2APIC_ID);
	for (u64 i = 0; i < SMP_ITERS; i++) {
		smp.slot[cpu]++;
		__atomic_fetch_add(&smp.shared, 1, __ATOMIC_RELAXED);
	}
}

bool test_smp(char *msg)
{
	memset(&smp, 0, sizeof(smp));
	if (!run_on_all(smp_job, NULL, JOB_TIMEOUT, msg))
		return false;
	for (u32 c = 0; c < sys.ncpus; c++) {
		if (smp.slot[c] != SMP_ITERS)
			return FAIL("cpu %u counted %lu, not %u", c,
				    smp.slot[c], SMP_ITERS);
		if (smp.apic[c] != sys.apic[c])
			return FAIL("cpu %u runs on APIC id %u, expected %u", c,
				    smp.apic[c], sys.apic[c]);
	}
	if (smp.shared != (u64)SMP_ITERS * sys.ncpus)
		return FAIL("shared counter %lu, expected %lu", smp.shared,
			    (u64)SMP_ITERS * sys.ncpus);
	if (sys.want_cpus && sys.ncpus != sys.want_cpus)
		return FAIL("%u CPUs running, cpus=%lu", sys.ncpus,
			    sys.want_cpus);
	snprintf(msg, MSG_LEN, "%u CPUs", sys.ncpus);
	return true;
}

/* ---- timer ---- */

#define TIMER_HZ 100
#define TIMER_WINDOW (400 * NSEC_PER_MSEC)
#define CALIBRATE_COUNT 50000000	/* 50 ms at KVM's 1 GHz */

static struct {
	u64 ticks[MAX_CPUS];
	u64 ns[MAX_CPUS];
	bool stopped[MAX_CPUS];
} tmr;

/*
 * Halt until this CPU's timer tick count moves past old. False if the
 * timer has stopped (current count 0) without an interrupt to show for
 * it, so that a VMM that loses the interrupt gets a FAIL, not a hang.
 */
static bool wait_tick(volatile u64 *ticks, u64 old)
{
	if (sys_rdmsr(X2APIC_TMCCT) == 0) {
		u64 end = clock_ns() + 10 * NSEC_PER_MSEC;

		while (*ticks == old && clock_ns() < end)
			cpu_relax();	/* just expired: allow for delivery */
		return *ticks != old;
	}
	wait_change(ticks, old, 0);	/* timer_busy: no backstop */
	return true;
}

/*
 * LAPIC timer counts per kvmclock second: time one one-shot countdown of
 * CALIBRATE_COUNT, halting until its interrupt.
 */
static bool calibrate_lapic(char *msg)
{
	volatile u64 *ticks = &this_cpu()->timer_ticks;
	u64 n0 = *ticks, a, b, end;
	bool ok = true;

	timer_busy[0] = true;		/* wait_change must not rearm it */
	sys_wrmsr(X2APIC_TDCR, 0xb);	/* divide by 1 */
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);
	a = clock_ns();
	sys_wrmsr(X2APIC_TMICT, CALIBRATE_COUNT);
	b = clock_ns();
	while (ok && *ticks == n0)
		ok = wait_tick(ticks, n0);
	end = clock_ns();
	timer_busy[0] = false;
	if (!ok)
		return FAIL("one-shot LAPIC timer expired without interrupt");
	lapic_hz = (u64)CALIBRATE_COUNT * NSEC_PER_SEC / (end - (a + b) / 2);
	if (lapic_hz < 1000 * TIMER_HZ)
		return FAIL("LAPIC timer runs at %lu Hz", lapic_hz);
	return true;
}

static void timer_job(u64 cpu, void *arg)
{
	volatile u64 *ticks = &this_cpu()->timer_ticks;
	u64 t0, n0, t1, n1;
	bool ok = true;

	(void)arg;
	timer_busy[cpu] = true;
	sys_wrmsr(X2APIC_TDCR, 0xb);
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
	sys_wrmsr(X2APIC_TMICT, lapic_hz / TIMER_HZ);
	t0 = clock_ns();
	n0 = *ticks;
	while (ok && clock_ns() - t0 < TIMER_WINDOW)
		ok = wait_tick(ticks, *ticks);
	t1 = clock_ns();
	n1 = *ticks;
	sys_wrmsr(X2APIC_TMICT, 0);
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);	/* back to one-shot */
	timer_busy[cpu] = false;
	tmr.ticks[cpu] = n1 - n0;
	tmr.ns[cpu] = t1 - t0;
	tmr.stopped[cpu] = !ok;
}

bool test_timer(char *msg)
{
	char line[256];
	int n;

	if (!calibrate_lapic(msg))
		return false;
	if (!run_on_all(timer_job, NULL, JOB_TIMEOUT, msg))
		return false;
	n = snprintf(line, sizeof(line), "INFO timer: LAPIC %lu Hz, %u Hz "
		     "ticks per CPU:", lapic_hz, TIMER_HZ);
	for (u32 c = 0; c < sys.ncpus && n < (int)sizeof(line) - 24; c++)
		n += snprintf(line + n, sizeof(line) - n, " %lu/%lums",
			      tmr.ticks[c], tmr.ns[c] / NSEC_PER_MSEC);
	printf("%s\n", line);
	for (u32 c = 0; c < sys.ncpus; c++) {
		u64 want_ns = tmr.ticks[c] * (NSEC_PER_SEC / TIMER_HZ);
		u64 diff = want_ns > tmr.ns[c] ? want_ns - tmr.ns[c]
					       : tmr.ns[c] - want_ns;

		if (tmr.stopped[c])
			return FAIL("cpu %u: periodic timer stopped after %lu "
				    "ticks", c, tmr.ticks[c]);
		if (diff * 10 > tmr.ns[c])
			return FAIL("cpu %u: %lu ticks in %lu ms at %u Hz", c,
				    tmr.ticks[c], tmr.ns[c] / NSEC_PER_MSEC,
				    TIMER_HZ);
	}
	snprintf(msg, MSG_LEN, "%u Hz on %u CPUs, LAPIC %lu Hz", TIMER_HZ,
		 sys.ncpus, lapic_hz);
	return true;
}

/* ---- ipi ---- */

#define IPI_ROUNDS 10

static struct {
	u64 before[MAX_CPUS][MAX_CPUS];	/* [dst][src] */
	volatile u32 lost_src, lost_dst;	/* first lost IPI, +1 */
} ipi;

static void ipi_job(u64 src, void *arg)
{
	(void)arg;
	for (u32 dst = 0; dst < sys.ncpus; dst++) {
		volatile u64 *cnt = &percpu[dst].ipi_from[src];

		if (dst == src && sys.ncpus > 1)
			continue;
		for (int r = 0; r < IPI_ROUNDS; r++) {
			u64 old = *cnt;

			send_ipi(sys.apic[dst], VEC_IPI_BASE + src);
			if (!wait_ge(cnt, old + 1, NSEC_PER_SEC)) {
				ipi.lost_src = src + 1;
				ipi.lost_dst = dst + 1;
				return;
			}
		}
	}
}

bool test_ipi(char *msg)
{
	u32 n = sys.ncpus;

	ipi.lost_src = ipi.lost_dst = 0;
	for (u32 d = 0; d < n; d++)
		for (u32 s = 0; s < n; s++)
			ipi.before[d][s] = percpu[d].ipi_from[s];
	if (!run_on_all(ipi_job, NULL, JOB_TIMEOUT, msg))
		return false;
	if (ipi.lost_src)
		return FAIL("IPI from cpu %u to cpu %u did not arrive in 1 s",
			    ipi.lost_src - 1, ipi.lost_dst - 1);
	for (u32 d = 0; d < n; d++)
		for (u32 s = 0; s < n; s++) {
			u64 got = percpu[d].ipi_from[s] - ipi.before[d][s];
			u64 want = (s != d || n == 1) ? IPI_ROUNDS : 0;

			if (got != want)
				return FAIL("cpu %u got %lu IPIs from cpu %u, "
					    "expected %lu", d, got, s, want);
		}
	if (n == 1)
		snprintf(msg, MSG_LEN, "%u self-IPIs", IPI_ROUNDS);
	else
		snprintf(msg, MSG_LEN, "%u IPIs each way between %u CPUs",
			 IPI_ROUNDS, n);
	return true;
}

/* ---- syscall ---- */

#define SYSCALL_ROUNDS 1000

/*
 * u64 syscall_check(nr, a, b, c, d, u64 *clobbered): one syscall with
 * known values in every callee-saved register; *clobbered gets a bit per
 * register that came back changed (rbx, rbp, r12, r13, r14, r15).
 */
u64 syscall_check(u64 nr, u64 a, u64 b, u64 c, u64 d, u64 *clobbered);
asm(".pushsection .text\n"
    ".globl syscall_check\n"
    "syscall_check:\n"
    "	push %rbx\n	push %rbp\n	push %r12\n	push %r13\n"
    "	push %r14\n	push %r15\n	push %r9\n"
    "	movabs $0x1111111111111111, %rbx\n"
    "	movabs $0x2222222222222222, %rbp\n"
    "	movabs $0x3333333333333333, %r12\n"
    "	movabs $0x4444444444444444, %r13\n"
    "	movabs $0x5555555555555555, %r14\n"
    "	movabs $0x6666666666666666, %r15\n"
    "	mov %rdi, %rax\n	mov %rsi, %rdi\n	mov %rdx, %rsi\n"
    "	mov %rcx, %rdx\n	mov %r8, %r10\n"
    "	syscall\n"
    "	xor %esi, %esi\n"
    "	movabs $0x1111111111111111, %rdi\n	cmp %rdi, %rbx\n"
    "	setne %cl\n	or %cl, %sil\n"
    "	movabs $0x2222222222222222, %rdi\n	cmp %rdi, %rbp\n"
    "	setne %cl\n	shl $1, %cl\n	or %cl, %sil\n"
    "	movabs $0x3333333333333333, %rdi\n	cmp %rdi, %r12\n"
    "	setne %cl\n	shl $2, %cl\n	or %cl, %sil\n"
    "	movabs $0x4444444444444444, %rdi\n	cmp %rdi, %r13\n"
    "	setne %cl\n	shl $3, %cl\n	or %cl, %sil\n"
    "	movabs $0x5555555555555555, %rdi\n	cmp %rdi, %r14\n"
    "	setne %cl\n	shl $4, %cl\n	or %cl, %sil\n"
    "	movabs $0x6666666666666666, %rdi\n	cmp %rdi, %r15\n"
    "	setne %cl\n	shl $5, %cl\n	or %cl, %sil\n"
    "	pop %r9\n	mov %rsi, (%r9)\n"
    "	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n"
    "	pop %rbp\n	pop %rbx\n"
    "	ret\n"
    ".popsection\n");

bool test_syscall(char *msg)
{
	u64 t0 = clock_ns(), mean;

	for (u64 i = 0; i < SYSCALL_ROUNDS; i++) {
		u64 a = i * 0x10001, b = ~i, c = i << 32, d = 7 * i + 1;
		u64 clobbered, r = syscall_check(SYS_ECHO, a, b, c, d,
						  &clobbered);

		if (r != a + b + c + d)
			return FAIL("round %lu returned %lx, expected %lx", i,
				    r, a + b + c + d);
		if (clobbered)
			return FAIL("round %lu clobbered callee-saved "
				    "registers (mask %lx: rbx rbp r12-r15)",
				    i, clobbered);
	}
	mean = (clock_ns() - t0) / SYSCALL_ROUNDS;
	printf("INFO syscall: %u round trips, mean %lu ns\n", SYSCALL_ROUNDS,
	       mean);
	snprintf(msg, MSG_LEN, "mean %lu ns", mean);
	return true;
}

/* ---- tsc ---- */

#define TSC_READS 200000
#define CLOCK_READS 20000
#define WARP_NS 2000

static struct {
	volatile u64 last_tsc, last_ns;
	u64 tsc_back[MAX_CPUS];		/* worst backwards step on a CPU */
	u64 tsc_warp[MAX_CPUS];		/* worst step behind another CPU */
	u64 ns_back[MAX_CPUS];
	u64 ns_warp[MAX_CPUS];
} tw;

static inline u64 rdtsc_ordered(void)
{
	asm volatile("lfence" ::: "memory");
	return rdtsc();
}

/*
 * Read a clock many times. Each read must not be behind this CPU's
 * previous read, nor behind *last, the newest value any CPU had read
 * before we loaded it (updated with lock cmpxchg).
 */
static void warp_check(u64 (*read)(void), volatile u64 *last, u64 n,
		       u64 *back, u64 *warp)
{
	u64 prev = read();

	for (u64 i = 0; i < n; i++) {
		u64 seen = __atomic_load_n(last, __ATOMIC_ACQUIRE);
		u64 now = read();

		if (now < prev && prev - now > *back)
			*back = prev - now;
		if (now < seen && seen - now > *warp)
			*warp = seen - now;
		if (now > seen)
			__atomic_compare_exchange_n(last, &seen, now, false,
						    __ATOMIC_ACQ_REL,
						    __ATOMIC_ACQUIRE);
		prev = now;
	}
}

static void tsc_job(u64 cpu, void *arg)
{
	(void)arg;
	warp_check(rdtsc_ordered, &tw.last_tsc, TSC_READS, &tw.tsc_back[cpu],
		   &tw.tsc_warp[cpu]);
	warp_check(clock_ns, &tw.last_ns, CLOCK_READS, &tw.ns_back[cpu],
		   &tw.ns_warp[cpu]);
}

bool test_tsc(char *msg)
{
	u64 khz = tsc_khz(), warp_cycles = WARP_NS * khz / 1000000;
	u64 worst_tsc = 0, worst_ns = 0;

	memset(&tw, 0, sizeof(tw));
	if (!run_on_all(tsc_job, NULL, JOB_TIMEOUT, msg))
		return false;
	for (u32 c = 0; c < sys.ncpus; c++) {
		if (tw.tsc_back[c])
			return FAIL("cpu %u: TSC went back %lu cycles", c,
				    tw.tsc_back[c]);
		if (tw.tsc_warp[c] > warp_cycles)
			return FAIL("cpu %u: TSC %lu cycles behind another CPU",
				    c, tw.tsc_warp[c]);
		if (tw.ns_back[c])
			return FAIL("cpu %u: kvmclock went back %lu ns", c,
				    tw.ns_back[c]);
		if (tw.ns_warp[c] > WARP_NS)
			return FAIL("cpu %u: kvmclock %lu ns behind another "
				    "CPU", c, tw.ns_warp[c]);
		if (tw.tsc_warp[c] > worst_tsc)
			worst_tsc = tw.tsc_warp[c];
		if (tw.ns_warp[c] > worst_ns)
			worst_ns = tw.ns_warp[c];
	}
	snprintf(msg, MSG_LEN, "TSC %lu kHz, worst warp %lu cycles / %lu ns",
		 khz, worst_tsc, worst_ns);
	return true;
}
