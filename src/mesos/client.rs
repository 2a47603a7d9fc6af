//! HTTP transport to the master's `/api/v1/scheduler` endpoint.
//!
//! SUBSCRIBE is a long-lived streaming response, so it is spoken over a plain
//! `TcpStream`: that gives us a per-read idle timeout (a silent master is
//! detected by missing heartbeats) and a socket handle that shutdown can close
//! to unblock the reader at once. Every other call is a short POST, also over
//! a plain `TcpStream` (one keep-alive connection reused), so a failure is
//! known to have happened before the request was complete ("not delivered")
//! or after ("outcome unknown"); a general HTTP client hides that line.
//!
//! Runs on the `mesos-reader` (subscribe) and `mesos-caller` (calls) threads.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The scheduler API path on every master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";

/// The content type we speak on both directions.
pub const PROTOBUF: &str = "application/x-protobuf";

/// TCP connect timeout for subscribe and calls.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout for writing a request and for reading a response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for the answers of one call, or of one pipelined batch, once
/// its requests are written (connecting and writing have their own bounds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response head (status line plus headers) we read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The largest error body we keep from a non-2xx answer, for the log.
const MAX_ERROR_BODY: u64 = 4 * 1024;

/// The longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 64;

/// Credentials for masters that run with `--authenticate_http_frameworks`.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub principal: String,
    pub secret: String,
}

impl fmt::Debug for BasicAuth {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn header_value(&self) -> String {
        format!(
            "Basic {}",
            crate::base64::encode(format!("{}:{}", self.principal, self.secret).as_bytes())
        )
    }
}

/// What went wrong talking to a master.
#[derive(Debug)]
pub enum Error {
    /// Connecting, writing or reading failed.
    Io { master: String, source: io::Error },
    /// The master is not the leader; resend to `location` (already made absolute: host:port).
    Redirect { location: String },
    /// The master answered with an error status; `body` is its explanation.
    Status {
        master: String,
        status: u16,
        body: String,
    },
    /// The response was not HTTP as we know it.
    Protocol { master: String, what: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { master, source } => {
                write!(f, "connection to master {master} failed: {source}")
            }
            Error::Redirect { location } => write!(f, "redirected to leading master {location}"),
            Error::Status {
                master,
                status,
                body,
            } => {
                write!(f, "master {master} answered {status}: {}", body.trim())
            }
            Error::Protocol { master, what } => write!(f, "master {master} spoke bad HTTP: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An open subscription: the event stream after the response head.
pub struct Subscription {
    pub stream_id: String,
    /// The de-chunked body; feed it to `recordio::read_record`.
    pub body: BufReader<Body>,
    /// A second handle on the socket, so another thread can close it.
    pub socket: TcpStream,
}

/// POSTs SUBSCRIBE to `master` (host:port) and reads the response head.
/// `idle_timeout` bounds every later read of the stream.
pub fn subscribe(
    master: &str,
    call: &[u8],
    auth: Option<&BasicAuth>,
    idle_timeout: Duration,
) -> Result<Subscription, Error> {
    let io_error = |source| Error::Io {
        master: master.to_string(),
        source,
    };
    let protocol = |what: String| Error::Protocol {
        master: master.to_string(),
        what,
    };
    let address = master
        .to_socket_addrs()
        .map_err(io_error)?
        .next()
        .ok_or_else(|| {
            io_error(io::Error::new(
                io::ErrorKind::NotFound,
                "address resolves to nothing",
            ))
        })?;
    let mut socket = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(io_error)?;
    socket.set_nodelay(true).map_err(io_error)?;
    socket
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_error)?;
    socket
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_error)?;

    let mut head = format!(
        "POST {SCHEDULER_PATH} HTTP/1.1\r\nHost: {master}\r\nContent-Type: {PROTOBUF}\r\nAccept: {PROTOBUF}\r\nConnection: close\r\nContent-Length: {}\r\n",
        call.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {}\r\n", auth.header_value()));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).map_err(io_error)?;
    socket.write_all(call).map_err(io_error)?;

    let mut reader = BufReader::new(socket.try_clone().map_err(io_error)?);
    let response = read_head(&mut reader).map_err(|err| match err {
        HeadError::Io(source) => io_error(source),
        HeadError::Bad(what) => protocol(what),
    })?;
    match response.status {
        200 => {}
        307 => {
            let location = response.header("location").unwrap_or_default();
            return Err(Error::Redirect {
                location: leader_from_location(location)
                    .ok_or_else(|| protocol(format!("307 with unusable Location {location:?}")))?,
            });
        }
        status => {
            let mut body = Vec::new();
            // Error bodies are short plain text; read what arrives in time.
            let _ = reader.take(MAX_ERROR_BODY).read_to_end(&mut body);
            return Err(Error::Status {
                master: master.to_string(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    }
    let content_type = response.header("content-type").unwrap_or_default();
    if content_type != PROTOBUF {
        return Err(protocol(format!(
            "stream content type is {content_type:?}, asked for {PROTOBUF}"
        )));
    }
    let stream_id = response
        .header("mesos-stream-id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| protocol("SUBSCRIBE answer has no Mesos-Stream-Id".to_string()))?
        .to_string();
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|it| it.eq_ignore_ascii_case("chunked"));
    socket
        .set_read_timeout(Some(idle_timeout))
        .map_err(io_error)?;
    let body = Body {
        inner: reader,
        chunked,
        remaining_in_chunk: 0,
        done: false,
    };
    Ok(Subscription {
        stream_id,
        body: BufReader::new(body),
        socket,
    })
}

/// Makes the subscription's blocked reads return at once.
pub fn close(socket: &TcpStream) {
    // The peer may already be gone; there is nothing to do about an error here.
    let _ = socket.shutdown(Shutdown::Both);
}

/// Where a thread keeps the socket of its call or stream in progress, so
/// that shutdown can close it (`close`) and a blocked read returns. Once
/// closed, a call does not start (`is_closed`), and a socket put in anyway
/// (`hold`, racing the close) is shut down at once: a call a lane starts
/// after the shutdown closed its slot fails at once instead of waiting on
/// a master that does not answer.
#[derive(Clone, Debug, Default)]
pub struct SocketSlot(Arc<Mutex<SlotState>>);

#[derive(Debug, Default)]
struct SlotState {
    socket: Option<TcpStream>,
    closed: bool,
}

impl SocketSlot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps (a handle of) `socket` for `close`; shuts it down instead if
    /// the slot is closed already.
    pub fn hold(&self, socket: &TcpStream) {
        let mut state = self.state();
        if state.closed {
            close(socket);
        } else {
            state.socket = socket.try_clone().ok();
        }
    }

    /// Whether `close` has been called: nothing should start any more.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// The socket is no longer in use.
    pub fn release(&self) {
        self.state().socket = None;
    }

    /// Shuts down the socket held, and every socket held from now on.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        if let Some(socket) = state.socket.take() {
            close(&socket);
        }
    }
}

/// How a call failed, as far as the sender can tell: the distinction decides
/// whether it may be sent again.
#[derive(Debug)]
pub enum CallError {
    /// The master did not get the call: the connection failed before the
    /// whole request was written, or the master answered 503 (no leader,
    /// recovering) or 307 (not the leader). Safe to send again.
    NotDelivered(Error),
    /// The whole request went out but no usable answer came back (an I/O
    /// error while waiting, bad HTTP, a 5xx other than 503): the master may
    /// have acted on it.
    OutcomeUnknown(Error),
    /// The master answered 4xx: it did not act on the call and never will.
    Refused(Error),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotDelivered(err) => write!(f, "not delivered: {err}"),
            CallError::OutcomeUnknown(err) => write!(f, "outcome unknown: {err}"),
            CallError::Refused(err) => write!(f, "refused: {err}"),
        }
    }
}

/// A socket whose every read stops at a deadline, so one call cannot take
/// longer than `CALL_TIMEOUT` however slowly the master drips its answer.
struct DeadlineStream {
    socket: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete answer within the call timeout",
            ));
        }
        self.socket
            .set_read_timeout(Some(left.min(REQUEST_TIMEOUT)))?;
        self.socket.read(buf)
    }
}

/// One HTTP/1.1 connection to a master, kept between calls when the master
/// allows it.
struct CallConnection {
    master: String,
    reader: BufReader<DeadlineStream>,
}

/// Sends calls over plain HTTP/1.1 on a `TcpStream`, so it knows exactly how
/// far a failed call got (see `CallError`). One per `mesos-caller` thread.
///
/// One idle keep-alive connection is kept for the next call. On a reused
/// connection, a master that closed it while idle looks exactly like a master
/// that got the call and died. An idempotent call that fails there is sent
/// again at once on a fresh connection. A call that must not be repeated
/// (`reuse == false`, i.e. ACCEPT) goes out on the idle connection only if
/// the master has not closed it (`CallConnection::still_open`, a peek); then
/// an error after the request went out is reported as "outcome unknown" even
/// in the rare case that the master closed the connection in between, which
/// reconciliation settles. Opening a connection per ACCEPT cost a TCP
/// handshake per launch on both sides.
pub struct Caller {
    auth: Option<BasicAuth>,
    idle: Option<CallConnection>,
    /// The socket of the call in progress, so shutdown can close it.
    socket_slot: SocketSlot,
}

impl Caller {
    pub fn new(auth: Option<BasicAuth>, socket_slot: SocketSlot) -> Caller {
        Caller {
            auth,
            idle: None,
            socket_slot,
        }
    }

    /// POSTs one call. Success is 202 (or 200). `reuse` allows sending it on
    /// the idle connection of an earlier call.
    pub fn post(
        &mut self,
        master: &str,
        stream_id: &str,
        call: &[u8],
        reuse: bool,
    ) -> Result<(), CallError> {
        let idle = self
            .idle
            .take()
            .filter(|it| it.master == master && (reuse || it.still_open()));
        let reused = idle.is_some();
        match self.post_on(idle, master, stream_id, call) {
            // A master may close an idle connection at any moment, so an I/O
            // error on a reused one is most likely that: an idempotent call
            // goes out again at once on a fresh connection instead of
            // counting as a failure.
            Err(
                CallError::NotDelivered(Error::Io { .. })
                | CallError::OutcomeUnknown(Error::Io { .. }),
            ) if reused && reuse => self.post_on(None, master, stream_id, call),
            // The request did not go out whole: the master cannot act on it,
            // so even a call that must not be repeated may go out again.
            Err(CallError::NotDelivered(Error::Io { .. })) if reused => {
                self.post_on(None, master, stream_id, call)
            }
            result => result,
        }
    }

    /// POSTs calls that may be sent twice (ACKNOWLEDGE, KILL) pipelined on
    /// one connection: every request written at once, then the answers
    /// read in order, so a batch costs one write and one round trip instead
    /// of one of each per call. One result per call up to and including the
    /// first failure; the calls after it count as not tried (the master may
    /// have acted on them, which is why only such calls are pipelined).
    /// A batch (at most `caller::lanes::MAX_BATCH` requests of a few hundred
    /// bytes, and their answers) fits the socket buffers, so writing all of
    /// it before reading cannot stall on a master waiting for us to read.
    pub fn post_pipelined(
        &mut self,
        master: &str,
        stream_id: &str,
        calls: &[Vec<u8>],
    ) -> Vec<Result<(), CallError>> {
        let idle = self.idle.take().filter(|it| it.master == master);
        let reused = idle.is_some();
        let (results, _) = self.pipeline_on(idle, master, stream_id, calls);
        // As in `post`: a master that closed the idle connection fails the
        // first call, and the batch goes out again at once on a new one.
        match results.first() {
            Some(Err(
                CallError::NotDelivered(Error::Io { .. })
                | CallError::OutcomeUnknown(Error::Io { .. }),
            )) if reused => self.pipeline_on(None, master, stream_id, calls).0,
            _ => results,
        }
    }

    /// POSTs calls that must not be sent twice (ACCEPT) pipelined, as
    /// `post_pipelined` does, on a connection the master has not closed
    /// (`still_open`) or a new one. Every call gets a result: one after the
    /// first failure may have reached the master as well, so it is outcome
    /// unknown, never "not tried", and is not sent again. Only when no
    /// connection could be made are the calls after the first not tried.
    pub fn post_pipelined_once(
        &mut self,
        master: &str,
        stream_id: &str,
        calls: &[Vec<u8>],
    ) -> Vec<Result<(), CallError>> {
        let idle = self
            .idle
            .take()
            .filter(|it| it.master == master && it.still_open());
        let (mut results, written) = self.pipeline_on(idle, master, stream_id, calls);
        while written && results.len() < calls.len() {
            results.push(Err(CallError::OutcomeUnknown(Error::Io {
                master: master.to_string(),
                source: io::Error::other(
                    "no answer: an earlier call of its pipelined batch failed",
                ),
            })));
        }
        results
    }

    /// One attempt, on `connection` or on a new one.
    fn post_on(
        &mut self,
        connection: Option<CallConnection>,
        master: &str,
        stream_id: &str,
        call: &[u8],
    ) -> Result<(), CallError> {
        let (results, _) = self.pipeline_on(connection, master, stream_id, &[call]);
        results.into_iter().next().unwrap_or_else(|| {
            Err(CallError::NotDelivered(Error::Protocol {
                master: master.to_string(),
                what: "no call was sent".to_string(),
            }))
        })
    }

    /// Writes the requests of `calls` on `connection` (or a new one) and
    /// reads their answers in order, up to the first failure; keeps the
    /// connection for the next calls when every answer left it usable.
    /// The flag says whether any byte may have gone out.
    fn pipeline_on(
        &mut self,
        connection: Option<CallConnection>,
        master: &str,
        stream_id: &str,
        calls: &[impl AsRef<[u8]>],
    ) -> (Vec<Result<(), CallError>>, bool) {
        // Shut down: no connect (which may wait `CONNECT_TIMEOUT` on a
        // master that drops it) and no byte on a kept one.
        if self.socket_slot.is_closed() {
            let error = CallError::NotDelivered(Error::Protocol {
                master: master.to_string(),
                what: "not sent: shutting down".to_string(),
            });
            return (vec![Err(error)], false);
        }
        let mut connection = match connection {
            Some(connection) => connection,
            None => match connect_for_call(master) {
                Ok(connection) => connection,
                Err(source) => {
                    let error = CallError::NotDelivered(Error::Io {
                        master: master.to_string(),
                        source,
                    });
                    return (vec![Err(error)], false);
                }
            },
        };
        self.socket_slot.hold(&connection.reader.get_ref().socket);
        // The credentials' header once for the batch (base64 of the secret).
        let auth = self
            .auth
            .as_ref()
            .map(|auth| format!("Authorization: {}\r\n", auth.header_value()))
            .unwrap_or_default();
        let mut bytes = Vec::new();
        for call in calls {
            push_request(&mut bytes, master, stream_id, &auth, call.as_ref());
        }
        // A write that fails leaves a request incomplete: the master cannot
        // act on a body shorter than its Content-Length.
        let mut socket = &connection.reader.get_ref().socket;
        let written = socket.write_all(&bytes).and_then(|()| socket.flush());
        let mut results = Vec::with_capacity(calls.len());
        let mut keep_alive = false;
        match written {
            // One request cut short cannot be acted on; of several, the
            // ones before the cut may have gone out whole.
            Err(source) => results.push(Err(if calls.len() == 1 {
                CallError::NotDelivered(Error::Io {
                    master: master.to_string(),
                    source,
                })
            } else {
                CallError::OutcomeUnknown(Error::Io {
                    master: master.to_string(),
                    source,
                })
            })),
            Ok(()) => {
                // One deadline for every answer of the batch, so a master
                // that drips them holds the lane `CALL_TIMEOUT` at most.
                connection.reader.get_mut().deadline = Instant::now() + CALL_TIMEOUT;
                for _ in calls {
                    let answer = read_answer(&mut connection, master);
                    keep_alive = matches!(answer, Ok(true));
                    results.push(answer.map(|_| ()));
                    if !keep_alive {
                        break;
                    }
                }
            }
        }
        self.socket_slot.release();
        // Every answer read and nothing more buffered: the connection is
        // where the next request starts.
        if keep_alive && results.len() == calls.len() && connection.reader.buffer().is_empty() {
            self.idle = Some(connection);
        }
        (results, true)
    }
}

/// Appends one call's HTTP request to `bytes`; `auth` is its whole
/// `Authorization` header line, or empty.
fn push_request(bytes: &mut Vec<u8>, master: &str, stream_id: &str, auth: &str, call: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        bytes,
        "POST {SCHEDULER_PATH} HTTP/1.1\r\nHost: {master}\r\nContent-Type: {PROTOBUF}\r\nAccept: {PROTOBUF}\r\nMesos-Stream-Id: {stream_id}\r\nContent-Length: {}\r\n{auth}\r\n",
        call.len()
    );
    bytes.extend_from_slice(call);
}

/// Reads one answer from `connection`: `Ok(true)` when the connection may
/// carry the next answer or request (the body was read to its end and the
/// master did not say close).
fn read_answer(connection: &mut CallConnection, master: &str) -> Result<bool, CallError> {
    let io_error = |source| Error::Io {
        master: master.to_string(),
        source,
    };
    // From here on the master may have the whole call.
    let unknown = CallError::OutcomeUnknown;
    let head = read_head(&mut connection.reader).map_err(|err| match err {
        HeadError::Io(source) => unknown(io_error(source)),
        HeadError::Bad(what) => unknown(Error::Protocol {
            master: master.to_string(),
            what,
        }),
    })?;
    let length = head
        .header("content-length")
        .and_then(|it| it.parse::<u64>().ok());
    // Mesos answers with a Content-Length (0 for 202). Without one (or
    // chunked) the body is not read and the connection not kept.
    let mut body = Vec::new();
    let body_read = match length {
        Some(length) => connection
            .reader
            .by_ref()
            .take(length.min(MAX_ERROR_BODY))
            .read_to_end(&mut body)
            .is_ok(),
        None => false,
    };
    let keep_alive = body_read
        && length == Some(body.len() as u64)
        && !head
            .header("connection")
            .is_some_and(|it| it.eq_ignore_ascii_case("close"));
    let status_error = |status| Error::Status {
        master: master.to_string(),
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    match head.status {
        200 | 202 => Ok(keep_alive),
        307 => {
            let location = head.header("location").unwrap_or_default();
            let error = match leader_from_location(location) {
                Some(leader) => Error::Redirect { location: leader },
                None => Error::Protocol {
                    master: master.to_string(),
                    what: format!("307 with unusable Location {location:?}"),
                },
            };
            Err(CallError::NotDelivered(error))
        }
        503 => Err(CallError::NotDelivered(status_error(503))),
        status @ 400..=499 => Err(CallError::Refused(status_error(status))),
        status => Err(CallError::OutcomeUnknown(status_error(status))),
    }
}

impl CallConnection {
    /// Whether the master still holds this idle connection open: nothing is
    /// buffered and a non-blocking peek finds nothing to read (a master sends
    /// nothing unasked, and a close reads as end of file).
    fn still_open(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let socket = &self.reader.get_ref().socket;
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let nothing_to_read = matches!(
            socket.peek(&mut byte),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        );
        socket.set_nonblocking(false).is_ok() && nothing_to_read
    }
}

fn connect_for_call(master: &str) -> io::Result<CallConnection> {
    let address = master
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))?;
    let socket = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    socket.set_nodelay(true)?;
    socket.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    Ok(CallConnection {
        master: master.to_string(),
        reader: BufReader::new(DeadlineStream {
            socket,
            deadline: Instant::now() + CALL_TIMEOUT,
        }),
    })
}

/// Turns a master's `Location` (`//host:port/api/v1/scheduler`, or with a
/// scheme, or bare `host:port`) into `host:port`.
pub fn leader_from_location(location: &str) -> Option<String> {
    let rest = location.trim();
    let rest = rest.strip_prefix("http:").unwrap_or(rest);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    if authority.contains(':') {
        Some(authority.to_string())
    } else {
        Some(format!("{authority}:5050"))
    }
}

/// A response body, de-chunked when the master uses chunked encoding.
pub struct Body {
    inner: BufReader<TcpStream>,
    chunked: bool,
    remaining_in_chunk: u64,
    done: bool,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining_in_chunk == 0 {
            let size = read_chunk_size(&mut self.inner)?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.remaining_in_chunk = size;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining_in_chunk).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a chunk",
            ));
        }
        self.remaining_in_chunk -= n as u64;
        if self.remaining_in_chunk == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk not followed by CRLF",
                ));
            }
        }
        Ok(n)
    }
}

fn read_chunk_size(reader: &mut BufReader<TcpStream>) -> io::Result<u64> {
    let line = read_line_bounded(reader, MAX_CHUNK_LINE)?;
    let size_text = line.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(size_text, 16).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad chunk size line {line:?}"),
        )
    })
}

struct ResponseHead {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
}

impl ResponseHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

enum HeadError {
    Io(io::Error),
    Bad(String),
}

fn read_head(reader: &mut impl BufRead) -> Result<ResponseHead, HeadError> {
    let mut budget = MAX_RESPONSE_HEAD;
    let status_line = read_line_bounded(reader, budget).map_err(HeadError::Io)?;
    budget = budget.saturating_sub(status_line.len() + 2);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|code| code.parse::<u16>().ok());
    let status = match (version.starts_with("HTTP/1."), status) {
        (true, Some(status)) => status,
        _ => return Err(HeadError::Bad(format!("bad status line {status_line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line_bounded(reader, budget).map_err(HeadError::Io)?;
        budget = budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            break;
        }
        if budget == 0 {
            return Err(HeadError::Bad(format!(
                "response head exceeds {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad(format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(ResponseHead { status, headers })
}

/// Reads one CRLF- (or LF-) terminated line of at most `max` bytes.
fn read_line_bounded(reader: &mut impl BufRead, max: usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {max} bytes"),
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// The race `SocketSlot` closes: a socket put in after `close` (a lane
    /// that connected while the stop was under way) is shut down as it is
    /// put in, so its reads end at once instead of at the read timeout;
    /// one put in before is shut down by `close`.
    #[test]
    fn a_socket_held_after_the_slot_closed_is_shut_down_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("address");
        for hold_first in [true, false] {
            let socket = TcpStream::connect(addr).expect("connects");
            let (_peer, _) = listener.accept().expect("accepts");
            // Without a shutdown this read waits out the timeout and fails.
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let slot = SocketSlot::default();
            if hold_first {
                slot.hold(&socket);
                slot.close();
            } else {
                slot.close();
                slot.hold(&socket);
            }
            let mut byte = [0u8; 1];
            let read = (&socket).read(&mut byte).expect("reads");
            assert_eq!(read, 0, "held first: {hold_first}");
        }
    }

    /// One request from a fake master's connection: the head, then as many
    /// body bytes as it says; the body, or `None` once the client is gone.
    fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(body)
    }

    /// A master that answers every call 202 and reports each connection it
    /// accepts; with `close_after_answer` it closes each connection after
    /// its first answer and reports that too.
    fn fake_master(close_after_answer: bool) -> (String, mpsc::Receiver<&'static str>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("address").to_string();
        let (events, heard) = mpsc::channel();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let _ = events.send("connection");
                let events = events.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(socket);
                    while read_request(&mut reader).is_some() {
                        let answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
                        if reader.get_mut().write_all(answer).is_err() {
                            return;
                        }
                        if close_after_answer {
                            let _ = reader.get_ref().shutdown(Shutdown::Both);
                            let _ = events.send("closed");
                            return;
                        }
                    }
                });
            }
        });
        (address, heard)
    }

    fn caller() -> Caller {
        Caller::new(None, SocketSlot::default())
    }

    #[test]
    fn calls_that_must_not_be_repeated_reuse_an_open_connection() {
        let (master, heard) = fake_master(false);
        let mut caller = caller();
        for _ in 0..3 {
            assert!(caller.post(&master, "s", b"accept", false).is_ok());
        }
        assert!(caller.post(&master, "s", b"ack", true).is_ok());
        let connections = heard.try_iter().filter(|e| *e == "connection").count();
        assert_eq!(connections, 1, "one keep-alive connection for every call");
    }

    #[test]
    fn a_call_that_must_not_be_repeated_avoids_a_connection_the_master_closed() {
        let (master, heard) = fake_master(true);
        let mut caller = caller();
        assert!(caller.post(&master, "s", b"accept", false).is_ok());
        let deadline = Duration::from_secs(5);
        assert_eq!(heard.recv_timeout(deadline), Ok("connection"));
        assert_eq!(heard.recv_timeout(deadline), Ok("closed"));
        // The master closed the idle connection: the next ACCEPT must not
        // go out on it (it would end as "outcome unknown"), but on a new one.
        assert!(caller.post(&master, "s", b"accept", false).is_ok());
        assert_eq!(heard.recv_timeout(deadline), Ok("connection"));
    }

    /// A master that reads requests on one connection after another and
    /// answers the n-th of each connection as `script[n]` says: a status
    /// ("202", "400") or "drop" (close without answering). It reads
    /// `gather` requests (at most) before it answers them, so a client that
    /// waits for each answer before it sends the next gets none. It reports
    /// each request body it read, in order.
    fn scripted_master(
        script: &'static [&'static str],
        gather: usize,
    ) -> (String, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("address").to_string();
        let (bodies, heard) = mpsc::channel();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let mut reader = BufReader::new(socket);
                'connection: for group in script.chunks(gather.max(1)) {
                    for _ in group {
                        let Some(body) = read_request(&mut reader) else {
                            break 'connection;
                        };
                        let _ = bodies.send(body);
                    }
                    for answer in group {
                        if *answer == "drop" {
                            break 'connection;
                        }
                        let text =
                            format!("HTTP/1.1 {answer} Status\r\nContent-Length: 4\r\n\r\nwhy!");
                        if reader.get_mut().write_all(text.as_bytes()).is_err() {
                            break 'connection;
                        }
                    }
                }
            }
        });
        (address, heard)
    }

    fn outcomes(results: &[Result<(), CallError>]) -> Vec<&'static str> {
        results
            .iter()
            .map(|result| match result {
                Ok(()) => "ok",
                Err(CallError::NotDelivered(_)) => "not delivered",
                Err(CallError::OutcomeUnknown(_)) => "unknown",
                Err(CallError::Refused(_)) => "refused",
            })
            .collect()
    }

    fn bodies(texts: &[&str]) -> Vec<Vec<u8>> {
        texts.iter().map(|text| text.as_bytes().to_vec()).collect()
    }

    #[test]
    fn pipelined_calls_are_answered_in_order_up_to_the_first_failure() {
        // The master answers only once it has all four: sent one at a
        // time, the first would wait for its answer in vain.
        let (master, heard) = scripted_master(&["202", "202", "400", "202"], 4);
        let mut caller = caller();
        let results = caller.post_pipelined(&master, "s", &bodies(&["a", "b", "c", "d"]));
        // The call after the refused one counts as not tried: it may go again.
        assert_eq!(outcomes(&results), ["ok", "ok", "refused"]);
        let deadline = Duration::from_secs(5);
        let got: Vec<Vec<u8>> = (0..4)
            .filter_map(|_| heard.recv_timeout(deadline).ok())
            .collect();
        assert_eq!(
            got,
            bodies(&["a", "b", "c", "d"]),
            "every request went out at once"
        );
    }

    #[test]
    fn pipelined_calls_that_must_not_be_repeated_all_get_an_outcome() {
        let (master, _heard) = scripted_master(&["202", "drop"], 1);
        let mut caller = caller();
        let results = caller.post_pipelined_once(&master, "s", &bodies(&["a", "b", "c"]));
        // The master may have taken "c" before it dropped the connection.
        assert_eq!(outcomes(&results), ["ok", "unknown", "unknown"]);
        // Nothing went out: only then are the calls after the first not tried.
        let nobody = TcpListener::bind("127.0.0.1:0").expect("binds");
        let closed = nobody.local_addr().expect("address").to_string();
        drop(nobody);
        let results = caller.post_pipelined_once(&closed, "s", &bodies(&["a", "b"]));
        assert_eq!(outcomes(&results), ["not delivered"]);
    }

    #[test]
    fn leader_from_location_handles_every_form() {
        let check = |location: &str, expected: Option<&str>| {
            assert_eq!(
                leader_from_location(location).as_deref(),
                expected,
                "{location}"
            );
        };
        check("//m2:5050/api/v1/scheduler", Some("m2:5050"));
        check("http://m2:5051/api/v1/scheduler", Some("m2:5051"));
        check("m3:5050", Some("m3:5050"));
        check("//m4/api/v1/scheduler", Some("m4:5050"));
        check("", None);
        check("///x", None);
    }

    #[test]
    fn response_head_is_parsed_and_bounded() {
        let mut ok = &b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nMesos-Stream-Id: abc\r\n\r\nrest"[..];
        let head = read_head(&mut ok).ok().expect("valid head");
        assert_eq!(
            (head.status, head.header("mesos-stream-id")),
            (200, Some("abc"))
        );
        let mut bad = &b"SMTP hello\r\n\r\n"[..];
        assert!(matches!(read_head(&mut bad), Err(HeadError::Bad(_))));
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_RESPONSE_HEAD)
        );
        assert!(read_head(&mut huge.as_bytes()).is_err());
    }
}
