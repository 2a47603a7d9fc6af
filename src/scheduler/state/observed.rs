//! What the metrics read from `State` (`GET /metrics`): live tasks by the
//! state they show, and the submit-to-RUNNING latencies of the last turn.
//! Nothing here changes a task.

use std::time::Duration;

use crate::scheduler::model::TaskState;
use crate::scheduler::state::{Phase, State};

impl State {
    /// Live tasks (`State::tasks`, not the ended ones listed as history) by
    /// the state they show: "pending", "launching", then every Mesos state
    /// in `TaskState::ALL` order, zeros included, so a gauge that drops to
    /// zero says so instead of vanishing.
    pub(crate) fn task_counts(&self) -> Vec<(&'static str, u64)> {
        // From the per-phase counts of the indexes: no scan of the table.
        let count = |phase| self.index.phase_count(phase) as u64;
        let mut counts = vec![
            ("pending", count(Phase::Pending)),
            ("launching", count(Phase::Launching)),
        ];
        counts.extend(
            TaskState::ALL
                .iter()
                .map(|state| (state.as_str(), count(Phase::Active(*state)))),
        );
        counts
    }

    /// The time from acceptance to the first TASK_RUNNING of each task that
    /// reached it since the last call; `scheduler::run` takes them after
    /// every turn. Tasks restored from disk have no acceptance time and
    /// report nothing.
    pub(crate) fn take_start_latencies(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.start_latencies)
    }
}
