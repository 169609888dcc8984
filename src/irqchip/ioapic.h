/*
 * irqchip/ioapic.h - an I/O APIC emulated in dvmm (82093AA register set,
 * version 0x20 with the EOI register): 24 pins, the redirection table
 * through IOREGSEL/IOWIN at 0xfec00000, edge and level triggering, polarity,
 * masking, remote IRR cleared by an EOI (from a LAPIC broadcast or the
 * EOI register). Messages go out through ops->send; the caller routes them.
 */
#ifndef DVMM_IRQCHIP_IOAPIC_H
#define DVMM_IRQCHIP_IOAPIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ioreg.h"
#include "irqchip/apic_bus.h"

#define IOAPIC_MMIO_BASE 0xfec00000ULL
#define IOAPIC_MMIO_SIZE 0x1000ULL
#define IOAPIC_PINS 24

struct ioapic_ops {
	/* Deliver @m (called without the IOAPIC lock held). */
	void (*send)(void *opaque, const struct apic_msg *m);
};

struct ioapic {
	pthread_mutex_t lock;
	const struct ioapic_ops *ops;
	void *opaque;
	struct io_registry *io; /* NULL: not registered (unit tests) */
	uint8_t id;
	uint32_t ioregsel;
	uint64_t redir[IOAPIC_PINS];
	int pin_level[IOAPIC_PINS]; /* line as driven by devices (1 = active) */
	uint64_t delivered[IOAPIC_PINS]; /* stats */
};

/*
 * Reset state (all pins masked, edge, fixed), and if @io is not NULL
 * register the MMIO page at IOAPIC_MMIO_BASE. 0 or a negative errno.
 */
int ioapic_init(struct ioapic *s, struct io_registry *io, uint8_t id,
		const struct ioapic_ops *ops, void *opaque);
void ioapic_destroy(struct ioapic *s);
/* The MMIO page (what the registered handler calls). */
void ioapic_mmio(struct ioapic *s, uint64_t off, uint8_t *data, uint32_t len,
		 bool is_write);
/*
 * A device drives pin @pin: @level 1 = asserted (the IOAPIC applies the
 * entry's polarity itself, so callers always pass 1 for active). Edge
 * pins deliver on 0->1; level pins deliver while asserted and remote IRR
 * is clear. Out-of-range pins are ignored.
 */
void ioapic_set_irq(struct ioapic *s, int pin, int level);
/* A LAPIC EOI'd level-triggered @vector: clear remote IRR, re-deliver. */
void ioapic_eoi(struct ioapic *s, uint8_t vector);

#endif
