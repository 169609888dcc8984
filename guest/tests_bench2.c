/*
 * tests_bench2.c - two latency benchmarks, only on request: `ipibench`
 * (fixed-IPI round trips between CPU 0 and the last CPU) and `mmiobench`
 * (an MMIO read that exits to the VMM: virtio common config num_queues,
 * from CPU 0 and from the last CPU). In a VM spread over cluster nodes
 * CPU 0 and the last CPU are usually on different nodes.
 *
 * ipibench uses the kernel's IPI counters (vector VEC_IPI_BASE + src
 * increments percpu[dst].ipi_from[src]): the handler cannot send, so the
 * answer comes from the peer's user-mode loop, which spins until its
 * counter moves and then sends the IPI back (a SYS_WRMSR of the ICR).
 * A round trip is thus two syscalls, two IPI deliveries and two handler
 * runs. Both sides spin natively and time out on raw rdtsc deadlines;
 * only CPU 0 reads kvmclock, before and after the timed rounds.
 */
#include "virtio.h"

#define PAGE_ALIGNED __attribute__((aligned(4096)))

/* TSC cycles in ms milliseconds (this CPU's kvmclock parameters). */
static u64 ms_to_cycles(u64 ms)
{
	return ms * tsc_khz();
}

/*
 * Per-round samples (TSC cycles) for the spread of a benchmark: the
 * averages are what the bench lines report, but on a loaded host a few
 * rounds where a vCPU thread was preempted dominate them. The first
 * SAMPLES_MAX rounds are kept; the measuring CPU touches the buffer
 * before timing (in a cluster VM a first write would move the page).
 */
#define SAMPLES_MAX 65536
static u64 samples[SAMPLES_MAX] PAGE_ALIGNED;

static void samples_touch(u64 n)
{
	for (u64 i = 0; i < n && i < SAMPLES_MAX; i++)
		WRITE_ONCE(samples[i], 0);
}

static void sort_u64(u64 *a, u64 n)
{
	static const u64 gaps[] = { 29524, 9841, 3280, 1093, 364, 121, 40,
				    13, 4, 1 };

	for (u64 g = 0; g < ARRAY_SIZE(gaps); g++)
		for (u64 i = gaps[g]; i < n; i++) {
			u64 v = a[i], j = i;

			for (; j >= gaps[g] && a[j - gaps[g]] > v; j -= gaps[g])
				a[j] = a[j - gaps[g]];
			a[j] = v;
		}
}

/* "min=A p50=B p99=C max=D" in ns, from the first n samples (sorted). */
static void samples_summary(u64 n, char *buf, size_t len)
{
	u64 khz = tsc_khz();

	if (n > SAMPLES_MAX)
		n = SAMPLES_MAX;
	if (!n || !khz) {
		snprintf(buf, len, "no samples");
		return;
	}
	sort_u64(samples, n);
#define NS(c) ((c) * 1000000 / khz)
	snprintf(buf, len, "min_ns=%lu p50_ns=%lu p99_ns=%lu max_ns=%lu",
		 NS(samples[0]), NS(samples[n / 2]), NS(samples[n * 99 / 100]),
		 NS(samples[n - 1]));
#undef NS
}

/* ---- ipibench ---- */

#define IPIB_DEFAULT_ROUNDS 200
#define IPIB_DEFAULT_TIMEOUT_MS 2000
#define IPIB_WARMUP 10
#define IPIB_JOB_TIMEOUT (600 * NSEC_PER_SEC)

/* Control block, on a page of its own (DSM: read-shared during the run). */
static union {
	struct {
		u64 rounds, timeout_ms;
		u32 peer;
		volatile u64 ready;	/* the peer has its base count */
		volatile u64 abort;	/* a side gave up */
		u64 ns;			/* CPU 0: the timed rounds */
		u64 base0, base1;	/* counters before the first IPI */
		char err[MSG_LEN];	/* first failure */
		volatile u32 err_lock;
	};
	u8 pad[4096];
} ib PAGE_ALIGNED;

static void ib_fail(const char *m)
{
	spin_lock(&ib.err_lock);
	if (!ib.err[0])
		memcpy(ib.err, m, MSG_LEN);
	spin_unlock(&ib.err_lock);
	ib.abort = 1;
}

/*
 * Spin until *cnt reaches want. On timeout or the other side's abort:
 * false (after recording why, for a timeout).
 */
static bool ib_wait(u64 cpu, volatile u64 *cnt, u64 want, u64 round,
		    u64 timeout_cycles)
{
	char m[MSG_LEN];
	u64 t0 = rdtsc();

	for (u32 i = 0; *cnt < want; i++) {
		cpu_relax();
		if ((i & 255))
			continue;
		if (ib.abort)
			return false;
		if (rdtsc() - t0 > timeout_cycles) {
			snprintf(m, MSG_LEN, "cpu %lu waited %lu ms for the "
				 "IPI of round %lu%s (got %lu of %lu)", cpu,
				 ib.timeout_ms, round,
				 round < IPIB_WARMUP ? " (warm-up)" : "",
				 *cnt - (want - round - 1), round + 1);
			ib_fail(m);
			return false;
		}
	}
	return true;
}

static void ib_job(u64 cpu, void *arg)
{
	u32 peer = ib.peer;
	u64 total = IPIB_WARMUP + ib.rounds, t0 = 0;
	u64 timeout_cycles = ms_to_cycles(ib.timeout_ms);
	char m[MSG_LEN];

	(void)arg;
	if (cpu == peer) {
		volatile u64 *cnt = &percpu[peer].ipi_from[0];

		ib.base1 = *cnt;
		__atomic_store_n(&ib.ready, 1, __ATOMIC_RELEASE);
		for (u64 r = 0; r < total; r++) {
			if (!ib_wait(cpu, cnt, ib.base1 + r + 1, r,
				     timeout_cycles))
				return;
			send_ipi(sys.apic[0], VEC_IPI_BASE + peer);
		}
		return;
	}
	if (cpu != 0)
		return;

	volatile u64 *cnt = &percpu[0].ipi_from[peer];
	u64 s = rdtsc();

	while (!__atomic_load_n(&ib.ready, __ATOMIC_ACQUIRE)) {
		cpu_relax();
		if (rdtsc() - s > timeout_cycles) {
			snprintf(m, MSG_LEN, "cpu %u did not start within "
				 "%lu ms", peer, ib.timeout_ms);
			ib_fail(m);
			return;
		}
	}
	samples_touch(ib.rounds);
	ib.base0 = *cnt;
	for (u64 r = 0; r < total; r++) {
		u64 c0;

		if (r == IPIB_WARMUP)
			t0 = clock_ns();
		c0 = rdtsc();
		send_ipi(sys.apic[peer], VEC_IPI_BASE + 0);
		if (!ib_wait(0, cnt, ib.base0 + r + 1, r, timeout_cycles))
			return;
		if (r >= IPIB_WARMUP && r - IPIB_WARMUP < SAMPLES_MAX)
			samples[r - IPIB_WARMUP] = rdtsc() - c0;
	}
	ib.ns = clock_ns() - t0;
}

bool test_ipibench(char *msg)
{
	u64 total, got0, got1, us, per_ns;
	char spread[96];
	u32 peer;

	if (sys.ncpus < 2)
		return FAIL("needs 2 CPUs, have %u", sys.ncpus);
	memset(&ib, 0, sizeof(ib));
	ib.rounds = cmdline_u64("ipi_rounds", IPIB_DEFAULT_ROUNDS);
	ib.timeout_ms = cmdline_u64("ipi_timeout_ms", IPIB_DEFAULT_TIMEOUT_MS);
	if (!ib.rounds)
		ib.rounds = 1;
	if (!ib.timeout_ms)
		ib.timeout_ms = 1;
	peer = ib.peer = sys.ncpus - 1;
	total = IPIB_WARMUP + ib.rounds;
	printf("INFO ipibench: cpu 0 (apic %u) and cpu %u (apic %u), vectors "
	       "%x / %x\n", sys.apic[0], peer, sys.apic[peer], VEC_IPI_BASE,
	       VEC_IPI_BASE + peer);
	if (!run_on_all(ib_job, NULL, IPIB_JOB_TIMEOUT, msg))
		return false;
	if (ib.err[0])
		return FAIL("%s", ib.err);
	/* every IPI arrived exactly once: nothing extra, nothing merged */
	got0 = percpu[0].ipi_from[peer] - ib.base0;
	got1 = percpu[peer].ipi_from[0] - ib.base1;
	if (got0 != total || got1 != total)
		return FAIL("cpu 0 got %lu IPIs from cpu %u and cpu %u got %lu "
			    "from cpu 0, expected %lu each", got0, peer, peer,
			    got1, total);
	us = ib.ns / NSEC_PER_USEC;
	per_ns = ib.ns / ib.rounds;
	samples_summary(ib.rounds, spread, sizeof(spread));
	printf("INFO ipibench: round trips %s\n", spread);
	printf("INFO bench ipibench rounds=%lu us=%lu ns_per_round_trip=%lu\n",
	       ib.rounds, us, per_ns);
	snprintf(msg, MSG_LEN, "%lu round trips in %lu us (%lu.%03lu us per "
		 "round trip)", ib.rounds, us, per_ns / 1000, per_ns % 1000);
	return true;
}

/* ---- mmiobench ---- */

#define MMIOB_DEFAULT_READS 2000
#define MMIOB_JOB_TIMEOUT (300 * NSEC_PER_SEC)
#define CC_NUM_QUEUES 0x12	/* virtio_pci_common_cfg.num_queues, RO */

static struct {
	volatile u16 *reg;
	u64 reads;
	u32 target;			/* the CPU that measures */
	struct mb_res {
		bool done;
		u16 first, min, max;	/* values read */
		u64 ns;
		char spread[96];	/* samples_summary() */
	} res[2];			/* CPU 0, the last CPU */
} mb;

static void mb_measure(struct mb_res *r)
{
	volatile u16 *reg = mb.reg;
	u16 v, lo, hi;
	u64 t0, n = mb.reads;

	/* map_mmio flushed only CPU 0's TLB: start clean here too */
	syscall4(SYS_FLUSH_TLB, 0, 0, 0, 0);
	samples_touch(n);
	r->first = lo = hi = mmio_r16(reg);	/* untimed */
	t0 = clock_ns();
	for (u64 i = 0; i < n; i++) {
		u64 c0 = rdtsc();

		v = mmio_r16(reg);
		if (i < SAMPLES_MAX)
			samples[i] = rdtsc() - c0;
		if (v < lo)
			lo = v;
		if (v > hi)
			hi = v;
	}
	r->ns = clock_ns() - t0;
	samples_summary(n, r->spread, sizeof(r->spread));
	r->min = lo;
	r->max = hi;
	r->done = true;
}

static void mb_job(u64 cpu, void *arg)
{
	(void)arg;
	if (cpu == mb.target && cpu != 0)
		mb_measure(&mb.res[1]);
}

/* Which BAR of the device holds p (for the report), -1 if none. */
static int bar_of(const struct pci_dev *d, u64 p, u64 *off)
{
	for (int i = 0; i < 6; i++) {
		const struct pci_bar *b = &d->bar[i];

		if (!b->io && b->size && p >= b->addr && p < b->addr + b->size) {
			*off = p - b->addr;
			return i;
		}
	}
	return -1;
}

bool test_mmiobench(char *msg)
{
	u32 peer = sys.ncpus - 1, cpus[2] = { 0, peer };
	int ncpu = peer ? 2 : 1, bar;
	struct vdev *vd;
	u64 off = 0, per[2];
	char where[24];

	if (!virtio_probe(msg))
		return false;
	if (!nvdevs)
		return FAIL("no virtio PCI device (with modern virtio "
			    "capabilities) among %d PCI functions", pci.ndevs);
	vd = &vdevs[0];
	memset(&mb, 0, sizeof(mb));
	mb.reg = (volatile u16 *)(vd->common + CC_NUM_QUEUES);
	mb.reads = cmdline_u64("mmio_reads", MMIOB_DEFAULT_READS);
	if (!mb.reads)
		mb.reads = 1;
	bar = bar_of(vd->pci, (u64)mb.reg, &off);
	if (bar >= 0)
		snprintf(where, sizeof(where), "BAR%d+0x%lx", bar, off);
	else
		snprintf(where, sizeof(where), "%p", (void *)mb.reg);
	printf("INFO mmiobench: %s common config num_queues at %s (%p), %lu "
	       "reads on cpu 0%s\n", vd->name, where, (void *)mb.reg,
	       mb.reads, peer ? " and on the last CPU" : "");

	/* one CPU at a time: the device is not shared while timing */
	mb.target = 0;
	mb_measure(&mb.res[0]);
	if (peer) {
		mb.target = peer;
		if (!run_on_all(mb_job, NULL, MMIOB_JOB_TIMEOUT, msg))
			return false;
		if (!mb.res[1].done)
			return FAIL("cpu %u did not run the reads", peer);
	}
	for (int i = 0; i < ncpu; i++) {
		struct mb_res *r = &mb.res[i];

		per[i] = r->ns / mb.reads;
		printf("INFO mmiobench: cpu %u reads %s\n", cpus[i], r->spread);
		printf("INFO bench mmiobench cpu=%u reads=%lu ns_per_read=%lu\n",
		       cpus[i], mb.reads, per[i]);
	}
	for (int i = 0; i < ncpu; i++) {
		struct mb_res *r = &mb.res[i];

		if (r->first < 1 || r->first == 0xffff)
			return FAIL("cpu %u: num_queues of %s reads %u",
				    cpus[i], vd->name, r->first);
		if (r->min != r->first || r->max != r->first)
			return FAIL("cpu %u: num_queues of %s changed while "
				    "reading: first %u, min %u, max %u",
				    cpus[i], vd->name, r->first, r->min,
				    r->max);
	}
	if (ncpu == 2 && mb.res[1].first != mb.res[0].first)
		return FAIL("num_queues of %s is %u on cpu 0 but %u on cpu %u",
			    vd->name, mb.res[0].first, mb.res[1].first, peer);
	if (ncpu == 2)
		snprintf(msg, MSG_LEN, "%s num_queues=%u, %lu reads: cpu 0 "
			 "%lu.%03lu us, cpu %u %lu.%03lu us per read",
			 vd->name, mb.res[0].first, mb.reads, per[0] / 1000,
			 per[0] % 1000, peer, per[1] / 1000, per[1] % 1000);
	else
		snprintf(msg, MSG_LEN, "%s num_queues=%u, %lu reads: cpu 0 "
			 "%lu.%03lu us per read (1 CPU)", vd->name,
			 mb.res[0].first, mb.reads, per[0] / 1000,
			 per[0] % 1000);
	return true;
}
