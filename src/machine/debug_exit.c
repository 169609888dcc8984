/*
 * machine/debug_exit.c - the debug-exit port: a 4-byte port range (0xf4 by
 * default) where a write of any size ends the run. dvmm's exit status is
 * the low byte of the value written, as is: 0 means success.
 *
 * QEMU's isa-debug-exit differs: it exits with (v << 1) | 1, so there a
 * guest can never report 0. The same guest write of v gives status v under
 * dvmm and (v << 1) | 1 under QEMU.
 */
#include <string.h>

#include "machine/devices.h"

#define DEBUG_EXIT_NR_PORTS 4

static void debug_exit_io(void *opaque, uint64_t offset, uint8_t *data,
			  uint32_t len, bool is_write, int vcpu_id)
{
	struct debug_exit *d = opaque;

	(void)offset;
	(void)vcpu_id;
	if (!is_write) {
		memset(data, 0xff, len); /* nothing to read */
		return;
	}
	/* Port I/O is little-endian: data[0] is the value's low byte. */
	vm_request_stop(d->lc, VM_STOP_GUEST_EXIT, data[0]);
}

int debug_exit_init(struct debug_exit *d, struct io_registry *io,
		    const struct vm_lifecycle *lc, uint16_t port)
{
	d->lc = lc;
	return ioreg_register(io, IO_SPACE_PIO, port, DEBUG_EXIT_NR_PORTS,
			      debug_exit_io, d, "debug_exit");
}
