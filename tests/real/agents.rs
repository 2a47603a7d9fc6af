//! Two agents on a real master: a one-per-node service covers both, exactly
//! once each. Both agents share one host (and its hostname), their
//! attributes and one fake docker, so the service has no host ports. And an
//! agent without a `nodename` attribute (a plain Mesos agent) is covered too.

use std::collections::BTreeSet;

use crate::harness::{
    realmesos, report, text, Cluster, ClusterOptions, Ledger, Scheduler, TempDir,
};

const PROBE: &str =
    r#"{"id":"probe","dockerimage":"busybox","mem":"16","sla":"one-per-node","nodetype":"lab"}"#;

#[test]
fn one_per_node_covers_two_agents_exactly_once_each() {
    const TEST: &str = "two_agents";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("two-agents");
    let cluster = Cluster::start(
        &dir,
        crate::PORT_TWO_AGENTS,
        ClusterOptions {
            agents: 2,
            // The agents of one realmesos process share their attributes.
            attributes: "nodetype:lab;nodename:lab",
            ..ClusterOptions::default()
        },
    );
    let scheduler = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("s.log"));
    scheduler.submit(PROBE);
    scheduler.wait_summary(
        &[("probe", "TASK_RUNNING"), ("probe", "TASK_RUNNING")],
        &cluster,
    );
    // One offer round later (a plain task launched after it) there is still one copy per agent.
    scheduler.submit(r#"{"id":"later","dockerimage":"busybox","mem":"16"}"#);
    scheduler.wait_summary(
        &[
            ("later", "TASK_RUNNING"),
            ("probe", "TASK_RUNNING"),
            ("probe", "TASK_RUNNING"),
        ],
        &cluster,
    );
    let probes: Vec<serde_json::Value> = cluster
        .tasks()
        .into_iter()
        .filter(|t| text(&t["id"]).starts_with("probe-"))
        .collect();
    let agents: BTreeSet<String> = probes.iter().map(|t| text(&t["slave_id"])).collect();
    assert_eq!(
        (probes.len(), agents.len()),
        (2, 2),
        "one probe on each agent: {probes:?}"
    );
    assert!(probes.iter().all(|t| t["state"] == "TASK_RUNNING"));
    let listed_agents: BTreeSet<String> = scheduler
        .tasks()
        .iter()
        .filter(|t| t["id"] == "probe")
        .map(|t| text(&t["agent_id"]))
        .collect();
    assert_eq!(
        listed_agents, agents,
        "the scheduler places them where the master says"
    );
    let (status, nodes) = scheduler.call("GET", "/client/node", None);
    assert_eq!(status, 200);
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
    let ledger = Ledger::once_acknowledged(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (3, 3), "{ledger:?}");
    report(
        TEST,
        &format!("{}; faults injected 0; lost 0", ledger.line()),
    );
}

#[test]
fn one_per_node_covers_an_agent_without_a_nodename_attribute() {
    const TEST: &str = "no_nodename";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("no-nodename");
    let cluster = Cluster::start(
        &dir,
        crate::PORT_NO_NODENAME,
        ClusterOptions {
            agents: 1,
            attributes: "nodetype:lab",
            ..ClusterOptions::default()
        },
    );
    let scheduler = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("s.log"));
    scheduler.submit(PROBE);
    scheduler.wait_summary(&[("probe", "TASK_RUNNING")], &cluster);
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (1, 1), "{ledger:?}");
    report(
        TEST,
        &format!("{}; faults injected 0; lost 0", ledger.line()),
    );
}

#[test]
fn a_burst_goes_out_in_pipelined_calls_and_each_task_runs_once() {
    // Enough tasks at once that ACCEPTs and ACKNOWLEDGEs go out in
    // pipelined batches (`Caller::post_pipelined`, `post_pipelined_once`):
    // a real master takes each call of a batch exactly once.
    const TEST: &str = "burst";
    const TASKS: usize = 24;
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("burst");
    let cluster = Cluster::start(
        &dir,
        crate::PORT_BURST,
        ClusterOptions {
            agents: 2,
            resources: Some("cpus:8;mem:4096;disk:4096;ports:[31000-32000]"),
            ..ClusterOptions::default()
        },
    );
    let scheduler = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("s.log"));
    for n in 0..TASKS {
        scheduler.submit(&format!(
            r#"{{"id":"burst{n}","dockerimage":"busybox","mem":"16","cpus":"0.1"}}"#
        ));
    }
    let want: Vec<(String, String)> = (0..TASKS)
        .map(|n| (format!("burst{n}"), "TASK_RUNNING".to_string()))
        .collect();
    let want: Vec<(&str, &str)> = want.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    scheduler.wait_summary(&want, &cluster);
    let ledger = Ledger::once_acknowledged(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (TASKS, TASKS), "{ledger:?}");
    assert_eq!(ledger.bad_acknowledgements, 0, "{ledger:?}");
    // How many calls went out pipelined depends on how the updates came:
    // reported, not asserted.
    let pipelined = scheduler.scraped("charmander_mesos_calls_pipelined_total");
    report(
        TEST,
        &format!(
            "{}; calls pipelined {pipelined}; faults injected 0; lost 0",
            ledger.line()
        ),
    );
}
