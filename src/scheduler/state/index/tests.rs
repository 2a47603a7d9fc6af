//! The indexes of small tables, as text: built from scratch, and updated
//! task by task in any order (which must give the same indexes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::scheduler::model::{DockerInfo, TaskSpec, TaskState};
use crate::scheduler::state::TaskRare;

/// `id seq=<n> [launching|running|unknown] [kill] [sent=<s>] [agent=<a>]
/// [pinned=<a>] [waits=<id>] [backoff=<s>] [restored]`, one task a line;
/// times are seconds after the start of the test.
fn table(text: &str, start: Instant) -> BTreeMap<TaskId, Task> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |name: &str| {
                words
                    .iter()
                    .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            };
            let has = |name: &str| words.contains(&name);
            let at = |name: &str| {
                field(name).map(|secs| start + Duration::from_secs(secs.parse().unwrap()))
            };
            let phase = if has("launching") {
                Phase::Launching
            } else if has("running") {
                Phase::Active(TaskState::Running)
            } else if has("unknown") {
                Phase::Active(TaskState::Unknown)
            } else {
                Phase::Pending
            };
            let rare = TaskRare {
                pinned_agent: field("pinned").map(|a| AgentId(a.into())),
                kill_sent_at: at("sent"),
                waits_for: field("waits").map(|id| TaskId(id.into())),
                backoff: (at("backoff").is_some() || has("restored"))
                    .then_some(Duration::from_secs(1)),
                not_before: at("backoff"),
                ..TaskRare::default()
            };
            let task = Task {
                spec: spec(words[0]).into(),
                phase,
                agent_id: field("agent").map(|a| AgentId(a.into())),
                hostname: None,
                docker: DockerInfo::default(),
                created_at: 0,
                status_message: String::new(),
                pending_reason: None,
                kill_requested: has("kill"),
                seq: field("seq").unwrap().parse().unwrap(),
                running_since: None,
                accepted_at: None,
                trail: Default::default(),
                rare: rare.boxed(),
            };
            (TaskId(words[0].into()), task)
        })
        .collect()
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec::for_test(id, "image", 1)
}

fn build(tasks: &BTreeMap<TaskId, Task>, clock: Instant) -> Indexes {
    Indexes::build(tasks.iter(), Some(clock), |id| tasks.contains_key(id))
}

fn ids<'a>(ids: impl Iterator<Item = &'a TaskId>) -> String {
    ids.map(|id| &*id.0).collect::<Vec<_>>().join(",")
}

/// What the indexes answer, at `clock`.
fn summary(index: &Indexes, clock: Instant) -> String {
    let phases = [
        Phase::Pending,
        Phase::Launching,
        Phase::Active(TaskState::Running),
        Phase::Active(TaskState::Unknown),
    ]
    .map(|phase| index.phase_count(phase).to_string())
    .join("/");
    let agents = ["a1", "a2"]
        .map(|agent| format!("{agent}:[{}]", ids(index.on_agent(&AgentId(agent.into())))))
        .join(" ");
    let successors = ["p", "q"]
        .map(|id| {
            format!(
                "{id}<-[{}]",
                ids(index.successors(&TaskId(id.into())).iter())
            )
        })
        .join(" ");
    format!(
        "pending={} ready=[{}] phases={phases} {agents} killing=[{}] {successors} \
         backoffs_due=[{}] kills_due=[{}]",
        index.pending_count(),
        ids(index.ready()),
        ids(index.killing()),
        ids(index.backoffs_due(clock).iter()),
        ids(index.kills_due(clock).iter()),
    )
}

/// Indexes `tasks` at `secs` after the start, from scratch and task by
/// task (forwards, backwards, and after indexing a stale version of every
/// task), and compares both with `expected`.
#[track_caller]
fn check(tasks: &str, secs: u64, expected: &str) {
    let start = Instant::now();
    let clock = start + Duration::from_secs(secs);
    let table = table(tasks, start);
    let built = build(&table, clock);
    assert_eq!(summary(&built, clock), expected, "built from scratch");
    let facts = |id: &TaskId| {
        table
            .get(id)
            .map(|task| Facts::of(task, Some(clock), |id| table.contains_key(id)))
    };
    let mut forwards = Indexes::default();
    let mut backwards = Indexes::default();
    for id in table.keys() {
        forwards.set(id, facts(id));
    }
    for id in table.keys().rev() {
        // A stale version first (another seq and phase, killed), then the
        // real one: the stale entries must all go.
        let mut stale = facts(id).unwrap();
        stale.seq += 100;
        stale.phase = Phase::Launching;
        stale.kill_requested = true;
        stale.agent_id = Some(AgentId("a2".into()));
        backwards.set(id, Some(stale));
        backwards.set(id, facts(id));
    }
    assert_eq!(forwards, built, "forwards");
    assert_eq!(backwards, built, "backwards");
    for id in table.keys() {
        forwards.set(id, None);
    }
    assert_eq!(forwards, Indexes::default(), "everything removed");
}

#[test]
fn pending_tasks_in_submission_order() {
    check(
        "b seq=2
         a seq=3
         c seq=1",
        0,
        "pending=3 ready=[c,b,a] phases=3/0/0/0 a1:[] a2:[] killing=[] p<-[] q<-[] \
         backoffs_due=[] kills_due=[]",
    );
}

#[test]
fn a_killed_pending_task_wants_no_offer() {
    check(
        "a seq=1 kill
         b seq=2",
        0,
        "pending=1 ready=[b] phases=2/0/0/0 a1:[] a2:[] killing=[] p<-[] q<-[] \
         backoffs_due=[] kills_due=[]",
    );
}

#[test]
fn a_restart_backoff_keeps_a_task_out_of_the_ready_set_until_it_ends() {
    let tasks = "a seq=1 backoff=10
                 b seq=2 restored
                 c seq=3";
    check(
        tasks,
        5,
        "pending=3 ready=[c] phases=3/0/0/0 a1:[] a2:[] killing=[] p<-[] q<-[] \
         backoffs_due=[] kills_due=[]",
    );
    // At its end the clock has passed it: the task is ready, no timer left.
    check(
        tasks,
        10,
        "pending=3 ready=[a,c] phases=3/0/0/0 a1:[] a2:[] killing=[] p<-[] q<-[] \
         backoffs_due=[] kills_due=[]",
    );
}

#[test]
fn a_backoff_timer_is_due_once_the_clock_passes_it() {
    let start = Instant::now();
    let table = table("a seq=1 backoff=10\nb seq=2 backoff=20", start);
    let index = build(&table, start);
    let due = |secs| ids(index.backoffs_due(start + Duration::from_secs(secs)).iter());
    assert_eq!(due(9), "");
    assert_eq!(due(10), "a");
    assert_eq!(due(30), "a,b");
}

#[test]
fn a_successor_waits_while_its_predecessor_is_in_the_table() {
    check(
        "p seq=1 running agent=a1 kill sent=0
         s seq=2 waits=p
         t seq=3 waits=q",
        0,
        "pending=2 ready=[t] phases=2/0/1/0 a1:[p] a2:[] killing=[p] p<-[s] q<-[t] \
         backoffs_due=[] kills_due=[]",
    );
}

#[test]
fn kills_are_due_at_once_when_never_sent_and_after_the_retry_otherwise() {
    let tasks = "a seq=1 launching agent=a1 kill
                 b seq=2 running agent=a2 kill sent=0
                 c seq=3 running agent=a2";
    check(
        tasks,
        1,
        "pending=0 ready=[] phases=0/1/2/0 a1:[a] a2:[b,c] killing=[a,b] p<-[] q<-[] \
         backoffs_due=[] kills_due=[a]",
    );
    check(
        tasks,
        KILL_RETRY.as_secs(),
        "pending=0 ready=[] phases=0/1/2/0 a1:[a] a2:[b,c] killing=[a,b] p<-[] q<-[] \
         backoffs_due=[] kills_due=[a,b]",
    );
}

#[test]
fn a_task_is_found_under_its_agent_and_the_agent_it_is_pinned_to() {
    check(
        "a seq=1 pinned=a1
         b seq=2 unknown agent=a2 pinned=a1
         c seq=3 running agent=a1 pinned=a1",
        0,
        "pending=1 ready=[a] phases=1/0/1/1 a1:[a,b,c] a2:[b] killing=[] p<-[] q<-[] \
         backoffs_due=[] kills_due=[]",
    );
}
