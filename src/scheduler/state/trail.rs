//! Each task's decision trail (`GET /client/task/<id>`) and the notices of
//! `GET /client/events`: the hooks `State` calls where things happen
//! (submit, placement round, launch, status, kill, move, restart, relaunch,
//! nodes, subscription, intelligence).
//!
//! A trail is compact data, not text: a placement round keeps the numbers
//! of at most `placement::MAX_REJECTIONS` rejected offers, and text is built
//! only when someone reads it (`Trail::lines`). At most `MAX_HISTORY`
//! entries per task, oldest dropped first; a round or a status that repeats
//! the entry before it (a pending task sees a round every few seconds, a
//! reconciliation answer repeats the state) only counts up that entry.
//! Trails live in memory only (not persisted): a restart starts them anew.
//! An ended task keeps its trail while it is listed (`--keep-finished`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{utc_text, Node, State, Task};
use crate::scheduler::model::{
    AgentId, FrameworkId, Offer, TaskId, TaskSpec, TaskState, TaskUpdate,
};
use crate::scheduler::notice::{clip, is_clip_of, KilledBy, Notice, NoticeKind, MAX_EVENT_TEXT};
use crate::scheduler::placement::{format_number, Decision, Miss, Scope, Verdict};
use crate::scheduler::{HistoryLine, Now, TaskView};

/// Entries kept per task; the oldest go first.
pub const MAX_HISTORY: usize = 50;

/// One task's history, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Trail {
    entries: Vec<Entry>,
}

/// One entry (48 bytes): when it first happened, when last (for repeats),
/// and what. A task that runs has four: submitted, the placing round (shown
/// as `placement` and `launched`), STARTING, RUNNING.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    first_ms: u64,
    /// Milliseconds from the first time to the last (repeats only).
    last_after_ms: u32,
    /// Further times the same thing happened in a row.
    repeats: u32,
    what: What,
}

#[derive(Clone, Debug, PartialEq)]
enum What {
    Submitted,
    /// A restart or reshuffle replacement of `old`.
    Replaces {
        old: Box<str>,
        why: Replaced,
    },
    /// A placement round; a placed one is also the launch.
    Round(Box<Round>),
    /// A status update; `detail` is ` (REASON): message`, either part
    /// left out when empty.
    Status {
        state: TaskState,
        detail: Box<str>,
    },
    Killed(KilledBy),
    /// A reshuffle replaces it with `replacement`.
    Moved {
        replacement: Box<str>,
    },
    /// Its restart policy replaces it with `replacement`.
    Restarted {
        replacement: Box<str>,
        restarts: u32,
        delay_s: u32,
    },
    /// The master lost or refused its launch; the text says why and the
    /// id it waits under now.
    Relaunched {
        text: Box<str>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replaced {
    Restart { restarts: u32, delay_s: u32 },
    Reshuffle,
}

/// One placement round as it concerned one task.
#[derive(Clone, Debug, PartialEq)]
struct Round {
    /// Offers in the round, and how many of them this task's search read.
    offers: u32,
    examined: u32,
    rejected: Box<[Rejected]>,
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq)]
struct Rejected {
    host: Box<str>,
    /// The offer's attribute value for a `nodename`/`nodetype` miss.
    has: Box<str>,
    miss: Miss,
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Placed { host: Box<str>, scope: Scope },
    NoCandidates,
    NoFit,
}

impl Round {
    /// Whether `decision` would be recorded as this round: compared without
    /// building one, so a pending task's repeated rounds allocate nothing.
    fn same_as(&self, decision: &Decision, offers: &[Offer]) -> bool {
        let host = |offer: usize| {
            offers
                .get(offer)
                .map_or("?", |offer| offer.hostname.as_str())
        };
        let attribute = |offer: usize, name: &str| {
            offers
                .get(offer)
                .and_then(|offer| offer.attributes.get(name))
                .map_or("", String::as_str)
        };
        let outcome = match (&self.outcome, decision.verdict) {
            (
                Outcome::Placed { host: mine, scope },
                Verdict::Placed {
                    offer,
                    scope: theirs,
                },
            ) => is_clip_of(mine, host(offer)) && *scope == theirs,
            (Outcome::NoCandidates, Verdict::NoCandidates) => true,
            (Outcome::NoFit, Verdict::NoFit { .. }) => true,
            _ => false,
        };
        outcome
            && self.offers == u32::try_from(offers.len()).unwrap_or(u32::MAX)
            && self.examined == decision.examined
            && self.rejected.len() == decision.rejected.len()
            && self
                .rejected
                .iter()
                .zip(&decision.rejected)
                .all(|(mine, theirs)| {
                    let name = match theirs.miss {
                        Miss::NodeName => "nodename",
                        Miss::NodeType => "nodetype",
                        _ => "",
                    };
                    mine.miss == theirs.miss
                        && is_clip_of(&mine.host, host(theirs.offer))
                        && is_clip_of(&mine.has, attribute(theirs.offer, name))
                })
    }

    fn of(decision: &Decision, offers: &[Offer]) -> Round {
        // A master's hostnames and attributes may be of any length.
        let host = |offer: usize| -> Box<str> {
            clip(
                offers
                    .get(offer)
                    .map_or("?", |offer| offer.hostname.as_str()),
            )
            .into()
        };
        let rejected = decision
            .rejected
            .iter()
            .map(|rejection| {
                let attribute = match rejection.miss {
                    Miss::NodeName => "nodename",
                    Miss::NodeType => "nodetype",
                    _ => "",
                };
                let has = offers
                    .get(rejection.offer)
                    .and_then(|offer| offer.attributes.get(attribute))
                    .map_or("", String::as_str);
                Rejected {
                    host: host(rejection.offer),
                    has: clip(has).into(),
                    miss: rejection.miss,
                }
            })
            .collect();
        let outcome = match decision.verdict {
            Verdict::Placed { offer, scope } => Outcome::Placed {
                host: host(offer),
                scope,
            },
            Verdict::NoCandidates => Outcome::NoCandidates,
            Verdict::NoFit { .. } => Outcome::NoFit,
        };
        Round {
            offers: u32::try_from(offers.len()).unwrap_or(u32::MAX),
            examined: decision.examined,
            rejected,
            outcome,
        }
    }

    /// "3 offers, 3 examined: slave1 nodetype=analytics ≠ lab; slave2 mem
    /// 60 < 100; placed on slave3, most free mem".
    fn text(&self, spec: &TaskSpec) -> String {
        let thousandths = |value: u64| format_number(value as f64 / 1000.0);
        let mut parts: Vec<String> = self
            .rejected
            .iter()
            .map(|rejected| {
                let host = &rejected.host;
                match rejected.miss {
                    Miss::NodeName => {
                        format!("{host} nodename={} ≠ {}", rejected.has, spec.node_name)
                    }
                    Miss::NodeType => {
                        format!("{host} nodetype={} ≠ {}", rejected.has, spec.node_type)
                    }
                    Miss::Cpus { need, has } => {
                        format!("{host} cpus {} < {}", thousandths(has), thousandths(need))
                    }
                    Miss::Mem { need, has } => {
                        format!("{host} mem {} < {}", thousandths(has), thousandths(need))
                    }
                    Miss::PortOutside(port) => format!("{host} port {port} not offered"),
                    Miss::PortTaken(port) => format!("{host} port {port} taken"),
                }
            })
            .collect();
        let shown = parts.len();
        if (self.examined as usize)
            > shown + usize::from(matches!(self.outcome, Outcome::Placed { .. }))
            && shown > 0
        {
            parts.push("…".to_string());
        }
        parts.push(match &self.outcome {
            Outcome::Placed { host, scope } => {
                let among = match scope {
                    Scope::All => String::new(),
                    Scope::Pinned => " (its own node)".to_string(),
                    Scope::NodeName => format!(" among nodename={}", spec.node_name),
                    Scope::NodeType => format!(" among nodetype={}", spec.node_type),
                };
                format!("placed on {host}, most free mem{among}")
            }
            Outcome::NoCandidates => match (spec.node_name.is_empty(), spec.node_type.is_empty()) {
                (false, _) => format!("not placed: no offer with nodename={}", spec.node_name),
                (true, false) => format!("not placed: no offer with nodetype={}", spec.node_type),
                (true, true) => "not placed: no offers".to_string(),
            },
            Outcome::NoFit => "not placed".to_string(),
        });
        let offers = if self.offers == 1 { "offer" } else { "offers" };
        format!(
            "{} {offers}, {} examined: {}",
            self.offers,
            self.examined,
            parts.join("; ")
        )
    }
}

impl Trail {
    /// Adds `what`, or counts up the last entry when it is the same round
    /// or status again.
    fn push(&mut self, at_ms: u64, what: What) {
        if let Some(last) = self.entries.last_mut() {
            // A replacement says what it replaces instead of "submitted".
            if matches!(what, What::Replaces { .. }) && last.what == What::Submitted {
                last.what = what;
                return;
            }
            let repeatable = matches!(what, What::Round(_) | What::Status { .. });
            if repeatable && last.what == what {
                last.repeat(at_ms);
                return;
            }
        }
        if self.entries.len() >= MAX_HISTORY {
            self.entries.remove(0);
        }
        // Room for one at first, not the four a push would make: a pending
        // task, and every task after a restart (its reconciliation answer),
        // has one entry for a long time. The second push makes room for four.
        if self.entries.capacity() == 0 {
            self.entries.reserve_exact(1);
        }
        self.entries.push(Entry {
            first_ms: at_ms,
            last_after_ms: 0,
            repeats: 0,
            what,
        });
    }

    /// Records a status: counts up the last entry when it is the same
    /// status again (without allocating), else adds it.
    pub(super) fn push_status(
        &mut self,
        at_ms: u64,
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        if let Some(last) = self.entries.last_mut() {
            if let What::Status {
                state: last_state,
                detail,
            } = &last.what
            {
                if *last_state == state && is_status_detail(detail, reason, message) {
                    last.repeat(at_ms);
                    return;
                }
            }
        }
        let detail = status_detail(reason, message);
        self.push(at_ms, What::Status { state, detail });
    }

    /// Records a round: counts up the last entry when it is the same
    /// round again (without allocating), else adds it.
    fn push_round(&mut self, at_ms: u64, decision: &Decision, offers: &[Offer]) {
        if let Some(last) = self.entries.last_mut() {
            if let What::Round(round) = &last.what {
                if round.same_as(decision, offers) {
                    last.repeat(at_ms);
                    return;
                }
            }
        }
        self.push(at_ms, What::Round(Box::new(Round::of(decision, offers))));
    }

    /// The history as text, oldest first; `spec` is the task's (for the
    /// constraints a round names).
    pub(super) fn lines(&self, spec: &TaskSpec) -> Vec<HistoryLine> {
        let mut lines = Vec::with_capacity(self.entries.len() + 1);
        for entry in &self.entries {
            let (kind, mut text) = match &entry.what {
                What::Submitted => ("submitted", "submitted".to_string()),
                What::Replaces { old, why } => (
                    "submitted",
                    match why {
                        Replaced::Restart { restarts, delay_s } => {
                            format!("restart {restarts} of {old}, waits {delay_s}s first")
                        }
                        Replaced::Reshuffle => format!("replaces {old} (reshuffle)"),
                    },
                ),
                What::Round(round) => ("placement", round.text(spec)),
                What::Status { state, detail } => ("status", format!("{}{detail}", state.as_str())),
                What::Killed(by) => ("killed", format!("kill requested by {}", by.as_str())),
                What::Moved { replacement } => {
                    ("moved", format!("reshuffle: replaced by {replacement}"))
                }
                What::Restarted {
                    replacement,
                    restarts,
                    delay_s,
                } => (
                    "restarted",
                    format!("restart {restarts} as {replacement} in {delay_s}s"),
                ),
                What::Relaunched { text } => ("relaunched", text.to_string()),
            };
            if entry.repeats > 0 {
                text.push_str(&format!(
                    " (×{} since {})",
                    u64::from(entry.repeats) + 1,
                    utc_text(entry.first_ms / 1000)
                ));
            }
            lines.push(HistoryLine {
                time_ms: entry.last_ms(),
                kind,
                text,
            });
            // The round that placed a task is also its launch.
            if let What::Round(round) = &entry.what {
                if let Outcome::Placed { host, .. } = &round.outcome {
                    lines.push(HistoryLine {
                        time_ms: entry.last_ms(),
                        kind: "launched",
                        text: format!("launch sent to {host}"),
                    });
                }
            }
        }
        lines
    }
}

impl Entry {
    fn repeat(&mut self, at_ms: u64) {
        self.repeats = self.repeats.saturating_add(1);
        let after = at_ms.saturating_sub(self.first_ms);
        self.last_after_ms = u32::try_from(after).unwrap_or(u32::MAX);
    }

    fn last_ms(&self) -> u64 {
        self.first_ms + u64::from(self.last_after_ms)
    }
}

/// Whether `detail` is `status_detail(reason, message)`, compared without
/// building it when nothing in it is cut (the usual case: a restart's
/// reconciliation answers each repeat a task's last status).
fn is_status_detail(detail: &str, reason: &str, message: &str) -> bool {
    if reason.len() + message.len() + " (): ".len() > MAX_EVENT_TEXT {
        return *detail == *status_detail(reason, message);
    }
    let mut rest = Some(detail);
    if !reason.is_empty() {
        rest = rest
            .and_then(|rest| rest.strip_prefix(" ("))
            .and_then(|rest| rest.strip_prefix(reason))
            .and_then(|rest| rest.strip_prefix(')'));
    }
    if !message.is_empty() {
        rest = rest
            .and_then(|rest| rest.strip_prefix(": "))
            .and_then(|rest| rest.strip_prefix(message));
    }
    rest == Some("")
}

/// ` (REASON): message`, each part only when there is one, cut to
/// `MAX_EVENT_TEXT`.
fn status_detail(reason: &str, message: &str) -> Box<str> {
    let mut detail = String::new();
    if !reason.is_empty() {
        detail.push_str(&format!(" ({})", clip(reason)));
    }
    if !message.is_empty() {
        detail.push_str(&format!(": {}", clip(message)));
    }
    clip(&detail).into()
}

/// Unix milliseconds of a turn's wall clock.
pub(super) fn unix_millis(now: SystemTime) -> u64 {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

impl State {
    /// Queues a notice for the event stream; it leaves with the turn. Its
    /// texts are cut to `MAX_EVENT_TEXT`: the ring keeps thousands.
    pub(super) fn notify(&mut self, now: Now, mut kind: NoticeKind) {
        kind.clip();
        self.notices.push(Notice {
            time_ms: unix_millis(now.wall),
            kind,
        });
    }

    fn trail_push(&mut self, task_id: &TaskId, now: Now, what: What) {
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.trail.push(unix_millis(now.wall), what);
        } else if let Some(ended) = self
            .ended
            .iter_mut()
            .rev()
            .find(|ended| &ended.view.internal_id == task_id)
        {
            ended.trail.push(unix_millis(now.wall), what);
        }
    }

    fn user_id(&self, task_id: &TaskId) -> String {
        self.tasks
            .get(task_id)
            .map(|task| task.spec.id.clone())
            .unwrap_or_default()
    }

    /// A new task (`add_task`).
    pub(super) fn note_submitted(&mut self, task_id: &TaskId, now: Now) {
        self.trail_push(task_id, now, What::Submitted);
        let id = self.user_id(task_id);
        self.notify(
            now,
            NoticeKind::TaskSubmitted {
                task: task_id.clone(),
                id,
            },
        );
    }

    /// One placement round: every task it considered gets an entry; a
    /// placed one is launched in this turn (`apply_placement`).
    pub(super) fn note_round(&mut self, decisions: &[Decision], offers: &[Offer], now: Now) {
        let at = unix_millis(now.wall);
        for decision in decisions {
            let placed_on = match decision.verdict {
                Verdict::Placed { offer, .. } => offers.get(offer),
                _ => None,
            };
            let Some(task) = self.tasks.get_mut(&decision.task_id) else {
                continue;
            };
            let Some(offer) = placed_on else {
                task.trail.push_round(at, decision, offers);
                continue;
            };
            let round = Round::of(decision, offers);
            let why = round.text(&task.spec);
            let id = task.spec.id.clone();
            task.trail.push(at, What::Round(Box::new(round)));
            let (task_id, node, agent_id) = (
                decision.task_id.clone(),
                offer.hostname.clone(),
                offer.agent_id.clone(),
            );
            self.notify(
                now,
                NoticeKind::TaskPlaced {
                    task: task_id.clone(),
                    id: id.clone(),
                    node: node.clone(),
                    agent_id: agent_id.clone(),
                    why,
                },
            );
            self.notify(
                now,
                NoticeKind::TaskLaunched {
                    task: task_id,
                    id,
                    node,
                    agent_id,
                },
            );
        }
    }

    /// The notice of a status update that brings a known task news (a state
    /// it does not have yet), built before the update touches the task: the
    /// node is the update's agent's, or else the host the task was on. A
    /// repeat of the state the task has (a reconciliation answer) is not
    /// published; its history entry only counts up (`Trail::push_status`).
    pub(super) fn status_notice(
        update: &TaskUpdate,
        task: &Task,
        nodes: &BTreeMap<AgentId, Node>,
    ) -> NoticeKind {
        let node = update
            .agent_id
            .as_ref()
            .and_then(|agent| nodes.get(agent))
            .map(|node| node.hostname.to_string())
            .or_else(|| task.hostname.as_deref().map(str::to_string));
        NoticeKind::TaskStatus {
            task: update.task_id.clone(),
            id: task.spec.id.clone(),
            state: update.state,
            reason: (!update.reason_name.is_empty()).then(|| update.reason_name.clone()),
            message: (!update.message.is_empty()).then(|| update.message.clone()),
            node,
        }
    }

    /// A kill asked for, before it is carried out.
    pub(super) fn note_kill(&mut self, task_id: &TaskId, by: KilledBy, now: Now) {
        self.trail_push(task_id, now, What::Killed(by));
        let id = self.user_id(task_id);
        self.notify(
            now,
            NoticeKind::TaskKilled {
                task: task_id.clone(),
                id,
                by,
            },
        );
    }

    /// A reshuffle replaces `old` with `replacement`.
    pub(super) fn note_moved(&mut self, old: &TaskId, replacement: &TaskId, now: Now) {
        let Some(task) = self.tasks.get(old) else {
            return;
        };
        let (id, from) = (
            task.spec.id.clone(),
            task.hostname.as_deref().map(str::to_string),
        );
        let to = self
            .tasks
            .get(replacement)
            .map(|task| task.spec.node_name.clone())
            .filter(|name| !name.is_empty());
        self.trail_push(
            old,
            now,
            What::Moved {
                replacement: (&*replacement.0).into(),
            },
        );
        self.trail_push(
            replacement,
            now,
            What::Replaces {
                old: (&*old.0).into(),
                why: Replaced::Reshuffle,
            },
        );
        self.notify(
            now,
            NoticeKind::TaskMoved {
                task: old.clone(),
                id,
                replacement: replacement.clone(),
                from,
                to,
            },
        );
    }

    /// The restart policy replaced the ended `old` with `replacement`.
    pub(super) fn note_restarted(
        &mut self,
        old: &TaskId,
        replacement: &TaskId,
        restarts: u32,
        delay_s: u64,
        now: Now,
    ) {
        let id = self.user_id(replacement);
        let delay_32 = u32::try_from(delay_s).unwrap_or(u32::MAX);
        self.trail_push(
            old,
            now,
            What::Restarted {
                replacement: (&*replacement.0).into(),
                restarts,
                delay_s: delay_32,
            },
        );
        self.trail_push(
            replacement,
            now,
            What::Replaces {
                old: (&*old.0).into(),
                why: Replaced::Restart {
                    restarts,
                    delay_s: delay_32,
                },
            },
        );
        self.notify(
            now,
            NoticeKind::TaskRestarted {
                task: old.clone(),
                id,
                replacement: replacement.clone(),
                restarts,
                delay_seconds: delay_s,
            },
        );
    }

    /// A launch the master lost or refused: the task (its trail with it)
    /// now waits under `new_id`, published as a new `task_submitted`.
    pub(super) fn note_relaunched(&mut self, new_id: &TaskId, why: &str, now: Now) {
        self.trail_push(
            new_id,
            now,
            What::Relaunched {
                text: format!("launch lost ({}), waits again as {}", clip(why), new_id.0).into(),
            },
        );
        // To a watcher it is a new task; the old id's last `task_status`
        // (LOST, DROPPED, ...) ended the old one.
        let id = self.user_id(new_id);
        self.notify(
            now,
            NoticeKind::TaskSubmitted {
                task: new_id.clone(),
                id,
            },
        );
    }

    pub(super) fn note_node_joined(&mut self, agent_id: &AgentId, hostname: &str, now: Now) {
        let kind = NoticeKind::NodeJoined {
            agent_id: agent_id.clone(),
            node: hostname.to_string(),
        };
        self.notify(now, kind);
    }

    pub(super) fn note_node_lost(&mut self, agent_id: &AgentId, node: Option<String>, now: Now) {
        let kind = NoticeKind::NodeLost {
            agent_id: agent_id.clone(),
            node,
        };
        self.notify(now, kind);
    }

    pub(super) fn note_subscribed(&mut self, framework_id: &FrameworkId, now: Now) {
        let kind = NoticeKind::Subscribed {
            framework_id: framework_id.clone(),
        };
        self.notify(now, kind);
    }

    pub(super) fn note_intelligence(
        &mut self,
        task: &str,
        attribute: &str,
        value: Option<String>,
        source: &'static str,
        now: Now,
    ) {
        let kind = NoticeKind::IntelligenceChanged {
            task: task.to_string(),
            attribute: attribute.to_string(),
            value,
            source,
        };
        self.notify(now, kind);
    }

    /// `GET /client/task/<id>`: a live task, else an ended one still kept.
    pub(super) fn task_with_history(&self, id: &str) -> Option<(TaskView, Vec<HistoryLine>)> {
        let task_id = TaskId(id.into());
        if let Some(task) = self.tasks.get(&task_id) {
            return Some((self.view(&task_id), task.trail.lines(&task.spec)));
        }
        self.ended
            .iter()
            .rev()
            .find(|ended| ended.view.internal_id == task_id)
            .map(|ended| (ended.view.clone(), ended.trail.lines(&ended.view.spec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::placement::Rejection;

    use crate::scheduler::model::OfferId;

    fn spec(node_type: &str) -> TaskSpec {
        TaskSpec {
            node_type: node_type.to_string(),
            ..TaskSpec::for_test("sim", "busybox", 100)
        }
    }

    fn offer(host: &str, node_type: &str) -> Offer {
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("nodetype".to_string(), node_type.to_string());
        Offer::unreserved(
            OfferId(format!("o-{host}")),
            AgentId(format!("a-{host}").into()),
            host.to_string(),
            1.0,
            1000.0,
            Vec::new(),
            attributes,
        )
    }

    #[track_caller]
    fn check(
        examined: u32,
        rejected: &[(usize, Miss)],
        verdict: Verdict,
        want: &str,
        expected: &str,
    ) {
        let offers = [
            offer("slave1", "analytics"),
            offer("slave2", "lab"),
            offer("slave3", "lab"),
        ];
        let decision = Decision {
            task_id: TaskId("sim-1".into()),
            examined,
            rejected: rejected
                .iter()
                .map(|&(offer, miss)| Rejection { offer, miss })
                .collect(),
            verdict,
        };
        assert_eq!(Round::of(&decision, &offers).text(&spec(want)), expected);
    }

    #[test]
    fn a_round_reads_as_its_deciding_reasons() {
        let mem = Miss::Mem {
            need: 100_000,
            has: 60_000,
        };
        check(
            3,
            &[(0, Miss::NodeType), (1, mem)],
            Verdict::Placed {
                offer: 2,
                scope: Scope::All,
            },
            "lab",
            "3 offers, 3 examined: slave1 nodetype=analytics ≠ lab; slave2 mem 60 < 100; placed on slave3, most free mem",
        );
        check(
            1,
            &[],
            Verdict::Placed {
                offer: 1,
                scope: Scope::NodeType,
            },
            "lab",
            "3 offers, 1 examined: placed on slave2, most free mem among nodetype=lab",
        );
        check(
            0,
            &[],
            Verdict::NoCandidates,
            "gpu",
            "3 offers, 0 examined: not placed: no offer with nodetype=gpu",
        );
        check(
            5,
            &[
                (0, Miss::Cpus { need: 2000, has: 500 }),
                (1, Miss::PortTaken(8080)),
                (2, Miss::PortOutside(80)),
            ],
            Verdict::NoFit { largest_mem: Some(1) },
            "",
            "3 offers, 5 examined: slave1 cpus 0.5 < 2; slave2 port 8080 taken; slave3 port 80 not offered; …; not placed",
        );
    }

    /// A status detail is recognised without being built, and only the
    /// detail the same reason and message give.
    #[test]
    fn a_status_detail_is_compared_without_building_it() {
        use crate::scheduler::notice::MAX_EVENT_TEXT;
        let long = "é".repeat(MAX_EVENT_TEXT);
        let cases = [
            ("", ""),
            ("REASON_RECONCILIATION", ""),
            ("", "Reconciliation: Latest task state"),
            ("REASON_RECONCILIATION", "Reconciliation: Latest task state"),
            ("R", "a (b): c"),
            (long.as_str(), "m"),
            ("R", long.as_str()),
        ];
        for (reason, message) in cases {
            let detail = status_detail(reason, message);
            assert!(
                is_status_detail(&detail, reason, message),
                "{reason:?} {message:?}"
            );
            for (other_reason, other_message) in cases {
                let same = *status_detail(other_reason, other_message) == *detail;
                assert_eq!(
                    is_status_detail(&detail, other_reason, other_message),
                    same,
                    "{reason:?} {message:?} against {other_reason:?} {other_message:?}"
                );
            }
        }
        assert!(!is_status_detail(" (R): m!", "R", "m"));
        assert!(!is_status_detail(" (R)", "R", "m"));
        assert!(!is_status_detail(": m", "R", "m"));
    }

    /// See: review of issue 10. What a master, Redis or a client sent at
    /// any length enters the event ring and a task's history cut to
    /// `MAX_EVENT_TEXT` bytes; a round on the same long-named offers still
    /// only counts up its entry.
    #[test]
    fn long_texts_enter_the_ring_and_the_history_cut() {
        use crate::scheduler::notice::{CLIPPED, MAX_EVENT_TEXT};
        let long = "é".repeat(MAX_EVENT_TEXT);
        let mut state = State::new(None);
        let now = Now {
            instant: std::time::Instant::now(),
            wall: UNIX_EPOCH,
        };
        state.note_intelligence("t", "nodename", Some(long.clone()), "redis", now);
        state.notify(
            now,
            NoticeKind::Disconnected {
                reason: long.clone(),
            },
        );
        let texts: Vec<&str> = state
            .notices
            .iter()
            .map(|notice| match &notice.kind {
                NoticeKind::IntelligenceChanged { value, .. } => value.as_deref().unwrap_or(""),
                NoticeKind::Disconnected { reason } => reason.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts.len(), 2);
        for text in texts {
            assert!(text.len() <= MAX_EVENT_TEXT && text.ends_with(CLIPPED));
        }

        let mut trail = Trail::default();
        trail.push(
            1_000,
            What::Status {
                state: TaskState::Failed,
                detail: status_detail("REASON_COMMAND_EXECUTOR_FAILED", &long),
            },
        );
        let offers = [offer(&long, &long)];
        let decision = Decision {
            task_id: TaskId("sim-1".into()),
            examined: 1,
            rejected: vec![Rejection {
                offer: 0,
                miss: Miss::NodeType,
            }],
            verdict: Verdict::NoFit { largest_mem: None },
        };
        trail.push_round(2_000, &decision, &offers);
        trail.push_round(3_000, &decision, &offers);
        let lines = trail.lines(&spec("lab"));
        assert_eq!(lines.len(), 2, "{lines:?}");
        let status = &lines[0].text;
        assert!(status.starts_with("TASK_FAILED (REASON_COMMAND_EXECUTOR_FAILED): éé"));
        assert!(status.len() <= "TASK_FAILED".len() + MAX_EVENT_TEXT && status.ends_with(CLIPPED));
        let round = &lines[1].text;
        assert!(round.contains("(×2 since"), "{round}");
        assert!(round.len() < 3 * MAX_EVENT_TEXT, "{}", round.len());
    }

    /// Memory per task matters (thousands of tasks): a running task's four
    /// entries take 4 × 48 bytes plus a boxed round and its host name.
    #[test]
    fn the_first_entry_takes_room_for_one() {
        let mut trail = Trail::default();
        trail.push(1, What::Submitted);
        assert_eq!(trail.entries.capacity(), 1, "a pending or restored task");
        trail.push(2, What::Killed(KilledBy::User));
        assert!(trail.entries.capacity() >= 2);
    }

    #[test]
    fn an_entry_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 48);
        assert!(std::mem::size_of::<Trail>() <= 24);
    }

    #[test]
    fn repeats_count_up_and_the_history_is_bounded() {
        let mut trail = Trail::default();
        let round = |examined| {
            What::Round(Box::new(Round {
                offers: 2,
                examined,
                rejected: Box::new([]),
                outcome: Outcome::NoFit,
            }))
        };
        trail.push(1_000, What::Submitted);
        trail.push(2_000, round(1));
        trail.push(3_000, round(1));
        trail.push(4_000, round(1));
        trail.push(5_000, round(2));
        let lines = trail.lines(&spec(""));
        let shown: Vec<(u64, &str, &str)> = lines
            .iter()
            .map(|line| (line.time_ms, line.kind, line.text.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (1_000, "submitted", "submitted"),
                (
                    4_000,
                    "placement",
                    "2 offers, 1 examined: not placed (×3 since 1970-01-01T00:00:02Z)"
                ),
                (5_000, "placement", "2 offers, 2 examined: not placed"),
            ]
        );
        // Kills never coalesce; the oldest entries go first.
        for at in 0..(MAX_HISTORY as u64 + 10) {
            trail.push(10_000 + at, What::Killed(KilledBy::User));
        }
        let lines = trail.lines(&spec(""));
        assert_eq!(lines.len(), MAX_HISTORY);
        assert_eq!(lines[0].time_ms, 10_010);
    }
}
