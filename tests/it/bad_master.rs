//! A master that speaks HTTP correctly but sends garbage on the event stream:
//! not RecordIO, a truncated record, an oversized length, a record that is not
//! a protobuf `Event`. The scheduler must drop each stream, resubscribe, and
//! keep its REST API answering.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    http_agent, request, scheduler_config, wait_until, FakeServer, DEADLINE, STRESS60,
};

/// What the fake sends after the SUBSCRIBE answer head, by connection number
/// (cycling).
const STREAMS: &[(&str, &[u8])] = &[
    (
        "not recordio",
        b"this is not recordio at all\n\x00\xff\xfe garbage",
    ),
    ("truncated record", b"100\n\x08\x01\x12"),
    ("oversized length", b"99999999999\n\x08\x01"),
    // 10 bytes, exactly as announced, but field 15 with a wire type (7) that
    // does not exist: not a protobuf `Event`.
    (
        "not a protobuf event",
        b"10\n\x7f\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ),
];

/// A fake master on a loopback port; counts SUBSCRIBE attempts.
fn fake_master() -> FakeServer {
    FakeServer::start(|stream, n| {
        let subscribe = is_subscribe(&stream);
        if subscribe {
            answer(stream, n);
        }
        subscribe
    })
}

/// Reads the request head; true for `POST /api/v1/scheduler`.
fn is_subscribe(stream: &TcpStream) -> bool {
    read_head(stream).is_some_and(|head| head.starts_with("POST /api/v1/scheduler "))
}

/// Reads the request head (request line and headers).
fn read_head(stream: &TcpStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" => return Some(head),
            Ok(_) => head.push_str(&line),
        }
    }
}

/// A correct SUBSCRIBE answer head, then stream `idx % STREAMS.len()` as one
/// chunk, then EOF.
fn answer(mut stream: TcpStream, idx: usize) {
    let (_, payload) = STREAMS[idx % STREAMS.len()];
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nMesos-Stream-Id: fake-{idx}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        payload.len()
    )
    .into_bytes();
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(b"\r\n");
    // The peer may already have hung up; that is its right.
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
}

#[test]
fn garbage_on_the_event_stream_makes_the_scheduler_resubscribe() {
    let master = fake_master();
    let scheduler = charmander::start(scheduler_config(&master.addr)).expect("scheduler starts");
    let http = http_agent();
    let api = |path: &str| format!("http://{}{path}", scheduler.api_addr());

    // Every kind of garbage once, and one more attempt after the last kind.
    let wanted = STREAMS.len() + 1;
    let resubscribed = wait_until(DEADLINE, || {
        // The REST API answers all along.
        let (status, pong) = request(&http, "GET", &api("/admin/ping"), None);
        assert_eq!(
            (status, pong),
            (200, Value::String("Pong\n".to_string())),
            "after {} subscribes",
            master.count()
        );
        master.count() >= wanted
    });
    assert!(
        resubscribed,
        "{} subscribe attempts within {DEADLINE:?}, wanted {wanted}",
        master.count()
    );

    let (status, reply) = request(&http, "POST", &api("/client/task"), Some(STRESS60));
    assert_eq!(status, 202, "{reply}");
    let (status, tasks) = request(&http, "GET", &api("/client/task"), None);
    assert_eq!(status, 200);
    // Accepted and waiting: no master has offered anything.
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks}");
    assert_eq!(tasks[0]["id"], "stress60", "{tasks}");
    assert_ne!(tasks[0]["state"], "TASK_RUNNING", "{tasks}");
    scheduler.shutdown();
}

/// See: review of issue 10. A master that answers SUBSCRIBED and hangs up at
/// once: each of those subscriptions counts as a failed attempt, so the
/// scheduler backs off instead of subscribing (and reconciling) again every
/// `BACKOFF_MIN`, or at once when several masters are listed.
fn accepts_and_hangs_up() -> FakeServer {
    FakeServer::start(|mut stream, n| {
        // Calls (they carry the stream id) are dropped unanswered.
        let subscribe = read_head(&stream).is_some_and(|head| {
            head.starts_with("POST /api/v1/scheduler ")
                && !head.to_ascii_lowercase().contains("\nmesos-stream-id:")
        });
        if !subscribe {
            return false;
        }
        // Event { type: SUBSCRIBED, subscribed: { framework_id: { value: "fw" } } }
        let event: &[u8] = b"\x08\x01\x12\x06\x0a\x04\x0a\x02fw";
        let record = [format!("{}\n", event.len()).as_bytes(), event].concat();
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nMesos-Stream-Id: fake-{n}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            record.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&record);
        bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        let _ = stream.write_all(&bytes);
        let _ = stream.flush();
        true
    })
}

/// Subscribes to `masters` for `WINDOW` and says how many SUBSCRIBEs they
/// got; stops as soon as there are `flood` of them.
fn subscribes_within_window(masters: &[&FakeServer], flood: usize) -> usize {
    /// Long enough for many more attempts than a backoff allows: its
    /// delays (at least half of 250 ms, 500 ms, 1 s, 2 s, 4 s) leave room
    /// for 6 rounds; at one attempt per `BACKOFF_MIN` it would be 24.
    const WINDOW: Duration = Duration::from_secs(6);
    let list: Vec<&str> = masters.iter().map(|master| master.addr.as_str()).collect();
    let scheduler = charmander::start(scheduler_config(&list.join(","))).expect("scheduler starts");
    let count = || masters.iter().map(|master| master.count()).sum::<usize>();
    wait_until(WINDOW, || count() >= flood);
    let seen = count();
    scheduler.shutdown();
    seen
}

#[test]
fn a_master_that_drops_each_subscription_at_once_is_backed_off() {
    let master = accepts_and_hangs_up();
    // The old reader reset its backoff on SUBSCRIBED: an attempt every
    // 250 ms at most.
    let seen = subscribes_within_window(&[&master], 12);
    assert!(seen >= 2, "it resubscribed at all ({seen})");
    assert!(seen < 12, "{seen} subscribes: no backoff");
}

#[test]
fn several_masters_that_drop_each_subscription_are_backed_off() {
    let (first, second) = (accepts_and_hangs_up(), accepts_and_hangs_up());
    // The old reader went on to the next master at once, forever.
    let seen = subscribes_within_window(&[&first, &second], 24);
    assert!(seen >= 2, "it resubscribed at all ({seen})");
    assert!(seen < 24, "{seen} subscribes: no backoff");
}
