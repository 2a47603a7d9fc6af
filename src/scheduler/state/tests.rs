//! State transition tests: a script of events in, the calls and the task
//! table out, as text. The clock is an argument, so ids are deterministic:
//! the first task accepted at t=1000 s is `<id>-1000000000000`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::scheduler::intelligence::Source;
use crate::scheduler::model::{NetworkMode, OfferId, PortMapping, RestartPolicy, StatusReason};
use crate::scheduler::{CallFailure, StateFilter, TaskQuery};

/// Runs `script` (one step per line) and compares everything the steps
/// printed with `expected`.
///
/// Steps:
/// - `submit <id> mem=<m> [cpus=] [type=] [name=] [sla=singleton|one-per-node] [ports=p,q] [reshuffle] [privileged]`
/// - `subscribed` / `disconnected` / `removed`
/// - `offer <agent>...`: one OFFERS event with the lab agents named (slave1, slave2, slave3, slave4)
/// - `update <task-prefix> <STATE> [ack] [invalid] [reconcile] [docker] [reason=REASON_…] [message=…]`
/// - `kill <prefix>` / `reshuffle [dry]` / `tick <seconds later>` (both clocks)
/// - `wall <+/-seconds>`: only the wall clock steps, then a tick
/// - `restart`: the state is restored from the journal so far, then a tick
/// - `launch-failed <task-prefix> [refused]`: the ACCEPT's outcome is unknown (or it was refused)
/// - `refused suppress|revive|kill <task-prefix>`: the master answered 4xx
/// - `lost <agent>` / `tasks` (`?state=active`) / `all` (ended tasks too) / `nodes`
/// - `list [state=pending|launching|active|all|TASK_…] [prefix=<p>] [limit=<n>]`: a
///   filtered `GET /client/task` (`_` in a prefix stands for a space)
/// - `show <internal-id-prefix>`: one task (live or ended) with its history
/// - `events`: the notices published since the last `events` step
#[track_caller]
fn check(script: &str, expected: &str) {
    let actual = transcript(script);
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(actual, expected.join("\n"), "\n--- actual ---\n{actual}\n");
}

/// What `check` compares: every step and what it printed, one line each.
#[track_caller]
fn transcript(script: &str) -> String {
    let mut state = State::new(None);
    let mut journal = Vec::new();
    // Two clocks, stepped together by `tick` and apart by `wall`.
    let mut now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1000),
    };
    let mut out = Vec::new();
    let mut offer_seq = 0;
    let mut notices: Vec<Notice> = Vec::new();
    for line in script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        out.push(format!("> {line}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let (event, show_reply) = match words[0] {
            "submit" => {
                // `key=<k>`: the submit's Idempotency-Key.
                let key = words.iter().find_map(|word| word.strip_prefix("key="));
                let rest: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|word| !word.starts_with("key="))
                    .collect();
                (
                    api(ApiRequest::Submit {
                        spec: spec(&rest),
                        idempotency_key: key.map(str::to_string),
                    }),
                    true,
                )
            }
            "kill" => (
                api(ApiRequest::Kill {
                    id_prefix: words[1].to_string(),
                }),
                true,
            ),
            "reshuffle" => (
                api(ApiRequest::Reshuffle {
                    dry_run: words.get(1) == Some(&"dry"),
                }),
                true,
            ),
            "tasks" => (
                api(ApiRequest::ListTasks(TaskQuery {
                    state: StateFilter::Active,
                    ..TaskQuery::default()
                })),
                true,
            ),
            "show" => {
                let id = state
                    .ended
                    .iter()
                    .map(|ended| &ended.view.internal_id)
                    .chain(state.tasks.keys())
                    .find(|id| id.0.starts_with(words[1]))
                    .map_or_else(|| words[1].to_string(), |id| id.0.to_string());
                (api(ApiRequest::ShowTask { id }), true)
            }
            "events" => {
                out.extend(std::mem::take(&mut notices).iter().map(render_notice));
                continue;
            }
            "all" => (api(ApiRequest::ListTasks(TaskQuery::default())), true),
            "list" => (api(ApiRequest::ListTasks(query(&words[1..]))), true),
            "nodes" => (api(ApiRequest::ListNodes), true),
            "intel" => {
                let raw = words.get(3).copied().unwrap_or("").to_string();
                (
                    api(ApiRequest::SetIntelligence {
                        task: words[1].to_string(),
                        attribute: words[2].to_string(),
                        raw,
                        source: Source::Rest,
                    }),
                    true,
                )
            }
            "sync" => {
                let raw = words.get(3).map(|it| it.to_string()).filter(|it| it != "-");
                (
                    api(ApiRequest::SyncIntelligence(vec![IntelligenceChange {
                        task: words[1].to_string(),
                        attribute: words[2].to_string(),
                        raw,
                    }])),
                    true,
                )
            }
            "intelligence" => (api(ApiRequest::ListIntelligence), true),
            "subscribed" => (
                Event::Mesos(MesosEvent::Subscribed {
                    framework_id: FrameworkId("fw".to_string()),
                }),
                false,
            ),
            "disconnected" => (
                Event::Mesos(MesosEvent::Disconnected {
                    reason: "test".to_string(),
                }),
                false,
            ),
            "removed" => (Event::Mesos(MesosEvent::FrameworkRemoved), false),
            "lost" => (
                Event::Mesos(MesosEvent::AgentLost(AgentId(words[1].into()))),
                false,
            ),
            "offer" => {
                let offers = words[1..]
                    .iter()
                    .map(|agent| {
                        offer_seq += 1;
                        lab_offer(agent, offer_seq)
                    })
                    .collect();
                (Event::Mesos(MesosEvent::Offers(offers)), false)
            }
            "update" => (
                Event::Mesos(MesosEvent::Update(update(&state, &words[1..]))),
                false,
            ),
            "refused" => {
                let call = match words[1] {
                    "suppress" => Call::Suppress,
                    "revive" => Call::Revive,
                    _ => Call::Kill {
                        task_id: find(&state, words[2]),
                        agent_id: None,
                    },
                };
                (
                    Event::Mesos(MesosEvent::CallFailed {
                        call,
                        failure: CallFailure::Refused("400".to_string()),
                    }),
                    false,
                )
            }
            "launch-failed" => {
                let task_id = find(&state, words[1]);
                let failure = if words.get(2) == Some(&"refused") {
                    CallFailure::Refused("Offer o is no longer valid".to_string())
                } else {
                    CallFailure::OutcomeUnknown("timeout".to_string())
                };
                let call = Call::Launch {
                    agent_id: AgentId("slave2".into()),
                    offer_ids: vec![OfferId("o".to_string())],
                    tasks: vec![Launch {
                        task_id: task_id.clone(),
                        spec: state.tasks[&task_id].spec.clone(),
                        resources: Vec::new(),
                    }],
                    refuse_seconds: 5.0,
                };
                (
                    Event::Mesos(MesosEvent::CallFailed { call, failure }),
                    false,
                )
            }
            "tick" => {
                let step = Duration::from_secs(words[1].parse().unwrap());
                now.instant += step;
                now.wall += step;
                (Event::Tick, false)
            }
            "grace" => {
                // --unknown-grace, in seconds; then a tick at the same time.
                state.set_unknown_grace(Duration::from_secs(words[1].parse().unwrap()));
                (Event::Tick, false)
            }
            "restart" => {
                // A new process: the state is what the journal rebuilds.
                state = State::restore(&journal).expect("the journal restores");
                (Event::Tick, false)
            }
            "wall" => {
                // Only the wall clock steps (NTP, an operator): then a tick.
                let seconds: i64 = words[1].parse().unwrap();
                let step = Duration::from_secs(seconds.unsigned_abs());
                if seconds < 0 {
                    now.wall -= step;
                } else {
                    now.wall += step;
                }
                (Event::Tick, false)
            }
            other => panic!("unknown step {other}"),
        };
        let request_id = match &event {
            Event::Api(id, _) => Some(*id),
            _ => None,
        };
        let mut turn = state.handle_event(event, now);
        notices.append(&mut turn.notices);
        journal.extend(turn.records);
        for call in &turn.calls {
            out.push(render_call(call));
        }
        // A request is answered in its own turn, under its id, exactly once.
        assert_eq!(
            turn.replies.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            request_id.into_iter().collect::<Vec<_>>(),
            "replies of `{line}`"
        );
        let reply = turn.replies.pop().map(|(_, reply)| reply);
        // Everything durable survives a restart: the journal so far rebuilds it.
        let restored = State::restore(&journal).expect("the journal restores");
        assert_eq!(
            restored.all_records(),
            state.all_records(),
            "durable state after `{line}`"
        );
        // Every index equals what recomputing it from the table gives.
        if let Err(why) = state.check_indexes() {
            panic!("indexes after `{line}`: {why}");
        }
        // The list kept from the last step still shows what it would now.
        if let Err(why) = state.check_list_memo() {
            panic!("list after `{line}`: {why}");
        }
        // Every live task gets a list entry now, so the next step's check
        // finds any entry a change forgot to drop.
        state.task_list(&TaskQuery::default());
        if let (true, Some(reply)) = (show_reply, reply) {
            out.extend(render_reply(reply));
        }
    }
    out.iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reconciliation answers that confirm what a task shows (the same state,
/// with or without a message, with the container it has) and ones that
/// bring news, between ordinary updates and across a restart. A confirming
/// answer counts up its history entry and makes no call and no notice; the
/// journal restores what the state holds after every step
/// (`an_answer_that_confirms_the_known_state_writes_nothing` checks that
/// nothing is written or listed anew). The expected text is what the
/// general path printed when a separate short path for confirming answers
/// stood beside it and was checked against it.
#[test]
fn confirming_reconciliation_answers_only_count_in_the_history() {
    check(
        "
        submit web mem=100
        submit db mem=100
        offer slave2 slave3
        update web TASK_STARTING ack
        update web TASK_RUNNING ack
        update db TASK_STARTING ack
        update db TASK_RUNNING reconcile
        update web TASK_RUNNING reconcile
        update web TASK_RUNNING reconcile message=still_there
        update web TASK_RUNNING ack message=moved_on
        update web TASK_RUNNING reconcile docker
        update web TASK_RUNNING reconcile docker
        update web TASK_STARTING reconcile
        update web TASK_RUNNING reconcile
        update db TASK_UNKNOWN reconcile
        update db TASK_RUNNING reconcile
        update db TASK_RUNNING reconcile
        update web TASK_KILLING reconcile
        update web TASK_KILLING reconcile
        show web
        show db
        events
        restart
        update web TASK_KILLING reconcile
        update db TASK_RUNNING reconcile
        all
        show db
        ",
        "
        > submit web mem=100
          = submitted web
        > submit db mem=100
          = submitted db
        > offer slave2 slave3
          LAUNCH on slave2: web-1000000000000
          LAUNCH on slave3: db-1000000000001
        > update web TASK_STARTING ack
          ACK web-1000000000000
        > update web TASK_RUNNING ack
          ACK web-1000000000000
        > update db TASK_STARTING ack
          ACK db-1000000000001
        > update db TASK_RUNNING reconcile
        > update web TASK_RUNNING reconcile
        > update web TASK_RUNNING reconcile message=still_there
        > update web TASK_RUNNING ack message=moved_on
          ACK web-1000000000000
        > update web TASK_RUNNING reconcile docker
        > update web TASK_RUNNING reconcile docker
        > update web TASK_STARTING reconcile
        > update web TASK_RUNNING reconcile
        > update db TASK_UNKNOWN reconcile
        > update db TASK_RUNNING reconcile
        > update db TASK_RUNNING reconcile
        > update web TASK_KILLING reconcile
        > update web TASK_KILLING reconcile
        > show web
          = task web-1000000000000 TASK_KILLING
          | t=1000 submitted: submitted
          | t=1000 placement: 2 offers, 1 examined: placed on slave2, most free mem
          | t=1000 launched: launch sent to slave2
          | t=1000 status: TASK_STARTING
          | t=1000 status: TASK_RUNNING
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION)
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION): still there
          | t=1000 status: TASK_RUNNING: moved on
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION) (×2 since 1970-01-01T00:16:40Z)
          | t=1000 status: TASK_STARTING (REASON_RECONCILIATION)
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION)
          | t=1000 status: TASK_KILLING (REASON_RECONCILIATION) (×2 since 1970-01-01T00:16:40Z)
        > show db
          = task db-1000000000001 TASK_RUNNING
          | t=1000 submitted: submitted
          | t=1000 placement: 2 offers, 1 examined: placed on slave3, most free mem
          | t=1000 launched: launch sent to slave3
          | t=1000 status: TASK_STARTING
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION)
          | t=1000 status: TASK_UNKNOWN (REASON_RECONCILIATION)
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION) (×2 since 1970-01-01T00:16:40Z)
        > events
          ~ t=1000 task_submitted web-1000000000000 id=web
          ~ t=1000 task_submitted db-1000000000001 id=db
          ~ t=1000 node_joined slave2 slave2
          ~ t=1000 node_joined slave3 slave3
          ~ t=1000 task_placed web-1000000000000 on slave2: 2 offers, 1 examined: placed on slave2, most free mem
          ~ t=1000 task_launched web-1000000000000 on slave2
          ~ t=1000 task_placed db-1000000000001 on slave3: 2 offers, 1 examined: placed on slave3, most free mem
          ~ t=1000 task_launched db-1000000000001 on slave3
          ~ t=1000 task_status web-1000000000000 TASK_STARTING reason=- message=- node=slave2
          ~ t=1000 task_status web-1000000000000 TASK_RUNNING reason=- message=- node=slave2
          ~ t=1000 task_status db-1000000000001 TASK_STARTING reason=- message=- node=slave3
          ~ t=1000 task_status db-1000000000001 TASK_RUNNING reason=REASON_RECONCILIATION message=- node=slave3
          ~ t=1000 task_status web-1000000000000 TASK_STARTING reason=REASON_RECONCILIATION message=- node=slave2
          ~ t=1000 task_status web-1000000000000 TASK_RUNNING reason=REASON_RECONCILIATION message=- node=slave2
          ~ t=1000 task_status db-1000000000001 TASK_UNKNOWN reason=REASON_RECONCILIATION message=- node=slave3
          ~ t=1000 task_status db-1000000000001 TASK_RUNNING reason=REASON_RECONCILIATION message=- node=slave3
          ~ t=1000 task_status web-1000000000000 TASK_KILLING reason=REASON_RECONCILIATION message=- node=slave2
        > restart
        > update web TASK_KILLING reconcile
        > update db TASK_RUNNING reconcile
        > all
          = db-1000000000001 TASK_RUNNING slave3
          = web-1000000000000 TASK_KILLING slave2 docker=abc/mesos-x/42
        > show db
          = task db-1000000000001 TASK_RUNNING
          | t=1000 status: TASK_RUNNING (REASON_RECONCILIATION)
        ",
    );
}

/// The query of a `list` step.
fn query(words: &[&str]) -> TaskQuery {
    let mut query = TaskQuery::default();
    for (key, value) in words.iter().filter_map(|word| word.split_once('=')) {
        match key {
            "state" => {
                query.state = match value {
                    "all" => StateFilter::All,
                    "active" => StateFilter::Active,
                    "pending" => StateFilter::Pending,
                    "launching" => StateFilter::Launching,
                    name => StateFilter::Mesos(
                        TaskState::ALL
                            .into_iter()
                            .find(|state| state.as_str() == name)
                            .expect("a Mesos state"),
                    ),
                }
            }
            "prefix" => query.prefix = Some(value.replace('_', " ")),
            "limit" => query.limit = Some(value.parse().unwrap()),
            other => panic!("unknown list filter {other}"),
        }
    }
    query
}

/// A notice as a test line: its kind and its main fields.
fn render_notice(notice: &Notice) -> String {
    use crate::scheduler::notice::NoticeKind as Kind;
    let at = notice.time_ms / 1000;
    let what = match &notice.kind {
        Kind::TaskSubmitted { task, id } => format!("{} id={id}", task.0),
        Kind::TaskPlaced {
            task, node, why, ..
        } => format!("{} on {node}: {why}", task.0),
        Kind::TaskLaunched { task, node, .. } => format!("{} on {node}", task.0),
        Kind::TaskStatus {
            task,
            state,
            reason,
            message,
            node,
            ..
        } => format!(
            "{} {} reason={} message={} node={}",
            task.0,
            state.as_str(),
            reason.as_deref().unwrap_or("-"),
            message.as_deref().unwrap_or("-"),
            node.as_deref().unwrap_or("-")
        ),
        Kind::TaskKilled { task, by, .. } => format!("{} by={}", task.0, by.as_str()),
        Kind::TaskMoved {
            task,
            replacement,
            from,
            to,
            ..
        } => format!(
            "{} -> {} from={} to={}",
            task.0,
            replacement.0,
            from.as_deref().unwrap_or("-"),
            to.as_deref().unwrap_or("-")
        ),
        Kind::TaskRestarted {
            task,
            replacement,
            restarts,
            delay_seconds,
            ..
        } => format!(
            "{} -> {} restarts={restarts} delay={delay_seconds}",
            task.0, replacement.0
        ),
        Kind::NodeJoined { agent_id, node } => format!("{} {node}", agent_id.0),
        Kind::NodeLost { agent_id, node } => {
            format!("{} {}", agent_id.0, node.as_deref().unwrap_or("-"))
        }
        Kind::Subscribed { framework_id } => framework_id.0.clone(),
        Kind::Disconnected { reason } => reason.clone(),
        Kind::IntelligenceChanged {
            task,
            attribute,
            value,
            source,
        } => format!(
            "{task}/{attribute}={} source={source}",
            value.as_deref().unwrap_or("-")
        ),
    };
    format!("  ~ t={at} {} {what}", notice.kind.name())
}

/// An API event (`run` would number them; one at a time, 7 does).
fn api(request: ApiRequest) -> Event {
    Event::Api(RequestId(7), request)
}

fn spec(words: &[&str]) -> TaskSpec {
    let fields: BTreeMap<&str, &str> = words[1..]
        .iter()
        .map(|word| word.split_once('=').unwrap_or((word, "")))
        .collect();
    let get = |key: &str| fields.get(key).copied().unwrap_or("");
    TaskSpec {
        // `_` stands for a space: user ids may have them, internal ids drop them.
        id: words[0].replace('_', " "),
        docker_image: "image".to_string(),
        mem_mb: get("mem").parse().unwrap(),
        cpus: fields.get("cpus").map(|it| it.parse().unwrap()),
        sla: match get("sla") {
            "singleton" => Sla::Singleton,
            "one-per-node" => Sla::OnePerNode,
            _ => Sla::None,
        },
        node_type: get("type").to_string(),
        node_name: get("name").to_string(),
        not_metered: false,
        reshuffleable: fields.contains_key("reshuffle"),
        arguments: Vec::new(),
        volumes: Vec::new(),
        ports: get("ports")
            .split(',')
            .filter(|it| !it.is_empty())
            .map(|port| PortMapping {
                host_port: port.parse().unwrap(),
                container_port: 80,
            })
            .collect(),
        network: NetworkMode::Default,
        restart: RestartPolicy::from_name(get("restart")).unwrap_or_default(),
        privileged: fields.contains_key("privileged"),
    }
}

fn lab_offer(agent: &str, seq: usize) -> Offer {
    let (node_type, cpus, mem_mb) = if agent == "slave1" {
        ("analytics", 3.0, 2048.0)
    } else {
        ("lab", 2.0, 1024.0)
    };
    Offer::unreserved(
        OfferId(format!("o{seq}")),
        AgentId(agent.into()),
        agent.to_string(),
        cpus,
        mem_mb,
        vec![(31000, 32000)],
        [
            ("nodetype".to_string(), node_type.to_string()),
            ("nodename".to_string(), agent.to_string()),
        ]
        .into_iter()
        .collect(),
    )
}

fn find(state: &State, prefix: &str) -> TaskId {
    state
        .tasks
        .keys()
        .find(|id| id.0.starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| TaskId(prefix.into()))
}

fn update(state: &State, words: &[&str]) -> TaskUpdate {
    let task_id = find(state, words[0]);
    let flags = &words[2..];
    let task_state = TaskState::ALL
        .into_iter()
        .find(|it| it.as_str() == words[1])
        .expect("known state");
    TaskUpdate {
        agent_id: state
            .tasks
            .get(&task_id)
            .and_then(|task| task.agent_id.clone())
            .or(Some(AgentId("slave9".into()))),
        task_id,
        state: task_state,
        reason: if flags.contains(&"invalid") {
            StatusReason::InvalidOffers
        } else if flags.contains(&"reconcile") {
            StatusReason::Reconciliation
        } else {
            StatusReason::Other
        },
        reason_name: if flags.contains(&"invalid") {
            "REASON_INVALID_OFFERS".to_string()
        } else if flags.contains(&"reconcile") {
            "REASON_RECONCILIATION".to_string()
        } else {
            flags
                .iter()
                .find_map(|flag| flag.strip_prefix("reason="))
                .unwrap_or("")
                .to_string()
        },
        message: if flags.contains(&"invalid") {
            "Task launched with invalid offers: Offer o1 is no longer valid".to_string()
        } else {
            flags
                .iter()
                .find_map(|flag| flag.strip_prefix("message="))
                .unwrap_or("")
                .replace('_', " ")
        },
        uuid: flags.contains(&"ack").then(|| vec![7; 16]),
        docker: flags
            .contains(&"docker")
            .then(|| DockerInfo::new("abc", "mesos-x", 42)),
    }
}

fn render_call(call: &Call) -> String {
    let ids = |tasks: &[TaskId]| tasks.iter().map(|it| &*it.0).collect::<Vec<_>>().join(" ");
    match call {
        Call::Launch {
            agent_id, tasks, ..
        } => {
            format!(
                "  LAUNCH on {}: {}",
                agent_id.0,
                ids(&tasks
                    .iter()
                    .map(|it| it.task_id.clone())
                    .collect::<Vec<_>>())
            )
        }
        Call::Decline {
            offer_ids,
            refuse_seconds,
        } => {
            format!(
                "  DECLINE {} refuse={refuse_seconds}",
                offer_ids
                    .iter()
                    .map(|it| it.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        Call::Kill { task_id, .. } => format!("  KILL {}", task_id.0),
        Call::Acknowledge { task_id, .. } => format!("  ACK {}", task_id.0),
        Call::Reconcile(tasks) if tasks.is_empty() => "  RECONCILE all".to_string(),
        Call::Reconcile(tasks) => format!(
            "  RECONCILE {}",
            ids(&tasks.iter().map(|it| it.0.clone()).collect::<Vec<_>>())
        ),
        Call::Suppress => "  SUPPRESS".to_string(),
        Call::Revive => "  REVIVE".to_string(),
        Call::Teardown => "  TEARDOWN".to_string(),
    }
}

fn render_reply(reply: ApiReply) -> Vec<String> {
    let task_line = |view: &TaskView| {
        let mut line = format!(
            "  = {} {} {}",
            view.internal_id.0,
            view.state,
            view.hostname.as_deref().unwrap_or("-")
        );
        if view.spec.mem_mb != view.requested.mem_mb {
            line.push_str(&format!(
                " mem={} (asked {})",
                view.spec.mem_mb, view.requested.mem_mb
            ));
        }
        if !view.spec.node_name.is_empty() && view.spec.sla == Sla::OnePerNode {
            line.push_str(&format!(" nodename={}", view.spec.node_name));
        }
        if !view.docker.id().is_empty() {
            line.push_str(&format!(
                " docker={}/{}/{}",
                view.docker.id(),
                view.docker.name(),
                view.docker.pid
            ));
        }
        for (attribute, value) in &view.intelligence {
            line.push_str(&format!(" [{attribute}={value}]"));
        }
        if view.restarts > 0 {
            line.push_str(&format!(" restarts={}", view.restarts));
        }
        if view.crash_looping {
            line.push_str(" crash-looping");
        }
        if view.spec.privileged {
            line.push_str(" privileged");
        }
        if let Some(reason) = &view.pending_reason {
            line.push_str(&format!(" ({reason})"));
        }
        if let Some(at) = view.ended_at {
            line.push_str(&format!(" ended_at={at}"));
        }
        if let Some(reason) = &view.reason {
            line.push_str(&format!(" reason={reason}"));
        }
        if view.ended_at.is_some() && !view.status_message.is_empty() {
            line.push_str(&format!(" message={:?}", view.status_message));
        }
        line
    };
    match reply {
        ApiReply::Submitted { id, note: None } => vec![format!("  = submitted {id}")],
        ApiReply::Submitted {
            id,
            note: Some(note),
        } => vec![format!("  = submitted {id} ({note})")],
        ApiReply::Tasks { tasks: listed, .. } => listed
            .iter()
            .map(|entry| task_line(&entry.view().expect("not rendered")))
            .collect(),
        ApiReply::Killed(views) => views
            .iter()
            .map(|view| format!("  = killing {}", view.internal_id.0))
            .collect(),
        ApiReply::Reshuffled(steps) => steps
            .iter()
            .map(|step| {
                let changes: Vec<String> = step
                    .changes
                    .iter()
                    .map(|(attribute, value)| format!("{attribute}={value}"))
                    .collect();
                format!(
                    "  = reshuffle {} from {} to {} {}",
                    step.internal_id.0,
                    step.from_host.as_deref().unwrap_or("-"),
                    step.to_host.as_deref().unwrap_or("-"),
                    changes.join(" ")
                )
                .trim_end()
                .to_string()
            })
            .collect(),
        ApiReply::Nodes(nodes) => nodes
            .iter()
            .map(|node| {
                format!(
                    "  = node {} {} type={} name={}",
                    node.agent_id.0, node.hostname, node.node_type, node.node_name
                )
            })
            .collect(),
        ApiReply::NotFound(message) => vec![format!("  = not found: {message}")],
        ApiReply::Invalid(message) => vec![format!("  = invalid: {message}")],
        ApiReply::Conflict(message) => vec![format!("  = conflict: {message}")],
        ApiReply::IntelligenceChanged => vec!["  = intelligence changed".to_string()],
        ApiReply::ResetDone { killed } => vec![format!("  = reset, {killed} killed")],
        ApiReply::OutcomeUnknown => vec!["  = outcome unknown".to_string()],
        ApiReply::TaskCounts(counts) => counts
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(state, count)| format!("  = {state}: {count}"))
            .collect(),
        ApiReply::Task(view, history) => {
            std::iter::once(format!("  = task {} {}", view.internal_id.0, view.state))
                .chain(history.iter().map(|line| {
                    format!("  | t={} {}: {}", line.time_ms / 1000, line.kind, line.text)
                }))
                .collect()
        }
        ApiReply::Subscribed(_) => vec!["  = subscribed".to_string()],
        ApiReply::Unavailable(message) => vec![format!("  = unavailable: {message}")],
        ApiReply::Intelligence(table) => table
            .iter()
            .flat_map(|(task, entries)| {
                entries.iter().map(move |(attribute, entry)| {
                    format!(
                        "  = {task}/{attribute} raw={} derived={} source={}",
                        entry.raw,
                        entry.derived.display(),
                        entry.source.as_str()
                    )
                })
            })
            .collect(),
        ApiReply::Synced { rejected } => rejected
            .iter()
            .map(|(change, reason)| {
                format!(
                    "  = rejected {}/{}: {reason}",
                    change.task, change.attribute
                )
            })
            .collect(),
        ApiReply::Snapshot(snapshot) => vec![format!(
            "  = snapshot nodes={} tasks={}",
            snapshot.nodes.len(),
            snapshot.tasks.len()
        )],
    }
}

#[test]
fn submit_place_run_and_finish() {
    check(
        "
        subscribed
        submit stress60 mem=100 type=lab
        offer slave1 slave2 slave3
        update stress60 TASK_STARTING ack
        update stress60 TASK_RUNNING ack docker
        tasks
        update stress60 TASK_FINISHED ack
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit stress60 mem=100 type=lab
          = submitted stress60
        > offer slave1 slave2 slave3
          LAUNCH on slave2: stress60-1000000000000
          DECLINE o1 o3 refuse=120
          SUPPRESS
        > update stress60 TASK_STARTING ack
          ACK stress60-1000000000000
        > update stress60 TASK_RUNNING ack docker
          ACK stress60-1000000000000
        > tasks
          = stress60-1000000000000 TASK_RUNNING slave2 docker=abc/mesos-x/42
        > update stress60 TASK_FINISHED ack
          ACK stress60-1000000000000
        > tasks
        ",
    );
}

#[test]
fn the_task_list_filters_by_state_and_prefix_and_stops_at_the_limit() {
    check(
        "
        subscribed
        submit web mem=10 type=lab
        submit db mem=10 type=lab
        submit big mem=99999
        submit svc mem=10 sla=one-per-node type=none
        submit my_web mem=10 type=analytics
        offer slave2
        update web TASK_RUNNING ack
        update db TASK_FAILED ack
        list state=pending
        list state=launching
        list state=TASK_RUNNING
        list state=TASK_FAILED
        list state=active limit=2
        list limit=1
        list prefix=my
        list prefix=my_
        list prefix=w
        list prefix=d
        list prefix=s state=pending
        list prefix=zz
        list state=TASK_KILLED
        ",
        "
        > subscribed
          RECONCILE all
        > submit web mem=10 type=lab
          = submitted web
        > submit db mem=10 type=lab
          = submitted db
        > submit big mem=99999
          = submitted big
        > submit svc mem=10 sla=one-per-node type=none
          = submitted svc
        > submit my_web mem=10 type=analytics
          = submitted my web
        > offer slave2
          LAUNCH on slave2: web-1000000000000 db-1000000000001
        > update web TASK_RUNNING ack
          ACK web-1000000000000
        > update db TASK_FAILED ack
          ACK db-1000000000001
        > list state=pending
          = big-1000000000002 pending - (needs mem 99999, slave2 offered 1004)
          = myweb-1000000000003 pending - (no known node has nodetype=analytics (slave2 has nodetype=lab))
          = svc pending - (one-per-node: no known node has nodetype=none (slave2 has nodetype=lab nodename=slave2))
        > list state=launching
        > list state=TASK_RUNNING
          = web-1000000000000 TASK_RUNNING slave2
        > list state=TASK_FAILED
          = db-1000000000001 TASK_FAILED slave2 ended_at=1000
        > list state=active limit=2
          = big-1000000000002 pending - (needs mem 99999, slave2 offered 1004)
          = myweb-1000000000003 pending - (no known node has nodetype=analytics (slave2 has nodetype=lab))
        > list limit=1
          = big-1000000000002 pending - (needs mem 99999, slave2 offered 1004)
        > list prefix=my
          = myweb-1000000000003 pending - (no known node has nodetype=analytics (slave2 has nodetype=lab))
        > list prefix=my_
          = myweb-1000000000003 pending - (no known node has nodetype=analytics (slave2 has nodetype=lab))
        > list prefix=w
          = web-1000000000000 TASK_RUNNING slave2
        > list prefix=d
          = db-1000000000001 TASK_FAILED slave2 ended_at=1000
        > list prefix=s state=pending
          = svc pending - (one-per-node: no known node has nodetype=none (slave2 has nodetype=lab nodename=slave2))
        > list prefix=zz
        > list state=TASK_KILLED
        ",
    );
}

#[test]
fn invalid_offers_put_the_task_back_to_pending_without_ack() {
    check(
        "
        subscribed
        submit web mem=10
        offer slave2
        update web TASK_DROPPED invalid
        tasks
        offer slave3
        ",
        "
        > subscribed
          RECONCILE all
        > submit web mem=10
          = submitted web
        > offer slave2
          LAUNCH on slave2: web-1000000000000
          SUPPRESS
        > update web TASK_DROPPED invalid
          REVIVE
        > tasks
          = web-1000000000001 pending - (relaunching after TASK_DROPPED: Task launched with invalid offers: Offer o1 is no longer valid)
        > offer slave3
          LAUNCH on slave3: web-1000000000001
          SUPPRESS
        ",
    );
}

#[test]
fn singleton_keeps_one_instance_and_one_per_node_covers_late_nodes() {
    check(
        "
        subscribed
        submit influxdb mem=100 cpus=1 type=analytics sla=singleton ports=31400,31410
        submit influxdb mem=100 cpus=1 type=analytics sla=singleton
        submit cadvisor mem=50 sla=one-per-node ports=31500
        tasks
        offer slave1 slave2
        offer slave3
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit influxdb mem=100 cpus=1 type=analytics sla=singleton ports=31400,31410
          = submitted influxdb
        > submit influxdb mem=100 cpus=1 type=analytics sla=singleton
          = submitted influxdb (already submitted, pending)
        > submit cadvisor mem=50 sla=one-per-node ports=31500
          = submitted cadvisor
        > tasks
          = influxdb-1000000000000 pending - (waiting for offers)
          = cadvisor pending - (one-per-node: no node has offered yet)
        > offer slave1 slave2
          LAUNCH on slave1: influxdb-1000000000000 cadvisor-1000000000001
          LAUNCH on slave2: cadvisor-1000000000002
        > offer slave3
          LAUNCH on slave3: cadvisor-1000000000003
        > tasks
          = cadvisor-1000000000001 launching slave1 nodename=slave1
          = cadvisor-1000000000002 launching slave2 nodename=slave2
          = cadvisor-1000000000003 launching slave3 nodename=slave3
          = influxdb-1000000000000 launching slave1
        ",
    );
}

#[test]
fn kill_by_prefix_drops_pending_and_kills_launched() {
    check(
        "
        subscribed
        submit stress60 mem=100 type=lab
        offer slave2
        submit stress80 mem=5000
        kill stress
        tasks
        kill nothing
        update stress60 TASK_KILLED ack
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit stress60 mem=100 type=lab
          = submitted stress60
        > offer slave2
          LAUNCH on slave2: stress60-1000000000000
          SUPPRESS
        > submit stress80 mem=5000
          REVIVE
          = submitted stress80
        > kill stress
          KILL stress60-1000000000000
          SUPPRESS
          = killing stress60-1000000000000
          = killing stress80-1000000000001
        > tasks
          = stress60-1000000000000 launching slave2
        > kill nothing
          = not found: no task id starts with nothing
        > update stress60 TASK_KILLED ack
          ACK stress60-1000000000000
        > tasks
        ",
    );
}

#[test]
fn reshuffle_replaces_a_singleton_only_after_the_old_one_is_gone() {
    check(
        "
        subscribed
        submit sim mem=100 type=lab sla=singleton reshuffle
        offer slave2
        update sim TASK_RUNNING ack
        reshuffle dry
        reshuffle
        offer slave3
        update sim-1000000000000 TASK_KILLED ack
        offer slave3
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit sim mem=100 type=lab sla=singleton reshuffle
          = submitted sim
        > offer slave2
          LAUNCH on slave2: sim-1000000000000
          SUPPRESS
        > update sim TASK_RUNNING ack
          ACK sim-1000000000000
        > reshuffle dry
          = reshuffle sim-1000000000000 from slave2 to -
        > reshuffle
          KILL sim-1000000000000
          REVIVE
          = reshuffle sim-1000000000000 from slave2 to -
        > offer slave3
          DECLINE o2 refuse=5
        > update sim-1000000000000 TASK_KILLED ack
          ACK sim-1000000000000
        > offer slave3
          LAUNCH on slave3: sim-1000000000001
          SUPPRESS
        > tasks
          = sim-1000000000001 launching slave3
        ",
    );
}

#[test]
fn unknown_updates_are_acknowledged_and_master_updates_are_not() {
    check(
        "
        update ghost TASK_RUNNING ack
        update ghost TASK_LOST reconcile
        ",
        "
        > update ghost TASK_RUNNING ack
          ACK ghost
        > update ghost TASK_LOST reconcile
        ",
    );
}

#[test]
fn resubscription_reconciles_launched_tasks_and_resends_kills() {
    check(
        "
        subscribed
        submit a mem=10
        submit b mem=10
        offer slave2
        kill b
        disconnected
        subscribed
        update a TASK_LOST reconcile
        tick 31
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10
          = submitted a
        > submit b mem=10
          = submitted b
        > offer slave2
          LAUNCH on slave2: a-1000000000000 b-1000000000001
          SUPPRESS
        > kill b
          KILL b-1000000000001
          = killing b-1000000000001
        > disconnected
        > subscribed
          RECONCILE a-1000000000000 b-1000000000001
          RECONCILE all
          KILL b-1000000000001
        > update a TASK_LOST reconcile
          REVIVE
        > tick 31
          RECONCILE b-1000000000001
          KILL b-1000000000001
        ",
    );
}

#[test]
fn a_launch_with_an_unknown_outcome_is_reconciled_and_a_refused_one_goes_back_to_pending() {
    check(
        "
        subscribed
        submit a mem=10
        submit b mem=10
        submit c mem=10
        submit d mem=10
        offer slave2
        kill d
        launch-failed d refused
        launch-failed a
        launch-failed b
        launch-failed c refused
        update a TASK_RUNNING reconcile
        update b TASK_LOST reconcile
        tasks
        offer slave3
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10
          = submitted a
        > submit b mem=10
          = submitted b
        > submit c mem=10
          = submitted c
        > submit d mem=10
          = submitted d
        > offer slave2
          LAUNCH on slave2: a-1000000000000 b-1000000000001 c-1000000000002 d-1000000000003
          SUPPRESS
        > kill d
          KILL d-1000000000003
          = killing d-1000000000003
        > launch-failed d refused
          DECLINE o refuse=5
        > launch-failed a
          RECONCILE a-1000000000000
          DECLINE o refuse=5
        > launch-failed b
          RECONCILE b-1000000000001
          DECLINE o refuse=5
        > launch-failed c refused
          DECLINE o refuse=5
          REVIVE
        > update a TASK_RUNNING reconcile
        > update b TASK_LOST reconcile
        > tasks
          = a-1000000000000 TASK_RUNNING slave2
          = b-1000000000005 pending - (relaunching after TASK_LOST: )
          = c-1000000000004 pending - (relaunching after launch refused: Offer o is no longer valid)
        > offer slave3
          LAUNCH on slave3: b-1000000000005 c-1000000000004
          SUPPRESS
        ",
    );
}

#[test]
fn a_refused_suppress_or_revive_is_decided_again_after_a_pause() {
    check(
        "
        subscribed
        offer slave2
        refused suppress
        tick 1
        tick 5
        submit a mem=10
        refused revive
        tick 5
        ",
        "
        > subscribed
          RECONCILE all
        > offer slave2
          DECLINE o1 refuse=120
          SUPPRESS
        > refused suppress
        > tick 1
        > tick 5
          SUPPRESS
        > submit a mem=10
          REVIVE
          = submitted a
        > refused revive
        > tick 5
          REVIVE
        ",
    );
}

#[test]
fn node_registry_learns_from_offers_and_forgets_lost_agents() {
    check(
        "
        offer slave1 slave2
        lost slave2
        nodes
        ",
        "
        > offer slave1 slave2
          DECLINE o1 o2 refuse=120
        > lost slave2
        > nodes
          = node slave1 slave1 type=analytics name=slave1
        ",
    );
}

#[test]
fn a_removed_framework_brings_its_tasks_back_to_pending() {
    check(
        "
        subscribed
        submit a mem=10
        offer slave2
        update a TASK_RUNNING ack docker
        removed
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10
          = submitted a
        > offer slave2
          LAUNCH on slave2: a-1000000000000
          SUPPRESS
        > update a TASK_RUNNING ack docker
          ACK a-1000000000000
        > removed
        > tasks
          = a-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
        ",
    );
}

#[test]
fn ids_stay_unique_within_one_nanosecond() {
    let mut state = State::new(None);
    let now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(5),
    };
    let a = state.add_task(spec(&["x y", "mem=1"]), None, None, now);
    let b = state.add_task(spec(&["x y", "mem=1"]), None, None, now);
    assert_eq!((&*a.0, &*b.0), ("xy-5000000000", "xy-5000000001"));
}

#[test]
fn intelligence_changes_mem_node_and_sla_of_a_resubmitted_task() {
    check(
        "
        subscribed
        intel lookbusy200 mem 209924096
        intel lookbusy200 nodename slave3
        intel lookbusy200 sla singleton
        submit lookbusy200 mem=300 type=lab
        submit lookbusy200 mem=300 type=lab
        offer slave1 slave2 slave3
        tasks
        intelligence
        ",
        "
        > subscribed
          RECONCILE all
        > intel lookbusy200 mem 209924096
          = intelligence changed
        > intel lookbusy200 nodename slave3
          = intelligence changed
        > intel lookbusy200 sla singleton
          = intelligence changed
        > submit lookbusy200 mem=300 type=lab
          = submitted lookbusy200
        > submit lookbusy200 mem=300 type=lab
          = submitted lookbusy200 (already submitted, pending)
        > offer slave1 slave2 slave3
          LAUNCH on slave3: lookbusy200-1000000000000
          DECLINE o1 o2 refuse=120
          SUPPRESS
        > tasks
          = lookbusy200-1000000000000 launching slave3 mem=230 (asked 300) [mem=230] [nodename=slave3] [sla=singleton]
        > intelligence
          = lookbusy200/mem raw=209924096 derived=230 source=rest
          = lookbusy200/nodename raw=slave3 derived=slave3 source=rest
          = lookbusy200/sla raw=singleton derived=singleton source=rest
        ",
    );
}

#[test]
fn reshuffle_moves_a_task_to_the_node_pinned_by_intelligence() {
    check(
        "
        subscribed
        submit stress60 mem=100 type=lab sla=singleton reshuffle
        offer slave2
        update stress60 TASK_RUNNING ack
        sync stress60 nodename slave3
        sync stress60 mem 50000000
        reshuffle dry
        reshuffle
        update stress60-1000000000000 TASK_KILLED ack
        offer slave2 slave3
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit stress60 mem=100 type=lab sla=singleton reshuffle
          = submitted stress60
        > offer slave2
          LAUNCH on slave2: stress60-1000000000000
          SUPPRESS
        > update stress60 TASK_RUNNING ack
          ACK stress60-1000000000000
        > sync stress60 nodename slave3
        > sync stress60 mem 50000000
        > reshuffle dry
          = reshuffle stress60-1000000000000 from slave2 to slave3 mem=56 nodename=slave3
        > reshuffle
          KILL stress60-1000000000000
          REVIVE
          = reshuffle stress60-1000000000000 from slave2 to slave3 mem=56 nodename=slave3
        > update stress60-1000000000000 TASK_KILLED ack
          ACK stress60-1000000000000
        > offer slave2 slave3
          LAUNCH on slave3: stress60-1000000000001
          DECLINE o2 refuse=120
          SUPPRESS
        > tasks
          = stress60-1000000000001 launching slave3 mem=56 (asked 100) [mem=56] [nodename=slave3]
        ",
    );
}

#[test]
fn a_nodename_override_does_not_pin_every_one_per_node_copy() {
    check(
        "
        subscribed
        intel cadvisor nodename slave1
        intel cadvisor mem 60000000
        submit cadvisor mem=50 sla=one-per-node
        offer slave1 slave2
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > intel cadvisor nodename slave1
          = intelligence changed
        > intel cadvisor mem 60000000
          = intelligence changed
        > submit cadvisor mem=50 sla=one-per-node
          = submitted cadvisor
        > offer slave1 slave2
          LAUNCH on slave1: cadvisor-1000000000000
          LAUNCH on slave2: cadvisor-1000000000001
        > tasks
          = cadvisor-1000000000000 launching slave1 mem=66 (asked 50) nodename=slave1 [mem=66]
          = cadvisor-1000000000001 launching slave2 mem=66 (asked 50) nodename=slave2 [mem=66]
        ",
    );
}

#[test]
fn bad_values_are_refused_and_the_learned_value_is_kept() {
    check(
        "
        sync sim mem 209924096
        sync sim mem 2.1E8
        intel sim mem lots
        intel sim colour blue
        intel a:b mem 1
        intelligence
        sync sim mem -
        intelligence
        ",
        r#"
        > sync sim mem 209924096
        > sync sim mem 2.1E8
          = rejected sim/mem: mem must be a whole number of bytes, got "2.1E8"
        > intel sim mem lots
          = invalid: mem must be a whole number of bytes, got "lots"
        > intel sim colour blue
          = invalid: unknown attribute "colour"; known: mem, cpus, nodename, nodetype, sla
        > intel a:b mem 1
          = invalid: task name "a:b" must be non-empty without ':' or '/'
        > intelligence
          = sim/mem raw=209924096 derived=230 source=redis
        > sync sim mem -
        > intelligence
        "#,
    );
}

#[test]
fn offers_keep_coming_until_the_registry_has_seen_the_cluster() {
    check(
        "
        subscribed
        tick 1
        offer slave1 slave2
        disconnected
        subscribed
        offer slave3
        ",
        "
        > subscribed
          RECONCILE all
        > tick 1
        > offer slave1 slave2
          DECLINE o1 o2 refuse=120
          SUPPRESS
        > disconnected
        > subscribed
          RECONCILE all
        > offer slave3
          DECLINE o3 refuse=120
          SUPPRESS
        ",
    );
}

#[test]
fn reconciliation_kills_strangers_and_reruns_tasks_the_master_lost() {
    check(
        "
        subscribed
        submit a mem=10
        submit b mem=10
        offer slave2
        update a TASK_RUNNING ack
        update b TASK_RUNNING ack
        update ghost TASK_RUNNING reconcile
        kill b
        update a TASK_LOST reconcile
        update b TASK_LOST reconcile
        tasks
        tick 601
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10
          = submitted a
        > submit b mem=10
          = submitted b
        > offer slave2
          LAUNCH on slave2: a-1000000000000 b-1000000000001
          SUPPRESS
        > update a TASK_RUNNING ack
          ACK a-1000000000000
        > update b TASK_RUNNING ack
          ACK b-1000000000001
        > update ghost TASK_RUNNING reconcile
          KILL ghost
        > kill b
          KILL b-1000000000001
          = killing b-1000000000001
        > update a TASK_LOST reconcile
          REVIVE
        > update b TASK_LOST reconcile
        > tasks
          = a-1000000000002 pending - (relaunching after TASK_LOST: )
        > tick 601
          RECONCILE all
        ",
    );
}

#[test]
fn restart_policies_bring_tasks_back_with_backoff_until_they_crash_loop() {
    check(
        "
        subscribed
        submit a mem=10 restart=on-failure
        offer slave2
        update a TASK_RUNNING ack
        update a TASK_FAILED ack
        offer slave2
        tasks
        tick 1
        offer slave2
        update a TASK_RUNNING
        update a TASK_LOST
        tick 2
        offer slave3
        update a TASK_RUNNING
        update a TASK_FAILED
        tasks
        tick 4
        offer slave3
        update a TASK_RUNNING
        tick 61
        update a TASK_FAILED
        tasks
        kill a
        submit b mem=10 restart=on-failure
        submit c mem=10 restart=always
        submit d mem=10
        offer slave2
        update b TASK_FINISHED
        update c TASK_FINISHED
        update d TASK_FAILED
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 restart=on-failure
          = submitted a
        > offer slave2
          LAUNCH on slave2: a-1000000000000
          SUPPRESS
        > update a TASK_RUNNING ack
          ACK a-1000000000000
        > update a TASK_FAILED ack
          ACK a-1000000000000
          REVIVE
        > offer slave2
          DECLINE o2 refuse=5
        > tasks
          = a-1000000000001 pending - restarts=1 (restart 1 after TASK_FAILED, not before 1s from now)
        > tick 1
        > offer slave2
          LAUNCH on slave2: a-1000000000001
          SUPPRESS
        > update a TASK_RUNNING
        > update a TASK_LOST
          REVIVE
        > tick 2
        > offer slave3
          LAUNCH on slave3: a-1001000000000
          SUPPRESS
        > update a TASK_RUNNING
        > update a TASK_FAILED
          REVIVE
        > tasks
          = a-1003000000000 pending - restarts=3 crash-looping (restart 3 after TASK_FAILED, not before 4s from now)
        > tick 4
        > offer slave3
          LAUNCH on slave3: a-1003000000000
          SUPPRESS
        > update a TASK_RUNNING
        > tick 61
        > update a TASK_FAILED
          REVIVE
        > tasks
          = a-1068000000000 pending - restarts=1 (restart 1 after TASK_FAILED, not before 1s from now)
        > kill a
          SUPPRESS
          = killing a-1068000000000
        > submit b mem=10 restart=on-failure
          REVIVE
          = submitted b
        > submit c mem=10 restart=always
          = submitted c
        > submit d mem=10
          = submitted d
        > offer slave2
          LAUNCH on slave2: b-1068000000001 c-1068000000002 d-1068000000003
          SUPPRESS
        > update b TASK_FINISHED
        > update c TASK_FINISHED
          REVIVE
        > update d TASK_FAILED
        > tasks
          = c-1068000000004 pending - restarts=1 (restart 1 after TASK_FINISHED, not before 1s from now)
        ",
    );
}

#[test]
fn new_work_revives_past_idle_filters_while_a_service_keeps_offers_coming() {
    check(
        "
        subscribed
        submit mon mem=10 sla=one-per-node
        offer slave1
        offer slave1
        submit a mem=10
        offer slave1
        ",
        "
        > subscribed
          RECONCILE all
        > submit mon mem=10 sla=one-per-node
          = submitted mon
        > offer slave1
          LAUNCH on slave1: mon-1000000000000
        > offer slave1
          DECLINE o2 refuse=120
        > submit a mem=10
          REVIVE
          = submitted a
        > offer slave1
          LAUNCH on slave1: a-1000000000001
        ",
    );
}

#[test]
fn a_task_whose_agent_the_master_does_not_know_is_relaunched_and_its_copy_dropped() {
    // TASK_UNKNOWN for tasks that ran: first the grace, asking again, then
    // (still unknown) the relaunch under a new id, and the copy pinned to
    // the unknown agent goes with it.
    check(
        "
        subscribed
        submit a mem=10 type=lab
        submit mon mem=10 sla=one-per-node name=slave2
        offer slave2
        update a TASK_RUNNING ack
        update mon TASK_RUNNING ack
        disconnected
        subscribed
        update a TASK_UNKNOWN reconcile
        update mon TASK_UNKNOWN reconcile
        tasks
        tick 120
        update a TASK_UNKNOWN reconcile
        update mon TASK_UNKNOWN reconcile
        tasks
        offer slave2
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 type=lab
          = submitted a
        > submit mon mem=10 sla=one-per-node name=slave2
          = submitted mon
        > offer slave2
          LAUNCH on slave2: a-1000000000000 mon-1000000000001
        > update a TASK_RUNNING ack
          ACK a-1000000000000
        > update mon TASK_RUNNING ack
          ACK mon-1000000000001
        > disconnected
        > subscribed
          RECONCILE a-1000000000000 mon-1000000000001
          RECONCILE all
        > update a TASK_UNKNOWN reconcile
        > update mon TASK_UNKNOWN reconcile
        > tasks
          = a-1000000000000 TASK_UNKNOWN slave2
          = mon-1000000000001 TASK_UNKNOWN slave2 nodename=slave2
        > tick 120
          RECONCILE a-1000000000000 mon-1000000000001
        > update a TASK_UNKNOWN reconcile
          REVIVE
        > update mon TASK_UNKNOWN reconcile
        > tasks
          = a-1120000000000 pending - (relaunching after TASK_UNKNOWN: )
          = mon pending - nodename=slave2 (one-per-node: no node has offered yet)
        > offer slave2
          LAUNCH on slave2: a-1120000000000 mon-1120000000002
        ",
    );
}

// See: issue 8. A master restarted with an in-memory registry answers
// TASK_UNKNOWN until the agents re-register, while the tasks run on: an
// immediate relaunch ran every task twice.
#[test]
fn a_task_unknown_until_its_agent_reregisters_keeps_running_under_its_id() {
    check(
        "
        subscribed
        submit a mem=10 type=lab
        offer slave2
        update a TASK_RUNNING ack
        disconnected
        subscribed
        update a TASK_UNKNOWN reconcile
        tasks
        tick 5
        update a TASK_RUNNING reconcile
        tasks
        offer slave2
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 type=lab
          = submitted a
        > offer slave2
          LAUNCH on slave2: a-1000000000000
          SUPPRESS
        > update a TASK_RUNNING ack
          ACK a-1000000000000
        > disconnected
        > subscribed
          RECONCILE a-1000000000000
          RECONCILE all
        > update a TASK_UNKNOWN reconcile
        > tasks
          = a-1000000000000 TASK_UNKNOWN slave2
        > tick 5
          RECONCILE a-1000000000000
        > update a TASK_RUNNING reconcile
        > tasks
          = a-1000000000000 TASK_RUNNING slave2
        > offer slave2
          DECLINE o2 refuse=120
          SUPPRESS
        ",
    );
}

#[test]
fn killing_every_copy_ends_a_service_and_a_killed_singleton_can_be_resubmitted() {
    check(
        "
        subscribed
        submit mon mem=10 sla=one-per-node
        submit db mem=10 sla=singleton
        offer slave1 slave2
        kill mon-
        submit mon mem=10 sla=one-per-node
        kill db
        submit db mem=10 sla=singleton
        offer slave3
        update db-1000000000000 TASK_KILLED
        offer slave3
        ",
        "
        > subscribed
          RECONCILE all
        > submit mon mem=10 sla=one-per-node
          = submitted mon
        > submit db mem=10 sla=singleton
          = submitted db
        > offer slave1 slave2
          LAUNCH on slave1: db-1000000000000 mon-1000000000001
          LAUNCH on slave2: mon-1000000000002
        > kill mon-
          KILL mon-1000000000001
          KILL mon-1000000000002
          SUPPRESS
          = killing mon-1000000000001
          = killing mon-1000000000002
        > submit mon mem=10 sla=one-per-node
          REVIVE
          = submitted mon
        > kill db
          KILL db-1000000000000
          = killing db-1000000000000
        > submit db mem=10 sla=singleton
          = submitted db
        > offer slave3
          LAUNCH on slave3: mon-1000000000006
        > update db-1000000000000 TASK_KILLED
        > offer slave3
          LAUNCH on slave3: db-1000000000005
        ",
    );
}

/// `update_outcome` as a table: one row per case, the task on the left, the
/// update in the middle, the outcome on the right.
///
/// Row: `<phase> <flags> | <STATE> [reconcile|invalid] | <outcome>`, where
/// phase is `pending`, `launching` or a state name; flags (comma-separated,
/// `-` for none) are `killed`, `on-failure`, `always`, `pinned`, `node-gone`,
/// `restarts=<n>`, `stable` (ran `STABLE_RUN`).
#[test]
fn update_outcomes() {
    let table = "
        TASK_STAGING -              | TASK_RUNNING                 | Progress(Running)
        launching -                 | TASK_STARTING                | Progress(Starting)
        TASK_RUNNING -              | TASK_UNREACHABLE             | Progress(Unreachable)
        pending -                   | TASK_RUNNING reconcile       | Stale
        launching -                 | TASK_RUNNING reconcile       | Progress(Running)
        launching -                 | TASK_DROPPED invalid         | Relaunch { agent_unknown: false }
        launching -                 | TASK_LOST                    | Relaunch { agent_unknown: false }
        TASK_RUNNING -              | TASK_LOST reconcile          | Relaunch { agent_unknown: false }
        TASK_RUNNING -              | TASK_UNKNOWN reconcile       | Unconfirmed
        TASK_UNKNOWN unknown-since-grace | TASK_UNKNOWN reconcile  | Relaunch { agent_unknown: true }
        launching -                 | TASK_UNKNOWN reconcile       | Relaunch { agent_unknown: true }
        TASK_RUNNING killed         | TASK_UNKNOWN reconcile       | Remove
        TASK_RUNNING -              | TASK_GONE_BY_OPERATOR reconcile | Relaunch { agent_unknown: true }
        TASK_RUNNING -              | TASK_GONE_BY_OPERATOR        | Remove
        TASK_RUNNING killed         | TASK_LOST reconcile          | Remove
        TASK_RUNNING killed,always  | TASK_KILLED                  | Remove
        TASK_RUNNING -              | TASK_FAILED                  | Remove
        TASK_RUNNING on-failure     | TASK_FINISHED                | Remove
        TASK_RUNNING on-failure     | TASK_FAILED                  | Restart { restarts: 1 }
        TASK_RUNNING always,restarts=2 | TASK_FINISHED             | Restart { restarts: 3 }
        TASK_RUNNING always,restarts=2,stable | TASK_FAILED        | Restart { restarts: 1 }
        TASK_RUNNING always         | TASK_ERROR                   | Remove
        TASK_RUNNING always,pinned  | TASK_FAILED                  | Restart { restarts: 1 }
        TASK_RUNNING always,pinned,node-gone | TASK_FAILED         | DropForGoneNode(AgentId(\"slave2\"))
        TASK_RUNNING pinned,node-gone | TASK_GONE                 | DropForGoneNode(AgentId(\"slave2\"))
        TASK_RUNNING pinned,node-gone | TASK_UNREACHABLE          | Progress(Unreachable)
    ";
    let now = Instant::now() + Duration::from_secs(1000);
    let mut failures = Vec::new();
    for row in table.lines().map(str::trim).filter(|row| !row.is_empty()) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (task_words, update_words, expected) = (
            cells[0].split_whitespace().collect::<Vec<_>>(),
            cells[1].split_whitespace().collect::<Vec<_>>(),
            cells[2],
        );
        let flags: Vec<&str> = task_words[1].split(',').collect();
        let mut requested = spec(&["a", "mem=10"]);
        requested.restart = flags
            .iter()
            .find_map(|flag| RestartPolicy::from_name(flag))
            .unwrap_or_default();
        let phase = match task_words[0] {
            "pending" => Phase::Pending,
            "launching" => Phase::Launching,
            name => Phase::Active(
                TaskState::ALL
                    .into_iter()
                    .find(|it| it.as_str() == name)
                    .unwrap(),
            ),
        };
        let rare = TaskRare {
            pinned_agent: flags.contains(&"pinned").then(|| AgentId("slave2".into())),
            kill_sent_at: flags.contains(&"killed").then_some(now),
            restarts: flags
                .iter()
                .find_map(|flag| flag.strip_prefix("restarts="))
                .map_or(0, |n| n.parse().unwrap()),
            unknown_since: flags
                .contains(&"unknown-since-grace")
                .then(|| now - DEFAULT_UNKNOWN_GRACE),
            ..TaskRare::default()
        };
        let task = Task {
            spec: requested.into(),
            phase,
            agent_id: Some(AgentId("slave2".into())),
            hostname: None,
            docker: DockerInfo::default(),
            created_at: 0,
            status_message: String::new(),
            pending_reason: None,
            kill_requested: flags.contains(&"killed"),
            seq: 0,
            running_since: Some(if flags.contains(&"stable") {
                now - STABLE_RUN
            } else {
                now
            }),
            accepted_at: None,
            trail: trail::Trail::default(),
            rare: rare.boxed(),
        };
        let update = TaskUpdate {
            task_id: TaskId("a-1".into()),
            state: TaskState::ALL
                .into_iter()
                .find(|it| it.as_str() == update_words[0])
                .unwrap(),
            reason: match update_words.get(1) {
                Some(&"reconcile") => StatusReason::Reconciliation,
                Some(&"invalid") => StatusReason::InvalidOffers,
                _ => StatusReason::Other,
            },
            reason_name: String::new(),
            message: String::new(),
            agent_id: Some(AgentId("slave2".into())),
            uuid: None,
            docker: None,
        };
        let actual = format!(
            "{:?}",
            update_outcome(
                &update,
                &task,
                flags.contains(&"node-gone"),
                DEFAULT_UNKNOWN_GRACE,
                now
            )
        );
        if actual != expected {
            failures.push(format!("{row}\n    got {actual}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_relaunch_after_a_lost_task_gets_a_new_id_and_keeps_restarts_and_node() {
    // The old instance "may still be running": when it turns up again it is
    // a stranger and is killed; the new instance never collides with it.
    check(
        "
        subscribed
        submit a mem=10 restart=always
        submit mon mem=10 sla=one-per-node name=slave2
        offer slave2
        update a TASK_FAILED
        tick 1
        offer slave2
        update a TASK_RUNNING
        update mon TASK_RUNNING
        update a TASK_LOST reconcile
        update mon TASK_GONE reconcile
        tasks
        update a-1000000000002 TASK_RUNNING
        offer slave2
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 restart=always
          = submitted a
        > submit mon mem=10 sla=one-per-node name=slave2
          = submitted mon
        > offer slave2
          LAUNCH on slave2: a-1000000000000 mon-1000000000001
        > update a TASK_FAILED
        > tick 1
        > offer slave2
          LAUNCH on slave2: a-1000000000002
        > update a TASK_RUNNING
        > update mon TASK_RUNNING
        > update a TASK_LOST reconcile
        > update mon TASK_GONE reconcile
        > tasks
          = a-1001000000000 pending - restarts=1 (relaunching after TASK_LOST: )
          = mon-1001000000001 pending - nodename=slave2 (relaunching after TASK_GONE: )
        > update a-1000000000002 TASK_RUNNING
          KILL a-1000000000002
        > offer slave2
          LAUNCH on slave2: mon-1001000000001 a-1001000000000
        ",
    );
}

#[test]
fn an_unreachable_agent_that_comes_back_never_gives_its_node_two_copies() {
    // FAILURE, TASK_UNREACHABLE, then the same AgentID offers again (Mesos
    // keeps the id of an agent that re-registers) and the copy runs again.
    // Only once the copy ends for good does the node get a fresh one.
    check(
        "
        subscribed
        submit mon mem=10 sla=one-per-node
        offer slave2
        update mon TASK_RUNNING
        lost slave2
        update mon TASK_UNREACHABLE
        tasks
        offer slave2
        update mon TASK_RUNNING
        tasks
        lost slave2
        update mon TASK_GONE
        offer slave2
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit mon mem=10 sla=one-per-node
          = submitted mon
        > offer slave2
          LAUNCH on slave2: mon-1000000000000
        > update mon TASK_RUNNING
        > lost slave2
        > update mon TASK_UNREACHABLE
        > tasks
          = mon-1000000000000 TASK_UNREACHABLE slave2 nodename=slave2
        > offer slave2
          DECLINE o2 refuse=120
        > update mon TASK_RUNNING
        > tasks
          = mon-1000000000000 TASK_RUNNING slave2 nodename=slave2
        > lost slave2
        > update mon TASK_GONE
        > offer slave2
          LAUNCH on slave2: mon-1000000000001
        > tasks
          = mon-1000000000001 launching slave2 nodename=slave2
        ",
    );
}

#[test]
fn reconciliation_asks_again_with_backoff_until_every_task_has_answered() {
    // A master does not answer for tasks on agents that have not
    // re-registered yet: only those are asked about again, 5 s, 10 s, 20 s
    // later, until they answer; then the periodic reconcile goes on.
    check(
        "
        subscribed
        submit a mem=10
        submit b mem=10
        submit c mem=10
        offer slave2
        update a TASK_RUNNING
        update b TASK_RUNNING
        update c TASK_RUNNING
        disconnected
        subscribed
        update a TASK_RUNNING reconcile
        tick 5
        update b TASK_RUNNING reconcile
        tick 5
        tick 5
        tick 10
        update c TASK_RUNNING reconcile
        tick 20
        tick 575
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10
          = submitted a
        > submit b mem=10
          = submitted b
        > submit c mem=10
          = submitted c
        > offer slave2
          LAUNCH on slave2: a-1000000000000 b-1000000000001 c-1000000000002
          SUPPRESS
        > update a TASK_RUNNING
        > update b TASK_RUNNING
        > update c TASK_RUNNING
        > disconnected
        > subscribed
          RECONCILE a-1000000000000 b-1000000000001 c-1000000000002
          RECONCILE all
        > update a TASK_RUNNING reconcile
        > tick 5
          RECONCILE b-1000000000001 c-1000000000002
        > update b TASK_RUNNING reconcile
        > tick 5
        > tick 5
          RECONCILE c-1000000000002
        > tick 10
        > update c TASK_RUNNING reconcile
        > tick 20
        > tick 575
          RECONCILE a-1000000000000 b-1000000000001 c-1000000000002
          RECONCILE all
        ",
    );
}

#[test]
fn stepping_the_wall_clock_back_delays_neither_a_restart_nor_a_reconcile() {
    check(
        "
        subscribed
        submit a mem=10 restart=always
        offer slave2
        update a TASK_FAILED
        wall -3600
        tick 1
        offer slave2
        update a TASK_RUNNING
        wall -3600
        tick 600
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 restart=always
          = submitted a
        > offer slave2
          LAUNCH on slave2: a-1000000000000
          SUPPRESS
        > update a TASK_FAILED
          REVIVE
        > wall -3600
        > tick 1
        > offer slave2
          LAUNCH on slave2: a-1000000000001
          SUPPRESS
        > update a TASK_RUNNING
        > wall -3600
        > tick 600
          RECONCILE a-1000000000001
          RECONCILE all
        ",
    );
}

#[test]
fn restored_deadlines_start_again_from_the_restore() {
    // The restart backoff runs again from the first event after the
    // restore; a kill from before the restart goes out once subscribed.
    check(
        "
        subscribed
        submit a mem=10 restart=always
        submit b mem=10
        offer slave2
        kill b
        update a TASK_FAILED
        tick 1
        restart
        subscribed
        offer slave2
        tick 1
        offer slave2
        ",
        "
        > subscribed
          RECONCILE all
        > submit a mem=10 restart=always
          = submitted a
        > submit b mem=10
          = submitted b
        > offer slave2
          LAUNCH on slave2: a-1000000000000 b-1000000000001
          SUPPRESS
        > kill b
          KILL b-1000000000001
          = killing b-1000000000001
        > update a TASK_FAILED
          REVIVE
        > tick 1
        > restart
        > subscribed
          RECONCILE b-1000000000001
          RECONCILE all
          KILL b-1000000000001
          REVIVE
        > offer slave2
          DECLINE o2 refuse=5
        > tick 1
        > offer slave2
          LAUNCH on slave2: a-1000000000002
          SUPPRESS
        ",
    );
}

/// A key answers its retries (also after a restart) with the first answer
/// and creates nothing; another task under it is a conflict; after
/// `IDEMPOTENCY_WINDOW` it is free again.
#[test]
fn a_retried_idempotency_key_creates_nothing_until_its_window_ends() {
    check(
        "
        submit web mem=10 key=k1
        submit web mem=10 key=k1
        submit web mem=20 key=k1
        submit other mem=10 key=k1
        submit web mem=10 key=k2
        submit web mem=10
        tasks
        restart
        submit web mem=10 key=k1
        submit web mem=20 key=k1
        tick 86399
        submit web mem=10 key=k1
        tick 1
        submit web mem=10 key=k1
        tasks
        ",
        r#"
        > submit web mem=10 key=k1
          = submitted web
        > submit web mem=10 key=k1
          = submitted web
        > submit web mem=20 key=k1
          = conflict: Idempotency-Key "k1" was already used for a different request
        > submit other mem=10 key=k1
          = conflict: Idempotency-Key "k1" was already used for a different request
        > submit web mem=10 key=k2
          = submitted web
        > submit web mem=10
          = submitted web
        > tasks
          = web-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
          = web-1000000000001 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
          = web-1000000000002 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
        > restart
        > submit web mem=10 key=k1
          = submitted web
        > submit web mem=20 key=k1
          = conflict: Idempotency-Key "k1" was already used for a different request
        > tick 86399
        > submit web mem=10 key=k1
          = submitted web
        > tick 1
        > submit web mem=10 key=k1
          = submitted web
        > tasks
          = web-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
          = web-1000000000001 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
          = web-1000000000002 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
          = web-87400000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
        "#,
    );
}

/// A restore ages a key by its wall-clock stamp (80000 s old: 6400 s left);
/// a stamp in the future (the clock stepped back) gets a whole window.
#[test]
fn an_idempotency_key_keeps_what_is_left_of_its_window_across_a_restart() {
    check(
        "
        submit web mem=10 key=k1
        wall 80000
        restart
        submit web mem=10 key=k1
        tick 6399
        submit web mem=10 key=k1
        tick 1
        submit web mem=10 key=k1
        wall -100000
        restart
        submit web mem=10 key=k1
        tick 86399
        submit web mem=10 key=k1
        tasks
        ",
        "
        > submit web mem=10 key=k1
          = submitted web
        > wall 80000
        > restart
        > submit web mem=10 key=k1
          = submitted web
        > tick 6399
        > submit web mem=10 key=k1
          = submitted web
        > tick 1
        > submit web mem=10 key=k1
          = submitted web
        > wall -100000
        > restart
        > submit web mem=10 key=k1
          = submitted web
        > tick 86399
        > submit web mem=10 key=k1
          = submitted web
        > tasks
          = web-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:00:00Z)
          = web-87400000000000 pending - (not connected to the Mesos master since 1970-01-01T00:00:00Z)
        ",
    );
}

/// `--reset` forgets the keys with the tasks: a retry after it must not be
/// told "Run task" for a task that no longer exists.
#[test]
fn reset_forgets_idempotency_keys() {
    let now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1000),
    };
    let mut state = State::new(None);
    let submit = || ApiRequest::Submit {
        spec: spec(&["web", "mem=10"]),
        idempotency_key: Some("k1".to_string()),
    };
    let mut journal = state.handle_event(api(submit()), now).records;
    state.reset();
    journal.extend(state.take_records());
    assert!(journal
        .iter()
        .any(|record| record.key == "idempotency/k1" && record.value.is_none()));
    let mut state = State::restore(&journal).expect("restores");
    state.handle_event(api(submit()), now);
    assert_eq!(
        state.task_count(),
        1,
        "the retry after the reset is a new task"
    );
}

#[test]
fn privileged_survives_a_restart() {
    check(
        "
        submit pcp-all mem=128 sla=one-per-node privileged
        subscribed
        offer slave2
        restart
        tasks
        ",
        "
        > submit pcp-all mem=128 sla=one-per-node privileged
          = submitted pcp-all
        > subscribed
          RECONCILE all
        > offer slave2
          LAUNCH on slave2: pcp-all-1000000000000
        > restart
        > tasks
          = pcp-all-1000000000000 launching slave2 nodename=slave2 privileged
        ",
    );
}

#[test]
fn ended_tasks_stay_listed_with_why_then_go() {
    check(
        "
        subscribed
        submit web mem=100 type=lab
        submit bad mem=10 type=lab
        submit db mem=10 type=analytics
        offer slave2
        update web TASK_RUNNING ack
        update bad TASK_ERROR ack reason=REASON_TASK_INVALID message=port_31500_twice
        update web TASK_FINISHED ack reason=REASON_COMMAND_EXECUTOR_FAILED
        kill db
        tasks
        all
        kill web
        kill ba
        disconnected
        subscribed
        tick 3599
        all
        tick 1
        all
        ",
        "
        > subscribed
          RECONCILE all
        > submit web mem=100 type=lab
          = submitted web
        > submit bad mem=10 type=lab
          = submitted bad
        > submit db mem=10 type=analytics
          = submitted db
        > offer slave2
          LAUNCH on slave2: web-1000000000000 bad-1000000000001
        > update web TASK_RUNNING ack
          ACK web-1000000000000
        > update bad TASK_ERROR ack reason=REASON_TASK_INVALID message=port_31500_twice
          ACK bad-1000000000001
        > update web TASK_FINISHED ack reason=REASON_COMMAND_EXECUTOR_FAILED
          ACK web-1000000000000
        > kill db
          SUPPRESS
          = killing db-1000000000002
        > tasks
        > all
          = bad-1000000000001 TASK_ERROR slave2 ended_at=1000 reason=REASON_TASK_INVALID message=\"port 31500 twice\"
          = web-1000000000000 TASK_FINISHED slave2 ended_at=1000 reason=REASON_COMMAND_EXECUTOR_FAILED
          = db-1000000000002 TASK_KILLED - ended_at=1000 message=\"killed before launch\"
        > kill web
          = not found: no task id starts with web
        > kill ba
          = not found: no task id starts with ba
        > disconnected
        > subscribed
          RECONCILE all
        > tick 3599
          RECONCILE all
        > all
          = bad-1000000000001 TASK_ERROR slave2 ended_at=1000 reason=REASON_TASK_INVALID message=\"port 31500 twice\"
          = web-1000000000000 TASK_FINISHED slave2 ended_at=1000 reason=REASON_COMMAND_EXECUTOR_FAILED
          = db-1000000000002 TASK_KILLED - ended_at=1000 message=\"killed before launch\"
        > tick 1
        > all
        ",
    );
}

#[test]
fn a_one_per_node_service_is_visible_and_a_duplicate_says_where_it_runs() {
    check(
        "
        subscribed
        submit traffic mem=10 sla=one-per-node type=traffic
        submit cadvisor mem=10 sla=one-per-node
        offer slave1 slave2
        tasks
        submit cadvisor mem=10 sla=one-per-node
        kill traffic
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit traffic mem=10 sla=one-per-node type=traffic
          = submitted traffic
        > submit cadvisor mem=10 sla=one-per-node
          = submitted cadvisor
        > offer slave1 slave2
          LAUNCH on slave1: cadvisor-1000000000000
          LAUNCH on slave2: cadvisor-1000000000001
        > tasks
          = cadvisor-1000000000000 launching slave1 nodename=slave1
          = cadvisor-1000000000001 launching slave2 nodename=slave2
          = traffic pending - (one-per-node: no known node has nodetype=traffic (slave1 has nodetype=analytics nodename=slave1, slave2 has nodetype=lab nodename=slave2))
        > submit cadvisor mem=10 sla=one-per-node
          = submitted cadvisor (already running on slave1, slave2)
        > kill traffic
          = killing traffic
        > tasks
          = cadvisor-1000000000000 launching slave1 nodename=slave1
          = cadvisor-1000000000001 launching slave2 nodename=slave2
        ",
    );
}

#[test]
fn a_restarted_task_leaves_its_ended_instance_listed() {
    check(
        "
        subscribed
        submit web mem=10 type=lab restart=always
        offer slave2
        update web TASK_RUNNING ack
        update web TASK_FAILED ack reason=REASON_COMMAND_EXECUTOR_FAILED message=exit_1
        all
        ",
        "
        > subscribed
          RECONCILE all
        > submit web mem=10 type=lab restart=always
          = submitted web
        > offer slave2
          LAUNCH on slave2: web-1000000000000
          SUPPRESS
        > update web TASK_RUNNING ack
          ACK web-1000000000000
        > update web TASK_FAILED ack reason=REASON_COMMAND_EXECUTOR_FAILED message=exit_1
          ACK web-1000000000000
          REVIVE
        > all
          = web-1000000000001 pending - restarts=1 (restart 1 after TASK_FAILED: exit 1, not before 1s from now)
          = web-1000000000000 TASK_FAILED slave2 ended_at=1000 reason=REASON_COMMAND_EXECUTOR_FAILED message=\"exit 1\"
        ",
    );
}

/// Retention is bounded: at most `MAX_ENDED_TASKS`, the oldest go first,
/// and a zero `--keep-finished` keeps none.
#[test]
fn ended_tasks_are_capped_oldest_first() {
    let run = |keep: Option<Duration>, count: usize| {
        let mut state = State::new(None);
        if let Some(keep) = keep {
            state.set_keep_finished(keep);
        }
        let mut now = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1000),
        };
        let ask = |state: &mut State, now: Now, request| {
            let turn = state.handle_event(api(request), now);
            turn.replies
                .into_iter()
                .next()
                .map(|(_, reply)| reply)
                .expect("a reply")
        };
        for n in 0..count {
            now.wall += Duration::from_secs(1);
            ask(
                &mut state,
                now,
                ApiRequest::Submit {
                    spec: spec(&[&format!("t{n}"), "mem=10"]),
                    idempotency_key: None,
                },
            );
            ask(
                &mut state,
                now,
                ApiRequest::Kill {
                    id_prefix: format!("t{n}-"),
                },
            );
        }
        let ApiReply::Tasks { tasks: views, .. } =
            ask(&mut state, now, ApiRequest::ListTasks(TaskQuery::default()))
        else {
            panic!("a task list");
        };
        views
            .iter()
            .map(|entry| entry.view().expect("not rendered").spec.id.clone())
            .collect::<Vec<_>>()
    };
    let listed = run(None, MAX_ENDED_TASKS + 2);
    assert_eq!(listed.len(), MAX_ENDED_TASKS);
    assert_eq!(
        (
            listed.first().map(String::as_str),
            listed.last().map(String::as_str)
        ),
        (Some("t2"), Some("t1001"))
    );
    assert!(run(Some(Duration::ZERO), 3).is_empty());
}

#[test]
fn utc_text_is_iso_8601() {
    for (secs, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (1000, "1970-01-01T00:16:40Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_795_706_668, "2026-11-26T15:24:28Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ] {
        assert_eq!(utc_text(secs), text);
    }
}

/// See: issue 11, item 3. The reason came from whichever offers arrived in
/// a round, so it flipped between samples; now it is judged against the
/// node registry and stays put while the registry does.
#[test]
fn pending_reasons_come_from_the_registry_and_are_stable() {
    check(
        "
        submit web mem=100 type=lab ports=8080
        tasks
        subscribed
        offer slave1
        tasks
        offer slave2
        tasks
        offer slave3
        tasks
        offer slave1
        tasks
        tasks
        disconnected
        tick 5
        tasks
        ",
        "
        > submit web mem=100 type=lab ports=8080
          = submitted web
        > tasks
          = web-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
        > subscribed
          RECONCILE all
        > offer slave1
          DECLINE o1 refuse=5
        > tasks
          = web-1000000000000 pending - (no known node has nodetype=lab (slave1 has nodetype=analytics))
        > offer slave2
          DECLINE o2 refuse=5
        > tasks
          = web-1000000000000 pending - (port 8080 outside the ports slave2 offers (31000-32000))
        > offer slave3
          DECLINE o3 refuse=5
        > tasks
          = web-1000000000000 pending - (port 8080 outside the ports slave2 offers (31000-32000))
        > offer slave1
          DECLINE o4 refuse=5
        > tasks
          = web-1000000000000 pending - (port 8080 outside the ports slave2 offers (31000-32000))
        > tasks
          = web-1000000000000 pending - (port 8080 outside the ports slave2 offers (31000-32000))
        > disconnected
        > tick 5
        > tasks
          = web-1000000000000 pending - (not connected to the Mesos master since 1970-01-01T00:16:40Z)
        ",
    );
}

#[test]
fn pending_reasons_name_cpus_mem_and_the_singleton_predecessor() {
    check(
        "
        subscribed
        submit db mem=100 sla=singleton type=lab
        offer slave2 slave3
        update db TASK_RUNNING ack
        submit wide mem=10 cpus=1.95 type=lab
        submit big mem=2000 type=lab
        kill db
        submit db mem=100 sla=singleton type=lab
        offer slave2 slave3
        tasks
        ",
        "
        > subscribed
          RECONCILE all
        > submit db mem=100 sla=singleton type=lab
          = submitted db
        > offer slave2 slave3
          LAUNCH on slave2: db-1000000000000
          DECLINE o2 refuse=120
          SUPPRESS
        > update db TASK_RUNNING ack
          ACK db-1000000000000
        > submit wide mem=10 cpus=1.95 type=lab
          REVIVE
          = submitted wide
        > submit big mem=2000 type=lab
          = submitted big
        > kill db
          KILL db-1000000000000
          = killing db-1000000000000
        > submit db mem=100 sla=singleton type=lab
          = submitted db
        > offer slave2 slave3
          LAUNCH on slave2: wide-1000000000001
          DECLINE o4 refuse=5
        > tasks
          = big-1000000000002 pending - (needs mem 2000, slave3 offered 1024)
          = db-1000000000000 TASK_RUNNING slave2
          = db-1000000000003 pending - (singleton: waiting for db-1000000000000 to end first)
          = wide-1000000000001 launching slave2
        ",
    );
}

/// See: review of issue 9. A restored `backoff_ms` was taken as it stood,
/// so one damaged record parked its task for centuries.
#[test]
fn a_damaged_restart_backoff_is_clamped_on_restore() {
    let now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1000),
    };
    let mut state = State::new(None);
    let submit = ApiRequest::Submit {
        spec: spec(&["web", "mem=10"]),
        idempotency_key: None,
    };
    let mut records = state.handle_event(api(submit), now).records;
    for record in &mut records {
        if let Some(value) = record
            .value
            .as_mut()
            .filter(|_| record.key.starts_with("task/"))
        {
            let mut parsed: serde_json::Value = serde_json::from_str(value).unwrap();
            parsed["backoff_ms"] = serde_json::json!(u64::MAX);
            *value = parsed.to_string();
        }
    }
    let restored = State::restore(&records).expect("restores");
    let backoffs: Vec<Option<Duration>> = restored
        .tasks
        .values()
        .map(|task| task.rare().backoff)
        .collect();
    assert_eq!(backoffs, [Some(RESTART_BACKOFF_MAX)]);
}

/// The next ask about a TASK_UNKNOWN task comes no later than the end of
/// its grace, even when the round's retry delay is longer (here 10 s
/// against a 7 s grace), so the relaunch is not held back by the backoff.
#[test]
fn a_task_unknown_is_asked_again_when_its_grace_ends() {
    check(
        "
        grace 7
        subscribed
        submit a mem=10 type=lab
        offer slave2
        update a TASK_RUNNING ack
        disconnected
        subscribed
        update a TASK_UNKNOWN reconcile
        tick 5
        update a TASK_UNKNOWN reconcile
        tick 2
        update a TASK_UNKNOWN reconcile
        ",
        "
        > grace 7
        > subscribed
          RECONCILE all
        > submit a mem=10 type=lab
          = submitted a
        > offer slave2
          LAUNCH on slave2: a-1000000000000
          SUPPRESS
        > update a TASK_RUNNING ack
          ACK a-1000000000000
        > disconnected
        > subscribed
          RECONCILE a-1000000000000
          RECONCILE all
        > update a TASK_UNKNOWN reconcile
        > tick 5
          RECONCILE a-1000000000000
        > update a TASK_UNKNOWN reconcile
        > tick 2
          RECONCILE a-1000000000000
        > update a TASK_UNKNOWN reconcile
          REVIVE
        ",
    );
}

/// `GET /metrics` reads task counts by shown state from the state thread,
/// and `run` takes each task's acceptance-to-RUNNING latency once, at its
/// first RUNNING only.
#[test]
fn task_counts_and_start_latencies_for_the_metrics() {
    let mut state = State::new(None);
    let start = Instant::now();
    let at = |secs: u64| Now {
        instant: start + Duration::from_secs(secs),
        wall: UNIX_EPOCH + Duration::from_secs(1000 + secs),
    };
    let counts = |state: &mut State, now: Now| {
        let turn = state.handle_event(api(ApiRequest::TaskCounts), now);
        let lines: Vec<String> = turn
            .replies
            .into_iter()
            .flat_map(|(_, reply)| render_reply(reply))
            .collect();
        lines.join("\n")
    };
    let subscribed = MesosEvent::Subscribed {
        framework_id: FrameworkId("fw".to_string()),
    };
    state.handle_event(Event::Mesos(subscribed), at(0));
    for id in ["a", "b"] {
        let submit = ApiRequest::Submit {
            spec: spec(&[id, "mem=10", "type=lab"]),
            idempotency_key: None,
        };
        state.handle_event(api(submit), at(0));
    }
    assert_eq!(counts(&mut state, at(0)), "  = pending: 2");
    let offers = MesosEvent::Offers(vec![lab_offer("slave2", 1)]);
    state.handle_event(Event::Mesos(offers), at(1));
    assert_eq!(counts(&mut state, at(1)), "  = launching: 2");
    let running = update(&state, &["a", "TASK_RUNNING", "ack"]);
    state.handle_event(Event::Mesos(MesosEvent::Update(running)), at(3));
    assert_eq!(state.take_start_latencies(), vec![Duration::from_secs(3)]);
    assert_eq!(state.take_start_latencies(), Vec::<Duration>::new());
    // A second RUNNING (a reconciliation answer) is not a second start.
    let again = update(&state, &["a", "TASK_RUNNING", "reconcile"]);
    state.handle_event(Event::Mesos(MesosEvent::Update(again)), at(9));
    assert_eq!(state.take_start_latencies(), Vec::<Duration>::new());
    let starting = update(&state, &["b", "TASK_STARTING", "ack"]);
    state.handle_event(Event::Mesos(MesosEvent::Update(starting)), at(9));
    assert_eq!(state.take_start_latencies(), Vec::<Duration>::new());
    assert_eq!(
        counts(&mut state, at(9)),
        "  = TASK_STARTING: 1\n  = TASK_RUNNING: 1"
    );
    // An update before RUNNING does not end the wait.
    let running = update(&state, &["b", "TASK_RUNNING", "ack"]);
    state.handle_event(Event::Mesos(MesosEvent::Update(running)), at(12));
    assert_eq!(state.take_start_latencies(), vec![Duration::from_secs(12)]);
    // Every state is listed, zeros included, in a fixed order.
    let turn = state.handle_event(api(ApiRequest::TaskCounts), at(9));
    let Some((_, ApiReply::TaskCounts(all))) = turn.replies.into_iter().next() else {
        panic!("task counts answered");
    };
    let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
    let mesos_names: Vec<&str> = TaskState::ALL.iter().map(|it| it.as_str()).collect();
    assert_eq!(
        names,
        [&["pending", "launching"][..], &mesos_names].concat()
    );
}
mod history;

/// A pending reason is judged against the registry when someone reads it,
/// or by the run loop once the task has waited `EXPLAIN_AFTER` (given as
/// `accepted_before`), not at every submit: most new tasks are placed by the
/// next offers before anyone looks.
#[test]
fn pending_reasons_are_judged_on_read_or_once_the_task_waited() {
    let mut state = State::new(None);
    let start = Instant::now();
    let at = |secs: u64| Now {
        instant: start + Duration::from_secs(secs),
        wall: UNIX_EPOCH + Duration::from_secs(1000 + secs),
    };
    let subscribed = MesosEvent::Subscribed {
        framework_id: FrameworkId("fw".to_string()),
    };
    state.handle_event(Event::Mesos(subscribed), at(0));
    let offers = MesosEvent::Offers(vec![lab_offer("slave2", 1)]);
    state.handle_event(Event::Mesos(offers), at(1));
    for (id, mem, secs) in [("big", "mem=100000", 2), ("small", "mem=10", 5)] {
        let submit = ApiRequest::Submit {
            spec: spec(&[id, mem, "type=lab"]),
            idempotency_key: None,
        };
        state.handle_event(api(submit), at(secs));
    }
    let reason = |state: &State, id: &str| {
        state
            .tasks
            .values()
            .find(|task| task.spec.id == id)
            .and_then(|task| task.pending_reason.clone())
            .unwrap_or_default()
    };
    let waiting = "waiting for offers";
    assert_eq!(
        (reason(&state, "big"), reason(&state, "small")),
        (waiting.into(), waiting.into())
    );
    // Nothing accepted before 2 s: nothing taken, so the run loop stops.
    assert!(!state.explain_queued(Some(at(2).instant)));
    assert_eq!(reason(&state, "big"), waiting);
    assert!(state.explain_queued(Some(at(3).instant)));
    assert!(
        reason(&state, "big").contains("needs mem"),
        "{}",
        reason(&state, "big")
    );
    assert_eq!(reason(&state, "small"), waiting);
    assert!(!state.explain_queued(Some(at(3).instant)));
    // A list judges the oldest queued tasks first.
    let turn = state.handle_event(api(ApiRequest::ListTasks(TaskQuery::default())), at(5));
    assert_eq!(turn.replies.len(), 1);
    assert!(
        reason(&state, "small").contains("fits slave2"),
        "{}",
        reason(&state, "small")
    );
    // One task shown is judged itself, whatever else is queued.
    for id in ["queued", "shown"] {
        let submit = ApiRequest::Submit {
            spec: spec(&[id, "mem=10", "type=lab"]),
            idempotency_key: None,
        };
        state.handle_event(api(submit), at(6));
    }
    let shown = state
        .tasks
        .iter()
        .find(|(_, task)| task.spec.id == "shown")
        .map(|(task_id, _)| task_id.0.to_string())
        .unwrap_or_default();
    state.handle_event(api(ApiRequest::ShowTask { id: shown }), at(6));
    let judged = reason(&state, "shown");
    assert!(judged.contains("fits slave2"), "{judged}");
    assert_eq!(reason(&state, "queued"), waiting);
}

/// A new state, subscribed, and a step that hands it an event 1 ms after
/// the last one.
fn subscribed_state() -> (State, impl FnMut(&mut State, Event)) {
    let mut now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1000),
    };
    let mut step = move |state: &mut State, event: Event| {
        now.instant += Duration::from_millis(1);
        now.wall += Duration::from_millis(1);
        state.handle_event(event, now);
    };
    let mut state = State::new(None);
    let subscribed = MesosEvent::Subscribed {
        framework_id: FrameworkId("fw".to_string()),
    };
    step(&mut state, Event::Mesos(subscribed));
    (state, step)
}

/// A list reads the same, byte for byte, whether its entries were kept
/// from an earlier list or built for it: with room for every entry, for a
/// few, or for none (`LIST_CACHE_MAX_BYTES`), or for none because the
/// table is past `LIST_CACHE_MAX_TASKS`.
#[test]
fn the_list_reads_the_same_whatever_the_list_cache_keeps() {
    let (mut state, mut step) = subscribed_state();
    for n in 0..24 {
        let request = ApiRequest::Submit {
            spec: spec(&[&format!("web{n}"), "mem=100"]),
            idempotency_key: None,
        };
        step(&mut state, api(request));
    }
    step(
        &mut state,
        Event::Mesos(MesosEvent::Offers(vec![lab_offer("slave2", 0)])),
    );
    for n in 0..4 {
        let update = update(&state, &[&format!("web{n}-"), "TASK_RUNNING", "docker"]);
        step(&mut state, Event::Mesos(MesosEvent::Update(update)));
    }
    let list = |state: &mut State| {
        let text = crate::api::dto::tasks_json(&state.task_list(&TaskQuery::default()));
        state.check_indexes().expect("the kept entries are current");
        text
    };
    let fresh = list(&mut state);
    assert!(fresh.contains("TASK_RUNNING") && fresh.contains("pending"));
    assert_eq!(state.list_cache.len(), state.task_count(), "all kept");
    assert_eq!(list(&mut state), fresh, "listed from the cache");
    for (max_bytes, kept) in [(4096, "a few"), (0, "none")] {
        state.list_cache.set_max_bytes(max_bytes);
        assert_eq!(list(&mut state), fresh, "{kept} kept, first list");
        assert_eq!(list(&mut state), fresh, "{kept} kept, second list");
        let len = state.list_cache.len();
        assert!(len < state.task_count(), "{kept} kept: {len}");
        assert_eq!(len > 0, max_bytes > 0, "{kept} kept: {len}");
    }
    // More live tasks than `LIST_CACHE_MAX_TASKS`: what was kept goes.
    state
        .list_cache
        .set_max_bytes(super::list::LIST_CACHE_MAX_BYTES);
    assert_eq!(list(&mut state), fresh, "kept again");
    assert_eq!(state.list_cache.len(), state.task_count(), "all kept again");
    state.list_cache.set_max_tasks(state.task_count() - 1);
    for nth in ["first", "second"] {
        assert_eq!(list(&mut state), fresh, "past the task bound, {nth} list");
        assert_eq!(state.list_cache.len(), 0, "past the task bound, {nth} list");
    }
}

/// A list read a slice at a time (`task_slice`, as the REST API reads a
/// long list) is the same list, whatever the slice size, filter or limit:
/// each live task once, in order, then the services and the ended tasks.
#[test]
fn a_list_read_in_slices_is_the_whole_list() {
    let (mut state, mut step) = subscribed_state();
    // `_` is a space: user ids with a space are matched through
    // `instances` (internal ids drop it). By user id "s 1 x", "s 1 y" and
    // "s 1 z" come before "s 1a"; by internal id it comes first.
    for id in [
        "a1", "a2", "b1", "a3", "b2", "b3", "a4", "gone", "s_1_y", "s_1a", "s_1_z", "s_1_x",
    ] {
        let request = ApiRequest::Submit {
            spec: spec(&[id, "mem=100"]),
            idempotency_key: None,
        };
        step(&mut state, api(request));
    }
    // An ended task (listed last) and a service with no copy yet.
    let kill = ApiRequest::Kill {
        id_prefix: "gone".to_string(),
    };
    step(&mut state, api(kill));
    let service = ApiRequest::Submit {
        spec: spec(&["mon", "mem=10", "sla=one-per-node"]),
        idempotency_key: None,
    };
    step(&mut state, api(service));
    let ids =
        |tasks: std::sync::Arc<[std::sync::Arc<crate::scheduler::ListedTask>]>| -> Vec<String> {
            tasks
                .iter()
                .map(|task| {
                    task.view()
                        .map(|view| view.internal_id.0.to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
    let queries = [
        TaskQuery::default(),
        TaskQuery {
            prefix: Some("a".to_string()),
            ..TaskQuery::default()
        },
        TaskQuery {
            prefix: Some("s ".to_string()),
            ..TaskQuery::default()
        },
        TaskQuery {
            state: StateFilter::Pending,
            ..TaskQuery::default()
        },
        TaskQuery {
            limit: Some(3),
            ..TaskQuery::default()
        },
        TaskQuery {
            limit: Some(8),
            ..TaskQuery::default()
        },
    ];
    for query in queries {
        let whole = ids(state.task_list(&query));
        assert!(!whole.is_empty(), "{query:?}");
        // The live tasks it lists (not the services or the ended tasks).
        let live = whole
            .iter()
            .filter(|id| state.tasks.contains_key(&TaskId(id.as_str().into())))
            .count();
        for scan in [1, 2, 3, live, 100] {
            let (mut sliced, mut after, mut slices) = (Vec::new(), None, 0);
            loop {
                let limit = query.limit.map(|limit| limit - sliced.len());
                let query = TaskQuery {
                    limit,
                    ..query.clone()
                };
                let (tasks, next) = state.task_slice(&query, after.as_ref(), scan);
                assert!(
                    tasks.len() <= scan + 2,
                    "a slice lists what it scans (+ the rest)"
                );
                sliced.extend(ids(tasks));
                slices += 1;
                assert!(slices < 100, "slices end");
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(sliced, whole, "{query:?} in slices of {scan}");
            // A slice that reaches the last live task ends the list.
            if scan >= live {
                assert_eq!(slices, 1, "{query:?} in slices of {scan}");
            }
        }
    }
}

/// An ACCEPT leaves no refuse filter while tasks still wait after its round,
/// so what is left of the agent comes back at the master's next allocation;
/// with nothing left waiting it keeps the busy filter.
#[test]
fn an_accept_filters_nothing_while_tasks_still_wait() {
    let refuse_of_launch = |ids: &[(&str, &str)]| {
        let (mut state, mut step) = subscribed_state();
        for (id, mem) in ids {
            let submit = ApiRequest::Submit {
                spec: spec(&[id, mem, "type=lab"]),
                idempotency_key: None,
            };
            step(&mut state, api(submit));
        }
        let now = Now {
            instant: Instant::now() + Duration::from_secs(1),
            wall: UNIX_EPOCH + Duration::from_secs(1001),
        };
        let offers = MesosEvent::Offers(vec![lab_offer("slave2", 1)]);
        let turn = state.handle_event(Event::Mesos(offers), now);
        let refuse: Vec<f64> = turn
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::Launch { refuse_seconds, .. } => Some(*refuse_seconds),
                _ => None,
            })
            .collect();
        refuse
    };
    assert_eq!(
        refuse_of_launch(&[("a", "mem=10"), ("big", "mem=100000")]),
        vec![REFUSE_SECONDS_MORE_WORK]
    );
    assert_eq!(
        refuse_of_launch(&[("a", "mem=10")]),
        vec![REFUSE_SECONDS_BUSY]
    );
}

/// The list kept whole (`list.rs`, `Memo`) outlives only the reads, and a
/// read that changes what it shows drops it: a pending reason judged for
/// `GET /client/task/<id>`, an ended task expiring, the pending tasks'
/// context set by the first event after a restore. Each case fails if its
/// drop is missing; a list asked again unchanged is the same list.
#[test]
fn a_read_that_changes_the_kept_list_drops_it() {
    let read = |state: &mut State, request: ApiRequest, at: Now| {
        state.handle_event(api(request), at);
        state.check_list_memo()
    };
    let list = || ApiRequest::ListTasks(TaskQuery::default());
    let (mut state, mut step) = subscribed_state();
    let later = |secs: u64| Now {
        instant: Instant::now() + Duration::from_secs(secs),
        wall: UNIX_EPOCH + Duration::from_secs(2000 + secs),
    };

    // Unchanged, a list is answered with the very same list.
    let submit = |words: &[&str]| {
        api(ApiRequest::Submit {
            spec: spec(words),
            idempotency_key: None,
        })
    };
    step(&mut state, submit(&["web", "mem=100"]));
    let first = state.task_list(&TaskQuery::default());
    let again = state.task_list(&TaskQuery::default());
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "an unchanged list is kept"
    );

    // A reason judged for one task shown.
    step(
        &mut state,
        Event::Mesos(MesosEvent::Offers(vec![lab_offer("slave2", 0)])),
    );
    step(&mut state, submit(&["huge", "mem=999999"]));
    state.task_list(&TaskQuery::default());
    let huge = find(&state, "huge-");
    let shown = ApiRequest::ShowTask {
        id: huge.0.to_string(),
    };
    read(&mut state, shown, later(1)).expect("a judged reason is listed");

    // An ended task expiring at a read.
    state.set_keep_finished(Duration::from_secs(5));
    let finished = update(&state, &["web-", "TASK_FINISHED"]);
    step(&mut state, Event::Mesos(MesosEvent::Update(finished)));
    state.task_list(&TaskQuery::default());
    read(&mut state, list(), later(2)).expect("the ended task is still listed");
    read(&mut state, list(), later(60)).expect("the expired task is gone");

    // The first event after a restore is a read: it sets the context the
    // pending tasks' views depend on.
    let mut records = Vec::new();
    let mut fresh = State::new(None);
    let turn = fresh.handle_event(submit(&["queued", "mem=10"]), later(0));
    records.extend(turn.records);
    let mut restored = State::restore(&records).expect("restores");
    read(&mut restored, list(), later(1)).expect("the first list after a restore");
    read(&mut restored, list(), later(2)).expect("and the next one");
}

/// The tasks of one node share the text of its agent id and hostname: placed from
/// offers of separate rounds (each parsed into its own id), and restored
/// from records (each with its own copy).
#[test]
fn the_tasks_of_one_node_share_its_agent_id_and_hostname() {
    let (mut state, mut step) = subscribed_state();
    for (seq, name) in ["a", "b"].into_iter().enumerate() {
        let submit = ApiRequest::Submit {
            spec: spec(&[name, "mem=10"]),
            idempotency_key: None,
        };
        step(&mut state, api(submit));
        let offer = lab_offer("slave2", seq);
        step(&mut state, Event::Mesos(MesosEvent::Offers(vec![offer])));
        let placed = state.tasks.values().filter(|task| task.agent_id.is_some());
        assert_eq!(placed.count(), seq + 1, "one task placed per round");
    }
    let shared = |state: &State| {
        let ids: Vec<&AgentId> = (state.tasks.values())
            .filter_map(|task| task.agent_id.as_ref())
            .collect();
        ids.len() == 2 && std::sync::Arc::ptr_eq(&ids[0].0, &ids[1].0)
    };
    let hosts_shared = |state: &State| {
        let hosts: Vec<&std::sync::Arc<str>> = (state.tasks.values())
            .filter_map(|task| task.hostname.as_ref())
            .collect();
        hosts.len() == 2 && std::sync::Arc::ptr_eq(hosts[0], hosts[1])
    };
    assert!(shared(&state), "placed in two rounds");
    assert!(hosts_shared(&state), "hostname, placed in two rounds");
    let restored = State::restore(&state.all_records()).expect("restores");
    assert!(shared(&restored), "restored");
    assert!(hosts_shared(&restored), "hostname, restored");
}

/// The entries a list builds are what `scheduler::run` counts towards a
/// large turn (a trim follows): every entry the first time, a page's worth
/// per page, none when the list is kept, and after a change only the
/// entries that changed.
#[test]
fn a_list_counts_the_entries_it_built() {
    let (mut state, mut step) = subscribed_state();
    let submit = |name: &str| {
        api(ApiRequest::Submit {
            spec: spec(&[name, "mem=100"]),
            idempotency_key: None,
        })
    };
    for name in ["a", "b", "c"] {
        step(&mut state, submit(name));
    }
    let page = TaskQuery {
        page: Some(crate::scheduler::Page {
            after: None,
            scan: 2,
        }),
        ..TaskQuery::default()
    };
    state.task_slice(&page, None, 2);
    assert_eq!(state.take_list_built(), 2, "a page of two");
    let list = |state: &mut State| {
        state.task_list(&TaskQuery::default());
        state.take_list_built()
    };
    assert_eq!(list(&mut state), 1, "the third; the page's two are kept");
    assert_eq!(list(&mut state), 0, "the same list again");
    step(&mut state, submit("d"));
    assert_eq!(list(&mut state), 1, "only the new task");
}

/// A reconciliation answer that confirms the state we know writes no
/// record, keeps the message and the task's list entry (a restart at 100k
/// tasks gets two answers per task), whatever it carries: a message, the
/// container the task has, another state it is in. One that brings news
/// writes the record and drops the entry.
#[test]
fn an_answer_that_confirms_the_known_state_writes_nothing() {
    let (mut state, mut step) = subscribed_state();
    let submit = ApiRequest::Submit {
        spec: spec(&["web", "mem=10"]),
        idempotency_key: None,
    };
    step(&mut state, api(submit));
    step(
        &mut state,
        Event::Mesos(MesosEvent::Offers(vec![lab_offer("slave2", 0)])),
    );
    let at = |secs: u64| Now {
        instant: Instant::now() + Duration::from_secs(secs),
        wall: UNIX_EPOCH + Duration::from_secs(2000 + secs),
    };
    // The update's words after the task; then the records written, the
    // task's message after it and the list entries built again.
    let steps: [(&[&str], usize, &str, usize); 6] = [
        (
            &["TASK_RUNNING", "ack", "message=started", "docker"],
            1,
            "started",
            1,
        ),
        (
            &[
                "TASK_RUNNING",
                "reconcile",
                "message=Reconciliation:_Latest_task_state",
            ],
            0,
            "started",
            0,
        ),
        (&["TASK_RUNNING", "reconcile", "docker"], 0, "started", 0),
        (
            &["TASK_KILLING", "reconcile", "message=going"],
            1,
            "going",
            1,
        ),
        (&["TASK_KILLING", "reconcile"], 0, "going", 0),
        (
            &["TASK_KILLING", "reconcile", "message=still_going", "docker"],
            0,
            "going",
            0,
        ),
    ];
    state.task_list(&TaskQuery::default());
    state.take_list_built();
    for (secs, (words, records, message, rebuilt)) in (1..).zip(steps) {
        let words: Vec<&str> = ["web-"].into_iter().chain(words.iter().copied()).collect();
        let update = update(&state, &words);
        let turn = state.handle_event(Event::Mesos(MesosEvent::Update(update)), at(secs));
        let kept = (state.tasks.get(&find(&state, "web-")))
            .expect("still there")
            .status_message
            .clone();
        state.task_list(&TaskQuery::default());
        assert_eq!(
            (turn.records.len(), kept.as_str(), state.take_list_built()),
            (records, message, rebuilt),
            "{words:?}"
        );
    }
}

#[test]
fn reconcile_calls_name_at_most_a_batch_each() {
    let check = |count: usize, batch: usize, expected: &[usize]| {
        let tasks = (0..count)
            .map(|n| (TaskId(format!("t{n}").into()), None))
            .collect();
        let calls: Vec<Call> = super::reconcile_calls(tasks, batch).collect();
        let sizes: Vec<usize> = calls
            .iter()
            .map(|call| match call {
                Call::Reconcile(tasks) => tasks.len(),
                other => panic!("not a reconcile: {other:?}"),
            })
            .collect();
        assert_eq!(sizes, expected, "{count} tasks in batches of {batch}");
        // In order, each task once.
        let names: Vec<String> = (calls.iter())
            .flat_map(|call| match call {
                Call::Reconcile(tasks) => tasks.iter().map(|(id, _)| id.0.to_string()),
                _ => unreachable!(),
            })
            .collect();
        let wanted: Vec<String> = (0..names.len()).map(|n| format!("t{n}")).collect();
        assert_eq!(names, wanted);
    };
    check(0, 3, &[]);
    check(1, 3, &[1]);
    check(3, 3, &[3]);
    check(7, 3, &[3, 3, 1]);
    check(2, 0, &[1, 1]);
}

/// Every task has one in the table: the rare fields stay boxed apart
/// (`TaskRare`), 552 bytes before.
#[test]
fn a_task_stays_small() {
    assert!(std::mem::size_of::<Task>() <= 432);
}

/// Both places that ask the master about launched tasks (a subscription's
/// round and its retry) split them into RECONCILE calls of at most
/// `RECONCILE_BATCH`, as `reconcile_calls_name_at_most_a_batch_each` checks
/// of the helper itself.
#[test]
fn reconciling_more_than_a_batch_of_tasks_takes_several_calls() {
    let start = Instant::now();
    let at = |ms: u64| Now {
        instant: start + Duration::from_millis(ms),
        wall: UNIX_EPOCH + Duration::from_secs(1000) + Duration::from_millis(ms),
    };
    let mut state = State::new(None);
    let subscribed = || {
        Event::Mesos(MesosEvent::Subscribed {
            framework_id: FrameworkId("fw".to_string()),
        })
    };
    state.handle_event(subscribed(), at(0));
    let tasks = RECONCILE_BATCH + 1;
    for n in 0..tasks {
        let submit = ApiRequest::Submit {
            spec: spec(&[&format!("t{n}"), "mem=1", "cpus=0.001"]),
            idempotency_key: None,
        };
        state.handle_event(api(submit), at(1));
    }
    // One agent large enough for every task, offered until all launched.
    let mut launched = 0;
    for round in 0..10 {
        let offer = Offer::unreserved(
            OfferId(format!("o{round}")),
            AgentId("big".into()),
            "big".to_string(),
            100.0,
            100_000.0,
            Vec::new(),
            BTreeMap::new(),
        );
        let turn = state.handle_event(Event::Mesos(MesosEvent::Offers(vec![offer])), at(2));
        launched += turn
            .calls
            .iter()
            .map(|call| match call {
                Call::Launch { tasks, .. } => tasks.len(),
                _ => 0,
            })
            .sum::<usize>();
    }
    assert_eq!(launched, tasks);
    let explicit = |calls: &[Call]| -> Vec<usize> {
        calls
            .iter()
            .filter_map(|call| match call {
                Call::Reconcile(asked) if !asked.is_empty() => Some(asked.len()),
                _ => None,
            })
            .collect()
    };
    // A new subscription asks about every launched task.
    let turn = state.handle_event(subscribed(), at(3));
    assert_eq!(explicit(&turn.calls), [RECONCILE_BATCH, 1]);
    // Nobody answered: the retry asks about all of them again.
    let retry_ms = RECONCILE_RETRY_MIN.as_millis() as u64;
    let turn = state.handle_event(Event::Tick, at(3 + retry_ms));
    assert_eq!(explicit(&turn.calls), [RECONCILE_BATCH, 1]);
}
