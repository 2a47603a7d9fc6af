//! The REST API on :7075: a small pool of `http-N` worker threads over one
//! `tiny_http::Server`.
//!
//! A worker routes the request (`route`), reads at most `MAX_BODY` bytes,
//! parses the body into domain types (`dto`), sends one `ApiCommand` to the
//! `state` thread and waits for its reply (`ask`), then turns the reply into
//! a status and a JSON body (`respond`). Workers never touch scheduler
//! state, and nothing a client sends can make them panic.
//!
//! Outcomes a client can trust: a command the state thread could not take
//! within `QUEUE_WAIT` answers 503 (nothing happened, retry). A command it
//! took is answered once its turn is durable; a read waits `REPLY_TIMEOUT`
//! (then 503: reading again is harmless), a change waits `commit_wait`
//! (`COMMIT_WAIT` by default) and then answers 504 "outcome unknown": it may
//! still take effect, so retrying could do it twice. A submit retried with
//! the same `Idempotency-Key` is answered as the first one and creates
//! nothing (`scheduler::state::idempotency`).
//!
//! With a token configured (`--api-token-file`), every route that changes
//! something needs `Authorization: Bearer <token>` (`authorized`); the check
//! runs after routing, so unknown paths stay 404 and wrong methods 405, and
//! before the body is read. Reads stay open. The token is never logged.
//!
//! `GET /` answers with the lab dashboard (`dashboard.html`, compiled in):
//! a static page that asks the state thread nothing itself; the browser
//! reads the JSON endpoints above like any client.

pub(crate) mod dto;
mod events;
mod pages;
mod query;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender};

use crate::metrics::{Metrics, Process};
use crate::scheduler::intelligence::Source;
use crate::scheduler::model::TaskState;
use crate::scheduler::{
    ApiCommand, ApiReply, ApiRequest, ListedTask, Page, StateFilter, TaskQuery,
};
use crate::store::DiskGate;
use query::{number, percent_decoded, Query};

/// The largest request body we read; a bigger one gets 413.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a worker waits for the state thread to take a command before it
/// answers 503: the command was never queued, so nothing happened.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How long a read waits for its reply once queued, before it answers 503.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a change (submit, kill, reshuffle, intelligence write, reset) waits for
/// its reply once queued, i.e. for its turn to be fsynced, before it answers
/// 504 "outcome unknown": the change may still happen. Generous, since a 504
/// leaves the client to find out, and a slow disk is not a failure.
pub const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// The running HTTP workers. Dropping it stops them.
pub struct ApiServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

/// What every request needs, shared by one server's workers.
struct Handler {
    state: Sender<ApiCommand>,
    token: Option<String>,
    commit_wait: Duration,
    disk: DiskGate,
    metrics: Arc<Metrics>,
}

impl ApiServer {
    /// Binds `listen` (port 0 picks a free port) and starts `workers` threads
    /// named `http-N` (at least one). With `token`, mutating routes require
    /// `Authorization: Bearer <token>`; `None` leaves them open. A change
    /// waits `commit_wait` for its commit before it answers 504. While `disk`
    /// is full, submits are refused with 507. Every request is counted in
    /// `metrics`, which `GET /metrics` shows.
    pub fn start(
        listen: &str,
        workers: usize,
        state: Sender<ApiCommand>,
        token: Option<String>,
        commit_wait: Duration,
        disk: DiskGate,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<ApiServer> {
        let server = crate::http::serve(listen, &crate::http::REST, "rest api")?;
        let addr = server.server_addr().to_ip().ok_or_else(|| {
            std::io::Error::other(format!("{listen} is not an IP listen address"))
        })?;
        let mut api_server = ApiServer {
            server: Arc::new(server),
            addr,
            stopping: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
        };
        let handler = Arc::new(Handler {
            state,
            token,
            commit_wait,
            disk,
            metrics,
        });
        for worker_idx in 0..workers.max(1) {
            let server = Arc::clone(&api_server.server);
            let stopping = Arc::clone(&api_server.stopping);
            let handler = Arc::clone(&handler);
            // On a spawn error, dropping `api_server` stops the workers already running.
            let worker = std::thread::Builder::new()
                .name(format!("http-{worker_idx}"))
                .spawn(move || serve(&server, &stopping, &handler))?;
            api_server.workers.push(worker);
        }
        log::info!(
            "rest api listening addr={addr} workers={} auth={}",
            workers.max(1),
            if handler.token.is_some() {
                "bearer"
            } else {
                "none"
            }
        );
        Ok(api_server)
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the workers and joins them. A worker busy with a request finishes
    /// it first (at most about `commit_wait`).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("http worker panicked");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything a request can ask for, decided from method and path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    /// `GET /`: the lab dashboard (`DASHBOARD_HTML`).
    Dashboard,
    Ping,
    SubmitTask,
    /// `GET /client/task[?state=…&prefix=…&limit=…]`.
    ListTasks(TaskQuery),
    Reshuffle {
        dry_run: bool,
    },
    /// `?verbose=true` lists the killed tasks in full.
    KillTasks {
        id_prefix: String,
        verbose: bool,
    },
    ListNodes,
    ListIntelligence,
    SetIntelligence {
        task: String,
        attribute: String,
    },
    ClearIntelligence {
        task: String,
        attribute: String,
    },
    /// `POST /admin/reset`: the lab's "reset cluster".
    Reset,
    /// `GET /metrics`: Prometheus text exposition.
    Metrics,
    /// `GET /client/task/<internal id>`: one task with its history.
    ShowTask {
        id: String,
    },
    /// `GET /client/events[?since=N]`: the event stream (`events`).
    Events {
        since: Option<u64>,
    },
}

/// Every `Route::name`: the `route` label of the request metrics, one per
/// endpoint, so its values are bounded whatever URLs clients send.
pub(crate) const ROUTE_NAMES: &[&str] = &[
    "dashboard",
    "ping",
    "reset",
    "task_submit",
    "task_list",
    "task_kill",
    "reshuffle",
    "node_list",
    "intelligence_list",
    "intelligence_set",
    "intelligence_clear",
    "metrics",
    "task_show",
    "events",
];

/// Every way a request fails before or instead of a scheduler reply. Mapped to
/// HTTP in one place, `ApiError::status`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ApiError {
    /// No endpoint has this path (the path is the field).
    NoSuchEndpoint(String),
    /// The endpoint exists but not for this method; `allow` lists the methods.
    MethodNotAllowed { allow: &'static str },
    /// The request itself is malformed or its values are not acceptable.
    BadRequest(String),
    /// The scheduler found nothing to act on.
    NotFound(String),
    /// The body is longer than `MAX_BODY`.
    BodyTooLarge,
    /// A mutating route without the configured bearer token (or a wrong one).
    Unauthorized,
    /// The request conflicts with an earlier one (a reused `Idempotency-Key`).
    Conflict(String),
    /// The state thread did not take the command within `QUEUE_WAIT`, or a
    /// read got no reply within `REPLY_TIMEOUT`: nothing changed.
    Busy,
    /// The state thread is gone (shutting down) and nothing changed.
    Stopped,
    /// Nothing was done; a retry later may work (too many event streams).
    Unavailable(String),
    /// A change reached the state thread but its reply did not come within
    /// the commit wait (or never will: shutdown): it may or may not happen.
    OutcomeUnknown,
    /// The state disk is full (`store::DiskGate`): submits are refused.
    DiskFull(String),
    /// A bug: the state thread answered with a reply that does not fit.
    Internal(String),
}

/// A finished response, before it becomes a `tiny_http::Response`.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Body,
    content_type: &'static str,
    allow: Option<&'static str>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

const JSON: &str = "application/json";

/// A reply body. The task list is kept as its entries' JSON (each rendered
/// once and shared with the state's list cache) and joined into an array
/// only as it is written to the socket (`ArrayReader`), so a list of
/// 100,000 tasks is never copied into one string per request.
#[derive(Debug)]
enum Body {
    Text(String),
    JsonArray(Vec<Arc<str>>),
    /// A task list longer than one page, read on as it is written.
    Pages(pages::PagedList<Arc<ListedTask>>),
}

impl Body {
    /// The whole body as one string (tests, and the pretty layout); an
    /// error when a page of a long task list could not be read.
    fn text(self) -> std::io::Result<String> {
        let mut text = String::new();
        match self {
            Body::Text(text) => return Ok(text),
            Body::JsonArray(parts) => ArrayReader::new(parts).read_to_string(&mut text)?,
            Body::Pages(mut pages) => pages.read_to_string(&mut text)?,
        };
        Ok(text)
    }
}

/// Reads `[part0,part1,...]` followed by a newline, straight from the
/// shared entries: segment 0 is `[`, then a separator and a part per entry,
/// then `]\n`.
struct ArrayReader {
    parts: Vec<Arc<str>>,
    /// The segment being read, and how far into it.
    segment: usize,
    offset: usize,
}

impl ArrayReader {
    fn new(parts: Vec<Arc<str>>) -> ArrayReader {
        ArrayReader {
            parts,
            segment: 0,
            offset: 0,
        }
    }

    /// The body's length in bytes, for `Content-Length`.
    fn len(&self) -> usize {
        let separators = self.parts.len().saturating_sub(1);
        let parts: usize = self.parts.iter().map(|part| part.len()).sum();
        "[".len() + parts + separators + "]\n".len()
    }

    fn segment(parts: &[Arc<str>], n: usize) -> Option<&[u8]> {
        let entries = parts.len();
        match n {
            0 => Some(b"["),
            n if n <= 2 * entries => {
                let idx = (n - 1) / 2;
                if (n - 1) % 2 == 0 {
                    Some(if idx == 0 { b"" } else { b"," })
                } else {
                    Some(parts[idx].as_bytes())
                }
            }
            n if n == 2 * entries + 1 => Some(b"]\n"),
            _ => None,
        }
    }
}

impl Read for ArrayReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            let Some(segment) = ArrayReader::segment(&self.parts, self.segment) else {
                break;
            };
            let rest = &segment[self.offset..];
            let n = rest.len().min(buf.len() - written);
            buf[written..written + n].copy_from_slice(&rest[..n]);
            written += n;
            self.offset += n;
            if self.offset == segment.len() {
                self.segment += 1;
                self.offset = 0;
            }
        }
        Ok(written)
    }
}

const HTML: &str = "text/html; charset=utf-8";

/// The lab dashboard served at `GET /`: one static page, compiled in. It
/// reads the public API of this server only (`GET /client/node`,
/// `/client/task`, `/client/events`, `/client/task/<id>`), with the
/// caller's own access, and loads nothing from anywhere else.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Sent with every HTML body: the browser itself refuses any request of the
/// page to another origin, and any script or style not inline in it.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The challenge sent with every 401 (RFC 6750 §3).
const BEARER_CHALLENGE: &str = "Bearer realm=\"charmander\"";

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::NoSuchEndpoint(_) | ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BadRequest(_) => 400,
            ApiError::BodyTooLarge => 413,
            ApiError::Unauthorized => 401,
            ApiError::Conflict(_) => 409,
            ApiError::Busy | ApiError::Stopped | ApiError::Unavailable(_) => 503,
            ApiError::OutcomeUnknown => 504,
            ApiError::Internal(_) => 500,
            ApiError::DiskFull(_) => 507,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::NoSuchEndpoint(path) => format!("no such endpoint: {path}"),
            ApiError::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            ApiError::BadRequest(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::DiskFull(message)
            | ApiError::Unavailable(message)
            | ApiError::Internal(message) => message.clone(),
            ApiError::BodyTooLarge => format!("body larger than {MAX_BODY} bytes"),
            ApiError::Unauthorized => "missing or wrong bearer token".to_string(),
            ApiError::Busy => "scheduler busy".to_string(),
            ApiError::Stopped => "scheduler is shutting down".to_string(),
            ApiError::OutcomeUnknown => "outcome unknown, check GET /client/task".to_string(),
        }
    }

    fn into_reply(self) -> Reply {
        let status = self.status();
        let allow = match &self {
            ApiError::MethodNotAllowed { allow } => Some(*allow),
            _ => None,
        };
        let challenge = match &self {
            ApiError::Unauthorized => Some(BEARER_CHALLENGE),
            _ => None,
        };
        Reply {
            status,
            body: Body::Text(dto::message_json(status, &self.message())),
            content_type: JSON,
            allow,
            challenge,
        }
    }
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body: Body::Text(body),
            content_type: JSON,
            allow: None,
            challenge: None,
        }
    }
}

/// One worker: serve requests until `stop` unblocks it.
fn serve(server: &tiny_http::Server, stopping: &AtomicBool, handler: &Arc<Handler>) {
    let mut accept_log = crate::lograte::RateLimit::default();
    loop {
        let request = match server.recv() {
            Ok(request) => request,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(err) => {
                if let Some(suffix) = accept_log.admit(Instant::now()) {
                    log::warn!("http accept failed error={err}{suffix}");
                }
                continue;
            }
        };
        // Bodies within `MAX_BODY` arrive read (`http::REST`), and longer
        // ones are refused unread, so no worker waits on a client, except
        // for a chunked body: refused here.
        if is_chunked(&request) {
            refuse_chunked(request);
            continue;
        }
        serve_one(request, handler);
    }
}

/// Does the request come with a chunked (or other transfer-coded) body?
fn is_chunked(request: &tiny_http::Request) -> bool {
    request
        .headers()
        .iter()
        .any(|field| field.field.equiv("Transfer-Encoding"))
}

/// 411: its body would be read from the socket by the worker (only bodies
/// with a `Content-Length` are read before a worker sees them). Dropping the
/// request unread closes the connection (tiny_http P8).
fn refuse_chunked(request: tiny_http::Request) {
    let message = "send the body with a Content-Length, not chunked";
    let reply = Reply::json(411, dto::message_json(411, message));
    log::debug!(
        "http request refused: chunked body method={} url={}",
        request.method(),
        request.url()
    );
    let layout = Layout::of_request(&request);
    if let Err(err) = request.respond(into_response(reply, layout)) {
        log::debug!("http reply not delivered error={err}");
    }
}

fn serve_one(mut request: tiny_http::Request, handler: &Handler) {
    let started = Instant::now();
    // Routed once: for the event stream, for `handle`, and for the metrics.
    let route = route(request.method().as_str(), request.url());
    let route_name = route
        .as_ref()
        .map_or(crate::metrics::UNMATCHED_ROUTE, Route::name);
    if let Ok(Route::Events { since }) = route {
        // A stream gets a thread of its own; this worker goes back to serving.
        // An EventSource reconnects to the same URL with `Last-Event-ID`:
        // the header is where it got to, so it wins over `?since`.
        let subscribed = last_event_id(&request)
            .map(|header| header.or(since))
            .and_then(|since| events::subscribe(&handler.state, since));
        let status = match subscribed {
            Ok(subscription) => {
                events::start(request, subscription);
                200
            }
            Err(err) => {
                let reply = err.into_reply();
                let status = reply.status;
                answer(request, reply);
                status
            }
        };
        // The time to subscribe, not the stream's life.
        handler
            .metrics
            .count_http(route_name, status, started.elapsed());
        return;
    }
    let mut audit = Audit::default();
    let handled = route.and_then(|route| handle(&mut request, route, handler, &mut audit));
    let (reply, error) = match handled {
        Ok(reply) => (reply, None),
        Err(err) => (err.clone().into_reply(), Some(err.message())),
    };
    let took = started.elapsed();
    log::debug!(
        "http request method={} url={} status={} took_ms={}",
        request.method(),
        request.url(),
        reply.status,
        took.as_millis()
    );
    handler.metrics.count_http(route_name, reply.status, took);
    if let Some(what) = &audit.what {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
        let result = audit.done.or(error).unwrap_or_default();
        log::info!(
            "{}",
            audit_line(&peer, audit.auth, what, reply.status, &result)
        );
    }
    let layout = Layout::of_request(&request);
    if let Err(err) = request.respond(into_response(reply, layout)) {
        log::debug!("http reply not delivered error={err}");
    }
}

/// Answers `request` with `reply` (the event stream's refusals).
fn answer(request: tiny_http::Request, reply: Reply) {
    let layout = Layout::of_request(&request);
    if let Err(err) = request.respond(into_response(reply, layout)) {
        log::debug!("http reply not delivered error={err}");
    }
}

/// The `Last-Event-ID` header an `EventSource` reconnects with: where to
/// resume when the URL has no `since`.
fn last_event_id(request: &tiny_http::Request) -> Result<Option<u64>, ApiError> {
    let Some(field) = request
        .headers()
        .iter()
        .find(|field| field.field.equiv("Last-Event-ID"))
    else {
        return Ok(None);
    };
    number(field.value.as_str().trim(), "Last-Event-ID", SINCE_HINT).map(Some)
}

/// The audit trail: who asked for a change, what, and what came of it.
/// `handle` fills it in as far as the request got; `serve_one` logs it at
/// info for every route that changes something (refusals included).
#[derive(Debug, Default)]
struct Audit {
    /// The credentials the client presented (never the token itself).
    auth: Presented,
    /// Route and target, e.g. `route=kill prefix="stress"`; None for reads.
    what: Option<String>,
    /// What the scheduler did, e.g. `killed=[...]`; an error's message
    /// stands in when there is none.
    done: Option<String>,
}

/// What a request presented in `Authorization`, for the audit line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Presented {
    #[default]
    None,
    Bearer,
    Other,
}

impl Presented {
    fn of(header: Option<&str>) -> Presented {
        match header.map(str::trim).and_then(|it| it.split(' ').next()) {
            None => Presented::None,
            Some(scheme) if scheme.eq_ignore_ascii_case("Bearer") => Presented::Bearer,
            Some(_) => Presented::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Presented::None => "none",
            Presented::Bearer => "bearer",
            Presented::Other => "other",
        }
    }
}

/// Longest user-supplied value an audit line quotes; longer ones are cut.
const AUDIT_VALUE_MAX: usize = 80;

/// `value` quoted for a log line (control characters escaped, so a client
/// cannot forge lines), cut at `AUDIT_VALUE_MAX` characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(AUDIT_VALUE_MAX) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

fn audit_line(peer: &str, auth: Presented, what: &str, status: u16, result: &str) -> String {
    format!(
        "audit peer={peer} auth={} {what} status={status} result={}",
        auth.as_str(),
        quoted(result)
    )
}

impl Route {
    /// The audit line's `what` for a route that changes something.
    fn audit_what(&self) -> Option<String> {
        let what = match self {
            Route::Dashboard
            | Route::Ping
            | Route::ListTasks(_)
            | Route::ListNodes
            | Route::ListIntelligence
            | Route::ShowTask { .. }
            | Route::Events { .. }
            | Route::Metrics => return None,
            Route::Reshuffle { dry_run: true } => return None,
            Route::Reshuffle { dry_run: false } => "route=reshuffle".to_string(),
            Route::SubmitTask => "route=submit".to_string(),
            Route::KillTasks { id_prefix, .. } => {
                format!("route=kill prefix={}", quoted(id_prefix))
            }
            Route::SetIntelligence { task, attribute } => format!(
                "route=intelligence-set task={} attribute={}",
                quoted(task),
                quoted(attribute)
            ),
            Route::ClearIntelligence { task, attribute } => format!(
                "route=intelligence-clear task={} attribute={}",
                quoted(task),
                quoted(attribute)
            ),
            Route::Reset => "route=reset".to_string(),
        };
        Some(what)
    }
}

/// The audit line's `result` for a reply that did something.
fn audit_done(reply: &ApiReply) -> Option<String> {
    let ids = |ids: Vec<&str>| format!("[{}]", ids.join(", "));
    match reply {
        ApiReply::Submitted { id, .. } => Some(format!("submitted {id}")),
        ApiReply::Killed(tasks) => Some(format!(
            "killed {}",
            ids(tasks
                .iter()
                .map(|task| task.internal_id.0.as_ref())
                .collect())
        )),
        ApiReply::Reshuffled(steps) => Some(format!(
            "replacing {}",
            ids(steps
                .iter()
                .map(|step| step.internal_id.0.as_ref())
                .collect())
        )),
        ApiReply::ResetDone { killed } => Some(format!("reset, {killed} tasks killed")),
        ApiReply::IntelligenceChanged => Some("changed".to_string()),
        _ => None,
    }
}

/// Serves `route`, a request `serve_one` routed (anything but the event
/// stream).
fn handle(
    request: &mut tiny_http::Request,
    route: Route,
    handler: &Handler,
    audit: &mut Audit,
) -> Result<Reply, ApiError> {
    let Handler {
        state,
        token,
        commit_wait,
        disk,
        metrics,
    } = handler;
    let (token, commit_wait) = (token.as_deref(), *commit_wait);
    // Before the body is read: an unauthorized client costs us no parsing.
    let authorization = request
        .headers()
        .iter()
        .find(|field| field.field.equiv("Authorization"))
        .map(|field| field.value.as_str());
    audit.auth = Presented::of(authorization);
    audit.what = route.audit_what();
    if !authorized(&route, authorization, token) {
        return Err(ApiError::Unauthorized);
    }
    let api_request = match &route {
        Route::Dashboard => {
            return Ok(Reply {
                status: 200,
                body: Body::Text(DASHBOARD_HTML.to_string()),
                content_type: HTML,
                allow: None,
                challenge: None,
            })
        }
        Route::Ping => {
            return Ok(Reply {
                status: 200,
                body: Body::Text("Pong\n".to_string()),
                content_type: "text/plain; charset=utf-8",
                allow: None,
                challenge: None,
            })
        }
        Route::Metrics => return Ok(scrape(state, metrics)),
        Route::SubmitTask => {
            // Work already accepted keeps the disk's last space (the reserve).
            if let Some(message) = disk.refusal() {
                return Err(ApiError::DiskFull(message));
            }
            let keys: Vec<&str> = request
                .headers()
                .iter()
                .filter(|field| field.field.equiv("Idempotency-Key"))
                .map(|field| field.value.as_str())
                .collect();
            let idempotency_key =
                dto::parse_idempotency_key(&keys).map_err(ApiError::BadRequest)?;
            let body = read_body(request)?;
            let spec = dto::parse_task(&body);
            // A rejected body is audited with the id it seems to carry.
            let id = match &spec {
                Ok(spec) => Some(spec.id.clone()),
                Err(_) => serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|value| value.get("id")?.as_str().map(str::to_string)),
            };
            audit.what = Some(format!(
                "route=submit task={}",
                id.as_deref().map_or_else(|| "?".to_string(), quoted)
            ));
            ApiRequest::Submit {
                spec: spec.map_err(ApiError::BadRequest)?,
                idempotency_key,
            }
        }
        Route::ListTasks(query) => return list_tasks(state, query),
        Route::Reshuffle { dry_run } => ApiRequest::Reshuffle { dry_run: *dry_run },
        Route::KillTasks { id_prefix, .. } => ApiRequest::Kill {
            id_prefix: id_prefix.clone(),
        },
        Route::ListNodes => ApiRequest::ListNodes,
        Route::ListIntelligence => ApiRequest::ListIntelligence,
        Route::Reset => ApiRequest::Reset,
        Route::ShowTask { id } => ApiRequest::ShowTask { id: id.clone() },
        // `serve_one` takes these before `handle`.
        Route::Events { .. } => {
            return Err(ApiError::Internal(
                "event streams are not served here".to_string(),
            ))
        }
        Route::SetIntelligence { task, attribute } => {
            let body = read_body(request)?;
            let raw = dto::parse_intelligence_value(&body).map_err(ApiError::BadRequest)?;
            if let Some(what) = &mut audit.what {
                what.push_str(&format!(" value={}", quoted(&raw)));
            }
            ApiRequest::SetIntelligence {
                task: task.clone(),
                attribute: attribute.clone(),
                raw,
                source: Source::Rest,
            }
        }
        Route::ClearIntelligence { task, attribute } => ApiRequest::ClearIntelligence {
            task: task.clone(),
            attribute: attribute.clone(),
            source: Source::Rest,
        },
    };
    // An empty value clears the entry; say so in the reply.
    let route = match (route, &api_request) {
        (Route::SetIntelligence { task, attribute }, ApiRequest::SetIntelligence { raw, .. })
            if raw.is_empty() =>
        {
            Route::ClearIntelligence { task, attribute }
        }
        (route, _) => route,
    };
    let wait = if route.changes_state() {
        Wait::Commit(commit_wait)
    } else {
        Wait::Read
    };
    let reply = ask(state, api_request, wait)?;
    audit.done = audit_done(&reply);
    respond(&route, reply)
}

/// `GET /client/task`: the first page from the state thread; a list that
/// ends there goes out whole, with its length, a longer one is read on a
/// page at a time as it is written (`pages`).
fn list_tasks(state: &Sender<ApiCommand>, query: &TaskQuery) -> Result<Reply, ApiError> {
    let (first, next) = list_page(state, query, None, query.limit)?;
    let body = match next {
        None => Body::JsonArray(dto::task_entries(&first)),
        Some(next) => {
            let (state, base) = (state.clone(), query.clone());
            let fetch: pages::Fetch<Arc<ListedTask>> = Box::new(move |after, limit| {
                list_page(&state, &base, after, limit).map_err(|error| format!("{error:?}"))
            });
            Body::Pages(pages::PagedList::new(
                (first, Some(next)),
                query.limit,
                fetch,
                dto::append_task_entry,
            ))
        }
    };
    Ok(Reply {
        body,
        ..Reply::json(200, String::new())
    })
}

/// One page of `query`'s list, after `after`, at most `limit` entries.
fn list_page(
    state: &Sender<ApiCommand>,
    query: &TaskQuery,
    after: Option<crate::scheduler::model::TaskId>,
    limit: Option<usize>,
) -> Result<pages::Fetched<Arc<ListedTask>>, ApiError> {
    let query = TaskQuery {
        limit,
        page: Some(Page {
            after,
            scan: pages::LIST_PAGE,
        }),
        ..query.clone()
    };
    match ask(state, ApiRequest::ListTasks(query), Wait::Read)? {
        ApiReply::Tasks { tasks, next } => Ok((tasks.to_vec(), next)),
        other => Err(ApiError::Internal(format!(
            "task list page answered {other:?}"
        ))),
    }
}

/// How `ask` waits for a reply once its command is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A read: `REPLY_TIMEOUT`, then 503 (nothing changed).
    Read,
    /// A change: this long, then 504 (the change may still happen).
    Commit(Duration),
}

/// Sends one command to the state thread (503 when it cannot be queued
/// within `QUEUE_WAIT`: nothing happened) and waits for its answer as `wait`
/// says. A change that was queued is never answered 503: from then on only
/// its reply, or 504 "outcome unknown", is the truth.
fn ask(state: &Sender<ApiCommand>, request: ApiRequest, wait: Wait) -> Result<ApiReply, ApiError> {
    let (reply_sender, reply_receiver) = crate::scheduler::oneshot::oneshot();
    let command = ApiCommand {
        request,
        reply: reply_sender,
    };
    match state.send_timeout(command, QUEUE_WAIT) {
        Ok(()) => {}
        Err(SendTimeoutError::Timeout(_)) => return Err(ApiError::Busy),
        Err(SendTimeoutError::Disconnected(_)) => return Err(ApiError::Stopped),
    }
    let (timeout, no_reply) = match wait {
        Wait::Read => (REPLY_TIMEOUT, ApiError::Busy),
        Wait::Commit(timeout) => (timeout, ApiError::OutcomeUnknown),
    };
    match reply_receiver.recv_timeout(timeout) {
        Ok(reply) => Ok(reply),
        Err(RecvTimeoutError::Timeout) => {
            if no_reply == ApiError::OutcomeUnknown {
                log::warn!(
                    "rest change not committed in time; answered 504, it may still happen waited_ms={}",
                    timeout.as_millis()
                );
            }
            Err(no_reply)
        }
        // The reply slot was dropped unanswered (shutdown, or the journal
        // stopped): a read changed nothing, a change may have been made.
        Err(RecvTimeoutError::Disconnected) => match wait {
            Wait::Read => Err(ApiError::Stopped),
            Wait::Commit(_) => Err(ApiError::OutcomeUnknown),
        },
    }
}

/// Reads the body, at most `MAX_BODY` bytes; more is 413.
fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    if request
        .body_length()
        .is_some_and(|length| length > MAX_BODY)
    {
        return Err(ApiError::BodyTooLarge);
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|err| ApiError::BadRequest(format!("could not read the body: {err}")))?;
    if body.len() > MAX_BODY {
        return Err(ApiError::BodyTooLarge);
    }
    Ok(body)
}

/// How a client wants its JSON: indented for people, compact for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Compact,
    Pretty,
}

impl Layout {
    /// Pretty when the query has `pretty` (any value) or the `User-Agent`
    /// is curl's, as the Kubernetes API server decides it; compact otherwise.
    fn of(url: &str, user_agent: Option<&str>) -> Layout {
        if Query::of_url(url).has("pretty")
            || user_agent.is_some_and(|agent| agent.trim_start().starts_with("curl/"))
        {
            Layout::Pretty
        } else {
            Layout::Compact
        }
    }

    fn of_request(request: &tiny_http::Request) -> Layout {
        let user_agent = request
            .headers()
            .iter()
            .find(|field| field.field.equiv("User-Agent"))
            .map(|field| field.value.as_str());
        Layout::of(request.url(), user_agent)
    }
}

/// Indents compact JSON (as serde_json writes it) the way
/// `serde_json::to_string_pretty` does, keeping the key order (a round trip
/// through `Value` would sort the keys).
fn pretty_json(compact: &str) -> String {
    const INDENT: &str = "  ";
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(INDENT);
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// The one place a reply becomes a response: JSON laid out as `layout`
/// says, and every body ends with a newline, so script output does not run
/// together.
fn into_response(reply: Reply, layout: Layout) -> tiny_http::Response<Box<dyn Read + Send>> {
    let (reader, length): (Box<dyn Read + Send>, Option<usize>) = match (layout, reply.body) {
        // Compact lists go out entry by entry; `ArrayReader` ends with the newline.
        (Layout::Compact, Body::JsonArray(parts)) => {
            let reader = ArrayReader::new(parts);
            let length = reader.len();
            (Box::new(reader), Some(length))
        }
        // Read on a page at a time: chunked, as the length is not known.
        (Layout::Compact, Body::Pages(pages)) => (Box::new(pages), None),
        (layout, body) => {
            let text = match body.text() {
                Ok(text) => text,
                // A later page of a long list could not be read: nothing is
                // written yet, so the answer is still a plain 503.
                Err(error) => {
                    log::warn!("rest list answered 503: {error}");
                    return into_response(ApiError::Busy.into_reply(), layout);
                }
            };
            let mut text = match (layout, reply.content_type) {
                (Layout::Pretty, JSON) => pretty_json(&text),
                _ => text,
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let length = text.len();
            (
                Box::new(std::io::Cursor::new(text.into_bytes())),
                Some(length),
            )
        }
    };
    // A body whose length is known goes out with a Content-Length, never
    // chunked; a paged task list goes out chunked. Either in writes of up to
    // 64 KiB (vendor/tiny_http P14).
    let mut response = tiny_http::Response::new(
        tiny_http::StatusCode(reply.status),
        Vec::new(),
        reader,
        length,
        None,
    )
    .with_chunked_threshold(usize::MAX);
    response.add_header(header("Content-Type", reply.content_type));
    if let Some(allow) = reply.allow {
        response.add_header(header("Allow", allow));
    }
    if let Some(challenge) = reply.challenge {
        response.add_header(header("WWW-Authenticate", challenge));
    }
    if reply.content_type == HTML {
        response.add_header(header("Content-Security-Policy", DASHBOARD_CSP));
    }
    response
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("our header names and values are ASCII constants")
}

/// Decides the route from the method and the request target alone.
fn route(method: &str, url: &str) -> Result<Route, ApiError> {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let query = Query::of_url(url);
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let not_allowed = |allow| Err(ApiError::MethodNotAllowed { allow });
    if path == "/" {
        return match method {
            "GET" => Ok(Route::Dashboard),
            _ => not_allowed("GET"),
        };
    }
    match (method, segments.as_slice()) {
        ("GET", ["metrics"]) => Ok(Route::Metrics),
        (_, ["metrics"]) => not_allowed("GET"),
        ("GET", ["admin", "ping"]) => Ok(Route::Ping),
        (_, ["admin", "ping"]) => not_allowed("GET"),
        ("POST", ["admin", "reset"]) => Ok(Route::Reset),
        (_, ["admin", "reset"]) => not_allowed("POST"),
        ("GET", ["client", "task"]) => list_tasks_route(query),
        ("POST", ["client", "task"]) => Ok(Route::SubmitTask),
        (_, ["client", "task"]) => not_allowed("GET, POST"),
        // Before the kill pattern: GET reshuffles, DELETE kills tasks named "reshuffle…".
        ("GET", ["client", "task", "reshuffle"]) => Ok(Route::Reshuffle {
            dry_run: query.flag("dry_run")?,
        }),
        ("DELETE", ["client", "task", id_prefix]) => Ok(Route::KillTasks {
            id_prefix: path_part(id_prefix, "task id prefix")?,
            verbose: query.flag("verbose")?,
        }),
        (_, ["client", "task", "reshuffle"]) => not_allowed("GET, DELETE"),
        ("GET", ["client", "task", id]) => Ok(Route::ShowTask {
            id: path_part(id, "task id")?,
        }),
        (_, ["client", "task", _]) => not_allowed("GET, DELETE"),
        ("GET", ["client", "events"]) => Ok(Route::Events {
            since: query.last("since", |value| number(value, "since", SINCE_HINT))?,
        }),
        (_, ["client", "events"]) => not_allowed("GET"),
        ("GET", ["client", "node"]) => Ok(Route::ListNodes),
        (_, ["client", "node"]) => not_allowed("GET"),
        ("GET", ["client", "intelligence"]) => Ok(Route::ListIntelligence),
        (_, ["client", "intelligence"]) => not_allowed("GET"),
        ("PUT", ["client", "intelligence", task, attribute]) => Ok(Route::SetIntelligence {
            task: path_part(task, "task")?,
            attribute: path_part(attribute, "attribute")?,
        }),
        ("DELETE", ["client", "intelligence", task, attribute]) => Ok(Route::ClearIntelligence {
            task: path_part(task, "task")?,
            attribute: path_part(attribute, "attribute")?,
        }),
        (_, ["client", "intelligence", _, _]) => not_allowed("PUT, DELETE"),
        _ => Err(ApiError::NoSuchEndpoint(path.to_string())),
    }
}

impl Route {
    /// Does it change scheduler state? Such a route needs the token, and
    /// waits for its commit (504 past it) rather than answering 503.
    fn changes_state(&self) -> bool {
        match self {
            Route::Dashboard
            | Route::Ping
            | Route::ListTasks(_)
            | Route::ListNodes
            | Route::ListIntelligence
            | Route::ShowTask { .. }
            | Route::Events { .. }
            | Route::Metrics => false,
            Route::Reshuffle { dry_run } => !dry_run,
            Route::SubmitTask
            | Route::KillTasks { .. }
            | Route::SetIntelligence { .. }
            | Route::ClearIntelligence { .. }
            | Route::Reset => true,
        }
    }
}

impl Route {
    /// The `route` label of the request metrics (one of `ROUTE_NAMES`).
    fn name(&self) -> &'static str {
        match self {
            Route::Dashboard => "dashboard",
            Route::Ping => "ping",
            Route::Reset => "reset",
            Route::SubmitTask => "task_submit",
            Route::ListTasks(_) => "task_list",
            Route::KillTasks { .. } => "task_kill",
            Route::Reshuffle { .. } => "reshuffle",
            Route::ListNodes => "node_list",
            Route::ListIntelligence => "intelligence_list",
            Route::SetIntelligence { .. } => "intelligence_set",
            Route::ClearIntelligence { .. } => "intelligence_clear",
            Route::Metrics => "metrics",
            Route::ShowTask { .. } => "task_show",
            Route::Events { .. } => "events",
        }
    }
}

/// `GET /metrics`: the counters straight from their atomics; only the task
/// counts are asked of the state thread, as any read (`REPLY_TIMEOUT`).
/// Without its answer the scrape still succeeds, without those counts:
/// a busy state thread is when the other figures matter most.
fn scrape(state: &Sender<ApiCommand>, metrics: &Metrics) -> Reply {
    let counts = match ask(state, ApiRequest::TaskCounts, Wait::Read) {
        Ok(ApiReply::TaskCounts(counts)) => Some(counts),
        Ok(other) => {
            log::error!("unexpected scheduler reply route=metrics reply={other:?}");
            None
        }
        Err(err) => {
            log::warn!("metrics scraped without task counts: {}", err.message());
            None
        }
    };
    Reply {
        status: 200,
        body: Body::Text(metrics.render(counts.as_deref(), &Process::read())),
        content_type: crate::metrics::CONTENT_TYPE,
        allow: None,
        challenge: None,
    }
}

/// Whether `route` may run: with a `token`, a route that changes something
/// needs the `Authorization` header `Bearer <token>`; reads, dry-run
/// reshuffles and everything without a token are open.
fn authorized(route: &Route, header: Option<&str>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    if !route.changes_state() {
        return true;
    }
    // The scheme is case-insensitive (RFC 7235 §2.1); the credentials are not.
    let Some((scheme, credentials)) = header.map(str::trim).and_then(|it| it.split_once(' '))
    else {
        return false;
    };
    let credentials = credentials.trim_start_matches(' ');
    scheme.eq_ignore_ascii_case("Bearer")
        && !credentials.is_empty()
        && constant_time_eq(credentials.as_bytes(), token.as_bytes())
}

/// Compares `presented` with `secret` in time that depends only on the
/// secret's length, so a client cannot find the token byte by byte by timing
/// our answers.
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    // Any length mismatch is a difference, folded in without branching early.
    let mut difference = u8::from(presented.len() != secret.len());
    for (idx, secret_byte) in secret.iter().enumerate() {
        let presented_byte = presented.get(idx).copied().unwrap_or(!secret_byte);
        difference |= std::hint::black_box(presented_byte ^ secret_byte);
    }
    difference == 0
}

/// What `?since=` and `Last-Event-ID` take: the id of the last event seen.
const SINCE_HINT: &str = "use an event id (a number)";

/// The filters of `GET /client/task` (README, "Task list filters"); the
/// last of a repeated one counts, other parameters are ignored:
/// - `state`: `all` (the default: ended tasks too), `active` (live tasks
///   and services without a copy), `pending`, `launching`, `running`, or a
///   Mesos state name such as `TASK_FAILED` (live tasks in it and ended
///   tasks that ended in it);
/// - `prefix`: internal ids (or, with a space, user ids) starting with it,
///   percent-decoded (`+` stays `+`);
/// - `limit`: at most this many tasks, a whole number from 1.
fn list_tasks_route(query: Query) -> Result<Route, ApiError> {
    let filters = TaskQuery {
        state: query.last("state", state_filter)?.unwrap_or_default(),
        prefix: query.last("prefix", |prefix| {
            let prefix = percent_decoded(prefix, "prefix")?;
            if prefix.trim().is_empty() {
                return Err(ApiError::BadRequest(
                    "empty prefix: leave it out to list every task".to_string(),
                ));
            }
            Ok(prefix)
        })?,
        limit: query.last("limit", limit)?,
        page: None,
    };
    Ok(Route::ListTasks(filters))
}

/// `?limit=` of the task list: a whole number from 1.
fn limit(value: &str) -> Result<usize, ApiError> {
    const HINT: &str = "use a whole number from 1";
    let limit = number(value, "limit", HINT)?;
    if limit == 0 {
        return Err(ApiError::BadRequest(format!("bad limit {value:?}: {HINT}")));
    }
    // A limit past the address space is no limit.
    Ok(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// `?state=` of the task list.
fn state_filter(name: &str) -> Result<StateFilter, ApiError> {
    let filter = match name {
        "all" => StateFilter::All,
        "active" => StateFilter::Active,
        "pending" => StateFilter::Pending,
        "launching" => StateFilter::Launching,
        "running" => StateFilter::Mesos(TaskState::Running),
        name => match TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
        {
            Some(state) => StateFilter::Mesos(state),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "bad state {name:?}: use all, active, pending, launching, running \
                     or a Mesos state such as TASK_FAILED"
                )))
            }
        },
    };
    Ok(filter)
}

/// A percent-decoded, non-blank path segment.
fn path_part(segment: &str, what: &str) -> Result<String, ApiError> {
    let decoded = percent_decoded(segment, what)?;
    if decoded.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("empty {what} in the path")));
    }
    Ok(decoded)
}

/// Turns the state thread's reply into a response. A reply that does not fit
/// the route is a bug, answered with 500.
fn respond(route: &Route, reply: ApiReply) -> Result<Reply, ApiError> {
    let reply = match (route, reply) {
        (_, ApiReply::NotFound(message)) => return Err(ApiError::NotFound(message)),
        (_, ApiReply::Invalid(message)) => return Err(ApiError::BadRequest(message)),
        (_, ApiReply::Conflict(message)) => return Err(ApiError::Conflict(message)),
        (_, ApiReply::OutcomeUnknown) => return Err(ApiError::OutcomeUnknown),
        (_, ApiReply::Unavailable(message)) => return Err(ApiError::Unavailable(message)),
        (Route::Reset, ApiReply::ResetDone { killed }) => Reply::json(
            200,
            dto::message_json(200, &format!("Reset: {killed} tasks killed")),
        ),
        (Route::SubmitTask, ApiReply::Submitted { id, note }) => {
            Reply::json(202, dto::submitted_json(&id, note.as_deref()))
        }
        (Route::KillTasks { verbose, .. }, ApiReply::Killed(tasks)) => {
            Reply::json(200, dto::killed_json(&tasks, *verbose))
        }
        (Route::Reshuffle { dry_run }, ApiReply::Reshuffled(steps)) => {
            Reply::json(202, dto::reshuffled_json(&steps, *dry_run))
        }
        (Route::ListNodes, ApiReply::Nodes(nodes)) => Reply::json(200, dto::nodes_json(&nodes)),
        (Route::ShowTask { .. }, ApiReply::Task(task, history)) => {
            Reply::json(200, dto::task_history_json(&task, &history))
        }
        (Route::ListIntelligence, ApiReply::Intelligence(table)) => {
            Reply::json(200, dto::intelligence_json(&table))
        }
        (Route::SetIntelligence { task, attribute }, ApiReply::IntelligenceChanged) => Reply::json(
            200,
            dto::message_json(200, &format!("Set {task}/{attribute}")),
        ),
        (Route::ClearIntelligence { task, attribute }, ApiReply::IntelligenceChanged) => {
            Reply::json(
                200,
                dto::message_json(200, &format!("Cleared {task}/{attribute}")),
            )
        }
        (route, reply) => {
            log::error!("unexpected scheduler reply route={route:?} reply={reply:?}");
            return Err(ApiError::Internal(
                "unexpected reply from the scheduler".to_string(),
            ));
        }
    };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;

    use serde_json::{json, Value};

    use super::*;
    use crate::scheduler::intelligence::Table;

    fn set(task: &str, attribute: &str) -> Route {
        Route::SetIntelligence {
            task: task.to_string(),
            attribute: attribute.to_string(),
        }
    }

    fn clear(task: &str, attribute: &str) -> Route {
        Route::ClearIntelligence {
            task: task.to_string(),
            attribute: attribute.to_string(),
        }
    }

    fn kill(id_prefix: &str) -> Route {
        Route::KillTasks {
            id_prefix: id_prefix.to_string(),
            verbose: false,
        }
    }

    /// `expected` is the route, or the error status with the Allow header.
    #[track_caller]
    fn check(method: &str, url: &str, expected: Result<Route, (u16, Option<&str>)>) {
        let actual = route(method, url).map_err(|err| {
            let reply = err.into_reply();
            (reply.status, reply.allow)
        });
        assert_eq!(actual, expected, "{method} {url}");
    }

    #[test]
    fn routing_table() {
        check("GET", "/admin/ping", Ok(Route::Ping));
        check("POST", "/admin/ping", Err((405, Some("GET"))));
        check("GET", "/metrics", Ok(Route::Metrics));
        check("GET", "/metrics?pretty", Ok(Route::Metrics));
        check("POST", "/metrics", Err((405, Some("GET"))));
        check("GET", "/metrics/", Err((404, None)));
        check("GET", "/metrics/x", Err((404, None)));
        check("POST", "/admin/reset", Ok(Route::Reset));
        check("GET", "/admin/reset", Err((405, Some("POST"))));
        let all = Route::ListTasks(TaskQuery::default());
        let list = |state, prefix: Option<&str>, limit| {
            Ok(Route::ListTasks(TaskQuery {
                state,
                prefix: prefix.map(str::to_string),
                limit,
                page: None,
            }))
        };
        check("GET", "/client/task", Ok(all.clone()));
        check("GET", "/client/task?verbose=1", Ok(all.clone()));
        check(
            "GET",
            "/client/task?state=active",
            list(StateFilter::Active, None, None),
        );
        check("GET", "/client/task?pretty&state=all", Ok(all.clone()));
        check("GET", "/client/task?state=ended", Err((400, None)));
        check(
            "GET",
            "/client/task?state=pending",
            list(StateFilter::Pending, None, None),
        );
        check(
            "GET",
            "/client/task?state=launching",
            list(StateFilter::Launching, None, None),
        );
        check(
            "GET",
            "/client/task?state=running",
            list(StateFilter::Mesos(TaskState::Running), None, None),
        );
        check(
            "GET",
            "/client/task?state=TASK_FAILED",
            list(StateFilter::Mesos(TaskState::Failed), None, None),
        );
        check("GET", "/client/task?state=task_failed", Err((400, None)));
        check("GET", "/client/task?state=", Err((400, None)));
        check(
            "GET",
            "/client/task?prefix=web",
            list(StateFilter::All, Some("web"), None),
        );
        check(
            "GET",
            "/client/task?prefix=my%20web&prefix=u+600",
            list(StateFilter::All, Some("u+600"), None),
        );
        check(
            "GET",
            "/client/task?prefix=my%20web",
            list(StateFilter::All, Some("my web"), None),
        );
        check("GET", "/client/task?prefix=", Err((400, None)));
        check("GET", "/client/task?prefix=%zz", Err((400, None)));
        check(
            "GET",
            "/client/task?limit=10&state=pending&prefix=w",
            list(StateFilter::Pending, Some("w"), Some(10)),
        );
        check("GET", "/client/task?limit=0", Err((400, None)));
        check("GET", "/client/task?limit=-1", Err((400, None)));
        check("GET", "/client/task?limit=+5", Err((400, None)));
        check("GET", "/client/task?limit=ten", Err((400, None)));
        check("GET", "/client/task?limit=", Err((400, None)));
        check(
            "GET",
            "/client/task?limit=99999999999999999999999",
            Err((400, None)),
        );
        check("POST", "/client/task", Ok(Route::SubmitTask));
        check("PUT", "/client/task", Err((405, Some("GET, POST"))));
        check(
            "GET",
            "/client/task/reshuffle",
            Ok(Route::Reshuffle { dry_run: false }),
        );
        check(
            "GET",
            "/client/task/reshuffle?dry_run=true",
            Ok(Route::Reshuffle { dry_run: true }),
        );
        check(
            "GET",
            "/client/task/reshuffle?a=b&dry_run=1",
            Ok(Route::Reshuffle { dry_run: true }),
        );
        check(
            "GET",
            "/client/task/reshuffle?dry_run",
            Ok(Route::Reshuffle { dry_run: true }),
        );
        check(
            "GET",
            "/client/task/reshuffle?dry_run=0",
            Ok(Route::Reshuffle { dry_run: false }),
        );
        check(
            "GET",
            "/client/task/reshuffle?dry_run=maybe",
            Err((400, None)),
        );
        check(
            "POST",
            "/client/task/reshuffle",
            Err((405, Some("GET, DELETE"))),
        );
        check("DELETE", "/client/task/reshuffle", Ok(kill("reshuffle")));
        check("DELETE", "/client/task/stress", Ok(kill("stress")));
        check(
            "DELETE",
            "/client/task/stress?verbose=true",
            Ok(Route::KillTasks {
                id_prefix: "stress".to_string(),
                verbose: true,
            }),
        );
        check("DELETE", "/client/task/stress?verbose=no", Err((400, None)));
        check(
            "DELETE",
            "/client/task/normalload-u+600",
            Ok(kill("normalload-u+600")),
        );
        check(
            "DELETE",
            "/client/task/my%20task%2F1",
            Ok(kill("my task/1")),
        );
        check("DELETE", "/client/task/", Err((400, None)));
        check("DELETE", "/client/task/%20", Err((400, None)));
        check("DELETE", "/client/task/%zz", Err((400, None)));
        check("DELETE", "/client/task/%e9", Err((400, None)));
        check("DELETE", "/client/task/%4", Err((400, None)));
        // `from_str_radix` takes a sign: "%+1" was read as byte 1.
        check("DELETE", "/client/task/a%+1", Err((400, None)));
        check("GET", "/client/task?prefix=%+1", Err((400, None)));
        check("GET", "/client/task?prefix=%20", Err((400, None)));
        // GET shows one task with its history (issue 12); DELETE still kills.
        check(
            "GET",
            "/client/task/stress-1",
            Ok(Route::ShowTask {
                id: "stress-1".to_string(),
            }),
        );
        check(
            "PUT",
            "/client/task/stress",
            Err((405, Some("GET, DELETE"))),
        );
        check("GET", "/client/task/%zz", Err((400, None)));
        check("GET", "/client/events", Ok(Route::Events { since: None }));
        check(
            "GET",
            "/client/events?since=42",
            Ok(Route::Events { since: Some(42) }),
        );
        check("GET", "/client/events?since=-1", Err((400, None)));
        // One rule for numbers (`query::number`): `+5` was read as 5 here.
        check("GET", "/client/events?since=+5", Err((400, None)));
        check("GET", "/client/events?since=", Err((400, None)));
        check(
            "GET",
            "/client/events?since=0&since=7",
            Ok(Route::Events { since: Some(7) }),
        );
        check("POST", "/client/events", Err((405, Some("GET"))));
        check("DELETE", "/client/task/a/b", Err((404, None)));
        check("GET", "/client/node", Ok(Route::ListNodes));
        check("DELETE", "/client/node", Err((405, Some("GET"))));
        check("GET", "/client/intelligence", Ok(Route::ListIntelligence));
        check(
            "PUT",
            "/client/intelligence/stress60/mem",
            Ok(set("stress60", "mem")),
        );
        check(
            "DELETE",
            "/client/intelligence/stress60/mem",
            Ok(clear("stress60", "mem")),
        );
        check(
            "GET",
            "/client/intelligence/stress60/mem",
            Err((405, Some("PUT, DELETE"))),
        );
        check("PUT", "/client/intelligence/stress60", Err((404, None)));
        check("PUT", "/client/intelligence//mem", Err((400, None)));
        check("GET", "/", Ok(Route::Dashboard));
        check("GET", "/?refresh=1", Ok(Route::Dashboard));
        check("POST", "/", Err((405, Some("GET"))));
        check("DELETE", "/", Err((405, Some("GET"))));
        check("GET", "", Err((404, None)));
        check("GET", "/client", Err((404, None)));
        check("GET", "/admin/ping/", Err((404, None)));
        check("GET", "//admin/ping", Err((404, None)));
        assert_eq!(
            route("GET", "/nope?x=1").map_err(|err| err.message()),
            Err("no such endpoint: /nope".to_string())
        );
    }

    /// The request metrics' `route` label is a fixed list: every route has
    /// a name in `ROUTE_NAMES`, and every name there is used.
    #[test]
    fn every_route_has_a_listed_metrics_name() {
        let routes = [
            Route::Dashboard,
            Route::Ping,
            Route::Reset,
            Route::SubmitTask,
            Route::ListTasks(TaskQuery::default()),
            Route::Reshuffle { dry_run: true },
            kill("x"),
            Route::ListNodes,
            Route::ListIntelligence,
            set("t", "mem"),
            clear("t", "mem"),
            Route::Metrics,
            Route::ShowTask {
                id: "t-1".to_string(),
            },
            Route::Events { since: None },
        ];
        let names: std::collections::BTreeSet<&str> = routes.iter().map(Route::name).collect();
        let listed: std::collections::BTreeSet<&str> = ROUTE_NAMES.iter().copied().collect();
        assert_eq!(names, listed);
        assert_eq!(listed.len(), ROUTE_NAMES.len(), "no name twice");
        assert!(!listed.contains(crate::metrics::UNMATCHED_ROUTE));
        // Every status a worker answers has its own counter, not "other".
        let text = || String::new();
        let errors = [
            ApiError::NoSuchEndpoint(text()),
            ApiError::MethodNotAllowed { allow: "GET" },
            ApiError::BadRequest(text()),
            ApiError::NotFound(text()),
            ApiError::BodyTooLarge,
            ApiError::Unauthorized,
            ApiError::Conflict(text()),
            ApiError::Busy,
            ApiError::Stopped,
            ApiError::OutcomeUnknown,
            ApiError::DiskFull(text()),
            ApiError::Unavailable(text()),
            ApiError::Internal(text()),
        ];
        for status in errors.iter().map(ApiError::status).chain([200, 202]) {
            assert!(crate::metrics::HTTP_STATUSES.contains(&status), "{status}");
        }
    }

    fn body(reply: Result<Reply, ApiError>) -> (u16, Value) {
        let reply = reply.unwrap_or_else(ApiError::into_reply);
        assert_eq!(reply.content_type, JSON);
        let text = reply.body.text().expect("the body reads");
        let value = serde_json::from_str(&text).expect("replies are JSON");
        (reply.status, value)
    }

    #[track_caller]
    fn check_respond(route: Route, reply: ApiReply, expected: (u16, Value)) {
        assert_eq!(body(respond(&route, reply)), expected);
    }

    #[test]
    fn replies_map_to_status_and_body() {
        let message = |code: u16, message: &str| (code, json!({"code": code, "message": message}));
        check_respond(
            Route::SubmitTask,
            ApiReply::Submitted {
                id: "stress60".to_string(),
                note: None,
            },
            message(202, "Run task: stress60"),
        );
        check_respond(
            Route::SubmitTask,
            ApiReply::Submitted {
                id: "cadvisor".to_string(),
                note: Some("already running on slave1, slave2".to_string()),
            },
            (
                202,
                json!({"code": 202, "message": "Run task: cadvisor",
                       "note": "already running on slave1, slave2"}),
            ),
        );
        check_respond(
            Route::SubmitTask,
            ApiReply::Invalid("no".to_string()),
            message(400, "no"),
        );
        check_respond(
            Route::ListNodes,
            ApiReply::Nodes(Vec::new()),
            (200, json!([])),
        );
        check_respond(
            kill("x"),
            ApiReply::NotFound("no task matches x".to_string()),
            message(404, "no task matches x"),
        );
        check_respond(
            kill("x"),
            ApiReply::Killed(Vec::new()),
            (
                200,
                json!({"code": 200, "message": "Kill task: ", "tasks": []}),
            ),
        );
        check_respond(
            Route::Reshuffle { dry_run: true },
            ApiReply::Reshuffled(Vec::new()),
            (
                202,
                json!({"code": 202, "message": "Reshuffle tasks", "plan": [], "dry_run": true}),
            ),
        );
        check_respond(
            Route::ListIntelligence,
            ApiReply::Intelligence(Table::new()),
            (200, json!({})),
        );
        check_respond(
            set("t", "mem"),
            ApiReply::IntelligenceChanged,
            message(200, "Set t/mem"),
        );
        check_respond(
            clear("t", "mem"),
            ApiReply::IntelligenceChanged,
            message(200, "Cleared t/mem"),
        );
        check_respond(
            set("t", "colour"),
            ApiReply::Invalid("unknown attribute".to_string()),
            message(400, "unknown attribute"),
        );
        // Replies that do not fit the route are bugs: 500, never a panic.
        check_respond(
            Route::ListTasks(TaskQuery::default()),
            ApiReply::Submitted {
                id: "x".to_string(),
                note: None,
            },
            message(500, "unexpected reply from the scheduler"),
        );
        check_respond(
            Route::ListTasks(TaskQuery::default()),
            ApiReply::Synced {
                rejected: Vec::new(),
            },
            message(500, "unexpected reply from the scheduler"),
        );
        check_respond(
            Route::SubmitTask,
            ApiReply::Conflict("key used".to_string()),
            message(409, "key used"),
        );
        assert_eq!(body(Err(ApiError::Busy)), message(503, "scheduler busy"));
        assert_eq!(
            body(Err(ApiError::OutcomeUnknown)),
            message(504, "outcome unknown, check GET /client/task")
        );
        assert_eq!(
            body(Err(ApiError::BodyTooLarge)),
            message(413, "body larger than 65536 bytes")
        );
        assert_eq!(
            body(Err(ApiError::DiskFull("state disk full: x".to_string()))),
            message(507, "state disk full: x")
        );
    }

    #[test]
    fn mutating_routes_need_the_bearer_token() {
        let token = Some("s3cret");
        let mutating = [
            Route::SubmitTask,
            Route::Reshuffle { dry_run: false },
            kill("stress"),
            set("t", "mem"),
            clear("t", "mem"),
            Route::Reset,
        ];
        let reads = [
            Route::Dashboard,
            Route::Ping,
            Route::ListTasks(TaskQuery::default()),
            Route::ListNodes,
            Route::ListIntelligence,
            Route::Reshuffle { dry_run: true },
            Route::Metrics,
        ];
        for route in &mutating {
            assert!(authorized(route, Some("Bearer s3cret"), token), "{route:?}");
            assert!(authorized(route, Some("bearer s3cret"), token), "{route:?}");
            assert!(
                authorized(route, Some("  BEARER   s3cret "), token),
                "{route:?}"
            );
            for header in [
                None,
                Some(""),
                Some("Bearer"),
                Some("Bearer "),
                Some("s3cret"),
                Some("Bearer s3cre"),
                Some("Bearer s3cret2"),
                Some("Bearer S3CRET"),
                Some("Bearer s3cret x"),
                Some("Basic s3cret"),
                Some("Bearers3cret"),
                Some("Basic czNjcmV0"),
            ] {
                assert!(!authorized(route, header, token), "{route:?} {header:?}");
            }
            // Without a configured token everything is open.
            assert!(authorized(route, None, None), "{route:?}");
            assert!(authorized(route, Some("Bearer nope"), None), "{route:?}");
        }
        for route in &reads {
            assert!(authorized(route, None, token), "{route:?}");
            assert!(authorized(route, Some("Bearer wrong"), token), "{route:?}");
        }
    }

    /// The dashboard is one static page that loads nothing from anywhere
    /// else: no external scripts, styles, fonts or images, no absolute URLs
    /// (the CSP header enforces the same in the browser).
    #[test]
    fn the_dashboard_loads_nothing_from_elsewhere() {
        let page = DASHBOARD_HTML.to_ascii_lowercase();
        for banned in [
            "http:", "https:", "//cdn", "src=", "<link", "@import", "url(",
        ] {
            assert!(!page.contains(banned), "the dashboard contains {banned:?}");
        }
        // Every request it makes goes to this server's API.
        let fetched: std::collections::BTreeSet<&str> = DASHBOARD_HTML
            .match_indices("\"/client/")
            .map(|(idx, _)| &DASHBOARD_HTML[idx + 1..])
            .map(|rest| rest.split(['"', '?']).next().unwrap_or(rest))
            .collect();
        assert_eq!(
            fetched.iter().copied().collect::<Vec<_>>(),
            ["/client/events", "/client/node", "/client/task"],
            "paths the page reads"
        );
        for path in fetched {
            let route = route("GET", path);
            assert!(
                route.as_ref().map_or(true, |route| !route.changes_state()),
                "{path}: {route:?}"
            );
        }
    }

    #[track_caller]
    fn check_pretty(value: Value) {
        let compact = serde_json::to_string(&value).expect("serializes");
        let expected = serde_json::to_string_pretty(&value).expect("serializes");
        assert_eq!(pretty_json(&compact), expected, "{compact}");
    }

    /// A long task list whose later page cannot be read: laid out pretty
    /// (read whole before anything is written) it is a 503, not a 200 with
    /// a cut array; compact (chunked) the body ends early with an error.
    #[test]
    fn a_list_page_that_fails_is_never_a_complete_looking_answer() {
        let failing = || {
            let fetch: pages::Fetch<Arc<ListedTask>> =
                Box::new(|_, _| Err("state gone".to_string()));
            // The first page is empty: the second is read at once.
            let first = (
                Vec::new(),
                Some(crate::scheduler::model::TaskId("t".into())),
            );
            Reply {
                body: Body::Pages(pages::PagedList::new(
                    first,
                    None,
                    fetch,
                    dto::append_task_entry,
                )),
                ..Reply::json(200, String::new())
            }
        };
        let pretty = into_response(failing(), Layout::Pretty);
        assert_eq!(pretty.status_code().0, 503);
        let compact = into_response(failing(), Layout::Compact);
        assert_eq!(
            compact.status_code().0,
            200,
            "the status is sent before the pages"
        );
        let mut body = String::new();
        assert!(compact.into_reader().read_to_string(&mut body).is_err());
    }

    #[test]
    fn pretty_json_matches_serde_and_keeps_key_order() {
        check_pretty(json!([]));
        check_pretty(json!({}));
        check_pretty(json!({"code": 200, "message": "Kill task: ", "tasks": []}));
        check_pretty(json!([{"a": {"b": [1, 2.5, null, true]}, "c": {}}]));
        check_pretty(json!({"tricky": "a, b: {c} [d] \"e\" \\ f", "x": "\\"}));
        check_pretty(json!("just a string"));
        // The order the reply was written in stays (a Value would sort it).
        assert_eq!(
            pretty_json(r#"{"z":1,"a":[]}"#),
            "{\n  \"z\": 1,\n  \"a\": []\n}"
        );
    }

    #[test]
    fn layout_is_pretty_for_curl_and_pretty_queries() {
        let check = |url: &str, agent: Option<&str>, expected: Layout| {
            assert_eq!(Layout::of(url, agent), expected, "{url} {agent:?}");
        };
        check("/client/task", None, Layout::Compact);
        check("/client/task", Some("curl/7.68.0"), Layout::Pretty);
        check("/client/task", Some("ureq/3.0"), Layout::Compact);
        check("/client/task", Some("Mozilla/5.0 curl/7"), Layout::Compact);
        check("/client/task?pretty", None, Layout::Pretty);
        check("/client/task?pretty=false", None, Layout::Pretty);
        check("/client/task?a=1&pretty=1", None, Layout::Pretty);
        check("/client/task?prettyish=1", None, Layout::Compact);
        check("/client/task/pretty", None, Layout::Compact);
    }

    /// A list body is written entry by entry; read in any buffer size it is
    /// the same bytes as the whole array joined at once, and its
    /// `Content-Length` is exact.
    #[test]
    fn a_list_streams_the_same_bytes_as_the_joined_array() {
        #[track_caller]
        fn check(parts: &[&str], buffer: usize) {
            let parts: Vec<Arc<str>> = parts.iter().map(|part| Arc::from(*part)).collect();
            let expected = format!("[{}]\n", parts.join(","));
            let mut reader = ArrayReader::new(parts);
            assert_eq!(reader.len(), expected.len());
            let mut read = Vec::new();
            let mut chunk = vec![0u8; buffer];
            loop {
                let n = reader.read(&mut chunk).expect("reads");
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(String::from_utf8(read).expect("UTF-8"), expected);
        }
        for buffer in [1, 2, 3, 7, 4096] {
            check(&[], buffer);
            check(&["{}"], buffer);
            check(&[r#"{"a":1}"#, "{}", r#"{"b":"\u00e9"}"#], buffer);
            check(&["", "{}", ""], buffer);
        }
    }

    #[test]
    fn every_body_ends_with_one_newline() {
        let read = |reply: Reply, layout| {
            let mut body = String::new();
            into_response(reply, layout)
                .into_reader()
                .read_to_string(&mut body)
                .expect("reads");
            body
        };
        let message = || Reply::json(202, dto::message_json(202, "Run task: web"));
        assert_eq!(
            read(message(), Layout::Compact),
            "{\"code\":202,\"message\":\"Run task: web\"}\n"
        );
        assert_eq!(
            read(message(), Layout::Pretty),
            "{\n  \"code\": 202,\n  \"message\": \"Run task: web\"\n}\n"
        );
        let pong = Reply {
            content_type: "text/plain; charset=utf-8",
            ..Reply::json(200, "Pong\n".to_string())
        };
        assert_eq!(read(pong, Layout::Pretty), "Pong\n");
        assert_eq!(
            read(ApiError::Busy.into_reply(), Layout::Compact),
            "{\"code\":503,\"message\":\"scheduler busy\"}\n"
        );
    }

    #[test]
    fn audit_lines_say_who_what_and_the_result() {
        let check = |route: Route, reply: Option<ApiReply>, expected: &str| {
            let what = route.audit_what().unwrap_or_else(|| "READ".to_string());
            let done = reply.as_ref().and_then(audit_done).unwrap_or_default();
            assert_eq!(
                audit_line("10.0.0.1:4000", Presented::Bearer, &what, 200, &done),
                expected
            );
        };
        let p = "audit peer=10.0.0.1:4000 auth=bearer";
        check(
            kill("stress"),
            Some(ApiReply::Killed(Vec::new())),
            &format!("{p} route=kill prefix=\"stress\" status=200 result=\"killed []\""),
        );
        check(
            Route::Reset,
            Some(ApiReply::ResetDone { killed: 3 }),
            &format!("{p} route=reset status=200 result=\"reset, 3 tasks killed\""),
        );
        check(
            Route::Reshuffle { dry_run: false },
            Some(ApiReply::Reshuffled(Vec::new())),
            &format!("{p} route=reshuffle status=200 result=\"replacing []\""),
        );
        check(
            set("t", "mem"),
            Some(ApiReply::IntelligenceChanged),
            &format!(
                "{p} route=intelligence-set task=\"t\" attribute=\"mem\" status=200 result=\"changed\""
            ),
        );
        check(
            Route::SubmitTask,
            Some(ApiReply::Submitted {
                id: "web".to_string(),
                note: None,
            }),
            &format!("{p} route=submit status=200 result=\"submitted web\""),
        );
        // Reads and dry runs are not audited.
        check(
            Route::ListTasks(TaskQuery::default()),
            None,
            &format!("{p} READ status=200 result=\"\""),
        );
        check(
            Route::Reshuffle { dry_run: true },
            None,
            &format!("{p} READ status=200 result=\"\""),
        );
        // A client cannot forge a line, nor make one huge.
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        assert_eq!(quoted(&"x".repeat(500)), format!("{:?}...", "x".repeat(80)));
        assert_eq!(Presented::of(None), Presented::None);
        assert_eq!(Presented::of(Some(" bearer abc")), Presented::Bearer);
        assert_eq!(Presented::of(Some("Basic abc")), Presented::Other);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"t3cret", b"s3cret"));
        // A presented prefix padded with the complement of the secret's bytes
        // must not compare equal either.
        assert!(!constant_time_eq(&[!b's'], b"s"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn unauthorized_is_401_with_a_bearer_challenge() {
        let reply = ApiError::Unauthorized.into_reply();
        assert_eq!(
            (
                reply.status,
                reply.body.text().expect("the body reads").as_str(),
                reply.challenge
            ),
            (
                401,
                r#"{"code":401,"message":"missing or wrong bearer token"}"#,
                Some(r#"Bearer realm="charmander""#)
            )
        );
    }

    #[test]
    fn a_stopped_state_thread_is_503_not_a_hang() {
        let (state, inbox) = crossbeam_channel::bounded(1);
        drop(inbox);
        let err = ask(
            &state,
            ApiRequest::ListTasks(TaskQuery::default()),
            Wait::Read,
        )
        .expect_err("no state thread");
        assert_eq!(
            (err.status(), err.message()),
            (503, "scheduler is shutting down".to_string())
        );
    }

    /// A state thread that takes commands and never answers in time (a slow
    /// fsync): a change gets 504 "outcome unknown", never 503; a read 503.
    #[test]
    fn a_change_the_state_thread_took_is_never_503() {
        let (state, inbox) = crossbeam_channel::bounded(4);
        let spec = dto::parse_task(br#"{"id":"web","dockerimage":"nginx","mem":"10"}"#)
            .expect("valid task");
        let submit = ApiRequest::Submit {
            spec,
            idempotency_key: None,
        };
        let wait = Wait::Commit(Duration::from_millis(50));
        let err = ask(&state, submit, wait).expect_err("no reply in time");
        assert_eq!(
            (err.status(), err.message()),
            (504, "outcome unknown, check GET /client/task".to_string())
        );
        // Taken, then dropped unanswered (shutdown): the change may have been made.
        let (state, inbox2) = crossbeam_channel::bounded(4);
        let dropper = std::thread::spawn(move || drop(inbox2.recv()));
        let kill = ApiRequest::Kill {
            id_prefix: "web".to_string(),
        };
        let err = ask(&state, kill, wait).expect_err("dropped");
        assert_eq!(err.status(), 504);
        dropper.join().expect("joins");
        drop(inbox);
    }

    /// A stand-in for the state thread: accepts every submit, knows no tasks.
    fn fake_state(inbox: crossbeam_channel::Receiver<ApiCommand>) {
        for command in inbox {
            let reply = match command.request {
                ApiRequest::Submit { spec, .. } => ApiReply::Submitted {
                    id: spec.id,
                    note: None,
                },
                ApiRequest::ListTasks(_) => ApiReply::Tasks {
                    tasks: Vec::new().into(),
                    next: None,
                },
                ApiRequest::Kill { id_prefix } => {
                    ApiReply::NotFound(format!("no task matches {id_prefix}"))
                }
                _ => ApiReply::Invalid("not in this test".to_string()),
            };
            command.reply.send(reply);
        }
    }

    /// Sends one raw HTTP/1.1 request, returns (status, headers, body).
    fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        // The server may answer (413) before it has read everything.
        let _ = stream.write_all(body);
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|it| it.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn serves_over_a_real_socket() {
        let (state, inbox) = crossbeam_channel::bounded(8);
        let state_thread = std::thread::spawn(move || fake_state(inbox));
        let server = ApiServer::start(
            "127.0.0.1:0",
            2,
            state,
            None,
            COMMIT_WAIT,
            DiskGate::default(),
            Arc::default(),
        )
        .expect("binds");
        let addr = server.addr();
        assert_ne!(addr.port(), 0);

        let (status, head, body) = http(addr, "GET", "/admin/ping", b"");
        assert_eq!((status, body.as_str()), (200, "Pong\n"));
        assert!(head.contains("content-type: text/plain"), "{head}");

        let (status, head, body) = http(addr, "GET", "/", b"");
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none';"),
            "{head}"
        );
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");

        let task = br#"{"id":"stress60","dockerimage":"stress","mem":"100"}"#;
        let (status, head, body) = http(addr, "POST", "/client/task", task);
        assert_eq!(
            (status, body.as_str()),
            (202, "{\"code\":202,\"message\":\"Run task: stress60\"}\n")
        );
        assert!(head.contains("content-type: application/json"), "{head}");

        let (status, _, body) = http(addr, "POST", "/client/task", br#"{"id":"x"}"#);
        assert_eq!(
            (status, body.as_str()),
            (
                400,
                "{\"code\":400,\"message\":\"missing field \\\"dockerimage\\\"\"}\n"
            )
        );

        let (status, _, body) = http(addr, "GET", "/client/task", b"");
        assert_eq!((status, body.as_str()), (200, "[]\n"));

        let (status, _, body) = http(addr, "DELETE", "/client/task/zzz", b"");
        assert_eq!(
            (status, body.as_str()),
            (404, "{\"code\":404,\"message\":\"no task matches zzz\"}\n")
        );

        let (status, _, body) = http(addr, "GET", "/nowhere", b"");
        assert_eq!(
            (status, body.as_str()),
            (
                404,
                "{\"code\":404,\"message\":\"no such endpoint: /nowhere\"}\n"
            )
        );

        let (status, head, _) = http(addr, "PATCH", "/client/task", b"");
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, post"), "{head}");

        let (status, _, body) = http(addr, "POST", "/client/task", &vec![b' '; MAX_BODY + 1]);
        assert_eq!(
            (status, body.as_str()),
            (
                413,
                "{\"code\":413,\"message\":\"body larger than 65536 bytes\"}\n"
            )
        );
        // Exactly MAX_BODY is read and parsed (here: all whitespace, so empty).
        let (status, _, _) = http(addr, "POST", "/client/task", &vec![b' '; MAX_BODY]);
        assert_eq!(status, 400);

        server.shutdown();
        state_thread
            .join()
            .expect("the fake state thread ends with its senders");
    }

    /// A scrape reads the atomics itself: with no state thread to give the
    /// task counts it still answers, without that one family.
    #[test]
    fn a_scrape_answers_without_the_state_thread() {
        let (state, inbox) = crossbeam_channel::bounded::<ApiCommand>(8);
        drop(inbox);
        let metrics = Arc::new(Metrics::default());
        let server = ApiServer::start(
            "127.0.0.1:0",
            1,
            state,
            Some("t0ken".to_string()),
            COMMIT_WAIT,
            DiskGate::default(),
            Arc::clone(&metrics),
        )
        .expect("binds");
        let (status, head, body) = http(server.addr(), "GET", "/metrics", b"");
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"));
        assert!(body.contains("\ncharmander_build_info{version=\""));
        assert!(!body.contains("charmander_tasks"), "{body}");
        // The scrape itself was counted under its route.
        let (_, _, body) = http(server.addr(), "GET", "/metrics", b"");
        assert!(
            body.contains("\ncharmander_http_requests_total{route=\"metrics\",status=\"200\"} 1\n"),
            "{body}"
        );
        server.shutdown();
    }

    /// tiny_http 0.12 drained an unread body on drop with `vec![0; remaining]`,
    /// so a huge Content-Length used to kill the worker (the process in
    /// release); the vendored tiny_http drains at most 64 KiB (P5) and closes.
    #[test]
    fn a_huge_declared_body_does_not_kill_a_worker() {
        let (state, inbox) = crossbeam_channel::bounded(8);
        let state_thread = std::thread::spawn(move || fake_state(inbox));
        let server = ApiServer::start(
            "127.0.0.1:0",
            1,
            state,
            None,
            COMMIT_WAIT,
            DiskGate::default(),
            Arc::default(),
        )
        .expect("binds");
        let mut attacker = TcpStream::connect(server.addr()).expect("connect");
        let head = "POST /admin/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
        attacker.write_all(head.as_bytes()).expect("write");
        // With one worker, two pings in a row prove it survived whichever came first.
        for _ in 0..2 {
            let (status, _, body) = http(server.addr(), "GET", "/admin/ping", b"");
            assert_eq!((status, body.as_str()), (200, "Pong\n"));
        }
        drop(attacker);
        server.shutdown();
        state_thread
            .join()
            .expect("the fake state thread ends with its senders");
    }
}
