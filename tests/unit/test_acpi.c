/*
 * tests/unit/test_acpi.c - the ACPI table builder: checksums, pointers
 * between tables (guest addresses translated back to buffer offsets), the
 * FADT's PM and reset registers, the MADT's CPUs, IOAPIC and overrides,
 * the DSDT (walked as AML: \_S5_, the PCI0 host bridge's ids, _CRS and
 * _PRT, the ECAM reservation), the MCFG's ECAM window (or its absence),
 * the error cases (-ENOSPC without writing past the buffer, -EINVAL for bad
 * configurations), and the AML encoder in machine/aml.c.
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

#include "core/ioreg.h"
#include "machine/acpi.h"
#include "machine/aml.h"
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

/*
 * A minimal AML reader for the DSDT, which holds only Name, Scope and
 * Device terms: it checks that every PkgLength closes exactly where its
 * object ends and finds named objects by their absolute path, written as
 * concatenated 4-character segments ("_SB_PCI0_PRT").
 */
#define AML_PATH_MAX 64

static uint32_t read_pkglength(const uint8_t *p, const uint8_t *end, size_t *n)
{
	unsigned int follow;
	uint32_t v;

	assert_true(p < end);
	follow = p[0] >> 6;
	assert_true(p + 1 + follow <= end);
	*n = follow + 1;
	if (!follow)
		return p[0] & 0x3f;
	assert_int_equal(p[0] & 0x30, 0); /* reserved bits */
	v = p[0] & 0x0f;
	for (unsigned int i = 0; i < follow; i++)
		v |= (uint32_t)p[1 + i] << (4 + 8 * i);
	return v;
}

/* An integer object at *@p; advances past it. */
static uint64_t read_integer(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *q = *p;
	unsigned int n = 0;
	uint64_t v = 0;

	assert_true(q < end);
	switch (q[0]) {
	case 0x00: /* Zero */
	case 0x01: /* One */
		*p = q + 1;
		return q[0];
	case 0x0a:
		n = 1;
		break;
	case 0x0b:
		n = 2;
		break;
	case 0x0c:
		n = 4;
		break;
	case 0x0e:
		n = 8;
		break;
	default:
		fail_msg("not an integer: opcode %#x", q[0]);
	}
	assert_true(q + 1 + n <= end);
	for (unsigned int i = 0; i < n; i++)
		v |= (uint64_t)q[1 + i] << (8 * i);
	*p = q + 1 + n;
	return v;
}

/* The end of the PkgLength object whose opcode is at @p. */
static const uint8_t *pkg_end(const uint8_t *p, const uint8_t *end)
{
	size_t n;
	uint32_t len = read_pkglength(p + 1, end, &n);

	assert_true(len >= n);
	assert_true(p + 1 + len <= end);
	return p + 1 + len;
}

static const uint8_t *skip_data(const uint8_t *p, const uint8_t *end)
{
	assert_true(p < end);
	switch (p[0]) {
	case 0x0d: /* String */
		p = memchr(p, 0, (size_t)(end - p));
		assert_non_null(p);
		return p + 1;
	case 0x11: /* Buffer */
	case 0x12: /* Package */
		return pkg_end(p, end);
	default:
		read_integer(&p, end);
		return p;
	}
}

/* A NameString at *@p, relative to @scope, into @out. */
static void read_namestring(const uint8_t **p, const uint8_t *end,
			    const char *scope, char *out)
{
	const uint8_t *q = *p;
	unsigned int nsegs = 1;
	size_t len;

	strcpy(out, scope);
	if (q < end && *q == '\\') {
		out[0] = 0;
		q++;
	}
	while (q < end && *q == '^') {
		len = strlen(out);
		assert_true(len >= 4);
		out[len - 4] = 0;
		q++;
	}
	assert_true(q < end);
	if (*q == 0x00) { /* NullName */
		nsegs = 0;
		q++;
	} else if (*q == 0x2e) { /* DualNamePrefix */
		nsegs = 2;
		q++;
	} else if (*q == 0x2f) { /* MultiNamePrefix */
		assert_true(q + 1 < end);
		nsegs = q[1];
		q += 2;
	}
	assert_true(q + 4 * nsegs <= end);
	assert_true(strlen(out) + 4 * nsegs < AML_PATH_MAX);
	strncat(out, (const char *)q, 4 * nsegs);
	*p = q + 4 * nsegs;
}

struct aml_search {
	const char *want;
	const uint8_t *found; /* a Name's value, or a Device's opcode */
	unsigned int matches;
	unsigned int devices;
};

static void walk_terms(const uint8_t *p, const uint8_t *end, const char *scope,
		       struct aml_search *s)
{
	char path[AML_PATH_MAX];

	while (p < end) {
		const uint8_t *term = p, *obj_end;
		bool device = p[0] == 0x5b && p + 1 < end && p[1] == 0x82;
		size_t n;

		if (p[0] == 0x08) { /* Name */
			p++;
			read_namestring(&p, end, scope, path);
			if (!strcmp(path, s->want)) {
				s->found = p;
				s->matches++;
			}
			p = skip_data(p, end);
			continue;
		}
		assert_true(p[0] == 0x10 || device); /* Scope, Device */
		p += device ? 2 : 1;
		obj_end = p + read_pkglength(p, end, &n);
		assert_true(obj_end <= end);
		p += n;
		read_namestring(&p, obj_end, scope, path);
		if (device && !strcmp(path, s->want)) {
			s->found = term;
			s->matches++;
		}
		s->devices += device;
		walk_terms(p, obj_end, path, s);
		p = obj_end;
	}
	assert_true(p == end);
}

/* The object at @path in the DSDT at @t, or NULL; at most one. */
static const uint8_t *dsdt_find(const uint8_t *t, const char *path,
				unsigned int *devices)
{
	struct aml_search s = {.want = path};

	walk_terms(t + 36, t + get32(t + 4), "", &s);
	assert_true(s.matches <= 1);
	if (devices)
		*devices = s.devices;
	return s.found;
}

static uint64_t dsdt_integer(const uint8_t *t, const char *path)
{
	const uint8_t *p = dsdt_find(t, path, NULL);

	assert_non_null(p);
	return read_integer(&p, t + get32(t + 4));
}

/* A Package's elements: returns the first, sets *@count and *@end. */
static const uint8_t *package_elements(const uint8_t *p, const uint8_t *limit,
				       unsigned int *count, const uint8_t **end)
{
	size_t n;

	assert_int_equal(p[0], 0x12);
	*end = pkg_end(p, limit);
	read_pkglength(p + 1, limit, &n);
	*count = p[1 + n];
	return p + 2 + n;
}

/* The descriptors of the ResourceTemplate at @p; sets *@len. */
static const uint8_t *restemplate(const uint8_t *p, const uint8_t *limit,
				  size_t *len)
{
	const uint8_t *end = pkg_end(p, limit), *q;
	size_t n;

	assert_int_equal(p[0], 0x11);
	read_pkglength(p + 1, limit, &n);
	q = p + 1 + n;
	*len = (size_t)read_integer(&q, end); /* BufferSize */
	assert_int_equal(*len, end - q);
	assert_true(*len >= 2);
	assert_int_equal(q[*len - 2], 0x79); /* End Tag, checksum 0 */
	assert_int_equal(q[*len - 1], 0x00);
	return q;
}

struct addr_desc {
	uint8_t tag, space, general, specific;
	uint64_t gran, min, max, tra, len;
};

/* The Word/DWord/QWord Address Space Descriptor at *@p; advances. */
static void read_addr_desc(const uint8_t **p, struct addr_desc *d)
{
	const uint8_t *q = *p;
	unsigned int w = q[0] == 0x88 ? 2 : q[0] == 0x87 ? 4 : 8;
	uint64_t *f[] = {&d->gran, &d->min, &d->max, &d->tra, &d->len};

	assert_true(q[0] == 0x88 || q[0] == 0x87 || q[0] == 0x8a);
	assert_int_equal(get16(q + 1), 3 + 5 * w);
	d->tag = q[0];
	d->space = q[3];
	d->general = q[4];
	d->specific = q[5];
	for (unsigned int i = 0; i < 5; i++) {
		*f[i] = 0;
		for (unsigned int b = 0; b < w; b++)
			*f[i] |= (uint64_t)q[6 + i * w + b] << (8 * b);
	}
	*p = q + 6 + 5 * w;
}

/* Producer (or consumer) of [min, max], MinFixed, MaxFixed, PosDecode. */
static void check_addr(const struct addr_desc *d, uint8_t space, bool producer,
		       uint8_t specific, uint64_t min, uint64_t max)
{
	assert_int_equal(d->space, space);
	assert_int_equal(d->general, producer ? 0x0c : 0x0d);
	assert_int_equal(d->specific, specific);
	assert_int_equal(d->gran, 0);
	assert_int_equal(d->min, min);
	assert_int_equal(d->max, max);
	assert_int_equal(d->tra, 0);
	assert_int_equal(d->len, max - min + 1);
	if (max > UINT32_MAX)
		assert_int_equal(d->tag, 0x8a); /* QWord */
	else
		assert_int_equal(d->tag, space == 0 ? 0x87 : 0x88);
}

static void check_pci0_crs(const uint8_t *t, const struct acpi_config *cfg)
{
	/* IO (Decode16, 0xcf8, 0xcf8, 1, 8) */
	static const uint8_t io[] = {0x47, 0x01, 0xf8, 0x0c,
				     0xf8, 0x0c, 0x01, 0x08};
	const uint8_t *v = dsdt_find(t, "_SB_PCI0_CRS", NULL), *r, *q;
	struct addr_desc d;
	size_t len;

	assert_non_null(v);
	q = r = restemplate(v, t + get32(t + 4), &len);
	read_addr_desc(&q, &d); /* WordBusNumber */
	check_addr(&d, 2, true, 0, 0, cfg->ecam_bus_end);
	assert_memory_equal(q, io, sizeof(io));
	q += sizeof(io);
	read_addr_desc(&q, &d); /* WordIO, EntireRange */
	check_addr(&d, 1, true, 0x03, 0, 0xcf7);
	read_addr_desc(&q, &d);
	check_addr(&d, 1, true, 0x03, 0xd00, 0xffff);
	read_addr_desc(&q, &d); /* DWordMemory, non-cacheable, read-write */
	check_addr(&d, 0, true, 0x01, PCI_MMIO_BASE, PCI_MMIO_END - 1);
	assert_true(q == r + len - 2); /* then the End Tag */
}

/*
 * _PRT: every slot but 0, every pin, as { slot << 16 | 0xffff, pin, 0, GSI },
 * pin A on the GSI that pci_bus_add gives the slot.
 */
static void check_pci0_prt(const uint8_t *t)
{
	const uint8_t *limit = t + get32(t + 4), *end;
	const uint8_t *v = dsdt_find(t, "_SB_PCI0_PRT", NULL), *e;
	unsigned int count, n = 0;

	assert_non_null(v);
	e = package_elements(v, limit, &count, &end);
	assert_int_equal(count, 31 * 4);
	for (unsigned int slot = 1; slot < 32; slot++) {
		for (unsigned int pin = 0; pin < 4; pin++, n++) {
			const uint8_t *ee, *x;
			unsigned int c;

			x = package_elements(e, end, &c, &ee);
			assert_int_equal(c, 4);
			assert_int_equal(read_integer(&x, ee),
					 slot << 16 | 0xffff);
			assert_int_equal(read_integer(&x, ee), pin);
			assert_int_equal(read_integer(&x, ee), 0);
			assert_int_equal(read_integer(&x, ee),
					 16 + (slot + pin) % 8);
			assert_true(x == ee);
			e = ee;
		}
	}
	assert_int_equal(n, count);
	assert_true(e == end);
}

static void check_motherboard(const uint8_t *t, const struct acpi_config *cfg)
{
	const uint8_t *v = dsdt_find(t, "_SB_MBRD_CRS", NULL), *r, *q;
	uint64_t len = (cfg->ecam_bus_end + 1ULL) << 20;
	struct addr_desc d;
	size_t n;

	assert_non_null(dsdt_find(t, "_SB_MBRD", NULL));
	assert_int_equal(dsdt_integer(t, "_SB_MBRD_HID"), 0x020cd041);
	assert_non_null(v);
	q = r = restemplate(v, t + get32(t + 4), &n);
	read_addr_desc(&q, &d); /* the ECAM window, consumed */
	check_addr(&d, 0, false, 0x01, cfg->ecam_base,
		   cfg->ecam_base + len - 1);
	assert_true(q == r + n - 2); /* then the End Tag */
}

static void check_dsdt(const uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_layout *l)
{
	const uint8_t *t = check_table(buf, l->dsdt, l->total, "DSDT");
	uint32_t len = get32(t + 4);
	const uint8_t *p, *end;
	unsigned int count, devices;

	assert_int_equal(t[8], 2); /* 64-bit integers */
	/* \_S5_ first: Package (4) { 5, 5, 0, 0 } */
	assert_int_equal(t[36], 0x08);
	assert_memory_equal(t + 37, "_S5_", 4);
	p = dsdt_find(t, "_S5_", &devices);
	assert_true(p == t + 41);
	p = package_elements(p, t + len, &count, &end);
	assert_int_equal(count, 4);
	assert_int_equal(read_integer(&p, end), ACPI_S5_SLP_TYP);
	assert_int_equal(read_integer(&p, end), ACPI_S5_SLP_TYP);
	assert_int_equal(read_integer(&p, end), 0);
	assert_int_equal(read_integer(&p, end), 0);
	assert_true(p == end);
	if (!cfg->ecam_base) {
		assert_int_equal(devices, 0);
		assert_null(memmem(t, len, "PCI0", 4));
		return;
	}
	assert_int_equal(devices, 2);
	assert_non_null(dsdt_find(t, "_SB_PCI0", NULL));
	assert_int_equal(dsdt_integer(t, "_SB_PCI0_HID"), 0x080ad041);
	assert_int_equal(dsdt_integer(t, "_SB_PCI0_CID"), 0x030ad041);
	assert_int_equal(dsdt_integer(t, "_SB_PCI0_SEG"), 0);
	assert_int_equal(dsdt_integer(t, "_SB_PCI0_BBN"), 0);
	assert_int_equal(dsdt_integer(t, "_SB_PCI0_UID"), 0);
	check_pci0_crs(t, cfg);
	check_pci0_prt(t);
	check_motherboard(t, cfg);
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
	assert_int_equal(get16(a + 8), 0); /* segment */
	assert_int_equal(a[10], 0);	   /* start bus */
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
	check_dsdt(buf, cfg, &l);
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

/* Every buffer length short of the total: -ENOSPC, nothing written. */
static void check_enospc(const struct acpi_config *cfg)
{
	struct acpi_layout l;
	uint8_t probe[4096];
	ssize_t total;

	total = acpi_build(cfg, probe, sizeof(probe), &l);
	assert_true(total > 0);
	for (size_t len = 0; len < (size_t)total; len++) {
		/* The canary sits right after the buffer's end. */
		uint8_t *buf = malloc(len + 64);

		assert_non_null(buf);
		memset(buf, 0xa5, len + 64);
		assert_int_equal(acpi_build(cfg, buf, len, &l), -ENOSPC);
		for (size_t i = 0; i < len + 64; i++)
			assert_int_equal(buf[i], 0xa5);
		free(buf);
	}
	/* Exactly enough is enough. */
	{
		uint8_t *buf = malloc((size_t)total + 64);

		assert_non_null(buf);
		memset(buf, 0xa5, (size_t)total + 64);
		assert_int_equal(acpi_build(cfg, buf, (size_t)total, &l),
				 total);
		for (size_t i = (size_t)total; i < (size_t)total + 64; i++)
			assert_int_equal(buf[i], 0xa5);
		free(buf);
	}
}

static void test_enospc_no_overrun(void **state)
{
	struct acpi_config cfg = default_config(4);

	(void)state;
	check_enospc(&cfg); /* with PCI: the largest DSDT */
	cfg.ecam_base = 0;
	check_enospc(&cfg);
}

/* The DSDT has PCI0 and MBRD exactly when the machine has ECAM. */
static void test_dsdt_pci_only_with_ecam(void **state)
{
	struct acpi_config cfg = default_config(2);
	static uint8_t buf[4096];
	struct acpi_layout l;
	uint32_t with, without;

	(void)state;
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	with = get32(buf + l.dsdt + 4);
	assert_non_null(dsdt_find(buf + l.dsdt, "_SB_PCI0_PRT", NULL));
	cfg.ecam_base = 0;
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	without = get32(buf + l.dsdt + 4);
	assert_null(dsdt_find(buf + l.dsdt, "_SB_PCI0", NULL));
	assert_null(dsdt_find(buf + l.dsdt, "_SB_MBRD", NULL));
	assert_int_equal(without, 36 + 14); /* header + \_S5_ only */
	assert_true(with > 1024 + without); /* 124 _PRT entries */
}

/* _PRT's pin A for each slot is the GSI pci_bus_add gives that slot. */
static void test_prt_matches_pci_bus(void **state)
{
	struct acpi_config cfg = default_config(1);
	static uint8_t buf[4096];
	struct acpi_layout l;
	struct io_registry io;
	struct pci_bus bus;
	struct pci_device *devs = calloc(PCI_MAX_SLOTS, sizeof(*devs));
	const uint8_t *t, *limit, *e, *end;
	uint32_t prt_gsi[PCI_MAX_SLOTS] = {0};
	unsigned int count;

	(void)state;
	assert_non_null(devs);
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	t = buf + l.dsdt;
	limit = t + get32(t + 4);
	e = package_elements(dsdt_find(t, "_SB_PCI0_PRT", NULL), limit, &count,
			     &end);
	for (unsigned int i = 0; i < count; i++) {
		const uint8_t *x, *ee;
		unsigned int c;
		uint64_t addr, pin;

		x = package_elements(e, end, &c, &ee);
		addr = read_integer(&x, ee);
		pin = read_integer(&x, ee);
		read_integer(&x, ee);
		if (pin == 0)
			prt_gsi[addr >> 16] = (uint32_t)read_integer(&x, ee);
		e = ee;
	}
	assert_int_equal(ioreg_init(&io), 0);
	assert_int_equal(pci_bus_init(&bus, &io, NULL, NULL), 0);
	for (int i = 1; i < PCI_MAX_SLOTS; i++) {
		struct pci_device *d = &devs[i];
		int slot;

		pci_device_init(d, "t", 0x1af4, 0x1042, 0x010000, 1, 0x1af4, 2);
		slot = pci_bus_add(&bus, d);
		assert_true(slot >= 1 && slot < PCI_MAX_SLOTS);
		assert_int_equal(d->cfg[0x3d], 1); /* INTA# */
		assert_int_equal(d->intx_gsi, prt_gsi[slot]);
		assert_int_equal(d->cfg[0x3c], prt_gsi[slot]);
	}
	/* pci.h's examples: slots 1..7 on GSIs 17..23, slot 8 on 16. */
	assert_int_equal(prt_gsi[1], 17);
	assert_int_equal(prt_gsi[7], 23);
	assert_int_equal(prt_gsi[8], 16);
	assert_int_equal(prt_gsi[31], 23);
	pci_bus_destroy(&bus);
	ioreg_destroy(&io);
	free(devs);
}

/* The MADT leaves GSIs 16-23 alone: _PRT gives their level/low mode. */
static void test_madt_no_pci_overrides(void **state)
{
	struct acpi_config cfg = default_config(2);
	static uint8_t buf[4096];
	struct acpi_layout l;
	const uint8_t *t;

	(void)state;
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	t = buf + l.madt;
	for (uint32_t off = 44; off < get32(t + 4); off += t[off + 1]) {
		if (t[off] == 2) /* Interrupt Source Override */
			assert_true(get32(t + off + 4) < PCI_INTX_GSI_BASE);
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

/* AML encoder (machine/aml.c). */

/* Build with @fn into @out; the measured length must match the built one. */
static size_t aml_emit(void (*fn)(struct aml *), uint8_t *out, size_t cap)
{
	struct aml a;
	ssize_t measured, n;

	aml_init(&a, NULL, 0);
	fn(&a);
	measured = aml_finish(&a);
	assert_true(measured >= 0);
	aml_init(&a, out, cap);
	fn(&a);
	n = aml_finish(&a);
	assert_int_equal(n, measured);
	return (size_t)n;
}

#define assert_aml(fn, ...)                                      \
	do {                                                     \
		static const uint8_t want_[] = {__VA_ARGS__};    \
		uint8_t got_[256];                               \
		size_t n_ = aml_emit(fn, got_, sizeof(got_));    \
		assert_int_equal(n_, sizeof(want_));             \
		assert_memory_equal(got_, want_, sizeof(want_)); \
	} while (0)

static void check_pkglength(uint32_t value, unsigned int n, const uint8_t *want)
{
	uint8_t out[4];
	size_t len;

	assert_int_equal(aml_pkglength_encode(value, out), n);
	assert_memory_equal(out, want, n);
	assert_int_equal(read_pkglength(out, out + n, &len), value);
	assert_int_equal(len, n);
}

static void test_aml_pkglength_boundaries(void **state)
{
	uint8_t out[4];

	(void)state;
	check_pkglength(0, 1, (const uint8_t[]){0x00});
	check_pkglength(63, 1, (const uint8_t[]){0x3f});
	check_pkglength(64, 2, (const uint8_t[]){0x40, 0x04});
	check_pkglength(4095, 2, (const uint8_t[]){0x4f, 0xff});
	check_pkglength(4096, 3, (const uint8_t[]){0x80, 0x00, 0x01});
	check_pkglength(1048575, 3, (const uint8_t[]){0x8f, 0xff, 0xff});
	check_pkglength(1048576, 4, (const uint8_t[]){0xc0, 0x00, 0x00, 0x01});
	check_pkglength(AML_PKGLENGTH_MAX, 4,
			(const uint8_t[]){0xcf, 0xff, 0xff, 0xff});
	assert_int_equal(aml_pkglength_encode(AML_PKGLENGTH_MAX + 1, out), 0);
	/* The value counts its own bytes: content + encoding length. */
	assert_int_equal(aml_pkglength_for(0), 1);
	assert_int_equal(aml_pkglength_for(62), 63);
	assert_int_equal(aml_pkglength_for(63), 65);
	assert_int_equal(aml_pkglength_for(4093), 4095);
	assert_int_equal(aml_pkglength_for(4094), 4097);
	assert_int_equal(aml_pkglength_for(1048572), 1048575);
	assert_int_equal(aml_pkglength_for(1048573), 1048577);
	assert_int_equal(aml_pkglength_for(AML_PKGLENGTH_MAX - 4),
			 AML_PKGLENGTH_MAX);
	assert_int_equal(aml_pkglength_for(AML_PKGLENGTH_MAX - 3), 0);
}

/*
 * A Buffer of @n bytes, built into a buffer of exactly its size (the
 * builder never needs more) and into one byte less (-ENOSPC, no byte
 * written past the end).
 */
static void check_buffer_of(size_t n)
{
	uint8_t *data = malloc(n + 1), *out;
	struct aml a;
	ssize_t total;
	uint32_t pkglen;
	size_t plen;
	const uint8_t *q;

	assert_non_null(data);
	memset(data, 0x5a, n + 1);
	aml_init(&a, NULL, 0);
	aml_buffer_begin(&a);
	aml_bytes(&a, data, n);
	aml_end(&a);
	total = aml_finish(&a);
	assert_true(total > 0);
	out = malloc((size_t)total + 16);
	assert_non_null(out);
	for (int shorter = 0; shorter <= 1; shorter++) {
		memset(out, 0xa5, (size_t)total + 16);
		aml_init(&a, out, (size_t)total - shorter);
		aml_buffer_begin(&a);
		aml_bytes(&a, data, n);
		aml_end(&a);
		for (size_t i = (size_t)total - shorter; i < (size_t)total + 16;
		     i++)
			assert_int_equal(out[i], 0xa5);
		if (shorter) {
			assert_int_equal(aml_finish(&a), -ENOSPC);
			continue;
		}
		assert_int_equal(aml_finish(&a), total);
		assert_int_equal(out[0], 0x11);
		pkglen = read_pkglength(out + 1, out + total, &plen);
		assert_int_equal(pkglen, total - 1);
		assert_int_equal(pkglen, aml_pkglength_for(total - 1 - plen));
		q = out + 1 + plen;
		assert_int_equal(read_integer(&q, out + total), n);
		assert_int_equal(out + total - q, n);
		assert_memory_equal(q, data, n);
	}
	free(out);
	free(data);
}

static void test_aml_buffer_lengths(void **state)
{
	/* Around each step of the PkgLength and BufferSize encodings. */
	/* clang-format off */
	static const size_t sizes[] = {
		0, 1, 2, 58, 59, 60, 61, 62, 63, 64, 254, 255, 256,
		4088, 4089, 4090, 4091, 4092, 65535, 65536,
		1048570, 1048571, 1048572,
	};
	/* clang-format on */

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_buffer_of(sizes[i]);
}

static void emit_integers(struct aml *a)
{
	/* clang-format off */
	static const uint64_t v[] = {
		0, 1, 2, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff,
		0x100000000ULL, UINT64_MAX,
	};
	/* clang-format on */

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		aml_integer(a, v[i]);
}

static void test_aml_integers(void **state)
{
	(void)state;
	assert_aml(emit_integers, 0x00, 0x01, 0x0a, 0x02, 0x0a, 0xff, 0x0b,
		   0x00, 0x01, 0x0b, 0xff, 0xff, 0x0c, 0x00, 0x00, 0x01, 0x00,
		   0x0c, 0xff, 0xff, 0xff, 0xff, 0x0e, 0x00, 0x00, 0x00, 0x00,
		   0x01, 0x00, 0x00, 0x00, 0x0e, 0xff, 0xff, 0xff, 0xff, 0xff,
		   0xff, 0xff, 0xff);
}

static void emit_names(struct aml *a)
{
	aml_namestring(a, "PCI0");
	aml_namestring(a, "\\_SB");
	aml_namestring(a, "\\_SB.PCI0");
	aml_namestring(a, "\\_SB.PCI0.S8");
	aml_namestring(a, "^^A");
	aml_namestring(a, "\\");
}

static void test_aml_namestrings(void **state)
{
	static const char *bad[] = {"pci0", "1ABC", "ABCDE", "A..B",
				    "A.",   ".A",   "\\^A",  "A-B"};

	(void)state;
	assert_aml(emit_names, 'P', 'C', 'I', '0', '\\', '_', 'S', 'B', '_',
		   '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', '\\',
		   0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'S', '8',
		   '_', '_', '^', '^', 'A', '_', '_', '_', '\\', 0x00);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct aml a;

		aml_init(&a, NULL, 0);
		aml_namestring(&a, bad[i]);
		assert_int_equal(aml_finish(&a), -EINVAL);
	}
}

static void emit_strings_and_ids(struct aml *a)
{
	aml_string(a, "ab");
	aml_eisaid(a, "PNP0A08");
	aml_name_eisaid(a, "_CID", "PNP0C02");
}

static void test_aml_strings_and_eisaids(void **state)
{
	static const char *bad[] = {"pnp0a08", "PNP0A0", "PNP0A080", "PNP0G08",
				    "P1P0A08"};
	struct aml a;

	(void)state;
	assert_aml(emit_strings_and_ids, 0x0d, 'a', 'b', 0x00, 0x0c, 0x41, 0xd0,
		   0x0a, 0x08, 0x08, '_', 'C', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c,
		   0x02);
	assert_int_equal(aml_eisaid_value("PNP0A03"), 0x030ad041);
	assert_int_equal(aml_eisaid_value("PNP0a03"), 0x030ad041);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(aml_eisaid_value(bad[i]), 0);
		aml_init(&a, NULL, 0);
		aml_eisaid(&a, bad[i]);
		assert_int_equal(aml_finish(&a), -EINVAL);
	}
	aml_init(&a, NULL, 0);
	aml_string(&a, "\xc3\xa9");
	assert_int_equal(aml_finish(&a), -EINVAL);
}

/* Scope (\_SB) { Device (PCI0) { Name (_UID, Zero) } } */
static void emit_scope_device(struct aml *a)
{
	aml_scope_begin(a, "\\_SB");
	aml_device_begin(a, "PCI0");
	aml_name_integer(a, "_UID", 0);
	aml_end(a);
	aml_end(a);
}

/* Name (X, Package (2) { One, Package (0) {} }) */
static void emit_packages(struct aml *a)
{
	aml_name(a, "X");
	aml_package_begin(a, 2);
	aml_integer(a, 1);
	aml_package_begin(a, 0);
	aml_end(a);
	aml_end(a);
}

static void test_aml_objects(void **state)
{
	(void)state;
	assert_aml(emit_scope_device, 0x10, 0x13, '\\', '_', 'S', 'B', '_',
		   0x5b, 0x82, 0x0b, 'P', 'C', 'I', '0', 0x08, '_', 'U', 'I',
		   'D', 0x00);
	assert_aml(emit_packages, 0x08, 'X', '_', '_', '_', 0x12, 0x06, 0x02,
		   0x01, 0x12, 0x02, 0x00);
}

static void emit_resources(struct aml *a)
{
	aml_restemplate_begin(a);
	aml_res_word_bus_number(a, 0, 0xff);
	aml_res_io(a, 0xcf8, 0xcf8, 1, 8);
	aml_res_word_io(a, 0xd00, 0xffff);
	aml_res_memory(a, true, 0xc0000000, 0x20000000);
	aml_res_memory(a, false, 0x100000000ULL, 0x1000);
	aml_restemplate_end(a);
}

/* Byte for byte what iasl makes of the same ASL. */
static void test_aml_resources(void **state)
{
	(void)state;
	assert_aml(emit_resources, 0x11, 0x46, 0x07, 0x0a, 0x72,
		   /* WordBusNumber (ResourceProducer, MinFixed, MaxFixed,
		    * PosDecode, 0, 0, 0xff, 0, 0x100) */
		   0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
		   0xff, 0x00, 0x00, 0x00, 0x00, 0x01,
		   /* IO (Decode16, 0xcf8, 0xcf8, 1, 8) */
		   0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08,
		   /* WordIO (..., EntireRange, 0, 0xd00, 0xffff, 0, 0xf300) */
		   0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x0d,
		   0xff, 0xff, 0x00, 0x00, 0x00, 0xf3,
		   /* DWordMemory (ResourceProducer, PosDecode, MinFixed,
		    * MaxFixed, NonCacheable, ReadWrite, 0, 0xc0000000,
		    * 0xdfffffff, 0, 0x20000000) */
		   0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00,
		   0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xdf, 0x00, 0x00,
		   0x00, 0x00, 0x00, 0x00, 0x00, 0x20,
		   /* QWordMemory (ResourceConsumer, ..., 0x100000000,
		    * 0x100000fff, 0, 0x1000) */
		   0x8a, 0x2b, 0x00, 0x00, 0x0d, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
		   0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xff, 0x0f,
		   0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
		   0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		   /* End Tag */
		   0x79, 0x00);
}

static void test_aml_misuse(void **state)
{
	struct aml a;

	(void)state;
	aml_init(&a, NULL, 0);
	aml_end(&a); /* nothing open */
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_package_begin(&a, 1); /* never closed */
	aml_integer(&a, 1);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_package_begin(&a, 0);
	aml_restemplate_end(&a); /* not a buffer */
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_package_begin(&a, AML_PACKAGE_MAX_ELEMENTS + 1);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	for (int i = 0; i <= AML_MAX_DEPTH; i++)
		aml_package_begin(&a, 1);
	for (int i = 0; i <= AML_MAX_DEPTH; i++)
		aml_end(&a);
	assert_int_equal(aml_finish(&a), -EINVAL);
	/* Bad resource ranges. */
	aml_init(&a, NULL, 0);
	aml_res_word_io(&a, 0x100, 0xff); /* max < min */
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_res_word_io(&a, 0, 0xffff); /* length 0x10000 */
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_res_memory(&a, true, 0x1000, 0);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_init(&a, NULL, 0);
	aml_res_memory(&a, true, UINT64_MAX, 2); /* wraps */
	assert_int_equal(aml_finish(&a), -EINVAL);
	/* Sticky: the first error stays, lengths still add up. */
	{
		uint8_t small[4];

		aml_init(&a, small, sizeof(small));
		aml_integer(&a, 0x12345678);
		assert_int_equal(a.len, 5);
		aml_end(&a);
		assert_int_equal(aml_finish(&a), -ENOSPC);
	}
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
		cmocka_unit_test(test_dsdt_pci_only_with_ecam),
		cmocka_unit_test(test_prt_matches_pci_bus),
		cmocka_unit_test(test_madt_no_pci_overrides),
		cmocka_unit_test(test_aml_pkglength_boundaries),
		cmocka_unit_test(test_aml_buffer_lengths),
		cmocka_unit_test(test_aml_integers),
		cmocka_unit_test(test_aml_namestrings),
		cmocka_unit_test(test_aml_strings_and_eisaids),
		cmocka_unit_test(test_aml_objects),
		cmocka_unit_test(test_aml_resources),
		cmocka_unit_test(test_aml_misuse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
