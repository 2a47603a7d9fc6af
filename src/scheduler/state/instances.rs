//! The live instances of each user id (`singleton`, one-per-node copies,
//! `?prefix=` with a space). Most user ids have one live task: it is held
//! inline (`Live::One`), where a set of one would cost a B-tree leaf (about
//! 200 bytes, 20 MB at 100,000 tasks with their own ids).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use crate::scheduler::model::TaskId;

#[derive(Debug, Default)]
pub(super) struct Instances {
    by_user: BTreeMap<String, Live>,
}

/// The live tasks of one user id: never empty.
#[derive(Debug)]
enum Live {
    One(TaskId),
    Many(BTreeSet<TaskId>),
}

impl Live {
    /// By internal id.
    fn iter(&self) -> impl Iterator<Item = &TaskId> {
        let (one, many) = match self {
            Live::One(task_id) => (Some(task_id), None),
            Live::Many(set) => (None, Some(set)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl Instances {
    pub fn add(&mut self, user_id: &str, task_id: TaskId) {
        match self.by_user.entry(user_id.to_string()) {
            Entry::Vacant(entry) => {
                entry.insert(Live::One(task_id));
            }
            Entry::Occupied(mut entry) => match entry.get_mut() {
                Live::One(one) if *one == task_id => {}
                Live::One(one) => {
                    let set = BTreeSet::from([one.clone(), task_id]);
                    entry.insert(Live::Many(set));
                }
                Live::Many(set) => {
                    set.insert(task_id);
                }
            },
        }
    }

    pub fn remove(&mut self, user_id: &str, task_id: &TaskId) {
        let Some(live) = self.by_user.get_mut(user_id) else {
            return;
        };
        // A set always holds two or more: at one it becomes `Live::One`.
        let gone = match live {
            Live::One(one) => one == task_id,
            Live::Many(set) => {
                set.remove(task_id);
                if let (1, Some(last)) = (set.len(), set.first()) {
                    *live = Live::One(last.clone());
                }
                false
            }
        };
        if gone {
            self.by_user.remove(user_id);
        }
    }

    pub fn clear(&mut self) {
        self.by_user.clear();
    }

    /// The live instances of `user_id`, by internal id.
    pub fn of<'a>(&'a self, user_id: &str) -> impl Iterator<Item = &'a TaskId> + 'a {
        self.by_user.get(user_id).into_iter().flat_map(Live::iter)
    }

    pub fn has(&self, user_id: &str) -> bool {
        self.by_user.contains_key(user_id)
    }

    /// The live instances of every user id that starts with `prefix`, by
    /// user id, then internal id.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a TaskId> + 'a {
        self.by_user
            .range(prefix.to_string()..)
            .take_while(move |(user_id, _)| user_id.starts_with(prefix))
            .flat_map(|(_, live)| live.iter())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_user.values().map(|live| live.iter().count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `adds` as `user:internal` pairs; then what `of(user)` and
    /// `with_prefix(prefix)` list, as internal ids joined by commas.
    fn check(adds: &[&str], removes: &[&str], of: (&str, &str), prefix: (&str, &str)) {
        let pair = |text: &&str| {
            let (user, id) = text.split_once(':').expect("user:id");
            (user.to_string(), TaskId(id.into()))
        };
        let mut instances = Instances::default();
        for (user, id) in adds.iter().map(pair) {
            instances.add(&user, id);
        }
        for (user, id) in removes.iter().map(pair) {
            instances.remove(&user, &id);
        }
        let join = |ids: Vec<&TaskId>| ids.iter().map(|id| &*id.0).collect::<Vec<_>>().join(",");
        assert_eq!(join(instances.of(of.0).collect()), of.1, "of {}", of.0);
        assert_eq!(instances.has(of.0), !of.1.is_empty(), "has {}", of.0);
        let listed = join(instances.with_prefix(prefix.0).collect());
        assert_eq!(listed, prefix.1, "prefix {}", prefix.0);
    }

    #[test]
    fn instances_by_user_id_and_prefix() {
        let adds = [
            "web:web-2",
            "web:web-1",
            "web 2:web2-1",
            "webby:webby-1",
            "w:w-1",
        ];
        check(
            &adds,
            &[],
            ("web", "web-1,web-2"),
            ("web", "web-1,web-2,web2-1,webby-1"),
        );
        check(&adds, &["web:web-1"], ("web", "web-2"), ("web ", "web2-1"));
        check(
            &adds,
            &["web:web-1", "web:web-2"],
            ("web", ""),
            ("we", "web2-1,webby-1"),
        );
        // A user id that is a prefix of another never takes the other's ids.
        check(&adds, &[], ("w", "w-1"), ("x", ""));
        check(&[], &["web:web-1"], ("web", ""), ("", ""));
        // Added twice is there once; three go down to one and to none.
        check(&["a:a-1", "a:a-1"], &["a:a-1"], ("a", ""), ("a", ""));
        let three = ["a:a-1", "a:a-2", "a:a-3"];
        check(&three, &["a:a-2", "a:a-1"], ("a", "a-3"), ("a", "a-3"));
        check(&three, &["a:a-2", "a:a-1", "a:a-3"], ("a", ""), ("", ""));
        check(&three, &["a:a-9", "b:a-1"], ("a", "a-1,a-2,a-3"), ("b", ""));
    }
}
