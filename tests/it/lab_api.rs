//! The lab's own habits over real HTTP against mesos-sim (issue 11):
//! `POST /admin/reset` (the old `reset_cluster`), readable output (a final
//! newline everywhere, pretty JSON for curl and `?pretty`, short kill
//! answers), and the audit lines of mutating requests.

use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, Lab, CADVISOR, DEADLINE, INFLUXDB, STRESS60};

/// Log lines kept at most by `Capture` (the test binary shares one logger).
const MAX_CAPTURED: usize = 100_000;

/// A logger for this binary that keeps the audit and task status lines (with
/// their level), so tests can read what an operator would see.
struct Capture;

static CAPTURED: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    /// Only what the tests read: the API's info lines and the state
    /// thread's; everything else is dropped unformatted, so the other
    /// tests of this binary pay next to nothing for the capture.
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match metadata.target() {
            "charmander::api" => metadata.level() <= log::Level::Info,
            "charmander::scheduler::state" => true,
            _ => false,
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = record.args().to_string();
        if line.starts_with("audit ") || line.starts_with("task status ") {
            let mut lines = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() < MAX_CAPTURED {
                lines.push((record.level(), line));
            }
        }
    }

    fn flush(&self) {}
}

/// Installs `Capture` (once) and lets debug lines through until
/// `release_logs`: the other tests of this binary run meanwhile, and should
/// not pay for debug records longer than needed.
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = log::set_logger(&Capture);
    });
    log::set_max_level(log::LevelFilter::Debug);
}

fn release_logs() {
    log::set_max_level(log::LevelFilter::Info);
}

/// Captured lines at `level` that contain every one of `parts`.
fn logged(level: log::Level, parts: &[&str]) -> Vec<String> {
    CAPTURED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(at, line)| *at == level && parts.iter().all(|part| line.contains(part)))
        .map(|(_, line)| line.clone())
        .collect()
}

const TOKEN: &str = "lab-token";

/// One request with extra `headers`; returns the status and the raw body.
fn send(
    lab: &Lab,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let url = lab.api(path);
    let result = match method {
        "GET" => {
            let mut request = lab.http.get(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        }
        "DELETE" => {
            let mut request = lab.http.delete(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        }
        "PUT" => {
            let mut request = lab.http.put(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send(body.unwrap_or(""))
        }
        "POST" => {
            let mut request = lab.http.post(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            match body {
                Some(body) => request
                    .header("Content-Type", "application/json")
                    .send(body),
                None => request.send_empty(),
            }
        }
        _ => panic!("unsupported method {method}"),
    };
    let mut response = result.unwrap_or_else(|err| panic!("{method} {path} failed: {err}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}

/// The ids of the frameworks the simulator shows connected.
fn connected_frameworks(lab: &Lab) -> Vec<Value> {
    lab.sim_state()["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|fw| fw["connected"] == true)
        .map(|fw| fw["id"].clone())
        .collect()
}

#[test]
fn reset_kills_everything_registers_anew_and_keeps_intelligence() {
    let lab = Lab::start_with(|config| config.api_token = Some(TOKEN.into()));
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let influx = r#"{"id":"influxdb","dockerimage":"tutum/influxdb","mem":"200","sla":"singleton","nodetype":"analytics"}"#;
    for task in [STRESS60, influx] {
        let (status, body) = send(&lab, "POST", "/client/task", &auth, Some(task));
        assert_eq!(status, 202, "{body}");
    }
    lab.wait_running("stress60", 1);
    lab.wait_running("influxdb", 1);
    let (status, body) = send(
        &lab,
        "PUT",
        "/client/intelligence/stress60/mem",
        &auth,
        Some("209924096"),
    );
    assert_eq!(status, 200, "{body}");
    let old = connected_frameworks(&lab);
    assert_eq!(old.len(), 1, "{}", lab.sim_state());

    // A mutating route: the token is needed, and a refusal changes nothing.
    let (status, _) = send(&lab, "POST", "/admin/reset", &[], None);
    assert_eq!(status, 401);
    assert_eq!(lab.tasks().len(), 2);
    let (status, _) = send(&lab, "GET", "/admin/reset", &[], None);
    assert_eq!(status, 405);

    let (status, body) = send(&lab, "POST", "/admin/reset", &auth, None);
    assert_eq!(
        (status, parsed(&body)),
        (
            200,
            json!({"code": 200, "message": "Reset: 2 tasks killed"})
        )
    );
    // Answered only once the old framework is gone and a new one is subscribed.
    let state = lab.sim_state();
    assert_eq!(state["removed_frameworks"], 1, "{state}");
    assert_eq!(state["tasks"], json!([]), "{state}");
    let new = connected_frameworks(&lab);
    assert_eq!(new.len(), 1, "{state}");
    assert_ne!(new, old, "{state}");
    assert!(lab.tasks().is_empty(), "{:?}", lab.tasks());
    let (_, intelligence) = lab.get("/client/intelligence");
    assert!(
        intelligence.to_string().contains("209924096"),
        "{intelligence}"
    );

    // The new framework runs work, intelligence applied.
    let (status, body) = send(&lab, "POST", "/client/task", &auth, Some(STRESS60));
    assert_eq!(status, 202, "{body}");
    let running = lab.wait_running("stress60", 1);
    assert!(
        running[0]["intelligence"]["mem"].is_string(),
        "{}",
        running[0]
    );
    let state = lab.sim_state();
    let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "{state}");

    // A second reset right away works the same way.
    let (status, body) = send(&lab, "POST", "/admin/reset", &auth, None);
    assert_eq!(
        (status, parsed(&body)),
        (
            200,
            json!({"code": 200, "message": "Reset: 1 tasks killed"})
        )
    );
    assert!(wait_until(DEADLINE, || lab.sim_state()
        ["removed_frameworks"]
        == 2));
    assert!(lab.tasks().is_empty());
}

#[test]
fn output_ends_with_a_newline_and_is_pretty_for_people() {
    let lab = Lab::start();
    let curl = [("User-Agent", "curl/7.68.0")];
    let (status, body) = send(&lab, "GET", "/admin/ping", &curl, None);
    assert_eq!((status, body.as_str()), (200, "Pong\n"));

    // The contract's examples, sent the way the lab's scripts send them.
    let (status, body) = send(&lab, "POST", "/client/task", &curl, Some(STRESS60));
    assert_eq!(
        (status, body.as_str()),
        (
            202,
            "{\n  \"code\": 202,\n  \"message\": \"Run task: stress60\"\n}\n"
        )
    );
    lab.wait_running("stress60", 1);
    // Programs get one compact line, still ending with a newline.
    let (status, compact) = send(&lab, "GET", "/client/task", &[], None);
    assert_eq!(status, 200);
    assert!(compact.ends_with("}]\n"), "{compact}");
    assert_eq!(compact.lines().count(), 1, "{compact}");
    for (path, headers) in [
        ("/client/task?pretty", &[][..]),
        ("/client/task", &curl[..]),
    ] {
        let (status, pretty) = send(&lab, "GET", path, headers, None);
        assert_eq!(status, 200);
        assert!(
            pretty.starts_with("[\n  {\n    \"id\": \"stress60\",\n"),
            "{pretty}"
        );
        assert!(pretty.ends_with("\n]\n"), "{pretty}");
        assert_eq!(parsed(&pretty), parsed(&compact));
    }
    let (status, body) = send(&lab, "GET", "/nowhere", &curl, None);
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            "{\n  \"code\": 404,\n  \"message\": \"no such endpoint: /nowhere\"\n}\n"
        )
    );

    // A kill lists what it killed in short; ?verbose=true in full.
    let internal = lab.tasks_named("stress60")[0]["InternalID"].clone();
    let (status, body) = send(&lab, "DELETE", "/client/task/stress", &[], None);
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("}]}\n"), "{body}");
    assert_eq!(
        parsed(&body),
        json!({
            "code": 200,
            "message": format!("Kill task: {}", internal.as_str().unwrap_or_default()),
            "tasks": [{"id": "stress60", "InternalID": internal, "state": "TASK_RUNNING"}],
        })
    );
    let (status, body) = send(&lab, "POST", "/client/task", &[], Some(STRESS60));
    assert_eq!(status, 202, "{body}");
    let running = lab.wait_running("stress60", 1);
    let (status, body) = send(
        &lab,
        "DELETE",
        "/client/task/stress?verbose=true",
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let killed = parsed(&body);
    assert_eq!(killed["tasks"][0]["InternalID"], running[0]["InternalID"]);
    assert_eq!(killed["tasks"][0]["dockerimage"], "stress", "{killed}");

    // The reshuffle example: same code and message, modulo whitespace.
    let (status, body) = send(&lab, "GET", "/client/task/reshuffle", &curl, None);
    let reply = parsed(&body);
    assert_eq!(
        (status, &reply["code"], &reply["message"]),
        (202, &json!(202), &json!("Reshuffle tasks"))
    );
    assert!(body.ends_with("\n}\n"), "{body}");
}

#[test]
fn mutating_requests_leave_an_audit_line_and_reconciliation_stays_quiet() {
    capture_logs();
    let lab = Lab::start_with(|config| {
        config.api_token = Some(TOKEN.into());
        config.reconcile_interval = Duration::from_secs(1);
    });
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let task = r#"{"id":"audited","dockerimage":"stress","mem":"10","reshuffleable":true,"nodetype":"lab"}"#;
    let info = log::Level::Info;

    let (status, _) = send(&lab, "POST", "/client/task", &[], Some(task));
    assert_eq!(status, 401);
    let (status, _) = send(
        &lab,
        "POST",
        "/client/task",
        &auth,
        Some(r#"{"id":"audited"}"#),
    );
    assert_eq!(status, 400);
    let (status, _) = send(&lab, "POST", "/client/task", &auth, Some(task));
    assert_eq!(status, 202);
    let running = lab.wait_running("audited", 1);
    let first = running[0]["InternalID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, _) = send(&lab, "GET", "/client/task/reshuffle", &auth, None);
    assert_eq!(status, 202);
    let mut replacement = String::new();
    assert!(wait_until(DEADLINE, || {
        let tasks = lab.tasks_named("audited");
        replacement = tasks
            .first()
            .and_then(|task| task["InternalID"].as_str())
            .unwrap_or_default()
            .to_string();
        tasks.len() == 1 && replacement != first && tasks[0]["state"] == "TASK_RUNNING"
    }));
    let (status, _) = send(
        &lab,
        "PUT",
        "/client/intelligence/audited/mem",
        &auth,
        Some("2000000"),
    );
    assert_eq!(status, 200);
    let (status, _) = send(&lab, "DELETE", "/client/task/audit", &auth, None);
    assert_eq!(status, 200);
    let (status, _) = send(&lab, "GET", "/client/task", &auth, None);
    assert_eq!(status, 200);

    let expected: [&[&str]; 6] = [
        &["auth=none route=submit status=401", "bearer token"],
        &["auth=bearer route=submit task=\"audited\" status=400", "dockerimage"],
        &["auth=bearer route=submit task=\"audited\" status=202 result=\"submitted audited\""],
        &["route=reshuffle status=202", &first],
        &["route=intelligence-set task=\"audited\" attribute=\"mem\" value=\"2000000\" status=200"],
        &["route=kill prefix=\"audit\" status=200", &replacement],
    ];
    for parts in expected {
        let lines = logged(info, parts);
        assert_eq!(lines.len(), 1, "{parts:?}: {lines:?}");
        assert!(lines[0].starts_with("audit peer=127.0.0.1:"), "{lines:?}");
    }
    // Reads are not audited.
    assert!(logged(info, &["audit", "route=list"]).is_empty());

    // A reconciliation answer that changes nothing is logged at debug only.
    let task = r#"{"id":"reconciled","dockerimage":"stress","mem":"10","nodetype":"lab"}"#;
    let (status, _) = send(&lab, "POST", "/client/task", &auth, Some(task));
    assert_eq!(status, 202);
    let running = lab.wait_running("reconciled", 1);
    let id = format!(
        "task={} ",
        running[0]["InternalID"].as_str().unwrap_or_default()
    );
    let parts = [id.as_str(), "state=TASK_RUNNING"];
    assert!(
        wait_until(DEADLINE, || logged(log::Level::Debug, &parts).len() >= 2),
        "no reconciliation answers seen"
    );
    release_logs();
    assert_eq!(logged(info, &parts).len(), 1, "{:?}", logged(info, &parts));
}

/// One run of a lab experiment the way its scripts do it: services, two
/// copies of the same load, a prefix kill. Returns what is left, as
/// (user id, state, hostname for pinned copies) sorted.
fn experiment(lab: &Lab, auth: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let headers: Vec<(&str, &str)> = auth
        .iter()
        .copied()
        .chain([("User-Agent", "curl/7.68.0")])
        .collect();
    let load = r#"{"id":"normalload-u100","dockerimage":"stress","mem":"20","nodetype":"lab"}"#;
    let datacoll = r#"{"id":"datacoll","dockerimage":"stress","mem":"20","nodetype":"lab"}"#;
    for task in [INFLUXDB, CADVISOR, STRESS60, load, load, datacoll] {
        let (status, body) = send(lab, "POST", "/client/task", &headers, Some(task));
        assert_eq!(status, 202, "{body}");
    }
    lab.wait_running("cadvisor", 3);
    lab.wait_running("influxdb", 1);
    lab.wait_running("stress60", 1);
    lab.wait_running("normalload-u100", 2);
    lab.wait_running("datacoll", 1);
    let (status, body) = send(lab, "DELETE", "/client/task/datacoll", &headers, None);
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(DEADLINE, || lab
        .tasks_named("datacoll")
        .is_empty()));
    let mut left: Vec<(String, String, String)> = lab
        .tasks()
        .iter()
        .map(|task| {
            let pinned = matches!(task["sla"].as_str(), Some("one-per-node" | "singleton"));
            (
                task["id"].as_str().unwrap_or_default().to_string(),
                task["state"].as_str().unwrap_or_default().to_string(),
                if pinned {
                    task["hostname"].as_str().unwrap_or_default().to_string()
                } else {
                    String::new()
                },
            )
        })
        .collect();
    left.sort();
    left
}

/// The issue's "done when": the same experiment twice, with a reset in
/// between, ends the same way both times (no duplicates piled up).
#[test]
fn an_experiment_run_twice_with_a_reset_between_gives_the_same_result() {
    let lab = Lab::start();
    let first = experiment(&lab, &[]);
    assert_eq!(first.len(), 3 + 1 + 1 + 2, "{first:?}");
    let (status, body) = send(&lab, "POST", "/admin/reset", &[], None);
    assert_eq!(
        (status, parsed(&body)),
        (
            200,
            json!({"code": 200, "message": "Reset: 7 tasks killed"})
        )
    );
    assert!(lab.tasks().is_empty());
    let second = experiment(&lab, &[]);
    assert_eq!(second, first);
    let state = lab.sim_state();
    let on_master = state["tasks"].as_array().map_or(0, Vec::len);
    assert_eq!(on_master, first.len(), "{state}");
}
