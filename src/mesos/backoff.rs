//! Capped exponential backoff with full jitter, for every retry loop that
//! talks to a peer (resubscription, calls, the Redis bridge). Pure apart from
//! its random seed; the caller does the waiting.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Capped exponential backoff with jitter: each delay is drawn from
/// [current/2, current], then `current` doubles up to the cap.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// A delay in [current/2, current], then doubles `current` up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        self.draws += 1;
        let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
        let delay = self.current.mul_f64(0.5 + fraction / 2.0);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let caps = [100, 200, 400, 800, 1000, 1000];
        for cap in caps {
            let delay = backoff.next_delay();
            assert!(
                delay <= Duration::from_millis(cap) && delay >= Duration::from_millis(cap / 2),
                "{delay:?} for cap {cap}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
