/*
 * virtio/devices.h - the virtio devices, one file each: block (raw image,
 * I/O off the vCPU threads with io_uring), network (Linux tap), console
 * (a second console), entropy (host getrandom). Each creates a struct
 * virtio_device that a transport (virtio_pci.c) exposes to the guest.
 */
#ifndef DVMM_VIRTIO_DEVICES_H
#define DVMM_VIRTIO_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "util/err.h"
#include "virtio/virtio.h"

struct virtio_blk;
struct virtio_net;
struct virtio_console;
struct virtio_rng;

/* Requests completed since creation (a failed one counts in errors too). */
struct virtio_blk_stats {
	uint64_t reads, writes, flushes, discards;
	uint64_t read_bytes, write_bytes;
	uint64_t errors; /* completed with IOERR or UNSUPP */
};

/*
 * Creation flag: the device is made for an incoming migration and starts
 * released (virtio.h: the source process still holds the disk's lock or the
 * tap); the migration calls ops->acquire once the source let go.
 */
#define VIRTIO_CREATE_RELEASED 1u

/*
 * Record that a device wrote bytes [@off, @off+@len) of the writable part
 * of chain @c (as vq_chain_write counts them), for migration's write log
 * (guest_mem_log_write).
 */
static inline void virtio_log_chain_write(const struct guest_mem *mem,
					  const struct vq_chain *c,
					  uint64_t off, uint64_t len)
{
	const struct iovec *w = &c->iov[c->n_out];

	for (unsigned int i = 0; i < c->n_in && len; i++) {
		uint64_t seg = w[i].iov_len;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		seg -= off;
		if (seg > len)
			seg = len;
		guest_mem_log_write(mem, (const uint8_t *)w[i].iov_base + off,
				    seg);
		len -= seg;
		off = 0;
	}
}

/*
 * blk.c: --disk PATH[,readonly]. A raw image (regular file whose size is a
 * multiple of 512, or a block device), locked with flock (shared when
 * readonly) so two VMs cannot write one image. Needs io_uring. @flags:
 * VIRTIO_CREATE_RELEASED opens the image without taking the lock.
 */
int virtio_blk_create(struct virtio_blk **out, const struct guest_mem *mem,
		      const char *path, bool readonly, unsigned int flags,
		      struct err *e);
/*
 * --disk remote=tcp:HOST:PORT[,readonly]: the disk is an image served by a
 * `dvmm disk-serve` agent (virtio/blk_remote.h), authenticated with @key
 * (the migration secret). Connects now (waiting up to 10 s for the agent)
 * and takes the capacity from it, or with VIRTIO_CREATE_RELEASED at
 * acquire; release flushes and hangs up.
 */
int virtio_blk_create_remote(struct virtio_blk **out,
			     const struct guest_mem *mem, const char *uri,
			     const uint8_t *key, size_t keylen, bool readonly,
			     unsigned int flags, struct err *e);

struct virtio_blk_switch_stats {
	unsigned int passes;	/* copies while the guest ran */
	uint64_t final_regions; /* 1 MiB regions copied with it waiting */
	uint64_t paused_us;	/* the guest's requests waited this long */
};

/*
 * Device dynamic exchange: copy a remote disk into the local file @path
 * (created, or truncated to the disk's size; locked) while the guest goes
 * on using it, copying again what it writes meanwhile; then hold its
 * requests for a moment, copy the rest, serve from @path with io_uring and
 * hang up on the agent. On failure the remote disk goes on serving.
 * Blocks until done; not while a migration uses the device.
 */
int virtio_blk_switch(struct virtio_blk *b, const char *path,
		      struct virtio_blk_switch_stats *st, struct err *e);
struct virtio_device *virtio_blk_device(struct virtio_blk *b);
void virtio_blk_get_stats(struct virtio_blk *b, struct virtio_blk_stats *s);
void virtio_blk_destroy(struct virtio_blk *b);

struct virtio_net_stats {
	uint64_t rx_packets, rx_bytes, rx_dropped; /* tap -> guest */
	uint64_t tx_packets, tx_bytes, tx_dropped; /* guest -> tap */
};

/* net.c: --net tap=NAME[,mac=xx:xx:xx:xx:xx:xx]; NAME NULL -> dvmm makes
 * a tap itself (name reported by virtio_net_tap_name). @mac NULL: a random
 * locally administered address. Bytes count frames without the 12-byte
 * virtio-net header. @flags: VIRTIO_CREATE_RELEASED attaches to no tap yet
 * (ops->acquire does; a tap of dvmm's own is only made then, and its name
 * is "" until then). */
int virtio_net_create(struct virtio_net **out, const struct guest_mem *mem,
		      const char *tap_name, const uint8_t mac[6],
		      unsigned int flags, struct err *e);
const char *virtio_net_tap_name(const struct virtio_net *n);
struct virtio_device *virtio_net_device(struct virtio_net *n);
void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *s);
void virtio_net_destroy(struct virtio_net *n);

/* console.c: one port; guest output to @out_fd, @in_fd (-1: none) in. */
int virtio_console_create(struct virtio_console **out,
			  const struct guest_mem *mem, int out_fd, int in_fd,
			  struct err *e);
struct virtio_device *virtio_console_device(struct virtio_console *c);
void virtio_console_destroy(struct virtio_console *c);

/* rng.c */
int virtio_rng_create(struct virtio_rng **out, const struct guest_mem *mem,
		      struct err *e);
struct virtio_device *virtio_rng_device(struct virtio_rng *r);
void virtio_rng_destroy(struct virtio_rng *r);

#endif
