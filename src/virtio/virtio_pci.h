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
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + device id, modern-only */
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4096
#define VIRTIO_PCI_BAR_CFG 0
#define VIRTIO_PCI_BAR_NOTIFY 2
#define VIRTIO_PCI_BAR_MSIX 4
#define VIRTIO_PCI_MSIX_VECTORS (VIRTIO_MAX_QUEUES + 1)
#define VIRTIO_MSI_NO_VECTOR 0xffff

/* BAR 0 regions and BAR 4 layout. */
#define VIRTIO_PCI_BAR_CFG_SIZE 0x4000
#define VIRTIO_PCI_COMMON_OFF 0x0000
#define VIRTIO_PCI_COMMON_LEN 0x3c /* through queue_reset */
#define VIRTIO_PCI_ISR_OFF 0x1000
#define VIRTIO_PCI_DEVICE_OFF 0x2000
#define VIRTIO_PCI_DEVICE_MAX 0x2000 /* largest device config */
#define VIRTIO_PCI_BAR_MSIX_SIZE 0x1000
#define VIRTIO_PCI_MSIX_TABLE_OFF 0x0000
#define VIRTIO_PCI_MSIX_PBA_OFF 0x0800

/*
 * Poll mode: the first 4 bytes of each doorbell page hold this value until
 * the driver writes its notification there (virtio 1.2, 4.1.5.2: the queue
 * index as a 16-bit write, which leaves 0xffff000q).
 */
#define DOORBELL_SENTINEL 0xffffffffu

struct doorbell_poller;

/*
 * The KVM calls the transport makes (core/vm_io.h by default). Unit tests
 * replace them to run the transport without a VM.
 */
struct virtio_pci_kvm_ops {
	int (*ioeventfd)(struct vm *vm, uint64_t gpa, uint32_t len, int fd,
			 bool assign);
	int (*msi_route_add)(struct vm *vm, uint64_t addr, uint32_t data);
	int (*msi_route_set)(struct vm *vm, int gsi, uint64_t addr,
			     uint32_t data);
	int (*msi_route_del)(struct vm *vm, int gsi);
	int (*irqfd)(struct vm *vm, int fd, uint32_t gsi, bool assign);
	int (*map_host_memory)(struct vm *vm, uint64_t gpa, void *hva,
			       uint64_t size);
	int (*unmap_host_memory)(struct vm *vm, int slot);
};

extern const struct virtio_pci_kvm_ops virtio_pci_kvm_default;

/*
 * Use @ops (NULL: the default) in transports initialised from now on.
 * For tests; not thread-safe against a concurrent virtio_pci_init.
 */
void virtio_pci_set_kvm_ops(const struct virtio_pci_kvm_ops *ops);

struct virtio_pci_msix_vec {
	uint64_t addr;
	uint32_t data;
	bool masked;
	bool pending; /* PBA bit */
	bool dirty;   /* addr/data differ from the route's */
	int gsi;      /* KVM MSI route, -1 when none */
	int irqfd;    /* eventfd bound to gsi, -1 when none */
};

struct virtio_pci {
	struct pci_device pci;
	struct virtio_device *vd;
	struct vm *vm;
	enum doorbell_mode mode;
	struct doorbell_poller *poller;
	const struct virtio_pci_kvm_ops *kvm;

	/*
	 * Lock order: PCI bus lock -> lock -> vd->lock -> vq->lock ->
	 * irq_lock. notify_queue/notify_config take irq_lock only, so a
	 * device may interrupt from any thread (not holding vq->lock).
	 */
	pthread_mutex_t lock; /* transport registers and BARs */
	uint32_t device_feature_select, driver_feature_select;
	uint64_t
		driver_features; /* written by the driver, pending FEATURES_OK */
	uint16_t queue_select;
	struct {
		uint16_t size;
		uint16_t msix_vector; /* written holding both locks */
		bool enable;
		uint64_t desc, driver, device;
	} q[VIRTIO_MAX_QUEUES];

	pthread_mutex_t irq_lock; /* interrupt state below */
	uint16_t msix_config;	  /* vector for config changes */
	uint8_t isr;		  /* bit0 queue, bit1 config (INTx) */
	bool intx_level;	  /* INTx line asserted */
	bool msix_enabled, msix_masked;
	bool dead; /* destroyed: interrupts are dropped */
	struct virtio_pci_msix_vec msix[VIRTIO_PCI_MSIX_VECTORS];
	uint64_t interrupts; /* interrupts raised */

	/* config space: capability offsets */
	uint8_t cap_cfg; /* VIRTIO_PCI_CAP_PCI_CFG */
	uint8_t cap_msix;

	/* BARs as registered with KVM and the io registry (lock) */
	bool bar_on[PCI_NUM_BARS];
	uint64_t bar_gpa[PCI_NUM_BARS];
	uint16_t ioevent_lens[VIRTIO_MAX_QUEUES]; /* bit L: length L on */

	/* doorbells */
	uint64_t notify_bar_size;	/* BAR 2 bytes */
	int kick_fd[VIRTIO_MAX_QUEUES]; /* ioeventfd mode */
	uint8_t *doorbell_mem;		/* poll mode: the notify BAR */
	int doorbell_slot;		/* poll mode memslot, -1 if none */
	pthread_t kick_thread;		/* ioeventfd mode */
	bool kick_thread_started;
	int stop_fd;	/* wakes the kick thread */
	int epoll_fd;	/* the kick thread's */
	uint64_t kicks; /* doorbells served (atomic) */
};

/*
 * Create the transport for @vd and put it on @bus. @poller is required in
 * poll mode, ignored in ioeventfd mode.
 */
int virtio_pci_init(struct virtio_pci *vp, struct virtio_device *vd,
		    struct vm *vm, struct pci_bus *bus, enum doorbell_mode mode,
		    struct doorbell_poller *poller);
/*
 * Quiesce the device (ops->reset if the driver had started it), stop the
 * kick thread or leave the poller, remove ioeventfds, irqfds, MSI routes
 * and the doorbell memslot, unregister the BAR ranges, close fds. The
 * device is detached from the bus's callbacks but stays in its slot (the
 * bus has no removal), so @vp must outlive the bus's use of it. Call it
 * with the vCPUs stopped. vd->transport becomes a no-op.
 */
void virtio_pci_destroy(struct virtio_pci *vp);

/*
 * Migration: what a transport and its device carry to another host. The
 * device is quiesced (virtio_pci_quiesce) while it is saved; on the other
 * side the same device, created with the same options and its backend
 * acquired, takes it with virtio_pci_load before the vCPUs run.
 */
struct virtio_pci_state {
	uint8_t cfg[PCI_CFG_SIZE]; /* PCI config space */
	uint16_t device_id, num_queues;
	uint32_t device_feature_select, driver_feature_select;
	uint64_t driver_features, guest_features;
	uint16_t queue_select;
	uint8_t status, config_generation;
	uint16_t msix_config;
	uint8_t isr;
	bool intx_level;
	struct {
		uint16_t size, msix_vector;
		bool enable;
		uint64_t desc, driver, device;
		uint16_t last_avail, used_idx, signalled_used;
		bool signalled_valid, kick_wanted;
	} q[VIRTIO_MAX_QUEUES];
	struct {
		uint64_t addr;
		uint32_t data;
		bool masked, pending;
	} msix[VIRTIO_PCI_MSIX_VECTORS];
	uint8_t *dev; /* the device's own bytes (ops->save), malloc'd */
	size_t dev_len;
};

/* Stop the device touching guest memory (ops->quiesce); and undo it. */
void virtio_pci_quiesce(struct virtio_pci *vp);
void virtio_pci_resume(struct virtio_pci *vp);
/* Fill @s from a quiesced device; 0 or a negative errno. */
int virtio_pci_save(struct virtio_pci *vp, struct virtio_pci_state *s);
void virtio_pci_state_free(struct virtio_pci_state *s);
/*
 * Take @s (from the network: every value is checked) into a device that
 * the driver has not touched: config space and BARs, MSI-X table, transport
 * registers, features and status, queue addresses and ring indices, the
 * device's own bytes; a device the driver had started is activated and its
 * queues are looked at for work. 0, or -EINVAL with @why filled.
 */
int virtio_pci_load(struct virtio_pci *vp, struct pci_bus *bus,
		    const struct virtio_pci_state *s, char *why,
		    size_t why_len);

/*
 * The doorbell poller: one host thread that watches every registered
 * doorbell word (atomic exchange with a sentinel, so no kick is lost) and
 * calls the device's queue_kick. Busy-polls one host core while doorbells
 * keep coming, and backs off to short sleeps when they stop (see
 * doorbell_poller_set_backoff).
 */
struct doorbell_poller *doorbell_poller_create(void);
/*
 * Watch @word (initialised to DOORBELL_SENTINEL by the caller) and call
 * @vd's queue_kick(@q) when it changes; with @kicks non-NULL, count the
 * kicks there (atomically). Safe while the thread runs. queue_kick is
 * called with the poller's lock held: it must not call back into the
 * poller.
 */
int doorbell_poller_add(struct doorbell_poller *p, volatile uint32_t *word,
			struct virtio_device *vd, uint16_t q);
int doorbell_poller_add_counted(struct doorbell_poller *p,
				volatile uint32_t *word,
				struct virtio_device *vd, uint16_t q,
				uint64_t *kicks);
/* Once this returns, the thread never calls @vd's queue_kick again. */
void doorbell_poller_remove_device(struct doorbell_poller *p,
				   struct virtio_device *vd);
void doorbell_poller_destroy(struct doorbell_poller *p);

/*
 * Idle back-off: after @idle_spin_us without a doorbell the thread sleeps
 * between rounds, @sleep_min_us at first, doubling up to @sleep_max_us;
 * any doorbell returns it to spinning. @sleep_max_us == 0: never sleep
 * (one host core busy for good). Defaults: DOORBELL_IDLE_SPIN_US,
 * DOORBELL_SLEEP_MIN_US, DOORBELL_SLEEP_MAX_US.
 */
#define DOORBELL_IDLE_SPIN_US 2000
#define DOORBELL_SLEEP_MIN_US 50
#define DOORBELL_SLEEP_MAX_US 1000
void doorbell_poller_set_backoff(struct doorbell_poller *p,
				 uint32_t idle_spin_us, uint32_t sleep_min_us,
				 uint32_t sleep_max_us);

struct doorbell_poller_stats {
	uint64_t rounds;      /* scans of every word */
	uint64_t kicks;	      /* queue_kick calls */
	uint64_t sleeps;      /* back-off sleeps */
	unsigned int entries; /* words watched */
};
void doorbell_poller_get_stats(struct doorbell_poller *p,
			       struct doorbell_poller_stats *s);

#endif
