/*
 * core/vm_io.c - ioeventfds, irqfds, the GSI routing table (default irqchip
 * routes plus MSI routes) and extra memory slots for a VM.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/dirty_ring.h"
#include "core/vm_io.h"

#define IRQCHIP_PINS 24 /* IOAPIC pins; 0-15 also on the PICs */
#define MSI_GSI_FIRST 24
#define MSI_GSI_COUNT VM_MAX_MSI_ROUTES
#define EXTRA_SLOT_FIRST 8
#define EXTRA_SLOT_COUNT 64

int vm_ioeventfd(struct vm *vm, uint64_t gpa, uint32_t len, int fd, bool assign)
{
	struct kvm_ioeventfd io = {.addr = gpa, .len = len, .fd = fd};

	if (!assign)
		io.flags = KVM_IOEVENTFD_FLAG_DEASSIGN;
	return ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

int vm_irqfd(struct vm *vm, int fd, uint32_t gsi, bool assign)
{
	struct kvm_irqfd irqfd = {.fd = (uint32_t)fd, .gsi = gsi};

	if (!assign)
		irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
	return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

static void add_chip_route(struct kvm_irq_routing_entry *e, uint32_t gsi,
			   uint32_t chip, uint32_t pin)
{
	memset(e, 0, sizeof(*e));
	e->gsi = gsi;
	e->type = KVM_IRQ_ROUTING_IRQCHIP;
	e->u.irqchip.irqchip = chip;
	e->u.irqchip.pin = pin;
}

/* Rebuild and install the whole table; call with vm->lock held. */
static int commit_routes(struct vm *vm)
{
	size_t max = IRQCHIP_PINS + 16 + MSI_GSI_COUNT;
	struct kvm_irq_routing *r;
	struct kvm_irq_routing_entry *e;
	uint32_t n = 0;
	int rc;

	r = calloc(1, sizeof(*r) + max * sizeof(*e));
	if (!r)
		return -ENOMEM;
	e = r->entries;
	/* The defaults KVM_CREATE_IRQCHIP installed: PIC and IOAPIC. */
	for (uint32_t gsi = 0; gsi < 16; gsi++)
		add_chip_route(&e[n++], gsi,
			       gsi < 8 ? KVM_IRQCHIP_PIC_MASTER :
					 KVM_IRQCHIP_PIC_SLAVE,
			       gsi % 8);
	for (uint32_t gsi = 0; gsi < IRQCHIP_PINS; gsi++)
		add_chip_route(&e[n++], gsi, KVM_IRQCHIP_IOAPIC, gsi);
	for (int i = 0; i < MSI_GSI_COUNT; i++) {
		const struct vm_msi_route *m = &vm->msi_routes[i];

		if (!m->used)
			continue;
		memset(&e[n], 0, sizeof(e[n]));
		e[n].gsi = (uint32_t)(MSI_GSI_FIRST + i);
		e[n].type = KVM_IRQ_ROUTING_MSI;
		e[n].u.msi.address_lo = (uint32_t)m->addr;
		e[n].u.msi.address_hi = (uint32_t)(m->addr >> 32);
		e[n].u.msi.data = m->data;
		n++;
	}
	r->nr = n;
	rc = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, r) < 0 ? -errno : 0;
	free(r);
	return rc;
}

int vm_msi_route_add(struct vm *vm, uint64_t addr, uint32_t data)
{
	int rc = -ENOSPC;

	pthread_mutex_lock(&vm->route_lock);
	for (int i = 0; i < MSI_GSI_COUNT; i++) {
		struct vm_msi_route *m = &vm->msi_routes[i];

		if (m->used)
			continue;
		*m = (struct vm_msi_route){
			.used = true, .addr = addr, .data = data};
		rc = commit_routes(vm);
		if (rc)
			m->used = false;
		else
			rc = MSI_GSI_FIRST + i;
		break;
	}
	pthread_mutex_unlock(&vm->route_lock);
	return rc;
}

static struct vm_msi_route *route_of(struct vm *vm, int gsi)
{
	int i = gsi - MSI_GSI_FIRST;

	if (i < 0 || i >= MSI_GSI_COUNT || !vm->msi_routes[i].used)
		return NULL;
	return &vm->msi_routes[i];
}

int vm_msi_route_set(struct vm *vm, int gsi, uint64_t addr, uint32_t data)
{
	struct vm_msi_route *m;
	int rc = -ENOENT;

	pthread_mutex_lock(&vm->route_lock);
	m = route_of(vm, gsi);
	if (m) {
		m->addr = addr;
		m->data = data;
		rc = commit_routes(vm);
	}
	pthread_mutex_unlock(&vm->route_lock);
	return rc;
}

int vm_msi_route_del(struct vm *vm, int gsi)
{
	struct vm_msi_route *m;
	int rc = -ENOENT;

	pthread_mutex_lock(&vm->route_lock);
	m = route_of(vm, gsi);
	if (m) {
		m->used = false;
		rc = commit_routes(vm);
	}
	pthread_mutex_unlock(&vm->route_lock);
	return rc;
}

int vm_map_host_memory(struct vm *vm, uint64_t gpa, void *hva, uint64_t size)
{
	int rc = -ENOSPC;

	pthread_mutex_lock(&vm->route_lock);
	for (int i = 0; i < EXTRA_SLOT_COUNT; i++) {
		uint64_t bit = 1ULL << i;
		struct kvm_userspace_memory_region slot = {
			.slot = (uint32_t)(EXTRA_SLOT_FIRST + i),
			.guest_phys_addr = gpa,
			.memory_size = size,
			.userspace_addr = (uint64_t)(uintptr_t)hva,
		};

		if (vm->extra_slots & bit)
			continue;
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
			rc = -errno;
		} else {
			vm->extra_slots |= bit;
			rc = EXTRA_SLOT_FIRST + i;
		}
		break;
	}
	pthread_mutex_unlock(&vm->route_lock);
	return rc;
}

int vm_unmap_host_memory(struct vm *vm, int slot)
{
	int i = slot - EXTRA_SLOT_FIRST;
	struct kvm_userspace_memory_region r = {.slot = (uint32_t)slot};
	int rc = -ENOENT;

	pthread_mutex_lock(&vm->route_lock);
	if (i >= 0 && i < EXTRA_SLOT_COUNT && (vm->extra_slots >> i) & 1) {
		/* A region of size 0 deletes the slot. */
		rc = ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ?
			     -errno :
			     0;
		if (!rc)
			vm->extra_slots &= ~(1ULL << i);
	}
	pthread_mutex_unlock(&vm->route_lock);
	return rc;
}

/* ---- dirty logging of guest RAM (migration) ---- */

int vm_dirty_log(struct vm *vm, bool on)
{
	int rc = 0;

	for (int i = 0; i < vm->mem.nregions && !rc; i++)
		rc = vm_set_ram_slot(vm, i, on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
	return rc;
}

int vm_dirty_pages(struct vm *vm, int region, uint64_t *bitmap)
{
	struct kvm_dirty_log log = {.slot = (uint32_t)region,
				    .dirty_bitmap = bitmap};

	if (region < 0 || region >= vm->mem.nregions)
		return -EINVAL;
	if (vm->rings)
		return dirty_ring_take(vm, region, bitmap);
	return ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) ? -errno : 0;
}
