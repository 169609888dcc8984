/*
 * tests/unit/test_pit.c - the 8254 PIT through its ports, with a fake
 * clock and fake ops that record IRQ 0 levels and timer arming: periodic
 * modes 2 and 3 on channel 0 (deadlines from the load time, no drift, one
 * pulse when the host is late, spurious fires), mode 0 terminal count and
 * mode 4 strobe on IRQ 0, counter latch and read-back, lo/hi byte
 * sequencing, BCD, OUT in every mode, channel 2's gate and OUT through
 * port 0x61 (the TSC calibration loop), ops that re-enter the PIT, the io
 * registry ranges, and random port traffic that must stay safe.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "irqchip/pit.h"

#define T0 1000000000ULL /* the fake clock's start: 1 s */
#define MAX_EVENTS 64

#define PORT_CH0 0x40
#define PORT_CH2 0x42
#define PORT_CTRL 0x43
#define PORT_61 0x61

struct fake {
	struct pit *p;
	uint64_t now;
	int irq0_calls;
	int irq0_level;
	int irq0_events[MAX_EVENTS]; /* levels in call order */
	int pulses;		     /* 1 then 0 */
	int arm_calls;
	uint64_t armed; /* last deadline, 0 = cancelled */
	bool reenter;	/* callbacks read port 0x61 and latch ch0 */
};

static void fake_irq0(void *opaque, int level)
{
	struct fake *f = opaque;
	uint8_t v = 0;

	if (f->irq0_calls < MAX_EVENTS)
		f->irq0_events[f->irq0_calls] = level;
	if (!level && f->irq0_level)
		f->pulses++;
	f->irq0_calls++;
	f->irq0_level = level;
	if (f->reenter)
		pit_io(f->p, PORT_61, &v, 1, false); /* lock must be free */
}

static void fake_timer_arm(void *opaque, uint64_t deadline_ns)
{
	struct fake *f = opaque;
	uint8_t v = 0x00;

	f->arm_calls++;
	f->armed = deadline_ns;
	if (f->reenter)
		pit_io(f->p, PORT_CTRL, &v, 1, true);
}

static uint64_t fake_now(void *opaque)
{
	struct fake *f = opaque;

	return __atomic_load_n(&f->now, __ATOMIC_RELAXED);
}

static const struct pit_ops fake_ops = {
	.irq0 = fake_irq0,
	.timer_arm = fake_timer_arm,
	.now_ns = fake_now,
};

struct ctx {
	struct pit p;
	struct fake f;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->f.p = &c->p;
	c->f.now = T0;
	assert_int_equal(pit_init(&c->p, NULL, &fake_ops, &c->f), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	pit_destroy(&c->p);
	free(c);
	return 0;
}

static void outb(struct pit *p, uint16_t port, uint8_t v)
{
	pit_io(p, port, &v, 1, true);
}

static uint8_t inb(struct pit *p, uint16_t port)
{
	uint8_t v = 0x5a;

	pit_io(p, port, &v, 1, false);
	return v;
}

/* First nanosecond (from the load) at which @ticks clocks have passed. */
static uint64_t ticks_ns(uint64_t ticks)
{
	return (uint64_t)(((unsigned __int128)ticks * 1000000000ULL + PIT_HZ -
			   1) /
			  PIT_HZ);
}

/* Control word then a lo/hi count. */
static void program(struct pit *p, int ch, uint8_t cw, uint16_t count)
{
	outb(p, PORT_CTRL, cw);
	outb(p, (uint16_t)(PORT_CH0 + ch), count & 0xff);
	outb(p, (uint16_t)(PORT_CH0 + ch), count >> 8);
}

/* Counter latch command, then the two bytes. */
static uint16_t latch_read(struct pit *p, int ch)
{
	uint16_t lo, hi;

	outb(p, PORT_CTRL, (uint8_t)(ch << 6));
	lo = inb(p, (uint16_t)(PORT_CH0 + ch));
	hi = inb(p, (uint16_t)(PORT_CH0 + ch));
	return (uint16_t)(hi << 8 | lo);
}

/* The host timer went off (or not: a spurious call); it is disarmed. */
static void fire(struct ctx *c)
{
	c->f.armed = 0;
	pit_timer_fire(&c->p);
}

static bool out2(struct pit *p)
{
	return inb(p, PORT_61) & 0x20;
}

static void test_power_on(void **state)
{
	struct ctx *c = *state;

	/* Nothing runs until a count is written. */
	assert_int_equal(c->f.arm_calls, 0);
	assert_int_equal(c->f.irq0_calls, 0);
	fire(c);
	assert_int_equal(c->f.irq0_calls, 0);
	/* Read-back status of channel 0: lo/hi, mode 3, OUT high. */
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0), 0xb6);
	/* Channel 2's gate starts low; the control port reads 0xff. */
	assert_int_equal(inb(&c->p, PORT_61) & 0x01, 0);
	assert_int_equal(inb(&c->p, PORT_CTRL), 0xff);
}

static void test_mode2_periodic(void **state)
{
	struct ctx *c = *state;
	uint64_t load = c->f.now;

	program(&c->p, 0, 0x34, 1193);
	assert_int_equal(c->f.armed, load + ticks_ns(1193));
	assert_int_equal(c->f.irq0_calls, 0);
	/* Fire exactly at each deadline: one pulse each, no drift. */
	for (int k = 1; k <= 1000; k++) {
		c->f.now = c->f.armed;
		fire(c);
		assert_int_equal(c->f.pulses, k);
		assert_int_equal(c->f.armed,
				 load + ticks_ns((uint64_t)(k + 1) * 1193));
	}
	assert_int_equal(c->p.ticks, 1000);
	assert_int_equal(c->f.irq0_level, 0);
	assert_int_equal(c->f.irq0_events[0], 1);
	assert_int_equal(c->f.irq0_events[1], 0);
}

static void test_late_and_spurious_fires(void **state)
{
	struct ctx *c = *state;
	uint64_t load = c->f.now;
	uint64_t period = ticks_ns(1193);
	int arms;

	program(&c->p, 0, 0x34, 1193);
	/* Early (spurious) fire: no pulse, the same deadline again. */
	c->f.now = load + period / 2;
	arms = c->f.arm_calls;
	fire(c);
	assert_int_equal(c->f.pulses, 0);
	assert_int_equal(c->f.arm_calls, arms + 1);
	assert_int_equal(c->f.armed, load + period);
	/* The host 5.5 periods late: one pulse, next boundary ahead. */
	c->f.now = load + ticks_ns(1193 * 11 / 2);
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	assert_int_equal(c->f.armed, load + ticks_ns(6 * 1193));
	assert_true(c->f.armed > c->f.now);
	/* Firing again at the same instant does nothing more. */
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	/* Fine after hours of guest time too (no 64-bit overflow). */
	c->f.now = load + 5ULL * 3600 * 1000000000ULL + 123;
	fire(c);
	assert_int_equal(c->f.pulses, 2);
	assert_true(c->f.armed > c->f.now);
	assert_true(c->f.armed - c->f.now <= period);
}

static void test_mode3_and_reprogramming(void **state)
{
	struct ctx *c = *state;
	uint64_t load = c->f.now;

	/* Count 0 is 65536: the PC's 18.2 Hz. */
	program(&c->p, 0, 0x36, 0);
	assert_int_equal(c->f.armed, load + ticks_ns(65536));
	c->f.now = c->f.armed;
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	/* Mode 6 aliases 2, mode 7 aliases 3. */
	load = c->f.now;
	program(&c->p, 0, 0x3c, 100);
	assert_int_equal(c->f.armed, load + ticks_ns(100));
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x0e, 2 << 1);
	program(&c->p, 0, 0x3e, 100);
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x0e, 3 << 1);
	/* A control word alone stops it: the timer is cancelled. */
	outb(&c->p, PORT_CTRL, 0x34);
	assert_int_equal(c->f.armed, 0);
	c->f.now += 1000000000;
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	/* Channels 1 and 2 never arm the timer. */
	program(&c->p, 1, 0x74, 18);
	program(&c->p, 2, 0xb6, 1000);
	assert_int_equal(c->f.armed, 0);
}

static void test_mode0_terminal_count(void **state)
{
	struct ctx *c = *state;
	uint64_t load = c->f.now;

	program(&c->p, 0, 0x30, 100);
	assert_int_equal(c->f.armed, load + ticks_ns(100));
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x80, 0); /* OUT low */
	(void)inb(&c->p, PORT_CH0);
	(void)inb(&c->p, PORT_CH0);
	/* Not yet: nothing. */
	c->f.now = load + ticks_ns(100) - 1;
	fire(c);
	assert_int_equal(c->f.irq0_calls, 0);
	/* Terminal count: IRQ 0 goes high and stays; no re-arm. */
	c->f.now = load + ticks_ns(100);
	fire(c);
	assert_int_equal(c->f.irq0_calls, 1);
	assert_int_equal(c->f.irq0_level, 1);
	assert_int_equal(c->f.armed, 0);
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x80, 0x80);
	c->f.now += 10000000;
	fire(c);
	assert_int_equal(c->f.irq0_calls, 1);
	/* The counter keeps counting down past zero (wraps). */
	assert_true(latch_read(&c->p, 0) > 50000);
	/* Reprogramming lowers IRQ 0 (the first byte of the count). */
	outb(&c->p, PORT_CTRL, 0x30);
	assert_int_equal(c->f.irq0_level, 0);
	assert_int_equal(c->f.irq0_calls, 2);
	load = c->f.now;
	outb(&c->p, PORT_CH0, 50);
	outb(&c->p, PORT_CH0, 0);
	assert_int_equal(c->f.armed, load + ticks_ns(50));
	c->f.now = c->f.armed;
	fire(c);
	assert_int_equal(c->f.irq0_level, 1);
	/* Rewriting the count in mode 0: low at the first byte. */
	outb(&c->p, PORT_CH0, 10);
	assert_int_equal(c->f.irq0_level, 0);
	assert_int_equal(c->f.armed, 0);
	outb(&c->p, PORT_CH0, 0);
	assert_int_equal(c->f.armed, c->f.now + ticks_ns(10));
	assert_int_equal(c->p.ticks, 2);
}

static void test_mode4_strobe_irq(void **state)
{
	struct ctx *c = *state;
	uint64_t load = c->f.now;

	program(&c->p, 0, 0x38, 20);
	assert_int_equal(c->f.armed, load + ticks_ns(21));
	c->f.now = load + ticks_ns(20);
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x80, 0); /* the strobe */
	c->f.now = c->f.armed;
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	assert_int_equal(c->f.armed, 0);
	outb(&c->p, PORT_CTRL, 0xe2);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x80, 0x80);
}

static void test_latch_reads_decrease(void **state)
{
	struct ctx *c = *state;
	uint16_t a, b, held;

	program(&c->p, 0, 0x34, 0);		   /* mode 2, 65536 */
	assert_int_equal(latch_read(&c->p, 0), 0); /* 65536 reads as 0 */
	c->f.now += ticks_ns(1);
	a = latch_read(&c->p, 0);
	assert_int_equal(a, 0xffff);
	c->f.now += ticks_ns(1000);
	b = latch_read(&c->p, 0);
	assert_true(b < a);
	assert_in_range(a - b, 999, 1001);
	/* A latched value holds while time passes; a second latch is
	   ignored until the first is read. */
	outb(&c->p, PORT_CTRL, 0x00);
	held = b;
	c->f.now += ticks_ns(500);
	outb(&c->p, PORT_CTRL, 0x00);
	a = inb(&c->p, PORT_CH0);
	a |= (uint16_t)(inb(&c->p, PORT_CH0) << 8);
	assert_in_range(held - a, 0, 1);
	b = latch_read(&c->p, 0);
	assert_in_range(a - b, 499, 501);
	/* Mode 3 counts by two. */
	program(&c->p, 2, 0xb6, 1000);
	outb(&c->p, PORT_61, 0x01); /* gate up: reload */
	c->f.now += ticks_ns(100);
	assert_int_equal(latch_read(&c->p, 2), 800);
}

static void test_read_back(void **state)
{
	struct ctx *c = *state;

	/* After a control word: null count set, OUT low in mode 0. */
	outb(&c->p, PORT_CTRL, 0xb0); /* ch2 lo/hi mode 0 */
	outb(&c->p, PORT_CTRL, 0xe8); /* read-back status only, ch2 */
	assert_int_equal(inb(&c->p, PORT_CH2), 0x70);
	outb(&c->p, PORT_CH2, 0x34);
	outb(&c->p, PORT_CH2, 0x12);
	outb(&c->p, PORT_61, 0x01);
	/* Status and count: status first, then the count. */
	outb(&c->p, PORT_CTRL, 0xc8);
	c->f.now += ticks_ns(0x100);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x30);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x34);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x12);
	/* Count only (bit 4 set): live values follow after it. */
	outb(&c->p, PORT_CTRL, 0xd8);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x34);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x11);
	/* Status only, several counters at once. */
	program(&c->p, 1, 0x54, 0); /* ch1 lsb only, mode 2 */
	outb(&c->p, PORT_CTRL, 0xee);
	assert_int_equal(inb(&c->p, PORT_CH0) & 0x3f, 0x36);
	assert_int_equal(inb(&c->p, 0x41), 0x94);
	assert_int_equal(inb(&c->p, PORT_CH2) & 0x3f, 0x30);
	/* A selector with no counters does nothing. */
	outb(&c->p, PORT_CTRL, 0xc0);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x34);
}

static void test_byte_sequencing(void **state)
{
	struct ctx *c = *state;

	/* LSB only: one byte loads, reads return the LSB. */
	outb(&c->p, PORT_CTRL, 0x90); /* ch2 lsb mode 0 */
	outb(&c->p, PORT_CH2, 0x80);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x80);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x80);
	/* MSB only. */
	outb(&c->p, PORT_CTRL, 0xa0);
	outb(&c->p, PORT_CH2, 0x12);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x12);
	assert_int_equal(latch_read(&c->p, 2) & 0xff, 0x12);
	/* Lo/hi: reads alternate, writes pair up. */
	outb(&c->p, PORT_CTRL, 0xb0);
	outb(&c->p, PORT_CH2, 0xcd);
	outb(&c->p, PORT_CH2, 0xab);
	assert_int_equal(inb(&c->p, PORT_CH2), 0xcd);
	assert_int_equal(inb(&c->p, PORT_CH2), 0xab);
	assert_int_equal(inb(&c->p, PORT_CH2), 0xcd);
	/* A control word resets the read flip-flop. */
	outb(&c->p, PORT_CTRL, 0xb0);
	outb(&c->p, PORT_CH2, 0x01);
	outb(&c->p, PORT_CH2, 0x02);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x01);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x02);
	/* Latched lsb-only and msb-only reads release after one byte. */
	outb(&c->p, PORT_CTRL, 0x90);
	outb(&c->p, PORT_CH2, 0x42);
	outb(&c->p, PORT_CTRL, 0x80);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x42);
	assert_int_equal(inb(&c->p, PORT_CH2), 0x42);
}

static void test_bcd(void **state)
{
	struct ctx *c = *state;
	uint64_t load;

	program(&c->p, 2, 0xb1, 0x1234);
	outb(&c->p, PORT_61, 0x01);
	assert_int_equal(latch_read(&c->p, 2), 0x1234);
	c->f.now += ticks_ns(34);
	assert_int_equal(latch_read(&c->p, 2), 0x1200);
	c->f.now += ticks_ns(1);
	assert_int_equal(latch_read(&c->p, 2), 0x1199);
	/* Count 0 is 10000 in BCD; out after 10000 clocks. */
	load = c->f.now;
	program(&c->p, 2, 0xb1, 0);
	assert_int_equal(latch_read(&c->p, 2), 0x0000);
	c->f.now = load + ticks_ns(1);
	assert_int_equal(latch_read(&c->p, 2), 0x9999);
	c->f.now = load + ticks_ns(9999);
	assert_false(out2(&c->p));
	assert_int_equal(latch_read(&c->p, 2), 0x0001);
	c->f.now = load + ticks_ns(10000);
	assert_true(out2(&c->p));
	c->f.now = load + ticks_ns(10001);
	assert_int_equal(latch_read(&c->p, 2), 0x9999); /* wraps */
	/* Bad BCD digits do not break anything. */
	program(&c->p, 2, 0xb1, 0xffff);
	c->f.now += ticks_ns(12345);
	(void)latch_read(&c->p, 2);
	(void)out2(&c->p);
}

static void test_port61_calibration_loop(void **state)
{
	struct ctx *c = *state;
	uint64_t start;
	uint8_t v;
	int polls = 0;

	/* Linux's pit_calibrate_tsc: gate high, speaker off, 10 ms. */
	v = inb(&c->p, PORT_61);
	outb(&c->p, PORT_61, (uint8_t)((v & ~0x02) | 0x01));
	outb(&c->p, PORT_CTRL, 0xb0);
	outb(&c->p, PORT_CH2, 11932 & 0xff);
	outb(&c->p, PORT_CH2, 11932 >> 8);
	start = c->f.now;
	while (!(inb(&c->p, PORT_61) & 0x20)) {
		c->f.now += 1000;
		polls++;
		assert_true(polls < 20000);
	}
	assert_true(c->f.now - start >= ticks_ns(11932));
	assert_true(c->f.now - start < ticks_ns(11932) + 1000);
	/* Channel 2 never touches IRQ 0. */
	assert_int_equal(c->f.irq0_calls, 0);
	assert_int_equal(c->f.armed, 0);
}

static void test_port61_bits_and_gate(void **state)
{
	struct ctx *c = *state;
	uint8_t a, b;

	/* Bits 0-3 stored, bit 4 toggles, bits 6-7 read 0. */
	outb(&c->p, PORT_61, 0xff);
	a = inb(&c->p, PORT_61);
	b = inb(&c->p, PORT_61);
	assert_int_equal(a & 0x0f, 0x0f);
	assert_int_equal((a ^ b) & 0x10, 0x10);
	assert_int_equal(a & 0xc0, 0);
	outb(&c->p, PORT_61, 0x02); /* speaker data, gate low */
	assert_int_equal(inb(&c->p, PORT_61) & 0x0f, 0x02);
	/* Mode 0 with the gate low does not count; OUT stays low. */
	program(&c->p, 2, 0xb0, 100);
	c->f.now += ticks_ns(1000);
	assert_false(out2(&c->p));
	assert_int_equal(latch_read(&c->p, 2), 100);
	/* Gate up: counts from now. */
	outb(&c->p, PORT_61, 0x01);
	c->f.now += ticks_ns(60);
	assert_int_equal(latch_read(&c->p, 2), 40);
	/* Gate down pauses, gate up resumes where it was. */
	outb(&c->p, PORT_61, 0x00);
	c->f.now += ticks_ns(1000);
	assert_int_equal(latch_read(&c->p, 2), 40);
	assert_false(out2(&c->p));
	outb(&c->p, PORT_61, 0x01);
	c->f.now += ticks_ns(39);
	assert_false(out2(&c->p));
	c->f.now += ticks_ns(2);
	assert_true(out2(&c->p));
}

/* OUT of channel 2 at @ticks after the gate went up at @up. */
static bool out2_at(struct ctx *c, uint64_t up, uint64_t ticks)
{
	c->f.now = up + ticks_ns(ticks);
	return out2(&c->p);
}

static void test_out_in_each_mode(void **state)
{
	struct ctx *c = *state;
	uint64_t up;

	/* Mode 2, count 4: low for the one clock before each reload. */
	program(&c->p, 2, 0xb4, 4);
	assert_true(out2(&c->p));
	up = c->f.now;
	outb(&c->p, PORT_61, 0x01);
	assert_true(out2_at(c, up, 1));
	assert_true(out2_at(c, up, 2));
	assert_false(out2_at(c, up, 3));
	assert_true(out2_at(c, up, 4));
	assert_false(out2_at(c, up, 7));
	/* Gate low in mode 2: OUT high at once. */
	outb(&c->p, PORT_61, 0x00);
	assert_true(out2(&c->p));
	/* Mode 3, count 4: two high, two low; reload on gate rising. */
	program(&c->p, 2, 0xb6, 4);
	up = c->f.now;
	outb(&c->p, PORT_61, 0x01);
	assert_true(out2_at(c, up, 0));
	assert_true(out2_at(c, up, 1));
	assert_false(out2_at(c, up, 2));
	assert_false(out2_at(c, up, 3));
	assert_true(out2_at(c, up, 4));
	/* Mode 3, odd count 5: three high, two low. */
	program(&c->p, 2, 0xb6, 5);
	up = c->f.now;
	assert_true(out2_at(c, up, 2));
	assert_false(out2_at(c, up, 3));
	assert_false(out2_at(c, up, 4));
	assert_true(out2_at(c, up, 5));
	/* Mode 1: waits high for a gate edge, then low for the count. */
	program(&c->p, 2, 0xb2, 10);
	c->f.now += ticks_ns(50);
	assert_true(out2(&c->p));
	outb(&c->p, PORT_61, 0x00);
	up = c->f.now;
	outb(&c->p, PORT_61, 0x01);
	assert_false(out2_at(c, up, 0));
	assert_false(out2_at(c, up, 9));
	assert_true(out2_at(c, up, 10));
	/* Retriggered by the next edge. */
	outb(&c->p, PORT_61, 0x00);
	up = c->f.now;
	outb(&c->p, PORT_61, 0x01);
	assert_false(out2_at(c, up, 5));
	/* Mode 4: one low clock at terminal count. */
	program(&c->p, 2, 0xb8, 3);
	up = c->f.now;
	assert_true(out2_at(c, up, 2));
	assert_false(out2_at(c, up, 3));
	assert_true(out2_at(c, up, 4));
	/* Mode 5: like 4 but started by a gate edge. */
	program(&c->p, 2, 0xba, 3);
	c->f.now += ticks_ns(100);
	assert_true(out2(&c->p));
	outb(&c->p, PORT_61, 0x00);
	up = c->f.now;
	outb(&c->p, PORT_61, 0x01);
	assert_true(out2_at(c, up, 2));
	assert_false(out2_at(c, up, 3));
	assert_true(out2_at(c, up, 4));
}

static void test_ops_reenter(void **state)
{
	struct ctx *c = *state;

	c->f.reenter = true;
	program(&c->p, 0, 0x34, 100);
	c->f.now = c->f.armed;
	fire(c);
	assert_int_equal(c->f.pulses, 1);
	program(&c->p, 0, 0x30, 10);
	c->f.now = c->f.armed;
	fire(c);
	assert_int_equal(c->f.irq0_level, 1);
	outb(&c->p, PORT_CTRL, 0x34);
	assert_int_equal(c->f.irq0_level, 0);
	assert_int_equal(c->f.armed, 0);
}

static void *timer_thread(void *arg)
{
	struct ctx *c = arg;

	for (int i = 0; i < 20000; i++) {
		__atomic_add_fetch(&c->f.now, 20000, __ATOMIC_RELAXED);
		pit_timer_fire(&c->p);
	}
	return NULL;
}

static void *guest_thread(void *arg)
{
	struct ctx *c = arg;
	static const uint8_t cws[] = {0x30, 0x34, 0x36, 0x38};

	for (int i = 0; i < 20000; i++)
		program(&c->p, 0, cws[i % 4], (uint16_t)(20 + i % 50));
	return NULL;
}

/* Reprogramming races the timer: the host ends with the latest state. */
static void test_threads_keep_host_current(void **state)
{
	struct ctx *c = *state;
	pthread_t a, b;

	assert_int_equal(pthread_create(&a, NULL, timer_thread, c), 0);
	assert_int_equal(pthread_create(&b, NULL, guest_thread, c), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_false(c->p.syncing);
	assert_int_equal(c->p.armed_ns, c->p.next_irq_ns);
	if (c->p.armed_ns)
		assert_int_equal(c->f.armed, c->p.armed_ns);
	assert_int_equal(c->f.irq0_level, c->p.irq0_level);
	/* (how many ticks there were depends on how the threads ran) */
}

static void test_io_registry(void **state)
{
	struct io_registry io;
	struct pit p;
	struct fake f = {.p = &p, .now = T0};
	uint8_t b[4] = {0xb0, 0x01};

	(void)state;
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(pit_init(&p, &io, &fake_ops, &f), 0);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x43, b, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x61, &b[1], 1, true, 0));
	b[0] = 0x10;
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x42, b, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x42, b, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x42, b, 1, false, 0));
	assert_int_equal(b[0], 0x10);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x61, b, 1, false, 0));
	assert_int_equal(b[0] & 0x01, 0x01);
	/* A 16-bit read at 0x42: counter byte, then the control port. */
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x42, b, 2, false, 0));
	assert_int_equal(b[1], 0xff);
	pit_destroy(&p);
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, 0x40, b, 1, false, 0));
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, 0x61, b, 1, false, 0));
	ioreg_destroy(&io);
}

static void test_random_port_fuzz(void **state)
{
	struct ctx *c = *state;
	static const uint16_t ports[] = {0x40, 0x41, 0x42, 0x43, 0x61, 0x44};
	uint8_t b[4];

	srand(0x8254);
	for (int i = 0; i < 300000; i++) {
		uint16_t port = ports[rand() % 6];
		uint32_t len = (uint32_t)(rand() % 4) + 1;

		for (size_t j = 0; j < sizeof(b); j++)
			b[j] = (uint8_t)rand();
		switch (rand() % 6) {
		case 0:
			c->f.now += (uint64_t)rand() % 100000;
			break;
		case 1:
			if (rand() % 2 && c->f.armed > c->f.now)
				c->f.now = c->f.armed;
			fire(c);
			break;
		case 2:
			pit_io(&c->p, port, b, len, rand() % 2);
			break;
		default:
			pit_io(&c->p, port, b, 1, rand() % 2);
			break;
		}
		/* The host's view always matches the PIT's. */
		assert_int_equal(c->f.armed, c->p.next_irq_ns);
		assert_int_equal(c->f.irq0_level, c->p.irq0_level);
		if (c->f.armed)
			assert_true(c->f.armed > c->p.ch[0].load_ns);
	}
	/* A clock that jumps backwards is harmless too. */
	c->f.now = 1;
	fire(c);
	(void)latch_read(&c->p, 0);
	(void)out2(&c->p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_power_on, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode2_periodic, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_late_and_spurious_fires,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode3_and_reprogramming,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode0_terminal_count,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode4_strobe_irq, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_latch_reads_decrease,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_byte_sequencing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bcd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port61_calibration_loop,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_port61_bits_and_gate,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_in_each_mode, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ops_reenter, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_threads_keep_host_current,
						setup, teardown),
		cmocka_unit_test(test_io_registry),
		cmocka_unit_test_setup_teardown(test_random_port_fuzz, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
