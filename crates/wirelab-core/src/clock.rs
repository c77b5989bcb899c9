//! The monotonic clock every message is stamped with.
//!
//! `CLOCK_MONOTONIC` is shared by all processes on one host (network namespaces and containers
//! included), so a server's send stamp and a client's receive time on the same host give a valid
//! one-way delay. Across hosts only round-trip figures are meaningful.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on the host's monotonic clock.
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(b >= a);
    }
}
