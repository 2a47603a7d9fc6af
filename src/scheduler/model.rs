//! Domain types shared by the REST layer, the Mesos layer and the scheduler
//! core. They are plain data: no serde, no protobuf, no I/O. `api::dto` and
//! `mesos::convert` translate between these and the wire formats.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The internal task id: `<user id without spaces>-<unix nanos>`. It is also the
/// Mesos TaskID, the ExecutorID (no custom executor) and the Redis key suffix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub Arc<str>);

/// A Mesos agent id, as the master assigned it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(pub Arc<str>);

/// A Mesos offer id; valid for one use only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OfferId(pub String);

/// A Mesos framework id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameworkId(pub String);

/// The service-level agreement of a submitted task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sla {
    /// Any number of instances, each submit is a new one.
    None,
    /// At most one live instance per user id.
    Singleton,
    /// One instance on every matching node, including nodes that join later.
    OnePerNode,
}

impl Sla {
    /// The contract spelling: "", "singleton", "one-per-node".
    pub fn as_str(self) -> &'static str {
        match self {
            Sla::None => "",
            Sla::Singleton => "singleton",
            Sla::OnePerNode => "one-per-node",
        }
    }
}

/// Docker networking as the user asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Not given: BRIDGE when ports are mapped, else the Mesos default (HOST).
    Default,
    Host,
    Bridge,
    None,
}

impl NetworkMode {
    /// The contract spelling: "", "host", "bridge", "none".
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "",
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeMode {
    ReadOnly,
    ReadWrite,
}

impl VolumeMode {
    /// The contract spelling: "ro" or "rw".
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::ReadOnly => "ro",
            VolumeMode::ReadWrite => "rw",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub host_path: String,
    pub container_path: String,
    pub mode: VolumeMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// 1-65535, and must lie inside an offered `ports` range to be placed.
    pub host_port: u16,
    pub container_port: u16,
}

/// What happens when a task ends without being killed by the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Gone is gone, as in the original.
    #[default]
    Never,
    /// Run it again unless it finished (exit 0) or was refused as invalid.
    OnFailure,
    /// Run it again unless it was refused as invalid.
    Always,
}

impl RestartPolicy {
    /// The contract spelling: "never", "on-failure", "always".
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }

    pub fn from_name(name: &str) -> Option<RestartPolicy> {
        [
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ]
        .into_iter()
        .find(|policy| policy.as_str() == name)
    }

    /// Does a task that ended in `state` (not killed by us) run again?
    pub fn restarts_after(self, state: TaskState) -> bool {
        match self {
            RestartPolicy::Never => false,
            _ if state == TaskState::Error => false,
            RestartPolicy::OnFailure => state != TaskState::Finished,
            RestartPolicy::Always => true,
        }
    }
}

/// A validated task request, exactly as the user asked for it (before task
/// intelligence is applied).
///
/// Invariant: `id` and `docker_image` are non-empty, `mem_mb > 0`, and `cpus`,
/// when present, is finite and positive.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub id: String,
    pub docker_image: String,
    pub mem_mb: u64,
    /// `None` when the user gave no cpus: the launch then uses `DEFAULT_CPUS`,
    /// while the task JSON shows "0" as the original did.
    pub cpus: Option<f64>,
    pub sla: Sla,
    /// Empty means any node.
    pub node_type: String,
    /// Empty means any node.
    pub node_name: String,
    pub not_metered: bool,
    pub reshuffleable: bool,
    pub arguments: Vec<String>,
    pub volumes: Vec<Volume>,
    pub ports: Vec<PortMapping>,
    pub network: NetworkMode,
    pub restart: RestartPolicy,
    /// `DockerInfo.privileged`: `docker run --privileged` (the lab's PCP
    /// reads host counters with it).
    pub privileged: bool,
}

#[cfg(test)]
impl TaskSpec {
    /// A valid spec for tests: what is given, defaults everywhere else (no
    /// cpus, no SLA, no constraints, restart never). Tests change the rest
    /// with struct update syntax.
    pub(crate) fn for_test(id: &str, docker_image: &str, mem_mb: u64) -> TaskSpec {
        TaskSpec {
            id: id.to_string(),
            docker_image: docker_image.to_string(),
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
}

/// The cpus a task gets when the request names none (as in the original).
pub const DEFAULT_CPUS: f64 = 0.1;

impl TaskSpec {
    /// The cpus that go into the TaskInfo.
    pub fn launch_cpus(&self) -> f64 {
        self.cpus.unwrap_or(DEFAULT_CPUS)
    }

    /// The Docker network the TaskInfo names: BRIDGE whenever ports are
    /// mapped, else what the user asked for; `None` leaves the Mesos
    /// default (HOST), as the original did.
    pub fn docker_network(&self) -> Option<NetworkMode> {
        match (self.ports.is_empty(), self.network) {
            (false, _) | (true, NetworkMode::Bridge) => Some(NetworkMode::Bridge),
            (true, NetworkMode::Default) => None,
            (true, other) => Some(other),
        }
    }
}

/// One resource offer, reduced to what placement needs: its resources
/// grouped by the reservation they were offered with.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub id: OfferId,
    pub agent_id: AgentId,
    pub hostname: String,
    /// One pool per distinct reservation, in the order first offered.
    pub pools: Vec<Pool>,
    /// TEXT attributes (`nodetype`, `nodename`, ...). Non-TEXT ones are dropped.
    pub attributes: BTreeMap<String, String>,
}

impl Offer {
    /// An offer of unreserved resources only.
    pub fn unreserved(
        id: OfferId,
        agent_id: AgentId,
        hostname: String,
        cpus: f64,
        mem_mb: f64,
        ports: Vec<(u64, u64)>,
        attributes: BTreeMap<String, String>,
    ) -> Offer {
        Offer {
            id,
            agent_id,
            hostname,
            pools: vec![Pool {
                reservation: Reservation::unreserved(),
                cpus,
                mem_mb,
                ports,
            }],
            attributes,
        }
    }
}

/// The cpus, mem and ports of one offer that carry the same reservation.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub reservation: Reservation,
    pub cpus: f64,
    pub mem_mb: f64,
    /// Inclusive port ranges, sorted.
    pub ports: Vec<(u64, u64)>,
}

/// Whom resources are reserved for, exactly as the master offered them,
/// so a launch can ask for them the same way: a TaskInfo that asks `*` for
/// reserved resources is refused with TASK_ERROR.
///
/// Without the RESERVATION_REFINEMENT capability (we do not declare it) the
/// master offers the "pre-refinement" format: `Resource.role` (`*` when
/// unreserved; a role for a static reservation) plus `Resource.reservation`
/// for a dynamic one. A refinement-format stack (`Resource.reservations`)
/// is kept too, should a master send one, and echoed back as offered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    /// The role the resources are reserved for; `*` when unreserved.
    pub role: String,
    /// `Resource.reservation`: present for a dynamic reservation.
    pub dynamic: Option<ReservationInfo>,
    /// `Resource.reservations`: the refinement-format stack, oldest first.
    pub refined: Vec<ReservationInfo>,
}

/// The unreserved role.
pub const UNRESERVED_ROLE: &str = "*";

impl Reservation {
    pub fn unreserved() -> Reservation {
        Reservation {
            role: UNRESERVED_ROLE.to_string(),
            dynamic: None,
            refined: Vec::new(),
        }
    }

    pub fn is_unreserved(&self) -> bool {
        self.role == UNRESERVED_ROLE
    }

    /// A framework of `role` may launch on these resources: unreserved, or
    /// reserved for exactly that role.
    pub fn usable_by(&self, role: &str) -> bool {
        self.is_unreserved() || self.role == role
    }
}

/// One `Resource.ReservationInfo`, as offered.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReservationInfo {
    /// `type`: 1 STATIC, 2 DYNAMIC; `None` when not set.
    pub kind: Option<i32>,
    pub role: Option<String>,
    pub principal: Option<String>,
    /// Labels as (key, value) pairs, in the offered order.
    pub labels: Vec<(String, Option<String>)>,
}

/// How much of one resource a task takes from one pool.
#[derive(Clone, Debug, PartialEq)]
pub enum Amount {
    Scalar(f64),
    /// Inclusive ranges.
    Ranges(Vec<(u64, u64)>),
}

/// A piece of a task's resources, with the reservation it was offered with.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// `cpus`, `mem` or `ports`.
    pub name: &'static str,
    pub amount: Amount,
    pub reservation: Reservation,
}

/// Where a task's lifecycle stands, from the scheduler's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// The Mesos name, e.g. `TASK_RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Terminal as the master's `isTerminalState` defines it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }
}

/// The subset of `TaskStatus.Reason` the scheduler acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusReason {
    InvalidOffers,
    Reconciliation,
    AgentRemoved,
    AgentDisconnected,
    Other,
}

/// What a docker executor reports about the container on TASK_RUNNING:
/// its id, its name (without the leading `/`) and its pid. Every running
/// task keeps one, so the id and name share one allocation (32 bytes and
/// one heap block instead of 56 and two).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerInfo {
    /// The id, then the name.
    text: Box<str>,
    id_len: usize,
    pub pid: u64,
}

impl DockerInfo {
    pub fn new(id: &str, name: &str, pid: u64) -> DockerInfo {
        DockerInfo {
            text: [id, name].concat().into(),
            id_len: id.len(),
            pid,
        }
    }

    pub fn id(&self) -> &str {
        &self.text[..self.id_len]
    }

    pub fn name(&self) -> &str {
        &self.text[self.id_len..]
    }
}

/// A task status update, as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    pub task_id: TaskId,
    pub state: TaskState,
    pub reason: StatusReason,
    /// The Mesos reason name (`REASON_CONTAINER_LAUNCH_FAILED`), empty when
    /// the update had none: shown on ended tasks.
    pub reason_name: String,
    pub message: String,
    pub agent_id: Option<AgentId>,
    /// Set only on updates that must be acknowledged (agent/executor sourced).
    pub uuid: Option<Vec<u8>>,
    /// Parsed from the docker-inspect JSON in `data`, when present and valid.
    pub docker: Option<DockerInfo>,
}
