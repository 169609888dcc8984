/*
 * machine/acpi.c - builds the ACPI tables that describe the machine to the
 * guest: RSDP, XSDT, FADT (with its FACS), DSDT, MADT and, when the
 * machine has PCI ECAM, MCFG, laid out in one buffer in that order. The
 * caller copies the buffer to guest physical cfg->base, so every pointer
 * between tables is base + offset. The DSDT's AML (machine/aml.c) is
 * measured first, then written in place.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "machine/acpi.h"
#include "machine/aml.h"
#include "machine/layout.h"
#include "machine/pci.h"

#define ACPI_OEM_ID "DVMM  "	     /* 6 bytes */
#define ACPI_OEM_TABLE_ID "DVMMACPI" /* 8 bytes */
#define ACPI_OEM_REVISION 1
#define ACPI_CREATOR_ID "DVMM"
#define ACPI_CREATOR_REVISION 1

/* SLP_TYP for S5 (soft off); acpi_pm.c decodes the same value. */

#define ACPI_TABLE_ALIGN 8
#define ACPI_FACS_ALIGN 64
#define ACPI_RSDP_ALIGN 16

/* Common table header. */
#define HDR_LEN 36
#define HDR_LENGTH 4
#define HDR_REVISION 8
#define HDR_CHECKSUM 9
#define HDR_OEM_ID 10
#define HDR_OEM_TABLE_ID 16
#define HDR_OEM_REVISION 24
#define HDR_CREATOR_ID 28
#define HDR_CREATOR_REVISION 32

/* RSDP (ACPI 2.0+ form). */
#define RSDP_V1_LEN 20
#define RSDP_LEN 36
#define RSDP_CHECKSUM 8
#define RSDP_OEM_ID 9
#define RSDP_REVISION 15
#define RSDP_RSDT_ADDR 16
#define RSDP_LENGTH 20
#define RSDP_XSDT_ADDR 24
#define RSDP_EXT_CHECKSUM 32

/* XSDT: the header, then 64-bit table pointers. */
#define XSDT_ENTRY_LEN 8

/* MCFG: header, 8 reserved bytes, one 16-byte allocation for segment 0. */
#define MCFG_REVISION 1
#define MCFG_ALLOC 44
#define MCFG_ALLOC_LEN 16
#define MCFG_LEN (MCFG_ALLOC + MCFG_ALLOC_LEN)
#define MCFG_BASE 0
#define MCFG_SEGMENT 8
#define MCFG_BUS_START 10
#define MCFG_BUS_END 11
#define ECAM_BUS_SIZE (1ULL << 20) /* 32 devices x 8 functions x 4 KiB */

/* FADT, revision 6 layout. */
#define FADT_REVISION 6
#define FADT_MINOR_REVISION 0
#define FADT_LEN 276
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_P_LVL2_LAT 96
#define FADT_P_LVL3_LAT 98
#define FADT_CENTURY 108
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_MINOR_VERSION 131
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172

#define FADT_PM1_EVT_BYTES 4
#define FADT_PM1_CNT_BYTES 2
#define FADT_C2_DISABLED 101  /* P_LVL2_LAT > 100: no C2 */
#define FADT_C3_DISABLED 1001 /* P_LVL3_LAT > 1000: no C3 */
#define CMOS_CENTURY_INDEX 0x32

/* IAPC_BOOT_ARCH bits. */
#define BOOT_ARCH_LEGACY_DEVICES (1u << 0)
#define BOOT_ARCH_8042 (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)

/* FADT flags. */
#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_SLP_BUTTON (1u << 5) /* no fixed sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)

/* Generic Address Structure. */
#define GAS_LEN 12
#define GAS_SPACE_SYSTEM_IO 1
#define GAS_ACCESS_BYTE 1
#define GAS_ACCESS_WORD 2

/* FACS: no checksum, 64-byte aligned. */
#define FACS_LEN 64
#define FACS_LENGTH 4
#define FACS_VERSION_OFF 32
#define FACS_VERSION 2

/* MADT and its entries. */
#define MADT_REVISION 4
#define MADT_LAPIC_ADDR 36
#define MADT_FLAGS 40
#define MADT_HDR_LEN 44
#define MADT_PCAT_COMPAT 1u
#define MADT_LAPIC 0
#define MADT_LAPIC_LEN 8
#define MADT_IOAPIC 1
#define MADT_IOAPIC_LEN 12
#define MADT_ISO 2
#define MADT_ISO_LEN 10
#define MADT_LAPIC_NMI 4
#define MADT_LAPIC_NMI_LEN 6
#define MADT_ENABLED 1u
#define MADT_ALL_PROCESSORS 0xff
#define MADT_LINT1 1
/* MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2. */
#define MPS_INTI_CONFORMING 0x0
#define MPS_INTI_ACTIVE_HIGH 0x1
#define MPS_INTI_LEVEL (0x3 << 2)
#define ISA_IRQ_TIMER 0
#define GSI_TIMER 2
#define ISO_COUNT 2
/*
 * APIC id 0xff is the xAPIC broadcast id, so ids 0..ACPI_MAX_CPUS-1 must stay
 * below it; a larger limit would need x2APIC (type 9) entries.
 */
#define XAPIC_MAX_ID 0xfe
_Static_assert(ACPI_MAX_CPUS - 1 <= XAPIC_MAX_ID,
	       "CPU ids above 0xfe need MADT x2APIC entries");

#define DSDT_REVISION 2 /* 64-bit AML integers */

/* The PCI host bridge's legacy ranges and interrupt routing. */
#define PCI_CONFIG_PORT 0xcf8 /* configuration mechanism #1 */
#define PCI_CONFIG_PORT_LEN 8
#define PCI_IO_PORT_MAX 0xffff
#define PCI_PRT_PINS 4 /* INTA#..INTD# */
#define PCI_PRT_ANY_FUNCTION 0xffff

/* Where each table goes, decided before anything is written. */
struct acpi_plan {
	size_t rsdp, xsdt, fadt, facs, dsdt, madt, mcfg;
	size_t xsdt_len, dsdt_len, madt_len;
	size_t total;
};

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum += p[i];
	return sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, v & 0xffffffffu);
	put32(p + 4, v >> 32);
}

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

/* 32-bit form of a table address, or 0 when it does not fit. */
static uint32_t addr32(uint64_t addr)
{
	return addr > UINT32_MAX ? 0 : (uint32_t)addr;
}

/* Make the byte at @csum_off such that @len bytes at @p sum to zero. */
static void set_checksum(uint8_t *p, size_t len, size_t csum_off)
{
	p[csum_off] = 0;
	p[csum_off] = (uint8_t)(0x100 - acpi_checksum(p, len));
}

static void put_header(uint8_t *t, const char *sig, size_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t + HDR_LENGTH, (uint32_t)len);
	t[HDR_REVISION] = rev;
	memcpy(t + HDR_OEM_ID, ACPI_OEM_ID, 6);
	memcpy(t + HDR_OEM_TABLE_ID, ACPI_OEM_TABLE_ID, 8);
	put32(t + HDR_OEM_REVISION, ACPI_OEM_REVISION);
	memcpy(t + HDR_CREATOR_ID, ACPI_CREATOR_ID, 4);
	put32(t + HDR_CREATOR_REVISION, ACPI_CREATOR_REVISION);
}

static void put_gas(uint8_t *p, uint8_t space, uint8_t bit_width,
		    uint8_t access, uint64_t addr)
{
	p[0] = space;
	p[1] = bit_width;
	p[2] = 0; /* bit offset */
	p[3] = access;
	put64(p + 4, addr);
}

static uint64_t ecam_length(const struct acpi_config *cfg)
{
	return (cfg->ecam_bus_end + 1ULL) * ECAM_BUS_SIZE;
}

/*
 * \_S5_: Package (4) { 5, 5, 0, 0 }: SLP_TYPa and SLP_TYPb for soft-off,
 * which the guest writes to PM1a_CNT to power off. Kept first in the DSDT.
 */
static void dsdt_s5(struct aml *a)
{
	aml_name(a, "_S5_");
	aml_package_begin(a, 4);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, 0); /* reserved */
	aml_integer(a, 0);
	aml_end(a);
}

/*
 * What the host bridge decodes: its buses, the configuration ports, all
 * other I/O ports and the BAR window in the MMIO hole.
 */
static void pci0_crs(struct aml *a, const struct acpi_config *cfg)
{
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_res_word_bus_number(a, 0, cfg->ecam_bus_end);
	aml_res_io(a, PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, PCI_CONFIG_PORT_LEN);
	aml_res_word_io(a, 0, PCI_CONFIG_PORT - 1);
	aml_res_word_io(a, PCI_CONFIG_PORT + PCI_CONFIG_PORT_LEN,
			PCI_IO_PORT_MAX);
	aml_res_memory(a, true, PCI_MMIO_BASE, PCI_MMIO_END - PCI_MMIO_BASE);
	aml_restemplate_end(a);
}

/* INTx @pin (0 = INTA#) of @slot: pin A matches pci_bus_add's GSI. */
static uint32_t pci_intx_gsi(unsigned int slot, unsigned int pin)
{
	return PCI_INTX_GSI_BASE + (slot + pin) % PCI_INTX_GSI_COUNT;
}

/*
 * Interrupt routing: Package { address (slot << 16 | 0xffff: any function),
 * pin, 0, GSI } for every slot but the host bridge's and every pin. With
 * source 0 the last element is a GSI, level-triggered and active low.
 */
static void pci0_prt(struct aml *a)
{
	aml_name(a, "_PRT");
	aml_package_begin(a, (PCI_MAX_SLOTS - 1) * PCI_PRT_PINS);
	for (unsigned int slot = 1; slot < PCI_MAX_SLOTS; slot++) {
		for (unsigned int pin = 0; pin < PCI_PRT_PINS; pin++) {
			aml_package_begin(a, 4);
			aml_integer(a, (uint64_t)slot << 16 |
					       PCI_PRT_ANY_FUNCTION);
			aml_integer(a, pin);
			aml_integer(a, 0); /* source: none */
			aml_integer(a, pci_intx_gsi(slot, pin));
			aml_end(a);
		}
	}
	aml_end(a);
}

/* \_SB.PCI0: the PCI Express host bridge of segment 0, bus 0. */
static void dsdt_pci0(struct aml *a, const struct acpi_config *cfg)
{
	aml_device_begin(a, "PCI0");
	aml_name_eisaid(a, "_HID", "PNP0A08");
	aml_name_eisaid(a, "_CID", "PNP0A03");
	aml_name_integer(a, "_SEG", 0);
	aml_name_integer(a, "_BBN", 0);
	aml_name_integer(a, "_UID", 0);
	pci0_crs(a, cfg);
	pci0_prt(a);
	aml_end(a);
}

/*
 * \_SB.MBRD: motherboard resources. Linux accepts the MCFG's ECAM window
 * only if such a device reserves it.
 */
static void dsdt_motherboard(struct aml *a, const struct acpi_config *cfg)
{
	aml_device_begin(a, "MBRD");
	aml_name_eisaid(a, "_HID", "PNP0C02");
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_res_memory(a, false, cfg->ecam_base, ecam_length(cfg));
	aml_restemplate_end(a);
	aml_end(a);
}

/* The DSDT's AML: \_S5_ and, when the machine has PCI, the host bridge. */
static void dsdt_body(struct aml *a, const struct acpi_config *cfg)
{
	dsdt_s5(a);
	if (!cfg->ecam_base)
		return;
	aml_scope_begin(a, "\\_SB");
	dsdt_pci0(a, cfg);
	dsdt_motherboard(a, cfg);
	aml_end(a);
}

static ssize_t dsdt_body_length(const struct acpi_config *cfg)
{
	struct aml a;

	aml_init(&a, NULL, 0);
	dsdt_body(&a, cfg);
	return aml_finish(&a);
}

static size_t madt_length(unsigned int ncpus)
{
	return MADT_HDR_LEN + (size_t)ncpus * MADT_LAPIC_LEN + MADT_IOAPIC_LEN +
	       ISO_COUNT * MADT_ISO_LEN + MADT_LAPIC_NMI_LEN;
}

static int check_config(const struct acpi_config *cfg)
{
	uint64_t ecam_len = ecam_length(cfg);

	if (cfg->ncpus == 0 || cfg->ncpus > ACPI_MAX_CPUS)
		return -EINVAL;
	if (cfg->base % ACPI_RSDP_ALIGN)
		return -EINVAL;
	/* PM1a event and control blocks are mandatory without HW_REDUCED. */
	if (!cfg->pm1a_evt_port || !cfg->pm1a_cnt_port)
		return -EINVAL;
	/* The SCI is an ISA IRQ; 0 and 2 are the timer's. */
	if (cfg->sci_irq == ISA_IRQ_TIMER || cfg->sci_irq == GSI_TIMER ||
	    cfg->sci_irq > 15)
		return -EINVAL;
	/* ECAM: bus-aligned, and its buses must end below 2^64. */
	if (cfg->ecam_base % ECAM_BUS_SIZE ||
	    cfg->ecam_base > UINT64_MAX - ecam_len)
		return -EINVAL;
	return 0;
}

/* Place every table; FACS is aligned in guest physical terms. */
static int plan_tables(const struct acpi_config *cfg, struct acpi_plan *p)
{
	size_t phase = (size_t)(cfg->base % ACPI_FACS_ALIGN);
	size_t entries = cfg->ecam_base ? 3 : 2; /* FADT, MADT[, MCFG] */
	ssize_t aml_len = dsdt_body_length(cfg);

	if (aml_len < 0)
		return (int)aml_len;

	p->rsdp = 0;
	p->xsdt = align_up(p->rsdp + RSDP_LEN, ACPI_TABLE_ALIGN);
	p->xsdt_len = HDR_LEN + XSDT_ENTRY_LEN * entries;
	p->fadt = align_up(p->xsdt + p->xsdt_len, ACPI_TABLE_ALIGN);
	p->facs = align_up(phase + p->fadt + FADT_LEN, ACPI_FACS_ALIGN) - phase;
	p->dsdt = align_up(p->facs + FACS_LEN, ACPI_TABLE_ALIGN);
	p->dsdt_len = HDR_LEN + (size_t)aml_len;
	p->madt = align_up(p->dsdt + p->dsdt_len, ACPI_TABLE_ALIGN);
	p->madt_len = madt_length(cfg->ncpus);
	p->total = p->madt + p->madt_len;
	p->mcfg = 0;
	if (cfg->ecam_base) {
		p->mcfg = align_up(p->total, ACPI_TABLE_ALIGN);
		p->total = p->mcfg + MCFG_LEN;
	}
	return 0;
}

static void build_rsdp(uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_plan *p)
{
	uint8_t *r = buf + p->rsdp;

	memcpy(r, "RSD PTR ", 8);
	memcpy(r + RSDP_OEM_ID, ACPI_OEM_ID, 6);
	r[RSDP_REVISION] = 2;
	put32(r + RSDP_RSDT_ADDR, 0); /* no RSDT: the XSDT is used */
	put32(r + RSDP_LENGTH, RSDP_LEN);
	put64(r + RSDP_XSDT_ADDR, cfg->base + p->xsdt);
	set_checksum(r, RSDP_V1_LEN, RSDP_CHECKSUM);
	set_checksum(r, RSDP_LEN, RSDP_EXT_CHECKSUM);
}

static void build_xsdt(uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_plan *p)
{
	uint8_t *t = buf + p->xsdt, *e = t + HDR_LEN;

	put_header(t, "XSDT", p->xsdt_len, 1);
	put64(e, cfg->base + p->fadt);
	put64(e + XSDT_ENTRY_LEN, cfg->base + p->madt);
	if (p->mcfg)
		put64(e + 2 * XSDT_ENTRY_LEN, cfg->base + p->mcfg);
	set_checksum(t, p->xsdt_len, HDR_CHECKSUM);
}

static void fadt_put_pm_blocks(uint8_t *t, const struct acpi_config *cfg)
{
	put32(t + FADT_PM1A_EVT_BLK, cfg->pm1a_evt_port);
	put32(t + FADT_PM1A_CNT_BLK, cfg->pm1a_cnt_port);
	t[FADT_PM1_EVT_LEN] = FADT_PM1_EVT_BYTES;
	t[FADT_PM1_CNT_LEN] = FADT_PM1_CNT_BYTES;
	put_gas(t + FADT_X_PM1A_EVT_BLK, GAS_SPACE_SYSTEM_IO,
		FADT_PM1_EVT_BYTES * 8, GAS_ACCESS_WORD, cfg->pm1a_evt_port);
	put_gas(t + FADT_X_PM1A_CNT_BLK, GAS_SPACE_SYSTEM_IO,
		FADT_PM1_CNT_BYTES * 8, GAS_ACCESS_WORD, cfg->pm1a_cnt_port);
	/* PM timer, PM1b, PM2 and GPE blocks: none (all zero). */
}

static uint32_t fadt_flags(const struct acpi_config *cfg)
{
	uint32_t flags = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON;

	/* HW_REDUCED_ACPI stays clear: the PM1 blocks and SCI are real. */
	if (cfg->reset_port)
		flags |= FADT_F_RESET_REG_SUP;
	return flags;
}

static void build_fadt(uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_plan *p)
{
	uint8_t *t = buf + p->fadt;
	uint64_t facs = cfg->base + p->facs, dsdt = cfg->base + p->dsdt;

	put_header(t, "FACP", FADT_LEN, FADT_REVISION);
	/* FIRMWARE_CTRL and X_FIRMWARE_CTRL: only one may be non-zero. */
	put32(t + FADT_FIRMWARE_CTRL, addr32(facs));
	put64(t + FADT_X_FIRMWARE_CTRL, addr32(facs) ? 0 : facs);
	put32(t + FADT_DSDT, addr32(dsdt));
	put64(t + FADT_X_DSDT, dsdt);
	put16(t + FADT_SCI_INT, cfg->sci_irq);
	/* SMI_CMD 0: the machine is always in ACPI mode (SCI_EN reads 1). */
	fadt_put_pm_blocks(t, cfg);
	put16(t + FADT_P_LVL2_LAT, FADT_C2_DISABLED);
	put16(t + FADT_P_LVL3_LAT, FADT_C3_DISABLED);
	t[FADT_CENTURY] = CMOS_CENTURY_INDEX;
	put16(t + FADT_IAPC_BOOT_ARCH, BOOT_ARCH_LEGACY_DEVICES |
					       BOOT_ARCH_8042 |
					       BOOT_ARCH_VGA_NOT_PRESENT);
	put32(t + FADT_FLAGS, fadt_flags(cfg));
	if (cfg->reset_port) {
		put_gas(t + FADT_RESET_REG, GAS_SPACE_SYSTEM_IO, 8,
			GAS_ACCESS_BYTE, cfg->reset_port);
		t[FADT_RESET_VALUE] = cfg->reset_value;
	}
	t[FADT_MINOR_VERSION] = FADT_MINOR_REVISION;
	set_checksum(t, FADT_LEN, HDR_CHECKSUM);
}

static void build_facs(uint8_t *buf, const struct acpi_plan *p)
{
	uint8_t *t = buf + p->facs;

	memcpy(t, "FACS", 4);
	put32(t + FACS_LENGTH, FACS_LEN);
	t[FACS_VERSION_OFF] = FACS_VERSION;
	/* Hardware signature, waking vectors, global lock, flags: zero. */
}

static int build_dsdt(uint8_t *buf, const struct acpi_config *cfg,
		      const struct acpi_plan *p)
{
	uint8_t *t = buf + p->dsdt;
	size_t aml_len = p->dsdt_len - HDR_LEN;
	struct aml a;

	put_header(t, "DSDT", p->dsdt_len, DSDT_REVISION);
	aml_init(&a, t + HDR_LEN, aml_len);
	dsdt_body(&a, cfg);
	if (aml_finish(&a) != (ssize_t)aml_len)
		return -EINVAL; /* cannot happen: it was just measured */
	set_checksum(t, p->dsdt_len, HDR_CHECKSUM);
	return 0;
}

static uint8_t *madt_put_lapic(uint8_t *e, unsigned int id)
{
	e[0] = MADT_LAPIC;
	e[1] = MADT_LAPIC_LEN;
	e[2] = (uint8_t)id; /* ACPI processor UID */
	e[3] = (uint8_t)id; /* APIC id */
	put32(e + 4, MADT_ENABLED);
	return e + MADT_LAPIC_LEN;
}

static uint8_t *madt_put_ioapic(uint8_t *e, const struct acpi_config *cfg)
{
	e[0] = MADT_IOAPIC;
	e[1] = MADT_IOAPIC_LEN;
	e[2] = cfg->ioapic_id;
	e[3] = 0;
	put32(e + 4, cfg->ioapic_addr);
	put32(e + 8, 0); /* GSI base */
	return e + MADT_IOAPIC_LEN;
}

static uint8_t *madt_put_iso(uint8_t *e, uint8_t irq, uint32_t gsi,
			     uint16_t flags)
{
	e[0] = MADT_ISO;
	e[1] = MADT_ISO_LEN;
	e[2] = 0; /* bus: ISA */
	e[3] = irq;
	put32(e + 4, gsi);
	put16(e + 8, flags);
	return e + MADT_ISO_LEN;
}

static uint8_t *madt_put_lapic_nmi(uint8_t *e)
{
	e[0] = MADT_LAPIC_NMI;
	e[1] = MADT_LAPIC_NMI_LEN;
	e[2] = MADT_ALL_PROCESSORS;
	put16(e + 3, MPS_INTI_CONFORMING);
	e[5] = MADT_LINT1;
	return e + MADT_LAPIC_NMI_LEN;
}

static void build_madt(uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_plan *p)
{
	uint8_t *t = buf + p->madt, *e = t + MADT_HDR_LEN;

	put_header(t, "APIC", p->madt_len, MADT_REVISION);
	put32(t + MADT_LAPIC_ADDR, cfg->lapic_addr);
	put32(t + MADT_FLAGS, MADT_PCAT_COMPAT);
	for (unsigned int i = 0; i < cfg->ncpus; i++)
		e = madt_put_lapic(e, i);
	e = madt_put_ioapic(e, cfg);
	e = madt_put_iso(e, ISA_IRQ_TIMER, GSI_TIMER, MPS_INTI_CONFORMING);
	e = madt_put_iso(e, cfg->sci_irq, cfg->sci_irq,
			 MPS_INTI_ACTIVE_HIGH | MPS_INTI_LEVEL);
	madt_put_lapic_nmi(e);
	set_checksum(t, p->madt_len, HDR_CHECKSUM);
}

/* MCFG: one ECAM allocation, segment 0, buses 0..ecam_bus_end. */
static void build_mcfg(uint8_t *buf, const struct acpi_config *cfg,
		       const struct acpi_plan *p)
{
	uint8_t *t = buf + p->mcfg, *a = t + MCFG_ALLOC;

	put_header(t, "MCFG", MCFG_LEN, MCFG_REVISION);
	/* 8 reserved bytes after the header stay zero. */
	put64(a + MCFG_BASE, cfg->ecam_base);
	put16(a + MCFG_SEGMENT, 0);
	a[MCFG_BUS_START] = 0;
	a[MCFG_BUS_END] = cfg->ecam_bus_end;
	set_checksum(t, MCFG_LEN, HDR_CHECKSUM);
}

ssize_t acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t buflen,
		   struct acpi_layout *out)
{
	struct acpi_plan p = {0};
	int rc;

	if (!cfg || !buf)
		return -EINVAL;
	rc = check_config(cfg);
	if (rc)
		return rc;
	rc = plan_tables(cfg, &p);
	if (rc)
		return rc;
	if (p.total > buflen)
		return -ENOSPC;
	if (cfg->base + p.total < cfg->base)
		return -EINVAL;
	memset(buf, 0, p.total);
	build_rsdp(buf, cfg, &p);
	build_xsdt(buf, cfg, &p);
	build_fadt(buf, cfg, &p);
	build_facs(buf, &p);
	rc = build_dsdt(buf, cfg, &p);
	if (rc)
		return rc;
	build_madt(buf, cfg, &p);
	if (p.mcfg)
		build_mcfg(buf, cfg, &p);
	if (out)
		*out = (struct acpi_layout){.rsdp = p.rsdp,
					    .xsdt = p.xsdt,
					    .fadt = p.fadt,
					    .dsdt = p.dsdt,
					    .madt = p.madt,
					    .mcfg = p.mcfg,
					    .total = p.total};
	return (ssize_t)p.total;
}
