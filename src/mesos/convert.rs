//! Conversions between the generated `mesos.v1` protobuf types and the
//! scheduler's domain types. This is the only module of the scheduler proper
//! that names generated types (the simulated master in `sim` has its own).
//!
//! Pure: no I/O, no logging; bad input from the master becomes an `Err`.

use std::collections::BTreeMap;
use std::fmt;

use protobuf::{Message, MessageField};

use crate::mesos::proto::mesos as v1;
use crate::mesos::proto::scheduler::{call, event, Call as ProtoCall, Event as ProtoEvent};
use crate::scheduler::model::{
    AgentId, Amount, DockerInfo, FrameworkId, NetworkMode, Offer, OfferId, Pool, Reservation,
    ReservationInfo, StatusReason, TaskId, TaskState, TaskUpdate, VolumeMode,
};
use crate::scheduler::{notice, Call, Launch};

/// The FrameworkInfo fields we send on SUBSCRIBE; all come from flags.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkSettings {
    pub name: String,
    pub user: String,
    pub role: String,
    pub hostname: String,
    pub principal: Option<String>,
    /// Seconds the master keeps our tasks after the connection is lost.
    pub failover_timeout: f64,
}

/// An event from the master, decoded into what the reader and the state
/// thread need.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_seconds: Option<f64>,
    },
    Heartbeat,
    Offers(Vec<Offer>),
    Rescind(OfferId),
    Update(TaskUpdate),
    /// FAILURE with only an agent id: the agent is gone.
    AgentLost(AgentId),
    /// FAILURE with an executor id, or MESSAGE, INVERSE_OFFERS and friends:
    /// nothing for us to do. Carries the event type name for the log.
    Ignored(&'static str),
    Error(String),
}

/// Why bytes from the master could not be turned into an event.
#[derive(Debug)]
pub enum DecodeError {
    /// Not a valid protobuf `Event` (including missing required fields).
    Protobuf(protobuf::Error),
    /// Valid protobuf, but the sub-message for its type is missing or the type is unknown.
    Shape(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Protobuf(err) => write!(f, "undecodable event: {err}"),
            DecodeError::Shape(what) => write!(f, "malformed event: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Protobuf(err) => Some(err),
            DecodeError::Shape(_) => None,
        }
    }
}

/// Encodes the SUBSCRIBE call. With `framework_id` set, both
/// `Call.framework_id` and `framework_info.id` carry it, as the master requires.
pub fn subscribe_to_bytes(
    settings: &FrameworkSettings,
    framework_id: Option<&FrameworkId>,
) -> Vec<u8> {
    let mut info = v1::FrameworkInfo::new();
    info.set_user(settings.user.clone());
    info.set_name(settings.name.clone());
    info.set_role(settings.role.clone());
    info.set_hostname(settings.hostname.clone());
    info.set_failover_timeout(settings.failover_timeout);
    // Checkpointing lets tasks survive an agent restart (reference §4.10).
    info.set_checkpoint(true);
    if let Some(principal) = &settings.principal {
        info.set_principal(principal.clone());
    }
    // PARTITION_AWARE: an unreachable agent's tasks are TASK_UNREACHABLE (not
    // terminal) instead of TASK_LOST, so we do not launch a second copy of a
    // task that may come back.
    let mut capability = v1::framework_info::Capability::new();
    capability.set_type(v1::framework_info::capability::Type::PARTITION_AWARE);
    info.capabilities.push(capability);
    let mut call = ProtoCall::new();
    if let Some(id) = framework_id {
        info.id = MessageField::some(framework_id_to_proto(id));
        call.framework_id = MessageField::some(framework_id_to_proto(id));
    }
    call.set_type(call::Type::SUBSCRIBE);
    let mut subscribe = call::Subscribe::new();
    subscribe.framework_info = MessageField::some(info);
    call.subscribe = MessageField::some(subscribe);
    encode(&call)
}

/// Encodes any other call for the given framework.
pub fn call_to_bytes(domain_call: &Call, framework_id: &FrameworkId) -> Vec<u8> {
    let mut call = ProtoCall::new();
    call.framework_id = MessageField::some(framework_id_to_proto(framework_id));
    match domain_call {
        Call::Launch {
            agent_id,
            offer_ids,
            tasks,
            refuse_seconds,
        } => {
            call.set_type(call::Type::ACCEPT);
            let mut accept = call::Accept::new();
            accept.offer_ids = offer_ids.iter().map(offer_id_to_proto).collect();
            let mut operation = v1::offer::Operation::new();
            operation.set_type(v1::offer::operation::Type::LAUNCH);
            let mut launch = v1::offer::operation::Launch::new();
            launch.task_infos = tasks.iter().map(|task| task_info(task, agent_id)).collect();
            operation.launch = MessageField::some(launch);
            accept.operations.push(operation);
            accept.filters = MessageField::some(filters(*refuse_seconds));
            call.accept = MessageField::some(accept);
        }
        Call::Decline {
            offer_ids,
            refuse_seconds,
        } => {
            call.set_type(call::Type::DECLINE);
            let mut decline = call::Decline::new();
            decline.offer_ids = offer_ids.iter().map(offer_id_to_proto).collect();
            decline.filters = MessageField::some(filters(*refuse_seconds));
            call.decline = MessageField::some(decline);
        }
        Call::Kill { task_id, agent_id } => {
            call.set_type(call::Type::KILL);
            let mut kill = call::Kill::new();
            kill.task_id = MessageField::some(task_id_to_proto(task_id));
            if let Some(agent_id) = agent_id {
                kill.agent_id = MessageField::some(agent_id_to_proto(agent_id));
            }
            call.kill = MessageField::some(kill);
        }
        Call::Acknowledge {
            agent_id,
            task_id,
            uuid,
        } => {
            call.set_type(call::Type::ACKNOWLEDGE);
            let mut acknowledge = call::Acknowledge::new();
            acknowledge.agent_id = MessageField::some(agent_id_to_proto(agent_id));
            acknowledge.task_id = MessageField::some(task_id_to_proto(task_id));
            acknowledge.set_uuid(uuid.clone());
            call.acknowledge = MessageField::some(acknowledge);
        }
        Call::Reconcile(tasks) => {
            call.set_type(call::Type::RECONCILE);
            let mut reconcile = call::Reconcile::new();
            for (task_id, agent_id) in tasks {
                let mut task = call::reconcile::Task::new();
                task.task_id = MessageField::some(task_id_to_proto(task_id));
                if let Some(agent_id) = agent_id {
                    task.agent_id = MessageField::some(agent_id_to_proto(agent_id));
                }
                reconcile.tasks.push(task);
            }
            call.reconcile = MessageField::some(reconcile);
        }
        Call::Suppress => {
            call.set_type(call::Type::SUPPRESS);
            call.suppress = MessageField::some(call::Suppress::new());
        }
        Call::Revive => {
            call.set_type(call::Type::REVIVE);
            call.revive = MessageField::some(call::Revive::new());
        }
        Call::Teardown => call.set_type(call::Type::TEARDOWN),
    }
    encode(&call)
}

/// Decodes one RecordIO record of the event stream.
pub fn event_from_bytes(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let event = ProtoEvent::parse_from_bytes(bytes).map_err(DecodeError::Protobuf)?;
    let event_type = event.type_.map(|it| it.enum_value());
    let decoded = match event_type {
        Some(Ok(event::Type::SUBSCRIBED)) => {
            let subscribed = event
                .subscribed
                .as_ref()
                .ok_or(DecodeError::Shape("SUBSCRIBED without subscribed"))?;
            Decoded::Subscribed {
                framework_id: FrameworkId(subscribed.framework_id.value().to_string()),
                heartbeat_seconds: subscribed.heartbeat_interval_seconds,
            }
        }
        Some(Ok(event::Type::HEARTBEAT)) => Decoded::Heartbeat,
        Some(Ok(event::Type::OFFERS)) => {
            let offers = event
                .offers
                .as_ref()
                .ok_or(DecodeError::Shape("OFFERS without offers"))?;
            Decoded::Offers(offers.offers.iter().map(offer_from_proto).collect())
        }
        Some(Ok(event::Type::RESCIND)) => {
            let rescind = event
                .rescind
                .as_ref()
                .ok_or(DecodeError::Shape("RESCIND without rescind"))?;
            Decoded::Rescind(OfferId(rescind.offer_id.value().to_string()))
        }
        Some(Ok(event::Type::UPDATE)) => {
            let update = event
                .update
                .as_ref()
                .ok_or(DecodeError::Shape("UPDATE without update"))?;
            Decoded::Update(task_update_from_proto(&update.status))
        }
        Some(Ok(event::Type::FAILURE)) => {
            let failure = event
                .failure
                .as_ref()
                .ok_or(DecodeError::Shape("FAILURE without failure"))?;
            match (&failure.agent_id.as_ref(), failure.executor_id.is_some()) {
                (Some(agent_id), false) => Decoded::AgentLost(AgentId(agent_id.value().into())),
                _ => Decoded::Ignored("FAILURE"),
            }
        }
        Some(Ok(event::Type::ERROR)) => {
            let error = event
                .error
                .as_ref()
                .ok_or(DecodeError::Shape("ERROR without error"))?;
            Decoded::Error(error.message().to_string())
        }
        Some(Ok(event::Type::MESSAGE)) => Decoded::Ignored("MESSAGE"),
        Some(Ok(event::Type::INVERSE_OFFERS)) => Decoded::Ignored("INVERSE_OFFERS"),
        Some(Ok(event::Type::RESCIND_INVERSE_OFFER)) => Decoded::Ignored("RESCIND_INVERSE_OFFER"),
        Some(Ok(event::Type::UPDATE_OPERATION_STATUS)) => {
            Decoded::Ignored("UPDATE_OPERATION_STATUS")
        }
        // Newer masters may add event types; ignoring them is what the API asks.
        Some(Ok(event::Type::UNKNOWN)) | Some(Err(_)) => Decoded::Ignored("UNKNOWN"),
        None => return Err(DecodeError::Shape("event without type")),
    };
    Ok(decoded)
}

/// Parses the docker-inspect JSON that the docker executor puts into the
/// `data` of TASK_RUNNING: an array with one object carrying `Id`, `Name` and
/// `State.Pid`. Anything else gives `None`, never a panic.
pub fn docker_info_from_inspect(data: &[u8]) -> Option<DockerInfo> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let container = value.as_array()?.first()?;
    let id = container.get("Id")?.as_str()?;
    let name = container
        .get("Name")
        .and_then(|it| it.as_str())
        .unwrap_or("");
    let pid = container
        .get("State")
        .and_then(|state| state.get("Pid"))
        .and_then(|pid| pid.as_u64())
        .unwrap_or(0);
    let name = name.strip_prefix('/').unwrap_or(name);
    Some(DockerInfo::new(id, name, pid))
}

fn encode(call: &ProtoCall) -> Vec<u8> {
    // Every required field is set by the builders above, so encoding cannot fail.
    call.write_to_bytes()
        .expect("calls built here carry every required field")
}

fn filters(refuse_seconds: f64) -> v1::Filters {
    let mut filters = v1::Filters::new();
    filters.set_refuse_seconds(refuse_seconds);
    filters
}

fn task_info(launch: &Launch, agent_id: &AgentId) -> v1::TaskInfo {
    let spec = &launch.spec;
    let mut task = v1::TaskInfo::new();
    task.set_name(launch.task_id.0.to_string());
    task.task_id = MessageField::some(task_id_to_proto(&launch.task_id));
    task.agent_id = MessageField::some(agent_id_to_proto(agent_id));
    task.resources = launch_resources(launch);
    // No `value` and shell=false: the arguments go to the image's ENTRYPOINT.
    let mut command = v1::CommandInfo::new();
    command.set_shell(false);
    command.arguments = spec.arguments.clone();
    task.command = MessageField::some(command);

    let mut docker = v1::container_info::DockerInfo::new();
    docker.set_image(spec.docker_image.clone());
    let network = spec.docker_network().map(|network| match network {
        NetworkMode::Host | NetworkMode::Default => v1::container_info::docker_info::Network::HOST,
        NetworkMode::Bridge => v1::container_info::docker_info::Network::BRIDGE,
        NetworkMode::None => v1::container_info::docker_info::Network::NONE,
    });
    if let Some(network) = network {
        docker.set_network(network);
    }
    // Left unset unless asked for: a TaskInfo without it is what every
    // existing task was launched with.
    if spec.privileged {
        docker.set_privileged(true);
    }
    for port in &spec.ports {
        let mut mapping = v1::container_info::docker_info::PortMapping::new();
        mapping.set_host_port(u32::from(port.host_port));
        mapping.set_container_port(u32::from(port.container_port));
        docker.port_mappings.push(mapping);
    }
    let mut container = v1::ContainerInfo::new();
    container.set_type(v1::container_info::Type::DOCKER);
    for volume in &spec.volumes {
        let mut proto_volume = v1::Volume::new();
        proto_volume.set_container_path(volume.container_path.clone());
        proto_volume.set_host_path(volume.host_path.clone());
        proto_volume.set_mode(match volume.mode {
            VolumeMode::ReadOnly => v1::volume::Mode::RO,
            VolumeMode::ReadWrite => v1::volume::Mode::RW,
        });
        container.volumes.push(proto_volume);
    }
    container.docker = MessageField::some(docker);
    task.container = MessageField::some(container);
    task
}

fn scalar_resource(name: &str, value: f64) -> v1::Resource {
    let mut scalar = v1::value::Scalar::new();
    scalar.set_value(value);
    let mut resource = v1::Resource::new();
    resource.set_name(name.to_string());
    resource.set_type(v1::value::Type::SCALAR);
    resource.scalar = MessageField::some(scalar);
    resource
}

fn offer_from_proto(offer: &v1::Offer) -> Offer {
    // Resources are grouped by the reservation they carry: the framework may
    // use only some of them, and must launch with each as it was offered.
    let mut pools: Vec<Pool> = Vec::new();
    for resource in &offer.resources {
        let reservation = reservation_from_proto(resource);
        let index = match pools
            .iter()
            .position(|pool| pool.reservation == reservation)
        {
            Some(index) => index,
            None => {
                pools.push(Pool {
                    reservation,
                    cpus: 0.0,
                    mem_mb: 0.0,
                    ports: Vec::new(),
                });
                pools.len() - 1
            }
        };
        let pool = &mut pools[index];
        match (resource.name(), resource.type_.map(|it| it.enum_value())) {
            ("cpus", Some(Ok(v1::value::Type::SCALAR))) => pool.cpus += resource.scalar.value(),
            ("mem", Some(Ok(v1::value::Type::SCALAR))) => pool.mem_mb += resource.scalar.value(),
            ("ports", Some(Ok(v1::value::Type::RANGES))) => {
                pool.ports.extend(
                    resource
                        .ranges
                        .range
                        .iter()
                        .map(|range| (range.begin(), range.end())),
                );
            }
            _ => {}
        }
    }
    for pool in &mut pools {
        pool.ports.sort_unstable();
    }
    let attributes: BTreeMap<String, String> = offer
        .attributes
        .iter()
        .filter(|attribute| {
            attribute.type_.map(|it| it.enum_value()) == Some(Ok(v1::value::Type::TEXT))
        })
        .map(|attribute| {
            (
                attribute.name().to_string(),
                attribute.text.value().to_string(),
            )
        })
        .collect();
    Offer {
        id: OfferId(offer.id.value().to_string()),
        agent_id: AgentId(offer.agent_id.value().into()),
        hostname: offer.hostname().to_string(),
        pools,
        attributes,
    }
}

/// The reservation of one offered resource. The refinement-format stack
/// wins when present (its last entry names the role); otherwise the
/// pre-refinement `role` (default `*`) and `reservation`.
fn reservation_from_proto(resource: &v1::Resource) -> Reservation {
    let refined: Vec<ReservationInfo> = resource
        .reservations
        .iter()
        .map(reservation_info_from_proto)
        .collect();
    let role = match refined.last() {
        Some(last) => last.role.clone().unwrap_or_default(),
        None => resource.role().to_string(),
    };
    Reservation {
        role,
        dynamic: resource
            .reservation
            .as_ref()
            .map(reservation_info_from_proto),
        refined,
    }
}

fn reservation_info_from_proto(info: &v1::resource::ReservationInfo) -> ReservationInfo {
    ReservationInfo {
        kind: info.type_.map(|kind| kind.value()),
        role: info.role.clone(),
        principal: info.principal.clone(),
        labels: info
            .labels
            .labels
            .iter()
            .map(|label| (label.key().to_string(), label.value.clone()))
            .collect(),
    }
}

fn reservation_info_to_proto(info: &ReservationInfo) -> v1::resource::ReservationInfo {
    let mut proto = v1::resource::ReservationInfo::new();
    proto.type_ = info.kind.map(protobuf::EnumOrUnknown::from_i32);
    proto.role = info.role.clone();
    proto.principal = info.principal.clone();
    if !info.labels.is_empty() {
        let mut labels = v1::Labels::new();
        for (key, value) in &info.labels {
            let mut label = v1::Label::new();
            label.set_key(key.clone());
            label.value = value.clone();
            labels.labels.push(label);
        }
        proto.labels = MessageField::some(labels);
    }
    proto
}

/// Marks `resource` with `reservation` exactly as it was offered. The
/// unreserved role is left at its default (`*`).
fn reserve(resource: &mut v1::Resource, reservation: &Reservation) {
    if !reservation.is_unreserved() && reservation.refined.is_empty() {
        resource.set_role(reservation.role.clone());
    }
    if let Some(dynamic) = &reservation.dynamic {
        resource.reservation = MessageField::some(reservation_info_to_proto(dynamic));
    }
    resource.reservations = reservation
        .refined
        .iter()
        .map(reservation_info_to_proto)
        .collect();
}

/// The TaskInfo resources of a launch: the placed pieces with their
/// reservations, or (no pieces) unreserved resources as the spec asks.
fn launch_resources(launch: &Launch) -> Vec<v1::Resource> {
    let spec = &launch.spec;
    if launch.resources.is_empty() {
        let ports: Vec<(u64, u64)> = spec
            .ports
            .iter()
            .map(|port| (u64::from(port.host_port), u64::from(port.host_port)))
            .collect();
        let mut resources = vec![
            scalar_resource("cpus", spec.launch_cpus()),
            scalar_resource("mem", spec.mem_mb as f64),
        ];
        if !ports.is_empty() {
            resources.push(ranges_resource("ports", &ports));
        }
        return resources;
    }
    launch
        .resources
        .iter()
        .map(|piece| {
            let mut resource = match &piece.amount {
                Amount::Scalar(value) => scalar_resource(piece.name, *value),
                Amount::Ranges(ranges) => ranges_resource(piece.name, ranges),
            };
            reserve(&mut resource, &piece.reservation);
            resource
        })
        .collect()
}

fn ranges_resource(name: &str, ranges: &[(u64, u64)]) -> v1::Resource {
    let mut proto_ranges = v1::value::Ranges::new();
    for &(begin, end) in ranges {
        let mut range = v1::value::Range::new();
        range.set_begin(begin);
        range.set_end(end);
        proto_ranges.range.push(range);
    }
    let mut resource = v1::Resource::new();
    resource.set_name(name.to_string());
    resource.set_type(v1::value::Type::RANGES);
    resource.ranges = MessageField::some(proto_ranges);
    resource
}

fn task_update_from_proto(status: &v1::TaskStatus) -> TaskUpdate {
    use v1::task_status::Reason;
    let state = match status.state.map(|it| it.enum_value()) {
        Some(Ok(state)) => task_state_from_proto(state),
        _ => TaskState::Unknown,
    };
    let reason = match status.reason.map(|it| it.enum_value()) {
        Some(Ok(Reason::REASON_INVALID_OFFERS)) => StatusReason::InvalidOffers,
        Some(Ok(Reason::REASON_RECONCILIATION)) => StatusReason::Reconciliation,
        Some(Ok(Reason::REASON_AGENT_REMOVED))
        | Some(Ok(Reason::REASON_AGENT_REMOVED_BY_OPERATOR)) => StatusReason::AgentRemoved,
        Some(Ok(Reason::REASON_AGENT_DISCONNECTED)) => StatusReason::AgentDisconnected,
        _ => StatusReason::Other,
    };
    let docker = match (state, &status.data) {
        (TaskState::Running, Some(data)) => docker_info_from_inspect(data),
        _ => None,
    };
    // The generated enum's Debug is the proto name; a number this build
    // does not know is shown as such.
    let reason_name = match status.reason.map(|it| it.enum_value()) {
        Some(Ok(known)) => format!("{known:?}"),
        Some(Err(number)) => format!("reason {number}"),
        None => String::new(),
    };
    TaskUpdate {
        task_id: TaskId(status.task_id.value().into()),
        state,
        reason,
        reason_name,
        // Kept on the task, persisted, listed, in its history and events:
        // cut where it enters (a master may send up to `MAX_RECORD`).
        message: notice::clip(status.message()),
        agent_id: status
            .agent_id
            .as_ref()
            .map(|id| AgentId(id.value().into())),
        uuid: status.uuid.clone().filter(|uuid| !uuid.is_empty()),
        docker,
    }
}

fn task_state_from_proto(state: v1::TaskState) -> TaskState {
    use v1::TaskState as P;
    match state {
        P::TASK_STAGING => TaskState::Staging,
        P::TASK_STARTING => TaskState::Starting,
        P::TASK_RUNNING => TaskState::Running,
        P::TASK_KILLING => TaskState::Killing,
        P::TASK_FINISHED => TaskState::Finished,
        P::TASK_FAILED => TaskState::Failed,
        P::TASK_KILLED => TaskState::Killed,
        P::TASK_ERROR => TaskState::Error,
        P::TASK_LOST => TaskState::Lost,
        P::TASK_DROPPED => TaskState::Dropped,
        P::TASK_UNREACHABLE => TaskState::Unreachable,
        P::TASK_GONE => TaskState::Gone,
        P::TASK_GONE_BY_OPERATOR => TaskState::GoneByOperator,
        P::TASK_UNKNOWN => TaskState::Unknown,
    }
}

fn framework_id_to_proto(id: &FrameworkId) -> v1::FrameworkID {
    let mut proto = v1::FrameworkID::new();
    proto.set_value(id.0.to_string());
    proto
}

fn offer_id_to_proto(id: &OfferId) -> v1::OfferID {
    let mut proto = v1::OfferID::new();
    proto.set_value(id.0.to_string());
    proto
}

fn agent_id_to_proto(id: &AgentId) -> v1::AgentID {
    let mut proto = v1::AgentID::new();
    proto.set_value(id.0.to_string());
    proto
}

fn task_id_to_proto(id: &TaskId) -> v1::TaskID {
    let mut proto = v1::TaskID::new();
    proto.set_value(id.0.to_string());
    proto
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::model::{Allocation, TaskSpec};
    use std::sync::Arc;

    fn resource(
        name: &str,
        value: f64,
        role: Option<&str>,
        principal: Option<&str>,
    ) -> v1::Resource {
        let mut resource = scalar_resource(name, value);
        if let Some(role) = role {
            resource.set_role(role.to_string());
        }
        if let Some(principal) = principal {
            let mut info = v1::resource::ReservationInfo::new();
            info.set_principal(principal.to_string());
            resource.reservation = MessageField::some(info);
        }
        resource
    }

    /// See: review of issue 10. A status message of megabytes is kept on
    /// the task and shown everywhere: only its first `MAX_EVENT_TEXT` bytes.
    #[test]
    fn a_long_status_message_is_cut_where_it_enters() {
        let mut status = v1::TaskStatus::new();
        status.task_id = MessageField::some(task_id_to_proto(&TaskId("t-1".into())));
        status.set_state(v1::TaskState::TASK_FAILED);
        status.set_message("é".repeat(notice::MAX_EVENT_TEXT));
        let update = task_update_from_proto(&status);
        assert_eq!(update.message.len(), notice::MAX_EVENT_TEXT - 1);
        assert!(update.message.ends_with(notice::CLIPPED));
        status.set_message("Container exited with status 1".to_string());
        let update = task_update_from_proto(&status);
        assert_eq!(update.message, "Container exited with status 1");
    }

    /// Offered resources keep their reservation, and a launch on them asks
    /// for each piece exactly as offered (a real master answers TASK_ERROR
    /// to a TaskInfo asking `*` for reserved resources).
    #[test]
    fn reservations_survive_from_offer_to_task_info() {
        let mut offer = v1::Offer::new();
        offer.id = MessageField::some(offer_id_to_proto(&OfferId("o1".to_string())));
        offer.agent_id = MessageField::some(agent_id_to_proto(&AgentId("a1".into())));
        offer.set_hostname("slave1".to_string());
        offer.resources = vec![
            resource("cpus", 1.0, None, None),
            resource("cpus", 2.0, Some("eng"), None),
            resource("mem", 512.0, Some("eng"), Some("ops")),
            resource("mem", 256.0, None, None),
        ];
        let decoded = offer_from_proto(&offer);
        let shown: Vec<String> = decoded
            .pools
            .iter()
            .map(|pool| {
                format!(
                    "{}{} cpus={} mem={}",
                    pool.reservation.role,
                    pool.reservation
                        .dynamic
                        .as_ref()
                        .and_then(|info| info.principal.as_deref())
                        .map(|principal| format!("/{principal}"))
                        .unwrap_or_default(),
                    pool.cpus,
                    pool.mem_mb
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "* cpus=1 mem=256",
                "eng cpus=2 mem=0",
                "eng/ops cpus=0 mem=512"
            ]
        );

        let piece = |name, value, pool: usize| Allocation {
            name,
            amount: Amount::Scalar(value),
            reservation: decoded.pools[pool].reservation.clone(),
        };
        let launch = Launch {
            task_id: TaskId("t-1".into()),
            spec: Arc::new(TaskSpec {
                cpus: Some(2.5),
                ..TaskSpec::for_test("t", "image", 600)
            }),
            resources: vec![
                piece("cpus", 2.0, 1),
                piece("cpus", 0.5, 0),
                piece("mem", 512.0, 2),
                piece("mem", 88.0, 0),
            ],
        };
        let task = task_info(&launch, &AgentId("a1".into()));
        let asked: Vec<String> = task
            .resources
            .iter()
            .map(|resource| {
                format!(
                    "{}={} role={} principal={}",
                    resource.name(),
                    resource.scalar.value(),
                    resource.role(),
                    resource.reservation.principal()
                )
            })
            .collect();
        assert_eq!(
            asked,
            [
                "cpus=2 role=eng principal=",
                "cpus=0.5 role=* principal=",
                "mem=512 role=eng principal=ops",
                "mem=88 role=* principal=",
            ]
        );
        // The unreserved pieces leave `role` unset: the master's default `*`.
        assert!(!task.resources[1].has_role());
        // Not asked for: not set at all, as before the field existed.
        assert!(!task.container.docker.has_privileged());

        let mut privileged = launch.clone();
        Arc::make_mut(&mut privileged.spec).privileged = true;
        let task = task_info(&privileged, &AgentId("a1".into()));
        assert!(task.container.docker.privileged());
        // It reaches the wire: field 4 of DockerInfo.
        let bytes = task.write_to_bytes().expect("encodes");
        let decoded = v1::TaskInfo::parse_from_bytes(&bytes).expect("decodes");
        assert!(decoded.container.docker.privileged());
    }

    #[test]
    fn docker_inspect_data_gives_id_name_and_pid() {
        let check = |data: &str, expected: Option<(&str, &str, u64)>| {
            let info = docker_info_from_inspect(data.as_bytes());
            let got = info.as_ref().map(|it| (it.id(), it.name(), it.pid));
            assert_eq!(got, expected, "{data}");
        };
        check(
            r#"[{"Id":"abc","Name":"/mesos-x","State":{"Pid":42}}]"#,
            Some(("abc", "mesos-x", 42)),
        );
        check(r#"[{"Id":"abc"}]"#, Some(("abc", "", 0)));
        check(r#"[{"Id":"é","Name":"ü"}]"#, Some(("é", "ü", 0)));
        check(r#"[{"Name":"/x"}]"#, None);
        check("[]", None);
        check("not json", None);
        // Where the id ends is part of the value.
        assert_ne!(DockerInfo::new("ab", "c", 1), DockerInfo::new("a", "bc", 1));
    }
}
