/*
 * tests/unit/virtio_harness.h - what test_virtio_devices.c and
 * test_virtio_net.c share to drive virtio devices without KVM: fake guest
 * memory with a bump allocator for buffers; a fake transport that counts
 * queue and configuration interrupts, signals a condition variable and
 * can hold queue interrupts at a gate; the driver's side of split rings
 * (set up, start and reset a device, post chains, kick, wait for and read
 * used entries, every wait with a timeout); taps and test frames seen
 * from the host side. Header-only: each test is one .c file linked
 * against libdvmm.a.
 *
 * struct harness is defined here; the includer first defines
 * HARNESS_OWN_FIELDS, the members of its own (its devices, sockets, ...).
 */
#ifndef DVMM_TESTS_VIRTIO_HARNESS_H
#define DVMM_TESTS_VIRTIO_HARNESS_H

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/guest_mem.h"
#include "virtio/virtio.h"
#include "virtio/virtqueue.h"

#ifndef HARNESS_OWN_FIELDS
#error "define HARNESS_OWN_FIELDS before including virtio_harness.h"
#endif

#define MEM_SIZE (16u << 20)
#define RING_BASE 0x10000u /* queue q at RING_BASE + q * RING_STRIDE */
#define RING_STRIDE 0x10000u
#define DATA_BASE 0x100000u /* bump allocator for buffers and tables */
#define QSIZE 256
#define WAIT_MS 10000

/* virtio-net spec constants both tests use (the device keeps its own). */
#define NET_F_MAC 5
#define NET_F_STATUS 16
#define NET_HDR 12
#define TEST_ETHERTYPE 0x88b5 /* IEEE local experimental */

/* ---- the fake transport ---- */

struct fake_transport {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int queue_irqs[VIRTIO_MAX_QUEUES];
	unsigned int config_irqs;
	/* used->idx as each queue interrupt saw it (the newest). */
	struct vring_used *used[VIRTIO_MAX_QUEUES];
	uint16_t irq_used[VIRTIO_MAX_QUEUES];
	/* While closed, queue interrupts wait in notify_queue. */
	bool gate_closed;
	unsigned int gate_waiting;
};

static inline void ft_notify_queue(void *opaque, uint16_t q)
{
	struct fake_transport *ft = opaque;

	pthread_mutex_lock(&ft->lock);
	while (ft->gate_closed) {
		ft->gate_waiting++;
		pthread_cond_broadcast(&ft->cond);
		pthread_cond_wait(&ft->cond, &ft->lock);
		ft->gate_waiting--;
	}
	if (q < VIRTIO_MAX_QUEUES)
		ft->queue_irqs[q]++;
	if (q < VIRTIO_MAX_QUEUES && ft->used[q]) {
		uint16_t u =
			__atomic_load_n(&ft->used[q]->idx, __ATOMIC_ACQUIRE);

		if ((int16_t)(u - ft->irq_used[q]) > 0)
			ft->irq_used[q] = u;
	}
	pthread_cond_broadcast(&ft->cond);
	pthread_mutex_unlock(&ft->lock);
}

static inline void ft_notify_config(void *opaque)
{
	struct fake_transport *ft = opaque;

	pthread_mutex_lock(&ft->lock);
	ft->config_irqs++;
	pthread_cond_broadcast(&ft->cond);
	pthread_mutex_unlock(&ft->lock);
}

/* ---- the fake driver: split rings in guest memory ---- */

struct ring {
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t avail_idx;
	uint16_t next_desc;
	uint16_t used_seen;
};

/* What a test works with: the device under test and its driver's side. */
struct harness {
	struct guest_mem mem;
	struct fake_transport ft;
	struct virtio_device *vd;
	struct ring ring[VIRTIO_MAX_QUEUES];
	uint64_t features;
	uint64_t next_data;
	bool active;
	HARNESS_OWN_FIELDS
};

/* One descriptor of a chain: a buffer, device-writable or not. */
struct seg {
	uint64_t gpa;
	uint32_t len;
	bool w;
};

static inline void *gptr(struct harness *h, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(&h->mem, gpa, len);

	assert_non_null(p);
	return p;
}

static inline uint64_t galloc(struct harness *h, uint64_t len)
{
	uint64_t gpa = h->next_data;

	h->next_data = (gpa + len + 15) & ~15ULL;
	assert_true(h->next_data <= MEM_SIZE);
	return gpa;
}

/* A zeroed harness with its guest memory and transport (for setup). */
static inline struct harness *harness_new(void)
{
	struct harness *h = calloc(1, sizeof(*h));
	pthread_condattr_t a;

	assert_non_null(h);
	assert_int_equal(guest_mem_alloc(&h->mem, MEM_SIZE), 0);
	pthread_mutex_init(&h->ft.lock, NULL);
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&h->ft.cond, &a);
	pthread_condattr_destroy(&a);
	h->next_data = DATA_BASE;
	return h;
}

/* The end of teardown, once the devices are gone. */
static inline void harness_free(struct harness *h)
{
	guest_mem_free(&h->mem);
	pthread_cond_destroy(&h->ft.cond);
	pthread_mutex_destroy(&h->ft.lock);
	free(h);
}

/* Reset the device as a driver would (status 0), queues disabled. */
static inline void stop_device(struct harness *h)
{
	if (!h->vd || !h->active)
		return;
	h->vd->ops->reset(h->vd);
	for (int q = 0; q < h->vd->num_queues; q++) {
		pthread_mutex_lock(&h->vd->vq[q].lock);
		vq_disable(&h->vd->vq[q]);
		pthread_mutex_unlock(&h->vd->vq[q].lock);
	}
	h->vd->status = 0;
	h->active = false;
}

static inline void ring_setup(struct harness *h, int q)
{
	struct ring *r = &h->ring[q];
	uint64_t base = RING_BASE + (uint64_t)q * RING_STRIDE;

	memset(r, 0, sizeof(*r));
	r->size = QSIZE;
	r->desc_gpa = base;
	r->avail_gpa = base + 0x1000;
	r->used_gpa = base + 0x2000;
	r->desc = gptr(h, r->desc_gpa, 16 * QSIZE);
	r->avail = gptr(h, r->avail_gpa, 6 + 2 * QSIZE);
	r->used = gptr(h, r->used_gpa, 6 + 8 * QSIZE);
	memset(r->desc, 0, 16 * QSIZE);
	memset(r->avail, 0, 6 + 2 * QSIZE);
	memset(r->used, 0, 6 + 8 * QSIZE);
}

/* Attach @vd to the fake transport, negotiate @features, start it. */
static inline void start_device(struct harness *h, struct virtio_device *vd,
				uint64_t features)
{
	h->vd = vd;
	h->features = features | (1ULL << VIRTIO_F_VERSION_1);
	vd->transport.notify_queue = ft_notify_queue;
	vd->transport.notify_config = ft_notify_config;
	vd->transport.opaque = &h->ft;
	vd->guest_features = h->features;
	vd->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		     VIRTIO_STATUS_FEATURES_OK;
	for (int q = 0; q < vd->num_queues; q++) {
		struct ring *r = &h->ring[q];

		ring_setup(h, q);
		pthread_mutex_lock(&h->ft.lock);
		h->ft.used[q] = r->used;
		h->ft.irq_used[q] = 0;
		pthread_mutex_unlock(&h->ft.lock);
		pthread_mutex_lock(&vd->vq[q].lock);
		assert_int_equal(vq_enable(&vd->vq[q], &h->mem, r->size,
					   r->desc_gpa, r->avail_gpa,
					   r->used_gpa, h->features),
				 0);
		pthread_mutex_unlock(&vd->vq[q].lock);
	}
	vd->status |= VIRTIO_STATUS_DRIVER_OK;
	assert_int_equal(vd->ops->activate(vd), 0);
	h->active = true;
}

/* Reset the device, then bring it up again with the same features. */
static inline void restart_device(struct harness *h)
{
	struct virtio_device *vd = h->vd;

	stop_device(h);
	start_device(h, vd, h->features & ~(1ULL << VIRTIO_F_VERSION_1));
}

static inline void write_desc(struct vring_desc *d, const struct seg *s,
			      uint16_t next, bool more)
{
	d->addr = s->gpa;
	d->len = s->len;
	d->flags = (s->w ? VRING_DESC_F_WRITE : 0) |
		   (more ? VRING_DESC_F_NEXT : 0);
	d->next = next;
}

/*
 * Put a chain on queue @q's avail ring (not kicked), its descriptors in
 * the ring or (@indirect) in a table of their own. Returns the head.
 */
static inline uint16_t post(struct harness *h, int q, const struct seg *s,
			    int n, bool indirect)
{
	struct ring *r = &h->ring[q];
	uint16_t head = r->next_desc;

	if (indirect) {
		uint64_t t = galloc(h, 16ULL * n);
		struct vring_desc *tab = gptr(h, t, 16ULL * n);

		for (int i = 0; i < n; i++)
			write_desc(&tab[i], &s[i], i + 1, i + 1 < n);
		r->desc[head] =
			(struct vring_desc){.addr = t,
					    .len = 16 * n,
					    .flags = VRING_DESC_F_INDIRECT};
		r->next_desc = (head + 1) % r->size;
	} else {
		for (int i = 0; i < n; i++) {
			uint16_t d = (head + i) % r->size;

			write_desc(&r->desc[d], &s[i], (d + 1) % r->size,
				   i + 1 < n);
		}
		r->next_desc = (head + n) % r->size;
	}
	r->avail->ring[r->avail_idx % r->size] = head;
	r->avail_idx++;
	__atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
	return head;
}

static inline void kick(struct harness *h, int q)
{
	h->vd->ops->queue_kick(h->vd, q);
}

static inline void deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static inline bool past(const struct timespec *ts)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec ||
	       (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static inline uint16_t used_idx(struct ring *r)
{
	return __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
}

/* Wait for @n more used entries on @q. False on timeout. */
static inline bool wait_used_ms(struct harness *h, int q, uint16_t n, int ms)
{
	struct ring *r = &h->ring[q];
	uint16_t target = r->used_seen + n;
	struct timespec ts;
	bool ok = true;

	deadline_after(&ts, ms);
	pthread_mutex_lock(&h->ft.lock);
	while ((int16_t)(used_idx(r) - target) < 0) {
		if (pthread_cond_timedwait(&h->ft.cond, &h->ft.lock, &ts) ==
		    ETIMEDOUT) {
			ok = (int16_t)(used_idx(r) - target) >= 0;
			break;
		}
	}
	pthread_mutex_unlock(&h->ft.lock);
	if (ok)
		r->used_seen = target;
	return ok;
}

static inline bool wait_used(struct harness *h, int q, uint16_t n)
{
	return wait_used_ms(h, q, n, WAIT_MS);
}

static inline struct vring_used_elem used_elem(struct harness *h, int q,
					       uint16_t i)
{
	struct ring *r = &h->ring[q];

	return r->used->ring[i % r->size];
}

/* The newest used entry on @q that a wait_used took. */
static inline struct vring_used_elem last_used(struct harness *h, int q)
{
	return used_elem(h, q, h->ring[q].used_seen - 1);
}

/*
 * Wait until the counter @count (kept under h->ft.lock, and signalled on
 * h->ft.cond) is at least @n. False on timeout.
 */
static inline bool wait_count(struct harness *h, const unsigned int *count,
			      unsigned int n)
{
	struct timespec ts;
	bool ok = true;

	deadline_after(&ts, WAIT_MS);
	pthread_mutex_lock(&h->ft.lock);
	while (*count < n) {
		if (pthread_cond_timedwait(&h->ft.cond, &h->ft.lock, &ts) ==
		    ETIMEDOUT) {
			ok = *count >= n;
			break;
		}
	}
	pthread_mutex_unlock(&h->ft.lock);
	return ok;
}

/* Wait until at least @n configuration interrupts were counted. */
static inline bool wait_config_irqs(struct harness *h, unsigned int n)
{
	return wait_count(h, &h->ft.config_irqs, n);
}

static inline unsigned int config_irqs(struct harness *h)
{
	unsigned int n;

	pthread_mutex_lock(&h->ft.lock);
	n = h->ft.config_irqs;
	pthread_mutex_unlock(&h->ft.lock);
	return n;
}

/* ---- taps and test frames, from the host side ---- */

static inline bool have_tun(void)
{
	int fd = open("/dev/net/tun", O_RDWR);

	if (fd < 0) {
		print_message("no /dev/net/tun (%s): skipping\n",
			      strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

static inline void no_ipv6(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6",
		 name);
	fd = open(path, O_WRONLY);
	if (fd >= 0) {
		assert_int_equal(write(fd, "1", 1), 1);
		close(fd);
	}
}

/* Up (without IPv6: no router solicitations on our wire) or down. */
static inline void tap_set(const char *name, bool up)
{
	struct ifreq ifr;
	int s;

	no_ipv6(name);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	if (up)
		ifr.ifr_flags |= IFF_UP;
	else
		ifr.ifr_flags &= ~IFF_UP;
	assert_int_equal(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
	close(s);
}

/* An AF_PACKET socket that sees every frame on the interface @name. */
static inline int packet_socket(const char *name)
{
	struct sockaddr_ll sll;
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));

	assert_true(s >= 0);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex(name);
	assert_true(sll.sll_ifindex > 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sll, sizeof(sll)), 0);
	return s;
}

static const uint8_t test_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t host_mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* A frame of TEST_ETHERTYPE carrying @text, zero-padded to @len. */
static inline size_t make_frame(uint8_t *f, const uint8_t dst[6],
				const uint8_t src[6], const char *text,
				size_t len)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	memset(f + 14, 0, len - 14);
	memcpy(f + 14, text, strlen(text));
	return len;
}

/*
 * Read frames from the packet socket @s until our test frame carrying
 * @text shows up. Its length, or -1 on timeout.
 */
static inline ssize_t pkt_recv_test_frame(int s, uint8_t *buf, size_t cap,
					  const char *text)
{
	struct timespec ts;

	deadline_after(&ts, WAIT_MS);
	while (!past(&ts)) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recvfrom(s, buf, cap, 0, (struct sockaddr *)&from, &fl);
		if (n < 14 || from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if (buf[12] == (TEST_ETHERTYPE >> 8) &&
		    buf[13] == (TEST_ETHERTYPE & 0xff) &&
		    !memcmp(buf + 14, text, strlen(text)))
			return n;
	}
	return -1;
}

/*
 * A frame as virtio-net's saved state holds it, at *@off in @buf: its
 * length, then @len bytes (a zero header and the rest @fill).
 */
static inline void put_frame(uint8_t *buf, size_t *off, uint32_t len,
			     uint8_t fill)
{
	uint32_t le = htole32(len);

	memcpy(buf + *off, &le, 4);
	memset(buf + *off + 4, 0, NET_HDR);
	memset(buf + *off + 4 + NET_HDR, fill, len - NET_HDR);
	*off += 4 + len;
}

/* Such a frame delivered: the receive buffer @buf holds @len of @fill. */
static inline void check_rx_fill(struct harness *h, uint64_t buf, uint32_t len,
				 uint8_t fill)
{
	uint8_t expect[1514];

	assert_true(len <= sizeof(expect));
	memset(expect, fill, len);
	assert_memory_equal(gptr(h, buf + NET_HDR, len), expect, len);
}

#endif
