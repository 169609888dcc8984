/*
 * irqchip/pic.c - the two cascaded 8259A PICs of a PC: owns both chips'
 * IRR/ISR/IMR, the ICW1-4 initialisation sequence, OCW1-3 (mask, EOI and
 * rotation, read IRR/ISR, poll, special mask mode), auto-EOI, the ELCR
 * edge/level selection, the slave's cascade into master IRQ 2, INTA with
 * spurious IRQ 7/15, and the master's INTR output reported to ops->intr.
 *
 * ops->intr is called without the PIC lock, and by one thread at a time:
 * a thread that changes INTR while another is reporting leaves the report
 * to that thread, which loops until the host has seen the latest level.
 * So levels reach the host in order and the last one is always current.
 *
 * Simplifications: ICW1 LTIM is ignored (the ELCR alone selects level
 * triggering, as on PIIX-style chipsets); ICW1 single mode only skips
 * ICW3, whose value is ignored (the cascade is fixed); 8086 mode is
 * assumed. Master IRQ 2 is the cascade: pic_set_irq(2, ...) is ignored.
 */
#include <errno.h>
#include <string.h>

#include "irqchip/pic.h"

#define PIC_MASTER 0
#define PIC_SLAVE 1
#define PIC_CASCADE_IRQ 2
#define PIC_SPURIOUS_IRQ 7
#define PIC_NO_IRQ (-1)

#define PORT_MASTER 0x20
#define PORT_SLAVE 0xa0
#define PORT_ELCR 0x4d0
#define PIC_NR_PORTS 2

#define ELCR_MASK_MASTER 0xf8 /* IRQ 0, 1 and 2 are always edge */
#define ELCR_MASK_SLAVE 0xde  /* IRQ 8 and 13 are always edge */

/* Power-on vector bases (what a PC BIOS would leave); ICW2 sets them. */
#define VECTOR_BASE_MASTER 0x08
#define VECTOR_BASE_SLAVE 0x70

/* Command port (A0 = 0) writes. */
#define ICW1_INIT 0x10
#define ICW1_SINGLE 0x02
#define ICW1_IC4 0x01
#define OCW3_SELECT 0x08
#define OCW3_ESMM 0x40
#define OCW3_SMM 0x20
#define OCW3_POLL 0x04
#define OCW3_RR 0x02
#define OCW3_RIS 0x01
#define OCW2_CMD_SHIFT 5
#define OCW2_LEVEL 0x07
#define ICW4_AEOI 0x02
#define ICW4_SFNM 0x10
#define ICW2_BASE_MASK 0xf8
#define POLL_IRQ_VALID 0x80

enum ocw2_cmd {
	OCW2_ROTATE_AEOI_CLEAR = 0,
	OCW2_NONSPECIFIC_EOI = 1,
	OCW2_NOP = 2,
	OCW2_SPECIFIC_EOI = 3,
	OCW2_ROTATE_AEOI_SET = 4,
	OCW2_ROTATE_NONSPECIFIC_EOI = 5,
	OCW2_SET_PRIORITY = 6,
	OCW2_ROTATE_SPECIFIC_EOI = 7,
};

/* icw_step values: which byte the data port expects next. */
#define ICW_READY 0
#define ICW_EXPECT_ICW2 2
#define ICW_EXPECT_ICW3 3
#define ICW_EXPECT_ICW4 4

/* --- one chip --- */

/* Priority (0 = highest) of the best request in @mask; 8 if none. */
static int chip_priority(const struct pic_chip *c, uint8_t mask)
{
	for (int prio = 0; prio < 8; prio++) {
		if (mask & (1u << ((prio + c->priority_add) & 7)))
			return prio;
	}
	return 8;
}

/* The IRQ (0-7) the chip wants to raise INTR for, or PIC_NO_IRQ. */
static int chip_pending_irq(const struct pic_chip *c, bool master)
{
	uint8_t in_service = c->isr;
	int prio = chip_priority(c, c->irr & ~c->imr);

	if (prio == 8)
		return PIC_NO_IRQ;
	if (c->special_mask)
		in_service &= ~c->imr;
	/* Fully nested: the slave may interrupt its own in-service IRQs. */
	if (master && c->special_fully_nested)
		in_service &= ~(1u << PIC_CASCADE_IRQ);
	if (prio >= chip_priority(c, in_service))
		return PIC_NO_IRQ;
	return (prio + c->priority_add) & 7;
}

/* Input line @irq of the chip goes to @level: edges set IRR. */
static void chip_set_line(struct pic_chip *c, int irq, int level)
{
	uint8_t bit = (uint8_t)(1u << irq);

	if (c->elcr & bit) {
		if (level)
			c->irr |= bit;
		else
			c->irr &= ~bit;
	} else if (level && !(c->last_irr & bit)) {
		c->irr |= bit;
	}
	if (level)
		c->last_irr |= bit;
	else
		c->last_irr &= ~bit;
}

/* INTA (or poll) took @irq: in service, and edge requests are consumed. */
static void chip_intack(struct pic_chip *c, int irq)
{
	uint8_t bit = (uint8_t)(1u << irq);

	if (!c->auto_eoi)
		c->isr |= bit;
	else if (c->rotate_on_auto_eoi)
		c->priority_add = (irq + 1) & 7;
	if (!(c->elcr & bit))
		c->irr &= ~bit;
}

/* ICW1: the chip restarts; the edge-sense latches forget old edges. */
static void chip_icw1(struct pic_chip *c, uint8_t val)
{
	c->irr = c->last_irr & c->elcr; /* edge lines must rise again */
	c->isr = 0;
	c->imr = 0;
	c->priority_add = 0;
	c->special_mask = false;
	c->read_isr = false;
	c->poll = false;
	c->rotate_on_auto_eoi = false;
	c->icw4_needed = val & ICW1_IC4;
	c->single = val & ICW1_SINGLE;
	if (!c->icw4_needed) {
		c->auto_eoi = false;
		c->special_fully_nested = false;
	}
	c->icw_step = ICW_EXPECT_ICW2;
}

static void chip_ocw3(struct pic_chip *c, uint8_t val)
{
	if (val & OCW3_POLL)
		c->poll = true;
	if (val & OCW3_RR)
		c->read_isr = val & OCW3_RIS;
	if (val & OCW3_ESMM)
		c->special_mask = val & OCW3_SMM;
}

/* Non-specific EOI: the highest-priority in-service IRQ, or -1. */
static int chip_eoi_highest(struct pic_chip *c)
{
	int prio = chip_priority(c, c->isr);
	int irq;

	if (prio == 8)
		return PIC_NO_IRQ;
	irq = (prio + c->priority_add) & 7;
	c->isr &= ~(1u << irq);
	return irq;
}

static void chip_ocw2(struct pic_chip *c, uint8_t val)
{
	int level = val & OCW2_LEVEL;
	int irq;

	switch ((enum ocw2_cmd)(val >> OCW2_CMD_SHIFT)) {
	case OCW2_ROTATE_AEOI_CLEAR:
		c->rotate_on_auto_eoi = false;
		break;
	case OCW2_ROTATE_AEOI_SET:
		c->rotate_on_auto_eoi = true;
		break;
	case OCW2_NONSPECIFIC_EOI:
		chip_eoi_highest(c);
		break;
	case OCW2_ROTATE_NONSPECIFIC_EOI:
		irq = chip_eoi_highest(c);
		if (irq != PIC_NO_IRQ)
			c->priority_add = (irq + 1) & 7;
		break;
	case OCW2_SPECIFIC_EOI:
		c->isr &= ~(1u << level);
		break;
	case OCW2_ROTATE_SPECIFIC_EOI:
		c->isr &= ~(1u << level);
		c->priority_add = (level + 1) & 7;
		break;
	case OCW2_SET_PRIORITY: /* @level becomes the lowest priority */
		c->priority_add = (level + 1) & 7;
		break;
	case OCW2_NOP:
		break;
	}
}

static void chip_write_cmd(struct pic_chip *c, uint8_t val)
{
	if (val & ICW1_INIT)
		chip_icw1(c, val);
	else if (val & OCW3_SELECT)
		chip_ocw3(c, val);
	else
		chip_ocw2(c, val);
}

static uint8_t icw_step_after_icw2(const struct pic_chip *c)
{
	if (!c->single)
		return ICW_EXPECT_ICW3;
	return c->icw4_needed ? ICW_EXPECT_ICW4 : ICW_READY;
}

static void chip_write_data(struct pic_chip *c, uint8_t val)
{
	switch (c->icw_step) {
	case ICW_EXPECT_ICW2:
		c->vector_base = val & ICW2_BASE_MASK;
		c->icw_step = icw_step_after_icw2(c);
		break;
	case ICW_EXPECT_ICW3: /* the cascade wiring is fixed */
		c->icw_step = c->icw4_needed ? ICW_EXPECT_ICW4 : ICW_READY;
		break;
	case ICW_EXPECT_ICW4:
		c->auto_eoi = val & ICW4_AEOI;
		c->special_fully_nested = val & ICW4_SFNM;
		c->icw_step = ICW_READY;
		break;
	default: /* OCW1 */
		c->imr = val;
		break;
	}
}

/* A poll read: like INTA without the vector, 0x80 | irq, or 0. */
static uint8_t chip_poll(struct pic_chip *c, bool master)
{
	int irq = chip_pending_irq(c, master);

	c->poll = false;
	if (irq == PIC_NO_IRQ)
		return 0;
	chip_intack(c, irq);
	return (uint8_t)(POLL_IRQ_VALID | irq);
}

static uint8_t chip_read(struct pic_chip *c, bool master, bool data_port)
{
	if (c->poll)
		return chip_poll(c, master);
	if (data_port)
		return c->imr;
	return c->read_isr ? c->isr : c->irr;
}

static void chip_write_elcr(struct pic_chip *c, uint8_t val)
{
	c->elcr = val & c->elcr_mask;
	/* Level lines request for as long as they are high. */
	c->irr = (uint8_t)((c->irr & ~c->elcr) | (c->last_irr & c->elcr));
}

static void chip_reset(struct pic_chip *c, uint8_t vector_base,
		       uint8_t elcr_mask)
{
	memset(c, 0, sizeof(*c));
	c->imr = 0xff; /* nothing reaches the CPU until the guest sets it up */
	c->vector_base = vector_base;
	c->elcr_mask = elcr_mask;
}

/* --- the cascaded pair --- */

/* Recompute the cascade line and INTR after any change (lock held). */
static void pic_update(struct pic *p)
{
	struct pic_chip *slave = &p->chip[PIC_SLAVE];
	int slave_out = chip_pending_irq(slave, false) != PIC_NO_IRQ;

	chip_set_line(&p->chip[PIC_MASTER], PIC_CASCADE_IRQ, slave_out);
	p->intr = chip_pending_irq(&p->chip[PIC_MASTER], true) != PIC_NO_IRQ;
}

/*
 * Report INTR to the host until it has seen the current level. Called
 * without the lock; a nested or concurrent call leaves the work to the
 * thread already reporting.
 */
static void pic_notify(struct pic *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->notifying || !p->ops || !p->ops->intr) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->notifying = true;
	while (p->intr_sent != p->intr) {
		int level = p->intr;

		p->intr_sent = level;
		pthread_mutex_unlock(&p->lock);
		p->ops->intr(p->opaque, level);
		pthread_mutex_lock(&p->lock);
	}
	p->notifying = false;
	pthread_mutex_unlock(&p->lock);
}

/* One byte at absolute @port (lock held). */
static void pic_io_byte(struct pic *p, uint16_t port, uint8_t *data,
			bool is_write)
{
	bool data_port = port & 1;
	int idx;

	if (port == PORT_ELCR || port == PORT_ELCR + 1) {
		idx = port - PORT_ELCR;
		if (is_write)
			chip_write_elcr(&p->chip[idx], *data);
		else
			*data = p->chip[idx].elcr;
		return;
	}
	if ((port & ~1) == PORT_MASTER)
		idx = PIC_MASTER;
	else if ((port & ~1) == PORT_SLAVE)
		idx = PIC_SLAVE;
	else {
		if (!is_write)
			*data = 0xff; /* not ours */
		return;
	}
	if (!is_write)
		*data = chip_read(&p->chip[idx], idx == PIC_MASTER, data_port);
	else if (data_port)
		chip_write_data(&p->chip[idx], *data);
	else
		chip_write_cmd(&p->chip[idx], *data);
}

/* Wider accesses act as byte accesses to consecutive ports. */
void pic_io(struct pic *p, uint16_t port, uint8_t *data, uint32_t len,
	    bool is_write)
{
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < len; i++)
		pic_io_byte(p, (uint16_t)(port + i), &data[i], is_write);
	pic_update(p);
	pthread_mutex_unlock(&p->lock);
	pic_notify(p);
}

void pic_set_irq(struct pic *p, int irq, int level)
{
	if (irq < 0 || irq >= 16 || irq == PIC_CASCADE_IRQ)
		return;
	pthread_mutex_lock(&p->lock);
	chip_set_line(&p->chip[irq >> 3], irq & 7, level ? 1 : 0);
	pic_update(p);
	pthread_mutex_unlock(&p->lock);
	pic_notify(p);
}

/* INTA on the slave after the master took IRQ 2 (lock held). */
static int pic_ack_slave(struct pic *p)
{
	struct pic_chip *slave = &p->chip[PIC_SLAVE];
	int irq = chip_pending_irq(slave, false);

	if (irq == PIC_NO_IRQ)
		irq = PIC_SPURIOUS_IRQ; /* nothing left: spurious IRQ 15 */
	else
		chip_intack(slave, irq);
	return slave->vector_base + irq;
}

int pic_ack(struct pic *p)
{
	struct pic_chip *master = &p->chip[PIC_MASTER];
	int irq, vector;

	pthread_mutex_lock(&p->lock);
	irq = chip_pending_irq(master, true);
	if (irq == PIC_NO_IRQ) {
		vector = master->vector_base + PIC_SPURIOUS_IRQ;
	} else {
		chip_intack(master, irq);
		if (irq == PIC_CASCADE_IRQ)
			vector = pic_ack_slave(p);
		else
			vector = master->vector_base + irq;
	}
	pic_update(p);
	pthread_mutex_unlock(&p->lock);
	pic_notify(p);
	return vector;
}

bool pic_intr(struct pic *p)
{
	bool level;

	pthread_mutex_lock(&p->lock);
	level = p->intr;
	pthread_mutex_unlock(&p->lock);
	return level;
}

/* --- port registration --- */

static void pic_master_io(void *opaque, uint64_t offset, uint8_t *data,
			  uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	pic_io(opaque, (uint16_t)(PORT_MASTER + offset), data, len, is_write);
}

static void pic_slave_io(void *opaque, uint64_t offset, uint8_t *data,
			 uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	pic_io(opaque, (uint16_t)(PORT_SLAVE + offset), data, len, is_write);
}

static void pic_elcr_io(void *opaque, uint64_t offset, uint8_t *data,
			uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	pic_io(opaque, (uint16_t)(PORT_ELCR + offset), data, len, is_write);
}

static const struct {
	uint16_t base;
	io_handler_fn fn;
	const char *name;
} pic_ranges[] = {
	{PORT_MASTER, pic_master_io, "pic-master"},
	{PORT_SLAVE, pic_slave_io, "pic-slave"},
	{PORT_ELCR, pic_elcr_io, "pic-elcr"},
};

#define PIC_NR_RANGES (sizeof(pic_ranges) / sizeof(pic_ranges[0]))

static void pic_unregister(struct io_registry *io, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ioreg_unregister(io, IO_SPACE_PIO, pic_ranges[i].base);
}

static int pic_register(struct pic *p, struct io_registry *io)
{
	for (size_t i = 0; i < PIC_NR_RANGES; i++) {
		int rc = ioreg_register(io, IO_SPACE_PIO, pic_ranges[i].base,
					PIC_NR_PORTS, pic_ranges[i].fn, p,
					pic_ranges[i].name);

		if (rc) {
			pic_unregister(io, i);
			return rc;
		}
	}
	return 0;
}

int pic_init(struct pic *p, struct io_registry *io, const struct pic_ops *ops,
	     void *opaque)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->ops = ops;
	p->opaque = opaque;
	chip_reset(&p->chip[PIC_MASTER], VECTOR_BASE_MASTER, ELCR_MASK_MASTER);
	chip_reset(&p->chip[PIC_SLAVE], VECTOR_BASE_SLAVE, ELCR_MASK_SLAVE);
	if (pthread_mutex_init(&p->lock, NULL))
		return -ENOMEM;
	if (!io)
		return 0;
	rc = pic_register(p, io);
	if (rc) {
		pthread_mutex_destroy(&p->lock);
		return rc;
	}
	p->io = io;
	return 0;
}

/* Call once the vCPUs and device threads no longer reach the PIC. */
void pic_destroy(struct pic *p)
{
	if (p->io)
		pic_unregister(p->io, PIC_NR_RANGES);
	p->io = NULL;
	pthread_mutex_destroy(&p->lock);
}
