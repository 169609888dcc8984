/*
 * irqchip/lapic.c - the userspace local APIC: the register file (x2APIC
 * MSRs and the xAPIC MMIO page), the IA32_APIC_BASE mode state machine,
 * IRR/ISR/TMR with TPR/PPR priorities and EOI, ICR and self IPIs, the ESR,
 * the LVTs with the LINT0/1 pins, and the timer (one-shot, periodic,
 * TSC-deadline).
 *
 * Locking: every entry point takes a->lock, records in a struct
 * lapic_work what must be done through the ops (send, EOI, kick, timer),
 * and unlock_run() does it after dropping the lock, so that a callback may
 * come straight back into this LAPIC (a self IPI) or into another one.
 *
 * Simplification: fixed and lowest-priority interrupts that arrive while
 * the APIC is software-disabled (SVR bit 8 clear) are dropped rather than
 * latched into IRR; NMI, SMI, INIT, SIPI and ExtINT are still accepted.
 */
#include <errno.h>
#include <string.h>

#include "irqchip/lapic.h"

/* Register index: xAPIC MMIO offset >> 4 == x2APIC MSR - 0x800. */
enum lapic_reg {
	REG_ID = 0x02,
	REG_VERSION = 0x03,
	REG_TPR = 0x08,
	REG_APR = 0x09,
	REG_PPR = 0x0a,
	REG_EOI = 0x0b,
	REG_RRD = 0x0c,
	REG_LDR = 0x0d,
	REG_DFR = 0x0e,
	REG_SVR = 0x0f,
	REG_ISR = 0x10,
	REG_TMR = 0x18,
	REG_IRR = 0x20,
	REG_ESR = 0x28,
	REG_LVT_CMCI = 0x2f,
	REG_ICR = 0x30,
	REG_ICR_HI = 0x31,
	REG_LVT_TIMER = 0x32,
	REG_LVT_ERROR = 0x37,
	REG_TMICT = 0x38,
	REG_TMCCT = 0x39,
	REG_TDCR = 0x3e,
	REG_SELF_IPI = 0x3f,
};

/* Indices into a->lvt[] (CMCI first, then the 0x320-0x370 block). */
enum {
	LVT_CMCI,
	LVT_TIMER,
	LVT_THERMAL,
	LVT_PERF,
	LVT_LINT0,
	LVT_LINT1,
	LVT_ERROR,
	LVT_COUNT,
};

#define APIC_VERSION 0x00060014u /* version 0x14, max LVT entry 6 */

#define SVR_ENABLE (1u << 8)
#define SVR_VALID 0x3ffu /* vector, APIC enable, focus check disable */

#define LVT_VECTOR 0xffu
#define LVT_DM (7u << 8)
#define LVT_DELIV_STATUS (1u << 12)
#define LVT_POLARITY (1u << 13)
#define LVT_REMOTE_IRR (1u << 14)
#define LVT_LEVEL (1u << 15)
#define LVT_MASKED (1u << 16)
#define LVT_TIMER_MODE (3u << 17)

enum { TIMER_ONESHOT = 0, TIMER_PERIODIC = 1, TIMER_TSC_DEADLINE = 2 };

#define ICR_VECTOR 0xffu
#define ICR_LOGICAL (1u << 11)
#define ICR_ASSERT (1u << 14)
#define ICR_LEVEL (1u << 15)
#define ICR_VALID 0x000ccfffu /* bit 12 (delivery status) reads 0 */
#define XAPIC_DEST_MASK 0xff000000u

#define ESR_SEND_ILLEGAL (1u << 5)
#define ESR_RECV_ILLEGAL (1u << 6)

#define TDCR_VALID 0xbu
#define TPR_VALID 0xffu
#define DFR_RO_ONES 0x0fffffffu

#define APIC_BASE_ADDR 0x0000000ffffff000ULL /* bits 35:12 */
#define APIC_BASE_VALID \
	(APIC_BASE_ADDR | APIC_BASE_BSP | APIC_BASE_X2APIC | APIC_BASE_ENABLE)

#define NSEC_PER_SEC 1000000000ULL
#define TIMER_NS_MAX (1ULL << 62)

/* What to do through the ops once the lock is dropped. */
struct lapic_work {
	bool send;
	struct apic_msg msg;
	int eoi_vector; /* -1: none */
	bool kick;
	bool timer_sync; /* tell ops->timer_arm about a new deadline */
	uint64_t timer_seq;
	uint64_t deadline;
};

static const uint32_t lvt_writable[LVT_COUNT] = {
	[LVT_CMCI] = LVT_VECTOR | LVT_DM | LVT_MASKED,
	[LVT_TIMER] = LVT_VECTOR | LVT_MASKED | LVT_TIMER_MODE,
	[LVT_THERMAL] = LVT_VECTOR | LVT_DM | LVT_MASKED,
	[LVT_PERF] = LVT_VECTOR | LVT_DM | LVT_MASKED,
	[LVT_LINT0] =
		LVT_VECTOR | LVT_DM | LVT_POLARITY | LVT_LEVEL | LVT_MASKED,
	[LVT_LINT1] =
		LVT_VECTOR | LVT_DM | LVT_POLARITY | LVT_LEVEL | LVT_MASKED,
	[LVT_ERROR] = LVT_VECTOR | LVT_MASKED,
};

/* ---- small helpers ---------------------------------------------------- */

static bool bit_test(const uint32_t *v, unsigned int n)
{
	return v[n >> 5] & (1u << (n & 31));
}

static void bit_set(uint32_t *v, unsigned int n)
{
	v[n >> 5] |= 1u << (n & 31);
}

static void bit_clear(uint32_t *v, unsigned int n)
{
	v[n >> 5] &= ~(1u << (n & 31));
}

/* Highest set bit of a 256-bit vector register, or -1. */
static int highest_bit(const uint32_t *v)
{
	for (int i = 7; i >= 0; i--) {
		if (v[i])
			return i * 32 + 31 - __builtin_clz(v[i]);
	}
	return -1;
}

static uint64_t add_sat(uint64_t x, uint64_t y)
{
	return x + y < x ? UINT64_MAX : x + y;
}

static bool hw_enabled(const struct lapic *a)
{
	return a->apic_base & APIC_BASE_ENABLE;
}

static bool x2apic_mode(const struct lapic *a)
{
	return hw_enabled(a) && (a->apic_base & APIC_BASE_X2APIC);
}

static bool sw_enabled(const struct lapic *a)
{
	return a->svr & SVR_ENABLE;
}

/* Fixed interrupts are accepted and delivered only in this state. */
static bool accepting(const struct lapic *a)
{
	return hw_enabled(a) && sw_enabled(a);
}

static uint32_t x2apic_ldr(uint32_t apic_id)
{
	return ((apic_id >> 4) << 16) | (1u << (apic_id & 15));
}

static int lvt_index(unsigned int reg)
{
	if (reg == REG_LVT_CMCI)
		return LVT_CMCI;
	if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR)
		return reg - REG_LVT_TIMER + LVT_TIMER;
	return -1;
}

static bool lvt_is_lint(int idx)
{
	return idx == LVT_LINT0 || idx == LVT_LINT1;
}

/* Bits a guest may set in an LVT without #GP in x2APIC mode. */
static uint32_t lvt_valid(int idx)
{
	uint32_t v = lvt_writable[idx] | LVT_DELIV_STATUS;

	return lvt_is_lint(idx) ? v | LVT_REMOTE_IRR : v;
}

static unsigned int lvt_delivery(uint32_t lvt)
{
	return (lvt & LVT_DM) >> 8;
}

static unsigned int timer_mode(const struct lapic *a)
{
	return (a->lvt[LVT_TIMER] & LVT_TIMER_MODE) >> 17;
}

static uint64_t ops_now(struct lapic *a)
{
	return a->ops->now_ns ? a->ops->now_ns(a->opaque) : 0;
}

/* ---- deferred callbacks ----------------------------------------------- */

static void work_init(struct lapic_work *w)
{
	memset(w, 0, sizeof(*w));
	w->eoi_vector = -1;
}

/*
 * Hand the current deadline to ops->timer_arm. Two threads may change the
 * deadline and race to call timer_arm; whoever finds the deadline changed
 * (timer_seq moved) after its call repeats it with the newest one, so the
 * last call always carries the current deadline.
 */
static void timer_sync(struct lapic *a, uint64_t seq, uint64_t deadline)
{
	bool done;

	if (!a->ops->timer_arm)
		return;
	do {
		a->ops->timer_arm(a->opaque, deadline);
		pthread_mutex_lock(&a->lock);
		done = a->timer_seq == seq;
		seq = a->timer_seq;
		deadline = a->timer_deadline_ns;
		pthread_mutex_unlock(&a->lock);
	} while (!done);
}

static void unlock_run(struct lapic *a, struct lapic_work *w)
{
	pthread_mutex_unlock(&a->lock);
	if (w->timer_sync)
		timer_sync(a, w->timer_seq, w->deadline);
	if (w->eoi_vector >= 0 && a->ops->eoi)
		a->ops->eoi(a->opaque, (uint8_t)w->eoi_vector);
	if (w->send && a->ops->send)
		a->ops->send(a->opaque, &w->msg);
	if (w->kick && a->ops->kick)
		a->ops->kick(a->opaque);
}

/* ---- priorities, IRR/ISR, errors, events ------------------------------- */

static uint32_t ppr(const struct lapic *a)
{
	int isrv = highest_bit(a->isr);
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;

	if ((a->tpr & 0xf0) >= isr_class)
		return a->tpr & 0xff;
	return isr_class;
}

static int pending_vector(const struct lapic *a)
{
	int v;

	if (!accepting(a))
		return -1;
	v = highest_bit(a->irr);
	if (v < 0 || (uint32_t)(v >> 4) <= ppr(a) >> 4)
		return -1;
	return v;
}

static void raise_irr(struct lapic *a, uint8_t vector, bool level,
		      struct lapic_work *w)
{
	bit_set(a->irr, vector);
	if (level)
		bit_set(a->tmr, vector);
	else
		bit_clear(a->tmr, vector);
	w->kick = true;
}

/* Log @err for the next ESR write; signal it through the error LVT. */
static void set_error(struct lapic *a, uint32_t err, struct lapic_work *w)
{
	uint32_t lvt = a->lvt[LVT_ERROR];

	a->esr_pending |= err;
	if (!(lvt & LVT_MASKED) && (lvt & LVT_VECTOR) >= 16)
		raise_irr(a, lvt & LVT_VECTOR, false, w);
}

/* Latch a fixed interrupt; false if the vector is illegal (0-15). */
static bool accept_fixed(struct lapic *a, uint8_t vector, bool level,
			 struct lapic_work *w)
{
	if (vector < 16) {
		set_error(a, ESR_RECV_ILLEGAL, w);
		return false;
	}
	raise_irr(a, vector, level, w);
	return true;
}

static void raise_event(struct lapic *a, unsigned int ev, struct lapic_work *w)
{
	a->events |= ev;
	w->kick = true;
}

/* ---- LINT pins -------------------------------------------------------- */

/* Is an ExtINT request pending because a LINT pin is held high? */
static bool extint_line(const struct lapic *a)
{
	if (!hw_enabled(a))
		return a->lint_level[0];
	for (int pin = 0; pin < 2; pin++) {
		uint32_t lvt = a->lvt[LVT_LINT0 + pin];

		if (a->lint_level[pin] && !(lvt & LVT_MASKED) &&
		    lvt_delivery(lvt) == APIC_DM_EXTINT)
			return true;
	}
	return false;
}

static void lint_fixed(struct lapic *a, int pin, bool rising,
		       struct lapic_work *w)
{
	uint32_t *lvt = &a->lvt[LVT_LINT0 + pin];

	if (!(*lvt & LVT_LEVEL)) {
		if (rising)
			accept_fixed(a, *lvt & LVT_VECTOR, false, w);
		return;
	}
	/* Level: deliver while high; remote IRR blocks until the EOI. */
	if (a->lint_level[pin] && !(*lvt & LVT_REMOTE_IRR) &&
	    accept_fixed(a, *lvt & LVT_VECTOR, true, w))
		*lvt |= LVT_REMOTE_IRR;
}

/* Act on the state of LINT pin @pin (@rising: it just went 0 -> 1). */
static void lint_update(struct lapic *a, int pin, bool rising,
			struct lapic_work *w)
{
	uint32_t lvt = a->lvt[LVT_LINT0 + pin];

	if (!hw_enabled(a)) {
		/* Globally disabled: LINT0 is INTR, LINT1 is NMI. */
		if (pin == 0 && a->lint_level[0])
			w->kick = true;
		if (pin == 1 && rising)
			raise_event(a, LAPIC_EV_NMI, w);
		return;
	}
	if (lvt & LVT_MASKED)
		return;

	switch (lvt_delivery(lvt)) {
	case APIC_DM_FIXED:
		lint_fixed(a, pin, rising, w);
		break;
	case APIC_DM_EXTINT:
		/* Level-sensitive: lapic_take_events reports the line. */
		if (a->lint_level[pin])
			w->kick = true;
		break;
	case APIC_DM_NMI:
		if (rising)
			raise_event(a, LAPIC_EV_NMI, w);
		break;
	case APIC_DM_SMI:
		if (rising)
			raise_event(a, LAPIC_EV_SMI, w);
		break;
	case APIC_DM_INIT:
		if (rising)
			raise_event(a, LAPIC_EV_INIT, w);
		break;
	default:
		break;
	}
}

/* A level-triggered @vector was EOI'd: clear the LINT remote IRR. */
static void lint_eoi(struct lapic *a, uint8_t vector, struct lapic_work *w)
{
	for (int pin = 0; pin < 2; pin++) {
		uint32_t *lvt = &a->lvt[LVT_LINT0 + pin];

		if ((*lvt & LVT_REMOTE_IRR) && (*lvt & LVT_VECTOR) == vector) {
			*lvt &= ~LVT_REMOTE_IRR;
			lint_update(a, pin, false, w);
		}
	}
}

static void do_eoi(struct lapic *a, struct lapic_work *w)
{
	int v = highest_bit(a->isr);

	if (v < 0)
		return;
	bit_clear(a->isr, v);
	if (bit_test(a->tmr, v)) {
		bit_clear(a->tmr, v);
		w->eoi_vector = v;
		lint_eoi(a, v, w);
	}
}

/* ---- timer ------------------------------------------------------------ */

static uint32_t timer_divisor(uint32_t tdcr)
{
	unsigned int v = ((tdcr >> 1) & 4) | (tdcr & 3);

	return v == 7 ? 1 : 2u << v;
}

/* Time for @ticks timer ticks, rounded up; at least 1 ns. */
static uint64_t ticks_to_ns(const struct lapic *a, uint64_t ticks)
{
	unsigned __int128 num = (unsigned __int128)ticks *
				timer_divisor(a->tdcr) * NSEC_PER_SEC;
	unsigned __int128 ns = (num + a->bus_hz - 1) / a->bus_hz;

	if (ns > TIMER_NS_MAX)
		return TIMER_NS_MAX;
	return ns ? (uint64_t)ns : 1;
}

static uint64_t ns_to_ticks(const struct lapic *a, uint64_t ns)
{
	unsigned __int128 t = (unsigned __int128)ns * a->bus_hz /
			      ((uint64_t)timer_divisor(a->tdcr) * NSEC_PER_SEC);

	return t > UINT64_MAX ? UINT64_MAX : (uint64_t)t;
}

static void timer_set_deadline(struct lapic *a, uint64_t deadline,
			       struct lapic_work *w)
{
	a->timer_deadline_ns = deadline;
	a->timer_seq++;
	w->timer_sync = true;
	w->timer_seq = a->timer_seq;
	w->deadline = deadline;
}

static void timer_stop(struct lapic *a, struct lapic_work *w)
{
	if (a->timer_deadline_ns)
		timer_set_deadline(a, 0, w);
}

/* Load TMICT into the counter at @now (TMICT 0 stops the timer). */
static void timer_start_count(struct lapic *a, uint64_t now,
			      struct lapic_work *w)
{
	a->timer_start_ns = now;
	if (!a->tmict) {
		timer_stop(a, w);
		return;
	}
	timer_set_deadline(a, add_sat(now, ticks_to_ns(a, a->tmict)), w);
}

/* TMCCT at @now. */
static uint32_t timer_current_count(const struct lapic *a, uint64_t now)
{
	uint64_t ticks;

	if (timer_mode(a) == TIMER_TSC_DEADLINE || !a->tmict ||
	    !a->timer_deadline_ns)
		return 0;
	ticks = ns_to_ticks(
		a, now > a->timer_start_ns ? now - a->timer_start_ns : 0);
	if (timer_mode(a) == TIMER_PERIODIC)
		return a->tmict - (uint32_t)(ticks % a->tmict);
	return ticks >= a->tmict ? 0 : a->tmict - (uint32_t)ticks;
}

/* A new divider while counting: keep the count, change the rate. */
static void write_tdcr(struct lapic *a, uint32_t val, uint64_t now,
		       struct lapic_work *w)
{
	uint32_t cur = timer_current_count(a, now);
	uint64_t done_ns;

	a->tdcr = val & TDCR_VALID;
	if (!cur)
		return;
	done_ns = cur == a->tmict ? 0 : ticks_to_ns(a, a->tmict - cur);
	a->timer_start_ns = now > done_ns ? now - done_ns : 0;
	timer_set_deadline(a, add_sat(now, ticks_to_ns(a, cur)), w);
}

static void write_tmict(struct lapic *a, uint32_t val, uint64_t now,
			struct lapic_work *w)
{
	if (timer_mode(a) == TIMER_TSC_DEADLINE)
		return;
	a->tmict = val;
	timer_start_count(a, now, w);
}

/* Periodic: the first period boundary after @now. */
static void timer_next_period(struct lapic *a, uint64_t now,
			      struct lapic_work *w)
{
	uint64_t period = ticks_to_ns(a, a->tmict);
	uint64_t last = a->timer_deadline_ns;
	uint64_t next = add_sat(last, period);

	if (next <= now)
		next = add_sat(last, ((now - last) / period + 1) * period);
	a->timer_start_ns = next - period;
	timer_set_deadline(a, next, w);
}

static void timer_expire(struct lapic *a, uint64_t now, struct lapic_work *w)
{
	uint32_t lvt = a->lvt[LVT_TIMER];

	a->timer_fired++;
	if (!(lvt & LVT_MASKED))
		accept_fixed(a, lvt & LVT_VECTOR, false, w);
	if (timer_mode(a) == TIMER_PERIODIC && a->tmict) {
		timer_next_period(a, now, w);
		return;
	}
	/* The caller's timer has just fired: nothing left to cancel. */
	if (timer_mode(a) == TIMER_TSC_DEADLINE)
		a->tsc_deadline = 0;
	a->timer_deadline_ns = 0;
	a->timer_seq++;
}

/* ---- LVT, SVR, ICR ---------------------------------------------------- */

static void write_lvt(struct lapic *a, int idx, uint32_t val,
		      struct lapic_work *w)
{
	uint32_t old = a->lvt[idx];
	uint32_t v = (val & lvt_writable[idx]) | (old & LVT_REMOTE_IRR);

	if (!sw_enabled(a))
		v |= LVT_MASKED;
	a->lvt[idx] = v;
	if (idx == LVT_TIMER && ((old ^ v) & LVT_TIMER_MODE)) {
		a->tmict = 0;
		a->tsc_deadline = 0;
		timer_stop(a, w);
	}
	if (lvt_is_lint(idx))
		lint_update(a, idx - LVT_LINT0, false, w);
}

static void write_svr(struct lapic *a, uint32_t val, struct lapic_work *w)
{
	a->svr = val & SVR_VALID;
	if (!sw_enabled(a)) {
		for (int i = 0; i < LVT_COUNT; i++)
			a->lvt[i] |= LVT_MASKED;
	} else if (pending_vector(a) >= 0) {
		w->kick = true;
	}
}

/* Build the message of an ICR write (@dest already extracted). */
static void icr_send(struct lapic *a, uint32_t lo, uint32_t dest, bool x2,
		     struct lapic_work *w)
{
	struct apic_msg *m = &w->msg;
	unsigned int dm = (lo >> 8) & 7;

	if (dm == 3)
		return; /* reserved delivery mode */
	if ((dm == APIC_DM_FIXED || dm == APIC_DM_LOWEST) &&
	    (lo & ICR_VECTOR) < 16) {
		set_error(a, ESR_SEND_ILLEGAL, w);
		return;
	}
	m->dest = dest;
	m->vector = lo & ICR_VECTOR;
	m->delivery = dm;
	m->shorthand = (lo >> 18) & 3;
	m->logical = lo & ICR_LOGICAL;
	m->level = lo & ICR_LEVEL;
	m->assert = m->level ? !!(lo & ICR_ASSERT) : true;
	m->x2apic_dest = x2;
	m->src_vcpu = a->vcpu;
	w->send = true;
}

static void self_ipi(struct lapic *a, uint8_t vector, struct lapic_work *w)
{
	struct apic_msg *m = &w->msg;

	if (vector < 16) {
		set_error(a, ESR_SEND_ILLEGAL, w);
		return;
	}
	memset(m, 0, sizeof(*m));
	m->dest = a->apic_id;
	m->vector = vector;
	m->delivery = APIC_DM_FIXED;
	m->shorthand = APIC_SH_SELF;
	m->assert = true;
	m->x2apic_dest = true;
	m->src_vcpu = a->vcpu;
	w->send = true;
}

/* ---- register file ---------------------------------------------------- */

static bool reg_needs_time(unsigned int reg)
{
	return reg == REG_TMICT || reg == REG_TMCCT || reg == REG_TDCR;
}

static bool reg_in(unsigned int reg, unsigned int first)
{
	return reg >= first && reg < first + 8;
}

/* Read register @reg (@x2: x2APIC semantics); -EINVAL if absent. */
static int reg_read(struct lapic *a, unsigned int reg, bool x2, uint64_t now,
		    uint64_t *val)
{
	int lvt = lvt_index(reg);

	if (lvt >= 0) {
		*val = a->lvt[lvt];
		return 0;
	}
	if (reg_in(reg, REG_ISR) || reg_in(reg, REG_TMR) ||
	    reg_in(reg, REG_IRR)) {
		const uint32_t *v = reg_in(reg, REG_ISR) ? a->isr :
				    reg_in(reg, REG_TMR) ? a->tmr :
							   a->irr;
		*val = v[reg & 7];
		return 0;
	}

	switch (reg) {
	case REG_ID:
		*val = x2 ? a->apic_id : (uint32_t)a->xapic_id << 24;
		return 0;
	case REG_VERSION:
		*val = APIC_VERSION;
		return 0;
	case REG_TPR:
		*val = a->tpr;
		return 0;
	case REG_APR:
	case REG_RRD:
		*val = 0;
		return x2 ? -EINVAL : 0;
	case REG_DFR:
		*val = a->dfr;
		return x2 ? -EINVAL : 0;
	case REG_PPR:
		*val = ppr(a);
		return 0;
	case REG_LDR:
		*val = a->ldr;
		return 0;
	case REG_SVR:
		*val = a->svr;
		return 0;
	case REG_ESR:
		*val = a->esr;
		return 0;
	case REG_ICR:
		*val = x2 ? ((uint64_t)a->icr_hi << 32) | a->icr_lo : a->icr_lo;
		return 0;
	case REG_ICR_HI:
		*val = a->icr_hi;
		return x2 ? -EINVAL : 0;
	case REG_TMICT:
		*val = a->tmict;
		return 0;
	case REG_TMCCT:
		*val = timer_current_count(a, now);
		return 0;
	case REG_TDCR:
		*val = a->tdcr;
		return 0;
	default: /* EOI, SELF IPI (write-only), reserved */
		return -EINVAL;
	}
}

static int write_lvt_reg(struct lapic *a, int idx, uint32_t v, bool x2,
			 struct lapic_work *w)
{
	if (x2 && (v & ~lvt_valid(idx)))
		return -EINVAL;
	write_lvt(a, idx, v, w);
	return 0;
}

static int write_icr(struct lapic *a, uint64_t val, bool x2,
		     struct lapic_work *w)
{
	uint32_t lo = (uint32_t)val;

	if (x2 && (lo & ~ICR_VALID))
		return -EINVAL;
	a->icr_lo = lo & ICR_VALID;
	if (x2) {
		a->icr_hi = val >> 32;
		icr_send(a, lo, a->icr_hi, true, w);
	} else {
		icr_send(a, lo, a->icr_hi >> 24, false, w);
	}
	return 0;
}

/* Registers that exist in xAPIC mode only. */
static int write_xapic_only(struct lapic *a, unsigned int reg, uint32_t v)
{
	switch (reg) {
	case REG_ID:
		a->xapic_id = v >> 24;
		return 0;
	case REG_LDR:
		a->ldr = v & XAPIC_DEST_MASK;
		return 0;
	case REG_DFR:
		a->dfr = (v & ~DFR_RO_ONES) | DFR_RO_ONES;
		return 0;
	case REG_ICR_HI:
		a->icr_hi = v & XAPIC_DEST_MASK;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Write register @reg (@x2: x2APIC checks); -EINVAL means #GP. */
static int reg_write(struct lapic *a, unsigned int reg, bool x2, uint64_t val,
		     uint64_t now, struct lapic_work *w)
{
	uint32_t v = (uint32_t)val;
	int lvt = lvt_index(reg);

	if (x2 && reg != REG_ICR && (val >> 32))
		return -EINVAL;
	if (lvt >= 0)
		return write_lvt_reg(a, lvt, v, x2, w);

	switch (reg) {
	case REG_ID:
	case REG_LDR:
	case REG_DFR:
	case REG_ICR_HI:
		return x2 ? -EINVAL : write_xapic_only(a, reg, v);
	case REG_TPR:
		if (x2 && (v & ~TPR_VALID))
			return -EINVAL;
		a->tpr = v & TPR_VALID;
		return 0;
	case REG_EOI:
		if (x2 && v)
			return -EINVAL;
		do_eoi(a, w);
		return 0;
	case REG_SVR:
		if (x2 && (v & ~SVR_VALID))
			return -EINVAL;
		write_svr(a, v, w);
		return 0;
	case REG_ESR:
		if (x2 && v)
			return -EINVAL;
		a->esr = a->esr_pending;
		a->esr_pending = 0;
		return 0;
	case REG_ICR:
		return write_icr(a, val, x2, w);
	case REG_TMICT:
		write_tmict(a, v, now, w);
		return 0;
	case REG_TDCR:
		if (x2 && (v & ~TDCR_VALID))
			return -EINVAL;
		write_tdcr(a, v, now, w);
		return 0;
	case REG_SELF_IPI:
		if (!x2 || (v & ~0xffu))
			return -EINVAL;
		self_ipi(a, v, w);
		return 0;
	default: /* read-only or reserved */
		return -EINVAL;
	}
}

/* ---- reset and IA32_APIC_BASE ----------------------------------------- */

/* The INIT state of the registers (ID, mode and base are kept). */
static void reset_registers(struct lapic *a, struct lapic_work *w)
{
	memset(a->irr, 0, sizeof(a->irr));
	memset(a->isr, 0, sizeof(a->isr));
	memset(a->tmr, 0, sizeof(a->tmr));
	a->tpr = 0;
	a->ldr = x2apic_mode(a) ? x2apic_ldr(a->apic_id) : 0;
	a->dfr = 0xffffffffu;
	a->svr = 0xff;
	a->esr = 0;
	a->esr_pending = 0;
	a->icr_lo = 0;
	a->icr_hi = 0;
	for (int i = 0; i < LVT_COUNT; i++)
		a->lvt[i] = LVT_MASKED;
	a->tdcr = 0;
	a->tmict = 0;
	a->tsc_deadline = 0;
	a->timer_start_ns = 0;
	timer_stop(a, w);
}

enum apic_mode { MODE_DISABLED, MODE_INVALID, MODE_XAPIC, MODE_X2APIC };

static enum apic_mode base_mode(uint64_t base)
{
	if (!(base & APIC_BASE_ENABLE))
		return base & APIC_BASE_X2APIC ? MODE_INVALID : MODE_DISABLED;
	return base & APIC_BASE_X2APIC ? MODE_X2APIC : MODE_XAPIC;
}

static int write_apic_base_locked(struct lapic *a, uint64_t val,
				  struct lapic_work *w)
{
	enum apic_mode from = base_mode(a->apic_base);
	enum apic_mode to = base_mode(val);

	if (to == MODE_INVALID || (from == MODE_X2APIC && to == MODE_XAPIC) ||
	    (from == MODE_DISABLED && to == MODE_X2APIC))
		return -EINVAL;

	a->apic_base = (val & ~APIC_BASE_BSP) | (a->apic_base & APIC_BASE_BSP);
	if (to == MODE_DISABLED && from != MODE_DISABLED) {
		a->xapic_id = a->apic_id;
		reset_registers(a, w);
	}
	if (to == MODE_X2APIC && from != MODE_X2APIC)
		a->ldr = x2apic_ldr(a->apic_id);
	return 0;
}

static int write_apic_base(struct lapic *a, uint64_t val)
{
	struct lapic_work w;
	int ret;

	if (val & ~APIC_BASE_VALID)
		return -EINVAL;
	pthread_mutex_lock(&a->lock);
	work_init(&w);
	ret = write_apic_base_locked(a, val, &w);
	unlock_run(a, &w);
	return ret;
}

static void write_tsc_deadline(struct lapic *a, uint64_t val)
{
	uint64_t ns = 0;
	struct lapic_work w;

	if (val && a->ops->tsc_to_ns)
		ns = a->ops->tsc_to_ns(a->opaque, val);
	pthread_mutex_lock(&a->lock);
	work_init(&w);
	if (hw_enabled(a) && timer_mode(a) == TIMER_TSC_DEADLINE) {
		a->tsc_deadline = val;
		timer_set_deadline(a, val ? (ns ? ns : 1) : 0, &w);
	}
	unlock_run(a, &w);
}

/* ---- public interface ------------------------------------------------- */

void lapic_init(struct lapic *a, int vcpu, uint32_t apic_id, bool bsp,
		uint64_t bus_hz, const struct lapic_ops *ops, void *opaque)
{
	struct lapic_work unused;

	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->ops = ops;
	a->opaque = opaque;
	a->vcpu = vcpu;
	a->apic_id = apic_id;
	a->xapic_id = apic_id;
	a->bus_hz = bus_hz ? bus_hz : NSEC_PER_SEC;
	a->apic_base =
		LAPIC_MMIO_BASE | APIC_BASE_ENABLE | (bsp ? APIC_BASE_BSP : 0);
	work_init(&unused);
	reset_registers(a, &unused); /* nothing armed yet: no callbacks */
}

void lapic_destroy(struct lapic *a)
{
	pthread_mutex_destroy(&a->lock);
}

void lapic_reset(struct lapic *a)
{
	struct lapic_work w;

	pthread_mutex_lock(&a->lock);
	work_init(&w);
	reset_registers(a, &w);
	/*
	 * Pending events go, except an INIT or SIPI that arrived after the
	 * vCPU took the INIT it is handling now (INIT then SIPI back to
	 * back must not lose the SIPI).
	 */
	a->events &= LAPIC_EV_INIT | LAPIC_EV_SIPI;
	unlock_run(a, &w);
}

int lapic_read_msr(struct lapic *a, uint32_t msr, uint64_t *val)
{
	unsigned int reg = msr - MSR_X2APIC_FIRST;
	uint64_t now;
	int ret = 0;

	*val = 0;
	if (msr != MSR_IA32_APIC_BASE && msr != MSR_IA32_TSC_DEADLINE &&
	    (msr < MSR_X2APIC_FIRST || msr > MSR_X2APIC_LAST))
		return -EINVAL;
	now = reg_needs_time(reg) ? ops_now(a) : 0;

	pthread_mutex_lock(&a->lock);
	if (msr == MSR_IA32_APIC_BASE)
		*val = a->apic_base;
	else if (msr == MSR_IA32_TSC_DEADLINE)
		*val = timer_mode(a) == TIMER_TSC_DEADLINE ? a->tsc_deadline :
							     0;
	else if (!x2apic_mode(a))
		ret = -EINVAL;
	else
		ret = reg_read(a, reg, true, now, val);
	pthread_mutex_unlock(&a->lock);
	if (ret)
		*val = 0;
	return ret;
}

int lapic_write_msr(struct lapic *a, uint32_t msr, uint64_t val)
{
	unsigned int reg = msr - MSR_X2APIC_FIRST;
	struct lapic_work w;
	uint64_t now;
	int ret;

	if (msr == MSR_IA32_APIC_BASE)
		return write_apic_base(a, val);
	if (msr == MSR_IA32_TSC_DEADLINE) {
		write_tsc_deadline(a, val);
		return 0;
	}
	if (msr < MSR_X2APIC_FIRST || msr > MSR_X2APIC_LAST)
		return -EINVAL;
	now = reg_needs_time(reg) ? ops_now(a) : 0;

	pthread_mutex_lock(&a->lock);
	work_init(&w);
	if (x2apic_mode(a))
		ret = reg_write(a, reg, true, val, now, &w);
	else
		ret = -EINVAL;
	unlock_run(a, &w);
	return ret;
}

void lapic_mmio(struct lapic *a, uint64_t off, uint8_t *data, uint32_t len,
		bool is_write)
{
	unsigned int reg = off >> 4;
	struct lapic_work w;
	uint64_t now, val;
	uint32_t v;

	if (!is_write && data && len)
		memset(data, 0, len);
	if (!data || len != 4 || (off & 0xf) || off >= LAPIC_MMIO_SIZE)
		return;
	now = reg_needs_time(reg) ? ops_now(a) : 0;

	pthread_mutex_lock(&a->lock);
	work_init(&w);
	if (hw_enabled(a) && !x2apic_mode(a)) {
		if (is_write) {
			memcpy(&v, data, 4);
			reg_write(a, reg, false, v, now, &w);
		} else if (!reg_read(a, reg, false, now, &val)) {
			v = (uint32_t)val;
			memcpy(data, &v, 4);
		}
	}
	unlock_run(a, &w);
}

void lapic_deliver(struct lapic *a, const struct apic_msg *m)
{
	struct lapic_work w;

	pthread_mutex_lock(&a->lock);
	work_init(&w);
	switch (m->delivery) {
	case APIC_DM_FIXED:
	case APIC_DM_LOWEST:
		if (accepting(a))
			accept_fixed(a, m->vector, m->level, &w);
		break;
	case APIC_DM_SMI:
		raise_event(a, LAPIC_EV_SMI, &w);
		break;
	case APIC_DM_NMI:
		raise_event(a, LAPIC_EV_NMI, &w);
		break;
	case APIC_DM_INIT:
		if (!m->level || m->assert)
			raise_event(a, LAPIC_EV_INIT, &w);
		break;
	case APIC_DM_SIPI:
		a->sipi_vector = m->vector;
		raise_event(a, LAPIC_EV_SIPI, &w);
		break;
	case APIC_DM_EXTINT:
		raise_event(a, LAPIC_EV_EXTINT, &w);
		break;
	default:
		break;
	}
	unlock_run(a, &w);
}

void lapic_set_lint(struct lapic *a, int pin, int level)
{
	struct lapic_work w;
	bool rising;

	if (pin != 0 && pin != 1)
		return;
	pthread_mutex_lock(&a->lock);
	work_init(&w);
	rising = level && !a->lint_level[pin];
	a->lint_level[pin] = level != 0;
	lint_update(a, pin, rising, &w);
	unlock_run(a, &w);
}

int lapic_pending_vector(struct lapic *a)
{
	int v;

	pthread_mutex_lock(&a->lock);
	v = pending_vector(a);
	pthread_mutex_unlock(&a->lock);
	return v;
}

int lapic_ack(struct lapic *a)
{
	int v;

	pthread_mutex_lock(&a->lock);
	v = pending_vector(a);
	if (v >= 0) {
		bit_clear(a->irr, v);
		bit_set(a->isr, v);
	}
	pthread_mutex_unlock(&a->lock);
	return v;
}

unsigned int lapic_take_events(struct lapic *a, uint8_t *sipi)
{
	unsigned int ev;

	pthread_mutex_lock(&a->lock);
	ev = a->events;
	a->events = 0;
	if (extint_line(a))
		ev |= LAPIC_EV_EXTINT;
	if (sipi)
		*sipi = a->sipi_vector;
	pthread_mutex_unlock(&a->lock);
	return ev;
}

bool lapic_has_wakeup(struct lapic *a, bool interrupts_enabled)
{
	unsigned int ev;
	bool wake;

	pthread_mutex_lock(&a->lock);
	ev = a->events;
	if (extint_line(a))
		ev |= LAPIC_EV_EXTINT;
	wake = ev &
	       (LAPIC_EV_NMI | LAPIC_EV_INIT | LAPIC_EV_SIPI | LAPIC_EV_SMI);
	if (interrupts_enabled &&
	    ((ev & LAPIC_EV_EXTINT) || pending_vector(a) >= 0))
		wake = true;
	pthread_mutex_unlock(&a->lock);
	return wake;
}

void lapic_timer_fire(struct lapic *a)
{
	uint64_t now = ops_now(a);
	struct lapic_work w;

	pthread_mutex_lock(&a->lock);
	work_init(&w);
	if (a->timer_deadline_ns && now < a->timer_deadline_ns) {
		/* Early or stale call: re-arm for the real deadline. */
		w.timer_sync = true;
		w.timer_seq = a->timer_seq;
		w.deadline = a->timer_deadline_ns;
	} else if (a->timer_deadline_ns) {
		timer_expire(a, now, &w);
	}
	unlock_run(a, &w);
}

void lapic_target(struct lapic *a, struct apic_target *t)
{
	pthread_mutex_lock(&a->lock);
	t->vcpu = a->vcpu;
	t->x2apic = x2apic_mode(a);
	t->apic_id = t->x2apic ? a->apic_id : a->xapic_id;
	t->ldr = a->ldr;
	t->dfr_model = a->dfr >> 28;
	t->hw_enabled = hw_enabled(a);
	pthread_mutex_unlock(&a->lock);
}
