/*
 * core/vm_io.h - the KVM fast paths a device transport uses without knowing
 * KVM: ioeventfds (a guest write signals an eventfd, no userspace exit),
 * irqfds with MSI routes (an eventfd write interrupts the guest), and extra
 * memory slots (host memory the guest sees at a guest physical address,
 * such as poll-mode doorbell pages).
 */
#ifndef DVMM_CORE_VM_IO_H
#define DVMM_CORE_VM_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"

/* Assign or remove an MMIO ioeventfd of @len bytes at @gpa (any value). */
int vm_ioeventfd(struct vm *vm, uint64_t gpa, uint32_t len, int fd,
		 bool assign);

/*
 * MSI routes: allocate a GSI routed to the MSI message (@addr, @data),
 * change it, or free it. The in-kernel irqchip's default routes for GSIs
 * 0-23 are kept. Return the GSI, 0, or a negative errno.
 */
int vm_msi_route_add(struct vm *vm, uint64_t addr, uint32_t data);
int vm_msi_route_set(struct vm *vm, int gsi, uint64_t addr, uint32_t data);
int vm_msi_route_del(struct vm *vm, int gsi);

/* Make writes to @fd raise @gsi (assign) or stop doing so. */
int vm_irqfd(struct vm *vm, int fd, uint32_t gsi, bool assign);

/* Map @size bytes of host memory at guest @gpa; returns a slot id >= 0. */
int vm_map_host_memory(struct vm *vm, uint64_t gpa, void *hva, uint64_t size);
int vm_unmap_host_memory(struct vm *vm, int slot);

/*
 * Dirty logging of the guest RAM slots (vCPU writes only; dvmm's own
 * writes are not logged): turn it on or off, and fetch-and-clear the
 * bitmap of RAM region @region (a bit per 4 KiB page of that region).
 */
int vm_dirty_log(struct vm *vm, bool on);
int vm_dirty_pages(struct vm *vm, int region, uint64_t *bitmap);

#endif
