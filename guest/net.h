/*
 * net.h - the virtio-net driver and a minimal IPv4 stack for the tests:
 * Ethernet frames in and out, ARP (answering for our address, resolving
 * the peer), ICMP echo and UDP, with checksums. Addresses are host-order
 * u32s; the command line gives net_ip, net_peer (comma lists: the i-th
 * NIC takes the i-th entry, the last one repeats) and net_port.
 */
#ifndef GUEST_NET_H
#define GUEST_NET_H

#include "virtio.h"

#define NET_BUF		2048	/* virtio_net_hdr_v1 + 1514-byte frame fits */
#define NET_RX_BUFS	128
#define NET_TX_BUFS	128
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
/* Called for every IPv4 frame received (ARP is handled inside). */
typedef void (*nic_rx_fn)(struct nic *n, const u8 *frame, u32 len);

struct nic {
	struct vdev *vd;
	int index;
	u8 mac[6];
	u32 ip, peer_ip;
	u16 port;		/* the peer's UDP echo port */
	u16 mtu;
	bool peer_known;
	u8 peer_mac[6];
	u8 *rx_bufs, *tx_bufs;	/* DMA */
	u16 tx_free[NET_TX_BUFS];
	int ntx_free, ntx_total;
	nic_rx_fn rx;
	void *arg;		/* for the rx callback */
	u64 rx_frames, tx_frames, rx_other, arp_answered;
	char error[MSG_LEN];	/* a device error seen while polling */
};

static inline u16 htons(u16 v) { return __builtin_bswap16(v); }
static inline u32 htonl(u32 v) { return __builtin_bswap32(v); }
#define ntohs htons
#define ntohl htonl

/* Set up the n-th virtio-net device (kept across calls). */
struct nic *nic_open(int n, char *msg);
/* Send one Ethernet frame (padded to 60 bytes); kick unless !kick. */
bool nic_send(struct nic *n, const void *frame, u32 len, bool kick,
	      char *msg);
/* Handle received frames, refill RX, reclaim TX. False on device error. */
bool nic_poll(struct nic *n);
/* Wait (2 s at most) until the NIC reports its link up, if it reports. */
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
