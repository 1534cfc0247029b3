//! A hashed timer wheel, one per worker: O(1) arm, lazy cancel.
//!
//! Each entry is `(key, tick)`. The owner remembers the tick it armed last
//! and ignores an entry that fires for any other tick, so cancelling or
//! moving a deadline costs nothing here. Deadlines past one revolution stay
//! in their slot until their own tick comes round.

use std::time::{Duration, Instant};

const SLOTS: usize = 4096;

/// Timer entries hashed by tick into a ring of slots.
#[derive(Debug)]
pub struct TimerWheel {
    origin: Instant,
    tick: Duration,
    slots: Vec<Vec<(usize, u64)>>,
    /// Every tick before this one has been expired.
    next_tick: u64,
    /// No entry is due before this tick.
    earliest: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel with the given tick length, starting now.
    pub fn new(tick: Duration, now: Instant) -> Self {
        TimerWheel {
            origin: now,
            tick,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next_tick: 0,
            earliest: u64::MAX,
            len: 0,
        }
    }

    /// The tick a deadline falls in, rounded up so it never fires early.
    pub fn tick_of(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        let tick = self.tick.as_nanos();
        (nanos.div_ceil(tick) as u64).max(self.next_tick)
    }

    /// Arms a timer for `key` and returns its tick.
    pub fn arm(&mut self, key: usize, deadline: Instant) -> u64 {
        let tick = self.tick_of(deadline);
        self.slots[(tick % SLOTS as u64) as usize].push((key, tick));
        self.earliest = self.earliest.min(tick);
        self.len += 1;
        tick
    }

    /// How long the poll may sleep before the next entry is due.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let due = self.origin + self.tick * self.earliest.min(u32::MAX as u64) as u32;
        Some(due.saturating_duration_since(now))
    }

    /// Moves every entry due at `now` into `fired` as `(key, tick)`.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<(usize, u64)>) {
        let now_tick =
            (now.saturating_duration_since(self.origin).as_nanos() / self.tick.as_nanos()) as u64;
        if self.len == 0 || now_tick < self.earliest {
            self.next_tick = self.next_tick.max(now_tick + 1);
            return;
        }
        let last = now_tick.min(self.next_tick + SLOTS as u64 - 1);
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
        self.next_tick = now_tick + 1;
        self.earliest = self.find_earliest();
    }

    /// The smallest tick of any entry, walking forward one revolution.
    fn find_earliest(&self) -> u64 {
        if self.len == 0 {
            return u64::MAX;
        }
        for tick in self.next_tick..self.next_tick + SLOTS as u64 {
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

    #[test]
    fn fires_in_deadline_order_and_never_early() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(Duration::from_millis(10), t0);
        let a = wheel.arm(1, t0 + Duration::from_millis(25));
        let b = wheel.arm(2, t0 + Duration::from_secs(100)); // beyond one revolution
        let mut fired = Vec::new();
        wheel.expire(t0 + Duration::from_millis(20), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(
            wheel.timeout(t0 + Duration::from_millis(20)),
            Some(Duration::from_millis(10))
        );
        wheel.expire(t0 + Duration::from_millis(30), &mut fired);
        assert_eq!(fired, [(1, a)]);
        fired.clear();
        wheel.expire(t0 + Duration::from_secs(99), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(t0 + Duration::from_secs(100), &mut fired);
        assert_eq!(fired, [(2, b)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.timeout(t0), None);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(Duration::from_millis(10), t0);
        let mut fired = Vec::new();
        wheel.expire(t0 + Duration::from_secs(1), &mut fired);
        let tick = wheel.arm(7, t0);
        wheel.expire(t0 + Duration::from_millis(1011), &mut fired);
        assert_eq!(fired, [(7, tick)]);
    }
}
