/*
 * tests_net.c - the `net` test (on every virtio-net device: link status,
 * ARP both ways, ICMP echo to the peer, UDP datagrams bounced off the
 * peer's echo server at net_port, payloads checked, RTTs reported) and
 * `netbench` (UDP blast to the echo server for bench_ms per payload size:
 * packets and Mbit/s sent, echoes seen). Not in the default set.
 */
#include "net.h"

#define VIRTIO_NET_F_STATUS	16
#define VIRTIO_NET_S_LINK_UP	1
#define PINGS			5
#define TRIES			3
#define REPLY_TIMEOUT		NSEC_PER_SEC
#define UDP_SPORT		40000
#define BENCH_SPORT		41000
#define BENCH_MAGIC		0x64766d6dU	/* "dvmm" */

/* What the receive callback is looking for. */
static struct {
	u16 ping_id, ping_seq;
	bool ping_got;
	u16 udp_sport;
	const u8 *udp_data;
	u32 udp_len;
	bool udp_got, udp_bad;
	u64 bench_echoed;
} want;

static void rx_ipv4(struct nic *n, const u8 *f, u32 len)
{
	const struct ip_hdr *ip = (const void *)(f + ETH_HLEN);
	u32 ihl, tot;
	const u8 *l4;

	if (len < ETH_HLEN + IP_HLEN || (ip->vihl >> 4) != 4)
		return;
	ihl = (ip->vihl & 15) * 4;
	tot = ntohs(ip->len);
	if (ihl < IP_HLEN || tot < ihl || ETH_HLEN + tot > len ||
	    ntohl(ip->dst) != n->ip || ntohl(ip->src) != n->peer_ip)
		return;
	l4 = (const u8 *)ip + ihl;
	if (ip->proto == IPPROTO_ICMP && tot - ihl >= ICMP_HLEN) {
		const struct icmp_hdr *h = (const void *)l4;

		if (h->type == 0 && ntohs(h->id) == want.ping_id &&
		    ntohs(h->seq) == want.ping_seq)
			want.ping_got = true;
	} else if (ip->proto == IPPROTO_UDP && tot - ihl >= UDP_HLEN) {
		const struct udp_hdr *u = (const void *)l4;
		u32 dlen = ntohs(u->len) - UDP_HLEN;

		if (ntohs(u->sport) != n->port || ntohs(u->len) < UDP_HLEN ||
		    dlen > tot - ihl - UDP_HLEN)
			return;
		if (ntohs(u->dport) == BENCH_SPORT && dlen >= 4 &&
		    *(const u32 *)(u + 1) == BENCH_MAGIC)
			want.bench_echoed++;
		if (ntohs(u->dport) != want.udp_sport || !want.udp_data ||
		    want.udp_got)
			return;
		if (dlen == want.udp_len && !memcmp(u + 1, want.udp_data, dlen))
			want.udp_got = true;
		else
			want.udp_bad = true;
	}
}

/* Poll until *flag is set or the timeout passes. */
static bool wait_flag(struct nic *n, volatile bool *flag, u64 timeout_ns,
		      char *msg)
{
	u64 start = clock_ns();

	for (;;) {
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		if (*flag)
			return true;
		if (clock_ns() - start > timeout_ns)
			return false;
		vq_wait(&n->vd->vq[0], NSEC_PER_MSEC);
	}
}

bool link_up(struct nic *n, char *msg)
{
	u64 start = clock_ns();
	u16 st;

	if (!virtio_has(n->vd, VIRTIO_NET_F_STATUS))
		return true;
	for (;;) {
		virtio_cfg_read(n->vd, 6, &st, 2);
		if (st & VIRTIO_NET_S_LINK_UP)
			return true;
		if (clock_ns() - start > 2 * NSEC_PER_SEC)
			return FAIL("%s: link down (status %x) for 2 s",
				    n->vd->name, st);
		sleep_ns(10 * NSEC_PER_MSEC);
	}
}

/* Append "a,b,c" style numbers to a line. */
static int add_num(char *line, int n, size_t size, u64 v)
{
	return n + snprintf(line + n, size - n, "%s%lu",
			    line[n - 1] == '=' ? "" : ",", v);
}

static bool ping_peer(struct nic *n, char *line, int *ln, size_t lsize,
		      char *msg)
{
	static u8 frame[128];
	u8 data[56];
	char ip[16];

	fmt_ip(ip, n->peer_ip);
	want.ping_id = 0x4d00 + n->index;
	*ln += snprintf(line + *ln, lsize - *ln, " ping_rtt_us=");
	for (int seq = 1; seq <= PINGS; seq++) {
		bool got = false;

		for (u32 i = 0; i < sizeof(data); i++)
			data[i] = seq + i;
		want.ping_seq = seq;
		want.ping_got = false;
		for (int t = 0; t < TRIES && !got; t++) {
			u64 t0 = clock_ns();
			u32 len = build_icmp_echo(n, frame, want.ping_id, seq,
						  data, sizeof(data));

			if (!nic_send(n, frame, len, true, msg))
				return false;
			got = wait_flag(n, &want.ping_got, REPLY_TIMEOUT, msg);
			if (msg[0])
				return false;
			if (got)
				*ln = add_num(line, *ln, lsize,
					      (clock_ns() - t0) / 1000);
		}
		if (!got)
			return FAIL("%s: no echo reply from %s for seq %d "
				    "(%d tries)", n->vd->name, ip, seq, TRIES);
	}
	return true;
}

static bool udp_echo(struct nic *n, char *line, int *ln, size_t lsize,
		     char *msg)
{
	static u8 frame[1600], data[1500];
	u32 sizes[] = { 1, 18, 100, 512, 1000, n->mtu - IP_HLEN - UDP_HLEN };
	char ip[16];

	fmt_ip(ip, n->peer_ip);
	want.udp_sport = UDP_SPORT + n->index;
	*ln += snprintf(line + *ln, lsize - *ln, " udp_rtt_us=");
	for (u32 k = 0; k < ARRAY_SIZE(sizes); k++) {
		bool got = false;

		for (u32 i = 0; i < sizes[k]; i++)
			data[i] = 'A' + (i * 7 + k * 13 + n->index) % 26;
		want.udp_data = data;
		want.udp_len = sizes[k];
		want.udp_got = want.udp_bad = false;
		for (int t = 0; t < TRIES && !got; t++) {
			u64 t0 = clock_ns();
			u32 len = build_udp(n, frame, want.udp_sport, n->port,
					    data, sizes[k]);

			if (!nic_send(n, frame, len, true, msg))
				return false;
			got = wait_flag(n, &want.udp_got, REPLY_TIMEOUT, msg);
			if (msg[0])
				return false;
			if (got)
				*ln = add_num(line, *ln, lsize,
					      (clock_ns() - t0) / 1000);
		}
		want.udp_data = NULL;
		if (!got)
			return FAIL("%s: %u-byte datagram to %s:%u not echoed "
				    "(%d tries)%s", n->vd->name, sizes[k], ip,
				    n->port, TRIES, want.udp_bad ?
				    ", a wrong payload came back" : "");
	}
	return true;
}

static bool net_check(int idx, char *msg)
{
	struct nic *n = nic_open(idx, msg);
	char line[512], ip[16], peer[16];
	u64 t0;
	int ln;

	if (!n)
		return false;
	n->rx = rx_ipv4;
	fmt_ip(ip, n->ip);
	fmt_ip(peer, n->peer_ip);
	printf("INFO net%d: %s mac %02x:%02x:%02x:%02x:%02x:%02x ip %s peer "
	       "%s:%u mtu %u features %lx\n", idx, n->vd->name, n->mac[0],
	       n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5], ip,
	       peer, n->port, n->mtu, n->vd->features);
	if (!link_up(n, msg))
		return false;
	t0 = clock_ns();
	if (!arp_resolve(n, 3 * NSEC_PER_SEC, msg))
		return false;
	ln = snprintf(line, sizeof(line), "INFO net%d: peer mac "
		      "%02x:%02x:%02x:%02x:%02x:%02x arp_us=%lu", idx,
		      n->peer_mac[0], n->peer_mac[1], n->peer_mac[2],
		      n->peer_mac[3], n->peer_mac[4], n->peer_mac[5],
		      (clock_ns() - t0) / 1000);
	if (!ping_peer(n, line, &ln, sizeof(line), msg) ||
	    !udp_echo(n, line, &ln, sizeof(line), msg))
		return false;
	printf("%s rx=%lu tx=%lu arp_answered=%lu irqs=%lu\n", line,
	       n->rx_frames, n->tx_frames, n->arp_answered,
	       vq_irqs(&n->vd->vq[0]));
	return true;
}

bool test_net(char *msg)
{
	int count = 0;

	if (!virtio_probe(msg))
		return false;
	while (virtio_find(VIRTIO_ID_NET, count))
		count++;
	if (!count)
		return FAIL("no virtio-net device");
	for (int i = 0; i < count; i++)
		if (!net_check(i, msg))
			return false;
	snprintf(msg, MSG_LEN, "%d NIC%s: ARP, %d pings and 6 UDP echoes each",
		 count, count > 1 ? "s" : "", PINGS);
	return true;
}

/* ---- netbench ---- */

static bool blast(struct nic *n, u32 size, u64 dur, char *msg)
{
	static u8 frame[1600], data[1500];
	u64 t0, t, sent = 0, echoed0 = want.bench_echoed;
	u32 len;

	if (size > (u32)n->mtu - IP_HLEN - UDP_HLEN)
		size = n->mtu - IP_HLEN - UDP_HLEN;
	for (u32 i = 0; i < size; i++)
		data[i] = i;
	*(u32 *)data = BENCH_MAGIC;
	len = build_udp(n, frame, BENCH_SPORT, n->port, data, size);
	t0 = clock_ns();
	do {
		for (int i = 0; i < 32; i++)
			if (!nic_send(n, frame, len, false, msg))
				return false;
		sent += 32;
		vq_kick(&n->vd->vq[1]);
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		t = clock_ns();
	} while (t - t0 < dur);
	/* late echoes */
	for (u64 end = clock_ns() + 300 * NSEC_PER_MSEC; clock_ns() < end;) {
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		vq_wait(&n->vd->vq[0], NSEC_PER_MSEC);
	}
	printf("INFO bench net-udp%u payload=%u sent=%lu ms=%lu tx_pps=%lu "
	       "tx_mbit_s=%lu echoed=%lu echo_pps=%lu\n", size, size, sent,
	       (t - t0) / NSEC_PER_MSEC, sent * NSEC_PER_SEC / (t - t0),
	       sent * size * 8 * 1000 / (t - t0),
	       want.bench_echoed - echoed0,
	       (want.bench_echoed - echoed0) * NSEC_PER_SEC / (t - t0));
	return true;
}

bool test_netbench(char *msg)
{
	u64 dur = cmdline_u64("bench_ms", 2000) * NSEC_PER_MSEC;
	struct nic *n = nic_open(0, msg);

	if (!n)
		return false;
	n->rx = rx_ipv4;
	if (!link_up(n, msg) || !arp_resolve(n, 3 * NSEC_PER_SEC, msg))
		return false;
	vq_set_irq(&n->vd->vq[0], false);
	if (!blast(n, 64, dur, msg) || !blast(n, 1400, dur, msg))
		return false;
	vq_set_irq(&n->vd->vq[0], true);
	snprintf(msg, MSG_LEN, "%s", n->vd->name);
	return true;
}
