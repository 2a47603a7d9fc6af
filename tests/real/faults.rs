//! Failure modes of a real master that mesos-sim never produced (issue 8):
//! a call outage while the event stream stays up, two schedulers with one
//! framework id, and an ACCEPT whose response is lost. The faults come from
//! `FaultProxy` in front of the master, or from a second scheduler process.

use std::time::{Duration, Instant};

use crate::fault_proxy::{FaultProxy, Mode};
use crate::harness::{
    realmesos, report, run_task_id, text, wait_until, Cluster, ClusterOptions, Ledger, Scheduler,
    TempDir, DEADLINE, STRESS60,
};

/// How long the call outage lasts at least.
const OUTAGE: Duration = Duration::from_secs(3);
/// Refused or cut calls the outage must see (the caller gave up after three).
const OUTAGE_CALLS: u64 = 3;

fn proxy_for(cluster: &Cluster) -> FaultProxy {
    let upstream = cluster.address().parse().expect("master address");
    FaultProxy::start(upstream).expect("fault proxy")
}

/// The master's tasks whose id starts with `prefix-`: (id, state).
fn master_tasks_of(cluster: &Cluster, prefix: &str) -> Vec<(String, String)> {
    cluster
        .task_states()
        .into_iter()
        .filter(|(id, _)| id.starts_with(&format!("{prefix}-")))
        .collect()
}

#[test]
fn a_call_outage_with_the_stream_up_ends_with_the_new_task_running() {
    const TEST: &str = "call_outage";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("outage");
    let cluster = Cluster::start(&dir, crate::PORT_OUTAGE, ClusterOptions::default());
    let proxy = proxy_for(&cluster);
    let scheduler = Scheduler::start(
        &proxy.addr().to_string(),
        &tmp.path("state"),
        &tmp.path("s.log"),
    );
    scheduler.submit(STRESS60);
    scheduler.wait_summary(&[("stress60", "TASK_RUNNING")], &cluster);
    let framework = cluster.connected_frameworks();
    assert_eq!(framework.len(), 1);
    let subscribes = cluster.framework_metric("calls/subscribe");

    // Calls fail while the stream flows; a task submitted now needs calls.
    proxy.set_mode(Mode::RefuseNew);
    let started = Instant::now();
    scheduler.submit(r#"{"id":"during","dockerimage":"busybox","mem":"16"}"#);
    let blocked = wait_until(DEADLINE, || {
        let counters = proxy.counters();
        counters.refused + counters.cut >= OUTAGE_CALLS && started.elapsed() >= OUTAGE
    });
    assert!(
        blocked,
        "the scheduler made no calls: {:?}",
        proxy.counters()
    );
    assert_eq!(
        cluster.connected_frameworks(),
        framework,
        "the stream stayed up through the outage"
    );
    let outage = proxy.counters();
    proxy.set_mode(Mode::Pass);

    scheduler.wait_summary(
        &[("during", "TASK_RUNNING"), ("stress60", "TASK_RUNNING")],
        &cluster,
    );
    assert_eq!(
        master_tasks_of(&cluster, "during")
            .iter()
            .map(|(_, state)| state.as_str())
            .collect::<Vec<_>>(),
        ["TASK_RUNNING"]
    );
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (2, 2), "{ledger:?}");
    report(
        TEST,
        &format!(
            "{}; faults injected: call outage {:.1}s, {} new connections refused, {} calls cut; SUBSCRIBE calls before {subscribes}, after {}; lost 0",
            ledger.line(),
            started.elapsed().as_secs_f64(),
            outage.refused,
            outage.cut,
            cluster.framework_metric("calls/subscribe"),
        ),
    );
}

/// Copies the state files (`state.journal`, `state.snapshot`) of `from` into
/// a new directory `to`; a lock file, if any, stays behind.
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("state dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.path().is_file() && name.starts_with("state.") {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_displaced_scheduler_exits_instead_of_taking_the_framework_back() {
    const TEST: &str = "failed_over";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("failover");
    let cluster = Cluster::start(&dir, crate::PORT_FAILOVER, ClusterOptions::default());
    let mut first = Scheduler::start(&cluster.address(), &tmp.path("a"), &tmp.path("a.log"));
    first.submit(STRESS60);
    first.wait_summary(&[("stress60", "TASK_RUNNING")], &cluster);
    let framework = cluster.connected_frameworks();
    assert_eq!(framework.len(), 1);

    // A copy of the state dir: the same framework id from another process.
    copy_state(&tmp.path("a"), &tmp.path("b"));
    let second = Scheduler::start(&cluster.address(), &tmp.path("b"), &tmp.path("b.log"));
    let mut status = None;
    let exited = wait_until(DEADLINE, || {
        status = first.exit_status();
        status.is_some()
    });
    assert!(
        exited,
        "the displaced scheduler is still running; SUBSCRIBE calls so far: {}",
        cluster.framework_metric("calls/subscribe")
    );
    let status = status.expect("exited");
    assert_eq!(
        status.code(),
        Some(i32::from(charmander::mesos::EXIT_FAILED_OVER)),
        "the documented exit code for 'failed over' (README), not a crash: {status:?}"
    );
    assert!(
        first.log_text().to_lowercase().contains("failed over"),
        "the displaced one says what happened: {}",
        first.log_text()
    );
    // The framework stays with the second scheduler, which keeps working.
    assert_eq!(cluster.connected_frameworks(), framework);
    let subscribes = cluster.framework_metric("calls/subscribe");
    second.submit(r#"{"id":"after","dockerimage":"busybox","mem":"16"}"#);
    second.wait_summary(
        &[("after", "TASK_RUNNING"), ("stress60", "TASK_RUNNING")],
        &cluster,
    );
    assert_eq!(cluster.connected_frameworks(), framework);
    assert_eq!(
        cluster.framework_metric("calls/subscribe"),
        subscribes,
        "no more subscriptions: nobody takes the framework back"
    );
    // A third process on the second one's state dir refuses to start.
    let mut same_dir = Scheduler::spawn(&cluster.address(), &tmp.path("b"), &tmp.path("c.log"));
    let mut refused = None;
    let ended = wait_until(DEADLINE, || {
        refused = same_dir.try_wait().ok().flatten();
        refused.is_some()
    });
    if !ended {
        let _ = same_dir.kill();
        let _ = same_dir.wait();
    }
    let c_log = std::fs::read_to_string(tmp.path("c.log")).unwrap_or_default();
    assert!(
        ended && refused.is_some_and(|status| !status.success()),
        "a second process on one state dir must refuse: {refused:?}\n{c_log}"
    );
    let said = c_log.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        said.contains(&tmp.path("b").display().to_string()),
        "the refusal names the state dir: {c_log}"
    );

    assert_eq!(cluster.connected_frameworks(), framework);
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (2, 2), "{ledger:?}");
    report(
        TEST,
        &format!(
            "{}; faults injected: a second scheduler on a copy of the state dir, displaced one exited {status:?}; a third on the second's state dir refused: {refused:?}; SUBSCRIBE calls {subscribes}; lost 0",
            ledger.line()
        ),
    );
}

#[test]
fn a_lost_accept_response_leaves_the_task_running_exactly_once() {
    const TEST: &str = "lost_accept";
    // Only the ACCEPT carries this id first (in its TaskInfo).
    const ID: &str = "lostaccept";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("lost-accept");
    let cluster = Cluster::start(&dir, crate::PORT_LOST_ACCEPT, ClusterOptions::default());
    let proxy = proxy_for(&cluster);
    let scheduler = Scheduler::start(
        &proxy.addr().to_string(),
        &tmp.path("state"),
        &tmp.path("s.log"),
    );
    scheduler.submit(STRESS60);
    scheduler.wait_summary(&[("stress60", "TASK_RUNNING")], &cluster);

    proxy.set_mode(Mode::LoseResponse {
        marker: ID.to_string(),
        count: 1,
    });
    scheduler.submit(&format!(
        r#"{{"id":"{ID}","dockerimage":"busybox","mem":"16"}}"#
    ));
    assert!(
        wait_until(DEADLINE, || proxy.counters().responses_lost == 1),
        "the ACCEPT never came: {:?}",
        proxy.counters()
    );
    scheduler.wait_summary(
        &[(ID, "TASK_RUNNING"), ("stress60", "TASK_RUNNING")],
        &cluster,
    );
    // One more task through the same path: time for any retry or implicit
    // reconciliation to show a second copy or a kill.
    scheduler.submit(r#"{"id":"after","dockerimage":"busybox","mem":"16"}"#);
    scheduler.wait_summary(
        &[
            ("after", "TASK_RUNNING"),
            (ID, "TASK_RUNNING"),
            ("stress60", "TASK_RUNNING"),
        ],
        &cluster,
    );
    let on_master = master_tasks_of(&cluster, ID);
    assert_eq!(
        on_master
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["TASK_RUNNING"],
        "exactly one copy, running: {on_master:?}"
    );
    let listed = scheduler
        .tasks()
        .into_iter()
        .find(|t| t["id"] == ID)
        .map(|t| text(&t["InternalID"]))
        .unwrap_or_default();
    assert_eq!(
        listed, on_master[0].0,
        "the scheduler lists the copy that runs"
    );
    let runs: Vec<String> = cluster
        .docker_runs()
        .iter()
        .filter_map(|argv| run_task_id(argv))
        .filter(|id| id.starts_with(ID))
        .collect();
    assert_eq!(runs.len(), 1, "one docker run: {runs:?}");
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!(
        ledger.kills,
        0,
        "nothing killed as unknown: {:?}",
        cluster.task_states()
    );
    assert_eq!((ledger.launched, ledger.runs), (3, 3), "{ledger:?}");
    report(
        TEST,
        &format!(
            "{}; faults injected: {} ACCEPT response(s) lost; lost 0",
            ledger.line(),
            proxy.counters().responses_lost
        ),
    );
}

#[test]
fn a_master_list_skips_an_address_that_is_down() {
    const TEST: &str = "master_list";
    let Some(dir) = realmesos(TEST) else { return };
    let tmp = TempDir::new("master-list");
    let cluster = Cluster::start(&dir, crate::PORT_MASTER_LIST, ClusterOptions::default());
    // A loopback port nobody listens on: the first master of the list is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let masters = format!("{down},{}", cluster.address());
    let scheduler = Scheduler::start(&masters, &tmp.path("state"), &tmp.path("s.log"));
    scheduler.submit(STRESS60);
    scheduler.wait_summary(&[("stress60", "TASK_RUNNING")], &cluster);
    assert_eq!(cluster.connected_frameworks().len(), 1);
    let ledger = Ledger::of(&cluster);
    ledger.assert_nothing_twice();
    assert_eq!((ledger.launched, ledger.runs), (1, 1), "{ledger:?}");
    report(
        TEST,
        &format!(
            "{}; faults injected: first of two masters down ({down}); lost 0",
            ledger.line()
        ),
    );
}
