/*
 * irqchip/pit.h - the 8254 PIT emulated in dvmm (ports 0x40-0x43, and
 * port 0x61 for channel 2's gate and output, as used to calibrate): three
 * counters, modes 0-5, binary counting (BCD too), latch and read-back
 * commands, lo/hi byte access. Channel 0's output drives IRQ 0 through
 * ops->irq0; its periodic ticks are driven by a host timer the caller arms.
 * Time is ops->now_ns (the guest's time base); 1193182 Hz input clock.
 */
#ifndef DVMM_IRQCHIP_PIT_H
#define DVMM_IRQCHIP_PIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ioreg.h"

#define PIT_HZ 1193182ULL

struct pit_ops {
	/* Channel 0 output: raise (1) / lower (0) IRQ 0 (no PIT lock). */
	void (*irq0)(void *opaque, int level);
	/* Call pit_timer_fire at @deadline_ns; 0 cancels. */
	void (*timer_arm)(void *opaque, uint64_t deadline_ns);
	uint64_t (*now_ns)(void *opaque);
};

struct pit_channel {
	uint32_t count;	  /* reload value (0 means 65536) */
	uint64_t load_ns; /* when counting started */
	uint8_t mode, rw_mode, bcd;
	bool gate;
	bool counting; /* count written, counting */
	bool latched;
	uint16_t latch;
	bool status_latched;
	uint8_t status;
	uint8_t read_state, write_state; /* lo/hi byte sequencing */
	uint8_t write_lsb;
	bool null_count;
	bool latch_msb_next; /* lo/hi latched read: the MSB comes next */
	bool triggered;	     /* modes 1/5: a gate rising edge started it */
	uint64_t pause_ns;   /* when the gate last went low */
};

struct pit {
	pthread_mutex_t lock;
	const struct pit_ops *ops;
	void *opaque;
	struct pit_channel ch[3];
	uint64_t next_irq_ns;	/* channel 0: next tick armed, 0 if none */
	uint8_t port61;		/* speaker/gate bits the guest wrote */
	uint64_t ticks;		/* stats: IRQ 0 edges raised */
	struct io_registry *io; /* NULL: no ports registered */
	bool refresh;		/* port 0x61 bit 4, flips on each read */
	/* Channel 0 output as the host sees it; ops are called outside the
	   lock by one thread at a time (see pit_sync). */
	int irq0_level;	    /* wanted IRQ 0 level (mode 0 terminal count) */
	int irq0_sent;	    /* last level passed to ops->irq0 */
	bool pulse_pending; /* a periodic tick owes an IRQ 0 pulse */
	uint64_t armed_ns;  /* last deadline passed to ops->timer_arm */
	bool syncing;	    /* a thread is calling the ops */
};

int pit_init(struct pit *p, struct io_registry *io, const struct pit_ops *ops,
	     void *opaque);
void pit_destroy(struct pit *p);
void pit_io(struct pit *p, uint16_t port, uint8_t *data, uint32_t len,
	    bool is_write);
/* The armed deadline passed: pulse IRQ 0 (catching up), re-arm. */
void pit_timer_fire(struct pit *p);

#endif
