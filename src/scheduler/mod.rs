//! The scheduler core: the messages that reach the `state` thread, the effects
//! it asks for, and its run loop.
//!
//! Runs on the `state` thread, the single owner of `State`. Everything that
//! changes state arrives as an `Event`; everything the outside world must do is
//! returned as an `Effect`. Nothing here does network I/O or reads the clock
//! except `run`, which stamps each event with the current time.

pub(crate) mod hub;
pub(crate) mod intelligence;
pub mod model;
pub(crate) mod notice;
pub mod oneshot;
pub(crate) mod placement;
pub(crate) mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};

use crate::metrics::Metrics;
use crate::scheduler::intelligence::{Source, Table};
use crate::scheduler::model::{
    AgentId, DockerInfo, FrameworkId, Offer, OfferId, Sla, TaskId, TaskSpec, TaskState, TaskUpdate,
};
pub use crate::scheduler::state::{Restore, State};

/// How often the state thread wakes up without input (refuse filters,
/// periodic work).
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// A loop turn slower than this is logged: the state thread must stay fast.
pub const SLOW_TURN: Duration = Duration::from_millis(200);

/// Capacity of the channel from the HTTP workers to the state thread. A full
/// channel blocks the workers, which is the back-pressure we want.
pub const API_INBOX_CAPACITY: usize = 1024;

/// Capacity of the channel from the Mesos reader and caller to the state thread.
pub const MESOS_INBOX_CAPACITY: usize = 1024;

/// Capacity of the channel from the state thread to the Mesos caller.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Calls waiting behind a full outbox before each turn logs a warning.
pub const BACKLOG_WARNING: usize = 10_000;

/// Capacity of the channel from the state thread to the journal thread, in turns.
pub const JOURNAL_CAPACITY: usize = 1024;

/// Capacity of the channel from the journal back to the state thread, in
/// commit groups of replies.
pub const COMMITTED_CAPACITY: usize = 1024;

/// With this many calls held back, the state thread stops taking REST
/// commands (they wait in the bounded API channel) until the backlog drains.
pub const BACKLOG_LIMIT: usize = 50_000;

/// How soon a turn held back by a full journal channel is offered again.
pub const BACKLOG_RETRY: Duration = Duration::from_millis(5);

/// Turns handled back to back while more REST commands or Mesos events
/// wait, merged into one hand-off to the journal (`run`). Each hand-off
/// wakes the journal thread and, once committed, this one; merging the
/// turns a burst queues up spares those wake-ups without delaying any
/// turn that has nothing queued behind it.
pub const MERGED_TURNS_MAX: usize = 64;

/// How long the first of merged turns waits for the hand-off at most
/// (plus the turn that passes it): merging may hold a reply back this
/// much, on top of its commit.
pub const MERGE_WINDOW: Duration = Duration::from_millis(1);

/// `MERGE_WINDOW`, but long in unit tests: a loaded test machine must not
/// split the merge a test expects.
const MERGE_WINDOW_IN_USE: Duration = if cfg!(test) {
    Duration::from_secs(10)
} else {
    MERGE_WINDOW
};

/// The time a state-loop turn runs at, read once per event by `run`.
///
/// `instant` (monotonic) is for every deadline: restart backoff, reconcile
/// interval and retries, KILL resends, stable runs, suppression retries.
/// `wall` is only for what people read or what is persisted: created_at,
/// time_of_last_offer, intelligence updated_at, the nanos of task ids, and
/// the first use of an idempotency key (which ages it across a restart).
/// Stepping the wall clock therefore never delays or hurries a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Every input of `State::handle_event`.
#[derive(Debug)]
pub enum Event {
    /// A request from an HTTP worker or the Redis bridge, under the id `run`
    /// gave it; its reply leaves in the turn's `replies` under the same id.
    Api(RequestId, ApiRequest),
    Mesos(MesosEvent),
    Tick,
}

/// Names one request while it is inside the state thread and the journal.
/// `run` hands them out and keeps the reply slot under it, so neither
/// `State` nor the journal ever holds the way back to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A request as it reaches `run`: the request and the way back for its
/// single reply, which gets the reply once the turn that answered it is
/// durable.
#[derive(Debug)]
pub struct ApiCommand {
    pub request: ApiRequest,
    pub reply: oneshot::Sender<ApiReply>,
}

#[derive(Debug)]
pub enum ApiRequest {
    /// `POST /client/task`, with its `Idempotency-Key` if it had one.
    Submit {
        spec: TaskSpec,
        idempotency_key: Option<String>,
    },
    /// `GET /client/task`: live tasks, one-per-node services without a
    /// copy, and ended tasks still within `--keep-finished`, as far as the
    /// query lets through (`TaskQuery::default()`: all of them).
    ListTasks(TaskQuery),
    /// `DELETE /client/task/<prefix>`.
    Kill { id_prefix: String },
    /// `GET /client/task/reshuffle`.
    Reshuffle { dry_run: bool },
    /// `GET /client/node`.
    ListNodes,
    /// `GET /client/intelligence`.
    ListIntelligence,
    /// `PUT /client/intelligence/<task>/<attribute>`; an empty `raw` clears.
    SetIntelligence {
        task: String,
        attribute: String,
        raw: String,
        source: Source,
    },
    /// `DELETE /client/intelligence/<task>/<attribute>`.
    ClearIntelligence {
        task: String,
        attribute: String,
        source: Source,
    },
    /// From the Redis bridge: what changed in Redis since its last cycle.
    SyncIntelligence(Vec<IntelligenceChange>),
    /// From the Redis bridge: nodes, tasks and the intelligence table to publish.
    Snapshot,
    /// `POST /admin/reset`: forget every task, tear the framework down and
    /// register a new one. Answered once the old framework is gone.
    Reset,
    /// `GET /metrics`: how many tasks are in each state.
    TaskCounts,
    /// `GET /client/task/<internal id>`: one task with its history.
    ShowTask { id: String },
    /// `GET /client/events`: answered by `run` (the hub), never by `State`,
    /// with `ApiReply::Subscribed` or `ApiReply::Unavailable`.
    Subscribe { since: Option<u64> },
}

/// Which tasks `GET /client/task` lists: `?state=`, `?prefix=`, `?limit=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskQuery {
    pub state: StateFilter,
    /// Only tasks whose internal id starts with it (or, with a space in it,
    /// whose user id does: internal ids drop spaces).
    pub prefix: Option<String>,
    /// At most this many, in list order.
    pub limit: Option<usize>,
    /// Read a page at a time (the REST API does, for large lists): the live
    /// tasks after `after`, at most `scan` of them examined; `None` reads the
    /// whole list in one go. Answered with `ApiReply::Tasks`.
    pub page: Option<Page>,
}

/// Where a page of the task list starts and how far it may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The last live task of the page before; `None` for the first page.
    pub after: Option<TaskId>,
    /// Live tasks examined at most, listed or not, so one page costs the
    /// state thread a bounded turn even with a `?state=` filter.
    pub scan: usize,
}

/// `?state=` of `GET /client/task`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateFilter {
    /// Live tasks, services without a copy, and the ended tasks still kept.
    #[default]
    All,
    /// The same without the ended tasks.
    Active,
    /// Waiting for an offer (services without a copy included).
    Pending,
    /// ACCEPT sent, no status yet.
    Launching,
    /// Live tasks in this Mesos state, and ended tasks that ended in it.
    Mesos(TaskState),
}

/// One intelligence key that changed in Redis; `raw` None or empty clears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntelligenceChange {
    pub task: String,
    pub attribute: String,
    pub raw: Option<String>,
}

#[derive(Debug)]
pub enum ApiReply {
    /// The submit was accepted; `id` is the user id, as echoed in "Run task: <id>".
    Submitted {
        id: String,
        /// Said when the submit changed nothing (a duplicate singleton or
        /// one-per-node service): `already running on slave1, slave2`.
        note: Option<String>,
    },
    /// The task list, or one page of it (`TaskQuery::page`), each entry
    /// shared with the state's list cache (and the whole answer with the
    /// next identical one, while nothing changed); `next` is where the next
    /// page starts, `None` when this answer ended the list (services and
    /// ended tasks included).
    Tasks {
        tasks: Arc<[Arc<ListedTask>]>,
        next: Option<TaskId>,
    },
    /// The tasks the kill applies to (pending ones are already gone).
    Killed(Vec<TaskView>),
    Reshuffled(Vec<ReshuffleStep>),
    Nodes(Vec<NodeView>),
    /// The whole intelligence table.
    Intelligence(Table),
    /// An intelligence entry was set or cleared.
    IntelligenceChanged,
    /// Sync result: the changes the table refused, with the reason.
    Synced {
        rejected: Vec<(IntelligenceChange, String)>,
    },
    Snapshot(Snapshot),
    /// Nothing matched; the message says what.
    NotFound(String),
    /// The request is well-formed but its value is not acceptable (400).
    Invalid(String),
    /// The request contradicts an earlier one (409), e.g. an `Idempotency-Key`
    /// used before for a different task.
    Conflict(String),
    /// The reset is done: the old framework is gone, `killed` tasks with it.
    ResetDone {
        killed: usize,
    },
    /// The change was made here but its effect elsewhere was not confirmed
    /// in time (504): a reset whose new subscription did not come.
    OutcomeUnknown,
    /// Live tasks by the state they show ("pending", "launching",
    /// "TASK_RUNNING", ...), every state listed, zeros included.
    TaskCounts(Vec<(&'static str, u64)>),
    /// One task and its history, oldest entry first.
    Task(Box<TaskView>, Vec<HistoryLine>),
    /// An event stream: its gap, backlog and live feed.
    Subscribed(hub::Subscription),
    /// Nothing was done and a retry later may work (503), e.g. too many
    /// event streams.
    Unavailable(String),
}

/// One entry of a task's history, as `GET /client/task/<id>` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    /// Unix milliseconds (of the last time, for a repeated entry).
    pub time_ms: u64,
    /// `submitted`, `placement`, `launched`, `status`, `killed`, ...
    pub kind: &'static str,
    pub text: String,
}

/// What one state-loop turn produced: durable changes first, then the
/// effects that may leave the process only once those are on disk. The
/// journal sends `calls` on to the caller and `replies` back to `run`,
/// which owns the channels they go to.
#[derive(Debug, Default)]
pub struct Turn {
    pub records: Vec<state::Record>,
    pub calls: Vec<Call>,
    pub replies: Vec<(RequestId, ApiReply)>,
    /// What `GET /client/events` will tell, once the turn is durable.
    pub notices: Vec<notice::Notice>,
}

/// What the journal hands back to `run` once a group of turns is durable:
/// their replies, and their notices for the event hub.
#[derive(Debug, Default)]
pub struct Committed {
    pub replies: Vec<(RequestId, ApiReply)>,
    pub notices: Vec<notice::Notice>,
}

impl Committed {
    /// Takes the replies and notices out of `turn`.
    pub fn take_from(&mut self, turn: &mut Turn) {
        self.replies.append(&mut turn.replies);
        self.notices.append(&mut turn.notices);
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.notices.is_empty()
    }
}

impl Turn {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.calls.is_empty()
            && self.replies.is_empty()
            && self.notices.is_empty()
    }

    fn append(&mut self, mut other: Turn) {
        self.records.append(&mut other.records);
        self.calls.append(&mut other.calls);
        self.replies.append(&mut other.replies);
        self.notices.append(&mut other.notices);
    }
}

/// What the Redis bridge publishes each cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
    pub tasks: Vec<TaskView>,
    pub intelligence: Table,
}

/// One task as `GET /client/task` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    /// The spec the task runs with: the request with task intelligence
    /// applied (for one-per-node copies, pinned to the node). The task's
    /// own: a view copies none of it.
    pub spec: Arc<TaskSpec>,
    /// What the user submitted, as far as the task JSON shows it.
    pub requested: Requested,
    /// The intelligence entries that changed `spec`: (attribute, derived value).
    pub intelligence: Vec<(String, String)>,
    pub internal_id: TaskId,
    /// "pending", "launching", or the Mesos state name such as "TASK_RUNNING".
    pub state: &'static str,
    pub agent_id: Option<AgentId>,
    pub hostname: Option<Arc<str>>,
    /// The container as the executor reported it (id, name, pid).
    pub docker: DockerInfo,
    /// Unix seconds at submit.
    pub created_at: u64,
    pub request_sent: bool,
    pub running: bool,
    /// The message of the last status update, if it had one.
    pub status_message: String,
    /// Why a pending task is not placed yet.
    pub pending_reason: Option<String>,
    /// Restarts under the task's policy so far (0 for the first run).
    pub restarts: u32,
    /// Restarted `CRASH_LOOP_RESTARTS` times in a row without running stably.
    pub crash_looping: bool,
    /// Set once the task has ended (it stays listed for `--keep-finished`):
    /// unix seconds of the end.
    pub ended_at: Option<u64>,
    /// The Mesos reason name of the update that ended it, if it had one.
    pub reason: Option<String>,
}

/// The fields of the spec a user submitted that the task JSON shows under
/// `requested` (intelligence may have changed them in the spec the task
/// runs with). Not the whole spec: a list builds a view of every task.
#[derive(Clone, Debug, PartialEq)]
pub struct Requested {
    pub mem_mb: u64,
    pub cpus: Option<f64>,
    pub node_name: String,
    pub node_type: String,
    pub sla: Sla,
}

impl Requested {
    pub fn of(spec: &TaskSpec) -> Requested {
        Requested {
            mem_mb: spec.mem_mb,
            cpus: spec.cpus,
            node_name: spec.node_name.clone(),
            node_type: spec.node_type.clone(),
            sla: spec.sla,
        }
    }
}

/// One entry of `GET /client/task` as the state thread hands it out: a
/// view, turned into JSON at most once, by the first HTTP worker that needs
/// it (`json`), which then keeps only the JSON. The state keeps the entry
/// of a live task until the task changes (`state/list.rs`), so a list
/// builds and renders only what changed since the last one, and the state
/// thread's part of a list of unchanged tasks is one `Arc` clone each.
#[derive(Debug)]
pub struct ListedTask {
    rendering: Mutex<Rendering>,
}

#[derive(Debug)]
enum Rendering {
    View(Box<TaskView>),
    Json(Arc<str>),
}

impl ListedTask {
    pub fn new(view: TaskView) -> ListedTask {
        ListedTask {
            rendering: Mutex::new(Rendering::View(Box::new(view))),
        }
    }

    /// The entry's JSON: `render` of its view the first time (the view is
    /// dropped then), the same text after.
    pub fn json(&self, render: impl FnOnce(&TaskView) -> String) -> Arc<str> {
        // A worker that panicked while rendering leaves the view in place.
        let mut rendering = self
            .rendering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let json: Arc<str> = match &*rendering {
            Rendering::Json(json) => return json.clone(),
            Rendering::View(view) => render(view).into(),
        };
        *rendering = Rendering::Json(json.clone());
        json
    }

    /// Appends the entry's JSON to `out`: its rendered text, or `render` of
    /// its view, which is then kept as it is (for an entry only this list
    /// holds: the text would be dropped right after).
    pub fn append_json(&self, render: impl FnOnce(&TaskView, &mut Vec<u8>), out: &mut Vec<u8>) {
        match &*self
            .rendering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Rendering::Json(json) => out.extend_from_slice(json.as_bytes()),
            Rendering::View(view) => render(view, out),
        }
    }

    /// The view, unless a worker has rendered it already.
    pub fn view(&self) -> Option<TaskView> {
        match &*self
            .rendering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Rendering::View(view) => Some((**view).clone()),
            Rendering::Json(_) => None,
        }
    }
}

/// One node of the registry, learned from offers.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub agent_id: AgentId,
    pub hostname: String,
    pub node_type: String,
    pub node_name: String,
    /// Unix seconds of the last offer from this agent.
    pub time_of_last_offer: u64,
    /// Cpus and mem (MB) of its last offer that we may use (unreserved or
    /// reserved for our role), less what we launched on it since: what
    /// pending reasons are judged against.
    pub free_cpus: f64,
    pub free_mem_mb: f64,
    /// Cpus and mem (MB) our live (launched, not ended) tasks on it take.
    pub used_cpus: f64,
    pub used_mem_mb: f64,
}

/// One line of a reshuffle plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ReshuffleStep {
    pub id: String,
    /// The task being replaced.
    pub internal_id: TaskId,
    pub from_host: Option<String>,
    /// Where the replacement must go, when intelligence pins it (nodename).
    pub to_host: Option<String>,
    /// The intelligence entries that change the replacement: (attribute, derived value).
    pub changes: Vec<(String, String)>,
}

/// What the Mesos reader and caller tell the state thread.
#[derive(Debug)]
pub enum MesosEvent {
    /// A (re)subscription succeeded.
    Subscribed {
        framework_id: FrameworkId,
    },
    Offers(Vec<Offer>),
    Rescind(OfferId),
    Update(TaskUpdate),
    /// An agent was removed (FAILURE with only an agent id).
    AgentLost(AgentId),
    /// The subscription ended; the reader is already resubscribing.
    Disconnected {
        reason: String,
    },
    /// The master refused our framework id for good ("Framework has been
    /// removed"); its tasks are gone and the reader registers anew.
    FrameworkRemoved,
    /// A call that did not certainly take effect; the state thread decides
    /// what to redo. The caller retries every other failure itself.
    CallFailed {
        call: Call,
        failure: CallFailure,
    },
}

/// How a call failed, as far as the caller can know.
#[derive(Clone, Debug, PartialEq)]
pub enum CallFailure {
    /// The master answered with an error (4xx): it did not act on the call
    /// and never will. The text is the master's explanation.
    Refused(String),
    /// The request may have reached the master but its answer was lost (an
    /// I/O error after it was sent). Only ACCEPT is reported this way, since
    /// it is the one call that must never be re-sent blindly.
    OutcomeUnknown(String),
}

impl CallFailure {
    pub fn reason(&self) -> &str {
        match self {
            CallFailure::Refused(reason) | CallFailure::OutcomeUnknown(reason) => reason,
        }
    }
}

/// A scheduler call for the master, in domain terms. The `mesos-caller`
/// thread turns these into protobuf and POSTs them.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Launch {
        agent_id: AgentId,
        offer_ids: Vec<OfferId>,
        tasks: Vec<Launch>,
        refuse_seconds: f64,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse_seconds: f64,
    },
    Kill {
        task_id: TaskId,
        agent_id: Option<AgentId>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: Vec<u8>,
    },
    /// Empty means implicit reconciliation.
    Reconcile(Vec<(TaskId, Option<AgentId>)>),
    Suppress,
    Revive,
    Teardown,
}

impl Call {
    /// The Mesos call type, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Launch { .. } => "ACCEPT",
            Call::Decline { .. } => "DECLINE",
            Call::Kill { .. } => "KILL",
            Call::Acknowledge { .. } => "ACKNOWLEDGE",
            Call::Reconcile(_) => "RECONCILE",
            Call::Suppress => "SUPPRESS",
            Call::Revive => "REVIVE",
            Call::Teardown => "TEARDOWN",
        }
    }
}

/// One task to launch on an offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub task_id: TaskId,
    /// The task's own spec, shared.
    pub spec: Arc<TaskSpec>,
    /// The resources it takes, each with the reservation it was offered
    /// with. Empty means unreserved resources as `spec` asks.
    pub resources: Vec<model::Allocation>,
}

/// The state thread's run loop: one `select!`, one `handle_event`, and the
/// turn handed to the `journal` thread, which makes it durable, sends its
/// calls on and its replies back here (`committed`).
///
/// `run` owns the reply path: each request gets a `RequestId`, its reply
/// channel waits in `waiting` under that id, and the reply goes out when the
/// journal hands it back, i.e. only once its turn is on disk. Every request
/// gets exactly one reply, in the turn that handles it, except a reset,
/// whose reply `State` holds until the new subscription (at most
/// `state::RESET_REPLY_LIMIT`), so `waiting` holds requests still in a turn
/// on its way through the journal and those resets.
///
/// Turns go out with `try_send`: when the journal or the master is slow and
/// the channel is full, turns merge into `backlog` (in order) and this thread
/// keeps serving instead of blocking. Turns that write records also merge
/// while more input waits, up to `MERGED_TURNS_MAX` turns or
/// `MERGE_WINDOW`: the journal commits them in one group, as it often
/// would have anyway; a turn of reads only (nothing to make durable) goes
/// at once, and the replies and calls of a merged turn leave at most
/// `MERGE_WINDOW` later than without merging.
///
/// It counts what it sees in `metrics`: the master's events, the calls of
/// each turn, the turn's time and the latencies `State` reports
/// (`State::take_start_latencies`).
pub fn run(
    mut state: State,
    api_inbox: Receiver<ApiCommand>,
    mesos_inbox: Receiver<MesosEvent>,
    outbox: Sender<Turn>,
    committed: Receiver<Committed>,
    metrics: &Metrics,
) {
    /// What one `select!` produced.
    enum Input {
        Api(ApiCommand),
        Mesos(MesosEvent),
        Tick,
        Committed(Committed),
        /// Nothing arrived; time to offer the backlog again.
        Idle,
    }
    let ticker = crossbeam_channel::tick(TICK_INTERVAL);
    let paused = crossbeam_channel::never();
    let mut backlog = Turn::default();
    let mut waiting: HashMap<RequestId, oneshot::Sender<ApiReply>> = HashMap::new();
    let mut next_id = 0u64;
    // Event streams: only `run` publishes, and only what the journal made durable.
    let mut hub = hub::Hub::default();
    let mut backlog_log = crate::lograte::RateLimit::default();
    // Pages freed after large turns go back to the kernel (`trim`).
    let mut trim = crate::trim::Trim::default();
    // Turns merged into `backlog` since it was last handed over, and when
    // the first of them was.
    let mut merged = 0usize;
    let mut merging_since: Option<Instant> = None;
    loop {
        // Back-pressure: with too much held back, REST commands wait.
        let api = if backlog.calls.len() > BACKLOG_LIMIT {
            &paused
        } else {
            &api_inbox
        };
        // Pending reasons of tasks that waited `EXPLAIN_AFTER` are judged
        // when no event waits, one slice per wake-up (the tick wakes the
        // loop every second), so a large backlog of unplaceable tasks costs
        // what it did when each turn judged a slice.
        if api.is_empty() && mesos_inbox.is_empty() && committed.is_empty() {
            if let Some(before) = Instant::now().checked_sub(state::EXPLAIN_AFTER) {
                state.explain_queued(Some(before));
            }
        }
        let input = if backlog.is_empty() {
            select! {
                recv(api) -> it => it.map(Input::Api),
                recv(mesos_inbox) -> it => it.map(Input::Mesos),
                recv(ticker) -> _ => Ok(Input::Tick),
                recv(committed) -> it => it.map(Input::Committed),
            }
        } else {
            select! {
                recv(api) -> it => it.map(Input::Api),
                recv(mesos_inbox) -> it => it.map(Input::Mesos),
                recv(ticker) -> _ => Ok(Input::Tick),
                recv(committed) -> it => it.map(Input::Committed),
                default(BACKLOG_RETRY) => Ok(Input::Idle),
            }
        };
        // Any closed inbox (every worker gone, the reader gone, the journal
        // gone) ends the loop.
        let Ok(input) = input else { break };
        let event = match input {
            Input::Api(ApiCommand {
                request: ApiRequest::Subscribe { since },
                reply,
            }) => {
                // Answered here at once: nothing to make durable, and the
                // backlog and the feed must meet with nothing in between.
                let answer = match hub.subscribe(since) {
                    Ok(subscription) => ApiReply::Subscribed(subscription),
                    Err(message) => ApiReply::Unavailable(message),
                };
                reply.send(answer);
                None
            }
            Input::Api(ApiCommand { request, reply }) => {
                let id = RequestId(next_id);
                next_id += 1;
                waiting.insert(id, reply);
                Some(Event::Api(id, request))
            }
            Input::Mesos(event) => {
                metrics.count_event(&event);
                Some(Event::Mesos(event))
            }
            Input::Tick => {
                if trim.tick(Instant::now()) {
                    log::debug!("freed heap pages returned to the kernel");
                }
                Some(Event::Tick)
            }
            Input::Committed(Committed { replies, notices }) => {
                for notice in notices {
                    hub.publish(notice);
                }
                for (id, reply) in replies {
                    match waiting.remove(&id) {
                        // The worker may have stopped waiting (504) and gone.
                        Some(reply_to) => {
                            reply_to.send(reply);
                        }
                        None => log::error!("reply for an unknown request id={}", id.0),
                    }
                }
                None
            }
            Input::Idle => None,
        };
        let appended = event.is_some();
        if let Some(event) = event {
            // Three clock reads a turn (a restart's 200,000 answers are
            // as many turns): the stamp, which starts the turn's timing too,
            // its wall half, and the end.
            let now = Now::current();
            let turn = state.handle_event(event, now);
            let took = now.instant.elapsed();
            metrics.turn.observe(took);
            metrics.count_calls(&turn.calls);
            let items = state.take_list_built() + turn.calls.len() + turn.records.len();
            trim.turn(items, now.instant + took);
            for latency in state.take_start_latencies() {
                metrics.observe_start(latency);
            }
            backlog.append(turn);
            if took > SLOW_TURN {
                log::warn!("slow loop turn took_ms={}", took.as_millis());
            }
        }
        if backlog.is_empty() {
            continue;
        }
        // Records to commit and more input waiting: handle it first, within
        // the bounds. Anything else (a retry after a full journal channel,
        // a turn of reads only) is offered at once.
        if appended && !backlog.records.is_empty() && !(api.is_empty() && mesos_inbox.is_empty()) {
            merged += 1;
            let since = *merging_since.get_or_insert_with(Instant::now);
            if merged < MERGED_TURNS_MAX && since.elapsed() < MERGE_WINDOW_IN_USE {
                continue;
            }
        }
        merged = 0;
        merging_since = None;
        match outbox.try_send(std::mem::take(&mut backlog)) {
            Ok(()) => {}
            Err(TrySendError::Full(turn)) => {
                backlog = turn;
                if backlog.calls.len() > BACKLOG_WARNING {
                    if let Some(suffix) = backlog_log.admit(Instant::now()) {
                        log::warn!(
                            "mesos calls backing up queued={}{suffix}",
                            backlog.calls.len()
                        );
                    }
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
    // Shutting down: nobody waits for replies any more, and the journal must
    // not block handing them back while this thread blocks handing it the
    // backlog, so the way back closes first.
    drop(committed);
    if !backlog.is_empty() {
        let _ = outbox.send(backlog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    /// `run` of a fresh state on its own thread.
    fn spawn_run(
        api_rx: Receiver<ApiCommand>,
        mesos_rx: Receiver<MesosEvent>,
        turn_tx: Sender<Turn>,
        committed_rx: Receiver<Committed>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            run(
                State::new(None),
                api_rx,
                mesos_rx,
                turn_tx,
                committed_rx,
                &Metrics::default(),
            )
        })
    }

    /// The reply path: a request reaches `State` under an id, its reply
    /// travels in the turn (no channel in it), and `run` answers the worker
    /// only when the journal hands that reply back as committed.
    #[test]
    fn a_reply_leaves_only_when_the_journal_hands_it_back() {
        let wait = Duration::from_secs(10);
        let (api_tx, api_rx) = bounded(1);
        let (mesos_tx, mesos_rx) = bounded(1);
        let (turn_tx, turn_rx) = bounded(1);
        let (committed_tx, committed_rx) = bounded(1);
        let state = spawn_run(api_rx, mesos_rx, turn_tx, committed_rx);
        let (reply_tx, reply_rx) = oneshot::oneshot();
        let command = ApiCommand {
            request: ApiRequest::ListTasks(TaskQuery::default()),
            reply: reply_tx,
        };
        api_tx.send(command).expect("the state thread takes it");
        let turn: Turn = turn_rx
            .recv_timeout(wait)
            .expect("the turn reaches the journal");
        assert!(
            matches!(turn.replies.as_slice(), [(_, ApiReply::Tasks { tasks, next: None })] if tasks.is_empty())
        );
        // Only `run` could have answered, and it has not been told the turn is durable.
        assert!(reply_rx.try_recv().is_err());
        committed_tx
            .send(Committed {
                replies: turn.replies,
                notices: Vec::new(),
            })
            .expect("run listens");
        let reply = reply_rx
            .recv_timeout(wait)
            .expect("answered once committed");
        assert!(matches!(reply, ApiReply::Tasks { tasks, next: None } if tasks.is_empty()));
        drop((api_tx, mesos_tx));
        state.join().expect("run ends with its inboxes");
    }

    /// Submits that wait when a turn ends are handled before the journal
    /// gets the turn, and reach it as one turn, in order; a read, and a
    /// submit with nothing behind it, go at once.
    #[test]
    fn turns_with_more_input_waiting_reach_the_journal_merged() {
        let wait = Duration::from_secs(10);
        let (api_tx, api_rx) = bounded(8);
        let (_mesos_tx, mesos_rx) = bounded::<MesosEvent>(1);
        let (turn_tx, turn_rx) = bounded(8);
        let (_committed_tx, committed_rx) = bounded(1);
        let mut replies = Vec::new();
        let mut ask = |request: ApiRequest| {
            let (reply_tx, reply_rx) = oneshot::oneshot();
            let command = ApiCommand {
                request,
                reply: reply_tx,
            };
            api_tx.send(command).expect("room in the inbox");
            replies.push(reply_rx);
        };
        let submit = |n: usize| ApiRequest::Submit {
            spec: model::TaskSpec::for_test(&format!("web{n}"), "nginx", 64),
            idempotency_key: None,
        };
        ask(ApiRequest::ListTasks(TaskQuery::default()));
        for n in 1..=3 {
            ask(submit(n));
        }
        let _state = spawn_run(api_rx, mesos_rx, turn_tx, committed_rx);
        let next_ids = || -> Vec<u64> {
            let turn: Turn = turn_rx.recv_timeout(wait).expect("a turn");
            turn.replies.iter().map(|(id, _)| id.0).collect()
        };
        assert_eq!(next_ids(), [0], "a read goes at once");
        assert_eq!(next_ids(), [1, 2, 3], "three submits waiting, one turn");
        ask(submit(4));
        assert_eq!(next_ids(), [4], "alone, at once");
    }
}
