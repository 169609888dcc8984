/*
 * tests_cluster.c - tests for a VM spread over several cluster nodes (dvmm
 * processes sharing guest RAM through a page-granular DSM), only on
 * request: `coherence` (lock xadd on shared counters from every CPU: exact
 * totals), `pingpong` (a token through one cache line between CPU 0 and
 * the last CPU: round-trip time), `private` (per-CPU pages cause no DSM
 * events once warmed up) and `spread` (which node runs each CPU).
 *
 * dvmm's node-info port device, answered by the node that runs the
 * accessing vCPU, 32-bit accesses: in 0x510 = node id (all ones: no such
 * device); out 0x514 = first page frame, out 0x518 = page count of a
 * range (both per vCPU); in 0x51c = DSM events (faults taken,
 * invalidations and downgrades received, page requests served) this node
 * has had for the range since the VM started, low 32 bits (0 on a single
 * node). QEMU has fw_cfg there instead: see node_probe().
 *
 * The hot loops run in user mode (natively on the CI machines) and time
 * out with raw rdtsc deadlines, so that they touch no shared page but the
 * ones under test (kvmclock's pvclock area is one page for all CPUs).
 */
#include "user.h"

#define PAGE 4096ULL
#define PAGE_WORDS (PAGE / 8)
/* Shared state that must have its page to itself: union { ...; PAGE_PAD; } */
#define PAGE_ALIGNED __attribute__((aligned(4096)))
#define PAGE_PAD u8 page_pad_[PAGE]

#define NI_NODE 0x510
#define NI_PFN 0x514
#define NI_NPAGES 0x518
#define NI_EVENTS 0x51c
#define NI_NONE 0xffffffffU
#define FW_CFG_DMA_SIG 0x554d4551U	/* "QEMU" read from port 0x514 */
#define NO_PORT "no dvmm node-info port"

#define START_TIMEOUT_MS 10000	/* every CPU at the start barrier */

/*
 * This CPU's node id, or NI_NONE with *why saying what was seen. Not just
 * port 0x510: QEMU has its fw_cfg device at 0x510-0x51b, where a 32-bit
 * read of 0x510 gives 0 and 0x514-0x51b are the DMA address registers
 * (reading "QEMU CFG"; writing 0x518 starts a DMA), so no write happens
 * before that signature is ruled out. Without fw_cfg DMA, 0x51c is still
 * unassigned under QEMU and reads all ones.
 */
static u32 node_probe(const char **why)
{
	u32 node = port_in(NI_NODE, 4);

	if (node == NI_NONE) {
		*why = "port 0x510 reads ffffffff";
		return NI_NONE;
	}
	if (port_in(NI_PFN, 4) == FW_CFG_DMA_SIG) {
		*why = "QEMU fw_cfg at port 0x510: 0x514 reads \"QEMU\"";
		return NI_NONE;
	}
	port_out(NI_PFN, 4, 0);
	port_out(NI_NPAGES, 4, 1);
	if (port_in(NI_EVENTS, 4) == NI_NONE) {
		*why = "port 0x51c reads ffffffff";
		return NI_NONE;
	}
	*why = "";
	return node;
}

/* DSM events of this node for pages [pfn, pfn + n). */
static u32 dsm_events(u64 pfn, u64 n)
{
	port_out(NI_PFN, 4, pfn);
	port_out(NI_NPAGES, 4, n);
	return port_in(NI_EVENTS, 4);
}

static inline u64 xadd(volatile u64 *p, u64 v)
{
	asm volatile("lock xaddq %0, %1" : "+r"(v), "+m"(*p) : : "memory");
	return v;
}

/* TSC cycles in ms milliseconds (this CPU's kvmclock parameters). */
static u64 ms_cycles(u64 ms)
{
	return ms * tsc_khz();
}

/*
 * One-shot barrier on a word of its own page: count in and spin natively
 * until n CPUs have. False after timeout_cycles.
 */
static bool arrive(volatile u64 *cnt, u64 n, u64 timeout_cycles)
{
	u64 t0 = rdtsc();

	__atomic_add_fetch(cnt, 1, __ATOMIC_ACQ_REL);
	for (u32 i = 0; __atomic_load_n(cnt, __ATOMIC_ACQUIRE) < n; i++) {
		cpu_relax();
		if (!(i & 255) && rdtsc() - t0 > timeout_cycles)
			return false;
	}
	return true;
}

/* ---- coherence ---- */

#define COH_PAGES 8			/* counters alone on a page each */
#define COH_PACKED 8			/* counters in one cache line */
#define COH_N (COH_PAGES + COH_PACKED)
#define COH_PACKED_WORD 8		/* the line at byte 64 of its page */
#define COH_DEFAULT_ITERS 20000
#define COH_DEFAULT_CHUNK 100
#define COH_TIMEOUT (300 * NSEC_PER_SEC)

/*
 * Pages 0-7 hold counter k at word 65 * k (a different offset on each
 * page), page 8 the packed ones at words 8-15; every other word is a
 * canary that must survive the pages' trips between nodes.
 */
static u64 coh_mem[COH_PAGES + 1][PAGE_WORDS] PAGE_ALIGNED;
static union {
	volatile u64 start;
	PAGE_PAD;
} coh_sync PAGE_ALIGNED;

static struct coh_res {
	u64 sum[COH_N];			/* of the values xadd returned */
	u64 ns;
	bool late;			/* start barrier timed out */
	bool bad;			/* a counter went backwards */
	u32 bad_ctr;
	u64 bad_prev, bad_got;
} __attribute__((aligned(64))) coh_res[MAX_CPUS];

static u64 coh_iters, coh_chunk;

static u64 *coh_ctr(u32 k)
{
	if (k < COH_PAGES)
		return &coh_mem[k][65 * k];
	return &coh_mem[COH_PAGES][COH_PACKED_WORD + k - COH_PAGES];
}

static bool coh_is_ctr(u32 page, u32 w)
{
	if (page < COH_PAGES)
		return w == 65 * page;
	return w >= COH_PACKED_WORD && w < COH_PACKED_WORD + COH_PACKED;
}

static u64 coh_canary(u32 page, u32 w)
{
	return 0xc0ffee0000000000ULL ^ (u64)page << 32 ^ w * 0x9e3779b9ULL;
}

/* n xadds of 1 on counter k; each must return more than the last one. */
static inline void coh_run(struct coh_res *r, u32 k, u64 n, u64 *sum,
			   u64 *next)
{
	volatile u64 *c = coh_ctr(k);

	for (u64 i = 0; i < n; i++) {
		u64 v = xadd(c, 1);

		if (v < next[k] && !r->bad) {
			r->bad = true;
			r->bad_ctr = k;
			r->bad_prev = next[k] - 1;
			r->bad_got = v;
		}
		next[k] = v + 1;
		sum[k] += v;
	}
}

static void coh_job(u64 cpu, void *arg)
{
	struct coh_res *r = &coh_res[cpu];
	u64 sum[COH_N] = { 0 }, next[COH_N] = { 0 };
	u64 iters = coh_iters, chunk = coh_chunk, t0, n;

	(void)arg;
	if (!arrive(&coh_sync.start, sys.ncpus, ms_cycles(START_TIMEOUT_MS)))
		r->late = true;
	t0 = clock_ns();
	/*
	 * In chunks: coh_chunk xadds on each lone counter in turn, then
	 * coh_chunk rounds over the packed ones. Every CPU cycles through
	 * all the pages, so they move between nodes all the time, but each
	 * visit does a chunk of work (a transfer costs ~100 us).
	 */
	for (u64 done = 0; done < iters; done += n) {
		n = iters - done < chunk ? iters - done : chunk;
		for (u32 k = 0; k < COH_PAGES; k++)
			coh_run(r, k, n, sum, next);
		for (u64 i = 0; i < n; i++)
			for (u32 k = COH_PAGES; k < COH_N; k++)
				coh_run(r, k, 1, sum, next);
	}
	r->ns = clock_ns() - t0;
	for (u32 k = 0; k < COH_N; k++)
		r->sum[k] = sum[k];
}

static const char *coh_name(u32 k, char *buf)
{
	if (k < COH_PAGES)
		snprintf(buf, 32, "%u (own page)", k);
	else
		snprintf(buf, 32, "%u (packed %u)", k, k - COH_PAGES);
	return buf;
}

bool test_coherence(char *msg)
{
	u64 ncpus = sys.ncpus, total, want_sum, max_ns = 0, ops, ops_s = 0;
	char name[32];

	coh_iters = cmdline_u64("coh_iters", COH_DEFAULT_ITERS);
	coh_chunk = cmdline_u64("coh_chunk", COH_DEFAULT_CHUNK);
	if (!coh_chunk)
		coh_chunk = 1;
	total = ncpus * coh_iters;
	/* 0 + 1 + ... + (total - 1), modulo 2^64 like the sums */
	want_sum = total % 2 ? total * ((total - 1) / 2)
			     : (total / 2) * (total - 1);
	for (u32 p = 0; p <= COH_PAGES; p++)
		for (u32 w = 0; w < PAGE_WORDS; w++)
			coh_mem[p][w] = coh_is_ctr(p, w) ? 0 : coh_canary(p, w);
	memset(coh_res, 0, sizeof(coh_res));
	coh_sync.start = 0;
	if (!run_on_all(coh_job, NULL, COH_TIMEOUT, msg))
		return false;

	for (u32 c = 0; c < ncpus; c++) {
		struct coh_res *r = &coh_res[c];

		if (r->late)
			return FAIL("cpu %u waited %u ms for the others to "
				    "start", c, START_TIMEOUT_MS);
		if (r->bad)
			return FAIL("cpu %u: counter %s went back: xadd "
				    "returned %lu after %lu", c,
				    coh_name(r->bad_ctr, name), r->bad_got,
				    r->bad_prev);
		if (r->ns > max_ns)
			max_ns = r->ns;
	}
	for (u32 k = 0; k < COH_N; k++) {
		u64 v = *coh_ctr(k), s = 0;

		for (u32 c = 0; c < ncpus; c++)
			s += coh_res[c].sum[k];
		if (v != total)
			return FAIL("counter %s is %lu, expected %lu (%lu CPUs "
				    "x %lu)", coh_name(k, name), v, total,
				    ncpus, coh_iters);
		if (s != want_sum)
			return FAIL("counter %s: xadd returned values summing "
				    "to %lu, expected %lu", coh_name(k, name),
				    s, want_sum);
	}
	for (u32 p = 0; p <= COH_PAGES; p++)
		for (u32 w = 0; w < PAGE_WORDS; w++)
			if (!coh_is_ctr(p, w) &&
			    coh_mem[p][w] != coh_canary(p, w))
				return FAIL("word %u of counter page %u (%p) "
					    "changed: %lx, expected %lx", w, p,
					    (void *)&coh_mem[p][w],
					    coh_mem[p][w], coh_canary(p, w));
	ops = total * COH_N;
	if (max_ns >= 1000)
		ops_s = ops * 1000000 / (max_ns / 1000);
	printf("INFO bench coherence cpus=%lu iters=%lu chunk=%lu "
	       "counters=%u ops=%lu ms=%lu ops_per_s=%lu\n", ncpus,
	       coh_iters, coh_chunk, COH_N, ops, max_ns / NSEC_PER_MSEC,
	       ops_s);
	snprintf(msg, MSG_LEN, "%u counters = %lu (%lu CPUs x %lu xadds), "
		 "xadd sums %lu, %lu ms", COH_N, total, ncpus, coh_iters,
		 want_sum, max_ns / NSEC_PER_MSEC);
	return true;
}

/* ---- pingpong ---- */

#define PP_DEFAULT_ROUNDS 1000
#define PP_DEFAULT_TIMEOUT_MS 2000
#define PP_WARMUP 10			/* untimed rounds first */
#define PP_JOB_TIMEOUT (600 * NSEC_PER_SEC)

/* The token and its payload: one cache line, alone on its page. */
static struct {
	volatile u64 w[PAGE_WORDS];	/* w[0] token, w[1..7] payload */
} pp_line PAGE_ALIGNED;

static union {
	struct {
		volatile u64 abort;	/* a side gave up */
		u64 rounds, timeout_ms;
		u32 peer;		/* the last CPU */
		u32 node[2];		/* of CPU 0 and the peer */
		u64 ns;			/* CPU 0: the timed rounds */
		char err[MSG_LEN];	/* first failure */
		volatile u32 err_lock;
	};
	PAGE_PAD;
} pp PAGE_ALIGNED;

static inline u64 pp_payload(u64 token, u32 j)
{
	return token * 0x9e3779b97f4a7c15ULL + j;
}

/* Record the first failure (m) and make the other side give up. */
static void pp_fail(const char *m)
{
	spin_lock(&pp.err_lock);
	if (!pp.err[0])
		memcpy(pp.err, m, MSG_LEN);
	spin_unlock(&pp.err_lock);
	pp.abort = 1;
}

static void pp_send(u64 token)
{
	for (u32 j = 1; j < 8; j++)
		pp_line.w[j] = pp_payload(token, j);
	__atomic_store_n(&pp_line.w[0], token, __ATOMIC_RELEASE);
}

/* Spin until the token is want (it may only be want - 1 until then). */
static bool pp_recv(u64 cpu, u64 want, u64 timeout_cycles)
{
	char m[MSG_LEN];
	u64 t0 = rdtsc(), v;

	for (u32 i = 0;; i++) {
		v = __atomic_load_n(&pp_line.w[0], __ATOMIC_ACQUIRE);
		if (v == want)
			break;
		if (v != want - 1) {
			snprintf(m, MSG_LEN, "cpu %lu waiting for token %lu "
				 "saw %lu", cpu, want, v);
			pp_fail(m);
			return false;
		}
		cpu_relax();
		if (!(i & 255) && pp.abort)
			return false;
		if (!(i & 255) && rdtsc() - t0 > timeout_cycles) {
			snprintf(m, MSG_LEN, "cpu %lu waited %lu ms for token "
				 "%lu (round trip %lu), token still %lu", cpu,
				 pp.timeout_ms, want, (want - 1) / 2, v);
			pp_fail(m);
			return false;
		}
	}
	for (u32 j = 1; j < 8; j++) {
		u64 got = pp_line.w[j];

		if (got != pp_payload(want, j)) {
			snprintf(m, MSG_LEN, "cpu %lu: with token %lu, payload "
				 "word %u is %lx, expected %lx", cpu, want, j,
				 got, pp_payload(want, j));
			pp_fail(m);
			return false;
		}
	}
	return true;
}

static void pp_job(u64 cpu, void *arg)
{
	u64 timeout_cycles, t0 = 0, rounds = pp.rounds;
	bool first = cpu == 0;
	const char *why;

	(void)arg;
	if (cpu != 0 && cpu != pp.peer)
		return;
	pp.node[!first] = node_probe(&why);
	timeout_cycles = ms_cycles(pp.timeout_ms);
	for (u64 r = 0; r < PP_WARMUP + rounds; r++) {
		if (first && r == PP_WARMUP)
			t0 = clock_ns();
		if (first) {
			pp_send(2 * r + 1);
			if (!pp_recv(cpu, 2 * r + 2, timeout_cycles))
				return;
		} else {
			if (!pp_recv(cpu, 2 * r + 1, timeout_cycles))
				return;
			pp_send(2 * r + 2);
		}
	}
	if (first)
		pp.ns = clock_ns() - t0;
}

static void node_str(char *buf, u32 node)
{
	if (node == NI_NONE)
		snprintf(buf, 16, "none");
	else
		snprintf(buf, 16, "%u", node);
}

bool test_pingpong(char *msg)
{
	char n0[16], n1[16];
	u64 us, per_ns;

	if (sys.ncpus < 2)
		return FAIL("needs 2 CPUs, have %u", sys.ncpus);
	memset(&pp, 0, sizeof(pp));
	memset((void *)&pp_line, 0, sizeof(pp_line));
	pp.rounds = cmdline_u64("pp_rounds", PP_DEFAULT_ROUNDS);
	pp.timeout_ms = cmdline_u64("pp_timeout_ms", PP_DEFAULT_TIMEOUT_MS);
	if (!pp.rounds)
		pp.rounds = 1;
	pp.peer = sys.ncpus - 1;
	pp.node[0] = pp.node[1] = NI_NONE;
	if (!run_on_all(pp_job, NULL, PP_JOB_TIMEOUT, msg))
		return false;
	node_str(n0, pp.node[0]);
	node_str(n1, pp.node[1]);
	printf("INFO pingpong: cpu 0 (apic %u, node %s) and cpu %u (apic %u, "
	       "node %s)\n", sys.apic[0], n0, pp.peer, sys.apic[pp.peer],
	       n1);
	if (pp.err[0])
		return FAIL("%s", pp.err);
	us = pp.ns / NSEC_PER_USEC;
	per_ns = pp.ns / pp.rounds;
	printf("INFO bench pingpong rounds=%lu us=%lu ns_per_round_trip=%lu\n",
	       pp.rounds, us, per_ns);
	snprintf(msg, MSG_LEN, "%lu round trips in %lu us (%lu.%03lu us per "
		 "round trip)", pp.rounds, us, per_ns / 1000, per_ns % 1000);
	return true;
}

/* ---- private ---- */

#define PRIV_PAGES 16			/* per CPU */
#define PRIV_WARMUP 3			/* rounds before the counts */
#define PRIV_DEFAULT_ROUNDS 200
#define PRIV_TIMEOUT (120 * NSEC_PER_SEC)

static union {
	volatile u64 warm;		/* barrier after the warm-up */
	PAGE_PAD;
} priv_sync PAGE_ALIGNED;

static struct priv_res {
	u32 node;
	u32 ev_start, ev_warm, ev_end;	/* before warm-up, after, at the end */
	const char *why;		/* no node-info port */
	bool late;
	u64 bad_addr, bad_got, bad_want;
} __attribute__((aligned(64))) priv_res[MAX_CPUS];

static u64 priv_base, priv_rounds;

static inline u64 priv_pattern(u64 *p, u64 round, u64 cpu)
{
	return (u64)p * 0x9e3779b97f4a7c15ULL ^ round << 40 ^ cpu << 56;
}

/* Write every word of [s, e) for this round, then read it all back. */
static void priv_round(struct priv_res *r, u64 *s, u64 *e, u64 round,
		       u64 cpu)
{
	for (u64 *p = s; p < e; p++)
		*(volatile u64 *)p = priv_pattern(p, round, cpu);
	for (u64 *p = s; p < e; p++) {
		u64 v = *(volatile u64 *)p;

		if (v != priv_pattern(p, round, cpu) && !r->bad_addr) {
			r->bad_addr = (u64)p;
			r->bad_got = v;
			r->bad_want = priv_pattern(p, round, cpu);
		}
	}
}

static void priv_job(u64 cpu, void *arg)
{
	struct priv_res *r = &priv_res[cpu];
	u64 *s = (u64 *)(priv_base + cpu * PRIV_PAGES * PAGE);
	u64 *e = s + PRIV_PAGES * PAGE_WORDS;
	u64 pfn = (u64)s >> 12, round = 0, rounds = priv_rounds;
	bool port;

	(void)arg;
	r->node = node_probe(&r->why);
	port = r->node != NI_NONE;
	if (port)
		r->ev_start = dsm_events(pfn, PRIV_PAGES);
	for (; round < PRIV_WARMUP; round++)
		priv_round(r, s, e, round, cpu);
	if (!arrive(&priv_sync.warm, sys.ncpus, ms_cycles(START_TIMEOUT_MS)))
		r->late = true;
	if (port)
		r->ev_warm = dsm_events(pfn, PRIV_PAGES);
	for (; round < PRIV_WARMUP + rounds; round++)
		priv_round(r, s, e, round, cpu);
	if (port)
		r->ev_end = dsm_events(pfn, PRIV_PAGES);
}

/* True if [addr, addr + len) is inside one RAM entry of the memmap. */
static bool in_ram(u64 addr, u64 len)
{
	for (u32 i = 0; i < sys.nmemmap; i++)
		if (sys.memmap[i].type == E820_RAM &&
		    sys.memmap[i].addr <= addr &&
		    addr + len <= sys.memmap[i].addr + sys.memmap[i].size)
			return phys_ok(addr, len);
	return false;
}

bool test_private(char *msg)
{
	u64 len = sys.ncpus * PRIV_PAGES * PAGE;
	u32 nbad = 0, first_bad = 0;
	const char *why;

	if (node_probe(&why) == NI_NONE)
		return FAIL(NO_PORT " (%s)", why);
	priv_rounds = cmdline_u64("priv_rounds", PRIV_DEFAULT_ROUNDS);
	priv_base = free_ram_block(len);
	if (!priv_base)
		return FAIL("no free RAM for %u x %u pages", sys.ncpus,
			    PRIV_PAGES);
	if (!in_ram(priv_base, len))
		return FAIL("%p+%lx is not RAM of the memmap",
			    (void *)priv_base, len);
	memset(priv_res, 0, sizeof(priv_res));
	priv_sync.warm = 0;
	if (!run_on_all(priv_job, NULL, PRIV_TIMEOUT, msg))
		return false;
	for (u32 c = 0; c < sys.ncpus; c++) {
		struct priv_res *r = &priv_res[c];
		u64 pfn = (priv_base >> 12) + c * PRIV_PAGES;

		if (r->node == NI_NONE) {
			printf("INFO private: cpu %u: " NO_PORT " (%s)\n", c,
			       r->why);
			if (!nbad++)
				first_bad = c;
			continue;
		}
		printf("INFO private: cpu %u node %u pfn %lx+%u events "
		       "start=%u warm=%u end=%u\n", c, r->node, pfn,
		       PRIV_PAGES, r->ev_start, r->ev_warm, r->ev_end);
		if (r->late || r->bad_addr || r->ev_end != r->ev_warm)
			if (!nbad++)
				first_bad = c;
	}
	if (nbad) {
		struct priv_res *r = &priv_res[first_bad];
		u32 c = first_bad;

		if (r->node == NI_NONE)
			return FAIL("cpu %u: " NO_PORT " (%s)", c, r->why);
		if (r->late)
			return FAIL("cpu %u waited %u ms for the others' "
				    "warm-up", c, START_TIMEOUT_MS);
		if (r->bad_addr)
			return FAIL("cpu %u: at %p read %lx, wrote %lx", c,
				    (void *)r->bad_addr, r->bad_got,
				    r->bad_want);
		return FAIL("%u of %u CPUs had DSM events on their private "
			    "pages after warm-up; cpu %u (node %u): %u -> %u "
			    "in %lu rounds", nbad, sys.ncpus, c, r->node,
			    r->ev_warm, r->ev_end, priv_rounds);
	}
	snprintf(msg, MSG_LEN, "%u CPUs x %u pages at %p, %lu rounds, no DSM "
		 "events after warm-up", sys.ncpus, PRIV_PAGES,
		 (void *)priv_base, priv_rounds);
	return true;
}

/* ---- spread ---- */

static struct {
	u32 node, apic;
	const char *why;
} __attribute__((aligned(64))) spread_res[MAX_CPUS];

static void spread_job(u64 cpu, void *arg)
{
	(void)arg;
	spread_res[cpu].apic = sys_rdmsr(X2APIC_ID);
	spread_res[cpu].node = node_probe(&spread_res[cpu].why);
}

bool test_spread(char *msg)
{
	u32 nodes = 0, missing = 0, first_missing = 0;
	int len;
	u64 want = 0;
	bool have_want = cmdline_get("nodes", &len) != NULL;

	if (have_want)
		want = cmdline_u64("nodes", 0);
	if (!run_on_all(spread_job, NULL, 30 * NSEC_PER_SEC, msg))
		return false;
	for (u32 c = 0; c < sys.ncpus; c++) {
		u32 n = spread_res[c].node;
		bool seen = false;

		if (n == NI_NONE) {
			printf("INFO spread: cpu %u (apic %u): " NO_PORT
			       " (%s)\n", c, spread_res[c].apic,
			       spread_res[c].why);
			if (!missing++)
				first_missing = c;
			continue;
		}
		printf("INFO spread: cpu %u (apic %u) on node %u\n", c,
		       spread_res[c].apic, n);
		for (u32 d = 0; d < c; d++)
			if (spread_res[d].node == n)
				seen = true;
		if (!seen)
			nodes++;
	}
	printf("INFO spread: %u nodes\n", nodes);
	if (missing)
		return FAIL(NO_PORT " on %u of %u CPUs (cpu %u: %s)", missing,
			    sys.ncpus, first_missing,
			    spread_res[first_missing].why);
	if (have_want && nodes != want)
		return FAIL("%u CPUs on %u nodes, nodes=%lu", sys.ncpus, nodes,
			    want);
	snprintf(msg, MSG_LEN, "%u CPUs on %u nodes", sys.ncpus, nodes);
	return true;
}
