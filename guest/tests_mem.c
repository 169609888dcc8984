/*
 * tests_mem.c - the `mem` test: write an address-dependent pattern to all
 * free RAM from user mode, on all CPUs at once, and read it back. Free
 * means RAM in the memmap above 1 MiB minus the guest image (code, data,
 * page tables, stacks), the start info and everything it points to, and
 * the ACPI tables (so that later tests can still read them).
 */
#include "user.h"

#define PAGE 4096ULL
#define MAX_RANGES 128

struct range {
	u64 start, end;
};

static struct range ranges[MAX_RANGES];
static int nranges;
static u64 total;

static struct {
	u64 bad_addr[MAX_CPUS];		/* first mismatch, 0 if none */
	u64 bad_got[MAX_CPUS];
} mres;

static void add_range(u64 start, u64 end)
{
	start = (start + PAGE - 1) & ~(PAGE - 1);
	end &= ~(PAGE - 1);
	if (start < end && nranges < MAX_RANGES)
		ranges[nranges++] = (struct range){ start, end };
}

/* Remove [start, start + len) from the free ranges. */
static void reserve(u64 start, u64 len)
{
	u64 end = start + len;
	int n = nranges;

	if (!len)
		return;
	start &= ~(PAGE - 1);
	end = (end + PAGE - 1) & ~(PAGE - 1);
	for (int i = 0; i < n; i++) {
		struct range r = ranges[i];

		if (end <= r.start || start >= r.end)
			continue;
		ranges[i].end = ranges[i].start;	/* emptied, maybe refilled */
		if (r.start < start)
			ranges[i].end = start;
		if (end < r.end) {
			if (ranges[i].end == ranges[i].start)
				ranges[i] = (struct range){ end, r.end };
			else
				add_range(end, r.end);
		}
	}
}

static void reserve_table(u64 addr)
{
	if (addr && phys_ok(addr, 8))
		reserve(addr, *(u32 *)(addr + 4));
}

static void build_ranges(void)
{
	struct hvm_start_info *si = sys.si;
	struct acpi_info *a = &sys.acpi;

	nranges = 0;
	for (u32 i = 0; i < sys.nmemmap; i++) {
		u64 s = sys.memmap[i].addr, e = s + sys.memmap[i].size;

		if (sys.memmap[i].type != E820_RAM)
			continue;
		if (s < (1ULL << 20))
			s = 1ULL << 20;
		if (e > sys.mapped_end)
			e = sys.mapped_end;
		add_range(s, e);
	}
	reserve((u64)_image_start, _image_end - _image_start);
	reserve((u64)si, sizeof(*si));
	reserve(si->memmap_paddr, si->memmap_entries * sizeof(*sys.memmap));
	reserve(si->cmdline_paddr, strlen(sys.cmdline) + 1);
	reserve(si->modlist_paddr,
		si->nr_modules * sizeof(struct hvm_modlist_entry));
	for (u32 i = 0; i < si->nr_modules; i++) {
		struct hvm_modlist_entry *m =
			(void *)(si->modlist_paddr + i * sizeof(*m));

		reserve(m->paddr, m->size);
		reserve(m->cmdline_paddr, PAGE);
	}
	reserve(a->rsdp, 36);
	reserve_table(a->root);
	for (u32 i = 0; i < a->ntables; i++)
		reserve_table(a->tables[i]);
	reserve_table(a->dsdt);
	total = 0;
	for (int i = 0; i < nranges; i++)
		total += ranges[i].end - ranges[i].start;
}

/*
 * A free block of len bytes (page-aligned) at the top of the highest free
 * range that holds it, or 0. Free as for the mem test: RAM above 1 MiB
 * outside the guest image, the start info and the ACPI tables, so nothing
 * but the caller (and a later or earlier mem test) touches it.
 */
u64 free_ram_block(u64 len)
{
	u64 best = 0;

	len = (len + PAGE - 1) & ~(PAGE - 1);
	build_ranges();
	for (int i = 0; i < nranges; i++)
		if (ranges[i].end - ranges[i].start >= len &&
		    ranges[i].end - len > best)
			best = ranges[i].end - len;
	return best;
}

static inline u64 pattern(u64 addr)
{
	return addr * 0x9e3779b97f4a7c15ULL ^ 0xa5a5a5a5a5a5a5a5ULL;
}

/* Call fn on the parts of the ranges between byte offsets from and to. */
static void for_slice(u64 from, u64 to, void (*fn)(u64 *s, u64 *e, u64 cpu),
		      u64 cpu)
{
	u64 off = 0;

	for (int i = 0; i < nranges; i++) {
		u64 len = ranges[i].end - ranges[i].start;
		u64 s = from > off ? from - off : 0;
		u64 e = to - off < len ? to - off : len;

		if (to > off && s < e)
			fn((u64 *)(ranges[i].start + s),
			   (u64 *)(ranges[i].start + e), cpu);
		off += len;
	}
}

static void fill(u64 *s, u64 *e, u64 cpu)
{
	(void)cpu;
	for (u64 *p = s; p < e; p++)
		*p = pattern((u64)p);
}

static void verify(u64 *s, u64 *e, u64 cpu)
{
	for (u64 *p = s; p < e; p++) {
		if (*p != pattern((u64)p) && !mres.bad_addr[cpu]) {
			mres.bad_addr[cpu] = (u64)p;
			mres.bad_got[cpu] = *p;
		}
	}
}

static void mem_job(u64 cpu, void *arg)
{
	u64 pages = total / PAGE;
	u64 from = pages * cpu / sys.ncpus * PAGE;
	u64 to = pages * (cpu + 1) / sys.ncpus * PAGE;

	(void)arg;
	mres.bad_addr[cpu] = 0;
	for_slice(from, to, fill, cpu);
	for_slice(from, to, verify, cpu);
}

bool test_mem(char *msg)
{
	build_ranges();
	if (!total)
		return FAIL("no free RAM above 1 MiB");
	if (!run_on_all(mem_job, NULL, 120 * NSEC_PER_SEC, msg))
		return false;
	for (u32 c = 0; c < sys.ncpus; c++)
		if (mres.bad_addr[c])
			return FAIL("at %p read %lx, wrote %lx",
				    (void *)mres.bad_addr[c], mres.bad_got[c],
				    pattern(mres.bad_addr[c]));
	snprintf(msg, MSG_LEN, "%lu MiB", total >> 20);
	return true;
}
