//! Issue 10, items 2 and 5: Mesos calls go out on several lanes at once but
//! keep the order that matters (a task's ACCEPT before its KILL), every
//! status update of many tasks is acknowledged, and the log goes to stderr.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use charmander::sim::{self, AgentSpec};
use serde_json::Value;

use crate::fault_proxy::{Fate, FaultProxy};
use crate::support::{
    fast_sim, http_agent, request, sample_of, scheduler_config, sim_state, submit, wait_until, Lab,
    DEADLINE, STRESS60,
};

/// The scheduler binary Cargo built for these tests.
const BINARY: &str = env!("CARGO_BIN_EXE_charmander-scheduler");

/// See: issue 10, item 2. With calls on parallel connections, a KILL sent
/// right after a launch must still reach the master after the ACCEPT, even
/// when the ACCEPT has to be sent again: the master would otherwise answer
/// the KILL for a task it does not know yet and then launch it.
#[test]
fn a_kill_right_after_a_launch_never_reaches_the_master_before_its_accept() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let proxy = FaultProxy::start(master.addr()).expect("proxy starts");
    let scheduler =
        charmander::start(scheduler_config(&proxy.addr().to_string())).expect("scheduler starts");
    let http = http_agent();
    let api = scheduler.api_addr().to_string();
    assert!(wait_until(DEADLINE, || sim_state(&master)["frameworks"]
        .as_array()
        .is_some_and(|it| it.iter().any(|fw| fw["connected"] == true))));
    // The master turns the first ACCEPTs away (503): the caller sends it
    // again after a backoff, and the KILL comes in meanwhile.
    let faults = format!("http://{}/sim/calls/faults", master.addr());
    let (status, body) = request(
        &http,
        "POST",
        &faults,
        Some(r#"{"call": "ACCEPT", "fault": "unavailable", "count": 3}"#),
    );
    assert_eq!(status, 200, "{body}");
    submit(&http, &api, STRESS60);
    assert!(
        wait_until(DEADLINE, || proxy.count("ACCEPT", Fate::Passed) >= 1),
        "no ACCEPT reached the master"
    );
    let (status, body) = request(
        &http,
        "DELETE",
        &format!("http://{api}/client/task/stress60"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    // Launched once, then killed (the simulator lists only live tasks).
    let killed = wait_until(DEADLINE, || {
        let state = sim_state(&master);
        proxy.count("KILL", Fate::Passed) >= 1
            && state["launches"] == 1
            && state["tasks"].as_array().is_some_and(Vec::is_empty)
    });
    assert!(killed, "the task was not killed: {}", sim_state(&master));
    let forwarded = proxy.forwarded();
    let last_accept = forwarded.iter().rposition(|kind| kind == "ACCEPT");
    let first_kill = forwarded.iter().position(|kind| kind == "KILL");
    assert!(
        matches!((last_accept, first_kill), (Some(accept), Some(kill)) if accept < kill),
        "the KILL overtook the ACCEPT: {forwarded:?}"
    );
    assert_eq!(
        forwarded.iter().filter(|kind| *kind == "ACCEPT").count(),
        4,
        "three refused attempts and one that got through: {forwarded:?}"
    );
    scheduler.shutdown();
}

/// Many small agents, so the calls of many agents spread over every lane.
fn many_agents(count: usize) -> Vec<AgentSpec> {
    (0..count)
        .map(|n| AgentSpec {
            hostname: format!("node{n}"),
            cpus: 8.0,
            mem_mb: 8192.0,
            ports: vec![(31000, 32000)],
            attributes: vec![("nodetype".to_string(), "lab".to_string())],
            reserved: None,
        })
        .collect()
}

/// Submits `count` small tasks for the `lab` nodes, `<prefix>0`, `<prefix>1`, ...
fn submit_small_tasks(http: &ureq::Agent, api: &str, prefix: &str, count: usize) {
    for n in 0..count {
        let body = format!(
            r#"{{"id": "{prefix}{n}", "dockerimage": "stress", "mem": "32", "cpus": 0.1, "nodetype": "lab"}}"#
        );
        submit(http, api, &body);
    }
}

/// See: issue 10, item 2. With ACKNOWLEDGEs in parallel and in batches, none
/// may be lost: every task runs and the master has no update left
/// unacknowledged.
#[test]
fn every_update_of_many_tasks_is_acknowledged() {
    const TASKS: usize = 200;
    let lab = Lab::with_agents(many_agents(16));
    let api = lab.api_addr().to_string();
    submit_small_tasks(&lab.http, &api, "many", TASKS);
    let mut state = Value::Null;
    let all_acknowledged = wait_until(DEADLINE * 2, || {
        state = lab.sim_state();
        let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
        tasks.len() == TASKS
            && tasks.iter().all(|task| task["state"] == "TASK_RUNNING")
            && state["unacknowledged"]
                .as_object()
                .is_some_and(|unacked| unacked.values().all(|n| n == 0))
    });
    assert!(
        all_acknowledged,
        "not every task runs with its updates acknowledged: tasks={} unacknowledged={}",
        state["tasks"].as_array().map_or(0, Vec::len),
        state["unacknowledged"]
    );
    assert!(lab.calls("ACKNOWLEDGE") >= TASKS as u64);
}

/// See: issue 10, item 5. Log lines must go to stderr: stdout is for what a
/// command prints (`--help`), and a supervisor may treat the two apart.
#[test]
fn log_lines_go_to_stderr_and_stdout_stays_empty() {
    let mut child = Command::new(BINARY)
        .args(["--sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scheduler binary starts");
    let stderr_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let collected = Arc::clone(&stderr_lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            collected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
        }
    });
    let mut stdout = child.stdout.take().expect("stdout piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = wait_until(DEADLINE, || {
        stderr_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|line| line.contains("charmander-scheduler api=http://"))
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut exit = None;
    wait_until(DEADLINE, || {
        exit = child.try_wait().expect("try_wait");
        exit.is_some()
    });
    if exit.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout_reader.join().expect("stdout reader ends");
    reader.join().expect("stderr reader ends");
    let stderr = stderr_lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .join("\n");
    assert!(started, "no startup line on stderr:\n{stderr}");
    assert!(stderr.contains("stopped on SIGTERM"), "{stderr}");
    assert_eq!(stdout, "", "stdout must stay empty; stderr was:\n{stderr}");
    assert_eq!(exit.and_then(|it| it.code()), Some(0), "{stderr}");
}

/// See: issue 10, item 2. With one connection, a call the master kept
/// turning away (an ACCEPT answered 503, sent again and again) held up every
/// call queued behind it: no other agent's update was acknowledged until it
/// got through. Only the calls of its own lane may wait for it now.
#[test]
fn an_accept_sent_again_and_again_holds_up_no_other_agents_acknowledgements() {
    const AGENTS: usize = 16;
    const FOR_EVER: u64 = 1_000_000;
    let lab = Lab::with_agents(many_agents(AGENTS));
    let api = lab.api_addr().to_string();
    // One copy on every agent, so their calls use every lane.
    submit(
        &lab.http,
        &api,
        r#"{"id": "every", "dockerimage": "stress", "mem": "32", "cpus": 0.1, "sla": "one-per-node", "nodetype": "lab"}"#,
    );
    let settled = wait_until(DEADLINE, || {
        let state = lab.sim_state();
        state["tasks"].as_array().is_some_and(|tasks| {
            tasks.len() == AGENTS && tasks.iter().all(|task| task["state"] == "TASK_RUNNING")
        }) && state["unacknowledged"]
            .as_object()
            .is_some_and(|unacked| unacked.is_empty())
    });
    assert!(settled, "the copies did not all run: {}", lab.sim_state());
    let launches = lab.sim_state()["launches"].clone();
    let fault = format!(r#"{{"call": "ACCEPT", "fault": "unavailable", "count": {FOR_EVER}}}"#);
    let (status, body) = lab.sim_post("/sim/calls/faults", &fault);
    assert_eq!(status, 200, "{body}");
    submit(
        &lab.http,
        &api,
        r#"{"id": "stuck", "dockerimage": "stress", "mem": "32", "cpus": 0.1, "nodetype": "lab"}"#,
    );
    // The ACCEPT has been turned away twice: it waits in its backoff.
    let refused_twice = wait_until(DEADLINE, || {
        lab.sim_state()["call_faults"][0]["count"]
            .as_u64()
            .is_some_and(|left| left <= FOR_EVER - 2)
    });
    assert!(
        refused_twice,
        "the ACCEPT was not retried: {}",
        lab.sim_state()
    );
    let task_ids: Vec<String> = lab.sim_state()["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|task| task["id"].as_str().map(str::to_string))
        .collect();
    for task_id in &task_ids {
        let (status, body) = lab.sim_post(&format!("/sim/tasks/{task_id}/finish"), "");
        assert_eq!(status, 200, "{body}");
    }
    // A finished task leaves the simulator's list once its update is
    // acknowledged: those of the agents on other lanes go while the ACCEPT
    // still waits.
    let mut state = Value::Null;
    let some_acknowledged = wait_until(DEADLINE, || {
        state = lab.sim_state();
        let still_listed = state["tasks"].as_array().map_or(usize::MAX, |tasks| {
            tasks
                .iter()
                .filter(|task| {
                    task["id"]
                        .as_str()
                        .is_some_and(|id| task_ids.iter().any(|it| it == id))
                })
                .count()
        });
        still_listed < task_ids.len()
    });
    assert!(
        some_acknowledged,
        "no update acknowledged while one ACCEPT was sent again: calls={} unacknowledged={}",
        state["calls"], state["unacknowledged"]
    );
    assert_eq!(
        state["launches"], launches,
        "the ACCEPT got through meanwhile, so the test proved nothing"
    );
    let (status, body) = lab.sim_delete("/sim/calls/faults");
    assert_eq!(status, 200, "{body}");
}

/// The scheduler's count of `series` in `GET /metrics` (0 when absent).
fn scraped(lab: &Lab, series: &str) -> u64 {
    let mut response = lab
        .http
        .get(lab.api("/metrics"))
        .call()
        .expect("GET /metrics");
    let text = response.body_mut().read_to_string().expect("a text body");
    sample_of(&text, series)
}

/// See: issue 10 (pipelined calls). The master acts on an ACCEPT and answers
/// garbage: that ACCEPT, and every ACCEPT after it in its pipelined batch,
/// has an unknown outcome. None is sent again; reconciliation finds the
/// tasks the master launched, so every task is launched exactly once.
#[test]
fn a_broken_batch_of_accepts_launches_every_task_exactly_once() {
    const TASKS: usize = 24;
    let lab = Lab::with_agents(many_agents(12));
    let api = lab.api_addr().to_string();
    let (status, body) = lab.sim_post(
        "/sim/calls/faults",
        r#"{"call": "ACCEPT", "fault": "lose-response", "count": 1}"#,
    );
    assert_eq!(status, 200, "{body}");
    submit_small_tasks(&lab.http, &api, "batch", TASKS);
    let mut state = Value::Null;
    let all_running_once = wait_until(DEADLINE * 2, || {
        state = lab.sim_state();
        let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
        tasks.len() == TASKS && tasks.iter().all(|task| task["state"] == "TASK_RUNNING")
    });
    assert!(all_running_once, "not every task runs: {state}");
    assert_eq!(state["launches"], TASKS, "a task launched twice: {state}");
    let unknown = scraped(
        &lab,
        r#"charmander_mesos_calls_total{call="ACCEPT",result="outcome_unknown"}"#,
    );
    assert!(unknown >= 1, "the lost answer was not an unknown outcome");
    let (status, listed) = lab.get("/client/task");
    assert_eq!(status, 200);
    let running = listed.as_array().map_or(0, |tasks| {
        tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count()
    });
    assert_eq!(running, TASKS, "{listed}");
}
