/*
 * virtio/blk.c - virtio-blk (virtio 1.2, 5.2) on a raw image file or block
 * device, one request queue. The transport thread that serves a kick only
 * pops chains, checks them and queues preadv/pwritev/fdatasync/fallocate
 * SQEs on an io_uring; a completion thread reaps the CQEs, writes the status
 * byte, pushes the used entries and interrupts the driver. At most
 * BLK_MAX_INFLIGHT requests are in flight; when all slots are busy popping
 * stops and the completion thread resumes it as slots free up.
 *
 * Locking: b->lock covers the request slots, the io_uring submission side
 * and the run state; a virtqueue lock is only ever taken inside it, around
 * vq_pop/vq_push. vd->lock is never taken under b->lock (the transport may
 * call activate/reset holding it): NEEDS_RESET is reported, and
 * virtio_queue_done called, after b->lock is dropped. Pops and pushes
 * happen under b->lock with b->running checked, so once reset has cleared
 * running and joined the completion thread (which first waits for all
 * in-flight I/O), the device no longer touches the queue or guest memory.
 *
 * Migration: quiesce stops popping (b->quiesced, checked where blk_process
 * pops) and waits on b->idle until no request is in flight and no
 * interrupt or NEEDS_RESET report is on its way out (b->after_unlock
 * counts those, done after b->lock is dropped). Guest memory the device
 * writes (read data, GET_ID, status bytes) is logged with
 * guest_mem_log_write. release syncs the image and drops its flock; while
 * released nothing is popped (the destination may be created released,
 * activated, and only then acquire the image).
 *
 * Remote disks (--disk remote=tcp:HOST:PORT): the same slots and
 * completion path, but a request goes to a `dvmm disk-serve` agent through
 * the client of virtio/blk_remote.c (its send thread ships it, its receive
 * thread calls blk_remote_done, which runs blk_complete under b->lock like
 * a CQE); reads and writes go in pieces of at most BRP_MAX_DATA. b->rc is
 * set while connected; lock order b->lock, then the client's lock. Release
 * flushes and hangs up, acquire connects (waiting for the agent). The
 * io_uring and its thread exist for both kinds (reset's wake-up, and
 * device-switch, which moves a remote disk onto a local file: copy while
 * the guest runs, noting the 1 MiB regions it writes meanwhile in a
 * bitmap, then hold popping (b->switch_hold, apart from migration's
 * quiesce), copy what is dirty, swap in the file's fd).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>
#include <sodium.h>

#include "util/log.h"
#include "util/thread.h"
#include "virtio/blk_remote.h"
#include "virtio/devices.h"

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13

/* Request types and status values (5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_SECTOR_SHIFT 9
#define BLK_SECTOR_SIZE 512
#define BLK_ID_BYTES 20
#define BLK_QUEUE_SIZE 256
#define BLK_MAX_INFLIGHT 128
#define BLK_RING_ENTRIES 256
/* Header and status byte take one segment each. */
#define BLK_SEG_MAX (VQ_MAX_SEGS - 2)
#define BLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per segment */
#define BLK_MAX_DISCARD_SEG 1
/* The used length is 32 bits: cap one request's data below 4 GiB. */
#define BLK_MAX_DATA (UINT32_MAX - BLK_SECTOR_SIZE + 1)
#define BLK_TAG_WAKE UINT64_MAX
/* A remote disk: how long acquire waits for the agent (it may still wait
 * for the image's lock). */
#define BLK_CONNECT_MS 10000
/* device-switch: copy unit, dirty-tracking granularity, and when to stop
 * copying while the guest runs. */
#define BLK_REGION BRP_MAX_DATA
#define BLK_SWITCH_FINAL 4 /* regions left dirty: copy them paused */
#define BLK_SWITCH_PASSES 8

/* Device configuration layout (5.2.4), little-endian. */
struct virtio_blk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	struct {
		uint16_t cylinders;
		uint8_t heads;
		uint8_t sectors;
	} geometry;
	uint32_t blk_size;
	struct {
		uint8_t physical_block_exp;
		uint8_t alignment_offset;
		uint16_t min_io_size;
		uint32_t opt_io_size;
	} topology;
	uint8_t writeback;
	uint8_t unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
	uint32_t max_secure_erase_sectors;
	uint32_t max_secure_erase_seg;
	uint32_t secure_erase_sector_alignment;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_blk_config) == 72,
	       "virtio_blk_config layout");

struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
} __attribute__((packed));

struct virtio_blk_discard {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
} __attribute__((packed));

/* One request in flight: exactly one SQE outstanding at a time. */
struct blk_req {
	uint16_t head;
	uint32_t type;
	uint8_t *status; /* host address of the status byte */
	uint64_t offset; /* file offset of the next byte to move */
	uint64_t data_len;
	uint64_t data_done;
	unsigned int niov;
	unsigned int iov_first; /* first segment not fully moved */
	struct iovec iov[VQ_MAX_SEGS];
};

struct virtio_blk {
	struct virtio_device vd;
	char name[40]; /* "virtio-blk:" + image file name */
	char *path;    /* as given, for messages */
	int fd;	       /* the image; -1 while the disk is remote */
	char *remote;  /* --disk remote=URI: the agent; NULL: a local image */
	uint8_t key[BRP_KEY_MAX];
	size_t keylen;
	bool readonly;
	bool can_discard;	/* PUNCH_HOLE works on this image */
	uint64_t capacity;	/* 512-byte sectors */
	uint32_t discard_align; /* sectors */
	char id[BLK_ID_BYTES];
	struct io_uring ring;

	pthread_mutex_t lock;  /* all below; taken before any vq->lock */
	bool running;	       /* between activate and reset */
	bool stopping;	       /* completion thread: drain, then exit */
	bool starved;	       /* popping stopped: no free slot */
	bool writethrough;     /* FLUSH not negotiated: RWF_DSYNC writes */
	bool discard;	       /* DISCARD negotiated */
	bool submit_pending;   /* SQEs prepared, not yet submitted */
	bool broken;	       /* we asked for NEEDS_RESET: serve nothing */
	bool report_broken;    /* ... and still have to tell the core */
	bool quiesced;	       /* migration: pop nothing until resume */
	bool released;	       /* the image's flock is not ours: pop nothing */
	struct brp_client *rc; /* remote backend connected (else io_uring) */
	bool switching;	       /* device-switch under way */
	bool switch_hold;      /* device-switch: pop nothing for a moment */
	bool track;	       /* device-switch: note written regions */
	uint8_t *dirty;	       /* bit per BLK_REGION written since copied */
	uint64_t nregions, ndirty;
	unsigned int after_unlock; /* blk_unlock work still under way */
	pthread_cond_t idle;	   /* inflight or after_unlock went to 0 */
	char broken_why[160];
	pthread_t thread;
	bool thread_started;
	unsigned int inflight;
	unsigned int nfree;
	uint16_t free_slot[BLK_MAX_INFLIGHT];
	struct blk_req *req;   /* BLK_MAX_INFLIGHT slots */
	struct vq_chain chain; /* vq_pop scratch */
	struct virtio_blk_stats stats;
};

static struct virtio_blk *to_blk(struct virtio_device *vd)
{
	return vd->priv;
}

/* With b->lock held: stop serving; blk_unlock tells the core. */
static void blk_broken(struct virtio_blk *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void blk_broken(struct virtio_blk *b, const char *fmt, ...)
{
	va_list ap;

	if (b->broken)
		return;
	b->broken = true;
	b->report_broken = true;
	va_start(ap, fmt);
	vsnprintf(b->broken_why, sizeof(b->broken_why), fmt, ap);
	va_end(ap);
}

/*
 * Drop b->lock, then do what must not happen under it. That work counts in
 * after_unlock until it is done, so quiesce can wait for it.
 */
static void blk_unlock(struct virtio_blk *b, bool notify)
{
	char why[sizeof(b->broken_why)];
	bool report = b->report_broken;

	if (report) {
		memcpy(why, b->broken_why, sizeof(why));
		b->report_broken = false;
	}
	if (!report && !notify) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	b->after_unlock++;
	pthread_mutex_unlock(&b->lock);
	if (report)
		virtio_set_needs_reset(&b->vd, "%s", why);
	if (notify)
		virtio_queue_done(&b->vd, 0);
	pthread_mutex_lock(&b->lock);
	if (--b->after_unlock == 0)
		pthread_cond_broadcast(&b->idle);
	pthread_mutex_unlock(&b->lock);
}

/*
 * Copy the part [skip, skip+len) of the segments @src[0..n) into @dst,
 * leaving out empty segments. Returns the number of segments written.
 */
static unsigned int iov_slice(const struct iovec *src, unsigned int n,
			      uint64_t skip, uint64_t len, struct iovec *dst)
{
	unsigned int out = 0;

	for (unsigned int i = 0; i < n && len; i++) {
		uint64_t seg = src[i].iov_len;

		if (skip >= seg) {
			skip -= seg;
			continue;
		}
		seg -= skip;
		if (seg > len)
			seg = len;
		dst[out].iov_base = (uint8_t *)src[i].iov_base + skip;
		dst[out].iov_len = seg;
		out++;
		len -= seg;
		skip = 0;
	}
	return out;
}

/* FNV-1a: a short, stable id derived from the image path. */
static void blk_make_id(struct virtio_blk *b, const char *path)
{
	char *real = realpath(path, NULL);
	const char *p = real ? real : path;
	uint64_t h = 0xcbf29ce484222325ULL;
	static const char hex[] = "0123456789abcdef";

	for (; *p; p++) {
		h ^= (uint8_t)*p;
		h *= 0x100000001b3ULL;
	}
	free(real);
	memcpy(b->id, "dvmm-", 5);
	for (int i = 5; i < BLK_ID_BYTES; i++) {
		b->id[i] = hex[h & 0xf];
		h >>= 4;
	}
}

static void blk_push(struct virtio_blk *b, uint16_t head, uint32_t len)
{
	struct virtqueue *vq = &b->vd.vq[0];

	pthread_mutex_lock(&vq->lock);
	vq_push(vq, head, len);
	pthread_mutex_unlock(&vq->lock);
}

/* Write the status byte of a request (and log it for a migration). */
static void blk_set_status(struct virtio_blk *b, uint8_t *status, uint8_t st)
{
	*status = st;
	guest_mem_log_write(b->vd.mem, status, 1);
}

/* Finish a request that needs no I/O: status byte, used entry. */
static void blk_finish_now(struct virtio_blk *b, const struct vq_chain *c,
			   uint8_t *status, uint8_t st, uint32_t used_len)
{
	blk_set_status(b, status, st);
	if (st != VIRTIO_BLK_S_OK)
		b->stats.errors++;
	blk_push(b, c->head, used_len);
}

static struct io_uring_sqe *blk_get_sqe(struct virtio_blk *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

	if (!sqe) {
		/* The SQ is sized above the slot count; this is belt and
		 * braces. */
		io_uring_submit(&b->ring);
		sqe = io_uring_get_sqe(&b->ring);
	}
	return sqe;
}

/*
 * device-switch copies the remote disk while the guest writes to it: with
 * b->lock held, note the regions a write or discard about to be sent
 * touches (they are copied again).
 */
static void blk_track(struct virtio_blk *b, uint64_t off, uint64_t len)
{
	if (!b->track || !len)
		return;
	for (uint64_t i = off / BLK_REGION;
	     i <= (off + len - 1) / BLK_REGION && i < b->nregions; i++) {
		if (!(b->dirty[i / 8] & (1u << (i % 8)))) {
			b->dirty[i / 8] |= (uint8_t)(1u << (i % 8));
			b->ndirty++;
		}
	}
}

/* The remote backend: the next piece (at most BRP_MAX_DATA) of a slot. */
static bool blk_remote_rw(struct virtio_blk *b, unsigned int slot)
{
	struct blk_req *r = &b->req[slot];
	uint64_t len = r->data_len - r->data_done;
	bool in = r->type == VIRTIO_BLK_T_IN;

	if (len > BRP_MAX_DATA)
		len = BRP_MAX_DATA;
	if (!in)
		blk_track(b, r->offset, len);
	return brp_client_submit(b->rc, in ? BRP_READ : BRP_WRITE,
				 !in && b->writethrough ? BRP_F_FUA : 0, slot,
				 r->offset, len, &r->iov[r->iov_first],
				 r->niov - r->iov_first) == 0;
}

/* Queue the (remaining) transfer of a read or write slot. */
static bool blk_queue_rw(struct virtio_blk *b, unsigned int slot)
{
	struct blk_req *r = &b->req[slot];
	struct io_uring_sqe *sqe;
	const struct iovec *iov = &r->iov[r->iov_first];
	unsigned int n = r->niov - r->iov_first;

	if (b->rc)
		return blk_remote_rw(b, slot);
	sqe = blk_get_sqe(b);
	if (!sqe)
		return false;
	if (r->type == VIRTIO_BLK_T_IN)
		io_uring_prep_readv(sqe, b->fd, iov, n, r->offset);
	else
		io_uring_prep_writev2(sqe, b->fd, iov, n, r->offset,
				      b->writethrough ? RWF_DSYNC : 0);
	io_uring_sqe_set_data64(sqe, slot);
	b->submit_pending = true;
	return true;
}

static unsigned int blk_take_slot(struct virtio_blk *b)
{
	unsigned int slot = b->free_slot[--b->nfree];

	b->inflight++;
	return slot;
}

static void blk_put_slot(struct virtio_blk *b, unsigned int slot)
{
	b->free_slot[b->nfree++] = slot;
	if (--b->inflight == 0)
		pthread_cond_broadcast(&b->idle);
}

static bool blk_range_ok(const struct virtio_blk *b, uint64_t sector,
			 uint64_t nsect)
{
	return sector <= b->capacity && nsect <= b->capacity - sector;
}

/*
 * Check a discard request: one segment, no flags, inside the disk. Returns
 * the status to finish with now, or -1 to punch the hole [*off, *off+*len).
 */
static int blk_check_discard(const struct virtio_blk *b,
			     const struct vq_chain *c, uint64_t *off,
			     uint64_t *len)
{
	struct virtio_blk_discard d;
	uint64_t bytes = c->out_bytes - sizeof(struct virtio_blk_req_hdr);
	uint64_t sector;
	uint32_t nsect;

	if (!b->discard)
		return VIRTIO_BLK_S_UNSUPP;
	if (bytes == 0 || bytes % sizeof(d) ||
	    bytes / sizeof(d) > BLK_MAX_DISCARD_SEG)
		return VIRTIO_BLK_S_IOERR;
	vq_chain_read(c, sizeof(struct virtio_blk_req_hdr), &d, sizeof(d));
	sector = le64toh(d.sector);
	nsect = le32toh(d.num_sectors);
	if (le32toh(d.flags))
		return VIRTIO_BLK_S_UNSUPP; /* unmap or unknown flags */
	if (nsect > BLK_MAX_DISCARD_SECTORS || !blk_range_ok(b, sector, nsect))
		return VIRTIO_BLK_S_IOERR;
	if (nsect == 0)
		return VIRTIO_BLK_S_OK;
	*off = sector << BLK_SECTOR_SHIFT;
	*len = (uint64_t)nsect << BLK_SECTOR_SHIFT;
	return -1;
}

/* Take a slot for a request that goes out as the single SQE @sqe. */
static void blk_queue_simple(struct virtio_blk *b, const struct vq_chain *c,
			     uint32_t type, uint8_t *status,
			     struct io_uring_sqe *sqe)
{
	unsigned int slot = blk_take_slot(b);
	struct blk_req *r = &b->req[slot];

	r->head = c->head;
	r->type = type;
	r->status = status;
	io_uring_sqe_set_data64(sqe, slot);
	b->submit_pending = true;
}

/*
 * A flush or discard for the remote backend; a refused submission
 * completes at once (IOERR) like a failed one.
 */
static bool blk_remote_simple(struct virtio_blk *b, const struct vq_chain *c,
			      uint32_t type, uint8_t *status, uint64_t off,
			      uint64_t len)
{
	unsigned int slot = blk_take_slot(b);
	struct blk_req *r = &b->req[slot];

	r->head = c->head;
	r->type = type;
	r->status = status;
	if (brp_client_submit(
		    b->rc, type == VIRTIO_BLK_T_FLUSH ? BRP_FLUSH : BRP_DISCARD,
		    0, slot, off, len, NULL, 0)) {
		blk_put_slot(b, slot);
		blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
		return true;
	}
	return false;
}

/*
 * Start one popped request. Returns false if the chain is impossible (the
 * device is then in NEEDS_RESET), true otherwise; *pushed is set when it
 * completed at once.
 */
static bool blk_start(struct virtio_blk *b, const struct vq_chain *c,
		      bool *pushed)
{
	struct virtio_blk_req_hdr hdr;
	const struct iovec *w = &c->iov[c->n_out];
	uint8_t *status = NULL;
	uint64_t data_len, sector;
	unsigned int slot;
	struct io_uring_sqe *sqe;
	struct blk_req *r;
	int st;

	for (unsigned int i = c->n_in; i-- > 0;) {
		if (w[i].iov_len) {
			status = (uint8_t *)w[i].iov_base + w[i].iov_len - 1;
			break;
		}
	}
	if (!status) {
		blk_broken(b, "request %u has no writable status byte",
			   c->head);
		return false;
	}
	*pushed = true;
	if (c->out_bytes < sizeof(hdr)) {
		blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
		return true;
	}
	vq_chain_read(c, 0, &hdr, sizeof(hdr));
	hdr.type = le32toh(hdr.type);
	sector = le64toh(hdr.sector);

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (hdr.type == VIRTIO_BLK_T_IN)
			data_len = c->in_bytes - 1;
		else
			data_len = c->out_bytes - sizeof(hdr);
		if (hdr.type == VIRTIO_BLK_T_OUT && b->readonly) {
			blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
			return true;
		}
		if (data_len % BLK_SECTOR_SIZE || data_len > BLK_MAX_DATA ||
		    !blk_range_ok(b, sector, data_len >> BLK_SECTOR_SHIFT)) {
			blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
			return true;
		}
		if (data_len == 0) {
			blk_finish_now(b, c, status, VIRTIO_BLK_S_OK, 1);
			return true;
		}
		slot = blk_take_slot(b);
		r = &b->req[slot];
		r->head = c->head;
		r->type = hdr.type;
		r->status = status;
		r->offset = sector << BLK_SECTOR_SHIFT;
		r->data_len = data_len;
		r->data_done = 0;
		r->iov_first = 0;
		if (hdr.type == VIRTIO_BLK_T_IN)
			r->niov = iov_slice(w, c->n_in, 0, data_len, r->iov);
		else
			r->niov = iov_slice(c->iov, c->n_out, sizeof(hdr),
					    data_len, r->iov);
		if (!blk_queue_rw(b, slot)) {
			blk_put_slot(b, slot);
			blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
			return true;
		}
		*pushed = false;
		return true;

	case VIRTIO_BLK_T_FLUSH:
		if (b->rc) {
			*pushed =
				blk_remote_simple(b, c, hdr.type, status, 0, 0);
			return true;
		}
		sqe = blk_get_sqe(b);
		if (!sqe) {
			blk_finish_now(b, c, status, VIRTIO_BLK_S_IOERR, 1);
			return true;
		}
		io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
		blk_queue_simple(b, c, hdr.type, status, sqe);
		*pushed = false;
		return true;

	case VIRTIO_BLK_T_GET_ID: {
		size_t n = c->in_bytes - 1;

		if (n > BLK_ID_BYTES)
			n = BLK_ID_BYTES;
		n = vq_chain_write(c, 0, b->id, n);
		virtio_log_chain_write(b->vd.mem, c, 0, n);
		blk_finish_now(b, c, status, VIRTIO_BLK_S_OK, n + 1);
		return true;
	}

	case VIRTIO_BLK_T_DISCARD: {
		uint64_t off = 0, len = 0;

		st = blk_check_discard(b, c, &off, &len);
		if (st < 0 && b->rc) {
			blk_track(b, off, len);
			*pushed = blk_remote_simple(b, c, hdr.type, status, off,
						    len);
			return true;
		}
		if (st < 0) {
			sqe = blk_get_sqe(b);
			if (!sqe)
				st = VIRTIO_BLK_S_IOERR;
		}
		if (st >= 0) {
			blk_finish_now(b, c, status, st, 1);
			return true;
		}
		io_uring_prep_fallocate(
			sqe, b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			off, len);
		blk_queue_simple(b, c, hdr.type, status, sqe);
		*pushed = false;
		return true;
	}

	default:
		blk_finish_now(b, c, status, VIRTIO_BLK_S_UNSUPP, 1);
		return true;
	}
}

static void blk_submit(struct virtio_blk *b)
{
	int rc;

	if (!b->submit_pending)
		return;
	b->submit_pending = false;
	do {
		rc = io_uring_submit(&b->ring);
	} while (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY);
	if (rc < 0)
		pr_err("%s: io_uring_submit: %s", b->vd.name, strerror(-rc));
}

/*
 * Pop and start requests until the ring is empty or every slot is busy.
 * Called with b->lock held. Returns true if used entries were pushed.
 */
static bool blk_process(struct virtio_blk *b)
{
	struct virtqueue *vq = &b->vd.vq[0];
	bool any_pushed = false;

	while (b->running && !b->stopping && !b->broken && !b->quiesced &&
	       !b->released && !b->switch_hold) {
		bool pushed = false;
		int r;

		if (!b->nfree) {
			b->starved = true;
			break;
		}
		pthread_mutex_lock(&vq->lock);
		r = vq_pop(vq, &b->chain);
		if (r < 0)
			blk_broken(b, "%.*s", (int)sizeof(vq->error),
				   vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (r < 0)
			break;
		if (r == 0)
			break;
		if (!blk_start(b, &b->chain, &pushed))
			break;
		any_pushed |= pushed;
	}
	blk_submit(b);
	return any_pushed;
}

/*
 * A read moved @res more bytes into guest memory, starting at the first
 * segment not yet done: log them (before blk_advance moves the segments).
 */
static void blk_log_read(struct virtio_blk *b, const struct blk_req *r,
			 uint64_t res)
{
	for (unsigned int i = r->iov_first; i < r->niov && res; i++) {
		uint64_t len =
			r->iov[i].iov_len < res ? r->iov[i].iov_len : res;

		guest_mem_log_write(b->vd.mem, r->iov[i].iov_base, len);
		res -= len;
	}
}

/* A read ends in error: what is left of its buffer may have been written. */
static void blk_log_read_rest(struct virtio_blk *b, const struct blk_req *r)
{
	for (unsigned int i = r->iov_first; i < r->niov; i++)
		guest_mem_log_write(b->vd.mem, r->iov[i].iov_base,
				    r->iov[i].iov_len);
}

/* Account for @res bytes moved; true when the transfer is complete. */
static bool blk_advance(struct blk_req *r, uint64_t res)
{
	r->data_done += res;
	r->offset += res;
	while (res && r->iov_first < r->niov) {
		struct iovec *v = &r->iov[r->iov_first];

		if (res < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + res;
			v->iov_len -= res;
			res = 0;
		} else {
			res -= v->iov_len;
			r->iov_first++;
		}
	}
	return r->data_done >= r->data_len;
}

/* One CQE for slot @slot, with b->lock held. True if a used entry went out. */
static bool blk_complete(struct virtio_blk *b, unsigned int slot, int res)
{
	struct blk_req *r = &b->req[slot];
	uint8_t st = VIRTIO_BLK_S_OK;
	uint32_t used_len = 1;

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (r->type == VIRTIO_BLK_T_IN && res > 0)
			blk_log_read(b, r, res);
		if ((res == -EINTR || res == -EAGAIN) && !b->stopping) {
			if (blk_queue_rw(b, slot))
				return false;
			st = VIRTIO_BLK_S_IOERR;
		} else if (res < 0) {
			st = VIRTIO_BLK_S_IOERR;
		} else if (res == 0) {
			/* End of file: the image shrank under us. */
			st = VIRTIO_BLK_S_IOERR;
		} else if (!blk_advance(r, res)) {
			if (!b->stopping && blk_queue_rw(b, slot))
				return false;
			st = VIRTIO_BLK_S_IOERR;
		}
		if (r->type == VIRTIO_BLK_T_IN) {
			if (st != VIRTIO_BLK_S_OK)
				blk_log_read_rest(b, r);
			used_len = r->data_done + 1;
			b->stats.reads++;
			b->stats.read_bytes += r->data_done;
		} else {
			b->stats.writes++;
			b->stats.write_bytes += r->data_done;
		}
		break;
	case VIRTIO_BLK_T_FLUSH:
		b->stats.flushes++;
		if (res < 0)
			st = VIRTIO_BLK_S_IOERR;
		break;
	case VIRTIO_BLK_T_DISCARD:
		b->stats.discards++;
		if (res < 0)
			st = VIRTIO_BLK_S_IOERR;
		break;
	}
	if (st != VIRTIO_BLK_S_OK) {
		b->stats.errors++;
		pr_debug("%s: request type %u failed: %s", b->vd.name, r->type,
			 res < 0 ? strerror(-res) : "short transfer");
	}
	blk_put_slot(b, slot);
	if (b->stopping)
		return false; /* reset: the driver no longer wants it */
	blk_set_status(b, r->status, st);
	blk_push(b, r->head, used_len);
	return true;
}

/*
 * Complete everything the ring has finished, in one batch, with b->lock
 * held. Both the kick path and the I/O thread call it: the CQ is only ever
 * consumed under the lock. True if used entries went out.
 */
static bool blk_reap(struct virtio_blk *b)
{
	struct io_uring_cqe *cqe;
	bool pushed = false;

	while (io_uring_peek_cqe(&b->ring, &cqe) == 0) {
		uint64_t tag = io_uring_cqe_get_data64(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&b->ring, cqe);
		if (tag < BLK_MAX_INFLIGHT)
			pushed |= blk_complete(b, tag, res);
	}
	return pushed;
}

static void *blk_io_thread(void *arg)
{
	struct virtio_blk *b = arg;

	for (;;) {
		struct io_uring_cqe *cqe;
		bool pushed = false, done;
		int rc = io_uring_wait_cqe(&b->ring, &cqe);

		if (rc == -EINTR || rc == -EAGAIN)
			continue;
		if (rc < 0) {
			pr_err("%s: io_uring_wait_cqe: %s", b->vd.name,
			       strerror(-rc));
			break;
		}
		pthread_mutex_lock(&b->lock);
		pushed = blk_reap(b);
		if (b->starved && b->nfree) {
			b->starved = false;
			pushed |= blk_process(b);
		}
		blk_submit(b);
		done = b->stopping && b->inflight == 0;
		blk_unlock(b, pushed && b->running);
		if (done)
			break;
	}
	return NULL;
}

/* Wake the I/O thread (it ends once stopping and nothing is in flight). */
static void blk_wake_io(struct virtio_blk *b)
{
	struct io_uring_sqe *sqe = blk_get_sqe(b);

	if (sqe) {
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, BLK_TAG_WAKE);
		b->submit_pending = true;
	}
	blk_submit(b);
}

/* Copy @len bytes from @data into the segments. */
static void iov_scatter(const struct iovec *iov, unsigned int n,
			const uint8_t *data, uint64_t len)
{
	for (unsigned int i = 0; i < n && len; i++) {
		uint64_t k = iov[i].iov_len < len ? iov[i].iov_len : len;

		memcpy(iov[i].iov_base, data, k);
		data += k;
		len -= k;
	}
}

/*
 * The remote backend finished request @id (a slot): the same completion
 * path as a CQE (blk_complete), then serve what waits.
 */
static void blk_remote_done(void *opaque, uint64_t id, int res,
			    const uint8_t *data, uint32_t len)
{
	struct virtio_blk *b = opaque;
	struct blk_req *r;
	bool pushed;

	if (id >= BLK_MAX_INFLIGHT)
		return;
	pthread_mutex_lock(&b->lock);
	r = &b->req[id];
	if (r->type == VIRTIO_BLK_T_IN && res > 0 && data)
		iov_scatter(&r->iov[r->iov_first], r->niov - r->iov_first, data,
			    (uint64_t)res < len ? (uint64_t)res : len);
	pushed = blk_complete(b, (unsigned int)id, res);
	if (b->starved && b->nfree) {
		b->starved = false;
		pushed |= blk_process(b);
	}
	if (b->stopping && b->inflight == 0)
		blk_wake_io(b);
	blk_unlock(b, pushed && b->running);
}

/* Stop serving: wait for every request in flight, join the thread. */
static void blk_stop(struct virtio_blk *b)
{
	struct io_uring_sqe *sqe;
	bool join;

	pthread_mutex_lock(&b->lock);
	b->running = false;
	join = b->thread_started;
	if (join) {
		b->stopping = true;
		sqe = blk_get_sqe(b);
		if (sqe) {
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, BLK_TAG_WAKE);
			b->submit_pending = true;
		}
		blk_submit(b);
	}
	pthread_mutex_unlock(&b->lock);

	if (join)
		pthread_join(b->thread, NULL);

	pthread_mutex_lock(&b->lock);
	b->thread_started = false;
	b->stopping = false;
	b->starved = false;
	b->broken = false;
	b->report_broken = false;
	pthread_mutex_unlock(&b->lock);
}

static uint64_t blk_features(struct virtio_device *vd)
{
	struct virtio_blk *b = to_blk(vd);
	uint64_t f = (1ULL << VIRTIO_BLK_F_SEG_MAX) |
		     (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
		     (1ULL << VIRTIO_BLK_F_FLUSH);

	if (b->readonly)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	if (b->can_discard)
		f |= 1ULL << VIRTIO_BLK_F_DISCARD;
	return f;
}

static void blk_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len)
{
	struct virtio_blk *b = to_blk(vd);
	struct virtio_blk_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.capacity = htole64(b->capacity);
	cfg.seg_max = htole32(BLK_SEG_MAX);
	cfg.blk_size = htole32(BLK_SECTOR_SIZE);
	cfg.num_queues = htole16(1);
	if (b->can_discard) {
		cfg.max_discard_sectors = htole32(BLK_MAX_DISCARD_SECTORS);
		cfg.max_discard_seg = htole32(BLK_MAX_DISCARD_SEG);
		cfg.discard_sector_alignment = htole32(b->discard_align);
	}
	memset(buf, 0, len);
	if (off < sizeof(cfg))
		memcpy(buf, (uint8_t *)&cfg + off,
		       len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void blk_config_write(struct virtio_device *vd, uint32_t off,
			     const void *buf, uint32_t len)
{
	/* Nothing is writable without CONFIG_WCE. */
	(void)vd;
	(void)off;
	(void)buf;
	(void)len;
}

static void blk_queue_kick(struct virtio_device *vd, uint16_t q)
{
	struct virtio_blk *b = to_blk(vd);
	bool pushed = false;

	if (q != 0)
		return;
	pthread_mutex_lock(&b->lock);
	if (b->running) {
		pushed = blk_process(b);
		/*
		 * Buffered I/O on cached pages usually completes inside
		 * io_uring_submit: finish it here rather than waking the I/O
		 * thread for it (one thread hop less per request).
		 */
		pushed |= blk_reap(b);
	}
	blk_unlock(b, pushed && b->running);
}

static int blk_activate(struct virtio_device *vd)
{
	struct virtio_blk *b = to_blk(vd);
	int rc = 0;

	pthread_mutex_lock(&b->lock);
	if (b->running)
		goto out;
	b->writethrough = !virtio_has_feature(vd, VIRTIO_BLK_F_FLUSH);
	b->discard =
		b->can_discard && virtio_has_feature(vd, VIRTIO_BLK_F_DISCARD);
	if (!b->thread_started) {
		rc = thread_start_nosignals(&b->thread, blk_io_thread, b);
		if (rc) {
			pr_err("%s: cannot start the I/O thread: %s", vd->name,
			       strerror(-rc));
			goto out;
		}
		b->thread_started = true;
	}
	b->running = true;
out:
	pthread_mutex_unlock(&b->lock);
	return rc;
}

static void blk_reset(struct virtio_device *vd)
{
	blk_stop(to_blk(vd));
}

/* ---- migration ---- */

/*
 * Pop nothing more; wait until every request taken has its data moved
 * (and logged), its status byte set, its used entry pushed and the
 * interrupt decision made and sent.
 */
static void blk_quiesce(struct virtio_device *vd)
{
	struct virtio_blk *b = to_blk(vd);

	pthread_mutex_lock(&b->lock);
	b->quiesced = true;
	while (b->inflight || b->after_unlock)
		pthread_cond_wait(&b->idle, &b->lock);
	pthread_mutex_unlock(&b->lock);
}

/* Serve what the driver queued meanwhile (if allowed to serve at all). */
static void blk_kick_locked(struct virtio_blk *b)
{
	bool pushed = false;

	if (b->running) {
		pushed = blk_process(b);
		pushed |= blk_reap(b);
	}
	blk_unlock(b, pushed && b->running);
}

static void blk_resume(struct virtio_device *vd)
{
	struct virtio_blk *b = to_blk(vd);

	pthread_mutex_lock(&b->lock);
	b->quiesced = false;
	blk_kick_locked(b);
}

#define BLK_STATE_LEN 9 /* capacity (u64 LE), readonly (u8) */

static long blk_save(struct virtio_device *vd, uint8_t *buf, size_t cap)
{
	struct virtio_blk *b = to_blk(vd);
	uint64_t capacity = htole64(b->capacity);

	if (cap < BLK_STATE_LEN)
		return -ENOSPC;
	memcpy(buf, &capacity, sizeof(capacity));
	buf[8] = b->readonly;
	return BLK_STATE_LEN;
}

static int blk_load(struct virtio_device *vd, const uint8_t *buf, size_t len,
		    char *why, size_t why_len)
{
	struct virtio_blk *b = to_blk(vd);
	uint64_t capacity;

	if (len != BLK_STATE_LEN) {
		snprintf(why, why_len,
			 "%s: %zu bytes of device state, expected %d", vd->name,
			 len, BLK_STATE_LEN);
		return -EINVAL;
	}
	memcpy(&capacity, buf, sizeof(capacity));
	capacity = le64toh(capacity);
	if (buf[8] > 1) {
		snprintf(why, why_len, "%s: read-only flag %u is not 0 or 1",
			 vd->name, buf[8]);
		return -EINVAL;
	}
	if (capacity != b->capacity) {
		snprintf(why, why_len,
			 "%s: the disk here has %llu sectors, the source's "
			 "%llu",
			 vd->name, (unsigned long long)b->capacity,
			 (unsigned long long)capacity);
		return -EINVAL;
	}
	if (buf[8] != b->readonly) {
		snprintf(why, why_len,
			 "%s: the disk here is %s, the source's %s", vd->name,
			 b->readonly ? "read-only" : "writable",
			 buf[8] ? "read-only" : "writable");
		return -EINVAL;
	}
	return 0;
}

static int blk_lock_image(int fd, const char *path, bool readonly,
			  struct err *e)
{
	if (flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return err_set(e, -EBUSY,
				       "disk image %s is in use by another "
				       "process",
				       path);
		return err_set(e, -errno, "disk image %s: flock: %s", path,
			       strerror(errno));
	}
	return 0;
}

/*
 * A remote disk lets go: the agent makes what was written durable, then
 * the connection ends (the agent may then serve another client).
 */
static int blk_release_remote(struct virtio_blk *b, char *why, size_t why_len)
{
	struct brp_sync s = {.type = BRP_FLUSH};
	struct brp_client *rc = b->rc;
	int err = 0;

	if (!b->readonly) {
		err = brp_client_sync_start(rc, &s);
		if (!err)
			err = brp_client_sync_wait(rc, &s);
	}
	if (err) {
		snprintf(why, why_len, "disk agent %s: flush failed: %s",
			 b->remote, strerror(-err));
		pthread_mutex_lock(&b->lock);
		b->released = false;
		pthread_mutex_unlock(&b->lock);
		return err;
	}
	pthread_mutex_lock(&b->lock);
	b->rc = NULL;
	pthread_mutex_unlock(&b->lock);
	brp_client_close(rc);
	return 0;
}

/*
 * Connect to the agent (waiting up to BLK_CONNECT_MS for it), check or
 * learn the disk's size, start the client. With b->lock not held.
 */
static int blk_connect(struct virtio_blk *b, struct brp_client **out,
		       struct err *e)
{
	struct brp_client *c;
	uint64_t size;
	unsigned int fl;
	int rc;

	rc = brp_client_connect(&c, b->remote, b->key, b->keylen,
				BLK_CONNECT_MS, e);
	if (rc)
		return rc;
	size = brp_client_size(c);
	fl = brp_client_flags(c);
	if (b->capacity && size >> BLK_SECTOR_SHIFT != b->capacity)
		rc = err_set(e, -EINVAL,
			     "disk agent %s serves %llu sectors, this disk has "
			     "%llu",
			     b->remote,
			     (unsigned long long)(size >> BLK_SECTOR_SHIFT),
			     (unsigned long long)b->capacity);
	else if ((fl & BRP_F_READONLY) && !b->readonly)
		rc = err_set(e, -EROFS,
			     "disk agent %s serves its image read-only; add "
			     ",readonly",
			     b->remote);
	if (!rc)
		rc = brp_client_start(c, blk_remote_done, b, e);
	if (rc) {
		brp_client_close(c);
		return rc;
	}
	if (!b->capacity) {
		b->capacity = size >> BLK_SECTOR_SHIFT;
		b->can_discard = !b->readonly && (fl & BRP_F_CAN_DISCARD);
	}
	*out = c;
	return 0;
}

/*
 * Make what was written durable, then let another process lock the image.
 * Only with nothing in flight: quiesced, or not started.
 */
static int blk_release(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_blk *b = to_blk(vd);
	int rc = 0;

	pthread_mutex_lock(&b->lock);
	if (b->released) {
		pthread_mutex_unlock(&b->lock);
		return 0;
	}
	if (b->running && !b->quiesced) {
		pthread_mutex_unlock(&b->lock);
		snprintf(why, why_len, "%s: release while serving requests",
			 vd->name);
		return -EBUSY;
	}
	if (b->switching) {
		pthread_mutex_unlock(&b->lock);
		snprintf(why, why_len, "%s: a device-switch is under way",
			 vd->name);
		return -EBUSY;
	}
	/* From here on nothing is popped even if someone kicks. */
	b->released = true;
	pthread_mutex_unlock(&b->lock);

	if (b->rc)
		return blk_release_remote(b, why, why_len);
	if (!b->readonly && fdatasync(b->fd) < 0) {
		rc = -errno;
		snprintf(why, why_len, "disk image %s: fdatasync: %s", b->path,
			 strerror(errno));
	} else if (flock(b->fd, LOCK_UN) < 0) {
		rc = -errno;
		snprintf(why, why_len, "disk image %s: flock: %s", b->path,
			 strerror(errno));
	}
	if (rc) {
		pthread_mutex_lock(&b->lock);
		b->released = false;
		pthread_mutex_unlock(&b->lock);
	}
	return rc;
}

static int blk_acquire(struct virtio_device *vd, char *why, size_t why_len)
{
	struct virtio_blk *b = to_blk(vd);
	struct brp_client *client = NULL;
	struct err e = {0};
	bool released;
	int rc;

	pthread_mutex_lock(&b->lock);
	released = b->released;
	pthread_mutex_unlock(&b->lock);
	if (!released)
		return 0;
	if (b->remote)
		rc = blk_connect(b, &client, &e);
	else
		rc = blk_lock_image(b->fd, b->path, b->readonly, &e);
	if (rc) {
		snprintf(why, why_len, "%s", e.msg);
		return rc;
	}
	pthread_mutex_lock(&b->lock);
	if (b->remote)
		b->rc = client;
	b->released = false;
	/* Activated while released (an incoming migration): serve now. */
	if (!b->quiesced) {
		blk_kick_locked(b);
		return 0;
	}
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static const struct virtio_device_ops blk_ops = {
	.features = blk_features,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.queue_kick = blk_queue_kick,
	.activate = blk_activate,
	.reset = blk_reset,
	.quiesce = blk_quiesce,
	.resume = blk_resume,
	.save = blk_save,
	.load = blk_load,
	.release = blk_release,
	.acquire = blk_acquire,
};

/* Does the filesystem punch holes? Probe past the end of the data. */
static bool blk_probe_discard(int fd, uint64_t size)
{
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (size + 4095) & ~4095ULL, 4096) == 0;
}

/* Open, size and (unless @lock is false) lock the image. */
static int blk_open(struct virtio_blk *b, const char *path, bool readonly,
		    bool lock, struct err *e)
{
	struct stat st;
	uint64_t size;
	int fd;

	fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "disk image %s: %s", path,
			       strerror(errno));
	b->fd = fd;
	if (fstat(fd, &st) < 0)
		return err_set(e, -errno, "disk image %s: %s", path,
			       strerror(errno));
	if (S_ISREG(st.st_mode)) {
		size = st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0)
			return err_set(e, -errno, "disk image %s: %s", path,
				       strerror(errno));
	} else {
		return err_set(e, -EINVAL,
			       "disk image %s is not a regular file or block "
			       "device",
			       path);
	}
	if (size == 0)
		return err_set(e, -EINVAL, "disk image %s is empty", path);
	if (size % BLK_SECTOR_SIZE)
		return err_set(e, -EINVAL,
			       "disk image %s: size %llu is not a multiple of "
			       "512 bytes",
			       path, (unsigned long long)size);
	if (lock) {
		int rc = blk_lock_image(fd, path, readonly, e);

		if (rc)
			return rc;
	}
	b->capacity = size >> BLK_SECTOR_SHIFT;
	b->discard_align = 1;
	if (st.st_blksize > BLK_SECTOR_SIZE && st.st_blksize <= (1 << 20))
		b->discard_align = st.st_blksize >> BLK_SECTOR_SHIFT;
	b->can_discard =
		!readonly && S_ISREG(st.st_mode) && blk_probe_discard(fd, size);
	return 0;
}

/* The image or the agent behind a new device. */
static int blk_open_backend(struct virtio_blk *b, const char *path,
			    bool readonly, struct err *e)
{
	if (!b->remote)
		return blk_open(b, path, readonly, !b->released, e);
	if (b->released)
		return 0; /* acquire connects */
	return blk_connect(b, &b->rc, e);
}

/* @path: the image, or with @remote the agent's tcp:HOST:PORT. */
static int blk_create(struct virtio_blk **out, const struct guest_mem *mem,
		      const char *path, bool remote, const uint8_t *key,
		      size_t keylen, bool readonly, unsigned int flags,
		      struct err *e)
{
	struct virtio_blk *b;
	bool lock_ok = false, cond_ok = false, ring_ok = false;
	const char *base;
	int rc;

	*out = NULL;
	if (!path || !*path)
		return err_set(e, -EINVAL, "virtio-blk: no disk image given");
	if (flags & ~VIRTIO_CREATE_RELEASED)
		return err_set(e, -EINVAL, "virtio-blk: unknown flags %#x",
			       flags);
	if (remote && (!key || keylen < BRP_KEY_MIN || keylen > BRP_KEY_MAX))
		return err_set(e, -EINVAL,
			       "virtio-blk %s: a remote disk needs the shared "
			       "secret (--migration-secret)",
			       path);
	b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(e, -ENOMEM, "virtio-blk: out of memory");
	b->fd = -1;
	b->readonly = readonly;
	b->released = flags & VIRTIO_CREATE_RELEASED;
	b->path = strdup(path);
	if (remote) {
		b->remote = strdup(path);
		memcpy(b->key, key, keylen);
		b->keylen = keylen;
	}
	b->req = calloc(BLK_MAX_INFLIGHT, sizeof(*b->req));
	if (!b->req || !b->path || (remote && !b->remote)) {
		rc = err_set(e, -ENOMEM, "virtio-blk: out of memory");
		goto fail;
	}
	for (unsigned int i = 0; i < BLK_MAX_INFLIGHT; i++)
		b->free_slot[i] = BLK_MAX_INFLIGHT - 1 - i;
	b->nfree = BLK_MAX_INFLIGHT;
	rc = -pthread_mutex_init(&b->lock, NULL);
	if (rc) {
		err_set(e, rc, "virtio-blk: mutex: %s", strerror(-rc));
		goto fail;
	}
	lock_ok = true;
	rc = -pthread_cond_init(&b->idle, NULL);
	if (rc) {
		err_set(e, rc, "virtio-blk: condition variable: %s",
			strerror(-rc));
		goto fail;
	}
	cond_ok = true;
	rc = blk_open_backend(b, path, readonly, e);
	if (rc)
		goto fail;
	blk_make_id(b, path);
	rc = io_uring_queue_init(BLK_RING_ENTRIES, &b->ring, 0);
	if (rc) {
		err_set(e, rc, "virtio-blk %s: io_uring unavailable: %s", path,
			strerror(-rc));
		goto fail;
	}
	ring_ok = true;
	base = remote ? NULL : strrchr(path, '/');
	snprintf(b->name, sizeof(b->name), "virtio-blk:%s",
		 base && base[1] ? base + 1 : path);
	rc = virtio_device_init(
		&b->vd, b->name, VIRTIO_ID_BLOCK, 1, BLK_QUEUE_SIZE,
		sizeof(struct virtio_blk_config), &blk_ops, b, mem);
	if (rc) {
		err_set(e, rc, "virtio-blk %s: device init failed: %s", path,
			strerror(-rc));
		goto fail;
	}
	*out = b;
	return 0;

fail:
	brp_client_close(b->rc);
	if (ring_ok)
		io_uring_queue_exit(&b->ring);
	if (b->fd >= 0)
		close(b->fd);
	if (cond_ok)
		pthread_cond_destroy(&b->idle);
	if (lock_ok)
		pthread_mutex_destroy(&b->lock);
	free(b->req);
	free(b->path);
	free(b->remote);
	sodium_memzero(b->key, sizeof(b->key));
	free(b);
	return rc;
}

int virtio_blk_create(struct virtio_blk **out, const struct guest_mem *mem,
		      const char *path, bool readonly, unsigned int flags,
		      struct err *e)
{
	return blk_create(out, mem, path, false, NULL, 0, readonly, flags, e);
}

int virtio_blk_create_remote(struct virtio_blk **out,
			     const struct guest_mem *mem, const char *uri,
			     const uint8_t *key, size_t keylen, bool readonly,
			     unsigned int flags, struct err *e)
{
	return blk_create(out, mem, uri, true, key, keylen, readonly, flags, e);
}

/* ---- device-switch: from the remote disk to a local copy ---- */

static bool blk_dirty_take(struct virtio_blk *b, uint64_t i)
{
	if (!(b->dirty[i / 8] & (1u << (i % 8))))
		return false;
	b->dirty[i / 8] &= (uint8_t) ~(1u << (i % 8));
	b->ndirty--;
	return true;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/*
 * Copy every dirty region from the agent into @fd. A region's bit is
 * cleared and its READ queued under b->lock, so a guest write queued
 * before it is in the image when the agent (which serves in order) reads,
 * and one queued after sets the bit again. @sparse: @fd holds zeros where
 * nothing was copied yet (all-zero regions need no write).
 */
static int blk_copy_dirty(struct virtio_blk *b, int fd, uint8_t *buf,
			  bool sparse, struct err *e)
{
	uint64_t bytes = b->capacity << BLK_SECTOR_SHIFT;

	for (uint64_t i = 0; i < b->nregions; i++) {
		uint64_t off = i * BLK_REGION;
		struct brp_sync s = {.type = BRP_READ,
				     .offset = off,
				     .length = bytes - off < BLK_REGION ?
						       bytes - off :
						       BLK_REGION,
				     .buf = buf};
		bool take;
		int rc = 0;

		pthread_mutex_lock(&b->lock);
		take = blk_dirty_take(b, i);
		if (take)
			rc = brp_client_sync_start(b->rc, &s);
		pthread_mutex_unlock(&b->lock);
		if (!take)
			continue;
		if (!rc)
			rc = brp_client_sync_wait(b->rc, &s);
		if (rc)
			return err_set(e, rc,
				       "reading the remote disk at %llu: %s",
				       (unsigned long long)off, strerror(-rc));
		if (sparse && all_zero(buf, s.length))
			continue;
		for (uint64_t done = 0; done < s.length;) {
			ssize_t n = pwrite(fd, buf + done, s.length - done,
					   (off_t)(off + done));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return err_set(e, n < 0 ? -errno : -EIO,
					       "writing the local copy: %s",
					       n < 0 ? strerror(errno) :
						       "short write");
			done += (uint64_t)n;
		}
	}
	return 0;
}

/* Open, lock and size the local copy. */
static int blk_open_copy(struct virtio_blk *b, const char *path, int *out,
			 struct err *e)
{
	uint64_t bytes = b->capacity << BLK_SECTOR_SHIFT, size = 0;
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(e, -errno, "%s: %s", path, strerror(errno));
	rc = blk_lock_image(fd, path, false, e);
	if (!rc && fstat(fd, &st) < 0)
		rc = err_set(e, -errno, "%s: %s", path, strerror(errno));
	if (!rc && S_ISREG(st.st_mode)) {
		/* Empty, then the size: zeros everywhere, holes mostly. */
		if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)bytes) < 0)
			rc = err_set(e, -errno, "%s: %s", path,
				     strerror(errno));
	} else if (!rc && S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0)
			rc = err_set(e, -errno, "%s: %s", path,
				     strerror(errno));
		else if (size != bytes)
			rc = err_set(e, -EINVAL,
				     "%s holds %llu bytes, the disk %llu", path,
				     (unsigned long long)size,
				     (unsigned long long)bytes);
	} else if (!rc) {
		rc = err_set(e, -EINVAL,
			     "%s is not a regular file or block device", path);
	}
	if (rc) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* Wait, with b->lock held, until nothing is in flight or on its way out. */
static void blk_wait_idle(struct virtio_blk *b)
{
	while (b->inflight || b->after_unlock)
		pthread_cond_wait(&b->idle, &b->lock);
}

/* Give up a device-switch: the remote disk goes on serving. */
static void blk_switch_abort(struct virtio_blk *b)
{
	pthread_mutex_lock(&b->lock);
	b->track = false;
	b->switching = false;
	free(b->dirty);
	b->dirty = NULL;
	if (b->switch_hold) {
		b->switch_hold = false;
		blk_kick_locked(b);
		return;
	}
	pthread_mutex_unlock(&b->lock);
}

int virtio_blk_switch(struct virtio_blk *b, const char *path,
		      struct virtio_blk_switch_stats *st, struct err *e)
{
	struct brp_client *old;
	uint64_t t0 = 0, t1;
	uint8_t *buf = NULL;
	char *newpath = NULL;
	int fd = -1, rc = 0;
	struct timespec ts;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&b->lock);
	if (!b->rc || b->released)
		rc = err_set(e, -EINVAL, "%s is not served by a disk agent%s",
			     b->vd.name, b->released ? " now" : "");
	else if (b->switching)
		rc = err_set(e, -EBUSY, "a device-switch of %s is under way",
			     b->vd.name);
	if (!rc) {
		b->nregions =
			((b->capacity << BLK_SECTOR_SHIFT) + BLK_REGION - 1) /
			BLK_REGION;
		b->dirty = malloc((b->nregions + 7) / 8);
		if (!b->dirty)
			rc = err_set(e, -ENOMEM, "out of memory");
	}
	if (!rc) {
		memset(b->dirty, 0xff, (b->nregions + 7) / 8);
		b->ndirty = b->nregions;
		b->dirty[(b->nregions - 1) / 8] =
			(uint8_t)(0xffu >> ((8 - b->nregions % 8) % 8));
		b->track = true;
		b->switching = true;
	}
	pthread_mutex_unlock(&b->lock);
	if (rc)
		return rc;

	buf = malloc(BLK_REGION);
	newpath = strdup(path);
	if (!buf || !newpath)
		rc = err_set(e, -ENOMEM, "out of memory");
	if (!rc)
		rc = blk_open_copy(b, path, &fd, e);
	/* While the guest runs: copy, then what it wrote meanwhile. */
	for (uint64_t pass = 0, before = UINT64_MAX; !rc; pass++) {
		uint64_t left;

		pthread_mutex_lock(&b->lock);
		left = b->ndirty;
		pthread_mutex_unlock(&b->lock);
		/* Few left, or the guest dirties as fast as we copy. */
		if (left <= BLK_SWITCH_FINAL || pass >= BLK_SWITCH_PASSES ||
		    (pass >= 2 && left >= before))
			break;
		before = left;
		rc = blk_copy_dirty(b, fd, buf, pass == 0, e);
		st->passes++;
	}
	/* The guest waits: the rest, then the local image takes over. */
	if (!rc) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t0 = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
		pthread_mutex_lock(&b->lock);
		b->switch_hold = true;
		blk_wait_idle(b);
		st->final_regions = b->ndirty;
		pthread_mutex_unlock(&b->lock);
		rc = blk_copy_dirty(b, fd, buf, false, e);
	}
	if (!rc && fdatasync(fd) < 0)
		rc = err_set(e, -errno, "%s: fdatasync: %s", path,
			     strerror(errno));
	free(buf);
	if (rc) {
		if (fd >= 0)
			close(fd);
		free(newpath);
		blk_switch_abort(b);
		return rc;
	}
	pthread_mutex_lock(&b->lock);
	old = b->rc;
	b->rc = NULL;
	b->fd = fd;
	free(b->path);
	b->path = newpath;
	free(b->remote);
	b->remote = NULL;
	b->track = false;
	b->switching = false;
	free(b->dirty);
	b->dirty = NULL;
	b->switch_hold = false;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t1 = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	st->paused_us = (t1 - t0) / 1000;
	blk_kick_locked(b);
	/* Nothing is in flight to the agent: just hang up. */
	brp_client_close(old);
	return 0;
}

struct virtio_device *virtio_blk_device(struct virtio_blk *b)
{
	return &b->vd;
}

void virtio_blk_get_stats(struct virtio_blk *b, struct virtio_blk_stats *s)
{
	pthread_mutex_lock(&b->lock);
	*s = b->stats;
	pthread_mutex_unlock(&b->lock);
}

void virtio_blk_destroy(struct virtio_blk *b)
{
	struct brp_client *rc;

	if (!b)
		return;
	/* A remote disk: requests in flight fail rather than wait. */
	pthread_mutex_lock(&b->lock);
	rc = b->rc;
	b->rc = NULL;
	pthread_mutex_unlock(&b->lock);
	brp_client_close(rc);
	blk_stop(b);
	virtio_device_destroy(&b->vd);
	io_uring_queue_exit(&b->ring);
	if (b->fd >= 0)
		close(b->fd);
	free(b->remote);
	free(b->dirty);
	sodium_memzero(b->key, sizeof(b->key));
	pthread_cond_destroy(&b->idle);
	pthread_mutex_destroy(&b->lock);
	free(b->req);
	free(b->path);
	free(b);
}
