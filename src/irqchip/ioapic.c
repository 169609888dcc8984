/*
 * irqchip/ioapic.c - the emulated I/O APIC (82093AA register set, version
 * 0x20): owns the ID, version and arbitration registers, the redirection
 * table behind IOREGSEL/IOWIN, the EOI register, the pin levels and remote
 * IRR. Pin changes and EOIs become APIC bus messages, collected under the
 * lock and handed to ops->send after it is dropped (send may re-enter
 * ioapic_eoi on the same thread).
 *
 * Polarity: callers of ioapic_set_irq pass logical levels (1 = the device
 * requests an interrupt), so the polarity bit of an entry is stored and
 * read back but never used to invert the line.
 */
#include <errno.h>
#include <string.h>

#include "irqchip/ioapic.h"

/* MMIO offsets inside the page. */
#define IOAPIC_OFF_REGSEL 0x00
#define IOAPIC_OFF_WIN 0x10
#define IOAPIC_OFF_EOI 0x40

/* Indirect registers (IOREGSEL values). */
#define IOAPIC_REG_ID 0x00
#define IOAPIC_REG_VER 0x01
#define IOAPIC_REG_ARB 0x02
#define IOAPIC_REG_REDIR 0x10
#define IOAPIC_REG_REDIR_END (IOAPIC_REG_REDIR + 2 * IOAPIC_PINS)

#define IOAPIC_VERSION 0x20
#define IOAPIC_VER_VALUE ((uint32_t)(IOAPIC_PINS - 1) << 16 | IOAPIC_VERSION)
#define IOAPIC_ID_SHIFT 24
#define IOAPIC_ID_WRITABLE 0x0f /* bits 27:24 */

/* Redirection entry fields. */
#define RTE_VECTOR 0xffULL
#define RTE_DELIVERY_SHIFT 8
#define RTE_DELIVERY_MASK 0x7ULL
#define RTE_DEST_LOGICAL (1ULL << 11)
#define RTE_DELIVERY_STATUS (1ULL << 12)
#define RTE_POLARITY_LOW (1ULL << 13)
#define RTE_REMOTE_IRR (1ULL << 14)
#define RTE_LEVEL (1ULL << 15)
#define RTE_MASKED (1ULL << 16)
#define RTE_DEST_SHIFT 56
#define RTE_DEST_MASK 0xffULL
#define RTE_WRITABLE                                                    \
	(RTE_VECTOR | RTE_DELIVERY_MASK << RTE_DELIVERY_SHIFT |         \
	 RTE_DEST_LOGICAL | RTE_POLARITY_LOW | RTE_LEVEL | RTE_MASKED | \
	 RTE_DEST_MASK << RTE_DEST_SHIFT)

/* Messages to send once the lock is dropped (each pin at most once). */
struct ioapic_out {
	unsigned int n;
	struct apic_msg msg[IOAPIC_PINS];
};

static void ioapic_flush(struct ioapic *s, const struct ioapic_out *out)
{
	for (unsigned int i = 0; i < out->n; i++)
		s->ops->send(s->opaque, &out->msg[i]);
}

static struct apic_msg rte_to_msg(uint64_t e)
{
	struct apic_msg m = {
		.dest = (uint32_t)((e >> RTE_DEST_SHIFT) & RTE_DEST_MASK),
		.vector = (uint8_t)(e & RTE_VECTOR),
		.delivery = (uint8_t)((e >> RTE_DELIVERY_SHIFT) &
				      RTE_DELIVERY_MASK),
		.shorthand = APIC_SH_NONE,
		.logical = e & RTE_DEST_LOGICAL,
		.level = e & RTE_LEVEL,
		.assert = true,
		.x2apic_dest = false,
		.src_vcpu = -1,
	};

	return m;
}

/* Queue pin @pin's message; level entries now wait for an EOI. */
static void ioapic_fire(struct ioapic *s, int pin, struct ioapic_out *out)
{
	if (out->n >= IOAPIC_PINS)
		return;
	out->msg[out->n++] = rte_to_msg(s->redir[pin]);
	if (s->redir[pin] & RTE_LEVEL)
		s->redir[pin] |= RTE_REMOTE_IRR;
	s->delivered[pin]++;
}

/* A level pin that is asserted, unmasked and not awaiting an EOI fires. */
static void ioapic_service_level(struct ioapic *s, int pin,
				 struct ioapic_out *out)
{
	uint64_t e = s->redir[pin];

	if (!(e & RTE_LEVEL) || (e & (RTE_MASKED | RTE_REMOTE_IRR)))
		return;
	if (s->pin_level[pin])
		ioapic_fire(s, pin, out);
}

static void ioapic_eoi_locked(struct ioapic *s, uint8_t vector,
			      struct ioapic_out *out)
{
	for (int pin = 0; pin < IOAPIC_PINS; pin++) {
		uint64_t e = s->redir[pin];

		if (!(e & RTE_LEVEL) || !(e & RTE_REMOTE_IRR) ||
		    (e & RTE_VECTOR) != vector)
			continue;
		s->redir[pin] &= ~RTE_REMOTE_IRR;
		ioapic_service_level(s, pin, out);
	}
}

/* --- indirect registers --- */

static uint32_t ioapic_read_reg(const struct ioapic *s, uint32_t index)
{
	switch (index) {
	case IOAPIC_REG_ID:
	case IOAPIC_REG_ARB:
		return (uint32_t)s->id << IOAPIC_ID_SHIFT;
	case IOAPIC_REG_VER:
		return IOAPIC_VER_VALUE;
	}
	if (index >= IOAPIC_REG_REDIR && index < IOAPIC_REG_REDIR_END) {
		uint64_t e = s->redir[(index - IOAPIC_REG_REDIR) / 2];

		return (uint32_t)(index & 1 ? e >> 32 : e);
	}
	return 0;
}

static void ioapic_write_redir(struct ioapic *s, uint32_t index, uint32_t val,
			       struct ioapic_out *out)
{
	int pin = (int)(index - IOAPIC_REG_REDIR) / 2;
	uint64_t e = s->redir[pin];
	uint64_t v = index & 1 ? (uint64_t)val << 32 | (uint32_t)e :
				 (e & ~0xffffffffULL) | val;

	e = (e & ~RTE_WRITABLE) | (v & RTE_WRITABLE);
	if (!(e & RTE_LEVEL))
		e &= ~RTE_REMOTE_IRR; /* only level entries wait for an EOI */
	s->redir[pin] = e;
	/* An asserted level pin that was just unmasked fires now. */
	ioapic_service_level(s, pin, out);
}

static void ioapic_write_reg(struct ioapic *s, uint32_t index, uint32_t val,
			     struct ioapic_out *out)
{
	if (index == IOAPIC_REG_ID) {
		uint8_t bits = (val >> IOAPIC_ID_SHIFT) & IOAPIC_ID_WRITABLE;

		s->id = (uint8_t)((s->id & ~IOAPIC_ID_WRITABLE) | bits);
	} else if (index >= IOAPIC_REG_REDIR && index < IOAPIC_REG_REDIR_END) {
		ioapic_write_redir(s, index, val, out);
	}
	/* version, arbitration and unknown registers are read-only */
}

/* --- MMIO --- */

static bool ioapic_access_ok(uint64_t off, uint32_t len)
{
	if (len != 1 && len != 2 && len != 4)
		return false;
	return off == IOAPIC_OFF_REGSEL || off == IOAPIC_OFF_WIN ||
	       off == IOAPIC_OFF_EOI;
}

static uint32_t get_le(const uint8_t *data, uint32_t len)
{
	uint32_t v = 0;

	for (uint32_t i = 0; i < len; i++)
		v |= (uint32_t)data[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *data, uint32_t len, uint32_t v)
{
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t ioapic_mmio_read(struct ioapic *s, uint64_t off)
{
	if (off == IOAPIC_OFF_REGSEL)
		return s->ioregsel;
	if (off == IOAPIC_OFF_WIN)
		return ioapic_read_reg(s, s->ioregsel);
	return 0; /* the EOI register is write-only */
}

static void ioapic_mmio_write(struct ioapic *s, uint64_t off, uint32_t val,
			      struct ioapic_out *out)
{
	if (off == IOAPIC_OFF_REGSEL)
		s->ioregsel = val & 0xff;
	else if (off == IOAPIC_OFF_WIN)
		ioapic_write_reg(s, s->ioregsel, val, out);
	else
		ioapic_eoi_locked(s, (uint8_t)val, out);
}

/*
 * Accesses of 1, 2 or 4 bytes at a register's offset reach it (narrow
 * ones see its low bytes); anything else reads 0 and writes are dropped.
 */
void ioapic_mmio(struct ioapic *s, uint64_t off, uint8_t *data, uint32_t len,
		 bool is_write)
{
	struct ioapic_out out = {0};

	if (!ioapic_access_ok(off, len)) {
		if (!is_write)
			memset(data, 0, len);
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (is_write)
		ioapic_mmio_write(s, off, get_le(data, len), &out);
	else
		put_le(data, len, ioapic_mmio_read(s, off));
	pthread_mutex_unlock(&s->lock);
	ioapic_flush(s, &out);
}

static void ioapic_mmio_handler(void *opaque, uint64_t offset, uint8_t *data,
				uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	ioapic_mmio(opaque, offset, data, len, is_write);
}

/* --- lines and EOIs --- */

void ioapic_set_irq(struct ioapic *s, int pin, int level)
{
	struct ioapic_out out = {0};
	int old;

	if (pin < 0 || pin >= IOAPIC_PINS)
		return;
	level = level ? 1 : 0;
	pthread_mutex_lock(&s->lock);
	old = s->pin_level[pin];
	s->pin_level[pin] = level;
	if (s->redir[pin] & RTE_LEVEL)
		ioapic_service_level(s, pin, &out);
	else if (level && !old && !(s->redir[pin] & RTE_MASKED))
		ioapic_fire(s, pin, &out);
	pthread_mutex_unlock(&s->lock);
	ioapic_flush(s, &out);
}

void ioapic_eoi(struct ioapic *s, uint8_t vector)
{
	struct ioapic_out out = {0};

	pthread_mutex_lock(&s->lock);
	ioapic_eoi_locked(s, vector, &out);
	pthread_mutex_unlock(&s->lock);
	ioapic_flush(s, &out);
}

/* --- life cycle --- */

static void ioapic_reset(struct ioapic *s)
{
	s->ioregsel = 0;
	for (int pin = 0; pin < IOAPIC_PINS; pin++) {
		s->redir[pin] = RTE_MASKED; /* edge, fixed, vector 0 */
		s->pin_level[pin] = 0;
		s->delivered[pin] = 0;
	}
}

int ioapic_init(struct ioapic *s, struct io_registry *io, uint8_t id,
		const struct ioapic_ops *ops, void *opaque)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->opaque = opaque;
	s->id = id;
	ioapic_reset(s);
	if (pthread_mutex_init(&s->lock, NULL))
		return -ENOMEM;
	if (!io)
		return 0;
	rc = ioreg_register(io, IO_SPACE_MMIO, IOAPIC_MMIO_BASE,
			    IOAPIC_MMIO_SIZE, ioapic_mmio_handler, s, "ioapic");
	if (rc) {
		pthread_mutex_destroy(&s->lock);
		return rc;
	}
	s->io = io;
	return 0;
}

/* Call once the vCPUs and device threads no longer reach the IOAPIC. */
void ioapic_destroy(struct ioapic *s)
{
	if (s->io)
		ioreg_unregister(s->io, IO_SPACE_MMIO, IOAPIC_MMIO_BASE);
	s->io = NULL;
	pthread_mutex_destroy(&s->lock);
}
