/*
 * tests/unit/test_devices.c - the legacy PC devices driven through a real
 * io registry with ioreg_dispatch, as a vCPU would: the 16550A UART, the
 * CMOS RTC, the i8042, the debug-exit port and the ACPI PM / 0xCF9 reset
 * registers. A test irq sink and vm_lifecycle record what the devices do.
 * 0xCF9 belongs to the PCI bus, which forwards byte accesses to
 * acpi_pm_reset_control_io(); the tests register that handler at 0xCF9
 * themselves, standing in for the bus.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "machine/acpi.h"
#include "machine/devices.h"
#include "machine/layout.h"

#define COM1 PORT_COM1
#define COM1_GSI PORT_COM1_IRQ
#define MAX_EVENTS 256

/* --- test doubles --- */

struct irq_rec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int n;
	uint32_t gsi[MAX_EVENTS];
	int level[MAX_EVENTS];
	int current;
};

static int rec_set_line(void *opaque, uint32_t gsi, int level)
{
	struct irq_rec *r = opaque;

	pthread_mutex_lock(&r->lock);
	if (r->n < MAX_EVENTS) {
		r->gsi[r->n] = gsi;
		r->level[r->n] = level;
	}
	r->n++;
	r->current = level;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static int rec_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
	(void)opaque;
	(void)addr;
	(void)data;
	return -ENOSYS;
}

struct stop_rec {
	int n;
	enum vm_stop_reason reason;
	int code;
};

static void rec_request_stop(void *opaque, enum vm_stop_reason reason, int code)
{
	struct stop_rec *s = opaque;

	s->n++;
	s->reason = reason;
	s->code = code;
}

/* Everything a test needs; one per test, on the heap. */
struct fixture {
	struct io_registry io;
	struct irq_rec irq;
	struct irq_sink sink;
	struct stop_rec stop;
	struct vm_lifecycle lc;
	int out[2]; /* UART output pipe */
	struct uart8250 uart;
	bool uart_up;
	struct cmos_rtc rtc;
	bool rtc_up;
	struct i8042 kbd;
	bool kbd_up;
	struct debug_exit dbg;
	struct acpi_pm pm;
	bool pm_up;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(ioreg_init(&f->io), 0);
	pthread_mutex_init(&f->irq.lock, NULL);
	pthread_cond_init(&f->irq.cond, NULL);
	f->sink = (struct irq_sink){.set_line = rec_set_line,
				    .send_msi = rec_send_msi,
				    .opaque = &f->irq};
	f->lc = (struct vm_lifecycle){.request_stop = rec_request_stop,
				      .opaque = &f->stop};
	f->out[0] = f->out[1] = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->uart_up)
		uart8250_destroy(&f->uart);
	if (f->rtc_up)
		cmos_rtc_destroy(&f->rtc);
	if (f->kbd_up)
		i8042_destroy(&f->kbd);
	if (f->pm_up)
		acpi_pm_destroy(&f->pm);
	for (int i = 0; i < 2; i++)
		if (f->out[i] >= 0)
			close(f->out[i]);
	ioreg_destroy(&f->io);
	pthread_cond_destroy(&f->irq.cond);
	pthread_mutex_destroy(&f->irq.lock);
	free(f);
	return 0;
}

/* --- port access helpers, through the registry --- */

static void out_n(struct fixture *f, uint16_t port, uint32_t v, uint32_t len)
{
	uint8_t d[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff,
			(v >> 24) & 0xff};

	assert_true(
		ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, len, true, 0));
}

static uint32_t in_n(struct fixture *f, uint16_t port, uint32_t len)
{
	uint8_t d[4] = {0};

	assert_true(
		ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, len, false, 0));
	return d[0] | d[1] << 8 | d[2] << 16 | (uint32_t)d[3] << 24;
}

static void outb(struct fixture *f, uint16_t port, uint8_t v)
{
	out_n(f, port, v, 1);
}

static uint8_t inb(struct fixture *f, uint16_t port)
{
	return (uint8_t)in_n(f, port, 1);
}

static int irq_events(struct fixture *f)
{
	int n;

	pthread_mutex_lock(&f->irq.lock);
	n = f->irq.n;
	pthread_mutex_unlock(&f->irq.lock);
	return n;
}

static int irq_level(struct fixture *f)
{
	int v;

	pthread_mutex_lock(&f->irq.lock);
	v = f->irq.current;
	pthread_mutex_unlock(&f->irq.lock);
	return v;
}

/*
 * Every 1/2/4-byte access at every offset from @base - 1 to @base + @len:
 * taken ones must not crash, straddling ones are refused by the registry.
 */
static void poke_everywhere(struct fixture *f, uint16_t base, uint16_t len,
			    bool writes)
{
	static const uint32_t sizes[] = {1, 2, 4};

	for (int s = 0; s < 3; s++) {
		for (int o = -1; o <= len; o++) {
			uint8_t d[4] = {0, 0, 0, 0};
			uint16_t port = (uint16_t)(base + o);

			ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, sizes[s],
				       false, 0);
			if (writes)
				ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d,
					       sizes[s], true, 0);
		}
	}
}

/* --- UART --- */

#define UART_THR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

static void uart_up(struct fixture *f)
{
	assert_int_equal(pipe2(f->out, O_CLOEXEC), 0);
	assert_int_equal(uart8250_init(&f->uart, &f->io, &f->sink, COM1,
				       COM1_GSI, f->out[1]),
			 0);
	f->uart_up = true;
}

/* Bytes waiting in the output pipe (none is not an error). */
static size_t drain_out(struct fixture *f, uint8_t *buf, size_t cap)
{
	struct pollfd pfd = {.fd = f->out[0], .events = POLLIN};
	size_t got = 0;

	while (got < cap && poll(&pfd, 1, 0) == 1) {
		ssize_t r = read(f->out[0], buf + got, cap - got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

static void test_uart_output_byte_exact(void **state)
{
	struct fixture *f = *state;
	uint8_t sent[300], got[400];
	const char *hello = "Hello, dvmm!\r\n";
	size_t n = 0;

	uart_up(f);
	for (const char *p = hello; *p; p++)
		sent[n++] = (uint8_t)*p;
	for (int i = 0; i < 256; i++)
		sent[n++] = (uint8_t)i;
	for (size_t i = 0; i < n; i++)
		outb(f, COM1 + UART_THR, sent[i]);
	assert_int_equal(drain_out(f, got, sizeof(got)), n);
	assert_memory_equal(got, sent, n);
	assert_int_equal(f->uart.tx_bytes, n);
	assert_int_equal(irq_events(f), 0); /* no interrupts enabled */
}

static void test_uart_lsr_and_rx(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[] = {'o', 'k'};

	uart_up(f);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x60); /* THRE | TEMT */
	assert_int_equal(uart8250_receive(&f->uart, in, 2), 2);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x61); /* + DR */
	assert_int_equal(inb(f, COM1 + UART_THR), 'o');
	assert_int_equal(inb(f, COM1 + UART_LSR) & 1, 1);
	assert_int_equal(inb(f, COM1 + UART_THR), 'k');
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x60);
	/* Nothing left: reading RBR is harmless. */
	inb(f, COM1 + UART_THR);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x60);
}

static void test_uart_rx_fifo_limit_and_clear(void **state)
{
	struct fixture *f = *state;
	uint8_t in[UART_RX_FIFO + 44];

	uart_up(f);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)i;
	assert_int_equal(uart8250_receive(&f->uart, in, sizeof(in)),
			 UART_RX_FIFO);
	assert_int_equal(uart8250_receive(&f->uart, in, 1), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(inb(f, COM1 + UART_THR), i);
	/* Wrapped around the ring. */
	assert_int_equal(uart8250_receive(&f->uart, in + 100, 10), 10);
	for (int i = 10; i < UART_RX_FIFO; i++)
		assert_int_equal(inb(f, COM1 + UART_THR), i);
	for (int i = 100; i < 110; i++)
		assert_int_equal(inb(f, COM1 + UART_THR), i);
	assert_int_equal(inb(f, COM1 + UART_LSR) & 1, 0);
	/* FCR clears the receive FIFO. */
	assert_int_equal(uart8250_receive(&f->uart, in, 5), 5);
	outb(f, COM1 + UART_FCR, 0x01);
	outb(f, COM1 + UART_FCR, 0x03);
	assert_int_equal(inb(f, COM1 + UART_LSR) & 1, 0);
}

static void test_uart_dlab(void **state)
{
	struct fixture *f = *state;
	uint8_t got[8];

	uart_up(f);
	outb(f, COM1 + UART_IER, 0x05);
	outb(f, COM1 + UART_LCR, 0x83); /* DLAB, 8N1 */
	outb(f, COM1 + UART_THR, 0x01); /* DLL: 115200 baud */
	outb(f, COM1 + UART_IER, 0x00); /* DLM */
	assert_int_equal(inb(f, COM1 + UART_THR), 0x01);
	assert_int_equal(inb(f, COM1 + UART_IER), 0x00);
	assert_int_equal(inb(f, COM1 + UART_LCR), 0x83);
	outb(f, COM1 + UART_THR, 0x0c);
	assert_int_equal(inb(f, COM1 + UART_THR), 0x0c);
	outb(f, COM1 + UART_LCR, 0x03);
	/* The divisor writes were not output, and IER kept its value. */
	assert_int_equal(drain_out(f, got, sizeof(got)), 0);
	assert_int_equal(f->uart.tx_bytes, 0);
	assert_int_equal(inb(f, COM1 + UART_IER), 0x05);
	assert_int_equal(f->uart.dll, 0x0c);
	assert_int_equal(f->uart.dlm, 0x00);
}

static void test_uart_thr_empty_interrupt(void **state)
{
	struct fixture *f = *state;
	uint8_t got[4];

	uart_up(f);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x01);
	outb(f, COM1 + UART_IER, 0x02); /* THRI */
	assert_int_equal(irq_events(f), 1);
	assert_int_equal(f->irq.gsi[0], COM1_GSI);
	assert_int_equal(f->irq.level[0], 1);
	/* IIR names THR empty; reading it clears the interrupt. */
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x02);
	assert_int_equal(irq_events(f), 2);
	assert_int_equal(f->irq.level[1], 0);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x01);
	assert_int_equal(irq_events(f), 2); /* no change, no call */
	/* Sending a byte makes THR empty again: a fresh rising edge. */
	outb(f, COM1 + UART_THR, 'x');
	assert_int_equal(irq_events(f), 3);
	assert_int_equal(irq_level(f), 1);
	/* A second byte: the line drops and rises again (edge for IOAPIC). */
	outb(f, COM1 + UART_THR, 'y');
	assert_int_equal(irq_events(f), 5);
	assert_int_equal(f->irq.level[3], 0);
	assert_int_equal(f->irq.level[4], 1);
	/* Disabling THRI lowers the line. */
	outb(f, COM1 + UART_IER, 0x00);
	assert_int_equal(irq_level(f), 0);
	assert_int_equal(irq_events(f), 6);
	/* Re-enabling re-asserts it (THR is empty). */
	outb(f, COM1 + UART_IER, 0x02);
	assert_int_equal(irq_level(f), 1);
	assert_int_equal(drain_out(f, got, sizeof(got)), 2);
	assert_memory_equal(got, "xy", 2);
	/* With FIFOs on, IIR's top bits say so. */
	outb(f, COM1 + UART_FCR, 0x01);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0xc2);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0xc1);
}

static void test_uart_rx_interrupt_and_priority(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[] = {'a', 'b'};

	uart_up(f);
	outb(f, COM1 + UART_IER, 0x01); /* RDI */
	assert_int_equal(irq_events(f), 0);
	assert_int_equal(uart8250_receive(&f->uart, in, 2), 2);
	assert_int_equal(irq_level(f), 1);
	assert_int_equal(irq_events(f), 1);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x04);
	assert_int_equal(inb(f, COM1 + UART_THR), 'a');
	assert_int_equal(irq_level(f), 1); /* still data */
	assert_int_equal(inb(f, COM1 + UART_THR), 'b');
	assert_int_equal(irq_level(f), 0);
	assert_int_equal(irq_events(f), 2);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x01);

	/* RX data outranks THR empty; THR shows once RX is drained. */
	assert_int_equal(uart8250_receive(&f->uart, in, 1), 1);
	outb(f, COM1 + UART_IER, 0x03);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x04);
	assert_int_equal(inb(f, COM1 + UART_THR), 'a');
	assert_int_equal(irq_level(f), 1);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x02);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x01);
	assert_int_equal(irq_level(f), 0);
}

static void test_uart_loopback(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[] = {'h'};
	uint8_t got[4];

	uart_up(f);
	/* Linux's 8250 probe: scratch and IER tests, then loopback MSR. */
	outb(f, COM1 + UART_SCR, 0xa5);
	assert_int_equal(inb(f, COM1 + UART_SCR), 0xa5);
	outb(f, COM1 + UART_IER, 0x00);
	assert_int_equal(inb(f, COM1 + UART_IER) & 0x0f, 0x00);
	outb(f, COM1 + UART_IER, 0x0f);
	assert_int_equal(inb(f, COM1 + UART_IER) & 0x0f, 0x0f);
	outb(f, COM1 + UART_IER, 0xff);
	assert_int_equal(inb(f, COM1 + UART_IER), 0x0f); /* no UUE bit */
	outb(f, COM1 + UART_IER, 0x00);
	outb(f, COM1 + UART_MCR, 0x10 | 0x0a); /* LOOP | OUT2 | RTS */
	assert_int_equal(inb(f, COM1 + UART_MSR) & 0xf0, 0x90);
	outb(f, COM1 + UART_MCR, 0x1f);
	assert_int_equal(inb(f, COM1 + UART_MSR) & 0xf0, 0xf0);
	outb(f, COM1 + UART_MCR, 0x10);
	assert_int_equal(inb(f, COM1 + UART_MSR) & 0xf0, 0x00);

	/* Bytes loop back to the receiver instead of going out. */
	outb(f, COM1 + UART_THR, 'L');
	assert_int_equal(inb(f, COM1 + UART_LSR) & 1, 1);
	assert_int_equal(inb(f, COM1 + UART_THR), 'L');
	assert_int_equal(drain_out(f, got, sizeof(got)), 0);
	assert_int_equal(f->uart.tx_bytes, 0);
	/* Host input waits while the line is looped. */
	assert_int_equal(uart8250_receive(&f->uart, in, 1), 0);

	/* Back to normal: the far end is connected again. */
	outb(f, COM1 + UART_MCR, 0x0b);
	assert_int_equal(inb(f, COM1 + UART_MSR) & 0xf0, 0xb0);
	outb(f, COM1 + UART_THR, 'N');
	assert_int_equal(drain_out(f, got, sizeof(got)), 1);
	assert_int_equal(got[0], 'N');
	assert_int_equal(uart8250_receive(&f->uart, in, 1), 1);
}

static void test_uart_loopback_overrun(void **state)
{
	struct fixture *f = *state;

	uart_up(f);
	outb(f, COM1 + UART_MCR, 0x10);
	for (int i = 0; i < UART_RX_FIFO + 1; i++)
		outb(f, COM1 + UART_THR, (uint8_t)i);
	/* Overrun error: LSR bit 1, cleared by reading LSR. */
	outb(f, COM1 + UART_IER, 0x04);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x06);
	assert_int_equal(irq_level(f), 1);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x63);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x61);
	assert_int_equal(irq_level(f), 0);
}

static void test_uart_modem_status_interrupt(void **state)
{
	struct fixture *f = *state;

	uart_up(f);
	outb(f, COM1 + UART_MCR, 0x10); /* loop, all low */
	inb(f, COM1 + UART_MSR);	/* clear deltas */
	outb(f, COM1 + UART_IER, 0x08); /* MSI */
	assert_int_equal(irq_level(f), 0);
	outb(f, COM1 + UART_MCR, 0x12); /* RTS -> CTS */
	assert_int_equal(irq_level(f), 1);
	assert_int_equal(inb(f, COM1 + UART_IIR), 0x00);
	assert_int_equal(inb(f, COM1 + UART_MSR), 0x11); /* CTS | DCTS */
	assert_int_equal(irq_level(f), 0);
	assert_int_equal(inb(f, COM1 + UART_MSR), 0x10);
	outb(f, COM1 + UART_MCR, 0x14); /* OUT1 -> RI, CTS drops */
	outb(f, COM1 + UART_MCR, 0x10); /* RI trailing edge */
	assert_int_equal(inb(f, COM1 + UART_MSR), 0x05); /* DCTS | TERI */
}

static void test_uart_odd_accesses(void **state)
{
	struct fixture *f = *state;
	uint8_t got[64];

	uart_up(f);
	poke_everywhere(f, COM1, 8, false);
	/* A 2-byte write at 0 is THR then IER. */
	out_n(f, COM1, 'Q' | 0x02 << 8, 2);
	assert_int_equal(inb(f, COM1 + UART_IER), 0x02);
	assert_int_equal(irq_level(f), 1);
	/* A 4-byte read at 4 is MCR, LSR, MSR, SCR. */
	assert_int_equal(in_n(f, COM1 + 4, 4) & 0xffff00, 0xb06000);
	poke_everywhere(f, COM1, 8, true);
	/* Straddling the end is not ours. */
	{
		uint8_t d[4] = {0};

		assert_false(ioreg_dispatch(&f->io, IO_SPACE_PIO, COM1 + 6, d,
					    4, false, 0));
	}
	assert_true(drain_out(f, got, sizeof(got)) >= 1);
	assert_int_equal(got[0], 'Q');
}

struct pipe_reader {
	int fd;
	size_t want;
	uint8_t *buf;
	size_t got;
};

static void *reader_thread(void *arg)
{
	struct pipe_reader *r = arg;

	while (r->got < r->want) {
		struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, 5000) != 1)
			break;
		n = read(r->fd, r->buf + r->got, r->want - r->got);
		if (n <= 0)
			break;
		r->got += (size_t)n;
	}
	return NULL;
}

/* A non-blocking, small output pipe: EAGAIN must not lose bytes. */
static void test_uart_output_nonblocking_pipe(void **state)
{
	struct fixture *f = *state;
	enum { N = 50000 };
	uint8_t *got = malloc(N);
	struct pipe_reader r = {.want = N, .buf = got};
	pthread_t t;

	assert_non_null(got);
	uart_up(f);
	fcntl(f->out[1], F_SETPIPE_SZ, 4096);
	assert_int_equal(fcntl(f->out[1], F_SETFL, O_NONBLOCK), 0);
	r.fd = f->out[0];
	assert_int_equal(pthread_create(&t, NULL, reader_thread, &r), 0);
	for (int i = 0; i < N; i++)
		outb(f, COM1 + UART_THR, (uint8_t)(i * 7 + i / 256));
	pthread_join(t, NULL);
	assert_int_equal(r.got, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(got[i], (uint8_t)(i * 7 + i / 256));
	assert_int_equal(f->uart.tx_bytes, N);
	free(got);
}

static void test_uart_output_broken_pipe(void **state)
{
	struct fixture *f = *state;

	uart_up(f);
	close(f->out[0]);
	f->out[0] = -1;
	outb(f, COM1 + UART_THR, 'a'); /* EPIPE: dropped, logged once */
	outb(f, COM1 + UART_THR, 'b');
	assert_int_equal(f->uart.tx_bytes, 2);
	assert_int_equal(inb(f, COM1 + UART_LSR), 0x60);
}

/* Wait (bounded) for the UART's line to reach @level. */
static bool wait_irq_level(struct fixture *f, int level)
{
	struct timespec until;
	bool ok = true;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&f->irq.lock);
	while (f->irq.current != level && ok)
		ok = pthread_cond_timedwait(&f->irq.cond, &f->irq.lock,
					    &until) == 0;
	pthread_mutex_unlock(&f->irq.lock);
	return ok;
}

static void test_uart_input_thread(void **state)
{
	struct fixture *f = *state;
	int in[2];
	char got[16];
	size_t n = 0;

	uart_up(f);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	outb(f, COM1 + UART_IER, 0x01);
	assert_int_equal(uart8250_start_input(&f->uart, in[0]), 0);
	assert_int_equal(uart8250_start_input(&f->uart, in[0]), -EBUSY);
	assert_int_equal(write(in[1], "ping", 4), 4);
	/* Drain as data arrives: the thread may deliver it in pieces. */
	while (n < 4) {
		assert_true(wait_irq_level(f, 1));
		while ((inb(f, COM1 + UART_LSR) & 1) && n < sizeof(got))
			got[n++] = (char)inb(f, COM1 + UART_THR);
	}
	assert_int_equal(n, 4);
	assert_memory_equal(got, "ping", 4);
	/* Destroy stops and joins the thread while it waits in poll. */
	uart8250_destroy(&f->uart);
	f->uart_up = false;
	close(in[0]);
	close(in[1]);
}

static void test_uart_input_thread_eof_and_full_fifo(void **state)
{
	struct fixture *f = *state;
	enum { N = UART_RX_FIFO * 3 };
	uint8_t data[N];
	int in[2];
	size_t n = 0;

	uart_up(f);
	for (int i = 0; i < N; i++)
		data[i] = (uint8_t)(i ^ 0x5a);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(write(in[1], data, N), N);
	close(in[1]); /* EOF after the data */
	outb(f, COM1 + UART_IER, 0x01);
	assert_int_equal(uart8250_start_input(&f->uart, in[0]), 0);
	/* More than the FIFO holds: the thread waits for the guest. */
	while (n < N) {
		assert_true(wait_irq_level(f, 1));
		while (inb(f, COM1 + UART_LSR) & 1) {
			assert_true(n < N);
			assert_int_equal(inb(f, COM1 + UART_THR), data[n]);
			n++;
		}
	}
	uart8250_destroy(&f->uart);
	f->uart_up = false;
	close(in[0]);
}

static void test_uart_bad_args(void **state)
{
	struct fixture *f = *state;
	struct uart8250 other;

	uart_up(f);
	assert_int_equal(uart8250_start_input(&f->uart, -1), -EINVAL);
	/* The ports are taken. */
	assert_int_equal(
		uart8250_init(&other, &f->io, &f->sink, COM1 + 4, 3, -1),
		-EEXIST);
	/* No output fd: output is counted and dropped. */
	assert_int_equal(uart8250_init(&other, &f->io, NULL, 0x2f8, 3, -1), 0);
	assert_true(ioreg_dispatch(&f->io, IO_SPACE_PIO, 0x2f8 + 1,
				   (uint8_t[]){0x0f}, 1, true, 0));
	assert_true(ioreg_dispatch(&f->io, IO_SPACE_PIO, 0x2f8,
				   (uint8_t[]){'z'}, 1, true, 0));
	assert_int_equal(other.tx_bytes, 1);
	uart8250_destroy(&other);
}

/* --- CMOS RTC --- */

#define CMOS_INDEX PORT_CMOS
#define CMOS_DATA (PORT_CMOS + 1)

static void rtc_up(struct fixture *f, uint64_t below, uint64_t above,
		   unsigned int ncpus)
{
	assert_int_equal(cmos_rtc_init(&f->rtc, &f->io, below, above, ncpus),
			 0);
	f->rtc_up = true;
}

static uint8_t cmos_read(struct fixture *f, uint8_t index)
{
	outb(f, CMOS_INDEX, index);
	return inb(f, CMOS_DATA);
}

static void cmos_write(struct fixture *f, uint8_t index, uint8_t v)
{
	outb(f, CMOS_INDEX, index);
	outb(f, CMOS_DATA, v);
}

static unsigned int from_bcd(uint8_t v)
{
	return (v >> 4) * 10u + (v & 0x0f);
}

/* Read the clock (retrying over a seconds rollover) as seconds. */
static time_t cmos_read_time(struct fixture *f, bool bcd, struct tm *out)
{
	struct tm tm;
	uint8_t sec;

	do {
		memset(&tm, 0, sizeof(tm));
		sec = cmos_read(f, 0x00);
		tm.tm_min = (int)cmos_read(f, 0x02);
		tm.tm_hour = (int)cmos_read(f, 0x04);
		tm.tm_mday = (int)cmos_read(f, 0x07);
		tm.tm_mon = (int)cmos_read(f, 0x08);
		tm.tm_year = (int)cmos_read(f, 0x09);
		tm.tm_wday = (int)cmos_read(f, 0x06);
		tm.tm_yday = (int)cmos_read(f, 0x32); /* century, for now */
	} while (sec != cmos_read(f, 0x00));
	tm.tm_sec = sec;
	if (bcd) {
		tm.tm_sec = (int)from_bcd((uint8_t)tm.tm_sec);
		tm.tm_min = (int)from_bcd((uint8_t)tm.tm_min);
		tm.tm_hour = (int)from_bcd((uint8_t)tm.tm_hour);
		tm.tm_mday = (int)from_bcd((uint8_t)tm.tm_mday);
		tm.tm_mon = (int)from_bcd((uint8_t)tm.tm_mon);
		tm.tm_year = (int)from_bcd((uint8_t)tm.tm_year);
		tm.tm_wday = (int)from_bcd((uint8_t)tm.tm_wday);
		tm.tm_yday = (int)from_bcd((uint8_t)tm.tm_yday);
	}
	tm.tm_year += tm.tm_yday * 100 - 1900;
	tm.tm_mon -= 1;
	tm.tm_wday -= 1;
	if (out)
		*out = tm;
	return timegm(&tm);
}

static void test_rtc_bcd_time_matches_host(void **state)
{
	struct fixture *f = *state;
	struct tm tm, host;
	time_t t, now;

	rtc_up(f, 512ULL << 20, 0, 1);
	assert_int_equal(cmos_read(f, 0x0b), 0x02);
	t = cmos_read_time(f, true, &tm);
	now = time(NULL);
	assert_true(t >= now - 2 && t <= now + 2);
	gmtime_r(&t, &host);
	assert_int_equal(tm.tm_wday, host.tm_wday); /* day of week 1-7 */
	/* Every clock register is valid BCD. */
	for (int r = 0; r <= 9; r++)
		if (r != 1 && r != 3 && r != 5)
			assert_true((cmos_read(f, (uint8_t)r) & 0x0f) <= 9);
}

static void test_rtc_binary_mode(void **state)
{
	struct fixture *f = *state;
	time_t t, now;

	rtc_up(f, 512ULL << 20, 0, 1);
	cmos_write(f, 0x0b, 0x06); /* binary, 24h */
	assert_int_equal(cmos_read(f, 0x0b), 0x06);
	t = cmos_read_time(f, false, NULL);
	now = time(NULL);
	assert_true(t >= now - 2 && t <= now + 2);
	assert_int_equal(cmos_read(f, 0x32),
			 (unsigned int)(1900 + gmtime(&now)->tm_year) / 100);
}

static void test_rtc_12_hour_mode(void **state)
{
	struct fixture *f = *state;
	time_t now;
	struct tm host;
	uint8_t h;
	int want;

	rtc_up(f, 512ULL << 20, 0, 1);
	for (int binary = 0; binary < 2; binary++) {
		cmos_write(f, 0x0b, binary ? 0x04 : 0x00);
		do {
			now = time(NULL);
			h = cmos_read(f, 0x04);
		} while (now != time(NULL));
		gmtime_r(&now, &host);
		want = host.tm_hour % 12 ? host.tm_hour % 12 : 12;
		assert_int_equal(!!(h & 0x80), host.tm_hour >= 12);
		h &= 0x7f;
		assert_int_equal(binary ? h : from_bcd(h), want);
	}
}

static void test_rtc_set_time(void **state)
{
	struct fixture *f = *state;
	struct tm tm;
	time_t t, want;

	rtc_up(f, 512ULL << 20, 0, 1);
	/* The way Linux does it: SET, write the fields, clear SET. */
	cmos_write(f, 0x0b, 0x82);
	cmos_write(f, 0x09, 0x99);
	cmos_write(f, 0x08, 0x12);
	cmos_write(f, 0x07, 0x31);
	cmos_write(f, 0x04, 0x23);
	cmos_write(f, 0x02, 0x59);
	cmos_write(f, 0x00, 0x50);
	cmos_write(f, 0x32, 0x19);
	/* While SET is on, reads give what was written. */
	assert_int_equal(cmos_read(f, 0x00), 0x50);
	cmos_write(f, 0x0b, 0x02);
	tm = (struct tm){.tm_year = 99,
			 .tm_mon = 11,
			 .tm_mday = 31,
			 .tm_hour = 23,
			 .tm_min = 59,
			 .tm_sec = 50};
	want = timegm(&tm);
	t = cmos_read_time(f, true, &tm);
	assert_true(t >= want && t <= want + 2);
	assert_int_equal(tm.tm_wday, 5); /* a Friday */
	assert_true(f->rtc.offset_sec < -600000000LL);

	/* Immediate writes (SET clear) move one field. */
	cmos_write(f, 0x0b, 0x06); /* binary */
	cmos_write(f, 0x09, 42);
	cmos_write(f, 0x32, 20);
	t = cmos_read_time(f, false, &tm);
	assert_int_equal(tm.tm_year, 142);
	assert_int_equal(tm.tm_mon, 11);
	assert_int_equal(tm.tm_mday, 31);

	/* 12-hour writes: 12 AM is midnight, 12 PM noon. */
	cmos_write(f, 0x0b, 0x84); /* SET, binary, 12h */
	cmos_write(f, 0x04, 0x80 | 12);
	cmos_write(f, 0x0b, 0x06);
	assert_int_equal(cmos_read(f, 0x04), 12);
	cmos_write(f, 0x0b, 0x84);
	cmos_write(f, 0x04, 12);
	cmos_write(f, 0x0b, 0x06);
	assert_int_equal(cmos_read(f, 0x04), 0);
}

static void test_rtc_garbage_time_is_safe(void **state)
{
	struct fixture *f = *state;

	rtc_up(f, 512ULL << 20, 0, 1);
	cmos_write(f, 0x0b, 0x82);
	for (uint8_t r = 0; r <= 9; r++)
		cmos_write(f, r, 0xff);
	cmos_write(f, 0x32, 0xff);
	cmos_write(f, 0x0b, 0x02);
	for (uint8_t r = 0; r <= 9; r++)
		cmos_read(f, r);
	cmos_write(f, 0x0b, 0x06);
	for (int v = 0; v < 256; v += 17)
		for (uint8_t r = 0; r <= 9; r++)
			cmos_write(f, r, (uint8_t)v);
	cmos_read_time(f, false, NULL);
}

static void test_rtc_status_registers(void **state)
{
	struct fixture *f = *state;

	rtc_up(f, 512ULL << 20, 0, 1);
	assert_int_equal(cmos_read(f, 0x0a), 0x26);
	cmos_write(f, 0x0a, 0xa6); /* UIP is read-only */
	assert_int_equal(cmos_read(f, 0x0a), 0x26);
	assert_int_equal(cmos_read(f, 0x0c), 0x00);
	assert_int_equal(cmos_read(f, 0x0d), 0x80);
	cmos_write(f, 0x0d, 0x00);
	assert_int_equal(cmos_read(f, 0x0d), 0x80);
	f->rtc.nvram[0x0c] = 0x90; /* as if an interrupt had fired */
	assert_int_equal(cmos_read(f, 0x0c), 0x90);
	assert_int_equal(cmos_read(f, 0x0c), 0x00); /* read clears */
	/* The index port reads as nothing. */
	assert_int_equal(inb(f, CMOS_INDEX), 0xff);
}

static void test_rtc_nvram_and_nmi_bit(void **state)
{
	struct fixture *f = *state;

	rtc_up(f, 512ULL << 20, 0, 1);
	for (int i = 0x40; i < 0x80; i++)
		cmos_write(f, (uint8_t)i, (uint8_t)(i * 3));
	for (int i = 0x40; i < 0x80; i++)
		assert_int_equal(cmos_read(f, (uint8_t)i), (uint8_t)(i * 3));
	cmos_write(f, 0x0e, 0x5a);
	assert_int_equal(cmos_read(f, 0x0e), 0x5a);
	cmos_write(f, 0x01, 0x33); /* alarm: plain storage */
	assert_int_equal(cmos_read(f, 0x01), 0x33);
	/* Bit 7 of the index disables NMI and does not select. */
	outb(f, CMOS_INDEX, 0x80 | 0x41);
	assert_true(f->rtc.nmi_disabled);
	assert_int_equal(inb(f, CMOS_DATA), (uint8_t)(0x41 * 3));
	outb(f, CMOS_DATA, 0x77);
	outb(f, CMOS_INDEX, 0x41);
	assert_false(f->rtc.nmi_disabled);
	assert_int_equal(inb(f, CMOS_DATA), 0x77);
}

static void test_rtc_memory_and_cpus(void **state)
{
	struct fixture *f = *state;

	rtc_up(f, 512ULL << 20, 1ULL << 30, 4);
	assert_int_equal(cmos_read(f, 0x5f), 3);
	assert_int_equal(cmos_read(f, 0x15) | cmos_read(f, 0x16) << 8, 640);
	assert_int_equal(cmos_read(f, 0x17) | cmos_read(f, 0x18) << 8, 0xffff);
	assert_int_equal(cmos_read(f, 0x30) | cmos_read(f, 0x31) << 8, 0xffff);
	assert_int_equal(cmos_read(f, 0x34) | cmos_read(f, 0x35) << 8,
			 (512 - 16) * 16);
	assert_int_equal(cmos_read(f, 0x5b) | cmos_read(f, 0x5c) << 8 |
				 cmos_read(f, 0x5d) << 16,
			 16384);
	cmos_rtc_destroy(&f->rtc);
	assert_int_equal(ioreg_unregister(&f->io, IO_SPACE_PIO, PORT_CMOS), 0);

	rtc_up(f, 8ULL << 20, 0, 1);
	assert_int_equal(cmos_read(f, 0x5f), 0);
	assert_int_equal(cmos_read(f, 0x17) | cmos_read(f, 0x18) << 8, 7168);
	assert_int_equal(cmos_read(f, 0x34) | cmos_read(f, 0x35) << 8, 0);
	assert_int_equal(cmos_read(f, 0x5b), 0);
}

static void test_rtc_odd_accesses(void **state)
{
	struct fixture *f = *state;

	rtc_up(f, 512ULL << 20, 0, 1);
	poke_everywhere(f, PORT_CMOS, 2, true);
	/* A 2-byte write at 0x70 is index then data. */
	out_n(f, CMOS_INDEX, 0x50 | 0xab << 8, 2);
	assert_int_equal(cmos_read(f, 0x50), 0xab);
	/* A 2-byte read at 0x70: index port (0xff), then data. */
	outb(f, CMOS_INDEX, 0x50);
	assert_int_equal(in_n(f, CMOS_INDEX, 2), 0xabff);
}

/* --- i8042 --- */

static void kbd_up(struct fixture *f)
{
	assert_int_equal(i8042_init(&f->kbd, &f->io, &f->lc), 0);
	f->kbd_up = true;
}

static uint8_t kbd_command_reply(struct fixture *f, uint8_t cmd)
{
	outb(f, PORT_I8042_CMD, cmd);
	assert_int_equal(inb(f, PORT_I8042_CMD) & 0x01, 0x01); /* OBF */
	return inb(f, PORT_I8042_DATA);
}

static void test_i8042_self_tests_and_ccb(void **state)
{
	struct fixture *f = *state;
	uint8_t ccb;

	kbd_up(f);
	assert_int_equal(inb(f, PORT_I8042_CMD) & 0x05, 0x04); /* SYS, !OBF */
	assert_int_equal(kbd_command_reply(f, 0xaa), 0x55);
	assert_int_equal(inb(f, PORT_I8042_CMD) & 0x01, 0);
	assert_int_equal(kbd_command_reply(f, 0xab), 0x00);
	ccb = kbd_command_reply(f, 0x20);
	outb(f, PORT_I8042_CMD, 0x60);
	outb(f, PORT_I8042_DATA, 0x65);
	assert_int_equal(kbd_command_reply(f, 0x20), 0x65);
	outb(f, PORT_I8042_CMD, 0xae);
	assert_int_equal(kbd_command_reply(f, 0x20), 0x65 & ~0x10);
	outb(f, PORT_I8042_CMD, 0xad);
	assert_int_equal(kbd_command_reply(f, 0x20), 0x75);
	(void)ccb;
	/* Unknown commands and keyboard bytes are ignored. */
	outb(f, PORT_I8042_CMD, 0xd3);
	outb(f, PORT_I8042_DATA, 0x5a);
	outb(f, PORT_I8042_DATA, 0xf2);
	assert_int_equal(inb(f, PORT_I8042_CMD) & 0x01, 0);
	assert_int_equal(f->stop.n, 0);
}

static void test_i8042_reset(void **state)
{
	struct fixture *f = *state;

	kbd_up(f);
	outb(f, PORT_I8042_CMD, 0xfe);
	assert_int_equal(f->stop.n, 1);
	assert_int_equal(f->stop.reason, VM_STOP_RESET);
	/* 0xff pulses nothing. */
	outb(f, PORT_I8042_CMD, 0xff);
	assert_int_equal(f->stop.n, 1);
	/* Output port: reading it, writing with bit 0 set, then clear. */
	assert_int_equal(kbd_command_reply(f, 0xd0) & 0x01, 0x01);
	outb(f, PORT_I8042_CMD, 0xd1);
	outb(f, PORT_I8042_DATA, 0x03);
	assert_int_equal(f->stop.n, 1);
	outb(f, PORT_I8042_CMD, 0xd1);
	outb(f, PORT_I8042_DATA, 0x02);
	assert_int_equal(f->stop.n, 2);
	assert_int_equal(f->stop.reason, VM_STOP_RESET);
	assert_int_equal(kbd_command_reply(f, 0xd0) & 0x01, 0x01);
}

static void test_i8042_odd_accesses(void **state)
{
	struct fixture *f = *state;

	kbd_up(f);
	poke_everywhere(f, PORT_I8042_DATA, 1, true);
	poke_everywhere(f, PORT_I8042_CMD, 1, false);
	assert_int_equal(f->stop.n, 0);
}

/* --- debug exit --- */

static void test_debug_exit(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(
		debug_exit_init(&f->dbg, &f->io, &f->lc, PORT_DEBUG_EXIT), 0);
	outb(f, PORT_DEBUG_EXIT, 0x2a);
	assert_int_equal(f->stop.n, 1);
	assert_int_equal(f->stop.reason, VM_STOP_GUEST_EXIT);
	assert_int_equal(f->stop.code, 42);
	out_n(f, PORT_DEBUG_EXIT, 0x12345600, 4);
	assert_int_equal(f->stop.n, 2);
	assert_int_equal(f->stop.code, 0);
	out_n(f, PORT_DEBUG_EXIT, 0x01ff, 2);
	assert_int_equal(f->stop.code, 255);
	out_n(f, PORT_DEBUG_EXIT + 2, 0x07, 2);
	assert_int_equal(f->stop.code, 7);
	assert_int_equal(in_n(f, PORT_DEBUG_EXIT, 4), 0xffffffff);
	assert_int_equal(inb(f, PORT_DEBUG_EXIT + 3), 0xff);
	assert_int_equal(f->stop.n, 4);
	poke_everywhere(f, PORT_DEBUG_EXIT, 4, false);
	assert_int_equal(f->stop.n, 4);
}

/* --- ACPI PM --- */

#define SLP_EN 0x2000
#define SLP_TYP(t) ((uint32_t)(t) << 10)

static void pm_up(struct fixture *f)
{
	assert_int_equal(acpi_pm_init(&f->pm, &f->io, &f->lc), 0);
	f->pm_up = true;
	/* What pci_bus_init does with its cf9 handler. */
	assert_int_equal(
		ioreg_register(&f->io, IO_SPACE_PIO, PORT_RESET_CONTROL, 1,
			       acpi_pm_reset_control_io, &f->pm, "test-cf9"),
		0);
}

static void test_acpi_pm_s5_poweroff(void **state)
{
	struct fixture *f = *state;

	pm_up(f);
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_CNT, 2) & 1, 1); /* SCI_EN */
	/* ACPICA's order: SLP_TYP first, then SLP_TYP | SLP_EN. */
	out_n(f, PORT_ACPI_PM1A_CNT, SLP_TYP(5), 2);
	assert_int_equal(f->stop.n, 0);
	out_n(f, PORT_ACPI_PM1A_CNT, SLP_TYP(5) | SLP_EN, 2);
	assert_int_equal(f->stop.n, 1);
	assert_int_equal(f->stop.reason, VM_STOP_POWEROFF);
	/* A byte write of the high half does it too. */
	outb(f, PORT_ACPI_PM1A_CNT + 1, (SLP_TYP(5) | SLP_EN) >> 8);
	assert_int_equal(f->stop.n, 2);
	assert_int_equal(f->stop.reason, VM_STOP_POWEROFF);
	/* SLP_EN reads back as 0, SLP_TYP as written. */
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_CNT, 2), SLP_TYP(5) | 1);
}

static void test_acpi_pm_other_sleep_types(void **state)
{
	struct fixture *f = *state;

	pm_up(f);
	for (int t = 0; t < 8; t++) {
		if (t == 5)
			continue;
		out_n(f, PORT_ACPI_PM1A_CNT, SLP_TYP(t) | SLP_EN, 2);
	}
	assert_int_equal(f->stop.n, 0);
	/* The guest "wakes" at once: WAK_STS, cleared by writing 1. */
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT, 2), 0x8000);
	out_n(f, PORT_ACPI_PM1A_EVT, 0x0001, 2);
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT, 2), 0x8000);
	out_n(f, PORT_ACPI_PM1A_EVT, 0x8000, 2);
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT, 2), 0);
}

static void test_acpi_pm_event_block(void **state)
{
	struct fixture *f = *state;

	pm_up(f);
	out_n(f, PORT_ACPI_PM1A_EVT + 2, 0x0120, 2); /* PM1_EN */
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT + 2, 2), 0x0120);
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT, 4), 0x01200000);
	outb(f, PORT_ACPI_PM1A_EVT + 3, 0x00);
	assert_int_equal(in_n(f, PORT_ACPI_PM1A_EVT + 2, 2), 0x0020);
	f->pm.pm1_sts = 0x8101;
	out_n(f, PORT_ACPI_PM1A_EVT, 0x0100, 4); /* clears bit 8 only */
	assert_int_equal(f->pm.pm1_sts, 0x8001);
	assert_int_equal(f->pm.pm1_en, 0x0000);
}

static void test_acpi_pm_reset_control(void **state)
{
	struct fixture *f = *state;

	pm_up(f);
	outb(f, PORT_RESET_CONTROL, 0x02); /* SYS_RST alone: no reset */
	assert_int_equal(f->stop.n, 0);
	assert_int_equal(inb(f, PORT_RESET_CONTROL), 0x02);
	outb(f, PORT_RESET_CONTROL, 0x06);
	assert_int_equal(f->stop.n, 1);
	assert_int_equal(f->stop.reason, VM_STOP_RESET);
	/* RST_CPU does not stick: the next reboot works too. */
	assert_int_equal(inb(f, PORT_RESET_CONTROL) & 0x04, 0);
	outb(f, PORT_RESET_CONTROL, 0x06);
	assert_int_equal(f->stop.n, 2);
	outb(f, PORT_RESET_CONTROL, 0x04);
	assert_int_equal(f->stop.n, 3);
}

/* acpi_pm leaves 0xCF9 (and the rest of 0xCF8-0xCFF) to the PCI bus. */
static void test_acpi_pm_does_not_claim_cf9(void **state)
{
	struct fixture *f = *state;
	uint8_t d[4] = {0x06, 0, 0, 0};

	assert_int_equal(acpi_pm_init(&f->pm, &f->io, &f->lc), 0);
	f->pm_up = true;
	for (uint16_t port = 0xcf8; port < 0xd00; port++)
		assert_false(ioreg_dispatch(&f->io, IO_SPACE_PIO, port, d, 1,
					    true, 0));
	assert_int_equal(f->stop.n, 0);
	/* So the bus can take the whole range. */
	assert_int_equal(ioreg_register(&f->io, IO_SPACE_PIO, 0xcf8, 8,
					acpi_pm_reset_control_io, &f->pm,
					"test-pci"),
			 0);
}

/* The handler itself: only a byte at offset 0 is the register. */
static void test_acpi_pm_reset_handler_direct(void **state)
{
	struct fixture *f = *state;
	uint8_t d[8];

	assert_int_equal(acpi_pm_init(&f->pm, &f->io, &f->lc), 0);
	f->pm_up = true;
	for (uint32_t len = 1; len <= 8; len *= 2) {
		for (uint64_t off = 0; off < 8; off++) {
			if (off == 0 && len == 1)
				continue;
			memset(d, 0x0e, sizeof(d));
			acpi_pm_reset_control_io(&f->pm, off, d, len, true, 0);
			memset(d, 0, sizeof(d));
			acpi_pm_reset_control_io(&f->pm, off, d, len, false, 0);
			for (uint32_t i = 0; i < len; i++)
				assert_int_equal(d[i], 0xff);
		}
	}
	assert_int_equal(f->stop.n, 0);
	d[0] = 0x0a; /* FULL_RST | SYS_RST: kept, no reset */
	acpi_pm_reset_control_io(&f->pm, 0, d, 1, true, -1);
	d[0] = 0;
	acpi_pm_reset_control_io(&f->pm, 0, d, 1, false, -1);
	assert_int_equal(d[0], 0x0a);
	assert_int_equal(f->stop.n, 0);
	d[0] = 0x0e;
	acpi_pm_reset_control_io(&f->pm, 0, d, 1, true, 0);
	assert_int_equal(f->stop.n, 1);
	assert_int_equal(f->stop.reason, VM_STOP_RESET);
}

static void test_acpi_pm_odd_accesses(void **state)
{
	struct fixture *f = *state;

	pm_up(f);
	poke_everywhere(f, PORT_ACPI_PM1A_EVT, 4, true);
	poke_everywhere(f, PORT_ACPI_PM1A_CNT, 2, true);
	poke_everywhere(f, PORT_RESET_CONTROL, 1, true);
	assert_int_equal(f->stop.n, 0); /* zero writes ask for nothing */
}

/* The FADT's ports and the DSDT's \_S5_ drive this device to power off. */
static void test_acpi_tables_match_pm_device(void **state)
{
	struct fixture *f = *state;
	struct acpi_config cfg = {
		.ncpus = 1,
		.base = LAYOUT_ACPI_BASE,
		.ioapic_addr = LAYOUT_IOAPIC_ADDR,
		.lapic_addr = LAYOUT_LAPIC_ADDR,
		.pm1a_evt_port = PORT_ACPI_PM1A_EVT,
		.pm1a_cnt_port = PORT_ACPI_PM1A_CNT,
		.reset_port = PORT_RESET_CONTROL,
		.reset_value = 0x06,
		.sci_irq = ACPI_SCI_IRQ,
	};
	static uint8_t buf[4096];
	struct acpi_layout l;
	const uint8_t *fadt, *s5;
	uint16_t cnt_port, reset_port;
	uint8_t slp_typ;

	pm_up(f);
	assert_true(acpi_build(&cfg, buf, sizeof(buf), &l) > 0);
	fadt = buf + l.fadt;
	cnt_port = (uint16_t)(fadt[64] | fadt[65] << 8);
	reset_port = (uint16_t)(fadt[116 + 4] | fadt[116 + 5] << 8);
	s5 = memmem(buf + l.dsdt, 64, "_S5_", 4);
	assert_non_null(s5);
	slp_typ = s5[4 + 4]; /* PackageOp, PkgLength, Count, BytePrefix */
	out_n(f, cnt_port, SLP_TYP(slp_typ) | SLP_EN, 2);
	assert_int_equal(f->stop.reason, VM_STOP_POWEROFF);
	outb(f, reset_port, fadt[128]);
	assert_int_equal(f->stop.reason, VM_STOP_RESET);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_uart_output_byte_exact),
		T(test_uart_lsr_and_rx),
		T(test_uart_rx_fifo_limit_and_clear),
		T(test_uart_dlab),
		T(test_uart_thr_empty_interrupt),
		T(test_uart_rx_interrupt_and_priority),
		T(test_uart_loopback),
		T(test_uart_loopback_overrun),
		T(test_uart_modem_status_interrupt),
		T(test_uart_odd_accesses),
		T(test_uart_output_nonblocking_pipe),
		T(test_uart_output_broken_pipe),
		T(test_uart_input_thread),
		T(test_uart_input_thread_eof_and_full_fifo),
		T(test_uart_bad_args),
		T(test_rtc_bcd_time_matches_host),
		T(test_rtc_binary_mode),
		T(test_rtc_12_hour_mode),
		T(test_rtc_set_time),
		T(test_rtc_garbage_time_is_safe),
		T(test_rtc_status_registers),
		T(test_rtc_nvram_and_nmi_bit),
		T(test_rtc_memory_and_cpus),
		T(test_rtc_odd_accesses),
		T(test_i8042_self_tests_and_ccb),
		T(test_i8042_reset),
		T(test_i8042_odd_accesses),
		T(test_debug_exit),
		T(test_acpi_pm_s5_poweroff),
		T(test_acpi_pm_other_sleep_types),
		T(test_acpi_pm_event_block),
		T(test_acpi_pm_reset_control),
		T(test_acpi_pm_odd_accesses),
		T(test_acpi_pm_does_not_claim_cf9),
		T(test_acpi_pm_reset_handler_direct),
		T(test_acpi_tables_match_pm_device),
	};
#undef T

	/* A closed output pipe must be an error return, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
