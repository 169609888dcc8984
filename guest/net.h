/*
 * net.h - the virtio-net driver and a minimal IPv4 stack for the tests:
 * Ethernet frames in and out, ARP (answering for our address, resolving
 * the peer), ICMP echo and UDP, with checksums. Addresses are host-order
 * u32s; the command line gives net_ip, net_peer (comma lists: the i-th
 * NIC takes the i-th entry, the last one repeats) and net_port.
 *
 * Multiqueue: when the device offers VIRTIO_NET_F_MQ and CTRL_VQ (and
 * the command line does not say net_mq=0), up to NET_MAX_PAIRS queue
 * pairs are used (net_pairs=N lowers that). Each pair has its own
 * buffers, free list, counters and lock, so CPUs working on different
 * pairs do not touch each other's state; the usual rule is that CPU c
 * transmits on pair c % npairs (nic_send).
 */
#ifndef GUEST_NET_H
#define GUEST_NET_H

#include "virtio.h"

#define NET_BUF		2048	/* virtio_net_hdr_v1 + 1514-byte frame fits */
#define NET_RX_BUFS	128	/* per pair with one pair */
#define NET_TX_BUFS	128
#define NET_MQ_BUFS	64	/* per pair (RX and TX each) with several */
#define NET_MAX_PAIRS	7
#define NET_MAX_NICS	8
#define NET_HDR_LEN	12	/* struct virtio_net_hdr_v1 */
#define ETH_HLEN	14
#define IP_HLEN		20
#define UDP_HLEN	8
#define ICMP_HLEN	8
#define ETH_P_IP	0x0800
#define ETH_P_ARP	0x0806
#define IPPROTO_ICMP	1
#define IPPROTO_UDP	17

struct eth_hdr {
	u8 dst[6], src[6];
	u16 type;
} __attribute__((packed));

struct ip_hdr {
	u8 vihl, tos;
	u16 len, id, frag;
	u8 ttl, proto;
	u16 csum;
	u32 src, dst;
} __attribute__((packed));

struct udp_hdr {
	u16 sport, dport, len, csum;
} __attribute__((packed));

struct icmp_hdr {
	u8 type, code;
	u16 csum, id, seq;
} __attribute__((packed));

struct nic;
/*
 * Called for every IPv4 frame received (ARP is handled inside), by the
 * CPU polling the pair it came in on (with that pair's lock held: it
 * must not send on it).
 */
typedef void (*nic_rx_fn)(struct nic *n, int pair, const u8 *frame,
			  u32 len);

/* One queue pair: receiveq 2p, transmitq 2p + 1. A page of its own. */
struct nic_pair {
	struct vq *rx, *tx;
	u8 *rx_bufs, *tx_bufs;	/* DMA, nbufs each */
	int nbufs;
	u16 tx_free[NET_TX_BUFS];
	int ntx_free, ntx_total;
	volatile u32 lock;	/* nic_send_pair / nic_poll_pair */
	u64 rx_frames, tx_frames, rx_other, arp_answered;
	char error[MSG_LEN];	/* a device error seen while polling */
} __attribute__((aligned(4096)));

struct nic {
	struct vdev *vd;
	int index;
	u8 mac[6];
	u32 ip, peer_ip;
	u16 port;		/* the peer's UDP echo port */
	u16 mtu;
	bool peer_known;
	u8 peer_mac[6];
	int npairs;		/* queue pairs in use */
	u16 max_pairs;		/* the device's max_virtqueue_pairs (1: no MQ) */
	bool mq;		/* MQ negotiated and VQ_PAIRS_SET accepted */
	struct vq *ctrl;	/* the control queue, NULL without MQ */
	u8 *ctrl_buf;		/* DMA: command header, data, ack */
	nic_rx_fn rx;
	void *arg;		/* for the rx callback */
	char error[MSG_LEN];	/* a device error seen by nic_poll */
	struct nic_pair pair[NET_MAX_PAIRS];
};

static inline u16 htons(u16 v) { return __builtin_bswap16(v); }
static inline u32 htonl(u32 v) { return __builtin_bswap32(v); }
#define ntohs htons
#define ntohl htonl

/* Set up the n-th virtio-net device (kept across calls). */
struct nic *nic_open(int n, char *msg);
/* How many virtio-net devices there are (probing PCI if needed). */
int nic_count(void);
/*
 * Send one Ethernet frame (padded to 60 bytes) on queue pair `pair`;
 * kick unless !kick. Waits (2 s at most) while the transmitq is full.
 */
bool nic_send_pair(struct nic *n, int pair, const void *frame, u32 len,
		   bool kick, char *msg);
/* The same on pair cpu_id() % npairs. */
bool nic_send(struct nic *n, const void *frame, u32 len, bool kick,
	      char *msg);
/* Kick pair's transmitq (after sends with !kick). */
void nic_kick_pair(struct nic *n, int pair);
/*
 * Handle the frames received on one pair, refill its RX, reclaim its TX.
 * False on a device error (in n->pair[pair].error).
 */
bool nic_poll_pair(struct nic *n, int pair);
/* nic_poll_pair on every pair; false on a device error (in n->error). */
bool nic_poll(struct nic *n);
/* Free transmit buffers of a pair now (after polling it). */
int nic_tx_free(struct nic *n, int pair);
/* Wait until a pair (any pair: -1) has received something, or timeout. */
bool nic_wait_pair(struct nic *n, int pair, u64 timeout_ns);
static inline bool nic_wait(struct nic *n, u64 timeout_ns)
{
	return nic_wait_pair(n, -1, timeout_ns);
}
/* The pair CPU cpu uses. */
static inline int nic_pair_of(struct nic *n, u64 cpu)
{
	return cpu % n->npairs;
}
/* Interrupts after each receive on every pair, or suppressed. */
void nic_set_irq(struct nic *n, bool on);
/* Point all the NIC's MSI-X vectors (queues, config) at CPU cpu. */
void nic_irq_cpu(struct nic *n, u32 cpu);
/* Receive interrupts counted so far (all pairs). */
u64 nic_rx_irqs(struct nic *n);
/* Frames received / sent so far over all pairs. */
u64 nic_rx_frames(struct nic *n);
u64 nic_tx_frames(struct nic *n);
/* Link up now (true if the device does not report link status). */
bool nic_link(struct nic *n);
/* The device reports link status (VIRTIO_NET_F_STATUS negotiated). */
bool nic_has_link_status(struct nic *n);
/*
 * Wait until the NIC reports its link up, if it reports: at most
 * net_link_wait_ms (default 2000).
 */
bool link_up(struct nic *n, char *msg);
/* Resolve the peer's MAC with ARP requests (retried). */
bool arp_resolve(struct nic *n, u64 timeout_ns, char *msg);
/* Build Ethernet + IPv4 + UDP/ICMP to the peer in f; returns the length. */
u32 build_udp(struct nic *n, u8 *f, u16 sport, u16 dport, const void *data,
	      u32 len);
u32 build_icmp_echo(struct nic *n, u8 *f, u16 id, u16 seq, const void *data,
		    u32 len);
u16 inet_csum(const void *p, u32 len, u32 sum);
void fmt_ip(char *buf, u32 ip);
/* For badring: open NIC n and transmit one ARP request. */
bool net_selftest(int n, char *msg);

#endif
