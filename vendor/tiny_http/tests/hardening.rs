//! Hostile-client tests for the hardening patches listed in `PATCHES.md`.
//!
//! Every test talks to a real server over sockets on 127.0.0.1, waits on named
//! bounds (never a bare sleep), and failed on the unpatched tiny_http 0.12.0.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Limits, Response, Server};

/// How long a test waits for an answer the server owes it. Generous: a test
/// that needs it all has failed.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// Connections in one burst: four times the pool's idle threads.
const BURST: usize = 16;

/// Bursts per run: the race is timing-dependent, each burst is a fresh try.
const BURST_ROUNDS: usize = 3;

/// The read and idle timeouts of the tests that wait for them: short, so
/// that each such test runs in about a second.
const TEST_TIMEOUT: Duration = Duration::from_millis(500);

/// Limits with the timeouts shortened to `TEST_TIMEOUT`.
fn short_timeouts() -> Limits {
    let mut limits = Limits::default();
    limits.read_timeout = Some(TEST_TIMEOUT);
    limits.idle_timeout = Some(TEST_TIMEOUT);
    limits
}

/// A server on 127.0.0.1:0 within `limits`.
fn server_with(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Server::from_listener_with_limits(listener, None, limits).unwrap()
}

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

/// Reads from `stream` until the server closes it (or `bound` passes, which
/// fails the test); returns everything that arrived.
fn read_to_close(stream: &mut TcpStream, bound: Duration) -> String {
    let deadline = Instant::now() + bound;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection still open after {:?}, got {:?}",
            bound,
            String::from_utf8_lossy(&received)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err)
                if err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::TimedOut => {}
            // A reset after the answer still closes the connection.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `request` on a new connection to `addr` and returns all that
/// arrives until the server closes the connection, within `ANSWER_BOUND`.
fn exchange_until_close(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    read_to_close(&mut stream, ANSWER_BOUND)
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

/// P2: a request head that stops half-way is answered 408 and closed once
/// the read timeout passes. Unpatched, it held a thread for ever.
#[test]
fn stalled_request_head_times_out_with_408() {
    let answering = Answering::start(server_with(short_timeouts()));
    let answer = exchange_until_close(answering.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(answer.starts_with("HTTP/1.1 408"), "got {:?}", answer);
}

/// P2: a head trickled in a byte at a time, each byte within the read
/// timeout, still has to arrive within the read timeout in total.
#[test]
fn trickled_request_head_times_out_with_408() {
    let answering = Answering::start(server_with(short_timeouts()));
    let mut stream = TcpStream::connect(answering.addr()).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // One header byte per TEST_TIMEOUT / 5, pacing on the read for an answer.
    let pace = TEST_TIMEOUT / 5;
    let deadline = Instant::now() + ANSWER_BOUND;
    let mut buf = [0u8; 1024];
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "a trickled head was never cut off"
        );
        if stream.write_all(b"x").is_err() {
            break read_to_close(&mut stream, ANSWER_BOUND);
        }
        stream.set_read_timeout(Some(pace)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break String::new(),
            Ok(n) => break String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(err)
                if err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::TimedOut => {}
            Err(err) => panic!("{}", err),
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "got {:?}", answer);
}

/// P2: a body that stops half-way fails the handler's read once the read
/// timeout passes. Unpatched, the handler blocked for ever.
#[test]
fn stalled_body_read_times_out() {
    let server = Arc::new(server_with(short_timeouts()));
    let addr = server.server_addr().to_ip().unwrap();
    let (read_result, read_results) = channel();
    let handler = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            let mut request = server.recv().unwrap();
            let mut body = Vec::new();
            let result = request.as_reader().read_to_end(&mut body);
            read_result.send(result.map_err(|err| err.kind())).unwrap();
        })
    };
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\nx")
        .unwrap();
    match read_results.recv_timeout(ANSWER_BOUND) {
        Ok(result) => assert_eq!(result, Err(ErrorKind::TimedOut)),
        Err(_) => panic!("the body read never returned"),
    }
    handler.join().unwrap();
}

/// P2: a connection with no request started is closed after the idle
/// timeout, both on arrival and after a keep-alive request.
#[test]
fn idle_connections_are_closed() {
    let answering = Answering::start(server_with(short_timeouts()));
    let mut silent = TcpStream::connect(answering.addr()).unwrap();
    let mut kept_alive = TcpStream::connect(answering.addr()).unwrap();
    kept_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut kept_alive, ANSWER_BOUND).starts_with("HTTP/1.1 200"));

    assert_eq!(read_to_close(&mut silent, ANSWER_BOUND), "");
    let rest = read_to_close(&mut kept_alive, ANSWER_BOUND);
    assert!(
        !rest.contains("HTTP/1.1"),
        "an idle close got an answer: {:?}",
        rest
    );
}

/// P3 (finding B3): headers over `max_header_bytes` get 431 and a close.
/// Unpatched, any amount was buffered.
#[test]
fn oversized_headers_get_431() {
    let answering = Answering::start(server_with(Limits::default()));
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend_from_slice(&vec![b'a'; Limits::DEFAULT_MAX_HEADER_BYTES]);
    request.extend_from_slice(b"\r\n\r\n");
    let answer = exchange_until_close(answering.addr(), &request);
    assert!(answer.starts_with("HTTP/1.1 431"), "got {:?}", answer);
}

/// P3 (finding B3): more than `max_headers` header fields get 431; as many
/// as allowed are served.
#[test]
fn too_many_headers_get_431() {
    let answering = Answering::start(server_with(Limits::default()));
    let request = |count: usize| {
        let mut request = b"GET / HTTP/1.1\r\nConnection: close\r\n".to_vec();
        for idx in 1..count {
            request.extend_from_slice(format!("X-{}: y\r\n", idx).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request
    };
    let at_limit = exchange_until_close(answering.addr(), &request(Limits::DEFAULT_MAX_HEADERS));
    assert!(at_limit.starts_with("HTTP/1.1 200"), "got {:?}", at_limit);
    let over = exchange_until_close(answering.addr(), &request(Limits::DEFAULT_MAX_HEADERS + 1));
    assert!(over.starts_with("HTTP/1.1 431"), "got {:?}", over);
}

/// P3: a request line alone over `max_header_bytes` gets 414.
#[test]
fn oversized_request_line_gets_414() {
    let answering = Answering::start(server_with(Limits::default()));
    let mut request = b"GET /".to_vec();
    request.extend_from_slice(&vec![b'a'; Limits::DEFAULT_MAX_HEADER_BYTES]);
    request.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    let answer = exchange_until_close(answering.addr(), &request);
    assert!(answer.starts_with("HTTP/1.1 414"), "got {:?}", answer);
}

/// P5 (finding B1): a request dropped with a large body unread closes the
/// connection at once instead of reading the body. Unpatched, the handler's
/// thread blocked in the drop, draining a body that never came.
#[test]
fn dropped_request_with_large_unread_body_closes() {
    let server = Arc::new(server_with(Limits::default()));
    let addr = server.server_addr().to_ip().unwrap();
    let (dropped, drops) = channel();
    let handler = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            let request = server.recv().unwrap();
            let _ = request.respond(Response::from_string("not read"));
            dropped.send(()).unwrap();
        })
    };
    let mut stream = TcpStream::connect(addr).unwrap();
    let declared = Limits::DEFAULT_MAX_DRAIN_BYTES + 1;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nx",
        declared
    )
    .unwrap();
    assert!(
        drops.recv_timeout(ANSWER_BOUND).is_ok(),
        "dropping the request blocked on its unread body"
    );
    let answer = read_to_close(&mut stream, ANSWER_BOUND);
    assert!(answer.starts_with("HTTP/1.1 200"), "got {:?}", answer);
    handler.join().unwrap();
}

/// P5: a small unread body is still drained, and the connection goes on to
/// its next request.
#[test]
fn dropped_request_with_small_unread_body_keeps_the_connection() {
    let answering = Answering::start(server_with(Limits::default()));
    let mut stream = TcpStream::connect(answering.addr()).unwrap();
    let body = vec![b'x'; 4096];
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    assert!(read_head(&mut stream, ANSWER_BOUND).starts_with("HTTP/1.1 200"));
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let next = read_head(&mut stream, ANSWER_BOUND);
    assert!(next.contains("HTTP/1.1 200"), "got {:?}", next);
}

/// P6 (finding B10): an HTTP/2.0 request line, the h2 preface's too, gets
/// 505 and a close. Unpatched, it got nothing and its thread deadlocked.
#[test]
fn http2_request_lines_get_505() {
    let answering = Answering::start(server_with(Limits::default()));
    for request in [
        &b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let answer = exchange_until_close(answering.addr(), request);
        assert!(answer.starts_with("HTTP/1.1 505"), "got {:?}", answer);
    }
}

/// P7 (finding B10): Content-Length headers that disagree, or are not a
/// number, get 400; repeated equal ones are accepted.
#[test]
fn conflicting_content_lengths_get_400() {
    let answering = Answering::start(server_with(Limits::default()));
    let check = |headers: &str, status: &str| {
        let request = format!(
            "POST / HTTP/1.1\r\nConnection: close\r\n{}\r\n\r\nabcde",
            headers
        );
        let answer = exchange_until_close(answering.addr(), request.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {}", status)),
            "{:?} got {:?}",
            headers,
            answer
        );
    };
    check("Content-Length: 3\r\nContent-Length: 5", "400");
    check("Content-Length: 3, 5", "400");
    check("Content-Length: five", "400");
    check("Content-Length: +5", "400");
    check("Content-Length: 5\r\nContent-Length: 5", "200");
    check("Content-Length: 5, 5", "200");
}

/// P8: a chunked body left partly unread closes the connection, so nothing
/// inside the body is read as a request. Unpatched, a request hidden in the
/// body past what the handler read was served.
#[test]
fn partly_read_chunked_body_closes_the_connection() {
    /// Body bytes the handler reads before it answers, as a handler with a
    /// body size limit would.
    const READ_BY_HANDLER: usize = 8;
    let server = Arc::new(server_with(Limits::default()));
    let addr = server.server_addr().to_ip().unwrap();
    let handler = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut start = [0u8; READ_BY_HANDLER];
                let _ = request.as_reader().read(&mut start);
                let url = request.url().to_string();
                let _ = request.respond(Response::from_string(url));
            }
        })
    };
    let hidden = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut chunk = vec![b'x'; READ_BY_HANDLER];
    chunk.extend_from_slice(hidden);
    let mut request =
        b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    request.extend_from_slice(&chunk);
    request.extend_from_slice(b"\r\n0\r\n\r\n");

    let answer = exchange_until_close(addr, &request);
    assert!(answer.starts_with("HTTP/1.1 200"), "got {:?}", answer);
    assert!(
        !answer.contains("smuggled"),
        "a request inside a body was served: {:?}",
        answer
    );
    server.unblock();
    handler.join().unwrap();
}

/// P5: once a read of the body has failed (here: timed out), dropping the
/// request does not drain the rest, which would wait on the same client
/// again; the connection closes instead. Unpatched, the drop drained what the
/// client sent late, and served its next request.
#[test]
fn body_read_failure_closes_instead_of_draining() {
    let server = Arc::new(server_with(short_timeouts()));
    let addr = server.server_addr().to_ip().unwrap();
    let handler = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                let status = match request.as_reader().read_to_end(&mut body) {
                    Ok(_) => 200,
                    Err(_) => 400,
                };
                let _ = request.respond(Response::empty(status));
            }
        })
    };
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\nx")
        .unwrap();
    let head = read_head(&mut stream, ANSWER_BOUND);
    assert!(head.starts_with("HTTP/1.1 400"), "got {:?}", head);
    // The rest of the body, late, then a next request on the connection.
    let mut late = vec![b'x'; 1999];
    late.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = stream.write_all(&late);
    let rest = read_to_close(&mut stream, ANSWER_BOUND);
    assert!(
        !rest.contains("HTTP/1.1"),
        "served after a failed body read: {:?}",
        rest
    );
    server.unblock();
    handler.join().unwrap();
}

/// P9 (finding B2): past `max_connections`, a new connection is answered 503
/// and closed by the accept loop; once a connection ends, its slot serves a
/// new one. Unpatched, every connection got a thread and a socket.
#[test]
fn connections_over_the_budget_get_503() {
    const BUDGET: usize = 2;
    let mut limits = Limits::default();
    limits.max_connections = Some(BUDGET);
    let answering = Answering::start(server_with(limits));
    let addr = answering.addr();
    // Kept-alive connections that were served hold their slots.
    let mut held: Vec<TcpStream> = (0..BUDGET)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert!(read_head(&mut stream, ANSWER_BOUND).starts_with("HTTP/1.1 200"));
            stream
        })
        .collect();

    let answer = exchange_until_close(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "got {:?}", answer);
    assert!(answer.contains("Connection: close"), "got {:?}", answer);
    assert!(
        answer.ends_with("too many open connections\r\n"),
        "got {:?}",
        answer
    );

    // One goes: its slot is free again once its connection thread sees the end.
    drop(held.pop());
    let deadline = Instant::now() + ANSWER_BOUND;
    loop {
        let answer = exchange_until_close(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "got {:?}", answer);
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// P10 (finding B1): a body within `max_buffered_body` is read by the
/// connection's thread, so a half-sent one never reaches a handler (it gets
/// 408 once the read timeout passes), and a whole one arrives read, also
/// after `Expect: 100-continue`. Unpatched, a body over 1 KiB was handed to
/// the handler half-sent, and the client never got an answer.
#[test]
fn bodies_within_the_buffer_are_read_before_the_handler_sees_them() {
    const BODY: usize = 2000;
    let mut limits = short_timeouts();
    limits.max_buffered_body = 64 * 1024;
    let server = Arc::new(server_with(limits));
    let addr = server.server_addr().to_ip().unwrap();

    let mut half = TcpStream::connect(addr).unwrap();
    write!(
        half,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nx",
        BODY
    )
    .unwrap();
    let answer = read_to_close(&mut half, ANSWER_BOUND);
    assert!(answer.starts_with("HTTP/1.1 408"), "got {:?}", answer);
    assert!(
        server.try_recv().unwrap().is_none(),
        "a half-sent body reached the handler"
    );

    let mut whole = TcpStream::connect(addr).unwrap();
    write!(
        whole,
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        BODY
    )
    .unwrap();
    assert!(read_head(&mut whole, ANSWER_BOUND).starts_with("HTTP/1.1 100"));
    whole.write_all(&[b'y'; BODY]).unwrap();
    let mut request = server
        .recv_timeout(ANSWER_BOUND)
        .unwrap()
        .expect("the whole request");
    let mut body = Vec::new();
    request.as_reader().read_to_end(&mut body).unwrap();
    assert_eq!(body, vec![b'y'; BODY]);
    request.respond(Response::from_string("ok")).unwrap();
    assert!(read_head(&mut whole, ANSWER_BOUND).starts_with("HTTP/1.1 200"));
}

/// P15: dropping the server closes its kept-alive connections, as its
/// documentation says, instead of leaving them to read requests that no one
/// answers until the idle timeout (60 s by default). A client that kept a
/// connection to a server that went away must see it closed.
#[test]
fn dropping_the_server_closes_kept_alive_connections() {
    let answering = Answering::start(server_with(Limits::default()));
    let mut kept_alive = TcpStream::connect(answering.addr()).unwrap();
    kept_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut kept_alive, ANSWER_BOUND).starts_with("HTTP/1.1 200"));
    drop(answering);
    let rest = read_to_close(&mut kept_alive, ANSWER_BOUND);
    assert!(
        !rest.contains("HTTP/1.1"),
        "an answer after the drop: {:?}",
        rest
    );
}
