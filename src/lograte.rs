//! Rate limits for repeated log lines of one kind, so an outage logs one line
//! per `LOG_WINDOW` with a count of what it left out instead of a line per
//! failed call (`mesos call failed call=ACKNOWLEDGE … (3,979 more in the last
//! 10 s)`).
//!
//! Pure: the time is an argument, so the tests drive it with a fake clock.
//! Each warning site owns one `RateLimit` for its kind; the thread that logs
//! owns it too, so there is no shared state.

use std::time::{Duration, Instant};

/// At most one line of a kind per window; the next one says how many were left out.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// One kind of warning: whether the next occurrence is logged, and how many
/// were left out since the last logged one.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    /// When the last logged line went out.
    logged_at: Option<Instant>,
    /// Occurrences left out since then.
    left_out: u64,
}

impl RateLimit {
    pub fn new(window: Duration) -> RateLimit {
        RateLimit {
            window,
            logged_at: None,
            left_out: 0,
        }
    }

    /// Counts one occurrence at `now`. `Some(suffix)` when it is to be
    /// logged, with `suffix` appended to the line: empty, or
    /// ` (N more in the last 10 s)` for those left out since the last line.
    /// `None`: leave it out (it is counted).
    pub fn admit(&mut self, now: Instant) -> Option<String> {
        if let Some(logged_at) = self.logged_at {
            if now.saturating_duration_since(logged_at) < self.window {
                self.left_out += 1;
                return None;
            }
        }
        let suffix = left_out_suffix(self.left_out, self.window);
        self.logged_at = Some(now);
        self.left_out = 0;
        Some(suffix)
    }

    /// The occurrences left out since the last logged line, and starts
    /// afresh: the next occurrence is logged at once. For a line that ends
    /// an outage (`… delivered again`), so its count is not lost.
    pub fn take_left_out(&mut self) -> u64 {
        self.logged_at = None;
        std::mem::take(&mut self.left_out)
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::new(LOG_WINDOW)
    }
}

/// ` (3,979 more in the last 10 s)`, or empty for none.
fn left_out_suffix(left_out: u64, window: Duration) -> String {
    if left_out == 0 {
        return String::new();
    }
    format!(
        " ({} more in the last {} s)",
        with_thousands(left_out),
        window.as_secs()
    )
}

/// 3979 → `3,979`.
pub fn with_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays occurrences at the given offsets (ms) and renders what was
    /// logged: one `t=<ms><suffix>` per logged line.
    #[track_caller]
    fn check(offsets_ms: &[u64], expected: &[&str]) {
        let start = Instant::now();
        let mut limit = RateLimit::new(LOG_WINDOW);
        let logged: Vec<String> = offsets_ms
            .iter()
            .filter_map(|&ms| {
                let suffix = limit.admit(start + Duration::from_millis(ms))?;
                Some(format!("t={ms}{suffix}"))
            })
            .collect();
        assert_eq!(logged, expected);
    }

    #[test]
    fn repeated_lines_are_counted_and_logged_once_per_window() {
        check(&[0], &["t=0"]);
        check(&[0, 1, 2, 9_999], &["t=0"]);
        check(
            &[0, 1, 2, 10_000, 10_001],
            &["t=0", "t=10000 (2 more in the last 10 s)"],
        );
        // A quiet spell: the next line goes out at once, with the count.
        check(
            &[0, 5, 60_000, 60_001, 70_001],
            &[
                "t=0",
                "t=60000 (1 more in the last 10 s)",
                "t=70001 (1 more in the last 10 s)",
            ],
        );
        let many: Vec<u64> = (0..=3_980).collect();
        check(&many, &["t=0"]);
        let mut many: Vec<u64> = (0..3_980).collect();
        many.push(10_000);
        check(&many, &["t=0", "t=10000 (3,979 more in the last 10 s)"]);
    }

    #[test]
    fn an_outage_end_takes_the_count_and_starts_afresh() {
        let start = Instant::now();
        let mut limit = RateLimit::default();
        assert_eq!(limit.admit(start).as_deref(), Some(""));
        assert_eq!(limit.admit(start), None);
        assert_eq!(limit.admit(start), None);
        assert_eq!(limit.take_left_out(), 2);
        assert_eq!(limit.admit(start).as_deref(), Some(""));
    }

    #[test]
    fn thousands_are_separated() {
        let check = |n: u64, expected: &str| assert_eq!(with_thousands(n), expected);
        check(0, "0");
        check(999, "999");
        check(1_000, "1,000");
        check(3_979, "3,979");
        check(1_234_567, "1,234,567");
    }
}
