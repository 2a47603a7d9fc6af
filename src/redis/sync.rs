//! The three-way merge between the scheduler's intelligence table and the
//! `charmander:task-intelligence:*` keys in Redis. Pure, so every case is a
//! unit test.
//!
//! The base is what the bridge saw in Redis on its previous cycle. A key
//! whose value differs from the base was written in Redis (by the analytics
//! or a human) and goes to the table; a key that vanished clears the entry. A
//! REST-sourced entry that Redis does not hold is written to Redis; a key
//! unchanged in Redis whose entry was deleted through REST is deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::dto::bad_id;
use crate::scheduler::intelligence::{Source, Table};

/// The key prefix the analytics write (contract §1.3).
pub const INTELLIGENCE_PREFIX: &str = "charmander:task-intelligence:";

/// A change for the table, from Redis. `raw` None or empty clears the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub task: String,
    pub attribute: String,
    pub raw: Option<String>,
}

/// What one cycle must do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub to_table: Vec<Change>,
    pub redis_set: Vec<(String, String)>,
    pub redis_del: Vec<String>,
    /// Keys that are not `<task>:<attribute>`; reported, never applied.
    pub malformed: Vec<String>,
}

/// Splits a Redis key into (task, attribute). The task name must be a
/// valid task id, exactly as a REST submit requires.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let suffix = key.strip_prefix(INTELLIGENCE_PREFIX)?;
    let (task, attribute) = suffix.split_once(':')?;
    if task.is_empty()
        || attribute.is_empty()
        || attribute.contains(':')
        || bad_id(task).is_some()
        || attribute.chars().any(char::is_control)
    {
        return None;
    }
    Some((task, attribute))
}

/// What one cycle read of the intelligence keys in Redis.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Keys read this cycle with a non-empty value.
    pub values: BTreeMap<String, String>,
    /// Every key read this cycle, with a value or found gone. A key that
    /// could not be read (too large, not a string, not UTF-8) is not here.
    pub read: BTreeSet<String>,
    /// When a SCAN pass ended this cycle: every key that pass saw.
    pub pass: Option<BTreeSet<String>>,
    /// The pass that ended this cycle also began in it, so `read` covers
    /// everything Redis holds.
    pub whole: bool,
}

/// What Redis holds as far as the bridge may conclude: the values read this
/// cycle, and for every other key of `base` its base value (not reached by
/// the scan yet, or unreadable: unchanged), unless a finished pass showed it
/// gone. A scan that did not finish never reads as a deletion.
pub fn redis_view(
    base: &BTreeMap<String, String>,
    observed: &Observed,
) -> BTreeMap<String, String> {
    let mut view = observed.values.clone();
    for (key, value) in base {
        if observed.read.contains(key) {
            continue;
        }
        let gone = observed
            .pass
            .as_ref()
            .is_some_and(|seen| !seen.contains(key));
        if !gone {
            view.insert(key.clone(), value.clone());
        }
    }
    view
}

/// Whether the bridge may write `key` (a REST entry) to Redis: only when it
/// knows what Redis holds there, so an unread newer value is never replaced.
pub fn may_write(key: &str, base: &BTreeMap<String, String>, observed: &Observed) -> bool {
    observed.whole || observed.read.contains(key) || base.contains_key(key)
}

pub fn key_for(task: &str, attribute: &str) -> String {
    format!("{INTELLIGENCE_PREFIX}{task}:{attribute}")
}

/// Plans one cycle. `rejected` holds keys whose current Redis value the
/// table refused (invalid); they are left alone in Redis.
pub fn plan(
    base: &BTreeMap<String, String>,
    redis_now: &BTreeMap<String, String>,
    table: &Table,
    rejected: &BTreeSet<String>,
) -> Plan {
    let mut plan = Plan::default();
    let mut changed_in_redis = BTreeSet::new();
    for (key, value) in redis_now {
        let Some((task, attribute)) = parse_key(key) else {
            plan.malformed.push(key.clone());
            continue;
        };
        if base.get(key) != Some(value) {
            changed_in_redis.insert(key.clone());
            plan.to_table.push(Change {
                task: task.to_string(),
                attribute: attribute.to_string(),
                raw: Some(value.clone()),
            });
        }
    }
    for key in base.keys().filter(|key| !redis_now.contains_key(*key)) {
        if let Some((task, attribute)) = parse_key(key) {
            changed_in_redis.insert(key.clone());
            plan.to_table.push(Change {
                task: task.to_string(),
                attribute: attribute.to_string(),
                raw: None,
            });
        }
    }
    let mut in_table = BTreeSet::new();
    for (task, entries) in table {
        for (attribute, entry) in entries {
            let key = key_for(task, attribute);
            if entry.source == Source::Rest
                && !changed_in_redis.contains(&key)
                && redis_now.get(&key) != Some(&entry.raw)
            {
                plan.redis_set.push((key.clone(), entry.raw.clone()));
            }
            in_table.insert(key);
        }
    }
    for key in redis_now.keys() {
        let unchanged = !changed_in_redis.contains(key);
        if unchanged
            && !in_table.contains(key)
            && !rejected.contains(key)
            && parse_key(key).is_some()
            && !redis_now[key].is_empty()
        {
            plan.redis_del.push(key.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::intelligence::{derive, Entry};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    key_for(
                        k.split('/').next().unwrap_or(""),
                        k.split('/').nth(1).unwrap_or(""),
                    ),
                    v.to_string(),
                )
            })
            .collect()
    }

    fn table(entries: &[(&str, &str, &str, Source)]) -> Table {
        let mut table = Table::new();
        for (task, attribute, raw, source) in entries {
            let entry = Entry {
                source: *source,
                raw: raw.to_string(),
                derived: derive(attribute, raw).expect("valid"),
                updated_at: 1,
            };
            table
                .entry(task.to_string())
                .or_default()
                .insert(attribute.to_string(), entry);
        }
        table
    }

    #[track_caller]
    fn check(base: &[(&str, &str)], redis: &[(&str, &str)], table: Table, expected: &str) {
        let plan = plan(&map(base), &map(redis), &table, &BTreeSet::new());
        let mut lines = Vec::new();
        for change in &plan.to_table {
            lines.push(format!(
                "table {}/{} = {:?}",
                change.task, change.attribute, change.raw
            ));
        }
        for (key, value) in &plan.redis_set {
            lines.push(format!("SET {key} {value}"));
        }
        for key in &plan.redis_del {
            lines.push(format!("DEL {key}"));
        }
        let expected: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn first_cycle_imports_everything() {
        check(
            &[],
            &[("sim/mem", "209924096"), ("sim/nodename", "slave2")],
            Table::new(),
            r#"
            table sim/mem = Some("209924096")
            table sim/nodename = Some("slave2")
        "#,
        );
    }

    #[test]
    fn redis_changes_and_deletions_reach_the_table() {
        let known = table(&[("sim", "mem", "100000000", Source::Redis)]);
        check(
            &[("sim/mem", "100000000")],
            &[("sim/mem", "200000000")],
            known.clone(),
            r#"table sim/mem = Some("200000000")"#,
        );
        check(
            &[("sim/mem", "100000000")],
            &[],
            known,
            "table sim/mem = None",
        );
    }

    #[test]
    fn rest_writes_and_deletes_reach_redis() {
        check(
            &[],
            &[],
            table(&[("sim", "mem", "300000000", Source::Rest)]),
            "SET charmander:task-intelligence:sim:mem 300000000",
        );
        // Deleted through REST: Redis still has the unchanged value.
        check(
            &[("sim/mem", "1")],
            &[("sim/mem", "1")],
            Table::new(),
            "DEL charmander:task-intelligence:sim:mem",
        );
        // In sync: nothing to do.
        check(
            &[("sim/mem", "300000000")],
            &[("sim/mem", "300000000")],
            table(&[("sim", "mem", "300000000", Source::Rest)]),
            "",
        );
    }

    #[test]
    fn a_redis_write_wins_over_an_older_rest_value_in_the_same_cycle() {
        check(
            &[("sim/mem", "1")],
            &[("sim/mem", "2000000")],
            table(&[("sim", "mem", "5000000", Source::Rest)]),
            r#"table sim/mem = Some("2000000")"#,
        );
    }

    #[test]
    fn malformed_keys_are_reported_not_applied() {
        let redis: BTreeMap<String, String> = [(
            "charmander:task-intelligence:foo".to_string(),
            "1".to_string(),
        )]
        .into_iter()
        .collect();
        let plan = plan(&BTreeMap::new(), &redis, &Table::new(), &BTreeSet::new());
        assert_eq!(plan.malformed, ["charmander:task-intelligence:foo"]);
        assert!(plan.to_table.is_empty() && plan.redis_del.is_empty());
        assert_eq!(parse_key("charmander:task-intelligence:a:b:c"), None);
        assert_eq!(
            parse_key("charmander:task-intelligence:lookbusy200:mem"),
            Some(("lookbusy200", "mem"))
        );
    }

    /// `redis_view` and `may_write` over keys named by a letter: `base` and
    /// `read` as `key=value` lists (`key=` read and found gone), `pass` the
    /// keys a finished SCAN pass saw (`None`: the pass goes on).
    #[track_caller]
    fn check_view(
        base: &[(&str, &str)],
        read: &[(&str, &str)],
        pass: Option<&[&str]>,
        whole: bool,
        expected_view: &[(&str, &str)],
        writable: &[&str],
    ) {
        let owned = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };
        let base = owned(base);
        let observed = Observed {
            values: owned(read)
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .collect(),
            read: read.iter().map(|(key, _)| key.to_string()).collect(),
            pass: pass.map(|keys| keys.iter().map(|key| key.to_string()).collect()),
            whole,
        };
        assert_eq!(redis_view(&base, &observed), owned(expected_view));
        let can_write: Vec<&str> = ["a", "b", "c", "d"]
            .into_iter()
            .filter(|key| may_write(key, &base, &observed))
            .collect();
        assert_eq!(can_write, writable);
    }

    // See: issue 9, B6. A SCAN cut short read as "every key not reached was
    // deleted" and cleared learned intelligence.
    #[test]
    fn a_scan_that_did_not_finish_clears_nothing() {
        // Mid-pass: only `a` was reached; `b` and `c` keep their values.
        check_view(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[("a", "9")],
            None,
            false,
            &[("a", "9"), ("b", "2"), ("c", "3")],
            &["a", "b", "c"],
        );
        // The pass ended: `c` was not seen in it, so it is gone; `b` was seen
        // in an earlier cycle of the pass and keeps its value.
        check_view(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[("a", "1")],
            Some(&["a", "b"]),
            false,
            &[("a", "1"), ("b", "2")],
            &["a", "b", "c"],
        );
        // A key read and found gone is gone, pass or not.
        check_view(&[("a", "1")], &[("a", "")], None, false, &[], &["a"]);
        // A whole pass in one cycle: what it did not read is not in Redis,
        // so a REST entry may be written anywhere.
        check_view(
            &[],
            &[("a", "1")],
            Some(&["a"]),
            true,
            &[("a", "1")],
            &["a", "b", "c", "d"],
        );
    }

    // See: issue 9, B9. A key that cannot be read (too large, not a string)
    // is not in `read`: it keeps its last value instead of failing the cycle.
    #[test]
    fn an_unreadable_key_keeps_its_last_value() {
        check_view(
            &[("a", "1"), ("b", "2")],
            &[("b", "5")],
            Some(&["a", "b"]),
            true,
            &[("a", "1"), ("b", "5")],
            &["a", "b", "c", "d"],
        );
    }

    #[test]
    fn task_names_from_redis_are_valid_task_ids() {
        for bad in [
            "charmander:task-intelligence:a/b:mem",
            "charmander:task-intelligence:a\\b:mem",
            "charmander:task-intelligence:..:mem",
            "charmander:task-intelligence:a\u{7}b:mem",
            "charmander:task-intelligence:ok:m\u{0}em",
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_key("charmander:task-intelligence:a b:mem"),
            Some(("a b", "mem"))
        );
    }
}
