/*
 * virtio/net.c - virtio-net (virtio 1.2, 5.1) on Linux taps: N queue pairs
 * (pair p: receiveq 2p, transmitq 2p+1); with N > 1 also VIRTIO_NET_F_MQ
 * and VIRTIO_NET_F_CTRL_VQ (control queue 2N, VQ_PAIRS_SET only); the
 * link status; no offloads, no mergeable RX buffers. Frames carry the
 * 12-byte virtio_net_hdr_v1, as the tap does (IFF_VNET_HDR). N = 1 is the
 * single-queue device it always was (same queues, same migration bytes).
 *
 * Pairs (struct net_pair): each local pair has its tap fd, RX thread, TX
 * state, backlog and counters. Pairs naming the same tap, and all pairs
 * of an N > 1 device left to dvmm's own tap, share it via IFF_MULTI_QUEUE.
 * Only the first `active` pairs (1 after creation and reset, then what
 * VQ_PAIRS_SET says) deliver frames: other pairs' RX threads park and
 * their multiqueue tap queues are detached (TUNSETQUEUE). TX is served on
 * every local pair kicked. A remote pair's rings are never touched here:
 * it is started (ops->start) when it becomes active with the driver
 * running, stopped when it stops being active (VQ_PAIRS_SET, reset,
 * quiesce, destroy), its kicks are forwarded. A server (virtio_net_server_*)
 * is the far end of one: it serves one pair on no transport, interrupting
 * through ops->notify, its rings resuming at the used index in guest memory
 * (a stop gives back every chain taken, so the used index is where it was).
 *
 * TX runs on the thread that serves the kick: pop, writev (non-blocking;
 * a tap down or gone drops the frame), push. The driver's header is
 * replaced by a zero one, so the host never sees guest-chosen offloads.
 * RX: with a chain in hand the pair's thread readv()s the next frame into
 * it (a spare tail buffer catches a frame too big: dropped, the chain
 * kept), sets num_buffers and pushes; with no chain it asks for a kick.
 *
 * Link: a local pair's is up while its tap exists and is IFF_UP (dvmm
 * brings up a tap it makes, never a named one); a remote pair's is what
 * its server last reported (up until told); the device's is up when every
 * active pair's is. One thread per device listens on rtnetlink
 * (RTMGRP_LINK); an RTM_NEWLINK/RTM_DELLINK for a tap's ifindex makes it
 * read the tap's state again (if_indextoname, SIOCGIFFLAGS), so a stale
 * event cannot flap the link; the first state is read after the socket is
 * bound. A deleted tap (or a read failing as on a vanished device) stays
 * down until an acquire: RX stops reading it, TX drops. A change updates
 * the status field, bumps config_generation, sends a configuration
 * interrupt (DRIVER_OK only) and logs a line; a server calls ops->link.
 * Host-side link trouble never means NEEDS_RESET.
 *
 * Migration: quiesce stops TX (pr->quiesced under tx_lock, waiting out
 * tx_after), the control queue and remote pairs (n->quiesced under
 * ctl_lock), and parks each RX thread (it unpops a chain it has not
 * filled and sends the interrupt it owes). save drains the taps into the
 * backlogs and writes MAC + backlog (N > 1: version 2, N, active pairs,
 * every pair's backlog); load sets them; remote pairs do not migrate.
 * Backlog frames go to the guest before the tap's. release closes the taps
 * (acquire opens them again, or new ones of dvmm's own). Every byte
 * written to guest buffers is logged (guest_mem_log_write).
 *
 * Lock order: ctl_lock -> tx_lock / rx_lock -> report_lock -> link_lock
 * -> vq->lock. RX threads never take ctl_lock.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "virtio/devices.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22

#define VIRTIO_NET_S_LINK_UP 1

/* Control queue (5.1.6.5). */
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

#define NET_QUEUE_SIZE 256
#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define NET_NUM_BUFFERS_OFF 10
/* Larger than any frame a tap hands out. */
#define NET_RX_SPARE (65536 + 256)
/* Frames between interrupts while frames keep coming. */
#define NET_RX_BATCH 64
/* A backlog: frames (with their header) kept for the guest, per pair. */
#define NET_BACKLOG_FRAMES 256
#define NET_BACKLOG_BYTES (1u << 20)
#define NET_FRAME_MIN NET_HDR_LEN  /* what RX accepts from the tap */
#define NET_FRAME_MAX NET_RX_SPARE /* longer than any tap frame */
#define NET_MAC_LEN 6
/* Multiqueue state: MAC, version, npairs, active, 0, then the pairs. */
#define NET_STATE_V2 2
#define NET_STATE_V2_HDR (NET_MAC_LEN + 4)
#define NO_QUEUE 0xffff

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

struct virtio_net;

struct net_pair {
	struct virtio_net *n;
	unsigned int idx;
	uint16_t rxq, txq;
	bool remote;	     /* not served here (home: by another node) */
	bool own;	     /* dvmm makes the tap (no name given) */
	bool mq;	     /* the tap is opened with IFF_MULTI_QUEUE */
	unsigned int leader; /* first pair of the device on the same tap */
	bool inited;	     /* locks below exist */

	int tap_fd;		  /* -1 while released (or never opened) */
	char tap_name[IFNAMSIZ];  /* the tap attached ("" before the first) */
	char want_name[IFNAMSIZ]; /* tap=NAME; "": dvmm makes its own */
	bool detached;		  /* queue detached (TUNSETQUEUE); ctl_lock */
	bool remote_started;	  /* ops->start succeeded; ctl_lock */

	/* Link, under n->link_lock (gone also read atomically). */
	int ifindex; /* what the link thread watches; 0: nothing */
	bool link_up;
	bool gone; /* the tap was deleted: down until acquire */

	int wake_fd; /* eventfd: RX buffers were added */
	int ctl_fd;  /* eventfd: RX thread, look at your flags */

	pthread_mutex_t tx_lock; /* TX path, running/quiesced, tap_fd */
	pthread_cond_t tx_idle;	 /* tx_after went to 0 */
	bool running;
	bool quiesced;	       /* migration: no TX until resume */
	unsigned int tx_after; /* net_tx passes still notifying */
	struct vq_chain tx_chain;

	pthread_t rx_thread;
	bool rx_started;
	bool rx_stop;		 /* atomic */
	pthread_mutex_t rx_lock; /* rx_pause, rx_active, rx_parked, ... */
	pthread_cond_t rx_cond;
	bool rx_pause;		  /* RX thread: park (touch no ring) */
	bool rx_active;		  /* deliver on this receiveq */
	bool rx_parked;		  /* ... it touches no ring now */
	bool rx_exited;		  /* it ended on an error of its own */
	struct vq_chain rx_chain; /* owned by the RX thread */
	uint8_t *rx_spare;

	/* Frames for the guest before any from the tap: a ring. */
	struct net_frame backlog[NET_BACKLOG_FRAMES];
	unsigned int bl_head, bl_count;
	size_t bl_bytes;

	struct virtio_net_stats stats; /* atomic counters */
};

struct virtio_net {
	struct virtio_device vd;
	bool vd_inited;
	char name[32]; /* "virtio-net:" + tap name */
	unsigned int npairs;
	struct net_pair *pair;
	uint8_t mac[6];
	bool broken; /* atomic: we asked for NEEDS_RESET */

	bool server;	    /* serves pair spair of a device homed elsewhere */
	unsigned int spair; /* server: the pair */
	struct virtio_net_server_ops sops;
	struct virtio_net_remote_ops rops; /* home, with remote pairs */

	pthread_mutex_t ctl_lock; /* below, remote start/stop, the ctrl queue */
	unsigned int active;	  /* pairs active (also under link_lock) */
	bool running;		  /* activated (server: started) */
	bool quiesced;		  /* migration: control queue, remote pairs */
	struct vq_chain ctl_chain;

	pthread_mutex_t report_lock; /* link reports go out in order */
	pthread_mutex_t link_lock;   /* the pairs' link state, active */
	bool link_up;		     /* as the driver reads it; atomic */

	int nl_fd;	  /* rtnetlink, RTMGRP_LINK; -1: not watching */
	int link_stop_fd; /* eventfd: link thread, end */
	pthread_t link_thread;
	bool link_started;
	bool locks_ok;
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

static bool pair_gone(struct net_pair *pr)
{
	return __atomic_load_n(&pr->gone, __ATOMIC_ACQUIRE);
}

/* The local pairs in order, from pair @p on. */
static struct net_pair *local_from(const struct virtio_net *n, unsigned int p)
{
	for (; p < n->npairs; p++)
		if (!n->pair[p].remote)
			return &n->pair[p];
	return NULL;
}

static struct net_pair *local_first(const struct virtio_net *n)
{
	return local_from(n, 0);
}

static struct net_pair *local_next(const struct virtio_net *n,
				   const struct net_pair *pr)
{
	return local_from(n, pr->idx + 1);
}

/*
 * The driver broke the rules: stop serving the queues and ask for a
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
		pr_warn("%s: eventfd: %s", n->name, strerror(errno));
}

/* ---- the backlog ---- */

static struct net_frame *backlog_first(struct net_pair *pr)
{
	return pr->bl_count ? &pr->backlog[pr->bl_head] : NULL;
}

static void backlog_drop_first(struct net_pair *pr)
{
	struct net_frame *f = &pr->backlog[pr->bl_head];

	pr->bl_bytes -= f->len;
	free(f->data);
	f->data = NULL;
	f->len = 0;
	pr->bl_head = (pr->bl_head + 1) % NET_BACKLOG_FRAMES;
	pr->bl_count--;
}

static void backlog_clear(struct net_pair *pr)
{
	while (pr->bl_count)
		backlog_drop_first(pr);
	pr->bl_head = 0;
}

static bool backlog_fits(const struct net_pair *pr, size_t len)
{
	return pr->bl_count < NET_BACKLOG_FRAMES &&
	       len <= NET_BACKLOG_BYTES - pr->bl_bytes;
}

/* Append a copy of @len bytes (backlog_fits() said yes); -ENOMEM. */
static int backlog_add(struct net_pair *pr, const uint8_t *p, uint32_t len)
{
	struct net_frame *f =
		&pr->backlog[(pr->bl_head + pr->bl_count) % NET_BACKLOG_FRAMES];

	f->data = malloc(len);
	if (!f->data)
		return -ENOMEM;
	memcpy(f->data, p, len);
	f->len = len;
	pr->bl_count++;
	pr->bl_bytes += len;
	return 0;
}

static const struct net_frame *backlog_at(const struct net_pair *pr,
					  unsigned int i)
{
	return &pr->backlog[(pr->bl_head + i) % NET_BACKLOG_FRAMES];
}

/* ---- the link ---- */

/* The device's link now (link_lock held). */
static bool net_link_compute(struct virtio_net *n)
{
	if (n->server)
		return n->pair[n->spair].link_up;
	for (unsigned int p = 0; p < n->active; p++)
		if (!n->pair[p].link_up)
			return false;
	return true;
}

/*
 * Recompute the device's link from its pairs; on a change bump the
 * configuration generation, log, and tell the driver (if @notify and
 * DRIVER_OK) or, for a server, ops->link.
 */
static void net_link_update(struct virtio_net *n, bool notify)
{
	struct virtio_device *vd = &n->vd;
	bool up, changed;

	pthread_mutex_lock(&n->report_lock);
	pthread_mutex_lock(&n->link_lock);
	up = net_link_compute(n);
	changed = up != n->link_up;
	if (changed) {
		__atomic_store_n(&n->link_up, up, __ATOMIC_RELEASE);
		if (!n->server)
			__atomic_fetch_add(&vd->config_generation, 1,
					   __ATOMIC_ACQ_REL);
	}
	pthread_mutex_unlock(&n->link_lock);
	if (changed) {
		pr_warn("%s: link %s", n->name, up ? "up" : "down");
		if (n->server) {
			if (n->sops.link)
				n->sops.link(n->sops.opaque, up);
		} else if (notify &&
			   (__atomic_load_n(&vd->status, __ATOMIC_ACQUIRE) &
			    VIRTIO_STATUS_DRIVER_OK) &&
			   vd->transport.notify_config) {
			vd->transport.notify_config(vd->transport.opaque);
		}
	}
	pthread_mutex_unlock(&n->report_lock);
}

/* The errors a tap fd gives once its device is gone. */
static bool tap_gone_errno(int err)
{
	return err == EBADFD || err == ENODEV || err == ENXIO || err == EIO;
}

/* Pair @pr's tap vanished: its link is down until an acquire. */
static void pair_set_gone(struct net_pair *pr, const char *how)
{
	struct virtio_net *n = pr->n;
	bool was;

	pthread_mutex_lock(&n->link_lock);
	was = pr->gone;
	__atomic_store_n(&pr->gone, true, __ATOMIC_RELEASE);
	pr->link_up = false;
	pr->ifindex = 0;
	pthread_mutex_unlock(&n->link_lock);
	if (was)
		return;
	pr_warn("%s: tap %s of queue pair %u is gone (%s)", n->name,
		pr->tap_name, pr->idx, how);
	net_signal(n, pr->ctl_fd); /* the RX thread stops reading it */
}

/* A socket for interface ioctls. */
static int if_socket(struct err *e)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return err_set(e, -errno, "socket: %s", strerror(errno));
	return s;
}

/* ioctl @req (@what in the message) on interface @name through @s. */
static int if_ioctl(int s, unsigned long req, const char *what,
		    const char *name, struct ifreq *ifr, struct err *e)
{
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", name);
	if (ioctl(s, req, ifr) < 0)
		return err_set(e, -errno, "tap %s: %s: %s", name, what,
			       strerror(errno));
	return 0;
}

/* Interface @name: its index and whether it is up. */
static int tap_query(const char *name, int *ifindex, bool *up, struct err *e)
{
	struct ifreq ifr = {0};
	int s = if_socket(e), rc;

	if (s < 0)
		return s;
	rc = if_ioctl(s, SIOCGIFINDEX, "SIOCGIFINDEX", name, &ifr, e);
	if (!rc)
		*ifindex = ifr.ifr_ifindex;
	if (!rc)
		rc = if_ioctl(s, SIOCGIFFLAGS, "SIOCGIFFLAGS", name, &ifr, e);
	if (!rc)
		*up = ifr.ifr_flags & IFF_UP;
	close(s);
	return rc;
}

/* Bring interface @name up (a tap of dvmm's own, just made). */
static int tap_set_up(const char *name, struct err *e)
{
	struct ifreq ifr = {0};
	int s = if_socket(e), rc;

	if (s < 0)
		return s;
	rc = if_ioctl(s, SIOCGIFFLAGS, "SIOCGIFFLAGS", name, &ifr, e);
	if (!rc) {
		ifr.ifr_flags |= IFF_UP;
		rc = if_ioctl(s, SIOCSIFFLAGS, "cannot bring it up", name, &ifr,
			      e);
	}
	close(s);
	return rc;
}

/*
 * Read the state of @pr's tap (the interface it watches) from the kernel.
 * Events only say "look again": one queued before the state was first
 * taken (the tap's creation, say) must not flap the link.
 */
static void pair_link_refresh(struct net_pair *pr)
{
	struct virtio_net *n = pr->n;
	char name[IF_NAMESIZE];
	struct ifreq ifr;
	int ifindex, s;

	pthread_mutex_lock(&n->link_lock);
	ifindex = pr->ifindex;
	pthread_mutex_unlock(&n->link_lock);
	if (!ifindex)
		return;
	if (!if_indextoname((unsigned int)ifindex, name)) {
		if (errno == ENXIO || errno == ENODEV)
			pair_set_gone(pr, "deleted");
		return;
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		if (errno == ENXIO || errno == ENODEV)
			pair_set_gone(pr, "deleted");
	} else {
		pthread_mutex_lock(&n->link_lock);
		if (pr->ifindex == ifindex)
			pr->link_up = ifr.ifr_flags & IFF_UP;
		pthread_mutex_unlock(&n->link_lock);
	}
	close(s);
}

/* RTM_NEWLINK or RTM_DELLINK for @ifindex; true if it is one of ours. */
static bool net_link_event(struct virtio_net *n, int ifindex)
{
	bool ours = false;

	if (ifindex <= 0)
		return false;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		bool match;

		pthread_mutex_lock(&n->link_lock);
		match = pr->ifindex == ifindex;
		pthread_mutex_unlock(&n->link_lock);
		if (match)
			pair_link_refresh(pr);
		ours |= match;
	}
	return ours;
}

/* Events were lost (ENOBUFS): look at every watched tap. */
static void net_link_resync(struct virtio_net *n)
{
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		pair_link_refresh(pr);
}

/* Read one batch from the rtnetlink socket. False: stop watching. */
static bool net_link_read(struct virtio_net *n, uint8_t *buf, size_t cap)
{
	struct sockaddr_nl from;
	socklen_t fl = sizeof(from);
	bool ours = false;
	size_t off = 0, len;
	ssize_t r;

	r = recvfrom(n->nl_fd, buf, cap, MSG_DONTWAIT, (struct sockaddr *)&from,
		     &fl);
	if (r < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return true;
		if (errno == ENOBUFS) {
			net_link_resync(n);
			net_link_update(n, true);
			return true;
		}
		pr_err("%s: rtnetlink: %s; no more link changes", n->name,
		       strerror(errno));
		return false;
	}
	if (fl < sizeof(from) || from.nl_family != AF_NETLINK ||
	    from.nl_pid != 0)
		return true; /* not from the kernel */
	len = (size_t)r;
	while (len - off >= sizeof(struct nlmsghdr)) {
		struct nlmsghdr h;
		struct ifinfomsg ifi;

		memcpy(&h, buf + off, sizeof(h));
		if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len - off)
			break;
		if ((h.nlmsg_type == RTM_NEWLINK ||
		     h.nlmsg_type == RTM_DELLINK) &&
		    h.nlmsg_len >= NLMSG_LENGTH(sizeof(ifi))) {
			memcpy(&ifi, buf + off + NLMSG_HDRLEN, sizeof(ifi));
			ours |= net_link_event(n, ifi.ifi_index);
		}
		if (NLMSG_ALIGN(h.nlmsg_len) >= len - off)
			break;
		off += NLMSG_ALIGN(h.nlmsg_len);
	}
	if (ours)
		net_link_update(n, true);
	return true;
}

static void *net_link_thread(void *arg)
{
	struct virtio_net *n = arg;
	size_t cap = 32768;
	uint8_t *buf = malloc(cap);

	if (!buf) {
		pr_err("%s: link thread: out of memory", n->name);
		return NULL;
	}
	for (;;) {
		struct pollfd p[2] = {
			{.fd = n->link_stop_fd, .events = POLLIN},
			{.fd = n->nl_fd, .events = POLLIN},
		};

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: link thread: poll: %s", n->name,
			       strerror(errno));
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents && !net_link_read(n, buf, cap))
			break;
	}
	free(buf);
	return NULL;
}

/* ---- TX ---- */

static void net_tx_one(struct net_pair *pr, const struct vq_chain *c)
{
	static const uint8_t zero_hdr[NET_HDR_LEN];
	struct iovec iov[VQ_MAX_SEGS + 1];
	unsigned int cnt = 1;
	uint64_t skip = NET_HDR_LEN;
	ssize_t w;

	if (c->out_bytes < NET_HDR_LEN + 14 ||
	    c->out_bytes > NET_HDR_LEN + NET_RX_SPARE || pair_gone(pr)) {
		count(&pr->stats.tx_dropped, 1);
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
		w = writev(pr->tap_fd, iov, cnt);
	} while (w < 0 && errno == EINTR);
	if (w < 0) {
		/* EIO: the tap is down; EAGAIN: its queue is full. */
		count(&pr->stats.tx_dropped, 1);
		return;
	}
	count(&pr->stats.tx_packets, 1);
	count(&pr->stats.tx_bytes, c->out_bytes - NET_HDR_LEN);
}

/*
 * Send what the driver queued on @pr's transmitq. Nothing is taken while
 * quiesced or without a tap (released): the frames wait in the ring.
 */
static void net_tx(struct net_pair *pr)
{
	struct virtio_net *n = pr->n;
	struct virtqueue *vq = &n->vd.vq[pr->txq];
	char why[sizeof(vq->error) + 32];
	bool pushed = false, bad = false;

	pthread_mutex_lock(&pr->tx_lock);
	while (pr->running && !pr->quiesced && pr->tap_fd >= 0 &&
	       !net_broken(n)) {
		int r;

		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, &pr->tx_chain);
		if (r < 0)
			snprintf(why, sizeof(why), "transmitq %u: %.*s",
				 pr->txq, (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r < 0) {
			bad = true;
			break;
		}
		if (r == 0)
			break;
		net_tx_one(pr, &pr->tx_chain);
		pthread_mutex_lock(&vq->lock);
		vq_push(vq, pr->tx_chain.head, 0);
		pthread_mutex_unlock(&vq->lock);
		pushed = true;
	}
	if (!bad && !pushed) {
		pthread_mutex_unlock(&pr->tx_lock);
		return;
	}
	pr->tx_after++;
	pthread_mutex_unlock(&pr->tx_lock);
	if (bad)
		net_set_broken(n, why);
	if (pushed)
		virtio_queue_done(&n->vd, pr->txq);
	pthread_mutex_lock(&pr->tx_lock);
	if (--pr->tx_after == 0)
		pthread_cond_broadcast(&pr->tx_idle);
	pthread_mutex_unlock(&pr->tx_lock);
}

/* Stop TX on @pr and wait for the interrupt of a pass still running. */
static void tx_quiesce(struct net_pair *pr)
{
	pthread_mutex_lock(&pr->tx_lock);
	pr->quiesced = true;
	while (pr->tx_after)
		pthread_cond_wait(&pr->tx_idle, &pr->tx_lock);
	pthread_mutex_unlock(&pr->tx_lock);
}

/* ---- RX ---- */

static bool rx_stopping(struct net_pair *pr)
{
	return __atomic_load_n(&pr->rx_stop, __ATOMIC_ACQUIRE);
}

/* Is the RX thread to park (migration, or the pair is not active)? */
static bool rx_park_wanted(struct net_pair *pr)
{
	bool p;

	pthread_mutex_lock(&pr->rx_lock);
	p = pr->rx_pause || !pr->rx_active;
	pthread_mutex_unlock(&pr->rx_lock);
	return p;
}

enum rx_wake { RX_READY, RX_CTL, RX_FATAL };

/*
 * Wait until @fd (-1: none) is readable, or ctl_fd is (then drained:
 * the caller looks at its flags again).
 */
static enum rx_wake rx_wait(struct net_pair *pr, int fd)
{
	for (;;) {
		struct pollfd p[2] = {
			{.fd = pr->ctl_fd, .events = POLLIN},
			{.fd = fd, .events = POLLIN},
		};

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", pr->n->name, strerror(errno));
			return RX_FATAL;
		}
		if (p[0].revents) {
			eventfd_drain(pr->ctl_fd);
			return RX_CTL;
		}
		if (p[1].revents)
			return RX_READY;
	}
}

/*
 * Get the next RX buffer chain. Returns 1 with pr->rx_chain filled, 0
 * when the thread is to look at its flags (stop, pause, broken), -1 when
 * it cannot go on.
 */
static int rx_get_chain(struct net_pair *pr)
{
	struct virtio_net *n = pr->n;
	struct virtqueue *vq = &n->vd.vq[pr->rxq];
	bool waited = false;

	for (;;) {
		char why[sizeof(vq->error) + 32];
		enum rx_wake w;
		int r;

		if (net_broken(n))
			return 0;
		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, &pr->rx_chain);
		if (r == 0) {
			/* Empty: ask for a kick, then look once more. */
			vq_set_kick_wanted(vq, true);
			if (vq_has_work(vq))
				r = vq_pop(vq, &pr->rx_chain);
		} else if (r > 0 && waited) {
			vq_set_kick_wanted(vq, false);
		}
		if (r < 0)
			snprintf(why, sizeof(why), "receiveq %u: %.*s", pr->rxq,
				 (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r < 0) {
			net_set_broken(n, why);
			return 0;
		}
		if (r > 0) {
			if (pr->rx_chain.in_bytes >= NET_HDR_LEN)
				return 1;
			snprintf(why, sizeof(why),
				 "receiveq %u: buffer %u is "
				 "shorter than the 12-byte header",
				 pr->rxq, pr->rx_chain.head);
			net_set_broken(n, why);
			return 0;
		}
		w = rx_wait(pr, pr->wake_fd);
		if (w != RX_READY)
			return w == RX_CTL ? 0 : -1;
		eventfd_drain(pr->wake_fd);
		waited = true;
	}
}

/* @len bytes of a frame are in chain @c: num_buffers, log, push, count. */
static void rx_deliver(struct net_pair *pr, const struct vq_chain *c,
		       uint32_t len)
{
	struct virtqueue *vq = &pr->n->vd.vq[pr->rxq];
	uint16_t one = htole16(1);

	vq_chain_write(c, NET_NUM_BUFFERS_OFF, &one, sizeof(one));
	virtio_log_chain_write(pr->n->vd.mem, c, 0, len);
	pthread_mutex_lock(&vq->lock);
	vq_push(vq, c->head, len);
	pthread_mutex_unlock(&vq->lock);
	count(&pr->stats.rx_packets, 1);
	count(&pr->stats.rx_bytes, len - NET_HDR_LEN);
}

/*
 * The first backlog frame into chain @c. True when the chain was used;
 * false when the frame does not fit it (dropped, the chain is kept, as
 * for a frame from the tap).
 */
static bool rx_from_backlog(struct net_pair *pr, const struct vq_chain *c)
{
	struct net_frame *f = backlog_first(pr);
	bool fits = f->len <= c->in_bytes;

	if (fits) {
		vq_chain_write(c, 0, f->data, f->len);
		rx_deliver(pr, c, f->len);
	} else {
		count(&pr->stats.rx_dropped, 1);
	}
	backlog_drop_first(pr);
	return fits;
}

/*
 * Park: say so, wait until resumed (and active) or stopped. The caller
 * gave back its chain and sent the interrupts it owed.
 */
static void rx_park(struct net_pair *pr)
{
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_parked = true;
	pthread_cond_broadcast(&pr->rx_cond);
	while ((pr->rx_pause || !pr->rx_active) && !rx_stopping(pr))
		pthread_cond_wait(&pr->rx_cond, &pr->rx_lock);
	pr->rx_parked = false;
	pthread_mutex_unlock(&pr->rx_lock);
}

static void rx_flush(struct net_pair *pr, unsigned int *pending)
{
	if (*pending)
		virtio_queue_done(&pr->n->vd, pr->rxq);
	*pending = 0;
}

/* Has the tap of @pr something to read from? */
static bool rx_tap_usable(struct net_pair *pr)
{
	return pr->tap_fd >= 0 && !pair_gone(pr);
}

static void *net_rx_thread(void *arg)
{
	struct net_pair *pr = arg;
	struct virtio_net *n = pr->n;
	struct virtqueue *vq = &n->vd.vq[pr->rxq];
	struct vq_chain *c = &pr->rx_chain;
	unsigned int pending = 0;
	bool have = false;

	while (!rx_stopping(pr)) {
		struct iovec iov[VQ_MAX_SEGS + 1];
		unsigned int cnt;
		ssize_t r;

		if (rx_park_wanted(pr)) {
			if (have) {
				/* Not filled: the driver still has it. */
				pthread_mutex_lock(&vq->lock);
				vq_unpop(vq);
				pthread_mutex_unlock(&vq->lock);
				have = false;
			}
			rx_flush(pr, &pending);
			rx_park(pr);
			continue;
		}
		if (!have || net_broken(n))
			rx_flush(pr, &pending);
		if (net_broken(n) || (!pr->bl_count && !rx_tap_usable(pr))) {
			/* Nothing to do until reset, resume or stop. */
			if (rx_wait(pr, -1) == RX_FATAL)
				break;
			continue;
		}
		if (!have) {
			int g = rx_get_chain(pr);

			if (g < 0)
				break;
			if (g == 0)
				continue;
			have = true;
		}
		if (pr->bl_count) {
			if (rx_from_backlog(pr, c)) {
				have = false;
				if (++pending >= NET_RX_BATCH)
					rx_flush(pr, &pending);
			}
			continue;
		}
		cnt = c->n_in;
		memcpy(iov, &c->iov[c->n_out], cnt * sizeof(iov[0]));
		iov[cnt].iov_base = pr->rx_spare;
		iov[cnt].iov_len = NET_RX_SPARE;
		r = readv(pr->tap_fd, iov, cnt + 1);
		if (r < 0) {
			int err = errno;

			if (err == EINTR)
				continue;
			rx_flush(pr, &pending);
			if (tap_gone_errno(err)) {
				pair_set_gone(pr, strerror(err));
				net_link_update(n, true);
				continue;
			}
			if (err != EAGAIN)
				pr_warn("%s: read from %s: %s", n->name,
					pr->tap_name, strerror(err));
			if (rx_wait(pr, pr->tap_fd) == RX_FATAL)
				break;
			continue;
		}
		if ((uint64_t)r > c->in_bytes || r < NET_HDR_LEN) {
			/* Too big for this buffer: drop it, keep the buffer
			 * (whose bytes the read did overwrite). */
			virtio_log_chain_write(n->vd.mem, c, 0, (uint64_t)r);
			count(&pr->stats.rx_dropped, 1);
			continue;
		}
		rx_deliver(pr, c, r);
		have = false;
		if (++pending >= NET_RX_BATCH)
			rx_flush(pr, &pending);
	}
	if (have) {
		pthread_mutex_lock(&vq->lock);
		vq_unpop(vq);
		pthread_mutex_unlock(&vq->lock);
	}
	rx_flush(pr, &pending);
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_exited = true;
	pthread_cond_broadcast(&pr->rx_cond);
	pthread_mutex_unlock(&pr->rx_lock);
	return NULL;
}

/* Wait until the RX thread (if any) parked or ended (rx_lock held). */
static void rx_wait_parked(struct net_pair *pr)
{
	while (pr->rx_started && !pr->rx_parked && !pr->rx_exited)
		pthread_cond_wait(&pr->rx_cond, &pr->rx_lock);
}

/*
 * Ask the RX thread to park (or, not started yet, to park when it starts)
 * and wait until it did: it then holds no chain and touches nothing.
 */
static void net_rx_pause(struct net_pair *pr)
{
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_pause = true;
	pthread_mutex_unlock(&pr->rx_lock);
	if (!pr->rx_started)
		return;
	net_signal(pr->n, pr->ctl_fd);
	pthread_mutex_lock(&pr->rx_lock);
	rx_wait_parked(pr);
	pthread_mutex_unlock(&pr->rx_lock);
}

static void net_rx_unpause(struct net_pair *pr)
{
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_pause = false;
	pthread_cond_broadcast(&pr->rx_cond);
	pthread_mutex_unlock(&pr->rx_lock);
}

/* Let the RX thread deliver, or park it and wait until it did. */
static void rx_set_active(struct net_pair *pr, bool on)
{
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_active = on;
	pthread_cond_broadcast(&pr->rx_cond);
	pthread_mutex_unlock(&pr->rx_lock);
	if (on || !pr->rx_started)
		return;
	net_signal(pr->n, pr->ctl_fd);
	pthread_mutex_lock(&pr->rx_lock);
	rx_wait_parked(pr);
	pthread_mutex_unlock(&pr->rx_lock);
}

/* Does the RX thread (if any) keep off the backlog and the tap now? */
static bool net_rx_idle(struct net_pair *pr)
{
	bool idle;

	if (!pr->rx_started)
		return true;
	pthread_mutex_lock(&pr->rx_lock);
	idle = pr->rx_parked || pr->rx_exited;
	pthread_mutex_unlock(&pr->rx_lock);
	return idle;
}

/* ---- starting and stopping a local pair ---- */

static int pair_start(struct net_pair *pr)
{
	int rc;

	if (pr->rx_started)
		return 0;
	pr->rx_exited = false;
	rc = thread_start_nosignals(&pr->rx_thread, net_rx_thread, pr);
	if (rc) {
		pr_err("%s: cannot start the RX thread of queue pair %u: %s",
		       pr->n->name, pr->idx, strerror(-rc));
		return rc;
	}
	pr->rx_started = true;
	pthread_mutex_lock(&pr->tx_lock);
	pr->running = true;
	pthread_mutex_unlock(&pr->tx_lock);
	return 0;
}

/* Stop serving @pr's rings: no TX pass and no RX thread afterwards. */
static void pair_stop(struct net_pair *pr, bool wait_tx)
{
	struct virtio_net *n = pr->n;

	pthread_mutex_lock(&pr->tx_lock);
	pr->running = false;
	while (wait_tx && pr->tx_after)
		pthread_cond_wait(&pr->tx_idle, &pr->tx_lock);
	pthread_mutex_unlock(&pr->tx_lock);
	if (pr->rx_started) {
		pthread_mutex_lock(&pr->rx_lock);
		__atomic_store_n(&pr->rx_stop, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&pr->rx_cond);
		pthread_mutex_unlock(&pr->rx_lock);
		net_signal(n, pr->ctl_fd);
		pthread_join(pr->rx_thread, NULL);
		pr->rx_started = false;
		__atomic_store_n(&pr->rx_stop, false, __ATOMIC_RELEASE);
		eventfd_drain(pr->ctl_fd);
	}
	eventfd_drain(pr->wake_fd);
}

/*
 * Detach (or attach again) @pr's queue of a multiqueue tap, so that the
 * host steers frames only to active pairs. ctl_lock held.
 */
static void pair_queue_set(struct net_pair *pr, bool attach)
{
	struct ifreq ifr;

	if (!pr->mq || pr->tap_fd < 0 || pr->detached == !attach ||
	    pair_gone(pr))
		return;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	if (ioctl(pr->tap_fd, TUNSETQUEUE, &ifr) < 0) {
		pr_warn("%s: tap %s: cannot %s queue pair %u: %s", pr->n->name,
			pr->tap_name, attach ? "attach" : "detach", pr->idx,
			strerror(errno));
		return;
	}
	pr->detached = !attach;
}

/* ---- remote pairs ---- */

/* Start remote pair @pr on the rings the driver gave it. ctl_lock held. */
static int remote_start(struct virtio_net *n, struct net_pair *pr, char *why,
			size_t why_len)
{
	struct virtio_net_pair_setup s;
	int rc;

	if (pr->remote_started)
		return 0;
	memset(&s, 0, sizeof(s));
	s.features = n->vd.guest_features;
	for (int i = 0; i < 2; i++) {
		struct virtqueue *vq = &n->vd.vq[2 * pr->idx + i];
		bool en;

		pthread_mutex_lock(&vq->lock);
		en = vq->enabled;
		s.desc[i] = vq->desc_gpa;
		s.driver[i] = vq->avail_gpa;
		s.device[i] = vq->used_gpa;
		s.size[i] = vq->size;
		pthread_mutex_unlock(&vq->lock);
		if (!en) {
			snprintf(why, why_len,
				 "queue pair %u set active with queue %u "
				 "not enabled",
				 pr->idx, 2 * pr->idx + i);
			return -EINVAL;
		}
	}
	memcpy(s.mac, n->mac, sizeof(s.mac));
	rc = n->rops.start(n->rops.opaque, pr->idx, &s);
	if (rc) {
		snprintf(why, why_len,
			 "queue pair %u: its server did not start (%d)",
			 pr->idx, rc);
		return -EIO;
	}
	pr->remote_started = true;
	return 0;
}

static void remote_stop(struct virtio_net *n, struct net_pair *pr)
{
	if (!pr->remote_started)
		return;
	n->rops.stop(n->rops.opaque, pr->idx);
	pr->remote_started = false;
}

/* ---- active pairs (home device; ctl_lock held) ---- */

static int pair_set_active(struct virtio_net *n, struct net_pair *pr, bool on,
			   char *why, size_t why_len)
{
	if (pr->remote) {
		if (!on) {
			remote_stop(n, pr);
			return 0;
		}
		if (!n->running || n->quiesced)
			return 0;
		return remote_start(n, pr, why, why_len);
	}
	if (on) {
		pair_queue_set(pr, true);
		rx_set_active(pr, true);
	} else {
		rx_set_active(pr, false);
		pair_queue_set(pr, false);
	}
	return 0;
}

static void net_set_active_count(struct virtio_net *n, unsigned int k)
{
	pthread_mutex_lock(&n->link_lock);
	n->active = k;
	pthread_mutex_unlock(&n->link_lock);
}

/* Make the first @k pairs active; on failure nothing changed. */
static int net_set_active(struct virtio_net *n, unsigned int k, char *why,
			  size_t why_len)
{
	unsigned int old = n->active;

	for (unsigned int p = old; p-- > k;)
		pair_set_active(n, &n->pair[p], false, NULL, 0);
	for (unsigned int p = old; p < k; p++) {
		int rc = pair_set_active(n, &n->pair[p], true, why, why_len);

		if (rc) {
			while (p-- > old)
				pair_set_active(n, &n->pair[p], false, NULL, 0);
			return rc;
		}
	}
	net_set_active_count(n, k);
	net_link_update(n, true);
	return 0;
}

/* ---- the control queue ---- */

/* Where the control queue is, NO_QUEUE without one (5.1.2). */
static uint16_t net_ctrlq(struct virtio_net *n)
{
	uint16_t q;

	if (n->server || !virtio_has_feature(&n->vd, VIRTIO_NET_F_CTRL_VQ))
		return NO_QUEUE;
	q = virtio_has_feature(&n->vd, VIRTIO_NET_F_MQ) ? 2 * n->npairs : 2;
	return q < n->vd.num_queues ? q : NO_QUEUE;
}

/*
 * Carry out one command; returns the ack, or -1 when the chain is
 * malformed (@why says how). *reset: acked, but the device must be reset.
 */
static int net_ctrl_one(struct virtio_net *n, const struct vq_chain *c,
			char *why, size_t why_len, bool *reset)
{
	uint8_t hdr[2];
	uint16_t k;

	if (c->in_bytes < 1 || c->out_bytes < sizeof(hdr)) {
		snprintf(why, why_len,
			 "controlq: chain %u has %llu readable bytes and %llu "
			 "writable ones (at least 2 and 1)",
			 c->head, (unsigned long long)c->out_bytes,
			 (unsigned long long)c->in_bytes);
		return -1;
	}
	vq_chain_read(c, 0, hdr, sizeof(hdr));
	if (hdr[0] != VIRTIO_NET_CTRL_MQ ||
	    hdr[1] != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET ||
	    !virtio_has_feature(&n->vd, VIRTIO_NET_F_MQ) ||
	    c->out_bytes < sizeof(hdr) + sizeof(k))
		return VIRTIO_NET_ERR;
	vq_chain_read(c, sizeof(hdr), &k, sizeof(k));
	k = le16toh(k);
	if (k < 1 || k > n->npairs)
		return VIRTIO_NET_ERR;
	if (net_set_active(n, k, why, why_len)) {
		*reset = true;
		return VIRTIO_NET_ERR;
	}
	return VIRTIO_NET_OK;
}

static void net_ctrl(struct virtio_net *n)
{
	uint16_t q = net_ctrlq(n);
	struct virtqueue *vq;
	char why[sizeof(vq->error) + 64];
	bool pushed = false, bad = false;

	if (q == NO_QUEUE)
		return;
	vq = &n->vd.vq[q];
	pthread_mutex_lock(&n->ctl_lock);
	while (n->running && !n->quiesced && !net_broken(n)) {
		struct vq_chain *c = &n->ctl_chain;
		bool reset = false;
		uint8_t ack;
		int r;

		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, c);
		if (r < 0)
			snprintf(why, sizeof(why), "controlq: %.*s",
				 (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r <= 0) {
			bad = r < 0;
			break;
		}
		r = net_ctrl_one(n, c, why, sizeof(why), &reset);
		if (r < 0) {
			bad = true;
			break;
		}
		ack = (uint8_t)r;
		vq_chain_write(c, 0, &ack, 1);
		virtio_log_chain_write(n->vd.mem, c, 0, 1);
		pthread_mutex_lock(&vq->lock);
		vq_push(vq, c->head, 1);
		pthread_mutex_unlock(&vq->lock);
		pushed = true;
		if (reset) {
			bad = true;
			break;
		}
	}
	/* Under ctl_lock: quiesce finds the interrupt sent. */
	if (pushed)
		virtio_queue_done(&n->vd, q);
	pthread_mutex_unlock(&n->ctl_lock);
	if (bad)
		net_set_broken(n, why);
}

/* ---- device ops ---- */

static uint64_t net_features(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);
	uint64_t f = (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS);

	if (n->npairs > 1)
		f |= (1ULL << VIRTIO_NET_F_CTRL_VQ) | (1ULL << VIRTIO_NET_F_MQ);
	return f;
}

static void net_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len)
{
	struct virtio_net *n = to_net(vd);
	struct virtio_net_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	memcpy(cfg.mac, n->mac, sizeof(cfg.mac));
	cfg.status = htole16(__atomic_load_n(&n->link_up, __ATOMIC_ACQUIRE) ?
				     VIRTIO_NET_S_LINK_UP :
				     0);
	cfg.max_virtqueue_pairs = htole16(n->npairs);
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
	struct net_pair *pr;

	if (q == net_ctrlq(n)) {
		net_ctrl(n);
		return;
	}
	if (q >= 2 * n->npairs)
		return;
	pr = &n->pair[q / 2];
	if (pr->remote) {
		if (!n->server)
			n->rops.kick(n->rops.opaque, q);
	} else if (q == pr->txq) {
		net_tx(pr);
	} else {
		net_signal(n, pr->wake_fd); /* wake the RX thread if it waits */
	}
}

/* Stop every pair (home device): the state after a reset. */
static void net_stop(struct virtio_net *n)
{
	pthread_mutex_lock(&n->ctl_lock);
	n->running = false;
	for (unsigned int p = 0; p < n->npairs; p++)
		if (n->pair[p].remote)
			remote_stop(n, &n->pair[p]);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		pair_stop(pr, false);
		pthread_mutex_lock(&pr->rx_lock);
		pr->rx_active = pr->idx == 0;
		pthread_mutex_unlock(&pr->rx_lock);
		pair_queue_set(pr, pr->idx == 0);
	}
	net_set_active_count(n, 1);
	__atomic_store_n(&n->broken, false, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&n->ctl_lock);
	net_link_update(n, false);
}

static int net_activate(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);
	char why[160];
	int rc = 0;

	pthread_mutex_lock(&n->ctl_lock);
	if (n->running) {
		pthread_mutex_unlock(&n->ctl_lock);
		return 0;
	}
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		rc = pair_start(pr);
		if (rc) {
			for (struct net_pair *q = local_first(n); q;
			     q = local_next(n, q))
				pair_stop(q, false);
			pthread_mutex_unlock(&n->ctl_lock);
			return rc;
		}
	}
	n->running = true;
	for (unsigned int p = 0; p < n->active && !rc && !n->quiesced; p++)
		if (n->pair[p].remote)
			rc = remote_start(n, &n->pair[p], why, sizeof(why));
	pthread_mutex_unlock(&n->ctl_lock);
	if (rc)
		pr_err("%s: %s", n->name, why);
	return rc;
}

static void net_reset(struct virtio_device *vd)
{
	net_stop(to_net(vd));
}

/* ---- migration ---- */

static void net_quiesce(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);

	/* No control command is running once we hold ctl_lock. */
	pthread_mutex_lock(&n->ctl_lock);
	n->quiesced = true;
	for (unsigned int p = 0; p < n->npairs; p++)
		if (n->pair[p].remote)
			remote_stop(n, &n->pair[p]);
	pthread_mutex_unlock(&n->ctl_lock);
	/* No TX pass is running once we hold tx_lock; wait for the
	 * interrupt of the last one. */
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		tx_quiesce(pr);
		net_rx_pause(pr);
	}
}

static void net_resume(struct virtio_device *vd)
{
	struct virtio_net *n = to_net(vd);
	char why[160];
	int rc = 0;

	pthread_mutex_lock(&n->ctl_lock);
	n->quiesced = false;
	for (unsigned int p = 0; p < n->active && n->running && !rc; p++)
		if (n->pair[p].remote)
			rc = remote_start(n, &n->pair[p], why, sizeof(why));
	pthread_mutex_unlock(&n->ctl_lock);
	if (rc)
		net_set_broken(n, why);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		pthread_mutex_lock(&pr->tx_lock);
		pr->quiesced = false;
		pthread_mutex_unlock(&pr->tx_lock);
		net_rx_unpause(pr); /* it pops afresh: sees new buffers */
		net_tx(pr);
	}
	net_ctrl(n);
}

static bool net_has_remote(const struct virtio_net *n)
{
	for (unsigned int p = 0; p < n->npairs; p++)
		if (n->pair[p].remote)
			return true;
	return false;
}

/*
 * Move the frames waiting in @pr's tap into its backlog (the source's, in
 * case the migration fails and the VM goes on here), up to its limits and
 * @budget bytes. At most one frame more than fits is read (and dropped),
 * so a host that keeps sending cannot keep us here.
 */
static void net_drain_tap(struct net_pair *pr, size_t *budget)
{
	if (pr->tap_fd < 0 || pair_gone(pr))
		return;
	while (pr->bl_count < NET_BACKLOG_FRAMES &&
	       pr->bl_bytes < NET_BACKLOG_BYTES && *budget) {
		ssize_t r = read(pr->tap_fd, pr->rx_spare, NET_RX_SPARE);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			if (errno != EAGAIN)
				pr_warn("%s: read from %s: %s", pr->n->name,
					pr->tap_name, strerror(errno));
			return;
		}
		if (r < NET_FRAME_MIN || !backlog_fits(pr, r) ||
		    (size_t)r > *budget || backlog_add(pr, pr->rx_spare, r)) {
			count(&pr->stats.rx_dropped, 1);
			return;
		}
		*budget -= (size_t)r;
	}
}

/* The frames of @pr's backlog as u32 (LE) length and bytes, at @buf. */
static size_t put_backlog(const struct net_pair *pr, uint8_t *buf)
{
	size_t off = 0;

	for (unsigned int i = 0; i < pr->bl_count; i++) {
		const struct net_frame *f = backlog_at(pr, i);
		uint32_t len = htole32(f->len);

		memcpy(buf + off, &len, 4);
		memcpy(buf + off + 4, f->data, f->len);
		off += 4 + f->len;
	}
	return off;
}

static size_t backlog_state_len(const struct net_pair *pr)
{
	size_t len = 0;

	for (unsigned int i = 0; i < pr->bl_count; i++)
		len += 4 + backlog_at(pr, i)->len;
	return len;
}

/*
 * One pair: MAC (6 bytes), then each frame for the guest as u32 (LE)
 * length and the bytes as the tap gave them (header included).
 * N > 1 pairs: MAC, u8 version (2), u8 N, u8 active pairs, u8 0, then for
 * each pair a u32 (LE) frame count and its frames as above.
 */
static long net_save(struct virtio_device *vd, uint8_t *buf, size_t cap)
{
	struct virtio_net *n = to_net(vd);
	size_t need, off, budget = SIZE_MAX;

	if (net_has_remote(n))
		return -EOPNOTSUPP; /* pairs served elsewhere */
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		if (!net_rx_idle(pr))
			return -EBUSY;
	if (n->npairs == 1) {
		struct net_pair *pr = &n->pair[0];

		net_drain_tap(pr, &budget);
		need = NET_MAC_LEN + backlog_state_len(pr);
		if (need > cap)
			return -ENOSPC;
		memcpy(buf, n->mac, NET_MAC_LEN);
		return (long)(NET_MAC_LEN + put_backlog(pr, buf + NET_MAC_LEN));
	}
	/* All the backlogs together stay within one backlog's bytes. */
	budget = NET_BACKLOG_BYTES;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		budget -= pr->bl_bytes < budget ? pr->bl_bytes : budget;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		net_drain_tap(pr, &budget);
	need = NET_STATE_V2_HDR;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		need += 4 + backlog_state_len(pr);
	if (need > cap)
		return -ENOSPC;
	memcpy(buf, n->mac, NET_MAC_LEN);
	buf[NET_MAC_LEN] = NET_STATE_V2;
	buf[NET_MAC_LEN + 1] = (uint8_t)n->npairs;
	buf[NET_MAC_LEN + 2] = (uint8_t)n->active;
	buf[NET_MAC_LEN + 3] = 0;
	off = NET_STATE_V2_HDR;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		uint32_t cnt = htole32(pr->bl_count);

		memcpy(buf + off, &cnt, 4);
		off += 4;
		off += put_backlog(pr, buf + off);
	}
	return (long)off;
}

static int check_mac(struct virtio_net *n, const uint8_t *buf, char *why,
		     size_t why_len)
{
	static const uint8_t zero[NET_MAC_LEN];

	if ((buf[0] & 1) || !memcmp(buf, zero, NET_MAC_LEN)) {
		snprintf(why, why_len,
			 "%s: MAC address %02x:%02x:%02x:%02x:%02x:%02x is "
			 "not a unicast address",
			 n->name, buf[0], buf[1], buf[2], buf[3], buf[4],
			 buf[5]);
		return -EINVAL;
	}
	return 0;
}

/*
 * Check @max frames (UINT32_MAX: up to the end) at *off: each a u32 (LE)
 * length of NET_FRAME_MIN..NET_FRAME_MAX bytes and the bytes. *off moves
 * past them; *nframes says how many there were.
 */
static int check_frames(struct virtio_net *n, const uint8_t *buf, size_t len,
			size_t *off, uint32_t max, uint32_t *nframes, char *why,
			size_t why_len)
{
	uint32_t i = 0;

	for (; *off < len && i < max; i++) {
		uint32_t flen;

		if (len - *off < 4) {
			snprintf(why, why_len, "%s: frame %u: length cut short",
				 n->name, i);
			return -EINVAL;
		}
		memcpy(&flen, buf + *off, 4);
		flen = le32toh(flen);
		*off += 4;
		if (flen < NET_FRAME_MIN || flen > NET_FRAME_MAX) {
			snprintf(why, why_len,
				 "%s: frame %u of %u bytes (%d to %d can be)",
				 n->name, i, flen, NET_FRAME_MIN,
				 NET_FRAME_MAX);
			return -EINVAL;
		}
		if (flen > len - *off) {
			snprintf(why, why_len,
				 "%s: frame %u of %u bytes, only %zu left",
				 n->name, i, flen, len - *off);
			return -EINVAL;
		}
		*off += flen;
	}
	if (max != UINT32_MAX && i < max) {
		snprintf(why, why_len, "%s: %u frames of %u", n->name, i, max);
		return -EINVAL;
	}
	*nframes = i;
	return 0;
}

/*
 * Check what net_save wrote (it comes from the network). @counts: each
 * pair's frame count (N > 1), *active the active pairs.
 */
static int net_check_state(struct virtio_net *n, const uint8_t *buf, size_t len,
			   uint32_t *counts, unsigned int *active, char *why,
			   size_t why_len)
{
	size_t off;
	int rc;

	if (len < NET_MAC_LEN) {
		snprintf(why, why_len,
			 "%s: %zu bytes of device state, expected at least %d",
			 n->name, len, NET_MAC_LEN);
		return -EINVAL;
	}
	rc = check_mac(n, buf, why, why_len);
	if (rc)
		return rc;
	off = NET_MAC_LEN;
	if (n->npairs == 1) {
		*active = 1;
		return check_frames(n, buf, len, &off, UINT32_MAX, &counts[0],
				    why, why_len);
	}
	if (len < NET_STATE_V2_HDR || buf[NET_MAC_LEN] != NET_STATE_V2 ||
	    buf[NET_MAC_LEN + 3] != 0) {
		snprintf(why, why_len,
			 "%s: not a multiqueue device state (version %d)",
			 n->name, len > NET_MAC_LEN ? buf[NET_MAC_LEN] : -1);
		return -EINVAL;
	}
	if (buf[NET_MAC_LEN + 1] != n->npairs) {
		snprintf(why, why_len,
			 "%s: state of %u queue pairs, this device has %u",
			 n->name, buf[NET_MAC_LEN + 1], n->npairs);
		return -EINVAL;
	}
	*active = buf[NET_MAC_LEN + 2];
	if (*active < 1 || *active > n->npairs) {
		snprintf(why, why_len, "%s: %u active queue pairs of %u",
			 n->name, *active, n->npairs);
		return -EINVAL;
	}
	off = NET_STATE_V2_HDR;
	for (unsigned int p = 0; p < n->npairs; p++) {
		uint32_t cnt;

		if (len - off < 4) {
			snprintf(why, why_len,
				 "%s: queue pair %u: frame count cut short",
				 n->name, p);
			return -EINVAL;
		}
		memcpy(&cnt, buf + off, 4);
		cnt = le32toh(cnt);
		off += 4;
		if (cnt == UINT32_MAX)
			cnt--; /* still far more than len allows */
		rc = check_frames(n, buf, len, &off, cnt, &counts[p], why,
				  why_len);
		if (rc)
			return rc;
	}
	if (off != len) {
		snprintf(why, why_len, "%s: %zu bytes after the last pair",
			 n->name, len - off);
		return -EINVAL;
	}
	return 0;
}

/* Take @cnt frames at *off into @pr's backlog (checked already). */
static int load_frames(struct net_pair *pr, const uint8_t *buf, size_t *off,
		       uint32_t cnt)
{
	backlog_clear(pr);
	for (uint32_t i = 0; i < cnt; i++) {
		uint32_t flen;

		memcpy(&flen, buf + *off, 4);
		flen = le32toh(flen);
		*off += 4;
		if (!backlog_fits(pr, flen)) {
			count(&pr->stats.rx_dropped, 1);
		} else if (backlog_add(pr, buf + *off, flen)) {
			backlog_clear(pr);
			return -ENOMEM;
		}
		*off += flen;
	}
	return 0;
}

/*
 * Take the MAC (the guest knows it already; this side may have been
 * started without mac=), the frames for the guest and (N > 1) the active
 * pairs. The frame bytes themselves are the guest's business (a source
 * could write anything into guest RAM anyway); only their sizes matter to
 * us. Frames beyond the backlogs' limits are dropped and counted.
 */
static int net_load(struct virtio_device *vd, const uint8_t *buf, size_t len,
		    char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);
	uint32_t counts[VIRTIO_NET_MAX_PAIRS] = {0};
	unsigned int active = 1;
	size_t off;
	int rc;

	if (net_has_remote(n)) {
		snprintf(why, why_len,
			 "%s: queue pairs served by other nodes do not "
			 "migrate",
			 n->name);
		return -EOPNOTSUPP;
	}
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		if (!net_rx_idle(pr)) {
			snprintf(why, why_len,
				 "%s: device state for a running device",
				 n->name);
			return -EBUSY;
		}
	}
	rc = net_check_state(n, buf, len, counts, &active, why, why_len);
	if (rc)
		return rc;
	off = n->npairs == 1 ? NET_MAC_LEN : NET_STATE_V2_HDR;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		if (n->npairs > 1)
			off += 4;
		if (load_frames(pr, buf, &off, counts[pr->idx])) {
			for (struct net_pair *q = local_first(n); q;
			     q = local_next(n, q))
				backlog_clear(q);
			snprintf(why, why_len, "%s: out of memory", n->name);
			return -ENOMEM;
		}
	}
	memcpy(n->mac, buf, NET_MAC_LEN);
	if (n->npairs > 1) {
		pthread_mutex_lock(&n->ctl_lock);
		net_set_active(n, active, NULL, 0); /* no remote pairs */
		pthread_mutex_unlock(&n->ctl_lock);
	}
	return 0;
}

/* ---- taps ---- */

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
 * header and no offloads, as one of its queues with @mq. *fd_out and
 * @tap_name (the name it got) only on success.
 */
static int net_open_tap(const char *name, bool mq, int *fd_out,
			char tap_name[IFNAMSIZ], struct err *e)
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
	if (mq)
		ifr.ifr_flags |= IFF_MULTI_QUEUE;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s",
		 name ? name : "dvmmtap%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		rc = err_set(e, -errno, "cannot attach to tap %s%s: %s",
			     name ? name : "dvmmtap%d",
			     mq ? " as a multiqueue tap" : "", strerror(errno));
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

/* Taps opened for the local pairs, not installed yet. */
struct tap_set {
	int fd[VIRTIO_NET_MAX_PAIRS];
	char name[VIRTIO_NET_MAX_PAIRS][IFNAMSIZ];
	int ifindex[VIRTIO_NET_MAX_PAIRS];
	bool up[VIRTIO_NET_MAX_PAIRS];
};

static void tap_set_close(struct tap_set *t)
{
	for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++) {
		if (t->fd[p] >= 0)
			close(t->fd[p]);
		t->fd[p] = -1;
	}
}

/*
 * Open a tap for every local pair that has none, the first of a shared
 * tap first (making a tap of dvmm's own and bringing it up), the others
 * attaching to the name it got; then take each one's index and state
 * (the link thread already listens, so no change after this is missed).
 */
static int net_open_taps(struct virtio_net *n, struct tap_set *t, struct err *e)
{
	int rc = 0;

	for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++)
		t->fd[p] = -1;
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		unsigned int p = pr->idx;
		const char *name;

		if (pr->tap_fd >= 0)
			continue;
		if (p != pr->leader)
			name = n->pair[pr->leader].tap_fd >= 0 ?
				       n->pair[pr->leader].tap_name :
				       t->name[pr->leader];
		else
			name = pr->own ? NULL : pr->want_name;
		rc = net_open_tap(name, pr->mq, &t->fd[p], t->name[p], e);
		if (rc && n->server && pr->mq && rc == -EINVAL) {
			/* A persistent tap made without multi_queue. */
			pr->mq = false;
			rc = net_open_tap(name, false, &t->fd[p], t->name[p],
					  e);
		}
		if (!rc && p == pr->leader && pr->own)
			rc = tap_set_up(t->name[p], e);
		if (!rc)
			rc = tap_query(t->name[p], &t->ifindex[p], &t->up[p],
				       e);
		if (rc)
			break;
	}
	if (rc)
		tap_set_close(t);
	return rc;
}

/* Install what net_open_taps opened (RX threads parked or not running). */
static void net_install_taps(struct virtio_net *n, struct tap_set *t)
{
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		unsigned int p = pr->idx;

		if (t->fd[p] < 0)
			continue;
		pthread_mutex_lock(&pr->tx_lock);
		pthread_mutex_lock(&n->link_lock);
		pr->tap_fd = t->fd[p];
		memcpy(pr->tap_name, t->name[p], IFNAMSIZ);
		pr->ifindex = t->ifindex[p];
		pr->link_up = t->up[p];
		__atomic_store_n(&pr->gone, false, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&n->link_lock);
		pthread_mutex_unlock(&pr->tx_lock);
		pr->detached = false;
		t->fd[p] = -1;
	}
}

/* Close the taps (only with the device quiesced or not started). */
static int net_release(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);

	pthread_mutex_lock(&n->ctl_lock);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		if (pr->rx_started && !pr->quiesced) {
			pthread_mutex_unlock(&n->ctl_lock);
			snprintf(why, why_len, "%s: release while running",
				 n->name);
			return -EBUSY;
		}
	}
	/* Our own tap vanishes now: that is no link change. */
	pthread_mutex_lock(&n->link_lock);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		pr->ifindex = 0;
	pthread_mutex_unlock(&n->link_lock);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		int fd;

		pthread_mutex_lock(&pr->tx_lock);
		fd = pr->tap_fd;
		pr->tap_fd = -1;
		pthread_mutex_unlock(&pr->tx_lock);
		pr->detached = false;
		if (fd >= 0)
			close(fd);
	}
	pthread_mutex_unlock(&n->ctl_lock);
	return 0;
}

/* Attach to the taps again (or to new ones of our own). */
static int net_acquire(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_net *n = to_net(vd);
	struct tap_set t;
	struct err e = {0};
	bool any = false;
	int rc;

	pthread_mutex_lock(&n->ctl_lock);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		any |= pr->tap_fd < 0;
	if (!any) {
		pthread_mutex_unlock(&n->ctl_lock);
		return 0;
	}
	rc = net_open_taps(n, &t, &e);
	if (rc) {
		pthread_mutex_unlock(&n->ctl_lock);
		snprintf(why, why_len, "%s: %s", n->name, e.msg);
		return rc;
	}
	/* Running while released (activated first): park RX meanwhile. */
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		if (pr->rx_started && !pr->quiesced)
			net_rx_pause(pr);
	net_install_taps(n, &t);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		if (pr->rx_started && !pr->quiesced)
			net_rx_unpause(pr);
		pair_queue_set(pr, pr->idx < n->active);
	}
	pthread_mutex_unlock(&n->ctl_lock);
	net_link_update(n, true);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		net_tx(pr); /* frames queued while released */
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

static int pair_init(struct virtio_net *n, unsigned int p)
{
	struct net_pair *pr = &n->pair[p];
	int rc;

	pr->n = n;
	pr->idx = p;
	pr->rxq = 2 * p;
	pr->txq = 2 * p + 1;
	pr->leader = p;
	pr->tap_fd = pr->wake_fd = pr->ctl_fd = -1;
	pr->link_up = true;
	pr->rx_active = p == 0;
	pr->rx_spare = malloc(NET_RX_SPARE);
	if (!pr->rx_spare)
		return -ENOMEM;
	pr->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pr->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pr->wake_fd < 0 || pr->ctl_fd < 0)
		return -errno;
	rc = -pthread_mutex_init(&pr->tx_lock, NULL);
	if (rc)
		return rc;
	rc = -pthread_cond_init(&pr->tx_idle, NULL);
	if (rc)
		goto tx_cond;
	rc = -pthread_mutex_init(&pr->rx_lock, NULL);
	if (rc)
		goto rx_lock;
	rc = -pthread_cond_init(&pr->rx_cond, NULL);
	if (rc)
		goto rx_cond;
	pr->inited = true;
	return 0;

rx_cond:
	pthread_mutex_destroy(&pr->rx_lock);
rx_lock:
	pthread_cond_destroy(&pr->tx_idle);
tx_cond:
	pthread_mutex_destroy(&pr->tx_lock);
	return rc;
}

static void pair_free(struct net_pair *pr)
{
	backlog_clear(pr);
	if (pr->tap_fd >= 0)
		close(pr->tap_fd);
	if (pr->wake_fd >= 0)
		close(pr->wake_fd);
	if (pr->ctl_fd >= 0)
		close(pr->ctl_fd);
	if (pr->inited) {
		pthread_cond_destroy(&pr->rx_cond);
		pthread_mutex_destroy(&pr->rx_lock);
		pthread_cond_destroy(&pr->tx_idle);
		pthread_mutex_destroy(&pr->tx_lock);
	}
	free(pr->rx_spare);
}

/* Everything but the threads (stopped already) and the taps' set-up. */
static void net_free(struct virtio_net *n)
{
	if (n->link_started) {
		net_signal(n, n->link_stop_fd);
		pthread_join(n->link_thread, NULL);
	}
	if (n->vd_inited)
		virtio_device_destroy(&n->vd);
	for (unsigned int p = 0; n->pair && p < n->npairs; p++)
		pair_free(&n->pair[p]);
	if (n->nl_fd >= 0)
		close(n->nl_fd);
	if (n->link_stop_fd >= 0)
		close(n->link_stop_fd);
	if (n->locks_ok) {
		pthread_mutex_destroy(&n->link_lock);
		pthread_mutex_destroy(&n->report_lock);
		pthread_mutex_destroy(&n->ctl_lock);
	}
	free(n->pair);
	free(n);
}

/* An rtnetlink socket for link changes; -1 (and a warning) if none. */
static int net_link_socket(const char *who)
{
	struct sockaddr_nl sa;
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
		       NETLINK_ROUTE);

	if (s < 0) {
		pr_warn("%s: no rtnetlink socket (%s): link changes go "
			"unnoticed",
			who, strerror(errno));
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	sa.nl_groups = RTMGRP_LINK;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		pr_warn("%s: cannot bind an rtnetlink socket (%s): link "
			"changes go unnoticed",
			who, strerror(errno));
		close(s);
		return -1;
	}
	return s;
}

/*
 * The common part of a device and a server: @npairs pairs, queues for
 * them (@nqueues), locks, eventfds, the device, the rtnetlink socket.
 */
static int net_alloc(struct virtio_net **out, const struct guest_mem *mem,
		     unsigned int npairs, uint16_t nqueues, struct err *e)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	int rc;

	*out = NULL;
	if (!n)
		return err_set(e, -ENOMEM, "virtio-net: out of memory");
	n->nl_fd = n->link_stop_fd = -1;
	n->npairs = npairs;
	n->active = 1;
	n->link_up = true;
	snprintf(n->name, sizeof(n->name), "virtio-net");
	n->pair = calloc(npairs, sizeof(*n->pair));
	if (!n->pair) {
		free(n);
		return err_set(e, -ENOMEM, "virtio-net: out of memory");
	}
	for (unsigned int p = 0; p < npairs; p++) {
		rc = pair_init(n, p);
		if (rc) {
			err_set(e, rc, "virtio-net: %s", strerror(-rc));
			goto fail;
		}
	}
	rc = -pthread_mutex_init(&n->ctl_lock, NULL);
	if (!rc) {
		rc = -pthread_mutex_init(&n->report_lock, NULL);
		if (rc)
			pthread_mutex_destroy(&n->ctl_lock);
	}
	if (!rc) {
		rc = -pthread_mutex_init(&n->link_lock, NULL);
		if (rc) {
			pthread_mutex_destroy(&n->report_lock);
			pthread_mutex_destroy(&n->ctl_lock);
		}
	}
	if (rc) {
		err_set(e, rc, "virtio-net: mutex: %s", strerror(-rc));
		goto fail;
	}
	n->locks_ok = true;
	n->link_stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->link_stop_fd < 0) {
		rc = err_set(e, -errno, "virtio-net: eventfd: %s",
			     strerror(errno));
		goto fail;
	}
	rc = virtio_device_init(
		&n->vd, n->name, VIRTIO_ID_NET, nqueues, NET_QUEUE_SIZE,
		sizeof(struct virtio_net_config), &net_ops, n, mem);
	if (rc) {
		err_set(e, rc, "virtio-net: device init failed: %s",
			strerror(-rc));
		goto fail;
	}
	n->vd_inited = true;
	n->nl_fd = net_link_socket("virtio-net");
	*out = n;
	return 0;

fail:
	net_free(n);
	return rc;
}

/* The taps are in: name the device, take the link, start watching. */
static int net_finish(struct virtio_net *n, struct tap_set *t, struct err *e)
{
	const struct net_pair *first = NULL;
	int rc;

	net_install_taps(n, t);
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr)) {
		if (!first)
			first = pr;
		if (!n->server)
			pair_queue_set(pr, pr->idx < n->active);
	}
	snprintf(n->name, sizeof(n->name), "virtio-net:%s",
		 first && first->tap_name[0] ? first->tap_name : "dvmmtap");
	pthread_mutex_lock(&n->link_lock);
	n->link_up = net_link_compute(n);
	pthread_mutex_unlock(&n->link_lock);
	if (n->nl_fd < 0)
		return 0;
	rc = thread_start_nosignals(&n->link_thread, net_link_thread, n);
	if (rc)
		return err_set(e, rc, "%s: cannot start the link thread: %s",
			       n->name, strerror(-rc));
	n->link_started = true;
	return 0;
}

int virtio_net_create_opts(struct virtio_net **out, const struct guest_mem *mem,
			   const struct virtio_net_opts *o, struct err *e)
{
	struct virtio_net *n;
	struct tap_set t;
	bool remote = false;
	int rc;

	*out = NULL;
	if (!o || o->npairs < 1 || o->npairs > VIRTIO_NET_MAX_PAIRS)
		return err_set(e, -EINVAL,
			       "virtio-net: 1 to %d queue pairs, not %u",
			       VIRTIO_NET_MAX_PAIRS, o ? o->npairs : 0);
	if (o->flags & ~VIRTIO_CREATE_RELEASED)
		return err_set(e, -EINVAL, "virtio-net: unknown flags %#x",
			       o->flags);
	if (o->pair[0].remote)
		return err_set(e, -EINVAL,
			       "virtio-net: queue pair 0 cannot be served "
			       "by another node");
	for (unsigned int p = 0; p < o->npairs; p++) {
		remote |= o->pair[p].remote;
		if (!o->pair[p].remote) {
			rc = net_check_name(o->pair[p].tap, e);
			if (rc)
				return rc;
		}
	}
	if (remote && (!o->remote || !o->remote->start || !o->remote->stop ||
		       !o->remote->kick))
		return err_set(e, -EINVAL,
			       "virtio-net: remote queue pairs without "
			       "remote operations");
	rc = net_alloc(&n, mem, o->npairs,
		       o->npairs == 1 ? 2 : 2 * o->npairs + 1, e);
	if (rc)
		return rc;
	if (remote)
		n->rops = *o->remote;
	for (unsigned int p = 0; p < o->npairs; p++) {
		struct net_pair *pr = &n->pair[p];

		pr->remote = o->pair[p].remote;
		if (pr->remote) {
			free(pr->rx_spare); /* never read into here */
			pr->rx_spare = NULL;
			continue;
		}
		pr->own = !o->pair[p].tap;
		if (!pr->own)
			snprintf(pr->want_name, sizeof(pr->want_name), "%s",
				 o->pair[p].tap);
		/* The first local pair on the same tap leads. */
		for (unsigned int q = 0; q < p; q++) {
			struct net_pair *l = &n->pair[q];

			if (!l->remote && l->own == pr->own &&
			    !strcmp(l->want_name, pr->want_name)) {
				pr->leader = q;
				pr->mq = l->mq = true;
				break;
			}
		}
	}
	rc = net_set_mac(n, o->mac, e);
	if (rc)
		goto fail;
	for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++)
		t.fd[p] = -1;
	if (!(o->flags & VIRTIO_CREATE_RELEASED)) {
		rc = net_open_taps(n, &t, e);
		if (rc)
			goto fail;
	} else {
		for (struct net_pair *pr = local_first(n); pr;
		     pr = local_next(n, pr))
			memcpy(pr->tap_name, pr->want_name, IFNAMSIZ);
	}
	rc = net_finish(n, &t, e);
	if (rc)
		goto fail;
	*out = n;
	return 0;

fail:
	net_free(n);
	return rc;
}

int virtio_net_create(struct virtio_net **out, const struct guest_mem *mem,
		      const char *tap_name, const uint8_t mac[6],
		      unsigned int flags, struct err *e)
{
	struct virtio_net_opts o = {.npairs = 1, .mac = mac, .flags = flags};

	o.pair[0].tap = tap_name;
	return virtio_net_create_opts(out, mem, &o, e);
}

static const struct net_pair *first_local(const struct virtio_net *n)
{
	for (unsigned int p = 0; p < n->npairs; p++)
		if (!n->pair[p].remote)
			return &n->pair[p];
	return NULL;
}

const char *virtio_net_tap_name(const struct virtio_net *n)
{
	const struct net_pair *pr = first_local(n);

	return pr ? pr->tap_name : "";
}

const char *virtio_net_pair_tap_name(const struct virtio_net *n,
				     unsigned int pair)
{
	if (pair >= n->npairs || n->pair[pair].remote)
		return "";
	return n->pair[pair].tap_name;
}

struct virtio_device *virtio_net_device(struct virtio_net *n)
{
	return &n->vd;
}

static void stats_add(struct virtio_net_stats *s, struct virtio_net_stats *c)
{
	s->rx_packets += __atomic_load_n(&c->rx_packets, __ATOMIC_RELAXED);
	s->rx_bytes += __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);
	s->rx_dropped += __atomic_load_n(&c->rx_dropped, __ATOMIC_RELAXED);
	s->tx_packets += __atomic_load_n(&c->tx_packets, __ATOMIC_RELAXED);
	s->tx_bytes += __atomic_load_n(&c->tx_bytes, __ATOMIC_RELAXED);
	s->tx_dropped += __atomic_load_n(&c->tx_dropped, __ATOMIC_RELAXED);
}

void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *s)
{
	memset(s, 0, sizeof(*s));
	for (struct net_pair *pr = local_first(n); pr; pr = local_next(n, pr))
		stats_add(s, &pr->stats);
}

void virtio_net_get_pair_stats(struct virtio_net *n, unsigned int pair,
			       struct virtio_net_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (pair < n->npairs && !n->pair[pair].remote)
		stats_add(s, &n->pair[pair].stats);
}

bool virtio_net_link_is_up(struct virtio_net *n)
{
	return __atomic_load_n(&n->link_up, __ATOMIC_ACQUIRE);
}

void virtio_net_remote_link(struct virtio_net *n, unsigned int pair, bool up)
{
	if (n->server || pair >= n->npairs || !n->pair[pair].remote)
		return;
	pthread_mutex_lock(&n->link_lock);
	n->pair[pair].link_up = up;
	pthread_mutex_unlock(&n->link_lock);
	net_link_update(n, true);
}

/* ---- a server of one pair ---- */

static void server_notify_queue(void *opaque, uint16_t q)
{
	struct virtio_net *n = opaque;

	n->sops.notify(n->sops.opaque, q);
}

static void server_notify_config(void *opaque)
{
	(void)opaque;
}

int virtio_net_server_create(struct virtio_net **out,
			     const struct guest_mem *mem, unsigned int npairs,
			     unsigned int pair, const char *tap,
			     const struct virtio_net_server_ops *ops,
			     struct err *e)
{
	struct virtio_net *n;
	struct net_pair *pr;
	struct tap_set t;
	int rc;

	*out = NULL;
	if (npairs < 1 || npairs > VIRTIO_NET_MAX_PAIRS || pair >= npairs)
		return err_set(e, -EINVAL,
			       "virtio-net server: queue pair %u of %u", pair,
			       npairs);
	if (!ops || !ops->notify)
		return err_set(e, -EINVAL,
			       "virtio-net server: no notify operation");
	rc = net_check_name(tap, e);
	if (rc)
		return rc;
	rc = net_alloc(&n, mem, npairs, 2 * npairs, e);
	if (rc)
		return rc;
	n->server = true;
	n->spair = pair;
	n->sops = *ops;
	n->vd.transport = (struct virtio_transport){
		.notify_queue = server_notify_queue,
		.notify_config = server_notify_config,
		.opaque = n,
	};
	for (unsigned int p = 0; p < npairs; p++) {
		n->pair[p].remote = p != pair;
		if (p != pair) {
			free(n->pair[p].rx_spare);
			n->pair[p].rx_spare = NULL;
		}
	}
	pr = &n->pair[pair];
	pr->own = !tap;
	if (tap) {
		snprintf(pr->want_name, sizeof(pr->want_name), "%s", tap);
		pr->mq = npairs > 1; /* other servers here may share it */
	}
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_active = false;
	pthread_mutex_unlock(&pr->rx_lock);
	rc = net_open_taps(n, &t, e);
	if (!rc)
		rc = net_finish(n, &t, e);
	if (rc) {
		net_free(n);
		return rc;
	}
	*out = n;
	return 0;
}

/* Stop serving (server; ctl_lock held): rings untouched on return. */
static void server_stop_locked(struct virtio_net *n)
{
	struct net_pair *pr = &n->pair[n->spair];

	if (!n->running)
		return;
	n->running = false;
	pair_stop(pr, true);
	pthread_mutex_lock(&pr->rx_lock);
	pr->rx_active = false;
	pthread_mutex_unlock(&pr->rx_lock);
	for (int i = 0; i < 2; i++) {
		struct virtqueue *vq = &n->vd.vq[2 * n->spair + i];

		pthread_mutex_lock(&vq->lock);
		vq_disable(vq);
		pthread_mutex_unlock(&vq->lock);
	}
	__atomic_store_n(&n->broken, false, __ATOMIC_RELEASE);
}

int virtio_net_server_start(struct virtio_net *n,
			    const struct virtio_net_pair_setup *s,
			    struct err *e)
{
	struct net_pair *pr;
	bool up;
	int rc = 0;

	if (!n->server)
		return err_set(e, -EINVAL, "%s: not a server", n->name);
	pr = &n->pair[n->spair];
	pthread_mutex_lock(&n->ctl_lock);
	if (n->running) {
		pthread_mutex_unlock(&n->ctl_lock);
		return err_set(e, -EBUSY, "%s: queue pair %u already served",
			       n->name, n->spair);
	}
	for (int i = 0; i < 2 && !rc; i++) {
		struct virtqueue *vq = &n->vd.vq[2 * n->spair + i];

		pthread_mutex_lock(&vq->lock);
		rc = vq_enable(vq, n->vd.mem, s->size[i], s->desc[i],
			       s->driver[i], s->device[i], s->features);
		if (rc) {
			err_set(e, rc, "%s: queue %u: %s", n->name,
				2 * n->spair + i, vq->error);
		} else {
			/* Where the last start (if any) left off. */
			uint16_t u = le16toh(__atomic_load_n(
				(uint16_t *)((uint8_t *)vq->used + 2),
				__ATOMIC_ACQUIRE));

			vq->last_avail = vq->used_idx = u;
			vq->signalled_used = u;
		}
		pthread_mutex_unlock(&vq->lock);
	}
	if (!rc) {
		pthread_mutex_lock(&n->vd.lock);
		n->vd.guest_features = s->features;
		n->vd.status = 0; /* NEEDS_RESET of an earlier start */
		pthread_mutex_unlock(&n->vd.lock);
		memcpy(n->mac, s->mac, sizeof(n->mac));
		__atomic_store_n(&n->broken, false, __ATOMIC_RELEASE);
		pthread_mutex_lock(&pr->rx_lock);
		pr->rx_active = true;
		pthread_mutex_unlock(&pr->rx_lock);
		rc = pair_start(pr);
		if (rc)
			err_set(e, rc, "%s: cannot start the RX thread: %s",
				n->name, strerror(-rc));
	}
	if (rc) {
		pthread_mutex_lock(&pr->rx_lock);
		pr->rx_active = false;
		pthread_mutex_unlock(&pr->rx_lock);
		for (int i = 0; i < 2; i++) {
			struct virtqueue *vq = &n->vd.vq[2 * n->spair + i];

			pthread_mutex_lock(&vq->lock);
			vq_disable(vq);
			pthread_mutex_unlock(&vq->lock);
		}
		pthread_mutex_unlock(&n->ctl_lock);
		return rc;
	}
	n->running = true;
	pthread_mutex_unlock(&n->ctl_lock);
	pr_debug("%s: serving queue pair %u of %02x:%02x:%02x:%02x:%02x:%02x",
		 n->name, n->spair, n->mac[0], n->mac[1], n->mac[2], n->mac[3],
		 n->mac[4], n->mac[5]);
	/* The link as it is now, then whatever the driver queued. */
	pthread_mutex_lock(&n->report_lock);
	up = virtio_net_link_is_up(n);
	if (n->sops.link)
		n->sops.link(n->sops.opaque, up);
	pthread_mutex_unlock(&n->report_lock);
	net_tx(pr);
	net_signal(n, pr->wake_fd);
	return 0;
}

void virtio_net_server_stop(struct virtio_net *n)
{
	if (!n->server)
		return;
	pthread_mutex_lock(&n->ctl_lock);
	server_stop_locked(n);
	pthread_mutex_unlock(&n->ctl_lock);
}

void virtio_net_server_kick(struct virtio_net *n, uint16_t q)
{
	if (!n->server || q / 2 != n->spair)
		return;
	net_queue_kick(&n->vd, q);
}

void virtio_net_destroy(struct virtio_net *n)
{
	if (!n)
		return;
	if (n->server)
		virtio_net_server_stop(n);
	else
		net_stop(n);
	net_free(n);
}
