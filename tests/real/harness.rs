//! The real-Mesos harness: a local Mesos 1.11.0 cluster (`run.sh`/`stop.sh`
//! of `$REALMESOS_DIR`) on a fixed port per test, the `charmander-scheduler`
//! binary as a child process against it, and readers for what really
//! happened: the master's `/master/tasks`, `/master/frameworks`,
//! `/metrics/snapshot` and the fake docker's `runs.log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

pub use crate::http::{http_agent, request, sample_of, wait_until, CADVISOR, INFLUXDB, STRESS60};

/// How long one expectation against the real cluster may take. Real offers
/// come once a second and a declined offer is filtered for 5 s, so this is
/// larger than the simulator's.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// Where the scheduler prints its REST address once it is up.
const API_LINE: &str = "charmander-scheduler api=http://";

/// The realmesos checkout, or None (with a skip line) when the suite is not
/// configured: plain `cargo test` on a machine without Mesos.
pub fn realmesos(test: &str) -> Option<PathBuf> {
    match std::env::var_os("REALMESOS_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            println!("skip {test}: REALMESOS_DIR is not set (scripts/test sets it)");
            None
        }
    }
}

/// Cluster settings a test may change.
pub struct ClusterOptions {
    pub agents: usize,
    pub attributes: &'static str,
    /// Each agent's `--resources` (realmesos' default when None).
    pub resources: Option<&'static str>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            agents: 1,
            attributes: "nodetype:lab;nodename:lab1",
            resources: None,
        }
    }
}

/// One realmesos instance (master and agents in one process) with
/// `DOCKER=fake`; stopped, with everything it started, on drop.
pub struct Cluster {
    dir: PathBuf,
    pub port: u16,
    options: ClusterOptions,
    http: ureq::Agent,
    /// Restarted once by this test (its first log is then `realmesos.log.1`).
    restarted: std::cell::Cell<bool>,
}

impl Cluster {
    pub fn start(dir: &Path, port: u16, options: ClusterOptions) -> Cluster {
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            port,
            options,
            http: http_agent(),
            restarted: std::cell::Cell::new(false),
        };
        // Whatever an aborted earlier run left on this port goes first.
        cluster.script("stop.sh", &[]);
        cluster.run(false);
        cluster
    }

    fn script(&self, name: &str, env: &[(&str, &str)]) -> String {
        let mut command = Command::new(self.dir.join(name));
        if let Some(resources) = self.options.resources {
            command.env("MESOS_RESOURCES", resources);
        }
        let output = command
            .arg(self.port.to_string())
            .env("DOCKER", "fake")
            .env("MESOS_NUM_SLAVES", self.options.agents.to_string())
            .env("MESOS_ATTRIBUTES", self.options.attributes)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{name} {}: {text}", self.port);
        text
    }

    fn run(&self, keep_work: bool) {
        let keep = if keep_work { "1" } else { "0" };
        let text = self.script("run.sh", &[("KEEP_WORK", keep)]);
        assert!(
            text.trim_end().ends_with(&self.address()),
            "run.sh did not print the master URL: {text}"
        );
    }

    /// Stops only the cluster process (executors and containers keep
    /// running) and starts it again on the same work dir: a master restart
    /// with agent recovery.
    pub fn restart_keeping_tasks(&self) {
        assert!(!self.restarted.replace(true), "one restart per test");
        self.script("stop.sh", &[("KEEP_TASKS", "1")]);
        self.run(true);
    }

    /// `127.0.0.1:PORT`, for `--master`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.address());
        let (status, body) = request(&self.http, "GET", &url, None);
        assert_eq!(status, 200, "{url}: {body}");
        body
    }

    /// Every task of the master, running and completed (`/master/tasks`).
    pub fn tasks(&self) -> Vec<Value> {
        self.get("/master/tasks?limit=10000")["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// (task id, state) of every task the master knows, sorted.
    pub fn task_states(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tasks()
            .iter()
            .map(|t| (text(&t["id"]), text(&t["state"])))
            .collect();
        out.sort();
        out
    }

    /// Ids of the master's tasks that are not terminal.
    pub fn live_task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tasks()
            .iter()
            .filter(|t| !is_terminal(&text(&t["state"])))
            .map(|t| text(&t["id"]))
            .collect();
        ids.sort();
        ids
    }

    /// The active (subscribed) frameworks' ids (`/master/frameworks`).
    pub fn connected_frameworks(&self) -> Vec<String> {
        self.get("/master/frameworks")["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["active"] == true && f["connected"] == true)
            .map(|f| text(&f["id"]))
            .collect()
    }

    /// Per-framework counters from `/metrics/snapshot` (`calls/accept`,
    /// `calls/acknowledge`, `events/update`, ...), summed over frameworks.
    pub fn framework_metric(&self, name: &str) -> u64 {
        let snapshot = self.get("/metrics/snapshot");
        let suffix = format!("/{name}");
        snapshot
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with("master/frameworks/") && key.ends_with(&suffix))
            .filter(|(key, _)| key.matches('/').count() == 3 + name.matches('/').count() + 1)
            .map(|(_, value)| value.as_f64().unwrap_or(0.0) as u64)
            .sum()
    }

    /// One counter of `/metrics/snapshot`.
    pub fn metric(&self, key: &str) -> u64 {
        self.get("/metrics/snapshot")[key].as_f64().unwrap_or(0.0) as u64
    }

    fn instance(&self) -> PathBuf {
        let home = std::env::var_os("REALMESOS_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                    })
                    .join("realmesos")
            });
        home.join("instances").join(self.port.to_string())
    }

    /// One entry per successful `docker run` (`docker-state/runs.log`): the argv.
    pub fn docker_runs(&self) -> Vec<Vec<String>> {
        let path = self.instance().join("docker-state/runs.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|run| {
                run["argv"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect()
            })
            .collect()
    }

    /// What `docker inspect NAME` says about a container (the fake docker's own data).
    pub fn docker_inspect(&self, name: &str) -> Value {
        let output = Command::new(self.instance().join("bin/fake-docker"))
            .args(["inspect", name])
            .stdin(Stdio::null())
            .output()
            .expect("fake-docker inspect");
        let all: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        all[0].clone()
    }

    /// The last `lines` lines of the cluster's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.instance().join("logs/realmesos.log"), lines)
    }

    /// Lines of the cluster log (since this test started it) that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let logs = self.instance().join("logs");
        // run.sh keeps one previous log: ours when this test restarted the cluster.
        let mut text = String::new();
        if self.restarted.get() {
            text = std::fs::read_to_string(logs.join("realmesos.log.1")).unwrap_or_default();
        }
        text += &std::fs::read_to_string(logs.join("realmesos.log")).unwrap_or_default();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- realmesos {} log (tail) ---\n{}",
                self.port,
                self.log_tail(60)
            );
        }
        let _ = Command::new(self.dir.join("stop.sh"))
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh directory under the system temp dir (scheduler logs and state).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("charmander-real-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    /// Kept when the test failed, or with `REALMESOS_KEEP_LOGS=1`, for the logs.
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("REALMESOS_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The `charmander-scheduler` binary as a child process, its output in a log
/// file; killed (SIGKILL, a crash) on drop.
pub struct Scheduler {
    child: Child,
    log: PathBuf,
    /// `127.0.0.1:PORT` of its REST API.
    pub api: String,
    http: ureq::Agent,
    exited: Option<ExitStatus>,
}

impl Scheduler {
    /// Starts it against `master` with `state_dir` and waits for its REST API.
    pub fn start(master: &str, state_dir: &Path, log: &Path) -> Scheduler {
        Scheduler::start_with(master, state_dir, log, &[])
    }

    /// The same with extra flags (`--role`, ...).
    pub fn start_with(master: &str, state_dir: &Path, log: &Path, flags: &[&str]) -> Scheduler {
        let child = Scheduler::spawn_with(master, state_dir, log, flags);
        let mut scheduler = Scheduler {
            child,
            log: log.to_path_buf(),
            api: String::new(),
            http: http_agent(),
            exited: None,
        };
        let mut api = None;
        let up = wait_until(DEADLINE, || {
            api = scheduler
                .log_text()
                .lines()
                .rev()
                .find_map(|line| line.split(API_LINE).nth(1).map(str::to_string));
            api.is_some() || scheduler.exit_status().is_some()
        });
        let api = api.unwrap_or_default();
        assert!(
            up && !api.is_empty(),
            "scheduler did not come up: {}",
            scheduler.log_text()
        );
        scheduler.api = api
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        scheduler
    }

    /// Starts it without waiting for anything (it may exit at once).
    pub fn spawn(master: &str, state_dir: &Path, log: &Path) -> Child {
        Scheduler::spawn_with(master, state_dir, log, &[])
    }

    fn spawn_with(master: &str, state_dir: &Path, log: &Path, flags: &[&str]) -> Child {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("scheduler log");
        let _ = writeln!(file, "=== start --master {master} {}", flags.join(" "));
        let err = file.try_clone().expect("log clone");
        Command::new(env!("CARGO_BIN_EXE_charmander-scheduler"))
            .args(["--master", master, "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--log-level", "info", "--http-workers", "2"])
            .args(["--hostname", "127.0.0.1"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("charmander-scheduler spawns")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.api);
        request(&self.http, method, &url, body)
    }

    /// The scheduler's value of `series` in `GET /metrics` (0 when absent).
    pub fn scraped(&self, series: &str) -> u64 {
        let (_, page) = self.call("GET", "/metrics", None);
        sample_of(page.as_str().unwrap_or_default(), series)
    }

    /// POSTs a task and checks the 202.
    #[track_caller]
    pub fn submit(&self, body: &str) {
        let (status, reply) = self.call("POST", "/client/task", Some(body));
        assert_eq!(status, 202, "{body}: {reply}");
    }

    /// Every live task the scheduler lists (`?state=active`: ended tasks
    /// stay listed as history without it).
    pub fn tasks(&self) -> Vec<Value> {
        let (status, tasks) = self.call("GET", "/client/task?state=active", None);
        assert_eq!(status, 200, "task list: {tasks}");
        tasks.as_array().cloned().unwrap_or_default()
    }

    /// InternalIDs of the listed tasks that are launched and not terminal.
    pub fn live_task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tasks()
            .iter()
            .filter(|t| {
                let state = text(&t["state"]);
                state.starts_with("TASK_") && !is_terminal(&state)
            })
            .map(|t| text(&t["InternalID"]))
            .collect();
        ids.sort();
        ids
    }

    /// (user id, state) of every listed task, sorted.
    pub fn summary(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tasks()
            .iter()
            .map(|t| (text(&t["id"]), text(&t["state"])))
            .collect();
        out.sort();
        out
    }

    /// Waits until the scheduler lists exactly `want` (user id, state) pairs.
    #[track_caller]
    pub fn wait_summary(&self, want: &[(&str, &str)], cluster: &Cluster) {
        let mut want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        want.sort();
        let mut last = Vec::new();
        let ok = wait_until(DEADLINE, || {
            last = self.summary();
            last == want
        });
        assert!(
            ok,
            "scheduler lists {last:?}, expected {want:?}\nmaster: {:?}\ntasks: {}",
            cluster.task_states(),
            serde_json::to_string_pretty(&self.tasks()).unwrap_or_default()
        );
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- scheduler log {} (tail) ---\n{}",
                self.log.display(),
                tail(&self.log, 80)
            );
        }
        if self.exited.is_none() {
            self.kill();
        }
    }
}

/// A JSON string value as a String ("" otherwise).
pub fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The container name of a `docker run` (`mesos-<container id>`), which the
/// scheduler shows as `DockerName`.
pub fn run_container_name(argv: &[String]) -> Option<String> {
    let name = argv.iter().position(|word| word == "--name")?;
    argv.get(name + 1).cloned()
}

/// The task id of a `docker run`: the agent mounts the sandbox
/// `.../executors/<task id>/runs/<container id>` (the ExecutorID is the TaskID
/// for a command task).
pub fn run_task_id(argv: &[String]) -> Option<String> {
    argv.iter().find_map(|word| {
        let (_, after) = word.split_once("/executors/")?;
        let (id, _) = after.split_once("/runs/")?;
        Some(id.to_string())
    })
}

/// One line the report collects, printed so that `--nocapture` shows it.
pub fn report(test: &str, line: &str) {
    println!("REPORT {test}: {line}");
}

/// What the master and the fake docker say happened, for the report and the
/// "nothing lost, nothing twice" checks.
#[derive(Debug)]
pub struct Ledger {
    /// Task ids the master knows (running and completed).
    pub launched: usize,
    /// `docker run`s the agent asked for.
    pub runs: usize,
    /// Status updates from agents the master forwarded (each resend counts),
    /// and acknowledgements it got for them (valid and invalid), since the
    /// cluster process started. Reconciliation answers carry no uuid and
    /// need no acknowledgement, so they are not among them.
    pub updates: u64,
    pub acknowledged: u64,
    pub bad_acknowledgements: u64,
    /// ACCEPT and KILL calls the master received.
    pub accepts: u64,
    pub kills: u64,
    /// Master log lines about a task id used twice.
    pub duplicate_ids: Vec<String>,
    /// TASK_ERROR and TASK_DROPPED updates the master sent (log lines).
    pub errors: Vec<String>,
    pub dropped: Vec<String>,
    /// Task ids that `docker run` got more than once.
    pub twice: Vec<String>,
}

impl Ledger {
    pub fn of(cluster: &Cluster) -> Ledger {
        let runs = cluster.docker_runs();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for argv in &runs {
            *names
                .entry(run_container_name(argv).unwrap_or_default())
                .or_default() += 1;
        }
        Ledger {
            launched: cluster.tasks().len(),
            runs: runs.len(),
            updates: cluster.metric("master/valid_status_updates"),
            acknowledged: cluster.metric("master/valid_status_update_acknowledgements"),
            bad_acknowledgements: cluster.metric("master/invalid_status_update_acknowledgements"),
            accepts: cluster.framework_metric("calls/accept"),
            kills: cluster.framework_metric("calls/kill"),
            duplicate_ids: cluster.log_lines("duplicate ID"),
            errors: cluster.log_lines("Sending status update TASK_ERROR"),
            dropped: cluster.log_lines("Sending status update TASK_DROPPED"),
            twice: names
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// The ledger once every status update the master sent is acknowledged
    /// (failing the test if that takes past `DEADLINE`).
    #[track_caller]
    pub fn once_acknowledged(cluster: &Cluster) -> Ledger {
        let mut ledger = Ledger::of(cluster);
        let acked = wait_until(DEADLINE, || {
            ledger = Ledger::of(cluster);
            ledger.acknowledged == ledger.updates
        });
        assert!(acked, "updates not all acknowledged: {ledger:?}");
        ledger
    }

    /// Nothing launched twice under one id, and no launch refused (TASK_ERROR).
    #[track_caller]
    pub fn assert_nothing_twice(&self) {
        assert!(
            self.duplicate_ids.is_empty(),
            "duplicate task ids: {:?}",
            self.duplicate_ids
        );
        assert!(self.errors.is_empty(), "TASK_ERROR: {:?}", self.errors);
        assert!(
            self.twice.is_empty(),
            "task ids run twice: {:?}",
            self.twice
        );
    }

    pub fn line(&self) -> String {
        format!(
            "master tasks {}, docker runs {}, ACCEPT calls {}, KILL calls {}, status updates {} acknowledged {} (invalid acks {}), duplicate-ID lines {}, TASK_ERROR {}, TASK_DROPPED {}, task ids run twice {}",
            self.launched,
            self.runs,
            self.accepts,
            self.kills,
            self.updates,
            self.acknowledged,
            self.bad_acknowledgements,
            self.duplicate_ids.len(),
            self.errors.len(),
            self.dropped.len(),
            self.twice.len()
        )
    }
}
