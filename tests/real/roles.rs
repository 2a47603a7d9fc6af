//! Roles on a real master: a framework with `--role lab` on an agent whose
//! resources are mostly reserved for `lab` (static reservations). Placement
//! must use the reserved resources, and the TaskInfo must carry the
//! reservation it was offered with, or the master answers TASK_ERROR.

use crate::harness::{
    realmesos, report, text, Cluster, ClusterOptions, Ledger, Scheduler, TempDir, STRESS60,
};

#[test]
fn a_task_launches_on_resources_reserved_for_our_role() {
    const TEST: &str = "reserved_role";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("reserved");
    let cluster = Cluster::start(
        &dir,
        crate::PORT_RESERVED,
        ClusterOptions {
            // Unreserved, too little for stress60 (100 MB); reserved for lab, enough.
            resources: Some(
                "cpus:0.5;mem:64;disk:1000;cpus(lab):2;mem(lab):1024;ports:[31000-32000]",
            ),
            ..ClusterOptions::default()
        },
    );
    let scheduler = Scheduler::start_with(
        &cluster.address(),
        &tmp.path("state"),
        &tmp.path("s.log"),
        &["--role", "lab"],
    );
    scheduler.submit(STRESS60);
    scheduler.wait_summary(&[("stress60", "TASK_RUNNING")], &cluster);
    let task = cluster
        .tasks()
        .into_iter()
        .find(|t| text(&t["id"]).starts_with("stress60-"))
        .unwrap_or_default();
    assert_eq!(task["state"], "TASK_RUNNING", "{task}");
    assert_eq!(task["role"], "lab", "{task}");
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (1, 1), "{ledger:?}");
    report(
        TEST,
        &format!("{}; faults injected 0; lost 0", ledger.line()),
    );
}
