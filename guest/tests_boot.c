/*
 * tests_boot.c - the `boot` test: what the loader handed over (command
 * line, memory map, RAM size, RSDP) is present and consistent.
 */
#include "user.h"

#define MIB (1ULL << 20)

bool test_boot(char *msg)
{
	struct hvm_start_info *si = sys.si;
	struct hvm_memmap_entry *m = sys.memmap;
	struct acpi_info *a = &sys.acpi;
	bool high_ram = false, sorted = true;

	char line[600];
	int n = snprintf(line, sizeof(line), "INFO memmap:");

	for (u32 i = 0; i < sys.nmemmap && n < (int)sizeof(line) - 48; i++)
		n += snprintf(line + n, sizeof(line) - n, " %lx-%lx:%u",
			      m[i].addr, m[i].addr + m[i].size, m[i].type);
	printf("%s\n", line);
	if (!si->cmdline_paddr)
		return FAIL("no command line in start info");
	if (!sys.nmemmap)
		return FAIL("no memory map in start info");
	/*
	 * The PVH ABI does not promise a sorted map, and firmware (QEMU's
	 * qboot) hands over unsorted ones with empty entries: only overlaps
	 * are errors. Whether it is sorted is reported for the host to check.
	 */
	for (u32 i = 0; i < sys.nmemmap; i++) {
		if (!m[i].size)
			continue;
		if (m[i].addr + m[i].size < m[i].addr)
			return FAIL("memmap entry %u wraps", i);
		for (u32 j = 0; j < i; j++)
			if (m[j].size && m[i].addr < m[j].addr + m[j].size &&
			    m[j].addr < m[i].addr + m[i].size)
				return FAIL("memmap entries %u and %u overlap",
					    j, i);
		if (i && m[i].addr < m[i - 1].addr + m[i - 1].size)
			sorted = false;
		if (m[i].type == E820_RAM && m[i].addr + m[i].size > MIB)
			high_ram = true;
	}
	if (!high_ram)
		return FAIL("no RAM above 1 MiB in memmap");
	if (sys.want_mem &&
	    (sys.ram_bytes + MIB < sys.want_mem ||
	     sys.ram_bytes > sys.want_mem + MIB))
		return FAIL("memmap has %lu bytes of RAM, mem=%lu",
			    sys.ram_bytes, sys.want_mem);
	if (!a->rsdp_scan)
		return FAIL("no RSDP in 0xE0000-0xFFFFF");
	if (a->rsdp_si && a->rsdp_si != a->rsdp_scan)
		return FAIL("RSDP: start info says %p, scan found %p",
			    (void *)a->rsdp_si, (void *)a->rsdp_scan);
	snprintf(msg, MSG_LEN, "%u memmap entries (%s), %lu MiB RAM",
		 sys.nmemmap, sorted ? "sorted" : "unsorted",
		 sys.ram_bytes >> 20);
	return true;
}
