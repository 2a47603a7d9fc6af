//! Gives the heap pages freed after a large turn back to the kernel,
//! through glibc's `malloc_trim(0)`, and holds glibc to `MALLOC_ARENAS`
//! heaps (`mallopt`): std has no API for either, and two `extern`
//! declarations are less to audit than a crate. With `rlimit` and
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
//! `Trim` decides when: `scheduler::run` reports each large turn (at least
//! `LARGE_TURN_ITEMS` list entries built, calls and records; a page of a
//! long list builds up to 10,000, a list answered from kept entries none)
//! and trims on its tick `TRIM_SOON` after the first large turn since the
//! last trim (once the worker is likely done writing the list; so long
//! lists polled back to back are trimmed every `TRIM_SOON` or so, not only
//! when they stop), and once more `TRIM_LATE` after the last one, for a
//! slow reader.
//! A trim takes the state thread about 10-15 ms at 100k tasks.

use std::time::{Duration, Instant};

/// glibc heaps (arenas) at most. glibc's default is eight per core, and a
/// heap whose few live chunks sit among freed ones keeps its pages, which
/// no trim gives back; every thread that allocates may get one. After 40
/// lists of a held 100k lab RSS settled at 197.6 MiB with the default and
/// at 170.3 and 175.6 MiB with two heaps; the lists took 27.4 s against
/// 27.6 and 30.5. The threads contend for the two heaps' locks when they
/// allocate at once, which costs CPU: in three 10k bursts each the
/// default made 88,000-94,000 futex calls against 108,000-139,000 with
/// two heaps (the scheduler's CPU 2.38-2.85 against 2.52-3.21 s, within
/// the VM's noise; 2.53 against 2.54 s in an earlier round), and four
/// heaps sat between (107,000-119,000) with RSS settled at 175.7 MiB
/// against 165.7 and a peak during lists of 274 against 205 MiB. The RSS
/// target decided it. HTTP workers write long lists without an
/// allocation per entry (`api::dto::append_task_entry`).
pub(crate) const MALLOC_ARENAS: i32 = 2;

/// A turn with at least this many list entries built, calls and records is large.
pub(crate) const LARGE_TURN_ITEMS: usize = 10_000;

/// A trim follows the first large turn since the last trim this long after it.
pub(crate) const TRIM_SOON: Duration = Duration::from_secs(2);

/// A trim follows the last large turn this long after it.
pub(crate) const TRIM_LATE: Duration = Duration::from_secs(30);

/// When the next trims are due.
#[derive(Debug, Default)]
pub(crate) struct Trim {
    /// `TRIM_SOON` after the first large turn since the last trim.
    soon: Option<Instant>,
    /// `TRIM_LATE` after the last large turn.
    late: Option<Instant>,
}

impl Trim {
    /// A turn of `items` (list entries built, calls, records) ended at `now`.
    pub fn turn(&mut self, items: usize, now: Instant) {
        if items >= LARGE_TURN_ITEMS {
            self.soon.get_or_insert(now + TRIM_SOON);
            self.late = Some(now + TRIM_LATE);
        }
    }

    /// Trims if one is due at `now`; true if it did.
    pub fn tick(&mut self, now: Instant) -> bool {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if !due(self.soon) && !due(self.late) {
            return false;
        }
        self.soon = None;
        if due(self.late) {
            self.late = None;
        }
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

/// Limits glibc to `MALLOC_ARENAS` heaps; called before the threads start,
/// so that they all allocate from those. False if glibc refused.
#[cfg(all(linux_ffi, target_env = "gnu"))]
pub(crate) fn limit_arenas() -> bool {
    /// glibc's `M_ARENA_MAX` (malloc.h).
    const M_ARENA_MAX: std::ffi::c_int = -8;
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: `mallopt` takes two integers and only sets an allocator
    // parameter; it is thread-safe (it takes the main heap's lock).
    unsafe { mallopt(M_ARENA_MAX, MALLOC_ARENAS) == 1 }
}

/// Elsewhere there are no glibc heaps to limit.
#[cfg(not(all(linux_ffi, target_env = "gnu")))]
pub(crate) fn limit_arenas() -> bool {
    true
}

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
        check(&[(5, LARGE_TURN_ITEMS), (20, 50_000)], &ticks, &[7, 22, 50]);
        check(&[(5, 50_000), (90, 50_000)], &ticks, &[7, 35, 92]);
        // Large turns back to back: a trim every `TRIM_SOON` or so, not
        // only once they stop, and the late one after the last.
        let polls: Vec<(u64, usize)> = (10..20).map(|s| (s, 100_000)).collect();
        check(&polls, &ticks, &[12, 14, 16, 18, 20, 49]);
    }
}
