//! Restarts lose nothing: the scheduler comes back with its framework id and
//! every accepted task, with the tasks still running; `--reset` starts
//! clean; a damaged state file stops startup; and `kill -9` in the middle of
//! a burst of submissions loses no task that got a 202 and launches none twice.
//! A full state disk is no crash loop: the process starts and refuses submits
//! (507); only a write it cannot save at all ends it, with exit code 3.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    fast_sim, http_agent, request, scheduler_config, sim_state, submit, wait_until, CADVISOR,
    DEADLINE, STRESS60,
};
use charmander::config::Config;
use charmander::sim;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("charmander-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_for(master: &sim::Master, dir: &Path) -> Config {
    let mut config = scheduler_config(&master.addr().to_string());
    config.state_dir = Some(dir.to_path_buf());
    config
}

fn get(url: &str) -> Value {
    request(&http_agent(), "GET", url, None).1
}

/// The live tasks (ended ones stay listed as history without `state=active`).
fn tasks(api: &str) -> Vec<Value> {
    get(&format!("http://{api}/client/task?state=active"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// (InternalID, state) of every task, sorted.
fn summary(tasks: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = tasks
        .iter()
        .map(|t| {
            (
                t["InternalID"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// stress60 and the cadvisor service (on all three nodes): four tasks, running.
fn submit_lab_tasks(http: &ureq::Agent, api: &str) {
    for body in [STRESS60, CADVISOR] {
        submit(http, api, body);
    }
    assert!(
        wait_until(DEADLINE, || all_running(api, 4)),
        "{:?}",
        summary(&tasks(api))
    );
}

fn all_running(api: &str, count: usize) -> bool {
    let listed = tasks(api);
    listed.len() == count && listed.iter().all(|t| t["state"] == "TASK_RUNNING")
}

#[test]
fn a_restart_keeps_the_framework_and_every_task_running() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let dir = TempDir::new("restart");
    let first = charmander::start(config_for(&master, &dir.0)).expect("starts");
    let api = first.api_addr().to_string();
    let http = http_agent();
    submit_lab_tasks(&http, &api);
    let before = summary(&tasks(&api));
    let framework = sim_state(&master)["frameworks"][0]["id"].clone();
    let launches = sim_state(&master)["launches"].clone();
    first.shutdown();

    let second = charmander::start(config_for(&master, &dir.0)).expect("restarts");
    let api = second.api_addr().to_string();
    // Listed at once from disk, before the master has said anything.
    assert_eq!(
        summary(&tasks(&api))
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        before.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()
    );
    let resubscribed = wait_until(DEADLINE, || {
        let state = sim_state(&master);
        state["frameworks"]
            .as_array()
            .is_some_and(|f| f.len() == 1 && f[0]["connected"] == true)
    });
    assert!(resubscribed, "{}", sim_state(&master));
    assert_eq!(
        sim_state(&master)["frameworks"][0]["id"],
        framework,
        "same framework id"
    );
    assert!(
        wait_until(DEADLINE, || summary(&tasks(&api)) == before),
        "{:?} != {before:?}",
        summary(&tasks(&api))
    );
    // Still the same four tasks on the master: none relaunched.
    let state = sim_state(&master);
    assert_eq!(
        (&state["launches"], state["tasks"].as_array().map(Vec::len)),
        (&launches, Some(4))
    );
    // And it goes on working: a kill after the restart reaches the master.
    assert_eq!(
        request(
            &http,
            "DELETE",
            &format!("http://{api}/client/task/stress60"),
            None
        )
        .0,
        200
    );
    assert!(wait_until(DEADLINE, || tasks(&api).len() == 3));
    second.shutdown();
}

#[test]
fn reset_tears_the_old_framework_down_and_starts_clean() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let dir = TempDir::new("reset");
    let first = charmander::start(config_for(&master, &dir.0)).expect("starts");
    let api = first.api_addr().to_string();
    let http = http_agent();
    submit(&http, &api, STRESS60);
    assert!(wait_until(DEADLINE, || all_running(&api, 1)));
    let (status, _) = request(
        &http,
        "PUT",
        &format!("http://{api}/client/intelligence/stress60/mem"),
        Some("209924096"),
    );
    assert_eq!(status, 200);
    let old = sim_state(&master)["frameworks"][0]["id"].clone();
    first.shutdown();

    let mut config = config_for(&master, &dir.0);
    config.reset = true;
    let second = charmander::start(config).expect("restarts with --reset");
    let api = second.api_addr().to_string();
    assert!(tasks(&api).is_empty());
    let clean = wait_until(DEADLINE, || {
        let state = sim_state(&master);
        state["removed_frameworks"] == 1
            && state["tasks"].as_array().is_some_and(Vec::is_empty)
            && state["frameworks"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|fw| fw["connected"] == true && fw["id"] != old)
            })
    });
    assert!(clean, "{}", sim_state(&master));
    // What the lab learned is kept.
    assert!(get(&format!("http://{api}/client/intelligence"))
        .to_string()
        .contains("209924096"));
    second.shutdown();

    // The new framework id is the one kept from now on.
    let third = charmander::start(config_for(&master, &dir.0)).expect("restarts");
    let new_id = sim_state(&master)["frameworks"].as_array().and_then(|f| {
        f.iter()
            .find(|fw| fw["id"] != old)
            .map(|fw| fw["id"].clone())
    });
    assert!(wait_until(DEADLINE, || sim_state(&master)["frameworks"]
        .as_array()
        .is_some_and(|f| f.iter().any(
            |fw| fw["connected"] == true && Some(&fw["id"]) == new_id.as_ref()
        ))));
    third.shutdown();
}

#[test]
fn a_damaged_state_file_stops_startup_naming_file_and_offset() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let dir = TempDir::new("damaged");
    let first = charmander::start(config_for(&master, &dir.0)).expect("starts");
    let api = first.api_addr().to_string();
    let http = http_agent();
    for n in 0..3 {
        let body = format!(r#"{{"id":"t{n}","dockerimage":"x","mem":"10"}}"#);
        submit(&http, &api, &body);
    }
    first.shutdown();
    let journal = dir.0.join("state.journal");
    let mut bytes = std::fs::read(&journal).expect("journal written");
    assert!(bytes.len() > 100);
    bytes[20] ^= 0x55;
    std::fs::write(&journal, &bytes).expect("damaged");
    let error = charmander::start(config_for(&master, &dir.0))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains(&journal.display().to_string()) && error.contains("byte offset 0"),
        "{error}"
    );
}

// ----- kill -9 with real processes ---------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(binary: &str, args: &[&str]) -> Process {
    Process(
        Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns"),
    )
}

/// The mesos-sim binary with the Charmander lab and quick heartbeats.
fn sim_process(listen: &str) -> Process {
    spawn(
        env!("CARGO_BIN_EXE_mesos-sim"),
        &[
            "--listen",
            listen,
            "--heartbeat",
            "0.5",
            "--allocation-interval",
            "0.1",
            "--update-retry",
            "0.5",
            "--log-level",
            "warn",
        ],
    )
}

fn scheduler_process(master: &str, api: &str, dir: &Path) -> Process {
    let dir = dir.display().to_string();
    spawn(
        env!("CARGO_BIN_EXE_charmander-scheduler"),
        &[
            "--master",
            master,
            "--listen",
            api,
            "--state-dir",
            &dir,
            "--log-level",
            "warn",
        ],
    )
}

#[test]
fn kill_9_in_a_burst_of_submissions_loses_no_accepted_task_and_launches_none_twice() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 60;
    let master = format!("127.0.0.1:{}", free_port());
    let _sim = sim_process(&master);
    let dir = TempDir::new("kill9");
    let api = format!("127.0.0.1:{}", free_port());
    let scheduler = Arc::new(Mutex::new(Some(scheduler_process(&master, &api, &dir.0))));
    let http = http_agent();
    assert!(
        wait_until(DEADLINE, || request_ok(
            &http,
            &format!("http://{api}/admin/ping")
        )),
        "scheduler up"
    );

    // Parallel clients submit; the scheduler is killed when a third is accepted.
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (accepted, answered, killed, scheduler, api) = (
                accepted.clone(),
                answered.clone(),
                killed.clone(),
                scheduler.clone(),
                api.clone(),
            );
            std::thread::spawn(move || {
                let http = http_agent();
                for n in 0..PER_CLIENT {
                    let id = format!("burst-{client}-{n}");
                    let body = format!(
                        r#"{{"id":"{id}","dockerimage":"stress","mem":"8","cpus":"0.01"}}"#
                    );
                    let url = format!("http://{api}/client/task");
                    let status = http
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(body.as_str())
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    if status == 202 {
                        accepted.lock().expect("lock").insert(id);
                    }
                    if answered.fetch_add(1, Ordering::SeqCst) == CLIENTS * PER_CLIENT / 3
                        && !killed.swap(true, Ordering::SeqCst)
                    {
                        // SIGKILL: no chance to flush or say goodbye.
                        drop(scheduler.lock().expect("lock").take());
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    assert!(killed.load(Ordering::SeqCst));
    let accepted = accepted.lock().expect("lock").clone();
    assert!(
        accepted.len() >= CLIENTS * PER_CLIENT / 3,
        "only {} accepted before the kill",
        accepted.len()
    );

    let _restarted = scheduler_process(&master, &api, &dir.0);
    assert!(
        wait_until(DEADLINE, || request_ok(
            &http,
            &format!("http://{api}/admin/ping")
        )),
        "scheduler back"
    );
    let mut listed: BTreeMap<String, usize> = BTreeMap::new();
    let settled = wait_until(Duration::from_secs(60), || {
        let now = tasks(&api);
        listed = BTreeMap::new();
        for task in &now {
            *listed
                .entry(task["id"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        accepted.iter().all(|id| listed.contains_key(id))
            && now.iter().all(|t| t["state"] == "TASK_RUNNING")
    });
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !listed.contains_key(*id))
        .collect();
    assert!(
        settled,
        "missing after restart: {missing:?}; listed {}",
        listed.len()
    );
    let doubled: Vec<(&String, &usize)> = listed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "submitted once, listed twice: {doubled:?}"
    );
    let state = get(&format!("http://{master}/sim/state"));
    assert_eq!(
        state["duplicate_launches"], 0,
        "a task id was launched twice"
    );
    let on_master: BTreeSet<String> = state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    let ours: BTreeSet<String> = tasks(&api)
        .iter()
        .filter_map(|t| t["InternalID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        on_master, ours,
        "the master runs exactly the tasks the scheduler lists"
    );
    println!(
        "kill -9 burst: {} submissions, {} accepted (202) before and around the kill, {} tasks after restart, 0 lost, 0 launched twice",
        CLIENTS * PER_CLIENT,
        accepted.len(),
        ours.len()
    );
}

fn request_ok(http: &ureq::Agent, url: &str) -> bool {
    http.get(url).call().is_ok_and(|r| r.status() == 200)
}

#[test]
fn a_master_restart_ends_resubscribed_with_every_task_running_again() {
    let first = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let listen = first.addr().to_string();
    let dir = TempDir::new("master-restart");
    // A new simulated cluster: its agents are new, so the old tasks stay
    // TASK_UNKNOWN for good and are relaunched once the grace is over.
    let mut config = config_for(&first, &dir.0);
    config.unknown_grace = Duration::from_secs(1);
    let scheduler = charmander::start(config).expect("starts");
    let api = scheduler.api_addr().to_string();
    let http = http_agent();
    submit_lab_tasks(&http, &api);
    let before: Vec<String> = summary(&tasks(&api))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let framework = sim_state(&first)["frameworks"][0]["id"].clone();
    // The master process dies with everything it knew; a new one starts on the same address.
    first.shutdown();
    let mut config = fast_sim(sim::charmander_lab());
    config.listen = listen;
    // tiny_http's accept thread lets go of the port shortly after shutdown.
    let mut second = None;
    assert!(
        wait_until(DEADLINE, || {
            second = sim::Master::start(config.clone()).ok();
            second.is_some()
        }),
        "the master comes back on {}",
        config.listen
    );
    let second = second.expect("started");
    let recovered = wait_until(DEADLINE, || {
        let state = sim_state(&second);
        let on_master = state["tasks"].as_array().map_or(0, |t| {
            t.iter().filter(|t| t["state"] == "TASK_RUNNING").count()
        });
        state["frameworks"][0]["connected"] == true && on_master == 4 && all_running(&api, 4)
    });
    assert!(
        recovered,
        "{} {:?}",
        sim_state(&second),
        summary(&tasks(&api))
    );
    let state = sim_state(&second);
    assert_eq!(
        state["frameworks"][0]["id"], framework,
        "resubscribed with the same framework id"
    );
    // The plain task is relaunched once, under a new id with the same
    // prefix (the master may still know the old TaskID); the agents came
    // back with new ids (a restarted cluster), so each gets a fresh cadvisor
    // copy.
    let after: Vec<String> = summary(&tasks(&api))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let stress_before: Vec<&String> = before
        .iter()
        .filter(|id| id.starts_with("stress60-"))
        .collect();
    let stress_after: Vec<&String> = after
        .iter()
        .filter(|id| id.starts_with("stress60-"))
        .collect();
    assert_eq!(stress_before.len(), 1, "{before:?}");
    assert_eq!(stress_after.len(), 1, "{after:?}");
    assert_ne!(stress_after, stress_before, "relaunched under a new TaskID");
    let cadvisor = tasks(&api)
        .into_iter()
        .filter(|t| t["id"] == "cadvisor")
        .map(|t| t["hostname"].as_str().unwrap_or("").to_string());
    assert_eq!(
        cadvisor.collect::<BTreeSet<_>>(),
        ["slave1", "slave2", "slave3"].map(String::from).into()
    );
    assert_eq!(
        (&state["launches"], &state["duplicate_launches"]),
        (&Value::from(4), &Value::from(0))
    );
    scheduler.shutdown();
}

#[test]
fn real_processes_ride_out_a_dropped_stream_silence_and_a_lost_agent() {
    let master = format!("127.0.0.1:{}", free_port());
    let _sim = sim_process(&master);
    let dir = TempDir::new("faults");
    let api = format!("127.0.0.1:{}", free_port());
    let _scheduler = scheduler_process(&master, &api, &dir.0);
    let http = http_agent();
    assert!(wait_until(DEADLINE, || request_ok(
        &http,
        &format!("http://{api}/admin/ping")
    )));
    let state = || get(&format!("http://{master}/sim/state"));
    let subscribes = || state()["calls"]["SUBSCRIBE"].as_u64().unwrap_or(0);
    let connected = || {
        state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.len() == 1 && f[0]["connected"] == true)
    };
    assert!(wait_until(DEADLINE, connected), "{}", state());
    let db = r#"{"id":"db","dockerimage":"postgres","mem":"64","sla":"singleton","nodetype":"lab","restart":"on-failure"}"#;
    for body in [STRESS60, db] {
        submit(&http, &api, body);
    }
    assert!(
        wait_until(DEADLINE, || all_running(&api, 2)),
        "{:?}",
        summary(&tasks(&api))
    );
    let before = summary(&tasks(&api));
    let framework = state()["frameworks"][0]["id"].clone();

    // 1. The master drops the stream; 2. the stream goes silent.
    for (fault, undo) in [
        ("/sim/drop-stream", None),
        ("/sim/heartbeats/pause", Some("/sim/heartbeats/resume")),
    ] {
        let count = subscribes();
        assert_eq!(
            request(&http, "POST", &format!("http://{master}{fault}"), Some("")).0,
            200
        );
        assert!(
            wait_until(DEADLINE, || subscribes() > count),
            "{fault}: no resubscription"
        );
        if let Some(undo) = undo {
            request(&http, "POST", &format!("http://{master}{undo}"), Some(""));
        }
        assert!(wait_until(DEADLINE, connected), "{fault}: {}", state());
        assert_eq!(
            state()["frameworks"][0]["id"],
            framework,
            "{fault}: same framework id"
        );
        assert!(
            wait_until(DEADLINE, || summary(&tasks(&api)) == before),
            "{fault}: {:?}",
            summary(&tasks(&api))
        );
    }
    assert_eq!(state()["launches"], 2, "nothing relaunched");

    // 3. The singleton's agent is removed: its restart policy brings it back elsewhere.
    let db_host = tasks(&api)
        .into_iter()
        .find(|t| t["id"] == "db")
        .and_then(|t| t["hostname"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert_eq!(
        request(
            &http,
            "DELETE",
            &format!("http://{master}/sim/agents/{db_host}"),
            None
        )
        .0,
        200
    );
    let moved = wait_until(DEADLINE, || {
        tasks(&api).iter().any(|t| {
            t["id"] == "db"
                && t["state"] == "TASK_RUNNING"
                && t["hostname"] != db_host.as_str()
                && t["restarts"] == 1
        })
    });
    assert!(moved, "{:?}", tasks(&api));
    assert_eq!(state()["duplicate_launches"], 0);
}

/// See: issue 9, B7. A failed compaction left an 848 KB `state.snapshot.tmp`
/// on a nearly full disk; the next append exited 3 and so did every restart,
/// within a second, with 0 submits accepted. Now the process starts (the
/// stale temporary is removed), refuses submits with 507 while the disk is
/// full, exits 3 only when a write cannot be saved at all, and after space
/// is freed starts and accepts submits.
#[test]
fn a_full_state_disk_is_no_crash_loop_and_exit_3_comes_from_main() {
    let Some(disk) = crate::disk_full::Tmpfs::mount("b7") else {
        return;
    };
    let stale = disk.0.join("state.snapshot.tmp");
    std::fs::write(&stale, vec![0x5au8; 848 * 1024]).expect("stale temporary");
    disk.fill("junk");
    let master = format!("127.0.0.1:{}", free_port());
    let _sim = sim_process(&master);
    let api = format!("127.0.0.1:{}", free_port());
    let http = http_agent();
    let mut scheduler = scheduler_process(&master, &api, &disk.0);
    assert!(
        wait_until(DEADLINE, || request_ok(
            &http,
            &format!("http://{api}/admin/ping")
        )),
        "the scheduler did not come up on a full disk: {:?}",
        scheduler.0.try_wait()
    );
    assert!(!stale.exists(), "the stale temporary is still there");
    let (status, reply) = request(
        &http,
        "POST",
        &format!("http://{api}/client/task"),
        Some(STRESS60),
    );
    assert_eq!(status, 507, "{reply}");
    assert!(scheduler.0.try_wait().ok().flatten().is_none(), "it exited");

    // The space the stale temporary held goes too: the next write cannot be
    // saved, and the process ends with exit code 3 (from main).
    disk.fill("more-junk");
    let mut exit = None;
    let mut n = 0;
    assert!(
        wait_until(DEADLINE, || {
            // Small records may still fit in the journal's last page: write
            // until one does not. The answer may never come.
            n += 1;
            let _ = http
                .put(&format!("http://{api}/client/intelligence/task-{n}/mem"))
                .send("123456789");
            exit = scheduler.0.try_wait().ok().flatten();
            exit.is_some()
        }),
        "the scheduler kept going with a write it could not save"
    );
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(i32::from(charmander::store::EXIT_STATE_NOT_SAVED))
    );

    disk.free("more-junk");
    disk.free("junk");
    let _scheduler = scheduler_process(&master, &api, &disk.0);
    assert!(wait_until(DEADLINE, || request_ok(
        &http,
        &format!("http://{api}/admin/ping")
    )));
    submit(&http, &api, STRESS60);
}
