//! The seed story on a real master: the reference's three tasks, the
//! `docker run` the real agent and docker executor build from our TaskInfo,
//! the inspect data in the task list, reshuffle and kill by prefix.

use serde_json::Value;

use crate::harness::{
    realmesos, report, text, wait_until, Cluster, ClusterOptions, Ledger, Scheduler, TempDir,
    CADVISOR, DEADLINE, INFLUXDB, STRESS60,
};

/// The parts of a `docker run` argv that come from our TaskInfo.
#[derive(Debug, Default, PartialEq)]
struct RunArgs {
    cpu_shares: String,
    memory: String,
    /// `-v` values without the sandbox mapping the agent always adds.
    volumes: Vec<String>,
    net: String,
    ports: Vec<String>,
    image: String,
    arguments: Vec<String>,
}

fn parse_run(argv: &[String]) -> RunArgs {
    let mut out = RunArgs::default();
    let start = argv
        .iter()
        .position(|w| w == "run")
        .map_or(argv.len(), |i| i + 1);
    let mut words = argv[start..].iter();
    while let Some(word) = words.next() {
        let mut value = || words.next().cloned().unwrap_or_default();
        match word.as_str() {
            "--cpu-shares" => out.cpu_shares = value(),
            "--memory" => out.memory = value(),
            "-v" => {
                let volume = value();
                if !volume.ends_with(":/mnt/mesos/sandbox") {
                    out.volumes.push(volume);
                }
            }
            "--net" => out.net = value(),
            "-p" => out.ports.push(value()),
            "--name" => {
                value();
                let rest: Vec<String> = words.by_ref().cloned().collect();
                out.image = rest.first().cloned().unwrap_or_default();
                out.arguments = rest.into_iter().skip(1).collect();
                break;
            }
            "-e" => {
                value();
            }
            _ => {}
        }
    }
    out
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn expected(id: &str) -> RunArgs {
    match id {
        "cadvisor" => RunArgs {
            cpu_shares: "102".into(),
            memory: (50u64 << 20).to_string(),
            volumes: strings(&[
                "/:/rootfs:ro",
                "/var/run:/var/run:rw",
                "/sys:/sys:ro",
                "/var/lib/docker:/var/lib/docker/:ro",
            ]),
            net: "bridge".into(),
            ports: strings(&["31500:8080"]),
            image: "google/cadvisor:0.6.2".into(),
            arguments: vec![],
        },
        "stress60" => RunArgs {
            cpu_shares: "102".into(),
            memory: (100u64 << 20).to_string(),
            volumes: vec![],
            net: "host".into(),
            ports: vec![],
            image: "stress".into(),
            arguments: strings(&["--vm-bytes", "60M", "--vm", "1"]),
        },
        "influxdb" => RunArgs {
            cpu_shares: "1024".into(),
            memory: (100u64 << 20).to_string(),
            volumes: strings(&["/analytics/log/influxdb:/log/:rw"]),
            net: "bridge".into(),
            ports: strings(&["31400:8083", "31410:8086"]),
            image: "influxdb".into(),
            arguments: vec![],
        },
        other => panic!("no expectation for {other}"),
    }
}

/// The master's state of one task id ("" when it does not know it).
fn master_state(cluster: &Cluster, id: &str) -> String {
    cluster
        .tasks()
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| text(&t["state"]))
        .unwrap_or_default()
}

fn internal_id(scheduler: &Scheduler, id: &str) -> String {
    scheduler
        .tasks()
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| text(&t["InternalID"]))
        .unwrap_or_default()
}

#[test]
fn seed_story_reference_tasks_docker_run_inspect_reshuffle_and_kill() {
    const TEST: &str = "seed_story";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("seed");
    let cluster = Cluster::start(&dir, crate::PORT_SEED, ClusterOptions::default());
    let scheduler = Scheduler::start(
        &cluster.address(),
        &tmp.path("state"),
        &tmp.path("scheduler.log"),
    );
    for body in [CADVISOR, STRESS60, INFLUXDB] {
        scheduler.submit(body);
    }
    // The one agent is a lab node: influxdb (nodetype analytics) waits and says why.
    scheduler.wait_summary(
        &[
            ("cadvisor", "TASK_RUNNING"),
            ("influxdb", "pending"),
            ("stress60", "TASK_RUNNING"),
        ],
        &cluster,
    );
    let mut influx = Value::Null;
    let explained = wait_until(DEADLINE, || {
        influx = scheduler
            .tasks()
            .into_iter()
            .find(|t| t["id"] == "influxdb")
            .unwrap_or_default();
        text(&influx["pending_reason"]).contains("analytics")
    });
    assert!(explained, "{influx}");
    // The same spec for a lab node replaces it (a pending task is dropped at once).
    assert_eq!(
        scheduler.call("DELETE", "/client/task/influxdb", None).0,
        200
    );
    scheduler.submit(&INFLUXDB.replace("\"analytics\"", "\"lab\""));
    scheduler.wait_summary(
        &[
            ("cadvisor", "TASK_RUNNING"),
            ("influxdb", "TASK_RUNNING"),
            ("stress60", "TASK_RUNNING"),
        ],
        &cluster,
    );

    // What the real agent and docker executor ran, from our TaskInfo; and the
    // inspect data the scheduler shows is the container's own.
    let runs = cluster.docker_runs();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let mut listed = Vec::new();
    let shown = wait_until(DEADLINE, || {
        listed = scheduler.tasks();
        listed
            .iter()
            .all(|t| t["DockerName"] != "" && t["DockerID"] != "")
    });
    assert!(shown, "inspect data missing: {listed:?}");
    for task in &listed {
        let id = text(&task["id"]);
        let name = text(&task["DockerName"]);
        let run = runs
            .iter()
            .find(|argv| crate::harness::run_container_name(argv).as_deref() == Some(&name))
            .unwrap_or_else(|| panic!("{id}: no docker run named {name} in {runs:?}"));
        assert_eq!(parse_run(run), expected(&id), "{id}: {run:?}");
        let inspect = cluster.docker_inspect(&name);
        assert_eq!(task["DockerID"], inspect["Id"], "{id}: {inspect}");
        assert_eq!(
            task["ProcessID"].as_u64(),
            inspect["State"]["Pid"].as_u64(),
            "{id}: {inspect}"
        );
        assert!(task["ProcessID"].as_u64().unwrap_or(0) > 0, "{task}");
        assert_eq!(
            master_state(&cluster, &text(&task["InternalID"])),
            "TASK_RUNNING"
        );
    }

    // Reshuffle: stress60 (the one reshuffleable task) is killed and replaced.
    let old_stress = internal_id(&scheduler, "stress60");
    let (status, body) = scheduler.call("GET", "/client/task/reshuffle", None);
    assert_eq!(status, 202, "{body}");
    let moved = wait_until(DEADLINE, || {
        let new = internal_id(&scheduler, "stress60");
        master_state(&cluster, &old_stress) == "TASK_KILLED"
            && !new.is_empty()
            && new != old_stress
            && master_state(&cluster, &new) == "TASK_RUNNING"
    });
    assert!(moved, "reshuffle: master {:?}", cluster.task_states());
    scheduler.wait_summary(
        &[
            ("cadvisor", "TASK_RUNNING"),
            ("influxdb", "TASK_RUNNING"),
            ("stress60", "TASK_RUNNING"),
        ],
        &cluster,
    );
    let new_stress = internal_id(&scheduler, "stress60");

    // Kill by prefix: the master ends it TASK_KILLED and the list drops it.
    let (status, body) = scheduler.call("DELETE", "/client/task/stress", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains(&new_stress), "{body}");
    let killed = wait_until(DEADLINE, || {
        master_state(&cluster, &new_stress) == "TASK_KILLED"
    });
    assert!(killed, "kill: master {:?}", cluster.task_states());
    scheduler.wait_summary(
        &[("cadvisor", "TASK_RUNNING"), ("influxdb", "TASK_RUNNING")],
        &cluster,
    );

    let ledger = Ledger::once_acknowledged(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (4, 4), "{ledger:?}");
    assert_eq!(
        cluster.live_task_ids(),
        scheduler.live_task_ids(),
        "the master runs what the scheduler lists"
    );
    let killed_on_master: Vec<(String, String)> = cluster
        .task_states()
        .into_iter()
        .filter(|(_, state)| state == "TASK_KILLED")
        .collect();
    assert_eq!(
        killed_on_master.len(),
        2,
        "only the two stress60 tasks were killed: {killed_on_master:?}"
    );
    report(
        TEST,
        &format!("{}; faults injected 0; lost 0", ledger.line()),
    );
}

/// A privileged task (the lab's pcp-all): the real agent's `docker run`
/// carries `--privileged`; one that does not ask runs without it.
#[test]
fn privileged_reaches_docker_run() {
    const TEST: &str = "privileged";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("privileged");
    let cluster = Cluster::start(&dir, crate::PORT_PRIVILEGED, ClusterOptions::default());
    let scheduler = Scheduler::start(
        &cluster.address(),
        &tmp.path("state"),
        &tmp.path("scheduler.log"),
    );
    scheduler.submit(
        r#"{"id":"pcp-all","dockerimage":"pcp-all","mem":"32","sla":"one-per-node",
            "privileged":true,"volumes":[{"host_path":"/sys","container_path":"/sys","mode":"ro"}]}"#,
    );
    scheduler.submit(STRESS60);
    scheduler.wait_summary(
        &[("pcp-all", "TASK_RUNNING"), ("stress60", "TASK_RUNNING")],
        &cluster,
    );
    let mut listed = Vec::new();
    let shown = wait_until(DEADLINE, || {
        listed = scheduler.tasks();
        listed.iter().all(|t| t["DockerName"] != "")
    });
    assert!(shown, "inspect data missing: {listed:?}");
    let runs = cluster.docker_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for task in &listed {
        let name = text(&task["DockerName"]);
        let run = runs
            .iter()
            .find(|argv| crate::harness::run_container_name(argv).as_deref() == Some(&name))
            .unwrap_or_else(|| panic!("no docker run named {name} in {runs:?}"));
        // Only the options (up to `--name <name>`, after which come the
        // image and its arguments, which could spell it too).
        let end = run
            .iter()
            .position(|w| w == "--name")
            .map_or(run.len(), |i| (i + 2).min(run.len()));
        let options = &run[..end];
        let privileged = options.iter().any(|word| word == "--privileged");
        assert_eq!(
            (text(&task["id"]), privileged),
            (text(&task["id"]), task["id"] == "pcp-all"),
            "{run:?}"
        );
        assert_eq!(task["privileged"], task["id"] == "pcp-all", "{task}");
    }
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    report(
        TEST,
        &format!("{}; faults injected 0; lost 0", ledger.line()),
    );
}
