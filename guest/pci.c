/*
 * pci.c - PCI enumeration in user mode (see pci.h): configuration access
 * through ECAM when the ACPI MCFG table describes it, else mechanism #1
 * through the port syscalls; bus 0 and the buses behind bridges the
 * firmware numbered; BAR sizing with the all-ones probe (decode off while
 * probing, the old value restored); capability lists; mapping BARs
 * uncached; MSI-X table programming.
 *
 * Page tables: boot.S maps 0-4 GiB with 2 MiB pages and main.c maps RAM
 * above 4 GiB. QEMU's SeaBIOS may put 64-bit BARs far above RAM (even near
 * the top of the physical address space), so instead of mapping a fixed
 * 64 GiB, map_mmio() maps exactly the BARs we use: the page tables are
 * ordinary user-writable memory here, new tables come from a small static
 * pool, and the only kernel help needed is a TLB flush (SYS_FLUSH_TLB).
 */
#include "pci.h"

#define CF8_PORT	0xcf8
#define CFC_PORT	0xcfc
#define MCFG_ENTRIES	44
#define PAGE_2M		(2ULL << 20)
#define PTE_P		0x1ULL
#define PTE_RW		0x2ULL
#define PTE_US		0x4ULL
#define PTE_PWT		0x8ULL
#define PTE_PCD		0x10ULL
#define PTE_PS		0x80ULL
#define PTE_ADDR	0x000ffffffffff000ULL
#define PT_POOL_PAGES	16

struct pci_info pci;

static u64 pt_pool[PT_POOL_PAGES][512] __attribute__((aligned(4096)));
static int pt_pool_used;

/* ---- configuration space ---- */

static volatile u8 *ecam_addr(u8 bus, u8 dev, u8 fn, u32 off)
{
	return (volatile u8 *)(pci.ecam_base +
			       ((u64)(bus - pci.ecam_bus_start) << 20 |
				dev << 15 | fn << 12 | off));
}

static u32 cfg_read(u8 bus, u8 dev, u8 fn, u32 off, int width)
{
	u32 ones = width == 4 ? 0xffffffff : (1U << (8 * width)) - 1;

	if (pci.ecam) {
		volatile u8 *p;

		if (bus < pci.ecam_bus_start || bus > pci.ecam_bus_end ||
		    off >= 4096)
			return ones;
		p = ecam_addr(bus, dev, fn, off);
		return width == 1 ? mmio_r8(p) : width == 2 ? mmio_r16(p)
							    : mmio_r32(p);
	}
	if (off >= 256)
		return ones;
	port_out(CF8_PORT, 4, 0x80000000 | bus << 16 | dev << 11 | fn << 8 |
				      (off & 0xfc));
	return port_in(CFC_PORT + (off & 3), width);
}

static void cfg_write(u8 bus, u8 dev, u8 fn, u32 off, int width, u32 v)
{
	if (pci.ecam) {
		volatile u8 *p;

		if (bus < pci.ecam_bus_start || bus > pci.ecam_bus_end ||
		    off >= 4096)
			return;
		p = ecam_addr(bus, dev, fn, off);
		if (width == 1)
			mmio_w8(p, v);
		else if (width == 2)
			mmio_w16(p, v);
		else
			mmio_w32(p, v);
		return;
	}
	if (off >= 256)
		return;
	port_out(CF8_PORT, 4, 0x80000000 | bus << 16 | dev << 11 | fn << 8 |
				      (off & 0xfc));
	port_out(CFC_PORT + (off & 3), width, v);
}

u32 pci_read(const struct pci_dev *d, u32 off, int width)
{
	return cfg_read(d->bus, d->dev, d->fn, off, width);
}

void pci_write(const struct pci_dev *d, u32 off, int width, u32 v)
{
	cfg_write(d->bus, d->dev, d->fn, off, width, v);
}

u8 pci_find_cap(const struct pci_dev *d, u8 id, int *i)
{
	for (; *i < d->ncaps; (*i)++)
		if (d->cap_id[*i] == id)
			return d->cap_off[(*i)++];
	return 0;
}

void pci_name(const struct pci_dev *d, char *buf, size_t len)
{
	snprintf(buf, len, "%02x:%02x.%u", d->bus, d->dev, d->fn);
}

/* ---- page tables ---- */

static bool overlaps_ram(u64 a, u64 len)
{
	for (u32 i = 0; i < sys.nmemmap; i++) {
		struct hvm_memmap_entry *m = &sys.memmap[i];

		if (m->type == E820_RAM && m->size && a < m->addr + m->size &&
		    m->addr < a + len)
			return true;
	}
	return false;
}

/* The table entry e points to, made from the pool if not present. */
static u64 *next_table(u64 *e)
{
	u64 *t;

	if (*e & PTE_P)
		return (*e & PTE_PS) ? NULL : (u64 *)(*e & PTE_ADDR);
	if (pt_pool_used == PT_POOL_PAGES)
		return NULL;
	t = pt_pool[pt_pool_used++];	/* zeroed .bss */
	*e = (u64)t | PTE_P | PTE_RW | PTE_US;
	return t;
}

bool map_mmio(u64 addr, u64 size)
{
	bool ok = true;

	for (u64 a = addr & ~(PAGE_2M - 1); a < addr + size; a += PAGE_2M) {
		u64 *pdpt, *pd;

		if (overlaps_ram(a, PAGE_2M))
			continue;	/* stays write-back */
		pdpt = next_table(&pml4[a >> 39 & 511]);
		pd = pdpt ? next_table(&pdpt[a >> 30 & 511]) : NULL;
		if (!pd) {
			ok = false;
			break;
		}
		pd[a >> 21 & 511] = a | PTE_P | PTE_RW | PTE_US | PTE_PS |
				    PTE_PWT | PTE_PCD;
	}
	syscall4(SYS_FLUSH_TLB, 0, 0, 0, 0);
	return ok;
}

/* ---- enumeration ---- */

static void find_mcfg(void)
{
	struct acpi_info *a = &sys.acpi;

	for (u32 i = 0; i < a->ntables; i++) {
		u64 t = a->tables[i];
		u32 len;

		if (!t || !phys_ok(t, 36) || memcmp((void *)t, "MCFG", 4))
			continue;
		len = *(u32 *)(t + 4);
		for (u32 off = MCFG_ENTRIES; off + 16 <= len; off += 16) {
			u8 *e = (u8 *)t + off;
			u64 base = *(u64 *)e;
			u16 seg = *(u16 *)(e + 8);

			if (seg || e[10] > 0 || e[11] < e[10] || !base)
				continue;	/* want segment 0 with bus 0 */
			pci.ecam = true;
			pci.ecam_base = base;
			pci.ecam_bus_start = e[10];
			pci.ecam_bus_end = e[11];
			map_mmio(base, (u64)(e[11] - e[10] + 1) << 20);
			return;
		}
	}
}

static void probe_bars(struct pci_dev *d, int nbars)
{
	u16 cmd = pci_read(d, PCI_COMMAND, 2);

	/* No decoding while a BAR holds all ones. */
	pci_write(d, PCI_COMMAND, 2, cmd & ~(PCI_CMD_IO | PCI_CMD_MEM));
	for (int i = 0; i < nbars; i++) {
		u32 off = PCI_BAR0 + 4 * i, lo = pci_read(d, off, 4), lo_m;
		struct pci_bar *b = &d->bar[i];

		pci_write(d, off, 4, 0xffffffff);
		lo_m = pci_read(d, off, 4);
		pci_write(d, off, 4, lo);
		if (!lo_m)
			continue;	/* not implemented */
		if (lo & 1) {
			u64 mask = lo_m & ~3U;

			if (!(mask & 0xffff0000))
				mask |= 0xffff0000;	/* 16-bit decoder */
			b->io = true;
			b->addr = lo & ~3U;
			b->size = (u32)(~mask + 1);
			continue;
		}
		b->prefetch = lo & 8;
		if ((lo & 6) == 4 && i + 1 < nbars) {
			u32 hi = pci_read(d, off + 4, 4), hi_m;

			pci_write(d, off + 4, 4, 0xffffffff);
			hi_m = pci_read(d, off + 4, 4);
			pci_write(d, off + 4, 4, hi);
			b->is64 = true;
			b->addr = (u64)hi << 32 | (lo & ~0xfU);
			b->size = ~((u64)hi_m << 32 | (lo_m & ~0xfU)) + 1;
			i++;
			continue;
		}
		b->addr = lo & ~0xfU;
		b->size = (u32)(~(lo_m & ~0xfU) + 1);
	}
	pci_write(d, PCI_COMMAND, 2, cmd);
}

static void read_caps(struct pci_dev *d)
{
	u8 off;

	if (!(pci_read(d, PCI_STATUS, 2) & PCI_STATUS_CAPS))
		return;
	off = pci_read(d, PCI_CAP_PTR, 1) & ~3;
	/* at most 48 capabilities fit in 192 bytes: a longer list loops */
	for (int n = 0; off >= 0x40 && n < 48; n++) {
		u8 id = pci_read(d, off, 1);

		if (d->ncaps < PCI_MAX_CAPS) {
			d->cap_id[d->ncaps] = id;
			d->cap_off[d->ncaps++] = off;
		}
		off = pci_read(d, off + 1, 1) & ~3;
	}
}

static void read_msix(struct pci_dev *d)
{
	int i = 0;
	u8 cap = pci_find_cap(d, PCI_CAP_MSIX, &i);
	u32 table;
	struct pci_bar *b;

	if (!cap)
		return;
	table = pci_read(d, cap + 4, 4);
	b = &d->bar[table & 7];
	d->msix_size = (pci_read(d, cap + 2, 2) & 0x7ff) + 1;
	if ((table & 7) > 5 || b->io || !b->addr ||
	    (table & ~7U) + 16ULL * d->msix_size > b->size)
		return;		/* unusable */
	d->msix_cap = cap;
	d->msix_table = (volatile u32 *)(b->addr + (table & ~7U));
}

static void scan_bus(u8 bus, int depth);

static void add_function(u8 bus, u8 dev, u8 fn, u32 id, int depth)
{
	struct pci_dev *d;

	if (pci.ndevs == PCI_MAX_DEVS) {
		snprintf(pci.error, MSG_LEN, "more than %d functions",
			 PCI_MAX_DEVS);
		return;
	}
	d = &pci.devs[pci.ndevs++];
	memset(d, 0, sizeof(*d));
	d->bus = bus;
	d->dev = dev;
	d->fn = fn;
	d->vendor = id;
	d->device = id >> 16;
	d->class = pci_read(d, 0x08, 4) >> 8;
	d->header_type = pci_read(d, PCI_HEADER_TYPE, 1) & 0x7f;
	if (d->header_type == 0) {
		d->subsys_vendor = pci_read(d, PCI_SUBSYS_VENDOR, 2);
		d->subsys_id = pci_read(d, PCI_SUBSYS_ID, 2);
		probe_bars(d, 6);
	} else if (d->header_type == 1) {
		probe_bars(d, 2);
	}
	read_caps(d);
	read_msix(d);
	if (d->header_type == 1) {
		u8 secondary = pci_read(d, 0x19, 1);

		pci.nbridges++;
		/* follow what the firmware numbered, never backwards */
		if (secondary > bus && depth < 8)
			scan_bus(secondary, depth + 1);
	}
}

static void scan_bus(u8 bus, int depth)
{
	for (u8 dev = 0; dev < 32; dev++) {
		u32 id = cfg_read(bus, dev, 0, 0, 4);
		int nfn;

		if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
			continue;
		nfn = (cfg_read(bus, dev, 0, PCI_HEADER_TYPE, 1) & 0x80) ? 8 : 1;
		add_function(bus, dev, 0, id, depth);
		for (u8 fn = 1; fn < nfn; fn++) {
			id = cfg_read(bus, dev, fn, 0, 4);
			if ((id & 0xffff) != 0xffff && (id & 0xffff) != 0)
				add_function(bus, dev, fn, id, depth);
		}
	}
}

bool pci_init(void)
{
	if (pci.done)
		return !pci.error[0];
	pci.done = true;
	if (!cmdline_u64("pci_cf8", 0))
		find_mcfg();
	scan_bus(0, 0);
	/* map every memory BAR uncached, wherever the firmware put it */
	for (int i = 0; i < pci.ndevs; i++)
		for (int b = 0; b < 6; b++) {
			struct pci_bar *bar = &pci.devs[i].bar[b];

			if (bar->size && !bar->io && bar->addr &&
			    !map_mmio(bar->addr, bar->size) && !pci.error[0])
				snprintf(pci.error, MSG_LEN, "cannot map BAR "
					 "at %lx: page table pool exhausted",
					 bar->addr);
		}
	return !pci.error[0];
}

/* ---- MSI-X ---- */

bool pci_msix_enable(struct pci_dev *d)
{
	u16 ctrl;

	if (!d->msix_cap)
		return false;
	ctrl = pci_read(d, d->msix_cap + 2, 2);
	pci_write(d, d->msix_cap + 2, 2, (ctrl | 0x8000) & ~0x4000);
	pci_write(d, PCI_COMMAND, 2,
		  pci_read(d, PCI_COMMAND, 2) | PCI_CMD_INTX_DISABLE);
	return pci_read(d, d->msix_cap + 2, 2) & 0x8000;
}

bool pci_msix_set(struct pci_dev *d, u16 entry, u32 apic_id, u8 idt_vector)
{
	volatile u32 *e;

	if (!d->msix_table || entry >= d->msix_size)
		return false;
	e = d->msix_table + 4 * entry;
	mmio_w32(&e[3], 1);				/* masked */
	mmio_w32(&e[0], 0xfee00000 | apic_id << 12);	/* fixed, physical */
	mmio_w32(&e[1], 0);
	mmio_w32(&e[2], idt_vector);			/* edge */
	mmio_w32(&e[3], 0);				/* unmasked */
	return true;
}
