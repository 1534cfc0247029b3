//! A hashed timer wheel, one per worker: O(1) arm, lazy cancel.
//!
//! Each entry is `(key, tick)`. The owner remembers the tick it armed last
//! and ignores an entry that fires for any other tick, so cancelling or
//! moving a deadline costs nothing here. Deadlines past one revolution stay
//! in their slot until their own tick comes round.

use std::time::Duration;

use crate::time::Time;

const SLOTS: usize = 4096;

/// Timer entries hashed by tick into a ring of slots.
#[derive(Debug)]
pub struct TimerWheel {
    /// Milliseconds per tick.
    tick_ms: u64,
    slots: Vec<Vec<(usize, u64)>>,
    /// Every tick before this one has been expired.
    next_tick: u64,
    /// No entry is due before this tick.
    earliest: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel with the given tick length, starting at time 0.
    pub fn new(tick: Duration) -> Self {
        TimerWheel {
            // `as u64` would wrap a tick of 2^64 ms to 0, then 1.
            tick_ms: u64::try_from(tick.as_millis()).unwrap_or(u64::MAX).max(1),
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next_tick: 0,
            earliest: u64::MAX,
            len: 0,
        }
    }

    /// The tick a deadline falls in, rounded up so it never fires early.
    pub fn tick_of(&self, deadline: Time) -> u64 {
        deadline
            .as_millis()
            .div_ceil(self.tick_ms)
            .max(self.next_tick)
    }

    /// Arms a timer for `key` at `tick` (from [`TimerWheel::tick_of`]) and
    /// returns the tick.
    pub fn arm(&mut self, key: usize, tick: u64) -> u64 {
        let tick = tick.max(self.next_tick);
        self.slots[(tick % SLOTS as u64) as usize].push((key, tick));
        self.earliest = self.earliest.min(tick);
        self.len += 1;
        tick
    }

    /// When the next entry is due, if any.
    pub fn next_due(&self) -> Option<Time> {
        (self.len > 0).then(|| Time::from_millis(self.earliest.saturating_mul(self.tick_ms)))
    }

    /// Moves every entry due at `now` into `fired` as `(key, tick)`.
    pub fn expire(&mut self, now: Time, fired: &mut Vec<(usize, u64)>) {
        let now_tick = now.as_millis() / self.tick_ms;
        // Ticks saturate: at u64::MAX ms of a 1 ms tick, the last tick
        // stays the next one rather than wrapping to 0.
        if self.len == 0 || now_tick < self.earliest {
            self.next_tick = self.next_tick.max(now_tick.saturating_add(1));
            return;
        }
        let last = now_tick.min(self.next_tick.saturating_add(SLOTS as u64 - 1));
        for tick in self.next_tick..=last {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            let before = slot.len();
            slot.retain(|&(key, at)| {
                let due = at <= now_tick;
                if due {
                    fired.push((key, at));
                }
                !due
            });
            self.len -= before - slot.len();
        }
        self.next_tick = now_tick.saturating_add(1);
        self.earliest = self.find_earliest();
    }

    /// The smallest tick of any entry, walking forward one revolution.
    fn find_earliest(&self) -> u64 {
        if self.len == 0 {
            return u64::MAX;
        }
        for tick in self.next_tick..self.next_tick.saturating_add(SLOTS as u64) {
            let slot = &self.slots[(tick % SLOTS as u64) as usize];
            if slot.iter().any(|&(_, at)| at == tick) {
                return tick;
            }
        }
        self.slots
            .iter()
            .flatten()
            .map(|&(_, at)| at)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Whether no entries are armed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn fires_in_deadline_order_and_never_early() {
        let mut wheel = TimerWheel::new(Duration::from_millis(10));
        let a = wheel.arm(1, wheel.tick_of(ms(25)));
        let b = wheel.arm(2, wheel.tick_of(ms(100_000))); // beyond one revolution
        let mut fired = Vec::new();
        wheel.expire(ms(20), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(wheel.next_due(), Some(ms(30)));
        wheel.expire(ms(30), &mut fired);
        assert_eq!(fired, [(1, a)]);
        fired.clear();
        wheel.expire(ms(99_000), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(ms(100_000), &mut fired);
        assert_eq!(fired, [(2, b)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_due(), None);
    }

    #[test]
    fn the_last_millisecond_fires_without_overflow() {
        let mut wheel = TimerWheel::new(Duration::from_millis(1));
        let end = ms(u64::MAX);
        let a = wheel.arm(1, wheel.tick_of(end));
        assert_eq!(a, u64::MAX);
        assert_eq!(wheel.next_due(), Some(end));
        let mut fired = Vec::new();
        wheel.expire(ms(u64::MAX - 1), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(end, &mut fired);
        assert_eq!(fired, [(1, a)]);
        // Armed at the last tick after it was expired: fires on the next call.
        let b = wheel.arm(2, wheel.tick_of(end));
        fired.clear();
        wheel.expire(end, &mut fired);
        assert_eq!(fired, [(2, b)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_tick_past_u64_millis_is_not_cut_short() {
        // 2^64 ms: `as u64` would make it 0, then a 1 ms tick.
        let wheel = TimerWheel::new(Duration::from_millis(u64::MAX) + Duration::from_millis(1));
        assert_eq!(wheel.tick_of(ms(1000)), 1);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let mut wheel = TimerWheel::new(Duration::from_millis(10));
        let mut fired = Vec::new();
        wheel.expire(ms(1000), &mut fired);
        let tick = wheel.arm(7, wheel.tick_of(ms(0)));
        wheel.expire(ms(1011), &mut fired);
        assert_eq!(fired, [(7, tick)]);
    }
}
