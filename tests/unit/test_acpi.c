/*
 * tests/unit/test_acpi.c - the ACPI table builder: checksums, pointers
 * between tables (guest addresses translated back to buffer offsets), the
 * FADT's PM and reset registers, the MADT's CPUs, IOAPIC and overrides,
 * the DSDT's \_S5_, the MCFG's ECAM window (or its absence), and the error
 * cases (-ENOSPC without writing past the
 * buffer, -EINVAL for bad configurations).
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

#include "machine/acpi.h"
#include "machine/layout.h"
#include "machine/pci.h"

#define BUF_LEN 65536

/* FADT offsets (ACPI 6 layout). */
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_SMI_CMD 48
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM_TMR_BLK 76
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_CENTURY 108
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172

#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_F_HW_REDUCED (1u << 20)
#define BOOT_ARCH_8042 (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)
#define BOOT_ARCH_MSI_NOT_SUPPORTED (1u << 3)

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const uint8_t *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static struct acpi_config default_config(unsigned int ncpus)
{
	return (struct acpi_config){
		.ncpus = ncpus,
		.base = LAYOUT_ACPI_BASE,
		.ioapic_addr = LAYOUT_IOAPIC_ADDR,
		.ioapic_id = 0,
		.lapic_addr = LAYOUT_LAPIC_ADDR,
		.pm1a_evt_port = PORT_ACPI_PM1A_EVT,
		.pm1a_cnt_port = PORT_ACPI_PM1A_CNT,
		.reset_port = PORT_RESET_CONTROL,
		.reset_value = 0x06,
		.sci_irq = ACPI_SCI_IRQ,
		.ecam_base = PCI_ECAM_BASE,
		.ecam_bus_end = 0,
	};
}

/* Turn a guest address into an offset in @buf, checking it is inside. */
static size_t to_off(const struct acpi_config *cfg, uint64_t addr, size_t total)
{
	assert_true(addr >= cfg->base);
	assert_true(addr - cfg->base < total);
	return (size_t)(addr - cfg->base);
}

/* A table at @off: signature, length inside the total, checksum 0. */
static const uint8_t *check_table(const uint8_t *buf, size_t off, size_t total,
				  const char *sig)
{
	const uint8_t *t = buf + off;
	uint32_t len;

	assert_true(off + 36 <= total);
	assert_memory_equal(t, sig, 4);
	len = get32(t + 4);
	assert_true(len >= 36);
	assert_true(off + len <= total);
	assert_int_equal(acpi_checksum(t, len), 0);
	assert_memory_equal(t + 10, "DVMM  ", 6);
	assert_memory_equal(t + 16, "DVMMACPI", 8);
	return t;
}

static const uint8_t *check_rsdp(const uint8_t *buf,
				 const struct acpi_layout *l)
{
	const uint8_t *r = buf + l->rsdp;

	assert_int_equal(l->rsdp, 0);
	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(acpi_checksum(r, 20), 0);
	assert_int_equal(acpi_checksum(r, 36), 0);
	assert_int_equal(r[15], 2);
	assert_int_equal(get32(r + 20), 36);
	assert_memory_equal(r + 9, "DVMM  ", 6);
	return r;
}

static void check_xsdt(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *r = check_rsdp(buf, l);
	size_t xsdt = to_off(cfg, get64(r + 24), l->total);
	const uint8_t *t = check_table(buf, xsdt, l->total, "XSDT");
	uint32_t len = get32(t + 4);
	bool saw_fadt = false, saw_madt = false, saw_mcfg = false;

	assert_int_equal(xsdt, l->xsdt);
	assert_int_equal((len - 36) % 8, 0);
	for (uint32_t e = 36; e < len; e += 8) {
		size_t off = to_off(cfg, get64(t + e), l->total);

		if (!memcmp(buf + off, "FACP", 4)) {
			assert_int_equal(off, l->fadt);
			saw_fadt = true;
		} else if (!memcmp(buf + off, "APIC", 4)) {
			assert_int_equal(off, l->madt);
			saw_madt = true;
		} else if (!memcmp(buf + off, "MCFG", 4)) {
			assert_false(saw_mcfg);
			assert_int_equal(off, l->mcfg);
			saw_mcfg = true;
		} else {
			fail_msg("unexpected XSDT entry at %zu", off);
		}
	}
	assert_true(saw_fadt);
	assert_true(saw_madt);
	assert_int_equal(saw_mcfg, cfg->ecam_base != 0);
	assert_int_equal(len, 36 + 8 * (cfg->ecam_base ? 3 : 2));
}

static void check_gas_io(const uint8_t *g, uint8_t bit_width, uint64_t addr)
{
	assert_int_equal(g[0], 1); /* SystemIO */
	assert_int_equal(g[1], bit_width);
	assert_int_equal(g[2], 0);
	assert_int_equal(get64(g + 4), addr);
}

static void check_fadt(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *f = check_table(buf, l->fadt, l->total, "FACP");
	uint64_t dsdt = cfg->base + l->dsdt;
	uint16_t boot_arch = get16(f + FADT_IAPC_BOOT_ARCH);
	uint32_t flags = get32(f + FADT_FLAGS);

	assert_int_equal(get32(f + 4), 276);
	assert_int_equal(f[8], 6);
	assert_int_equal(get64(f + FADT_X_DSDT), dsdt);
	assert_int_equal(get32(f + FADT_DSDT), dsdt <= UINT32_MAX ? dsdt : 0);
	assert_int_equal(get16(f + FADT_SCI_INT), cfg->sci_irq);
	assert_int_equal(get32(f + FADT_SMI_CMD), 0);
	assert_int_equal(get32(f + FADT_PM1A_EVT_BLK), cfg->pm1a_evt_port);
	assert_int_equal(get32(f + FADT_PM1A_CNT_BLK), cfg->pm1a_cnt_port);
	assert_int_equal(f[FADT_PM1_EVT_LEN], 4);
	assert_int_equal(f[FADT_PM1_CNT_LEN], 2);
	assert_int_equal(get32(f + FADT_PM_TMR_BLK), 0);
	check_gas_io(f + FADT_X_PM1A_EVT_BLK, 32, cfg->pm1a_evt_port);
	check_gas_io(f + FADT_X_PM1A_CNT_BLK, 16, cfg->pm1a_cnt_port);
	check_gas_io(f + FADT_RESET_REG, 8, cfg->reset_port);
	assert_int_equal(f[FADT_RESET_VALUE], cfg->reset_value);
	assert_int_equal(f[FADT_CENTURY], 0x32);
	assert_true(flags & FADT_F_RESET_REG_SUP);
	assert_false(flags & FADT_F_HW_REDUCED);
	assert_true(boot_arch & BOOT_ARCH_8042);
	assert_true(boot_arch & BOOT_ARCH_VGA_NOT_PRESENT);
	assert_false(boot_arch & BOOT_ARCH_MSI_NOT_SUPPORTED);
}

/* The FACS, found through the FADT: 64-byte aligned in guest memory. */
static void check_facs(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *f = buf + l->fadt;
	uint64_t facs32 = get32(f + FADT_FIRMWARE_CTRL);
	uint64_t facs64 = get64(f + FADT_X_FIRMWARE_CTRL);
	uint64_t facs = facs32 ? facs32 : facs64;
	size_t off;

	assert_true(facs32 == 0 || facs64 == 0); /* only one may be set */
	assert_int_not_equal(facs, 0);
	assert_int_equal(facs % 64, 0);
	off = to_off(cfg, facs, l->total);
	assert_true(off + 64 <= l->total);
	assert_memory_equal(buf + off, "FACS", 4);
	assert_int_equal(get32(buf + off + 4), 64);
}

static void check_dsdt(const uint8_t *buf, const struct acpi_layout *l)
{
	const uint8_t *t = check_table(buf, l->dsdt, l->total, "DSDT");
	uint32_t len = get32(t + 4);
	/* NameOp _S5_ PackageOp PkgLength NumElements(4) Byte 5, Byte 5 */
	static const uint8_t s5[] = {0x08, '_', 'S', '5', '_', 0x12};
	const uint8_t *p = memmem(t + 36, len - 36, s5, sizeof(s5));

	assert_non_null(p);
	p += sizeof(s5);
	assert_true(p + 6 <= t + len);
	assert_int_equal(p[1], 4);    /* four elements */
	assert_int_equal(p[2], 0x0a); /* BytePrefix */
	assert_int_equal(p[3], 5);    /* SLP_TYPa = 5 */
	assert_int_equal(p[4], 0x0a);
	assert_int_equal(p[5], 5); /* SLP_TYPb = 5 */
}

struct madt_counts {
	unsigned int lapics, ioapics, nmis;
	bool iso_timer, iso_sci;
};

static void check_madt_entry(const uint8_t *e, const struct acpi_config *cfg,
			     struct madt_counts *c)
{
	switch (e[0]) {
	case 0: /* Processor Local APIC */
		assert_int_equal(e[1], 8);
		assert_int_equal(e[2], c->lapics); /* UID */
		assert_int_equal(e[3], c->lapics); /* APIC id */
		assert_int_equal(get32(e + 4) & 1, 1);
		c->lapics++;
		break;
	case 1: /* IO APIC */
		assert_int_equal(e[1], 12);
		assert_int_equal(e[2], cfg->ioapic_id);
		assert_int_equal(get32(e + 4), cfg->ioapic_addr);
		assert_int_equal(get32(e + 8), 0);
		c->ioapics++;
		break;
	case 2: /* Interrupt Source Override */
		assert_int_equal(e[1], 10);
		assert_int_equal(e[2], 0);
		if (e[3] == 0) {
			assert_int_equal(get32(e + 4), 2);
			assert_int_equal(get16(e + 8), 0);
			c->iso_timer = true;
		} else {
			assert_int_equal(e[3], cfg->sci_irq);
			assert_int_equal(get32(e + 4), cfg->sci_irq);
			/* active high (01), level (11 << 2) */
			assert_int_equal(get16(e + 8), 0x000d);
			c->iso_sci = true;
		}
		break;
	case 4: /* Local APIC NMI */
		assert_int_equal(e[1], 6);
		assert_int_equal(e[2], 0xff);
		assert_int_equal(e[5], 1); /* LINT1 */
		c->nmis++;
		break;
	default:
		fail_msg("unexpected MADT entry type %u", e[0]);
	}
}

static void check_madt(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *t = check_table(buf, l->madt, l->total, "APIC");
	uint32_t len = get32(t + 4), off = 44;
	struct madt_counts c = {0};

	assert_int_equal(get32(t + 36), cfg->lapic_addr);
	assert_int_equal(get32(t + 40) & 1, 1); /* PCAT_COMPAT */
	while (off < len) {
		assert_true(off + 2 <= len);
		assert_true(t[off + 1] >= 2);
		assert_true(off + t[off + 1] <= len);
		check_madt_entry(t + off, cfg, &c);
		off += t[off + 1];
	}
	assert_int_equal(off, len);
	assert_int_equal(c.lapics, cfg->ncpus);
	assert_int_equal(c.ioapics, 1);
	assert_int_equal(c.nmis, 1);
	assert_true(c.iso_timer);
	assert_true(c.iso_sci);
}

/* MCFG: one allocation (base, segment 0, buses 0..end), or none. */
static void check_mcfg(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *t, *a;
	static const uint8_t zero[8];

	if (!cfg->ecam_base) {
		assert_int_equal(l->mcfg, 0);
		assert_null(memmem(buf, l->total, "MCFG", 4));
		return;
	}
	t = check_table(buf, l->mcfg, l->total, "MCFG");
	assert_int_equal(get32(t + 4), 60);
	assert_int_equal(t[8], 1);
	assert_memory_equal(t + 36, zero, 8); /* reserved */
	a = t + 44;
	assert_int_equal(get64(a), cfg->ecam_base);
	assert_int_equal(get16(a + 8), 0);  /* segment */
	assert_int_equal(a[10], 0);         /* start bus */
	assert_int_equal(a[11], cfg->ecam_bus_end);
	assert_memory_equal(a + 12, zero, 4); /* reserved */
}

static void check_placement(const struct acpi_layout *l)
{
	size_t offs[] = {l->xsdt, l->fadt, l->dsdt, l->madt, l->mcfg};
	size_t n = l->mcfg ? 5 : 4;

	for (size_t i = 0; i < n; i++) {
		assert_int_equal(offs[i] % 8, 0);
		if (i)
			assert_true(offs[i] > offs[i - 1]);
	}
	assert_true(offs[n - 1] < l->total);
}

static void build_and_check(const struct acpi_config *cfg)
{
	uint8_t *buf = calloc(1, BUF_LEN);
	struct acpi_layout l;
	ssize_t n;

	assert_non_null(buf);
	n = acpi_build(cfg, buf, BUF_LEN, &l);
	assert_true(n > 0);
	assert_int_equal((size_t)n, l.total);
	check_placement(&l);
	check_xsdt(buf, cfg, &l);
	check_fadt(buf, cfg, &l);
	check_facs(buf, cfg, &l);
	check_dsdt(buf, &l);
	check_madt(buf, cfg, &l);
	check_mcfg(buf, cfg, &l);
	free(buf);
}

static void test_build_cpu_counts(void **state)
{
	static const unsigned int counts[] = {1, 2, 4, 64, ACPI_MAX_CPUS};

	(void)state;
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct acpi_config cfg = default_config(counts[i]);

		build_and_check(&cfg);
	}
}

static void test_fits_bios_area(void **state)
{
	struct acpi_config cfg = default_config(ACPI_MAX_CPUS);
	uint8_t *buf = malloc(LAYOUT_ACPI_MAX);
	struct acpi_layout l;

	(void)state;
	assert_non_null(buf);
	assert_true(acpi_build(&cfg, buf, LAYOUT_ACPI_MAX, &l) > 0);
	assert_true(l.total <= LAYOUT_ACPI_MAX);
	free(buf);
}

static void test_other_bases(void **state)
{
	/* Not 64-aligned: the FACS must still be. Above 4 GiB: 64-bit only. */
	static const uint64_t bases[] = {0xe0010, 0xe0030, 0x100000000ULL};

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		struct acpi_config cfg = default_config(4);

		cfg.base = bases[i];
		build_and_check(&cfg);
	}
}

static void test_other_config_values(void **state)
{
	struct acpi_config cfg = default_config(2);

	(void)state;
	cfg.ioapic_id = 2;
	cfg.ioapic_addr = 0xfec10000;
	cfg.lapic_addr = 0xfee10000;
	cfg.sci_irq = 11;
	cfg.pm1a_evt_port = 0xb000;
	cfg.pm1a_cnt_port = 0xb004;
	cfg.reset_value = 0x0e;
	build_and_check(&cfg);
}

static void test_no_reset_register(void **state)
{
	struct acpi_config cfg = default_config(1);
	uint8_t buf[4096];
	struct acpi_layout l;

	(void)state;
	cfg.reset_port = 0;
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	assert_false(get32(buf + l.fadt + FADT_FLAGS) & FADT_F_RESET_REG_SUP);
	assert_int_equal(acpi_checksum(buf + l.fadt, 276), 0);
}

static void test_mcfg(void **state)
{
	struct acpi_config cfg = default_config(2);
	uint8_t buf[4096];
	struct acpi_layout l;
	ssize_t with, without;

	(void)state;
	with = acpi_build(&cfg, buf, sizeof(buf), &l);
	assert_true(with > 0);
	assert_int_equal((size_t)with, l.mcfg + 60); /* the last table */
	/* Other bases and bus ranges. */
	cfg.ecam_base = 0xb0000000;
	cfg.ecam_bus_end = 255;
	build_and_check(&cfg);
	cfg.ecam_base = 0x4000000000ULL;
	cfg.ecam_bus_end = 15;
	build_and_check(&cfg);
	/* No ECAM: no MCFG, two XSDT entries, 64 bytes fewer. */
	cfg.ecam_base = 0;
	build_and_check(&cfg);
	without = acpi_build(&cfg, buf, sizeof(buf), &l);
	assert_true(without > 0);
	assert_int_equal(l.mcfg, 0);
	assert_int_equal((size_t)without, l.madt + get32(buf + l.madt + 4));
	assert_int_equal(get32(buf + l.xsdt + 4), 36 + 16);
}

static void test_enospc_no_overrun(void **state)
{
	struct acpi_config cfg = default_config(4);
	struct acpi_layout l;
	uint8_t probe[4096];
	ssize_t total;

	(void)state;
	total = acpi_build(&cfg, probe, sizeof(probe), &l);
	assert_true(total > 0);
	for (size_t len = 0; len < (size_t)total; len++) {
		/* The canary sits right after the buffer's end. */
		uint8_t *buf = malloc(len + 64);

		assert_non_null(buf);
		memset(buf, 0xa5, len + 64);
		assert_int_equal(acpi_build(&cfg, buf, len, &l), -ENOSPC);
		for (size_t i = 0; i < len + 64; i++)
			assert_int_equal(buf[i], 0xa5);
		free(buf);
	}
	/* Exactly enough is enough. */
	{
		uint8_t *buf = malloc((size_t)total + 64);

		assert_non_null(buf);
		memset(buf, 0xa5, (size_t)total + 64);
		assert_int_equal(acpi_build(&cfg, buf, (size_t)total, &l),
				 total);
		for (size_t i = (size_t)total; i < (size_t)total + 64; i++)
			assert_int_equal(buf[i], 0xa5);
		free(buf);
	}
}

static void test_einval(void **state)
{
	struct acpi_config cfg;
	uint8_t buf[4096];

	(void)state;
	cfg = default_config(0);
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(ACPI_MAX_CPUS + 1);
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(1);
	assert_int_equal(acpi_build(NULL, buf, sizeof(buf), NULL), -EINVAL);
	assert_int_equal(acpi_build(&cfg, NULL, sizeof(buf), NULL), -EINVAL);
	cfg.base = LAYOUT_ACPI_BASE + 8; /* RSDP must be 16-byte aligned */
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(1);
	cfg.pm1a_cnt_port = 0;
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(1);
	cfg.sci_irq = 0;
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(1);
	cfg.base = UINT64_MAX - 15; /* tables would wrap */
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg = default_config(1);
	cfg.ecam_base = PCI_ECAM_BASE + 0x80000; /* not bus-aligned */
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
	cfg.ecam_base = 0xffffffffffe00000ULL; /* bus 0 only: fits */
	assert_true(acpi_build(&cfg, buf, sizeof(buf), NULL) > 0);
	cfg.ecam_bus_end = 1; /* bus 1 would end at 2^64 */
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), NULL), -EINVAL);
}

static void test_deterministic(void **state)
{
	struct acpi_config cfg = default_config(8);
	static uint8_t a[4096], b[4096];
	ssize_t na, nb;

	(void)state;
	memset(b, 0xee, sizeof(b));
	na = acpi_build(&cfg, a, sizeof(a), NULL);
	nb = acpi_build(&cfg, b, sizeof(b), NULL);
	assert_true(na > 0);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, (size_t)na);
}

static void test_checksum(void **state)
{
	const uint8_t p[] = {0x01, 0xff, 0x10, 0xf0};

	(void)state;
	assert_int_equal(acpi_checksum(p, 0), 0);
	assert_int_equal(acpi_checksum(p, 1), 1);
	assert_int_equal(acpi_checksum(p, 2), 0);
	assert_int_equal(acpi_checksum(p, 4), 0);
	assert_int_equal(acpi_checksum(p + 2, 1), 0x10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_cpu_counts),
		cmocka_unit_test(test_fits_bios_area),
		cmocka_unit_test(test_other_bases),
		cmocka_unit_test(test_other_config_values),
		cmocka_unit_test(test_no_reset_register),
		cmocka_unit_test(test_mcfg),
		cmocka_unit_test(test_enospc_no_overrun),
		cmocka_unit_test(test_einval),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_checksum),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
