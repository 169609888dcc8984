/*
 * core/guest_mem.c - guest RAM: one anonymous host mapping split into the
 * regions of the PC layout (below the MMIO hole, above 4 GiB), and the
 * bounds-checked translation every other part uses to reach it.
 */
#include <errno.h>
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
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *m)
{
	return m->nregions ? m->region[0].gpa + m->region[0].size : 0;
}
