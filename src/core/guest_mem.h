/*
 * core/guest_mem.h - guest physical memory: the RAM regions, their host
 * mappings, and the only sanctioned way for the rest of dvmm to reach guest
 * memory (bounds-checked translation and copies).
 */
#ifndef DVMM_CORE_GUEST_MEM_H
#define DVMM_CORE_GUEST_MEM_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 4

/* PC layout: RAM below the 32-bit MMIO hole, the rest above 4 GiB. */
#define GUEST_MMIO_HOLE_START 0xC0000000ULL
#define GUEST_MMIO_HOLE_END 0x100000000ULL

struct guest_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
};

struct guest_mem {
	struct guest_mem_region region[GUEST_MEM_MAX_REGIONS];
	int nregions;
	uint64_t ram_size; /* total bytes of RAM */
	uint8_t *base;	   /* the single host mapping backing all regions */
	int owned;	   /* base was mapped here (guest_mem_free unmaps) */
	/*
	 * Device-write log for migration: a bit per page from base, set by
	 * guest_mem_log_write while on (the pointer is read atomically; the
	 * bitmap lives until guest_mem_free). NULL: off.
	 */
	uint64_t *wlog;
	uint64_t *wlog_buf;
};

/* Split @ram_size into regions around the MMIO hole; no allocation. */
int guest_mem_layout(struct guest_mem *m, uint64_t ram_size);
/* Lay out and map @ram_size bytes; -ENOMEM with a clear cause when not. */
int guest_mem_alloc(struct guest_mem *m, uint64_t ram_size);
/*
 * Lay out @ram_size bytes over @base, a mapping the caller keeps (e.g. the
 * DSM's): guest_mem_free then leaves it alone.
 */
int guest_mem_use(struct guest_mem *m, uint8_t *base, uint64_t ram_size);
void guest_mem_free(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len) if it lies inside one RAM region. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst,
		   size_t len);
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src,
		    size_t len);

/*
 * Devices (their threads, not vCPUs) writing guest RAM call this after the
 * write, so migration resends the pages (KVM's dirty log only sees vCPU
 * writes). @hva..@hva+@len must lie in the mapping; a no-op while the log
 * is off. guest_mem_write logs by itself.
 */
void guest_mem_log_write(const struct guest_mem *m, const void *hva,
			 size_t len);
/* Turn the device-write log on (clearing it) or off; -ENOMEM. */
int guest_mem_log_start(struct guest_mem *m);
void guest_mem_log_stop(struct guest_mem *m);
/*
 * Take the logged pages of region @r: OR them into @map (a bit per page
 * of the region) and clear them in the log. Returns how many were set.
 */
uint64_t guest_mem_log_take(struct guest_mem *m, int r, uint64_t *map);

/* End of RAM below 4 GiB (exclusive). */
uint64_t guest_mem_low_end(const struct guest_mem *m);

#endif
