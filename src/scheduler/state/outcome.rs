//! `update_outcome`: what one status update means for a known task. Pure:
//! the task, the update and two facts from the state in, an `Outcome` out;
//! `State::on_update` acts on it in one `match`. Table-tested in
//! `state::tests::update_outcomes`.

use std::time::{Duration, Instant};

use super::{Phase, Task, STABLE_RUN};
use crate::scheduler::model::{AgentId, StatusReason, TaskState, TaskUpdate};

/// What a status update means for a known task; `update_outcome` decides,
/// `State::on_update` acts.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Outcome {
    /// A reconciliation answer about a task already back to pending: it
    /// must not move the task backwards.
    Stale,
    /// Not terminal: the task is in this state now.
    Progress(TaskState),
    /// TASK_UNKNOWN for a task that ran, within the grace: the master may
    /// not have heard from its agent yet. Ask again; relaunch only if it
    /// stays unknown past the grace.
    Unconfirmed,
    /// The master never ran this launch, or lost it without the user's
    /// doing: run it again. `agent_unknown`: the master knows neither the
    /// task nor its agent.
    Relaunch { agent_unknown: bool },
    /// Ended; the restart policy runs it again (restart number `restarts`).
    Restart { restarts: u32 },
    /// A one-per-node copy ended while its node is gone: it comes back
    /// with the node (a fresh copy), not before.
    DropForGoneNode(AgentId),
    /// Ended for good.
    Remove,
}

/// Classifies `update` for `task`. `pinned_node_gone`: the task is a
/// one-per-node copy whose node is no longer in the registry (after offers
/// have surveyed the cluster). `unknown_grace`: how long a task that ran
/// may stay TASK_UNKNOWN before it is relaunched. Pure.
pub(super) fn update_outcome(
    update: &TaskUpdate,
    task: &Task,
    pinned_node_gone: bool,
    unknown_grace: Duration,
    now: Instant,
) -> Outcome {
    // TASK_UNKNOWN (PARTITION_AWARE): the master knows neither the task
    // nor its agent, e.g. after the whole cluster restarted.
    let agent_unknown = update.state == TaskState::Unknown
        || (update.state == TaskState::GoneByOperator
            && update.reason == StatusReason::Reconciliation);
    if !update.state.is_terminal() && !agent_unknown {
        if update.reason == StatusReason::Reconciliation && task.phase == Phase::Pending {
            return Outcome::Stale;
        }
        return Outcome::Progress(update.state);
    }
    // The master never ran this launch (invalid offers, or it does not
    // know the task although no agent ever reported it), or a
    // reconciliation finds it lost (after a restart or a master failover):
    // not the user's doing either.
    let never_started = matches!(task.phase, Phase::Launching | Phase::Pending);
    let launch_lost = matches!(
        update.state,
        TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::Unknown
            | TaskState::GoneByOperator
    ) && (update.reason == StatusReason::InvalidOffers
        || update.reason == StatusReason::Reconciliation
        || never_started);
    if task.is_kill_requested() {
        return Outcome::Remove;
    }
    // A master restarted with an in-memory registry answers TASK_UNKNOWN
    // for every task until their agents re-register, while the tasks run
    // on. Relaunching at once would run each of them twice (issue 8): wait
    // for the agent. DROPPED, GONE and GONE_BY_OPERATOR are certain.
    if update.state == TaskState::Unknown && !never_started {
        let waited = (task.rare().unknown_since)
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if waited < unknown_grace {
            return Outcome::Unconfirmed;
        }
    }
    if launch_lost {
        return Outcome::Relaunch { agent_unknown };
    }
    // A copy whose node is gone ends with it, whatever its policy: the
    // node gets a fresh copy if it comes back.
    if let (Some(agent), true) = (&task.rare().pinned_agent, pinned_node_gone) {
        return Outcome::DropForGoneNode(agent.clone());
    }
    if !task.requested().restart.restarts_after(update.state) {
        return Outcome::Remove;
    }
    let stable = task
        .running_since
        .is_some_and(|since| now.saturating_duration_since(since) >= STABLE_RUN);
    Outcome::Restart {
        restarts: if stable { 1 } else { task.rare().restarts + 1 },
    }
}
