//! P4 (finding B2): the accept loop survives `accept()` failing with EMFILE.
//!
//! A test binary of its own, because it lowers the whole process's open-file
//! limit (with util-linux `prlimit`, as std cannot) and fills it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tiny_http::{Limits, Response, Server};

/// How long the test waits for the answer the server owes it.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// How long the descriptor table stays full while a connection waits to be
/// accepted: the accept loop fails with EMFILE at once and then many times
/// more (`BACKOFF` apart).
const FULL_WINDOW: Duration = Duration::from_millis(300);

/// The accept loop's pause after an error, short for the test.
const BACKOFF: Duration = Duration::from_millis(10);

/// Descriptors of headroom over those open when the limit is lowered.
const HEADROOM: usize = 32;

/// Sets this process's soft open-file limit, keeping the hard one.
fn set_soft_nofile(soft: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={}:", soft))
        .status()
        .expect("prlimit (util-linux) is needed to lower the open-file limit");
    assert!(status.success(), "prlimit failed");
}

/// This process's soft open-file limit.
fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sends a request on `client` and reads until the server closes it.
fn send_request(client: &mut TcpStream) {
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
}

/// Serves one request (which must come within `ANSWER_BOUND`) and checks
/// that `client` gets the answer.
fn serve_one(server: &Server, client: &mut TcpStream) -> Result<(), String> {
    let request = match server.recv_timeout(ANSWER_BOUND) {
        Ok(Some(request)) => request,
        other => return Err(format!("no request but {:?}", other.map(|_| ()))),
    };
    request.respond(Response::from_string("ok")).unwrap();
    let deadline = Instant::now() + ANSWER_BOUND;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        client.set_read_timeout(Some(left)).unwrap();
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {:?}", answer));
    }
    Ok(())
}

#[test]
fn accept_loop_survives_emfile() {
    let mut limits = Limits::default();
    limits.accept_error_backoff = BACKOFF;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::from_listener_with_limits(listener, None, limits).unwrap();
    let addr = server.server_addr().to_ip().unwrap();

    let original = soft_nofile();
    set_soft_nofile((open_fds() + HEADROOM) as u64);
    // Fill the descriptor table, then free one for a client's socket. A
    // blocked accept() has its descriptor reserved already, so that client
    // is accepted; the accept() after it finds the table full: EMFILE.
    let mut filler = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        filler.push(file);
    }
    filler.pop();
    let mut first = TcpStream::connect(addr).unwrap();
    send_request(&mut first);
    let served_first = serve_one(&server, &mut first);
    // No new connection can be accepted while the table is full; unpatched,
    // the failed accept() came out of recv() as an error and the loop ended.
    let while_full = server.recv_timeout(FULL_WINDOW);
    drop(filler);
    set_soft_nofile(original);
    assert_eq!(served_first, Ok(()), "the first client");
    assert!(
        matches!(while_full, Ok(None)),
        "while out of descriptors: {:?}",
        while_full.map(|request| request.is_some())
    );

    // Descriptors are back: a new connection is accepted and served.
    let mut second = TcpStream::connect(addr).unwrap();
    send_request(&mut second);
    assert_eq!(
        serve_one(&server, &mut second),
        Ok(()),
        "a client after EMFILE"
    );
}
