//! Our Mesos client against `mesos-sim`: the protocol paths (calls, acks,
//! reconcile, teardown) through `mesos::Connection`, and the recovery paths
//! (redirect, dropped stream, silent stream) through the whole scheduler.

use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde_json::Value;

use crate::fault_proxy::{Fate, FaultProxy, Mode};
use crate::support::{fast_sim, scheduler_config, wait_until, FakeServer, Lab, DEADLINE, STRESS60};
use charmander::mesos::convert::FrameworkSettings;
use charmander::mesos::{Connection, MesosConfig};
use charmander::scheduler::model::{
    NetworkMode, PortMapping, Sla, StatusReason, TaskId, TaskSpec, TaskState,
};
use charmander::scheduler::{Call, CallFailure, Launch, MesosEvent};
use charmander::sim;

struct Client {
    events: Receiver<MesosEvent>,
    calls: Sender<Call>,
    connection: Option<Connection>,
}

impl Client {
    fn start(master: &str) -> Client {
        let (event_sender, events) = bounded(1024);
        let (calls, call_receiver) = bounded(1024);
        let config = MesosConfig {
            masters: vec![master.to_string()],
            framework: FrameworkSettings {
                name: "client-test".to_string(),
                user: "root".to_string(),
                role: "*".to_string(),
                hostname: "localhost".to_string(),
                principal: None,
                failover_timeout: 3600.0,
            },
            framework_id: None,
            auth: None,
        };
        let connection = Connection::start(config, event_sender, call_receiver, Default::default())
            .expect("client starts");
        Client {
            events,
            calls,
            connection: Some(connection),
        }
    }

    /// The next event matching `want`, skipping others.
    #[track_caller]
    fn expect<T>(&self, what: &str, mut want: impl FnMut(MesosEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = want(event) {
                        return found;
                    }
                }
                Err(_) => panic!("no {what} within {DEADLINE:?}"),
            }
        }
    }

    fn send(&self, call: Call) {
        self.calls.send(call).expect("caller running");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The caller stops when its inbox closes; then join both threads.
        let (dead, _) = bounded(1);
        drop(std::mem::replace(&mut self.calls, dead));
        if let Some(connection) = self.connection.take() {
            connection.shutdown();
        }
    }
}

/// A lab master, a fault proxy in front of it (passing) and our client
/// subscribed through the proxy.
fn subscribed_through_proxy() -> (sim::Master, FaultProxy, Client) {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let proxy = FaultProxy::start(master.addr()).expect("proxy starts");
    let client = Client::start(&proxy.addr().to_string());
    client.expect("SUBSCRIBED", |event| {
        matches!(event, MesosEvent::Subscribed { .. }).then_some(())
    });
    (master, proxy, client)
}

/// The first offer from `hostname`.
fn offer_from(client: &Client, hostname: &str) -> charmander::scheduler::model::Offer {
    client.expect("an offer", |event| match event {
        MesosEvent::Offers(offers) => offers.into_iter().find(|it| it.hostname == hostname),
        _ => None,
    })
}

fn docker_task(id: &str) -> TaskSpec {
    TaskSpec {
        id: id.to_string(),
        docker_image: "busybox".to_string(),
        mem_mb: 32,
        cpus: Some(0.5),
        sla: Sla::None,
        node_type: String::new(),
        node_name: String::new(),
        not_metered: false,
        reshuffleable: false,
        arguments: vec!["sleep".to_string(), "3600".to_string()],
        volumes: Vec::new(),
        ports: vec![PortMapping {
            host_port: 31001,
            container_port: 80,
        }],
        network: NetworkMode::Default,
        restart: Default::default(),
        privileged: false,
    }
}

#[test]
fn subscribe_launch_ack_kill_reconcile_decline_suppress_revive_teardown() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let client = Client::start(&master.addr().to_string());
    let framework_id = client.expect("SUBSCRIBED", |event| match event {
        MesosEvent::Subscribed { framework_id } => Some(framework_id),
        _ => None,
    });
    assert!(!framework_id.0.is_empty());
    let offers = client.expect("OFFERS", |event| match event {
        MesosEvent::Offers(offers) if !offers.is_empty() => Some(offers),
        _ => None,
    });
    let offer = offers
        .iter()
        .find(|offer| offer.hostname == "slave2")
        .expect("an offer from slave2")
        .clone();
    assert_eq!(
        offer.attributes.get("nodetype").map(String::as_str),
        Some("lab")
    );
    assert!(
        offer
            .pools
            .iter()
            .any(|pool| pool.ports.contains(&(31000, 32000))),
        "{:?}",
        offer.pools
    );
    let others: Vec<_> = offers
        .iter()
        .filter(|it| it.id != offer.id)
        .map(|it| it.id.clone())
        .collect();
    client.send(Call::Decline {
        offer_ids: others,
        refuse_seconds: 60.0,
    });

    let task_id = TaskId("probe-1".into());
    client.send(Call::Launch {
        agent_id: offer.agent_id.clone(),
        offer_ids: vec![offer.id.clone()],
        tasks: vec![Launch {
            task_id: task_id.clone(),
            spec: docker_task("probe").into(),
            resources: Vec::new(),
        }],
        refuse_seconds: 5.0,
    });
    // STARTING then RUNNING, each with a uuid that we acknowledge; the agent
    // sends RUNNING only after STARTING was acknowledged.
    for expected in [TaskState::Starting, TaskState::Running] {
        let update = client.expect("an update", |event| match event {
            MesosEvent::Update(update) if update.task_id == task_id => Some(update),
            _ => None,
        });
        assert_eq!(update.state, expected);
        let uuid = update.uuid.clone().expect("agent updates carry a uuid");
        assert_eq!(uuid.len(), 16);
        if expected == TaskState::Running {
            let docker = update
                .docker
                .clone()
                .expect("RUNNING carries docker inspect data");
            assert!(
                docker.name().starts_with("mesos-") && docker.pid > 0,
                "{docker:?}"
            );
        }
        client.send(Call::Acknowledge {
            agent_id: update.agent_id.clone().expect("agent id"),
            task_id: task_id.clone(),
            uuid,
        });
    }

    // Explicit reconciliation: the master answers without a uuid.
    client.send(Call::Reconcile(vec![
        (task_id.clone(), None),
        (TaskId("ghost".into()), None),
    ]));
    let mut answers = Vec::new();
    while answers.len() < 2 {
        answers.push(
            client.expect("a reconciliation answer", |event| match event {
                MesosEvent::Update(update) if update.reason == StatusReason::Reconciliation => {
                    Some(update)
                }
                _ => None,
            }),
        );
    }
    answers.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(
        (answers[0].task_id.0.as_ref(), answers[0].uuid.is_none()),
        ("ghost", true)
    );
    assert_ne!(answers[0].state, TaskState::Running);
    assert_eq!(
        (answers[1].state, answers[1].uuid.is_none()),
        (TaskState::Running, true)
    );

    client.send(Call::Suppress);
    client.send(Call::Revive);
    client.send(Call::Kill {
        task_id: task_id.clone(),
        agent_id: Some(offer.agent_id.clone()),
    });
    let killed = client.expect("TASK_KILLED", |event| match event {
        MesosEvent::Update(update) if update.task_id == task_id && update.state.is_terminal() => {
            Some(update)
        }
        _ => None,
    });
    assert_eq!(killed.state, TaskState::Killed);
    client.send(Call::Acknowledge {
        agent_id: killed.agent_id.clone().expect("agent id"),
        task_id: task_id.clone(),
        uuid: killed.uuid.clone().expect("uuid"),
    });

    client.send(Call::Teardown);
    let http = crate::support::http_agent();
    let torn_down = wait_until(DEADLINE, || {
        let (_, state) = crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", master.addr()),
            None,
        );
        let calls = &state["calls"];
        [
            "DECLINE",
            "ACCEPT",
            "ACKNOWLEDGE",
            "RECONCILE",
            "SUPPRESS",
            "REVIVE",
            "KILL",
            "TEARDOWN",
        ]
        .iter()
        .all(|kind| calls[*kind].as_u64().unwrap_or(0) >= 1)
            && state["frameworks"]
                .as_array()
                .is_some_and(|frameworks| frameworks.iter().all(|fw| fw["connected"] != true))
    });
    assert!(
        torn_down,
        "calls or teardown missing: {}",
        crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", master.addr()),
            None
        )
        .1
    );
}

#[test]
fn a_non_leading_master_redirects_us_to_the_leader() {
    let leader = sim::Master::start(fast_sim(sim::charmander_lab())).expect("leader starts");
    let mut follower_config = fast_sim(Vec::new());
    follower_config.redirect_to = Some(leader.addr().to_string());
    let follower = sim::Master::start(follower_config).expect("follower starts");
    let scheduler = charmander::start(scheduler_config(&follower.addr().to_string()))
        .expect("scheduler starts");
    let http = crate::support::http_agent();
    let on_leader = wait_until(DEADLINE, || {
        let (_, state) = crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", leader.addr()),
            None,
        );
        state["frameworks"]
            .as_array()
            .is_some_and(|frameworks| frameworks.iter().any(|fw| fw["connected"] == true))
    });
    assert!(on_leader, "the scheduler never reached the leader");
    // And it works there: a task submitted to the scheduler runs on the leader.
    let (status, _) = crate::support::request(
        &http,
        "POST",
        &format!("http://{}/client/task", scheduler.api_addr()),
        Some(STRESS60),
    );
    assert_eq!(status, 202);
    let running = wait_until(DEADLINE, || {
        let (_, state) = crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", leader.addr()),
            None,
        );
        state["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| task["state"] == "TASK_RUNNING"))
    });
    assert!(running);
    scheduler.shutdown();
}

/// The framework id the simulator knows, and how many SUBSCRIBE calls it got.
fn framework_and_subscribes(lab: &Lab) -> (Value, u64) {
    let state = lab.sim_state();
    (
        state["frameworks"][0]["id"].clone(),
        state["calls"]["SUBSCRIBE"].as_u64().unwrap_or(0),
    )
}

#[track_caller]
fn assert_recovers_without_loss(
    lab: &Lab,
    subscribes_before: u64,
    framework_before: &Value,
    running_before: &[Value],
) {
    assert!(
        wait_until(DEADLINE, || framework_and_subscribes(lab).1
            > subscribes_before),
        "no resubscription: {}",
        lab.sim_state()
    );
    lab.wait_subscribed();
    assert_eq!(
        &framework_and_subscribes(lab).0,
        framework_before,
        "resubscribed with another framework id"
    );
    let after = lab.wait_running("stress60", 1);
    assert_eq!(
        after[0]["InternalID"], running_before[0]["InternalID"],
        "the task was replaced, not kept"
    );
    assert_eq!(lab.calls("ACCEPT"), 1, "a task was launched twice");
    let sim_tasks = lab.sim_state()["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sim_tasks.len(), 1, "{sim_tasks:?}");
}

#[test]
fn a_dropped_stream_is_resubscribed_with_the_same_framework_id_and_no_task_lost() {
    let lab = Lab::start();
    lab.post("/client/task", STRESS60);
    let running = lab.wait_running("stress60", 1);
    let (framework, subscribes) = framework_and_subscribes(&lab);
    let (status, reply) = lab.sim_post("/sim/drop-stream", "");
    assert!(status < 300, "{status} {reply}");
    assert_recovers_without_loss(&lab, subscribes, &framework, &running);
}

#[test]
fn a_silent_stream_is_detected_by_missing_heartbeats_and_resubscribed() {
    let lab = Lab::start();
    lab.post("/client/task", STRESS60);
    let running = lab.wait_running("stress60", 1);
    let (framework, subscribes) = framework_and_subscribes(&lab);
    let (status, reply) = lab.sim_post("/sim/heartbeats/pause", "");
    assert!(status < 300, "{status} {reply}");
    // Heartbeats every 0.5 s: five missed ones (2.5 s) end the stream.
    assert!(
        wait_until(DEADLINE, || framework_and_subscribes(&lab).1 > subscribes),
        "silence went unnoticed"
    );
    lab.sim_post("/sim/heartbeats/resume", "");
    assert_recovers_without_loss(&lab, subscribes, &framework, &running);
}

/// See: issue 8, finding 1. A gone master used to cost every queued call a
/// local "not subscribed" failure; now the first call is retried with backoff,
/// the rest wait behind it, and all of them go out once a master is back.
#[test]
fn calls_queued_behind_a_gone_master_wait_for_it_and_all_go_out_when_it_returns() {
    const QUEUED: usize = 200;
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let addr = master.addr().to_string();
    let client = Client::start(&addr);
    client.expect("SUBSCRIBED", |event| {
        matches!(event, MesosEvent::Subscribed { .. }).then_some(())
    });
    // The master dies; whatever takes its address hangs up on every request,
    // and counts the calls (requests with a stream id) that reach it.
    master.shutdown();
    let mut listener = None;
    assert!(wait_until(DEADLINE, || {
        listener = std::net::TcpListener::bind(&addr).ok();
        listener.is_some()
    }));
    let gone = FakeServer::on(listener.expect("bound"), |stream, _| {
        let mut head = String::new();
        let mut reader = std::io::BufReader::new(stream);
        while std::io::BufRead::read_line(&mut reader, &mut head).is_ok_and(|n| n > 2) {}
        head.to_ascii_lowercase().contains("mesos-stream-id")
    });
    for n in 0..QUEUED {
        client.send(Call::Kill {
            task_id: TaskId(format!("t{n}").into()),
            agent_id: None,
        });
    }
    // The old caller gave up after three attempts and failed the rest.
    assert!(
        wait_until(DEADLINE, || gone.count() >= 4),
        "the first call was not retried: {} attempts",
        gone.count()
    );
    while let Ok(event) = client.events.try_recv() {
        assert!(
            !matches!(event, MesosEvent::CallFailed { .. }),
            "a call failed although the master may come back: {event:?}"
        );
    }
    let attempts = gone.count();
    assert!(
        attempts < QUEUED,
        "{attempts} attempts: queued calls each tried"
    );
    drop(gone);
    // A master comes back at the same address.
    let mut back = None;
    assert!(wait_until(DEADLINE, || {
        back = sim::Master::start(sim::SimConfig {
            listen: addr.clone(),
            ..fast_sim(sim::charmander_lab())
        })
        .ok();
        back.is_some()
    }));
    let back = back.expect("started");
    let http = crate::support::http_agent();
    let kills = || {
        crate::support::request(&http, "GET", &format!("http://{addr}/sim/state"), None).1["calls"]
            ["KILL"]
            .as_u64()
            .unwrap_or(0)
    };
    // The master counts calls it refuses too: a KILL sent on the old
    // session just before the new one arrived is refused (stale stream id)
    // and sent again, so it may be counted twice.
    assert!(
        wait_until(DEADLINE, || kills() >= QUEUED as u64),
        "{} of {QUEUED} kills reached the master that came back",
        kills()
    );
    // Calls go out in order: once this one is through, every KILL before it
    // was delivered or reported, and none may have been reported.
    client.send(Call::Revive);
    let revived = || {
        crate::support::request(&http, "GET", &format!("http://{addr}/sim/state"), None).1["calls"]
            ["REVIVE"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    };
    assert!(wait_until(DEADLINE, revived), "the REVIVE never arrived");
    while let Ok(event) = client.events.try_recv() {
        assert!(
            !matches!(event, MesosEvent::CallFailed { .. }),
            "a call was given up: {event:?}"
        );
    }
    drop(client);
    back.shutdown();
}

/// See: issue 8, finding 1. Calls refused with 503 while the event stream
/// stays up used to make the caller drop its session for good; a task
/// submitted then stayed pending for ever.
#[test]
fn a_task_submitted_while_the_master_refuses_calls_runs_once_it_takes_them_again() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let proxy = FaultProxy::start(master.addr()).expect("proxy starts");
    let scheduler =
        charmander::start(scheduler_config(&proxy.addr().to_string())).expect("scheduler starts");
    let http = crate::support::http_agent();
    let sim_state = || crate::support::sim_state(&master);
    assert!(wait_until(DEADLINE, || sim_state()["frameworks"]
        .as_array()
        .is_some_and(|it| it.iter().any(|fw| fw["connected"] == true))));
    proxy.set_mode(Mode::Answer503);
    crate::support::submit(&http, &scheduler.api_addr().to_string(), STRESS60);
    // More refusals than the three attempts after which the old caller gave up.
    assert!(
        wait_until(DEADLINE, || proxy.count_all(Fate::Answered503) >= 5),
        "calls stopped reaching the master after {} refusals",
        proxy.count_all(Fate::Answered503)
    );
    proxy.set_mode(Mode::Pass);
    let running = wait_until(DEADLINE, || {
        sim_state()["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| task["state"] == "TASK_RUNNING"))
    });
    assert!(running, "the task never ran: {}", sim_state());
    let tasks = sim_state()["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "launched more than once: {tasks:?}");
    scheduler.shutdown();
}

/// See: issue 8, finding 9. An ACCEPT whose answer is lost may have launched
/// the task: it is reported as outcome unknown and never sent again, while an
/// idempotent call in the same spot is sent again until it gets through.
#[test]
fn an_accept_whose_answer_is_lost_is_reported_unknown_and_never_resent() {
    let (_master, proxy, client) = subscribed_through_proxy();
    let offer = offer_from(&client, "slave2");
    proxy.set_mode(Mode::HangUp);
    let task_id = TaskId("probe-unknown".into());
    client.send(Call::Launch {
        agent_id: offer.agent_id.clone(),
        offer_ids: vec![offer.id.clone()],
        tasks: vec![Launch {
            task_id: task_id.clone(),
            spec: docker_task("probe").into(),
            resources: Vec::new(),
        }],
        refuse_seconds: 5.0,
    });
    let failure = client.expect("CallFailed for the ACCEPT", |event| match event {
        MesosEvent::CallFailed {
            call: Call::Launch { .. },
            failure,
        } => Some(failure),
        _ => None,
    });
    assert!(
        matches!(failure, CallFailure::OutcomeUnknown(_)),
        "{failure:?}"
    );
    client.send(Call::Kill {
        task_id: task_id.clone(),
        agent_id: Some(offer.agent_id.clone()),
    });
    assert!(
        wait_until(DEADLINE, || proxy.count("KILL", Fate::Cut) >= 2),
        "the KILL was not sent again"
    );
    proxy.set_mode(Mode::Pass);
    assert!(
        wait_until(DEADLINE, || proxy.count("KILL", Fate::Passed) == 1),
        "the KILL never got through"
    );
    assert_eq!(
        proxy.count("ACCEPT", Fate::Cut) + proxy.count("ACCEPT", Fate::Passed),
        1,
        "the ACCEPT was sent again"
    );
    while let Ok(event) = client.events.try_recv() {
        assert!(
            !matches!(event, MesosEvent::CallFailed { .. }),
            "an idempotent call was given up: {event:?}"
        );
    }
}

/// A 4xx means the master did not act and never will: reported as refused,
/// once, and not sent again.
#[test]
fn a_call_the_master_refuses_is_reported_once_and_not_resent() {
    let (_master, proxy, client) = subscribed_through_proxy();
    client.send(Call::Acknowledge {
        agent_id: charmander::scheduler::model::AgentId("a".into()),
        task_id: TaskId("t".into()),
        uuid: vec![1, 2, 3],
    });
    let failure = client.expect("CallFailed", |event| match event {
        MesosEvent::CallFailed { failure, .. } => Some(failure),
        _ => None,
    });
    assert!(matches!(failure, CallFailure::Refused(_)), "{failure:?}");
    // Calls go out in order: once the REVIVE is through, a resend of the
    // acknowledgement would have been seen.
    client.send(Call::Revive);
    assert!(wait_until(DEADLINE, || proxy.count("REVIVE", Fate::Passed) == 1));
    assert_eq!(proxy.count("ACKNOWLEDGE", Fate::Passed), 1);
}

/// An address nothing listens on (bound once, then let go).
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Starts a scheduler on `masters` (a `--master` list), submits STRESS60 and
/// waits until it runs on `leader`; returns the scheduler.
#[track_caller]
fn runs_on_the_leader(masters: &str, leader: &sim::Master) -> charmander::Running {
    let config = charmander::config::parse(vec!["--master".to_string(), masters.to_string()])
        .expect("the list parses");
    let charmander::config::Parsed::Run(parsed) = config else {
        panic!("not a run config")
    };
    let mut config = scheduler_config(&parsed.master);
    config.master = parsed.master;
    let scheduler = charmander::start(config).expect("scheduler starts");
    let http = crate::support::http_agent();
    crate::support::submit(&http, &scheduler.api_addr().to_string(), STRESS60);
    let running = wait_until(DEADLINE, || {
        let (_, state) = crate::support::request(
            &http,
            "GET",
            &format!("http://{}/sim/state", leader.addr()),
            None,
        );
        state["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| task["state"] == "TASK_RUNNING"))
    });
    assert!(running, "no task ran on the leader with --master {masters}");
    scheduler
}

/// See: issue 8, finding 8. A lab with several masters lists them all; a
/// dead first address costs one failed connect, then the next one is tried.
#[test]
fn a_master_list_whose_first_address_is_dead_reaches_the_next_one() {
    let leader = sim::Master::start(fast_sim(sim::charmander_lab())).expect("leader starts");
    let masters = format!("{},{}", dead_address(), leader.addr());
    runs_on_the_leader(&masters, &leader).shutdown();
}

/// See: issue 8, finding 8. The first listed master is not the leader: its
/// 307 leads us to the leader.
#[test]
fn a_master_list_whose_first_address_is_a_non_leader_is_redirected_to_the_leader() {
    let leader = sim::Master::start(fast_sim(sim::charmander_lab())).expect("leader starts");
    let mut follower_config = fast_sim(Vec::new());
    follower_config.redirect_to = Some(leader.addr().to_string());
    let follower = sim::Master::start(follower_config).expect("follower starts");
    let masters = format!("{},{}", follower.addr(), dead_address());
    runs_on_the_leader(&masters, &leader).shutdown();
}

/// See: issue 8, finding 8. The master we are subscribed to goes away: the
/// reader moves on to the next address in the list and resubscribes there
/// with the same framework id.
#[test]
fn when_the_leader_goes_the_next_master_in_the_list_takes_over() {
    let first = sim::Master::start(fast_sim(sim::charmander_lab())).expect("first starts");
    let second = sim::Master::start(fast_sim(sim::charmander_lab())).expect("second starts");
    let masters = format!("{},{}", first.addr(), second.addr());
    let scheduler = runs_on_the_leader(&masters, &first);
    let http = crate::support::http_agent();
    let framework = |master: &std::net::SocketAddr| {
        let (_, state) =
            crate::support::request(&http, "GET", &format!("http://{master}/sim/state"), None);
        state["frameworks"]
            .as_array()
            .and_then(|it| it.iter().find(|fw| fw["connected"] == true).cloned())
            .map(|fw| fw["id"].clone())
    };
    let id = framework(&first.addr()).expect("subscribed to the first");
    let second_addr = second.addr();
    first.shutdown();
    assert!(
        wait_until(DEADLINE, || framework(&second_addr) == Some(id.clone())),
        "the second master never got our framework"
    );
    scheduler.shutdown();
}

/// Reads one request and answers 202 without `Connection: close`, then hangs
/// up: a master that closes idle keep-alive connections.
fn answer_one_call_then_close(stream: std::net::TcpStream) {
    answer_with(
        stream,
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    );
}

/// A master may close a kept-alive connection at any time; an idempotent
/// call that meets such a connection goes out again at once on a new one,
/// instead of failing (and starting an outage with a warning).
#[test]
fn a_kept_alive_connection_the_master_closed_is_replaced_without_a_failure() {
    let master = FakeServer::start(|stream, _| {
        answer_one_call_then_close(stream);
        true
    });
    let mut caller = charmander::mesos::client::Caller::new(None, Default::default());
    for n in 0..3 {
        if let Err(error) = caller.post(&master.addr, "stream", b"call", true) {
            panic!("call {n} failed: {error}");
        }
    }
    assert!(
        wait_until(DEADLINE, || master.count() == 3),
        "{} connections for 3 calls",
        master.count()
    );
}

/// An ACCEPT that has not got through when its subscription ends is not sent
/// on the next one: the master rescinded its offers, so it is refused
/// without reaching the master (sending it would only earn TASK_DROPPED).
#[test]
fn an_accept_not_yet_delivered_is_not_carried_over_to_a_new_subscription() {
    let (master, proxy, client) = subscribed_through_proxy();
    let offer = offer_from(&client, "slave2");
    proxy.set_mode(Mode::Answer503);
    client.send(Call::Launch {
        agent_id: offer.agent_id.clone(),
        offer_ids: vec![offer.id.clone()],
        tasks: vec![Launch {
            task_id: TaskId("probe-stale".into()),
            spec: docker_task("probe").into(),
            resources: Vec::new(),
        }],
        refuse_seconds: 5.0,
    });
    assert!(wait_until(DEADLINE, || proxy
        .count("ACCEPT", Fate::Answered503)
        >= 1));
    let http = crate::support::http_agent();
    let (status, reply) = crate::support::request(
        &http,
        "POST",
        &format!("http://{}/sim/drop-stream", master.addr()),
        Some(""),
    );
    assert!(status < 300, "{status} {reply}");
    // The caller has the new session before SUBSCRIBED is forwarded, so the
    // failure may come first: keep it.
    let mut failure = None;
    let mut keep_failure = |event| match event {
        MesosEvent::CallFailed {
            call: Call::Launch { .. },
            failure: it,
        } => {
            failure = Some(it);
            None
        }
        MesosEvent::Subscribed { .. } => Some(()),
        _ => None,
    };
    client.expect("a new SUBSCRIBED", &mut keep_failure);
    proxy.set_mode(Mode::Pass);
    let failure = match failure {
        Some(failure) => failure,
        None => client.expect("CallFailed for the ACCEPT", |event| match event {
            MesosEvent::CallFailed {
                call: Call::Launch { .. },
                failure,
            } => Some(failure),
            _ => None,
        }),
    };
    assert!(matches!(failure, CallFailure::Refused(_)), "{failure:?}");
    assert_eq!(
        proxy.count("ACCEPT", Fate::Passed),
        0,
        "sent on the new subscription"
    );
}

/// Reads one request and answers it with `answer` (nothing: hang up).
fn answer_with(stream: std::net::TcpStream, answer: &[u8]) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(&stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_ok() {
        let _ = (&stream).write_all(answer);
    }
}

/// What the caller may do next depends on how far a failed call got: the
/// master's answer (or its absence) is sorted into not delivered, outcome
/// unknown and refused.
#[test]
fn call_failures_are_sorted_by_how_far_the_call_got() {
    use charmander::mesos::client::{CallError, Caller};
    let check = |answer: &'static [u8], expected: &str| {
        let master = FakeServer::start(move |stream, _| {
            answer_with(stream, answer);
            true
        });
        let mut caller = Caller::new(None, Default::default());
        let got = match caller.post(&master.addr, "stream", b"call", false) {
            Ok(()) => "delivered",
            Err(CallError::NotDelivered(_)) => "not delivered",
            Err(CallError::OutcomeUnknown(_)) => "outcome unknown",
            Err(CallError::Refused(_)) => "refused",
        };
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(answer));
    };
    check(
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        "delivered",
    );
    check(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "delivered",
    );
    check(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        "not delivered",
    );
    check(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: //m2:5050/api/v1/scheduler\r\nContent-Length: 0\r\n\r\n",
        "not delivered",
    );
    check(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\n\r\nNot a valid U",
        "refused",
    );
    check(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        "refused",
    );
    check(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        "outcome unknown",
    );
    check(b"", "outcome unknown");
    check(b"SMTP ready\r\n\r\n", "outcome unknown");
    // Nobody listening: the call never left.
    let mut caller = Caller::new(None, Default::default());
    let dead = dead_address();
    assert!(matches!(
        caller.post(&dead, "stream", b"call", false),
        Err(CallError::NotDelivered(_))
    ));
}

/// Shutdown closes each lane's socket slot so a call waiting on a master
/// that does not answer returns. A call that starts after that (the caller
/// still sends what goes through at once while it stops) must not wait out
/// `CALL_TIMEOUT` (30 s) either: its socket is shut down as it is put in.
#[test]
fn a_closed_socket_slot_holds_no_call_up() {
    use charmander::mesos::client::{CallError, Caller, SocketSlot};
    // Connections complete in the listener's backlog; nothing answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let master = silent.local_addr().expect("address").to_string();
    let slot = SocketSlot::default();
    let post = |slot: &SocketSlot| {
        let (master, slot) = (master.clone(), slot.clone());
        let (done, result) = bounded(1);
        std::thread::spawn(move || {
            let mut caller = Caller::new(None, slot);
            let _ = done.send(caller.post(&master, "stream", b"call", false));
        });
        result
    };
    // In flight (its request has arrived): the close ends its wait for
    // the answer.
    let in_flight = post(&slot);
    let (mut request, _) = silent.accept().expect("the call connects");
    request
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout set");
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut request, &mut first).expect("the request arrives");
    slot.close();
    let result = in_flight
        .recv_timeout(DEADLINE)
        .expect("the close ends the wait");
    assert!(result.is_err(), "a closed call succeeded");
    // Started after the close: it fails at once, without even connecting
    // (a master that drops the connect would hold it `CONNECT_TIMEOUT`).
    let late = post(&slot)
        .recv_timeout(DEADLINE)
        .expect("a call after the close does not wait for an answer");
    assert!(matches!(late, Err(CallError::NotDelivered(_))), "{late:?}");
    silent.set_nonblocking(true).expect("non-blocking");
    assert!(
        matches!(silent.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a call after the close connected"
    );
}
