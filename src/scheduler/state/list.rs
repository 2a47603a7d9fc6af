//! `GET /client/task`: which tasks a query lists, in list order, built
//! only for the tasks it lets through.
//!
//! List order: live tasks by internal id, one-per-node services without a
//! copy (so a service is never invisible), then the ended tasks still kept,
//! oldest end first. `?prefix=` reads the table from the prefix on (a
//! `BTreeMap` range), and `?limit=` stops the walk, so a filtered list
//! costs what it returns, not what the table holds.

use super::{internal_prefix, Phase, State, Task};
use crate::scheduler::model::TaskId;
use crate::scheduler::{StateFilter, TaskQuery, TaskView};

impl StateFilter {
    /// A live task in `phase` is listed.
    fn lets_live(self, phase: Phase) -> bool {
        match self {
            StateFilter::All | StateFilter::Active => true,
            StateFilter::Pending => phase == Phase::Pending,
            StateFilter::Launching => phase == Phase::Launching,
            StateFilter::Mesos(state) => phase == Phase::Active(state),
        }
    }

    /// A service without a copy (listed as pending) is listed.
    fn lets_services(self) -> bool {
        matches!(
            self,
            StateFilter::All | StateFilter::Active | StateFilter::Pending
        )
    }

    /// An ended task whose view says `state` is listed.
    fn lets_ended(self, state: &str) -> bool {
        match self {
            StateFilter::All => true,
            StateFilter::Mesos(wanted) => wanted.as_str() == state,
            StateFilter::Active | StateFilter::Pending | StateFilter::Launching => false,
        }
    }
}

impl State {
    /// The views `query` asks for, in list order, at most `query.limit`.
    pub(super) fn task_list(&self, query: &TaskQuery) -> Vec<TaskView> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let prefix = query.prefix.as_deref().unwrap_or("");
        let filter = query.state;
        let mut views: Vec<TaskView> = self
            .live_matching(prefix)
            .filter(|(_, task)| filter.lets_live(task.phase))
            .take(limit)
            .map(|(task_id, _)| self.view(task_id))
            .collect();
        if views.len() < limit && filter.lets_services() {
            let services = self
                .services
                .keys()
                .filter(|id| matches_prefix(prefix, &internal_prefix(id), id))
                .filter_map(|id| self.service_view(id));
            views.extend(services.take(limit - views.len()));
        }
        if views.len() < limit {
            let ended = self
                .ended
                .iter()
                .map(|ended| &ended.view)
                .filter(|view| filter.lets_ended(&view.state))
                .filter(|view| matches_prefix(prefix, &view.internal_id.0, &view.spec.id))
                .cloned();
            views.extend(ended.take(limit - views.len()));
        }
        views
    }

    /// Live tasks whose internal id starts with `prefix`, by id; with a
    /// space in `prefix` (which internal ids drop), those whose user id does.
    fn live_matching<'a>(
        &'a self,
        prefix: &'a str,
    ) -> Box<dyn Iterator<Item = (&'a TaskId, &'a Task)> + 'a> {
        if prefix.contains(' ') {
            let mut ids: Vec<&TaskId> = self
                .instances
                .range(prefix.to_string()..)
                .take_while(|(user_id, _)| user_id.starts_with(prefix))
                .flat_map(|(_, live)| live.iter())
                .collect();
            ids.sort();
            return Box::new(
                ids.into_iter()
                    .filter_map(|id| Some((id, self.tasks.get(id)?))),
            );
        }
        Box::new(
            self.tasks
                .range(TaskId(prefix.to_string())..)
                .take_while(move |(id, _)| id.0.starts_with(prefix)),
        )
    }
}

/// `prefix` matches an entry by its internal id, or (with a space in it)
/// by its user id, as for live tasks.
fn matches_prefix(prefix: &str, internal_id: &str, user_id: &str) -> bool {
    internal_id.starts_with(prefix) || (prefix.contains(' ') && user_id.starts_with(prefix))
}
