/*
 * machine/uart8250.c - a 16550A UART: the guest's console. Owns the eight
 * registers at its base port, the receive FIFO, the interrupt line (level
 * tracked so the sink only hears changes), the synchronous transmit path
 * to out_fd and the thread that feeds host input into the FIFO.
 *
 * Transmit is instant: a THR write goes out with write(2) before the access
 * returns, so LSR always shows THRE|TEMT.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "machine/devices.h"
#include "util/log.h"

#define UART_NR_PORTS 8

/* Register offsets. */
#define UART_RBR 0 /* read, DLAB=0 */
#define UART_THR 0 /* write, DLAB=0 */
#define UART_DLL 0 /* DLAB=1 */
#define UART_IER 1 /* DLAB=0 */
#define UART_DLM 1 /* DLAB=1 */
#define UART_IIR 2 /* read */
#define UART_FCR 2 /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI 0x01  /* receive data available */
#define IER_THRI 0x02 /* transmit holding register empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI 0x08  /* modem status */
#define IER_MASK 0x0f

#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_KEEP 0xc9 /* enable, DMA mode, trigger level */

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERRORS 0x1e /* overrun, parity, framing, break */

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_DELTAS 0x0f
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80
/* With no loopback the far end is always there and ready. */
#define MSR_CONNECTED (MSR_CTS | MSR_DSR | MSR_DCD)

/* How long the input thread waits for the guest to drain a full FIFO. */
#define UART_FIFO_FULL_WAIT_MS 10

/* Highest-priority pending interrupt, as IIR identifies it. */
static uint8_t uart_pending_iid(const struct uart8250 *u)
{
	if ((u->ier & IER_RLSI) && (u->lsr & LSR_ERRORS))
		return IIR_RLSI;
	if ((u->ier & IER_RDI) && u->rx_count)
		return IIR_RDI;
	if ((u->ier & IER_THRI) && u->thr_irq_pending)
		return IIR_THRI;
	if ((u->ier & IER_MSI) && (u->msr & MSR_DELTAS))
		return IIR_MSI;
	return IIR_NO_INT;
}

/* Recompute IIR and tell the sink when the line level changes. */
static void uart_update_irq(struct uart8250 *u)
{
	int level;

	u->iir = uart_pending_iid(u);
	level = u->iir != IIR_NO_INT;
	if (level == u->irq_level || !u->irq)
		return;
	if (irq_set_line(u->irq, u->gsi, level)) {
		pr_debug("uart: setting gsi %u to %d failed", u->gsi, level);
		return; /* level unchanged: retried on the next update */
	}
	u->irq_level = level;
}

void uart8250_save(struct uart8250 *u, struct uart8250_regs *r)
{
	pthread_mutex_lock(&u->lock);
	*r = (struct uart8250_regs){
		.ier = u->ier,
		.lcr = u->lcr,
		.mcr = u->mcr,
		.lsr = u->lsr,
		.msr = u->msr,
		.scr = u->scr,
		.dll = u->dll,
		.dlm = u->dlm,
		.fcr = u->fcr,
		.thr_irq_pending = u->thr_irq_pending,
	};
	pthread_mutex_unlock(&u->lock);
}

void uart8250_load(struct uart8250 *u, const struct uart8250_regs *r)
{
	pthread_mutex_lock(&u->lock);
	u->ier = r->ier & 0x0f;
	u->lcr = r->lcr;
	u->mcr = r->mcr & 0x1f;
	u->lsr = r->lsr;
	u->msr = r->msr;
	u->scr = r->scr;
	u->dll = r->dll;
	u->dlm = r->dlm;
	u->fcr = r->fcr;
	u->thr_irq_pending = r->thr_irq_pending;
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

static void uart_clear_rx(struct uart8250 *u)
{
	u->rx_head = 0;
	u->rx_count = 0;
}

static bool uart_rx_push(struct uart8250 *u, uint8_t v)
{
	if (u->rx_count == UART_RX_FIFO)
		return false;
	u->rx[(u->rx_head + u->rx_count) % UART_RX_FIFO] = v;
	u->rx_count++;
	return true;
}

static uint8_t uart_rx_pop(struct uart8250 *u)
{
	uint8_t v;

	if (!u->rx_count)
		return 0;
	v = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % UART_RX_FIFO;
	u->rx_count--;
	return v;
}

/* Wait until @fd takes more output; false when it never will. */
static bool wait_writable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};

	for (;;) {
		int n = poll(&pfd, 1, -1);

		if (n > 0)
			return !(pfd.revents & POLLNVAL);
		if (n < 0 && errno != EINTR)
			return false;
	}
}

/* Write all of @buf; 0 or a negative errno. */
static int write_all(int fd, const uint8_t *buf, size_t n)
{
	while (n) {
		ssize_t w = write(fd, buf, n);

		if (w > 0) {
			buf += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    wait_writable(fd))
			continue;
		return w < 0 ? -errno : -EIO;
	}
	return 0;
}

/* Send one guest byte to the host, in order, before returning. */
static void uart_transmit(struct uart8250 *u, uint8_t v)
{
	int rc;

	u->tx_bytes++;
	if (u->out_fd < 0)
		return;
	rc = write_all(u->out_fd, &v, 1);
	if (rc) {
		pr_warn("uart: console output failed (%s); discarding it",
			strerror(-rc));
		u->out_fd = -1;
	}
}

static void uart_loop_back(struct uart8250 *u, uint8_t v)
{
	if (!uart_rx_push(u, v))
		u->lsr |= LSR_OE;
}

static void uart_write_thr(struct uart8250 *u, uint8_t v)
{
	/* Writing THR clears the THR-empty interrupt... */
	u->thr_irq_pending = false;
	uart_update_irq(u);
	if (u->mcr & MCR_LOOP)
		uart_loop_back(u, v);
	else
		uart_transmit(u, v);
	/* ...and the byte leaves at once, so THR is empty again. */
	u->thr_irq_pending = u->ier & IER_THRI;
	uart_update_irq(u);
}

static void uart_write_ier(struct uart8250 *u, uint8_t v)
{
	uint8_t changed = (u->ier ^ v) & IER_MASK;

	u->ier = v & IER_MASK;
	/*
	 * Enabling THRI with THR empty (always, here) raises the interrupt
	 * again even if reading IIR had cleared it; Linux's THRE test and
	 * other guests rely on that.
	 */
	if (changed & IER_THRI)
		u->thr_irq_pending = u->ier & IER_THRI;
	uart_update_irq(u);
}

static void uart_write_fcr(struct uart8250 *u, uint8_t v)
{
	/* Toggling FIFO enable resets the FIFOs, as on a real 16550A. */
	if (((u->fcr ^ v) & FCR_ENABLE) || (v & FCR_CLEAR_RX))
		uart_clear_rx(u);
	/* The transmit FIFO is always empty: FCR_CLEAR_TX has nothing to do. */
	u->fcr = v & FCR_KEEP;
	uart_update_irq(u);
}

/* The modem status inputs: the far end, or MCR's outputs in loopback. */
static uint8_t uart_modem_inputs(const struct uart8250 *u)
{
	uint8_t s = 0;

	if (!(u->mcr & MCR_LOOP))
		return MSR_CONNECTED;
	if (u->mcr & MCR_RTS)
		s |= MSR_CTS;
	if (u->mcr & MCR_DTR)
		s |= MSR_DSR;
	if (u->mcr & MCR_OUT1)
		s |= MSR_RI;
	if (u->mcr & MCR_OUT2)
		s |= MSR_DCD;
	return s;
}

/* Latch new modem inputs into MSR, setting the delta bits. */
static void uart_update_msr(struct uart8250 *u)
{
	uint8_t old = u->msr & ~MSR_DELTAS, now = uart_modem_inputs(u);
	uint8_t delta = u->msr & MSR_DELTAS, diff = old ^ now;

	if (diff & MSR_CTS)
		delta |= MSR_DCTS;
	if (diff & MSR_DSR)
		delta |= MSR_DDSR;
	if ((old & MSR_RI) && !(now & MSR_RI))
		delta |= MSR_TERI;
	if (diff & MSR_DCD)
		delta |= MSR_DDCD;
	u->msr = now | delta;
}

static void uart_write_mcr(struct uart8250 *u, uint8_t v)
{
	u->mcr = v & MCR_MASK;
	uart_update_msr(u);
	uart_update_irq(u);
}

static void uart_write_reg(struct uart8250 *u, unsigned int reg, uint8_t v)
{
	bool dlab = u->lcr & LCR_DLAB;

	switch (reg) {
	case UART_THR:
		if (dlab)
			u->dll = v;
		else
			uart_write_thr(u, v);
		break;
	case UART_IER:
		if (dlab)
			u->dlm = v;
		else
			uart_write_ier(u, v);
		break;
	case UART_FCR:
		uart_write_fcr(u, v);
		break;
	case UART_LCR:
		u->lcr = v;
		break;
	case UART_MCR:
		uart_write_mcr(u, v);
		break;
	case UART_SCR:
		u->scr = v;
		break;
	default: /* LSR and MSR are read-only */
		break;
	}
}

static uint8_t uart_read_rbr(struct uart8250 *u)
{
	uint8_t v = uart_rx_pop(u);

	uart_update_irq(u);
	return v;
}

static uint8_t uart_read_iir(struct uart8250 *u)
{
	uint8_t v = u->iir;

	if (u->fcr & FCR_ENABLE)
		v |= IIR_FIFO_ENABLED;
	/* Reading IIR while it names THR-empty clears that interrupt. */
	if (u->iir == IIR_THRI) {
		u->thr_irq_pending = false;
		uart_update_irq(u);
	}
	return v;
}

static uint8_t uart_read_lsr(struct uart8250 *u)
{
	uint8_t v = LSR_THRE | LSR_TEMT | (u->lsr & LSR_ERRORS);

	if (u->rx_count)
		v |= LSR_DR;
	u->lsr &= ~LSR_ERRORS; /* error bits clear on read */
	uart_update_irq(u);
	return v;
}

static uint8_t uart_read_msr(struct uart8250 *u)
{
	uint8_t v = u->msr;

	u->msr &= ~MSR_DELTAS;
	uart_update_irq(u);
	return v;
}

static uint8_t uart_read_reg(struct uart8250 *u, unsigned int reg)
{
	bool dlab = u->lcr & LCR_DLAB;

	switch (reg) {
	case UART_RBR:
		return dlab ? u->dll : uart_read_rbr(u);
	case UART_IER:
		return dlab ? u->dlm : u->ier;
	case UART_IIR:
		return uart_read_iir(u);
	case UART_LCR:
		return u->lcr;
	case UART_MCR:
		return u->mcr;
	case UART_LSR:
		return uart_read_lsr(u);
	case UART_MSR:
		return uart_read_msr(u);
	case UART_SCR:
		return u->scr;
	default:
		return 0xff;
	}
}

/* Wider accesses act as that many byte accesses to consecutive ports. */
static void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	struct uart8250 *u = opaque;

	(void)vcpu_id;
	pthread_mutex_lock(&u->lock);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t reg = offset + i;

		if (reg >= UART_NR_PORTS) {
			if (!is_write)
				data[i] = 0xff;
		} else if (is_write) {
			uart_write_reg(u, (unsigned int)reg, data[i]);
		} else {
			data[i] = uart_read_reg(u, (unsigned int)reg);
		}
	}
	pthread_mutex_unlock(&u->lock);
}

int uart8250_init(struct uart8250 *u, struct io_registry *io,
		  const struct irq_sink *irq, uint16_t base, uint32_t gsi,
		  int out_fd)
{
	int rc;

	memset(u, 0, sizeof(*u));
	u->irq = irq;
	u->gsi = gsi;
	u->out_fd = out_fd;
	u->in_fd = -1;
	u->stop_pipe[0] = u->stop_pipe[1] = -1;
	u->iir = IIR_NO_INT;
	u->msr = MSR_CONNECTED;
	if (pthread_mutex_init(&u->lock, NULL))
		return -ENOMEM;
	rc = ioreg_register(io, IO_SPACE_PIO, base, UART_NR_PORTS, uart_io, u,
			    "uart8250");
	if (rc)
		pthread_mutex_destroy(&u->lock);
	return rc;
}

size_t uart8250_receive(struct uart8250 *u, const uint8_t *buf, size_t n)
{
	size_t done = 0;

	pthread_mutex_lock(&u->lock);
	/* In loopback the serial input is cut off: keep host bytes waiting. */
	if (!(u->mcr & MCR_LOOP))
		while (done < n && uart_rx_push(u, buf[done]))
			done++;
	if (done)
		uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return done;
}

/* Wait for input or a stop request: 1 input ready, 0 stop, -1 failure. */
static int uart_wait_input(struct uart8250 *u)
{
	struct pollfd pfd[2] = {
		{.fd = u->in_fd, .events = POLLIN},
		{.fd = u->stop_pipe[0], .events = POLLIN},
	};

	for (;;) {
		int n = poll(pfd, 2, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (pfd[1].revents)
			return 0;
		if (pfd[0].revents & POLLNVAL)
			return -1;
		if (pfd[0].revents)
			return 1;
	}
}

/* Sleep a little while the FIFO is full; true if asked to stop. */
static bool uart_wait_stop(struct uart8250 *u, int timeout_ms)
{
	struct pollfd pfd = {.fd = u->stop_pipe[0], .events = POLLIN};

	return poll(&pfd, 1, timeout_ms) > 0;
}

static void *uart_input_thread(void *arg)
{
	struct uart8250 *u = arg;
	uint8_t buf[UART_RX_FIFO];
	size_t len = 0, off = 0;

	for (;;) {
		if (off == len) {
			ssize_t r;

			if (uart_wait_input(u) <= 0)
				break;
			r = read(u->in_fd, buf, sizeof(buf));
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r < 0)
				pr_warn("uart: input read failed: %s",
					strerror(errno));
			if (r <= 0)
				break; /* end of input or error */
			len = (size_t)r;
			off = 0;
		}
		off += uart8250_receive(u, buf + off, len - off);
		if (off < len && uart_wait_stop(u, UART_FIFO_FULL_WAIT_MS))
			break;
	}
	return NULL;
}

int uart8250_start_input(struct uart8250 *u, int in_fd)
{
	int rc;

	if (in_fd < 0)
		return -EINVAL;
	if (u->in_thread_started)
		return -EBUSY;
	if (pipe2(u->stop_pipe, O_CLOEXEC))
		return -errno;
	u->in_fd = in_fd;
	rc = pthread_create(&u->in_thread, NULL, uart_input_thread, u);
	if (rc) {
		close(u->stop_pipe[0]);
		close(u->stop_pipe[1]);
		u->stop_pipe[0] = u->stop_pipe[1] = -1;
		u->in_fd = -1;
		return -rc;
	}
	u->in_thread_started = true;
	return 0;
}

static void uart_stop_input(struct uart8250 *u)
{
	const uint8_t stop = 1;
	ssize_t w;

	if (!u->in_thread_started)
		return;
	do {
		w = write(u->stop_pipe[1], &stop, 1);
	} while (w < 0 && errno == EINTR);
	pthread_join(u->in_thread, NULL);
	u->in_thread_started = false;
	close(u->stop_pipe[0]);
	close(u->stop_pipe[1]);
	u->stop_pipe[0] = u->stop_pipe[1] = -1;
	u->in_fd = -1;
}

/* Call once the vCPUs are stopped: the io registry still points here. */
void uart8250_destroy(struct uart8250 *u)
{
	uart_stop_input(u);
	pthread_mutex_destroy(&u->lock);
}
