/*
 * virtio/net.c - virtio-net (virtio 1.2, 5.1) on a Linux tap device: one
 * receiveq (0) and one transmitq (1), no control queue, no multiqueue, no
 * offloads, no mergeable RX buffers. Every frame carries the 12-byte
 * struct virtio_net_hdr_v1, which the tap speaks too (IFF_VNET_HDR with
 * TUNSETVNETHDRSZ 12).
 *
 * TX runs on the transport thread that serves the kick: pop, writev to the
 * tap (non-blocking; tap writes do not wait), push with length 0. The
 * header the driver wrote is replaced by a zero one: no offload was
 * negotiated, so flags and gso_type must be 0 and the host stack never
 * sees guest-chosen GSO or checksum requests.
 *
 * RX runs on its own thread: with a buffer chain in hand it readv()s the
 * next frame straight into the chain's writable segments (a spare tail
 * buffer catches a frame that does not fit; it is dropped and counted,
 * and the chain is kept for the next one), sets num_buffers to 1 and
 * pushes. With no buffers it stops reading the tap, asks the driver for
 * kicks and sleeps until queue_kick(0) signals its eventfd.
 *
 * Migration. quiesce stops TX (n->quiesced, checked under tx_lock where
 * net_tx pops; tx_after counts a TX pass still interrupting the driver
 * after dropping the lock) and parks the RX thread: asked through rx_pause
 * and ctl_fd, it gives back a chain it holds but has not filled
 * (vq_unpop), sends the interrupt it owes and says so (rx_parked, rx_cond).
 * save takes the frames waiting in the tap into the backlog and writes the
 * MAC and the backlog; load (on the destination) sets both. The RX thread
 * delivers backlog frames before anything it reads from the tap. The
 * backlog belongs to the RX thread while it runs unparked, to the caller
 * of save/load otherwise. release closes the tap (a tap of dvmm's own
 * vanishes with it: acquire makes a new one); while released TX leaves the
 * transmitq alone and RX only delivers the backlog. Every byte the device
 * writes into guest buffers is logged with guest_mem_log_write.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "virtio/devices.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16

#define VIRTIO_NET_S_LINK_UP 1

#define NET_QUEUE_SIZE 256
#define NET_RXQ 0
#define NET_TXQ 1
#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define NET_NUM_BUFFERS_OFF 10
/* Larger than any frame a tap hands out. */
#define NET_RX_SPARE (65536 + 256)
/* Frames between interrupts while frames keep coming. */
#define NET_RX_BATCH 64
/* The backlog: frames (with their header) kept for the guest. */
#define NET_BACKLOG_FRAMES 256
#define NET_BACKLOG_BYTES (1u << 20)
#define NET_FRAME_MIN NET_HDR_LEN  /* what RX accepts from the tap */
#define NET_FRAME_MAX NET_RX_SPARE /* longer than any tap frame */
#define NET_MAC_LEN 6

/* Device configuration layout (5.1.4), little-endian. */
struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_net_config) == 12,
	       "virtio_net_config layout");

struct net_frame {
	uint32_t len; /* with the 12-byte header */
	uint8_t *data;
};

struct virtio_net {
	struct virtio_device vd;
	char name[32];		  /* "virtio-net:" + tap name */
	int tap_fd;		  /* -1 while released */
	char tap_name[IFNAMSIZ];  /* the tap attached ("" before the first) */
	char want_name[IFNAMSIZ]; /* tap=NAME; "": dvmm makes its own */
	uint8_t mac[6];
	int wake_fd; /* eventfd: RX buffers were added */
	int ctl_fd;  /* eventfd: RX thread, look at rx_stop and rx_pause */

	pthread_mutex_t tx_lock; /* TX path, the run state, tap_fd */
	pthread_cond_t tx_idle;	 /* tx_after went to 0 */
	bool running;
	bool quiesced;	       /* migration: no TX until resume */
	unsigned int tx_after; /* net_tx passes still notifying */
	bool broken;	       /* atomic: we asked for NEEDS_RESET */
	struct vq_chain tx_chain;

	pthread_t rx_thread;
	bool rx_started;
	bool rx_stop;		 /* atomic */
	pthread_mutex_t rx_lock; /* rx_pause, rx_parked, rx_exited */
	pthread_cond_t rx_cond;
	bool rx_pause;		  /* RX thread: park (touch no ring) */
	bool rx_parked;		  /* ... and it does */
	bool rx_exited;		  /* it ended on an error of its own */
	struct vq_chain rx_chain; /* owned by the RX thread */
	uint8_t *rx_spare;

	/* Frames for the guest before any from the tap: a ring. */
	struct net_frame backlog[NET_BACKLOG_FRAMES];
	unsigned int bl_head, bl_count;
	size_t bl_bytes;

	struct virtio_net_stats stats; /* atomic counters */
};

static struct virtio_net *to_net(struct virtio_device *vd)
{
	return vd->priv;
}

static void count(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

static bool net_broken(struct virtio_net *n)
{
	return __atomic_load_n(&n->broken, __ATOMIC_ACQUIRE);
}

/*
 * The driver broke the rules: stop serving both queues and ask for a
 * reset. Called holding no lock of ours (virtio_set_needs_reset takes
 * vd->lock, which the transport may hold around activate/reset).
 */
static void net_set_broken(struct virtio_net *n, const char *why)
{
	__atomic_store_n(&n->broken, true, __ATOMIC_RELEASE);
	virtio_set_needs_reset(&n->vd, "%s", why);
}

static void net_signal(struct virtio_net *n, int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("%s: eventfd: %s", n->vd.name, strerror(errno));
}

/* ---- the backlog ---- */

static struct net_frame *backlog_first(struct virtio_net *n)
{
	return n->bl_count ? &n->backlog[n->bl_head] : NULL;
}

static void backlog_drop_first(struct virtio_net *n)
{
	struct net_frame *f = &n->backlog[n->bl_head];

	n->bl_bytes -= f->len;
	free(f->data);
	f->data = NULL;
	f->len = 0;
	n->bl_head = (n->bl_head + 1) % NET_BACKLOG_FRAMES;
	n->bl_count--;
}

static void backlog_clear(struct virtio_net *n)
{
	while (n->bl_count)
		backlog_drop_first(n);
	n->bl_head = 0;
}

static bool backlog_fits(const struct virtio_net *n, size_t len)
{
	return n->bl_count < NET_BACKLOG_FRAMES &&
	       len <= NET_BACKLOG_BYTES - n->bl_bytes;
}

/* Append a copy of @len bytes (backlog_fits() said yes); -ENOMEM. */
static int backlog_add(struct virtio_net *n, const uint8_t *p, uint32_t len)
{
	struct net_frame *f =
		&n->backlog[(n->bl_head + n->bl_count) % NET_BACKLOG_FRAMES];

	f->data = malloc(len);
	if (!f->data)
		return -ENOMEM;
	memcpy(f->data, p, len);
	f->len = len;
	n->bl_count++;
	n->bl_bytes += len;
	return 0;
}

/* ---- TX ---- */

static void net_tx_one(struct virtio_net *n, const struct vq_chain *c)
{
	static const uint8_t zero_hdr[NET_HDR_LEN];
	struct iovec iov[VQ_MAX_SEGS + 1];
	unsigned int cnt = 1;
	uint64_t skip = NET_HDR_LEN;
	ssize_t w;

	if (c->out_bytes < NET_HDR_LEN + 14 ||
	    c->out_bytes > NET_HDR_LEN + NET_RX_SPARE) {
		count(&n->stats.tx_dropped, 1);
		return;
	}
	iov[0].iov_base = (void *)zero_hdr;
	iov[0].iov_len = NET_HDR_LEN;
	for (unsigned int i = 0; i < c->n_out; i++) {
		size_t len = c->iov[i].iov_len;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		iov[cnt].iov_base = (uint8_t *)c->iov[i].iov_base + skip;
		iov[cnt].iov_len = len - skip;
		cnt++;
		skip = 0;
	}
	do {
		w = writev(n->tap_fd, iov, cnt);
	} while (w < 0 && errno == EINTR);
	if (w < 0) {
		/* EIO: the tap is down; EAGAIN: its queue is full. */
		count(&n->stats.tx_dropped, 1);
		return;
	}
	count(&n->stats.tx_packets, 1);
	count(&n->stats.tx_bytes, c->out_bytes - NET_HDR_LEN);
}

/*
 * Send what the driver queued. Nothing is taken while quiesced or without
 * a tap (released): the frames wait in the ring.
 */
static void net_tx(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vd.vq[NET_TXQ];
	char why[sizeof(vq->error) + 16];
	bool pushed = false, bad = false;

	pthread_mutex_lock(&n->tx_lock);
	while (n->running && !n->quiesced && n->tap_fd >= 0 && !net_broken(n)) {
		int r;

		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, &n->tx_chain);
		if (r < 0)
			snprintf(why, sizeof(why), "transmitq: %.*s",
				 (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r < 0) {
			bad = true;
			break;
		}
		if (r == 0)
			break;
		net_tx_one(n, &n->tx_chain);
		pthread_mutex_lock(&vq->lock);
		vq_push(vq, n->tx_chain.head, 0);
		pthread_mutex_unlock(&vq->lock);
		pushed = true;
	}
	if (!bad && !pushed) {
		pthread_mutex_unlock(&n->tx_lock);
		return;
	}
	n->tx_after++;
	pthread_mutex_unlock(&n->tx_lock);
	if (bad)
		net_set_broken(n, why);
	if (pushed)
		virtio_queue_done(&n->vd, NET_TXQ);
	pthread_mutex_lock(&n->tx_lock);
	if (--n->tx_after == 0)
		pthread_cond_broadcast(&n->tx_idle);
	pthread_mutex_unlock(&n->tx_lock);
}

/* ---- RX ---- */

static bool rx_stopping(struct virtio_net *n)
{
	return __atomic_load_n(&n->rx_stop, __ATOMIC_ACQUIRE);
}

static bool rx_pause_wanted(struct virtio_net *n)
{
	bool p;

	pthread_mutex_lock(&n->rx_lock);
	p = n->rx_pause;
	pthread_mutex_unlock(&n->rx_lock);
	return p;
}

enum rx_wake { RX_READY, RX_CTL, RX_FATAL };

/*
 * Wait until @fd (-1: none) is readable, or ctl_fd is (then drained:
 * the caller looks at rx_stop and rx_pause again).
 */
static enum rx_wake rx_wait(struct virtio_net *n, int fd)
{
	for (;;) {
		struct pollfd p[2] = {
			{.fd = n->ctl_fd, .events = POLLIN},
			{.fd = fd, .events = POLLIN},
		};

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", n->vd.name, strerror(errno));
			return RX_FATAL;
		}
		if (p[0].revents) {
			eventfd_drain(n->ctl_fd);
			return RX_CTL;
		}
		if (p[1].revents)
			return RX_READY;
	}
}

/*
 * Get the next RX buffer chain. Returns 1 with n->rx_chain filled, 0 when
 * the thread is to look at its flags (stop, pause, broken), -1 when it
 * cannot go on.
 */
static int rx_get_chain(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vd.vq[NET_RXQ];
	bool waited = false;

	for (;;) {
		char why[sizeof(vq->error) + 16];
		enum rx_wake w;
		int r;

		if (net_broken(n))
			return 0;
		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, &n->rx_chain);
		if (r == 0) {
			/* Empty: ask for a kick, then look once more. */
			vq_set_kick_wanted(vq, true);
			if (vq_has_work(vq))
				r = vq_pop(vq, &n->rx_chain);
		} else if (r > 0 && waited) {
			vq_set_kick_wanted(vq, false);
		}
		if (r < 0)
			snprintf(why, sizeof(why), "receiveq: %.*s",
				 (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r < 0) {
			net_set_broken(n, why);
			return 0;
		}
		if (r > 0) {
			if (n->rx_chain.in_bytes >= NET_HDR_LEN)
				return 1;
			snprintf(why, sizeof(why),
				 "receiveq: buffer %u is "
				 "shorter than the 12-byte header",
				 n->rx_chain.head);
			net_set_broken(n, why);
			return 0;
		}
		w = rx_wait(n, n->wake_fd);
		if (w != RX_READY)
			return w == RX_CTL ? 0 : -1;
		eventfd_drain(n->wake_fd);
		waited = true;
	}
}

/* @len bytes of a frame are in chain @c: num_buffers, log, push, count. */
static void rx_deliver(struct virtio_net *n, const struct vq_chain *c,
		       uint32_t len)
{
	struct virtqueue *vq = &n->vd.vq[NET_RXQ];
	uint16_t one = htole16(1);

	vq_chain_write(c, NET_NUM_BUFFERS_OFF, &one, sizeof(one));
	virtio_log_chain_write(n->vd.mem, c, 0, len);
	pthread_mutex_lock(&vq->lock);
	vq_push(vq, c->head, len);
	pthread_mutex_unlock(&vq->lock);
	count(&n->stats.rx_packets, 1);
	count(&n->stats.rx_bytes, len - NET_HDR_LEN);
}

/*
 * The first backlog frame into chain @c. True when the chain was used;
 * false when the frame does not fit it (dropped, the chain is kept, as
 * for a frame from the tap).
 */
static bool rx_from_backlog(struct virtio_net *n, const struct vq_chain *c)
{
	struct net_frame *f = backlog_first(n);
	bool fits = f->len <= c->in_bytes;

	if (fits) {
		vq_chain_write(c, 0, f->data, f->len);
		rx_deliver(n, c, f->len);
	} else {
		count(&n->stats.rx_dropped, 1);
	}
	backlog_drop_first(n);
	return fits;
}

/*
 * Park: say so, wait until resumed or stopped. The caller gave back its
 * chain and sent the interrupts it owed.
 */
static void rx_park(struct virtio_net *n)
{
	pthread_mutex_lock(&n->rx_lock);
	n->rx_parked = true;
	pthread_cond_broadcast(&n->rx_cond);
	while (n->rx_pause && !rx_stopping(n))
		pthread_cond_wait(&n->rx_cond, &n->rx_lock);
	n->rx_parked = false;
	pthread_mutex_unlock(&n->rx_lock);
}

static void *net_rx_thread(void *arg)
{
	struct virtio_net *n = arg;
	struct virtqueue *vq = &n->vd.vq[NET_RXQ];
	struct vq_chain *c = &n->rx_chain;
	unsigned int pending = 0;
	bool have = false;

	while (!rx_stopping(n)) {
		struct iovec iov[VQ_MAX_SEGS + 1];
		unsigned int cnt;
		ssize_t r;

		if (rx_pause_wanted(n)) {
			if (have) {
				/* Not filled: the driver still has it. */
				pthread_mutex_lock(&vq->lock);
				vq_unpop(vq);
				pthread_mutex_unlock(&vq->lock);
				have = false;
			}
			if (pending) {
				virtio_queue_done(&n->vd, NET_RXQ);
				pending = 0;
			}
			rx_park(n);
			continue;
		}
		if (pending && (!have || net_broken(n))) {
			virtio_queue_done(&n->vd, NET_RXQ);
			pending = 0;
		}
		if (net_broken(n) || (!n->bl_count && n->tap_fd < 0)) {
			/* Nothing to do until reset, resume or stop. */
			if (rx_wait(n, -1) == RX_FATAL)
				break;
			continue;
		}
		if (!have) {
			int g = rx_get_chain(n);

			if (g < 0)
				break;
			if (g == 0)
				continue;
			have = true;
		}
		if (n->bl_count) {
			if (rx_from_backlog(n, c)) {
				have = false;
				if (++pending >= NET_RX_BATCH) {
					virtio_queue_done(&n->vd, NET_RXQ);
					pending = 0;
				}
			}
			continue;
		}
		cnt = c->n_in;
		memcpy(iov, &c->iov[c->n_out], cnt * sizeof(iov[0]));
		iov[cnt].iov_base = n->rx_spare;
		iov[cnt].iov_len = NET_RX_SPARE;
		r = readv(n->tap_fd, iov, cnt + 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (pending) {
				virtio_queue_done(&n->vd, NET_RXQ);
				pending = 0;
			}
			if (errno != EAGAIN)
				pr_warn("%s: read from %s: %s", n->vd.name,
					n->tap_name, strerror(errno));
			if (rx_wait(n, n->tap_fd) == RX_FATAL)
				break;
			continue;
		}
		if ((uint64_t)r > c->in_bytes || r < NET_HDR_LEN) {
			/* Too big for this buffer: drop it, keep the buffer
			 * (whose bytes the read did overwrite). */
			virtio_log_chain_write(n->vd.mem, c, 0, (uint64_t)r);
			count(&n->stats.rx_dropped, 1);
			continue;
		}
		rx_deliver(n, c, r);
		have = false;
		if (++pending >= NET_RX_BATCH) {
			virtio_queue_done(&n->vd, NET_RXQ);
			pending = 0;
		}
	}
	if (pending)
		virtio_queue_done(&n->vd, NET_RXQ);
	pthread_mutex_lock(&n->rx_lock);
	n->rx_exited = true;
	pthread_cond_broadcast(&n->rx_cond);
	pthread_mutex_unlock(&n->rx_lock);
	return NULL;
}

/*
 * Ask the RX thread to park (or, not started yet, to park when it starts)
 * and wait until it did: it then holds no chain and touches nothing.
 */
static void net_rx_pause(struct virtio_net *n)
{
	pthread_mutex_lock(&n->rx_lock);
	n->rx_pause = true;
	pthread_mutex_unlock(&n->rx_lock);
	if (!n->rx_started)
		return;
	net_signal(n, n->ctl_fd);
	pthread_mutex_lock(&n->rx_lock);
	while (!n->rx_parked && !n->rx_exited)
		pthread_cond_wait(&n->rx_cond, &n->rx_lock);
	pthread_mutex_unlock(&n->rx_lock);
}

static void net_rx_unpause(struct virtio_net *n)
{
	pthread_mutex_lock(&n->rx_lock);
	n->rx_pause = false;
	pthread_cond_broadcast(&n->rx_cond);
	pthread_mutex_unlock(&n->rx_lock);
}

/* ---- device ops ---- */

static uint64_t net_features(struct virtio_device *vd)
{
	(void)vd;
	return (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS);
}

static void net_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len)
{
	struct virtio_net *n = to_net(vd);
	struct virtio_net_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	memcpy(cfg.mac, n->mac, sizeof(cfg.mac));
	cfg.status = htole16(VIRTIO_NET_S_LINK_UP);
	cfg.max_virtqueue_pairs = htole16(1);
	cfg.mtu = htole16(1500);
	memset(buf, 0, len);
	if (off < sizeof(cfg))
		memcpy(buf, (uint8_t *)&cfg + off,
		       len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void net_config_write(struct virtio_device *vd, uint32_t off,
			     const void *buf, uint32_t len)
{
	/* The MAC is read-only for a modern driver (5.1.4.2). */
	(void)vd;
	(void)off;
	(void)buf;
	(void)len;
}

static void net_queue_kick(struct virtio_device *vd, uint16_t q)
{
	struct virtio_net *n = to_net(vd);

	if (q == NET_TXQ)
		net_tx(n);
	else if (q == NET_RXQ)
		net_signal(n, n->wake_fd); /* wake the RX thread if it waits */
}

static void net_stop(struct virtio_net *n)
{
	pthread_mutex_lock(&n->tx_lock);
	n->running = false;
	pthread_mutex_unlock(&n->tx_lock);
	if (n->rx_started) {
		pthread_mutex_lock(&n->rx_lock);
		__atomic_store_n(&n->rx_stop, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&n->rx_cond);
		pthread_mutex_unlock(&n->rx_lock);
		net_signal(n, n->ctl_fd);
		pthread_join(n->rx_thread, NULL);
		n->rx_started = false;
		__atomic_store_n(&n->rx_stop, false, __ATOMIC_RELEASE);
		eventfd_drain(n->ctl_fd);
	}
	eventfd_drain(n->wake_fd);
	__atomic_store_n(&n->broken, false, __ATOMIC_RELEASE);
}

static int net_activate(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);
	int rc;

	if (n->rx_started)
		return 0;
	n->rx_exited = false;
	rc = thread_start_nosignals(&n->rx_thread, net_rx_thread, n);
	if (rc) {
		pr_err("%s: cannot start the RX thread: %s", vd->name,
		       strerror(-rc));
		return rc;
	}
	n->rx_started = true;
	pthread_mutex_lock(&n->tx_lock);
	n->running = true;
	pthread_mutex_unlock(&n->tx_lock);
	return 0;
}

static void net_reset(struct virtio_device *vd)
{
	net_stop(to_net(vd));
}

/* ---- migration ---- */

static void net_quiesce(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);

	/* No TX pass is running once we hold tx_lock; wait for the
	 * interrupt of the last one. */
	pthread_mutex_lock(&n->tx_lock);
	n->quiesced = true;
	while (n->tx_after)
		pthread_cond_wait(&n->tx_idle, &n->tx_lock);
	pthread_mutex_unlock(&n->tx_lock);
	net_rx_pause(n);
}

static void net_resume(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);

	pthread_mutex_lock(&n->tx_lock);
	n->quiesced = false;
	pthread_mutex_unlock(&n->tx_lock);
	net_rx_unpause(n); /* it pops afresh: sees new buffers */
	net_tx(n);
}

/* Does the RX thread (if any) keep off the backlog and the tap now? */
static bool net_rx_idle(struct virtio_net *n)
{
	bool idle;

	if (!n->rx_started)
		return true;
	pthread_mutex_lock(&n->rx_lock);
	idle = n->rx_parked || n->rx_exited;
	pthread_mutex_unlock(&n->rx_lock);
	return idle;
}

/*
 * Move the frames waiting in the tap into the backlog (the source's, in
 * case the migration fails and the VM goes on here), up to its limits.
 * At most one frame more than fits is read (and dropped), so a host that
 * keeps sending cannot keep us here.
 */
static void net_drain_tap(struct virtio_net *n)
{
	if (n->tap_fd < 0)
		return;
	while (n->bl_count < NET_BACKLOG_FRAMES &&
	       n->bl_bytes < NET_BACKLOG_BYTES) {
		ssize_t r = read(n->tap_fd, n->rx_spare, NET_RX_SPARE);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			if (errno != EAGAIN)
				pr_warn("%s: read from %s: %s", n->vd.name,
					n->tap_name, strerror(errno));
			return;
		}
		if (r < NET_FRAME_MIN || !backlog_fits(n, r) ||
		    backlog_add(n, n->rx_spare, r)) {
			count(&n->stats.rx_dropped, 1);
			return;
		}
	}
}

/*
 * MAC (6 bytes), then each frame for the guest as u32 (LE) length and
 * the bytes as the tap gave them (header included).
 */
static long net_save(struct virtio_device *vd, uint8_t *buf, size_t cap)
{
	struct virtio_net *n = to_net(vd);
	size_t need = NET_MAC_LEN, off;

	if (!net_rx_idle(n))
		return -EBUSY; /* not quiesced */
	net_drain_tap(n);
	for (unsigned int i = 0; i < n->bl_count; i++)
		need += 4 +
			n->backlog[(n->bl_head + i) % NET_BACKLOG_FRAMES].len;
	if (need > cap)
		return -ENOSPC;
	memcpy(buf, n->mac, NET_MAC_LEN);
	off = NET_MAC_LEN;
	for (unsigned int i = 0; i < n->bl_count; i++) {
		const struct net_frame *f =
			&n->backlog[(n->bl_head + i) % NET_BACKLOG_FRAMES];
		uint32_t len = htole32(f->len);

		memcpy(buf + off, &len, 4);
		memcpy(buf + off + 4, f->data, f->len);
		off += 4 + f->len;
	}
	return (long)off;
}

/*
 * Check what net_save wrote (it comes from the network): a unicast MAC,
 * then whole frames of NET_FRAME_MIN..NET_FRAME_MAX bytes. *nframes: how
 * many.
 */
static int net_check_state(struct virtio_net *n, const uint8_t *buf, size_t len,
			   unsigned int *nframes, char *why, size_t why_len)
{
	static const uint8_t zero[NET_MAC_LEN];
	size_t off = NET_MAC_LEN;
	unsigned int i = 0;

	if (len < NET_MAC_LEN) {
		snprintf(why, why_len,
			 "%s: %zu bytes of device state, expected at least %d",
			 n->vd.name, len, NET_MAC_LEN);
		return -EINVAL;
	}
	if ((buf[0] & 1) || !memcmp(buf, zero, NET_MAC_LEN)) {
		snprintf(why, why_len,
			 "%s: MAC address %02x:%02x:%02x:%02x:%02x:%02x is "
			 "not a unicast address",
			 n->vd.name, buf[0], buf[1], buf[2], buf[3], buf[4],
			 buf[5]);
		return -EINVAL;
	}
	for (; off < len; i++) {
		uint32_t flen;

		if (len - off < 4) {
			snprintf(why, why_len, "%s: frame %u: length cut short",
				 n->vd.name, i);
			return -EINVAL;
		}
		memcpy(&flen, buf + off, 4);
		flen = le32toh(flen);
		off += 4;
		if (flen < NET_FRAME_MIN || flen > NET_FRAME_MAX) {
			snprintf(why, why_len,
				 "%s: frame %u of %u bytes (%d to %d can be)",
				 n->vd.name, i, flen, NET_FRAME_MIN,
				 NET_FRAME_MAX);
			return -EINVAL;
		}
		if (flen > len - off) {
			snprintf(why, why_len,
				 "%s: frame %u of %u bytes, only %zu left",
				 n->vd.name, i, flen, len - off);
			return -EINVAL;
		}
		off += flen;
	}
	*nframes = i;
	return 0;
}

/*
 * Take the MAC (the guest knows it already; this side may have been
 * started without mac=) and the frames for the guest. The frame bytes
 * themselves are the guest's business (a source could write anything into
 * guest RAM anyway); only their sizes matter to us. Frames beyond the
 * backlog's limits are dropped and counted.
 */
static int net_load(struct virtio_device *vd, const uint8_t *buf, size_t len,
		    char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);
	unsigned int nframes = 0;
	size_t off = NET_MAC_LEN;
	int rc;

	if (!net_rx_idle(n)) {
		snprintf(why, why_len, "%s: device state for a running device",
			 vd->name);
		return -EBUSY;
	}
	rc = net_check_state(n, buf, len, &nframes, why, why_len);
	if (rc)
		return rc;
	backlog_clear(n);
	for (unsigned int i = 0; i < nframes; i++) {
		uint32_t flen;

		memcpy(&flen, buf + off, 4);
		flen = le32toh(flen);
		off += 4;
		if (!backlog_fits(n, flen)) {
			count(&n->stats.rx_dropped, 1);
		} else if (backlog_add(n, buf + off, flen)) {
			backlog_clear(n);
			snprintf(why, why_len, "%s: out of memory", vd->name);
			return -ENOMEM;
		}
		off += flen;
	}
	memcpy(n->mac, buf, NET_MAC_LEN);
	return 0;
}

static int net_open_tap(const char *name, int *fd_out, char tap_name[IFNAMSIZ],
			struct err *e);

/* Close the tap (only with the device quiesced or not started). */
static int net_release(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);
	int fd;

	if (n->rx_started && !n->quiesced) {
		snprintf(why, why_len, "%s: release while running", vd->name);
		return -EBUSY;
	}
	pthread_mutex_lock(&n->tx_lock);
	fd = n->tap_fd;
	n->tap_fd = -1;
	pthread_mutex_unlock(&n->tx_lock);
	if (fd >= 0)
		close(fd);
	return 0;
}

/* Attach to the tap again (or to a new one of our own). */
static int net_acquire(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);
	char name[IFNAMSIZ];
	struct err e = {0};
	bool pause;
	int fd, rc;

	if (n->tap_fd >= 0)
		return 0;
	rc = net_open_tap(n->want_name[0] ? n->want_name : NULL, &fd, name, &e);
	if (rc) {
		snprintf(why, why_len, "%s: %s", vd->name, e.msg);
		return rc;
	}
	/* Running while released (activated first): park RX meanwhile. */
	pause = n->rx_started && !n->quiesced;
	if (pause)
		net_rx_pause(n);
	pthread_mutex_lock(&n->tx_lock);
	n->tap_fd = fd;
	memcpy(n->tap_name, name, IFNAMSIZ);
	pthread_mutex_unlock(&n->tx_lock);
	if (pause)
		net_rx_unpause(n);
	net_tx(n); /* frames queued while released */
	return 0;
}

static const struct virtio_device_ops net_ops = {
	.features = net_features,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.queue_kick = net_queue_kick,
	.activate = net_activate,
	.reset = net_reset,
	.quiesce = net_quiesce,
	.resume = net_resume,
	.save = net_save,
	.load = net_load,
	.release = net_release,
	.acquire = net_acquire,
};

/* ---- set-up ---- */

static int net_check_name(const char *name, struct err *e)
{
	if (name && (!*name || strlen(name) >= IFNAMSIZ))
		return err_set(e, -EINVAL,
			       "tap name '%s' is empty or longer "
			       "than %d characters",
			       name, IFNAMSIZ - 1);
	return 0;
}

/*
 * Attach to tap @name (NULL: make one, dvmmtapN) with the 12-byte vnet
 * header and no offloads. *fd_out and @tap_name (the name it got) only
 * on success.
 */
static int net_open_tap(const char *name, int *fd_out, char tap_name[IFNAMSIZ],
			struct err *e)
{
	struct ifreq ifr;
	int hdr = NET_HDR_LEN;
	int fd, rc;

	rc = net_check_name(name, e);
	if (rc)
		return rc;
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "cannot open /dev/net/tun: %s",
			       strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s",
		 name ? name : "dvmmtap%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		rc = err_set(e, -errno, "cannot attach to tap %s: %s",
			     name ? name : "dvmmtap%d", strerror(errno));
		goto fail;
	}
	ifr.ifr_name[IFNAMSIZ - 1] = '\0';
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		rc = err_set(e, -errno, "tap %s: TUNSETVNETHDRSZ: %s",
			     ifr.ifr_name, strerror(errno));
		goto fail;
	}
	/* No offloads: the host hands us plain frames only. */
	if (ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
		rc = err_set(e, -errno, "tap %s: TUNSETOFFLOAD: %s",
			     ifr.ifr_name, strerror(errno));
		goto fail;
	}
	memcpy(tap_name, ifr.ifr_name, IFNAMSIZ);
	*fd_out = fd;
	return 0;

fail:
	close(fd);
	return rc;
}

static int net_set_mac(struct virtio_net *n, const uint8_t mac[6],
		       struct err *e)
{
	static const uint8_t zero[6];

	if (mac) {
		if (mac[0] & 1)
			return err_set(e, -EINVAL,
				       "MAC address "
				       "%02x:%02x:%02x:%02x:%02x:%02x is "
				       "multicast",
				       mac[0], mac[1], mac[2], mac[3], mac[4],
				       mac[5]);
		if (!memcmp(mac, zero, 6))
			return err_set(e, -EINVAL, "MAC address is all zero");
		memcpy(n->mac, mac, 6);
		return 0;
	}
	if (getrandom(n->mac, 6, 0) != 6)
		return err_set(e, -EIO, "getrandom: %s", strerror(errno));
	/* Locally administered, unicast. */
	n->mac[0] = (n->mac[0] & 0xfc) | 0x02;
	return 0;
}

int virtio_net_create(struct virtio_net **out, const struct guest_mem *mem,
		      const char *tap_name, const uint8_t mac[6],
		      unsigned int flags, struct err *e)
{
	struct virtio_net *n;
	bool tx_ok = false, txc_ok = false, rx_ok = false, rxc_ok = false;
	int rc;

	*out = NULL;
	if (flags & ~VIRTIO_CREATE_RELEASED)
		return err_set(e, -EINVAL, "virtio-net: unknown flags %#x",
			       flags);
	rc = net_check_name(tap_name, e);
	if (rc)
		return rc;
	n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(e, -ENOMEM, "virtio-net: out of memory");
	n->tap_fd = n->wake_fd = n->ctl_fd = -1;
	if (tap_name)
		snprintf(n->want_name, sizeof(n->want_name), "%s", tap_name);
	n->rx_spare = malloc(NET_RX_SPARE);
	if (!n->rx_spare) {
		rc = err_set(e, -ENOMEM, "virtio-net: out of memory");
		goto fail;
	}
	rc = net_set_mac(n, mac, e);
	if (rc)
		goto fail;
	rc = -pthread_mutex_init(&n->tx_lock, NULL);
	tx_ok = !rc;
	if (!rc) {
		rc = -pthread_cond_init(&n->tx_idle, NULL);
		txc_ok = !rc;
	}
	if (!rc) {
		rc = -pthread_mutex_init(&n->rx_lock, NULL);
		rx_ok = !rc;
	}
	if (!rc) {
		rc = -pthread_cond_init(&n->rx_cond, NULL);
		rxc_ok = !rc;
	}
	if (rc) {
		err_set(e, rc, "virtio-net: mutex: %s", strerror(-rc));
		goto fail;
	}
	n->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	n->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->wake_fd < 0 || n->ctl_fd < 0) {
		rc = err_set(e, -errno, "virtio-net: eventfd: %s",
			     strerror(errno));
		goto fail;
	}
	if (!(flags & VIRTIO_CREATE_RELEASED)) {
		rc = net_open_tap(tap_name, &n->tap_fd, n->tap_name, e);
		if (rc)
			goto fail;
	} else {
		memcpy(n->tap_name, n->want_name, IFNAMSIZ);
	}
	snprintf(n->name, sizeof(n->name), "virtio-net:%s",
		 n->tap_name[0] ? n->tap_name : "dvmmtap");
	rc = virtio_device_init(
		&n->vd, n->name, VIRTIO_ID_NET, 2, NET_QUEUE_SIZE,
		sizeof(struct virtio_net_config), &net_ops, n, mem);
	if (rc) {
		err_set(e, rc, "virtio-net: device init failed: %s",
			strerror(-rc));
		goto fail;
	}
	*out = n;
	return 0;

fail:
	if (n->tap_fd >= 0)
		close(n->tap_fd);
	if (n->wake_fd >= 0)
		close(n->wake_fd);
	if (n->ctl_fd >= 0)
		close(n->ctl_fd);
	if (rxc_ok)
		pthread_cond_destroy(&n->rx_cond);
	if (rx_ok)
		pthread_mutex_destroy(&n->rx_lock);
	if (txc_ok)
		pthread_cond_destroy(&n->tx_idle);
	if (tx_ok)
		pthread_mutex_destroy(&n->tx_lock);
	free(n->rx_spare);
	free(n);
	return rc;
}

const char *virtio_net_tap_name(const struct virtio_net *n)
{
	return n->tap_name;
}

struct virtio_device *virtio_net_device(struct virtio_net *n)
{
	return &n->vd;
}

void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *s)
{
	s->rx_packets = __atomic_load_n(&n->stats.rx_packets, __ATOMIC_RELAXED);
	s->rx_bytes = __atomic_load_n(&n->stats.rx_bytes, __ATOMIC_RELAXED);
	s->rx_dropped = __atomic_load_n(&n->stats.rx_dropped, __ATOMIC_RELAXED);
	s->tx_packets = __atomic_load_n(&n->stats.tx_packets, __ATOMIC_RELAXED);
	s->tx_bytes = __atomic_load_n(&n->stats.tx_bytes, __ATOMIC_RELAXED);
	s->tx_dropped = __atomic_load_n(&n->stats.tx_dropped, __ATOMIC_RELAXED);
}

void virtio_net_destroy(struct virtio_net *n)
{
	if (!n)
		return;
	net_stop(n);
	virtio_device_destroy(&n->vd);
	backlog_clear(n);
	if (n->tap_fd >= 0)
		close(n->tap_fd);
	close(n->wake_fd);
	close(n->ctl_fd);
	pthread_cond_destroy(&n->rx_cond);
	pthread_mutex_destroy(&n->rx_lock);
	pthread_cond_destroy(&n->tx_idle);
	pthread_mutex_destroy(&n->tx_lock);
	free(n->rx_spare);
	free(n);
}
