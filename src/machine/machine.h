/*
 * machine/machine.h - the PC that dvmm builds around a VM: legacy devices,
 * ACPI tables, and the PVH boot of a kernel with its command line and
 * initrd. Created afresh on every (re)boot; the CMOS NVRAM and clock offset
 * travel across reboots through struct machine_persist.
 */
#ifndef DVMM_MACHINE_MACHINE_H
#define DVMM_MACHINE_MACHINE_H

#include <stdint.h>

#include "core/vm.h"
#include "machine/devices.h"
#include "machine/pci.h"
#include "util/err.h"
#include "virtio/virtio_pci.h"

#define MACHINE_MAX_DISKS 8
#define MACHINE_MAX_NICS 8
#define MACHINE_MAX_VIRTIO (MACHINE_MAX_DISKS + MACHINE_MAX_NICS + 2)

struct machine_disk {
	const char *path;
	bool readonly;
};

struct machine_nic {
	const char *tap; /* NULL: dvmm creates one */
	bool has_mac;
	uint8_t mac[6];
};

struct machine_config {
	const char *kvm_path;
	uint64_t ram_size;
	uint8_t *ram; /* ram_size bytes kept by the caller (a cluster's DSM);
			NULL: the VM allocates its own */
	int ncpus;
	const char *kernel_path;
	const char *initrd_path; /* NULL for none */
	const char *cmdline;	 /* NULL for empty */
	int console_out_fd;
	int console_in_fd; /* -1 for no console input */
	enum doorbell_mode doorbell;
	int ndisks;
	struct machine_disk disk[MACHINE_MAX_DISKS];
	int nnics;
	struct machine_nic nic[MACHINE_MAX_NICS];
	bool rng;
	int vconsole_out_fd; /* -1: no virtio-console */
};

enum virtio_kind {
	VIRTIO_KIND_BLK,
	VIRTIO_KIND_NET,
	VIRTIO_KIND_RNG,
	VIRTIO_KIND_CONSOLE
};

/* One virtio device and its PCI transport. */
struct machine_virtio {
	enum virtio_kind kind;
	void *dev; /* struct virtio_blk / _net / ... */
	struct virtio_pci vp;
	bool transport_up;
};

/* What survives a guest reset, as on a real PC. */
struct machine_persist {
	int valid;
	uint8_t nvram[128];
	long long rtc_offset_sec;
};

struct machine {
	struct vm vm;
	struct uart8250 uart;
	struct cmos_rtc rtc;
	struct i8042 kbd;
	struct debug_exit dbg;
	struct acpi_pm pm;
	struct pci_bus pci;
	struct doorbell_poller *poller;
	int nvirtio;
	struct machine_virtio virtio[MACHINE_MAX_VIRTIO];
	unsigned int devices_up; /* bit per device initialised */
	uint32_t entry;
};

int machine_create(struct machine *pc, const struct machine_config *cfg,
		   const struct machine_persist *keep, struct err *e);
/* Start the vCPUs. */
int machine_start(struct machine *pc, struct err *e);
/* Tear down; saves what survives a reset into @keep if non-NULL. */
void machine_destroy(struct machine *pc, struct machine_persist *keep);

#endif
