//! `GET /client/events` and `GET /client/task/<id>` over real HTTP against
//! mesos-sim: a `curl -N`-like client (a plain `TcpStream` reading the
//! chunked SSE body as it comes) follows a task from submit to running and
//! its kill, resumes with `?since=` and `Last-Event-ID`, and a client that
//! stops reading is dropped while the scheduler and the other streams go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{wait_until, Lab, DEADLINE};

/// How long one read of a stream waits before the deadline is checked again.
const READ_SLICE: Duration = Duration::from_millis(200);

/// How long a stream that stopped reading may take to be dropped: two
/// blocked writes of `http::REST.write_timeout` (10 s), with room to spare.
const SLOW_DROP: Duration = Duration::from_secs(60);

/// Streams the hub serves at once (`hub::MAX_SUBSCRIBERS`).
const MAX_SUBSCRIBERS: usize = 16;

/// One SSE event.
#[derive(Debug, Clone)]
struct Frame {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A minimal SSE client: the request, the head, then chunks decoded as
/// they arrive and split into frames. Comments (`: keepalive`) are skipped.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
    head: String,
    /// A chunk-size line cut by a read timeout, kept for the next read.
    size_line: String,
    text: String,
    ended: bool,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Stream {
        let mut socket = TcpStream::connect(addr).expect("connects");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).expect("request sent");
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let mut reader = BufReader::new(socket);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).expect("head arrives");
            if read == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        reader
            .get_ref()
            .set_read_timeout(Some(READ_SLICE))
            .expect("read timeout");
        Stream {
            reader,
            status,
            head,
            size_line: String::new(),
            text: String::new(),
            ended: false,
        }
    }

    /// Reads one chunk into `text`; false on a timeout slice, at the end, or
    /// on a closed connection.
    fn read_chunk(&mut self) -> bool {
        match self.reader.read_line(&mut self.size_line) {
            Ok(0) => {
                self.ended = true;
                return false;
            }
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => {
                self.ended = true;
                return false;
            }
        }
        let size_line = std::mem::take(&mut self.size_line);
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            self.ended = true;
            return false;
        };
        if size == 0 {
            self.ended = true;
            return false;
        }
        let mut chunk = vec![0; size + 2];
        self.reader
            .get_ref()
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let whole = self.reader.read_exact(&mut chunk).is_ok();
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_SLICE))
            .expect("read timeout");
        if !whole {
            self.ended = true;
            return false;
        }
        self.text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        true
    }

    /// The next complete frame, if one is buffered.
    fn buffered_frame(&mut self) -> Option<Frame> {
        loop {
            let end = self.text.find("\n\n")?;
            let block: String = self.text.drain(..end + 2).collect();
            let mut frame = Frame {
                id: None,
                event: String::new(),
                data: Value::Null,
            };
            let mut any = false;
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    frame.id = id.parse().ok();
                    any = true;
                } else if let Some(event) = line.strip_prefix("event: ") {
                    frame.event = event.to_string();
                    any = true;
                } else if let Some(data) = line.strip_prefix("data: ") {
                    frame.data = serde_json::from_str(data).expect("data is one line of JSON");
                    any = true;
                }
            }
            if any {
                return Some(frame);
            }
        }
    }

    /// The next event within `DEADLINE`, or None when the stream ended.
    #[track_caller]
    fn next(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(frame) = self.buffered_frame() {
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "no event within {DEADLINE:?} (buffered {} bytes)",
                self.text.len()
            );
            self.read_chunk();
        }
    }

    /// Events until one satisfies `last` (included).
    #[track_caller]
    fn until(&mut self, last: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().expect("the stream goes on");
            let done = last(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}

fn api_addr(lab: &Lab) -> SocketAddr {
    lab.scheduler.as_ref().expect("running").api_addr()
}

fn kinds_for<'a>(frames: &'a [Frame], task: &str) -> Vec<&'a str> {
    frames
        .iter()
        .filter(|frame| frame.data["task"] == task)
        .map(|frame| frame.event.as_str())
        .collect()
}

#[test]
fn a_client_follows_a_task_from_submit_to_running_and_its_kill() {
    let lab = Lab::start();
    let addr = api_addr(&lab);
    let mut stream = Stream::open(addr, "/client/events", &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert!(
        stream.head.contains("Content-Type: text/event-stream"),
        "{}",
        stream.head
    );
    let body = r#"{"id":"web","dockerimage":"nginx","mem":"64","nodetype":"lab"}"#;
    assert_eq!(lab.post("/client/task", body).0, 202);
    // Each event arrives while the stream stays open: none is held back
    // until more bytes pile up.
    let frames =
        stream.until(|frame| frame.event == "task_status" && frame.data["state"] == "TASK_RUNNING");
    // Nodes may join first: the lab's first offers can come after the stream opened.
    let submitted = frames
        .iter()
        .find(|frame| frame.event == "task_submitted")
        .expect("task_submitted");
    let task = submitted.data["task"].as_str().unwrap_or("").to_string();
    assert_eq!(submitted.data["id"], "web");
    let kinds = kinds_for(&frames, &task);
    assert_eq!(
        &kinds[..3],
        ["task_submitted", "task_placed", "task_launched"],
        "{frames:?}"
    );
    assert_eq!(kinds.last(), Some(&"task_status"));
    let placed = frames
        .iter()
        .find(|frame| frame.event == "task_placed")
        .expect("placed");
    let node = placed.data["node"].as_str().unwrap_or("");
    assert!(["slave2", "slave3"].contains(&node), "{placed:?}");
    assert!(
        placed.data["why"]
            .as_str()
            .is_some_and(|why| why.contains(&format!("placed on {node}"))),
        "{placed:?}"
    );
    // `seq` is the SSE id, increasing; every event has a time.
    let seqs: Vec<u64> = frames.iter().filter_map(|frame| frame.id).collect();
    assert_eq!(seqs.len(), frames.len());
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    for frame in &frames {
        assert_eq!(frame.data["seq"].as_u64(), frame.id);
        assert_eq!(frame.data["kind"], frame.event.as_str());
        assert!(frame.data["time_ms"].as_u64().is_some_and(|ms| ms > 0));
    }

    assert_eq!(lab.delete("/client/task/web").0, 200);
    let frames =
        stream.until(|frame| frame.event == "task_status" && frame.data["state"] == "TASK_KILLED");
    let killed = frames
        .iter()
        .find(|frame| frame.event == "task_killed")
        .expect("task_killed");
    assert_eq!(killed.data["task"], task.as_str());
    assert_eq!(killed.data["by"], "user");

    // The ended task keeps its history: what happened to a task that is gone.
    let (status, shown) = lab.get(&format!("/client/task/{task}"));
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["InternalID"], task.as_str());
    assert_eq!(shown["state"], "TASK_KILLED");
    let history = shown["history"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = history
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds[..3],
        ["submitted", "placement", "launched"],
        "{shown}"
    );
    assert!(kinds.contains(&"killed"), "{shown}");
    assert!(history
        .iter()
        .all(|entry| entry["time_ms"].as_u64().is_some()));
    assert!(
        history[1]["text"]
            .as_str()
            .is_some_and(|text| text.contains(&format!("placed on {node}"))),
        "{shown}"
    );
    let last = history.last().expect("entries");
    assert_eq!(last["kind"], "status");
    assert!(
        last["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("TASK_KILLED")),
        "{shown}"
    );
    let (status, missing) = lab.get("/client/task/nosuch-1");
    assert_eq!(status, 404, "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|text| text.contains("nosuch-1")),
        "{missing}"
    );
}

#[test]
fn since_and_last_event_id_resume_from_the_ring_and_a_lost_point_says_gap() {
    let lab = Lab::start();
    let addr = api_addr(&lab);
    let mut live = Stream::open(addr, "/client/events?since=0", &[]);
    // From the start of this process: the subscription and the nodes.
    let first = live.next().expect("an event");
    assert_eq!(first.id, Some(1));
    assert_eq!(first.event, "subscribed");
    for value in ["a", "b", "c"] {
        let path = "/client/intelligence/sim/nodetype";
        assert_eq!(lab.put(path, value).0, 200);
    }
    let frames = live.until(|frame| frame.data["value"] == "c");
    let changes: Vec<&Frame> = frames
        .iter()
        .filter(|frame| frame.event == "intelligence_changed")
        .collect();
    assert_eq!(changes.len(), 3, "{frames:?}");
    let after_a = changes[0].id.expect("id");

    // Other events (an offer's node, say) may fall between the changes: a
    // resumed stream starts right after `after_a`, and its first change is "b".
    let is_change = |frame: &Frame| frame.event == "intelligence_changed";
    let mut resumed = Stream::open(addr, &format!("/client/events?since={after_a}"), &[]);
    let frames = resumed.until(is_change);
    assert_eq!(frames[0].id, Some(after_a + 1), "{frames:?}");
    assert_eq!(frames.last().expect("a change").data["value"], "b");
    // An EventSource reconnects with Last-Event-ID, to the URL it opened
    // first (here with `?since=0`): the header says where it got to.
    let id = after_a.to_string();
    for path in ["/client/events", "/client/events?since=0"] {
        let mut reconnected = Stream::open(addr, path, &[("Last-Event-ID", &id)]);
        let frames = reconnected.until(is_change);
        assert_eq!(frames[0].id, Some(after_a + 1), "{path}: {frames:?}");
        assert_eq!(frames.last().expect("a change").data["value"], "b");
    }
    // A point this process never reached (an id from before a restart):
    // the gap comes first, then everything kept.
    let mut lost = Stream::open(addr, "/client/events?since=999999", &[]);
    let gap = lost.next().expect("gap");
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.data["from"], 999_999);
    assert_eq!(gap.data["oldest"], 1);
    assert_eq!(lost.next().expect("the ring").id, Some(1));
    let bad = Stream::open(addr, "/client/events?since=x", &[]);
    assert_eq!(bad.status, 400, "{}", bad.head);
    // An event id is digits only, in the URL and in the header alike.
    let bad = Stream::open(addr, "/client/events?since=+5", &[]);
    assert_eq!(bad.status, 400, "{}", bad.head);
    let bad = Stream::open(addr, "/client/events", &[("Last-Event-ID", "+5")]);
    assert_eq!(bad.status, 400, "{}", bad.head);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_nothing_else_waits() {
    let lab = Lab::start();
    let addr = api_addr(&lab);
    // Never read past the head. `Connection: close` lets tiny_http's
    // connection thread end at once, so the socket closes as soon as the
    // stream's thread lets go of it; otherwise it lingers until the REST
    // idle timeout, which this test would have to wait out.
    let mut slow = Stream::open(addr, "/client/events", &[("Connection", "close")]);
    assert_eq!(slow.status, 200);
    let mut reader = Stream::open(addr, "/client/events", &[]);
    // Big events fill the slow client's socket buffers, then its queue. An
    // event keeps at most `MAX_EVENT_TEXT` (1 KiB) of a value: the flood is
    // more than loopback buffers hold for a client that does not read
    // (about 3 MB with Linux's default `tcp_wmem`), so the slow stream's
    // writes block.
    const FLOOD: usize = 5000;
    let big = "n".repeat(2 * 1024);
    let reading = std::thread::spawn(move || {
        let (mut changes, mut seqs) = (0, Vec::new());
        while changes < FLOOD {
            let frame = reader.next().expect("the reader's stream goes on");
            seqs.push(frame.id.expect("id"));
            if frame.event == "intelligence_changed" {
                changes += 1;
            }
        }
        // Kept open: the place freed below must be the slow stream's.
        (reader, seqs)
    });
    for round in 0..FLOOD {
        let value = format!("{big}{round}");
        let (status, reply) = lab.put("/client/intelligence/flood/nodename", &value);
        assert_eq!(status, 200, "round {round}: {reply}");
    }
    let (_reader, seqs) = reading.join().expect("the reader got every event");
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "the reader missed an event: {seqs:?}"
    );

    // The slow stream is gone once a place is free beside the reader, 14
    // fillers and one more.
    let fillers: Vec<Stream> = (0..MAX_SUBSCRIBERS - 2)
        .map(|_| Stream::open(addr, "/client/events", &[]))
        .collect();
    assert!(fillers.iter().all(|filler| filler.status == 200));
    let mut last = None;
    // Its thread is stuck in a write until `http::REST.write_timeout`, and
    // tiny_http flushes its buffer once more on the way out.
    let freed = wait_until(SLOW_DROP, || {
        let stream = Stream::open(addr, "/client/events", &[]);
        let ok = stream.status == 200;
        last = Some(stream);
        ok
    });
    assert!(freed, "the slow stream still holds its place");
    // At the cap: a clear 503.
    let refused = Stream::open(addr, "/client/events", &[]);
    assert_eq!(refused.status, 503, "{}", refused.head);
    // What the slow client finally reads ends before the flood does.
    let mut seen = 0;
    while let Some(frame) = slow.next() {
        if frame.event == "intelligence_changed" {
            seen += 1;
        }
    }
    assert!(seen < FLOOD, "the slow stream saw everything ({seen})");
    // The scheduler is as responsive as ever.
    assert_eq!(lab.get("/client/task").0, 200);
}

/// See: review of issue 12. tiny_http read the requests a client pipelined
/// behind `GET /client/events` and handed them to REST workers, whose
/// answers then waited behind the stream (tiny_http writes a connection's
/// responses in order) for as long as it lived: one connection stalled every
/// worker. A connection now reads its next request only once the current
/// one is answered, so the pipelined requests wait in that client's socket.
#[test]
fn requests_pipelined_behind_a_stream_hold_no_worker() {
    let lab = Lab::start();
    let addr = api_addr(&lab);
    let mut socket = TcpStream::connect(addr).expect("connects");
    let mut requests = format!(
        "GET /client/events?since=0 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    // More than the lab's REST workers (2).
    for _ in 0..4 {
        requests.push_str(&format!("GET /admin/ping HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    }
    socket
        .write_all(requests.as_bytes())
        .expect("requests sent");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut reader = BufReader::new(socket);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .expect("the stream answers");
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    // Other clients are served while that stream lives.
    for _ in 0..3 {
        assert_eq!(lab.get("/admin/ping").0, 200);
    }
    drop(reader);
}
