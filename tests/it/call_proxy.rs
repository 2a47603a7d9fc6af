//! A TCP proxy in front of a master that lets SUBSCRIBE (and its event
//! stream) through untouched and does to each scheduler *call* (a request with
//! a `Mesos-Stream-Id`) what the test asks: pass it on, answer 503 (the call
//! never reaches the master), or read it whole and hang up without an answer
//! (the master cannot tell us what it did). It parses every request on a
//! connection, so keep-alive reuse cannot smuggle a call past it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charmander::mesos::proto::scheduler::Call;
use protobuf::Message;

/// The largest request head or body the proxy reads.
const MAX_REQUEST: usize = 1 << 20;

/// Socket timeout for the proxy's own reads, so a stuck test ends.
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the proxy does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass = 0,
    /// Answer 503 and close: the master never sees the call.
    Answer503 = 1,
    /// Read the whole call, then close without answering.
    HangUp = 2,
}

/// The proxy; its thread runs until the process ends (it only accepts).
pub struct CallProxy {
    pub addr: String,
    mode: Arc<AtomicU8>,
    /// Every call seen: (type, what was done with it).
    seen: Arc<Mutex<Vec<(String, Mode)>>>,
}

impl CallProxy {
    pub fn start(upstream: &str) -> CallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (thread_mode, thread_seen) = (mode.clone(), seen.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (mode, seen, upstream) =
                    (thread_mode.clone(), thread_seen.clone(), upstream.clone());
                std::thread::spawn(move || serve(client, &upstream, &mode, &seen));
            }
        });
        CallProxy { addr, mode, seen }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// How many calls of `kind` (e.g. "ACCEPT") met `mode`.
    pub fn count(&self, kind: &str, mode: Mode) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, m)| k == kind && *m == mode)
            .count()
    }

    /// How many calls of any kind met `mode`.
    pub fn count_all(&self, mode: Mode) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, m)| *m == mode)
            .count()
    }
}

fn current(mode: &AtomicU8) -> Mode {
    match mode.load(Ordering::SeqCst) {
        1 => Mode::Answer503,
        2 => Mode::HangUp,
        _ => Mode::Pass,
    }
}

/// One request: its raw head, its body, and whether it is a call.
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    is_call: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut is_call = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || head.len() > MAX_REQUEST {
            return None;
        }
        head.extend_from_slice(line.as_bytes());
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        is_call |= lower.starts_with("mesos-stream-id:");
        if line == "\r\n" {
            break;
        }
    }
    if length > MAX_REQUEST {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        head,
        body,
        is_call,
    })
}

fn serve(client: TcpStream, upstream: &str, mode: &AtomicU8, seen: &Mutex<Vec<(String, Mode)>>) {
    let _ = client.set_read_timeout(Some(PROXY_TIMEOUT));
    let Ok(reader_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader_half);
    let mut client = client;
    while let Some(request) = read_request(&mut reader) {
        if !request.is_call {
            // SUBSCRIBE: forward it and pipe the stream back until it ends.
            let Ok(mut master) = TcpStream::connect(upstream) else {
                return;
            };
            if master.write_all(&request.head).is_err() || master.write_all(&request.body).is_err()
            {
                return;
            }
            let _ = std::io::copy(&mut master, &mut client);
            return;
        }
        let kind = Call::parse_from_bytes(&request.body)
            .ok()
            .and_then(|call| call.type_)
            .map_or("UNPARSED".to_string(), |t| {
                format!("{:?}", t.enum_value_or_default())
            });
        let mode = current(mode);
        seen.lock().expect("lock").push((kind, mode));
        match mode {
            Mode::Answer503 => {
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            Mode::HangUp => return,
            Mode::Pass => {
                if relay(upstream, &request, &mut client).is_none() {
                    return;
                }
            }
        }
    }
}

/// Sends one call to the master on a new connection and copies its answer
/// (head and Content-Length body) back.
fn relay(upstream: &str, request: &Request, client: &mut TcpStream) -> Option<()> {
    let mut master = TcpStream::connect(upstream).ok()?;
    master.set_read_timeout(Some(PROXY_TIMEOUT)).ok()?;
    master.write_all(&request.head).ok()?;
    master.write_all(&request.body).ok()?;
    let mut reader = BufReader::new(master);
    let mut answer = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        answer.extend_from_slice(line.as_bytes());
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length.min(MAX_REQUEST)];
    reader.read_exact(&mut body).ok()?;
    answer.extend_from_slice(&body);
    client.write_all(&answer).ok()
}
