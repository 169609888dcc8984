/*
 * tests/unit/test_virtio_devices.c - virtio-blk, -net, -console and -rng
 * driven without KVM: the test plays the driver, with split rings in guest
 * memory, and the transport, with a fake that records queue and
 * configuration interrupts and signals a condition variable. Queues are
 * enabled with vq_enable, the device is started with ops->activate, chains
 * are posted and kicked with ops->queue_kick, and the test waits (with a
 * timeout, never a sleep) for the used entries.
 *
 * The harness (fake guest memory, transport and driver, taps) is in
 * virtio_harness.h, shared with test_virtio_net.c.
 *
 * Remote disks talk to a disk agent (blk_remote.c's brp_serve) in a thread
 * of the test over loopback TCP, device-switch included.
 *
 * The net tests need /dev/net/tun and CAP_NET_ADMIN and are skipped
 * without them; they watch the tap from the host side with an AF_PACKET
 * socket.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
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
#include <endian.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/guest_mem.h"
#include "util/err.h"
#include "util/log.h"
#include "virtio/blk_remote.h"
#include "virtio/devices.h"
#include "virtio/virtio.h"
#include "virtio/virtqueue.h"

/* Spec constants the tests use (the devices keep theirs private). */
#define BLK_F_SEG_MAX 2
#define BLK_F_RO 5
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH 9
#define BLK_F_DISCARD 13
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_T_DISCARD 11
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2

struct harness;

/*
 * A device call made from a thread of the test's own (no asserts there);
 * kept in the harness so that teardown can join it after a failure.
 */
struct bg {
	struct harness *h;
	void (*fn)(struct harness *h);
	pthread_t t;
	bool started;
	bool done; /* under h->ft.lock */
};

/* struct harness's members of this test's own: its devices. */
#define HARNESS_OWN_FIELDS                         \
	struct virtio_blk *blk;                    \
	struct virtio_net *net;                    \
	struct virtio_console *con;                \
	struct virtio_rng *rng;                    \
	char path[64];                             \
	int fds[4];                                \
	int pkt; /* AF_PACKET socket on the tap */ \
	struct bg bg[2];

#include "virtio_harness.h"

static int setup(void **state)
{
	struct harness *h = harness_new();

	for (int i = 0; i < 4; i++)
		h->fds[i] = -1;
	h->pkt = -1;
	*state = h;
	return 0;
}

static void gate_set(struct harness *h, bool closed)
{
	pthread_mutex_lock(&h->ft.lock);
	h->ft.gate_closed = closed;
	pthread_cond_broadcast(&h->ft.cond);
	pthread_mutex_unlock(&h->ft.lock);
}

static int teardown(void **state)
{
	struct harness *h = *state;

	gate_set(h, false);
	for (int i = 0; i < 2; i++)
		if (h->bg[i].started)
			pthread_join(h->bg[i].t, NULL);
	stop_device(h);
	virtio_blk_destroy(h->blk);
	virtio_net_destroy(h->net);
	virtio_console_destroy(h->con);
	virtio_rng_destroy(h->rng);
	if (h->path[0])
		unlink(h->path);
	for (int i = 0; i < 4; i++)
		if (h->fds[i] >= 0)
			close(h->fds[i]);
	if (h->pkt >= 0)
		close(h->pkt);
	harness_free(h);
	return 0;
}

/* The device's next avail index on @q: how many chains it has taken. */
static uint16_t last_avail(struct harness *h, int q)
{
	struct virtqueue *vq = &h->vd->vq[q];
	uint16_t v;

	pthread_mutex_lock(&vq->lock);
	v = vq->last_avail;
	pthread_mutex_unlock(&vq->lock);
	return v;
}

/*
 * Wait until the device has taken exactly @n chains from @q (a thread of
 * its own pops them; nothing signals that, so look every millisecond).
 */
static bool wait_popped(struct harness *h, int q, uint16_t n)
{
	struct timespec ts, ms = {0, 1000000};

	deadline_after(&ts, WAIT_MS);
	for (;;) {
		if (last_avail(h, q) == n)
			return true;
		if (past(&ts))
			return false;
		nanosleep(&ms, NULL);
	}
}

/* used->idx the last queue interrupt saw. */
static uint16_t irq_used(struct harness *h, int q)
{
	uint16_t v;

	pthread_mutex_lock(&h->ft.lock);
	v = h->ft.irq_used[q];
	pthread_mutex_unlock(&h->ft.lock);
	return v;
}

/* Wait until a queue interrupt waits at the closed gate. */
static bool wait_gate(struct harness *h)
{
	return wait_count(h, &h->ft.gate_waiting, 1);
}

static void *bg_main(void *arg)
{
	struct bg *b = arg;

	b->fn(b->h);
	pthread_mutex_lock(&b->h->ft.lock);
	b->done = true;
	pthread_cond_broadcast(&b->h->ft.cond);
	pthread_mutex_unlock(&b->h->ft.lock);
	return NULL;
}

static struct bg *bg_start(struct harness *h, int i,
			   void (*fn)(struct harness *h))
{
	struct bg *b = &h->bg[i];

	*b = (struct bg){.h = h, .fn = fn};
	assert_int_equal(pthread_create(&b->t, NULL, bg_main, b), 0);
	b->started = true;
	return b;
}

static void bg_join(struct bg *b)
{
	pthread_join(b->t, NULL);
	b->started = false;
}

/* Has it returned within @ms? */
static bool bg_done(struct bg *b, int ms)
{
	struct harness *h = b->h;
	struct timespec ts;
	bool done;

	deadline_after(&ts, ms);
	pthread_mutex_lock(&h->ft.lock);
	while (!b->done && pthread_cond_timedwait(&h->ft.cond, &h->ft.lock,
						  &ts) != ETIMEDOUT)
		;
	done = b->done;
	pthread_mutex_unlock(&h->ft.lock);
	return done;
}

static void bg_kick0(struct harness *h)
{
	kick(h, 0);
}

static void bg_kick1(struct harness *h)
{
	kick(h, 1);
}

static void bg_quiesce(struct harness *h)
{
	h->vd->ops->quiesce(h->vd);
}

/*
 * A queue interrupt for a finished request held up in the transport:
 * quiesce waits for it (it must be out before the state is saved).
 */
static void quiesce_waits_for_irq(struct harness *h, int q)
{
	struct bg *k, *qs;

	gate_set(h, true);
	k = bg_start(h, 0, q ? bg_kick1 : bg_kick0);
	assert_true(wait_gate(h));
	qs = bg_start(h, 1, bg_quiesce);
	/* (A correct device never returns here; 200 ms to notice one that
	 * does.) */
	assert_false(bg_done(qs, 200));
	gate_set(h, false);
	assert_true(bg_done(qs, WAIT_MS));
	assert_true(bg_done(k, WAIT_MS));
	bg_join(qs);
	bg_join(k);
	assert_true(wait_used(h, q, 1));
	assert_int_equal(irq_used(h, q), used_idx(&h->ring[q]));
}

/* A page-aligned buffer (so the write log's pages can be told apart). */
static uint64_t galloc_page(struct harness *h, uint64_t len)
{
	h->next_data = (h->next_data + 4095) & ~4095ULL;
	return galloc(h, (len + 4095) & ~4095ULL);
}

/* The device-write log: a bit per 4 KiB page of the test's 16 MiB. */
#define LOG_WORDS (MEM_SIZE / 4096 / 64)

static void log_take(struct harness *h, uint64_t *map)
{
	assert_int_equal(h->mem.nregions, 1);
	memset(map, 0, LOG_WORDS * sizeof(*map));
	guest_mem_log_take(&h->mem, 0, map);
}

static bool logged(const uint64_t *map, uint64_t gpa)
{
	uint64_t p = gpa / 4096;

	return map[p / 64] & (1ULL << (p % 64));
}

/* ======================================================================
 * virtio-blk
 * ====================================================================== */

#define DISK_SECTORS 2048 /* 1 MiB */

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
} __attribute__((packed));

static void make_disk(struct harness *h, uint64_t size)
{
	int fd;

	snprintf(h->path, sizeof(h->path), "/tmp/dvmm-vblk-XXXXXX");
	fd = mkstemp(h->path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	close(fd);
}

/* Create a disk on a fresh 1 MiB image and start it with @features. */
static void blk_start_f(struct harness *h, bool readonly, uint64_t features)
{
	struct err e = {0};

	make_disk(h, DISK_SECTORS * 512ULL);
	assert_int_equal(
		virtio_blk_create(&h->blk, &h->mem, h->path, readonly, 0, &e),
		0);
	start_device(h, virtio_blk_device(h->blk), features);
}

/* ... with every feature the device offers. */
static void blk_start(struct harness *h, bool readonly)
{
	struct err e = {0};
	struct virtio_device *vd;

	make_disk(h, DISK_SECTORS * 512ULL);
	assert_int_equal(
		virtio_blk_create(&h->blk, &h->mem, h->path, readonly, 0, &e),
		0);
	vd = virtio_blk_device(h->blk);
	start_device(h, vd, vd->ops->features(vd));
}

static uint64_t put_hdr(struct harness *h, uint32_t type, uint64_t sector)
{
	uint64_t gpa = galloc(h, sizeof(struct blk_hdr));
	struct blk_hdr *hd = gptr(h, gpa, sizeof(*hd));

	hd->type = type;
	hd->reserved = 0;
	hd->sector = sector;
	return gpa;
}

/* A request: header, data (device-writable for IN/GET_ID), status. */
static uint8_t *blk_post(struct harness *h, uint32_t type, uint64_t sector,
			 uint64_t data, uint32_t len, bool indirect)
{
	uint64_t st = galloc(h, 1);
	uint8_t *status = gptr(h, st, 1);
	bool dev_writes = type == BLK_T_IN || type == BLK_T_GET_ID;
	struct seg s[3];
	int n = 0;

	s[n++] = (struct seg){put_hdr(h, type, sector), 16, false};
	if (len)
		s[n++] = (struct seg){data, len, dev_writes};
	s[n++] = (struct seg){st, 1, true};
	*status = 0xee;
	post(h, 0, s, n, indirect);
	return status;
}

/* Issue one request and wait for it. Returns the status byte. */
static uint8_t blk_do(struct harness *h, uint32_t type, uint64_t sector,
		      uint64_t data, uint32_t len, uint32_t *used_len)
{
	uint8_t *status = blk_post(h, type, sector, data, len, false);

	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	if (used_len)
		*used_len = last_used(h, 0).len;
	return *status;
}

static void fill_pattern(uint8_t *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + seed * 13 + (i >> 9));
}

static void test_blk_config_and_features(void **state)
{
	struct harness *h = *state;
	struct virtio_device *vd;
	struct err e = {0};
	uint8_t cfg[72];
	uint64_t cap, f;
	uint32_t u32;

	make_disk(h, DISK_SECTORS * 512ULL);
	assert_int_equal(
		virtio_blk_create(&h->blk, &h->mem, h->path, false, 0, &e), 0);
	vd = virtio_blk_device(h->blk);
	assert_int_equal(vd->device_id, VIRTIO_ID_BLOCK);
	assert_int_equal(vd->num_queues, 1);
	assert_int_equal(vd->config_size, 72);
	f = vd->ops->features(vd);
	assert_true(f & (1ULL << BLK_F_SEG_MAX));
	assert_true(f & (1ULL << BLK_F_BLK_SIZE));
	assert_true(f & (1ULL << BLK_F_FLUSH));
	assert_false(f & (1ULL << BLK_F_RO));
	vd->ops->config_read(vd, 0, cfg, sizeof(cfg));
	memcpy(&cap, cfg, 8);
	assert_int_equal(cap, DISK_SECTORS);
	memcpy(&u32, cfg + 12, 4);
	assert_true(u32 >= 1 && u32 <= VQ_MAX_SEGS);
	memcpy(&u32, cfg + 20, 4);
	assert_int_equal(u32, 512);
	/* A partial, unaligned read sees the same bytes. */
	{
		uint8_t b[3];

		vd->ops->config_read(vd, 1, b, 3);
		assert_memory_equal(b, cfg + 1, 3);
	}
	if (f & (1ULL << BLK_F_DISCARD)) {
		memcpy(&u32, cfg + 36, 4); /* max_discard_sectors */
		assert_true(u32 > 0);
		memcpy(&u32, cfg + 40, 4); /* max_discard_seg */
		assert_true(u32 >= 1);
	}
}

static void test_blk_create_errors(void **state)
{
	struct harness *h = *state;
	struct virtio_blk *b = NULL;
	struct err e = {0};
	int fd;

	assert_int_equal(virtio_blk_create(&b, &h->mem,
					   "/nonexistent/dvmm-disk.img", false,
					   0, &e),
			 -ENOENT);
	assert_null(b);
	assert_non_null(strstr(e.msg, "/nonexistent/dvmm-disk.img"));

	err_clear(&e);
	assert_true(virtio_blk_create(&b, &h->mem, "/tmp", false, 0, &e) < 0);
	assert_true(virtio_blk_create(&b, &h->mem, "/tmp", true, 0, &e) < 0);
	assert_null(b);
	assert_true(e.msg[0] != '\0');

	make_disk(h, 1000);
	err_clear(&e);
	assert_int_equal(virtio_blk_create(&b, &h->mem, h->path, false, 0, &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "multiple of 512"));

	fd = open(h->path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	close(fd);
	err_clear(&e);
	assert_int_equal(virtio_blk_create(&b, &h->mem, h->path, false, 0, &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "empty"));
	assert_null(b);
}

static void test_blk_write_read(void **state)
{
	struct harness *h = *state;
	uint64_t wbuf, rbuf;
	uint8_t file[4096];
	struct virtio_blk_stats st;
	uint32_t len;
	int fd;

	blk_start(h, false);
	wbuf = galloc(h, 4096);
	rbuf = galloc(h, 4096);
	fill_pattern(gptr(h, wbuf, 4096), 4096, 1);
	memset(gptr(h, rbuf, 4096), 0, 4096);

	assert_int_equal(blk_do(h, BLK_T_OUT, 8, wbuf, 4096, &len), BLK_S_OK);
	assert_int_equal(len, 1);
	assert_int_equal(blk_do(h, BLK_T_IN, 8, rbuf, 4096, &len), BLK_S_OK);
	assert_int_equal(len, 4096 + 1);
	assert_memory_equal(gptr(h, rbuf, 4096), gptr(h, wbuf, 4096), 4096);

	/* The bytes are in the file, at sector 8. */
	fd = open(h->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, file, sizeof(file), 8 * 512), sizeof(file));
	close(fd);
	assert_memory_equal(file, gptr(h, wbuf, 4096), 4096);

	/* Last sector of the disk: in range. */
	assert_int_equal(
		blk_do(h, BLK_T_OUT, DISK_SECTORS - 1, wbuf, 512, NULL),
		BLK_S_OK);
	/* A zero-length read is fine and moves nothing. */
	assert_int_equal(blk_do(h, BLK_T_IN, 0, 0, 0, &len), BLK_S_OK);
	assert_int_equal(len, 1);

	virtio_blk_get_stats(h->blk, &st);
	assert_int_equal(st.writes, 2);
	assert_int_equal(st.reads, 1);
	assert_int_equal(st.write_bytes, 4096 + 512);
	assert_int_equal(st.read_bytes, 4096);
	assert_int_equal(st.errors, 0);
	assert_true(h->ft.queue_irqs[0] >= 4);
}

/* Header split in two, data in eight 512-byte pieces, some via INDIRECT. */
static void test_blk_scattered(void **state)
{
	struct harness *h = *state;
	uint64_t hdr = 0, data[8], st;
	uint8_t *status, expect[4096];
	struct seg s[11];
	int n = 0;

	blk_start_f(h, false,
		    (1ULL << BLK_F_FLUSH) | (1ULL << VIRTIO_F_INDIRECT_DESC));
	for (int i = 0; i < 8; i++) {
		data[i] = galloc(h, 512 + 16);
		fill_pattern(gptr(h, data[i], 512), 512, 100 + i);
		memcpy(expect + 512 * i, gptr(h, data[i], 512), 512);
	}
	/* Write: [hdr 0..8][hdr 8..16][8 x data][status] */
	hdr = put_hdr(h, BLK_T_OUT, 100);
	st = galloc(h, 1);
	s[n++] = (struct seg){hdr, 8, false};
	s[n++] = (struct seg){hdr + 8, 8, false};
	for (int i = 0; i < 8; i++)
		s[n++] = (struct seg){data[i], 512, false};
	s[n++] = (struct seg){st, 1, true};
	status = gptr(h, st, 1);
	*status = 0xee;
	post(h, 0, s, n, true);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(*status, BLK_S_OK);

	/* Read it back scattered the other way round. */
	for (int i = 0; i < 8; i++)
		memset(gptr(h, data[i], 512), 0, 512);
	n = 0;
	hdr = put_hdr(h, BLK_T_IN, 100);
	s[n++] = (struct seg){hdr, 16, false};
	for (int i = 7; i >= 0; i--)
		s[n++] = (struct seg){data[i], 512, true};
	s[n++] = (struct seg){st, 1, true};
	*status = 0xee;
	post(h, 0, s, n, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(*status, BLK_S_OK);
	assert_int_equal(last_used(h, 0).len, 4097);
	for (int i = 0; i < 8; i++)
		assert_memory_equal(gptr(h, data[7 - i], 512), expect + 512 * i,
				    512);
}

static void test_blk_flush_and_get_id(void **state)
{
	struct harness *h = *state;
	struct virtio_blk_stats st;
	uint64_t id = 0;
	uint32_t len;
	char idbuf[21] = {0};

	blk_start(h, false);
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, &len), BLK_S_OK);
	assert_int_equal(len, 1);
	virtio_blk_get_stats(h->blk, &st);
	assert_int_equal(st.flushes, 1);

	id = galloc(h, 20);
	memset(gptr(h, id, 20), 0xff, 20);
	assert_int_equal(blk_do(h, BLK_T_GET_ID, 0, id, 20, &len), BLK_S_OK);
	assert_int_equal(len, 21);
	memcpy(idbuf, gptr(h, id, 20), 20);
	assert_int_equal(strncmp(idbuf, "dvmm-", 5), 0);
	assert_int_equal(strlen(idbuf), 20);
	/* The same path gives the same id. */
	{
		uint64_t id2 = galloc(h, 20);

		assert_int_equal(blk_do(h, BLK_T_GET_ID, 0, id2, 20, NULL),
				 BLK_S_OK);
		assert_memory_equal(gptr(h, id2, 20), idbuf, 20);
	}
}

static void test_blk_bad_requests(void **state)
{
	struct harness *h = *state;
	uint64_t buf;
	uint8_t before[1024], after[1024];
	struct virtio_blk_stats st;
	uint32_t len;
	int fd;

	blk_start(h, false);
	buf = galloc(h, 1024);
	fill_pattern(gptr(h, buf, 1024), 1024, 7);

	/* Beyond the end, straddling the end, and far beyond. */
	assert_int_equal(blk_do(h, BLK_T_IN, DISK_SECTORS, buf, 512, &len),
			 BLK_S_IOERR);
	assert_int_equal(len, 1);
	assert_int_equal(
		blk_do(h, BLK_T_OUT, DISK_SECTORS - 1, buf, 1024, NULL),
		BLK_S_IOERR);
	assert_int_equal(blk_do(h, BLK_T_IN, UINT64_MAX, buf, 512, NULL),
			 BLK_S_IOERR);
	assert_int_equal(
		blk_do(h, BLK_T_OUT, UINT64_MAX / 512, buf, 1024, NULL),
		BLK_S_IOERR);
	/* Data not a multiple of 512. */
	assert_int_equal(blk_do(h, BLK_T_OUT, 0, buf, 1000, NULL), BLK_S_IOERR);
	assert_int_equal(blk_do(h, BLK_T_IN, 0, buf, 513, NULL), BLK_S_IOERR);
	/* Unknown type. */
	assert_int_equal(blk_do(h, 99, 0, 0, 0, &len), BLK_S_UNSUPP);
	assert_int_equal(len, 1);
	assert_int_equal(blk_do(h, 0x80000000u, 0, 0, 0, NULL), BLK_S_UNSUPP);

	/* Header too short (8 bytes readable): IOERR, not a crash. */
	{
		uint64_t st_gpa = galloc(h, 1);
		uint8_t *status = gptr(h, st_gpa, 1);
		struct seg s[2] = {
			{put_hdr(h, BLK_T_IN, 0), 8, false},
			{st_gpa, 1, true},
		};

		*status = 0xee;
		post(h, 0, s, 2, false);
		kick(h, 0);
		assert_true(wait_used(h, 0, 1));
		assert_int_equal(*status, BLK_S_IOERR);
	}

	/* Nothing above reached the file. */
	fd = open(h->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, after, sizeof(after), 0), sizeof(after));
	close(fd);
	memset(before, 0, sizeof(before));
	assert_memory_equal(before, after, sizeof(after));
	virtio_blk_get_stats(h->blk, &st);
	assert_int_equal(st.errors, 9);
	assert_false(virtio_needs_reset(h->vd));
	/* Still serving. */
	assert_int_equal(blk_do(h, BLK_T_OUT, 0, buf, 512, NULL), BLK_S_OK);
}

static void test_blk_readonly(void **state)
{
	struct harness *h = *state;
	uint64_t buf;
	uint8_t zero[512] = {0}, file[512];
	int fd;

	blk_start(h, true);
	assert_true(h->vd->ops->features(h->vd) & (1ULL << BLK_F_RO));
	assert_false(h->vd->ops->features(h->vd) & (1ULL << BLK_F_DISCARD));
	buf = galloc(h, 512);
	fill_pattern(gptr(h, buf, 512), 512, 3);
	assert_int_equal(blk_do(h, BLK_T_OUT, 0, buf, 512, NULL), BLK_S_IOERR);
	fd = open(h->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, file, 512, 0), 512);
	close(fd);
	assert_memory_equal(file, zero, 512);
	/* Reads, flushes still work. */
	assert_int_equal(blk_do(h, BLK_T_IN, 0, buf, 512, NULL), BLK_S_OK);
	assert_memory_equal(gptr(h, buf, 512), zero, 512);
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
}

/* A chain with no writable byte has nowhere to put a status. */
static void test_blk_no_status_needs_reset(void **state)
{
	struct harness *h = *state;
	uint64_t buf;
	struct seg s[2];

	blk_start(h, false);
	buf = galloc(h, 512);
	s[0] = (struct seg){put_hdr(h, BLK_T_OUT, 0), 16, false};
	s[1] = (struct seg){buf, 512, false};
	post(h, 0, s, 2, false);
	kick(h, 0);
	assert_true(wait_config_irqs(h, 1));
	assert_true(virtio_needs_reset(h->vd));
	assert_int_equal(used_idx(&h->ring[0]), 0);

	/* Until reset nothing more is served... */
	blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	kick(h, 0);
	assert_int_equal(used_idx(&h->ring[0]), 0);

	/* ...and after a reset the device works again. */
	restart_device(h);
	assert_false(virtio_needs_reset(h->vd));
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
}

/* A descriptor pointing outside guest RAM: the ring is broken. */
static void test_blk_bad_descriptor_needs_reset(void **state)
{
	struct harness *h = *state;
	struct seg s[3];

	blk_start(h, false);
	s[0] = (struct seg){put_hdr(h, BLK_T_IN, 0), 16, false};
	s[1] = (struct seg){MEM_SIZE - 256, 512, true};
	s[2] = (struct seg){galloc(h, 1), 1, true};
	post(h, 0, s, 3, false);
	kick(h, 0);
	assert_true(wait_config_irqs(h, 1));
	assert_true(virtio_needs_reset(h->vd));
	assert_int_equal(used_idx(&h->ring[0]), 0);
}

/* More requests than slots: all complete, in any order, correctly. */
static void test_blk_many_in_flight(void **state)
{
	struct harness *h = *state;
	enum { N = 200, SZ = 4096 };
	uint64_t data[N];
	uint8_t *status[N];
	bool seen[N];

	blk_start_f(h, false,
		    (1ULL << BLK_F_FLUSH) | (1ULL << VIRTIO_F_INDIRECT_DESC));
	for (int i = 0; i < N; i++) {
		data[i] = galloc(h, SZ);
		fill_pattern(gptr(h, data[i], SZ), SZ, i);
		status[i] = blk_post(h, BLK_T_OUT, (uint64_t)i * 8 % 2000,
				     data[i], SZ, true);
		if (i == 63)
			kick(h, 0); /* a first batch of 64 */
	}
	kick(h, 0);
	assert_true(wait_used(h, 0, N));
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < N; i++) {
		struct vring_used_elem u = used_elem(h, 0, i);

		assert_true(u.id < QSIZE);
		assert_int_equal(u.len, 1);
		assert_false(seen[u.id]);
		seen[u.id] = true;
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(*status[i], BLK_S_OK);

	/* 64 reads in one go, compared with what was written last. */
	for (int i = 0; i < 64; i++) {
		status[i] = blk_post(h, BLK_T_IN, (uint64_t)(N - 64 + i) * 8,
				     galloc(h, SZ), SZ, true);
		(void)status[i];
	}
	kick(h, 0);
	assert_true(wait_used(h, 0, 64));
	for (int i = 0; i < 64; i++)
		assert_int_equal(*status[i], BLK_S_OK);
}

static void test_blk_writethrough_without_flush(void **state)
{
	struct harness *h = *state;
	uint64_t buf;

	/* FLUSH not negotiated: writes are stable on completion (DSYNC). */
	blk_start_f(h, false, 0);
	buf = galloc(h, 512);
	fill_pattern(gptr(h, buf, 512), 512, 9);
	assert_int_equal(blk_do(h, BLK_T_OUT, 3, buf, 512, NULL), BLK_S_OK);
	memset(gptr(h, buf, 512), 0, 512);
	assert_int_equal(blk_do(h, BLK_T_IN, 3, buf, 512, NULL), BLK_S_OK);
	{
		uint8_t expect[512];

		fill_pattern(expect, 512, 9);
		assert_memory_equal(gptr(h, buf, 512), expect, 512);
	}
}

struct blk_discard_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
} __attribute__((packed));

static uint8_t blk_discard(struct harness *h, uint64_t sector, uint32_t nsect,
			   uint32_t flags, int nseg)
{
	uint64_t d = galloc(h, 16ULL * nseg);
	struct blk_discard_seg *ds = gptr(h, d, 16ULL * nseg);
	uint64_t st = galloc(h, 1);
	uint8_t *status = gptr(h, st, 1);
	struct seg s[3] = {
		{put_hdr(h, BLK_T_DISCARD, 0), 16, false},
		{d, 16 * nseg, false},
		{st, 1, true},
	};

	for (int i = 0; i < nseg; i++)
		ds[i] = (struct blk_discard_seg){sector, nsect, flags};
	*status = 0xee;
	post(h, 0, s, 3, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	return *status;
}

static void test_blk_discard(void **state)
{
	struct harness *h = *state;
	uint64_t buf;
	uint8_t zero[8192] = {0};

	blk_start(h, false);
	if (!(h->features & (1ULL << BLK_F_DISCARD))) {
		/* Not offered (no hole punching here): UNSUPP. */
		assert_int_equal(blk_discard(h, 0, 8, 0, 1), BLK_S_UNSUPP);
		skip();
	}
	buf = galloc(h, 8192);
	fill_pattern(gptr(h, buf, 8192), 8192, 5);
	assert_int_equal(blk_do(h, BLK_T_OUT, 16, buf, 8192, NULL), BLK_S_OK);
	assert_int_equal(blk_discard(h, 16, 16, 0, 1), BLK_S_OK);
	memset(gptr(h, buf, 8192), 0xaa, 8192);
	assert_int_equal(blk_do(h, BLK_T_IN, 16, buf, 8192, NULL), BLK_S_OK);
	assert_memory_equal(gptr(h, buf, 8192), zero, 8192);
	/* unmap flag on discard: UNSUPP; out of range: IOERR; too many
	 * segments: IOERR. */
	assert_int_equal(blk_discard(h, 0, 8, 1, 1), BLK_S_UNSUPP);
	assert_int_equal(blk_discard(h, DISK_SECTORS - 4, 8, 0, 1),
			 BLK_S_IOERR);
	assert_int_equal(blk_discard(h, 0, 8, 0, 2), BLK_S_IOERR);

	/* Without the feature negotiated: UNSUPP. */
	restart_device(h);
	stop_device(h);
	start_device(h, h->vd, 1ULL << BLK_F_FLUSH);
	assert_int_equal(blk_discard(h, 0, 8, 0, 1), BLK_S_UNSUPP);
}

/* Reset with requests queued and in flight; then the device works. */
static void test_blk_reset_in_flight(void **state)
{
	struct harness *h = *state;

	blk_start_f(h, false,
		    (1ULL << BLK_F_FLUSH) | (1ULL << VIRTIO_F_INDIRECT_DESC));
	for (int i = 0; i < 150; i++)
		blk_post(h, i % 3 ? BLK_T_OUT : BLK_T_FLUSH, i,
			 i % 3 ? galloc(h, 4096) : 0, i % 3 ? 4096 : 0, true);
	kick(h, 0);
	restart_device(h);
	h->next_data = DATA_BASE;
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
	assert_int_equal(blk_do(h, BLK_T_IN, 0, galloc(h, 512), 512, NULL),
			 BLK_S_OK);
}

/* ---- virtio-blk and migration ---- */

static void make_image(char *path, size_t cap, uint64_t size)
{
	int fd;

	snprintf(path, cap, "/tmp/dvmm-vblk-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	close(fd);
}

/* Can another open file description take @how (LOCK_EX/LOCK_SH) now? */
static bool can_lock(const char *path, int how)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool ok;

	assert_true(fd >= 0);
	ok = flock(fd, how | LOCK_NB) == 0;
	close(fd);
	return ok;
}

/*
 * Quiesce with requests in flight (more than the device has slots, DSYNC
 * writes: some are in the kernel, some still in the ring): when quiesce
 * returns, every chain taken is done (status byte, used entry, interrupt)
 * and kicks take nothing until resume, which serves the rest.
 */
static void test_blk_quiesce_in_flight(void **state)
{
	struct harness *h = *state;
	enum { N = 200, SZ = 65536 };
	uint8_t *status[N + 1];
	uint16_t taken, used;

	/* No FLUSH: writethrough (slower writes, more in flight). */
	blk_start_f(h, false, 1ULL << VIRTIO_F_INDIRECT_DESC);
	for (int i = 0; i < N; i++)
		status[i] = blk_post(h, BLK_T_OUT, (uint64_t)i * 8 % 1900,
				     galloc(h, SZ), SZ, true);
	kick(h, 0);
	h->vd->ops->quiesce(h->vd);

	taken = last_avail(h, 0);
	used = used_idx(&h->ring[0]);
	assert_true(taken >= 1);
	assert_int_equal(used, taken);
	assert_int_equal(irq_used(h, 0), used);
	for (int i = 0; i < used; i++) {
		struct vring_used_elem u = used_elem(h, 0, i);
		int k;

		/* Direct heads are 0..N-1 in posting order (INDIRECT). */
		assert_true(u.id < N);
		k = u.id;
		assert_int_equal(*status[k], BLK_S_OK);
	}
	h->ring[0].used_seen = used;

	/* Quiesced: a kick takes nothing, not even new chains. */
	status[N] = blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), taken);
	assert_int_equal(used_idx(&h->ring[0]), used);
	assert_int_equal(*status[N], 0xee);
	/* Quiescing again is harmless. */
	h->vd->ops->quiesce(h->vd);

	h->vd->ops->resume(h->vd);
	if (!wait_used(h, 0, N + 1 - used))
		fail_msg("used %u taken %u now used %u avail %u st %u", used,
			 taken, used_idx(&h->ring[0]), last_avail(h, 0),
			 *status[N]);
	for (int i = 0; i <= N; i++)
		assert_int_equal(*status[i], BLK_S_OK);
}

static void test_blk_quiesce_waits_for_irq(void **state)
{
	struct harness *h = *state;

	blk_start_f(h, false, 1ULL << BLK_F_FLUSH);
	blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	quiesce_waits_for_irq(h, 0);
	h->vd->ops->resume(h->vd);
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
}

/* A READ's data pages, its status byte and GET_ID's bytes are logged. */
static void test_blk_write_log(void **state)
{
	struct harness *h = *state;
	uint64_t map[LOG_WORDS];
	uint64_t wbuf, rbuf, idbuf, st, hdr;
	uint8_t *status;
	struct seg s[4];

	blk_start(h, false);
	wbuf = galloc_page(h, 3 * 4096);
	fill_pattern(gptr(h, wbuf, 3 * 4096), 3 * 4096, 21);
	assert_int_equal(blk_do(h, BLK_T_OUT, 64, wbuf, 3 * 4096, NULL),
			 BLK_S_OK);

	assert_int_equal(guest_mem_log_start(&h->mem), 0);
	/* Read 3 pages into two segments: 2 pages here, 1 page there;
	 * header and status on pages of their own. */
	rbuf = galloc_page(h, 8 * 4096);
	memset(gptr(h, rbuf, 8 * 4096), 0, 8 * 4096);
	hdr = galloc_page(h, 16);
	memcpy(gptr(h, hdr, 16),
	       &(struct blk_hdr){.type = BLK_T_IN, .sector = 64}, 16);
	st = galloc_page(h, 1);
	status = gptr(h, st, 1);
	*status = 0xee;
	s[0] = (struct seg){hdr, 16, false};
	s[1] = (struct seg){rbuf, 2 * 4096, true};
	s[2] = (struct seg){rbuf + 5 * 4096, 4096, true};
	s[3] = (struct seg){st, 1, true};
	post(h, 0, s, 4, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(*status, BLK_S_OK);
	assert_memory_equal(gptr(h, rbuf, 2 * 4096), gptr(h, wbuf, 2 * 4096),
			    2 * 4096);

	log_take(h, map);
	assert_true(logged(map, rbuf));
	assert_true(logged(map, rbuf + 4096));
	assert_true(logged(map, rbuf + 5 * 4096));
	assert_true(logged(map, st));
	assert_true(logged(map, h->ring[0].used_gpa));
	/* Pages the device did not write. */
	assert_false(logged(map, rbuf + 2 * 4096));
	assert_false(logged(map, rbuf + 4 * 4096));
	assert_false(logged(map, rbuf + 6 * 4096));
	assert_false(logged(map, hdr));
	assert_false(logged(map, wbuf));

	/* GET_ID: its bytes and the status. */
	idbuf = galloc_page(h, 20);
	assert_int_equal(blk_do(h, BLK_T_GET_ID, 0, idbuf, 20, NULL), BLK_S_OK);
	log_take(h, map);
	assert_true(logged(map, idbuf));
	guest_mem_log_stop(&h->mem);
}

static long blk_state(struct virtio_device *vd, uint8_t *buf, size_t cap)
{
	return vd->ops->save(vd, buf, cap);
}

/* save/load: the same disk loads; another size or mode is refused. */
static void test_blk_save_load(void **state)
{
	struct harness *h = *state;
	struct virtio_blk *other = NULL;
	struct virtio_device *vd, *vo;
	char path2[64], why[256];
	uint8_t buf[64], bad[9];
	struct err e = {0};
	uint64_t cap;
	long n;

	make_disk(h, DISK_SECTORS * 512ULL);
	assert_int_equal(
		virtio_blk_create(&h->blk, &h->mem, h->path, false, 0, &e), 0);
	vd = virtio_blk_device(h->blk);
	assert_non_null(vd->ops->save);
	assert_int_equal(blk_state(vd, buf, 8), -ENOSPC);
	n = blk_state(vd, buf, sizeof(buf));
	assert_int_equal(n, 9);
	memcpy(&cap, buf, 8);
	assert_int_equal(le64toh(cap), DISK_SECTORS);
	assert_int_equal(buf[8], 0);

	/* The same image, as the destination opens it (released). */
	assert_int_equal(virtio_blk_create(&other, &h->mem, h->path, false,
					   VIRTIO_CREATE_RELEASED, &e),
			 0);
	vo = virtio_blk_device(other);
	why[0] = '\0';
	assert_int_equal(vo->ops->load(vo, buf, n, why, sizeof(why)), 0);
	/* Wrong lengths and a bad flag. */
	assert_int_equal(vo->ops->load(vo, buf, 8, why, sizeof(why)), -EINVAL);
	assert_int_equal(vo->ops->load(vo, buf, 10, why, sizeof(why)), -EINVAL);
	assert_int_equal(vo->ops->load(vo, NULL, 0, why, sizeof(why)), -EINVAL);
	memcpy(bad, buf, 9);
	bad[8] = 7;
	assert_int_equal(vo->ops->load(vo, bad, 9, why, sizeof(why)), -EINVAL);
	/* A source disk twice as big. */
	memcpy(bad, buf, 9);
	cap = htole64(2 * DISK_SECTORS);
	memcpy(bad, &cap, 8);
	why[0] = '\0';
	assert_int_equal(vo->ops->load(vo, bad, 9, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "the disk here has 2048 sectors, the "
				    "source's 4096"));
	/* Read-only at the source, writable here. */
	memcpy(bad, buf, 9);
	bad[8] = 1;
	why[0] = '\0';
	assert_int_equal(vo->ops->load(vo, bad, 9, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "read-only"));
	virtio_blk_destroy(other);
	other = NULL;

	/* Another image of another size refuses this state. */
	make_image(path2, sizeof(path2), 4 * DISK_SECTORS * 512ULL);
	assert_int_equal(virtio_blk_create(&other, &h->mem, path2, true, 0, &e),
			 0);
	vo = virtio_blk_device(other);
	why[0] = '\0';
	assert_int_equal(vo->ops->load(vo, buf, n, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "8192 sectors, the source's 2048"));
	n = blk_state(vo, buf, sizeof(buf));
	assert_int_equal(n, 9);
	assert_int_equal(buf[8], 1);
	virtio_blk_destroy(other);
	unlink(path2);
}

/*
 * release drops the image's lock (another process can take it), acquire
 * takes it back (and fails like creation while someone else holds it).
 * Release needs the device quiesced while it runs; a resumed but released
 * device serves nothing until acquire.
 */
static void test_blk_release_acquire(void **state)
{
	struct harness *h = *state;
	char why[256];
	uint64_t buf;
	uint8_t *status;
	int fd;

	blk_start(h, false);
	assert_false(can_lock(h->path, LOCK_EX));
	buf = galloc(h, 4096);
	fill_pattern(gptr(h, buf, 4096), 4096, 33);
	assert_int_equal(blk_do(h, BLK_T_OUT, 0, buf, 4096, NULL), BLK_S_OK);

	why[0] = '\0';
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), -EBUSY);
	assert_true(why[0] != '\0');
	assert_false(can_lock(h->path, LOCK_EX));

	h->vd->ops->quiesce(h->vd);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);
	/* Another process takes the image: the data is there. */
	fd = open(h->path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
	{
		uint8_t file[4096];

		assert_int_equal(pread(fd, file, 4096, 0), 4096);
		assert_memory_equal(file, gptr(h, buf, 4096), 4096);
	}
	/* ... so we cannot take it back. */
	why[0] = '\0';
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "is in use by another process"));
	assert_non_null(strstr(why, h->path));

	/* Resumed while released: requests wait in the ring. */
	h->vd->ops->resume(h->vd);
	status = blk_post(h, BLK_T_IN, 0, galloc(h, 4096), 4096, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), h->ring[0].used_seen);
	assert_int_equal(*status, 0xee);

	close(fd); /* the other process lets go */
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(*status, BLK_S_OK);
	assert_false(can_lock(h->path, LOCK_EX));
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
}

/*
 * Created for an incoming migration while the source holds the image:
 * no lock taken; activated before acquire it serves nothing; acquire
 * fails while the source holds on, then succeeds and serves.
 */
static void test_blk_created_released(void **state)
{
	struct harness *h = *state;
	struct virtio_blk *b = NULL;
	struct err e = {0};
	char why[256];
	uint8_t *status, cfg[8];
	uint64_t cap;
	int src;

	make_disk(h, DISK_SECTORS * 512ULL);
	src = open(h->path, O_RDWR | O_CLOEXEC);
	assert_true(src >= 0);
	assert_int_equal(flock(src, LOCK_EX | LOCK_NB), 0);
	assert_int_equal(virtio_blk_create(&b, &h->mem, h->path, false, 0, &e),
			 -EBUSY);
	assert_null(b);
	assert_int_equal(
		virtio_blk_create(&b, &h->mem, h->path, false, 0x80, &e),
		-EINVAL);
	assert_int_equal(virtio_blk_create(&h->blk, &h->mem, h->path, false,
					   VIRTIO_CREATE_RELEASED, &e),
			 0);
	h->vd = virtio_blk_device(h->blk);
	h->vd->ops->config_read(h->vd, 0, cfg, 8);
	memcpy(&cap, cfg, 8);
	assert_int_equal(cap, DISK_SECTORS);

	start_device(h, h->vd, 1ULL << BLK_F_FLUSH);
	status = blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), 0);
	why[0] = '\0';
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "is in use by another process"));
	assert_int_equal(*status, 0xee);

	close(src);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(*status, BLK_S_OK);
	assert_false(can_lock(h->path, LOCK_SH));
}

/*
 * Every state quiesce, resume, release and reset must cope with: not
 * activated, quiesced across a reset, destroyed quiesced and released.
 */
static void test_blk_migration_states(void **state)
{
	struct harness *h = *state;
	struct virtio_device *vd;
	struct err e = {0};
	char why[256];
	uint8_t *status;

	make_disk(h, DISK_SECTORS * 512ULL);
	assert_int_equal(
		virtio_blk_create(&h->blk, &h->mem, h->path, false, 0, &e), 0);
	vd = virtio_blk_device(h->blk);
	/* Not activated: all of it works at once. */
	vd->ops->quiesce(vd);
	vd->ops->resume(vd);
	assert_int_equal(vd->ops->release(vd, why, sizeof(why)), 0);
	assert_true(can_lock(h->path, LOCK_EX));
	assert_int_equal(vd->ops->acquire(vd, why, sizeof(why)), 0);
	assert_false(can_lock(h->path, LOCK_SH));

	/* Activated while quiesced: nothing is served until resume. */
	vd->ops->quiesce(vd);
	start_device(h, vd, 1ULL << BLK_F_FLUSH);
	status = blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), 0);
	/* A reset while quiesced; it stays quiesced. */
	restart_device(h);
	blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), 0);
	vd->ops->resume(vd);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 1);
	(void)status;

	/* Left quiesced and released: teardown destroys it. */
	vd->ops->quiesce(vd);
	assert_int_equal(vd->ops->release(vd, why, sizeof(why)), 0);
}

/* ======================================================================
 * virtio-net
 * ====================================================================== */

/* Create a tap-backed device, or skip the test if this host cannot. */
static void net_create_or_skip(struct harness *h, const uint8_t *mac)
{
	struct err e = {0};
	int rc;

	if (!have_tun())
		skip();
	rc = virtio_net_create(&h->net, &h->mem, NULL, mac, 0, &e);
	if (rc == -EPERM || rc == -EACCES || rc == -ENODEV || rc == -EBADFD) {
		print_message("cannot create a tap (%s): skipping\n", e.msg);
		skip();
	}
	assert_int_equal(rc, 0);
}

static void test_net_config(void **state)
{
	struct harness *h = *state;
	struct virtio_device *vd;
	uint8_t cfg[8];
	uint16_t status;
	struct virtio_net *n2 = NULL;
	struct err e = {0};
	uint8_t mcast[6] = {0x01, 0, 0, 0, 0, 1};

	net_create_or_skip(h, test_mac);
	vd = virtio_net_device(h->net);
	assert_int_equal(vd->device_id, VIRTIO_ID_NET);
	assert_int_equal(vd->num_queues, 2);
	assert_int_equal(strncmp(virtio_net_tap_name(h->net), "dvmmtap", 7), 0);
	assert_true(vd->ops->features(vd) & (1ULL << NET_F_MAC));
	assert_true(vd->ops->features(vd) & (1ULL << NET_F_STATUS));
	vd->ops->config_read(vd, 0, cfg, sizeof(cfg));
	assert_memory_equal(cfg, test_mac, 6);
	memcpy(&status, cfg + 6, 2);
	assert_int_equal(status, 1);

	/* Random MAC: locally administered unicast. */
	assert_int_equal(virtio_net_create(&n2, &h->mem, NULL, NULL, 0, &e), 0);
	vd = virtio_net_device(n2);
	vd->ops->config_read(vd, 0, cfg, 6);
	assert_int_equal(cfg[0] & 3, 2);
	assert_string_not_equal(virtio_net_tap_name(n2),
				virtio_net_tap_name(h->net));
	virtio_net_destroy(n2);

	assert_int_equal(virtio_net_create(&n2, &h->mem, NULL, mcast, 0, &e),
			 -EINVAL);
	assert_null(n2);
	assert_int_equal(virtio_net_create(&n2, &h->mem,
					   "a-name-that-is-far-too-long", NULL,
					   0, &e),
			 -EINVAL);
}

static void test_net_tx(void **state)
{
	struct harness *h = *state;
	uint8_t frame[64], got[2048];
	uint64_t hdr, body, tiny;
	struct virtio_net_stats st;
	struct seg s[2];
	ssize_t n;

	net_create_or_skip(h, test_mac);
	tap_set(virtio_net_tap_name(h->net), true);
	h->pkt = packet_socket(virtio_net_tap_name(h->net));
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));

	/* Header and frame in separate descriptors; the driver's header is
	 * junk, which must not reach the tap as offload requests. */
	make_frame(frame, bcast, test_mac, "dvmm tx test", sizeof(frame));
	hdr = galloc(h, NET_HDR);
	memset(gptr(h, hdr, NET_HDR), 0x5a, NET_HDR);
	body = galloc(h, sizeof(frame));
	memcpy(gptr(h, body, sizeof(frame)), frame, sizeof(frame));
	s[0] = (struct seg){hdr, NET_HDR, false};
	s[1] = (struct seg){body, sizeof(frame), false};
	post(h, 1, s, 2, false);
	kick(h, 1);
	assert_true(wait_used(h, 1, 1));
	assert_int_equal(last_used(h, 1).len, 0);
	n = pkt_recv_test_frame(h->pkt, got, sizeof(got), "dvmm tx test");
	assert_int_equal(n, sizeof(frame));
	assert_memory_equal(got, frame, sizeof(frame));

	/* A chain shorter than the header: dropped, still returned. */
	tiny = galloc(h, 4);
	s[0] = (struct seg){tiny, 4, false};
	post(h, 1, s, 1, false);
	kick(h, 1);
	assert_true(wait_used(h, 1, 1));
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.tx_packets, 1);
	assert_int_equal(st.tx_bytes, sizeof(frame));
	assert_int_equal(st.tx_dropped, 1);
}

static uint64_t post_rx_buf(struct harness *h, uint32_t len, bool split)
{
	uint64_t b = galloc(h, len);

	memset(gptr(h, b, len), 0xcc, len);
	if (split) {
		struct seg s[2] = {{b, NET_HDR, true},
				   {b + NET_HDR, len - NET_HDR, true}};

		post(h, 0, s, 2, false);
	} else {
		struct seg s = {b, len, true};

		post(h, 0, &s, 1, false);
	}
	return b;
}

static void pkt_send(struct harness *h, const uint8_t *f, size_t len)
{
	assert_int_equal(send(h->pkt, f, len, 0), (ssize_t)len);
}

/*
 * Wait until the frame @f lands in the (single, big) receive buffer @buf.
 * A frame of the host's own (nothing should send any, but a host may)
 * is skipped: a fresh buffer is posted and the wait goes on.
 */
static void rx_expect(struct harness *h, uint64_t buf, const uint8_t *f,
		      size_t flen)
{
	for (int tries = 0; tries < 16; tries++) {
		uint8_t zero_hdr[10] = {0};
		struct vring_used_elem u;
		uint16_t nbuf;

		assert_true(wait_used(h, 0, 1));
		u = last_used(h, 0);
		if (u.len == NET_HDR + flen &&
		    !memcmp(gptr(h, buf + NET_HDR, flen), f, flen)) {
			assert_memory_equal(gptr(h, buf, 10), zero_hdr, 10);
			memcpy(&nbuf, gptr(h, buf + 10, 2), 2);
			assert_int_equal(nbuf, 1);
			return;
		}
		buf = post_rx_buf(h, NET_HDR + 1514, false);
		kick(h, 0);
	}
	fail_msg("test frame never arrived");
}

static void test_net_rx(void **state)
{
	struct harness *h = *state;
	uint8_t frame[100], big[600], small[20];
	uint64_t b0, b1, b2;
	struct virtio_net_stats st;

	net_create_or_skip(h, test_mac);
	tap_set(virtio_net_tap_name(h->net), true);
	h->pkt = packet_socket(virtio_net_tap_name(h->net));
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));

	/* No buffers yet: the frame waits in the tap. */
	make_frame(frame, test_mac, host_mac, "dvmm rx 1", sizeof(frame));
	pkt_send(h, frame, sizeof(frame));
	b0 = post_rx_buf(h, NET_HDR + 1514, true);
	kick(h, 0);
	rx_expect(h, b0, frame, sizeof(frame));

	/* A buffer too small for the next frame: that frame is dropped and
	 * the buffer takes the one after. */
	b1 = post_rx_buf(h, NET_HDR + sizeof(small), false);
	kick(h, 0);
	make_frame(big, test_mac, host_mac, "dvmm rx too big", sizeof(big));
	pkt_send(h, big, sizeof(big));
	make_frame(small, test_mac, host_mac, "rx 3", sizeof(small));
	pkt_send(h, small, sizeof(small));
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, NET_HDR + sizeof(small));
	assert_memory_equal(gptr(h, b1 + NET_HDR, sizeof(small)), small,
			    sizeof(small));

	/* Buffers ahead of frames. */
	b2 = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	make_frame(frame, test_mac, host_mac, "dvmm rx 4", sizeof(frame));
	pkt_send(h, frame, sizeof(frame));
	rx_expect(h, b2, frame, sizeof(frame));

	virtio_net_get_stats(h->net, &st);
	assert_true(st.rx_packets >= 3);
	assert_true(st.rx_dropped >= 1);
	assert_true(st.rx_bytes >= 2 * sizeof(frame) + sizeof(small));
}

/* A receive buffer that cannot even hold the header breaks the ring. */
static void test_net_rx_short_buffer_needs_reset(void **state)
{
	struct harness *h = *state;

	net_create_or_skip(h, test_mac);
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	post_rx_buf(h, 8, false);
	kick(h, 0);
	assert_true(wait_config_irqs(h, 1));
	assert_true(virtio_needs_reset(h->vd));
	restart_device(h);
	assert_false(virtio_needs_reset(h->vd));
}

/* ---- virtio-net and migration ---- */

#define NET_STATE_MAX (6 + 256 * 4 + (1u << 20))

struct saved_frame {
	const uint8_t *p; /* header, then the frame */
	uint32_t len;
};

/* Split a saved net state into its frames; returns how many. */
static int saved_frames(const uint8_t *buf, long n, struct saved_frame *f,
			int max)
{
	long off = 6;
	int i = 0;

	while (off < n) {
		uint32_t len;

		assert_true(n - off >= 4);
		memcpy(&len, buf + off, 4);
		len = le32toh(len);
		off += 4;
		assert_true(len <= n - off);
		if (i < max)
			f[i] = (struct saved_frame){buf + off, len};
		i++;
		off += len;
	}
	assert_int_equal(off, n);
	return i;
}

/* Is saved frame @f the test frame @want (header all zero)? */
static bool saved_is(const struct saved_frame *f, const uint8_t *want,
		     size_t len)
{
	return f->len == NET_HDR + len && !memcmp(f->p + NET_HDR, want, len);
}

/*
 * Save until the frames sent to the tap are all in (the host may take a
 * moment to queue them): save keeps what it took from the tap, so each
 * call returns everything so far.
 */
static long save_until(struct harness *h, uint8_t *buf, const uint8_t *f1,
		       size_t l1, const uint8_t *f2, size_t l2)
{
	struct timespec ts, now, ms = {0, 1000000};

	deadline_after(&ts, WAIT_MS);
	for (;;) {
		struct saved_frame f[16];
		long n = h->vd->ops->save(h->vd, buf, NET_STATE_MAX);
		int cnt, got = 0;

		assert_true(n >= 6);
		cnt = saved_frames(buf, n, f, 16);
		for (int i = 0; i < cnt && i < 16; i++)
			got |= (saved_is(&f[i], f1, l1) ? 1 : 0) |
			       (saved_is(&f[i], f2, l2) ? 2 : 0);
		if (got == 3)
			return n;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > ts.tv_sec ||
		    (now.tv_sec == ts.tv_sec && now.tv_nsec >= ts.tv_nsec))
			fail_msg("the frames never reached the tap");
		nanosleep(&ms, NULL);
	}
}

/*
 * Source side: quiesce gives back the receive buffer the RX thread held;
 * frames that arrive meanwhile stay in the tap; save takes them (MAC
 * first); if the migration fails, resume delivers them here. Destination
 * side: a device created released without mac= takes the MAC and the
 * frames, acquires a tap of its own and delivers them (logged) before
 * anything else.
 */
static void test_net_save_load_frames(void **state)
{
	struct harness *h = *state;
	uint8_t *buf = malloc(NET_STATE_MAX), f1[100], f2[300], cfg[6];
	struct saved_frame f[16];
	uint64_t map[LOG_WORDS], b0, b1, b2;
	struct err e = {0};
	struct virtio_net_stats st;
	char why[256], name_a[IFNAMSIZ];
	uint16_t used;
	long n;
	int cnt, i1 = -1, i2 = -1;

	assert_non_null(buf);
	net_create_or_skip(h, test_mac);
	snprintf(name_a, sizeof(name_a), "%s", virtio_net_tap_name(h->net));
	tap_set(name_a, true);
	h->pkt = packet_socket(name_a);
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	b0 = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	assert_true(wait_popped(h, 0, 1));

	h->vd->ops->quiesce(h->vd);
	used = used_idx(&h->ring[0]);
	assert_int_equal(last_avail(h, 0), used); /* given back */
	assert_int_equal(irq_used(h, 0), used);
	h->ring[0].used_seen = used;

	make_frame(f1, test_mac, host_mac, "dvmm migrates 1", sizeof(f1));
	make_frame(f2, test_mac, host_mac, "dvmm migrates 2", sizeof(f2));
	pkt_send(h, f1, sizeof(f1));
	pkt_send(h, f2, sizeof(f2));
	n = save_until(h, buf, f1, sizeof(f1), f2, sizeof(f2));
	assert_memory_equal(buf, test_mac, 6);
	cnt = saved_frames(buf, n, f, 16);
	for (int i = 0; i < cnt && i < 16; i++) {
		if (saved_is(&f[i], f1, sizeof(f1)))
			i1 = i;
		if (saved_is(&f[i], f2, sizeof(f2)))
			i2 = i;
	}
	assert_true(i1 >= 0 && i2 > i1);
	assert_int_equal(used_idx(&h->ring[0]), used); /* nothing delivered */
	assert_int_equal(h->vd->ops->save(h->vd, buf, 6), -ENOSPC);

	/* The migration fails: the frames go to the guest here. */
	h->vd->ops->resume(h->vd);
	rx_expect(h, b0, f1, sizeof(f1));
	b1 = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	rx_expect(h, b1, f2, sizeof(f2));

	/* The destination: released, no mac=, no tap yet. */
	stop_device(h);
	virtio_net_destroy(h->net);
	h->net = NULL;
	close(h->pkt);
	h->pkt = -1;
	assert_int_equal(virtio_net_create(&h->net, &h->mem, NULL, NULL,
					   VIRTIO_CREATE_RELEASED, &e),
			 0);
	assert_string_equal(virtio_net_tap_name(h->net), "");
	h->vd = virtio_net_device(h->net);
	why[0] = '\0';
	assert_int_equal(h->vd->ops->load(h->vd, buf, n, why, sizeof(why)), 0);
	h->vd->ops->config_read(h->vd, 0, cfg, 6);
	assert_memory_equal(cfg, test_mac, 6);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_int_equal(strncmp(virtio_net_tap_name(h->net), "dvmmtap", 7), 0);

	assert_int_equal(guest_mem_log_start(&h->mem), 0);
	start_device(h, h->vd, (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	b2 = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	rx_expect(h, b2, f1, sizeof(f1));
	log_take(h, map);
	assert_true(logged(map, b2));
	assert_true(logged(map, b2 + NET_HDR + sizeof(f1) - 1));
	b2 = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	rx_expect(h, b2, f2, sizeof(f2));
	log_take(h, map);
	assert_true(logged(map, b2 + NET_HDR + sizeof(f2) - 1));
	guest_mem_log_stop(&h->mem);
	virtio_net_get_stats(h->net, &st);
	assert_true(st.rx_packets >= 2);
	free(buf);
}

/* A TX pass still interrupting the driver holds quiesce up. */
static void test_net_quiesce_waits_for_tx_irq(void **state)
{
	struct harness *h = *state;
	uint8_t frame[64];
	uint64_t body;
	struct seg s;

	net_create_or_skip(h, test_mac);
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	make_frame(frame, bcast, test_mac, "dvmm tx irq", sizeof(frame));
	body = galloc(h, NET_HDR + sizeof(frame));
	memset(gptr(h, body, NET_HDR), 0, NET_HDR);
	memcpy(gptr(h, body + NET_HDR, sizeof(frame)), frame, sizeof(frame));
	s = (struct seg){body, NET_HDR + sizeof(frame), false};
	post(h, 1, &s, 1, false);
	quiesce_waits_for_irq(h, 1);
	/* Quiesced: TX takes nothing. */
	post(h, 1, &s, 1, false);
	kick(h, 1);
	assert_int_equal(last_avail(h, 1), 1);
	h->vd->ops->resume(h->vd);
	assert_true(wait_used(h, 1, 1));
}

/*
 * load checks what comes from the network: the MAC, every length, the
 * limits (frames beyond them are dropped and counted). A refused load
 * changes nothing. Needs no tap: the device is created released, and a
 * released device delivers its backlog all the same.
 */
static void test_net_load_checks(void **state)
{
	struct harness *h = *state;
	static const uint8_t mac2[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
	uint8_t *buf = malloc(2u << 20), *out;
	struct virtio_net_stats st;
	struct saved_frame f[4];
	struct err e = {0};
	char why[256];
	uint8_t cfg[6];
	uint32_t le;
	size_t off;
	long n;

	assert_non_null(buf);
	out = malloc(NET_STATE_MAX);
	assert_non_null(out);
	assert_int_equal(virtio_net_create(&h->net, &h->mem, "dvmmtst0",
					   test_mac, VIRTIO_CREATE_RELEASED,
					   &e),
			 0);
	assert_string_equal(virtio_net_tap_name(h->net), "dvmmtst0");
	h->vd = virtio_net_device(h->net);
#define LOAD(p, len) h->vd->ops->load(h->vd, (p), (len), why, sizeof(why))
	memcpy(buf, mac2, 6);
	assert_int_equal(LOAD(buf, 0), -EINVAL);
	assert_int_equal(LOAD(buf, 5), -EINVAL);
	buf[0] = 0x01; /* multicast */
	why[0] = '\0';
	assert_int_equal(LOAD(buf, 6), -EINVAL);
	assert_non_null(strstr(why, "unicast"));
	memset(buf, 0, 6);
	assert_int_equal(LOAD(buf, 6), -EINVAL);
	memcpy(buf, mac2, 6);
	/* A length cut short. */
	memset(buf + 6, 0, 3);
	assert_int_equal(LOAD(buf, 9), -EINVAL);
	/* Too short, too long, longer than what is left. */
	le = htole32(0);
	memcpy(buf + 6, &le, 4);
	assert_int_equal(LOAD(buf, 10), -EINVAL);
	le = htole32(NET_HDR - 1);
	memcpy(buf + 6, &le, 4);
	assert_int_equal(LOAD(buf, 10 + NET_HDR - 1), -EINVAL);
	le = htole32(65536 + 257);
	memcpy(buf + 6, &le, 4);
	assert_int_equal(LOAD(buf, 10 + 65536 + 257), -EINVAL);
	le = htole32(0xffffffffu);
	memcpy(buf + 6, &le, 4);
	assert_int_equal(LOAD(buf, 10 + 100), -EINVAL);
	le = htole32(100);
	memcpy(buf + 6, &le, 4);
	why[0] = '\0';
	assert_int_equal(LOAD(buf, 10 + 50), -EINVAL);
	assert_true(why[0] != '\0');
	/* A good frame followed by a bad one: all refused. */
	off = 6;
	put_frame(buf, &off, 60, 0x11);
	le = htole32(7);
	memcpy(buf + off, &le, 4);
	assert_int_equal(LOAD(buf, off + 4 + 7), -EINVAL);
	/* Nothing of the above changed anything. */
	h->vd->ops->config_read(h->vd, 0, cfg, 6);
	assert_memory_equal(cfg, test_mac, 6);
	n = h->vd->ops->save(h->vd, out, NET_STATE_MAX);
	assert_int_equal(n, 6);

	/* 300 frames: 256 are kept, 44 dropped and counted. */
	off = 6;
	for (int i = 0; i < 300; i++)
		put_frame(buf, &off, NET_HDR + 20, (uint8_t)i);
	assert_int_equal(LOAD(buf, off), 0);
	h->vd->ops->config_read(h->vd, 0, cfg, 6);
	assert_memory_equal(cfg, mac2, 6);
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.rx_dropped, 44);
	n = h->vd->ops->save(h->vd, out, NET_STATE_MAX);
	assert_int_equal(n, 6 + 256 * (4 + NET_HDR + 20));
	assert_int_equal(saved_frames(out, n, f, 4), 256);
	assert_int_equal(f[3].p[NET_HDR], 3);

	/* 1 MiB at most: of 20 frames of 60000 bytes, 17 fit. */
	off = 6;
	for (int i = 0; i < 20; i++)
		put_frame(buf, &off, 60000, (uint8_t)i);
	assert_int_equal(LOAD(buf, off), 0);
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.rx_dropped, 44 + 3);
	n = h->vd->ops->save(h->vd, out, NET_STATE_MAX);
	assert_int_equal(n, 6 + 17 * (4 + 60000));

	/* Two frames, delivered by the released device once it runs. */
	off = 6;
	put_frame(buf, &off, NET_HDR + 64, 0xa1);
	put_frame(buf, &off, NET_HDR + 2000, 0xa2);
	assert_int_equal(LOAD(buf, off), 0);
	start_device(h, h->vd, (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	/* Running (not quiesced): no load, no release. */
	assert_int_equal(LOAD(buf, off), -EBUSY);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), -EBUSY);
	{
		uint64_t small = post_rx_buf(h, NET_HDR + 100, false);
		uint16_t big_head = h->ring[0].next_desc;
		uint64_t big = post_rx_buf(h, NET_HDR + 1514, false);

		kick(h, 0);
		assert_true(wait_used(h, 0, 1));
		assert_int_equal(last_used(h, 0).len, NET_HDR + 64);
		check_rx_fill(h, small, 64, 0xa1);
		/* 2000 bytes do not fit 1514: dropped, the buffer kept (the
		 * thread looks at a pause only after dealing with a frame). */
		assert_true(wait_popped(h, 0, 2));
		h->vd->ops->quiesce(h->vd);
		assert_int_equal(last_avail(h, 0), 1); /* big given back */
		assert_int_equal(used_idx(&h->ring[0]), 1);
		virtio_net_get_stats(h->net, &st);
		assert_int_equal(st.rx_dropped, 44 + 3 + 1);
		/* Quiesced: load works (and replaces the backlog). */
		off = 6;
		put_frame(buf, &off, NET_HDR + 1000, 0xa3);
		assert_int_equal(LOAD(buf, off), 0);
		h->vd->ops->resume(h->vd);
		assert_true(wait_used(h, 0, 1));
		assert_int_equal(last_used(h, 0).len, NET_HDR + 1000);
		assert_int_equal(last_used(h, 0).id, big_head);
		check_rx_fill(h, big, 1000, 0xa3);
	}
#undef LOAD
	free(out);
	free(buf);
}

/*
 * release closes the tap (ours vanishes); transmitted frames wait in the
 * ring while released; acquire makes a new tap and sends them.
 */
static void test_net_release_acquire(void **state)
{
	struct harness *h = *state;
	char why[256], name1[IFNAMSIZ], name2[IFNAMSIZ];
	struct virtio_net_stats st;
	uint8_t frame[64], rx[80];
	uint64_t body, b;
	struct seg s[2];

	net_create_or_skip(h, test_mac);
	snprintf(name1, sizeof(name1), "%s", virtio_net_tap_name(h->net));
	start_device(h, virtio_net_device(h->net),
		     (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS));
	assert_true(if_nametoindex(name1) > 0);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), -EBUSY);
	h->vd->ops->quiesce(h->vd);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);
	assert_int_equal(if_nametoindex(name1), 0);
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);

	/* Resumed but released: TX leaves the ring alone. */
	h->vd->ops->resume(h->vd);
	make_frame(frame, bcast, test_mac, "dvmm after acquire", sizeof(frame));
	body = galloc(h, NET_HDR + sizeof(frame));
	memset(gptr(h, body, NET_HDR), 0, NET_HDR);
	memcpy(gptr(h, body + NET_HDR, sizeof(frame)), frame, sizeof(frame));
	s[0] = (struct seg){body, NET_HDR + sizeof(frame), false};
	post(h, 1, s, 1, false);
	kick(h, 1);
	assert_int_equal(last_avail(h, 1), 0);

	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	snprintf(name2, sizeof(name2), "%s", virtio_net_tap_name(h->net));
	assert_true(if_nametoindex(name2) > 0);
	assert_true(wait_used(h, 1, 1));
	virtio_net_get_stats(h->net, &st);
	assert_int_equal(st.tx_packets + st.tx_dropped, 1);

	/* RX works on the new tap. */
	tap_set(name2, true);
	h->pkt = packet_socket(name2);
	b = post_rx_buf(h, NET_HDR + 1514, false);
	kick(h, 0);
	make_frame(rx, test_mac, host_mac, "dvmm new tap", sizeof(rx));
	pkt_send(h, rx, sizeof(rx));
	rx_expect(h, b, rx, sizeof(rx));
}

/* ======================================================================
 * virtio-console
 * ====================================================================== */

static void con_start(struct harness *h, bool with_input)
{
	struct err e = {0};
	int out[2], in[2] = {-1, -1};

	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	h->fds[0] = out[0];
	h->fds[1] = out[1];
	if (with_input) {
		assert_int_equal(pipe2(in, O_CLOEXEC), 0);
		h->fds[2] = in[0];
		h->fds[3] = in[1];
	}
	assert_int_equal(
		virtio_console_create(&h->con, &h->mem, out[1], in[0], &e), 0);
	start_device(h, virtio_console_device(h->con), 0);
}

static void read_exact(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t n;

		assert_true(poll(&pf, 1, WAIT_MS) == 1);
		n = read(fd, p, len);
		assert_true(n > 0);
		p += n;
		len -= n;
	}
}

static void test_console_tx(void **state)
{
	struct harness *h = *state;
	uint64_t a, b;
	char got[12];
	struct seg s[2];
	uint8_t cfg[12], zero[12] = {0};

	con_start(h, false);
	assert_int_equal(h->vd->device_id, VIRTIO_ID_CONSOLE);
	h->vd->ops->config_read(h->vd, 0, cfg, 4);
	assert_memory_equal(cfg, zero, 4); /* cols, rows 0 */
	a = galloc(h, 6);
	b = galloc(h, 6);
	memcpy(gptr(h, a, 6), "hello ", 6);
	memcpy(gptr(h, b, 6), "world\n", 6);
	s[0] = (struct seg){a, 6, false};
	s[1] = (struct seg){b, 6, false};
	post(h, 1, s, 2, false);
	kick(h, 1);
	assert_true(wait_used(h, 1, 1));
	assert_int_equal(last_used(h, 1).len, 0);
	read_exact(h->fds[0], got, sizeof(got));
	assert_memory_equal(got, "hello world\n", 12);
}

/* More than a pipe holds: written in pieces while the reader drains. */
static void test_console_tx_large(void **state)
{
	struct harness *h = *state;
	enum { LEN = 300 * 1024 };
	uint64_t buf;
	uint8_t *got = malloc(LEN);
	struct seg s;

	assert_non_null(got);
	con_start(h, false);
	buf = galloc(h, LEN);
	fill_pattern(gptr(h, buf, LEN), LEN, 11);
	s = (struct seg){buf, LEN, false};
	post(h, 1, &s, 1, false);
	kick(h, 1);
	read_exact(h->fds[0], got, LEN);
	assert_memory_equal(got, gptr(h, buf, LEN), LEN);
	assert_true(wait_used(h, 1, 1));
	free(got);
}

/* Reset while the output is stuck on a full pipe: reset still returns. */
static void test_console_reset_while_blocked(void **state)
{
	struct harness *h = *state;
	uint8_t junk[4096];
	uint64_t buf;
	struct seg s;
	int fl;

	con_start(h, false);
	fl = fcntl(h->fds[1], F_GETFL);
	assert_int_equal(fcntl(h->fds[1], F_SETFL, fl | O_NONBLOCK), 0);
	memset(junk, 'x', sizeof(junk));
	while (write(h->fds[1], junk, sizeof(junk)) > 0)
		;
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(fcntl(h->fds[1], F_SETFL, fl), 0);

	buf = galloc(h, 100);
	s = (struct seg){buf, 100, false};
	post(h, 1, &s, 1, false);
	kick(h, 1);
	stop_device(h);
	assert_int_equal(used_idx(&h->ring[1]), 0);
}

static void test_console_rx(void **state)
{
	struct harness *h = *state;
	uint64_t b;
	struct seg s;

	con_start(h, true);
	assert_int_equal(write(h->fds[3], "abc", 3), 3);
	b = galloc(h, 64);
	s = (struct seg){b, 64, true};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 3);
	assert_memory_equal(gptr(h, b, 3), "abc", 3);

	/* Buffer first, input later. */
	b = galloc(h, 64);
	s = (struct seg){b, 64, true};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_int_equal(write(h->fds[3], "xyz!", 4), 4);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 4);
	assert_memory_equal(gptr(h, b, 4), "xyz!", 4);
}

/*
 * Quiesce parks the worker: the receive buffer it held goes back, input
 * and output wait; resume serves both. Input bytes are logged.
 */
static void test_console_quiesce(void **state)
{
	struct harness *h = *state;
	uint64_t map[LOG_WORDS], b, t;
	struct seg s;
	char got[5];

	con_start(h, true);
	assert_int_equal(guest_mem_log_start(&h->mem), 0);
	b = galloc_page(h, 64);
	s = (struct seg){b, 64, true};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_true(wait_popped(h, 0, 1));
	h->vd->ops->quiesce(h->vd);
	assert_int_equal(last_avail(h, 0), 0);

	assert_int_equal(write(h->fds[3], "abc", 3), 3);
	t = galloc(h, 5);
	memcpy(gptr(h, t, 5), "hello", 5);
	s = (struct seg){t, 5, false};
	post(h, 1, &s, 1, false);
	kick(h, 1);
	assert_int_equal(used_idx(&h->ring[0]), 0);
	assert_int_equal(last_avail(h, 1), 0);

	h->vd->ops->resume(h->vd);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 3);
	assert_memory_equal(gptr(h, b, 3), "abc", 3);
	assert_true(wait_used(h, 1, 1));
	read_exact(h->fds[0], got, 5);
	assert_memory_equal(got, "hello", 5);
	log_take(h, map);
	assert_true(logged(map, b));
	guest_mem_log_stop(&h->mem);
}

/*
 * Output stuck on a full pipe does not hold quiesce up: the chain goes
 * back to the driver unfinished; resumed here, the worker goes on where it
 * stopped (nothing written twice, nothing lost).
 */
static void test_console_quiesce_stuck_output(void **state)
{
	struct harness *h = *state;
	enum { LEN = 200 * 1024, FIRST = 10000 };
	uint8_t junk[4096], *got = malloc(LEN);
	size_t junk_len = 0;
	uint64_t buf;
	struct pollfd pf;
	struct seg s;
	int fl;

	assert_non_null(got);
	con_start(h, false);
	fl = fcntl(h->fds[1], F_GETFL);
	assert_int_equal(fcntl(h->fds[1], F_SETFL, fl | O_NONBLOCK), 0);
	memset(junk, 'x', sizeof(junk));
	for (;;) {
		ssize_t w = write(h->fds[1], junk, sizeof(junk));

		if (w <= 0)
			break;
		junk_len += w;
	}
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(fcntl(h->fds[1], F_SETFL, fl), 0);

	buf = galloc(h, LEN);
	fill_pattern(gptr(h, buf, LEN), LEN, 17);
	s = (struct seg){buf, LEN, false};
	post(h, 1, &s, 1, false);
	kick(h, 1);
	assert_true(wait_popped(h, 1, 1));
	/* Stuck: quiesce returns anyway, the chain is the driver's. */
	h->vd->ops->quiesce(h->vd);
	assert_int_equal(last_avail(h, 1), 0);
	assert_int_equal(used_idx(&h->ring[1]), 0);

	/* Let some of it out, then stop it midway. */
	h->vd->ops->resume(h->vd);
	while (junk_len) {
		size_t n = junk_len < sizeof(junk) ? junk_len : sizeof(junk);

		read_exact(h->fds[0], junk, n);
		junk_len -= n;
	}
	read_exact(h->fds[0], got, FIRST);
	h->vd->ops->quiesce(h->vd);
	assert_int_equal(last_avail(h, 1), 0);
	assert_int_equal(used_idx(&h->ring[1]), 0);
	/* What it wrote before parking is in the pipe; then nothing. */
	{
		size_t n = FIRST;

		pf = (struct pollfd){.fd = h->fds[0], .events = POLLIN};
		fl = fcntl(h->fds[0], F_GETFL);
		assert_int_equal(fcntl(h->fds[0], F_SETFL, fl | O_NONBLOCK), 0);
		for (;;) {
			ssize_t r = read(h->fds[0], got + n, LEN - n);

			if (r <= 0)
				break;
			n += r;
		}
		assert_int_equal(errno, EAGAIN);
		assert_int_equal(fcntl(h->fds[0], F_SETFL, fl), 0);
		assert_true(n < LEN);
		h->vd->ops->resume(h->vd);
		read_exact(h->fds[0], got + n, LEN - n);
	}
	assert_memory_equal(got, gptr(h, buf, LEN), LEN);
	assert_true(wait_used(h, 1, 1));
	pf.revents = 0;
	assert_int_equal(poll(&pf, 1, 0), 0); /* nothing written twice */
	free(got);
}

/* ======================================================================
 * virtio-rng
 * ====================================================================== */

static void rng_start(struct harness *h)
{
	struct err e = {0};

	assert_int_equal(virtio_rng_create(&h->rng, &h->mem, &e), 0);
	start_device(h, virtio_rng_device(h->rng), 0);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void test_rng(void **state)
{
	struct harness *h = *state;
	uint64_t a, b, c;
	struct seg s[2];
	uint16_t ids[3];
	uint32_t lens[3] = {0};

	rng_start(h);
	assert_int_equal(h->vd->device_id, VIRTIO_ID_RNG);
	a = galloc(h, 64);
	memset(gptr(h, a, 64), 0, 64);
	s[0] = (struct seg){a, 64, true};
	ids[0] = post(h, 0, s, 1, false);
	b = galloc(h, 1000);
	memset(gptr(h, b, 1000), 0, 1000);
	s[0] = (struct seg){b, 400, true};
	s[1] = (struct seg){b + 400, 600, true};
	ids[1] = post(h, 0, s, 2, false);
	c = galloc(h, 128 * 1024);
	memset(gptr(h, c, 128 * 1024), 0, 128 * 1024);
	s[0] = (struct seg){c, 128 * 1024, true};
	ids[2] = post(h, 0, s, 1, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 3));
	for (int i = 0; i < 3; i++) {
		struct vring_used_elem u = used_elem(h, 0, i);

		for (int j = 0; j < 3; j++)
			if (u.id == ids[j])
				lens[j] = u.len;
	}
	assert_int_equal(lens[0], 64);
	assert_int_equal(lens[1], 1000);
	assert_int_equal(lens[2], 64 * 1024);
	assert_false(all_zero(gptr(h, a, 64), 64));
	assert_false(all_zero(gptr(h, b + 600, 400), 400));
	assert_false(all_zero(gptr(h, c + 60 * 1024, 4096), 4096));
	/* Past the cap nothing was written. */
	assert_true(all_zero(gptr(h, c + 64 * 1024, 64 * 1024), 64 * 1024));
}

static void test_rng_readonly_buffer_needs_reset(void **state)
{
	struct harness *h = *state;
	struct seg s;

	rng_start(h);
	s = (struct seg){galloc(h, 16), 16, false};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_true(wait_config_irqs(h, 1));
	assert_true(virtio_needs_reset(h->vd));
	restart_device(h);
	s = (struct seg){galloc(h, 16), 16, true};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 16);
}

/* Quiesced, nothing is served; resume serves; the bytes are logged. */
static void test_rng_quiesce(void **state)
{
	struct harness *h = *state;
	uint64_t map[LOG_WORDS], b;
	struct seg s;

	rng_start(h);
	assert_int_equal(guest_mem_log_start(&h->mem), 0);
	h->vd->ops->quiesce(h->vd);
	b = galloc_page(h, 64);
	memset(gptr(h, b, 64), 0, 64);
	s = (struct seg){b, 64, true};
	post(h, 0, &s, 1, false);
	kick(h, 0);
	assert_int_equal(last_avail(h, 0), 0);
	assert_true(all_zero(gptr(h, b, 64), 64));
	h->vd->ops->resume(h->vd);
	assert_true(wait_used(h, 0, 1));
	assert_int_equal(last_used(h, 0).len, 64);
	assert_false(all_zero(gptr(h, b, 64), 64));
	log_take(h, map);
	assert_true(logged(map, b));
	guest_mem_log_stop(&h->mem);
}

/* Console, rng and a released net device: quiesce before activation,
 * activation while quiesced, destroy while quiesced. */
static void test_quiesce_not_activated(void **state)
{
	struct harness *h = *state;
	struct err e = {0};
	struct virtio_device *vd;
	int out[2];
	struct seg s;

	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	h->fds[0] = out[0];
	h->fds[1] = out[1];
	assert_int_equal(
		virtio_console_create(&h->con, &h->mem, out[1], -1, &e), 0);
	vd = virtio_console_device(h->con);
	vd->ops->quiesce(vd);
	vd->ops->resume(vd);
	vd->ops->quiesce(vd);
	start_device(h, vd, 0);
	s = (struct seg){galloc(h, 4), 4, false};
	memcpy(gptr(h, s.gpa, 4), "late", 4);
	post(h, 1, &s, 1, false);
	kick(h, 1);
	vd->ops->resume(vd);
	assert_true(wait_used(h, 1, 1));
	vd->ops->quiesce(vd);
	stop_device(h);

	assert_int_equal(virtio_rng_create(&h->rng, &h->mem, &e), 0);
	vd = virtio_rng_device(h->rng);
	vd->ops->quiesce(vd);
	vd->ops->resume(vd);
	vd->ops->quiesce(vd); /* destroyed so by teardown */

	assert_int_equal(virtio_net_create(&h->net, &h->mem, NULL, NULL,
					   VIRTIO_CREATE_RELEASED, &e),
			 0);
	vd = virtio_net_device(h->net);
	vd->ops->quiesce(vd);
	vd->ops->resume(vd);
	vd->ops->quiesce(vd);
	assert_int_equal(vd->ops->release(vd, NULL, 0), 0);
	h->vd = vd;
	start_device(h, vd, 1ULL << NET_F_MAC);
	/* Reset while quiesced and released, then destroyed by teardown. */
	stop_device(h);
}

/* ---- virtio-blk on a remote disk (blk_remote.c's agent in a thread) ---- */

static const uint8_t agent_key[32] = "remote-disk-test-key-0123456789";

struct agent {
	int lfd, stop[2];
	uint16_t port;
	char path[64];
	struct brp_image img;
	int clients;
	pthread_t t;
};

/* Serve clients one after the other until told to stop. */
static void *agent_thread(void *arg)
{
	struct agent *a = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = a->lfd, .events = POLLIN},
				      {.fd = a->stop[0], .events = POLLIN}};
		struct err e = {0};
		bool authed;
		int fd;

		if (poll(p, 2, -1) < 0 || p[1].revents)
			break;
		fd = accept(a->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		__atomic_add_fetch(&a->clients, 1, __ATOMIC_SEQ_CST);
		if (brp_serve(fd, &a->img, agent_key, sizeof(agent_key),
			      a->stop[0], &authed, &e) == -EINTR) {
			close(fd);
			break;
		}
		close(fd);
	}
	return NULL;
}

static void agent_start(struct agent *a, uint64_t size)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	memset(a, 0, sizeof(*a));
	snprintf(a->path, sizeof(a->path), "/tmp/dvmm-agent-XXXXXX");
	a->img.fd = mkstemp(a->path);
	assert_true(a->img.fd >= 0);
	assert_int_equal(ftruncate(a->img.fd, (off_t)size), 0);
	a->img.size = size;
	a->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(a->lfd >= 0);
	assert_int_equal(bind(a->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(a->lfd, 4), 0);
	assert_int_equal(getsockname(a->lfd, (struct sockaddr *)&sin, &len), 0);
	a->port = ntohs(sin.sin_port);
	assert_int_equal(pipe(a->stop), 0);
	assert_int_equal(pthread_create(&a->t, NULL, agent_thread, a), 0);
}

static void agent_stop(struct agent *a)
{
	assert_int_equal(write(a->stop[1], "x", 1), 1);
	pthread_join(a->t, NULL);
	close(a->lfd);
	close(a->stop[0]);
	close(a->stop[1]);
	close(a->img.fd);
	unlink(a->path);
}

static void remote_start(struct harness *h, struct agent *a)
{
	struct virtio_device *vd;
	struct err e = {0};
	char uri[64];

	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", a->port);
	assert_int_equal(virtio_blk_create_remote(&h->blk, &h->mem, uri,
						  agent_key, sizeof(agent_key),
						  false, 0, &e),
			 0);
	vd = virtio_blk_device(h->blk);
	start_device(h, vd, vd->ops->features(vd));
}

static void remote_end(struct harness *h, struct agent *a)
{
	stop_device(h);
	virtio_blk_destroy(h->blk);
	h->blk = NULL;
	h->vd = NULL;
	agent_stop(a);
}

/* Reads, writes (one of 2 MiB: two protocol messages), flush, errors. */
static void test_blk_remote_rw(void **state)
{
	struct harness *h = *state;
	enum { BIG = 2 << 20 };
	uint64_t w = galloc_page(h, BIG), r = galloc_page(h, BIG);
	uint8_t cfg[8], *file = malloc(BIG);
	struct virtio_blk_stats st;
	struct agent a;
	uint64_t cap;
	uint32_t used;

	assert_non_null(file);
	agent_start(&a, 4 << 20);
	remote_start(h, &a);
	h->vd->ops->config_read(h->vd, 0, cfg, 8);
	memcpy(&cap, cfg, 8);
	assert_int_equal(le64toh(cap), (4 << 20) / 512);
	fill_pattern(gptr(h, w, BIG), BIG, 5);
	assert_int_equal(blk_do(h, BLK_T_OUT, 2048, w, BIG, NULL), BLK_S_OK);
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
	assert_int_equal(blk_do(h, BLK_T_IN, 2048, r, BIG, &used), BLK_S_OK);
	assert_int_equal(used, BIG + 1);
	assert_memory_equal(gptr(h, r, BIG), gptr(h, w, BIG), BIG);
	assert_int_equal(pread(a.img.fd, file, BIG, 1 << 20), BIG);
	assert_memory_equal(file, gptr(h, w, BIG), BIG);
	/* past the end: refused by the device, the agent never asked */
	assert_int_equal(
		blk_do(h, BLK_T_IN, (4 << 20) / 512 - 1, r, 1024, NULL),
		BLK_S_IOERR);
	virtio_blk_get_stats(h->blk, &st);
	assert_int_equal(st.writes, 1);
	assert_int_equal(st.reads, 1);
	assert_int_equal(st.flushes, 1);
	/* a reset with remote requests in flight waits for them, then the
	 * device serves again */
	for (int i = 0; i < 60; i++)
		blk_post(h, BLK_T_OUT, (uint64_t)i * 64, w, 32768, false);
	kick(h, 0);
	restart_device(h);
	assert_int_equal(blk_do(h, BLK_T_FLUSH, 0, 0, 0, NULL), BLK_S_OK);
	free(file);
	remote_end(h, &a);
}

/* Migration: quiesce waits for remote requests, release hangs up after a
 * flush, acquire connects again, resume serves what waited. */
static void test_blk_remote_quiesce_release(void **state)
{
	struct harness *h = *state;
	enum { N = 60, SZ = 8192 };
	uint8_t *status[N + 1];
	char why[256] = "";
	uint16_t taken, used;
	struct agent a;

	agent_start(&a, 4 << 20);
	remote_start(h, &a);
	for (int i = 0; i < N; i++)
		status[i] = blk_post(h, BLK_T_OUT, (uint64_t)i * 16,
				     galloc(h, SZ), SZ, false);
	kick(h, 0);
	h->vd->ops->quiesce(h->vd);
	taken = last_avail(h, 0);
	used = used_idx(&h->ring[0]);
	assert_int_equal(taken, N);
	assert_int_equal(used, taken);
	for (int i = 0; i < N; i++) /* done, with a status, before */
		assert_int_equal(*status[i], BLK_S_OK);
	h->ring[0].used_seen = used;
	assert_int_equal(h->vd->ops->release(h->vd, why, sizeof(why)), 0);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	assert_int_equal(__atomic_load_n(&a.clients, __ATOMIC_SEQ_CST), 2);
	status[N] = blk_post(h, BLK_T_FLUSH, 0, 0, 0, false);
	h->vd->ops->resume(h->vd);
	assert_true(wait_used(h, 0, 1));
	for (int i = 0; i <= N; i++)
		assert_int_equal(*status[i], BLK_S_OK);
	remote_end(h, &a);
}

/* Created released (an incoming migration): no agent needed until acquire,
 * which learns the capacity; a wrong key is refused with a reason. */
static void test_blk_remote_created_released(void **state)
{
	struct harness *h = *state;
	uint8_t bad[32];
	char uri[64], why[256] = "";
	struct err e = {0};
	struct agent a;

	agent_start(&a, 1 << 20);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", a.port);
	assert_int_equal(virtio_blk_create_remote(&h->blk, &h->mem, uri,
						  agent_key, 8, false, 0, &e),
			 -EINVAL); /* key too short */
	memset(bad, 1, sizeof(bad));
	assert_true(virtio_blk_create_remote(&h->blk, &h->mem, uri, bad,
					     sizeof(bad), false, 0, &e) < 0);
	assert_non_null(strstr(e.msg, "secret"));
	assert_int_equal(virtio_blk_create_remote(&h->blk, &h->mem, uri,
						  agent_key, sizeof(agent_key),
						  false, VIRTIO_CREATE_RELEASED,
						  &e),
			 0);
	h->vd = virtio_blk_device(h->blk);
	assert_int_equal(h->vd->ops->acquire(h->vd, why, sizeof(why)), 0);
	{
		uint8_t cfg[8];
		uint64_t cap;

		h->vd->ops->config_read(h->vd, 0, cfg, 8);
		memcpy(&cap, cfg, 8);
		assert_int_equal(le64toh(cap), (1 << 20) / 512);
	}
	virtio_blk_destroy(h->blk);
	h->blk = NULL;
	h->vd = NULL;
	agent_stop(&a);
}

struct switch_call {
	struct virtio_blk *blk;
	const char *path;
	struct virtio_blk_switch_stats st;
	struct err e;
	int rc;
	bool done;
};

static void *switch_thread(void *arg)
{
	struct switch_call *s = arg;

	s->rc = virtio_blk_switch(s->blk, s->path, &s->st, &s->e);
	__atomic_store_n(&s->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * device-switch while the driver keeps writing 4 KiB blocks all over a
 * 64 MiB disk: the local copy ends up with every write, done before,
 * during or after the copy; the agent's image gets none after it.
 */
static void test_blk_remote_switch_under_writes(void **state)
{
	struct harness *h = *state;
	enum { SIZE = 64 << 20, BLOCKS = SIZE / 4096, MAXW = 4000 };
	struct switch_call sc = {0};
	char local[64];
	uint32_t *last = calloc(BLOCKS, sizeof(*last)); /* write no. + 1 */
	uint64_t buf = galloc_page(h, 4096);
	uint8_t *want = malloc(4096), *got = malloc(4096);
	int during = 0, after = 0, n = 0, fd;
	unsigned int rnd = 12345;
	struct agent a;
	pthread_t t;

	assert_non_null(last);
	assert_non_null(want);
	assert_non_null(got);
	agent_start(&a, SIZE);
	remote_start(h, &a);
	snprintf(local, sizeof(local), "/tmp/dvmm-local-XXXXXX");
	fd = mkstemp(local);
	assert_true(fd >= 0);
	close(fd);
	/* data there before the switch */
	for (; n < 200; n++) {
		uint32_t b = (rnd = rnd * 1103515245 + 12345) % BLOCKS;

		fill_pattern(gptr(h, buf, 4096), 4096, n);
		assert_int_equal(
			blk_do(h, BLK_T_OUT, b * 8ULL, buf, 4096, NULL),
			BLK_S_OK);
		last[b] = n + 1;
	}
	sc.blk = h->blk;
	sc.path = local;
	assert_int_equal(pthread_create(&t, NULL, switch_thread, &sc), 0);
	while (n < MAXW && after < 50) {
		uint32_t b = (rnd = rnd * 1103515245 + 12345) % BLOCKS;

		if (__atomic_load_n(&sc.done, __ATOMIC_ACQUIRE))
			after++;
		else
			during++;
		fill_pattern(gptr(h, buf, 4096), 4096, n);
		assert_int_equal(
			blk_do(h, BLK_T_OUT, b * 8ULL, buf, 4096, NULL),
			BLK_S_OK);
		last[b] = n + 1;
		n++;
	}
	pthread_join(t, NULL);
	assert_int_equal(sc.rc, 0);
	assert_true(during > 0); /* the copy raced with writes */
	if (getenv("DVMM_TEST_VERBOSE"))
		fprintf(stderr,
			"switch: %d writes during, %u passes, %llu "
			"regions at the end, %llu us held\n",
			during, sc.st.passes,
			(unsigned long long)sc.st.final_regions,
			(unsigned long long)sc.st.paused_us);
	assert_true(after > 0);
	fd = open(local, O_RDONLY);
	assert_true(fd >= 0);
	for (uint32_t b = 0; b < BLOCKS; b++) {
		assert_int_equal(pread(fd, got, 4096, (off_t)b * 4096), 4096);
		if (last[b])
			fill_pattern(want, 4096, last[b] - 1);
		else
			memset(want, 0, 4096);
		if (memcmp(got, want, 4096))
			fail_msg("block %u: not write %u", b, last[b]);
	}
	close(fd);
	/* reads come from the local file now, and still match */
	assert_int_equal(blk_do(h, BLK_T_IN, 0, buf, 4096, NULL), BLK_S_OK);
	/* a second switch: nothing remote left */
	{
		struct virtio_blk_switch_stats st;
		struct err e = {0};

		assert_int_equal(virtio_blk_switch(h->blk, local, &st, &e),
				 -EINVAL);
		assert_non_null(strstr(e.msg, "not served by a disk agent"));
	}
	remote_end(h, &a);
	unlink(local);
	free(last);
	free(want);
	free(got);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_blk_config_and_features),
		T(test_blk_create_errors),
		T(test_blk_write_read),
		T(test_blk_scattered),
		T(test_blk_flush_and_get_id),
		T(test_blk_bad_requests),
		T(test_blk_readonly),
		T(test_blk_no_status_needs_reset),
		T(test_blk_bad_descriptor_needs_reset),
		T(test_blk_many_in_flight),
		T(test_blk_writethrough_without_flush),
		T(test_blk_discard),
		T(test_blk_reset_in_flight),
		T(test_blk_quiesce_in_flight),
		T(test_blk_quiesce_waits_for_irq),
		T(test_blk_write_log),
		T(test_blk_save_load),
		T(test_blk_release_acquire),
		T(test_blk_created_released),
		T(test_blk_migration_states),
		T(test_blk_remote_rw),
		T(test_blk_remote_quiesce_release),
		T(test_blk_remote_created_released),
		T(test_blk_remote_switch_under_writes),
		T(test_net_config),
		T(test_net_tx),
		T(test_net_rx),
		T(test_net_rx_short_buffer_needs_reset),
		T(test_net_save_load_frames),
		T(test_net_quiesce_waits_for_tx_irq),
		T(test_net_load_checks),
		T(test_net_release_acquire),
		T(test_console_tx),
		T(test_console_tx_large),
		T(test_console_reset_while_blocked),
		T(test_console_rx),
		T(test_console_quiesce),
		T(test_console_quiesce_stuck_output),
		T(test_rng),
		T(test_rng_readonly_buffer_needs_reset),
		T(test_rng_quiesce),
		T(test_quiesce_not_activated),
	};

	log_set_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
