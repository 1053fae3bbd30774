//! Small statistics: percentiles of one run's samples, medians over rounds, and the
//! measured-or-why-not cell every table entry is.

/// One measured value, or why there is none (the message goes under the table).
pub type Cell<T> = std::result::Result<T, String>;

/// Turns an error chain into a cell's message.
pub fn cell<T>(r: anyhow::Result<T>) -> Cell<T> {
    r.map_err(|e| format!("{e:#}"))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Over rounds: nothing measured gives `None`, any failed round the failure (a median
/// that hides a failure would lie), else the median.
pub fn reduce(rounds: &[Cell<f64>]) -> Option<Cell<f64>> {
    if rounds.is_empty() {
        return None;
    }
    if let Some(Err(e)) = rounds.iter().find(|c| c.is_err()) {
        return Some(Err(e.clone()));
    }
    Some(Ok(median(
        rounds.iter().filter_map(|c| c.clone().ok()).collect(),
    )))
}

/// Percentiles of durations in nanoseconds, as microseconds: `pct(&sorted, 0.99)`.
/// `sorted` must be sorted and non-empty.
pub fn pct_us(sorted: &[u64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

pub fn mean_us(samples: &[u64]) -> f64 {
    samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64 / 1000.0
}
