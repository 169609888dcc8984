/*
 * machine/memmap.c - the guest's e820-style physical memory map, derived
 * from the guest RAM regions and the fixed areas of machine/layout.h.
 *
 * What the guest sees:
 *   RAM       [0, 0x9FC00)               conventional memory
 *   reserved  [0x9FC00, 0xA0000)         EBDA (nothing lives there, but
 *                                        every PC reserves it)
 *   (absent)  [0xA0000, 0xE0000)         legacy VGA / option ROM window
 *   reserved  [0xE0000, 0x100000)        BIOS area; holds the ACPI tables
 *   RAM       [0x100000, low RAM end)    up to the 32-bit MMIO hole
 *   reserved  PCI ECAM window            Linux only trusts MMCONFIG that
 *                                        firmware reserved
 *   reserved  IOAPIC page, LAPIC page    as real firmware reports them
 *   reserved  KVM identity map + TSS     KVM's private pages in the hole
 *   RAM       [4 GiB, ...)               the rest of RAM, if any
 *
 * The two low reserved areas are RAM that the guest must not use, so they
 * are only listed where RAM backs them: with tiny RAM sizes they shrink or
 * vanish, and no RAM entry ever extends past the end of RAM. The MMIO
 * entries are not RAM at all; Linux accepts reserved e820 entries there
 * (real machines report exactly these) and nests its IOAPIC and LAPIC
 * resources inside them. Listing them keeps the guest from ever placing
 * anything (e.g. a PCI BAR) on top of them.
 *
 * With the guest_mem_layout() regions the RAM total is the RAM size minus
 * the 0x60400 bytes of [0x9FC00, 0x100000) when RAM reaches 1 MiB, or
 * min(RAM size, 0x9FC00) when it does not.
 */
#include <stdbool.h>
#include <stddef.h>

#include "machine/layout.h"
#include "machine/memmap.h"
#include "machine/pci.h"

#define PAGE_SIZE 0x1000ULL
#define LEGACY_HOLE_START 0xA0000ULL /* VGA window + option ROMs */
#define KVM_TSS_PAGES 3
#define NR_RAM_HOLES 3
#define NR_MMIO_RESERVED 4

/* At most 1 + 2 * (regions + areas) boundaries; see collect_bounds(). */
#define MAX_BOUNDS \
	(1 + 2 * (GUEST_MEM_MAX_REGIONS + NR_RAM_HOLES + NR_MMIO_RESERVED))

enum span_kind { KIND_NONE, KIND_RAM, KIND_RESERVED };

struct span {
	uint64_t start;
	uint64_t end; /* exclusive */
};

/* Areas inside RAM that are not usable RAM; listed reserved if backed. */
static int ram_holes(struct span *out)
{
	out[0] = (struct span){LAYOUT_EBDA_START, LEGACY_HOLE_START};
	out[1] = (struct span){LEGACY_HOLE_START, LAYOUT_BIOS_START};
	out[2] = (struct span){LAYOUT_BIOS_START, LAYOUT_BIOS_END};
	return NR_RAM_HOLES;
}

/* Device and KVM pages in the 32-bit MMIO hole: always reserved. */
static int mmio_reserved(struct span *out)
{
	out[0] = (struct span){PCI_ECAM_BASE, PCI_ECAM_BASE + PCI_ECAM_SIZE};
	out[1] = (struct span){LAYOUT_IOAPIC_ADDR,
			       LAYOUT_IOAPIC_ADDR + PAGE_SIZE};
	out[2] =
		(struct span){LAYOUT_LAPIC_ADDR, LAYOUT_LAPIC_ADDR + PAGE_SIZE};
	out[3] = (struct span){LAYOUT_KVM_IDENT_MAP,
			       LAYOUT_KVM_TSS + KVM_TSS_PAGES * PAGE_SIZE};
	return NR_MMIO_RESERVED;
}

static bool span_has(const struct span *s, uint64_t addr)
{
	return addr >= s->start && addr < s->end;
}

static bool spans_have(const struct span *s, int n, uint64_t addr)
{
	for (int i = 0; i < n; i++)
		if (span_has(&s[i], addr))
			return true;
	return false;
}

/* End of a region, saturated so a region touching 2^64 cannot wrap. */
static uint64_t region_end(const struct guest_mem_region *r)
{
	return r->size > UINT64_MAX - r->gpa ? UINT64_MAX : r->gpa + r->size;
}

static bool in_ram(const struct guest_mem *m, uint64_t addr)
{
	for (int i = 0; i < m->nregions; i++) {
		const struct guest_mem_region *r = &m->region[i];

		if (addr >= r->gpa && addr < region_end(r))
			return true;
	}
	return false;
}

/* What the guest is told about the byte at @addr. */
static enum span_kind kind_at(const struct guest_mem *m, uint64_t addr)
{
	struct span mmio[NR_MMIO_RESERVED], holes[NR_RAM_HOLES];
	int nmmio = mmio_reserved(mmio);
	int nholes = ram_holes(holes);

	if (spans_have(mmio, nmmio, addr))
		return KIND_RESERVED;
	if (!in_ram(m, addr))
		return KIND_NONE;
	if (span_has(&holes[1], addr))
		return KIND_NONE; /* legacy hole: not described at all */
	if (spans_have(holes, nholes, addr))
		return KIND_RESERVED;
	return KIND_RAM;
}

static void add_bound(uint64_t *b, int *n, uint64_t addr)
{
	if (*n < MAX_BOUNDS)
		b[(*n)++] = addr;
}

static void sort_bounds(uint64_t *b, int n)
{
	for (int i = 1; i < n; i++) {
		uint64_t v = b[i];
		int j = i;

		for (; j > 0 && b[j - 1] > v; j--)
			b[j] = b[j - 1];
		b[j] = v;
	}
}

/*
 * Every address where the kind can change. Between two consecutive
 * bounds the kind is constant, so sampling each interval's start is exact.
 */
static int collect_bounds(const struct guest_mem *m, uint64_t *b)
{
	struct span s[NR_RAM_HOLES + NR_MMIO_RESERVED];
	int n = 0, ns;
	int nregions = m->nregions;

	if (nregions < 0 || nregions > GUEST_MEM_MAX_REGIONS)
		nregions = 0;
	add_bound(b, &n, 0);
	for (int i = 0; i < nregions; i++) {
		add_bound(b, &n, m->region[i].gpa);
		add_bound(b, &n, region_end(&m->region[i]));
	}
	ns = ram_holes(s);
	ns += mmio_reserved(s + ns);
	for (int i = 0; i < ns; i++) {
		add_bound(b, &n, s[i].start);
		add_bound(b, &n, s[i].end);
	}
	sort_bounds(b, n);
	return n;
}

/* Append [start, end) of @kind, merging with a contiguous predecessor. */
static int append(struct memmap_entry *out, int n, uint64_t start, uint64_t end,
		  enum span_kind kind)
{
	uint32_t type = kind == KIND_RAM ? MEMMAP_RAM : MEMMAP_RESERVED;
	struct memmap_entry *prev = n ? &out[n - 1] : NULL;

	if (kind == KIND_NONE || end <= start)
		return n;
	if (prev && prev->type == type && prev->addr + prev->size == start) {
		prev->size += end - start;
		return n;
	}
	if (n >= MEMMAP_MAX)
		return n; /* unreachable for guest_mem_layout() regions */
	out[n] = (struct memmap_entry){
		.addr = start, .size = end - start, .type = type};
	return n + 1;
}

int memmap_build(const struct guest_mem *m, struct memmap_entry *out)
{
	uint64_t b[MAX_BOUNDS];
	int nb = collect_bounds(m, b);
	int n = 0;

	for (int i = 0; i + 1 < nb; i++) {
		if (b[i] == b[i + 1])
			continue;
		n = append(out, n, b[i], b[i + 1], kind_at(m, b[i]));
	}
	return n;
}
