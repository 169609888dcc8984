/*
 * tests/unit/test_clocksync.c - the TSC offset estimator against synthetic
 * clocks: node 0's TSC = local + O + D * (local - base), samples built
 * from random one-way delays (deterministic xorshift). Covers sample
 * arithmetic (odd rtt, overflow-safe midpoint, t3 < t1), symmetric and
 * 10x asymmetric delays, outlier samples and bursts (exact threshold,
 * estimate unmoved), +-50 ppm drift over many bursts 2 s apart at 2.6 GHz,
 * negative offsets, a 50 ms injected skew, when a drift fit is made and
 * when it is clamped (to the limit and into the feasible slopes), window
 * rotation, a recorded-looking trace with a 5 ms outlier and a property
 * test: over thousands of random configurations the true offset lies
 * within the reported bound at every kept sample time and at later times.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/clocksync.h"

#define GHZ 2600000000ULL /* cycles per second */
#define US (GHZ / 1000000)
#define MS (GHZ / 1000)

/* ---- deterministic randomness ---- */

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	/* xorshift64* */
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dULL;
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	r->s = seed * 0x9e3779b97f4a7c15ULL + 0x1234567;
	if (!r->s)
		r->s = 1;
	rnd(r);
}

/* Uniform in [lo, hi]. */
static uint64_t rnd_range(struct rng *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	if (hi - lo == UINT64_MAX)
		return rnd(r);
	return lo + rnd(r) % (hi - lo + 1);
}

/* Uniform in [0, 1). */
static double rnd_unit(struct rng *r)
{
	return (double)(rnd(r) >> 11) / 9007199254740992.0;
}

/* ---- the synthetic world ---- */

struct world {
	uint64_t base; /* local TSC where the offset is O */
	int64_t O;     /* node 0 - local at base, cycles */
	double D;      /* d(offset) / d(local TSC) */
};

static int64_t true_offset(const struct world *w, uint64_t local)
{
	return w->O + (int64_t)(w->D * (double)(int64_t)(local - w->base));
}

/*
 * A round trip leaving at local t1: the request takes dreq local cycles,
 * node 0 stamps t2 on arrival and answers, which takes dans.
 */
static struct clocksync_sample make_sample(const struct world *w, uint64_t t1,
					   uint64_t dreq, uint64_t dans)
{
	struct clocksync_sample s;
	uint64_t tau = t1 + dreq;

	s.t1 = t1;
	s.t2 = tau + (uint64_t)true_offset(w, tau);
	s.t3 = tau + dans;
	return s;
}

enum asym { SYM, REQ_SLOW, ANS_SLOW, RANDOM_ASYM };

struct delays {
	uint64_t min, jitter; /* one way: min + [0, jitter] ... */
	enum asym asym;	      /* ... times 10 on the slow side */
	double outlier_p;     /* per sample: a 1-20 ms delay instead */
};

static void draw_delays(struct rng *r, const struct delays *d, uint64_t *req,
			uint64_t *ans)
{
	enum asym a = d->asym;

	*req = d->min + rnd_range(r, 0, d->jitter);
	*ans = d->min + rnd_range(r, 0, d->jitter);
	if (a == RANDOM_ASYM)
		a = (enum asym)rnd_range(r, SYM, ANS_SLOW);
	if (a == REQ_SLOW)
		*req *= 10;
	else if (a == ANS_SLOW)
		*ans *= 10;
	if (d->outlier_p > 0 && rnd_unit(r) < d->outlier_p) {
		if (rnd(r) & 1)
			*req += rnd_range(r, 1 * MS, 20 * MS);
		else
			*ans += rnd_range(r, 1 * MS, 20 * MS);
	}
}

/*
 * One burst of n samples from local t, 50 us apart; returns the end time.
 * *best_rtt (if not NULL) gets the smallest rtt sent.
 */
static uint64_t run_burst(struct clocksync *c, const struct world *w,
			  struct rng *r, uint64_t t, int n,
			  const struct delays *d, uint64_t *best_rtt)
{
	int i;

	if (best_rtt)
		*best_rtt = UINT64_MAX;
	for (i = 0; i < n; i++) {
		struct clocksync_sample s;
		uint64_t req, ans;

		draw_delays(r, d, &req, &ans);
		s = make_sample(w, t, req, ans);
		assert_true(clocksync_add(c, &s));
		if (best_rtt && s.t3 - s.t1 < *best_rtt)
			*best_rtt = s.t3 - s.t1;
		t = s.t3 + 50 * US;
	}
	assert_true(clocksync_end_burst(c));
	return t;
}

static uint64_t udist(int64_t a, int64_t b)
{
	return a >= b ? (uint64_t)a - (uint64_t)b : (uint64_t)b - (uint64_t)a;
}

/*
 * Assert the truth at local @at lies within the reported bound; returns
 * the actual error |estimate - truth|.
 */
static uint64_t check_within(const struct clocksync *c, const struct world *w,
			     uint64_t at)
{
	int64_t off, truth = true_offset(w, at);
	uint64_t err, dev;

	assert_true(clocksync_offset(c, at, &off, &err));
	dev = udist(off, truth);
	if (dev > err)
		fail_msg("at %llu (ref %+lld): estimate %lld truth %lld "
			 "|dev| %llu > err %llu (drift %g unc %g)",
			 (unsigned long long)at,
			 (long long)(int64_t)(at - c->ref.at), (long long)off,
			 (long long)truth, (unsigned long long)dev,
			 (unsigned long long)err, c->drift, c->drift_unc);
	return dev;
}

static uint64_t expect_point_err(uint64_t rtt)
{
	return (rtt + 1) / 2 + rtt / 2048 + 2;
}

static const struct delays lan = {.min = 8 * US, .jitter = 30 * US};

/* ---- sample arithmetic ---- */

static void test_empty(void **state)
{
	struct clocksync c;
	int64_t off = 42;
	uint64_t err = 42;

	(void)state;
	clocksync_init(&c);
	assert_false(c.valid);
	assert_false(clocksync_offset(&c, 1000, &off, &err));
	assert_int_equal(off, 42);
	assert_int_equal(err, 42);
	/* closing an empty burst changes nothing */
	assert_false(clocksync_end_burst(&c));
	assert_int_equal(c.bursts, 0);
	assert_int_equal(c.npt, 0);
	assert_false(clocksync_offset(&c, 1000, NULL, NULL));
}

static void test_t3_before_t1_rejected(void **state)
{
	struct clocksync c;
	struct clocksync_sample bad = {.t1 = 1000, .t2 = 5000, .t3 = 999};
	struct clocksync_sample zero = {.t1 = 1000, .t2 = 5000, .t3 = 1000};
	int64_t off;
	uint64_t err;

	(void)state;
	clocksync_init(&c);
	assert_false(clocksync_add(&c, &bad));
	assert_int_equal(c.burst_rejected, 1);
	assert_int_equal(c.burst_samples, 0);
	assert_int_equal(c.samples, 0);
	/* a burst of only impossible samples gives no estimate */
	assert_false(clocksync_end_burst(&c));
	assert_int_equal(c.bursts, 0);
	assert_false(clocksync_offset(&c, 1000, &off, &err));

	/* t3 == t1 is possible (coarse clock): rtt 0 */
	assert_false(clocksync_add(&c, &bad));
	assert_true(clocksync_add(&c, &zero));
	assert_int_equal(c.burst_rejected, 1);
	assert_int_equal(c.burst_samples, 1);
	assert_true(clocksync_end_burst(&c));
	assert_int_equal(c.burst_rejected, 0);
	assert_true(clocksync_offset(&c, 1000, &off, &err));
	assert_int_equal(off, 4000);
	assert_int_equal(err, expect_point_err(0));
}

static void test_midpoint_arithmetic(void **state)
{
	struct clocksync c;
	/* (t1 + t3) would overflow; node 0's TSC is small: it wrapped past */
	struct clocksync_sample hi = {
		.t1 = UINT64_MAX - 1001, .t2 = 12345, .t3 = UINT64_MAX - 1};
	/* odd rtt: the midpoint rounds down, the bound up */
	struct clocksync_sample odd = {.t1 = 10, .t2 = 1000, .t3 = 13};
	/* node 0 far behind: t2 < t1 */
	struct clocksync_sample neg = {
		.t1 = 1ULL << 62, .t2 = 77, .t3 = (1ULL << 62) + 100};
	int64_t off;
	uint64_t err;

	(void)state;
	clocksync_init(&c);
	assert_true(clocksync_add(&c, &hi));
	assert_true(clocksync_end_burst(&c));
	assert_int_equal(c.ref.rtt, 1000);
	assert_int_equal(c.ref.at, UINT64_MAX - 501);
	assert_int_equal(c.ref.offset, 12345 + 502);

	clocksync_init(&c);
	assert_true(clocksync_add(&c, &odd));
	assert_true(clocksync_end_burst(&c));
	assert_int_equal(c.ref.at, 11);
	assert_int_equal(c.ref.offset, 989);
	assert_int_equal(c.err, 2 + 2);
	/* the truth is in [t2 - t3, t2 - t1] = [987, 990] */
	assert_true(clocksync_offset(&c, 11, &off, &err));
	assert_true(off - (int64_t)err <= 987 && off + (int64_t)err >= 990);

	clocksync_init(&c);
	assert_true(clocksync_add(&c, &neg));
	assert_true(clocksync_end_burst(&c));
	assert_int_equal(c.ref.offset, 77 - (int64_t)((1ULL << 62) + 50));
	assert_true(c.ref.offset < 0);
}

/* ---- estimation ---- */

static void test_single_burst(void **state)
{
	const struct world w = {
		.base = 5000000000000ULL, .O = 123456789, .D = 80e-6};
	struct clocksync c;
	struct rng r;
	uint64_t best, err0, err1;
	int64_t off;

	(void)state;
	rng_seed(&r, 1);
	clocksync_init(&c);
	run_burst(&c, &w, &r, w.base, 8, &lan, &best);
	assert_true(c.valid);
	assert_int_equal(c.npt, 1);
	assert_int_equal(c.nused, 1);
	assert_int_equal(c.samples, 8);
	assert_int_equal(c.bursts, 1);
	assert_int_equal(c.ref.rtt, best);
	assert_true(c.drift == 0);
	/* nothing known about drift: the full clamp */
	assert_true(c.drift_unc == CLOCKSYNC_MAX_DRIFT);
	assert_int_equal(c.err, expect_point_err(best));

	assert_true(clocksync_offset(&c, c.ref.at, &off, &err0));
	assert_int_equal(off, c.ref.offset);
	assert_int_equal(err0, c.err);
	check_within(&c, &w, c.ref.at);
	/* drift 0 predicts the same offset later, with a growing bound */
	assert_true(clocksync_offset(&c, c.ref.at + 10 * GHZ, &off, &err1));
	assert_int_equal(off, c.ref.offset);
	assert_true(err1 >= err0 + (uint64_t)(500e-6 * 10 * GHZ));
	/* 80 ppm over 10 s is 0.8 ms off, still inside */
	assert_true(check_within(&c, &w, c.ref.at + 10 * GHZ) > MS / 2);
	check_within(&c, &w, c.ref.at - 3 * GHZ);
}

static void test_symmetric(void **state)
{
	const struct world w = {
		.base = 900000000000ULL, .O = -987654321, .D = 0};
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base, dev;
	int i, k;

	(void)state;
	rng_seed(&r, 2);
	clocksync_init(&c);
	for (k = 0; k < 20; k++) {
		run_burst(&c, &w, &r, t, 6, &lan, NULL);
		for (i = 0; i < c.npt; i++)
			check_within(&c, &w, c.pt[i].at);
		t += 2 * GHZ;
	}
	assert_int_equal(c.bursts, 20);
	assert_int_equal(c.samples, 120);
	assert_int_equal(c.npt, CLOCKSYNC_BURSTS);
	assert_int_equal(c.nused, CLOCKSYNC_BURSTS);
	assert_int_equal(c.outliers, 0);
	dev = check_within(&c, &w, c.ref.at);
	/* minima of 16..76 us round trips: a few us */
	assert_true(c.err < 40 * US);
	assert_true(dev < 20 * US);
	assert_true(c.drift > -2e-6 && c.drift < 2e-6);
	check_within(&c, &w, t + 30 * GHZ);
}

static void test_asymmetric(void **state)
{
	/* the request takes 10x the answer's time: a systematic bias */
	const struct world w = {.base = 1ULL << 40, .O = 31415926535LL, .D = 0};
	const struct delays d = {
		.min = 2 * US, .jitter = 6 * US, .asym = REQ_SLOW};
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base, dev;
	int64_t off;
	int k;

	(void)state;
	rng_seed(&r, 3);
	clocksync_init(&c);
	for (k = 0; k < 10; k++) {
		run_burst(&c, &w, &r, t, 5, &d, NULL);
		dev = check_within(&c, &w, c.ref.at);
		/* node 0 stamps late in the round trip: over-estimate */
		assert_true(clocksync_offset(&c, c.ref.at, &off, NULL));
		assert_true(off > true_offset(&w, c.ref.at));
		/* by (req - ans) / 2 = 9/22 rtt: wrong, but within rtt/2 */
		assert_true(dev > c.ref.rtt / 4);
		assert_true(dev <= c.ref.rtt / 2);
		t += 2 * GHZ;
	}
	check_within(&c, &w, t + 5 * GHZ);
}

/* Good bursts 2 s apart, optionally interleaved with slow ones. */
static void outlier_run(struct clocksync *c, const struct world *w,
			bool slow_bursts, bool slow_samples)
{
	const struct delays slow = {.min = 5 * MS, .jitter = 15 * MS};
	struct rng good, bad;
	uint64_t t = w->base;
	int k, i;

	rng_seed(&good, 4);
	rng_seed(&bad, 5);
	clocksync_init(c);
	for (k = 0; k < 8; k++) {
		for (i = 0; i < 4; i++) {
			struct clocksync_sample s;
			uint64_t req, ans;

			draw_delays(&good, &lan, &req, &ans);
			s = make_sample(w, t, req, ans);
			assert_true(clocksync_add(c, &s));
			t = s.t3 + 50 * US;
			if (slow_samples) { /* a stalled one in every burst */
				draw_delays(&bad, &slow, &req, &ans);
				s = make_sample(w, s.t3, req, ans);
				assert_true(clocksync_add(c, &s));
			}
		}
		assert_true(clocksync_end_burst(c));
		if (slow_bursts && (k == 2 || k == 4 || k == 6 || k == 7))
			run_burst(c, w, &bad, t + GHZ / 2, 3, &slow, NULL);
		t = w->base + (k + 1) * 2 * GHZ;
	}
}

static void test_outliers_ignored(void **state)
{
	const struct world w = {.base = 3ULL << 41, .O = 777777777, .D = 20e-6};
	struct clocksync a, b, s;
	uint64_t now, ea, eb, es;
	int64_t oa, ob, os;

	(void)state;
	outlier_run(&a, &w, false, false);
	outlier_run(&b, &w, true, false);
	outlier_run(&s, &w, false, true);
	assert_int_equal(a.outliers, 0);
	assert_int_equal(a.nused, 8);
	/* 4 slow bursts (the last one newest), all kept but none used */
	assert_int_equal(b.npt, 12);
	assert_int_equal(b.bursts, 12);
	assert_int_equal(b.outliers, 4);
	assert_int_equal(b.nused, 8);
	assert_int_equal(b.ref.at, a.ref.at);
	assert_int_equal(b.pt[b.npt - 2].at, a.ref.at);
	/* slow samples inside bursts never become the minimum */
	assert_int_equal(s.samples, 2 * a.samples);
	assert_int_equal(s.outliers, 0);

	/* the estimate is exactly unmoved */
	now = a.ref.at + 5 * GHZ;
	assert_true(clocksync_offset(&a, now, &oa, &ea));
	assert_true(clocksync_offset(&b, now, &ob, &eb));
	assert_true(clocksync_offset(&s, now, &os, &es));
	assert_int_equal(oa, ob);
	assert_int_equal(ea, eb);
	assert_true(a.drift == b.drift && a.drift_unc == b.drift_unc);
	assert_int_equal(oa, os);
	assert_int_equal(ea, es);
	assert_true(a.drift != 0);
	check_within(&b, &w, now);
}

static void add_one(struct clocksync *c, const struct world *w, uint64_t t1,
		    uint64_t rtt)
{
	struct clocksync_sample s = make_sample(w, t1, rtt / 2, rtt - rtt / 2);

	assert_true(clocksync_add(c, &s));
	assert_true(clocksync_end_burst(c));
}

static void test_outlier_threshold(void **state)
{
	const struct world w = {.base = 0, .O = 1000, .D = 0};
	struct clocksync c;

	(void)state;
	clocksync_init(&c);
	add_one(&c, &w, 1 * GHZ, 1000);
	add_one(&c, &w, 2 * GHZ, 4000); /* exactly 4x: still used */
	assert_int_equal(c.nused, 2);
	assert_int_equal(c.outliers, 0);
	assert_int_equal(c.ref.rtt, 4000);
	add_one(&c, &w, 3 * GHZ, 4001); /* above: ignored */
	assert_int_equal(c.nused, 2);
	assert_int_equal(c.outliers, 1);
	assert_int_equal(c.ref.rtt, 4000);
	assert_int_equal(c.ref.at, 2 * GHZ + 2000);
	/* a better burst re-judges the window: now 4000 and 4001 are out */
	add_one(&c, &w, 4 * GHZ, 500);
	assert_int_equal(c.nused, 2);
	assert_int_equal(c.ref.rtt, 500);
	assert_int_equal(c.outliers, 1);
	/* once the best ages out of the window, slower ones count again */
	for (int i = 0; i < CLOCKSYNC_BURSTS; i++)
		add_one(&c, &w, (5 + i) * GHZ, 3000 + i);
	assert_int_equal(c.nused, CLOCKSYNC_BURSTS);
	check_within(&c, &w, c.ref.at);
}

static void drift_run(double D, uint64_t seed)
{
	const struct world w = {.base = 7ULL << 40, .O = 1000000000, .D = D};
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base, now, dev, naive, err;
	int64_t off;
	int k;

	rng_seed(&r, seed);
	clocksync_init(&c);
	for (k = 0; k < 40; k++) {
		run_burst(&c, &w, &r, t, 8, &lan, NULL);
		check_within(&c, &w, c.ref.at);
		check_within(&c, &w, c.pt[0].at);
		check_within(&c, &w, c.ref.at + 2 * GHZ);
		t += 2 * GHZ;
	}
	/* 30 s of minima: the slope is known to well under a ppm */
	assert_true(c.drift > D - 1e-6 && c.drift < D + 1e-6);
	assert_true(c.drift_unc < 3e-6);

	now = c.ref.at + 10 * GHZ;
	assert_true(clocksync_offset(&c, now, &off, &err));
	dev = check_within(&c, &w, now);
	naive = udist(c.ref.offset, true_offset(&w, now));
	/* without the drift: 50 ppm x 10 s = 1.3M cycles (500 us) off */
	assert_true(naive > 1200000);
	assert_true(dev < naive / 10);
	assert_true(err < 100 * US);

	now = c.ref.at + 60 * GHZ;
	dev = check_within(&c, &w, now);
	assert_true(dev < udist(c.ref.offset, true_offset(&w, now)) / 10);
}

static void test_drift(void **state)
{
	(void)state;
	drift_run(50e-6, 6);
	drift_run(-50e-6, 7);
}

static void test_negative_offset(void **state)
{
	/* node 0 booted ~19 minutes after us, and runs slow */
	const struct world w = {
		.base = 4000000000000ULL, .O = -3000000000000LL, .D = -30e-6};
	struct clocksync_sample s;
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base;
	int64_t off;
	int k;

	(void)state;
	s = make_sample(&w, t, 10 * US, 10 * US);
	assert_true(s.t2 < s.t1);
	rng_seed(&r, 8);
	clocksync_init(&c);
	for (k = 0; k < 10; k++) {
		run_burst(&c, &w, &r, t, 6, &lan, NULL);
		check_within(&c, &w, c.ref.at);
		t += 2 * GHZ;
	}
	assert_true(clocksync_offset(&c, t, &off, NULL));
	assert_true(off < -2999000000000LL);
	check_within(&c, &w, t);
	assert_true(c.drift < -20e-6 && c.drift > -40e-6);
}

static void test_injected_skew(void **state)
{
	/* 50 ms at 2.6 GHz, both ways */
	static const int64_t skew[] = {130000000, -130000000};
	struct clocksync c;
	struct rng r;
	uint64_t err, dev;
	int64_t off;
	int k;

	(void)state;
	for (unsigned i = 0; i < sizeof(skew) / sizeof(skew[0]); i++) {
		const struct world w = {.base = 1ULL << 36, .O = skew[i]};
		uint64_t t = w.base;

		rng_seed(&r, 9 + i);
		clocksync_init(&c);
		for (k = 0; k < 6; k++) {
			run_burst(&c, &w, &r, t, 8, &lan, NULL);
			t += 2 * GHZ;
		}
		assert_true(clocksync_offset(&c, t, &off, &err));
		dev = check_within(&c, &w, t);
		assert_true(udist(off, skew[i]) == dev);
		assert_true(err < 50 * US);
		assert_true(dev < 130000); /* within 0.1 % */
	}
}

static void test_fit_conditions(void **state)
{
	const struct world w = {.base = 1ULL << 38, .O = 0, .D = 50e-6};
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base, err;
	int64_t off;
	int k;

	(void)state;
	rng_seed(&r, 11);
	clocksync_init(&c);
	run_burst(&c, &w, &r, t, 8, &lan, NULL);
	assert_true(c.drift == 0);
	assert_true(c.drift_unc == CLOCKSYNC_MAX_DRIFT);
	/* two minima: no fit yet, but they bound the drift */
	run_burst(&c, &w, &r, t + 2 * GHZ, 8, &lan, NULL);
	assert_true(c.drift == 0);
	assert_true(c.drift_unc < CLOCKSYNC_MAX_DRIFT);
	assert_true(c.drift_unc > 40e-6); /* the truth is 50 ppm from 0 */
	check_within(&c, &w, c.ref.at + 20 * GHZ);
	/* three: fitted */
	run_burst(&c, &w, &r, t + 4 * GHZ, 8, &lan, NULL);
	assert_true(c.drift > 30e-6 && c.drift < 70e-6);
	check_within(&c, &w, c.ref.at + 20 * GHZ);
	check_within(&c, &w, c.ref.at - 4 * GHZ);

	/* many minima over too short a span (4 ms): no fit */
	clocksync_init(&c);
	for (k = 0; k < 5; k++)
		run_burst(&c, &w, &r, t + k * MS, 2, &lan, NULL);
	assert_int_equal(c.nused, 5);
	assert_true(c.drift == 0);
	assert_true(clocksync_offset(&c, c.ref.at + GHZ, &off, &err));
	assert_int_equal(off, c.ref.offset);
	check_within(&c, &w, c.ref.at + GHZ);
}

/*
 * Unweighted least squares ignores that the newest minimum is 4x tighter;
 * the slope is then pulled back into what every interval allows.
 */
static void test_fit_kept_feasible(void **state)
{
	const struct world w = {.base = 0, .O = 0, .D = 0};
	/* one-way delays giving deviations -R/2, -R/2, +R/2, +r/2 */
	static const uint64_t req[] = {0, 0, 400 * US, 100 * US};
	static const uint64_t ans[] = {400 * US, 400 * US, 0, 0};
	struct clocksync c;
	int k;

	(void)state;
	clocksync_init(&c);
	for (k = 0; k < 4; k++) {
		struct clocksync_sample s = make_sample(
			&w, (uint64_t)(k + 1) * GHZ, req[k], ans[k]);

		assert_true(clocksync_add(&c, &s));
		assert_true(clocksync_end_burst(&c));
	}
	assert_int_equal(c.nused, 4);
	/* the plain fit says 115 ppm; the last two minima allow <= 100 */
	assert_true(c.drift > 95e-6 && c.drift < 101e-6);
	assert_true(c.drift_unc > 95e-6 && c.drift_unc < 101e-6);
	for (k = 0; k < 4; k++)
		check_within(&c, &w, c.pt[k].at);
	check_within(&c, &w, c.ref.at + 10 * GHZ);
}

static void test_drift_clamp(void **state)
{
	/* 1000 ppm of apparent drift: noise, clamped to the limit */
	static const double d[] = {1000e-6, -1000e-6};
	struct clocksync c;
	int k;

	(void)state;
	for (unsigned i = 0; i < 2; i++) {
		const struct world w = {.base = 0, .O = 5000, .D = d[i]};

		clocksync_init(&c);
		for (k = 0; k < 6; k++)
			add_one(&c, &w, (1 + k) * GHZ, 20 * US);
		assert_true(c.drift == (i ? -1 : 1) * CLOCKSYNC_MAX_DRIFT);
		assert_true(c.drift_unc > 0);
		check_within(&c, &w, c.ref.at); /* at ref it still holds */
	}
}

static void test_window(void **state)
{
	const struct world w = {.base = 1ULL << 42, .O = 55, .D = 5e-6};
	struct clocksync c;
	struct rng r;
	uint64_t t = w.base;
	int i, k;

	(void)state;
	rng_seed(&r, 12);
	clocksync_init(&c);
	for (k = 0; k < 40; k++) {
		uint64_t best;

		run_burst(&c, &w, &r, t, 3, &lan, &best);
		assert_int_equal(c.npt, k + 1 < CLOCKSYNC_BURSTS ?
						k + 1 :
						CLOCKSYNC_BURSTS);
		assert_int_equal(c.pt[c.npt - 1].rtt, best);
		assert_true(c.pt[c.npt - 1].at >= t &&
			    c.pt[c.npt - 1].at < t + GHZ);
		t += 2 * GHZ;
	}
	assert_int_equal(c.bursts, 40);
	/* oldest first, the oldest kept being burst 24 */
	for (i = 1; i < c.npt; i++)
		assert_true(c.pt[i].at > c.pt[i - 1].at);
	assert_true(c.pt[0].at >= w.base + 24 * 2 * GHZ);
	assert_true(c.pt[0].at < w.base + 25 * 2 * GHZ);
}

/*
 * Shaped like a loopback recording at 2.6 GHz: bursts of round trips of
 * 20-80 us every 2 s, node 0 ahead by ~1.85 s and gaining 12 ppm, and a
 * last burst whose only answer took 5 ms.
 */
static const struct {
	int burst;
	uint64_t t1, t2, t3;
} recorded[] = {
	{0, 34335515458427u, 34340327005525u, 34335515549971u}, /* 35.2 us */
	{0, 34335515824609u, 34340327351736u, 34335515889266u}, /* 24.9 us */
	{0, 34335516133744u, 34340327674691u, 34335516210419u}, /* 29.5 us */
	{0, 34335516467193u, 34340328009474u, 34335516534397u}, /* 25.8 us */
	{1, 34340715158181u, 34345526762992u, 34340715232711u}, /* 28.7 us */
	{1, 34340715446332u, 34345527043348u, 34340715516644u}, /* 27.0 us */
	{1, 34340715644423u, 34345527305526u, 34340715840876u}, /* 75.6 us */
	{1, 34340715960371u, 34345527603092u, 34340716160601u}, /* 77.0 us */
	{2, 34345915780123u, 34350727482792u, 34345915984952u}, /* 78.8 us */
	{2, 34345916240236u, 34350727965086u, 34345916445732u}, /* 79.0 us */
	{2, 34345916562731u, 34350728231201u, 34345916672686u}, /* 42.3 us */
	{2, 34345916922612u, 34350728589458u, 34345917009522u}, /* 33.4 us */
	{3, 34351115270126u, 34355927034971u, 34351115463863u}, /* 74.5 us */
	{3, 34351115717524u, 34355927490069u, 34351115850390u}, /* 51.1 us */
	{3, 34351116133172u, 34355927860658u, 34351116232548u}, /* 38.2 us */
	{3, 34351116489010u, 34355928290822u, 34351116690747u}, /* 77.6 us */
	{4, 34356315509351u, 34361127306160u, 34356315586891u}, /* 29.8 us */
	{4, 34356315877566u, 34361127671745u, 34356315946025u}, /* 26.3 us */
	{4, 34356316065649u, 34361127870740u, 34356316171639u}, /* 40.8 us */
	{5, 34361515676413u, 34366335550687u, 34361528676566u}, /* 5000 us */
};

static void test_recorded(void **state)
{
	/* the generator's truth: offset 4811502117 at base, +12 ppm */
	const struct world w = {
		.base = 34335515118864ULL, .O = 4811502117LL, .D = 12e-6};
	/* burst minima: (at, offset, rtt) worked out by hand */
	static const struct clocksync_point mins[] = {
		{34335515856937u, 4811494799, 64657},
		{34340715481488u, 4811561860, 70312},
		{34345916966067u, 4811623391, 86910},
		{34351116182860u, 4811677798, 99376},
		{34356315911795u, 4811759950, 68459},
		{34361522176489u, 4813374198, 13000153},
	};
	struct clocksync c;
	unsigned i;
	int64_t off;
	uint64_t err, dev;

	(void)state;
	clocksync_init(&c);
	for (i = 0; i < sizeof(recorded) / sizeof(recorded[0]); i++) {
		struct clocksync_sample s = {recorded[i].t1, recorded[i].t2,
					     recorded[i].t3};

		assert_true(clocksync_add(&c, &s));
		if (i + 1 == sizeof(recorded) / sizeof(recorded[0]) ||
		    recorded[i + 1].burst != recorded[i].burst)
			assert_true(clocksync_end_burst(&c));
	}
	assert_int_equal(c.samples, 20);
	assert_int_equal(c.bursts, 6);
	assert_int_equal(c.npt, 6);
	for (i = 0; i < 6; i++) {
		assert_int_equal(c.pt[i].at, mins[i].at);
		assert_int_equal(c.pt[i].offset, mins[i].offset);
		assert_int_equal(c.pt[i].rtt, mins[i].rtt);
	}
	/* the 5 ms burst is an outlier: the estimate rests on burst 4 */
	assert_int_equal(c.outliers, 1);
	assert_int_equal(c.nused, 5);
	assert_int_equal(c.ref.at, 34356315911795u);
	assert_int_equal(c.ref.offset, 4811759950);
	assert_int_equal(c.err, 34230 + 33 + 2);
	assert_true(c.drift > 10e-6 && c.drift < 14e-6);
	assert_true(c.drift_unc < 4e-6);

	assert_true(clocksync_offset(&c, c.ref.at, &off, &err));
	assert_int_equal(off, 4811759950);
	dev = check_within(&c, &w, c.ref.at);
	assert_int_equal(dev, 8224); /* 3.2 us */
	/* 5 s after the outlier burst: still a few us */
	assert_true(clocksync_offset(&c, mins[5].at + 5 * GHZ, &off, &err));
	assert_true(err < 60 * US);
	check_within(&c, &w, mins[5].at + 5 * GHZ);
	for (i = 0; i < 6; i++)
		check_within(&c, &w, mins[i].at);
}

/* ---- the containment invariant over random configurations ---- */

static void test_property_containment(void **state)
{
	unsigned cfg, nfit = 0, nchecks = 0;

	(void)state;
	for (cfg = 0; cfg < 3000; cfg++) {
		struct rng r;
		struct world w;
		struct delays d;
		struct clocksync c;
		uint64_t t, gap;
		int nb, k, i;

		rng_seed(&r, 1000 + cfg);
		w.base = rnd_range(&r, 0, 1ULL << 62);
		w.O = (int64_t)rnd_range(&r, 0, 1ULL << 41) - (1LL << 40);
		if (rnd_range(&r, 0, 9) == 0)
			w.O = (int64_t)rnd_range(&r, 0, 1ULL << 61) -
			      (1LL << 60);
		w.D = (rnd_unit(&r) * 2 - 1) * 200e-6;
		if (rnd_range(&r, 0, 4) == 0)
			w.D = 0;
		d.min = rnd_range(&r, 1 * US, 100 * US);
		d.jitter = rnd_range(&r, 0, 100 * US);
		d.asym = (enum asym)rnd_range(&r, SYM, RANDOM_ASYM);
		d.outlier_p = rnd_range(&r, 0, 1) ? 0.1 : 0;
		nb = (int)rnd_range(&r, 1, 40);
		gap = rnd_range(&r, 0, 3) ? rnd_range(&r, 1 * GHZ, 5 * GHZ) :
					    rnd_range(&r, 1 * MS, 50 * MS);
		t = w.base + rnd_range(&r, 0, 10 * GHZ);

		clocksync_init(&c);
		for (k = 0; k < nb; k++) {
			int n = (int)rnd_range(&r, 1, 8);

			if (rnd_range(&r, 0, 9) == 0) { /* a stalled burst */
				struct delays s = d;

				s.min += 2 * MS;
				run_burst(&c, &w, &r, t, n, &s, NULL);
			} else {
				run_burst(&c, &w, &r, t, n, &d, NULL);
			}
			for (i = 0; i < c.npt; i++)
				check_within(&c, &w, c.pt[i].at);
			check_within(&c, &w,
				     c.ref.at + rnd_range(&r, 0, 20 * GHZ));
			nchecks += c.npt + 1;
			t += gap;
		}
		assert_true(c.drift >= -CLOCKSYNC_MAX_DRIFT &&
			    c.drift <= CLOCKSYNC_MAX_DRIFT);
		assert_true(c.nused >= 1 && c.nused <= c.npt);
		if (c.drift != 0)
			nfit++;
	}
	/* the configurations did exercise the fit */
	assert_true(nfit > 1000);
	assert_true(nchecks > 100000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_t3_before_t1_rejected),
		cmocka_unit_test(test_midpoint_arithmetic),
		cmocka_unit_test(test_single_burst),
		cmocka_unit_test(test_symmetric),
		cmocka_unit_test(test_asymmetric),
		cmocka_unit_test(test_outliers_ignored),
		cmocka_unit_test(test_outlier_threshold),
		cmocka_unit_test(test_drift),
		cmocka_unit_test(test_negative_offset),
		cmocka_unit_test(test_injected_skew),
		cmocka_unit_test(test_fit_conditions),
		cmocka_unit_test(test_fit_kept_feasible),
		cmocka_unit_test(test_drift_clamp),
		cmocka_unit_test(test_window),
		cmocka_unit_test(test_recorded),
		cmocka_unit_test(test_property_containment),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
