//! `GET /client/task`: which tasks a query lists, in list order, built
//! only for the tasks it lets through.
//!
//! List order: live tasks by internal id, one-per-node services without a
//! copy (so a service is never invisible), then the ended tasks still kept,
//! oldest end first. `?prefix=` reads the table from the prefix on (a
//! `BTreeMap` range), and `?limit=` stops the walk, so a list narrowed by
//! those costs what it returns, not what the table holds; `?state=` is
//! judged task by task along the walk, so a list filtered by state alone
//! still walks the live table.
//!
//! Each live task's entry (`ListedTask`) is kept in `ListCache` until the
//! task changes: `State::reindex` (every change of a task goes through it),
//! the pending reasons (`explain_queued`) and `rebuild_indexes` drop it. A
//! pending task's view also depends on whether the scheduler is connected,
//! so its entry is kept with that and built again when it differs. The
//! state tests compare every kept view with a fresh one after each step
//! (`check_indexes`). Ended tasks and services without a copy are few
//! (`MAX_ENDED_TASKS`) and built at each list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{internal_prefix, Phase, State, Task};
use crate::scheduler::model::TaskId;
use crate::scheduler::{ListedTask, StateFilter, TaskQuery};

/// What a task's view depends on besides the task: for a pending task,
/// whether the scheduler is subscribed and since when it is not.
type ViewContext = Option<(bool, Option<u64>)>;

/// The list entries of live tasks that have not changed since they were
/// listed.
#[derive(Debug, Default)]
pub(super) struct ListCache {
    entries: HashMap<TaskId, (ViewContext, Arc<ListedTask>)>,
}

impl ListCache {
    /// `task_id` changed: its next list builds its view again.
    pub fn forget(&mut self, task_id: &TaskId) {
        self.entries.remove(task_id);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

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
    /// The entries `query` asks for, in list order, at most `query.limit`.
    pub(super) fn task_list(&mut self, query: &TaskQuery) -> Vec<Arc<ListedTask>> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let prefix = query.prefix.as_deref().unwrap_or("");
        let filter = query.state;
        let live: Vec<(&TaskId, &Task)> = live_matching(&self.tasks, &self.instances, prefix)
            .filter(|(_, task)| filter.lets_live(task.phase))
            .take(limit)
            .collect();
        let mut listed = Vec::with_capacity(live.len());
        for (task_id, task) in live {
            let context = self.view_context(task);
            let kept = self.list_cache.entries.get(task_id);
            match kept.filter(|(kept_context, _)| *kept_context == context) {
                Some((_, entry)) => listed.push(entry.clone()),
                None => {
                    let entry = Arc::new(ListedTask::new(self.view(task_id)));
                    self.list_cache
                        .entries
                        .insert(task_id.clone(), (context, entry.clone()));
                    listed.push(entry);
                }
            }
        }
        if listed.len() < limit && filter.lets_services() {
            let services = self
                .services
                .keys()
                .filter(|id| matches_prefix(prefix, &internal_prefix(id), id))
                .filter_map(|id| self.service_view(id))
                .map(|view| Arc::new(ListedTask::new(view)));
            listed.extend(services.take(limit - listed.len()));
        }
        if listed.len() < limit {
            let ended = self
                .ended
                .iter()
                .map(|ended| &ended.view)
                .filter(|view| filter.lets_ended(&view.state))
                .filter(|view| matches_prefix(prefix, &view.internal_id.0, &view.spec.id))
                .map(|view| Arc::new(ListedTask::new(view.clone())));
            listed.extend(ended.take(limit - listed.len()));
        }
        listed
    }

    /// What `task`'s view depends on outside the task.
    fn view_context(&self, task: &Task) -> ViewContext {
        (task.phase == Phase::Pending).then_some((self.subscribed, self.disconnected_since))
    }

    /// Every kept entry still current (same context) that has not been
    /// rendered yet shows what a fresh view shows.
    #[cfg(test)]
    pub(super) fn check_list_cache(&self) -> Result<(), String> {
        for (task_id, (context, entry)) in &self.list_cache.entries {
            let Some(task) = self.tasks.get(task_id) else {
                return Err(format!("list entry kept for {} which is gone", task_id.0));
            };
            if *context != self.view_context(task) {
                continue;
            }
            if let Some(view) = entry.view().filter(|view| *view != self.view(task_id)) {
                return Err(format!(
                    "stale list entry for {}:\n kept: {view:?}\n fresh: {:?}",
                    task_id.0,
                    self.view(task_id)
                ));
            }
        }
        Ok(())
    }
}

/// Live tasks whose internal id starts with `prefix`, by id; with a space
/// in `prefix` (which internal ids drop), those whose user id does.
fn live_matching<'a>(
    tasks: &'a BTreeMap<TaskId, Task>,
    instances: &'a BTreeMap<String, BTreeSet<TaskId>>,
    prefix: &'a str,
) -> Box<dyn Iterator<Item = (&'a TaskId, &'a Task)> + 'a> {
    if prefix.contains(' ') {
        let mut ids: Vec<&TaskId> = instances
            .range(prefix.to_string()..)
            .take_while(|(user_id, _)| user_id.starts_with(prefix))
            .flat_map(|(_, live)| live.iter())
            .collect();
        ids.sort();
        return Box::new(ids.into_iter().filter_map(|id| Some((id, tasks.get(id)?))));
    }
    Box::new(
        tasks
            .range(TaskId(prefix.to_string())..)
            .take_while(move |(id, _)| id.0.starts_with(prefix)),
    )
}

/// `prefix` matches an entry by its internal id, or (with a space in it)
/// by its user id, as for live tasks.
fn matches_prefix(prefix: &str, internal_id: &str, user_id: &str) -> bool {
    internal_id.starts_with(prefix) || (prefix.contains(' ') && user_id.starts_with(prefix))
}
