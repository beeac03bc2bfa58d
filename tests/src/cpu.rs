//! The whole machine's CPU use from `/proc/stat`, for benchmarks that
//! report what a change costs.

/// (busy, total) jiffies over all CPUs since boot.
pub fn ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .expect("a cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Percent of all CPUs busy between two [`ticks`] readings.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.0 - before.0) as f64 / ((after.1 - before.1).max(1)) as f64 * 100.0
}
