/*
 * virtio.h - the user-mode virtio 1.2 driver library of the test guest:
 * virtio-pci (modern interface, vendor capabilities), device status and
 * feature negotiation, split virtqueues (direct and indirect descriptors,
 * EVENT_IDX / NO_NOTIFY kick suppression, polling with a kvmclock
 * timeout), MSI-X vectors counted by the kernel, and DMA memory. Also the
 * small block and entropy drivers that several tests share.
 *
 * DMA memory comes from a static .bss arena: the mem test skips the guest
 * image, so rings and buffers there are never overwritten, and an address
 * in it is its guest physical address (identity map).
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include "pci.h"

#define VIRTIO_ID_NET		1
#define VIRTIO_ID_BLOCK		2
#define VIRTIO_ID_CONSOLE	3
#define VIRTIO_ID_RNG		4

#define VIRTIO_F_INDIRECT_DESC	28
#define VIRTIO_F_EVENT_IDX	29
#define VIRTIO_F_VERSION_1	32
#define VIRTIO_F_ACCESS_PLATFORM 33
#define BIT(n)			(1ULL << (n))

#define VIRTIO_S_ACKNOWLEDGE	1
#define VIRTIO_S_DRIVER		2
#define VIRTIO_S_DRIVER_OK	4
#define VIRTIO_S_FEATURES_OK	8
#define VIRTIO_S_NEEDS_RESET	64
#define VIRTIO_S_FAILED		128

#define VIRTIO_MAX_DEVS		16
#define VQ_MAX			16	/* queues set up per device */
#define VQ_INDIRECT_MAX		16	/* descriptors per indirect table */
#define VQ_MAX_SIZE		256	/* we never use bigger rings */
#define VQ_SPIN_NS		(1 * NSEC_PER_MSEC)

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

#define VRING_DESC_F_NEXT	1
#define VRING_DESC_F_WRITE	2
#define VRING_DESC_F_INDIRECT	4

struct vring_avail {
	u16 flags;
	u16 idx;
	u16 ring[];		/* then u16 used_event */
};

#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_used_elem {
	u32 id;
	u32 len;
};

struct vring_used {
	u16 flags;
	u16 idx;
	struct vring_used_elem ring[];	/* then u16 avail_event */
};

#define VRING_USED_F_NO_NOTIFY	1

/* One buffer of a request: device-readable ones first, then writable. */
struct vbuf {
	u64 addr;
	u32 len;
	bool write;
};

struct vdev;

/*
 * A page each: with several queue pairs, different CPUs (in a cluster VM,
 * on different nodes) drive different queues, and a distributed memory
 * would move a shared page on every request.
 */
struct vq {
	struct vdev *vd;
	u16 index, size;		/* index: the device's queue number */
	bool ready;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	struct vring_desc *indirect;	/* size tables of VQ_INDIRECT_MAX */
	void **cookie;			/* by head: the caller's token */
	u16 *chain_len;			/* by head: descriptors used, 0 = free */
	volatile u16 *notify;		/* the doorbell */
	u16 free_head, nfree;
	u16 avail_idx;			/* our copy of avail->idx */
	u16 last_used;			/* next used entry to read */
	u16 kicked_idx;			/* avail_idx at the last kick decision */
	bool irq_wanted;
	int msi_slot;			/* percpu msi[] counter, -1 if none */
	u64 spin_ns;			/* vq_wait spins this long, then halts */
	u64 kicks, kicks_suppressed;
	char error[96];			/* a device bug seen in the used ring */
} __attribute__((aligned(4096)));

struct vdev {
	struct pci_dev *pci;
	u16 type;			/* VIRTIO_ID_* */
	char name[32];			/* "virtio-blk 00:03.0" */
	volatile u8 *common, *isr, *devcfg;
	u32 devcfg_len;
	u64 notify_base;
	u32 notify_mult, notify_len;
	u64 offered, features;
	bool msix;			/* MSI-X enabled and usable */
	int config_msi_slot;		/* -1 if none */
	int msi_slots[VQ_MAX];		/* by vq[] slot, kept across resets */
	struct vq vq[VQ_MAX];		/* usually vq[q] is queue q */
	void *priv;			/* the device driver's state */
	bool broken;			/* timed out or misbehaved: re-init */
};

extern struct vdev vdevs[VIRTIO_MAX_DEVS];
extern int nvdevs;

/* Find the virtio devices on PCI (once). False with msg if PCI failed. */
bool virtio_probe(char *msg);
/* The n-th device of this type (0-based), or NULL. */
struct vdev *virtio_find(u16 type, int n);
const char *virtio_type_name(u16 type);

/*
 * Reset, ACKNOWLEDGE, DRIVER, negotiate (VERSION_1, plus INDIRECT_DESC
 * and EVENT_IDX unless the command line says vq_indirect=0 /
 * vq_event_idx=0, plus the wanted device bits the device offers),
 * FEATURES_OK and read it back, enable MSI-X. On failure sets FAILED.
 */
bool virtio_begin(struct vdev *vd, u64 want, char *msg);
/*
 * Set up queue q with at most max_size entries (the device's size if
 * smaller); irq: give it an MSI-X vector counted by the kernel.
 */
bool virtio_setup_vq(struct vdev *vd, u16 q, u16 max_size, bool irq,
		     char *msg);
/*
 * The same for device queue q kept in vd->vq[slot] (e.g. a control queue
 * numbered beyond VQ_MAX).
 */
bool virtio_setup_vq_at(struct vdev *vd, u16 slot, u16 q, u16 max_size,
			bool irq, char *msg);
/* DRIVER_OK, then check the device did not object. */
bool virtio_ready(struct vdev *vd, char *msg);
/* Write 0 to device_status and wait (1 s) until it reads 0. */
bool virtio_reset(struct vdev *vd);
u8 virtio_status(struct vdev *vd);
/* Set up and DRIVER_OK, not broken, no NEEDS_RESET/FAILED: reusable. */
bool virtio_live(struct vdev *vd);
void virtio_set_status(struct vdev *vd, u8 status);
/* Device configuration, consistent across config_generation changes. */
void virtio_cfg_read(struct vdev *vd, u32 off, void *buf, u32 len);
u64 virtio_config_irqs(struct vdev *vd);
/* Point the configuration-change vector at CPU cpu; false if it has none. */
bool virtio_config_irq_cpu(struct vdev *vd, u32 cpu);

static inline bool virtio_has(const struct vdev *vd, int bit)
{
	return vd->features & BIT(bit);
}

/* DMA memory from the .bss arena, zeroed; NULL when exhausted. */
void *dma_alloc(u64 size, u64 align);

/*
 * Post a request of n buffers with a token; indirect: as one indirect
 * descriptor if the feature was negotiated (and n > 1). -1: no room.
 * Does not kick.
 */
int vq_add(struct vq *q, const struct vbuf *b, int n, void *cookie,
	   bool indirect);
/* Kick unless the device said it needs none (EVENT_IDX or NO_NOTIFY). */
bool vq_kick(struct vq *q);
/* Write the doorbell unconditionally. */
void vq_notify(struct vq *q);
static inline bool vq_pending(struct vq *q)
{
	return __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) != q->last_used;
}
/* Take one used entry: 1 (cookie, len set), 0 none, -1 device bug. */
int vq_get(struct vq *q, void **cookie, u32 *len);
/*
 * Wait for a used entry (spin, then halt); false on timeout. A caller for
 * whom that is fatal sets vd->broken (requests are stuck in the ring).
 */
bool vq_wait(struct vq *q, u64 timeout_ns);
/* Ask for interrupts after each completion, or suppress them. */
void vq_set_irq(struct vq *q, bool on);
/* Interrupts counted on the queue's MSI-X vector so far. */
u64 vq_irqs(struct vq *q);
/*
 * Point the queue's MSI-X vector at CPU cpu (sys.apic[cpu]), so that
 * vq_wait there halts until the interrupt. False if it has no vector.
 */
bool vq_set_irq_cpu(struct vq *q, u32 cpu);
/* vq_wait for the first of n queues to have a used entry. */
bool vq_wait_any(struct vq *const *qs, int n, u64 timeout_ns);

/* ---- drivers shared by several tests ---- */

/* virtio-blk (tests_blk.c) */
struct blk;
struct blk *blk_open(int n, char *msg);
/* One synchronous request (type VIRTIO_BLK_T_*); returns the status byte,
 * or -1 on timeout / device error (msg set). */
int blk_sync(struct blk *b, u32 type, u64 sector, void *buf, u32 len,
	     char *msg);
u64 blk_capacity(struct blk *b);

/* virtio-rng (tests_virtio.c) */
bool rng_open(struct vdev *vd, char *msg);
/* Read up to len random bytes; returns the count, -1 on failure. */
long rng_read(struct vdev *vd, void *buf, u32 len, u64 timeout_ns,
	      char *msg);

#endif
