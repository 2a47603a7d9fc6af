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

/// Answers the requests that come until `until`; fails on a `recv` error.
fn answer_until(server: &Server, until: Instant) -> Result<usize, String> {
    let mut answered = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(answered);
        }
        match server.recv_timeout(left) {
            Ok(Some(request)) => {
                request.respond(Response::from_string("ok")).unwrap();
                answered += 1;
            }
            Ok(None) => {}
            Err(err) => return Err(format!("recv failed: {}", err)),
        }
    }
}

/// Answers one request, which must come within `ANSWER_BOUND`.
fn answer_one(server: &Server) -> Result<(), String> {
    match server.recv_timeout(ANSWER_BOUND) {
        Ok(Some(request)) => request
            .respond(Response::from_string("ok"))
            .map_err(|err| err.to_string()),
        Ok(None) => Err("no request came".to_string()),
        Err(err) => Err(format!("recv failed: {}", err)),
    }
}

/// Reads `client`'s answer until the server closes it, within `ANSWER_BOUND`.
fn read_answer(client: &mut TcpStream) -> Result<(), String> {
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
    // Fill the descriptor table, then free one for a client's socket. If the
    // accept loop is not blocked in accept() yet, accepting that client fails
    // with EMFILE; if it is, accept() had its descriptor reserved, takes the
    // client, and the accept() after it fails instead.
    let mut filler = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        filler.push(file);
    }
    filler.pop();
    let mut first = TcpStream::connect(addr).unwrap();
    send_request(&mut first);
    // Unpatched, the failed accept() came out of recv() as an error, and the
    // accept loop ended with the listener.
    let while_full = answer_until(&server, Instant::now() + FULL_WINDOW);
    drop(filler);
    set_soft_nofile(original);
    let while_full = while_full.expect("while out of descriptors");

    // Descriptors are back: every client is accepted and served.
    if while_full == 0 {
        assert_eq!(answer_one(&server), Ok(()), "the client of EMFILE");
    }
    assert_eq!(read_answer(&mut first), Ok(()), "the client of EMFILE");
    let mut second = TcpStream::connect(addr).unwrap();
    send_request(&mut second);
    assert_eq!(answer_one(&server), Ok(()), "a client after EMFILE");
    assert_eq!(read_answer(&mut second), Ok(()), "a client after EMFILE");
}
