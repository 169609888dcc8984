/*
 * tests/tools/vmstate_selftest.c - migration/vmstate against real KVM,
 * without the machine layer: a VM (vm_create, small RAM) whose boot vCPU
 * runs, in long mode, a loop incrementing a counter in guest memory. It is
 * started, paused, captured and encoded; a second VM of the same shape
 * gets a copy of the RAM and the decoded state, and must carry on: RIP as
 * captured before it starts, the counter growing from where it was.
 *
 * Two passes: the in-kernel irqchip with 2 vCPUs (the AP waits for its
 * SIPI), and the userspace irqchip with 1 vCPU. Prints
 * "vmstate selftest: ok ..." and exits 0, or a clear line and exits 1.
 *
 * usage: vmstate_selftest [--kvm PATH] [--only kernel|user]
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"
#include "migration/vmstate.h"

#define RAM_SIZE (16ULL << 20)
#define GDT_GPA 0x500ULL
#define PML4_GPA 0x1000ULL
#define PDPT_GPA 0x2000ULL
#define PD_GPA 0x3000ULL
#define COUNTER_GPA 0x8000ULL
#define CODE_GPA 0x10000ULL
#define WATCHDOG_SEC 60
#define WAIT_MS 5000

static const char *kvm_path;

static void watchdog(int sig)
{
	static const char msg[] = "vmstate selftest: FAILED: watchdog: no "
				  "result after 60 s\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vmstate selftest: FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static volatile uint64_t *counter(struct vm *vm)
{
	return guest_mem_ptr(&vm->mem, COUNTER_GPA, 8);
}

/* Wait until the counter exceeds @above; false after WAIT_MS. */
static bool wait_counter(struct vm *vm, uint64_t above)
{
	uint64_t end = now_ms() + WAIT_MS;

	while (now_ms() < end) {
		if (*counter(vm) > above)
			return true;
		usleep(1000);
	}
	return false;
}

/* Stop the VM and join its threads, with a timeout. */
static int stop_vm(struct vm *vm)
{
	uint64_t end = now_ms() + WAIT_MS;
	int code, left;

	vm_stop(vm, VM_STOP_POWEROFF, 0);
	for (;;) {
		pthread_mutex_lock(&vm->lock);
		left = vm->running_threads;
		pthread_mutex_unlock(&vm->lock);
		if (!left)
			break;
		if (now_ms() > end)
			return fail("%d vCPU thread(s) still running %d ms "
				    "after the stop",
				    left, WAIT_MS);
		vm_stop(vm, VM_STOP_POWEROFF, 0); /* kick again */
		usleep(1000);
	}
	vm_wait(vm, &code); /* the threads are done: joins at once */
	return 0;
}

static void setup_guest(struct vm *vm)
{
	/* inc qword [COUNTER_GPA]; jmp back */
	static const uint8_t code[] = {0x48, 0xff, 0x04, 0x25, 0x00,
				       0x80, 0x00, 0x00, 0xeb, 0xf6};
	static const uint64_t gdt[4] = {0, 0, 0x00af9b000000ffffULL,
					0x00cf93000000ffffULL};
	uint64_t *pml4 = guest_mem_ptr(&vm->mem, PML4_GPA, 4096);
	uint64_t *pdpt = guest_mem_ptr(&vm->mem, PDPT_GPA, 4096);
	uint64_t *pd = guest_mem_ptr(&vm->mem, PD_GPA, 4096);

	pml4[0] = PDPT_GPA | 3;
	pdpt[0] = PD_GPA | 3;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | 0x83; /* 2 MiB, present, writable */
	guest_mem_write(&vm->mem, GDT_GPA, gdt, sizeof(gdt));
	guest_mem_write(&vm->mem, CODE_GPA, code, sizeof(code));
}

static int create(struct vm *vm, int ncpus, bool user_irqchip)
{
	struct vm_config cfg = {.kvm_path = kvm_path,
				.ram_size = RAM_SIZE,
				.ncpus = ncpus,
				.user_irqchip = user_irqchip};
	struct err e = {0};

	if (vm_create(vm, &cfg, &e)) {
		vm_destroy(vm);
		return fail("vm_create: %s", e.msg);
	}
	return 0;
}

/* The MSRs KVM lists that the capture left out (unreadable). */
static void report_msrs(struct vm *vm, const struct vmstate_vcpu *c)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	struct kvm_msr_list *l;
	int dropped = 0;

	ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe);
	l = calloc(1, sizeof(*l) + (probe.nmsrs + 1) * sizeof(uint32_t));
	if (!l)
		return;
	l->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) == 0) {
		printf("  MSRs: %u listed by KVM, %u captured; not captured:",
		       l->nmsrs, c->nmsrs);
		for (uint32_t i = 0; i < l->nmsrs; i++) {
			bool found = false;

			for (uint32_t k = 0; k < c->nmsrs && !found; k++)
				found = c->msrs[k].index == l->indices[i];
			if (!found) {
				printf(" 0x%x", l->indices[i]);
				dropped++;
			}
		}
		printf("%s\n", dropped ? "" : " none");
	}
	free(l);
}

static bool same_state(const struct vmstate *a, const struct vmstate *b)
{
	for (int i = 0; i < a->ncpus; i++) {
		const struct vmstate_vcpu *x = &a->vcpu[i], *y = &b->vcpu[i];

		if (memcmp(&x->regs, &y->regs, sizeof(x->regs)) ||
		    memcmp(&x->sregs, &y->sregs, sizeof(x->sregs)) ||
		    x->xsave_len != y->xsave_len ||
		    memcmp(x->xsave, y->xsave, x->xsave_len) ||
		    x->nmsrs != y->nmsrs || x->tsc_offset != y->tsc_offset)
			return false;
	}
	return a->ncpus == b->ncpus &&
	       !memcmp(&a->clock, &b->clock, sizeof(a->clock));
}

static int run_pass(int ncpus, bool user_irqchip)
{
	const char *mode = user_irqchip ? "user" : "kernel";
	struct vmstate st = {0}, st2 = {0};
	struct vm a, b;
	struct err e = {0};
	struct kvm_regs regs;
	uint8_t *buf = NULL;
	size_t len = 0;
	uint64_t c_capture, c_restored, c_after;
	uint64_t rip;
	int64_t tsc2 = 0;
	int rc = -1;

	if (create(&a, ncpus, user_irqchip))
		return -1;
	setup_guest(&a);
	struct vm_boot_regs_long boot = {.entry = CODE_GPA,
					 .cr3 = PML4_GPA,
					 .gdt_base = GDT_GPA,
					 .gdt_limit = 31};
	if (vm_set_boot_regs_long(&a, &boot, &e)) {
		fail("[%s] boot registers: %s", mode, e.msg);
		goto out_a;
	}
	if (vm_start(&a, &e)) {
		fail("[%s] vm_start: %s", mode, e.msg);
		goto out_a;
	}
	if (!wait_counter(&a, 1000)) {
		fail("[%s] first VM: the guest counter is at %llu after %d ms",
		     mode, (unsigned long long)*counter(&a), WAIT_MS);
		stop_vm(&a);
		goto out_a;
	}
	rc = vm_pause(&a);
	if (rc) {
		fail("[%s] vm_pause: %s", mode, strerror(-rc));
		rc = -1;
		stop_vm(&a);
		goto out_a;
	}
	rc = -1;
	c_capture = *counter(&a);
	if (vmstate_capture(&a, &st, &e)) {
		fail("[%s] vmstate_capture: %s", mode, e.msg);
		stop_vm(&a);
		goto out_a;
	}
	rip = st.vcpu[0].regs.rip;
	if (*counter(&a) != c_capture) {
		fail("[%s] the counter moved while paused", mode);
		stop_vm(&a);
		goto out_a;
	}
	if (stop_vm(&a))
		goto out_a;
	if (vmstate_encode(&st, &buf, &len)) {
		fail("[%s] vmstate_encode: out of memory", mode);
		goto out_a;
	}
	if (vmstate_decode(buf, len, &st2, &e)) {
		fail("[%s] vmstate_decode of our own stream: %s", mode, e.msg);
		goto out_a;
	}
	if (!same_state(&st, &st2)) {
		fail("[%s] decoded state differs from the captured one", mode);
		goto out_a;
	}
	printf("[%s irqchip, %d vCPU(s)] captured: rip=0x%llx counter=%llu "
	       "stream=%zu bytes xsave=%u bytes (KVM_CAP_XSAVE2=%d) xcrs=%s "
	       "tsc_offset=%lld\n",
	       mode, ncpus, (unsigned long long)rip,
	       (unsigned long long)c_capture, len, st.vcpu[0].xsave_len,
	       ioctl(a.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2),
	       st.vcpu[0].has_xcrs ? "yes" : "no",
	       (long long)st.vcpu[0].tsc_offset);
	if (!user_irqchip)
		printf("  mp_state: vCPU0 %u%s%u\n", st.vcpu[0].mp.mp_state,
		       ncpus > 1 ? ", vCPU1 " : "",
		       ncpus > 1 ? st.vcpu[1].mp.mp_state : 0);
	report_msrs(&a, &st.vcpu[0]);

	if (create(&b, ncpus, user_irqchip))
		goto out_a;
	for (int i = 0; i < a.mem.nregions; i++)
		memcpy(b.mem.region[i].hva, a.mem.region[i].hva,
		       a.mem.region[i].size);
	if (vmstate_restore(&b, &st2, &e)) {
		fail("[%s] vmstate_restore: %s", mode, e.msg);
		goto out_b;
	}
	if (ioctl(b.vcpus[0].fd, KVM_GET_REGS, &regs)) {
		fail("[%s] KVM_GET_REGS after restore: %s", mode,
		     strerror(errno));
		goto out_b;
	}
	if (regs.rip != rip) {
		fail("[%s] RIP after restore 0x%llx, captured 0x%llx", mode,
		     (unsigned long long)regs.rip, (unsigned long long)rip);
		goto out_b;
	}
	if (vm_get_tsc_offset(&b, 0, &tsc2) || tsc2 != st.vcpu[0].tsc_offset) {
		fail("[%s] TSC offset after restore %lld, captured %lld", mode,
		     (long long)tsc2, (long long)st.vcpu[0].tsc_offset);
		goto out_b;
	}
	c_restored = *counter(&b);
	if (c_restored != c_capture) {
		fail("[%s] counter in the copied RAM %llu, captured %llu", mode,
		     (unsigned long long)c_restored,
		     (unsigned long long)c_capture);
		goto out_b;
	}
	if (vm_start(&b, &e)) {
		fail("[%s] vm_start of the restored VM: %s", mode, e.msg);
		goto out_b;
	}
	if (!wait_counter(&b, c_capture + 1000)) {
		fail("[%s] restored VM: the counter is at %llu after %d ms "
		     "(captured at %llu)",
		     mode, (unsigned long long)*counter(&b), WAIT_MS,
		     (unsigned long long)c_capture);
		stop_vm(&b);
		goto out_b;
	}
	c_after = *counter(&b);
	if (stop_vm(&b))
		goto out_b;
	printf("  restored: rip=0x%llx as captured; counter %llu -> %llu\n",
	       (unsigned long long)regs.rip, (unsigned long long)c_capture,
	       (unsigned long long)c_after);
	rc = 0;
out_b:
	vm_destroy(&b);
out_a:
	vm_destroy(&a);
	vmstate_free(&st);
	vmstate_free(&st2);
	free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	const char *only = NULL;
	int passes = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--kvm") && i + 1 < argc) {
			kvm_path = argv[++i];
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else {
			fprintf(stderr,
				"usage: %s [--kvm PATH] "
				"[--only kernel|user]\n",
				argv[0]);
			return 2;
		}
	}
	signal(SIGALRM, watchdog);
	alarm(WATCHDOG_SEC);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!only || !strcmp(only, "kernel")) {
		if (run_pass(2, false))
			return 1;
		passes++;
	}
	if (!only || !strcmp(only, "user")) {
		if (run_pass(1, true))
			return 1;
		passes++;
	}
	printf("vmstate selftest: ok (%d pass%s: capture, encode, decode, "
	       "restore, the guest carries on)\n",
	       passes, passes == 1 ? "" : "es");
	return 0;
}
