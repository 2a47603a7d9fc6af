//! `State`: tasks, one-per-node services and the node registry, and the one
//! `handle_event` that changes them.
//!
//! Owned by the `state` thread. No I/O, no clock: the time comes in with each
//! event and the calls for the master go out as return values.
//!
//! Task lifecycle, as the scheduler tracks it:
//! `Pending` (waiting for an offer) → `Launching` (ACCEPT sent) → `Active(state)`
//! (the master or agent reported a state) → removed on a terminal state (a
//! copy of its view stays listed in `ended` for `--keep-finished`). A
//! task whose launch the master never saw or lost (invalid offers, a refused
//! ACCEPT, or LOST/UNKNOWN/GONE/DROPPED from reconciliation) goes back to
//! `Pending` under a new TaskID. `update_outcome` classifies every update;
//! `on_update` acts on the outcome.

mod idempotency;
mod index;
mod instances;
mod list;
mod node_views;
mod observed;
mod outcome;
mod persist;
mod reset;
mod trail;

use idempotency::Seen;
use outcome::{update_outcome, Outcome};
use persist::{idempotency_key, intelligence_key, service_key, task_key, FRAMEWORK_KEY, META_KEY};
pub use persist::{Record, Restore};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::scheduler::intelligence::{self, Entry, Source, Table};
use crate::scheduler::model::{
    AgentId, DockerInfo, FrameworkId, Offer, OfferId, Sla, StatusReason, TaskId, TaskSpec,
    TaskState, TaskUpdate, UNRESERVED_ROLE,
};
use crate::scheduler::notice::{KilledBy, Notice, NoticeKind};
use crate::scheduler::placement::{self, Request};
use crate::scheduler::{
    ApiReply, ApiRequest, Call, CallFailure, Event, IntelligenceChange, Launch, MesosEvent, Now,
    RequestId, Requested, ReshuffleStep, Snapshot, TaskView, Turn,
};

/// Refuse filter for offers declined while tasks are still waiting: short,
/// so a freed resource comes back soon.
pub const REFUSE_SECONDS_BUSY: f64 = 5.0;

/// Refuse filter for offers declined with nothing to place: long, since we
/// REVIVE (which clears filters) as soon as work arrives.
pub const REFUSE_SECONDS_IDLE: f64 = 120.0;

/// Refuse filter of an ACCEPT while tasks still wait after its round: none,
/// so what is left of the agent is offered again at the master's next
/// allocation (1 s by default) instead of after `REFUSE_SECONDS_BUSY`. A
/// round places at most `MAX_PLACE_REQUESTS` tasks, so a burst larger than
/// that needs the agents it just used again.
pub const REFUSE_SECONDS_MORE_WORK: f64 = 0.0;

/// A KILL without a terminal answer is sent again after this long; Mesos
/// does not promise delivery of kills.
pub const KILL_RETRY: Duration = Duration::from_secs(30);

/// Restart backoff: the first restart waits `RESTART_BACKOFF_MIN`, each
/// further one twice as long, up to `RESTART_BACKOFF_MAX`.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A task that ran at least this long before ending starts its restart count afresh.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// Restarts in a row (without a stable run) that make a task crash-looping.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// After a refused SUPPRESS or REVIVE, suppression is decided again this
/// much later.
pub const SUPPRESSION_RETRY: Duration = Duration::from_secs(5);

/// Explicit reconciliation asks again about unanswered tasks after this
/// long, doubling each time up to `RECONCILE_RETRY_MAX`.
pub const RECONCILE_RETRY_MIN: Duration = Duration::from_secs(5);
pub const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(300);

/// Tasks named in one RECONCILE call (about 100 bytes each): asking about
/// 100,000 tasks in one call is a 10 MB body, past what a master may take
/// (`mesos-sim` takes 16 MiB).
pub const RECONCILE_BATCH: usize = 10_000;

/// Every task is reconciled this often unless configured otherwise.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(600);

/// How long a task that ran may stay TASK_UNKNOWN before it is relaunched
/// under a new TaskID, unless configured otherwise: long enough for agents
/// to re-register with a restarted master (their registration backoff goes
/// up to a minute).
pub const DEFAULT_UNKNOWN_GRACE: Duration = Duration::from_secs(120);

/// Ended tasks stay listed this long unless configured otherwise
/// (`--keep-finished`).
pub const DEFAULT_KEEP_FINISHED: Duration = Duration::from_secs(3600);

/// At most this many ended tasks are listed; the oldest go first.
pub const MAX_ENDED_TASKS: usize = 1000;

/// Placeable tasks one placement round hands to `placement::place`, oldest
/// first; the rest stay pending (and count as waiting) for the next offers.
/// A round of 10,000 tasks on 1,000 offers takes the state thread under
/// 100 ms (the bench's state turn histogram); with 2,048 a 10k burst needed
/// five rounds, one per allocation interval.
pub const MAX_PLACE_REQUESTS: usize = 10_000;

/// Pending reasons refreshed per call of `explain_queued`; each reads the
/// node registry, so a burst of new or unplaced tasks is explained a slice
/// at a time, between events, instead of stalling one.
pub const MAX_EXPLAIN_PER_TURN: usize = 256;

/// How long a new task waits for the next offers before the run loop judges
/// its pending reason unasked (a request that shows reasons judges at once).
pub const EXPLAIN_AFTER: Duration = Duration::from_secs(1);

/// Nodes named in a one-per-node service's pending reason.
const MAX_NODES_IN_REASON: usize = 5;

/// A task that ended, as the list shows it until it expires. History only:
/// nothing but the list reads it (no placement, SLA, kill, reshuffle or
/// reconciliation), and it is not persisted.
#[derive(Clone, Debug)]
struct Ended {
    view: TaskView,
    /// Its decision trail, kept as long as it is listed.
    trail: trail::Trail,
    /// When it leaves the list (monotonic).
    expires: Instant,
}

/// An explicit reconciliation still waiting for answers. A master does not
/// answer for tasks on agents that have not re-registered yet, so the
/// tasks without an answer are asked about again with capped exponential
/// backoff (`RECONCILE_RETRY_MIN` doubling to `RECONCILE_RETRY_MAX`).
#[derive(Clone, Debug)]
struct ReconcileRound {
    /// Tasks asked about that have had no update since the round started.
    unanswered: BTreeSet<TaskId>,
    /// How many tasks the round asked about, for the summary.
    asked: usize,
    /// Retries so far.
    retries: u32,
    /// When the unanswered are asked again, and the wait after that.
    retry_at: Instant,
    delay: Duration,
}

impl ReconcileRound {
    /// A round that asks again after `RECONCILE_RETRY_MIN`.
    fn new(now: Instant) -> ReconcileRound {
        ReconcileRound {
            unanswered: BTreeSet::new(),
            asked: 0,
            retries: 0,
            retry_at: now + RECONCILE_RETRY_MIN,
            delay: RECONCILE_RETRY_MIN,
        }
    }
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Waiting for an offer.
    Pending,
    /// ACCEPT sent; no status yet.
    Launching,
    /// The last state Mesos reported.
    Active(TaskState),
}

/// One task instance, keyed by its internal id.
#[derive(Clone, Debug)]
struct Task {
    /// What the task runs with: `requested` plus intelligence. Shared with
    /// the list views built of it, which then copy none of its strings.
    spec: Arc<TaskSpec>,
    phase: Phase,
    agent_id: Option<AgentId>,
    /// Its node's hostname: the node registry's copy, shared by the node's
    /// tasks (a restore keeps one copy per hostname).
    hostname: Option<Arc<str>>,
    docker: DockerInfo,
    created_at: u64,
    status_message: String,
    pending_reason: Option<String>,
    /// Killed by the user (or replaced by a reshuffle).
    kill_requested: bool,
    /// Creation order, for oldest-first placement.
    seq: u64,
    /// When Mesos first reported it RUNNING in this process (not durable:
    /// after a restart the stable-run clock starts at the next RUNNING).
    running_since: Option<Instant>,
    /// When this process accepted it, until its first RUNNING (not
    /// durable): its submit-to-RUNNING latency (`observed`).
    accepted_at: Option<Instant>,
    /// Its decision trail (`GET /client/task/<id>`; not durable).
    trail: trail::Trail,
    /// What few tasks have, boxed apart (`rare()`, `change_rare()`): `None`
    /// while all of it is empty, as for most running tasks. A `Task` is
    /// 424 bytes with it instead of 552 (12 MiB less at 100,000 tasks).
    rare: Option<Box<TaskRare>>,
}

/// The fields of a `Task` that few tasks have.
#[derive(Clone, Debug, Default, PartialEq)]
struct TaskRare {
    /// What the user submitted, only when intelligence made `spec` differ
    /// from it (usually not: one spec kept instead of two); see `requested()`.
    requested: Option<Box<TaskSpec>>,
    /// Intelligence entries that changed `spec`: (attribute, derived value).
    applied: Vec<(String, String)>,
    /// Set for one-per-node copies: the agent the copy belongs to.
    pinned_agent: Option<AgentId>,
    /// When the kill was last sent; `None` after a restart, so it is sent
    /// again once subscribed.
    kill_sent_at: Option<Instant>,
    /// A replacement waits until this task is gone (reshuffle, singleton).
    waits_for: Option<TaskId>,
    /// Restarts under the restart policy that led to this instance.
    restarts: u32,
    /// A restarted task waits this long before it is placed (durable).
    backoff: Option<Duration>,
    /// When the backoff ends. Derived from `backoff`: at the restart, or at
    /// the first event after a restore (`State::rederive_deadlines`).
    not_before: Option<Instant>,
    /// Since when the master has answered TASK_UNKNOWN for it, while its
    /// agent may still re-register (not durable: a restart asks afresh).
    unknown_since: Option<Instant>,
}

/// A task with none of the rare fields (what `Task::rare` reads then).
static NO_RARE: TaskRare = TaskRare {
    requested: None,
    applied: Vec::new(),
    pinned_agent: None,
    kill_sent_at: None,
    waits_for: None,
    restarts: 0,
    backoff: None,
    not_before: None,
    unknown_since: None,
};

impl TaskRare {
    /// Boxed, or `None` when all of it is empty.
    fn boxed(self) -> Option<Box<TaskRare>> {
        (self != NO_RARE).then(|| Box::new(self))
    }
}

impl Task {
    /// Pending again, with nothing left of the instance that ran: no
    /// agent, container or run clocks (a stale `running_since` would make
    /// the next crash look like the end of a stable run).
    fn back_to_pending(&mut self, reason: String) {
        self.phase = Phase::Pending;
        self.agent_id = None;
        self.hostname = None;
        self.docker = DockerInfo::default();
        self.running_since = None;
        self.change_rare(|rare| rare.unknown_since = None);
        self.pending_reason = Some(reason);
    }

    fn is_kill_requested(&self) -> bool {
        self.kill_requested
    }

    /// What the user submitted (before intelligence).
    fn requested(&self) -> &TaskSpec {
        self.rare().requested.as_deref().unwrap_or(&self.spec)
    }

    /// The rare fields, empty ones when it has none.
    fn rare(&self) -> &TaskRare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// Changes the rare fields: boxed when something is set, unboxed
    /// again when all of it is empty.
    fn change_rare<R>(&mut self, change: impl FnOnce(&mut TaskRare) -> R) -> R {
        let Some(rare) = &mut self.rare else {
            let mut rare = TaskRare::default();
            let result = change(&mut rare);
            self.rare = rare.boxed();
            return result;
        };
        let result = change(rare);
        if **rare == NO_RARE {
            self.rare = None;
        }
        result
    }
}

/// A one-per-node submission: the template for its copies.
#[derive(Clone, Debug)]
struct Service {
    spec: TaskSpec,
    /// Agents that have (or had) a copy; a node gets a copy only once.
    covered: BTreeSet<AgentId>,
}

#[derive(Clone, Debug)]
struct Node {
    /// Shared with the tasks placed on it (`Task::hostname`).
    hostname: Arc<str>,
    node_type: String,
    node_name: String,
    time_of_last_offer: u64,
    /// Its last offer, less what we launched on it: what pending reasons
    /// are judged against (`placement::explain`).
    offered: Offer,
}

/// All mutable scheduler state.
#[derive(Debug, Default)]
pub struct State {
    framework_id: Option<FrameworkId>,
    /// The framework's role: placement uses only resources unreserved or
    /// reserved for it.
    role: String,
    subscribed: bool,
    /// Unix seconds since when we have not been subscribed (None while
    /// subscribed): what a pending task says meanwhile.
    disconnected_since: Option<u64>,
    /// Boxed: a `Task` is 424 bytes, and the B-tree nodes that
    /// inserts in key order leave half full would hold as much again unused.
    tasks: BTreeMap<TaskId, Box<Task>>,
    /// Indexes over `tasks` (`state/index.rs`); every change of an indexed
    /// field goes through `insert_task`, `take_task` or `update_task`.
    index: index::Indexes,
    /// The instant of the event being handled (of the last one between
    /// events): what restart backoffs in the indexes are judged at.
    clock: Option<Instant>,
    /// Pending tasks whose reason is to be judged against the registry again,
    /// by (seq, id); `explain_queued` takes `MAX_EXPLAIN_PER_TURN` per call.
    unexplained: BTreeSet<(u64, TaskId)>,
    /// List entries of live tasks unchanged since they were listed (`state/list.rs`).
    list_cache: list::ListCache,
    /// Live instances per user id (for `singleton`).
    instances: instances::Instances,
    services: BTreeMap<String, Service>,
    nodes: BTreeMap<AgentId, Node>,
    intelligence: Table,
    /// What we last told the master.
    suppressed: bool,
    /// A SUPPRESS or REVIVE was refused: suppression is decided again at
    /// this time, not in a tight loop of refused calls.
    suppression_hold_until: Option<Instant>,
    /// Offers were declined with the long idle filter since the last REVIVE:
    /// new work must REVIVE to see those nodes again.
    idle_filters: bool,
    /// Offers arrived since the last (re)subscription: the node registry
    /// has seen the cluster, so suppressing cannot hide it.
    nodes_surveyed: bool,
    /// The largest unix-nanosecond stamp handed out, so ids stay unique.
    last_id_nanos: u128,
    next_seq: u64,
    /// When every task was last reconciled, and how often to do it.
    last_reconcile: Option<Instant>,
    /// The explicit reconciliation in progress, until every task asked
    /// about has answered.
    reconcile_round: Option<ReconcileRound>,
    reconcile_interval: Duration,
    /// How long a task that ran may stay TASK_UNKNOWN (`DEFAULT_UNKNOWN_GRACE`
    /// when zero).
    unknown_grace: Duration,
    /// `--reset`: send TEARDOWN for the stored framework once subscribed.
    teardown_pending: bool,
    /// Built by `restore` and no event handled yet: deadlines still to
    /// re-derive from the first event's instant.
    restored: bool,
    /// `Idempotency-Key`s of recent submits and what they answered.
    idempotency: idempotency::Keys,
    /// Record keys changed since the last `take_records`.
    dirty: BTreeSet<String>,
    /// Ended tasks, oldest end first (so expiry pops from the front), at
    /// most `MAX_ENDED_TASKS`.
    ended: VecDeque<Ended>,
    /// How long ended tasks stay listed (`DEFAULT_KEEP_FINISHED` when None).
    keep_finished: Option<Duration>,
    /// Replies of this turn, by request id; they leave once the turn is durable.
    replies: Vec<(RequestId, ApiReply)>,
    /// `POST /admin/reset`s waiting for the old framework to be gone (`reset`).
    pending_resets: Vec<reset::PendingReset>,
    /// Submit-to-RUNNING latencies of this turn, for the metrics (`observed`).
    start_latencies: Vec<Duration>,
    /// This turn's notices for `GET /client/events` (`trail::notify`).
    notices: Vec<Notice>,
    /// "kill refused" and "call refused" lines, at most one per
    /// `lograte::LOG_WINDOW` (a master refusing calls refuses thousands).
    refused_log: crate::lograte::RateLimit,
}

impl State {
    pub fn new(framework_id: Option<FrameworkId>) -> State {
        State {
            framework_id,
            role: UNRESERVED_ROLE.to_string(),
            ..State::default()
        }
    }

    /// The framework's role (`FrameworkSettings.role`), default `*`.
    pub fn set_role(&mut self, role: &str) {
        self.role = role.to_string();
    }

    pub fn framework_id(&self) -> Option<&FrameworkId> {
        self.framework_id.as_ref()
    }

    /// How often every task is reconciled (default `DEFAULT_RECONCILE_INTERVAL`).
    pub fn set_reconcile_interval(&mut self, interval: Duration) {
        self.reconcile_interval = interval;
    }

    /// How long a task that ran may stay TASK_UNKNOWN before it is
    /// relaunched (default `DEFAULT_UNKNOWN_GRACE`).
    pub fn set_unknown_grace(&mut self, grace: Duration) {
        self.unknown_grace = grace;
    }

    /// How long ended tasks stay listed (default `DEFAULT_KEEP_FINISHED`;
    /// zero keeps none).
    pub fn set_keep_finished(&mut self, keep: Duration) {
        self.keep_finished = Some(keep);
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// `--reset`: forget every task and service (intelligence stays: it is
    /// what the lab learned) and tear the stored framework down once
    /// subscribed, so Mesos kills whatever it still runs for it.
    pub fn reset(&mut self) {
        let tasks: Vec<String> = self.tasks.keys().map(task_key).collect();
        let services: Vec<String> = self.services.keys().map(|id| service_key(id)).collect();
        self.dirty.extend(tasks.into_iter().chain(services));
        self.tasks.clear();
        self.unexplained.clear();
        self.rebuild_indexes();
        self.instances.clear();
        self.services.clear();
        self.ended.clear();
        self.teardown_pending = self.framework_id.is_some();
        self.touch(META_KEY.to_string());
        // A retry after a reset must not claim a task the reset forgot.
        let keys: Vec<String> = self.idempotency.clear();
        self.dirty
            .extend(keys.iter().map(|key| idempotency_key(key)));
    }

    /// The single entry point: applies one event; returns what changed (to
    /// make durable) and the calls and replies that may follow.
    pub fn handle_event(&mut self, event: Event, now: Now) -> Turn {
        // The kept list (`list.rs`) outlives only the reads; the reads
        // drop it themselves when they change what it shows (an ended task
        // expiring, a pending reason judged, the pending tasks' context).
        let reads = matches!(
            &event,
            Event::Api(
                _,
                ApiRequest::ListTasks(_)
                    | ApiRequest::ShowTask { .. }
                    | ApiRequest::TaskCounts
                    | ApiRequest::ListNodes
                    | ApiRequest::ListIntelligence
            )
        );
        if !reads {
            self.list_cache.changed();
        }
        let context = (self.subscribed, self.disconnected_since);
        self.advance_clock(now.instant);
        self.rederive_deadlines(now);
        self.expire_ended(now.instant);
        let mut calls = Vec::new();
        match event {
            Event::Api(id, request) => self.on_api(id, request, now, &mut calls),
            Event::Mesos(event) => self.on_mesos(event, now, &mut calls),
            Event::Tick => self.on_tick(now, &mut calls),
        }
        self.update_suppression(now, &mut calls);
        if self.subscribed {
            self.disconnected_since = None;
        } else if self.disconnected_since.is_none() {
            self.disconnected_since = Some(unix_seconds(now.wall));
        }
        if (self.subscribed, self.disconnected_since) != context {
            self.list_cache.changed();
        }
        Turn {
            records: self.take_records(),
            calls,
            replies: std::mem::take(&mut self.replies),
            notices: std::mem::take(&mut self.notices),
        }
    }

    /// Deadlines restored from disk start from the first event after the
    /// restore: a restored restart waits its whole backoff again (a wall
    /// clock stamp from before the restart could be hours off). Restored
    /// kills have no send time and go out once subscribed. Idempotency keys
    /// keep what is left of their window by their wall-clock stamp.
    fn rederive_deadlines(&mut self, now: Now) {
        if !std::mem::take(&mut self.restored) {
            return;
        }
        // Only the tasks in a backoff change; indexing them again is
        // what rebuilding every index would do (a restore of 100k tasks
        // has already built them once, 0.2 s).
        let in_backoff: Vec<(TaskId, Duration)> = (self.tasks.iter())
            .filter_map(
                |(task_id, task)| match (task.rare().backoff, task.rare().not_before) {
                    (Some(backoff), None) => Some((task_id.clone(), backoff)),
                    _ => None,
                },
            )
            .collect();
        for (task_id, backoff) in in_backoff {
            self.update_task(&task_id, |task| {
                task.change_rare(|rare| rare.not_before = Some(now.instant + backoff));
            });
        }
        self.idempotency.derive_expiry(now);
    }

    fn touch(&mut self, key: String) {
        self.dirty.insert(key);
    }

    fn on_api(&mut self, id: RequestId, request: ApiRequest, now: Now, calls: &mut Vec<Call>) {
        // What shows pending reasons judges the oldest queued first (see
        // `explain_queued`); one task shown is judged itself.
        match &request {
            ApiRequest::ListTasks(_) | ApiRequest::Snapshot | ApiRequest::Kill { .. } => {
                self.explain_queued(None);
            }
            ApiRequest::ShowTask { id } => self.explain_one(&TaskId(id.as_str().into())),
            _ => {}
        }
        let answer = match request {
            ApiRequest::Submit {
                spec,
                idempotency_key,
            } => self.on_submit(spec, idempotency_key, now),
            ApiRequest::ListTasks(query) => {
                let (after, scan) = (query.page.as_ref())
                    .map_or((None, usize::MAX), |page| (page.after.as_ref(), page.scan));
                let (tasks, next) = self.task_slice(&query, after, scan);
                ApiReply::Tasks { tasks, next }
            }
            ApiRequest::Kill { id_prefix } => self.on_kill(&id_prefix, now, calls),
            ApiRequest::Reshuffle { dry_run } => self.on_reshuffle(dry_run, now, calls),
            ApiRequest::ListNodes => ApiReply::Nodes(self.node_views()),
            ApiRequest::TaskCounts => ApiReply::TaskCounts(self.task_counts()),
            ApiRequest::ListIntelligence => ApiReply::Intelligence(self.intelligence.clone()),
            ApiRequest::SetIntelligence {
                task,
                attribute,
                raw,
                source,
            } => self.on_set_intelligence(task, attribute, raw, source, now),
            ApiRequest::ClearIntelligence {
                task,
                attribute,
                source,
            } => match self.clear_intelligence(&task, &attribute, source, now) {
                true => ApiReply::IntelligenceChanged,
                false => ApiReply::NotFound(format!(
                    "no intelligence for task {task} attribute {attribute}"
                )),
            },
            ApiRequest::SyncIntelligence(changes) => self.on_sync_intelligence(changes, now),
            // Its reply waits for the new subscription (`reset`).
            ApiRequest::Reset => return self.on_reset(id, now, calls),
            ApiRequest::ShowTask { id } => match self.task_with_history(&id) {
                Some((view, history)) => ApiReply::Task(Box::new(view), history),
                None => ApiReply::NotFound(format!(
                    "no task with internal id {id} (live, or ended and still kept)"
                )),
            },
            // `run` answers it (the hub); it never reaches here.
            ApiRequest::Subscribe { .. } => {
                ApiReply::Unavailable("event streams are served by the run loop".to_string())
            }
            ApiRequest::Snapshot => ApiReply::Snapshot(Snapshot {
                nodes: self.node_views(),
                tasks: self.tasks.keys().map(|id| self.view(id)).collect(),
                intelligence: self.intelligence.clone(),
            }),
        };
        self.replies.push((id, answer));
    }

    /// A submit with an `Idempotency-Key` already in use answers as the first
    /// one did and changes nothing (or 409 for a different task); otherwise
    /// the key is kept, in the same turn as what the submit created.
    fn on_submit(&mut self, spec: TaskSpec, key: Option<String>, now: Now) -> ApiReply {
        let Some(key) = key else {
            return self.submit(spec, now);
        };
        let fingerprint = idempotency::fingerprint(&spec);
        match self.idempotency.seen(&key, &fingerprint, now.instant) {
            Seen::Retry(id) => {
                log::info!("submit retried with its idempotency key; nothing created id={id}");
                ApiReply::Submitted { id, note: None }
            }
            Seen::Conflict => ApiReply::Conflict(format!(
                "Idempotency-Key {key:?} was already used for a different request"
            )),
            Seen::New => {
                let id = spec.id.clone();
                let reply = self.submit(spec, now);
                self.touch(idempotency_key(&key));
                for dropped in self.idempotency.insert(key, fingerprint, id, now) {
                    self.touch(idempotency_key(&dropped));
                }
                reply
            }
        }
    }

    fn submit(&mut self, spec: TaskSpec, now: Now) -> ApiReply {
        let id = spec.id.clone();
        // Intelligence (an `sla` override included) is applied before the
        // SLA decides what to create, unlike the original.
        let (effective, _) = intelligence::apply(&spec, &self.intelligence);
        let mut note = None;
        match effective.sla {
            Sla::None => {
                self.add_task(spec, None, None, now);
            }
            Sla::Singleton => {
                let live: Vec<&TaskId> = self.instances.of(&id).collect();
                let leaving: Vec<&TaskId> = live
                    .iter()
                    .copied()
                    .filter(|task_id| {
                        self.tasks
                            .get(*task_id)
                            .is_some_and(|task| task.is_kill_requested())
                    })
                    .collect();
                if live.is_empty() {
                    self.add_task(spec, None, None, now);
                } else if leaving.len() == live.len() {
                    // Killed but not gone yet: the new one starts once Mesos confirms.
                    let predecessor = leaving.last().map(|task_id| (*task_id).clone());
                    self.add_task(spec, None, predecessor, now);
                } else {
                    log::info!("duplicate singleton ignored id={id}");
                    note = Some(self.already_running(&id));
                }
            }
            Sla::OnePerNode => {
                let has_copies = self.instances.has(&id);
                if self.services.contains_key(&id) && has_copies {
                    log::info!("duplicate one-per-node service ignored id={id}");
                    note = Some(self.already_running(&id));
                } else {
                    self.touch(service_key(&id));
                    self.services.insert(
                        id.clone(),
                        Service {
                            spec,
                            covered: BTreeSet::new(),
                        },
                    );
                    let agents: Vec<AgentId> = self.nodes.keys().cloned().collect();
                    self.add_missing_copies(&agents, now);
                }
            }
        }
        ApiReply::Submitted { id, note }
    }

    /// The note for a duplicate SLA submit: where the live instances are.
    fn already_running(&self, user_id: &str) -> String {
        let mut hosts = Vec::new();
        let mut pending = 0;
        for task in self
            .instances
            .of(user_id)
            .filter_map(|task_id| self.tasks.get(task_id))
        {
            match (&task.hostname, task.phase) {
                (Some(host), Phase::Active(_) | Phase::Launching) => hosts.push(&**host),
                _ => pending += 1,
            }
        }
        match (hosts.is_empty(), pending) {
            (true, _) => "already submitted, pending".to_string(),
            (false, 0) => format!("already running on {}", hosts.join(", ")),
            (false, _) => format!("already running on {}; {pending} pending", hosts.join(", ")),
        }
    }

    fn on_kill(&mut self, prefix: &str, now: Now, calls: &mut Vec<Call>) -> ApiReply {
        let mut matched: Vec<TaskId> = self
            .tasks
            .range(TaskId(prefix.into())..)
            .map(|(id, _)| id)
            .take_while(|id| id.0.starts_with(prefix))
            .cloned()
            .collect();
        // Internal ids drop spaces, so a prefix with a space can only be a
        // user id: match it there (issue 9, B11).
        let by_user_id = prefix.contains(' ');
        if by_user_id {
            matched.extend(self.instances.with_prefix(prefix).cloned());
            matched.sort();
            matched.dedup();
        }
        // A prefix that covers a service's id covers all of its copies,
        // present and future: the service ends with them.
        let services: Vec<String> = self
            .services
            .keys()
            .filter(|id| {
                internal_prefix(id).starts_with(prefix) || (by_user_id && id.starts_with(prefix))
            })
            .cloned()
            .collect();
        if matched.is_empty() && services.is_empty() {
            return ApiReply::NotFound(format!("no task id starts with {prefix}"));
        }
        // A service whose every copy is killed ends too, whatever the prefix.
        // Services are few; `matched` is in id order (a table range, or
        // sorted), so each copy is looked up, not searched for.
        let mut services = services;
        for service_id in self.services.keys() {
            if !services.contains(service_id)
                && self.instances.has(service_id)
                && (self.instances.of(service_id))
                    .all(|task_id| matched.binary_search(task_id).is_ok())
            {
                services.push(service_id.clone());
            }
        }
        let mut views = Vec::new();
        for task_id in matched {
            views.push(self.view(&task_id));
            self.note_kill(&task_id, KilledBy::User, now);
            self.kill(&task_id, now, calls);
        }
        // A service without a copy is listed as itself: its kill says so.
        for service_id in &services {
            if let Some(view) = self.service_view(service_id) {
                views.push(view);
            }
        }
        for service_id in services {
            log::info!("service removed id={service_id}");
            self.services.remove(&service_id);
            self.touch(service_key(&service_id));
        }
        ApiReply::Killed(views)
    }

    fn on_reshuffle(&mut self, dry_run: bool, now: Now, calls: &mut Vec<Call>) -> ApiReply {
        let chosen: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, task)| {
                task.spec.reshuffleable
                    && task.spec.sla != Sla::OnePerNode
                    && task.phase == Phase::Active(TaskState::Running)
                    && !task.is_kill_requested()
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut steps = Vec::new();
        for old_id in chosen {
            let Some(task) = self.tasks.get(&old_id) else {
                continue;
            };
            let (effective, changes) = intelligence::apply(task.requested(), &self.intelligence);
            let to_host = (!effective.node_name.is_empty()).then(|| effective.node_name.clone());
            steps.push(ReshuffleStep {
                id: task.spec.id.clone(),
                internal_id: old_id.clone(),
                from_host: task.hostname.as_deref().map(str::to_string),
                to_host,
                changes,
            });
            if dry_run {
                continue;
            }
            let requested = task.requested().clone();
            // The replacement waits for Mesos to confirm the old task is gone,
            // so placement sees its resources free (and a singleton is never doubled).
            let replacement = self.add_task(requested, None, Some(old_id.clone()), now);
            self.note_moved(&old_id, &replacement, now);
            self.note_kill(&old_id, KilledBy::Reshuffle, now);
            self.kill(&old_id, now, calls);
        }
        ApiReply::Reshuffled(steps)
    }

    fn on_mesos(&mut self, event: MesosEvent, now: Now, calls: &mut Vec<Call>) {
        match event {
            MesosEvent::Subscribed { framework_id } => self.on_subscribed(framework_id, now, calls),
            MesosEvent::Offers(offers) => {
                self.nodes_surveyed = true;
                self.on_offers(offers, now, calls)
            }
            MesosEvent::Rescind(offer_id) => {
                // Offers are used or declined in the turn they arrive, so a
                // rescind finds nothing to forget.
                log::debug!("offer rescinded offer={}", offer_id.0);
            }
            MesosEvent::Update(update) => self.on_update(update, now, calls),
            MesosEvent::AgentLost(agent_id) => self.on_agent_lost(&agent_id, now),
            MesosEvent::Disconnected { reason } => {
                self.notify(now, NoticeKind::Disconnected { reason });
                // A new round starts with the next subscription.
                self.subscribed = false;
                self.reconcile_round = None;
            }
            MesosEvent::FrameworkRemoved => self.on_framework_removed(now),
            MesosEvent::CallFailed { call, failure } => {
                self.on_call_failed(call, failure, now, calls)
            }
        }
    }

    fn on_subscribed(&mut self, framework_id: FrameworkId, now: Now, calls: &mut Vec<Call>) {
        // Decline filters outlive a failover to a new subscription (only a
        // deactivation clears them), so after a resubscription the next work
        // must REVIVE to be sure to see every node.
        self.idle_filters = self.framework_id.as_ref() == Some(&framework_id);
        if self.framework_id.as_ref() != Some(&framework_id) {
            self.touch(FRAMEWORK_KEY.to_string());
        }
        self.finish_resets(&framework_id);
        self.note_subscribed(&framework_id, now);
        self.framework_id = Some(framework_id);
        self.subscribed = true;
        if self.teardown_pending {
            self.teardown_pending = false;
            self.touch(META_KEY.to_string());
            log::warn!("reset: tearing down the stored framework; Mesos kills its tasks");
            calls.push(Call::Teardown);
            return;
        }
        // A (re)subscription un-suppresses us on the master; stay so until
        // the first offers have shown the registry every node.
        self.suppressed = false;
        self.nodes_surveyed = false;
        self.reconcile_round = None;
        self.start_reconciliation(now.instant, calls);
        let killing: Vec<TaskId> = self.index.killing().cloned().collect();
        for task_id in killing {
            self.send_kill(&task_id, now, calls);
        }
    }

    fn on_offers(&mut self, offers: Vec<Offer>, now: Now, calls: &mut Vec<Call>) {
        self.register_nodes(&offers, now);
        let offered: Vec<AgentId> = offers.iter().map(|offer| offer.agent_id.clone()).collect();
        self.add_missing_copies(&offered, now);
        let waiting = self.waiting_requests();
        let placement = {
            let requests: Vec<Request<'_>> = waiting
                .iter()
                .filter_map(|id| {
                    let task = self.tasks.get(id)?;
                    Some(Request {
                        task_id: id,
                        spec: &task.spec,
                        agent: task.rare().pinned_agent.as_ref(),
                    })
                })
                .collect();
            placement::place(&requests, &offers, &self.role)
        };
        // Replacements waiting for their predecessor count as waiting too:
        // a long filter now would keep them off these nodes later.
        let still_waiting =
            !placement.unplaced.is_empty() || waiting.len() < self.index.pending_count();
        // The registry keeps what each node has left after these launches:
        // the remainder of each offer used, each offer nothing went on, all
        // of one agent's offers added up (at the end of the round).
        let by_id: BTreeMap<&OfferId, &Offer> =
            offers.iter().map(|offer| (&offer.id, offer)).collect();
        let mut remainders: BTreeMap<OfferId, Offer> = BTreeMap::new();
        for (offer_id, _, placed) in &placement.launches {
            if let Some(offer) = by_id.get(offer_id).copied() {
                let pieces: Vec<_> = placed
                    .iter()
                    .flat_map(|(_, pieces)| pieces.iter().cloned())
                    .collect();
                remainders.insert(offer_id.clone(), placement::remainder(offer, &pieces));
            }
        }
        let unplaced: Vec<TaskId> = placement
            .unplaced
            .iter()
            .map(|(task_id, _)| task_id.clone())
            .collect();
        self.note_round(&placement.decisions, &offers, now);
        let accept_refuse = if still_waiting {
            REFUSE_SECONDS_MORE_WORK
        } else {
            REFUSE_SECONDS_BUSY
        };
        let unused = self.apply_placement(placement, &offers, accept_refuse, calls);
        self.explain_pending(&unplaced);
        if !unused.is_empty() {
            let refuse_seconds = self.decline_filter(still_waiting);
            calls.push(Call::Decline {
                offer_ids: unused,
                refuse_seconds,
            });
        }
        let mut left: BTreeMap<AgentId, Offer> = BTreeMap::new();
        for offer in offers {
            let offer = remainders.remove(&offer.id).unwrap_or(offer);
            match left.get_mut(&offer.agent_id) {
                Some(sum) => placement::absorb(sum, offer),
                None => {
                    left.insert(offer.agent_id.clone(), offer);
                }
            }
        }
        for (agent_id, offer) in left {
            if let Some(node) = self.nodes.get_mut(&agent_id) {
                node.offered = offer;
            }
        }
    }

    /// The node registry learns every agent that offers.
    fn register_nodes(&mut self, offers: &[Offer], now: Now) {
        let now_secs = unix_seconds(now.wall);
        for offer in offers {
            let attribute = |name: &str| offer.attributes.get(name).map_or("", String::as_str);
            // A known node is updated in place: its offer is moved in at the
            // end of the round (`on_offers`), so nothing is cloned here.
            if let Some(node) = self.nodes.get_mut(&offer.agent_id) {
                node.time_of_last_offer = now_secs;
                if *node.hostname != *offer.hostname {
                    node.hostname = offer.hostname.as_str().into();
                }
                for (field, value) in [
                    (&mut node.node_type, attribute("nodetype")),
                    (&mut node.node_name, attribute("nodename")),
                ] {
                    if field != value {
                        *field = value.to_string();
                    }
                }
                continue;
            }
            let node = Node {
                hostname: offer.hostname.as_str().into(),
                node_type: attribute("nodetype").to_string(),
                node_name: attribute("nodename").to_string(),
                time_of_last_offer: now_secs,
                offered: offer.clone(),
            };
            if self.nodes.insert(offer.agent_id.clone(), node).is_none() {
                log::info!(
                    "node registered agent={} hostname={}",
                    offer.agent_id.0,
                    offer.hostname
                );
                self.note_node_joined(&offer.agent_id, &offer.hostname, now);
            }
        }
    }

    /// The pending tasks that may be placed now, oldest first: not killed,
    /// past their restart backoff, and not waiting for a predecessor; at most
    /// `MAX_PLACE_REQUESTS` (from the index, no scan).
    fn waiting_requests(&self) -> Vec<TaskId> {
        self.index
            .ready()
            .take(MAX_PLACE_REQUESTS)
            .cloned()
            .collect()
    }

    /// Sends the launches of `placement`, marks their tasks launching and
    /// notes why the others wait; returns the offers nothing was placed on.
    fn apply_placement(
        &mut self,
        placement: placement::Placement,
        offers: &[Offer],
        refuse_seconds: f64,
        calls: &mut Vec<Call>,
    ) -> Vec<OfferId> {
        // This round's reasons are for the log; the list's come from the
        // whole registry (`explain_pending`). Up to `MAX_PLACE_REQUESTS` of
        // them: not even walked unless debug is on.
        if log::log_enabled!(log::Level::Debug) {
            for (task_id, reason) in &placement.unplaced {
                log::debug!("task not placed task={} reason={reason}", task_id.0);
            }
        }
        for (offer_id, agent_id, placed) in placement.launches {
            // The registry's copies of the id and hostname: the tasks of a
            // node share their text. Every offer's agent was registered this
            // turn (`register_nodes`); the offer is only a fallback.
            let (agent_id, hostname): (AgentId, Arc<str>) =
                match self.nodes.get_key_value(&agent_id) {
                    Some((known, node)) => (known.clone(), node.hostname.clone()),
                    None => {
                        let offer = offers.iter().find(|offer| offer.agent_id == agent_id);
                        let hostname = offer.map_or("", |offer| offer.hostname.as_str());
                        (agent_id, hostname.into())
                    }
                };
            let mut tasks = Vec::new();
            for (task_id, resources) in placed {
                let launched = self.update_task(&task_id, |task| {
                    task.phase = Phase::Launching;
                    task.agent_id = Some(agent_id.clone());
                    task.hostname = Some(hostname.clone());
                    task.pending_reason = None;
                    task.spec.clone()
                });
                let Some(spec) = launched else {
                    continue;
                };
                log::info!(
                    "task launched task={} agent={} hostname={hostname}",
                    task_id.0,
                    agent_id.0
                );
                tasks.push(Launch {
                    task_id: task_id.clone(),
                    spec,
                    resources,
                });
                self.dirty.insert(task_key(&task_id));
            }
            calls.push(Call::Launch {
                agent_id,
                offer_ids: vec![offer_id],
                tasks,
                refuse_seconds,
            });
        }
        placement.unused
    }

    /// Queues `task_ids` to have why they wait judged against the whole node
    /// registry (every node's last offered resources), so the reason does
    /// not depend on which offers this round brought.
    fn explain_pending(&mut self, task_ids: &[TaskId]) {
        for task_id in task_ids {
            if let Some(task) = self.tasks.get(task_id) {
                self.unexplained.insert((task.seq, task_id.clone()));
            }
        }
    }

    /// Sets the reason of the oldest `MAX_EXPLAIN_PER_TURN` queued tasks
    /// still pending, against the registry as it is now; with
    /// `accepted_before`, only of tasks accepted before it. Returns whether
    /// it took any task off the queue.
    ///
    /// Not part of a turn. A request that shows reasons (a list, a kill, the
    /// Redis snapshot) calls it first, so the oldest `MAX_EXPLAIN_PER_TURN`
    /// queued tasks show judged reasons and younger ones may still show
    /// "waiting for offers" (one task shown is judged itself, `explain_one`);
    /// the run loop calls it once per wake-up when no event is waiting, for
    /// tasks accepted `EXPLAIN_AFTER` ago or earlier, so a backlog is judged
    /// a slice per event (the tick included), as before. In a burst, the
    /// next offers place most new tasks within milliseconds, and judging
    /// each one against the registry at its submit cost three times what
    /// the submit did.
    pub fn explain_queued(&mut self, accepted_before: Option<Instant>) -> bool {
        if self.nodes.is_empty() {
            // Nothing to judge against: the reasons say "waiting for offers".
            let had = !self.unexplained.is_empty();
            self.unexplained.clear();
            return had;
        }
        let mut task_ids = Vec::new();
        let mut took = false;
        while task_ids.len() < MAX_EXPLAIN_PER_TURN {
            let Some((_, task_id)) = self.unexplained.first() else {
                break;
            };
            let task = self.tasks.get(task_id);
            // Queued by seq, so by acceptance: the rest are younger still.
            let young = |at: Instant| accepted_before.is_some_and(|before| at >= before);
            if task.is_some_and(|task| task.accepted_at.is_some_and(young)) {
                break;
            }
            let pending = task.is_some_and(|task| task.phase == Phase::Pending);
            let Some((_, task_id)) = self.unexplained.pop_first() else {
                break;
            };
            took = true;
            if pending {
                task_ids.push(task_id);
            }
        }
        // Most rounds place everything: then there is no registry to build.
        if !task_ids.is_empty() {
            self.judge(&task_ids);
        }
        took
    }

    /// Judges `task_id`'s reason now if it is queued (`GET /client/task/<id>`).
    fn explain_one(&mut self, task_id: &TaskId) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if self.unexplained.remove(&(task.seq, task_id.clone()))
            && task.phase == Phase::Pending
            && !self.nodes.is_empty()
        {
            self.judge(std::slice::from_ref(task_id));
        }
    }

    /// Sets the reason of each of `task_ids` against the registry as it is.
    fn judge(&mut self, task_ids: &[TaskId]) {
        let nodes: Vec<&Offer> = self.nodes.values().map(|node| &node.offered).collect();
        // Built once: a turn may explain hundreds of tasks.
        let registry = placement::Registry::new(&nodes, &self.role);
        let reasons: Vec<(TaskId, String)> = task_ids
            .iter()
            .filter_map(|task_id| {
                let task = self.tasks.get(task_id)?;
                let request = Request {
                    task_id,
                    spec: &task.spec,
                    agent: task.rare().pinned_agent.as_ref(),
                };
                Some((task_id.clone(), registry.explain(&request)))
            })
            .collect();
        for (task_id, reason) in reasons {
            if let Some(task) = self.tasks.get_mut(&task_id) {
                task.pending_reason = Some(reason);
                self.list_cache.forget(&task_id);
            }
        }
    }

    /// What a pending task shows: not connected, or waiting for the task it
    /// replaces (an SLA), comes before the stored placement reason.
    fn pending_reason(&self, task: &Task) -> Option<String> {
        if let (false, Some(since)) = (self.subscribed, self.disconnected_since) {
            return Some(format!(
                "not connected to the Mesos master since {}",
                utc_text(since)
            ));
        }
        if let Some(predecessor) = (task.rare().waits_for)
            .as_ref()
            .filter(|id| self.tasks.contains_key(*id))
        {
            let why = if task.spec.sla == Sla::Singleton {
                "singleton"
            } else {
                "reshuffle"
            };
            return Some(format!("{why}: waiting for {} to end first", predecessor.0));
        }
        task.pending_reason.clone()
    }

    /// The refuse filter for declined offers: short while work waits, long
    /// (and remembered, so new work revives) when idle.
    fn decline_filter(&mut self, still_waiting: bool) -> f64 {
        if still_waiting {
            REFUSE_SECONDS_BUSY
        } else {
            self.idle_filters = true;
            REFUSE_SECONDS_IDLE
        }
    }

    fn on_update(&mut self, update: TaskUpdate, now: Now, calls: &mut Vec<Call>) {
        // Acknowledge exactly the updates that carry a uuid, known task or not.
        if let Some(uuid) = &update.uuid {
            match &update.agent_id {
                Some(agent_id) => calls.push(Call::Acknowledge {
                    agent_id: agent_id.clone(),
                    task_id: update.task_id.clone(),
                    uuid: uuid.clone(),
                }),
                None => log::warn!(
                    "update with uuid but no agent cannot be acknowledged task={}",
                    update.task_id.0
                ),
            }
        }
        let grace = if self.unknown_grace.is_zero() {
            DEFAULT_UNKNOWN_GRACE
        } else {
            self.unknown_grace
        };
        // One lookup of the task for what every update of it records, so a
        // reconciliation answer that confirms what we know (each of a
        // restart's 200,000 at 100k tasks) costs that lookup and a history
        // count, and nothing is published, reindexed or written for it.
        let Some(task) = self.tasks.get_mut(&update.task_id) else {
            self.note_answer(&update.task_id);
            self.on_stranger(&update, calls);
            return;
        };
        let known = task.phase;
        let news = known != Phase::Active(update.state);
        // A reconciliation answer that changes nothing is not news: one
        // summary line per round ("reconciliation complete") says it.
        let level = if news {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "task status task={} state={} message={:?}",
            update.task_id.0,
            update.state.as_str(),
            update.message
        );
        let pinned_node_gone = (task.rare().pinned_agent)
            .as_ref()
            .is_some_and(|agent| self.nodes_surveyed && !self.nodes.contains_key(agent));
        let outcome = update_outcome(&update, task, pinned_node_gone, grace, now.instant);
        let notice = news.then(|| Self::status_notice(&update, task, &self.nodes));
        task.trail.push_status(
            trail::unix_millis(now.wall),
            update.state,
            &update.reason_name,
            &update.message,
        );
        let confirms = update.reason == StatusReason::Reconciliation && !news;
        let changed = record_update(
            task,
            &update,
            now,
            confirms,
            &self.nodes,
            &mut self.start_latencies,
        );
        if outcome != Outcome::Unconfirmed {
            self.note_answer(&update.task_id);
        }
        if let Some(kind) = notice {
            self.notify(now, kind);
        }
        if changed {
            // The agent may have changed.
            self.reindex(&update.task_id);
        }
        let task_id = &update.task_id;
        // Whether the outcome may have changed the task's phase (or removed
        // it); the two that leave it alone need no second lookup.
        let settled = matches!(outcome, Outcome::Stale)
            || matches!(outcome, Outcome::Progress(state) if known == Phase::Active(state));
        match outcome {
            Outcome::Stale => {}
            Outcome::Unconfirmed => self.keep_asking(task_id, grace, now.instant),
            // The same state again (a reconciliation answer) changes
            // nothing indexed or listed: no reindex, the list entry stays.
            Outcome::Progress(state) if known != Phase::Active(state) => {
                self.update_task(task_id, |task| task.phase = Phase::Active(state));
            }
            Outcome::Progress(_) => {}
            Outcome::Relaunch { agent_unknown } => {
                let why = format!("{}: {}", update.state.as_str(), update.message);
                let agent = self.relaunch(task_id, &why, now);
                if let Some(agent) = agent.filter(|_| agent_unknown) {
                    // A copy pinned to that agent goes with it.
                    self.on_agent_lost(&agent, now);
                }
            }
            Outcome::DropForGoneNode(agent) => {
                // A copy for a node that is gone comes back with the node.
                self.end_task(
                    task_id,
                    update.state,
                    &update.message,
                    &update.reason_name,
                    now,
                );
                self.uncover(&agent);
            }
            Outcome::Restart { restarts } => self.restart(task_id, restarts, &update, now),
            Outcome::Remove => {
                if update.state == TaskState::Error {
                    log::error!(
                        "task rejected by mesos task={} message={:?}",
                        task_id.0,
                        update.message
                    );
                }
                self.end_task(
                    task_id,
                    update.state,
                    &update.message,
                    &update.reason_name,
                    now,
                );
            }
        }
        // Only what changes the record is written: an answer that confirms
        // what we know writes nothing (a restart at 100k tasks gets 200k).
        if changed || (!settled && self.tasks.get(task_id).map(|task| task.phase) != Some(known)) {
            self.dirty.insert(task_key(task_id));
        }
    }

    /// An update for a task we do not know. Ours by the framework id,
    /// unknown to us: nobody wants it.
    fn on_stranger(&mut self, update: &TaskUpdate, calls: &mut Vec<Call>) {
        log::warn!(
            "update for unknown task task={} state={}",
            update.task_id.0,
            update.state.as_str()
        );
        if !update.state.is_terminal() && self.subscribed {
            log::warn!(
                "killing a task this scheduler does not know task={}",
                update.task_id.0
            );
            calls.push(Call::Kill {
                task_id: update.task_id.clone(),
                agent_id: update.agent_id.clone(),
            });
        }
    }

    /// Puts a launch the master never ran (or lost) back to pending under a
    /// new TaskID; returns the agent it was on.
    ///
    /// Mesos says a LOST, UNKNOWN, GONE, GONE_BY_OPERATOR or DROPPED task
    /// "may still be running" (an agent that has not re-registered yet), and
    /// a launch under a TaskID the master still knows fails with "Task has
    /// duplicate ID". So the relaunch is a new instance of the same task: the
    /// user id, the id prefix, creation order, restarts and pinned agent stay.
    fn relaunch(&mut self, task_id: &TaskId, why: &str, now: Now) -> Option<AgentId> {
        let mut task = self.take_task(task_id)?;
        self.dirty.insert(task_key(task_id));
        let new_id = self.new_task_id(&task.spec.id, now);
        log::warn!(
            "launch lost, task back to pending under a new id task={} new_task={} why={why:?}",
            task_id.0,
            new_id.0
        );
        if self.instances.has(&task.spec.id) {
            self.instances.remove(&task.spec.id, task_id);
            self.instances.add(&task.spec.id, new_id.clone());
        }
        // A replacement waiting for this task now waits for its new instance.
        for other_id in self.index.successors(task_id) {
            self.update_task(&other_id, |other| {
                other.change_rare(|rare| rare.waits_for = Some(new_id.clone()))
            });
            self.dirty.insert(task_key(&other_id));
        }
        let agent = task.agent_id.clone();
        task.back_to_pending(format!("relaunching after {why}"));
        self.dirty.insert(task_key(&new_id));
        self.touch(META_KEY.to_string());
        self.insert_task(new_id.clone(), task);
        self.note_relaunched(&new_id, why, now);
        agent
    }

    /// A fresh internal id for `user_id`: `<id without spaces>-<unix nanos>`,
    /// strictly above every id handed out before.
    fn new_task_id(&mut self, user_id: &str, now: Now) -> TaskId {
        let nanos = now
            .wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .max(self.last_id_nanos.saturating_add(1));
        self.last_id_nanos = nanos;
        TaskId(format!("{}-{nanos}", internal_prefix(user_id)).into())
    }

    /// Replaces an ended task with a new instance under its restart policy.
    fn restart(&mut self, task_id: &TaskId, restarts: u32, update: &TaskUpdate, now: Now) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let (requested, pinned) = (task.requested().clone(), task.rare().pinned_agent.clone());
        let delay = restart_delay(restarts);
        log::warn!(
            "task ended, restarting task={} state={} policy={} restart={restarts} in_s={}",
            task_id.0,
            update.state.as_str(),
            requested.restart.as_str(),
            delay.as_secs()
        );
        self.end_task(
            task_id,
            update.state,
            &update.message,
            &update.reason_name,
            now,
        );
        let replacement = self.add_task(requested, pinned, None, now);
        self.note_restarted(task_id, &replacement, restarts, delay.as_secs(), now);
        // Its reason is the backoff, not the registry (`explain_queued`).
        let seq = self.update_task(&replacement, |task| {
            task.change_rare(|rare| {
                rare.restarts = restarts;
                rare.backoff = Some(delay);
                rare.not_before = Some(now.instant + delay);
            });
            task.pending_reason = Some(format!(
                "restart {restarts} after {}{}{}, not before {}s from now",
                update.state.as_str(),
                if update.message.is_empty() { "" } else { ": " },
                update.message,
                delay.as_secs()
            ));
            task.seq
        });
        if let Some(seq) = seq {
            self.unexplained.remove(&(seq, replacement));
        }
    }

    /// FAILURE for an agent: it is unreachable or removed. A removed agent
    /// never comes back under its id, but an unreachable one does (Mesos
    /// keeps the AgentID of an agent that re-registers), with its tasks,
    /// which are TASK_UNREACHABLE meanwhile, not terminal.
    ///
    /// So the node leaves the registry, and its one-per-node copies that
    /// never launched (they can only run there) are dropped; a service stays
    /// covered on the agent while it has a launched copy there, so a node
    /// that comes back never gets a second copy. The agent is uncovered once
    /// that copy ends (`Outcome::DropForGoneNode`).
    fn on_agent_lost(&mut self, agent_id: &AgentId, now: Now) {
        let node = self.nodes.remove(agent_id);
        if let Some(node) = &node {
            log::warn!("agent lost agent={} hostname={}", agent_id.0, node.hostname);
        }
        self.note_node_lost(agent_id, node.map(|node| node.hostname.to_string()), now);
        let stranded: Vec<TaskId> = self
            .index
            .on_agent(agent_id)
            .filter(|id| {
                self.tasks.get(*id).is_some_and(|task| {
                    task.phase == Phase::Pending
                        && task.rare().pinned_agent.as_ref() == Some(agent_id)
                })
            })
            .cloned()
            .collect();
        for task_id in stranded {
            self.remove_task(&task_id);
        }
        self.uncover(agent_id);
    }

    /// Starts a reconciliation round: explicitly about every task the master
    /// may know, so launches lost meanwhile come back to pending (reference
    /// §4.5), then implicitly: the master names every task it runs for us,
    /// and those we do not know are killed (see `on_stranger`).
    fn start_reconciliation(&mut self, now: Instant, calls: &mut Vec<Call>) {
        let launched = self.launched_tasks();
        log::debug!("reconciliation started tasks={}", launched.len());
        self.ask_about(launched.clone(), now, calls);
        calls.push(Call::Reconcile(Vec::new()));
        self.last_reconcile = Some(now);
    }

    /// Asks the master about `tasks` now and adds them to the round (one
    /// starts if none is running), so they are asked again until answered.
    fn ask_about(
        &mut self,
        tasks: Vec<(TaskId, Option<AgentId>)>,
        now: Instant,
        calls: &mut Vec<Call>,
    ) {
        if tasks.is_empty() {
            return;
        }
        let round = self
            .reconcile_round
            .get_or_insert_with(|| ReconcileRound::new(now));
        round.asked += tasks.len();
        round
            .unanswered
            .extend(tasks.iter().map(|(task_id, _)| task_id.clone()));
        calls.extend(reconcile_calls(tasks, RECONCILE_BATCH));
    }

    /// A task the master answered TASK_UNKNOWN about stays in the round, to
    /// be asked again at its next retry (not at once: the master would only
    /// say the same) until its agent re-registers or the grace runs out.
    fn keep_asking(&mut self, task_id: &TaskId, grace: Duration, now: Instant) {
        let round = self
            .reconcile_round
            .get_or_insert_with(|| ReconcileRound::new(now));
        round.unanswered.insert(task_id.clone());
        round.asked = round.asked.max(round.unanswered.len());
        // Ask again no later than the grace ends, so the relaunch is not
        // held back by a long retry delay.
        let unknown_since = (self.tasks.get(task_id)).and_then(|task| task.rare().unknown_since);
        if let Some(deadline) = unknown_since.map(|since| since + grace) {
            round.retry_at = round.retry_at.min(deadline.max(now));
        }
        self.update_task(task_id, |task| {
            task.phase = Phase::Active(TaskState::Unknown)
        });
        log::debug!(
            "task unknown to the master, waiting for its agent task={} grace_s={}",
            task_id.0,
            grace.as_secs()
        );
    }

    /// Any update about a task answers for it in the round.
    fn note_answer(&mut self, task_id: &TaskId) {
        if let Some(round) = &mut self.reconcile_round {
            if round.unanswered.remove(task_id) && round.unanswered.is_empty() {
                log::info!(
                    "reconciliation complete tasks={} retries={}",
                    round.asked,
                    round.retries
                );
                self.reconcile_round = None;
            }
        }
    }

    /// Asks again about the tasks of the round that have not answered yet
    /// (and still wait for one: not removed, not back to pending).
    fn retry_reconciliation(&mut self, now: Instant, calls: &mut Vec<Call>) {
        let Some(round) = &mut self.reconcile_round else {
            return;
        };
        // Tasks removed or back to pending have left `unanswered` already
        // (`reindex`): no filtering pass over the round.
        if round.unanswered.is_empty() {
            log::info!(
                "reconciliation complete tasks={} retries={}",
                round.asked,
                round.retries
            );
            self.reconcile_round = None;
            return;
        }
        if now < round.retry_at {
            return;
        }
        round.retries += 1;
        log::warn!(
            "reconciliation retry retry={} unanswered={} of={} next_in_s={}",
            round.retries,
            round.unanswered.len(),
            round.asked,
            (round.delay * 2).min(RECONCILE_RETRY_MAX).as_secs()
        );
        round.delay = (round.delay * 2).min(RECONCILE_RETRY_MAX);
        round.retry_at = now + round.delay;
        // Every id is in the table (`reindex` keeps it so). None is looked
        // up by indexing, so a slip there cannot stop the state thread; an
        // id the table lacks leaves the round (it would never answer).
        let tasks: Vec<_> = round
            .unanswered
            .iter()
            .filter_map(|task_id| {
                let task = self.tasks.get(task_id)?;
                Some((task_id.clone(), task.agent_id.clone()))
            })
            .collect();
        if tasks.len() < round.unanswered.len() {
            let tasks = &self.tasks;
            round
                .unanswered
                .retain(|task_id| tasks.contains_key(task_id));
        }
        calls.extend(reconcile_calls(tasks, RECONCILE_BATCH));
    }

    /// Every task Mesos may know, with its agent: what explicit
    /// reconciliation asks about.
    fn launched_tasks(&self) -> Vec<(TaskId, Option<AgentId>)> {
        let mut launched =
            Vec::with_capacity(self.tasks.len() - self.index.phase_count(Phase::Pending));
        launched.extend(
            self.tasks
                .iter()
                .filter(|(_, task)| task.phase != Phase::Pending)
                .map(|(id, task)| (id.clone(), task.agent_id.clone())),
        );
        launched
    }

    /// Uncovers `agent_id` for every service without a copy still pinned
    /// there, so the node gets a copy again when it offers.
    fn uncover(&mut self, agent_id: &AgentId) {
        // The services with a copy pinned there, from the agent's tasks.
        let with_copy: BTreeSet<&str> = self
            .index
            .on_agent(agent_id)
            .filter_map(|task_id| self.tasks.get(task_id))
            .filter(|task| task.rare().pinned_agent.as_ref() == Some(agent_id))
            .map(|task| task.spec.id.as_str())
            .collect();
        for (id, service) in self.services.iter_mut() {
            let has_copy = with_copy.contains(id.as_str());
            if !has_copy && service.covered.remove(agent_id) {
                self.dirty.insert(service_key(id));
            }
        }
    }

    fn on_framework_removed(&mut self, now: Now) {
        // The master killed everything of the old framework: what the user
        // still wants goes back to pending under the new one.
        self.framework_id = None;
        self.touch(FRAMEWORK_KEY.to_string());
        self.subscribed = false;
        // A reset waiting to tear the old framework down has nothing left
        // to do: tearing down the new one would kill what comes next.
        if std::mem::take(&mut self.teardown_pending) {
            self.touch(META_KEY.to_string());
        }
        let killed: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, task)| task.is_kill_requested())
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in killed {
            let message = "framework removed";
            self.end_task(&task_id, TaskState::Killed, message, "", now);
        }
        let keys: Vec<String> = self.tasks.keys().map(task_key).collect();
        self.dirty.extend(keys);
        for task in self.tasks.values_mut() {
            task.back_to_pending("waiting for offers".to_string());
        }
        // Every task changed: one rebuild rather than one update each.
        self.rebuild_indexes();
    }

    /// A call that did not certainly take effect (the caller retries every
    /// other failure itself until it is delivered).
    fn on_call_failed(
        &mut self,
        call: Call,
        failure: CallFailure,
        now: Now,
        calls: &mut Vec<Call>,
    ) {
        match (call, failure) {
            (
                Call::Launch {
                    agent_id,
                    offer_ids,
                    tasks,
                    ..
                },
                CallFailure::OutcomeUnknown(reason),
            ) => {
                // ACCEPT is not idempotent: re-sending it would launch twice or
                // come back TASK_DROPPED "invalid offers" even if the first one
                // worked. The tasks stay launching and reconciliation decides.
                // The decline frees the offers if the ACCEPT never arrived; the
                // master drops a decline of offers it already used.
                log::warn!(
                    "launch outcome unknown, reconciling tasks={} reason={reason}",
                    tasks.len()
                );
                let asked: Vec<(TaskId, Option<AgentId>)> = tasks
                    .into_iter()
                    .filter(|launch| {
                        self.tasks
                            .get(&launch.task_id)
                            .is_some_and(|task| task.phase == Phase::Launching)
                    })
                    .map(|launch| (launch.task_id, Some(agent_id.clone())))
                    .collect();
                if self.subscribed {
                    self.ask_about(asked, now.instant, calls);
                }
                calls.push(Call::Decline {
                    offer_ids,
                    refuse_seconds: REFUSE_SECONDS_BUSY,
                });
            }
            (
                Call::Launch {
                    offer_ids, tasks, ..
                },
                CallFailure::Refused(reason),
            ) => {
                // The master did not act: the tasks wait for another offer
                // (under new ids, so no launch can ever collide), and the
                // offers are given back.
                log::warn!(
                    "launch refused, tasks back to pending tasks={} reason={reason}",
                    tasks.len()
                );
                let update_reason = format!("launch refused: {reason}");
                for launch in tasks {
                    match self.tasks.get(&launch.task_id) {
                        Some(task) if task.phase != Phase::Launching => {}
                        // Killed meanwhile: it never ran, so it is gone.
                        Some(task) if task.is_kill_requested() => {
                            let message = "killed before launch";
                            self.end_task(&launch.task_id, TaskState::Killed, message, "", now);
                        }
                        Some(_) => {
                            self.relaunch(&launch.task_id, &update_reason, now);
                        }
                        None => {}
                    }
                }
                calls.push(Call::Decline {
                    offer_ids,
                    refuse_seconds: REFUSE_SECONDS_BUSY,
                });
            }
            (call @ (Call::Suppress | Call::Revive), failure) => {
                // The master's suppression is not what we last told it:
                // assume it kept the other one, and decide again after a pause.
                log::warn!(
                    "{} refused, deciding suppression again reason={}",
                    if call == Call::Suppress {
                        "SUPPRESS"
                    } else {
                        "REVIVE"
                    },
                    failure.reason()
                );
                self.suppressed = call == Call::Revive;
                if call == Call::Revive {
                    self.idle_filters = true;
                }
                self.suppression_hold_until = Some(now.instant + SUPPRESSION_RETRY);
            }
            (Call::Kill { task_id, .. }, failure) => {
                // A known task's kill is sent again after `KILL_RETRY`.
                if let Some(suffix) = self.refused_log.admit(now.instant) {
                    log::warn!(
                        "kill refused task={} reason={}{suffix}",
                        task_id.0,
                        failure.reason()
                    );
                }
            }
            (call, failure) => {
                if let Some(suffix) = self.refused_log.admit(now.instant) {
                    log::warn!(
                        "call refused call={} reason={}{suffix}",
                        call.name(),
                        failure.reason()
                    );
                }
            }
        }
    }

    fn on_tick(&mut self, now: Now, calls: &mut Vec<Call>) {
        self.expire_resets(now.instant);
        for key in self.idempotency.expire(now.instant) {
            self.touch(idempotency_key(&key));
        }
        if !self.subscribed {
            return;
        }
        self.retry_reconciliation(now.instant, calls);
        let interval = if self.reconcile_interval.is_zero() {
            DEFAULT_RECONCILE_INTERVAL
        } else {
            self.reconcile_interval
        };
        if self.reconcile_round.is_none()
            && self
                .last_reconcile
                .is_some_and(|at| now.instant.saturating_duration_since(at) >= interval)
        {
            self.start_reconciliation(now.instant, calls);
        }
        // Kills unanswered for `KILL_RETRY`, or never sent by this process
        // (restored): from the deadline queue, no scan.
        for task_id in self.index.kills_due(now.instant) {
            self.send_kill(&task_id, now, calls);
        }
    }

    /// Suppress when nothing can be placed; revive when something can.
    /// One-per-node services keep offers coming: offers are the only way
    /// Mesos tells a framework that a node joined.
    fn update_suppression(&mut self, now: Now, calls: &mut Vec<Call>) {
        if !self.subscribed
            || self
                .suppression_hold_until
                .is_some_and(|until| now.instant < until)
        {
            return;
        }
        self.suppression_hold_until = None;
        let work_waiting = self.index.pending_count() > 0;
        let wants_offers = !self.nodes_surveyed || !self.services.is_empty() || work_waiting;
        // Work that arrives after idle declines would otherwise wait out the
        // long filter on every node it was declined on.
        if (wants_offers && self.suppressed) || (work_waiting && self.idle_filters) {
            self.suppressed = false;
            self.idle_filters = false;
            calls.push(Call::Revive);
        } else if !wants_offers && !self.suppressed {
            self.suppressed = true;
            calls.push(Call::Suppress);
        }
    }

    /// Creates a copy of every one-per-node service on every matching node
    /// of `agents` that has never had one. A node gets its copy when it
    /// offers (an agent uncovered is out of the registry until it offers
    /// again), so an OFFERS event looks at its own agents only.
    fn add_missing_copies(&mut self, agents: &[AgentId], now: Now) {
        let mut copies = Vec::new();
        for service in self.services.values_mut() {
            for (agent_id, node) in agents
                .iter()
                .filter_map(|agent_id| Some((agent_id, self.nodes.get(agent_id)?)))
            {
                let matches = (service.spec.node_type.is_empty()
                    || service.spec.node_type == node.node_type)
                    && (service.spec.node_name.is_empty()
                        || service.spec.node_name == node.node_name);
                if matches && service.covered.insert(agent_id.clone()) {
                    self.dirty.insert(service_key(&service.spec.id));
                    let mut spec = service.spec.clone();
                    spec.node_name = if node.node_name.is_empty() {
                        node.hostname.to_string()
                    } else {
                        node.node_name.clone()
                    };
                    copies.push((spec, agent_id.clone()));
                }
            }
        }
        for (spec, agent_id) in copies {
            self.add_task(spec, Some(agent_id), None, now);
        }
    }

    /// Creates a pending task from what the user asked for, with the current
    /// intelligence applied. One-per-node copies (`pinned_agent`) keep their
    /// node: a `nodename`, `nodetype` or `sla` override must not pin every
    /// copy to one node (the original's bug); mem and cpus still apply.
    fn add_task(
        &mut self,
        requested: TaskSpec,
        pinned_agent: Option<AgentId>,
        waits_for: Option<TaskId>,
        now: Now,
    ) -> TaskId {
        let (mut spec, mut applied) = intelligence::apply(&requested, &self.intelligence);
        if pinned_agent.is_some() {
            spec.node_name = requested.node_name.clone();
            spec.node_type = requested.node_type.clone();
            spec.sla = requested.sla;
            applied.retain(|(attribute, _)| attribute == "mem" || attribute == "cpus");
        }
        let task_id = self.new_task_id(&spec.id, now);
        log::info!("task accepted task={} sla={}", task_id.0, spec.sla.as_str());
        self.instances.add(&spec.id, task_id.clone());
        let rare = TaskRare {
            requested: (requested != spec).then(|| Box::new(requested)),
            applied,
            pinned_agent,
            waits_for,
            ..TaskRare::default()
        };
        let task = Task {
            spec: Arc::new(spec),
            phase: Phase::Pending,
            agent_id: None,
            hostname: None,
            docker: DockerInfo::default(),
            created_at: unix_seconds(now.wall),
            status_message: String::new(),
            pending_reason: Some("waiting for offers".to_string()),
            kill_requested: false,
            seq: self.next_seq,
            running_since: None,
            accepted_at: Some(now.instant),
            trail: trail::Trail::default(),
            rare: rare.boxed(),
        };
        self.next_seq += 1;
        self.touch(task_key(&task_id));
        self.touch(META_KEY.to_string());
        self.insert_task(task_id.clone(), task);
        self.note_submitted(&task_id, now);
        if !self.nodes.is_empty() {
            // Known nodes give a true reason before the next offers: at the
            // end of this turn (`explain_queued`), or within a few turns of
            // a burst.
            self.explain_pending(std::slice::from_ref(&task_id));
        }
        task_id
    }

    fn remove_task(&mut self, task_id: &TaskId) {
        if let Some(task) = self.take_task(task_id) {
            self.touch(task_key(task_id));
            log::info!("task removed task={}", task_id.0);
            self.instances.remove(&task.spec.id, task_id);
        }
    }

    /// Drops a pending task at once; asks Mesos to kill a launched one.
    fn kill(&mut self, task_id: &TaskId, now: Now, calls: &mut Vec<Call>) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.phase == Phase::Pending {
            self.end_task(task_id, TaskState::Killed, "killed before launch", "", now);
        } else {
            self.send_kill(task_id, now, calls);
        }
    }

    fn send_kill(&mut self, task_id: &TaskId, now: Now, calls: &mut Vec<Call>) {
        let sent = self.update_task(task_id, |task| {
            let first = !task.kill_requested;
            task.kill_requested = true;
            task.change_rare(|rare| rare.kill_sent_at = Some(now.instant));
            (first, task.agent_id.clone())
        });
        if let Some((first, agent_id)) = sent {
            if first {
                self.dirty.insert(task_key(task_id));
            }
            calls.push(Call::Kill {
                task_id: task_id.clone(),
                agent_id,
            });
        }
    }

    fn on_set_intelligence(
        &mut self,
        task: String,
        attribute: String,
        raw: String,
        source: Source,
        now: Now,
    ) -> ApiReply {
        if task.is_empty() || task.contains([':', '/']) {
            return ApiReply::Invalid(format!(
                "task name {task:?} must be non-empty without ':' or '/'"
            ));
        }
        if raw.trim().is_empty() {
            self.clear_intelligence(&task, &attribute, source, now);
            return ApiReply::IntelligenceChanged;
        }
        match intelligence::derive(&attribute, &raw) {
            Ok(derived) => {
                log::info!(
                    "intelligence set task={task} attribute={attribute} value={} source={}",
                    derived.display(),
                    source.as_str()
                );
                let entry = Entry {
                    source,
                    raw: raw.trim().to_string(),
                    derived,
                    updated_at: unix_seconds(now.wall),
                };
                self.touch(intelligence_key(&task));
                let value = Some(entry.derived.display());
                self.note_intelligence(&task, &attribute, value, source.as_str(), now);
                self.intelligence
                    .entry(task)
                    .or_default()
                    .insert(attribute, entry);
                ApiReply::IntelligenceChanged
            }
            Err(reason) => ApiReply::Invalid(reason),
        }
    }

    /// Removes one entry; true when there was one.
    fn clear_intelligence(
        &mut self,
        task: &str,
        attribute: &str,
        source: Source,
        now: Now,
    ) -> bool {
        let Some(entries) = self.intelligence.get_mut(task) else {
            return false;
        };
        let removed = entries.remove(attribute).is_some();
        if entries.is_empty() {
            self.intelligence.remove(task);
        }
        if removed {
            self.touch(intelligence_key(task));
            self.note_intelligence(task, attribute, None, source.as_str(), now);
            log::info!(
                "intelligence cleared task={task} attribute={attribute} source={}",
                source.as_str()
            );
        }
        removed
    }

    /// Applies what changed in Redis. An invalid value is refused and the
    /// value already learned is kept: nothing learned is lost to garbage.
    fn on_sync_intelligence(&mut self, changes: Vec<IntelligenceChange>, now: Now) -> ApiReply {
        let mut rejected = Vec::new();
        for change in changes {
            match change
                .raw
                .as_deref()
                .map(str::trim)
                .filter(|raw| !raw.is_empty())
            {
                None => {
                    self.clear_intelligence(&change.task, &change.attribute, Source::Redis, now);
                }
                Some(raw) => match intelligence::derive(&change.attribute, raw) {
                    Ok(derived) => {
                        let entry = Entry {
                            source: Source::Redis,
                            raw: raw.to_string(),
                            derived,
                            updated_at: unix_seconds(now.wall),
                        };
                        let entries = self.intelligence.entry(change.task.clone()).or_default();
                        if entries
                            .get(&change.attribute)
                            .is_none_or(|old| old.raw != entry.raw)
                        {
                            log::info!(
                                "intelligence set task={} attribute={} value={} source=redis",
                                change.task,
                                change.attribute,
                                entry.derived.display()
                            );
                            let value = Some(entry.derived.display());
                            entries.insert(change.attribute.clone(), entry);
                            self.dirty.insert(intelligence_key(&change.task));
                            let (task, attribute) = (&change.task, &change.attribute);
                            self.note_intelligence(task, attribute, value, "redis", now);
                        }
                    }
                    Err(reason) => rejected.push((change, reason)),
                },
            }
        }
        ApiReply::Synced { rejected }
    }

    fn view(&self, task_id: &TaskId) -> TaskView {
        let task = &self.tasks[task_id];
        let state = match task.phase {
            Phase::Pending => "pending",
            Phase::Launching => "launching",
            Phase::Active(state) => state.as_str(),
        };
        TaskView {
            spec: task.spec.clone(),
            requested: Requested::of(task.requested()),
            intelligence: task.rare().applied.clone(),
            internal_id: task_id.clone(),
            state,
            agent_id: task.agent_id.clone(),
            hostname: task.hostname.clone(),
            docker: task.docker.clone(),
            created_at: task.created_at,
            request_sent: task.phase != Phase::Pending,
            running: task.phase == Phase::Active(TaskState::Running),
            status_message: task.status_message.clone(),
            pending_reason: if task.phase == Phase::Pending {
                self.pending_reason(task)
            } else {
                None
            },
            restarts: task.rare().restarts,
            crash_looping: task.rare().restarts >= CRASH_LOOP_RESTARTS,
            ended_at: None,
            reason: None,
        }
    }

    /// A one-per-node service with no live copy, as a pending entry of the
    /// list whose `pending_reason` says why; None while it has copies
    /// (they are listed themselves).
    fn service_view(&self, service_id: &str) -> Option<TaskView> {
        let service = self.services.get(service_id)?;
        if self.instances.has(service_id) {
            return None;
        }
        Some(TaskView {
            spec: Arc::new(service.spec.clone()),
            requested: Requested::of(&service.spec),
            intelligence: Vec::new(),
            internal_id: TaskId(internal_prefix(service_id).into()),
            state: "pending",
            agent_id: None,
            hostname: None,
            docker: DockerInfo::default(),
            created_at: 0,
            request_sent: false,
            running: false,
            status_message: String::new(),
            pending_reason: Some(match (self.subscribed, self.disconnected_since) {
                (false, Some(since)) => format!(
                    "not connected to the Mesos master since {}",
                    utc_text(since)
                ),
                _ => self.service_reason(service),
            }),
            restarts: 0,
            crash_looping: false,
            ended_at: None,
            reason: None,
        })
    }

    /// Why a one-per-node service has no copy, from the node registry.
    fn service_reason(&self, service: &Service) -> String {
        let spec = &service.spec;
        if self.nodes.is_empty() {
            return "one-per-node: no node has offered yet".to_string();
        }
        let wanted = match (spec.node_type.is_empty(), spec.node_name.is_empty()) {
            (false, _) => format!("nodetype={}", spec.node_type),
            (true, false) => format!("nodename={}", spec.node_name),
            (true, true) => String::new(),
        };
        let matching: Vec<&Node> = self
            .nodes
            .values()
            .filter(|node| {
                (spec.node_type.is_empty() || spec.node_type == node.node_type)
                    && (spec.node_name.is_empty() || spec.node_name == node.node_name)
            })
            .collect();
        let shown = |nodes: Vec<String>| {
            let more = nodes.len().saturating_sub(MAX_NODES_IN_REASON);
            let mut text = nodes
                .into_iter()
                .take(MAX_NODES_IN_REASON)
                .collect::<Vec<_>>()
                .join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text
        };
        if matching.is_empty() {
            let known = self
                .nodes
                .values()
                .map(|node| {
                    format!(
                        "{} has nodetype={} nodename={}",
                        node.hostname, node.node_type, node.node_name
                    )
                })
                .collect();
            return format!(
                "one-per-node: no known node has {wanted} ({})",
                shown(known)
            );
        }
        let hosts = matching
            .iter()
            .map(|node| node.hostname.to_string())
            .collect();
        format!(
            "one-per-node: every matching node had its copy and it ended ({})",
            shown(hosts)
        )
    }

    /// Ends a task for good: it leaves the live table (and the disk) and
    /// stays listed as history for `--keep-finished`.
    fn end_task(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        message: &str,
        reason: &str,
        now: Now,
    ) {
        if !self.tasks.contains_key(task_id) {
            return;
        }
        let keep = self.keep_finished.unwrap_or(DEFAULT_KEEP_FINISHED);
        let trail = self
            .tasks
            .get_mut(task_id)
            .map(|task| std::mem::take(&mut task.trail))
            .unwrap_or_default();
        if !keep.is_zero() {
            let mut view = self.view(task_id);
            view.state = state.as_str();
            view.running = false;
            view.pending_reason = None;
            view.crash_looping = false;
            if !message.is_empty() {
                view.status_message = message.to_string();
            }
            view.reason = (!reason.is_empty()).then(|| reason.to_string());
            view.ended_at = Some(unix_seconds(now.wall));
            if self.ended.len() >= MAX_ENDED_TASKS {
                self.ended.pop_front();
            }
            self.ended.push_back(Ended {
                view,
                trail,
                expires: now.instant + keep,
            });
        }
        self.remove_task(task_id);
    }

    /// Drops the ended tasks whose time is up: they were added in end
    /// order with one keep duration, so they expire from the front.
    fn expire_ended(&mut self, now: Instant) {
        while self.ended.front().is_some_and(|ended| ended.expires <= now) {
            self.ended.pop_front();
            self.list_cache.changed();
        }
    }
}

/// What every update of a known task records on it, whatever it leads to:
/// the message, the agent (and its host), the container, the first RUNNING
/// (and the start latency it ends). True when it changed what the task's
/// record or list entry holds; the caller reindexes then.
///
/// A reconciliation answer that confirms the state we know (`confirms`)
/// keeps the message: Mesos's "Reconciliation: Latest task state" says
/// nothing about the task, and after a restart every task gets one or two,
/// which would otherwise rewrite every record.
fn record_update(
    task: &mut Task,
    update: &TaskUpdate,
    now: Now,
    confirms: bool,
    nodes: &BTreeMap<AgentId, Node>,
    start_latencies: &mut Vec<Duration>,
) -> bool {
    let mut changed = false;
    if !update.message.is_empty() && !confirms && task.status_message != update.message {
        task.status_message = update.message.clone();
        changed = true;
    }
    if let Some(agent_id) = &update.agent_id {
        if task.agent_id.as_ref() != Some(agent_id) {
            task.hostname = nodes
                .get(agent_id)
                .map(|node| node.hostname.clone())
                .or(task.hostname.take());
            task.agent_id = Some(agent_id.clone());
            changed = true;
        }
    }
    if let Some(docker) = update.docker.as_ref().filter(|d| **d != task.docker) {
        task.docker = docker.clone();
        changed = true;
    }
    if update.state == TaskState::Running {
        task.running_since.get_or_insert(now.instant);
        if let Some(at) = task.accepted_at.take() {
            start_latencies.push(now.instant.saturating_duration_since(at));
        }
    }
    let unknown_since = (update.state == TaskState::Unknown)
        .then(|| task.rare().unknown_since.unwrap_or(now.instant));
    if task.rare().unknown_since != unknown_since {
        task.change_rare(|rare| rare.unknown_since = unknown_since);
    }
    changed
}

/// The user id as it appears in internal ids: spaces removed.
fn internal_prefix(user_id: &str) -> String {
    user_id.replace(' ', "")
}

/// Backoff before restart number `restarts` (1-based).
fn restart_delay(restarts: u32) -> Duration {
    let doublings = restarts.saturating_sub(1).min(16);
    (RESTART_BACKOFF_MIN * 2u32.pow(doublings)).min(RESTART_BACKOFF_MAX)
}

/// `2026-11-26T16:44:28Z` for unix seconds (proleptic Gregorian, UTC).
fn utc_text(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01, in 400-year eras that start
    // on March 1st, so the leap day is the last day of an era's year.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Explicit RECONCILE calls asking about `tasks`, at most `batch` per call.
fn reconcile_calls(
    tasks: Vec<(TaskId, Option<AgentId>)>,
    batch: usize,
) -> impl Iterator<Item = Call> {
    let mut tasks = tasks.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<_> = tasks.by_ref().take(batch.max(1)).collect();
        (!chunk.is_empty()).then_some(Call::Reconcile(chunk))
    })
}

#[cfg(test)]
mod tests;
