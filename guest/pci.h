/*
 * pci.h - PCI from user mode: configuration space through ECAM (MMIO, if
 * the ACPI MCFG table exists) or mechanism #1 (ports 0xcf8/0xcfc through
 * the port syscalls), the device list with BARs and capabilities, mapping
 * MMIO uncached, and MSI-X table programming.
 */
#ifndef GUEST_PCI_H
#define GUEST_PCI_H

#include "user.h"

#define PCI_MAX_DEVS	64
#define PCI_MAX_CAPS	24

#define PCI_COMMAND		0x04
#define PCI_STATUS		0x06
#define PCI_HEADER_TYPE		0x0e
#define PCI_BAR0		0x10
#define PCI_SUBSYS_VENDOR	0x2c
#define PCI_SUBSYS_ID		0x2e
#define PCI_CAP_PTR		0x34
#define PCI_CMD_IO		0x1
#define PCI_CMD_MEM		0x2
#define PCI_CMD_MASTER		0x4
#define PCI_CMD_INTX_DISABLE	0x400
#define PCI_STATUS_CAPS		0x10

#define PCI_CAP_MSIX		0x11
#define PCI_CAP_VENDOR		0x09

struct pci_bar {
	u64 addr;		/* 0 if unassigned */
	u64 size;		/* 0 if not implemented */
	bool io, is64, prefetch;
};

struct pci_dev {
	u8 bus, dev, fn;
	u8 header_type;		/* without the multi-function bit */
	u16 vendor, device;
	u32 class;		/* base << 16 | sub << 8 | prog-if */
	u16 subsys_vendor, subsys_id;
	struct pci_bar bar[6];
	int ncaps;
	u8 cap_id[PCI_MAX_CAPS];
	u8 cap_off[PCI_MAX_CAPS];
	/* MSI-X, if the device has it (msix_cap != 0) */
	u8 msix_cap;
	u16 msix_size;		/* table entries */
	volatile u32 *msix_table;
};

struct pci_info {
	bool done;
	bool ecam;		/* else mechanism #1 */
	u64 ecam_base;		/* address of bus ecam_bus_start */
	u8 ecam_bus_start, ecam_bus_end;
	int ndevs;
	struct pci_dev devs[PCI_MAX_DEVS];
	int nbridges;
	char error[MSG_LEN];	/* a problem found while enumerating */
};

extern struct pci_info pci;

/* Enumerate once (later calls return at once). False: see pci.error. */
bool pci_init(void);

u32 pci_read(const struct pci_dev *d, u32 off, int width);
void pci_write(const struct pci_dev *d, u32 off, int width, u32 v);
/* Offset of the first capability with this id at or after index *i. */
u8 pci_find_cap(const struct pci_dev *d, u8 id, int *i);

/*
 * Make [addr, addr + size) accessible, uncached (PCD|PWT, 2 MiB pages):
 * below 4 GiB by editing the boot identity map, above it with new page
 * tables from a small pool. RAM pages are left as they are. False if the
 * pool ran out.
 */
bool map_mmio(u64 addr, u64 size);

/*
 * MSI-X: enable it on the device (function unmasked) and program entry n
 * to deliver idt_vector to the CPU with this x2APIC id (fixed, edge).
 * False if there is no such entry.
 */
bool pci_msix_enable(struct pci_dev *d);
bool pci_msix_set(struct pci_dev *d, u16 entry, u32 apic_id, u8 idt_vector);

/* "00:03.0" */
void pci_name(const struct pci_dev *d, char *buf, size_t len);

/* MMIO accessors: plain moves, so KVM can emulate them from user mode. */
static inline u8 mmio_r8(volatile void *p) { return *(volatile u8 *)p; }
static inline u16 mmio_r16(volatile void *p) { return *(volatile u16 *)p; }
static inline u32 mmio_r32(volatile void *p) { return *(volatile u32 *)p; }
static inline void mmio_w8(volatile void *p, u8 v) { *(volatile u8 *)p = v; }
static inline void mmio_w16(volatile void *p, u16 v) { *(volatile u16 *)p = v; }
static inline void mmio_w32(volatile void *p, u32 v) { *(volatile u32 *)p = v; }

#endif
