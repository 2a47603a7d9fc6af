//! `mesos-sim`: a simulated Mesos master that speaks the v1 scheduler HTTP
//! API as the real one does (reference §1, §4, §5, §7): protobuf or JSON
//! bodies, the real status codes and texts, stream ids, RecordIO in one HTTP
//! chunk per record, heartbeats, redirects from a non-leader, offers per
//! agent, reliable per-task update streams, reconciliation and failover.
//! Plus control endpoints under `/sim/` for fault tests.
//!
//! Threads: `sim-http-N` workers parse and answer requests; each subscription
//! gets a `sim-stream` writer thread fed by a queue of at most
//! `STREAM_CAPACITY` events; `sim-tick`
//! drives time (heartbeats, offers, retries). `master::Core` holds all state
//! behind one mutex and does no I/O.
//!
//! This is the other side of the wire, so unlike the scheduler it works with
//! the generated protobuf types directly.

pub mod json;
pub mod master;
pub mod resources;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use protobuf::{Message, MessageFull};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::mesos::proto::scheduler::{call, Call, Event};
use crate::mesos::recordio;
use master::{Core, Out, Stream, Timing};

/// The Mesos version the simulator claims (`GET /version`, MasterInfo).
pub const MESOS_VERSION: &str = "1.11.0";

/// HTTP worker threads.
pub const HTTP_WORKERS: usize = 8;

/// Largest call body accepted; larger ones get 413.
pub const MAX_CALL_BODY: usize = 16 * 1024 * 1024;

/// Largest control-endpoint body.
pub const MAX_CONTROL_BODY: usize = 1024 * 1024;

/// Events queued for one subscriber before it counts as not reading and is
/// dropped. A real master queues without bound; the simulator must at least
/// queue what it sends at once itself: an implicit reconciliation answers
/// every task of the framework in one go (100,000 at the scale the bench
/// measures), and the explicit one after a resubscription as many again.
/// The queue grows with use (an unbounded channel checked against this).
pub const STREAM_CAPACITY: usize = 1_048_576;

/// How often `sim-tick` wakes up.
pub const TICK: Duration = Duration::from_millis(20);

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// One simulated agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    pub hostname: String,
    pub cpus: f64,
    pub mem_mb: f64,
    /// Inclusive port ranges.
    pub ports: Vec<(u64, u64)>,
    /// TEXT attributes, e.g. ("nodetype", "lab").
    pub attributes: Vec<(String, String)>,
    /// cpus and mem statically reserved for one role, on top of `cpus` and
    /// `mem_mb` (as the agent's `--resources` `cpus(role):N`).
    pub reserved: Option<Reservation>,
}

/// A static reservation: offered only to frameworks of `role`, with `role`
/// set on the offered resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub role: String,
    pub cpus: f64,
    pub mem_mb: f64,
}

/// Ports every lab agent offers.
pub const LAB_PORTS: (u64, u64) = (31000, 32000);

/// The Charmander lab: slave1 for analytics, slave2 and slave3 for experiments.
pub fn charmander_lab() -> Vec<AgentSpec> {
    [
        ("slave1", "analytics", 3.0, 2048.0),
        ("slave2", "lab", 2.0, 1024.0),
        ("slave3", "lab", 2.0, 1024.0),
    ]
    .into_iter()
    .map(|(hostname, node_type, cpus, mem_mb)| AgentSpec {
        hostname: hostname.to_string(),
        cpus,
        mem_mb,
        ports: vec![LAB_PORTS],
        attributes: vec![
            ("nodetype".to_string(), node_type.to_string()),
            ("nodename".to_string(), hostname.to_string()),
        ],
        reserved: None,
    })
    .collect()
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: String,
    pub agents: Vec<AgentSpec>,
    pub heartbeat: Duration,
    /// Makes this a non-leading master that redirects to that host:port.
    pub redirect_to: Option<String>,
    pub allocation_interval: Duration,
    /// How long an agent waits for an acknowledgement before resending.
    pub update_retry: Duration,
    /// How long a task stays STARTING before it runs.
    pub task_start_delay: Duration,
    /// (principal, secret) pairs: with any, every scheduler request needs
    /// HTTP basic auth (`--authenticate_http_frameworks`).
    pub credentials: Vec<(String, String)>,
    /// How long after start no leader is elected: scheduler requests get 503
    /// "No leader elected" until then.
    pub leader_after: Duration,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            listen: "127.0.0.1:5050".to_string(),
            agents: charmander_lab(),
            heartbeat: Duration::from_secs(15),
            redirect_to: None,
            allocation_interval: Duration::from_secs(1),
            update_retry: Duration::from_secs(10),
            task_start_delay: Duration::from_millis(0),
            credentials: Vec::new(),
            leader_after: Duration::ZERO,
        }
    }
}

/// A running simulated master.
pub struct Master {
    addr: SocketAddr,
    server: Arc<Server>,
    core: Arc<Mutex<Core>>,
    threads: Vec<JoinHandle<()>>,
    stop: Option<Sender<()>>,
}

struct Shared {
    core: Arc<Mutex<Core>>,
    redirect_to: Option<String>,
    credentials: Vec<(String, String)>,
    /// When this master is (or becomes) the elected leader; `None` while no
    /// leader is elected until `/sim/leader/elect`.
    elected_at: Mutex<Option<Instant>>,
    /// Faults armed through `/sim/calls/faults`, oldest first.
    faults: Mutex<Vec<CallFault>>,
}

/// Faults armed at once; more are refused.
pub const MAX_CALL_FAULTS: usize = 64;

/// What a fault does to a call that would otherwise be carried out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FaultKind {
    /// Carried out, but the answer is lost: the client reads a broken
    /// response instead of 202, an error after its request was sent.
    LoseResponse,
    /// Not carried out, and the client reads a broken response.
    DropRequest,
    /// Not carried out: 503, as from a master that cannot serve it now.
    Unavailable,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::LoseResponse => "lose-response",
            FaultKind::DropRequest => "drop-request",
            FaultKind::Unavailable => "unavailable",
        }
    }
}

/// A fault for the next `count` calls of one type (`*`: every type but SUBSCRIBE).
#[derive(Clone, Debug)]
struct CallFault {
    call: String,
    kind: FaultKind,
    count: u64,
}

/// Bytes written instead of an answer by LoseResponse and DropRequest: not
/// HTTP, so any client fails reading the status line.
const BROKEN_RESPONSE: &[u8] = b"BROKEN\r\n\r\n";

impl Shared {
    /// The fault for a call of `kind`, if one is armed; uses it up.
    fn take_fault(&self, kind: &str) -> Option<FaultKind> {
        let mut faults = self
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let position = faults
            .iter()
            .position(|f| f.call == kind || f.call == "*")?;
        let fault = &mut faults[position];
        fault.count -= 1;
        let kind = fault.kind;
        if fault.count == 0 {
            faults.remove(position);
        }
        Some(kind)
    }

    fn faults(&self) -> MutexGuard<'_, Vec<CallFault>> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn elected(&self, now: Instant) -> bool {
        let elected_at = *self
            .elected_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        elected_at.is_some_and(|at| now >= at)
    }

    fn set_elected_at(&self, at: Option<Instant>) {
        *self
            .elected_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = at;
    }
}

impl Master {
    pub fn start(config: SimConfig) -> io::Result<Master> {
        // Accepted sockets get a send timeout: a subscriber that stops
        // reading is dropped instead of blocking its stream writer for ever.
        let server = crate::http::serve(&config.listen, &crate::http::SIM, "mesos-sim")?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("mesos-sim: not an IP listener"))?;
        let server = Arc::new(server);
        let now = Instant::now();
        let timing = Timing {
            heartbeat: config.heartbeat,
            allocation_interval: config.allocation_interval,
            update_retry: config.update_retry,
            task_start_delay: config.task_start_delay,
        };
        let mut core = Core::new(timing, addr, now);
        for agent in config.agents {
            core.add_agent(agent, now).map_err(io::Error::other)?;
        }
        let core = Arc::new(Mutex::new(core));
        let shared = Arc::new(Shared {
            core: core.clone(),
            redirect_to: config.redirect_to,
            credentials: config.credentials,
            elected_at: Mutex::new(Some(now + config.leader_after)),
            faults: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        for n in 0..HTTP_WORKERS {
            let (server, shared) = (server.clone(), shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sim-http-{n}"))
                    .spawn(move || {
                        // Bodies over `http::SIM.max_buffered_body` are read
                        // here, each read within its read timeout.
                        while let Ok(request) = server.recv() {
                            handle(&shared, request);
                        }
                    })?,
            );
        }
        let (stop, stopped) = bounded::<()>(0);
        let ticker_core = core.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sim-tick".to_string())
                .spawn(move || {
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(TICK)
                    {
                        lock(&ticker_core).tick(Instant::now());
                    }
                })?,
        );
        log::info!("mesos-sim listening on {addr}");
        Ok(Master {
            addr,
            server,
            core,
            threads,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if self.stop.take().is_none() {
            return;
        }
        lock(&self.core).drop_streams(Instant::now());
        for _ in 0..HTTP_WORKERS {
            self.server.unblock();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// A poisoned lock still holds consistent state (every mutation completes
/// before anything can panic), so keep serving.
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An HTTP answer with a plain-text or JSON body.
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    /// Write `BROKEN_RESPONSE` instead (a call fault).
    broken: bool,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            broken: false,
        }
    }

    fn broken() -> Reply {
        Reply {
            broken: true,
            ..Reply::accepted()
        }
    }

    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            content_type: JSON,
            headers: Vec::new(),
            broken: false,
        }
    }

    fn accepted() -> Reply {
        Reply {
            status: 202,
            body: String::new(),
            content_type: "",
            headers: Vec::new(),
            broken: false,
        }
    }
}

fn handle(shared: &Shared, mut request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let reply =
        if path == crate::mesos::client::SCHEDULER_PATH || path == "/master/api/v1/scheduler" {
            match scheduler(shared, &mut request) {
                Ok(Streaming {
                    stream_id,
                    json,
                    events,
                }) => {
                    start_stream(shared, request, stream_id, json, events);
                    return;
                }
                Err(reply) => reply,
            }
        } else {
            control(shared, &mut request, &path)
        };
    if reply.broken {
        let mut writer = request.into_writer();
        let _ = writer.write_all(BROKEN_RESPONSE);
        let _ = writer.flush();
        return;
    }
    // Exactly the headers a master sends: a 202 has no Content-Type at all.
    let mut headers: Vec<Header> = reply
        .headers
        .iter()
        .filter_map(|(name, value)| header(name, value))
        .collect();
    if !reply.content_type.is_empty() {
        headers.extend(header("Content-Type", reply.content_type));
    }
    let body = reply.body.into_bytes();
    let length = body.len();
    let response = Response::new(
        StatusCode(reply.status),
        headers,
        std::io::Cursor::new(body),
        Some(length),
        None,
    );
    let _ = request.respond(response);
}

/// A header, or `None` (logged) when the value cannot be one, e.g. a
/// Location built from a request target that is not ASCII.
fn header(name: &str, value: &str) -> Option<Header> {
    let header = Header::from_bytes(name.as_bytes(), value.as_bytes()).ok();
    if header.is_none() {
        log::warn!("sim: header {name} left out: value is not a valid header value");
    }
    header
}

fn request_header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Reply::text(400, format!("Failed to read the request body: {e}")))?;
    if body.len() > max {
        return Err(Reply::text(
            413,
            format!("Request body larger than {max} bytes"),
        ));
    }
    Ok(body)
}

/// A SUBSCRIBE that passed HTTP validation: the stream to open.
struct Streaming {
    stream_id: String,
    json: bool,
    events: Receiver<Out>,
}

/// `/api/v1/scheduler`, checked in the real master's order.
fn scheduler(shared: &Shared, request: &mut Request) -> Result<Streaming, Reply> {
    let principal =
        authenticate(shared, request_header(request, "Authorization")).inspect_err(|_| {
            // Shown in /sim/state as calls["UNAUTHENTICATED"].
            lock(&shared.core).count_call("UNAUTHENTICATED");
        })?;
    // A master that is not the leader redirects to the one it knows, or
    // answers 503 while none is elected (`Master::Http::redirect`).
    if !shared.elected(Instant::now()) {
        return Err(Reply::text(503, "No leader elected"));
    }
    if let Some(leader) = &shared.redirect_to {
        let mut reply = Reply::text(307, "");
        reply
            .headers
            .push(("Location", format!("//{leader}{}", request.url())));
        return Err(reply);
    }
    if *request.method() != Method::Post {
        let mut reply = Reply::text(
            405,
            format!(
                "Expecting one of {{ 'POST' }}, but received '{}'",
                request.method()
            ),
        );
        reply.headers.push(("Allow", "POST".to_string()));
        return Err(reply);
    }
    let Some(content_type) = request_header(request, "Content-Type").map(str::to_string) else {
        return Err(Reply::text(400, "Expecting 'Content-Type' to be present"));
    };
    let body = read_body(request, MAX_CALL_BODY)?;
    let parsed = parse_call(&content_type, &body)?;
    let kind = parsed.call.type_.map_or("UNSET".to_string(), |t| {
        format!("{:?}", t.enum_value_or(call::Type::UNKNOWN))
    });
    lock(&shared.core).count_call(&kind);
    log::debug!("sim: call {kind}");
    if let Err(message) =
        validate(&parsed).and_then(|()| check_principal(&parsed.call, principal.as_deref()))
    {
        return Err(Reply::text(
            400,
            format!("Failed to validate scheduler::Call: {message}"),
        ));
    }
    let call = parsed.call;
    let stream_header = request_header(request, "Mesos-Stream-Id").map(str::to_string);
    if call.type_() == call::Type::SUBSCRIBE {
        let json = negotiate(request_header(request, "Accept"))?;
        if stream_header.is_some() {
            return Err(Reply::text(
                400,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            ));
        }
        let (tx, events) = unbounded();
        let mut core = lock(&shared.core);
        let stream_id = core.new_stream_id();
        let mut subscribe = call.subscribe.into_option().unwrap_or_default();
        // An authenticated framework that names no principal gets its own.
        if let Some(principal) = principal.as_ref() {
            let info = subscribe.framework_info.mut_or_insert_default();
            if !info.has_principal() {
                info.set_principal(principal.clone());
            }
        }
        core.subscribe(
            subscribe,
            Stream {
                id: stream_id.clone(),
                tx,
            },
            Instant::now(),
        );
        return Ok(Streaming {
            stream_id,
            json,
            events,
        });
    }
    let framework_id = call.framework_id.value().to_string();
    let mut core = lock(&shared.core);
    core.authorize_call(
        &framework_id,
        principal.as_deref(),
        stream_header.as_deref(),
    )
    .map_err(|(status, message)| Reply::text(status, message))?;
    let fault = shared.take_fault(&kind);
    match fault {
        Some(FaultKind::Unavailable) => {
            return Err(Reply::text(503, "Master has not finished recovery"))
        }
        Some(FaultKind::DropRequest) => return Err(Reply::broken()),
        Some(FaultKind::LoseResponse) | None => {}
    }
    let now = Instant::now();
    let id = framework_id.as_str();
    match call.type_() {
        call::Type::TEARDOWN => core.teardown(id),
        call::Type::ACCEPT => core.accept(id, call.accept.unwrap_or_default(), now),
        call::Type::DECLINE => core.decline(id, call.decline.unwrap_or_default(), now),
        call::Type::REVIVE => core.revive(id, now),
        call::Type::SUPPRESS => core.suppress(id),
        call::Type::KILL => core.kill(id, call.kill.unwrap_or_default(), now),
        call::Type::ACKNOWLEDGE => core.acknowledge(id, call.acknowledge.unwrap_or_default(), now),
        call::Type::RECONCILE => core.reconcile(id, call.reconcile.unwrap_or_default(), now),
        call::Type::UNKNOWN => return Err(Reply::text(501, "")),
        // Custom executors, messages and the rest have no effect in the lab.
        _ => {}
    }
    if fault == Some(FaultKind::LoseResponse) {
        return Err(Reply::broken());
    }
    Err(Reply::accepted())
}

/// Sub-messages of calls the simulator has no protobuf type for: the call
/// type, the field's JSON name and its field number in the real `Call`. A
/// call of that type without it is refused as the real master refuses it.
const UNTYPED_SUB_MESSAGES: [(call::Type, &str, u32); 6] = [
    (
        call::Type::ACCEPT_INVERSE_OFFERS,
        "accept_inverse_offers",
        13,
    ),
    (
        call::Type::DECLINE_INVERSE_OFFERS,
        "decline_inverse_offers",
        14,
    ),
    (
        call::Type::ACKNOWLEDGE_OPERATION_STATUS,
        "acknowledge_operation_status",
        17,
    ),
    (call::Type::RECONCILE_OPERATIONS, "reconcile_operations", 18),
    (call::Type::REQUEST, "request", 11),
    (call::Type::UPDATE_FRAMEWORK, "update_framework", 19),
];

/// A parsed call, and which of the `UNTYPED_SUB_MESSAGES` its body carried.
struct Parsed {
    call: Call,
    untyped: Vec<&'static str>,
}

fn parse_call(content_type: &str, body: &[u8]) -> Result<Parsed, Reply> {
    match content_type {
        PROTOBUF => {
            let call = Call::parse_from_bytes(body)
                .map_err(|_| Reply::text(400, "Failed to parse body into Call protobuf"))?;
            // Fields this proto lacks stay in the unknown fields.
            let unknown = call.special_fields.unknown_fields();
            let untyped = UNTYPED_SUB_MESSAGES
                .iter()
                .filter(|(_, _, number)| unknown.get(*number).is_some())
                .map(|(_, name, _)| *name)
                .collect();
            Ok(Parsed { call, untyped })
        }
        JSON => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| Reply::text(400, format!("Failed to parse body into JSON: {e}")))?;
            let message = json::from_json(&Call::descriptor(), &value).map_err(|e| {
                Reply::text(
                    400,
                    format!("Failed to convert JSON into Call protobuf: {e}"),
                )
            })?;
            let call = message
                .downcast_box::<Call>()
                .map(|call| *call)
                .map_err(|_| Reply::text(500, "internal error: not a Call"))?;
            let untyped = UNTYPED_SUB_MESSAGES
                .iter()
                .filter(|(_, name, _)| value[*name].is_object())
                .map(|(_, name, _)| *name)
                .collect();
            Ok(Parsed { call, untyped })
        }
        _ => Err(Reply::text(
            415,
            format!("Expecting 'Content-Type' of {JSON} or {PROTOBUF}"),
        )),
    }
}

/// The master's `validation::scheduler::call::validate`, for the calls we know.
fn validate(parsed: &Parsed) -> Result<(), String> {
    let call = &parsed.call;
    // An enum number this protocol does not know is dropped by the parser: unset.
    let Some(kind) = call.type_.and_then(|kind| kind.enum_value().ok()) else {
        return Err("Expecting 'type' to be present".to_string());
    };
    if kind == call::Type::SUBSCRIBE {
        let Some(subscribe) = call.subscribe.as_ref() else {
            return Err("Expecting 'subscribe' to be present".to_string());
        };
        let info_id = subscribe.framework_info.id.as_ref().map(|id| id.value());
        let call_id = call.framework_id.as_ref().map(|id| id.value());
        if info_id != call_id {
            return Err("'framework_id' differs from 'subscribe.framework_info.id'".to_string());
        }
        return Ok(());
    }
    if call.framework_id.is_none() {
        return Err("Expecting 'framework_id' to be present".to_string());
    }
    let present = match kind {
        call::Type::ACCEPT => call.accept.is_some(),
        call::Type::DECLINE => call.decline.is_some(),
        call::Type::KILL => call.kill.is_some(),
        call::Type::SHUTDOWN => call.shutdown.is_some(),
        call::Type::ACKNOWLEDGE => call.acknowledge.is_some(),
        call::Type::RECONCILE => call.reconcile.is_some(),
        call::Type::MESSAGE => call.message.is_some(),
        _ => UNTYPED_SUB_MESSAGES
            .iter()
            .find(|(untyped, _, _)| *untyped == kind)
            .is_none_or(|(_, name, _)| parsed.untyped.contains(name)),
    };
    if !present {
        return Err(format!(
            "Expecting '{}' to be present",
            format!("{kind:?}").to_lowercase()
        ));
    }
    if kind == call::Type::ACKNOWLEDGE && !valid_uuid(call.acknowledge.uuid()) {
        return Err("Not a valid UUID".to_string());
    }
    Ok(())
}

/// What the master's UUID parser accepts: 16 bytes of a known UUID version (1-5).
fn valid_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 16 && (1..=5).contains(&(bytes[6] >> 4))
}

/// With credentials configured: the authenticated principal, or 401.
fn authenticate(shared: &Shared, header: Option<&str>) -> Result<Option<String>, Reply> {
    if shared.credentials.is_empty() {
        return Ok(None);
    }
    let decoded = header
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| crate::base64::decode(encoded.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let pair = decoded.as_deref().and_then(|text| text.split_once(':'));
    match pair {
        Some((principal, secret))
            if shared
                .credentials
                .iter()
                .any(|(p, s)| p == principal && s == secret) =>
        {
            Ok(Some(principal.to_string()))
        }
        _ => {
            let mut reply = Reply::text(401, "");
            reply.headers.push((
                "WWW-Authenticate",
                "Basic realm=\"mesos-master-scheduler\"".to_string(),
            ));
            Err(reply)
        }
    }
}

/// A SUBSCRIBE may not claim another principal than the one that authenticated.
fn check_principal(call: &Call, principal: Option<&str>) -> Result<(), String> {
    let Some(principal) = principal else {
        return Ok(());
    };
    let claimed = call
        .subscribe
        .as_ref()
        .and_then(|s| s.framework_info.principal.as_deref());
    match claimed {
        Some(claimed) if claimed != principal => Err(format!(
            "Authenticated principal '{principal}' does not match principal '{claimed}' set in `FrameworkInfo`"
        )),
        _ => Ok(()),
    }
}

/// JSON whenever JSON is acceptable (a missing Accept, `*/*` and
/// `application/*` included), protobuf only when asked for explicitly.
fn negotiate(accept: Option<&str>) -> Result<bool, Reply> {
    let Some(accept) = accept else {
        return Ok(true);
    };
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    if types
        .iter()
        .any(|t| matches!(*t, JSON | "application/*" | "*/*"))
    {
        Ok(true)
    } else if types.contains(&PROTOBUF) {
        Ok(false)
    } else {
        Err(Reply::text(
            406,
            format!("Expecting 'Accept' to allow '{PROTOBUF}' or '{JSON}'"),
        ))
    }
}

/// Takes over the socket and hands it to a `sim-stream` writer thread.
fn start_stream(
    shared: &Shared,
    request: Request,
    stream_id: String,
    json: bool,
    events: Receiver<Out>,
) {
    let writer = request.into_writer();
    let core = shared.core.clone();
    let spawned = std::thread::Builder::new()
        .name("sim-stream".to_string())
        .spawn(move || {
            if write_stream(writer, &stream_id, json, &events).is_err() {
                lock(&core).stream_closed(&stream_id, Instant::now());
            }
        });
    if let Err(e) = spawned {
        log::error!("sim: cannot start a stream writer: {e}");
    }
}

/// Writes the response head, then one chunk per RecordIO record until the
/// core ends the stream (final chunk) or drops it (plain close).
fn write_stream(
    mut writer: Box<dyn Write + Send>,
    stream_id: &str,
    json: bool,
    events: &Receiver<Out>,
) -> io::Result<()> {
    let content_type = if json { JSON } else { PROTOBUF };
    write!(writer, "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nMesos-Stream-Id: {stream_id}\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    writer.flush()?;
    while let Ok(out) = events.recv() {
        match out {
            Out::Event(event) => {
                let record = recordio::encode_record(&encode_event(&event, json));
                write!(writer, "{:x}\r\n", record.len())?;
                writer.write_all(&record)?;
                writer.write_all(b"\r\n")?;
                writer.flush()?;
            }
            Out::End => {
                writer.write_all(b"0\r\n\r\n")?;
                return writer.flush();
            }
        }
    }
    Ok(())
}

fn encode_event(event: &Event, json: bool) -> Vec<u8> {
    if json {
        json::to_json(event).to_string().into_bytes()
    } else {
        // Every event the core builds sets its required fields.
        event.write_to_bytes().unwrap_or_else(|e| {
            log::error!("sim: cannot encode event: {e}");
            Vec::new()
        })
    }
}

// ----- control endpoints -------------------------------------------------------------

fn control(shared: &Shared, request: &mut Request, path: &str) -> Reply {
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let now = Instant::now();
    let done = |result: Result<Value, String>, missing: u16| match result {
        Ok(body) => Reply::json(200, body),
        Err(message) => Reply::json(missing, json!({"code": missing, "message": message})),
    };
    let answer = |result: Result<Value, (u16, String)>| match result {
        Ok(body) => Reply::json(200, body),
        Err((code, message)) => Reply::json(code, json!({"code": code, "message": message})),
    };
    match (&method, segments.as_slice()) {
        (Method::Get, ["version"]) => Reply::json(
            200,
            json!({"version": MESOS_VERSION, "build_date": "", "build_user": "mesos-sim", "git_sha": ""}),
        ),
        (Method::Get, ["health"]) => Reply::text(200, ""),
        (Method::Get, ["sim", "state"]) => {
            let mut state = lock(&shared.core).state_json();
            state["call_faults"] = shared
                .faults()
                .iter()
                .map(|f| json!({"call": f.call, "fault": f.kind.name(), "count": f.count}))
                .collect();
            Reply::json(200, state)
        }
        (Method::Post, ["sim", "calls", "faults"]) => {
            let body = match read_body(request, MAX_CONTROL_BODY) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            match call_fault(&body) {
                Ok(fault) => {
                    let mut faults = shared.faults();
                    if faults.len() >= MAX_CALL_FAULTS {
                        let message = format!("at most {MAX_CALL_FAULTS} faults at once");
                        return Reply::json(409, json!({"code": 409, "message": message}));
                    }
                    faults.push(fault);
                    Reply::json(200, json!({"armed": faults.len()}))
                }
                Err(message) => Reply::json(400, json!({"code": 400, "message": message})),
            }
        }
        (Method::Delete, ["sim", "calls", "faults"]) => {
            let mut faults = shared.faults();
            let cleared = faults.len();
            faults.clear();
            Reply::json(200, json!({"cleared": cleared}))
        }
        (Method::Post, ["sim", "agents"]) => {
            let body = match read_body(request, MAX_CONTROL_BODY) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let parsed = serde_json::from_slice::<Value>(&body)
                .map_err(|e| e.to_string())
                .and_then(|value| agent_from_json(&value));
            match parsed {
                Ok(agent) => done(
                    lock(&shared.core)
                        .add_agent(agent, now)
                        .map(|id| json!({"id": id})),
                    409,
                ),
                Err(message) => Reply::json(400, json!({"code": 400, "message": message})),
            }
        }
        (Method::Delete, ["sim", "agents", hostname]) => answer(
            lock(&shared.core)
                .remove_agent(hostname, now)
                .map(|id| json!({"removed": id})),
        ),
        (Method::Post, ["sim", "agents", hostname, "unreachable"]) => answer(
            lock(&shared.core)
                .agent_unreachable(hostname, now)
                .map(|id| json!({"unreachable": id})),
        ),
        (Method::Post, ["sim", "agents", hostname, "reregister"]) => answer(
            lock(&shared.core)
                .agent_reregister(hostname, now)
                .map(|id| json!({"reregistered": id})),
        ),
        (Method::Post, ["sim", "master", "restart"]) => {
            let body = match read_body(request, MAX_CONTROL_BODY) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            match restart_options(&body) {
                Ok((registry, after)) => {
                    let master_id = lock(&shared.core).restart(registry, after, now);
                    Reply::json(200, json!({"master_id": master_id}))
                }
                Err(message) => Reply::json(400, json!({"code": 400, "message": message})),
            }
        }
        (Method::Post, ["sim", "leader", "lose"]) => {
            // A real master that loses leadership exits: its streams break.
            shared.set_elected_at(None);
            let dropped = lock(&shared.core).drop_streams(now);
            Reply::json(200, json!({"leader": false, "dropped": dropped}))
        }
        (Method::Post, ["sim", "leader", "elect"]) => {
            shared.set_elected_at(Some(now));
            Reply::json(200, json!({"leader": true}))
        }
        (Method::Post, ["sim", "tasks", task_id, action @ ("fail" | "finish")]) => done(
            lock(&shared.core)
                .end_task(task_id, *action == "fail", now)
                .map(|()| json!({"task": task_id})),
            404,
        ),
        (Method::Post, ["sim", "drop-stream"]) => Reply::json(
            200,
            json!({"dropped": lock(&shared.core).drop_streams(now)}),
        ),
        (Method::Post, ["sim", "heartbeats", action @ ("pause" | "resume")]) => {
            lock(&shared.core).pause_heartbeats(*action == "pause");
            Reply::json(200, json!({"heartbeats": action}))
        }
        _ => Reply::json(
            404,
            json!({"code": 404, "message": format!("no such endpoint: {method} {path}")}),
        ),
    }
}

/// The body of `/sim/master/restart`: empty, or
/// `{"registry": "in_memory" | "replicated", "agents_reregister_after": SECONDS}`
/// (both optional; in memory and no automatic re-registration by default).
fn restart_options(body: &[u8]) -> Result<(master::Registry, Option<Duration>), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((master::Registry::InMemory, None));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let registry = match &value["registry"] {
        Value::Null => master::Registry::InMemory,
        Value::String(name) if name == "in_memory" => master::Registry::InMemory,
        Value::String(name) if name == "replicated" => master::Registry::Replicated,
        other => {
            return Err(format!(
                "\"registry\" must be \"in_memory\" or \"replicated\", not {other}"
            ))
        }
    };
    let after = match &value["agents_reregister_after"] {
        Value::Null => None,
        seconds => Some(
            seconds
                .as_f64()
                .filter(|s| (0.0..=86_400.0).contains(s))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!(
                        "\"agents_reregister_after\" must be seconds from 0 to 86400, not {seconds}"
                    )
                })?,
        ),
    };
    Ok((registry, after))
}

/// The body of `POST /sim/calls/faults`:
/// `{"call": "ACCEPT" or "*", "fault": "lose-response" | "drop-request" |
/// "unavailable", "count": N (default 1)}`.
fn call_fault(body: &[u8]) -> Result<CallFault, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let call = value["call"]
        .as_str()
        .ok_or("\"call\" must name a call type or \"*\"")?;
    let known = call == "*"
        || <call::Type as protobuf::Enum>::VALUES
            .iter()
            .any(|t| *t != call::Type::SUBSCRIBE && format!("{t:?}") == call);
    if !known {
        return Err(format!(
            "\"call\" must name a call type other than SUBSCRIBE, or \"*\", not {call:?}"
        ));
    }
    let kind = match value["fault"].as_str() {
        Some("lose-response") => FaultKind::LoseResponse,
        Some("drop-request") => FaultKind::DropRequest,
        Some("unavailable") => FaultKind::Unavailable,
        _ => {
            return Err(
                "\"fault\" must be \"lose-response\", \"drop-request\" or \"unavailable\""
                    .to_string(),
            )
        }
    };
    let count = match &value["count"] {
        Value::Null => 1,
        count => count
            .as_u64()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| format!("\"count\" must be from 1 to 1000000, not {count}"))?,
    };
    Ok(CallFault {
        call: call.to_string(),
        kind,
        count,
    })
}

/// Parses a `--credentials` file as the real master reads it.
pub fn parse_credentials(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = value["credentials"]
        .as_array()
        .ok_or("expected {\"credentials\": [...]}")?;
    list.iter()
        .map(
            |entry| match (entry["principal"].as_str(), entry["secret"].as_str()) {
                (Some(p), Some(s)) if !p.is_empty() && !s.contains(':') => {
                    Ok((p.to_string(), s.to_string()))
                }
                _ => Err(format!(
                    "bad credential {}: needs a principal and a secret without ':'",
                    entry["principal"]
                )),
            },
        )
        .collect()
}

/// Parses an `--agents` file: a JSON list of agents.
pub fn parse_agents_json(text: &str) -> Result<Vec<AgentSpec>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = value.as_array().ok_or("expected a JSON list of agents")?;
    let agents = list
        .iter()
        .enumerate()
        .map(|(n, agent)| agent_from_json(agent).map_err(|e| format!("agent {n}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = agents.iter().map(|a| a.hostname.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("hostname {} appears twice", pair[0]));
    }
    Ok(agents)
}

/// One agent: `{"hostname", "cpus", "mem" (or "mem_mb"), "ports": [[b, e]],
/// "attributes": {"k": "v"} or [["k", "v"]], "reserved": {"role", "cpus",
/// "mem"}}`. Ports default to the lab's range, `nodename` to the hostname,
/// and there is no reservation unless given.
pub fn agent_from_json(value: &Value) -> Result<AgentSpec, String> {
    let hostname = value["hostname"]
        .as_str()
        .filter(|h| !h.is_empty())
        .ok_or("missing \"hostname\"")?
        .to_string();
    if master::invalid_id(&hostname).is_some() {
        return Err(format!("bad hostname {hostname:?}"));
    }
    let number = |key: &str| -> Result<f64, String> {
        value[key]
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or(format!("\"{key}\" must be a number >= 0"))
    };
    let cpus = number("cpus")?;
    let mem_mb = if value.get("mem").is_some() {
        number("mem")?
    } else {
        number("mem_mb")?
    };
    let ports = match &value["ports"] {
        Value::Null => vec![LAB_PORTS],
        Value::Array(ranges) => ranges
            .iter()
            .map(|range| match range.as_array().map(Vec::as_slice) {
                Some([b, e]) => match (b.as_u64(), e.as_u64()) {
                    (Some(b), Some(e)) if b <= e && e <= 65535 => Ok((b, e)),
                    _ => Err(format!("bad port range {range}")),
                },
                _ => Err(format!("bad port range {range}: expected [begin, end]")),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "\"ports\" must be a list of [begin, end], not {other}"
            ))
        }
    };
    let mut attributes: Vec<(String, String)> = match &value["attributes"] {
        Value::Null => Vec::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or(format!("attribute {k} must be a string"))?
                        .to_string(),
                ))
            })
            .collect::<Result<_, String>>()?,
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
                _ => Err(format!("bad attribute {pair}: expected [name, value]")),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("\"attributes\" must be an object, not {other}")),
    };
    if !attributes.iter().any(|(k, _)| k == "nodename") {
        attributes.push(("nodename".to_string(), hostname.clone()));
    }
    let reserved = match &value["reserved"] {
        Value::Null => None,
        Value::Object(_) => {
            let reservation = &value["reserved"];
            let role = reservation["role"]
                .as_str()
                .ok_or("\"reserved\" needs a \"role\"")?;
            if let Some(error) = master::role_error(role)
                .or_else(|| (role == "*").then(|| "Role '*' cannot be reserved".to_string()))
            {
                return Err(format!("bad reserved role: {error}"));
            }
            let amount = |key: &str| -> Result<f64, String> {
                match &reservation[key] {
                    Value::Null => Ok(0.0),
                    number => number
                        .as_f64()
                        .filter(|n| n.is_finite() && *n >= 0.0)
                        .ok_or(format!("\"reserved\".\"{key}\" must be a number >= 0")),
                }
            };
            Some(Reservation {
                role: role.to_string(),
                cpus: amount("cpus")?,
                mem_mb: amount("mem")?,
            })
        }
        other => return Err(format!("\"reserved\" must be an object, not {other}")),
    };
    Ok(AgentSpec {
        hostname,
        cpus,
        mem_mb,
        ports,
        attributes,
        reserved,
    })
}

pub const USAGE: &str = "\
mesos-sim: a simulated Mesos master (v1 scheduler HTTP API) with simulated agents

Usage: mesos-sim [FLAGS]

Flags:
  --listen ADDR:PORT            address to serve (default 127.0.0.1:5050)
  --agents FILE                 JSON list of agents: [{\"hostname\":\"a1\",\"cpus\":4,\"mem\":8192,
                                \"ports\":[[31000,32000]],\"attributes\":{\"nodetype\":\"lab\"},
                                \"reserved\":{\"role\":\"r\",\"cpus\":1,\"mem\":512}}]
                                (default: the Charmander lab, slave1..slave3;
                                docs/lab-agents.json adds slave4 nodetype=traffic)
  --heartbeat SECONDS           HEARTBEAT interval (default 15)
  --allocation-interval SECONDS how often offers are made (default 1)
  --update-retry SECONDS        resend an unacknowledged update after (default 10)
  --redirect-to HOST:PORT       act as a non-leading master: answer 307 to the leader
  --leader-after SECONDS        no leader is elected for that long after start: every
                                scheduler request gets 503 \"No leader elected\"
  --credentials FILE            require HTTP basic auth from schedulers; FILE is
                                {\"credentials\":[{\"principal\":\"p\",\"secret\":\"s\"}]}
  --log-level LEVEL             error, warn, info, debug or trace (default info)
  -h, --help                    print this help
";

/// Parsed `mesos-sim` flags: the config and the log level, or `None` for --help.
pub fn parse_args(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<(SimConfig, log::LevelFilter)>, String> {
    let mut config = SimConfig::default();
    let mut level = log::LevelFilter::Info;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let seconds = |text: String| -> Result<Duration, String> {
            text.parse::<f64>()
                .ok()
                .filter(|s| (0.001..=86_400.0).contains(s))
                .map(Duration::from_secs_f64)
                .ok_or(format!(
                    "bad value {text:?} for {flag}: seconds between 0.001 and 86400"
                ))
        };
        match flag.as_str() {
            "--listen" => config.listen = value()?,
            "--agents" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                config.agents = parse_agents_json(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--heartbeat" => config.heartbeat = seconds(value()?)?,
            "--allocation-interval" => config.allocation_interval = seconds(value()?)?,
            "--update-retry" => config.update_retry = seconds(value()?)?,
            "--leader-after" => config.leader_after = seconds(value()?)?,
            "--redirect-to" => {
                let leader = value()?;
                if !leader.contains(':') {
                    return Err(format!(
                        "bad value {leader:?} for --redirect-to: expected HOST:PORT"
                    ));
                }
                config.redirect_to = Some(leader);
            }
            "--credentials" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                config.credentials =
                    parse_credentials(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--log-level" => {
                let text = value()?;
                level = text
                    .parse()
                    .map_err(|_| format!("bad value {text:?} for --log-level"))?;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(Some((config, level)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_prefers_json() {
        let check = |accept: Option<&str>, expected: Option<bool>| {
            assert_eq!(negotiate(accept).ok(), expected, "{accept:?}");
        };
        check(None, Some(true));
        check(Some("*/*"), Some(true));
        check(Some("application/*"), Some(true));
        check(Some("application/json"), Some(true));
        check(Some("application/x-protobuf"), Some(false));
        check(
            Some("application/x-protobuf, application/json;q=0.5"),
            Some(true),
        );
        check(Some("application/recordio"), None);
    }

    #[test]
    fn calls_are_validated_like_the_master() {
        let check = |json: Value, expected: &str| {
            let parsed = parse_call(JSON, json.to_string().as_bytes())
                .ok()
                .expect("parses");
            assert_eq!(
                validate(&parsed).err().unwrap_or_default(),
                expected,
                "{json}"
            );
        };
        check(json!({}), "Expecting 'type' to be present");
        check(
            json!({"type": "SUBSCRIBE"}),
            "Expecting 'subscribe' to be present",
        );
        check(
            json!({"type": "SUBSCRIBE", "framework_id": {"value": "a"}, "subscribe": {"framework_info": {"user": "u", "name": "n"}}}),
            "'framework_id' differs from 'subscribe.framework_info.id'",
        );
        check(
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n"}}}),
            "",
        );
        check(
            json!({"type": "ACCEPT"}),
            "Expecting 'framework_id' to be present",
        );
        check(
            json!({"type": "ACCEPT", "framework_id": {"value": "f"}}),
            "Expecting 'accept' to be present",
        );
        check(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"}, "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAEC"}}),
            "Not a valid UUID",
        );
        // Sixteen bytes of no known UUID version are not a UUID either.
        check(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"}, "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}}),
            "Not a valid UUID",
        );
        check(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"}, "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAAAAAAAQAAAAAAAAAAAAA=="}}),
            "",
        );
        for (kind, name) in [
            ("REQUEST", "request"),
            ("UPDATE_FRAMEWORK", "update_framework"),
            ("RECONCILE_OPERATIONS", "reconcile_operations"),
            ("ACCEPT_INVERSE_OFFERS", "accept_inverse_offers"),
        ] {
            check(
                json!({"type": kind, "framework_id": {"value": "f"}}),
                &format!("Expecting '{name}' to be present"),
            );
            check(
                json!({"type": kind, "framework_id": {"value": "f"}, name: {}}),
                "",
            );
        }
        check(
            json!({"type": "REVIVE", "framework_id": {"value": "f"}}),
            "",
        );
    }

    #[test]
    fn sub_messages_without_a_type_here_are_seen_in_protobuf_bodies() {
        let mut call = Call::new();
        call.set_type(call::Type::REQUEST);
        call.framework_id
            .mut_or_insert_default()
            .set_value("f".to_string());
        let check = |call: &Call, expected: &str| {
            let bytes = call.write_to_bytes().expect("encodes");
            let parsed = parse_call(PROTOBUF, &bytes).ok().expect("parses");
            assert_eq!(validate(&parsed).err().unwrap_or_default(), expected);
        };
        check(&call, "Expecting 'request' to be present");
        // Field 11 is `request` in the real master's Call.
        call.special_fields
            .mut_unknown_fields()
            .add_length_delimited(11, Vec::new());
        check(&call, "");
    }

    #[test]
    fn bodies_that_are_not_calls_are_refused() {
        let check = |content_type: &str, body: &[u8], status: u16, starts: &str| {
            let Err(reply) = parse_call(content_type, body) else {
                panic!("{content_type} {body:?} was accepted")
            };
            assert_eq!(reply.status, status);
            assert!(reply.body.starts_with(starts), "{}", reply.body);
        };
        check(
            PROTOBUF,
            b"\xff\xff\xff",
            400,
            "Failed to parse body into Call protobuf",
        );
        check(JSON, b"{", 400, "Failed to parse body into JSON");
        check(
            JSON,
            br#"{"framework_id":"x"}"#,
            400,
            "Failed to convert JSON into Call protobuf",
        );
        check(
            "application/json; charset=utf-8",
            b"{}",
            415,
            "Expecting 'Content-Type' of",
        );
    }

    #[test]
    fn credentials_files_parse_as_the_master_reads_them() {
        assert_eq!(
            parse_credentials(r#"{"credentials":[{"principal":"lab","secret":"pa55"}]}"#),
            Ok(vec![("lab".to_string(), "pa55".to_string())])
        );
        for bad in [
            "[]",
            r#"{"credentials":[{"principal":"p"}]}"#,
            r#"{"credentials":[{"principal":"p","secret":"a:b"}]}"#,
        ] {
            assert!(parse_credentials(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agents_files_parse_with_lab_defaults() {
        let agents = parse_agents_json(r#"[{"hostname":"a1","cpus":4,"mem":8192,"attributes":{"nodetype":"lab"}},
            {"hostname":"a2","cpus":1,"mem_mb":512,"ports":[[1000,2000]],"attributes":[["rack","r1"]]}]"#)
        .expect("valid");
        assert_eq!(agents[0].ports, [LAB_PORTS]);
        assert_eq!(
            agents[0].attributes,
            [
                ("nodetype".into(), "lab".into()),
                ("nodename".into(), "a1".into())
            ]
        );
        assert_eq!(
            (agents[1].mem_mb, agents[1].ports.clone()),
            (512.0, vec![(1000, 2000)])
        );
        assert_eq!(agents[0].reserved, None);
        let reserved = parse_agents_json(
            r#"[{"hostname":"a","cpus":1,"mem":1,"reserved":{"role":"lab","cpus":0.5}}]"#,
        )
        .expect("valid");
        assert_eq!(
            reserved[0].reserved,
            Some(Reservation {
                role: "lab".into(),
                cpus: 0.5,
                mem_mb: 0.0
            })
        );
        for bad in [
            "{}",
            r#"[{"cpus":1,"mem":1}]"#,
            r#"[{"hostname":"a","cpus":-1,"mem":1}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1,"ports":[[2,1]]}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1},{"hostname":"a","cpus":1,"mem":1}]"#,
            r#"[{"hostname":"a/b","cpus":1,"mem":1}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1,"reserved":{"role":"*","cpus":1}}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1,"reserved":{"role":"-x","cpus":1}}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1,"reserved":{"cpus":1}}]"#,
            r#"[{"hostname":"a","cpus":1,"mem":1,"reserved":{"role":"r","cpus":-1}}]"#,
        ] {
            assert!(parse_agents_json(bad).is_err(), "{bad}");
        }
    }
}
