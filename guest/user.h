/*
 * user.h - what the user-mode parts of the test guest share: the machine
 * description gathered at boot (start info, command line, memory map,
 * ACPI, started CPUs), running a function on every CPU, and the tests.
 */
#ifndef GUEST_USER_H
#define GUEST_USER_H

#include "lib.h"

#define MAX_MADT_CPUS 256
#define MSG_LEN 200

struct acpi_info {
	u64 rsdp_si;		/* from hvm_start_info, 0 if none */
	u64 rsdp_scan;		/* found by scanning 0xE0000-0xFFFFF */
	u64 rsdp;		/* the one used */
	u64 root;		/* XSDT, or RSDT if no XSDT */
	bool xsdt;
	u32 ntables;
	u64 tables[64];
	u64 fadt, madt, dsdt;
	u32 madt_cpus;		/* enabled LAPIC/x2APIC entries */
	u32 madt_apic[MAX_MADT_CPUS];
};

struct sysinfo {
	struct hvm_start_info *si;
	const char *cmdline;		/* "" if none */
	struct hvm_memmap_entry *memmap;
	u32 nmemmap;
	u64 ram_bytes;			/* total of the RAM entries */
	u64 mapped_end;			/* identity map covers [0, mapped_end) */
	u64 want_cpus;			/* cpus=, 0 if absent */
	u64 want_mem;			/* mem=, 0 if absent */
	struct acpi_info acpi;
	u32 ncpus;			/* CPUs running our code */
	u32 apic[MAX_CPUS];		/* x2APIC id of each of them */
	char cpu_start_error[MSG_LEN];	/* an AP that did not start */
};

extern struct sysinfo sys;

/* key=value on the command line: the value (not NUL-terminated) or NULL. */
const char *cmdline_get(const char *key, int *len);
u64 cmdline_u64(const char *key, u64 def);

/* True if [addr, addr + len) is identity mapped (safe to dereference). */
bool phys_ok(u64 addr, u64 len);

/*
 * Run fn(cpu, arg) on every started CPU at once (the caller is CPU 0) and
 * wait for all of them. False, with a message, if some CPU did not finish.
 */
bool run_on_all(void (*fn)(u64 cpu, void *arg), void *arg, u64 timeout_ns,
		char *msg);

/* acpi.c */
u8 acpi_checksum(const void *p, u64 len);
void acpi_discover(void);
/* tests: return true for PASS; msg is the FAIL reason or PASS detail */
bool test_acpi(char *msg);
bool test_boot(char *msg);
bool test_smp(char *msg);
bool test_timer(char *msg);
bool test_timerlat(char *msg);
bool test_ipi(char *msg);
bool test_syscall(char *msg);
bool test_tsc(char *msg);
bool test_mem(char *msg);
/* tests_mem.c: a free RAM block of len bytes nothing else uses, or 0 */
u64 free_ram_block(u64 len);
bool test_selftest_fail(char *msg);
bool test_fault_user(char *msg);
bool test_fault_kernel(char *msg);
bool test_badport(char *msg);
bool test_idle(char *msg);
bool test_reboot(char *msg);
bool test_poweroff(char *msg);
bool test_pci(char *msg);		/* tests_virtio.c */
bool test_rng(char *msg);
bool test_vconsole(char *msg);
bool test_badring(char *msg);
bool test_kickbench(char *msg);
bool test_blk(char *msg);		/* tests_blk.c */
bool test_blkbench(char *msg);
bool test_net(char *msg);		/* tests_net.c */
bool test_netbench(char *msg);
bool test_netlat(char *msg);
bool test_netfail(char *msg);
bool test_coherence(char *msg);		/* tests_cluster.c */
bool test_pingpong(char *msg);
bool test_private(char *msg);
bool test_spread(char *msg);
bool test_ipibench(char *msg);		/* tests_bench2.c */
bool test_mmiobench(char *msg);
bool test_dirty(char *msg);		/* tests_migrate.c */
bool test_blkstream(char *msg);
bool test_udpstream(char *msg);

#define FAIL(...) (snprintf(msg, MSG_LEN, __VA_ARGS__), false)

#endif
