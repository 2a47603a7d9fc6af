//! Issue 12, items 4 and 5: the lab dashboard at `GET /`, rendered by a real
//! headless browser (Debian's `chromium`; `scripts/test` installs it) against
//! the scheduler and mesos-sim with the lab's four nodes, a bearer token
//! configured (`--api-token-file`) and a task that cannot be placed. The
//! rendered DOM must show every node with its attributes and usage, every
//! live task in its node's column, and the pending reason. The screenshot is
//! left in the target directory (`dashboard.png`) for a person to look at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charmander::sim;
use serde_json::Value;

use crate::support::{wait_until, FakeServer, Lab, DEADLINE};

/// The documented four-node lab.
const LAB_AGENTS: &str = include_str!("../../docs/lab-agents.json");

const TOKEN: &str = "dashboard-token";

/// How long one chromium run may take before it is killed and the test
/// fails (it takes a few seconds; a loaded machine may need many more).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// Virtual time the page gets before its DOM is dumped: room for the first
/// poll and a few more (`POLL_INTERVAL_MS` is 3 s).
const VIRTUAL_TIME_BUDGET_MS: u32 = 8000;

/// Cannot be placed: no lab node has 4096 MB for an analytics task.
const BIG_JOB: &str =
    r#"{"id": "bigjob", "dockerimage": "spark", "mem": "4096", "nodetype": "analytics"}"#;

const LOOKBUSY: &str = r#"{"id": "lookbusy", "dockerimage": "lookbusy", "mem": "300", "cpus": "1", "nodetype": "traffic"}"#;

const INFLUXDB: &str = r#"{"id": "influxdb", "dockerimage": "influxdb", "mem": "512", "cpus": "1", "sla": "singleton", "nodetype": "analytics"}"#;

const STRESS60: &str =
    r#"{"id": "stress60", "dockerimage": "stress", "mem": "100", "nodetype": "lab"}"#;

/// The page as the scheduler serves it, for the stand-in server below.
const DASHBOARD_HTML: &str = include_str!("../../src/api/dashboard.html");

/// The stand-in server's bounds: a request head, and a read of it.
const MAX_HEAD: usize = 16 * 1024;
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn the_dashboard_shows_nodes_tasks_and_pending_reasons_in_a_browser() {
    let agents = sim::parse_agents_json(LAB_AGENTS).expect("docs/lab-agents.json parses");
    let lab = Lab::build(agents, |config| config.api_token = Some(TOKEN.into()));
    for task in [INFLUXDB, STRESS60, LOOKBUSY, BIG_JOB] {
        submit_with_token(&lab, task);
    }
    for id in ["influxdb", "stress60", "lookbusy"] {
        lab.wait_running(id, 1);
    }
    let mut reason = String::new();
    let explained = wait_until(DEADLINE, || {
        reason = lab.tasks_named("bigjob")[0]["pending_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        reason.starts_with("needs mem 4096, slave1 offered")
    });
    assert!(explained, "bigjob's pending reason: {reason:?}");
    let nodes = wait_for_usage(&lab);
    let tasks = lab.tasks();

    let big_job = lab.tasks_named("bigjob")[0]["InternalID"]
        .as_str()
        .expect("InternalID")
        .to_string();

    // The URL selects bigjob for the detail panel, as a click would.
    let dir = scratch_dir("lab");
    let screenshot = target_dir().join("dashboard.png");
    let dom = render(&lab.api(&format!("/#task={big_job}")), &dir, &screenshot);

    // Every node is a column with its attributes and usage, and holds its tasks.
    let (nodes_section, rest) = dom.split_once("<h2>Pending").expect("a pending heading");
    let columns: Vec<&str> = nodes_section.split("<div class=\"node\"").skip(1).collect();
    assert_eq!(columns.len(), 4, "one column per node:\n{dom}");
    for node in &nodes {
        let agent_id = node["agent_id"].as_str().expect("agent_id");
        let column = columns
            .iter()
            .find(|column| column.starts_with(&format!(" data-agent=\"{agent_id}\"")))
            .unwrap_or_else(|| panic!("no column for {agent_id}:\n{dom}"));
        let hostname = node["hostname"].as_str().expect("hostname");
        for text in [
            format!("<span>{hostname}</span>"),
            format!("nodetype={}", node["nodetype"].as_str().unwrap_or("")),
            format!("nodename={hostname}"),
            format!("used {} · free {}<", node["used_cpus"], node["free_cpus"]),
            format!("used {} · free {} MB<", node["used_mem"], node["free_mem"]),
        ] {
            assert!(
                column.contains(&text),
                "{hostname}: no {text:?} in\n{column}"
            );
        }
        for task in tasks.iter().filter(|task| task["agent_id"] == agent_id) {
            let internal_id = task["InternalID"].as_str().expect("InternalID");
            let user_id = task["id"].as_str().expect("id");
            assert!(
                column.contains(&format!("data-task=\"{internal_id}\""))
                    && column.contains(&format!("<span>{user_id}</span>")),
                "{internal_id} not in {hostname}'s column:\n{column}"
            );
        }
    }
    // The task that cannot be placed is listed with its reason, in no column.
    let (pending, rest) = rest.split_once("<h2>Ended").expect("an ended heading");
    assert!(pending.contains(&big_job), "{pending}");
    assert!(pending.contains(&reason), "{reason:?} not in\n{pending}");
    assert!(columns.iter().all(|column| !column.contains(&big_job)));
    // The detail panel shows the selected task, and its history or why
    // there is none (a server without `GET /client/task/<id>`).
    let (_, detail) = rest.split_once("id=\"detail\"").expect("a detail panel");
    for text in [
        format!("<dd>{big_job}</dd>"),
        format!("<dd>{reason}</dd>"),
        "/ 4096 MB</dd>".to_string(),
    ] {
        assert!(
            detail.contains(&text),
            "no {text:?} in the detail:\n{detail}"
        );
    }
    // The history came from `GET /client/task/<id>`, with the round that
    // placed nothing.
    assert!(detail.contains("<th>what</th>"), "no history in:\n{detail}");
    // The event feed from `/client/events` is live.
    let feed = dom
        .split_once("id=\"feed-status\"")
        .and_then(|(_, rest)| rest.split_once("</span>"))
        .map(|(status, _)| status)
        .expect("a feed status");
    assert!(feed.ends_with(">live"), "feed status: {feed}");
    // The API answered every read: no error is shown.
    assert!(
        dom.contains("<span id=\"api-error\" class=\"stale\"></span>"),
        "{dom}"
    );

    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        screenshot.display()
    );
    println!("dashboard screenshot: {}", screenshot.display());
    std::fs::remove_dir_all(&dir).expect("scratch dir removed");
}

#[track_caller]
fn submit_with_token(lab: &Lab, task: &str) {
    let authorization = format!("Bearer {TOKEN}");
    let response = lab
        .http
        .post(&lab.api("/client/task"))
        .header("Authorization", authorization.as_str())
        .header("Content-Type", "application/json")
        .send(task)
        .expect("submit answered");
    assert_eq!(response.status().as_u16(), 202, "{task}");
}

/// The node list once every node shows what it has: with no other framework,
/// what we use plus what it offers us is the whole node.
#[track_caller]
fn wait_for_usage(lab: &Lab) -> Vec<Value> {
    let agents: Vec<Value> = serde_json::from_str(LAB_AGENTS).expect("agents JSON");
    let mut nodes = Vec::new();
    let complete = wait_until(DEADLINE, || {
        let (status, list) = lab.get("/client/node");
        nodes = list.as_array().cloned().unwrap_or_default();
        status == 200
            && nodes.len() == agents.len()
            && agents.iter().all(|agent| {
                nodes.iter().any(|node| {
                    let sum = |name: &str| {
                        node[format!("used_{name}")].as_f64().unwrap_or(-1.0)
                            + node[format!("free_{name}")].as_f64().unwrap_or(-1.0)
                    };
                    node["hostname"] == agent["hostname"]
                        && (sum("cpus") - agent["cpus"].as_f64().unwrap_or(0.0)).abs() < 1e-9
                        && (sum("mem") - agent["mem"].as_f64().unwrap_or(0.0)).abs() < 1e-9
                })
            })
    });
    assert!(complete, "node usage never added up: {nodes:#?}");
    let by_host = |hostname: &str| {
        nodes
            .iter()
            .find(|node| node["hostname"] == hostname)
            .cloned()
            .unwrap_or_default()
    };
    // influxdb (1 cpu, 512 MB) on slave1, lookbusy (1 cpu, 300 MB) on slave4.
    assert_eq!(
        (
            by_host("slave1")["used_cpus"].as_f64(),
            by_host("slave1")["used_mem"].as_f64()
        ),
        (Some(1.0), Some(512.0))
    );
    assert_eq!(
        (
            by_host("slave4")["used_cpus"].as_f64(),
            by_host("slave4")["used_mem"].as_f64()
        ),
        (Some(1.0), Some(300.0))
    );
    nodes
}

/// Loads `url` in headless chromium; returns the DOM after
/// `VIRTUAL_TIME_BUDGET_MS` and saves a screenshot to `screenshot`.
fn render(url: &str, dir: &Path, screenshot: &Path) -> String {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .expect("chromium is missing: scripts/test installs it (apt-get install chromium)");
    let dom_path = dir.join("dom.html");
    let log_path = dir.join("chromium.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            // The page's console (uncaught errors) goes to the log.
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).expect("dom file"))
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("chromium starts");
    let mut status = None;
    let finished = wait_until(CHROMIUM_TIMEOUT, || {
        status = child.try_wait().expect("chromium's status");
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "chromium took more than {CHROMIUM_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.is_some_and(|status| status.success()),
        "chromium failed ({status:?}):\n{log}"
    );
    let uncaught: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Uncaught"))
        .collect();
    assert!(uncaught.is_empty(), "the page threw: {uncaught:#?}");
    std::fs::read_to_string(&dom_path).expect("the dumped DOM")
}

/// Where cargo puts its output: `dashboard.png` is left there.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A fresh directory for one chromium run (profile, DOM, log), named by
/// the test that runs it.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "charmander-dashboard-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The event feed as `GET /client/events` sends it (branch `events`: a
/// `gap` without `kind`, null fields, comments), plus what the page must
/// survive: an unknown kind, CRLF line ends, data that is not JSON. The
/// page first asks for every event kept (`?since=0`, whose gap it need not
/// show); the stand-in server sends these once and ends the stream; the
/// page must show each event once and resume with `Last-Event-ID`.
#[test]
fn the_dashboard_shows_the_event_feed() {
    let frames = concat!(
        ": charmander events\n\n",
        "event: gap\ndata: {\"from\":0,\"oldest\":2}\n\n",
        "event: gap\ndata: {\"from\":3,\"oldest\":9}\n\n",
        "id: 9\nevent: node_joined\ndata: {\"seq\":9,\"time_ms\":1795717535000,\"kind\":\"node_joined\",\"agent_id\":\"S7\",\"node\":null}\n\n",
        "id: 10\r\nevent: task_status\r\ndata: {\"seq\":10,\"time_ms\":1795717536000,\"kind\":\"task_status\",\"task\":\"stress60-17\",\"id\":\"stress60\",\"state\":\"TASK_FAILED\",\"reason\":null,\"message\":\"exit 1\",\"node\":\"slave2\"}\r\n\r\n",
        ": keepalive\n\n",
        "id: 11\nevent: some_new_kind\ndata: {\"seq\":11,\"time_ms\":1795717537000,\"kind\":\"some_new_kind\",\"answer\":42}\n\n",
        "id: 12\nevent: odd\ndata: not json <b>\n\n",
    );
    let resumed_from = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&resumed_from);
    let server = FakeServer::start(move |stream, _| {
        serve_stand_in(stream, frames, &seen);
        true
    });
    let dir = scratch_dir("feed");
    let dom = render(
        &format!("http://{}/", server.addr),
        &dir,
        &dir.join("feed.png"),
    );
    let (_, events) = dom.split_once("id=\"events\"").expect("an event list");
    let lines: Vec<String> = events
        .split("<li")
        .skip(1)
        .filter_map(|item| item.split_once('>'))
        .map(|(_, item)| text_of(item.split("</li>").next().unwrap_or(item)))
        .collect();
    // Newest first, each once; times are local, so they are left out.
    let shown: Vec<&str> = lines
        .iter()
        .map(|line| match line.split_once(" | ") {
            Some((time, rest)) if time.contains(':') => rest,
            _ => line.as_str(),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "odd | text=not json <b>",
            "some_new_kind | answer=42",
            "task_status | stress60 failed on slave2: exit 1 | stress60-17",
            "node_joined | agent S7 joined",
            "gap | missed events 4–8: the server no longer keeps them",
        ],
        "{lines:#?}"
    );
    // The stream ended; the page came back for what follows the last id.
    let resumed = resumed_from.lock().expect("lock").clone();
    assert_eq!(
        resumed.first().map(String::as_str),
        Some("/client/events?since=0 Last-Event-ID none"),
        "{resumed:?}"
    );
    assert_eq!(
        resumed.get(1).map(String::as_str),
        Some("/client/events Last-Event-ID 12"),
        "{resumed:?}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).expect("scratch dir removed");
}

/// The text of an HTML fragment: each tag ends a part, parts are joined
/// with " | ", entities are decoded.
fn text_of(html: &str) -> String {
    let mut parts = vec![String::new()];
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                parts.push(String::new());
            }
            _ if !in_tag => parts.last_mut().expect("a part").push(c),
            _ => {}
        }
    }
    parts
        .iter()
        .map(|part| {
            part.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
        })
        .map(|part| part.trim().to_string())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One connection of the stand-in server: the page, one node, one task,
/// and the feed (`frames` to a client without `Last-Event-ID`, nothing
/// after it); every answer closes its connection. `resumed_from` records
/// each feed request's target and `Last-Event-ID` ("none" without one).
fn serve_stand_in(mut stream: TcpStream, frames: &str, resumed_from: &Mutex<Vec<String>>) {
    stream
        .set_read_timeout(Some(HEAD_READ_TIMEOUT))
        .expect("read timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head.split(' ').nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or(target);
    let node = r#"[{"id":"S7","hostname":"slave2","nodetype":"lab","nodename":"slave2","timeoflastoffer":0,"agent_id":"S7","free_cpus":1.9,"free_mem":924,"used_cpus":0.1,"used_mem":100}]"#;
    let task = r#"[{"id":"stress60","InternalID":"stress60-17","state":"TASK_RUNNING","agent_id":"S7","hostname":"slave2","mem":"100","cpus":"0"}]"#;
    let (content_type, body) = match path {
        "/" => ("text/html; charset=utf-8", DASHBOARD_HTML),
        "/client/node" => ("application/json", node),
        "/client/task" => ("application/json", task),
        "/client/events" => {
            let last_id = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("last-event-id")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_else(|| "none".to_string());
            let body = if last_id == "none" { frames } else { "" };
            resumed_from
                .lock()
                .expect("lock")
                .push(format!("{target} Last-Event-ID {last_id}"));
            ("text/event-stream", body)
        }
        _ => ("application/json", "{\"code\":404}"),
    };
    let status = if content_type == "application/json" && body.contains("404") {
        "404 Not Found"
    } else {
        "200 OK"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
