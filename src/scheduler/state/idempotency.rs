//! The `Idempotency-Key` table: which keys `POST /client/task` has seen in
//! the last `IDEMPOTENCY_WINDOW`, what request each came with and what it
//! answered, so that a retry gets the first answer and creates nothing.
//!
//! Each key is a durable record (`idempotency/<key>`, see `persist`) written
//! in the same turn, hence the same fsync, as the task it created: a client
//! that got no answer (a 504, a lost connection, a crash) can retry and will
//! never start the task twice. Expiry is monotonic within a process; the
//! wall-clock stamp of the first use only ages a key across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::scheduler::model::TaskSpec;
use crate::scheduler::Now;

/// A key answers retries for this long after its first use.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Keys kept at most; past it the key closest to expiry goes first (logged),
/// so more than this many keyed submits in a window shorten the window.
pub const MAX_IDEMPOTENCY_KEYS: usize = 65_536;

/// What the first request with a key was and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Used {
    /// `fingerprint` of the first request's task.
    pub fingerprint: String,
    /// The user id its 202 named ("Run task: <id>").
    pub id: String,
    /// Unix seconds of the first use: persisted, read only after a restore.
    pub at: u64,
    /// When the key expires in this process; `None` from a restore until the
    /// first event derives it.
    pub expires_at: Option<Instant>,
}

/// What a keyed submit is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// A key not in use: the submit goes ahead.
    New,
    /// A retry of the request the key was first used with: this user id.
    Retry(String),
    /// The key was first used with a different request.
    Conflict,
}

/// Every key in use.
#[derive(Clone, Debug, Default)]
pub(super) struct Keys {
    used: BTreeMap<String, Used>,
    /// (expiry, key) of every key with a derived expiry, soonest first.
    by_expiry: BTreeSet<(Instant, String)>,
}

impl Keys {
    pub fn seen(&self, key: &str, fingerprint: &str, now: Instant) -> Seen {
        match self.used.get(key) {
            // Expired but not swept yet (sweeps run on ticks).
            Some(used) if used.expires_at.is_some_and(|at| at <= now) => Seen::New,
            Some(used) if used.fingerprint == fingerprint => Seen::Retry(used.id.clone()),
            Some(_) => Seen::Conflict,
            None => Seen::New,
        }
    }

    /// Records the first use of `key` at `now`; returns the keys dropped to
    /// make room (their records must be deleted too).
    pub fn insert(
        &mut self,
        key: String,
        fingerprint: String,
        id: String,
        now: Now,
    ) -> Vec<String> {
        let mut dropped = Vec::new();
        self.remove(&key);
        while self.used.len() >= MAX_IDEMPOTENCY_KEYS {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            log::warn!(
                "idempotency keys at their limit of {MAX_IDEMPOTENCY_KEYS}: the oldest is forgotten before its window ends"
            );
            self.used.remove(&oldest);
            dropped.push(oldest);
        }
        let expires_at = now.instant + IDEMPOTENCY_WINDOW;
        self.by_expiry.insert((expires_at, key.clone()));
        self.used.insert(
            key,
            Used {
                fingerprint,
                id,
                at: unix_seconds(now),
                expires_at: Some(expires_at),
            },
        );
        dropped
    }

    /// Removes every key whose window has passed; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((at, key)) = self.by_expiry.first().cloned() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.used.remove(&key);
            expired.push(key);
        }
        expired
    }

    /// A key read back from disk; its expiry is derived at the first event.
    pub fn restore(&mut self, key: String, fingerprint: String, id: String, at: u64) {
        self.used.insert(
            key,
            Used {
                fingerprint,
                id,
                at,
                expires_at: None,
            },
        );
    }

    /// After a restore: each key keeps what is left of its window by its
    /// wall-clock stamp (the only clock that spans a restart), from `now` on
    /// the monotonic clock. A stamp in the future (the clock was stepped
    /// back) counts as brand new: a key is rather kept too long than dropped
    /// early.
    pub fn derive_expiry(&mut self, now: Now) {
        for (key, used) in &mut self.used {
            if used.expires_at.is_some() {
                continue;
            }
            // A stamp past what SystemTime holds (a damaged state file)
            // counts as brand new too, rather than panicking every restart.
            let age = UNIX_EPOCH
                .checked_add(Duration::from_secs(used.at))
                .and_then(|stamp| now.wall.duration_since(stamp).ok())
                .unwrap_or(Duration::ZERO);
            let expires_at = now.instant + IDEMPOTENCY_WINDOW.saturating_sub(age);
            used.expires_at = Some(expires_at);
            self.by_expiry.insert((expires_at, key.clone()));
        }
    }

    pub fn get(&self, key: &str) -> Option<&Used> {
        self.used.get(key)
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.used.keys()
    }

    /// Forgets every key (`--reset`); returns them.
    pub fn clear(&mut self) -> Vec<String> {
        self.by_expiry.clear();
        std::mem::take(&mut self.used).into_keys().collect()
    }

    /// Forgets one key (a deleted record on restore, an expired or reset key).
    pub fn remove(&mut self, key: &str) {
        if let Some(Used {
            expires_at: Some(at),
            ..
        }) = self.used.remove(key)
        {
            self.by_expiry.remove(&(at, key.to_string()));
        }
    }
}

/// A stable digest of a submitted task (FNV-1a 64 over its persisted JSON
/// form), to tell a retry from a different request under the same key.
/// Stable across restarts, unlike std's hasher; not a defence against a
/// client that wants a collision, which could only hurt its own request.
pub(super) fn fingerprint(spec: &TaskSpec) -> String {
    let text = super::persist::fingerprint_text(spec);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn unix_seconds(now: Now) -> u64 {
    now.wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |it| it.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_the_key_closest_to_expiry_goes_first() {
        let start = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1000),
        };
        let mut keys = Keys::default();
        for n in 0..MAX_IDEMPOTENCY_KEYS {
            let now = Now {
                instant: start.instant + Duration::from_millis(n as u64),
                ..start
            };
            let dropped = keys.insert(format!("k{n}"), "f".into(), "web".into(), now);
            assert!(dropped.is_empty());
        }
        let later = Now {
            instant: start.instant + Duration::from_secs(3600),
            ..start
        };
        assert_eq!(
            keys.insert("new".into(), "f".into(), "web".into(), later),
            vec!["k0".to_string()]
        );
        assert_eq!(keys.seen("k0", "f", later.instant), Seen::New);
        assert_eq!(
            keys.seen("k1", "f", later.instant),
            Seen::Retry("web".into())
        );
        assert_eq!(keys.seen("k1", "g", later.instant), Seen::Conflict);
        assert_eq!(
            keys.seen("new", "f", later.instant),
            Seen::Retry("web".into())
        );
        assert_eq!(keys.used.len(), MAX_IDEMPOTENCY_KEYS);
    }

    /// See: review of issue 9. A restored stamp of 2^63 seconds or more
    /// (a damaged state file) panicked in `UNIX_EPOCH + Duration` at the
    /// first event after every restart: a crash loop.
    #[test]
    fn a_stamp_past_what_system_time_holds_counts_as_new() {
        let now = Now {
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1000),
        };
        let mut keys = Keys::default();
        keys.restore("k".into(), "f".into(), "web".into(), u64::MAX);
        keys.derive_expiry(now);
        assert_eq!(keys.seen("k", "f", now.instant), Seen::Retry("web".into()));
    }
}
