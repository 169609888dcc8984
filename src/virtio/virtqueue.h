/*
 * virtio/virtqueue.h - the device side of a virtio 1.2 split virtqueue:
 * popping descriptor chains the driver made available (direct and indirect,
 * every address, length, flag and index checked against guest RAM and the
 * ring size), pushing used entries, and the EVENT_IDX / NO_INTERRUPT
 * notification rules. Pure logic on guest memory; no threads, no I/O.
 */
#ifndef DVMM_VIRTIO_VIRTQUEUE_H
#define DVMM_VIRTIO_VIRTQUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/guest_mem.h"

#define VQ_MAX_SIZE 1024 /* largest queue size a device offers */
#define VQ_MAX_SEGS 256	 /* longest chain we accept (incl. indirect) */

/* Split-ring layouts from the virtio 1.2 specification, section 2.7. */
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
	/* uint16_t used_event follows ring[size] with EVENT_IDX */
} __attribute__((packed));

#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
} __attribute__((packed));

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
	/* uint16_t avail_event follows ring[size] with EVENT_IDX */
} __attribute__((packed));

#define VRING_USED_F_NO_NOTIFY 1

/* Feature bits the virtqueue itself understands. */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* One descriptor chain: readable segments first, then writable ones. */
struct vq_chain {
	uint16_t head;	    /* id to give back in the used ring */
	unsigned int n_out; /* driver -> device segments: iov[0..n_out) */
	unsigned int n_in;  /* device -> driver: iov[n_out..n_out+n_in) */
	uint64_t out_bytes;
	uint64_t in_bytes;
	struct iovec iov[VQ_MAX_SEGS]; /* host addresses inside guest RAM */
};

struct virtqueue {
	pthread_mutex_t lock; /* held around pop/push; error-checking */
	const struct guest_mem *mem;
	uint16_t size; /* power of two, <= VQ_MAX_SIZE */
	bool enabled;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_F_INDIRECT_DESC negotiated */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	struct vring_desc *desc; /* host views, validated by vq_enable */
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail;	 /* next avail entry to consume */
	uint16_t used_idx;	 /* our copy of used->idx */
	uint16_t signalled_used; /* used_idx when we last interrupted */
	bool signalled_valid;
	bool kick_wanted; /* vq_set_kick_wanted(); true after enable */
	char error[128];  /* why the last pop failed */
};

int vq_init(struct virtqueue *vq);
void vq_destroy(struct virtqueue *vq);

/*
 * Start using the rings at the given guest addresses. Checks size (power
 * of two, 1..VQ_MAX_SIZE), alignment (desc 16, avail 2, used 4) and that
 * every ring lies inside guest RAM. Returns 0 or -EINVAL (vq->error says
 * why). @features are the negotiated feature bits.
 */
int vq_enable(struct virtqueue *vq, const struct guest_mem *mem, uint16_t size,
	      uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa,
	      uint64_t features);
/* Forget the rings (device reset). */
void vq_disable(struct virtqueue *vq);

/*
 * Take the next available chain. Returns 1 with @c filled, 0 when the ring
 * is empty, or -EINVAL when the driver broke the rules (vq->error says how:
 * avail idx jumped by more than the ring size, head or next out of range, a
 * loop, a chain longer than the ring or VQ_MAX_SEGS, an address or length
 * outside guest RAM, a readable segment after a writable one, a nested or
 * mis-sized (0 or not a multiple of 16) indirect table, INDIRECT without
 * the feature or together with NEXT, more than 4 GiB in one chain).
 * A chain is direct descriptors optionally ending in one INDIRECT
 * descriptor; an indirect table needs no particular alignment. Zero-length
 * descriptors are accepted and produce no iovec. On error @c is garbage
 * and last_avail does not move. The device must then be put in
 * NEEDS_RESET. With EVENT_IDX and kicks wanted, each pop also moves
 * avail_event to the new last_avail, and an empty pop closes the race with
 * the driver itself (full barrier, second look at avail->idx).
 */
int vq_pop(struct virtqueue *vq, struct vq_chain *c);

/*
 * Give back the chain the last vq_pop took, untouched (nothing pushed for
 * it, no other pop since): it will be popped again. For a device that
 * took a buffer it then could not use (e.g. net RX at a migration).
 */
void vq_unpop(struct virtqueue *vq);

/*
 * Return a chain to the driver with @len bytes written into it:
 * ring[used_idx % size] first, then used->idx with release semantics.
 */
void vq_push(struct virtqueue *vq, uint16_t head, uint32_t len);

/*
 * After pushes: does the driver want an interrupt now? (EVENT_IDX rules,
 * else VRING_AVAIL_F_NO_INTERRUPT.) Updates signalled_used: call with
 * vq->lock held.
 */
bool vq_should_interrupt(struct virtqueue *vq);

/*
 * Ask for (true) or suppress (false) kicks from the driver: avail_event
 * with EVENT_IDX, VRING_USED_F_NO_NOTIFY otherwise. After enabling, the
 * caller must check vq_has_work() again to close the race.
 */
void vq_set_kick_wanted(struct virtqueue *vq, bool wanted);
bool vq_has_work(struct virtqueue *vq);

/*
 * Copy helpers: read from the readable (out) segments at byte @off of that
 * part, write into the writable (in) segments at byte @off of that part.
 * Return the bytes copied (short when the segments end first).
 */
size_t vq_chain_read(const struct vq_chain *c, uint64_t off, void *dst,
		     size_t len);
size_t vq_chain_write(const struct vq_chain *c, uint64_t off, const void *src,
		      size_t len);

#endif
