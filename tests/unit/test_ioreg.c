/*
 * tests/unit/test_ioreg.c - the io registry: registration rules (overlap,
 * adjacency, empty and wrapping ranges), unregistering, dispatch to the
 * right handler at the right offset, accesses that straddle a range end,
 * all-ones reads of unclaimed addresses and ioreg_first_unknown.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/ioreg.h"

/* What a handler saw on its last call. */
struct rec {
	int calls;
	uint64_t offset;
	uint32_t len;
	bool is_write;
	int vcpu_id;
	uint8_t data[8];
	uint8_t fill; /* what reads return */
};

static void rec_handler(void *opaque, uint64_t offset, uint8_t *data,
			uint32_t len, bool is_write, int vcpu_id)
{
	struct rec *r = opaque;

	r->calls++;
	r->offset = offset;
	r->len = len;
	r->is_write = is_write;
	r->vcpu_id = vcpu_id;
	if (is_write)
		memcpy(r->data, data, len);
	else
		memset(data, r->fill, len);
}

static int setup(void **state)
{
	static struct io_registry io;

	assert_int_equal(ioreg_init(&io), 0);
	*state = &io;
	return 0;
}

static int teardown(void **state)
{
	ioreg_destroy(*state);
	return 0;
}

static int reg(struct io_registry *io, uint64_t base, uint64_t len,
	       struct rec *r)
{
	return ioreg_register(io, IO_SPACE_PIO, base, len, rec_handler, r,
			      "test");
}

static void test_register_and_overlap(void **state)
{
	struct io_registry *io = *state;
	struct rec r = {0};

	assert_int_equal(reg(io, 0x100, 0x10, &r), 0);
	/* Same base, inside, over the start, over the end, around. */
	assert_int_equal(reg(io, 0x100, 0x10, &r), -EEXIST);
	assert_int_equal(reg(io, 0x104, 0x2, &r), -EEXIST);
	assert_int_equal(reg(io, 0xf8, 0x9, &r), -EEXIST);
	assert_int_equal(reg(io, 0x10f, 0x4, &r), -EEXIST);
	assert_int_equal(reg(io, 0xf0, 0x40, &r), -EEXIST);
	assert_int_equal(reg(io, 0x10f, 1, &r), -EEXIST);
	assert_int_equal(io->count[IO_SPACE_PIO], 1);
}

static void test_adjacent_ranges(void **state)
{
	struct io_registry *io = *state;
	struct rec a = {.fill = 0xaa}, b = {.fill = 0xbb}, c = {.fill = 0xcc};
	uint8_t d;

	assert_int_equal(reg(io, 0x100, 0x10, &b), 0);
	assert_int_equal(reg(io, 0x110, 0x10, &c), 0); /* right after */
	assert_int_equal(reg(io, 0xf0, 0x10, &a), 0);  /* right before */
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0xff, &d, 1, false, 0));
	assert_int_equal(d, 0xaa);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x100, &d, 1, false, 0));
	assert_int_equal(d, 0xbb);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x10f, &d, 1, false, 0));
	assert_int_equal(d, 0xbb);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x110, &d, 1, false, 0));
	assert_int_equal(d, 0xcc);
}

static void test_bad_ranges_rejected(void **state)
{
	struct io_registry *io = *state;
	struct rec r = {0};

	assert_int_equal(reg(io, 0x100, 0, &r), -EINVAL);
	assert_int_equal(reg(io, UINT64_MAX - 1, 4, &r), -EINVAL);
	assert_int_equal(reg(io, UINT64_MAX, UINT64_MAX, &r), -EINVAL);
	assert_int_equal(
		ioreg_register(io, IO_SPACE_PIO, 0x100, 1, NULL, &r, "nofn"),
		-EINVAL);
	assert_int_equal(ioreg_register(io, IO_SPACE_COUNT, 0x100, 1,
					rec_handler, &r, "badspace"),
			 -EINVAL);
	assert_int_equal(io->count[IO_SPACE_PIO], 0);
}

static void test_spaces_are_separate(void **state)
{
	struct io_registry *io = *state;
	struct rec p = {.fill = 0x11}, m = {.fill = 0x22};
	uint8_t d;

	assert_int_equal(ioreg_register(io, IO_SPACE_PIO, 0x1000, 0x100,
					rec_handler, &p, "pio"),
			 0);
	assert_int_equal(ioreg_register(io, IO_SPACE_MMIO, 0x1000, 0x100,
					rec_handler, &m, "mmio"),
			 0);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x1010, &d, 1, false, 0));
	assert_int_equal(d, 0x11);
	assert_true(ioreg_dispatch(io, IO_SPACE_MMIO, 0x1010, &d, 1, false, 0));
	assert_int_equal(d, 0x22);
	assert_false(
		ioreg_dispatch(io, IO_SPACE_COUNT, 0x1010, &d, 1, false, 0));
}

static void test_unregister(void **state)
{
	struct io_registry *io = *state;
	struct rec r = {.fill = 0x5a}, r2 = {.fill = 0x6b};
	uint8_t d = 0;

	assert_int_equal(reg(io, 0x200, 8, &r), 0);
	assert_int_equal(ioreg_unregister(io, IO_SPACE_PIO, 0x204), -ENOENT);
	assert_int_equal(ioreg_unregister(io, IO_SPACE_PIO, 0x300), -ENOENT);
	assert_int_equal(ioreg_unregister(io, IO_SPACE_PIO, 0x200), 0);
	assert_int_equal(ioreg_unregister(io, IO_SPACE_PIO, 0x200), -ENOENT);
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x200, &d, 1, false, 0));
	assert_int_equal(d, 0xff);
	assert_int_equal(r.calls, 0);
	/* The space is free again. */
	assert_int_equal(reg(io, 0x1fc, 8, &r2), 0);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x200, &d, 1, false, 0));
	assert_int_equal(d, 0x6b);
}

static void test_dispatch_offset_and_data(void **state)
{
	struct io_registry *io = *state;
	struct rec a = {.fill = 0xaa}, b = {.fill = 0xbb};
	uint8_t w[4] = {1, 2, 3, 4}, d[4];

	assert_int_equal(reg(io, 0x3f8, 8, &a), 0);
	assert_int_equal(reg(io, 0x60, 1, &b), 0);
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x3fc, w, 4, true, 3));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.offset, 4);
	assert_int_equal(a.len, 4);
	assert_true(a.is_write);
	assert_int_equal(a.vcpu_id, 3);
	assert_memory_equal(a.data, w, 4);
	assert_int_equal(b.calls, 0);

	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x3f9, d, 2, false, -1));
	assert_int_equal(a.offset, 1);
	assert_false(a.is_write);
	assert_int_equal(a.vcpu_id, -1);
	assert_int_equal(d[0], 0xaa);
	assert_int_equal(d[1], 0xaa);

	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x60, d, 1, false, 0));
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.offset, 0);
	assert_int_equal(d[0], 0xbb);
}

static void test_straddling_access_not_taken(void **state)
{
	struct io_registry *io = *state;
	struct rec a = {.fill = 0}, b = {.fill = 0};
	uint8_t d[8];

	assert_int_equal(reg(io, 0x100, 4, &a), 0);
	assert_int_equal(reg(io, 0x104, 4, &b), 0);
	/* Over the end of a into b. */
	memset(d, 0, sizeof(d));
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x103, d, 2, false, 0));
	assert_int_equal(d[0], 0xff);
	assert_int_equal(d[1], 0xff);
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x102, d, 4, true, 0));
	/* Over the end of b into nothing, and from nothing into a. */
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x107, d, 2, false, 0));
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0xff, d, 2, false, 0));
	/* A whole-range access is fine. */
	assert_true(ioreg_dispatch(io, IO_SPACE_PIO, 0x104, d, 4, false, 0));
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 1);
	/* Bad lengths. */
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x100, d, 0, false, 0));
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x100, d, 9, false, 0));
	assert_int_equal(a.calls, 0);
}

static void test_unknown_reads_all_ones(void **state)
{
	struct io_registry *io = *state;
	uint8_t d[8], w[8] = {7, 7, 7, 7, 7, 7, 7, 7};
	static const uint32_t lens[] = {1, 2, 4, 8};

	for (size_t i = 0; i < 4; i++) {
		memset(d, 0, sizeof(d));
		assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x80, d, lens[i],
					    false, 0));
		for (uint32_t j = 0; j < lens[i]; j++)
			assert_int_equal(d[j], 0xff);
		for (uint32_t j = lens[i]; j < 8; j++)
			assert_int_equal(d[j], 0);
	}
	assert_false(
		ioreg_dispatch(io, IO_SPACE_MMIO, 0xfed00000, d, 8, false, 0));
	assert_int_equal(d[7], 0xff);
	/* Writes to nothing leave the buffer alone. */
	assert_false(ioreg_dispatch(io, IO_SPACE_PIO, 0x80, w, 8, true, 0));
	assert_int_equal(w[0], 7);
}

static void test_first_unknown_once(void **state)
{
	struct io_registry *io = *state;

	assert_true(ioreg_first_unknown(io, IO_SPACE_PIO, 0x80));
	assert_false(ioreg_first_unknown(io, IO_SPACE_PIO, 0x80));
	assert_false(ioreg_first_unknown(io, IO_SPACE_PIO, 0x80));
	/* Another space has its own table. */
	assert_true(ioreg_first_unknown(io, IO_SPACE_MMIO, 0x80));
	assert_false(ioreg_first_unknown(io, IO_SPACE_MMIO, 0x80));
	assert_true(ioreg_first_unknown(io, IO_SPACE_PIO, 0x81));
	assert_false(ioreg_first_unknown(io, IO_SPACE_COUNT, 0x82));
}

static void test_first_unknown_table_full(void **state)
{
	struct io_registry *io = *state;

	for (uint64_t a = 0; a < IOREG_MAX_UNKNOWN_LOGGED; a++)
		assert_true(ioreg_first_unknown(io, IO_SPACE_PIO, 0x1000 + a));
	/* Full: new addresses are no longer reported, old ones still not. */
	assert_false(ioreg_first_unknown(io, IO_SPACE_PIO, 0x9999));
	assert_false(ioreg_first_unknown(io, IO_SPACE_PIO, 0x1000));
}

static void test_many_ranges_sorted(void **state)
{
	struct io_registry *io = *state;
	static struct rec r[100];
	uint8_t d;

	/* Out of order, more than the initial capacity. */
	for (int i = 0; i < 100; i++) {
		int k = (i * 37) % 100;

		r[k] = (struct rec){.fill = (uint8_t)k};
		assert_int_equal(
			reg(io, 0x1000 + 0x10 * (uint64_t)k, 0x10, &r[k]), 0);
	}
	assert_int_equal(io->count[IO_SPACE_PIO], 100);
	for (int k = 0; k < 100; k++) {
		uint64_t base = 0x1000 + 0x10 * (uint64_t)k;

		assert_true(ioreg_dispatch(io, IO_SPACE_PIO, base + 0xf, &d, 1,
					   false, 0));
		assert_int_equal(d, k);
		assert_int_equal(r[k].offset, 0xf);
	}
	for (int k = 0; k < 100; k += 2)
		assert_int_equal(ioreg_unregister(io, IO_SPACE_PIO,
						  0x1000 + 0x10 * (uint64_t)k),
				 0);
	for (int k = 0; k < 100; k++)
		assert_int_equal(ioreg_dispatch(io, IO_SPACE_PIO,
						0x1000 + 0x10 * (uint64_t)k, &d,
						1, false, 0),
				 k % 2 == 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_and_overlap,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_adjacent_ranges, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_ranges_rejected, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_spaces_are_separate, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unregister, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dispatch_offset_and_data,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_straddling_access_not_taken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_reads_all_ones,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_unknown_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_first_unknown_table_full,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_ranges_sorted, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
