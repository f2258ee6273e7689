//! Summary statistics for repeated, interleaved benchmark runs.
//!
//! Every figure in the report is the median of several runs.
//! The spread of a set of runs is `(max - min) / median`, so one slow run caused by a neighbour
//! compiling on the same cores shows up instead of being averaged away.
//! A set whose spread exceeds [`NOISY_SPREAD`] is called noisy in the output.
//!
//! Ratios between refloop and a peer are computed per run pair (run `i` of refloop against run
//! `i` of the peer, measured back to back), and the reported ratio is the median of those pair
//! ratios: slow drift of the machine affects both halves of a pair alike and cancels out.

/// The relative spread above which a set of runs is reported as noisy.
pub const NOISY_SPREAD: f64 = 0.15;

/// Repeated measurements of one quantity, in run order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    /// An empty set.
    pub fn new() -> Self {
        Samples { values: Vec::new() }
    }

    /// Adds one run's measurement.
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    /// The measurements in run order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// How many runs were recorded.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no run was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The median, or `None` for an empty set.
    ///
    /// For an even count it is the mean of the two middle values.
    pub fn median(&self) -> Option<f64> {
        median(&self.values)
    }

    /// The smallest measurement.
    pub fn min(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::min)
    }

    /// The largest measurement.
    pub fn max(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::max)
    }

    /// `(max - min) / median`, or `None` when there are fewer than two runs or the median is 0.
    pub fn spread(&self) -> Option<f64> {
        if self.values.len() < 2 {
            return None;
        }
        let med = self.median()?;
        if med == 0.0 || !med.is_finite() {
            return None;
        }
        Some((self.max()? - self.min()?) / med.abs())
    }

    /// Whether the runs disagree by more than [`NOISY_SPREAD`].
    ///
    /// A set with a single run cannot show its noise and is reported as noisy too.
    pub fn is_noisy(&self) -> bool {
        match self.spread() {
            Some(s) => s > NOISY_SPREAD,
            None => true,
        }
    }
}

/// The median of `values`, or `None` when empty.
///
/// NaN values sort last, so they can only move the median upwards and never panic the sort.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        Some(sorted[mid])
    } else {
        Some((sorted[mid - 1] + sorted[mid]) / 2.0)
    }
}

/// The ratio of two interleaved series, paired run by run.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedRatio {
    /// One ratio per run pair.
    pub pairs: Samples,
}

impl PairedRatio {
    /// Pairs `a[i] / b[i]`; extra runs on either side are ignored.
    ///
    /// When `higher_is_better` is false (times, CPU, syscalls, bytes), the ratio is still `a / b`;
    /// the caller decides what a good ratio looks like.
    pub fn of(a: &Samples, b: &Samples) -> Self {
        let mut pairs = Samples::new();
        for (x, y) in a.values().iter().zip(b.values()) {
            if *y != 0.0 {
                pairs.push(x / y);
            }
        }
        PairedRatio { pairs }
    }

    /// The median pair ratio.
    pub fn median(&self) -> Option<f64> {
        self.pairs.median()
    }
}

/// How a measured ratio compares with its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every pair ratio meets the goal.
    Met,
    /// The median meets the goal but some pairs do not: the runs are too noisy to be sure.
    MetNoisy,
    /// The median misses the goal but some pairs meet it: the runs are too noisy to be sure.
    MissedNoisy,
    /// No pair ratio meets the goal.
    Missed,
    /// There was nothing to compare.
    NoData,
}

impl Verdict {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::MetNoisy => "met (noisy)",
            Verdict::MissedNoisy => "MISSED (noisy)",
            Verdict::Missed => "MISSED",
            Verdict::NoData => "no data",
        }
    }

    /// Whether the median meets the goal.
    pub fn median_meets(self) -> bool {
        matches!(self, Verdict::Met | Verdict::MetNoisy)
    }
}

/// A goal on a ratio: at least `bound` (throughput) or at most `bound` (cost).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

impl Goal {
    /// Whether one ratio value meets the goal.
    pub fn meets(self, ratio: f64) -> bool {
        match self {
            Goal::AtLeast(b) => ratio >= b,
            Goal::AtMost(b) => ratio <= b,
        }
    }

    /// A short label such as `>= 1.20x`.
    pub fn label(self) -> String {
        match self {
            Goal::AtLeast(b) => format!(">= {b:.2}x"),
            Goal::AtMost(b) => format!("<= {b:.2}x"),
        }
    }

    /// Judges a paired ratio against this goal.
    pub fn judge(self, ratio: &PairedRatio) -> Verdict {
        let Some(med) = ratio.median() else {
            return Verdict::NoData;
        };
        let meeting = ratio
            .pairs
            .values()
            .iter()
            .filter(|r| self.meets(**r))
            .count();
        let all = ratio.pairs.len();
        // One pair cannot show how much the ratio moves between runs, so it is never certain.
        let certain = all >= 2;
        match (
            self.meets(med),
            certain && meeting == all,
            certain && meeting == 0,
        ) {
            (true, true, _) => Verdict::Met,
            (true, false, _) => Verdict::MetNoisy,
            (false, _, true) => Verdict::Missed,
            (false, _, false) => Verdict::MissedNoisy,
        }
    }
}

/// A log-linear latency histogram: 64 linear sub-buckets per power of two, so every recorded
/// value is kept within 1/64 (about 1.6%) of its true value, in constant memory.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram covering the whole `u64` range.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB as usize],
            total: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < SUB {
            return value as usize;
        }
        let magnitude = 63 - value.leading_zeros(); // >= SUB_BITS
        let shift = magnitude - SUB_BITS;
        let sub = (value >> shift) - SUB; // in 0..SUB
        ((shift as u64 + 1) * SUB + sub) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let shift = index / SUB - 1;
        let sub = index % SUB;
        (SUB + sub) << shift
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0.0 to 1.0), as the lower bound of its bucket; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::lower_bound(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(v: &[f64]) -> Samples {
        let mut s = Samples::new();
        for x in v {
            s.push(*x);
        }
        s
    }

    #[test]
    fn median_of_odd_count_is_middle_value() {
        assert_eq!(samples(&[5.0, 1.0, 3.0]).median(), Some(3.0));
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        assert_eq!(samples(&[4.0, 1.0, 3.0, 2.0]).median(), Some(2.5));
    }

    #[test]
    fn median_of_empty_set_is_none() {
        assert_eq!(Samples::new().median(), None);
    }

    #[test]
    fn median_ignores_one_outlier_that_a_mean_would_not() {
        let s = samples(&[10.0, 10.5, 9.5, 10.0, 1000.0]);
        assert_eq!(s.median(), Some(10.0));
    }

    #[test]
    fn spread_is_range_over_median() {
        let s = samples(&[90.0, 100.0, 110.0]);
        let spread = s.spread().unwrap();
        assert!((spread - 0.2).abs() < 1e-12, "{spread}");
    }

    #[test]
    fn tight_runs_are_not_noisy_and_scattered_runs_are() {
        assert!(!samples(&[100.0, 101.0, 99.0, 100.5]).is_noisy());
        assert!(samples(&[100.0, 60.0, 100.0, 100.0]).is_noisy());
    }

    #[test]
    fn a_single_run_is_reported_noisy_because_its_spread_is_unknown() {
        assert!(samples(&[100.0]).is_noisy());
    }

    #[test]
    fn paired_ratio_divides_run_by_run() {
        let a = samples(&[2.0, 4.0, 6.0]);
        let b = samples(&[1.0, 4.0, 2.0]);
        let r = PairedRatio::of(&a, &b);
        assert_eq!(r.pairs.values(), &[2.0, 1.0, 3.0]);
        assert_eq!(r.median(), Some(2.0));
    }

    #[test]
    fn paired_ratio_cancels_drift_that_shifts_both_sides() {
        // The machine slows down by 2x halfway through; refloop stays 1.5x the peer in every pair.
        let a = samples(&[150.0, 150.0, 75.0, 75.0]);
        let b = samples(&[100.0, 100.0, 50.0, 50.0]);
        let r = PairedRatio::of(&a, &b);
        assert_eq!(r.median(), Some(1.5));
        assert!(!r.pairs.is_noisy());
        // The unpaired ratio of medians would be (112.5 / 75) = 1.5 here too, but the per-side
        // sets are noisy, which the paired ratio is not.
        assert!(a.is_noisy() && b.is_noisy());
    }

    #[test]
    fn goal_verdict_distinguishes_clear_and_noisy_outcomes() {
        let goal = Goal::AtLeast(1.2);
        let all_above = PairedRatio {
            pairs: samples(&[1.3, 1.4, 1.25]),
        };
        let mixed_above = PairedRatio {
            pairs: samples(&[1.3, 1.1, 1.25]),
        };
        let mixed_below = PairedRatio {
            pairs: samples(&[1.1, 1.3, 1.15]),
        };
        let all_below = PairedRatio {
            pairs: samples(&[1.0, 1.1, 0.9]),
        };
        assert_eq!(goal.judge(&all_above), Verdict::Met);
        assert_eq!(goal.judge(&mixed_above), Verdict::MetNoisy);
        assert_eq!(goal.judge(&mixed_below), Verdict::MissedNoisy);
        assert_eq!(goal.judge(&all_below), Verdict::Missed);
        assert_eq!(
            goal.judge(&PairedRatio {
                pairs: Samples::new()
            }),
            Verdict::NoData
        );
    }

    #[test]
    fn a_single_run_pair_never_gives_a_certain_verdict() {
        let goal = Goal::AtLeast(1.2);
        assert_eq!(
            goal.judge(&PairedRatio {
                pairs: samples(&[2.0])
            }),
            Verdict::MetNoisy
        );
        assert_eq!(
            goal.judge(&PairedRatio {
                pairs: samples(&[0.5])
            }),
            Verdict::MissedNoisy
        );
    }

    #[test]
    fn at_most_goal_accepts_lower_costs() {
        let goal = Goal::AtMost(0.8);
        assert_eq!(
            goal.judge(&PairedRatio {
                pairs: samples(&[0.5, 0.7])
            }),
            Verdict::Met
        );
        assert_eq!(
            goal.judge(&PairedRatio {
                pairs: samples(&[0.9, 1.2])
            }),
            Verdict::Missed
        );
    }

    #[test]
    fn histogram_quantiles_are_within_bucket_precision_of_exact_quantiles() {
        let mut h = Histogram::new();
        let mut exact: Vec<u64> = Vec::new();
        // A deterministic, skewed set of values spanning many magnitudes.
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 40) % 1_000_000 + (x >> 60);
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let rank = ((q * exact.len() as f64).ceil() as usize).max(1);
            let truth = exact[rank - 1];
            let got = h.quantile(q).unwrap();
            assert!(got <= truth, "q={q}: {got} > {truth}");
            assert!(
                truth - got <= truth / 64 + 1,
                "q={q}: {got} too far below {truth}"
            );
        }
        assert_eq!(h.count(), 20_000);
    }

    #[test]
    fn histogram_keeps_small_values_exact_and_survives_extremes() {
        let mut h = Histogram::new();
        for v in [0, 1, 63, 64, 65, u64::MAX] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), Some(0));
        assert_eq!(h.quantile(0.5), Some(63));
        assert!(h.quantile(1.0).unwrap() >= 1 << 63);
    }

    #[test]
    fn histogram_merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1000);
        b.record(1000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(
            a.quantile(0.5),
            Some(Histogram::lower_bound(Histogram::index(1000)))
        );
    }
}
