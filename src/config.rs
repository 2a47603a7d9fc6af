//! Command-line flags → `Config`. Hand-written (no clap): a handful of
//! `--flag VALUE` pairs, each validated here so the rest of the program gets
//! typed values. Runs once on the main thread.

use std::fmt;
use std::time::Duration;

use crate::mesos::client::BasicAuth;

/// One week: a lost connection must never make Mesos kill the lab's tasks.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Seconds between Redis cycles, as in the original.
pub const DEFAULT_REDIS_INTERVAL: Duration = Duration::from_secs(15);

/// Where state lives when `--state-dir` is not given (and not `--sim`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/charmander-scheduler";

/// How often every task is reconciled with the master.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(600);

/// The most addresses `--master` may list.
pub const MAX_MASTERS: usize = 16;

/// The largest secret file we read.
const MAX_SECRET_FILE: u64 = 4096;

/// The largest `--sim-agents` file we read (a 1,000-agent lab is ~150 KiB).
pub const MAX_SIM_AGENTS_FILE: u64 = 1024 * 1024;

pub const USAGE: &str = "\
charmander-scheduler: a Mesos framework for the Charmander scheduling lab

Usage: charmander-scheduler [FLAGS]

Flags:
  --master HOST:PORT[,...]  Mesos master(s) to subscribe to (default
                            127.0.0.1:5050); a non-leading master redirects us
                            to the leader; on a connection failure or 503 the
                            next address is tried, round robin
  --listen ADDR:PORT        REST API address (default 0.0.0.0:7075)
  --sim                     start a simulated Charmander lab (mesos-sim with
                            slave1..slave3) in-process and use it as the master
  --sim-agents FILE         with --sim: the simulated agents, in mesos-sim's
                            --agents JSON (docs/lab-agents.json is the lab's
                            four nodes, slave4 nodetype=traffic)
  --framework-name NAME     FrameworkInfo.name (default \"Charmander Scheduler\")
  --user USER               FrameworkInfo.user (default root)
  --role ROLE               FrameworkInfo.role (default *); checked as Mesos
                            does: no whitespace, no leading '-', not . or ..,
                            '/' only between the parts of a hierarchy
  --hostname HOST           FrameworkInfo.hostname (default: this machine's name)
  --failover-timeout SECS   how long Mesos keeps our tasks after we disconnect
                            (default 604800, one week)
  --principal NAME          Mesos HTTP basic-auth principal (optional)
  --secret-file FILE        file holding the principal's secret (with --principal)
  --http-workers N          REST worker threads (default 32)
  --state-dir DIR           where the framework id, tasks and intelligence are
                            kept across restarts (default
                            /var/lib/charmander-scheduler; with --sim: kept in
                            memory only, unless given)
  --reset                   tear down the stored framework (killing its tasks)
                            and start clean: the lab's old \"reset cluster\"
  --reconcile-interval SECS reconcile every task with the master this often
                            (default 600)
  --unknown-grace SECS      how long a task that ran may stay TASK_UNKNOWN
                            (its agent not re-registered with a restarted
                            master) before it runs again as a new task
                            (default 120)
  --keep-finished SECS      how long ended tasks stay in the task list, at most
                            1000 of them (default 3600; 0 keeps none)
  --api-token-file FILE     require \"Authorization: Bearer <token>\" on every
                            endpoint that changes something (default: open)
  --redis HOST:PORT         publish nodes and tasks to Redis and read task
                            intelligence from it (default: no Redis)
  --redis-interval SECS     seconds between Redis cycles (default 15)
  --log-level LEVEL         error, warn, info, debug or trace (default info);
                            RUST_LOG overrides it
  -h, --help                print this help
";

/// Everything the program needs, validated.
/// A value that must never reach a log line, such as the API token: its
/// `Debug` says only that it is set, so `{config:?}` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// REST worker threads by default. A submit holds its worker until the
/// journal has committed it, so a worker per concurrent client keeps a ping
/// (or any request) from queueing behind submits: in the 10k bench with 32
/// clients, 16 workers gave ping p99 18.6 ms during the burst against 38.2
/// with 4, and 5,900 submits/s against 3,100. Once launches kept up with
/// the submits (pipelined calls) the commits took longer, and 16 workers
/// gave ping p50/p99 1.5-2.6 / 28.6-36.4 ms in four runs against
/// 0.1-0.2 / 3.1-27.6 with 32 to 64 (five runs). Idle workers cost a few KB.
pub const DEFAULT_HTTP_WORKERS: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// One or more master addresses, comma-separated (see `masters`).
    pub master: String,
    pub listen: String,
    pub sim: bool,
    /// `--sim-agents`: the simulated lab's agents; `None` is the built-in
    /// three-node lab (`sim::charmander_lab`).
    pub sim_agents: Option<Vec<crate::sim::AgentSpec>>,
    pub framework_name: String,
    pub user: String,
    pub role: String,
    pub hostname: String,
    pub failover_timeout: Duration,
    pub auth: Option<BasicAuth>,
    pub http_workers: usize,
    pub log_level: log::LevelFilter,
    /// host:port of the lab's Redis; `None` runs without the bridge.
    pub redis: Option<String>,
    pub redis_interval: Duration,
    /// `None` keeps state in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    pub reset: bool,
    pub reconcile_interval: Duration,
    /// How long a task that ran may stay TASK_UNKNOWN before it is relaunched.
    pub unknown_grace: Duration,
    /// How long ended tasks stay listed (zero: not at all).
    pub keep_finished: Duration,
    /// Bearer token for mutating endpoints; `None` leaves them open.
    pub api_token: Option<Secret>,
    /// How long a REST change waits for its commit before answering 504
    /// (`api::COMMIT_WAIT`). No flag sets it; tests shorten it.
    pub commit_wait: Duration,
    /// Test hook, no flag: each journal commit waits this long before its
    /// fsync, as a slow disk would (`store::Store::set_commit_delay`).
    pub journal_delay: Duration,
}

impl Config {
    /// The master addresses in the order given.
    pub fn masters(&self) -> Vec<String> {
        self.master
            .split(',')
            .map(|it| it.trim().to_string())
            .filter(|it| !it.is_empty())
            .collect()
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            master: "127.0.0.1:5050".to_string(),
            listen: "0.0.0.0:7075".to_string(),
            sim: false,
            sim_agents: None,
            framework_name: "Charmander Scheduler".to_string(),
            user: "root".to_string(),
            role: "*".to_string(),
            hostname: default_hostname(),
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            auth: None,
            http_workers: DEFAULT_HTTP_WORKERS,
            log_level: log::LevelFilter::Info,
            redis: None,
            redis_interval: DEFAULT_REDIS_INTERVAL,
            state_dir: None,
            reset: false,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            unknown_grace: crate::scheduler::state::DEFAULT_UNKNOWN_GRACE,
            keep_finished: crate::scheduler::state::DEFAULT_KEEP_FINISHED,
            api_token: None,
            commit_wait: crate::api::COMMIT_WAIT,
            journal_delay: Duration::ZERO,
        }
    }
}

/// What parsing the command line produced.
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // built once, at startup
pub enum Parsed {
    Run(Config),
    Help,
}

/// A bad command line; printed with the usage hint, exit code 2.
#[derive(Debug, PartialEq)]
pub enum Error {
    UnknownFlag(String),
    MissingValue(&'static str),
    BadValue {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    SecretFile {
        path: String,
        why: String,
    },
    /// A `--sim-agents` file that cannot be read or is not an agent list.
    AgentsFile {
        path: String,
        why: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownFlag(flag) => write!(f, "unknown flag {flag:?}"),
            Error::MissingValue(flag) => write!(f, "{flag} needs a value"),
            Error::BadValue { flag, value, why } => {
                write!(f, "bad value {value:?} for {flag}: {why}")
            }
            Error::SecretFile { path, why } => write!(f, "cannot read secret file {path}: {why}"),
            Error::AgentsFile { path, why } => write!(f, "--sim-agents {path}: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, Error> {
    let mut config = Config::default();
    let mut principal = None;
    let mut secret_file = None;
    let mut state_dir = None;
    let mut sim_agents = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &'static str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(Error::MissingValue(name))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--sim" => config.sim = true,
            "--sim-agents" => sim_agents = Some(value("--sim-agents")?),
            "--master" => config.master = master_list(value("--master")?)?,
            "--listen" => config.listen = host_port("--listen", value("--listen")?)?,
            "--framework-name" => {
                config.framework_name = non_empty("--framework-name", value("--framework-name")?)?
            }
            "--user" => config.user = non_empty("--user", value("--user")?)?,
            "--role" => config.role = role(value("--role")?)?,
            "--hostname" => config.hostname = non_empty("--hostname", value("--hostname")?)?,
            "--failover-timeout" => {
                let text = value("--failover-timeout")?;
                let seconds: f64 = text
                    .parse()
                    .map_err(|_| bad("--failover-timeout", &text, "not a number of seconds"))?;
                // The master rejects values that overflow int64 nanoseconds.
                if !(seconds.is_finite() && (0.0..=9.0e9).contains(&seconds)) {
                    return Err(bad(
                        "--failover-timeout",
                        &text,
                        "must be between 0 and 9e9 seconds",
                    ));
                }
                config.failover_timeout = Duration::from_secs_f64(seconds);
            }
            "--principal" => principal = Some(non_empty("--principal", value("--principal")?)?),
            "--secret-file" => secret_file = Some(value("--secret-file")?),
            "--http-workers" => {
                let text = value("--http-workers")?;
                config.http_workers = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| bad("--http-workers", &text, "must be 1 to 64"))?;
            }
            "--state-dir" => state_dir = Some(non_empty("--state-dir", value("--state-dir")?)?),
            "--reset" => config.reset = true,
            "--reconcile-interval" => {
                config.reconcile_interval =
                    seconds("--reconcile-interval", value("--reconcile-interval")?)?;
            }
            "--unknown-grace" => {
                config.unknown_grace = seconds("--unknown-grace", value("--unknown-grace")?)?;
            }
            "--keep-finished" => {
                let text = value("--keep-finished")?;
                // Zero is allowed here: it turns the history off.
                config.keep_finished = match text.trim() {
                    "0" => Duration::ZERO,
                    _ => seconds("--keep-finished", text.clone()).map_err(|_| {
                        bad(
                            "--keep-finished",
                            &text,
                            "must be 0 (keep none) or between 1 and 86400 seconds",
                        )
                    })?,
                };
            }
            "--api-token-file" => {
                let path = value("--api-token-file")?;
                config.api_token = Some(Secret(read_secret(&path)?));
            }
            "--redis" => config.redis = Some(host_port("--redis", value("--redis")?)?),
            "--redis-interval" => {
                let text = value("--redis-interval")?;
                let seconds: f64 = text
                    .parse()
                    .map_err(|_| bad("--redis-interval", &text, "not a number of seconds"))?;
                if !(seconds.is_finite() && (0.05..=3600.0).contains(&seconds)) {
                    return Err(bad(
                        "--redis-interval",
                        &text,
                        "must be between 0.05 and 3600 seconds",
                    ));
                }
                config.redis_interval = Duration::from_secs_f64(seconds);
            }
            "--log-level" => {
                let text = value("--log-level")?;
                config.log_level = text.parse().map_err(|_| {
                    bad(
                        "--log-level",
                        &text,
                        "use error, warn, info, debug or trace",
                    )
                })?;
            }
            _ => return Err(Error::UnknownFlag(arg)),
        }
    }
    config.sim_agents = match sim_agents {
        None => None,
        Some(path) if !config.sim => {
            return Err(bad("--sim-agents", &path, "only with --sim"));
        }
        Some(path) => Some(read_agents(&path)?),
    };
    // The simulated lab lives in memory, so by default its state does too.
    config.state_dir = match (state_dir, config.sim) {
        (Some(dir), _) => Some(dir.into()),
        (None, true) => None,
        (None, false) => Some(DEFAULT_STATE_DIR.into()),
    };
    config.auth = match (principal, secret_file) {
        (None, None) => None,
        (Some(_), None) => return Err(Error::MissingValue("--secret-file")),
        (None, Some(_)) => return Err(Error::MissingValue("--principal")),
        (Some(principal), Some(path)) => Some(BasicAuth {
            principal,
            secret: read_secret(&path)?,
        }),
    };
    Ok(Parsed::Run(config))
}

fn bad(flag: &'static str, value: &str, why: &'static str) -> Error {
    Error::BadValue {
        flag,
        value: value.to_string(),
        why,
    }
}

/// A duration flag: 1 to 86400 seconds, fractions allowed.
fn seconds(flag: &'static str, text: String) -> Result<Duration, Error> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (1.0..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| bad(flag, &text, "must be between 1 and 86400 seconds"))
}

fn non_empty(flag: &'static str, value: String) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(bad(flag, &value, "must not be empty"));
    }
    Ok(value)
}

/// `host:port[,host:port...]`, each checked; spaces around commas dropped.
fn master_list(value: String) -> Result<String, Error> {
    let masters: Vec<&str> = value.split(',').map(str::trim).collect();
    if masters.len() > MAX_MASTERS {
        return Err(bad("--master", &value, "lists more than 16 addresses"));
    }
    for master in &masters {
        host_port("--master", master.to_string())
            .map_err(|_| bad("--master", &value, "expected HOST:PORT[,HOST:PORT...]"))?;
    }
    Ok(masters.join(","))
}

fn role(value: String) -> Result<String, Error> {
    match invalid_role(&value) {
        Some(why) => Err(bad("--role", &value, why)),
        None => Ok(value),
    }
}

/// Why Mesos would refuse `role` on SUBSCRIBE, if it would (the rules of
/// Mesos' `src/common/roles.cpp` and `docs/roles.md`): `*` is the default
/// role; any other role is one or more `/`-separated components (a role
/// hierarchy), each non-empty, not `.`, `..` or `*`, not starting with `-`,
/// and free of whitespace and control characters.
pub fn invalid_role(role: &str) -> Option<&'static str> {
    if role == "*" {
        return None;
    }
    if role.is_empty() {
        return Some("must not be empty");
    }
    if role.starts_with('/') || role.ends_with('/') {
        return Some("must not start or end with '/'");
    }
    for component in role.split('/') {
        if component.is_empty() {
            return Some("must not contain '//' ('/' only separates the parts of a hierarchy)");
        }
        if component == "." || component == ".." {
            return Some("'.' and '..' are not valid roles or role parts");
        }
        if component == "*" {
            return Some("'*' is only valid as the whole role");
        }
        if component.starts_with('-') {
            return Some("a role (and each '/'-separated part) must not start with '-'");
        }
        if component
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Some("must not contain whitespace or control characters");
        }
    }
    None
}

fn host_port(flag: &'static str, value: String) -> Result<String, Error> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(value),
        _ => Err(bad(flag, &value, "expected HOST:PORT")),
    }
}

fn read_secret(path: &str) -> Result<String, Error> {
    use std::io::Read;
    let error = |why: String| Error::SecretFile {
        path: path.to_string(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|err| error(err.to_string()))?;
    let mut secret = String::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut secret)
        .map_err(|err| error(err.to_string()))?;
    // A longer file would be cut without a word, and the master or the
    // clients would see a different secret than the operator wrote.
    if secret.len() as u64 > MAX_SECRET_FILE {
        return Err(error(format!("longer than {MAX_SECRET_FILE} bytes")));
    }
    let secret = secret.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(error("file is empty".to_string()));
    }
    // HTTP basic auth cannot carry a ':' in the secret (reference §6).
    if secret.contains(':') {
        return Err(error("secret must not contain ':'".to_string()));
    }
    Ok(secret)
}

/// A `--sim-agents` file: mesos-sim's `--agents` JSON, at most
/// `MAX_SIM_AGENTS_FILE` bytes.
fn read_agents(path: &str) -> Result<Vec<crate::sim::AgentSpec>, Error> {
    use std::io::Read;
    let error = |why: String| Error::AgentsFile {
        path: path.to_string(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|err| error(err.to_string()))?;
    let mut text = String::new();
    file.take(MAX_SIM_AGENTS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|err| error(err.to_string()))?;
    if text.len() as u64 > MAX_SIM_AGENTS_FILE {
        return Err(error(format!("larger than {MAX_SIM_AGENTS_FILE} bytes")));
    }
    let agents = crate::sim::parse_agents_json(&text).map_err(error)?;
    if agents.is_empty() {
        return Err(error("lists no agents".to_string()));
    }
    Ok(agents)
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[track_caller]
    fn check_error(line: &str, expected: &str) {
        match parse(args(line)) {
            Err(err) => assert_eq!(err.to_string(), expected),
            Ok(parsed) => panic!("{line:?} parsed as {parsed:?}"),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let Ok(Parsed::Run(config)) = parse(args("")) else {
            panic!("empty args must parse")
        };
        assert_eq!(
            (
                config.master.as_str(),
                config.listen.as_str(),
                config.failover_timeout
            ),
            ("127.0.0.1:5050", "0.0.0.0:7075", DEFAULT_FAILOVER_TIMEOUT)
        );
        let Ok(Parsed::Run(config)) = parse(args("--sim --master m1:5050 --listen=127.0.0.1:0 --role lab --failover-timeout 60 --log-level debug")) else {
            panic!("valid flags must parse")
        };
        assert!(config.sim);
        assert_eq!(
            (
                config.master.as_str(),
                config.listen.as_str(),
                config.role.as_str()
            ),
            ("m1:5050", "127.0.0.1:0", "lab")
        );
        assert_eq!(
            (config.failover_timeout, config.log_level),
            (Duration::from_secs(60), log::LevelFilter::Debug)
        );
        assert_eq!(parse(args("--help")), Ok(Parsed::Help));
    }

    #[test]
    fn state_lives_on_disk_by_default_but_in_memory_with_the_sim() {
        let dir = |line: &str| match parse(args(line)) {
            Ok(Parsed::Run(config)) => config.state_dir,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(dir(""), Some(DEFAULT_STATE_DIR.into()));
        assert_eq!(dir("--sim"), None);
        assert_eq!(dir("--sim --state-dir /tmp/x"), Some("/tmp/x".into()));
        let Ok(Parsed::Run(config)) = parse(args("--reset --reconcile-interval 30")) else {
            panic!("valid flags must parse")
        };
        assert_eq!(
            (config.reset, config.reconcile_interval),
            (true, Duration::from_secs(30))
        );
        check_error(
            "--reconcile-interval 0",
            "bad value \"0\" for --reconcile-interval: must be between 1 and 86400 seconds",
        );
        let Ok(Parsed::Run(config)) = parse(args("--unknown-grace 2.5")) else {
            panic!("valid flags must parse")
        };
        assert_eq!(config.unknown_grace, Duration::from_millis(2500));
        check_error(
            "--unknown-grace never",
            "bad value \"never\" for --unknown-grace: must be between 1 and 86400 seconds",
        );
        for (flag, keep) in [("--keep-finished 0", 0), ("--keep-finished 60", 60)] {
            let Ok(Parsed::Run(config)) = parse(args(flag)) else {
                panic!("valid flags must parse")
            };
            assert_eq!(config.keep_finished, Duration::from_secs(keep));
        }
        check_error(
            "--keep-finished -1",
            "bad value \"-1\" for --keep-finished: must be 0 (keep none) or between 1 and 86400 seconds",
        );
        check_error(
            "--api-token-file /nonexistent/t",
            "cannot read secret file /nonexistent/t: No such file or directory (os error 2)",
        );
        // See: review of issue 9. A long token file was cut at 4096 bytes.
        let long = std::env::temp_dir().join(format!("charmander-long-{}", std::process::id()));
        std::fs::write(&long, "x".repeat(4097)).expect("written");
        check_error(
            &format!("--api-token-file {}", long.display()),
            &format!(
                "cannot read secret file {}: longer than 4096 bytes",
                long.display()
            ),
        );
        std::fs::write(&long, "x".repeat(4096)).expect("written");
        let Ok(Parsed::Run(config)) = parse(args(&format!("--api-token-file {}", long.display())))
        else {
            panic!("a 4096-byte token file must parse")
        };
        let _ = std::fs::remove_file(&long);
        assert_eq!(
            config.api_token.as_ref().map(|t| t.expose().len()),
            Some(4096)
        );
        // The token is a credential: a debug print of the config must not show it.
        let printed = format!("{config:?}");
        assert!(!printed.contains("xxxx"), "token leaked: {printed}");
        assert!(printed.contains("api_token: Some(Secret(redacted))"));
    }

    /// See: issue 11, item 6. `--sim` was fixed at three nodes, so traffic
    /// experiments (nodetype=traffic, slave4) stayed pending in the demo.
    #[test]
    fn sim_agents_come_from_a_file() {
        let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lab-agents.json");
        let Ok(Parsed::Run(config)) = parse(args(&format!("--sim --sim-agents {lab}"))) else {
            panic!("the documented lab must parse")
        };
        let agents = config.sim_agents.expect("agents from the file");
        let nodes: Vec<(&str, &str)> = agents
            .iter()
            .map(|agent| {
                let nodetype = agent
                    .attributes
                    .iter()
                    .find(|(k, _)| k == "nodetype")
                    .map_or("", |(_, v)| v.as_str());
                (agent.hostname.as_str(), nodetype)
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("slave1", "analytics"),
                ("slave2", "lab"),
                ("slave3", "lab"),
                ("slave4", "traffic")
            ]
        );
        let Ok(Parsed::Run(config)) = parse(args("--sim")) else {
            panic!("--sim alone must parse")
        };
        assert_eq!(config.sim_agents, None, "the built-in lab is the default");
        check_error(
            &format!("--sim-agents {lab}"),
            &format!("bad value \"{lab}\" for --sim-agents: only with --sim"),
        );
        check_error(
            "--sim --sim-agents /nonexistent/agents.json",
            "--sim-agents /nonexistent/agents.json: No such file or directory (os error 2)",
        );
        let dir = std::env::temp_dir().join(format!("charmander-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text, why) in [
            ("empty.json", "[]", "lists no agents"),
            ("object.json", "{}", "expected a JSON list of agents"),
            (
                "nohost.json",
                r#"[{"cpus":1,"mem":1}]"#,
                "agent 0: missing \"hostname\"",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            let path = path.display().to_string();
            check_error(
                &format!("--sim --sim-agents {path}"),
                &format!("--sim-agents {path}: {why}"),
            );
        }
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_SIM_AGENTS_FILE as usize + 1]).expect("write");
        let big = big.display().to_string();
        check_error(
            &format!("--sim --sim-agents {big}"),
            &format!("--sim-agents {big}: larger than {MAX_SIM_AGENTS_FILE} bytes"),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// See: issue 8, finding 8. One address was all a lab with three
    /// masters could give.
    #[test]
    fn master_takes_a_list_of_addresses() {
        let masters = |line: &str| match parse(args(line)) {
            Ok(Parsed::Run(config)) => config.masters(),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(masters(""), ["127.0.0.1:5050"]);
        assert_eq!(masters("--master m1:5050"), ["m1:5050"]);
        assert_eq!(
            masters("--master m1:5050,m2:5051,10.0.0.3:5050"),
            ["m1:5050", "m2:5051", "10.0.0.3:5050"]
        );
        let many = vec!["m:5050"; MAX_MASTERS + 1].join(",");
        assert!(parse(vec!["--master".to_string(), many]).is_err());
    }

    /// See: issue 8, finding 5. An invalid role used to reach the master,
    /// which refused every SUBSCRIBE.
    #[test]
    fn roles_are_validated_the_way_mesos_does() {
        let check = |role: &str, expected: Option<&'static str>| {
            assert_eq!(invalid_role(role), expected, "{role:?}");
            let parsed = parse(vec!["--role".to_string(), role.to_string()]);
            match expected {
                None => assert!(
                    matches!(&parsed, Ok(Parsed::Run(config)) if config.role == role),
                    "{role:?}: {parsed:?}"
                ),
                Some(why) => assert_eq!(
                    parsed,
                    Err(Error::BadValue {
                        flag: "--role",
                        value: role.to_string(),
                        why
                    })
                ),
            }
        };
        let whitespace = Some("must not contain whitespace or control characters");
        let dots = Some("'.' and '..' are not valid roles or role parts");
        let dash = Some("a role (and each '/'-separated part) must not start with '-'");
        let edge_slash = Some("must not start or end with '/'");
        let double_slash =
            Some("must not contain '//' ('/' only separates the parts of a hierarchy)");
        let star = Some("'*' is only valid as the whole role");
        check("*", None);
        check("lab", None);
        check("lab-analytics_2.x", None);
        check("eng/frontend/server", None);
        check("a.b", None);
        check("x-", None);
        check("", Some("must not be empty"));
        check(".", dots);
        check("..", dots);
        check("eng/..", dots);
        check("./eng", dots);
        check("-lab", dash);
        check("eng/-x", dash);
        check("a b", whitespace);
        check(" lab", whitespace);
        check("lab\t", whitespace);
        check("lab\n", whitespace);
        check("la\u{7f}b", whitespace);
        check("la\u{0}b", whitespace);
        check("/eng", edge_slash);
        check("eng/", edge_slash);
        check("/", edge_slash);
        check("eng//x", double_slash);
        check("eng/*", star);
        check("**", None);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        check_error("--bogus", "unknown flag \"--bogus\"");
        check_error("--master", "--master needs a value");
        check_error(
            "--master nohost",
            "bad value \"nohost\" for --master: expected HOST:PORT[,HOST:PORT...]",
        );
        check_error(
            "--master m1:5050,,m2:5050",
            "bad value \"m1:5050,,m2:5050\" for --master: expected HOST:PORT[,HOST:PORT...]",
        );
        check_error(
            "--master m1:5050,m2",
            "bad value \"m1:5050,m2\" for --master: expected HOST:PORT[,HOST:PORT...]",
        );
        check_error(
            "--listen :99999",
            "bad value \":99999\" for --listen: expected HOST:PORT",
        );
        check_error(
            "--failover-timeout -1",
            "bad value \"-1\" for --failover-timeout: must be between 0 and 9e9 seconds",
        );
        check_error(
            "--failover-timeout NaN",
            "bad value \"NaN\" for --failover-timeout: must be between 0 and 9e9 seconds",
        );
        check_error(
            "--log-level loud",
            "bad value \"loud\" for --log-level: use error, warn, info, debug or trace",
        );
        check_error("--principal p", "--secret-file needs a value");
        check_error(
            "--redis 6379",
            "bad value \"6379\" for --redis: expected HOST:PORT",
        );
        check_error(
            "--redis-interval 0",
            "bad value \"0\" for --redis-interval: must be between 0.05 and 3600 seconds",
        );
        check_error(
            "--principal p --secret-file /nonexistent/x",
            "cannot read secret file /nonexistent/x: No such file or directory (os error 2)",
        );
    }
}
