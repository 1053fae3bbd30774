//! The random source every probabilistic decision draws from (weights, fault and mirror
//! percentages, RANDOM and LEAST_REQUEST balancing). Injected, so tests seed it and measure
//! the statistics; a proxy keeps one `fastrand::Rng` per worker.

/// A source of uniformly distributed 64-bit values.
pub trait Random {
    fn next_u64(&mut self) -> u64;
}

impl Random for fastrand::Rng {
    fn next_u64(&mut self) -> u64 {
        self.u64(..)
    }
}

/// A uniform value in `0..n` (`n` > 0), by multiply-shift (no modulo bias worth the name
/// at these sizes).
pub fn below(rng: &mut dyn Random, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// True with probability `percent` / 100 (clamped to 0..=100); 100 never draws.
pub fn chance(rng: &mut dyn Random, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 || percent.is_nan() {
        return false;
    }
    // Millionths of a percent: Istio's percentages have at most 6 useful decimals here.
    let threshold = (percent * 1_000_000.0) as u64;
    below(rng, 100_000_000) < threshold
}
