//! Restarts against a real master: the scheduler process restarts (same
//! framework, nothing relaunched), and the cluster process restarts with
//! agent recovery (same framework, the scheduler's live tasks equal the
//! master's, nothing launched twice, restart policies followed).

use crate::harness::{
    realmesos, report, text, wait_until, Cluster, ClusterOptions, Ledger, Scheduler, TempDir,
    CADVISOR, DEADLINE, STRESS60,
};

/// A singleton that always comes back.
const DB: &str = r#"{"id":"db","dockerimage":"postgres","mem":"64","sla":"singleton","nodetype":"lab","restart":"always"}"#;

/// Waits until the master has exactly one connected framework; returns its id.
#[track_caller]
fn the_framework(cluster: &Cluster) -> String {
    let mut connected = Vec::new();
    let ok = wait_until(DEADLINE, || {
        connected = cluster.connected_frameworks();
        connected.len() == 1
    });
    assert!(ok, "connected frameworks: {connected:?}");
    connected.remove(0)
}

/// Waits until the scheduler's launched, live tasks are the master's.
#[track_caller]
fn wait_same_live_tasks(cluster: &Cluster, scheduler: &Scheduler) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let ok = wait_until(DEADLINE, || {
        ours = scheduler.live_task_ids();
        theirs = cluster.live_task_ids();
        ours == theirs
    });
    assert!(ok, "scheduler lists {ours:?}, master runs {theirs:?}");
}

#[test]
fn a_scheduler_restart_keeps_the_framework_and_relaunches_nothing() {
    const TEST: &str = "scheduler_restart";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("sched-restart");
    let cluster = Cluster::start(
        &dir,
        crate::PORT_SCHEDULER_RESTART,
        ClusterOptions::default(),
    );
    let mut first = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("1.log"));
    for body in [STRESS60, CADVISOR, DB] {
        first.submit(body);
    }
    let running = [
        ("cadvisor", "TASK_RUNNING"),
        ("db", "TASK_RUNNING"),
        ("stress60", "TASK_RUNNING"),
    ];
    first.wait_summary(&running, &cluster);
    let framework = the_framework(&cluster);
    let before = first.live_task_ids();
    let runs = cluster.docker_runs().len();
    assert_eq!(runs, 3);

    first.kill();
    assert!(
        wait_until(DEADLINE, || cluster.connected_frameworks().is_empty()),
        "the master noticed the scheduler going away"
    );
    let second = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("2.log"));
    assert_eq!(the_framework(&cluster), framework, "same framework");
    second.wait_summary(&running, &cluster);
    assert_eq!(
        second.live_task_ids(),
        before,
        "the same tasks, not new ones"
    );
    // It goes on working after reconciling: a new task launches, nothing else does.
    second.submit(r#"{"id":"after","dockerimage":"busybox","mem":"16"}"#);
    second.wait_summary(
        &[
            ("after", "TASK_RUNNING"),
            ("cadvisor", "TASK_RUNNING"),
            ("db", "TASK_RUNNING"),
            ("stress60", "TASK_RUNNING"),
        ],
        &cluster,
    );
    wait_same_live_tasks(&cluster, &second);
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.runs, ledger.launched), (runs + 1, 4), "{ledger:?}");
    assert_eq!(
        ledger.kills,
        0,
        "nothing killed: {:?}",
        cluster.task_states()
    );
    assert!(
        before.iter().all(|id| second.live_task_ids().contains(id)),
        "the tasks from before still run"
    );
    report(
        TEST,
        &format!(
            "{}; faults injected: 1 scheduler SIGKILL; lost 0, relaunched 0",
            ledger.line()
        ),
    );
}

#[test]
fn a_cluster_restart_keeps_the_framework_and_follows_restart_policies() {
    const TEST: &str = "cluster_restart";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("cluster-restart");
    let cluster = Cluster::start(&dir, crate::PORT_CLUSTER_RESTART, ClusterOptions::default());
    let scheduler = Scheduler::start(&cluster.address(), &tmp.path("state"), &tmp.path("s.log"));
    for body in [STRESS60, DB] {
        scheduler.submit(body);
    }
    scheduler.wait_summary(
        &[("db", "TASK_RUNNING"), ("stress60", "TASK_RUNNING")],
        &cluster,
    );
    let framework = the_framework(&cluster);
    let db_before = scheduler
        .tasks()
        .into_iter()
        .find(|t| t["id"] == "db")
        .map(|t| text(&t["InternalID"]))
        .unwrap_or_default();

    // Master and agent restart; the agent recovers from its checkpoints. The
    // docker executors (v1 HTTP, no libprocess pid) cannot be recovered, so
    // their containers are orphans the agent stops: both tasks died.
    cluster.restart_keeping_tasks();
    assert_eq!(the_framework(&cluster), framework, "same framework");
    // stress60 (restart never) is gone; db (restart always) runs again as a new task.
    scheduler.wait_summary(&[("db", "TASK_RUNNING")], &cluster);
    let db = scheduler
        .tasks()
        .into_iter()
        .find(|t| t["id"] == "db")
        .unwrap_or_default();
    assert_ne!(text(&db["InternalID"]), db_before, "a new Mesos task: {db}");
    assert_eq!(db["restarts"], 1, "{db}");
    wait_same_live_tasks(&cluster, &scheduler);
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    let runs = cluster.docker_runs();
    assert_eq!(runs.len(), 3, "stress60, db and db's restart: {runs:?}");
    report(
        TEST,
        &format!(
            "{}; faults injected: 1 cluster restart (KEEP_TASKS/KEEP_WORK); master after restart {:?}",
            ledger.line(),
            cluster.task_states()
        ),
    );
}
