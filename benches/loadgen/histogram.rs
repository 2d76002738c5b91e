//! A log-bucketed latency histogram in the style of HdrHistogram.
//!
//! Values below `2^SUB_BITS` get a bucket each. Above that, every power of two is split into
//! `2^(SUB_BITS - 1)` equal buckets, so a bucket is never wider than 1/128 of its value: the
//! relative error of any reported quantile is below 0.8 %. Recording is an index computation
//! and an increment; the table is about 30 KiB for the whole `u64` range.

const SUB_BITS: u32 = 8;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB_COUNT / 2;
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * HALF as usize + HALF as usize;

pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < SUB_COUNT {
            return value as usize;
        }
        let msb = 63 - value.leading_zeros();
        let shift = msb - (SUB_BITS - 1);
        // `value >> shift` lies in [HALF, SUB_COUNT).
        (shift as u64 * HALF + (value >> shift)) as usize
    }

    /// The largest value that falls into bucket `index`.
    fn highest_in(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_COUNT {
            return index;
        }
        let shift = index / HALF - 1;
        let mantissa = index % HALF + HALF;
        // The top bucket's edge is 2^64 - 1: computed in u128, which cannot overflow.
        let edge = (u128::from(mantissa + 1) << shift) - 1;
        u64::try_from(edge).unwrap_or(u64::MAX)
    }

    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0 ..= 1.0): the upper edge of the bucket holding the
    /// `ceil(q * count)`-th smallest value, capped at the largest value recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::highest_in(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in (0..1_000_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= last && i < super::BUCKETS);
            assert!(Histogram::highest_in(i) >= v);
            assert!((Histogram::highest_in(i) - v) as f64 <= v as f64 / 128.0 + 1.0);
            last = i;
        }
    }
}
