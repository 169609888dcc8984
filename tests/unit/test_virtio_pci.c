/*
 * tests/unit/test_virtio_pci.c - the virtio-pci transport without KVM: a
 * fake virtio device (ops that record their calls), a struct vm with no VM
 * behind it (vm_fd -1, a recording irq sink), the real PCI bus and io
 * registry, and fake KVM calls (virtio_pci_set_kvm_ops) that record
 * ioeventfds, MSI routes, irqfds and memory slots. Covers the PCI header
 * and capabilities, feature negotiation, queue set-up and DRIVER_OK, bad
 * rings, reset, out-of-range queue_select, odd access sizes and offsets,
 * ISR and INTx, the MSI-X table, masking and PBA, device config bounds, the
 * PCI_CFG window, ioeventfd doorbells with the kick thread, BAR moves,
 * poll-mode doorbells, the doorbell poller (kicks, removal while running,
 * back-off) and destroy. Threads are waited for with condition variables
 * and deadlines, never with sleeps.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/vm.h"
#include "machine/pci.h"
#include "virtio/virtio_pci.h"

#define RAM_SIZE (4u << 20)
#define QMAX 64
#define NQ 3
#define CFG_SIZE 24
#define WAIT_NS 5000000000ULL

/* Common config offsets (virtio 1.2, 4.1.4.3). */
#define DFSEL 0x00
#define DF 0x04
#define GFSEL 0x08
#define GF 0x0c
#define MSIXCFG 0x10
#define NUMQ 0x12
#define STATUS 0x14
#define GEN 0x15
#define QSEL 0x16
#define QSIZE 0x18
#define QMSIX 0x1a
#define QENABLE 0x1c
#define QNOFF 0x1e
#define QDESC 0x20
#define QDRIVER 0x28
#define QDEVICE 0x30

#define S_ACK VIRTIO_STATUS_ACKNOWLEDGE
#define S_DRV VIRTIO_STATUS_DRIVER
#define S_FOK VIRTIO_STATUS_FEATURES_OK
#define S_DOK VIRTIO_STATUS_DRIVER_OK

/* ---- fake KVM ---- */

#define FK_MAX 128
#define FK_GSI_BASE 100
#define FK_SLOT_BASE 50

static struct {
	struct {
		uint64_t gpa;
		uint32_t len;
		int fd;
	} io[FK_MAX];
	int nio;
	bool fail_len0;
	struct {
		bool used;
		uint64_t addr;
		uint32_t data;
	} route[FK_MAX];
	int route_adds, route_sets, route_dels;
	bool fail_route;
	struct {
		int fd;
		uint32_t gsi;
	} irqfd[FK_MAX];
	int nirqfd;
	struct {
		bool used;
		uint64_t gpa, size;
		void *hva;
	} slot[8];
	int maps, unmaps;
	/* irq sink */
	int line[64];
	int line_sets;
	int msi_sent;
	uint64_t msi_addr;
	uint32_t msi_data;
} fk;

static int fk_ioeventfd(struct vm *vm, uint64_t gpa, uint32_t len, int fd,
			bool assign)
{
	(void)vm;
	if (assign) {
		if (len == 0 && fk.fail_len0)
			return -EINVAL;
		assert_true(fk.nio < FK_MAX);
		fk.io[fk.nio].gpa = gpa;
		fk.io[fk.nio].len = len;
		fk.io[fk.nio].fd = fd;
		fk.nio++;
		return 0;
	}
	for (int i = 0; i < fk.nio; i++) {
		if (fk.io[i].gpa == gpa && fk.io[i].len == len &&
		    fk.io[i].fd == fd) {
			fk.io[i] = fk.io[--fk.nio];
			return 0;
		}
	}
	return -ENOENT;
}

static int fk_route_add(struct vm *vm, uint64_t addr, uint32_t data)
{
	(void)vm;
	if (fk.fail_route)
		return -ENOSPC;
	for (int i = 0; i < FK_MAX; i++) {
		if (fk.route[i].used)
			continue;
		fk.route[i].used = true;
		fk.route[i].addr = addr;
		fk.route[i].data = data;
		fk.route_adds++;
		return FK_GSI_BASE + i;
	}
	return -ENOSPC;
}

static int fk_route_set(struct vm *vm, int gsi, uint64_t addr, uint32_t data)
{
	int i = gsi - FK_GSI_BASE;

	(void)vm;
	assert_true(i >= 0 && i < FK_MAX && fk.route[i].used);
	fk.route[i].addr = addr;
	fk.route[i].data = data;
	fk.route_sets++;
	return 0;
}

static int fk_route_del(struct vm *vm, int gsi)
{
	int i = gsi - FK_GSI_BASE;

	(void)vm;
	assert_true(i >= 0 && i < FK_MAX && fk.route[i].used);
	fk.route[i].used = false;
	fk.route_dels++;
	return 0;
}

static int fk_irqfd(struct vm *vm, int fd, uint32_t gsi, bool assign)
{
	(void)vm;
	if (assign) {
		fk.irqfd[fk.nirqfd].fd = fd;
		fk.irqfd[fk.nirqfd].gsi = gsi;
		fk.nirqfd++;
		return 0;
	}
	for (int i = 0; i < fk.nirqfd; i++) {
		if (fk.irqfd[i].fd == fd && fk.irqfd[i].gsi == gsi) {
			fk.irqfd[i] = fk.irqfd[--fk.nirqfd];
			return 0;
		}
	}
	return -ENOENT;
}

static int fk_map(struct vm *vm, uint64_t gpa, void *hva, uint64_t size)
{
	(void)vm;
	for (int i = 0; i < 8; i++) {
		if (fk.slot[i].used)
			continue;
		fk.slot[i].used = true;
		fk.slot[i].gpa = gpa;
		fk.slot[i].hva = hva;
		fk.slot[i].size = size;
		fk.maps++;
		return FK_SLOT_BASE + i;
	}
	return -ENOSPC;
}

static int fk_unmap(struct vm *vm, int slot)
{
	int i = slot - FK_SLOT_BASE;

	(void)vm;
	assert_true(i >= 0 && i < 8 && fk.slot[i].used);
	fk.slot[i].used = false;
	fk.unmaps++;
	return 0;
}

static const struct virtio_pci_kvm_ops fk_ops = {
	.ioeventfd = fk_ioeventfd,
	.msi_route_add = fk_route_add,
	.msi_route_set = fk_route_set,
	.msi_route_del = fk_route_del,
	.irqfd = fk_irqfd,
	.map_host_memory = fk_map,
	.unmap_host_memory = fk_unmap,
};

static int fk_set_line(void *opaque, uint32_t gsi, int level)
{
	(void)opaque;
	assert_true(gsi < 64);
	fk.line[gsi] = level;
	fk.line_sets++;
	return 0;
}

static int fk_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
	(void)opaque;
	fk.msi_sent++;
	fk.msi_addr = addr;
	fk.msi_data = data;
	return 0;
}

static int fk_slots_used(void)
{
	int n = 0;

	for (int i = 0; i < 8; i++)
		n += fk.slot[i].used;
	return n;
}

static int fk_routes_used(void)
{
	int n = 0;

	for (int i = 0; i < FK_MAX; i++)
		n += fk.route[i].used;
	return n;
}

/* ---- a fake virtio device ---- */

struct fake_dev {
	struct virtio_device vd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t features;
	int kicks[VIRTIO_MAX_QUEUES];
	int resets, activates, activate_rc;
	uint8_t config[CFG_SIZE];
	int cfg_reads, cfg_writes;
	uint32_t cfg_off, cfg_len;
	bool removed; /* poller test: set once removed */
	int kicks_after_remove;
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static uint64_t fd_features(struct virtio_device *vd)
{
	return ((struct fake_dev *)vd->priv)->features;
}

static void fd_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			   uint32_t len)
{
	struct fake_dev *d = vd->priv;

	assert_true(off + len <= CFG_SIZE);
	d->cfg_reads++;
	d->cfg_off = off;
	d->cfg_len = len;
	memcpy(buf, d->config + off, len);
}

static void fd_config_write(struct virtio_device *vd, uint32_t off,
			    const void *buf, uint32_t len)
{
	struct fake_dev *d = vd->priv;

	assert_true(off + len <= CFG_SIZE);
	d->cfg_writes++;
	d->cfg_off = off;
	d->cfg_len = len;
	memcpy(d->config + off, buf, len);
}

static void fd_queue_kick(struct virtio_device *vd, uint16_t q)
{
	struct fake_dev *d = vd->priv;

	pthread_mutex_lock(&d->lock);
	if (q < VIRTIO_MAX_QUEUES)
		d->kicks[q]++;
	if (__atomic_load_n(&d->removed, __ATOMIC_ACQUIRE))
		d->kicks_after_remove++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static int fd_activate(struct virtio_device *vd)
{
	struct fake_dev *d = vd->priv;

	d->activates++;
	return d->activate_rc;
}

static void fd_reset(struct virtio_device *vd)
{
	((struct fake_dev *)vd->priv)->resets++;
}

static const struct virtio_device_ops fake_ops = {
	.features = fd_features,
	.config_read = fd_config_read,
	.config_write = fd_config_write,
	.queue_kick = fd_queue_kick,
	.activate = fd_activate,
	.reset = fd_reset,
};

static void fake_dev_init(struct fake_dev *d, const char *name, uint16_t id,
			  uint16_t nq, uint32_t cfg_size,
			  const struct guest_mem *mem)
{
	pthread_condattr_t ca;

	memset(d, 0, sizeof(*d));
	assert_int_equal(virtio_device_init(&d->vd, name, id, nq, QMAX,
					    cfg_size, &fake_ops, d, mem),
			 0);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&d->lock, NULL);
	d->features = (1ULL << 5) | (1ULL << 9) | (1ULL << 34); /* 34: masked */
	for (int i = 0; i < CFG_SIZE; i++)
		d->config[i] = (uint8_t)(0xa0 + i);
}

static void fake_dev_destroy(struct fake_dev *d)
{
	virtio_device_destroy(&d->vd);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
}

/* Wait (condition variable, deadline) until queue @q saw @n kicks. */
static bool wait_kicks(struct fake_dev *d, uint16_t q, int n)
{
	uint64_t end = now_ns() + WAIT_NS;
	struct timespec ts = {.tv_sec = (time_t)(end / 1000000000ULL),
			      .tv_nsec = (long)(end % 1000000000ULL)};
	bool ok;

	pthread_mutex_lock(&d->lock);
	while (d->kicks[q] < n &&
	       pthread_cond_timedwait(&d->cond, &d->lock, &ts) != ETIMEDOUT)
		;
	ok = d->kicks[q] >= n;
	pthread_mutex_unlock(&d->lock);
	return ok;
}

static int kicks_of(struct fake_dev *d, uint16_t q)
{
	int n;

	pthread_mutex_lock(&d->lock);
	n = d->kicks[q];
	pthread_mutex_unlock(&d->lock);
	return n;
}

/* ---- the environment: vm, bus, device, transport ---- */

struct env {
	struct vm vm;
	struct pci_bus bus;
	struct fake_dev dev;
	struct virtio_pci vp;
	struct doorbell_poller *poller;
	uint8_t devfn;
	uint64_t bar0, bar2, bar4;
	bool destroyed;
};

static int env_setup_mode(void **state, enum doorbell_mode mode, uint16_t id,
			  uint32_t cfg_size)
{
	struct env *e = calloc(1, sizeof(*e));
	int rc;

	assert_non_null(e);
	memset(&fk, 0, sizeof(fk));
	virtio_pci_set_kvm_ops(&fk_ops);
	e->vm.vm_fd = -1;
	e->vm.kvm_fd = -1;
	assert_int_equal(ioreg_init(&e->vm.io), 0);
	assert_int_equal(guest_mem_alloc(&e->vm.mem, RAM_SIZE), 0);
	e->vm.irq = (struct irq_sink){.set_line = fk_set_line,
				      .send_msi = fk_send_msi};
	assert_int_equal(pci_bus_init(&e->bus, &e->vm.io, NULL, NULL), 0);
	fake_dev_init(&e->dev, "virtio-test0", id, NQ, cfg_size, &e->vm.mem);
	if (mode == DOORBELL_POLL) {
		e->poller = doorbell_poller_create();
		assert_non_null(e->poller);
	}
	rc = virtio_pci_init(&e->vp, &e->dev.vd, &e->vm, &e->bus, mode,
			     e->poller);
	assert_int_equal(rc, 0);
	assert_true(e->vp.pci.slot > 0);
	e->devfn = (uint8_t)(e->vp.pci.slot << 3);
	e->bar0 = e->vp.pci.bar[0].addr;
	e->bar2 = e->vp.pci.bar[2].addr;
	e->bar4 = e->vp.pci.bar[4].addr;
	assert_true(e->vp.pci.bar[0].mapped && e->vp.pci.bar[2].mapped &&
		    e->vp.pci.bar[4].mapped);
	*state = e;
	return 0;
}

static int env_setup(void **state)
{
	return env_setup_mode(state, DOORBELL_IOEVENTFD, VIRTIO_ID_BLOCK,
			      CFG_SIZE);
}

static int env_setup_poll(void **state)
{
	return env_setup_mode(state, DOORBELL_POLL, VIRTIO_ID_NET, CFG_SIZE);
}

static int env_teardown(void **state)
{
	struct env *e = *state;

	if (!e->destroyed)
		virtio_pci_destroy(&e->vp);
	if (e->poller)
		doorbell_poller_destroy(e->poller);
	fake_dev_destroy(&e->dev);
	pci_bus_destroy(&e->bus);
	guest_mem_free(&e->vm.mem);
	ioreg_destroy(&e->vm.io);
	virtio_pci_set_kvm_ops(NULL);
	free(e);
	return 0;
}

static uint64_t le(const uint8_t *b, uint32_t len)
{
	uint64_t v = 0;

	for (uint32_t i = 0; i < len; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static uint64_t mmio_rd(struct env *e, uint64_t addr, uint32_t len)
{
	uint8_t b[8];

	assert_true(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO, addr, b, len,
				   false, 0));
	return le(b, len);
}

static void mmio_wr(struct env *e, uint64_t addr, uint32_t len, uint64_t v)
{
	uint8_t b[8];

	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	assert_true(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO, addr, b, len, true,
				   0));
}

static uint64_t cc_rd(struct env *e, uint32_t off, uint32_t len)
{
	return mmio_rd(e, e->bar0 + off, len);
}

static void cc_wr(struct env *e, uint32_t off, uint32_t len, uint64_t v)
{
	mmio_wr(e, e->bar0 + off, len, v);
}

static uint64_t cfg_rd(struct env *e, uint32_t off, uint32_t len)
{
	uint8_t b[4];

	pci_cfg_read(&e->bus, e->devfn, off, b, len);
	return le(b, len);
}

static void cfg_wr(struct env *e, uint32_t off, uint32_t len, uint32_t v)
{
	uint8_t b[4];

	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	pci_cfg_write(&e->bus, e->devfn, off, b, len);
}

static uint8_t status(struct env *e)
{
	return (uint8_t)cc_rd(e, STATUS, 1);
}

/* Rings of queue @q: 16 entries at 64 KiB + q * 16 KiB. */
static uint64_t ring_base(uint16_t q)
{
	return 0x10000 + (uint64_t)q * 0x4000;
}

static void set_features(struct env *e, uint64_t f)
{
	cc_wr(e, GFSEL, 4, 0);
	cc_wr(e, GF, 4, (uint32_t)f);
	cc_wr(e, GFSEL, 4, 1);
	cc_wr(e, GF, 4, (uint32_t)(f >> 32));
}

static void setup_queue(struct env *e, uint16_t q, uint16_t size)
{
	uint64_t b = ring_base(q);

	cc_wr(e, QSEL, 2, q);
	cc_wr(e, QSIZE, 2, size);
	cc_wr(e, QDESC, 4, (uint32_t)b);
	cc_wr(e, QDESC + 4, 4, (uint32_t)(b >> 32));
	cc_wr(e, QDRIVER, 8, b + 0x2000); /* one 64-bit access */
	cc_wr(e, QDEVICE, 4, (uint32_t)(b + 0x3000));
	cc_wr(e, QDEVICE + 4, 4, 0);
	cc_wr(e, QENABLE, 2, 1);
}

/* The whole driver handshake with VERSION_1 | EVENT_IDX. */
static void bring_up(struct env *e)
{
	cc_wr(e, STATUS, 1, 0);
	cc_wr(e, STATUS, 1, S_ACK);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	set_features(e, (1ULL << VIRTIO_F_VERSION_1) |
				(1ULL << VIRTIO_F_EVENT_IDX));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK);
	for (uint16_t q = 0; q < NQ; q++)
		setup_queue(e, q, 16);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK | S_DOK);
}

/* Find the vendor capability of @type; 0 if absent. */
static uint32_t find_vcap(struct env *e, uint8_t type)
{
	uint32_t p = (uint32_t)cfg_rd(e, 0x34, 1);

	for (int n = 0; p && n < 48; n++) {
		if (cfg_rd(e, p, 1) == 0x09 && cfg_rd(e, p + 3, 1) == type)
			return p;
		p = (uint32_t)cfg_rd(e, p + 1, 1);
	}
	return 0;
}

static uint32_t find_cap(struct env *e, uint8_t id)
{
	uint32_t p = (uint32_t)cfg_rd(e, 0x34, 1);

	for (int n = 0; p && n < 48; n++) {
		if (cfg_rd(e, p, 1) == id)
			return p;
		p = (uint32_t)cfg_rd(e, p + 1, 1);
	}
	return 0;
}

/* ---- tests: PCI identity and capabilities ---- */

static void check_vcap(struct env *e, uint8_t type, uint8_t bar, uint32_t off,
		       uint32_t len, uint8_t cap_len)
{
	uint32_t p = find_vcap(e, type);

	assert_true(p != 0);
	assert_int_equal(cfg_rd(e, p + 2, 1), cap_len);
	assert_int_equal(cfg_rd(e, p + 4, 1), bar);
	assert_int_equal(cfg_rd(e, p + 8, 4), off);
	assert_int_equal(cfg_rd(e, p + 12, 4), len);
}

static void test_pci_identity(void **state)
{
	struct env *e = *state;
	uint32_t p;

	assert_int_equal(cfg_rd(e, 0x00, 2), 0x1af4);
	assert_int_equal(cfg_rd(e, 0x02, 2), 0x1040 + VIRTIO_ID_BLOCK);
	assert_int_equal(cfg_rd(e, 0x08, 1), 1);	/* revision */
	assert_int_equal(cfg_rd(e, 0x09, 3), 0x010000); /* class */
	assert_int_equal(cfg_rd(e, 0x2c, 2), 0x1af4);
	assert_int_equal(cfg_rd(e, 0x2e, 2), VIRTIO_ID_BLOCK);
	assert_int_equal(cfg_rd(e, 0x06, 2) & 0x10, 0x10); /* cap list */

	assert_int_equal(e->vp.pci.bar[0].size, 0x4000);
	assert_false(e->vp.pci.bar[0].is_64);
	assert_int_equal(e->vp.pci.bar[2].size, 0x4000); /* 3 pages -> 4 */
	assert_true(e->vp.pci.bar[2].is_64);
	assert_int_equal(e->vp.pci.bar[4].size, 0x1000);
	assert_false(e->vp.pci.bar[4].is_64);
	assert_int_equal(cfg_rd(e, 0x10, 4) & 0xf, 0); /* mem, 32-bit */
	assert_int_equal(cfg_rd(e, 0x18, 4) & 0xf, 4); /* mem, 64-bit */

	check_vcap(e, 1, 0, 0x0000, 0x3c, 16);
	check_vcap(e, 2, 2, 0, NQ * 4096, 20);
	check_vcap(e, 3, 0, 0x1000, 1, 16);
	check_vcap(e, 4, 0, 0x2000, CFG_SIZE, 16);
	check_vcap(e, 5, 0, 0, 0, 20);
	assert_int_equal(cfg_rd(e, find_vcap(e, 2) + 16, 4), 4096);

	p = find_cap(e, 0x11);
	assert_true(p != 0);
	assert_int_equal(cfg_rd(e, p + 2, 2), VIRTIO_PCI_MSIX_VECTORS - 1);
	assert_int_equal(cfg_rd(e, p + 4, 4), 0x0000 | 4);
	assert_int_equal(cfg_rd(e, p + 8, 4), 0x0800 | 4);
	/* Only enable and function mask are writable. */
	cfg_wr(e, p + 2, 2, 0xffff);
	assert_int_equal(cfg_rd(e, p + 2, 2),
			 0xc000 | (VIRTIO_PCI_MSIX_VECTORS - 1));
	assert_true(e->vp.msix_enabled && e->vp.msix_masked);
	cfg_wr(e, p + 2, 2, 0);
	assert_false(e->vp.msix_enabled || e->vp.msix_masked);
	/* The notify cap is read-only. */
	cfg_wr(e, find_vcap(e, 2) + 8, 4, 0x1234);
	assert_int_equal(cfg_rd(e, find_vcap(e, 2) + 8, 4), 0);
}

static void test_class_codes(void **state)
{
	static const struct {
		uint16_t id;
		uint32_t class_code;
	} t[] = {
		{VIRTIO_ID_NET, 0x020000},
		{VIRTIO_ID_CONSOLE, 0x078000},
		{VIRTIO_ID_RNG, 0x00ff00},
	};
	enum { N = sizeof(t) / sizeof(t[0]) };
	struct env *e = *state;
	/* The bus keeps a slot per device: each needs its own struct. */
	struct fake_dev *d = calloc(N, sizeof(*d));
	struct virtio_pci *vp = calloc(N, sizeof(*vp));

	assert_true(d && vp);
	for (size_t i = 0; i < N; i++) {
		const uint8_t *c = vp[i].pci.cfg;
		bool dev_cap = false;
		uint8_t b[4];
		uint8_t devfn;

		/* rng: no device configuration, so no DEVICE_CFG cap. */
		fake_dev_init(&d[i], "virtio-x", t[i].id, 1,
			      t[i].id == VIRTIO_ID_RNG ? 0 : 8, &e->vm.mem);
		assert_int_equal(virtio_pci_init(&vp[i], &d[i].vd, &e->vm,
						 &e->bus, DOORBELL_IOEVENTFD,
						 NULL),
				 0);
		devfn = (uint8_t)(vp[i].pci.slot << 3);
		pci_cfg_read(&e->bus, devfn, 0x02, b, 2);
		assert_int_equal(le(b, 2), 0x1040 + t[i].id);
		pci_cfg_read(&e->bus, devfn, 0x09, b, 3);
		assert_int_equal(le(b, 3), t[i].class_code);
		pci_cfg_read(&e->bus, devfn, 0x2e, b, 2);
		assert_int_equal(le(b, 2), t[i].id);
		assert_int_equal(vp[i].pci.bar[2].size, 4096);
		for (uint32_t p = c[0x34]; p; p = c[p + 1])
			if (c[p] == 0x09 && c[p + 3] == 4)
				dev_cap = true;
		assert_int_equal(dev_cap, t[i].id != VIRTIO_ID_RNG);
	}
	for (size_t i = 0; i < N; i++) {
		virtio_pci_destroy(&vp[i]);
		fake_dev_destroy(&d[i]);
	}
	/* Still in their slots (the bus has no removal) but inert; the bus
	 * is destroyed before it could touch them again. */
	free(d);
	free(vp);
}

static void test_init_errors(void **state)
{
	struct env *e = *state;
	struct fake_dev d;
	struct virtio_pci vp;

	fake_dev_init(&d, "virtio-bad", VIRTIO_ID_RNG, 1, 0, &e->vm.mem);
	/* Poll mode needs a poller. */
	assert_int_equal(virtio_pci_init(&vp, &d.vd, &e->vm, &e->bus,
					 DOORBELL_POLL, NULL),
			 -EINVAL);
	d.vd.config_size = VIRTIO_PCI_DEVICE_MAX + 1;
	assert_int_equal(virtio_pci_init(&vp, &d.vd, &e->vm, &e->bus,
					 DOORBELL_IOEVENTFD, NULL),
			 -EINVAL);
	d.vd.config_size = 0;
	d.vd.num_queues = 0;
	assert_int_equal(virtio_pci_init(&vp, &d.vd, &e->vm, &e->bus,
					 DOORBELL_IOEVENTFD, NULL),
			 -EINVAL);
	d.vd.num_queues = VIRTIO_MAX_QUEUES + 1;
	assert_int_equal(virtio_pci_init(&vp, &d.vd, &e->vm, &e->bus,
					 DOORBELL_IOEVENTFD, NULL),
			 -EINVAL);
	d.vd.num_queues = 1;
	fake_dev_destroy(&d);
}

/* ---- feature negotiation ---- */

static void test_device_features(void **state)
{
	struct env *e = *state;
	uint64_t f;

	cc_wr(e, DFSEL, 4, 0);
	f = cc_rd(e, DF, 4);
	cc_wr(e, DFSEL, 4, 1);
	f |= cc_rd(e, DF, 4) << 32;
	assert_true(f & (1ULL << VIRTIO_F_VERSION_1));
	assert_true(f & (1ULL << VIRTIO_F_EVENT_IDX));
	assert_true(f & (1ULL << VIRTIO_F_INDIRECT_DESC));
	assert_true(f & (1ULL << 5));
	assert_true(f & (1ULL << 9));
	assert_false(f & (1ULL << 34)); /* transport bit from the device */
	assert_int_equal(f, (1ULL << 32) | (1ULL << 29) | (1ULL << 28) |
				    (1ULL << 5) | (1ULL << 9));
	assert_int_equal(cc_rd(e, DFSEL, 4), 1);
	cc_wr(e, DFSEL, 4, 2);
	assert_int_equal(cc_rd(e, DF, 4), 0);
	cc_wr(e, DFSEL, 4, 0xffffffff);
	assert_int_equal(cc_rd(e, DF, 4), 0);
	/* device_feature is read-only */
	cc_wr(e, DFSEL, 4, 0);
	cc_wr(e, DF, 4, 0);
	assert_int_equal(cc_rd(e, DF, 4),
			 (1u << 29) | (1u << 28) | (1u << 5) | (1u << 9));
}

static void test_features_ok_rules(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;

	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	/* No VERSION_1: FEATURES_OK does not stick. */
	set_features(e, 1ULL << 5);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	assert_int_equal(status(e), S_ACK | S_DRV);
	assert_int_equal(vd->guest_features, 0);
	/* A bit not offered: refused too. */
	set_features(e, (1ULL << 32) | (1ULL << 6));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	assert_int_equal(status(e), S_ACK | S_DRV);
	/* The masked transport bit counts as not offered. */
	set_features(e, (1ULL << 32) | (1ULL << 34));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	assert_int_equal(status(e), S_ACK | S_DRV);
	/* DRIVER_OK without FEATURES_OK is refused as well. */
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_DOK);
	assert_int_equal(status(e), S_ACK | S_DRV);
	assert_int_equal(e->dev.activates, 0);
	/* A subset with VERSION_1 is accepted. */
	set_features(e, (1ULL << 32) | (1ULL << 9) | (1ULL << 28));
	cc_wr(e, GFSEL, 4, 7);
	cc_wr(e, GF, 4, 0xffffffff); /* no such half: ignored */
	assert_int_equal(cc_rd(e, GF, 4), 0);
	cc_wr(e, GFSEL, 4, 0);
	assert_int_equal(cc_rd(e, GF, 4), (1u << 9) | (1u << 28));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK);
	assert_int_equal(vd->guest_features,
			 (1ULL << 32) | (1ULL << 9) | (1ULL << 28));
	/* After FEATURES_OK the driver features are frozen. */
	cc_wr(e, GF, 4, 0);
	assert_int_equal(cc_rd(e, GF, 4), (1u << 9) | (1u << 28));
	/* The driver cannot set NEEDS_RESET, nor clear bits. */
	cc_wr(e, STATUS, 1, VIRTIO_STATUS_NEEDS_RESET | S_ACK);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK);
}

/* ---- queues ---- */

static void test_queue_setup_and_driver_ok(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;

	assert_int_equal(cc_rd(e, NUMQ, 2), NQ);
	for (uint16_t q = 0; q < NQ; q++) {
		cc_wr(e, QSEL, 2, q);
		assert_int_equal(cc_rd(e, QSEL, 2), q);
		assert_int_equal(cc_rd(e, QSIZE, 2), QMAX);
		assert_int_equal(cc_rd(e, QNOFF, 2), q);
		assert_int_equal(cc_rd(e, QMSIX, 2), VIRTIO_MSI_NO_VECTOR);
		assert_int_equal(cc_rd(e, QENABLE, 2), 0);
	}
	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	set_features(e, (1ULL << 32) | (1ULL << 29));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);

	/* queue_size: powers of two up to the maximum only. */
	cc_wr(e, QSEL, 2, 1);
	cc_wr(e, QSIZE, 2, 0);
	assert_int_equal(cc_rd(e, QSIZE, 2), QMAX);
	cc_wr(e, QSIZE, 2, 24);
	assert_int_equal(cc_rd(e, QSIZE, 2), QMAX);
	cc_wr(e, QSIZE, 2, QMAX * 2);
	assert_int_equal(cc_rd(e, QSIZE, 2), QMAX);
	cc_wr(e, QSIZE, 2, 8);
	assert_int_equal(cc_rd(e, QSIZE, 2), 8);

	/* 64-bit addresses as halves and as one access. */
	cc_wr(e, QDESC, 4, 0x11223340);
	cc_wr(e, QDESC + 4, 4, 0x55667788);
	assert_int_equal(cc_rd(e, QDESC, 8), 0x5566778811223340ULL);
	cc_wr(e, QDESC, 8, 0);
	assert_int_equal(cc_rd(e, QDESC, 4), 0);

	setup_queue(e, 0, 16);
	setup_queue(e, 2, 32);
	/* queue 1 left disabled */
	cc_wr(e, QSEL, 2, 0);
	assert_int_equal(cc_rd(e, QENABLE, 2), 1);
	assert_int_equal(cc_rd(e, QDRIVER, 8), ring_base(0) + 0x2000);
	/* Once enabled, the queue's set-up is frozen. */
	cc_wr(e, QSIZE, 2, 4);
	cc_wr(e, QDESC, 4, 0x1000);
	assert_int_equal(cc_rd(e, QSIZE, 2), 16);
	assert_int_equal(cc_rd(e, QDESC, 8), ring_base(0));
	/* Writing 0 to queue_enable is ignored. */
	cc_wr(e, QENABLE, 2, 0);
	assert_int_equal(cc_rd(e, QENABLE, 2), 1);
	assert_false(vd->vq[0].enabled); /* not before DRIVER_OK */

	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK | S_DOK);
	assert_int_equal(e->dev.activates, 1);
	assert_true(vd->vq[0].enabled);
	assert_int_equal(vd->vq[0].size, 16);
	assert_int_equal(vd->vq[0].desc_gpa, ring_base(0));
	assert_int_equal(vd->vq[0].avail_gpa, ring_base(0) + 0x2000);
	assert_int_equal(vd->vq[0].used_gpa, ring_base(0) + 0x3000);
	assert_true(vd->vq[0].event_idx);
	assert_false(vd->vq[0].indirect);
	assert_false(vd->vq[1].enabled);
	assert_true(vd->vq[2].enabled);
	assert_int_equal(vd->vq[2].size, 32);
	assert_int_equal(vd->guest_features, (1ULL << 32) | (1ULL << 29));
	/* DRIVER_OK again does nothing more. */
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_int_equal(e->dev.activates, 1);

	/* A queue enabled after DRIVER_OK starts at once. */
	setup_queue(e, 1, 8);
	assert_true(vd->vq[1].enabled);
	assert_int_equal(vd->vq[1].size, 8);
}

static void test_bad_rings_need_reset(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;

	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	set_features(e, 1ULL << 32);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	setup_queue(e, 0, 16);
	/* queue 1: used ring outside guest RAM */
	cc_wr(e, QSEL, 2, 1);
	cc_wr(e, QDESC, 8, ring_base(1));
	cc_wr(e, QDRIVER, 8, ring_base(1) + 0x2000);
	cc_wr(e, QDEVICE, 8, RAM_SIZE - 8);
	cc_wr(e, QENABLE, 2, 1);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_true(status(e) & VIRTIO_STATUS_NEEDS_RESET);
	assert_true(status(e) & S_DOK);
	assert_true(virtio_needs_reset(vd));
	assert_int_equal(e->dev.activates, 0);
	assert_false(vd->vq[1].enabled);
	/* The config interrupt told the driver (INTx: ISR bit 1). */
	assert_int_equal(e->vp.isr & 2, 2);

	/* Reset and retry with a misaligned descriptor table. */
	cc_wr(e, STATUS, 1, 0);
	assert_int_equal(status(e), 0);
	assert_false(virtio_needs_reset(vd));
	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	set_features(e, 1ULL << 32);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	cc_wr(e, QSEL, 2, 0);
	cc_wr(e, QDESC, 8, ring_base(0) + 8);
	cc_wr(e, QDRIVER, 8, ring_base(0) + 0x2000);
	cc_wr(e, QDEVICE, 8, ring_base(0) + 0x3000);
	cc_wr(e, QENABLE, 2, 1);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_true(status(e) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(e->dev.activates, 0);

	/* Activation failing also ends in NEEDS_RESET. */
	cc_wr(e, STATUS, 1, 0);
	e->dev.activate_rc = -EIO;
	cc_wr(e, STATUS, 1, S_ACK | S_DRV);
	set_features(e, 1ULL << 32);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK);
	setup_queue(e, 0, 16);
	cc_wr(e, STATUS, 1, S_ACK | S_DRV | S_FOK | S_DOK);
	assert_int_equal(e->dev.activates, 1);
	assert_int_equal(status(e), S_ACK | S_DRV | S_FOK | S_DOK |
					    VIRTIO_STATUS_NEEDS_RESET);
}

static void test_reset_clears(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;
	int resets;

	bring_up(e);
	cc_wr(e, MSIXCFG, 2, 3);
	cc_wr(e, QSEL, 2, 1);
	cc_wr(e, QMSIX, 2, 2);
	cc_wr(e, DFSEL, 4, 1);
	e->vp.isr = 0;
	resets = e->dev.resets;
	cc_wr(e, STATUS, 1, 0);
	assert_int_equal(e->dev.resets, resets + 1);
	assert_int_equal(status(e), 0);
	assert_int_equal(vd->guest_features, 0);
	for (uint16_t q = 0; q < NQ; q++) {
		assert_false(vd->vq[q].enabled);
		cc_wr(e, QSEL, 2, q);
		assert_int_equal(cc_rd(e, QSIZE, 2), QMAX);
		assert_int_equal(cc_rd(e, QENABLE, 2), 0);
		assert_int_equal(cc_rd(e, QMSIX, 2), VIRTIO_MSI_NO_VECTOR);
		assert_int_equal(cc_rd(e, QDESC, 8), 0);
		assert_int_equal(cc_rd(e, QDRIVER, 8), 0);
		assert_int_equal(cc_rd(e, QDEVICE, 8), 0);
	}
	cc_wr(e, QSEL, 2, 0);
	assert_int_equal(cc_rd(e, MSIXCFG, 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(cc_rd(e, DFSEL, 4), 0);
	assert_int_equal(cc_rd(e, GFSEL, 4), 0);
	assert_int_equal(cc_rd(e, GF, 4), 0);
	/* Kicks are not served any more. */
	assert_false(vd->status & S_DOK);
}

static void test_queue_select_out_of_range(void **state)
{
	struct env *e = *state;
	static const uint16_t sel[] = {NQ, VIRTIO_MAX_QUEUES, 0x7fff, 0xffff};

	for (size_t i = 0; i < sizeof(sel) / sizeof(sel[0]); i++) {
		cc_wr(e, QSEL, 2, sel[i]);
		assert_int_equal(cc_rd(e, QSEL, 2), sel[i]);
		assert_int_equal(cc_rd(e, QSIZE, 2), 0);
		assert_int_equal(cc_rd(e, QENABLE, 2), 0);
		assert_int_equal(cc_rd(e, QNOFF, 2), 0);
		assert_int_equal(cc_rd(e, QMSIX, 2), VIRTIO_MSI_NO_VECTOR);
		assert_int_equal(cc_rd(e, QDESC, 8), 0);
		/* Writes go nowhere. */
		cc_wr(e, QSIZE, 2, 8);
		cc_wr(e, QMSIX, 2, 1);
		cc_wr(e, QENABLE, 2, 1);
		cc_wr(e, QDESC, 8, 0x1000);
		cc_wr(e, QDRIVER, 8, 0x2000);
		cc_wr(e, QDEVICE, 8, 0x3000);
		assert_int_equal(cc_rd(e, QSIZE, 2), 0);
		assert_int_equal(cc_rd(e, QENABLE, 2), 0);
		assert_int_equal(cc_rd(e, QDEVICE, 8), 0);
	}
	for (uint16_t q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		assert_false(e->vp.q[q].enable);
		assert_int_equal(e->vp.q[q].desc, 0);
	}
}

/* ---- odd sizes and offsets ---- */

static void test_common_odd_accesses(void **state)
{
	struct env *e = *state;
	uint64_t v;

	/* Composite reads across fields. */
	cc_wr(e, QSEL, 2, 2);
	v = cc_rd(e, MSIXCFG, 8);
	assert_int_equal(v & 0xffff, VIRTIO_MSI_NO_VECTOR);
	assert_int_equal((v >> 16) & 0xffff, NQ);
	assert_int_equal((v >> 32) & 0xff, 0);	 /* status */
	assert_int_equal((v >> 48) & 0xffff, 2); /* queue_select */
	v = cc_rd(e, QSEL, 4);			 /* select + size */
	assert_int_equal(v, 2 | (QMAX << 16));
	assert_int_equal(cc_rd(e, QSIZE + 1, 1), QMAX >> 8);
	assert_int_equal(cc_rd(e, QNOFF - 1, 4) >> 8, 2); /* notify_off */
	/* A byte write into the middle of a field merges. */
	cc_wr(e, QSEL, 2, 0x0100);
	assert_int_equal(cc_rd(e, QSEL, 2), 0x100);
	cc_wr(e, QSEL + 1, 1, 0);
	assert_int_equal(cc_rd(e, QSEL, 2), 0);
	/* One write covering queue_select and queue_size. */
	cc_wr(e, QSEL, 4, 1 | (8u << 16));
	assert_int_equal(e->vp.q[1].size, 8);
	/* queue_desc written a byte at a time. */
	for (uint32_t i = 0; i < 8; i++)
		cc_wr(e, QDESC + i, 1, 0x10 + i);
	assert_int_equal(cc_rd(e, QDESC, 8), 0x1716151413121110ULL);
	/* Unaligned 8-byte read across queue_desc and queue_driver. */
	assert_int_equal(cc_rd(e, QDESC + 4, 8) & 0xffffffff, 0x17161514);
	/* queue_notify_data / queue_reset and beyond read zero. */
	assert_int_equal(cc_rd(e, 0x38, 4), 0);
	assert_int_equal(cc_rd(e, 0x3c, 8), 0);
	assert_int_equal(cc_rd(e, 0xff8, 8), 0);
	cc_wr(e, 0x38, 4, 0xffffffff);
	cc_wr(e, 0x100, 8, ~0ULL);
	/* Every offset, every size: no crash, read-only fields unchanged. */
	for (uint32_t off = 0; off < 0x40; off++)
		for (uint32_t len = 1; len <= 8; len *= 2)
			(void)cc_rd(e, off, len);
	/* Accesses straddling region boundaries. */
	assert_int_equal(cc_rd(e, 0xffc, 8), 0);
	(void)cc_rd(e, 0x1ffe, 4); /* ISR bytes, then device config */
	assert_int_equal(cc_rd(e, 0x1ffc, 8) >> 32, 0xa3a2a1a0);
	/* Past the BAR: not ours, the registry says so. */
	{
		uint8_t b[8];

		assert_false(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO,
					    e->bar0 + 0x3ffc, b, 8, false, 0));
	}
	assert_int_equal(cc_rd(e, NUMQ, 2), NQ);
}

/* ---- ISR and INTx ---- */

static void test_isr_intx(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;
	uint32_t gsi = e->vp.pci.intx_gsi;

	assert_true(gsi >= 16 && gsi < 24);
	bring_up(e);
	assert_int_equal(fk.line[gsi], 0);
	vd->transport.notify_queue(vd->transport.opaque, 1);
	assert_int_equal(fk.line[gsi], 1);
	assert_int_equal(e->vp.interrupts, 1);
	vd->transport.notify_config(vd->transport.opaque);
	assert_int_equal(fk.line[gsi], 1);
	/* A read not at the ISR byte does not clear it. */
	assert_int_equal(cc_rd(e, 0x1001, 1), 0);
	assert_int_equal(fk.line[gsi], 1);
	assert_int_equal(cc_rd(e, 0x1000, 4), 3);
	assert_int_equal(fk.line[gsi], 0);
	assert_int_equal(cc_rd(e, 0x1000, 1), 0);
	/* Writes to the ISR are ignored. */
	cc_wr(e, 0x1000, 1, 0xff);
	assert_int_equal(cc_rd(e, 0x1000, 1), 0);
	/* Out-of-range queues raise nothing. */
	vd->transport.notify_queue(vd->transport.opaque, NQ);
	assert_int_equal(fk.line[gsi], 0);
	vd->transport.notify_queue(vd->transport.opaque, 0);
	assert_int_equal(cc_rd(e, 0x1000, 1), 1);
	/* Counted: assertions of the line (the config one found it high). */
	assert_int_equal(e->vp.interrupts, 2);
	assert_int_equal(fk.msi_sent, 0);
}

/* ---- MSI-X ---- */

static uint64_t msix_entry(struct env *e, unsigned int v)
{
	return e->bar4 + (uint64_t)v * 16;
}

static void msix_program(struct env *e, unsigned int v, uint64_t addr,
			 uint32_t data, bool masked)
{
	mmio_wr(e, msix_entry(e, v), 4, (uint32_t)addr);
	mmio_wr(e, msix_entry(e, v) + 4, 4, (uint32_t)(addr >> 32));
	mmio_wr(e, msix_entry(e, v) + 8, 4, data);
	mmio_wr(e, msix_entry(e, v) + 12, 4, masked);
}

static uint64_t read_eventfd(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static int irqfd_of_gsi(int gsi)
{
	for (int i = 0; i < fk.nirqfd; i++)
		if ((int)fk.irqfd[i].gsi == gsi)
			return fk.irqfd[i].fd;
	return -1;
}

static void test_msix(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;
	uint32_t cap = e->vp.cap_msix;
	int gsi, fd;

	bring_up(e);
	/* Reset state of the table: all masked, zero. */
	for (unsigned int v = 0; v < VIRTIO_PCI_MSIX_VECTORS; v++) {
		assert_int_equal(mmio_rd(e, msix_entry(e, v), 8), 0);
		assert_int_equal(mmio_rd(e, msix_entry(e, v) + 12, 4), 1);
	}
	/* Vector registers: valid ones stick, others read NO_VECTOR. */
	cc_wr(e, MSIXCFG, 2, 0);
	assert_int_equal(cc_rd(e, MSIXCFG, 2), 0);
	cc_wr(e, MSIXCFG, 2, VIRTIO_PCI_MSIX_VECTORS);
	assert_int_equal(cc_rd(e, MSIXCFG, 2), VIRTIO_MSI_NO_VECTOR);
	cc_wr(e, MSIXCFG, 2, 0);
	cc_wr(e, QSEL, 2, 1);
	cc_wr(e, QMSIX, 2, 0x1234);
	assert_int_equal(cc_rd(e, QMSIX, 2), VIRTIO_MSI_NO_VECTOR);
	cc_wr(e, QMSIX, 2, 2);
	assert_int_equal(cc_rd(e, QMSIX, 2), 2);
	cc_wr(e, QSEL, 2, 0);
	cc_wr(e, QMSIX, 2, VIRTIO_PCI_MSIX_VECTORS - 1);
	assert_int_equal(cc_rd(e, QMSIX, 2), VIRTIO_PCI_MSIX_VECTORS - 1);
	/* queue 2 keeps NO_VECTOR */

	msix_program(e, 2, 0xfee00000, 0x4041, true);
	assert_int_equal(mmio_rd(e, msix_entry(e, 2), 8), 0xfee00000);
	assert_int_equal(mmio_rd(e, msix_entry(e, 2) + 8, 4), 0x4041);
	assert_int_equal(mmio_rd(e, msix_entry(e, 2) + 8, 8), 0x100004041ULL);
	assert_int_equal(fk.route_adds, 0);

	/* Enable MSI-X (config space); entry 2 still masked. */
	cfg_wr(e, cap + 2, 2, 0x8000);
	assert_true(e->vp.msix_enabled);
	vd->transport.notify_queue(vd->transport.opaque, 1);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 8), 1u << 2); /* PBA */
	assert_int_equal(fk.route_adds, 0);
	assert_int_equal(fk.line[e->vp.pci.intx_gsi], 0); /* not INTx */
	assert_int_equal(cc_rd(e, 0x1000, 1), 0);
	/* The PBA is read-only. */
	mmio_wr(e, e->bar4 + 0x800, 8, 0);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 1), 1u << 2);

	/* Unmask: route + irqfd made, the pending interrupt delivered. */
	mmio_wr(e, msix_entry(e, 2) + 12, 4, 0);
	assert_int_equal(fk.route_adds, 1);
	gsi = e->vp.msix[2].gsi;
	assert_true(gsi >= FK_GSI_BASE);
	assert_int_equal(fk.route[gsi - FK_GSI_BASE].addr, 0xfee00000);
	assert_int_equal(fk.route[gsi - FK_GSI_BASE].data, 0x4041);
	fd = irqfd_of_gsi(gsi);
	assert_true(fd >= 0);
	assert_int_equal(read_eventfd(fd), 1);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 8), 0);
	assert_int_equal(e->vp.interrupts, 1);

	/* Unmasked: straight to the irqfd. */
	vd->transport.notify_queue(vd->transport.opaque, 1);
	vd->transport.notify_queue(vd->transport.opaque, 1);
	assert_int_equal(read_eventfd(fd), 2);
	assert_int_equal(e->vp.interrupts, 3);

	/* Rewriting an unmasked entry updates its route. */
	mmio_wr(e, msix_entry(e, 2) + 8, 4, 0x4042);
	assert_int_equal(fk.route_sets, 1);
	assert_int_equal(fk.route[gsi - FK_GSI_BASE].data, 0x4042);
	/* A masked rewrite waits for the unmask. */
	mmio_wr(e, msix_entry(e, 2) + 12, 4, 1);
	mmio_wr(e, msix_entry(e, 2) + 8, 4, 0x4043);
	assert_int_equal(fk.route_sets, 1);
	mmio_wr(e, msix_entry(e, 2) + 12, 4, 0);
	assert_int_equal(fk.route_sets, 2);
	assert_int_equal(fk.route[gsi - FK_GSI_BASE].data, 0x4043);
	assert_int_equal(fk.route_adds, 1);

	/* Function mask: pending, then delivered on unmask. */
	cfg_wr(e, cap + 3, 1, 0xc0);
	assert_true(e->vp.msix_masked);
	vd->transport.notify_queue(vd->transport.opaque, 1);
	assert_int_equal(read_eventfd(fd), 0);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 4), 1u << 2);
	cfg_wr(e, cap + 3, 1, 0x80);
	assert_int_equal(read_eventfd(fd), 1);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 4), 0);

	/* NO_VECTOR: nothing at all. */
	vd->transport.notify_queue(vd->transport.opaque, 2);
	assert_int_equal(read_eventfd(fd), 0);
	assert_int_equal(fk.msi_sent, 0);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 8), 0);

	/* The last vector (queue 0), with no route left: KVM_SIGNAL_MSI. */
	fk.fail_route = true;
	msix_program(e, VIRTIO_PCI_MSIX_VECTORS - 1, 0xfee01000, 0x55, false);
	assert_int_equal(e->vp.msix[VIRTIO_PCI_MSIX_VECTORS - 1].gsi, -1);
	vd->transport.notify_queue(vd->transport.opaque, 0);
	assert_int_equal(fk.msi_sent, 1);
	assert_int_equal(fk.msi_addr, 0xfee01000);
	assert_int_equal(fk.msi_data, 0x55);
	fk.fail_route = false;

	/* Config changes use msix_config (vector 0, masked: pending). */
	vd->transport.notify_config(vd->transport.opaque);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x800, 1) & 1, 1);

	/* Odd table accesses: bytes, straddling entries, past the table. */
	mmio_wr(e, msix_entry(e, 3) + 1, 1, 0xab);
	assert_int_equal(mmio_rd(e, msix_entry(e, 3), 4), 0xab00);
	mmio_wr(e, msix_entry(e, 3) + 12, 8, 0xffffffff00000001ULL);
	assert_int_equal(mmio_rd(e, msix_entry(e, 4), 4), 0xffffffff);
	assert_int_equal(mmio_rd(e, msix_entry(e, 3) + 12, 4), 1);
	assert_int_equal(mmio_rd(e, msix_entry(e, VIRTIO_PCI_MSIX_VECTORS), 8),
			 0);
	mmio_wr(e, e->bar4 + 0x7fc, 8, ~0ULL); /* table end into PBA */
	assert_int_equal(mmio_rd(e, e->bar4 + 0x808, 8), 0);
	assert_int_equal(mmio_rd(e, e->bar4 + 0xff8, 8), 0);
	assert_int_equal(mmio_rd(e, e->bar4 + 0x7ff, 2) >> 8,
			 mmio_rd(e, e->bar4 + 0x800, 1));

	/* Disabling MSI-X brings INTx back. */
	cfg_wr(e, cap + 2, 2, 0);
	vd->transport.notify_queue(vd->transport.opaque, 1);
	assert_int_equal(fk.line[e->vp.pci.intx_gsi], 1);
	assert_int_equal(cc_rd(e, 0x1000, 1), 1);
}

/* ---- device configuration ---- */

static void test_device_cfg_bounds(void **state)
{
	struct env *e = *state;
	struct fake_dev *d = &e->dev;

	assert_int_equal(cc_rd(e, 0x2000, 4), 0xa3a2a1a0);
	assert_int_equal(d->cfg_off, 0);
	assert_int_equal(d->cfg_len, 4);
	assert_int_equal(cc_rd(e, 0x2000 + 5, 2), 0xa6a5);
	assert_int_equal(cc_rd(e, 0x2000 + 16, 8), 0xb7b6b5b4b3b2b1b0ULL);
	/* Straddling the end: the rest reads zero, the device sees less. */
	assert_int_equal(cc_rd(e, 0x2000 + 20, 8), 0xb7b6b5b4);
	assert_int_equal(d->cfg_off, 20);
	assert_int_equal(d->cfg_len, 4);
	/* Wholly past the end: the device is not asked. */
	d->cfg_reads = 0;
	assert_int_equal(cc_rd(e, 0x2000 + CFG_SIZE, 4), 0);
	assert_int_equal(cc_rd(e, 0x3ff8, 8), 0);
	assert_int_equal(d->cfg_reads, 0);
	/* Writes likewise. */
	cc_wr(e, 0x2000 + 2, 2, 0x1234);
	assert_int_equal(d->config[2], 0x34);
	assert_int_equal(d->config[3], 0x12);
	cc_wr(e, 0x2000 + 22, 8, 0x1122334455667788ULL);
	assert_int_equal(d->cfg_len, 2);
	assert_int_equal(d->config[22], 0x88);
	assert_int_equal(d->config[23], 0x77);
	d->cfg_writes = 0;
	cc_wr(e, 0x2000 + CFG_SIZE, 4, 0);
	cc_wr(e, 0x3fff, 1, 0);
	assert_int_equal(d->cfg_writes, 0);
}

/* ---- the PCI_CFG window ---- */

static void window(struct env *e, uint8_t bar, uint32_t off, uint32_t len)
{
	uint32_t cap = e->vp.cap_cfg;

	cfg_wr(e, cap + 4, 1, bar);
	cfg_wr(e, cap + 8, 4, off);
	cfg_wr(e, cap + 12, 4, len);
}

static void test_pci_cfg_window(void **state)
{
	struct env *e = *state;
	uint32_t cap = e->vp.cap_cfg;
	uint32_t data = cap + 16;

	assert_int_equal(cap, find_vcap(e, 5));
	window(e, 0, NUMQ, 2);
	assert_int_equal(cfg_rd(e, data, 2), NQ);
	window(e, 0, 0x2000, 4);
	assert_int_equal(cfg_rd(e, data, 4), 0xa3a2a1a0);
	/* A write through the window. */
	window(e, 0, QSEL, 2);
	cfg_wr(e, data, 2, 2);
	assert_int_equal(cc_rd(e, QSEL, 2), 2);
	assert_int_equal(cfg_rd(e, data, 2), 2); /* re-latched */
	window(e, 0, QNOFF, 2);
	assert_int_equal(cfg_rd(e, data, 2), 2);
	/* MSI-X table through the window. */
	window(e, 4, 16 + 8, 4);
	cfg_wr(e, data, 4, 0x77);
	assert_int_equal(mmio_rd(e, msix_entry(e, 1) + 8, 4), 0x77);
	/* Invalid windows read zero and write nothing. */
	window(e, 1, 0, 4);
	assert_int_equal(cfg_rd(e, data, 4), 0);
	window(e, 0, 0x3ffe, 4);
	assert_int_equal(cfg_rd(e, data, 4), 0);
	window(e, 0, 0, 3);
	assert_int_equal(cfg_rd(e, data, 4), 0);
	window(e, 0, 0, 8);
	cfg_wr(e, data, 4, 0xffffffff);
	assert_int_equal(cc_rd(e, DFSEL, 4), 0);
	/* The ISR seen through the window is not cleared by the latch. */
	bring_up(e);
	e->dev.vd.transport.notify_queue(e->dev.vd.transport.opaque, 0);
	window(e, 0, 0x1000, 1);
	assert_int_equal(cfg_rd(e, data, 1), 1);
	assert_int_equal(cc_rd(e, 0x1000, 1), 1);
	/* A doorbell through the window kicks. */
	window(e, 2, 4096, 2);
	cfg_wr(e, data, 2, 1);
	assert_true(wait_kicks(&e->dev, 1, 1));
}

/* ---- ioeventfd doorbells ---- */

static int ioev_fd(uint64_t gpa, uint32_t len)
{
	for (int i = 0; i < fk.nio; i++)
		if (fk.io[i].gpa == gpa && fk.io[i].len == len)
			return fk.io[i].fd;
	return -1;
}

static void test_ioeventfd_doorbells(void **state)
{
	struct env *e = *state;
	uint64_t one = 1;
	int fd;

	assert_int_equal(fk.nio, NQ);
	for (uint16_t q = 0; q < NQ; q++)
		assert_true(ioev_fd(e->bar2 + q * 4096ULL, 0) >= 0);
	bring_up(e);
	/* KVM signals the eventfd: the kick thread calls queue_kick. */
	fd = ioev_fd(e->bar2 + 2 * 4096ULL, 0);
	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
	assert_true(wait_kicks(&e->dev, 2, 1));
	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
	assert_true(wait_kicks(&e->dev, 2, 2));
	/* A write KVM did not catch (odd size/offset) exits to us. */
	mmio_wr(e, e->bar2 + 4096 + 1, 1, 0);
	assert_true(wait_kicks(&e->dev, 1, 1));
	mmio_wr(e, e->bar2, 8, 0);
	assert_true(wait_kicks(&e->dev, 0, 1));
	/* Pages past the last queue and reads do nothing. */
	mmio_wr(e, e->bar2 + NQ * 4096ULL, 2, NQ);
	assert_int_equal(mmio_rd(e, e->bar2, 4), 0);
	assert_int_equal(__atomic_load_n(&e->vp.kicks, __ATOMIC_RELAXED), 4);

	/* The guest moves BAR 2 (64-bit): the ioeventfds follow. */
	cfg_wr(e, 0x18, 4, 0xd0000000);
	assert_int_equal(fk.nio, NQ);
	for (uint16_t q = 0; q < NQ; q++) {
		assert_true(ioev_fd(0xd0000000ULL + q * 4096ULL, 0) >= 0);
		assert_int_equal(ioev_fd(e->bar2 + q * 4096ULL, 0), -1);
	}
	assert_false(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO, e->bar2,
				    (uint8_t[2]){0}, 2, true, 0));
	mmio_wr(e, 0xd0000000ULL + 4096, 2, 1);
	assert_true(wait_kicks(&e->dev, 1, 2));
	/* Memory decode off: everything goes. */
	cfg_wr(e, 0x04, 2, 0x4);
	assert_int_equal(fk.nio, 0);
	assert_false(e->vp.bar_on[0] || e->vp.bar_on[2] || e->vp.bar_on[4]);
	cfg_wr(e, 0x04, 2, 0x6);
	assert_int_equal(fk.nio, NQ);
	assert_true(e->vp.bar_on[0] && e->vp.bar_on[2] && e->vp.bar_on[4]);
}

/* KVM without any-length ioeventfds: 2- and 4-byte ones instead. */
static void test_ioeventfd_fixed_lengths(void **state)
{
	struct env *e = *state;

	fk.fail_len0 = true;
	cfg_wr(e, 0x04, 2, 0x4);
	cfg_wr(e, 0x04, 2, 0x6);
	assert_int_equal(fk.nio, 2 * NQ);
	for (uint16_t q = 0; q < NQ; q++) {
		assert_true(ioev_fd(e->bar2 + q * 4096ULL, 2) >= 0);
		assert_true(ioev_fd(e->bar2 + q * 4096ULL, 4) >= 0);
	}
	cfg_wr(e, 0x04, 2, 0x4);
	assert_int_equal(fk.nio, 0);
}

/* ---- poll mode ---- */

/*
 * What a driver does (4.1.5.2): a 16-bit write of the queue index at
 * cap.offset + queue_notify_off * notify_off_multiplier of BAR 2. (An
 * atomic store only to tell the thread sanitizer it is meant to race.)
 */
static void guest_doorbell(uint8_t *bar2, uint16_t q)
{
	__atomic_store_n((uint16_t *)(bar2 + (size_t)q * 4096), q,
			 __ATOMIC_RELAXED);
}

static void test_poll_doorbells(void **state)
{
	struct env *e = *state;
	volatile uint32_t *w;
	struct doorbell_poller_stats st;
	int slot;

	assert_int_equal(fk.nio, 0); /* no ioeventfds in poll mode */
	assert_int_equal(fk_slots_used(), 1);
	slot = e->vp.doorbell_slot - FK_SLOT_BASE;
	assert_true(slot >= 0 && slot < 8);
	assert_int_equal(fk.slot[slot].gpa, e->bar2);
	assert_ptr_equal(fk.slot[slot].hva, e->vp.doorbell_mem);
	assert_int_equal(fk.slot[slot].size, e->vp.pci.bar[2].size);
	for (uint16_t q = 0; q < NQ; q++) {
		w = (volatile uint32_t *)(e->vp.doorbell_mem + q * 4096);
		assert_int_equal(*w, DOORBELL_SENTINEL);
	}
	doorbell_poller_get_stats(e->poller, &st);
	assert_int_equal(st.entries, NQ);

	bring_up(e);
	/* The guest's notification: a 16-bit write of the queue index. */
	guest_doorbell(e->vp.doorbell_mem, 1);
	assert_true(wait_kicks(&e->dev, 1, 1));
	guest_doorbell(e->vp.doorbell_mem, 0);
	assert_true(wait_kicks(&e->dev, 0, 1));
	guest_doorbell(e->vp.doorbell_mem, 1);
	assert_true(wait_kicks(&e->dev, 1, 2));
	/* A doorbell that exited anyway (no memslot) reaches the poller. */
	mmio_wr(e, e->bar2 + 2 * 4096, 2, 2);
	assert_true(wait_kicks(&e->dev, 2, 1));
	assert_true(__atomic_load_n(&e->vp.kicks, __ATOMIC_RELAXED) >= 4);

	/* BAR moves remap the slot. */
	cfg_wr(e, 0x18, 4, 0xd0000000);
	assert_int_equal(fk_slots_used(), 1);
	assert_int_equal(fk.unmaps, 1);
	slot = e->vp.doorbell_slot - FK_SLOT_BASE;
	assert_int_equal(fk.slot[slot].gpa, 0xd0000000ULL);
	cfg_wr(e, 0x04, 2, 0x4);
	assert_int_equal(fk_slots_used(), 0);
	assert_int_equal(e->vp.doorbell_slot, -1);

	/* Destroy leaves the poller. */
	virtio_pci_destroy(&e->vp);
	e->destroyed = true;
	doorbell_poller_get_stats(e->poller, &st);
	assert_int_equal(st.entries, 0);
}

/* Doorbells written before DRIVER_OK are consumed, not delivered. */
static void test_poll_gated_before_driver_ok(void **state)
{
	struct env *e = *state;
	volatile uint32_t *w = (volatile uint32_t *)e->vp.doorbell_mem;
	uint64_t end = now_ns() + WAIT_NS;

	guest_doorbell(e->vp.doorbell_mem, 0);
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != DOORBELL_SENTINEL &&
	       now_ns() < end)
		sched_yield();
	assert_int_equal(__atomic_load_n(w, __ATOMIC_ACQUIRE),
			 DOORBELL_SENTINEL);
	assert_int_equal(kicks_of(&e->dev, 0), 0);
	bring_up(e);
	guest_doorbell(e->vp.doorbell_mem, 0);
	assert_true(wait_kicks(&e->dev, 0, 1));
}

/* ---- the doorbell poller on its own ---- */

struct hammer {
	volatile uint32_t *word;
	bool stop;
	uint64_t writes;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;

	while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(h->word, 0, __ATOMIC_RELEASE);
		h->writes++;
		sched_yield();
	}
	return NULL;
}

static void test_poller_kicks_and_removal(void **state)
{
	struct doorbell_poller *p = doorbell_poller_create();
	struct fake_dev *a = calloc(1, sizeof(*a));
	struct fake_dev *b = calloc(1, sizeof(*b));
	uint32_t words[4] = {DOORBELL_SENTINEL, DOORBELL_SENTINEL,
			     DOORBELL_SENTINEL, DOORBELL_SENTINEL};
	uint64_t counted = 0;
	struct hammer h = {.word = &words[0]};
	struct doorbell_poller_stats st;
	pthread_t t;
	int ak;

	(void)state;
	assert_non_null(p);
	fake_dev_init(a, "virtio-a", VIRTIO_ID_RNG, 2, 0, NULL);
	fake_dev_init(b, "virtio-b", VIRTIO_ID_RNG, 2, 0, NULL);
	a->vd.status = b->vd.status = S_ACK | S_DRV | S_FOK | S_DOK;
	assert_int_equal(
		doorbell_poller_add_counted(p, &words[0], &a->vd, 0, &counted),
		0);
	assert_int_equal(doorbell_poller_add(p, &words[1], &a->vd, 1), 0);
	assert_int_equal(doorbell_poller_add(p, &words[2], &b->vd, 0), 0);
	assert_int_equal(doorbell_poller_add(p, &words[3], &b->vd, 1), 0);
	assert_int_equal(doorbell_poller_add(NULL, &words[3], &b->vd, 1),
			 -EINVAL);

	__atomic_store_n(&words[1], 1, __ATOMIC_RELEASE);
	assert_true(wait_kicks(a, 1, 1));
	__atomic_store_n(&words[0], 0, __ATOMIC_RELEASE);
	assert_true(wait_kicks(a, 0, 1));
	assert_int_equal(__atomic_load_n(&counted, __ATOMIC_RELAXED), 1);
	__atomic_store_n(&words[3], 0x0001, __ATOMIC_RELEASE);
	assert_true(wait_kicks(b, 1, 1));
	assert_int_equal(kicks_of(b, 0), 0);

	/* Remove A while another thread keeps ringing its doorbell. */
	assert_int_equal(pthread_create(&t, NULL, hammer_thread, &h), 0);
	assert_true(wait_kicks(a, 0, 3));
	doorbell_poller_remove_device(p, &a->vd);
	__atomic_store_n(&a->removed, true, __ATOMIC_RELEASE);
	ak = kicks_of(a, 0);
	/* Let the hammer go on for a few poller rounds, then stop it. */
	__atomic_store_n(&words[2], 0, __ATOMIC_RELEASE);
	assert_true(wait_kicks(b, 0, 1));
	__atomic_store_n(&h.stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	assert_true(h.writes > 0);
	/* One more ring of A, then prove the thread went on scanning. */
	__atomic_store_n(&words[0], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&words[2], 0, __ATOMIC_RELEASE);
	assert_true(wait_kicks(b, 0, 2));
	assert_int_equal(a->kicks_after_remove, 0);
	assert_int_equal(kicks_of(a, 0), ak);
	/* A's write stays unconsumed. */
	assert_int_equal(__atomic_load_n(&words[0], __ATOMIC_ACQUIRE), 0);
	doorbell_poller_get_stats(p, &st);
	assert_int_equal(st.entries, 2);
	assert_true(st.kicks >= 5);
	assert_true(st.rounds > 0);

	/* Not serving (no DRIVER_OK, or NEEDS_RESET): consumed silently. */
	b->vd.status =
		S_ACK | S_DRV | S_FOK | S_DOK | VIRTIO_STATUS_NEEDS_RESET;
	__atomic_store_n(&words[3], 1, __ATOMIC_RELEASE);
	{
		uint64_t end = now_ns() + WAIT_NS;

		while (__atomic_load_n(&words[3], __ATOMIC_ACQUIRE) !=
			       DOORBELL_SENTINEL &&
		       now_ns() < end)
			sched_yield();
	}
	assert_int_equal(__atomic_load_n(&words[3], __ATOMIC_ACQUIRE),
			 DOORBELL_SENTINEL);
	assert_int_equal(kicks_of(b, 1), 1);

	doorbell_poller_remove_device(p, &b->vd);
	doorbell_poller_get_stats(p, &st);
	assert_int_equal(st.entries, 0);
	doorbell_poller_destroy(p);
	fake_dev_destroy(a);
	fake_dev_destroy(b);
	free(a);
	free(b);
}

/* After the idle spin the thread sleeps; a doorbell still gets through. */
static void test_poller_backoff(void **state)
{
	struct doorbell_poller *p = doorbell_poller_create();
	struct fake_dev *a = calloc(1, sizeof(*a));
	uint32_t word = DOORBELL_SENTINEL;
	struct doorbell_poller_stats st;
	uint64_t end = now_ns() + WAIT_NS;

	(void)state;
	assert_non_null(p);
	fake_dev_init(a, "virtio-a", VIRTIO_ID_RNG, 1, 0, NULL);
	a->vd.status = S_DOK | S_FOK;
	doorbell_poller_set_backoff(p, 0, 20, 200);
	assert_int_equal(doorbell_poller_add(p, &word, &a->vd, 0), 0);
	do {
		doorbell_poller_get_stats(p, &st);
		sched_yield();
	} while (st.sleeps < 3 && now_ns() < end);
	assert_true(st.sleeps >= 3);
	__atomic_store_n(&word, 0, __ATOMIC_RELEASE);
	assert_true(wait_kicks(a, 0, 1));
	/* Pure busy polling: the sleeps stop. */
	doorbell_poller_set_backoff(p, 0, 0, 0);
	__atomic_store_n(&word, 0, __ATOMIC_RELEASE);
	assert_true(wait_kicks(a, 0, 2));
	doorbell_poller_destroy(p); /* with an entry still registered */
	fake_dev_destroy(a);
	free(a);
}

/* ---- destroy ---- */

static void test_destroy_releases_everything(void **state)
{
	struct env *e = *state;
	struct virtio_device *vd = &e->dev.vd;
	uint32_t cap = e->vp.cap_msix;
	int resets;
	uint8_t b[4];

	bring_up(e);
	cfg_wr(e, cap + 2, 2, 0x8000);
	msix_program(e, 0, 0xfee00000, 0x30, false);
	msix_program(e, 1, 0xfee00000, 0x31, false);
	assert_int_equal(fk_routes_used(), 2);
	assert_int_equal(fk.nirqfd, 2);
	assert_int_equal(fk.nio, NQ);
	resets = e->dev.resets;

	virtio_pci_destroy(&e->vp);
	e->destroyed = true;
	assert_int_equal(e->dev.resets, resets + 1); /* quiesced */
	assert_false(vd->vq[0].enabled);
	assert_int_equal(fk.nio, 0);
	assert_int_equal(fk.nirqfd, 0);
	assert_int_equal(fk_routes_used(), 0);
	assert_false(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO, e->bar0, b, 4,
				    false, 0));
	assert_false(ioreg_dispatch(&e->vm.io, IO_SPACE_MMIO, e->bar4, b, 4,
				    false, 0));
	/* The device may still call its transport: a no-op now. */
	vd->transport.notify_queue(vd->transport.opaque, 0);
	vd->transport.notify_config(vd->transport.opaque);
	/* Config writes no longer reach the transport. */
	cfg_wr(e, cap + 2, 2, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pci_identity, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_class_codes, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_init_errors, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_device_features, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_features_ok_rules,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_queue_setup_and_driver_ok,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_bad_rings_need_reset,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_reset_clears, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_queue_select_out_of_range,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_common_odd_accesses,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_isr_intx, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_msix, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_device_cfg_bounds,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_pci_cfg_window, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_ioeventfd_doorbells,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ioeventfd_fixed_lengths,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_poll_doorbells,
						env_setup_poll, env_teardown),
		cmocka_unit_test_setup_teardown(
			test_poll_gated_before_driver_ok, env_setup_poll,
			env_teardown),
		cmocka_unit_test(test_poller_kicks_and_removal),
		cmocka_unit_test(test_poller_backoff),
		cmocka_unit_test_setup_teardown(
			test_destroy_releases_everything, env_setup,
			env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
