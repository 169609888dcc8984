/*
 * tests/unit/test_pci.c - the PCI bus driven through a real io registry
 * with ioreg_dispatch, as a vCPU would: 0xcf8/0xcfc and ECAM reads of the
 * host bridge and added devices, absent slots and functions, BAR sizing
 * (32-bit, 64-bit, I/O), BAR moves and decode enables seen through the
 * bar_mapped callback, capabilities, read-only and write-1-to-clear bits,
 * odd-sized and unaligned accesses, 0xcf9 pass-through (also to the real
 * acpi_pm reset register), a full bus, and a random access storm.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "machine/devices.h"
#include "machine/pci.h"

#define CF8 0xcf8
#define CF9 0xcf9
#define CFC 0xcfc

#define REG_COMMAND 0x04
#define REG_STATUS 0x06
#define REG_CLASS_REV 0x08
#define REG_HEADER_TYPE 0x0e
#define REG_BAR0 0x10
#define REG_SUBSYS 0x2c
#define REG_CAP_PTR 0x34
#define REG_INT_LINE 0x3c
#define REG_INT_PIN 0x3d

#define CMD_IO 0x1
#define CMD_MEM 0x2
#define CMD_MASTER 0x4

#define MAX_EV 128
#define NDEV 33

struct ev {
	int bar;
	uint64_t addr;
	bool mapped;
};

struct tdev {
	struct pci_device pci;
	struct ev ev[MAX_EV];
	int nev;
	int ncfg;
	uint32_t cfg_off, cfg_len;
};

struct cf9_rec {
	int n;
	uint64_t offset;
	uint32_t len;
	bool is_write;
	uint8_t last_written;
	uint8_t value; /* what reads return */
};

struct fixture {
	struct io_registry io;
	struct pci_bus bus;
	struct cf9_rec cf9;
	struct tdev dev[NDEV];
};

/* --- test doubles --- */

static void rec_bar_mapped(struct pci_device *d, int bar, uint64_t addr,
			   bool mapped)
{
	struct tdev *t = d->opaque;

	if (t->nev < MAX_EV)
		t->ev[t->nev] = (struct ev){bar, addr, mapped};
	t->nev++;
}

static void rec_cfg_written(struct pci_device *d, uint32_t off, uint32_t len)
{
	struct tdev *t = d->opaque;

	t->ncfg++;
	t->cfg_off = off;
	t->cfg_len = len;
}

static const struct pci_device_ops rec_ops = {
	.bar_mapped = rec_bar_mapped,
	.cfg_written = rec_cfg_written,
};

static void rec_cf9(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	struct cf9_rec *r = opaque;

	(void)vcpu_id;
	r->n++;
	r->offset = offset;
	r->len = len;
	r->is_write = is_write;
	if (is_write)
		r->last_written = data[0];
	else
		data[0] = r->value;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(ioreg_init(&f->io), 0);
	assert_int_equal(pci_bus_init(&f->bus, &f->io, rec_cf9, &f->cf9), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	pci_bus_destroy(&f->bus);
	ioreg_destroy(&f->io);
	free(f);
	return 0;
}

/* --- access helpers --- */

static uint64_t le(const uint8_t *d, uint32_t len)
{
	uint64_t v = 0;

	for (uint32_t i = 0; i < len; i++)
		v |= (uint64_t)d[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *d, uint64_t v, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		d[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t pio_in(struct fixture *f, uint16_t port, uint32_t len)
{
	uint8_t d[8] = {0};

	assert_true(
		ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, len, false, 0));
	return le(d, len);
}

static void pio_out(struct fixture *f, uint16_t port, uint64_t v, uint32_t len)
{
	uint8_t d[8];

	put_le(d, v, len);
	assert_true(
		ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, len, true, 0));
}

static uint32_t cf8_addr(int slot, int fn, uint32_t reg)
{
	return 0x80000000u | (uint32_t)slot << 11 | (uint32_t)fn << 8 |
	       (reg & 0xfc);
}

/* Mechanism #1 read of @len bytes at @reg (within one dword). */
static uint32_t cf8_read(struct fixture *f, int slot, int fn, uint32_t reg,
			 uint32_t len)
{
	pio_out(f, CF8, cf8_addr(slot, fn, reg), 4);
	return (uint32_t)pio_in(f, (uint16_t)(CFC + (reg & 3)), len);
}

static void cf8_write(struct fixture *f, int slot, int fn, uint32_t reg,
		      uint32_t v, uint32_t len)
{
	pio_out(f, CF8, cf8_addr(slot, fn, reg), 4);
	pio_out(f, (uint16_t)(CFC + (reg & 3)), v, len);
}

static uint64_t ecam_off(int slot, int fn, uint32_t reg)
{
	return (uint64_t)slot << 15 | (uint64_t)fn << 12 | reg;
}

static uint64_t ecam_read(struct fixture *f, int slot, int fn, uint32_t reg,
			  uint32_t len)
{
	uint8_t d[8] = {0};

	assert_true(ioreg_dispatch(&f->io, IO_SPACE_MMIO,
				   PCI_ECAM_BASE + ecam_off(slot, fn, reg), d,
				   len, false, 0));
	return le(d, len);
}

static void ecam_write(struct fixture *f, int slot, int fn, uint32_t reg,
		       uint64_t v, uint32_t len)
{
	uint8_t d[8];

	put_le(d, v, len);
	assert_true(ioreg_dispatch(&f->io, IO_SPACE_MMIO,
				   PCI_ECAM_BASE + ecam_off(slot, fn, reg), d,
				   len, true, 0));
}

/* A test device: virtio-net-like ids, no BARs yet. */
static struct tdev *tdev_init(struct fixture *f, int i)
{
	struct tdev *t = &f->dev[i];

	memset(t, 0, sizeof(*t));
	pci_device_init(&t->pci, "test", 0x1af4, 0x1041, 0x020000, 1, 0x1af4,
			0x0001);
	t->pci.ops = &rec_ops;
	t->pci.opaque = t;
	return t;
}

/* BAR0 16 KiB 32-bit MMIO, BAR1 32 bytes I/O, BAR2/3 1 MiB 64-bit. */
static struct tdev *tdev_standard(struct fixture *f, int i)
{
	struct tdev *t = tdev_init(f, i);

	assert_int_equal(pci_device_set_bar(&t->pci, 0, 0x4000, false, false),
			 0);
	assert_int_equal(pci_device_set_bar(&t->pci, 1, 32, true, false), 0);
	assert_int_equal(pci_device_set_bar(&t->pci, 2, 0x100000, false, true),
			 0);
	t->pci.bar[2].prefetchable = true;
	return t;
}

static void expect_ev(const struct tdev *t, int i, int bar, uint64_t addr,
		      bool mapped)
{
	assert_true(i < t->nev);
	assert_int_equal(t->ev[i].bar, bar);
	assert_int_equal(t->ev[i].addr, addr);
	assert_int_equal(t->ev[i].mapped, mapped);
}

/* --- tests --- */

static void test_host_bridge_ids(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cf8_read(f, 0, 0, 0x00, 2), 0x1b36);
	assert_int_equal(cf8_read(f, 0, 0, 0x02, 2), 0x0008);
	assert_int_equal(cf8_read(f, 0, 0, 0x00, 4), 0x00081b36);
	assert_int_equal(cf8_read(f, 0, 0, REG_CLASS_REV, 4) >> 8, 0x060000);
	assert_int_equal(cf8_read(f, 0, 0, REG_HEADER_TYPE, 1), 0);
	assert_int_equal(cf8_read(f, 0, 0, REG_INT_PIN, 1), 0);
	for (uint32_t r = REG_BAR0; r < REG_BAR0 + 24; r += 4)
		assert_int_equal(cf8_read(f, 0, 0, r, 4), 0);
	assert_int_equal(ecam_read(f, 0, 0, 0, 4), 0x00081b36);
	assert_int_equal(ecam_read(f, 0, 0, 0x0b, 1), 0x06);
}

static void test_added_device_ids(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	assert_int_equal(t->pci.slot, -1);
	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	assert_int_equal(t->pci.slot, 1);
	assert_int_equal(t->pci.intx_gsi, PCI_INTX_GSI_BASE + 1);
	assert_int_equal(cf8_read(f, 1, 0, 0x00, 2), 0x1af4);
	assert_int_equal(cf8_read(f, 1, 0, 0x02, 2), 0x1041);
	assert_int_equal(cf8_read(f, 1, 0, REG_CLASS_REV, 4), 0x02000001);
	assert_int_equal(cf8_read(f, 1, 0, REG_SUBSYS, 4), 0x00011af4);
	assert_int_equal(cf8_read(f, 1, 0, REG_INT_LINE, 1),
			 PCI_INTX_GSI_BASE + 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_INT_PIN, 1), 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_COMMAND, 2),
			 CMD_IO | CMD_MEM | CMD_MASTER);
	assert_int_equal(ecam_read(f, 1, 0, 0, 4), 0x10411af4);
	/* BARs were placed and mapped, naturally aligned, in the windows. */
	assert_int_equal(t->nev, 3);
	expect_ev(t, 0, 0, PCI_MMIO_BASE, true);
	expect_ev(t, 1, 1, PCI_IO_BASE, true);
	expect_ev(t, 2, 2, PCI_MMIO_BASE + 0x100000, true);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0, 4), PCI_MMIO_BASE);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 4, 4), PCI_IO_BASE | 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 8, 4),
			 (PCI_MMIO_BASE + 0x100000) | 0xc);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 12, 4), 0);
	for (int i = 0; i < 3; i++)
		assert_true(t->pci.bar[i].mapped);
	assert_false(t->pci.bar[3].mapped);
	assert_int_equal(t->ncfg, 0); /* placement is not a guest write */
}

static void test_absent_reads_ones(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	assert_int_equal(cf8_read(f, 5, 0, 0, 4), 0xffffffff);
	assert_int_equal(cf8_read(f, 31, 0, 0, 2), 0xffff);
	/* Other functions of present devices. */
	for (int fn = 1; fn < 8; fn++) {
		assert_int_equal(cf8_read(f, 0, fn, 0, 2), 0xffff);
		assert_int_equal(cf8_read(f, 1, fn, 0, 4), 0xffffffff);
		assert_int_equal(ecam_read(f, 1, fn, 0, 2), 0xffff);
	}
	/* Bus 1, and the enable bit clear. */
	pio_out(f, CF8, 0x80010000, 4);
	assert_int_equal(pio_in(f, CFC, 4), 0xffffffff);
	pio_out(f, CF8, 0x00000800, 4); /* slot 1, enable clear */
	assert_int_equal(pio_in(f, CFC, 4), 0xffffffff);
	pio_out(f, CFC, 0, 4); /* dropped */
	assert_int_equal(cf8_read(f, 1, 0, 0, 4), 0x10411af4);
	/* Writes to nothing are dropped. */
	cf8_write(f, 5, 0, REG_COMMAND, 0xffff, 2);
	cf8_write(f, 1, 3, REG_COMMAND, 0, 2);
	ecam_write(f, 7, 0, REG_BAR0, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 5, 0, 0, 4), 0xffffffff);
	assert_int_equal(cf8_read(f, 1, 0, REG_COMMAND, 2), 7);
	assert_int_equal(t->nev, 3);
}

/* Every dword and byte of slots 0..2 (2 absent) reads the same both ways. */
static void test_ecam_equals_cf8(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	assert_int_equal(pci_device_add_cap(&t->pci, 0x09, 16), 0x40);
	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	for (int slot = 0; slot < 3; slot++) {
		for (int fn = 0; fn < 2; fn++) {
			for (uint32_t r = 0; r < 256; r += 4)
				assert_int_equal(cf8_read(f, slot, fn, r, 4),
						 ecam_read(f, slot, fn, r, 4));
			for (uint32_t r = 0; r < 256; r++)
				assert_int_equal(cf8_read(f, slot, fn, r, 1),
						 ecam_read(f, slot, fn, r, 1));
		}
	}
	/* And a write through one shows through the other. */
	ecam_write(f, 1, 0, REG_INT_LINE, 0x0b, 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_INT_LINE, 1), 0x0b);
	cf8_write(f, 1, 0, REG_INT_LINE, 0x0a, 1);
	assert_int_equal(ecam_read(f, 1, 0, REG_INT_LINE, 1), 0x0a);
	/* Extended config space: present (zero) for a device, not above. */
	assert_int_equal(ecam_read(f, 1, 0, 0x100, 4), 0);
	assert_int_equal(ecam_read(f, 1, 0, 0xffc, 4), 0);
	assert_int_equal(ecam_read(f, 2, 0, 0x100, 4), 0xffffffff);
}

static void test_bar_sizing_32bit(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);
	uint32_t orig;

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	t->nev = 0;
	orig = cf8_read(f, 1, 0, REG_BAR0, 4);
	assert_int_equal(orig, PCI_MMIO_BASE);
	cf8_write(f, 1, 0, REG_BAR0, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0, 4), 0xffffc000);
	/* Mid-sizing the BAR decodes nothing. */
	assert_int_equal(t->nev, 1);
	expect_ev(t, 0, 0, PCI_MMIO_BASE, false);
	assert_false(t->pci.bar[0].mapped);
	cf8_write(f, 1, 0, REG_BAR0, orig, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0, 4), orig);
	assert_int_equal(t->nev, 2);
	expect_ev(t, 1, 0, PCI_MMIO_BASE, true);
	assert_true(t->pci.bar[0].mapped);
	assert_int_equal(t->pci.bar[0].addr, PCI_MMIO_BASE);
	/* Unused BAR slots and the ROM BAR size to 0. */
	cf8_write(f, 1, 0, REG_BAR0 + 16, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 16, 4), 0);
	cf8_write(f, 1, 0, 0x30, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, 0x30, 4), 0);
	assert_int_equal(t->nev, 2);
}

static void test_bar_sizing_64bit(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);
	uint64_t base = PCI_MMIO_BASE + 0x100000;
	uint32_t lo, hi;

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	t->nev = 0;
	lo = cf8_read(f, 1, 0, REG_BAR0 + 8, 4);
	hi = cf8_read(f, 1, 0, REG_BAR0 + 12, 4);
	assert_int_equal(lo, (uint32_t)base | 0xc); /* 64-bit, prefetch */
	assert_int_equal(hi, 0);
	cf8_write(f, 1, 0, REG_BAR0 + 8, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 8, 4), 0xfff0000c);
	cf8_write(f, 1, 0, REG_BAR0 + 12, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 12, 4), 0xffffffff);
	cf8_write(f, 1, 0, REG_BAR0 + 8, lo, 4);
	/* Low word restored, high still all-ones: still not decoded. */
	assert_int_equal(t->nev, 1);
	expect_ev(t, 0, 2, base, false);
	cf8_write(f, 1, 0, REG_BAR0 + 12, hi, 4);
	assert_int_equal(t->nev, 2);
	expect_ev(t, 1, 2, base, true);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 8, 4), lo);
	/* Sized as one 8-byte ECAM access, too. */
	ecam_write(f, 1, 0, REG_BAR0 + 8, ~0ULL, 8);
	assert_int_equal(ecam_read(f, 1, 0, REG_BAR0 + 8, 8),
			 0xfffffffffff0000cULL);
	ecam_write(f, 1, 0, REG_BAR0 + 8, base, 8);
	assert_int_equal(t->nev, 4);
	expect_ev(t, 3, 2, base, true);
}

static void test_bar_sizing_io(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	t->nev = 0;
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 4, 4), PCI_IO_BASE | 1);
	cf8_write(f, 1, 0, REG_BAR0 + 4, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 4, 4), 0xffffffe1);
	assert_int_equal(t->nev, 1);
	expect_ev(t, 0, 1, PCI_IO_BASE, false);
	cf8_write(f, 1, 0, REG_BAR0 + 4, PCI_IO_BASE, 4); /* bit 0 is RO */
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0 + 4, 4), PCI_IO_BASE | 1);
	assert_int_equal(t->nev, 2);
	expect_ev(t, 1, 1, PCI_IO_BASE, true);
	/* Past the 64 KiB port space: not decoded; at its very end: fine. */
	cf8_write(f, 1, 0, REG_BAR0 + 4, 0x10000, 4);
	assert_int_equal(t->nev, 3);
	expect_ev(t, 2, 1, PCI_IO_BASE, false);
	cf8_write(f, 1, 0, REG_BAR0 + 4, 0xffe0, 4);
	assert_int_equal(t->nev, 4);
	expect_ev(t, 3, 1, 0xffe0, true);
}

static void test_bar_relocation(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);
	uint64_t base2 = PCI_MMIO_BASE + 0x100000;

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	t->nev = 0;
	cf8_write(f, 1, 0, REG_BAR0, 0xd0000000, 4);
	assert_int_equal(t->nev, 2);
	expect_ev(t, 0, 0, PCI_MMIO_BASE, false);
	expect_ev(t, 1, 0, 0xd0000000, true);
	assert_int_equal(t->pci.bar[0].addr, 0xd0000000);
	/* Low bits below the size are not writable. */
	cf8_write(f, 1, 0, REG_BAR0, 0xd0001234, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_BAR0, 4), 0xd0000000);
	assert_int_equal(t->nev, 2);
	/* Writing the same address again changes nothing. */
	cf8_write(f, 1, 0, REG_BAR0, 0xd0000000, 4);
	assert_int_equal(t->nev, 2);
	/* A 64-bit BAR above 4 GiB in one ECAM access. */
	ecam_write(f, 1, 0, REG_BAR0 + 8, 0x100000000ULL, 8);
	assert_int_equal(t->nev, 4);
	expect_ev(t, 2, 2, base2, false);
	expect_ev(t, 3, 2, 0x100000000ULL, true);
	/* Dword by dword: each intermediate address is decoded in turn. */
	cf8_write(f, 1, 0, REG_BAR0 + 12, 2, 4);
	assert_int_equal(t->nev, 6);
	expect_ev(t, 4, 2, 0x100000000ULL, false);
	expect_ev(t, 5, 2, 0x200000000ULL, true);
	/* Address 0 means unassigned. */
	cf8_write(f, 1, 0, REG_BAR0, 0, 4);
	assert_int_equal(t->nev, 7);
	expect_ev(t, 6, 0, 0xd0000000, false);
	assert_false(t->pci.bar[0].mapped);
	assert_int_equal(t->pci.bar[0].addr, 0);
}

static void test_command_decode(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);
	uint64_t base2 = PCI_MMIO_BASE + 0x100000;

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	t->nev = 0;
	cf8_write(f, 1, 0, REG_COMMAND, CMD_IO | CMD_MASTER, 2);
	assert_int_equal(t->nev, 2);
	expect_ev(t, 0, 0, PCI_MMIO_BASE, false);
	expect_ev(t, 1, 2, base2, false);
	assert_true(t->pci.bar[1].mapped);
	cf8_write(f, 1, 0, REG_COMMAND, CMD_IO | CMD_MEM | CMD_MASTER, 1);
	assert_int_equal(t->nev, 4);
	expect_ev(t, 2, 0, PCI_MMIO_BASE, true);
	expect_ev(t, 3, 2, base2, true);
	cf8_write(f, 1, 0, REG_COMMAND, CMD_MEM, 2);
	assert_int_equal(t->nev, 5);
	expect_ev(t, 4, 1, PCI_IO_BASE, false);
	/* Linux sizes with decode off: no callbacks until it is back on. */
	cf8_write(f, 1, 0, REG_COMMAND, 0, 2);
	assert_int_equal(t->nev, 7);
	for (uint32_t r = REG_BAR0; r < REG_BAR0 + 16; r += 4) {
		uint32_t v = cf8_read(f, 1, 0, r, 4);

		cf8_write(f, 1, 0, r, 0xffffffff, 4);
		cf8_write(f, 1, 0, r, v, 4);
	}
	assert_int_equal(t->nev, 7);
	cf8_write(f, 1, 0, REG_COMMAND, CMD_IO | CMD_MEM, 2);
	assert_int_equal(t->nev, 10);
	for (int i = 0; i < 3; i++)
		assert_true(t->pci.bar[i].mapped);
	expect_ev(t, 9, 2, base2, true);
}

static void test_capabilities(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_init(f, 0);
	static const uint8_t ids[] = {0x09, 0x11, 0x05, 0x09, 0x10};
	static const uint8_t lens[] = {20, 12, 10, 3, 0x90};
	static const uint8_t want[] = {0x40, 0x54, 0x60, 0x6c, 0x70};
	uint32_t p;
	int n = 0;

	assert_int_equal(cf8_read(f, 0, 0, REG_STATUS, 2) & 0x10, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(pci_device_add_cap(&t->pci, ids[i], lens[i]),
				 want[i]);
	/* 0x70 + 0x90 filled the legacy space exactly. */
	assert_int_equal(pci_device_add_cap(&t->pci, 0x09, 2), -ENOSPC);
	assert_int_equal(pci_device_add_cap(&t->pci, 0x09, 1), -EINVAL);
	assert_int_equal(pci_device_add_cap(&t->pci, 0x09, 0), -EINVAL);
	/* The device makes one byte of its first capability writable. */
	t->pci.wmask[0x42] = 0xff;
	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	assert_true(cf8_read(f, 1, 0, REG_STATUS, 2) & 0x10);
	p = cf8_read(f, 1, 0, REG_CAP_PTR, 1);
	while (p) {
		assert_true(n < 5);
		assert_int_equal(p % 4, 0);
		assert_int_equal(p, want[n]);
		assert_int_equal(cf8_read(f, 1, 0, p, 1), ids[n]);
		p = cf8_read(f, 1, 0, p + 1, 1);
		n++;
	}
	assert_int_equal(n, 5);
	/* Id and next pointer are read-only; the rest as the device says. */
	cf8_write(f, 1, 0, 0x40, 0xaaaaaaaa, 4);
	assert_int_equal(cf8_read(f, 1, 0, 0x40, 4), 0x00aa5409);
	cf8_write(f, 1, 0, 0x54, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, 0x54, 4), 0x00006011);
	cf8_write(f, 1, 0, REG_STATUS, 0xffff, 2);
	assert_true(cf8_read(f, 1, 0, REG_STATUS, 2) & 0x10);
	assert_int_equal(cf8_read(f, 1, 0, REG_CAP_PTR, 1), 0x40);
}

static void test_read_only_fields(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	cf8_write(f, 1, 0, 0x00, 0x12345678, 4);
	assert_int_equal(cf8_read(f, 1, 0, 0x00, 4), 0x10411af4);
	ecam_write(f, 1, 0, 0x00, 0, 2);
	ecam_write(f, 1, 0, 0x03, 0xff, 1);
	assert_int_equal(ecam_read(f, 1, 0, 0x00, 4), 0x10411af4);
	cf8_write(f, 1, 0, REG_CLASS_REV, 0xffffffff, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_CLASS_REV, 4), 0x02000001);
	cf8_write(f, 1, 0, REG_SUBSYS, 0, 4);
	assert_int_equal(cf8_read(f, 1, 0, REG_SUBSYS, 4), 0x00011af4);
	cf8_write(f, 1, 0, REG_HEADER_TYPE, 0x80, 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_HEADER_TYPE, 1), 0);
	/* Interrupt line is writable; the pin is not. */
	cf8_write(f, 1, 0, REG_INT_LINE, 0xff0b, 2);
	assert_int_equal(cf8_read(f, 1, 0, REG_INT_LINE, 2), 0x010b);
	/* Command: only the implemented bits stick. */
	cf8_write(f, 1, 0, REG_COMMAND, 0xffff, 2);
	assert_int_equal(cf8_read(f, 1, 0, REG_COMMAND, 2), 0x0547);
	/* Status: error bits clear on writing 1, others are read-only. */
	t->pci.cfg[REG_STATUS + 1] |= 0x20 | 0x80; /* master abort, parity */
	cf8_write(f, 1, 0, REG_COMMAND, 0x00000547, 4); /* status 0: kept */
	assert_int_equal(cf8_read(f, 1, 0, REG_STATUS, 2), 0xa000);
	cf8_write(f, 1, 0, REG_STATUS, 0x2000, 2);
	assert_int_equal(cf8_read(f, 1, 0, REG_STATUS, 2), 0x8000);
	cf8_write(f, 1, 0, REG_STATUS, 0x0010, 2); /* not writable */
	assert_int_equal(cf8_read(f, 1, 0, REG_STATUS, 2), 0x8000);
	cf8_write(f, 1, 0, REG_STATUS + 1, 0x80, 1);
	assert_int_equal(cf8_read(f, 1, 0, REG_STATUS, 2), 0);
	/* The host bridge is as read-only. */
	cf8_write(f, 0, 0, 0x00, 0, 4);
	assert_int_equal(cf8_read(f, 0, 0, 0x00, 4), 0x00081b36);
}

static void test_cfg_written(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);

	t->pci.wmask[0xffe] = 0xff;
	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	cf8_write(f, 1, 0, REG_COMMAND + 1, 0x04, 1);
	assert_int_equal(t->ncfg, 1);
	assert_int_equal(t->cfg_off, REG_COMMAND + 1);
	assert_int_equal(t->cfg_len, 1);
	ecam_write(f, 1, 0, REG_BAR0, 0xd0000000, 4);
	assert_int_equal(t->ncfg, 2);
	assert_int_equal(t->cfg_off, REG_BAR0);
	assert_int_equal(t->cfg_len, 4);
	/* Crossing the end of config space: only the bytes inside. */
	ecam_write(f, 1, 0, 0xffc, 0x1122334455667788ULL, 8);
	assert_int_equal(t->ncfg, 3);
	assert_int_equal(t->cfg_off, 0xffc);
	assert_int_equal(t->cfg_len, 4);
	assert_int_equal(t->pci.cfg[0xffe], 0x66);
	assert_int_equal(t->pci.cfg[0xfff], 0);
	/* Reads never call it. */
	(void)ecam_read(f, 1, 0, 0, 8);
	assert_int_equal(t->ncfg, 3);
}

static void test_odd_accesses(void **state)
{
	struct fixture *f = *state;
	struct tdev *t = tdev_standard(f, 0);
	uint8_t d[8];

	t->pci.cfg[0xffe] = 0xab;
	t->pci.wmask[0xffe] = 0xff;
	assert_int_equal(pci_bus_add(&f->bus, &t->pci), 1);
	/* The latch: reserved bits read 0; only dword accesses touch it. */
	pio_out(f, CF8, 0xffffffff, 4);
	assert_int_equal(pio_in(f, CF8, 4), 0x80fffffc);
	pio_out(f, CF8, cf8_addr(1, 0, 0), 4);
	pio_out(f, CF8, 0xff, 1);
	pio_out(f, CF8 + 2, 0xffff, 2);
	pio_out(f, CF8 + 3, 0xff, 1);
	pio_out(f, CF8, 0xffff, 2);
	pio_out(f, CF8 + 1, 0xffff, 2);
	pio_out(f, CF8 + 2, 0xffffffff, 4); /* straddles latch and data */
	pio_out(f, CF8, ~0ULL, 8);
	assert_int_equal(pio_in(f, CF8, 4), cf8_addr(1, 0, 0));
	assert_int_equal(pio_in(f, CF8, 1), 0xff);
	assert_int_equal(pio_in(f, CF8, 2), 0xffff);
	assert_int_equal(pio_in(f, CF8 + 2, 2), 0xffff);
	assert_int_equal(pio_in(f, CF8 + 3, 2), 0xffff);
	assert_int_equal(pio_in(f, CF8, 8), ~0ULL);
	assert_int_equal(f->cf9.n, 0);
	/* Data port at every byte offset and size. */
	assert_int_equal(pio_in(f, CFC, 4), 0x10411af4);
	assert_int_equal(pio_in(f, CFC + 1, 1), 0x1a);
	assert_int_equal(pio_in(f, CFC + 1, 2), 0x411a);
	assert_int_equal(pio_in(f, CFC + 2, 2), 0x1041);
	assert_int_equal(pio_in(f, CFC + 3, 1), 0x10);
	/* ... which may not run past 0xcff. */
	memset(d, 0, sizeof(d));
	assert_false(
		ioreg_dispatch(&f->io, IO_SPACE_PIO, CFC + 2, d, 4, false, 0));
	assert_int_equal(le(d, 4), 0xffffffff);
	/* Unaligned word write at 0xcfd lands in bytes 1 and 2. */
	pio_out(f, CF8, cf8_addr(1, 0, REG_INT_LINE), 4);
	pio_out(f, CFC + 1, 0x5507, 2); /* pin RO, min_gnt RO */
	assert_int_equal(cf8_read(f, 1, 0, REG_INT_LINE, 4),
			 0x00000100 | (PCI_INTX_GSI_BASE + 1));
	/* ECAM: unaligned, 8-byte and crossing the 4 KiB end. */
	assert_int_equal(ecam_read(f, 1, 0, 0x03, 2), 0x0710);
	assert_int_equal(ecam_read(f, 1, 0, 0x00, 8), 0x0000000710411af4ULL);
	assert_int_equal(ecam_read(f, 1, 0, 0xffe, 4), 0xffff00ab);
	assert_int_equal(ecam_read(f, 1, 0, 0xffc, 8), 0xffffffff00ab0000ULL);
	ecam_write(f, 1, 0, 0xffe, 0x11223344, 4);
	assert_int_equal(ecam_read(f, 1, 0, 0xffe, 2), 0x0044);
	assert_int_equal(ecam_read(f, 1, 1, 0x000, 2), 0xffff);
	/* Past the end of the ECAM window: not the bus's. */
	memset(d, 0, sizeof(d));
	assert_false(ioreg_dispatch(&f->io, IO_SPACE_MMIO,
				    PCI_ECAM_BASE + PCI_ECAM_SIZE - 1, d, 2,
				    false, 0));
	/* The host-side accessors take any offset and length. */
	pci_cfg_read(&f->bus, 1 << 3, 0xfffffffe, d, 8);
	assert_int_equal(le(d, 8), ~0ULL);
	pci_cfg_write(&f->bus, 1 << 3, 0xfffffffe, d, 8);
	pci_cfg_read(&f->bus, 1 << 3, 0xffe, d, 4);
	assert_int_equal(le(d, 4), 0xffff0044);
	pci_cfg_read(&f->bus, 0xff, 0, d, 4);
	assert_int_equal(le(d, 4), 0xffffffff);
	assert_int_equal(cf8_read(f, 1, 0, 0, 4), 0x10411af4);
}

static void test_cf9_goes_to_handler(void **state)
{
	struct fixture *f = *state;
	struct io_registry io;
	struct pci_bus bus;
	uint8_t d[4] = {0x06};

	pio_out(f, CF8, cf8_addr(0, 0, 0), 4);
	pio_out(f, CF9, 0x06, 1);
	assert_int_equal(f->cf9.n, 1);
	assert_int_equal(f->cf9.offset, 0);
	assert_int_equal(f->cf9.len, 1);
	assert_true(f->cf9.is_write);
	assert_int_equal(f->cf9.last_written, 0x06);
	f->cf9.value = 0x02;
	assert_int_equal(pio_in(f, CF9, 1), 0x02);
	assert_int_equal(f->cf9.n, 2);
	assert_false(f->cf9.is_write);
	/* Not a byte at 0xcf9: not the reset register. */
	pio_out(f, CF9, 0x0606, 2);
	assert_int_equal(pio_in(f, CF9, 2), 0xffff);
	assert_int_equal(f->cf9.n, 2);
	/* The latch did not see any of it. */
	assert_int_equal(pio_in(f, CF8, 4), cf8_addr(0, 0, 0));
	assert_int_equal(f->cf9.n, 2);
	/* Without a handler 0xcf9 reads all-ones and ignores writes. */
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(pci_bus_init(&bus, &io, NULL, NULL), 0);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF9, d, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF9, d, 1, false, 0));
	assert_int_equal(d[0], 0xff);
	pci_bus_destroy(&bus);
	ioreg_destroy(&io);
}

static void count_stop(void *opaque, enum vm_stop_reason reason, int code)
{
	int *resets = opaque;

	(void)code;
	if (reason == VM_STOP_RESET)
		(*resets)++;
}

/* The machine's wiring: 0xcf9 through the bus to acpi_pm resets. */
static void test_cf9_reaches_acpi_pm(void **state)
{
	struct io_registry io;
	struct pci_bus bus;
	struct acpi_pm pm;
	int resets = 0;
	struct vm_lifecycle lc = {.request_stop = count_stop,
				  .opaque = &resets};
	uint8_t d[4];

	(void)state;
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(acpi_pm_init(&pm, &io, &lc), 0);
	assert_int_equal(pci_bus_init(&bus, &io, acpi_pm_reset_control_io, &pm),
			 0);
	d[0] = 0x02;
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF9, d, 1, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF9, d, 1, false, 0));
	assert_int_equal(d[0], 0x02);
	assert_int_equal(resets, 0);
	d[0] = 0x06;
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF9, d, 1, true, 0));
	assert_int_equal(resets, 1);
	/* Config cycles around it do not reset. */
	put_le(d, cf8_addr(0, 0, 0), 4);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF8, d, 4, true, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CFC, d, 4, false, 0));
	assert_int_equal(le(d, 4), 0x00081b36);
	assert_int_equal(resets, 1);
	pci_bus_destroy(&bus);
	acpi_pm_destroy(&pm);
	ioreg_destroy(&io);
}

static void test_bus_full(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < PCI_MAX_SLOTS - 1; i++) {
		struct tdev *t = tdev_standard(f, i);
		int slot = i + 1;
		uint32_t gsi = PCI_INTX_GSI_BASE + slot % PCI_INTX_GSI_COUNT;

		assert_int_equal(pci_bus_add(&f->bus, &t->pci), slot);
		assert_int_equal(t->pci.intx_gsi, gsi);
		assert_int_equal(cf8_read(f, slot, 0, REG_INT_LINE, 1), gsi);
		assert_int_equal(t->nev, 3);
	}
	/* Slot 0 is the host bridge: the 32nd device has nowhere to go. */
	tdev_standard(f, PCI_MAX_SLOTS - 1);
	assert_int_equal(pci_bus_add(&f->bus, &f->dev[31].pci), -ENOSPC);
	assert_int_equal(f->dev[31].pci.slot, -1);
	assert_int_equal(f->dev[31].nev, 0);
	assert_int_equal(pci_bus_add(&f->bus, &f->dev[0].pci), -EEXIST);
	assert_int_equal(pci_bus_add(&f->bus, &f->bus.host_bridge), -EINVAL);
	assert_int_equal(pci_bus_add(&f->bus, NULL), -EINVAL);
	assert_int_equal(cf8_read(f, 0, 0, 0, 2), 0x1b36);
	for (int slot = 1; slot < PCI_MAX_SLOTS; slot++)
		assert_int_equal(ecam_read(f, slot, 0, 0, 2), 0x1af4);
	/* All BARs distinct and inside their windows. */
	for (int i = 0; i < PCI_MAX_SLOTS - 1; i++) {
		const struct pci_bar *b = f->dev[i].pci.bar;

		assert_true(b[0].addr >= PCI_MMIO_BASE &&
			    b[0].addr + b[0].size <= PCI_MMIO_END);
		assert_true(b[1].addr >= PCI_IO_BASE &&
			    b[1].addr + b[1].size <= PCI_IO_END);
		assert_int_equal(b[2].addr % b[2].size, 0);
		if (i)
			assert_true(b[1].addr >=
				    f->dev[i - 1].pci.bar[1].addr + 32);
	}
}

static void test_windows_exhausted(void **state)
{
	struct fixture *f = *state;
	struct tdev *big = tdev_init(f, 0), *a = tdev_init(f, 1);
	struct tdev *b = tdev_init(f, 2), *c = tdev_init(f, 3);
	struct tdev *io = tdev_init(f, 4);

	assert_int_equal(
		pci_device_set_bar(&big->pci, 0, 1ULL << 30, false, true), 0);
	assert_int_equal(pci_bus_add(&f->bus, &big->pci), -ENOSPC);
	assert_int_equal(big->pci.slot, -1);
	assert_int_equal(big->nev, 0);
	assert_int_equal(
		pci_device_set_bar(&a->pci, 0, 256 << 20, false, false), 0);
	assert_int_equal(pci_device_set_bar(&b->pci, 4, 256 << 20, false, true),
			 0);
	assert_int_equal(pci_device_set_bar(&c->pci, 0, 16, false, false), 0);
	assert_int_equal(pci_device_set_bar(&io->pci, 5, 256, true, false), 0);
	assert_int_equal(pci_bus_add(&f->bus, &a->pci), 1);
	assert_int_equal(pci_bus_add(&f->bus, &b->pci), 2);
	expect_ev(a, 0, 0, PCI_MMIO_BASE, true);
	expect_ev(b, 0, 4, PCI_MMIO_BASE + (256 << 20), true);
	assert_int_equal(pci_bus_add(&f->bus, &c->pci), -ENOSPC);
	assert_int_equal(pci_bus_add(&f->bus, &io->pci), 3);
	expect_ev(io, 0, 5, PCI_IO_BASE, true);
	assert_int_equal(cf8_read(f, 3, 0, REG_BAR0 + 20, 4), PCI_IO_BASE | 1);
}

static void test_set_bar_errors(void **state)
{
	struct fixture *f = *state;
	struct pci_device *d = &tdev_init(f, 0)->pci;

	assert_int_equal(pci_device_set_bar(d, 0, 0, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 0, 0x3000, false, false),
			 -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 0, 8, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 0, 2, true, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 0, 16, true, true), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 0, 1ULL << 32, false, false),
			 -EINVAL);
	assert_int_equal(pci_device_set_bar(d, -1, 16, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 6, 16, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 5, 16, false, true), -EINVAL);
	assert_int_equal(pci_device_set_bar(NULL, 0, 16, false, false),
			 -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 2, 4096, false, true), 0);
	assert_int_equal(pci_device_set_bar(d, 2, 4096, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 3, 4096, false, false), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 1, 4096, false, true), -EINVAL);
	assert_int_equal(pci_device_set_bar(d, 1, 4096, false, false), 0);
	assert_int_equal(pci_device_set_bar(d, 4, 1ULL << 33, false, true), 0);
	assert_int_equal(pci_bus_add(&f->bus, d), -ENOSPC);
	d->bar[4].size = 0; /* a device may change its mind before adding */
	pci_set_u32(&d->cfg[REG_BAR0 + 16], 0);
	pci_set_u32(&d->wmask[REG_BAR0 + 16], 0);
	pci_set_u32(&d->wmask[REG_BAR0 + 20], 0);
	assert_int_equal(pci_bus_add(&f->bus, d), 1);
	assert_int_equal(pci_device_set_bar(d, 0, 16, false, false), -EBUSY);
}

static void test_init_conflicts_and_destroy(void **state)
{
	struct io_registry io;
	struct pci_bus bus;
	uint8_t d[4];

	(void)state;
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(pci_bus_init(NULL, &io, NULL, NULL), -EINVAL);
	/* Someone already at 0xcf9 (e.g. an old acpi_pm): refused. */
	assert_int_equal(ioreg_register(&io, IO_SPACE_PIO, CF9, 1, rec_cf9,
					NULL, "old-cf9"),
			 0);
	assert_int_equal(pci_bus_init(&bus, &io, NULL, NULL), -EEXIST);
	assert_int_equal(ioreg_unregister(&io, IO_SPACE_PIO, CF9), 0);
	/* ECAM taken: the port range is not left behind. */
	assert_int_equal(ioreg_register(&io, IO_SPACE_MMIO,
					PCI_ECAM_BASE + 4096, 16, rec_cf9, NULL,
					"in-ecam"),
			 0);
	assert_int_equal(pci_bus_init(&bus, &io, NULL, NULL), -EEXIST);
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, CF8, d, 4, false, 0));
	assert_int_equal(
		ioreg_unregister(&io, IO_SPACE_MMIO, PCI_ECAM_BASE + 4096), 0);
	/* Up, then down: both ranges gone. */
	assert_int_equal(pci_bus_init(&bus, &io, NULL, NULL), 0);
	assert_true(ioreg_dispatch(&io, IO_SPACE_PIO, CF8, d, 4, false, 0));
	assert_true(ioreg_dispatch(&io, IO_SPACE_MMIO, PCI_ECAM_BASE, d, 4,
				   false, 0));
	pci_bus_destroy(&bus);
	assert_false(ioreg_dispatch(&io, IO_SPACE_PIO, CF8, d, 4, false, 0));
	assert_false(ioreg_dispatch(&io, IO_SPACE_MMIO, PCI_ECAM_BASE, d, 4,
				    false, 0));
	ioreg_destroy(&io);
}

/* Callbacks alternate map/unmap per BAR and agree with bar->mapped. */
static void check_events_consistent(const struct tdev *t)
{
	bool mapped[PCI_NUM_BARS] = {false};
	uint64_t addr[PCI_NUM_BARS] = {0};

	assert_true(t->nev <= MAX_EV);
	for (int i = 0; i < t->nev; i++) {
		const struct ev *e = &t->ev[i];

		assert_true(e->bar >= 0 && e->bar < PCI_NUM_BARS);
		assert_true(t->pci.bar[e->bar].size != 0);
		assert_int_not_equal(e->mapped, mapped[e->bar]);
		if (!e->mapped)
			assert_int_equal(e->addr, addr[e->bar]);
		mapped[e->bar] = e->mapped;
		addr[e->bar] = e->addr;
	}
	for (int b = 0; b < PCI_NUM_BARS; b++) {
		const struct pci_bar *bar = &t->pci.bar[b];

		assert_int_equal(bar->mapped, mapped[b]);
		if (!bar->mapped)
			continue;
		assert_int_equal(bar->addr, addr[b]);
		assert_int_not_equal(bar->addr, 0);
		assert_int_equal(bar->addr % bar->size, 0);
	}
}

static void storm_access(struct fixture *f, unsigned int *seed)
{
	static const uint32_t lens[] = {1, 2, 4, 8};
	uint32_t len = lens[rand_r(seed) % 4];
	bool is_write = rand_r(seed) % 2;
	uint8_t d[8];
	uint64_t v = (uint64_t)rand_r(seed) << 33 ^ (uint64_t)rand_r(seed) << 2;

	if (rand_r(seed) % 4 == 0)
		v = ~0ULL;
	put_le(d, v, 8);
	if (rand_r(seed) % 8 == 0) {
		/* Turn decode on or off somewhere. */
		ecam_write(f, 1 + rand_r(seed) % 2, 0, REG_COMMAND,
			   rand_r(seed) % 4, 1);
		return;
	}
	if (rand_r(seed) % 2) {
		uint16_t port = (uint16_t)(0xcf4 + rand_r(seed) % 16);

		if (port == CF8 && rand_r(seed) % 2) {
			put_le(d,
			       cf8_addr(rand_r(seed) % 3, rand_r(seed) % 2,
					rand_r(seed) % 256),
			       4);
			len = 4;
			is_write = true;
		}
		ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, len, is_write, 0);
	} else {
		uint64_t off = rand_r(seed) % 2 ?
				       ecam_off(rand_r(seed) % 3, 0,
						rand_r(seed) % 0x48) :
				       (uint64_t)rand_r(seed) % PCI_ECAM_SIZE;

		if (rand_r(seed) % 16 == 0)
			off = (off & ~0xfffULL) | (0xff8 + rand_r(seed) % 8);
		ioreg_dispatch(&f->io, IO_SPACE_MMIO, PCI_ECAM_BASE + off, d,
			       len, is_write, 0);
	}
}

static void test_access_storm(void **state)
{
	struct fixture *f = *state;
	unsigned int seed = 12345;
	int total = 0;

	for (int i = 0; i < 2; i++) {
		struct tdev *t = tdev_standard(f, i);

		assert_int_equal(pci_device_add_cap(&t->pci, 0x11, 12), 0x40);
		assert_int_equal(pci_bus_add(&f->bus, &t->pci), i + 1);
	}
	for (int round = 0; round < 200; round++) {
		/* Each round starts with decode off: nothing mapped. */
		for (int i = 0; i < 2; i++) {
			cf8_write(f, i + 1, 0, REG_COMMAND, 0, 2);
			f->dev[i].nev = 0;
		}
		for (int n = 0; n < 100; n++)
			storm_access(f, &seed);
		for (int i = 0; i < 2; i++) {
			check_events_consistent(&f->dev[i]);
			total += f->dev[i].nev;
		}
	}
	assert_true(total > 500); /* the storm did move BARs around */
	assert_int_equal(cf8_read(f, 0, 0, 0, 4), 0x00081b36);
	assert_int_equal(cf8_read(f, 1, 0, 0, 4), 0x10411af4);
	assert_int_equal(ecam_read(f, 2, 0, 0, 4), 0x10411af4);
	assert_int_equal(cf8_read(f, 2, 0, REG_CAP_PTR, 1), 0x40);
	assert_int_equal(cf8_read(f, 2, 0, REG_INT_PIN, 1), 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_host_bridge_ids),
		T(test_added_device_ids),
		T(test_absent_reads_ones),
		T(test_ecam_equals_cf8),
		T(test_bar_sizing_32bit),
		T(test_bar_sizing_64bit),
		T(test_bar_sizing_io),
		T(test_bar_relocation),
		T(test_command_decode),
		T(test_capabilities),
		T(test_read_only_fields),
		T(test_cfg_written),
		T(test_odd_accesses),
		T(test_cf9_goes_to_handler),
		cmocka_unit_test(test_cf9_reaches_acpi_pm),
		T(test_bus_full),
		T(test_windows_exhausted),
		T(test_set_bar_errors),
		cmocka_unit_test(test_init_conflicts_and_destroy),
		T(test_access_storm),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
