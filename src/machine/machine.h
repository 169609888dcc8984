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
#include "irqchip/userchip.h"
#include "machine/devices.h"
#include "machine/pci.h"
#include "util/err.h"
#include "virtio/devices.h"
#include "virtio/virtio_pci.h"

#define MACHINE_MAX_DISKS 8
#define MACHINE_MAX_NICS 8
#define MACHINE_MAX_VIRTIO (MACHINE_MAX_DISKS + MACHINE_MAX_NICS + 2)

struct machine_disk {
	const char *path; /* the image, or with remote the agent's URI */
	bool readonly;
	bool remote; /* served by `dvmm disk-serve` at tcp:HOST:PORT */
};

/*
 * A virtio-net device. Pair 0 is the device itself (tap, and in a cluster
 * its home node); with npairs > 1 it is multiqueue and pair p (1 <= p <
 * npairs) has its own tap and, in a cluster, the node that serves it.
 */
struct machine_nic {
	const char *tap; /* NULL: dvmm creates one */
	bool has_mac;
	uint8_t mac[6];
	int node;   /* --net node=K in a cluster; -1: the default node */
	int npairs; /* 0 or 1: one queue pair */
	struct {
		const char *tap; /* NULL: dvmm creates one */
		int node;
	} pair[VIRTIO_NET_MAX_PAIRS];
};

/*
 * What a node of a cluster builds (machine_config.cluster; NULL on one
 * node). Node 0 has the legacy devices, the IOAPIC/PIC/PIT, the ACPI
 * tables and the boot vCPU; every node has its own vCPUs and the virtio
 * devices whose home it is, and forwards the rest through these hooks.
 */
struct machine_cluster {
	int self;
	uint64_t local_cpus;		     /* bit per vCPU run here */
	int nvirtio;			     /* devices in machine order: */
	int virtio_home[MACHINE_MAX_VIRTIO]; /* disks, nics, rng, vconsole */
	struct userchip_remote remote;	     /* interrupts to other nodes */
	pci_remote_cfg_fn remote_cfg;	     /* config of remote slots */
	void *remote_cfg_opaque;
	ioreg_default_fn forward; /* accesses nothing here claims */
	void *forward_opaque;
	io_handler_fn cf9; /* nodes but 0: the reset port */
	void *cf9_opaque;
	node_info_events_fn events; /* DSM traffic per page range */
	void *events_opaque;
	/* NIC i (machine order among NICs): its pairs served by other nodes */
	struct virtio_net_remote_ops net_remote[MACHINE_MAX_NICS];
	/* nodes but 0: join node 0's guest TSC */
	bool set_tsc_offset;
	int64_t tsc_offset;
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
	/* the key remote disks authenticate with (the migration secret) */
	const uint8_t *disk_key;
	size_t disk_key_len;
	int nnics;
	struct machine_nic nic[MACHINE_MAX_NICS];
	bool rng;
	int vconsole_out_fd; /* -1: no virtio-console */
	bool user_irqchip;   /* --irqchip user (always on a cluster) */
	bool incoming;	     /* RAM and state will come from a migration */
	uint32_t dirty_ring; /* --dirty-ring entries; 0: the dirty bitmap */
	const struct machine_cluster *cluster; /* NULL: one node */
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
	struct node_info info;
	struct userchip *uchip; /* NULL with the in-kernel irqchip */
	struct doorbell_poller *poller;
	int nvirtio;
	struct machine_virtio virtio[MACHINE_MAX_VIRTIO];
	unsigned int devices_up; /* bit per device initialised */
	int vindex;		 /* virtio devices considered so far */
	uint32_t entry;
};

int machine_create(struct machine *pc, const struct machine_config *cfg,
		   const struct machine_persist *keep, struct err *e);
/* Start the vCPUs. */
int machine_start(struct machine *pc, struct err *e);
/* Tear down; saves what survives a reset into @keep if non-NULL. */
void machine_destroy(struct machine *pc, struct machine_persist *keep);

#endif
