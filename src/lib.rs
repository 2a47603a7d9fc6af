//! charmander-scheduler: a Mesos framework (v1 scheduler HTTP API) for the
//! Charmander scheduling lab, plus `sim`, a simulated Mesos master for tests and
//! demos. See ARCHITECTURE.md for the code map.
//!
//! `start` wires the threads together; `main.rs` and the integration tests
//! both use it, so the tests run exactly the production wiring.

// `deny`, not `forbid`: `rlimit`, `signals` and `trim` alone allow it
// (libc calls std lacks).
#![deny(unsafe_code)]

pub mod api;
pub mod base64;
pub mod config;
mod http;
mod lograte;
pub mod mesos;
pub mod metrics;
mod ranges;
pub mod redis;
// Unsafe code, with `signals` below: `getrlimit`/`setrlimit` for RLIMIT_NOFILE
// (ARCHITECTURE.md, "src/http.rs, src/rlimit.rs").
#[allow(unsafe_code)]
mod rlimit;
pub mod scheduler;
// `pthread_sigmask`/`sigwait` for a graceful stop on SIGTERM and SIGINT
// (ARCHITECTURE.md, "Threads and shutdown").
#[allow(unsafe_code)]
mod signals;
pub mod sim;
pub mod store;
// `malloc_trim` after large turns (ARCHITECTURE.md, "Memory").
#[allow(unsafe_code)]
mod trim;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, Receiver};

use crate::config::Config;
use crate::mesos::convert::FrameworkSettings;
use crate::mesos::{Connection, Fatal, MesosConfig};
use crate::metrics::Metrics;
use crate::scheduler::{
    Restore, State, API_INBOX_CAPACITY, COMMITTED_CAPACITY, JOURNAL_CAPACITY, MESOS_INBOX_CAPACITY,
    OUTBOX_CAPACITY,
};
pub use crate::signals::Signal;

/// Raises the soft open-file limit to the hard one: every client connection
/// costs a descriptor, and systemd's default soft limit is 1024. The HTTP
/// servers fit their connection budgets to the limit (`http`).
fn raise_open_files_limit() {
    match rlimit::raise_open_files() {
        Ok((before, after)) if before != after => log::info!(
            "open files limit raised from={} to={}",
            before.soft,
            after.soft
        ),
        Ok((_, after)) => log::debug!("open files limit soft={}", after.soft),
        Err(err) => log::warn!("open files limit not raised error={err}"),
    }
}

/// Logs to stderr with timestamps and thread names; RUST_LOG overrides the
/// level. A panic is logged before the process ends. For both binaries.
pub fn init_logging(level: log::LevelFilter) {
    let logger = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_threads(true)
        .env();
    if let Err(error) = logger.init() {
        eprintln!("logging unavailable: {error}");
    }
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic: {info}");
    }));
}

/// Blocks SIGTERM and SIGINT and starts the `signals` thread, which sends
/// the first of them on the returned channel for `Running::wait_or_stop`; a
/// second one while stopping ends the process at once. `main` calls it
/// before anything starts a thread (see `signals`). Unsupported off 64-bit
/// Linux: the signals then keep their default action.
pub fn stop_signals() -> io::Result<Receiver<Signal>> {
    signals::stop_requests()
}

/// Why a running scheduler stopped on its own. `Running::wait` returns it
/// after everything has stopped; `main` turns it into the exit code.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The Mesos connection cannot go on (failed over, SUBSCRIBE refused).
    Mesos(Fatal),
    /// A group of turns could not be made durable (an I/O error, or a full
    /// disk whose reserve is used up): the journal thread stopped before any
    /// call or reply of that group left the process.
    StateNotSaved(String),
}

impl Failure {
    /// The process exit code that tells the supervisor what happened.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Mesos(fatal) => fatal.exit_code(),
            Failure::StateNotSaved(_) => store::EXIT_STATE_NOT_SAVED,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Mesos(fatal) => fatal.fmt(f),
            Failure::StateNotSaved(error) => write!(f, "state not saved: {error}"),
        }
    }
}

impl std::error::Error for Failure {}

/// A running scheduler: REST workers, the state thread, the Mesos reader and
/// caller, the optional Redis bridge and the optional in-process lab.
pub struct Running {
    api: Option<api::ApiServer>,
    bridge: Option<redis::Bridge>,
    state: Option<JoinHandle<()>>,
    /// Disconnected when the state thread ends.
    state_done: Receiver<()>,
    journal: Option<JoinHandle<()>>,
    /// Where the journal thread reports why it stopped, if it failed.
    journal_failed: Receiver<String>,
    connection: Option<Connection>,
    sim: Option<sim::Master>,
}

/// Starts everything `config` asks for. With `--sim` a simulated Charmander
/// lab starts first on a loopback port and becomes the master.
pub fn start(config: Config) -> io::Result<Running> {
    raise_open_files_limit();
    if !trim::limit_arenas() {
        log::warn!("malloc heaps not limited: RSS may stay higher after long lists");
    }
    let (mut state, mut store) = load_state(&config)?;
    state.set_reconcile_interval(config.reconcile_interval);
    state.set_unknown_grace(config.unknown_grace);
    state.set_keep_finished(config.keep_finished);
    state.set_role(&config.role);
    let sim = if config.sim {
        let lab = sim::SimConfig {
            listen: "127.0.0.1:0".to_string(),
            agents: config
                .sim_agents
                .clone()
                .unwrap_or_else(sim::charmander_lab),
            ..sim::SimConfig::default()
        };
        Some(sim::Master::start(lab)?)
    } else {
        None
    };
    let masters = sim
        .as_ref()
        .map_or_else(|| config.masters(), |sim| vec![sim.addr().to_string()]);
    let master = masters.join(",");
    let (api_tx, api_rx) = bounded(API_INBOX_CAPACITY);
    let (mesos_tx, mesos_rx) = bounded(MESOS_INBOX_CAPACITY);
    let (call_tx, call_rx) = bounded(OUTBOX_CAPACITY);
    let (turn_tx, turn_rx) = bounded(JOURNAL_CAPACITY);
    let (committed_tx, committed_rx) = bounded(COMMITTED_CAPACITY);
    let framework_id = state.framework_id().cloned();
    let disk = store
        .as_ref()
        .map_or_else(store::DiskGate::default, store::Store::gate);
    // Every thread counts into this; `GET /metrics` reads it.
    let metrics = Arc::new(Metrics::default());
    if let Some(store) = store.as_mut() {
        store.set_metrics(Arc::clone(&metrics));
    }
    let (journal_failed_tx, journal_failed) = bounded::<String>(1);
    let journal_metrics = Arc::clone(&metrics);
    let journal = std::thread::Builder::new()
        .name("journal".to_string())
        .spawn(move || {
            if let Err(error) =
                store::run_journal(store, turn_rx, call_tx, committed_tx, &journal_metrics)
            {
                let _ = journal_failed_tx.send(error);
            }
        })?;
    let (state_done_tx, state_done) = bounded::<()>(0);
    let state_metrics = Arc::clone(&metrics);
    let state = std::thread::Builder::new()
        .name("state".to_string())
        .spawn(move || {
            let _done = state_done_tx;
            scheduler::run(
                state,
                api_rx,
                mesos_rx,
                turn_tx,
                committed_rx,
                &state_metrics,
            )
        })?;
    let mesos_config = MesosConfig {
        masters,
        framework: FrameworkSettings {
            name: config.framework_name.clone(),
            user: config.user.clone(),
            role: config.role.clone(),
            hostname: config.hostname.clone(),
            principal: config.auth.as_ref().map(|auth| auth.principal.clone()),
            failover_timeout: config.failover_timeout.as_secs_f64(),
        },
        framework_id,
        auth: config.auth.clone(),
    };
    // Bind the REST port before subscribing: a port clash must stop us
    // before the master registers a framework we would then abandon.
    let api = api::ApiServer::start(
        &config.listen,
        config.http_workers,
        api_tx.clone(),
        config
            .api_token
            .as_ref()
            .map(|token| token.expose().to_string()),
        config.commit_wait,
        disk,
        Arc::clone(&metrics),
    )?;
    let connection = Connection::start(mesos_config, mesos_tx, call_rx, Arc::clone(&metrics))?;
    let bridge = match &config.redis {
        Some(addr) => Some(redis::Bridge::start(
            redis::RedisConfig {
                addr: addr.clone(),
                interval: config.redis_interval,
            },
            api_tx.clone(),
            metrics,
        )?),
        None => None,
    };
    log::info!(
        "charmander-scheduler api=http://{} master={master}",
        api.addr()
    );
    if let Some(sim) = &sim {
        log::info!(
            "--sim: simulated master state=http://{}/sim/state agents={}",
            sim.addr(),
            lab_summary(config.sim_agents.as_deref())
        );
    }
    Ok(Running {
        api: Some(api),
        bridge,
        state: Some(state),
        state_done,
        journal: Some(journal),
        journal_failed,
        connection: Some(connection),
        sim,
    })
}

impl Running {
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .as_ref()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), api::ApiServer::addr)
    }

    /// Blocks until the state thread ends (it runs until shutdown), the
    /// Mesos connection fails for good, or the journal cannot save the state;
    /// that error is returned after everything has stopped, for `main` to
    /// turn into the exit code.
    pub fn wait(self) -> Result<(), Failure> {
        self.wait_or_stop(&crossbeam_channel::never()).map(|_| ())
    }

    /// `wait`, and a graceful stop when `stop` delivers a signal: the REST
    /// workers stop taking requests (one busy with a request answers it
    /// first), the state thread finishes its turn, the journal makes durable
    /// every turn it was given, and the Mesos connection closes without a
    /// TEARDOWN, so the framework stays registered and its tasks keep running
    /// for the failover timeout. Returns the signal once all that is done
    /// (logged in one line), or the failure if the flush itself failed.
    pub fn wait_or_stop(mut self, stop: &Receiver<Signal>) -> Result<Option<Signal>, Failure> {
        let mut fatal = self
            .connection
            .as_ref()
            .map_or_else(crossbeam_channel::never, Connection::fatal);
        let mut journal_failed = self.journal_failed.clone();
        let mut stop = stop.clone();
        loop {
            select! {
                recv(fatal) -> error => match error {
                    Ok(error) => {
                        self.stop();
                        return Err(Failure::Mesos(error));
                    }
                    // The reader ended without an error: only the state thread counts.
                    Err(_) => fatal = crossbeam_channel::never(),
                },
                recv(journal_failed) -> error => match error {
                    Ok(error) => {
                        self.stop();
                        return Err(Failure::StateNotSaved(error));
                    }
                    Err(_) => journal_failed = crossbeam_channel::never(),
                },
                recv(stop) -> signal => match signal {
                    Ok(signal) => return self.stop_on(signal),
                    // No more signals will come (the signals thread ended).
                    Err(_) => stop = crossbeam_channel::never(),
                },
                recv(self.state_done) -> _ => break,
            }
        }
        // The state thread also ends when the journal stops: say why. A fatal
        // error that raced with its end must not turn into exit 0 either.
        let fatal_error = fatal.try_recv().ok();
        self.stop();
        if let Ok(error) = self.journal_failed.try_recv() {
            return Err(Failure::StateNotSaved(error));
        }
        match fatal_error {
            Some(error) => Err(Failure::Mesos(error)),
            None => Ok(None),
        }
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The graceful stop of `wait_or_stop`, and its one log line.
    fn stop_on(&mut self, signal: Signal) -> Result<Option<Signal>, Failure> {
        let with_sim = self.sim.is_some();
        self.stop();
        if let Ok(error) = self.journal_failed.try_recv() {
            return Err(Failure::StateNotSaved(error));
        }
        log::info!(
            "stopped on {signal}: requests refused, last turn saved, journal flushed; \
             the framework stays registered and its tasks keep running{}",
            if with_sim {
                " (--sim: the simulated lab ends with us)"
            } else {
                ""
            }
        );
        Ok(Some(signal))
    }

    /// Stops in dependency order: the REST workers and the bridge hold the
    /// state thread's inbox, so they go first; then the state thread ends and
    /// drops the outbox, which lets the Mesos caller end.
    fn stop(&mut self) {
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
        // The caller must not wait for a master while the journal waits for
        // the caller: from here it sends only what goes through at once.
        if let Some(connection) = self.connection.as_mut() {
            connection.stop();
        }
        // With every sender of its API inbox gone, the state thread returns;
        // then the journal drains what it was given and ends.
        for (name, thread) in [
            ("state", self.state.take()),
            ("journal", self.journal.take()),
        ] {
            if thread.is_some_and(|thread| thread.join().is_err()) {
                log::error!("{name} thread panicked");
            }
        }
        if let Some(connection) = self.connection.take() {
            connection.shutdown();
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The most agents the `--sim` startup line names; the rest are counted.
const MAX_LOGGED_AGENTS: usize = 8;

/// The simulated lab's nodes for the `--sim` startup line, e.g.
/// `slave1(analytics),slave2(lab)`; the built-in lab when `agents` is `None`.
fn lab_summary(agents: Option<&[sim::AgentSpec]>) -> String {
    let builtin;
    let agents = match agents {
        Some(agents) => agents,
        None => {
            builtin = sim::charmander_lab();
            &builtin
        }
    };
    let mut names: Vec<String> = agents
        .iter()
        .take(MAX_LOGGED_AGENTS)
        .map(
            |agent| match agent.attributes.iter().find(|(name, _)| name == "nodetype") {
                Some((_, nodetype)) => format!("{}({nodetype})", agent.hostname),
                None => agent.hostname.clone(),
            },
        )
        .collect();
    if agents.len() > MAX_LOGGED_AGENTS {
        names.push(format!("+{} more", agents.len() - MAX_LOGGED_AGENTS));
    }
    names.join(",")
}

/// Opens the state directory (when configured) and rebuilds the state from
/// it; `--reset` clears the tasks and tears the old framework down.
fn load_state(config: &Config) -> io::Result<(State, Option<store::Store>)> {
    let Some(dir) = &config.state_dir else {
        return Ok((State::new(None), None));
    };
    // Streamed: each record goes from the disk straight into the state.
    let mut restore = Restore::new();
    let mut store = store::Store::open(dir, &mut |key, value| restore.apply(key, value))
        .map_err(io::Error::other)?;
    store.set_commit_delay(config.journal_delay);
    let mut state = restore.finish();
    if config.reset {
        state.reset();
        let records = state.take_records();
        store
            .commit(&records.iter().collect::<Vec<_>>())
            .map_err(io::Error::other)?;
    }
    log::info!(
        "state restored dir={} framework={} tasks={}",
        dir.display(),
        state.framework_id().map_or("(new)", |id| id.0.as_str()),
        state.task_count()
    );
    Ok((state, Some(store)))
}
