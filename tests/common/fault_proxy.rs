//! A TCP fault proxy for tests: it sits between a scheduler and a Mesos master
//! (real or simulated) and, on command, breaks the connection in the ways a
//! real network does. It knows just enough HTTP to tell the long-lived
//! SUBSCRIBE stream (its response carries `Mesos-Stream-Id`) from the short
//! call POSTs, so a call outage can leave the event stream flowing.
//!
//! Standalone on purpose (std only): any test binary can include it with
//! `#[path = "../common/fault_proxy.rs"] mod fault_proxy;`.

#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Size of one relay read.
const CHUNK: usize = 16 * 1024;
/// How long a connect to the upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Header that marks the response of a SUBSCRIBE call (the event stream).
const STREAM_HEADER: &[u8] = b"Mesos-Stream-Id";

/// What the proxy does with traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Relay everything both ways.
    Pass,
    /// A call outage: new connections are accepted and closed at once, and a
    /// request on an already open connection that is not the event stream is
    /// cut (connection closed, nothing forwarded), because a pooled keep-alive
    /// connection would otherwise let calls through. The SUBSCRIBE stream
    /// keeps flowing.
    RefuseNew,
    /// For the first `count` requests whose bytes contain `marker`: forward
    /// the request to the upstream, wait for its answer, then close the client
    /// connection instead of relaying it. The client sees its request sent and
    /// no response: an unknown outcome. Afterwards the proxy passes again.
    LoseResponse { marker: String, count: u64 },
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted and relayed.
    pub relayed: u64,
    /// Connections closed at accept time (RefuseNew).
    pub refused: u64,
    /// Requests cut on an open connection (RefuseNew).
    pub cut: u64,
    /// Requests forwarded whose response was dropped (LoseResponse).
    pub responses_lost: u64,
}

#[derive(Default)]
struct Stats {
    relayed: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    responses_lost: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    stats: Stats,
    stopping: AtomicBool,
    /// Clones of every open connection's sockets, shut down on drop.
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy; stopped (every connection closed) on drop.
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
            stats: Stats::default(),
            stopping: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
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

    pub fn counters(&self) -> Counters {
        let stats = &self.shared.stats;
        Counters {
            relayed: stats.relayed.load(Ordering::SeqCst),
            refused: stats.refused.load(Ordering::SeqCst),
            cut: stats.cut.load(Ordering::SeqCst),
            responses_lost: stats.responses_lost.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept, then close every relayed connection.
        let _ = TcpStream::connect(self.addr);
        for stream in lock(&self.shared.open).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
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
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if *lock(&shared.mode) == Mode::RefuseNew {
            shared.stats.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT)
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        shared.stats.relayed.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
            let mut open = lock(&shared.open);
            open.retain(|s| s.peer_addr().is_ok());
            open.extend([c, u]);
        }
        let connection = Arc::new(Connection::default());
        let (c2, u2) = match (client.try_clone(), upstream.try_clone()) {
            (Ok(c), Ok(u)) => (c, u),
            _ => continue,
        };
        let (up_shared, up_conn) = (shared.clone(), connection.clone());
        let _ = std::thread::Builder::new()
            .name("fault-proxy-up".into())
            .spawn(move || client_to_upstream(client, upstream, &up_shared, &up_conn));
        let down_shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("fault-proxy-down".into())
            .spawn(move || upstream_to_client(u2, c2, &down_shared, &connection));
    }
}

/// Per-connection flags shared by its two relay threads.
#[derive(Default)]
struct Connection {
    /// The upstream answered with `Mesos-Stream-Id`: this is the event stream.
    stream: AtomicBool,
    /// The next response must be dropped and the client closed.
    lose_response: AtomicBool,
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Client bytes to the upstream, applying the request-side faults.
fn client_to_upstream(
    mut client: TcpStream,
    mut upstream: TcpStream,
    shared: &Shared,
    connection: &Connection,
) {
    let mut buffer = vec![0u8; CHUNK];
    // The end of the previous read, so a marker split across reads is found.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &buffer[..n];
        let mode = lock(&shared.mode).clone();
        match mode {
            Mode::Pass => {}
            Mode::RefuseNew => {
                if !connection.stream.load(Ordering::SeqCst) {
                    shared.stats.cut.fetch_add(1, Ordering::SeqCst);
                    close(&client, &upstream);
                    return;
                }
            }
            Mode::LoseResponse { marker, count } => {
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(bytes);
                if count > 0 && contains(&window, marker.as_bytes()) {
                    // Claim one of the `count` losses under the mode lock.
                    let mut current = lock(&shared.mode);
                    if let Mode::LoseResponse { count, .. } = &mut *current {
                        if *count > 0 {
                            *count -= 1;
                            // Set before forwarding, so the answer is never relayed.
                            connection.lose_response.store(true, Ordering::SeqCst);
                        }
                    }
                }
                let keep = marker.len().saturating_sub(1).min(window.len());
                tail = window[window.len() - keep..].to_vec();
            }
        }
        if upstream.write_all(bytes).is_err() {
            break;
        }
    }
    close(&client, &upstream);
}

/// Upstream bytes to the client, dropping a response that is to be lost.
fn upstream_to_client(
    mut upstream: TcpStream,
    mut client: TcpStream,
    shared: &Shared,
    connection: &Connection,
) {
    let mut buffer = vec![0u8; CHUNK];
    let mut first = true;
    loop {
        let n = match upstream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &buffer[..n];
        if first && contains(bytes, STREAM_HEADER) {
            connection.stream.store(true, Ordering::SeqCst);
        }
        first = false;
        if connection.lose_response.load(Ordering::SeqCst) {
            // The upstream has handled the request; the client never learns how.
            shared.stats.responses_lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client.write_all(bytes).is_err() {
            break;
        }
    }
    close(&client, &upstream);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// An upstream that answers each line with `ok <line>`, and a line that
    /// starts with `stream` with a `Mesos-Stream-Id` header first.
    fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone");
                    for line in std::io::BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        let header = if line.starts_with("stream") {
                            "Mesos-Stream-Id: x\n"
                        } else {
                            ""
                        };
                        if writer
                            .write_all(format!("{header}ok {line}\n").as_bytes())
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(proxy: &FaultProxy) -> (TcpStream, std::io::BufReader<TcpStream>) {
        let stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    /// Sends a line; returns the answer's last line, or None when the proxy closed.
    fn ask(
        stream: &mut TcpStream,
        reader: &mut std::io::BufReader<TcpStream>,
        line: &str,
    ) -> Option<String> {
        stream.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        loop {
            answer.clear();
            match reader.read_line(&mut answer) {
                Ok(0) | Err(_) => return None,
                Ok(_) if answer.starts_with("ok ") => return Some(answer.trim().to_string()),
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn pass_refuse_new_and_lose_response() {
        let proxy = FaultProxy::start(echo_upstream()).expect("proxy");
        let (mut stream, mut stream_reader) = connect(&proxy);
        assert_eq!(
            ask(&mut stream, &mut stream_reader, "stream").as_deref(),
            Some("ok stream")
        );
        let (mut call, mut call_reader) = connect(&proxy);
        assert_eq!(
            ask(&mut call, &mut call_reader, "a").as_deref(),
            Some("ok a")
        );

        proxy.set_mode(Mode::RefuseNew);
        // The stream flows; the open call connection is cut; a new one is closed.
        assert_eq!(
            ask(&mut stream, &mut stream_reader, "b").as_deref(),
            Some("ok b")
        );
        assert_eq!(ask(&mut call, &mut call_reader, "c"), None);
        let (mut fresh, mut fresh_reader) = connect(&proxy);
        assert_eq!(ask(&mut fresh, &mut fresh_reader, "d"), None);

        proxy.set_mode(Mode::LoseResponse {
            marker: "task-7".into(),
            count: 1,
        });
        let (mut call, mut call_reader) = connect(&proxy);
        assert_eq!(
            ask(&mut call, &mut call_reader, "other").as_deref(),
            Some("ok other")
        );
        assert_eq!(ask(&mut call, &mut call_reader, "launch task-7"), None);
        let (mut again, mut again_reader) = connect(&proxy);
        assert_eq!(
            ask(&mut again, &mut again_reader, "launch task-7").as_deref(),
            Some("ok launch task-7"),
            "only `count` responses are lost"
        );
        assert_eq!(
            proxy.counters(),
            Counters {
                relayed: 4,
                refused: 1,
                cut: 1,
                responses_lost: 1
            }
        );
        assert_eq!(
            proxy.mode(),
            Mode::LoseResponse {
                marker: "task-7".into(),
                count: 0
            }
        );
    }
}
