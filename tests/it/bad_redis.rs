//! A Redis that answers every command with garbage: an unknown reply type, an
//! absurd bulk length, a reply cut off mid-way. The bridge must drop the
//! connection and reconnect, and the scheduler must carry on placing tasks and
//! answering REST.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{wait_until, FakeServer, Lab, DEADLINE, STRESS60};

/// The answer to the first command of connection `n`, cycling. After it the
/// fake closes the connection.
const REPLIES: &[(&str, &[u8])] = &[
    ("unknown reply type", b"!!!\r\n"),
    ("absurd bulk length", b"$999999999999\r\n"),
    ("absurd array length", b"*999999999999\r\n"),
    ("cut off mid-reply", b"$10\r\nabc"),
    ("length line without end", b":1234567890"),
    (
        "nested too deep",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
    ),
];

/// A fake Redis on a loopback port; counts connections.
fn fake_redis() -> FakeServer {
    FakeServer::start(|stream, n| {
        answer(stream, n);
        true
    })
}

/// Waits for the first command bytes, answers garbage, hangs up.
fn answer(mut stream: TcpStream, idx: usize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buffer = [0u8; 4096];
    // The bridge writes its whole pipeline at once; one read sees its start.
    if !matches!(stream.read(&mut buffer), Ok(n) if n > 0) {
        return;
    }
    let (_, reply) = REPLIES[idx % REPLIES.len()];
    let _ = stream.write_all(reply);
    let _ = stream.flush();
}

#[test]
fn garbage_from_redis_makes_the_bridge_reconnect_and_scheduling_goes_on() {
    let redis = fake_redis();
    let lab = Lab::start_with(|config| {
        config.redis = Some(redis.addr.clone());
        config.redis_interval = Duration::from_millis(100);
    });
    let (status, reply) = lab.post("/client/task", STRESS60);
    assert_eq!(status, 202, "{reply}");
    lab.wait_running("stress60", 1);

    // Every kind of garbage at least once, with REST answering all along.
    let wanted = REPLIES.len().max(3);
    let reconnected = wait_until(DEADLINE, || {
        assert_eq!(lab.get("/admin/ping").0, 200);
        redis.count() >= wanted
    });
    assert!(
        reconnected,
        "{} connections to the fake redis within {DEADLINE:?}, wanted {wanted}",
        redis.count()
    );
    assert_eq!(lab.tasks_named("stress60").len(), 1);
    assert_eq!(lab.get("/client/intelligence").0, 200);
}
