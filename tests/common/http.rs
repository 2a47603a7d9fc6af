//! HTTP and waiting helpers shared by the test binaries (`tests/it` against
//! mesos-sim, `tests/real` against a real Mesos master): one request with its
//! JSON answer, a deadline poll, and the reference's example task files.
//! Included with `#[path = "../common/http.rs"] mod http;`.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::{Duration, Instant};

use serde_json::Value;

/// How often `wait_until` polls.
const POLL: Duration = Duration::from_millis(25);

pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One request; returns the status and the body as JSON (or as a JSON string
/// when it is not JSON).
pub fn request(http: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let result = match (method, body) {
        ("GET", _) => http.get(url).call(),
        ("DELETE", _) => http.delete(url).call(),
        ("POST", Some(body)) => http
            .post(url)
            .header("Content-Type", "application/json")
            .send(body),
        ("POST", None) => http.post(url).send_empty(),
        ("PUT", Some(body)) => http.put(url).send(body),
        _ => panic!("unsupported request {method}"),
    };
    let mut response = result.unwrap_or_else(|err| panic!("{method} {url} failed: {err}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The value of `series` (name and labels) in a Prometheus text page, 0
/// when it is absent.
pub fn sample_of(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// POSTs a task to the scheduler at `api` (host:port) and checks the 202.
#[track_caller]
pub fn submit(http: &ureq::Agent, api: &str, body: &str) {
    let (status, reply) = request(
        http,
        "POST",
        &format!("http://{api}/client/task"),
        Some(body),
    );
    assert_eq!(status, 202, "{body}: {reply}");
}

/// The lines of an HTTP head read from `reader` up to the blank line that
/// ends it (or the end of the stream), trimmed: the status line first,
/// unless the caller has read it.
pub fn read_head_lines(reader: &mut impl std::io::BufRead) -> Vec<String> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("the head arrives");
        if read == 0 || line.trim().is_empty() {
            return head;
        }
        head.push(line.trim().to_string());
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The lab's example task files from the reference API document.
pub const CADVISOR: &str = r#"{
"id": "cadvisor", "dockerimage": "google/cadvisor:0.6.2", "mem": "50", "sla": "one-per-node", "notmetered": true,
"volumes": [
 {"host_path":"/", "container_path":"/rootfs", "mode":"ro"},
 {"host_path":"/var/run", "container_path":"/var/run", "mode":"rw"},
 {"host_path":"/sys", "container_path":"/sys", "mode":"ro"},
 {"host_path":"/var/lib/docker", "container_path":"/var/lib/docker/", "mode":"ro"}],
"ports": [{"host_port":"31500", "container_port":"8080"}]
}"#;

pub const STRESS60: &str = r#"{
"id": "stress60", "dockerimage": "stress", "mem": "100", "reshuffleable": true, "nodetype": "lab",
"arguments": ["--vm-bytes", "60M", "--vm", "1"]
}"#;

pub const INFLUXDB: &str = r#"{
"id": "influxdb", "dockerimage": "influxdb", "mem": "100", "cpus": "1", "sla": "singleton", "nodetype": "analytics", "notmetered": true,
"volumes": [{"host_path":"/analytics/log/influxdb", "container_path":"/log/", "mode":"rw"}],
"ports": [{"host_port":"31400", "container_port":"8083"}, {"host_port":"31410", "container_port":"8086"}]
}"#;
