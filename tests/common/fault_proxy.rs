//! A TCP fault proxy for tests: it sits between a scheduler and a Mesos master
//! (real or simulated) and, on command, fails calls the ways a real network or
//! master does. It reads every request (head and `Content-Length` body) so it
//! can tell a call (it carries `Mesos-Stream-Id`) from SUBSCRIBE, whose
//! response is the event stream: a call outage can leave the stream flowing,
//! and keep-alive reuse cannot smuggle a call past a fault. Responses are
//! relayed as bytes. Each request is recorded by its call type (read from the
//! protobuf body) and what the proxy did with it, so tests can count, say,
//! the ACCEPTs that were cut.
//!
//! Any test binary includes it with
//! `#[path = "../common/fault_proxy.rs"] mod fault_proxy;`. It needs std,
//! protobuf and the crate's generated `Call`, nothing else.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use charmander::mesos::proto::scheduler::Call;
use protobuf::Message;

/// Size of one response relay read, and of the request reader's buffer.
const CHUNK: usize = 16 * 1024;
/// The longest request head (request line and headers) the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// The longest request body the proxy reads.
const MAX_BODY: usize = 1 << 20;
/// How long a connect to the upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The header (lower case) that marks a request as a call, not SUBSCRIBE.
const CALL_HEADER: &str = "mesos-stream-id";
/// The answer to a call in `Mode::Answer503`.
const ANSWER_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The call type recorded for a body that is not a `Call` with a type.
const UNPARSED: &str = "UNPARSED";
/// The most forwarded requests kept in order (`FaultProxy::forwarded`).
const MAX_FORWARDED: usize = 100_000;

/// What the proxy does with traffic. Every mode but `RefuseNew` acts per
/// request, and only on calls (but `LoseResponse`: on its marker), so the
/// event stream and a new SUBSCRIBE pass through them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Relay everything both ways.
    Pass,
    /// A call outage: new connections are accepted and closed at once, and a
    /// call on an already open connection is cut (`Fate::Cut`), because a
    /// pooled keep-alive connection would otherwise let it through. The
    /// SUBSCRIBE stream keeps flowing.
    RefuseNew,
    /// Each call is answered 503 and its connection closed; the master never
    /// sees it (`Fate::Answered503`).
    Answer503,
    /// Each call is read whole and its connection closed, neither forwarded
    /// nor answered (`Fate::Cut`): the caller cannot tell whether the master
    /// acted (it did not).
    HangUp,
    /// For the first `count` requests whose bytes contain `marker`: forward
    /// the request, then close the client connection instead of relaying the
    /// answer (`Fate::ResponseLost`). The master acted; the client sees its
    /// request sent and no response, an unknown outcome. Other requests pass.
    LoseResponse { marker: String, count: u64 },
}

/// What the proxy did with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Forwarded, and its answer relayed.
    Passed,
    /// Answered 503 by the proxy, not forwarded.
    Answered503,
    /// Not forwarded; the connection was closed without an answer.
    Cut,
    /// Forwarded; the answer was dropped and the connection closed.
    ResponseLost,
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted and relayed.
    pub relayed: u64,
    /// Connections closed at accept time (`RefuseNew`).
    pub refused: u64,
    /// Calls cut (`RefuseNew` on an open connection, `HangUp`).
    pub cut: u64,
    /// Requests forwarded whose response was dropped (`LoseResponse`).
    pub responses_lost: u64,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    relayed: AtomicU64,
    refused: AtomicU64,
    /// Requests by (call type, fate). Bounded: there are few call types.
    calls: Mutex<HashMap<(String, Fate), u64>>,
    /// The call type of each request forwarded to the upstream, in the
    /// order the proxy forwarded them (at most `MAX_FORWARDED`).
    forwarded: Mutex<Vec<String>>,
    /// The client and upstream sockets of every open connection, by id, shut
    /// down on drop. `None` once stopping, so no connection starts after.
    open: Mutex<Option<HashMap<u64, [TcpStream; 2]>>>,
}

/// A running proxy; stopped on drop, every connection closed and every thread
/// joined.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a loopback port chosen by the system, relaying to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            relayed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            calls: Mutex::new(HashMap::new()),
            forwarded: Mutex::new(Vec::new()),
            open: Mutex::new(Some(HashMap::new())),
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, &inner))?;
        Ok(FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    pub fn mode(&self) -> Mode {
        lock(&self.shared.mode).clone()
    }

    /// How many requests of call type `kind` (e.g. "ACCEPT") met `fate`.
    pub fn count(&self, kind: &str, fate: Fate) -> u64 {
        let calls = lock(&self.shared.calls);
        calls.get(&(kind.to_string(), fate)).copied().unwrap_or(0)
    }

    /// The call type of every request forwarded so far (SUBSCRIBE
    /// included), in the order they went to the upstream.
    pub fn forwarded(&self) -> Vec<String> {
        lock(&self.shared.forwarded).clone()
    }

    /// How many requests of any type met `fate`.
    pub fn count_all(&self, fate: Fate) -> u64 {
        let calls = lock(&self.shared.calls);
        calls
            .iter()
            .filter(|((_, it), _)| *it == fate)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn counters(&self) -> Counters {
        Counters {
            relayed: self.shared.relayed.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
            cut: self.count_all(Fate::Cut),
            responses_lost: self.count_all(Fate::ResponseLost),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Close every relayed connection (which ends its threads), then wake
        // the blocked accept; the accept thread joins the relay threads.
        let open = lock(&self.shared.open).take().unwrap_or_default();
        for stream in open.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    for (id, client) in (0u64..).zip(listener.incoming()) {
        if lock(&shared.open).is_none() {
            break;
        }
        relays.retain(|it| !it.is_finished());
        let Ok(client) = client else { continue };
        if *lock(&shared.mode) == Mode::RefuseNew {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT)
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        match start_relay(id, client, upstream, shared) {
            Ok(threads) => relays.extend(threads),
            Err(_) => close(id, shared),
        }
    }
    for relay in relays {
        let _ = relay.join();
    }
}

/// Registers connection `id` and starts its two relay threads.
fn start_relay(
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    shared: &Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_out, upstream_in) = (client.try_clone()?, upstream.try_clone()?);
    {
        let mut open = lock(&shared.open);
        let Some(open) = open.as_mut() else {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        };
        open.insert(id, [client.try_clone()?, upstream.try_clone()?]);
    }
    shared.relayed.fetch_add(1, Ordering::SeqCst);
    // Set before a request whose answer is to be lost is forwarded.
    let lose_response = Arc::new(AtomicBool::new(false));
    let (up_shared, up_lose) = (shared.clone(), lose_response.clone());
    let up = std::thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || relay_requests(id, client, upstream, &up_shared, &up_lose))?;
    let down_shared = shared.clone();
    let down = std::thread::Builder::new()
        .name("fault-proxy-down".into())
        .spawn(move || {
            relay_responses(id, upstream_in, client_out, &down_shared, &lose_response);
        });
    match down {
        Ok(down) => Ok(vec![up, down]),
        Err(error) => {
            close(id, shared);
            let _ = up.join();
            Err(error)
        }
    }
}

/// Shuts down both sockets of connection `id` (ending both its threads).
fn close(id: u64, shared: &Shared) {
    let streams = lock(&shared.open).as_mut().and_then(|it| it.remove(&id));
    for stream in streams.iter().flatten() {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// One request as read from the client.
struct Request {
    /// Head and body, as they go to the upstream.
    bytes: Vec<u8>,
    /// It carries `Mesos-Stream-Id`: a call, not SUBSCRIBE.
    is_call: bool,
    /// The call type from the protobuf body, e.g. "ACCEPT", or `UNPARSED`.
    kind: String,
}

/// Reads one request; None at the end of the connection, on an error, or on
/// a request the proxy cannot frame (a chunked body, or one too big). No
/// `Content-Length` means no body.
fn read_request(reader: &mut impl Read) -> Option<Request> {
    let mut bytes = Vec::new();
    while !bytes.ends_with(b"\r\n\r\n") {
        if bytes.len() >= MAX_HEAD {
            return None;
        }
        let mut byte = [0u8];
        reader.read_exact(&mut byte).ok()?;
        bytes.push(byte[0]);
    }
    let (mut length, mut is_call) = (0usize, false);
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => return None,
            CALL_HEADER => is_call = true,
            _ => {}
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let start = bytes.len();
    bytes.resize(start + length, 0);
    reader.read_exact(&mut bytes[start..]).ok()?;
    let kind = Call::parse_from_bytes(&bytes[start..])
        .ok()
        .and_then(|call| call.type_)
        .map_or_else(
            || UNPARSED.to_string(),
            |it| format!("{:?}", it.enum_value_or_default()),
        );
    Some(Request {
        bytes,
        is_call,
        kind,
    })
}

/// What the current mode does with `request`; claims a `LoseResponse` loss.
fn decide(shared: &Shared, request: &Request) -> Fate {
    let mut mode = lock(&shared.mode);
    match &mut *mode {
        Mode::RefuseNew | Mode::HangUp if request.is_call => Fate::Cut,
        Mode::Answer503 if request.is_call => Fate::Answered503,
        Mode::LoseResponse { marker, count }
            if *count > 0 && contains(&request.bytes, marker.as_bytes()) =>
        {
            *count -= 1;
            Fate::ResponseLost
        }
        _ => Fate::Passed,
    }
}

/// Client requests to the upstream, each one recorded and dealt with as the
/// mode says. No read timeout: after SUBSCRIBE the client sends nothing for
/// the stream's whole life; `close` (on drop, or by the other thread) ends it.
fn relay_requests(
    id: u64,
    client: TcpStream,
    mut upstream: TcpStream,
    shared: &Shared,
    lose_response: &AtomicBool,
) {
    let mut client = BufReader::with_capacity(CHUNK, client);
    while let Some(request) = read_request(&mut client) {
        let fate = decide(shared, &request);
        if matches!(fate, Fate::Passed | Fate::ResponseLost) {
            let mut forwarded = lock(&shared.forwarded);
            if forwarded.len() < MAX_FORWARDED {
                forwarded.push(request.kind.clone());
            }
        }
        *lock(&shared.calls).entry((request.kind, fate)).or_default() += 1;
        match fate {
            Fate::Passed => {}
            Fate::ResponseLost => lose_response.store(true, Ordering::SeqCst),
            Fate::Answered503 => {
                let _ = client.get_mut().write_all(ANSWER_503);
                break;
            }
            Fate::Cut => break,
        }
        if upstream.write_all(&request.bytes).is_err() {
            break;
        }
    }
    close(id, shared);
}

/// Upstream bytes to the client, until a response is to be lost.
fn relay_responses(
    id: u64,
    mut upstream: TcpStream,
    mut client: TcpStream,
    shared: &Shared,
    lose_response: &AtomicBool,
) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match upstream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The upstream has handled the request; the client never learns how.
        if lose_response.load(Ordering::SeqCst) || client.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    close(id, shared);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use charmander::mesos::proto::scheduler::call::Type;
    use std::io::BufRead;

    /// Connections of `upstream` that asked for the event stream.
    type Streams = Arc<Mutex<Vec<TcpStream>>>;

    /// An HTTP upstream that answers each call 200 with its call type as the
    /// body, and a SUBSCRIBE (no `Mesos-Stream-Id`) with a stream head; the
    /// test writes the stream's events through the returned list.
    fn upstream() -> (SocketAddr, Streams) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let streams = Streams::default();
        let registry = streams.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let registry = registry.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone");
                    let mut reader = BufReader::new(stream);
                    while let Some(request) = read_request(&mut reader) {
                        if !request.is_call {
                            // Listed before the head goes out: a client that
                            // has the head can be sent events.
                            lock(&registry).push(writer.try_clone().expect("clone"));
                            let _ =
                                writer.write_all(b"HTTP/1.1 200 OK\r\nMesos-Stream-Id: s\r\n\r\n");
                            return;
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                            request.kind.len(),
                            request.kind
                        );
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, streams)
    }

    type Client = (TcpStream, BufReader<TcpStream>);

    fn connect(proxy: &FaultProxy) -> Client {
        let stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    fn line(reader: &mut BufReader<TcpStream>) -> Option<String> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_string()),
        }
    }

    /// Writes a request with a `Call` of type `kind` as its body, and
    /// `headers` (each ending in CRLF).
    fn send(client: &mut Client, kind: Type, headers: &str) -> Option<()> {
        let mut body = Call::new();
        body.set_type(kind);
        let body = body.write_to_bytes().expect("encode");
        let head = format!(
            "POST /api/v1/scheduler HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        client.0.write_all(head.as_bytes()).ok()?;
        client.0.write_all(&body).ok()
    }

    /// Sends a call of type `kind` (with an `X-Task` header, for markers);
    /// returns the answer's status and body, or None when the proxy closed.
    fn call(client: &mut Client, kind: Type, task: &str) -> Option<(String, String)> {
        send(
            client,
            kind,
            &format!("Mesos-Stream-Id: s\r\nX-Task: {task}\r\n"),
        )?;
        let status = line(&mut client.1)?;
        let mut length = 0;
        loop {
            let header = line(&mut client.1)?.to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse().ok()?;
            }
        }
        let mut answer = vec![0; length];
        client.1.read_exact(&mut answer).ok()?;
        Some((status, String::from_utf8_lossy(&answer).to_string()))
    }

    fn ok(body: &str) -> Option<(String, String)> {
        Some(("HTTP/1.1 200 OK".to_string(), body.to_string()))
    }

    /// Writes `event` on every stream and reads it back through `stream`.
    fn event(streams: &Streams, stream: &mut Client, event: &str) -> Option<String> {
        for writer in lock(streams).iter_mut() {
            writer.write_all(format!("{event}\n").as_bytes()).ok()?;
        }
        line(&mut stream.1)
    }

    #[test]
    fn every_mode_does_what_it_says_to_calls_and_leaves_the_stream_alone() {
        let (upstream, streams) = upstream();
        let proxy = FaultProxy::start(upstream).expect("proxy");
        let mut stream = connect(&proxy);
        send(&mut stream, Type::SUBSCRIBE, "").expect("subscribe");
        assert_eq!(line(&mut stream.1).as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(line(&mut stream.1).as_deref(), Some("Mesos-Stream-Id: s"));
        assert_eq!(line(&mut stream.1).as_deref(), Some(""));
        let mut pooled = connect(&proxy);
        assert_eq!(call(&mut pooled, Type::ACCEPT, ""), ok("ACCEPT"));

        proxy.set_mode(Mode::RefuseNew);
        // The stream flows; the open call connection is cut; a new one is closed.
        assert_eq!(event(&streams, &mut stream, "e1").as_deref(), Some("e1"));
        assert_eq!(call(&mut pooled, Type::KILL, ""), None);
        assert_eq!(call(&mut connect(&proxy), Type::KILL, ""), None);

        proxy.set_mode(Mode::HangUp);
        assert_eq!(call(&mut connect(&proxy), Type::DECLINE, ""), None);
        proxy.set_mode(Mode::Answer503);
        let answer = call(&mut connect(&proxy), Type::REVIVE, "");
        assert_eq!(
            answer.map(|(status, _)| status).as_deref(),
            Some("HTTP/1.1 503 Service Unavailable")
        );
        assert_eq!(event(&streams, &mut stream, "e2").as_deref(), Some("e2"));

        proxy.set_mode(Mode::LoseResponse {
            marker: "task-7".into(),
            count: 1,
        });
        let mut pooled = connect(&proxy);
        assert_eq!(call(&mut pooled, Type::ACCEPT, "task-6"), ok("ACCEPT"));
        assert_eq!(call(&mut pooled, Type::ACCEPT, "task-7"), None);
        assert_eq!(
            call(&mut connect(&proxy), Type::ACCEPT, "task-7"),
            ok("ACCEPT"),
            "only `count` responses are lost"
        );
        assert_eq!(
            proxy.mode(),
            Mode::LoseResponse {
                marker: "task-7".into(),
                count: 0
            }
        );

        assert_eq!(
            proxy.counters(),
            Counters {
                relayed: 6,
                refused: 1,
                cut: 2,
                responses_lost: 1
            }
        );
        let counts = [
            ("SUBSCRIBE", Fate::Passed, 1),
            ("ACCEPT", Fate::Passed, 3),
            ("KILL", Fate::Cut, 1),
            ("DECLINE", Fate::Cut, 1),
            ("REVIVE", Fate::Answered503, 1),
            ("ACCEPT", Fate::ResponseLost, 1),
        ];
        for (kind, fate, expected) in counts {
            assert_eq!(proxy.count(kind, fate), expected, "{kind} {fate:?}");
        }
    }
}
