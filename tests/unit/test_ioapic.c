/*
 * tests/unit/test_ioapic.c - the emulated I/O APIC through its MMIO page
 * and pin/EOI entry points, with a fake ops->send that records messages:
 * ID/version/arbitration registers, the redirection table and its
 * read-only bits, edge delivery on rising edges only, masking, level pins
 * with remote IRR re-delivered on EOI (ioapic_eoi and the EOI register),
 * unmasking an asserted level pin, a send that re-enters ioapic_eoi,
 * registration in the io registry, and random MMIO that must stay safe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "irqchip/ioapic.h"

#define MAX_SENT 64

#define REDIR(pin) (0x10 + 2 * (pin))
#define RTE_LEVEL (1u << 15)
#define RTE_MASKED (1u << 16)
#define RTE_REMOTE_IRR (1u << 14)
#define RTE_DELIVS (1u << 12)
#define RTE_LOGICAL (1u << 11)
#define RTE_POLARITY_LOW (1u << 13)

struct fake {
	struct ioapic *s;
	int n;
	struct apic_msg sent[MAX_SENT];
	int eoi_from_send; /* EOIs the fake still does from inside send */
};

static void fake_send(void *opaque, const struct apic_msg *m)
{
	struct fake *f = opaque;

	if (f->n < MAX_SENT)
		f->sent[f->n] = *m;
	f->n++;
	if (f->eoi_from_send > 0 && m->level) {
		f->eoi_from_send--;
		ioapic_eoi(f->s, m->vector); /* the lock must be free here */
	}
}

static const struct ioapic_ops fake_ops = {.send = fake_send};

struct ctx {
	struct ioapic s;
	struct fake f;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->f.s = &c->s;
	assert_int_equal(ioapic_init(&c->s, NULL, 9, &fake_ops, &c->f), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	ioapic_destroy(&c->s);
	free(c);
	return 0;
}

static void mmio_write32(struct ioapic *s, uint64_t off, uint32_t v)
{
	uint8_t b[4] = {v, v >> 8, v >> 16, v >> 24};

	ioapic_mmio(s, off, b, 4, true);
}

static uint32_t mmio_read32(struct ioapic *s, uint64_t off)
{
	uint8_t b[4];

	ioapic_mmio(s, off, b, 4, false);
	return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint32_t reg_read(struct ioapic *s, uint32_t index)
{
	mmio_write32(s, 0x00, index);
	return mmio_read32(s, 0x10);
}

static void reg_write(struct ioapic *s, uint32_t index, uint32_t v)
{
	mmio_write32(s, 0x00, index);
	mmio_write32(s, 0x10, v);
}

/* Program @pin: vector, flags in the low word, destination @dest. */
static void set_entry(struct ioapic *s, int pin, uint32_t low, uint8_t dest)
{
	reg_write(s, REDIR(pin) + 1, (uint32_t)dest << 24);
	reg_write(s, REDIR(pin), low);
}

static void test_id_version_arbitration(void **state)
{
	struct ctx *c = *state;

	assert_int_equal(reg_read(&c->s, 0x01), 0x00170020);
	assert_int_equal(reg_read(&c->s, 0x00), 9u << 24);
	assert_int_equal(reg_read(&c->s, 0x02), 9u << 24);
	/* Only bits 27:24 of the ID are writable. */
	reg_write(&c->s, 0x00, 0xf5ffffff);
	assert_int_equal(reg_read(&c->s, 0x00), 5u << 24);
	assert_int_equal(reg_read(&c->s, 0x02), 5u << 24);
	/* Version is read-only; IOREGSEL reads back as a byte. */
	reg_write(&c->s, 0x01, 0);
	assert_int_equal(reg_read(&c->s, 0x01), 0x00170020);
	mmio_write32(&c->s, 0x00, 0x1234);
	assert_int_equal(mmio_read32(&c->s, 0x00), 0x34);
	/* Unknown indexes read 0. */
	assert_int_equal(reg_read(&c->s, 0x03), 0);
	assert_int_equal(reg_read(&c->s, 0x40), 0);
	assert_int_equal(reg_read(&c->s, 0xff), 0);
}

static void test_redirection_table(void **state)
{
	struct ctx *c = *state;

	/* Reset: masked, edge, vector 0, dest 0. */
	for (int pin = 0; pin < IOAPIC_PINS; pin++) {
		assert_int_equal(reg_read(&c->s, REDIR(pin)), RTE_MASKED);
		assert_int_equal(reg_read(&c->s, REDIR(pin) + 1), 0);
	}
	/* All writable bits stick; delivery status and remote IRR do not. */
	reg_write(&c->s, REDIR(5), 0xffffffff);
	assert_int_equal(reg_read(&c->s, REDIR(5)),
			 0x1ffff & ~(RTE_DELIVS | RTE_REMOTE_IRR));
	reg_write(&c->s, REDIR(5) + 1, 0xffffffff);
	assert_int_equal(reg_read(&c->s, REDIR(5) + 1), 0xff000000);
	/* Neighbours untouched, last pin reachable, past it nothing. */
	assert_int_equal(reg_read(&c->s, REDIR(4)), RTE_MASKED);
	assert_int_equal(reg_read(&c->s, REDIR(6)), RTE_MASKED);
	reg_write(&c->s, REDIR(23), 0x0000a0b1);
	assert_int_equal(reg_read(&c->s, REDIR(23)), 0x0000a0b1);
	reg_write(&c->s, REDIR(24), 0x31);
	assert_int_equal(reg_read(&c->s, REDIR(24)), 0);
	assert_int_equal(c->f.n, 0);
}

static void test_message_fields(void **state)
{
	struct ctx *c = *state;
	const struct apic_msg *m = &c->f.sent[0];

	set_entry(&c->s, 3, 0x41 | 1u << 8 | RTE_LOGICAL | RTE_POLARITY_LOW,
		  0x0c);
	ioapic_set_irq(&c->s, 3, 1);
	assert_int_equal(c->f.n, 1);
	assert_int_equal(m->vector, 0x41);
	assert_int_equal(m->delivery, APIC_DM_LOWEST);
	assert_int_equal(m->dest, 0x0c);
	assert_true(m->logical);
	assert_false(m->level);
	assert_true(m->assert);
	assert_int_equal(m->shorthand, APIC_SH_NONE);
	assert_false(m->x2apic_dest);
	assert_int_equal(m->src_vcpu, -1);
	assert_int_equal(c->s.delivered[3], 1);
}

static void test_edge_rising_only(void **state)
{
	struct ctx *c = *state;

	set_entry(&c->s, 1, 0x31, 0);
	ioapic_set_irq(&c->s, 1, 1);
	assert_int_equal(c->f.n, 1);
	ioapic_set_irq(&c->s, 1, 1); /* still high: no edge */
	assert_int_equal(c->f.n, 1);
	ioapic_set_irq(&c->s, 1, 0);
	assert_int_equal(c->f.n, 1);
	ioapic_set_irq(&c->s, 1, 7); /* any non-zero is asserted */
	assert_int_equal(c->f.n, 2);
	assert_int_equal(c->f.sent[1].vector, 0x31);
	/* Edge entries never get a remote IRR. */
	assert_int_equal(reg_read(&c->s, REDIR(1)) & RTE_REMOTE_IRR, 0);
	assert_int_equal(c->s.delivered[1], 2);
}

static void test_masked_pins(void **state)
{
	struct ctx *c = *state;

	/* Reset state: masked, nothing goes out. */
	ioapic_set_irq(&c->s, 4, 1);
	ioapic_set_irq(&c->s, 4, 0);
	assert_int_equal(c->f.n, 0);
	set_entry(&c->s, 4, 0x44 | RTE_MASKED, 0);
	ioapic_set_irq(&c->s, 4, 1);
	/* Unmasking an edge pin that is high does not deliver. */
	set_entry(&c->s, 4, 0x44, 0);
	assert_int_equal(c->f.n, 0);
	ioapic_set_irq(&c->s, 4, 0);
	ioapic_set_irq(&c->s, 4, 1);
	assert_int_equal(c->f.n, 1);
	/* Out-of-range pins are ignored. */
	ioapic_set_irq(&c->s, -1, 1);
	ioapic_set_irq(&c->s, IOAPIC_PINS, 1);
	ioapic_eoi(&c->s, 0x44);
	assert_int_equal(c->f.n, 1);
}

static void test_level_remote_irr_and_eoi(void **state)
{
	struct ctx *c = *state;

	set_entry(&c->s, 10, 0x5a | RTE_LEVEL, 1);
	ioapic_set_irq(&c->s, 10, 1);
	assert_int_equal(c->f.n, 1);
	assert_true(c->f.sent[0].level);
	assert_true(reg_read(&c->s, REDIR(10)) & RTE_REMOTE_IRR);
	/* Asserted again while waiting for the EOI: nothing. */
	ioapic_set_irq(&c->s, 10, 0);
	ioapic_set_irq(&c->s, 10, 1);
	assert_int_equal(c->f.n, 1);
	/* A remote IRR is read-only: writing the entry keeps it. */
	reg_write(&c->s, REDIR(10), 0x5a | RTE_LEVEL);
	assert_true(reg_read(&c->s, REDIR(10)) & RTE_REMOTE_IRR);
	assert_int_equal(c->f.n, 1);
	/* EOI of another vector: nothing. */
	ioapic_eoi(&c->s, 0x5b);
	assert_int_equal(c->f.n, 1);
	/* EOI while still asserted: delivered again. */
	ioapic_eoi(&c->s, 0x5a);
	assert_int_equal(c->f.n, 2);
	assert_true(reg_read(&c->s, REDIR(10)) & RTE_REMOTE_IRR);
	/* Deasserted, then EOI: remote IRR clears, nothing sent. */
	ioapic_set_irq(&c->s, 10, 0);
	ioapic_eoi(&c->s, 0x5a);
	assert_int_equal(c->f.n, 2);
	assert_false(reg_read(&c->s, REDIR(10)) & RTE_REMOTE_IRR);
	/* Next assertion delivers at once. */
	ioapic_set_irq(&c->s, 10, 1);
	assert_int_equal(c->f.n, 3);
	assert_int_equal(c->s.delivered[10], 3);
}

static void test_eoi_register(void **state)
{
	struct ctx *c = *state;

	set_entry(&c->s, 11, 0x61 | RTE_LEVEL, 0);
	set_entry(&c->s, 12, 0x61 | RTE_LEVEL, 0); /* shared vector */
	ioapic_set_irq(&c->s, 11, 1);
	ioapic_set_irq(&c->s, 12, 1);
	assert_int_equal(c->f.n, 2);
	mmio_write32(&c->s, 0x40, 0x61);
	/* Both pins had remote IRR and are still asserted. */
	assert_int_equal(c->f.n, 4);
	ioapic_set_irq(&c->s, 11, 0);
	ioapic_set_irq(&c->s, 12, 0);
	mmio_write32(&c->s, 0x40, 0x61);
	assert_int_equal(c->f.n, 4);
	assert_int_equal(reg_read(&c->s, REDIR(11)) & RTE_REMOTE_IRR, 0);
	assert_int_equal(reg_read(&c->s, REDIR(12)) & RTE_REMOTE_IRR, 0);
	/* The EOI register reads 0. */
	assert_int_equal(mmio_read32(&c->s, 0x40), 0);
}

static void test_unmask_asserted_level(void **state)
{
	struct ctx *c = *state;

	set_entry(&c->s, 7, 0x70 | RTE_LEVEL | RTE_MASKED, 0);
	ioapic_set_irq(&c->s, 7, 1);
	assert_int_equal(c->f.n, 0);
	/* Masked and asserted: an EOI does not deliver either. */
	ioapic_eoi(&c->s, 0x70);
	assert_int_equal(c->f.n, 0);
	set_entry(&c->s, 7, 0x70 | RTE_LEVEL, 0);
	assert_int_equal(c->f.n, 1);
	assert_int_equal(c->f.sent[0].vector, 0x70);
	/* Masking with remote IRR set, EOI: IRR clears, no delivery. */
	set_entry(&c->s, 7, 0x70 | RTE_LEVEL | RTE_MASKED, 0);
	ioapic_eoi(&c->s, 0x70);
	assert_int_equal(c->f.n, 1);
	assert_false(reg_read(&c->s, REDIR(7)) & RTE_REMOTE_IRR);
	/* Switching a level entry to edge drops its remote IRR. */
	set_entry(&c->s, 7, 0x70 | RTE_LEVEL, 0);
	assert_int_equal(c->f.n, 2);
	set_entry(&c->s, 7, 0x70, 0);
	assert_false(reg_read(&c->s, REDIR(7)) & RTE_REMOTE_IRR);
}

static void test_send_reenters_eoi(void **state)
{
	struct ctx *c = *state;

	set_entry(&c->s, 2, 0x22 | RTE_LEVEL, 0);
	/* The guest EOIs from inside the send, twice; the line stays up. */
	c->f.eoi_from_send = 2;
	ioapic_set_irq(&c->s, 2, 1);
	assert_int_equal(c->f.n, 3);
	assert_true(reg_read(&c->s, REDIR(2)) & RTE_REMOTE_IRR);
	/* And from a send started by the EOI register. */
	c->f.eoi_from_send = 1;
	mmio_write32(&c->s, 0x40, 0x22);
	assert_int_equal(c->f.n, 5);
	assert_int_equal(c->s.delivered[2], 5);
}

static void test_narrow_and_odd_accesses(void **state)
{
	struct ctx *c = *state;
	uint8_t b[8];

	/* A byte write to IOREGSEL and a byte read of IOWIN work. */
	b[0] = 0x01;
	ioapic_mmio(&c->s, 0x00, b, 1, true);
	ioapic_mmio(&c->s, 0x10, b, 1, false);
	assert_int_equal(b[0], 0x20);
	ioapic_mmio(&c->s, 0x10, b, 2, false);
	assert_int_equal(b[0] | b[1] << 8, 0x0020);
	/* Unaligned or 8-byte accesses read 0 and are ignored on writes. */
	memset(b, 0xaa, sizeof(b));
	ioapic_mmio(&c->s, 0x11, b, 1, false);
	assert_int_equal(b[0], 0);
	memset(b, 0xaa, sizeof(b));
	ioapic_mmio(&c->s, 0x10, b, 8, false);
	for (int i = 0; i < 8; i++)
		assert_int_equal(b[i], 0);
	memset(b, 0xff, sizeof(b));
	ioapic_mmio(&c->s, 0x02, b, 4, true);
	ioapic_mmio(&c->s, 0x10, b, 8, true);
	assert_int_equal(mmio_read32(&c->s, 0x00), 0x01);
	assert_int_equal(reg_read(&c->s, 0x01), 0x00170020);
}

static void test_registered_in_io_registry(void **state)
{
	struct io_registry io;
	struct ioapic s;
	struct fake f = {.s = &s};
	uint8_t b[4] = {0x01, 0, 0, 0};

	(void)state;
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(ioapic_init(&s, &io, 2, &fake_ops, &f), 0);
	assert_true(ioreg_dispatch(&io, IO_SPACE_MMIO, IOAPIC_MMIO_BASE, b, 4,
				   true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_MMIO, IOAPIC_MMIO_BASE + 0x10,
				   b, 4, false, 0));
	assert_int_equal(b[0] | b[1] << 8 | b[2] << 16, 0x170020);
	ioapic_destroy(&s);
	assert_false(ioreg_dispatch(&io, IO_SPACE_MMIO, IOAPIC_MMIO_BASE, b, 4,
				    false, 0));
	ioreg_destroy(&io);
}

static void test_random_mmio_fuzz(void **state)
{
	struct ctx *c = *state;
	static const uint32_t lens[] = {0, 1, 2, 3, 4, 8};
	static const uint64_t regs[] = {0x00, 0x10, 0x40};
	uint8_t b[8];

	srand(0x10a9);
	for (int i = 0; i < 200000; i++) {
		uint64_t off = (uint64_t)(rand() % 0x60);
		uint32_t len = lens[rand() % 6];
		bool is_write = rand() % 2;

		for (size_t j = 0; j < sizeof(b); j++)
			b[j] = (uint8_t)rand();
		c->f.eoi_from_send = rand() % 3;
		switch (rand() % 6) {
		case 0:
			ioapic_set_irq(&c->s, rand() % 30 - 3, rand() % 2);
			break;
		case 1:
			ioapic_eoi(&c->s, (uint8_t)rand());
			break;
		case 2: /* mostly well-formed register accesses */
		case 3:
			ioapic_mmio(&c->s, regs[rand() % 3], b, 4, is_write);
			break;
		default:
			ioapic_mmio(&c->s, off, b, len, is_write);
			break;
		}
	}
	assert_int_equal(reg_read(&c->s, 0x01), 0x00170020);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_id_version_arbitration,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirection_table, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_message_fields, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_edge_rising_only, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_masked_pins, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_level_remote_irr_and_eoi,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_eoi_register, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unmask_asserted_level,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_reenters_eoi, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_narrow_and_odd_accesses,
						setup, teardown),
		cmocka_unit_test(test_registered_in_io_registry),
		cmocka_unit_test_setup_teardown(test_random_mmio_fuzz, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
