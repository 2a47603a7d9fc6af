//! `State` as keyed JSON records, for `store`: which records a turn changed,
//! every record of the current state, and a `State` rebuilt from records.
//!
//! Keys: `framework`, `meta` (id counters), `task/<internal id>`,
//! `service/<id>` (one-per-node templates), `intelligence/<task>` and
//! `idempotency/<Idempotency-Key>` (the user id a keyed submit answered, a
//! fingerprint of its task and the unix seconds of its first use). The node
//! registry is not kept: offers rebuild it.
//!
//! Each kind of value has a private record type (`TaskRecord`, `SpecRecord`,
//! ...) that serde reads and writes; `#[serde(default)]` marks what may be
//! absent, and what is absent is not written (`skip_serializing_if`), so a
//! task record holds only what differs from the defaults. The domain types
//! (`model.rs`) know nothing of this. Records written before these types
//! existed (every field written, `requested` always present) read the same
//! way: `tests/fixtures/state-v1` is such a state directory.
//!
//! A restore is a `Restore`: the store feeds it one record at a time, in the
//! order written, each deserialized straight from its bytes into its record
//! type and applied (the last value of a key wins); no file or `Value` tree
//! is held whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Phase, Service, State, Task, TaskRare};
use crate::scheduler::intelligence::{self, Entry, Source};
use crate::scheduler::model::{
    AgentId, DockerInfo, FrameworkId, NetworkMode, PortMapping, RestartPolicy, Sla, TaskId,
    TaskSpec, TaskState, Volume, VolumeMode,
};

/// One keyed value, as compact JSON text; `None` deletes the key.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: Option<String>,
}

pub(super) fn task_key(id: &TaskId) -> String {
    format!("task/{}", id.0)
}

pub(super) fn service_key(id: &str) -> String {
    format!("service/{id}")
}

pub(super) fn intelligence_key(task: &str) -> String {
    format!("intelligence/{task}")
}

pub(super) fn idempotency_key(key: &str) -> String {
    format!("idempotency/{key}")
}

pub(super) const FRAMEWORK_KEY: &str = "framework";
pub(super) const META_KEY: &str = "meta";

fn is_false(flag: &bool) -> bool {
    !flag
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `framework`.
#[derive(Serialize, Deserialize)]
struct FrameworkRecord {
    id: String,
}

/// `meta`: the id counters. `last_id_nanos` is a string: a u128 does not
/// fit every JSON reader's numbers.
#[derive(Serialize, Deserialize)]
struct MetaRecord {
    last_id_nanos: String,
    next_seq: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    teardown_pending: bool,
}

/// `task/<internal id>`.
#[derive(Serialize, Deserialize)]
struct TaskRecord {
    spec: SpecRecord,
    /// What the user submitted; absent when it is `spec` (no intelligence
    /// applied). Records before the serde types always have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested: Option<SpecRecord>,
    /// (attribute, derived value) pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    applied: Vec<(String, String)>,
    /// `pending`, `launching` or a Mesos state name.
    phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "DockerRecord::is_empty")]
    docker: DockerRecord,
    #[serde(default)]
    created_at: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status_message: String,
    #[serde(default, skip_serializing_if = "is_false")]
    kill_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waits_for: Option<String>,
    seq: u64,
    /// Out of a u32's range (a damaged record) counts as none.
    #[serde(default, skip_serializing_if = "is_zero")]
    restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff_ms: Option<u64>,
    /// Only in records from before `backoff_ms`: a wall-clock deadline, read
    /// as "a backoff was running".
    #[serde(default, skip_serializing)]
    not_before_ms: Option<u64>,
}

/// A task's docker container, as its executor reported it.
#[derive(Default, Serialize, Deserialize)]
struct DockerRecord {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    pid: u64,
}

impl DockerRecord {
    fn is_empty(&self) -> bool {
        self.id.is_empty() && self.name.is_empty() && self.pid == 0
    }
}

/// A `TaskSpec`, under the names the records have always used.
#[derive(Serialize, Deserialize)]
struct SpecRecord {
    id: String,
    image: String,
    mem: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    /// "", "singleton" or "one-per-node".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sla: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    node_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    node_name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    not_metered: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    reshuffleable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    arguments: Vec<String>,
    /// (host path, container path, "ro" or "rw").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<(String, String, String)>,
    /// (host port, container port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<(u16, u16)>,
    /// "", "host", "bridge" or "none".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    network: String,
    /// Absent: "never".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    /// Absent in records written before the field existed: not privileged.
    #[serde(default, skip_serializing_if = "is_false")]
    privileged: bool,
}

/// A spec as the idempotency fingerprint hashes it: every field, in
/// alphabetical order, exactly as records were written before the serde
/// types, so a key stored by an older version still matches its retry.
#[derive(Serialize)]
struct FingerprintSpec<'a> {
    arguments: &'a [String],
    cpus: Option<f64>,
    id: &'a str,
    image: &'a str,
    mem: u64,
    network: &'static str,
    node_name: &'a str,
    node_type: &'a str,
    not_metered: bool,
    ports: Vec<(u16, u16)>,
    privileged: bool,
    reshuffleable: bool,
    restart: &'static str,
    sla: &'static str,
    volumes: Vec<(&'a str, &'a str, &'static str)>,
}

/// The text the idempotency fingerprint hashes (see `FingerprintSpec`).
pub(super) fn fingerprint_text(spec: &TaskSpec) -> String {
    to_json(&FingerprintSpec {
        arguments: &spec.arguments,
        cpus: spec.cpus,
        id: &spec.id,
        image: &spec.docker_image,
        mem: spec.mem_mb,
        network: spec.network.as_str(),
        node_name: &spec.node_name,
        node_type: &spec.node_type,
        not_metered: spec.not_metered,
        ports: spec
            .ports
            .iter()
            .map(|p| (p.host_port, p.container_port))
            .collect(),
        privileged: spec.privileged,
        reshuffleable: spec.reshuffleable,
        restart: spec.restart.as_str(),
        sla: spec.sla.as_str(),
        volumes: spec
            .volumes
            .iter()
            .map(|v| {
                (
                    v.host_path.as_str(),
                    v.container_path.as_str(),
                    v.mode.as_str(),
                )
            })
            .collect(),
    })
}

/// `service/<id>`: a one-per-node template and the agents it covered.
#[derive(Serialize, Deserialize)]
struct ServiceRecord {
    spec: SpecRecord,
    #[serde(default)]
    covered: Vec<String>,
}

/// `idempotency/<key>`.
#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    id: String,
    fingerprint: String,
    /// Unix seconds of the key's first use.
    at: u64,
}

/// `intelligence/<task>`: attribute → entry.
type IntelligenceRecord = BTreeMap<String, EntryRecord>;

/// One intelligence entry; the derived value is derived again on restore.
#[derive(Serialize, Deserialize)]
struct EntryRecord {
    raw: String,
    /// "rest" or "redis"; anything else reads as "rest".
    #[serde(default)]
    source: String,
    #[serde(default)]
    updated_at: u64,
}

impl State {
    /// The records of everything changed since the last call.
    pub fn take_records(&mut self) -> Vec<Record> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|key| Record {
                value: self.value_of(&key),
                key,
            })
            .collect()
    }

    /// Every record of the current state, sorted by key: what a replay of
    /// the journal must rebuild (the state tests check it after every step).
    #[cfg(test)]
    pub fn all_records(&self) -> Vec<Record> {
        let mut keys: std::collections::BTreeSet<String> =
            [FRAMEWORK_KEY.to_string(), META_KEY.to_string()].into();
        keys.extend(self.tasks.keys().map(task_key));
        keys.extend(self.services.keys().map(|id| service_key(id)));
        keys.extend(self.intelligence.keys().map(|task| intelligence_key(task)));
        keys.extend(self.idempotency.keys().map(|key| idempotency_key(key)));
        keys.into_iter()
            .filter_map(|key| {
                self.value_of(&key).map(|value| Record {
                    key,
                    value: Some(value),
                })
            })
            .collect()
    }

    /// The JSON text of `key`'s value, `None` when the key is gone.
    fn value_of(&self, key: &str) -> Option<String> {
        if key == FRAMEWORK_KEY {
            return self.framework_id.as_ref().map(|id| {
                to_json(&FrameworkRecord {
                    id: id.0.to_string(),
                })
            });
        }
        if key == META_KEY {
            return Some(to_json(&MetaRecord {
                last_id_nanos: self.last_id_nanos.to_string(),
                next_seq: self.next_seq,
                teardown_pending: self.teardown_pending,
            }));
        }
        if let Some(id) = key.strip_prefix("task/") {
            return self
                .tasks
                .get(&TaskId(id.into()))
                .map(|task| to_json(&TaskRecord::of(task)));
        }
        if let Some(id) = key.strip_prefix("service/") {
            return self.services.get(id).map(|service| {
                to_json(&ServiceRecord {
                    spec: SpecRecord::of(&service.spec),
                    covered: service.covered.iter().map(|a| a.0.to_string()).collect(),
                })
            });
        }
        if let Some(key) = key.strip_prefix("idempotency/") {
            return self.idempotency.get(key).map(|used| {
                to_json(&IdempotencyRecord {
                    id: used.id.clone(),
                    fingerprint: used.fingerprint.clone(),
                    at: used.at,
                })
            });
        }
        if let Some(task) = key.strip_prefix("intelligence/") {
            return self.intelligence.get(task).map(|entries| {
                let record: IntelligenceRecord = entries
                    .iter()
                    .map(|(attribute, entry)| {
                        let record = EntryRecord {
                            raw: entry.raw.clone(),
                            source: entry.source.as_str().to_string(),
                            updated_at: entry.updated_at,
                        };
                        (attribute.clone(), record)
                    })
                    .collect();
                to_json(&record)
            });
        }
        None
    }

    /// Rebuilds a state from records in the order they were written; the
    /// last value of each key wins (see `Restore`). Tests only: a real
    /// restore streams the files through `Restore` (`charmander::start`).
    #[cfg(test)]
    pub fn restore(records: &[Record]) -> Result<State, String> {
        let mut restore = Restore::new();
        for record in records {
            restore
                .apply(&record.key, record.value.as_deref())
                .map_err(|why| format!("state record {:?}: {why}", record.key))?;
        }
        Ok(restore.finish())
    }
}

/// Serde cannot fail on these types (string keys, finite or absent floats).
fn to_json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap_or_else(|e| {
        // Unreachable; a record that cannot be written must not be lost silently.
        log::error!("state: cannot serialize a record: {e}");
        "null".to_string()
    })
}

fn from_json<'a, T: Deserialize<'a>>(value: &'a str) -> Result<T, String> {
    serde_json::from_str(value).map_err(|e| e.to_string())
}

/// A state being rebuilt from records, one at a time, in the order they
/// were written: each record replaces (or deletes) its key's value. Tasks
/// that were launched come back as they were; reconciliation after
/// subscribing sorts out what changed.
pub struct Restore {
    state: State,
    /// Tasks read in increasing key order (a snapshot is sorted) before
    /// any other change to the task map: built into it in one go (full
    /// B-tree nodes) when the order breaks or at the end. Inserted one by
    /// one in order, a B-tree keeps its nodes about half full: ~40 MB of
    /// slack at 100k tasks.
    in_order: Vec<(TaskId, Box<Task>)>,
    /// Every agent id and hostname read so far, so the tasks of one node
    /// share their text.
    agents: HashSet<AgentId>,
    hosts: HashSet<Arc<str>>,
}

impl Default for Restore {
    fn default() -> Restore {
        Restore::new()
    }
}

impl Restore {
    pub fn new() -> Restore {
        let mut state = State::new(None);
        state.restored = true;
        Restore {
            state,
            in_order: Vec::new(),
            agents: HashSet::new(),
            hosts: HashSet::new(),
        }
    }

    /// Applies one record: `value` is its JSON text, `None` deletes the key.
    /// A value that does not read is an error (the caller names where it
    /// was); nothing is applied then.
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), String> {
        let state = &mut self.state;
        if key == FRAMEWORK_KEY {
            state.framework_id = match value {
                Some(value) => Some(FrameworkId(from_json::<FrameworkRecord>(value)?.id)),
                None => None,
            };
        } else if key == META_KEY {
            let Some(value) = value else {
                // Never written so, but a deleted key is no key: the defaults.
                state.last_id_nanos = 0;
                state.teardown_pending = false;
                state.next_seq = 0;
                return Ok(());
            };
            let meta: MetaRecord = from_json(value)?;
            state.last_id_nanos = meta
                .last_id_nanos
                .parse()
                .map_err(|_| "bad last_id_nanos".to_string())?;
            state.teardown_pending = meta.teardown_pending;
            state.next_seq = meta.next_seq;
        } else if let Some(id) = key.strip_prefix("task/") {
            let id = TaskId(id.into());
            let task = match value {
                Some(value) => Some(from_json::<TaskRecord>(value)?.into_task()?),
                None => None,
            };
            self.apply_task(id, task);
        } else if let Some(id) = key.strip_prefix("service/") {
            match value {
                Some(value) => {
                    let record: ServiceRecord = from_json(value)?;
                    let service = Service {
                        spec: record.spec.into_spec()?,
                        covered: record
                            .covered
                            .into_iter()
                            .map(|id| AgentId(id.into()))
                            .collect(),
                    };
                    state.services.insert(id.to_string(), service);
                }
                None => {
                    state.services.remove(id);
                }
            }
        } else if let Some(idempotency_key) = key.strip_prefix("idempotency/") {
            match value {
                Some(value) => {
                    let used: IdempotencyRecord = from_json(value)?;
                    state.idempotency.restore(
                        idempotency_key.to_string(),
                        used.fingerprint,
                        used.id,
                        used.at,
                    );
                }
                None => state.idempotency.remove(idempotency_key),
            }
        } else if let Some(task) = key.strip_prefix("intelligence/") {
            match value {
                Some(value) => {
                    let record: IntelligenceRecord = from_json(value)?;
                    let mut entries = BTreeMap::new();
                    for (attribute, entry) in record {
                        let derived = intelligence::derive(&attribute, &entry.raw)
                            .map_err(|e| format!("{attribute}: {e}"))?;
                        let source = if entry.source == "redis" {
                            Source::Redis
                        } else {
                            Source::Rest
                        };
                        let entry = Entry {
                            source,
                            raw: entry.raw,
                            derived,
                            updated_at: entry.updated_at,
                        };
                        entries.insert(attribute, entry);
                    }
                    state.intelligence.insert(task.to_string(), entries);
                }
                None => {
                    state.intelligence.remove(task);
                }
            }
        } else {
            return Err("unknown key".into());
        }
        Ok(())
    }

    /// Sets or (`None`) deletes one task.
    fn apply_task(&mut self, id: TaskId, mut task: Option<Task>) {
        if let Some(task) = &mut task {
            let pinned = task.rare.as_deref_mut().map(|rare| &mut rare.pinned_agent);
            for agent in [Some(&mut task.agent_id), pinned]
                .into_iter()
                .flatten()
                .flatten()
            {
                share(&mut self.agents, agent);
            }
            if let Some(host) = &mut task.hostname {
                share(&mut self.hosts, host);
            }
        }
        let next_in_order =
            self.state.tasks.is_empty() && self.in_order.last().is_none_or(|(last, _)| *last < id);
        match task {
            Some(task) if next_in_order => self.in_order.push((id, Box::new(task))),
            Some(task) => {
                self.build_tasks();
                self.state.tasks.insert(id, Box::new(task));
            }
            None => {
                self.build_tasks();
                self.state.tasks.remove(&id);
            }
        }
    }

    /// Moves the tasks read in order into the task map, built in one go.
    fn build_tasks(&mut self) {
        if !self.in_order.is_empty() {
            let tasks = std::mem::take(&mut self.in_order);
            // Only ever taken while the map is empty; `collect` from a
            // sorted list builds full nodes, `extend` would insert one by one.
            if self.state.tasks.is_empty() {
                self.state.tasks = tasks.into_iter().collect();
            } else {
                self.state.tasks.extend(tasks);
            }
        }
    }

    /// The state, once every record is applied: the end of every restore
    /// (`charmander::start`, and `State::restore` in the tests), where
    /// indexes derived from the tasks are rebuilt.
    pub fn finish(mut self) -> State {
        self.build_tasks();
        let mut state = self.state;
        for (id, task) in &state.tasks {
            state.instances.add(&task.spec.id, id.clone());
        }
        // Ids handed out after a restart stay above every id already used.
        let highest = state
            .tasks
            .keys()
            .filter_map(|id| id.0.rsplit('-').next()?.parse::<u128>().ok())
            .max()
            .unwrap_or(0);
        state.last_id_nanos = state.last_id_nanos.max(highest);
        state.next_seq = state.next_seq.max(
            state
                .tasks
                .values()
                .map(|t| t.seq.saturating_add(1))
                .max()
                .unwrap_or(0),
        );
        state.rebuild_indexes();
        state
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "pending",
        Phase::Launching => "launching",
        Phase::Active(state) => state.as_str(),
    }
}

fn phase_from_name(name: &str) -> Result<Phase, String> {
    match name {
        "pending" => Ok(Phase::Pending),
        "launching" => Ok(Phase::Launching),
        other => TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == other)
            .map(Phase::Active)
            .ok_or_else(|| format!("unknown phase {other:?}")),
    }
}

/// Replaces `value` with the copy in `seen` (adding it when new), so equal
/// texts read from many records share one allocation.
fn share<T: Clone + Eq + std::hash::Hash>(seen: &mut HashSet<T>, value: &mut T) {
    match seen.get(value) {
        Some(shared) => *value = shared.clone(),
        None => {
            seen.insert(value.clone());
        }
    }
}

impl TaskRecord {
    fn of(task: &Task) -> TaskRecord {
        TaskRecord {
            spec: SpecRecord::of(&task.spec),
            requested: task.rare().requested.as_deref().map(SpecRecord::of),
            applied: task.rare().applied.clone(),
            phase: phase_name(task.phase).to_string(),
            pinned_agent: (task.rare().pinned_agent.as_ref()).map(|a| a.0.to_string()),
            agent_id: task.agent_id.as_ref().map(|a| a.0.to_string()),
            hostname: task.hostname.as_deref().map(str::to_string),
            docker: DockerRecord {
                id: task.docker.id().to_string(),
                name: task.docker.name().to_string(),
                pid: task.docker.pid,
            },
            created_at: task.created_at,
            status_message: task.status_message.clone(),
            kill_requested: task.is_kill_requested(),
            waits_for: task.rare().waits_for.as_ref().map(|t| t.0.to_string()),
            seq: task.seq,
            restarts: u64::from(task.rare().restarts),
            backoff_ms: (task.rare().backoff)
                .map(|backoff| u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX)),
            not_before_ms: None,
        }
    }

    fn into_task(self) -> Result<Task, String> {
        let phase = phase_from_name(&self.phase)?;
        let restarts = u32::try_from(self.restarts).unwrap_or(0);
        let spec = self.spec.into_spec()?;
        let requested = self
            .requested
            .map(SpecRecord::into_spec)
            .transpose()?
            .filter(|requested| *requested != spec)
            .map(Box::new);
        let rare = TaskRare {
            requested,
            applied: self.applied,
            pinned_agent: self.pinned_agent.map(|id| AgentId(id.into())),
            // A kill from before the restart is sent again once subscribed.
            kill_sent_at: None,
            waits_for: self.waits_for.map(|id| TaskId(id.into())),
            restarts,
            // Deadlines are monotonic and do not survive a restart: the backoff
            // is re-derived from the first event after the restore (records from
            // before that change only had a wall-clock `not_before_ms`).
            // Never longer than a restart can wait: a damaged value must not
            // park the task for ever.
            backoff: self
                .backoff_ms
                .map(|ms| Duration::from_millis(ms).min(super::RESTART_BACKOFF_MAX))
                .or_else(|| self.not_before_ms.map(|_| super::restart_delay(restarts))),
            not_before: None,
            unknown_since: None,
        };
        Ok(Task {
            spec: Arc::new(spec),
            phase,
            agent_id: self.agent_id.map(|id| AgentId(id.into())),
            hostname: self.hostname.map(Arc::from),
            docker: DockerInfo::new(&self.docker.id, &self.docker.name, self.docker.pid),
            created_at: self.created_at,
            status_message: self.status_message,
            pending_reason: (phase == Phase::Pending).then(|| "waiting for offers".to_string()),
            kill_requested: self.kill_requested,
            seq: self.seq,
            running_since: None,
            accepted_at: None,
            // Not persisted: a restart starts each task's history anew.
            trail: super::trail::Trail::default(),
            rare: rare.boxed(),
        })
    }
}

impl SpecRecord {
    fn of(spec: &TaskSpec) -> SpecRecord {
        SpecRecord {
            id: spec.id.clone(),
            image: spec.docker_image.clone(),
            mem: spec.mem_mb,
            cpus: spec.cpus,
            sla: spec.sla.as_str().to_string(),
            node_type: spec.node_type.clone(),
            node_name: spec.node_name.clone(),
            not_metered: spec.not_metered,
            reshuffleable: spec.reshuffleable,
            arguments: spec.arguments.clone(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| {
                    let mode = v.mode.as_str().to_string();
                    (v.host_path.clone(), v.container_path.clone(), mode)
                })
                .collect(),
            ports: spec
                .ports
                .iter()
                .map(|p| (p.host_port, p.container_port))
                .collect(),
            network: spec.network.as_str().to_string(),
            restart: (spec.restart != RestartPolicy::Never)
                .then(|| spec.restart.as_str().to_string()),
            privileged: spec.privileged,
        }
    }

    fn into_spec(self) -> Result<TaskSpec, String> {
        let sla = match self.sla.as_str() {
            "" => Sla::None,
            "singleton" => Sla::Singleton,
            "one-per-node" => Sla::OnePerNode,
            other => return Err(format!("bad sla {other:?}")),
        };
        let network = match self.network.as_str() {
            "" => NetworkMode::Default,
            "host" => NetworkMode::Host,
            "bridge" => NetworkMode::Bridge,
            "none" => NetworkMode::None,
            other => return Err(format!("bad network {other:?}")),
        };
        if self.id.is_empty() || self.image.is_empty() {
            return Err("empty id or image".to_string());
        }
        if self.mem == 0 {
            return Err("bad mem".to_string());
        }
        if self.cpus.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err("bad cpus".to_string());
        }
        let restart = match self.restart.as_deref() {
            None => RestartPolicy::Never,
            Some(name) => RestartPolicy::from_name(name).ok_or("bad restart")?,
        };
        // A damaged mode must not widen a container's access to read-write.
        let volumes = self
            .volumes
            .into_iter()
            .map(|(host_path, container_path, mode)| {
                let mode = match mode.as_str() {
                    "ro" => VolumeMode::ReadOnly,
                    "rw" => VolumeMode::ReadWrite,
                    other => return Err(format!("bad volume mode {other:?}")),
                };
                Ok(Volume {
                    host_path,
                    container_path,
                    mode,
                })
            })
            .collect::<Result<Vec<Volume>, String>>()?;
        Ok(TaskSpec {
            id: self.id,
            docker_image: self.image,
            mem_mb: self.mem,
            cpus: self.cpus,
            sla,
            node_type: self.node_type,
            node_name: self.node_name,
            not_metered: self.not_metered,
            reshuffleable: self.reshuffleable,
            arguments: self.arguments,
            volumes,
            ports: self
                .ports
                .into_iter()
                .map(|(host_port, container_port)| PortMapping {
                    host_port,
                    container_port,
                })
                .collect(),
            network,
            restart,
            privileged: self.privileged,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use super::*;
    use crate::scheduler::model::{
        DockerInfo, Offer, OfferId, PortMapping, StatusReason, TaskUpdate, Volume, VolumeMode,
    };
    use crate::scheduler::{ApiRequest, Call, Event, MesosEvent, Now, RequestId};
    use crate::store::Store;

    /// The state directory written by the code before the serde records
    /// (commit 5fd6852), by `old_format_fixture_scenario` with a compaction
    /// half way: a snapshot and a journal.
    const FIXTURE: &str = "tests/fixtures/state-v1";

    fn spec(id: &str, mem_mb: u64) -> TaskSpec {
        TaskSpec::for_test(id, "registry.lab/img:1", mem_mb)
    }

    /// A spec that sets every optional field the records keep: arguments,
    /// ports, volumes, network and reshuffleable.
    fn web_spec() -> TaskSpec {
        TaskSpec {
            reshuffleable: true,
            arguments: vec!["--port".to_string(), "8080".to_string()],
            ports: vec![PortMapping {
                host_port: 31001,
                container_port: 80,
            }],
            volumes: vec![Volume {
                host_path: "/data".to_string(),
                container_path: "/var/data".to_string(),
                mode: VolumeMode::ReadOnly,
            }],
            network: NetworkMode::Bridge,
            ..spec("web", 128)
        }
    }

    fn offer(agent: &str, seq: usize) -> Offer {
        Offer::unreserved(
            OfferId(format!("o{seq}")),
            AgentId(agent.into()),
            format!("{agent}.lab"),
            4.0,
            4096.0,
            vec![(31000, 32000)],
            [
                ("nodetype".to_string(), "lab".to_string()),
                ("nodename".to_string(), agent.to_string()),
            ]
            .into_iter()
            .collect(),
        )
    }

    /// A scenario that leaves every kind of record and most optional task
    /// fields set: intelligence applied, a one-per-node service, an
    /// idempotency key, running tasks with docker info, a restart backoff, a
    /// kill requested, a reshuffle replacement waiting, a deleted task.
    /// `halfway` runs once in the middle (the fixture compacts there).
    fn old_format_fixture_scenario(
        mut commit: impl FnMut(&[Record]),
        mut halfway: impl FnMut(),
    ) -> State {
        let mut state = State::new(None);
        let mut now = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let mut step = |state: &mut State, event: Event, commit: &mut dyn FnMut(&[Record])| {
            now.instant += Duration::from_secs(1);
            now.wall += Duration::from_secs(1);
            let turn = state.handle_event(event, now);
            commit(&turn.records);
            turn.calls
        };
        let api = |request| Event::Api(RequestId(1), request);
        step(
            &mut state,
            Event::Mesos(MesosEvent::Subscribed {
                framework_id: FrameworkId("fw-0001".to_string()),
            }),
            &mut commit,
        );
        for (attribute, raw) in [("mem", "300000000"), ("cpus", "0.5")] {
            step(
                &mut state,
                api(ApiRequest::SetIntelligence {
                    task: "web".to_string(),
                    attribute: attribute.to_string(),
                    raw: raw.to_string(),
                    source: Source::Rest,
                }),
                &mut commit,
            );
        }
        let web = web_spec();
        let mut agent = spec("agent-probe", 64);
        agent.sla = Sla::OnePerNode;
        agent.privileged = true;
        let mut single = spec("single", 64);
        single.sla = Sla::Singleton;
        single.restart = RestartPolicy::Always;
        single.cpus = Some(0.25);
        single.node_type = "lab".to_string();
        let mut doomed = spec("doomed", 32);
        doomed.not_metered = true;
        for (spec, key) in [
            (web, Some("key-1")),
            (agent, None),
            (single, None),
            (doomed, None),
            (spec("waiting", 1_000_000), None),
        ] {
            step(
                &mut state,
                api(ApiRequest::Submit {
                    spec,
                    idempotency_key: key.map(str::to_string),
                }),
                &mut commit,
            );
        }
        let calls = step(
            &mut state,
            Event::Mesos(MesosEvent::Offers(vec![offer("s1", 1), offer("s2", 2)])),
            &mut commit,
        );
        let launched: Vec<(TaskId, AgentId)> = calls
            .into_iter()
            .flat_map(|call| match call {
                Call::Launch {
                    agent_id, tasks, ..
                } => tasks
                    .into_iter()
                    .map(|t| (t.task_id, agent_id.clone()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        halfway();
        let update = |task_id: &TaskId, agent_id: &AgentId, state: TaskState, n: u64| {
            Event::Mesos(MesosEvent::Update(TaskUpdate {
                task_id: task_id.clone(),
                state,
                reason: StatusReason::Other,
                reason_name: String::new(),
                message: format!("update {n}"),
                agent_id: Some(agent_id.clone()),
                uuid: Some(vec![n as u8; 16]),
                docker: Some(DockerInfo::new(
                    &format!("{n:064x}"),
                    &format!("mesos-{}", task_id.0),
                    100 + n,
                )),
            }))
        };
        for (n, (task_id, agent_id)) in launched.iter().enumerate() {
            step(
                &mut state,
                update(task_id, agent_id, TaskState::Running, n as u64),
                &mut commit,
            );
        }
        for (n, (task_id, agent_id)) in launched.iter().enumerate() {
            if task_id.0.starts_with("single") {
                step(
                    &mut state,
                    update(task_id, agent_id, TaskState::Failed, 50 + n as u64),
                    &mut commit,
                );
            }
            if task_id.0.starts_with("doomed") {
                step(
                    &mut state,
                    update(task_id, agent_id, TaskState::Finished, 60 + n as u64),
                    &mut commit,
                );
            }
        }
        step(
            &mut state,
            api(ApiRequest::Kill {
                id_prefix: "agent-probe".to_string(),
            }),
            &mut commit,
        );
        step(
            &mut state,
            api(ApiRequest::Reshuffle { dry_run: false }),
            &mut commit,
        );
        state
    }

    fn copy_dir(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).expect("temp dir");
        for name in ["state.snapshot", "state.journal"] {
            std::fs::copy(from.join(name), to.join(name)).expect("fixture file");
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("charmander-persist-{name}-{}", std::process::id()))
    }

    /// Writes the fixture (run once, on the old code, with
    /// `CHARMANDER_WRITE_FIXTURE=1`); otherwise a no-op.
    #[test]
    fn write_old_format_fixture() {
        if std::env::var_os("CHARMANDER_WRITE_FIXTURE").is_none() {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, &mut |_, _| Ok(())).expect("opens");
        let store = std::cell::RefCell::new(store);
        old_format_fixture_scenario(
            |records| {
                store
                    .borrow_mut()
                    .commit(&records.iter().collect::<Vec<_>>())
                    .expect("commits")
            },
            || store.borrow_mut().compact().expect("compacts"),
        );
        drop(store);
        for name in ["state.reserve", "lock"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }

    fn open(dir: &Path) -> Result<(Store, State), String> {
        let mut restore = Restore::new();
        let store = Store::open(dir, &mut |key, value| restore.apply(key, value))?;
        Ok((store, restore.finish()))
    }

    /// A state directory written by the code before the serde record types
    /// restores to the same state the same events build now; a retry of
    /// its keyed submit still matches the stored fingerprint.
    #[test]
    fn a_state_dir_in_the_old_format_restores() {
        let dir = temp_dir("old-format");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE), &dir);
        let (store, mut restored) = open(&dir).expect("the old format restores");
        drop(store);
        let expected = old_format_fixture_scenario(|_| {}, || {});
        assert_eq!(restored.all_records(), expected.all_records());
        assert!(restored.tasks.len() >= 5, "{:?}", restored.tasks.keys());
        let now = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_100),
        };
        let retry = restored
            .idempotency
            .get("key-1")
            .map(|used| used.fingerprint.clone());
        assert_eq!(retry.as_deref(), Some("786b5b101c8008f8"));
        let web = web_spec();
        assert_eq!(
            super::super::idempotency::fingerprint(&web),
            "786b5b101c8008f8"
        );
        let before = restored.tasks.len();
        restored.handle_event(
            Event::Api(
                RequestId(9),
                ApiRequest::Submit {
                    spec: web,
                    idempotency_key: Some("key-1".to_string()),
                },
            ),
            now,
        );
        assert_eq!(restored.tasks.len(), before, "the retry is no new task");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records as the serde types write them round-trip, and omit what is
    /// at its default (a task without intelligence keeps one spec).
    #[test]
    fn records_round_trip_and_omit_defaults() {
        let mut journal = Vec::new();
        let state =
            old_format_fixture_scenario(|records| journal.extend_from_slice(records), || {});
        let restored = State::restore(&journal).expect("restores");
        assert_eq!(restored.all_records(), state.all_records());
        let waiting = state
            .all_records()
            .into_iter()
            .find(|record| record.key.starts_with("task/waiting"))
            .and_then(|record| record.value)
            .unwrap_or_default();
        assert_eq!(
            waiting,
            r#"{"spec":{"id":"waiting","image":"registry.lab/img:1","mem":1000000},"phase":"pending","created_at":1700000008,"seq":3}"#
        );
        let web = state
            .tasks
            .values()
            .find(|task| task.spec.id == "web" && task.phase == Phase::Pending)
            .expect("the reshuffled web task");
        assert_eq!(web.requested().mem_mb, 128);
        assert_eq!(web.spec.mem_mb, 330);
    }

    /// A value that does not read is an error naming the record, never a
    /// panic; the store adds the file and offset.
    #[test]
    fn extreme_numbers_in_the_state_file_do_not_overflow() {
        let records = [Record {
            key: "task/t-340282366920938463463374607431768211455".to_string(),
            value: Some(
                r#"{"spec":{"id":"t","image":"i","mem":1},"phase":"pending","seq":18446744073709551615}"#
                    .to_string(),
            ),
        }];
        let mut state = State::restore(&records).expect("restores");
        // Only a damaged file holds such numbers: they saturate instead of
        // panicking (debug) or wrapping to 0 (release).
        let id = state.new_task_id("t", Now::current());
        assert!(id.0.starts_with("t-"), "{}", id.0);
    }

    #[test]
    fn bad_records_are_errors_that_name_the_record() {
        let check = |key: &str, value: &str, expected: &str| {
            let records = [Record {
                key: key.to_string(),
                value: Some(value.to_string()),
            }];
            let error = State::restore(&records).err().unwrap_or_default();
            assert!(
                error.starts_with(&format!("state record {key:?}: ")) && error.contains(expected),
                "{key} {value}: {error}"
            );
        };
        check("task/t-1", "{}", "missing field `spec`");
        check("task/t-1", "[1]", "invalid type");
        check(
            "task/t-1",
            r#"{"spec":{"id":"t","image":"i","mem":0},"phase":"pending","seq":0}"#,
            "bad mem",
        );
        check(
            "task/t-1",
            r#"{"spec":{"id":"t","image":"i","mem":1},"phase":"dancing","seq":0}"#,
            "unknown phase",
        );
        check(
            "task/t-1",
            r#"{"spec":{"id":"t","image":"i","mem":1,"ports":[[70000,1]]},"phase":"pending","seq":0}"#,
            "invalid value",
        );
        check(
            "meta",
            r#"{"last_id_nanos":"x","next_seq":1}"#,
            "bad last_id_nanos",
        );
        check(
            "task/t-1",
            r#"{"spec":{"id":"t","image":"i","mem":1,"volumes":[["/d","/d","r0"]]},"phase":"pending","seq":0}"#,
            "bad volume mode",
        );
        check("intelligence/t", r#"{"mem":{"raw":"lots"}}"#, "mem:");
        check(
            "idempotency/k",
            r#"{"id":"t","fingerprint":"f"}"#,
            "missing field `at`",
        );
        check(
            "service/s",
            r#"{"spec":{"id":"s","image":"i","mem":1,"sla":"maybe"}}"#,
            "bad sla",
        );
        check("elsewhere", "{}", "unknown key");
    }

    /// A bad record inside a state file stops the open with the file and
    /// the record's offset.
    #[test]
    fn a_bad_record_on_disk_names_file_and_offset() {
        let dir = temp_dir("bad-record");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let good = crate::store::frame(&Record {
            key: "framework".to_string(),
            value: Some(r#"{"id":"fw"}"#.to_string()),
        });
        let bad = crate::store::frame(&Record {
            key: "task/t-1".to_string(),
            value: Some(r#"{"phase":"pending"}"#.to_string()),
        });
        std::fs::write(dir.join("state.journal"), [good.clone(), bad].concat()).expect("write");
        let error = open(&dir).err().unwrap_or_default();
        let file = dir.join("state.journal").display().to_string();
        assert!(
            error.contains(&format!(
                "state file {file} is damaged at byte offset {}: state record \"task/t-1\": missing field `spec`",
                good.len()
            )),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Tasks read in key order are built into the map in one go; any other
    /// order, overwrite or delete afterwards still means the last value wins.
    #[test]
    fn tasks_in_any_order_restore_to_the_last_value_of_each_key() {
        let check = |steps: &[(&str, bool)], expected: &[&str]| {
            let records: Vec<Record> = steps
                .iter()
                .map(|(id, set)| Record {
                    key: format!("task/{id}"),
                    value: set.then(|| {
                        format!(r#"{{"spec":{{"id":"{id}","image":"i","mem":1}},"phase":"pending","seq":0}}"#)
                    }),
                })
                .collect();
            let state = State::restore(&records).expect("restores");
            let ids: Vec<&str> = state.tasks.keys().map(|id| &*id.0).collect();
            assert_eq!(ids, expected, "{steps:?}");
            let instances = state.instances.len();
            assert_eq!(instances, expected.len(), "{steps:?}");
        };
        check(&[("a", true), ("b", true), ("c", true)], &["a", "b", "c"]);
        check(&[("b", true), ("c", true), ("a", true)], &["a", "b", "c"]);
        check(&[("a", true), ("b", true), ("b", true)], &["a", "b"]);
        check(
            &[("a", true), ("b", true), ("a", false), ("d", true)],
            &["b", "d"],
        );
        check(&[("a", false), ("b", true), ("c", true)], &["b", "c"]);
        check(&[], &[]);
    }
}
