//! P18: an HTTP/1.0 response whose length is not known is written as its
//! body is read, delimited by the end of the connection, instead of being
//! read whole into memory first to count it; a raw response to HTTP/1.0
//! and a response that failed midway end the connection too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;
use tiny_http::Response;

#[allow(dead_code)]
mod support;

/// How long the client waits for anything before the test fails.
const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// A body's first part, longer than any buffer the server writes through
/// (64 KiB), then, once `go` says so, the rest: a body that cannot be read
/// to its end before the client has seen its beginning.
const FIRST: usize = 1 << 20;
/// What the client must have received before it lets the body go on.
const SEEN: usize = FIRST / 2;

struct Gated {
    body: io::Cursor<Vec<u8>>,
    go: Receiver<()>,
    gated: bool,
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.body.position() == FIRST as u64 && self.gated {
            self.gated = false;
            if self.go.recv_timeout(CLIENT_WAIT).is_err() {
                return Err(io::Error::other("the client never saw the first part"));
            }
        }
        let end = if self.gated { FIRST } else { usize::MAX };
        let left = end.min(self.body.get_ref().len()) - self.body.position() as usize;
        let n = buf.len().min(left);
        self.body.read(&mut buf[..n])
    }
}

fn body() -> Vec<u8> {
    (0..FIRST + 1000).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Sends `request`, answers it with a body of unknown length, and returns
/// the head lines and the body as the client reads them (to the end of the
/// connection).
fn exchange(request: &str) -> (Vec<String>, Vec<u8>) {
    let (server, client) = support::new_one_server_one_client();
    client.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    (&client).write_all(request.as_bytes()).unwrap();
    let (go, gate) = mpsc::channel();
    let answering = thread::spawn(move || {
        let request = server.recv().unwrap();
        let body = Gated {
            body: io::Cursor::new(body()),
            go: gate,
            gated: true,
        };
        request
            .respond(Response::new(200.into(), Vec::new(), body, None, None))
            .unwrap();
        // Kept until the client is done: the connection must end anyway.
        server
    });
    let mut reader = BufReader::new(client);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("the head arrives");
        if line.trim_end().is_empty() {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let mut body = vec![0; SEEN];
    reader
        .read_exact(&mut body)
        .expect("the first part arrives before the body is read to its end");
    go.send(()).unwrap();
    reader
        .read_to_end(&mut body)
        .expect("the body ends with the connection");
    let _server = answering.join().unwrap();
    (head, body)
}

fn check(request: &str) {
    let (head, body) = exchange(request);
    assert!(body == self::body(), "{:?}: the body differs", request);
    assert!(head[0].starts_with("HTTP/1.0 200"), "{:?}", head);
    let has = |name: &str| {
        head.iter()
            .any(|h| h.to_ascii_lowercase().starts_with(&format!("{name}:")))
    };
    assert!(!has("content-length"), "{:?}", head);
    assert!(!has("transfer-encoding"), "{:?}", head);
    assert!(
        head.iter()
            .any(|h| h.eq_ignore_ascii_case("connection: close")),
        "{:?}",
        head
    );
}

#[test]
fn an_http_1_0_body_of_unknown_length_streams_and_ends_the_connection() {
    check("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    // Even a client that asked to keep the connection: only its end
    // delimits the body.
    check("GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
}

/// The head, and everything after it until the server closes, as the
/// client reads them.
fn read_until_closed(client: std::net::TcpStream) -> String {
    let mut text = String::new();
    BufReader::new(client)
        .read_to_string(&mut text)
        .expect("the server ends the connection");
    text
}

/// A raw response (`into_writer`) to an HTTP/1.0 client may be delimited
/// only by the connection's end, so the connection ends with it, even when
/// the client asked to keep it.
#[test]
fn a_raw_response_to_http_1_0_ends_the_connection() {
    let (server, client) = support::new_one_server_one_client();
    client.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    (&client)
        .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let request = server.recv().unwrap();
    let mut writer = request.into_writer();
    writer
        .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
        .unwrap();
    writer.flush().unwrap();
    drop(writer);
    assert!(read_until_closed(client).ends_with("data: 1\n\n"));
}

/// A body whose reader fails midway cannot be ended properly (a chunked
/// one lacks its last chunk): the connection ends instead of waiting for
/// the client's next request while the client waits for the rest.
#[test]
fn a_response_that_fails_midway_ends_the_connection() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("the rest cannot be read"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    let (server, client) = support::new_one_server_one_client();
    client.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    (&client)
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let request = server.recv().unwrap();
    let failed = request.respond(Response::new(
        200.into(),
        Vec::new(),
        Failing(FIRST),
        None,
        None,
    ));
    assert!(failed.is_err());
    let text = read_until_closed(client);
    assert!(
        text.contains("Transfer-Encoding: chunked"),
        "{}",
        &text[..200]
    );
    assert!(!text.ends_with("0\r\n\r\n"), "the body looks whole");
}
