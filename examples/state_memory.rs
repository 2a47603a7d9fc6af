//! Measures what the scheduler's state costs at scale: memory per task of
//! live state, the state directory it writes, one compaction, and a restart
//! (restore) from that directory: time to ready and peak RSS.
//!
//! usage:
//! - `state_memory build N DIR [AGENTS]`: a `State` with N running tasks on
//!   AGENTS agents (default 1000), built through `handle_event` like the
//!   state thread does, every turn committed to a store in DIR (which must
//!   not exist yet). Prints RSS before and after, bytes per task, the state
//!   dir's size and how long one compaction of it takes; then lists every
//!   task twice as `GET /client/task` does (each entry rendered to its
//!   JSON) and prints the heap while the list is held and what the state
//!   keeps after it (the list cache), and RSS before and after glibc's
//!   `malloc_trim(0)`, which the scheduler calls after large turns. Also
//!   prints the live heap per task by stage (submitted, launched, running).
//! - `state_memory restore DIR`: opens DIR and restores the state as
//!   `charmander::start` does; prints the time, RSS and peak RSS (VmHWM),
//!   then lists every task as after a restart and prints them again.
//!
//! DIR on a tmpfs (`/dev/shm/...`) makes the build of 100k tasks take
//! seconds instead of minutes of fsyncs; the memory figures are the same.
//!
//! Run it in release mode (`cargo run --release --example state_memory`);
//! RSS comes from `/proc/self/status` (Linux only). Heap bytes come from a
//! counting global allocator, so "bytes per task" is exact live heap, not
//! RSS (which keeps freed pages the allocator has not returned).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use charmander::scheduler::model::{
    AgentId, DockerInfo, FrameworkId, NetworkMode, Offer, OfferId, RestartPolicy, Sla,
    StatusReason, TaskId, TaskSpec, TaskState, TaskUpdate,
};
use charmander::scheduler::{
    ApiReply, ApiRequest, Call, Event, MesosEvent, Now, RequestId, Restore, State, TaskQuery,
};
use charmander::store::Store;

/// The system allocator, counting live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to `System` unchanged; the counters are
// only read for the report.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1048576.0
}

/// Gives freed pages back to the kernel as the scheduler does after large
/// turns (`src/trim.rs`), and says what that did to RSS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> String {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    let before = status_kib("VmRSS");
    let start = Instant::now();
    // SAFETY: glibc's malloc_trim takes a size and touches only free memory.
    let released = unsafe { malloc_trim(0) };
    format!(
        "malloc_trim({released}) {:.1} -> {:.1} MiB in {:.1} ms",
        mib(before),
        mib(status_kib("VmRSS")),
        start.elapsed().as_secs_f64() * 1000.0
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> String {
    "no malloc_trim here".to_string()
}

/// Lists every task as `GET /client/task` does: the state thread's entries,
/// each rendered to its JSON (`ListedTask::list_json`, as a worker does),
/// held together while the body would be written. Prints what the list
/// holds and what the state keeps once it is dropped.
fn list_all(state: &mut State, now: Now, label: &str) {
    let heap_before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let turn = state.handle_event(
        Event::Api(
            RequestId(u64::MAX),
            ApiRequest::ListTasks(TaskQuery::default()),
        ),
        now,
    );
    let turn_ms = start.elapsed().as_secs_f64() * 1000.0;
    let Some((_, ApiReply::Tasks { tasks: entries, .. })) = turn.replies.into_iter().next() else {
        println!("{label}: no list reply");
        return;
    };
    let parts: Vec<std::sync::Arc<str>> = entries.iter().map(|entry| entry.list_json()).collect();
    let count = parts.len();
    let body: usize = parts.iter().map(|part| part.len() + 1).sum::<usize>() + 2;
    let held = LIVE.load(Ordering::Relaxed) as f64 - heap_before as f64;
    let took = start.elapsed();
    drop(parts);
    drop(entries);
    let kept = LIVE.load(Ordering::Relaxed) as f64 - heap_before as f64;
    let trimmed = trim();
    println!("{label}: {trimmed}");
    println!(
        "{label}: {count} entries, {:.1} MiB body in {:.0} ms ({turn_ms:.0} ms of it the state's turn); heap held while listing {:+.1} MiB, kept after {:+.1} MiB; rss {:.1} MiB, peak {:.1} MiB",
        body as f64 / 1048576.0,
        took.as_secs_f64() * 1000.0,
        held / 1048576.0,
        kept / 1048576.0,
        mib(status_kib("VmRSS")),
        mib(status_kib("VmHWM")),
    );
}

/// Agents when none are named: the size of the measured cluster.
const DEFAULT_AGENTS: usize = 1000;

/// Images the tasks run: a lab runs a handful of images many times.
const IMAGES: [&str; 4] = [
    "registry.lab.local/charmander/cadvisor:0.49",
    "registry.lab.local/charmander/stress-ng:0.17",
    "registry.lab.local/charmander/pcp:6.2",
    "registry.lab.local/charmander/redis-load:7.2",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["build", n, dir] => build(parse(n), Path::new(dir), DEFAULT_AGENTS),
        ["build", n, dir, agents] => build(parse(n), Path::new(dir), parse(agents)),
        ["restore", dir] => restore(Path::new(dir)),
        _ => Err("usage: state_memory build N DIR [AGENTS] | restore DIR".to_string()),
    };
    if let Err(error) = result {
        eprintln!("state_memory: {error}");
        std::process::exit(1);
    }
}

fn parse(n: &str) -> usize {
    n.parse().unwrap_or_else(|_| {
        eprintln!("state_memory: not a number: {n}");
        std::process::exit(2)
    })
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches(" kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn spec(n: usize) -> TaskSpec {
    TaskSpec {
        id: format!("load-{}", n % 500),
        docker_image: IMAGES[n % IMAGES.len()].to_string(),
        mem_mb: 64,
        cpus: Some(0.01),
        sla: Sla::None,
        node_type: String::new(),
        node_name: String::new(),
        not_metered: false,
        reshuffleable: n.is_multiple_of(2),
        arguments: vec!["--interval".to_string(), "10".to_string()],
        volumes: Vec::new(),
        ports: Vec::new(),
        network: NetworkMode::Default,
        restart: RestartPolicy::OnFailure,
        privileged: false,
    }
}

fn offer(round: usize, agent: usize) -> Offer {
    let name = format!("agent-{agent:04}.lab.local");
    Offer::unreserved(
        OfferId(format!("offer-{round}-{agent}")),
        AgentId(format!("4f5e6d7c-8b9a-4c3d-9e2f-1a0b2c3d4e5f-S{agent}").into()),
        name.clone(),
        1000.0,
        1_000_000.0,
        vec![(31000, 32000)],
        [
            ("nodetype".to_string(), format!("type-{}", agent % 4)),
            ("nodename".to_string(), name),
        ]
        .into_iter()
        .collect(),
    )
}

/// Builds the state, committing every turn, and reports its cost.
fn build(tasks: usize, dir: &Path, agents: usize) -> Result<(), String> {
    if dir.exists() {
        return Err(format!("{} exists; give a new directory", dir.display()));
    }
    let mut store = Store::open(dir, &mut |_, _| Ok(()))?;
    let before = status_kib("VmRSS");
    let heap_before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let mut state = State::new(None);
    let mut step = |state: &mut State, event: Event, now: &mut Now| -> Result<Vec<Call>, String> {
        now.instant += Duration::from_millis(1);
        now.wall += Duration::from_millis(1);
        let turn = state.handle_event(event, Now { ..*now });
        store.commit(&turn.records.iter().collect::<Vec<_>>())?;
        Ok(turn.calls)
    };
    step(
        &mut state,
        Event::Mesos(MesosEvent::Subscribed {
            framework_id: FrameworkId("4f5e6d7c-8b9a-4c3d-9e2f-1a0b2c3d4e5f-0001".to_string()),
        }),
        &mut now,
    )?;
    for n in 0..tasks {
        let request = ApiRequest::Submit {
            spec: spec(n),
            idempotency_key: None,
        };
        step(
            &mut state,
            Event::Api(RequestId(n as u64), request),
            &mut now,
        )?;
    }
    let heap_submitted = LIVE.load(Ordering::Relaxed);
    let mut launched = Vec::new();
    for round in 0.. {
        if launched.len() >= tasks || round > 1000 {
            break;
        }
        let offers = (0..agents).map(|agent| offer(round, agent)).collect();
        for call in step(
            &mut state,
            Event::Mesos(MesosEvent::Offers(offers)),
            &mut now,
        )? {
            if let Call::Launch {
                agent_id, tasks, ..
            } = call
            {
                launched.extend(tasks.into_iter().map(|t| (t.task_id, agent_id.clone())));
            }
        }
    }
    // Less this example's own list of what it launched (its ids share the
    // state's text).
    let own = launched.capacity() * std::mem::size_of::<(TaskId, AgentId)>();
    let heap_launched = LIVE.load(Ordering::Relaxed) - own;
    for (n, (task_id, agent_id)) in launched.iter().enumerate() {
        let update = TaskUpdate {
            task_id: task_id.clone(),
            state: TaskState::Running,
            reason: StatusReason::Other,
            reason_name: String::new(),
            message: String::new(),
            agent_id: Some(agent_id.clone()),
            uuid: Some(vec![n as u8; 16]),
            docker: Some(DockerInfo::new(
                &format!("{n:064x}"),
                &format!("mesos-{}", task_id.0),
                1000 + n as u64,
            )),
        };
        step(
            &mut state,
            Event::Mesos(MesosEvent::Update(update)),
            &mut now,
        )?;
    }
    let built = start.elapsed();
    let heap_running = LIVE.load(Ordering::Relaxed) - own;
    let stage = |from: usize, to: usize| (to as f64 - from as f64) / tasks.max(1) as f64;
    println!(
        "live heap per task by stage (state + store): submitted {:.0} B, launched {:+.0} B, running {:+.0} B",
        stage(heap_before, heap_submitted),
        stage(heap_submitted, heap_launched),
        stage(heap_launched, heap_running),
    );
    let after = status_kib("VmRSS");
    let heap_all = LIVE.load(Ordering::Relaxed) - heap_before;
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    println!(
        "built {} tasks ({} running) on {agents} agents in {:.1} s",
        state.task_count(),
        launched.len(),
        built.as_secs_f64()
    );
    println!(
        "rss before {:.1} MiB, after {:.1} MiB: {:.0} bytes per task (state + store)",
        mib(before),
        mib(after),
        (after.saturating_sub(before) * 1024) as f64 / tasks.max(1) as f64
    );
    let start = Instant::now();
    store.compact()?;
    println!(
        "one compaction: {:.0} ms, snapshot {:.1} MiB",
        start.elapsed().as_secs_f64() * 1000.0,
        size("state.snapshot") as f64 / 1048576.0
    );
    drop(store);
    let heap_state = LIVE.load(Ordering::Relaxed) - heap_before;
    let per_task = |bytes: usize| bytes as f64 / tasks.max(1) as f64;
    println!(
        "live heap: state + store {:.1} MiB ({:.0} bytes per task), state alone {:.1} MiB ({:.0} bytes per task)",
        heap_all as f64 / 1048576.0,
        per_task(heap_all),
        heap_state as f64 / 1048576.0,
        per_task(heap_state)
    );
    now.instant += Duration::from_millis(1);
    list_all(&mut state, now, "first list");
    now.instant += Duration::from_millis(1);
    list_all(&mut state, now, "second list");
    drop(state);
    Ok(())
}

/// Resubscribes as after a restart and answers the reconciliation as a
/// master does: once for every task asked about (explicit), once more for
/// every task it runs (implicit); reports the heap that leaves behind.
fn reconcile(state: &mut State, now: &mut Now) {
    let heap_before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut step = |state: &mut State, event: Event| {
        now.instant += Duration::from_millis(1);
        now.wall += Duration::from_millis(1);
        state.handle_event(event, Now { ..*now }).calls
    };
    let subscribed = MesosEvent::Subscribed {
        framework_id: FrameworkId("4f5e6d7c-8b9a-4c3d-9e2f-1a0b2c3d4e5f-0001".to_string()),
    };
    let mut asked = Vec::new();
    for call in step(state, Event::Mesos(subscribed)) {
        if let Call::Reconcile(tasks) = call {
            asked.extend(tasks);
        }
    }
    for _ in 0..2 {
        for (task_id, agent_id) in &asked {
            let update = TaskUpdate {
                task_id: task_id.clone(),
                state: TaskState::Running,
                reason: StatusReason::Reconciliation,
                reason_name: "REASON_RECONCILIATION".to_string(),
                message: "Reconciliation: Latest task state".to_string(),
                agent_id: agent_id.clone(),
                uuid: None,
                docker: None,
            };
            step(state, Event::Mesos(MesosEvent::Update(update)));
        }
    }
    let count = asked.len();
    drop(asked);
    println!(
        "reconciled {count} tasks (each answered twice) in {:.0} ms: heap {:+.1} MiB ({:+.0} B per task), rss {:.1} MiB, peak {:.1} MiB",
        start.elapsed().as_secs_f64() * 1000.0,
        (LIVE.load(Ordering::Relaxed) as f64 - heap_before as f64) / 1048576.0,
        (LIVE.load(Ordering::Relaxed) as f64 - heap_before as f64) / count.max(1) as f64,
        mib(status_kib("VmRSS")),
        mib(status_kib("VmHWM")),
    );
}

/// Opens and restores `dir` as a restart does, and reports time and memory.
fn restore(dir: &Path) -> Result<(), String> {
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let before = status_kib("VmRSS");
    let start = Instant::now();
    let mut restore = Restore::new();
    let _store = Store::open(dir, &mut |key, value| restore.apply(key, value))?;
    let mut state = restore.finish();
    let elapsed = start.elapsed();
    println!(
        "restored {} tasks from a {:.1} MiB snapshot + {:.1} MiB journal in {:.0} ms",
        state.task_count(),
        size("state.snapshot") as f64 / 1048576.0,
        size("state.journal") as f64 / 1048576.0,
        elapsed.as_secs_f64() * 1000.0
    );
    println!(
        "rss before {:.1} MiB, after {:.1} MiB, peak (VmHWM) {:.1} MiB; heap {:.1} MiB, peak heap {:.1} MiB",
        mib(before),
        mib(status_kib("VmRSS")),
        mib(status_kib("VmHWM")),
        heap_mib(),
        PEAK.load(Ordering::Relaxed) as f64 / 1048576.0
    );
    let mut now = Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    reconcile(&mut state, &mut now);
    list_all(&mut state, now, "first list after the restore");
    list_all(&mut state, now, "second list");
    Ok(())
}
