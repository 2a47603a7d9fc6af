//! The caller's pending calls and the rules that say which may go out now:
//! `CALL_LANES` ordered lanes, each one connection wide, so independent calls
//! travel in parallel while the calls whose order matters share a lane.
//!
//! Ordering rules (ARCHITECTURE.md, `src/mesos/`):
//! - a lane has two queues: its ACKNOWLEDGEs, and every other call. Each
//!   sends its calls one after another, in the order they came; a call
//!   waiting to be sent again holds up the calls behind it in its queue. A
//!   free lane takes the other calls first, and a batch of ACKNOWLEDGEs at
//!   least after every `ACKS_AFTER` of them, so an ACCEPT or a REVIVE waits
//!   for at most one batch of ACKNOWLEDGEs, not for every one queued before
//!   it (in a burst there are thousands). An ACKNOWLEDGE needs no order: it
//!   answers an update, which comes only after the master took its ACCEPT,
//!   and it commutes with every other call;
//! - ACCEPT, KILL and ACKNOWLEDGE take the lane of their agent
//!   (`lane_of(agent)`), so a task's ACCEPT goes before its KILL;
//! - SUPPRESS, REVIVE, DECLINE and a KILL without an agent take
//!   `FRAMEWORK_LANE`, so SUPPRESS and REVIVE keep their order, and a
//!   DECLINE's refuse filter never lands after the REVIVE that was meant to
//!   clear it;
//! - RECONCILE and TEARDOWN are fences: one goes out only once every call
//!   queued before it is done, and no call queued after it goes out before
//!   it is done (a RECONCILE overtaking an ACCEPT would make the master
//!   answer for a task it does not know yet).
//!
//! Pure: no I/O, no clock (the time is an argument); the `mesos-caller`
//! thread owns it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::mesos::backoff::Backoff;
use crate::mesos::caller::{CALL_BACKOFF_MAX, CALL_BACKOFF_MIN};
use crate::scheduler::model::AgentId;
use crate::scheduler::Call;

/// Connections the caller sends calls on at once.
pub const CALL_LANES: usize = 4;

/// The lane of every call not tied to one agent.
pub const FRAMEWORK_LANE: usize = 0;

/// Calls taken from the state side and not done yet (queued, waiting to be
/// sent again, or in flight). With this many, the caller takes no more and
/// the journal holds the rest (`store::MAX_UNSENT_CALLS`).
pub const MAX_PENDING_CALLS: usize = 65_536;

/// Room for this many calls each the queues and the acknowledged updates
/// keep once every call is done. A burst leaves them with room for tens
/// of thousands (up to `MAX_PENDING_CALLS`, about 10 MB) otherwise.
pub const KEEP_ROOM: usize = 256;

/// The most ACKNOWLEDGE or KILL calls a lane sends in one go (pipelined on
/// its keep-alive connection, `Caller::post_pipelined`): about 40 KB of
/// requests and 20 KB of answers.
pub const MAX_BATCH: usize = 128;

/// The most ACCEPTs a lane sends in one go (`Caller::post_pipelined_once`):
/// each carries its TaskInfos, up to a few KB per task.
pub const MAX_ACCEPT_BATCH: usize = 16;

/// A lane with both queues ready sends a batch of ACKNOWLEDGEs at least
/// after this many batches of its other calls, so a stream of ACCEPTs does
/// not hold them up until the master sends the updates again.
pub const ACKS_AFTER: u32 = 8;

/// One call and where it stands.
pub(crate) struct Entry {
    /// Arrival order; fences compare it.
    pub seq: u64,
    pub call: Call,
    pub backoff: Backoff,
    /// The stream an ACCEPT or SUPPRESS was first about to go out on: its
    /// offers (or the suppression it changes) die with that stream.
    pub first_stream: Option<String>,
    pub wait: Wait,
    /// For an ACKNOWLEDGE: its update, so a copy of it is not queued twice.
    pub update: Option<UpdateKey>,
}

/// One status update: agent id, task id, uuid.
pub(crate) type UpdateKey = (Arc<str>, Arc<str>, Vec<u8>);

/// What a call waits for before it is sent (again).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Wait {
    /// Nothing: it goes as soon as its lane is free and there is a session.
    Ready,
    /// A backoff after a failure on stream `.1`: until `.0`, or a newer session.
    Until(Instant, String),
    /// Refused on the ended stream `.0`: a newer session.
    NewSession(String),
}

/// All pending calls, lane by lane: lane `l`'s calls other than
/// ACKNOWLEDGE in `queues[2 * l]`, its ACKNOWLEDGEs in `queues[2 * l + 1]`.
pub(crate) struct Lanes {
    queues: Vec<VecDeque<Entry>>,
    /// A lane whose batch is out; it gets it back through `finish`.
    busy: Vec<bool>,
    /// Batches of other calls each lane sent since its last batch of
    /// ACKNOWLEDGEs (`ACKS_AFTER`).
    since_acks: Vec<u32>,
    /// Sequence numbers of the fences queued, oldest first.
    fences: VecDeque<u64>,
    next_seq: u64,
    /// Calls queued or in flight.
    pending: usize,
    /// The updates of the ACKNOWLEDGEs queued or in flight. A master that
    /// does not get our ACKNOWLEDGEs sends the update again (and the state
    /// thread acknowledges it again): the copy adds nothing, and in an
    /// outage such copies would fill the queue.
    acknowledging: HashSet<UpdateKey>,
}

/// A finished call as `Lanes::finish` needs it: its sequence number and,
/// for an ACKNOWLEDGE, its update.
pub(crate) type Done = (u64, Option<UpdateKey>);

/// Which lane a call takes; fences take `FRAMEWORK_LANE`.
pub(crate) fn lane_for(call: &Call) -> usize {
    match call {
        Call::Launch { agent_id, .. }
        | Call::Acknowledge { agent_id, .. }
        | Call::Kill {
            agent_id: Some(agent_id),
            ..
        } => lane_of(agent_id),
        Call::Kill { agent_id: None, .. }
        | Call::Decline { .. }
        | Call::Suppress
        | Call::Revive
        | Call::Reconcile(_)
        | Call::Teardown => FRAMEWORK_LANE,
    }
}

/// True for the calls that wait for everything before them and hold up
/// everything after them.
pub(crate) fn is_fence(call: &Call) -> bool {
    matches!(call, Call::Reconcile(_) | Call::Teardown)
}

/// An agent's lane: FNV-1a of its id, so the same agent always gets the same
/// lane, in every run.
pub(crate) fn lane_of(agent: &AgentId) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in agent.0.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % CALL_LANES as u64) as usize
}

/// Whether `next` may join a batch that starts with `first`: a batch is a
/// run of ACKNOWLEDGEs, of KILLs or of ACCEPTs, sent pipelined. Each commutes
/// with the others of its kind, so it does not matter that a master may act
/// on pipelined calls in any order (`mesos-sim` does).
fn batches_with(first: &Call, next: &Call) -> bool {
    matches!(
        (first, next),
        (Call::Acknowledge { .. }, Call::Acknowledge { .. })
            | (Call::Kill { .. }, Call::Kill { .. })
            | (Call::Launch { .. }, Call::Launch { .. })
    )
}

/// The queue a call waits in (see `Lanes`).
fn queue_for(call: &Call) -> usize {
    2 * lane_for(call) + usize::from(matches!(call, Call::Acknowledge { .. }))
}

impl Lanes {
    pub fn new() -> Lanes {
        Lanes {
            queues: (0..2 * CALL_LANES).map(|_| VecDeque::new()).collect(),
            busy: vec![false; CALL_LANES],
            since_acks: vec![0; CALL_LANES],
            fences: VecDeque::new(),
            next_seq: 0,
            pending: 0,
            acknowledging: HashSet::new(),
        }
    }

    /// Calls queued or in flight.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn is_full(&self) -> bool {
        self.pending >= MAX_PENDING_CALLS
    }

    /// Queues a call behind those of its lane; false (and nothing queued)
    /// for an ACKNOWLEDGE of an update already being acknowledged.
    pub fn push(&mut self, call: Call) -> bool {
        let update = match &call {
            Call::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => Some((agent_id.0.clone(), task_id.0.clone(), uuid.clone())),
            _ => None,
        };
        if let Some(update) = &update {
            if !self.acknowledging.insert(update.clone()) {
                return false;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if is_fence(&call) {
            self.fences.push_back(seq);
        }
        self.queues[queue_for(&call)].push_back(Entry {
            seq,
            call,
            backoff: Backoff::new(CALL_BACKOFF_MIN, CALL_BACKOFF_MAX),
            first_stream: None,
            wait: Wait::Ready,
            update,
        });
        self.pending += 1;
        true
    }

    /// Takes a batch from every free lane whose first call may go now on
    /// the session with `stream` (`None`: no session, nothing goes). Each
    /// lane taken is busy until `finish`.
    pub fn take_ready(&mut self, stream: Option<&str>, now: Instant) -> Vec<(usize, Vec<Entry>)> {
        let Some(stream) = stream else {
            return Vec::new();
        };
        let mut batches = Vec::new();
        for lane in 0..CALL_LANES {
            let (others, acks) = (2 * lane, 2 * lane + 1);
            let turn = if self.since_acks[lane] >= ACKS_AFTER {
                [acks, others]
            } else {
                [others, acks]
            };
            let Some(from) = turn
                .into_iter()
                .find(|&queue| !self.busy[lane] && self.head_may_go(queue, stream, now))
            else {
                continue;
            };
            self.since_acks[lane] = if from == acks {
                0
            } else {
                self.since_acks[lane].saturating_add(1)
            };
            let fence = self.fences.front().copied();
            let queue = &mut self.queues[from];
            let head = queue.pop_front().expect("head_may_go saw a head");
            let most = match head.call {
                Call::Launch { .. } => MAX_ACCEPT_BATCH,
                _ => MAX_BATCH,
            };
            let mut batch = vec![head];
            while batch.len() < most {
                // An ACCEPT joins only on the stream it would first go out
                // on (`CallerLoop::start_ready` checks the head's).
                let next_fits = queue.front().is_some_and(|next| {
                    batches_with(&batch[0].call, &next.call)
                        && next.wait == Wait::Ready
                        && next
                            .first_stream
                            .as_deref()
                            .is_none_or(|first| first == stream)
                        && fence.is_none_or(|fence| next.seq < fence)
                });
                if !next_fits {
                    break;
                }
                batch.extend(queue.pop_front());
            }
            self.busy[lane] = true;
            batches.push((lane, batch));
        }
        batches
    }

    /// A lane's batch is back: `done` calls (sequence number, and update
    /// for an ACKNOWLEDGE) are finished for good, and `unfinished` (the
    /// call to send again first, then those not tried) go back to the
    /// front of the lane, in order.
    pub fn finish(&mut self, lane: usize, done: &[Done], unfinished: Vec<Entry>) {
        self.busy[lane] = false;
        for (seq, update) in done {
            if self.fences.front() == Some(seq) {
                self.fences.pop_front();
            }
            if let Some(update) = update {
                self.acknowledging.remove(update);
            }
        }
        self.pending -= done.len();
        // A batch comes from one queue.
        for entry in unfinished.into_iter().rev() {
            self.queues[queue_for(&entry.call)].push_front(entry);
        }
        if self.pending == 0 {
            for queue in &mut self.queues {
                queue.shrink_to(KEEP_ROOM);
            }
            self.fences.shrink_to(KEEP_ROOM);
            self.acknowledging.shrink_to(KEEP_ROOM);
        }
    }

    /// The earliest backoff that ends after `now`, to wake up for. One
    /// that has ended already is not: its call waits for something else (a
    /// session, a fence, its lane), and waking for it would spin.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.queues
            .iter()
            .enumerate()
            .filter(|(queue, _)| !self.busy[queue / 2])
            .filter_map(|(_, queue)| match queue.front()?.wait {
                Wait::Until(at, _) if at > now => Some(at),
                _ => None,
            })
            .min()
    }

    /// True when a free lane's first call can go only after a wait for a
    /// session or a backoff (at shutdown the caller waits for neither).
    pub fn must_wait(&self, stream: Option<&str>, now: Instant) -> bool {
        self.queues.iter().enumerate().any(|(queue, calls)| {
            !self.busy[queue / 2]
                && calls
                    .front()
                    .is_some_and(|head| !wait_is_over(&head.wait, stream, now))
        })
    }

    /// Whether the first call of queue `queue` (of a free lane) may go: its
    /// wait is over and no fence holds it.
    fn head_may_go(&self, queue: usize, stream: &str, now: Instant) -> bool {
        let Some(head) = self.queues[queue].front() else {
            return false;
        };
        if !wait_is_over(&head.wait, Some(stream), now) {
            return false;
        }
        match self.fences.front() {
            None => true,
            Some(&fence) if head.seq > fence => false,
            // The fence itself: every call before it, in every lane, is done.
            Some(&fence) if head.seq == fence => {
                self.queues.iter().enumerate().all(|(other, calls)| {
                    other == queue
                        || (!self.busy[other / 2]
                            && calls.front().is_none_or(|first| first.seq > fence))
                })
            }
            Some(_) => true,
        }
    }
}

fn wait_is_over(wait: &Wait, stream: Option<&str>, now: Instant) -> bool {
    let Some(stream) = stream else {
        return false;
    };
    match wait {
        Wait::Ready => true,
        Wait::Until(at, failed_on) => now >= *at || failed_on != stream,
        Wait::NewSession(ended) => ended != stream,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scheduler::model::{OfferId, TaskId};

    /// An agent id on lane `lane`, found by trying names.
    fn agent_on(lane: usize) -> AgentId {
        (0..)
            .map(|n| AgentId(format!("agent-{n}").into()))
            .find(|agent| lane_of(agent) == lane)
            .expect("some name hashes to every lane")
    }

    /// `launch@1 t1`, `ack@1 t1`, `kill@1 t1`, `kill t1` (no agent),
    /// `decline`, `suppress`, `revive`, `reconcile`, `teardown`: @N is the
    /// lane of the agent.
    fn call(text: &str) -> Call {
        let (kind, task) = text.split_once(' ').unwrap_or((text, "t"));
        let task_id = TaskId(task.into());
        let (kind, agent) = match kind.split_once('@') {
            Some((kind, lane)) => (kind, Some(agent_on(lane.parse().expect("lane")))),
            None => (kind, None),
        };
        match kind {
            "launch" => Call::Launch {
                agent_id: agent.expect("launch@N"),
                offer_ids: vec![OfferId("o".to_string())],
                tasks: Vec::new(),
                refuse_seconds: 5.0,
            },
            "ack" => Call::Acknowledge {
                agent_id: agent.expect("ack@N"),
                task_id,
                uuid: vec![1],
            },
            "kill" => Call::Kill {
                task_id,
                agent_id: agent,
            },
            "decline" => Call::Decline {
                offer_ids: vec![OfferId("o".to_string())],
                refuse_seconds: 5.0,
            },
            "suppress" => Call::Suppress,
            "revive" => Call::Revive,
            "reconcile" => Call::Reconcile(Vec::new()),
            "teardown" => Call::Teardown,
            other => panic!("unknown call {other}"),
        }
    }

    fn name(entry: &Entry) -> String {
        match &entry.call {
            Call::Launch { .. } => "launch".to_string(),
            Call::Acknowledge { task_id, .. } => format!("ack {}", task_id.0),
            Call::Kill { task_id, .. } => format!("kill {}", task_id.0),
            other => other.name().to_ascii_lowercase(),
        }
    }

    /// Queues `calls`, then runs rounds: each round takes what may go and
    /// finishes all of it (`fail` names calls whose first attempt fails and
    /// which wait for a new session). Renders each round as
    /// `lane:call,call` groups, sorted by lane.
    #[track_caller]
    fn check(calls: &[&str], fail: &[&str], expected: &[&str]) {
        let now = Instant::now();
        let mut lanes = Lanes::new();
        for text in calls {
            assert!(lanes.push(call(text)), "{text} queued");
        }
        let mut failed_once: Vec<String> = Vec::new();
        let mut stream = "s1".to_string();
        let mut rounds = Vec::new();
        for _ in 0..20 {
            let batches = lanes.take_ready(Some(&stream), now);
            if batches.is_empty() {
                if lanes.pending() == 0 {
                    break;
                }
                // Only a new session can help.
                stream.push('+');
                rounds.push("new session".to_string());
                continue;
            }
            let mut round = Vec::new();
            for (lane, batch) in batches {
                round.push(format!(
                    "{lane}:{}",
                    batch.iter().map(name).collect::<Vec<_>>().join(",")
                ));
                let mut done: Vec<Done> = Vec::new();
                let mut entries = batch.into_iter();
                let mut unfinished = Vec::new();
                for mut entry in entries.by_ref() {
                    let text = name(&entry);
                    if fail.contains(&text.as_str()) && !failed_once.contains(&text) {
                        failed_once.push(text);
                        entry.wait = Wait::NewSession(stream.clone());
                        unfinished.push(entry);
                        break;
                    }
                    done.push((entry.seq, entry.update.take()));
                }
                unfinished.extend(entries);
                lanes.finish(lane, &done, unfinished);
            }
            rounds.push(round.join(" "));
        }
        assert_eq!(rounds, expected);
        assert_eq!(lanes.pending(), 0);
    }

    #[test]
    fn calls_of_one_agent_keep_their_order_and_lanes_run_side_by_side() {
        // An agent's ACCEPT, then its KILL, in order; its ACKNOWLEDGEs go
        // when no other call waits; two agents on two lanes go side by side.
        check(
            &["launch@1 a", "kill@1 a", "ack@1 a", "launch@2 b", "ack@2 b"],
            &[],
            &["1:launch 2:launch", "1:kill a 2:ack b", "1:ack a"],
        );
        // Framework-wide calls share one lane, in order.
        check(
            &["suppress", "decline", "revive", "kill x"],
            &[],
            &["0:suppress", "0:decline", "0:revive", "0:kill x"],
        );
    }

    #[test]
    fn a_call_sent_again_holds_up_its_queue_only() {
        // The first KILL fails; the KILL behind it in the batch was not
        // tried and waits with it; the lane's ACKNOWLEDGE and lane 2 are not
        // held up.
        check(
            &[
                "launch@1 a",
                "kill@1 a",
                "kill@1 b",
                "ack@1 a",
                "ack@2 b",
                "ack@2 c",
            ],
            &["kill a"],
            &[
                "1:launch 2:ack b,ack c",
                "1:kill a,kill b",
                "1:ack a",
                "new session",
                "1:kill a,kill b",
            ],
        );
        // A failed REVIVE keeps the SUPPRESS after it waiting.
        check(
            &["revive", "suppress"],
            &["revive"],
            &["0:revive", "new session", "0:revive", "0:suppress"],
        );
    }

    #[test]
    fn fences_wait_for_everything_before_and_hold_up_everything_after() {
        check(
            &["launch@1 a", "ack@2 b", "reconcile", "ack@1 a", "ack@3 c"],
            &[],
            &["1:launch 2:ack b", "0:reconcile", "1:ack a 3:ack c"],
        );
        check(
            &["ack@1 a", "teardown", "suppress"],
            &["ack a"],
            &[
                "1:ack a",
                "new session",
                "1:ack a",
                "0:teardown",
                "0:suppress",
            ],
        );
        // A batch stops before a call queued after a fence.
        check(
            &["ack@1 a", "reconcile", "ack@1 b"],
            &[],
            &["1:ack a", "0:reconcile", "1:ack b"],
        );
    }

    #[test]
    fn nothing_goes_without_a_session_and_backoffs_end_by_time_or_session() {
        let now = Instant::now();
        let mut lanes = Lanes::new();
        assert!(lanes.push(call("ack@1 a")));
        assert!(lanes.take_ready(None, now).is_empty());
        assert!(lanes.must_wait(None, now));
        let mut batch = lanes.take_ready(Some("s1"), now);
        let (lane, mut entries) = batch.pop().expect("one batch");
        let retry_at = now + Duration::from_secs(1);
        entries[0].wait = Wait::Until(retry_at, "s1".to_string());
        lanes.finish(lane, &[], entries);
        assert_eq!(lanes.next_deadline(now), Some(retry_at));
        // Without a session an ended backoff is no reason to wake up.
        assert_eq!(lanes.next_deadline(retry_at), None);
        assert!(lanes.must_wait(Some("s1"), now));
        assert!(lanes.take_ready(Some("s1"), now).is_empty());
        assert_eq!(lanes.take_ready(Some("s1"), retry_at).len(), 1);
        lanes.finish(lane, &[], Vec::new());
        assert_eq!(lanes.pending(), 1, "given back without being done");
    }

    #[test]
    fn a_copy_of_an_acknowledgement_under_way_is_not_queued() {
        let now = Instant::now();
        let mut lanes = Lanes::new();
        assert!(lanes.push(call("ack@1 a")));
        assert!(!lanes.push(call("ack@1 a")), "the same update again");
        assert!(lanes.push(call("ack@1 b")), "another task");
        assert_eq!(lanes.pending(), 2);
        let (lane, mut batch) = lanes.take_ready(Some("s"), now).pop().expect("a batch");
        assert!(!lanes.push(call("ack@1 a")), "still in flight");
        let done: Vec<Done> = batch
            .iter_mut()
            .map(|entry| (entry.seq, entry.update.take()))
            .collect();
        lanes.finish(lane, &done, Vec::new());
        assert_eq!(lanes.pending(), 0);
        // Acknowledged: a later copy (the master sent it again meanwhile) goes out.
        assert!(lanes.push(call("ack@1 a")));
    }

    #[test]
    fn acknowledgements_give_way_to_other_calls_but_not_for_ever() {
        let now = Instant::now();
        let mut lanes = Lanes::new();
        for n in 0..3 * MAX_BATCH {
            assert!(lanes.push(call(&format!("ack@0 t{n}"))));
        }
        let took = |lanes: &mut Lanes| {
            let (lane, batch) = lanes.take_ready(Some("s"), now).pop().expect("a batch");
            let done: Vec<Done> = batch
                .iter()
                .map(|entry| (entry.seq, entry.update.clone()))
                .collect();
            lanes.finish(lane, &done, Vec::new());
            let names: Vec<String> = batch.iter().map(name).collect();
            match &names[..] {
                [one] => one.clone(),
                [first, ..] => format!("{first} and {} more", names.len() - 1),
                [] => String::new(),
            }
        };
        assert_eq!(
            took(&mut lanes),
            format!("ack t0 and {} more", MAX_BATCH - 1)
        );
        // Queued behind 2 * MAX_BATCH acknowledgements on their lane: calls
        // that do not batch together, one batch each.
        for n in 0..ACKS_AFTER {
            let other = if n % 2 == 0 { "launch@0 a" } else { "kill@0 a" };
            assert!(lanes.push(call(other)));
        }
        assert!(lanes.push(call("revive")));
        for n in 0..ACKS_AFTER {
            let other = if n % 2 == 0 { "launch" } else { "kill a" };
            assert_eq!(took(&mut lanes), other);
        }
        let acks_from = |first: usize| format!("ack t{first} and {} more", MAX_BATCH - 1);
        assert_eq!(took(&mut lanes), acks_from(MAX_BATCH));
        assert_eq!(took(&mut lanes), "revive");
        assert_eq!(took(&mut lanes), acks_from(2 * MAX_BATCH));
        assert_eq!(lanes.pending(), 0);
    }

    #[test]
    fn a_run_of_accepts_goes_as_one_batch_on_the_stream_of_its_first() {
        // A run of one kind is a batch; a call of another kind ends it.
        check(
            &[
                "launch@1 a",
                "launch@1 b",
                "kill@1 a",
                "kill@1 b",
                "launch@1 c",
            ],
            &[],
            &["1:launch,launch", "1:kill a,kill b", "1:launch"],
        );
        // An ACCEPT that first went out on an older stream does not join.
        let now = Instant::now();
        let mut lanes = Lanes::new();
        for _ in 0..3 {
            assert!(lanes.push(call("launch@1 a")));
        }
        let (lane, mut batch) = lanes.take_ready(Some("s1"), now).pop().expect("a batch");
        assert_eq!(batch.len(), 3);
        for entry in &mut batch {
            entry.first_stream = Some("s1".to_string());
        }
        let head = batch.remove(0);
        lanes.finish(lane, &[(head.seq, None)], batch);
        assert!(lanes.push(call("launch@1 b")));
        let streams = |lanes: &mut Lanes, stream: &str| -> Vec<Option<String>> {
            let (lane, batch) = lanes.take_ready(Some(stream), now).pop().expect("a batch");
            let firsts = batch
                .iter()
                .map(|entry| entry.first_stream.clone())
                .collect();
            let done: Vec<Done> = batch.iter().map(|entry| (entry.seq, None)).collect();
            lanes.finish(lane, &done, Vec::new());
            firsts
        };
        let s1 = Some("s1".to_string());
        assert_eq!(streams(&mut lanes, "s2"), std::slice::from_ref(&s1));
        assert_eq!(streams(&mut lanes, "s2"), [s1, None]);
        assert_eq!(lanes.pending(), 0);
        let mut lanes = Lanes::new();
        for _ in 0..MAX_ACCEPT_BATCH + 1 {
            assert!(lanes.push(call("launch@1 a")));
        }
        assert_eq!(streams(&mut lanes, "s").len(), MAX_ACCEPT_BATCH);
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut lanes = Lanes::new();
        for n in 0..MAX_BATCH + 3 {
            assert!(lanes.push(call(&format!("ack@1 t{n}"))));
        }
        let batches = lanes.take_ready(Some("s"), Instant::now());
        assert_eq!(batches[0].1.len(), MAX_BATCH);
    }

    #[test]
    fn a_burst_gives_its_room_back_once_every_call_is_done() {
        let mut lanes = Lanes::new();
        let burst = 20 * KEEP_ROOM;
        for n in 0..burst {
            assert!(lanes.push(call(&format!("ack@1 t{n}"))));
        }
        let room = |lanes: &Lanes| {
            let queues = lanes.queues.iter().map(VecDeque::capacity).max();
            (queues.unwrap_or(0), lanes.acknowledging.capacity())
        };
        assert!(room(&lanes).0 >= burst && room(&lanes).1 >= burst);
        while lanes.pending > 0 {
            for (lane, batch) in lanes.take_ready(Some("s"), Instant::now()) {
                let done: Vec<Done> = batch
                    .iter()
                    .map(|entry| (entry.seq, entry.update.clone()))
                    .collect();
                lanes.finish(lane, &done, Vec::new());
            }
        }
        let (queues, acks) = room(&lanes);
        assert!(
            queues <= 2 * KEEP_ROOM && acks <= 2 * KEEP_ROOM,
            "{queues} {acks}"
        );
    }
}
