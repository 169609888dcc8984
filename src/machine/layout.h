/*
 * machine/layout.h - where the PC machine puts things in guest physical
 * memory and port space. One place, so the loader, ACPI and devices agree.
 */
#ifndef DVMM_MACHINE_LAYOUT_H
#define DVMM_MACHINE_LAYOUT_H

/* Low memory, used by the boot path. */
#define LAYOUT_START_INFO 0x6000ULL /* struct hvm_start_info */
#define LAYOUT_MODLIST 0x6100ULL    /* hvm_modlist_entry[], up to 8 */
#define LAYOUT_MEMMAP 0x6400ULL	    /* hvm_memmap_table_entry[] */
#define LAYOUT_MEMMAP_MAX 64
#define LAYOUT_CMDLINE 0x7000ULL /* NUL-terminated command line */
#define LAYOUT_CMDLINE_MAX 4096
/* Linux boot protocol (machine/bzimage.c), after the PVH area. */
#define LAYOUT_BOOT_GDT 0x8000ULL /* null, null, code 0x10, data 0x18 */
#define LAYOUT_BOOT_GDT_ENTRIES 4
#define LAYOUT_BOOT_PML4 0x9000ULL /* identity map of the first 4 GiB */
#define LAYOUT_BOOT_PDPT 0xA000ULL
#define LAYOUT_BOOT_PD 0xB000ULL /* 4 pages of 2 MiB entries */
#define LAYOUT_BOOT_PD_PAGES 4
#define LAYOUT_ZERO_PAGE 0x10000ULL /* struct boot_params */
#define LAYOUT_LINUX_CMDLINE 0x11000ULL
#define LAYOUT_LINUX_CMDLINE_MAX 4096
#define LAYOUT_LINUX_END 0x12000ULL
#define LAYOUT_EBDA_START 0x9FC00ULL /* end of conventional RAM */
#define LAYOUT_BIOS_START 0xE0000ULL /* ACPI tables, scanned for RSDP */
#define LAYOUT_BIOS_END 0x100000ULL
#define LAYOUT_ACPI_BASE LAYOUT_BIOS_START
#define LAYOUT_ACPI_MAX (LAYOUT_BIOS_END - LAYOUT_BIOS_START)
#define LAYOUT_HIMEM 0x100000ULL /* kernels load at or above 1 MiB */

/* The 32-bit MMIO hole (see core/guest_mem.h for its bounds). */
#define LAYOUT_IOAPIC_ADDR 0xFEC00000ULL
#define LAYOUT_LAPIC_ADDR 0xFEE00000ULL
#define LAYOUT_KVM_IDENT_MAP 0xFFFBC000ULL /* KVM_SET_IDENTITY_MAP_ADDR */
#define LAYOUT_KVM_TSS 0xFFFBD000ULL	   /* KVM_SET_TSS_ADDR, 3 pages */

/* Legacy ports. */
#define PORT_COM1 0x3F8
#define PORT_COM1_IRQ 4
#define PORT_CMOS 0x70
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD 0x64
#define PORT_DEBUG_EXIT 0xF4
#define PORT_RESET_CONTROL 0xCF9
#define PORT_ACPI_PM_BASE 0x600 /* PM1a event block (4), control (2) */
#define PORT_ACPI_PM1A_EVT PORT_ACPI_PM_BASE
#define PORT_ACPI_PM1A_CNT (PORT_ACPI_PM_BASE + 4)
#define ACPI_SCI_IRQ 9
#define ACPI_S5_SLP_TYP 5 /* SLP_TYP for S5 (soft off), in DSDT and PM1a_CNT */

#endif
