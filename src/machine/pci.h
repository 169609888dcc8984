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
#define PCI_ECAM_BASE 0xE0000000ULL /* bus 0 only: 32 slots x 8 fn x 4K */
#define PCI_ECAM_SIZE 0x100000ULL
#define PCI_MMIO_BASE 0xC0000000ULL /* BAR window */
#define PCI_MMIO_END 0xE0000000ULL
#define PCI_IO_BASE 0xC000 /* I/O BAR window */
#define PCI_IO_END 0x10000

/*
 * INTx: every device uses pin A; slot s raises GSI
 * PCI_INTX_GSI_BASE + (s % PCI_INTX_GSI_COUNT) (level, active low), so
 * slots 1..7 get GSIs 17..23, slot 8 GSI 16, and so on.
 */
#define PCI_INTX_GSI_BASE 16 /* IOAPIC pins 16..23 */
#define PCI_INTX_GSI_COUNT 8

struct pci_device;

struct pci_bar {
	uint64_t size; /* power of two, 0 = unused */
	bool is_io;
	bool is_64; /* takes this and the next BAR slot */
	bool prefetchable;
	uint64_t addr; /* current address as the guest sees it */
	bool mapped;   /* decode enabled and address valid */
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
	/*
	 * The guest wrote @len bytes of config space at @off (the bus has
	 * applied wmask/w1cmask and updated the BAR mappings). Called with
	 * the bus lock held; must not call back into the bus.
	 */
	void (*cfg_written)(struct pci_device *d, uint32_t off, uint32_t len);
};

struct pci_device {
	const char *name;
	const struct pci_device_ops *ops;
	void *opaque;
	int slot;	   /* assigned by pci_bus_add */
	uint32_t intx_gsi; /* GSI for INTA# */
	struct pci_bar bar[PCI_NUM_BARS];
	uint8_t cfg[PCI_CFG_SIZE];     /* config space contents */
	uint8_t wmask[PCI_CFG_SIZE];   /* bits the guest may write */
	uint8_t w1cmask[PCI_CFG_SIZE]; /* write-1-to-clear bits */
	uint8_t last_cap;	       /* offset of the last capability */
	uint16_t cap_end;	       /* first byte after it (0: no caps) */
};

/*
 * A cluster's bus: slot s of a device homed on another node is "remote";
 * its config accesses go to @remote_cfg (without the bus lock) and its BARs
 * live in a window fixed by the slot, so every node knows where to send an
 * access without asking (see pci_bus_set_cluster).
 */
#define PCI_SLOT_MMIO_WINDOW (16ULL << 20) /* 32 slots fill the window */
#define PCI_SLOT_IO_WINDOW 0x200ULL

typedef void (*pci_remote_cfg_fn)(void *opaque, int node, uint8_t devfn,
				  uint32_t off, uint8_t *data, uint32_t len,
				  bool is_write);

struct pci_bus {
	pthread_mutex_t lock;
	struct io_registry *io;
	uint32_t cf8; /* the CONFIG_ADDRESS latch */
	struct pci_device *slot[PCI_MAX_SLOTS];
	struct pci_device host_bridge;
	uint64_t mmio_next; /* BAR allocator */
	uint32_t io_next;
	io_handler_fn cf9;
	void *cf9_opaque;
	bool slot_windows;	      /* BARs in per-slot windows */
	int slot_home[PCI_MAX_SLOTS]; /* remote slots: home node; else -1 */
	pci_remote_cfg_fn remote_cfg;
	void *remote_opaque;
};

/*
 * Register 0xcf8-0xcff and the ECAM window. Port 0xcf9 (the reset control
 * register) shares the range: byte accesses to it go to @cf9 / @cf9_opaque
 * (called as @cf9(@cf9_opaque, 0, data, 1, ...), without the bus lock);
 * @cf9 may be NULL (reads all-ones). Slot 0 gets the host bridge.
 */
int pci_bus_init(struct pci_bus *b, struct io_registry *io, io_handler_fn cf9,
		 void *cf9_opaque);
/*
 * Unregister the bus's ranges. BARs stay as they are: each device's own
 * destroy unregisters what its bar_mapped registered.
 */
void pci_bus_destroy(struct pci_bus *b);

/*
 * Prepare a device: fills the header (vendor, device, class, subsystem,
 * revision, header type 0, interrupt pin A) and the standard writable bits
 * (command, status write-1-to-clear, cache line, latency, interrupt line);
 * zeroes the rest of config space, the masks, BARs and capabilities; sets
 * slot to -1. @ops and @opaque are left as they are (set them before or
 * after). Device code may add bits to wmask/w1cmask for its own registers
 * (e.g. inside its capabilities) before pci_bus_add.
 */
void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint8_t revision,
		     uint16_t subsys_vendor, uint16_t subsys_id);
/*
 * Declare BAR @bar of @size bytes (power of two >= 16 / 4 for I/O; a 32-bit
 * BAR at most 2 GiB). A 64-bit BAR also takes slot @bar + 1. Set
 * d->bar[bar].prefetchable afterwards if wanted. Before pci_bus_add only;
 * -EINVAL for bad arguments or a slot already in use, -EBUSY once added.
 */
int pci_device_set_bar(struct pci_device *d, int bar, uint64_t size, bool is_io,
		       bool is_64);
/*
 * Append a capability of @len (>= 2) bytes with id @cap_id to the list in
 * the legacy 256 bytes (from 0x40, 4-byte aligned, linked from 0x34, status
 * bit 4 set). Returns its offset, -ENOSPC when it does not fit, -EINVAL for
 * a bad @len. Its bytes after the id and next pointer are zero and
 * read-only until the device sets cfg and wmask there.
 */
int pci_device_add_cap(struct pci_device *d, uint8_t cap_id, uint8_t len);

/*
 * Put the device in the next free slot, place its BARs, enable memory/IO
 * decode as firmware would, set its INTx GSI, and call bar_mapped for each
 * BAR. Returns the slot, or -ENOSPC (no free slot, or the BARs do not fit
 * the windows; nothing is changed then), -EEXIST (already on the bus),
 * -EINVAL. The device stays on the bus until pci_bus_destroy.
 */
int pci_bus_add(struct pci_bus *b, struct pci_device *d);

/*
 * Cluster layout: place every BAR of slot s inside slot s's own window
 * (PCI_MMIO_BASE + s * PCI_SLOT_MMIO_WINDOW, I/O likewise), and send the
 * config accesses of remote slots to @fn. Before any pci_bus_add.
 */
void pci_bus_set_cluster(struct pci_bus *b, pci_remote_cfg_fn fn, void *opaque);
/* Slot @slot belongs to a device on node @node: pci_bus_add skips it. */
int pci_bus_set_remote_slot(struct pci_bus *b, int slot, int node);
/* The slot whose cluster BAR window holds @addr, or -1. */
int pci_slot_of_window(enum io_space space, uint64_t addr);

/*
 * Config space accessors used by the bus and by tests: the same path as a
 * guest access (masks, BAR mapping, cfg_written). Bus 0 only; @devfn is
 * slot << 3 | function. Reads of absent functions and of bytes past the
 * 4 KiB config space return all-ones; such writes are dropped.
 */
void pci_cfg_read(struct pci_bus *b, uint8_t devfn, uint32_t off, uint8_t *data,
		  uint32_t len);
void pci_cfg_write(struct pci_bus *b, uint8_t devfn, uint32_t off,
		   const uint8_t *data, uint32_t len);

/*
 * Migration: take the guest-writable bits of a whole config space @cfg
 * (PCI_CFG_SIZE bytes saved from the same device on another host) and map
 * the BARs accordingly. cfg_written is not called: the device restores
 * its own side effects.
 */
void pci_device_restore_cfg(struct pci_bus *b, struct pci_device *d,
			    const uint8_t *cfg);

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
