/*
 * tests/unit/test_memmap.c - memmap_build() over RAM layouts from tiny to
 * 8 GiB: sorted, non-overlapping, RAM only where guest RAM is, the RAM
 * total equal to the RAM size minus the 0x60400 bytes reserved or left out
 * in [0x9FC00, 0x100000), and the reserved areas (low holes, PCI ECAM,
 * IOAPIC, LAPIC, KVM pages) present.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/guest_mem.h"
#include "machine/layout.h"
#include "machine/memmap.h"
#include "machine/pci.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define LOW_HOLES (LAYOUT_HIMEM - LAYOUT_EBDA_START) /* 0x60400 */
#define PCI_ECAM_END (PCI_ECAM_BASE + PCI_ECAM_SIZE)

struct built {
	struct guest_mem m;
	struct memmap_entry e[MEMMAP_MAX];
	int n;
};

static void build(struct built *b, uint64_t ram)
{
	assert_int_equal(guest_mem_layout(&b->m, ram), 0);
	b->n = memmap_build(&b->m, b->e);
	assert_true(b->n > 0);
	assert_true(b->n <= MEMMAP_MAX);
}

static int in_one_region(const struct guest_mem *m, uint64_t a, uint64_t sz)
{
	for (int i = 0; i < m->nregions; i++) {
		const struct guest_mem_region *r = &m->region[i];

		if (a >= r->gpa && a - r->gpa <= r->size &&
		    sz <= r->size - (a - r->gpa))
			return 1;
	}
	return 0;
}

/* Sorted, non-empty, non-overlapping; RAM entries inside guest RAM. */
static void check_shape(const struct built *b)
{
	for (int i = 0; i < b->n; i++) {
		const struct memmap_entry *x = &b->e[i];

		assert_true(x->size > 0);
		assert_true(x->type == MEMMAP_RAM ||
			    x->type == MEMMAP_RESERVED);
		if (x->type == MEMMAP_RAM)
			assert_true(in_one_region(&b->m, x->addr, x->size));
		if (i > 0)
			assert_true(b->e[i - 1].addr + b->e[i - 1].size <=
				    x->addr);
	}
}

static uint64_t ram_total(const struct built *b)
{
	uint64_t t = 0;

	for (int i = 0; i < b->n; i++)
		if (b->e[i].type == MEMMAP_RAM)
			t += b->e[i].size;
	return t;
}

static int has(const struct built *b, uint64_t addr, uint64_t size,
	       uint32_t type)
{
	for (int i = 0; i < b->n; i++)
		if (b->e[i].addr == addr && b->e[i].size == size &&
		    b->e[i].type == type)
			return 1;
	return 0;
}

/* The standard PC layout for RAM of at least 1 MiB. */
static void check_pc(uint64_t ram)
{
	struct built b;
	uint64_t low = ram < 3 * GiB ? ram : 3 * GiB;

	build(&b, ram);
	check_shape(&b);
	assert_int_equal(ram_total(&b), ram - LOW_HOLES);
	assert_true(has(&b, 0, LAYOUT_EBDA_START, MEMMAP_RAM));
	assert_true(has(&b, LAYOUT_EBDA_START, 0xA0000 - LAYOUT_EBDA_START,
			MEMMAP_RESERVED));
	assert_true(has(&b, LAYOUT_BIOS_START,
			LAYOUT_BIOS_END - LAYOUT_BIOS_START, MEMMAP_RESERVED));
	if (low > LAYOUT_HIMEM)
		assert_true(
			has(&b, LAYOUT_HIMEM, low - LAYOUT_HIMEM, MEMMAP_RAM));
	assert_true(has(&b, PCI_ECAM_BASE, PCI_ECAM_SIZE, MEMMAP_RESERVED));
	assert_true(has(&b, LAYOUT_IOAPIC_ADDR, 0x1000, MEMMAP_RESERVED));
	assert_true(has(&b, LAYOUT_LAPIC_ADDR, 0x1000, MEMMAP_RESERVED));
	assert_true(has(&b, LAYOUT_KVM_IDENT_MAP, 0x4000, MEMMAP_RESERVED));
	if (ram > 3 * GiB)
		assert_true(has(&b, 4 * GiB, ram - 3 * GiB, MEMMAP_RAM));
	else
		assert_true(b.e[b.n - 1].addr < 4 * GiB);
}

/* The ECAM window is reserved whatever the RAM size, and never RAM. */
static void test_ecam_reserved(void **state)
{
	static const uint64_t sizes[] = {0x1000, 0xA0000, 16 * MiB, 3 * GiB,
					 8 * GiB};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct built b;

		build(&b, sizes[i]);
		assert_true(
			has(&b, PCI_ECAM_BASE, PCI_ECAM_SIZE, MEMMAP_RESERVED));
		for (int j = 0; j < b.n; j++) {
			const struct memmap_entry *x = &b.e[j];

			if (x->type != MEMMAP_RAM)
				continue;
			assert_true(x->addr + x->size <= PCI_ECAM_BASE ||
				    x->addr >= PCI_ECAM_END);
		}
	}
	/* ... and clear of the BAR window the bus allocates from. */
	assert_true(PCI_MMIO_END <= PCI_ECAM_BASE ||
		    PCI_MMIO_BASE >= PCI_ECAM_END);
}

static void test_16m(void **state)
{
	(void)state;
	check_pc(16 * MiB);
}

static void test_256m(void **state)
{
	(void)state;
	check_pc(256 * MiB);
}

static void test_3g_exact(void **state)
{
	struct built b;

	(void)state;
	check_pc(3 * GiB);
	build(&b, 3 * GiB);
	for (int i = 0; i < b.n; i++)
		if (b.e[i].type == MEMMAP_RAM)
			assert_true(b.e[i].addr + b.e[i].size <= 3 * GiB);
}

static void test_4g_splits(void **state)
{
	struct built b;

	(void)state;
	check_pc(4 * GiB);
	build(&b, 4 * GiB);
	/* Last entry: the 1 GiB above 4 GiB. */
	assert_int_equal(b.e[b.n - 1].addr, 4 * GiB);
	assert_int_equal(b.e[b.n - 1].size, 1 * GiB);
	assert_int_equal(b.e[b.n - 1].type, MEMMAP_RAM);
}

static void test_8g(void **state)
{
	(void)state;
	check_pc(8 * GiB);
}

static void test_exactly_1m_and_a_page(void **state)
{
	struct built b;

	(void)state;
	check_pc(LAYOUT_HIMEM);
	build(&b, LAYOUT_HIMEM);
	for (int i = 0; i < b.n; i++)
		assert_false(b.e[i].type == MEMMAP_RAM &&
			     b.e[i].addr >= LAYOUT_HIMEM);
	check_pc(LAYOUT_HIMEM + 0x1000);
}

/* Below 1 MiB: nothing described as RAM or reserved past RAM's end. */
static void test_tiny(void **state)
{
	const uint64_t sizes[] = {0x1000,  0x80000, 0x9F000, 0xA0000,
				  0xC0000, 0xE1000, 0xFF000};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t ram = sizes[i];
		uint64_t want =
			ram < LAYOUT_EBDA_START ? ram : LAYOUT_EBDA_START;
		struct built b;

		build(&b, ram);
		check_shape(&b);
		assert_int_equal(ram_total(&b), want);
		for (int j = 0; j < b.n; j++) {
			const struct memmap_entry *x = &b.e[j];

			/* Low entries end within RAM; MMIO ones are >3 GiB. */
			if (x->addr < GUEST_MMIO_HOLE_START)
				assert_true(x->addr + x->size <= ram);
		}
	}
}

/* Every 4 KiB step across the low holes keeps the invariants. */
static void test_sweep_low(void **state)
{
	(void)state;
	for (uint64_t ram = 0x1000; ram <= 2 * MiB; ram += 0x1000) {
		struct built b;

		build(&b, ram);
		check_shape(&b);
		if (ram >= LAYOUT_HIMEM)
			assert_int_equal(ram_total(&b), ram - LOW_HOLES);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_16m),
		cmocka_unit_test(test_256m),
		cmocka_unit_test(test_3g_exact),
		cmocka_unit_test(test_4g_splits),
		cmocka_unit_test(test_8g),
		cmocka_unit_test(test_exactly_1m_and_a_page),
		cmocka_unit_test(test_tiny),
		cmocka_unit_test(test_sweep_low),
		cmocka_unit_test(test_ecam_reserved),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
