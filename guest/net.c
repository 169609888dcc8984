/*
 * net.c - the virtio-net driver (receiveq 0 / transmitq 1 of the first
 * queue pair, 2 KiB buffers holding the 12-byte virtio_net_hdr_v1 and a
 * whole frame, no offloads, MRG_RXBUF only if the device insists) and
 * the minimal IPv4 pieces the net tests need: ARP, IPv4/ICMP/UDP frames
 * and the Internet checksum (see net.h).
 */
#include "net.h"

#define VIRTIO_NET_F_MTU	3
#define VIRTIO_NET_F_MAC	5
#define VIRTIO_NET_F_MRG_RXBUF	15
#define VIRTIO_NET_F_STATUS	16
#define VIRTIO_NET_S_LINK_UP	1
#define MIN_FRAME		60
#define MAX_NICS		8

struct arp_pkt {
	u16 htype, ptype;
	u8 hlen, plen;
	u16 op;
	u8 sha[6];
	u32 spa;
	u8 tha[6];
	u32 tpa;
} __attribute__((packed));

static struct nic nics[MAX_NICS];

/* ---- addresses from the command line ---- */

static bool parse_ip(const char *s, int len, u32 *ip)
{
	u32 v = 0;
	int parts = 0, i = 0;

	while (i < len && parts < 4) {
		u32 octet = 0;
		int digits = 0;

		while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
			octet = octet * 10 + s[i++] - '0';
			digits++;
		}
		if (!digits || octet > 255)
			return false;
		v = v << 8 | octet;
		parts++;
		if (i < len && s[i] == '.')
			i++;
		else
			break;
	}
	if (parts != 4)
		return false;
	*ip = v;
	return true;
}

/* Entry idx of a comma list (the last one if the list is shorter). */
static u32 cmdline_ip(const char *key, int idx, u32 def)
{
	int len, start = 0, n = 0;
	const char *v = cmdline_get(key, &len);
	u32 ip = def;

	if (!v)
		return def;
	for (int i = 0; i <= len; i++) {
		if (i < len && v[i] != ',')
			continue;
		if (!parse_ip(v + start, i - start, &ip))
			return def;
		if (n++ == idx)
			break;
		start = i + 1;
	}
	return ip;
}

void fmt_ip(char *buf, u32 ip)
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, ip >> 16 & 255,
		 ip >> 8 & 255, ip & 255);
}

/* ---- checksums and frames ---- */

u16 inet_csum(const void *p, u32 len, u32 sum)
{
	const u8 *b = p;
	u64 s = sum;

	for (u32 i = 0; i + 1 < len; i += 2)
		s += b[i] << 8 | b[i + 1];
	if (len & 1)
		s += b[len - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return htons(~s & 0xffff);
}

static u32 ip_frame(struct nic *n, u8 *f, u8 proto, u32 payload)
{
	static u16 ip_id;
	struct eth_hdr *e = (void *)f;
	struct ip_hdr *ip = (void *)(f + ETH_HLEN);

	memcpy(e->dst, n->peer_mac, 6);
	memcpy(e->src, n->mac, 6);
	e->type = htons(ETH_P_IP);
	*ip = (struct ip_hdr){
		.vihl = 0x45, .len = htons(IP_HLEN + payload),
		.id = htons(ip_id++), .frag = htons(0x4000),	/* DF */
		.ttl = 64, .proto = proto, .src = htonl(n->ip),
		.dst = htonl(n->peer_ip),
	};
	ip->csum = inet_csum(ip, IP_HLEN, 0);
	return ETH_HLEN + IP_HLEN + payload;
}

u32 build_udp(struct nic *n, u8 *f, u16 sport, u16 dport, const void *data,
	      u32 len)
{
	struct udp_hdr *u = (void *)(f + ETH_HLEN + IP_HLEN);
	u32 pseudo;

	*u = (struct udp_hdr){ htons(sport), htons(dport),
			       htons(UDP_HLEN + len), 0 };
	memcpy(u + 1, data, len);
	pseudo = (n->ip >> 16) + (n->ip & 0xffff) + (n->peer_ip >> 16) +
		 (n->peer_ip & 0xffff) + IPPROTO_UDP + UDP_HLEN + len;
	u->csum = inet_csum(u, UDP_HLEN + len, pseudo);
	if (!u->csum)
		u->csum = 0xffff;
	return ip_frame(n, f, IPPROTO_UDP, UDP_HLEN + len);
}

u32 build_icmp_echo(struct nic *n, u8 *f, u16 id, u16 seq, const void *data,
		    u32 len)
{
	struct icmp_hdr *h = (void *)(f + ETH_HLEN + IP_HLEN);

	*h = (struct icmp_hdr){ 8, 0, 0, htons(id), htons(seq) };
	memcpy(h + 1, data, len);
	h->csum = inet_csum(h, ICMP_HLEN + len, 0);
	return ip_frame(n, f, IPPROTO_ICMP, ICMP_HLEN + len);
}

static u32 build_arp(struct nic *n, u8 *f, u16 op, const u8 *tha, u32 tpa)
{
	static const u8 bcast[6] = { 255, 255, 255, 255, 255, 255 };
	struct eth_hdr *e = (void *)f;
	struct arp_pkt *a = (void *)(f + ETH_HLEN);

	memcpy(e->dst, op == 1 ? bcast : tha, 6);
	memcpy(e->src, n->mac, 6);
	e->type = htons(ETH_P_ARP);
	*a = (struct arp_pkt){ htons(1), htons(ETH_P_IP), 6, 4, htons(op),
			       { 0 }, htonl(n->ip), { 0 }, htonl(tpa) };
	memcpy(a->sha, n->mac, 6);
	if (op == 2)
		memcpy(a->tha, tha, 6);
	return ETH_HLEN + sizeof(*a);
}

/* ---- the device ---- */

static bool post_rx(struct nic *n, u8 *buf)
{
	struct vbuf vb = { (u64)buf, NET_BUF, true };

	return !vq_add(&n->vd->vq[0], &vb, 1, buf, false);
}

struct nic *nic_open(int idx, char *msg)
{
	u64 want = BIT(VIRTIO_NET_F_MAC) | BIT(VIRTIO_NET_F_STATUS) |
		   BIT(VIRTIO_NET_F_MTU);
	struct vdev *vd;
	struct nic *n;
	char m2[MSG_LEN];

	if (!virtio_probe(msg))
		return NULL;
	vd = virtio_find(VIRTIO_ID_NET, idx);
	if (!vd || idx >= MAX_NICS) {
		snprintf(msg, MSG_LEN, "no virtio-net device %d", idx);
		return NULL;
	}
	n = &nics[idx];
	if (n->vd && virtio_live(vd))
		return n;
	if (!n->rx_bufs) {
		n->rx_bufs = dma_alloc(NET_BUF * NET_RX_BUFS, 4096);
		n->tx_bufs = dma_alloc(NET_BUF * NET_TX_BUFS, 4096);
		if (!n->rx_bufs || !n->tx_bufs) {
			snprintf(msg, MSG_LEN, "DMA arena exhausted");
			return NULL;
		}
	}
	n->vd = vd;
	n->index = idx;
	n->error[0] = 0;
	/* a device may insist on MRG_RXBUF: then take it, with 1 buffer */
	if (!virtio_begin(vd, want, m2) &&
	    !virtio_begin(vd, want | BIT(VIRTIO_NET_F_MRG_RXBUF), msg))
		return NULL;
	if (!virtio_setup_vq(vd, 0, NET_RX_BUFS, true, msg) ||
	    !virtio_setup_vq(vd, 1, NET_TX_BUFS, false, msg))
		return NULL;
	if (virtio_has(vd, VIRTIO_NET_F_MAC)) {
		virtio_cfg_read(vd, 0, n->mac, 6);
	} else {
		static const u8 local[6] = { 0x02, 0xd7, 0x33, 0, 0, 0 };

		memcpy(n->mac, local, 6);
		n->mac[5] = idx + 1;
	}
	n->mtu = 1500;
	if (virtio_has(vd, VIRTIO_NET_F_MTU)) {
		virtio_cfg_read(vd, 10, &n->mtu, 2);
		if (n->mtu > 1500)
			n->mtu = 1500;	/* our buffers hold 1514-byte frames */
	}
	n->ip = cmdline_ip("net_ip", idx, 0x0a00020f);		/* 10.0.2.15 */
	n->peer_ip = cmdline_ip("net_peer", idx, 0x0a000201);	/* 10.0.2.1 */
	n->port = cmdline_u64("net_port", 7777);
	n->peer_known = false;
	for (int i = 0; i < NET_RX_BUFS && i < vd->vq[0].size; i++)
		post_rx(n, n->rx_bufs + i * NET_BUF);
	n->ntx_free = 0;
	for (int i = 0; i < NET_TX_BUFS && i < vd->vq[1].size; i++)
		n->tx_free[n->ntx_free++] = i;
	n->ntx_total = n->ntx_free;
	if (!virtio_ready(vd, msg))
		return NULL;
	vq_kick(&vd->vq[0]);
	return n;
}

static bool send_arp(struct nic *n, u16 op, const u8 *tha, u32 tpa,
		     char *msg)
{
	u8 f[64];

	return nic_send(n, f, build_arp(n, f, op, tha, tpa), true, msg);
}

static void handle_arp(struct nic *n, const u8 *f, u32 len)
{
	const struct arp_pkt *a = (const void *)(f + ETH_HLEN);
	char m[MSG_LEN];

	if (len < ETH_HLEN + sizeof(*a) || a->htype != htons(1) ||
	    a->ptype != htons(ETH_P_IP) || a->hlen != 6 || a->plen != 4)
		return;
	if (ntohl(a->spa) == n->peer_ip) {
		memcpy(n->peer_mac, a->sha, 6);
		n->peer_known = true;
	}
	if (a->op == htons(1) && ntohl(a->tpa) == n->ip &&
	    send_arp(n, 2, a->sha, ntohl(a->spa), m))
		n->arp_answered++;
}

bool nic_poll(struct nic *n)
{
	struct vq *rx = &n->vd->vq[0], *tx = &n->vd->vq[1];
	bool reposted = false;
	void *cookie;
	u32 len;
	int r;

	while ((r = vq_get(rx, &cookie, &len)) == 1) {
		u8 *buf = cookie, *f = buf + NET_HDR_LEN;
		u16 nbufs = *(u16 *)(buf + 10);

		n->rx_frames++;
		if (len >= NET_HDR_LEN + ETH_HLEN && len <= NET_BUF &&
		    (!virtio_has(n->vd, VIRTIO_NET_F_MRG_RXBUF) || nbufs == 1)) {
			u16 type = ntohs(((struct eth_hdr *)f)->type);

			len -= NET_HDR_LEN;
			if (type == ETH_P_ARP)
				handle_arp(n, f, len);
			else if (type == ETH_P_IP && n->rx)
				n->rx(n, f, len);
			else
				n->rx_other++;
		} else {
			n->rx_other++;
		}
		post_rx(n, buf);
		reposted = true;
	}
	if (r < 0)
		snprintf(n->error, MSG_LEN, "receiveq: %s", rx->error);
	if (reposted)
		vq_kick(rx);
	while ((r = vq_get(tx, &cookie, &len)) == 1)
		n->tx_free[n->ntx_free++] = ((u8 *)cookie - n->tx_bufs) /
					    NET_BUF;
	if (r < 0)
		snprintf(n->error, MSG_LEN, "transmitq: %s", tx->error);
	return !n->error[0];
}

bool nic_send(struct nic *n, const void *frame, u32 len, bool kick,
	      char *msg)
{
	struct vq *tx = &n->vd->vq[1];
	u64 start = clock_ns();
	u8 *buf;
	u16 i;

	if (len > ETH_HLEN + (u32)n->mtu)
		return FAIL("frame of %u bytes > MTU %u", len, n->mtu);
	while (!n->ntx_free) {
		vq_kick(tx);
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		if (clock_ns() - start > 2 * NSEC_PER_SEC)
			return FAIL("%s: transmit queue full for 2 s",
				    n->vd->name);
		if (!n->ntx_free)
			vq_wait(tx, NSEC_PER_MSEC);
	}
	i = n->tx_free[--n->ntx_free];
	buf = n->tx_bufs + i * NET_BUF;
	memset(buf, 0, NET_HDR_LEN);	/* no offloads */
	memcpy(buf + NET_HDR_LEN, frame, len);
	if (len < MIN_FRAME) {
		memset(buf + NET_HDR_LEN + len, 0, MIN_FRAME - len);
		len = MIN_FRAME;
	}
	if (vq_add(tx, &(struct vbuf){ (u64)buf, NET_HDR_LEN + len, false },
		   1, buf, false))
		return FAIL("%s: transmitq has no room", n->vd->name);
	n->tx_frames++;
	if (kick)
		vq_kick(tx);
	return true;
}

bool arp_resolve(struct nic *n, u64 timeout_ns, char *msg)
{
	u64 start = clock_ns(), next = 0;
	char ip[16];

	while (!n->peer_known) {
		u64 now = clock_ns();

		if (now - start > timeout_ns) {
			fmt_ip(ip, n->peer_ip);
			return FAIL("%s: no ARP reply from %s in %lu ms",
				    n->vd->name, ip,
				    timeout_ns / NSEC_PER_MSEC);
		}
		if (now >= next) {
			if (!send_arp(n, 1, NULL, n->peer_ip, msg))
				return false;
			next = now + 500 * NSEC_PER_MSEC;
		}
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		if (!n->peer_known)
			vq_wait(&n->vd->vq[0], NSEC_PER_MSEC);
	}
	return true;
}

bool net_selftest(int idx, char *msg)
{
	struct nic *n = nic_open(idx, msg);
	u64 start = clock_ns();

	if (!n)
		return false;
	if (!send_arp(n, 1, NULL, n->peer_ip, msg))
		return false;
	while (n->ntx_free < n->ntx_total) {
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		if (clock_ns() - start > 2 * NSEC_PER_SEC)
			return FAIL("%s: ARP request not transmitted in 2 s",
				    n->vd->name);
		vq_wait(&n->vd->vq[1], NSEC_PER_MSEC);
	}
	return true;
}
