/*
 * virtio/virtqueue.c - the device side of a split virtqueue (virtio 1.2,
 * 2.7). The rings live in guest memory and the guest may change them at
 * any moment, so every shared field is read exactly once into a local and
 * the local is validated before use. Ordering: avail->idx is read with
 * acquire semantics before the ring entries it covers, used->idx is
 * written with release semantics after the entries it publishes, and
 * full barriers separate the notification handshakes (avail_event or
 * used->flags against avail->idx, used->idx against used_event or
 * avail->flags).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "virtio/virtqueue.h"

/* Byte offsets inside the rings (the structs are packed). */
#define RING_FLAGS_OFF 0
#define RING_IDX_OFF 2
#define RING_ENTRIES_OFF 4
#define DESC_SIZE 16u
#define USED_ELEM_SIZE 8u

/* ---- guest-shared fields: one access each, aligned by vq_enable ---- */

static void *ring_at(const void *ring, size_t off)
{
	return (uint8_t *)ring + off;
}

static uint16_t load16(const void *ring, size_t off, int order)
{
	return le16toh(__atomic_load_n((uint16_t *)ring_at(ring, off), order));
}

static void store16(void *ring, size_t off, uint16_t v, int order)
{
	__atomic_store_n((uint16_t *)ring_at(ring, off), htole16(v), order);
}

static void store32(void *ring, size_t off, uint32_t v)
{
	__atomic_store_n((uint32_t *)ring_at(ring, off), htole32(v),
			 __ATOMIC_RELAXED);
}

static void full_barrier(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* avail->idx; acquire: ring entries and descriptors are read after it. */
static uint16_t avail_idx(const struct virtqueue *vq)
{
	return load16(vq->avail, RING_IDX_OFF, __ATOMIC_ACQUIRE);
}

static uint16_t avail_entry(const struct virtqueue *vq, uint16_t slot)
{
	return load16(vq->avail, RING_ENTRIES_OFF + 2u * slot,
		      __ATOMIC_RELAXED);
}

/* used_event lives in avail->ring[size]. */
static uint16_t used_event(const struct virtqueue *vq)
{
	return avail_entry(vq, vq->size);
}

/* The device wrote its used ring: tell a migration (guest_mem.h). */
static void log_used(const struct virtqueue *vq)
{
	guest_mem_log_write(vq->mem, vq->used,
			    RING_ENTRIES_OFF + USED_ELEM_SIZE * vq->size + 2);
}

/* avail_event lives right after used->ring[size - 1]. */
static void set_avail_event(struct virtqueue *vq, uint16_t v)
{
	store16(vq->used, RING_ENTRIES_OFF + USED_ELEM_SIZE * vq->size, v,
		__ATOMIC_RELAXED);
	log_used(vq);
}

/*
 * Copy one descriptor out of a table (direct or indirect; the latter may
 * be unaligned). The compiler barrier keeps the compiler from re-reading
 * guest memory instead of using the copy: the copy is what gets validated.
 */
static void read_desc(const uint8_t *table, uint32_t i, struct vring_desc *d)
{
	memcpy(d, table + (size_t)i * DESC_SIZE, sizeof(*d));
	__asm__ __volatile__("" ::: "memory");
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

/* ---- errors ---- */

static int vq_fail(struct virtqueue *vq, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int vq_fail(struct virtqueue *vq, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vq->error, sizeof(vq->error), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* ---- set-up ---- */

int vq_init(struct virtqueue *vq)
{
	pthread_mutexattr_t attr;
	int rc;

	memset(vq, 0, sizeof(*vq));
	vq->kick_wanted = true;
	rc = pthread_mutexattr_init(&attr);
	if (rc)
		return -rc;
	rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
	if (!rc)
		rc = pthread_mutex_init(&vq->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	return -rc;
}

void vq_destroy(struct virtqueue *vq)
{
	pthread_mutex_destroy(&vq->lock);
}

static bool valid_size(uint16_t size)
{
	return size >= 1 && size <= VQ_MAX_SIZE && !(size & (size - 1));
}

/* Host view of one ring, or NULL with vq->error set. */
static void *map_ring(struct virtqueue *vq, const struct guest_mem *mem,
		      const char *what, uint64_t gpa, unsigned int align,
		      uint64_t len)
{
	void *p = NULL;

	if (gpa & (align - 1)) {
		vq_fail(vq, "%s at 0x%" PRIx64 " is not %u-byte aligned", what,
			gpa, align);
		return NULL;
	}
	if (gpa <= UINT64_MAX - len)
		p = guest_mem_ptr(mem, gpa, len);
	if (p)
		return p;
	vq_fail(vq, "%s 0x%" PRIx64 "+0x%" PRIx64 " is outside guest RAM", what,
		gpa, len);
	return NULL;
}

int vq_enable(struct virtqueue *vq, const struct guest_mem *mem, uint16_t size,
	      uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa,
	      uint64_t features)
{
	bool ev = (features >> VIRTIO_F_EVENT_IDX) & 1;
	uint64_t extra = ev ? 2 : 0; /* used_event / avail_event */
	void *desc, *avail, *used;

	vq_disable(vq);
	if (!mem)
		return vq_fail(vq, "no guest memory");
	if (!valid_size(size))
		return vq_fail(vq, "bad queue size %u (power of two, 1..%d)",
			       size, VQ_MAX_SIZE);
	desc = map_ring(vq, mem, "descriptor table", desc_gpa, 16,
			(uint64_t)DESC_SIZE * size);
	if (!desc)
		return -EINVAL;
	avail = map_ring(vq, mem, "avail ring", avail_gpa, 2,
			 RING_ENTRIES_OFF + 2ull * size + extra);
	if (!avail)
		return -EINVAL;
	used = map_ring(vq, mem, "used ring", used_gpa, 4,
			RING_ENTRIES_OFF + (uint64_t)USED_ELEM_SIZE * size +
				extra);
	if (!used)
		return -EINVAL;
	vq->mem = mem;
	vq->size = size;
	vq->event_idx = ev;
	vq->indirect = (features >> VIRTIO_F_INDIRECT_DESC) & 1;
	vq->desc_gpa = desc_gpa;
	vq->avail_gpa = avail_gpa;
	vq->used_gpa = used_gpa;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->enabled = true;
	return 0;
}

void vq_disable(struct virtqueue *vq)
{
	vq->enabled = false;
	vq->size = 0;
	vq->event_idx = false;
	vq->indirect = false;
	vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_valid = false;
	vq->kick_wanted = true;
	vq->error[0] = '\0';
}

/* ---- walking a chain ---- */

struct chain_walk {
	struct virtqueue *vq;
	struct vq_chain *c;
	uint16_t desc;	    /* direct descriptor being looked at */
	bool in_table;	    /* inside the indirect table of @desc */
	uint32_t entry;	    /* ... at this entry */
	unsigned int ndesc; /* buffer descriptors seen (direct+indirect) */
	bool seen_write;
};

/* vq_fail with "descriptor D: " or "descriptor D, indirect entry E: ". */
static int walk_fail(struct chain_walk *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int walk_fail(struct chain_walk *w, const char *fmt, ...)
{
	char *err = w->vq->error;
	size_t cap = sizeof(w->vq->error);
	va_list ap;
	int n;

	if (w->in_table)
		n = snprintf(err, cap,
			     "descriptor %u, indirect entry %u: ", w->desc,
			     w->entry);
	else
		n = snprintf(err, cap, "descriptor %u: ", w->desc);
	if (n < 0 || (size_t)n >= cap)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(err + n, cap - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Host address of [addr, addr+len), len > 0, or NULL with the reason. */
static void *map_buffer(struct chain_walk *w, const char *what, uint64_t addr,
			uint32_t len)
{
	const struct guest_mem *mem = w->vq->mem;
	void *p;

	if (len - 1 > UINT64_MAX - addr) { /* last byte beyond 2^64 - 1 */
		walk_fail(w, "%s 0x%" PRIx64 "+0x%x wraps past 2^64", what,
			  addr, len);
		return NULL;
	}
	p = guest_mem_ptr(mem, addr, len);
	if (p)
		return p;
	if (guest_mem_ptr(mem, addr, 1))
		walk_fail(w, "%s 0x%" PRIx64 "+0x%x runs past the end of RAM",
			  what, addr, len);
	else
		walk_fail(w, "%s 0x%" PRIx64 "+0x%x is outside guest RAM", what,
			  addr, len);
	return NULL;
}

/* One buffer descriptor (not INDIRECT) into the chain's iovecs. */
static int add_segment(struct chain_walk *w, const struct vring_desc *d)
{
	struct vq_chain *c = w->c;
	bool writable = d->flags & VRING_DESC_F_WRITE;
	struct iovec *iov;
	void *p;

	if (++w->ndesc > VQ_MAX_SEGS)
		return walk_fail(w, "chain longer than %d descriptors",
				 VQ_MAX_SEGS);
	if (writable)
		w->seen_write = true;
	else if (w->seen_write)
		return walk_fail(w, "readable segment after a writable one");
	if (d->len == 0)
		return 0;
	if (c->out_bytes + c->in_bytes + d->len > UINT32_MAX)
		return walk_fail(w, "chain carries more than 4 GiB");
	p = map_buffer(w, "buffer", d->addr, d->len);
	if (!p)
		return -EINVAL;
	iov = &c->iov[c->n_out + c->n_in];
	iov->iov_base = p;
	iov->iov_len = d->len;
	if (writable) {
		c->n_in++;
		c->in_bytes += d->len;
	} else {
		c->n_out++;
		c->out_bytes += d->len;
	}
	return 0;
}

static int fail_loop(struct chain_walk *w, uint32_t n)
{
	return walk_fail(w, "loop in %s (more than %u descriptors)",
			 w->in_table ? "indirect table" : "descriptor chain",
			 n);
}

static int fail_next(struct chain_walk *w, uint16_t next, uint32_t n)
{
	if (w->in_table)
		return walk_fail(w, "next %u out of range (table of %u)", next,
				 n);
	return walk_fail(w, "next %u out of range (queue size %u)", next, n);
}

static int walk_indirect(struct chain_walk *w, const struct vring_desc *d);

/* Follow a chain through the ring's table or an indirect one of @n. */
static int walk_table(struct chain_walk *w, const uint8_t *table, uint32_t n,
		      uint32_t first)
{
	struct vring_desc d;
	uint32_t i = first;
	int rc;

	for (uint32_t steps = 1;; steps++) {
		if (w->in_table)
			w->entry = i;
		else
			w->desc = (uint16_t)i;
		if (steps > n)
			return fail_loop(w, n);
		read_desc(table, i, &d);
		if (d.flags & VRING_DESC_F_INDIRECT)
			return walk_indirect(w, &d);
		rc = add_segment(w, &d);
		if (rc || !(d.flags & VRING_DESC_F_NEXT))
			return rc;
		if (d.next >= n)
			return fail_next(w, d.next, n);
		i = d.next;
	}
}

/* An INDIRECT descriptor: its table's chain starts at entry 0. */
static int walk_indirect(struct chain_walk *w, const struct vring_desc *d)
{
	const uint8_t *table;

	if (w->in_table)
		return walk_fail(w, "nested INDIRECT");
	if (!w->vq->indirect)
		return walk_fail(w, "INDIRECT without VIRTIO_F_INDIRECT_DESC");
	if (d->flags & VRING_DESC_F_NEXT)
		return walk_fail(w, "both INDIRECT and NEXT set");
	if (d->len == 0)
		return walk_fail(w, "empty indirect table");
	if (d->len % DESC_SIZE)
		return walk_fail(w, "indirect table size %u is not 16*n",
				 d->len);
	table = map_buffer(w, "indirect table", d->addr, d->len);
	if (!table)
		return -EINVAL;
	w->in_table = true;
	return walk_table(w, table, d->len / DESC_SIZE, 0);
}

/* ---- the avail ring ---- */

/* Entries the driver made available, after the EVENT_IDX second look. */
static uint16_t pending(struct virtqueue *vq)
{
	uint16_t n = avail_idx(vq) - vq->last_avail;

	if (n || !vq->event_idx || !vq->kick_wanted)
		return n;
	/*
	 * Empty, and kicks wanted: avail_event (written by the last pop or
	 * vq_set_kick_wanted) must be visible before we look again, or a
	 * driver that read the old avail_event skips the kick we rely on.
	 */
	full_barrier();
	return avail_idx(vq) - vq->last_avail;
}

static int fail_jump(struct virtqueue *vq, uint16_t n)
{
	return vq_fail(vq, "avail idx jumped from %u to %u (queue size %u)",
		       vq->last_avail, (uint16_t)(vq->last_avail + n),
		       vq->size);
}

static int fail_head(struct virtqueue *vq, uint16_t slot, uint16_t head)
{
	return vq_fail(vq,
		       "avail ring entry %u: head %u out of range "
		       "(queue size %u)",
		       slot, head, vq->size);
}

int vq_pop(struct virtqueue *vq, struct vq_chain *c)
{
	struct chain_walk w = {.vq = vq, .c = c};
	uint16_t n, head, slot;
	int rc;

	if (!vq->enabled)
		return 0;
	n = pending(vq);
	if (n > vq->size)
		return fail_jump(vq, n);
	if (n == 0)
		return 0;
	slot = vq->last_avail & (vq->size - 1);
	head = avail_entry(vq, slot);
	if (head >= vq->size)
		return fail_head(vq, slot, head);
	c->head = head;
	c->n_out = c->n_in = 0;
	c->out_bytes = c->in_bytes = 0;
	rc = walk_table(&w, (const uint8_t *)vq->desc, vq->size, head);
	if (rc)
		return rc;
	vq->last_avail++;
	if (vq->event_idx && vq->kick_wanted)
		set_avail_event(vq, vq->last_avail);
	return 1;
}

bool vq_has_work(struct virtqueue *vq)
{
	return vq->enabled && avail_idx(vq) != vq->last_avail;
}

/*
 * Without EVENT_IDX the NO_NOTIFY flag is the switch. With it there is no
 * "off": avail_event simply stops following last_avail (vq_pop moves it
 * only while kicks are wanted), so the driver kicks at most once more.
 */
void vq_set_kick_wanted(struct virtqueue *vq, bool wanted)
{
	vq->kick_wanted = wanted;
	if (!vq->enabled)
		return;
	if (!vq->event_idx) {
		store16(vq->used, RING_FLAGS_OFF,
			wanted ? 0 : VRING_USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
		log_used(vq);
	} else if (wanted) {
		set_avail_event(vq, vq->last_avail);
	}
	if (wanted)
		full_barrier(); /* before the caller's vq_has_work() */
}

/* ---- the used ring ---- */

void vq_push(struct virtqueue *vq, uint16_t head, uint32_t len)
{
	size_t off;

	if (!vq->enabled)
		return;
	off = RING_ENTRIES_OFF +
	      (size_t)USED_ELEM_SIZE * (vq->used_idx & (vq->size - 1));
	store32(vq->used, off, head);
	store32(vq->used, off + 4, len);
	vq->used_idx++;
	store16(vq->used, RING_IDX_OFF, vq->used_idx, __ATOMIC_RELEASE);
	log_used(vq);
}

void vq_unpop(struct virtqueue *vq)
{
	vq->last_avail--;
}

/* vring_need_event() from the specification (2.7.10). */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

bool vq_should_interrupt(struct virtqueue *vq)
{
	uint16_t old = vq->signalled_used;
	bool valid = vq->signalled_valid;

	if (!vq->enabled)
		return false;
	/* used->idx must be visible before we read the driver's wishes. */
	full_barrier();
	if (!vq->event_idx)
		return !(load16(vq->avail, RING_FLAGS_OFF, __ATOMIC_RELAXED) &
			 VRING_AVAIL_F_NO_INTERRUPT);
	vq->signalled_used = vq->used_idx;
	vq->signalled_valid = true;
	if (!valid)
		return true;
	return need_event(used_event(vq), vq->used_idx, old);
}

/* ---- copying through a chain ---- */

static size_t iov_copy(const struct iovec *iov, unsigned int n, uint64_t off,
		       uint8_t *buf, size_t len, bool to_iov)
{
	size_t done = 0;

	for (unsigned int i = 0; i < n && done < len; i++) {
		size_t seg = iov[i].iov_len, chunk;
		uint8_t *base = iov[i].iov_base;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		chunk = seg - off;
		if (chunk > len - done)
			chunk = len - done;
		if (to_iov)
			memcpy(base + off, buf + done, chunk);
		else
			memcpy(buf + done, base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

size_t vq_chain_read(const struct vq_chain *c, uint64_t off, void *dst,
		     size_t len)
{
	unsigned int n = c->n_out < VQ_MAX_SEGS ? c->n_out : VQ_MAX_SEGS;

	return iov_copy(c->iov, n, off, dst, len, false);
}

size_t vq_chain_write(const struct vq_chain *c, uint64_t off, const void *src,
		      size_t len)
{
	unsigned int n_out = c->n_out < VQ_MAX_SEGS ? c->n_out : VQ_MAX_SEGS;
	unsigned int n_in =
		c->n_in < VQ_MAX_SEGS - n_out ? c->n_in : VQ_MAX_SEGS - n_out;

	return iov_copy(c->iov + n_out, n_in, off, (uint8_t *)src, len, true);
}
