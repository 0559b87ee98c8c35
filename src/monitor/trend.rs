//! Memory-leak suspicion from an agent's RSS series.
//!
//! Pure: the caller passes the time of each reading, so the detector never reads a clock
//! and tests run on a fake one.
//!
//! What counts as a leak: memory that keeps growing at a steady rate over the whole
//! window. A least-squares line is fitted through the readings of the last `window`; the
//! agent is suspected when the line rises by at least `min_growth` of its start value
//! over one window *and* the line explains the readings well (R² ≥ 0.8).
//!
//! The R² bar is what tells a leak from a one-off allocation (a cache filled once, a big
//! file read): a single step up and then flat is a poor fit for a line. For a step at
//! fraction `p` of the window the best R² a line can reach is `3p(1-p)`, at most 0.75
//! (slightly above with very few samples, still below 0.8 from 6 samples on), so one step
//! is never suspected however large it is. A staircase of many steps, which is what a leak
//! that allocates in chunks looks like, does fit a line and is suspected.
//!
//! Invariant: only readings no older than `window` before the newest one are kept, so the
//! memory held is the number of readings per window (window / sampling interval).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::Monitor;

/// The readings must span this fraction of the window before anything is judged: a line
/// through the first minute of a ten-minute window says little about the ten minutes.
const MIN_COVERAGE: f64 = 0.8;
/// Fewer readings make a good R² too easy to get by chance.
const MIN_SAMPLES: usize = 6;
const MIN_R_SQUARED: f64 = 0.8;

/// Why an agent is suspected of leaking memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakSuspicion {
    /// Slope of the fitted line.
    pub slope_bytes_per_sec: f64,
    /// Rise of the fitted line over one whole window, as a fraction of the line's value at
    /// the oldest reading (0.2 = 20%).
    pub growth: f64,
    /// How well the line fits the readings, 0 to 1.
    pub r_squared: f64,
    /// Readings in the window.
    pub samples: usize,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    rss_bytes: u64,
}

/// Watches one agent's RSS readings for a steady rise.
#[derive(Clone, Debug)]
pub struct LeakDetector {
    window: Duration,
    min_growth: f64,
    samples: VecDeque<Sample>,
}

impl LeakDetector {
    /// `min_growth` is a fraction of one (0.2 = 20%), as in [`crate::layout::Percent`].
    pub fn new(window: Duration, min_growth: f64) -> Self {
        Self {
            window,
            min_growth,
            samples: VecDeque::new(),
        }
    }

    /// The detector the layout's `monitor.leak` asks for.
    pub fn from_monitor(monitor: &Monitor) -> Self {
        Self::new(monitor.leak_window.0, monitor.leak_min_growth.0)
    }

    /// Records one reading and forgets those older than the window.
    ///
    /// A reading older than the newest one is ignored: it can only come from a stale
    /// measurement, and out-of-order points would make "the oldest reading" ambiguous.
    pub fn observe(&mut self, at: Instant, rss_bytes: u64) {
        if self.samples.back().is_some_and(|last| at < last.at) {
            return;
        }
        self.samples.push_back(Sample { at, rss_bytes });
        while self
            .samples
            .front()
            .is_some_and(|first| at.duration_since(first.at) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Forgets every reading: after a restart the new process's memory has nothing to do
    /// with the old one's, and a fit across the drop would be meaningless.
    pub fn reset(&mut self) {
        self.samples.clear();
    }

    /// The suspicion, if the readings in the window show a steady rise; see the module
    /// docs for the rule.
    pub fn suspicion(&self) -> Option<LeakSuspicion> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let n = self.samples.len();
        let window_secs = self.window.as_secs_f64();
        let span_secs = last.at.duration_since(first.at).as_secs_f64();
        if n < MIN_SAMPLES || window_secs <= 0.0 || span_secs < MIN_COVERAGE * window_secs {
            return None;
        }
        let fit = Fit::of(self.samples.iter().map(|s| {
            (
                s.at.duration_since(first.at).as_secs_f64(),
                s.rss_bytes as f64,
            )
        }))?;
        if fit.slope <= 0.0 {
            return None;
        }
        let start = fit.value_at(0.0);
        // A line that starts at or below zero bytes has no meaningful relative growth; a
        // live process never has zero RSS, so this only happens with nonsense readings.
        if start <= 0.0 {
            return None;
        }
        let growth = fit.slope * window_secs / start;
        (growth >= self.min_growth && fit.r_squared >= MIN_R_SQUARED).then_some(LeakSuspicion {
            slope_bytes_per_sec: fit.slope,
            growth,
            r_squared: fit.r_squared,
            samples: n,
        })
    }
}

/// A least-squares line `y = mean_y + slope * (x - mean_x)`.
struct Fit {
    mean_x: f64,
    mean_y: f64,
    slope: f64,
    r_squared: f64,
}

impl Fit {
    /// `None` when the points do not determine a line (all at one time) or are perfectly
    /// flat (R² is undefined, and flat is no leak anyway).
    fn of(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<Self> {
        let (mut n, mut sum_x, mut sum_y) = (0.0, 0.0, 0.0);
        for (x, y) in points.clone() {
            n += 1.0;
            sum_x += x;
            sum_y += y;
        }
        if n == 0.0 {
            return None;
        }
        let (mean_x, mean_y) = (sum_x / n, sum_y / n);
        // Centred sums: RSS values are around 1e9, and raw sums of squares would lose the
        // small variations we are looking for to rounding.
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for (x, y) in points {
            let (dx, dy) = (x - mean_x, y - mean_y);
            sxx += dx * dx;
            sxy += dx * dy;
            syy += dy * dy;
        }
        if sxx <= 0.0 || syy <= 0.0 {
            return None;
        }
        Some(Self {
            mean_x,
            mean_y,
            slope: sxy / sxx,
            r_squared: (sxy * sxy) / (sxx * syy),
        })
    }

    fn value_at(&self, x: f64) -> f64 {
        self.mean_y + self.slope * (x - self.mean_x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const WINDOW: Duration = Duration::from_secs(600);

    fn detector() -> LeakDetector {
        LeakDetector::new(WINDOW, 0.2)
    }

    /// Feeds `values` as readings `every` apart, starting at `t0`; returns the last time.
    fn feed(d: &mut LeakDetector, t0: Instant, every: Duration, values: &[f64]) -> Instant {
        let mut at = t0;
        for (i, v) in values.iter().enumerate() {
            at = t0 + every * i as u32;
            d.observe(at, *v as u64);
        }
        at
    }

    /// Small deterministic noise in [-1, 1], so tests need no RNG.
    fn wobble(i: usize) -> f64 {
        ((i * 7919 % 200) as f64 / 100.0) - 1.0
    }

    #[test]
    fn steady_growth_is_suspected() {
        let mut d = detector();
        // 500 MiB rising 30% over the window, one reading every 10 s.
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB * (1.0 + 0.005 * i as f64))
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        let s = d.suspicion().expect("a steady rise is a leak");
        assert!((s.growth - 0.3).abs() < 0.01, "growth {}", s.growth);
        assert!(s.r_squared > 0.99);
        assert_eq!(s.samples, 61);
        assert!((s.slope_bytes_per_sec - 500.0 * MIB * 0.005 / 10.0).abs() < 1.0);
    }

    #[test]
    fn steady_growth_with_noise_is_suspected() {
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB * (1.0 + 0.005 * i as f64 + 0.02 * wobble(i)))
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        let s = d.suspicion().expect("noise does not hide a steady rise");
        assert!(s.r_squared >= 0.8 && s.growth >= 0.2, "{s:?}");
    }

    #[test]
    fn noisy_flat_series_is_not_suspected() {
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB * (1.0 + 0.05 * wobble(i)))
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn one_step_then_flat_is_not_suspected() {
        // A one-off allocation doubling memory at any point of the window: big growth, but
        // not a line.
        for step_at in [10, 20, 30, 40, 50] {
            let mut d = detector();
            let values: Vec<f64> = (0..=60)
                .map(|i| {
                    if i < step_at {
                        500.0 * MIB
                    } else {
                        1000.0 * MIB
                    }
                })
                .collect();
            feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
            assert_eq!(d.suspicion(), None, "step at reading {step_at}");
        }
    }

    #[test]
    fn one_step_with_few_samples_is_not_suspected() {
        let mut d = detector();
        let values = [500.0, 500.0, 500.0, 900.0, 900.0, 900.0].map(|v| v * MIB);
        feed(&mut d, Instant::now(), Duration::from_secs(120), &values);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn staircase_of_many_steps_is_suspected() {
        // Growth in chunks, as an allocator handing out arenas would show it.
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB + (i / 6) as f64 * 25.0 * MIB)
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert!(d.suspicion().is_some());
    }

    #[test]
    fn not_suspected_before_the_window_is_covered() {
        let mut d = detector();
        // Steep rise, but only over 70% of the window.
        let values: Vec<f64> = (0..=42)
            .map(|i| 500.0 * MIB * (1.0 + 0.02 * i as f64))
            .collect();
        let t0 = Instant::now();
        let last = feed(&mut d, t0, Duration::from_secs(10), &values);
        assert_eq!(d.suspicion(), None);
        // Reaching 80% coverage is enough.
        d.observe(last + Duration::from_secs(70), (500.0 * MIB * 1.98) as u64);
        assert!(d.suspicion().is_some());
    }

    #[test]
    fn not_suspected_with_too_few_samples() {
        let mut d = detector();
        let values = [100.0, 200.0, 300.0, 400.0, 500.0].map(|v| v * MIB);
        feed(&mut d, Instant::now(), Duration::from_secs(150), &values);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn shrinking_memory_is_not_suspected() {
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 900.0 * MIB - i as f64 * 5.0 * MIB)
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn growth_below_the_threshold_is_not_suspected() {
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB * (1.0 + 0.0015 * i as f64))
            .collect();
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn old_readings_leave_the_window() {
        let mut d = detector();
        // A rise long ago, then a flat hour: only the flat part is judged.
        let mut values: Vec<f64> = (0..=60)
            .map(|i| 100.0 * MIB * (1.0 + 0.05 * i as f64))
            .collect();
        values.extend((0..360).map(|i| 400.0 * MIB * (1.0 + 0.01 * wobble(i))));
        feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert_eq!(d.suspicion(), None);
        assert!(d.samples.len() <= 61);
    }

    #[test]
    fn reset_forgets_the_series() {
        let mut d = detector();
        let values: Vec<f64> = (0..=60)
            .map(|i| 500.0 * MIB * (1.0 + 0.01 * i as f64))
            .collect();
        let last = feed(&mut d, Instant::now(), Duration::from_secs(10), &values);
        assert!(d.suspicion().is_some());
        d.reset();
        d.observe(last + Duration::from_secs(10), (100.0 * MIB) as u64);
        assert_eq!(d.suspicion(), None);
    }

    #[test]
    fn stale_readings_are_ignored() {
        let mut d = detector();
        let t0 = Instant::now() + Duration::from_secs(1000);
        d.observe(t0, 100);
        d.observe(t0 - Duration::from_secs(5), 999);
        assert_eq!(d.samples.len(), 1);
    }

    proptest! {
        #[test]
        fn noisy_flat_series_is_never_suspected(
            base_mib in 10.0f64..16_384.0,
            noise in prop::collection::vec(-0.05f64..0.05, MIN_SAMPLES..200),
        ) {
            let mut d = detector();
            // Readings evenly spread over the whole window, each within ±5% of the base.
            let every = WINDOW / (noise.len() as u32 - 1);
            let values: Vec<f64> = noise.iter().map(|e| base_mib * MIB * (1.0 + e)).collect();
            feed(&mut d, Instant::now(), every, &values);
            prop_assert_eq!(d.suspicion(), None);
        }
    }
}
