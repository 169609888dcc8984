/*
 * machine/bzimage.h - the Linux x86 boot protocol (Documentation/arch/x86/
 * boot.rst), 64-bit entry: parse a bzImage's setup header, place and load
 * its protected-mode kernel, place the initrd, and write the "zero page"
 * (struct boot_params: setup header, e820 map, command line, initrd,
 * RSDP), a GDT and identity-mapping page tables for the boot vCPU.
 * Every field of the file is treated as hostile.
 */
#ifndef DVMM_MACHINE_BZIMAGE_H
#define DVMM_MACHINE_BZIMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "util/err.h"

/* Offsets in the file (and in boot_params) of the setup header fields. */
#define BZ_SETUP_SECTS 0x1f1
#define BZ_SYSSIZE 0x1f4
#define BZ_BOOT_FLAG 0x1fe
#define BZ_JUMP 0x200
#define BZ_HEADER 0x202
#define BZ_VERSION 0x206
#define BZ_TYPE_OF_LOADER 0x210
#define BZ_LOADFLAGS 0x211
#define BZ_RAMDISK_IMAGE 0x218
#define BZ_RAMDISK_SIZE 0x21c
#define BZ_HEAP_END_PTR 0x224
#define BZ_CMD_LINE_PTR 0x228
#define BZ_INITRD_ADDR_MAX 0x22c
#define BZ_KERNEL_ALIGNMENT 0x230
#define BZ_RELOCATABLE 0x234
#define BZ_XLOADFLAGS 0x236
#define BZ_CMDLINE_SIZE 0x238
#define BZ_PREF_ADDRESS 0x258
#define BZ_INIT_SIZE 0x260
#define BZ_HEADER_MIN_END 0x264 /* init_size ends here (protocol 2.10+) */

#define BZ_BOOT_FLAG_MAGIC 0xaa55
#define BZ_HEADER_MAGIC 0x53726448 /* "HdrS" */
#define BZ_MIN_VERSION 0x020c	   /* 2.12: xloadflags */
#define BZ_LOADED_HIGH 0x01
#define BZ_CAN_USE_HEAP 0x80
#define BZ_XLF_KERNEL_64 0x01
#define BZ_XLF_CAN_BE_LOADED_ABOVE_4G 0x02
#define BZ_ENTRY64_OFFSET 0x200 /* 64-bit entry: load address + 0x200 */

/* struct boot_params fields outside the setup header. */
#define BP_SIZE 0x1000
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128

struct bzimage {
	uint16_t version;    /* 0x020c for 2.12 */
	uint32_t setup_size; /* boot sector + setup sectors, bytes */
	uint32_t hdr_end;    /* end of the setup header in the file */
	uint64_t kernel_off; /* protected-mode kernel in the file */
	uint64_t kernel_size;
	uint8_t loadflags;
	uint16_t xloadflags;
	bool relocatable;
	uint32_t kernel_alignment;
	uint64_t pref_address;
	uint32_t init_size;    /* memory the kernel needs from its start */
	uint32_t cmdline_size; /* longest command line, without the NUL */
	uint32_t
		initrd_addr_max; /* highest address of the initrd's last byte */
};

/* True when @img looks like a bzImage (0xAA55 boot flag or "HdrS"). */
bool bzimage_probe(const uint8_t *img, size_t len);

/*
 * Validate @len bytes at @img: the header magic, protocol 2.12 or later,
 * a 64-bit entry, sane setup_sects, syssize and init_size, and the file
 * long enough for all of them. Errors are -ENOEXEC with a message that
 * does not name the file.
 */
int bzimage_parse(const uint8_t *img, size_t len, struct bzimage *bz,
		  struct err *e);

/*
 * Where the protected-mode kernel goes: pref_address if the kernel's
 * init_size fits there in RAM below the MMIO hole; for a relocatable
 * kernel the next kernel_alignment-aligned address that fits; otherwise
 * -ERANGE ("needs N MiB of RAM at ...").
 */
int bzimage_place_kernel(const struct guest_mem *m, const struct bzimage *bz,
			 uint64_t *gpa, struct err *e);

/* Copy the protected-mode kernel to @gpa (checked against init_size). */
int bzimage_load(const struct guest_mem *m, const uint8_t *img,
		 const struct bzimage *bz, uint64_t gpa, struct err *e);

/*
 * Where an initrd of @size bytes goes: page aligned, as high as possible
 * below the MMIO hole and initrd_addr_max, above @kernel_end. -ENOSPC
 * when it does not fit ("300 MiB does not fit in guest RAM: ...", for the
 * caller to prefix with the file's name).
 */
int bzimage_place_initrd(const struct guest_mem *m, const struct bzimage *bz,
			 uint64_t kernel_end, uint64_t size, uint64_t *gpa,
			 struct err *e);

struct bzimage_boot_args {
	const char *cmdline; /* may be NULL */
	uint64_t kernel_gpa;
	uint64_t initrd_gpa; /* 0 when no initrd */
	uint64_t initrd_size;
	uint64_t rsdp_gpa;
};

/*
 * Write boot_params at LAYOUT_ZERO_PAGE (the file's setup header, the
 * loader's fields, the e820 map from memmap_build()) and the command line
 * at LAYOUT_LINUX_CMDLINE. @img is the file bzimage_parse() accepted.
 */
int bzimage_write_boot_params(const struct guest_mem *m, const uint8_t *img,
			      const struct bzimage *bz,
			      const struct bzimage_boot_args *a, struct err *e);

/*
 * Write the boot GDT (flat 64-bit code at 0x10, data at 0x18) and page
 * tables identity-mapping the first 4 GiB with 2 MiB pages, at their
 * machine/layout.h addresses.
 */
int bzimage_write_boot_tables(const struct guest_mem *m, struct err *e);

#endif
