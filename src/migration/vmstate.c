/*
 * migration/vmstate.c - capture and restore of the KVM state that is not in
 * guest RAM, and its byte stream.
 *
 * The stream is little-endian:
 *
 *   header  "DVMS" | version u16 | has_irqchip u8 | reserved u8 |
 *           ncpus u32 | ram_size u64                          (20 bytes)
 *   records type u16 | length u32 | payload[length]
 *
 * and ends with an END record (type 0, length 0) and nothing after it, so
 * that a stream cut at a record boundary is refused too. A vCPU record's
 * payload starts with the vCPU index (u32). Payloads that are KVM structs
 * (regs, sregs, xcrs, lapic, events, mp state, debug registers, irqchip,
 * PIT, clock) are the x86-64 KVM ABI bytes, which are little-endian and of
 * fixed layout; their length must be exactly the struct's size. A decoder
 * skips record types it does not know, and refuses a duplicate record, a
 * record for a vCPU index >= ncpus, a record that does not belong (LAPIC,
 * MP state, irqchip or PIT without the in-kernel irqchip) and a stream
 * missing a mandatory record.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "migration/vmstate.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "the KVM ABI structs are stored as little-endian bytes");

#ifndef KVM_CAP_XSAVE2
#define KVM_CAP_XSAVE2 208
#endif
#ifndef KVM_GET_XSAVE2
#define KVM_GET_XSAVE2 _IOR(KVMIO, 0xcf, struct kvm_xsave)
#endif
#ifndef KVM_VCPU_TSC_CTRL
#define KVM_VCPU_TSC_CTRL 0
#define KVM_VCPU_TSC_OFFSET 0
#endif
#ifndef KVM_CLOCK_REALTIME
#define KVM_CLOCK_REALTIME (1 << 2)
#endif

#define MSR_IA32_TSC 0x10
#define MSR_X2APIC_FIRST 0x800
#define MSR_X2APIC_LAST 0x8ff

#define VMS_MAGIC "DVMS"
#define VMS_HDR_LEN 20
#define VMS_REC_HDR_LEN 6
#define VMS_MSR_LEN 12 /* index u32, data u64 */

enum vms_rec {
	VMS_REC_END = 0,
	/* VM records */
	VMS_REC_CLOCK = 1,
	VMS_REC_PIC_MASTER = 2,
	VMS_REC_PIC_SLAVE = 3,
	VMS_REC_IOAPIC = 4,
	VMS_REC_PIT = 5,
	VMS_REC_VM_LAST = VMS_REC_PIT,
	/* vCPU records: payload starts with the vCPU index (u32) */
	VMS_REC_REGS = 0x100,
	VMS_REC_SREGS = 0x101,
	VMS_REC_XCRS = 0x102,
	VMS_REC_LAPIC = 0x103,
	VMS_REC_EVENTS = 0x104,
	VMS_REC_MP = 0x105,
	VMS_REC_DEBUGREGS = 0x106,
	VMS_REC_TSC = 0x107,
	VMS_REC_XSAVE = 0x108,
	VMS_REC_MSRS = 0x109,
	VMS_REC_CPU_LAST = VMS_REC_MSRS,
};

#define CPU_REC_BIT(t) (1u << ((t)-VMS_REC_REGS))
#define VM_REC_BIT(t) (1u << (t))

/* ---- capture ---- */

static int vcpu_ioctl(struct vcpu *v, unsigned long req, void *arg,
		      const char *what, struct err *e)
{
	if (ioctl(v->fd, req, arg) < 0)
		return err_set(e, -errno, "vCPU %d: %s failed: %s", v->id, what,
			       strerror(errno));
	return 0;
}

static int vmfd_ioctl(struct vm *vm, unsigned long req, void *arg,
		      const char *what, struct err *e)
{
	if (ioctl(vm->vm_fd, req, arg) < 0)
		return err_set(e, -errno, "VM: %s failed: %s", what,
			       strerror(errno));
	return 0;
}

static bool msr_wanted(uint32_t index)
{
	return index != MSR_IA32_TSC &&
	       (index < MSR_X2APIC_FIRST || index > MSR_X2APIC_LAST);
}

/* The MSR indices KVM saves (KVM_GET_MSR_INDEX_LIST), filtered. */
static int get_msr_list(struct vm *vm, uint32_t **out, uint32_t *n,
			struct err *e)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	struct kvm_msr_list *list;
	uint32_t *idx;
	uint32_t k = 0;

	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 &&
	    errno != E2BIG)
		return err_set(e, -errno, "KVM_GET_MSR_INDEX_LIST failed: %s",
			       strerror(errno));
	list = calloc(1, sizeof(*list) + (probe.nmsrs + 1) * sizeof(uint32_t));
	idx = calloc(probe.nmsrs + 1, sizeof(uint32_t));
	if (!list || !idx) {
		free(list);
		free(idx);
		return err_set(e, -ENOMEM, "out of memory for the MSR list");
	}
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		int rc = -errno;

		free(list);
		free(idx);
		return err_set(e, rc, "KVM_GET_MSR_INDEX_LIST failed: %s",
			       strerror(-rc));
	}
	for (uint32_t i = 0; i < list->nmsrs && i < probe.nmsrs; i++)
		if (msr_wanted(list->indices[i]))
			idx[k++] = list->indices[i];
	free(list);
	*n = k;
	*out = idx;
	return 0;
}

/*
 * Read the @n MSRs @idx. KVM_GET_MSRS stops at the first MSR it cannot
 * read and returns how many it read: drop that one and go on after it, so
 * that c->msrs ends up the readable subset.
 */
static int capture_msrs(struct vcpu *v, const uint32_t *idx, uint32_t n,
			struct vmstate_vcpu *c, struct err *e)
{
	struct kvm_msrs *m;
	uint32_t start = 0, kept = 0;
	int rc = 0;

	m = calloc(1, sizeof(*m) + (n + 1) * sizeof(struct kvm_msr_entry));
	if (!m)
		return err_set(e, -ENOMEM, "out of memory for MSRs");
	c->nmsrs = 0;
	while (start < n) {
		int got;

		memset(m, 0, sizeof(*m) + (n - start) * sizeof(m->entries[0]));
		m->nmsrs = n - start;
		for (uint32_t k = 0; k < n - start; k++)
			m->entries[k].index = idx[start + k];
		got = ioctl(v->fd, KVM_GET_MSRS, m);
		if (got < 0 || (uint32_t)got > n - start) {
			rc = err_set(e, got < 0 ? -errno : -EIO,
				     "vCPU %d: KVM_GET_MSRS failed: %s", v->id,
				     got < 0 ? strerror(errno) : "bad count");
			goto out;
		}
		for (int k = 0; k < got; k++) {
			if (kept == VMSTATE_MAX_MSRS) {
				rc = err_set(e, -E2BIG,
					     "vCPU %d: KVM_GET_MSRS: more than "
					     "%d readable MSRs",
					     v->id, VMSTATE_MAX_MSRS);
				goto out;
			}
			c->msrs[kept].index = m->entries[k].index;
			c->msrs[kept].data = m->entries[k].data;
			kept++;
		}
		start += (uint32_t)got;
		if (start < n)
			start++; /* idx[start] is not readable: drop it */
	}
	c->nmsrs = kept;
out:
	free(m);
	return rc;
}

static int capture_xsave(struct vm *vm, struct vcpu *v, struct vmstate_vcpu *c,
			 struct err *e)
{
	int size = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	int rc;

	if (size <= 0) {
		c->xsave_len = VMSTATE_XSAVE_MIN;
		return vcpu_ioctl(v, KVM_GET_XSAVE, c->xsave, "KVM_GET_XSAVE",
				  e);
	}
	if (size > VMSTATE_XSAVE_MAX)
		return err_set(e, -E2BIG,
			       "vCPU %d: KVM_GET_XSAVE2 wants %d bytes, more "
			       "than the %d kept",
			       v->id, size, VMSTATE_XSAVE_MAX);
	if (size < VMSTATE_XSAVE_MIN)
		size = VMSTATE_XSAVE_MIN;
	rc = vcpu_ioctl(v, KVM_GET_XSAVE2, c->xsave, "KVM_GET_XSAVE2", e);
	if (!rc)
		c->xsave_len = (uint32_t)size;
	return rc;
}

static int tsc_attr(struct vcpu *v, unsigned long req, int64_t *offset,
		    const char *what, struct err *e)
{
	struct kvm_device_attr a = {.group = KVM_VCPU_TSC_CTRL,
				    .attr = KVM_VCPU_TSC_OFFSET,
				    .addr = (uint64_t)(uintptr_t)offset};

	return vcpu_ioctl(v, req, &a, what, e);
}

static int capture_vcpu(struct vm *vm, struct vcpu *v, struct vmstate_vcpu *c,
			const uint32_t *msr_idx, uint32_t nmsr, bool xcrs,
			struct err *e)
{
	int rc;

	rc = vcpu_ioctl(v, KVM_GET_REGS, &c->regs, "KVM_GET_REGS", e);
	if (!rc)
		rc = vcpu_ioctl(v, KVM_GET_SREGS, &c->sregs, "KVM_GET_SREGS",
				e);
	if (!rc && xcrs) {
		rc = vcpu_ioctl(v, KVM_GET_XCRS, &c->xcrs, "KVM_GET_XCRS", e);
		c->has_xcrs = !rc;
	}
	if (!rc && !vm->user_irqchip)
		rc = vcpu_ioctl(v, KVM_GET_LAPIC, &c->lapic, "KVM_GET_LAPIC",
				e);
	if (!rc)
		rc = vcpu_ioctl(v, KVM_GET_VCPU_EVENTS, &c->events,
				"KVM_GET_VCPU_EVENTS", e);
	if (!rc && !vm->user_irqchip)
		rc = vcpu_ioctl(v, KVM_GET_MP_STATE, &c->mp, "KVM_GET_MP_STATE",
				e);
	if (!rc)
		rc = vcpu_ioctl(v, KVM_GET_DEBUGREGS, &c->debugregs,
				"KVM_GET_DEBUGREGS", e);
	if (!rc)
		rc = capture_xsave(vm, v, c, e);
	if (!rc)
		rc = tsc_attr(v, KVM_GET_DEVICE_ATTR, &c->tsc_offset,
			      "KVM_GET_DEVICE_ATTR(TSC_OFFSET)", e);
	if (!rc)
		rc = capture_msrs(v, msr_idx, nmsr, c, e);
	return rc;
}

static int capture_vm(struct vm *vm, struct vmstate *st, struct err *e)
{
	int rc = 0;

	if (st->has_irqchip) {
		st->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
		st->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
		st->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
		rc = vmfd_ioctl(vm, KVM_GET_IRQCHIP, &st->pic_master,
				"KVM_GET_IRQCHIP(PIC master)", e);
		if (!rc)
			rc = vmfd_ioctl(vm, KVM_GET_IRQCHIP, &st->pic_slave,
					"KVM_GET_IRQCHIP(PIC slave)", e);
		if (!rc)
			rc = vmfd_ioctl(vm, KVM_GET_IRQCHIP, &st->ioapic,
					"KVM_GET_IRQCHIP(IOAPIC)", e);
		if (!rc)
			rc = vmfd_ioctl(vm, KVM_GET_PIT2, &st->pit,
					"KVM_GET_PIT2", e);
	}
	if (!rc)
		rc = vmfd_ioctl(vm, KVM_GET_CLOCK, &st->clock, "KVM_GET_CLOCK",
				e);
	return rc;
}

int vmstate_capture(struct vm *vm, struct vmstate *st, struct err *e)
{
	uint32_t *msr_idx = NULL, nmsr = 0;
	bool xcrs;
	int rc;

	memset(st, 0, sizeof(*st));
	st->ncpus = vm->ncpus;
	st->ram_size = vm->mem.ram_size;
	st->has_irqchip = !vm->user_irqchip;
	st->vcpu = calloc((size_t)vm->ncpus, sizeof(*st->vcpu));
	if (!st->vcpu)
		return err_set(e, -ENOMEM, "out of memory for vCPU state");
	xcrs = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
	rc = get_msr_list(vm, &msr_idx, &nmsr, e);
	for (int i = 0; !rc && i < vm->ncpus; i++)
		rc = capture_vcpu(vm, &vm->vcpus[i], &st->vcpu[i], msr_idx,
				  nmsr, xcrs, e);
	free(msr_idx);
	if (!rc)
		rc = capture_vm(vm, st, e);
	if (rc)
		vmstate_free(st);
	return rc;
}

void vmstate_free(struct vmstate *st)
{
	free(st->vcpu);
	memset(st, 0, sizeof(*st));
}

/* ---- restore ---- */

/* Does vCPU @v already hold @want in MSR @index? */
static bool msr_holds(struct vcpu *v, uint32_t index, uint64_t want)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entry[1];
	} m;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.entry[0].index = index;
	return ioctl(v->fd, KVM_GET_MSRS, &m) == 1 && m.entry[0].data == want;
}

/*
 * KVM_SET_MSRS returns how many MSRs it set, stopping at the first it
 * refuses. A refused MSR that already holds the captured value loses
 * nothing (seen: MSR_KVM_POLL_CONTROL = 0 without the in-kernel irqchip
 * on PVM): go on after it. Any other refusal is an error naming the MSR.
 */
static int restore_msrs(struct vcpu *v, const struct vmstate_vcpu *c,
			struct err *e)
{
	struct kvm_msrs *m;
	uint32_t n = c->nmsrs, start = 0;
	int rc = 0;

	if (!n)
		return 0;
	if (n > VMSTATE_MAX_MSRS)
		return err_set(e, -EINVAL, "vCPU %d: %u MSRs", v->id, n);
	m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	if (!m)
		return err_set(e, -ENOMEM, "out of memory for MSRs");
	while (start < n) {
		int got;

		memset(m, 0, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
		m->nmsrs = n - start;
		for (uint32_t i = 0; i < n - start; i++) {
			m->entries[i].index = c->msrs[start + i].index;
			m->entries[i].data = c->msrs[start + i].data;
		}
		got = ioctl(v->fd, KVM_SET_MSRS, m);
		if (got < 0) {
			rc = err_set(e, -errno,
				     "vCPU %d: KVM_SET_MSRS failed: %s", v->id,
				     strerror(errno));
			break;
		}
		if ((uint32_t)got >= n - start)
			break;
		start += (uint32_t)got;
		if (!msr_holds(v, c->msrs[start].index, c->msrs[start].data)) {
			rc = err_set(e, -EINVAL,
				     "vCPU %d: KVM_SET_MSRS set %u of %u MSRs: "
				     "MSR 0x%x refused",
				     v->id, start, n, c->msrs[start].index);
			break;
		}
		start++;
	}
	free(m);
	return rc;
}

static int restore_xsave(struct vcpu *v, const struct vmstate_vcpu *c,
			 struct err *e)
{
	uint8_t *buf;
	int rc;

	if (c->xsave_len < VMSTATE_XSAVE_MIN ||
	    c->xsave_len > VMSTATE_XSAVE_MAX)
		return err_set(e, -EINVAL, "vCPU %d: XSAVE area of %u bytes",
			       v->id, c->xsave_len);
	/* KVM reads as many bytes as its XSAVE2 size: give it zeroes. */
	buf = calloc(1, VMSTATE_XSAVE_MAX);
	if (!buf)
		return err_set(e, -ENOMEM, "out of memory for XSAVE");
	memcpy(buf, c->xsave, c->xsave_len);
	rc = vcpu_ioctl(v, KVM_SET_XSAVE, buf, "KVM_SET_XSAVE", e);
	free(buf);
	return rc;
}

static int restore_vcpu(struct vm *vm, struct vcpu *v,
			const struct vmstate_vcpu *c, struct err *e)
{
	struct kvm_sregs sregs = c->sregs;
	struct kvm_regs regs = c->regs;
	struct kvm_xcrs xcrs = c->xcrs;
	struct kvm_lapic_state lapic = c->lapic;
	struct kvm_mp_state mp = c->mp;
	struct kvm_vcpu_events ev = c->events;
	struct kvm_debugregs dr = c->debugregs;
	int64_t tsc = c->tsc_offset;
	int rc;

	rc = vcpu_ioctl(v, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS", e);
	if (!rc)
		rc = vcpu_ioctl(v, KVM_SET_REGS, &regs, "KVM_SET_REGS", e);
	if (!rc)
		rc = restore_xsave(v, c, e);
	if (!rc && c->has_xcrs)
		rc = vcpu_ioctl(v, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS", e);
	if (!rc)
		rc = restore_msrs(v, c, e);
	if (!rc && !vm->user_irqchip)
		rc = vcpu_ioctl(v, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC", e);
	if (!rc && !vm->user_irqchip)
		rc = vcpu_ioctl(v, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE",
				e);
	if (!rc) {
		/* As QEMU: the pending NMI and SIPI vector are valid too. */
		ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING |
			    KVM_VCPUEVENT_VALID_SIPI_VECTOR;
		rc = vcpu_ioctl(v, KVM_SET_VCPU_EVENTS, &ev,
				"KVM_SET_VCPU_EVENTS", e);
	}
	if (!rc)
		rc = vcpu_ioctl(v, KVM_SET_DEBUGREGS, &dr, "KVM_SET_DEBUGREGS",
				e);
	if (!rc)
		rc = tsc_attr(v, KVM_SET_DEVICE_ATTR, &tsc,
			      "KVM_SET_DEVICE_ATTR(TSC_OFFSET)", e);
	if (!rc)
		v->tsc_applied = tsc;
	return rc;
}

static int restore_vm(struct vm *vm, const struct vmstate *st, struct err *e)
{
	struct kvm_clock_data clock = st->clock;
	int rc = 0;

	if (st->has_irqchip) {
		struct kvm_irqchip chip = st->pic_master;

		chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
		rc = vmfd_ioctl(vm, KVM_SET_IRQCHIP, &chip,
				"KVM_SET_IRQCHIP(PIC master)", e);
		if (!rc) {
			chip = st->pic_slave;
			chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
			rc = vmfd_ioctl(vm, KVM_SET_IRQCHIP, &chip,
					"KVM_SET_IRQCHIP(PIC slave)", e);
		}
		if (!rc) {
			chip = st->ioapic;
			chip.chip_id = KVM_IRQCHIP_IOAPIC;
			rc = vmfd_ioctl(vm, KVM_SET_IRQCHIP, &chip,
					"KVM_SET_IRQCHIP(IOAPIC)", e);
		}
		if (!rc) {
			struct kvm_pit_state2 pit = st->pit;

			rc = vmfd_ioctl(vm, KVM_SET_PIT2, &pit, "KVM_SET_PIT2",
					e);
		}
	}
	if (rc)
		return rc;
	/* KVM_SET_CLOCK refuses flags it does not take. */
	clock.flags &= KVM_CLOCK_REALTIME;
	return vmfd_ioctl(vm, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK", e);
}

int vmstate_restore(struct vm *vm, const struct vmstate *st, struct err *e)
{
	int rc = 0;

	if (st->ncpus != vm->ncpus || !st->vcpu)
		return err_set(e, -EINVAL,
			       "state of %d vCPUs, the VM has %d vCPUs",
			       st->ncpus, vm->ncpus);
	if (st->ram_size != vm->mem.ram_size)
		return err_set(e, -EINVAL,
			       "state of a VM with %llu bytes of RAM, this one "
			       "has %llu",
			       (unsigned long long)st->ram_size,
			       (unsigned long long)vm->mem.ram_size);
	if (st->has_irqchip == vm->user_irqchip)
		return err_set(e, -EINVAL,
			       "state %s the in-kernel irqchip, the VM %s",
			       st->has_irqchip ? "has" : "lacks",
			       vm->user_irqchip ? "lacks it" : "has it");
	for (int i = 0; !rc && i < vm->ncpus; i++)
		rc = restore_vcpu(vm, &vm->vcpus[i], &st->vcpu[i], e);
	if (!rc)
		rc = restore_vm(vm, st, e);
	return rc;
}

/* ---- encoding ---- */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static uint8_t *wb_room(struct wbuf *w, size_t n)
{
	if (w->oom)
		return NULL;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 65536;
		uint8_t *p;

		while (cap < w->len + n)
			cap *= 2;
		p = realloc(w->p, cap);
		if (!p) {
			w->oom = true;
			return NULL;
		}
		w->p = p;
		w->cap = cap;
	}
	w->len += n;
	return w->p + w->len - n;
}

static void put_le(uint8_t *d, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		d[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *s, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)s[i] << (8 * i);
	return v;
}

static void wb_le(struct wbuf *w, uint64_t v, int n)
{
	uint8_t *d = wb_room(w, (size_t)n);

	if (d)
		put_le(d, v, n);
}

static void wb_bytes(struct wbuf *w, const void *src, size_t n)
{
	uint8_t *d = wb_room(w, n);

	if (d)
		memcpy(d, src, n);
}

static void wb_rec(struct wbuf *w, uint16_t type, size_t len)
{
	wb_le(w, type, 2);
	wb_le(w, len, 4);
}

static void wb_vm_rec(struct wbuf *w, uint16_t type, const void *src, size_t n)
{
	wb_rec(w, type, n);
	wb_bytes(w, src, n);
}

static void wb_cpu_rec(struct wbuf *w, uint16_t type, uint32_t cpu,
		       const void *src, size_t n)
{
	wb_rec(w, type, 4 + n);
	wb_le(w, cpu, 4);
	wb_bytes(w, src, n);
}

static void encode_vcpu(struct wbuf *w, const struct vmstate *st, uint32_t i)
{
	const struct vmstate_vcpu *c = &st->vcpu[i];
	uint32_t n = c->nmsrs;
	uint32_t xl = c->xsave_len;

	if (n > VMSTATE_MAX_MSRS)
		n = VMSTATE_MAX_MSRS;
	if (xl > VMSTATE_XSAVE_MAX)
		xl = VMSTATE_XSAVE_MAX;
	wb_cpu_rec(w, VMS_REC_REGS, i, &c->regs, sizeof(c->regs));
	wb_cpu_rec(w, VMS_REC_SREGS, i, &c->sregs, sizeof(c->sregs));
	if (c->has_xcrs)
		wb_cpu_rec(w, VMS_REC_XCRS, i, &c->xcrs, sizeof(c->xcrs));
	if (st->has_irqchip) {
		wb_cpu_rec(w, VMS_REC_LAPIC, i, &c->lapic, sizeof(c->lapic));
		wb_cpu_rec(w, VMS_REC_MP, i, &c->mp, sizeof(c->mp));
	}
	wb_cpu_rec(w, VMS_REC_EVENTS, i, &c->events, sizeof(c->events));
	wb_cpu_rec(w, VMS_REC_DEBUGREGS, i, &c->debugregs,
		   sizeof(c->debugregs));
	wb_rec(w, VMS_REC_TSC, 4 + 8);
	wb_le(w, i, 4);
	wb_le(w, (uint64_t)c->tsc_offset, 8);
	wb_cpu_rec(w, VMS_REC_XSAVE, i, c->xsave, xl);
	wb_rec(w, VMS_REC_MSRS, 4 + 4 + (size_t)n * VMS_MSR_LEN);
	wb_le(w, i, 4);
	wb_le(w, n, 4);
	for (uint32_t k = 0; k < n; k++) {
		wb_le(w, c->msrs[k].index, 4);
		wb_le(w, c->msrs[k].data, 8);
	}
}

int vmstate_encode(const struct vmstate *st, uint8_t **out, size_t *len)
{
	struct wbuf w = {0};
	uint8_t *h;

	*out = NULL;
	*len = 0;
	if (st->ncpus < 1 || st->ncpus > VM_MAX_CPUS || !st->vcpu)
		return -EINVAL;
	h = wb_room(&w, VMS_HDR_LEN);
	if (h) {
		memcpy(h, VMS_MAGIC, 4);
		put_le(h + 4, VMSTATE_VERSION, 2);
		h[6] = st->has_irqchip ? 1 : 0;
		h[7] = 0;
		put_le(h + 8, (uint32_t)st->ncpus, 4);
		put_le(h + 12, st->ram_size, 8);
	}
	wb_vm_rec(&w, VMS_REC_CLOCK, &st->clock, sizeof(st->clock));
	if (st->has_irqchip) {
		wb_vm_rec(&w, VMS_REC_PIC_MASTER, &st->pic_master,
			  sizeof(st->pic_master));
		wb_vm_rec(&w, VMS_REC_PIC_SLAVE, &st->pic_slave,
			  sizeof(st->pic_slave));
		wb_vm_rec(&w, VMS_REC_IOAPIC, &st->ioapic, sizeof(st->ioapic));
		wb_vm_rec(&w, VMS_REC_PIT, &st->pit, sizeof(st->pit));
	}
	for (int i = 0; i < st->ncpus; i++)
		encode_vcpu(&w, st, (uint32_t)i);
	wb_rec(&w, VMS_REC_END, 0);
	if (w.oom) {
		free(w.p);
		return -ENOMEM;
	}
	*out = w.p;
	*len = w.len;
	return 0;
}

/* ---- decoding ---- */

struct vm_rec_desc {
	void *dst;
	size_t size;
	int chip_id; /* -1: not an irqchip */
};

static int decode_vm_rec(struct vmstate *st, uint16_t type, const uint8_t *p,
			 uint32_t len, struct err *e)
{
	struct vm_rec_desc d;

	switch (type) {
	case VMS_REC_CLOCK:
		d = (struct vm_rec_desc){&st->clock, sizeof(st->clock), -1};
		break;
	case VMS_REC_PIC_MASTER:
		d = (struct vm_rec_desc){&st->pic_master,
					 sizeof(st->pic_master),
					 KVM_IRQCHIP_PIC_MASTER};
		break;
	case VMS_REC_PIC_SLAVE:
		d = (struct vm_rec_desc){&st->pic_slave, sizeof(st->pic_slave),
					 KVM_IRQCHIP_PIC_SLAVE};
		break;
	case VMS_REC_IOAPIC:
		d = (struct vm_rec_desc){&st->ioapic, sizeof(st->ioapic),
					 KVM_IRQCHIP_IOAPIC};
		break;
	default: /* VMS_REC_PIT */
		d = (struct vm_rec_desc){&st->pit, sizeof(st->pit), -1};
		break;
	}
	if (type != VMS_REC_CLOCK && !st->has_irqchip)
		return err_set(e, -EINVAL,
			       "vmstate: record %u without the in-kernel "
			       "irqchip",
			       type);
	if (len != d.size)
		return err_set(e, -EINVAL,
			       "vmstate: record %u of %u bytes, expected %zu",
			       type, len, d.size);
	memcpy(d.dst, p, len);
	if (d.chip_id >= 0 &&
	    ((struct kvm_irqchip *)d.dst)->chip_id != (uint32_t)d.chip_id)
		return err_set(e, -EINVAL,
			       "vmstate: record %u names irqchip %u", type,
			       ((struct kvm_irqchip *)d.dst)->chip_id);
	return 0;
}

static int decode_cpu_rec(struct vmstate *st, uint16_t type, const uint8_t *p,
			  uint32_t len, uint32_t *seen, struct err *e)
{
	struct vmstate_vcpu *c;
	void *dst = NULL;
	size_t size = 0;
	uint32_t cpu;

	if (len < 4)
		return err_set(e, -EINVAL, "vmstate: record %u of %u bytes",
			       type, len);
	cpu = (uint32_t)get_le(p, 4);
	if (cpu >= (uint32_t)st->ncpus)
		return err_set(e, -EINVAL,
			       "vmstate: record %u for vCPU %u of %d", type,
			       cpu, st->ncpus);
	if (seen[cpu] & CPU_REC_BIT(type))
		return err_set(e, -EINVAL,
			       "vmstate: duplicate record %u for vCPU %u", type,
			       cpu);
	seen[cpu] |= CPU_REC_BIT(type);
	c = &st->vcpu[cpu];
	p += 4;
	len -= 4;
	switch (type) {
	case VMS_REC_REGS:
		dst = &c->regs, size = sizeof(c->regs);
		break;
	case VMS_REC_SREGS:
		dst = &c->sregs, size = sizeof(c->sregs);
		break;
	case VMS_REC_XCRS:
		dst = &c->xcrs, size = sizeof(c->xcrs);
		c->has_xcrs = true;
		break;
	case VMS_REC_LAPIC:
		dst = &c->lapic, size = sizeof(c->lapic);
		break;
	case VMS_REC_EVENTS:
		dst = &c->events, size = sizeof(c->events);
		break;
	case VMS_REC_MP:
		dst = &c->mp, size = sizeof(c->mp);
		break;
	case VMS_REC_DEBUGREGS:
		dst = &c->debugregs, size = sizeof(c->debugregs);
		break;
	case VMS_REC_TSC:
		if (len != 8)
			break;
		c->tsc_offset = (int64_t)get_le(p, 8);
		return 0;
	case VMS_REC_XSAVE:
		if (len < VMSTATE_XSAVE_MIN || len > VMSTATE_XSAVE_MAX)
			return err_set(e, -EINVAL,
				       "vmstate: vCPU %u XSAVE area of %u "
				       "bytes (%d..%d)",
				       cpu, len, VMSTATE_XSAVE_MIN,
				       VMSTATE_XSAVE_MAX);
		memcpy(c->xsave, p, len);
		c->xsave_len = len;
		return 0;
	default: { /* VMS_REC_MSRS */
		uint32_t n = len >= 4 ? (uint32_t)get_le(p, 4) : 0;

		if (len < 4 || n > VMSTATE_MAX_MSRS ||
		    len != 4 + (uint64_t)n * VMS_MSR_LEN)
			return err_set(e, -EINVAL,
				       "vmstate: vCPU %u MSR record of %u "
				       "bytes, count %u (max %d)",
				       cpu, len, n, VMSTATE_MAX_MSRS);
		c->nmsrs = n;
		for (uint32_t k = 0; k < n; k++) {
			const uint8_t *m = p + 4 + (size_t)k * VMS_MSR_LEN;

			c->msrs[k].index = (uint32_t)get_le(m, 4);
			c->msrs[k].data = get_le(m + 4, 8);
		}
		return 0;
	}
	}
	if ((type == VMS_REC_LAPIC || type == VMS_REC_MP) && !st->has_irqchip)
		return err_set(e, -EINVAL,
			       "vmstate: record %u without the in-kernel "
			       "irqchip",
			       type);
	if (!dst || len != size)
		return err_set(e, -EINVAL,
			       "vmstate: vCPU %u record %u of %u bytes, "
			       "expected %zu",
			       cpu, type, len, type == VMS_REC_TSC ? 8 : size);
	memcpy(dst, p, len);
	return 0;
}

static int check_complete(const struct vmstate *st, uint32_t vm_seen,
			  const uint32_t *seen, struct err *e)
{
	uint32_t vm_need = VM_REC_BIT(VMS_REC_CLOCK);
	uint32_t cpu_need =
		CPU_REC_BIT(VMS_REC_REGS) | CPU_REC_BIT(VMS_REC_SREGS) |
		CPU_REC_BIT(VMS_REC_EVENTS) | CPU_REC_BIT(VMS_REC_DEBUGREGS) |
		CPU_REC_BIT(VMS_REC_TSC) | CPU_REC_BIT(VMS_REC_XSAVE) |
		CPU_REC_BIT(VMS_REC_MSRS);

	if (st->has_irqchip) {
		vm_need |= VM_REC_BIT(VMS_REC_PIC_MASTER) |
			   VM_REC_BIT(VMS_REC_PIC_SLAVE) |
			   VM_REC_BIT(VMS_REC_IOAPIC) | VM_REC_BIT(VMS_REC_PIT);
		cpu_need |=
			CPU_REC_BIT(VMS_REC_LAPIC) | CPU_REC_BIT(VMS_REC_MP);
	}
	if ((vm_seen & vm_need) != vm_need)
		return err_set(e, -EINVAL,
			       "vmstate: a VM record is missing (have 0x%x, "
			       "need 0x%x)",
			       vm_seen, vm_need);
	for (int i = 0; i < st->ncpus; i++)
		if ((seen[i] & cpu_need) != cpu_need)
			return err_set(e, -EINVAL,
				       "vmstate: vCPU %d record missing (have "
				       "0x%x, need 0x%x)",
				       i, seen[i], cpu_need);
	return 0;
}

static int decode_records(const uint8_t *buf, size_t len, struct vmstate *st,
			  struct err *e)
{
	uint32_t seen[VM_MAX_CPUS] = {0}, vm_seen = 0;
	size_t off = VMS_HDR_LEN;
	int rc;

	for (;;) {
		uint16_t type;
		uint32_t rlen;

		if (len - off < VMS_REC_HDR_LEN)
			return err_set(e, -EINVAL,
				       "vmstate: truncated at byte %zu (no "
				       "end record)",
				       off);
		type = (uint16_t)get_le(buf + off, 2);
		rlen = (uint32_t)get_le(buf + off + 2, 4);
		off += VMS_REC_HDR_LEN;
		if (rlen > len - off)
			return err_set(e, -EINVAL,
				       "vmstate: record %u of %u bytes at byte "
				       "%zu overruns the %zu-byte stream",
				       type, rlen, off, len);
		if (type == VMS_REC_END) {
			if (rlen || off != len)
				return err_set(e, -EINVAL,
					       "vmstate: %zu bytes after the "
					       "end record",
					       len - off);
			break;
		}
		if (type <= VMS_REC_VM_LAST) {
			if (vm_seen & VM_REC_BIT(type))
				return err_set(e, -EINVAL,
					       "vmstate: duplicate record %u",
					       type);
			vm_seen |= VM_REC_BIT(type);
			rc = decode_vm_rec(st, type, buf + off, rlen, e);
		} else if (type >= VMS_REC_REGS && type <= VMS_REC_CPU_LAST) {
			rc = decode_cpu_rec(st, type, buf + off, rlen, seen, e);
		} else {
			rc = 0; /* a newer writer's record: skip it */
		}
		if (rc)
			return rc;
		off += rlen;
	}
	return check_complete(st, vm_seen, seen, e);
}

int vmstate_decode(const uint8_t *buf, size_t len, struct vmstate *st,
		   struct err *e)
{
	uint32_t ncpus;
	unsigned int version;
	int rc;

	memset(st, 0, sizeof(*st));
	if (!buf || len < VMS_HDR_LEN)
		return err_set(e, -EINVAL, "vmstate: %zu bytes, too short",
			       len);
	if (memcmp(buf, VMS_MAGIC, 4))
		return err_set(e, -EINVAL, "vmstate: bad magic");
	version = (unsigned int)get_le(buf + 4, 2);
	if (version != VMSTATE_VERSION)
		return err_set(e, -EPROTONOSUPPORT,
			       "vmstate: version %u, this dvmm reads %d",
			       version, VMSTATE_VERSION);
	if (buf[6] > 1)
		return err_set(e, -EINVAL, "vmstate: bad irqchip flag %u",
			       buf[6]);
	ncpus = (uint32_t)get_le(buf + 8, 4);
	if (ncpus < 1 || ncpus > VM_MAX_CPUS)
		return err_set(e, -EINVAL, "vmstate: %u vCPUs (1..%d)", ncpus,
			       VM_MAX_CPUS);
	st->ncpus = (int)ncpus;
	st->has_irqchip = buf[6] == 1;
	st->ram_size = get_le(buf + 12, 8);
	st->vcpu = calloc(ncpus, sizeof(*st->vcpu));
	if (!st->vcpu)
		return err_set(e, -ENOMEM, "vmstate: out of memory");
	rc = decode_records(buf, len, st, e);
	if (rc)
		vmstate_free(st);
	return rc;
}
