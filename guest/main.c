/*
 * main.c - the test guest's user-mode main program: read the PVH start
 * info, command line and memory map, map RAM above 4 GiB, find the CPUs
 * in the MADT and start them (INIT/SIPI/SIPI), then run the chosen tests
 * and report. Also the AP side: an idle loop that runs jobs handed out by
 * run_on_all().
 */
#include "user.h"

struct sysinfo sys;

#define TRAMPOLINE_DEFAULT 0x8000
#define AP_START_TIMEOUT NSEC_PER_SEC
#define HIGH_PDS 60		/* RAM mapped up to 64 GiB */

static u64 pd_high[HIGH_PDS][512] __attribute__((aligned(4096)));
static char cmdline_buf[1024];
static char tests_buf[1024];
static const char *test_names[64];
static int ntest_names;

bool phys_ok(u64 addr, u64 len)
{
	return addr + len >= addr && addr + len <= sys.mapped_end;
}

/* ---- command line ---- */

/*
 * The value of key=value on the command line (the last one wins), or NULL.
 * *len gets its length (it ends at a space or the end).
 */
const char *cmdline_get(const char *key, int *len)
{
	size_t klen = strlen(key);
	const char *found = NULL;

	for (const char *p = sys.cmdline; *p;) {
		const char *tok = p;

		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - tok) > klen && !strncmp(tok, key, klen) &&
		    tok[klen] == '=') {
			found = tok + klen + 1;
			*len = p - found;
		}
		while (*p == ' ')
			p++;
	}
	return found;
}

u64 cmdline_u64(const char *key, u64 def)
{
	int len;
	const char *v = cmdline_get(key, &len);
	u64 n;

	if (!v || !parse_u64(v, &n))
		return def;
	return n;
}

static u64 parse_size(const char *s)
{
	u64 v;
	int n = parse_u64(s, &v);

	switch (s[n]) {
	case 'k': case 'K': return v << 10;
	case 'm': case 'M': return v << 20;
	case 'g': case 'G': return v << 30;
	case 't': case 'T': return v << 40;
	default: return v;
	}
}

static void parse_cmdline(void)
{
	static const char *const defaults[] = {
		"boot", "acpi", "smp", "timer", "ipi", "syscall", "tsc", "mem",
	};
	const char *p = sys.cmdline;

	while (*p) {
		const char *tok = p, *end;

		while (*p && *p != ' ')
			p++;
		end = p;
		while (*p == ' ')
			p++;
		if (end - tok > 6 && !strncmp(tok, "tests=", 6)) {
			size_t n = end - tok - 6;
			char *q = tests_buf;

			if (n >= sizeof(tests_buf))
				n = sizeof(tests_buf) - 1;
			memcpy(q, tok + 6, n);
			q[n] = 0;
			ntest_names = 0;
			while (*q && ntest_names < (int)ARRAY_SIZE(test_names)) {
				test_names[ntest_names++] = q;
				while (*q && *q != ',')
					q++;
				if (*q)
					*q++ = 0;
			}
		} else if (end - tok > 5 && !strncmp(tok, "cpus=", 5)) {
			parse_u64(tok + 5, &sys.want_cpus);
		} else if (end - tok > 4 && !strncmp(tok, "mem=", 4)) {
			sys.want_mem = parse_size(tok + 4);
		}
	}
	if (!ntest_names)
		for (u64 i = 0; i < ARRAY_SIZE(defaults); i++)
			test_names[ntest_names++] = defaults[i];
}

/* ---- memory ---- */

/*
 * boot.S maps 0-4 GiB. Map RAM above that with 2 MiB pages (from user
 * mode: the page tables are ordinary user-writable memory here).
 */
static void map_high_ram(void)
{
	u64 top = 0;

	sys.mapped_end = 4ULL << 30;
	for (u32 i = 0; i < sys.nmemmap; i++) {
		u64 end = sys.memmap[i].addr + sys.memmap[i].size;

		if (sys.memmap[i].type == E820_RAM && end > top)
			top = end;
	}
	if (top > (4ULL + HIGH_PDS) << 30) {
		printf("INFO RAM above %u GiB is not mapped or tested\n",
		       4 + HIGH_PDS);
		top = (4ULL + HIGH_PDS) << 30;
	}
	for (u64 a = 4ULL << 30; a < top; a += 2 << 20) {
		u64 i = (a >> 21) - 2048;

		pd_high[i / 512][i % 512] = a | 0x87;
		pdpt_low[a >> 30] = (u64)pd_high[i / 512] | 7;
		sys.mapped_end = a + (2 << 20);
	}
}

static void read_start_info(void)
{
	struct hvm_start_info *si = (void *)boot_start_info;

	sys.si = si;
	if (si->magic != HVM_START_MAGIC) {
		printf("FAIL init: bad hvm_start_info magic %x at %p\n",
		       si->magic, si);
		sys_exit(2);
	}
	sys.cmdline = "";
	if (si->cmdline_paddr && si->cmdline_paddr < (4ULL << 30)) {
		const char *c = (const char *)si->cmdline_paddr;
		size_t n = 0;

		while (n < sizeof(cmdline_buf) - 1 && c[n])
			n++;
		memcpy(cmdline_buf, c, n);
		sys.cmdline = cmdline_buf;
	}
	sys.memmap = (void *)si->memmap_paddr;
	sys.nmemmap = si->memmap_entries;
	if (si->version < 1 || !si->memmap_paddr || si->memmap_entries > 1024 ||
	    si->memmap_paddr + si->memmap_entries * sizeof(*sys.memmap) >
		    (4ULL << 30))
		sys.nmemmap = 0;	/* the boot test reports it */
	for (u32 i = 0; i < sys.nmemmap; i++)
		if (sys.memmap[i].type == E820_RAM)
			sys.ram_bytes += sys.memmap[i].size;
}

/* ---- AP startup ---- */

static bool overlaps(u64 a, u64 alen, u64 b, u64 blen)
{
	return a < b + blen && b < a + alen;
}

/* A free RAM page below 640 KiB for the trampoline, 0x8000 if possible. */
static u64 pick_trampoline_page(void)
{
	struct hvm_start_info *si = sys.si;

	for (u64 pg = TRAMPOLINE_DEFAULT; pg < 0x9f000; pg += 0x1000) {
		bool ram = false;

		for (u32 i = 0; i < sys.nmemmap; i++)
			if (sys.memmap[i].type == E820_RAM &&
			    sys.memmap[i].addr <= pg &&
			    pg + 0x1000 <= sys.memmap[i].addr + sys.memmap[i].size)
				ram = true;
		if (!ram || overlaps(pg, 0x1000, (u64)si, sizeof(*si)) ||
		    overlaps(pg, 0x1000, si->memmap_paddr,
			     si->memmap_entries * sizeof(*sys.memmap)) ||
		    overlaps(pg, 0x1000, si->modlist_paddr,
			     si->nr_modules * sizeof(struct hvm_modlist_entry)) ||
		    overlaps(pg, 0x1000, si->cmdline_paddr,
			     strlen(sys.cmdline) + 1))
			continue;
		return pg;
	}
	return 0;
}

static void start_aps(void)
{
	u64 page = pick_trampoline_page();
	u8 *t = (u8 *)page;
	u32 self = sys_rdmsr(X2APIC_ID);

	sys.ncpus = 1;
	sys.apic[0] = self;
	if (sys.acpi.madt_cpus <= 1)
		return;
	if (!page) {
		snprintf(sys.cpu_start_error, MSG_LEN,
			 "no free low page for the AP trampoline");
		return;
	}
	memcpy(t, trampoline_start, trampoline_end - trampoline_start);
	*(u16 *)(t + (tr_gdtr - trampoline_start)) = sizeof(gdt) - 1;
	*(u32 *)(t + (tr_gdtr - trampoline_start) + 2) = (u64)gdt;
	*(u32 *)(t + (tr_cr3 - trampoline_start)) = (u64)pml4;
	*(u32 *)(t + (tr_entry - trampoline_start)) = (u64)ap_entry64;

	for (u32 i = 0; i < sys.acpi.madt_cpus; i++) {
		u32 apic = sys.acpi.madt_apic[i];
		u64 cpu = sys.ncpus;

		if (apic == self)
			continue;
		if (cpu == MAX_CPUS) {
			printf("INFO only %u CPUs are used\n", MAX_CPUS);
			break;
		}
		ap_boot_cpu = cpu;
		ap_boot_stack = (u64)kstacks[cpu] + KSTACK_SIZE;
		sys_wrmsr(X2APIC_ICR, (u64)apic << 32 | ICR_INIT);
		sys_wrmsr(X2APIC_ICR, (u64)apic << 32 | ICR_SIPI | page >> 12);
		sys_wrmsr(X2APIC_ICR, (u64)apic << 32 | ICR_SIPI | page >> 12);
		if (!wait_ge(&percpu[cpu].online, 1, AP_START_TIMEOUT)) {
			/* a late AP would take the next one's slot: stop */
			snprintf(sys.cpu_start_error, MSG_LEN,
				 "APIC id %u did not start within 1 s", apic);
			break;
		}
		sys.apic[cpu] = apic;
		sys.ncpus++;
	}
}

/* ---- jobs on every CPU ---- */

static struct {
	void (*fn)(u64 cpu, void *arg);
	void *arg;
	volatile u64 gen;
	volatile u64 done;
} job;

bool run_on_all(void (*fn)(u64 cpu, void *arg), void *arg, u64 timeout_ns,
		char *msg)
{
	if (sys.ncpus > 1) {
		job.fn = fn;
		job.arg = arg;
		job.done = 0;
		__atomic_store_n(&job.gen, job.gen + 1, __ATOMIC_RELEASE);
		sys_wrmsr(X2APIC_ICR, ICR_ALL_BUT_SELF | ICR_FIXED | VEC_WAKE);
	}
	fn(0, arg);
	if (sys.ncpus > 1 && !wait_ge(&job.done, sys.ncpus - 1, timeout_ns)) {
		snprintf(msg, MSG_LEN, "only %lu of %u other CPUs finished",
			 job.done, sys.ncpus - 1);
		return false;
	}
	return true;
}

void user_ap_main(u64 cpu)
{
	u64 seen = 0;

	clock_init();
	for (;;) {
		u64 g = __atomic_load_n(&job.gen, __ATOMIC_ACQUIRE);

		if (g == seen) {
			/* the BSP sends VEC_WAKE after bumping job.gen */
			wait_change(&job.gen, g, NSEC_PER_SEC);
			continue;
		}
		seen = g;
		job.fn(cpu, job.arg);
		__atomic_add_fetch(&job.done, 1, __ATOMIC_RELEASE);
		send_ipi(sys.apic[0], VEC_WAKE);
	}
}

/* ---- tests ---- */

static const struct test {
	const char *name;
	bool (*fn)(char *msg);
} tests[] = {
	{ "boot", test_boot },
	{ "acpi", test_acpi },
	{ "smp", test_smp },
	{ "timer", test_timer },
	{ "timerlat", test_timerlat },
	{ "ipi", test_ipi },
	{ "syscall", test_syscall },
	{ "tsc", test_tsc },
	{ "mem", test_mem },
	{ "selftest-fail", test_selftest_fail },
	{ "fault-user", test_fault_user },
	{ "fault-kernel", test_fault_kernel },
	{ "badport", test_badport },
	{ "reboot", test_reboot },
	{ "poweroff", test_poweroff },
	{ "idle", test_idle },
	{ "pci", test_pci },
	{ "blk", test_blk },
	{ "rng", test_rng },
	{ "net", test_net },
	{ "vconsole", test_vconsole },
	{ "badring", test_badring },
	{ "blkbench", test_blkbench },
	{ "netbench", test_netbench },
	{ "netlat", test_netlat },
	{ "netfail", test_netfail },
	{ "kickbench", test_kickbench },
	{ "coherence", test_coherence },
	{ "pingpong", test_pingpong },
	{ "private", test_private },
	{ "spread", test_spread },
	{ "ipibench", test_ipibench },
	{ "mmiobench", test_mmiobench },
	{ "dirty", test_dirty },
	{ "blkstream", test_blkstream },
	{ "udpstream", test_udpstream },
};

void user_main(u64 cpu)
{
	int passed = 0, failed = 0;
	char msg[MSG_LEN];

	(void)cpu;
	current_test = "init";
	if (!have_kvmclock) {
		printf("FAIL init: no kvmclock (CPUID 0x40000001 bit 3)\n");
		sys_exit(2);
	}
	clock_init();
	read_start_info();
	parse_cmdline();
	map_high_ram();
	acpi_discover();
	start_aps();
	printf("\nINFO cpus=%u madt_cpus=%u ram=%lu rsdp=%p cmdline=%s\n",
	       sys.ncpus, sys.acpi.madt_cpus, sys.ram_bytes,
	       (void *)sys.acpi.rsdp, sys.cmdline);
	if (tsc_offset[0])
		printf("INFO user-mode TSC differs from kernel TSC by %ld "
		       "cycles; kvmclock corrected\n", tsc_offset[0]);
	if (sys.cpu_start_error[0]) {
		printf("FAIL cpu-start: %s\n", sys.cpu_start_error);
		failed++;
	}

	for (int i = 0; i < ntest_names; i++) {
		const char *name = test_names[i];
		const struct test *t = NULL;
		bool ok;

		for (u64 j = 0; j < ARRAY_SIZE(tests); j++)
			if (!strcmp(tests[j].name, name))
				t = &tests[j];
		current_test = name;
		msg[0] = 0;
		if (t) {
			ok = t->fn(msg);
		} else {
			snprintf(msg, sizeof(msg), "unknown test");
			ok = false;
		}
		if (ok)
			printf("PASS %s%s%s\n", name, msg[0] ? ": " : "", msg);
		else
			printf("FAIL %s: %s\n", name, msg);
		if (ok)
			passed++;
		else
			failed++;
	}
	current_test = "done";
	printf("DONE passed=%d failed=%d\n", passed, failed);
	sys_exit(failed ? 1 : 0);
}
