//! End to end: the real scheduler (`charmander::start`) against `mesos-sim`,
//! driven over real HTTP exactly as the reference API document shows.

use serde_json::{json, Value};

use crate::support::{
    http_agent, request, scheduler_config, wait_until, Lab, CADVISOR, DEADLINE, INFLUXDB, STRESS60,
};
use charmander::sim::AgentSpec;

fn hosts(tasks: &[Value]) -> Vec<String> {
    let mut hosts: Vec<String> = tasks
        .iter()
        .map(|task| task["hostname"].as_str().unwrap_or("").to_string())
        .collect();
    hosts.sort();
    hosts
}

#[test]
fn ping_answers_pong() {
    let lab = Lab::start();
    let mut response = lab.http.get(&lab.api("/admin/ping")).call().expect("ping");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.body_mut().read_to_string().expect("body").trim(),
        "Pong"
    );
}

#[test]
fn reference_examples_are_placed_as_required() {
    let lab = Lab::start();
    for (body, id) in [
        (CADVISOR, "cadvisor"),
        (INFLUXDB, "influxdb"),
        (STRESS60, "stress60"),
    ] {
        let (status, reply) = lab.post("/client/task", body);
        assert_eq!(
            (status, reply),
            (
                202,
                json!({"code": 202, "message": format!("Run task: {id}")})
            )
        );
    }
    // cadvisor: one copy on each of the three nodes, each pinned by nodename.
    let cadvisor = lab.wait_running("cadvisor", 3);
    assert_eq!(hosts(&cadvisor), ["slave1", "slave2", "slave3"]);
    for task in &cadvisor {
        assert_eq!(task["nodename"], task["hostname"]);
        assert_eq!(
            task["ports"],
            json!([{"container_port": "8080", "host_port": "31500"}])
        );
        assert_eq!(task["mem"], "50");
        assert!(task["InternalID"]
            .as_str()
            .unwrap_or("")
            .starts_with("cadvisor-"));
    }
    // influxdb: a singleton on the analytics node with its ports.
    let influxdb = lab.wait_running("influxdb", 1);
    assert_eq!(hosts(&influxdb), ["slave1"]);
    assert_eq!(influxdb[0]["cpus"], "1");
    // stress60: on a lab node.
    let stress = lab.wait_running("stress60", 1);
    assert!(
        ["slave2", "slave3"].contains(&stress[0]["hostname"].as_str().unwrap_or("")),
        "{stress:?}"
    );
    // RUNNING filled the docker fields from the docker-inspect data.
    for task in cadvisor.iter().chain(&influxdb).chain(&stress) {
        assert_eq!(task["Running"], true);
        assert_eq!(task["RequestSent"], true);
        assert!(
            !task["DockerID"].as_str().unwrap_or("").is_empty(),
            "{task}"
        );
        assert!(
            task["DockerName"]
                .as_str()
                .is_some_and(|name| name.starts_with("mesos-")),
            "{task}"
        );
        assert!(task["ProcessID"].as_u64().unwrap_or(0) > 0, "{task}");
        assert!(!task["SlaveID"].as_str().unwrap_or("").is_empty(), "{task}");
    }
    // The master sees the same five tasks running, and every update was acknowledged.
    let sim_tasks = lab.sim_state()["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        sim_tasks
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING")
            .count(),
        5,
        "{sim_tasks:?}"
    );
    assert!(
        wait_until(DEADLINE, || lab.sim_state()["unacknowledged"]
            .as_object()
            .is_none_or(|it| it.values().all(|n| n == 0))),
        "updates stay unacknowledged: {}",
        lab.sim_state()
    );
    // A duplicate singleton submit is accepted but starts nothing.
    assert_eq!(lab.post("/client/task", INFLUXDB).0, 202);
    assert_eq!(lab.tasks_named("influxdb").len(), 1);
}

#[test]
fn kill_by_prefix_kills_every_match_and_404s_on_none() {
    let lab = Lab::start();
    lab.post("/client/task", STRESS60);
    lab.post("/client/task", STRESS60);
    let running = lab.wait_running("stress60", 2);
    let (status, reply) = lab.delete("/client/task/stress");
    assert_eq!(status, 200, "{reply}");
    let message = reply["message"].as_str().unwrap_or("");
    for task in &running {
        assert!(
            message.contains(task["InternalID"].as_str().unwrap_or("?")),
            "{message}"
        );
    }
    assert!(message.starts_with("Kill task: "), "{message}");
    assert!(
        wait_until(DEADLINE, || lab.tasks_named("stress60").is_empty()),
        "killed tasks stay listed"
    );
    let killed = lab.sim_state()["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        killed.iter().all(|task| task["state"] != "TASK_RUNNING"),
        "{killed:?}"
    );
    let (status, reply) = lab.delete("/client/task/stress");
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["code"], 404);
}

#[test]
fn pending_tasks_are_dropped_by_kill_at_once() {
    let lab = Lab::start();
    lab.post(
        "/client/task",
        r#"{"id":"huge","dockerimage":"x","mem":"999999"}"#,
    );
    assert_eq!(lab.tasks_named("huge")[0]["state"], "pending");
    let (status, reply) = lab.delete("/client/task/huge");
    assert_eq!(status, 200, "{reply}");
    assert!(lab.tasks_named("huge").is_empty());
}

#[test]
fn reshuffle_restarts_reshuffleable_tasks_singletons_included() {
    let lab = Lab::start();
    lab.post("/client/task", STRESS60);
    lab.post("/client/task", r#"{"id":"solo","dockerimage":"lookbusy","mem":"100","sla":"singleton","reshuffleable":true,"nodetype":"lab"}"#);
    lab.post("/client/task", INFLUXDB);
    let before: Vec<Value> = lab
        .wait_running("stress60", 1)
        .into_iter()
        .chain(lab.wait_running("solo", 1))
        .collect();
    lab.wait_running("influxdb", 1);
    let (status, reply) = lab.get("/client/task/reshuffle");
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        (&reply["code"], &reply["message"]),
        (&json!(202), &json!("Reshuffle tasks"))
    );
    for old in &before {
        let id = old["id"].as_str().unwrap_or("");
        let old_internal = old["InternalID"].clone();
        let replaced = wait_until(DEADLINE, || {
            let now = lab.tasks_named(id);
            now.len() == 1
                && now[0]["InternalID"] != old_internal
                && now[0]["state"] == "TASK_RUNNING"
        });
        assert!(replaced, "{id} was not replaced: {:?}", lab.tasks_named(id));
    }
    // Not reshuffleable: untouched.
    assert_eq!(lab.tasks_named("influxdb").len(), 1);
}

#[test]
fn a_node_joining_later_gets_its_one_per_node_copy() {
    let lab = Lab::start();
    lab.post("/client/task", CADVISOR);
    lab.wait_running("cadvisor", 3);
    let slave4 = json!({"hostname": "slave4", "cpus": 2.0, "mem_mb": 1024.0, "ports": [[31000, 32000]], "attributes": [["nodetype", "lab"], ["nodename", "slave4"]]});
    let (status, reply) = lab.sim_post("/sim/agents", &slave4.to_string());
    assert!(status < 300, "adding an agent: {status} {reply}");
    let cadvisor = lab.wait_running("cadvisor", 4);
    assert_eq!(hosts(&cadvisor), ["slave1", "slave2", "slave3", "slave4"]);
}

#[test]
fn one_per_node_before_any_node_is_known_is_not_lost() {
    let lab = Lab::with_agents(Vec::new());
    lab.post("/client/task", CADVISOR);
    for agent in charmander::sim::charmander_lab() {
        lab.sim_post("/sim/agents", &agent_json(&agent).to_string());
    }
    assert_eq!(
        hosts(&lab.wait_running("cadvisor", 3)),
        ["slave1", "slave2", "slave3"]
    );
}

#[test]
fn two_tasks_wanting_one_host_port_on_one_node_do_not_collide() {
    let lab = Lab::start();
    let task = |id: &str| {
        format!(
            r#"{{"id":"{id}","dockerimage":"web","mem":"10","nodename":"slave2","ports":[{{"host_port":"31500","container_port":"80"}}]}}"#
        )
    };
    lab.post("/client/task", &task("web-a"));
    lab.wait_running("web-a", 1);
    lab.post("/client/task", &task("web-b"));
    let mut reason = String::new();
    let explained = wait_until(DEADLINE, || {
        let task = lab.tasks_named("web-b");
        reason = task
            .first()
            .and_then(|it| it["pending_reason"].as_str())
            .unwrap_or("")
            .to_string();
        reason.contains("31500")
    });
    assert!(explained, "pending reason: {reason:?}");
    assert_eq!(lab.tasks_named("web-b")[0]["state"], "pending");
    // Once the first one is gone, the second one gets the port.
    lab.delete("/client/task/web-a");
    lab.wait_running("web-b", 1);
}

#[test]
fn several_tasks_are_packed_into_one_offer() {
    let lab = Lab::with_agents(Vec::new());
    for n in 0..3 {
        lab.post(
            "/client/task",
            &format!(r#"{{"id":"pack{n}","dockerimage":"x","mem":"10","nodetype":"lab"}}"#),
        );
    }
    let slave2 = charmander::sim::charmander_lab()
        .into_iter()
        .find(|agent| agent.hostname == "slave2")
        .expect("lab has slave2");
    lab.sim_post("/sim/agents", &agent_json(&slave2).to_string());
    for n in 0..3 {
        lab.wait_running(&format!("pack{n}"), 1);
    }
    assert_eq!(
        lab.calls("ACCEPT"),
        1,
        "three tasks, one offer, one ACCEPT: {}",
        lab.sim_state()["calls"]
    );
}

#[test]
fn pending_tasks_say_why() {
    let lab = Lab::start();
    lab.post(
        "/client/task",
        r#"{"id":"nowhere","dockerimage":"x","mem":"10","nodetype":"gpu"}"#,
    );
    lab.post(
        "/client/task",
        r#"{"id":"toobig","dockerimage":"x","mem":"100000"}"#,
    );
    let reason = |id: &str| {
        lab.tasks_named(id)
            .first()
            .and_then(|it| it["pending_reason"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert!(
        wait_until(DEADLINE, || {
            reason("nowhere")
                == "no known node has nodetype=gpu (slave1 has nodetype=analytics, \
                slave2 has nodetype=lab, slave3 has nodetype=lab)"
        }),
        "{}",
        reason("nowhere")
    );
    assert!(
        wait_until(DEADLINE, || reason("toobig")
            .starts_with("needs mem 100000, slave1 offered ")),
        "{}",
        reason("toobig")
    );
}

#[test]
fn the_node_registry_lists_the_lab() {
    let lab = Lab::start();
    assert!(wait_until(DEADLINE, || lab
        .get("/client/node")
        .1
        .as_array()
        .is_some_and(|nodes| nodes.len() == 3)));
    let (_, nodes) = lab.get("/client/node");
    let mut seen: Vec<(String, String)> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            (
                node["hostname"].as_str().unwrap_or("").to_string(),
                node["nodetype"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("slave1".into(), "analytics".into()),
            ("slave2".into(), "lab".into()),
            ("slave3".into(), "lab".into())
        ]
    );
}

#[test]
fn every_400_path_reaches_the_user_through_the_real_server() {
    let lab = Lab::start();
    let task = |extra: &str| format!(r#"{{"id":"x","dockerimage":"y","mem":"10",{extra}}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"dockerimage":"x","mem":"10"}"#.into(),
            r#"missing field "id""#,
        ),
        (
            r#"{"id":"","dockerimage":"x","mem":"10"}"#.into(),
            r#"field "id" must not be empty"#,
        ),
        (
            r#"{"id":"a/b","dockerimage":"x","mem":"10"}"#.into(),
            r#"bad id "a/b""#,
        ),
        (
            r#"{"id":"x","mem":"10"}"#.into(),
            r#"missing field "dockerimage""#,
        ),
        (
            r#"{"id":"x","dockerimage":"y"}"#.into(),
            r#"missing field "mem""#,
        ),
        (
            r#"{"id":"x","dockerimage":"y","mem":"lots"}"#.into(),
            r#"bad value "lots" for "mem""#,
        ),
        (
            r#"{"id":"x","dockerimage":"y","mem":"0"}"#.into(),
            r#"bad value "0" for "mem""#,
        ),
        (
            task(r#""sla":"twice""#),
            r#"bad sla "twice": use one-per-node or singleton"#,
        ),
        (
            task(r#""networkmode":"overlay""#),
            r#"bad networkmode "overlay": use bridge, host or none"#,
        ),
        (
            task(r#""volumes":[{"host_path":"/","container_path":"/r","mode":"rx"}]"#),
            r#"bad volume mode "rx" in volumes[0]: use ro or rw"#,
        ),
        (task(r#""cpus":"many""#), r#"bad value "many" for "cpus""#),
        // See: issue 9, B12. Less than Mesos' three decimals launched as 0
        // cpus; absurd sizes were accepted and waited for ever.
        (
            task(r#""cpus":"0.0001""#),
            r#"bad value "0.0001" for "cpus": expected a number of cpus from 0.001 to 1000000"#,
        ),
        (
            task(r#""cpus":"1e308""#),
            r#"bad value "1e308" for "cpus": expected a number of cpus from 0.001 to 1000000"#,
        ),
        (
            r#"{"id":"x","dockerimage":"y","mem":18446744073709551615}"#.into(),
            "bad value 18446744073709551615 for \"mem\": expected a whole number of MB from 1 to 16777216",
        ),
        (
            task(r#""ports":[{"host_port":"70000","container_port":"80"}]"#),
            "port 70000 outside 1-65535 in ports[0]",
        ),
        (
            task(r#""ports":[{"host_port":"0","container_port":"80"}]"#),
            "port 0 outside 1-65535 in ports[0]",
        ),
        (
            task(r#""restart":"sometimes""#),
            r#"bad restart "sometimes""#,
        ),
        ("[1]".into(), "body must be a JSON object"),
        ("".into(), "empty body"),
        (r#"{"id":"#.into(), "invalid JSON"),
    ];
    for (body, expected) in &cases {
        let (status, reply) = lab.post("/client/task", body);
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!(400)),
            "{body}: {reply}"
        );
        let message = reply["message"].as_str().unwrap_or("");
        assert!(
            message.contains(expected),
            "{body}: {message:?} should say {expected:?}"
        );
    }
    assert!(lab.tasks().is_empty(), "nothing refused was accepted");
}

pub fn agent_json(agent: &AgentSpec) -> Value {
    json!({"hostname": agent.hostname, "cpus": agent.cpus, "mem_mb": agent.mem_mb, "ports": agent.ports, "attributes": agent.attributes})
}

#[test]
fn reshuffle_applies_intelligence_and_moves_a_task_to_its_pinned_node() {
    let lab = Lab::start();
    lab.post("/client/task", r#"{"id":"sim","dockerimage":"lookbusy","mem":"100","sla":"singleton","reshuffleable":true,"nodetype":"lab","nodename":"slave2"}"#);
    let old = lab.wait_running("sim", 1)[0].clone();
    assert_eq!(old["hostname"], "slave2");
    // What the analytics learned: peak 209924096 bytes, and it belongs on slave3.
    assert_eq!(lab.put("/client/intelligence/sim/mem", "209924096").0, 200);
    assert_eq!(
        lab.put("/client/intelligence/sim/nodename", r#""slave3""#)
            .0,
        200
    );
    assert_eq!(
        lab.put("/client/intelligence/sim/mem", "2.1E8").0,
        400,
        "not a whole number of bytes"
    );

    let (status, plan) = lab.get("/client/task/reshuffle?dry_run=true");
    assert_eq!(status, 202);
    assert_eq!(plan["plan"][0]["from"], "slave2");
    assert_eq!(plan["plan"][0]["to"], "slave3");
    assert_eq!(
        plan["plan"][0]["changes"],
        json!({"mem": "230", "nodename": "slave3"})
    );
    assert_eq!(
        lab.tasks_named("sim")[0]["InternalID"],
        old["InternalID"],
        "a dry run changes nothing"
    );

    let (status, reply) = lab.get("/client/task/reshuffle");
    assert_eq!(
        (status, &reply["message"]),
        (202, &json!("Reshuffle tasks"))
    );
    let moved = wait_until(DEADLINE, || {
        let now = lab.tasks_named("sim");
        now.len() == 1
            && now[0]["InternalID"] != old["InternalID"]
            && now[0]["state"] == "TASK_RUNNING"
    });
    assert!(moved, "{:?}", lab.tasks_named("sim"));
    let new = lab.tasks_named("sim")[0].clone();
    assert_eq!(
        (&new["hostname"], &new["mem"]),
        (&json!("slave3"), &json!("230"))
    );
    assert_eq!(
        (&new["requested"]["mem"], &new["intelligence"]["mem"]),
        (&json!("100"), &json!("230"))
    );
    // The singleton was never doubled on the master.
    let on_master = lab.sim_state()["tasks"].as_array().map_or(0, |t| {
        t.iter().filter(|t| t["state"] == "TASK_RUNNING").count()
    });
    assert_eq!(on_master, 1);
}

// See: issue 9, B11. Internal ids drop spaces, so `DELETE /client/task/a%20b`
// found nothing, and `ab` could not tell the two tasks apart by user id.
#[test]
fn a_task_with_spaces_is_killed_by_its_user_id_or_its_internal_id() {
    let lab = Lab::start();
    for id in ["a b", "ab", "c d"] {
        let body = json!({"id": id, "dockerimage": "stress", "mem": "10"}).to_string();
        assert_eq!(lab.post("/client/task", &body).0, 202);
    }
    lab.wait_running("a b", 1);
    lab.wait_running("ab", 1);
    let c_d = lab.wait_running("c d", 1);

    let (status, reply) = lab.delete("/client/task/a%20b");
    assert_eq!(status, 200, "{reply}");
    let killed: Vec<&str> = reply["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|task| task["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(killed, ["a b"], "{reply}");
    assert!(wait_until(DEADLINE, || lab.tasks_named("a b").is_empty()));
    assert_eq!(lab.tasks_named("ab").len(), 1);

    // The exact internal id works too, whatever the user id looked like.
    let internal = c_d[0]["InternalID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(internal.starts_with("cd-"), "{internal}");
    let (status, reply) = lab.delete(&format!("/client/task/{internal}"));
    assert_eq!(status, 200, "{reply}");
    assert!(wait_until(DEADLINE, || lab.tasks_named("c d").is_empty()));
    assert_eq!(lab.tasks_named("ab").len(), 1);
}

/// The lab's `vector/pcp/pcp-all.json` (contract §6, written here from the
/// contract's table): one-per-node, privileged, the `/var/log` volume twice,
/// and a stray `}` after the object that the original's decoder ignored.
const PCP_ALL: &str = r#"{
    "id": "pcp-all", "dockerimage": "pcp-all", "mem": "128", "sla": "one-per-node",
    "notmetered": true, "privileged": true,
    "volumes": [
        {"host_path": "/var/log", "container_path": "/var/log", "mode": "rw"},
        {"host_path": "/var/log", "container_path": "/var/log", "mode": "rw"},
        {"host_path": "/sys", "container_path": "/sys", "mode": "ro"},
        {"host_path": "/etc/localtime", "container_path": "/etc/localtime", "mode": "ro"},
        {"host_path": "/var/lib/docker", "container_path": "/var/lib/docker", "mode": "ro"},
        {"host_path": "/run", "container_path": "/run", "mode": "rw"}
    ]
}
}"#;

#[test]
fn privileged_is_listed_and_sent_to_mesos() {
    let lab = Lab::start();
    let (status, _) = lab.post("/client/task", PCP_ALL);
    assert_eq!(status, 202);
    let copies = lab.wait_running("pcp-all", 3);
    for task in &copies {
        assert_eq!(task["privileged"], true, "{task}");
        assert_eq!(
            task["TaskInfo"]["container"]["docker"]["privileged"], true,
            "{task}"
        );
    }
    // The master got DockerInfo.privileged in every launch.
    let state = lab.sim_state();
    let launched: Vec<&Value> = state["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["id"].as_str().unwrap_or("").starts_with("pcp-all-"))
        .collect();
    assert_eq!(launched.len(), 3, "{state}");
    assert!(
        launched.iter().all(|task| task["privileged"] == true),
        "{state}"
    );
    // A task that does not ask is not privileged.
    let (status, _) = lab.post("/client/task", STRESS60);
    assert_eq!(status, 202);
    let stress = lab.wait_running("stress60", 1);
    assert_eq!(stress[0]["privileged"], false);
    let state = lab.sim_state();
    assert!(
        state["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter(|task| task["id"].as_str().unwrap_or("").starts_with("stress60-"))
            .all(|task| task["privileged"] == false),
        "{state}"
    );
}

/// Issue 11, item 4: a task that ends stays listed with why, `?state=active`
/// hides it, and a kill does not match it.
#[test]
fn ended_tasks_stay_listed_with_state_reason_and_end_time() {
    let lab = Lab::start();
    // The same host port twice: the master refuses the launch (TASK_ERROR).
    let (status, _) = lab.post(
        "/client/task",
        r#"{"id":"twice","dockerimage":"nginx","mem":"10","nodetype":"lab",
            "ports":[{"host_port":31600,"container_port":80},{"host_port":31600,"container_port":81}]}"#,
    );
    assert_eq!(status, 202);
    let mut twice = Value::Null;
    let ended = wait_until(DEADLINE, || {
        twice = lab
            .all_tasks()
            .into_iter()
            .find(|task| task["id"] == "twice")
            .unwrap_or_default();
        twice["ended_at"].is_u64()
    });
    assert!(ended, "{twice}");
    assert_eq!(twice["state"], "TASK_ERROR", "{twice}");
    assert_eq!(twice["reason"], "REASON_TASK_INVALID", "{twice}");
    assert!(
        !twice["status_message"].as_str().unwrap_or("").is_empty(),
        "{twice}"
    );
    assert_eq!(twice["Running"], false);
    assert!(
        lab.tasks_named("twice").is_empty(),
        "?state=active hides it"
    );
    let (status, _) = lab.delete("/client/task/twice");
    assert_eq!(status, 404, "an ended task is history, not killed again");

    // A killed task stays listed as TASK_KILLED.
    let (status, _) = lab.post("/client/task", STRESS60);
    assert_eq!(status, 202);
    let stress = lab.wait_running("stress60", 1);
    let (status, reply) = lab.delete("/client/task/stress60");
    assert_eq!(status, 200, "{reply}");
    let killed = wait_until(DEADLINE, || {
        lab.tasks_named("stress60").is_empty()
            && lab.all_tasks().iter().any(|task| {
                task["InternalID"] == stress[0]["InternalID"] && task["state"] == "TASK_KILLED"
            })
    });
    assert!(killed, "{:?}", lab.all_tasks());
    let (status, _) = lab.delete("/client/task/stress60");
    assert_eq!(status, 404);
}

/// Issue 11, item 4: a one-per-node service with no matching node is
/// listed with why; a duplicate submit says where the copies run.
#[test]
fn a_service_without_copies_is_visible_and_a_duplicate_says_where_it_runs() {
    let lab = Lab::start();
    let traffic = CADVISOR
        .replace("\"cadvisor\"", "\"traffic\"")
        .replace("\"sla\"", "\"nodetype\": \"traffic\", \"sla\"");
    assert_eq!(lab.post("/client/task", &traffic).0, 202);
    assert_eq!(lab.post("/client/task", CADVISOR).0, 202);
    lab.wait_running("cadvisor", 3);
    let mut listed = Vec::new();
    let explained = wait_until(DEADLINE, || {
        listed = lab.tasks_named("traffic");
        listed.len() == 1
            && listed[0]["pending_reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("nodetype=traffic"))
    });
    assert!(explained, "{listed:?}");
    assert_eq!(listed[0]["state"], "pending");
    assert_eq!(listed[0]["sla"], "one-per-node");

    let (status, reply) = lab.post("/client/task", CADVISOR);
    assert_eq!(
        (status, reply),
        (
            202,
            json!({"code": 202, "message": "Run task: cadvisor",
                   "note": "already running on slave1, slave2, slave3"})
        )
    );
    let (status, reply) = lab.delete("/client/task/traffic");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Kill task: traffic", "{reply}");
    assert!(lab.tasks_named("traffic").is_empty());
}

/// Issue 11, item 3: a host port outside every offered range is named with
/// the node, by hostname, and two samples of the same state agree.
#[test]
fn a_pending_reason_is_true_and_the_same_twice() {
    let lab = Lab::start();
    let (status, _) = lab.post(
        "/client/task",
        r#"{"id":"web","dockerimage":"nginx","mem":"64","nodetype":"lab",
            "ports":[{"host_port":8080,"container_port":80}]}"#,
    );
    assert_eq!(status, 202);
    let reason = |lab: &Lab| {
        lab.tasks_named("web")
            .first()
            .map(|task| task["pending_reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let mut first = String::new();
    let explained = wait_until(DEADLINE, || {
        first = reason(&lab);
        first.starts_with("port 8080 outside the ports slave")
            && first.ends_with(" offers (31000-32000)")
    });
    assert!(explained, "{first}");
    // Offers keep coming from every node meanwhile; the reason stays.
    let offers_before = lab.calls("DECLINE");
    assert!(wait_until(DEADLINE, || lab.calls("DECLINE") > offers_before + 2));
    assert_eq!(reason(&lab), first);
    assert_eq!(reason(&lab), first);
}

/// Issue 11, item 3: without a master a pending task says so, with the time.
#[test]
fn a_pending_task_says_the_master_is_not_connected() {
    // Nothing listens on port 1: every subscribe fails at once.
    let scheduler = charmander::start(scheduler_config("127.0.0.1:1")).expect("starts");
    let http = http_agent();
    let api = |path: &str| format!("http://{}{path}", scheduler.api_addr());
    let (status, reply) = request(&http, "POST", &api("/client/task"), Some(STRESS60));
    assert_eq!(status, 202, "{reply}");
    let (status, tasks) = request(&http, "GET", &api("/client/task"), None);
    assert_eq!(status, 200);
    let reason = tasks[0]["pending_reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("not connected to the Mesos master since 20") && reason.ends_with('Z'),
        "{tasks}"
    );
    scheduler.shutdown();
}
