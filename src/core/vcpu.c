/*
 * core/vcpu.c - one thread per vCPU: KVM_RUN, and each exit handed to its
 * owner (port I/O and MMIO to the io registry, system events and failures
 * to the VM life cycle). Parks while the VM is paused, returns when it stops.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/dirty_ring.h"
#include "core/vcpu.h"
#include "util/log.h"

static __thread int current_vcpu = -1;

int vcpu_self_id(void)
{
	return current_vcpu;
}

static void count_exit(struct vcpu *v, enum vcpu_exit_kind kind)
{
	atomic_fetch_add_explicit(&v->exits[kind], 1, memory_order_relaxed);
}

static void report_unknown(struct vcpu *v, enum io_space space, uint64_t addr,
			   bool is_write, uint32_t len)
{
	if (!ioreg_first_unknown(&v->vm->io, space, addr))
		return;
	pr_warn("vCPU %d: guest %s %u byte(s) at unassigned %s 0x%llx; "
		"ignored (logged once)",
		v->id, is_write ? "wrote" : "read", len,
		space == IO_SPACE_PIO ? "port" : "MMIO address",
		(unsigned long long)addr);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	/* String I/O (rep outs/ins) comes as io.count back-to-back items. */
	for (uint32_t i = 0; i < run->io.count; i++) {
		if (!ioreg_dispatch(&v->vm->io, IO_SPACE_PIO, run->io.port,
				    data, run->io.size, is_write, v->id))
			report_unknown(v, IO_SPACE_PIO, run->io.port, is_write,
				       run->io.size);
		data += run->io.size;
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint32_t len = run->mmio.len;

	if (len > sizeof(run->mmio.data))
		len = sizeof(run->mmio.data);
	if (!ioreg_dispatch(&v->vm->io, IO_SPACE_MMIO, run->mmio.phys_addr,
			    run->mmio.data, len, run->mmio.is_write, v->id))
		report_unknown(v, IO_SPACE_MMIO, run->mmio.phys_addr,
			       run->mmio.is_write, len);
}

/* An MSR KVM left to us: the userspace LAPIC's, or a #GP. */
static void handle_msr(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	bool is_write = run->exit_reason == KVM_EXIT_X86_WRMSR;
	uint64_t data = run->msr.data;
	int rc = -EINVAL;

	if (v->vm->uchip.msr)
		rc = v->vm->uchip.msr(v->vm->uchip.opaque, v, is_write,
				      run->msr.index, &data);
	if (rc == -ENOENT &&
	    ioreg_first_unknown(&v->vm->io, IO_SPACE_PIO,
				0x100000000ULL + run->msr.index))
		pr_warn("vCPU %d: guest %s unknown MSR 0x%x; #GP "
			"(logged once)",
			v->id, is_write ? "wrote" : "read", run->msr.index);
	run->msr.error = rc ? 1 : 0;
	if (!is_write && !rc)
		run->msr.data = data;
}

static void describe_regs(struct vcpu *v, char *buf, size_t len)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_REGS, &r) || ioctl(v->fd, KVM_GET_SREGS, &s)) {
		snprintf(buf, len, "registers unavailable");
		return;
	}
	snprintf(buf, len,
		 "rip=0x%llx rsp=0x%llx cs=0x%x cr0=0x%llx "
		 "cr3=0x%llx efer=0x%llx",
		 r.rip, r.rsp, s.cs.selector, s.cr0, s.cr3, s.efer);
}

static void vcpu_fail(struct vcpu *v, const char *what, unsigned long long n)
{
	char regs[192];

	describe_regs(v, regs, sizeof(regs));
	pr_err("vCPU %d: %s %llu; stopping the VM (%s)", v->id, what, n, regs);
	vm_stop(v->vm, VM_STOP_ERROR, 1);
}

static void handle_system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_stop(v->vm, VM_STOP_POWEROFF, 0);
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_stop(v->vm, VM_STOP_RESET, 0);
		break;
	default:
		vcpu_fail(v, "system event", v->run->system_event.type);
	}
}

/* Returns false when the thread should end. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		count_exit(v, VCPU_EXIT_IO);
		handle_io(v);
		return true;
	case KVM_EXIT_DIRTY_RING_FULL:
		count_exit(v, VCPU_EXIT_OTHER);
		if (dirty_ring_harvest(v->vm)) {
			vcpu_fail(v, "cannot harvest the dirty ring",
				  run->exit_reason);
			return false;
		}
		return true;
	case KVM_EXIT_MMIO:
		count_exit(v, VCPU_EXIT_MMIO);
		handle_mmio(v);
		return true;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC: ours wakes it. */
		count_exit(v, VCPU_EXIT_HLT);
		if (!v->vm->uchip.halt) {
			vcpu_fail(v,
				  "halted with no interrupt controller, "
				  "exit",
				  0);
			return false;
		}
		v->vm->uchip.halt(v->vm->uchip.opaque, v);
		return true;
	case KVM_EXIT_X86_RDMSR:
	case KVM_EXIT_X86_WRMSR:
		count_exit(v, VCPU_EXIT_MSR);
		handle_msr(v);
		return true;
	case KVM_EXIT_IRQ_WINDOW_OPEN:
		count_exit(v, VCPU_EXIT_IRQ_WINDOW);
		return true;
	case KVM_EXIT_SHUTDOWN:
		count_exit(v, VCPU_EXIT_SHUTDOWN);
		vcpu_fail(v, "triple fault (guest shutdown), exit",
			  KVM_EXIT_SHUTDOWN);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		count_exit(v, VCPU_EXIT_SYSTEM_EVENT);
		handle_system_event(v);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		count_exit(v, VCPU_EXIT_OTHER);
		vcpu_fail(v, "KVM internal error, suberror",
			  run->internal.suberror);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		count_exit(v, VCPU_EXIT_OTHER);
		vcpu_fail(v, "entry failed, hardware reason",
			  run->fail_entry.hardware_entry_failure_reason);
		return false;
	default:
		count_exit(v, VCPU_EXIT_OTHER);
		vcpu_fail(v, "unexpected exit reason", run->exit_reason);
		return false;
	}
}

/* Returns false when the VM is stopping. */
static bool wait_while_paused(struct vcpu *v)
{
	struct vm *vm = v->vm;
	bool go_on;

	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->state) == VM_PAUSED) {
		vm->parked++;
		pthread_cond_broadcast(&vm->cond);
		while (atomic_load(&vm->state) == VM_PAUSED)
			pthread_cond_wait(&vm->cond, &vm->lock);
		vm->parked--;
	}
	go_on = atomic_load(&vm->state) != VM_STOPPING;
	pthread_mutex_unlock(&vm->lock);
	return go_on;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

/*
 * vm_set_throttle: having run since throttle_from, sleep so that sleeping
 * takes @pct percent of the time (at most 50 ms at once, so a pause or stop
 * is not held up).
 */
static void throttle(struct vcpu *v, int pct)
{
	uint64_t now = now_ns(), ran, nap;
	struct timespec ts;

	if (!v->throttle_from || now - v->throttle_from > 1000000000ULL) {
		v->throttle_from = now;
		return;
	}
	ran = now - v->throttle_from;
	if (ran < 2000000)
		return;
	nap = ran * (uint64_t)pct / (uint64_t)(100 - pct);
	if (nap > 50000000)
		nap = 50000000;
	ts.tv_sec = 0;
	ts.tv_nsec = (long)nap;
	nanosleep(&ts, NULL);
	v->throttle_from = now_ns();
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	char name[16];

	current_vcpu = v->id;
	if (vm->vcpu_nice &&
	    setpriority(PRIO_PROCESS, (id_t)gettid(), vm->vcpu_nice))
		pr_debug("vCPU %d: setpriority: %s", v->id, strerror(errno));
	snprintf(name, sizeof(name), "vcpu%d", v->id);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		/*
		 * Clear the kick before looking at the state: a kick that
		 * lands after the look sets immediate_exit again, so KVM_RUN
		 * returns at once and we come round to see the new state.
		 */
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (atomic_load(&vm->state) != VM_RUNNING &&
		    !wait_while_paused(v))
			break;
		if (atomic_load(&vm->throttle_pct) > 0)
			throttle(v, atomic_load(&vm->throttle_pct));
		else
			v->throttle_from = 0;
		if (vm->uchip.prepare &&
		    !vm->uchip.prepare(vm->uchip.opaque, v))
			continue;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR) {
				count_exit(v, VCPU_EXIT_INTR);
				continue;
			}
			if (errno == EAGAIN)
				continue; /* an AP still waiting for SIPI */
			pr_err("vCPU %d: KVM_RUN failed: %s", v->id,
			       strerror(errno));
			vm_stop(vm, VM_STOP_ERROR, 1);
			break;
		}
		if (!handle_exit(v))
			break;
	}
	pthread_mutex_lock(&vm->lock);
	vm->running_threads--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int vcpu_start_thread(struct vcpu *v)
{
	int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (rc)
		return -rc;
	v->thread_started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&v->wlock);
	v->wake = true;
	pthread_cond_signal(&v->wcond);
	pthread_mutex_unlock(&v->wlock);
	if (v->thread_started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_block(struct vcpu *v, bool (*ready)(void *arg), void *arg)
{
	pthread_mutex_lock(&v->wlock);
	while (!v->wake) {
		pthread_mutex_unlock(&v->wlock);
		if (ready(arg) || atomic_load(&v->vm->state) != VM_RUNNING) {
			pthread_mutex_lock(&v->wlock);
			break;
		}
		pthread_mutex_lock(&v->wlock);
		if (!v->wake)
			pthread_cond_wait(&v->wcond, &v->wlock);
	}
	v->wake = false;
	pthread_mutex_unlock(&v->wlock);
}
