/*
 * tests/unit/test_pic.c - the cascaded 8259A pair through its ports, its
 * lines, INTA and a fake ops->intr that records INTR changes: the ICW
 * sequence as Linux and SeaBIOS send it, priority and nesting, masking,
 * non-specific and specific EOI, rotation, the slave on IRQ 2, spurious
 * IRQ 7 and 15, auto-EOI, ELCR level lines, OCW3 register reads, poll and
 * special mask mode, INTR reporting (also re-entered from the callback),
 * the io registry ranges, and random port traffic that must stay safe.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "irqchip/pic.h"

#define M_CMD 0x20
#define M_DATA 0x21
#define S_CMD 0xa0
#define S_DATA 0xa1
#define ELCR0 0x4d0
#define ELCR1 0x4d1

#define OCW2_EOI 0x20
#define OCW2_SPECIFIC_EOI 0x60
#define OCW2_ROTATE_EOI 0xa0
#define OCW2_SET_PRIORITY 0xc0
#define OCW3_READ_IRR 0x0a
#define OCW3_READ_ISR 0x0b
#define OCW3_POLL 0x0c
#define OCW3_SET_SMM 0x68
#define OCW3_CLEAR_SMM 0x48

struct fake {
	struct pic *p;
	int calls;
	int level;	 /* last level reported */
	int ack_in_intr; /* INTAs the fake still does from inside intr */
	int last_vector;
};

static void fake_intr(void *opaque, int level)
{
	struct fake *f = opaque;

	f->calls++;
	f->level = level;
	if (level && f->ack_in_intr > 0) {
		f->ack_in_intr--;
		f->last_vector = pic_ack(f->p); /* the lock must be free */
	}
}

static const struct pic_ops fake_ops = {.intr = fake_intr};

struct ctx {
	struct pic p;
	struct fake f;
};

static void outb(struct pic *p, uint16_t port, uint8_t v)
{
	pic_io(p, port, &v, 1, true);
}

static uint8_t inb(struct pic *p, uint16_t port)
{
	uint8_t v = 0x5a;

	pic_io(p, port, &v, 1, false);
	return v;
}

/* The sequence Linux's init_8259A and SeaBIOS send. */
static void linux_init(struct pic *p, uint8_t master_icw4)
{
	outb(p, M_DATA, 0xff);
	outb(p, S_DATA, 0xff);
	outb(p, M_CMD, 0x11);
	outb(p, M_DATA, 0x20);
	outb(p, M_DATA, 0x04);
	outb(p, M_DATA, master_icw4);
	outb(p, S_CMD, 0x11);
	outb(p, S_DATA, 0x28);
	outb(p, S_DATA, 0x02);
	outb(p, S_DATA, 0x01);
	outb(p, M_DATA, 0x00);
	outb(p, S_DATA, 0x00);
}

static int setup_raw(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->f.p = &c->p;
	assert_int_equal(pic_init(&c->p, NULL, &fake_ops, &c->f), 0);
	*state = c;
	return 0;
}

static int setup(void **state)
{
	struct ctx *c;

	setup_raw(state);
	c = *state;
	linux_init(&c->p, 0x01);
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	pic_destroy(&c->p);
	free(c);
	return 0;
}

/* An edge on @irq. */
static void pulse(struct pic *p, int irq)
{
	pic_set_irq(p, irq, 1);
	pic_set_irq(p, irq, 0);
}

static void test_power_on_and_init_sequence(void **state)
{
	struct ctx *c = *state;

	/* Power-on: all masked, INTR low whatever the lines do. */
	assert_int_equal(inb(&c->p, M_DATA), 0xff);
	assert_int_equal(inb(&c->p, S_DATA), 0xff);
	pulse(&c->p, 1);
	assert_false(pic_intr(&c->p));
	assert_int_equal(c->f.calls, 0);
	/* The IMR is an ordinary register before init (Linux probes it). */
	outb(&c->p, M_DATA, 0xa7);
	assert_int_equal(inb(&c->p, M_DATA), 0xa7);
	/* ICW1 clears IMR and forgets old edges. */
	linux_init(&c->p, 0x01);
	assert_int_equal(inb(&c->p, M_DATA), 0);
	assert_int_equal(inb(&c->p, S_DATA), 0);
	assert_false(pic_intr(&c->p));
	pulse(&c->p, 1);
	assert_true(pic_intr(&c->p));
	assert_int_equal(c->f.calls, 1);
	assert_int_equal(c->f.level, 1);
	assert_int_equal(pic_ack(&c->p), 0x21);
	assert_false(pic_intr(&c->p));
	assert_int_equal(c->f.level, 0);
	outb(&c->p, M_CMD, OCW2_EOI);
	/* Init without ICW4 ends after ICW3: the next data byte is IMR. */
	outb(&c->p, M_CMD, 0x10);
	outb(&c->p, M_DATA, 0x40);
	outb(&c->p, M_DATA, 0x04);
	outb(&c->p, M_DATA, 0xfe);
	assert_int_equal(inb(&c->p, M_DATA), 0xfe);
	pulse(&c->p, 0);
	assert_int_equal(pic_ack(&c->p), 0x40);
	/* Single mode skips ICW3. */
	outb(&c->p, M_CMD, 0x13);
	outb(&c->p, M_DATA, 0x50);
	outb(&c->p, M_DATA, 0x01); /* ICW4 */
	outb(&c->p, M_DATA, 0xf7); /* IMR */
	assert_int_equal(inb(&c->p, M_DATA), 0xf7);
}

static void test_priority_and_nesting(void **state)
{
	struct ctx *c = *state;

	pulse(&c->p, 3);
	pulse(&c->p, 1);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x21);
	/* IRQ 3 waits behind IRQ 1 in service. */
	assert_false(pic_intr(&c->p));
	/* A higher priority (IRQ 0) still gets through: nesting. */
	pulse(&c->p, 0);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x20);
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0x03);
	/* Non-specific EOI ends the highest (IRQ 0): IRQ 1 still blocks. */
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_int_equal(inb(&c->p, M_CMD), 0x02);
	assert_false(pic_intr(&c->p));
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x23);
	/* Specific EOI, as Linux sends it. */
	outb(&c->p, M_CMD, OCW2_SPECIFIC_EOI | 3);
	assert_int_equal(inb(&c->p, M_CMD), 0);
	assert_false(pic_intr(&c->p));
}

static void test_masking(void **state)
{
	struct ctx *c = *state;

	outb(&c->p, M_DATA, 0x10);
	pulse(&c->p, 4);
	assert_false(pic_intr(&c->p));
	outb(&c->p, M_CMD, OCW3_READ_IRR);
	assert_int_equal(inb(&c->p, M_CMD), 0x10); /* latched while masked */
	outb(&c->p, M_DATA, 0x00);
	assert_true(pic_intr(&c->p));
	outb(&c->p, M_DATA, 0x10); /* masked again before INTA */
	assert_false(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x27); /* spurious */
	outb(&c->p, M_DATA, 0x00);
	assert_int_equal(pic_ack(&c->p), 0x24);
	/* Masking the cascade masks the whole slave. */
	outb(&c->p, M_CMD, OCW2_EOI);
	outb(&c->p, M_DATA, 0x04);
	pulse(&c->p, 12);
	assert_false(pic_intr(&c->p));
	outb(&c->p, M_DATA, 0x00);
	assert_true(pic_intr(&c->p));
	/* Bad line numbers are ignored; IRQ 2 is the cascade. */
	pic_set_irq(&c->p, -1, 1);
	pic_set_irq(&c->p, 16, 1);
	pic_set_irq(&c->p, 2, 1);
	assert_int_equal(pic_ack(&c->p), 0x2c);
}

static void test_cascade(void **state)
{
	struct ctx *c = *state;

	pulse(&c->p, 10);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x2a);
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	outb(&c->p, S_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0x04);
	assert_int_equal(inb(&c->p, S_CMD), 0x04);
	/* A lower slave IRQ waits; a higher master IRQ nests. */
	pulse(&c->p, 11);
	assert_false(pic_intr(&c->p));
	pulse(&c->p, 1);
	assert_int_equal(pic_ack(&c->p), 0x21);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_false(pic_intr(&c->p));
	/* Slave then master EOI, as Linux does: IRQ 11 comes next. */
	outb(&c->p, S_CMD, OCW2_SPECIFIC_EOI | 2);
	outb(&c->p, M_CMD, OCW2_SPECIFIC_EOI | 2);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x2b);
	outb(&c->p, S_CMD, OCW2_EOI);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_false(pic_intr(&c->p));
	/* The slave's IRQ 8 beats master IRQ 3 (IRQ 2 outranks 3). */
	pulse(&c->p, 3);
	pulse(&c->p, 8);
	assert_int_equal(pic_ack(&c->p), 0x28);
}

static void test_spurious(void **state)
{
	struct ctx *c = *state;

	/* Nothing pending: IRQ 7 of the master, no ISR bit. */
	assert_int_equal(pic_ack(&c->p), 0x27);
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0);
	/* A level request that goes away before INTA. */
	outb(&c->p, ELCR0, 0x20);
	pic_set_irq(&c->p, 5, 1);
	assert_true(pic_intr(&c->p));
	pic_set_irq(&c->p, 5, 0);
	assert_false(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x27);
	/* The same on the slave: master IRQ 2 latched, slave empty: 15. */
	outb(&c->p, ELCR1, 0x02);
	pic_set_irq(&c->p, 9, 1);
	assert_true(pic_intr(&c->p));
	outb(&c->p, S_DATA, 0x02); /* masked at the slave before INTA */
	assert_int_equal(pic_ack(&c->p), 0x2f);
	outb(&c->p, S_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, S_CMD), 0);
	assert_int_equal(inb(&c->p, M_CMD), 0x04); /* master took IRQ 2 */
}

static void test_auto_eoi(void **state)
{
	struct ctx *c = *state;

	linux_init(&c->p, 0x03);
	pulse(&c->p, 1);
	pulse(&c->p, 4);
	assert_int_equal(pic_ack(&c->p), 0x21);
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0);
	/* No EOI needed: the lower priority IRQ follows at once. */
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x24);
	assert_false(pic_intr(&c->p));
	/* Rotate in auto-EOI mode: the serviced IRQ becomes lowest. */
	outb(&c->p, M_CMD, 0x80);
	pulse(&c->p, 1);
	assert_int_equal(pic_ack(&c->p), 0x21);
	pulse(&c->p, 1);
	pulse(&c->p, 6);
	assert_int_equal(pic_ack(&c->p), 0x26);
	assert_int_equal(pic_ack(&c->p), 0x21);
	outb(&c->p, M_CMD, 0x00); /* rotate in auto-EOI off */
}

static void test_elcr_level(void **state)
{
	struct ctx *c = *state;

	/* Masks: master IRQ 0-2 and slave IRQ 8 and 13 stay edge. */
	outb(&c->p, ELCR0, 0xff);
	outb(&c->p, ELCR1, 0xff);
	assert_int_equal(inb(&c->p, ELCR0), 0xf8);
	assert_int_equal(inb(&c->p, ELCR1), 0xde);
	outb(&c->p, ELCR0, 0x00);
	outb(&c->p, ELCR1, 0x08); /* IRQ 11 level */
	pic_set_irq(&c->p, 11, 1);
	assert_int_equal(pic_ack(&c->p), 0x2b);
	outb(&c->p, S_CMD, OCW3_READ_IRR);
	assert_int_equal(inb(&c->p, S_CMD), 0x08); /* INTA keeps level IRR */
	outb(&c->p, S_CMD, OCW2_EOI);
	outb(&c->p, M_CMD, OCW2_EOI);
	/* Still asserted after EOI: requested again. */
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x2b);
	pic_set_irq(&c->p, 11, 0);
	outb(&c->p, S_CMD, OCW2_EOI);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_false(pic_intr(&c->p));
	assert_int_equal(inb(&c->p, S_CMD), 0);
	/* An edge line held high asks once. */
	pic_set_irq(&c->p, 4, 1);
	assert_int_equal(pic_ack(&c->p), 0x24);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_false(pic_intr(&c->p));
	/* Turning a high line to level makes it request. */
	outb(&c->p, ELCR0, 0x10);
	assert_true(pic_intr(&c->p));
}

static void test_ocw3_reads_and_poll(void **state)
{
	struct ctx *c = *state;

	pulse(&c->p, 5);
	pulse(&c->p, 6);
	assert_int_equal(inb(&c->p, M_CMD), 0x60); /* IRR by default */
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0x00);
	/* The selection sticks; OCW3 without RR leaves it alone. */
	outb(&c->p, M_CMD, 0x08);
	assert_int_equal(inb(&c->p, M_CMD), 0x00);
	outb(&c->p, M_CMD, OCW3_READ_IRR);
	assert_int_equal(inb(&c->p, M_CMD), 0x60);
	assert_int_equal(inb(&c->p, M_DATA), 0x00); /* data port: IMR */
	/* Poll: acknowledges like INTA, reports 0x80 | irq, once. */
	outb(&c->p, M_CMD, OCW3_POLL);
	assert_int_equal(inb(&c->p, M_CMD), 0x85);
	assert_int_equal(inb(&c->p, M_CMD), 0x40);
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0x20);
	outb(&c->p, M_CMD, OCW3_POLL);
	assert_int_equal(inb(&c->p, M_DATA), 0x00); /* 6 blocked by 5 */
	outb(&c->p, M_CMD, OCW2_EOI);
	outb(&c->p, M_CMD, OCW3_POLL);
	assert_int_equal(inb(&c->p, M_DATA), 0x86);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_false(pic_intr(&c->p));
}

static void test_special_mask_mode(void **state)
{
	struct ctx *c = *state;

	pulse(&c->p, 3);
	assert_int_equal(pic_ack(&c->p), 0x23);
	pulse(&c->p, 5);
	assert_false(pic_intr(&c->p)); /* blocked by 3 in service */
	/* Special mask mode: masking 3 lets lower priorities through. */
	outb(&c->p, M_CMD, OCW3_SET_SMM);
	outb(&c->p, M_DATA, 0x08);
	assert_true(pic_intr(&c->p));
	assert_int_equal(pic_ack(&c->p), 0x25);
	outb(&c->p, M_CMD, OCW2_SPECIFIC_EOI | 5);
	outb(&c->p, M_CMD, OCW3_CLEAR_SMM);
	outb(&c->p, M_DATA, 0x00);
	pulse(&c->p, 6);
	assert_false(pic_intr(&c->p)); /* 3 blocks again */
	outb(&c->p, M_CMD, OCW2_SPECIFIC_EOI | 3);
	assert_int_equal(pic_ack(&c->p), 0x26);
}

static void test_rotation(void **state)
{
	struct ctx *c = *state;

	/* Rotate on non-specific EOI: the serviced IRQ becomes lowest. */
	pulse(&c->p, 1);
	assert_int_equal(pic_ack(&c->p), 0x21);
	outb(&c->p, M_CMD, OCW2_ROTATE_EOI);
	pulse(&c->p, 1);
	pulse(&c->p, 4);
	assert_int_equal(pic_ack(&c->p), 0x24);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_int_equal(pic_ack(&c->p), 0x21);
	outb(&c->p, M_CMD, OCW2_EOI);
	/* Set priority: IRQ 5 lowest, so 6 comes before 0. */
	outb(&c->p, M_CMD, OCW2_SET_PRIORITY | 5);
	pulse(&c->p, 0);
	pulse(&c->p, 6);
	assert_int_equal(pic_ack(&c->p), 0x26);
	outb(&c->p, M_CMD, 0xe0 | 6); /* rotate on specific EOI */
	assert_int_equal(pic_ack(&c->p), 0x20);
	outb(&c->p, M_CMD, OCW2_EOI);
	/* A no-op OCW2 and EOI with nothing in service are harmless. */
	outb(&c->p, M_CMD, 0x40);
	outb(&c->p, M_CMD, OCW2_EOI);
	outb(&c->p, M_CMD, OCW2_ROTATE_EOI);
	assert_false(pic_intr(&c->p));
}

static void test_intr_reports(void **state)
{
	struct ctx *c = *state;
	int calls = c->f.calls;

	/* One call per change, none for non-changes. */
	pulse(&c->p, 3);
	pulse(&c->p, 4);
	assert_int_equal(c->f.calls, calls + 1);
	assert_int_equal(c->f.level, 1);
	pic_ack(&c->p);
	assert_int_equal(c->f.calls, calls + 2);
	assert_int_equal(c->f.level, 0);
	outb(&c->p, M_CMD, OCW2_EOI);
	assert_int_equal(c->f.calls, calls + 3);
	assert_int_equal(c->f.level, 1);
	/* The callback may INTA on the same thread (no deadlock). */
	pic_ack(&c->p);
	outb(&c->p, M_CMD, OCW2_EOI);
	c->f.ack_in_intr = 1;
	pulse(&c->p, 7);
	assert_int_equal(c->f.last_vector, 0x27);
	assert_false(pic_intr(&c->p));
	assert_int_equal(c->f.level, 0); /* the host saw the latest level */
	outb(&c->p, M_CMD, OCW3_READ_ISR);
	assert_int_equal(inb(&c->p, M_CMD), 0x80);
}

static void test_io_registry_and_wide_access(void **state)
{
	struct io_registry io;
	struct pic p;
	struct fake f = {.p = &p};
	uint8_t b[4] = {0x12, 0x34};

	(void)state;
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(pic_init(&p, &io, &fake_ops, &f), 0);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x21, b, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0xa1, &b[1], 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x4d0, b, 2, true, 0));
	memset(b, 0, sizeof(b));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x21, b, 1, false, 0));
	assert_int_equal(b[0], 0x12);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0xa1, b, 1, false, 0));
	assert_int_equal(b[0], 0x34);
	/* A 16-bit read at 0x4d0 reads both ELCRs. */
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, 0x4d0, b, 2, false, 0));
	assert_int_equal(b[0], 0x12 & 0xf8);
	assert_int_equal(b[1], 0x34 & 0xde);
	/* Direct wide accesses past the PIC's ports: 0xff, no harm. */
	memset(b, 0, sizeof(b));
	pic_io(&p, 0x21, b, 4, false);
	assert_int_equal(b[0], 0x12);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(b[3], 0xff);
	pic_destroy(&p);
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, 0x20, b, 1, false, 0));
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, 0xa0, b, 1, false, 0));
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, 0x4d1, b, 1, false, 0));
	ioreg_destroy(&io);
}

static void *line_thread(void *arg)
{
	struct pic *p = arg;
	unsigned int seed = 1;

	for (int i = 0; i < 20000; i++)
		pic_set_irq(p, rand_r(&seed) % 16, rand_r(&seed) % 2);
	return NULL;
}

static void *cpu_thread(void *arg)
{
	struct pic *p = arg;

	for (int i = 0; i < 20000; i++) {
		int v = pic_ack(p);

		if (v >= 0x28)
			outb(p, S_CMD, OCW2_EOI);
		outb(p, M_CMD, OCW2_EOI);
	}
	return NULL;
}

/* Lines from one thread, INTA/EOI from another: the host ends current. */
static void test_threads_report_latest_level(void **state)
{
	struct ctx *c = *state;
	pthread_t a, b;

	outb(&c->p, ELCR0, 0x28);
	outb(&c->p, ELCR1, 0x0e);
	assert_int_equal(pthread_create(&a, NULL, line_thread, &c->p), 0);
	assert_int_equal(pthread_create(&b, NULL, cpu_thread, &c->p), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_int_equal(c->f.level, pic_intr(&c->p));
	assert_false(c->p.notifying);
}

static void test_random_port_fuzz(void **state)
{
	struct ctx *c = *state;
	static const uint16_t ports[] = {M_CMD, M_DATA, S_CMD, S_DATA,
					 ELCR0, ELCR1,	0x22,  0x4d2};
	uint8_t b[4];

	srand(0x8259);
	for (int i = 0; i < 300000; i++) {
		uint32_t len = (uint32_t)(rand() % 4) + 1;
		uint16_t port = ports[rand() % 8];

		for (size_t j = 0; j < sizeof(b); j++)
			b[j] = (uint8_t)rand();
		c->f.ack_in_intr = rand() % 2;
		switch (rand() % 5) {
		case 0:
			pic_set_irq(&c->p, rand() % 20 - 2, rand() % 2);
			break;
		case 1: {
			int v = pic_ack(&c->p);

			assert_in_range(v, 0, 255);
			break;
		}
		case 2:
			pic_io(&c->p, port, b, 1, true);
			break;
		case 3:
			pic_io(&c->p, port, b, len, rand() % 2);
			break;
		default:
			pic_io(&c->p, port, b, 1, false);
			break;
		}
		/* The host always ends up seeing the current INTR. */
		assert_int_equal(c->f.level, pic_intr(&c->p));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_power_on_and_init_sequence,
						setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_priority_and_nesting,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_masking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cascade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spurious, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auto_eoi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_elcr_level, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ocw3_reads_and_poll, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_special_mask_mode, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intr_reports, setup,
						teardown),
		cmocka_unit_test(test_io_registry_and_wide_access),
		cmocka_unit_test_setup_teardown(
			test_threads_report_latest_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_port_fuzz, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
