//! Two schedulers and one framework: the one the master displaces ("Framework
//! failed over") stops with `EXIT_FAILED_OVER` instead of taking the framework
//! back, and two schedulers never share one state directory.
//! See: issue 8, finding 2.

use std::process::{Command, Stdio};

use crate::support::{fast_sim, scheduler_config, wait_until, DEADLINE};
use charmander::mesos::client::BasicAuth;
use charmander::sim;

/// A directory of its own under the system temp dir, emptied.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("charmander-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_displaced_scheduler_exits_with_its_code_and_the_other_keeps_the_framework() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let sim_state = || crate::support::sim_state(&master);
    let first_dir = temp_dir("failover-first");
    let mut first = Command::new(env!("CARGO_BIN_EXE_charmander-scheduler"))
        .args(["--master", &master.addr().to_string()])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&first_dir)
        .args(["--log-level", "info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the scheduler binary starts");
    let subscribed = wait_until(DEADLINE, || {
        sim_state()["frameworks"]
            .as_array()
            .is_some_and(|it| it.iter().any(|fw| fw["connected"] == true))
    });
    assert!(subscribed, "the first scheduler never subscribed");
    let framework = sim_state()["frameworks"][0]["id"].clone();
    // The master knows the framework before the first scheduler's journal
    // does: copy its state only once the framework id is on disk, or the
    // second registers a new framework and nobody is displaced.
    let id_text = framework.as_str().expect("framework id").to_string();
    let durable = wait_until(DEADLINE, || {
        ["state.journal", "state.snapshot"].iter().any(|file| {
            std::fs::read(first_dir.join(file))
                .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(&id_text))
        })
    });
    assert!(durable, "the first scheduler never saved its framework id");

    // A second scheduler with the same framework id (a copy of the first's
    // state, so the state-dir lock does not stop it).
    let second_dir = temp_dir("failover-second");
    for file in ["state.journal", "state.snapshot"] {
        if first_dir.join(file).exists() {
            std::fs::copy(first_dir.join(file), second_dir.join(file)).expect("copy state");
        }
    }
    let mut config = scheduler_config(&master.addr().to_string());
    config.state_dir = Some(second_dir.clone());
    let second = charmander::start(config).expect("the second scheduler starts");

    let mut status = None;
    let exited = wait_until(DEADLINE, || {
        status = first.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = first.kill();
    }
    let output = first.wait_with_output().expect("output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(exited, "the displaced scheduler kept running:\n{log}");
    assert_eq!(
        status.and_then(|it| it.code()),
        Some(i32::from(charmander::mesos::EXIT_FAILED_OVER)),
        "{log}"
    );
    assert!(log.contains("failed over to another scheduler"), "{log}");

    // The first one is gone for good: the second keeps the framework and
    // nobody subscribed again (no ping-pong).
    let state = sim_state();
    assert_eq!(state["frameworks"][0]["id"], framework, "{state}");
    assert_eq!(state["frameworks"][0]["connected"], true, "{state}");
    assert_eq!(state["calls"]["SUBSCRIBE"], 2, "{state}");
    second.shutdown();
    let _ = std::fs::remove_dir_all(&first_dir);
    let _ = std::fs::remove_dir_all(&second_dir);
}

#[test]
fn a_second_scheduler_on_one_state_dir_refuses_to_start_and_names_the_dir() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let dir = temp_dir("locked");
    let mut config = scheduler_config(&master.addr().to_string());
    config.state_dir = Some(dir.clone());
    let first = charmander::start(config.clone()).expect("the first scheduler starts");
    let error = match charmander::start(config.clone()) {
        Ok(_) => panic!("a second scheduler started on {}", dir.display()),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&format!("state directory {} is in use", dir.display())),
        "{error}"
    );
    // Once the first has stopped, the directory is free again.
    first.shutdown();
    let again = charmander::start(config).expect("starts after the first stopped");
    again.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// See: issue 8, finding 6. A registered framework cannot change its
/// principal; the scheduler used to resubscribe for ever.
#[test]
fn a_principal_the_framework_cannot_change_to_stops_the_scheduler_with_its_code() {
    let master = sim::Master::start(fast_sim(sim::charmander_lab())).expect("sim starts");
    let sim_state = || crate::support::sim_state(&master);
    let dir = temp_dir("principal");
    let with_principal = |principal: &str| {
        let mut config = scheduler_config(&master.addr().to_string());
        config.state_dir = Some(dir.clone());
        config.auth = Some(BasicAuth {
            principal: principal.to_string(),
            secret: "secret".to_string(),
        });
        config
    };
    let first = charmander::start(with_principal("alice")).expect("starts");
    let mut framework = String::new();
    let stored = wait_until(DEADLINE, || {
        framework = sim_state()["frameworks"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let journal = std::fs::read(dir.join("state.journal")).unwrap_or_default();
        !framework.is_empty() && String::from_utf8_lossy(&journal).contains(&framework)
    });
    assert!(stored, "the framework id never reached the state dir");
    first.shutdown();

    let second = charmander::start(with_principal("bob")).expect("starts");
    let (done, result) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done.send(second.wait());
    });
    let fatal = match result.recv_timeout(DEADLINE) {
        Ok(Err(fatal)) => fatal,
        other => panic!("the scheduler kept going: {other:?}"),
    };
    assert_eq!(fatal.exit_code(), charmander::mesos::EXIT_SUBSCRIBE_REFUSED);
    let text = fatal.to_string();
    assert!(
        text.contains("Changing framework's principal is not allowed")
            && text.contains("--principal"),
        "{text}"
    );
    assert_eq!(sim_state()["calls"]["SUBSCRIBE"], 2, "{}", sim_state());
    let _ = std::fs::remove_dir_all(&dir);
}
