/*
 * tests_blk.c - the virtio-blk driver (requests of up to 128 KiB, several
 * in flight, direct or indirect descriptors, split by size_max) and the
 * `blk` and `blkbench` tests.
 *
 * `blk` writes the pattern below over the whole disk (128 KiB requests,
 * 8 in flight, alternating direct and indirect descriptors), flushes,
 * reads it all back with request sizes from 4 KiB to 128 KiB and
 * verifies it; GET_ID; a read-only disk must reject a write with IOERR.
 * The host test checks the image file afterwards, so the pattern is part
 * of the interface (README.md): sector s (512 bytes) is 64 little-endian
 * 64-bit words, word j = (seed << 48) ^ (s << 8) ^ j, seed = blk_seed
 * (default 1) mod 65536.
 */
#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX	1
#define VIRTIO_BLK_F_SEG_MAX	2
#define VIRTIO_BLK_F_RO		5
#define VIRTIO_BLK_F_BLK_SIZE	6
#define VIRTIO_BLK_F_FLUSH	9

#define VIRTIO_BLK_T_IN		0
#define VIRTIO_BLK_T_OUT	1
#define VIRTIO_BLK_T_FLUSH	4
#define VIRTIO_BLK_T_GET_ID	8
#define VIRTIO_BLK_S_OK		0
#define VIRTIO_BLK_S_IOERR	1
#define VIRTIO_BLK_S_UNSUPP	2

#define SECTOR		512
#define MAX_REQ		(128 * 1024)
#define BLK_SLOTS	32
#define DATA_AREA	(1024 * 1024)	/* split between the slots in flight */
#define BLK_TIMEOUT	(10 * NSEC_PER_SEC)
#define MAX_SEGS	(VQ_INDIRECT_MAX - 2)

struct blk_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

/* One request's device-visible parts and bookkeeping. */
struct blk_slot {
	struct blk_hdr hdr;
	u8 status;
	bool busy;
	u32 type, len;
	u64 sector;
	u8 *buf;
	u64 tsc;		/* submitted at */
};

struct blk {
	struct vdev *vd;
	struct vq *q;
	u64 capacity;		/* sectors */
	u32 size_max, seg_max, blk_size;
	u32 max_req;		/* bytes per request we use */
	bool ro, flush;
	struct blk_slot *slots;	/* DMA */
	u8 *data;		/* DMA, DATA_AREA */
	int inflight;
};

static struct blk blks[4];

/* ---- driver ---- */

u64 blk_capacity(struct blk *b)
{
	return b->capacity;
}

struct blk *blk_open(int n, char *msg)
{
	struct vdev *vd;
	struct blk *b;
	u64 want = BIT(VIRTIO_BLK_F_SIZE_MAX) | BIT(VIRTIO_BLK_F_SEG_MAX) |
		   BIT(VIRTIO_BLK_F_RO) | BIT(VIRTIO_BLK_F_BLK_SIZE) |
		   BIT(VIRTIO_BLK_F_FLUSH);

	if (!virtio_probe(msg))
		return NULL;
	vd = virtio_find(VIRTIO_ID_BLOCK, n);
	if (!vd || n >= (int)ARRAY_SIZE(blks)) {
		snprintf(msg, MSG_LEN, "no virtio-blk device %d", n);
		return NULL;
	}
	b = &blks[n];
	if (b->vd && virtio_live(vd))
		return b;
	if (!b->slots) {
		b->slots = dma_alloc(sizeof(struct blk_slot) * BLK_SLOTS, 64);
		b->data = dma_alloc(DATA_AREA, 4096);
		if (!b->slots || !b->data) {
			snprintf(msg, MSG_LEN, "DMA arena exhausted");
			return NULL;
		}
	}
	b->vd = vd;
	b->q = &vd->vq[0];
	b->inflight = 0;
	for (int i = 0; i < BLK_SLOTS; i++)
		b->slots[i].busy = false;	/* the reset dropped them */
	if (!virtio_begin(vd, want, msg) ||
	    !virtio_setup_vq(vd, 0, 128, true, msg))
		return NULL;
	virtio_cfg_read(vd, 0, &b->capacity, 8);
	b->size_max = b->seg_max = b->blk_size = 0;
	if (virtio_has(vd, VIRTIO_BLK_F_SIZE_MAX))
		virtio_cfg_read(vd, 8, &b->size_max, 4);
	if (virtio_has(vd, VIRTIO_BLK_F_SEG_MAX))
		virtio_cfg_read(vd, 12, &b->seg_max, 4);
	if (virtio_has(vd, VIRTIO_BLK_F_BLK_SIZE))
		virtio_cfg_read(vd, 20, &b->blk_size, 4);
	b->ro = virtio_has(vd, VIRTIO_BLK_F_RO);
	b->flush = virtio_has(vd, VIRTIO_BLK_F_FLUSH);
	/* the largest request whose data fits the device's segment limits */
	b->max_req = MAX_REQ;
	if (b->size_max && b->size_max < MAX_REQ) {
		u32 segs = b->seg_max && b->seg_max < MAX_SEGS ? b->seg_max
							       : MAX_SEGS;
		u32 lim = (b->size_max & ~(SECTOR - 1)) * segs;

		if (lim < b->max_req)
			b->max_req = lim;
	}
	if (b->max_req < 4096) {
		snprintf(msg, MSG_LEN, "%s: size_max %u, seg_max %u: requests under 4 KiB",
		     vd->name, b->size_max, b->seg_max);
		return NULL;
	}
	if (!virtio_ready(vd, msg))
		return NULL;
	return b;
}

/*
 * Queue a request in slot i (not kicked). Data is split into segments of
 * at most size_max bytes.
 */
static bool blk_submit(struct blk *b, int i, u32 type, u64 sector,
		       void *buf, u32 len, bool indirect, char *msg)
{
	struct blk_slot *s = &b->slots[i];
	struct vbuf v[MAX_SEGS + 2];
	u32 seg = b->size_max ? b->size_max : len;
	bool in = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
	int n = 0;

	s->hdr = (struct blk_hdr){ type, 0, sector };
	s->status = 0xff;
	s->type = type;
	s->len = len;
	s->sector = sector;
	s->buf = buf;
	v[n++] = (struct vbuf){ (u64)&s->hdr, sizeof(s->hdr), false };
	for (u32 off = 0; off < len && n <= MAX_SEGS; off += seg)
		v[n++] = (struct vbuf){ (u64)buf + off,
					len - off < seg ? len - off : seg, in };
	v[n++] = (struct vbuf){ (u64)&s->status, 1, true };
	if (vq_add(b->q, v, n, s, indirect))
		return FAIL("%s: no room for a %d-descriptor request",
			    b->vd->name, n);
	s->busy = true;
	s->tsc = rdtsc();
	b->inflight++;
	return true;
}

/* A slot not in flight (the callers keep fewer than BLK_SLOTS busy). */
static int free_slot(struct blk *b)
{
	int i = 0;

	while (b->slots[i].busy)
		i++;
	return i;
}

/* Wait for one completion; its slot index, or -1 (msg set). */
static int blk_complete(struct blk *b, char *msg)
{
	struct blk_slot *s;
	void *cookie;
	u32 len;
	int r;

	if (!vq_wait(b->q, BLK_TIMEOUT)) {
		b->vd->broken = true;
		snprintf(msg, MSG_LEN, "%s: %d requests, none completed in %lu s (status %x)",
		     b->vd->name, b->inflight, BLK_TIMEOUT / NSEC_PER_SEC,
		     virtio_status(b->vd));
		return -1;
	}
	r = vq_get(b->q, &cookie, &len);
	s = cookie;
	if (r < 0) {
		snprintf(msg, MSG_LEN, "%s: %s", b->vd->name, b->q->error);
		return -1;
	}
	if (s < b->slots || s >= b->slots + BLK_SLOTS || !s->busy) {
		snprintf(msg, MSG_LEN, "%s: completion for unknown request %p", b->vd->name, s);
		return -1;
	}
	s->busy = false;
	b->inflight--;
	return s - b->slots;
}

int blk_sync(struct blk *b, u32 type, u64 sector, void *buf, u32 len,
	     char *msg)
{
	struct blk_slot *s = &b->slots[0];
	u8 *dma = b->data;

	if (len > DATA_AREA || b->inflight) {
		snprintf(msg, MSG_LEN, "blk_sync: %u bytes, %d in flight", len,
			 b->inflight);
		return -1;
	}
	if (type == VIRTIO_BLK_T_OUT)
		memcpy(dma, buf, len);
	if (!blk_submit(b, 0, type, sector, dma, len, false, msg))
		return -1;
	vq_kick(b->q);
	if (blk_complete(b, msg) < 0)
		return -1;
	if (type != VIRTIO_BLK_T_OUT && s->status == VIRTIO_BLK_S_OK)
		memcpy(buf, dma, len);
	return s->status;
}

/* ---- the pattern ---- */

static void pattern_fill(u64 *p, u64 sector, u32 nsect, u64 seed)
{
	for (u32 i = 0; i < nsect; i++)
		for (u64 j = 0; j < SECTOR / 8; j++)
			*p++ = seed << 48 ^ (sector + i) << 8 ^ j;
}

/* Index of the first bad word, or -1. */
static long pattern_check(const u64 *p, u64 sector, u32 nsect, u64 seed)
{
	for (u32 i = 0; i < nsect; i++)
		for (u64 j = 0; j < SECTOR / 8; j++)
			if (p[i * (SECTOR / 8) + j] !=
			    (seed << 48 ^ (sector + i) << 8 ^ j))
				return i * (SECTOR / 8) + j;
	return -1;
}

/*
 * Stream type requests over the whole disk, qd in flight, sizes cycling
 * from max_req down to 4 KiB when vary is set; OUT fills the pattern, IN
 * verifies it.
 */
static bool blk_stream(struct blk *b, u32 type, int qd, bool vary, u64 seed,
		       u64 *nreq, char *msg)
{
	u32 stride = DATA_AREA / qd;
	u64 next = 0, done_sect = 0;
	int k = 0;

	*nreq = 0;
	while (done_sect < b->capacity) {
		struct blk_slot *s;
		int i;

		while (b->inflight < qd && next < b->capacity) {
			u32 bytes = vary ? b->max_req >> (k % 6) : b->max_req;
			u32 ns;

			i = free_slot(b);
			if (bytes < 4096)
				bytes = 4096;
			ns = bytes / SECTOR;
			if (ns > b->capacity - next)
				ns = b->capacity - next;
			if (type == VIRTIO_BLK_T_OUT)
				pattern_fill((u64 *)(b->data + i * stride),
					     next, ns, seed);
			if (!blk_submit(b, i, type, next,
					b->data + i * stride, ns * SECTOR,
					k & 1, msg))
				return false;
			next += ns;
			k++;
		}
		vq_kick(b->q);
		i = blk_complete(b, msg);
		if (i < 0)
			return false;
		s = &b->slots[i];
		(*nreq)++;
		if (s->status != VIRTIO_BLK_S_OK)
			return FAIL("%s of %u bytes at sector %lu: status %u",
				    type == VIRTIO_BLK_T_OUT ? "write" : "read",
				    s->len, s->sector, s->status);
		if (type == VIRTIO_BLK_T_IN) {
			long bad = pattern_check((u64 *)s->buf, s->sector,
						 s->len / SECTOR, seed);
			u64 bs = s->sector + bad / 64;

			if (bad >= 0)
				return FAIL("sector %lu word %lu: read %lx, "
					    "expected %lx", bs, bad % 64,
					    ((u64 *)s->buf)[bad],
					    seed << 48 ^ bs << 8 ^ (bad % 64));
		}
		done_sect += s->len / SECTOR;
	}
	return true;
}

/* ---- blk ---- */

static bool blk_readonly(struct blk *b, char *msg)
{
	u8 *before = b->data + DATA_AREA / 2, *sect = b->data;
	int st;

	st = blk_sync(b, VIRTIO_BLK_T_IN, 0, before, SECTOR, msg);
	if (st != VIRTIO_BLK_S_OK)
		return st < 0 ? false : FAIL("read of sector 0: status %d", st);
	memset(sect, 0x5a, SECTOR);
	st = blk_sync(b, VIRTIO_BLK_T_OUT, 0, sect, SECTOR, msg);
	if (st < 0)
		return false;
	if (st != VIRTIO_BLK_S_IOERR)
		return FAIL("write to a read-only disk: status %d, not IOERR",
			    st);
	st = blk_sync(b, VIRTIO_BLK_T_IN, 0, sect, SECTOR, msg);
	if (st != VIRTIO_BLK_S_OK)
		return st < 0 ? false : FAIL("read after the rejected write: "
					     "status %d", st);
	if (memcmp(before, sect, SECTOR))
		return FAIL("sector 0 changed by the rejected write");
	snprintf(msg, MSG_LEN, "read-only disk rejects writes");
	return true;
}

bool test_blk(char *msg)
{
	u64 seed = cmdline_u64("blk_seed", 1) & 0xffff;
	struct blk *b = blk_open(0, msg);
	char id[21] = "";
	u64 irq0, t0, tw, tr, nw, nr, mib;
	int st;

	if (!b)
		return false;
	printf("INFO blk: %s capacity %lu sectors (%lu MiB), features %lx, "
	       "size_max %u seg_max %u blk_size %u, %s, queue %u, msix %s\n",
	       b->vd->name, b->capacity, b->capacity >> 11, b->vd->features,
	       b->size_max, b->seg_max, b->blk_size, b->ro ? "read-only" :
	       "writable", b->q->size, b->q->msi_slot >= 0 ? "yes" : "no");
	st = blk_sync(b, VIRTIO_BLK_T_GET_ID, 0, id, 20, msg);
	if (st < 0)
		return false;
	if (st != VIRTIO_BLK_S_OK)
		return FAIL("GET_ID: status %d", st);
	for (int i = 0; i < 20; i++)
		if (id[i] && (id[i] < 0x20 || id[i] > 0x7e))
			id[i] = '?';
	printf("INFO blk: id \"%s\"\n", id);
	if (b->ro)
		return blk_readonly(b, msg);
	if (!b->capacity)
		return FAIL("capacity 0");
	irq0 = vq_irqs(b->q);
	t0 = clock_ns();
	if (!blk_stream(b, VIRTIO_BLK_T_OUT, 8, false, seed, &nw, msg))
		return false;
	if (b->flush) {
		st = blk_sync(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, msg);
		if (st != VIRTIO_BLK_S_OK)
			return st < 0 ? false : FAIL("flush: status %d", st);
	}
	tw = clock_ns() - t0;
	t0 = clock_ns();
	if (!blk_stream(b, VIRTIO_BLK_T_IN, 8, true, seed, &nr, msg))
		return false;
	tr = clock_ns() - t0;
	mib = b->capacity >> 11;
	printf("INFO blk: wrote %lu MiB in %lu requests, %lu ms%s; read and "
	       "verified in %lu requests, %lu ms; %lu MSI-X interrupts; kicks "
	       "%lu, suppressed %lu\n", mib, nw, tw / NSEC_PER_MSEC,
	       b->flush ? " incl. flush" : " (no FLUSH feature)", nr,
	       tr / NSEC_PER_MSEC, vq_irqs(b->q) - irq0, b->q->kicks,
	       b->q->kicks_suppressed);
	if (b->q->msi_slot >= 0 && vq_irqs(b->q) == irq0)
		return FAIL("MSI-X vector set but no interrupt in %lu requests",
			    nw + nr);
	snprintf(msg, MSG_LEN, "%lu sectors written, flushed and verified "
		 "(seed %lu), %lu MSI-X interrupts", b->capacity, seed,
		 vq_irqs(b->q) - irq0);
	return true;
}

/* ---- blkbench ---- */

#define HIST_US 20000

static u32 hist[HIST_US + 1];

static u64 rng_state = 0x9e3779b97f4a7c15ULL;

static u64 xorshift(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static u64 percentile(u64 n, u32 pct)
{
	u64 want = (n * pct + 99) / 100, sum = 0;

	for (u32 i = 0; i <= HIST_US; i++) {
		sum += hist[i];
		if (sum >= want && want)
			return i;
	}
	return 0;
}

/* 4 KiB random reads at queue depth qd for dur ns. */
static bool bench_rand(struct blk *b, int qd, u64 dur, char *msg)
{
	u32 stride = DATA_AREA / qd;
	u64 blocks = b->capacity / 8, n = 0, khz = tsc_khz(), t0, t;

	if (!blocks)
		return FAIL("disk smaller than 4 KiB");
	memset(hist, 0, sizeof(hist));
	t0 = clock_ns();
	do {
		u64 us;
		int i;

		while (b->inflight < qd) {
			i = free_slot(b);
			if (!blk_submit(b, i, VIRTIO_BLK_T_IN,
					xorshift() % blocks * 8,
					b->data + i * stride, 4096, false, msg))
				return false;
		}
		vq_kick(b->q);
		i = blk_complete(b, msg);
		if (i < 0)
			return false;
		if (b->slots[i].status != VIRTIO_BLK_S_OK)
			return FAIL("read at sector %lu: status %u",
				    b->slots[i].sector, b->slots[i].status);
		us = (rdtsc() - b->slots[i].tsc) * 1000 / khz;
		hist[us < HIST_US ? us : HIST_US]++;
		n++;
		t = clock_ns();
	} while (t - t0 < dur);
	while (b->inflight)
		if (blk_complete(b, msg) < 0)
			return false;
	printf("INFO bench blk-randread-qd%d bs=4096 ios=%lu ms=%lu iops=%lu "
	       "lat_p50_us=%lu lat_p99_us=%lu\n", qd, n,
	       (t - t0) / NSEC_PER_MSEC, n * NSEC_PER_SEC / (t - t0),
	       percentile(n, 50), percentile(n, 99));
	return true;
}

/* Sequential max_req requests at queue depth qd for dur ns. */
static bool bench_seq(struct blk *b, u32 type, int qd, u64 seed, u64 dur,
		      char *msg)
{
	u32 stride = DATA_AREA / qd, ns = b->max_req / SECTOR;
	u64 next = 0, n = 0, bytes = 0, t0, t;

	if (b->capacity < ns)
		return FAIL("disk smaller than one request");
	t0 = clock_ns();
	do {
		int i;

		while (b->inflight < qd) {
			i = free_slot(b);
			if (next + ns > b->capacity)
				next = 0;
			/* writes keep the blk pattern valid */
			if (type == VIRTIO_BLK_T_OUT)
				pattern_fill((u64 *)(b->data + i * stride),
					     next, ns, seed);
			if (!blk_submit(b, i, type, next, b->data + i * stride,
					ns * SECTOR, false, msg))
				return false;
			next += ns;
		}
		vq_kick(b->q);
		i = blk_complete(b, msg);
		if (i < 0)
			return false;
		if (b->slots[i].status != VIRTIO_BLK_S_OK)
			return FAIL("sequential I/O at sector %lu: status %u",
				    b->slots[i].sector, b->slots[i].status);
		n++;
		bytes += b->slots[i].len;
		t = clock_ns();
	} while (t - t0 < dur);
	while (b->inflight)
		if (blk_complete(b, msg) < 0)
			return false;
	printf("INFO bench blk-seq%s-qd%d bs=%u ios=%lu ms=%lu mb_s=%lu\n",
	       type == VIRTIO_BLK_T_OUT ? "write" : "read", qd, ns * SECTOR,
	       n, (t - t0) / NSEC_PER_MSEC, bytes * 1000 / (t - t0));
	return true;
}

bool test_blkbench(char *msg)
{
	u64 dur = cmdline_u64("bench_ms", 2000) * NSEC_PER_MSEC;
	u64 seed = cmdline_u64("blk_seed", 1) & 0xffff;
	struct blk *b = blk_open(0, msg);
	bool ok;

	if (!b)
		return false;
	vq_set_irq(b->q, false);
	b->q->spin_ns = ~0ULL;	/* busy-poll for completions */
	ok = bench_rand(b, 1, dur, msg) && bench_rand(b, 32, dur, msg) &&
	     bench_seq(b, VIRTIO_BLK_T_IN, 8, seed, dur, msg) &&
	     (b->ro || bench_seq(b, VIRTIO_BLK_T_OUT, 8, seed, dur, msg));
	b->q->spin_ns = VQ_SPIN_NS;
	vq_set_irq(b->q, true);
	if (ok)
		snprintf(msg, MSG_LEN, "%s%s", b->vd->name,
			 b->ro ? " (read-only: no write benchmark)" : "");
	return ok;
}
