/*
 * core/vm.c - the VM: KVM VM fd, guest RAM memslots, in-kernel irqchip and
 * PIT, vCPU creation (CPUID, MSRs, boot registers), and the life cycle that
 * the control API and devices drive: start, pause, resume, stop, wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/cpuid.h"
#include "core/kvm.h"
#include "core/vcpu.h"
#include "core/dirty_ring.h"
#include "core/vm.h"
#include "machine/layout.h"
#include "util/log.h"

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_FAST_STRING 1ULL
#define PAUSE_TIMEOUT_SEC 10
#define VCPU_NICE_CLUSTER 10

const char *const vcpu_exit_kind_names[VCPU_EXIT_KINDS] = {
	[VCPU_EXIT_IO] = "io",
	[VCPU_EXIT_MMIO] = "mmio",
	[VCPU_EXIT_HLT] = "hlt",
	[VCPU_EXIT_INTR] = "intr",
	[VCPU_EXIT_SHUTDOWN] = "shutdown",
	[VCPU_EXIT_SYSTEM_EVENT] = "system_event",
	[VCPU_EXIT_MSR] = "msr",
	[VCPU_EXIT_IRQ_WINDOW] = "irq_window",
	[VCPU_EXIT_OTHER] = "other",
};

const char *const vm_state_names[] = {
	[VM_CREATED] = "created",
	[VM_RUNNING] = "running",
	[VM_PAUSED] = "paused",
	[VM_STOPPING] = "stopped",
};

static int kvm_set_line(void *opaque, uint32_t gsi, int level)
{
	struct vm *vm = opaque;
	struct kvm_irq_level irq = {.irq = gsi, .level = level};

	return ioctl(vm->vm_fd, KVM_IRQ_LINE_STATUS, &irq) < 0 ? -errno : 0;
}

static int kvm_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
	struct vm *vm = opaque;
	struct kvm_msi msi = {.address_lo = (uint32_t)addr,
			      .address_hi = (uint32_t)(addr >> 32),
			      .data = data};

	return ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -errno : 0;
}

static void lifecycle_request_stop(void *opaque, enum vm_stop_reason reason,
				   int code)
{
	vm_stop(opaque, reason, code);
}

static void kick_handler(int sig)
{
	(void)sig; /* only there to make KVM_RUN return EINTR */
}

static int install_kick_handler(struct err *e)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL))
		return err_set(e, -errno, "sigaction: %s", strerror(errno));
	return 0;
}

static int vm_ioctl(struct vm *vm, unsigned long req, unsigned long arg,
		    const char *what, struct err *e)
{
	if (ioctl(vm->vm_fd, req, arg) < 0)
		return err_set(e, -errno, "%s failed: %s", what,
			       strerror(errno));
	return 0;
}

int vm_set_ram_slot(struct vm *vm, int region, uint32_t flags)
{
	struct guest_mem_region *r = &vm->mem.region[region];
	struct kvm_userspace_memory_region slot = {
		.slot = (uint32_t)region,
		.flags = flags,
		.guest_phys_addr = r->gpa,
		.memory_size = r->size,
		.userspace_addr = (uint64_t)(uintptr_t)r->hva,
	};

	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) ? -errno : 0;
}

static int setup_memory(struct vm *vm, uint64_t ram_size, uint8_t *ram,
			struct err *e)
{
	int rc = ram ? guest_mem_use(&vm->mem, ram, ram_size) :
		       guest_mem_alloc(&vm->mem, ram_size);

	if (rc)
		return err_set(
			e, rc, "cannot allocate %llu MiB of guest RAM: %s",
			(unsigned long long)(ram_size >> 20), strerror(-rc));
	for (int i = 0; i < vm->mem.nregions; i++) {
		rc = vm_set_ram_slot(vm, i, 0);
		if (rc)
			return err_set(e, rc,
				       "KVM_SET_USER_MEMORY_REGION failed: %s",
				       strerror(-rc));
	}
	return 0;
}

/*
 * Without the in-kernel irqchip, the x2APIC MSRs (which KVM then does not
 * know) come to userspace; a filter sends IA32_APIC_BASE and the
 * TSC-deadline MSR there too, so the userspace LAPIC owns them whole.
 */
static int setup_user_msrs(struct vm *vm, struct err *e)
{
	struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR,
				     .args = {KVM_MSR_EXIT_REASON_INVAL |
					      KVM_MSR_EXIT_REASON_FILTER}};
	uint8_t deny[1] = {0}; /* one MSR per range, bit clear: deny */
	struct kvm_msr_filter f = {.flags = KVM_MSR_FILTER_DEFAULT_ALLOW};
	int rc;

	rc = vm_ioctl(vm, KVM_ENABLE_CAP, (unsigned long)&cap,
		      "KVM_CAP_X86_USER_SPACE_MSR", e);
	if (rc)
		return rc;
	f.ranges[0] = (struct kvm_msr_filter_range){
		.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
		.nmsrs = 1,
		.base = 0x1b,
		.bitmap = deny};
	f.ranges[1] = (struct kvm_msr_filter_range){
		.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
		.nmsrs = 1,
		.base = 0x6e0,
		.bitmap = deny};
	return vm_ioctl(vm, KVM_X86_SET_MSR_FILTER, (unsigned long)&f,
			"KVM_X86_SET_MSR_FILTER", e);
}

static int setup_irqchip(struct vm *vm, struct err *e)
{
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	int rc;

	rc = vm_ioctl(vm, KVM_SET_TSS_ADDR, LAYOUT_KVM_TSS, "KVM_SET_TSS_ADDR",
		      e);
	if (!rc) {
		uint64_t ident = LAYOUT_KVM_IDENT_MAP;

		rc = vm_ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR,
			      (unsigned long)&ident,
			      "KVM_SET_IDENTITY_MAP_ADDR", e);
	}
	if (!rc && vm->user_irqchip)
		return setup_user_msrs(vm, e);
	if (!rc)
		rc = vm_ioctl(vm, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP",
			      e);
	if (!rc)
		rc = vm_ioctl(vm, KVM_CREATE_PIT2, (unsigned long)&pit,
			      "KVM_CREATE_PIT2", e);
	return rc;
}

static int set_vcpu_msrs(struct vcpu *v, struct err *e)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entry[1];
	} msrs;

	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = 1;
	msrs.entry[0].index = MSR_IA32_MISC_ENABLE;
	msrs.entry[0].data = MISC_ENABLE_FAST_STRING;
	if (ioctl(v->fd, KVM_SET_MSRS, &msrs) != 1)
		return err_set(e, -EIO, "vCPU %d: KVM_SET_MSRS failed", v->id);
	return 0;
}

static int create_vcpu(struct vm *vm, struct vcpu *v, int id, struct err *e)
{
	struct kvm_cpuid2 *cpuid;
	int rc;

	v->vm = vm;
	v->id = id;
	pthread_mutex_init(&v->wlock, NULL);
	pthread_cond_init(&v->wcond, NULL);
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
	if (v->fd < 0)
		return err_set(e, -errno, "KVM_CREATE_VCPU %d failed: %s", id,
			       strerror(errno));
	v->run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE,
		      MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return err_set(e, -errno, "mmap of vCPU %d run area: %s", id,
			       strerror(errno));
	}
	if (vm->rings && (rc = dirty_ring_map(vm, v, e)))
		return rc;
	cpuid = cpuid_for_vcpu(vm->cpuid, id, vm->ncpus);
	if (!cpuid)
		return err_set(e, -ENOMEM, "out of memory for CPUID");
	rc = ioctl(v->fd, KVM_SET_CPUID2, cpuid) < 0 ? -errno : 0;
	free(cpuid);
	if (rc)
		return err_set(e, rc, "vCPU %d: KVM_SET_CPUID2: %s", id,
			       strerror(-rc));
	return set_vcpu_msrs(v, e);
}

static int vcpu_tsc_attr(struct vcpu *v, unsigned long req, int64_t *offset)
{
	struct kvm_device_attr a = {.group = KVM_VCPU_TSC_CTRL,
				    .attr = KVM_VCPU_TSC_OFFSET,
				    .addr = (uint64_t)(uintptr_t)offset};

	return ioctl(v->fd, req, &a) ? -errno : 0;
}

int vm_get_tsc_offset(struct vm *vm, int cpu, int64_t *offset)
{
	if (cpu < 0 || cpu >= vm->ncpus)
		return -EINVAL;
	return vcpu_tsc_attr(&vm->vcpus[cpu], KVM_GET_DEVICE_ATTR, offset);
}

/* Called on the vCPU's own thread (or before it runs). */
int vcpu_apply_tsc_offset(struct vcpu *v, int64_t offset)
{
	int rc = vcpu_tsc_attr(v, KVM_SET_DEVICE_ATTR, &offset);

	if (!rc)
		v->tsc_applied = offset;
	return rc;
}

void vm_tsc_slew(struct vm *vm, int64_t offset)
{
	atomic_store(&vm->tsc_target, offset);
	atomic_store(&vm->tsc_managed, true);
	for (int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].local && vm->vcpus[i].thread_started)
			vcpu_kick(&vm->vcpus[i]);
}

int vm_get_clock(struct vm *vm, struct kvm_clock_data *out)
{
	memset(out, 0, sizeof(*out));
	return ioctl(vm->vm_fd, KVM_GET_CLOCK, out) ? -errno : 0;
}

/* A cluster node joins node 0's guest TSC. */
static int join_guest_time(struct vm *vm, const struct vm_config *cfg,
			   struct err *e)
{
	if (cfg->set_tsc_offset) {
		for (int i = 0; i < vm->ncpus; i++) {
			int rc = vcpu_apply_tsc_offset(&vm->vcpus[i],
						       cfg->tsc_offset);

			if (rc)
				return err_set(e, rc,
					       "vCPU %d: cannot set the TSC "
					       "offset: %s",
					       i, strerror(-rc));
		}
		atomic_store(&vm->tsc_target, cfg->tsc_offset);
		atomic_store(&vm->tsc_managed, true);
	}
	return 0;
}

static int create_vcpus(struct vm *vm, const struct vm_config *cfg,
			struct err *e)
{
	int rc;

	vm->vcpus = calloc((size_t)vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return err_set(e, -ENOMEM, "out of memory for vCPUs");
	for (int i = 0; i < vm->ncpus; i++)
		vm->vcpus[i].fd = -1;
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0)
		return err_set(e, -EIO, "KVM_GET_VCPU_MMAP_SIZE failed");
	rc = cpuid_get_supported(vm->kvm_fd, &vm->cpuid, e);
	if (!rc && cfg->dirty_ring)
		rc = dirty_ring_enable(vm, cfg->dirty_ring, e);
	for (int i = 0; !rc && i < vm->ncpus; i++) {
		rc = create_vcpu(vm, &vm->vcpus[i], i, e);
		vm->vcpus[i].local =
			!cfg->partial || (cfg->local_cpus >> i & 1);
	}
	return rc;
}

static int init_sync(struct vm *vm, struct err *e)
{
	pthread_condattr_t ca;
	int rc;

	if (pthread_mutex_init(&vm->lock, NULL) ||
	    pthread_mutex_init(&vm->route_lock, NULL))
		return err_set(e, -ENOMEM, "pthread_mutex_init failed");
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc)
		return err_set(e, -ENOMEM, "pthread_cond_init failed");
	return 0;
}

int vm_create(struct vm *vm, const struct vm_config *cfg, struct err *e)
{
	int rc;

	memset(vm, 0, sizeof(*vm));
	vm->kvm_fd = vm->vm_fd = -1;
	vm->ncpus = cfg->ncpus;
	vm->user_irqchip = cfg->user_irqchip;
	vm->vcpu_nice = cfg->partial ? VCPU_NICE_CLUSTER : 0;
	if (cfg->ncpus < 1 || cfg->ncpus > VM_MAX_CPUS)
		return err_set(e, -EINVAL, "--cpus must be 1..%d", VM_MAX_CPUS);
	rc = init_sync(vm, e);
	if (rc)
		return rc;
	rc = ioreg_init(&vm->io);
	if (rc)
		return err_set(e, rc, "cannot set up the io registry");
	vm->irq = (struct irq_sink){.set_line = kvm_set_line,
				    .send_msi = kvm_send_msi,
				    .opaque = vm};
	vm->lc = (struct vm_lifecycle){.request_stop = lifecycle_request_stop,
				       .opaque = vm};
	rc = install_kick_handler(e);
	if (rc)
		return rc;
	rc = kvm_open(cfg->kvm_path ? cfg->kvm_path : KVM_DEFAULT_DEVICE, e);
	if (rc < 0)
		return rc;
	vm->kvm_fd = rc;
	rc = kvm_check_caps(vm->kvm_fd, e);
	if (rc)
		return rc;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return err_set(e, -errno, "KVM_CREATE_VM failed: %s",
			       strerror(errno));
	rc = setup_memory(vm, cfg->ram_size, cfg->ram, e);
	if (!rc)
		rc = setup_irqchip(vm, e);
	if (!rc)
		rc = create_vcpus(vm, cfg, e);
	if (!rc)
		rc = join_guest_time(vm, cfg, e);
	return rc;
}

void vm_destroy(struct vm *vm)
{
	vm_set_throttle(vm, 0);
	dirty_ring_free(vm);
	for (int i = 0; vm->vcpus && i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		if (v->run)
			munmap(v->run, (size_t)vm->run_size);
		if (v->fd >= 0) {
			close(v->fd);
			pthread_mutex_destroy(&v->wlock);
			pthread_cond_destroy(&v->wcond);
		}
	}
	free(vm->vcpus);
	free(vm->cpuid);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	guest_mem_free(&vm->mem);
	ioreg_destroy(&vm->io);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->route_lock);
	vm->vcpus = NULL;
	vm->vm_fd = vm->kvm_fd = -1;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type)
{
	return (struct kvm_segment){.base = 0,
				    .limit = 0xffffffff,
				    .selector = selector,
				    .type = type,
				    .present = 1,
				    .dpl = 0,
				    .db = 1,
				    .s = 1,
				    .l = 0,
				    .g = 1};
}

int vm_set_boot_regs(struct vm *vm, const struct vm_boot_regs *b, struct err *e)
{
	struct vcpu *v = &vm->vcpus[0];
	struct kvm_sregs s;
	struct kvm_regs r;

	if (ioctl(v->fd, KVM_GET_SREGS, &s))
		return err_set(e, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	/* PVH: 32-bit protected mode, flat segments, paging off. */
	s.cs = flat_segment(0x10, 0xb); /* execute/read, accessed */
	s.ds = flat_segment(0x18, 0x3); /* read/write, accessed */
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.cr0 = 0x11; /* PE | ET */
	s.cr4 = 0;
	s.efer = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &s))
		return err_set(e, -errno, "KVM_SET_SREGS: %s", strerror(errno));
	memset(&r, 0, sizeof(r));
	r.rip = b->entry;
	r.rbx = b->ebx;
	r.rflags = 0x2;
	if (ioctl(v->fd, KVM_SET_REGS, &r))
		return err_set(e, -errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

#define CR0_PE 0x1ULL
#define CR0_ET 0x10ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

int vm_set_boot_regs_long(struct vm *vm, const struct vm_boot_regs_long *b,
			  struct err *e)
{
	struct vcpu *v = &vm->vcpus[0];
	struct kvm_sregs s;
	struct kvm_regs r;

	if (ioctl(v->fd, KVM_GET_SREGS, &s))
		return err_set(e, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	s.cs = flat_segment(0x10, 0xb); /* execute/read, accessed */
	s.cs.l = 1;
	s.cs.db = 0;
	s.ds = flat_segment(0x18, 0x3); /* read/write, accessed */
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.gdt.base = b->gdt_base;
	s.gdt.limit = b->gdt_limit;
	s.cr0 = CR0_PE | CR0_ET | CR0_PG;
	s.cr3 = b->cr3;
	s.cr4 = CR4_PAE;
	s.efer = EFER_LME | EFER_LMA;
	if (ioctl(v->fd, KVM_SET_SREGS, &s))
		return err_set(e, -errno, "KVM_SET_SREGS: %s", strerror(errno));
	memset(&r, 0, sizeof(r));
	r.rip = b->entry;
	r.rsi = b->rsi;
	r.rflags = 0x2; /* IF clear */
	if (ioctl(v->fd, KVM_SET_REGS, &r))
		return err_set(e, -errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

int vm_start(struct vm *vm, struct err *e)
{
	clock_gettime(CLOCK_MONOTONIC, &vm->started);
	atomic_store(&vm->state, VM_RUNNING);
	for (int i = 0; i < vm->ncpus; i++) {
		int rc;

		if (!vm->vcpus[i].local)
			continue;
		pthread_mutex_lock(&vm->lock);
		vm->running_threads++;
		pthread_mutex_unlock(&vm->lock);
		rc = vcpu_start_thread(&vm->vcpus[i]);
		if (rc) {
			pthread_mutex_lock(&vm->lock);
			vm->running_threads--;
			pthread_mutex_unlock(&vm->lock);
			vm_stop(vm, VM_STOP_ERROR, 1);
			return err_set(e, rc, "cannot start vCPU %d thread: %s",
				       i, strerror(-rc));
		}
	}
	return 0;
}

static void kick_all(struct vm *vm)
{
	if (!vm->vcpus)
		return;
	for (int i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
}

static uint64_t ts_diff_ns(const struct timespec *a, const struct timespec *b)
{
	return (uint64_t)(b->tv_sec - a->tv_sec) * 1000000000ULL +
	       (uint64_t)(b->tv_nsec - a->tv_nsec);
}

void vm_stop(struct vm *vm, enum vm_stop_reason reason, int code)
{
	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->state) != VM_STOPPING) {
		vm->stop_reason = reason;
		vm->stop_code = code;
		atomic_store(&vm->state, VM_STOPPING);
	}
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
}

/* ---- throttling (vm_set_throttle) ---- */

#define THROTTLE_TICK_NS 10000000L

static void *throttle_ticker(void *arg)
{
	struct vm *vm = arg;
	struct timespec tick = {0, THROTTLE_TICK_NS};

	pthread_setname_np(pthread_self(), "throttle");
	while (atomic_load(&vm->throttle_pct) > 0 &&
	       atomic_load(&vm->state) != VM_STOPPING) {
		nanosleep(&tick, NULL);
		if (atomic_load(&vm->state) == VM_RUNNING)
			kick_all(vm);
	}
	return NULL;
}

int vm_set_throttle(struct vm *vm, int pct)
{
	int rc;

	if (pct < 0 || pct > 99)
		return -EINVAL;
	atomic_store(&vm->throttle_pct, pct);
	if (!pct && vm->throttle_thread_up) {
		pthread_join(vm->throttle_thread, NULL);
		vm->throttle_thread_up = false;
	}
	if (pct && !vm->throttle_thread_up) {
		rc = pthread_create(&vm->throttle_thread, NULL, throttle_ticker,
				    vm);
		if (rc) {
			atomic_store(&vm->throttle_pct, 0);
			return -rc;
		}
		vm->throttle_thread_up = true;
	}
	return 0;
}

int vm_pause(struct vm *vm)
{
	struct timespec deadline;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->state) == VM_PAUSED) {
		rc = -EALREADY;
		goto out;
	}
	if (atomic_load(&vm->state) != VM_RUNNING) {
		rc = -EINVAL;
		goto out;
	}
	atomic_store(&vm->state, VM_PAUSED);
	clock_gettime(CLOCK_MONOTONIC, &vm->pause_began);
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
	pthread_mutex_lock(&vm->lock);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += PAUSE_TIMEOUT_SEC;
	/* Paused means every vCPU thread has left KVM_RUN and parked. */
	while (vm->parked < vm->running_threads &&
	       atomic_load(&vm->state) == VM_PAUSED && rc == 0)
		if (pthread_cond_timedwait(&vm->cond, &vm->lock, &deadline) ==
		    ETIMEDOUT)
			rc = -ETIMEDOUT;
out:
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

int vm_resume(struct vm *vm)
{
	struct timespec now;
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->state) == VM_RUNNING) {
		rc = -EALREADY;
	} else if (atomic_load(&vm->state) != VM_PAUSED) {
		rc = -EINVAL;
	} else {
		clock_gettime(CLOCK_MONOTONIC, &now);
		atomic_fetch_add(&vm->paused_ns,
				 ts_diff_ns(&vm->pause_began, &now));
		atomic_store(&vm->state, VM_RUNNING);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

enum vm_stop_reason vm_wait(struct vm *vm, int *code)
{
	pthread_mutex_lock(&vm->lock);
	while (atomic_load(&vm->state) != VM_STOPPING)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		if (v->thread_started) {
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
	*code = vm->stop_code;
	return vm->stop_reason;
}

enum vm_state vm_get_state(struct vm *vm)
{
	return atomic_load(&vm->state);
}

double vm_uptime(struct vm *vm)
{
	struct timespec now;

	if (atomic_load(&vm->state) == VM_CREATED)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)ts_diff_ns(&vm->started, &now) / 1e9;
}

uint64_t vm_exit_count(struct vm *vm, int cpu, enum vcpu_exit_kind kind)
{
	if (cpu < 0 || cpu >= vm->ncpus || kind >= VCPU_EXIT_KINDS)
		return 0;
	return atomic_load_explicit(&vm->vcpus[cpu].exits[kind],
				    memory_order_relaxed);
}
