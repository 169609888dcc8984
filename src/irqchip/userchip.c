/*
 * irqchip/userchip.c - the userspace interrupt controllers put together
 * (see userchip.h): the APIC bus routing, the vCPU-loop hooks, and the
 * timer thread that turns LAPIC/PIT deadlines into host timerfds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "core/vcpu.h"
#include "irqchip/userchip.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#define MSR_IA32_TSC 0x10
#define ISA_IRQ_PIT 0
#define GSI_PIT 2 /* the MADT's override: ISA IRQ 0 -> GSI 2 */
#define PIC_IRQS 16
#define PIT_TIMER_TAG VM_MAX_CPUS

/* ---- time ---- */

static uint64_t uc_now_ns(void *opaque)
{
	(void)opaque;
	return clock_mono_ns();
}

static uint64_t tsc_to_ns(struct userchip *uc, uint64_t tsc)
{
	__int128 d = (__int128)tsc - (__int128)uc->tsc0;
	__int128 ns = (__int128)uc->ns0 + d * 1000000 / (__int128)uc->tsc_khz;

	return ns < 0 ? 0 : (uint64_t)ns;
}

static uint64_t ns_to_tsc(struct userchip *uc, uint64_t ns)
{
	__int128 d = (__int128)ns - (__int128)uc->ns0;
	__int128 tsc = (__int128)uc->tsc0 + d * (__int128)uc->tsc_khz / 1000000;

	return tsc < 0 ? 0 : (uint64_t)tsc;
}

/* Pair a guest TSC reading with CLOCK_MONOTONIC (vCPU 0's TSC). */
static int calibrate_tsc(struct userchip *uc, struct err *e)
{
	struct vcpu *v = &uc->vm->vcpus[0];
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entry[1];
	} m;
	int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);

	if (khz <= 0)
		return err_set(e, -EIO, "KVM_GET_TSC_KHZ failed");
	uc->tsc_khz = (uint64_t)khz;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.entry[0].index = MSR_IA32_TSC;
	uc->ns0 = clock_mono_ns();
	if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
		return err_set(e, -EIO, "cannot read the guest TSC");
	uc->tsc0 = m.entry[0].data;
	return 0;
}

static void timerfd_at(int fd, uint64_t deadline_ns)
{
	struct itimerspec its = {0};

	if (deadline_ns) {
		its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000ULL);
		its.it_value.tv_nsec = (long)(deadline_ns % 1000000000ULL);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- the APIC bus ---- */

static void deliver_to(struct userchip *uc, int vcpu, const struct apic_msg *m)
{
	if (uc->vm->vcpus[vcpu].local)
		lapic_deliver(&uc->lapic[vcpu], m);
	else if (uc->remote.deliver)
		uc->remote.deliver(uc->remote.opaque, vcpu, m);
}

void userchip_route(struct userchip *uc, const struct apic_msg *m)
{
	bool hit[VM_MAX_CPUS];
	int n = uc->vm->ncpus;

	pthread_rwlock_rdlock(&uc->target_lock);
	for (int v = 0; v < n; v++)
		hit[v] = apic_match(m, &uc->target[v]);
	pthread_rwlock_unlock(&uc->target_lock);
	for (int v = 0; v < n; v++) {
		if (!hit[v])
			continue;
		deliver_to(uc, v, m);
		/* Lowest priority: one of them (the lowest-numbered). */
		if (m->delivery == APIC_DM_LOWEST)
			break;
	}
}

void userchip_deliver(struct userchip *uc, int vcpu, const struct apic_msg *m)
{
	if (vcpu >= 0 && vcpu < uc->vm->ncpus && uc->vm->vcpus[vcpu].local)
		lapic_deliver(&uc->lapic[vcpu], m);
}

void userchip_update_target(struct userchip *uc, const struct apic_target *t)
{
	if (t->vcpu < 0 || t->vcpu >= uc->vm->ncpus ||
	    uc->vm->vcpus[t->vcpu].local)
		return;
	pthread_rwlock_wrlock(&uc->target_lock);
	uc->target[t->vcpu] = *t;
	pthread_rwlock_unlock(&uc->target_lock);
}

/* After the guest touched a local LAPIC: publish addressing changes. */
static void refresh_target(struct userchip *uc, int vcpu)
{
	struct apic_target t;
	bool changed;

	lapic_target(&uc->lapic[vcpu], &t);
	t.vcpu = vcpu;
	pthread_rwlock_wrlock(&uc->target_lock);
	changed = memcmp(&uc->target[vcpu], &t, sizeof(t)) != 0;
	uc->target[vcpu] = t;
	pthread_rwlock_unlock(&uc->target_lock);
	if (changed && uc->remote.target_changed)
		uc->remote.target_changed(uc->remote.opaque, &t);
}

/* ---- lines: devices, the IOAPIC, the PIC ---- */

void userchip_set_line(struct userchip *uc, uint32_t gsi, int level)
{
	if (!uc->has_ioapic) {
		if (uc->remote.set_line)
			uc->remote.set_line(uc->remote.opaque, gsi, level);
		return;
	}
	if (gsi < IOAPIC_PINS)
		ioapic_set_irq(&uc->ioapic, (int)gsi, level);
	if (gsi < PIC_IRQS && gsi != GSI_PIT)
		pic_set_irq(&uc->pic, (int)gsi, level);
}

void userchip_eoi(struct userchip *uc, uint8_t vector)
{
	if (uc->has_ioapic)
		ioapic_eoi(&uc->ioapic, vector);
	else if (uc->remote.eoi)
		uc->remote.eoi(uc->remote.opaque, vector);
}

static int sink_set_line(void *opaque, uint32_t gsi, int level)
{
	userchip_set_line(opaque, gsi, level);
	return 0;
}

static int sink_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
	struct apic_msg m;

	if (!apic_msg_from_msi(addr, data, &m))
		return -EINVAL;
	userchip_route(opaque, &m);
	return 0;
}

static void ioapic_send(void *opaque, const struct apic_msg *m)
{
	userchip_route(opaque, m);
}

static const struct ioapic_ops uc_ioapic_ops = {.send = ioapic_send};

static void pic_intr_changed(void *opaque, int level)
{
	struct userchip *uc = opaque;

	/* INTR goes to the BSP's LINT0 (virtual wire mode). */
	if (uc->vm->vcpus[0].local)
		lapic_set_lint(&uc->lapic[0], 0, level);
}

static const struct pic_ops uc_pic_ops = {.intr = pic_intr_changed};

static void pit_irq0(void *opaque, int level)
{
	struct userchip *uc = opaque;

	ioapic_set_irq(&uc->ioapic, GSI_PIT, level);
	pic_set_irq(&uc->pic, ISA_IRQ_PIT, level);
}

static void pit_timer_arm(void *opaque, uint64_t deadline_ns)
{
	struct userchip *uc = opaque;

	timerfd_at(uc->pit_tfd, deadline_ns);
}

static const struct pit_ops uc_pit_ops = {
	.irq0 = pit_irq0, .timer_arm = pit_timer_arm, .now_ns = uc_now_ns};

/* ---- LAPIC callbacks (opaque: the vCPU's struct userchip_cpu) ---- */

static void lapic_send(void *opaque, const struct apic_msg *m)
{
	struct userchip_cpu *c = opaque;

	userchip_route(c->uc, m);
}

static void lapic_eoi(void *opaque, uint8_t vector)
{
	struct userchip_cpu *c = opaque;

	userchip_eoi(c->uc, vector);
}

static void lapic_kick(void *opaque)
{
	struct userchip_cpu *c = opaque;

	vcpu_kick(&c->uc->vm->vcpus[c->id]);
}

static void lapic_timer_arm(void *opaque, uint64_t deadline_ns)
{
	struct userchip_cpu *c = opaque;

	atomic_store(&c->armed_ns, deadline_ns);
	timerfd_at(c->uc->lapic_tfd[c->id], deadline_ns);
}

static uint64_t lapic_tsc_to_ns(void *opaque, uint64_t tsc)
{
	struct userchip_cpu *c = opaque;

	return tsc_to_ns(c->uc, tsc);
}

static uint64_t lapic_ns_to_tsc(void *opaque, uint64_t ns)
{
	struct userchip_cpu *c = opaque;

	return ns_to_tsc(c->uc, ns);
}

static const struct lapic_ops uc_lapic_ops = {
	.send = lapic_send,
	.eoi = lapic_eoi,
	.kick = lapic_kick,
	.timer_arm = lapic_timer_arm,
	.now_ns = uc_now_ns,
	.tsc_to_ns = lapic_tsc_to_ns,
	.ns_to_tsc = lapic_ns_to_tsc,
};

static void lapic_mmio_io(void *opaque, uint64_t offset, uint8_t *data,
			  uint32_t len, bool is_write, int vcpu_id)
{
	struct userchip *uc = opaque;

	if (vcpu_id < 0 || vcpu_id >= uc->vm->ncpus ||
	    !uc->vm->vcpus[vcpu_id].local) {
		if (!is_write)
			memset(data, 0, len);
		return;
	}
	lapic_mmio(&uc->lapic[vcpu_id], offset, data, len, is_write);
	if (is_write)
		refresh_target(uc, vcpu_id);
}

/* ---- the vCPU loop hooks ---- */

static bool is_lapic_msr(uint32_t index)
{
	return index == MSR_IA32_APIC_BASE || index == MSR_IA32_TSC_DEADLINE ||
	       (index >= MSR_X2APIC_FIRST && index <= MSR_X2APIC_LAST);
}

static int hook_msr(void *opaque, struct vcpu *v, bool is_write, uint32_t index,
		    uint64_t *data)
{
	struct userchip *uc = opaque;
	int rc;

	if (!is_lapic_msr(index))
		return -ENOENT;
	if (!is_write)
		return lapic_read_msr(&uc->lapic[v->id], index, data);
	rc = lapic_write_msr(&uc->lapic[v->id], index, *data);
	if (!rc && index != MSR_IA32_TSC_DEADLINE)
		refresh_target(uc, v->id);
	return rc;
}

struct wake_arg {
	struct userchip *uc;
	int vcpu;
	bool if_flag;
};

static bool lapic_wants_cpu(void *arg)
{
	struct wake_arg *w = arg;

	return lapic_has_wakeup(&w->uc->lapic[w->vcpu], w->if_flag) ||
	       (w->if_flag && w->uc->cpu[w->vcpu].extint);
}

static int set_regs(struct vcpu *v, const struct kvm_regs *r,
		    const struct kvm_sregs *s)
{
	if (ioctl(v->fd, KVM_SET_SREGS, s) || ioctl(v->fd, KVM_SET_REGS, r))
		return -errno;
	return 0;
}

/* INIT: back to the state of a freshly created vCPU, waiting for SIPI. */
static void take_init(struct userchip *uc, struct vcpu *v)
{
	struct userchip_cpu *c = &uc->cpu[v->id];

	c->inits++;
	lapic_reset(&uc->lapic[v->id]);
	refresh_target(uc, v->id);
	c->extint = false;
	if (set_regs(v, &c->reset_regs, &c->reset_sregs))
		pr_warn("vCPU %d: INIT: cannot reset registers", v->id);
	c->wait_sipi = true;
}

/* SIPI: start in real mode at @vector << 12. */
static void take_sipi(struct userchip *uc, struct vcpu *v, uint8_t vector)
{
	struct userchip_cpu *c = &uc->cpu[v->id];
	struct kvm_sregs s = c->reset_sregs;
	struct kvm_regs r = c->reset_regs;

	c->sipis++;
	s.cs.selector = (uint16_t)(vector << 8);
	s.cs.base = (uint64_t)vector << 12;
	r.rip = 0;
	if (set_regs(v, &r, &s)) {
		pr_warn("vCPU %d: SIPI: cannot set registers", v->id);
		return;
	}
	c->wait_sipi = false;
}

static void take_events(struct userchip *uc, struct vcpu *v)
{
	struct userchip_cpu *c = &uc->cpu[v->id];
	uint8_t sipi = 0;
	unsigned int ev = lapic_take_events(&uc->lapic[v->id], &sipi);

	if (ev & LAPIC_EV_INIT)
		take_init(uc, v);
	if ((ev & LAPIC_EV_SIPI) && c->wait_sipi)
		take_sipi(uc, v, sipi);
	if (c->wait_sipi)
		return; /* NMIs and interrupts are held off until SIPI */
	if (ev & LAPIC_EV_NMI) {
		c->nmis++;
		if (ioctl(v->fd, KVM_NMI))
			pr_warn("vCPU %d: KVM_NMI failed", v->id);
	}
	if (ev & LAPIC_EV_EXTINT)
		c->extint = true;
}

static bool sipi_arrived(void *arg)
{
	struct wake_arg *w = arg;

	return lapic_has_wakeup(&w->uc->lapic[w->vcpu], false);
}

/* Inject one interrupt if the guest can take it now; else ask to be told. */
static void inject(struct userchip *uc, struct vcpu *v)
{
	struct userchip_cpu *c = &uc->cpu[v->id];
	struct kvm_run *run = v->run;
	struct kvm_interrupt irq;
	int vec = -1;
	bool more;

	more = c->extint || lapic_pending_vector(&uc->lapic[v->id]) >= 0;
	if (more && run->ready_for_interrupt_injection) {
		if (c->extint && uc->has_ioapic) {
			c->extint = false;
			vec = pic_ack(&uc->pic);
		} else {
			c->extint = false;
			vec = lapic_ack(&uc->lapic[v->id]);
		}
		if (vec >= 0) {
			irq.irq = (uint32_t)vec;
			if (ioctl(v->fd, KVM_INTERRUPT, &irq))
				pr_warn("vCPU %d: KVM_INTERRUPT %d failed",
					v->id, vec);
			else
				c->injected++;
			run->ready_for_interrupt_injection = 0;
		}
		more = c->extint ||
		       lapic_pending_vector(&uc->lapic[v->id]) >= 0;
	}
	run->request_interrupt_window = more ? 1 : 0;
}

static bool hook_prepare(void *opaque, struct vcpu *v)
{
	struct userchip *uc = opaque;
	struct wake_arg w = {.uc = uc, .vcpu = v->id};

	take_events(uc, v);
	if (uc->cpu[v->id].wait_sipi) {
		vcpu_block(v, sipi_arrived, &w);
		return false;
	}
	inject(uc, v);
	return true;
}

static void hook_halt(void *opaque, struct vcpu *v)
{
	struct userchip *uc = opaque;
	struct wake_arg w = {
		.uc = uc, .vcpu = v->id, .if_flag = v->run->if_flag != 0};

	vcpu_block(v, lapic_wants_cpu, &w);
}

/* ---- the timer thread ---- */

/* How late the host timer woke us for the LAPIC deadline it was set to. */
static void note_lateness(struct userchip_cpu *c)
{
	uint64_t armed = atomic_load(&c->armed_ns), now = clock_mono_ns();

	if (!armed || now < armed)
		return;
	c->late_count++;
	c->late_sum_ns += now - armed;
	if (now - armed > c->late_max_ns)
		c->late_max_ns = now - armed;
}

static void timer_expired(struct userchip *uc, uint64_t tag)
{
	uint64_t n;
	int fd = tag == PIT_TIMER_TAG ? uc->pit_tfd : uc->lapic_tfd[tag];

	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return; /* re-armed meanwhile: nothing expired */
	if (tag == PIT_TIMER_TAG) {
		pit_timer_fire(&uc->pit);
		return;
	}
	note_lateness(&uc->cpu[tag]);
	lapic_timer_fire(&uc->lapic[tag]);
}

static void *timer_thread(void *arg)
{
	struct userchip *uc = arg;
	struct epoll_event ev[16];

	for (;;) {
		int n = epoll_wait(uc->epfd, ev, 16, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == UINT64_MAX)
				return NULL;
			timer_expired(uc, ev[i].data.u64);
		}
	}
	return NULL;
}

static int add_timerfd(struct userchip *uc, uint64_t tag, int *out)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);

	if (fd < 0)
		return -errno;
	*out = fd;
	if (epoll_ctl(uc->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return 0;
}

static int start_timers(struct userchip *uc, struct err *e)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	int rc = 0;

	uc->epfd = epoll_create1(EPOLL_CLOEXEC);
	uc->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (uc->epfd < 0 || uc->stop_fd < 0 ||
	    epoll_ctl(uc->epfd, EPOLL_CTL_ADD, uc->stop_fd, &ev))
		return err_set(e, -errno, "timer thread setup: %s",
			       strerror(errno));
	for (int v = 0; !rc && v < uc->vm->ncpus; v++)
		if (uc->vm->vcpus[v].local)
			rc = add_timerfd(uc, (uint64_t)v, &uc->lapic_tfd[v]);
	if (!rc && uc->has_ioapic)
		rc = add_timerfd(uc, PIT_TIMER_TAG, &uc->pit_tfd);
	if (!rc)
		rc = thread_start_nosignals(&uc->timer_thread, timer_thread,
					    uc);
	if (rc)
		return err_set(e, rc, "cannot start the timer thread: %s",
			       strerror(-rc));
	uc->timer_started = true;
	return 0;
}

/* ---- create / destroy ---- */

static int init_lapics(struct userchip *uc, struct err *e)
{
	struct vm *vm = uc->vm;

	for (int v = 0; v < vm->ncpus; v++) {
		struct userchip_cpu *c = &uc->cpu[v];

		c->uc = uc;
		c->id = v;
		uc->target[v] = (struct apic_target){.vcpu = v,
						     .apic_id = (uint32_t)v,
						     .dfr_model = 0xf,
						     .hw_enabled = true};
		if (!vm->vcpus[v].local)
			continue;
		if (ioctl(vm->vcpus[v].fd, KVM_GET_REGS, &c->reset_regs) ||
		    ioctl(vm->vcpus[v].fd, KVM_GET_SREGS, &c->reset_sregs))
			return err_set(e, -errno,
				       "vCPU %d: cannot read its "
				       "registers: %s",
				       v, strerror(errno));
		c->wait_sipi = v != 0;
		lapic_init(&uc->lapic[v], v, (uint32_t)v, v == 0,
			   USERCHIP_BUS_HZ, &uc_lapic_ops, c);
		c->lapic_up = true;
		lapic_target(&uc->lapic[v], &uc->target[v]);
		uc->target[v].vcpu = v;
	}
	return 0;
}

static int init_node0_chips(struct userchip *uc, struct err *e)
{
	struct io_registry *io = &uc->vm->io;
	int rc = ioapic_init(&uc->ioapic, io, (uint8_t)uc->vm->ncpus,
			     &uc_ioapic_ops, uc);

	if (rc)
		return err_set(e, rc, "cannot create the IOAPIC: %s",
			       strerror(-rc));
	uc->ioapic_up = true;
	rc = pic_init(&uc->pic, io, &uc_pic_ops, uc);
	if (rc)
		return err_set(e, rc, "cannot create the PIC: %s",
			       strerror(-rc));
	uc->pic_up = true;
	rc = pit_init(&uc->pit, io, &uc_pit_ops, uc);
	if (rc)
		return err_set(e, rc, "cannot create the PIT: %s",
			       strerror(-rc));
	uc->pit_up = true;
	return 0;
}

int userchip_create(struct userchip *uc, struct vm *vm, bool with_ioapic,
		    const struct userchip_remote *remote, struct err *e)
{
	int rc;

	memset(uc, 0, sizeof(*uc));
	uc->vm = vm;
	uc->has_ioapic = with_ioapic;
	uc->epfd = uc->stop_fd = uc->pit_tfd = -1;
	for (int v = 0; v < VM_MAX_CPUS; v++)
		uc->lapic_tfd[v] = -1;
	if (remote)
		uc->remote = *remote;
	if (pthread_rwlock_init(&uc->target_lock, NULL))
		return err_set(e, -ENOMEM, "pthread_rwlock_init failed");
	rc = calibrate_tsc(uc, e);
	if (!rc)
		rc = init_lapics(uc, e);
	if (!rc) {
		rc = ioreg_register(&vm->io, IO_SPACE_MMIO, LAPIC_MMIO_BASE,
				    LAPIC_MMIO_SIZE, lapic_mmio_io, uc,
				    "lapic");
		if (rc)
			err_set(e, rc, "cannot register the LAPIC page");
		uc->lapic_mmio_up = !rc;
	}
	if (!rc && with_ioapic)
		rc = init_node0_chips(uc, e);
	if (!rc)
		rc = start_timers(uc, e);
	if (rc)
		return rc;
	vm->irq = (struct irq_sink){.set_line = sink_set_line,
				    .send_msi = sink_send_msi,
				    .opaque = uc};
	vm->uchip = (struct vcpu_irq_hooks){.prepare = hook_prepare,
					    .msr = hook_msr,
					    .halt = hook_halt,
					    .opaque = uc};
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void userchip_destroy(struct userchip *uc)
{
	uint64_t one = 1;

	if (!uc->vm)
		return;
	if (uc->timer_started) {
		if (write(uc->stop_fd, &one, sizeof(one)) != sizeof(one))
			pr_warn("cannot stop the timer thread");
		pthread_join(uc->timer_thread, NULL);
		uc->timer_started = false;
	}
	if (uc->pit_up)
		pit_destroy(&uc->pit);
	if (uc->pic_up)
		pic_destroy(&uc->pic);
	if (uc->ioapic_up)
		ioapic_destroy(&uc->ioapic);
	if (uc->lapic_mmio_up)
		ioreg_unregister(&uc->vm->io, IO_SPACE_MMIO, LAPIC_MMIO_BASE);
	for (int v = 0; v < uc->vm->ncpus; v++) {
		if (uc->cpu[v].lapic_up)
			lapic_destroy(&uc->lapic[v]);
		close_fd(&uc->lapic_tfd[v]);
	}
	close_fd(&uc->pit_tfd);
	close_fd(&uc->epfd);
	close_fd(&uc->stop_fd);
	pthread_rwlock_destroy(&uc->target_lock);
	uc->vm = NULL;
}

json_t *userchip_stats_json(struct userchip *uc)
{
	json_t *a = json_array();

	for (int v = 0; a && v < uc->vm->ncpus; v++) {
		const struct userchip_cpu *c = &uc->cpu[v];

		if (!uc->vm->vcpus[v].local)
			continue;
		json_array_append_new(
			a,
			json_pack("{s:i, s:I, s:I, s:I, s:I, s:I}", "vcpu", v,
				  "injected", (json_int_t)c->injected, "timer",
				  (json_int_t)uc->lapic[v].timer_fired, "nmi",
				  (json_int_t)c->nmis, "init",
				  (json_int_t)c->inits, "sipi",
				  (json_int_t)c->sipis));
	}
	return a;
}
