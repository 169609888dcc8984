/*
 * machine/devices.h - the legacy PC devices, one .c file each: 8250 UART,
 * CMOS RTC, i8042 (reset line only), debug-exit port, ACPI PM block and the
 * 0xCF9 reset control. Each registers its own ports with the io registry.
 */
#ifndef DVMM_MACHINE_DEVICES_H
#define DVMM_MACHINE_DEVICES_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ioreg.h"
#include "core/irq.h"
#include "core/lifecycle.h"

/* --- 8250/16550A UART (uart8250.c) --- */
#define UART_RX_FIFO 256

struct uart8250 {
	pthread_mutex_t lock;
	const struct irq_sink *irq;
	uint32_t gsi;
	int out_fd; /* guest output goes here */
	int in_fd;  /* host input, -1 for none */
	pthread_t in_thread;
	bool in_thread_started;
	int stop_pipe[2]; /* wakes the input thread to quit */
	/* registers */
	uint8_t ier, iir, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	bool thr_irq_pending; /* THR-empty interrupt owed to the guest */
	int irq_level;
	uint8_t rx[UART_RX_FIFO];
	unsigned int rx_head, rx_count;
	uint64_t tx_bytes;
};

int uart8250_init(struct uart8250 *u, struct io_registry *io,
		  const struct irq_sink *irq, uint16_t base, uint32_t gsi,
		  int out_fd);
/* The registers a migration carries (the receive FIFO is not). */
struct uart8250_regs {
	uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	bool thr_irq_pending;
};
void uart8250_save(struct uart8250 *u, struct uart8250_regs *r);
/* Take @r (from the network) and raise the line if it says so. */
void uart8250_load(struct uart8250 *u, const struct uart8250_regs *r);

/* Start a thread reading @in_fd into the receive FIFO. */
int uart8250_start_input(struct uart8250 *u, int in_fd);
/* Queue host bytes for the guest; returns bytes accepted (FIFO may fill). */
size_t uart8250_receive(struct uart8250 *u, const uint8_t *buf, size_t n);
void uart8250_destroy(struct uart8250 *u);

/* --- CMOS RTC and NVRAM (cmos_rtc.c): time from the host clock --- */
struct cmos_rtc {
	pthread_mutex_t lock;
	uint8_t index;
	bool nmi_disabled;
	uint8_t nvram[128];
	long long offset_sec; /* guest-set time minus host time */
};

int cmos_rtc_init(struct cmos_rtc *c, struct io_registry *io,
		  uint64_t ram_below_4g, uint64_t ram_above_4g,
		  unsigned int ncpus);
void cmos_rtc_destroy(struct cmos_rtc *c);

/* --- i8042 keyboard controller: status, and the reset line (i8042.c) --- */
struct i8042 {
	pthread_mutex_t lock;
	const struct vm_lifecycle *lc;
	uint8_t cmd; /* pending command awaiting a data byte */
	uint8_t ccb; /* controller command byte */
	uint8_t out_port;
	uint8_t out_buf;
	bool out_full;
};

int i8042_init(struct i8042 *k, struct io_registry *io,
	       const struct vm_lifecycle *lc);
void i8042_destroy(struct i8042 *k);

/* --- debug-exit port (debug_exit.c): a write ends the run with its value */
struct debug_exit {
	const struct vm_lifecycle *lc;
};

int debug_exit_init(struct debug_exit *d, struct io_registry *io,
		    const struct vm_lifecycle *lc, uint16_t port);

/* --- ACPI PM1a event/control block and 0xCF9 reset (acpi_pm.c) --- */
struct acpi_pm {
	pthread_mutex_t lock;
	const struct vm_lifecycle *lc;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
	uint8_t cf9;
};

int acpi_pm_init(struct acpi_pm *p, struct io_registry *io,
		 const struct vm_lifecycle *lc);
/*
 * The 0xCF9 reset control register (opaque = the struct acpi_pm). Not
 * registered by acpi_pm_init: the PCI bus owns 0xCF8-0xCFF and forwards
 * byte accesses at 0xCF9 here as offset 0 (pci_bus_init's cf9 handler).
 * Any other offset or size reads all-ones and is ignored.
 */
void acpi_pm_reset_control_io(void *opaque, uint64_t offset, uint8_t *data,
			      uint32_t len, bool is_write, int vcpu_id);
void acpi_pm_destroy(struct acpi_pm *p);

/*
 * --- node-info ports 0x510-0x51f (node_info.c): which node runs the
 * reading vCPU, and how much distributed-memory traffic this node has had
 * for a page range the vCPU selects; answered locally, never forwarded.
 *   in  0x510: node id        out 0x514: first page frame (gpa >> 12)
 *   out 0x518: page count     in  0x51c: DSM events in the range (low 32)
 */
#define NODE_INFO_PORT 0x510
#define NODE_INFO_PORTS 0x10

/* Events for guest-physical pages [first_pfn, first_pfn + n); 0 if none. */
typedef uint64_t (*node_info_events_fn)(void *opaque, uint64_t first_pfn,
					uint64_t n);

struct node_info {
	int node;
	node_info_events_fn events;
	void *opaque;
	int ncpus;
	uint32_t sel_pfn[64], sel_count[64]; /* per vCPU */
};

int node_info_init(struct node_info *n, struct io_registry *io, int node,
		   int ncpus, node_info_events_fn events, void *opaque);
void node_info_destroy(struct node_info *n, struct io_registry *io);

#endif
