//! Issue 10, item 4: `GET /client/task` filters (`?state=`, `?prefix=`,
//! `?limit=`) over real HTTP, and 400 for values that mean nothing.

use serde_json::Value;

use crate::support::{wait_until, Lab, DEADLINE, STRESS60};

/// The `id` of each listed task, in list order.
fn ids(lab: &Lab, query: &str) -> Vec<String> {
    let (status, tasks) = lab.get(&format!("/client/task{query}"));
    assert_eq!(status, 200, "{query}: {tasks}");
    tasks
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|task| task["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_task_list_filters_by_state_prefix_and_limit() {
    let lab = Lab::start();
    // Running, waiting for ever (no node has that much memory), and ended
    // (the same host port twice: the master refuses it, TASK_ERROR).
    let huge = r#"{"id":"huge task","dockerimage":"nginx","mem":"9000000"}"#;
    let twice = r#"{"id":"twice","dockerimage":"nginx","mem":"10","nodetype":"lab",
        "ports":[{"host_port":31600,"container_port":80},{"host_port":31600,"container_port":81}]}"#;
    for body in [STRESS60, huge, twice] {
        let (status, reply) = lab.post("/client/task", body);
        assert_eq!(status, 202, "{reply}");
    }
    lab.wait_running("stress60", 1);
    let ended = wait_until(DEADLINE, || ids(&lab, "?state=TASK_ERROR") == ["twice"]);
    assert!(ended, "{:?}", lab.all_tasks());

    assert_eq!(ids(&lab, ""), ["huge task", "stress60", "twice"]);
    assert_eq!(ids(&lab, "?state=active"), ["huge task", "stress60"]);
    assert_eq!(ids(&lab, "?state=pending"), ["huge task"]);
    assert_eq!(ids(&lab, "?state=launching"), Vec::<String>::new());
    assert_eq!(ids(&lab, "?state=running"), ["stress60"]);
    assert_eq!(ids(&lab, "?state=TASK_RUNNING"), ["stress60"]);
    assert_eq!(ids(&lab, "?prefix=stress"), ["stress60"]);
    assert_eq!(ids(&lab, "?prefix=tw"), ["twice"]);
    assert_eq!(ids(&lab, "?prefix=tw&state=active"), Vec::<String>::new());
    // Internal ids drop spaces; a prefix with one matches the user id.
    assert_eq!(ids(&lab, "?prefix=hugetask"), ["huge task"]);
    assert_eq!(ids(&lab, "?prefix=huge%20t"), ["huge task"]);
    assert_eq!(ids(&lab, "?limit=2"), ["huge task", "stress60"]);
    assert_eq!(ids(&lab, "?limit=1&state=running"), ["stress60"]);
    assert_eq!(ids(&lab, "?limit=100&prefix=s&pretty"), ["stress60"]);

    for (query, says) in [
        ("?state=finished", "bad state \"finished\""),
        ("?state=", "bad state \"\""),
        ("?limit=0", "bad limit \"0\""),
        ("?limit=many", "bad limit \"many\""),
        ("?prefix=", "empty prefix"),
        ("?prefix=%G1", "bad percent-encoding in prefix"),
    ] {
        let (status, reply) = lab.get(&format!("/client/task{query}"));
        assert_eq!(status, 400, "{query}: {reply}");
        let message = reply["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{query}: {reply}");
        assert_eq!(reply["code"], Value::from(400), "{query}: {reply}");
    }
}
