/*
 * irqchip/pit.c - the 8254 PIT: owns the three counters (control words,
 * lo/hi byte sequencing, latch and read-back commands, modes 0-5, BCD),
 * port 0x61 (channel 2's gate, the speaker data bit, channel 2's OUT and
 * the refresh toggle) and channel 0's IRQ 0: periodic pulses in modes 2
 * and 3, a level raised at terminal count in mode 0, a pulse at the end of
 * the strobe in mode 4, driven by a host timer armed through ops.
 *
 * Counters are not ticked: a counter's value and OUT are computed from the
 * time its count was loaded (ops->now_ns) and the 1193182 Hz input clock.
 * A gate that goes low pauses modes 0 and 4 (the load time is shifted by
 * the pause) and stops modes 2 and 3 (OUT high, reloaded on the rising
 * edge); a rising edge triggers modes 1 and 5. Only channel 2's gate moves.
 *
 * The ops are called without the lock and by one thread at a time
 * (pit_sync): a thread that changes channel 0's state while another is
 * calling out leaves the calls to that thread, which loops until the host
 * timer and IRQ 0 match the latest state, so they never go stale.
 *
 * Simplifications: a new count takes effect at once in every mode (no
 * wait for the end of the current period in modes 2 and 3, nor for a new
 * trigger in modes 1 and 5); the null count status bit clears as soon as
 * the whole count is written.
 */
#include <errno.h>
#include <string.h>

#include "irqchip/pit.h"

#define NSEC_PER_SEC 1000000000ULL
#define PIT_CHANNELS 3

#define PORT_COUNTER0 0x40
#define PORT_CONTROL 0x43
#define PORT_SYS_CTRL 0x61
#define PIT_NR_PORTS 4

/* Control word (port 0x43). */
#define CW_SELECT_SHIFT 6
#define CW_SELECT_READBACK 3
#define CW_RW_SHIFT 4
#define CW_RW_MASK 3
#define CW_MODE_SHIFT 1
#define CW_MODE_MASK 7
#define CW_BCD 0x01
/* Read-back command: bits 5/4 clear = latch count/status, 3:1 counters. */
#define RB_NO_COUNT 0x20
#define RB_NO_STATUS 0x10
#define RB_COUNTER(i) (0x02 << (i))

enum pit_rw { RW_LATCH = 0, RW_LSB = 1, RW_MSB = 2, RW_WORD = 3 };

/* Read-back status byte. */
#define STATUS_OUT 0x80
#define STATUS_NULL_COUNT 0x40
#define STATUS_RW_SHIFT 4
#define STATUS_MODE_SHIFT 1

/* Port 0x61. */
#define P61_GATE2 0x01
#define P61_WRITABLE 0x0f /* gate, speaker data, parity/IOCHK enables */
#define P61_REFRESH 0x10
#define P61_OUT2 0x20

#define MODULUS_BINARY 65536u
#define MODULUS_BCD 10000u

/* --- time --- */

static uint64_t ns_to_ticks(uint64_t ns)
{
	return (uint64_t)((unsigned __int128)ns * PIT_HZ / NSEC_PER_SEC);
}

/* The first nanosecond at which @ticks input clocks have passed. */
static uint64_t ticks_to_ns(uint64_t ticks)
{
	unsigned __int128 ns =
		((unsigned __int128)ticks * NSEC_PER_SEC + PIT_HZ - 1) / PIT_HZ;

	return ns > UINT64_MAX ? UINT64_MAX : (uint64_t)ns;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t pit_now(struct pit *p)
{
	return p->ops->now_ns(p->opaque);
}

/* --- one counter --- */

static uint32_t ch_modulus(const struct pit_channel *c)
{
	return c->bcd ? MODULUS_BCD : MODULUS_BINARY;
}

/* Modes 0, 2, 3 and 4 count only while the gate is high. */
static bool ch_paused(const struct pit_channel *c)
{
	return !c->gate && c->mode != 1 && c->mode != 5;
}

/* A count was written and, in modes 1 and 5, the gate triggered it. */
static bool ch_running(const struct pit_channel *c)
{
	if (!c->counting)
		return false;
	return (c->mode != 1 && c->mode != 5) || c->triggered;
}

/* Input clocks counted since the load (frozen while paused). */
static uint64_t ch_elapsed(const struct pit_channel *c, uint64_t now)
{
	uint64_t t = ch_paused(c) ? c->pause_ns : now;

	return t > c->load_ns ? ns_to_ticks(t - c->load_ns) : 0;
}

/* The counting element, 0 .. modulus-1 (0 standing for the modulus). */
static uint32_t ch_counter(const struct pit_channel *c, uint64_t now)
{
	uint64_t n = c->count, m = ch_modulus(c), d;

	if (!ch_running(c))
		return (uint32_t)(n % m);
	d = ch_elapsed(c, now);
	switch (c->mode) {
	case 2:
		return (uint32_t)((n - d % n) % m);
	case 3: /* counts down by two, twice per period */
		return (uint32_t)((n - (2 * (d % n)) % n) % m);
	default: /* 0, 1, 4, 5: count down and wrap */
		return (uint32_t)((n + m - d % m) % m);
	}
}

static bool ch_out(const struct pit_channel *c, uint64_t now)
{
	uint64_t n = c->count, d;

	if (!c->counting) /* after a control word: mode 0 low, else high */
		return c->mode != 0;
	if (!ch_running(c))
		return true; /* modes 1 and 5 waiting for their trigger */
	d = ch_elapsed(c, now);
	switch (c->mode) {
	case 0:
	case 1:
		return d >= n;
	case 2:
		return ch_paused(c) || n < 2 || d % n != n - 1;
	case 3:
		return ch_paused(c) || d % n < (n + 1) / 2;
	default: /* 4, 5: low for the one clock at terminal count */
		return d != n;
	}
}

static uint16_t to_bcd(uint32_t v)
{
	return (uint16_t)((v / 1000 % 10) << 12 | (v / 100 % 10) << 8 |
			  (v / 10 % 10) << 4 | v % 10);
}

/* A written count; bad BCD digits just count as their binary value. */
static uint32_t decode_count(const struct pit_channel *c, uint16_t raw)
{
	uint32_t v = raw;

	if (c->bcd)
		v = (raw >> 12 & 0xf) * 1000u + (raw >> 8 & 0xf) * 100u +
		    (raw >> 4 & 0xf) * 10u + (raw & 0xf);
	v %= ch_modulus(c);
	return v ? v : ch_modulus(c);
}

/* The counter as the guest reads it (BCD-encoded in BCD mode). */
static uint16_t ch_read_value(const struct pit_channel *c, uint64_t now)
{
	uint32_t v = ch_counter(c, now);

	return c->bcd ? to_bcd(v) : (uint16_t)v;
}

static uint8_t ch_status(const struct pit_channel *c, uint64_t now)
{
	uint8_t s = (uint8_t)(c->rw_mode << STATUS_RW_SHIFT |
			      c->mode << STATUS_MODE_SHIFT | c->bcd);

	if (ch_out(c, now))
		s |= STATUS_OUT;
	if (c->null_count)
		s |= STATUS_NULL_COUNT;
	return s;
}

static void ch_latch_count(struct pit_channel *c, uint64_t now)
{
	if (c->latched)
		return; /* the first latch holds until it is read */
	c->latch = ch_read_value(c, now);
	c->latched = true;
	c->latch_msb_next = false;
}

static void ch_latch_status(struct pit_channel *c, uint64_t now)
{
	if (c->status_latched)
		return;
	c->status = ch_status(c, now);
	c->status_latched = true;
}

/* Control word for this counter: reset its logic, OUT to initial state. */
static void ch_program(struct pit_channel *c, uint8_t rw, uint8_t mode,
		       bool bcd)
{
	c->rw_mode = rw;
	c->mode = mode > 5 ? mode - 4 : mode; /* 6, 7 alias 2, 3 */
	c->bcd = bcd;
	c->counting = false;
	c->triggered = false;
	c->null_count = true;
	c->latched = false;
	c->status_latched = false;
	c->read_state = 0;
	c->write_state = 0;
}

static void ch_load(struct pit_channel *c, uint16_t raw, uint64_t now)
{
	c->count = decode_count(c, raw);
	c->load_ns = now;
	c->pause_ns = now;
	c->counting = true;
	c->triggered = false;
	c->null_count = false;
}

static void ch_set_gate(struct pit_channel *c, bool gate, uint64_t now)
{
	if (gate == c->gate)
		return;
	c->gate = gate;
	if (!gate) {
		c->pause_ns = now;
		return;
	}
	if (!c->counting)
		return;
	if (c->mode == 0 || c->mode == 4) {
		if (now > c->pause_ns) /* resume where it paused */
			c->load_ns = add_sat(c->load_ns, now - c->pause_ns);
	} else { /* 1, 5: trigger; 2, 3: reload */
		c->load_ns = now;
		c->triggered = true;
	}
}

static uint8_t ch_read_latch(struct pit_channel *c)
{
	uint16_t v = c->latch;

	if (c->rw_mode == RW_WORD && !c->latch_msb_next) {
		c->latch_msb_next = true;
		return v & 0xff;
	}
	c->latched = false;
	c->latch_msb_next = false;
	return c->rw_mode == RW_MSB || c->rw_mode == RW_WORD ? v >> 8 :
							       v & 0xff;
}

static uint8_t ch_read_live(struct pit_channel *c, uint64_t now)
{
	uint16_t v = ch_read_value(c, now);

	if (c->rw_mode == RW_MSB)
		return v >> 8;
	if (c->rw_mode != RW_WORD)
		return v & 0xff;
	c->read_state ^= 1;
	return c->read_state ? v & 0xff : v >> 8;
}

static uint8_t ch_read(struct pit_channel *c, uint64_t now)
{
	if (c->status_latched) {
		c->status_latched = false;
		return c->status;
	}
	if (c->latched)
		return ch_read_latch(c);
	return ch_read_live(c, now);
}

/*
 * A data byte for the counter; true once a whole count is loaded or, in
 * mode 0, its first byte stopped the counter.
 */
static bool ch_write(struct pit_channel *c, uint8_t val, uint64_t now)
{
	switch (c->rw_mode) {
	case RW_LSB:
		ch_load(c, val, now);
		return true;
	case RW_MSB:
		ch_load(c, (uint16_t)(val << 8), now);
		return true;
	default:
		break;
	}
	if (!c->write_state) {
		c->write_lsb = val;
		c->write_state = 1;
		if (c->mode != 0)
			return false;
		c->counting = false; /* mode 0: the first byte stops it */
		return true;
	}
	c->write_state = 0;
	ch_load(c, (uint16_t)(c->write_lsb | val << 8), now);
	return true;
}

/* --- channel 0 and IRQ 0 (lock held) --- */

/* The next period boundary after @now (modes 2 and 3), from the load. */
static uint64_t ch_next_period(const struct pit_channel *c, uint64_t now)
{
	uint64_t k = ch_elapsed(c, now) / c->count + 1;

	return add_sat(c->load_ns, ticks_to_ns(k * c->count));
}

/* Channel 0 was reprogrammed: IRQ 0 low, the host timer re-planned. */
static void pit_ch0_schedule(struct pit *p, uint64_t now)
{
	const struct pit_channel *c = &p->ch[0];

	p->irq0_level = 0;
	p->next_irq_ns = 0;
	if (!ch_running(c) || ch_paused(c))
		return;
	switch (c->mode) {
	case 0: /* OUT rises at terminal count */
		p->next_irq_ns = add_sat(c->load_ns, ticks_to_ns(c->count));
		break;
	case 2:
	case 3:
		p->next_irq_ns = ch_next_period(c, now);
		break;
	case 4: /* OUT rises again one clock after terminal count */
		p->next_irq_ns = add_sat(c->load_ns,
					 ticks_to_ns((uint64_t)c->count + 1));
		break;
	default:
		break;
	}
}

/* The armed deadline passed: one edge, however late the host was. */
static void pit_ch0_expire(struct pit *p, uint64_t now)
{
	const struct pit_channel *c = &p->ch[0];

	p->ticks++;
	if (c->mode == 0) {
		p->irq0_level = 1;
		p->next_irq_ns = 0;
	} else if (c->mode == 2 || c->mode == 3) {
		p->pulse_pending = true;
		p->next_irq_ns = ch_next_period(c, now);
	} else {
		p->pulse_pending = true;
		p->next_irq_ns = 0;
	}
}

/*
 * Bring IRQ 0 and the host timer in line with the state, calling the ops
 * without the lock. A nested or concurrent call leaves it to the thread
 * already doing it, which rechecks after each call.
 */
static void pit_sync(struct pit *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->syncing) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->syncing = true;
	for (;;) {
		if (p->irq0_sent != p->irq0_level) {
			int level = p->irq0_level;

			p->irq0_sent = level;
			pthread_mutex_unlock(&p->lock);
			p->ops->irq0(p->opaque, level);
		} else if (p->pulse_pending) {
			p->pulse_pending = false;
			pthread_mutex_unlock(&p->lock);
			p->ops->irq0(p->opaque, 1);
			p->ops->irq0(p->opaque, 0);
			pthread_mutex_lock(&p->lock);
			p->irq0_sent = 0;
			continue;
		} else if (p->armed_ns != p->next_irq_ns) {
			uint64_t deadline = p->next_irq_ns;

			p->armed_ns = deadline;
			pthread_mutex_unlock(&p->lock);
			p->ops->timer_arm(p->opaque, deadline);
		} else {
			break;
		}
		pthread_mutex_lock(&p->lock);
	}
	p->syncing = false;
	pthread_mutex_unlock(&p->lock);
}

/* --- ports (lock held) --- */

static void pit_read_back(struct pit *p, uint8_t val, uint64_t now)
{
	for (int i = 0; i < PIT_CHANNELS; i++) {
		if (!(val & RB_COUNTER(i)))
			continue;
		if (!(val & RB_NO_COUNT))
			ch_latch_count(&p->ch[i], now);
		if (!(val & RB_NO_STATUS))
			ch_latch_status(&p->ch[i], now);
	}
}

static void pit_write_control(struct pit *p, uint8_t val, uint64_t now)
{
	int sel = val >> CW_SELECT_SHIFT;
	uint8_t rw = (val >> CW_RW_SHIFT) & CW_RW_MASK;

	if (sel == CW_SELECT_READBACK) {
		pit_read_back(p, val, now);
		return;
	}
	if (rw == RW_LATCH) {
		ch_latch_count(&p->ch[sel], now);
		return;
	}
	ch_program(&p->ch[sel], rw, (val >> CW_MODE_SHIFT) & CW_MODE_MASK,
		   val & CW_BCD);
	if (sel == 0)
		pit_ch0_schedule(p, now);
}

static void pit_write_counter(struct pit *p, int i, uint8_t val, uint64_t now)
{
	if (ch_write(&p->ch[i], val, now) && i == 0)
		pit_ch0_schedule(p, now);
}

static uint8_t pit_read_port61(struct pit *p, uint64_t now)
{
	uint8_t v = p->port61 & P61_WRITABLE;

	if (p->refresh)
		v |= P61_REFRESH;
	p->refresh = !p->refresh;
	if (ch_out(&p->ch[2], now))
		v |= P61_OUT2;
	return v;
}

static void pit_write_port61(struct pit *p, uint8_t val, uint64_t now)
{
	p->port61 = val & P61_WRITABLE;
	ch_set_gate(&p->ch[2], val & P61_GATE2, now);
}

static void pit_io_byte(struct pit *p, uint16_t port, uint8_t *data,
			bool is_write, uint64_t now)
{
	int i = port - PORT_COUNTER0;

	if (port == PORT_SYS_CTRL) {
		if (is_write)
			pit_write_port61(p, *data, now);
		else
			*data = pit_read_port61(p, now);
	} else if (port == PORT_CONTROL) {
		if (is_write)
			pit_write_control(p, *data, now);
		else
			*data = 0xff; /* the control register is write-only */
	} else if (i >= 0 && i < PIT_CHANNELS) {
		if (is_write)
			pit_write_counter(p, i, *data, now);
		else
			*data = ch_read(&p->ch[i], now);
	} else if (!is_write) {
		*data = 0xff; /* not ours */
	}
}

/* Wider accesses act as byte accesses to consecutive ports. */
void pit_io(struct pit *p, uint16_t port, uint8_t *data, uint32_t len,
	    bool is_write)
{
	uint64_t now = pit_now(p);

	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < len; i++)
		pit_io_byte(p, (uint16_t)(port + i), &data[i], is_write, now);
	pthread_mutex_unlock(&p->lock);
	pit_sync(p);
}

void pit_timer_fire(struct pit *p)
{
	uint64_t now = pit_now(p);

	pthread_mutex_lock(&p->lock);
	p->armed_ns = 0; /* the host timer went off: re-arm if still due */
	if (p->next_irq_ns && now >= p->next_irq_ns)
		pit_ch0_expire(p, now);
	pthread_mutex_unlock(&p->lock);
	pit_sync(p);
}

/* --- registration and life cycle --- */

static void pit_counter_io(void *opaque, uint64_t offset, uint8_t *data,
			   uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	pit_io(opaque, (uint16_t)(PORT_COUNTER0 + offset), data, len, is_write);
}

static void pit_port61_io(void *opaque, uint64_t offset, uint8_t *data,
			  uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	pit_io(opaque, (uint16_t)(PORT_SYS_CTRL + offset), data, len, is_write);
}

static int pit_register(struct pit *p, struct io_registry *io)
{
	int rc = ioreg_register(io, IO_SPACE_PIO, PORT_COUNTER0, PIT_NR_PORTS,
				pit_counter_io, p, "pit");

	if (rc)
		return rc;
	rc = ioreg_register(io, IO_SPACE_PIO, PORT_SYS_CTRL, 1, pit_port61_io,
			    p, "pit-port61");
	if (rc)
		ioreg_unregister(io, IO_SPACE_PIO, PORT_COUNTER0);
	return rc;
}

/* Power-on: nothing counts (and no timer runs) until a count is written. */
static void pit_reset(struct pit *p)
{
	for (int i = 0; i < PIT_CHANNELS; i++) {
		struct pit_channel *c = &p->ch[i];

		memset(c, 0, sizeof(*c));
		c->mode = 3;
		c->rw_mode = RW_WORD;
		c->count = MODULUS_BINARY;
		c->gate = i != 2; /* channel 2's gate is port 0x61 bit 0 */
	}
}

int pit_init(struct pit *p, struct io_registry *io, const struct pit_ops *ops,
	     void *opaque)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->ops = ops;
	p->opaque = opaque;
	pit_reset(p);
	if (pthread_mutex_init(&p->lock, NULL))
		return -ENOMEM;
	if (!io)
		return 0;
	rc = pit_register(p, io);
	if (rc) {
		pthread_mutex_destroy(&p->lock);
		return rc;
	}
	p->io = io;
	return 0;
}

/* Call once the vCPUs and the host timer no longer reach the PIT. */
void pit_destroy(struct pit *p)
{
	if (p->io) {
		ioreg_unregister(p->io, IO_SPACE_PIO, PORT_SYS_CTRL);
		ioreg_unregister(p->io, IO_SPACE_PIO, PORT_COUNTER0);
	}
	p->io = NULL;
	pthread_mutex_destroy(&p->lock);
}
