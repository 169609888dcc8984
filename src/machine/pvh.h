/*
 * machine/pvh.h - the PVH boot path: parse an ELF kernel (64- or 32-bit)
 * and its XEN_ELFNOTE_PHYS32_ENTRY note, load its PT_LOAD segments into
 * guest RAM, place the initrd, and write struct hvm_start_info (command
 * line, module list, memory map, RSDP address) for the boot vCPU.
 * Every field of the file is treated as hostile.
 */
#ifndef DVMM_MACHINE_PVH_H
#define DVMM_MACHINE_PVH_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "util/err.h"

#define PVH_MAX_SEGMENTS 16

/* struct hvm_start_info and friends, as the Xen PVH ABI defines them. */
#define HVM_START_MAGIC 0x336ec578U
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
} __attribute__((packed));

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
} __attribute__((packed));

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
} __attribute__((packed));

struct pvh_segment {
	uint64_t file_off;
	uint64_t filesz;
	uint64_t paddr;
	uint64_t memsz;
};

struct pvh_kernel {
	uint32_t entry;	     /* 32-bit physical entry point */
	uint64_t load_start; /* lowest paddr of any PT_LOAD */
	uint64_t load_end;   /* highest paddr + memsz */
	int nsegs;
	struct pvh_segment seg[PVH_MAX_SEGMENTS];
};

/*
 * Validate @len bytes of ELF at @img and find the PVH entry. Fails with a
 * clear message for: not ELF, wrong machine, truncated headers/segments,
 * overlapping or overflowing segments, no PVH note. All parse errors are
 * -ENOEXEC; the message does not name the file, so the caller prefixes it
 * ("kernel PATH: not an ELF file").
 */
int pvh_parse(const uint8_t *img, size_t len, struct pvh_kernel *k,
	      struct err *e);

/*
 * Copy segments into guest RAM (zeroing bss); checks they fit in RAM and
 * start at or above 1 MiB (-ERANGE) before copying any.
 */
int pvh_load(const struct guest_mem *m, const uint8_t *img, size_t len,
	     const struct pvh_kernel *k, struct err *e);

struct pvh_boot_args {
	const char *cmdline; /* may be NULL */
	uint64_t initrd_gpa; /* 0 when no initrd */
	uint64_t initrd_size;
	uint64_t rsdp_gpa;
};

/*
 * Pick where an initrd of @size bytes goes: page aligned, as high as
 * possible in RAM below the MMIO hole, above @k's image. -ENOSPC if not.
 */
int pvh_place_initrd(const struct guest_mem *m, const struct pvh_kernel *k,
		     uint64_t size, uint64_t *gpa, struct err *e);

/* Write hvm_start_info, modlist, memmap and cmdline at machine/layout.h. */
int pvh_write_start_info(const struct guest_mem *m,
			 const struct pvh_boot_args *a, struct err *e);

/*
 * Read a whole file into a malloc'd buffer (for kernel and initrd).
 * Rejects directories, non-regular and empty files and files over 1 GiB;
 * messages start with @path ("PATH: No such file or directory").
 */
int read_whole_file(const char *path, uint8_t **buf, size_t *len,
		    struct err *e);

#endif
