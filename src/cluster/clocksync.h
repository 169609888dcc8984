/*
 * cluster/clocksync.h - estimating the offset between this node's TSC and
 * node 0's from timestamped round trips (pure logic; cluster/vtime.c runs
 * the protocol). A sample is one round trip: t1 = local TSC when the
 * request left, t2 = node 0's TSC when it answered, t3 = local TSC when
 * the answer arrived. For that sample offset = t2 - (t1 + t3) / 2 (node 0
 * minus local) with error bound rtt / 2 = (t3 - t1) / 2: whatever the
 * asymmetry of the two delays, the true offset lies within it.
 *
 * Samples come in bursts; a burst keeps its minimum-round-trip sample
 * (queueing delay only ever adds). The last CLOCKSYNC_BURSTS burst minima
 * give the estimate: the offset at the newest one, plus a drift rate
 * (cycles of offset change per cycle of local TSC) fitted over the minima
 * by least squares once they span enough time, so the offset predicted at
 * any later local TSC follows drifting clocks. Outliers: a burst whose
 * minimum round trip is more than CLOCKSYNC_OUTLIER times the best of the
 * window is not used (it cannot tighten the estimate).
 *
 * Error model. A minimum's bound is e = ceil(rtt / 2) + rtt / 2048 + 2:
 * rtt/2 from the protocol, rtt/2048 for drift of at most
 * CLOCKSYNC_MAX_DRIFT during the round trip itself, 2 for integer
 * rounding. Assuming the true offset is linear in local time with
 * |slope| <= CLOCKSYNC_MAX_DRIFT, the slopes of all lines through every
 * usable minimum's interval [offset - e, offset + e] form an interval
 * [lo, hi] (exactly: the intersection over all pairs i < j of
 * [(dy - ei - ej) / dx, (dy + ei + ej) / dx], and of +-MAX_DRIFT). The
 * fitted drift is clamped into it, and drift_unc = max(drift - lo,
 * hi - drift) bounds |fitted - true drift|. The bound at local TSC now is
 * then err + drift_unc * |now - ref.at| (+2 for rounding): with a single
 * minimum that is the full MAX_DRIFT, with many spread ones it shrinks
 * like (ei + ej) / span. If the minima admit no common line (a clock step)
 * lo > hi and drift_unc grows with the inconsistency.
 */
#ifndef DVMM_CLUSTER_CLOCKSYNC_H
#define DVMM_CLUSTER_CLOCKSYNC_H

#include <stdbool.h>
#include <stdint.h>

#define CLOCKSYNC_BURSTS 16 /* burst minima kept */
#define CLOCKSYNC_OUTLIER 4 /* rtt > 4 x the window's best: ignored */
/* |drift| above this is noise (crystals are within ~100 ppm): clamped */
#define CLOCKSYNC_MAX_DRIFT 500e-6
/*
 * A drift fit needs >= 3 usable minima spanning at least this many local
 * cycles (~0.4 s at 2.6 GHz); otherwise drift = 0.
 */
#define CLOCKSYNC_FIT_MIN 3
#define CLOCKSYNC_MIN_SPAN (1ULL << 30)

struct clocksync_sample {
	uint64_t t1, t2, t3; /* local, node 0, local TSC */
};

struct clocksync_point {
	uint64_t at;	/* local TSC at the sample's midpoint (t1+t3)/2 */
	int64_t offset; /* node 0 - local, cycles */
	uint64_t rtt;	/* t3 - t1, cycles */
};

struct clocksync {
	/* the burst being collected */
	bool have_burst;
	struct clocksync_point burst_min;
	uint32_t burst_samples, burst_rejected;
	/* burst minima, oldest first */
	struct clocksync_point pt[CLOCKSYNC_BURSTS];
	int npt;
	/* the fit over them */
	bool valid;
	struct clocksync_point ref; /* the newest usable minimum */
	double drift;		    /* d(offset)/d(local TSC) */
	double drift_unc;	    /* bound on |drift - true drift| */
	uint64_t err;		    /* error bound at ref, cycles */
	int nused;		    /* usable (non-outlier) minima in pt */
	uint64_t samples, bursts, outliers;
};

void clocksync_init(struct clocksync *c);
/*
 * Add one round trip to the current burst. Returns false (and ignores it)
 * for an impossible sample: t3 < t1.
 */
bool clocksync_add(struct clocksync *c, const struct clocksync_sample *s);
/*
 * Close the burst: keep its minimum-RTT sample and refit. Returns true if
 * the estimate is valid afterwards (at least one usable burst).
 */
bool clocksync_end_burst(struct clocksync *c);
/*
 * The offset (node 0's TSC minus ours) predicted at local TSC @now, and
 * in *err (if not NULL) its error bound: the newest usable minimum's
 * bound (err, about rtt/2), plus drift_unc times |now - ref.at| (so it
 * grows with the time since, and also covers times before ref). Either
 * pointer may be NULL. False if there is no estimate yet.
 */
bool clocksync_offset(const struct clocksync *c, uint64_t now, int64_t *offset,
		      uint64_t *err);

#endif
