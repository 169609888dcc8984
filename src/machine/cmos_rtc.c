/*
 * machine/cmos_rtc.c - the MC146818-style CMOS RTC and its NVRAM at ports
 * 0x70 (index, bit 7 = NMI disable) and 0x71 (data). Owns the 128 bytes of
 * CMOS and the guest's clock, which is the host's CLOCK_REALTIME (UTC) plus
 * offset_sec; the guest sets its clock by writing the time registers.
 * No interrupts: UIP always reads 0, register C always reads 0.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "machine/devices.h"
#include "machine/layout.h"

#define CMOS_NR_PORTS 2
#define CMOS_PORT_INDEX 0
#define CMOS_PORT_DATA 1
#define CMOS_INDEX_MASK 0x7f
#define CMOS_NMI_DISABLE 0x80

/* Clock registers. */
#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY_OF_WEEK 0x06
#define RTC_DAY_OF_MONTH 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_CENTURY 0x32

#define REG_A_UIP 0x80
#define REG_A_DEFAULT 0x26 /* 32.768 kHz time base, 1024 Hz rate */
#define REG_B_SET 0x80
#define REG_B_DM_BINARY 0x04
#define REG_B_24H 0x02
#define REG_B_DEFAULT REG_B_24H /* BCD, 24-hour */
#define REG_D_VRT 0x80		/* RAM and time valid */
#define HOUR_PM 0x80		/* 12-hour mode: PM flag in the hour */

/* Memory size and CPU count fields, as PC firmware reads them. */
#define CMOS_BASE_MEM_LO 0x15
#define CMOS_BASE_MEM_HI 0x16
#define CMOS_EXT_MEM_LO 0x17
#define CMOS_EXT_MEM_HI 0x18
#define CMOS_EXT_MEM2_LO 0x30
#define CMOS_EXT_MEM2_HI 0x31
#define CMOS_MEM_16M_LO 0x34
#define CMOS_MEM_16M_HI 0x35
#define CMOS_MEM_4G_0 0x5b
#define CMOS_MEM_4G_1 0x5c
#define CMOS_MEM_4G_2 0x5d
#define CMOS_NCPUS_MINUS_1 0x5f

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define BASE_MEM_KIB 640
#define CHUNK_64K (64 * KIB)

/* --- encoding of clock values per register B --- */

static bool rtc_binary(const struct cmos_rtc *c)
{
	return c->nvram[RTC_REG_B] & REG_B_DM_BINARY;
}

static uint8_t rtc_encode(const struct cmos_rtc *c, unsigned int v)
{
	v %= 100;
	return rtc_binary(c) ? v : (uint8_t)((v / 10) << 4 | v % 10);
}

/* Guests may write anything; a bad BCD digit just decodes to a big value. */
static unsigned int rtc_decode(const struct cmos_rtc *c, uint8_t v)
{
	return rtc_binary(c) ? v : (v >> 4) * 10u + (v & 0x0f);
}

static uint8_t rtc_encode_hour(const struct cmos_rtc *c, unsigned int h)
{
	unsigned int h12 = h % 12 ? h % 12 : 12;

	if (c->nvram[RTC_REG_B] & REG_B_24H)
		return rtc_encode(c, h);
	return rtc_encode(c, h12) | (h >= 12 ? HOUR_PM : 0);
}

static unsigned int rtc_decode_hour(const struct cmos_rtc *c, uint8_t v)
{
	unsigned int h;

	if (c->nvram[RTC_REG_B] & REG_B_24H)
		return rtc_decode(c, v);
	h = rtc_decode(c, v & ~HOUR_PM) % 12; /* 12 AM is hour 0 */
	return v & HOUR_PM ? h + 12 : h;
}

/* --- the guest's clock --- */

static time_t host_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

static void rtc_guest_tm(const struct cmos_rtc *c, struct tm *tm)
{
	time_t t = (time_t)(host_now() + c->offset_sec);

	if (!gmtime_r(&t, tm))
		memset(tm, 0, sizeof(*tm));
}

static bool is_clock_reg(uint8_t index)
{
	switch (index) {
	case RTC_SECONDS:
	case RTC_MINUTES:
	case RTC_HOURS:
	case RTC_DAY_OF_WEEK:
	case RTC_DAY_OF_MONTH:
	case RTC_MONTH:
	case RTC_YEAR:
	case RTC_CENTURY:
		return true;
	default:
		return false;
	}
}

/* The value of clock register @index for broken-down time @tm. */
static uint8_t rtc_clock_value(const struct cmos_rtc *c, const struct tm *tm,
			       uint8_t index)
{
	unsigned int year = (unsigned int)tm->tm_year + 1900;

	switch (index) {
	case RTC_SECONDS:
		return rtc_encode(c, (unsigned int)tm->tm_sec);
	case RTC_MINUTES:
		return rtc_encode(c, (unsigned int)tm->tm_min);
	case RTC_HOURS:
		return rtc_encode_hour(c, (unsigned int)tm->tm_hour);
	case RTC_DAY_OF_WEEK:
		return rtc_encode(c, (unsigned int)tm->tm_wday + 1);
	case RTC_DAY_OF_MONTH:
		return rtc_encode(c, (unsigned int)tm->tm_mday);
	case RTC_MONTH:
		return rtc_encode(c, (unsigned int)tm->tm_mon + 1);
	case RTC_YEAR:
		return rtc_encode(c, year % 100);
	default: /* RTC_CENTURY */
		return rtc_encode(c, year / 100);
	}
}

/* Copy the running clock into the clock registers of nvram[]. */
static void rtc_latch_clock(struct cmos_rtc *c)
{
	static const uint8_t regs[] = {
		RTC_SECONDS,	  RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_WEEK,
		RTC_DAY_OF_MONTH, RTC_MONTH,   RTC_YEAR,  RTC_CENTURY};
	struct tm tm;

	rtc_guest_tm(c, &tm);
	for (size_t i = 0; i < sizeof(regs); i++)
		c->nvram[regs[i]] = rtc_clock_value(c, &tm, regs[i]);
}

/* Set the guest clock from the clock registers in nvram[]. */
static void rtc_commit_clock(struct cmos_rtc *c)
{
	struct tm tm = {0};
	time_t t;

	tm.tm_sec = (int)rtc_decode(c, c->nvram[RTC_SECONDS]);
	tm.tm_min = (int)rtc_decode(c, c->nvram[RTC_MINUTES]);
	tm.tm_hour = (int)rtc_decode_hour(c, c->nvram[RTC_HOURS]);
	tm.tm_mday = (int)rtc_decode(c, c->nvram[RTC_DAY_OF_MONTH]);
	tm.tm_mon = (int)rtc_decode(c, c->nvram[RTC_MONTH]) - 1;
	tm.tm_year = (int)(rtc_decode(c, c->nvram[RTC_CENTURY]) * 100 +
			   rtc_decode(c, c->nvram[RTC_YEAR])) -
		     1900;
	/* timegm() normalises out-of-range fields; any input is safe. */
	t = timegm(&tm);
	c->offset_sec = (long long)t - (long long)host_now();
}

static bool rtc_setting(const struct cmos_rtc *c)
{
	return c->nvram[RTC_REG_B] & REG_B_SET;
}

/* --- register access --- */

static void rtc_write_clock(struct cmos_rtc *c, uint8_t index, uint8_t v)
{
	/* While SET is on the registers hold the new time until it clears. */
	if (rtc_setting(c)) {
		c->nvram[index] = v;
		return;
	}
	rtc_latch_clock(c);
	c->nvram[index] = v;
	rtc_commit_clock(c);
}

static void rtc_write_reg_b(struct cmos_rtc *c, uint8_t v)
{
	bool was_setting = rtc_setting(c);

	/* Read the new time in the format it was written in... */
	if (was_setting && !(v & REG_B_SET))
		rtc_commit_clock(c);
	c->nvram[RTC_REG_B] = v;
	/* ...and show the frozen time in the format just chosen. */
	if (!was_setting && (v & REG_B_SET))
		rtc_latch_clock(c);
}

static void cmos_write_data(struct cmos_rtc *c, uint8_t v)
{
	uint8_t index = c->index;

	if (is_clock_reg(index))
		rtc_write_clock(c, index, v);
	else if (index == RTC_REG_A)
		c->nvram[index] = v & ~REG_A_UIP;
	else if (index == RTC_REG_B)
		rtc_write_reg_b(c, v);
	else if (index != RTC_REG_C && index != RTC_REG_D)
		c->nvram[index] = v; /* alarms and NVRAM */
}

static uint8_t cmos_read_data(struct cmos_rtc *c)
{
	uint8_t index = c->index, v;
	struct tm tm;

	if (is_clock_reg(index) && !rtc_setting(c)) {
		rtc_guest_tm(c, &tm);
		return rtc_clock_value(c, &tm, index);
	}
	switch (index) {
	case RTC_REG_C:
		v = c->nvram[index]; /* interrupt flags: read clears */
		c->nvram[index] = 0;
		return v;
	case RTC_REG_D:
		return REG_D_VRT;
	default:
		return c->nvram[index];
	}
}

static void cmos_write_index(struct cmos_rtc *c, uint8_t v)
{
	c->index = v & CMOS_INDEX_MASK;
	c->nmi_disabled = v & CMOS_NMI_DISABLE;
}

/* Wider accesses act as byte accesses to consecutive ports. */
static void cmos_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
		    bool is_write, int vcpu_id)
{
	struct cmos_rtc *c = opaque;

	(void)vcpu_id;
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t port = offset + i;

		if (port == CMOS_PORT_INDEX && is_write)
			cmos_write_index(c, data[i]);
		else if (port == CMOS_PORT_DATA && is_write)
			cmos_write_data(c, data[i]);
		else if (port == CMOS_PORT_DATA)
			data[i] = cmos_read_data(c);
		else if (!is_write)
			data[i] = 0xff; /* the index port is write-only */
	}
	pthread_mutex_unlock(&c->lock);
}

static void put_le16_capped(uint8_t *p, uint64_t v)
{
	if (v > 0xffff)
		v = 0xffff;
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void cmos_set_memory(struct cmos_rtc *c, uint64_t below_4g,
			    uint64_t above_4g)
{
	uint64_t ext_kib = below_4g > MIB ? (below_4g - MIB) / KIB : 0;
	uint64_t over_16m =
		below_4g > 16 * MIB ? (below_4g - 16 * MIB) / CHUNK_64K : 0;
	uint64_t over_4g = above_4g / CHUNK_64K;

	put_le16_capped(&c->nvram[CMOS_BASE_MEM_LO], BASE_MEM_KIB);
	put_le16_capped(&c->nvram[CMOS_EXT_MEM_LO], ext_kib);
	put_le16_capped(&c->nvram[CMOS_EXT_MEM2_LO], ext_kib);
	put_le16_capped(&c->nvram[CMOS_MEM_16M_LO], over_16m);
	if (over_4g > 0xffffff)
		over_4g = 0xffffff;
	c->nvram[CMOS_MEM_4G_0] = over_4g & 0xff;
	c->nvram[CMOS_MEM_4G_1] = (over_4g >> 8) & 0xff;
	c->nvram[CMOS_MEM_4G_2] = (over_4g >> 16) & 0xff;
}

int cmos_rtc_init(struct cmos_rtc *c, struct io_registry *io,
		  uint64_t ram_below_4g, uint64_t ram_above_4g,
		  unsigned int ncpus)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->nvram[RTC_REG_A] = REG_A_DEFAULT;
	c->nvram[RTC_REG_B] = REG_B_DEFAULT;
	c->nvram[RTC_REG_D] = REG_D_VRT;
	cmos_set_memory(c, ram_below_4g, ram_above_4g);
	c->nvram[CMOS_NCPUS_MINUS_1] = ncpus == 0  ? 0 :
				       ncpus > 256 ? 0xff :
						     (uint8_t)(ncpus - 1);
	if (pthread_mutex_init(&c->lock, NULL))
		return -ENOMEM;
	rc = ioreg_register(io, IO_SPACE_PIO, PORT_CMOS, CMOS_NR_PORTS, cmos_io,
			    c, "cmos_rtc");
	if (rc)
		pthread_mutex_destroy(&c->lock);
	return rc;
}

/* Call once the vCPUs are stopped: the io registry still points here. */
void cmos_rtc_destroy(struct cmos_rtc *c)
{
	pthread_mutex_destroy(&c->lock);
}
