/*
 * core/kvm.h - opening the KVM device and checking that it offers what dvmm
 * needs, with one clear line naming what is missing.
 */
#ifndef DVMM_CORE_KVM_H
#define DVMM_CORE_KVM_H

#include "util/err.h"

#define KVM_DEFAULT_DEVICE "/dev/kvm"

/* Open @path (O_RDWR|O_CLOEXEC); returns the fd or a negative errno. */
int kvm_open(const char *path, struct err *e);
/* Check API version and every capability dvmm relies on. */
int kvm_check_caps(int kvm_fd, struct err *e);

#endif
