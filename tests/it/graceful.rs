//! Issue 11, items 6 and 7, with the real `charmander-scheduler` binary:
//! SIGTERM and SIGINT stop it gracefully (exit 0, one line, the framework
//! stays registered, a restart resumes it with its tasks still running), a
//! port clash names the flag and the address, and `--sim --sim-agents` runs
//! the lab's four nodes and says where the simulated master's state is.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use charmander::sim;
use serde_json::Value;

use crate::support::{
    fast_sim, http_agent, request, sim_state, submit, wait_until, DEADLINE, STRESS60,
};

/// The scheduler binary Cargo built for these tests.
const BINARY: &str = env!("CARGO_BIN_EXE_charmander-scheduler");

/// The documented four-node lab.
const LAB_AGENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lab-agents.json");

/// The most output lines kept from one scheduler process.
const MAX_LINES: usize = 10_000;

/// One `charmander-scheduler` process; its log lines (stdout and stderr)
/// are collected by reader threads. Killed on drop if still running.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(BINARY)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scheduler binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn std::io::Read + Send>);
        for pipe in [stdout, stderr].into_iter().flatten() {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if lines.len() < MAX_LINES {
                        lines.push(line);
                    }
                }
            });
        }
        Process { child, lines }
    }

    fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// The first log line containing `needle`, waiting for it.
    #[track_caller]
    fn wait_line(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(DEADLINE, || {
            found = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|line| line.contains(needle))
                .cloned();
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", self.output()))
    }

    /// The REST API's host:port, from the startup line.
    fn api(&self) -> String {
        let line = self.wait_line("charmander-scheduler api=http://");
        field(&line, "api=http://")
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to end on its own.
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(DEADLINE, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("did not exit; output:\n{}", self.output()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text after `key` up to the next space.
fn field(line: &str, key: &str) -> String {
    let (_, rest) = line
        .split_once(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    rest.split_whitespace().next().unwrap_or("").to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("charmander-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn start_against(sim: &sim::Master, dir: &Path) -> Process {
    Process::start(&[
        "--master",
        &sim.addr().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &dir.display().to_string(),
        "--http-workers",
        "2",
    ])
}

/// The scheduler's tasks named `id`.
fn tasks_named(api: &str, id: &str) -> Vec<Value> {
    let (status, tasks) = request(
        &http_agent(),
        "GET",
        &format!("http://{api}/client/task"),
        None,
    );
    assert_eq!(status, 200, "{tasks}");
    tasks
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|task| task["id"] == id)
        .collect()
}

/// See: issue 11, item 7. SIGTERM and Ctrl-C ended the process at once, with
/// no shutdown line and no final flush.
#[test]
fn a_signal_stops_gracefully_and_a_restart_resumes_the_same_framework() {
    let sim = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let dir = temp_dir("graceful");
    let http = http_agent();
    let mut scheduler = start_against(&sim, &dir);
    let api = scheduler.api();
    submit(&http, &api, STRESS60);
    let mut running = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            running = tasks_named(&api, "stress60");
            running.len() == 1 && running[0]["state"] == "TASK_RUNNING"
        }),
        "stress60 never ran: {running:?}"
    );
    let internal_id = running[0]["InternalID"].clone();
    let framework_id = sim_state(&sim)["frameworks"][0]["id"].clone();
    assert!(framework_id.is_string(), "{}", sim_state(&sim));
    for signal in ["TERM", "INT"] {
        scheduler.signal(signal);
        let status = scheduler.wait_exit();
        let output = scheduler.output();
        assert_eq!(status.code(), Some(0), "SIG{signal}: {output}");
        let stopped: Vec<&str> = output
            .lines()
            .filter(|line| line.contains(&format!("stopped on SIG{signal}")))
            .collect();
        assert_eq!(stopped.len(), 1, "one shutdown line expected:\n{output}");
        // A stop is not a reset: the framework and its task stay with the master.
        let state = sim_state(&sim);
        assert_eq!(
            state["frameworks"].as_array().map(Vec::len),
            Some(1),
            "{state}"
        );
        assert_eq!(state["frameworks"][0]["id"], framework_id, "{state}");
        assert_eq!(state["removed_frameworks"], 0, "{state}");
        assert_eq!(state["tasks"][0]["id"], internal_id, "{state}");
        assert_eq!(state["tasks"][0]["state"], "TASK_RUNNING", "{state}");

        scheduler = start_against(&sim, &dir);
        let restored = scheduler.wait_line("state restored");
        assert_eq!(
            field(&restored, "framework="),
            framework_id.as_str().unwrap_or_default(),
            "{restored}"
        );
        let api = scheduler.api();
        scheduler.wait_line("subscribed framework=");
        let tasks = tasks_named(&api, "stress60");
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(
            tasks[0]["InternalID"], internal_id,
            "the same task, not a new one"
        );
        assert!(
            wait_until(DEADLINE, || {
                tasks_named(&api, "stress60")[0]["state"] == "TASK_RUNNING"
            }),
            "{:?}",
            tasks_named(&api, "stress60")
        );
        let state = sim_state(&sim);
        assert_eq!(state["launches"], 1, "never relaunched: {state}");
        assert_eq!(state["frameworks"][0]["id"], framework_id, "{state}");
    }
    drop(scheduler);
    let _ = std::fs::remove_dir_all(&dir);
}

/// See: issue 11, item 7. A port clash said `Address already in use`
/// without the port.
#[test]
fn a_port_clash_names_the_flag_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut scheduler = Process::start(&["--sim", "--listen", &addr]);
    let status = scheduler.wait_exit();
    let output = scheduler.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "cannot start: --listen {addr}: Address already in use"
        )),
        "{output}"
    );
}

/// See: issue 11, item 6. `--sim` was fixed at three nodes (traffic
/// experiments stayed pending) and its state URL was only in the first line.
#[test]
fn sim_agents_run_the_four_node_lab_and_the_state_url_is_logged() {
    let mut scheduler = Process::start(&[
        "--sim",
        "--sim-agents",
        LAB_AGENTS,
        "--listen",
        "127.0.0.1:0",
    ]);
    let line = scheduler.wait_line("--sim: simulated master");
    let state_url = field(&line, "state=");
    assert!(
        state_url.starts_with("http://127.0.0.1:") && state_url.ends_with("/sim/state"),
        "{line}"
    );
    let http = http_agent();
    let (status, state) = request(&http, "GET", &state_url, None);
    assert_eq!(status, 200);
    let agents: Vec<(String, String)> = state["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|agent| {
            let nodetype = agent["attributes"]
                .as_array()
                .and_then(|pairs| pairs.iter().find(|pair| pair[0] == "nodetype"))
                .map_or(String::new(), |pair| {
                    pair[1].as_str().unwrap_or("").to_string()
                });
            (
                agent["hostname"].as_str().unwrap_or("").to_string(),
                nodetype,
            )
        })
        .collect();
    let expected = [
        ("slave1", "analytics"),
        ("slave2", "lab"),
        ("slave3", "lab"),
        ("slave4", "traffic"),
    ]
    .map(|(h, t)| (h.to_string(), t.to_string()));
    assert_eq!(agents, expected, "{state}");
    // A traffic experiment runs instead of staying pending.
    let api = scheduler.api();
    submit(
        &http,
        &api,
        r#"{"id":"normalload-u30","dockerimage":"normalload","mem":"20","nodetype":"traffic","arguments":["-u","30"]}"#,
    );
    let mut tasks = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            tasks = tasks_named(&api, "normalload-u30");
            tasks.len() == 1 && tasks[0]["state"] == "TASK_RUNNING"
        }),
        "{tasks:?}"
    );
    assert_eq!(tasks[0]["hostname"], "slave4", "{tasks:?}");
    scheduler.signal("TERM");
    assert_eq!(
        scheduler.wait_exit().code(),
        Some(0),
        "{}",
        scheduler.output()
    );
}
