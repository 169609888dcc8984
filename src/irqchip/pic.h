/*
 * irqchip/pic.h - the two cascaded 8259A PICs emulated in dvmm (ports
 * 0x20-0x21 and 0xa0-0xa1, ELCR at 0x4d0-0x4d1): ICW1-4, OCW1-3 (masks,
 * specific/non-specific EOI, read IRR/ISR, poll), auto-EOI, edge and level
 * triggering via the ELCR, the slave on master IRQ 2, spurious IRQ 7/15.
 * The INTR output goes to the BSP's LINT0 through ops->intr.
 */
#ifndef DVMM_IRQCHIP_PIC_H
#define DVMM_IRQCHIP_PIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ioreg.h"

struct pic_ops {
	/* INTR output changed to @level (called without the PIC lock). */
	void (*intr)(void *opaque, int level);
};

struct pic_chip {
	uint8_t irr, isr, imr, elcr, last_irr;
	uint8_t vector_base; /* ICW2 */
	uint8_t icw_step;    /* 0: ready; 2..4: expecting ICW2..ICW4 */
	bool icw4_needed, single, auto_eoi, special_mask, poll, read_isr;
	uint8_t priority_add; /* rotation */
	uint8_t elcr_mask;
	bool rotate_on_auto_eoi;   /* OCW2 R=1 SL=0 EOI=0 */
	bool special_fully_nested; /* ICW4 SFNM (master) */
};

struct pic {
	pthread_mutex_t lock;
	const struct pic_ops *ops;
	void *opaque;
	struct pic_chip chip[2]; /* master, slave */
	int intr;		 /* current INTR output */
	struct io_registry *io;	 /* NULL: no ports registered */
	int intr_sent;		 /* last level passed to ops->intr */
	bool notifying;		 /* a thread is calling ops->intr */
};

/* Reset state; registers its ports if @io is not NULL. */
int pic_init(struct pic *p, struct io_registry *io, const struct pic_ops *ops,
	     void *opaque);
void pic_destroy(struct pic *p);
/* Port access (@port is the absolute port number). */
void pic_io(struct pic *p, uint16_t port, uint8_t *data, uint32_t len,
	    bool is_write);
/* IRQ line @irq (0-15) at @level (1 = asserted). */
void pic_set_irq(struct pic *p, int irq, int level);
/* INTA cycle: the vector to deliver (spurious 7/15 if nothing). */
int pic_ack(struct pic *p);
/* Current INTR output. */
bool pic_intr(struct pic *p);

#endif
