/*
 * machine/pci.h - PCI bus 0: a host bridge reached through configuration
 * mechanism #1 (ports 0xcf8/0xcfc) and ECAM (MMIO, described by the ACPI
 * MCFG table); 256-byte legacy + 4 KiB extended config space per function;
 * BAR sizing, placement in the MMIO hole by dvmm (playing firmware), and
 * callbacks to the device when the guest moves or disables a BAR.
 */
#ifndef DVMM_MACHINE_PCI_H
#define DVMM_MACHINE_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ioreg.h"
#include "core/irq.h"

#define PCI_MAX_SLOTS 32
#define PCI_CFG_SIZE 4096
#define PCI_NUM_BARS 6

/* Where the bus lives in the 32-bit MMIO hole (see core/guest_mem.h). */
#define PCI_ECAM_BASE 0xE0000000ULL   /* bus 0 only: 32 slots x 8 fn x 4K */
#define PCI_ECAM_SIZE 0x100000ULL
#define PCI_MMIO_BASE 0xC0000000ULL   /* BAR window */
#define PCI_MMIO_END 0xE0000000ULL
#define PCI_IO_BASE 0xC000            /* I/O BAR window */
#define PCI_IO_END 0x10000

/* INTx: slot s, pin A..D -> GSI from this list (level, active low). */
#define PCI_INTX_GSI_BASE 16          /* IOAPIC pins 16..23 */
#define PCI_INTX_GSI_COUNT 8

struct pci_device;

struct pci_bar {
	uint64_t size;            /* power of two, 0 = unused */
	bool is_io;
	bool is_64;               /* takes this and the next BAR slot */
	bool prefetchable;
	uint64_t addr;            /* current address as the guest sees it */
	bool mapped;              /* decode enabled and address valid */
};

struct pci_device_ops {
	/*
	 * The BAR is now decoded at @addr (mapped=true) or no longer decoded
	 * (mapped=false, addr = the old address). Devices register/unregister
	 * their io ranges, ioeventfds and memslots here. Called with the bus
	 * lock held; must not call back into the bus.
	 */
	void (*bar_mapped)(struct pci_device *d, int bar, uint64_t addr,
			   bool mapped);
	/* Config space was written at @off (after the bus applied masks). */
	void (*cfg_written)(struct pci_device *d, uint32_t off, uint32_t len);
};

struct pci_device {
	const char *name;
	const struct pci_device_ops *ops;
	void *opaque;
	int slot;                 /* assigned by pci_bus_add */
	uint32_t intx_gsi;        /* GSI for INTA# */
	struct pci_bar bar[PCI_NUM_BARS];
	uint8_t cfg[PCI_CFG_SIZE];    /* config space contents */
	uint8_t wmask[PCI_CFG_SIZE];  /* bits the guest may write */
	uint8_t w1cmask[PCI_CFG_SIZE];/* write-1-to-clear bits */
	uint8_t last_cap;             /* offset of the last capability */
};

struct pci_bus {
	pthread_mutex_t lock;
	struct io_registry *io;
	uint32_t cf8;             /* the CONFIG_ADDRESS latch */
	struct pci_device *slot[PCI_MAX_SLOTS];
	struct pci_device host_bridge;
	uint64_t mmio_next;       /* BAR allocator */
	uint32_t io_next;
	io_handler_fn cf9;
	void *cf9_opaque;
};

/*
 * Register 0xcf8-0xcff and the ECAM window. Port 0xcf9 (the reset control
 * register) shares the range: byte accesses to it go to @cf9 / @cf9_opaque.
 */
int pci_bus_init(struct pci_bus *b, struct io_registry *io, io_handler_fn cf9,
		 void *cf9_opaque);
void pci_bus_destroy(struct pci_bus *b);

/*
 * Prepare a device: fills the header (vendor, device, class, subsystem,
 * revision, header type 0, interrupt pin A), zeroes the rest.
 */
void pci_device_init(struct pci_device *d, const char *name,
		     uint16_t vendor, uint16_t device, uint32_t class_code,
		     uint8_t revision, uint16_t subsys_vendor,
		     uint16_t subsys_id);
/* Declare BAR @bar of @size bytes (power of two >= 16 / 4 for I/O). */
int pci_device_set_bar(struct pci_device *d, int bar, uint64_t size,
		       bool is_io, bool is_64);
/* Append a capability of @len bytes with id @cap_id; returns its offset. */
int pci_device_add_cap(struct pci_device *d, uint8_t cap_id, uint8_t len);

/*
 * Put the device in the next free slot, place its BARs, enable memory/IO
 * decode as firmware would, set its INTx GSI, and call bar_mapped for each
 * BAR. Returns the slot or a negative errno.
 */
int pci_bus_add(struct pci_bus *b, struct pci_device *d);

/* Config space accessors used by the bus and by tests. */
void pci_cfg_read(struct pci_bus *b, uint8_t devfn, uint32_t off,
		  uint8_t *data, uint32_t len);
void pci_cfg_write(struct pci_bus *b, uint8_t devfn, uint32_t off,
		   const uint8_t *data, uint32_t len);

/* Little-endian config helpers for device code. */
static inline void pci_set_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void pci_set_u32(uint8_t *p, uint32_t v)
{
	pci_set_u16(p, (uint16_t)v);
	pci_set_u16(p + 2, (uint16_t)(v >> 16));
}

static inline uint16_t pci_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t pci_get_u32(const uint8_t *p)
{
	return pci_get_u16(p) | ((uint32_t)pci_get_u16(p + 2) << 16);
}

#endif
