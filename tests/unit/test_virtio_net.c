/*
 * tests/unit/test_virtio_net.c - virtio-net's queue pairs, control queue,
 * link status, remote pairs and pair servers, driven without KVM with
 * test_virtio_devices.c's harness (virtio_harness.h): the test plays the
 * driver with split rings in guest memory and the transport with a fake
 * that counts queue and configuration interrupts and signals a condition
 * variable; every wait has a timeout, none is a fixed sleep.
 *
 * The tests need /dev/net/tun and CAP_NET_ADMIN (real taps, made
 * multiqueue where the device shares one) and are skipped without them;
 * they watch the taps from the host side with AF_PACKET sockets and change
 * them with SIOCSIFFLAGS and rtnetlink.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
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
#include "util/err.h"
#include "util/log.h"
#include "virtio/devices.h"
#include "virtio/virtio.h"
#include "virtio/virtqueue.h"

/* Spec constants the tests use (the device keeps its own private). */
#define NET_F_CTRL_VQ 17
#define NET_F_MQ 22
#define CTRL_MQ 4
#define CTRL_MQ_VQ_PAIRS_SET 0
#define NET_OK 0
#define NET_ERR 1
#define BASE_FEATURES ((1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS))
#define MQ_FEATURES \
	(BASE_FEATURES | (1ULL << NET_F_CTRL_VQ) | (1ULL << NET_F_MQ))

/* What the fake remote ops and server ops saw. */
struct fake_remote {
	unsigned int starts, stops, kicks;
	unsigned int start_pair[16], stop_pair[16];
	struct virtio_net_pair_setup setup[VIRTIO_NET_MAX_PAIRS];
	uint16_t kick_q[16];
	int start_rc;
	/* server side */
	unsigned int links;
	bool link_up;
};

/* struct harness's members of this test's own. */
#define HARNESS_OWN_FIELDS                                     \
	struct virtio_net *net;                                \
	struct fake_remote fr;                                 \
	int pkt;	       /* AF_PACKET socket on a tap */ \
	char deltap[IFNAMSIZ]; /* a named tap to delete at the end */

#include "virtio_harness.h"

static int setup(void **state)
{
	struct harness *h = harness_new();

	h->pkt = -1;
	*state = h;
	return 0;
}

static void link_delete(const char *name);

static int teardown(void **state)
{
	struct harness *h = *state;

	stop_device(h);
	virtio_net_destroy(h->net);
	if (h->pkt >= 0)
		close(h->pkt);
	if (h->deltap[0] && if_nametoindex(h->deltap))
		link_delete(h->deltap);
	harness_free(h);
	return 0;
}

/* VIRTIO_NET_S_LINK_UP as the driver reads it. */
static uint16_t cfg_status(struct harness *h)
{
	uint8_t cfg[8];
	uint16_t s;

	h->vd->ops->config_read(h->vd, 0, cfg, sizeof(cfg));
	memcpy(&s, cfg + 6, 2);
	return le16toh(s);
}

static uint8_t cfg_generation(struct harness *h)
{
	return __atomic_load_n(&h->vd->config_generation, __ATOMIC_ACQUIRE);
}

/* ---- taps ---- */

/* Create a device, or skip the test if this host cannot make taps. */
static void create_or_skip(struct harness *h, const struct virtio_net_opts *o)
{
	struct err e = {0};
	int rc;

	if (!have_tun())
		skip();
	rc = virtio_net_create_opts(&h->net, &h->mem, o, &e);
	if (rc == -EPERM || rc == -EACCES || rc == -ENODEV || rc == -EBADFD) {
		print_message("cannot create a tap (%s): skipping\n", e.msg);
		skip();
	}
	if (rc)
		fail_msg("virtio_net_create_opts: %s", e.msg);
	h->vd = virtio_net_device(h->net);
}

static short if_flags(const char *name)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	assert_true(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	close(s);
	return ifr.ifr_flags;
}

/* A tap name of this process's own (tests of several runs may overlap). */
static void tap_name(char name[IFNAMSIZ], const char *what)
{
	snprintf(name, IFNAMSIZ, "dvt%s%u", what, (unsigned int)getpid());
}

/* `ip link del NAME`. */
static void link_delete(const char *name)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req;
	struct {
		struct nlmsghdr h;
		struct nlmsgerr e;
	} ack;
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

	assert_true(s >= 0);
	memset(&req, 0, sizeof(req));
	req.h.nlmsg_len = sizeof(req);
	req.h.nlmsg_type = RTM_DELLINK;
	req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	req.h.nlmsg_seq = 1;
	req.i.ifi_family = AF_UNSPEC;
	req.i.ifi_index = (int)if_nametoindex(name);
	assert_true(req.i.ifi_index > 0);
	assert_int_equal(send(s, &req, sizeof(req), 0), sizeof(req));
	assert_true(recv(s, &ack, sizeof(ack), 0) >= (ssize_t)sizeof(ack));
	assert_int_equal(ack.h.nlmsg_type, NLMSG_ERROR);
	assert_int_equal(ack.e.error, 0);
	close(s);
}

#define UDP_FRAME_LEN (14 + 20 + 8 + 16)
#define UDP_DPORT 7777

/* An IPv4/UDP frame of flow @i (its own source port): the tap spreads
 * flows over its queues by their hash. */
static void make_udp_frame(uint8_t *f, unsigned int i)
{
	uint8_t *ip = f + 14, *udp = ip + 20;
	uint32_t sum = 0;

	memset(f, 0, UDP_FRAME_LEN);
	memcpy(f, test_mac, 6);
	memcpy(f + 6, host_mac, 6);
	f[12] = 0x08;
	ip[0] = 0x45;
	ip[2] = (UDP_FRAME_LEN - 14) >> 8;
	ip[3] = (UDP_FRAME_LEN - 14) & 0xff;
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, (uint8_t[]){10, 99, 0, 1}, 4);
	memcpy(ip + 16, (uint8_t[]){10, 99, 0, 2}, 4);
	for (int k = 0; k < 20; k += 2)
		sum += (uint32_t)(ip[k] << 8 | ip[k + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	ip[10] = (uint8_t)(~sum >> 8);
	ip[11] = (uint8_t)~sum;
	udp[0] = (uint8_t)((20000 + i) >> 8);
	udp[1] = (uint8_t)(20000 + i);
	udp[2] = UDP_DPORT >> 8;
	udp[3] = UDP_DPORT & 0xff;
	udp[5] = 8 + 16;
	snprintf((char *)udp + 8, 16, "dvmm mq %u", i);
}

/* Which flow a received frame (after the header) is, or -1. */
static int udp_flow(const uint8_t *f, uint32_t len)
{
	const uint8_t *udp = f + 14 + 20;
	unsigned int i;

	if (len != UDP_FRAME_LEN || f[12] != 0x08 || f[13] != 0 ||
	    f[14 + 9] != 17 || udp[2] != UDP_DPORT >> 8 ||
	    udp[3] != (UDP_DPORT & 0xff) ||
	    sscanf((const char *)udp + 8, "dvmm mq %u", &i) != 1)
		return -1;
	return (int)i;
}

/* A frame with its (junk) header in one readable buffer on queue @q. */
static void post_tx(struct harness *h, int q, const char *text)
{
	uint8_t frame[64];
	uint64_t b = galloc(h, NET_HDR + sizeof(frame));
	struct seg s = {b, NET_HDR + sizeof(frame), false};

	make_frame(frame, bcast, test_mac, text, sizeof(frame));
	memset(gptr(h, b, NET_HDR), 0, NET_HDR);
	memcpy(gptr(h, b + NET_HDR, sizeof(frame)), frame, sizeof(frame));
	post(h, q, &s, 1, false);
}

/* Transmit a frame on queue @q and wait until the device returns it. */
static void tx_frame(struct harness *h, int q, const char *text)
{
	post_tx(h, q, text);
	kick(h, q);
	assert_true(wait_used(h, q, 1));
}

static uint64_t post_rx_buf(struct harness *h, int q, uint32_t len)
{
	uint64_t b = galloc(h, len);
	struct seg s = {b, len, true};

	memset(gptr(h, b, len), 0xcc, len);
	post(h, q, &s, 1, false);
	return b;
}

/*
 * A control command on the control queue @cq: header, @dlen bytes of
 * data, a writable ack byte. Returns the ack.
 */
static uint8_t ctrl_cmd(struct harness *h, int cq, uint8_t class, uint8_t cmd,
			const void *data, uint32_t dlen)
{
	uint64_t out = galloc(h, 2 + dlen), ack = galloc(h, 1);
	uint8_t *p = gptr(h, out, 2 + dlen);
	struct seg s[2] = {{out, 2 + dlen, false}, {ack, 1, true}};

	p[0] = class;
	p[1] = cmd;
	if (dlen)
		memcpy(p + 2, data, dlen);
	*(uint8_t *)gptr(h, ack, 1) = 0xee;
	post(h, cq, s, 2, false);
	kick(h, cq);
	assert_true(wait_used(h, cq, 1));
	assert_int_equal(last_used(h, cq).len, 1);
	return *(uint8_t *)gptr(h, ack, 1);
}

/*
 * Post the chain @s of @n segments on the control queue @cq: the device
 * must refuse it with NEEDS_RESET, its @irqs-th configuration interrupt.
 */
static void ctrl_breaks(struct harness *h, int cq, const struct seg *s, int n,
			unsigned int irqs)
{
	post(h, cq, s, n, false);
	kick(h, cq);
	assert_true(wait_config_irqs(h, irqs));
	assert_true(virtio_needs_reset(h->vd));
}

static uint8_t set_pairs(struct harness *h, int cq, uint16_t k)
{
	uint16_t le = htole16(k);

	return ctrl_cmd(h, cq, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &le, 2);
}

/* ---- offering multiqueue ---- */

static bool tun_flag(const char *name, unsigned int flag)
{
	char path[128], buf[32] = {0};
	int fd;

	snprintf(path, sizeof(path), "/sys/class/net/%s/tun_flags", name);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	return strtoul(buf, NULL, 0) & flag;
}

static void test_mq_offered_only_with_pairs(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 1, .mac = test_mac};
	struct virtio_net *bad = NULL;
	struct err e = {0};
	uint8_t cfg[12];
	uint16_t maxp;
	uint64_t f;

	/* One pair: the device as it always was. */
	create_or_skip(h, &o);
	f = h->vd->ops->features(h->vd);
	assert_int_equal(h->vd->num_queues, 2);
	assert_false(f & (1ULL << NET_F_MQ));
	assert_false(f & (1ULL << NET_F_CTRL_VQ));
	assert_true(f & (1ULL << NET_F_STATUS));
	assert_false(tun_flag(virtio_net_tap_name(h->net), IFF_MULTI_QUEUE));
	/* dvmm's own tap is up, so the link is. */
	assert_true(if_flags(virtio_net_tap_name(h->net)) & IFF_UP);
	assert_true(virtio_net_link_is_up(h->net));
	virtio_net_destroy(h->net);
	h->net = NULL;

	/* Three pairs on one tap of dvmm's own, multiqueue. */
	o.npairs = 3;
	create_or_skip(h, &o);
	f = h->vd->ops->features(h->vd);
	assert_int_equal(h->vd->num_queues, 7);
	assert_true(f & (1ULL << NET_F_MQ));
	assert_true(f & (1ULL << NET_F_CTRL_VQ));
	h->vd->ops->config_read(h->vd, 0, cfg, sizeof(cfg));
	assert_memory_equal(cfg, test_mac, 6);
	memcpy(&maxp, cfg + 8, 2);
	assert_int_equal(le16toh(maxp), 3);
	for (unsigned int p = 1; p < 3; p++)
		assert_string_equal(virtio_net_pair_tap_name(h->net, p),
				    virtio_net_tap_name(h->net));
	assert_true(tun_flag(virtio_net_tap_name(h->net), IFF_MULTI_QUEUE));
	assert_true(if_flags(virtio_net_tap_name(h->net)) & IFF_UP);
	assert_true(cfg_status(h) & 1);

	/* Options refused. */
	o.npairs = 0;
	assert_int_equal(virtio_net_create_opts(&bad, &h->mem, &o, &e),
			 -EINVAL);
	o.npairs = VIRTIO_NET_MAX_PAIRS + 1;
	assert_int_equal(virtio_net_create_opts(&bad, &h->mem, &o, &e),
			 -EINVAL);
	o.npairs = 2;
	o.pair[0].remote = true;
	assert_int_equal(virtio_net_create_opts(&bad, &h->mem, &o, &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "pair 0"));
	o.pair[0].remote = false;
	o.pair[1].remote = true; /* and no remote ops */
	assert_int_equal(virtio_net_create_opts(&bad, &h->mem, &o, &e),
			 -EINVAL);
	assert_null(bad);
}

/* ---- the control queue ---- */

static void test_mq_ctrl_queue(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 3, .mac = test_mac};
	uint64_t out, in;
	struct seg s[2];
	uint8_t one = 1;

	create_or_skip(h, &o);
	start_device(h, h->vd, MQ_FEATURES);
	assert_int_equal(set_pairs(h, 6, 2), NET_OK);
	assert_int_equal(set_pairs(h, 6, 3), NET_OK);
	assert_int_equal(set_pairs(h, 6, 1), NET_OK);
	assert_int_equal(set_pairs(h, 6, 0), NET_ERR);
	assert_int_equal(set_pairs(h, 6, 4), NET_ERR);
	assert_int_equal(set_pairs(h, 6, 0xffff), NET_ERR);
	/* Unknown class, unknown command, data cut short. */
	assert_int_equal(ctrl_cmd(h, 6, 5, 0, NULL, 0), NET_ERR);
	assert_int_equal(ctrl_cmd(h, 6, CTRL_MQ, 1, NULL, 0), NET_ERR);
	assert_int_equal(ctrl_cmd(h, 6, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &one, 1),
			 NET_ERR);
	assert_false(virtio_needs_reset(h->vd));

	/* No writable byte for the ack: the driver broke the rules. */
	out = galloc(h, 4);
	memcpy(gptr(h, out, 4), (uint8_t[]){CTRL_MQ, 0, 2, 0}, 4);
	s[0] = (struct seg){out, 4, false};
	ctrl_breaks(h, 6, s, 1, 1);

	/* A header of one byte. */
	restart_device(h);
	assert_false(virtio_needs_reset(h->vd));
	in = galloc(h, 1);
	s[0] = (struct seg){out, 1, false};
	s[1] = (struct seg){in, 1, true};
	ctrl_breaks(h, 6, s, 2, 2);
	restart_device(h);
	assert_int_equal(set_pairs(h, 6, 3), NET_OK);

	/* Without MQ negotiated the control queue is queue 2, and
	 * VQ_PAIRS_SET is refused. */
	stop_device(h);
	start_device(h, h->vd, BASE_FEATURES | (1ULL << NET_F_CTRL_VQ));
	assert_int_equal(set_pairs(h, 2, 2), NET_ERR);
	assert_false(virtio_needs_reset(h->vd));
}

/* ---- frames on every pair ---- */

/*
 * Take the new used entries of receiveq @q: count the UDP flows of ours
 * (bit i of *seen), return how many there were.
 */
static unsigned int take_rx(struct harness *h, int q, const uint64_t *bufs,
			    uint64_t *seen)
{
	struct ring *r = &h->ring[q];
	unsigned int got = 0;

	while (r->used_seen != used_idx(r)) {
		struct vring_used_elem u = r->used->ring[r->used_seen % QSIZE];
		int flow;

		r->used_seen++;
		assert_true(u.id < QSIZE);
		flow = udp_flow(gptr(h, bufs[u.id] + NET_HDR, 1514),
				u.len - NET_HDR);
		if (flow >= 0 && flow < 64) {
			assert_false(*seen & (1ULL << flow)); /* once */
			*seen |= 1ULL << flow;
			got++;
		}
	}
	return got;
}

static void test_mq_frames_on_every_pair(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 3, .mac = test_mac};
	static uint64_t bufs[3][QSIZE];
	uint8_t got[2048], f[UDP_FRAME_LEN];
	struct virtio_net_stats st;
	unsigned int per[3] = {0}, total = 0;
	const unsigned int flows = 32;
	uint64_t seen = 0;
	struct timespec ts;
	char mq[IFNAMSIZ];
	ssize_t n;

	tap_name(mq, "mq");
	snprintf(h->deltap, sizeof(h->deltap), "%s", mq);
	for (int p = 0; p < 3; p++)
		o.pair[p].tap = mq;
	create_or_skip(h, &o);
	assert_true(tun_flag(mq, IFF_MULTI_QUEUE));
	/* A tap given by name keeps its admin state: down. */
	assert_false(if_flags(mq) & IFF_UP);
	assert_false(virtio_net_link_is_up(h->net));
	tap_set(mq, true);
	h->pkt = packet_socket(mq);
	start_device(h, h->vd, MQ_FEATURES);

	/* TX on pair 1, and on pair 2 which is not active: both sent. */
	tx_frame(h, 3, "dvmm mq tx 1");
	n = pkt_recv_test_frame(h->pkt, got, sizeof(got), "dvmm mq tx 1");
	assert_int_equal(n, 64);
	tx_frame(h, 5, "dvmm mq tx 2");
	n = pkt_recv_test_frame(h->pkt, got, sizeof(got), "dvmm mq tx 2");
	assert_int_equal(n, 64);
	virtio_net_get_pair_stats(h->net, 1, &st);
	assert_int_equal(st.tx_packets, 1);
	virtio_net_get_pair_stats(h->net, 2, &st);
	assert_int_equal(st.tx_packets, 1);
	virtio_net_get_pair_stats(h->net, 0, &st);
	assert_int_equal(st.tx_packets, 0);

	/* Two active pairs: flows land on receiveqs 0 and 2, never 4. */
	assert_int_equal(set_pairs(h, 6, 2), NET_OK);
	for (int p = 0; p < 3; p++) {
		for (unsigned int i = 0; i < flows + 8; i++) {
			uint16_t head = h->ring[2 * p].next_desc;

			bufs[p][head] = post_rx_buf(h, 2 * p, NET_HDR + 1514);
		}
		kick(h, 2 * p);
	}
	for (unsigned int i = 0; i < flows; i++) {
		make_udp_frame(f, i);
		assert_int_equal(send(h->pkt, f, sizeof(f), 0), sizeof(f));
	}
	deadline_after(&ts, WAIT_MS);
	while (total < flows) {
		for (int p = 0; p < 2; p++) {
			unsigned int g = take_rx(h, 2 * p, bufs[p], &seen);

			per[p] += g;
			total += g;
		}
		if (total == flows)
			break;
		if (past(&ts))
			fail_msg("%u of %u flows arrived", total, flows);
		pthread_mutex_lock(&h->ft.lock);
		{
			struct timespec t;

			deadline_after(&t, 50);
			pthread_cond_timedwait(&h->ft.cond, &h->ft.lock, &t);
		}
		pthread_mutex_unlock(&h->ft.lock);
	}
	assert_true(per[0] > 0);
	assert_true(per[1] > 0);
	assert_int_equal(used_idx(&h->ring[4]), 0);
	virtio_net_get_pair_stats(h->net, 2, &st);
	assert_int_equal(st.rx_packets, 0);
	virtio_net_get_stats(h->net, &st);
	assert_true(st.rx_packets >= flows);
	assert_int_equal(st.tx_packets, 2);
}

/* ---- link status ---- */

/*
 * Set the tap @name up or down: the device's link follows, announced by
 * its @irqs-th configuration interrupt and a new configuration generation.
 */
static void tap_link(struct harness *h, const char *name, bool up,
		     unsigned int irqs)
{
	uint8_t gen = cfg_generation(h);

	tap_set(name, up);
	assert_true(wait_config_irqs(h, irqs));
	assert_int_equal(cfg_status(h), up);
	assert_int_equal(virtio_net_link_is_up(h->net), up);
	assert_true(cfg_generation(h) != gen);
}

static void test_link_follows_tap(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 1, .mac = test_mac};
	struct virtio_net_stats st;
	char name[IFNAMSIZ];

	create_or_skip(h, &o);
	snprintf(name, sizeof(name), "%s", virtio_net_tap_name(h->net));
	start_device(h, h->vd, BASE_FEATURES);
	assert_int_equal(cfg_status(h), 1);
	tap_link(h, name, false, 1);

	/* Down: TX drops, nothing breaks. */
	tx_frame(h, 1, "dvmm link down");
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.tx_dropped, 1);
	assert_false(virtio_needs_reset(h->vd));

	tap_link(h, name, true, 2);
}

/* The device's link is up when every ACTIVE pair's is. */
static void test_link_of_active_pairs(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 2, .mac = test_mac};
	char ta[IFNAMSIZ], tb[IFNAMSIZ];

	tap_name(ta, "la");
	tap_name(tb, "lb");
	o.pair[0].tap = ta;
	o.pair[1].tap = tb;
	create_or_skip(h, &o);
	assert_false(tun_flag(ta, IFF_MULTI_QUEUE));
	/* Named taps: dvmm leaves them down. */
	assert_false(if_flags(ta) & IFF_UP);
	assert_false(if_flags(tb) & IFF_UP);
	start_device(h, h->vd, MQ_FEATURES);
	assert_int_equal(cfg_status(h), 0);

	tap_set(ta, true); /* pair 1 is down, but not active */
	assert_true(wait_config_irqs(h, 1));
	assert_int_equal(cfg_status(h), 1);
	assert_int_equal(set_pairs(h, 4, 2), NET_OK);
	assert_int_equal(config_irqs(h), 2);
	assert_int_equal(cfg_status(h), 0);
	tap_set(tb, true);
	assert_true(wait_config_irqs(h, 3));
	assert_int_equal(cfg_status(h), 1);
	/* A reset leaves one active pair: pair 1's tap no longer counts. */
	restart_device(h);
	assert_int_equal(cfg_status(h), 1);
	tap_set(tb, false);
	tap_set(ta, false); /* (its event comes after b's) */
	assert_true(wait_config_irqs(h, 4));
	assert_int_equal(cfg_status(h), 0);
	assert_int_equal(config_irqs(h), 4);
}

/*
 * A deleted tap: link down for good, the device keeps going (TX drops),
 * no NEEDS_RESET; a migration's acquire attaches to a new tap.
 */
static void test_link_tap_deleted(void **state)
{
	struct harness *h = *state;
	struct virtio_net_opts o = {.npairs = 1, .mac = test_mac};
	struct virtio_net_stats st;
	char name[IFNAMSIZ], why[256];

	create_or_skip(h, &o);
	snprintf(name, sizeof(name), "%s", virtio_net_tap_name(h->net));
	start_device(h, h->vd, BASE_FEATURES);
	post_rx_buf(h, 0, NET_HDR + 1514);
	kick(h, 0);
	link_delete(name);
	assert_true(wait_config_irqs(h, 1));
	assert_int_equal(cfg_status(h), 0);
	assert_false(virtio_needs_reset(h->vd));
	tx_frame(h, 1, "dvmm tap gone");
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.tx_dropped, 1);
	assert_false(virtio_needs_reset(h->vd));

	h->vd->ops->quiesce(h->vd);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_true(if_nametoindex(virtio_net_tap_name(h->net)) > 0);
	h->vd->ops->resume(h->vd);
	assert_true(wait_config_irqs(h, 2));
	assert_int_equal(cfg_status(h), 1);
	tx_frame(h, 1, "dvmm tap back");
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.tx_packets, 1);
}

/* ---- remote pairs ---- */

static int fr_start(void *opaque, unsigned int pair,
		    const struct virtio_net_pair_setup *s)
{
	struct fake_remote *fr = opaque;

	if (fr->starts < 16)
		fr->start_pair[fr->starts] = pair;
	fr->starts++;
	if (pair < VIRTIO_NET_MAX_PAIRS)
		fr->setup[pair] = *s;
	return fr->start_rc;
}

static void fr_stop(void *opaque, unsigned int pair)
{
	struct fake_remote *fr = opaque;

	if (fr->stops < 16)
		fr->stop_pair[fr->stops] = pair;
	fr->stops++;
}

static void fr_kick(void *opaque, uint16_t q)
{
	struct fake_remote *fr = opaque;

	if (fr->kicks < 16)
		fr->kick_q[fr->kicks] = q;
	fr->kicks++;
}

static void check_setup(struct harness *h, unsigned int p)
{
	struct virtio_net_pair_setup s = h->fr.setup[p];

	for (int i = 0; i < 2; i++) {
		struct ring *r = &h->ring[2 * p + i];
		uint64_t desc = s.desc[i], drv = s.driver[i], dev = s.device[i];

		assert_int_equal(desc, r->desc_gpa);
		assert_int_equal(drv, r->avail_gpa);
		assert_int_equal(dev, r->used_gpa);
		assert_int_equal(s.size[i], QSIZE);
	}
	assert_true(s.features == h->features);
	assert_memory_equal(s.mac, test_mac, 6);
}

static void test_remote_pairs(void **state)
{
	struct harness *h = *state;
	struct virtio_net_remote_ops ops = {
		.start = fr_start,
		.stop = fr_stop,
		.kick = fr_kick,
		.opaque = &h->fr,
	};
	struct virtio_net_opts o = {
		.npairs = 3, .mac = test_mac, .remote = &ops};
	struct virtio_net_stats st;
	uint8_t buf[64];

	o.pair[1].remote = o.pair[2].remote = true;
	create_or_skip(h, &o);
	assert_string_equal(virtio_net_pair_tap_name(h->net, 1), "");
	start_device(h, h->vd, MQ_FEATURES);
	assert_int_equal(h->fr.starts, 0);

	assert_int_equal(set_pairs(h, 6, 3), NET_OK);
	assert_int_equal(h->fr.starts, 2);
	assert_int_equal(h->fr.start_pair[0], 1);
	assert_int_equal(h->fr.start_pair[1], 2);
	check_setup(h, 1);
	check_setup(h, 2);

	/* Kicks of remote pairs go to their server; rings untouched. */
	post_tx(h, 3, "dvmm remote");
	kick(h, 3);
	kick(h, 4);
	assert_int_equal(h->fr.kicks, 2);
	assert_int_equal(h->fr.kick_q[0], 3);
	assert_int_equal(h->fr.kick_q[1], 4);
	assert_int_equal(h->vd->vq[3].last_avail, 0);
	virtio_net_get_pair_stats(h->net, 1, &st);
	assert_int_equal(st.tx_packets + st.tx_dropped, 0);

	/* The server of pair 2 reports its tap down, then up. */
	assert_int_equal(cfg_status(h), 1);
	virtio_net_remote_link(h->net, 2, false);
	assert_int_equal(config_irqs(h), 1);
	assert_int_equal(cfg_status(h), 0);
	assert_false(virtio_net_link_is_up(h->net));
	virtio_net_remote_link(h->net, 2, true);
	assert_int_equal(config_irqs(h), 2);
	assert_int_equal(cfg_status(h), 1);

	/* Pair 2 stops being active: stopped; its link no longer counts. */
	assert_int_equal(set_pairs(h, 6, 2), NET_OK);
	assert_int_equal(h->fr.stops, 1);
	assert_int_equal(h->fr.stop_pair[0], 2);
	virtio_net_remote_link(h->net, 2, false);
	assert_int_equal(config_irqs(h), 2);
	assert_int_equal(cfg_status(h), 1);

	/* Quiesce stops pair 1, resume starts it again; no migration. */
	h->vd->ops->quiesce(h->vd);
	assert_int_equal(h->fr.stops, 2);
	assert_int_equal(h->fr.stop_pair[1], 1);
	assert_int_equal(h->vd->ops->save(h->vd, buf, sizeof(buf)),
			 -EOPNOTSUPP);
	h->vd->ops->resume(h->vd);
	assert_int_equal(h->fr.starts, 3);
	assert_int_equal(h->fr.start_pair[2], 1);

	/* A reset stops it. */
	stop_device(h);
	assert_int_equal(h->fr.stops, 3);
	assert_int_equal(h->fr.stop_pair[2], 1);

	/* A server that does not start: NEEDS_RESET. */
	start_device(h, h->vd, MQ_FEATURES);
	h->fr.start_rc = -1;
	assert_int_equal(set_pairs(h, 6, 2), NET_ERR);
	assert_true(virtio_needs_reset(h->vd));
	assert_int_equal(h->fr.stops, 3);
}

/* ---- a pair server ---- */

static void srv_notify(void *opaque, uint16_t q)
{
	struct harness *h = opaque;

	ft_notify_queue(&h->ft, q);
}

static void srv_link(void *opaque, bool up)
{
	struct harness *h = opaque;

	pthread_mutex_lock(&h->ft.lock);
	h->fr.links++;
	h->fr.link_up = up;
	pthread_cond_broadcast(&h->ft.cond);
	pthread_mutex_unlock(&h->ft.lock);
}

/* Wait until the server has reported its link @n times. */
static bool wait_links(struct harness *h, unsigned int n)
{
	return wait_count(h, &h->fr.links, n);
}

static void server_setup(struct harness *h, struct virtio_net_pair_setup *s)
{
	memset(s, 0, sizeof(*s));
	s->features = BASE_FEATURES | (1ULL << VIRTIO_F_VERSION_1) |
		      (1ULL << VIRTIO_F_EVENT_IDX);
	for (int i = 0; i < 2; i++) {
		struct ring *r = &h->ring[2 + i];

		s->desc[i] = r->desc_gpa;
		s->driver[i] = r->avail_gpa;
		s->device[i] = r->used_gpa;
		s->size[i] = r->size;
	}
	memcpy(s->mac, test_mac, 6);
}

static void test_server(void **state)
{
	struct harness *h = *state;
	struct virtio_net_server_ops ops = {
		.notify = srv_notify, .link = srv_link, .opaque = h};
	struct virtio_net_pair_setup s;
	uint8_t frame[100], got[2048];
	struct err e = {0};
	char name[IFNAMSIZ];
	uint64_t b;
	int rc;

	if (!have_tun())
		skip();
	rc = virtio_net_server_create(&h->net, &h->mem, 3, 1, NULL, &ops, &e);
	if (rc == -EPERM || rc == -EACCES || rc == -ENODEV) {
		print_message("cannot create a tap (%s): skipping\n", e.msg);
		skip();
	}
	assert_int_equal(rc, 0);
	h->vd = virtio_net_device(h->net);
	snprintf(name, sizeof(name), "%s", virtio_net_tap_name(h->net));
	no_ipv6(name);
	h->pkt = packet_socket(name);
	ring_setup(h, 2);
	ring_setup(h, 3);
	server_setup(h, &s);
	assert_int_equal(virtio_net_server_start(h->net, &s, &e), 0);
	assert_true(wait_links(h, 1));
	assert_true(h->fr.link_up);
	assert_int_equal(virtio_net_server_start(h->net, &s, &e), -EBUSY);

	/* TX: the frame reaches the tap. */
	post_tx(h, 3, "dvmm server tx");
	virtio_net_server_kick(h->net, 3);
	assert_true(wait_used(h, 3, 1));
	assert_int_equal(
		pkt_recv_test_frame(h->pkt, got, sizeof(got), "dvmm server tx"),
		64);
	/* RX: the frame lands in the receiveq and the home is told. */
	b = post_rx_buf(h, 2, NET_HDR + 1514);
	virtio_net_server_kick(h->net, 2);
	make_frame(frame, test_mac, host_mac, "dvmm server rx", sizeof(frame));
	assert_int_equal(send(h->pkt, frame, sizeof(frame), 0), sizeof(frame));
	for (;;) {
		assert_true(wait_used(h, 2, 1));
		if (last_used(h, 2).len == NET_HDR + sizeof(frame) &&
		    !memcmp(gptr(h, b + NET_HDR, sizeof(frame)), frame,
			    sizeof(frame)))
			break;
		b = post_rx_buf(h, 2, NET_HDR + 1514); /* a host frame */
		virtio_net_server_kick(h->net, 2);
	}
	pthread_mutex_lock(&h->ft.lock);
	assert_true(h->ft.queue_irqs[2] > 0);
	assert_true(h->ft.queue_irqs[3] > 0);
	pthread_mutex_unlock(&h->ft.lock);
	/* Queues of other pairs are not the server's. */
	virtio_net_server_kick(h->net, 0);
	virtio_net_server_kick(h->net, 5);

	/* Stopped: the rings are left alone. */
	virtio_net_server_stop(h->net);
	assert_false(h->vd->vq[2].enabled);
	assert_false(h->vd->vq[3].enabled);
	post_tx(h, 3, "dvmm server stopped");
	virtio_net_server_kick(h->net, 3);
	assert_int_equal(used_idx(&h->ring[3]), h->ring[3].used_seen);
	assert_int_equal(h->vd->vq[3].last_avail, 0);
	virtio_net_server_stop(h->net); /* twice: nothing */

	/* Rings outside guest memory: refused. */
	s.desc[1] = MEM_SIZE + 0x1000;
	assert_int_equal(virtio_net_server_start(h->net, &s, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "outside guest RAM"));
	s.size[0] = 3;
	assert_int_equal(virtio_net_server_start(h->net, &s, &e), -EINVAL);

	/* Started again: it goes on where it stopped. */
	server_setup(h, &s);
	assert_int_equal(virtio_net_server_start(h->net, &s, &e), 0);
	assert_true(wait_used(h, 3, 1));
	assert_true(wait_links(h, 2));

	/* The tap goes down: reported. */
	tap_set(name, false);
	assert_true(wait_links(h, 3));
	assert_false(h->fr.link_up);
}

/* ---- migration of a multiqueue device ---- */

static size_t put_frames(uint8_t *buf, size_t off, unsigned int cnt,
			 uint32_t len, uint8_t fill)
{
	uint32_t le = htole32(cnt);

	memcpy(buf + off, &le, 4);
	off += 4;
	for (unsigned int i = 0; i < cnt; i++)
		put_frame(buf, &off, len, fill + i);
	return off;
}

static void test_mq_save_load(void **state)
{
	struct harness *h = *state;
	static const uint8_t mac2[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
	struct virtio_net_opts o = {.npairs = 2,
				    .flags = VIRTIO_CREATE_RELEASED};
	uint8_t buf[4096], out[4096];
	char why[256];
	uint64_t b0, b1, b2;
	size_t off, good;
	uint32_t le;

	create_or_skip(h, &o);
#define LOAD(p, len) h->vd->ops->load(h->vd, (p), (len), why, sizeof(why))
	memcpy(buf, mac2, 6);
	/* A single-pair state. */
	assert_int_equal(LOAD(buf, 6), -EINVAL);
	buf[6] = 2;
	buf[7] = 2;
	buf[8] = 2;
	buf[9] = 0;
	off = put_frames(buf, 10, 1, NET_HDR + 60, 0xa0);
	off = put_frames(buf, off, 2, NET_HDR + 100, 0xb0);
	good = off;
	buf[7] = 3; /* other pairs */
	why[0] = '\0';
	assert_int_equal(LOAD(buf, good), -EINVAL);
	assert_non_null(strstr(why, "queue pairs"));
	buf[7] = 2;
	buf[6] = 3; /* other version */
	assert_int_equal(LOAD(buf, good), -EINVAL);
	buf[6] = 2;
	buf[8] = 0; /* no active pair */
	assert_int_equal(LOAD(buf, good), -EINVAL);
	buf[8] = 3;
	assert_int_equal(LOAD(buf, good), -EINVAL);
	buf[8] = 2;
	buf[9] = 1;
	assert_int_equal(LOAD(buf, good), -EINVAL);
	buf[9] = 0;
	assert_int_equal(LOAD(buf, good - 1), -EINVAL); /* cut short */
	assert_int_equal(LOAD(buf, 12), -EINVAL);	/* count cut short */
	buf[good] = 0;
	assert_int_equal(LOAD(buf, good + 1), -EINVAL); /* bytes after */
	le = htole32(0xffffffffu); /* a count beyond everything */
	memcpy(out, buf, good);
	memcpy(out + 10, &le, 4);
	assert_int_equal(LOAD(out, good), -EINVAL);
	memcpy(out + 10, (uint8_t[]){2, 0, 0, 0}, 4); /* one frame short */
	assert_int_equal(LOAD(out, good), -EINVAL);
	assert_int_equal(h->vd->ops->save(h->vd, out, sizeof(out)), 14 + 4);

	/* The good one, saved back the same. */
	assert_int_equal(LOAD(buf, good), 0);
	assert_int_equal(h->vd->ops->save(h->vd, out, sizeof(out)), good);
	assert_memory_equal(out, buf, good);
	assert_int_equal(h->vd->ops->save(h->vd, out, 20), -ENOSPC);
#undef LOAD

	/* Taps, then the backlogs go to the guest on their pairs. */
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_true(tun_flag(virtio_net_tap_name(h->net), IFF_MULTI_QUEUE));
	start_device(h, h->vd, MQ_FEATURES);
	b0 = post_rx_buf(h, 0, NET_HDR + 1514);
	b1 = post_rx_buf(h, 2, NET_HDR + 1514);
	b2 = post_rx_buf(h, 2, NET_HDR + 1514);
	kick(h, 0);
	kick(h, 2);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, NET_HDR + 60);
	check_rx_fill(h, b0, 60, 0xa0);
	assert_true(wait_used(h, 2, 2));
	check_rx_fill(h, b1, 100, 0xb0);
	check_rx_fill(h, b2, 100, 0xb1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_mq_offered_only_with_pairs),
		T(test_mq_ctrl_queue),
		T(test_mq_frames_on_every_pair),
		T(test_link_follows_tap),
		T(test_link_of_active_pairs),
		T(test_link_tap_deleted),
		T(test_remote_pairs),
		T(test_server),
		T(test_mq_save_load),
	};

	log_set_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
