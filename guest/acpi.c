/*
 * acpi.c - finding and checking the ACPI tables from user mode: the RSDP
 * (start info and BIOS-area scan), XSDT/RSDT, FADT, DSDT and the MADT's
 * CPU list (acpi_discover), and the `acpi` test.
 */
#include "user.h"

struct acpi_header {
	char sig[4];
	u32 length;
	u8 revision;
	u8 checksum;
	char oem_id[6];
	char oem_table_id[8];
	u32 oem_revision;
	u32 creator_id;
	u32 creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char sig[8];
	u8 checksum;
	char oem_id[6];
	u8 revision;
	u32 rsdt;
	u32 length;
	u64 xsdt;
	u8 ext_checksum;
	u8 reserved[3];
} __attribute__((packed));

#define FADT_DSDT 40
#define FADT_X_DSDT 140
#define MADT_ENTRIES 44

u8 acpi_checksum(const void *p, u64 len)
{
	const u8 *b = p;
	u8 sum = 0;

	while (len--)
		sum += *b++;
	return sum;
}

static bool rsdp_valid(u64 addr)
{
	return addr && phys_ok(addr, 20) &&
	       !memcmp((void *)addr, "RSD PTR ", 8) &&
	       !acpi_checksum((void *)addr, 20);
}

static u64 rsdp_scan(void)
{
	for (u64 a = 0xe0000; a < 0x100000; a += 16)
		if (rsdp_valid(a))
			return a;
	return 0;
}

static struct acpi_header *table(u64 addr)
{
	struct acpi_header *h = (void *)addr;

	if (!addr || !phys_ok(addr, sizeof(*h)) || h->length < sizeof(*h) ||
	    !phys_ok(addr, h->length))
		return NULL;
	return h;
}

static void madt_add(struct acpi_info *a, u32 apic)
{
	for (u32 i = 0; i < a->madt_cpus; i++)
		if (a->madt_apic[i] == apic)
			return;
	if (a->madt_cpus < MAX_MADT_CPUS)
		a->madt_apic[a->madt_cpus++] = apic;
}

static void parse_madt(struct acpi_info *a, struct acpi_header *h)
{
	u8 *p = (u8 *)h + MADT_ENTRIES, *end = (u8 *)h + h->length;

	while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
		if (p[0] == 0 && p[1] >= 8 && (*(u32 *)(p + 4) & 1))
			madt_add(a, p[3]);		/* Processor Local APIC */
		if (p[0] == 9 && p[1] >= 16 && (*(u32 *)(p + 8) & 1))
			madt_add(a, *(u32 *)(p + 4));	/* Local x2APIC */
		p += p[1];
	}
}

/* Fill sys.acpi as far as the tables allow; test_acpi() judges them. */
void acpi_discover(void)
{
	struct acpi_info *a = &sys.acpi;
	struct acpi_rsdp *r;
	struct acpi_header *root, *h;

	a->rsdp_si = sys.si->rsdp_paddr;
	a->rsdp_scan = rsdp_scan();
	a->rsdp = a->rsdp_si ? a->rsdp_si : a->rsdp_scan;
	if (!rsdp_valid(a->rsdp))
		return;
	r = (void *)a->rsdp;
	a->xsdt = r->revision >= 2 && r->xsdt;
	a->root = a->xsdt ? r->xsdt : r->rsdt;
	root = table(a->root);
	if (!root)
		return;
	for (u32 off = sizeof(*root); off < root->length &&
	     a->ntables < ARRAY_SIZE(a->tables); off += a->xsdt ? 8 : 4) {
		u64 t = a->xsdt ? *(u64 *)((u8 *)root + off)
				: *(u32 *)((u8 *)root + off);

		a->tables[a->ntables++] = t;
		h = table(t);
		if (h && !memcmp(h->sig, "FACP", 4))
			a->fadt = t;
		if (h && !memcmp(h->sig, "APIC", 4))
			a->madt = t;
	}
	h = table(a->fadt);
	if (h) {
		a->dsdt = *(u32 *)((u8 *)h + FADT_DSDT);
		if (h->length >= FADT_X_DSDT + 8 &&
		    *(u64 *)((u8 *)h + FADT_X_DSDT))
			a->dsdt = *(u64 *)((u8 *)h + FADT_X_DSDT);
	}
	h = table(a->madt);
	if (h)
		parse_madt(a, h);
}

static bool check_table(u64 addr, const char *sig, char *msg)
{
	struct acpi_header *h = table(addr);

	if (!h)
		return FAIL("%s at %p: not a readable table", sig, (void *)addr);
	if (sig && memcmp(h->sig, sig, 4))
		return FAIL("%s at %p: signature %c%c%c%c", sig, (void *)addr,
			    h->sig[0], h->sig[1], h->sig[2], h->sig[3]);
	if (acpi_checksum(h, h->length))
		return FAIL("%c%c%c%c at %p: bad checksum", h->sig[0],
			    h->sig[1], h->sig[2], h->sig[3], (void *)addr);
	return true;
}

bool test_acpi(char *msg)
{
	struct acpi_info *a = &sys.acpi;
	struct acpi_rsdp *r = (void *)a->rsdp;

	if (!rsdp_valid(a->rsdp))
		return FAIL("no valid RSDP (start info %p, scan %p)",
			    (void *)a->rsdp_si, (void *)a->rsdp_scan);
	if (r->revision >= 2 &&
	    (r->length < 36 || acpi_checksum(r, 36)))
		return FAIL("RSDP extended checksum/length bad");
	if (!check_table(a->root, a->xsdt ? "XSDT" : "RSDT", msg))
		return false;
	for (u32 i = 0; i < a->ntables; i++)
		if (!check_table(a->tables[i], NULL, msg))
			return false;
	if (!a->fadt)
		return FAIL("no FADT (FACP)");
	if (!a->madt)
		return FAIL("no MADT (APIC)");
	if (!check_table(a->dsdt, "DSDT", msg))
		return false;
	if (a->madt_cpus != sys.ncpus)
		return FAIL("MADT lists %u enabled CPUs, %u started",
			    a->madt_cpus, sys.ncpus);
	if (sys.want_cpus && a->madt_cpus != sys.want_cpus)
		return FAIL("MADT lists %u enabled CPUs, cpus=%lu",
			    a->madt_cpus, sys.want_cpus);
	snprintf(msg, MSG_LEN, "%s with %u tables, %u CPUs",
		 a->xsdt ? "XSDT" : "RSDT", a->ntables, a->madt_cpus);
	return true;
}
