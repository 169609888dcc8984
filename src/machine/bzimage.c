/*
 * machine/bzimage.c - booting a Linux bzImage through the 64-bit boot
 * protocol (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL"):
 * the setup header is validated, the protected-mode kernel is copied to
 * where the header asks (pref_address, or another kernel_alignment-aligned
 * address for a relocatable kernel), and boot_params ("zero page") gets the
 * header, the e820 map, command line, initrd and RSDP. The boot vCPU enters
 * at load address + 0x200 in long mode, with %rsi at boot_params, on a GDT
 * and identity-mapping page tables written here.
 *
 * The file is hostile: every offset and size is checked against the buffer
 * and guest RAM before use; fields are read with memcpy (no unaligned
 * access). The host is x86 (little-endian), like the files accepted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "machine/bzimage.h"
#include "machine/layout.h"
#include "machine/memmap.h"

#define PAGE_SIZE 0x1000ULL
#define SECTOR 512U
#define SETUP_MAX 0x8000U   /* boot sector + setup: at most 32 KiB */
#define BP_HDR_LIMIT 0x290U /* boot_params.hdr ends here */
#define DEFAULT_SETUP_SECTS 4
#define LOADER_UNDEFINED 0xff /* type_of_loader: no assigned id */
#define HEAP_END 0xfe00U      /* setup heap end, as QEMU and GRUB */
#define ALIGN_MIN PAGE_SIZE
#define ALIGN_MAX (1ULL << 30)
#define LOW_4G (1ULL << 32)
#define PTE_PRESENT 0x1ULL
#define PTE_WRITE 0x2ULL
#define PTE_LARGE 0x80ULL
#define PAGE_2M (2ULL << 20)

_Static_assert(LAYOUT_BOOT_GDT >= LAYOUT_CMDLINE + LAYOUT_CMDLINE_MAX,
	       "Linux boot tables overlap the PVH area");
_Static_assert(LAYOUT_LINUX_END <= LAYOUT_EBDA_START,
	       "Linux boot area runs into the EBDA");
_Static_assert(LAYOUT_BOOT_PD + LAYOUT_BOOT_PD_PAGES * PAGE_SIZE <=
		       LAYOUT_ZERO_PAGE,
	       "page directories overlap boot_params");
_Static_assert(LAYOUT_ZERO_PAGE + BP_SIZE <= LAYOUT_LINUX_CMDLINE,
	       "boot_params overlaps the command line");
_Static_assert(LAYOUT_LINUX_CMDLINE + LAYOUT_LINUX_CMDLINE_MAX <=
		       LAYOUT_LINUX_END,
	       "command line overruns the Linux boot area");

/* ---- little-endian fields ---------------------------------------------- */

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
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

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1); /* callers keep v below 2^63 */
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* "256 MiB", "640 KiB" or "4097 bytes", for messages. */
static const char *fmt_size(uint64_t bytes, char *buf, size_t n)
{
	if (bytes && !(bytes & ((1ULL << 20) - 1)))
		snprintf(buf, n, "%" PRIu64 " MiB", bytes >> 20);
	else if (bytes && !(bytes & ((1ULL << 10) - 1)))
		snprintf(buf, n, "%" PRIu64 " KiB", bytes >> 10);
	else
		snprintf(buf, n, "%" PRIu64 " bytes", bytes);
	return buf;
}

/* ---- parsing ----------------------------------------------------------- */

bool bzimage_probe(const uint8_t *img, size_t len)
{
	if (!img || len < BZ_BOOT_FLAG + 2)
		return false;
	if (get16(img + BZ_BOOT_FLAG) == BZ_BOOT_FLAG_MAGIC)
		return true;
	return len >= BZ_HEADER + 4 &&
	       get32(img + BZ_HEADER) == BZ_HEADER_MAGIC;
}

static int truncated(size_t len, uint64_t need, const char *what, struct err *e)
{
	return err_set(e, -ENOEXEC,
		       "bzImage is truncated (%s: %" PRIu64
		       " bytes needed, the file has %zu)",
		       what, need, len);
}

static int check_magic(const uint8_t *img, size_t len, struct err *e)
{
	if (len < BZ_BOOT_FLAG + 2)
		return truncated(len, BZ_BOOT_FLAG + 2, "the boot sector", e);
	if (get16(img + BZ_BOOT_FLAG) != BZ_BOOT_FLAG_MAGIC)
		return err_set(e, -ENOEXEC,
			       "not a bzImage (no 0xAA55 boot flag at 0x1fe)");
	if (len < BZ_VERSION + 2)
		return truncated(len, BZ_VERSION + 2, "the setup header", e);
	if (get32(img + BZ_HEADER) != BZ_HEADER_MAGIC)
		return err_set(
			e, -ENOEXEC,
			"not a bzImage (no \"HdrS\" setup header at 0x202)");
	return 0;
}

static int check_version(const uint8_t *img, struct bzimage *bz, struct err *e)
{
	bz->version = get16(img + BZ_VERSION);
	if (bz->version < BZ_MIN_VERSION)
		return err_set(e, -ENOEXEC,
			       "boot protocol %u.%02u is too old; dvmm needs "
			       "2.12 or later (Linux 3.8+)",
			       bz->version >> 8, bz->version & 0xff);
	return 0;
}

/* The header's extent (0x202 + jump offset) and the setup area. */
static int check_extent(const uint8_t *img, size_t len, struct bzimage *bz,
			struct err *e)
{
	unsigned int sects = img[BZ_SETUP_SECTS];

	bz->hdr_end = BZ_HEADER + img[BZ_JUMP + 1];
	if (bz->hdr_end < BZ_HEADER_MIN_END || bz->hdr_end > BP_HDR_LIMIT)
		return err_set(e, -ENOEXEC,
			       "setup header ends at 0x%x; a 2.12+ header ends "
			       "between 0x%x and 0x%x",
			       bz->hdr_end, BZ_HEADER_MIN_END, BP_HDR_LIMIT);
	if (len < bz->hdr_end)
		return truncated(len, bz->hdr_end, "the setup header", e);
	if (sects == 0)
		sects = DEFAULT_SETUP_SECTS;
	bz->setup_size = (sects + 1) * SECTOR;
	if (bz->setup_size > SETUP_MAX)
		return err_set(e, -ENOEXEC,
			       "setup_sects %u is absurd: the setup code may "
			       "be at most %u KiB",
			       sects, SETUP_MAX >> 10);
	return 0; /* at least 1 KiB: holds the header (ends by 0x290) */
}

static int check_kernel_64(const uint8_t *img, struct bzimage *bz,
			   struct err *e)
{
	bz->loadflags = img[BZ_LOADFLAGS];
	bz->xloadflags = get16(img + BZ_XLOADFLAGS);
	if (!(bz->xloadflags & BZ_XLF_KERNEL_64))
		return err_set(e, -ENOEXEC,
			       "32-bit-only kernel (no 64-bit entry point, "
			       "XLF_KERNEL_64); dvmm boots 64-bit kernels");
	if (!(bz->loadflags & BZ_LOADED_HIGH))
		return err_set(
			e, -ENOEXEC,
			"zImage (loaded low) is not supported; need a bzImage");
	return 0;
}

/* The protected-mode kernel: syssize paragraphs after the setup. */
static int check_payload(const uint8_t *img, size_t len, struct bzimage *bz,
			 struct err *e)
{
	uint64_t syssize = get32(img + BZ_SYSSIZE);

	bz->kernel_off = bz->setup_size;
	bz->kernel_size = syssize * 16;
	if (bz->kernel_size == 0)
		return err_set(e, -ENOEXEC,
			       "bzImage has an empty kernel (syssize 0)");
	if (bz->kernel_size < BZ_ENTRY64_OFFSET + 1)
		return err_set(
			e, -ENOEXEC,
			"kernel of %" PRIu64
			" bytes is too small to hold the 64-bit entry at 0x200",
			bz->kernel_size);
	if (len < bz->kernel_off || len - bz->kernel_off < bz->kernel_size)
		return truncated(len, bz->kernel_off + bz->kernel_size,
				 "the setup and kernel", e);
	return 0;
}

static int check_memory_fields(const uint8_t *img, struct bzimage *bz,
			       struct err *e)
{
	bz->relocatable = img[BZ_RELOCATABLE] != 0;
	bz->kernel_alignment = get32(img + BZ_KERNEL_ALIGNMENT);
	bz->pref_address = get64(img + BZ_PREF_ADDRESS);
	bz->init_size = get32(img + BZ_INIT_SIZE);
	bz->cmdline_size = get32(img + BZ_CMDLINE_SIZE);
	bz->initrd_addr_max = get32(img + BZ_INITRD_ADDR_MAX);
	if (bz->relocatable && (!is_pow2(bz->kernel_alignment) ||
				bz->kernel_alignment < ALIGN_MIN ||
				bz->kernel_alignment > ALIGN_MAX))
		return err_set(e, -ENOEXEC,
			       "kernel_alignment 0x%x is not a power of two "
			       "between 4 KiB and 1 GiB",
			       bz->kernel_alignment);
	if (bz->init_size < bz->kernel_size)
		return err_set(
			e, -ENOEXEC,
			"init_size 0x%x is smaller than the kernel (0x%" PRIx64
			" bytes)",
			bz->init_size, bz->kernel_size);
	if (bz->pref_address == 0)
		bz->pref_address = LAYOUT_HIMEM;
	return 0;
}

int bzimage_parse(const uint8_t *img, size_t len, struct bzimage *bz,
		  struct err *e)
{
	int rc;

	memset(bz, 0, sizeof(*bz));
	if (!img)
		len = 0;
	rc = check_magic(img, len, e);
	if (!rc)
		rc = check_version(img, bz, e);
	if (!rc)
		rc = check_extent(img, len, bz, e);
	if (!rc)
		rc = check_kernel_64(img, bz, e);
	if (!rc)
		rc = check_payload(img, len, bz, e);
	if (!rc)
		rc = check_memory_fields(img, bz, e);
	return rc;
}

/* ---- placement --------------------------------------------------------- */

/* RAM below the MMIO hole, where kernel, initrd and boot data must be. */
static uint64_t low_top(const struct guest_mem *m)
{
	uint64_t top = guest_mem_low_end(m);

	return top > GUEST_MMIO_HOLE_START ? GUEST_MMIO_HOLE_START : top;
}

/* [gpa, gpa + size) lies in one RAM region, above 1 MiB, below the hole. */
static bool fits_low(const struct guest_mem *m, uint64_t gpa, uint64_t size)
{
	uint64_t top = low_top(m);

	if (gpa < LAYOUT_HIMEM || gpa >= top || size > top - gpa)
		return false;
	for (int i = 0; i < m->nregions && i < GUEST_MEM_MAX_REGIONS; i++) {
		const struct guest_mem_region *r = &m->region[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size &&
		    size <= r->size - (gpa - r->gpa))
			return true;
	}
	return false;
}

static int no_room(const struct guest_mem *m, const struct bzimage *bz,
		   uint64_t at, struct err *e)
{
	char need[32], have[32];

	return err_set(
		e, -ERANGE,
		"kernel needs %s of RAM from 0x%" PRIx64
		" (init_size) but guest RAM below 3 GiB ends at 0x%" PRIx64
		" (%s of RAM)",
		fmt_size(bz->init_size, need, sizeof(need)), at, low_top(m),
		fmt_size(m->ram_size, have, sizeof(have)));
}

int bzimage_place_kernel(const struct guest_mem *m, const struct bzimage *bz,
			 uint64_t *gpa, struct err *e)
{
	uint64_t at = bz->pref_address;

	*gpa = 0;
	if (!bz->relocatable) {
		if (!fits_low(m, at, bz->init_size))
			return no_room(m, bz, at, e);
		*gpa = at;
		return 0;
	}
	if (at > LOW_4G)
		at = LOW_4G; /* cannot fit; the message says where it was */
	at = align_up(at < LAYOUT_HIMEM ? LAYOUT_HIMEM : at,
		      bz->kernel_alignment);
	if (!fits_low(m, at, bz->init_size))
		at = align_up(LAYOUT_HIMEM, bz->kernel_alignment);
	if (!fits_low(m, at, bz->init_size))
		return no_room(m, bz, at, e);
	*gpa = at;
	return 0;
}

int bzimage_load(const struct guest_mem *m, const uint8_t *img,
		 const struct bzimage *bz, uint64_t gpa, struct err *e)
{
	uint8_t *dst;

	dst = guest_mem_ptr(m, gpa, bz->init_size);
	if (bz->init_size < bz->kernel_size || !dst ||
	    !fits_low(m, gpa, bz->init_size))
		return no_room(m, bz, gpa, e);
	memcpy(dst, img + bz->kernel_off, bz->kernel_size);
	memset(dst + bz->kernel_size, 0, bz->init_size - bz->kernel_size);
	return 0;
}

/* The highest address the kernel accepts for the initrd's last byte. */
static uint64_t initrd_limit(const struct bzimage *bz)
{
	if (bz->xloadflags & BZ_XLF_CAN_BE_LOADED_ABOVE_4G)
		return LOW_4G - 1;
	return bz->initrd_addr_max;
}

int bzimage_place_initrd(const struct guest_mem *m, const struct bzimage *bz,
			 uint64_t kernel_end, uint64_t size, uint64_t *gpa,
			 struct err *e)
{
	uint64_t top = low_top(m), bottom, room;
	char a[32], b[32];

	*gpa = 0;
	if (size == 0)
		return err_set(e, -EINVAL, "initrd is empty");
	if (top > initrd_limit(bz) + 1)
		top = initrd_limit(bz) + 1;
	top &= ~(PAGE_SIZE - 1);
	bottom = kernel_end < LAYOUT_HIMEM ? LAYOUT_HIMEM : kernel_end;
	bottom = bottom >= LOW_4G ? LOW_4G : align_up(bottom, PAGE_SIZE);
	room = top > bottom ? top - bottom : 0;
	if (size > room)
		return err_set(e, -ENOSPC,
			       "%s does not fit in guest RAM: %s free between "
			       "the kernel end 0x%" PRIx64 " and 0x%" PRIx64,
			       fmt_size(size, a, sizeof(a)),
			       fmt_size(room, b, sizeof(b)), bottom, top);
	*gpa = (top - size) & ~(PAGE_SIZE - 1);
	return 0;
}

/* ---- boot_params ------------------------------------------------------- */

static int write_cmdline(const struct guest_mem *m, const struct bzimage *bz,
			 const char *cmdline, struct err *e)
{
	size_t n;

	if (!cmdline)
		cmdline = "";
	n = strnlen(cmdline, LAYOUT_LINUX_CMDLINE_MAX);
	if (n >= LAYOUT_LINUX_CMDLINE_MAX || n > bz->cmdline_size)
		return err_set(e, -E2BIG,
			       "kernel command line is %zu bytes; this kernel "
			       "takes at most %u",
			       strlen(cmdline),
			       bz->cmdline_size < LAYOUT_LINUX_CMDLINE_MAX ?
				       bz->cmdline_size :
				       LAYOUT_LINUX_CMDLINE_MAX - 1);
	if (guest_mem_write(m, LAYOUT_LINUX_CMDLINE, cmdline, n + 1))
		return err_set(e, -ERANGE,
			       "guest RAM too small for the command line");
	return 0;
}

static int fill_e820(const struct guest_mem *m, uint8_t *bp, struct err *e)
{
	struct memmap_entry map[MEMMAP_MAX];
	int n = memmap_build(m, map);

	if (n <= 0 || n > MEMMAP_MAX || n > BP_E820_MAX)
		return err_set(e, -EINVAL, "memory map has %d entries", n);
	for (int i = 0; i < n; i++) {
		uint8_t *ent = bp + BP_E820_TABLE + (size_t)i * 20;

		put64(ent, map[i].addr);
		put64(ent + 8, map[i].size);
		put32(ent + 16, map[i].type);
	}
	bp[BP_E820_ENTRIES] = (uint8_t)n;
	return 0;
}

/* The loader's fields of the setup header and boot_params. */
static void fill_loader_fields(uint8_t *bp, const struct bzimage_boot_args *a)
{
	bp[BZ_TYPE_OF_LOADER] = LOADER_UNDEFINED;
	bp[BZ_LOADFLAGS] |= BZ_LOADED_HIGH | BZ_CAN_USE_HEAP;
	put16(bp + BZ_HEAP_END_PTR, HEAP_END);
	put32(bp + BZ_CMD_LINE_PTR, (uint32_t)LAYOUT_LINUX_CMDLINE);
	put32(bp + BP_EXT_CMD_LINE_PTR, (uint32_t)(LAYOUT_LINUX_CMDLINE >> 32));
	put32(bp + BZ_RAMDISK_IMAGE, (uint32_t)a->initrd_gpa);
	put32(bp + BZ_RAMDISK_SIZE, (uint32_t)a->initrd_size);
	put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(a->initrd_gpa >> 32));
	put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(a->initrd_size >> 32));
	put64(bp + BP_ACPI_RSDP_ADDR, a->rsdp_gpa);
}

int bzimage_write_boot_params(const struct guest_mem *m, const uint8_t *img,
			      const struct bzimage *bz,
			      const struct bzimage_boot_args *a, struct err *e)
{
	uint8_t bp[BP_SIZE];
	int rc;

	if (bz->hdr_end < BZ_HEADER_MIN_END || bz->hdr_end > BP_HDR_LIMIT)
		return err_set(e, -EINVAL, "bzImage header not parsed");
	if (a->initrd_size && !guest_mem_ptr(m, a->initrd_gpa, a->initrd_size))
		return err_set(e, -EINVAL,
			       "initrd at 0x%" PRIx64 " size 0x%" PRIx64
			       " is not inside guest RAM",
			       a->initrd_gpa, a->initrd_size);
	memset(bp, 0, sizeof(bp));
	memcpy(bp + BZ_SETUP_SECTS, img + BZ_SETUP_SECTS,
	       bz->hdr_end - BZ_SETUP_SECTS);
	fill_loader_fields(bp, a);
	rc = fill_e820(m, bp, e);
	if (!rc)
		rc = write_cmdline(m, bz, a->cmdline, e);
	if (rc)
		return rc;
	if (guest_mem_write(m, LAYOUT_ZERO_PAGE, bp, sizeof(bp)))
		return err_set(e, -ERANGE,
			       "guest RAM too small for boot_params");
	return 0;
}

/* ---- GDT and page tables ---------------------------------------------- */

/* One page of 512 entries: @n entries from @first, step @step, rest 0. */
static int write_table(const struct guest_mem *m, uint64_t gpa, int n,
		       uint64_t first, uint64_t step, uint64_t flags)
{
	uint64_t t[512];

	memset(t, 0, sizeof(t));
	for (int i = 0; i < n; i++)
		t[i] = (first + (uint64_t)i * step) | flags;
	return guest_mem_write(m, gpa, t, sizeof(t));
}

int bzimage_write_boot_tables(const struct guest_mem *m, struct err *e)
{
	uint64_t gdt[LAYOUT_BOOT_GDT_ENTRIES] = {0};
	uint64_t rw = PTE_PRESENT | PTE_WRITE;
	int rc;

	gdt[2] = 0x00af9b000000ffffULL; /* 0x10: 64-bit code, execute/read */
	gdt[3] = 0x00cf93000000ffffULL; /* 0x18: flat 4 GiB data, read/write */
	rc = guest_mem_write(m, LAYOUT_BOOT_GDT, gdt, sizeof(gdt));
	rc |= write_table(m, LAYOUT_BOOT_PML4, 1, LAYOUT_BOOT_PDPT, 0, rw);
	rc |= write_table(m, LAYOUT_BOOT_PDPT, LAYOUT_BOOT_PD_PAGES,
			  LAYOUT_BOOT_PD, PAGE_SIZE, rw);
	for (int i = 0; i < LAYOUT_BOOT_PD_PAGES; i++)
		rc |= write_table(m, LAYOUT_BOOT_PD + (uint64_t)i * PAGE_SIZE,
				  512, (uint64_t)i << 30, PAGE_2M,
				  rw | PTE_LARGE);
	if (rc)
		return err_set(e, -ERANGE,
			       "guest RAM too small for the boot page tables");
	return 0;
}
