/*
 * cluster/clocksync.c - TSC offset estimation from round trips: burst
 * minima, an outlier filter, a least-squares drift fit and a rigorous
 * error bound (see clocksync.h for the model). Pure logic: no I/O, no
 * globals, no libm.
 */
#include <string.h>

#include "cluster/clocksync.h"

static double dabs(double x)
{
	return x < 0 ? -x : x;
}

/* a - b for TSC values, as a signed distance (modulo 2^64). */
static int64_t tsc_diff(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b);
}

/* a - b for offsets, wrapping instead of overflowing. */
static int64_t off_diff(int64_t a, int64_t b)
{
	return (int64_t)((uint64_t)a - (uint64_t)b);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* A non-negative double to uint64_t, rounding up and saturating. */
static uint64_t ceil_u64(double x)
{
	uint64_t v;

	if (!(x > 0)) /* also NaN */
		return 0;
	if (x >= 18446744073709549568.0) /* largest double below 2^64 */
		return UINT64_MAX;
	v = (uint64_t)x;
	return (double)v < x ? v + 1 : v;
}

/* Round to nearest; |x| is small here (|drift * dt| < 2^53). */
static int64_t round_i64(double x)
{
	return x < 0 ? -(int64_t)(-x + 0.5) : (int64_t)(x + 0.5);
}

/*
 * The bound of one sample/minimum: ceil(rtt / 2) from the protocol (the
 * midpoint is rounded down), rtt / 2048 >= rtt / 2 * CLOCKSYNC_MAX_DRIFT
 * for the offset drifting during the round trip, 2 for integer rounding.
 */
static uint64_t point_err(uint64_t rtt)
{
	return rtt / 2 + (rtt & 1) + rtt / 2048 + 2;
}

static bool is_outlier(uint64_t rtt, uint64_t best)
{
	if (best > UINT64_MAX / CLOCKSYNC_OUTLIER)
		return false;
	return rtt > best * CLOCKSYNC_OUTLIER;
}

void clocksync_init(struct clocksync *c)
{
	memset(c, 0, sizeof(*c));
}

bool clocksync_add(struct clocksync *c, const struct clocksync_sample *s)
{
	struct clocksync_point p;

	if (s->t3 < s->t1) {
		c->burst_rejected++;
		return false;
	}
	p.rtt = s->t3 - s->t1;
	p.at = s->t1 + p.rtt / 2; /* (t1 + t3) / 2 without overflow */
	p.offset = (int64_t)(s->t2 - p.at);
	if (!c->have_burst || p.rtt < c->burst_min.rtt)
		c->burst_min = p;
	c->have_burst = true;
	c->burst_samples++;
	c->samples++;
	return true;
}

/*
 * Least-squares slope of the usable minima (x, y relative to ref), or 0
 * when there are too few of them or they span too little time.
 */
static double fit_drift(const struct clocksync *c, const bool *use)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0, xmin = 0, xmax = 0;
	double mx, my, n = 0;
	int i;

	for (i = 0; i < c->npt; i++) {
		double x, y;

		if (!use[i])
			continue;
		x = (double)tsc_diff(c->pt[i].at, c->ref.at);
		y = (double)off_diff(c->pt[i].offset, c->ref.offset);
		if (n == 0 || x < xmin)
			xmin = x;
		if (n == 0 || x > xmax)
			xmax = x;
		sx += x;
		sy += y;
		n++;
	}
	if (n < CLOCKSYNC_FIT_MIN || xmax - xmin < (double)CLOCKSYNC_MIN_SPAN)
		return 0;
	mx = sx / n;
	my = sy / n;
	for (i = 0; i < c->npt; i++) {
		double dx, dy;

		if (!use[i])
			continue;
		dx = (double)tsc_diff(c->pt[i].at, c->ref.at) - mx;
		dy = (double)off_diff(c->pt[i].offset, c->ref.offset) - my;
		sxx += dx * dx;
		sxy += dx * dy;
	}
	if (!(sxx > 0))
		return 0;
	return sxy / sxx;
}

static void refit(struct clocksync *c)
{
	bool use[CLOCKSYNC_BURSTS];
	uint64_t best = UINT64_MAX;
	double lo = -CLOCKSYNC_MAX_DRIFT, hi = CLOCKSYNC_MAX_DRIFT, d;
	int i, j, ref = -1;

	for (i = 0; i < c->npt; i++)
		if (c->pt[i].rtt < best)
			best = c->pt[i].rtt;
	c->nused = 0;
	for (i = 0; i < c->npt; i++) {
		use[i] = !is_outlier(c->pt[i].rtt, best);
		if (use[i]) {
			c->nused++;
			ref = i;
		}
	}
	if (ref < 0) { /* cannot happen: the best one is usable */
		c->valid = false;
		return;
	}
	c->ref = c->pt[ref];
	c->err = point_err(c->ref.rtt);

	/* slopes of the lines through every usable minimum's interval */
	for (i = 0; i < c->npt; i++) {
		if (!use[i])
			continue;
		for (j = i + 1; j < c->npt; j++) {
			double dx, dy, e;

			if (!use[j])
				continue;
			dx = (double)tsc_diff(c->pt[j].at, c->pt[i].at);
			dy = (double)off_diff(c->pt[j].offset, c->pt[i].offset);
			e = (double)point_err(c->pt[i].rtt) +
			    (double)point_err(c->pt[j].rtt);
			if (dx == 0)
				continue;
			if (dx < 0) {
				dx = -dx;
				dy = -dy;
			}
			if ((dy - e) / dx > lo)
				lo = (dy - e) / dx;
			if ((dy + e) / dx < hi)
				hi = (dy + e) / dx;
		}
	}

	d = fit_drift(c, use);
	if (d > CLOCKSYNC_MAX_DRIFT)
		d = CLOCKSYNC_MAX_DRIFT;
	if (d < -CLOCKSYNC_MAX_DRIFT)
		d = -CLOCKSYNC_MAX_DRIFT;
	if (d != 0 && lo <= hi) { /* only a fitted drift is moved */
		if (d < lo)
			d = lo;
		if (d > hi)
			d = hi;
	}
	c->drift = d;
	c->drift_unc =
		dabs(d - lo) > dabs(d - hi) ? dabs(d - lo) : dabs(d - hi);
	c->valid = true;
}

bool clocksync_end_burst(struct clocksync *c)
{
	uint64_t best = UINT64_MAX;
	int i;

	if (!c->have_burst) {
		c->burst_samples = c->burst_rejected = 0;
		return c->valid;
	}
	if (c->npt == CLOCKSYNC_BURSTS) {
		memmove(&c->pt[0], &c->pt[1],
			(CLOCKSYNC_BURSTS - 1) * sizeof(c->pt[0]));
		c->npt--;
	}
	c->pt[c->npt++] = c->burst_min;
	for (i = 0; i < c->npt; i++)
		if (c->pt[i].rtt < best)
			best = c->pt[i].rtt;
	if (is_outlier(c->burst_min.rtt, best))
		c->outliers++;
	c->bursts++;
	c->have_burst = false;
	c->burst_samples = c->burst_rejected = 0;
	refit(c);
	return c->valid;
}

bool clocksync_offset(const struct clocksync *c, uint64_t now, int64_t *offset,
		      uint64_t *err)
{
	int64_t dt;

	if (!c->valid)
		return false;
	dt = tsc_diff(now, c->ref.at);
	if (offset)
		*offset = (int64_t)((uint64_t)c->ref.offset +
				    (uint64_t)round_i64(c->drift * (double)dt));
	if (err) {
		*err = c->err;
		if (dt != 0) {
			double adt = dabs((double)dt);

			*err = sat_add(*err, ceil_u64(c->drift_unc * adt));
			*err = sat_add(*err, 2);
		}
	}
	return true;
}
