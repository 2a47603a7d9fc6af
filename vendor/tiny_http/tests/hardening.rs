//! Hostile-client tests for the hardening patches listed in `PATCHES.md`.
//!
//! Every test talks to a real server over sockets on 127.0.0.1, waits on named
//! bounds (never a bare sleep), and failed on the unpatched tiny_http 0.12.0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Response, Server};

/// How long a test waits for an answer the server owes it. Generous: a test
/// that needs it all has failed.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// Connections in one burst: four times the pool's idle threads.
const BURST: usize = 16;

/// Bursts per run: the race is timing-dependent, each burst is a fresh try.
const BURST_ROUNDS: usize = 3;

/// Answers every request with `200 ok` on a thread of its own until dropped.
struct Answering {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Answering {
    fn start(server: Server) -> Answering {
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for request in serving.incoming_requests() {
                let _ = request.respond(Response::from_string("ok"));
            }
        });
        Answering {
            server,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.server_addr().to_ip().unwrap()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads from `stream` until the end of a response head, the end of the
/// stream, or `bound`; returns what arrived (empty if nothing did).
fn read_head(stream: &mut TcpStream, bound: Duration) -> String {
    let deadline = Instant::now() + bound;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// P1 (finding B4): each connection of a burst that stays open after its
/// request holds a pool thread for good; every one of them must still be read.
/// Unpatched, the pool queued some behind threads already claimed by earlier
/// connections, and their requests were never answered.
#[test]
fn burst_of_kept_alive_connections_is_all_answered() {
    for _ in 0..BURST_ROUNDS {
        check_burst_is_all_answered();
    }
}

fn check_burst_is_all_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The whole burst waits in the backlog before the server starts, so the
    // accept loop takes it back to back, as under real load.
    let mut burst = Vec::new();
    for idx in 0..BURST {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", idx).unwrap();
        burst.push(stream);
    }
    let _answering = Answering::start(Server::from_listener(listener, None).unwrap());

    // Every connection stays open until all were checked, so a thread that
    // served one never comes back for a queued one.
    let deadline = Instant::now() + ANSWER_BOUND;
    let unanswered: Vec<usize> = (0..BURST)
        .filter(|&idx| {
            let left = deadline.saturating_duration_since(Instant::now());
            !read_head(&mut burst[idx], left).starts_with("HTTP/1.1 200")
        })
        .collect();
    assert!(
        unanswered.is_empty(),
        "connections {:?} of a burst of {} were never answered",
        unanswered,
        BURST
    );
}
