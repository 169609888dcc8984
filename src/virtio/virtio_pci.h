/*
 * virtio/virtio_pci.h - the virtio 1.2 PCI (modern) transport: vendor
 * capabilities for common, notify, ISR, device and PCI-cfg access; BAR 0
 * holds common config (0x0000), ISR (0x1000) and device config (0x2000);
 * BAR 2 holds the doorbells, one 4 KiB page per virtqueue
 * (notify_off_multiplier 4096, queue_notify_off = queue index); BAR 4 holds
 * the MSI-X table (0x0000) and PBA (0x0800). INTx is the fallback.
 *
 * Doorbells: in ioeventfd mode each doorbell page is a KVM ioeventfd and a
 * per-device thread serves kicks without a userspace exit; in poll mode the
 * doorbell BAR is ordinary host memory mapped into the guest (no exit at
 * all) and the shared doorbell poller thread watches it.
 */
#ifndef DVMM_VIRTIO_VIRTIO_PCI_H
#define DVMM_VIRTIO_VIRTIO_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"
#include "machine/pci.h"
#include "virtio/virtio.h"

enum doorbell_mode { DOORBELL_IOEVENTFD, DOORBELL_POLL };

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040   /* + device id, modern-only */
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4096
#define VIRTIO_PCI_BAR_CFG 0
#define VIRTIO_PCI_BAR_NOTIFY 2
#define VIRTIO_PCI_BAR_MSIX 4
#define VIRTIO_PCI_MSIX_VECTORS (VIRTIO_MAX_QUEUES + 1)
#define VIRTIO_MSI_NO_VECTOR 0xffff

struct doorbell_poller;

struct virtio_pci_msix_vec {
	uint64_t addr;
	uint32_t data;
	bool masked;
	bool pending;             /* PBA bit */
	int gsi;                  /* KVM MSI route, -1 when none */
	int irqfd;                /* eventfd bound to gsi, -1 when none */
};

struct virtio_pci {
	struct pci_device pci;
	struct virtio_device *vd;
	struct vm *vm;
	enum doorbell_mode mode;
	struct doorbell_poller *poller;

	pthread_mutex_t lock;     /* transport registers below */
	uint32_t device_feature_select, driver_feature_select;
	uint64_t driver_features; /* written by the driver, pending FEATURES_OK */
	uint16_t queue_select;
	uint16_t msix_config;     /* vector for config changes */
	uint8_t isr;              /* bit0 queue, bit1 config (INTx) */
	bool msix_enabled, msix_masked;
	struct {
		uint16_t size;
		uint16_t msix_vector;
		bool enable;
		uint64_t desc, driver, device;
	} q[VIRTIO_MAX_QUEUES];
	struct virtio_pci_msix_vec msix[VIRTIO_PCI_MSIX_VECTORS];

	/* doorbells */
	int kick_fd[VIRTIO_MAX_QUEUES];   /* ioeventfd mode */
	uint8_t *doorbell_mem;            /* poll mode: the notify BAR */
	int doorbell_slot;                /* poll mode memslot, -1 if none */
	pthread_t kick_thread;            /* ioeventfd mode */
	bool kick_thread_started;
	int stop_fd;                      /* wakes the kick thread */
	uint64_t kicks;                   /* doorbells served */
	uint64_t interrupts;              /* interrupts raised */
};

/*
 * Create the transport for @vd and put it on @bus. @poller is required in
 * poll mode, ignored in ioeventfd mode.
 */
int virtio_pci_init(struct virtio_pci *vp, struct virtio_device *vd,
		    struct vm *vm, struct pci_bus *bus, enum doorbell_mode mode,
		    struct doorbell_poller *poller);
void virtio_pci_destroy(struct virtio_pci *vp);

/*
 * The doorbell poller: one host thread that watches every registered
 * doorbell word (atomic exchange with a sentinel, so no kick is lost) and
 * calls the device's queue_kick. Busy-polls one host core while the VM
 * runs.
 */
struct doorbell_poller *doorbell_poller_create(void);
int doorbell_poller_add(struct doorbell_poller *p, volatile uint32_t *word,
			struct virtio_device *vd, uint16_t q);
void doorbell_poller_remove_device(struct doorbell_poller *p,
				   struct virtio_device *vd);
void doorbell_poller_destroy(struct doorbell_poller *p);

#endif
