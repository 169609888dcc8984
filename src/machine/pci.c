/*
 * machine/pci.c - PCI bus 0: configuration mechanism #1 (0xcf8/0xcfc, with
 * the 0xcf9 reset register passed through), ECAM, a host bridge in slot 0,
 * config writes through per-byte write / write-1-to-clear masks, standard
 * BAR sizing, BAR placement at pci_bus_add (dvmm plays firmware) and
 * bar_mapped callbacks whenever what a BAR decodes changes. Every guest
 * access, of any size and offset, ends in a read of all-ones or a dropped
 * write when it does not hit a register.
 */
#include <errno.h>
#include <string.h>

#include "machine/pci.h"

/* Type 0 header registers. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09 /* prog-if, subclass, base class */
#define PCI_CACHE_LINE_SIZE 0x0c
#define PCI_LATENCY_TIMER 0x0d
#define PCI_HEADER_TYPE 0x0e
#define PCI_BASE_ADDRESS_0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_LEGACY_CFG_SIZE 0x100
#define PCI_CAP_START 0x40

#define PCI_COMMAND_IO 0x0001
#define PCI_COMMAND_MEMORY 0x0002
#define PCI_COMMAND_MASTER 0x0004
#define PCI_COMMAND_PARITY 0x0040
#define PCI_COMMAND_SERR 0x0100
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_COMMAND_WMASK                                           \
	(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | \
	 PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)

#define PCI_STATUS_CAP_LIST 0x0010
/* Parity, target/master abort and SERR bits: write 1 to clear. */
#define PCI_STATUS_W1C 0xf900

#define PCI_BAR_IO 0x1
#define PCI_BAR_MEM_64 0x4
#define PCI_BAR_PREFETCH 0x8
#define PCI_BAR_IO_FLAGS 0x3
#define PCI_BAR_MEM_FLAGS 0xf
#define PCI_BAR_MIN_MEM 16
#define PCI_BAR_MIN_IO 4
#define PCI_BAR_MAX_MEM32 0x80000000ULL

#define PCI_INTX_PIN_A 1

/* x86 physical addresses are at most 52 bits; BARs above are not decoded. */
#define PCI_PHYS_LIMIT (1ULL << 52)

/* CONFIG_ADDRESS (0xcf8). */
#define CF8_ENABLE 0x80000000u
#define CF8_MASK 0x80fffffcu /* reserved bits 30:24 and 1:0 read as 0 */
#define CF8_BUS(v) (((v) >> 16) & 0xff)
#define CF8_DEVFN(v) (((v) >> 8) & 0xff)
#define CF8_REG(v) ((v)&0xfc)
#define CF8_PORT 0xcf8
#define CF8_LEN 8
#define CF9_OFFSET 1 /* 0xcf9 inside the range */
#define CFC_OFFSET 4 /* 0xcfc inside the range */

/* ECAM offset: bus 27:20, device 19:15, function 14:12, register 11:0. */
#define ECAM_BUS(off) ((off) >> 20)
#define ECAM_DEVFN(off) (((off) >> 12) & 0xff)
#define ECAM_REG(off) ((off)&0xfff)

/* Host bridge: the "QEMU PCIe host bridge" ids, which no guest quirks. */
#define HOST_BRIDGE_VENDOR 0x1b36
#define HOST_BRIDGE_DEVICE 0x0008
#define HOST_BRIDGE_CLASS 0x060000
#define HOST_BRIDGE_SUBSYS_VENDOR 0x1af4
#define HOST_BRIDGE_SUBSYS_ID 0x1100

static uint32_t bar_reg(int i)
{
	return PCI_BASE_ADDRESS_0 + 4 * (uint32_t)i;
}

static void set_wmask8(struct pci_device *d, uint32_t off, uint8_t m)
{
	d->wmask[off] = m;
}

static void set_wmask16(struct pci_device *d, uint32_t off, uint16_t m)
{
	pci_set_u16(&d->wmask[off], m);
}

static void set_wmask32(struct pci_device *d, uint32_t off, uint32_t m)
{
	pci_set_u32(&d->wmask[off], m);
}

void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint8_t revision,
		     uint16_t subsys_vendor, uint16_t subsys_id)
{
	uint8_t *c = d->cfg;

	d->name = name;
	d->slot = -1;
	d->intx_gsi = 0;
	memset(d->bar, 0, sizeof(d->bar));
	memset(d->cfg, 0, sizeof(d->cfg));
	memset(d->wmask, 0, sizeof(d->wmask));
	memset(d->w1cmask, 0, sizeof(d->w1cmask));
	d->last_cap = 0;
	d->cap_end = 0;

	pci_set_u16(c + PCI_VENDOR_ID, vendor);
	pci_set_u16(c + PCI_DEVICE_ID, device);
	c[PCI_REVISION_ID] = revision;
	c[PCI_CLASS_PROG] = (uint8_t)class_code;
	c[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	c[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	c[PCI_HEADER_TYPE] = 0; /* type 0, single function */
	pci_set_u16(c + PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
	pci_set_u16(c + PCI_SUBSYSTEM_ID, subsys_id);
	c[PCI_INTERRUPT_PIN] = PCI_INTX_PIN_A;

	set_wmask16(d, PCI_COMMAND, PCI_COMMAND_WMASK);
	pci_set_u16(&d->w1cmask[PCI_STATUS], PCI_STATUS_W1C);
	set_wmask8(d, PCI_CACHE_LINE_SIZE, 0xff);
	set_wmask8(d, PCI_LATENCY_TIMER, 0xff);
	set_wmask8(d, PCI_INTERRUPT_LINE, 0xff);
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* BAR type bits as the register shows them. */
static uint32_t bar_flags(const struct pci_bar *bar)
{
	if (bar->is_io)
		return PCI_BAR_IO;
	return (bar->is_64 ? PCI_BAR_MEM_64 : 0) |
	       (bar->prefetchable ? PCI_BAR_PREFETCH : 0);
}

/* True when slot @i is the upper half of the 64-bit BAR below it. */
static bool is_upper_half(const struct pci_device *d, int i)
{
	return i > 0 && d->bar[i - 1].size && d->bar[i - 1].is_64;
}

static int check_bar_args(const struct pci_device *d, int bar, uint64_t size,
			  bool is_io, bool is_64)
{
	if (bar < 0 || bar >= PCI_NUM_BARS || !is_pow2(size))
		return -EINVAL;
	if (is_io &&
	    (is_64 || size < PCI_BAR_MIN_IO || size > PCI_IO_END - PCI_IO_BASE))
		return -EINVAL;
	if (!is_io && size < PCI_BAR_MIN_MEM)
		return -EINVAL;
	if (!is_io && !is_64 && size > PCI_BAR_MAX_MEM32)
		return -EINVAL;
	if (is_64 && (bar + 1 >= PCI_NUM_BARS || d->bar[bar + 1].size))
		return -EINVAL;
	if (d->bar[bar].size || is_upper_half(d, bar))
		return -EINVAL;
	return 0;
}

int pci_device_set_bar(struct pci_device *d, int bar, uint64_t size, bool is_io,
		       bool is_64)
{
	struct pci_bar *b;
	uint32_t reg;
	uint64_t mask;
	int rc;

	if (!d)
		return -EINVAL;
	if (d->slot >= 0)
		return -EBUSY;
	rc = check_bar_args(d, bar, size, is_io, is_64);
	if (rc)
		return rc;
	b = &d->bar[bar];
	*b = (struct pci_bar){.size = size, .is_io = is_io, .is_64 = is_64};
	reg = bar_reg(bar);
	mask = ~(size - 1);
	pci_set_u32(&d->cfg[reg], bar_flags(b));
	set_wmask32(d, reg,
		    (uint32_t)mask & ~(uint32_t)(is_io ? PCI_BAR_IO_FLAGS :
							 PCI_BAR_MEM_FLAGS));
	if (is_64) {
		pci_set_u32(&d->cfg[reg + 4], 0);
		set_wmask32(d, reg + 4, (uint32_t)(mask >> 32));
	}
	return 0;
}

static uint32_t align4(uint32_t v)
{
	return (v + 3) & ~3u;
}

int pci_device_add_cap(struct pci_device *d, uint8_t cap_id, uint8_t len)
{
	uint32_t off;

	if (!d || len < 2)
		return -EINVAL;
	off = d->cap_end ? align4(d->cap_end) : PCI_CAP_START;
	if (off + len > PCI_LEGACY_CFG_SIZE)
		return -ENOSPC;
	memset(&d->cfg[off], 0, len);
	memset(&d->wmask[off], 0, len);
	memset(&d->w1cmask[off], 0, len);
	d->cfg[off] = cap_id;
	d->cfg[off + 1] = 0; /* end of the list */
	if (d->last_cap)
		d->cfg[d->last_cap + 1] = (uint8_t)off;
	else
		d->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	d->cfg[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
	d->last_cap = (uint8_t)off;
	d->cap_end = (uint16_t)(off + len);
	return (int)off;
}

/* --- what a BAR decodes --- */

/* The address bits now in BAR @i (both words of a 64-bit BAR). */
static uint64_t bar_raw_addr(const struct pci_device *d, int i)
{
	uint32_t reg = bar_reg(i);
	uint64_t addr = pci_get_u32(&d->cfg[reg]) & pci_get_u32(&d->wmask[reg]);

	if (d->bar[i].is_64)
		addr |= (uint64_t)(pci_get_u32(&d->cfg[reg + 4]) &
				   pci_get_u32(&d->wmask[reg + 4]))
			<< 32;
	return addr;
}

/* A register word with every writable bit set: the guest is sizing it. */
static bool word_sizing(const struct pci_device *d, uint32_t reg)
{
	uint32_t m = pci_get_u32(&d->wmask[reg]);

	return m && (pci_get_u32(&d->cfg[reg]) & m) == m;
}

/*
 * The address BAR @i decodes, or 0 when it decodes nothing: unassigned
 * (0), mid-sizing (all address bits of either word set; so a 64-bit BAR
 * whose low word is genuinely all-ones is not decoded either), or beyond
 * the port / physical address space.
 */
static uint64_t bar_decode_addr(const struct pci_device *d, int i)
{
	const struct pci_bar *bar = &d->bar[i];
	uint32_t reg = bar_reg(i);
	uint64_t addr = bar_raw_addr(d, i);
	uint64_t limit = bar->is_io ? PCI_IO_END : PCI_PHYS_LIMIT;

	if (word_sizing(d, reg) || (bar->is_64 && word_sizing(d, reg + 4)))
		return 0;
	if (!addr || addr > limit || bar->size > limit - addr)
		return 0;
	return addr;
}

static void notify_bar(struct pci_device *d, int i, uint64_t addr, bool mapped)
{
	if (d->ops && d->ops->bar_mapped)
		d->ops->bar_mapped(d, i, addr, mapped);
}

/* Bring every BAR's mapping in line with the command register and BARs. */
static void update_bars(struct pci_device *d)
{
	uint16_t cmd = pci_get_u16(&d->cfg[PCI_COMMAND]);

	for (int i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *bar = &d->bar[i];
		uint16_t enable =
			bar->is_io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
		uint64_t addr;

		if (!bar->size)
			continue;
		addr = (cmd & enable) ? bar_decode_addr(d, i) : 0;
		if (bar->mapped && addr != bar->addr) {
			bar->mapped = false;
			notify_bar(d, i, bar->addr, false);
		}
		if (addr && !bar->mapped) {
			bar->addr = addr;
			bar->mapped = true;
			notify_bar(d, i, addr, true);
		}
		if (!bar->mapped)
			bar->addr = bar_raw_addr(d, i);
	}
}

/* --- config space access (bus lock held) --- */

static struct pci_device *lookup(struct pci_bus *b, uint32_t devfn)
{
	if (devfn & 7)
		return NULL; /* only function 0 exists */
	return b->slot[(devfn >> 3) % PCI_MAX_SLOTS];
}

static void cfg_read_locked(struct pci_bus *b, uint32_t devfn, uint32_t off,
			    uint8_t *data, uint32_t len)
{
	struct pci_device *d = lookup(b, devfn);

	for (uint32_t i = 0; i < len; i++) {
		uint64_t at = (uint64_t)off + i;

		data[i] = d && at < PCI_CFG_SIZE ? d->cfg[at] : 0xff;
	}
}

static void cfg_write_locked(struct pci_bus *b, uint32_t devfn, uint32_t off,
			     const uint8_t *data, uint32_t len)
{
	struct pci_device *d = lookup(b, devfn);
	uint32_t n;

	if (!d || off >= PCI_CFG_SIZE)
		return;
	n = len < PCI_CFG_SIZE - off ? len : PCI_CFG_SIZE - off;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t at = off + i;
		uint8_t wm = d->wmask[at], v = data[i];

		d->cfg[at] = (uint8_t)((d->cfg[at] & ~wm) | (v & wm));
		d->cfg[at] &= (uint8_t) ~(v & d->w1cmask[at]);
	}
	update_bars(d);
	if (d->ops && d->ops->cfg_written)
		d->ops->cfg_written(d, off, n);
}

void pci_device_restore_cfg(struct pci_bus *b, struct pci_device *d,
			    const uint8_t *cfg)
{
	pthread_mutex_lock(&b->lock);
	for (uint32_t i = 0; i < PCI_CFG_SIZE; i++)
		d->cfg[i] = (uint8_t)((d->cfg[i] & ~d->wmask[i]) |
				      (cfg[i] & d->wmask[i]));
	update_bars(d);
	pthread_mutex_unlock(&b->lock);
}

void pci_cfg_read(struct pci_bus *b, uint8_t devfn, uint32_t off, uint8_t *data,
		  uint32_t len)
{
	pthread_mutex_lock(&b->lock);
	cfg_read_locked(b, devfn, off, data, len);
	pthread_mutex_unlock(&b->lock);
}

void pci_cfg_write(struct pci_bus *b, uint8_t devfn, uint32_t off,
		   const uint8_t *data, uint32_t len)
{
	pthread_mutex_lock(&b->lock);
	cfg_write_locked(b, devfn, off, data, len);
	pthread_mutex_unlock(&b->lock);
}

/* --- guest access paths --- */

static void cf8_latch_io(struct pci_bus *b, uint8_t *data, bool is_write)
{
	pthread_mutex_lock(&b->lock);
	if (is_write)
		b->cf8 = pci_get_u32(data) & CF8_MASK;
	else
		pci_set_u32(data, b->cf8);
	pthread_mutex_unlock(&b->lock);
}

/*
 * A remote slot's access goes to its home node. Called with the bus lock
 * held; drops it (the answer may take a network round trip) and returns
 * true if it took the access.
 */
static bool route_remote(struct pci_bus *b, uint32_t devfn, uint32_t off,
			 uint8_t *data, uint32_t len, bool is_write)
{
	int home = b->slot_home[(devfn >> 3) % PCI_MAX_SLOTS];

	if (home < 0 || !b->remote_cfg)
		return false;
	pthread_mutex_unlock(&b->lock);
	b->remote_cfg(b->remote_opaque, home, (uint8_t)devfn, off, data, len,
		      is_write);
	return true;
}

/* CONFIG_DATA: @at is 0..3 within 0xcfc, @len ends at or before 0xd00. */
static void cfc_io(struct pci_bus *b, uint32_t at, uint8_t *data, uint32_t len,
		   bool is_write)
{
	uint32_t cf8;

	pthread_mutex_lock(&b->lock);
	cf8 = b->cf8;
	if ((cf8 & CF8_ENABLE) && CF8_BUS(cf8) == 0 &&
	    route_remote(b, CF8_DEVFN(cf8), CF8_REG(cf8) + at, data, len,
			 is_write))
		return;
	if (!(cf8 & CF8_ENABLE) || CF8_BUS(cf8) != 0) {
		if (!is_write)
			memset(data, 0xff, len);
	} else if (is_write) {
		cfg_write_locked(b, CF8_DEVFN(cf8), CF8_REG(cf8) + at, data,
				 len);
	} else {
		cfg_read_locked(b, CF8_DEVFN(cf8), CF8_REG(cf8) + at, data,
				len);
	}
	pthread_mutex_unlock(&b->lock);
}

static void cf8_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		   bool is_write, int vcpu_id)
{
	struct pci_bus *b = opaque;

	if (offset >= CF8_LEN || len > CF8_LEN - offset) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (offset == CF9_OFFSET && len == 1) {
		if (b->cf9)
			b->cf9(b->cf9_opaque, 0, data, 1, is_write, vcpu_id);
		else if (!is_write)
			data[0] = 0xff;
		return;
	}
	if (offset == 0 && len == 4) {
		cf8_latch_io(b, data, is_write);
		return;
	}
	if (offset >= CFC_OFFSET) {
		cfc_io(b, (uint32_t)offset - CFC_OFFSET, data, len, is_write);
		return;
	}
	/* Any other access touching 0xcf8-0xcfb is not a register. */
	if (!is_write)
		memset(data, 0xff, len);
}

static void ecam_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	struct pci_bus *b = opaque;

	(void)vcpu_id;
	if (offset >= PCI_ECAM_SIZE || ECAM_BUS(offset) != 0) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&b->lock);
	if (route_remote(b, (uint32_t)ECAM_DEVFN(offset),
			 (uint32_t)ECAM_REG(offset), data, len, is_write))
		return;
	if (is_write)
		cfg_write_locked(b, (uint32_t)ECAM_DEVFN(offset),
				 (uint32_t)ECAM_REG(offset), data, len);
	else
		cfg_read_locked(b, (uint32_t)ECAM_DEVFN(offset),
				(uint32_t)ECAM_REG(offset), data, len);
	pthread_mutex_unlock(&b->lock);
}

/* --- the bus --- */

static void host_bridge_init(struct pci_device *h)
{
	memset(h, 0, sizeof(*h));
	pci_device_init(h, "host-bridge", HOST_BRIDGE_VENDOR,
			HOST_BRIDGE_DEVICE, HOST_BRIDGE_CLASS, 0,
			HOST_BRIDGE_SUBSYS_VENDOR, HOST_BRIDGE_SUBSYS_ID);
	h->cfg[PCI_INTERRUPT_PIN] = 0; /* raises no interrupts */
	h->slot = 0;
	pci_set_u16(&h->cfg[PCI_COMMAND], PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
}

int pci_bus_init(struct pci_bus *b, struct io_registry *io, io_handler_fn cf9,
		 void *cf9_opaque)
{
	int rc;

	if (!b || !io)
		return -EINVAL;
	memset(b, 0, sizeof(*b));
	if (pthread_mutex_init(&b->lock, NULL))
		return -ENOMEM;
	b->io = io;
	b->cf9 = cf9;
	b->cf9_opaque = cf9_opaque;
	b->mmio_next = PCI_MMIO_BASE;
	b->io_next = PCI_IO_BASE;
	for (int s = 0; s < PCI_MAX_SLOTS; s++)
		b->slot_home[s] = -1;
	host_bridge_init(&b->host_bridge);
	b->slot[0] = &b->host_bridge;
	rc = ioreg_register(io, IO_SPACE_PIO, CF8_PORT, CF8_LEN, cf8_io, b,
			    "pci-config");
	if (rc)
		goto fail;
	rc = ioreg_register(io, IO_SPACE_MMIO, PCI_ECAM_BASE, PCI_ECAM_SIZE,
			    ecam_io, b, "pci-ecam");
	if (!rc)
		return 0;
	ioreg_unregister(io, IO_SPACE_PIO, CF8_PORT);
fail:
	pthread_mutex_destroy(&b->lock);
	return rc;
}

void pci_bus_destroy(struct pci_bus *b)
{
	ioreg_unregister(b->io, IO_SPACE_MMIO, PCI_ECAM_BASE);
	ioreg_unregister(b->io, IO_SPACE_PIO, CF8_PORT);
	pthread_mutex_destroy(&b->lock);
}

/* Next @size-aligned block of @size bytes from *@next below @end. */
static int alloc_in(uint64_t *next, uint64_t end, uint64_t size, uint64_t *out)
{
	uint64_t a = (*next + size - 1) & ~(size - 1);

	if (a < *next || a > end || size > end - a)
		return -ENOSPC;
	*out = a;
	*next = a + size;
	return 0;
}

void pci_bus_set_cluster(struct pci_bus *b, pci_remote_cfg_fn fn, void *opaque)
{
	b->slot_windows = true;
	b->remote_cfg = fn;
	b->remote_opaque = opaque;
}

int pci_bus_set_remote_slot(struct pci_bus *b, int slot, int node)
{
	if (slot < 1 || slot >= PCI_MAX_SLOTS || node < 0 || b->slot[slot])
		return -EINVAL;
	b->slot_home[slot] = node;
	return 0;
}

int pci_slot_of_window(enum io_space space, uint64_t addr)
{
	if (space == IO_SPACE_MMIO && addr >= PCI_MMIO_BASE &&
	    addr < PCI_MMIO_END)
		return (int)((addr - PCI_MMIO_BASE) / PCI_SLOT_MMIO_WINDOW);
	if (space == IO_SPACE_PIO && addr >= PCI_IO_BASE && addr < PCI_IO_END)
		return (int)((addr - PCI_IO_BASE) / PCI_SLOT_IO_WINDOW);
	return -1;
}

/* Choose addresses for every BAR; commits to the bus only on success. */
static int place_bars(struct pci_bus *b, struct pci_device *d, int slot)
{
	uint64_t mmio = b->mmio_next, io = b->io_next;
	uint64_t mmio_end = PCI_MMIO_END, io_end = PCI_IO_END;
	uint64_t addr[PCI_NUM_BARS] = {0};

	if (b->slot_windows) {
		mmio = PCI_MMIO_BASE + (uint64_t)slot * PCI_SLOT_MMIO_WINDOW;
		mmio_end = mmio + PCI_SLOT_MMIO_WINDOW;
		io = PCI_IO_BASE + (uint64_t)slot * PCI_SLOT_IO_WINDOW;
		io_end = io + PCI_SLOT_IO_WINDOW;
	}

	for (int i = 0; i < PCI_NUM_BARS; i++) {
		const struct pci_bar *bar = &d->bar[i];
		int rc;

		if (!bar->size)
			continue;
		if (bar->is_io)
			rc = alloc_in(&io, io_end, bar->size, &addr[i]);
		else
			rc = alloc_in(&mmio, mmio_end, bar->size, &addr[i]);
		if (rc)
			return rc;
	}
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		const struct pci_bar *bar = &d->bar[i];
		uint32_t reg = bar_reg(i);

		if (!bar->size)
			continue;
		pci_set_u32(&d->cfg[reg], (uint32_t)addr[i] | bar_flags(bar));
		if (bar->is_64)
			pci_set_u32(&d->cfg[reg + 4],
				    (uint32_t)(addr[i] >> 32));
	}
	if (!b->slot_windows) {
		b->mmio_next = mmio;
		b->io_next = (uint32_t)io;
	}
	return 0;
}

static int free_slot(const struct pci_bus *b, const struct pci_device *d)
{
	int found = -ENOSPC;

	for (int s = PCI_MAX_SLOTS - 1; s >= 1; s--) {
		if (b->slot[s] == d)
			return -EEXIST;
		if (!b->slot[s] && b->slot_home[s] < 0)
			found = s;
	}
	return found;
}

int pci_bus_add(struct pci_bus *b, struct pci_device *d)
{
	int slot, rc;

	if (!b || !d || d == &b->host_bridge)
		return -EINVAL;
	if (d->slot >= 0)
		return -EEXIST;
	pthread_mutex_lock(&b->lock);
	slot = free_slot(b, d);
	if (slot < 0) {
		rc = slot;
		goto out;
	}
	rc = place_bars(b, d, slot);
	if (rc)
		goto out;
	d->slot = slot;
	/* Swizzle: INTA# of slot s -> GSI base + s % count (see pci.h). */
	d->intx_gsi = PCI_INTX_GSI_BASE + (uint32_t)slot % PCI_INTX_GSI_COUNT;
	d->cfg[PCI_INTERRUPT_LINE] = (uint8_t)d->intx_gsi;
	pci_set_u16(&d->cfg[PCI_COMMAND],
		    pci_get_u16(&d->cfg[PCI_COMMAND]) | PCI_COMMAND_MEMORY |
			    PCI_COMMAND_IO | PCI_COMMAND_MASTER);
	b->slot[slot] = d;
	update_bars(d);
	rc = slot;
out:
	pthread_mutex_unlock(&b->lock);
	return rc;
}
