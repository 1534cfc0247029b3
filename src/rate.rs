//! Inbound rate limits, pure: each connection's standing against its
//! [`RateLimit`], with time passed in.
//!
//! A token bucket is kept as its debt: how far ahead of the steady rate
//! the peer is, in microseconds. Each message or byte adds its share of a
//! second; time pays the debt off; a debt over the burst is over the
//! limit. One 32-bit stamp and two 32-bit debts: 12 bytes, boxed, for
//! each open connection when a limit is set.

use crate::config::RateLimit;
use crate::time::Time;

/// A connection's two buckets, messages and bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// When the debts were last brought up to date: milliseconds, low 32
    /// bits, compared by difference.
    at: u32,
    messages_us: u32,
    bytes_us: u32,
}

impl Rate {
    /// Buckets that are full at `now`: a new peer may burst at once.
    pub fn new(now: Time) -> Self {
        Rate {
            at: now.as_millis() as u32,
            messages_us: 0,
            bytes_us: 0,
        }
    }

    /// Counts `messages` and `bytes` received at `now`. False if either
    /// bucket is now past its burst.
    pub fn charge(&mut self, now: Time, limit: &RateLimit, messages: u32, bytes: usize) -> bool {
        let now_ms = now.as_millis() as u32;
        let paid = u64::from(now_ms.wrapping_sub(self.at)) * 1_000;
        self.at = now_ms;
        let burst = limit.burst.as_micros().min(u128::from(u32::MAX)) as u64;
        let owe = |debt: u32, units: u64, per_sec: u32| {
            let cost = units.saturating_mul(1_000_000) / u64::from(per_sec.max(1));
            u64::from(debt).saturating_sub(paid).saturating_add(cost)
        };
        let messages = owe(
            self.messages_us,
            u64::from(messages),
            limit.messages_per_sec,
        );
        let bytes = owe(self.bytes_us, bytes as u64, limit.bytes_per_sec);
        self.messages_us = messages.min(u64::from(u32::MAX)) as u32;
        self.bytes_us = bytes.min(u64::from(u32::MAX)) as u32;
        messages <= burst && bytes <= burst
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 10 messages a second, 2 s of burst: 20 at once, then one per 100 ms.
        let limit = RateLimit::new(10, 1 << 20, Duration::from_secs(2));
        let mut rate = Rate::new(ms(0));
        for i in 0..20 {
            assert!(
                rate.charge(ms(0), &limit, 1, 10),
                "message {i} of the burst"
            );
        }
        assert!(!rate.charge(ms(0), &limit, 1, 10), "the 21st at once");
        let mut rate = Rate::new(ms(0));
        for _ in 0..20 {
            assert!(rate.charge(ms(0), &limit, 1, 10));
        }
        // Paid off at the rate: one message each 100 ms, for as long as
        // the peer keeps to it.
        for i in 1..=100 {
            assert!(rate.charge(ms(i * 100), &limit, 1, 10), "at {} ms", i * 100);
        }
        assert!(!rate.charge(ms(10_050), &limit, 1, 10), "50 ms early");
    }

    #[test]
    fn bytes_are_limited_on_their_own() {
        let limit = RateLimit::new(1_000, 1_000, Duration::from_secs(1));
        let mut rate = Rate::new(ms(0));
        assert!(rate.charge(ms(0), &limit, 0, 1_000));
        assert!(!rate.charge(ms(0), &limit, 0, 1));
        // A quiet second pays it all back, but no more than the burst.
        let mut rate = Rate::new(ms(0));
        assert!(rate.charge(ms(0), &limit, 0, 1_000));
        assert!(rate.charge(ms(60_000), &limit, 0, 1_000));
        assert!(!rate.charge(ms(60_000), &limit, 0, 1));
    }

    #[test]
    fn peer_sized_numbers_cannot_overflow() {
        let limit = RateLimit::new(1, 1, Duration::from_secs(3_600));
        let mut rate = Rate::new(ms(u64::MAX - 5));
        assert!(!rate.charge(ms(u64::MAX), &limit, u32::MAX, usize::MAX));
        assert!(
            !rate.charge(ms(3), &limit, 0, 0),
            "9 ms across the clock's wrap pay off little"
        );
    }
}
