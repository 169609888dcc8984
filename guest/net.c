/*
 * net.c - the virtio-net driver (receiveq 2p / transmitq 2p + 1 of each
 * queue pair p used: only pair 0 without MQ; 2 KiB buffers holding the
 * 12-byte virtio_net_hdr_v1 and a whole frame, no offloads, MRG_RXBUF
 * only if the device insists; with MQ the control queue enables the
 * pairs) and the minimal IPv4 pieces the net tests need: ARP,
 * IPv4/ICMP/UDP frames and the Internet checksum (see net.h).
 */
#include "net.h"

#define VIRTIO_NET_F_MTU	3
#define VIRTIO_NET_F_MAC	5
#define VIRTIO_NET_F_MRG_RXBUF	15
#define VIRTIO_NET_F_STATUS	16
#define VIRTIO_NET_F_CTRL_VQ	17
#define VIRTIO_NET_F_MQ		22
#define VIRTIO_NET_S_LINK_UP	1
#define VIRTIO_NET_CTRL_MQ	4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0
#define VIRTIO_NET_OK		0
#define CFG_STATUS		6	/* le16 */
#define CFG_MAX_PAIRS		8	/* le16 */
#define CFG_MTU			10	/* le16 */
#define CTRL_QUEUE_SIZE		16
#define CTRL_TIMEOUT		NSEC_PER_SEC
#define MIN_FRAME		60

struct arp_pkt {
	u16 htype, ptype;
	u8 hlen, plen;
	u16 op;
	u8 sha[6];
	u32 spa;
	u8 tha[6];
	u32 tpa;
} __attribute__((packed));

static struct nic nics[NET_MAX_NICS];

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

static bool post_rx(struct nic_pair *p, u8 *buf)
{
	struct vbuf vb = { (u64)buf, NET_BUF, true };

	return !vq_add(p->rx, &vb, 1, buf, false);
}

int nic_count(void)
{
	char msg[MSG_LEN];
	int count = 0;

	if (!virtio_probe(msg))
		return 0;
	while (count < NET_MAX_NICS && virtio_find(VIRTIO_ID_NET, count))
		count++;
	return count;
}

/*
 * virtio_begin; a device may insist on MRG_RXBUF: then take it, with one
 * buffer per frame.
 */
static bool nic_begin(struct vdev *vd, u64 want, char *msg)
{
	char m2[MSG_LEN];

	return virtio_begin(vd, want, m2) ||
	       virtio_begin(vd, want | BIT(VIRTIO_NET_F_MRG_RXBUF), msg);
}

/*
 * One command on the control queue: header (class, cmd), len bytes of
 * data, the ack byte, in three descriptors. False with msg unless the
 * device answered VIRTIO_NET_OK within CTRL_TIMEOUT.
 */
static bool ctrl_cmd(struct nic *n, u8 class, u8 cmd, const void *data,
		     u32 len, char *msg)
{
	struct vq *q = n->ctrl;
	u8 *b = n->ctrl_buf;
	struct vbuf vb[3] = {
		{ (u64)b, 2, false },
		{ (u64)b + 16, len, false },
		{ (u64)b + 64, 1, true },
	};
	void *cookie;
	u32 got;
	int r;

	if (len > 48)
		return FAIL("control command of %u bytes", len);
	b[0] = class;
	b[1] = cmd;
	memcpy(b + 16, data, len);
	b[64] = 0xff;		/* not a valid answer */
	if (vq_add(q, vb, 3, b, false))
		return FAIL("%s: control queue has no room", n->vd->name);
	vq_kick(q);
	if (!vq_wait(q, CTRL_TIMEOUT)) {
		n->vd->broken = true;
		return FAIL("%s: control command class %u cmd %u not answered "
			    "in %lu ms", n->vd->name, class, cmd,
			    CTRL_TIMEOUT / NSEC_PER_MSEC);
	}
	r = vq_get(q, &cookie, &got);
	if (r != 1 || cookie != b) {
		n->vd->broken = true;
		return FAIL("%s: control queue: %s", n->vd->name,
			    q->error[0] ? q->error : "bad used entry");
	}
	if (READ_ONCE(b[64]) != VIRTIO_NET_OK)
		return FAIL("%s: control command class %u cmd %u answered "
			    "%u, not OK (0)%s", n->vd->name, class, cmd,
			    READ_ONCE(b[64]), READ_ONCE(b[64]) == 0xff ?
			    " (ack byte not written)" : "");
	return true;
}

/* Buffers and queues of pair i, nbufs buffers each way. */
static bool setup_pair(struct nic *n, int i, int nbufs, char *msg)
{
	struct vdev *vd = n->vd;
	struct nic_pair *p = &n->pair[i];

	if (p->nbufs < nbufs) {		/* first time (or more needed) */
		p->rx_bufs = dma_alloc(NET_BUF * nbufs, 4096);
		p->tx_bufs = dma_alloc(NET_BUF * nbufs, 4096);
		if (!p->rx_bufs || !p->tx_bufs) {
			p->nbufs = 0;
			return FAIL("DMA arena exhausted (%s, queue pair %d)",
				    vd->name, i);
		}
		p->nbufs = nbufs;
	}
	if (!virtio_setup_vq(vd, 2 * i, nbufs, true, msg) ||
	    !virtio_setup_vq(vd, 2 * i + 1, nbufs, false, msg))
		return false;
	p->rx = &vd->vq[2 * i];
	p->tx = &vd->vq[2 * i + 1];
	p->lock = 0;
	p->error[0] = 0;
	for (int k = 0; k < nbufs && k < p->rx->size; k++)
		post_rx(p, p->rx_bufs + k * NET_BUF);
	p->ntx_free = 0;
	for (int k = 0; k < nbufs && k < p->tx->size; k++)
		p->tx_free[p->ntx_free++] = k;
	p->ntx_total = p->ntx_free;
	return true;
}

struct nic *nic_open(int idx, char *msg)
{
	u64 want = BIT(VIRTIO_NET_F_MAC) | BIT(VIRTIO_NET_F_STATUS) |
		   BIT(VIRTIO_NET_F_MTU);
	u64 mq = BIT(VIRTIO_NET_F_MQ) | BIT(VIRTIO_NET_F_CTRL_VQ);
	struct vdev *vd;
	struct nic *n;
	int nbufs;

	if (!virtio_probe(msg))
		return NULL;
	vd = virtio_find(VIRTIO_ID_NET, idx);
	if (!vd || idx >= NET_MAX_NICS) {
		snprintf(msg, MSG_LEN, "no virtio-net device %d", idx);
		return NULL;
	}
	n = &nics[idx];
	if (n->vd && virtio_live(vd))
		return n;
	n->vd = vd;
	n->index = idx;
	n->error[0] = 0;
	n->mq = false;
	n->ctrl = NULL;
	if (cmdline_u64("net_mq", 1))
		want |= mq;
	if (!nic_begin(vd, want, msg))
		return NULL;
	if (!virtio_has(vd, VIRTIO_NET_F_MQ) !=
	    !virtio_has(vd, VIRTIO_NET_F_CTRL_VQ)) {
		/* MQ needs the control queue; either alone is of no use */
		printf("INFO %s: MQ and CTRL_VQ not offered together (features "
		       "%lx): one queue pair\n", vd->name, vd->offered);
		if (!nic_begin(vd, (want & ~mq) | (vd->features &
				   BIT(VIRTIO_NET_F_MRG_RXBUF)), msg))
			return NULL;
	}
	n->max_pairs = 1;
	n->npairs = 1;
	if (virtio_has(vd, VIRTIO_NET_F_MQ)) {
		u64 lim = cmdline_u64("net_pairs", NET_MAX_PAIRS);
		u16 max;

		virtio_cfg_read(vd, CFG_MAX_PAIRS, &max, 2);
		if (max < 1 || max > 0x8000) {
			virtio_set_status(vd, virtio_status(vd) |
				VIRTIO_S_FAILED);
			snprintf(msg, MSG_LEN, "%s: max_virtqueue_pairs %u (not "
				 "in 1..32768)", vd->name, max);
			return NULL;
		}
		n->max_pairs = max;
		n->npairs = max < NET_MAX_PAIRS ? max : NET_MAX_PAIRS;
		if (lim >= 1 && lim < (u64)n->npairs)
			n->npairs = lim;
	}
	nbufs = n->npairs > 1 ? NET_MQ_BUFS : NET_RX_BUFS;
	for (int i = 0; i < n->npairs; i++)
		if (!setup_pair(n, i, nbufs, msg))
			return NULL;
	if (virtio_has(vd, VIRTIO_NET_F_CTRL_VQ)) {
		/* queue 2 * max_virtqueue_pairs, kept after our pairs */
		if (!n->ctrl_buf && !(n->ctrl_buf = dma_alloc(128, 64))) {
			snprintf(msg, MSG_LEN, "DMA arena exhausted (%s, "
				 "control queue)", vd->name);
			return NULL;
		}
		if (!virtio_setup_vq_at(vd, 2 * n->npairs, 2 * n->max_pairs,
					CTRL_QUEUE_SIZE, false, msg))
			return NULL;
		n->ctrl = &vd->vq[2 * n->npairs];
	}
	if (virtio_has(vd, VIRTIO_NET_F_MAC)) {
		virtio_cfg_read(vd, 0, n->mac, 6);
	} else {
		static const u8 local[6] = { 0x02, 0xd7, 0x33, 0, 0, 0 };

		memcpy(n->mac, local, 6);
		n->mac[5] = idx + 1;
	}
	n->mtu = 1500;
	if (virtio_has(vd, VIRTIO_NET_F_MTU)) {
		virtio_cfg_read(vd, CFG_MTU, &n->mtu, 2);
		if (n->mtu > 1500)
			n->mtu = 1500;	/* our buffers hold 1514-byte frames */
	}
	n->ip = cmdline_ip("net_ip", idx, 0x0a00020f);		/* 10.0.2.15 */
	n->peer_ip = cmdline_ip("net_peer", idx, 0x0a000201);	/* 10.0.2.1 */
	n->port = cmdline_u64("net_port", 7777);
	n->peer_known = false;
	if (!virtio_ready(vd, msg))
		return NULL;
	for (int i = 0; i < n->npairs; i++)
		vq_kick(n->pair[i].rx);
	if (virtio_has(vd, VIRTIO_NET_F_MQ)) {
		u16 pairs = n->npairs;

		if (!ctrl_cmd(n, VIRTIO_NET_CTRL_MQ,
			      VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2, msg)) {
			char m2[MSG_LEN];

			/* not usable as set up: the next nic_open starts over */
			vd->broken = true;
			snprintf(m2, MSG_LEN, "%s", msg);
			snprintf(msg, MSG_LEN, "VQ_PAIRS_SET(%u) of %u: %s",
				 pairs, n->max_pairs, m2);
			return NULL;
		}
		n->mq = true;
	}
	return n;
}

static bool send_arp(struct nic *n, u16 op, const u8 *tha, u32 tpa,
		     char *msg)
{
	u8 f[64];

	return nic_send(n, f, build_arp(n, f, op, tha, tpa), true, msg);
}

/* Queue one frame on a pair whose lock we hold and that has a free buffer. */
static bool pair_send(struct nic *n, struct nic_pair *p, const void *frame,
		      u32 len, bool kick, char *msg)
{
	u16 i = p->tx_free[--p->ntx_free];
	u8 *buf = p->tx_bufs + i * NET_BUF;

	memset(buf, 0, NET_HDR_LEN);	/* no offloads */
	memcpy(buf + NET_HDR_LEN, frame, len);
	if (len < MIN_FRAME) {
		memset(buf + NET_HDR_LEN + len, 0, MIN_FRAME - len);
		len = MIN_FRAME;
	}
	if (vq_add(p->tx, &(struct vbuf){ (u64)buf, NET_HDR_LEN + len,
					  false }, 1, buf, false)) {
		p->tx_free[p->ntx_free++] = i;
		return FAIL("%s: transmitq %u has no room", n->vd->name,
			    p->tx->index);
	}
	p->tx_frames++;
	if (kick)
		vq_kick(p->tx);
	return true;
}

/* An ARP frame came in on pair p (locked): learn the peer, answer for us. */
static void handle_arp(struct nic *n, struct nic_pair *p, const u8 *f,
		       u32 len)
{
	const struct arp_pkt *a = (const void *)(f + ETH_HLEN);
	char m[MSG_LEN];
	u8 r[64];

	if (len < ETH_HLEN + sizeof(*a) || a->htype != htons(1) ||
	    a->ptype != htons(ETH_P_IP) || a->hlen != 6 || a->plen != 4)
		return;
	if (ntohl(a->spa) == n->peer_ip) {
		memcpy(n->peer_mac, a->sha, 6);
		n->peer_known = true;
	}
	/* answered on the same pair; with no free buffer, the asker retries */
	if (a->op == htons(1) && ntohl(a->tpa) == n->ip && p->ntx_free &&
	    pair_send(n, p, r, build_arp(n, r, 2, a->sha, ntohl(a->spa)), true,
		      m))
		p->arp_answered++;
}

/* nic_poll_pair with the pair's lock held. */
static bool pair_poll(struct nic *n, int pi)
{
	struct nic_pair *p = &n->pair[pi];
	struct vq *rx = p->rx, *tx = p->tx;
	bool reposted = false;
	void *cookie;
	u32 len;
	int r;

	while ((r = vq_get(rx, &cookie, &len)) == 1) {
		u8 *buf = cookie, *f = buf + NET_HDR_LEN;
		u16 nbufs = *(u16 *)(buf + 10);

		p->rx_frames++;
		if (len >= NET_HDR_LEN + ETH_HLEN && len <= NET_BUF &&
		    (!virtio_has(n->vd, VIRTIO_NET_F_MRG_RXBUF) || nbufs == 1)) {
			u16 type = ntohs(((struct eth_hdr *)f)->type);

			len -= NET_HDR_LEN;
			if (type == ETH_P_ARP)
				handle_arp(n, p, f, len);
			else if (type == ETH_P_IP && n->rx)
				n->rx(n, pi, f, len);
			else
				p->rx_other++;
		} else {
			p->rx_other++;
		}
		post_rx(p, buf);
		reposted = true;
	}
	if (r < 0)
		snprintf(p->error, MSG_LEN, "receiveq %u: %s", rx->index,
			 rx->error);
	if (reposted)
		vq_kick(rx);
	while ((r = vq_get(tx, &cookie, &len)) == 1)
		p->tx_free[p->ntx_free++] = ((u8 *)cookie - p->tx_bufs) /
					    NET_BUF;
	if (r < 0)
		snprintf(p->error, MSG_LEN, "transmitq %u: %s", tx->index,
			 tx->error);
	return !p->error[0];
}

bool nic_poll_pair(struct nic *n, int pi)
{
	struct nic_pair *p = &n->pair[pi];
	bool ok;

	spin_lock(&p->lock);
	ok = pair_poll(n, pi);
	spin_unlock(&p->lock);
	return ok;
}

bool nic_poll(struct nic *n)
{
	for (int i = 0; i < n->npairs; i++)
		if (!nic_poll_pair(n, i) && !n->error[0])
			snprintf(n->error, MSG_LEN, "%s", n->pair[i].error);
	return !n->error[0];
}

bool nic_send_pair(struct nic *n, int pi, const void *frame, u32 len,
		   bool kick, char *msg)
{
	struct nic_pair *p = &n->pair[pi];
	u64 start = clock_ns();
	bool ok;

	if (len > ETH_HLEN + (u32)n->mtu)
		return FAIL("frame of %u bytes > MTU %u", len, n->mtu);
	if (pi < 0 || pi >= n->npairs)
		return FAIL("%s: no queue pair %d (%d in use)", n->vd->name,
			    pi, n->npairs);
	for (;;) {
		spin_lock(&p->lock);
		if (!p->ntx_free) {
			vq_kick(p->tx);
			pair_poll(n, pi);
		}
		if (p->ntx_free || p->error[0])
			break;
		spin_unlock(&p->lock);
		if (clock_ns() - start > 2 * NSEC_PER_SEC)
			return FAIL("%s: transmitq %u full for 2 s",
				    n->vd->name, p->tx->index);
		vq_wait(p->tx, NSEC_PER_MSEC);
	}
	if (p->error[0]) {
		spin_unlock(&p->lock);
		return FAIL("%s: %s", n->vd->name, p->error);
	}
	ok = pair_send(n, p, frame, len, kick, msg);
	spin_unlock(&p->lock);
	return ok;
}

bool nic_send(struct nic *n, const void *frame, u32 len, bool kick,
	      char *msg)
{
	return nic_send_pair(n, nic_pair_of(n, cpu_id()), frame, len, kick,
			     msg);
}

void nic_kick_pair(struct nic *n, int pi)
{
	struct nic_pair *p = &n->pair[pi];

	spin_lock(&p->lock);
	vq_kick(p->tx);
	spin_unlock(&p->lock);
}

int nic_tx_free(struct nic *n, int pi)
{
	return READ_ONCE(n->pair[pi].ntx_free);
}

bool nic_wait_pair(struct nic *n, int pi, u64 timeout_ns)
{
	struct vq *qs[NET_MAX_PAIRS];

	if (pi >= 0)
		return vq_wait(n->pair[pi].rx, timeout_ns);
	for (int i = 0; i < n->npairs; i++)
		qs[i] = n->pair[i].rx;
	return vq_wait_any(qs, n->npairs, timeout_ns);
}

void nic_set_irq(struct nic *n, bool on)
{
	for (int i = 0; i < n->npairs; i++)
		vq_set_irq(n->pair[i].rx, on);
}

void nic_irq_cpu(struct nic *n, u32 cpu)
{
	for (int i = 0; i < n->npairs; i++) {
		vq_set_irq_cpu(n->pair[i].rx, cpu);
		vq_set_irq_cpu(n->pair[i].tx, cpu);
	}
	if (n->ctrl)
		vq_set_irq_cpu(n->ctrl, cpu);
	virtio_config_irq_cpu(n->vd, cpu);
}

u64 nic_rx_irqs(struct nic *n)
{
	u64 sum = 0;

	for (int i = 0; i < n->npairs; i++)
		sum += vq_irqs(n->pair[i].rx);
	return sum;
}

u64 nic_rx_frames(struct nic *n)
{
	u64 sum = 0;

	for (int i = 0; i < n->npairs; i++)
		sum += READ_ONCE(n->pair[i].rx_frames);
	return sum;
}

u64 nic_tx_frames(struct nic *n)
{
	u64 sum = 0;

	for (int i = 0; i < n->npairs; i++)
		sum += READ_ONCE(n->pair[i].tx_frames);
	return sum;
}

bool nic_has_link_status(struct nic *n)
{
	return virtio_has(n->vd, VIRTIO_NET_F_STATUS);
}

bool nic_link(struct nic *n)
{
	u16 st;

	if (!nic_has_link_status(n))
		return true;
	virtio_cfg_read(n->vd, CFG_STATUS, &st, 2);
	return st & VIRTIO_NET_S_LINK_UP;
}

bool link_up(struct nic *n, char *msg)
{
	u64 wait = cmdline_u64("net_link_wait_ms", 2000) * NSEC_PER_MSEC;
	u64 start = clock_ns();
	u16 st;

	if (!nic_has_link_status(n))
		return true;
	for (;;) {
		virtio_cfg_read(n->vd, CFG_STATUS, &st, 2);
		if (st & VIRTIO_NET_S_LINK_UP)
			return true;
		if (clock_ns() - start >= wait)
			return FAIL("%s: link down (status %x) for %lu ms",
				    n->vd->name, st, wait / NSEC_PER_MSEC);
		sleep_ns(10 * NSEC_PER_MSEC);
	}
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
			nic_wait(n, NSEC_PER_MSEC);
	}
	return true;
}

bool net_selftest(int idx, char *msg)
{
	struct nic *n = nic_open(idx, msg);
	u64 start = clock_ns();
	struct nic_pair *p;

	if (!n)
		return false;
	p = &n->pair[nic_pair_of(n, cpu_id())];
	if (!send_arp(n, 1, NULL, n->peer_ip, msg))
		return false;
	while (READ_ONCE(p->ntx_free) < p->ntx_total) {
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		if (clock_ns() - start > 2 * NSEC_PER_SEC)
			return FAIL("%s: ARP request not transmitted in 2 s",
				    n->vd->name);
		vq_wait(p->tx, NSEC_PER_MSEC);
	}
	return true;
}
