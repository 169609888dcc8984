/*
 * machine/machine.h - the PC that dvmm builds around a VM: legacy devices,
 * ACPI tables, and the PVH boot of a kernel with its command line and
 * initrd. Created afresh on every (re)boot; the CMOS NVRAM and clock offset
 * travel across reboots through struct machine_persist.
 */
#ifndef DVMM_MACHINE_MACHINE_H
#define DVMM_MACHINE_MACHINE_H

#include <stdint.h>

#include "core/vm.h"
#include "machine/devices.h"
#include "util/err.h"

struct machine_config {
	const char *kvm_path;
	uint64_t ram_size;
	int ncpus;
	const char *kernel_path;
	const char *initrd_path;  /* NULL for none */
	const char *cmdline;      /* NULL for empty */
	int console_out_fd;
	int console_in_fd;        /* -1 for no console input */
};

/* What survives a guest reset, as on a real PC. */
struct machine_persist {
	int valid;
	uint8_t nvram[128];
	long long rtc_offset_sec;
};

struct machine {
	struct vm vm;
	struct uart8250 uart;
	struct cmos_rtc rtc;
	struct i8042 kbd;
	struct debug_exit dbg;
	struct acpi_pm pm;
	unsigned int devices_up;  /* bit per device initialised */
	uint32_t entry;
};

int machine_create(struct machine *pc, const struct machine_config *cfg,
		   const struct machine_persist *keep, struct err *e);
/* Start the vCPUs. */
int machine_start(struct machine *pc, struct err *e);
/* Tear down; saves what survives a reset into @keep if non-NULL. */
void machine_destroy(struct machine *pc, struct machine_persist *keep);

#endif
