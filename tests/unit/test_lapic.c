/*
 * tests/unit/test_lapic.c - the userspace local APIC and the APIC bus
 * rules: MSI decoding, destination matching, IA32_APIC_BASE transitions,
 * x2APIC MSR checks (#GP cases, read-only and reserved bits, derived LDR),
 * priorities (IRR/ISR/TPR/PPR, nesting, EOI and level EOI callbacks), ICR
 * and self IPIs, the ESR, LVT masking, LINT0/1, the timer in one-shot,
 * periodic and TSC-deadline modes, INIT, the xAPIC MMIO page, a self IPI
 * looped back from inside ops->send, and a randomized access test.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "irqchip/apic_bus.h"
#include "irqchip/lapic.h"

#define BUS_HZ 1000000000ULL /* 1 tick = 1 ns with divide-by-1 */
#define APIC_ID 3
#define VCPU 0
#define BASE_XAPIC (LAPIC_MMIO_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP)
#define BASE_X2APIC (BASE_XAPIC | APIC_BASE_X2APIC)

/* x2APIC MSRs */
#define X_ID 0x802
#define X_VERSION 0x803
#define X_TPR 0x808
#define X_APR 0x809
#define X_PPR 0x80a
#define X_EOI 0x80b
#define X_LDR 0x80d
#define X_DFR 0x80e
#define X_SVR 0x80f
#define X_ISR 0x810
#define X_TMR 0x818
#define X_IRR 0x820
#define X_ESR 0x828
#define X_ICR 0x830
#define X_LVT_TIMER 0x832
#define X_LVT_LINT0 0x835
#define X_LVT_LINT1 0x836
#define X_LVT_ERROR 0x837
#define X_TMICT 0x838
#define X_TMCCT 0x839
#define X_TDCR 0x83e
#define X_SELF_IPI 0x83f

/* xAPIC MMIO offsets */
#define M_ID 0x20
#define M_VERSION 0x30
#define M_TPR 0x80
#define M_PPR 0xa0
#define M_EOI 0xb0
#define M_LDR 0xd0
#define M_DFR 0xe0
#define M_SVR 0xf0
#define M_IRR 0x200
#define M_ESR 0x280
#define M_ICR 0x300
#define M_ICR_HI 0x310
#define M_LVT_TIMER 0x320
#define M_LVT_LINT0 0x350
#define M_LVT_LINT1 0x360
#define M_TMICT 0x380
#define M_TMCCT 0x390
#define M_TDCR 0x3e0
#define M_SELF_IPI 0x3f0

#define LVT_MASKED (1u << 16)
#define MAX_REC 64

/* What the fake ops saw. */
struct fake {
	struct lapic *self;
	bool loopback; /* send() delivers matching messages to self */
	struct apic_msg sent[MAX_REC];
	int nsent;
	int eoi[MAX_REC];
	int neoi;
	int kicks;
	uint64_t armed; /* last timer_arm deadline */
	int narm;
	uint64_t now;
};

struct env {
	struct fake f;
	struct lapic a;
};

static void f_send(void *opaque, const struct apic_msg *m)
{
	struct fake *f = opaque;
	struct apic_target t;

	if (f->nsent < MAX_REC)
		f->sent[f->nsent] = *m;
	f->nsent++;
	if (!f->loopback)
		return;
	lapic_target(f->self, &t);
	if (apic_match(m, &t))
		lapic_deliver(f->self, m);
}

static void f_eoi(void *opaque, uint8_t vector)
{
	struct fake *f = opaque;

	if (f->neoi < MAX_REC)
		f->eoi[f->neoi] = vector;
	f->neoi++;
}

static void f_kick(void *opaque)
{
	((struct fake *)opaque)->kicks++;
}

static void f_timer_arm(void *opaque, uint64_t deadline)
{
	struct fake *f = opaque;

	f->armed = deadline;
	f->narm++;
}

static uint64_t f_now(void *opaque)
{
	return ((struct fake *)opaque)->now;
}

static uint64_t f_tsc_to_ns(void *opaque, uint64_t tsc)
{
	(void)opaque;
	return tsc / 2;
}

static uint64_t f_ns_to_tsc(void *opaque, uint64_t ns)
{
	(void)opaque;
	return ns * 2;
}

static const struct lapic_ops fake_ops = {
	.send = f_send,
	.eoi = f_eoi,
	.kick = f_kick,
	.timer_arm = f_timer_arm,
	.now_ns = f_now,
	.tsc_to_ns = f_tsc_to_ns,
	.ns_to_tsc = f_ns_to_tsc,
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (!e)
		return -1;
	e->f.self = &e->a;
	e->f.now = 1000;
	lapic_init(&e->a, VCPU, APIC_ID, true, BUS_HZ, &fake_ops, &e->f);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	lapic_destroy(&e->a);
	free(e);
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rd(struct lapic *a, uint32_t msr)
{
	uint64_t v = 0xdead;

	assert_int_equal(lapic_read_msr(a, msr, &v), 0);
	return v;
}

static void wr(struct lapic *a, uint32_t msr, uint64_t v)
{
	assert_int_equal(lapic_write_msr(a, msr, v), 0);
}

static void gp_wr(struct lapic *a, uint32_t msr, uint64_t v)
{
	assert_int_equal(lapic_write_msr(a, msr, v), -EINVAL);
}

static void gp_rd(struct lapic *a, uint32_t msr)
{
	uint64_t v;

	assert_int_equal(lapic_read_msr(a, msr, &v), -EINVAL);
}

static uint32_t mrd(struct lapic *a, uint64_t off)
{
	uint8_t b[4] = {0xaa, 0xaa, 0xaa, 0xaa};
	uint32_t v;

	lapic_mmio(a, off, b, 4, false);
	memcpy(&v, b, 4);
	return v;
}

static void mwr(struct lapic *a, uint64_t off, uint32_t v)
{
	uint8_t b[4];

	memcpy(b, &v, 4);
	lapic_mmio(a, off, b, 4, true);
}

static void to_x2apic(struct lapic *a)
{
	wr(a, MSR_IA32_APIC_BASE, BASE_X2APIC);
}

static void x2_enable(struct lapic *a)
{
	to_x2apic(a);
	wr(a, X_SVR, 0x1ff);
}

static void fixed(struct lapic *a, uint8_t vector, bool level)
{
	struct apic_msg m = {
		.vector = vector,
		.delivery = APIC_DM_FIXED,
		.level = level,
		.assert = true,
		.src_vcpu = -1,
	};

	lapic_deliver(a, &m);
}

static bool irr_has(struct lapic *a, uint8_t v)
{
	return a->irr[v >> 5] & (1u << (v & 31));
}

static bool tmr_has(struct lapic *a, uint8_t v)
{
	return a->tmr[v >> 5] & (1u << (v & 31));
}

static struct apic_target target(uint32_t id, uint32_t ldr, uint8_t dfr,
				 bool x2)
{
	struct apic_target t = {
		.vcpu = 1,
		.apic_id = id,
		.ldr = ldr,
		.dfr_model = dfr,
		.x2apic = x2,
		.hw_enabled = true,
	};

	return t;
}

static struct apic_msg msg(uint32_t dest, bool logical, bool x2dest)
{
	struct apic_msg m = {
		.dest = dest,
		.vector = 0x40,
		.logical = logical,
		.x2apic_dest = x2dest,
		.assert = true,
		.src_vcpu = 0,
	};

	return m;
}

/* ---- apic_bus ----------------------------------------------------------- */

static void test_msi_decode(void **state)
{
	struct apic_msg m;

	(void)state;
	assert_true(apic_msg_from_msi(0xfee01000, 0x4031, &m));
	assert_int_equal(m.dest, 1);
	assert_int_equal(m.vector, 0x31);
	assert_int_equal(m.delivery, APIC_DM_FIXED);
	assert_false(m.logical);
	assert_false(m.level);
	assert_true(m.assert);
	assert_false(m.x2apic_dest);
	assert_int_equal(m.shorthand, APIC_SH_NONE);
	assert_int_equal(m.src_vcpu, -1);

	/* Edge: assert regardless of bit 14. */
	assert_true(apic_msg_from_msi(0xfee01000, 0x0031, &m));
	assert_true(m.assert);

	/* Logical, redirection hint, lowest priority, level asserted. */
	assert_true(apic_msg_from_msi(0xfee0f00c, 0xc141, &m));
	assert_int_equal(m.dest, 0x0f);
	assert_true(m.logical);
	assert_int_equal(m.delivery, APIC_DM_LOWEST);
	assert_true(m.level);
	assert_true(m.assert);

	/* Level de-assert. */
	assert_true(apic_msg_from_msi(0xfee00000, 0x8041, &m));
	assert_true(m.level);
	assert_false(m.assert);

	/* Extended destination ID: address bits 11:5 -> dest bits 14:8. */
	assert_true(apic_msg_from_msi(0xfee00000 | (0x12 << 12) | (0x7f << 5),
				      0x0400, &m));
	assert_int_equal(m.dest, 0x7f12);
	assert_int_equal(m.delivery, APIC_DM_NMI);

	assert_false(apic_msg_from_msi(0xfed00000, 0x31, &m));
	assert_false(apic_msg_from_msi(0x1fee00000ULL, 0x31, &m));
	assert_false(apic_msg_from_msi(0, 0x31, &m));
}

static void test_match_physical(void **state)
{
	struct apic_target t = target(3, 0, 0xf, false);
	struct apic_target x = target(0x123, 0, 0xf, true);
	struct apic_msg m;

	(void)state;
	m = msg(3, false, false);
	assert_true(apic_match(&m, &t));
	m.dest = 4;
	assert_false(apic_match(&m, &t));
	m.dest = 0xff;
	assert_true(apic_match(&m, &t));
	assert_true(apic_match(&m, &x)); /* 8-bit broadcast, x2APIC target */

	m = msg(0x123, false, true);
	assert_true(apic_match(&m, &x));
	assert_false(apic_match(&m, &t));
	m.dest = 0xff; /* not a broadcast in x2APIC format */
	assert_false(apic_match(&m, &x));
	m.dest = 0xffffffff;
	assert_true(apic_match(&m, &x));
	assert_true(apic_match(&m, &t));

	/* MSI extended destination reaches a high x2APIC ID. */
	assert_true(apic_msg_from_msi(0xfee00000 | (0x23 << 12) | (1 << 5),
				      0x40, &m));
	assert_true(apic_match(&m, &x));

	t.hw_enabled = false;
	m = msg(3, false, false);
	assert_false(apic_match(&m, &t));
	m.dest = 0xff;
	assert_false(apic_match(&m, &t));
	m.shorthand = APIC_SH_ALL;
	assert_false(apic_match(&m, &t));
}

static void test_match_logical(void **state)
{
	struct apic_target flat = target(0, 0x04000000, 0xf, false);
	struct apic_target cl = target(0, 0x21000000, 0x0, false);
	struct apic_target x = target(0x23, 0x00020008, 0xf, true);
	struct apic_msg m;

	(void)state;
	/* Flat: bitmap of 8. */
	m = msg(0x04, true, false);
	assert_true(apic_match(&m, &flat));
	m.dest = 0x0c;
	assert_true(apic_match(&m, &flat));
	m.dest = 0x03;
	assert_false(apic_match(&m, &flat));
	m.dest = 0xff;
	assert_true(apic_match(&m, &flat));

	/* Cluster: cluster 2, member bit 0. */
	m.dest = 0x21;
	assert_true(apic_match(&m, &cl));
	m.dest = 0x23;
	assert_true(apic_match(&m, &cl));
	m.dest = 0x11;
	assert_false(apic_match(&m, &cl));
	m.dest = 0x22;
	assert_false(apic_match(&m, &cl));
	m.dest = 0xff;
	assert_true(apic_match(&m, &cl));

	/* x2APIC: cluster 2 (bits 31:16), member bit 3. */
	m = msg(0x00020008, true, true);
	assert_true(apic_match(&m, &x));
	m.dest = 0x0002000c;
	assert_true(apic_match(&m, &x));
	m.dest = 0x00010008;
	assert_false(apic_match(&m, &x));
	m.dest = 0x00020004;
	assert_false(apic_match(&m, &x));
	m.dest = 0xffffffff;
	assert_true(apic_match(&m, &x));

	x.hw_enabled = false;
	assert_false(apic_match(&m, &x));
}

static void test_match_shorthand(void **state)
{
	struct apic_target self = target(0, 0, 0xf, false);
	struct apic_target other = target(7, 0, 0xf, false);
	struct apic_msg m = msg(0x55, false, false);

	(void)state;
	self.vcpu = 0;
	other.vcpu = 1;
	m.src_vcpu = 0;

	m.shorthand = APIC_SH_SELF;
	assert_true(apic_match(&m, &self));
	assert_false(apic_match(&m, &other));
	m.shorthand = APIC_SH_ALL;
	assert_true(apic_match(&m, &self));
	assert_true(apic_match(&m, &other));
	m.shorthand = APIC_SH_ALL_BUT_SELF;
	assert_false(apic_match(&m, &self));
	assert_true(apic_match(&m, &other));
}

/* ---- IA32_APIC_BASE and x2APIC MSR rules --------------------------------- */

static void test_apic_base_transitions(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	assert_int_equal(rd(a, MSR_IA32_APIC_BASE), 0xfee00900);

	/* Reserved bits: 0-7, 9, above 35. */
	gp_wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC | 1);
	gp_wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC | (1 << 9));
	gp_wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC | (1ULL << 36));
	/* EXTD without EN. */
	gp_wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE | APIC_BASE_X2APIC);

	/* xAPIC -> x2APIC -> (not xAPIC) -> disabled -> (not x2APIC). */
	to_x2apic(a);
	assert_int_equal(rd(a, MSR_IA32_APIC_BASE), BASE_X2APIC);
	gp_wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	assert_int_equal(rd(a, MSR_IA32_APIC_BASE), BASE_X2APIC);
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE | APIC_BASE_BSP);
	gp_wr(a, MSR_IA32_APIC_BASE, BASE_X2APIC);
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	assert_int_equal(rd(a, MSR_IA32_APIC_BASE), BASE_XAPIC);

	/* The BSP flag is read-only; the base address is kept. */
	wr(a, MSR_IA32_APIC_BASE, 0xfed00000 | APIC_BASE_ENABLE);
	assert_int_equal(rd(a, MSR_IA32_APIC_BASE),
			 0xfed00000 | APIC_BASE_ENABLE | APIC_BASE_BSP);
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);

	/* Disabling resets the APIC. */
	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_TPR, 0x20);
	mwr(a, M_ID, 0x09000000);
	fixed(a, 0x50, false);
	assert_true(irr_has(a, 0x50));
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE);
	assert_int_equal(mrd(a, M_SVR), 0); /* MMIO dead while disabled */
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	assert_int_equal(mrd(a, M_SVR), 0xff);
	assert_int_equal(mrd(a, M_TPR), 0);
	assert_int_equal(mrd(a, M_ID), APIC_ID << 24);
	assert_int_equal(mrd(a, M_LVT_TIMER), LVT_MASKED);
	assert_false(irr_has(a, 0x50));

	/* Non-MSRs of ours. */
	gp_wr(a, 0x10, 0);
	gp_rd(a, 0x900);
}

static void test_x2apic_msrs_gp_outside_x2apic(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	/* xAPIC mode. */
	gp_rd(a, X_ID);
	gp_rd(a, X_TPR);
	gp_wr(a, X_TPR, 0);
	gp_wr(a, X_ICR, 0x4040);
	gp_wr(a, X_SELF_IPI, 0x40);
	assert_int_equal(e->f.nsent, 0);

	/* Disabled. */
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE);
	gp_rd(a, X_VERSION);
	gp_wr(a, X_EOI, 0);

	/* x2APIC: fine. */
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	to_x2apic(a);
	assert_int_equal(rd(a, X_ID), APIC_ID);
	assert_int_equal(rd(a, X_VERSION), 0x00060014);
}

static void test_x2apic_readonly_and_reserved(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);

	/* Read-only registers. */
	gp_wr(a, X_ID, 7);
	gp_wr(a, X_VERSION, 0);
	gp_wr(a, X_PPR, 0);
	gp_wr(a, X_LDR, 0);
	gp_wr(a, X_ISR, 0);
	gp_wr(a, X_TMR + 7, 0);
	gp_wr(a, X_IRR + 3, 0);
	gp_wr(a, X_TMCCT, 0);
	/* Write-only registers. */
	gp_rd(a, X_EOI);
	gp_rd(a, X_SELF_IPI);
	/* Absent in x2APIC mode. */
	gp_rd(a, X_DFR);
	gp_wr(a, X_DFR, 0xffffffff);
	gp_rd(a, X_APR);
	gp_rd(a, 0x831);
	gp_wr(a, 0x831, 0);
	gp_rd(a, 0x840);
	gp_rd(a, 0x8ff);

	/* Reserved bits. */
	gp_wr(a, X_EOI, 1);
	gp_wr(a, X_ESR, 1);
	gp_wr(a, X_TPR, 0x100);
	gp_wr(a, X_TPR, 1ULL << 32);
	gp_wr(a, X_SVR, 0x11ff);       /* no EOI-broadcast suppression */
	gp_wr(a, X_ICR, 0x2040);       /* bit 13 */
	gp_wr(a, X_ICR, 0x1040);       /* bit 12: delivery status */
	gp_wr(a, X_ICR, 0x100040);     /* bit 20 */
	gp_wr(a, X_LVT_TIMER, 0x0440); /* no delivery mode on the timer */
	gp_wr(a, X_LVT_TIMER, 0x80040);
	gp_wr(a, X_LVT_ERROR, 0x20040);
	gp_wr(a, X_LVT_LINT0, 0x800); /* bit 11 */
	gp_wr(a, X_TDCR, 0x4);
	gp_wr(a, X_SELF_IPI, 0x140);
	assert_int_equal(e->f.nsent, 0);

	/* Read-only bits in an LVT are not reserved. */
	wr(a, X_LVT_LINT0, 0x5000 | 0x700);
	assert_int_equal(rd(a, X_LVT_LINT0), 0x700);

	/* Plain reads and writes. */
	wr(a, X_TPR, 0x20);
	assert_int_equal(rd(a, X_TPR), 0x20);
	assert_int_equal(rd(a, X_PPR), 0x20);
	wr(a, X_TDCR, 0xb);
	assert_int_equal(rd(a, X_TDCR), 0xb);
	assert_int_equal(rd(a, X_SVR), 0x1ff);
}

static void test_x2apic_ldr(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct lapic b;
	struct apic_target t;

	to_x2apic(a);
	assert_int_equal(rd(a, X_LDR), (0 << 16) | (1 << 3));

	lapic_init(&b, 1, 0x23, false, BUS_HZ, &fake_ops, &e->f);
	wr(&b, MSR_IA32_APIC_BASE, BASE_X2APIC & ~APIC_BASE_BSP);
	assert_int_equal(rd(&b, MSR_IA32_APIC_BASE),
			 BASE_X2APIC & ~APIC_BASE_BSP);
	assert_int_equal(rd(&b, X_LDR), 0x00020008);
	assert_int_equal(rd(&b, X_ID), 0x23);
	lapic_target(&b, &t);
	assert_true(t.x2apic);
	assert_true(t.hw_enabled);
	assert_int_equal(t.ldr, 0x00020008);
	assert_int_equal(t.apic_id, 0x23);

	/* INIT keeps x2APIC mode and the derived LDR. */
	lapic_reset(&b);
	assert_int_equal(rd(&b, X_LDR), 0x00020008);
	assert_int_equal(rd(&b, MSR_IA32_APIC_BASE),
			 BASE_X2APIC & ~APIC_BASE_BSP);
	lapic_destroy(&b);
}

/* ---- priorities, ack, EOI ----------------------------------------------- */

static void test_priority_nested(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	fixed(a, 0x31, false);
	fixed(a, 0x52, false);
	assert_true(e->f.kicks >= 2);
	assert_int_equal(lapic_pending_vector(a), 0x52);
	assert_int_equal(lapic_ack(a), 0x52);
	assert_int_equal(rd(a, X_ISR + 2), 1u << (0x52 - 64));
	assert_int_equal(rd(a, X_PPR), 0x50);

	/* Same or lower class waits; a higher class nests. */
	fixed(a, 0x5f, false);
	assert_int_equal(lapic_pending_vector(a), -1);
	assert_int_equal(lapic_ack(a), -1);
	fixed(a, 0x61, false);
	assert_int_equal(lapic_ack(a), 0x61);
	assert_int_equal(rd(a, X_PPR), 0x60);
	assert_int_equal(lapic_pending_vector(a), -1);

	wr(a, X_EOI, 0); /* ends 0x61 */
	assert_int_equal(rd(a, X_PPR), 0x50);
	assert_int_equal(lapic_pending_vector(a), -1);
	wr(a, X_EOI, 0); /* ends 0x52 */
	assert_int_equal(rd(a, X_PPR), 0);
	assert_int_equal(lapic_pending_vector(a), 0x5f);

	/* TPR: class must be strictly above. */
	wr(a, X_TPR, 0x5f);
	assert_int_equal(rd(a, X_PPR), 0x5f);
	assert_int_equal(lapic_pending_vector(a), -1);
	assert_false(lapic_has_wakeup(a, true));
	wr(a, X_TPR, 0x4f);
	assert_int_equal(lapic_pending_vector(a), 0x5f);
	assert_true(lapic_has_wakeup(a, true));
	assert_false(lapic_has_wakeup(a, false));

	/* PPR: TPR if its class is at least the ISR class. */
	assert_int_equal(lapic_ack(a), 0x5f);
	assert_int_equal(rd(a, X_PPR), 0x50);
	wr(a, X_TPR, 0x57);
	assert_int_equal(rd(a, X_PPR), 0x57);
	wr(a, X_TPR, 0);
	wr(a, X_EOI, 0);
	assert_int_equal(lapic_ack(a), 0x31);
	wr(a, X_EOI, 0);
	assert_int_equal(lapic_ack(a), -1);
	wr(a, X_EOI, 0); /* nothing in service: harmless */
	assert_int_equal(e->f.neoi, 0);
}

static void test_eoi_level_callback(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	fixed(a, 0x40, true);
	assert_true(tmr_has(a, 0x40));
	assert_int_equal(rd(a, X_TMR + 2), 1);
	assert_int_equal(lapic_ack(a), 0x40);
	wr(a, X_EOI, 0);
	assert_int_equal(e->f.neoi, 1);
	assert_int_equal(e->f.eoi[0], 0x40);
	assert_false(tmr_has(a, 0x40));

	/* Edge: no EOI callback; an edge redelivery clears TMR. */
	fixed(a, 0x41, true);
	fixed(a, 0x41, false);
	assert_false(tmr_has(a, 0x41));
	assert_int_equal(lapic_ack(a), 0x41);
	wr(a, X_EOI, 0);
	assert_int_equal(e->f.neoi, 1);
}

static void test_software_disabled(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct apic_msg nmi = {.delivery = APIC_DM_NMI, .src_vcpu = -1};
	uint8_t sipi;

	/* SVR 0xff after power-on: fixed interrupts are dropped. */
	to_x2apic(a);
	fixed(a, 0x40, false);
	assert_false(irr_has(a, 0x40));
	assert_int_equal(lapic_pending_vector(a), -1);
	lapic_deliver(a, &nmi);
	assert_true(lapic_has_wakeup(a, false));
	assert_int_equal(lapic_take_events(a, &sipi), LAPIC_EV_NMI);
	assert_int_equal(lapic_take_events(a, &sipi), 0);

	/* Held IRR bits are not delivered while disabled. */
	wr(a, X_SVR, 0x1ff);
	fixed(a, 0x40, false);
	wr(a, X_SVR, 0xff);
	assert_true(irr_has(a, 0x40));
	assert_int_equal(lapic_pending_vector(a), -1);
	assert_int_equal(lapic_ack(a), -1);
	wr(a, X_SVR, 0x1ff);
	assert_int_equal(lapic_pending_vector(a), 0x40);
}

/* ---- ICR, self IPI, ESR ------------------------------------------------- */

static void test_icr_fixed_physical(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct apic_msg *m = &e->f.sent[0];

	x2_enable(a);
	wr(a, X_ICR, (0x105ULL << 32) | 0x4041);
	assert_int_equal(e->f.nsent, 1);
	assert_int_equal(m->dest, 0x105);
	assert_int_equal(m->vector, 0x41);
	assert_int_equal(m->delivery, APIC_DM_FIXED);
	assert_int_equal(m->shorthand, APIC_SH_NONE);
	assert_false(m->logical);
	assert_false(m->level);
	assert_true(m->assert);
	assert_true(m->x2apic_dest);
	assert_int_equal(m->src_vcpu, VCPU);
	assert_int_equal(rd(a, X_ICR), (0x105ULL << 32) | 0x4041);

	/* Logical, lowest priority. */
	wr(a, X_ICR, (0x00020008ULL << 32) | 0x4941);
	assert_int_equal(e->f.nsent, 2);
	assert_true(e->f.sent[1].logical);
	assert_int_equal(e->f.sent[1].delivery, APIC_DM_LOWEST);
	assert_int_equal(e->f.sent[1].dest, 0x00020008);
}

static void test_icr_init_sipi_nmi(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct lapic b;
	struct fake fb = {0};
	uint8_t sipi = 0;

	lapic_init(&b, 1, 1, false, BUS_HZ, &fake_ops, &fb);
	fb.self = &b;
	x2_enable(a);

	/* INIT assert, INIT level de-assert, SIPI, NMI. */
	wr(a, X_ICR, (1ULL << 32) | 0xc500);
	wr(a, X_ICR, (1ULL << 32) | 0x8500);
	wr(a, X_ICR, (1ULL << 32) | 0x4608);
	wr(a, X_ICR, (1ULL << 32) | 0x4400);
	assert_int_equal(e->f.nsent, 4);
	assert_int_equal(e->f.sent[0].delivery, APIC_DM_INIT);
	assert_true(e->f.sent[0].level);
	assert_true(e->f.sent[0].assert);
	assert_int_equal(e->f.sent[1].delivery, APIC_DM_INIT);
	assert_true(e->f.sent[1].level);
	assert_false(e->f.sent[1].assert);
	assert_int_equal(e->f.sent[2].delivery, APIC_DM_SIPI);
	assert_int_equal(e->f.sent[2].vector, 8);
	assert_int_equal(e->f.sent[3].delivery, APIC_DM_NMI);

	/* Receiving them: the de-assert is ignored. */
	lapic_deliver(&b, &e->f.sent[1]);
	assert_int_equal(fb.kicks, 0);
	assert_false(lapic_has_wakeup(&b, true));
	for (int i = 0; i < 4; i++)
		lapic_deliver(&b, &e->f.sent[i]);
	assert_true(fb.kicks >= 3);
	assert_int_equal(lapic_take_events(&b, &sipi),
			 LAPIC_EV_INIT | LAPIC_EV_SIPI | LAPIC_EV_NMI);
	assert_int_equal(sipi, 8);

	/* SMI and ExtINT messages. */
	struct apic_msg smi = {.delivery = APIC_DM_SMI, .assert = true};
	struct apic_msg ext = {.delivery = APIC_DM_EXTINT, .assert = true};

	lapic_deliver(&b, &smi);
	lapic_deliver(&b, &ext);
	assert_true(lapic_has_wakeup(&b, false));
	assert_int_equal(lapic_take_events(&b, NULL),
			 LAPIC_EV_SMI | LAPIC_EV_EXTINT);
	lapic_deliver(&b, &ext);
	assert_false(lapic_has_wakeup(&b, false)); /* ExtINT waits for IF */
	assert_true(lapic_has_wakeup(&b, true));
	lapic_destroy(&b);
}

static void test_icr_shorthands(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	wr(a, X_ICR, 0x000c4030);
	wr(a, X_ICR, 0x00084030);
	wr(a, X_ICR, 0x00044030);
	wr(a, X_ICR, 0x000c4400); /* NMI to all but self */
	assert_int_equal(e->f.nsent, 4);
	assert_int_equal(e->f.sent[0].shorthand, APIC_SH_ALL_BUT_SELF);
	assert_int_equal(e->f.sent[1].shorthand, APIC_SH_ALL);
	assert_int_equal(e->f.sent[2].shorthand, APIC_SH_SELF);
	assert_int_equal(e->f.sent[3].shorthand, APIC_SH_ALL_BUT_SELF);
	assert_int_equal(e->f.sent[3].delivery, APIC_DM_NMI);
	for (int i = 0; i < 4; i++)
		assert_int_equal(e->f.sent[i].src_vcpu, VCPU);
}

static void test_illegal_vectors_and_esr(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	wr(a, X_ICR, (1ULL << 32) | 0x4005); /* fixed vector 5 */
	assert_int_equal(e->f.nsent, 0);
	wr(a, X_SELF_IPI, 0x0f);
	assert_int_equal(e->f.nsent, 0);
	/* ESR reads the errors latched by the last ESR write. */
	assert_int_equal(rd(a, X_ESR), 0);
	wr(a, X_ESR, 0);
	assert_int_equal(rd(a, X_ESR), 1u << 5);

	/* NMI/INIT/SIPI have no illegal vectors. */
	wr(a, X_ICR, (1ULL << 32) | 0x4600);
	assert_int_equal(e->f.nsent, 1);

	/* Received illegal vector, signalled through the error LVT. */
	wr(a, X_LVT_ERROR, 0xfe);
	fixed(a, 3, false);
	assert_false(irr_has(a, 3));
	assert_int_equal(lapic_pending_vector(a), 0xfe);
	wr(a, X_ESR, 0);
	assert_int_equal(rd(a, X_ESR), 1u << 6);
	wr(a, X_ESR, 0);
	assert_int_equal(rd(a, X_ESR), 0);
}

static void test_self_ipi_loopback(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	e->f.loopback = true;
	x2_enable(a);
	wr(a, X_SELF_IPI, 0x66);
	assert_int_equal(e->f.nsent, 1);
	assert_int_equal(e->f.sent[0].shorthand, APIC_SH_SELF);
	assert_int_equal(e->f.sent[0].delivery, APIC_DM_FIXED);
	assert_false(e->f.sent[0].level);
	assert_true(irr_has(a, 0x66));
	assert_int_equal(lapic_pending_vector(a), 0x66);

	/* ICR self shorthand and a physical IPI to our own ID, also from
	 * inside send(): no deadlock. */
	wr(a, X_ICR, 0x00044070);
	wr(a, X_ICR, ((uint64_t)APIC_ID << 32) | 0x4080);
	assert_true(irr_has(a, 0x70));
	assert_true(irr_has(a, 0x80));
	assert_int_equal(lapic_ack(a), 0x80);

	/* xAPIC mode: ICR through MMIO. */
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE);
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_ICR_HI, APIC_ID << 24);
	mwr(a, M_ICR, 0x4091);
	assert_true(irr_has(a, 0x91));
	mwr(a, M_ICR, 0x44092);
	assert_true(irr_has(a, 0x92));
}

/* ---- LVT and LINT ------------------------------------------------------- */

static void test_lvt_masking(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	/* Software-disabled: writes keep the mask. */
	mwr(a, M_LVT_TIMER, 0x30);
	assert_int_equal(mrd(a, M_LVT_TIMER), 0x10030);
	mwr(a, M_SVR, 0x1ff);
	assert_int_equal(mrd(a, M_LVT_TIMER), 0x10030);
	mwr(a, M_LVT_TIMER, 0x30);
	assert_int_equal(mrd(a, M_LVT_TIMER), 0x30);
	mwr(a, M_LVT_LINT0, 0x700);
	/* Disabling via SVR masks every LVT. */
	mwr(a, M_SVR, 0xff);
	assert_int_equal(mrd(a, M_LVT_TIMER), 0x10030);
	assert_int_equal(mrd(a, M_LVT_LINT0), 0x10700);

	/* Writable bits per entry. */
	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_LVT_TIMER, 0xffffffff);
	assert_int_equal(mrd(a, M_LVT_TIMER), 0x700ff);
	mwr(a, M_LVT_LINT1, 0xffffffff);
	assert_int_equal(mrd(a, M_LVT_LINT1), 0x1a7ff);
	mwr(a, 0x370, 0xffffffff);
	assert_int_equal(mrd(a, 0x370), 0x100ff);
	mwr(a, 0x340, 0xffffffff);
	assert_int_equal(mrd(a, 0x340), 0x107ff);
	mwr(a, 0x2f0, 0xffffffff);
	assert_int_equal(mrd(a, 0x2f0), 0x107ff);
}

static void test_lint_extint_and_nmi(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	int kicks;

	/* Masked LINTs do nothing. */
	lapic_set_lint(a, 0, 1);
	lapic_set_lint(a, 1, 1);
	assert_int_equal(lapic_take_events(a, NULL), 0);
	lapic_set_lint(a, 0, 0);
	lapic_set_lint(a, 1, 0);

	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_LVT_LINT0, 0x700); /* ExtINT */
	mwr(a, M_LVT_LINT1, 0x400); /* NMI */

	kicks = e->f.kicks;
	lapic_set_lint(a, 0, 1);
	assert_true(e->f.kicks > kicks);
	assert_false(lapic_has_wakeup(a, false));
	assert_true(lapic_has_wakeup(a, true));
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_EXTINT);
	/* Still high: still pending. */
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_EXTINT);
	lapic_set_lint(a, 0, 0);
	assert_int_equal(lapic_take_events(a, NULL), 0);
	assert_false(lapic_has_wakeup(a, true));

	/* NMI on the rising edge only. */
	lapic_set_lint(a, 1, 1);
	lapic_set_lint(a, 1, 1);
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_NMI);
	assert_int_equal(lapic_take_events(a, NULL), 0);
	lapic_set_lint(a, 1, 0);
	lapic_set_lint(a, 1, 1);
	assert_true(lapic_has_wakeup(a, false));
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_NMI);
	lapic_set_lint(a, 1, 0);

	/* Bad pins are ignored. */
	lapic_set_lint(a, 2, 1);
	lapic_set_lint(a, -1, 1);

	/* Hardware-disabled APIC: LINT0 is the INTR pin, LINT1 NMI. */
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE);
	lapic_set_lint(a, 0, 1);
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_EXTINT);
	lapic_set_lint(a, 0, 0);
	lapic_set_lint(a, 1, 1);
	assert_int_equal(lapic_take_events(a, NULL), LAPIC_EV_NMI);
}

static void test_lint_fixed(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	mwr(a, M_SVR, 0x1ff);
	/* Edge-triggered fixed on LINT1. */
	mwr(a, M_LVT_LINT1, 0x61);
	lapic_set_lint(a, 1, 1);
	lapic_set_lint(a, 1, 1);
	assert_int_equal(lapic_ack(a), 0x61);
	assert_int_equal(lapic_ack(a), -1);
	mwr(a, M_EOI, 0);

	/* Level-triggered on LINT0: remote IRR until EOI, redelivered
	 * while the line stays high. */
	mwr(a, M_LVT_LINT0, 0x8070);
	lapic_set_lint(a, 0, 1);
	assert_true(irr_has(a, 0x70));
	assert_true(tmr_has(a, 0x70));
	assert_int_equal(mrd(a, M_LVT_LINT0), 0xc070);
	assert_int_equal(lapic_ack(a), 0x70);
	mwr(a, M_EOI, 0);
	assert_int_equal(e->f.neoi, 1);
	assert_int_equal(e->f.eoi[0], 0x70);
	assert_true(irr_has(a, 0x70));
	lapic_set_lint(a, 0, 0);
	assert_int_equal(lapic_ack(a), 0x70);
	mwr(a, M_EOI, 0);
	assert_false(irr_has(a, 0x70));
	assert_int_equal(mrd(a, M_LVT_LINT0), 0x8070);
}

/* ---- timer -------------------------------------------------------------- */

static void test_timer_oneshot(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	wr(a, X_TDCR, 0xb); /* divide by 1 */
	wr(a, X_LVT_TIMER, 0x40);
	e->f.now = 1000;
	wr(a, X_TMICT, 1000);
	assert_int_equal(e->f.armed, 2000);
	assert_int_equal(rd(a, X_TMICT), 1000);
	assert_int_equal(rd(a, X_TMCCT), 1000);
	e->f.now = 1500;
	assert_int_equal(rd(a, X_TMCCT), 500);
	e->f.now = 1900;
	assert_int_equal(rd(a, X_TMCCT), 100);

	/* Early (spurious) fire: re-armed, nothing raised. */
	e->f.armed = 0;
	lapic_timer_fire(a);
	assert_int_equal(e->f.armed, 2000);
	assert_false(irr_has(a, 0x40));
	assert_int_equal(a->timer_fired, 0);

	e->f.now = 2000;
	lapic_timer_fire(a);
	assert_true(irr_has(a, 0x40));
	assert_int_equal(a->timer_fired, 1);
	assert_int_equal(rd(a, X_TMCCT), 0);
	assert_int_equal(lapic_ack(a), 0x40);
	wr(a, X_EOI, 0);

	/* Late duplicate fire: nothing. */
	e->f.now = 5000;
	int narm = e->f.narm;

	lapic_timer_fire(a);
	assert_false(irr_has(a, 0x40));
	assert_int_equal(a->timer_fired, 1);
	assert_int_equal(e->f.narm, narm);

	/* Masked: counts, fires, raises nothing. TMICT 0 stops. */
	wr(a, X_LVT_TIMER, 0x10040);
	wr(a, X_TMICT, 10);
	assert_int_equal(e->f.armed, 5010);
	e->f.now = 5010;
	lapic_timer_fire(a);
	assert_int_equal(a->timer_fired, 2);
	assert_false(irr_has(a, 0x40));
	wr(a, X_TMICT, 10);
	wr(a, X_TMICT, 0);
	assert_int_equal(e->f.armed, 0);
	assert_int_equal(rd(a, X_TMCCT), 0);
}

static void test_timer_divider(void **state)
{
	static const struct {
		uint32_t tdcr, div;
	} cases[] = {
		{0x0, 2},  {0x1, 4},  {0x2, 8},	  {0x3, 16},
		{0x8, 32}, {0x9, 64}, {0xa, 128}, {0xb, 1},
	};
	struct env *e = *state;
	struct lapic *a = &e->a;

	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_LVT_TIMER, 0x40);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		e->f.now = 10000;
		mwr(a, M_TDCR, cases[i].tdcr);
		assert_int_equal(mrd(a, M_TDCR), cases[i].tdcr);
		mwr(a, M_TMICT, 100);
		assert_int_equal(e->f.armed, 10000 + 100 * cases[i].div);
		e->f.now = 10000 + 25 * cases[i].div;
		assert_int_equal(mrd(a, M_TMCCT), 75);
	}

	/* A slower clock: 100 MHz, divide by 2 -> 20 ns a tick. */
	a->bus_hz = 100000000;
	e->f.now = 0;
	mwr(a, M_TDCR, 0);
	mwr(a, M_TMICT, 50);
	assert_int_equal(e->f.armed, 1000);
	e->f.now = 500;
	assert_int_equal(mrd(a, M_TMCCT), 25);
	/* Changing the divider mid-count keeps the count. */
	mwr(a, M_TDCR, 0xb); /* 10 ns a tick */
	assert_int_equal(mrd(a, M_TMCCT), 25);
	assert_int_equal(e->f.armed, 750);
}

static void test_timer_periodic(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	wr(a, X_TDCR, 0xb);
	wr(a, X_LVT_TIMER, 0x20040);
	e->f.now = 1000;
	wr(a, X_TMICT, 100);
	assert_int_equal(e->f.armed, 1100);

	e->f.now = 1100;
	lapic_timer_fire(a);
	assert_int_equal(e->f.armed, 1200);
	assert_int_equal(a->timer_fired, 1);
	assert_true(irr_has(a, 0x40));
	e->f.now = 1130;
	assert_int_equal(rd(a, X_TMCCT), 70);

	/* Slightly late: next deadline stays on the grid. */
	e->f.now = 1210;
	lapic_timer_fire(a);
	assert_int_equal(e->f.armed, 1300);

	/* Very late: skip to the first period after now. */
	e->f.now = 1555;
	lapic_timer_fire(a);
	assert_int_equal(e->f.armed, 1600);
	assert_int_equal(a->timer_fired, 3);
	assert_int_equal(rd(a, X_TMCCT), 45);
	assert_int_equal(rd(a, X_TMICT), 100);

	/* Changing the mode disarms. */
	wr(a, X_LVT_TIMER, 0x40);
	assert_int_equal(e->f.armed, 0);
	assert_int_equal(rd(a, X_TMICT), 0);
	assert_int_equal(rd(a, X_TMCCT), 0);
}

static void test_timer_tsc_deadline(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	x2_enable(a);
	/* Not in TSC-deadline mode: reads 0, writes ignored. */
	wr(a, X_LVT_TIMER, 0x40);
	wr(a, MSR_IA32_TSC_DEADLINE, 4000);
	assert_int_equal(rd(a, MSR_IA32_TSC_DEADLINE), 0);
	assert_int_equal(e->f.narm, 0);

	wr(a, X_LVT_TIMER, 0x40040);
	wr(a, X_TMICT, 100); /* ignored */
	assert_int_equal(rd(a, X_TMICT), 0);
	assert_int_equal(e->f.narm, 0);

	wr(a, MSR_IA32_TSC_DEADLINE, 4000); /* fake TSC: 2 per ns */
	assert_int_equal(e->f.armed, 2000);
	assert_int_equal(rd(a, MSR_IA32_TSC_DEADLINE), 4000);
	assert_int_equal(rd(a, X_TMCCT), 0);

	e->f.now = 1999;
	lapic_timer_fire(a); /* early */
	assert_false(irr_has(a, 0x40));
	e->f.now = 2000;
	lapic_timer_fire(a);
	assert_true(irr_has(a, 0x40));
	assert_int_equal(rd(a, MSR_IA32_TSC_DEADLINE), 0);
	lapic_timer_fire(a); /* spurious */
	assert_int_equal(a->timer_fired, 1);

	/* Write 0 disarms. */
	wr(a, MSR_IA32_TSC_DEADLINE, 10000);
	assert_int_equal(e->f.armed, 5000);
	wr(a, MSR_IA32_TSC_DEADLINE, 0);
	assert_int_equal(e->f.armed, 0);
	e->f.now = 6000;
	lapic_timer_fire(a);
	assert_int_equal(a->timer_fired, 1);

	/* Re-programmed: a fire for the old deadline re-arms. */
	e->f.now = 0;
	wr(a, MSR_IA32_TSC_DEADLINE, 2000);
	wr(a, MSR_IA32_TSC_DEADLINE, 8000);
	e->f.now = 1000;
	lapic_timer_fire(a);
	assert_int_equal(a->timer_fired, 1);
	assert_int_equal(e->f.armed, 4000);

	/* Leaving the mode disarms. */
	wr(a, X_LVT_TIMER, 0x40);
	assert_int_equal(e->f.armed, 0);
	assert_int_equal(rd(a, MSR_IA32_TSC_DEADLINE), 0);
}

/* ---- INIT and xAPIC MMIO ------------------------------------------------ */

static void test_init_reset(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct apic_msg nmi = {.delivery = APIC_DM_NMI};
	struct apic_msg sipi = {.delivery = APIC_DM_SIPI, .vector = 9};
	uint8_t sv = 0;

	x2_enable(a);
	wr(a, X_TPR, 0x10);
	wr(a, X_LVT_TIMER, 0x40);
	wr(a, X_TMICT, 1000);
	assert_true(e->f.armed != 0);
	fixed(a, 0x50, true);
	fixed(a, 0x60, false);
	assert_int_equal(lapic_ack(a), 0x60);
	wr(a, X_ICR, (5ULL << 32) | 0x4030);
	lapic_deliver(a, &nmi);
	lapic_deliver(a, &sipi);

	lapic_reset(a);
	assert_int_equal(e->f.armed, 0);
	assert_int_equal(rd(a, MSR_IA32_APIC_BASE), BASE_X2APIC);
	assert_int_equal(rd(a, X_ID), APIC_ID);
	assert_int_equal(rd(a, X_LDR), 1 << APIC_ID);
	assert_int_equal(rd(a, X_TPR), 0);
	assert_int_equal(rd(a, X_SVR), 0xff);
	assert_int_equal(rd(a, X_LVT_TIMER), LVT_MASKED);
	assert_int_equal(rd(a, X_LVT_LINT0), LVT_MASKED);
	assert_int_equal(rd(a, X_TMICT), 0);
	assert_int_equal(rd(a, X_ICR), 0);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(rd(a, X_IRR + i), 0);
		assert_int_equal(rd(a, X_ISR + i), 0);
		assert_int_equal(rd(a, X_TMR + i), 0);
	}
	/* A SIPI that raced with the INIT handling survives; NMI goes. */
	assert_int_equal(lapic_take_events(a, &sv), LAPIC_EV_SIPI);
	assert_int_equal(sv, 9);

	/* INIT in xAPIC mode: DFR all ones, LDR 0, ID kept. */
	wr(a, MSR_IA32_APIC_BASE, LAPIC_MMIO_BASE);
	wr(a, MSR_IA32_APIC_BASE, BASE_XAPIC);
	mwr(a, M_ID, 0x0a000000);
	mwr(a, M_LDR, 0x01000000);
	mwr(a, M_DFR, 0x0fffffff);
	lapic_reset(a);
	assert_int_equal(mrd(a, M_ID), 0x0a000000);
	assert_int_equal(mrd(a, M_LDR), 0);
	assert_int_equal(mrd(a, M_DFR), 0xffffffff);
}

static void test_xapic_mmio(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;
	struct apic_target t;
	uint8_t b[8];

	assert_int_equal(mrd(a, M_ID), APIC_ID << 24);
	assert_int_equal(mrd(a, M_VERSION), 0x00060014);
	assert_int_equal(mrd(a, M_SVR), 0xff);
	assert_int_equal(mrd(a, M_DFR), 0xffffffff);
	assert_int_equal(mrd(a, M_LVT_LINT0), LVT_MASKED);

	/* ID is writable in xAPIC mode, and the matcher sees it. */
	mwr(a, M_ID, 0x05ffffff);
	assert_int_equal(mrd(a, M_ID), 0x05000000);
	lapic_target(a, &t);
	assert_int_equal(t.apic_id, 5);
	assert_false(t.x2apic);

	/* LDR bits 31:24, DFR bits 31:28. */
	mwr(a, M_LDR, 0x12345678);
	assert_int_equal(mrd(a, M_LDR), 0x12000000);
	mwr(a, M_DFR, 0);
	assert_int_equal(mrd(a, M_DFR), 0x0fffffff);
	lapic_target(a, &t);
	assert_int_equal(t.ldr, 0x12000000);
	assert_int_equal(t.dfr_model, 0);
	mwr(a, M_DFR, 0xf0000000);
	lapic_target(a, &t);
	assert_int_equal(t.dfr_model, 0xf);

	/* Read-only registers ignore writes. */
	mwr(a, M_VERSION, 0);
	assert_int_equal(mrd(a, M_VERSION), 0x00060014);
	mwr(a, M_PPR, 0x50);
	assert_int_equal(mrd(a, M_PPR), 0);
	mwr(a, M_IRR, 0xffffffff);
	assert_int_equal(mrd(a, M_IRR), 0);

	/* TPR, IRR, EOI. */
	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_TPR, 0x123);
	assert_int_equal(mrd(a, M_TPR), 0x23);
	assert_int_equal(mrd(a, M_PPR), 0x23);
	mwr(a, M_TPR, 0);
	fixed(a, 0x45, false);
	assert_int_equal(mrd(a, M_IRR + 0x20), 1u << 5);
	assert_int_equal(lapic_ack(a), 0x45);
	assert_int_equal(mrd(a, 0x120), 1u << 5);
	assert_int_equal(mrd(a, M_PPR), 0x40);
	mwr(a, M_EOI, 0x1234); /* any value in xAPIC mode */
	assert_int_equal(mrd(a, M_PPR), 0);

	/* ICR: dest from ICR high bits 31:24, delivery status reads 0. */
	mwr(a, M_ICR_HI, 0x07abcdef);
	assert_int_equal(mrd(a, M_ICR_HI), 0x07000000);
	mwr(a, M_ICR, 0x5855);
	assert_int_equal(e->f.nsent, 1);
	assert_int_equal(e->f.sent[0].dest, 7);
	assert_true(e->f.sent[0].logical);
	assert_false(e->f.sent[0].x2apic_dest);
	assert_int_equal(e->f.sent[0].vector, 0x55);
	assert_int_equal(mrd(a, M_ICR), 0x4855);

	/* ESR, SELF IPI absent in xAPIC mode. */
	mwr(a, M_ICR, 0x4001);
	mwr(a, M_ESR, 0);
	assert_int_equal(mrd(a, M_ESR), 1u << 5);
	mwr(a, M_SELF_IPI, 0x40);
	assert_int_equal(mrd(a, M_SELF_IPI), 0);
	assert_int_equal(e->f.nsent, 1);

	/* Odd sizes and offsets: reads 0, writes ignored. */
	memset(b, 0xaa, sizeof(b));
	lapic_mmio(a, M_ID, b, 2, false);
	assert_int_equal(b[0], 0);
	assert_int_equal(b[1], 0);
	assert_int_equal(b[2], 0xaa);
	lapic_mmio(a, M_ID + 4, b, 4, false);
	assert_int_equal(b[3], 0);
	lapic_mmio(a, M_ID, b, 8, false);
	assert_int_equal(b[7], 0);
	mwr(a, M_TPR + 4, 0x30);
	lapic_mmio(a, M_TPR, (uint8_t[2]){0x30, 0}, 2, true);
	assert_int_equal(mrd(a, M_TPR), 0);
	assert_int_equal(mrd(a, 0x1000), 0);
	assert_int_equal(mrd(a, 0x400), 0);
	lapic_mmio(a, 0, NULL, 0, false);

	/* x2APIC mode: the page is dead. */
	to_x2apic(a);
	assert_int_equal(mrd(a, M_VERSION), 0);
	mwr(a, M_TPR, 0x30);
	assert_int_equal(rd(a, X_TPR), 0);
}

static void test_mmio_timer(void **state)
{
	struct env *e = *state;
	struct lapic *a = &e->a;

	mwr(a, M_SVR, 0x1ff);
	mwr(a, M_TDCR, 0xb);
	mwr(a, M_LVT_TIMER, 0x31);
	e->f.now = 100;
	mwr(a, M_TMICT, 50);
	assert_int_equal(e->f.armed, 150);
	e->f.now = 120;
	assert_int_equal(mrd(a, M_TMCCT), 30);
	e->f.now = 150;
	lapic_timer_fire(a);
	assert_int_equal(lapic_pending_vector(a), 0x31);
	assert_int_equal(mrd(a, M_TMCCT), 0);
}

/* ---- randomized ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint64_t rnd_value(void)
{
	switch (rnd() % 4) {
	case 0:
		return rnd() & 0xff;
	case 1:
		return rnd() & 0xffffffff;
	case 2:
		return rnd();
	default:
		return (rnd() & 0x7) << 8 | (rnd() & 0xff) | (rnd() & 0xc0000);
	}
}

static void random_base(struct lapic *a)
{
	static const uint64_t bases[] = {
		LAPIC_MMIO_BASE,
		BASE_XAPIC,
		BASE_X2APIC,
		LAPIC_MMIO_BASE | APIC_BASE_X2APIC,
	};

	lapic_write_msr(a, MSR_IA32_APIC_BASE, bases[rnd() % 4]);
}

static void random_op(struct env *e)
{
	struct lapic *a = &e->a;
	uint8_t buf[8];
	uint64_t v;
	struct apic_msg m;

	switch (rnd() % 16) {
	case 0:
	case 1:
		lapic_write_msr(a, 0x800 + rnd() % 0x100, rnd_value());
		break;
	case 2:
		lapic_read_msr(a, 0x800 + rnd() % 0x100, &v);
		break;
	case 3:
		v = rnd_value();
		memcpy(buf, &v, 8);
		lapic_mmio(a, rnd() % 0x1010, buf, 1 + rnd() % 8, true);
		break;
	case 4:
		lapic_mmio(a, (rnd() % 0x40) << 4, buf, 4, rnd() & 1);
		break;
	case 5:
		lapic_mmio(a, rnd() % 0x1010, buf, 1 + rnd() % 8, false);
		break;
	case 6:
		random_base(a);
		break;
	case 7:
		apic_msg_from_msi(0xfee00000 | (rnd() & 0xfffff), rnd(), &m);
		m.shorthand = rnd() % 4;
		m.src_vcpu = rnd() % 2;
		lapic_deliver(a, &m);
		break;
	case 8:
		lapic_set_lint(a, rnd() % 3, rnd() % 2);
		break;
	case 9:
		e->f.now += rnd() % 5000;
		lapic_timer_fire(a);
		break;
	case 10:
		if (lapic_ack(a) >= 0 && (rnd() & 1))
			lapic_write_msr(a, 0x80b, 0);
		lapic_mmio(a, 0xb0, buf, 4, true);
		break;
	case 11:
		lapic_take_events(a, buf);
		lapic_has_wakeup(a, rnd() & 1);
		lapic_pending_vector(a);
		break;
	case 12:
		lapic_write_msr(a,
				rnd() & 1 ? MSR_IA32_TSC_DEADLINE :
					    MSR_IA32_APIC_BASE,
				rnd_value());
		lapic_read_msr(a, MSR_IA32_TSC_DEADLINE, &v);
		break;
	case 13:
		if (rnd() % 64 == 0)
			lapic_reset(a);
		break;
	case 14:
		/* Enable and program the timer in some mode. */
		lapic_write_msr(a, 0x80f, 0x1ff);
		lapic_write_msr(a, 0x832, (rnd() % 3) << 17 | 0x40);
		lapic_write_msr(a, 0x83e, rnd() & 0xb);
		lapic_write_msr(a, 0x838, rnd() % 10000);
		break;
	default:
		lapic_read_msr(a, 0x839, &v);
		break;
	}
}

static void test_random_accesses(void **state)
{
	struct env *e = *state;
	struct apic_target t;

	e->f.loopback = true;
	for (int i = 0; i < 200000; i++)
		random_op(e);
	/* Still consistent enough to answer. */
	lapic_target(&e->a, &t);
	assert_int_equal(t.vcpu, VCPU);
}

/* ---- concurrency --------------------------------------------------------- */

/* Thread-safe fake for the concurrent test. */
struct mt_fake {
	struct lapic *self;
	uint64_t now, armed, kicks, eois;
	int stop;
};

static void mt_send(void *opaque, const struct apic_msg *m)
{
	struct mt_fake *f = opaque;
	struct apic_target t;

	lapic_target(f->self, &t);
	if (apic_match(m, &t))
		lapic_deliver(f->self, m);
}

static void mt_eoi(void *opaque, uint8_t vector)
{
	(void)vector;
	__atomic_add_fetch(&((struct mt_fake *)opaque)->eois, 1,
			   __ATOMIC_RELAXED);
}

static void mt_kick(void *opaque)
{
	__atomic_add_fetch(&((struct mt_fake *)opaque)->kicks, 1,
			   __ATOMIC_RELAXED);
}

static void mt_timer_arm(void *opaque, uint64_t deadline)
{
	__atomic_store_n(&((struct mt_fake *)opaque)->armed, deadline,
			 __ATOMIC_SEQ_CST);
}

static uint64_t mt_now(void *opaque)
{
	return __atomic_load_n(&((struct mt_fake *)opaque)->now,
			       __ATOMIC_SEQ_CST);
}

static const struct lapic_ops mt_ops = {
	.send = mt_send,
	.eoi = mt_eoi,
	.kick = mt_kick,
	.timer_arm = mt_timer_arm,
	.now_ns = mt_now,
	.tsc_to_ns = f_tsc_to_ns,
	.ns_to_tsc = f_ns_to_tsc,
};

/* Another thread: time passes, the timer fires, devices interrupt. */
static void *mt_other(void *arg)
{
	struct mt_fake *f = arg;
	struct apic_msg m = {.delivery = APIC_DM_FIXED, .assert = true};

	for (unsigned int i = 0; !__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST);
	     i++) {
		__atomic_add_fetch(&f->now, 1 + i % 7, __ATOMIC_SEQ_CST);
		lapic_timer_fire(f->self);
		m.vector = 0x20 + i % 0xd0;
		m.level = i & 1;
		lapic_deliver(f->self, &m);
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct mt_fake f = {.now = 1};
	struct lapic a;
	pthread_t th;

	(void)state;
	f.self = &a;
	lapic_init(&a, 0, 0, true, BUS_HZ, &mt_ops, &f);
	wr(&a, MSR_IA32_APIC_BASE, BASE_X2APIC);
	wr(&a, X_SVR, 0x1ff);
	wr(&a, X_TDCR, 0xb);
	wr(&a, X_LVT_TIMER, 0x20030); /* periodic: every fire re-arms */
	assert_int_equal(pthread_create(&th, NULL, mt_other, &f), 0);
	for (int i = 0; i < 100000; i++) {
		wr(&a, X_TMICT, 1 + i % 50);
		if (lapic_ack(&a) >= 0)
			wr(&a, X_EOI, 0);
		wr(&a, X_SELF_IPI, 0x40 + i % 0x80);
		wr(&a, X_ICR, 0x00044000 | (0x30 + i % 0x40));
		rd(&a, X_TMCCT);
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	/* The caller's timer ends up at the LAPIC's own deadline. */
	assert_int_equal(f.armed, a.timer_deadline_ns);
	assert_true(a.timer_fired > 0);
	lapic_destroy(&a);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_msi_decode),
		T(test_match_physical),
		T(test_match_logical),
		T(test_match_shorthand),
		T(test_apic_base_transitions),
		T(test_x2apic_msrs_gp_outside_x2apic),
		T(test_x2apic_readonly_and_reserved),
		T(test_x2apic_ldr),
		T(test_priority_nested),
		T(test_eoi_level_callback),
		T(test_software_disabled),
		T(test_icr_fixed_physical),
		T(test_icr_init_sipi_nmi),
		T(test_icr_shorthands),
		T(test_illegal_vectors_and_esr),
		T(test_self_ipi_loopback),
		T(test_lvt_masking),
		T(test_lint_extint_and_nmi),
		T(test_lint_fixed),
		T(test_timer_oneshot),
		T(test_timer_divider),
		T(test_timer_periodic),
		T(test_timer_tsc_deadline),
		T(test_init_reset),
		T(test_xapic_mmio),
		T(test_mmio_timer),
		T(test_random_accesses),
		T(test_concurrent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
