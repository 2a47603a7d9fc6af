//! What one log line costs: writes `LINES` info lines shaped like the
//! per-task lifecycle lines through the scheduler's own logger
//! (`charmander::init_logging`: simple_logger to stderr, with timestamps and
//! thread names) and prints the time per line on stdout. Run it with stderr
//! to /dev/null (or a file, or a pipe) to compare:
//!
//!     cargo run --release --example logcost 2>/dev/null

use std::time::Instant;

/// Lines written per run: a 100,000-task run logs a few per task.
const LINES: u64 = 100_000;

fn main() {
    charmander::init_logging(log::LevelFilter::Info);
    let start = Instant::now();
    for n in 0..LINES {
        log::info!(
            "task launched task=stress60.{n:016x} agent=74026a55-e368-4b51-9a02-21c12b3407f7-S{} hostname=node{}",
            n % 1000,
            n % 1000
        );
    }
    let took = start.elapsed();
    println!(
        "lines={LINES} total_ms={} per_line_ns={}",
        took.as_millis(),
        took.as_nanos() / u128::from(LINES)
    );
}
