//! The Redis bridge to the lab's analytics (contract §1): every cycle it
//! publishes nodes, metered tasks and tasks as the original's JSON with a
//! 30 s TTL, in that order, then reads `charmander:task-intelligence:*` with
//! SCAN and merges it with the scheduler's table (`sync::plan`).
//!
//! Runs on its own `redis-bridge` thread and talks to the state thread like
//! an HTTP worker does (an `ApiCommand` with a reply channel), so Redis being
//! down, slow or answering garbage can never block the scheduler. Outages are
//! logged once, and again when Redis is back.

pub mod client;
pub mod resp;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::api::dto::{node_json, task_json};
use crate::lograte::RateLimit;
use crate::mesos::Backoff;
use crate::metrics::{Metrics, RedisCycle};
use crate::redis::client::Connection;
use crate::redis::resp::Reply;
use crate::scheduler::{ApiCommand, ApiReply, ApiRequest, IntelligenceChange, Snapshot};

/// TTL of every published key (contract §1.1).
pub const TTL_SECONDS: &str = "30";

/// How long the bridge waits for the state thread's answer.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys asked for per SCAN step, and the most steps in one cycle. A SCAN
/// pass that needs more goes on from its cursor in the next cycle.
pub const SCAN_COUNT: &str = "1000";
pub const MAX_SCAN_STEPS: usize = 1000;

/// Keys read per pipeline.
const READ_BATCH: usize = 1000;

/// An intelligence value this long or longer is not read (they are numbers
/// and node names); the key is skipped, so one huge value cannot stop the
/// rest from syncing.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Reconnect backoff floor; the ceiling is the cycle interval.
const BACKOFF_MIN: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// host:port.
    pub addr: String,
    pub interval: Duration,
}

pub struct Bridge {
    thread: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
}

impl Bridge {
    /// Starts the `redis-bridge` thread; each cycle is counted in `metrics`.
    pub fn start(
        config: RedisConfig,
        state: Sender<ApiCommand>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Bridge> {
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("redis-bridge".to_string())
            .spawn(move || {
                let mut bridge = Worker::new(config, state, metrics);
                let mut wait = Duration::ZERO;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    match bridge.turn() {
                        Some(next) => wait = next,
                        None => return,
                    }
                }
            })?;
        Ok(Bridge {
            thread: Some(thread),
            stop: Some(stop),
        })
    }

    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("redis bridge panicked");
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Why a cycle stopped early.
enum Failure {
    /// Redis is unreachable or misbehaving: reconnect later.
    Redis(String),
    /// The state thread did not answer in time; try again next cycle.
    Busy,
    /// The state thread is gone: the scheduler is stopping.
    Stopped,
}

impl From<resp::Error> for Failure {
    fn from(error: resp::Error) -> Failure {
        Failure::Redis(error.to_string())
    }
}

struct Worker {
    config: RedisConfig,
    state: Sender<ApiCommand>,
    connection: Option<Connection>,
    /// What Redis held on the last cycle; `None` after (re)connecting, so a
    /// Redis that comes back empty does not read as "every key deleted".
    base: Option<BTreeMap<String, String>>,
    /// Keys whose current value the table refused; left alone in Redis.
    rejected: BTreeSet<String>,
    /// (key, value) pairs already reported, so each is logged once.
    reported: BTreeSet<(String, String)>,
    outage: Option<String>,
    /// "redis unavailable" and "redis cycle skipped" lines, each at most
    /// one per `lograte::LOG_WINDOW` (a flapping Redis starts many outages).
    unavailable_log: RateLimit,
    busy_log: RateLimit,
    backoff: Backoff,
    /// Where the SCAN pass goes on ("0": a new pass), and the keys it has
    /// seen so far.
    scan_cursor: String,
    scan_seen: BTreeSet<String>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn new(config: RedisConfig, state: Sender<ApiCommand>, metrics: Arc<Metrics>) -> Worker {
        let backoff = Backoff::new(BACKOFF_MIN, config.interval.max(BACKOFF_MIN));
        Worker {
            config,
            state,
            connection: None,
            base: None,
            rejected: BTreeSet::new(),
            reported: BTreeSet::new(),
            outage: None,
            unavailable_log: RateLimit::default(),
            busy_log: RateLimit::default(),
            backoff,
            scan_cursor: "0".to_string(),
            scan_seen: BTreeSet::new(),
            metrics,
        }
    }

    /// One cycle; the wait before the next, or `None` to stop.
    fn turn(&mut self) -> Option<Duration> {
        match self.cycle() {
            Ok(()) => {
                self.metrics.count_redis_cycle(RedisCycle::Ok);
                if let Some(what) = self.outage.take() {
                    log::info!("redis back addr={} after: {what}", self.config.addr);
                }
                self.backoff.reset();
                Some(self.config.interval)
            }
            Err(Failure::Stopped) => None,
            Err(Failure::Busy) => {
                self.metrics.count_redis_cycle(RedisCycle::StateTimeout);
                if let Some(suffix) = self.busy_log.admit(Instant::now()) {
                    log::warn!(
                        "redis cycle skipped: the scheduler did not answer within {STATE_TIMEOUT:?}{suffix}"
                    );
                }
                Some(self.config.interval)
            }
            Err(Failure::Redis(what)) => {
                self.metrics.count_redis_cycle(RedisCycle::RedisError);
                self.connection = None;
                if self.outage.is_none() {
                    if let Some(suffix) = self.unavailable_log.admit(Instant::now()) {
                        log::warn!(
                            "redis unavailable addr={}: {what}; retrying, the scheduler carries on{suffix}",
                            self.config.addr
                        );
                    }
                    self.outage = Some(what);
                }
                Some(self.backoff.next_delay())
            }
        }
    }

    fn cycle(&mut self) -> Result<(), Failure> {
        if self.connection.is_none() {
            self.connection = Some(Connection::connect(&self.config.addr)?);
            self.base = None;
            self.scan_cursor = "0".to_string();
            self.scan_seen.clear();
        }
        let snapshot = match self.ask(ApiRequest::Snapshot)? {
            ApiReply::Snapshot(snapshot) => snapshot,
            other => {
                return Err(Failure::Redis(format!(
                    "the scheduler answered a snapshot with {other:?}"
                )))
            }
        };
        self.publish(&snapshot)?;
        let observed = self.read_intelligence()?;
        let empty = BTreeMap::new();
        let base = self.base.as_ref().unwrap_or(&empty);
        let redis_now = sync::redis_view(base, &observed);
        let mut plan = sync::plan(base, &redis_now, &snapshot.intelligence, &self.rejected);
        plan.redis_set
            .retain(|(key, _)| sync::may_write(key, base, &observed));
        for key in &plan.malformed {
            self.report_once(
                key,
                "",
                "ignoring a task-intelligence key that is not <task>:<attribute>",
            );
        }
        if !plan.to_table.is_empty() {
            self.apply_to_table(&plan.to_table)?;
        }
        let mut commands: Vec<Vec<Vec<u8>>> = Vec::new();
        for (key, value) in &plan.redis_set {
            commands.push(args(&["SET", key, value]));
        }
        for key in &plan.redis_del {
            commands.push(args(&["DEL", key]));
        }
        if !commands.is_empty() {
            self.run(&commands)?;
        }
        let mut base = redis_now;
        base.extend(plan.redis_set);
        for key in plan.redis_del {
            base.remove(&key);
        }
        self.base = Some(base);
        Ok(())
    }

    /// Nodes, then metered tasks, then every task: one pipeline, so Redis
    /// applies them in this order.
    fn publish(&mut self, snapshot: &Snapshot) -> Result<(), Failure> {
        let mut commands = Vec::with_capacity(snapshot.nodes.len() + 2 * snapshot.tasks.len());
        for node in &snapshot.nodes {
            let key = format!("charmander:nodes:{}", node.hostname);
            commands.push(args(&["SET", &key, &node_json(node), "EX", TTL_SECONDS]));
        }
        let tasks: Vec<(String, String)> = snapshot
            .tasks
            .iter()
            .map(|task| (task.internal_id.0.to_string(), task_json(task)))
            .collect();
        for (task, (id, json)) in snapshot.tasks.iter().zip(&tasks) {
            if !task.spec.not_metered {
                commands.push(args(&[
                    "SET",
                    &format!("charmander:tasks-metered:{id}"),
                    json,
                    "EX",
                    TTL_SECONDS,
                ]));
            }
        }
        for (id, json) in &tasks {
            commands.push(args(&[
                "SET",
                &format!("charmander:tasks:{id}"),
                json,
                "EX",
                TTL_SECONDS,
            ]));
        }
        self.run(&commands)
    }

    /// Continues the SCAN pass for at most `MAX_SCAN_STEPS` steps and reads
    /// the keys it found (GETRANGE, at most `MAX_VALUE_BYTES` each, in
    /// batches). A pass may span cycles; a key that cannot be read is skipped
    /// and logged once, and the rest still sync.
    fn read_intelligence(&mut self) -> Result<sync::Observed, Failure> {
        let pattern = format!("{}*", sync::INTELLIGENCE_PREFIX);
        let fresh_pass = self.scan_cursor == "0";
        let mut keys = BTreeSet::new();
        for _ in 0..MAX_SCAN_STEPS {
            let cursor = self.scan_cursor.clone();
            let reply = self.connection()?.command(&[
                b"SCAN",
                cursor.as_bytes(),
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                SCAN_COUNT.as_bytes(),
            ])?;
            let Reply::Array(parts) = reply else {
                return Err(Failure::Redis(format!("SCAN answered {reply:?}")));
            };
            let [Reply::Bulk(next), Reply::Array(found)] = parts.as_slice() else {
                return Err(Failure::Redis(
                    "SCAN answered an unexpected shape".to_string(),
                ));
            };
            for key in found {
                if let Reply::Bulk(key) = key {
                    keys.insert(String::from_utf8_lossy(key).into_owned());
                }
            }
            self.scan_cursor = String::from_utf8_lossy(next).into_owned();
            if self.scan_cursor == "0" {
                break;
            }
        }
        self.scan_seen.extend(keys.iter().cloned());
        let pass = (self.scan_cursor == "0").then(|| std::mem::take(&mut self.scan_seen));
        let mut observed = sync::Observed {
            whole: fresh_pass && pass.is_some(),
            pass,
            ..sync::Observed::default()
        };
        let keys: Vec<String> = keys.into_iter().collect();
        let last_byte = (MAX_VALUE_BYTES - 1).to_string();
        for batch in keys.chunks(READ_BATCH) {
            let commands: Vec<Vec<Vec<u8>>> = batch
                .iter()
                .map(|key| args(&["GETRANGE", key, "0", &last_byte]))
                .collect();
            let replies = self.connection()?.pipeline(&commands)?;
            for (key, reply) in batch.iter().zip(replies) {
                match reply {
                    Reply::Bulk(bytes) if bytes.len() >= MAX_VALUE_BYTES => self.report_once(
                        key,
                        "",
                        &format!(
                            "ignoring a task-intelligence value of {MAX_VALUE_BYTES} bytes or more"
                        ),
                    ),
                    Reply::Bulk(bytes) => match String::from_utf8(bytes) {
                        Ok(value) => {
                            // An empty value is a key deleted since the SCAN.
                            let value = value.trim();
                            if !value.is_empty() {
                                observed.values.insert(key.clone(), value.to_string());
                            }
                            observed.read.insert(key.clone());
                        }
                        Err(_) => self.report_once(
                            key,
                            "",
                            "ignoring a task-intelligence value that is not UTF-8",
                        ),
                    },
                    // WRONGTYPE: not a string key.
                    Reply::Error(message) => self.report_once(
                        key,
                        "",
                        &format!("ignoring a task-intelligence key redis cannot read: {message}"),
                    ),
                    other => return Err(Failure::Redis(format!("GETRANGE answered {other:?}"))),
                }
            }
        }
        Ok(observed)
    }

    fn apply_to_table(&mut self, changes: &[sync::Change]) -> Result<(), Failure> {
        let changes: Vec<IntelligenceChange> = changes
            .iter()
            .map(|change| IntelligenceChange {
                task: change.task.clone(),
                attribute: change.attribute.clone(),
                raw: change.raw.clone(),
            })
            .collect();
        for change in &changes {
            self.rejected
                .remove(&sync::key_for(&change.task, &change.attribute));
        }
        match self.ask(ApiRequest::SyncIntelligence(changes))? {
            ApiReply::Synced { rejected } => {
                for (change, why) in rejected {
                    let key = sync::key_for(&change.task, &change.attribute);
                    let value = change.raw.clone().unwrap_or_default();
                    self.report_once(
                        &key,
                        &value,
                        &format!("ignoring task intelligence {value:?}: {why}"),
                    );
                    self.rejected.insert(key);
                }
                Ok(())
            }
            other => Err(Failure::Redis(format!(
                "the scheduler answered the sync with {other:?}"
            ))),
        }
    }

    fn report_once(&mut self, key: &str, value: &str, what: &str) {
        if self.reported.insert((key.to_string(), value.to_string())) {
            log::warn!("redis key={key:?}: {what}");
        }
    }

    /// One request to the state thread, bounded in time both ways.
    fn ask(&self, request: ApiRequest) -> Result<ApiReply, Failure> {
        let (reply, replies) = crate::scheduler::oneshot::oneshot();
        match self
            .state
            .send_timeout(ApiCommand { request, reply }, STATE_TIMEOUT)
        {
            Ok(()) => {}
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                return Err(Failure::Stopped)
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => return Err(Failure::Busy),
        }
        match replies.recv_timeout(STATE_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Disconnected) => Err(Failure::Stopped),
            Err(RecvTimeoutError::Timeout) => Err(Failure::Busy),
        }
    }

    fn connection(&mut self) -> Result<&mut Connection, Failure> {
        self.connection
            .as_mut()
            .ok_or_else(|| Failure::Redis("not connected".to_string()))
    }

    /// Runs a pipeline; a server error reply fails the cycle.
    fn run(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<(), Failure> {
        for reply in self.connection()?.pipeline(commands)? {
            if let Reply::Error(message) = reply {
                return Err(Failure::Redis(format!(
                    "redis refused a command: {message}"
                )));
            }
        }
        Ok(())
    }
}

fn args(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|part| part.as_bytes().to_vec()).collect()
}
