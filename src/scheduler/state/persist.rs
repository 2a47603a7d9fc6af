//! `State` as keyed JSON records, for `store`: which records a turn changed,
//! every record of the current state, and a `State` rebuilt from records.
//!
//! Keys: `framework`, `meta` (id counters), `task/<internal id>`,
//! `service/<id>` (one-per-node templates), `intelligence/<task>` and
//! `idempotency/<Idempotency-Key>` (the user id a keyed submit answered, a
//! fingerprint of its task and the unix seconds of its first use). The node
//! registry is not kept: offers rebuild it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Phase, Service, State, Task};
use crate::scheduler::intelligence::{self, Entry, Source};
use crate::scheduler::model::{
    AgentId, DockerInfo, FrameworkId, NetworkMode, PortMapping, RestartPolicy, Sla, TaskId,
    TaskSpec, TaskState, Volume, VolumeMode,
};

/// One keyed value; `None` deletes the key.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: Option<Value>,
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

    fn value_of(&self, key: &str) -> Option<Value> {
        if key == FRAMEWORK_KEY {
            return self.framework_id.as_ref().map(|id| json!({"id": id.0}));
        }
        if key == META_KEY {
            return Some(
                json!({"last_id_nanos": self.last_id_nanos.to_string(), "next_seq": self.next_seq,
                       "teardown_pending": self.teardown_pending}),
            );
        }
        if let Some(id) = key.strip_prefix("task/") {
            return self.tasks.get(&TaskId(id.to_string())).map(task_to_json);
        }
        if let Some(id) = key.strip_prefix("service/") {
            return self.services.get(id).map(|service| {
                json!({"spec": spec_to_json(&service.spec), "covered": service.covered.iter().map(|a| &a.0).collect::<Vec<_>>()})
            });
        }
        if let Some(key) = key.strip_prefix("idempotency/") {
            return self.idempotency.get(key).map(
                |used| json!({"id": used.id, "fingerprint": used.fingerprint, "at": used.at}),
            );
        }
        if let Some(task) = key.strip_prefix("intelligence/") {
            return self.intelligence.get(task).map(|entries| {
                let map: serde_json::Map<String, Value> = entries
                    .iter()
                    .map(|(attribute, entry)| {
                        (attribute.clone(), json!({"raw": entry.raw, "source": entry.source.as_str(), "updated_at": entry.updated_at}))
                    })
                    .collect();
                Value::Object(map)
            });
        }
        None
    }

    /// Rebuilds a state from records in the order they were written; the
    /// last value of each key wins. Tasks that were launched come back as
    /// they were; reconciliation after subscribing sorts out what changed.
    pub fn restore(records: &[Record]) -> Result<State, String> {
        let mut latest: BTreeMap<&str, &Value> = BTreeMap::new();
        for record in records {
            match &record.value {
                Some(value) => latest.insert(&record.key, value),
                None => latest.remove(record.key.as_str()),
            };
        }
        let mut state = State::new(None);
        state.restored = true;
        for (key, value) in latest {
            let bad = |why: String| format!("state record {key:?}: {why}");
            if key == FRAMEWORK_KEY {
                state.framework_id = Some(FrameworkId(text(value, "id").map_err(bad)?));
            } else if key == META_KEY {
                state.last_id_nanos = text(value, "last_id_nanos")
                    .map_err(bad)?
                    .parse()
                    .map_err(|_| bad("bad last_id_nanos".into()))?;
                state.teardown_pending = value["teardown_pending"].as_bool().unwrap_or(false);
                state.next_seq = value["next_seq"]
                    .as_u64()
                    .ok_or_else(|| bad("bad next_seq".into()))?;
            } else if let Some(id) = key.strip_prefix("task/") {
                let task = task_from_json(value).map_err(bad)?;
                state
                    .instances
                    .entry(task.spec.id.clone())
                    .or_default()
                    .insert(TaskId(id.to_string()));
                state.tasks.insert(TaskId(id.to_string()), task);
            } else if let Some(id) = key.strip_prefix("service/") {
                let spec = spec_from_json(&value["spec"]).map_err(bad)?;
                let covered = strings(&value["covered"])
                    .map_err(bad)?
                    .into_iter()
                    .map(AgentId)
                    .collect();
                state
                    .services
                    .insert(id.to_string(), Service { spec, covered });
            } else if let Some(idempotency_key) = key.strip_prefix("idempotency/") {
                let at = value["at"].as_u64().ok_or_else(|| bad("bad at".into()))?;
                state.idempotency.restore(
                    idempotency_key.to_string(),
                    text(value, "fingerprint").map_err(bad)?,
                    text(value, "id").map_err(bad)?,
                    at,
                );
            } else if let Some(task) = key.strip_prefix("intelligence/") {
                let Value::Object(entries) = value else {
                    return Err(bad("expected an object".into()));
                };
                for (attribute, entry) in entries {
                    let raw = text(entry, "raw").map_err(bad)?;
                    let derived = intelligence::derive(attribute, &raw)
                        .map_err(|e| bad(format!("{attribute}: {e}")))?;
                    let source = if entry["source"] == "redis" {
                        Source::Redis
                    } else {
                        Source::Rest
                    };
                    let updated_at = entry["updated_at"].as_u64().unwrap_or(0);
                    let entry = Entry {
                        source,
                        raw,
                        derived,
                        updated_at,
                    };
                    state
                        .intelligence
                        .entry(task.to_string())
                        .or_default()
                        .insert(attribute.clone(), entry);
                }
            } else {
                return Err(bad("unknown key".into()));
            }
        }
        // Ids handed out after a restart stay above every id already used.
        let highest = state
            .tasks
            .keys()
            .filter_map(|id| id.0.rsplit('-').next()?.parse::<u128>().ok())
            .max()
            .unwrap_or(0);
        state.last_id_nanos = state.last_id_nanos.max(highest);
        state.next_seq = state
            .next_seq
            .max(state.tasks.values().map(|t| t.seq + 1).max().unwrap_or(0));
        Ok(state)
    }
}

fn text(value: &Value, field: &str) -> Result<String, String> {
    value[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("missing text field {field:?}"))
}

fn optional_text(value: &Value, field: &str) -> Option<String> {
    value[field].as_str().map(str::to_string)
}

fn strings(value: &Value) -> Result<Vec<String>, String> {
    value
        .as_array()
        .ok_or("expected a list")?
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| "expected a list of strings".to_string())
        })
        .collect()
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

fn task_to_json(task: &Task) -> Value {
    json!({
        "spec": spec_to_json(&task.spec),
        "requested": spec_to_json(&task.requested),
        "applied": task.applied,
        "phase": phase_name(task.phase),
        "pinned_agent": task.pinned_agent.as_ref().map(|a| &a.0),
        "agent_id": task.agent_id.as_ref().map(|a| &a.0),
        "hostname": task.hostname,
        "docker": {"id": task.docker.id, "name": task.docker.name, "pid": task.docker.pid},
        "created_at": task.created_at,
        "status_message": task.status_message,
        "kill_requested": task.is_kill_requested(),
        "waits_for": task.waits_for.as_ref().map(|t| &t.0),
        "seq": task.seq,
        "restarts": task.restarts,
        "backoff_ms": task.backoff.map(|backoff| backoff.as_millis() as u64),
    })
}

fn task_from_json(value: &Value) -> Result<Task, String> {
    let applied = value["applied"]
        .as_array()
        .ok_or("missing applied")?
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(a), Value::String(v)]) => Ok((a.clone(), v.clone())),
            _ => Err(format!("bad applied entry {pair}")),
        })
        .collect::<Result<_, _>>()?;
    let phase = phase_from_name(value["phase"].as_str().ok_or("missing phase")?)?;
    let docker = &value["docker"];
    let restarts = value["restarts"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    Ok(Task {
        spec: spec_from_json(&value["spec"])?,
        requested: spec_from_json(&value["requested"])?,
        applied,
        phase,
        pinned_agent: optional_text(value, "pinned_agent").map(AgentId),
        agent_id: optional_text(value, "agent_id").map(AgentId),
        hostname: optional_text(value, "hostname"),
        docker: DockerInfo {
            id: text(docker, "id")?,
            name: text(docker, "name")?,
            pid: docker["pid"].as_u64().unwrap_or(0),
        },
        created_at: value["created_at"].as_u64().unwrap_or(0),
        status_message: optional_text(value, "status_message").unwrap_or_default(),
        pending_reason: (phase == Phase::Pending).then(|| "waiting for offers".to_string()),
        // A kill from before the restart is sent again once subscribed.
        kill_requested: value["kill_requested"].as_bool().unwrap_or(false),
        kill_sent_at: None,
        waits_for: optional_text(value, "waits_for").map(TaskId),
        seq: value["seq"].as_u64().ok_or("missing seq")?,
        restarts,
        // Deadlines are monotonic and do not survive a restart: the backoff
        // is re-derived from the first event after the restore (records from
        // before that change only had a wall-clock `not_before_ms`).
        // Never longer than a restart can wait: a damaged value must not
        // park the task for ever.
        backoff: value["backoff_ms"]
            .as_u64()
            .map(|ms| Duration::from_millis(ms).min(super::RESTART_BACKOFF_MAX))
            .or_else(|| {
                value["not_before_ms"]
                    .as_u64()
                    .map(|_| super::restart_delay(restarts))
            }),
        not_before: None,
        running_since: None,
        unknown_since: None,
    })
}

pub(super) fn spec_to_json(spec: &TaskSpec) -> Value {
    json!({
        "id": spec.id, "image": spec.docker_image, "mem": spec.mem_mb, "cpus": spec.cpus,
        "sla": spec.sla.as_str(), "node_type": spec.node_type, "node_name": spec.node_name,
        "not_metered": spec.not_metered, "reshuffleable": spec.reshuffleable, "arguments": spec.arguments,
        "volumes": spec.volumes.iter().map(|v| json!([v.host_path, v.container_path, v.mode.as_str()])).collect::<Vec<_>>(),
        "ports": spec.ports.iter().map(|p| json!([p.host_port, p.container_port])).collect::<Vec<_>>(),
        "network": spec.network.as_str(),
        "restart": spec.restart.as_str(),
        "privileged": spec.privileged,
    })
}

pub(super) fn spec_from_json(value: &Value) -> Result<TaskSpec, String> {
    let sla = match value["sla"].as_str() {
        Some("") => Sla::None,
        Some("singleton") => Sla::Singleton,
        Some("one-per-node") => Sla::OnePerNode,
        other => return Err(format!("bad sla {other:?}")),
    };
    let network = match value["network"].as_str() {
        Some("") => NetworkMode::Default,
        Some("host") => NetworkMode::Host,
        Some("bridge") => NetworkMode::Bridge,
        Some("none") => NetworkMode::None,
        other => return Err(format!("bad network {other:?}")),
    };
    let volumes = value["volumes"]
        .as_array()
        .ok_or("missing volumes")?
        .iter()
        .map(|v| match v.as_array().map(Vec::as_slice) {
            Some([Value::String(host), Value::String(container), Value::String(mode)]) => {
                Ok(Volume {
                    host_path: host.clone(),
                    container_path: container.clone(),
                    mode: if mode == "ro" {
                        VolumeMode::ReadOnly
                    } else {
                        VolumeMode::ReadWrite
                    },
                })
            }
            _ => Err(format!("bad volume {v}")),
        })
        .collect::<Result<_, _>>()?;
    let ports = value["ports"]
        .as_array()
        .ok_or("missing ports")?
        .iter()
        .map(|p| {
            let port = |i: usize| p[i].as_u64().and_then(|n| u16::try_from(n).ok());
            match (port(0), port(1)) {
                (Some(host_port), Some(container_port)) => Ok(PortMapping {
                    host_port,
                    container_port,
                }),
                _ => Err(format!("bad port mapping {p}")),
            }
        })
        .collect::<Result<_, _>>()?;
    let cpus = match &value["cpus"] {
        Value::Null => None,
        other => Some(
            other
                .as_f64()
                .filter(|c| c.is_finite() && *c > 0.0)
                .ok_or("bad cpus")?,
        ),
    };
    Ok(TaskSpec {
        id: text(value, "id")?,
        docker_image: text(value, "image")?,
        mem_mb: value["mem"].as_u64().filter(|m| *m > 0).ok_or("bad mem")?,
        cpus,
        sla,
        node_type: text(value, "node_type")?,
        node_name: text(value, "node_name")?,
        not_metered: value["not_metered"].as_bool().unwrap_or(false),
        reshuffleable: value["reshuffleable"].as_bool().unwrap_or(false),
        arguments: strings(&value["arguments"])?,
        volumes,
        ports,
        network,
        restart: RestartPolicy::from_name(value["restart"].as_str().unwrap_or("never"))
            .ok_or("bad restart")?,
        // Absent in records written before the field existed: not privileged.
        privileged: value["privileged"].as_bool().unwrap_or(false),
    })
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
        TaskSpec {
            id: id.to_string(),
            docker_image: "registry.lab/img:1".to_string(),
            mem_mb,
            cpus: None,
            sla: Sla::None,
            node_type: String::new(),
            node_name: String::new(),
            not_metered: false,
            reshuffleable: false,
            arguments: Vec::new(),
            volumes: Vec::new(),
            ports: Vec::new(),
            network: NetworkMode::Default,
            restart: RestartPolicy::Never,
            privileged: false,
        }
    }

    fn offer(agent: &str, seq: usize) -> Offer {
        Offer::unreserved(
            OfferId(format!("o{seq}")),
            AgentId(agent.to_string()),
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
        let mut web = spec("web", 128);
        web.reshuffleable = true;
        web.arguments = vec!["--port".to_string(), "8080".to_string()];
        web.ports = vec![PortMapping {
            host_port: 31001,
            container_port: 80,
        }];
        web.volumes = vec![Volume {
            host_path: "/data".to_string(),
            container_path: "/var/data".to_string(),
            mode: VolumeMode::ReadOnly,
        }];
        web.network = NetworkMode::Bridge;
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
                docker: Some(DockerInfo {
                    id: format!("{n:064x}"),
                    name: format!("mesos-{}", task_id.0),
                    pid: 100 + n,
                }),
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
        let (store, _) = Store::open(&dir).expect("opens");
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
}
