/*
 * tests/unit/test_pvh.c - the PVH loader: ELF64 and ELF32 kernels built in
 * memory, parsed and loaded into a small guest; every kind of malformed
 * or hostile file rejected with the right code and message; initrd
 * placement; hvm_start_info read back from guest memory; read_whole_file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/guest_mem.h"
#include "machine/layout.h"
#include "machine/memmap.h"
#include "machine/pvh.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define RAM_SIZE (32 * MiB)

/* Image layout: headers, program headers, note at NOTE_OFF, code last. */
#define IMG_CAP 0x1000
#define PH_MAX 24
#define NOTE_OFF 0x800
#define NOTE_SIZE 20 /* 12-byte header, "Xen\0", 4-byte desc */
#define CODE_OFF 0x900
#define CODE_SIZE 0x100
#define BSS_SIZE 0x200
#define LOAD_ADDR 0x100000ULL
#define ENTRY (LOAD_ADDR + 0x10)

struct tph {
	uint32_t type;
	uint64_t off, paddr, filesz, memsz, align;
};

/* A test ELF: every field a test may want to break, then serialize(). */
struct telf {
	bool is64;
	uint8_t magic[4];
	uint8_t cls, data, version;
	uint16_t type, machine, phentsize, phnum;
	uint64_t phoff;
	int nph;
	struct tph ph[PH_MAX];
	char note_name[4];
	uint32_t namesz, descsz, note_type;
	uint64_t note_desc;
	size_t len;
	uint8_t img[IMG_CAP];
};

static uint8_t code_byte(size_t i)
{
	return (uint8_t)(i * 7 + 1);
}

static void telf_init(struct telf *t, bool is64)
{
	memset(t, 0, sizeof(*t));
	t->is64 = is64;
	memcpy(t->magic, ELFMAG, SELFMAG);
	t->cls = is64 ? ELFCLASS64 : ELFCLASS32;
	t->data = ELFDATA2LSB;
	t->version = EV_CURRENT;
	t->type = ET_EXEC;
	t->machine = is64 ? EM_X86_64 : EM_386;
	t->phentsize = is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	t->phoff = is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
	t->nph = 2;
	t->phnum = 2;
	t->ph[0] = (struct tph){
		PT_LOAD, CODE_OFF, LOAD_ADDR, CODE_SIZE, CODE_SIZE + BSS_SIZE,
		0x1000};
	t->ph[1] = (struct tph){PT_NOTE, NOTE_OFF, 0, NOTE_SIZE, NOTE_SIZE, 4};
	memcpy(t->note_name, "Xen", 4);
	t->namesz = 4;
	t->descsz = 4;
	t->note_type = 18;
	t->note_desc = ENTRY;
	t->len = CODE_OFF + CODE_SIZE;
}

static void put_ehdr(struct telf *t)
{
	if (t->is64) {
		Elf64_Ehdr h = {.e_type = t->type,
				.e_machine = t->machine,
				.e_version = EV_CURRENT,
				.e_entry = 0xffffffff81000000ULL,
				.e_phoff = t->phoff,
				.e_ehsize = sizeof(h),
				.e_phentsize = t->phentsize,
				.e_phnum = t->phnum};

		memcpy(t->img, &h, sizeof(h));
	} else {
		Elf32_Ehdr h = {.e_type = t->type,
				.e_machine = t->machine,
				.e_version = EV_CURRENT,
				.e_entry = 0xc1000000U,
				.e_phoff = (uint32_t)t->phoff,
				.e_ehsize = sizeof(h),
				.e_phentsize = t->phentsize,
				.e_phnum = t->phnum};

		memcpy(t->img, &h, sizeof(h));
	}
	memcpy(t->img, t->magic, 4);
	t->img[EI_CLASS] = t->cls;
	t->img[EI_DATA] = t->data;
	t->img[EI_VERSION] = t->version;
}

static void put_phdr(struct telf *t, int i)
{
	const struct tph *p = &t->ph[i];
	size_t sz = t->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	uint64_t at = t->phoff + (uint64_t)i * sz;

	if (t->phoff > IMG_CAP || at + sz > NOTE_OFF)
		return; /* a test pointed the table elsewhere on purpose */
	if (t->is64) {
		Elf64_Phdr h = {.p_type = p->type,
				.p_offset = p->off,
				.p_vaddr = p->paddr,
				.p_paddr = p->paddr,
				.p_filesz = p->filesz,
				.p_memsz = p->memsz,
				.p_align = p->align};

		memcpy(t->img + at, &h, sz);
	} else {
		Elf32_Phdr h = {.p_type = p->type,
				.p_offset = (uint32_t)p->off,
				.p_vaddr = (uint32_t)p->paddr,
				.p_paddr = (uint32_t)p->paddr,
				.p_filesz = (uint32_t)p->filesz,
				.p_memsz = (uint32_t)p->memsz,
				.p_align = (uint32_t)p->align};

		memcpy(t->img + at, &h, sz);
	}
}

static void put_note(struct telf *t)
{
	uint8_t *n = t->img + NOTE_OFF;
	size_t dlen = t->descsz < 8 ? t->descsz : 8;

	memcpy(n, &t->namesz, 4);
	memcpy(n + 4, &t->descsz, 4);
	memcpy(n + 8, &t->note_type, 4);
	memcpy(n + 12, t->note_name, 4);
	memcpy(n + 16, &t->note_desc, dlen);
}

static void serialize(struct telf *t)
{
	memset(t->img, 0, sizeof(t->img));
	put_ehdr(t);
	for (int i = 0; i < t->nph; i++)
		put_phdr(t, i);
	put_note(t);
	for (size_t i = 0; i < CODE_SIZE; i++)
		t->img[CODE_OFF + i] = code_byte(i);
}

/* Parse from an exact-size heap copy so ASan sees any over-read. */
static int parse_exact(const uint8_t *img, size_t len, struct pvh_kernel *k,
		       struct err *e)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, img, len);
	err_clear(e);
	rc = pvh_parse(copy, len, k, e);
	free(copy);
	return rc;
}

static void expect_err(int rc, const struct err *e, int code,
		       const char *phrase)
{
	if (rc != code || e->code != code || !strstr(e->msg, phrase))
		fail_msg("got rc %d, code %d, \"%s\"; want %d and \"%s\"", rc,
			 e->code, e->msg, code, phrase);
}

static void expect_parse_fail(struct telf *t, const char *phrase)
{
	struct pvh_kernel k;
	struct err e;
	int rc;

	serialize(t);
	rc = parse_exact(t->img, t->len, &k, &e);
	expect_err(rc, &e, -ENOEXEC, phrase);
}

static void parse_ok(struct telf *t, struct pvh_kernel *k)
{
	struct err e;
	int rc;

	serialize(t);
	rc = parse_exact(t->img, t->len, k, &e);
	if (rc)
		fail_msg("parse failed: %d \"%s\"", rc, e.msg);
}

/* ---- valid kernels ---------------------------------------------------- */

static void check_default_kernel(const struct pvh_kernel *k)
{
	assert_int_equal(k->entry, ENTRY);
	assert_int_equal(k->nsegs, 1);
	assert_int_equal(k->load_start, LOAD_ADDR);
	assert_int_equal(k->load_end, LOAD_ADDR + CODE_SIZE + BSS_SIZE);
	assert_int_equal(k->seg[0].file_off, CODE_OFF);
	assert_int_equal(k->seg[0].filesz, CODE_SIZE);
	assert_int_equal(k->seg[0].memsz, CODE_SIZE + BSS_SIZE);
}

static void load_and_check(struct telf *t)
{
	struct guest_mem m;
	struct pvh_kernel k;
	struct err e;
	uint8_t *g;

	parse_ok(t, &k);
	check_default_kernel(&k);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	g = guest_mem_ptr(&m, LOAD_ADDR, 0x1000);
	assert_non_null(g);
	memset(g, 0xAA, 0x1000);
	assert_int_equal(pvh_load(&m, t->img, t->len, &k, &e), 0);
	for (size_t i = 0; i < CODE_SIZE; i++)
		assert_int_equal(g[i], code_byte(i));
	for (size_t i = CODE_SIZE; i < CODE_SIZE + BSS_SIZE; i++)
		assert_int_equal(g[i], 0);
	assert_int_equal(g[CODE_SIZE + BSS_SIZE], 0xAA); /* past memsz */
	guest_mem_free(&m);
}

static void test_elf64_parse_load(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	load_and_check(&t);
}

static void test_elf32_parse_load(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, false);
	load_and_check(&t);
}

static void test_note_desc_8_bytes(void **state)
{
	struct telf t;
	struct pvh_kernel k;

	(void)state;
	telf_init(&t, true);
	t.descsz = 8;
	t.ph[1].filesz = 24;
	parse_ok(&t, &k);
	assert_int_equal(k.entry, ENTRY);

	t.note_desc = 0x100000000ULL | ENTRY;
	expect_parse_fail(&t, "above 4 GiB");
}

static void test_note_desc_bad_size(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.descsz = 2;
	expect_parse_fail(&t, "2-byte descriptor");
}

/* The Xen note after another note (namesz 5 -> padded to 8). */
static void test_note_after_other_note(void **state)
{
	struct telf t;
	struct pvh_kernel k;
	uint8_t other[12 + 8 + 4] = {0};
	uint32_t w[3] = {5, 4, 1};

	(void)state;
	telf_init(&t, true);
	serialize(&t);
	memcpy(other, w, sizeof(w));
	memcpy(other + 12, "Linux", 5);
	/* Shift the Xen note after the other one, inside NOTE_OFF..CODE_OFF. */
	memmove(t.img + NOTE_OFF + sizeof(other), t.img + NOTE_OFF, NOTE_SIZE);
	memcpy(t.img + NOTE_OFF, other, sizeof(other));
	t.ph[1].filesz = sizeof(other) + NOTE_SIZE;
	/* Rewrite only the program headers; keep the hand-made notes. */
	for (int i = 0; i < t.nph; i++)
		put_phdr(&t, i);
	assert_int_equal(parse_exact(t.img, t.len, &k, &(struct err){0}), 0);
	assert_int_equal(k.entry, ENTRY);
}

static void test_max_segments_ok(void **state)
{
	struct telf t;
	struct pvh_kernel k;

	(void)state;
	telf_init(&t, true);
	for (int i = 2; i < PVH_MAX_SEGMENTS + 1; i++)
		t.ph[i] = (struct tph){PT_LOAD, 0,	LOAD_ADDR + i * MiB,
				       0,	0x1000, 0x1000};
	t.nph = PVH_MAX_SEGMENTS + 1;
	t.phnum = (uint16_t)t.nph;
	parse_ok(&t, &k);
	assert_int_equal(k.nsegs, PVH_MAX_SEGMENTS);
	assert_int_equal(k.load_end,
			 LOAD_ADDR + PVH_MAX_SEGMENTS * MiB + 0x1000);
}

/* ---- malformed files -------------------------------------------------- */

static void test_empty_and_tiny(void **state)
{
	struct pvh_kernel k;
	struct err e;
	const uint8_t three[3] = {0x7f, 'E', 'L'};

	(void)state;
	expect_err(parse_exact(three, 0, &k, &e), &e, -ENOEXEC,
		   "not an ELF file");
	expect_err(parse_exact(three, 3, &k, &e), &e, -ENOEXEC,
		   "not an ELF file");
	err_clear(&e);
	expect_err(pvh_parse(NULL, 0, &k, &e), &e, -ENOEXEC, "not an ELF file");
}

static void test_bad_magic(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.magic[1] = 'X';
	expect_parse_fail(&t, "not an ELF file");
}

static void test_bad_class(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.cls = ELFCLASSNONE;
	expect_parse_fail(&t, "unsupported ELF class 0");
	t.cls = 3;
	expect_parse_fail(&t, "unsupported ELF class 3");
}

static void test_big_endian(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.data = ELFDATA2MSB;
	expect_parse_fail(&t, "big-endian");
	t.data = 7;
	expect_parse_fail(&t, "data encoding");
}

static void test_bad_version(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.version = 2;
	expect_parse_fail(&t, "ELF version 2");
}

static void test_wrong_machine(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.machine = EM_AARCH64;
	expect_parse_fail(&t, "not an x86 ELF");
	telf_init(&t, false);
	t.machine = EM_X86_64; /* x32-style: ELF32 for x86-64 */
	expect_parse_fail(&t, "not an x86 ELF");
	telf_init(&t, true);
	t.machine = EM_386;
	expect_parse_fail(&t, "not an x86 ELF");
}

static void test_wrong_type(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.type = ET_DYN;
	expect_parse_fail(&t, "ET_DYN");
	t.type = ET_REL;
	expect_parse_fail(&t, "not an executable");
}

/* No prefix of a valid image parses; none crashes or over-reads. */
static void truncate_all(bool is64)
{
	struct telf t;
	struct pvh_kernel k;
	struct err e;

	telf_init(&t, is64);
	serialize(&t);
	for (size_t len = 0; len < t.len; len++) {
		int rc = parse_exact(t.img, len, &k, &e);

		if (rc != -ENOEXEC || e.msg[0] == '\0')
			fail_msg("length %zu: rc %d \"%s\"", len, rc, e.msg);
	}
	assert_int_equal(parse_exact(t.img, t.len, &k, &e), 0);
}

static void test_truncated_elf64(void **state)
{
	struct telf t;
	struct pvh_kernel k;
	struct err e;

	(void)state;
	truncate_all(true);
	telf_init(&t, true);
	serialize(&t);
	expect_err(parse_exact(t.img, 40, &k, &e), &e, -ENOEXEC,
		   "header needs 64 bytes, file is 40 bytes");
	expect_err(parse_exact(t.img, 100, &k, &e), &e, -ENOEXEC,
		   "program headers end at 176, file is 100 bytes");
	expect_err(parse_exact(t.img, CODE_OFF + 1, &k, &e), &e, -ENOEXEC,
		   "extend past the end of the file");
}

static void test_truncated_elf32(void **state)
{
	(void)state;
	truncate_all(false);
}

static void test_phoff_past_end(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.phoff = t.len + 8;
	expect_parse_fail(&t, "past the end of the file");
	t.phoff = UINT64_MAX - 8;
	expect_parse_fail(&t, "past the end of the file");
	t.phoff = t.len - 8; /* starts inside, ends outside */
	expect_parse_fail(&t, "truncated (program headers end at");
}

static void test_phnum_huge(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.phnum = 0xfffe;
	expect_parse_fail(&t, "truncated (program headers end at");
	t.phnum = PN_XNUM;
	expect_parse_fail(&t, "too many program headers");
	t.phnum = 0;
	expect_parse_fail(&t, "no program headers");
}

static void test_phentsize_wrong(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.phentsize = 32;
	expect_parse_fail(&t, "program header size 32 is wrong (expected 56)");
	telf_init(&t, false);
	t.phentsize = 56;
	expect_parse_fail(&t, "program header size 56 is wrong (expected 32)");
}

static void test_load_past_eof(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].filesz = CODE_SIZE + 1;
	expect_parse_fail(&t, "extend past the end of the file");
	telf_init(&t, true);
	t.ph[0].off = UINT64_MAX - 0x10; /* offset + filesz wraps */
	expect_parse_fail(&t, "extend past the end of the file");
}

static void test_filesz_gt_memsz(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].memsz = CODE_SIZE - 1;
	expect_parse_fail(&t, "larger than its memory size");
}

static void test_paddr_wraps(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].paddr = UINT64_MAX - 0x100;
	expect_parse_fail(&t, "wraps past 2^64");
	telf_init(&t, true);
	t.ph[0].memsz = UINT64_MAX;
	expect_parse_fail(&t, "wraps past 2^64");
}

static void test_overlapping_segments(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[2] = (struct tph){PT_LOAD, 0,	LOAD_ADDR + CODE_SIZE,
			       0,	0x1000, 0x1000};
	t.nph = t.phnum = 3;
	expect_parse_fail(&t, "PT_LOAD segments overlap");
	/* Touching (end == start) is fine. */
	t.ph[2].paddr = LOAD_ADDR + CODE_SIZE + BSS_SIZE;
	serialize(&t);
	assert_int_equal(parse_exact(t.img, t.len, &(struct pvh_kernel){0},
				     &(struct err){0}),
			 0);
}

static void test_too_many_segments(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	for (int i = 2; i < PVH_MAX_SEGMENTS + 2; i++)
		t.ph[i] = (struct tph){PT_LOAD, 0,	LOAD_ADDR + i * MiB,
				       0,	0x1000, 0x1000};
	t.nph = PVH_MAX_SEGMENTS + 2;
	t.phnum = (uint16_t)t.nph;
	expect_parse_fail(&t, "too many PT_LOAD segments (more than 16)");
}

static void test_no_load(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].type = PT_NULL;
	expect_parse_fail(&t, "no PT_LOAD segments");
}

static void test_no_note(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.nph = t.phnum = 1;
	expect_parse_fail(&t, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
}

static void test_note_sizes_overflow(void **state)
{
	const uint32_t bad[] = {5, 8, 100, 0x7fffffff, 0xfffffffd, 0xffffffff};
	struct telf t;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		telf_init(&t, true);
		t.namesz = bad[i];
		expect_parse_fail(&t, "malformed note");
		telf_init(&t, false);
		t.descsz = bad[i];
		expect_parse_fail(&t, "malformed note");
	}
	/* The segment itself past the end of the file. */
	telf_init(&t, true);
	t.ph[1].filesz = IMG_CAP;
	expect_parse_fail(&t, "PT_NOTE segment 1");
}

static void test_note_wrong_name_or_type(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	memcpy(t.note_name, "Xem", 4);
	expect_parse_fail(&t, "no PVH entry note");
	telf_init(&t, true);
	t.namesz = 3; /* "Xen" without its NUL */
	expect_parse_fail(&t, "no PVH entry note");
	telf_init(&t, true);
	t.note_type = 17;
	expect_parse_fail(&t, "no PVH entry note");
}

static void test_entry_outside(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.note_desc = LOAD_ADDR - 1;
	expect_parse_fail(&t, "entry point 0xfffff is outside the loaded");
	t.note_desc = LOAD_ADDR + CODE_SIZE; /* in bss: not from the file */
	expect_parse_fail(&t, "is outside the loaded segments");
}

/* Random corruption of the headers and notes: nothing may crash. */
static void test_mutations(void **state)
{
	struct guest_mem m;
	struct telf t;
	uint64_t seed = 0x243f6a8885a308d3ULL;

	(void)state;
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	for (int iter = 0; iter < 20000; iter++) {
		struct pvh_kernel k;
		struct err e;
		int nflip = 1 + iter % 4;

		telf_init(&t, iter & 1);
		serialize(&t);
		for (int i = 0; i < nflip; i++) {
			seed = seed * 6364136223846793005ULL +
			       1442695040888963407ULL;
			size_t at = (seed >> 33) % (NOTE_OFF + NOTE_SIZE);

			if (at >= 0x100 && at < NOTE_OFF)
				at = at % 0x100;
			t.img[at] = (uint8_t)(seed >> 17);
		}
		if (parse_exact(t.img, t.len, &k, &e) == 0)
			pvh_load(&m, t.img, t.len, &k, &e);
	}
	guest_mem_free(&m);
}

/* ---- loading into guest RAM ------------------------------------------- */

static void expect_load_fail(struct telf *t, const char *phrase)
{
	struct guest_mem m;
	struct pvh_kernel k;
	struct err e;

	parse_ok(t, &k);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	err_clear(&e);
	expect_err(pvh_load(&m, t->img, t->len, &k, &e), &e, -ERANGE, phrase);
	guest_mem_free(&m);
}

static void test_segment_below_1m(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].paddr = 0x80000;
	t.note_desc = 0x80010;
	expect_load_fail(&t,
			 "kernel segment 0x80000-0x80300 starts below 1 MiB");
}

static void test_segment_beyond_ram(void **state)
{
	struct telf t;

	(void)state;
	telf_init(&t, true);
	t.ph[0].paddr = RAM_SIZE - 0x100;
	t.note_desc = RAM_SIZE - 0xf0;
	expect_load_fail(&t, "kernel segment 0x1ffff00-0x2000200 does not "
			     "fit in guest RAM (32 MiB)");
	telf_init(&t, true);
	t.ph[0].paddr = 3 * GiB + 0x1000; /* in the MMIO hole */
	t.note_desc = 3 * GiB + 0x1010;
	expect_load_fail(&t, "does not fit in guest RAM (32 MiB)");
}

/* A bad second segment stops the load before the first is copied. */
static void test_load_checks_before_copy(void **state)
{
	struct guest_mem m;
	struct telf t;
	struct pvh_kernel k;
	struct err e;
	uint8_t *g;

	(void)state;
	telf_init(&t, true);
	t.ph[2] = (struct tph){PT_LOAD, 0, RAM_SIZE, 0, 0x1000, 0x1000};
	t.nph = t.phnum = 3;
	parse_ok(&t, &k);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	g = guest_mem_ptr(&m, LOAD_ADDR, CODE_SIZE);
	memset(g, 0xAA, CODE_SIZE);
	expect_err(pvh_load(&m, t.img, t.len, &k, &e), &e, -ERANGE,
		   "does not fit in guest RAM");
	for (size_t i = 0; i < CODE_SIZE; i++)
		assert_int_equal(g[i], 0xAA);
	guest_mem_free(&m);
}

static void test_load_rejects_mismatched_len(void **state)
{
	struct guest_mem m;
	struct telf t;
	struct pvh_kernel k;
	struct err e;

	(void)state;
	telf_init(&t, true);
	parse_ok(&t, &k);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	expect_err(pvh_load(&m, t.img, CODE_OFF, &k, &e), &e, -EINVAL,
		   "does not match the file");
	guest_mem_free(&m);
}

/* ---- initrd placement ------------------------------------------------- */

static struct pvh_kernel kernel_at(uint64_t start, uint64_t end)
{
	struct pvh_kernel k = {.entry = (uint32_t)start,
			       .nsegs = 1,
			       .load_start = start,
			       .load_end = end};

	k.seg[0] = (struct pvh_segment){.paddr = start, .memsz = end - start};
	return k;
}

static void test_initrd_fits_high(void **state)
{
	struct guest_mem m;
	struct pvh_kernel k = kernel_at(LOAD_ADDR, 16 * MiB);
	uint64_t gpa;
	struct err e;

	(void)state;
	assert_int_equal(guest_mem_layout(&m, RAM_SIZE), 0);
	assert_int_equal(pvh_place_initrd(&m, &k, 0x12345, &gpa, &e), 0);
	assert_int_equal(gpa, (RAM_SIZE - 0x12345) & ~0xfffULL);
	assert_true(gpa + 0x12345 <= RAM_SIZE);

	/* Below the MMIO hole, not at the end of RAM above 4 GiB. */
	assert_int_equal(guest_mem_layout(&m, 8 * GiB), 0);
	assert_int_equal(pvh_place_initrd(&m, &k, 64 * MiB, &gpa, &e), 0);
	assert_int_equal(gpa, 3 * GiB - 64 * MiB);

	/* Exactly all the room there is. */
	assert_int_equal(guest_mem_layout(&m, RAM_SIZE), 0);
	assert_int_equal(
		pvh_place_initrd(&m, &k, RAM_SIZE - 16 * MiB, &gpa, &e), 0);
	assert_int_equal(gpa, 16 * MiB);
}

static void test_initrd_too_large(void **state)
{
	struct guest_mem m;
	struct pvh_kernel k = kernel_at(LOAD_ADDR, 16 * MiB);
	uint64_t gpa = 1;
	struct err e;

	(void)state;
	assert_int_equal(guest_mem_layout(&m, RAM_SIZE), 0);
	expect_err(pvh_place_initrd(&m, &k, RAM_SIZE - 16 * MiB + 1, &gpa, &e),
		   &e, -ENOSPC, "does not fit in guest RAM: 16 MiB free");
	assert_int_equal(gpa, 0);
	expect_err(pvh_place_initrd(&m, &k, UINT64_MAX, &gpa, &e), &e, -ENOSPC,
		   "does not fit");
	/* Kernel above all of RAM: no room at all. */
	k = kernel_at(64 * MiB, 65 * MiB);
	expect_err(pvh_place_initrd(&m, &k, 0x1000, &gpa, &e), &e, -ENOSPC,
		   "0 bytes free");
	expect_err(pvh_place_initrd(&m, &k, 0, &gpa, &e), &e, -EINVAL,
		   "initrd is empty");
}

static void test_initrd_never_overlaps(void **state)
{
	struct guest_mem m;
	struct err e;

	(void)state;
	assert_int_equal(guest_mem_layout(&m, RAM_SIZE), 0);
	for (uint64_t end = LOAD_ADDR + 1; end < RAM_SIZE; end += 0x3fff1) {
		struct pvh_kernel k = kernel_at(LOAD_ADDR, end);

		for (uint64_t sz = 1; sz < RAM_SIZE; sz = sz * 3 + 0x7ff) {
			uint64_t gpa;
			int rc = pvh_place_initrd(&m, &k, sz, &gpa, &e);

			if (rc) {
				assert_int_equal(rc, -ENOSPC);
				assert_true(sz > RAM_SIZE - ((end + 0xfff) &
							     ~0xfffULL));
				continue;
			}
			assert_int_equal(gpa & 0xfff, 0);
			assert_true(gpa >= end);
			assert_true(gpa + sz <= RAM_SIZE);
		}
	}
}

/* ---- hvm_start_info --------------------------------------------------- */

static void test_start_info(void **state)
{
	const char *cmdline = "console=ttyS0 root=/dev/vda rw";
	struct pvh_boot_args a = {.cmdline = cmdline,
				  .initrd_gpa = 20 * MiB,
				  .initrd_size = 0x123456,
				  .rsdp_gpa = LAYOUT_ACPI_BASE};
	struct memmap_entry want[MEMMAP_MAX];
	struct hvm_memmap_table_entry got[MEMMAP_MAX];
	struct hvm_modlist_entry mod;
	struct hvm_start_info si;
	struct guest_mem m;
	struct err e;
	char buf[128];
	int n;

	(void)state;
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	assert_int_equal(pvh_write_start_info(&m, &a, &e), 0);
	assert_int_equal(guest_mem_read(&m, LAYOUT_START_INFO, &si, sizeof(si)),
			 0);
	assert_int_equal(si.magic, HVM_START_MAGIC);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.flags, 0);
	assert_int_equal(si.nr_modules, 1);
	assert_int_equal(si.modlist_paddr, LAYOUT_MODLIST);
	assert_int_equal(si.cmdline_paddr, LAYOUT_CMDLINE);
	assert_int_equal(si.rsdp_paddr, LAYOUT_ACPI_BASE);
	assert_int_equal(si.memmap_paddr, LAYOUT_MEMMAP);

	assert_int_equal(
		guest_mem_read(&m, si.cmdline_paddr, buf, strlen(cmdline) + 1),
		0);
	assert_string_equal(buf, cmdline);

	assert_int_equal(
		guest_mem_read(&m, si.modlist_paddr, &mod, sizeof(mod)), 0);
	assert_int_equal(mod.paddr, 20 * MiB);
	assert_int_equal(mod.size, 0x123456);
	assert_int_equal(mod.cmdline_paddr, 0);

	n = memmap_build(&m, want);
	assert_int_equal(si.memmap_entries, n);
	assert_int_equal(
		guest_mem_read(&m, si.memmap_paddr, got, n * sizeof(got[0])),
		0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(got[i].addr, want[i].addr);
		assert_int_equal(got[i].size, want[i].size);
		assert_int_equal(got[i].type, want[i].type);
		assert_int_equal(got[i].reserved, 0);
	}
	guest_mem_free(&m);
}

static void test_start_info_minimal(void **state)
{
	struct pvh_boot_args a = {0};
	struct hvm_start_info si;
	struct guest_mem m;
	struct err e;

	(void)state;
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	assert_int_equal(pvh_write_start_info(&m, &a, &e), 0);
	assert_int_equal(guest_mem_read(&m, LAYOUT_START_INFO, &si, sizeof(si)),
			 0);
	assert_int_equal(si.magic, HVM_START_MAGIC);
	assert_int_equal(si.nr_modules, 0);
	assert_int_equal(si.modlist_paddr, 0);
	assert_int_equal(si.cmdline_paddr, 0);
	assert_true(si.memmap_entries > 0);
	guest_mem_free(&m);
}

static void test_cmdline_limits(void **state)
{
	struct pvh_boot_args a = {0};
	struct guest_mem m;
	struct err e;
	char *s = malloc(LAYOUT_CMDLINE_MAX + 1);
	char last;

	(void)state;
	assert_non_null(s);
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	memset(s, 'a', LAYOUT_CMDLINE_MAX);
	s[LAYOUT_CMDLINE_MAX] = '\0';
	a.cmdline = s;
	expect_err(pvh_write_start_info(&m, &a, &e), &e, -E2BIG,
		   "command line is 4096 bytes; the limit is 4095");

	s[LAYOUT_CMDLINE_MAX - 1] = '\0';
	assert_int_equal(pvh_write_start_info(&m, &a, &e), 0);
	assert_int_equal(guest_mem_read(&m,
					LAYOUT_CMDLINE + LAYOUT_CMDLINE_MAX - 1,
					&last, 1),
			 0);
	assert_int_equal(last, '\0');
	free(s);
	guest_mem_free(&m);
}

static void test_start_info_bad_initrd(void **state)
{
	struct pvh_boot_args a = {.initrd_gpa = RAM_SIZE - 0x1000,
				  .initrd_size = 0x2000};
	struct guest_mem m;
	struct err e;

	(void)state;
	assert_int_equal(guest_mem_alloc(&m, RAM_SIZE), 0);
	expect_err(pvh_write_start_info(&m, &a, &e), &e, -EINVAL,
		   "is not inside guest RAM");
	guest_mem_free(&m);
}

/* ---- read_whole_file -------------------------------------------------- */

static void temp_file(char *path, const void *data, size_t len)
{
	int fd;

	strcpy(path, "/tmp/dvmm-test-pvh-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void test_read_file(void **state)
{
	char path[64];
	uint8_t *buf;
	size_t len;
	struct err e;

	(void)state;
	temp_file(path, "hello kernel", 12);
	assert_int_equal(read_whole_file(path, &buf, &len, &e), 0);
	assert_int_equal(len, 12);
	assert_memory_equal(buf, "hello kernel", 12);
	free(buf);
	unlink(path);
}

static void test_read_file_errors(void **state)
{
	char path[64], want[96];
	uint8_t *buf = (uint8_t *)1;
	size_t len = 1;
	struct err e;

	(void)state;
	expect_err(read_whole_file("/nonexistent/dvmm/vmlinux", &buf, &len, &e),
		   &e, -ENOENT,
		   "/nonexistent/dvmm/vmlinux: No such file or directory");
	assert_null(buf);
	assert_int_equal(len, 0);
	expect_err(read_whole_file("/tmp", &buf, &len, &e), &e, -EISDIR,
		   "/tmp: is a directory");
	expect_err(read_whole_file("/dev/null", &buf, &len, &e), &e, -EINVAL,
		   "/dev/null: not a regular file");

	temp_file(path, "", 0);
	snprintf(want, sizeof(want), "%s: file is empty", path);
	expect_err(read_whole_file(path, &buf, &len, &e), &e, -EINVAL, want);
	/* 1 GiB + 1 byte, sparse: rejected before any read. */
	assert_int_equal(truncate(path, (off_t)GiB + 1), 0);
	expect_err(read_whole_file(path, &buf, &len, &e), &e, -EFBIG,
		   "file is 1073741825 bytes; the limit is 1 GiB");
	assert_null(buf);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_elf64_parse_load),
		cmocka_unit_test(test_elf32_parse_load),
		cmocka_unit_test(test_note_desc_8_bytes),
		cmocka_unit_test(test_note_desc_bad_size),
		cmocka_unit_test(test_note_after_other_note),
		cmocka_unit_test(test_max_segments_ok),
		cmocka_unit_test(test_empty_and_tiny),
		cmocka_unit_test(test_bad_magic),
		cmocka_unit_test(test_bad_class),
		cmocka_unit_test(test_big_endian),
		cmocka_unit_test(test_bad_version),
		cmocka_unit_test(test_wrong_machine),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_truncated_elf64),
		cmocka_unit_test(test_truncated_elf32),
		cmocka_unit_test(test_phoff_past_end),
		cmocka_unit_test(test_phnum_huge),
		cmocka_unit_test(test_phentsize_wrong),
		cmocka_unit_test(test_load_past_eof),
		cmocka_unit_test(test_filesz_gt_memsz),
		cmocka_unit_test(test_paddr_wraps),
		cmocka_unit_test(test_overlapping_segments),
		cmocka_unit_test(test_too_many_segments),
		cmocka_unit_test(test_no_load),
		cmocka_unit_test(test_no_note),
		cmocka_unit_test(test_note_sizes_overflow),
		cmocka_unit_test(test_note_wrong_name_or_type),
		cmocka_unit_test(test_entry_outside),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_segment_below_1m),
		cmocka_unit_test(test_segment_beyond_ram),
		cmocka_unit_test(test_load_checks_before_copy),
		cmocka_unit_test(test_load_rejects_mismatched_len),
		cmocka_unit_test(test_initrd_fits_high),
		cmocka_unit_test(test_initrd_too_large),
		cmocka_unit_test(test_initrd_never_overlaps),
		cmocka_unit_test(test_start_info),
		cmocka_unit_test(test_start_info_minimal),
		cmocka_unit_test(test_cmdline_limits),
		cmocka_unit_test(test_start_info_bad_initrd),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_read_file_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
