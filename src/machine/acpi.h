/*
 * machine/acpi.h - builds the ACPI tables (RSDP, XSDT, FADT, DSDT, MADT and
 * optionally MCFG) that describe the machine to the guest. Pure: writes
 * into a buffer that the caller copies to guest physical @base.
 */
#ifndef DVMM_MACHINE_ACPI_H
#define DVMM_MACHINE_ACPI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ACPI_MAX_CPUS 255

struct acpi_config {
	unsigned int ncpus; /* LAPIC ids 0..ncpus-1 */
	uint64_t base;	    /* guest physical address of the buffer */
	uint32_t ioapic_addr;
	uint8_t ioapic_id;
	uint32_t lapic_addr;
	uint16_t pm1a_evt_port; /* 4-byte PM1a event block */
	uint16_t pm1a_cnt_port; /* 2-byte PM1a control block */
	uint16_t reset_port;	/* FADT reset register (I/O space) */
	uint8_t reset_value;
	uint8_t sci_irq;
	/*
	 * PCI ECAM (MCFG table, segment 0, buses 0..ecam_bus_end): base 1 MiB
	 * aligned, or 0 for a machine without PCI. With ECAM the DSDT also
	 * has the host bridge \_SB.PCI0 (windows and _PRT from
	 * machine/pci.h) and \_SB.MBRD, which reserves the ECAM window.
	 */
	uint64_t ecam_base;
	uint8_t ecam_bus_end;
};

/* Offsets of the tables inside the buffer, for callers and tests. */
struct acpi_layout {
	size_t rsdp, xsdt, fadt, dsdt, madt;
	size_t mcfg; /* 0 when there is no MCFG */
	size_t total;
};

/*
 * Build the tables into @buf (@buflen bytes). The RSDP is first, at @base,
 * 16-byte aligned, so a scan of the BIOS area finds it. Returns the number
 * of bytes used, or -EINVAL / -ENOSPC.
 */
ssize_t acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t buflen,
		   struct acpi_layout *out);

/* Sum of @len bytes modulo 256 (0 for a valid table). */
uint8_t acpi_checksum(const uint8_t *p, size_t len);

#endif
