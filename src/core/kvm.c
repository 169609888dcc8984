/*
 * core/kvm.c - the KVM device: open it, check the API version and the
 * capabilities the single-node VMM needs, and say which one is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/kvm.h"

struct kvm_cap_need {
	int cap;
	const char *name;
	const char *why;
};

static const struct kvm_cap_need needed_caps[] = {
	{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM"},
	{KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "x86 VM setup"},
	{KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "CPUID"},
	{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel IOAPIC/PIC/LAPIC"},
	{KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT"},
	{KVM_CAP_IRQ_INJECT_STATUS, "KVM_CAP_IRQ_INJECT_STATUS",
	 "interrupt lines"},
	{KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "SMP start-up"},
	{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT",
	 "stopping vCPUs cleanly"},
	{KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI", "MSI interrupts"},
	{KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "virtio doorbells"},
	{KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "virtio interrupts"},
	{KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING", "MSI-X routes"},
	{KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	 "x86 VM setup"},
};

int kvm_open(const char *path, struct err *e)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		int rc = -errno;

		if (rc == -ENOENT)
			return err_set(e, rc,
				       "%s: no such device; dvmm needs KVM "
				       "(load the kvm module, or run on a host "
				       "with virtualization)",
				       path);
		if (rc == -EACCES || rc == -EPERM)
			return err_set(e, rc,
				       "%s: permission denied; run as root or "
				       "join the kvm group",
				       path);
		return err_set(e, rc, "%s: %s", path, strerror(-rc));
	}
	return fd;
}

int kvm_check_caps(int kvm_fd, struct err *e)
{
	int ver = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);

	if (ver < 0)
		return err_set(e, -errno,
			       "KVM_GET_API_VERSION failed: %s "
			       "(is this really a KVM device?)",
			       strerror(errno));
	if (ver != KVM_API_VERSION)
		return err_set(e, -EINVAL, "KVM API version %d, dvmm needs %d",
			       ver, KVM_API_VERSION);
	for (size_t i = 0; i < sizeof(needed_caps) / sizeof(needed_caps[0]);
	     i++) {
		const struct kvm_cap_need *c = &needed_caps[i];

		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, c->cap) <= 0)
			return err_set(e, -ENOTSUP,
				       "KVM lacks %s, needed for %s", c->name,
				       c->why);
	}
	return 0;
}
