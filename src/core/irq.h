/*
 * core/irq.h - how devices raise interrupts without knowing who delivers
 * them: a line setter (GSI, level) and an MSI sender. The VM provides the
 * KVM implementation; the cluster may later provide a forwarding one.
 */
#ifndef DVMM_CORE_IRQ_H
#define DVMM_CORE_IRQ_H

#include <stdint.h>

struct irq_sink {
	int (*set_line)(void *opaque, uint32_t gsi, int level);
	int (*send_msi)(void *opaque, uint64_t addr, uint32_t data);
	void *opaque;
};

static inline int irq_set_line(const struct irq_sink *s, uint32_t gsi,
			       int level)
{
	return s->set_line(s->opaque, gsi, level);
}

static inline int irq_pulse(const struct irq_sink *s, uint32_t gsi)
{
	int rc = s->set_line(s->opaque, gsi, 1);

	if (rc == 0)
		rc = s->set_line(s->opaque, gsi, 0);
	return rc;
}

#endif
