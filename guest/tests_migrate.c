/*
 * tests_migrate.c - long-running workloads for testing and benchmarking
 * live migration (only on request; they pass without a migration too):
 *
 * - `dirty`: user-mode page dirtying of a working set in free RAM at a
 *   set rate; every page is stamped (pass, page, checksum), checked
 *   before it is rewritten and once more at the end, so a page a
 *   migration lost or left stale is found.
 * - `blkstream`: 4 KiB writes of a deterministic pattern on the first
 *   virtio-blk disk, several in flight, FLUSHes in between; at the end
 *   every block must read back as its last write (the host checks the
 *   image with tests/tools/blkstream_check).
 * - `udpstream`: a steady stream of datagrams to the peer's UDP echo
 *   server on the first virtio-net NIC; reports losses and the longest
 *   gap between echoes.
 *
 * All run on CPU 0 in user mode and time themselves with kvmclock, which
 * keeps running across a migration. Formats and parameters: README.md.
 */
#include "net.h"

#define PAGE		4096UL
#define PAGE_WORDS	512
#define GOLDEN		0x9e3779b97f4a7c15UL

/* splitmix64's finaliser */
static u64 mix64(u64 x)
{
	x += GOLDEN;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* ---- dirty ---- */

/*
 * Write `pass` of page p: word 0 = DIRTY_MAGIC ^ pass, word 1 = p, word
 * 2 = sum = mix64(pass << 32 ^ p), word j >= 3 = sum + j * GOLDEN.
 */
#define DIRTY_MAGIC	0x5954524944000000ULL	/* "DIRTY" in bytes 3-7 */
#define DIRTY_BURST	16	/* pages between clock reads at full speed */
#define DIRTY_TICK	NSEC_PER_MSEC	/* pacing period */
#define DIRTY_BACKLOG	(10 * NSEC_PER_MSEC)	/* dropped if further behind */

static u64 dirty_sum(u64 pass, u64 page)
{
	return mix64(pass << 32 ^ page);
}

/*
 * Rewrite page p with write `pass`. If check, the page must first hold
 * write pass - 1: returns the first word that does not (words 0-2 are
 * compared first and written last, so the old stamp stays readable), or
 * -1 when the page was rewritten.
 */
static int dirty_write(u64 *w, u64 page, u64 pass, bool check)
{
	u64 new = dirty_sum(pass, page), v = new + 3 * GOLDEN;

	if (check) {
		u64 old = dirty_sum(pass - 1, page), o = old + 3 * GOLDEN;

		if (w[0] != (DIRTY_MAGIC ^ (pass - 1)))
			return 0;
		if (w[1] != page)
			return 1;
		if (w[2] != old)
			return 2;
		for (int j = 3; j < PAGE_WORDS; j++, o += GOLDEN, v += GOLDEN) {
			if (w[j] != o)
				return j;
			w[j] = v;
		}
	} else {
		for (int j = 3; j < PAGE_WORDS; j++, v += GOLDEN)
			w[j] = v;
	}
	w[2] = new;
	w[1] = page;
	w[0] = DIRTY_MAGIC ^ pass;
	return -1;
}

/* The first word of page p that is not write `pass`, or -1. */
static int dirty_verify(const u64 *w, u64 page, u64 pass)
{
	u64 sum = dirty_sum(pass, page), v = sum + 3 * GOLDEN;

	if (w[0] != (DIRTY_MAGIC ^ pass))
		return 0;
	if (w[1] != page)
		return 1;
	if (w[2] != sum)
		return 2;
	for (int j = 3; j < PAGE_WORDS; j++, v += GOLDEN)
		if (w[j] != v)
			return j;
	return -1;
}

static bool dirty_bad(const u64 *w, u64 page, u64 pass, int word,
		      const char *when, char *msg)
{
	u64 sum = dirty_sum(pass, page);
	u64 want = word == 0 ? DIRTY_MAGIC ^ pass : word == 1 ? page :
		   sum + word * GOLDEN;

	printf("INFO dirty: %s, page %lu at %p word %d: %lx, expected %lx\n",
	       when, page, (void *)w, word, w[word], want);
	return FAIL("page %lu (%p): expected stamp pass %lu page %lu sum "
		    "%lx, found pass %ld page %lu sum %lx (word %d)", page,
		    (void *)w, pass, page, sum, (s64)(w[0] ^ DIRTY_MAGIC),
		    w[1], w[2], word);
}

bool test_dirty(char *msg)
{
	u64 mb = cmdline_u64("dirty_mb", 32);
	u64 rate = cmdline_u64("dirty_rate", 0);	/* 10^6 bytes/s */
	u64 secs = cmdline_u64("dirty_secs", 5);
	u64 npages = mb * (1 << 20) / PAGE, base;
	u64 page = 0, pass = 0, writes = 0, stalls = 0;
	u64 t0, end, now, pstart, pwrites, backlog, ms, achieved;

	if (!mb)
		return FAIL("dirty_mb=0");
	base = free_ram_block(mb << 20);
	if (!base)
		return FAIL("no free block of %lu MiB (RAM %lu MiB)", mb,
			    sys.ram_bytes >> 20);
	/* pages written per ns = rate * 10^6 / 10^9 / 4096 */
	backlog = DIRTY_BACKLOG * rate / 4096000 + 1;
	t0 = pstart = now = clock_ns();
	pwrites = 0;
	end = t0 + secs * NSEC_PER_SEC;
	while (now < end) {
		u64 n = DIRTY_BURST;

		if (rate) {
			u64 due = (now - pstart) * rate / 4096000;

			if (due > pwrites + backlog) {
				/* stalled (a migration's downtime?) */
				stalls++;
				pstart = now;
				pwrites = 0;
				due = 0;
			}
			n = due - pwrites;
			if (!n) {
				sleep_ns(DIRTY_TICK);
				now = clock_ns();
				continue;
			}
		}
		for (u64 i = 0; i < n; i++) {
			u64 *w = (u64 *)(base + page * PAGE);
			int bad = dirty_write(w, page, pass, pass > 0);

			if (bad >= 0)
				return dirty_bad(w, page, pass - 1, bad,
						 "before rewriting", msg);
			writes++;
			pwrites++;
			if (++page == npages) {
				page = 0;
				pass++;
			}
		}
		now = clock_ns();
	}
	ms = (now - t0) / NSEC_PER_MSEC;
	/* MB/s, rounded: bytes per ns * 1000 */
	achieved = now > t0 ? (writes * PAGE * 1000 + (now - t0) / 2) /
				      (now - t0) : 0;
	printf("INFO dirty mb=%lu rate_mbps=%lu writes=%lu passes=%lu "
	       "target_mbps=%lu ms=%lu stalls=%lu base=%p\n", mb, achieved,
	       writes, pass, rate, ms, stalls, (void *)base);
	/* page p holds write `pass` if p < page, else pass - 1 (if any) */
	for (u64 p = 0; p < npages; p++) {
		u64 *w = (u64 *)(base + p * PAGE);
		u64 last = p < page ? pass : pass - 1;
		int bad;

		if (p >= page && !pass)
			break;
		bad = dirty_verify(w, p, last);
		if (bad >= 0)
			return dirty_bad(w, p, last, bad, "final check", msg);
	}
	snprintf(msg, MSG_LEN, "verified %lu page writes at %lu MB/s (%lu "
		 "MiB, %lu passes, %lu ms, target %lu MB/s)", writes, achieved,
		 mb, pass, ms, rate);
	return true;
}

/* ---- blkstream ---- */

#define VIRTIO_BLK_F_SIZE_MAX	1
#define VIRTIO_BLK_F_SEG_MAX	2
#define VIRTIO_BLK_F_RO		5
#define VIRTIO_BLK_F_FLUSH	9
#define VIRTIO_BLK_T_IN		0
#define VIRTIO_BLK_T_OUT	1
#define VIRTIO_BLK_T_FLUSH	4
#define VIRTIO_BLK_S_OK		0

#define BS_MAGIC	0x5254534b4c42ULL	/* "BLKSTR" little-endian */
#define BS_SLOTS	32
#define BS_TIMEOUT	(10 * NSEC_PER_SEC)
#define BS_MAX_SEGS	(VQ_INDIRECT_MAX - 2)

struct bs_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

struct bs_slot {
	struct bs_hdr hdr;
	u8 status;
	bool busy;
	u32 type;
	u64 s;			/* write number (reads: the one expected) */
	u64 block;
	u64 *buf;		/* 4 KiB */
	u64 t;			/* submitted at (kvmclock) */
};

static struct {
	struct vdev *vd;
	struct vq *q;
	struct bs_slot *slots;	/* DMA */
	u8 *data;		/* DMA, BS_SLOTS * 4 KiB */
	u32 seg;		/* data bytes per descriptor */
	int inflight;
} bs;

/*
 * Write s of block b with seed: word 0 = BS_MAGIC ^ seed << 48, word 1 =
 * s, word 2 = b, word j >= 3 = mix64(h ^ j), h = mix64(mix64(seed) ^ s).
 */
static void bs_fill(u64 *w, u64 seed, u64 s, u64 block)
{
	u64 h = mix64(mix64(seed) ^ s);

	w[0] = BS_MAGIC ^ seed << 48;
	w[1] = s;
	w[2] = block;
	for (u64 j = 3; j < PAGE_WORDS; j++)
		w[j] = mix64(h ^ j);
}

/* The first word that differs from write s of block b, or -1. */
static int bs_check(const u64 *w, u64 seed, u64 s, u64 block)
{
	u64 h = mix64(mix64(seed) ^ s);

	if (w[0] != (BS_MAGIC ^ seed << 48))
		return 0;
	if (w[1] != s)
		return 1;
	if (w[2] != block)
		return 2;
	for (u64 j = 3; j < PAGE_WORDS; j++)
		if (w[j] != mix64(h ^ j))
			return j;
	return -1;
}

/*
 * Queue a request (not kicked): a 4 KiB block, or a FLUSH. A write's
 * data is filled in here, before the request is visible in the ring: a
 * device still working the queue may take it without a kick.
 */
static struct bs_slot *bs_submit(u32 type, u64 block, u64 s, u64 seed,
				 char *msg)
{
	struct vbuf v[BS_MAX_SEGS + 2];
	struct bs_slot *sl = NULL;
	int i, n = 0;

	for (i = 0; i < BS_SLOTS && !sl; i++)
		if (!bs.slots[i].busy)
			sl = &bs.slots[i];
	if (!sl) {
		snprintf(msg, MSG_LEN, "no free request slot");
		return NULL;
	}
	if (type == VIRTIO_BLK_T_OUT)
		bs_fill(sl->buf, seed, s, block);
	sl->hdr = (struct bs_hdr){ type, 0, type == VIRTIO_BLK_T_FLUSH ? 0 :
				   block * (PAGE / 512) };
	sl->status = 0xff;
	sl->type = type;
	sl->s = s;
	sl->block = block;
	v[n++] = (struct vbuf){ (u64)&sl->hdr, sizeof(sl->hdr), false };
	if (type != VIRTIO_BLK_T_FLUSH)
		for (u32 off = 0; off < PAGE; off += bs.seg)
			v[n++] = (struct vbuf){ (u64)sl->buf + off, bs.seg,
						type == VIRTIO_BLK_T_IN };
	v[n++] = (struct vbuf){ (u64)&sl->status, 1, true };
	if (vq_add(bs.q, v, n, sl, n > 3)) {
		snprintf(msg, MSG_LEN, "%s: no room in the queue for a "
			 "%d-descriptor request", bs.vd->name, n);
		return NULL;
	}
	sl->busy = true;
	sl->t = clock_ns();
	bs.inflight++;
	return sl;
}

/* Wait for one completion; its slot, or NULL (msg set). */
static struct bs_slot *bs_complete(char *msg)
{
	struct bs_slot *sl;
	void *cookie;
	u32 len;

	if (!vq_wait(bs.q, BS_TIMEOUT)) {
		bs.vd->broken = true;
		snprintf(msg, MSG_LEN, "%s: %d requests in flight, none "
			 "completed in %lu s", bs.vd->name, bs.inflight,
			 BS_TIMEOUT / NSEC_PER_SEC);
		return NULL;
	}
	if (vq_get(bs.q, &cookie, &len) != 1) {
		snprintf(msg, MSG_LEN, "%s: %s", bs.vd->name, bs.q->error);
		return NULL;
	}
	sl = cookie;
	if (sl < bs.slots || sl >= bs.slots + BS_SLOTS || !sl->busy) {
		bs.vd->broken = true;
		snprintf(msg, MSG_LEN, "%s: completion for unknown request %p",
			 bs.vd->name, sl);
		return NULL;
	}
	sl->busy = false;
	bs.inflight--;
	return sl;
}

static bool bs_block_busy(u64 block)
{
	for (int i = 0; i < BS_SLOTS; i++)
		if (bs.slots[i].busy && bs.slots[i].type == VIRTIO_BLK_T_OUT &&
		    bs.slots[i].block == block)
			return true;
	return false;
}

static bool bs_status(struct bs_slot *sl, char *msg)
{
	if (sl->status == VIRTIO_BLK_S_OK)
		return true;
	if (sl->type == VIRTIO_BLK_T_FLUSH)
		return FAIL("FLUSH: status %u", sl->status);
	return FAIL("%s of block %lu (write %lu): status %u",
		    sl->type == VIRTIO_BLK_T_OUT ? "write" : "read", sl->block,
		    sl->s, sl->status);
}

static bool bs_flush_sync(char *msg)
{
	struct bs_slot *sl;

	if (!bs_submit(VIRTIO_BLK_T_FLUSH, 0, 0, 0, msg))
		return false;
	vq_kick(bs.q);
	sl = bs_complete(msg);
	return sl && bs_status(sl, msg);
}

static bool bs_setup(u64 nblocks, int *qd, char *msg)
{
	struct blk *b = blk_open(0, msg);
	u32 size_max = 0, seg_max = 0, segs;

	if (!b)
		return false;
	bs.vd = virtio_find(VIRTIO_ID_BLOCK, 0);
	bs.q = &bs.vd->vq[0];
	bs.inflight = 0;
	if (virtio_has(bs.vd, VIRTIO_BLK_F_RO))
		return FAIL("%s is read-only", bs.vd->name);
	if (blk_capacity(b) / (PAGE / 512) < nblocks)
		return FAIL("%s: %lu sectors, bs_blocks=%lu needs %lu",
			    bs.vd->name, blk_capacity(b), nblocks,
			    nblocks * (PAGE / 512));
	if (!bs.slots) {
		bs.slots = dma_alloc(sizeof(struct bs_slot) * BS_SLOTS, 64);
		bs.data = dma_alloc(BS_SLOTS * PAGE, PAGE);
		if (!bs.slots || !bs.data)
			return FAIL("DMA arena exhausted");
	}
	for (int i = 0; i < BS_SLOTS; i++) {
		bs.slots[i].busy = false;
		bs.slots[i].buf = (u64 *)(bs.data + i * PAGE);
	}
	/* a block in descriptors of at most size_max bytes */
	if (virtio_has(bs.vd, VIRTIO_BLK_F_SIZE_MAX))
		virtio_cfg_read(bs.vd, 8, &size_max, 4);
	if (virtio_has(bs.vd, VIRTIO_BLK_F_SEG_MAX))
		virtio_cfg_read(bs.vd, 12, &seg_max, 4);
	bs.seg = PAGE;
	while (size_max && bs.seg > size_max && bs.seg > 512)
		bs.seg /= 2;
	segs = PAGE / bs.seg;
	if (bs.seg > size_max && size_max)
		return FAIL("%s: size_max %u", bs.vd->name, size_max);
	if (segs > BS_MAX_SEGS || (seg_max && segs > seg_max))
		return FAIL("%s: size_max %u, seg_max %u: a 4 KiB block "
			    "needs %u segments", bs.vd->name, size_max,
			    seg_max, segs);
	/* ring room (one descriptor each if indirect, else segs + 2) with
	 * 2 left for a FLUSH */
	if (segs > 1 && virtio_has(bs.vd, VIRTIO_F_INDIRECT_DESC))
		segs = 0;
	if (*qd > (bs.q->size - 2) / (int)(segs + 2))
		*qd = (bs.q->size - 2) / (segs + 2);
	if (*qd > BS_SLOTS - 1)
		*qd = BS_SLOTS - 1;	/* one slot kept for the FLUSH */
	if ((u64)*qd > nblocks)
		*qd = nblocks;
	return true;
}

/*
 * Read back blocks [0, min(nblocks, writes)), qd at a time: block b must
 * hold the last write to it, b + N * ((writes - 1 - b) / N).
 */
static bool bs_verify(u64 nblocks, u64 writes, u64 seed, int qd, char *msg)
{
	u64 want = writes < nblocks ? writes : nblocks, next = 0, done = 0;

	while (done < want) {
		struct bs_slot *sl;
		int bad;

		while (bs.inflight < qd && next < want) {
			u64 s = next + nblocks * ((writes - 1 - next) / nblocks);

			if (!bs_submit(VIRTIO_BLK_T_IN, next, s, seed, msg))
				return false;
			next++;
		}
		vq_kick(bs.q);
		sl = bs_complete(msg);
		if (!sl || !bs_status(sl, msg))
			return false;
		bad = bs_check(sl->buf, seed, sl->s, sl->block);
		if (bad >= 0) {
			printf("INFO blkstream: block %lu word %d: %lx\n",
			       sl->block, bad, sl->buf[bad]);
			return FAIL("block %lu: expected write %lu, found write "
				    "%lu (word %d differs)", sl->block, sl->s,
				    sl->buf[1], bad);
		}
		done++;
	}
	return true;
}

bool test_blkstream(char *msg)
{
	u64 nblocks = cmdline_u64("bs_blocks", 256);
	u64 secs = cmdline_u64("bs_secs", 5);
	u64 every = cmdline_u64("bs_flush", 8);
	u64 seed = cmdline_u64("bs_seed", 1);
	u64 want_qd = cmdline_u64("bs_qd", 8);
	int qd = want_qd > BS_SLOTS ? BS_SLOTS : (int)want_qd;
	u64 writes = 0, done = 0, flushes = 0, flush_done = 0;
	u64 t0, end, now, ncompl = 0, inflight_sum = 0, lat_max = 0, ms;
	bool flushing = false, can_flush;

	if (!nblocks || qd < 1)
		return FAIL("bs_blocks and bs_qd must be at least 1");
	if (!bs_setup(nblocks, &qd, msg))
		return false;
	can_flush = virtio_has(bs.vd, VIRTIO_BLK_F_FLUSH);
	if (!can_flush)
		printf("INFO blkstream: %s has no FLUSH feature\n",
		       bs.vd->name);
	t0 = now = clock_ns();
	end = t0 + secs * NSEC_PER_SEC;
	for (;;) {
		bool stop = now >= end;
		struct bs_slot *sl;

		/* in order; never two writes to one block in flight */
		while (!stop && !flushing && bs.inflight < qd &&
		       !bs_block_busy(writes % nblocks)) {
			if (!bs_submit(VIRTIO_BLK_T_OUT, writes % nblocks,
				       writes, seed, msg))
				return false;
			writes++;
		}
		if (!bs.inflight)
			break;
		vq_kick(bs.q);
		inflight_sum += bs.inflight;
		ncompl++;
		sl = bs_complete(msg);
		now = clock_ns();
		if (!sl || !bs_status(sl, msg))
			return false;
		if (now - sl->t > lat_max)
			lat_max = now - sl->t;
		if (sl->type == VIRTIO_BLK_T_FLUSH) {
			flushes++;
			flushing = false;
		} else {
			done++;
		}
		/* a FLUSH after every `every` completed writes, waited for */
		if (can_flush && every && !flushing && !stop &&
		    done - flush_done >= every) {
			if (!bs_submit(VIRTIO_BLK_T_FLUSH, 0, 0, 0, msg))
				return false;
			flushing = true;
			flush_done = done;
		}
	}
	ms = (now - t0) / NSEC_PER_MSEC;
	if (can_flush) {
		if (!bs_flush_sync(msg))
			return false;
		flushes++;
	}
	printf("INFO blkstream writes=%lu flushes=%lu blocks=%lu seed=%lu "
	       "qd=%d ms=%lu iops=%lu avg_inflight=%lu.%02lu max_lat_us=%lu\n",
	       writes, flushes, nblocks, seed, qd, ms,
	       ms ? writes * 1000 / ms : 0,
	       ncompl ? inflight_sum / ncompl : 0,
	       ncompl ? inflight_sum * 100 / ncompl % 100 : 0,
	       lat_max / NSEC_PER_USEC);
	if (!bs_verify(nblocks, writes, seed, qd, msg))
		return false;
	snprintf(msg, MSG_LEN, "%lu writes, %lu flushes verified (%lu blocks, "
		 "seed %lu, qd %d, %lu ms)", writes, flushes, nblocks, seed,
		 qd, ms);
	return true;
}

/* ---- udpstream ---- */

#define US_MAGIC	0x53504455U	/* "UDPS" */
#define US_SPORT	42000
#define US_MAX_SEQ	(1U << 21)
#define US_DRAIN	(500 * NSEC_PER_MSEC)

struct us_payload {
	u32 magic, run;
	u64 seq, sent_ns;
};

static u64 us_seen[US_MAX_SEQ / 64];

static struct {
	u32 run;
	u64 sent, echoed, dup, ooo, other;
	u64 next_seq;		/* one past the highest seq echoed */
	u64 last_rx, max_gap, rtt_sum, rtt_max;
} us;

static void us_rx(struct nic *n, int pair, const u8 *f, u32 len)
{
	const struct ip_hdr *ip = (const void *)(f + ETH_HLEN);
	const struct udp_hdr *u;
	struct us_payload p;
	u32 ihl, tot;
	u64 now;

	(void)pair;
	if (len < ETH_HLEN + IP_HLEN || (ip->vihl >> 4) != 4)
		return;
	ihl = (ip->vihl & 15) * 4;
	tot = ntohs(ip->len);
	if (ihl < IP_HLEN || tot < ihl + UDP_HLEN + sizeof(p) ||
	    ETH_HLEN + tot > len || ip->proto != IPPROTO_UDP ||
	    ntohl(ip->src) != n->peer_ip || ntohl(ip->dst) != n->ip)
		return;
	u = (const void *)((const u8 *)ip + ihl);
	if (ntohs(u->sport) != n->port || ntohs(u->dport) != US_SPORT ||
	    ntohs(u->len) < UDP_HLEN + sizeof(p))
		return;
	memcpy(&p, u + 1, sizeof(p));
	if (p.magic != US_MAGIC || p.run != us.run || p.seq >= us.sent) {
		us.other++;
		return;
	}
	now = clock_ns();
	if (us.last_rx && now - us.last_rx > us.max_gap)
		us.max_gap = now - us.last_rx;
	us.last_rx = now;
	if (us_seen[p.seq / 64] & 1ULL << p.seq % 64) {
		us.dup++;
		return;
	}
	us_seen[p.seq / 64] |= 1ULL << p.seq % 64;
	us.echoed++;
	if (p.seq < us.next_seq)
		us.ooo++;
	else
		us.next_seq = p.seq + 1;
	if (now >= p.sent_ns) {
		us.rtt_sum += now - p.sent_ns;
		if (now - p.sent_ns > us.rtt_max)
			us.rtt_max = now - p.sent_ns;
	}
}

bool test_udpstream(char *msg)
{
	static u8 frame[128];
	u64 secs = cmdline_u64("us_secs", 5);
	u64 interval = cmdline_u64("us_interval_us", 1000) * NSEC_PER_USEC;
	struct nic *n = nic_open(0, msg);
	char m[MSG_LEN], peer[16];
	u64 t0, end, next, now, late = 0, lost, gap_ms, allowed;
	bool capped = false;

	if (!n)
		return false;
	if (!interval)
		return FAIL("us_interval_us must be at least 1");
	n->rx = us_rx;
	if (!link_up(n, msg))
		return false;
	fmt_ip(peer, n->peer_ip);
	if (!arp_resolve(n, 3 * NSEC_PER_SEC, m))
		return FAIL("ARP for the peer %s failed: %s", peer, m);
	memset(us_seen, 0, sizeof(us_seen));
	memset(&us, 0, sizeof(us));
	us.run = clock_ns() | 1;
	t0 = next = now = clock_ns();
	end = t0 + secs * NSEC_PER_SEC;
	while (now < end) {
		if (now >= next) {
			struct us_payload p = { US_MAGIC, us.run, us.sent,
						now };
			u32 len;

			if (us.sent == US_MAX_SEQ) {
				capped = true;
				break;
			}
			len = build_udp(n, frame, US_SPORT, n->port, &p,
					sizeof(p));
			if (!nic_send(n, frame, len, true, msg))
				return false;
			us.sent++;
			next += interval;
			if (next <= now) {	/* fell behind: skip slots */
				late += (now - next) / interval + 1;
				next = now + interval;
			}
		}
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		now = clock_ns();
		if (now < next && now < end)
			nic_wait(n, (next < end ? next : end) - now);
		now = clock_ns();
	}
	for (u64 dend = now + US_DRAIN;
	     us.echoed < us.sent && clock_ns() < dend;) {
		if (!nic_poll(n))
			return FAIL("%s: %s", n->vd->name, n->error);
		nic_wait(n, NSEC_PER_MSEC);
	}
	lost = us.sent - us.echoed;
	gap_ms = us.max_gap / NSEC_PER_MSEC;
	allowed = us.max_gap / interval + 2;
	printf("INFO udpstream sent=%lu echoed=%lu lost=%lu max_gap_ms=%lu "
	       "interval_us=%lu max_gap_us=%lu dup=%lu ooo=%lu late_slots=%lu "
	       "rtt_avg_us=%lu rtt_max_us=%lu peer=%s:%u\n", us.sent,
	       us.echoed, lost, gap_ms, interval / NSEC_PER_USEC,
	       us.max_gap / NSEC_PER_USEC, us.dup, us.ooo, late,
	       us.echoed ? us.rtt_sum / us.echoed / NSEC_PER_USEC : 0,
	       us.rtt_max / NSEC_PER_USEC, peer, n->port);
	if (capped)
		printf("INFO udpstream: stopped sending at %u datagrams\n",
		       US_MAX_SEQ);
	if (!us.echoed)
		return FAIL("none of %lu datagrams to %s:%u was echoed",
			    us.sent, peer, n->port);
	if (lost > allowed)
		return FAIL("%lu of %lu datagrams lost, more than fit the "
			    "longest gap between echoes (%lu ms at %lu us: "
			    "%lu)", lost, us.sent, gap_ms,
			    interval / NSEC_PER_USEC, allowed);
	snprintf(msg, MSG_LEN, "%lu datagrams, %lu echoed, %lu lost, longest "
		 "gap %lu ms", us.sent, us.echoed, lost, gap_ms);
	return true;
}
