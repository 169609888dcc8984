/*
 * machine/memmap.h - the guest's physical memory map (e820 types), derived
 * from the RAM layout and machine/layout.h. Used by PVH start info and,
 * later, by the Linux boot protocol.
 */
#ifndef DVMM_MACHINE_MEMMAP_H
#define DVMM_MACHINE_MEMMAP_H

#include <stdint.h>

#include "core/guest_mem.h"

enum memmap_type {
	MEMMAP_RAM = 1,
	MEMMAP_RESERVED = 2,
	MEMMAP_ACPI = 3,
	MEMMAP_NVS = 4,
};

struct memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

#define MEMMAP_MAX 16

/* Fill @out (capacity MEMMAP_MAX), sorted, non-overlapping; returns count. */
int memmap_build(const struct guest_mem *m, struct memmap_entry *out);

#endif
