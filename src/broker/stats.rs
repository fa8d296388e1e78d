//! The broker's figures for operators: counters since the broker started, rates over the last
//! minute, and the fan-out latency histogram. Pure bookkeeping; the caller passes the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proto::control::{Counted, Histogram};

/// Seconds of history behind the per-second rates.
const RATE_WINDOW: usize = 60;

/// Upper bounds of the latency buckets, in seconds: 50 µs to 1 s.
pub const LATENCY_BOUNDS: [f64; 10] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0];

#[derive(Debug)]
pub struct Stats {
    pub messages: u64,
    pub deliveries: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    drops: BTreeMap<&'static str, u64>,
    /// Messages and deliveries per second for the last [`RATE_WINDOW`] seconds, newest last,
    /// with the second the newest slot counts.
    per_second: Vec<(u64, u64)>,
    current_second: u64,
    started: Instant,
    latency_counts: [u64; LATENCY_BOUNDS.len() + 1],
    latency_sum: f64,
}

impl Stats {
    pub fn new(now: Instant) -> Stats {
        Stats {
            messages: 0,
            deliveries: 0,
            bytes_received: 0,
            bytes_sent: 0,
            drops: BTreeMap::new(),
            per_second: vec![(0, 0); RATE_WINDOW],
            current_second: 0,
            started: now,
            latency_counts: [0; LATENCY_BOUNDS.len() + 1],
            latency_sum: 0.0,
        }
    }

    /// Moves the rate window forward to `now`, emptying the seconds that passed.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.started).as_secs();
        let passed = second.saturating_sub(self.current_second).min(RATE_WINDOW as u64) as usize;
        if passed > 0 {
            self.per_second.rotate_left(passed);
            let len = self.per_second.len();
            self.per_second[len - passed..].fill((0, 0));
            self.current_second = second;
        }
    }

    /// One chat line accepted and copied to `deliveries` recipients.
    pub fn message(&mut self, deliveries: u64, now: Instant) {
        self.advance(now);
        self.messages += 1;
        self.deliveries += deliveries;
        if let Some(slot) = self.per_second.last_mut() {
            slot.0 += 1;
            slot.1 += deliveries;
        }
    }

    pub fn drop_for(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_default() += 1;
    }

    pub fn latency(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|&bound| seconds <= bound);
        self.latency_counts[bucket.unwrap_or(LATENCY_BOUNDS.len())] += 1;
        self.latency_sum += seconds;
    }

    /// Messages and deliveries per second over the last minute (or since start, if shorter).
    /// The current second is left out: it is not over yet.
    pub fn rates(&mut self, now: Instant) -> (f64, f64) {
        self.advance(now);
        let complete = &self.per_second[..RATE_WINDOW - 1];
        let seconds = (self.current_second as usize).clamp(1, RATE_WINDOW - 1);
        let (messages, deliveries) =
            complete.iter().fold((0, 0), |(m, d), &(sm, sd)| (m + sm, d + sd));
        (messages as f64 / seconds as f64, deliveries as f64 / seconds as f64)
    }

    pub fn drops(&self) -> Vec<Counted> {
        self.drops
            .iter()
            .map(|(reason, &count)| Counted { reason: reason.to_string(), count })
            .collect()
    }

    pub fn histogram(&self) -> Histogram {
        Histogram {
            bounds: LATENCY_BOUNDS.to_vec(),
            counts: self.latency_counts.to_vec(),
            sum_seconds: self.latency_sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_complete_minute() {
        let start = Instant::now();
        let mut stats = Stats::new(start);
        for second in 0..10 {
            stats.message(5, start + Duration::from_secs(second));
        }
        let (messages, deliveries) = stats.rates(start + Duration::from_secs(10));
        assert!((messages - 1.0).abs() < 1e-9, "{messages}");
        assert!((deliveries - 5.0).abs() < 1e-9, "{deliveries}");
        // Two minutes later the window is empty again; the totals stay.
        let (messages, _) = stats.rates(start + Duration::from_secs(130));
        assert_eq!(messages, 0.0);
        assert_eq!((stats.messages, stats.deliveries), (10, 50));
    }

    #[test]
    fn latencies_land_in_their_buckets() {
        let mut stats = Stats::new(Instant::now());
        stats.latency(Duration::from_micros(10));
        stats.latency(Duration::from_micros(700));
        stats.latency(Duration::from_secs(3));
        let histogram = stats.histogram();
        assert_eq!(histogram.counts.len(), histogram.bounds.len() + 1);
        assert_eq!(histogram.counts[0], 1);
        assert_eq!(histogram.counts[4], 1, "700 µs is within 1 ms");
        assert_eq!(histogram.counts[10], 1, "3 s is above the last bound");
        assert!((histogram.sum_seconds - 3.00071).abs() < 1e-9);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut stats = Stats::new(Instant::now());
        stats.drop_for("too_slow");
        stats.drop_for("too_slow");
        stats.drop_for("bad_frame");
        let drops = stats.drops();
        assert_eq!(drops.len(), 2);
        assert_eq!(drops[1], Counted { reason: "too_slow".into(), count: 2 });
    }
}
