/*
 * core/dirty_ring.c - the dirty ring (see dirty_ring.h).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/dirty_ring.h"
#include "core/vm.h"

struct dirty_rings {
	uint32_t entries;
	pthread_mutex_t lock; /* harvesting, the bitmaps */
	uint64_t *map[GUEST_MEM_MAX_REGIONS];
	uint64_t pages[GUEST_MEM_MAX_REGIONS];
};

int dirty_ring_enable(struct vm *vm, uint32_t entries, struct err *e)
{
	struct kvm_enable_cap cap = {.cap = KVM_CAP_DIRTY_LOG_RING};
	struct dirty_rings *r;
	int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);

	if (entries < DIRTY_RING_MIN || entries > DIRTY_RING_MAX ||
	    (entries & (entries - 1)))
		return err_set(e, -EINVAL,
			       "--dirty-ring wants a power of two from %d to "
			       "%d",
			       DIRTY_RING_MIN, DIRTY_RING_MAX);
	if (max <= 0 ||
	    (uint64_t)entries * sizeof(struct kvm_dirty_gfn) > (uint64_t)max)
		return err_set(e, -ENOTSUP,
			       "this KVM has no dirty ring of %u entries "
			       "(KVM_CAP_DIRTY_LOG_RING: %d bytes)",
			       entries, max);
	r = calloc(1, sizeof(*r));
	if (!r)
		return err_set(e, -ENOMEM, "out of memory");
	for (int i = 0; i < vm->mem.nregions; i++) {
		r->pages[i] = vm->mem.region[i].size / 4096;
		r->map[i] = calloc((r->pages[i] + 63) / 64, sizeof(uint64_t));
		if (!r->map[i]) {
			vm->rings = r;
			dirty_ring_free(vm);
			return err_set(e, -ENOMEM, "out of memory");
		}
	}
	cap.args[0] = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap)) {
		int rc = -errno;

		vm->rings = r;
		dirty_ring_free(vm);
		return err_set(e, rc, "cannot enable the dirty ring: %s",
			       strerror(-rc));
	}
	r->entries = entries;
	pthread_mutex_init(&r->lock, NULL);
	vm->rings = r;
	return 0;
}

int dirty_ring_map(struct vm *vm, struct vcpu *v, struct err *e)
{
	size_t len = (size_t)vm->rings->entries * sizeof(struct kvm_dirty_gfn);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd,
		       (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());

	if (p == MAP_FAILED)
		return err_set(e, -errno, "vCPU %d: cannot map its dirty ring",
			       v->id);
	v->ring = p;
	v->ring_fetch = 0;
	return 0;
}

/* One vCPU's published entries; ring lock held. */
static void harvest_one(struct dirty_rings *r, struct vcpu *v)
{
	for (;;) {
		struct kvm_dirty_gfn *g =
			&v->ring[v->ring_fetch & (r->entries - 1)];
		uint32_t flags = __atomic_load_n(&g->flags, __ATOMIC_ACQUIRE);

		if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
			break;
		if (g->slot < GUEST_MEM_MAX_REGIONS && r->map[g->slot] &&
		    g->offset < r->pages[g->slot])
			r->map[g->slot][g->offset / 64] |= 1ULL
							   << (g->offset % 64);
		__atomic_store_n(&g->flags, KVM_DIRTY_GFN_F_RESET,
				 __ATOMIC_RELEASE);
		v->ring_fetch++;
	}
}

int dirty_ring_harvest(struct vm *vm)
{
	struct dirty_rings *r = vm->rings;
	int rc = 0;

	if (!r)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].ring)
			harvest_one(r, &vm->vcpus[i]);
	if (ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
		rc = -errno;
	pthread_mutex_unlock(&r->lock);
	return rc;
}

int dirty_ring_take(struct vm *vm, int region, uint64_t *bitmap)
{
	struct dirty_rings *r = vm->rings;
	size_t bytes;
	int rc = dirty_ring_harvest(vm);

	if (rc)
		return rc;
	if (region < 0 || region >= vm->mem.nregions)
		return -EINVAL;
	bytes = (r->pages[region] + 63) / 64 * sizeof(uint64_t);
	pthread_mutex_lock(&r->lock);
	memcpy(bitmap, r->map[region], bytes);
	memset(r->map[region], 0, bytes);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

void dirty_ring_free(struct vm *vm)
{
	struct dirty_rings *r = vm->rings;

	if (!r)
		return;
	for (int i = 0; vm->vcpus && i < vm->ncpus; i++) {
		if (vm->vcpus[i].ring)
			munmap(vm->vcpus[i].ring,
			       (size_t)r->entries *
				       sizeof(struct kvm_dirty_gfn));
		vm->vcpus[i].ring = NULL;
	}
	for (int i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		free(r->map[i]);
	if (r->entries)
		pthread_mutex_destroy(&r->lock);
	free(r);
	vm->rings = NULL;
}
