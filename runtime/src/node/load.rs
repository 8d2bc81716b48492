//! How loaded a service is here: calls answered per second, callers turned
//! away (`Busy`) per second, the calls in flight on average (the time spent
//! in calls per second, by Little's law) and the 95th percentile of call
//! latency, over the last seconds. It is what `sp2a status` shows per service and what a
//! provider reports to the others of its group (see
//! [`replication`](crate::replication)).
//!
//! A ring of one-second buckets (the last [`SECONDS`]), each with a count of
//! answers, of `Busy` answers and a latency histogram with power-of-two
//! bounds from 64 us to 64 s (22 buckets): fixed memory, O(1) per call. The
//! p95 is interpolated within its bucket (within a factor of two at worst,
//! exact for calls spread evenly in the bucket). Time is an input.

use std::time::{Duration, Instant};

/// Seconds of history kept.
pub const SECONDS: usize = 10;
const LATENCY_BUCKETS: usize = 22;
/// The upper bound of the first latency bucket, in microseconds.
const FIRST_BOUND_US: u64 = 64;

#[derive(Clone, Copy, Default)]
struct Second {
    /// Which second since the meter started this bucket holds.
    index: u64,
    answered: u32,
    busy: u32,
    /// Time spent in the calls that ended in this second.
    busy_us: u64,
    latency: [u32; LATENCY_BUCKETS],
}

/// A service's load over the last seconds.
pub struct LoadMeter {
    start: Instant,
    seconds: [Second; SECONDS],
}

/// The load over a window of whole seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSnapshot {
    pub calls_per_s: f64,
    pub busy_per_s: f64,
    /// Calls in flight on average.
    pub concurrency: f64,
    /// `None` without calls in the window.
    pub p95: Option<Duration>,
}

fn latency_bucket(latency: Duration) -> usize {
    let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
    let mut bound = FIRST_BOUND_US;
    let mut bucket = 0;
    while us > bound && bucket < LATENCY_BUCKETS - 1 {
        bound *= 2;
        bucket += 1;
    }
    bucket
}

fn bucket_bound(bucket: usize) -> Duration {
    Duration::from_micros(FIRST_BOUND_US << bucket)
}

impl LoadMeter {
    pub fn new(now: Instant) -> Self {
        Self {
            start: now,
            seconds: [Second::default(); SECONDS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn second(&mut self, now: Instant) -> &mut Second {
        let index = self.index(now);
        let slot = &mut self.seconds[(index % SECONDS as u64) as usize];
        if slot.index != index {
            *slot = Second {
                index,
                ..Second::default()
            };
        }
        slot
    }

    /// A call was answered after `latency`.
    pub fn answered(&mut self, now: Instant, latency: Duration) {
        let second = self.second(now);
        second.answered = second.answered.saturating_add(1);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        second.busy_us = second.busy_us.saturating_add(us);
        let bucket = &mut second.latency[latency_bucket(latency)];
        *bucket = bucket.saturating_add(1);
    }

    /// A caller was turned away (`Busy`).
    pub fn busy(&mut self, now: Instant) {
        let second = self.second(now);
        second.busy = second.busy.saturating_add(1);
    }

    /// The load over the last `seconds` whole seconds before `now` (the
    /// current, partial second left out), at most [`SECONDS`] - 1.
    pub fn snapshot(&self, now: Instant, seconds: usize) -> LoadSnapshot {
        let seconds = seconds.clamp(1, SECONDS - 1);
        let current = self.index(now);
        let first = current.saturating_sub(seconds as u64);
        let mut answered = 0u64;
        let mut busy = 0u64;
        let mut busy_us = 0u64;
        let mut latency = [0u64; LATENCY_BUCKETS];
        for second in &self.seconds {
            if second.index >= first && second.index < current {
                answered += u64::from(second.answered);
                busy += u64::from(second.busy);
                busy_us = busy_us.saturating_add(second.busy_us);
                for (sum, n) in latency.iter_mut().zip(second.latency) {
                    *sum += u64::from(n);
                }
            }
        }
        // Seconds the meter has existed for, when fewer than asked.
        let span = (current - first).max(1) as f64;
        let p95 = (answered > 0).then(|| {
            // The bucket that holds the 95th percentile, and within it a
            // uniform spread of its calls: linear interpolation between the
            // bucket's bounds (the bucket alone would be off by up to 2x).
            let rank = (answered * 95).div_ceil(100);
            let mut seen = 0;
            for (bucket, n) in latency.iter().enumerate() {
                if seen + n >= rank {
                    let upper = bucket_bound(bucket).as_secs_f64();
                    let lower = if bucket == 0 { 0.0 } else { upper / 2.0 };
                    let within = (rank - seen) as f64 / *n as f64;
                    return Duration::from_secs_f64(lower + (upper - lower) * within);
                }
                seen += n;
            }
            bucket_bound(LATENCY_BUCKETS - 1)
        });
        LoadSnapshot {
            calls_per_s: answered as f64 / span,
            busy_per_s: busy as f64 / span,
            concurrency: busy_us as f64 / 1e6 / span,
            p95,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_p95_over_whole_seconds() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(t0);
        // Seconds 0 to 4: 20 calls a second, 19 at 1 ms and one at 300 ms;
        // 2 callers turned away a second.
        for s in 0..5 {
            let at = t0 + Duration::from_secs(s) + Duration::from_millis(500);
            for i in 0..20 {
                let latency = if i == 0 { 300 } else { 1 };
                meter.answered(at, Duration::from_millis(latency));
            }
            meter.busy(at);
            meter.busy(at);
        }
        let now = t0 + Duration::from_millis(5_200);
        let snapshot = meter.snapshot(now, 5);
        assert_eq!(snapshot.calls_per_s, 20.0);
        assert_eq!(snapshot.busy_per_s, 2.0);
        // 19 ms + 300 ms of calls a second: 0.319 calls in flight on average.
        assert!(
            (snapshot.concurrency - 0.319).abs() < 1e-9,
            "{}",
            snapshot.concurrency
        );
        // 95% of the calls took 1 ms: in the bucket from 0.512 to 1.024 ms,
        // at the top of it (the 95th of 95 calls in it).
        let p95 = snapshot.p95.unwrap();
        assert!(
            p95 > Duration::from_micros(900) && p95 <= Duration::from_micros(1024),
            "{p95:?}"
        );
        // The slow calls are 5% of them: they show from the 96th
        // percentile on, so one more slow call per second moves p95.
        for s in 0..5 {
            let at = t0 + Duration::from_secs(s) + Duration::from_millis(600);
            meter.answered(at, Duration::from_millis(300));
        }
        let p95 = meter.snapshot(now, 5).p95.unwrap();
        assert!(
            p95 >= Duration::from_millis(262) && p95 < Duration::from_millis(600),
            "{p95:?}"
        );
    }

    #[test]
    fn old_seconds_fall_out_and_the_current_one_is_not_counted() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(t0);
        meter.answered(t0, Duration::from_millis(1));
        // In the current second: not counted yet.
        assert_eq!(meter.snapshot(t0, 5).calls_per_s, 0.0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(meter.snapshot(later, 1).calls_per_s, 1.0);
        // Ten seconds on, the ring has reused the slot: nothing left.
        let much_later = t0 + Duration::from_secs(20);
        meter.busy(much_later);
        let snapshot = meter.snapshot(much_later + Duration::from_secs(1), 9);
        assert_eq!(snapshot.calls_per_s, 0.0);
        assert_eq!(snapshot.p95, None);
        assert!((snapshot.busy_per_s - 1.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn latencies_beyond_the_last_bound_land_in_the_last_bucket() {
        assert_eq!(latency_bucket(Duration::ZERO), 0);
        assert_eq!(latency_bucket(Duration::from_micros(64)), 0);
        assert_eq!(latency_bucket(Duration::from_micros(65)), 1);
        assert_eq!(
            latency_bucket(Duration::from_secs(3600)),
            LATENCY_BUCKETS - 1
        );
        assert_eq!(
            bucket_bound(LATENCY_BUCKETS - 1),
            Duration::from_micros(64 << 21)
        );
    }
}
