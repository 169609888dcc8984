/*
 * tests_virtio.c - PCI and the small virtio devices: the `pci` test (list
 * and sanity-check every function and BAR), the virtio-rng driver and the
 * `rng` test, `vconsole` (a line to virtio-console port 0), `badring` (a
 * descriptor outside RAM must put the device in NEEDS_RESET without
 * hurting others, and a reset must revive it) and `kickbench` (doorbell
 * and round-trip cost). None is in the default set.
 */
#include "virtio.h"
#include "net.h"

#define KIB 1024UL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define FOUR_GIB (4 * GIB)
#define APIC_HOLE 0xfec00000UL		/* IOAPIC, LAPIC, firmware above */
#define RNG_BUF 4096
#define IO_TIMEOUT (5 * NSEC_PER_SEC)

/* ---- pci ---- */

static void fmt_size(char *buf, size_t len, u64 v)
{
	if (v >= GIB && !(v % GIB))
		snprintf(buf, len, "%luG", v / GIB);
	else if (v >= MIB && !(v % MIB))
		snprintf(buf, len, "%luM", v / MIB);
	else if (v >= KIB && !(v % KIB))
		snprintf(buf, len, "%luK", v / KIB);
	else
		snprintf(buf, len, "%lu", v);
}

static bool is_virtio(const struct pci_dev *d)
{
	return d->vendor == 0x1af4 && d->device >= 0x1000 &&
	       d->device <= 0x107f;
}

static bool overlap(u64 a, u64 alen, u64 b, u64 blen)
{
	return a < b + blen && b < a + alen;
}

static bool check_bar(const struct pci_dev *d, int i, u64 low_top,
		      u64 ram_top, char *msg)
{
	const struct pci_bar *b = &d->bar[i];
	char name[16];

	pci_name(d, name, sizeof(name));
	if (b->size & (b->size - 1))
		return FAIL("%s bar%d: size %lx is not a power of two", name,
			    i, b->size);
	if (!b->addr)
		return FAIL("%s bar%d: not assigned (address 0)", name, i);
	if (b->addr & (b->size - 1))
		return FAIL("%s bar%d: %lx not aligned to its size %lx", name,
			    i, b->addr, b->size);
	if (b->io && b->addr + b->size > 0x10000)
		return FAIL("%s bar%d: I/O %lx+%lx beyond 64 KiB", name, i,
			    b->addr, b->size);
	if (b->io)
		return true;
	for (u32 m = 0; m < sys.nmemmap; m++)
		if (sys.memmap[m].type == E820_RAM &&
		    overlap(b->addr, b->size, sys.memmap[m].addr,
			    sys.memmap[m].size))
			return FAIL("%s bar%d: %lx+%lx overlaps RAM %lx+%lx",
				    name, i, b->addr, b->size,
				    sys.memmap[m].addr, sys.memmap[m].size);
	if (b->addr < FOUR_GIB &&
	    (b->addr < low_top || b->addr + b->size > APIC_HOLE))
		return FAIL("%s bar%d: %lx+%lx outside the 32-bit MMIO hole "
			    "%lx-%lx", name, i, b->addr, b->size, low_top,
			    APIC_HOLE);
	if (b->addr >= FOUR_GIB && b->addr < ram_top)
		return FAIL("%s bar%d: %lx below the end of RAM %lx", name, i,
			    b->addr, ram_top);
	if (pci.ecam && overlap(b->addr, b->size, pci.ecam_base,
				(u64)(pci.ecam_bus_end -
				      pci.ecam_bus_start + 1) << 20))
		return FAIL("%s bar%d: %lx+%lx overlaps ECAM at %lx", name, i,
			    b->addr, b->size, pci.ecam_base);
	return true;
}

static void print_dev(const struct pci_dev *d)
{
	char line[400], name[16], sz[16];
	int n;

	pci_name(d, name, sizeof(name));
	n = snprintf(line, sizeof(line), "INFO pci %s %04x:%04x class %06x",
		     name, d->vendor, d->device, d->class);
	for (int i = 0; i < 6; i++) {
		const struct pci_bar *b = &d->bar[i];

		if (!b->size)
			continue;
		fmt_size(sz, sizeof(sz), b->size);
		n += snprintf(line + n, sizeof(line) - n, " bar%d=%s%s:%lx/%s",
			      i, b->io ? "io" : b->is64 ? "mem64" : "mem32",
			      b->prefetch ? "pf" : "", b->addr, sz);
	}
	if (d->ncaps)
		n += snprintf(line + n, sizeof(line) - n, " caps=");
	for (int i = 0; i < d->ncaps; i++)
		n += snprintf(line + n, sizeof(line) - n, "%s%02x",
			      i ? "," : "", d->cap_id[i]);
	if (d->msix_cap)
		n += snprintf(line + n, sizeof(line) - n, " msix=%u",
			      d->msix_size);
	if (d->header_type == 1)
		n += snprintf(line + n, sizeof(line) - n, " bridge->%02x",
			      pci_read(d, 0x19, 1));
	printf("%s\n", line);
}

bool test_pci(char *msg)
{
	u64 low_top = 0, ram_top = 0;
	int nvirtio = 0;

	if (!pci_init())
		return FAIL("%s", pci.error);
	for (u32 m = 0; m < sys.nmemmap; m++) {
		u64 end = sys.memmap[m].addr + sys.memmap[m].size;

		if (sys.memmap[m].type != E820_RAM)
			continue;
		if (end > ram_top)
			ram_top = end;
		if (end <= FOUR_GIB && end > low_top)
			low_top = end;
	}
	printf("INFO pci: %s, %d functions, %d bridges\n",
	       pci.ecam ? "ECAM (MCFG)" : "configuration mechanism #1",
	       pci.ndevs, pci.nbridges);
	for (int i = 0; i < pci.ndevs; i++) {
		print_dev(&pci.devs[i]);
		nvirtio += is_virtio(&pci.devs[i]);
	}
	for (int i = 0; i < pci.ndevs; i++) {
		const struct pci_dev *d = &pci.devs[i];

		for (int b = 0; b < 6; b++)
			if (d->bar[b].size &&
			    !check_bar(d, b, low_top, ram_top, msg))
				return false;
	}
	/* no two BARs of the same space may overlap */
	for (int i = 0; i < pci.ndevs; i++)
		for (int b = 0; b < 6; b++)
			for (int j = i; j < pci.ndevs; j++)
				for (int c = j == i ? b + 1 : 0; c < 6; c++) {
					const struct pci_bar *x =
						&pci.devs[i].bar[b];
					const struct pci_bar *y =
						&pci.devs[j].bar[c];
					char n1[16], n2[16];

					if (!x->size || !y->size ||
					    x->io != y->io ||
					    !overlap(x->addr, x->size, y->addr,
						     y->size))
						continue;
					pci_name(&pci.devs[i], n1, sizeof(n1));
					pci_name(&pci.devs[j], n2, sizeof(n2));
					return FAIL("%s bar%d and %s bar%d "
						    "overlap at %lx", n1, b,
						    n2, c, y->addr);
				}
	if (!nvirtio)
		return FAIL("no virtio device among %d functions", pci.ndevs);
	snprintf(msg, MSG_LEN, "%d functions, %d virtio, %s", pci.ndevs,
		 nvirtio, pci.ecam ? "ECAM" : "CF8/CFC");
	return true;
}

/* ---- virtio-rng ---- */

bool rng_open(struct vdev *vd, char *msg)
{
	if (virtio_live(vd))
		return true;
	if (!vd->priv && !(vd->priv = dma_alloc(RNG_BUF, 64)))
		return FAIL("DMA arena exhausted");
	return virtio_begin(vd, 0, msg) &&
	       virtio_setup_vq(vd, 0, 64, true, msg) && virtio_ready(vd, msg);
}

long rng_read(struct vdev *vd, void *buf, u32 len, u64 timeout_ns,
	      char *msg)
{
	struct vq *q = &vd->vq[0];
	struct vbuf vb = { (u64)vd->priv, len < RNG_BUF ? len : RNG_BUF,
			   true };
	void *cookie;
	u32 got;

	if (vq_add(q, &vb, 1, vd->priv, false)) {
		snprintf(msg, MSG_LEN, "%s: queue full", vd->name);
		return -1;
	}
	vq_kick(q);
	if (!vq_wait(q, timeout_ns)) {
		vd->broken = true;
		snprintf(msg, MSG_LEN, "%s: no answer in %lu ms (status %x)",
			 vd->name, timeout_ns / NSEC_PER_MSEC,
			 virtio_status(vd));
		return -1;
	}
	if (vq_get(q, &cookie, &got) < 0) {
		snprintf(msg, MSG_LEN, "%s: %s", vd->name, q->error);
		return -1;
	}
	if (cookie != vd->priv || got > vb.len) {
		snprintf(msg, MSG_LEN, "%s: used entry for %p with %u bytes "
			 "(asked %u)", vd->name, cookie, got, vb.len);
		return -1;
	}
	memcpy(buf, vd->priv, got);
	return got;
}

/* Not all zero, not constant, and most byte values present. */
static bool looks_random(const u8 *p, u32 len, char *what, char *msg)
{
	static u8 seen[256];
	u32 distinct = 0;

	memset(seen, 0, sizeof(seen));
	for (u32 i = 0; i < len; i++)
		if (!seen[p[i]]++)
			distinct++;
	if (distinct == 1)
		return FAIL("%s: %u bytes all %02x", what, len, p[0]);
	if (len >= 4096 && distinct < 200)
		return FAIL("%s: only %u distinct byte values in %u bytes",
			    what, distinct, len);
	return true;
}

#define RNG_TOTAL 4096
#define RNG_PARALLEL 4

bool test_rng(char *msg)
{
	static u8 data[RNG_TOTAL];
	struct vdev *vd;
	struct vq *q;
	u8 *bufs;
	u32 total = 0, chunk = RNG_TOTAL / RNG_PARALLEL;
	u64 irq0, t0;

	if (!virtio_probe(msg))
		return false;
	vd = virtio_find(VIRTIO_ID_RNG, 0);
	if (!vd)
		return FAIL("no virtio-rng device");
	if (!rng_open(vd, msg))
		return false;
	q = &vd->vq[0];
	irq0 = vq_irqs(q);
	t0 = clock_ns();
	/* several requests in flight at once, into separate buffers */
	bufs = vd->priv;
	while (total < RNG_TOTAL) {
		int posted = 0;

		for (int i = 0; i < RNG_PARALLEL; i++) {
			struct vbuf vb = { (u64)bufs + i * chunk, chunk, true };

			if (vq_add(q, &vb, 1, bufs + i * chunk, false))
				return FAIL("queue full");
			posted++;
		}
		vq_kick(q);
		while (posted--) {
			void *cookie;
			u32 got;
			int r;

			if (!vq_wait(q, IO_TIMEOUT)) {
				vd->broken = true;
				return FAIL("no answer in 5 s (status %x)",
					    virtio_status(vd));
			}
			r = vq_get(q, &cookie, &got);
			if (r < 0)
				return FAIL("%s", q->error);
			if (got > chunk || (u8 *)cookie < bufs ||
			    (u8 *)cookie >= bufs + RNG_TOTAL)
				return FAIL("bad completion %p len %u", cookie,
					    got);
			if (got > RNG_TOTAL - total)
				got = RNG_TOTAL - total;
			memcpy(data + total, cookie, got);
			total += got;
		}
	}
	if (!looks_random(data, RNG_TOTAL, "virtio-rng", msg))
		return false;
	printf("INFO rng: %u bytes in %lu us, %lu MSI-X interrupts, kicks "
	       "%lu (suppressed %lu)\n", total, (clock_ns() - t0) / 1000,
	       vq_irqs(q) - irq0, q->kicks, q->kicks_suppressed);
	snprintf(msg, MSG_LEN, "%u random bytes from %s", total, vd->name);
	return true;
}

/* ---- vconsole ---- */

#define CONSOLE_F_MULTIPORT 1
#define CONSOLE_RX_BUFS 4

bool test_vconsole(char *msg)
{
	static const char line[] = "virtio-console says hello\n";
	struct vdev *vd;
	struct vq *rx, *tx;
	u8 *buf;
	void *cookie;
	u32 len;

	if (!virtio_probe(msg))
		return false;
	vd = virtio_find(VIRTIO_ID_CONSOLE, 0);
	if (!vd)
		return FAIL("no virtio-console device");
	if (!vd->priv && !(vd->priv = dma_alloc(4096, 64)))
		return FAIL("DMA arena exhausted");
	buf = vd->priv;
	/* MULTIPORT declined: port 0 is receiveq 0 / transmitq 1 */
	if (!virtio_begin(vd, 0, msg) ||
	    !virtio_setup_vq(vd, 0, 16, false, msg) ||
	    !virtio_setup_vq(vd, 1, 16, true, msg))
		return false;
	rx = &vd->vq[0];
	tx = &vd->vq[1];
	for (int i = 0; i < CONSOLE_RX_BUFS; i++) {
		struct vbuf vb = { (u64)buf + 512 * (i + 1), 512, true };

		vq_add(rx, &vb, 1, buf + 512 * (i + 1), false);
	}
	if (!virtio_ready(vd, msg))
		return false;
	vq_kick(rx);
	memcpy(buf, line, sizeof(line) - 1);
	if (vq_add(tx, &(struct vbuf){ (u64)buf, sizeof(line) - 1, false }, 1,
		   buf, false))
		return FAIL("transmitq full");
	vq_kick(tx);
	if (!vq_wait(tx, IO_TIMEOUT)) {
		vd->broken = true;
		return FAIL("transmit buffer not returned in 5 s (status %x)",
			    virtio_status(vd));
	}
	if (vq_get(tx, &cookie, &len) < 0)
		return FAIL("%s", tx->error);
	if (cookie != buf)
		return FAIL("transmitq returned %p, not %p", cookie, buf);
	snprintf(msg, MSG_LEN, "%s returned the %u-byte line%s", vd->name,
		 (u32)sizeof(line) - 1,
		 vd->offered & BIT(CONSOLE_F_MULTIPORT)
			 ? " (MULTIPORT offered, declined)" : "");
	return true;
}

/* ---- badring ---- */

#define BAD_ADDR 0xfff00000000ULL	/* 16 TiB: no RAM there */

/* A quick check that some other device still answers. */
static bool other_device_works(struct vdev *broken, char *what, char *msg)
{
	struct vdev *vd;
	struct blk *b;
	u8 tmp[16];

	if (virtio_find(VIRTIO_ID_BLOCK, 0)) {
		static u8 sector[512] __attribute__((aligned(512)));
		int st;

		snprintf(what, 64, "virtio-blk read of sector 0");
		b = blk_open(0, msg);
		if (!b)
			return false;
		st = blk_sync(b, 0, 0, sector, 512, msg);
		return st == 0 ? true : st < 0 ? false
			: FAIL("%s: status %d", what, st);
	}
	for (int i = 0; (vd = virtio_find(VIRTIO_ID_RNG, i)); i++)
		if (vd != broken) {
			snprintf(what, 64, "second virtio-rng");
			return rng_open(vd, msg) &&
			       rng_read(vd, tmp, sizeof(tmp), IO_TIMEOUT,
					msg) > 0;
		}
	if (virtio_find(VIRTIO_ID_NET, 0)) {
		snprintf(what, 64, "virtio-net transmit");
		return net_selftest(0, msg);
	}
	return FAIL("no other virtio device to check");
}

bool test_badring(char *msg)
{
	struct vdev *vd;
	struct vq *q;
	struct vbuf bad = { BAD_ADDR, 16, true };
	char other[64] = "", omsg[MSG_LEN] = "";
	u8 st = 0, tmp[64];
	u64 cfg0, t0, waited, returned;
	bool saw_reset, other_ok, revived;
	long n;

	if (!virtio_probe(msg))
		return false;
	vd = virtio_find(VIRTIO_ID_RNG, 0);
	if (!vd)
		return FAIL("no virtio-rng device to break");
	if (!rng_open(vd, msg))
		return false;
	q = &vd->vq[0];
	cfg0 = virtio_config_irqs(vd);
	if (vq_add(q, &bad, 1, &bad, false))
		return FAIL("queue full");
	vq_notify(q);
	t0 = clock_ns();
	returned = 0;
	do {
		st = virtio_status(vd);
		if (st & VIRTIO_S_NEEDS_RESET)
			break;
		/* a device that completed it will not object any more */
		if (!returned && vq_pending(q))
			returned = clock_ns();
		if (returned && clock_ns() - returned > 100 * NSEC_PER_MSEC)
			break;
		sleep_ns(100 * NSEC_PER_USEC);
	} while (clock_ns() - t0 < 2 * NSEC_PER_SEC);
	waited = (clock_ns() - t0) / 1000;
	saw_reset = st & VIRTIO_S_NEEDS_RESET;
	printf("INFO badring: %s status %x after %lu us (%s), %lu config "
	       "interrupts, bad buffer %s\n", vd->name, st, waited,
	       saw_reset ? "NEEDS_RESET" : "no NEEDS_RESET",
	       virtio_config_irqs(vd) - cfg0,
	       vq_pending(q) ? "completed as used (the device accepted it)"
			     : "not completed");

	other_ok = other_device_works(vd, other, omsg);
	printf("INFO badring: %s: %s%s\n", other[0] ? other : "other device",
	       other_ok ? "works" : "FAILED: ", other_ok ? "" : omsg);

	/* reset whatever the device says: a stale ring must not survive */
	revived = virtio_reset(vd) && rng_open(vd, omsg) &&
		  (n = rng_read(vd, tmp, sizeof(tmp), IO_TIMEOUT, omsg)) > 0 &&
		  looks_random(tmp, n, "after reset", omsg);
	printf("INFO badring: %s after reset: %s%s\n", vd->name,
	       revived ? "works" : "FAILED: ", revived ? "" : omsg);
	if (!saw_reset || !other_ok || !revived)
		return FAIL("NEEDS_RESET %s (status %x), %s %s, reset %s",
			    saw_reset ? "seen" : "NOT seen", st,
			    other[0] ? other : "other device",
			    other_ok ? "ok" : "FAILED",
			    revived ? "revived it" : "did NOT revive it");
	snprintf(msg, MSG_LEN, "NEEDS_RESET after %lu us, %s ok, reset "
		 "revived %s", waited, other, vd->name);
	return true;
}

/* ---- kickbench ---- */

bool test_kickbench(char *msg)
{
	u64 dur = cmdline_u64("bench_ms", 2000) * NSEC_PER_MSEC / 2;
	struct vdev *vd;
	struct vq *q;
	u64 t0, t, n = 0, rt = 0, k0, s0, kick_rate;
	u8 tmp[16];

	if (!virtio_probe(msg))
		return false;
	vd = virtio_find(VIRTIO_ID_RNG, 0);
	if (!vd)
		return FAIL("no virtio-rng device");
	if (!rng_open(vd, msg))
		return false;
	q = &vd->vq[0];
	vq_set_irq(q, false);
	q->spin_ns = ~0ULL;	/* busy-poll: measure the device, not halts */

	/* doorbell writes with an empty ring: the device finds nothing */
	t0 = clock_ns();
	do {
		for (int i = 0; i < 64; i++)
			vq_notify(q);
		n += 64;
		t = clock_ns();
	} while (t - t0 < dur);
	kick_rate = n * NSEC_PER_SEC / (t - t0);
	printf("INFO bench kick-doorbell kicks=%lu ms=%lu kicks_per_s=%lu "
	       "ns_per_kick=%lu\n", n, (t - t0) / NSEC_PER_MSEC, kick_rate,
	       (t - t0) / n);

	/* 16-byte requests, one at a time */
	k0 = q->kicks;
	s0 = q->kicks_suppressed;
	t0 = clock_ns();
	do {
		if (rng_read(vd, tmp, sizeof(tmp), IO_TIMEOUT, msg) < 0)
			return false;
		rt++;
		t = clock_ns();
	} while (t - t0 < dur);
	printf("INFO bench kick-rng-qd1 round_trips=%lu ms=%lu per_s=%lu "
	       "avg_us=%lu kicks=%lu suppressed=%lu\n", rt,
	       (t - t0) / NSEC_PER_MSEC, rt * NSEC_PER_SEC / (t - t0),
	       (t - t0) / rt / 1000, q->kicks - k0,
	       q->kicks_suppressed - s0);
	q->spin_ns = VQ_SPIN_NS;
	vq_set_irq(q, true);
	snprintf(msg, MSG_LEN, "%lu doorbells/s, %lu rng round trips/s",
		 kick_rate, rt * NSEC_PER_SEC / (t - t0));
	return true;
}
