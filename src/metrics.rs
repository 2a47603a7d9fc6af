//! `GET /metrics`: counters and histograms in the Prometheus text exposition
//! format 0.0.4, written by hand.
//!
//! `Metrics` is one struct of atomics shared as `Arc<Metrics>`. Each thread
//! counts what it sees itself, with relaxed atomic increments and no lock: the
//! state thread (`scheduler::run`: offers, launches, status updates, the
//! subscription, loop turns, submit-to-RUNNING latency), the `mesos-caller`
//! (calls by type and result), the `journal` (commit time; with the store's
//! `compactor`, compactions by result and their time), the `http-N`
//! workers (requests by route and status) and the `redis-bridge` (cycles).
//! A scrape reads the atomics from the HTTP worker that serves it
//! (`Metrics::render`), so it never waits on a thread that counts; only the
//! task counts come from the state thread, as an ordinary read.
//!
//! The renderer (`Text`) is pure: families with `# HELP` and `# TYPE`, label
//! values escaped, histograms as cumulative `_bucket{le=...}` lines ending in
//! `+Inf`, then `_sum` and `_count`. Process figures come from `/proc`
//! (`Process::read`); off Linux they are left out.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::mesos::client::CallError;
use crate::scheduler::model::TaskState;
use crate::scheduler::{Call, MesosEvent};

/// The `Content-Type` of the exposition format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of a state-loop turn: well under a millisecond
/// normally; `scheduler::SLOW_TURN` (0.2 s) is a bound, so the slow turns
/// the log warns about can be counted.
pub const TURN_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
];

/// Upper bounds (seconds) of one journal commit (write and fsync of a group).
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) of one compaction of the state files: 0.2-0.3 s
/// at 100k tasks (a 40 MB snapshot), more on a slow disk.
pub const COMPACTION_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The `result` label of `charmander_journal_compactions_total`.
const COMPACTION_RESULTS: [&str; 2] = ["ok", "failed"];

/// Upper bounds (seconds) of a REST request, up to `api::COMMIT_WAIT` (30 s).
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) from a task's acceptance to its first TASK_RUNNING:
/// an offer round, the launch and the container start (an image pull may
/// take minutes).
pub const START_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every call type, as `Call::name` says it (the `call` label).
pub const CALL_NAMES: [&str; 8] = [
    "ACCEPT",
    "DECLINE",
    "KILL",
    "ACKNOWLEDGE",
    "RECONCILE",
    "SUPPRESS",
    "REVIVE",
    "TEARDOWN",
];

/// How one attempt of a call ended (the `result` label), as
/// `mesos::client::CallError` sorts failures.
pub const CALL_RESULTS: [&str; 4] = ["ok", "refused", "not_delivered", "outcome_unknown"];

/// How one Redis bridge cycle ended (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisCycle {
    Ok,
    /// The state thread did not answer within `redis::STATE_TIMEOUT`.
    StateTimeout,
    /// Redis was unreachable or answered something unusable.
    RedisError,
}

const REDIS_RESULTS: [&str; 3] = ["ok", "state_timeout", "redis_error"];

/// The route label of a request no route matched (404, 405, a bad query).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The statuses a REST worker answers (`api::ApiError::status` and the
/// replies of `api::respond`), each with its own counter; any other is
/// counted as `status="other"`.
pub const HTTP_STATUSES: [u16; 12] = [200, 202, 400, 401, 404, 405, 409, 413, 500, 503, 504, 507];

/// Every metric of one scheduler process. Counting is a relaxed atomic
/// increment; reading (`render`) takes no lock either.
pub struct Metrics {
    offers_received: AtomicU64,
    offers_used: AtomicU64,
    offers_declined: AtomicU64,
    launches: AtomicU64,
    /// Calls answered after another call of their pipelined batch.
    pipelined: AtomicU64,
    /// By `TaskState::ALL` index.
    updates: [AtomicU64; TaskState::ALL.len()],
    subscribed: AtomicU64,
    subscriptions: AtomicU64,
    /// By `CALL_NAMES` index, then `CALL_RESULTS` index.
    calls: [[AtomicU64; CALL_RESULTS.len()]; CALL_NAMES.len()],
    redis_cycles: [AtomicU64; REDIS_RESULTS.len()],
    /// One per route name (`routes`), the last for `UNMATCHED_ROUTE`.
    http: Vec<RouteStats>,
    routes: &'static [&'static str],
    pub(crate) turn: Histogram,
    pub(crate) commit: Histogram,
    /// By `COMPACTION_RESULTS` index.
    compactions: [AtomicU64; COMPACTION_RESULTS.len()],
    compaction: Histogram,
    start_latency: Histogram,
}

/// Requests of one REST route: by status (`HTTP_STATUSES`, then other) and
/// their durations.
struct RouteStats {
    statuses: [AtomicU64; HTTP_STATUSES.len() + 1],
    duration: Histogram,
}

impl RouteStats {
    fn new() -> RouteStats {
        RouteStats {
            statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(HTTP_BUCKETS),
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(crate::api::ROUTE_NAMES)
    }
}

impl Metrics {
    /// Metrics with a request counter and histogram for each of `routes`
    /// (the REST API's route names) and one for `UNMATCHED_ROUTE`.
    pub fn new(routes: &'static [&'static str]) -> Metrics {
        Metrics {
            offers_received: AtomicU64::new(0),
            offers_used: AtomicU64::new(0),
            offers_declined: AtomicU64::new(0),
            launches: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
            updates: std::array::from_fn(|_| AtomicU64::new(0)),
            subscribed: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            calls: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            redis_cycles: std::array::from_fn(|_| AtomicU64::new(0)),
            http: (0..=routes.len()).map(|_| RouteStats::new()).collect(),
            routes,
            turn: Histogram::new(TURN_BUCKETS),
            commit: Histogram::new(COMMIT_BUCKETS),
            compactions: std::array::from_fn(|_| AtomicU64::new(0)),
            compaction: Histogram::new(COMPACTION_BUCKETS),
            start_latency: Histogram::new(START_BUCKETS),
        }
    }

    /// The state thread: what an event from the master says.
    pub(crate) fn count_event(&self, event: &MesosEvent) {
        match event {
            MesosEvent::Offers(offers) => add(&self.offers_received, offers.len()),
            MesosEvent::Update(update) => {
                if let Some(idx) = TaskState::ALL.iter().position(|it| *it == update.state) {
                    add(&self.updates[idx], 1);
                }
            }
            MesosEvent::Subscribed { .. } => {
                self.subscribed.store(1, Ordering::Relaxed);
                add(&self.subscriptions, 1);
            }
            MesosEvent::Disconnected { .. } | MesosEvent::FrameworkRemoved => {
                self.subscribed.store(0, Ordering::Relaxed);
            }
            MesosEvent::Rescind(_) | MesosEvent::AgentLost(_) | MesosEvent::CallFailed { .. } => {}
        }
    }

    /// The state thread: the calls one turn asks for (before they are sent).
    pub(crate) fn count_calls(&self, calls: &[Call]) {
        for call in calls {
            match call {
                Call::Launch {
                    offer_ids, tasks, ..
                } => {
                    add(&self.offers_used, offer_ids.len());
                    add(&self.launches, tasks.len());
                }
                Call::Decline { offer_ids, .. } => add(&self.offers_declined, offer_ids.len()),
                _ => {}
            }
        }
    }

    /// The state thread: a task's time from acceptance to its first RUNNING.
    pub(crate) fn observe_start(&self, latency: Duration) {
        self.start_latency.observe(latency);
    }

    /// The `mesos-caller`: one attempt of `call` and its result.
    pub(crate) fn count_call(&self, call: &Call, result: &Result<(), CallError>) {
        let result_idx = match result {
            Ok(()) => 0,
            Err(CallError::Refused(_)) => 1,
            Err(CallError::NotDelivered(_)) => 2,
            Err(CallError::OutcomeUnknown(_)) => 3,
        };
        if let Some(call_idx) = CALL_NAMES.iter().position(|name| *name == call.name()) {
            add(&self.calls[call_idx][result_idx], 1);
        }
    }

    /// The `mesos-caller`: `calls` answered after another call of their
    /// batch, and so sent before that one's answer (a lane writes a whole
    /// batch before it reads the first answer).
    pub(crate) fn count_pipelined(&self, calls: usize) {
        add(&self.pipelined, calls);
    }

    /// The `redis-bridge`: one cycle and how it ended.
    pub(crate) fn count_redis_cycle(&self, result: RedisCycle) {
        let idx = match result {
            RedisCycle::Ok => 0,
            RedisCycle::StateTimeout => 1,
            RedisCycle::RedisError => 2,
        };
        add(&self.redis_cycles[idx], 1);
    }

    /// The store: one compaction of the state files ended, well or not,
    /// after `took` (beside the commits or in place).
    pub(crate) fn count_compaction(&self, ok: bool, took: Duration) {
        add(&self.compactions[usize::from(!ok)], 1);
        self.compaction.observe(took);
    }

    /// An `http-N` worker: one request answered. `route` is a route name
    /// (`api::ROUTE_NAMES`) or `UNMATCHED_ROUTE`.
    pub(crate) fn count_http(&self, route: &str, status: u16, took: Duration) {
        let route_idx = self
            .routes
            .iter()
            .position(|name| *name == route)
            .unwrap_or(self.routes.len());
        let stats = &self.http[route_idx];
        let status_idx = HTTP_STATUSES
            .iter()
            .position(|known| *known == status)
            .unwrap_or(HTTP_STATUSES.len());
        add(&stats.statuses[status_idx], 1);
        stats.duration.observe(took);
    }

    /// The exposition: every metric, the task counts by state when the
    /// state thread gave them (`None` leaves that family out), and the
    /// process figures that could be read.
    pub fn render(&self, tasks: Option<&[(&str, u64)]>, process: &Process) -> String {
        let mut text = Text::default();
        if let Some(tasks) = tasks {
            text.family("charmander_tasks", "gauge", "Tasks the scheduler knows, by the state it shows (pending, launching, or the last Mesos state).");
            for (state, count) in tasks {
                text.sample("charmander_tasks", &[("state", state)], *count as f64);
            }
        }
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "charmander_offers_received_total",
                "Offers received from the master.",
                &self.offers_received,
            ),
            (
                "charmander_offers_used_total",
                "Offers used by an ACCEPT.",
                &self.offers_used,
            ),
            (
                "charmander_offers_declined_total",
                "Offers declined.",
                &self.offers_declined,
            ),
            (
                "charmander_task_launches_total",
                "Tasks sent to the master in an ACCEPT.",
                &self.launches,
            ),
            (
                "charmander_mesos_calls_pipelined_total",
                "Calls answered after another call of their batch: sent on one connection before its answer.",
                &self.pipelined,
            ),
        ];
        for (name, help, counter) in counters {
            text.family(name, "counter", help);
            text.sample(name, &[], load(counter));
        }
        text.counters_by(
            "charmander_status_updates_total",
            "Task status updates received, by state.",
            "state",
            TaskState::ALL
                .iter()
                .map(|state| state.as_str())
                .zip(&self.updates),
        );
        let name = "charmander_mesos_calls_total";
        text.family(
            name,
            "counter",
            "Attempts to send a scheduler call to the master, by call type and result.",
        );
        for (call, results) in CALL_NAMES.iter().zip(&self.calls) {
            for (result, counter) in CALL_RESULTS.iter().zip(results) {
                text.sample(name, &[("call", call), ("result", result)], load(counter));
            }
        }
        let name = "charmander_mesos_subscribed";
        text.family(
            name,
            "gauge",
            "1 while subscribed to the master (SUBSCRIBED seen, stream not ended), else 0.",
        );
        text.sample(name, &[], load(&self.subscribed));
        let name = "charmander_mesos_resubscriptions_total";
        text.family(
            name,
            "counter",
            "SUBSCRIBED events after the first one of this process.",
        );
        let subscriptions = self.subscriptions.load(Ordering::Relaxed);
        text.sample(name, &[], subscriptions.saturating_sub(1) as f64);
        let histograms = [
            (
                "charmander_state_turn_seconds",
                "Time the state thread spent handling one event.",
                &self.turn,
            ),
            (
                "charmander_journal_commit_seconds",
                "Time to write and fsync one group of turns to the journal.",
                &self.commit,
            ),
            (
                "charmander_journal_compaction_seconds",
                "Time one compaction of the state files took, beside the commits or in place, failed ones included.",
                &self.compaction,
            ),
            (
                "charmander_task_submit_to_running_seconds",
                "Time from a task's acceptance (a submit, a one-per-node copy, a restart or replacement) to its first TASK_RUNNING, in this process.",
                &self.start_latency,
            ),
        ];
        for (name, help, histogram) in histograms {
            text.family(name, "histogram", help);
            text.histogram(name, &[], &histogram.snapshot());
        }
        let route_names = || {
            self.routes
                .iter()
                .copied()
                .chain([UNMATCHED_ROUTE])
                .zip(&self.http)
        };
        let name = "charmander_http_requests_total";
        text.family(
            name,
            "counter",
            "REST requests answered, by route and status.",
        );
        for (route, stats) in route_names() {
            let statuses = HTTP_STATUSES.iter().map(u16::to_string);
            for (status, counter) in statuses.chain(["other".to_string()]).zip(&stats.statuses) {
                let count = load(counter);
                if count > 0.0 {
                    text.sample(name, &[("route", route), ("status", &status)], count);
                }
            }
        }
        let name = "charmander_http_request_duration_seconds";
        text.family(
            name,
            "histogram",
            "Time to answer a REST request, by route.",
        );
        for (route, stats) in route_names() {
            let snapshot = stats.duration.snapshot();
            if snapshot.count > 0 {
                text.histogram(name, &[("route", route)], &snapshot);
            }
        }
        text.counters_by(
            "charmander_journal_compactions_total",
            "Compactions of the state files (journal into snapshot), by result; the next compaction takes up what a failed one left.",
            "result",
            COMPACTION_RESULTS.into_iter().zip(&self.compactions),
        );
        text.counters_by(
            "charmander_redis_cycles_total",
            "Redis bridge cycles, by result.",
            "result",
            REDIS_RESULTS.into_iter().zip(&self.redis_cycles),
        );
        if let Some(bytes) = process.resident_memory_bytes {
            let name = "process_resident_memory_bytes";
            text.family(name, "gauge", "Resident memory size in bytes.");
            text.sample(name, &[], bytes as f64);
        }
        if let Some(seconds) = process.start_time_seconds {
            let name = "process_start_time_seconds";
            text.family(
                name,
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            text.sample(name, &[], seconds);
        }
        let name = "charmander_build_info";
        text.family(name, "gauge", "The running version; always 1.");
        text.sample(name, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        text.out
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// A histogram with fixed bucket bounds: one atomic per bucket (not
/// cumulative; the last one counts what is above every bound) and the sum
/// in nanoseconds. `_count` is the sum of the buckets, so a scrape that
/// races an observation still sees `+Inf` equal to `_count`.
pub(crate) struct Histogram {
    bounds: &'static [f64],
    bound_nanos: Vec<u64>,
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// What a histogram held at one moment, cumulative as the format wants it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or below it).
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum_seconds: f64,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            bound_nanos: bounds
                .iter()
                .map(|seconds| (seconds * 1e9).round() as u64)
                .collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or above the value: `le` means "less or equal".
        let idx = self.bound_nanos.partition_point(|bound| *bound < nanos);
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let above = self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count: cumulative + above,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Figures of the process itself, read from `/proc` at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    pub resident_memory_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second in `/proc/<pid>/stat` times: `USER_HZ`, 100 on
/// every Linux architecture we build for (the Prometheus Go client's procfs
/// assumes the same).
const USER_HZ: f64 = 100.0;

impl Process {
    /// Reads `/proc/self/status`, `/proc/self/stat` and `/proc/stat`; what
    /// cannot be read or parsed is left `None` (and out of the scrape).
    pub fn read() -> Process {
        let read = |path| std::fs::read_to_string(path).ok();
        let start_time_seconds = match (read("/proc/self/stat"), read("/proc/stat")) {
            (Some(stat), Some(system)) => start_time(&stat, &system),
            _ => None,
        };
        Process {
            resident_memory_bytes: read("/proc/self/status").and_then(|it| resident_bytes(&it)),
            start_time_seconds,
        }
    }
}

/// `VmRSS:   1234 kB` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// Unix seconds of the process start: boot time (`btime` of `/proc/stat`)
/// plus field 22 of `/proc/self/stat` (ticks since boot). The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so fields are counted after its last `)`.
fn start_time(stat: &str, system: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the name; field 22 is 19 later.
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = system
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot as f64 + ticks as f64 / USER_HZ)
}

/// The exposition text, family by family. Callers write a family's header
/// (`family`) and then all its samples, as the format requires.
#[derive(Debug, Default)]
struct Text {
    out: String,
}

impl Text {
    /// `# HELP` and `# TYPE` of one metric family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A counter family with one label: a sample per (label value, counter).
    fn counters_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        counters: impl Iterator<Item = (&'a str, &'a AtomicU64)>,
    ) {
        self.family(name, "counter", help);
        for (value, counter) in counters {
            self.sample(name, &[(label, value)], load(counter));
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels);
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// Cumulative buckets with the `le` label after `labels`, the `+Inf`
    /// bucket (equal to the count), then `_sum` and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &snapshot.buckets {
            let le = format_value(*bound);
            let with_le: Vec<(&str, &str)> = labels.iter().copied().chain([("le", &*le)]).collect();
            self.sample(&bucket, &with_le, *count as f64);
        }
        let with_inf: Vec<(&str, &str)> = labels.iter().copied().chain([("le", "+Inf")]).collect();
        self.sample(&bucket, &with_inf, snapshot.count as f64);
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), labels, snapshot.count as f64);
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (idx, (name, value)) in labels.iter().enumerate() {
        if idx > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
    }
    out.push('}');
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed escaped (quotes stay).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it: Go's float syntax, with
/// `+Inf`, `-Inf` and `NaN`. Rust never writes an exponent in `{}`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests;
