//! The JSON contract of the REST API and of the Redis values: task and node
//! objects (contract §1.2), the reply bodies, and the lenient task-request
//! parser (contract §6.4).
//!
//! Pure: no I/O, no logging. These are the only serde-derived types of the
//! crate besides the config; the scheduler core never sees them. Field order
//! follows the Go structs of the original, so the text stays comparable.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::scheduler::hub::{Gap, Published};
use crate::scheduler::intelligence::Table;
use crate::scheduler::model::{
    NetworkMode, PortMapping, RestartPolicy, Sla, TaskSpec, Volume, VolumeMode,
};
use crate::scheduler::notice::NoticeKind;
use crate::scheduler::placement::format_number;
use crate::scheduler::{HistoryLine, ListedTask, NodeView, ReshuffleStep, TaskView};

/// The smallest cpus a task may ask for: Mesos keeps three decimals of a
/// scalar, so less would launch as 0 cpus.
pub const MIN_CPUS: f64 = 0.001;

/// The most cpus a task may ask for; more cannot exist on any lab node and
/// would wait for ever.
pub const MAX_CPUS: f64 = 1_000_000.0;

/// The most memory a task may ask for, in MB (16 TiB).
pub const MAX_MEM_MB: u64 = 16 * 1024 * 1024;

/// The longest `Idempotency-Key` accepted, in bytes (a UUID is 36).
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

const MEM_EXPECTED: &str = "a whole number of MB from 1 to 16777216";
const CPUS_EXPECTED: &str = "a number of cpus from 0.001 to 1000000";

/// The task object of contract §1.2 (`GET /client/task`, `charmander:tasks:*`).
pub fn task_json(task: &TaskView) -> String {
    to_json(&TaskDto::from(task))
}

/// The node object of contract §1.2 (`GET /client/node`, `charmander:nodes:*`).
pub fn node_json(node: &NodeView) -> String {
    to_json(&NodeDto::from(node))
}

/// Parses and validates a `POST /client/task` body. The error is the message
/// of the 400 reply and says exactly what is wrong.
///
/// Lenient like the original's decoder: only the first JSON value counts
/// (trailing bytes are ignored), unknown fields are ignored, `null` counts as
/// absent, and numbers may be quoted or bare.
pub fn parse_task(body: &[u8]) -> Result<TaskSpec, String> {
    let first = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next();
    let value = match first {
        None => return Err("empty body: expected a JSON task object".to_string()),
        Some(Err(err)) => return Err(format!("invalid JSON: {err}")),
        Some(Ok(value)) => value,
    };
    let Value::Object(object) = value else {
        return Err(format!(
            "body must be a JSON object such as {EXAMPLE_TASK}, got {}",
            kind(&value)
        ));
    };
    let fields = Fields(&object);
    let id = fields.required_name("id")?;
    if let Some(why) = bad_id(&id) {
        return Err(format!("bad id {id:?}: {why}"));
    }
    let docker_image = fields.required_name("dockerimage")?;
    let mem_mb = match fields.get("mem") {
        None => return Err(missing("mem")),
        Some(value) => whole(value)
            .filter(|mem| (1..=MAX_MEM_MB).contains(mem))
            .ok_or_else(|| bad_value(value, "mem", MEM_EXPECTED))?,
    };
    let cpus = match fields.get("cpus") {
        None => None,
        // The original read 0 as "not given" and launched with the default.
        Some(value) if zero(value) => None,
        Some(value) => Some(
            number(value)
                .filter(|cpus| (MIN_CPUS..=MAX_CPUS).contains(cpus))
                .ok_or_else(|| bad_value(value, "cpus", CPUS_EXPECTED))?,
        ),
    };
    let sla = match fields.string("sla")?.as_deref().unwrap_or("") {
        "" => Sla::None,
        "one-per-node" => Sla::OnePerNode,
        "singleton" => Sla::Singleton,
        other => return Err(format!("bad sla {other:?}: use one-per-node or singleton")),
    };
    let network_mode = fields.string("networkmode")?.unwrap_or_default();
    let network = match network_mode.to_ascii_lowercase().as_str() {
        "" => NetworkMode::Default,
        "host" => NetworkMode::Host,
        "bridge" => NetworkMode::Bridge,
        "none" => NetworkMode::None,
        _ => {
            return Err(format!(
                "bad networkmode {network_mode:?}: use bridge, host or none"
            ))
        }
    };
    let restart = match fields.string("restart")?.unwrap_or_default().as_str() {
        "" => RestartPolicy::Never,
        name => RestartPolicy::from_name(name)
            .ok_or_else(|| format!("bad restart {name:?}: use never, on-failure or always"))?,
    };
    Ok(TaskSpec {
        id,
        docker_image,
        mem_mb,
        cpus,
        sla,
        node_type: fields.string("nodetype")?.unwrap_or_default(),
        node_name: fields.string("nodename")?.unwrap_or_default(),
        not_metered: fields.boolean("notmetered")?,
        reshuffleable: fields.boolean("reshuffleable")?,
        arguments: parse_arguments(fields.get("arguments"))?,
        volumes: parse_volumes(fields.get("volumes"))?,
        ports: parse_ports(fields.get("ports"))?,
        network,
        restart,
        privileged: fields.boolean("privileged")?,
    })
}

/// The TaskInfo as the original showed it (contract §1.2): Go protobuf JSON
/// of the 0.2x `mesosproto` (so `slave_id`), enums as integers, empty
/// fields left out; `slave_id` once the task was launched. Serialized from
/// borrowed structs: a task list of 10,000 builds no JSON tree.
fn task_info(task: &TaskView) -> TaskInfoDto<'_> {
    let spec = &task.spec;
    let id = task.internal_id.0.as_ref();
    let mut resources = vec![
        ResourceDto::scalar("cpus", go_number(spec.launch_cpus())),
        ResourceDto::scalar("mem", Number::from(spec.mem_mb)),
    ];
    if !spec.ports.is_empty() {
        let range = spec
            .ports
            .iter()
            .map(|p| RangeDto {
                begin: p.host_port,
                end: p.host_port,
            })
            .collect();
        resources.push(ResourceDto {
            name: "ports",
            kind: 1,
            scalar: None,
            ranges: Some(RangesDto { range }),
        });
    }
    TaskInfoDto {
        name: id,
        task_id: IdDto { value: id },
        slave_id: task
            .agent_id
            .as_ref()
            .filter(|_| task.request_sent)
            .map(|agent| IdDto { value: &agent.0 }),
        resources,
        command: CommandDto {
            shell: false,
            arguments: &spec.arguments,
        },
        container: ContainerDto {
            kind: 1,
            volumes: spec
                .volumes
                .iter()
                .map(|v| VolumeInfoDto {
                    container_path: &v.container_path,
                    host_path: &v.host_path,
                    mode: if v.mode == VolumeMode::ReadOnly { 2 } else { 1 },
                })
                .collect(),
            docker: DockerDto {
                image: &spec.docker_image,
                network: spec.docker_network().map(|network| match network {
                    NetworkMode::Host | NetworkMode::Default => 1,
                    NetworkMode::Bridge => 2,
                    NetworkMode::None => 3,
                }),
                port_mappings: spec
                    .ports
                    .iter()
                    .map(|p| PortMappingDto {
                        host_port: p.host_port,
                        container_port: p.container_port,
                    })
                    .collect(),
                privileged: spec.privileged,
            },
        },
    }
}

/// A float as Go's encoder writes it: whole numbers without ".0".
fn go_number(value: f64) -> Number {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Number::from(value as i64)
    } else {
        Number::from_f64(value).unwrap_or_else(|| Number::from(0))
    }
}

#[derive(Serialize)]
struct TaskInfoDto<'a> {
    name: &'a str,
    task_id: IdDto<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slave_id: Option<IdDto<'a>>,
    resources: Vec<ResourceDto>,
    command: CommandDto<'a>,
    container: ContainerDto<'a>,
}

#[derive(Serialize)]
struct IdDto<'a> {
    value: &'a str,
}

#[derive(Serialize)]
struct ResourceDto {
    name: &'static str,
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    scalar: Option<ScalarDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ranges: Option<RangesDto>,
}

impl ResourceDto {
    fn scalar(name: &'static str, value: Number) -> ResourceDto {
        ResourceDto {
            name,
            kind: 0,
            scalar: Some(ScalarDto { value }),
            ranges: None,
        }
    }
}

#[derive(Serialize)]
struct ScalarDto {
    value: Number,
}

#[derive(Serialize)]
struct RangesDto {
    range: Vec<RangeDto>,
}

#[derive(Serialize)]
struct RangeDto {
    begin: u16,
    end: u16,
}

#[derive(Serialize)]
struct CommandDto<'a> {
    shell: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    arguments: &'a [String],
}

#[derive(Serialize)]
struct ContainerDto<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<VolumeInfoDto<'a>>,
    docker: DockerDto<'a>,
}

#[derive(Serialize)]
struct VolumeInfoDto<'a> {
    container_path: &'a str,
    host_path: &'a str,
    mode: u8,
}

#[derive(Serialize)]
struct DockerDto<'a> {
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    port_mappings: Vec<PortMappingDto>,
    /// Left out when false, like the Go encoder's empty fields.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    privileged: bool,
}

#[derive(Serialize)]
struct PortMappingDto {
    host_port: u16,
    container_port: u16,
}

/// Why a task id cannot be used, if it cannot: it becomes a Mesos TaskID
/// (with `-<nanoseconds>` appended, spaces removed) and a Redis key part.
pub(crate) fn bad_id(id: &str) -> Option<&'static str> {
    if id
        .chars()
        .any(|c| matches!(c, '/' | '\\' | ':') || c.is_control())
    {
        Some("must not contain '/', '\\', ':' or control characters")
    } else if id.len() > 200 {
        Some("must be at most 200 bytes")
    } else if matches!(id.replace(' ', "").as_str(), "" | "." | "..") {
        Some("must not be '.' or '..' or only spaces")
    } else {
        None
    }
}

/// The raw value of a `PUT /client/intelligence/<task>/<attr>` body: the
/// trimmed text, or the string itself when the body is a JSON string. Numbers
/// keep their exact text ("2.1E8" stays "2.1E8" so validation can name it).
pub(crate) fn parse_intelligence_value(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| "body must be UTF-8 text: the raw value, e.g. 209924096".to_string())?
        .trim();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(inner)) => Ok(inner.trim().to_string()),
        _ => Ok(text.to_string()),
    }
}

/// `{"code":..,"message":..}`, the body of every reply but lists.
pub(crate) fn message_json(code: u16, message: &str) -> String {
    to_json(&MessageDto { code, message })
}

/// The 202 reply of `POST /client/task`: the contract's message, plus a
/// `note` when the submit changed nothing (a duplicate SLA submit).
pub(crate) fn submitted_json(id: &str, note: Option<&str>) -> String {
    let message = format!("Run task: {id}");
    to_json(&SubmittedDto {
        code: 202,
        message: &message,
        note,
    })
}

/// `[task, ...]` for `GET /client/task`.
/// The whole array as one string: what `api`'s `ArrayReader` writes
/// without building it (its tests compare the two).
#[cfg(test)]
pub(crate) fn tasks_json(tasks: &[Arc<ListedTask>]) -> String {
    let parts = task_entries(tasks);
    let mut text =
        String::with_capacity(parts.iter().map(|part| part.len() + 1).sum::<usize>() + 2);
    text.push('[');
    for (idx, part) in parts.iter().enumerate() {
        if idx > 0 {
            text.push(',');
        }
        text.push_str(part);
    }
    text.push(']');
    text
}

/// Each entry's JSON: rendered once (`task_json`, HTML-escaped like the
/// whole array would be) and kept by the state, so this is a pointer copy
/// per task. Joined into the array as the reply is written.
pub(crate) fn task_entries(tasks: &[Arc<ListedTask>]) -> Vec<Arc<str>> {
    tasks.iter().map(|task| task.json(task_json)).collect()
}

/// Appends one entry of a long list (`api::pages`) to `out`. An entry the
/// state keeps too (another `Arc` holds it) is rendered once and keeps its
/// JSON, as in `task_entries`; one only this list holds is written
/// straight into `out`, so a page of 10,000 entries nobody keeps costs the
/// worker no string per entry (at 100,000 tasks, where the list cache
/// keeps none, those strings were what the workers' heaps kept after lists).
pub(crate) fn append_task_entry(task: &Arc<ListedTask>, out: &mut Vec<u8>) {
    if Arc::strong_count(task) > 1 {
        out.extend_from_slice(task.json(task_json).as_bytes());
    } else {
        task.append_json(|view, out| append_json(&TaskDto::from(view), out), out);
    }
}

/// `GET /client/task/<internal id>`: the task object as in the list, plus
/// `history` (`[{time_ms, kind, text}, ...]`, oldest first).
pub(crate) fn task_history_json(task: &TaskView, history: &[HistoryLine]) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        time_ms: u64,
        kind: &'a str,
        text: &'a str,
    }
    #[derive(Serialize)]
    struct WithHistory<'a> {
        #[serde(flatten)]
        task: TaskDto<'a>,
        history: Vec<Line<'a>>,
    }
    to_json(&WithHistory {
        task: TaskDto::from(task),
        history: history
            .iter()
            .map(|line| Line {
                time_ms: line.time_ms,
                kind: line.kind,
                text: &line.text,
            })
            .collect(),
    })
}

/// One event of `GET /client/events` as one line of JSON: `seq`,
/// `time_ms`, `kind`, then the kind's fields (a contract the dashboard
/// consumes).
pub(crate) fn notice_json(published: &Published) -> String {
    #[derive(Serialize)]
    struct NoticeDto<'a> {
        seq: u64,
        time_ms: u64,
        kind: &'a str,
        #[serde(flatten)]
        fields: Fields<'a>,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Fields<'a> {
        Task {
            task: &'a str,
            id: &'a str,
        },
        Placed {
            task: &'a str,
            id: &'a str,
            node: &'a str,
            agent_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            why: Option<&'a str>,
        },
        Status {
            task: &'a str,
            id: &'a str,
            state: &'a str,
            reason: Option<&'a str>,
            message: Option<&'a str>,
            node: Option<&'a str>,
        },
        Killed {
            task: &'a str,
            id: &'a str,
            by: &'a str,
        },
        Moved {
            task: &'a str,
            id: &'a str,
            replacement: &'a str,
            from: Option<&'a str>,
            to: Option<&'a str>,
        },
        Restarted {
            task: &'a str,
            id: &'a str,
            replacement: &'a str,
            restarts: u32,
            delay_seconds: u64,
        },
        Node {
            agent_id: &'a str,
            node: Option<&'a str>,
        },
        Subscribed {
            framework_id: &'a str,
        },
        Disconnected {
            reason: &'a str,
        },
        Intelligence {
            task: &'a str,
            attribute: &'a str,
            value: Option<&'a str>,
            source: &'a str,
        },
    }
    let notice = &published.notice;
    let fields = match &notice.kind {
        NoticeKind::TaskSubmitted { task, id } => Fields::Task { task: &task.0, id },
        NoticeKind::TaskPlaced {
            task,
            id,
            node,
            agent_id,
            why,
        } => Fields::Placed {
            task: &task.0,
            id,
            node,
            agent_id: &agent_id.0,
            why: Some(why),
        },
        NoticeKind::TaskLaunched {
            task,
            id,
            node,
            agent_id,
        } => Fields::Placed {
            task: &task.0,
            id,
            node,
            agent_id: &agent_id.0,
            why: None,
        },
        NoticeKind::TaskStatus {
            task,
            id,
            state,
            reason,
            message,
            node,
        } => Fields::Status {
            task: &task.0,
            id,
            state: state.as_str(),
            reason: reason.as_deref(),
            message: message.as_deref(),
            node: node.as_deref(),
        },
        NoticeKind::TaskKilled { task, id, by } => Fields::Killed {
            task: &task.0,
            id,
            by: by.as_str(),
        },
        NoticeKind::TaskMoved {
            task,
            id,
            replacement,
            from,
            to,
        } => Fields::Moved {
            task: &task.0,
            id,
            replacement: &replacement.0,
            from: from.as_deref(),
            to: to.as_deref(),
        },
        NoticeKind::TaskRestarted {
            task,
            id,
            replacement,
            restarts,
            delay_seconds,
        } => Fields::Restarted {
            task: &task.0,
            id,
            replacement: &replacement.0,
            restarts: *restarts,
            delay_seconds: *delay_seconds,
        },
        NoticeKind::NodeJoined { agent_id, node } => Fields::Node {
            agent_id: &agent_id.0,
            node: Some(node),
        },
        NoticeKind::NodeLost { agent_id, node } => Fields::Node {
            agent_id: &agent_id.0,
            node: node.as_deref(),
        },
        NoticeKind::Subscribed { framework_id } => Fields::Subscribed {
            framework_id: &framework_id.0,
        },
        NoticeKind::Disconnected { reason } => Fields::Disconnected { reason },
        NoticeKind::IntelligenceChanged {
            task,
            attribute,
            value,
            source,
        } => Fields::Intelligence {
            task,
            attribute,
            value: value.as_deref(),
            source,
        },
    };
    to_json(&NoticeDto {
        seq: published.seq,
        time_ms: notice.time_ms,
        kind: notice.kind.name(),
        fields,
    })
}

/// The `gap` event: notices after `from` are gone; `oldest` is the first kept.
pub(crate) fn gap_json(gap: &Gap) -> String {
    #[derive(Serialize)]
    struct GapDto {
        from: u64,
        oldest: u64,
    }
    to_json(&GapDto {
        from: gap.from,
        oldest: gap.oldest,
    })
}

/// `[node, ...]` for `GET /client/node`.
pub(crate) fn nodes_json(nodes: &[NodeView]) -> String {
    to_json(&nodes.iter().map(NodeDto::from).collect::<Vec<_>>())
}

/// The 200 reply of `DELETE /client/task/<prefix>`.
pub(crate) fn killed_json(tasks: &[TaskView], verbose: bool) -> String {
    let ids: Vec<&str> = tasks
        .iter()
        .map(|task| task.internal_id.0.as_ref())
        .collect();
    let message = format!("Kill task: {}", ids.join(", "));
    if verbose {
        return to_json(&KilledDto {
            code: 200,
            message: &message,
            tasks: tasks.iter().map(TaskDto::from).collect(),
        });
    }
    // Short by default: one kill used to answer kilobytes per task (issue 11).
    to_json(&KilledDto {
        code: 200,
        message: &message,
        tasks: tasks
            .iter()
            .map(|task| KilledTaskDto {
                id: &task.spec.id,
                internal_id: &task.internal_id.0,
                state: task.state,
            })
            .collect(),
    })
}

/// The 202 reply of `GET /client/task/reshuffle`.
pub(crate) fn reshuffled_json(steps: &[ReshuffleStep], dry_run: bool) -> String {
    let plan = steps
        .iter()
        .map(|step| StepDto {
            id: &step.id,
            internal_id: &step.internal_id.0,
            from: step.from_host.as_deref(),
            to: step.to_host.as_deref(),
            changes: pairs(&step.changes),
        })
        .collect();
    to_json(&ReshuffledDto {
        code: 202,
        message: "Reshuffle tasks",
        plan,
        dry_run,
    })
}

/// `{"<task>": {"<attr>": {"raw","value","source","updated_at"}}}`.
pub(crate) fn intelligence_json(table: &Table) -> String {
    let dto: BTreeMap<&str, BTreeMap<&str, EntryDto<'_>>> = table
        .iter()
        .map(|(task, entries)| {
            let entries = entries
                .iter()
                .map(|(attribute, entry)| {
                    let dto = EntryDto {
                        raw: &entry.raw,
                        value: entry.derived.display(),
                        source: entry.source.as_str(),
                        updated_at: entry.updated_at,
                    };
                    (attribute.as_str(), dto)
                })
                .collect();
            (task.as_str(), entries)
        })
        .collect();
    to_json(&dto)
}

const EXAMPLE_TASK: &str = r#"{"id":"web","dockerimage":"nginx","mem":"64"}"#;

#[derive(Serialize)]
struct TaskDto<'a> {
    id: &'a str,
    dockerimage: &'a str,
    mem: String,
    cpus: String,
    sla: &'static str,
    nodetype: &'a str,
    nodename: &'a str,
    notmetered: bool,
    reshuffleable: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    arguments: &'a Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<VolumeDto<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortDto>,
    networkmode: &'static str,
    #[serde(rename = "InternalID")]
    internal_id: &'a str,
    #[serde(rename = "SlaveID")]
    slave_id: &'a str,
    #[serde(rename = "DockerID")]
    docker_id: &'a str,
    #[serde(rename = "DockerName")]
    docker_name: &'a str,
    #[serde(rename = "ProcessID")]
    process_id: u64,
    #[serde(rename = "CreatedAt")]
    created_at: u64,
    #[serde(rename = "TaskInfo")]
    task_info: TaskInfoDto<'a>,
    #[serde(rename = "RequestSent")]
    request_sent: bool,
    #[serde(rename = "Running")]
    running: bool,
    // Additions, after the original's fields.
    state: &'a str,
    hostname: &'a str,
    agent_id: Option<&'a str>,
    status_message: &'a str,
    pending_reason: Option<&'a str>,
    restart: &'static str,
    privileged: bool,
    restarts: u32,
    crash_looping: bool,
    /// Ended tasks only (kept for `--keep-finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<u64>,
    requested: RequestedDto<'a>,
    intelligence: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct RequestedDto<'a> {
    mem: String,
    cpus: String,
    nodename: &'a str,
    nodetype: &'a str,
    sla: &'static str,
}

#[derive(Serialize)]
struct VolumeDto<'a> {
    container_path: &'a str,
    host_path: &'a str,
    mode: &'static str,
}

#[derive(Serialize)]
struct PortDto {
    container_port: String,
    host_port: String,
}

#[derive(Serialize)]
struct NodeDto<'a> {
    id: &'a str,
    hostname: &'a str,
    nodetype: &'a str,
    nodename: &'a str,
    timeoflastoffer: u64,
    agent_id: &'a str,
    /// What the node last offered that we may use, less our launches since.
    free_cpus: Number,
    free_mem: Number,
    /// What our live tasks on it take.
    used_cpus: Number,
    used_mem: Number,
}

#[derive(Serialize)]
struct MessageDto<'a> {
    code: u16,
    message: &'a str,
}

#[derive(Serialize)]
struct SubmittedDto<'a> {
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct KilledDto<'a, T> {
    code: u16,
    message: &'a str,
    /// `KilledTaskDto`, or `TaskDto` with `?verbose=true`.
    tasks: Vec<T>,
}

/// A killed task in a kill answer without `?verbose=true`.
#[derive(Serialize)]
struct KilledTaskDto<'a> {
    id: &'a str,
    #[serde(rename = "InternalID")]
    internal_id: &'a str,
    state: &'a str,
}

#[derive(Serialize)]
struct ReshuffledDto<'a> {
    code: u16,
    message: &'a str,
    plan: Vec<StepDto<'a>>,
    dry_run: bool,
}

#[derive(Serialize)]
struct StepDto<'a> {
    id: &'a str,
    #[serde(rename = "InternalID")]
    internal_id: &'a str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    changes: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct EntryDto<'a> {
    raw: &'a str,
    value: String,
    source: &'static str,
    updated_at: u64,
}

impl<'a> From<&'a TaskView> for TaskDto<'a> {
    fn from(task: &'a TaskView) -> TaskDto<'a> {
        let spec = &task.spec;
        let agent_id = task.agent_id.as_ref().map(|agent| agent.0.as_ref());
        TaskDto {
            id: &spec.id,
            dockerimage: &spec.docker_image,
            mem: spec.mem_mb.to_string(),
            cpus: cpus_text(spec.cpus),
            sla: spec.sla.as_str(),
            nodetype: &spec.node_type,
            nodename: &spec.node_name,
            notmetered: spec.not_metered,
            reshuffleable: spec.reshuffleable,
            arguments: &spec.arguments,
            volumes: spec.volumes.iter().map(VolumeDto::from).collect(),
            ports: spec.ports.iter().map(PortDto::from).collect(),
            networkmode: spec.network.as_str(),
            internal_id: &task.internal_id.0,
            // As in the original: set once the task has run.
            slave_id: if task.running || !task.docker.id().is_empty() {
                agent_id.unwrap_or("")
            } else {
                ""
            },
            docker_id: task.docker.id(),
            docker_name: task.docker.name(),
            process_id: task.docker.pid,
            created_at: task.created_at,
            task_info: task_info(task),
            request_sent: task.request_sent,
            running: task.running,
            state: task.state,
            hostname: task.hostname.as_deref().unwrap_or(""),
            agent_id,
            status_message: &task.status_message,
            pending_reason: task.pending_reason.as_deref(),
            restart: spec.restart.as_str(),
            privileged: spec.privileged,
            restarts: task.restarts,
            crash_looping: task.crash_looping,
            reason: task.reason.as_deref(),
            ended_at: task.ended_at,
            requested: RequestedDto {
                mem: task.requested.mem_mb.to_string(),
                cpus: cpus_text(task.requested.cpus),
                nodename: &task.requested.node_name,
                nodetype: &task.requested.node_type,
                sla: task.requested.sla.as_str(),
            },
            intelligence: pairs(&task.intelligence),
        }
    }
}

impl<'a> From<&'a Volume> for VolumeDto<'a> {
    fn from(volume: &'a Volume) -> VolumeDto<'a> {
        VolumeDto {
            container_path: &volume.container_path,
            host_path: &volume.host_path,
            mode: volume.mode.as_str(),
        }
    }
}

impl From<&PortMapping> for PortDto {
    fn from(port: &PortMapping) -> PortDto {
        PortDto {
            container_port: port.container_port.to_string(),
            host_port: port.host_port.to_string(),
        }
    }
}

impl<'a> From<&'a NodeView> for NodeDto<'a> {
    fn from(node: &'a NodeView) -> NodeDto<'a> {
        NodeDto {
            id: &node.agent_id.0,
            hostname: &node.hostname,
            nodetype: &node.node_type,
            nodename: &node.node_name,
            timeoflastoffer: node.time_of_last_offer,
            agent_id: &node.agent_id.0,
            free_cpus: amount(node.free_cpus),
            free_mem: amount(node.free_mem_mb),
            used_cpus: amount(node.used_cpus),
            used_mem: amount(node.used_mem_mb),
        }
    }
}

/// Validates the `Idempotency-Key` header of a submit, given every value it
/// was sent with: none is `None`; one of 1 to `MAX_IDEMPOTENCY_KEY`
/// printable ASCII characters (space to `~`) is the key. Anything else is the
/// message of a 400: a key the client cannot have meant must not be guessed.
pub fn parse_idempotency_key(values: &[&str]) -> Result<Option<String>, String> {
    let expected = format!("1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters");
    match values {
        [] => Ok(None),
        [""] => Err(format!("empty Idempotency-Key: use {expected}")),
        [key] if key.len() > MAX_IDEMPOTENCY_KEY => Err(format!(
            "Idempotency-Key of {} bytes is too long: use {expected}",
            key.len()
        )),
        [key] if !key.bytes().all(|byte| (b' '..=b'~').contains(&byte)) => Err(format!(
            "Idempotency-Key has a character that is not printable ASCII: use {expected}"
        )),
        [key] => Ok(Some((*key).to_string())),
        _ => Err("more than one Idempotency-Key header".to_string()),
    }
}

/// Serializes like Go's `json.Marshal`: `<`, `>`, `&`, U+2028 and U+2029 are
/// escaped. Those characters can only occur inside JSON strings, so replacing
/// them in the whole text is safe.
fn to_json(value: &impl Serialize) -> String {
    // Serializing these plain structs (string keys, no floats) cannot fail.
    escape_like_go(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

/// `to_json`, appended to `out`.
fn append_json(value: &impl Serialize, out: &mut Vec<u8>) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
    // `<`, `>`, `&`, or a lead byte of U+2028 or U+2029: escape the text.
    if out[start..]
        .iter()
        .any(|byte| matches!(byte, b'<' | b'>' | b'&' | 0xE2))
    {
        let text = String::from_utf8_lossy(&out[start..]).into_owned();
        out.truncate(start);
        out.extend_from_slice(escape_like_go(text).as_bytes());
    }
}

/// `<`, `>`, `&`, U+2028 and U+2029 escaped as Go's `json.Marshal` does.
fn escape_like_go(text: String) -> String {
    if !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return text;
    }
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The contract's cpus text: "0" when the user gave none (as the original
/// showed it; the launch uses `DEFAULT_CPUS`), else e.g. "0.5" or "1".
/// A resource amount as a JSON number, to Mesos' three decimals: whole
/// amounts without a fraction (`1024`, not `1024.0`), sums without float
/// noise (`0.3`, not `0.30000000000000004`).
fn amount(value: f64) -> Number {
    let thousandths = (value * 1000.0).round();
    if thousandths % 1000.0 == 0.0 && (0.0..=u64::MAX as f64).contains(&thousandths) {
        return Number::from((thousandths / 1000.0) as u64);
    }
    // Not finite only if a master sent a non-finite amount: shown as 0.
    Number::from_f64(thousandths / 1000.0).unwrap_or_else(|| Number::from(0))
}

fn cpus_text(cpus: Option<f64>) -> String {
    cpus.map(format_number).unwrap_or_else(|| "0".to_string())
}

fn pairs(pairs: &[(String, String)]) -> BTreeMap<&str, &str> {
    pairs
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// Field access on the request object, with `null` treated as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// Field names match case-insensitively, as Go's encoding/json did
    /// for the original; an exact match wins.
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .get(name)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            })
            .filter(|value| !value.is_null())
    }

    /// A trimmed string field, `None` when absent.
    fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.trim().to_string())),
            Some(value) => Err(bad_value(value, name, "a string")),
        }
    }

    fn required_name(&self, name: &str) -> Result<String, String> {
        match self.string(name)? {
            None => Err(missing(name)),
            Some(text) if text.is_empty() => Err(format!("field {name:?} must not be empty")),
            Some(text) => Ok(text),
        }
    }

    /// true/false, also as the strings "true"/"false"; absent is false.
    fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(Value::String(text)) if text.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(text)) if text.trim().eq_ignore_ascii_case("false") => Ok(false),
            Some(value) => Err(bad_value(value, name, "true or false")),
        }
    }
}

fn parse_arguments(value: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(bad_value(value, "arguments", "an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(idx, item)| match item {
            Value::String(text) => Ok(text.clone()),
            _ => Err(bad_value(item, &format!("arguments[{idx}]"), "a string")),
        })
        .collect()
}

fn parse_volumes(value: Option<&Value>) -> Result<Vec<Volume>, String> {
    objects(value, "volumes")?
        .into_iter()
        .enumerate()
        .map(|(idx, object)| {
            let fields = Fields(object);
            let path = |name: &str| match fields.string(name) {
                Ok(Some(text)) if !text.is_empty() => Ok(text),
                Ok(_) => Err(format!("missing field {name:?} in volumes[{idx}]")),
                Err(err) => Err(format!("{err} in volumes[{idx}]")),
            };
            let host_path = path("host_path")?;
            let container_path = path("container_path")?;
            // Docker mounts read-write unless told otherwise, and so did the original.
            let mode_text = fields
                .string("mode")
                .map_err(|err| format!("{err} in volumes[{idx}]"))?
                .unwrap_or_default();
            let mode = match mode_text.to_ascii_lowercase().as_str() {
                "" | "rw" => VolumeMode::ReadWrite,
                "ro" => VolumeMode::ReadOnly,
                _ => {
                    return Err(format!(
                        "bad volume mode {mode_text:?} in volumes[{idx}]: use ro or rw"
                    ))
                }
            };
            Ok(Volume {
                host_path,
                container_path,
                mode,
            })
        })
        .collect()
}

fn parse_ports(value: Option<&Value>) -> Result<Vec<PortMapping>, String> {
    objects(value, "ports")?
        .into_iter()
        .enumerate()
        .map(|(idx, object)| {
            let fields = Fields(object);
            let port = |name: &str| -> Result<u16, String> {
                let Some(value) = fields.get(name) else {
                    return Err(format!("missing field {name:?} in ports[{idx}]"));
                };
                let number = whole(value).ok_or_else(|| {
                    bad_value(value, &format!("ports[{idx}].{name}"), "a port number")
                })?;
                match u16::try_from(number) {
                    Ok(port) if port > 0 => Ok(port),
                    _ => Err(format!("port {number} outside 1-65535 in ports[{idx}]")),
                }
            };
            Ok(PortMapping {
                host_port: port("host_port")?,
                container_port: port("container_port")?,
            })
        })
        .collect()
}

/// An optional array of objects.
fn objects<'a>(
    value: Option<&'a Value>,
    name: &str,
) -> Result<Vec<&'a Map<String, Value>>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(bad_value(value, name, "an array of objects"));
    };
    items
        .iter()
        .enumerate()
        .map(|(idx, item)| match item {
            Value::Object(object) => Ok(object),
            _ => Err(bad_value(item, &format!("{name}[{idx}]"), "an object")),
        })
        .collect()
}

/// A whole number, quoted ("50") or bare (50).
fn whole(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// 0 or "0": the original's "not given".
fn zero(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.trim().parse::<f64>().ok() == Some(0.0),
        _ => false,
    }
}

/// A finite number, quoted ("0.5") or bare (0.5).
fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

fn missing(name: &str) -> String {
    format!("missing field {name:?}")
}

/// `bad value "abc" for "mem": expected ...`; the value is shown as JSON.
fn bad_value(value: &Value, name: &str, expected: &str) -> String {
    let mut shown = value.to_string();
    if shown.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|idx| shown.is_char_boundary(*idx))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    format!("bad value {shown} for {name:?}: expected {expected}")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::intelligence::{Derived, Entry, Source};
    use crate::scheduler::model::{AgentId, DockerInfo, TaskId};
    use crate::scheduler::Requested;

    const CADVISOR: &str = r#"{
        "id": "cadvisor", "dockerimage": "google/cadvisor:0.6.2", "mem": "50",
        "sla": "one-per-node", "notmetered": true,
        "volumes": [
            {"host_path":"/", "container_path":"/rootfs", "mode":"ro"},
            {"host_path":"/var/run", "container_path":"/var/run", "mode":"rw"},
            {"host_path":"/sys", "container_path":"/sys", "mode":"ro"},
            {"host_path":"/var/lib/docker", "container_path":"/var/lib/docker/", "mode":"ro"}
        ],
        "ports": [{"host_port":"31500", "container_port":"8080"}]
    }"#;
    const STRESS60: &str = r#"{
        "id": "stress60", "dockerimage": "stress", "mem": "100", "reshuffleable": true,
        "nodetype": "lab", "arguments": ["--vm-bytes", "60M", "--vm", "1"]
    }"#;
    const INFLUXDB: &str = r#"{
        "id": "influxdb", "dockerimage": "influxdb", "mem": "100", "cpus": "1",
        "sla": "singleton", "nodetype": "analytics", "notmetered": true,
        "volumes": [{"host_path":"/analytics/log/influxdb", "container_path":"/log/", "mode":"rw"}],
        "ports": [
            {"host_port":"31400", "container_port":"8083"},
            {"host_port":"31410", "container_port":"8086"}
        ]
    }"#;

    fn spec(id: &str, image: &str, mem_mb: u64) -> TaskSpec {
        TaskSpec::for_test(id, image, mem_mb)
    }

    fn volume(host_path: &str, container_path: &str, mode: VolumeMode) -> Volume {
        Volume {
            host_path: host_path.to_string(),
            container_path: container_path.to_string(),
            mode,
        }
    }

    fn port(host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
        }
    }

    #[track_caller]
    fn check_ok(body: &str, expected: TaskSpec) {
        assert_eq!(parse_task(body.as_bytes()), Ok(expected), "{body}");
    }

    #[track_caller]
    fn check_err(body: &str, expected: &str) {
        match parse_task(body.as_bytes()) {
            Ok(spec) => panic!("{body} parsed as {spec:?}, expected {expected:?}"),
            Err(message) => assert_eq!(message, expected, "{body}"),
        }
    }

    #[test]
    fn the_reference_examples_parse() {
        check_ok(
            CADVISOR,
            TaskSpec {
                sla: Sla::OnePerNode,
                not_metered: true,
                volumes: vec![
                    volume("/", "/rootfs", VolumeMode::ReadOnly),
                    volume("/var/run", "/var/run", VolumeMode::ReadWrite),
                    volume("/sys", "/sys", VolumeMode::ReadOnly),
                    volume("/var/lib/docker", "/var/lib/docker/", VolumeMode::ReadOnly),
                ],
                ports: vec![port(31500, 8080)],
                ..spec("cadvisor", "google/cadvisor:0.6.2", 50)
            },
        );
        check_ok(
            STRESS60,
            TaskSpec {
                reshuffleable: true,
                node_type: "lab".to_string(),
                arguments: ["--vm-bytes", "60M", "--vm", "1"]
                    .map(String::from)
                    .to_vec(),
                ..spec("stress60", "stress", 100)
            },
        );
        check_ok(
            INFLUXDB,
            TaskSpec {
                cpus: Some(1.0),
                sla: Sla::Singleton,
                node_type: "analytics".to_string(),
                not_metered: true,
                volumes: vec![volume(
                    "/analytics/log/influxdb",
                    "/log/",
                    VolumeMode::ReadWrite,
                )],
                ports: vec![port(31400, 8083), port(31410, 8086)],
                ..spec("influxdb", "influxdb", 100)
            },
        );
    }

    #[test]
    fn lenient_inputs_are_accepted() {
        let minimal = || spec("web", "nginx", 64);
        check_ok(r#"{"id":"web","dockerimage":"nginx","mem":64}"#, minimal());
        check_ok(
            r#"{"id":" web ","dockerimage":"nginx","mem":" 64 "}"#,
            minimal(),
        );
        // Only the first JSON value counts, as with the original's decoder.
        check_ok(
            r#"{"id":"web","dockerimage":"nginx","mem":"64"} trailing {"#,
            minimal(),
        );
        check_ok(
            r#"{"id":"web","dockerimage":"nginx","mem":"64","colour":"blue","cpus":null,"sla":""}"#,
            minimal(),
        );
        check_ok(
            r#"{"id":"web","dockerimage":"nginx","mem":"64","cpus":0.5,"notmetered":"true",
                "reshuffleable":"false","networkmode":"HOST","nodename":"slave2",
                "volumes":[{"host_path":"/a","container_path":"/b"},{"host_path":"/c","container_path":"/d","mode":"RO"}],
                "ports":[{"host_port":31000,"container_port":"80"}]}"#,
            TaskSpec {
                cpus: Some(0.5),
                not_metered: true,
                network: NetworkMode::Host,
                node_name: "slave2".to_string(),
                volumes: vec![
                    volume("/a", "/b", VolumeMode::ReadWrite),
                    volume("/c", "/d", VolumeMode::ReadOnly),
                ],
                ports: vec![port(31000, 80)],
                ..minimal()
            },
        );
        for (mode, network) in [
            ("bridge", NetworkMode::Bridge),
            ("none", NetworkMode::None),
            ("", NetworkMode::Default),
        ] {
            let body = format!(
                r#"{{"id":"web","dockerimage":"nginx","mem":"64","networkmode":"{mode}"}}"#
            );
            check_ok(
                &body,
                TaskSpec {
                    network,
                    ..minimal()
                },
            );
        }
    }

    #[test]
    fn privileged_is_lenient_like_the_other_booleans() {
        let minimal = || spec("pcp-all", "pcp-all", 128);
        let privileged = || TaskSpec {
            privileged: true,
            ..minimal()
        };
        for (field, expected) in [
            (r#""privileged":true"#, privileged()),
            (r#""privileged":"true""#, privileged()),
            (r#""privileged":" TRUE ""#, privileged()),
            (r#""privileged":false"#, minimal()),
            (r#""privileged":"false""#, minimal()),
            (r#""privileged":null"#, minimal()),
        ] {
            check_ok(
                &format!(r#"{{"id":"pcp-all","dockerimage":"pcp-all","mem":"128",{field}}}"#),
                expected,
            );
        }
        check_err(
            r#"{"id":"pcp-all","dockerimage":"pcp-all","mem":"128","privileged":"yes"}"#,
            r#"bad value "yes" for "privileged": expected true or false"#,
        );
    }

    #[test]
    fn a_privileged_task_is_listed_privileged() {
        let mut task = running_copy();
        Arc::make_mut(&mut task.spec).privileged = true;
        let value: Value = serde_json::from_str(&task_json(&task)).expect("valid JSON");
        assert_eq!(value["privileged"], true);
        assert_eq!(value["TaskInfo"]["container"]["docker"]["privileged"], true);
    }

    #[test]
    fn every_bad_request_says_what_is_wrong() {
        let base = r#""dockerimage":"nginx","mem":"64""#;
        let with = |extra: &str| format!(r#"{{"id":"web",{base},{extra}}}"#);
        check_err("", "empty body: expected a JSON task object");
        check_err("  \n", "empty body: expected a JSON task object");
        check_err(
            "{\"id\":",
            "invalid JSON: EOF while parsing a value at line 1 column 6",
        );
        check_err(
            "[1]",
            r#"body must be a JSON object such as {"id":"web","dockerimage":"nginx","mem":"64"}, got an array"#,
        );
        check_err(
            "null",
            r#"body must be a JSON object such as {"id":"web","dockerimage":"nginx","mem":"64"}, got null"#,
        );
        check_err(&format!("{{{base}}}"), r#"missing field "id""#);
        check_err(
            &format!(r#"{{"id":"  ",{base}}}"#),
            r#"field "id" must not be empty"#,
        );
        check_err(
            &format!(r#"{{"id":7,{base}}}"#),
            r#"bad value 7 for "id": expected a string"#,
        );
        check_err(
            r#"{"id":"web","mem":"64"}"#,
            r#"missing field "dockerimage""#,
        );
        check_err(
            r#"{"id":"web","dockerimage":"","mem":"64"}"#,
            r#"field "dockerimage" must not be empty"#,
        );
        check_err(
            r#"{"id":"web","dockerimage":"nginx"}"#,
            r#"missing field "mem""#,
        );
        for (mem, shown) in [
            (r#""abc""#, r#""abc""#),
            (r#""0""#, r#""0""#),
            ("0", "0"),
            ("-5", "-5"),
            (r#""12.5""#, r#""12.5""#),
            ("true", "true"),
        ] {
            check_err(
                &format!(r#"{{"id":"web","dockerimage":"nginx","mem":{mem}}}"#),
                &format!(
                    r#"bad value {shown} for "mem": expected a whole number of MB from 1 to 16777216"#
                ),
            );
        }
        check_err(
            &with(r#""cpus":"lots""#),
            r#"bad value "lots" for "cpus": expected a number of cpus from 0.001 to 1000000"#,
        );
        check_err(
            &with(r#""cpus":-1"#),
            r#"bad value -1 for "cpus": expected a number of cpus from 0.001 to 1000000"#,
        );
        // 0 means "not given", as in the original (the launch uses the default);
        // field names match in any case, as Go's decoder did.
        for body in [
            r#"{"id":"web","dockerimage":"nginx","mem":"64","cpus":0}"#,
            r#"{"ID":"web","DockerImage":"nginx","MEM":"64","cpus":"0"}"#,
        ] {
            check_ok(body, spec("web", "nginx", 64));
        }
        // See: issue 9, B12. Less than Mesos' three decimals launched as 0
        // cpus; absurd sizes were accepted and waited for ever.
        for (field, value) in [
            ("cpus", "0.0009"),
            ("cpus", r#""0.0001""#),
            ("cpus", r#""1e308""#),
            ("cpus", "1000000.5"),
            ("mem", "18446744073709551615"),
            ("mem", r#""16777217""#),
        ] {
            let expected = if field == "cpus" {
                CPUS_EXPECTED
            } else {
                MEM_EXPECTED
            };
            let body =
                format!(r#"{{"id":"web","dockerimage":"nginx","mem":"64","{field}":{value}}}"#);
            check_err(
                &body,
                &format!("bad value {value} for {field:?}: expected {expected}"),
            );
        }
        check_ok(
            &with(r#""cpus":"0.001""#),
            TaskSpec {
                cpus: Some(0.001),
                ..spec("web", "nginx", 64)
            },
        );
        check_ok(
            r#"{"id":"web","dockerimage":"nginx","mem":16777216}"#,
            spec("web", "nginx", 16_777_216),
        );
        check_err(
            &with(r#""cpus":"inf""#),
            r#"bad value "inf" for "cpus": expected a number of cpus from 0.001 to 1000000"#,
        );
        check_err(
            &with(r#""sla":"x""#),
            r#"bad sla "x": use one-per-node or singleton"#,
        );
        check_err(
            &with(r#""networkmode":"overlay""#),
            r#"bad networkmode "overlay": use bridge, host or none"#,
        );
        for (id, why) in [
            (
                "e/f",
                "must not contain '/', '\\', ':' or control characters",
            ),
            (
                "a:b",
                "must not contain '/', '\\', ':' or control characters",
            ),
            ("..", "must not be '.' or '..' or only spaces"),
        ] {
            check_err(
                &format!(r#"{{"id":"{id}","dockerimage":"x","mem":"1"}}"#),
                &format!("bad id {id:?}: {why}"),
            );
        }
        check_err(
            &with(r#""restart":"sometimes""#),
            r#"bad restart "sometimes": use never, on-failure or always"#,
        );
        check_err(
            &with(r#""notmetered":"yes""#),
            r#"bad value "yes" for "notmetered": expected true or false"#,
        );
        check_err(
            &with(r#""nodetype":["lab"]"#),
            r#"bad value ["lab"] for "nodetype": expected a string"#,
        );
        check_err(
            &with(r#""arguments":"-v""#),
            r#"bad value "-v" for "arguments": expected an array of strings"#,
        );
        check_err(
            &with(r#""arguments":["-v",1]"#),
            r#"bad value 1 for "arguments[1]": expected a string"#,
        );
        check_err(
            &with(r#""volumes":[{"host_path":"/a","container_path":"/b","mode":"rx"}]"#),
            r#"bad volume mode "rx" in volumes[0]: use ro or rw"#,
        );
        check_err(
            &with(r#""volumes":[{"container_path":"/b"}]"#),
            r#"missing field "host_path" in volumes[0]"#,
        );
        check_err(
            &with(r#""volumes":["/a:/b"]"#),
            r#"bad value "/a:/b" for "volumes[0]": expected an object"#,
        );
        check_err(
            &with(r#""ports":[{"host_port":"0","container_port":"80"}]"#),
            "port 0 outside 1-65535 in ports[0]",
        );
        check_err(
            &with(r#""ports":[{"host_port":70000,"container_port":"80"}]"#),
            "port 70000 outside 1-65535 in ports[0]",
        );
        check_err(
            &with(r#""ports":[{"host_port":"31000","container_port":"http"}]"#),
            r#"bad value "http" for "ports[0].container_port": expected a port number"#,
        );
        check_err(
            &with(r#""ports":[{"host_port":"31000"}]"#),
            r#"missing field "container_port" in ports[0]"#,
        );
        // Long values are cut in the message.
        let long = "x".repeat(100);
        let message = parse_task(with(&format!(r#""cpus":"{long}""#)).as_bytes()).unwrap_err();
        assert!(message.contains("xxx…") && message.len() < 140, "{message}");
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            "\u{0}",
            "{{{{",
            "\"",
            "{\"id\":\"\u{e9}\"}",
            "[",
            "1e999",
            "{\"mem\":1e999}",
        ] {
            let _ = parse_task(body.as_bytes());
        }
        let _ = parse_task(&[0xff, 0xfe, b'{']);
        let deep = "[".repeat(10_000);
        assert!(parse_task(deep.as_bytes()).is_err());
    }

    fn running_copy() -> TaskView {
        let requested = TaskSpec {
            sla: Sla::OnePerNode,
            not_metered: true,
            volumes: vec![volume("/", "/rootfs", VolumeMode::ReadOnly)],
            ports: vec![port(31500, 8080)],
            ..spec("cadvisor", "google/cadvisor:0.6.2", 50)
        };
        TaskView {
            spec: Arc::new(TaskSpec {
                node_name: "slave2".to_string(),
                mem_mb: 230,
                ..requested.clone()
            }),
            requested: Requested::of(&requested),
            intelligence: vec![("mem".to_string(), "230".to_string())],
            internal_id: TaskId("cadvisor-1464567890123456789".into()),
            state: "TASK_RUNNING",
            agent_id: Some(AgentId("S1".into())),
            hostname: Some("slave2".into()),
            docker: DockerInfo::new("abc123", "mesos-S1.c1", 4242),
            created_at: 1464567890,
            request_sent: true,
            running: true,
            status_message: String::new(),
            pending_reason: None,
            restarts: 0,
            crash_looping: false,
            ended_at: None,
            reason: None,
        }
    }

    #[test]
    fn task_json_has_the_contract_names_and_types() {
        let text = task_json(&running_copy());
        assert!(
            text.starts_with(r#"{"id":"cadvisor","dockerimage":"#),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            value,
            json!({
                "id": "cadvisor", "dockerimage": "google/cadvisor:0.6.2", "mem": "230", "cpus": "0",
                "sla": "one-per-node", "nodetype": "", "nodename": "slave2",
                "notmetered": true, "reshuffleable": false,
                "volumes": [{"container_path": "/rootfs", "host_path": "/", "mode": "ro"}],
                "ports": [{"container_port": "8080", "host_port": "31500"}],
                "networkmode": "",
                "InternalID": "cadvisor-1464567890123456789", "SlaveID": "S1",
                "DockerID": "abc123", "DockerName": "mesos-S1.c1", "ProcessID": 4242,
                "CreatedAt": 1464567890, "RequestSent": true, "Running": true,
                // As the original: Go protobuf JSON, enums as integers.
                "TaskInfo": {
                    "name": "cadvisor-1464567890123456789",
                    "task_id": {"value": "cadvisor-1464567890123456789"},
                    "slave_id": {"value": "S1"},
                    "resources": [
                        {"name": "cpus", "type": 0, "scalar": {"value": 0.1}},
                        {"name": "mem", "type": 0, "scalar": {"value": 230}},
                        {"name": "ports", "type": 1, "ranges": {"range": [{"begin": 31500, "end": 31500}]}}],
                    "command": {"shell": false},
                    "container": {"type": 1,
                        "volumes": [{"container_path": "/rootfs", "host_path": "/", "mode": 2}],
                        "docker": {"image": "google/cadvisor:0.6.2", "network": 2,
                            "port_mappings": [{"host_port": 31500, "container_port": 8080}]}}},
                "state": "TASK_RUNNING", "hostname": "slave2", "agent_id": "S1",
                "status_message": "", "pending_reason": null,
                "restart": "never", "privileged": false, "restarts": 0, "crash_looping": false,
                "requested": {"mem": "50", "cpus": "0", "nodename": "", "nodetype": "", "sla": "one-per-node"},
                "intelligence": {"mem": "230"}
            })
        );
    }

    #[test]
    fn the_task_list_joins_entries_rendered_once() {
        let mut pending = running_copy();
        pending.internal_id = TaskId("web-1".into());
        Arc::make_mut(&mut pending.spec).arguments = vec!["<&>".to_string()];
        let views = [running_copy(), pending];
        let whole = to_json(&views.iter().map(TaskDto::from).collect::<Vec<_>>());
        let entries: Vec<Arc<ListedTask>> = views
            .iter()
            .map(|view| Arc::new(ListedTask::new(view.clone())))
            .collect();
        assert_eq!(tasks_json(&entries), whole);
        // Rendered: the entry keeps only its JSON, and a second list of the
        // same entries gives the same text without rendering again.
        assert!(entries.iter().all(|entry| entry.view().is_none()));
        let again: Vec<Arc<str>> = entries
            .iter()
            .map(|entry| entry.json(|_| panic!("rendered twice")))
            .collect();
        assert_eq!(format!("[{}]", again.join(",")), whole);
        assert_eq!(tasks_json(&[]), "[]");
    }

    /// An entry of a long list is the same text as `task_json`, escapes
    /// included; it keeps its JSON only when someone else holds it too.
    #[test]
    fn a_long_list_entry_is_written_as_task_json() {
        let check = |view: TaskView| {
            let expected = task_json(&view);
            let alone = Arc::new(ListedTask::new(view.clone()));
            let mut out = b"[".to_vec();
            append_task_entry(&alone, &mut out);
            let text = |out: &[u8]| String::from_utf8_lossy(out).into_owned();
            assert_eq!(text(&out), format!("[{expected}"), "alone");
            assert!(
                alone.view().is_some(),
                "an entry only the list holds keeps no JSON"
            );
            let kept = Arc::new(ListedTask::new(view));
            let _state = kept.clone();
            let mut out = Vec::new();
            append_task_entry(&kept, &mut out);
            assert_eq!(text(&out), expected, "kept");
            assert!(kept.view().is_none(), "a kept entry keeps its JSON");
            let mut again = Vec::new();
            append_task_entry(&kept, &mut again);
            assert_eq!(text(&again), expected, "kept, again");
        };
        check(running_copy());
        for argument in ["<&>", "a\u{2028}b\u{2029}", "\u{2000}é", "plain"] {
            let mut task = running_copy();
            Arc::make_mut(&mut task.spec).arguments = vec![argument.to_string()];
            check(task);
        }
    }

    /// A list longer than a page, read page by page into chunks
    /// (`api::pages` with `append_task_entry`, as `GET /client/task` reads
    /// it), is the array `tasks_json` makes of the same entries, whether an
    /// entry is kept by the state too or held by the page alone.
    #[test]
    fn a_list_read_page_by_page_is_the_same_array() {
        use super::super::pages::{Fetch, Fetched, PagedList};
        use std::io::Read;
        let views: Vec<TaskView> = (0..7)
            .map(|n| {
                let mut view = running_copy();
                view.internal_id = TaskId(format!("t{n}").into());
                // Escaped like Go: a line separator alone, and `<&>`.
                let argument = match n {
                    3 => "a\u{2028}b",
                    5 => "<&>",
                    _ => "plain",
                };
                Arc::make_mut(&mut view.spec).arguments = vec![argument.to_string()];
                view
            })
            .collect();
        let fresh = |view: &TaskView| Arc::new(ListedTask::new(view.clone()));
        let whole = tasks_json(&views.iter().map(fresh).collect::<Vec<_>>());
        // Entries 1 and 4 are kept by the "state" as well.
        let kept: Vec<Arc<ListedTask>> = [1, 4].iter().map(|&n| fresh(&views[n])).collect();
        let entry = move |n: usize| match n {
            1 => kept[0].clone(),
            4 => kept[1].clone(),
            n => fresh(&views[n]),
        };
        let serve = move |after: Option<TaskId>, _: Option<usize>| -> Result<Fetched<_>, String> {
            let from = after.map_or(0, |id| id.0[1..].parse::<usize>().unwrap_or(0) + 1);
            let to = (from + 2).min(7);
            let next = (to < 7).then(|| TaskId(format!("t{}", to - 1).into()));
            Ok(((from..to).map(&entry).collect(), next))
        };
        let mut fetch: Fetch<Arc<ListedTask>> = Box::new(serve);
        let first = fetch(None, None).expect("first page");
        let mut list = PagedList::new(first, None, fetch, append_task_entry);
        let mut body = String::new();
        list.read_to_string(&mut body).expect("every page");
        assert_eq!(body, format!("{whole}\n"));
    }

    #[test]
    fn task_json_of_a_pending_task() {
        let mut task = running_copy();
        task.spec = Arc::new(TaskSpec {
            cpus: Some(0.1),
            arguments: vec!["<&>".to_string()],
            ..spec("web", "nginx", 64)
        });
        task.requested = Requested {
            cpus: Some(1.0),
            ..Requested::of(&task.spec)
        };
        task.intelligence.clear();
        task.agent_id = None;
        task.hostname = None;
        task.running = false;
        task.request_sent = false;
        task.state = "pending";
        task.pending_reason = Some("no offer with 64 MB".to_string());
        let text = task_json(&task);
        // Go's json.Marshal escapes HTML characters; so do we.
        assert!(
            text.contains(r#""arguments":["\u003c\u0026\u003e"]"#),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["arguments"], json!(["<&>"]));
        assert_eq!(
            (&value["cpus"], &value["requested"]["cpus"]),
            (&json!("0.1"), &json!("1"))
        );
        assert_eq!(
            (&value["SlaveID"], &value["hostname"], &value["agent_id"]),
            (&json!(""), &json!(""), &Value::Null)
        );
        assert_eq!(value["pending_reason"], "no offer with 64 MB");
        assert_eq!(value["privileged"], false);
        assert!(
            value["TaskInfo"]["container"]["docker"]
                .get("privileged")
                .is_none(),
            "{text}"
        );
        // Empty lists are omitted, as Go's omitempty did.
        assert!(
            value.get("volumes").is_none() && value.get("ports").is_none(),
            "{text}"
        );
    }

    #[test]
    fn node_json_has_the_contract_names_and_types() {
        let node = NodeView {
            agent_id: AgentId("20160529-S1".into()),
            hostname: "slave2".to_string(),
            node_type: "lab".to_string(),
            node_name: "slave2".to_string(),
            time_of_last_offer: 1464567890,
            free_cpus: 1.9,
            free_mem_mb: 924.0,
            used_cpus: 0.1 + 0.2,
            used_mem_mb: 100.0,
        };
        assert_eq!(
            node_json(&node),
            r#"{"id":"20160529-S1","hostname":"slave2","nodetype":"lab","nodename":"slave2","timeoflastoffer":1464567890,"agent_id":"20160529-S1","free_cpus":1.9,"free_mem":924,"used_cpus":0.3,"used_mem":100}"#
        );
    }

    #[test]
    fn resource_amounts_are_numbers_with_at_most_three_decimals() {
        let check = |value: f64, expected: &str| {
            assert_eq!(amount(value).to_string(), expected, "{value}");
        };
        check(0.0, "0");
        check(1024.0, "1024");
        check(0.1 + 0.2, "0.3");
        check(2.0 - 0.1, "1.9");
        check(0.0004, "0");
        check(1.23456, "1.235");
        check(123.25, "123.25");
        check(f64::NAN, "0");
        check(f64::INFINITY, "0");
    }

    #[test]
    fn reply_bodies() {
        assert_eq!(
            message_json(202, "Run task: web"),
            r#"{"code":202,"message":"Run task: web"}"#
        );
        let killed: Value =
            serde_json::from_str(&killed_json(&[running_copy(), running_copy()], true))
                .expect("json");
        assert_eq!(
            killed["message"],
            "Kill task: cadvisor-1464567890123456789, cadvisor-1464567890123456789"
        );
        assert_eq!(killed["tasks"].as_array().map(Vec::len), Some(2));
        assert!(killed["tasks"][0]["dockerimage"].is_string());
        let brief: Value =
            serde_json::from_str(&killed_json(&[running_copy()], false)).expect("json");
        assert_eq!(
            brief,
            serde_json::json!({
                "code": 200,
                "message": "Kill task: cadvisor-1464567890123456789",
                "tasks": [{
                    "id": "cadvisor",
                    "InternalID": "cadvisor-1464567890123456789",
                    "state": running_copy().state,
                }],
            })
        );
        let step = ReshuffleStep {
            id: "stress60".to_string(),
            internal_id: TaskId("stress60-1".into()),
            from_host: Some("slave2".to_string()),
            to_host: None,
            changes: vec![("mem".to_string(), "230".to_string())],
        };
        assert_eq!(
            reshuffled_json(&[step], true),
            r#"{"code":202,"message":"Reshuffle tasks","plan":[{"id":"stress60","InternalID":"stress60-1","from":"slave2","to":null,"changes":{"mem":"230"}}],"dry_run":true}"#
        );
        let mut table = Table::new();
        table.entry("stress60".to_string()).or_default().insert(
            "mem".to_string(),
            Entry {
                source: Source::Redis,
                raw: "209924096".to_string(),
                derived: Derived::MemMb(230),
                updated_at: 7,
            },
        );
        assert_eq!(
            intelligence_json(&table),
            r#"{"stress60":{"mem":{"raw":"209924096","value":"230","source":"redis","updated_at":7}}}"#
        );
        assert_eq!(intelligence_json(&Table::new()), "{}");
    }

    #[test]
    fn intelligence_body_is_the_raw_value() {
        #[track_caller]
        fn check(body: &[u8], expected: Result<&str, &str>) {
            assert_eq!(
                parse_intelligence_value(body),
                expected.map(str::to_string).map_err(str::to_string)
            );
        }
        check(b"209924096", Ok("209924096"));
        check(b" 209924096\n", Ok("209924096"));
        check(b"\"slave2\"", Ok("slave2"));
        check(b"\" singleton \"", Ok("singleton"));
        check(b"2.1E8", Ok("2.1E8"));
        check(b"slave2", Ok("slave2"));
        check(b"", Ok(""));
        check(b"\"\"", Ok(""));
        check(
            b"\xff",
            Err("body must be UTF-8 text: the raw value, e.g. 209924096"),
        );
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        #[track_caller]
        fn check(values: &[&str], expected: Result<Option<&str>, &str>) {
            assert_eq!(
                parse_idempotency_key(values),
                expected
                    .map(|key| key.map(str::to_string))
                    .map_err(str::to_string),
                "{values:?}"
            );
        }
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY);
        let too_long = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        check(&[], Ok(None));
        check(&["a"], Ok(Some("a")));
        check(
            &["6f1c2f0e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"],
            Ok(Some("6f1c2f0e-3a4b-4c5d-8e9f-0a1b2c3d4e5f")),
        );
        check(&["order 42 ~!"], Ok(Some("order 42 ~!")));
        check(&[&long], Ok(Some(&long)));
        check(
            &[""],
            Err("empty Idempotency-Key: use 1 to 128 printable ASCII characters"),
        );
        check(
            &[&too_long],
            Err(
                "Idempotency-Key of 129 bytes is too long: use 1 to 128 printable ASCII characters",
            ),
        );
        for bad in ["a\tb", "\u{7f}", "caf\u{e9}", "a\u{0}"] {
            check(
                &[bad],
                Err("Idempotency-Key has a character that is not printable ASCII: use 1 to 128 printable ASCII characters"),
            );
        }
        check(&["a", "a"], Err("more than one Idempotency-Key header"));
    }
}

/// The event-stream JSON is a contract the dashboard consumes: field names,
/// nulls and one line.
#[cfg(test)]
mod notice_tests {
    use super::*;
    use crate::scheduler::model::{AgentId, TaskId, TaskState};
    use crate::scheduler::notice::{KilledBy, Notice};

    #[track_caller]
    fn check(kind: NoticeKind, expected: &str) {
        let published = Published {
            seq: 7,
            notice: Notice {
                time_ms: 1234,
                kind,
            },
        };
        assert_eq!(notice_json(&published), expected);
    }

    #[test]
    fn each_kind_has_its_fields() {
        let task = || TaskId("web-1".into());
        check(
            NoticeKind::TaskSubmitted {
                task: task(),
                id: "web".to_string(),
            },
            r#"{"seq":7,"time_ms":1234,"kind":"task_submitted","task":"web-1","id":"web"}"#,
        );
        check(
            NoticeKind::TaskLaunched {
                task: task(),
                id: "web".to_string(),
                node: "slave1".to_string(),
                agent_id: AgentId("S0".into()),
            },
            r#"{"seq":7,"time_ms":1234,"kind":"task_launched","task":"web-1","id":"web","node":"slave1","agent_id":"S0"}"#,
        );
        check(
            NoticeKind::TaskStatus {
                task: task(),
                id: "web".to_string(),
                state: TaskState::Running,
                reason: None,
                message: Some("a\nb <x>".to_string()),
                node: None,
            },
            r#"{"seq":7,"time_ms":1234,"kind":"task_status","task":"web-1","id":"web","state":"TASK_RUNNING","reason":null,"message":"a\nb \u003cx\u003e","node":null}"#,
        );
        check(
            NoticeKind::TaskKilled {
                task: task(),
                id: "web".to_string(),
                by: KilledBy::Reshuffle,
            },
            r#"{"seq":7,"time_ms":1234,"kind":"task_killed","task":"web-1","id":"web","by":"reshuffle"}"#,
        );
        check(
            NoticeKind::NodeLost {
                agent_id: AgentId("S0".into()),
                node: None,
            },
            r#"{"seq":7,"time_ms":1234,"kind":"node_lost","agent_id":"S0","node":null}"#,
        );
        check(
            NoticeKind::IntelligenceChanged {
                task: "sim".to_string(),
                attribute: "mem".to_string(),
                value: None,
                source: "rest",
            },
            r#"{"seq":7,"time_ms":1234,"kind":"intelligence_changed","task":"sim","attribute":"mem","value":null,"source":"rest"}"#,
        );
    }
}
