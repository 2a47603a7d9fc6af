//! The load generator behind `scripts/bench`: keep-alive HTTP/1.1 clients on
//! plain threads and std `TcpStream`s, so the client is never what is measured.
//! Each subcommand measures one phase and appends `key=value` lines to a
//! results file; `table` prints them as one table at the end of the run.
//!
//! ```text
//! loadgen port                               print a free local port
//! loadgen agents N FILE                      write N agents (16 cpus, 64 GB)
//! loadgen load OUT API BARE PID TASKS CLIENTS RUN_TIMEOUT_S [SIM_PID [BARE_PID]]
//! loadgen burst OUT API PID TASKS CLIENTS RUN_TIMEOUT_S   the submit burst alone (for profiling)
//! loadgen lists OUT API                      the list phase alone (for profiling)
//! loadgen restore OUT API PID TASKS READY_TIMEOUT_S
//! loadgen ceiling OUT MASTER TASKS RUN_TIMEOUT_S [SIM_PID]
//! loadgen table OUT
//! ```
//!
//! With SIM_PID, the simulator's CPU time is recorded too, until every task
//! runs: during the scheduler's burst, and during the ceiling's run. With
//! BARE_PID, the bare server's CPU time for the burst's POSTs too: what the
//! HTTP layer alone costs for the submits (see `bare_posts`).
//!
//! Every wait has a named bound; a phase that runs out of time records what it
//! measured and marks the rest `timeout`, so the bench always ends with a table.

use crossbeam_channel::{bounded, Receiver, Sender};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Read/write timeout of one HTTP exchange (a list of 100k tasks included).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each ping throughput measurement runs.
const PING_WINDOW: Duration = Duration::from_secs(3);
/// Keep-alive clients hammering ping (2 cores: more only measures the kernel).
const PING_CLIENTS: usize = 4;
/// Pause between two latency probes of ping during the burst.
const PROBE_PAUSE: Duration = Duration::from_millis(5);
/// Pause between two polls of the RUNNING count (a `/metrics` scrape, which
/// reads the state's per-phase index) while waiting for every task to run.
const POLL_PAUSE: Duration = Duration::from_millis(20);
/// Clients and requests each for the task-list latency figure.
const LIST_CLIENTS: usize = 4;
const LIST_REQUESTS: usize = 10;
/// Total time the task-list latency figure may take.
const LIST_BUDGET: Duration = Duration::from_secs(60);
/// The wait before RSS is read again after the lists: longer than the
/// scheduler's `trim::TRIM_SOON` (2 s), so the trim after the lists has run.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the scheduler may take to answer its first ping.
const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (a 100k-task list is tens of MB).
const MAX_BODY: usize = 512 << 20;
/// Largest header section read.
const MAX_HEADER_LINES: usize = 100;
/// Per agent of the generated cluster.
const AGENT_CPUS: u64 = 16;
const AGENT_MEM_MB: u64 = 65_536;
/// Per task, in the scheduler run and in the ceiling run alike.
const TASK_CPUS: f64 = 0.1;
const TASK_MEM_MB: f64 = 64.0;
/// The share of the simulator's ceiling the launches are held to: the table
/// shows the scheduler's CPU budget at that rate.
const CEILING_SHARE: f64 = 0.8;
/// Posting threads of the ceiling framework (ACCEPTs and ACKNOWLEDGEs).
const CEILING_POSTERS: usize = 4;
/// Calls waiting for a poster before the event reader blocks.
const CEILING_QUEUE: usize = 100_000;
/// `/proc/PID/stat` clock ticks a second (`getconf CLK_TCK`, fixed on Linux).
const CLOCK_TICKS: f64 = 100.0;
/// Bytes of one RecordIO chunk accepted from the master.
const MAX_CHUNK: usize = 64 << 20;

type Results = BTreeMap<String, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    // An optional pid: absent or not a number, none.
    let pid = |i: usize| -> Option<u32> { arg(i).parse().ok() };
    let num = |i: usize| -> u64 {
        arg(i).parse().unwrap_or_else(|_| {
            eprintln!("loadgen: argument {i} must be a number, not {:?}", arg(i));
            std::process::exit(2)
        })
    };
    let mut out = Results::new();
    match arg(0).as_str() {
        "port" => {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binds port 0");
            println!("{}", listener.local_addr().expect("bound").port());
            return;
        }
        "agents" => {
            let agents: Vec<Value> = (0..num(1))
                .map(|i| {
                    json!({"hostname": format!("agent{i}"), "cpus": AGENT_CPUS,
                        "mem": AGENT_MEM_MB, "ports": [[31000, 32000]],
                        "attributes": {"nodetype": "lab"}})
                })
                .collect();
            std::fs::write(arg(2), Value::Array(agents).to_string()).expect("writes agents");
            return;
        }
        "load" => load(
            &mut out,
            &arg(2),
            &arg(3),
            Pids {
                scheduler: num(4) as u32,
                sim: pid(8),
                bare: pid(9),
            },
            num(5) as usize,
            num(6) as usize,
            Duration::from_secs(num(7)),
        ),
        "burst" => burst(
            &mut out,
            &arg(2),
            num(3) as u32,
            num(4) as usize,
            num(5) as usize,
            Duration::from_secs(num(6)),
        ),
        "restore" => restore(
            &mut out,
            &arg(2),
            num(3) as u32,
            num(4) as usize,
            Duration::from_secs(num(5)),
        ),
        "ceiling" => ceiling(
            &mut out,
            &arg(2),
            num(3) as usize,
            Duration::from_secs(num(4)),
            pid(5),
        ),
        "lists" => list_phase(&mut out, &arg(2)),
        "table" => {
            table(&read_results(&arg(1)));
            return;
        }
        other => {
            eprintln!("loadgen: unknown subcommand {other:?} (see the file's doc)");
            std::process::exit(2);
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(arg(1))
        .expect("opens results file");
    for (key, value) in &out {
        writeln!(file, "{key}={value}").expect("writes results");
    }
}

/// A keep-alive HTTP/1.1 connection; reconnects after any error.
struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
        }
    }

    /// One request; the status and body, or an error text.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        let result = self.try_call(method, path, body);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let socket = TcpStream::connect(&self.addr).map_err(|e| format!("connect: {e}"))?;
            socket
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            socket
                .set_write_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            socket.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(BufReader::new(socket));
        }
        let reader = self.stream.as_mut().ok_or("no stream")?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body.unwrap_or(""));
        reader
            .get_mut()
            .write_all(head.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        read_response(reader)
    }
}

/// Reads one response: the status line, headers, and a sized or chunked body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let Some((name, value)) = line.trim().split_once(':') else {
            break;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
            if size == 0 || body.len() + size > MAX_BODY {
                line.clear();
                reader
                    .read_line(&mut line)
                    .map_err(|e| format!("read: {e}"))?;
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|e| format!("read: {e}"))?;
            body.truncate(start + size);
        }
    } else if let Some(length) = length {
        body.resize(length.min(MAX_BODY), 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
    }
    if close {
        return Err(format!("server closed after status {status}"));
    }
    Ok((status, body))
}

/// VmRSS or VmHWM of `pid` in MiB, if the process is there.
fn mem_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("n/a".to_string(), |d| {
        format!("{:.1}", d.as_secs_f64() * 1000.0)
    })
}

/// Requests per second of `clients` keep-alive clients GETting `path`.
fn throughput(addr: &str, path: &str, clients: usize) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ok, failed, addr, path) = (
                ok.clone(),
                failed.clone(),
                addr.to_string(),
                path.to_string(),
            );
            std::thread::spawn(move || {
                let mut conn = Conn::new(&addr);
                while start.elapsed() < PING_WINDOW {
                    match conn.call("GET", &path, None) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    let rate = ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    (rate, failed.load(Ordering::Relaxed))
}

/// Waits until ping answers 200, up to `limit`; the time it took.
fn wait_up(api: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut conn = Conn::new(api);
    while start.elapsed() < limit {
        if let Ok((200, _)) = conn.call("GET", "/admin/ping", None) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// How many tasks the scheduler counts as RUNNING, from `/metrics` (its
/// per-phase index, so polling it costs the scheduler next to nothing);
/// `None` on an error.
fn running_count(conn: &mut Conn) -> Option<usize> {
    let [running] = samples(conn, ["charmander_tasks{state=\"TASK_RUNNING\"}"])?;
    Some(running as usize)
}

/// The values of the named `/metrics` samples (name and labels, as
/// written); `None` on an error or when one is missing.
fn samples<const N: usize>(conn: &mut Conn, names: [&str; N]) -> Option<[f64; N]> {
    let (status, body) = conn.call("GET", "/metrics", None).ok()?;
    if status != 200 {
        return None;
    }
    let body = String::from_utf8_lossy(&body);
    let mut values = [0.0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = body.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })?;
    }
    Some(values)
}

/// User and system CPU seconds the process has used so far.
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime and
    // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let mut fields = stat.rsplit_once(") ")?.1.split(' ').skip(11);
    let ticks = |field: Option<&str>| field?.parse::<f64>().ok().map(|t| t / CLOCK_TICKS);
    Some((ticks(fields.next())?, ticks(fields.next())?))
}

/// The processes whose CPU time a phase reads: the scheduler's, and the
/// simulator's and the bare server's if given.
#[derive(Clone, Copy)]
struct Pids {
    scheduler: u32,
    sim: Option<u32>,
    bare: Option<u32>,
}

/// Records the CPU seconds (user + system) between two readings, if both were taken.
fn record_cpu(out: &mut Results, key: &str, before: Option<(f64, f64)>, after: Option<(f64, f64)>) {
    if let (Some(before), Some(after)) = (before, after) {
        let seconds = (after.0 + after.1) - (before.0 + before.1);
        out.insert(key.into(), format!("{seconds:.2}"));
    }
}

/// Tasks in the list, and how many of them are RUNNING; `None` on an error
/// (a 503 while the state thread is busy counts as one).
fn task_counts(conn: &mut Conn) -> Option<(usize, usize)> {
    let (status, body) = conn.call("GET", "/client/task", None).ok()?;
    if status != 200 {
        return None;
    }
    let tasks: Vec<Value> = serde_json::from_slice(&body).ok()?;
    let running = tasks
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count();
    Some((tasks.len(), running))
}

fn submit_body(n: usize) -> String {
    json!({"id": format!("bench{n}"), "dockerimage": "stress",
        "mem": TASK_MEM_MB.to_string(), "cpus": TASK_CPUS.to_string()})
    .to_string()
}

/// Ping throughput against the bare server (and, with its pid, its CPU for
/// the burst's POSTs), the submit burst with ping probed alongside, the wait
/// until every task runs, list latency and RSS.
fn load(
    out: &mut Results,
    api: &str,
    bare: &str,
    pids: Pids,
    tasks: usize,
    clients: usize,
    run_timeout: Duration,
) {
    let pid = pids.scheduler;
    if !scheduler_up(out, api, tasks, clients) {
        return;
    }
    let (bare_rate, _) = throughput(bare, "/", PING_CLIENTS);
    let (ping_rate, ping_failed) = throughput(api, "/admin/ping", PING_CLIENTS);
    out.insert("ping_bare_rps".into(), format!("{bare_rate:.0}"));
    out.insert("ping_rps".into(), format!("{ping_rate:.0}"));
    out.insert("ping_failed".into(), ping_failed.to_string());
    out.insert(
        "ping_ratio".into(),
        format!("{:.0}%", 100.0 * ping_rate / bare_rate.max(1.0)),
    );
    if let Some(bare_pid) = pids.bare {
        bare_posts(out, bare, bare_pid, tasks, clients, run_timeout);
    }
    out.insert("rss_idle_mib".into(), fmt_mib(mem_mib(pid, "VmRSS")));
    burst_phase(out, api, pids, tasks, clients, run_timeout);
    list_phase(out, api);
    // Holding the tasks, after the burst and the lists: once the trim that
    // follows large turns has run.
    std::thread::sleep(SETTLE);
    out.insert("rss_settled_mib".into(), fmt_mib(mem_mib(pid, "VmRSS")));
}

/// The CPU seconds the bare tiny_http server spends answering the same
/// POSTs as the burst, from as many clients: what the HTTP layer alone
/// costs for the submits, the part of the scheduler's CPU no scheduling
/// work can remove.
fn bare_posts(
    out: &mut Results,
    bare: &str,
    pid: u32,
    tasks: usize,
    clients: usize,
    limit: Duration,
) {
    let before = cpu_seconds(pid);
    let posted = post_all(bare, tasks, clients, 200, Instant::now(), limit);
    record_cpu(out, "bare_posts_cpu_s", before, cpu_seconds(pid));
    out.insert("bare_posts_errors".into(), posted.errors.to_string());
    if let Some(error) = posted.first_error {
        out.insert("bare_posts_first_error".into(), error.replace('\n', " "));
    }
}

/// The submit burst alone, for profiling the path a task takes.
fn burst(
    out: &mut Results,
    api: &str,
    pid: u32,
    tasks: usize,
    clients: usize,
    run_timeout: Duration,
) {
    if scheduler_up(out, api, tasks, clients) {
        let pids = Pids {
            scheduler: pid,
            sim: None,
            bare: None,
        };
        burst_phase(out, api, pids, tasks, clients, run_timeout);
    }
}

/// Records the workload and waits for the scheduler's first ping; false
/// (with the error recorded) if it never answers.
fn scheduler_up(out: &mut Results, api: &str, tasks: usize, clients: usize) -> bool {
    out.insert("tasks".into(), tasks.to_string());
    out.insert("clients".into(), clients.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    out.insert("cores".into(), cores.to_string());
    if wait_up(api, UP_TIMEOUT).is_some() {
        return true;
    }
    out.insert(
        "error".into(),
        format!("scheduler did not answer ping within {UP_TIMEOUT:?}"),
    );
    false
}

/// What `post_all` measured.
struct Posted {
    took: Duration,
    errors: u64,
    first_error: Option<String>,
}

/// POSTs the `tasks` submit bodies to `addr` from `clients` keep-alive
/// clients, each expected to answer `expect`; a POST not yet sent when
/// `limit` has passed since `start` counts as an error.
fn post_all(
    addr: &str,
    tasks: usize,
    clients: usize,
    expect: u16,
    start: Instant,
    limit: Duration,
) -> Posted {
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let posters: Vec<_> = (0..clients)
        .map(|worker| {
            let (addr, errors, first_error) =
                (addr.to_string(), errors.clone(), first_error.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new(&addr);
                for n in (worker..tasks).step_by(clients) {
                    if start.elapsed() > limit {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let result = conn.call("POST", "/client/task", Some(&submit_body(n)));
                    if !matches!(&result, Ok((status, _)) if *status == expect) {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert_with(|| match result {
                            Ok((status, body)) => {
                                format!("{status} {}", String::from_utf8_lossy(&body))
                            }
                            Err(error) => error,
                        });
                    }
                }
            })
        })
        .collect();
    for thread in posters {
        let _ = thread.join();
    }
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    Posted {
        took: start.elapsed(),
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}

/// Submits `tasks` from `clients` keep-alive clients with ping probed
/// alongside, then waits until every task runs; records the rates, the
/// scheduler's CPU time meanwhile (and the simulator's, `sim`) and its RSS
/// after.
fn burst_phase(
    out: &mut Results,
    api: &str,
    pids: Pids,
    tasks: usize,
    clients: usize,
    run_timeout: Duration,
) {
    let Pids {
        scheduler: pid,
        sim,
        ..
    } = pids;
    let cpu_before = cpu_seconds(pid);
    let sim_before = sim.and_then(cpu_seconds);
    let own_before = cpu_seconds(std::process::id());
    // Ping probed by one client for the whole burst: submits and launches.
    let done = Arc::new(AtomicBool::new(false));
    let probe = {
        let (done, api) = (done.clone(), api.to_string());
        std::thread::spawn(move || {
            let mut conn = Conn::new(&api);
            let (mut samples, mut failed) = (Vec::new(), 0u64);
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                match conn.call("GET", "/admin/ping", None) {
                    Ok((200, _)) => samples.push(start.elapsed()),
                    _ => failed += 1,
                }
                std::thread::sleep(PROBE_PAUSE);
            }
            (samples, failed)
        })
    };
    let start = Instant::now();
    let posted = post_all(api, tasks, clients, 202, start, run_timeout);
    out.insert(
        "submit_s".into(),
        format!("{:.2}", posted.took.as_secs_f64()),
    );
    out.insert(
        "submits_per_s".into(),
        format!("{:.0}", tasks as f64 / posted.took.as_secs_f64()),
    );
    out.insert("submit_errors".into(), posted.errors.to_string());
    if let Some(error) = posted.first_error {
        out.insert("submit_first_error".into(), error.replace('\n', " "));
    }

    let mut conn = Conn::new(api);
    let (mut running, mut list_errors) = (0, 0u64);
    let all_running = loop {
        match running_count(&mut conn) {
            Some(now) => running = now,
            None => list_errors += 1,
        }
        if running >= tasks {
            break Some(start.elapsed());
        }
        if start.elapsed() > run_timeout {
            break None;
        }
        std::thread::sleep(POLL_PAUSE);
    };
    let sim_after = sim.and_then(cpu_seconds);
    record_cpu(out, "burst_sim_cpu_s", sim_before, sim_after);
    let own_after = cpu_seconds(std::process::id());
    record_cpu(out, "burst_loadgen_cpu_s", own_before, own_after);
    let cpu_after = cpu_seconds(pid);
    record_cpu(out, "burst_cpu_s", cpu_before, cpu_after);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        out.insert(
            "burst_cpu".into(),
            format!(
                "{:.2} user + {:.2} sys",
                after.0 - before.0,
                after.1 - before.1
            ),
        );
    }
    let names = ["charmander_mesos_calls_total{call=\"ACCEPT\",result=\"ok\"}"];
    if let Some([accepts]) = samples(&mut conn, names) {
        out.insert("accepts".into(), format!("{accepts:.0}"));
    }
    // The count comes from the state's index; the list must agree with it.
    if all_running.is_some() {
        match task_counts(&mut conn) {
            Some((_, listed)) if listed >= tasks => {}
            Some((_, listed)) => {
                out.insert("list_disagrees".into(), format!("{listed} running listed"));
            }
            None => list_errors += 1,
        }
    }
    done.store(true, Ordering::Relaxed);
    let (mut samples, probe_failed) = probe.join().unwrap_or_default();
    samples.sort();
    out.insert("running".into(), running.to_string());
    out.insert("list_errors_while_waiting".into(), list_errors.to_string());
    match all_running {
        Some(took) => {
            out.insert("all_running_s".into(), format!("{:.2}", took.as_secs_f64()));
            out.insert(
                "launches_per_s".into(),
                format!("{:.0}", tasks as f64 / took.as_secs_f64()),
            );
        }
        None => {
            out.insert("all_running_s".into(), format!("timeout ({run_timeout:?})"));
            out.insert(
                "launches_per_s".into(),
                format!(
                    "{:.0} (partial)",
                    running as f64 / run_timeout.as_secs_f64()
                ),
            );
        }
    }
    out.insert("burst_ping_p50_ms".into(), ms(percentile(&samples, 0.5)));
    out.insert("burst_ping_p99_ms".into(), ms(percentile(&samples, 0.99)));
    out.insert("burst_ping_max_ms".into(), ms(samples.last().copied()));
    out.insert("burst_ping_failed".into(), probe_failed.to_string());
    out.insert("rss_loaded_mib".into(), fmt_mib(mem_mib(pid, "VmRSS")));
    out.insert("hwm_loaded_mib".into(), fmt_mib(mem_mib(pid, "VmHWM")));
}

/// The list: LIST_CLIENTS concurrent clients, LIST_REQUESTS each, bounded.
fn list_phase(out: &mut Results, api: &str) {
    let list_start = Instant::now();
    let listers: Vec<_> = (0..LIST_CLIENTS)
        .map(|_| {
            let api = api.to_string();
            std::thread::spawn(move || {
                let mut conn = Conn::new(&api);
                let mut samples = Vec::new();
                for _ in 0..LIST_REQUESTS {
                    if list_start.elapsed() > LIST_BUDGET {
                        break;
                    }
                    let start = Instant::now();
                    if let Ok((200, _)) = conn.call("GET", "/client/task", None) {
                        samples.push(start.elapsed());
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples: Vec<Duration> = listers
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    samples.sort();
    out.insert("list_samples".into(), samples.len().to_string());
    out.insert("list_p50_ms".into(), ms(percentile(&samples, 0.5)));
    out.insert("list_p99_ms".into(), ms(percentile(&samples, 0.99)));
}

fn fmt_mib(mib: Option<f64>) -> String {
    mib.map_or("n/a".to_string(), |m| format!("{m:.1}"))
}

/// The scheduler just restarted on the same state dir: time to ping, time
/// until the list holds every task, and the peak RSS meanwhile.
fn restore(out: &mut Results, api: &str, pid: u32, tasks: usize, limit: Duration) {
    let start = Instant::now();
    let took = |at: Option<Duration>| {
        at.map_or(format!("timeout ({limit:?})"), |d| {
            format!("{:.2}", d.as_secs_f64())
        })
    };
    out.insert("restart_ping_s".into(), took(wait_up(api, limit)));
    // Reconciled: subscribed again, and every task answered twice, once
    // by the explicit reconciliation of every launched task and once by
    // the implicit one (both follow each subscription). The counter is
    // the new process's.
    let mut conn = Conn::new(api);
    let names = [
        "charmander_mesos_subscribed",
        "charmander_status_updates_total{state=\"TASK_RUNNING\"}",
    ];
    let reconciled = poll_until(start, limit, || {
        samples(&mut conn, names)
            .is_some_and(|[subscribed, running]| subscribed == 1.0 && running >= 2.0 * tasks as f64)
    });
    out.insert("restart_reconciled_s".into(), took(reconciled));
    let ready = poll_until(start, limit, || {
        task_counts(&mut conn).is_some_and(|(all, _)| all >= tasks)
    });
    out.insert("restart_ready_s".into(), took(ready));
    out.insert("hwm_restore_mib".into(), fmt_mib(mem_mib(pid, "VmHWM")));
    out.insert("rss_restored_mib".into(), fmt_mib(mem_mib(pid, "VmRSS")));
    // Subscriptions after the process's first: the master dropped it.
    let names = ["charmander_mesos_resubscriptions_total"];
    let resubscribed = samples(&mut conn, names).map_or("not measured".into(), |[n]| n.to_string());
    out.insert("restart_subscriptions".into(), resubscribed);
}

/// Polls `done` every `POLL_PAUSE` until it holds or `limit` has passed
/// since `start`; the time since `start` when it held.
fn poll_until(start: Instant, limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(POLL_PAUSE);
    }
}

/// A call for a poster thread of the ceiling framework.
type Call = String;

/// The simulator's own launch ceiling: a trivial JSON framework that accepts
/// every offer with as many tasks as fit until `tasks` are launched, and
/// acknowledges every update; the time from subscribing until all run, and
/// the ACCEPT calls it sent (the bench shows them next to the ones the
/// master took from the scheduler, `result="ok"`, which spreads its tasks
/// over the agents: 0.6 to 0.8 ACCEPTs a task in a 10k burst).
fn ceiling(out: &mut Results, master: &str, tasks: usize, limit: Duration, sim: Option<u32>) {
    let start = Instant::now();
    let sim_before = sim.and_then(cpu_seconds);
    let own_before = cpu_seconds(std::process::id());
    // Read when every task runs, as the burst's are: not over the teardown
    // and the acknowledgements still queued after it.
    let (mut sim_after, mut own_after) = (None, None);
    let result = run_ceiling(master, tasks, limit, start, || {
        sim_after = sim.and_then(cpu_seconds);
        own_after = cpu_seconds(std::process::id());
    });
    record_cpu(out, "ceiling_sim_cpu_s", sim_before, sim_after);
    record_cpu(out, "ceiling_framework_cpu_s", own_before, own_after);
    match result {
        Ok((took, accepts)) => {
            out.insert("ceiling_accepts".into(), accepts.to_string());
            out.insert("ceiling_s".into(), format!("{:.2}", took.as_secs_f64()));
            out.insert(
                "ceiling_per_s".into(),
                format!("{:.0}", tasks as f64 / took.as_secs_f64()),
            );
        }
        Err(error) => {
            out.insert("ceiling_s".into(), error.clone());
            out.insert("ceiling_per_s".into(), error);
        }
    }
}

/// The time until every task runs and the ACCEPTs sent; `on_done` is
/// called at that moment (before the teardown), to read a clock of its own.
fn run_ceiling(
    master: &str,
    tasks: usize,
    limit: Duration,
    start: Instant,
    mut on_done: impl FnMut(),
) -> Result<(Duration, usize), String> {
    // The simulator was just started: retry the connection until it listens.
    let socket = loop {
        match TcpStream::connect(master) {
            Ok(socket) => break socket,
            Err(error) if start.elapsed() > UP_TIMEOUT => return Err(format!("connect: {error}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    socket
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "root", "name": "ceiling", "failover_timeout": 0.0}}})
    .to_string();
    let mut writer = socket.try_clone().map_err(|e| e.to_string())?;
    write!(
        writer,
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: {master}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.contains(" 200") {
        return Err(format!("subscribe answered {line:?}"));
    }
    let mut stream_id = String::new();
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("mesos-stream-id") {
                stream_id = value.trim().to_string();
            }
        }
    }
    let (calls, queue): (Sender<Call>, Receiver<Call>) = bounded(CEILING_QUEUE);
    let posters: Vec<_> = (0..CEILING_POSTERS)
        .map(|_| {
            let (queue, master, stream_id) = (queue.clone(), master.to_string(), stream_id.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new(&master);
                for call in queue {
                    let _ = conn.call_with_stream(&stream_id, &call);
                }
            })
        })
        .collect();
    let mut framework_id = String::new();
    let mut launched = 0usize;
    let mut accepts = 0usize;
    let mut running = HashSet::new();
    let result = loop {
        if start.elapsed() > limit {
            break Err(format!("timeout ({limit:?}, {} running)", running.len()));
        }
        let Some(event) = next_event(&mut reader) else {
            break Err(format!("stream ended ({} running)", running.len()));
        };
        match event["type"].as_str() {
            Some("SUBSCRIBED") => {
                framework_id = event["subscribed"]["framework_id"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Some("OFFERS") => {
                for offer in event["offers"]["offers"].as_array().into_iter().flatten() {
                    let fit = fitting(offer).min(tasks - launched);
                    let infos: Vec<Value> = (launched..launched + fit)
                        .map(|n| ceiling_task(n, offer))
                        .collect();
                    launched += fit;
                    let call = if infos.is_empty() {
                        json!({"type": "DECLINE", "framework_id": {"value": framework_id},
                            "decline": {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 3600.0}}})
                    } else {
                        accepts += 1;
                        json!({"type": "ACCEPT", "framework_id": {"value": framework_id},
                            "accept": {"offer_ids": [offer["id"]], "operations":
                                [{"type": "LAUNCH", "launch": {"task_infos": infos}}],
                                "filters": {"refuse_seconds": 0.0}}})
                    };
                    let _ = calls.send(call.to_string());
                }
            }
            Some("UPDATE") => {
                let status = &event["update"]["status"];
                if status["state"] == "TASK_RUNNING" {
                    running.insert(
                        status["task_id"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                if status.get("uuid").is_some() {
                    let ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": framework_id},
                        "acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"],
                            "uuid": status["uuid"]}});
                    let _ = calls.send(ack.to_string());
                }
                if running.len() >= tasks {
                    let took = start.elapsed();
                    on_done();
                    break Ok((took, accepts));
                }
            }
            _ => {}
        }
    };
    // Tear the framework down so the simulator frees its tasks, then stop.
    let teardown = json!({"type": "TEARDOWN", "framework_id": {"value": framework_id}});
    let _ = calls.send(teardown.to_string());
    drop(calls);
    for poster in posters {
        let _ = poster.join();
    }
    result
}

impl Conn {
    /// POSTs a JSON scheduler call on the subscription's stream.
    fn call_with_stream(&mut self, stream_id: &str, call: &str) -> Result<u16, String> {
        let result = (|| {
            if self.stream.is_none() {
                let socket = TcpStream::connect(&self.addr).map_err(|e| format!("connect: {e}"))?;
                socket
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                socket.set_nodelay(true).map_err(|e| e.to_string())?;
                self.stream = Some(BufReader::new(socket));
            }
            let reader = self.stream.as_mut().ok_or("no stream")?;
            let request = format!(
                "POST /api/v1/scheduler HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nMesos-Stream-Id: {stream_id}\r\nContent-Length: {}\r\n\r\n{call}",
                self.addr,
                call.len()
            );
            reader
                .get_mut()
                .write_all(request.as_bytes())
                .map_err(|e| e.to_string())?;
            read_response(reader).map(|(status, _)| status)
        })();
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// How many bench-sized tasks fit the offer's unreserved cpus and mem.
fn fitting(offer: &Value) -> usize {
    let mut cpus = 0.0;
    let mut mem = 0.0;
    for resource in offer["resources"].as_array().into_iter().flatten() {
        let value = resource["scalar"]["value"].as_f64().unwrap_or(0.0);
        match resource["name"].as_str() {
            Some("cpus") => cpus += value,
            Some("mem") => mem += value,
            _ => {}
        }
    }
    // A hair under the exact quotient: 16 / 0.1 must not round to 161.
    let by_cpus = (cpus / TASK_CPUS + 1e-6).floor();
    let by_mem = (mem / TASK_MEM_MB + 1e-6).floor();
    by_cpus.min(by_mem).max(0.0) as usize
}

fn ceiling_task(n: usize, offer: &Value) -> Value {
    json!({
        "name": format!("ceil{n}"), "task_id": {"value": format!("ceil{n}")},
        "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": TASK_CPUS}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": TASK_MEM_MB}}],
        "command": {"shell": false},
        "container": {"type": "DOCKER", "docker": {"image": "stress", "network": "HOST"}}
    })
}

/// The next RecordIO event of a chunked stream; `None` once it ended or broke.
fn next_event(reader: &mut BufReader<TcpStream>) -> Option<Value> {
    // RecordIO records ("<length>\n<json>") may span chunks; gather the
    // de-chunked bytes until one whole record is there.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if let Some(newline) = pending.iter().position(|&b| b == b'\n') {
            let length: usize = std::str::from_utf8(&pending[..newline])
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if pending.len() >= newline + 1 + length {
                return serde_json::from_slice(&pending[newline + 1..newline + 1 + length]).ok();
            }
        }
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 || size > MAX_CHUNK {
            return None;
        }
        let start = pending.len();
        pending.resize(start + size + 2, 0);
        reader.read_exact(&mut pending[start..]).ok()?;
        pending.truncate(start + size);
    }
}

fn read_results(path: &str) -> Results {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The one table of the run.
fn table(r: &Results) {
    let get = |key: &str| {
        r.get(key)
            .cloned()
            .unwrap_or_else(|| "not measured".to_string())
    };
    // Seconds: a number gets its unit, a "timeout (…)" stands as it is.
    let secs = |key: &str| {
        let value = get(key);
        if value.parse::<f64>().is_ok() {
            format!("{value} s")
        } else {
            value
        }
    };
    let tasks = get("tasks");
    let ratio = match (
        r.get("launches_per_s").and_then(|v| v.parse::<f64>().ok()),
        r.get("ceiling_per_s").and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(ours), Some(ceiling)) if ceiling > 0.0 => format!("{:.0}%", 100.0 * ours / ceiling),
        _ => "n/a".to_string(),
    };
    let number = |key: &str| r.get(key).and_then(|v| v.parse::<f64>().ok());
    // The scheduler's CPU if it launched at CEILING_SHARE of the ceiling:
    // the run would last tasks / (share × ceiling) seconds, in which all the
    // cores give that many CPU seconds at most, less what the simulator and
    // the load generator took during our burst.
    // A burst that timed out read the other processes' CPU over the whole
    // timeout: no budget then.
    let budget = match (
        number("all_running_s"),
        number("cores"),
        number("tasks"),
        number("ceiling_per_s"),
        number("burst_sim_cpu_s"),
        number("burst_loadgen_cpu_s"),
    ) {
        (Some(_), Some(cores), Some(tasks), Some(ceiling), Some(sim), Some(loadgen))
            if ceiling > 0.0 =>
        {
            let seconds = tasks / (CEILING_SHARE * ceiling);
            format!("{:.2} s", cores * seconds - sim - loadgen)
        }
        _ => "n/a".to_string(),
    };
    let rows = [
        (
            "agents × tasks (clients)".to_string(),
            format!("{} × {tasks} ({} clients)", get("agents"), get("clients")),
        ),
        (
            "REST ping req/s (bare tiny_http)".into(),
            format!(
                "{} ({}), {} of bare",
                get("ping_rps"),
                get("ping_bare_rps"),
                get("ping_ratio")
            ),
        ),
        (
            "submits/s (errors)".into(),
            format!(
                "{} ({} in {})",
                get("submits_per_s"),
                get("submit_errors"),
                secs("submit_s")
            ),
        ),
        (
            "first submit → all RUNNING".into(),
            format!("{} ({} running)", secs("all_running_s"), get("running")),
        ),
        ("launches/s end to end".into(), get("launches_per_s")),
        (
            "sim ceiling launches/s (time)".into(),
            format!("{} ({})", get("ceiling_per_s"), secs("ceiling_s")),
        ),
        ("launches vs ceiling".into(), ratio),
        (
            "ACCEPT calls: ours / the ceiling's".into(),
            format!("{} / {}", get("accepts"), get("ceiling_accepts")),
        ),
        (
            format!("GET /client/task p50 / p99 at {tasks}"),
            format!(
                "{} / {} ms ({} samples, {LIST_CLIENTS} clients)",
                get("list_p50_ms"),
                get("list_p99_ms"),
                get("list_samples")
            ),
        ),
        (
            "ping p50 / p99 / max during burst".into(),
            format!(
                "{} / {} / {} ms ({} failed)",
                get("burst_ping_p50_ms"),
                get("burst_ping_p99_ms"),
                get("burst_ping_max_ms"),
                get("burst_ping_failed")
            ),
        ),
        ("scheduler CPU during the burst".into(), get("burst_cpu")),
        (
            format!(
                "scheduler CPU: ours / budget at {:.0}% of ceiling / HTTP floor",
                100.0 * CEILING_SHARE
            ),
            format!(
                "{} / {budget} / {} ({} cores{})",
                secs("burst_cpu_s"),
                secs("bare_posts_cpu_s"),
                get("cores"),
                // A floor measured on failed POSTs is no floor.
                match r.get("bare_posts_errors").map(String::as_str) {
                    None | Some("0") => String::new(),
                    Some(n) => format!("; {n} bare POSTs failed"),
                }
            ),
        ),
        (
            "simulator CPU: our burst / the ceiling's run".into(),
            format!(
                "{} / {}",
                secs("burst_sim_cpu_s"),
                secs("ceiling_sim_cpu_s")
            ),
        ),
        (
            "load generator CPU: our burst / as the ceiling".into(),
            format!(
                "{} / {}",
                secs("burst_loadgen_cpu_s"),
                secs("ceiling_framework_cpu_s")
            ),
        ),
        (
            "RUNNING polls failed (list disagrees)".into(),
            format!(
                "{} ({})",
                get("list_errors_while_waiting"),
                r.get("list_disagrees").map_or("no", String::as_str)
            ),
        ),
        ("RSS idle".into(), format!("{} MiB", get("rss_idle_mib"))),
        (
            format!("RSS at {tasks}: settled (burst end, peak)"),
            format!(
                "{} MiB ({} MiB, {} MiB)",
                get("rss_settled_mib"),
                get("rss_loaded_mib"),
                get("hwm_loaded_mib")
            ),
        ),
        (
            "restart: ping / reconciled / all listed".into(),
            format!(
                "{} / {} / {}",
                secs("restart_ping_s"),
                secs("restart_reconciled_s"),
                secs("restart_ready_s")
            ),
        ),
        (
            "resubscriptions after the restart".into(),
            get("restart_subscriptions"),
        ),
        ("dropped by the master (whole run)".into(), get("sim_drops")),
        (
            "RSS peak during restore (after)".into(),
            format!(
                "{} MiB ({} MiB)",
                get("hwm_restore_mib"),
                get("rss_restored_mib")
            ),
        ),
        (
            "journal / snapshot bytes".into(),
            format!("{} / {}", get("journal_bytes"), get("snapshot_bytes")),
        ),
        (
            "slow loop turns (slowest)".into(),
            format!("{} ({} ms)", get("slow_turns"), get("slowest_turn_ms")),
        ),
    ];
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("| {:width$} | value |", "figure");
    println!("|{}|-------|", "-".repeat(width + 2));
    for (key, value) in rows {
        println!("| {key:width$} | {value} |");
    }
    if let Some(error) = r.get("submit_first_error") {
        println!("first submit error: {error}");
    }
    if let Some(error) = r.get("bare_posts_first_error") {
        println!("first bare POST error: {error}");
    }
    if let Some(error) = r.get("error") {
        println!("error: {error}");
    }
}
