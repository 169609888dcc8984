/*
 * virtio/virtio.h - a virtio device as the transport sees it: feature bits,
 * device status, queues, device configuration, and the calls a device makes
 * back (interrupt a queue, configuration changed, needs reset). Devices
 * (blk, net, console, rng: one file each) implement struct virtio_device_ops;
 * the virtio-pci transport (virtio_pci.c) implements struct virtio_transport.
 */
#ifndef DVMM_VIRTIO_VIRTIO_H
#define DVMM_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "virtio/virtqueue.h"

#define VIRTIO_MAX_QUEUES 16

/* Device status bits (virtio 1.2, 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* Device ids (virtio 1.2, 5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

struct virtio_device;

struct virtio_device_ops {
	/* Device-specific feature bits offered (transport adds VERSION_1,
	 * EVENT_IDX, INDIRECT_DESC). */
	uint64_t (*features)(struct virtio_device *vd);
	/* Device configuration space (little-endian), bounds already checked
	 * against config_size by the transport. */
	void (*config_read)(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len);
	void (*config_write)(struct virtio_device *vd, uint32_t off,
			     const void *buf, uint32_t len);
	/*
	 * The driver kicked queue @q (or, in poll mode, the poller saw its
	 * doorbell written). Called from a transport thread, never a vCPU
	 * thread; must not block for long (hand slow work to the backend).
	 */
	void (*queue_kick)(struct virtio_device *vd, uint16_t q);
	/* DRIVER_OK was set: queues are enabled, start the backend. */
	int (*activate)(struct virtio_device *vd);
	/* The driver reset the device: stop touching the queues before
	 * returning; the transport then disables them. */
	void (*reset)(struct virtio_device *vd);

	/*
	 * Migration (all optional; called from the migration thread with the
	 * vCPUs paused, never concurrently with each other).
	 *
	 * quiesce: stop taking chains from the queues and wait until every
	 * chain already taken is finished: its data written (and logged with
	 * guest_mem_log_write), its used entry pushed, its interrupt sent.
	 * Afterwards the device touches neither the rings nor guest memory
	 * until resume. Must work in any state (not activated, broken).
	 * resume: undo quiesce; look at the queues again for work that came
	 * meanwhile.
	 */
	void (*quiesce)(struct virtio_device *vd);
	void (*resume)(struct virtio_device *vd);
	/*
	 * The device's own state beyond the transport's (e.g. a MAC address,
	 * frames received for the guest but not yet delivered), as bytes:
	 * save writes at most @cap bytes into @buf and returns the length
	 * (or a negative errno); load (on a device created with the same
	 * options, before activation) takes them back, refusing with a reason
	 * in @why what does not fit this device (e.g. a disk of another
	 * size). Input to load comes from the network: check everything.
	 */
	long (*save)(struct virtio_device *vd, uint8_t *buf, size_t cap);
	int (*load)(struct virtio_device *vd, const uint8_t *buf, size_t len,
		    char *why, size_t why_len);
	/*
	 * Hand the host resource over to another process on this host
	 * (release: make the written data durable, then drop the disk's lock
	 * or detach from the tap) and take it back (acquire). A device
	 * created for an incoming migration starts released.
	 * Return 0 or a negative errno with a reason in @why.
	 */
	int (*release)(struct virtio_device *vd, char *why, size_t why_len);
	int (*acquire)(struct virtio_device *vd, char *why, size_t why_len);
};

/* What a device calls back; implemented by the transport. */
struct virtio_transport {
	/* Interrupt the driver for queue @q (MSI-X vector or INTx). */
	void (*notify_queue)(void *opaque, uint16_t q);
	/* Interrupt the driver for a configuration change. */
	void (*notify_config)(void *opaque);
	void *opaque;
};

struct virtio_device {
	const char *name; /* e.g. "virtio-blk0", for log lines */
	uint16_t device_id;
	uint16_t num_queues;
	uint16_t queue_size_max; /* power of two <= VQ_MAX_SIZE */
	uint32_t config_size;
	const struct virtio_device_ops *ops;
	void *priv; /* the device's own state */
	const struct guest_mem *mem;
	struct virtio_transport transport;

	pthread_mutex_t lock;	 /* status and features */
	uint64_t guest_features; /* negotiated */
	uint8_t status;
	uint8_t config_generation;
	struct virtqueue vq[VIRTIO_MAX_QUEUES];
};

int virtio_device_init(struct virtio_device *vd, const char *name,
		       uint16_t device_id, uint16_t num_queues,
		       uint16_t queue_size_max, uint32_t config_size,
		       const struct virtio_device_ops *ops, void *priv,
		       const struct guest_mem *mem);
void virtio_device_destroy(struct virtio_device *vd);

static inline bool virtio_has_feature(const struct virtio_device *vd,
				      unsigned int bit)
{
	return (vd->guest_features >> bit) & 1;
}

/*
 * After pushing used entries on queue @q: interrupt the driver if the
 * EVENT_IDX / NO_INTERRUPT rules say so. Locking rule: call it WITHOUT
 * holding vq->lock; it takes vq->lock itself for the decision (which
 * updates signalled_used) and calls transport.notify_queue after dropping
 * it, so the transport may take its own locks in notify_queue. Typical use:
 * lock; vq_push...; unlock; virtio_queue_done().
 */
void virtio_queue_done(struct virtio_device *vd, uint16_t q);

/*
 * The driver broke the rules (a bad descriptor, an impossible request):
 * set NEEDS_RESET, interrupt for a configuration change, log one line
 * naming the device and the reason. The device stops serving its queues
 * until the driver resets it; the VMM and other devices go on. Only the
 * first call logs and notifies until the status is reset (NEEDS_RESET
 * cleared); the configuration interrupt is sent only when DRIVER_OK is
 * set (virtio 1.2, 2.1.2). Takes vd->lock; notify_config runs after it is
 * dropped.
 */
void virtio_set_needs_reset(struct virtio_device *vd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
bool virtio_needs_reset(struct virtio_device *vd);

#endif
