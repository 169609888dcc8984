/*
 * core/guest_mem.c - guest RAM: one anonymous host mapping split into the
 * regions of the PC layout (below the MMIO hole, above 4 GiB), and the
 * bounds-checked translation every other part uses to reach it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/guest_mem.h"

int guest_mem_layout(struct guest_mem *m, uint64_t ram_size)
{
	uint64_t low = ram_size;

	memset(m, 0, sizeof(*m));
	if (ram_size == 0 || (ram_size & 0xfff))
		return -EINVAL;
	if (low > GUEST_MMIO_HOLE_START)
		low = GUEST_MMIO_HOLE_START;
	m->region[0] = (struct guest_mem_region){.gpa = 0, .size = low};
	m->nregions = 1;
	if (ram_size > low) {
		m->region[1] = (struct guest_mem_region){
			.gpa = GUEST_MMIO_HOLE_END, .size = ram_size - low};
		m->nregions = 2;
	}
	m->ram_size = ram_size;
	return 0;
}

int guest_mem_alloc(struct guest_mem *m, uint64_t ram_size)
{
	uint64_t off = 0;
	void *p;
	int rc = guest_mem_layout(m, ram_size);

	if (rc)
		return rc;
	/* NORESERVE: pages are committed when the guest first touches them. */
	p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	m->base = p;
	m->owned = 1;
	for (int i = 0; i < m->nregions; i++) {
		m->region[i].hva = m->base + off;
		off += m->region[i].size;
	}
	madvise(p, ram_size, MADV_MERGEABLE);
	return 0;
}

int guest_mem_use(struct guest_mem *m, uint8_t *base, uint64_t ram_size)
{
	uint64_t off = 0;
	int rc = guest_mem_layout(m, ram_size);

	if (rc)
		return rc;
	if (!base)
		return -EINVAL;
	m->base = base;
	for (int i = 0; i < m->nregions; i++) {
		m->region[i].hva = m->base + off;
		off += m->region[i].size;
	}
	return 0;
}

void guest_mem_free(struct guest_mem *m)
{
	if (m->base && m->owned)
		munmap(m->base, m->ram_size);
	free(m->wlog_buf);
	memset(m, 0, sizeof(*m));
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < m->nregions; i++) {
		const struct guest_mem_region *r = &m->region[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size &&
		    len <= r->size - (gpa - r->gpa))
			return r->hva ? r->hva + (gpa - r->gpa) : NULL;
	}
	return NULL;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst,
		   size_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src,
		    size_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	guest_mem_log_write(m, p, len);
	return 0;
}

/* ---- the device-write log ---- */

#define WLOG_PAGE 4096ULL

static uint64_t wlog_words(const struct guest_mem *m)
{
	return (m->ram_size / WLOG_PAGE + 63) / 64;
}

void guest_mem_log_write(const struct guest_mem *m, const void *hva, size_t len)
{
	uint64_t *log = __atomic_load_n(&m->wlog, __ATOMIC_ACQUIRE);
	uint64_t off, first, last;

	if (!log || !len || (const uint8_t *)hva < m->base)
		return;
	off = (uint64_t)((const uint8_t *)hva - m->base);
	if (off >= m->ram_size || len > m->ram_size - off)
		return;
	first = off / WLOG_PAGE;
	last = (off + len - 1) / WLOG_PAGE;
	for (uint64_t p = first; p <= last; p++)
		__atomic_fetch_or(&log[p / 64], 1ULL << (p % 64),
				  __ATOMIC_RELEASE);
}

int guest_mem_log_start(struct guest_mem *m)
{
	if (!m->wlog_buf) {
		m->wlog_buf = calloc(wlog_words(m), sizeof(uint64_t));
		if (!m->wlog_buf)
			return -ENOMEM;
	} else {
		for (uint64_t w = 0; w < wlog_words(m); w++)
			__atomic_store_n(&m->wlog_buf[w], 0, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&m->wlog, m->wlog_buf, __ATOMIC_RELEASE);
	return 0;
}

void guest_mem_log_stop(struct guest_mem *m)
{
	__atomic_store_n(&m->wlog, NULL, __ATOMIC_RELEASE);
}

uint64_t guest_mem_log_take(struct guest_mem *m, int r, uint64_t *map)
{
	const struct guest_mem_region *rg = &m->region[r];
	uint64_t first = (uint64_t)(rg->hva - m->base) / WLOG_PAGE;
	uint64_t npages = rg->size / WLOG_PAGE, n = 0;

	if (!m->wlog_buf || r < 0 || r >= m->nregions)
		return 0;
	for (uint64_t w = first / 64; w <= (first + npages - 1) / 64; w++) {
		uint64_t bits = __atomic_exchange_n(&m->wlog_buf[w], 0,
						    __ATOMIC_ACQ_REL);

		while (bits) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);

			bits &= bits - 1;
			if (p < first || p >= first + npages) {
				/* another region's: give it back */
				__atomic_fetch_or(&m->wlog_buf[w],
						  1ULL << (p % 64),
						  __ATOMIC_RELEASE);
				continue;
			}
			p -= first;
			if (!(map[p / 64] & (1ULL << (p % 64))))
				n++;
			map[p / 64] |= 1ULL << (p % 64);
		}
	}
	return n;
}

uint64_t guest_mem_low_end(const struct guest_mem *m)
{
	return m->nregions ? m->region[0].gpa + m->region[0].size : 0;
}
