/*
 * virtio.c - the user-mode virtio-pci driver library (see virtio.h):
 * finding modern virtio devices and their vendor capabilities, the
 * initialisation sequence of virtio 1.2 section 3.1, split virtqueues,
 * MSI-X vectors and the DMA arena.
 *
 * Everything runs at CPL3: the capability structures are read through
 * pci.c, the common/ISR/device/notify regions are MMIO in BARs mapped by
 * pci_init(), and a doorbell is one plain 16-bit store (in dvmm's poll
 * mode it lands in ordinary memory that the VMM watches; otherwise it
 * exits, or KVM's ioeventfd catches it). Completions are found by
 * polling the used ring; a queue with an MSI-X vector also lets the
 * waiting CPU halt until the interrupt arrives.
 */
#include "virtio.h"

#define DMA_ARENA_SIZE	(16ULL << 20)

/* virtio_pci_cap.cfg_type */
#define CAP_COMMON	1
#define CAP_NOTIFY	2
#define CAP_ISR		3
#define CAP_DEVICE	4

/* struct virtio_pci_common_cfg */
#define CC_DFSELECT	0x00
#define CC_DF		0x04
#define CC_GFSELECT	0x08
#define CC_GF		0x0c
#define CC_MSIX		0x10
#define CC_NUMQ		0x12
#define CC_STATUS	0x14
#define CC_CFGGEN	0x15
#define CC_Q_SELECT	0x16
#define CC_Q_SIZE	0x18
#define CC_Q_MSIX	0x1a
#define CC_Q_ENABLE	0x1c
#define CC_Q_NOFF	0x1e
#define CC_Q_DESCLO	0x20
#define CC_Q_DESCHI	0x24
#define CC_Q_AVAILLO	0x28
#define CC_Q_AVAILHI	0x2c
#define CC_Q_USEDLO	0x30
#define CC_Q_USEDHI	0x34
#define CC_LEN		0x38
#define NO_VECTOR	0xffff

struct vdev vdevs[VIRTIO_MAX_DEVS];
int nvdevs;

static u8 dma_arena[DMA_ARENA_SIZE] __attribute__((aligned(4096)));
static u64 dma_used;
static int msi_slots_used;
static bool probed;

/* ---- DMA memory ---- */

void *dma_alloc(u64 size, u64 align)
{
	u64 at = (dma_used + align - 1) & ~(align - 1);

	if (at + size > DMA_ARENA_SIZE || at + size < at)
		return NULL;
	dma_used = at + size;
	return dma_arena + at;	/* .bss: zero, and never handed out twice */
}

/* ---- probing ---- */

const char *virtio_type_name(u16 type)
{
	switch (type) {
	case VIRTIO_ID_NET: return "virtio-net";
	case VIRTIO_ID_BLOCK: return "virtio-blk";
	case VIRTIO_ID_CONSOLE: return "virtio-console";
	case VIRTIO_ID_RNG: return "virtio-rng";
	default: return "virtio";
	}
}

/* A region inside a memory BAR, or NULL. */
static volatile u8 *cap_region(struct pci_dev *d, u8 bar, u32 off, u32 len)
{
	struct pci_bar *b;

	if (bar > 5)
		return NULL;
	b = &d->bar[bar];
	if (b->io || !b->addr || !b->size || (u64)off + len > b->size)
		return NULL;
	return (volatile u8 *)(b->addr + off);
}

/* Fill vd from the vendor capabilities; false if a needed one is missing. */
static bool read_virtio_caps(struct vdev *vd)
{
	struct pci_dev *d = vd->pci;
	bool have_notify = false;
	int i = 0;
	u8 cap;

	while ((cap = pci_find_cap(d, PCI_CAP_VENDOR, &i))) {
		u8 type = pci_read(d, cap + 3, 1), bar = pci_read(d, cap + 4, 1);
		u32 off = pci_read(d, cap + 8, 4), len = pci_read(d, cap + 12, 4);
		volatile u8 *p = cap_region(d, bar, off, len);

		/* the first usable structure of each type wins (4.1.4) */
		if (!p)
			continue;
		if (type == CAP_COMMON && !vd->common && len >= CC_LEN) {
			vd->common = p;
		} else if (type == CAP_ISR && !vd->isr && len >= 1) {
			vd->isr = p;
		} else if (type == CAP_DEVICE && !vd->devcfg) {
			vd->devcfg = p;
			vd->devcfg_len = len;
		} else if (type == CAP_NOTIFY && !have_notify && len >= 2) {
			have_notify = true;
			vd->notify_base = (u64)p;
			vd->notify_len = len;
			vd->notify_mult = pci_read(d, cap + 16, 4);
		}
	}
	return vd->common && vd->isr && have_notify;
}

static u16 virtio_type(struct pci_dev *d)
{
	if (d->vendor != 0x1af4)
		return 0;
	if (d->device >= 0x1040 && d->device <= 0x107f)
		return d->device - 0x1040;
	/* transitional: the subsystem id is the device type (4.1.2.1) */
	if (d->device >= 0x1000 && d->device <= 0x103f)
		return d->subsys_id;
	return 0;
}

bool virtio_probe(char *msg)
{
	if (probed)
		return true;
	if (!pci_init())
		return FAIL("PCI: %s", pci.error);
	probed = true;
	for (int i = 0; i < pci.ndevs && nvdevs < VIRTIO_MAX_DEVS; i++) {
		struct pci_dev *d = &pci.devs[i];
		struct vdev *vd = &vdevs[nvdevs];
		u16 type = virtio_type(d);
		char name[16];

		if (!type)
			continue;
		memset(vd, 0, sizeof(*vd));
		vd->pci = d;
		vd->type = type;
		pci_name(d, name, sizeof(name));
		snprintf(vd->name, sizeof(vd->name), "%s %s",
			 virtio_type_name(type), name);
		if (!read_virtio_caps(vd)) {
			printf("INFO %s %04x:%04x has no usable modern "
			       "virtio capabilities: ignored\n", vd->name,
			       d->vendor, d->device);
			continue;
		}
		vd->config_msi_slot = -1;
		for (int q = 0; q < VQ_MAX; q++)
			vd->msi_slots[q] = -1;
		nvdevs++;
	}
	return true;
}

struct vdev *virtio_find(u16 type, int n)
{
	for (int i = 0; i < nvdevs; i++)
		if (vdevs[i].type == type && !n--)
			return &vdevs[i];
	return NULL;
}

/* ---- status and features ---- */

static inline u16 cc_r16(struct vdev *vd, u32 off)
{
	return mmio_r16(vd->common + off);
}

static inline void cc_w16(struct vdev *vd, u32 off, u16 v)
{
	mmio_w16(vd->common + off, v);
}

static inline void cc_w32(struct vdev *vd, u32 off, u32 v)
{
	mmio_w32(vd->common + off, v);
}

static inline void cc_w64(struct vdev *vd, u32 off, u64 v)
{
	mmio_w32(vd->common + off, v);
	mmio_w32(vd->common + off + 4, v >> 32);
}

u8 virtio_status(struct vdev *vd)
{
	return mmio_r8(vd->common + CC_STATUS);
}

bool virtio_live(struct vdev *vd)
{
	u8 st;

	if (!vd->vq[0].ready || vd->broken)
		return false;
	st = virtio_status(vd);
	return (st & (VIRTIO_S_DRIVER_OK | VIRTIO_S_NEEDS_RESET |
		      VIRTIO_S_FAILED)) == VIRTIO_S_DRIVER_OK;
}

void virtio_set_status(struct vdev *vd, u8 status)
{
	mmio_w8(vd->common + CC_STATUS, status);
}

bool virtio_reset(struct vdev *vd)
{
	u64 end = clock_ns() + NSEC_PER_SEC;

	virtio_set_status(vd, 0);
	while (virtio_status(vd)) {
		if (clock_ns() > end)
			return false;
		sleep_ns(10 * NSEC_PER_USEC);
	}
	for (int q = 0; q < VQ_MAX; q++)
		vd->vq[q].ready = false;
	return true;
}

/*
 * Natural-width accesses (4.1.3.1): 16-bit fields with 16-bit reads, 32-
 * and 64-bit fields as aligned 32-bit reads, anything else (u8 arrays such
 * as a MAC) byte by byte.
 */
void virtio_cfg_read(struct vdev *vd, u32 off, void *buf, u32 len)
{
	u8 gen;

	if ((u64)off + len > vd->devcfg_len) {
		memset(buf, 0, len);
		return;
	}
	do {
		gen = mmio_r8(vd->common + CC_CFGGEN);
		if (len == 2 && !(off & 1))
			*(u16 *)buf = mmio_r16(vd->devcfg + off);
		else if (!(len & 3) && !(off & 3))
			for (u32 i = 0; i < len; i += 4)
				*(u32 *)((u8 *)buf + i) =
					mmio_r32(vd->devcfg + off + i);
		else
			for (u32 i = 0; i < len; i++)
				((u8 *)buf)[i] = mmio_r8(vd->devcfg + off + i);
	} while (gen != mmio_r8(vd->common + CC_CFGGEN));
}

static int alloc_msi_slot(void)
{
	return msi_slots_used < NR_MSI_VECTORS ? msi_slots_used++ : -1;
}

static u64 msi_count(int slot)
{
	u64 n = 0;

	if (slot < 0)
		return 0;
	for (u32 c = 0; c < sys.ncpus; c++)
		n += percpu[c].msi[slot];
	return n;
}

u64 virtio_config_irqs(struct vdev *vd)
{
	return msi_count(vd->config_msi_slot);
}

/*
 * MSI-X entry 0 is the configuration vector, entry q + 1 queue q's. The
 * counters (slots) are allocated once per device and kept across resets.
 */
static void setup_config_vector(struct vdev *vd)
{
	vd->msix = pci_msix_enable(vd->pci);
	if (!vd->msix)
		return;
	if (vd->config_msi_slot < 0)
		vd->config_msi_slot = alloc_msi_slot();
	if (vd->config_msi_slot < 0 ||
	    !pci_msix_set(vd->pci, 0, sys.apic[0],
			  VEC_MSI_BASE + vd->config_msi_slot))
		return;
	cc_w16(vd, CC_MSIX, 0);
	if (cc_r16(vd, CC_MSIX) != 0)
		printf("INFO %s: device refused config MSI-X vector 0\n",
		       vd->name);
}

bool virtio_begin(struct vdev *vd, u64 want, char *msg)
{
	u8 status = VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER;
	u64 accept;

	pci_write(vd->pci, PCI_COMMAND, 2, pci_read(vd->pci, PCI_COMMAND, 2) |
		  PCI_CMD_MEM | PCI_CMD_IO | PCI_CMD_MASTER);
	if (!virtio_reset(vd))
		return FAIL("%s: status still %x 1 s after reset", vd->name,
			    virtio_status(vd));
	vd->broken = false;
	virtio_set_status(vd, VIRTIO_S_ACKNOWLEDGE);
	virtio_set_status(vd, status);
	cc_w32(vd, CC_DFSELECT, 0);
	vd->offered = mmio_r32(vd->common + CC_DF);
	cc_w32(vd, CC_DFSELECT, 1);
	vd->offered |= (u64)mmio_r32(vd->common + CC_DF) << 32;
	if (!(vd->offered & BIT(VIRTIO_F_VERSION_1))) {
		virtio_set_status(vd, status | VIRTIO_S_FAILED);
		return FAIL("%s: VERSION_1 not offered (features %lx)",
			    vd->name, vd->offered);
	}
	want |= BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_F_ACCESS_PLATFORM);
	if (cmdline_u64("vq_indirect", 1))
		want |= BIT(VIRTIO_F_INDIRECT_DESC);
	if (cmdline_u64("vq_event_idx", 1))
		want |= BIT(VIRTIO_F_EVENT_IDX);
	accept = vd->offered & want;
	cc_w32(vd, CC_GFSELECT, 0);
	cc_w32(vd, CC_GF, accept);
	cc_w32(vd, CC_GFSELECT, 1);
	cc_w32(vd, CC_GF, accept >> 32);
	status |= VIRTIO_S_FEATURES_OK;
	virtio_set_status(vd, status);
	if (!(virtio_status(vd) & VIRTIO_S_FEATURES_OK)) {
		virtio_set_status(vd, status | VIRTIO_S_FAILED);
		return FAIL("%s: FEATURES_OK not accepted (features %lx)",
			    vd->name, accept);
	}
	vd->features = accept;
	setup_config_vector(vd);
	return true;
}

bool virtio_ready(struct vdev *vd, char *msg)
{
	u8 st = virtio_status(vd);

	virtio_set_status(vd, st | VIRTIO_S_DRIVER_OK);
	st = virtio_status(vd);
	if (!(st & VIRTIO_S_DRIVER_OK) ||
	    (st & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED)))
		return FAIL("%s: status %x after DRIVER_OK", vd->name, st);
	return true;
}

/* ---- virtqueues ---- */

static void vq_reset_state(struct vq *q)
{
	q->free_head = 0;
	q->nfree = q->size;
	for (u16 i = 0; i < q->size; i++) {
		q->desc[i] = (struct vring_desc){ 0, 0, 0, i + 1 };
		q->cookie[i] = NULL;
		q->chain_len[i] = 0;
	}
	memset(q->avail, 0, 6 + 2 * q->size);
	memset(q->used, 0, 6 + 8 * q->size);
	q->avail_idx = q->last_used = q->kicked_idx = 0;
	q->error[0] = 0;
	q->spin_ns = VQ_SPIN_NS;
}

bool virtio_config_irq_cpu(struct vdev *vd, u32 cpu)
{
	if (!vd->msix || vd->config_msi_slot < 0 || cpu >= sys.ncpus)
		return false;
	return pci_msix_set(vd->pci, 0, sys.apic[cpu],
			    VEC_MSI_BASE + vd->config_msi_slot);
}

bool virtio_setup_vq(struct vdev *vd, u16 qi, u16 max_size, bool irq,
		     char *msg)
{
	return virtio_setup_vq_at(vd, qi, qi, max_size, irq, msg);
}

bool virtio_setup_vq_at(struct vdev *vd, u16 slot, u16 qi, u16 max_size,
			bool irq, char *msg)
{
	struct vq *q = &vd->vq[slot];
	u16 size, noff;

	if (slot >= VQ_MAX)
		return FAIL("%s: queue %u: only %u supported", vd->name, qi,
			    VQ_MAX);
	cc_w16(vd, CC_Q_SELECT, qi);
	size = cc_r16(vd, CC_Q_SIZE);
	if (!size)
		return FAIL("%s: queue %u does not exist", vd->name, qi);
	if (size & (size - 1))
		return FAIL("%s: queue %u size %u is not a power of two",
			    vd->name, qi, size);
	while (size > max_size || size > VQ_MAX_SIZE)
		size /= 2;
	if (!q->desc || size > q->size) {	/* first time (or bigger) */
		q->desc = dma_alloc(16 * size, 4096);
		q->avail = dma_alloc(6 + 2 * size, 4096);
		q->used = dma_alloc(6 + 8 * size, 4096);
		q->indirect = dma_alloc(16 * VQ_INDIRECT_MAX * size, 16);
		q->cookie = dma_alloc(sizeof(void *) * size, 8);
		q->chain_len = dma_alloc(2 * size, 2);
		if (!q->desc || !q->avail || !q->used || !q->indirect ||
		    !q->cookie || !q->chain_len)
			return FAIL("DMA arena exhausted (queue %u of %s)",
				    qi, vd->name);
	}
	q->vd = vd;
	q->index = qi;
	q->size = size;
	vq_reset_state(q);
	q->irq_wanted = irq;
	q->msi_slot = -1;
	/* MSI-X entry qi + 1, if the table has it; else no vector */
	if (irq && vd->msix && qi + 1U < vd->pci->msix_size) {
		if (vd->msi_slots[slot] < 0)
			vd->msi_slots[slot] = alloc_msi_slot();
		if (vd->msi_slots[slot] >= 0 &&
		    pci_msix_set(vd->pci, qi + 1, sys.apic[0],
				 VEC_MSI_BASE + vd->msi_slots[slot]))
			q->msi_slot = vd->msi_slots[slot];
	}
	vq_set_irq(q, irq);
	cc_w16(vd, CC_Q_SIZE, size);
	cc_w64(vd, CC_Q_DESCLO, (u64)q->desc);
	cc_w64(vd, CC_Q_AVAILLO, (u64)q->avail);
	cc_w64(vd, CC_Q_USEDLO, (u64)q->used);
	if (vd->msix) {
		cc_w16(vd, CC_Q_MSIX, q->msi_slot >= 0 ? qi + 1 : NO_VECTOR);
		if (q->msi_slot >= 0 && cc_r16(vd, CC_Q_MSIX) != qi + 1) {
			printf("INFO %s: queue %u: device refused MSI-X "
			       "vector %u\n", vd->name, qi, qi + 1);
			q->msi_slot = -1;
		}
	}
	noff = cc_r16(vd, CC_Q_NOFF);
	if ((u64)noff * vd->notify_mult + 2 > vd->notify_len)
		return FAIL("%s: queue %u notify offset %u * %u outside the "
			    "notify region (%u bytes)", vd->name, qi, noff,
			    vd->notify_mult, vd->notify_len);
	q->notify = (volatile u16 *)(vd->notify_base +
				     (u64)noff * vd->notify_mult);
	cc_w16(vd, CC_Q_ENABLE, 1);
	if (cc_r16(vd, CC_Q_ENABLE) != 1)
		return FAIL("%s: queue %u: queue_enable reads %u", vd->name,
			    qi, cc_r16(vd, CC_Q_ENABLE));
	q->ready = true;
	return true;
}

static inline volatile u16 *used_event(struct vq *q)
{
	return &q->avail->ring[q->size];
}

static inline volatile u16 *avail_event(struct vq *q)
{
	return (volatile u16 *)&q->used->ring[q->size];
}

void vq_set_irq(struct vq *q, bool on)
{
	q->irq_wanted = on;
	if (virtio_has(q->vd, VIRTIO_F_EVENT_IDX)) {
		/* off: leave used_event behind, it is not moved any more */
		q->avail->flags = 0;
		if (on)
			*used_event(q) = q->last_used;
	} else {
		q->avail->flags = on ? 0 : VRING_AVAIL_F_NO_INTERRUPT;
	}
}

u64 vq_irqs(struct vq *q)
{
	return msi_count(q->msi_slot);
}

bool vq_set_irq_cpu(struct vq *q, u32 cpu)
{
	if (!q->ready || q->msi_slot < 0 || cpu >= sys.ncpus)
		return false;
	return pci_msix_set(q->vd->pci, q->index + 1, sys.apic[cpu],
			    VEC_MSI_BASE + q->msi_slot);
}

int vq_add(struct vq *q, const struct vbuf *b, int n, void *cookie,
	   bool indirect)
{
	u16 head = q->free_head;

	if (n < 1 || !q->ready)
		return -1;
	indirect = indirect && n > 1 && n <= VQ_INDIRECT_MAX &&
		   virtio_has(q->vd, VIRTIO_F_INDIRECT_DESC);
	if (q->nfree < (indirect ? 1 : n))
		return -1;
	if (indirect) {
		struct vring_desc *t = q->indirect + head * VQ_INDIRECT_MAX;
		struct vring_desc *d = &q->desc[head];

		for (int i = 0; i < n; i++)
			t[i] = (struct vring_desc){
				b[i].addr, b[i].len,
				(b[i].write ? VRING_DESC_F_WRITE : 0) |
					(i + 1 < n ? VRING_DESC_F_NEXT : 0),
				i + 1 < n ? i + 1 : 0 };
		q->free_head = d->next;
		d->addr = (u64)t;
		d->len = 16 * n;
		d->flags = VRING_DESC_F_INDIRECT;
		q->nfree--;
		q->chain_len[head] = 1;
	} else {
		u16 i = head;

		/* chain along the free list: its links become the chain's */
		for (int k = 0; k < n; k++) {
			struct vring_desc *d = &q->desc[i];

			d->addr = b[k].addr;
			d->len = b[k].len;
			d->flags = (b[k].write ? VRING_DESC_F_WRITE : 0) |
				   (k + 1 < n ? VRING_DESC_F_NEXT : 0);
			i = d->next;
		}
		q->free_head = i;
		q->nfree -= n;
		q->chain_len[head] = n;
	}
	q->cookie[head] = cookie;
	q->avail->ring[q->avail_idx & (q->size - 1)] = head;
	q->avail_idx++;
	__atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
	return 0;
}

void vq_notify(struct vq *q)
{
	*q->notify = q->index;
}

bool vq_kick(struct vq *q)
{
	u16 old = q->kicked_idx, new = q->avail_idx;
	bool need;

	if (old == new)
		return false;
	/* the avail idx store must be visible before we read the device's
	 * suppression state (store-load ordering needs a full fence) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (virtio_has(q->vd, VIRTIO_F_EVENT_IDX))
		need = (u16)(new - *avail_event(q) - 1) < (u16)(new - old);
	else
		need = !(READ_ONCE(q->used->flags) & VRING_USED_F_NO_NOTIFY);
	q->kicked_idx = new;
	if (need) {
		vq_notify(q);
		q->kicks++;
	} else {
		q->kicks_suppressed++;
	}
	return need;
}

int vq_get(struct vq *q, void **cookie, u32 *len)
{
	struct vring_used_elem e;
	u16 id, n;

	if (!vq_pending(q))
		return 0;
	e = q->used->ring[q->last_used & (q->size - 1)];
	id = e.id;
	if (e.id >= q->size || !q->chain_len[id]) {
		snprintf(q->error, sizeof(q->error), "used entry %u has id "
			 "%u, which is not in flight", q->last_used, e.id);
		q->vd->broken = true;
		return -1;
	}
	q->last_used++;
	/* free the chain: its last descriptor links to the old free list */
	n = q->chain_len[id];
	if (q->desc[id].flags & VRING_DESC_F_INDIRECT) {
		q->desc[id].next = q->free_head;
	} else {
		u16 last = id;

		for (u16 k = 1; k < n; k++)
			last = q->desc[last].next;
		q->desc[last].next = q->free_head;
	}
	q->free_head = id;
	q->nfree += n;
	q->chain_len[id] = 0;
	*cookie = q->cookie[id];
	*len = e.len;
	q->cookie[id] = NULL;
	if (q->irq_wanted && virtio_has(q->vd, VIRTIO_F_EVENT_IDX))
		*used_event(q) = q->last_used;
	return 1;
}

static bool any_pending(struct vq *const *qs, int n)
{
	for (int k = 0; k < n; k++)
		if (vq_pending(qs[k]))
			return true;
	return false;
}

bool vq_wait_any(struct vq *const *qs, int n, u64 timeout_ns)
{
	static volatile u64 nothing;
	u64 start = clock_ns(), spin = 0;
	volatile u64 *cnt = &nothing;

	if (n < 1)
		return false;
	/* any interrupt ends a halt: watching one queue's counter will do */
	for (int k = n - 1; k >= 0; k--) {
		if (qs[k]->msi_slot >= 0)
			cnt = &this_cpu()->msi[qs[k]->msi_slot];
		if (qs[k]->spin_ns > spin)
			spin = qs[k]->spin_ns;
	}
	for (;;) {
		u64 now, seen;

		for (int i = 0; i < 512; i++) {
			if (any_pending(qs, n))
				return true;
			cpu_relax();
		}
		now = clock_ns();
		if (now - start >= timeout_ns)
			return any_pending(qs, n);
		if (now - start < spin)
			continue;
		/*
		 * Halt so the host CPU can serve the device. With an MSI-X
		 * vector aimed at this CPU, halting stops only until the
		 * interrupt (sys_wait rechecks the counter with interrupts
		 * off); without, for at most 1 ms of timer backstop.
		 */
		seen = *cnt;
		if (any_pending(qs, n))
			return true;
		wait_change(cnt, seen, NSEC_PER_MSEC);
	}
}

bool vq_wait(struct vq *q, u64 timeout_ns)
{
	return vq_wait_any(&q, 1, timeout_ns);
}
