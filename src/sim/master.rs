//! The simulated master's state machine: frameworks, agents, offers, tasks
//! and each task's reliable update stream. It does no I/O: events go into each
//! subscriber's queue (at most `STREAM_CAPACITY` events), and a writer
//! thread per stream puts them on the wire. Every entry point takes `now`,
//! so behaviour is a function of its inputs and the clock the caller passes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use crate::mesos::proto::mesos as v1;
use crate::mesos::proto::scheduler::{call, event, Event};
use crate::sim::resources::Resources;
use crate::sim::{AgentSpec, STREAM_CAPACITY};

use v1::task_status::{Reason, Source};
use v1::TaskState;

/// The largest `refuse_seconds` the master honours (365 days).
const MAX_REFUSE_SECONDS: f64 = 31_536_000.0;
const DEFAULT_REFUSE_SECONDS: f64 = 5.0;
/// The largest failover_timeout that fits int64 nanoseconds.
const MAX_FAILOVER_SECONDS: f64 = (i64::MAX / 1_000_000_000) as f64;

const DUPLICATE_ID: &str = "Task has duplicate ID: ";

/// Update resends back off up to this many times the first wait.
const MAX_RETRY_FACTOR: u32 = 60;

/// What a stream's writer thread receives.
pub enum Out {
    Event(Box<Event>),
    /// Write the final chunk and close: teardown, failover, refusal.
    End,
}

/// A live subscription: its id and the writer's inbox. Dropping the sender
/// makes the writer close the socket without a final chunk.
pub struct Stream {
    pub id: String,
    pub tx: Sender<Out>,
}

#[derive(Clone, Debug)]
pub struct Timing {
    pub heartbeat: Duration,
    pub allocation_interval: Duration,
    pub update_retry: Duration,
    pub task_start_delay: Duration,
}

struct Agent {
    id: String,
    spec: AgentSpec,
    /// Neither used by tasks nor offered.
    free: Resources,
    /// The outstanding offer of this agent, if any.
    offer: Option<String>,
    /// Why the agent is not registered with the master right now, if it is not.
    away: Option<Away>,
}

/// Why a known agent is not registered with the master.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Away {
    /// Marked unreachable at this wall-clock time (nanoseconds since the
    /// epoch, the `unreachable_time` the master reports; only displayed).
    Unreachable(i64),
    /// Not re-registered since the master restarted: the master's in-memory
    /// registry does not know it.
    Unknown,
    /// Not re-registered since the master restarted, but known from the
    /// replicated registry: the master does not answer for its tasks.
    Recovered,
}

/// What the master's registry keeps across a restart (`--registry`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Registry {
    /// Nothing: every agent is unknown until it re-registers.
    InMemory,
    /// The agents (and gone agents): they are recovered, and reconciliation
    /// stays silent for their tasks until they re-register.
    Replicated,
}

impl Agent {
    fn reserved_role(&self) -> Option<&str> {
        self.spec.reserved.as_ref().map(|r| r.role.as_str())
    }

    /// What a framework may be offered now: the reserved part only if it
    /// allocates for the reservation's role.
    fn offerable(&self, info: &v1::FrameworkInfo) -> Resources {
        if self.reserved_role().is_some() && self.reserved_role() == allocation_role(info) {
            self.free.clone()
        } else {
            self.free.unreserved()
        }
    }
}

struct OfferRecord {
    framework_id: String,
    agent_id: String,
    resources: Resources,
}

struct Filter {
    until: Instant,
    resources: Resources,
}

struct Framework {
    id: String,
    info: v1::FrameworkInfo,
    stream: Option<Stream>,
    disconnected_at: Option<Instant>,
    /// False after a master restart until the framework resubscribes or an
    /// agent brings back one of its tasks: until then the master has no
    /// FrameworkInfo to hold a resubscription to.
    known: bool,
    suppressed: bool,
    next_heartbeat: Instant,
    /// Per agent: declined resources held back until `until`.
    filters: HashMap<String, Filter>,
    tasks: BTreeMap<String, Task>,
    /// When a task of `tasks` may be due (turns RUNNING, or its update is
    /// resent), so a tick looks only at those, not at every task. An entry
    /// is a hint: the task's own `run_at`/`sent_at` decide, and an entry
    /// left behind by a change is dropped when its time comes.
    due: BTreeSet<(Instant, String)>,
    /// Tasks on agents that are away (unreachable, or unknown since a master
    /// restart): the master no longer tracks them, but the agent still runs
    /// them (with their update streams) and brings them back when it
    /// re-registers.
    away_tasks: BTreeMap<String, Task>,
}

impl Framework {
    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c.type_() == v1::framework_info::capability::Type::PARTITION_AWARE)
    }

    /// Notes when `task_id` (in `tasks`) is next due, if it is waiting for
    /// anything: every change of `run_at` or `sent_at` calls this.
    fn schedule(&mut self, task_id: &str) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let deadlines = [task.run_at, task.sent_at.map(|at| at + task.retry_delay)];
        for at in deadlines.into_iter().flatten() {
            self.due.insert((at, task_id.to_string()));
        }
    }

    /// The tasks that may be due at `now`, by id (the order a tick handles
    /// them in); their entries are taken out.
    fn take_due(&mut self, now: Instant) -> BTreeSet<String> {
        let mut due = BTreeSet::new();
        while let Some(first) = self.due.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, task_id)) = self.due.pop_first() {
                due.insert(task_id);
            }
        }
        due
    }

    fn failover_timeout(&self) -> Duration {
        Duration::from_secs_f64(
            self.info
                .failover_timeout()
                .clamp(0.0, MAX_FAILOVER_SECONDS),
        )
    }
}

struct Task {
    info: v1::TaskInfo,
    agent_id: String,
    resources: Resources,
    /// The latest state the agent reported.
    state: TaskState,
    /// The state of the last agent update sent to the framework: what
    /// reconciliation answers (the real master's `status_update_state`),
    /// which lags `state` while an update waits for its acknowledgement.
    reported: Option<TaskState>,
    /// When a STARTING task turns RUNNING.
    run_at: Option<Instant>,
    /// The agent's update stream: only the head is sent, until acknowledged.
    updates: VecDeque<v1::TaskStatus>,
    sent_at: Option<Instant>,
    /// Wait before resending the head: doubles per resend, as an agent's does.
    retry_delay: Duration,
    /// From the last RUNNING status, for reconciliation answers.
    container_status: Option<v1::ContainerStatus>,
}

pub struct Core {
    timing: Timing,
    master_id: String,
    master_info: v1::MasterInfo,
    agents: BTreeMap<String, Agent>,
    frameworks: BTreeMap<String, Framework>,
    removed: HashSet<String>,
    /// Agents removed through `/sim/agents`: gone, as if marked by an operator.
    gone_agents: HashSet<String>,
    offers: HashMap<String, OfferRecord>,
    calls: BTreeMap<String, u64>,
    heartbeats_paused: bool,
    next_allocation: Instant,
    /// After a master restart: when the agents still unknown re-register.
    reregister_at: Option<Instant>,
    counters: Counters,
    rng: u64,
}

#[derive(Default)]
struct Counters {
    agents: u64,
    offers: u64,
    frameworks: u64,
    /// Tasks that passed validation and went to an agent.
    launches: u64,
    /// Launches refused because the task id was already live.
    duplicate_launches: u64,
    /// Allocation rounds run, offers made or not.
    allocation_rounds: u64,
    /// Tasks a tick looked at because they might be due.
    tick_examined: u64,
}

impl Core {
    pub fn new(timing: Timing, address: std::net::SocketAddr, now: Instant) -> Core {
        let mut rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37, |d| d.as_nanos() as u64);
        let master_id = uuid_string(&next_uuid(&mut rng));
        let mut info = v1::MasterInfo::new();
        info.set_id(master_id.clone());
        let ip = match address.ip() {
            std::net::IpAddr::V4(ip) => u32::from_le_bytes(ip.octets()),
            std::net::IpAddr::V6(_) => 0,
        };
        info.set_ip(ip);
        info.set_port(u32::from(address.port()));
        info.set_hostname(address.ip().to_string());
        info.set_version(super::MESOS_VERSION.to_string());
        let addr = info.address.mut_or_insert_default();
        addr.set_hostname(address.ip().to_string());
        addr.set_ip(address.ip().to_string());
        addr.set_port(i32::from(address.port()));
        Core {
            timing,
            master_id,
            master_info: info,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            removed: HashSet::new(),
            gone_agents: HashSet::new(),
            offers: HashMap::new(),
            calls: BTreeMap::new(),
            heartbeats_paused: false,
            next_allocation: now,
            reregister_at: None,
            counters: Counters::default(),
            rng,
        }
    }

    pub fn count_call(&mut self, kind: &str) {
        *self.calls.entry(kind.to_string()).or_default() += 1;
    }

    pub fn new_stream_id(&mut self) -> String {
        uuid_string(&next_uuid(&mut self.rng))
    }

    /// Which framework a non-SUBSCRIBE call may act for, checked in the
    /// master's order. `Err((status, message))` is the HTTP answer.
    pub fn authorize_call(
        &self,
        framework_id: &str,
        principal: Option<&str>,
        stream_id: Option<&str>,
    ) -> Result<(), (u16, String)> {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return Err((400, "Framework cannot be found".to_string()));
        };
        if let Some(principal) = principal.filter(|p| *p != framework.info.principal()) {
            return Err((
                400,
                format!(
                    "Authenticated principal '{principal}' does not match principal '{}' set in `FrameworkInfo`",
                    framework.info.principal()
                ),
            ));
        }
        let Some(stream) = &framework.stream else {
            return Err((403, "Framework is not subscribed".to_string()));
        };
        let Some(given) = stream_id else {
            return Err((
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header".to_string(),
            ));
        };
        if given != stream.id {
            return Err((
                400,
                format!(
                    "The stream ID '{given}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"
                ),
            ));
        }
        Ok(())
    }

    // ----- subscription -------------------------------------------------------

    pub fn subscribe(&mut self, subscribe: call::Subscribe, stream: Stream, now: Instant) {
        let suppressed_roles = subscribe.suppressed_roles;
        let mut info = subscribe.framework_info.unwrap_or_default();
        if let Some(error) = subscription_error(&info, &suppressed_roles, &self.removed) {
            refuse(&stream, &error);
            return;
        }
        let id = match info.id.as_ref().map(|id| id.value().to_string()) {
            Some(id) if !id.is_empty() => id,
            _ => {
                let id = format!("{}-{:04}", self.master_id, self.counters.frameworks);
                self.counters.frameworks += 1;
                id
            }
        };
        info.id.mut_or_insert_default().set_value(id.clone());
        if let Some(old) = self.frameworks.get_mut(&id) {
            // Adding, dropping or changing the principal are all refused;
            // the old subscriber keeps its stream.
            if old.known && old.info.principal != info.principal {
                refuse(&stream, "Changing framework's principal is not allowed.");
                return;
            }
            // A resubscribe may not change user or checkpoint.
            info.set_user(old.info.user().to_string());
            info.set_checkpoint(old.info.checkpoint());
            old.info = info;
            if let Some(previous) = old.stream.take() {
                log::info!("sim: framework {id} failed over to a new subscriber");
                let _ = previous
                    .tx
                    .try_send(Out::Event(Box::new(error_event("Framework failed over"))));
                let _ = previous.tx.try_send(Out::End);
            }
        } else {
            log::info!("sim: framework {id} ({}) subscribed", info.name());
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    stream: None,
                    disconnected_at: None,
                    known: true,
                    suppressed: false,
                    next_heartbeat: now,
                    filters: HashMap::new(),
                    tasks: BTreeMap::new(),
                    due: BTreeSet::new(),
                    away_tasks: BTreeMap::new(),
                },
            );
        }
        self.discard_offers_of(&id);
        let Some(framework) = self.frameworks.get_mut(&id) else {
            return;
        };
        framework.stream = Some(stream);
        framework.disconnected_at = None;
        framework.known = true;
        // SUBSCRIBE replaces the suppression with its `suppressed_roles`.
        framework.suppressed = !suppressed_roles.is_empty();
        framework.next_heartbeat = now + self.timing.heartbeat;
        let mut subscribed = Event::new();
        subscribed.set_type(event::Type::SUBSCRIBED);
        let body = subscribed.subscribed.mut_or_insert_default();
        body.framework_id
            .mut_or_insert_default()
            .set_value(id.clone());
        body.set_heartbeat_interval_seconds(self.timing.heartbeat.as_secs_f64());
        body.master_info = Some(self.master_info.clone()).into();
        self.send(&id, subscribed, now);
        self.send(&id, heartbeat_event(), now);
        // The agents resend every update still waiting for its acknowledgement.
        let task_ids: Vec<String> = self
            .frameworks
            .get(&id)
            .map(|f| f.tasks.keys().cloned().collect())
            .unwrap_or_default();
        for task_id in task_ids {
            self.send_head(&id, &task_id, now);
        }
        self.next_allocation = now;
    }

    /// The writer of `stream_id` found the connection gone.
    pub fn stream_closed(&mut self, stream_id: &str, now: Instant) {
        let found = self
            .frameworks
            .values()
            .find(|f| f.stream.as_ref().is_some_and(|s| s.id == stream_id))
            .map(|f| f.id.clone());
        if let Some(id) = found {
            self.disconnect(&id, now);
        }
    }

    fn disconnect(&mut self, id: &str, now: Instant) {
        if let Some(framework) = self.frameworks.get_mut(id) {
            if framework.stream.take().is_some() {
                log::info!(
                    "sim: framework {id} disconnected; failover timeout {:?}",
                    framework.failover_timeout()
                );
                framework.disconnected_at = Some(now);
                // The allocator forgets a deactivated framework's filters.
                framework.filters.clear();
            }
        }
        self.discard_offers_of(id);
    }

    // ----- calls ----------------------------------------------------------------

    pub fn teardown(&mut self, id: &str) {
        log::info!("sim: framework {id} torn down");
        self.remove_framework(id);
    }

    pub fn accept(&mut self, id: &str, accept: call::Accept, now: Instant) {
        let offer_ids: Vec<String> = accept
            .offer_ids
            .iter()
            .map(|o| o.value().to_string())
            .collect();
        let launches: Vec<v1::TaskInfo> = accept
            .operations
            .iter()
            .filter(|op| op.type_() == v1::offer::operation::Type::LAUNCH)
            .flat_map(|op| op.launch.task_infos.iter().cloned())
            .collect();
        let refuse = refuse_seconds(accept.filters.as_ref());
        let agent_id = match self.validate_offers(id, &offer_ids) {
            Ok(agent_id) => agent_id,
            Err(error) => {
                for offer_id in &offer_ids {
                    if self
                        .offers
                        .get(offer_id)
                        .is_some_and(|o| o.framework_id == id)
                    {
                        self.return_offer(offer_id);
                    }
                }
                let partition_aware = self
                    .frameworks
                    .get(id)
                    .is_some_and(Framework::partition_aware);
                let state = if partition_aware {
                    TaskState::TASK_DROPPED
                } else {
                    TaskState::TASK_LOST
                };
                for task in &launches {
                    let mut status =
                        master_status(task.task_id.value(), state, Reason::REASON_INVALID_OFFERS);
                    status.set_message(format!("Task launched with invalid offers: {error}"));
                    if let Some(agent) = task.agent_id.as_ref() {
                        status.agent_id = Some(agent.clone()).into();
                    }
                    self.send(id, update_event(status), now);
                }
                return;
            }
        };
        let mut pool = Resources::default();
        for offer_id in &offer_ids {
            if let Some(offer) = self.offers.remove(offer_id) {
                pool.add(&offer.resources);
            }
        }
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.offer = None;
        }
        let mut seen = HashSet::new();
        for task in launches {
            let task_id = task.task_id.value().to_string();
            let checked = self.validate_task(id, &agent_id, &task, &pool, &seen);
            match checked {
                Err(message) => {
                    if message.starts_with(DUPLICATE_ID) {
                        self.counters.duplicate_launches += 1;
                    }
                    let mut status =
                        master_status(&task_id, TaskState::TASK_ERROR, Reason::REASON_TASK_INVALID);
                    status.set_message(message);
                    status.agent_id = task.agent_id.clone();
                    self.send(id, update_event(status), now);
                }
                Ok(resources) => {
                    self.counters.launches += 1;
                    pool.subtract(&resources);
                    seen.insert(task_id.clone());
                    self.launch(id, &agent_id, task, resources, now);
                }
            }
        }
        // What no task used goes back to the agent, held back from this framework.
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.free.add(&pool);
        }
        self.add_filter(id, &agent_id, pool, refuse, now);
    }

    fn validate_offers(&self, id: &str, offer_ids: &[String]) -> Result<String, String> {
        if offer_ids.is_empty() {
            return Err("No offers specified".to_string());
        }
        let mut agent: Option<&str> = None;
        let mut seen = HashSet::new();
        for offer_id in offer_ids {
            if !seen.insert(offer_id) {
                return Err(format!("Duplicate offer {offer_id} in offer list"));
            }
            let Some(offer) = self.offers.get(offer_id) else {
                return Err(format!("Offer {offer_id} is no longer valid"));
            };
            if offer.framework_id != id {
                return Err(format!(
                    "Offer {offer_id} has invalid framework {} while framework {id} is expected",
                    offer.framework_id
                ));
            }
            match agent {
                Some(first) if first != offer.agent_id => {
                    return Err(format!(
                        "Aggregated offers must belong to one single agent. Offer {offer_id} uses agent {} and another offer uses agent {first}",
                        offer.agent_id
                    ))
                }
                _ => agent = Some(&offer.agent_id),
            }
        }
        agent
            .map(str::to_string)
            .ok_or_else(|| "No offers specified".to_string())
    }

    fn validate_task(
        &self,
        id: &str,
        agent_id: &str,
        task: &v1::TaskInfo,
        pool: &Resources,
        seen: &HashSet<String>,
    ) -> Result<Resources, String> {
        let task_id = task.task_id.value();
        if let Some(error) = invalid_id(task_id) {
            return Err(format!("TaskID '{task_id}' {error}"));
        }
        // Terminal tasks count until their last update is acknowledged.
        let live = self
            .frameworks
            .get(id)
            .is_some_and(|f| f.tasks.contains_key(task_id));
        if live || seen.contains(task_id) {
            return Err(format!("{DUPLICATE_ID}{task_id}"));
        }
        let away = self
            .frameworks
            .get(id)
            .and_then(|f| f.away_tasks.get(task_id))
            .and_then(|t| self.agents.get(&t.agent_id))
            .and_then(|a| a.away);
        match away {
            Some(Away::Unreachable(_)) => {
                return Err(format!(
                    "Task reuses the ID of an unreachable task: {task_id}"
                ))
            }
            // A real master after a restart does not know the task yet; the
            // collision shows once the agent is back. Refused here at once.
            Some(Away::Unknown | Away::Recovered) => {
                return Err(format!("{DUPLICATE_ID}{task_id}"))
            }
            None => {}
        }
        if task.agent_id.value() != agent_id {
            return Err(format!(
                "Task uses invalid agent: {}",
                task.agent_id.value()
            ));
        }
        if task.resources.is_empty() {
            return Err("Task uses no resources".to_string());
        }
        if task.command.is_some() == task.executor.is_some() {
            return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".to_string());
        }
        if let Some(container) = task.container.as_ref() {
            if container.type_() == v1::container_info::Type::DOCKER && container.docker.is_none() {
                return Err(
                    "DockerInfo 'docker' is not set for DOCKER typed ContainerInfo".to_string(),
                );
            }
        }
        let reserved_role = self.agents.get(agent_id).and_then(Agent::reserved_role);
        let resources = Resources::from_proto(&task.resources, reserved_role)?;
        if !pool.contains(&resources) {
            return Err(format!(
                "Total resources {} required by task and its executor is more than available {}",
                resources.describe(),
                pool.describe()
            ));
        }
        Ok(resources)
    }

    fn launch(
        &mut self,
        id: &str,
        agent_id: &str,
        info: v1::TaskInfo,
        resources: Resources,
        now: Instant,
    ) {
        let task_id = info.task_id.value().to_string();
        // What the agent's containerizer refuses fails on the agent, not in the master.
        let launch_error = docker_launch_error(&info, &resources);
        let mut task = Task {
            info,
            agent_id: agent_id.to_string(),
            resources: resources.clone(),
            state: TaskState::TASK_STAGING,
            reported: None,
            run_at: None,
            updates: VecDeque::new(),
            sent_at: None,
            retry_delay: self.timing.update_retry,
            container_status: None,
        };
        let uuid = next_uuid(&mut self.rng);
        match launch_error {
            Some(message) => {
                let mut status = agent_status(&task, TaskState::TASK_FAILED, uuid);
                status.set_reason(Reason::REASON_CONTAINER_LAUNCH_FAILED);
                status.set_message(message);
                task.state = TaskState::TASK_FAILED;
                task.updates.push_back(status);
                if let Some(agent) = self.agents.get_mut(agent_id) {
                    agent.free.add(&resources);
                }
            }
            None => {
                task.state = TaskState::TASK_STARTING;
                task.run_at = Some(now + self.timing.task_start_delay);
                let status = agent_status(&task, TaskState::TASK_STARTING, uuid);
                task.updates.push_back(status);
            }
        }
        if let Some(framework) = self.frameworks.get_mut(id) {
            framework.tasks.insert(task_id.clone(), task);
            framework.schedule(&task_id);
        }
        self.send_head(id, &task_id, now);
    }

    pub fn decline(&mut self, id: &str, decline: call::Decline, now: Instant) {
        let refuse = refuse_seconds(decline.filters.as_ref());
        for offer_id in decline.offer_ids.iter().map(|o| o.value()) {
            let Some(offer) = self.offers.get(offer_id) else {
                continue;
            };
            if offer.framework_id != id {
                continue;
            }
            let (agent_id, resources) = (offer.agent_id.clone(), offer.resources.clone());
            self.return_offer(offer_id);
            self.add_filter(id, &agent_id, resources, refuse, now);
        }
    }

    pub fn suppress(&mut self, id: &str) {
        if let Some(framework) = self.frameworks.get_mut(id) {
            framework.suppressed = true;
        }
    }

    pub fn revive(&mut self, id: &str, now: Instant) {
        if let Some(framework) = self.frameworks.get_mut(id) {
            framework.suppressed = false;
            framework.filters.clear();
        }
        self.next_allocation = now;
    }

    pub fn kill(&mut self, id: &str, kill: call::Kill, now: Instant) {
        let task_id = kill.task_id.value().to_string();
        let agent_given = kill.agent_id.as_ref().map(|a| a.value().to_string());
        let Some(framework) = self.frameworks.get_mut(id) else {
            return;
        };
        let Some(task) = framework.tasks.get_mut(&task_id) else {
            // An unknown task is reconciled, so the framework learns it is gone.
            if let Some(status) = self.unknown_task_status(id, &task_id, agent_given.as_deref()) {
                self.send(id, update_event(status), now);
            }
            return;
        };
        if agent_given
            .as_ref()
            .is_some_and(|agent| *agent != task.agent_id)
            || is_terminal(task.state)
        {
            return;
        }
        let killing_state = framework
            .info
            .capabilities
            .iter()
            .any(|c| c.type_() == v1::framework_info::capability::Type::TASK_KILLING_STATE);
        let staging = task.state == TaskState::TASK_STAGING;
        if killing_state && !staging && task.state != TaskState::TASK_KILLING {
            let status = agent_status(task, TaskState::TASK_KILLING, next_uuid(&mut self.rng));
            task.state = TaskState::TASK_KILLING;
            task.updates.push_back(status);
        }
        let uuid = next_uuid(&mut self.rng);
        let mut status = agent_status(task, TaskState::TASK_KILLED, uuid);
        // Only a task its executor never got is killed "during launch".
        if staging {
            status.set_reason(Reason::REASON_TASK_KILLED_DURING_LAUNCH);
        }
        status.set_message("Container killed".to_string());
        self.finish_task(id, &task_id, status, now);
        // TASK_KILLING may have gone first onto an idle stream.
        self.send_head(id, &task_id, now);
    }

    pub fn acknowledge(&mut self, id: &str, ack: call::Acknowledge, now: Instant) {
        let task_id = ack.task_id.value().to_string();
        let Some(framework) = self.frameworks.get_mut(id) else {
            return;
        };
        let Some(task) = framework.tasks.get_mut(&task_id) else {
            return;
        };
        if task
            .updates
            .front()
            .is_none_or(|head| head.uuid() != ack.uuid())
        {
            return;
        }
        task.updates.pop_front();
        task.sent_at = None;
        task.retry_delay = self.timing.update_retry;
        if task.updates.is_empty() && is_terminal(task.state) {
            framework.tasks.remove(&task_id);
            return;
        }
        self.send_head(id, &task_id, now);
    }

    pub fn reconcile(&mut self, id: &str, reconcile: call::Reconcile, now: Instant) {
        let mut statuses = Vec::new();
        let Some(framework) = self.frameworks.get(id) else {
            return;
        };
        if reconcile.tasks.is_empty() {
            for (task_id, task) in &framework.tasks {
                statuses.push(latest_status(task_id, task));
            }
        } else {
            for wanted in &reconcile.tasks {
                let task_id = wanted.task_id.value();
                match framework.tasks.get(task_id) {
                    Some(task) => statuses.push(latest_status(task_id, task)),
                    None => {
                        let agent = wanted.agent_id.as_ref().map(|a| a.value().to_string());
                        statuses.extend(self.unknown_task_status(id, task_id, agent.as_deref()));
                    }
                }
            }
        }
        for status in statuses {
            self.send(id, update_event(status), now);
        }
    }

    /// The master's answer for a task it does not track (explicit
    /// reconciliation, KILL): by what it knows of the agent named, if any.
    /// None while that agent (or, with none named, any agent) is recovered
    /// from the registry but not re-registered: the task may be there.
    fn unknown_task_status(
        &self,
        id: &str,
        task_id: &str,
        agent_id: Option<&str>,
    ) -> Option<v1::TaskStatus> {
        let partition_aware = self
            .frameworks
            .get(id)
            .is_some_and(Framework::partition_aware);
        let agent = agent_id.and_then(|agent| self.agents.get(agent));
        let recovered = |a: &Agent| a.away == Some(Away::Recovered);
        let silent = match agent_id {
            Some(_) => agent.is_some_and(recovered),
            None => self.agents.values().any(recovered),
        };
        if silent {
            return None;
        }
        let unreachable_since = match agent.and_then(|a| a.away) {
            Some(Away::Unreachable(since)) => Some(since),
            _ => None,
        };
        // An agent the restarted master has not heard from is unknown to it.
        let agent = agent.filter(|a| a.away.is_none());
        let gone = agent_id.is_some_and(|agent| self.gone_agents.contains(agent));
        let (state, message) = if unreachable_since.is_some() {
            (
                TaskState::TASK_UNREACHABLE,
                "Reconciliation: Task is unreachable",
            )
        } else if agent.is_some() {
            (
                TaskState::TASK_GONE,
                "Reconciliation: Task is unknown to the agent",
            )
        } else if gone {
            (
                TaskState::TASK_GONE_BY_OPERATOR,
                "Reconciliation: Task is gone",
            )
        } else {
            (TaskState::TASK_UNKNOWN, "Reconciliation: Task is unknown")
        };
        // Frameworks that are not partition-aware hear TASK_LOST for all of these.
        let state = if partition_aware {
            state
        } else {
            TaskState::TASK_LOST
        };
        let mut status = master_status(task_id, state, Reason::REASON_RECONCILIATION);
        status.set_message(message.to_string());
        if let Some(agent) = agent_id {
            status
                .agent_id
                .mut_or_insert_default()
                .set_value(agent.to_string());
        }
        if let Some(since) = unreachable_since {
            status.unreachable_time.mut_or_insert_default().nanoseconds = Some(since);
        }
        Some(status)
    }

    // ----- time -------------------------------------------------------------------

    /// Heartbeats, task starts, update retries, failover timeouts and offers.
    pub fn tick(&mut self, now: Instant) {
        if self.reregister_at.is_some_and(|at| now >= at) {
            self.reregister_at = None;
            let unknown: Vec<String> = self
                .agents
                .values()
                .filter(|a| matches!(a.away, Some(Away::Unknown | Away::Recovered)))
                .map(|a| a.spec.hostname.clone())
                .collect();
            for hostname in unknown {
                let _ = self.agent_reregister(&hostname, now);
            }
        }
        let ids: Vec<String> = self.frameworks.keys().cloned().collect();
        for id in &ids {
            self.tick_framework(id, now);
        }
        if now >= self.next_allocation {
            self.allocate(now);
            self.next_allocation = now + self.timing.allocation_interval;
        }
    }

    fn tick_framework(&mut self, id: &str, now: Instant) {
        let Some(framework) = self.frameworks.get_mut(id) else {
            return;
        };
        if let Some(since) = framework.disconnected_at {
            if now.duration_since(since) >= framework.failover_timeout() {
                log::info!("sim: framework {id} failover timeout expired");
                self.remove_framework(id);
            }
            return;
        }
        let heartbeat_due = !self.heartbeats_paused && now >= framework.next_heartbeat;
        if heartbeat_due {
            framework.next_heartbeat = now + self.timing.heartbeat;
        }
        let mut starting = Vec::new();
        let mut resend = Vec::new();
        for task_id in framework.take_due(now) {
            self.counters.tick_examined += 1;
            let Some(task) = framework.tasks.get_mut(&task_id) else {
                continue;
            };
            if task.run_at.is_some_and(|at| now >= at) {
                task.run_at = None;
                starting.push(task_id.clone());
            }
            if task
                .sent_at
                .is_some_and(|at| now.duration_since(at) >= task.retry_delay)
            {
                // 10 s, 20 s, ... up to 10 min with the default retry.
                task.retry_delay =
                    (task.retry_delay * 2).min(self.timing.update_retry * MAX_RETRY_FACTOR);
                resend.push(task_id.clone());
            }
        }
        if heartbeat_due {
            self.send(id, heartbeat_event(), now);
        }
        for task_id in starting {
            self.start_running(id, &task_id, now);
        }
        for task_id in resend {
            if let Some(task) = self
                .frameworks
                .get_mut(id)
                .and_then(|f| f.tasks.get_mut(&task_id))
            {
                task.sent_at = None;
            }
            self.send_head(id, &task_id, now);
        }
    }

    fn start_running(&mut self, id: &str, task_id: &str, now: Instant) {
        let uuid = next_uuid(&mut self.rng);
        let container = next_uuid(&mut self.rng);
        let more = next_uuid(&mut self.rng);
        let hostname = self.agent_hostname_of(id, task_id);
        let Some(task) = self.task_mut(id, task_id) else {
            return;
        };
        if task.state != TaskState::TASK_STARTING {
            return;
        }
        task.state = TaskState::TASK_RUNNING;
        let mut status = agent_status(task, TaskState::TASK_RUNNING, uuid);
        let pid = 1000 + (u32::from(container[0]) << 8 | u32::from(container[1]));
        let ip = format!("172.17.{}.{}", container[2], 2 + container[3] % 250);
        if task
            .info
            .container
            .as_ref()
            .is_some_and(|c| c.type_() == v1::container_info::Type::DOCKER)
        {
            let inspect = json!([{
                "Id": hex(&[container, more].concat()),
                "Name": format!("/mesos-{}", uuid_string(&container)),
                "Config": {"Hostname": hostname},
                "State": {"Running": true, "Pid": pid},
                "NetworkSettings": {"IPAddress": ip},
            }]);
            status.set_data(inspect.to_string().into_bytes());
        }
        let mut address = v1::network_info::IPAddress::new();
        address.set_ip_address(ip);
        let mut network = v1::NetworkInfo::new();
        network.ip_addresses.push(address);
        let container_status = status.container_status.mut_or_insert_default();
        container_status.network_infos.push(network);
        container_status.set_executor_pid(pid);
        task.container_status = status.container_status.clone().into_option();
        let was_idle = task.updates.is_empty();
        task.updates.push_back(status);
        if was_idle {
            self.send_head(id, task_id, now);
        }
    }

    fn agent_hostname_of(&self, id: &str, task_id: &str) -> String {
        self.frameworks
            .get(id)
            .and_then(|f| f.tasks.get(task_id))
            .and_then(|t| self.agents.get(&t.agent_id))
            .map(|a| a.spec.hostname.clone())
            .unwrap_or_default()
    }

    fn allocate(&mut self, now: Instant) {
        self.counters.allocation_rounds += 1;
        let ids: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.stream.is_some() && !f.suppressed && offers_wanted(&f.info))
            .map(|f| f.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let mut batches: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
        for (n, agent_id) in agent_ids.iter().enumerate() {
            let Some(agent) = self.agents.get(agent_id) else {
                continue;
            };
            if agent.offer.is_some() || agent.away.is_some() {
                continue;
            }
            // Rotate which framework is asked first, so several share fairly.
            let chosen = (0..ids.len())
                .map(|k| &ids[(n + k) % ids.len()])
                .find(|id| {
                    self.frameworks.get(*id).is_some_and(|f| {
                        let offerable = agent.offerable(&f.info);
                        offerable.worth_offering()
                            && f.filters.get(agent_id).is_none_or(|filter| {
                                now >= filter.until || !filter.resources.contains(&offerable)
                            })
                    })
                });
            let Some(framework_id) = chosen.cloned() else {
                continue;
            };
            let offer = self.make_offer(&framework_id, agent_id);
            batches.entry(framework_id).or_default().push(offer);
        }
        for (id, offers) in batches {
            if let Some(framework) = self.frameworks.get_mut(&id) {
                framework.filters.retain(|_, filter| filter.until > now);
            }
            let mut event = Event::new();
            event.set_type(event::Type::OFFERS);
            event.offers.mut_or_insert_default().offers = offers;
            self.send(&id, event, now);
        }
    }

    fn make_offer(&mut self, framework_id: &str, agent_id: &str) -> v1::Offer {
        let offer_id = format!("{}-O{}", self.master_id, self.counters.offers);
        self.counters.offers += 1;
        let info = self
            .frameworks
            .get(framework_id)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        let role = Some(&info)
            .filter(|info| is_multi_role(info))
            .and_then(|info| info.roles.first().cloned());
        let mut offer = v1::Offer::new();
        offer.id.mut_or_insert_default().set_value(offer_id.clone());
        offer
            .framework_id
            .mut_or_insert_default()
            .set_value(framework_id.to_string());
        offer
            .agent_id
            .mut_or_insert_default()
            .set_value(agent_id.to_string());
        if let Some(agent) = self.agents.get_mut(agent_id) {
            let resources = agent.offerable(&info);
            agent.free.subtract(&resources);
            offer.set_hostname(agent.spec.hostname.clone());
            offer.resources = resources.to_proto(agent.reserved_role());
            for (name, value) in &agent.spec.attributes {
                let mut attribute = v1::Attribute::new();
                attribute.set_name(name.clone());
                attribute.set_type(v1::value::Type::TEXT);
                attribute
                    .text
                    .mut_or_insert_default()
                    .set_value(value.clone());
                offer.attributes.push(attribute);
            }
            agent.offer = Some(offer_id.clone());
            self.offers.insert(
                offer_id,
                OfferRecord {
                    framework_id: framework_id.to_string(),
                    agent_id: agent_id.to_string(),
                    resources,
                },
            );
        }
        if let Some(role) = role {
            offer
                .allocation_info
                .mut_or_insert_default()
                .set_role(role.clone());
            for resource in &mut offer.resources {
                resource
                    .allocation_info
                    .mut_or_insert_default()
                    .set_role(role.clone());
            }
        }
        offer
    }

    // ----- the update streams ------------------------------------------------------

    fn task_mut(&mut self, id: &str, task_id: &str) -> Option<&mut Task> {
        self.frameworks.get_mut(id)?.tasks.get_mut(task_id)
    }

    /// Sends the head of a task's update stream, if it is not already in flight.
    fn send_head(&mut self, id: &str, task_id: &str, now: Instant) {
        let Some(framework) = self.frameworks.get_mut(id) else {
            return;
        };
        if framework.stream.is_none() {
            return;
        }
        let Some(task) = framework.tasks.get_mut(task_id) else {
            return;
        };
        if task.sent_at.is_some() {
            return;
        }
        let Some(head) = task.updates.front().cloned() else {
            return;
        };
        task.sent_at = Some(now);
        task.reported = Some(head.state());
        framework.schedule(task_id);
        self.send(id, update_event(head), now);
    }

    /// Moves a task to a terminal state from the agent's side, freeing its resources.
    fn finish_task(&mut self, id: &str, task_id: &str, status: v1::TaskStatus, now: Instant) {
        let Some(task) = self.task_mut(id, task_id) else {
            return;
        };
        task.state = status.state();
        task.run_at = None;
        let was_idle = task.updates.is_empty();
        task.updates.push_back(status);
        let (agent_id, resources) = (task.agent_id.clone(), task.resources.clone());
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.free.add(&resources);
        }
        if was_idle {
            self.send_head(id, task_id, now);
        }
    }

    fn send(&mut self, id: &str, event: Event, now: Instant) {
        let Some(framework) = self.frameworks.get_mut(id) else {
            return;
        };
        let Some(stream) = &framework.stream else {
            return;
        };
        if stream.tx.len() >= STREAM_CAPACITY {
            log::warn!("sim: framework {id} does not read its stream; dropping it");
            self.disconnect(id, now);
        } else if stream.tx.send(Out::Event(Box::new(event))).is_err() {
            self.disconnect(id, now);
        }
    }

    // ----- offers and frameworks -----------------------------------------------------

    fn return_offer(&mut self, offer_id: &str) {
        if let Some(offer) = self.offers.remove(offer_id) {
            if let Some(agent) = self.agents.get_mut(&offer.agent_id) {
                agent.free.add(&offer.resources);
                agent.offer = None;
            }
        }
    }

    fn discard_offers_of(&mut self, id: &str) {
        let mine: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for offer_id in mine {
            self.return_offer(&offer_id);
        }
    }

    fn add_filter(
        &mut self,
        id: &str,
        agent_id: &str,
        resources: Resources,
        seconds: f64,
        now: Instant,
    ) {
        if seconds <= 0.0 {
            return;
        }
        if let Some(framework) = self.frameworks.get_mut(id) {
            let until = now + Duration::from_secs_f64(seconds);
            framework
                .filters
                .insert(agent_id.to_string(), Filter { until, resources });
        }
    }

    fn remove_framework(&mut self, id: &str) {
        self.discard_offers_of(id);
        let Some(framework) = self.frameworks.remove(id) else {
            return;
        };
        // Tasks of an unreachable agent are killed when it comes back.
        for task in framework
            .tasks
            .values()
            .chain(framework.away_tasks.values())
        {
            if !is_terminal(task.state) {
                if let Some(agent) = self.agents.get_mut(&task.agent_id) {
                    agent.free.add(&task.resources);
                }
            }
        }
        if let Some(stream) = framework.stream {
            let _ = stream.tx.try_send(Out::End);
        }
        self.removed.insert(id.to_string());
    }

    // ----- control endpoints ------------------------------------------------------------

    pub fn add_agent(&mut self, spec: AgentSpec, now: Instant) -> Result<String, String> {
        if self
            .agents
            .values()
            .any(|a| a.spec.hostname == spec.hostname)
        {
            return Err(format!("agent {} already exists", spec.hostname));
        }
        let id = format!("{}-S{}", self.master_id, self.counters.agents);
        self.counters.agents += 1;
        let mut free = Resources::new(spec.cpus, spec.mem_mb, &spec.ports);
        if let Some(reserved) = &spec.reserved {
            free = free.with_reserved(reserved.cpus, reserved.mem_mb);
        }
        self.agents.insert(
            id.clone(),
            Agent {
                id: id.clone(),
                spec,
                free,
                offer: None,
                away: None,
            },
        );
        self.next_allocation = now;
        Ok(id)
    }

    fn agent_by_hostname(&self, hostname: &str) -> Result<String, (u16, String)> {
        self.agents
            .values()
            .find(|a| a.spec.hostname == hostname)
            .map(|a| a.id.clone())
            .ok_or_else(|| (404, format!("no agent {hostname}")))
    }

    /// Rescinds the agent's outstanding offer, if any.
    fn rescind_offer_of(&mut self, agent_id: &str, now: Instant) {
        let Some(offer_id) = self.agents.get_mut(agent_id).and_then(|a| a.offer.take()) else {
            return;
        };
        if let Some(offer) = self.offers.remove(&offer_id) {
            if let Some(agent) = self.agents.get_mut(agent_id) {
                agent.free.add(&offer.resources);
            }
            let mut rescind = Event::new();
            rescind.set_type(event::Type::RESCIND);
            rescind
                .rescind
                .mut_or_insert_default()
                .offer_id
                .mut_or_insert_default()
                .set_value(offer_id);
            self.send(&offer.framework_id, rescind, now);
        }
    }

    /// FAILURE with the agent's id to every connected framework.
    fn send_agent_lost(&mut self, agent_id: &str, now: Instant) {
        let ids: Vec<String> = self.frameworks.keys().cloned().collect();
        for id in ids {
            let mut failure = Event::new();
            failure.set_type(event::Type::FAILURE);
            failure
                .failure
                .mut_or_insert_default()
                .agent_id
                .mut_or_insert_default()
                .set_value(agent_id.to_string());
            self.send(&id, failure, now);
        }
    }

    /// Takes the tasks of `agent_id` out of `tasks` (or `away_tasks`)
    /// of every framework: (framework id, partition-aware, task id, task).
    fn take_tasks_on(&mut self, agent_id: &str, away: bool) -> Vec<(String, bool, String, Task)> {
        let mut taken = Vec::new();
        for (id, framework) in &mut self.frameworks {
            let partition_aware = framework.partition_aware();
            let tasks = if away {
                &mut framework.away_tasks
            } else {
                &mut framework.tasks
            };
            let on_agent: Vec<String> = tasks
                .iter()
                .filter(|(_, t)| t.agent_id == agent_id)
                .map(|(k, _)| k.clone())
                .collect();
            for task_id in on_agent {
                if let Some(task) = tasks.remove(&task_id) {
                    taken.push((id.clone(), partition_aware, task_id, task));
                }
            }
        }
        taken
    }

    /// The agent stops answering the master's health checks: its offer is
    /// rescinded, its tasks become TASK_UNREACHABLE (TASK_LOST for frameworks
    /// that are not partition-aware) and leave the master's task list, and
    /// every framework hears FAILURE. The agent keeps its id and its tasks.
    pub fn agent_unreachable(
        &mut self,
        hostname: &str,
        now: Instant,
    ) -> Result<String, (u16, String)> {
        let agent_id = self.agent_by_hostname(hostname)?;
        if self.agents.get(&agent_id).is_some_and(|a| a.away.is_some()) {
            return Err((409, format!("agent {hostname} is not registered")));
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.rescind_offer_of(&agent_id, now);
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.away = Some(Away::Unreachable(since));
        }
        log::info!("sim: agent {agent_id} ({hostname}) unreachable");
        for (id, partition_aware, task_id, mut task) in self.take_tasks_on(&agent_id, false) {
            let state = if partition_aware {
                TaskState::TASK_UNREACHABLE
            } else {
                TaskState::TASK_LOST
            };
            let mut status = master_status(&task_id, state, Reason::REASON_AGENT_REMOVED);
            status.set_message("health check timed out".to_string());
            status
                .agent_id
                .mut_or_insert_default()
                .set_value(agent_id.clone());
            status.unreachable_time.mut_or_insert_default().nanoseconds = Some(since);
            // Whatever was in flight is resent when the agent comes back.
            task.sent_at = None;
            task.retry_delay = self.timing.update_retry;
            if let Some(framework) = self.frameworks.get_mut(&id) {
                framework.filters.remove(&agent_id);
                framework.away_tasks.insert(task_id, task);
            }
            self.send(&id, update_event(status), now);
        }
        self.send_agent_lost(&agent_id, now);
        Ok(agent_id)
    }

    /// An agent that is away (unreachable, or unknown after a master restart)
    /// re-registers with its old id: every task it still runs is tracked again
    /// and reported in its current state (a master update, no uuid), its
    /// unacknowledged updates are resent, and its resources are offered again.
    pub fn agent_reregister(
        &mut self,
        hostname: &str,
        now: Instant,
    ) -> Result<String, (u16, String)> {
        let agent_id = self.agent_by_hostname(hostname)?;
        // A recovered agent's tasks come back silently: the framework asks.
        let message = match self.agents.get_mut(&agent_id).and_then(|a| a.away.take()) {
            Some(Away::Unreachable(_)) => Some("Unreachable agent re-reregistered"),
            Some(Away::Unknown) => Some("Unknown agent reregistered"),
            Some(Away::Recovered) => None,
            None => return Err((409, format!("agent {hostname} is registered"))),
        };
        log::info!("sim: agent {agent_id} ({hostname}) re-registered");
        for (id, _, task_id, task) in self.take_tasks_on(&agent_id, true) {
            let mut status = master_status(&task_id, task.state, Reason::REASON_AGENT_REREGISTERED);
            status.set_message(message.unwrap_or_default().to_string());
            status
                .agent_id
                .mut_or_insert_default()
                .set_value(agent_id.clone());
            status.container_status = task.container_status.clone().into();
            if let Some(framework) = self.frameworks.get_mut(&id) {
                // The agent tells the master about the framework, too.
                framework.known = true;
                framework.tasks.insert(task_id.clone(), task);
                framework.schedule(&task_id);
            }
            if message.is_some() {
                self.send(&id, update_event(status), now);
            }
            self.send_head(&id, &task_id, now);
        }
        self.next_allocation = now;
        Ok(agent_id)
    }

    /// Marks an agent gone, as an operator does: its offer is rescinded, its
    /// tasks (reachable or not) become TASK_GONE_BY_OPERATOR (TASK_LOST for
    /// frameworks that are not partition-aware), and, unless it was already
    /// unreachable, every framework hears FAILURE. Its id is never used again.
    pub fn remove_agent(&mut self, hostname: &str, now: Instant) -> Result<String, (u16, String)> {
        let agent_id = self.agent_by_hostname(hostname)?;
        self.rescind_offer_of(&agent_id, now);
        let was_reachable = self
            .agents
            .remove(&agent_id)
            .is_some_and(|a| a.away.is_none());
        self.gone_agents.insert(agent_id.clone());
        let mut gone = self.take_tasks_on(&agent_id, false);
        gone.extend(self.take_tasks_on(&agent_id, true));
        for (id, partition_aware, task_id, _) in gone {
            let (state, reason) = if partition_aware {
                (
                    TaskState::TASK_GONE_BY_OPERATOR,
                    Reason::REASON_AGENT_REMOVED_BY_OPERATOR,
                )
            } else {
                (TaskState::TASK_LOST, Reason::REASON_AGENT_REMOVED)
            };
            let mut status = master_status(&task_id, state, reason);
            status.set_message("Agent has been marked gone".to_string());
            status
                .agent_id
                .mut_or_insert_default()
                .set_value(agent_id.clone());
            self.send(&id, update_event(status), now);
        }
        for framework in self.frameworks.values_mut() {
            framework.filters.remove(&agent_id);
        }
        if was_reachable {
            self.send_agent_lost(&agent_id, now);
        }
        Ok(agent_id)
    }

    /// The master process restarts: a new master id, every stream dropped (no
    /// final chunk), every offer and filter gone, removed frameworks
    /// forgotten, and every agent away, its tasks untracked, until it
    /// re-registers (through `agent_reregister`, or all at once after
    /// `reregister_after`). With an in-memory registry the agents are unknown
    /// and gone agents forgotten; with a replicated one they are recovered.
    /// Frameworks resubscribe with their ids; until then nothing times out.
    pub fn restart(
        &mut self,
        registry: Registry,
        reregister_after: Option<Duration>,
        now: Instant,
    ) -> String {
        self.drop_streams(now);
        let offers: Vec<String> = self.offers.keys().cloned().collect();
        for offer_id in offers {
            self.return_offer(&offer_id);
        }
        self.master_id = uuid_string(&next_uuid(&mut self.rng));
        self.master_info.set_id(self.master_id.clone());
        self.removed.clear();
        let away = match registry {
            Registry::InMemory => {
                self.gone_agents.clear();
                Away::Unknown
            }
            Registry::Replicated => Away::Recovered,
        };
        let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
        for agent_id in &agent_ids {
            for (id, _, task_id, mut task) in self.take_tasks_on(agent_id, false) {
                task.sent_at = None;
                task.retry_delay = self.timing.update_retry;
                if let Some(framework) = self.frameworks.get_mut(&id) {
                    framework.away_tasks.insert(task_id, task);
                }
            }
            if let Some(agent) = self.agents.get_mut(agent_id) {
                agent.away = Some(away);
            }
        }
        for framework in self.frameworks.values_mut() {
            // Not known to the new master: no failover timer runs.
            framework.disconnected_at = None;
            framework.known = false;
            framework.suppressed = false;
            framework.filters.clear();
        }
        self.reregister_at = reregister_after.map(|after| now + after);
        log::info!("sim: master restarted as {}", self.master_id);
        self.master_id.clone()
    }

    /// Ends a running task as its container would: FINISHED (exit 0) or FAILED.
    pub fn end_task(&mut self, task_id: &str, failed: bool, now: Instant) -> Result<(), String> {
        let found = self
            .frameworks
            .iter()
            .find(|(_, f)| f.tasks.get(task_id).is_some_and(|t| !is_terminal(t.state)))
            .map(|(id, _)| id.clone());
        let Some(id) = found else {
            return Err(format!("no live task {task_id}"));
        };
        let uuid = next_uuid(&mut self.rng);
        let Some(task) = self.frameworks.get(&id).and_then(|f| f.tasks.get(task_id)) else {
            return Err(format!("no live task {task_id}"));
        };
        let state = if failed {
            TaskState::TASK_FAILED
        } else {
            TaskState::TASK_FINISHED
        };
        let mut status = agent_status(task, state, uuid);
        status.set_message(format!("Container exited with status {}", u8::from(failed)));
        if failed {
            status.set_reason(Reason::REASON_COMMAND_EXECUTOR_FAILED);
        }
        self.finish_task(&id, task_id, status, now);
        Ok(())
    }

    /// Drops every subscriber's connection without a final chunk.
    pub fn drop_streams(&mut self, now: Instant) -> usize {
        let connected: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.stream.is_some())
            .map(|f| f.id.clone())
            .collect();
        for id in &connected {
            self.disconnect(id, now);
        }
        connected.len()
    }

    pub fn pause_heartbeats(&mut self, paused: bool) {
        self.heartbeats_paused = paused;
    }

    /// The `/sim/state` document.
    pub fn state_json(&self) -> Value {
        let frameworks: Vec<Value> = self
            .frameworks
            .values()
            .map(|f| {
                json!({
                    "id": f.id, "name": f.info.name(), "user": f.info.user(), "connected": f.stream.is_some(),
                    "suppressed": f.suppressed, "failover_timeout": f.info.failover_timeout(),
                    "partition_aware": f.partition_aware(), "tasks": f.tasks.len(),
                })
            })
            .collect();
        let mut tasks = Vec::new();
        let mut unacknowledged = serde_json::Map::new();
        for framework in self.frameworks.values() {
            let reachable = framework.tasks.iter().map(|t| (t, true));
            let unreachable = framework.away_tasks.iter().map(|t| (t, false));
            for ((task_id, task), reachable) in reachable.chain(unreachable) {
                let hostname = self
                    .agents
                    .get(&task.agent_id)
                    .map(|a| a.spec.hostname.as_str())
                    .unwrap_or("");
                tasks.push(json!({
                    "id": task_id, "framework_id": framework.id, "agent_id": task.agent_id, "hostname": hostname,
                    "state": state_name(task.state), "cpus": task.resources.cpus(), "mem": task.resources.mem_mb(),
                    "ports": task.resources.ports, "unacknowledged": task.updates.len(),
                    "reachable": reachable,
                    // What the agent would pass to `docker run --privileged`.
                    "privileged": task.info.container.docker.privileged(),
                }));
                if !task.updates.is_empty() {
                    unacknowledged.insert(task_id.clone(), json!(task.updates.len()));
                }
            }
        }
        let offers: Vec<Value> = self
            .offers
            .iter()
            .map(|(id, o)| {
                json!({"id": id, "framework_id": o.framework_id, "agent_id": o.agent_id,
                       "cpus": o.resources.cpus(), "mem": o.resources.mem_mb(), "ports": o.resources.ports})
            })
            .collect();
        let agents: Vec<Value> = self
            .agents
            .values()
            .map(|a| {
                json!({"id": a.id, "hostname": a.spec.hostname, "cpus": a.spec.cpus, "mem": a.spec.mem_mb,
                       "free_cpus": a.free.cpus(), "offer": a.offer, "free_mem": a.free.mem_mb(), "attributes": a.spec.attributes,
                       "reserved": a.spec.reserved.as_ref().map(|r| json!({"role": r.role, "cpus": r.cpus, "mem": r.mem_mb})),
                       "unreachable": matches!(a.away, Some(Away::Unreachable(_))),
                       "registered": a.away.is_none(), "recovered": a.away == Some(Away::Recovered)})
            })
            .collect();
        json!({
            "master_id": self.master_id, "frameworks": frameworks, "agents": agents, "tasks": tasks,
            "offers": offers, "unacknowledged": unacknowledged, "calls": self.calls,
            "heartbeats_paused": self.heartbeats_paused, "removed_frameworks": self.removed.len(),
            "launches": self.counters.launches, "duplicate_launches": self.counters.duplicate_launches,
            "allocation_rounds": self.counters.allocation_rounds,
            "tick_examined": self.counters.tick_examined,
            "due_entries": self.frameworks.values().map(|f| f.due.len()).sum::<usize>(),
        })
    }
}

/// Subscription-level refusals (sent as ERROR events), in the master's order:
/// roles, suppressed roles, removed, failover timeout.
fn subscription_error(
    info: &v1::FrameworkInfo,
    suppressed_roles: &[String],
    removed: &HashSet<String>,
) -> Option<String> {
    if let Some(error) = roles_error(info) {
        return Some(error);
    }
    let id = info.id.as_ref().map_or("", |id| id.value());
    let roles: Vec<&str> = if is_multi_role(info) {
        info.roles.iter().map(String::as_str).collect()
    } else {
        vec![info.role()]
    };
    if let Some(stranger) = suppressed_roles
        .iter()
        .find(|r| !roles.contains(&r.as_str()))
    {
        return Some(format!(
            "Suppressed role '{stranger}' is not contained in the list of roles"
        ));
    }
    if removed.contains(id) {
        return Some("Framework has been removed".to_string());
    }
    let timeout = info.failover_timeout();
    if !timeout.is_finite() || timeout > MAX_FAILOVER_SECONDS {
        return Some(format!(
            "The framework failover_timeout ({timeout}) is invalid"
        ));
    }
    None
}

/// The master's checks of `FrameworkInfo.role`/`roles`: which field a
/// framework may use, duplicates, then each role's name.
fn roles_error(info: &v1::FrameworkInfo) -> Option<String> {
    if is_multi_role(info) {
        if info.has_role() {
            return Some(
                "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"
                    .to_string(),
            );
        }
        let mut seen = HashSet::new();
        let mut duplicates: Vec<&str> = info
            .roles
            .iter()
            .filter(|role| !seen.insert(role.as_str()))
            .map(String::as_str)
            .collect();
        if !duplicates.is_empty() {
            duplicates.sort_unstable();
            duplicates.dedup();
            return Some(format!(
                "'FrameworkInfo.roles' contains duplicate items: {{ {} }}",
                duplicates.join(", ")
            ));
        }
        info.roles.iter().find_map(|role| {
            role_error(role).map(|e| format!("'FrameworkInfo.roles' contains invalid role: {e}"))
        })
    } else {
        if !info.roles.is_empty() {
            return Some(
                "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"
                    .to_string(),
            );
        }
        role_error(info.role()).map(|e| format!("'FrameworkInfo.role' is not a valid role: {e}"))
    }
}

/// Why Mesos refuses a role name, in its words (`roles::validate`): `*`, or
/// a `/`-separated path of components that are not `.`, `..` or `*`, do not
/// start with `-` and hold no whitespace or DEL.
pub fn role_error(role: &str) -> Option<String> {
    if role == "*" {
        return None;
    }
    if role.starts_with('/') {
        return Some(format!("Role '{role}' cannot start with a slash"));
    }
    if role.ends_with('/') {
        return Some(format!("Role '{role}' cannot end with a slash"));
    }
    if role.contains("//") {
        return Some(format!("Role '{role}' cannot contain two adjacent slashes"));
    }
    if role.is_empty() {
        return Some("Role names cannot be the empty string".to_string());
    }
    for component in role.split('/') {
        if matches!(component, "." | ".." | "*") {
            return Some(format!(
                "Role '{role}' cannot include '{component}' as a component"
            ));
        }
        if component.starts_with('-') {
            return Some(format!(
                "Role component '{component}' is invalid because it starts with a dash"
            ));
        }
        if component
            .chars()
            .any(|c| matches!(c, '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{7f}'))
        {
            return Some(format!(
                "Role component '{component}' is invalid because it contains backspace or whitespace"
            ));
        }
    }
    None
}

fn is_multi_role(info: &v1::FrameworkInfo) -> bool {
    info.capabilities
        .iter()
        .any(|c| c.type_() == v1::framework_info::capability::Type::MULTI_ROLE)
}

/// The role a framework's offers are allocated to: its first role when
/// MULTI_ROLE (the simulator allocates for one), else `role`.
fn allocation_role(info: &v1::FrameworkInfo) -> Option<&str> {
    if is_multi_role(info) {
        info.roles.first().map(String::as_str)
    } else {
        Some(info.role())
    }
}

/// A MULTI_ROLE framework with no roles gets no offers.
fn offers_wanted(info: &v1::FrameworkInfo) -> bool {
    !is_multi_role(info) || !info.roles.is_empty()
}

fn refuse(stream: &Stream, message: &str) {
    log::info!("sim: subscription refused: {message}");
    let _ = stream
        .tx
        .try_send(Out::Event(Box::new(error_event(message))));
    let _ = stream.tx.try_send(Out::End);
}

fn refuse_seconds(filters: Option<&v1::Filters>) -> f64 {
    let seconds = filters.map_or(DEFAULT_REFUSE_SECONDS, |f| f.refuse_seconds());
    if seconds.is_nan() || seconds < 0.0 {
        DEFAULT_REFUSE_SECONDS
    } else {
        seconds.min(MAX_REFUSE_SECONDS)
    }
}

/// Why an id is not acceptable to Mesos, if it is not.
pub fn invalid_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > 255 {
        Some("is too long")
    } else if id == "." || id == ".." {
        Some("must not be '.' or '..'")
    } else if id.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        Some("contains invalid characters")
    } else {
        None
    }
}

/// Port mappings need BRIDGE or USER networking and ports from the task's own resources.
fn docker_launch_error(info: &v1::TaskInfo, resources: &Resources) -> Option<String> {
    let docker = info.container.as_ref()?.docker.as_ref()?;
    if docker.port_mappings.is_empty() {
        return None;
    }
    use v1::container_info::docker_info::Network;
    if !matches!(docker.network(), Network::BRIDGE | Network::USER) {
        return Some(
            "Failed to launch container: Port mappings require BRIDGE or USER networking"
                .to_string(),
        );
    }
    for mapping in &docker.port_mappings {
        let port = u64::from(mapping.host_port());
        if !resources.ports.iter().any(|&(b, e)| b <= port && port <= e) {
            return Some(format!(
                "Failed to launch container: Port [{port}] not included in resources"
            ));
        }
    }
    None
}

pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TASK_FINISHED
            | TaskState::TASK_FAILED
            | TaskState::TASK_KILLED
            | TaskState::TASK_ERROR
            | TaskState::TASK_LOST
            | TaskState::TASK_DROPPED
            | TaskState::TASK_GONE
            | TaskState::TASK_GONE_BY_OPERATOR
    )
}

fn state_name(state: TaskState) -> String {
    // Generated enums print their proto names.
    format!("{state:?}")
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A master-generated status: no uuid, so it is never resent or acknowledged.
fn master_status(task_id: &str, state: TaskState, reason: Reason) -> v1::TaskStatus {
    let mut status = v1::TaskStatus::new();
    status
        .task_id
        .mut_or_insert_default()
        .set_value(task_id.to_string());
    status.set_state(state);
    status.set_source(Source::SOURCE_MASTER);
    status.set_reason(reason);
    status.set_timestamp(now_seconds());
    status
}

/// An agent/executor status with a uuid: part of the task's reliable stream.
fn agent_status(task: &Task, state: TaskState, uuid: [u8; 16]) -> v1::TaskStatus {
    let mut status = v1::TaskStatus::new();
    status.task_id = task.info.task_id.clone();
    status.set_state(state);
    status.set_source(Source::SOURCE_EXECUTOR);
    status
        .agent_id
        .mut_or_insert_default()
        .set_value(task.agent_id.clone());
    // No custom executor: the executor id is the task id.
    status
        .executor_id
        .mut_or_insert_default()
        .set_value(task.info.task_id.value().to_string());
    status.set_timestamp(now_seconds());
    status.set_uuid(uuid.to_vec());
    status
}

/// A reconciliation answer for a known task: the state the framework was last
/// told by its update stream (or, before any update, the task's state), as the
/// real master answers, not the agent's newer state.
fn latest_status(task_id: &str, task: &Task) -> v1::TaskStatus {
    let state = task.reported.unwrap_or(task.state);
    let mut status = master_status(task_id, state, Reason::REASON_RECONCILIATION);
    status.set_message("Reconciliation: Latest task state".to_string());
    status.container_status = task.container_status.clone().into();
    status
        .agent_id
        .mut_or_insert_default()
        .set_value(task.agent_id.clone());
    status
}

fn update_event(status: v1::TaskStatus) -> Event {
    let mut event = Event::new();
    event.set_type(event::Type::UPDATE);
    event.update.mut_or_insert_default().status = Some(status).into();
    event
}

fn heartbeat_event() -> Event {
    let mut event = Event::new();
    event.set_type(event::Type::HEARTBEAT);
    event
}

pub fn error_event(message: &str) -> Event {
    let mut event = Event::new();
    event.set_type(event::Type::ERROR);
    event
        .error
        .mut_or_insert_default()
        .set_message(message.to_string());
    event
}

/// splitmix64: ids and uuids need to be unique, not secret.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_uuid(state: &mut u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_u64(state).to_le_bytes());
    bytes[8..].copy_from_slice(&next_u64(state).to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_string(bytes: &[u8; 16]) -> String {
    let h = hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_as_the_master_checks_them() {
        let check = |role: &str, expected: Option<&str>| {
            assert_eq!(role_error(role).as_deref(), expected, "{role:?}");
        };
        check("*", None);
        check("lab", None);
        check("lab/team.a/x-y", None);
        check("", Some("Role names cannot be the empty string"));
        check("/a", Some("Role '/a' cannot start with a slash"));
        check("a/", Some("Role 'a/' cannot end with a slash"));
        check(
            "a//b",
            Some("Role 'a//b' cannot contain two adjacent slashes"),
        );
        check(
            "a/../b",
            Some("Role 'a/../b' cannot include '..' as a component"),
        );
        check("*/a", Some("Role '*/a' cannot include '*' as a component"));
        check(
            "a/-b",
            Some("Role component '-b' is invalid because it starts with a dash"),
        );
        check(
            "a\tb",
            Some("Role component 'a\tb' is invalid because it contains backspace or whitespace"),
        );
    }

    #[test]
    fn frameworks_use_the_role_field_their_capability_allows() {
        let check = |info: v1::FrameworkInfo, expected: Option<&str>| {
            assert_eq!(roles_error(&info).as_deref(), expected, "{info:?}");
        };
        let multi = |roles: &[&str]| {
            let mut info = v1::FrameworkInfo::new();
            let mut capability = v1::framework_info::Capability::new();
            capability.set_type(v1::framework_info::capability::Type::MULTI_ROLE);
            info.capabilities.push(capability);
            info.roles = roles.iter().map(|r| r.to_string()).collect();
            info
        };
        check(v1::FrameworkInfo::new(), None);
        check(multi(&["a", "b"]), None);
        check(
            multi(&["b", "a", "b", "a"]),
            Some("'FrameworkInfo.roles' contains duplicate items: { a, b }"),
        );
        let mut both = multi(&[]);
        both.set_role("a".to_string());
        check(
            both,
            Some("'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"),
        );
        let mut single = v1::FrameworkInfo::new();
        single.roles.push("a".to_string());
        check(
            single,
            Some("'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"),
        );
    }
}
