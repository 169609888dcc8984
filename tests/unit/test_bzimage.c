/*
 * tests/unit/test_bzimage.c - the Linux boot protocol loader: synthetic
 * bzImages built in memory (valid, too old, 32-bit only, truncated at
 * every length, absurd setup_sects, init_size beyond RAM), kernel
 * placement (pref_address, relocation, non-relocatable), initrd placement,
 * and boot_params, GDT and page tables read back from guest memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/guest_mem.h"
#include "machine/bzimage.h"
#include "machine/layout.h"
#include "machine/memmap.h"

#define MiB (1ULL << 20)
#define RAM_SIZE (64 * MiB)
#define SETUP_SECTS 3
#define SETUP_SIZE ((SETUP_SECTS + 1) * 512)
#define KERNEL_SIZE 0x2000
#define IMG_LEN (SETUP_SIZE + KERNEL_SIZE)
#define PREF (16 * MiB)
#define INIT_SIZE (4 * MiB)
#define ALIGN (2 * MiB)
#define HDR_END 0x26c

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint8_t kernel_byte(size_t i)
{
	return (uint8_t)(i * 13 + 5);
}

/* A protocol 2.15 64-bit relocatable bzImage like Debian's. */
static uint8_t *make_image(void)
{
	uint8_t *img = calloc(1, IMG_LEN);

	assert_non_null(img);
	img[BZ_SETUP_SECTS] = SETUP_SECTS;
	put32(img + BZ_SYSSIZE, KERNEL_SIZE / 16);
	put16(img + BZ_BOOT_FLAG, BZ_BOOT_FLAG_MAGIC);
	img[BZ_JUMP] = 0xeb;
	img[BZ_JUMP + 1] = HDR_END - BZ_HEADER;
	put32(img + BZ_HEADER, BZ_HEADER_MAGIC);
	put16(img + BZ_VERSION, 0x020f);
	img[BZ_LOADFLAGS] = BZ_LOADED_HIGH;
	put32(img + BZ_INITRD_ADDR_MAX, 0x7fffffff);
	put32(img + BZ_KERNEL_ALIGNMENT, ALIGN);
	img[BZ_RELOCATABLE] = 1;
	put16(img + BZ_XLOADFLAGS, BZ_XLF_KERNEL_64);
	put32(img + BZ_CMDLINE_SIZE, 2047);
	put64(img + BZ_PREF_ADDRESS, PREF);
	put32(img + BZ_INIT_SIZE, INIT_SIZE);
	for (size_t i = 0; i < KERNEL_SIZE; i++)
		img[SETUP_SIZE + i] = kernel_byte(i);
	return img;
}

static void expect_err(int rc, const struct err *e, int code,
		       const char *phrase)
{
	if (rc != code || e->code != code || !strstr(e->msg, phrase))
		fail_msg("got rc %d, code %d, \"%s\"; want %d and \"%s\"", rc,
			 e->code, e->msg, code, phrase);
}

/* Parse a private copy of exactly @len bytes, so ASan sees overreads. */
static int parse_exact(const uint8_t *img, size_t len, struct bzimage *bz,
		       struct err *e)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, img, len);
	err_clear(e);
	rc = bzimage_parse(copy, len, bz, e);
	free(copy);
	return rc;
}

static void expect_parse_fail(const uint8_t *img, size_t len,
			      const char *phrase)
{
	struct bzimage bz;
	struct err e;

	expect_err(parse_exact(img, len, &bz, &e), &e, -ENOEXEC, phrase);
}

static void parse_ok(const uint8_t *img, struct bzimage *bz)
{
	struct err e;
	int rc = parse_exact(img, IMG_LEN, bz, &e);

	if (rc)
		fail_msg("parse failed: %d \"%s\"", rc, e.msg);
}

/* ---- parsing ----------------------------------------------------------- */

static void test_valid(void **state)
{
	uint8_t *img = make_image();
	struct bzimage bz;

	(void)state;
	assert_true(bzimage_probe(img, IMG_LEN));
	parse_ok(img, &bz);
	assert_int_equal(bz.version, 0x020f);
	assert_int_equal(bz.setup_size, SETUP_SIZE);
	assert_int_equal(bz.hdr_end, HDR_END);
	assert_int_equal(bz.kernel_off, SETUP_SIZE);
	assert_int_equal(bz.kernel_size, KERNEL_SIZE);
	assert_true(bz.relocatable);
	assert_int_equal(bz.kernel_alignment, ALIGN);
	assert_int_equal(bz.pref_address, PREF);
	assert_int_equal(bz.init_size, INIT_SIZE);
	assert_int_equal(bz.cmdline_size, 2047);
	free(img);
}

static void test_probe(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	assert_false(bzimage_probe(NULL, 0));
	assert_false(bzimage_probe(img, 0x1ff));
	img[BZ_BOOT_FLAG] = 0;
	assert_true(bzimage_probe(img, IMG_LEN)); /* "HdrS" is enough */
	put32(img + BZ_HEADER, 0);
	assert_false(bzimage_probe(img, IMG_LEN));
	free(img);
}

static void test_not_bzimage(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	put32(img + BZ_HEADER, 0x12345678);
	expect_parse_fail(img, IMG_LEN, "no \"HdrS\"");
	free(img);
	img = make_image();
	put16(img + BZ_BOOT_FLAG, 0);
	expect_parse_fail(img, IMG_LEN, "no 0xAA55 boot flag");
	free(img);
}

static void test_old_version(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	put16(img + BZ_VERSION, 0x020b);
	expect_parse_fail(img, IMG_LEN, "boot protocol 2.11 is too old");
	put16(img + BZ_VERSION, 0x0200);
	expect_parse_fail(img, IMG_LEN, "2.00 is too old");
	free(img);
}

static void test_32bit_only(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	put16(img + BZ_XLOADFLAGS, BZ_XLF_CAN_BE_LOADED_ABOVE_4G);
	expect_parse_fail(img, IMG_LEN, "32-bit-only kernel");
	free(img);
}

static void test_zimage(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	img[BZ_LOADFLAGS] = 0;
	expect_parse_fail(img, IMG_LEN, "zImage");
	free(img);
}

/* Every prefix of a valid image fails cleanly, never reads past it. */
static void test_truncated_every_length(void **state)
{
	uint8_t *img = make_image();
	struct bzimage bz;
	struct err e;

	(void)state;
	for (size_t len = 0; len < IMG_LEN; len++) {
		int rc = parse_exact(img, len, &bz, &e);

		if (rc != -ENOEXEC || !e.msg[0])
			fail_msg("length %zu: rc %d \"%s\"", len, rc, e.msg);
		if (len >= BZ_BOOT_FLAG + 2 && !strstr(e.msg, "truncated"))
			fail_msg("length %zu: \"%s\" does not say truncated",
				 len, e.msg);
	}
	assert_int_equal(parse_exact(img, IMG_LEN, &bz, &e), 0);
	free(img);
}

static void test_setup_sects_absurd(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	img[BZ_SETUP_SECTS] = 255;
	expect_parse_fail(img, IMG_LEN, "setup_sects 255 is absurd");
	img[BZ_SETUP_SECTS] = 64;
	expect_parse_fail(img, IMG_LEN, "setup_sects 64 is absurd");
	img[BZ_SETUP_SECTS] = 20; /* plausible but past the end of the file */
	expect_parse_fail(img, IMG_LEN, "truncated");
	free(img);
}

static void test_header_fields_absurd(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	img[BZ_JUMP + 1] = 0x10; /* header would end at 0x212 */
	expect_parse_fail(img, IMG_LEN, "setup header ends at 0x212");
	img[BZ_JUMP + 1] = 0xff; /* 0x301: past boot_params.hdr */
	expect_parse_fail(img, IMG_LEN, "setup header ends at 0x301");
	free(img);
	img = make_image();
	put32(img + BZ_SYSSIZE, 0);
	expect_parse_fail(img, IMG_LEN, "syssize 0");
	put32(img + BZ_SYSSIZE, 0xffffffff);
	expect_parse_fail(img, IMG_LEN, "truncated");
	free(img);
	img = make_image();
	put32(img + BZ_KERNEL_ALIGNMENT, 3 * MiB);
	expect_parse_fail(img, IMG_LEN, "kernel_alignment 0x300000");
	put32(img + BZ_KERNEL_ALIGNMENT, 0);
	expect_parse_fail(img, IMG_LEN, "kernel_alignment 0x0");
	free(img);
	img = make_image();
	put32(img + BZ_INIT_SIZE, KERNEL_SIZE - 1);
	expect_parse_fail(img, IMG_LEN, "init_size 0x1fff is smaller");
	free(img);
}

/* Random header bytes: parse never crashes, accepts or fails cleanly. */
static void test_mutations(void **state)
{
	uint8_t *img = make_image();
	struct bzimage bz;
	struct err e;

	(void)state;
	srand(7);
	for (int i = 0; i < 20000; i++) {
		uint8_t *m = malloc(IMG_LEN);
		int rc;

		assert_non_null(m);
		memcpy(m, img, IMG_LEN);
		for (int j = 0; j < 4; j++)
			m[BZ_SETUP_SECTS + rand() % (HDR_END - 0x1f1)] =
				(uint8_t)rand();
		rc = parse_exact(m, IMG_LEN, &bz, &e);
		assert_true(rc == 0 || (rc == -ENOEXEC && e.msg[0]));
		if (rc == 0)
			assert_true(bz.kernel_off + bz.kernel_size <= IMG_LEN);
		free(m);
	}
	free(img);
}

/* ---- placement --------------------------------------------------------- */

static void place(uint8_t *img, uint64_t ram, int want_rc, uint64_t want)
{
	struct guest_mem m;
	struct bzimage bz;
	struct err e;
	uint64_t gpa = 1;
	int rc;

	parse_ok(img, &bz);
	assert_int_equal(guest_mem_layout(&m, ram), 0);
	err_clear(&e);
	rc = bzimage_place_kernel(&m, &bz, &gpa, &e);
	if (rc != want_rc)
		fail_msg("rc %d \"%s\", want %d", rc, e.msg, want_rc);
	if (rc == 0)
		assert_int_equal(gpa, want);
	else
		expect_err(rc, &e, -ERANGE, "kernel needs 4 MiB of RAM");
}

static void test_place_pref_address(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	place(img, RAM_SIZE, 0, PREF);
	free(img);
}

static void test_place_relocatable(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	/* Unaligned preference: the next aligned address. */
	put64(img + BZ_PREF_ADDRESS, PREF + 0x1000);
	place(img, RAM_SIZE, 0, PREF + ALIGN);
	/* Below 1 MiB: the first aligned address above it. */
	put64(img + BZ_PREF_ADDRESS, 0x1000);
	place(img, RAM_SIZE, 0, ALIGN);
	/* Preference beyond RAM: relocated low. */
	put64(img + BZ_PREF_ADDRESS, 1ULL << 40);
	place(img, RAM_SIZE, 0, ALIGN);
	put64(img + BZ_PREF_ADDRESS, 61 * MiB); /* 62 MiB + 4 MiB: too high */
	place(img, RAM_SIZE, 0, ALIGN);
	/* Fits exactly at the preference, at the top of RAM. */
	put64(img + BZ_PREF_ADDRESS, RAM_SIZE - INIT_SIZE);
	place(img, RAM_SIZE, 0, RAM_SIZE - INIT_SIZE);
	/* RAM too small anywhere. */
	place(img, 4 * MiB, -ERANGE, 0);
	free(img);
}

static void test_place_not_relocatable(void **state)
{
	uint8_t *img = make_image();

	(void)state;
	img[BZ_RELOCATABLE] = 0;
	put32(img + BZ_KERNEL_ALIGNMENT, 0); /* ignored when not relocatable */
	place(img, RAM_SIZE, 0, PREF);
	put64(img + BZ_PREF_ADDRESS, 0); /* no preference: 1 MiB */
	place(img, RAM_SIZE, 0, LAYOUT_HIMEM);
	put64(img + BZ_PREF_ADDRESS, PREF + 0x1000); /* exactly there */
	place(img, RAM_SIZE, 0, PREF + 0x1000);
	put64(img + BZ_PREF_ADDRESS, 62 * MiB); /* does not fit: refused */
	place(img, RAM_SIZE, -ERANGE, 0);
	put64(img + BZ_PREF_ADDRESS, 0x1000); /* below 1 MiB: refused */
	place(img, RAM_SIZE, -ERANGE, 0);
	free(img);
}

static void test_init_size_beyond_ram(void **state)
{
	uint8_t *img = make_image();
	struct guest_mem m;
	struct bzimage bz;
	struct err e;
	uint64_t gpa;

	(void)state;
	put32(img + BZ_INIT_SIZE, 0xf0000000);
	parse_ok(img, &bz);
	assert_int_equal(guest_mem_layout(&m, 4096 * MiB), 0);
	expect_err(bzimage_place_kernel(&m, &bz, &gpa, &e), &e, -ERANGE,
		   "kernel needs 3840 MiB of RAM");
	free(img);
}

static void test_load(void **state)
{
	uint8_t *img = make_image();
	struct guest_mem m;
	struct bzimage bz;
	struct err e;
	uint64_t gpa;
	uint8_t *g;

	(void)state;
	parse_ok(img, &bz);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	assert_int_equal(bzimage_place_kernel(&m, &bz, &gpa, &e), 0);
	g = guest_mem_ptr(&m, gpa, INIT_SIZE + 1);
	assert_non_null(g);
	memset(g, 0xAA, INIT_SIZE + 1);
	assert_int_equal(bzimage_load(&m, img, &bz, gpa, &e), 0);
	for (size_t i = 0; i < KERNEL_SIZE; i++)
		assert_int_equal(g[i], kernel_byte(i));
	for (size_t i = KERNEL_SIZE; i < INIT_SIZE; i++)
		assert_int_equal(g[i], 0);
	assert_int_equal(g[INIT_SIZE], 0xAA);
	expect_err(bzimage_load(&m, img, &bz, RAM_SIZE - MiB, &e), &e, -ERANGE,
		   "kernel needs");
	guest_mem_free(&m);
	free(img);
}

static void test_initrd(void **state)
{
	uint8_t *img = make_image();
	uint64_t kend = PREF + INIT_SIZE, gpa;
	struct guest_mem m;
	struct bzimage bz;
	struct err e;

	(void)state;
	parse_ok(img, &bz);
	assert_int_equal(guest_mem_layout(&m, RAM_SIZE), 0);
	assert_int_equal(bzimage_place_initrd(&m, &bz, kend, 5000, &gpa, &e),
			 0);
	assert_int_equal(gpa, RAM_SIZE - 0x2000); /* page aligned, at top */
	assert_int_equal(
		bzimage_place_initrd(&m, &bz, kend, RAM_SIZE - kend, &gpa, &e),
		0);
	assert_int_equal(gpa, kend);
	expect_err(bzimage_place_initrd(&m, &bz, kend, RAM_SIZE - kend + 1,
					&gpa, &e),
		   &e, -ENOSPC, "does not fit in guest RAM: 44 MiB free");
	expect_err(bzimage_place_initrd(&m, &bz, kend, 0, &gpa, &e), &e,
		   -EINVAL, "empty");
	/* 3 GiB of low RAM: initrd_addr_max (2 GiB) caps the top... */
	assert_int_equal(guest_mem_layout(&m, 4096 * MiB), 0);
	assert_int_equal(bzimage_place_initrd(&m, &bz, kend, MiB, &gpa, &e), 0);
	assert_int_equal(gpa, 0x80000000ULL - MiB);
	/* ...unless the kernel takes an initrd anywhere below 4 GiB. */
	put16(img + BZ_XLOADFLAGS,
	      BZ_XLF_KERNEL_64 | BZ_XLF_CAN_BE_LOADED_ABOVE_4G);
	parse_ok(img, &bz);
	assert_int_equal(bzimage_place_initrd(&m, &bz, kend, MiB, &gpa, &e), 0);
	assert_int_equal(gpa, GUEST_MMIO_HOLE_START - MiB);
	free(img);
}

/* ---- boot_params and tables ------------------------------------------- */

static void check_e820(const struct guest_mem *m, const uint8_t *bp)
{
	struct memmap_entry map[MEMMAP_MAX];
	int n = memmap_build(m, map);

	assert_int_equal(bp[BP_E820_ENTRIES], n);
	for (int i = 0; i < n; i++) {
		const uint8_t *ent = bp + BP_E820_TABLE + i * 20;

		assert_int_equal(get64(ent), map[i].addr);
		assert_int_equal(get64(ent + 8), map[i].size);
		assert_int_equal(get32(ent + 16), map[i].type);
	}
}

static void test_boot_params(void **state)
{
	uint8_t *img = make_image(), bp[BP_SIZE];
	struct bzimage_boot_args a = {.cmdline = "console=ttyS0 quiet",
				      .kernel_gpa = PREF,
				      .initrd_gpa = 60 * MiB,
				      .initrd_size = 12345,
				      .rsdp_gpa = LAYOUT_ACPI_BASE};
	struct guest_mem m;
	struct bzimage bz;
	struct err e;
	char cmd[64];

	(void)state;
	parse_ok(img, &bz);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	assert_int_equal(bzimage_write_boot_params(&m, img, &bz, &a, &e), 0);
	assert_int_equal(guest_mem_read(&m, LAYOUT_ZERO_PAGE, bp, BP_SIZE), 0);
	/* The file's header is copied, then the loader's fields. */
	assert_memory_equal(bp + BZ_HEADER, img + BZ_HEADER, 4);
	assert_int_equal(get64(bp + BZ_PREF_ADDRESS), PREF);
	assert_int_equal(get32(bp + BZ_INIT_SIZE), INIT_SIZE);
	assert_int_equal(bp[BZ_TYPE_OF_LOADER], 0xff);
	assert_int_equal(bp[BZ_LOADFLAGS], BZ_LOADED_HIGH | BZ_CAN_USE_HEAP);
	assert_int_equal(get32(bp + BZ_CMD_LINE_PTR), LAYOUT_LINUX_CMDLINE);
	assert_int_equal(get32(bp + BZ_RAMDISK_IMAGE), 60 * MiB);
	assert_int_equal(get32(bp + BZ_RAMDISK_SIZE), 12345);
	assert_int_equal(get32(bp + BP_EXT_RAMDISK_IMAGE), 0);
	assert_int_equal(get64(bp + BP_ACPI_RSDP_ADDR), LAYOUT_ACPI_BASE);
	assert_int_equal(bp[0x1ef], 0); /* sentinel */
	for (int i = 0; i < BP_ACPI_RSDP_ADDR; i++)
		assert_int_equal(bp[i], 0); /* screen_info etc. stay zero */
	for (int i = HDR_END; i < BP_E820_TABLE; i++)
		assert_int_equal(bp[i], 0);
	check_e820(&m, bp);
	assert_int_equal(
		guest_mem_read(&m, LAYOUT_LINUX_CMDLINE, cmd, sizeof(cmd)), 0);
	assert_string_equal(cmd, "console=ttyS0 quiet");
	guest_mem_free(&m);
	free(img);
}

static void test_cmdline_limits(void **state)
{
	uint8_t *img = make_image();
	struct bzimage_boot_args a = {.kernel_gpa = PREF};
	struct guest_mem m;
	struct bzimage bz;
	struct err e;
	char *big = malloc(LAYOUT_LINUX_CMDLINE_MAX + 1);

	(void)state;
	assert_non_null(big);
	put32(img + BZ_CMDLINE_SIZE, 100);
	parse_ok(img, &bz);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	memset(big, 'x', 100);
	big[100] = 0;
	a.cmdline = big;
	assert_int_equal(bzimage_write_boot_params(&m, img, &bz, &a, &e), 0);
	big[100] = 'x';
	big[101] = 0;
	expect_err(bzimage_write_boot_params(&m, img, &bz, &a, &e), &e, -E2BIG,
		   "101 bytes; this kernel takes at most 100");
	memset(big, 'x', LAYOUT_LINUX_CMDLINE_MAX);
	big[LAYOUT_LINUX_CMDLINE_MAX] = 0;
	put32(img + BZ_CMDLINE_SIZE, 0xffffffff);
	parse_ok(img, &bz);
	expect_err(bzimage_write_boot_params(&m, img, &bz, &a, &e), &e, -E2BIG,
		   "at most 4095");
	a.cmdline = NULL; /* none: an empty string */
	assert_int_equal(bzimage_write_boot_params(&m, img, &bz, &a, &e), 0);
	a.initrd_gpa = RAM_SIZE - 10;
	a.initrd_size = 100;
	expect_err(bzimage_write_boot_params(&m, img, &bz, &a, &e), &e, -EINVAL,
		   "not inside guest RAM");
	guest_mem_free(&m);
	free(big);
	free(img);
}

static void test_boot_tables(void **state)
{
	struct guest_mem m;
	struct err e;
	uint64_t gdt[4], pml4[512], pdpt[512], pd[512];

	(void)state;
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	assert_int_equal(bzimage_write_boot_tables(&m, &e), 0);
	assert_int_equal(guest_mem_read(&m, LAYOUT_BOOT_GDT, gdt, sizeof(gdt)),
			 0);
	assert_int_equal(gdt[0], 0);
	assert_true(gdt[2] & (1ULL << 53)); /* 0x10: L (64-bit code) */
	assert_int_equal((gdt[2] >> 40) & 0x9a, 0x9a); /* present code */
	assert_int_equal((gdt[3] >> 40) & 0x92, 0x92); /* present data */
	guest_mem_read(&m, LAYOUT_BOOT_PML4, pml4, sizeof(pml4));
	guest_mem_read(&m, LAYOUT_BOOT_PDPT, pdpt, sizeof(pdpt));
	assert_int_equal(pml4[0], LAYOUT_BOOT_PDPT | 3);
	assert_int_equal(pml4[1], 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pdpt[i], (LAYOUT_BOOT_PD + i * 0x1000) | 3);
		guest_mem_read(&m, LAYOUT_BOOT_PD + i * 0x1000, pd, sizeof(pd));
		for (int j = 0; j < 512; j++)
			assert_int_equal(pd[j], ((uint64_t)i << 30) +
							((uint64_t)j << 21) +
							0x83);
	}
	assert_int_equal(pdpt[4], 0);
	guest_mem_free(&m);
	assert_int_equal(guest_mem_alloc(&m, 16 * MiB), 0);
	assert_int_equal(bzimage_write_boot_tables(&m, &e), 0);
	guest_mem_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_not_bzimage),
		cmocka_unit_test(test_old_version),
		cmocka_unit_test(test_32bit_only),
		cmocka_unit_test(test_zimage),
		cmocka_unit_test(test_truncated_every_length),
		cmocka_unit_test(test_setup_sects_absurd),
		cmocka_unit_test(test_header_fields_absurd),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_place_pref_address),
		cmocka_unit_test(test_place_relocatable),
		cmocka_unit_test(test_place_not_relocatable),
		cmocka_unit_test(test_init_size_beyond_ram),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_initrd),
		cmocka_unit_test(test_boot_params),
		cmocka_unit_test(test_cmdline_limits),
		cmocka_unit_test(test_boot_tables),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
