//! The wall clock, as every event and stat-cache entry records it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall time in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i128)
        .unwrap_or(0)
}

/// Wall time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    (now_ns() / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_follow_nanoseconds() {
        let before = now_ns();
        let ms = now_ms();
        let after = now_ns();
        assert!(before / 1_000_000 <= i128::from(ms));
        assert!(i128::from(ms) <= after / 1_000_000);
        // Past 2020-01-01, and not in the far future.
        assert!(ms > 1_577_836_800_000 && ms < 32_503_680_000_000);
    }
}
