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

/*
 * Multiqueue (VIRTIO_NET_F_MQ with VIRTIO_NET_F_CTRL_VQ): queue pair p is
 * receiveq 2p and transmitq 2p+1, the control queue is 2 * npairs. Each
 * pair has its own tap; pairs that name the same tap in one process open
 * it with IFF_MULTI_QUEUE. A pair may be served by another node of a
 * cluster ("remote"): the home device then never touches its rings and
 * drives it through struct virtio_net_remote_ops; the serving node runs
 * a server (virtio_net_server_*) for that pair.
 */
#define VIRTIO_NET_MAX_PAIRS 7

/* The rings of one pair as the driver set them up (on the wire as is). */
struct virtio_net_pair_setup {
	uint64_t features; /* negotiated */
	uint64_t desc[2], driver[2],
		device[2]; /* [0] receiveq, [1] transmitq */
	uint16_t size[2];
	uint8_t mac[6];
	uint32_t pad;
} __attribute__((packed));

/* Home side: what drives pairs that other nodes serve. */
struct virtio_net_remote_ops {
	/* Serve pair @pair with these rings; blocks until the server took
	 * them. Nonzero: the device goes NEEDS_RESET. */
	int (*start)(void *opaque, unsigned int pair,
		     const struct virtio_net_pair_setup *s);
	/* Stop serving @pair; on return the server touches neither ring. */
	void (*stop)(void *opaque, unsigned int pair);
	/* The driver notified queue @q of a remote pair. */
	void (*kick)(void *opaque, uint16_t q);
	void *opaque;
};

struct virtio_net_opts {
	unsigned int npairs; /* 1..VIRTIO_NET_MAX_PAIRS; 1: no MQ offered */
	struct {
		const char *tap; /* NULL: dvmm makes one (local pairs) */
		bool remote;	 /* served elsewhere through @remote */
	} pair[VIRTIO_NET_MAX_PAIRS];
	const uint8_t *mac; /* NULL: a random locally administered one */
	unsigned int flags; /* VIRTIO_CREATE_RELEASED */
	const struct virtio_net_remote_ops *remote; /* if a pair is remote */
};

int virtio_net_create_opts(struct virtio_net **out, const struct guest_mem *mem,
			   const struct virtio_net_opts *o, struct err *e);
/* Home side: the server of remote pair @pair saw its tap go up/down. */
void virtio_net_remote_link(struct virtio_net *n, unsigned int pair, bool up);
/* VIRTIO_NET_S_LINK_UP as the driver would read it now. */
bool virtio_net_link_is_up(struct virtio_net *n);
/* Per-pair counters (pair < npairs; remote pairs read as zero). */
void virtio_net_get_pair_stats(struct virtio_net *n, unsigned int pair,
			       struct virtio_net_stats *s);
/* The tap pair @pair is attached to ("" for a remote pair). */
const char *virtio_net_pair_tap_name(const struct virtio_net *n,
				     unsigned int pair);

/*
 * Serving side: what a pair server calls back (on its own threads; they
 * must not call back into the server).
 */
struct virtio_net_server_ops {
	void (*notify)(void *opaque, uint16_t q); /* interrupt for queue q */
	void (*link)(void *opaque, bool up);	  /* the tap went up/down */
	void *opaque;
};

/*
 * A server for pair @pair of a device of @npairs pairs homed elsewhere,
 * on tap @tap (NULL: dvmm makes one). It opens the tap and watches its
 * link at once, but touches guest memory only between start and stop.
 * The queue numbers it takes in kick/notify are the device's (2p, 2p+1).
 */
int virtio_net_server_create(struct virtio_net **out,
			     const struct guest_mem *mem, unsigned int npairs,
			     unsigned int pair, const char *tap,
			     const struct virtio_net_server_ops *ops,
			     struct err *e);
int virtio_net_server_start(struct virtio_net *n,
			    const struct virtio_net_pair_setup *s,
			    struct err *e);
/* On return the server touches neither ring (until the next start). */
void virtio_net_server_stop(struct virtio_net *n);
void virtio_net_server_kick(struct virtio_net *n, uint16_t q);
/* virtio_net_destroy ends a server too. */

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
