//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // the plain connections being served, so that dropping the server
    // closes their reading part (P15)
    open: Arc<OpenConnections>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Bounds that keep slow, idle, oversized or broken clients from holding a
/// server's threads and memory, and the accept loop's answer to errors.
///
/// `Limits::default()` is what `Server::http`, `Server::new` and
/// `Server::from_listener` use; `Server::new_with_limits` and
/// `Server::from_listener_with_limits` take others. Change a field of the
/// default: the struct may gain fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// How long a request may take to arrive once it has started: its request
    /// line and headers must all arrive within this time of their first byte
    /// (408 and close otherwise), and each read of its body, by the handler or
    /// by the drain of an unread body, waits at most this long for data.
    /// Sets `SO_RCVTIMEO` on every accepted socket. `None` waits for ever.
    pub read_timeout: Option<Duration>,

    /// How long a connection may stay open with no request started, on
    /// arrival and between keep-alive requests; then it is closed without an
    /// answer. `None` waits for ever. (TLS connections use `read_timeout`.)
    pub idle_timeout: Option<Duration>,

    /// Most bytes of a request head: request line and header lines with their
    /// CRLFs. Past it the request is answered 414 URI Too Long (request line)
    /// or 431 Request Header Fields Too Large (headers) and the connection closes.
    pub max_header_bytes: usize,

    /// Most header fields in a request; past it, 431 and close.
    pub max_headers: usize,

    /// Most bytes of an unread request body that are read and thrown away when
    /// the request is dropped, so that the connection can serve its next
    /// request. With more left (or after `read_timeout` spent draining), the
    /// connection is closed instead.
    pub max_drain_bytes: usize,

    /// How long the accept loop pauses after `accept()` fails (for instance
    /// EMFILE when out of file descriptors) before it tries again.
    pub accept_error_backoff: Duration,

    /// Most client connections served at once. A connection accepted past it
    /// is answered `503 Service Unavailable` (with `Connection: close` and
    /// `Retry-After`) by the accept loop itself, without a thread, and closed.
    /// A connection counts from its accept until its connection thread ends.
    /// `None` (the default) serves any number, each with a thread and a
    /// socket, until the process runs out of either.
    pub max_connections: Option<usize>,

    /// Bodies with a `Content-Length` up to this many bytes are read by the
    /// connection's own thread, within `read_timeout` of the request's first
    /// byte like the head (408 and close otherwise), before `recv()` returns
    /// the request; a client expecting `100 Continue` gets it first. The
    /// handler then never waits on the client for such a body. Longer and
    /// chunked bodies are read by the handler, from the socket. 0.12.0 did
    /// this for up to 1 KiB without `Expect`.
    pub max_buffered_body: usize,
}

impl Limits {
    /// Default `read_timeout`.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `idle_timeout`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_header_bytes`.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
    /// Default `max_headers`.
    pub const DEFAULT_MAX_HEADERS: usize = 100;
    /// Default `max_drain_bytes`.
    pub const DEFAULT_MAX_DRAIN_BYTES: usize = 64 * 1024;
    /// Default `max_buffered_body`, 0.12.0's fixed value.
    pub const DEFAULT_MAX_BUFFERED_BODY: usize = 1024;
    /// Default `accept_error_backoff`.
    pub const DEFAULT_ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            read_timeout: Some(Limits::DEFAULT_READ_TIMEOUT),
            idle_timeout: Some(Limits::DEFAULT_IDLE_TIMEOUT),
            max_header_bytes: Limits::DEFAULT_MAX_HEADER_BYTES,
            max_headers: Limits::DEFAULT_MAX_HEADERS,
            max_drain_bytes: Limits::DEFAULT_MAX_DRAIN_BYTES,
            accept_error_backoff: Limits::DEFAULT_ACCEPT_ERROR_BACKOFF,
            max_connections: None,
            max_buffered_body: Limits::DEFAULT_MAX_BUFFERED_BODY,
        }
    }
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::new_with_limits(config, Limits::default())
    }

    /// Same as `new()`, within the given limits.
    pub fn new_with_limits(
        config: ServerConfig,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener_with_limits(listener, config.ssl, limits)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, Limits::default())
    }

    /// Same as `from_listener()`, within the given limits.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let open = Arc::new(OpenConnections::default());
        let inside_open = Arc::clone(&open);
        thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            // connections being served now, for `limits.max_connections`
            let open_connections = Arc::new(AtomicUsize::new(0));

            log::debug!("Running accept thread");
            let mut accept_errors = AcceptErrorLog::default();
            while !inside_close_trigger.load(Relaxed) {
                let new_client = match server.accept() {
                    Ok((sock, _)) => {
                        use util::RefinedTcpStream;
                        let slot = match ConnectionSlot::take(&open_connections, &limits) {
                            Some(slot) => slot,
                            None => {
                                refuse_over_budget(sock);
                                continue;
                            }
                        };
                        // Covers the request line, headers and body alike; a
                        // connection whose socket cannot take it is not served.
                        if let Err(err) = sock.set_read_timeout(limits.read_timeout) {
                            log::warn!("Dropping a new client, no read timeout: {}", err);
                            continue;
                        }
                        let (read_closable, write_closable) = match ssl {
                            None => {
                                // P15: known to the server until its thread
                                // is done, so dropping the server closes it.
                                let sock = Arc::new(sock);
                                inside_open.watch(&sock);
                                // The server may have been dropped since
                                // this connection was accepted.
                                if inside_close_trigger.load(SeqCst) {
                                    let _ = sock.shutdown(Shutdown::Read);
                                }
                                RefinedTcpStream::new(sock)
                            }
                            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                            Some(ref ssl) => {
                                // trying to apply SSL over the connection
                                // if an error occurs, we just close the socket and resume listening
                                let sock = match ssl.accept(sock) {
                                    Ok(s) => s,
                                    Err(_) => continue,
                                };

                                RefinedTcpStream::new(sock)
                            }
                            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                            Some(ref _ssl) => unreachable!(),
                        };

                        ClientConnection::new(write_closable, read_closable, limits.clone())
                            .map(|client| (client, slot))
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok((client, slot)) => {
                        let messages = inside_messages.clone();
                        let mut client = Some((client, slot));
                        tasks_pool.spawn(Box::new(move || {
                            // the slot is given back when this thread is done
                            if let Some((client, _slot)) = client.take() {
                                // P13: the next request of a connection is read
                                // only once the current one is answered (as
                                // upstream did for HTTPS alone): a request
                                // pipelined behind a response that streams
                                // for long (`into_writer`) waits in its
                                // client's socket instead of holding a worker
                                // whose answer would queue behind the stream.
                                let (sender, receiver) = mpsc::channel();
                                for rq in client {
                                    messages.push(rq.with_notify_sender(sender.clone()).into());
                                    // `sender` is held here, so this only waits.
                                    // P18: a response that only the connection's
                                    // end delimits closes it (dropping `client`).
                                    if let Ok(true) = receiver.recv() {
                                        break;
                                    }
                                }
                            }
                        }));
                    }

                    // Out of file descriptors (EMFILE, ENFILE) or memory, a
                    // connection aborted before it was accepted (ECONNABORTED),
                    // a client gone before its address was read: none of these
                    // should end the server. Pause, so that a lasting error
                    // does not spin, and accept again.
                    Err(e) => {
                        if let Some(left_out) = accept_errors.admit(std::time::Instant::now()) {
                            log::error!(
                                "Error accepting new client (retrying in {:?}): {}{}",
                                limits.accept_error_backoff,
                                e,
                                if left_out > 0 {
                                    format!(
                                        " ({} more in the last {} s)",
                                        left_out,
                                        ACCEPT_ERROR_LOG_WINDOW.as_secs()
                                    )
                                } else {
                                    String::new()
                                }
                            );
                        }
                        thread::sleep(limits.accept_error_backoff);
                    }
                }
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            open,
            close: close_trigger,
            listening_addr: local_addr,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

/// One connection's place within `Limits::max_connections`, given back
/// when dropped.
/// The plain connections a server serves, weakly: a connection whose
/// thread is done is gone from here too (pruned as new ones come). P15.
#[derive(Default)]
struct OpenConnections {
    live: Mutex<Vec<Weak<Connection>>>,
}

impl OpenConnections {
    /// Fewest entries kept before dead ones are pruned.
    const PRUNE_FLOOR: usize = 64;

    fn watch(&self, connection: &Arc<Connection>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        // Pruned when full, so pushes stay amortized O(1) and the list is
        // at most twice the connections open.
        if live.len() >= Self::PRUNE_FLOOR && live.len() == live.capacity() {
            live.retain(|weak| weak.strong_count() > 0);
        }
        live.push(Arc::downgrade(connection));
    }

    fn close_reading(&self) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for connection in live.iter().filter_map(Weak::upgrade) {
            let _ = connection.shutdown(Shutdown::Read);
        }
    }
}

struct ConnectionSlot(Option<Arc<AtomicUsize>>);

impl ConnectionSlot {
    /// A slot for a new connection, or `None` when all are taken.
    fn take(open: &Arc<AtomicUsize>, limits: &Limits) -> Option<ConnectionSlot> {
        let max = match limits.max_connections {
            None => return Some(ConnectionSlot(None)),
            Some(max) => max,
        };
        // only the accept thread adds, so a load then an add cannot overshoot
        if open.load(SeqCst) >= max {
            return None;
        }
        open.fetch_add(1, SeqCst);
        Some(ConnectionSlot(Some(Arc::clone(open))))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, SeqCst);
        }
    }
}

/// The whole answer to a connection over `Limits::max_connections`.
const OVER_BUDGET_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 27\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
\r\n\
too many open connections\r\n";

/// Most bytes of an over-budget client's request read (and thrown away)
/// before its socket closes; see `refuse_over_budget`.
const OVER_BUDGET_READ: usize = 16 * 1024;

/// A lasting `accept()` error (EMFILE) comes back every
/// `accept_error_backoff`: it is logged at most once per
/// `ACCEPT_ERROR_LOG_WINDOW`, with the count of those left out.
const ACCEPT_ERROR_LOG_WINDOW: Duration = Duration::from_secs(10);

/// When the last accept error was logged and how many were left out since.
#[derive(Default)]
struct AcceptErrorLog {
    logged_at: Option<std::time::Instant>,
    left_out: u64,
}

impl AcceptErrorLog {
    /// `Some(left out before this one)` when the error at `now` is to be
    /// logged; `None` when it is only counted.
    fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        if let Some(at) = self.logged_at {
            if now.saturating_duration_since(at) < ACCEPT_ERROR_LOG_WINDOW {
                self.left_out += 1;
                return None;
            }
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.left_out))
    }
}

/// Answers a connection over the budget with `OVER_BUDGET_RESPONSE` and closes
/// it, on the accept thread, never waiting: the socket is non-blocking, and
/// the short answer fits a fresh socket's send buffer. What the client already
/// sent is read first (up to `OVER_BUDGET_READ`), because closing a socket
/// with unread data resets the connection, which can destroy the answer
/// before the client reads it.
fn refuse_over_budget(mut sock: Connection) {
    use std::io::{Read, Write};
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut read = 0;
    while read < OVER_BUDGET_READ {
        match sock.read(&mut buf) {
            Ok(n) if n > 0 => read += n,
            _ => break,
        }
    }
    if sock.write_all(OVER_BUDGET_RESPONSE).is_ok() {
        sock.shutdown(Shutdown::Write).ok();
    }
    log::debug!("Refused a client over the connection limit");
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, SeqCst);
        // P15: what the documentation always promised: the reading part of
        // every connection is closed, so an idle keep-alive connection ends
        // (its thread reads end of file and closes it) instead of reading
        // requests that no one will answer. Responses already under way
        // are still written.
        self.open.close_reading();
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod accept_error_log_tests {
    use super::{AcceptErrorLog, ACCEPT_ERROR_LOG_WINDOW};
    use std::time::{Duration, Instant};

    #[test]
    fn a_lasting_accept_error_is_logged_once_per_window_with_a_count() {
        let start = Instant::now();
        let mut log = AcceptErrorLog::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(log.admit(at(0)), Some(0));
        // Every 100 ms (the default backoff) for one window: counted only.
        for n in 1..100 {
            assert_eq!(log.admit(at(n * 100)), None);
        }
        let window = ACCEPT_ERROR_LOG_WINDOW.as_millis() as u64;
        assert_eq!(log.admit(at(window)), Some(99));
        assert_eq!(log.admit(at(window + 1)), None);
    }
}
