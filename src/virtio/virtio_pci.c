/*
 * virtio/virtio_pci.c - the virtio 1.2 PCI transport (virtio 1.2, 4.1):
 * the vendor capabilities, the common configuration registers (feature
 * negotiation, device status, queue set-up), the ISR, forwarding of the
 * device configuration, the MSI-X table and PBA with KVM irqfds on MSI
 * routes (INTx when MSI-X is off), the VIRTIO_PCI_CAP_PCI_CFG window, and
 * the doorbells: KVM ioeventfds served by a per-device kick thread, or
 * guest-visible host memory watched by the doorbell poller.
 *
 * Every register handler accepts any access size and offset; whatever is
 * not a register reads as zero and ignores writes. KVM is reached only
 * through vp->kvm so the register logic runs in unit tests without a VM.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/vm_io.h"
#include "util/log.h"
#include "virtio/virtio_pci.h"

/* Capability ids and virtio structure types (4.1.4). */
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* struct virtio_pci_cap and its extensions, byte offsets. */
#define CAP_LEN 2
#define CAP_CFG_TYPE 3
#define CAP_BAR 4
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_SIZE 16
#define NOTIFY_CAP_MULT 16 /* notify_off_multiplier */
#define NOTIFY_CAP_SIZE 20
#define CFG_CAP_DATA 16 /* pci_cfg_data[4] */
#define CFG_CAP_SIZE 20

/* MSI-X capability and table (PCI 3.0, 6.8.2). */
#define MSIX_CAP_CTRL 2
#define MSIX_CAP_TABLE 4
#define MSIX_CAP_PBA 8
#define MSIX_CAP_SIZE 12
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_CTRL 12
#define MSIX_ENTRY_MASKED 1
#define MSIX_PBA_BYTES (((VIRTIO_PCI_MSIX_VECTORS + 63) / 64) * 8)

#define ISR_QUEUE 1
#define ISR_CONFIG 2

/* Feature bits 28..41 belong to the transport; we offer only these. */
#define FEATURES_TRANSPORT_RANGE (((1ULL << 42) - 1) & ~((1ULL << 28) - 1))
#define FEATURES_TRANSPORT                                             \
	((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_EVENT_IDX) | \
	 (1ULL << VIRTIO_F_INDIRECT_DESC))

#define MSIX_VALID(v) ((v) < VIRTIO_PCI_MSIX_VECTORS)

/* --- the KVM calls, replaceable for tests --- */

const struct virtio_pci_kvm_ops virtio_pci_kvm_default = {
	.ioeventfd = vm_ioeventfd,
	.msi_route_add = vm_msi_route_add,
	.msi_route_set = vm_msi_route_set,
	.msi_route_del = vm_msi_route_del,
	.irqfd = vm_irqfd,
	.map_host_memory = vm_map_host_memory,
	.unmap_host_memory = vm_unmap_host_memory,
};

static const struct virtio_pci_kvm_ops *kvm_ops = &virtio_pci_kvm_default;

void virtio_pci_set_kvm_ops(const struct virtio_pci_kvm_ops *ops)
{
	kvm_ops = ops ? ops : &virtio_pci_kvm_default;
}

/* --- little helpers --- */

static uint64_t get_le(const uint8_t *p, uint32_t len)
{
	uint64_t v = 0;

	for (uint32_t i = 0; i < len; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, uint64_t v, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* [a, a+alen) and [b, b+blen) intersect. */
static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static uint8_t status_get(struct virtio_device *vd)
{
	uint8_t s;

	pthread_mutex_lock(&vd->lock);
	s = vd->status;
	pthread_mutex_unlock(&vd->lock);
	return s;
}

static void status_or(struct virtio_device *vd, uint8_t bits)
{
	pthread_mutex_lock(&vd->lock);
	__atomic_store_n(&vd->status, (uint8_t)(vd->status | bits),
			 __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vd->lock);
}

static uint64_t offered_features(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	uint64_t dev = vd->ops->features ? vd->ops->features(vd) : 0;

	return (dev & ~FEATURES_TRANSPORT_RANGE) | FEATURES_TRANSPORT;
}

/* --- interrupts (irq_lock held) --- */

static void intx_set(struct virtio_pci *vp, bool level)
{
	const struct irq_sink *irq = &vp->vm->irq;

	if (vp->intx_level == level)
		return;
	vp->intx_level = level;
	if (irq->set_line)
		irq_set_line(irq, vp->pci.intx_gsi, level);
}

static bool msix_deliverable(const struct virtio_pci *vp, unsigned int v)
{
	return vp->msix_enabled && !vp->msix_masked && !vp->msix[v].masked;
}

static void msix_fire(struct virtio_pci *vp, struct virtio_pci_msix_vec *m)
{
	const struct irq_sink *irq = &vp->vm->irq;
	uint64_t one = 1;

	vp->interrupts++;
	if (m->irqfd >= 0 && !m->dirty &&
	    write(m->irqfd, &one, sizeof(one)) == sizeof(one))
		return;
	/* No route of ours (none left, failed update): KVM_SIGNAL_MSI. */
	if (irq->send_msi)
		irq->send_msi(irq->opaque, m->addr, m->data);
}

static void msix_route_drop(struct virtio_pci *vp,
			    struct virtio_pci_msix_vec *m)
{
	if (m->irqfd >= 0) {
		vp->kvm->irqfd(vp->vm, m->irqfd, (uint32_t)m->gsi, false);
		close(m->irqfd);
		m->irqfd = -1;
	}
	if (m->gsi >= 0) {
		vp->kvm->msi_route_del(vp->vm, m->gsi);
		m->gsi = -1;
	}
	m->dirty = true;
}

/* Make the vector's KVM route carry its current address and data. */
static void msix_route_sync(struct virtio_pci *vp,
			    struct virtio_pci_msix_vec *m)
{
	int gsi, fd, rc;

	if (m->gsi >= 0 && !m->dirty)
		return;
	if (m->gsi >= 0) {
		rc = vp->kvm->msi_route_set(vp->vm, m->gsi, m->addr, m->data);
		if (rc == 0)
			m->dirty = false;
		else
			msix_route_drop(vp, m); /* deliver by KVM_SIGNAL_MSI */
		return;
	}
	gsi = vp->kvm->msi_route_add(vp->vm, m->addr, m->data);
	if (gsi < 0) {
		pr_debug("%s: no MSI route (%s), using KVM_SIGNAL_MSI",
			 vp->vd->name, strerror(-gsi));
		return;
	}
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rc = fd < 0 ? -errno : vp->kvm->irqfd(vp->vm, fd, (uint32_t)gsi, true);
	if (rc) {
		pr_debug("%s: no irqfd (%s), using KVM_SIGNAL_MSI",
			 vp->vd->name, strerror(-rc));
		if (fd >= 0)
			close(fd);
		vp->kvm->msi_route_del(vp->vm, gsi);
		return;
	}
	m->gsi = gsi;
	m->irqfd = fd;
	m->dirty = false;
}

/*
 * Vector @v may have become deliverable (or was rewritten while it is):
 * bring its route up to date and deliver what is pending.
 */
static void msix_update(struct virtio_pci *vp, unsigned int v)
{
	struct virtio_pci_msix_vec *m = &vp->msix[v];

	if (!msix_deliverable(vp, v))
		return;
	msix_route_sync(vp, m);
	if (m->pending) {
		m->pending = false;
		msix_fire(vp, m);
	}
}

static void msix_signal(struct virtio_pci *vp, uint16_t v)
{
	if (!MSIX_VALID(v))
		return;
	if (msix_deliverable(vp, v))
		msix_fire(vp, &vp->msix[v]);
	else
		vp->msix[v].pending = true;
}

static void raise_irq(struct virtio_pci *vp, uint16_t vector, uint8_t isr)
{
	if (vp->dead)
		return;
	if (vp->msix_enabled) {
		msix_signal(vp, vector); /* NO_VECTOR: nothing */
		return;
	}
	vp->isr |= isr;
	if (!vp->intx_level)
		vp->interrupts++;
	intx_set(vp, true);
}

static void vp_notify_queue(void *opaque, uint16_t q)
{
	struct virtio_pci *vp = opaque;

	if (q >= vp->vd->num_queues)
		return;
	pthread_mutex_lock(&vp->irq_lock);
	raise_irq(vp, vp->q[q].msix_vector, ISR_QUEUE);
	pthread_mutex_unlock(&vp->irq_lock);
}

static void vp_notify_config(void *opaque)
{
	struct virtio_pci *vp = opaque;

	pthread_mutex_lock(&vp->irq_lock);
	raise_irq(vp, vp->msix_config, ISR_CONFIG);
	pthread_mutex_unlock(&vp->irq_lock);
}

static void noop_notify_queue(void *opaque, uint16_t q)
{
	(void)opaque;
	(void)q;
}

static void noop_notify_config(void *opaque)
{
	(void)opaque;
}

/* --- kicks --- */

/* Kicks reach the device only between DRIVER_OK and a reset. */
static bool serving(struct virtio_device *vd)
{
	uint8_t s = __atomic_load_n(&vd->status, __ATOMIC_ACQUIRE);

	return (s & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) ==
	       VIRTIO_STATUS_DRIVER_OK;
}

static void kick(struct virtio_pci *vp, uint16_t q)
{
	struct virtio_device *vd = vp->vd;

	if (q >= vd->num_queues || !serving(vd) || !vd->ops->queue_kick)
		return;
	__atomic_fetch_add(&vp->kicks, 1, __ATOMIC_RELAXED);
	vd->ops->queue_kick(vd, q);
}

static void *kick_thread(void *arg)
{
	struct virtio_pci *vp = arg;
	struct epoll_event ev[VIRTIO_MAX_QUEUES + 1];

	for (;;) {
		int n = epoll_wait(vp->epoll_fd, ev, VIRTIO_MAX_QUEUES + 1, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pr_err("%s: kick thread: epoll_wait: %s", vp->vd->name,
			       strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint32_t q = ev[i].data.u32;
			uint64_t cnt;

			if (q >= VIRTIO_MAX_QUEUES)
				return NULL; /* stop_fd */
			if (read(vp->kick_fd[q], &cnt, sizeof(cnt)) !=
			    sizeof(cnt))
				continue; /* spurious: already drained */
			kick(vp, (uint16_t)q);
		}
	}
}

/* Poll mode: the doorbell word at the start of queue @q's page. */
static uint32_t *doorbell_word(struct virtio_pci *vp, uint16_t q)
{
	size_t off = (size_t)q * VIRTIO_PCI_NOTIFY_MULTIPLIER;

	return (uint32_t *)(void *)(vp->doorbell_mem + off);
}

/*
 * A doorbell write KVM did not swallow (an odd size or offset, or no
 * memslot): pass it on to whoever serves the queue. queue_kick is never
 * called on a vCPU thread (virtio.h).
 */
static void doorbell_by_exit(struct virtio_pci *vp, uint16_t q)
{
	uint64_t one = 1;

	if (vp->mode == DOORBELL_POLL && vp->doorbell_mem) {
		__atomic_store_n(doorbell_word(vp, q), (uint32_t)q,
				 __ATOMIC_RELEASE);
	} else if (vp->kick_fd[q] >= 0) {
		if (write(vp->kick_fd[q], &one, sizeof(one)) != sizeof(one))
			pr_debug("%s: kick eventfd: %s", vp->vd->name,
				 strerror(errno));
	}
}

/* --- device reset and DRIVER_OK (lock held) --- */

/* The transport's registers as after a reset (4.1.4.3.1). */
static void regs_reset(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;

	vp->device_feature_select = 0;
	vp->driver_feature_select = 0;
	vp->driver_features = 0;
	vp->queue_select = 0;
	pthread_mutex_lock(&vp->irq_lock);
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		vp->q[i].size = i < vd->num_queues ? vd->queue_size_max : 0;
		vp->q[i].msix_vector = VIRTIO_MSI_NO_VECTOR;
		vp->q[i].enable = false;
		vp->q[i].desc = vp->q[i].driver = vp->q[i].device = 0;
	}
	vp->msix_config = VIRTIO_MSI_NO_VECTOR;
	vp->isr = 0;
	intx_set(vp, false);
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++)
		vp->msix[v].pending = false;
	pthread_mutex_unlock(&vp->irq_lock);
}

/*
 * The driver wrote 0 to device_status: the device stops touching its
 * queues, the queues are forgotten, and every register returns to its
 * initial value. The MSI-X table belongs to the PCI function and stays.
 */
static void transport_reset(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;

	if (vd->ops->reset)
		vd->ops->reset(vd);
	for (int i = 0; i < vd->num_queues; i++) {
		struct virtqueue *vq = &vd->vq[i];
		int rc = pthread_mutex_lock(&vq->lock);

		vq_disable(vq);
		if (!rc)
			pthread_mutex_unlock(&vq->lock);
	}
	pthread_mutex_lock(&vd->lock);
	vd->guest_features = 0;
	__atomic_store_n(&vd->status, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vd->lock);
	regs_reset(vp);
}

/* vq_enable on queue @q; 0, or -EINVAL with @why filled. */
static int enable_queue(struct virtio_pci *vp, uint16_t q, uint64_t features,
			char *why, size_t why_len)
{
	struct virtio_device *vd = vp->vd;
	struct virtqueue *vq = &vd->vq[q];
	int lrc = pthread_mutex_lock(&vq->lock);
	int rc;

	rc = vq_enable(vq, vd->mem, vp->q[q].size, vp->q[q].desc,
		       vp->q[q].driver, vp->q[q].device, features);
	if (rc)
		snprintf(why, why_len, "%s", vq->error);
	if (!lrc)
		pthread_mutex_unlock(&vq->lock);
	return rc;
}

static void driver_ok(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	uint64_t features;
	char why[sizeof(vd->vq[0].error)];
	int rc = 0;

	pthread_mutex_lock(&vd->lock);
	features = vd->guest_features;
	pthread_mutex_unlock(&vd->lock);
	for (uint16_t q = 0; q < vd->num_queues; q++) {
		if (!vp->q[q].enable)
			continue;
		if (enable_queue(vp, q, features, why, sizeof(why))) {
			status_or(vd, VIRTIO_STATUS_DRIVER_OK);
			virtio_set_needs_reset(vd, "queue %u: %s", q, why);
			return;
		}
	}
	if (vd->ops->activate)
		rc = vd->ops->activate(vd);
	status_or(vd, VIRTIO_STATUS_DRIVER_OK);
	if (rc)
		virtio_set_needs_reset(vd, "activation failed: %s",
				       strerror(rc < 0 ? -rc : rc));
}

/*
 * The driver wrote @val to device_status. Bits only accumulate until a
 * reset (writing 0); NEEDS_RESET is the device's to set.
 */
static void write_status(struct virtio_pci *vp, uint8_t val)
{
	struct virtio_device *vd = vp->vd;
	uint8_t old, set;

	if (val == 0) {
		transport_reset(vp);
		return;
	}
	old = status_get(vd);
	set = (uint8_t)(val & ~old & ~VIRTIO_STATUS_NEEDS_RESET);
	if (set & VIRTIO_STATUS_FEATURES_OK) {
		uint64_t offered = offered_features(vp);
		uint64_t want = vp->driver_features;

		if ((want & ~offered) || !((want >> VIRTIO_F_VERSION_1) & 1)) {
			/* Not accepted: the bit does not stick (3.1.1). */
			pr_debug("%s: refusing features 0x%llx (offered "
				 "0x%llx)",
				 vd->name, (unsigned long long)want,
				 (unsigned long long)offered);
			set &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		} else {
			pthread_mutex_lock(&vd->lock);
			vd->guest_features = want;
			pthread_mutex_unlock(&vd->lock);
		}
	}
	if ((set & VIRTIO_STATUS_DRIVER_OK) &&
	    !((old | set) & VIRTIO_STATUS_FEATURES_OK))
		set &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
	status_or(vd, set & (uint8_t)~VIRTIO_STATUS_DRIVER_OK);
	if (set & VIRTIO_STATUS_DRIVER_OK)
		driver_ok(vp);
}

/* --- common configuration (lock held) --- */

enum cc_field {
	CC_DF_SELECT,
	CC_DF,
	CC_GF_SELECT,
	CC_GF,
	CC_MSIX_CONFIG,
	CC_NUM_QUEUES,
	CC_STATUS,
	CC_GENERATION,
	CC_Q_SELECT,
	CC_Q_SIZE,
	CC_Q_MSIX,
	CC_Q_ENABLE,
	CC_Q_NOTIFY_OFF,
	CC_Q_DESC_LO,
	CC_Q_DESC_HI,
	CC_Q_DRIVER_LO,
	CC_Q_DRIVER_HI,
	CC_Q_DEVICE_LO,
	CC_Q_DEVICE_HI,
	CC_Q_NOTIFY_DATA,
	CC_Q_RESET,
	CC_FIELDS
};

/* struct virtio_pci_common_cfg (4.1.4.3); 64-bit fields as two halves. */
static const struct {
	uint8_t off, size;
} cc_layout[CC_FIELDS] = {
	[CC_DF_SELECT] = {0x00, 4},    [CC_DF] = {0x04, 4},
	[CC_GF_SELECT] = {0x08, 4},    [CC_GF] = {0x0c, 4},
	[CC_MSIX_CONFIG] = {0x10, 2},  [CC_NUM_QUEUES] = {0x12, 2},
	[CC_STATUS] = {0x14, 1},       [CC_GENERATION] = {0x15, 1},
	[CC_Q_SELECT] = {0x16, 2},     [CC_Q_SIZE] = {0x18, 2},
	[CC_Q_MSIX] = {0x1a, 2},       [CC_Q_ENABLE] = {0x1c, 2},
	[CC_Q_NOTIFY_OFF] = {0x1e, 2}, [CC_Q_DESC_LO] = {0x20, 4},
	[CC_Q_DESC_HI] = {0x24, 4},    [CC_Q_DRIVER_LO] = {0x28, 4},
	[CC_Q_DRIVER_HI] = {0x2c, 4},  [CC_Q_DEVICE_LO] = {0x30, 4},
	[CC_Q_DEVICE_HI] = {0x34, 4},  [CC_Q_NOTIFY_DATA] = {0x38, 2},
	[CC_Q_RESET] = {0x3a, 2},
};

static uint64_t *cc_queue_addr(struct virtio_pci *vp, uint16_t q,
			       enum cc_field f)
{
	switch (f) {
	case CC_Q_DESC_LO:
	case CC_Q_DESC_HI:
		return &vp->q[q].desc;
	case CC_Q_DRIVER_LO:
	case CC_Q_DRIVER_HI:
		return &vp->q[q].driver;
	default:
		return &vp->q[q].device;
	}
}

static uint32_t cc_read(struct virtio_pci *vp, enum cc_field f)
{
	struct virtio_device *vd = vp->vd;
	uint16_t sel = vp->queue_select;
	bool qok = sel < vd->num_queues;

	switch (f) {
	case CC_DF_SELECT:
		return vp->device_feature_select;
	case CC_DF:
		if (vp->device_feature_select > 1)
			return 0;
		return (uint32_t)(offered_features(vp) >>
				  (32 * vp->device_feature_select));
	case CC_GF_SELECT:
		return vp->driver_feature_select;
	case CC_GF:
		if (vp->driver_feature_select > 1)
			return 0;
		return (uint32_t)(vp->driver_features >>
				  (32 * vp->driver_feature_select));
	case CC_MSIX_CONFIG:
		return vp->msix_config;
	case CC_NUM_QUEUES:
		return vd->num_queues;
	case CC_STATUS:
		return status_get(vd);
	case CC_GENERATION:
		return __atomic_load_n(&vd->config_generation,
				       __ATOMIC_ACQUIRE);
	case CC_Q_SELECT:
		return sel;
	case CC_Q_SIZE:
		return qok ? vp->q[sel].size : 0;
	case CC_Q_MSIX:
		return qok ? vp->q[sel].msix_vector : VIRTIO_MSI_NO_VECTOR;
	case CC_Q_ENABLE:
		return qok && vp->q[sel].enable;
	case CC_Q_NOTIFY_OFF:
		return qok ? sel : 0;
	case CC_Q_DESC_LO:
	case CC_Q_DRIVER_LO:
	case CC_Q_DEVICE_LO:
		return qok ? (uint32_t)*cc_queue_addr(vp, sel, f) : 0;
	case CC_Q_DESC_HI:
	case CC_Q_DRIVER_HI:
	case CC_Q_DEVICE_HI:
		return qok ? (uint32_t)(*cc_queue_addr(vp, sel, f) >> 32) : 0;
	default:
		return 0; /* queue_notify_data, queue_reset: not offered */
	}
}

static uint16_t valid_vector(uint32_t v)
{
	return MSIX_VALID(v) ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

/* queue_enable was set after DRIVER_OK: start that queue now. */
static void late_enable(struct virtio_pci *vp, uint16_t q)
{
	struct virtio_device *vd = vp->vd;
	char why[sizeof(vd->vq[0].error)];
	uint64_t features;

	pthread_mutex_lock(&vd->lock);
	features = vd->guest_features;
	pthread_mutex_unlock(&vd->lock);
	if (enable_queue(vp, q, features, why, sizeof(why)))
		virtio_set_needs_reset(vd, "queue %u: %s", q, why);
}

static void cc_write(struct virtio_pci *vp, enum cc_field f, uint32_t v)
{
	struct virtio_device *vd = vp->vd;
	uint16_t sel = vp->queue_select;
	bool qok = sel < vd->num_queues;
	bool qcfg = qok && !vp->q[sel].enable; /* queue still configurable */
	uint64_t *a;

	switch (f) {
	case CC_DF_SELECT:
		vp->device_feature_select = v;
		break;
	case CC_GF_SELECT:
		vp->driver_feature_select = v;
		break;
	case CC_GF:
		if (vp->driver_feature_select > 1 ||
		    (status_get(vd) & VIRTIO_STATUS_FEATURES_OK))
			break;
		if (vp->driver_feature_select)
			vp->driver_features =
				(vp->driver_features & 0xffffffffULL) |
				((uint64_t)v << 32);
		else
			vp->driver_features =
				(vp->driver_features & ~0xffffffffULL) | v;
		break;
	case CC_MSIX_CONFIG:
		pthread_mutex_lock(&vp->irq_lock);
		vp->msix_config = valid_vector(v);
		pthread_mutex_unlock(&vp->irq_lock);
		break;
	case CC_STATUS:
		write_status(vp, (uint8_t)v);
		break;
	case CC_Q_SELECT:
		vp->queue_select = (uint16_t)v;
		break;
	case CC_Q_SIZE:
		if (qcfg && is_pow2(v) && v <= vd->queue_size_max)
			vp->q[sel].size = (uint16_t)v;
		break;
	case CC_Q_MSIX:
		if (!qok)
			break;
		pthread_mutex_lock(&vp->irq_lock);
		vp->q[sel].msix_vector = valid_vector(v);
		pthread_mutex_unlock(&vp->irq_lock);
		break;
	case CC_Q_ENABLE:
		/* Writing 0 is not allowed (4.1.4.3.2): ignored. */
		if (!qcfg || v != 1)
			break;
		vp->q[sel].enable = true;
		if (status_get(vd) & VIRTIO_STATUS_DRIVER_OK)
			late_enable(vp, sel);
		break;
	case CC_Q_DESC_LO:
	case CC_Q_DRIVER_LO:
	case CC_Q_DEVICE_LO:
		if (!qcfg)
			break;
		a = cc_queue_addr(vp, sel, f);
		*a = (*a & ~0xffffffffULL) | v;
		break;
	case CC_Q_DESC_HI:
	case CC_Q_DRIVER_HI:
	case CC_Q_DEVICE_HI:
		if (!qcfg)
			break;
		a = cc_queue_addr(vp, sel, f);
		*a = (*a & 0xffffffffULL) | ((uint64_t)v << 32);
		break;
	default:
		break; /* read-only or not offered */
	}
}

/*
 * An access of any size at any offset: each field it touches is read, or
 * merged with the written bytes and written back whole, in address order.
 */
static void common_access(struct virtio_pci *vp, uint32_t off, uint8_t *data,
			  uint32_t len, bool is_write)
{
	for (int f = 0; f < CC_FIELDS; f++) {
		uint32_t fo = cc_layout[f].off, fs = cc_layout[f].size;
		uint32_t lo, hi;
		uint8_t img[4];

		if (!overlap(off, len, fo, fs))
			continue;
		lo = off > fo ? off : fo;
		hi = off + len < fo + fs ? off + len : fo + fs;
		put_le(img, cc_read(vp, (enum cc_field)f), fs);
		if (is_write) {
			memcpy(img + (lo - fo), data + (lo - off), hi - lo);
			cc_write(vp, (enum cc_field)f,
				 (uint32_t)get_le(img, fs));
		} else {
			memcpy(data + (lo - off), img + (lo - fo), hi - lo);
		}
	}
}

/* --- BAR 0: common config, ISR, device config --- */

static uint8_t isr_read(struct virtio_pci *vp, bool clear)
{
	uint8_t v;

	pthread_mutex_lock(&vp->irq_lock);
	v = vp->isr;
	if (clear) {
		vp->isr = 0;
		intx_set(vp, false);
	}
	pthread_mutex_unlock(&vp->irq_lock);
	return v;
}

static void device_access(struct virtio_pci *vp, uint32_t off, uint8_t *data,
			  uint32_t len, bool is_write)
{
	struct virtio_device *vd = vp->vd;
	uint32_t n;

	if (off >= vd->config_size)
		return;
	n = len < vd->config_size - off ? len : vd->config_size - off;
	if (is_write && vd->ops->config_write)
		vd->ops->config_write(vd, off, data, n);
	else if (!is_write && vd->ops->config_read)
		vd->ops->config_read(vd, off, data, n);
}

/* @peek: a read without side effects (the PCI_CFG window's latch). */
static void bar0_access(struct virtio_pci *vp, uint64_t off, uint8_t *data,
			uint32_t len, bool is_write, bool peek)
{
	if (!is_write)
		memset(data, 0, len);
	pthread_mutex_lock(&vp->lock);
	while (len && off < VIRTIO_PCI_BAR_CFG_SIZE) {
		uint64_t end =
			off < VIRTIO_PCI_ISR_OFF    ? VIRTIO_PCI_ISR_OFF :
			off < VIRTIO_PCI_DEVICE_OFF ? VIRTIO_PCI_DEVICE_OFF :
						      VIRTIO_PCI_BAR_CFG_SIZE;
		uint32_t n = end - off < len ? (uint32_t)(end - off) : len;

		if (off < VIRTIO_PCI_ISR_OFF)
			common_access(vp, (uint32_t)off, data, n, is_write);
		else if (off < VIRTIO_PCI_DEVICE_OFF) {
			if (off == VIRTIO_PCI_ISR_OFF && !is_write)
				data[0] = isr_read(vp, !peek);
		} else
			device_access(vp,
				      (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF),
				      data, n, is_write);
		off += n;
		data += n;
		len -= n;
	}
	pthread_mutex_unlock(&vp->lock);
}

static void bar0_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	bar0_access(opaque, off, data, len, is_write, false);
}

/* --- BAR 2: doorbells that reached userspace --- */

static void notify_access(struct virtio_pci *vp, uint64_t off, uint8_t *data,
			  uint32_t len, bool is_write)
{
	uint64_t q = off / VIRTIO_PCI_NOTIFY_MULTIPLIER;

	if (!is_write) {
		memset(data, 0, len);
		return;
	}
	if (q < vp->vd->num_queues)
		doorbell_by_exit(vp, (uint16_t)q);
}

static void bar2_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	notify_access(opaque, off, data, len, is_write);
}

/* --- BAR 4: MSI-X table and PBA (irq_lock) --- */

static void msix_entry_image(const struct virtio_pci_msix_vec *m,
			     uint8_t img[MSIX_ENTRY_SIZE])
{
	put_le(img, m->addr, 8);
	put_le(img + 8, m->data, 4);
	put_le(img + MSIX_ENTRY_CTRL, m->masked ? MSIX_ENTRY_MASKED : 0, 4);
}

static void msix_entry_store(struct virtio_pci *vp, unsigned int v,
			     const uint8_t img[MSIX_ENTRY_SIZE])
{
	struct virtio_pci_msix_vec *m = &vp->msix[v];
	uint64_t addr = get_le(img, 8);
	uint32_t data = (uint32_t)get_le(img + 8, 4);

	if (addr != m->addr || data != m->data) {
		m->addr = addr;
		m->data = data;
		m->dirty = true;
	}
	m->masked = get_le(img + MSIX_ENTRY_CTRL, 4) & MSIX_ENTRY_MASKED;
	msix_update(vp, v);
}

static void msix_table_access(struct virtio_pci *vp, uint32_t off,
			      uint8_t *data, uint32_t len, bool is_write)
{
	uint32_t end = off + len;

	for (uint32_t v = off / MSIX_ENTRY_SIZE;
	     v < VIRTIO_PCI_MSIX_VECTORS && v * MSIX_ENTRY_SIZE < end; v++) {
		uint32_t base = v * MSIX_ENTRY_SIZE;
		uint32_t lo = off > base ? off : base;
		uint32_t hi = end < base + MSIX_ENTRY_SIZE ?
				      end :
				      base + MSIX_ENTRY_SIZE;
		uint8_t img[MSIX_ENTRY_SIZE];

		msix_entry_image(&vp->msix[v], img);
		if (is_write) {
			memcpy(img + (lo - base), data + (lo - off), hi - lo);
			msix_entry_store(vp, v, img);
		} else {
			memcpy(data + (lo - off), img + (lo - base), hi - lo);
		}
	}
}

static void msix_access(struct virtio_pci *vp, uint64_t off, uint8_t *data,
			uint32_t len, bool is_write)
{
	if (!is_write)
		memset(data, 0, len);
	pthread_mutex_lock(&vp->irq_lock);
	if (off < VIRTIO_PCI_MSIX_PBA_OFF) {
		uint32_t n = VIRTIO_PCI_MSIX_PBA_OFF - off < len ?
				     (uint32_t)(VIRTIO_PCI_MSIX_PBA_OFF - off) :
				     len;

		msix_table_access(vp, (uint32_t)off, data, n, is_write);
		off += n;
		data += n;
		len -= n;
	}
	/* The PBA is read-only. */
	for (uint32_t i = 0; !is_write && i < len; i++) {
		uint64_t byte = off + i - VIRTIO_PCI_MSIX_PBA_OFF;

		if (byte >= MSIX_PBA_BYTES)
			break;
		for (unsigned int b = 0; b < 8; b++) {
			uint64_t v = byte * 8 + b;

			if (v < VIRTIO_PCI_MSIX_VECTORS && vp->msix[v].pending)
				data[i] |= (uint8_t)(1u << b);
		}
	}
	pthread_mutex_unlock(&vp->irq_lock);
}

static void bar4_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	msix_access(opaque, off, data, len, is_write);
}

/* --- config space: MSI-X control and the PCI_CFG window (bus lock) --- */

static void msix_ctrl_written(struct virtio_pci *vp)
{
	uint16_t ctrl = pci_get_u16(&vp->pci.cfg[vp->cap_msix + MSIX_CAP_CTRL]);
	bool en = ctrl & MSIX_CTRL_ENABLE, masked = ctrl & MSIX_CTRL_MASKALL;

	pthread_mutex_lock(&vp->irq_lock);
	if (en != vp->msix_enabled || masked != vp->msix_masked) {
		vp->msix_enabled = en;
		vp->msix_masked = masked;
		if (en)
			intx_set(vp, false); /* INTx is unused with MSI-X */
		for (unsigned int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++)
			msix_update(vp, v);
	}
	pthread_mutex_unlock(&vp->irq_lock);
}

/*
 * One access through the window: cap.bar, cap.offset, cap.length from
 * config space, data in pci_cfg_data. False when they name no register.
 */
static bool window_access(struct virtio_pci *vp, bool is_write, bool peek)
{
	uint8_t *c = &vp->pci.cfg[vp->cap_cfg];
	uint8_t bar = c[CAP_BAR];
	uint32_t off = pci_get_u32(c + CAP_OFFSET);
	uint32_t len = pci_get_u32(c + CAP_LENGTH);
	uint8_t *data = c + CFG_CAP_DATA;

	if ((bar != VIRTIO_PCI_BAR_CFG && bar != VIRTIO_PCI_BAR_NOTIFY &&
	     bar != VIRTIO_PCI_BAR_MSIX) ||
	    (len != 1 && len != 2 && len != 4) || len > vp->pci.bar[bar].size ||
	    off > vp->pci.bar[bar].size - len)
		return false;
	if (bar == VIRTIO_PCI_BAR_CFG)
		bar0_access(vp, off, data, len, is_write, peek);
	else if (bar == VIRTIO_PCI_BAR_NOTIFY)
		notify_access(vp, off, data, len, is_write);
	else
		msix_access(vp, off, data, len, is_write);
	return true;
}

/*
 * VIRTIO_PCI_CAP_PCI_CFG. The bus has no config read hook, so reads are
 * served from a latch: whenever the driver writes cap.bar, cap.offset,
 * cap.length or pci_cfg_data, pci_cfg_data is refilled from the named
 * register. The latch read is side-effect free (it does not clear the
 * ISR). A pci_cfg_data write is performed first (4.1.4.9.1).
 */
static void cfg_window_written(struct virtio_pci *vp, uint32_t off,
			       uint32_t len)
{
	uint32_t cap = vp->cap_cfg;
	uint8_t *data = &vp->pci.cfg[cap + CFG_CAP_DATA];

	if (overlap(off, len, cap + CFG_CAP_DATA, 4))
		window_access(vp, true, false);
	if (!window_access(vp, false, true))
		memset(data, 0, 4);
}

static void vp_cfg_written(struct pci_device *d, uint32_t off, uint32_t len)
{
	struct virtio_pci *vp = d->opaque;

	if (overlap(off, len, vp->cap_msix + MSIX_CAP_CTRL, 2))
		msix_ctrl_written(vp);
	if (overlap(off, len, vp->cap_cfg + CAP_BAR, CFG_CAP_SIZE - CAP_BAR))
		cfg_window_written(vp, off, len);
}

/* --- BAR mapping (lock held) --- */

static void notify_map(struct virtio_pci *vp, uint64_t gpa)
{
	struct virtio_device *vd = vp->vd;

	if (vp->mode == DOORBELL_POLL) {
		int slot = vp->kvm->map_host_memory(
			vp->vm, gpa, vp->doorbell_mem, vp->notify_bar_size);

		if (slot < 0)
			pr_warn("%s: doorbell page at 0x%llx not mapped "
				"(%s); doorbells will exit",
				vd->name, (unsigned long long)gpa,
				strerror(-slot));
		vp->doorbell_slot = slot < 0 ? -1 : slot;
		return;
	}
	for (uint16_t q = 0; q < vd->num_queues; q++) {
		uint64_t at = gpa + (uint64_t)q * VIRTIO_PCI_NOTIFY_MULTIPLIER;
		/* Any length if KVM can; else the 16-bit write of 4.1.5.2. */
		static const uint32_t lens[] = {0, 2, 4};

		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			int rc = vp->kvm->ioeventfd(vp->vm, at, lens[i],
						    vp->kick_fd[q], true);

			if (rc == 0)
				vp->ioevent_lens[q] |=
					(uint16_t)(1u << lens[i]);
			if (rc == 0 && lens[i] == 0)
				break;
		}
		if (!vp->ioevent_lens[q])
			pr_warn("%s: no ioeventfd for queue %u; its doorbell "
				"will exit",
				vd->name, q);
	}
}

static void notify_unmap(struct virtio_pci *vp, uint64_t gpa)
{
	if (vp->doorbell_slot >= 0) {
		vp->kvm->unmap_host_memory(vp->vm, vp->doorbell_slot);
		vp->doorbell_slot = -1;
	}
	for (uint16_t q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		uint64_t at = gpa + (uint64_t)q * VIRTIO_PCI_NOTIFY_MULTIPLIER;

		for (uint32_t l = 0; l <= 8; l++)
			if (vp->ioevent_lens[q] & (1u << l))
				vp->kvm->ioeventfd(vp->vm, at, l,
						   vp->kick_fd[q], false);
		vp->ioevent_lens[q] = 0;
	}
}

static void bar_unmap(struct virtio_pci *vp, int bar)
{
	uint64_t gpa = vp->bar_gpa[bar];

	if (!vp->bar_on[bar])
		return;
	if (bar == VIRTIO_PCI_BAR_NOTIFY)
		notify_unmap(vp, gpa);
	ioreg_unregister(&vp->vm->io, IO_SPACE_MMIO, gpa);
	vp->bar_on[bar] = false;
}

static void bar_map(struct virtio_pci *vp, int bar, uint64_t gpa)
{
	io_handler_fn fn = bar == VIRTIO_PCI_BAR_CFG	? bar0_io :
			   bar == VIRTIO_PCI_BAR_NOTIFY ? bar2_io :
							  bar4_io;
	int rc = ioreg_register(&vp->vm->io, IO_SPACE_MMIO, gpa,
				vp->pci.bar[bar].size, fn, vp, vp->vd->name);

	if (rc) {
		pr_warn("%s: BAR%d at 0x%llx: %s", vp->vd->name, bar,
			(unsigned long long)gpa, strerror(-rc));
		return;
	}
	vp->bar_on[bar] = true;
	vp->bar_gpa[bar] = gpa;
	if (bar == VIRTIO_PCI_BAR_NOTIFY)
		notify_map(vp, gpa);
}

static void vp_bar_mapped(struct pci_device *d, int bar, uint64_t addr,
			  bool mapped)
{
	struct virtio_pci *vp = d->opaque;

	if (bar != VIRTIO_PCI_BAR_CFG && bar != VIRTIO_PCI_BAR_NOTIFY &&
	    bar != VIRTIO_PCI_BAR_MSIX)
		return;
	pthread_mutex_lock(&vp->lock);
	bar_unmap(vp, bar);
	if (mapped)
		bar_map(vp, bar, addr);
	pthread_mutex_unlock(&vp->lock);
}

static const struct pci_device_ops vp_pci_ops = {
	.bar_mapped = vp_bar_mapped,
	.cfg_written = vp_cfg_written,
};

/* --- set-up --- */

static uint32_t class_of(uint16_t device_id)
{
	switch (device_id) {
	case VIRTIO_ID_NET:
		return 0x020000; /* network, ethernet */
	case VIRTIO_ID_BLOCK:
		return 0x010000; /* storage, SCSI */
	case VIRTIO_ID_CONSOLE:
		return 0x078000; /* communication, other */
	default:
		return 0x00ff00; /* unclassified (virtio-rng's) */
	}
}

static int add_vendor_cap(struct virtio_pci *vp, uint8_t type, uint8_t len,
			  uint8_t bar, uint32_t off, uint32_t length)
{
	int at = pci_device_add_cap(&vp->pci, PCI_CAP_ID_VNDR, len);
	uint8_t *c;

	if (at < 0)
		return at;
	c = &vp->pci.cfg[at];
	c[CAP_LEN] = len;
	c[CAP_CFG_TYPE] = type;
	c[CAP_BAR] = bar;
	pci_set_u32(c + CAP_OFFSET, off);
	pci_set_u32(c + CAP_LENGTH, length);
	return at;
}

static int add_caps(struct virtio_pci *vp)
{
	struct pci_device *d = &vp->pci;
	struct virtio_device *vd = vp->vd;
	uint8_t *c;
	int at;

	at = add_vendor_cap(vp, VIRTIO_PCI_CAP_COMMON_CFG, CAP_SIZE,
			    VIRTIO_PCI_BAR_CFG, VIRTIO_PCI_COMMON_OFF,
			    VIRTIO_PCI_COMMON_LEN);
	if (at < 0)
		return at;
	at = add_vendor_cap(vp, VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_CAP_SIZE,
			    VIRTIO_PCI_BAR_NOTIFY, 0,
			    (uint32_t)vd->num_queues *
				    VIRTIO_PCI_NOTIFY_MULTIPLIER);
	if (at < 0)
		return at;
	pci_set_u32(&d->cfg[at + NOTIFY_CAP_MULT],
		    VIRTIO_PCI_NOTIFY_MULTIPLIER);
	at = add_vendor_cap(vp, VIRTIO_PCI_CAP_ISR_CFG, CAP_SIZE,
			    VIRTIO_PCI_BAR_CFG, VIRTIO_PCI_ISR_OFF, 1);
	if (at < 0)
		return at;
	if (vd->config_size) {
		at = add_vendor_cap(vp, VIRTIO_PCI_CAP_DEVICE_CFG, CAP_SIZE,
				    VIRTIO_PCI_BAR_CFG, VIRTIO_PCI_DEVICE_OFF,
				    vd->config_size);
		if (at < 0)
			return at;
	}
	at = add_vendor_cap(vp, VIRTIO_PCI_CAP_PCI_CFG, CFG_CAP_SIZE, 0, 0, 0);
	if (at < 0)
		return at;
	vp->cap_cfg = (uint8_t)at;
	/* cap.bar, cap.offset, cap.length and pci_cfg_data are writable. */
	d->wmask[at + CAP_BAR] = 0xff;
	memset(&d->wmask[at + CAP_OFFSET], 0xff, 8 + 4);

	at = pci_device_add_cap(d, PCI_CAP_ID_MSIX, MSIX_CAP_SIZE);
	if (at < 0)
		return at;
	vp->cap_msix = (uint8_t)at;
	c = &d->cfg[at];
	pci_set_u16(c + MSIX_CAP_CTRL, VIRTIO_PCI_MSIX_VECTORS - 1);
	pci_set_u16(&d->wmask[at + MSIX_CAP_CTRL],
		    MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
	pci_set_u32(c + MSIX_CAP_TABLE,
		    VIRTIO_PCI_MSIX_TABLE_OFF | VIRTIO_PCI_BAR_MSIX);
	pci_set_u32(c + MSIX_CAP_PBA,
		    VIRTIO_PCI_MSIX_PBA_OFF | VIRTIO_PCI_BAR_MSIX);
	return 0;
}

static int doorbells_init(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	struct epoll_event ev = {.events = EPOLLIN};
	int rc;

	if (vp->mode == DOORBELL_POLL) {
		void *mem =
			mmap(NULL, vp->notify_bar_size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (mem == MAP_FAILED)
			return -errno;
		vp->doorbell_mem = mem;
		for (uint16_t q = 0; q < vd->num_queues; q++) {
			uint32_t *w = doorbell_word(vp, q);

			*w = DOORBELL_SENTINEL;
			rc = doorbell_poller_add_counted(vp->poller, w, vd, q,
							 &vp->kicks);
			if (rc)
				return rc;
		}
		return 0;
	}
	vp->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vp->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (vp->stop_fd < 0 || vp->epoll_fd < 0)
		return -errno;
	ev.data.u32 = UINT32_MAX;
	if (epoll_ctl(vp->epoll_fd, EPOLL_CTL_ADD, vp->stop_fd, &ev))
		return -errno;
	for (uint16_t q = 0; q < vd->num_queues; q++) {
		vp->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->kick_fd[q] < 0)
			return -errno;
		ev.data.u32 = q;
		if (epoll_ctl(vp->epoll_fd, EPOLL_CTL_ADD, vp->kick_fd[q], &ev))
			return -errno;
	}
	rc = pthread_create(&vp->kick_thread, NULL, kick_thread, vp);
	if (rc)
		return -rc;
	vp->kick_thread_started = true;
	return 0;
}

/* Stop kicks: after this no queue_kick call is running or will start. */
static void doorbells_stop(struct virtio_pci *vp)
{
	uint64_t one = 1;

	if (vp->mode == DOORBELL_POLL && vp->poller)
		doorbell_poller_remove_device(vp->poller, vp->vd);
	if (vp->kick_thread_started) {
		if (write(vp->stop_fd, &one, sizeof(one)) != sizeof(one))
			pr_err("%s: cannot stop the kick thread: %s",
			       vp->vd->name, strerror(errno));
		pthread_join(vp->kick_thread, NULL);
		vp->kick_thread_started = false;
	}
}

/* Undo everything init did (also after a partial init). */
static void teardown(struct virtio_pci *vp)
{
	doorbells_stop(vp);
	pthread_mutex_lock(&vp->lock);
	for (int bar = 0; bar < PCI_NUM_BARS; bar++)
		bar_unmap(vp, bar);
	pthread_mutex_unlock(&vp->lock);

	pthread_mutex_lock(&vp->irq_lock);
	vp->dead = true;
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++)
		msix_route_drop(vp, &vp->msix[v]);
	vp->isr = 0;
	intx_set(vp, false);
	pthread_mutex_unlock(&vp->irq_lock);

	for (int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		if (vp->kick_fd[q] >= 0)
			close(vp->kick_fd[q]);
		vp->kick_fd[q] = -1;
	}
	if (vp->stop_fd >= 0)
		close(vp->stop_fd);
	if (vp->epoll_fd >= 0)
		close(vp->epoll_fd);
	vp->stop_fd = vp->epoll_fd = -1;
	if (vp->doorbell_mem)
		munmap(vp->doorbell_mem, vp->notify_bar_size);
	vp->doorbell_mem = NULL;
	vp->vd->transport = (struct virtio_transport){
		.notify_queue = noop_notify_queue,
		.notify_config = noop_notify_config,
	};
	pthread_mutex_destroy(&vp->irq_lock);
	pthread_mutex_destroy(&vp->lock);
}

int virtio_pci_init(struct virtio_pci *vp, struct virtio_device *vd,
		    struct vm *vm, struct pci_bus *bus, enum doorbell_mode mode,
		    struct doorbell_poller *poller)
{
	struct pci_device *d = &vp->pci;
	int rc;

	if (!vp || !vd || !vd->ops || !vm || !bus ||
	    (mode != DOORBELL_IOEVENTFD && mode != DOORBELL_POLL) ||
	    (mode == DOORBELL_POLL && !poller) || vd->num_queues < 1 ||
	    vd->num_queues > VIRTIO_MAX_QUEUES ||
	    vd->config_size > VIRTIO_PCI_DEVICE_MAX)
		return -EINVAL;
	memset(vp, 0, sizeof(*vp));
	vp->vd = vd;
	vp->vm = vm;
	vp->mode = mode;
	vp->poller = mode == DOORBELL_POLL ? poller : NULL;
	vp->kvm = kvm_ops;
	vp->doorbell_slot = -1;
	vp->stop_fd = vp->epoll_fd = -1;
	for (int q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vp->kick_fd[q] = -1;
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++)
		vp->msix[v] = (struct virtio_pci_msix_vec){
			.masked = true, .dirty = true, .gsi = -1, .irqfd = -1};
	vp->notify_bar_size = VIRTIO_PCI_NOTIFY_MULTIPLIER;
	while (vp->notify_bar_size <
	       (uint64_t)vd->num_queues * VIRTIO_PCI_NOTIFY_MULTIPLIER)
		vp->notify_bar_size *= 2;
	rc = pthread_mutex_init(&vp->lock, NULL);
	if (rc)
		return -rc;
	rc = pthread_mutex_init(&vp->irq_lock, NULL);
	if (rc) {
		pthread_mutex_destroy(&vp->lock);
		return -rc;
	}
	vd->transport = (struct virtio_transport){
		.notify_queue = vp_notify_queue,
		.notify_config = vp_notify_config,
		.opaque = vp,
	};
	regs_reset(vp);

	pci_device_init(d, vd->name, VIRTIO_PCI_VENDOR,
			(uint16_t)(VIRTIO_PCI_DEVICE_BASE + vd->device_id),
			class_of(vd->device_id), 1, VIRTIO_PCI_VENDOR,
			vd->device_id);
	d->ops = &vp_pci_ops;
	d->opaque = vp;
	rc = pci_device_set_bar(d, VIRTIO_PCI_BAR_CFG, VIRTIO_PCI_BAR_CFG_SIZE,
				false, false);
	if (!rc)
		rc = pci_device_set_bar(d, VIRTIO_PCI_BAR_NOTIFY,
					vp->notify_bar_size, false, true);
	if (!rc)
		rc = pci_device_set_bar(d, VIRTIO_PCI_BAR_MSIX,
					VIRTIO_PCI_BAR_MSIX_SIZE, false, false);
	if (!rc)
		rc = add_caps(vp);
	if (!rc)
		rc = doorbells_init(vp);
	if (!rc) {
		rc = pci_bus_add(bus, d);
		if (rc >= 0)
			return 0;
	}
	pr_err("%s: virtio-pci set-up failed: %s", vd->name, strerror(-rc));
	d->ops = NULL;
	teardown(vp);
	return rc;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;

	/* No more config-space or BAR callbacks from the bus. */
	vp->pci.ops = NULL;
	/* Quiesce the device as a driver reset would. */
	pthread_mutex_lock(&vp->lock);
	if (status_get(vd))
		transport_reset(vp);
	pthread_mutex_unlock(&vp->lock);
	teardown(vp);
}

/* --- migration --- */

void virtio_pci_quiesce(struct virtio_pci *vp)
{
	if (vp->vd->ops->quiesce)
		vp->vd->ops->quiesce(vp->vd);
}

void virtio_pci_resume(struct virtio_pci *vp)
{
	if (vp->vd->ops->resume)
		vp->vd->ops->resume(vp->vd);
}

void virtio_pci_state_free(struct virtio_pci_state *s)
{
	free(s->dev);
	s->dev = NULL;
	s->dev_len = 0;
}

#define DEV_STATE_MAX (2u << 20)

static int save_device_bytes(struct virtio_device *vd,
			     struct virtio_pci_state *s)
{
	long n;

	if (!vd->ops->save)
		return 0;
	s->dev = malloc(DEV_STATE_MAX);
	if (!s->dev)
		return -ENOMEM;
	n = vd->ops->save(vd, s->dev, DEV_STATE_MAX);
	if (n < 0) {
		virtio_pci_state_free(s);
		return (int)n;
	}
	s->dev_len = (size_t)n;
	return 0;
}

int virtio_pci_save(struct virtio_pci *vp, struct virtio_pci_state *s)
{
	struct virtio_device *vd = vp->vd;

	memset(s, 0, sizeof(*s));
	memcpy(s->cfg, vp->pci.cfg, PCI_CFG_SIZE);
	s->device_id = vd->device_id;
	s->num_queues = vd->num_queues;
	pthread_mutex_lock(&vp->lock);
	s->device_feature_select = vp->device_feature_select;
	s->driver_feature_select = vp->driver_feature_select;
	s->driver_features = vp->driver_features;
	s->queue_select = vp->queue_select;
	for (int q = 0; q < vd->num_queues; q++) {
		struct virtqueue *vq = &vd->vq[q];

		s->q[q].size = vp->q[q].size;
		s->q[q].msix_vector = vp->q[q].msix_vector;
		s->q[q].enable = vp->q[q].enable;
		s->q[q].desc = vp->q[q].desc;
		s->q[q].driver = vp->q[q].driver;
		s->q[q].device = vp->q[q].device;
		pthread_mutex_lock(&vq->lock);
		s->q[q].last_avail = vq->last_avail;
		s->q[q].used_idx = vq->used_idx;
		s->q[q].signalled_used = vq->signalled_used;
		s->q[q].signalled_valid = vq->signalled_valid;
		s->q[q].kick_wanted = vq->kick_wanted;
		pthread_mutex_unlock(&vq->lock);
	}
	pthread_mutex_unlock(&vp->lock);
	pthread_mutex_lock(&vd->lock);
	s->guest_features = vd->guest_features;
	s->status = vd->status;
	s->config_generation = vd->config_generation;
	pthread_mutex_unlock(&vd->lock);
	pthread_mutex_lock(&vp->irq_lock);
	s->msix_config = vp->msix_config;
	s->isr = vp->isr;
	s->intx_level = vp->intx_level;
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		s->msix[v].addr = vp->msix[v].addr;
		s->msix[v].data = vp->msix[v].data;
		s->msix[v].masked = vp->msix[v].masked;
		s->msix[v].pending = vp->msix[v].pending;
	}
	pthread_mutex_unlock(&vp->irq_lock);
	return save_device_bytes(vd, s);
}

static bool vector_ok(uint16_t v)
{
	return v == VIRTIO_MSI_NO_VECTOR || MSIX_VALID(v);
}

/* Is @s something this device could have been in? */
static int check_state(struct virtio_pci *vp, const struct virtio_pci_state *s,
		       char *why, size_t why_len)
{
	struct virtio_device *vd = vp->vd;

	if (s->device_id != vd->device_id || s->num_queues != vd->num_queues) {
		snprintf(why, why_len,
			 "device %u with %u queues arrived for device %u with "
			 "%u queues",
			 s->device_id, s->num_queues, vd->device_id,
			 vd->num_queues);
		return -EINVAL;
	}
	if (!vector_ok(s->msix_config) ||
	    (s->guest_features & ~offered_features(vp)) ||
	    (s->isr & ~(ISR_QUEUE | ISR_CONFIG))) {
		snprintf(why, why_len, "impossible transport registers");
		return -EINVAL;
	}
	for (int q = 0; q < vd->num_queues; q++) {
		uint16_t n = s->q[q].size;

		if (!is_pow2(n) || n > vd->queue_size_max ||
		    !vector_ok(s->q[q].msix_vector)) {
			snprintf(why, why_len,
				 "queue %d: impossible size %u or "
				 "vector %u",
				 q, n, s->q[q].msix_vector);
			return -EINVAL;
		}
	}
	return 0;
}

static void load_msix_table(struct virtio_pci *vp,
			    const struct virtio_pci_state *s)
{
	pthread_mutex_lock(&vp->irq_lock);
	for (int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		struct virtio_pci_msix_vec *m = &vp->msix[v];

		m->addr = s->msix[v].addr;
		m->data = s->msix[v].data;
		m->masked = s->msix[v].masked;
		m->pending = s->msix[v].pending;
		m->dirty = true;
	}
	vp->msix_config = s->msix_config;
	vp->isr = s->isr;
	intx_set(vp, s->intx_level);
	pthread_mutex_unlock(&vp->irq_lock);
}

static void load_registers(struct virtio_pci *vp,
			   const struct virtio_pci_state *s)
{
	struct virtio_device *vd = vp->vd;

	pthread_mutex_lock(&vp->lock);
	vp->device_feature_select = s->device_feature_select;
	vp->driver_feature_select = s->driver_feature_select;
	vp->driver_features = s->driver_features;
	vp->queue_select = s->queue_select;
	for (int q = 0; q < vd->num_queues; q++) {
		vp->q[q].size = s->q[q].size;
		vp->q[q].msix_vector = s->q[q].msix_vector;
		vp->q[q].enable = s->q[q].enable;
		vp->q[q].desc = s->q[q].desc;
		vp->q[q].driver = s->q[q].driver;
		vp->q[q].device = s->q[q].device;
	}
	pthread_mutex_unlock(&vp->lock);
	pthread_mutex_lock(&vd->lock);
	vd->guest_features = s->guest_features;
	vd->config_generation = s->config_generation;
	__atomic_store_n(&vd->status,
			 (uint8_t)(s->status & ~VIRTIO_STATUS_DRIVER_OK),
			 __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vd->lock);
}

/* The rings where the source left them; then the device runs. */
static int load_queues_and_start(struct virtio_pci *vp,
				 const struct virtio_pci_state *s, char *why,
				 size_t why_len)
{
	struct virtio_device *vd = vp->vd;
	int rc = 0;

	for (uint16_t q = 0; q < vd->num_queues; q++) {
		struct virtqueue *vq = &vd->vq[q];

		if (!s->q[q].enable)
			continue;
		if (enable_queue(vp, q, s->guest_features, why, why_len))
			return -EINVAL;
		pthread_mutex_lock(&vq->lock);
		vq->last_avail = s->q[q].last_avail;
		vq->used_idx = s->q[q].used_idx;
		vq->signalled_used = s->q[q].signalled_used;
		vq->signalled_valid = s->q[q].signalled_valid;
		vq->kick_wanted = s->q[q].kick_wanted;
		pthread_mutex_unlock(&vq->lock);
	}
	if (vd->ops->activate)
		rc = vd->ops->activate(vd);
	if (rc) {
		snprintf(why, why_len, "activation failed: %s",
			 strerror(rc < 0 ? -rc : rc));
		return -EINVAL;
	}
	status_or(vd, VIRTIO_STATUS_DRIVER_OK);
	for (uint16_t q = 0; q < vd->num_queues; q++)
		if (s->q[q].enable && vd->ops->queue_kick)
			vd->ops->queue_kick(vd, q);
	return 0;
}

int virtio_pci_load(struct virtio_pci *vp, struct pci_bus *bus,
		    const struct virtio_pci_state *s, char *why, size_t why_len)
{
	struct virtio_device *vd = vp->vd;
	int rc = check_state(vp, s, why, why_len);

	if (rc)
		return rc;
	if (s->dev_len && !vd->ops->load) {
		snprintf(why, why_len, "unexpected device bytes");
		return -EINVAL;
	}
	if (vd->ops->load &&
	    vd->ops->load(vd, s->dev, s->dev_len, why, why_len))
		return -EINVAL;
	load_msix_table(vp, s);
	pci_device_restore_cfg(bus, &vp->pci, s->cfg);
	msix_ctrl_written(vp);
	load_registers(vp, s);
	if ((s->status & VIRTIO_STATUS_DRIVER_OK) &&
	    !(s->status & VIRTIO_STATUS_NEEDS_RESET))
		return load_queues_and_start(vp, s, why, why_len);
	if (s->status & VIRTIO_STATUS_DRIVER_OK)
		status_or(vd, VIRTIO_STATUS_DRIVER_OK); /* broken: stays so */
	return 0;
}
