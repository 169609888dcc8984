/*
 * core/ioreg.c - the address-range registry: a sorted array of ranges per
 * address space, looked up by binary search under a read lock. Devices
 * register and unregister; the vCPU exit path dispatches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/ioreg.h"

int ioreg_init(struct io_registry *r)
{
	memset(r, 0, sizeof(*r));
	if (pthread_rwlock_init(&r->lock, NULL))
		return -ENOMEM;
	if (pthread_mutex_init(&r->unknown_lock, NULL)) {
		pthread_rwlock_destroy(&r->lock);
		return -ENOMEM;
	}
	return 0;
}

void ioreg_destroy(struct io_registry *r)
{
	for (int s = 0; s < IO_SPACE_COUNT; s++)
		free(r->ranges[s]);
	pthread_mutex_destroy(&r->unknown_lock);
	pthread_rwlock_destroy(&r->lock);
	memset(r, 0, sizeof(*r));
}

static bool space_valid(enum io_space space)
{
	return (unsigned int)space < IO_SPACE_COUNT;
}

/* Index of the first range whose base is greater than @addr. */
static size_t upper_bound(const struct io_range *v, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid].base <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool overlaps(const struct io_range *a, uint64_t base, uint64_t len)
{
	return base < a->base + a->len && a->base < base + len;
}

static int grow(struct io_registry *r, enum io_space space)
{
	size_t cap = r->cap[space] ? r->cap[space] * 2 : 16;
	struct io_range *n = realloc(r->ranges[space], cap * sizeof(*n));

	if (!n)
		return -ENOMEM;
	r->ranges[space] = n;
	r->cap[space] = cap;
	return 0;
}

int ioreg_register(struct io_registry *r, enum io_space space, uint64_t base,
		   uint64_t len, io_handler_fn fn, void *opaque,
		   const char *name)
{
	struct io_range *v;
	size_t pos, n;
	int rc = 0;

	if (!space_valid(space) || len == 0 || !fn || base + len < base)
		return -EINVAL;
	pthread_rwlock_wrlock(&r->lock);
	v = r->ranges[space];
	n = r->count[space];
	pos = upper_bound(v, n, base);
	if ((pos > 0 && overlaps(&v[pos - 1], base, len)) ||
	    (pos < n && overlaps(&v[pos], base, len))) {
		rc = -EEXIST;
		goto out;
	}
	if (n == r->cap[space]) {
		rc = grow(r, space);
		if (rc)
			goto out;
		v = r->ranges[space];
	}
	memmove(&v[pos + 1], &v[pos], (n - pos) * sizeof(*v));
	v[pos] = (struct io_range){.base = base,
				   .len = len,
				   .fn = fn,
				   .opaque = opaque,
				   .name = name};
	r->count[space] = n + 1;
out:
	pthread_rwlock_unlock(&r->lock);
	return rc;
}

int ioreg_unregister(struct io_registry *r, enum io_space space, uint64_t base)
{
	struct io_range *v;
	size_t pos, n;
	int rc = -ENOENT;

	if (!space_valid(space))
		return -EINVAL;
	pthread_rwlock_wrlock(&r->lock);
	v = r->ranges[space];
	n = r->count[space];
	pos = upper_bound(v, n, base);
	if (pos > 0 && v[pos - 1].base == base) {
		memmove(&v[pos - 1], &v[pos], (n - pos) * sizeof(*v));
		r->count[space] = n - 1;
		rc = 0;
	}
	pthread_rwlock_unlock(&r->lock);
	return rc;
}

bool ioreg_dispatch(struct io_registry *r, enum io_space space, uint64_t addr,
		    uint8_t *data, uint32_t len, bool is_write, int vcpu_id)
{
	if (ioreg_dispatch_local(r, space, addr, data, len, is_write, vcpu_id))
		return true;
	if (!r->dflt || !space_valid(space) || len == 0 || len > 8)
		return false;
	return r->dflt(r->dflt_opaque, space, addr, data, len, is_write,
		       vcpu_id);
}

void ioreg_set_default(struct io_registry *r, ioreg_default_fn fn, void *opaque)
{
	r->dflt = fn;
	r->dflt_opaque = opaque;
}

bool ioreg_dispatch_local(struct io_registry *r, enum io_space space,
			  uint64_t addr, uint8_t *data, uint32_t len,
			  bool is_write, int vcpu_id)
{
	const struct io_range *hit = NULL;
	struct io_range range;
	size_t pos;

	if (!space_valid(space) || len == 0 || len > 8)
		return false;
	pthread_rwlock_rdlock(&r->lock);
	pos = upper_bound(r->ranges[space], r->count[space], addr);
	if (pos > 0) {
		hit = &r->ranges[space][pos - 1];
		/* The whole access must lie inside the range. */
		if (addr - hit->base >= hit->len ||
		    len > hit->len - (addr - hit->base))
			hit = NULL;
	}
	if (hit)
		range = *hit;
	pthread_rwlock_unlock(&r->lock);
	if (!hit) {
		if (!is_write)
			memset(data, 0xff, len);
		return false;
	}
	range.fn(range.opaque, addr - range.base, data, len, is_write, vcpu_id);
	return true;
}

bool ioreg_first_unknown(struct io_registry *r, enum io_space space,
			 uint64_t addr)
{
	bool first = false;
	size_t i, n;

	if (!space_valid(space))
		return false;
	pthread_mutex_lock(&r->unknown_lock);
	n = r->unknown_count[space];
	for (i = 0; i < n; i++)
		if (r->unknown_seen[space][i] == addr)
			break;
	if (i == n && n < IOREG_MAX_UNKNOWN_LOGGED) {
		r->unknown_seen[space][n] = addr;
		r->unknown_count[space] = n + 1;
		first = true;
	}
	pthread_mutex_unlock(&r->unknown_lock);
	return first;
}
