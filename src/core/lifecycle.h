/*
 * core/lifecycle.h - how a device asks the VM to stop, power off or reset,
 * without knowing the VM: a callback the VM hands to each device.
 */
#ifndef DVMM_CORE_LIFECYCLE_H
#define DVMM_CORE_LIFECYCLE_H

enum vm_stop_reason {
	VM_STOP_NONE = 0,
	VM_STOP_GUEST_EXIT, /* debug-exit port: code = value written */
	VM_STOP_POWEROFF,   /* ACPI S5 */
	VM_STOP_RESET,	    /* i8042 / 0xCF9 / ACPI reset: reboot */
	VM_STOP_USER,	    /* control socket "stop" or a signal */
	VM_STOP_ERROR,	    /* a vCPU failed; code = exit status to use */
};

struct vm_lifecycle {
	void (*request_stop)(void *opaque, enum vm_stop_reason reason,
			     int code);
	void *opaque;
};

static inline void vm_request_stop(const struct vm_lifecycle *lc,
				   enum vm_stop_reason reason, int code)
{
	lc->request_stop(lc->opaque, reason, code);
}

#endif
