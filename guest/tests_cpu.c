/*
 * tests_cpu.c - the per-CPU tests: `smp` (user code on every CPU, shared
 * atomics), `timer` (LAPIC timer rate on every CPU against kvmclock),
 * `ipi` (fixed IPIs between every ordered pair), `syscall` (round trips,
 * register preservation, cost), `tsc` (TSC and kvmclock monotonic on
 * each CPU and causal across CPUs: a message never arrives before it was
 * sent) and, on request, `timerlat` (one-shot LAPIC timer lateness).
 */
#include "user.h"

#define JOB_TIMEOUT (30 * NSEC_PER_SEC)
#define S64_MAX 0x7fffffffffffffffL

static inline u64 rdtsc_ordered(void)
{
	asm volatile("lfence" ::: "memory");
	return rdtsc();
}

/* TSC cycles in ms milliseconds (this CPU's kvmclock parameters). */
static u64 ms_cycles(u64 ms)
{
	return ms * tsc_khz();
}

/* A signed TSC difference in ns (khz: tsc_khz()), without overflow. */
static s64 cycles_to_ns(s64 cycles, u64 khz)
{
	u64 c = cycles < 0 ? -(u64)cycles : (u64)cycles;
	u64 ns = c / khz * 1000000 + c % khz * 1000000 / khz;

	return cycles < 0 ? -(s64)ns : (s64)ns;
}

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
#define CALIBRATE_WINDOW_MS 25
#define CALIBRATE_BRACKET_US 100
#define CALIBRATE_TIMEOUT_MS 2000

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
 * Spin in user mode until this CPU's timer tick count moves past old and
 * the one-shot countdown has run out (a tick that arrives while it still
 * counts is a stale one, e.g. an earlier backstop's: keep waiting). *seen
 * gets the TSC just after the tick was seen. False after timeout_cycles.
 */
static bool spin_oneshot(volatile u64 *ticks, u64 old, u64 timeout_cycles,
			 u64 *seen)
{
	u64 t0 = rdtsc();

	for (;;) {
		for (u32 i = 0; *ticks == old; i++) {
			cpu_relax();
			if (!(i & 255) && rdtsc() - t0 > timeout_cycles)
				return false;
		}
		*seen = rdtsc_ordered();
		if (sys_rdmsr(X2APIC_TMCCT) == 0)
			return true;
		old = *ticks;
	}
}

/*
 * TMCCT, bracketed by TSC reads (a syscall each, ~30 us): the tightest of
 * 4 tries, or of up to 16 while none was under CALIBRATE_BRACKET_US (the
 * vCPU thread was preempted). *tsc gets the bracket's middle.
 */
static u32 read_tmcct(u64 *tsc)
{
	u64 best = ~0ULL, good = CALIBRATE_BRACKET_US * tsc_khz() / 1000;
	u32 count = 0;

	for (int i = 0; i < 16 && (i < 4 || best > good); i++) {
		u64 a = rdtsc_ordered();
		u32 c = sys_rdmsr(X2APIC_TMCCT);
		u64 b = rdtsc_ordered();

		if (b - a < best) {
			best = b - a;
			count = c;
			*tsc = a + (b - a) / 2;
		}
	}
	return count;
}

/*
 * LAPIC timer counts per second (of the TSC as kvmclock scales it), on
 * this CPU: arm a one-shot countdown of CALIBRATE_COUNT, read the current
 * count at its start and CALIBRATE_WINDOW_MS later (each read bracketed by
 * rdtsc, so neither interrupt delivery nor a halted vCPU's wake-up, ~0.2
 * ms late on PVM, nor a preempted vCPU thread skews it), then spin in user
 * mode until its interrupt arrives. Sets lapic_hz and lapic_calibrated;
 * leaves the timer one-shot and stopped.
 */
static bool lapic_calibrated;

static bool calibrate_lapic(char *msg)
{
	volatile u64 *ticks = &this_cpu()->timer_ticks;
	u64 khz = tsc_khz(), n0, a, b, t0, t1, window, seen, hz;
	u32 c0, c1;

	sys_wrmsr(X2APIC_TMICT, 0);	/* no backstop counting down */
	sys_wrmsr(X2APIC_TDCR, 0xb);	/* divide by 1 */
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);
	n0 = *ticks;
	a = rdtsc_ordered();
	sys_wrmsr(X2APIC_TMICT, CALIBRATE_COUNT);
	b = rdtsc_ordered();
	c0 = read_tmcct(&t0);
	window = ms_cycles(CALIBRATE_WINDOW_MS);
	while (rdtsc() - t0 < window)
		cpu_relax();
	c1 = read_tmcct(&t1);
	if (!spin_oneshot(ticks, n0, ms_cycles(CALIBRATE_TIMEOUT_MS), &seen)) {
		u64 left = sys_rdmsr(X2APIC_TMCCT);

		sys_wrmsr(X2APIC_TMICT, 0);
		if (!left)
			return FAIL("one-shot LAPIC timer expired without "
				    "interrupt");
		return FAIL("one-shot LAPIC timer of %u counts still at %lu "
			    "after %u ms", CALIBRATE_COUNT, left,
			    CALIBRATE_TIMEOUT_MS);
	}
	if (c1 && c1 < c0 && t1 > t0)
		hz = (u64)(c0 - c1) * khz * 1000 / (t1 - t0);
	else	/* ran out within the window: time the whole countdown */
		hz = (u64)CALIBRATE_COUNT * khz * 1000 / (seen - (a + b) / 2);
	if (hz < 1000 * TIMER_HZ)
		return FAIL("LAPIC timer runs at %lu Hz", hz);
	lapic_hz = hz;
	lapic_calibrated = true;
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

/* ---- timerlat ---- */

#define TL_DEFAULT_COUNT 50
#define TL_DEFAULT_US 2000
#define TL_DEFAULT_TOL_US 20000
#define TL_EARLY_US 50			/* allowance for calibration error */
#define TL_LOST_MS 1000			/* beyond the tolerance: lost */

static struct {
	u64 count, us, tol_us, tmict;
} tl;

static struct tl_res {
	u64 fires;			/* measured */
	s64 min_ns, max_ns, sum_ns;	/* lateness */
	u64 early;			/* fires before the deadline */
	u64 arm_cycles;			/* sum: the TMICT write's syscall */
	u64 lvt_before;			/* LVT timer as found */
	bool lost;
	u64 tmcct;			/* after a lost one */
} __attribute__((aligned(64))) tl_res[MAX_CPUS];

/*
 * On this CPU: the timer one-shot at VEC_TIMER, then tl.count times: TSC,
 * write TMICT (a syscall), spin in user mode until the interrupt handler
 * counted a tick; lateness = (TSC then - TSC before the write) - tl.us.
 * Measured from before the write, a fire can only look later than it
 * was, never earlier. Afterwards the timer is stopped, still one-shot.
 */
static void timerlat_job(u64 cpu, void *arg)
{
	volatile u64 *ticks = &this_cpu()->timer_ticks;
	struct tl_res r = { .min_ns = S64_MAX, .max_ns = -S64_MAX };
	u64 khz = tsc_khz(), count = tl.count, tmict = tl.tmict;
	s64 d_ns = tl.us * NSEC_PER_USEC;
	u64 timeout = (tl.us + tl.tol_us) * khz / 1000 + ms_cycles(TL_LOST_MS);

	(void)arg;
	r.lvt_before = sys_rdmsr(X2APIC_LVT_TIMER);
	sys_wrmsr(X2APIC_TMICT, 0);	/* stop a backstop or periodic timer */
	sys_wrmsr(X2APIC_TDCR, 0xb);
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);	/* one-shot */
	for (u64 i = 0; i < count; i++) {
		u64 old = *ticks, a, b, seen;
		s64 late;

		a = rdtsc_ordered();
		sys_wrmsr(X2APIC_TMICT, tmict);
		b = rdtsc_ordered();
		if (!spin_oneshot(ticks, old, timeout, &seen)) {
			r.lost = true;
			r.tmcct = sys_rdmsr(X2APIC_TMCCT);
			break;
		}
		late = cycles_to_ns(seen - a, khz) - d_ns;
		r.fires++;
		r.sum_ns += late;
		r.arm_cycles += b - a;
		r.early += late < 0;
		if (late < r.min_ns)
			r.min_ns = late;
		if (late > r.max_ns)
			r.max_ns = late;
	}
	sys_wrmsr(X2APIC_TMICT, 0);
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER);
	tl_res[cpu] = r;
}

bool test_timerlat(char *msg)
{
	u64 khz = tsc_khz(), n = sys.ncpus, timeout;
	s64 min_ns = S64_MAX, max_ns = -S64_MAX, sum_ns = 0;
	u64 fires = 0;
	char bad[MSG_LEN] = "";

	tl.count = cmdline_u64("tl_count", TL_DEFAULT_COUNT);
	tl.us = cmdline_u64("tl_us", TL_DEFAULT_US);
	tl.tol_us = cmdline_u64("tl_tol_us", TL_DEFAULT_TOL_US);
	if (!tl.count)
		tl.count = 1;
	if (!lapic_calibrated && !calibrate_lapic(msg))
		return false;
	tl.tmict = tl.us * (lapic_hz / 1000) / 1000;
	if (!tl.tmict || tl.tmict > 0xffffffffULL)
		return FAIL("tl_us=%lu needs %lu LAPIC counts at %lu Hz "
			    "(1 to 2^32-1)", tl.us, tl.tmict, lapic_hz);
	memset(tl_res, 0, sizeof(tl_res));
	timeout = JOB_TIMEOUT + tl.count * ((tl.us + tl.tol_us) *
		  NSEC_PER_USEC + TL_LOST_MS * NSEC_PER_MSEC);
	if (!run_on_all(timerlat_job, NULL, timeout, msg))
		return false;
	for (u32 c = 0; c < n; c++) {
		struct tl_res *r = &tl_res[c];

		if (r->fires)
			printf("INFO bench timerlat cpu=%u count=%lu "
			       "delay_us=%lu min_us=%ld avg_us=%ld max_us=%ld "
			       "early=%lu arm_us=%lu\n", c, r->fires, tl.us,
			       r->min_ns / 1000,
			       r->sum_ns / (s64)r->fires / 1000,
			       r->max_ns / 1000, r->early,
			       cycles_to_ns(r->arm_cycles / r->fires, khz) /
				       1000);
		if (bad[0])
			continue;
		if (r->lvt_before & LVT_PERIODIC)
			snprintf(bad, MSG_LEN, "cpu %u: LAPIC timer left "
				 "periodic (LVT %lx) before timerlat", c,
				 r->lvt_before);
		else if (r->lost)
			snprintf(bad, MSG_LEN, "cpu %u: one-shot %lu of %lu (%lu "
				 "us) not seen %lu ms after its deadline, "
				 "TMCCT %lu", c, r->fires + 1, tl.count, tl.us,
				 tl.tol_us / 1000 + TL_LOST_MS, r->tmcct);
		else if (r->min_ns < -(s64)TL_EARLY_US * 1000)
			snprintf(bad, MSG_LEN, "cpu %u: a one-shot of %lu us "
				 "fired %ld us early (%lu of %lu early, margin "
				 "%u us)", c, tl.us, -r->min_ns / 1000,
				 r->early, r->fires, TL_EARLY_US);
		else if (r->max_ns > (s64)tl.tol_us * 1000)
			snprintf(bad, MSG_LEN, "cpu %u: a one-shot of %lu us "
				 "fired %ld us late, tolerance %lu us", c,
				 tl.us, r->max_ns / 1000, tl.tol_us);
		fires += r->fires;
		sum_ns += r->sum_ns;
		if (r->min_ns < min_ns)
			min_ns = r->min_ns;
		if (r->max_ns > max_ns)
			max_ns = r->max_ns;
	}
	if (bad[0])
		return FAIL("%s", bad);
	snprintf(msg, MSG_LEN, "%lu CPU%s x %lu one-shots of %lu us at LAPIC "
		 "%lu Hz: late min %ld avg %ld max %ld us (tolerance %lu us "
		 "late, %u us early)", n, n > 1 ? "s" : "", tl.count, tl.us,
		 lapic_hz,
		 min_ns / 1000, sum_ns / (s64)fires / 1000, max_ns / 1000,
		 tl.tol_us, TL_EARLY_US);
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

#define TSC_READS 200000		/* per CPU, local check */
#define CLOCK_READS 100000
#define WARP_NS 2000			/* tolerance, both clocks */
#define TSC_DEFAULT_ROUNDS 1000
#define TSC_DEFAULT_TIMEOUT_MS 2000
#define TSC_PAIR_TIMEOUT (600 * NSEC_PER_SEC)
#define TSC_SPIN_US 50			/* then halt a while between looks */
#define TSC_NAP_NS (100 * NSEC_PER_USEC)

/*
 * The message between CPU 0 and CPU k: one cache line, alone on its page.
 * seq is 2r+1 from CPU 0 and 2r+2 from CPU k in round r; tsc and ns are
 * the sender's clocks, read just before seq is stored.
 */
static union {
	struct {
		volatile u64 seq;
		volatile u64 tsc;
		volatile u64 ns;
		volatile u64 prep;	/* written first: fetches the page */
	};
	u8 pad[4096];
} tsc_line __attribute__((aligned(4096)));

/* Parameters and the first failure: a page of its own, rarely written. */
static union {
	struct {
		volatile u64 abort;	/* a side gave up */
		u64 rounds, timeout_ms;
		volatile u32 err_lock;
		char err[MSG_LEN];
	};
	u8 pad[4096];
} tsc_ctl __attribute__((aligned(4096)));

/* Local check, per CPU: backward steps between consecutive reads. */
static struct tsc_local {
	u64 tsc_back, tsc_nback;	/* worst step (cycles), how many */
	u64 ns_back, ns_nback;
} __attribute__((aligned(64))) tsc_local[MAX_CPUS];

/*
 * Per pair 0-k: smallest (receiver's clock after the message - sender's
 * clock before it) over the rounds, and how many were negative; fwd is
 * CPU 0 -> k (measured by k), back k -> 0 (measured by CPU 0).
 */
static struct tsc_pair {
	s64 fwd_tsc, fwd_ns, back_tsc, back_ns;		/* TSC in cycles */
	u64 fwd_neg_tsc, fwd_neg_ns, back_neg_tsc, back_neg_ns;
	u64 ns;				/* CPU 0: all rounds, kvmclock */
} __attribute__((aligned(64))) tsc_pair[MAX_CPUS];

/* Each CPU on its own: no shared writes until the results. */
static void tsc_local_job(u64 cpu, void *arg)
{
	struct tsc_local r = { 0 };
	u64 prev = rdtsc_ordered();

	(void)arg;
	for (u64 i = 0; i < TSC_READS; i++) {
		u64 now = rdtsc_ordered();

		if (now < prev) {
			r.tsc_nback++;
			if (prev - now > r.tsc_back)
				r.tsc_back = prev - now;
		}
		prev = now;
	}
	prev = clock_ns();
	for (u64 i = 0; i < CLOCK_READS; i++) {
		u64 now = clock_ns();

		if (now < prev) {
			r.ns_nback++;
			if (prev - now > r.ns_back)
				r.ns_back = prev - now;
		}
		prev = now;
	}
	tsc_local[cpu] = r;
}

static void tsc_fail(const char *m)
{
	spin_lock(&tsc_ctl.err_lock);
	if (!tsc_ctl.err[0])
		memcpy(tsc_ctl.err, m, MSG_LEN);
	spin_unlock(&tsc_ctl.err_lock);
	tsc_ctl.abort = 1;
}

/*
 * Send message seq. The first store brings the line's page here (under a
 * DSM, a transfer of ~0.3-1 ms, after which the page stays ~100 us), so
 * that the clocks are read right before the message becomes visible.
 */
static void tsc_send(u64 seq)
{
	u64 ns, tsc;

	tsc_line.prep = seq;
	ns = clock_ns();
	tsc = rdtsc_ordered();
	tsc_line.tsc = tsc;
	tsc_line.ns = ns;
	__atomic_store_n(&tsc_line.seq, seq, __ATOMIC_RELEASE);
}

/*
 * Wait until message want arrives (until then seq may only be want - 1),
 * then read this CPU's clocks (lfence: not before the load that saw it)
 * and fold receiver - sender into the minima and negative counts. Spins
 * natively; after TSC_SPIN_US it halts for up to TSC_NAP_NS every few
 * microseconds of spinning, so that on a host with fewer free cores than
 * spinning vCPUs the sender's vCPU thread gets to run (a pure spin then
 * costs a scheduler time slice per message).
 */
static bool tsc_recv(u64 cpu, u64 k, u64 want, u64 timeout_cycles,
		     s64 *min_tsc, s64 *min_ns, u64 *neg_tsc, u64 *neg_ns)
{
	char m[MSG_LEN];
	u64 t0 = rdtsc(), v, tsc, ns, waited;
	u64 spin_cycles = TSC_SPIN_US * tsc_khz() / 1000;
	s64 dt, dn;

	for (u32 i = 0;; i++) {
		v = __atomic_load_n(&tsc_line.seq, __ATOMIC_ACQUIRE);
		if (v == want)
			break;
		if (v != want - 1) {
			snprintf(m, MSG_LEN, "pair 0-%lu: cpu %lu waiting for "
				 "message %lu saw %lu", k, cpu, want, v);
			tsc_fail(m);
			return false;
		}
		cpu_relax();
		if (i & 255)
			continue;
		if (tsc_ctl.abort)
			return false;
		waited = rdtsc() - t0;
		if (waited > timeout_cycles) {
			snprintf(m, MSG_LEN, "pair 0-%lu: cpu %lu waited %lu ms "
				 "for message %lu (round %lu), seq still %lu",
				 k, cpu, tsc_ctl.timeout_ms, want,
				 (want - 1) / 2, v);
			tsc_fail(m);
			return false;
		}
		if (waited > spin_cycles)	/* let the sender's thread run */
			wait_change(&tsc_line.seq, v, TSC_NAP_NS);
	}
	tsc = rdtsc_ordered();
	ns = clock_ns();
	dt = (s64)(tsc - tsc_line.tsc);
	dn = (s64)(ns - tsc_line.ns);
	if (dt < *min_tsc)
		*min_tsc = dt;
	if (dn < *min_ns)
		*min_ns = dn;
	*neg_tsc += dt < 0;
	*neg_ns += dn < 0;
	return true;
}

/* CPU 0 and CPU k (arg) exchange tsc_ctl.rounds round trips. */
static void tsc_pair_job(u64 cpu, void *arg)
{
	u64 k = (u64)arg, rounds = tsc_ctl.rounds, timeout, t0;
	s64 min_tsc = S64_MAX, min_ns = S64_MAX;
	u64 neg_tsc = 0, neg_ns = 0;
	struct tsc_pair *p = &tsc_pair[k];

	if (cpu != 0 && cpu != k)
		return;
	timeout = ms_cycles(tsc_ctl.timeout_ms);
	t0 = clock_ns();
	for (u64 r = 0; r < rounds; r++) {
		if (cpu == 0) {
			tsc_send(2 * r + 1);
			if (!tsc_recv(cpu, k, 2 * r + 2, timeout, &min_tsc,
				      &min_ns, &neg_tsc, &neg_ns))
				return;
		} else {
			if (!tsc_recv(cpu, k, 2 * r + 1, timeout, &min_tsc,
				      &min_ns, &neg_tsc, &neg_ns))
				return;
			tsc_send(2 * r + 2);
		}
	}
	if (cpu == 0) {
		p->ns = clock_ns() - t0;
		p->back_tsc = min_tsc;
		p->back_ns = min_ns;
		p->back_neg_tsc = neg_tsc;
		p->back_neg_ns = neg_ns;
	} else {
		p->fwd_tsc = min_tsc;
		p->fwd_ns = min_ns;
		p->fwd_neg_tsc = neg_tsc;
		p->fwd_neg_ns = neg_ns;
	}
}

static s64 smin(s64 a, s64 b)
{
	return a < b ? a : b;
}

bool test_tsc(char *msg)
{
	u64 khz = tsc_khz(), warp_cycles = WARP_NS * khz / 1000000;
	u64 n = sys.ncpus, rounds, worst_tsc = 0, worst_ns = 0;
	char bad[MSG_LEN] = "";

	memset(tsc_local, 0, sizeof(tsc_local));
	memset(tsc_pair, 0, sizeof(tsc_pair));
	memset((void *)&tsc_ctl, 0, sizeof(tsc_ctl));
	rounds = cmdline_u64("tsc_rounds", TSC_DEFAULT_ROUNDS);
	if (!rounds)
		rounds = 1;
	tsc_ctl.rounds = rounds;
	tsc_ctl.timeout_ms = cmdline_u64("tsc_timeout_ms",
					 TSC_DEFAULT_TIMEOUT_MS);

	/* (a) every CPU alone: its TSC and kvmclock never go back */
	if (!run_on_all(tsc_local_job, NULL, JOB_TIMEOUT, msg))
		return false;
	for (u32 c = 0; c < n; c++) {
		struct tsc_local *l = &tsc_local[c];

		if (l->tsc_nback)
			return FAIL("cpu %u: TSC went back %lu times in %u "
				    "reads, worst %lu cycles", c, l->tsc_nback,
				    TSC_READS, l->tsc_back);
		if (l->ns_nback)
			return FAIL("cpu %u: kvmclock went back %lu times in "
				    "%u reads, worst %lu ns", c, l->ns_nback,
				    CLOCK_READS, l->ns_back);
	}

	/* (b) causality: messages between CPU 0 and each other CPU */
	for (u64 k = 1; k < n; k++) {
		tsc_line.seq = 0;
		if (!run_on_all(tsc_pair_job, (void *)k, TSC_PAIR_TIMEOUT, msg))
			return false;
		if (tsc_ctl.err[0])
			return FAIL("%s", tsc_ctl.err);
	}
	for (u64 k = 1; k < n; k++) {
		struct tsc_pair *p = &tsc_pair[k];
		s64 fwd = cycles_to_ns(p->fwd_tsc, khz);
		s64 back = cycles_to_ns(p->back_tsc, khz);
		s64 min_c = smin(p->fwd_tsc, p->back_tsc);
		s64 min_n = smin(p->fwd_ns, p->back_ns);
		u64 warp_c = min_c < 0 ? -min_c : 0;
		u64 warp_n = min_n < 0 ? -min_n : 0;

		printf("INFO bench tsc pair=%lu rounds=%lu fwd_min_ns=%ld "
		       "back_min_ns=%ld offset_ns=%ld warp_ns=%ld "
		       "neg=%lu/%lu kvm_fwd_min_ns=%ld kvm_back_min_ns=%ld "
		       "kvm_offset_ns=%ld kvm_warp_ns=%lu kvm_neg=%lu/%lu "
		       "rtt_ns=%lu\n", k, rounds, fwd, back, (fwd - back) / 2,
		       cycles_to_ns(warp_c, khz), p->fwd_neg_tsc,
		       p->back_neg_tsc, p->fwd_ns, p->back_ns,
		       (p->fwd_ns - p->back_ns) / 2, warp_n, p->fwd_neg_ns,
		       p->back_neg_ns, p->ns / rounds);
		if (!bad[0] && warp_c > warp_cycles)
			snprintf(bad, MSG_LEN, "cpu %lu's TSC vs cpu 0's: a "
				 "message arrived %ld ns before it was sent "
				 "(fwd_min_ns=%ld back_min_ns=%ld: cpu %lu is "
				 "~%ld ns ahead), tolerance %u ns", k,
				 cycles_to_ns(warp_c, khz), fwd, back, k,
				 (fwd - back) / 2, WARP_NS);
		if (!bad[0] && warp_n > WARP_NS)
			snprintf(bad, MSG_LEN, "cpu %lu's kvmclock vs cpu 0's: "
				 "a message arrived %lu ns before it was sent "
				 "(fwd_min_ns=%ld back_min_ns=%ld: cpu %lu is "
				 "~%ld ns ahead), tolerance %u ns", k, warp_n,
				 p->fwd_ns, p->back_ns, k,
				 (p->fwd_ns - p->back_ns) / 2, WARP_NS);
		if (warp_c > worst_tsc)
			worst_tsc = warp_c;
		if (warp_n > worst_ns)
			worst_ns = warp_n;
	}
	if (bad[0])
		return FAIL("%s", bad);
	if (n == 1)
		snprintf(msg, MSG_LEN, "TSC %lu kHz, 1 CPU: %u TSC and %u "
			 "kvmclock reads monotonic", khz, TSC_READS,
			 CLOCK_READS);
	else
		snprintf(msg, MSG_LEN, "TSC %lu kHz, %lu CPUs monotonic, %lu "
			 "round trips between cpu 0 and each of %lu other%s, "
			 "worst warp %lu cycles / %lu ns", khz, n, rounds,
			 n - 1, n > 2 ? "s" : "", worst_tsc, worst_ns);
	return true;
}
