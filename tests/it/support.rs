//! Shared test plumbing: a simulated lab (mesos-sim) plus the real scheduler
//! wired by `charmander::start`, both on port 0, and small HTTP helpers.
//! Everything waits on deadlines, never on bare sleeps.

use std::time::Duration;

use charmander::config::Config;
use charmander::sim::{self, AgentSpec, SimConfig};
use serde_json::Value;

#[path = "../common/http.rs"]
mod http;
pub use http::{
    http_agent, read_head_lines, request, sample_of, submit, wait_until, CADVISOR, INFLUXDB,
    STRESS60,
};

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A simulated Mesos master and a scheduler subscribed to it.
pub struct Lab {
    // Field order is drop order: the scheduler stops before its master.
    pub scheduler: Option<charmander::Running>,
    pub sim: sim::Master,
    pub http: ureq::Agent,
}

impl Lab {
    /// The Charmander lab (slave1 analytics, slave2/slave3 lab) with fast heartbeats.
    pub fn start() -> Lab {
        Lab::with_agents(sim::charmander_lab())
    }

    pub fn with_agents(agents: Vec<AgentSpec>) -> Lab {
        Lab::build(agents, |_| {})
    }

    /// The Charmander lab with a scheduler config adjusted by `adjust`.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Lab {
        Lab::build(sim::charmander_lab(), adjust)
    }

    /// `agents` as the lab, with a scheduler config adjusted by `adjust`.
    pub fn build(agents: Vec<AgentSpec>, adjust: impl FnOnce(&mut Config)) -> Lab {
        let sim = sim::Master::start(fast_sim(agents)).expect("sim starts");
        let mut config = scheduler_config(&sim.addr().to_string());
        adjust(&mut config);
        let scheduler = charmander::start(config).expect("scheduler starts");
        let lab = Lab {
            scheduler: Some(scheduler),
            sim,
            http: http_agent(),
        };
        lab.wait_subscribed();
        lab
    }

    /// The scheduler's REST address.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.scheduler
            .as_ref()
            .expect("scheduler running")
            .api_addr()
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_addr())
    }

    pub fn sim_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim.addr())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request(&self.http, "GET", &self.api(path), None)
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        request(&self.http, "POST", &self.api(path), Some(body))
    }

    pub fn put(&self, path: &str, body: &str) -> (u16, Value) {
        request(&self.http, "PUT", &self.api(path), Some(body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        request(&self.http, "DELETE", &self.api(path), None)
    }

    pub fn sim_post(&self, path: &str, body: &str) -> (u16, Value) {
        request(&self.http, "POST", &self.sim_url(path), Some(body))
    }

    pub fn sim_delete(&self, path: &str) -> (u16, Value) {
        request(&self.http, "DELETE", &self.sim_url(path), None)
    }

    /// The simulator's `/sim/state` document.
    pub fn sim_state(&self) -> Value {
        let (status, state) = request(&self.http, "GET", &self.sim_url("/sim/state"), None);
        assert_eq!(status, 200, "sim state: {state}");
        state
    }

    /// Every live task the scheduler lists (`?state=active`: ended tasks
    /// are history, see `all_tasks`).
    pub fn tasks(&self) -> Vec<Value> {
        let (status, tasks) = self.get("/client/task?state=active");
        assert_eq!(status, 200, "task list: {tasks}");
        tasks.as_array().cloned().unwrap_or_default()
    }

    /// Everything the scheduler lists, ended tasks included.
    pub fn all_tasks(&self) -> Vec<Value> {
        let (status, tasks) = self.get("/client/task");
        assert_eq!(status, 200, "task list: {tasks}");
        tasks.as_array().cloned().unwrap_or_default()
    }

    /// Tasks whose user id is `id`.
    pub fn tasks_named(&self, id: &str) -> Vec<Value> {
        self.tasks()
            .into_iter()
            .filter(|task| task["id"] == id)
            .collect()
    }

    /// Waits until the tasks named `id` are `count` and all TASK_RUNNING; returns them.
    #[track_caller]
    pub fn wait_running(&self, id: &str, count: usize) -> Vec<Value> {
        let mut last = Vec::new();
        let ok = wait_until(DEADLINE, || {
            last = self.tasks_named(id);
            last.len() == count && last.iter().all(|task| task["state"] == "TASK_RUNNING")
        });
        assert!(
            ok,
            "{count} running {id} tasks expected, have: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        last
    }

    /// Waits until the simulator shows our framework subscribed.
    #[track_caller]
    pub fn wait_subscribed(&self) {
        let ok = wait_until(DEADLINE, || {
            self.sim_state()["frameworks"]
                .as_array()
                .is_some_and(|frameworks| frameworks.iter().any(|fw| fw["connected"] == true))
        });
        assert!(ok, "scheduler never subscribed: {}", self.sim_state());
    }

    /// Count of calls of `kind` (e.g. "ACCEPT") the simulator received.
    pub fn calls(&self, kind: &str) -> u64 {
        self.sim_state()["calls"][kind].as_u64().unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown();
        }
    }
}

/// A simulator config tuned for tests: quick heartbeats, offers and retries.
pub fn fast_sim(agents: Vec<AgentSpec>) -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".to_string(),
        agents,
        heartbeat: Duration::from_millis(500),
        allocation_interval: Duration::from_millis(100),
        update_retry: Duration::from_millis(500),
        ..SimConfig::default()
    }
}

pub fn scheduler_config(master: &str) -> Config {
    Config {
        master: master.to_string(),
        listen: "127.0.0.1:0".to_string(),
        http_workers: 2,
        ..Config::default()
    }
}

/// A fake peer on a loopback port: each accepted connection goes to
/// `serve(stream, n)` with its number `n` (from 0) and is counted only when
/// `serve` returns true. Stopped and joined on drop.
pub struct FakeServer {
    pub addr: String,
    counted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(
        serve: impl Fn(std::net::TcpStream, usize) -> bool + Send + 'static,
    ) -> FakeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        FakeServer::on(listener, serve)
    }

    /// The same on a listener the caller bound (e.g. an address a test took over).
    pub fn on(
        listener: std::net::TcpListener,
        serve: impl Fn(std::net::TcpStream, usize) -> bool + Send + 'static,
    ) -> FakeServer {
        use std::sync::atomic::Ordering;
        let addr = listener.local_addr().expect("addr").to_string();
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (inner_counted, inner_stopping) = (counted.clone(), stopping.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if inner_stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = inner_counted.load(Ordering::SeqCst);
                if serve(stream, n) {
                    inner_counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        FakeServer {
            addr,
            counted,
            stopping,
            thread: Some(thread),
        }
    }

    /// Connections `serve` counted.
    pub fn count(&self) -> usize {
        self.counted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the blocked accept.
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The simulator's `/sim/state` document, for tests that start a master
/// without a `Lab`.
#[track_caller]
pub fn sim_state(master: &sim::Master) -> Value {
    let url = format!("http://{}/sim/state", master.addr());
    let (status, state) = request(&http_agent(), "GET", &url, None);
    assert_eq!(status, 200, "sim state: {state}");
    state
}
