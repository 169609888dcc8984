/*
 * migration/devstate.c - the machine's device state for a migration (see
 * devstate.h). The encoding: "DVDS", a version, the legacy devices' fields,
 * then for each virtio device its kind, the transport's fields and its own
 * bytes; every integer little-endian, every bool one byte (0 or 1).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "migration/devstate.h"

#define DS_MAGIC 0x53445644u /* "DVDS" */
#define DEV_BYTES_MAX (2u << 20)

/* ---- quiesce, hand-over ---- */

void devstate_quiesce(struct machine *pc)
{
	for (int i = 0; i < pc->nvirtio; i++)
		if (pc->virtio[i].transport_up)
			virtio_pci_quiesce(&pc->virtio[i].vp);
}

void devstate_resume(struct machine *pc)
{
	for (int i = 0; i < pc->nvirtio; i++)
		if (pc->virtio[i].transport_up)
			virtio_pci_resume(&pc->virtio[i].vp);
}

static struct virtio_device *vdev(struct machine *pc, int i)
{
	return pc->virtio[i].transport_up ? pc->virtio[i].vp.vd : NULL;
}

static int hand_over(struct machine *pc, int i, bool release, struct err *e)
{
	struct virtio_device *vd = vdev(pc, i);
	char why[160] = "";
	int rc;

	if (!vd)
		return 0;
	if (release)
		rc = vd->ops->release ? vd->ops->release(vd, why, sizeof(why)) :
					0;
	else
		rc = vd->ops->acquire ? vd->ops->acquire(vd, why, sizeof(why)) :
					0;
	if (rc)
		return err_set(e, rc, "%s: %s", vd->name,
			       why[0] ? why : strerror(-rc));
	return 0;
}

int devstate_release(struct machine *pc, struct err *e)
{
	for (int i = 0; i < pc->nvirtio; i++) {
		int rc = hand_over(pc, i, true, e);

		if (rc) {
			struct err ignored = {0};

			while (i-- > 0)
				hand_over(pc, i, false, &ignored);
			return rc;
		}
	}
	return 0;
}

int devstate_acquire(struct machine *pc, struct err *e)
{
	for (int i = 0; i < pc->nvirtio; i++) {
		int rc = hand_over(pc, i, false, e);

		if (rc)
			return rc;
	}
	return 0;
}

/* ---- writer ---- */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	int err;
};

static void put(struct wbuf *w, const void *v, size_t n)
{
	if (w->err)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 65536;
		uint8_t *p;

		while (cap < w->len + n)
			cap *= 2;
		p = realloc(w->p, cap);
		if (!p) {
			w->err = -ENOMEM;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, v, n);
	w->len += n;
}

static void put_le(struct wbuf *w, uint64_t v, size_t n)
{
	uint8_t b[8];

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(w, b, n);
}

#define PUT8(w, v) put_le(w, (uint64_t)(v), 1)
#define PUT16(w, v) put_le(w, (uint64_t)(v), 2)
#define PUT32(w, v) put_le(w, (uint64_t)(v), 4)
#define PUT64(w, v) put_le(w, (uint64_t)(v), 8)

/* ---- reader ---- */

struct rbuf {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

static const uint8_t *take(struct rbuf *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || n > r->len - r->off) {
		r->bad = true;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

static uint64_t get_le(struct rbuf *r, size_t n)
{
	const uint8_t *b = take(r, n);
	uint64_t v = 0;

	for (size_t i = 0; b && i < n; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static uint8_t get8(struct rbuf *r)
{
	return (uint8_t)get_le(r, 1);
}

static uint16_t get16(struct rbuf *r)
{
	return (uint16_t)get_le(r, 2);
}

static uint32_t get32(struct rbuf *r)
{
	return (uint32_t)get_le(r, 4);
}

static uint64_t get64(struct rbuf *r)
{
	return get_le(r, 8);
}

static bool get_bool(struct rbuf *r)
{
	uint8_t v = get8(r);

	if (v > 1)
		r->bad = true;
	return v == 1;
}

static void get_bytes(struct rbuf *r, void *dst, size_t n)
{
	const uint8_t *p = take(r, n);

	if (p)
		memcpy(dst, p, n);
}

/* ---- the legacy devices ---- */

static void save_legacy(struct machine *pc, struct wbuf *w)
{
	struct uart8250_regs u;

	uart8250_save(&pc->uart, &u);
	put(w,
	    (uint8_t[]){u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.dll, u.dlm,
			u.fcr, u.thr_irq_pending},
	    10);
	pthread_mutex_lock(&pc->rtc.lock);
	PUT8(w, pc->rtc.index);
	PUT8(w, pc->rtc.nmi_disabled);
	put(w, pc->rtc.nvram, sizeof(pc->rtc.nvram));
	PUT64(w, pc->rtc.offset_sec);
	pthread_mutex_unlock(&pc->rtc.lock);
	pthread_mutex_lock(&pc->kbd.lock);
	put(w,
	    (uint8_t[]){pc->kbd.cmd, pc->kbd.ccb, pc->kbd.out_port,
			pc->kbd.out_buf, pc->kbd.out_full},
	    5);
	pthread_mutex_unlock(&pc->kbd.lock);
	pthread_mutex_lock(&pc->pm.lock);
	PUT16(w, pc->pm.pm1_sts);
	PUT16(w, pc->pm.pm1_en);
	PUT16(w, pc->pm.pm1_cnt);
	PUT8(w, pc->pm.cf9);
	pthread_mutex_unlock(&pc->pm.lock);
}

static void decode_legacy(struct rbuf *r, struct devstate *ds)
{
	ds->uart.ier = get8(r);
	ds->uart.lcr = get8(r);
	ds->uart.mcr = get8(r);
	ds->uart.lsr = get8(r);
	ds->uart.msr = get8(r);
	ds->uart.scr = get8(r);
	ds->uart.dll = get8(r);
	ds->uart.dlm = get8(r);
	ds->uart.fcr = get8(r);
	ds->uart.thr_irq_pending = get_bool(r);
	ds->rtc_index = get8(r) & 0x7f;
	ds->rtc_nmi_disabled = get_bool(r);
	get_bytes(r, ds->rtc_nvram, sizeof(ds->rtc_nvram));
	ds->rtc_offset_sec = (int64_t)get64(r);
	ds->kbd_cmd = get8(r);
	ds->kbd_ccb = get8(r);
	ds->kbd_out_port = get8(r);
	ds->kbd_out_buf = get8(r);
	ds->kbd_out_full = get_bool(r);
	ds->pm1_sts = get16(r);
	ds->pm1_en = get16(r);
	ds->pm1_cnt = get16(r);
	ds->cf9 = get8(r);
	/* a guest-set clock more than ~300 years off is not a clock */
	if (ds->rtc_offset_sec > (1LL << 33) ||
	    ds->rtc_offset_sec < -(1LL << 33))
		r->bad = true;
}

static void load_legacy(struct machine *pc, const struct devstate *ds)
{
	uart8250_load(&pc->uart, &ds->uart);
	pthread_mutex_lock(&pc->rtc.lock);
	pc->rtc.index = ds->rtc_index;
	pc->rtc.nmi_disabled = ds->rtc_nmi_disabled;
	memcpy(pc->rtc.nvram, ds->rtc_nvram, sizeof(pc->rtc.nvram));
	pc->rtc.offset_sec = ds->rtc_offset_sec;
	pthread_mutex_unlock(&pc->rtc.lock);
	pthread_mutex_lock(&pc->kbd.lock);
	pc->kbd.cmd = ds->kbd_cmd;
	pc->kbd.ccb = ds->kbd_ccb;
	pc->kbd.out_port = ds->kbd_out_port;
	pc->kbd.out_buf = ds->kbd_out_buf;
	pc->kbd.out_full = ds->kbd_out_full;
	pthread_mutex_unlock(&pc->kbd.lock);
	pthread_mutex_lock(&pc->pm.lock);
	pc->pm.pm1_sts = ds->pm1_sts;
	pc->pm.pm1_en = ds->pm1_en;
	pc->pm.pm1_cnt = ds->pm1_cnt;
	pc->pm.cf9 = ds->cf9;
	pthread_mutex_unlock(&pc->pm.lock);
}

/* ---- virtio ---- */

static void save_virtio(struct wbuf *w, uint8_t kind,
			const struct virtio_pci_state *s)
{
	PUT8(w, kind);
	put(w, s->cfg, PCI_CFG_SIZE);
	PUT16(w, s->device_id);
	PUT16(w, s->num_queues);
	PUT32(w, s->device_feature_select);
	PUT32(w, s->driver_feature_select);
	PUT64(w, s->driver_features);
	PUT64(w, s->guest_features);
	PUT16(w, s->queue_select);
	PUT8(w, s->status);
	PUT8(w, s->config_generation);
	PUT16(w, s->msix_config);
	PUT8(w, s->isr);
	PUT8(w, s->intx_level);
	for (int q = 0; q < s->num_queues && q < VIRTIO_MAX_QUEUES; q++) {
		PUT16(w, s->q[q].size);
		PUT16(w, s->q[q].msix_vector);
		PUT8(w, s->q[q].enable);
		PUT64(w, s->q[q].desc);
		PUT64(w, s->q[q].driver);
		PUT64(w, s->q[q].device);
		PUT16(w, s->q[q].last_avail);
		PUT16(w, s->q[q].used_idx);
		PUT16(w, s->q[q].signalled_used);
		PUT8(w, s->q[q].signalled_valid);
		PUT8(w, s->q[q].kick_wanted);
	}
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		PUT64(w, s->msix[v].addr);
		PUT32(w, s->msix[v].data);
		PUT8(w, s->msix[v].masked);
		PUT8(w, s->msix[v].pending);
	}
	PUT32(w, s->dev_len);
	if (s->dev_len)
		put(w, s->dev, s->dev_len);
}

static void decode_virtio(struct rbuf *r, uint8_t *kind,
			  struct virtio_pci_state *s)
{
	uint32_t n;

	*kind = get8(r);
	get_bytes(r, s->cfg, PCI_CFG_SIZE);
	s->device_id = get16(r);
	s->num_queues = get16(r);
	if (s->num_queues > VIRTIO_MAX_QUEUES)
		r->bad = true;
	s->device_feature_select = get32(r);
	s->driver_feature_select = get32(r);
	s->driver_features = get64(r);
	s->guest_features = get64(r);
	s->queue_select = get16(r);
	s->status = get8(r);
	s->config_generation = get8(r);
	s->msix_config = get16(r);
	s->isr = get8(r);
	s->intx_level = get_bool(r);
	for (int q = 0; q < s->num_queues && !r->bad; q++) {
		s->q[q].size = get16(r);
		s->q[q].msix_vector = get16(r);
		s->q[q].enable = get_bool(r);
		s->q[q].desc = get64(r);
		s->q[q].driver = get64(r);
		s->q[q].device = get64(r);
		s->q[q].last_avail = get16(r);
		s->q[q].used_idx = get16(r);
		s->q[q].signalled_used = get16(r);
		s->q[q].signalled_valid = get_bool(r);
		s->q[q].kick_wanted = get_bool(r);
	}
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		s->msix[v].addr = get64(r);
		s->msix[v].data = get32(r);
		s->msix[v].masked = get_bool(r);
		s->msix[v].pending = get_bool(r);
	}
	n = get32(r);
	if (r->bad || n > DEV_BYTES_MAX || n > r->len - r->off) {
		r->bad = true;
		return;
	}
	if (n) {
		s->dev = malloc(n);
		if (!s->dev) {
			r->bad = true;
			return;
		}
		get_bytes(r, s->dev, n);
		s->dev_len = n;
	}
}

/* ---- the whole ---- */

int devstate_save(struct machine *pc, uint8_t **out, size_t *len, struct err *e)
{
	struct wbuf w = {0};
	struct virtio_pci_state *s = malloc(sizeof(*s));
	int rc = s ? 0 : -ENOMEM;

	PUT32(&w, DS_MAGIC);
	PUT32(&w, DEVSTATE_VERSION);
	save_legacy(pc, &w);
	PUT32(&w, pc->nvirtio);
	for (int i = 0; i < pc->nvirtio && !rc; i++) {
		if (!pc->virtio[i].transport_up) {
			rc = err_set(e, -ENODEV, "virtio device %d is not up",
				     i);
			break;
		}
		rc = virtio_pci_save(&pc->virtio[i].vp, s);
		if (rc) {
			err_set(e, rc, "%s: cannot save its state",
				pc->virtio[i].vp.vd->name);
			break;
		}
		save_virtio(&w, (uint8_t)pc->virtio[i].kind, s);
		virtio_pci_state_free(s);
	}
	free(s);
	if (!rc && w.err)
		rc = err_set(e, w.err, "out of memory for the device state");
	if (rc) {
		free(w.p);
		return rc;
	}
	*out = w.p;
	*len = w.len;
	return 0;
}

void devstate_free(struct devstate *ds)
{
	if (!ds)
		return;
	for (int i = 0; i < MACHINE_MAX_VIRTIO; i++)
		virtio_pci_state_free(&ds->virtio[i]);
	free(ds);
}

int devstate_decode(const struct machine *pc, const uint8_t *buf, size_t len,
		    struct devstate **out, struct err *e)
{
	struct rbuf r = {.p = buf, .len = len};
	struct devstate *ds = calloc(1, sizeof(*ds));
	uint32_t magic, version, n;

	*out = NULL;
	if (!ds)
		return err_set(e, -ENOMEM, "out of memory");
	magic = get32(&r);
	version = get32(&r);
	if (r.bad || magic != DS_MAGIC || version != DEVSTATE_VERSION) {
		devstate_free(ds);
		return err_set(e, -EPROTO,
			       "device state: not a version %d record",
			       DEVSTATE_VERSION);
	}
	decode_legacy(&r, ds);
	n = get32(&r);
	if (!r.bad && n != (uint32_t)pc->nvirtio) {
		devstate_free(ds);
		return err_set(e, -EINVAL,
			       "the source VM has %u virtio devices, this one "
			       "%d: start it with the same devices",
			       n, pc->nvirtio);
	}
	ds->nvirtio = pc->nvirtio;
	for (int i = 0; i < pc->nvirtio && !r.bad; i++) {
		decode_virtio(&r, &ds->kind[i], &ds->virtio[i]);
		if (!r.bad && ds->kind[i] != (uint8_t)pc->virtio[i].kind) {
			devstate_free(ds);
			return err_set(e, -EINVAL,
				       "virtio device %d is of another kind on "
				       "the source: start this VM with the "
				       "same devices in the same order",
				       i);
		}
	}
	if (r.bad || r.off != r.len) {
		devstate_free(ds);
		return err_set(e, -EPROTO, "device state: malformed record");
	}
	*out = ds;
	return 0;
}

int devstate_load(struct machine *pc, const struct devstate *ds, struct err *e)
{
	load_legacy(pc, ds);
	for (int i = 0; i < ds->nvirtio; i++) {
		char why[160] = "";
		struct virtio_pci *vp = &pc->virtio[i].vp;
		int rc = virtio_pci_load(vp, &pc->pci, &ds->virtio[i], why,
					 sizeof(why));

		if (rc)
			return err_set(e, rc, "%s: %s", vp->vd->name, why);
	}
	return 0;
}
