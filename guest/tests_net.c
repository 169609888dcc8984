/*
 * tests_net.c - the virtio-net tests, not in the default set:
 *
 * - `net`: on every virtio-net device link status, ARP both ways, ICMP
 *   echo to the peer, UDP datagrams bounced off the peer's echo server at
 *   net_port, payloads checked, RTTs reported. From CPU 0, or with
 *   net_cpus=all from every CPU in turn (each on its queue pair, the
 *   NIC's vectors pointed at it), checking that every pair was used.
 * - `netbench`: UDP blast to the echo server for bench_ms per payload
 *   size: packets and Mbit/s sent, echoes seen. CPU 0 on NIC 0; with
 *   nb_mode=each every NIC from CPU nb_cpu; with nb_mode=all every CPU
 *   at once, CPU c on NIC c % nnics and its pair c % npairs.
 * - `netlat`: UDP round trips one at a time, per NIC and CPU.
 * - `netfail`: a steady UDP exchange on net0 that moves to net1 when
 *   net0's link goes down (the host takes its tap down).
 */
#include "net.h"

#define PINGS			5
#define TRIES			3
#define REPLY_TIMEOUT		NSEC_PER_SEC
#define ARP_TIMEOUT		(3 * NSEC_PER_SEC)
#define UDP_SPORT		40000
#define BENCH_SPORT		41000
#define BENCH_MAGIC		0x64766d6dU	/* "dvmm" */
#define NF_SPORT		43000
#define NF_MAGIC		0x6c69616eU	/* "nail" */
#define NF_ARM_ECHOES		50
#define NF_STEP_TIMEOUT		(5 * NSEC_PER_SEC)
#define NL_SPORT		44000
#define NL_MAGIC		0x74616c6eU	/* "nlat" */
#define NL_MAX			10000
#define NL_LOST_IN_A_ROW	5
/* One CPU's net check: ARP 3 s + (5 pings + 6 datagrams) x 3 tries x 1 s. */
#define NET_JOB_TIMEOUT		(60 * NSEC_PER_SEC)

static const u32 bench_sizes[] = { 64, 1400 };

/* What the receive callback is looking for (one CPU at a time). */
static struct {
	u16 ping_id, ping_seq;
	bool ping_got;
	u16 udp_sport;
	const u8 *udp_data;
	u32 udp_len;
	bool udp_got, udp_bad;
	u64 nl_run;		/* netlat: the round trip awaited */
	u32 nl_cpu, nl_seq;
	bool nl_got;
	u64 nl_rx_ns;
} want;

/* netbench: per CPU, a page each (CPUs may be on different nodes). */
struct bench_cpu {
	u8 frame[1600], data[1500];
	u64 echoed;		/* echoes of this CPU's datagrams (atomic: any
				   CPU polling the pair they came in on) */
	struct nic *n;
	int pair;
	u32 size;		/* payload sent (the MTU may cut it) */
	u64 sent, t0, t1, echoed0;
	bool ok;
	char msg[MSG_LEN];
} __attribute__((aligned(4096)));

static struct bench_cpu bcpu[MAX_CPUS];

/* netfail: the datagram and what came back */
struct nf_payload {
	u32 magic, nic;
	u64 run, seq, sent_ns;
};

static struct {
	u64 run;
	u64 echoes[2];
	u64 last_rx[2], first_rx1;
} nf;

/* netlat */
struct nl_payload {
	u32 magic, cpu, seq, pad;
	u64 run;
};

static u64 nl_rtt[NL_MAX];

static u32 get32(const u8 *p)
{
	u32 v;

	memcpy(&v, p, 4);
	return v;
}

static void bench_rx(const u8 *d, u32 dlen)
{
	u32 cpu;

	if (dlen < 8 || get32(d) != BENCH_MAGIC)
		return;
	cpu = get32(d + 4);
	if (cpu < MAX_CPUS)
		__atomic_add_fetch(&bcpu[cpu].echoed, 1, __ATOMIC_RELAXED);
}

static void nf_rx(struct nic *n, const u8 *d, u32 dlen)
{
	struct nf_payload p;
	u64 now;

	if (dlen < sizeof(p) || n->index > 1)
		return;
	memcpy(&p, d, sizeof(p));
	if (p.magic != NF_MAGIC || p.run != nf.run || p.nic != (u32)n->index)
		return;
	now = clock_ns();
	nf.echoes[n->index]++;
	nf.last_rx[n->index] = now;
	if (n->index == 1 && !nf.first_rx1)
		nf.first_rx1 = now;
}

static void nl_rx(const u8 *d, u32 dlen)
{
	struct nl_payload p;

	if (dlen < sizeof(p))
		return;
	memcpy(&p, d, sizeof(p));
	if (p.magic == NL_MAGIC && p.run == want.nl_run &&
	    p.cpu == want.nl_cpu && p.seq == want.nl_seq && !want.nl_got) {
		want.nl_rx_ns = clock_ns();
		want.nl_got = true;
	}
}

/* Runs on whichever CPU polls the pair the frame came in on. */
static void rx_ipv4(struct nic *n, int pair, const u8 *f, u32 len)
{
	const struct ip_hdr *ip = (const void *)(f + ETH_HLEN);
	u32 ihl, tot;
	const u8 *l4;

	(void)pair;
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
		const u8 *d = (const u8 *)(u + 1);
		u32 dlen = ntohs(u->len) - UDP_HLEN;

		if (ntohs(u->sport) != n->port || ntohs(u->len) < UDP_HLEN ||
		    dlen > tot - ihl - UDP_HLEN)
			return;
		switch (ntohs(u->dport)) {
		case BENCH_SPORT:
			bench_rx(d, dlen);
			return;
		case NF_SPORT:
			nf_rx(n, d, dlen);
			return;
		case NL_SPORT:
			nl_rx(d, dlen);
			return;
		}
		if (ntohs(u->dport) != want.udp_sport || !want.udp_data ||
		    want.udp_got)
			return;
		if (dlen == want.udp_len && !memcmp(d, want.udp_data, dlen))
			want.udp_got = true;
		else
			want.udp_bad = true;
	}
}

/* Poll (all pairs: one CPU at a time) until *flag is set or timeout. */
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
		nic_wait(n, NSEC_PER_MSEC);
	}
}

/* Open NIC idx, take its frames, wait for its link and resolve its peer. */
static struct nic *open_resolved(int idx, char *msg)
{
	char m[MSG_LEN];
	struct nic *n = nic_open(idx, m);

	if (!n) {
		snprintf(msg, MSG_LEN, "net%d: %s", idx, m);
		return NULL;
	}
	n->rx = rx_ipv4;
	if (!link_up(n, m) || !arp_resolve(n, ARP_TIMEOUT, m)) {
		snprintf(msg, MSG_LEN, "net%d: %s", idx, m);
		return NULL;
	}
	return n;
}

static u64 arp_answered(struct nic *n)
{
	u64 sum = 0;

	for (int i = 0; i < n->npairs; i++)
		sum += READ_ONCE(n->pair[i].arp_answered);
	return sum;
}

/*
 * run_on_all for a job that only one CPU (or each CPU on its own part)
 * does; m (not the test's msg) gets the reason if some CPU did not finish.
 */
static bool on_cpu(void (*fn)(u64 cpu, void *arg), void *arg,
		   u64 timeout_ns, char *m)
{
	char r[MSG_LEN];

	if (run_on_all(fn, arg, timeout_ns, r))
		return true;
	snprintf(m, MSG_LEN, "%s within %lu ms", r,
		 timeout_ns / NSEC_PER_MSEC);
	return false;
}

/* ---- net ---- */

/* Append "a,b,c" style numbers to a line. */
static int add_num(char *line, int n, size_t size, u64 v)
{
	return n + snprintf(line + n, size - n, "%s%lu",
			    line[n - 1] == '=' ? "" : ",", v);
}

static bool ping_peer(struct nic *n, u64 cpu, char *line, int *ln,
		      size_t lsize, char *msg)
{
	static u8 frame[128];
	u8 data[56];
	char ip[16];

	fmt_ip(ip, n->peer_ip);
	want.ping_id = 0x4d00 + n->index + 16 * cpu;
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

/* ARP, pings and UDP echoes from this CPU; who: "net0" or "net0 cpu1 pair1" */
static bool net_round(struct nic *n, u64 cpu, const char *who, char *msg)
{
	char line[512];
	u64 t0 = clock_ns();
	int ln;

	if (!arp_resolve(n, ARP_TIMEOUT, msg))
		return false;
	ln = snprintf(line, sizeof(line), "INFO %s: peer mac "
		      "%02x:%02x:%02x:%02x:%02x:%02x arp_us=%lu", who,
		      n->peer_mac[0], n->peer_mac[1], n->peer_mac[2],
		      n->peer_mac[3], n->peer_mac[4], n->peer_mac[5],
		      (clock_ns() - t0) / 1000);
	if (!ping_peer(n, cpu, line, &ln, sizeof(line), msg) ||
	    !udp_echo(n, line, &ln, sizeof(line), msg))
		return false;
	printf("%s rx=%lu tx=%lu arp_answered=%lu irqs=%lu\n", line,
	       nic_rx_frames(n), nic_tx_frames(n), arp_answered(n),
	       nic_rx_irqs(n));
	return true;
}

struct net_job {
	struct nic *n;
	u64 cpu;		/* the one CPU that works */
	bool ok;
	char msg[MSG_LEN];
};

static void net_job_fn(u64 cpu, void *arg)
{
	struct net_job *j = arg;
	char who[48];

	if (cpu != j->cpu)
		return;
	nic_irq_cpu(j->n, cpu);
	snprintf(who, sizeof(who), "net%d cpu%lu pair%d", j->n->index, cpu,
		 nic_pair_of(j->n, cpu));
	j->n->peer_known = false;	/* ARP from here too */
	j->msg[0] = 0;
	j->ok = net_round(j->n, cpu, who, j->msg);
}

/* The check from every CPU in turn, then the pairs' use. */
static bool net_all_cpus(struct nic *n, char *msg)
{
	u64 tx0[NET_MAX_PAIRS], rx0[NET_MAX_PAIRS];
	struct net_job job = { .n = n };
	char m[MSG_LEN];

	for (int p = 0; p < n->npairs; p++) {
		tx0[p] = READ_ONCE(n->pair[p].tx_frames);
		rx0[p] = READ_ONCE(n->pair[p].rx_frames);
	}
	for (u32 cpu = 0; cpu < sys.ncpus; cpu++) {
		job.cpu = cpu;
		job.ok = false;
		if (!on_cpu(net_job_fn, &job, NET_JOB_TIMEOUT, m))
			return FAIL("net%d cpu%u: %s", n->index, cpu, m);
		if (!job.ok)
			return FAIL("net%d cpu%u pair%d: %s", n->index, cpu,
				    nic_pair_of(n, cpu), job.msg);
	}
	if (!n->mq)
		return true;
	for (int p = 0; p < n->npairs; p++) {
		u64 tx = READ_ONCE(n->pair[p].tx_frames) - tx0[p];
		u64 rx = READ_ONCE(n->pair[p].rx_frames) - rx0[p];

		printf("INFO net%d pair%d tx=%lu rx=%lu\n", n->index, p, tx,
		       rx);
		if (!tx && !rx && sys.ncpus >= (u32)n->npairs)
			return FAIL("net%d: queue pair %d carried no frames "
				    "(%u CPUs, %d pairs)", n->index, p,
				    sys.ncpus, n->npairs);
	}
	return true;
}

static bool net_check(int idx, bool all_cpus, char *msg)
{
	struct nic *n = nic_open(idx, msg);
	char ip[16], peer[16], who[16];
	bool ok;

	if (!n)
		return false;
	n->rx = rx_ipv4;
	fmt_ip(ip, n->ip);
	fmt_ip(peer, n->peer_ip);
	printf("INFO net%d: %s mac %02x:%02x:%02x:%02x:%02x:%02x ip %s peer "
	       "%s:%u mtu %u features %lx%s\n", idx, n->vd->name, n->mac[0],
	       n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5], ip,
	       peer, n->port, n->mtu, n->vd->features, n->mq ? " mq" : "");
	if (n->mq)
		printf("INFO net%d: %d queue pairs of %u (max_virtqueue_pairs)"
		       ", control queue %u\n", idx, n->npairs, n->max_pairs,
		       n->ctrl->index);
	if (!link_up(n, msg))
		return false;
	if (!all_cpus) {
		snprintf(who, sizeof(who), "net%d", idx);
		return net_round(n, 0, who, msg);
	}
	ok = net_all_cpus(n, msg);
	nic_irq_cpu(n, 0);
	return ok;
}

bool test_net(char *msg)
{
	int len, count;
	const char *v = cmdline_get("net_cpus", &len);
	bool all = v && len == 3 && !strncmp(v, "all", 3);
	char pairs[64] = "";
	bool mq = false;

	if (!virtio_probe(msg))
		return false;
	count = nic_count();
	if (!count)
		return FAIL("no virtio-net device");
	if (v && !all)
		return FAIL("net_cpus: only \"all\" is known");
	for (int i = 0; i < count; i++) {
		struct nic *n;
		int pl = strlen(pairs);

		if (!net_check(i, all, msg))
			return false;
		n = nic_open(i, msg);
		if (!n)
			return false;
		mq |= n->mq;
		snprintf(pairs + pl, sizeof(pairs) - pl, "%s%d", i ? "," : "",
			 n->npairs);
	}
	if (all)
		snprintf(msg, MSG_LEN, "%d NIC%s (queue pairs %s) x %u CPU%s: "
			 "ARP, %d pings and 6 UDP echoes each", count,
			 count > 1 ? "s" : "", pairs, sys.ncpus,
			 sys.ncpus > 1 ? "s" : "", PINGS);
	else
		snprintf(msg, MSG_LEN, "%d NIC%s%s%s%s: ARP, %d pings and 6 "
			 "UDP echoes each", count, count > 1 ? "s" : "",
			 mq ? " (queue pairs " : "", mq ? pairs : "",
			 mq ? ")" : "", PINGS);
	return true;
}

/* ---- netbench ---- */

static bool bench_poll(struct bench_cpu *b, bool all, char *msg)
{
	struct nic *n = b->n;

	if (all ? nic_poll(n) : nic_poll_pair(n, b->pair))
		return true;
	return FAIL("%s: %s", n->vd->name,
		    all ? n->error : n->pair[b->pair].error);
}

/*
 * Blast size-byte datagrams on b's pair for dur (from `start` if not 0),
 * then take late echoes for 300 ms. all: this CPU alone uses the NIC and
 * polls all its pairs; else only its own.
 */
static bool blast(struct bench_cpu *b, u64 cpu, u32 size, u64 dur,
		  u64 start, bool all, char *msg)
{
	struct nic *n = b->n;
	u32 len, c = cpu, magic = BENCH_MAGIC;
	u64 t, sent = 0;

	if (size > (u32)n->mtu - IP_HLEN - UDP_HLEN)
		size = n->mtu - IP_HLEN - UDP_HLEN;
	if (size < 8)
		return FAIL("%s: MTU %u too small", n->vd->name, n->mtu);
	b->size = size;
	for (u32 i = 0; i < size; i++)
		b->data[i] = i;
	memcpy(b->data, &magic, 4);
	memcpy(b->data + 4, &c, 4);	/* echoes are counted per sender */
	len = build_udp(n, b->frame, BENCH_SPORT, n->port, b->data, size);
	b->sent = 0;
	b->echoed0 = __atomic_load_n(&b->echoed, __ATOMIC_RELAXED);
	while (start && clock_ns() < start)
		cpu_relax();
	b->t0 = clock_ns();
	do {
		for (int i = 0; i < 32; i++)
			if (!nic_send_pair(n, b->pair, b->frame, len, false,
					   msg))
				return false;
		sent += 32;
		nic_kick_pair(n, b->pair);
		if (!bench_poll(b, all, msg))
			return false;
		t = clock_ns();
	} while (t - b->t0 < dur);
	b->sent = sent;
	b->t1 = t > b->t0 ? t : b->t0 + 1;
	/* late echoes */
	for (u64 end = clock_ns() + 300 * NSEC_PER_MSEC; clock_ns() < end;) {
		if (!bench_poll(b, all, msg))
			return false;
		nic_wait_pair(n, all ? -1 : b->pair, NSEC_PER_MSEC);
	}
	return true;
}

static u64 bench_echoed(struct bench_cpu *b)
{
	return __atomic_load_n(&b->echoed, __ATOMIC_RELAXED) - b->echoed0;
}

/* The result line; tagged: with nic=, cpu= and pair=. */
static void bench_line(struct bench_cpu *b, u64 cpu, bool tagged)
{
	u64 ns = b->t1 - b->t0, echoed = bench_echoed(b);
	char tag[64] = "";

	if (tagged)
		snprintf(tag, sizeof(tag), " nic=%d cpu=%lu pair=%d",
			 b->n->index, cpu, b->pair);
	printf("INFO bench net-udp%u%s payload=%u sent=%lu ms=%lu tx_pps=%lu "
	       "tx_mbit_s=%lu echoed=%lu echo_pps=%lu\n", b->size, tag,
	       b->size, b->sent, ns / NSEC_PER_MSEC,
	       b->sent * NSEC_PER_SEC / ns, b->sent * b->size * 8 * 1000 / ns,
	       echoed, echoed * NSEC_PER_SEC / ns);
}

struct nb_job {
	u64 cpu;		/* nb_mode=each: the CPU that works */
	u64 dur, start;
	u32 size;
};

/* nb_mode=each: both sizes on CPU j->cpu alone, the NIC in bcpu[cpu]. */
static void nb_each_fn(u64 cpu, void *arg)
{
	struct nb_job *j = arg;
	struct bench_cpu *b = &bcpu[cpu];

	if (cpu != j->cpu)
		return;
	nic_irq_cpu(b->n, cpu);
	b->msg[0] = 0;
	b->ok = false;
	for (u32 k = 0; k < ARRAY_SIZE(bench_sizes); k++) {
		if (!blast(b, cpu, bench_sizes[k], j->dur, 0, true, b->msg))
			return;
		bench_line(b, cpu, true);
	}
	b->ok = true;
}

/* nb_mode=all: every CPU on its NIC and pair at once. */
static void nb_all_fn(u64 cpu, void *arg)
{
	struct nb_job *j = arg;
	struct bench_cpu *b = &bcpu[cpu];

	b->msg[0] = 0;
	b->ok = blast(b, cpu, j->size, j->dur, j->start, false, b->msg);
}

static bool nb_default(u64 dur, char *msg)
{
	struct nic *n = open_resolved(0, msg);
	struct bench_cpu *b = &bcpu[0];

	if (!n)
		return false;
	b->n = n;
	b->pair = nic_pair_of(n, 0);
	nic_set_irq(n, false);
	for (u32 k = 0; k < ARRAY_SIZE(bench_sizes); k++) {
		if (!blast(b, 0, bench_sizes[k], dur, 0, true, msg)) {
			nic_set_irq(n, true);
			return false;
		}
		bench_line(b, 0, false);
	}
	nic_set_irq(n, true);
	snprintf(msg, MSG_LEN, "%s", n->vd->name);
	return true;
}

static bool nb_each(u64 dur, char *msg)
{
	u64 cpu = cmdline_u64("nb_cpu", 0);
	int count = nic_count();
	struct nb_job job = { .cpu = cpu, .dur = dur };
	struct bench_cpu *b = &bcpu[cpu % MAX_CPUS];
	char m[MSG_LEN];

	if (cpu >= sys.ncpus)
		return FAIL("nb_cpu=%lu but there are %u CPUs", cpu,
			    sys.ncpus);
	if (!count)
		return FAIL("no virtio-net device");
	for (int i = 0; i < count; i++) {
		struct nic *n = open_resolved(i, msg);
		bool ok;

		if (!n)
			return false;
		b->n = n;
		b->pair = nic_pair_of(n, cpu);
		b->ok = false;
		nic_set_irq(n, false);
		ok = on_cpu(nb_each_fn, &job, 2 * dur + 10 * NSEC_PER_SEC,
			    m);
		nic_set_irq(n, true);
		nic_irq_cpu(n, 0);
		if (!ok)
			return FAIL("net%d cpu%lu: %s", i, cpu, m);
		if (!b->ok)
			return FAIL("net%d cpu%lu pair%d: %s", i, cpu, b->pair,
				    b->msg);
	}
	snprintf(msg, MSG_LEN, "%d NIC%s from cpu %lu, payloads 64 and 1400",
		 count, count > 1 ? "s" : "", cpu);
	return true;
}

static bool nb_all(u64 dur, char *msg)
{
	int count = nic_count();
	struct nic *nics[NET_MAX_NICS];
	struct nb_job job = { .dur = dur };
	u64 agg_pps[ARRAY_SIZE(bench_sizes)];
	bool ok = true;
	char m[MSG_LEN];

	if (!count)
		return FAIL("no virtio-net device");
	for (int i = 0; i < count; i++)
		if (!(nics[i] = open_resolved(i, msg)))
			return false;
	for (u32 c = 0; c < sys.ncpus; c++) {
		bcpu[c].n = nics[c % count];
		bcpu[c].pair = nic_pair_of(bcpu[c].n, c);
	}
	for (int i = 0; i < count; i++)
		nic_set_irq(nics[i], false);
	for (u32 k = 0; k < ARRAY_SIZE(bench_sizes) && ok; k++) {
		u64 sent = 0, bits = 0, echoed = 0, t0 = ~0UL, t1 = 0, ns;

		job.size = bench_sizes[k];
		/* a common start, so the CPUs overlap for the whole time */
		job.start = clock_ns() + 100 * NSEC_PER_MSEC;
		if (!on_cpu(nb_all_fn, &job, dur + 10 * NSEC_PER_SEC, m)) {
			ok = FAIL("%u-byte blast: %s", job.size, m);
			break;
		}
		for (u32 c = 0; c < sys.ncpus && ok; c++)
			if (!bcpu[c].ok) {
				ok = FAIL("cpu%u (net%d pair%d): %s", c,
					  bcpu[c].n->index, bcpu[c].pair,
					  bcpu[c].msg);
			}
		if (!ok)
			break;
		for (u32 c = 0; c < sys.ncpus; c++) {
			struct bench_cpu *b = &bcpu[c];

			bench_line(b, c, true);
			sent += b->sent;
			bits += b->sent * b->size * 8;
			echoed += bench_echoed(b);
			if (b->t0 < t0)
				t0 = b->t0;
			if (b->t1 > t1)
				t1 = b->t1;
		}
		ns = t1 > t0 ? t1 - t0 : 1;
		agg_pps[k] = sent * NSEC_PER_SEC / ns;
		printf("INFO bench net-agg%u payload=%u cpus=%u tx_pps=%lu "
		       "tx_mbit_s=%lu echo_pps=%lu\n", job.size, job.size,
		       sys.ncpus, agg_pps[k], bits * 1000 / ns,
		       echoed * NSEC_PER_SEC / ns);
	}
	for (int i = 0; i < count; i++)
		nic_set_irq(nics[i], true);
	if (!ok)
		return false;
	snprintf(msg, MSG_LEN, "%u CPUs on %d NIC%s (%d queue pair%s on "
		 "net0): %lu / %lu pps sent at 64 / 1400 bytes", sys.ncpus,
		 count, count > 1 ? "s" : "", nics[0]->npairs,
		 nics[0]->npairs > 1 ? "s" : "", agg_pps[0], agg_pps[1]);
	return true;
}

bool test_netbench(char *msg)
{
	u64 dur = cmdline_u64("bench_ms", 2000) * NSEC_PER_MSEC;
	int len;
	const char *mode = cmdline_get("nb_mode", &len);

	if (!mode)
		return nb_default(dur, msg);
	if (len == 4 && !strncmp(mode, "each", 4))
		return nb_each(dur, msg);
	if (len == 3 && !strncmp(mode, "all", 3))
		return nb_all(dur, msg);
	return FAIL("nb_mode: \"each\" or \"all\" (or none)");
}

/* ---- netlat ---- */

struct nl_job {
	struct nic *n;
	u64 cpu, count, timeout;
	bool ok;
	char msg[MSG_LEN];
	u64 min, med, p99;	/* ns */
	u32 lost;
};

static void sort_u64(u64 *a, u32 n)
{
	for (u32 gap = n / 2; gap; gap /= 2)
		for (u32 i = gap; i < n; i++) {
			u64 v = a[i];
			u32 j = i;

			for (; j >= gap && a[j - gap] > v; j -= gap)
				a[j] = a[j - gap];
			a[j] = v;
		}
}

static bool nl_run(struct nl_job *j, u64 cpu, char *msg)
{
	static u8 frame[128];
	struct nic *n = j->n;
	u32 got = 0, streak = 0;

	j->lost = 0;
	want.nl_run = clock_ns() | 1;
	want.nl_cpu = cpu;
	for (u32 i = 0; i < j->count; i++) {
		struct nl_payload p = { NL_MAGIC, cpu, i, 0, want.nl_run };
		u32 len = build_udp(n, frame, NL_SPORT, n->port, &p,
				    sizeof(p));
		u64 t0, now;

		want.nl_seq = i;
		want.nl_got = false;
		t0 = clock_ns();
		if (!nic_send(n, frame, len, true, msg))
			return false;
		for (;;) {
			if (!nic_poll(n))
				return FAIL("%s: %s", n->vd->name, n->error);
			now = clock_ns();
			if (want.nl_got || now - t0 >= j->timeout)
				break;
			nic_wait(n, j->timeout - (now - t0) < NSEC_PER_MSEC ?
				 j->timeout - (now - t0) : NSEC_PER_MSEC);
		}
		if (want.nl_got) {
			nl_rtt[got++] = want.nl_rx_ns - t0;
			streak = 0;
			continue;
		}
		j->lost++;
		if (++streak >= NL_LOST_IN_A_ROW)
			return FAIL("%s: %d round trips in a row lost (%lu ms "
				    "timeout), %u of %u done", n->vd->name,
				    NL_LOST_IN_A_ROW, j->timeout /
				    NSEC_PER_MSEC, i + 1, (u32)j->count);
		if (j->lost * 10 > j->count)
			return FAIL("%s: %u of %u round trips lost (more than "
				    "10%%, %lu ms timeout)", n->vd->name,
				    j->lost, (u32)j->count,
				    j->timeout / NSEC_PER_MSEC);
	}
	sort_u64(nl_rtt, got);
	j->min = nl_rtt[0];
	j->med = nl_rtt[got / 2];
	j->p99 = nl_rtt[got * 99 / 100];
	return true;
}

static void nl_fn(u64 cpu, void *arg)
{
	struct nl_job *j = arg;

	if (cpu != j->cpu)
		return;
	nic_irq_cpu(j->n, cpu);
	j->msg[0] = 0;
	j->ok = nl_run(j, cpu, j->msg);
}

bool test_netlat(char *msg)
{
	u64 count = cmdline_u64("nl_count", 200);
	u64 timeout = cmdline_u64("nl_timeout_ms", 1000) * NSEC_PER_MSEC;
	int nics = nic_count();
	struct nl_job job = { .count = count, .timeout = timeout };
	u64 med_min = ~0UL, med_max = 0, p99_max = 0, lost = 0;
	char m[MSG_LEN];

	if (!count || count > NL_MAX)
		return FAIL("nl_count must be 1..%u", NL_MAX);
	if (!timeout)
		return FAIL("nl_timeout_ms must be at least 1");
	if (!nics)
		return FAIL("no virtio-net device");
	for (int i = 0; i < nics; i++) {
		struct nic *n = open_resolved(i, msg);

		if (!n)
			return false;
		job.n = n;
		nic_set_irq(n, true);
		for (u32 cpu = 0; cpu < sys.ncpus; cpu++) {
			bool ok;

			job.cpu = cpu;
			job.ok = false;
			ok = on_cpu(nl_fn, &job, count * timeout +
				    10 * NSEC_PER_SEC, m);
			nic_irq_cpu(n, 0);
			if (!ok)
				return FAIL("net%d cpu%u: %s", i, cpu, m);
			if (!job.ok)
				return FAIL("net%d cpu%u pair%d: %s", i, cpu,
					    nic_pair_of(n, cpu), job.msg);
			printf("INFO bench netlat nic=%d cpu=%u pair=%d "
			       "rtt_min_us=%lu rtt_med_us=%lu rtt_p99_us=%lu "
			       "lost=%u\n", i, cpu, nic_pair_of(n, cpu),
			       job.min / 1000, job.med / 1000, job.p99 / 1000,
			       job.lost);
			if (job.med < med_min)
				med_min = job.med;
			if (job.med > med_max)
				med_max = job.med;
			if (job.p99 > p99_max)
				p99_max = job.p99;
			lost += job.lost;
		}
	}
	snprintf(msg, MSG_LEN, "%d NIC%s x %u CPU%s x %lu round trips: median "
		 "%lu-%lu us, worst p99 %lu us, %lu lost", nics,
		 nics > 1 ? "s" : "", sys.ncpus, sys.ncpus > 1 ? "s" : "",
		 count, med_min / 1000, med_max / 1000, p99_max / 1000, lost);
	return true;
}

/* ---- netfail ---- */

bool test_netfail(char *msg)
{
	static u8 frame[128];
	u64 interval = cmdline_u64("nf_interval_us", 1000) * NSEC_PER_USEC;
	u64 wait = cmdline_u64("nf_wait_ms", 60000) * NSEC_PER_MSEC;
	u64 after = cmdline_u64("nf_after", 200);
	u64 seq = 0, seq_move = 0, skipped = 0, cfg0, cfg_seen;
	u64 now, next, t_start, t_armed = 0, t_move = 0, seen_after = 0;
	int count = nic_count(), active = 0;
	bool armed = false;
	struct nic *nn[2];

	if (!interval)
		return FAIL("nf_interval_us must be at least 1");
	if (!after)
		after = 1;
	if (count < 2)
		return FAIL("needs 2 virtio-net devices, found %d", count);
	for (int i = 0; i < 2; i++) {
		if (!(nn[i] = open_resolved(i, msg)))
			return false;
		nic_set_irq(nn[i], true);
		nic_irq_cpu(nn[i], cpu_id());
	}
	if (!nic_has_link_status(nn[0]))
		return FAIL("net0 (%s) does not report its link status "
			    "(VIRTIO_NET_F_STATUS not negotiated)",
			    nn[0]->vd->name);
	memset(&nf, 0, sizeof(nf));
	nf.run = clock_ns() | 1;
	cfg0 = cfg_seen = virtio_config_irqs(nn[0]->vd);
	t_start = next = clock_ns();
	for (;;) {
		struct nic *a = nn[active];

		now = clock_ns();
		if (!active) {
			u64 cfg = virtio_config_irqs(nn[0]->vd);
			bool up = nic_link(nn[0]);

			if (cfg != cfg_seen) {
				printf("INFO netfail: net0 configuration "
				       "interrupt (%lu so far), link %s\n",
				       cfg - cfg0, up ? "up" : "down");
				cfg_seen = cfg;
			}
			if (!up) {
				u64 since = now - (nf.last_rx[0] ?
						   nf.last_rx[0] : t_start);

				active = 1;
				seq_move = seq;
				t_move = next = now;
				printf("INFO netfail: net0 link down after seq "
				       "%lu, moved to net1 in %lu us (since "
				       "the last echo on net0; %lu config "
				       "interrupts)\n", seq ? seq - 1 : 0,
				       since / 1000, cfg - cfg0);
				continue;
			}
		}
		if (now >= next) {
			struct nf_payload p = { NF_MAGIC, active, nf.run, seq,
						now };

			if (nic_tx_free(a, nic_pair_of(a, cpu_id()))) {
				u32 len = build_udp(a, frame, NF_SPORT, a->port,
						    &p, sizeof(p));
				char m[MSG_LEN];

				if (!nic_send(a, frame, len, true, m))
					return FAIL("net%d: %s", active, m);
				seq++;
			} else {
				skipped++;	/* never block on a full ring */
			}
			next += interval;
			if (next <= now)
				next = now + interval;
		}
		if (!nic_poll(a))
			return FAIL("net%d: %s: %s", active, a->vd->name,
				    a->error);
		if (!active && !nic_poll(nn[1]))
			return FAIL("net1: %s: %s", nn[1]->vd->name,
				    nn[1]->error);
		now = clock_ns();	/* not before the echoes just seen */
		if (!armed && nf.echoes[0] >= NF_ARM_ECHOES) {
			armed = true;
			t_armed = now;
			printf("INFO netfail: sending on net0\n");
		}
		if (!active) {
			if (!armed && now - t_start > NF_STEP_TIMEOUT)
				return FAIL("net0: only %lu of %u echoes in "
					    "%lu ms (%lu datagrams sent)",
					    nf.echoes[0], NF_ARM_ECHOES,
					    NF_STEP_TIMEOUT / NSEC_PER_MSEC,
					    seq);
			if (armed && now - t_armed > wait)
				return FAIL("net0's link did not go down within "
					    "%lu ms (%lu echoes up to seq %lu, "
					    "%lu config interrupts)",
					    wait / NSEC_PER_MSEC, nf.echoes[0],
					    seq, cfg_seen - cfg0);
		} else {
			seen_after = nf.echoes[1];
			if (seen_after >= after)
				break;
			if (!seen_after && now - t_move > NF_STEP_TIMEOUT)
				return FAIL("net1: no echo within %lu ms of the "
					    "move (%lu datagrams sent on it)",
					    NF_STEP_TIMEOUT / NSEC_PER_MSEC,
					    seq - seq_move);
			if (seen_after && now - nf.first_rx1 >
			    NF_STEP_TIMEOUT + 4 * after * interval)
				return FAIL("net1: only %lu of %lu echoes in "
					    "%lu ms after the first",
					    seen_after, after,
					    (now - nf.first_rx1) /
					    NSEC_PER_MSEC);
		}
		now = clock_ns();
		if (next > now)
			nic_wait(a, next - now < NSEC_PER_MSEC ? next - now :
				 NSEC_PER_MSEC);
	}
	if (skipped)
		printf("INFO netfail: %lu slots skipped (transmit ring full)\n",
		       skipped);
	/* Counted now: the status may have been read before it arrived. */
	cfg_seen = virtio_config_irqs(nn[0]->vd);
	if (cfg_seen == cfg0)
		return FAIL("net0's link went down without a configuration "
			    "interrupt (%lu ms later)", (clock_ns() - t_move) /
			    NSEC_PER_MSEC);
	snprintf(msg, MSG_LEN, "moved after seq %lu: gap %lu us from the last "
		 "echo on net0 to the first on net1; %lu echoes on net0, %lu "
		 "on net1, %lu config irqs", seq_move ? seq_move - 1 : 0,
		 nf.last_rx[0] ? (nf.first_rx1 - nf.last_rx[0]) / 1000 :
		 (nf.first_rx1 - t_move) / 1000, nf.echoes[0], seen_after,
		 cfg_seen - cfg0);
	return true;
}
