/*
 * machine/i8042.c - the i8042 keyboard controller at ports 0x60 (data) and
 * 0x64 (status/command): enough of it for guests to find the controller,
 * run its self-tests and reset the machine through its reset line. No
 * keyboard or mouse is attached and no interrupts are raised; bytes sent
 * to the keyboard are dropped, and the AUX (mouse) commands are unknown,
 * as on a controller without an AUX port.
 */
#include <errno.h>
#include <string.h>

#include "machine/devices.h"
#include "machine/layout.h"

/* Status register. */
#define STS_OBF 0x01	/* output buffer full: a byte waits at 0x60 */
#define STS_SYS 0x04	/* system flag: self-test passed */
#define STS_UNLOCK 0x10 /* keyboard not inhibited by the key lock */

/* Controller command byte. */
#define CCB_SYS 0x04
#define CCB_KBD_DISABLE 0x10
#define CCB_XLATE 0x40
#define CCB_DEFAULT (CCB_XLATE | CCB_SYS | 0x01) /* kbd IRQ, xlate */

/* Output port. */
#define OUT_PORT_RESET 0x01 /* active low: 0 holds the CPU in reset */
#define OUT_PORT_A20 0x02
#define OUT_PORT_DEFAULT (OUT_PORT_RESET | OUT_PORT_A20)

/* Commands. */
#define CMD_NONE 0x00
#define CMD_READ_CCB 0x20
#define CMD_WRITE_CCB 0x60
#define CMD_SELF_TEST 0xaa
#define CMD_KBD_TEST 0xab
#define CMD_KBD_DISABLE 0xad
#define CMD_KBD_ENABLE 0xae
#define CMD_READ_OUT_PORT 0xd0
#define CMD_WRITE_OUT_PORT 0xd1
#define CMD_PULSE_FIRST 0xf0 /* 0xf0-0xff pulse output lines 0-3 low */

#define SELF_TEST_OK 0x55
#define KBD_TEST_OK 0x00

static void i8042_reply(struct i8042 *k, uint8_t v)
{
	k->out_buf = v;
	k->out_full = true;
}

/*
 * Commands 0xf0-0xff pulse output port bits 0-3 low where the command's
 * low nibble has a 0; bit 0 is the reset line (0xfe is the usual form).
 * Returns true when the CPU is to be reset.
 */
static bool i8042_pulse(uint8_t cmd)
{
	return !(cmd & OUT_PORT_RESET);
}

/* Returns true when the write pulls the reset line low. */
static bool i8042_write_out_port(struct i8042 *k, uint8_t v)
{
	/* The line comes back high once the reset has been taken. */
	k->out_port = v | OUT_PORT_RESET;
	return !(v & OUT_PORT_RESET);
}

/* Returns true when the command resets the CPU. */
static bool i8042_command(struct i8042 *k, uint8_t cmd)
{
	k->cmd = CMD_NONE;
	switch (cmd) {
	case CMD_READ_CCB:
		i8042_reply(k, k->ccb);
		break;
	case CMD_WRITE_CCB:
	case CMD_WRITE_OUT_PORT:
		k->cmd = cmd; /* the data byte follows at port 0x60 */
		break;
	case CMD_SELF_TEST:
		i8042_reply(k, SELF_TEST_OK);
		break;
	case CMD_KBD_TEST:
		i8042_reply(k, KBD_TEST_OK);
		break;
	case CMD_KBD_DISABLE:
		k->ccb |= CCB_KBD_DISABLE;
		break;
	case CMD_KBD_ENABLE:
		k->ccb &= ~CCB_KBD_DISABLE;
		break;
	case CMD_READ_OUT_PORT:
		i8042_reply(k, k->out_port);
		break;
	default:
		if (cmd >= CMD_PULSE_FIRST)
			return i8042_pulse(cmd);
		break; /* anything else is ignored */
	}
	return false;
}

/* Returns true when the byte resets the CPU. */
static bool i8042_write_data(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->cmd;

	k->cmd = CMD_NONE;
	if (cmd == CMD_WRITE_CCB)
		k->ccb = v;
	else if (cmd == CMD_WRITE_OUT_PORT)
		return i8042_write_out_port(k, v);
	/* else: a byte for the keyboard, and there is none */
	return false;
}

static uint8_t i8042_read_data(struct i8042 *k)
{
	k->out_full = false;
	return k->out_buf;
}

static uint8_t i8042_status(const struct i8042 *k)
{
	uint8_t v = STS_SYS | STS_UNLOCK;

	if (k->out_full)
		v |= STS_OBF;
	return v;
}

/* Ask for the reset outside the device lock. */
static void i8042_reset_cpu(struct i8042 *k)
{
	vm_request_stop(k->lc, VM_STOP_RESET, 0);
}

/*
 * One access to port 0x60 (@cmd_port false) or 0x64 (true). Both ports
 * are one byte wide; the registry only passes offset 0.
 */
static void i8042_io(struct i8042 *k, bool cmd_port, uint64_t offset,
		     uint8_t *data, uint32_t len, bool is_write)
{
	bool reset = false;

	if (offset != 0 || len != 1) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&k->lock);
	if (is_write)
		reset = cmd_port ? i8042_command(k, data[0]) :
				   i8042_write_data(k, data[0]);
	else
		data[0] = cmd_port ? i8042_status(k) : i8042_read_data(k);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		i8042_reset_cpu(k);
}

static void i8042_data_io(void *opaque, uint64_t offset, uint8_t *data,
			  uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	i8042_io(opaque, false, offset, data, len, is_write);
}

static void i8042_cmd_io(void *opaque, uint64_t offset, uint8_t *data,
			 uint32_t len, bool is_write, int vcpu_id)
{
	(void)vcpu_id;
	i8042_io(opaque, true, offset, data, len, is_write);
}

int i8042_init(struct i8042 *k, struct io_registry *io,
	       const struct vm_lifecycle *lc)
{
	int rc;

	memset(k, 0, sizeof(*k));
	k->lc = lc;
	k->ccb = CCB_DEFAULT;
	k->out_port = OUT_PORT_DEFAULT;
	if (pthread_mutex_init(&k->lock, NULL))
		return -ENOMEM;
	rc = ioreg_register(io, IO_SPACE_PIO, PORT_I8042_DATA, 1, i8042_data_io,
			    k, "i8042-data");
	if (rc)
		goto err_mutex;
	rc = ioreg_register(io, IO_SPACE_PIO, PORT_I8042_CMD, 1, i8042_cmd_io,
			    k, "i8042-cmd");
	if (rc)
		goto err_data;
	return 0;
err_data:
	ioreg_unregister(io, IO_SPACE_PIO, PORT_I8042_DATA);
err_mutex:
	pthread_mutex_destroy(&k->lock);
	return rc;
}

/* Call once the vCPUs are stopped: the io registry still points here. */
void i8042_destroy(struct i8042 *k)
{
	pthread_mutex_destroy(&k->lock);
}
