//! Gives the heap pages freed after a large turn back to the kernel,
//! through glibc's `malloc_trim(0)`: std has no API for it, and one
//! `extern` declaration is less to audit than a crate. With `rlimit` and
//! `signals`, this is the crate's only `unsafe` code (`lib.rs` allows it
//! for these three modules).
//!
//! Why: glibc keeps the pages it frees inside its heaps (one per thread
//! that allocates, the HTTP workers' included) and returns only the free
//! tail of a heap. A list of 100,000 tasks renders about 100 MB of JSON,
//! freed once it is written; an OFFERS turn that launches thousands of
//! tasks holds every launch and record at once. Without a trim the process
//! keeps those pages for good (`examples/state_memory.rs`: 360 MiB RSS
//! after a list of 100k for 210 MiB of live heap; 234 MiB after the trim,
//! which took 14 ms).
//!
//! `Trim` decides when: `scheduler::run` reports each large turn (a list
//! or turn of at least `LARGE_TURN_ITEMS` entries, calls and records) and
//! trims on its tick, `TRIM_DELAYS` after the last one: once the worker is
//! likely done writing the list, and once more for a slow reader.

use std::time::{Duration, Instant};

/// A turn with at least this many listed tasks, calls and records is large.
pub(crate) const LARGE_TURN_ITEMS: usize = 10_000;

/// Trims after the last large turn, each this long after it.
pub(crate) const TRIM_DELAYS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(30)];

/// When the next trims are due.
#[derive(Debug, Default)]
pub(crate) struct Trim {
    /// The last large turn, and how many of `TRIM_DELAYS` have run since.
    last_large: Option<(Instant, usize)>,
}

impl Trim {
    /// A turn of `items` (listed tasks, calls, records) ended at `now`.
    pub fn turn(&mut self, items: usize, now: Instant) {
        if items >= LARGE_TURN_ITEMS {
            self.last_large = Some((now, 0));
        }
    }

    /// Trims if one is due at `now`; true if it did.
    pub fn tick(&mut self, now: Instant) -> bool {
        let Some((at, done)) = self.last_large else {
            return false;
        };
        if now < at + TRIM_DELAYS[done] {
            return false;
        }
        self.last_large = (done + 1 < TRIM_DELAYS.len()).then_some((at, done + 1));
        release_free_memory();
        true
    }
}

/// Returns every free page of every heap to the kernel.
#[cfg(all(linux_ffi, target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes a byte count and touches only memory the
    // allocator owns and has marked free; it is thread-safe (it takes each
    // arena's lock in turn).
    unsafe {
        malloc_trim(0);
    }
}

/// Elsewhere (musl, other systems) there is no `malloc_trim`: nothing to do.
#[cfg(not(all(linux_ffi, target_env = "gnu")))]
pub(crate) fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trims due after a sequence of turns, as (seconds after the start,
    /// items) for each turn and the seconds at which ticks come.
    fn check(turns: &[(u64, usize)], ticks: &[u64], expected: &[u64]) {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut trim = Trim::default();
        let mut events: Vec<(u64, Option<usize>)> = turns
            .iter()
            .map(|&(s, items)| (s, Some(items)))
            .chain(ticks.iter().map(|&s| (s, None)))
            .collect();
        events.sort();
        let mut trimmed = Vec::new();
        for (s, event) in events {
            match event {
                Some(items) => trim.turn(items, at(s)),
                None if trim.tick(at(s)) => trimmed.push(s),
                None => {}
            }
        }
        assert_eq!(trimmed, expected, "turns {turns:?}");
    }

    #[test]
    fn trims_follow_large_turns_only() {
        let ticks: Vec<u64> = (0..100).collect();
        check(&[], &ticks, &[]);
        check(&[(5, LARGE_TURN_ITEMS - 1)], &ticks, &[]);
        check(&[(5, LARGE_TURN_ITEMS)], &ticks, &[7, 35]);
        // A large turn while trims are due starts them over.
        check(&[(5, LARGE_TURN_ITEMS), (20, 50_000)], &ticks, &[7, 22, 50]);
        check(&[(5, 50_000), (90, 50_000)], &ticks, &[7, 35, 92]);
    }
}
