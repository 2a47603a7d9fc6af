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
//!
//! The kept entries are bounded by `LIST_CACHE_MAX_BYTES` (each charged
//! `entry_weight`, an estimate of its JSON and bookkeeping): a task listed
//! while the cache is full gets an entry built for that list only, which
//! renders the same text (`ListedTask::json` with the same view), so the
//! list is byte for byte the same whichever entries are kept. Which tasks
//! are kept is first come: those listed first while there was room, until
//! they change. With more than `LIST_CACHE_MAX_TASKS` live tasks nothing
//! is kept (the first list past it drops what was): a cache of a part of
//! the table saves that part of each list's work and holds its memory for
//! good, so the list would cost nearly as much with the heap larger.
//!
//! The last list answered is kept whole too (`Memo`), while nothing it
//! shows can have changed, so clients polling the same list (the
//! dashboard, lab scripts, several at once) cost the state thread one
//! `Arc` clone each instead of one per task. It is dropped by every event
//! but the reads (`State::handle_event`), by anything that drops a kept
//! entry (`forget`, `clear`), when an ended task expires, and when a
//! pending task's context changes. It is kept only when every entry of it
//! is a kept entry (or one of the few services and ended tasks), so it
//! never holds what `LIST_CACHE_MAX_BYTES` keeps out. The state tests
//! compare it with a fresh list after each step (`check_list_memo`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;

use super::{internal_prefix, Phase, State, Task};
use crate::scheduler::model::TaskId;
use crate::scheduler::{ListedTask, StateFilter, TaskQuery, TaskView};

/// Bytes of list entries kept between lists (by `entry_weight`): 10,000
/// running tasks (about 9 MB of JSON, 12-14 MiB charged) stay kept whole,
/// so a list of them renders nothing that did not change.
pub const LIST_CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Live tasks at most for the list cache to keep any entry: at 100,000 the
/// first 14% fitted `LIST_CACHE_MAX_BYTES`, which saved 14% of each list's
/// work for 16 MiB of heap held for good (and the settled RSS of
/// `scripts/bench --full` over its 200 MB target). Above this every list
/// builds every entry (a page at a time, `api::pages`).
pub const LIST_CACHE_MAX_TASKS: usize = 12_000;

/// What an entry costs besides the text of its values: the JSON's names,
/// punctuation, numbers and fixed values (about 710 bytes for a running
/// task), and the entry's map slot, key, `Arc` and lock (about 170).
/// `examples/state_memory.rs` prints what the kept entries take.
const ENTRY_FIXED_BYTES: usize = 880;

/// What a task's view depends on besides the task: for a pending task,
/// whether the scheduler is subscribed and since when it is not.
type ViewContext = Option<(bool, Option<u64>)>;

/// The list entries of live tasks that have not changed since they were
/// listed.
#[derive(Debug)]
pub(super) struct ListCache {
    entries: HashMap<TaskId, Kept>,
    /// The last list (or page of one) answered, while it is current.
    memo: Option<Memo>,
    /// The kept entries' weights, summed: at most `max_bytes`.
    bytes: usize,
    /// `LIST_CACHE_MAX_BYTES`, but for tests.
    max_bytes: usize,
    /// `LIST_CACHE_MAX_TASKS`, but for tests.
    max_tasks: usize,
    /// Whether entries are kept: at most `max_tasks` live tasks when the
    /// list being built began (`fit`).
    keeping: bool,
    /// Entries built since `State::take_list_built` last took the count.
    built: usize,
}

/// A list answered, and what it answered: `State::task_slice`'s arguments
/// and result.
#[derive(Debug)]
struct Memo {
    query: TaskQuery,
    after: Option<TaskId>,
    scan: usize,
    listed: Arc<[Arc<ListedTask>]>,
    next: Option<TaskId>,
}

impl Memo {
    fn answers(&self, query: &TaskQuery, after: Option<&TaskId>, scan: usize) -> bool {
        self.query == *query && self.after.as_ref() == after && self.scan == scan
    }
}

#[derive(Debug)]
struct Kept {
    context: ViewContext,
    entry: Arc<ListedTask>,
    /// Its `entry_weight`, given back when it goes.
    weight: usize,
}

impl Default for ListCache {
    fn default() -> ListCache {
        ListCache {
            entries: HashMap::new(),
            memo: None,
            bytes: 0,
            max_bytes: LIST_CACHE_MAX_BYTES,
            max_tasks: LIST_CACHE_MAX_TASKS,
            keeping: true,
            built: 0,
        }
    }
}

impl ListCache {
    /// `task_id` changed: its next list builds its view again.
    pub fn forget(&mut self, task_id: &TaskId) {
        self.memo = None;
        self.drop_entry(task_id);
    }

    /// Drops `task_id`'s kept entry, if any, and its weight.
    fn drop_entry(&mut self, task_id: &TaskId) {
        if let Some(kept) = self.entries.remove(task_id) {
            self.bytes -= kept.weight;
        }
    }

    pub fn clear(&mut self) {
        self.entries = HashMap::new();
        self.memo = None;
        self.bytes = 0;
    }

    /// Something a list shows may have changed: the next list is built.
    pub fn changed(&mut self) {
        self.memo = None;
    }

    /// Keeps at most `max_bytes` of entries from now on.
    #[cfg(test)]
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.clear();
    }

    /// Keeps entries only while at most `max_tasks` tasks are live.
    #[cfg(test)]
    pub fn set_max_tasks(&mut self, max_tasks: usize) {
        self.max_tasks = max_tasks;
        self.memo = None;
    }

    /// A list is built with `live` live tasks: past `max_tasks` nothing is
    /// kept, and what was kept goes.
    fn fit(&mut self, live: usize) {
        self.keeping = live <= self.max_tasks;
        if !self.keeping && !self.entries.is_empty() {
            self.clear();
        }
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry kept for `task_id` in `context`, if any.
    fn get(&self, task_id: &TaskId, context: ViewContext) -> Option<&Arc<ListedTask>> {
        let kept = self.entries.get(task_id)?;
        (kept.context == context).then_some(&kept.entry)
    }

    /// The entry for `view` of `task_id` in `context`: kept when entries
    /// are (`fit`) and there is room for it (true), else built for this
    /// list only (false).
    fn insert(
        &mut self,
        task_id: &TaskId,
        context: ViewContext,
        view: TaskView,
    ) -> (Arc<ListedTask>, bool) {
        // Building an entry changes nothing a list shows: the kept list stays.
        self.drop_entry(task_id);
        self.built += 1;
        let weight = entry_weight(&view);
        let entry = Arc::new(ListedTask::new(view));
        let room = self.keeping && self.bytes + weight <= self.max_bytes;
        if room {
            self.bytes += weight;
            let kept = Kept {
                context,
                entry: entry.clone(),
                weight,
            };
            self.entries.insert(task_id.clone(), kept);
        }
        (entry, room)
    }
}

impl ListedTask {
    /// The entry's JSON as `GET /client/task` lists it (`api::dto::task_json`,
    /// rendered once): what `examples/state_memory.rs` renders.
    pub fn list_json(&self) -> Arc<str> {
        self.json(crate::api::dto::task_json)
    }
}

/// What keeping `view`'s entry costs, about: the text of its values (most
/// are written twice, in the task and in its `TaskInfo`) and
/// `ENTRY_FIXED_BYTES`. Kept entries hold the view until a worker renders
/// it, then only the JSON, which is about as large.
fn entry_weight(view: &TaskView) -> usize {
    let spec = &view.spec;
    let strings: [&str; 7] = [
        &spec.id,
        &spec.docker_image,
        &spec.node_type,
        &spec.node_name,
        &view.internal_id.0,
        view.docker.id(),
        view.docker.name(),
    ];
    let twice: usize = strings.iter().map(|text| text.len()).sum::<usize>()
        + view.agent_id.as_ref().map_or(0, |agent| agent.0.len())
        + spec
            .arguments
            .iter()
            .map(|arg| arg.len() + 3)
            .sum::<usize>()
        + spec
            .volumes
            .iter()
            .map(|volume| volume.host_path.len() + volume.container_path.len() + 64)
            .sum::<usize>()
        + spec.ports.len() * 64;
    let once = view.hostname.as_deref().map_or(0, str::len)
        + view.agent_id.as_ref().map_or(0, |agent| agent.0.len())
        + view.status_message.len()
        + view.pending_reason.as_ref().map_or(0, String::len)
        + view.reason.as_ref().map_or(0, String::len)
        + view.state.len()
        + view
            .intelligence
            .iter()
            .map(|(name, value)| name.len() + value.len() + 6)
            .sum::<usize>()
        + view.requested.node_name.len()
        + view.requested.node_type.len();
    ENTRY_FIXED_BYTES + 2 * twice + once
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
    /// The entries `query` asks for, in list order, at most `query.limit`
    /// (the state tests' list; `on_api` reads `task_slice` as this does).
    #[cfg(test)]
    pub(super) fn task_list(&mut self, query: &TaskQuery) -> Arc<[Arc<ListedTask>]> {
        self.task_slice(query, None, usize::MAX).0
    }

    /// A slice of the list `query` asks for: the live tasks after `after`,
    /// at most `scan` of them examined; then, if the live tasks ended within
    /// it, the services and the ended tasks. Returns the entries and, when
    /// live tasks may follow, the last one examined, where the next slice
    /// starts. Slices read one after the other list each live task once, as
    /// it was when its slice was read. The same slice asked again while
    /// nothing changed is the same answer (`Memo`).
    pub(super) fn task_slice(
        &mut self,
        query: &TaskQuery,
        after: Option<&TaskId>,
        scan: usize,
    ) -> (Arc<[Arc<ListedTask>]>, Option<TaskId>) {
        if let Some(memo) =
            (self.list_cache.memo.as_ref()).filter(|m| m.answers(query, after, scan))
        {
            return (memo.listed.clone(), memo.next.clone());
        }
        let (listed, next, all_kept) = self.build_slice(query, after, scan);
        let listed: Arc<[Arc<ListedTask>]> = listed.into();
        if all_kept {
            self.list_cache.memo = Some(Memo {
                query: query.clone(),
                after: after.cloned(),
                scan,
                listed: listed.clone(),
                next: next.clone(),
            });
        }
        (listed, next)
    }

    /// `task_slice` built afresh, and whether every live entry of it is kept.
    fn build_slice(
        &mut self,
        query: &TaskQuery,
        after: Option<&TaskId>,
        scan: usize,
    ) -> (Vec<Arc<ListedTask>>, Option<TaskId>, bool) {
        self.list_cache.fit(self.tasks.len());
        let limit = query.limit.unwrap_or(usize::MAX);
        let prefix = query.prefix.as_deref().unwrap_or("");
        let filter = query.state;
        // The walk takes at most `scan` tasks and peeks at one more.
        let wanted = scan.saturating_add(1);
        let mut walk =
            live_matching(&self.tasks, &self.instances, prefix, after, wanted).peekable();
        let mut live: Vec<(&TaskId, &Task)> = Vec::new();
        // The last live task examined, and whether live tasks follow it.
        let mut last = None;
        let mut more = false;
        let mut examined = 0;
        while live.len() < limit {
            if examined == scan {
                more = walk.peek().is_some();
                break;
            }
            let Some((task_id, task)) = walk.next() else {
                break;
            };
            examined += 1;
            last = Some(task_id);
            if filter.lets_live(task.phase) {
                live.push((task_id, task));
            }
        }
        drop(walk);
        // Reaching the limit ends the list too.
        let next = (more && live.len() < limit)
            .then(|| last.or(after).cloned())
            .flatten();
        let live_ended = next.is_none();
        let mut listed = Vec::with_capacity(live.len());
        let mut all_kept = true;
        for (task_id, task) in live {
            let context = self.view_context(task);
            match self.list_cache.get(task_id, context) {
                Some(entry) => listed.push(entry.clone()),
                None => {
                    let view = self.view(task_id);
                    let (entry, kept) = self.list_cache.insert(task_id, context, view);
                    all_kept &= kept;
                    listed.push(entry);
                }
            }
        }
        if !live_ended {
            return (listed, next, all_kept);
        }
        let live_listed = listed.len();
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
                .filter(|view| filter.lets_ended(view.state))
                .filter(|view| matches_prefix(prefix, &view.internal_id.0, &view.spec.id))
                .map(|view| Arc::new(ListedTask::new(view.clone())));
            listed.extend(ended.take(limit - listed.len()));
        }
        // Services and ended tasks are built at every list.
        self.list_cache.built += listed.len() - live_listed;
        (listed, None, all_kept)
    }

    /// List entries built since the last call (kept or not; a list of kept
    /// entries builds none): `scheduler::run` counts them towards a large
    /// turn, as their rendering is what a trim gives back.
    pub(crate) fn take_list_built(&mut self) -> usize {
        std::mem::take(&mut self.list_cache.built)
    }

    /// The kept list, if any, is what building it afresh gives: the same
    /// entries (the same kept ones, or equal views), in the same order,
    /// and the same next page.
    #[cfg(test)]
    pub(super) fn check_list_memo(&mut self) -> Result<(), String> {
        let Some(memo) = self.list_cache.memo.take() else {
            return Ok(());
        };
        let (fresh, next, _) = self.build_slice(&memo.query, memo.after.as_ref(), memo.scan);
        let same = |kept: &Arc<ListedTask>, fresh: &Arc<ListedTask>| {
            Arc::ptr_eq(kept, fresh)
                || match (kept.view(), fresh.view()) {
                    (Some(kept), Some(fresh)) => kept == fresh,
                    _ => kept.list_json() == fresh.list_json(),
                }
        };
        let current = fresh.len() == memo.listed.len()
            && next == memo.next
            && memo.listed.iter().zip(&fresh).all(|(a, b)| same(a, b));
        if !current {
            return Err(format!(
                "the kept list of {:?} is stale: {} entries (next {:?}) kept, {} (next {:?}) fresh",
                memo.query,
                memo.listed.len(),
                memo.next,
                fresh.len(),
                next
            ));
        }
        self.list_cache.memo = Some(memo);
        Ok(())
    }

    /// What `task`'s view depends on outside the task.
    fn view_context(&self, task: &Task) -> ViewContext {
        (task.phase == Phase::Pending).then_some((self.subscribed, self.disconnected_since))
    }

    /// Every kept entry still current (same context) that has not been
    /// rendered yet shows what a fresh view shows.
    #[cfg(test)]
    pub(super) fn check_list_cache(&self) -> Result<(), String> {
        let cache = &self.list_cache;
        let weights: usize = cache.entries.values().map(|kept| kept.weight).sum();
        if weights != cache.bytes || cache.bytes > cache.max_bytes {
            return Err(format!(
                "list cache charged {} bytes for entries of {weights} (bound {})",
                cache.bytes, cache.max_bytes
            ));
        }
        for (task_id, kept) in &cache.entries {
            let Some(task) = self.tasks.get(task_id) else {
                return Err(format!("list entry kept for {} which is gone", task_id.0));
            };
            if kept.context != self.view_context(task) {
                continue;
            }
            if let Some(view) = kept.entry.view().filter(|view| *view != self.view(task_id)) {
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

/// Live tasks whose internal id starts with `prefix`, by id, after `after`;
/// with a space in `prefix` (which internal ids drop), those whose user id
/// does, at most `wanted` of them: they are gathered by user id and sorted,
/// and only the first `wanted` by id are, so a long list read a page at a
/// time sorts a page's worth per page, not every match.
fn live_matching<'a>(
    tasks: &'a BTreeMap<TaskId, Box<Task>>,
    instances: &'a super::instances::Instances,
    prefix: &'a str,
    after: Option<&'a TaskId>,
    wanted: usize,
) -> Box<dyn Iterator<Item = (&'a TaskId, &'a Task)> + 'a> {
    if prefix.contains(' ') {
        let mut ids: Vec<&TaskId> = instances
            .with_prefix(prefix)
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        if ids.len() > wanted {
            ids.select_nth_unstable(wanted);
            ids.truncate(wanted);
        }
        ids.sort_unstable();
        return Box::new(
            ids.into_iter()
                .filter_map(|id| Some((id, &**tasks.get(id)?))),
        );
    }
    let start = TaskId(prefix.into());
    let range = match after {
        Some(after) if *after >= start => tasks.range((Excluded(after), Unbounded)),
        _ => tasks.range((Included(&start), Unbounded)),
    };
    let tasks = range.map(|(id, task)| (id, &**task));
    if prefix.is_empty() {
        // Every id matches: reading each id only to check would cost a
        // cache miss per task in a long list.
        return Box::new(tasks);
    }
    Box::new(tasks.take_while(move |(id, _)| id.0.starts_with(prefix)))
}

/// `prefix` matches an entry by its internal id, or (with a space in it)
/// by its user id, as for live tasks.
fn matches_prefix(prefix: &str, internal_id: &str, user_id: &str) -> bool {
    internal_id.starts_with(prefix) || (prefix.contains(' ') && user_id.starts_with(prefix))
}
