//! Outcomes a client can trust (issue 9, B5): a change the scheduler took is
//! never answered 503, however slow the disk; past the commit wait it is
//! 504 "outcome unknown" and the change still happens; and a submit retried
//! with its `Idempotency-Key` creates one task, also across a restart.
//!
//! A slow disk is `Config::journal_delay`: every journal commit waits that
//! long before its fsync.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{scheduler_config, wait_until, Lab, DEADLINE, STRESS60};

/// Longer than the 5 s after which a worker used to give up with 503 while
/// the submit it had handed over was still being committed.
const SLOW_FSYNC: Duration = Duration::from_secs(6);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "charmander-it-outcomes-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client patient enough for a slow disk (the shared one gives up at 10 s).
fn patient_http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `POST /client/task` with an optional `Idempotency-Key`; (status, JSON body).
fn post_task(http: &ureq::Agent, lab: &Lab, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = http
        .post(lab.api("/client/task"))
        .header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let mut response = request
        .send(body)
        .unwrap_or_else(|err| panic!("POST /client/task failed: {err}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// How long `listed` keeps asking: a read's reply also waits for the commit
/// in flight (write-ahead), and behind `SLOW_FSYNC` the task's own lifecycle
/// (launch, STARTING, RUNNING) makes several commits in a row, each of which
/// may outlast the read's 5 s wait. Room for those, on a busy machine.
const LIST_DEADLINE: Duration = Duration::from_secs(90);

/// How many tasks named `id` are listed, asking until the list is answered
/// (a read may get 503 while it waits behind a slow commit).
#[track_caller]
fn listed(lab: &Lab, id: &str) -> usize {
    let mut count = None;
    let answered = wait_until(LIST_DEADLINE, || {
        let (status, tasks) = lab.get("/client/task");
        count = (status == 200).then(|| {
            tasks
                .as_array()
                .map_or(0, |tasks| tasks.iter().filter(|t| t["id"] == id).count())
        });
        count.is_some()
    });
    assert!(answered, "the task list was never answered");
    count.unwrap_or(0)
}

fn run_task(id: &str) -> Value {
    json!({"code": 202, "message": format!("Run task: {id}")})
}

#[test]
fn a_submit_behind_a_slow_fsync_gets_its_202_not_a_503() {
    let dir = TempDir::new("slow");
    let lab = Lab::start_with(|config| {
        config.state_dir = Some(dir.0.clone());
        config.journal_delay = SLOW_FSYNC;
    });
    let (status, body) = post_task(&patient_http(), &lab, STRESS60, None);
    assert_eq!((status, body), (202, run_task("stress60")));
    // Answered after the commit, so the task is already known.
    assert_eq!(listed(&lab, "stress60"), 1);
}

#[test]
fn past_the_commit_wait_a_submit_is_504_and_a_keyed_retry_creates_nothing() {
    let dir = TempDir::new("unknown");
    let lab = Lab::start_with(|config| {
        config.state_dir = Some(dir.0.clone());
        config.journal_delay = Duration::from_secs(2);
        config.commit_wait = Duration::from_millis(300);
    });
    let http = patient_http();
    let (status, body) = post_task(&http, &lab, STRESS60, Some("b5-retry"));
    assert_eq!(
        (status, body),
        (
            504,
            json!({"code": 504, "message": "outcome unknown, check GET /client/task"})
        )
    );
    // A client that retries on 504 with its key: 504 while the first is
    // still being committed, then the first answer. Never a 503.
    let mut statuses = Vec::new();
    let answered = wait_until(DEADLINE, || {
        let (status, body) = post_task(&http, &lab, STRESS60, Some("b5-retry"));
        statuses.push(status);
        status == 202 && body == run_task("stress60")
    });
    assert!(answered, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [202, 504].contains(s)),
        "{statuses:?}"
    );
    // The outcome was unknown to the client, but the task exists, once.
    assert_eq!(listed(&lab, "stress60"), 1);
}

#[test]
fn one_idempotency_key_makes_one_task_also_across_a_restart() {
    let dir = TempDir::new("keys");
    let mut lab = Lab::start_with(|config| config.state_dir = Some(dir.0.clone()));
    let http = patient_http();
    let web = r#"{"id": "web", "dockerimage": "nginx", "mem": "10"}"#;
    let bigger = r#"{"id": "web", "dockerimage": "nginx", "mem": "20"}"#;
    for _ in 0..2 {
        assert_eq!(
            post_task(&http, &lab, web, Some("key-1")),
            (202, run_task("web"))
        );
    }
    assert_eq!(
        post_task(&http, &lab, bigger, Some("key-1")),
        (
            409,
            json!({"code": 409, "message": "Idempotency-Key \"key-1\" was already used for a different request"})
        )
    );
    let (status, body) = post_task(&http, &lab, web, Some(&"k".repeat(129)));
    assert_eq!(status, 400, "{body}");
    assert_eq!(listed(&lab, "web"), 1);

    // A new process on the same state directory remembers the key.
    if let Some(scheduler) = lab.scheduler.take() {
        scheduler.shutdown();
    }
    let mut config = scheduler_config(&lab.sim.addr().to_string());
    config.state_dir = Some(dir.0.clone());
    lab.scheduler = Some(charmander::start(config).expect("restarts"));
    assert_eq!(
        post_task(&http, &lab, web, Some("key-1")),
        (202, run_task("web"))
    );
    assert_eq!(listed(&lab, "web"), 1);
    // Another key is another request.
    assert_eq!(
        post_task(&http, &lab, web, Some("key-2")),
        (202, run_task("web"))
    );
    assert_eq!(listed(&lab, "web"), 2);
}
