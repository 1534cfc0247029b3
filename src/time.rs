//! Time as the pure core sees it: moments the caller passes in, never a
//! clock read here. A [`Time`] is a moment; a `Stamp` is a past moment
//! kept in four bytes, measured only by its distance to now.

use std::time::Duration;

/// The longest timeout a [`Config`](crate::Config) may set: connection
/// timestamps are kept as 32-bit milliseconds and compared by their
/// difference.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(1 << 31);

/// A moment, in milliseconds from an origin the caller picks (a worker
/// uses its own start). Tests make their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The moment `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This moment as a stamp, for moments that are kept.
    pub(crate) fn stamp(self) -> Stamp {
        Stamp(self.0 as u32)
    }

    /// The moment `wait` after `stamp`, a moment no later than now.
    pub(crate) fn after(self, stamp: Stamp, wait: Duration) -> Time {
        let ago = (self.0 as u32).wrapping_sub(stamp.0) as u64;
        Time(self.0.saturating_sub(ago) + wait.as_millis() as u64)
    }

    /// Whether `wait` has passed since `stamp`.
    pub(crate) fn reached(self, stamp: Stamp, wait: Duration) -> bool {
        self >= self.after(stamp, wait)
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0 + d.as_millis() as u64)
    }
}

/// A past moment's low 32 bits: half the size of a `Time` and a quarter of
/// an `Instant`. Only its distance to now is used, which is exact for
/// anything under 24 days ([`MAX_TIMEOUT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(u32);
