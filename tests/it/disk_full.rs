//! A full state disk (issue 9, B7) on a real, small tmpfs: submits are
//! refused with 507 instead of the process exiting, work already accepted
//! still becomes durable (in the space of the store's reserve), and once
//! space is freed submits are accepted again without a restart. Past the
//! reserve the scheduler stops with exit code 3, before the reply or call
//! that could not be saved leaves. Needs root for `mount`; skipped with a
//! message where mounting is refused.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{fast_sim, http_agent, request, scheduler_config, wait_until, DEADLINE};
use charmander::sim;

/// Tasks the second test kills one by one on a disk past its reserve.
const KILLS: usize = 10;

/// The tmpfs size: room for the store's 8 MiB reserve and its journal.
const DISK_SIZE: &str = "16m";

/// A tmpfs mounted on a fresh directory, unmounted (lazily, in case a file is
/// still open) and removed on drop.
pub(crate) struct Tmpfs(pub(crate) PathBuf);

impl Tmpfs {
    pub(crate) fn mount(name: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("charmander-it-{name}-{}", std::process::id()));
        let _ = Command::new("umount").arg("-l").arg(&dir).status();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_SIZE}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs on {} (the disk-full tests need root)",
                dir.display()
            );
            let _ = fs::remove_dir_all(&dir);
            return None;
        }
        Some(Tmpfs(dir))
    }

    /// Appends junk to `name` until the file system is full. The scheduler
    /// may be trying to write its reserve meanwhile (a temporary it removes
    /// when it does not fit), so the fill is repeated once no such temporary
    /// is left, until nothing more fits.
    pub(crate) fn fill(&self, name: &str) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.0.join(name))
            .expect("junk file");
        let chunk = vec![0x5au8; 64 * 1024];
        let reserve_tmp = self.0.join("state.reserve.tmp");
        for _ in 0..3 {
            assert!(
                wait_until(DEADLINE, || !reserve_tmp.exists()),
                "the reserve temporary stayed"
            );
            while file.write_all(&chunk).is_ok() {}
            let _ = file.write_all(&[0x5a]);
        }
    }

    pub(crate) fn free(&self, name: &str) {
        fs::remove_file(self.0.join(name)).expect("junk removed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn start(master: &sim::Master, dir: &Path) -> charmander::Running {
    let mut config = scheduler_config(&master.addr().to_string());
    config.state_dir = Some(dir.to_path_buf());
    charmander::start(config).expect("scheduler starts")
}

fn task(id: &str) -> String {
    format!(r#"{{"id": "{id}", "dockerimage": "busybox", "mem": "10", "cpus": "0.01"}}"#)
}

/// Status and JSON body, or None when the request got no HTTP answer at all.
fn try_request(method: &str, url: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let http = http_agent();
    let result = match body {
        Some(body) => http
            .post(url)
            .header("Content-Type", "application/json")
            .send(body),
        None if method == "DELETE" => http.delete(url).call(),
        None => http.get(url).call(),
    };
    let mut response = result.ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn submit(api: &str, id: &str) -> (u16, Value) {
    request(
        &http_agent(),
        "POST",
        &format!("http://{api}/client/task"),
        Some(&task(id)),
    )
}

fn tasks(api: &str) -> Vec<Value> {
    request(
        &http_agent(),
        "GET",
        &format!("http://{api}/client/task"),
        None,
    )
    .1
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// True when every id in `ids` is listed and TASK_RUNNING.
fn all_running(api: &str, ids: &BTreeSet<String>) -> bool {
    let listed = tasks(api);
    ids.iter().all(|id| {
        listed
            .iter()
            .any(|t| t["id"] == id.as_str() && t["state"] == "TASK_RUNNING")
    })
}

/// Submits `prefix-N` for N = 0, 1, … until one is answered `want`; every
/// 202 on the way is added to `accepted`. Returns the answer.
fn submit_until(
    api: &str,
    prefix: &str,
    want: u16,
    accepted: &mut BTreeSet<String>,
) -> (u16, Value) {
    let mut last = (0, Value::Null);
    let mut n = 0;
    let found = wait_until(DEADLINE, || {
        let id = format!("{prefix}-{n}");
        n += 1;
        last = submit(api, &id);
        if last.0 == 202 {
            accepted.insert(id);
        }
        assert!(
            last.0 == 202 || last.0 == 507,
            "a submit got neither 202 nor 507: {last:?}"
        );
        last.0 == want
    });
    assert!(found, "no {want} within the deadline; last answer {last:?}");
    last
}

#[test]
fn a_full_state_disk_refuses_submits_and_serves_again_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount("disk-full") else {
        return;
    };
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let scheduler = start(&master, &disk.0);
    let api = scheduler.api_addr().to_string();
    let mut accepted = BTreeSet::new();
    submit_until(&api, "before", 202, &mut accepted);
    assert!(wait_until(DEADLINE, || all_running(&api, &accepted)));

    disk.fill("junk");
    // The append that finds the disk full is written into the reserve's
    // space (so it may still be a 202); from then on submits are refused.
    let (_, refused) = submit_until(&api, "full", 507, &mut accepted);
    assert_eq!(refused["code"], 507, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("state disk full: ")
            && message.ends_with("submits refused until space is freed"),
        "{message}"
    );
    // Still serving, and what was accepted is launched and acknowledged
    // while the disk stays full.
    assert!(
        wait_until(DEADLINE, || all_running(&api, &accepted)),
        "accepted {accepted:?}, listed {:?}",
        tasks(&api)
    );
    assert_eq!(submit(&api, "still-full").0, 507);

    disk.free("junk");
    // No restart: the scheduler finds the space on its own.
    submit_until(&api, "after", 202, &mut accepted);
    assert!(
        wait_until(DEADLINE, || all_running(&api, &accepted)),
        "accepted {accepted:?}, listed {:?}",
        tasks(&api)
    );
    scheduler.shutdown();

    // The disk has every accepted task: a restart lists them at once.
    let scheduler = start(&master, &disk.0);
    let api = scheduler.api_addr().to_string();
    let listed: BTreeSet<String> = tasks(&api)
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, accepted);
    assert!(wait_until(DEADLINE, || all_running(&api, &accepted)));
    // Nothing launched twice: one launch per accepted task.
    let launched = request(
        &http_agent(),
        "GET",
        &format!("http://{}/sim/state", master.addr()),
        None,
    )
    .1["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(launched, accepted.len());
    scheduler.shutdown();
}

#[test]
fn a_full_disk_past_its_reserve_stops_with_exit_code_3_before_the_reply_leaves() {
    let Some(disk) = Tmpfs::mount("disk-past-reserve") else {
        return;
    };
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let scheduler = start(&master, &disk.0);
    let api = scheduler.api_addr().to_string();
    let mut accepted = BTreeSet::new();
    for n in 0..KILLS {
        let id = format!("before-{n}");
        assert_eq!(submit(&api, &id).0, 202);
        accepted.insert(id);
    }
    assert!(wait_until(DEADLINE, || all_running(&api, &accepted)));
    disk.fill("junk");
    submit_until(&api, "full", 507, &mut accepted);
    assert!(wait_until(DEADLINE, || all_running(&api, &accepted)));
    // Now the reserve's space goes too.
    disk.fill("more-junk");

    let (done, stopped) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done.send(scheduler.wait());
    });
    // A kill is saved before it is answered and sent. The journal's last page
    // may still have room for a record or two; then one cannot be saved.
    let mut killed = BTreeSet::new();
    for n in 0..KILLS {
        let id = format!("before-{n}");
        match try_request("DELETE", &format!("http://{api}/client/task/{id}"), None) {
            Some((200, _)) => killed.insert(id),
            _ => break,
        };
    }
    assert!(killed.len() < KILLS, "every kill was saved on a full disk");
    let failure = match stopped.recv_timeout(DEADLINE) {
        Ok(Err(failure)) => failure,
        other => panic!("the scheduler kept going: {other:?}"),
    };
    assert_eq!(failure.exit_code(), charmander::store::EXIT_STATE_NOT_SAVED);
    assert!(
        failure.to_string().contains("the reserve is used up"),
        "{failure}"
    );
    // Only the kills that were answered reached the master.
    let state = request(
        &http_agent(),
        "GET",
        &format!("http://{}/sim/state", master.addr()),
        None,
    )
    .1;
    assert_eq!(
        state["calls"]["KILL"].as_u64().unwrap_or(0),
        killed.len() as u64,
        "{state}"
    );

    // Space freed, a restart finds every accepted task it did not kill.
    disk.free("more-junk");
    disk.free("junk");
    let scheduler = start(&master, &disk.0);
    let api = scheduler.api_addr().to_string();
    let listed: BTreeSet<String> = tasks(&api)
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        accepted.difference(&killed).all(|id| listed.contains(id)),
        "accepted {accepted:?}, killed {killed:?}, listed {listed:?}"
    );
    scheduler.shutdown();
}
