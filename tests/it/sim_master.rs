//! `mesos-sim` as a master, seen by a plain JSON client written here from the
//! reference (not our scheduler's client): status codes and their order,
//! the stream's framing, offers, validation, the reliable update stream,
//! kill, reconcile, filters, failover, teardown and agent removal.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::support::{fast_sim, http_agent, read_head_lines, request, wait_until, DEADLINE};
use charmander::sim::{self, SimConfig};

/// A JSON subscription read as a chunked RecordIO stream.
struct Stream {
    reader: BufReader<TcpStream>,
    stream_id: String,
    content_type: String,
}

impl Stream {
    /// The next event, or `None` once the master ended the stream.
    fn next(&mut self) -> Option<Value> {
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk).ok()?;
        // One record per chunk here; the record is "<length>\n<json>".
        let text = String::from_utf8(chunk[..size].to_vec()).ok()?;
        let (length, record) = text.split_once('\n')?;
        assert_eq!(
            length.parse::<usize>().ok()?,
            record.len(),
            "RecordIO length"
        );
        serde_json::from_str(record).ok()
    }

    /// The next event of `kind`, skipping heartbeats and others.
    #[track_caller]
    fn expect(&mut self, kind: &str) -> Value {
        for _ in 0..1000 {
            match self.next() {
                Some(event) if event["type"] == kind => return event,
                Some(_) => continue,
                None => panic!("stream ended while waiting for {kind}"),
            }
        }
        panic!("no {kind} in 1000 events")
    }

    /// The next UPDATE for `task` (skipping others).
    #[track_caller]
    fn update_for(&mut self, task: &str) -> Value {
        loop {
            let event = self.expect("UPDATE");
            if event["update"]["status"]["task_id"]["value"] == task {
                return event["update"]["status"].clone();
            }
        }
    }

    /// The next master-generated UPDATE (no uuid) for `task`, skipping the
    /// agent's resends and everything else.
    #[track_caller]
    fn master_update_for(&mut self, task: &str) -> Value {
        loop {
            let status = self.update_for(task);
            if status.get("uuid").is_none() {
                return status;
            }
        }
    }

    /// The next agent UPDATE (with a uuid) for `task` in `state`, skipping
    /// resends of earlier ones.
    #[track_caller]
    fn agent_update_for(&mut self, task: &str, state: &str) -> Value {
        loop {
            let status = self.update_for(task);
            if status.get("uuid").is_some() && status["state"] == state {
                return status;
            }
        }
    }
}

/// Raw HTTP/1.1 POST of a JSON SUBSCRIBE, as pymesos sends it.
fn subscribe(master: &str, body: &Value, headers: &str) -> Result<Stream, (u16, String)> {
    let mut socket = TcpStream::connect(master).expect("connects");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let body = body.to_string();
    write!(
        socket,
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: {master}\r\nContent-Type: application/json\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut reader = BufReader::new(socket);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = read_head_lines(&mut reader);
    let header = |name: &str| {
        head.iter()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    if status != 200 {
        let mut text = String::new();
        let _ = reader.take(4096).read_to_string(&mut text);
        return Err((status, text));
    }
    assert_eq!(header("transfer-encoding"), "chunked");
    assert!(header("content-length").is_empty());
    Ok(Stream {
        stream_id: header("mesos-stream-id"),
        content_type: header("content-type"),
        reader,
    })
}

fn framework_info(extra: Value) -> Value {
    let mut info = json!({"user": "root", "name": "json-client", "failover_timeout": 3600.0});
    if let (Some(info), Some(extra)) = (info.as_object_mut(), extra.as_object()) {
        info.extend(extra.clone());
    }
    info
}

fn subscribe_call(info: Value) -> Value {
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}})
}

/// A subscribed JSON client: its stream and its framework id.
struct Client {
    master: String,
    http: ureq::Agent,
    stream: Stream,
    framework_id: String,
}

impl Client {
    fn subscribe(master: &sim::Master, info: Value) -> Client {
        let master = master.addr().to_string();
        let mut stream = subscribe(&master, &subscribe_call(info), "")
            .unwrap_or_else(|e| panic!("subscribe: {e:?}"));
        assert_eq!(
            stream.content_type, "application/json",
            "JSON when no Accept is sent"
        );
        let subscribed = stream.next().expect("first event");
        assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
        assert!(subscribed["subscribed"]["master_info"]["port"]
            .as_u64()
            .is_some());
        assert_eq!(stream.next().expect("second event")["type"], "HEARTBEAT");
        let framework_id = subscribed["subscribed"]["framework_id"]["value"]
            .as_str()
            .expect("id")
            .to_string();
        Client {
            master,
            http: http_agent(),
            stream,
            framework_id,
        }
    }

    /// POSTs a call; returns the status and body text.
    fn call(&self, kind: &str, body: Value) -> (u16, String) {
        let mut call = json!({"type": kind, "framework_id": {"value": self.framework_id}});
        if let (Some(call), Some(body)) = (call.as_object_mut(), body.as_object()) {
            call.extend(body.clone());
        }
        self.post(&call, Some(&self.stream.stream_id))
    }

    fn post(&self, call: &Value, stream_id: Option<&str>) -> (u16, String) {
        let mut post = self
            .http
            .post(format!("http://{}/api/v1/scheduler", self.master))
            .header("Content-Type", "application/json");
        if let Some(stream_id) = stream_id {
            post = post.header("Mesos-Stream-Id", stream_id);
        }
        let mut response = post.send(call.to_string()).expect("call answered");
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// The offers of the next OFFERS event.
    fn offers(&mut self) -> Vec<Value> {
        self.stream.expect("OFFERS")["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn ack(&self, status: &Value) {
        let ack = json!({"acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}});
        assert_eq!(self.call("ACKNOWLEDGE", ack).0, 202);
    }

    fn sim_state(&self) -> Value {
        request(
            &self.http,
            "GET",
            &format!("http://{}/sim/state", self.master),
            None,
        )
        .1
    }
}

fn docker_task(id: &str, offer: &Value, port: u64) -> Value {
    json!({
        "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}],
        "command": {"shell": false, "arguments": ["sleep", "60"]},
        "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
            "port_mappings": [{"host_port": port, "container_port": 80}]}}
    })
}

fn accept(offer: &Value, tasks: Vec<Value>) -> Value {
    json!({"accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
        "filters": {"refuse_seconds": 0.1}}})
}

fn lab() -> sim::Master {
    sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts")
}

#[test]
fn http_errors_come_with_the_real_codes_in_the_real_order() {
    let master = lab();
    let addr = master.addr().to_string();
    let http = http_agent();
    let url = format!("http://{addr}/api/v1/scheduler");
    let post = |content_type: Option<&str>, body: &str, stream_id: Option<&str>| {
        let mut post = http.post(&url);
        if let Some(content_type) = content_type {
            post = post.header("Content-Type", content_type);
        }
        if let Some(stream_id) = stream_id {
            post = post.header("Mesos-Stream-Id", stream_id);
        }
        let mut response = post.send(body.to_string()).expect("answered");
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let check = |(status, body): (u16, String), want_status: u16, want_body: &str| {
        assert_eq!(status, want_status, "{body}");
        assert!(
            body.starts_with(want_body),
            "{want_status}: {body:?} should start with {want_body:?}"
        );
    };
    let get = http.get(&url).call().expect("answered");
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(
        get.headers().get("Allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    check(
        post(None, "{}", None),
        400,
        "Expecting 'Content-Type' to be present",
    );
    check(
        post(Some("application/json; charset=utf-8"), "{}", None),
        415,
        "Expecting 'Content-Type' of application/json or application/x-protobuf",
    );
    check(
        post(Some("application/json"), "{", None),
        400,
        "Failed to parse body into JSON",
    );
    check(post(Some("application/json"), r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u"}}}"#, None), 400, "Failed to convert JSON into Call protobuf: Missing required fields: subscribe.framework_info.name");
    check(
        post(Some("application/x-protobuf"), "\u{1}", None),
        400,
        "Failed to parse body into Call protobuf",
    );
    check(
        post(
            Some("application/json"),
            r#"{"type":"KILL","kill":{"task_id":{"value":"t"}}}"#,
            None,
        ),
        400,
        "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
    );
    let kill =
        r#"{"type":"KILL","framework_id":{"value":"nobody"},"kill":{"task_id":{"value":"t"}}}"#;
    check(
        post(Some("application/json"), kill, None),
        400,
        "Framework cannot be found",
    );
    let subscribe_body = subscribe_call(framework_info(json!({})));
    let refused = subscribe(&addr, &subscribe_body, "Accept: application/recordio\r\n")
        .err()
        .expect("406");
    assert_eq!(refused.0, 406, "{refused:?}");
    let refused = subscribe(&addr, &subscribe_body, "Mesos-Stream-Id: x\r\n")
        .err()
        .expect("400");
    assert_eq!(
        refused,
        (
            400,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header".to_string()
        )
    );
    let client = Client::subscribe(&master, framework_info(json!({})));
    let kill = json!({"type": "KILL", "framework_id": {"value": client.framework_id}, "kill": {"task_id": {"value": "t"}}});
    check(
        client.post(&kill, None),
        400,
        "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
    );
    check(
        client.post(&kill, Some("stale")),
        400,
        "The stream ID 'stale' included in this request didn't match",
    );
    check(client.post(&kill, Some(&client.stream.stream_id)), 202, "");
    let ack = json!({"acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAEC"}});
    assert_eq!(
        client.call("ACKNOWLEDGE", ack),
        (
            400,
            "Failed to validate scheduler::Call: Not a valid UUID".to_string()
        )
    );
    // Every call that needs a sub-message names it, as the real master does.
    for kind in [
        "ACCEPT",
        "DECLINE",
        "KILL",
        "SHUTDOWN",
        "ACKNOWLEDGE",
        "RECONCILE",
        "MESSAGE",
        "REQUEST",
        "UPDATE_FRAMEWORK",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE_OPERATIONS",
    ] {
        assert_eq!(
            client.call(kind, json!({})),
            (
                400,
                format!(
                    "Failed to validate scheduler::Call: Expecting '{}' to be present",
                    kind.to_lowercase()
                )
            ),
            "{kind}"
        );
    }
    assert_eq!(client.call("REQUEST", json!({"request": {}})).0, 202);
    check(client.call("UNKNOWN", json!({})), 501, "");
}

#[test]
fn a_non_leader_redirects_every_call_without_a_scheme() {
    let mut config = fast_sim(Vec::new());
    config.redirect_to = Some("leader.example:5050".to_string());
    let follower = sim::Master::start(config).expect("starts");
    let addr = follower.addr().to_string();
    let refused = subscribe(&addr, &subscribe_call(framework_info(json!({}))), "")
        .err()
        .expect("307");
    assert_eq!(refused.0, 307);
    let mut socket = TcpStream::connect(&addr).expect("connects");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(socket, "POST /api/v1/scheduler?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").expect("writes");
    let mut text = String::new();
    let _ = socket.read_to_string(&mut text);
    assert!(
        text.contains("Location: //leader.example:5050/api/v1/scheduler?x=1\r\n"),
        "{text}"
    );
}

#[test]
fn a_docker_task_runs_through_the_reliable_update_stream() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offers = client.offers();
    assert_eq!(offers.len(), 3, "one offer per agent");
    let slave2 = offers
        .iter()
        .find(|offer| offer["hostname"] == "slave2")
        .expect("slave2 offered")
        .clone();
    assert_eq!(
        slave2["attributes"],
        json!([
        {"name": "nodetype", "type": "TEXT", "text": {"value": "lab"}},
        {"name": "nodename", "type": "TEXT", "text": {"value": "slave2"}}])
    );
    let resources: Vec<&str> = slave2["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(resources, ["cpus", "mem", "ports"]);
    assert_eq!(
        slave2["resources"][2]["ranges"]["range"],
        json!([{"begin": 31000, "end": 32000}])
    );
    assert_eq!(
        client
            .call(
                "ACCEPT",
                accept(&slave2, vec![docker_task("web", &slave2, 31005)])
            )
            .0,
        202
    );

    let starting = client.stream.update_for("web");
    assert_eq!(
        (&starting["state"], &starting["source"]),
        (&json!("TASK_STARTING"), &json!("SOURCE_EXECUTOR"))
    );
    assert_eq!(
        starting["executor_id"]["value"], "web",
        "no custom executor: executor id = task id"
    );
    let uuid = starting["uuid"]
        .as_str()
        .expect("agent updates carry a uuid")
        .to_string();
    assert_eq!(charmander::base64::decode(&uuid).map(|b| b.len()), Ok(16));
    // Not acknowledged: the same update comes again, same uuid, and nothing newer.
    let again = client.stream.update_for("web");
    assert_eq!(
        (&again["state"], &again["uuid"]),
        (&json!("TASK_STARTING"), &json!(uuid))
    );
    assert_eq!(
        client.sim_state()["unacknowledged"]["web"],
        2,
        "STARTING and RUNNING queued on the agent"
    );
    client.ack(&again);
    let running = client.stream.update_for("web");
    assert_eq!(running["state"], "TASK_RUNNING");
    let data =
        charmander::base64::decode(running["data"].as_str().expect("docker inspect in data"))
            .expect("base64");
    let inspect: Value = serde_json::from_slice(&data).expect("inspect JSON");
    assert!(
        inspect[0]["Id"].as_str().is_some_and(|id| id.len() == 64),
        "{inspect}"
    );
    assert!(inspect[0]["Name"]
        .as_str()
        .is_some_and(|name| name.starts_with("/mesos-")));
    assert!(inspect[0]["State"]["Pid"]
        .as_u64()
        .is_some_and(|pid| pid > 0));
    assert!(
        running["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"]
            .is_string()
    );
    client.ack(&running);
    assert!(wait_until(DEADLINE, || client.sim_state()
        ["unacknowledged"]
        .as_object()
        .is_some_and(|it| it.is_empty())));

    // Implicit and explicit reconciliation: master updates, no uuid.
    assert_eq!(client.call("RECONCILE", json!({"reconcile": {}})).0, 202);
    let latest = client.stream.update_for("web");
    assert_eq!(
        (&latest["state"], &latest["reason"], &latest["source"]),
        (
            &json!("TASK_RUNNING"),
            &json!("REASON_RECONCILIATION"),
            &json!("SOURCE_MASTER")
        )
    );
    assert!(latest.get("uuid").is_none(), "{latest}");
    assert!(
        latest["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"].is_string(),
        "{latest}"
    );
    assert_eq!(
        client
            .call(
                "RECONCILE",
                json!({"reconcile": {"tasks": [{"task_id": {"value": "ghost"}}]}})
            )
            .0,
        202
    );
    let ghost = client.stream.update_for("ghost");
    assert_eq!(
        (&ghost["state"], &ghost["message"]),
        (
            &json!("TASK_LOST"),
            &json!("Reconciliation: Task is unknown")
        )
    );

    // KILL: TASK_KILLED through the reliable stream; an unknown task is reconciled.
    assert_eq!(
        client
            .call("KILL", json!({"kill": {"task_id": {"value": "web"}}}))
            .0,
        202
    );
    let killed = client.stream.update_for("web");
    assert_eq!(killed["state"], "TASK_KILLED");
    client.ack(&killed);
    assert_eq!(
        client
            .call(
                "KILL",
                json!({"kill": {"task_id": {"value": "nope"}, "agent_id": slave2["agent_id"]}})
            )
            .0,
        202
    );
    let nope = client.stream.update_for("nope");
    assert_eq!(
        (&nope["state"], &nope["message"]),
        (
            &json!("TASK_LOST"),
            &json!("Reconciliation: Task is unknown to the agent")
        )
    );
    // Acknowledged terminal tasks are forgotten.
    assert!(wait_until(DEADLINE, || client.sim_state()["tasks"]
        .as_array()
        .is_some_and(|t| t.is_empty())));
}

/// A tick looks only at tasks that may be due (turn RUNNING, or resend an
/// unacknowledged update), never at every task: once every update is
/// acknowledged and the resend times are past, ticks look at nothing.
#[test]
fn ticks_look_only_at_tasks_that_are_due() {
    const TASKS: usize = 10;
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offer = client.offers()[0].clone();
    let tasks = (0..TASKS)
        .map(|n| docker_task(&format!("t{n}"), &offer, 31010 + n as u64))
        .collect();
    assert_eq!(client.call("ACCEPT", accept(&offer, tasks)).0, 202);
    let mut running = std::collections::BTreeSet::new();
    while running.len() < TASKS {
        let status = client.stream.expect("UPDATE")["update"]["status"].clone();
        if status.get("uuid").is_some() {
            client.ack(&status);
        }
        if status["state"] == "TASK_RUNNING" {
            running.insert(status["task_id"]["value"].to_string());
        }
    }
    assert!(wait_until(DEADLINE, || client.sim_state()
        ["unacknowledged"]
        .as_object()
        .is_some_and(|it| it.is_empty())));
    // Entries left by acknowledged updates go when their resend time passes.
    assert!(wait_until(DEADLINE, || client.sim_state()["due_entries"] == 0));
    let examined = |client: &Client| client.sim_state()["tick_examined"].as_u64();
    let rounds = |client: &Client| client.sim_state()["allocation_rounds"].as_u64();
    let (before, start) = (examined(&client), rounds(&client).unwrap_or(0));
    assert!(before.is_some_and(|n| n >= TASKS as u64), "{before:?}");
    // Ticks run more often than allocation rounds: three rounds, many ticks.
    assert!(wait_until(DEADLINE, || rounds(&client).is_some_and(|n| n >= start + 3)));
    assert_eq!(examined(&client), before, "ticks looked at running tasks");
    assert_eq!(
        client.sim_state()["tasks"].as_array().map(Vec::len),
        Some(TASKS)
    );
}

#[test]
fn invalid_offers_and_invalid_tasks_are_refused_like_the_master_does() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offers = client.offers();
    let first = offers[0].clone();
    // Two tasks on one offer: the first fits, the second asks for more than is left.
    let mut greedy = docker_task("greedy", &first, 31002);
    greedy["resources"][1]["scalar"]["value"] = json!(1_000_000);
    let mut no_docker = docker_task("no-docker", &first, 31003);
    no_docker["container"] = json!({"type": "DOCKER"});
    let tasks = vec![docker_task("fits", &first, 31001), greedy, no_docker];
    assert_eq!(client.call("ACCEPT", accept(&first, tasks)).0, 202);
    let greedy = client.stream.update_for("greedy");
    assert_eq!(
        (&greedy["state"], &greedy["reason"]),
        (&json!("TASK_ERROR"), &json!("REASON_TASK_INVALID"))
    );
    assert!(
        greedy["message"]
            .as_str()
            .unwrap_or("")
            .contains("is more than available"),
        "{greedy}"
    );
    assert!(greedy.get("uuid").is_none());
    let no_docker = client.stream.update_for("no-docker");
    assert_eq!(no_docker["state"], "TASK_ERROR");
    assert_eq!(client.stream.update_for("fits")["state"], "TASK_STARTING");
    // The used offer again: TASK_LOST for a framework that is not PARTITION_AWARE.
    assert_eq!(
        client
            .call(
                "ACCEPT",
                accept(&first, vec![docker_task("late", &first, 31009)])
            )
            .0,
        202
    );
    let late = client.stream.update_for("late");
    assert_eq!(
        (&late["state"], &late["reason"], &late["source"]),
        (
            &json!("TASK_LOST"),
            &json!("REASON_INVALID_OFFERS"),
            &json!("SOURCE_MASTER")
        )
    );
    assert_eq!(
        late["message"],
        format!(
            "Task launched with invalid offers: Offer {} is no longer valid",
            first["id"]["value"].as_str().unwrap_or("")
        )
    );
    assert!(late.get("uuid").is_none());

    // A PARTITION_AWARE framework gets TASK_DROPPED instead.
    drop(client);
    let mut aware = Client::subscribe(
        &master,
        framework_info(json!({"capabilities": [{"type": "PARTITION_AWARE"}]})),
    );
    let offer = aware.offers()[0].clone();
    let mut stale = offer.clone();
    stale["id"]["value"] = json!("no-such-offer");
    assert_eq!(
        aware
            .call(
                "ACCEPT",
                accept(&stale, vec![docker_task("dropped", &offer, 31010)])
            )
            .0,
        202
    );
    let dropped = aware.stream.update_for("dropped");
    assert_eq!(
        (&dropped["state"], &dropped["reason"]),
        (&json!("TASK_DROPPED"), &json!("REASON_INVALID_OFFERS"))
    );
}

#[test]
fn declined_agents_stay_away_until_revive_and_suppress_stops_offers() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offers = client.offers();
    let ids: Vec<Value> = offers.iter().map(|offer| offer["id"].clone()).collect();
    assert_eq!(
        client
            .call(
                "DECLINE",
                json!({"decline": {"offer_ids": ids, "filters": {"refuse_seconds": 3600}}})
            )
            .0,
        202
    );
    // Unknown offer ids are ignored.
    assert_eq!(
        client
            .call(
                "DECLINE",
                json!({"decline": {"offer_ids": [{"value": "nope"}]}})
            )
            .0,
        202
    );
    // Allocation rounds go on (every 100 ms): a new agent is offered, the
    // declined ones are not.
    let slave4 = json!({"hostname": "slave4", "cpus": 1, "mem": 512});
    let (status, _) = request(
        &client.http,
        "POST",
        &format!("http://{}/sim/agents", client.master),
        Some(&slave4.to_string()),
    );
    assert_eq!(status, 200);
    let next: Vec<Value> = client
        .offers()
        .iter()
        .map(|offer| offer["hostname"].clone())
        .collect();
    assert_eq!(next, [json!("slave4")]);
    assert_eq!(client.call("REVIVE", json!({})).0, 202);
    let mut revived: Vec<String> = client
        .offers()
        .iter()
        .filter_map(|offer| offer["hostname"].as_str().map(str::to_string))
        .collect();
    revived.sort();
    assert_eq!(
        revived,
        ["slave1", "slave2", "slave3"],
        "REVIVE clears the filters"
    );
    assert_eq!(client.call("SUPPRESS", json!({})).0, 202);
    let ids: Vec<Value> = client.sim_state()["offers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| json!({"value": o["id"]}))
        .collect();
    assert_eq!(
        client
            .call(
                "DECLINE",
                json!({"decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}})
            )
            .0,
        202
    );
    assert!(wait_until(DEADLINE, || client.sim_state()["frameworks"][0]
        ["suppressed"]
        == true));
    // Declined without a filter, the agents would be offered again in the
    // next round. Let three rounds pass, then put a marker on the stream:
    // nothing before it may be an offer.
    let rounds = |client: &Client| {
        client.sim_state()["allocation_rounds"]
            .as_u64()
            .unwrap_or(0)
    };
    let start = rounds(&client);
    assert!(wait_until(DEADLINE, || rounds(&client) >= start + 3));
    let marker = json!({"reconcile": {"tasks": [{"task_id": {"value": "marker"}}]}});
    assert_eq!(client.call("RECONCILE", marker).0, 202);
    loop {
        let event = client.stream.next().expect("the stream goes on");
        assert_ne!(
            event["type"], "OFFERS",
            "an offer while suppressed: {event}"
        );
        if event["type"] == "UPDATE" && event["update"]["status"]["task_id"]["value"] == "marker" {
            break;
        }
    }
}

#[test]
fn failover_replaces_the_old_subscriber_and_teardown_is_final() {
    let master = lab();
    let mut first = Client::subscribe(&master, framework_info(json!({})));
    let offer = first.offers()[0].clone();
    assert_eq!(
        first
            .call(
                "ACCEPT",
                accept(&offer, vec![docker_task("kept", &offer, 31020)])
            )
            .0,
        202
    );
    let starting = first.stream.update_for("kept");
    // A second subscriber with the same id takes over; the first hears why.
    let id = first.framework_id.clone();
    let info = framework_info(json!({"id": {"value": id}}));
    let mut call = subscribe_call(info.clone());
    call["framework_id"] = json!({"value": id});
    let mut second = subscribe(&first.master, &call, "").expect("resubscribes");
    assert_eq!(second.next().expect("event")["type"], "SUBSCRIBED");
    let error = first.stream.expect("ERROR");
    assert_eq!(error["error"]["message"], "Framework failed over");
    assert!(first.stream.next().is_none(), "the old stream is closed");
    // The unacknowledged update is sent again on the new stream, same uuid.
    let resent = second.update_for("kept");
    assert_eq!(resent["uuid"], starting["uuid"]);
    let mut client = Client {
        stream: second,
        ..first
    };
    client.ack(&resent);
    assert_eq!(client.stream.update_for("kept")["state"], "TASK_RUNNING");
    // TEARDOWN: the stream ends with the final chunk; the id is gone for good.
    assert_eq!(client.call("TEARDOWN", json!({})).0, 202);
    while client.stream.next().is_some() {}
    let state = client.sim_state();
    assert_eq!(state["tasks"], json!([]), "teardown kills every task");
    let mut again = subscribe(&client.master, &call, "").expect("200 with an ERROR");
    assert_eq!(
        again.next().expect("event")["error"]["message"],
        "Framework has been removed"
    );
    assert!(again.next().is_none());
}

#[test]
fn a_framework_whose_failover_timeout_expires_is_removed() {
    let master = lab();
    let client = Client::subscribe(&master, framework_info(json!({"failover_timeout": 0.2})));
    let (status, _) = request(
        &client.http,
        "POST",
        &format!("http://{}/sim/drop-stream", client.master),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        wait_until(DEADLINE, || client.sim_state()["removed_frameworks"] == 1),
        "{}",
        client.sim_state()
    );
}

#[test]
fn removing_an_agent_loses_its_tasks_and_reports_the_failure() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offers = client.offers();
    let slave3 = offers
        .iter()
        .find(|offer| offer["hostname"] == "slave3")
        .expect("slave3")
        .clone();
    assert_eq!(
        client
            .call(
                "ACCEPT",
                accept(&slave3, vec![docker_task("doomed", &slave3, 31030)])
            )
            .0,
        202
    );
    let starting = client.stream.update_for("doomed");
    client.ack(&starting);
    let (status, reply) = request(
        &client.http,
        "DELETE",
        &format!("http://{}/sim/agents/slave3", client.master),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    let lost = client.stream.update_for("doomed");
    assert_eq!(
        (&lost["state"], &lost["reason"]),
        (&json!("TASK_LOST"), &json!("REASON_AGENT_REMOVED"))
    );
    let failure = client.stream.expect("FAILURE");
    assert_eq!(failure["failure"]["agent_id"], slave3["agent_id"]);
    let (status, _) = request(
        &client.http,
        "DELETE",
        &format!("http://{}/sim/agents/slave3", client.master),
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn control_endpoints_validate_their_input() {
    let master = sim::Master::start(SimConfig {
        listen: "127.0.0.1:0".to_string(),
        ..SimConfig::default()
    })
    .expect("starts");
    let http = http_agent();
    let url = |path: &str| format!("http://{}{path}", master.addr());
    assert_eq!(
        request(&http, "POST", &url("/sim/agents"), Some("{")).0,
        400
    );
    assert_eq!(
        request(
            &http,
            "POST",
            &url("/sim/agents"),
            Some(r#"{"hostname":"slave1","cpus":1,"mem":1}"#)
        )
        .0,
        409
    );
    assert_eq!(
        request(&http, "POST", &url("/sim/tasks/none/fail"), Some("")).0,
        404
    );
    assert_eq!(request(&http, "GET", &url("/sim/nothing"), None).0, 404);
    assert_eq!(
        request(&http, "GET", &url("/version"), None).1["version"],
        sim::MESOS_VERSION
    );
}

#[test]
fn the_scheduler_recovers_a_task_the_sim_fails() {
    let lab = crate::support::Lab::start();
    lab.post("/client/task", crate::support::STRESS60);
    let running = lab.wait_running("stress60", 1);
    let internal = running[0]["InternalID"].as_str().unwrap_or("").to_string();
    let (status, reply) = lab.sim_post(&format!("/sim/tasks/{internal}/fail"), "");
    assert_eq!(status, 200, "{reply}");
    // The default restart policy is "never", as in the original: the task leaves the list.
    assert!(wait_until(DEADLINE, || lab
        .tasks_named("stress60")
        .is_empty()));
    let (status, _) = lab.sim_delete("/sim/agents/slave1");
    assert_eq!(status, 200);
}

#[test]
fn kill_goes_through_killing_for_frameworks_that_ask_and_ids_stay_taken_until_acknowledged() {
    let master = lab();
    let mut client = Client::subscribe(
        &master,
        framework_info(json!({"capabilities": [{"type": "TASK_KILLING_STATE"}]})),
    );
    let offer = client.offers()[0].clone();
    assert_eq!(
        client
            .call(
                "ACCEPT",
                accept(&offer, vec![docker_task("k", &offer, 31040)])
            )
            .0,
        202
    );
    let starting = client.stream.update_for("k");
    client.ack(&starting);
    let running = client.stream.update_for("k");
    client.ack(&running);
    assert_eq!(
        client
            .call("KILL", json!({"kill": {"task_id": {"value": "k"}}}))
            .0,
        202
    );
    let killing = client.stream.update_for("k");
    assert_eq!(killing["state"], "TASK_KILLING");
    client.ack(&killing);
    let killed = client.stream.update_for("k");
    assert_eq!(killed["state"], "TASK_KILLED");
    assert!(
        killed.get("reason").is_none(),
        "a running task is not killed during launch: {killed}"
    );
    // Not yet acknowledged: the id is still taken.
    let again = client.offers()[0].clone();
    assert_eq!(
        client
            .call(
                "ACCEPT",
                accept(&again, vec![docker_task("k", &again, 31041)])
            )
            .0,
        202
    );
    let refused = client.stream.update_for("k");
    let refused = if refused["state"] == "TASK_KILLED" {
        client.stream.update_for("k")
    } else {
        refused
    };
    assert_eq!(
        (&refused["state"], &refused["message"]),
        (&json!("TASK_ERROR"), &json!("Task has duplicate ID: k"))
    );
}

#[test]
fn subscribe_replaces_the_suppression_with_its_suppressed_roles() {
    let master = lab();
    let addr = master.addr().to_string();
    let call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info(json!({})), "suppressed_roles": ["*"]}});
    let mut stream = subscribe(&addr, &call, "").expect("subscribes");
    let subscribed = stream.next().expect("SUBSCRIBED");
    let id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let http = http_agent();
    let state = || request(&http, "GET", &format!("http://{addr}/sim/state"), None).1;
    assert!(
        wait_until(DEADLINE, || state()["frameworks"][0]["suppressed"] == true),
        "{}",
        state()
    );
    // Suppressed from the start: REVIVE brings the offers.
    let mut client = Client {
        master: addr.clone(),
        http: http_agent(),
        stream,
        framework_id: id,
    };
    assert_eq!(state()["offers"], json!([]));
    assert_eq!(client.call("REVIVE", json!({})).0, 202);
    assert_eq!(client.offers().len(), 3);
    // A role the framework does not have is refused.
    let bad = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info(json!({})), "suppressed_roles": ["other"]}});
    let mut refused = subscribe(&addr, &bad, "").expect("200 with an ERROR");
    let error = refused.next().expect("an event");
    assert_eq!(
        error["error"]["message"], "Suppressed role 'other' is not contained in the list of roles",
        "{error}"
    );
}

#[test]
fn reconciliation_answers_the_last_state_sent_not_the_agents_latest() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offer = client.offers()[0].clone();
    let launch = accept(&offer, vec![docker_task("r", &offer, 31050)]);
    assert_eq!(client.call("ACCEPT", launch).0, 202);
    let starting = client.stream.agent_update_for("r", "TASK_STARTING");
    // The agent runs the task, but RUNNING waits behind the unacknowledged STARTING.
    assert!(
        wait_until(DEADLINE, || client.sim_state()["tasks"][0]["state"]
            == "TASK_RUNNING"),
        "{}",
        client.sim_state()
    );
    assert_eq!(client.call("RECONCILE", json!({"reconcile": {}})).0, 202);
    let implicit = client.stream.master_update_for("r");
    assert_eq!(
        (
            &implicit["state"],
            &implicit["reason"],
            &implicit["message"]
        ),
        (
            &json!("TASK_STARTING"),
            &json!("REASON_RECONCILIATION"),
            &json!("Reconciliation: Latest task state")
        ),
        "{implicit}"
    );
    client.ack(&starting);
    client.stream.agent_update_for("r", "TASK_RUNNING");
    let explicit = json!({"reconcile": {"tasks": [{"task_id": {"value": "r"}}]}});
    assert_eq!(client.call("RECONCILE", explicit).0, 202);
    assert_eq!(
        client.stream.master_update_for("r")["state"],
        "TASK_RUNNING"
    );
}

/// The agent ids of the offers outstanding now.
fn offered_agents(client: &Client) -> Vec<Value> {
    client.sim_state()["offers"]
        .as_array()
        .map(|offers| offers.iter().map(|o| o["agent_id"].clone()).collect())
        .unwrap_or_default()
}

#[test]
fn an_unreachable_agent_comes_back_with_its_id_and_its_tasks() {
    let master = lab();
    let mut client = Client::subscribe(
        &master,
        framework_info(json!({"capabilities": [{"type": "PARTITION_AWARE"}]})),
    );
    let offers = client.offers();
    let slave3 = offers
        .iter()
        .find(|offer| offer["hostname"] == "slave3")
        .expect("slave3")
        .clone();
    let agent = slave3["agent_id"]["value"].clone();
    let launch = accept(&slave3, vec![docker_task("u", &slave3, 31060)]);
    assert_eq!(client.call("ACCEPT", launch).0, 202);
    let starting = client.stream.agent_update_for("u", "TASK_STARTING");
    client.ack(&starting);
    let running = client.stream.agent_update_for("u", "TASK_RUNNING");
    client.ack(&running);
    // The rest of slave3 is offered again, so going away rescinds an offer.
    assert!(wait_until(DEADLINE, || offered_agents(&client).contains(&json!(agent))));
    let sim = |method: &str, path: &str| {
        request(
            &client.http,
            method,
            &format!("http://{}{path}", client.master),
            Some(""),
        )
    };
    let (status, reply) = sim("POST", "/sim/agents/slave3/unreachable");
    assert_eq!((status, &reply["unreachable"]), (200, &agent), "{reply}");
    assert_eq!(sim("POST", "/sim/agents/slave3/unreachable").0, 409);
    let rescind = client.stream.expect("RESCIND");
    assert!(rescind["rescind"]["offer_id"]["value"].is_string());
    let unreachable = client.stream.master_update_for("u");
    assert_eq!(
        (
            &unreachable["state"],
            &unreachable["reason"],
            &unreachable["source"]
        ),
        (
            &json!("TASK_UNREACHABLE"),
            &json!("REASON_AGENT_REMOVED"),
            &json!("SOURCE_MASTER")
        ),
        "{unreachable}"
    );
    assert!(unreachable["unreachable_time"]["nanoseconds"].is_i64());
    let failure = client.stream.expect("FAILURE");
    assert_eq!(failure["failure"]["agent_id"]["value"], agent);
    // The master answers for the task only when asked with its agent.
    let explicit = json!({"reconcile": {"tasks": [{"task_id": {"value": "u"}, "agent_id": {"value": agent}}]}});
    assert_eq!(client.call("RECONCILE", explicit.clone()).0, 202);
    let answer = client.stream.master_update_for("u");
    assert_eq!(
        (&answer["state"], &answer["message"]),
        (
            &json!("TASK_UNREACHABLE"),
            &json!("Reconciliation: Task is unreachable")
        )
    );
    // Its id stays taken, and slave3 gets no offers while it is away.
    let other = client.sim_state()["offers"][0].clone();
    let offer = json!({"id": {"value": other["id"]}, "agent_id": {"value": other["agent_id"]}});
    let relaunch = accept(&offer, vec![docker_task("u", &offer, 31061)]);
    assert_eq!(client.call("ACCEPT", relaunch).0, 202);
    let refused = client.stream.master_update_for("u");
    assert_eq!(
        (&refused["state"], &refused["message"]),
        (
            &json!("TASK_ERROR"),
            &json!("Task reuses the ID of an unreachable task: u")
        )
    );
    let rounds = client.sim_state()["allocation_rounds"]
        .as_u64()
        .unwrap_or(0);
    assert!(wait_until(DEADLINE, || client.sim_state()
        ["allocation_rounds"]
        .as_u64()
        .unwrap_or(0)
        >= rounds + 3));
    assert!(!offered_agents(&client).contains(&json!(agent)));
    // Back with the same id: the task is RUNNING again and offers resume.
    let (status, reply) = sim("POST", "/sim/agents/slave3/reregister");
    assert_eq!((status, &reply["reregistered"]), (200, &agent), "{reply}");
    assert_eq!(sim("POST", "/sim/agents/slave3/reregister").0, 409);
    let back = client.stream.master_update_for("u");
    assert_eq!(
        (&back["state"], &back["reason"], &back["message"]),
        (
            &json!("TASK_RUNNING"),
            &json!("REASON_AGENT_REREGISTERED"),
            &json!("Unreachable agent re-reregistered")
        ),
        "{back}"
    );
    assert_eq!(back["agent_id"]["value"], agent);
    assert!(wait_until(DEADLINE, || offered_agents(&client).contains(&json!(agent))));
    assert_eq!(client.call("RECONCILE", explicit.clone()).0, 202);
    assert_eq!(
        client.stream.master_update_for("u")["state"],
        "TASK_RUNNING"
    );
    // Removed is different: gone for good, and a new agent gets a new id.
    assert_eq!(sim("DELETE", "/sim/agents/slave3").0, 200);
    let gone = client.stream.master_update_for("u");
    assert_eq!(
        (&gone["state"], &gone["message"]),
        (
            &json!("TASK_GONE_BY_OPERATOR"),
            &json!("Agent has been marked gone")
        )
    );
    assert_eq!(client.call("RECONCILE", explicit).0, 202);
    let answer = client.stream.master_update_for("u");
    assert_eq!(
        (&answer["state"], &answer["message"]),
        (
            &json!("TASK_GONE_BY_OPERATOR"),
            &json!("Reconciliation: Task is gone")
        )
    );
    assert_eq!(sim("POST", "/sim/agents/slave3/reregister").0, 404);
    let (status, added) = request(
        &client.http,
        "POST",
        &format!("http://{}/sim/agents", client.master),
        Some(r#"{"hostname":"slave3","cpus":2,"mem":1024}"#),
    );
    assert_eq!(status, 200);
    assert_ne!(added["id"], agent);
}

#[test]
fn frameworks_that_are_not_partition_aware_hear_lost_from_an_unreachable_agent() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offer = client.offers()[0].clone();
    let hostname = offer["hostname"].as_str().unwrap_or("").to_string();
    let launch = accept(&offer, vec![docker_task("n", &offer, 31070)]);
    assert_eq!(client.call("ACCEPT", launch).0, 202);
    let starting = client.stream.agent_update_for("n", "TASK_STARTING");
    client.ack(&starting);
    let (status, _) = request(
        &client.http,
        "POST",
        &format!("http://{}/sim/agents/{hostname}/unreachable", client.master),
        Some(""),
    );
    assert_eq!(status, 200);
    let lost = client.stream.master_update_for("n");
    assert_eq!(
        (&lost["state"], &lost["reason"]),
        (&json!("TASK_LOST"), &json!("REASON_AGENT_REMOVED"))
    );
    assert_eq!(
        client.stream.expect("FAILURE")["failure"]["agent_id"],
        offer["agent_id"]
    );
}

#[test]
fn no_leader_means_503_until_one_is_elected() {
    let mut config = fast_sim(sim::charmander_lab());
    config.leader_after = std::time::Duration::from_secs(3600);
    let master = sim::Master::start(config).expect("starts");
    let addr = master.addr().to_string();
    let http = http_agent();
    let no_leader = (503, "No leader elected".to_string());
    let call = subscribe_call(framework_info(json!({})));
    assert_eq!(subscribe(&addr, &call, "").err(), Some(no_leader.clone()));
    // Every scheduler call, valid or not; the control endpoints stay open.
    let kill = json!({"type": "KILL", "framework_id": {"value": "f"}, "kill": {"task_id": {"value": "t"}}});
    let mut response = http
        .post(format!("http://{addr}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .send(kill.to_string())
        .expect("answered");
    assert_eq!(
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default()
        ),
        no_leader
    );
    let control = |path: &str| request(&http, "POST", &format!("http://{addr}{path}"), Some(""));
    assert_eq!(control("/sim/leader/elect").0, 200);
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    assert_eq!(client.offers().len(), 3);
    // A master that loses leadership drops its subscribers.
    assert_eq!(control("/sim/leader/lose").0, 200);
    assert!(wait_until(DEADLINE, || client.stream.next().is_none()));
    assert_eq!(subscribe(&addr, &call, "").err(), Some(no_leader));
}

#[test]
fn a_resubscribe_may_not_change_the_principal() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let id = json!({"value": client.framework_id});
    for principal in ["added", ""] {
        let info = framework_info(json!({"principal": principal, "id": id}));
        let call =
            json!({"type": "SUBSCRIBE", "framework_id": id, "subscribe": {"framework_info": info}});
        let mut refused = subscribe(&client.master, &call, "").expect("200 with an ERROR");
        let error = refused.next().expect("an event");
        assert_eq!(
            (&error["type"], &error["error"]["message"]),
            (
                &json!("ERROR"),
                &json!("Changing framework's principal is not allowed.")
            ),
            "{principal:?}"
        );
        assert!(refused.next().is_none(), "the stream ends");
    }
    // The registered subscriber keeps its stream.
    assert_eq!(client.call("REVIVE", json!({})).0, 202);
    assert!(!client.offers().is_empty());
}

#[test]
fn invalid_roles_are_refused_with_the_masters_words() {
    let master = lab();
    let addr = master.addr().to_string();
    let refusal = |info: Value| {
        let mut stream = subscribe(&addr, &subscribe_call(info), "").expect("200");
        let event = stream.next().expect("an event");
        let message = if event["type"] == "ERROR" {
            assert!(stream.next().is_none(), "the stream ends after {event}");
            event["error"]["message"].as_str().unwrap_or("").to_string()
        } else {
            String::new()
        };
        message
    };
    let single = "'FrameworkInfo.role' is not a valid role: ";
    for (role, error) in [
        (
            " x",
            "Role component ' x' is invalid because it contains backspace or whitespace",
        ),
        (
            "a\u{7f}",
            "Role component 'a\u{7f}' is invalid because it contains backspace or whitespace",
        ),
        (
            "-a",
            "Role component '-a' is invalid because it starts with a dash",
        ),
        (".", "Role '.' cannot include '.' as a component"),
        ("..", "Role '..' cannot include '..' as a component"),
        ("a/*", "Role 'a/*' cannot include '*' as a component"),
        ("/a", "Role '/a' cannot start with a slash"),
        ("a/", "Role 'a/' cannot end with a slash"),
        ("a//b", "Role 'a//b' cannot contain two adjacent slashes"),
    ] {
        assert_eq!(
            refusal(framework_info(json!({"role": role}))),
            format!("{single}{error}"),
            "{role:?}"
        );
    }
    let multi = |roles: Value| {
        framework_info(json!({"roles": roles, "capabilities": [{"type": "MULTI_ROLE"}]}))
    };
    assert_eq!(
        refusal(multi(json!(["a", "-b"]))),
        "'FrameworkInfo.roles' contains invalid role: Role component '-b' is invalid because it starts with a dash"
    );
    assert_eq!(
        refusal(multi(json!(["a", "a"]))),
        "'FrameworkInfo.roles' contains duplicate items: { a }"
    );
    assert_eq!(refusal(framework_info(json!({"role": "lab/a.b"}))), "");
}

#[test]
fn a_restarted_master_knows_no_agent_until_it_reregisters() {
    let master = lab();
    let info = framework_info(json!({"capabilities": [{"type": "PARTITION_AWARE"}]}));
    let mut client = Client::subscribe(&master, info.clone());
    let offer = client.offers()[0].clone();
    let hostname = offer["hostname"].as_str().unwrap_or("").to_string();
    let agent = offer["agent_id"]["value"].clone();
    let launch = accept(&offer, vec![docker_task("m", &offer, 31080)]);
    assert_eq!(client.call("ACCEPT", launch).0, 202);
    let starting = client.stream.agent_update_for("m", "TASK_STARTING");
    client.ack(&starting);
    let running = client.stream.agent_update_for("m", "TASK_RUNNING");
    client.ack(&running);
    let (http, addr) = (http_agent(), client.master.clone());
    let sim = |path: &str, body: &str| {
        request(&http, "POST", &format!("http://{addr}{path}"), Some(body))
    };
    let old_master = client.sim_state()["master_id"].clone();
    let (status, restarted) = sim("/sim/master/restart", "");
    assert_eq!(status, 200, "{restarted}");
    assert_ne!(restarted["master_id"], old_master);
    assert!(wait_until(DEADLINE, || client.stream.next().is_none()));
    // The framework resubscribes with its id to a master that knows no agent
    // and not its FrameworkInfo either, so even a new principal is taken.
    let resubscribe = |client: &mut Client, principal: Option<&str>| {
        let id = json!({"value": client.framework_id});
        let mut info = info.clone();
        info["id"] = id.clone();
        if let Some(principal) = principal {
            info["principal"] = json!(principal);
        }
        let mut call = subscribe_call(info);
        call["framework_id"] = id;
        let mut stream = subscribe(&client.master, &call, "").expect("resubscribes");
        let subscribed = stream.next().expect("an event");
        if subscribed["type"] == "ERROR" {
            return Err(subscribed["error"]["message"].clone());
        }
        assert_eq!(
            subscribed["subscribed"]["framework_id"]["value"],
            client.framework_id
        );
        client.stream = stream;
        Ok(())
    };
    assert_eq!(resubscribe(&mut client, Some("later")), Ok(()));
    let explicit = json!({"reconcile": {"tasks": [{"task_id": {"value": "m"}, "agent_id": {"value": agent}}]}});
    assert_eq!(client.call("RECONCILE", explicit.clone()).0, 202);
    let unknown = client.stream.master_update_for("m");
    assert_eq!(
        (&unknown["state"], &unknown["message"]),
        (
            &json!("TASK_UNKNOWN"),
            &json!("Reconciliation: Task is unknown")
        )
    );
    let rounds = client.sim_state()["allocation_rounds"]
        .as_u64()
        .unwrap_or(0);
    assert!(wait_until(DEADLINE, || client.sim_state()
        ["allocation_rounds"]
        .as_u64()
        .unwrap_or(0)
        >= rounds + 3));
    assert_eq!(client.sim_state()["offers"], json!([]));
    // The agent comes back with its id and its task, still running.
    let (status, reply) = sim(&format!("/sim/agents/{hostname}/reregister"), "");
    assert_eq!((status, &reply["reregistered"]), (200, &agent), "{reply}");
    let back = client.stream.master_update_for("m");
    assert_eq!(
        (&back["state"], &back["reason"], &back["message"]),
        (
            &json!("TASK_RUNNING"),
            &json!("REASON_AGENT_REREGISTERED"),
            &json!("Unknown agent reregistered")
        )
    );
    assert!(wait_until(DEADLINE, || offered_agents(&client).contains(&json!(agent))));
    // Restarted again, the agents come back by themselves.
    assert_eq!(
        sim("/sim/master/restart", r#"{"agents_reregister_after": 0}"#).0,
        200
    );
    assert!(wait_until(DEADLINE, || {
        let state = client.sim_state();
        state["agents"]
            .as_array()
            .is_some_and(|agents| agents.iter().all(|a| a["registered"] == true))
    }));
    // The agents brought the FrameworkInfo back: the principal holds again.
    assert_eq!(
        resubscribe(&mut client, None),
        Err(json!("Changing framework's principal is not allowed."))
    );
    assert_eq!(resubscribe(&mut client, Some("later")), Ok(()));
    assert_eq!(client.call("RECONCILE", explicit).0, 202);
    assert_eq!(
        client.stream.master_update_for("m")["state"],
        "TASK_RUNNING"
    );
    assert_eq!(
        sim("/sim/master/restart", r#"{"agents_reregister_after": -1}"#).0,
        400
    );
}

#[test]
fn reserved_resources_go_only_to_their_role_and_tasks_must_ask_for_them() {
    let reserved = sim::agent_from_json(&json!({"hostname": "r1", "cpus": 2, "mem": 1024,
        "reserved": {"role": "lab", "cpus": 1, "mem": 512}}))
    .expect("valid agent");
    let resources = |offer: &Value| -> Vec<(String, String, f64)> {
        offer["resources"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|r| r["type"] == "SCALAR")
                    .map(|r| {
                        let (name, role) = (r["name"].as_str(), r["role"].as_str());
                        let value = r["scalar"]["value"].as_f64().unwrap_or(-1.0);
                        (
                            name.unwrap_or("").to_string(),
                            role.unwrap_or("").to_string(),
                            value,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let scalar = |name: &str, role: &str, value: f64| json!({"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": role});
    let task = |id: &str, offer: &Value, list: Vec<Value>| {
        json!({"name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
            "resources": list, "command": {"shell": true, "value": "sleep 60"}})
    };
    // A framework of the role sees the reservation, with the role on the resources.
    let master = sim::Master::start(fast_sim(vec![reserved.clone()])).expect("starts");
    let mut client = Client::subscribe(&master, framework_info(json!({"role": "lab"})));
    let offer = client.offers()[0].clone();
    let expected = |pairs: &[(&str, &str, f64)]| -> Vec<(String, String, f64)> {
        pairs
            .iter()
            .map(|(n, r, v)| (n.to_string(), r.to_string(), *v))
            .collect()
    };
    assert_eq!(
        resources(&offer),
        expected(&[
            ("cpus", "lab", 1.0),
            ("mem", "lab", 512.0),
            ("cpus", "*", 2.0),
            ("mem", "*", 1024.0)
        ])
    );
    // Asking for unreserved cpus beyond the unreserved part fails, as on a real master.
    let greedy = task(
        "greedy",
        &offer,
        vec![scalar("cpus", "*", 2.5), scalar("mem", "*", 32.0)],
    );
    let fitting = task(
        "fitting",
        &offer,
        vec![scalar("cpus", "lab", 0.5), scalar("mem", "*", 32.0)],
    );
    assert_eq!(
        client
            .call("ACCEPT", accept(&offer, vec![greedy, fitting]))
            .0,
        202
    );
    let refused = client.stream.master_update_for("greedy");
    assert_eq!(refused["state"], "TASK_ERROR");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Total resources "),
        "{refused}"
    );
    assert_eq!(
        client.stream.agent_update_for("fitting", "TASK_STARTING")["state"],
        "TASK_STARTING"
    );
    // A framework of another role is offered only the unreserved part.
    let master = sim::Master::start(fast_sim(vec![reserved])).expect("starts");
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offer = client.offers()[0].clone();
    assert_eq!(
        resources(&offer),
        expected(&[("cpus", "*", 2.0), ("mem", "*", 1024.0)])
    );
    let stolen = task(
        "stolen",
        &offer,
        vec![scalar("cpus", "lab", 0.5), scalar("mem", "*", 32.0)],
    );
    assert_eq!(client.call("ACCEPT", accept(&offer, vec![stolen])).0, 202);
    assert_eq!(
        client.stream.master_update_for("stolen")["state"],
        "TASK_ERROR"
    );
}

#[test]
fn a_master_restarted_with_a_replicated_registry_is_silent_about_agents_not_yet_back() {
    let master = lab();
    let info = framework_info(json!({"capabilities": [{"type": "PARTITION_AWARE"}]}));
    let mut client = Client::subscribe(&master, info.clone());
    let offer = client.offers()[0].clone();
    let hostname = offer["hostname"].as_str().unwrap_or("").to_string();
    let agent = offer["agent_id"]["value"].clone();
    let launch = accept(&offer, vec![docker_task("q", &offer, 31090)]);
    assert_eq!(client.call("ACCEPT", launch).0, 202);
    let starting = client.stream.agent_update_for("q", "TASK_STARTING");
    client.ack(&starting);
    let running = client.stream.agent_update_for("q", "TASK_RUNNING");
    client.ack(&running);
    let (http, addr) = (http_agent(), client.master.clone());
    let sim = |method: &str, path: &str, body: &str| {
        request(&http, method, &format!("http://{addr}{path}"), Some(body))
    };
    let (status, _) = sim(
        "POST",
        "/sim/master/restart",
        r#"{"registry": "replicated"}"#,
    );
    assert_eq!(status, 200);
    assert!(wait_until(DEADLINE, || client.stream.next().is_none()));
    let id = json!({"value": client.framework_id});
    let mut info = info.clone();
    info["id"] = id.clone();
    let mut call = subscribe_call(info);
    call["framework_id"] = id;
    client.stream = subscribe(&client.master, &call, "").expect("resubscribes");
    assert_eq!(
        client.stream.next().expect("an event")["type"],
        "SUBSCRIBED"
    );
    // No answer for a task on a recovered agent, nor for one with no agent
    // named; a task on an agent the master has seen is answered, and the
    // stream is ordered, so nothing came for the others before it.
    let (status, fresh) = sim(
        "POST",
        "/sim/agents",
        r#"{"hostname":"fresh","cpus":1,"mem":128}"#,
    );
    assert_eq!(status, 200);
    let reconcile = |client: &Client, tasks: Value| {
        assert_eq!(
            client
                .call("RECONCILE", json!({"reconcile": {"tasks": tasks}}))
                .0,
            202
        );
    };
    reconcile(
        &client,
        json!([{"task_id": {"value": "q"}, "agent_id": {"value": agent}},
               {"task_id": {"value": "ghost"}}]),
    );
    reconcile(
        &client,
        json!([{"task_id": {"value": "probe"}, "agent_id": {"value": fresh["id"]}}]),
    );
    let next_update =
        |client: &mut Client| client.stream.expect("UPDATE")["update"]["status"].clone();
    let probe = next_update(&mut client);
    assert_eq!(
        (&probe["task_id"]["value"], &probe["state"]),
        (&json!("probe"), &json!("TASK_GONE")),
        "{probe}"
    );
    // Back, the agent's task comes back silently: the framework must ask.
    assert_eq!(
        sim("POST", &format!("/sim/agents/{hostname}/reregister"), "").0,
        200
    );
    reconcile(
        &client,
        json!([{"task_id": {"value": "q"}, "agent_id": {"value": agent}}]),
    );
    let answer = next_update(&mut client);
    assert_eq!(
        (
            &answer["task_id"]["value"],
            &answer["state"],
            &answer["reason"]
        ),
        (
            &json!("q"),
            &json!("TASK_RUNNING"),
            &json!("REASON_RECONCILIATION")
        ),
        "{answer}"
    );
    assert_eq!(
        sim("POST", "/sim/master/restart", r#"{"registry": "zk"}"#).0,
        400
    );
}

#[test]
fn call_faults_lose_answers_drop_calls_or_refuse_them() {
    let master = lab();
    let mut client = Client::subscribe(&master, framework_info(json!({})));
    let offer = client.offers()[0].clone();
    let (http, addr) = (http_agent(), client.master.clone());
    let arm = |body: Value| {
        request(
            &http,
            "POST",
            &format!("http://{addr}/sim/calls/faults"),
            Some(&body.to_string()),
        )
    };
    // The answer to a call the master carried out, or did not, never comes.
    let unanswered = |client: &Client, kind: &str, body: Value| {
        let mut call = json!({"type": kind, "framework_id": {"value": client.framework_id}});
        if let (Some(call), Some(body)) = (call.as_object_mut(), body.as_object()) {
            call.extend(body.clone());
        }
        client
            .http
            .post(format!("http://{}/api/v1/scheduler", client.master))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &client.stream.stream_id)
            .send(call.to_string())
            .is_err()
    };
    let (status, armed) = arm(json!({"call": "ACCEPT", "fault": "lose-response"}));
    assert_eq!(status, 200, "{armed}");
    assert_eq!(
        client.sim_state()["call_faults"],
        json!([{"call": "ACCEPT", "fault": "lose-response", "count": 1}])
    );
    let launch = accept(&offer, vec![docker_task("lost", &offer, 31100)]);
    assert!(unanswered(&client, "ACCEPT", launch));
    // Carried out all the same.
    let starting = client.stream.agent_update_for("lost", "TASK_STARTING");
    client.ack(&starting);
    let running = client.stream.agent_update_for("lost", "TASK_RUNNING");
    client.ack(&running);
    assert_eq!(client.sim_state()["call_faults"], json!([]));
    let kill = json!({"kill": {"task_id": {"value": "lost"}}});
    assert_eq!(
        arm(json!({"call": "*", "fault": "drop-request", "count": 1})).0,
        200
    );
    assert!(unanswered(&client, "KILL", kill.clone()));
    assert_eq!(client.call("RECONCILE", json!({"reconcile": {}})).0, 202);
    assert_eq!(
        client.stream.master_update_for("lost")["state"],
        "TASK_RUNNING",
        "the dropped KILL was not carried out"
    );
    assert_eq!(
        arm(json!({"call": "KILL", "fault": "unavailable", "count": 2})).0,
        200
    );
    for _ in 0..2 {
        assert_eq!(
            client.call("KILL", kill.clone()),
            (503, "Master has not finished recovery".to_string())
        );
    }
    assert_eq!(client.call("KILL", kill).0, 202);
    assert_eq!(
        client.stream.agent_update_for("lost", "TASK_KILLED")["state"],
        "TASK_KILLED"
    );
    for bad in [
        json!({"call": "SUBSCRIBE", "fault": "drop-request"}),
        json!({"call": "ACCEPT", "fault": "explode"}),
        json!({"call": "ACCEPT", "fault": "unavailable", "count": 0}),
    ] {
        assert_eq!(arm(bad.clone()).0, 400, "{bad}");
    }
    assert_eq!(arm(json!({"call": "*", "fault": "unavailable"})).0, 200);
    let (status, cleared) = request(
        &client.http,
        "DELETE",
        &format!("http://{}/sim/calls/faults", client.master),
        None,
    );
    assert_eq!((status, &cleared["cleared"]), (200, &json!(1)));
    assert_eq!(client.call("REVIVE", json!({})).0, 202);
}
