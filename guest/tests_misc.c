/*
 * tests_misc.c - tests outside the default set, for the host-side tests
 * of the VMM: `selftest-fail`, `fault-user` and `fault-kernel` (a page
 * fault in either mode), `badport` (unassigned port reads all ones),
 * `reboot` (i8042 reset, checked through CMOS NVRAM across the reboot)
 * `poweroff` (ACPI S5 through the FADT's PM1a control block) and `idle`
 * (ticks forever, for control-socket tests that pause and stop the VM).
 */
#include "user.h"

#define BADPORT 0x2f0
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define CMOS_REBOOT_BYTE 0x40
#define REBOOT_MAGIC 0xa5

bool test_selftest_fail(char *msg)
{
	return FAIL("deliberate");
}

/* Exceptions must end the run with a FAIL line and exit code 3. */
#define UNMAPPED 0x5a5a00000000ULL	/* not covered by the page tables */

bool test_fault_user(char *msg)
{
	*(volatile u64 *)UNMAPPED = 1;
	return FAIL("write to unmapped %p did not fault", (void *)UNMAPPED);
}

bool test_fault_kernel(char *msg)
{
	syscall4(SYS_WAIT, UNMAPPED, 0, 0, 0);	/* the kernel reads it */
	return FAIL("kernel read of unmapped %p did not fault",
		    (void *)UNMAPPED);
}

/*
 * Print a numbered tick every 200 ms of guest time until stopped, with
 * the TSC and kvmclock; say so if either went back since the last tick
 * (a pause, a resume or a migration must never make them).
 */
bool test_idle(char *msg)
{
	u64 tsc = rdtsc(), ns = clock_ns();

	(void)msg;
	for (u64 n = 1;; n++) {
		u64 t, c;

		sleep_ns(200000000ULL);
		t = rdtsc();
		c = clock_ns();
		if (t < tsc || c < ns)
			printf("INFO time went back: tsc %lu -> %lu, "
			       "kvmclock %lu -> %lu\n", tsc, t, ns, c);
		tsc = t;
		ns = c;
		printf("INFO tick %lu tsc=%lu ns=%lu\n", n, t, c);
	}
	return false;
}

bool test_badport(char *msg)
{
	static const u32 ones[] = { 0, 0xff, 0xffff, 0, 0xffffffff };

	for (int w = 1; w <= 4; w *= 2) {
		u32 v;

		port_out(BADPORT, w, 0x12345678 & ones[w]);
		v = port_in(BADPORT, w);
		if (v != ones[w])
			return FAIL("%d-byte read of port %x gave %x", w,
				    BADPORT, v);
	}
	snprintf(msg, MSG_LEN, "port %x reads all ones", BADPORT);
	return true;
}

static u8 cmos_read(u8 idx)
{
	outb(CMOS_INDEX, idx);
	return inb(CMOS_DATA);
}

static void cmos_write(u8 idx, u8 v)
{
	outb(CMOS_INDEX, idx);
	outb(CMOS_DATA, v);
}

bool test_reboot(char *msg)
{
	if (cmos_read(CMOS_REBOOT_BYTE) == REBOOT_MAGIC) {
		cmos_write(CMOS_REBOOT_BYTE, 0);
		snprintf(msg, MSG_LEN, "came back after the reset");
		return true;
	}
	cmos_write(CMOS_REBOOT_BYTE, REBOOT_MAGIC);
	if (cmos_read(CMOS_REBOOT_BYTE) != REBOOT_MAGIC)
		return FAIL("CMOS byte %x does not keep its value",
			    CMOS_REBOOT_BYTE);
	printf("INFO rebooting\n");
	outb(0x64, 0xfe);		/* i8042: pulse the reset line */
	sleep_ns(NSEC_PER_SEC);
	cmos_write(CMOS_REBOOT_BYTE, 0);
	return FAIL("still running 1 s after the i8042 reset");
}

/* SLP_TYPa of \_S5_ in the DSDT: Name(_S5_, Package(){ typ, ... }). */
static int find_s5(u64 dsdt)
{
	u8 *p = (u8 *)dsdt + 36, *end = (u8 *)dsdt + *(u32 *)(dsdt + 4);

	for (; p + 8 < end; p++) {
		if (memcmp(p, "_S5_", 4) || p[4] != 0x12)	/* PackageOp */
			continue;
		p += 5;
		p += 1 + (*p >> 6);		/* PkgLength */
		p++;				/* NumElements */
		switch (*p) {
		case 0x00: return 0;		/* ZeroOp */
		case 0x01: return 1;		/* OneOp */
		case 0x0a: return p[1];		/* BytePrefix */
		case 0x0b: return p[1] | p[2] << 8;	/* WordPrefix */
		default: return -1;
		}
	}
	return -1;
}

bool test_poweroff(char *msg)
{
	struct acpi_info *a = &sys.acpi;
	u8 *fadt = (u8 *)a->fadt;
	u32 len, port;
	int slp;

	if (!fadt || !a->dsdt || !phys_ok(a->dsdt, 36))
		return FAIL("no FADT or DSDT");
	len = *(u32 *)(fadt + 4);
	port = *(u32 *)(fadt + 64);		/* PM1a_CNT_BLK */
	if (!port && len >= 184 && fadt[172] == 1)	/* X_PM1a_CNT_BLK, I/O */
		port = *(u64 *)(fadt + 176);
	if (!port || port > 0xffff)
		return FAIL("no PM1a control block in the FADT");
	slp = find_s5(a->dsdt);
	if (slp < 0)
		return FAIL("no \\_S5_ package in the DSDT");
	printf("PASS poweroff\n");
	port_out(port, 2, (slp & 7) << 10 | 1 << 13);	/* SLP_TYP | SLP_EN */
	sleep_ns(NSEC_PER_SEC);
	return FAIL("still running 1 s after writing %x to port %x",
		    (slp & 7) << 10 | 1 << 13, port);
}
