/*
 * cluster/vmlink.c - one VM over the nodes (see vmlink.h): forwarding of
 * port I/O, MMIO and PCI config accesses to a device's home node and their
 * execution there on a worker thread; APIC messages, EOIs and device lines
 * between the nodes' interrupt controllers; the start barrier.
 *
 * Wire formats are fixed-size little-endian structs (every node is x86-64);
 * every field a peer sends is checked before use.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cluster/netq.h"
#include "cluster/vmlink.h"
#include "core/vcpu.h"
#include "core/vm_io.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/workq.h"

#define WAIT_SLICE_MS 100
#define DB_PAGE 4096ULL /* one doorbell page per virtqueue */
#define DB_MAX_PAGES 16 /* remote doorbells watched per slot */
#define GUEST_4G (1ULL << 32)

struct io_wire {
	uint64_t id;
	uint64_t addr;
	int32_t vcpu;
	uint8_t space, len, write, oneway;
	uint8_t data[8];
} __attribute__((packed));

struct io_resp_wire {
	uint64_t id;
	uint64_t db_base; /* the doorbell BAR the access hit, if any */
	uint32_t db_len;
	uint8_t ok;
	uint8_t pad[3];
	uint8_t data[8];
} __attribute__((packed));

struct cfg_wire {
	uint64_t id;
	uint32_t off;
	int32_t vcpu;
	uint8_t devfn, len, write, pad;
	uint8_t data[8];
} __attribute__((packed));

enum irq_flags {
	IRQF_LOGICAL = 1,
	IRQF_LEVEL = 2,
	IRQF_ASSERT = 4,
	IRQF_X2APIC = 8
};

struct irq_wire {
	int32_t vcpu;
	uint32_t dest;
	int32_t src_vcpu;
	uint8_t vector, delivery, shorthand, flags;
} __attribute__((packed));

struct line_wire {
	uint32_t gsi;
	int32_t level;
} __attribute__((packed));

struct target_wire {
	int32_t vcpu;
	uint32_t apic_id, ldr;
	uint8_t dfr_model, x2apic, hw_enabled, pad;
} __attribute__((packed));

struct wait_slot {
	uint64_t id; /* the request waited for, 0 if none */
	bool done;
	struct io_resp_wire resp;
};

struct vmlink {
	const struct cluster_config *cfg;
	int self;
	struct transport *t;
	struct dsm *dsm;
	struct netq *nq; /* the NICs' queue pairs served away from home */
	int nvirtio;
	int virtio_home[MACHINE_MAX_VIRTIO];

	pthread_rwlock_t pc_lock;
	struct machine *pc;

	pthread_mutex_t wlock; /* waits[], db[] */
	pthread_cond_t wcond;
	struct wait_slot waits[VM_MAX_CPUS];
	struct {
		uint64_t base, len;
		int fd[DB_MAX_PAGES]; /* ioeventfd per doorbell page, or -1 */
		uint32_t fd_len[DB_MAX_PAGES];
	} db[PCI_MAX_SLOTS];	/* remote slots' doorbell BARs, as learnt */
	int db_epfd, db_stopfd; /* the doorbell forwarder's */
	pthread_t db_thread;
	bool db_started;
	_Atomic uint64_t seq;

	struct workq wq;       /* forwarded accesses, served in order */
	pthread_mutex_t qlock; /* ready[], down */
	pthread_cond_t qcond;
	bool ready[CLUSTER_MAX_NODES];
	int down; /* a node that went down, or -1 */

	_Atomic uint64_t fwd_sync, fwd_oneway, fwd_cfg, served, irqs_sent,
		irqs_recv, refused;
};

/* ---- small helpers ---- */

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static bool valid_len(uint32_t len)
{
	return len == 1 || len == 2 || len == 4 || len == 8;
}

static int slot_home(struct vmlink *l, int slot)
{
	if (slot >= 1 && slot - 1 < l->nvirtio)
		return l->virtio_home[slot - 1];
	return -1;
}

/* The node that has the device at @addr, or -1 when it is this one's. */
static int home_of(struct vmlink *l, enum io_space space, uint64_t addr)
{
	int slot = pci_slot_of_window(space, addr);

	if (slot >= 0) {
		int home = slot_home(l, slot);

		return home == l->self ? -1 : home;
	}
	return l->self == 0 ? -1 : 0; /* node 0 has everything else */
}

static bool vm_stopping(struct vmlink *l)
{
	bool stopping;

	pthread_rwlock_rdlock(&l->pc_lock);
	stopping = !l->pc || vm_get_state(&l->pc->vm) == VM_STOPPING;
	pthread_rwlock_unlock(&l->pc_lock);
	return stopping;
}

/*
 * Send a request for vCPU @vcpu and wait for its answer; false if the VM
 * stops first (or the send failed). The vCPU has one request at a time.
 */
static bool request(struct vmlink *l, int node, uint16_t type, void *req,
		    uint32_t len, int vcpu, struct io_resp_wire *resp)
{
	struct wait_slot *w = &l->waits[vcpu];
	uint64_t id = (atomic_fetch_add(&l->seq, 1) + 1) << 8 | (uint64_t)vcpu;
	bool ok = false;

	memcpy(req, &id, sizeof(id)); /* every request starts with its id */
	pthread_mutex_lock(&l->wlock);
	w->id = id;
	w->done = false;
	pthread_mutex_unlock(&l->wlock);
	if (transport_send(l->t, node, type, req, len)) {
		pthread_mutex_lock(&l->wlock);
		w->id = 0;
		pthread_mutex_unlock(&l->wlock);
		return false;
	}
	pthread_mutex_lock(&l->wlock);
	for (;;) {
		struct timespec dl = clock_deadline_ms(WAIT_SLICE_MS);

		if (w->done) {
			*resp = w->resp;
			ok = true;
			break;
		}
		if (pthread_cond_timedwait(&l->wcond, &l->wlock, &dl) ==
			    ETIMEDOUT &&
		    !w->done) {
			pthread_mutex_unlock(&l->wlock);
			bool stop = vm_stopping(l);
			pthread_mutex_lock(&l->wlock);
			if (stop)
				break;
		}
	}
	w->id = 0;
	pthread_mutex_unlock(&l->wlock);
	return ok;
}

/* ---- this node's vCPUs reach a device elsewhere ---- */

static bool cached_doorbell(struct vmlink *l, uint64_t addr)
{
	int slot = pci_slot_of_window(IO_SPACE_MMIO, addr);
	bool hit = false;

	if (slot < 0)
		return false;
	pthread_mutex_lock(&l->wlock);
	hit = l->db[slot].len && addr - l->db[slot].base < l->db[slot].len;
	pthread_mutex_unlock(&l->wlock);
	return hit;
}

/*
 * Doorbells of a device on another node: a KVM ioeventfd on each of its
 * doorbell pages here, so a kick costs the guest no exit to dvmm; the
 * forwarder thread turns each eventfd signal into a one-way write of the
 * queue number to the home node. Under wlock.
 */
static void watch_doorbells(struct vmlink *l, int slot)
{
	static const uint32_t lens[] = {0, 2, 4}; /* any length if KVM can */
	uint64_t pages = l->db[slot].len / DB_PAGE;

	if (!l->pc || l->db_epfd < 0)
		return;
	for (uint64_t q = 0; q < pages && q < DB_MAX_PAGES; q++) {
		uint64_t at = l->db[slot].base + q * DB_PAGE;
		struct epoll_event ev = {.events = EPOLLIN,
					 .data.u64 = (uint64_t)slot << 32 | q};
		int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

		if (fd < 0)
			return;
		l->db[slot].fd_len[q] = 0;
		for (size_t i = 0; i < sizeof(lens) / sizeof(*lens); i++) {
			if (vm_ioeventfd(&l->pc->vm, at, lens[i], fd, true))
				continue;
			l->db[slot].fd_len[q] |= 1u << lens[i];
			if (lens[i] == 0)
				break;
		}
		if (!l->db[slot].fd_len[q] ||
		    epoll_ctl(l->db_epfd, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd); /* kicks keep exiting: still forwarded */
			continue;
		}
		l->db[slot].fd[q] = fd;
	}
}

static void unwatch_doorbells(struct vmlink *l, int slot)
{
	for (int q = 0; q < DB_MAX_PAGES; q++) {
		uint64_t at = l->db[slot].base + (uint64_t)q * DB_PAGE;
		int fd = l->db[slot].fd[q];

		if (fd < 0)
			continue;
		for (uint32_t b = 0; b <= 4; b++)
			if (l->pc && (l->db[slot].fd_len[q] & (1u << b)))
				vm_ioeventfd(&l->pc->vm, at, b, fd, false);
		epoll_ctl(l->db_epfd, EPOLL_CTL_DEL, fd, NULL);
		close(fd);
		l->db[slot].fd[q] = -1;
	}
}

/* The forwarder thread: eventfd signals become one-way doorbell writes. */
static void *doorbell_forwarder(void *arg)
{
	struct vmlink *l = arg;
	struct epoll_event ev[16];

	for (;;) {
		int n = epoll_wait(l->db_epfd, ev, 16, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return NULL;
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64, cnt;
			int slot = (int)(tag >> 32), q = (int)(uint32_t)tag;
			struct io_wire w = {.space = IO_SPACE_MMIO,
					    .len = 2,
					    .write = 1,
					    .oneway = 1};
			int fd, server;

			if (tag == UINT64_MAX)
				return NULL;
			pthread_mutex_lock(&l->wlock);
			fd = l->db[slot].fd[q];
			w.addr = l->db[slot].base + (uint64_t)q * DB_PAGE;
			pthread_mutex_unlock(&l->wlock);
			if (fd < 0 ||
			    read(fd, &cnt, sizeof(cnt)) != sizeof(cnt))
				continue;
			w.data[0] =
				(uint8_t)q; /* the notify value: the queue */
			count(&l->fwd_oneway);
			server = netq_server_of(l->nq, slot, (uint16_t)q);
			if (server >= 0)
				netq_kick(l->nq, server, slot, (uint16_t)q);
			else
				transport_send(l->t, slot_home(l, slot),
					       MSG_IO_REQ, &w, sizeof(w));
		}
	}
}

static int start_forwarder(struct vmlink *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};

	l->db_epfd = epoll_create1(EPOLL_CLOEXEC);
	l->db_stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->db_epfd < 0 || l->db_stopfd < 0 ||
	    epoll_ctl(l->db_epfd, EPOLL_CTL_ADD, l->db_stopfd, &ev))
		return -errno;
	if (thread_start_nosignals(&l->db_thread, doorbell_forwarder, l))
		return -EAGAIN;
	l->db_started = true;
	return 0;
}

static void learn_doorbell(struct vmlink *l, const struct io_resp_wire *r)
{
	int slot = pci_slot_of_window(IO_SPACE_MMIO, r->db_base);

	if (slot < 0 || !r->db_len ||
	    slot != pci_slot_of_window(IO_SPACE_MMIO,
				       r->db_base + r->db_len - 1))
		return;
	pthread_mutex_lock(&l->wlock);
	if (l->db[slot].len != r->db_len || l->db[slot].base != r->db_base) {
		unwatch_doorbells(l, slot);
		l->db[slot].base = r->db_base;
		l->db[slot].len = r->db_len;
		watch_doorbells(l, slot);
	}
	pthread_mutex_unlock(&l->wlock);
}

static bool forward_io(void *opaque, enum io_space space, uint64_t addr,
		       uint8_t *data, uint32_t len, bool is_write, int vcpu_id)
{
	struct vmlink *l = opaque;
	int home = home_of(l, space, addr);
	struct io_wire w = {.addr = addr,
			    .vcpu = vcpu_id,
			    .space = (uint8_t)space,
			    .len = (uint8_t)len,
			    .write = is_write};
	struct io_resp_wire r;

	if (home < 0 || vcpu_id < 0 || vcpu_id >= VM_MAX_CPUS)
		return false;
	if (is_write)
		memcpy(w.data, data, len);
	if (is_write && space == IO_SPACE_MMIO && cached_doorbell(l, addr)) {
		w.oneway = 1;
		w.id = 0;
		count(&l->fwd_oneway);
		transport_send(l->t, home, MSG_IO_REQ, &w, sizeof(w));
		return true;
	}
	count(&l->fwd_sync);
	if (!request(l, home, MSG_IO_REQ, &w, sizeof(w), vcpu_id, &r)) {
		if (!is_write)
			memset(data, 0xff, len);
		return true;
	}
	if (!is_write)
		memcpy(data, r.data, len);
	if (r.db_len)
		learn_doorbell(l, &r);
	return true;
}

static void forward_cfg(void *opaque, int node, uint8_t devfn, uint32_t off,
			uint8_t *data, uint32_t len, bool is_write)
{
	struct vmlink *l = opaque;
	struct cfg_wire w = {.off = off,
			     .devfn = devfn,
			     .len = (uint8_t)len,
			     .write = is_write};
	struct io_resp_wire r;
	int slot = devfn >> 3;
	int vcpu = vcpu_self_id();

	if (!valid_len(len) || vcpu < 0) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	w.vcpu = vcpu;
	if (is_write) {
		memcpy(w.data, data, len);
		pthread_mutex_lock(&l->wlock); /* BARs may move: forget */
		unwatch_doorbells(l, slot);
		l->db[slot].len = 0;
		pthread_mutex_unlock(&l->wlock);
	}
	count(&l->fwd_cfg);
	if (!request(l, node, MSG_CFG_REQ, &w, sizeof(w), vcpu, &r)) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (!is_write)
		memcpy(data, r.data, len);
}

/* The reset port on a node other than 0. */
static void forward_cf9(void *opaque, uint64_t offset, uint8_t *data,
			uint32_t len, bool is_write, int vcpu_id)
{
	(void)offset;
	if (!forward_io(opaque, IO_SPACE_PIO, 0xcf9, data, len, is_write,
			vcpu_id) &&
	    !is_write)
		memset(data, 0xff, len);
}

/* ---- the home node serves them (worker thread) ---- */

static void doorbell_of(struct machine *pc, uint64_t addr,
			struct io_resp_wire *r)
{
	for (int i = 0; i < pc->nvirtio; i++) {
		struct virtio_pci *vp = &pc->virtio[i].vp;
		uint64_t base = vp->bar_gpa[VIRTIO_PCI_BAR_NOTIFY];
		uint64_t size = vp->pci.bar[VIRTIO_PCI_BAR_NOTIFY].size;

		if (pc->virtio[i].transport_up &&
		    vp->bar_on[VIRTIO_PCI_BAR_NOTIFY] && addr - base < size) {
			r->db_base = base;
			r->db_len = (uint32_t)size;
			return;
		}
	}
}

static void serve_io(struct vmlink *l, int from, const struct io_wire *w)
{
	struct io_resp_wire r = {.id = w->id};
	uint8_t data[8] = {0};
	struct machine *pc;

	if (w->space >= IO_SPACE_COUNT || !valid_len(w->len) || w->vcpu < 0 ||
	    w->vcpu >= VM_MAX_CPUS) {
		count(&l->refused);
		return;
	}
	memcpy(data, w->data, sizeof(data));
	pthread_rwlock_rdlock(&l->pc_lock);
	pc = l->pc;
	if (pc) {
		r.ok = ioreg_dispatch_local(&pc->vm.io, w->space, w->addr, data,
					    w->len, w->write, w->vcpu);
		if (w->space == IO_SPACE_MMIO)
			doorbell_of(pc, w->addr, &r);
	}
	pthread_rwlock_unlock(&l->pc_lock);
	count(&l->served);
	if (w->oneway)
		return;
	if (!w->write)
		memcpy(r.data, data, w->len);
	transport_send(l->t, from, MSG_IO_RESP, &r, sizeof(r));
}

static void serve_cfg(struct vmlink *l, int from, const struct cfg_wire *w)
{
	struct io_resp_wire r = {.id = w->id, .ok = 1};
	uint8_t data[8] = {0};

	if (!valid_len(w->len)) {
		count(&l->refused);
		return;
	}
	memcpy(data, w->data, sizeof(data));
	pthread_rwlock_rdlock(&l->pc_lock);
	if (l->pc && w->write)
		pci_cfg_write(&l->pc->pci, w->devfn, w->off, data, w->len);
	else if (l->pc)
		pci_cfg_read(&l->pc->pci, w->devfn, w->off, data, w->len);
	else
		memset(data, 0xff, sizeof(data));
	pthread_rwlock_unlock(&l->pc_lock);
	count(&l->served);
	if (!w->write)
		memcpy(r.data, data, w->len);
	transport_send(l->t, from, MSG_IO_RESP, &r, sizeof(r));
}

static void run_job(void *opaque, const struct workq_job *j)
{
	struct vmlink *l = opaque;

	if (j->type == MSG_IO_REQ)
		serve_io(l, j->from, (const struct io_wire *)j->payload);
	else if (j->type == MSG_CFG_REQ)
		serve_cfg(l, j->from, (const struct cfg_wire *)j->payload);
}

static void got_resp(struct vmlink *l, const struct io_resp_wire *r)
{
	uint64_t vcpu = r->id & 0xff;

	if (vcpu >= VM_MAX_CPUS)
		return;
	pthread_mutex_lock(&l->wlock);
	if (l->waits[vcpu].id == r->id && r->id) {
		l->waits[vcpu].resp = *r;
		l->waits[vcpu].done = true;
		pthread_cond_broadcast(&l->wcond);
	}
	pthread_mutex_unlock(&l->wlock);
}

/* ---- interrupts between the nodes ---- */

static void remote_deliver(void *opaque, int vcpu, const struct apic_msg *m)
{
	struct vmlink *l = opaque;
	struct irq_wire w = {.vcpu = vcpu,
			     .dest = m->dest,
			     .src_vcpu = m->src_vcpu,
			     .vector = m->vector,
			     .delivery = m->delivery,
			     .shorthand = m->shorthand};

	if (vcpu < 0 || vcpu >= l->cfg->ncpus)
		return;
	w.flags = (m->logical ? IRQF_LOGICAL : 0) |
		  (m->level ? IRQF_LEVEL : 0) | (m->assert ? IRQF_ASSERT : 0) |
		  (m->x2apic_dest ? IRQF_X2APIC : 0);
	count(&l->irqs_sent);
	transport_send(l->t, l->cfg->vcpu_node[vcpu], MSG_IRQ_DELIVER, &w,
		       sizeof(w));
}

static void remote_eoi(void *opaque, uint8_t vector)
{
	struct vmlink *l = opaque;

	transport_send(l->t, 0, MSG_IRQ_EOI, &vector, 1);
}

static void remote_set_line(void *opaque, uint32_t gsi, int level)
{
	struct vmlink *l = opaque;
	struct line_wire w = {.gsi = gsi, .level = level};

	transport_send(l->t, 0, MSG_IRQ_LINE, &w, sizeof(w));
}

static void remote_target(void *opaque, const struct apic_target *t)
{
	struct vmlink *l = opaque;
	struct target_wire w = {.vcpu = t->vcpu,
				.apic_id = t->apic_id,
				.ldr = t->ldr,
				.dfr_model = t->dfr_model,
				.x2apic = t->x2apic,
				.hw_enabled = t->hw_enabled};

	for (int i = 0; i < l->cfg->nnodes; i++)
		if (i != l->self)
			transport_send(l->t, i, MSG_APIC_TARGET, &w, sizeof(w));
}

static void got_irq(struct vmlink *l, const struct irq_wire *w)
{
	struct apic_msg m = {.dest = w->dest,
			     .vector = w->vector,
			     .delivery = w->delivery,
			     .shorthand = w->shorthand,
			     .logical = w->flags & IRQF_LOGICAL,
			     .level = w->flags & IRQF_LEVEL,
			     .assert = w->flags & IRQF_ASSERT,
			     .x2apic_dest = w->flags & IRQF_X2APIC,
			     .src_vcpu = w->src_vcpu};

	if (w->vcpu < 0 || w->vcpu >= l->cfg->ncpus ||
	    l->cfg->vcpu_node[w->vcpu] != l->self || w->delivery > 7) {
		count(&l->refused);
		return;
	}
	count(&l->irqs_recv);
	pthread_rwlock_rdlock(&l->pc_lock);
	if (l->pc && l->pc->uchip)
		userchip_deliver(l->pc->uchip, w->vcpu, &m);
	pthread_rwlock_unlock(&l->pc_lock);
}

static void got_target(struct vmlink *l, int from, const struct target_wire *w)
{
	struct apic_target t = {.vcpu = w->vcpu,
				.apic_id = w->apic_id,
				.ldr = w->ldr,
				.dfr_model = w->dfr_model,
				.x2apic = w->x2apic,
				.hw_enabled = w->hw_enabled};

	if (w->vcpu < 0 || w->vcpu >= l->cfg->ncpus ||
	    l->cfg->vcpu_node[w->vcpu] != from) {
		count(&l->refused);
		return;
	}
	pthread_rwlock_rdlock(&l->pc_lock);
	if (l->pc && l->pc->uchip)
		userchip_update_target(l->pc->uchip, &t);
	pthread_rwlock_unlock(&l->pc_lock);
}

static void got_node0_irq(struct vmlink *l, uint16_t type, const void *p,
			  uint32_t len)
{
	struct line_wire w;

	if (l->self != 0)
		return;
	pthread_rwlock_rdlock(&l->pc_lock);
	if (l->pc && l->pc->uchip) {
		if (type == MSG_IRQ_EOI && len == 1) {
			userchip_eoi(l->pc->uchip, *(const uint8_t *)p);
		} else if (type == MSG_IRQ_LINE && len == sizeof(w)) {
			memcpy(&w, p, sizeof(w));
			if (w.gsi < IOAPIC_PINS)
				userchip_set_line(l->pc->uchip, w.gsi,
						  w.level ? 1 : 0);
		}
	}
	pthread_rwlock_unlock(&l->pc_lock);
}

/* ---- messages ---- */

static bool size_ok(struct vmlink *l, uint32_t len, size_t want)
{
	if (len == want)
		return true;
	count(&l->refused);
	return false;
}

bool vmlink_handle_msg(struct vmlink *l, int from, uint16_t type, const void *p,
		       uint32_t len)
{
	struct io_resp_wire r;
	struct irq_wire iw;
	struct target_wire tw;

	switch (type) {
	case MSG_IO_REQ:
		if (size_ok(l, len, sizeof(struct io_wire)))
			workq_push(&l->wq, from, type, p, len);
		return true;
	case MSG_CFG_REQ:
		if (size_ok(l, len, sizeof(struct cfg_wire)))
			workq_push(&l->wq, from, type, p, len);
		return true;
	case MSG_IO_RESP:
		if (size_ok(l, len, sizeof(r))) {
			memcpy(&r, p, sizeof(r));
			got_resp(l, &r);
		}
		return true;
	case MSG_IRQ_DELIVER:
		if (size_ok(l, len, sizeof(iw))) {
			memcpy(&iw, p, sizeof(iw));
			got_irq(l, &iw);
		}
		return true;
	case MSG_APIC_TARGET:
		if (size_ok(l, len, sizeof(tw))) {
			memcpy(&tw, p, sizeof(tw));
			got_target(l, from, &tw);
		}
		return true;
	case MSG_IRQ_EOI:
	case MSG_IRQ_LINE:
		got_node0_irq(l, type, p, len);
		return true;
	case MSG_NODE_READY:
		pthread_mutex_lock(&l->qlock);
		l->ready[from] = true;
		pthread_cond_broadcast(&l->qcond);
		pthread_mutex_unlock(&l->qlock);
		return true;
	default:
		return netq_handle_msg(l->nq, from, type, p, len);
	}
}

/* ---- the machine's side ---- */

static uint64_t page_events(void *opaque, uint64_t first_pfn, uint64_t n)
{
	struct vmlink *l = opaque;
	uint64_t gpa = first_pfn << 12, low, page;

	if (!l->dsm || !l->pc || first_pfn >> 40)
		return 0;
	low = guest_mem_low_end(&l->pc->vm.mem);
	if (gpa < low)
		page = first_pfn;
	else if (gpa >= GUEST_4G)
		page = (gpa - GUEST_4G + low) >> 12;
	else
		return 0;
	return dsm_page_events(l->dsm, page, n);
}

void vmlink_machine_cluster(struct vmlink *l, struct machine_cluster *mcl)
{
	memset(mcl, 0, sizeof(*mcl));
	mcl->self = l->self;
	mcl->local_cpus = cluster_config_local_cpus(l->cfg, l->self);
	mcl->nvirtio = l->nvirtio;
	memcpy(mcl->virtio_home, l->virtio_home, sizeof(mcl->virtio_home));
	mcl->remote = (struct userchip_remote){.deliver = remote_deliver,
					       .eoi = remote_eoi,
					       .set_line = remote_set_line,
					       .target_changed = remote_target,
					       .opaque = l};
	mcl->remote_cfg = forward_cfg;
	mcl->remote_cfg_opaque = l;
	mcl->forward = forward_io;
	mcl->forward_opaque = l;
	mcl->cf9 = forward_cf9;
	mcl->cf9_opaque = l;
	mcl->events = page_events;
	mcl->events_opaque = l;
	netq_machine_cluster(l->nq, mcl);
}

int vmlink_attach(struct vmlink *l, struct machine *pc, struct err *e)
{
	pthread_rwlock_wrlock(&l->pc_lock);
	l->pc = pc;
	pthread_rwlock_unlock(&l->pc_lock);
	return netq_attach(l->nq, pc, e);
}

void vmlink_detach(struct vmlink *l)
{
	netq_detach(l->nq);
	pthread_mutex_lock(&l->wlock);
	for (int s = 0; s < PCI_MAX_SLOTS; s++) {
		unwatch_doorbells(l, s);
		l->db[s].len = 0;
	}
	pthread_mutex_unlock(&l->wlock);
	pthread_rwlock_wrlock(&l->pc_lock);
	l->pc = NULL;
	pthread_rwlock_unlock(&l->pc_lock);
}

void vmlink_send_ready(struct vmlink *l)
{
	uint8_t one = 1;

	transport_send(l->t, 0, MSG_NODE_READY, &one, 1);
}

int vmlink_wait_ready(struct vmlink *l, unsigned int timeout_ms, struct err *e)
{
	struct timespec dl = clock_deadline_ms(timeout_ms);
	int missing = -1;

	pthread_mutex_lock(&l->qlock);
	for (;;) {
		if (l->down >= 0)
			break;
		missing = -1;
		for (int i = 1; i < l->cfg->nnodes && missing < 0; i++)
			if (!l->ready[i])
				missing = i;
		if (missing < 0 || pthread_cond_timedwait(&l->qcond, &l->qlock,
							  &dl) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&l->qlock);
	if (l->down >= 0)
		return err_set(e, -ECONNRESET,
			       "node %d went down before the VM started",
			       l->down);
	if (missing >= 0)
		return err_set(e, -ETIMEDOUT,
			       "node %d did not build its part of the VM "
			       "within %u ms",
			       missing, timeout_ms);
	return 0;
}

void vmlink_peer_down(struct vmlink *l, int node)
{
	pthread_mutex_lock(&l->qlock);
	if (l->down < 0)
		l->down = node;
	pthread_cond_broadcast(&l->qcond);
	pthread_mutex_unlock(&l->qlock);
	netq_peer_down(l->nq, node);
}

json_t *vmlink_stats_json(struct vmlink *l)
{
	return json_pack(
		"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "io_forwarded",
		(json_int_t)l->fwd_sync, "doorbells_forwarded",
		(json_int_t)l->fwd_oneway, "cfg_forwarded",
		(json_int_t)l->fwd_cfg, "served", (json_int_t)l->served,
		"irqs_sent", (json_int_t)l->irqs_sent, "irqs_recv",
		(json_int_t)l->irqs_recv, "refused", (json_int_t)l->refused,
		"netq", netq_stats_json(l->nq));
}

int vmlink_create(struct vmlink **out, const struct cluster_config *c, int self,
		  struct transport *t, struct dsm *dsm, struct err *e)
{
	struct vmlink *l = calloc(1, sizeof(*l));
	pthread_condattr_t ca;
	int rc;

	if (!l)
		return err_set(e, -ENOMEM, "out of memory");
	l->cfg = c;
	l->self = self;
	l->down = -1;
	l->db_epfd = l->db_stopfd = -1;
	for (int s = 0; s < PCI_MAX_SLOTS; s++)
		for (int q = 0; q < DB_MAX_PAGES; q++)
			l->db[s].fd[q] = -1;
	l->t = t;
	l->dsm = dsm;
	l->nvirtio = cluster_config_virtio_homes(c, l->virtio_home);
	rc = netq_create(&l->nq, c, self, t, e);
	if (rc) {
		free(l);
		return rc;
	}
	pthread_rwlock_init(&l->pc_lock, NULL);
	pthread_condattr_init(&ca); /* deadlines are CLOCK_MONOTONIC */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&l->wlock, NULL);
	pthread_cond_init(&l->wcond, &ca);
	pthread_mutex_init(&l->qlock, NULL);
	pthread_cond_init(&l->qcond, &ca);
	pthread_condattr_destroy(&ca);
	rc = workq_start(&l->wq, run_job, l);
	if (rc) {
		vmlink_destroy(l);
		return err_set(e, rc, "cannot start the I/O worker: %s",
			       strerror(-rc));
	}
	rc = start_forwarder(l);
	if (rc) {
		vmlink_destroy(l);
		return err_set(e, rc, "cannot start the doorbell forwarder: %s",
			       strerror(-rc));
	}
	*out = l;
	return 0;
}

void vmlink_destroy(struct vmlink *l)
{
	if (!l)
		return;
	workq_stop(&l->wq);
	if (l->db_started) {
		uint64_t one = 1;

		if (write(l->db_stopfd, &one, sizeof(one)) != sizeof(one))
			pr_warn("cannot stop the doorbell forwarder");
		pthread_join(l->db_thread, NULL);
	}
	netq_destroy(l->nq);
	if (l->db_epfd >= 0)
		close(l->db_epfd);
	if (l->db_stopfd >= 0)
		close(l->db_stopfd);
	pthread_rwlock_destroy(&l->pc_lock);
	pthread_mutex_destroy(&l->wlock);
	pthread_cond_destroy(&l->wcond);
	pthread_mutex_destroy(&l->qlock);
	pthread_cond_destroy(&l->qcond);
	free(l);
}
