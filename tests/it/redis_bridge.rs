//! The Redis bridge against a real `redis-server` that the test starts on a
//! free port: published keys, TTLs, order and JSON; intelligence in both
//! directions; Redis going away and coming back mid-run.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{wait_until, Lab, DEADLINE, STRESS60};

/// How long the test client waits for a reply from its redis-server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` child process without persistence; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG POPULATE fills a test server with junk keys fast.
                "--enable-debug-command",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let server = RedisServer { child, port };
        assert!(
            wait_until(DEADLINE, || server.try_command(&["PING"]).is_some()),
            "redis-server did not start on {port}"
        );
        server
    }

    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|it| it.local_addr())
            .expect("free port")
            .port();
        RedisServer::start_on(port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One command through redis-cli's wire format; the reply's text.
    fn try_command(&self, args: &[&str]) -> Option<String> {
        self.command_within(args, REPLY_TIMEOUT)
    }

    /// `try_command` for a slow command (filling the server), waiting up
    /// to `timeout` for its reply.
    fn command_within(&self, args: &[&str], timeout: Duration) -> Option<String> {
        let mut stream = TcpStream::connect(self.addr()).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream);
        read_text(&mut reader)
    }

    fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis command {args:?} failed"))
    }
}

/// A reply rendered as text: bulk strings as-is, nil as "(nil)", arrays joined by newlines.
fn read_text(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" | "-" => Some(rest.to_string()),
        "$" if rest == "-1" => Some("(nil)".to_string()),
        "$" => {
            let len: usize = rest.parse().ok()?;
            let mut bulk = vec![0u8; len + 2];
            std::io::Read::read_exact(reader, &mut bulk).ok()?;
            Some(String::from_utf8_lossy(&bulk[..len]).into_owned())
        }
        "*" => {
            let len: usize = rest.parse().ok()?;
            let items: Option<Vec<String>> = (0..len).map(|_| read_text(reader)).collect();
            Some(items?.join("\n"))
        }
        _ => None,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lab_with(redis: &RedisServer) -> Lab {
    Lab::start_with(|config| {
        config.redis = Some(redis.addr());
        config.redis_interval = Duration::from_millis(200);
    })
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis
        .command(&["KEYS", pattern])
        .lines()
        .map(str::to_string)
        .filter(|it| !it.is_empty())
        .collect();
    keys.sort();
    keys
}

#[test]
fn nodes_and_tasks_are_published_with_ttl_order_and_the_original_json() {
    let redis = RedisServer::start();
    let lab = lab_with(&redis);
    lab.post("/client/task", STRESS60);
    lab.post(
        "/client/task",
        r#"{"id":"quiet","dockerimage":"x","mem":"10","notmetered":true}"#,
    );
    let running = lab.wait_running("stress60", 1);
    let internal = running[0]["InternalID"].as_str().unwrap_or("").to_string();
    assert!(
        wait_until(DEADLINE, || keys(&redis, "charmander:nodes:*").len() == 3),
        "{:?}",
        keys(&redis, "*")
    );
    assert!(
        wait_until(DEADLINE, || keys(&redis, "charmander:tasks:*").len() == 2),
        "{:?}",
        keys(&redis, "*")
    );
    // Only metered tasks appear under tasks-metered.
    let metered = keys(&redis, "charmander:tasks-metered:*");
    assert_eq!(metered, [format!("charmander:tasks-metered:{internal}")]);
    // TTL is 30 s (refreshed every cycle).
    for key in [
        format!("charmander:tasks:{internal}"),
        "charmander:nodes:slave1".to_string(),
    ] {
        let ttl: i64 = redis.command(&["TTL", &key]).parse().unwrap_or(-1);
        assert!((1..=30).contains(&ttl), "{key} ttl {ttl}");
    }
    // The values are the contract's JSON.
    assert!(wait_until(DEADLINE, || {
        let task: Value =
            serde_json::from_str(&redis.command(&["GET", &format!("charmander:tasks:{internal}")]))
                .unwrap_or(Value::Null);
        task["Running"] == true
    }));
    let task: Value =
        serde_json::from_str(&redis.command(&["GET", &format!("charmander:tasks:{internal}")]))
            .expect("task json");
    assert_eq!(
        (&task["id"], &task["mem"], &task["InternalID"]),
        (
            &Value::from("stress60"),
            &Value::from("100"),
            &Value::from(internal.clone())
        )
    );
    let node: Value = serde_json::from_str(&redis.command(&["GET", "charmander:nodes:slave1"]))
        .expect("node json");
    assert_eq!(
        (&node["hostname"], &node["nodetype"], &node["nodename"]),
        (
            &Value::from("slave1"),
            &Value::from("analytics"),
            &Value::from("slave1")
        )
    );
    assert!(node["timeoflastoffer"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn each_cycle_writes_nodes_then_metered_tasks_then_tasks() {
    let redis = RedisServer::start();
    // Watch every command Redis executes, in order.
    let mut monitor = TcpStream::connect(redis.addr()).expect("monitor connects");
    monitor
        .write_all(b"*1\r\n$7\r\nMONITOR\r\n")
        .expect("monitor");
    monitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut monitor = BufReader::new(monitor);
    let lab = lab_with(&redis);
    lab.post("/client/task", STRESS60);
    let mut order = Vec::new();
    let mut line = String::new();
    // Read until one full cycle with a metered task went by.
    while order
        .iter()
        .filter(|it: &&String| it.as_str() == "tasks")
        .count()
        < 2
    {
        line.clear();
        if monitor.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        for (needle, name) in [
            ("\"charmander:nodes:", "nodes"),
            ("\"charmander:tasks-metered:", "metered"),
            ("\"charmander:tasks:", "tasks"),
        ] {
            if line.contains("\"SET\"") && line.contains(needle) {
                order.push(name.to_string());
            }
        }
    }
    let cycle: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .skip_while(|it| *it != "nodes")
        .collect();
    // nodes (3) → metered (1) → tasks (1), and again.
    assert_eq!(
        &cycle[..5],
        ["nodes", "nodes", "nodes", "metered", "tasks"],
        "{order:?}"
    );
    drop(lab);
}

#[test]
fn intelligence_flows_from_redis_into_placement_and_from_rest_into_redis() {
    let redis = RedisServer::start();
    let lab = lab_with(&redis);
    redis.command(&[
        "SET",
        "charmander:task-intelligence:stress60:mem",
        "209924096",
    ]);
    redis.command(&["SET", "charmander:task-intelligence:broken", "1"]);
    let learned = wait_until(DEADLINE, || {
        let (_, table) = lab.get("/client/intelligence");
        table.to_string().contains("209924096")
    });
    assert!(learned, "{}", lab.get("/client/intelligence").1);
    lab.post("/client/task", STRESS60);
    let running = lab.wait_running("stress60", 1);
    assert_eq!(running[0]["mem"], "230", "{}", running[0]);

    // A REST write is published to Redis for the analytics.
    let (status, reply) = lab.put("/client/intelligence/lookbusy200/mem", "300000000");
    assert!(status < 300, "{status} {reply}");
    assert!(wait_until(DEADLINE, || redis.command(&[
        "GET",
        "charmander:task-intelligence:lookbusy200:mem"
    ]) == "300000000"));

    // Garbage from Redis is ignored and the learned value kept.
    // The marker is written after the garbage, so once the table has it the
    // bridge has seen the garbage too.
    redis.command(&["SET", "charmander:task-intelligence:stress60:mem", "2.1E8"]);
    redis.command(&["SET", "charmander:task-intelligence:marker:cpus", "0.5"]);
    assert!(wait_until(DEADLINE, || lab
        .get("/client/intelligence")
        .1
        .to_string()
        .contains("marker")));
    assert!(lab
        .get("/client/intelligence")
        .1
        .to_string()
        .contains("209924096"));
    // Deleting the key clears the override.
    redis.command(&["DEL", "charmander:task-intelligence:stress60:mem"]);
    assert!(wait_until(DEADLINE, || !lab
        .get("/client/intelligence")
        .1
        .to_string()
        .contains("209924096")));
}

#[test]
fn redis_going_away_and_coming_back_never_stops_the_scheduler() {
    let redis = RedisServer::start();
    let port = redis.port;
    let lab = lab_with(&redis);
    redis.command(&[
        "SET",
        "charmander:task-intelligence:stress60:mem",
        "209924096",
    ]);
    assert!(wait_until(DEADLINE, || lab
        .get("/client/intelligence")
        .1
        .to_string()
        .contains("209924096")));
    drop(redis);
    // The scheduler keeps serving and keeps what it learned.
    lab.post("/client/task", STRESS60);
    let running = lab.wait_running("stress60", 1);
    assert_eq!(running[0]["mem"], "230");
    assert!(lab
        .get("/client/intelligence")
        .1
        .to_string()
        .contains("209924096"));
    // Redis comes back (empty) on the same port: the bridge publishes again.
    let redis = RedisServer::start_on(port);
    assert!(
        wait_until(DEADLINE, || keys(&redis, "charmander:tasks:*").len() == 1),
        "{:?}",
        keys(&redis, "*")
    );
}

fn intelligence_table(lab: &Lab) -> Value {
    let (status, table) = lab.get("/client/intelligence");
    assert_eq!(status, 200, "{table}");
    table
}

// See: issue 9, B6. SCAN stopped after MAX_SCAN_STEPS and every key it had
// not reached read as deleted: learned entries were cleared, and keys past
// the budget were never learned.
#[test]
fn a_scan_longer_than_one_cycle_learns_every_key_and_clears_none() {
    let redis = RedisServer::start();
    // More keys than one cycle's SCAN budget (MAX_SCAN_STEPS × SCAN_COUNT) visits.
    // Over a second on a busy machine: wait for it as long as any test step.
    let populated = redis.command_within(&["DEBUG", "POPULATE", "1200000", "junk"], DEADLINE);
    assert_eq!(populated.as_deref(), Some("OK"));
    let learned: Vec<String> = (0..20).map(|n| format!("learned{n}")).collect();
    for task in &learned {
        redis.command(&[
            "SET",
            &format!("charmander:task-intelligence:{task}:cpus"),
            "0.5",
        ]);
    }
    let lab = lab_with(&redis);
    let mut table = Value::Null;
    let all_learned = wait_until(DEADLINE, || {
        table = intelligence_table(&lab);
        learned.iter().all(|task| table.get(task).is_some())
    });
    assert!(all_learned, "{table}");
    // A deletion is concluded only when a SCAN pass ends, so once it shows,
    // a whole pass has run after everything was learned.
    redis.command(&["DEL", "charmander:task-intelligence:learned19:cpus"]);
    assert!(wait_until(DEADLINE, || intelligence_table(&lab)
        .get("learned19")
        .is_none()));
    let table = intelligence_table(&lab);
    for task in &learned[..19] {
        assert!(table.get(task).is_some(), "{task} was cleared: {table}");
    }
}

// See: issue 9, B9. One value over the reader's bulk limit failed every
// cycle, so nothing else was learned until it was deleted.
#[test]
fn an_oversized_or_unreadable_value_is_skipped_and_the_rest_still_sync() {
    let redis = RedisServer::start();
    let huge = "1".repeat(2 * 1024 * 1024);
    redis.command(&["SET", "charmander:task-intelligence:huge:mem", &huge]);
    redis.command(&["LPUSH", "charmander:task-intelligence:listed:mem", "1"]);
    redis.command(&["SET", "charmander:task-intelligence:a/b:mem", "100000000"]);
    redis.command(&["SET", "charmander:task-intelligence:small:cpus", "0.5"]);
    let lab = lab_with(&redis);
    assert!(
        wait_until(DEADLINE, || intelligence_table(&lab).get("small").is_some()),
        "{}",
        intelligence_table(&lab)
    );
    let table = intelligence_table(&lab);
    for skipped in ["huge", "listed", "a/b"] {
        assert!(table.get(skipped).is_none(), "{skipped}: {table}");
    }
    // And the bridge keeps cycling: a later key is learned too.
    redis.command(&["SET", "charmander:task-intelligence:later:cpus", "1"]);
    assert!(wait_until(DEADLINE, || intelligence_table(&lab)
        .get("later")
        .is_some()));
}
