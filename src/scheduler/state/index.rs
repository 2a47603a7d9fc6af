//! Indexes over `State::tasks`, so that no event has to scan the table.
//!
//! Each index is a function of the tasks (and of the state's clock, for
//! restart backoffs): how many tasks are pending, the pending tasks that
//! may be placed now in submission order, counts per phase, tasks by agent,
//! the successors waiting on each predecessor, and two deadline queues
//! (restart backoffs, and kill resends: every task with a kill
//! outstanding).
//!
//! `Indexes` keeps what it last indexed of each task (`Facts`), so updating
//! one task is removing its old facts and adding its new ones: O(log n),
//! whatever changed. `State` funnels every change of an indexed field
//! through `State::reindex` (see `insert_task`, `take_task`,
//! `update_task`); the state tests recompute the indexes from `tasks` after
//! every step and compare (`State::check_indexes`), so a missed update
//! fails a test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::{Phase, State, Task, KILL_RETRY};
use crate::scheduler::model::{AgentId, TaskId};

/// Where a task's restart backoff stands at the index's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backoff {
    /// No backoff, or it is over.
    Over,
    /// Ends at this instant.
    Until(Instant),
    /// Restored from disk and not re-derived yet: not placeable.
    Restored,
}

/// What the indexes know of one task: 48 bytes for most, what few tasks
/// have boxed apart (`Rare`), since every task has one in a map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Facts {
    pub seq: u64,
    pub phase: Phase,
    pub kill_requested: bool,
    /// `rare.waits_for` names a task still in the table.
    pub predecessor_live: bool,
    pub agent_id: Option<AgentId>,
    /// `None` when every field of it would be empty.
    rare: Option<Box<Rare>>,
}

/// The facts few tasks have: a kill sent, a pinned agent, a predecessor,
/// a restart backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rare {
    kill_sent_at: Option<Instant>,
    pinned_agent: Option<AgentId>,
    waits_for: Option<TaskId>,
    backoff: Backoff,
}

impl Rare {
    const NONE: Rare = Rare {
        kill_sent_at: None,
        pinned_agent: None,
        waits_for: None,
        backoff: Backoff::Over,
    };
}

impl Facts {
    /// The facts of `task` at `clock`; `live` says whether a task id is in
    /// the table (for its predecessor).
    pub fn of(task: &Task, clock: Option<Instant>, live: impl Fn(&TaskId) -> bool) -> Facts {
        let backoff = match (task.rare().backoff, task.rare().not_before) {
            (None, _) => Backoff::Over,
            (Some(_), None) => Backoff::Restored,
            (Some(_), Some(at)) if clock.is_some_and(|now| now >= at) => Backoff::Over,
            (Some(_), Some(at)) => Backoff::Until(at),
        };
        let rare = Rare {
            kill_sent_at: task.rare().kill_sent_at,
            pinned_agent: task.rare().pinned_agent.clone(),
            waits_for: task.rare().waits_for.clone(),
            backoff,
        };
        Facts {
            seq: task.seq,
            phase: task.phase,
            kill_requested: task.kill_requested,
            predecessor_live: task.rare().waits_for.as_ref().is_some_and(live),
            agent_id: task.agent_id.clone(),
            rare: (rare != Rare::NONE).then(|| Box::new(rare)),
        }
    }

    fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&Rare::NONE)
    }

    fn backoff(&self) -> Backoff {
        self.rare().backoff
    }

    fn waits_for(&self) -> Option<&TaskId> {
        self.rare().waits_for.as_ref()
    }

    /// When a kill resend is due: `KILL_RETRY` after the last send, at
    /// once (`None`, sorting first) if never sent by this process.
    fn kill_due(&self) -> Option<Instant> {
        self.rare().kill_sent_at.map(|sent| sent + KILL_RETRY)
    }

    /// Waiting for an offer, placeable now or not (what `pending_count` counts).
    fn wants_offer(&self) -> bool {
        self.phase == Phase::Pending && !self.kill_requested
    }

    /// May be handed to placement now: pending, not killed, past its
    /// backoff, and not waiting for a predecessor.
    fn placeable(&self) -> bool {
        self.wants_offer() && self.backoff() == Backoff::Over && !self.predecessor_live
    }

    /// Launched and killed: the kill is resent until a terminal answer.
    fn killing(&self) -> bool {
        self.kill_requested && self.phase != Phase::Pending
    }

    fn agents(&self) -> impl Iterator<Item = &AgentId> {
        let pinned = self
            .rare()
            .pinned_agent
            .as_ref()
            .filter(|pinned| self.agent_id.as_ref() != Some(*pinned));
        self.agent_id.iter().chain(pinned)
    }
}

/// The indexes; see the module comment. Equal to what `build` makes from
/// the tasks at the same clock (`PartialEq` compares every index).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Indexes {
    facts: HashMap<TaskId, Facts>,
    /// How many tasks are pending and not killed (`Facts::wants_offer`).
    pending: usize,
    /// The placeable subset of those, by (seq, id): submission order.
    ready: BTreeSet<(u64, TaskId)>,
    /// Tasks per phase (no zero counts).
    phases: BTreeMap<Phase, usize>,
    /// Tasks per agent, by the agent they run on and the one they are pinned to.
    by_agent: BTreeMap<AgentId, BTreeSet<TaskId>>,
    /// Predecessor → the tasks whose `waits_for` names it.
    successors: BTreeMap<TaskId, BTreeSet<TaskId>>,
    /// Restart backoffs of pending tasks, by the instant they end.
    backoff_timers: BTreeSet<(Instant, TaskId)>,
    /// Launched tasks with a kill outstanding (`Facts::killing`), by when
    /// their kill is to be sent again (`None`: never sent by this process,
    /// due at once; it sorts first).
    kill_timers: BTreeSet<(Option<Instant>, TaskId)>,
}

impl Indexes {
    /// The indexes of `tasks`, from scratch.
    pub fn build<'a>(
        tasks: impl ExactSizeIterator<Item = (&'a TaskId, &'a Task)>,
        clock: Option<Instant>,
        live: impl Fn(&TaskId) -> bool,
    ) -> Indexes {
        let mut indexes = Indexes {
            facts: HashMap::with_capacity(tasks.len()),
            ..Indexes::default()
        };
        // Each id once (they come from a map): nothing indexed to replace.
        for (id, task) in tasks {
            let facts = Facts::of(task, clock, &live);
            indexes.index(id, &facts);
            indexes.facts.insert(id.clone(), facts);
        }
        indexes
    }

    /// Replaces what is indexed of `id` with `facts` (`None`: the task is gone).
    pub fn set(&mut self, id: &TaskId, facts: Option<Facts>) {
        if self.facts.get(id) == facts.as_ref() {
            return;
        }
        if let Some(old) = self.facts.remove(id) {
            self.unindex(id, &old);
        }
        if let Some(new) = facts {
            self.index(id, &new);
            self.facts.insert(id.clone(), new);
        }
    }

    fn index(&mut self, id: &TaskId, facts: &Facts) {
        if facts.wants_offer() {
            self.pending += 1;
            if let Backoff::Until(at) = facts.backoff() {
                self.backoff_timers.insert((at, id.clone()));
            }
        }
        if facts.placeable() {
            self.ready.insert((facts.seq, id.clone()));
        }
        *self.phases.entry(facts.phase).or_default() += 1;
        for agent in facts.agents() {
            self.by_agent
                .entry(agent.clone())
                .or_default()
                .insert(id.clone());
        }
        if facts.killing() {
            self.kill_timers.insert((facts.kill_due(), id.clone()));
        }
        if let Some(predecessor) = facts.waits_for() {
            self.successors
                .entry(predecessor.clone())
                .or_default()
                .insert(id.clone());
        }
    }

    fn unindex(&mut self, id: &TaskId, facts: &Facts) {
        if facts.wants_offer() {
            self.pending -= 1;
            if let Backoff::Until(at) = facts.backoff() {
                self.backoff_timers.remove(&(at, id.clone()));
            }
        }
        self.ready.remove(&(facts.seq, id.clone()));
        if let Some(count) = self.phases.get_mut(&facts.phase) {
            *count -= 1;
            if *count == 0 {
                self.phases.remove(&facts.phase);
            }
        }
        for agent in facts.agents() {
            remove_from(&mut self.by_agent, agent, id);
        }
        if facts.killing() {
            self.kill_timers.remove(&(facts.kill_due(), id.clone()));
        }
        if let Some(predecessor) = facts.waits_for() {
            remove_from(&mut self.successors, predecessor, id);
        }
    }

    /// Whether `id` is indexed (is in the table).
    pub fn contains(&self, id: &TaskId) -> bool {
        self.facts.contains_key(id)
    }

    /// Pending tasks that want an offer, placeable now or not.
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// The placeable tasks, oldest first.
    pub fn ready(&self) -> impl Iterator<Item = &TaskId> {
        self.ready.iter().map(|(_, id)| id)
    }

    /// Tasks in `phase`.
    pub fn phase_count(&self, phase: Phase) -> usize {
        self.phases.get(&phase).copied().unwrap_or(0)
    }

    /// Tasks that run on or are pinned to `agent`.
    pub fn on_agent(&self, agent: &AgentId) -> impl Iterator<Item = &TaskId> {
        self.by_agent.get(agent).into_iter().flatten()
    }

    /// Launched tasks with a kill outstanding, by id (read off the kill
    /// timers, which hold exactly those tasks; only a subscription asks).
    pub fn killing(&self) -> impl Iterator<Item = &TaskId> {
        let mut killing: Vec<&TaskId> = self.kill_timers.iter().map(|(_, id)| id).collect();
        killing.sort_unstable();
        killing.into_iter()
    }

    /// Tasks whose `waits_for` names `predecessor`.
    pub fn successors(&self, predecessor: &TaskId) -> Vec<TaskId> {
        self.successors
            .get(predecessor)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Pending tasks whose restart backoff ends at or before `now`.
    pub fn backoffs_due(&self, now: Instant) -> Vec<TaskId> {
        self.backoff_timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Killed tasks whose kill is due to be sent (again) at `now`.
    pub fn kills_due(&self, now: Instant) -> Vec<TaskId> {
        self.kill_timers
            .iter()
            .take_while(|(due, _)| due.is_none_or(|due| due <= now))
            .map(|(_, id)| id.clone())
            .collect()
    }
}

fn remove_from<K: Ord>(map: &mut BTreeMap<K, BTreeSet<TaskId>>, key: &K, id: &TaskId) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl State {
    /// Indexes `task_id` as it is now in the table (or drops it when gone);
    /// when it appeared or vanished, its successors are indexed again (a
    /// predecessor's presence blocks them). A task that is gone or back to
    /// pending no longer waits for a reconciliation answer.
    pub(super) fn reindex(&mut self, task_id: &TaskId) {
        let was_live = self.index.contains(task_id);
        let facts = self.facts_of(task_id);
        let is_live = facts.is_some();
        let answered = facts
            .as_ref()
            .is_none_or(|facts| facts.phase == Phase::Pending);
        self.index.set(task_id, facts);
        self.list_cache.forget(task_id);
        if answered {
            if let Some(round) = &mut self.reconcile_round {
                round.unanswered.remove(task_id);
            }
        }
        if was_live != is_live {
            // Their pending reason names the predecessor while it is there.
            for successor in self.index.successors(task_id) {
                let facts = self.facts_of(&successor);
                self.index.set(&successor, facts);
                self.list_cache.forget(&successor);
            }
        }
    }

    fn facts_of(&self, task_id: &TaskId) -> Option<Facts> {
        let task = self.tasks.get(task_id)?;
        Some(Facts::of(task, self.clock, |id| {
            self.tasks.contains_key(id)
        }))
    }

    /// Puts `task` into the table under `task_id`, indexed.
    pub(super) fn insert_task(&mut self, task_id: TaskId, task: Task) {
        self.tasks.insert(task_id.clone(), Box::new(task));
        self.reindex(&task_id);
    }

    /// Takes `task_id` out of the table and the indexes.
    pub(super) fn take_task(&mut self, task_id: &TaskId) -> Option<Task> {
        let task = self.tasks.remove(task_id);
        self.reindex(task_id);
        task.map(|task| *task)
    }

    /// Changes one task and indexes it again: the way to change a field the
    /// indexes read (phase, kill, agent, waits_for, seq, backoff).
    pub(super) fn update_task<R>(
        &mut self,
        task_id: &TaskId,
        change: impl FnOnce(&mut Task) -> R,
    ) -> Option<R> {
        let result = change(self.tasks.get_mut(task_id)?);
        self.reindex(task_id);
        Some(result)
    }

    /// Builds every index from the table: after a restore, a reset, or a
    /// change of the whole table.
    pub(super) fn rebuild_indexes(&mut self) {
        let tasks = self.tasks.iter().map(|(id, task)| (id, &**task));
        self.index = Indexes::build(tasks, self.clock, |id| self.tasks.contains_key(id));
        self.list_cache.clear();
        if let Some(round) = &mut self.reconcile_round {
            let tasks = &self.tasks;
            round.unanswered.retain(|id| {
                tasks
                    .get(id)
                    .is_some_and(|task| task.phase != Phase::Pending)
            });
        }
    }

    /// The state's clock moves to `now`: restart backoffs that ended make
    /// their tasks placeable. Only the due timers are touched.
    pub(super) fn advance_clock(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |clock| clock.max(now)));
        for task_id in self.index.backoffs_due(now) {
            self.reindex(&task_id);
        }
    }

    /// Every index equals what recomputing it from `tasks` gives, and the
    /// reconciliation round waits only for launched tasks still known.
    #[cfg(test)]
    pub(super) fn check_indexes(&self) -> Result<(), String> {
        let tasks = self.tasks.iter().map(|(id, task)| (id, &**task));
        let fresh = Indexes::build(tasks, self.clock, |id| self.tasks.contains_key(id));
        if fresh != self.index {
            return Err(format!(
                "indexes differ from the table\n kept: {:?}\n fresh: {fresh:?}",
                self.index
            ));
        }
        if let Some(round) = &self.reconcile_round {
            for id in &round.unanswered {
                if self
                    .tasks
                    .get(id)
                    .is_none_or(|task| task.phase == Phase::Pending)
                {
                    return Err(format!("round waits for {} which cannot answer", id.0));
                }
            }
        }
        self.check_list_cache()
    }
}

#[cfg(test)]
mod tests;
