//! Restart policies end to end: a failed task and the tasks of a removed
//! agent follow their policy; a singleton comes back elsewhere; a
//! one-per-node copy comes back when its node does.

use serde_json::{json, Value};

use crate::support::{wait_until, Lab, DEADLINE};

fn hosts(tasks: &[Value]) -> Vec<String> {
    let mut hosts: Vec<String> = tasks
        .iter()
        .map(|t| t["hostname"].as_str().unwrap_or("").to_string())
        .collect();
    hosts.sort();
    hosts
}

#[test]
fn failed_and_lost_tasks_follow_their_restart_policy() {
    let lab = Lab::start();
    let db = r#"{"id":"db","dockerimage":"postgres","mem":"64","sla":"singleton","nodetype":"lab","restart":"on-failure"}"#;
    let mon = r#"{"id":"mon","dockerimage":"cadvisor","mem":"16","sla":"one-per-node","restart":"always"}"#;
    let once = r#"{"id":"once","dockerimage":"x","mem":"8","nodename":"slave1"}"#;
    for body in [db, mon, once] {
        assert_eq!(lab.post("/client/task", body).0, 202);
    }
    let first = lab.wait_running("db", 1)[0].clone();
    assert_eq!(first["restart"], "on-failure");
    lab.wait_running("mon", 3);
    lab.wait_running("once", 1);

    // A failed container: on-failure runs it again (a new Mesos task id); never does not.
    let internal = first["InternalID"].as_str().unwrap_or("").to_string();
    assert_eq!(
        lab.sim_post(&format!("/sim/tasks/{internal}/fail"), "").0,
        200
    );
    let once_id = lab.tasks_named("once")[0]["InternalID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        lab.sim_post(&format!("/sim/tasks/{once_id}/fail"), "").0,
        200
    );
    let restarted = wait_until(DEADLINE, || {
        let db = lab.tasks_named("db");
        db.len() == 1
            && db[0]["InternalID"] != first["InternalID"]
            && db[0]["state"] == "TASK_RUNNING"
    });
    assert!(restarted, "{:?}", lab.tasks_named("db"));
    assert_eq!(lab.tasks_named("db")[0]["restarts"], 1);
    assert!(
        wait_until(DEADLINE, || lab.tasks_named("once").is_empty()),
        "policy never: gone"
    );

    // The singleton's node goes away: it comes back on the other lab node.
    let host = lab.tasks_named("db")[0]["hostname"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(lab.sim_delete(&format!("/sim/agents/{host}")).0, 200);
    let moved = wait_until(DEADLINE, || {
        let db = lab.tasks_named("db");
        db.len() == 1 && db[0]["state"] == "TASK_RUNNING" && db[0]["hostname"] != host.as_str()
    });
    assert!(moved, "{:?}", lab.tasks_named("db"));
    // The one-per-node service keeps a copy on each remaining node only...
    assert!(
        wait_until(DEADLINE, || {
            let mon = lab.tasks_named("mon");
            mon.len() == 2 && mon.iter().all(|t| t["state"] == "TASK_RUNNING")
        }),
        "{:?}",
        lab.tasks_named("mon")
    );
    // ...and the node gets its copy back when it returns.
    let node = json!({"hostname": host, "cpus": 2.0, "mem_mb": 1024.0, "ports": [[31000, 32000]],
        "attributes": [["nodetype", "lab"], ["nodename", host]]});
    assert!(lab.sim_post("/sim/agents", &node.to_string()).0 < 300);
    let back = lab.wait_running("mon", 3);
    assert_eq!(hosts(&back), ["slave1", "slave2", "slave3"]);
}
