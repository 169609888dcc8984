/*
 * migration/devstate.h - the device side of a migration: quiescing the
 * machine's virtio devices, handing their host resources (disk locks,
 * taps) from one process to the other, and the versioned encoding of every
 * device's state (the legacy devices' registers, each virtio transport and
 * its queues, each device's own bytes).
 */
#ifndef DVMM_MIGRATION_DEVSTATE_H
#define DVMM_MIGRATION_DEVSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "machine/machine.h"
#include "util/err.h"

#define DEVSTATE_VERSION 1

struct devstate {
	struct uart8250_regs uart;
	uint8_t rtc_index;
	bool rtc_nmi_disabled;
	uint8_t rtc_nvram[128];
	int64_t rtc_offset_sec;
	uint8_t kbd_cmd, kbd_ccb, kbd_out_port, kbd_out_buf;
	bool kbd_out_full;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
	uint8_t cf9;
	int nvirtio;
	uint8_t kind[MACHINE_MAX_VIRTIO];
	struct virtio_pci_state virtio[MACHINE_MAX_VIRTIO];
};

/* Stop (resume) every virtio device touching guest memory. */
void devstate_quiesce(struct machine *pc);
void devstate_resume(struct machine *pc);
/*
 * Hand every device's host resource over (release) or take it back
 * (acquire); a failure names the device. release undoes what it did when
 * one fails.
 */
int devstate_release(struct machine *pc, struct err *e);
int devstate_acquire(struct machine *pc, struct err *e);

/* Encode the (quiesced) machine's device state into *out (malloc'd). */
int devstate_save(struct machine *pc, uint8_t **out, size_t *len,
		  struct err *e);
/*
 * Decode @buf (from the network: every count and length is checked) for
 * @pc, which must have the same devices: *ds is allocated.
 */
int devstate_decode(const struct machine *pc, const uint8_t *buf, size_t len,
		    struct devstate **ds, struct err *e);
/* Put @ds into @pc's devices (their backends acquired, vCPUs not run). */
int devstate_load(struct machine *pc, const struct devstate *ds, struct err *e);
void devstate_free(struct devstate *ds);

#endif
