//! Issue 11, item 9: the lab's `bin/` scripts replayed as written, with the
//! real `curl` binary and their exact flags, against `charmander::start` and
//! mesos-sim with the lab's four nodes (`docs/lab-agents.json`). The task
//! files in `tests/lab/` are written from the contract's table
//! (`charmander-contract.md` §3), quirks included: `pcp-all.json` has a stray
//! `}` after its object and lists `/var/log` twice.
//!
//! Each script function is the script's curl line. The only flag added is
//! `--write-out`, which changes nothing on the wire and lets the test see the
//! status code.

use std::path::PathBuf;
use std::process::Command;

use charmander::sim;
use serde_json::Value;

use crate::support::{wait_until, Lab, DEADLINE};

/// The documented four-node lab.
const LAB_AGENTS: &str = include_str!("../../docs/lab-agents.json");

/// Separates curl's body from the status code `--write-out` appends.
const STATUS_MARK: &str = "\n--status:";

/// A task file under `tests/lab/`.
fn task_file(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "lab", name]
        .iter()
        .collect();
    assert!(path.is_file(), "missing task file {}", path.display());
    path.display().to_string()
}

/// The lab's scripts, pointed at one scheduler.
struct Scripts {
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Scripts {
    fn new(lab: &Lab) -> Scripts {
        Scripts {
            base: lab.api("").trim_end_matches('/').to_string(),
        }
    }

    /// Runs curl with the script's flags; returns the status and the body.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let output = Command::new("curl")
            .args(args)
            .arg("--write-out")
            .arg(format!("{STATUS_MARK}%{{http_code}}"))
            .output()
            .expect("the curl binary runs (install curl)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text
            .rsplit_once(STATUS_MARK)
            .unwrap_or_else(|| panic!("curl {args:?}: no status in {text:?}"));
        let status = status.trim().parse().unwrap_or(0);
        (status, body.to_string())
    }

    /// `curl -s -X POST -T FILE -H "Accept: application/json" -H
    /// "Content-Type: application/json" HOST:7075/client/task`, the line of
    /// every `bin/start_*` script.
    fn post(&self, file: &str) -> (u16, Value) {
        let (status, body) = self.curl(&[
            "-s",
            "-X",
            "POST",
            "-T",
            &task_file(file),
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/json",
            &format!("{}/client/task", self.base),
        ]);
        (status, json(&body))
    }

    /// `bin/start_analytics`: redis, influxdb, containerresolver.
    fn start_analytics(&self) -> Vec<(u16, Value)> {
        ["redis.json", "influxdb.json", "containerresolver.json"]
            .iter()
            .map(|file| self.post(file))
            .collect()
    }

    /// `bin/kill_task PREFIX`: `curl -s -X DELETE HOST:7075/client/task/$1`.
    fn kill_task(&self, prefix: &str) -> (u16, Value) {
        let (status, body) = self.curl(&[
            "-s",
            "-X",
            "DELETE",
            &format!("{}/client/task/{prefix}", self.base),
        ]);
        (status, json(&body))
    }

    /// `bin/reshuffle`: `curl -s HOST:7075/client/task/reshuffle`.
    fn reshuffle(&self) -> (u16, Value) {
        let (status, body) = self.curl(&["-s", &format!("{}/client/task/reshuffle", self.base)]);
        (status, json(&body))
    }

    /// `bin/get_tasklist`: `curl -s HOST:7075/client/task`.
    fn get_tasklist(&self) -> Vec<Value> {
        let (status, body) = self.curl(&["-s", &format!("{}/client/task", self.base)]);
        assert_eq!(status, 200, "{body}");
        json(&body).as_array().cloned().unwrap_or_default()
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

fn lab() -> Lab {
    Lab::with_agents(sim::parse_agents_json(LAB_AGENTS).expect("docs/lab-agents.json parses"))
}

#[track_caller]
fn check_run_task(reply: &(u16, Value), id: &str) {
    assert_eq!(reply.0, 202, "{id}: {}", reply.1);
    assert_eq!(reply.1["code"], 202, "{id}: {}", reply.1);
    assert_eq!(reply.1["message"], format!("Run task: {id}"), "{}", reply.1);
}

/// Whether a listed task has not ended. Ended tasks may stay listed for a
/// while (issue 11, item 4), so the checks below count only live ones.
fn is_live(task: &Value) -> bool {
    !matches!(
        task["state"].as_str().unwrap_or(""),
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

/// The live listed tasks named `id`, once they are exactly one RUNNING copy
/// on each of `hosts` (sorted; a host may repeat).
#[track_caller]
fn wait_running_on(scripts: &Scripts, id: &str, hosts: &[&str]) -> Vec<Value> {
    let mut tasks = Vec::new();
    let ok = wait_until(DEADLINE, || {
        tasks = scripts
            .get_tasklist()
            .into_iter()
            .filter(|task| task["id"] == id && is_live(task))
            .collect();
        let mut on: Vec<&str> = tasks
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING")
            .filter_map(|task| task["hostname"].as_str())
            .collect();
        on.sort_unstable();
        on == hosts && tasks.len() == hosts.len()
    });
    assert!(ok, "{id} expected running on {hosts:?}, have {tasks:#?}");
    tasks
}

/// The one listed task named `id`, once it is RUNNING.
#[track_caller]
fn wait_one_running(scripts: &Scripts, id: &str) -> Value {
    let mut tasks = Vec::new();
    let ok = wait_until(DEADLINE, || {
        tasks = scripts
            .get_tasklist()
            .into_iter()
            .filter(|task| task["id"] == id && is_live(task))
            .collect();
        tasks.len() == 1 && tasks[0]["state"] == "TASK_RUNNING"
    });
    assert!(ok, "one running {id} expected, have {tasks:#?}");
    tasks.remove(0)
}

const ALL_NODES: [&str; 4] = ["slave1", "slave2", "slave3", "slave4"];

/// See: issue 11, item 9. The lab's scripts were only replayed by hand.
#[test]
fn the_lab_scripts_bring_up_the_analytics_stack() {
    let lab = lab();
    let scripts = Scripts::new(&lab);
    let analytics = scripts.start_analytics();
    for (reply, id) in analytics
        .iter()
        .zip(["redis", "influxdb", "containerresolver"])
    {
        check_run_task(reply, id);
    }
    check_run_task(&scripts.post("cadvisor.json"), "cadvisor");
    // The stray `}` after pcp-all's object is ignored, as the original's decoder did.
    check_run_task(&scripts.post("pcp-all.json"), "pcp-all");
    check_run_task(&scripts.post("vector.json"), "vector");
    for id in ["redis", "influxdb", "vector"] {
        wait_running_on(&scripts, id, &["slave1"]);
    }
    for id in ["containerresolver", "cadvisor"] {
        wait_running_on(&scripts, id, &ALL_NODES);
    }
    let pcp = wait_running_on(&scripts, "pcp-all", &ALL_NODES);
    for copy in &pcp {
        let volumes = copy["volumes"].as_array().cloned().unwrap_or_default();
        assert_eq!(volumes.len(), 6, "six volumes, /var/log twice: {copy:#}");
        let var_log = volumes
            .iter()
            .filter(|v| v["host_path"] == "/var/log" && v["mode"] == "rw")
            .count();
        assert_eq!(var_log, 2, "{copy:#}");
        // No ports and no networkmode: Mesos' default, HOST, which PCP needs.
        assert_eq!(copy["networkmode"], "", "{copy:#}");
        assert!(
            copy["TaskInfo"]["container"]["docker"]["network"].is_null(),
            "{copy:#}"
        );
    }
    // Every launch went to the master once; nothing duplicated.
    let state = lab.sim_state();
    assert_eq!(state["launches"], 3 + 3 * 4, "{state}");
    assert_eq!(state["duplicate_launches"], 0, "{state}");
}

/// See: issue 11, item 5. pcp-all.json sets `"privileged": true` (PCP
/// reads host counters) and the original dropped it: every copy is listed
/// privileged and its TaskInfo asks Docker for it.
#[test]
fn pcp_all_is_privileged() {
    let lab = lab();
    let scripts = Scripts::new(&lab);
    check_run_task(&scripts.post("pcp-all.json"), "pcp-all");
    for copy in wait_running_on(&scripts, "pcp-all", &ALL_NODES) {
        assert_eq!(copy["privileged"], true, "{copy:#}");
        assert_eq!(
            copy["TaskInfo"]["container"]["docker"]["privileged"], true,
            "{copy:#}"
        );
    }
}

/// See: issue 11, item 9. The day-to-day loop: a `-T` upload of a
/// simulator, a duplicate one-per-node submit, reshuffle, kill by prefix
/// (`kill_cadvisor` is `DELETE /client/task/ca`).
#[test]
fn upload_reshuffle_and_kill_by_prefix_as_the_scripts_do() {
    let lab = lab();
    let scripts = Scripts::new(&lab);
    check_run_task(&scripts.post("cadvisor.json"), "cadvisor");
    check_run_task(&scripts.post("stress60mb.json"), "stress60");
    wait_running_on(&scripts, "cadvisor", &ALL_NODES);
    // A second start_cadvisor is accepted and changes nothing.
    check_run_task(&scripts.post("cadvisor.json"), "cadvisor");
    let stress = wait_one_running(&scripts, "stress60");
    let old_stress_id = stress["InternalID"].clone();
    assert!(
        ["slave2", "slave3"].contains(&stress["hostname"].as_str().unwrap_or("")),
        "nodetype=lab: {stress:#}"
    );

    let (status, reply) = scripts.reshuffle();
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["message"], "Reshuffle tasks", "{reply}");
    let mut new_stress = Vec::new();
    let ok = wait_until(DEADLINE, || {
        new_stress = lab
            .tasks_named("stress60")
            .into_iter()
            .filter(is_live)
            .collect();
        new_stress.len() == 1
            && new_stress[0]["InternalID"] != old_stress_id
            && new_stress[0]["state"] == "TASK_RUNNING"
    });
    assert!(ok, "stress60 not replaced: {new_stress:#?}");
    wait_running_on(&scripts, "cadvisor", &ALL_NODES);

    let (status, reply) = scripts.kill_task("stress");
    assert_eq!(status, 200, "{reply}");
    let message = reply["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Kill task: ")
            && message.contains(new_stress[0]["InternalID"].as_str().unwrap_or("?")),
        "{reply}"
    );
    let (status, reply) = scripts.kill_task("ca");
    assert_eq!(status, 200, "{reply}");
    let message = reply["message"].as_str().unwrap_or("");
    assert_eq!(
        message.matches("cadvisor-").count(),
        4,
        "every cadvisor copy: {reply}"
    );
    let ok = wait_until(DEADLINE, || {
        scripts
            .get_tasklist()
            .iter()
            .all(|task| task["state"] != "TASK_RUNNING" && task["state"] != "TASK_STAGING")
            && lab.sim_state()["tasks"]
                .as_array()
                .is_some_and(|tasks| tasks.iter().all(|t| t["state"] == "TASK_KILLED"))
    });
    assert!(
        ok,
        "everything killed: {:#?} {}",
        scripts.get_tasklist(),
        lab.sim_state()
    );
    // A prefix that matches nothing.
    let (status, reply) = scripts.kill_task("nothing");
    assert_eq!(status, 404, "{reply}");
}

/// See: issue 11, item 9. An experiment in the shape of nessy's
/// `script_labels_*`: vector, analytics, a DNS server pinned to slave2, the
/// same load POSTed twice on the traffic node, then kills by prefix.
#[test]
fn an_experiment_runs_on_the_four_node_lab() {
    let lab = lab();
    let scripts = Scripts::new(&lab);
    run_experiment(&lab, &scripts);
}

/// What runs, as (id, hostname) sorted.
fn running_set(scripts: &Scripts) -> Vec<(String, String)> {
    let mut running: Vec<(String, String)> = scripts
        .get_tasklist()
        .iter()
        .filter(|task| task["state"] == "TASK_RUNNING")
        .map(|task| {
            (
                task["id"].as_str().unwrap_or("").to_string(),
                task["hostname"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    running.sort();
    running
}

/// The experiment; checks and returns what it leaves running (id,
/// hostname), sorted.
fn run_experiment(lab: &Lab, scripts: &Scripts) -> Vec<(String, String)> {
    run_experiment_steps(lab, scripts);
    let running = running_set(scripts);
    let mut expected: Vec<(String, String)> = [
        ("dns-sl2", "slave2"),
        ("influxdb", "slave1"),
        ("redis", "slave1"),
        ("vector", "slave1"),
    ]
    .iter()
    .map(|(id, host)| (id.to_string(), host.to_string()))
    .chain(
        ALL_NODES
            .iter()
            .map(|host| ("containerresolver".to_string(), host.to_string())),
    )
    .collect();
    expected.sort();
    assert_eq!(running, expected);
    running
}

/// nessy's `script_labels_*` in short: vector, analytics, a DNS server
/// pinned to slave2, the same load POSTed twice on the traffic node, then a
/// kill by prefix.
fn run_experiment_steps(lab: &Lab, scripts: &Scripts) {
    check_run_task(&scripts.post("vector.json"), "vector");
    for (reply, id) in
        scripts
            .start_analytics()
            .iter()
            .zip(["redis", "influxdb", "containerresolver"])
    {
        check_run_task(reply, id);
    }
    check_run_task(&scripts.post("dns-sl2.json"), "dns-sl2");
    check_run_task(&scripts.post("normalload-u100.json"), "normalload-u100");
    check_run_task(&scripts.post("normalload-u100.json"), "normalload-u100");
    wait_running_on(scripts, "dns-sl2", &["slave2"]);
    wait_running_on(scripts, "normalload-u100", &["slave4", "slave4"]);
    wait_running_on(scripts, "containerresolver", &ALL_NODES);
    for id in ["vector", "redis", "influxdb"] {
        wait_running_on(scripts, id, &["slave1"]);
    }
    let (status, reply) = scripts.kill_task("normal");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["message"]
            .as_str()
            .unwrap_or("")
            .matches("normalload-u100-")
            .count(),
        2,
        "{reply}"
    );
    let ok = wait_until(DEADLINE, || {
        lab.sim_state()["tasks"].as_array().is_some_and(|tasks| {
            tasks
                .iter()
                .filter(|t| {
                    t["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("normalload"))
                })
                .all(|t| t["state"] == "TASK_KILLED")
        })
    });
    assert!(ok, "loads killed: {}", lab.sim_state());
}

impl Scripts {
    /// `reset_cluster` today: `curl -s -X POST HOST:7075/admin/reset` (the
    /// original restarted the scheduler, which now keeps its tasks).
    fn reset_cluster(&self) -> (u16, Value) {
        let (status, body) =
            self.curl(&["-s", "-X", "POST", &format!("{}/admin/reset", self.base)]);
        (status, json(&body))
    }
}

/// Everything the lab's scripts start, then the experiment; returns what
/// runs at the end.
fn scripts_and_experiment(lab: &Lab, scripts: &Scripts) -> Vec<(String, String)> {
    check_run_task(&scripts.post("cadvisor.json"), "cadvisor");
    check_run_task(&scripts.post("pcp-all.json"), "pcp-all");
    run_experiment_steps(lab, scripts);
    for id in ["cadvisor", "pcp-all"] {
        wait_running_on(scripts, id, &ALL_NODES);
    }
    running_set(scripts)
}

/// See: issue 11, "Done when": the lab scripts and an experiment, run twice
/// with `POST /admin/reset` between, give the same result both times
/// (restarting used to be the reset; now every task came back and the
/// second run piled up duplicates).
#[test]
fn the_scripts_and_an_experiment_twice_with_a_reset_between_end_the_same() {
    let lab = lab();
    let scripts = Scripts::new(&lab);
    let first = scripts_and_experiment(&lab, &scripts);
    // slave1: redis, influxdb, vector; slave2: dns-sl2; every node:
    // containerresolver, cadvisor, pcp-all.
    assert_eq!(first.len(), 3 + 1 + 3 * 4, "{first:?}");
    let framework = lab.sim_state()["frameworks"][0]["id"].clone();

    let (status, reply) = scripts.reset_cluster();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(
        reply["message"],
        format!("Reset: {} tasks killed", first.len()),
        "{reply}"
    );
    // The old framework is gone with its tasks; a new one is registered.
    let state = lab.sim_state();
    assert!(
        state["tasks"].as_array().is_some_and(|tasks| tasks
            .iter()
            .all(|t| t["framework_id"] != framework || t["state"] != "TASK_RUNNING")),
        "{state}"
    );
    assert!(
        running_set(&scripts).is_empty(),
        "{:#?}",
        scripts.get_tasklist()
    );
    lab.wait_subscribed();

    let second = scripts_and_experiment(&lab, &scripts);
    assert_eq!(second, first);
    let state = lab.sim_state();
    let running_on_master = state["tasks"].as_array().map_or(0, |tasks| {
        tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count()
    });
    assert_eq!(running_on_master, second.len(), "no duplicates: {state}");
    assert_eq!(state["duplicate_launches"], 0, "{state}");
    assert_ne!(state["frameworks"][0]["id"], framework, "{state}");
}
