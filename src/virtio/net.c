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

/* Device configuration layout (5.1.4), little-endian. */
struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_net_config) == 12,
	       "virtio_net_config layout");

struct virtio_net {
	struct virtio_device vd;
	char name[32]; /* "virtio-net:" + tap name */
	int tap_fd;
	char tap_name[IFNAMSIZ];
	uint8_t mac[6];
	int wake_fd; /* eventfd: RX buffers were added */
	int stop_fd; /* eventfd: RX thread, stop */

	pthread_mutex_t tx_lock; /* TX path and the run state */
	bool running;
	bool broken; /* atomic: we asked for NEEDS_RESET */
	struct vq_chain tx_chain;

	pthread_t rx_thread;
	bool rx_started;
	bool rx_stop;		  /* atomic */
	struct vq_chain rx_chain; /* owned by the RX thread */
	uint8_t *rx_spare;

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

static void net_tx(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vd.vq[NET_TXQ];
	char why[sizeof(vq->error) + 16];
	bool pushed = false, bad = false;

	pthread_mutex_lock(&n->tx_lock);
	while (n->running && !net_broken(n)) {
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
	pthread_mutex_unlock(&n->tx_lock);
	if (bad)
		net_set_broken(n, why);
	if (pushed)
		virtio_queue_done(&n->vd, NET_TXQ);
}

/* ---- RX ---- */

static bool rx_stopping(struct virtio_net *n)
{
	return __atomic_load_n(&n->rx_stop, __ATOMIC_ACQUIRE);
}

/*
 * Wait until @fd (or the stop eventfd) is readable. Returns false when the
 * thread is to stop.
 */
static bool rx_wait(struct virtio_net *n, int fd)
{
	struct pollfd p[2] = {
		{.fd = n->stop_fd, .events = POLLIN},
		{.fd = fd, .events = POLLIN},
	};

	while (!rx_stopping(n)) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", n->vd.name, strerror(errno));
			return false;
		}
		if (p[0].revents)
			return false;
		if (p[1].revents)
			return true;
	}
	return false;
}

/*
 * Get the next RX buffer chain. Returns 1 with n->rx_chain filled, 0 when
 * the thread is to stop (or the device needs a reset and waits for it).
 */
static int rx_get_chain(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vd.vq[NET_RXQ];
	bool waited = false;

	while (!rx_stopping(n)) {
		char why[sizeof(vq->error) + 16];
		int r;

		if (net_broken(n)) {
			rx_wait(n, -1);
			return 0;
		}
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
			continue;
		}
		if (r > 0) {
			if (n->rx_chain.in_bytes >= NET_HDR_LEN)
				return 1;
			snprintf(why, sizeof(why),
				 "receiveq: buffer %u is "
				 "shorter than the 12-byte header",
				 n->rx_chain.head);
			net_set_broken(n, why);
			continue;
		}
		if (!rx_wait(n, n->wake_fd))
			return 0;
		eventfd_drain(n->wake_fd);
		waited = true;
	}
	return 0;
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
		uint16_t one = htole16(1);
		ssize_t r;

		if (!have) {
			if (pending) {
				virtio_queue_done(&n->vd, NET_RXQ);
				pending = 0;
			}
			if (!rx_get_chain(n))
				break;
			have = true;
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
			if (!rx_wait(n, n->tap_fd))
				break;
			continue;
		}
		if ((uint64_t)r > c->in_bytes || r < NET_HDR_LEN) {
			/* Too big for this buffer: drop it, keep the buffer. */
			count(&n->stats.rx_dropped, 1);
			continue;
		}
		vq_chain_write(c, NET_NUM_BUFFERS_OFF, &one, sizeof(one));
		pthread_mutex_lock(&vq->lock);
		vq_push(vq, c->head, r);
		pthread_mutex_unlock(&vq->lock);
		have = false;
		count(&n->stats.rx_packets, 1);
		count(&n->stats.rx_bytes, r - NET_HDR_LEN);
		if (++pending >= NET_RX_BATCH) {
			virtio_queue_done(&n->vd, NET_RXQ);
			pending = 0;
		}
	}
	if (pending)
		virtio_queue_done(&n->vd, NET_RXQ);
	return NULL;
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
	uint64_t one = 1;

	if (q == NET_TXQ) {
		net_tx(n);
	} else if (q == NET_RXQ) {
		/* Buffers were added: wake the RX thread if it waits. */
		if (write(n->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			pr_warn("%s: eventfd: %s", vd->name, strerror(errno));
	}
}

static void net_stop(struct virtio_net *n)
{
	uint64_t one = 1;

	pthread_mutex_lock(&n->tx_lock);
	n->running = false;
	pthread_mutex_unlock(&n->tx_lock);
	if (n->rx_started) {
		__atomic_store_n(&n->rx_stop, true, __ATOMIC_RELEASE);
		if (write(n->stop_fd, &one, sizeof(one)) < 0)
			pr_warn("%s: eventfd: %s", n->vd.name, strerror(errno));
		pthread_join(n->rx_thread, NULL);
		n->rx_started = false;
		__atomic_store_n(&n->rx_stop, false, __ATOMIC_RELEASE);
		eventfd_drain(n->stop_fd);
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

static const struct virtio_device_ops net_ops = {
	.features = net_features,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.queue_kick = net_queue_kick,
	.activate = net_activate,
	.reset = net_reset,
};

/* ---- set-up ---- */

static int net_open_tap(struct virtio_net *n, const char *name, struct err *e)
{
	struct ifreq ifr;
	int hdr = NET_HDR_LEN;
	int fd;

	if (name && (!*name || strlen(name) >= IFNAMSIZ))
		return err_set(e, -EINVAL,
			       "tap name '%s' is empty or longer "
			       "than %d characters",
			       name, IFNAMSIZ - 1);
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "cannot open /dev/net/tun: %s",
			       strerror(errno));
	n->tap_fd = fd;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s",
		 name ? name : "dvmmtap%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return err_set(e, -errno, "cannot attach to tap %s: %s",
			       name ? name : "dvmmtap%d", strerror(errno));
	memcpy(n->tap_name, ifr.ifr_name, IFNAMSIZ);
	n->tap_name[IFNAMSIZ - 1] = '\0';
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)
		return err_set(e, -errno, "tap %s: TUNSETVNETHDRSZ: %s",
			       n->tap_name, strerror(errno));
	/* No offloads: the host hands us plain frames only. */
	if (ioctl(fd, TUNSETOFFLOAD, 0) < 0)
		return err_set(e, -errno, "tap %s: TUNSETOFFLOAD: %s",
			       n->tap_name, strerror(errno));
	return 0;
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
		      const char *tap_name, const uint8_t mac[6], struct err *e)
{
	struct virtio_net *n;
	bool lock_ok = false;
	int rc;

	*out = NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(e, -ENOMEM, "virtio-net: out of memory");
	n->tap_fd = n->wake_fd = n->stop_fd = -1;
	n->rx_spare = malloc(NET_RX_SPARE);
	if (!n->rx_spare) {
		rc = err_set(e, -ENOMEM, "virtio-net: out of memory");
		goto fail;
	}
	rc = net_set_mac(n, mac, e);
	if (rc)
		goto fail;
	rc = -pthread_mutex_init(&n->tx_lock, NULL);
	if (rc) {
		err_set(e, rc, "virtio-net: mutex: %s", strerror(-rc));
		goto fail;
	}
	lock_ok = true;
	n->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	n->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->wake_fd < 0 || n->stop_fd < 0) {
		rc = err_set(e, -errno, "virtio-net: eventfd: %s",
			     strerror(errno));
		goto fail;
	}
	rc = net_open_tap(n, tap_name, e);
	if (rc)
		goto fail;
	snprintf(n->name, sizeof(n->name), "virtio-net:%s", n->tap_name);
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
	if (n->stop_fd >= 0)
		close(n->stop_fd);
	if (lock_ok)
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
	close(n->tap_fd);
	close(n->wake_fd);
	close(n->stop_fd);
	pthread_mutex_destroy(&n->tx_lock);
	free(n->rx_spare);
	free(n);
}
