//! State on disk: a snapshot plus an append-only journal of keyed records,
//! and the `journal` thread that makes each state-loop turn durable before
//! its effects (Mesos calls, REST replies) leave the process.
//!
//! Each record is framed as `len: u32 LE | crc32: u32 LE | payload`, where the
//! checksum covers the length bytes and the payload, and the payload is JSON
//! `{"key": ..., "value": ...}`; a null value deletes the key. Loading replays the snapshot, then the journal; the last value of a
//! key wins. A torn last record (a crash in the middle of an append) is
//! dropped with a warning, with the rest of its commit (`MORE_IN_GROUP`); damage anywhere else stops startup with the file
//! and byte offset, and nothing is discarded silently. When the journal
//! outgrows the snapshot it is compacted beside the commits: the journal is
//! sealed (renamed `state.journal.sealed`) and a new one takes the commits,
//! while a `compactor` thread writes the records live at that moment, read
//! from the snapshot and the sealed journal (both immutable by then), to a new
//! snapshot (write, fsync, rename, fsync the directory) and deletes the sealed
//! journal. A start replays snapshot, sealed journal, journal: after any crash
//! that order gives the state of the last commit. A compaction that fails
//! removes its temporary file, and opening the directory removes any
//! temporary a crash left behind.
//!
//! A full disk must not stop the scheduler (each restart would fail the same
//! way) nor lose what it already accepted. std cannot ask for free space, so
//! the store keeps a reserve: `state.reserve`, `RESERVE_BYTES` of real data
//! (no holes). When an append fails for lack of space, the reserve is deleted
//! and the append is written again into the space it freed; the store is then
//! *full*: `DiskGate` tells the REST API to refuse new submits (507) while
//! work already accepted (launches, acks, kills, status changes) keeps being
//! made durable in the reserve's space. The journal thread tries to write the
//! reserve again with backoff; once it fits, submits are accepted again.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};

use crate::metrics::Metrics;
use crate::scheduler::state::Record;
use crate::scheduler::{Call, Committed, Turn};

/// The largest record accepted on load; anything claiming more is damage.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Turns committed with one fsync, at most.
pub const MAX_GROUP: usize = 1024;

/// The journal is compacted once it is larger than this and than twice the snapshot.
pub const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A clean stop folds a journal of at least this many bytes into the
/// snapshot, so the next start reads one file in key order (`Restore`
/// builds the task table from it in one go) instead of replaying up to
/// twice the snapshot's bytes of journal over it: at 100k tasks the
/// journal is often 30-40 MB at a stop.
pub const STOP_COMPACT_BYTES: u64 = 1024 * 1024;

/// Exit code when the state directory fails (an I/O error other than a full
/// disk, or a full disk whose reserve is used up too): nothing that depended
/// on the lost write has left the process, and a restart resumes from the disk.
pub const EXIT_STATE_NOT_SAVED: u8 = 3;

/// Size of the reserve file: the room accepted work has once the disk is full.
/// A task record is about 1-2 KiB, so this holds thousands of status changes.
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// While the disk is full, writing the reserve again is tried after this
/// long, doubling up to `RESERVE_RETRY_MAX`.
pub const RESERVE_RETRY_MIN: Duration = Duration::from_millis(500);
pub const RESERVE_RETRY_MAX: Duration = Duration::from_secs(10);

/// The reserve is written in pieces of this size.
const RESERVE_CHUNK: usize = 64 * 1024;

/// The file a running scheduler holds an exclusive lock on, so two processes
/// never share a state directory (each would overwrite the other's journal
/// and fight over the framework).
pub const LOCK_FILE: &str = "lock";

const SNAPSHOT: &str = "state.snapshot";
const JOURNAL: &str = "state.journal";
/// The journal a compaction under way folds into the snapshot; commits go
/// to a new `JOURNAL` meanwhile. Replayed between the two.
const SEALED: &str = "state.journal.sealed";
const RESERVE: &str = "state.reserve";
/// Temporaries are `<name>.tmp` next to the file they replace (`state.snapshot.tmp`,
/// `state.reserve.tmp`); one left in the directory is the leftover of a crash.
const TMP_SUFFIX: &str = ".tmp";
const HEADER: usize = 8;

/// Set in a frame's length word when more frames of the same commit
/// follow. A commit (a group of turns, one fsync) is replayed whole or not
/// at all: a crash that tears its last frame must not leave half a turn,
/// such as an idempotency key without its task. `MAX_RECORD` is far below
/// this bit, and files written before it never set it (each frame is then
/// a group of its own, as before).
const MORE_IN_GROUP: u32 = 1 << 31;

/// Whether the state disk is full, shared by the store (which sets it) and
/// the REST workers (which refuse submits while it is set). Never full
/// without a store.
#[derive(Clone, Debug, Default)]
pub struct DiskGate(Arc<AtomicBool>);

impl DiskGate {
    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The reason a submit is refused now, if it is.
    pub fn refusal(&self) -> Option<String> {
        self.is_full().then(|| {
            format!(
                "state disk full: less than the {} MiB reserve is free in the state directory; submits refused until space is freed",
                RESERVE_BYTES / (1024 * 1024)
            )
        })
    }

    fn set(&self, full: bool) {
        self.0.store(full, Ordering::SeqCst);
    }
}

/// Disk-full mode: the reserve is gone; when to try writing it again.
#[derive(Debug)]
struct Full {
    retry_at: Instant,
    delay: Duration,
}

/// The open state directory.
pub struct Store {
    /// The thread compactions run on beside the commits, started with the
    /// first. Declared first, so it is dropped (its thread joined, after
    /// the compaction under way) before the lock below is released.
    compactor: Option<Compactor>,
    dir: PathBuf,
    /// Holds the directory's exclusive lock for as long as the store lives.
    _lock: File,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
    /// Compact once the journal is larger than this.
    compact_at: u64,
    /// Where the live value of every key is framed on disk, for compaction
    /// (which copies those frames into a new snapshot). Only the place is
    /// kept, not the bytes: the files hold them.
    live: BTreeMap<Box<str>, Location>,
    /// Test hook (`Config::journal_delay`, zero in production): each commit
    /// waits this long before its fsync, like a slow disk.
    commit_delay: std::time::Duration,
    reserve_bytes: u64,
    /// `state.reserve` exists (whole and synced).
    has_reserve: bool,
    /// Set while the disk is full (the reserve is gone).
    full: Option<Full>,
    gate: DiskGate,
    /// Why the journal can no longer be trusted (a compaction cut it and
    /// its fsync failed, or sealing it could not be made durable): every
    /// commit from then on is refused with it.
    broken: Option<String>,
    /// `SEALED` exists: a compaction is folding it, or one that failed left
    /// it (then the next compaction runs in place, `compact`).
    sealed: bool,
    /// A `Compaction` is under way (`begin_compaction` until
    /// `finish_compaction`): no other may start.
    compacting: bool,
    /// The compaction under way was handed to `compactor`: its answer is due.
    answer_due: bool,
    /// Where compactions are counted (`charmander_journal_compactions_total`).
    metrics: Option<Arc<Metrics>>,
    /// Compactions ended before `metrics` was set (the fold at open):
    /// counted once it is.
    uncounted: Vec<(bool, Duration)>,
    /// Test hook: the fsync after a compaction cuts the journal fails.
    #[cfg(test)]
    fail_sync_after_cut: bool,
    /// Test hook: deleting the sealed journal fails.
    #[cfg(test)]
    fail_remove_sealed: bool,
}

impl Store {
    /// Opens (creating if needed) `dir` and hands what it holds to `apply`,
    /// one record at a time in the order written (key, JSON text of the
    /// value or `None` for a deletion). Nothing is read whole: each record
    /// passes through one buffer of at most `MAX_RECORD` bytes. An error from
    /// `apply` stops the open, named by file and offset like damage. A full
    /// disk does not stop it: the store opens full (submits refused).
    pub fn open(dir: &Path, apply: &mut Apply<'_>) -> Result<Store, String> {
        Store::open_with_reserve(dir, RESERVE_BYTES, apply)
    }

    fn open_with_reserve(
        dir: &Path,
        reserve_bytes: u64,
        apply: &mut Apply<'_>,
    ) -> Result<Store, String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let lock = lock_dir(dir)?;
        let snapshot_path = dir.join(SNAPSHOT);
        let journal_path = dir.join(JOURNAL);
        // Before anything is written: on a nearly full disk their space counts.
        remove_stale_temporaries(dir)?;
        let mut live = BTreeMap::new();
        let mut count = 0usize;
        let mut replay_into = |path: &Path, source: Source| {
            replay(path, &mut |key, value, offset, len| {
                count += 1;
                let at = Location {
                    source,
                    offset,
                    len,
                };
                remember(&mut live, key, value.is_some(), at);
                apply(key, value)
            })
        };
        // The snapshot was renamed into place whole: any damage is damage.
        let snapshot_bytes = match replay_into(&snapshot_path, Source::Snapshot)? {
            Replayed::Whole(bytes) => bytes,
            Replayed::Torn { damage, .. } => {
                return Err(damaged(&snapshot_path, damage.offset, &damage.why))
            }
        };
        // Sealed only after its last commit was fsynced: any damage is damage.
        let sealed_path = dir.join(SEALED);
        let sealed = sealed_path.exists();
        if let Replayed::Torn { damage, .. } = replay_into(&sealed_path, Source::Sealed)? {
            return Err(damaged(&sealed_path, damage.offset, &damage.why));
        }
        let (end, torn_bytes) = match replay_into(&journal_path, Source::Journal)? {
            Replayed::Whole(bytes) => (bytes, 0),
            Replayed::Torn { damage, len } => (damage.offset as u64, len - damage.offset as u64),
        };
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| format!("cannot open {}: {e}", journal_path.display()))?;
        if torn_bytes > 0 {
            log::warn!(
                "state: dropping a torn last commit in {} at byte {end} ({torn_bytes} bytes); it was never acknowledged",
                journal_path.display(),
            );
            journal
                .set_len(end)
                .map_err(|e| format!("cannot truncate {}: {e}", journal_path.display()))?;
            journal
                .sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", journal_path.display()))?;
        }
        sync_dir(dir)?;
        // Written through a temporary and renamed, so one that exists is whole
        // (its size may differ if RESERVE_BYTES changed; it still frees that much).
        let reserve_ok = dir.join(RESERVE).exists();
        let mut store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            journal,
            journal_bytes: end,
            snapshot_bytes,
            compact_at: COMPACT_MIN_BYTES.max(2 * snapshot_bytes),
            live,
            commit_delay: std::time::Duration::ZERO,
            reserve_bytes,
            has_reserve: reserve_ok,
            full: None,
            gate: DiskGate::default(),
            broken: None,
            sealed,
            compacting: false,
            compactor: None,
            answer_due: false,
            metrics: None,
            uncounted: Vec::new(),
            #[cfg(test)]
            fail_sync_after_cut: false,
            #[cfg(test)]
            fail_remove_sealed: false,
        };
        if sealed {
            // A crash (or a failed compaction) left it: fold it now, so the
            // next compaction can seal the journal again.
            if let Err(error) = store.compact() {
                log::warn!(
                    "state: {} stays until a later compaction: {error}",
                    sealed_path.display()
                );
            }
        }
        if !reserve_ok {
            // First start, or released before a restart.
            if let Err(error) = store.write_reserve() {
                store.enter_full(&format!("cannot write the reserve: {error}"));
            }
        }
        log::info!(
            "state: loaded {count} records ({} live keys) from {}",
            store.live.len(),
            dir.display()
        );
        Ok(store)
    }

    /// Compactions from now on are counted in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        for (ok, took) in self.uncounted.drain(..) {
            metrics.count_compaction(ok, took);
        }
        self.metrics = Some(metrics);
    }

    fn count_compaction(&mut self, ok: bool, took: Duration) {
        match &self.metrics {
            Some(metrics) => metrics.count_compaction(ok, took),
            // The fold at open, normally; a store never given metrics
            // (tests, examples) keeps no more than the bound.
            None if self.uncounted.len() < MAX_UNCOUNTED_COMPACTIONS => {
                self.uncounted.push((ok, took));
            }
            None => {}
        }
    }

    /// Test hook: every commit from now on waits `delay` before its fsync.
    pub fn set_commit_delay(&mut self, delay: std::time::Duration) {
        self.commit_delay = delay;
    }

    /// Appends records and fsyncs: when this returns Ok they survive a crash.
    /// An `Err` means they may not be on disk; the caller must not let
    /// anything that depends on them out (see `run_journal`). A full disk is
    /// not an error while the reserve lasts: it is released and the store
    /// turns full (see the module doc). Once the journal is broken (see
    /// `compact`) every commit is an error.
    pub fn commit(&mut self, records: &[&Record]) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(format!("the state journal is unusable: {why}"));
        }
        let mut out = Vec::new();
        let mut ends = Vec::with_capacity(records.len());
        for (idx, record) in records.iter().enumerate() {
            let framed = frame_in_group(record, idx + 1 < records.len());
            if framed.len() - HEADER > MAX_RECORD {
                return Err(format!(
                    "record {} is {} bytes, over the limit of {MAX_RECORD}",
                    record.key,
                    framed.len()
                ));
            }
            out.extend_from_slice(&framed);
            ends.push(out.len());
        }
        if !self.commit_delay.is_zero() {
            std::thread::sleep(self.commit_delay);
        }
        let journal = self.dir.join(JOURNAL);
        let mut written = self.append(&out);
        if written.as_ref().is_err_and(is_disk_full) && self.answer_due {
            // The compaction beside the commits may hold the space with its
            // temporary snapshot: once it is done (a failure removes the
            // temporary, a success the old files) the space is what it
            // would have been with the two taking turns. Only then is the
            // reserve touched.
            self.wait_compaction();
            if let Some(why) = &self.broken {
                return Err(format!("the state journal is unusable: {why}"));
            }
            written = self.append(&out);
        }
        if let Err(error) = written {
            if !is_disk_full(&error) {
                return Err(format!("cannot write {}: {error}", journal.display()));
            }
            if !self.release_reserve()? {
                return Err(format!(
                    "cannot write {}: {error}; the state disk is full and the reserve is used up: free space in {}",
                    journal.display(),
                    self.dir.display()
                ));
            }
            self.append(&out).map_err(|error| {
                format!(
                    "cannot write {} even into the released reserve: {error}",
                    journal.display()
                )
            })?;
        }
        let mut start = 0;
        for (record, end) in records.iter().zip(ends) {
            let at = Location {
                source: Source::Journal,
                offset: self.journal_bytes + start as u64,
                len: (end - start) as u32,
            };
            remember(&mut self.live, &record.key, record.value.is_some(), at);
            start = end;
        }
        self.journal_bytes += out.len() as u64;
        Ok(())
    }

    /// The journal has outgrown its bound (`compact_at`): time to compact.
    pub fn wants_compaction(&self) -> bool {
        self.journal_bytes > self.compact_at && self.broken.is_none()
    }

    /// Starts a compaction once the journal wants one (none under way):
    /// seals the journal and returns the work for the `compactor` thread,
    /// or `None` when nothing is to run beside the commits. A sealed
    /// journal that a failed compaction left cannot be sealed over, so then
    /// the compaction runs here, in place (`compact`). The records are
    /// durable either way; a failure waits for the journal to grow again
    /// before the next try (or, when it broke the journal, the next commit
    /// stops the journal thread).
    pub fn begin_compaction(&mut self) -> Option<Compaction> {
        if !self.wants_compaction() || self.compacting {
            return None;
        }
        if self.sealed {
            if let Err(error) = self.compact() {
                self.compaction_failed(&error);
            }
            return None;
        }
        let started = Instant::now();
        match self.seal() {
            Ok(compaction) => Some(compaction),
            Err(error) => {
                self.count_compaction(false, started.elapsed());
                self.compaction_failed(&error);
                None
            }
        }
    }

    /// What the journal thread does once a group is out: starts a
    /// compaction beside the commits if the journal wants one, on the
    /// `compactor` thread (or in place if that cannot start). With one
    /// still running it waits for that one first: the journal stays
    /// bounded by `compact_at` plus a group, and so does the sealed one.
    pub fn compact_beside(&mut self) {
        if !self.wants_compaction() {
            return;
        }
        self.wait_compaction();
        let Some(job) = self.begin_compaction() else {
            return;
        };
        if self.compactor.is_none() {
            self.compactor = Compactor::spawn();
        }
        let job = match self.compactor.as_ref().and_then(|c| c.jobs.as_ref()) {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => {
                    self.answer_due = true;
                    return;
                }
                Err(unsent) => unsent.into_inner(),
            },
            None => job,
        };
        self.finish_compaction(job.run());
    }

    /// Where the answer of the compaction on the `compactor` thread
    /// arrives, while one is due; for the journal thread's `Select`.
    pub fn compaction_answer(&self) -> Option<Receiver<Compacted>> {
        let compactor = self.compactor.as_ref().filter(|_| self.answer_due)?;
        Some(compactor.done.clone())
    }

    /// Waits for the compaction on the `compactor` thread, if one is due,
    /// and takes its answer in.
    pub fn wait_compaction(&mut self) {
        if let Some(compactor) = self.compactor.as_ref().filter(|_| self.answer_due) {
            let answer = compactor.done.recv();
            self.take_compaction_answer(answer);
        }
    }

    /// Takes in the `compactor` thread's answer.
    pub fn take_compaction_answer(
        &mut self,
        answer: Result<Compacted, crossbeam_channel::RecvError>,
    ) {
        self.answer_due = false;
        match answer {
            Ok(done) => self.finish_compaction(done),
            // Which files it left is unknown: no commit may follow.
            Err(_) => self.compaction_lost(),
        }
    }

    /// The compactor thread ended without an answer: what it left of the
    /// files is unknown, so no commit may follow (a restart reads them).
    fn compaction_lost(&mut self) {
        self.compacting = false;
        self.count_compaction(false, Duration::ZERO);
        let error = "the compactor thread ended in the middle of a compaction";
        log::error!("state: {error}");
        self.broken = Some(error.to_string());
    }

    fn compaction_failed(&mut self, error: &str) {
        if self.broken.is_some() {
            log::error!("state: compaction failed, no commit can follow: {error}");
        } else {
            log::error!("state: compaction failed, the journal keeps growing: {error}");
            self.compact_at = self.journal_bytes + COMPACT_MIN_BYTES;
        }
    }

    /// Renames the journal to `SEALED` and opens a new one for the commits;
    /// returns what the compactor copies: every live frame, all in the
    /// snapshot or the sealed journal now.
    fn seal(&mut self) -> Result<Compaction, String> {
        let (journal, sealed) = (self.dir.join(JOURNAL), self.dir.join(SEALED));
        fs::rename(&journal, &sealed)
            .map_err(|e| format!("cannot seal {}: {e}", journal.display()))?;
        // Our handle follows the file: until the new journal is open it is
        // still where commits go, under either name.
        let opened = OpenOptions::new().create(true).append(true).open(&journal);
        let new_journal = match opened {
            Ok(file) => file,
            Err(e) => {
                let error = format!("cannot open a new {}: {e}", journal.display());
                if let Err(back) = fs::rename(&sealed, &journal) {
                    self.broken = Some(format!("{error}, and renaming it back failed: {back}"));
                }
                return Err(error);
            }
        };
        // A commit to the new journal is durable only once its name is.
        if let Err(error) = sync_dir(&self.dir) {
            self.broken = Some(format!("{error} (the journal had just been sealed)"));
            return Err(error);
        }
        self.journal = new_journal;
        self.journal_bytes = 0;
        self.sealed = true;
        self.compacting = true;
        let frames = self
            .live
            .values_mut()
            .map(|at| {
                if at.source == Source::Journal {
                    at.source = Source::Sealed;
                }
                *at
            })
            .collect();
        Ok(Compaction {
            dir: self.dir.clone(),
            frames,
            started: Instant::now(),
        })
    }

    /// Takes in what a `Compaction` did. Once its snapshot is in place,
    /// every record unchanged since the seal is read from there (a record
    /// written since is in the journal, one deleted since is not live).
    /// Those records are the compaction's frames that are still live, in
    /// the same key order, at the same old places: one walk finds each new
    /// place, without the keys.
    pub fn finish_compaction(&mut self, done: Compacted) {
        self.compacting = false;
        self.count_compaction(done.error.is_none(), done.took);
        if done.renamed {
            let mut moved = done.frames.iter();
            let mut offset = 0u64;
            let mut missed = 0usize;
            for at in self.live.values_mut() {
                if at.source == Source::Journal {
                    continue;
                }
                let mut found = false;
                for old in moved.by_ref() {
                    let new_at = Location {
                        source: Source::Snapshot,
                        offset,
                        len: old.len,
                    };
                    offset += u64::from(old.len);
                    if (old.source, old.offset) == (at.source, at.offset) {
                        *at = new_at;
                        found = true;
                        break;
                    }
                }
                if !found {
                    missed += 1;
                }
            }
            if missed > 0 {
                // Cannot happen (see above); if it did, those places point
                // into files that are gone, and the next compaction would
                // copy the wrong bytes: no commit may follow.
                self.broken = Some(format!(
                    "{missed} live records were not in the compaction that replaced their file"
                ));
                log::error!("state: {}", self.broken.as_deref().unwrap_or_default());
            }
            self.snapshot_bytes = done.bytes;
            self.compact_at = COMPACT_MIN_BYTES.max(2 * self.snapshot_bytes);
            self.sealed = !done.sealed_removed;
        }
        match done.error {
            None => log::info!(
                "state: compacted beside the commits: a {} byte snapshot of {} keys in {} ms",
                done.bytes,
                self.live.len(),
                done.took.as_millis()
            ),
            Some(error) if done.renamed => log::error!(
                "state: compacted, but {SEALED} stays until the next compaction: {error}"
            ),
            Some(error) => self.compaction_failed(&error),
        }
    }

    /// Writes `data` at the end of the journal and syncs it. On failure the
    /// journal is cut back to its last whole record, so writing again later
    /// is safe; if even that fails, the error is not "disk full" (the caller
    /// must stop: a later record after a torn one would be damage).
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let written = self
            .journal
            .write_all(data)
            .and_then(|()| self.journal.sync_data());
        if let Err(error) = written {
            // Leave no half record behind for a later append to bury.
            if let Err(cut) = self
                .journal
                .set_len(self.journal_bytes)
                .and_then(|()| self.journal.sync_all())
            {
                return Err(io::Error::other(format!(
                    "{error}, and cutting the half-written record away failed: {cut}"
                )));
            }
            return Err(error);
        }
        Ok(())
    }

    /// Deletes the reserve so accepted work has room; false if it is gone already.
    fn release_reserve(&mut self) -> Result<bool, String> {
        if !self.has_reserve {
            return Ok(false);
        }
        let path = self.dir.join(RESERVE);
        fs::remove_file(&path)
            .map_err(|e| format!("cannot delete the reserve {}: {e}", path.display()))?;
        self.has_reserve = false;
        sync_dir(&self.dir)?;
        self.enter_full(
            "an append found the disk full; the reserve was released for accepted work",
        );
        Ok(true)
    }

    fn enter_full(&mut self, why: &str) {
        log::error!(
            "state disk full: submits refused (507) until space is freed dir={} reserve_bytes={} reason={why}",
            self.dir.display(),
            self.reserve_bytes
        );
        self.full = Some(Full {
            retry_at: Instant::now() + RESERVE_RETRY_MIN,
            delay: RESERVE_RETRY_MIN,
        });
        self.gate.set(true);
    }

    /// The flag the REST API reads.
    pub fn gate(&self) -> DiskGate {
        self.gate.clone()
    }

    /// While full, when to try writing the reserve again.
    pub fn reserve_retry_at(&self) -> Option<Instant> {
        self.full.as_ref().map(|full| full.retry_at)
    }

    /// Tries to write the reserve again; on success the store is no longer
    /// full, otherwise the next try backs off.
    pub fn retry_reserve(&mut self, now: Instant) {
        if self.full.is_none() {
            return;
        }
        match self.write_reserve_file() {
            Ok(()) => {
                self.has_reserve = true;
                self.full = None;
                self.gate.set(false);
                log::info!(
                    "state disk has room again: reserve written, submits accepted dir={}",
                    self.dir.display()
                );
            }
            Err(error) => {
                if let Some(full) = self.full.as_mut() {
                    full.delay = (full.delay * 2).min(RESERVE_RETRY_MAX);
                    full.retry_at = now + full.delay;
                    log::debug!(
                        "state disk still full retry_in_ms={} error={error}",
                        full.delay.as_millis()
                    );
                }
            }
        }
    }

    fn write_reserve(&mut self) -> Result<(), String> {
        self.write_reserve_file()?;
        self.has_reserve = true;
        Ok(())
    }

    /// Writes `state.reserve` through a temporary (write, fsync, rename,
    /// fsync the directory), so a `state.reserve` is always whole. The bytes
    /// are real data, not a hole (`set_len`) nor zeros a compressing file
    /// system would not store, so deleting it frees its full size. A failed
    /// try removes its temporary.
    fn write_reserve_file(&self) -> Result<(), String> {
        let tmp = self.dir.join(format!("{RESERVE}{TMP_SUFFIX}"));
        let written = (|| -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            let mut chunk = vec![0u8; RESERVE_CHUNK];
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut left = self.reserve_bytes;
            while left > 0 {
                for word in chunk.chunks_mut(8) {
                    // xorshift64: incompressible, cheap.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
                }
                let n = left.min(RESERVE_CHUNK as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(RESERVE))
        })();
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {error}", tmp.display()));
        }
        sync_dir(&self.dir)
    }

    /// At a clean stop: compacts a journal of `STOP_COMPACT_BYTES` or
    /// more. Every record is durable already, so a failure only means the
    /// next start replays the journal.
    fn compact_at_stop(&mut self) {
        if self.journal_bytes < STOP_COMPACT_BYTES || self.broken.is_some() {
            return;
        }
        if let Err(error) = self.compact() {
            log::warn!(
                "state: no compaction at the stop, the next start replays the journal: {error}"
            );
        }
    }

    /// Compacts in place, with no commit beside it (at a start that found a
    /// sealed journal, at a clean stop, after a compaction beside the
    /// commits failed): writes every live record to a new snapshot, deletes
    /// the sealed journal and empties the journal. The live frames are
    /// copied from where they are (old snapshot, sealed journal, journal),
    /// checksums checked again, through one buffer. A failure before the
    /// new snapshot is in place removes the temporary snapshot (on a full
    /// disk it would hold the space the journal needs) and the old snapshot
    /// stands; one before the journal is cut leaves the journal as it was.
    /// Either way the store goes on as before. The sealed journal goes
    /// before the journal is cut: replayed over the new snapshot with the
    /// journal after it, it gives the same state, but without that journal
    /// its older values would win.
    ///
    /// The in-memory places (`live`, `journal_bytes`) follow each step as
    /// it happens to the files, durable or not: after the rename the
    /// snapshot *is* the new file, after the cut the journal *is* empty.
    /// If the journal's fsync after the cut fails, what the disk holds of
    /// it is unknown (a retried fsync may report success for data it
    /// dropped), so the store is marked broken: commits are refused, the
    /// journal thread stops (exit 3), and a restart reads the new snapshot
    /// with either journal, which give the same state.
    pub fn compact(&mut self) -> Result<(), String> {
        if self.compacting {
            // Both would write the one temporary snapshot.
            return Err("a compaction beside the commits is under way".to_string());
        }
        let started = Instant::now();
        let result = self.compact_in_place(started);
        self.count_compaction(result.is_ok(), started.elapsed());
        result
    }

    fn compact_in_place(&mut self, started: Instant) -> Result<(), String> {
        let bytes = write_snapshot(&self.dir, self.live.values().copied())?;
        // The frames now live in the new snapshot, in key order.
        let mut offset = 0;
        for at in self.live.values_mut() {
            *at = Location {
                source: Source::Snapshot,
                offset,
                len: at.len,
            };
            offset += u64::from(at.len);
        }
        self.snapshot_bytes = bytes;
        self.compact_at = COMPACT_MIN_BYTES.max(2 * self.snapshot_bytes);
        // Until the rename is durable a crash may bring back the old
        // snapshot, which needs the whole journal: keep it.
        sync_dir(&self.dir)?;
        if self.sealed {
            #[cfg(test)]
            if self.fail_remove_sealed {
                return Err("injected failure to delete the sealed journal".to_string());
            }
            remove_sealed(&self.dir)?;
            self.sealed = false;
        }
        // From here a crash replays the old journal over the new snapshot: same result.
        let io = |what: &str, e: io::Error| format!("cannot {what} compaction: {e}");
        self.journal
            .set_len(0)
            .map_err(|e| io("truncate the journal after", e))?;
        // The journal is empty now, synced or not: appends start at 0.
        let cut_bytes = std::mem::replace(&mut self.journal_bytes, 0);
        if let Err(e) = self.sync_cut_journal() {
            let error = io("sync the journal after", e);
            self.broken = Some(format!("{error} (a compaction had just emptied it)"));
            return Err(error);
        }
        log::info!(
            "state: compacted {cut_bytes} journal bytes into a {bytes} byte snapshot of {} keys in {} ms",
            self.live.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// The fsync of the journal once compaction has emptied it.
    fn sync_cut_journal(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_sync_after_cut {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.journal.sync_all()
    }
}

/// A compaction beside the commits (`Store::begin_compaction`): the places
/// of the frames live when the journal was sealed, in key order, all in
/// the snapshot or the sealed journal, which no commit touches. `run`
/// needs nothing else, so it runs on its own thread; 16 bytes a record.
pub struct Compaction {
    dir: PathBuf,
    frames: Vec<Location>,
    started: Instant,
}

/// What a `Compaction` did, for `Store::finish_compaction`.
pub struct Compacted {
    /// The compaction's frames, at their old places; in the new snapshot
    /// they follow each other in this order.
    frames: Vec<Location>,
    bytes: u64,
    /// The new snapshot is in place: the old one is gone.
    renamed: bool,
    /// The sealed journal is deleted, durably.
    sealed_removed: bool,
    error: Option<String>,
    took: Duration,
}

impl Compaction {
    /// Writes the new snapshot, renames it into place, makes that durable
    /// and deletes the sealed journal. A crash at any step leaves files
    /// whose replay (snapshot, sealed journal, journal) is the state of
    /// the last commit: before the rename the old snapshot and the sealed
    /// journal stand; after it, replaying the sealed journal over the new
    /// snapshot changes nothing the journal does not set again after it.
    pub fn run(self) -> Compacted {
        let Compaction {
            dir,
            frames,
            started,
        } = self;
        let (bytes, renamed, error) = match write_snapshot(&dir, frames.iter().copied()) {
            Err(error) => (0, false, Some(error)),
            Ok(bytes) => {
                // Until the rename is durable a crash may bring back the
                // old snapshot, which needs the sealed journal: keep it.
                let done = sync_dir(&dir).and_then(|()| remove_sealed(&dir));
                (bytes, true, done.err())
            }
        };
        Compacted {
            frames,
            bytes,
            renamed,
            sealed_removed: renamed && error.is_none(),
            error,
            took: started.elapsed(),
        }
    }
}

/// Deletes the sealed journal and makes that durable.
fn remove_sealed(dir: &Path) -> Result<(), String> {
    let sealed = dir.join(SEALED);
    match fs::remove_file(&sealed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot delete {}: {e}", sealed.display())),
    }
    sync_dir(dir)
}

/// Copies `frames` (key order, each where `Location` says) into a new
/// snapshot: written to a temporary, synced, renamed into place. Returns
/// its size. A failure removes the temporary; the old snapshot stands.
fn write_snapshot(dir: &Path, frames: impl Iterator<Item = Location>) -> Result<u64, String> {
    let tmp = dir.join(format!("{SNAPSHOT}{TMP_SUFFIX}"));
    let io = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", tmp.display());
    let written = copy_frames(dir, frames, &tmp)
        .map_err(|e| io("write", e))
        .and_then(|bytes| {
            fs::rename(&tmp, dir.join(SNAPSHOT))
                .map(|()| bytes)
                .map_err(|e| io("rename", e))
        });
    if written.is_err() {
        #[cfg(test)]
        tests::hold_the_failed_temporary();
        if let Err(e) = fs::remove_file(&tmp) {
            if e.kind() != io::ErrorKind::NotFound {
                log::error!("state: cannot remove {}: {e}", tmp.display());
            }
        }
    }
    written
}

/// Copies every frame into `tmp` and syncs it; returns its size.
fn copy_frames(dir: &Path, frames: impl Iterator<Item = Location>, tmp: &Path) -> io::Result<u64> {
    // Each file is opened once, when a frame is first read from it.
    let mut files: [Option<File>; 3] = [None, None, None];
    let mut out = io::BufWriter::with_capacity(READ_BUFFER, File::create(tmp)?);
    let mut frame = Vec::new();
    let mut bytes = 0u64;
    for at in frames {
        let slot = &mut files[at.source as usize];
        let mut file = match slot {
            Some(file) => &*file,
            None => &*slot.insert(File::open(dir.join(at.source.file_name()))?),
        };
        frame.resize(at.len as usize, 0);
        file.seek(io::SeekFrom::Start(at.offset))?;
        file.read_exact(&mut frame)?;
        let (Some(head), Some(payload)) = (frame.first_chunk::<HEADER>(), frame.get(HEADER..))
        else {
            return Err(io::Error::other(format!(
                "the live record at byte {} of {} is shorter than its header",
                at.offset,
                at.source.file_name()
            )));
        };
        let length = [head[0], head[1], head[2], head[3]];
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if checksum(&length, payload) != crc {
            return Err(io::Error::other(format!(
                "the live record at byte {} of {} no longer matches its checksum",
                at.offset,
                at.source.file_name()
            )));
        }
        // A snapshot holds single records, not commits: no group marks.
        let raw = u32::from_le_bytes(length);
        if raw & MORE_IN_GROUP != 0 {
            let length = (raw & !MORE_IN_GROUP).to_le_bytes();
            let crc = checksum(&length, payload);
            frame[..4].copy_from_slice(&length);
            frame[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        }
        out.write_all(&frame)?;
        bytes += u64::from(at.len);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(bytes)
}

/// A write that failed for lack of space (or quota), which the reserve can absorb.
fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Removes the `state.*.tmp` files a crash (or an older version's failed
/// compaction) left behind; none of them is ever read.
fn remove_stale_temporaries(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir)
        .map_err(|e| format!("cannot list state directory {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("state.") && name.ends_with(TMP_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        let bytes = entry.metadata().map_or(0, |m| m.len());
        fs::remove_file(&path)
            .map_err(|e| format!("cannot remove stale temporary {}: {e}", path.display()))?;
        log::warn!(
            "state: removed a stale temporary file={} bytes={bytes}",
            path.display()
        );
    }
    Ok(())
}

fn damaged(path: &Path, offset: usize, why: &str) -> String {
    format!(
        "state file {} is damaged at byte offset {offset}: {why}; refusing to start rather than lose state (move the file away to start without it)",
        path.display()
    )
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))
}

/// A `Compaction` holds one per live record.
const _: () = assert!(std::mem::size_of::<Location>() == 16);

/// Which file a frame is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Snapshot = 0,
    Sealed = 1,
    Journal = 2,
}

impl Source {
    fn file_name(self) -> &'static str {
        match self {
            Source::Snapshot => SNAPSHOT,
            Source::Sealed => SEALED,
            Source::Journal => JOURNAL,
        }
    }
}

/// Where a framed record is: which file, at which offset, how long
/// (header included; at most `HEADER + MAX_RECORD`).
#[derive(Clone, Copy, Debug)]
struct Location {
    source: Source,
    offset: u64,
    len: u32,
}

fn remember(live: &mut BTreeMap<Box<str>, Location>, key: &str, set: bool, at: Location) {
    if set {
        live.insert(key.into(), at);
    } else {
        live.remove(key);
    }
}

/// One framed record. The payload is `{"key":..,"value":..}`, the value
/// being the record's JSON text as it is (persist wrote it with serde).
pub fn frame(record: &Record) -> Vec<u8> {
    frame_in_group(record, false)
}

/// `frame`, marked `MORE_IN_GROUP` when more frames of its commit follow.
fn frame_in_group(record: &Record, more: bool) -> Vec<u8> {
    let key = serde_json::to_string(&record.key).unwrap_or_else(|_| "\"\"".to_string());
    let value = record.value.as_deref().unwrap_or("null");
    let payload = format!("{{\"key\":{key},\"value\":{value}}}").into_bytes();
    let flag = if more { MORE_IN_GROUP } else { 0 };
    let length = (payload.len() as u32 | flag).to_le_bytes();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&length);
    out.extend_from_slice(&checksum(&length, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The frame checksum: over the length bytes and the payload, so a run of
/// zeros (a file extended but never written) is no valid empty record.
/// Computed over the borrowed bytes, one after the other (no copy).
fn checksum(length: &[u8; 4], payload: &[u8]) -> u32 {
    !crc32_update(crc32_update(!0, length), payload)
}

/// Where and why decoding stopped. `torn`: the bad record is the last one
/// and was cut short or fails its checksum, as an interrupted append leaves it.
#[derive(Debug)]
pub struct Damage {
    pub offset: usize,
    pub why: String,
    pub torn: bool,
}

/// What `Store::open` hands each record to: its key and the JSON text of
/// its value (`None`: the key was deleted).
pub type Apply<'a> = dyn FnMut(&str, Option<&str>) -> Result<(), String> + 'a;

/// What `replay` hands each record to: key, value text, the frame's offset
/// and length.
type Load<'a> = dyn FnMut(&str, Option<&str>, u64, u32) -> Result<(), String> + 'a;

/// How a replay of one file ended.
enum Replayed {
    /// Every record read and applied; the file's length.
    Whole(u64),
    /// Stopped at a bad record (`damage.torn`: only a torn tail); `len`
    /// is the file's length.
    Torn { damage: Damage, len: u64 },
}

/// The envelope of every record; `value` is left as text for `Apply`.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<&'a serde_json::value::RawValue>,
}

/// Reads `path` record by record, handing each to `load` (key, value text,
/// whole frame). A missing file is empty. Damage that is not a torn tail,
/// and an error from `load`, are errors naming the file and offset; a torn
/// tail is returned for the caller to judge.
fn replay(path: &Path, load: &mut Load<'_>) -> Result<Replayed, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::Whole(0)),
        Err(e) => return Err(format!("cannot open state file {}: {e}", path.display())),
    };
    let cannot_read = |e: io::Error| format!("cannot read state file {}: {e}", path.display());
    let len = file.metadata().map_err(cannot_read)?.len();
    let mut reader = RecordReader {
        file: io::BufReader::with_capacity(READ_BUFFER, file),
        len,
        offset: 0,
        frame: Vec::new(),
        more: false,
    };
    // The frames of a commit read so far (key, value, offset, length),
    // applied once its last frame is read; a torn commit is dropped whole.
    let mut group: Vec<(String, Option<String>, u64, u32)> = Vec::new();
    let mut group_start = 0u64;
    loop {
        let offset = reader.offset;
        let torn_group = |why: String| Damage {
            offset: group_start as usize,
            why,
            torn: true,
        };
        match reader.next().map_err(cannot_read)? {
            Next::End if group.is_empty() => return Ok(Replayed::Whole(len)),
            Next::End => {
                let why = format!("a commit of {} records cut short", group.len() + 1);
                return Ok(Replayed::Torn {
                    damage: torn_group(why),
                    len,
                });
            }
            Next::Damage(damage) if damage.torn && !group.is_empty() => {
                return Ok(Replayed::Torn {
                    damage: torn_group(damage.why),
                    len,
                })
            }
            Next::Damage(damage) if damage.torn => return Ok(Replayed::Torn { damage, len }),
            Next::Damage(damage) => return Err(damaged(path, damage.offset, &damage.why)),
            Next::Frame => {}
        }
        let framed = &reader.frame;
        let envelope: Envelope = match serde_json::from_slice(&framed[HEADER..]) {
            Ok(envelope) => envelope,
            Err(e) => {
                let why = if e.to_string().starts_with("missing field `key`") {
                    "record has no key".to_string()
                } else {
                    format!("record is not JSON: {e}")
                };
                return Err(damaged(path, offset as usize, &why));
            }
        };
        let value = envelope.value.map(|raw| raw.get()).filter(|v| *v != "null");
        if group.is_empty() && !reader.more {
            // A commit of one record: nothing to hold.
            load(&envelope.key, value, offset, framed.len() as u32).map_err(|why| {
                damaged(
                    path,
                    offset as usize,
                    &format!("state record {:?}: {why}", envelope.key),
                )
            })?;
            continue;
        }
        if group.is_empty() {
            group_start = offset;
        }
        group.push((
            envelope.key.into_owned(),
            value.map(str::to_string),
            offset,
            framed.len() as u32,
        ));
        if reader.more {
            continue;
        }
        for (key, value, offset, len) in group.drain(..) {
            load(&key, value.as_deref(), offset, len).map_err(|why| {
                damaged(
                    path,
                    offset as usize,
                    &format!("state record {key:?}: {why}"),
                )
            })?;
        }
    }
}

/// The read buffer of a replay: records are read through it, so memory
/// stays this plus the largest record, whatever the file's size.
const READ_BUFFER: usize = 256 * 1024;

/// What `RecordReader::next` found.
enum Next {
    End,
    /// A whole record with a good checksum is in `RecordReader::frame`.
    Frame,
    Damage(Damage),
}

/// Reads framed records from a file, one at a time, into one buffer.
struct RecordReader {
    file: io::BufReader<File>,
    /// The file's length when opened.
    len: u64,
    /// Where the next record starts.
    offset: u64,
    /// The last record read, header included.
    frame: Vec<u8>,
    /// The last record read is marked `MORE_IN_GROUP`.
    more: bool,
}

impl RecordReader {
    fn next(&mut self) -> io::Result<Next> {
        let rest = self.len - self.offset;
        if rest == 0 {
            return Ok(Next::End);
        }
        let offset = self.offset as usize;
        if rest < HEADER as u64 {
            let why = format!("record header cut short ({rest} of {HEADER} bytes)");
            return Ok(self.damage(offset, why, true));
        }
        self.frame.clear();
        self.frame.resize(HEADER, 0);
        self.file.read_exact(&mut self.frame)?;
        let length = [self.frame[0], self.frame[1], self.frame[2], self.frame[3]];
        let raw = u32::from_le_bytes(length);
        self.more = raw & MORE_IN_GROUP != 0;
        let len = (raw & !MORE_IN_GROUP) as usize;
        let crc = u32::from_le_bytes([self.frame[4], self.frame[5], self.frame[6], self.frame[7]]);
        if len > MAX_RECORD {
            let why = format!("record length {len} is over the limit of {MAX_RECORD}");
            return Ok(self.damage(offset, why, false));
        }
        let whole = (HEADER + len) as u64;
        if rest < whole {
            let why = format!("record cut short ({} of {len} bytes)", rest - HEADER as u64);
            return Ok(self.damage(offset, why, true));
        }
        self.frame.resize(HEADER + len, 0);
        self.file.read_exact(&mut self.frame[HEADER..])?;
        if checksum(&length, &self.frame[HEADER..]) != crc {
            let why = "checksum mismatch".to_string();
            return Ok(self.damage(offset, why, rest == whole));
        }
        self.offset += whole;
        Ok(Next::Frame)
    }

    /// Damage at `offset`; torn also when the file is zeros from there on
    /// (it grew, but its data never reached the disk).
    fn damage(&mut self, offset: usize, why: String, torn: bool) -> Next {
        let torn = torn || self.zeros_from(offset as u64).unwrap_or(false);
        Next::Damage(Damage { offset, why, torn })
    }

    fn zeros_from(&mut self, offset: u64) -> io::Result<bool> {
        self.file.seek(io::SeekFrom::Start(offset))?;
        let mut chunk = vec![0u8; READ_BUFFER];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }
}

/// CRC-32 (IEEE 802.3), tables built at compile time.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

/// The CRC-32 tables for slicing by 8: `CRC_TABLES[0]` is the byte-wise
/// table, `CRC_TABLES[k][n]` the register after `n` and `k` zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][n] = c;
        n += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut n = 0;
        while n < 256 {
            let previous = tables[k - 1][n];
            tables[k][n] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            n += 1;
        }
        k += 1;
    }
    tables
};

/// Feeds `data` to a running CRC-32 register (`crc`: `!0` to start; the
/// checksum is the complement of the last register), so one checksum can
/// cover several slices. Eight bytes a step (slicing by 8: a restore
/// checks every byte of the snapshot, 50 MB at 100,000 tasks), the rest a
/// byte at a time.
fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let low = crc ^ u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let high = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
        crc = t[7][(low & 0xff) as usize]
            ^ t[6][((low >> 8) & 0xff) as usize]
            ^ t[5][((low >> 16) & 0xff) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][(high & 0xff) as usize]
            ^ t[2][((high >> 8) & 0xff) as usize]
            ^ t[1][((high >> 16) & 0xff) as usize]
            ^ t[0][(high >> 24) as usize];
    }
    for &byte in words.remainder() {
        crc = t[0][((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Calls the journal holds when the caller's queue is full
/// (`mesos::caller::lanes::MAX_PENDING_CALLS` plus its channel). Up to this
/// many it goes on committing turns and answering their requests; past it
/// it takes no new turn until the caller takes calls again, and the state
/// thread's backlog (`scheduler::BACKLOG_LIMIT`) holds REST commands back.
pub const MAX_UNSENT_CALLS: usize = 16_384;

/// The `journal` thread: commits each group of turns with one fsync, then
/// lets their effects out: replies back to the state thread (which holds the
/// HTTP workers' reply channels), calls to the `mesos-caller`. Without a
/// store it only forwards. While the disk is full it also tries to write the
/// reserve again (`Store::retry_reserve`). Returns Ok when its inbox closes
/// (after the state thread ends; with the caller gone it still commits what
/// is waiting, dropping the calls), and the error when a
/// group cannot be made durable: then none of that group's effects has left,
/// and `Running::wait` hands the error to `main` (exit 3).
///
/// It never blocks on the caller: calls go out with `try_send`, and those
/// that do not fit wait in `unsent` (in order, at most `MAX_UNSENT_CALLS`)
/// while the journal goes on committing, so a master that refuses calls does
/// not hold up the REST API's replies. It waits on everything at once (one
/// `Select`): a turn in its inbox (not while `unsent` is full), room in the
/// caller's channel for the oldest unsent call, and the reserve's retry
/// deadline; it never polls.
pub fn run_journal(
    mut store: Option<Store>,
    inbox: Receiver<Turn>,
    calls: Sender<Call>,
    committed: Sender<Committed>,
    metrics: &Metrics,
) -> Result<(), String> {
    // Once the caller is gone (shutdown) its calls are dropped, but every
    // turn still waiting is committed: what was accepted is never lost.
    let mut caller_gone = false;
    let mut unsent: VecDeque<Call> = VecDeque::new();
    loop {
        hand_over(&mut unsent, &calls, &mut caller_gone);
        let retry_at = store.as_ref().and_then(Store::reserve_retry_at);
        if let (Some(store), Some(at)) = (store.as_mut(), retry_at) {
            let now = Instant::now();
            if at <= now {
                // Also here, not only on a quiet inbox: a busy journal never times out.
                store.retry_reserve(now);
                continue;
            }
        }
        // Whichever comes first: a turn (but with `unsent` full, only room
        // counts: no new turns), room for the oldest unsent call, or the
        // reserve's retry.
        let mut select = Select::new();
        let take = (unsent.len() < MAX_UNSENT_CALLS).then(|| select.recv(&inbox));
        let hand = (!unsent.is_empty()).then(|| select.send(&calls));
        // A handle of its own (an `Arc`), so `store` is free to take the answer in.
        let running = store.as_ref().and_then(Store::compaction_answer);
        let compacted = running.as_ref().map(|done| select.recv(done));
        let selected = match retry_at {
            Some(at) => match select.select_deadline(at) {
                Ok(selected) => selected,
                Err(_) => continue,
            },
            None => select.select(),
        };
        if let (Some(store), Some(done)) = (store.as_mut(), running.as_ref()) {
            if Some(selected.index()) == compacted {
                store.take_compaction_answer(selected.recv(done));
                continue;
            }
        }
        if Some(selected.index()) == hand {
            let call = unsent
                .pop_front()
                .expect("the send is registered only with a call waiting");
            if selected.send(&calls, call).is_err() {
                caller_gone = true;
                unsent.clear();
            }
            continue;
        }
        debug_assert_eq!(Some(selected.index()), take);
        let first = match selected.recv(&inbox) {
            Ok(turn) => turn,
            Err(_) => break,
        };
        let mut turns = vec![first];
        while turns.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(turn) => turns.push(turn),
                Err(_) => break,
            }
        }
        let records: Vec<&Record> = turns.iter().flat_map(|turn| &turn.records).collect();
        if let Some(store) = store.as_mut().filter(|_| !records.is_empty()) {
            let started = Instant::now();
            let result = store.commit(&records);
            metrics.commit.observe(started.elapsed());
            if let Err(error) = result {
                // Going on would send launches and 202s the disk does not
                // back. Stop before any of this group's effects leave; a
                // restart (systemd) resumes from the last durable state.
                log::error!("state not saved, stopping: {error}");
                return Err(error);
            }
        }
        // Replies first: a slow master must not hold up the REST API. Once
        // the state thread has stopped, nobody waits for them.
        let mut durable = Committed::default();
        for turn in &mut turns {
            durable.take_from(turn);
        }
        if !durable.is_empty() {
            let _ = committed.send(durable);
        }
        if !caller_gone {
            unsent.extend(turns.into_iter().flat_map(|turn| turn.calls));
        }
        // After the group's effects are out: sealing the journal (or
        // waiting for a compaction still running) holds up none of them.
        if let Some(store) = store.as_mut() {
            store.compact_beside();
        }
    }
    // The state thread has ended (shutdown): the caller takes what it can
    // still send and ends once only calls that must wait are left.
    for call in unsent {
        if caller_gone || calls.send(call).is_err() {
            break;
        }
    }
    if let Some(store) = store.as_mut() {
        store.wait_compaction();
        store.compact_at_stop();
    }
    Ok(())
}

/// Compactions a store keeps to count until it is given metrics.
const MAX_UNCOUNTED_COMPACTIONS: usize = 4;

/// Bound of the channels to and from the `compactor` thread: one
/// compaction runs at a time.
const COMPACTIONS_IN_FLIGHT: usize = 1;

/// The `compactor` thread of a store: runs each `Compaction` it is handed
/// and sends back what it did. Ends when the store drops it.
struct Compactor {
    jobs: Option<Sender<Compaction>>,
    done: Receiver<Compacted>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    /// None if the thread cannot start (then compactions run in place).
    fn spawn() -> Option<Compactor> {
        let (jobs, inbox) = crossbeam_channel::bounded::<Compaction>(COMPACTIONS_IN_FLIGHT);
        let (answers, done) = crossbeam_channel::bounded(COMPACTIONS_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                for job in inbox {
                    if answers.send(job.run()).is_err() {
                        break;
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Compactor {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
            }),
            Err(e) => {
                log::warn!(
                    "state: no compactor thread, this compaction runs in the journal thread: {e}"
                );
                None
            }
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Hands the caller as many of `unsent` as fit, in order, without waiting.
fn hand_over(unsent: &mut VecDeque<Call>, calls: &Sender<Call>, caller_gone: &mut bool) {
    while let Some(call) = unsent.pop_front() {
        match calls.try_send(call) {
            Ok(()) => {}
            Err(TrySendError::Full(call)) => {
                unsent.push_front(call);
                return;
            }
            Err(TrySendError::Disconnected(_)) => {
                *caller_gone = true;
                unsent.clear();
                return;
            }
        }
    }
}

/// Takes the exclusive lock on `dir`; released when the returned file closes
/// (also when the process dies, so a crash leaves no stale lock).
fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "state directory {} is in use by another charmander-scheduler (it holds the lock on {}); two schedulers on one --state-dir would corrupt it",
            dir.display(),
            path.display()
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{ApiReply, RequestId};
    use serde_json::{json, Value};

    /// The journal thread on `store`, with these channels.
    fn spawn_journal(
        store: Store,
        turns: Receiver<Turn>,
        calls: Sender<Call>,
        committed: Sender<Committed>,
    ) -> std::thread::JoinHandle<Result<(), String>> {
        std::thread::spawn(move || {
            run_journal(Some(store), turns, calls, committed, &Metrics::default())
        })
    }

    fn record(key: &str, value: Option<Value>) -> Record {
        Record {
            key: key.to_string(),
            value: value.map(|value| value.to_string()),
        }
    }

    /// Every test holds this: `mount`/`umount` children inherit the state
    /// directory's lock between fork and exec, and a reopen at that moment
    /// would find it held.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A store with a small reserve, so tests do not write 8 MiB each, and
    /// the records it held.
    fn open(dir: &Path) -> Result<(Store, Vec<Record>), String> {
        open_with_reserve(dir, 4096)
    }

    fn open_with_reserve(dir: &Path, reserve: u64) -> Result<(Store, Vec<Record>), String> {
        let mut records = Vec::new();
        let store = Store::open_with_reserve(dir, reserve, &mut |key, value| {
            records.push(Record {
                key: key.to_string(),
                value: value.map(str::to_string),
            });
            Ok(())
        })?;
        Ok((store, records))
    }

    /// Test hook (`hold_the_failed_temporary`): a failed snapshot write
    /// keeps its temporary file (and the space it holds) for `HOLD`.
    static HOLD_FAILED_TEMPORARY: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    /// Set while the hook holds it.
    static HOLDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    const HOLD: Duration = Duration::from_millis(300);

    pub(super) fn hold_the_failed_temporary() {
        if HOLD_FAILED_TEMPORARY.load(Ordering::SeqCst) {
            HOLDING.store(true, Ordering::SeqCst);
            let _ = crossbeam_channel::after(HOLD).recv();
            HOLDING.store(false, Ordering::SeqCst);
        }
    }

    /// Polls `done` until it holds; false if `DEADLINE` passes first.
    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        const DEADLINE: Duration = Duration::from_secs(10);
        let until = Instant::now() + DEADLINE;
        while !done() {
            if Instant::now() > until {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// What the journal thread does with one group, the compaction run on
    /// this thread: commit, then compact if the journal wants it.
    fn commit_as_the_journal_does(store: &mut Store, records: &[&Record]) {
        store.commit(records).expect("commits");
        if let Some(compaction) = store.begin_compaction() {
            store.finish_compaction(compaction.run());
        }
    }

    /// A non-empty directory where the snapshot goes: a compaction's
    /// rename fails, after its temporary was written in full.
    fn block_snapshot_rename(dir: &Path) {
        fs::create_dir_all(dir.join(SNAPSHOT).join("in-the-way")).expect("dir");
    }

    fn unblock_snapshot_rename(dir: &Path) {
        fs::remove_dir_all(dir.join(SNAPSHOT)).expect("cleared");
    }

    /// The state records give: the last value of each key, deletions gone.
    fn fold<'a>(records: impl IntoIterator<Item = &'a Record>) -> BTreeMap<String, String> {
        let mut state = BTreeMap::new();
        for record in records {
            match &record.value {
                Some(value) => state.insert(record.key.clone(), value.clone()),
                None => state.remove(&record.key),
            };
        }
        state
    }

    /// The state files of `dir` (not its lock), by name.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .expect("lists")
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("state."))
            .map(|name| {
                let bytes = fs::read(dir.join(&name)).expect("reads");
                (name, bytes)
            })
            .collect()
    }

    /// A new directory holding exactly `files`: what a crash left.
    fn crashed(name: &str, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
        let dir = temp_dir(name);
        fs::create_dir_all(&dir).expect("dir");
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).expect("writes");
        }
        dir
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("charmander-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        let _serial = serial();
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// Eight bytes a step give what one byte a step gives (the plain
    /// bitwise definition), whatever the length and where a slice starts.
    #[test]
    fn crc32_by_eight_bytes_is_crc32_by_bits() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &byte in data {
                crc ^= u32::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        0xEDB8_8320 ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..300u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for len in 0..(data.len() - start) {
                let slice = &data[start..start + len];
                assert_eq!(crc32(slice), bitwise(slice), "start {start} length {len}");
            }
        }
        // Fed in two parts, as a frame's length and payload are.
        let (head, tail) = data.split_at(5);
        assert_eq!(!crc32_update(crc32_update(!0, head), tail), bitwise(&data));
    }

    /// A frame's checksum, taken over its two parts in turn, is the CRC-32
    /// of the length bytes followed by the payload.
    #[test]
    fn the_frame_checksum_is_the_crc_of_length_and_payload() {
        #[track_caller]
        fn check(length: [u8; 4], payload: &[u8]) {
            let whole: Vec<u8> = length.iter().chain(payload).copied().collect();
            assert_eq!(checksum(&length, payload), crc32(&whole), "{payload:?}");
        }
        let _serial = serial();
        check([0; 4], b"");
        check([9, 0, 0, 0], b"123456789");
        check([2, 0, 0, 0x80], b"{}");
        check([28, 0, 0, 0], br#"{"key":"task/a","value":null}"#);
        // The checked value of one frame, so the framing on disk stays.
        assert_eq!(checksum(b"1234", b"56789"), 0xCBF4_3926);
    }

    /// See: issue 8, finding 2. Two processes on one state dir each append
    /// to the journal and fight over the framework.
    #[test]
    fn a_second_open_of_one_state_dir_is_refused_until_the_first_closes() {
        let _serial = serial();
        let dir = temp_dir("locked");
        let (first, _) = open(&dir).expect("opens");
        let error = open(&dir).err().unwrap_or_default();
        assert!(
            error.contains(&format!("state directory {} is in use", dir.display())),
            "{error}"
        );
        drop(first);
        assert!(open(&dir).is_ok(), "the lock outlived its store");
        let _ = fs::remove_dir_all(&dir);
    }

    /// See: review of issue 9. With the caller gone (it stops first on
    /// shutdown) the journal returned at the first call it could not hand
    /// over, and every turn still waiting was never written.
    #[test]
    fn turns_waiting_when_the_caller_is_gone_are_still_committed() {
        let _serial = serial();
        let dir = temp_dir("caller-gone");
        let (store, _) = open(&dir).expect("opens");
        let (turn_tx, turn_rx) = crossbeam_channel::unbounded();
        let (call_tx, call_rx) = crossbeam_channel::unbounded::<Call>();
        let (committed_tx, committed_rx) = crossbeam_channel::unbounded();
        drop(call_rx);
        let journal = spawn_journal(store, turn_rx, call_tx, committed_tx);
        // One group each: the second turn is sent once the first is through.
        for key in ["task/a", "task/b"] {
            let turn = Turn {
                records: vec![record(key, Some(json!({"n": 1})))],
                calls: vec![Call::Revive],
                replies: vec![(RequestId(1), ApiReply::IntelligenceChanged)],
                notices: Vec::new(),
            };
            turn_tx.send(turn).expect("queued");
            if key == "task/a" {
                committed_rx.recv().expect("the first turn is committed");
            }
        }
        drop(turn_tx);
        let ended = journal.join().expect("the journal thread ends");
        ended.expect("runs to the end");
        let (_, records) = open(&dir).expect("reopens");
        let keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
        assert_eq!(keys, ["task/a", "task/b"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A clean stop folds a long journal into the snapshot and leaves a
    /// short one; either way a reopen reads every record.
    #[test]
    fn a_clean_stop_folds_a_long_journal_into_the_snapshot() {
        let _serial = serial();
        let value = "x".repeat(32 * 1024);
        // One record, and enough to pass STOP_COMPACT_BYTES.
        let long = (STOP_COMPACT_BYTES as usize).div_ceil(value.len()) + 1;
        for (count, folded) in [(1, false), (long, true)] {
            let dir = temp_dir(&format!("stop-compact-{count}"));
            let (store, _) = open(&dir).expect("opens");
            let (turn_tx, turn_rx) = crossbeam_channel::unbounded();
            let (call_tx, _call_rx) = crossbeam_channel::unbounded::<Call>();
            let (committed_tx, _committed_rx) = crossbeam_channel::unbounded();
            let journal = spawn_journal(store, turn_rx, call_tx, committed_tx);
            let records = (0..count)
                .map(|n| record(&format!("task/{n:04}"), Some(json!(value))))
                .collect();
            let turn = Turn {
                records,
                calls: Vec::new(),
                replies: Vec::new(),
                notices: Vec::new(),
            };
            turn_tx.send(turn).expect("queued");
            drop(turn_tx);
            journal.join().expect("ends").expect("runs to the end");
            let journal_len = fs::metadata(dir.join(JOURNAL)).expect("journal").len();
            assert_eq!(
                journal_len == 0,
                folded,
                "{count} records: {journal_len} bytes"
            );
            let (_, read) = open(&dir).expect("reopens");
            assert_eq!(read.len(), count);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// See: issue 10. Behind a master that refuses calls the caller's
    /// channel filled, the journal blocked handing it the next call, and no
    /// turn after that was committed or answered.
    #[test]
    fn a_full_caller_holds_up_no_commit_and_no_reply() {
        let _serial = serial();
        let dir = temp_dir("caller-full");
        let (store, _) = open(&dir).expect("opens");
        let (turn_tx, turn_rx) = crossbeam_channel::unbounded();
        // Room for one call, and nobody takes it.
        let (call_tx, call_rx) = crossbeam_channel::bounded::<Call>(1);
        let (committed_tx, committed_rx) = crossbeam_channel::unbounded();
        let journal = spawn_journal(store, turn_rx, call_tx, committed_tx);
        for n in 0..10 {
            let turn = Turn {
                records: vec![record(&format!("task/{n}"), Some(json!({"n": n})))],
                calls: vec![Call::Revive, Call::Suppress],
                replies: vec![(RequestId(n), ApiReply::IntelligenceChanged)],
                notices: Vec::new(),
            };
            turn_tx.send(turn).expect("queued");
            let committed = committed_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("committed and answered though the caller takes nothing");
            assert_eq!(committed.replies[0].0, RequestId(n));
        }
        // Nothing accepted is lost: the caller gets every call, in order,
        // once it takes them.
        drop(turn_tx);
        let mut received = Vec::new();
        while let Ok(call) = call_rx.recv_timeout(Duration::from_secs(10)) {
            received.push(call);
        }
        journal
            .join()
            .expect("the journal thread ends")
            .expect("runs to the end");
        let expected: Vec<Call> = (0..10)
            .flat_map(|_| [Call::Revive, Call::Suppress])
            .collect();
        assert_eq!(received, expected);
        let _ = fs::remove_dir_all(&dir);
    }

    /// With `MAX_UNSENT_CALLS` calls held the journal takes no new turn and
    /// waits for room in the caller's channel only; as the caller takes
    /// calls every one goes out, in order, and the next turn is committed.
    #[test]
    fn a_journal_full_both_ways_waits_for_room_then_takes_turns_again() {
        let _serial = serial();
        let dir = temp_dir("full-both-ways");
        let (store, _) = open(&dir).expect("opens");
        let (turn_tx, turn_rx) = crossbeam_channel::unbounded();
        let (call_tx, call_rx) = crossbeam_channel::bounded::<Call>(1);
        let (committed_tx, committed_rx) = crossbeam_channel::unbounded();
        let journal = spawn_journal(store, turn_rx, call_tx, committed_tx);
        let turn = |key: &str, calls: Vec<Call>, request: u64| Turn {
            records: vec![record(key, Some(json!({"n": request})))],
            calls,
            replies: vec![(RequestId(request), ApiReply::IntelligenceChanged)],
            notices: Vec::new(),
        };
        // One more than the channel and `unsent` hold together.
        let many: Vec<Call> = (0..=MAX_UNSENT_CALLS + 1)
            .map(|n| {
                if n % 2 == 0 {
                    Call::Revive
                } else {
                    Call::Suppress
                }
            })
            .collect();
        turn_tx
            .send(turn("task/a", many.clone(), 1))
            .expect("queued");
        let first = committed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the first turn is committed");
        assert_eq!(first.replies[0].0, RequestId(1));
        turn_tx
            .send(turn("task/b", vec![Call::Reconcile(Vec::new())], 2))
            .expect("queued");
        let mut received = Vec::new();
        while received.len() < many.len() + 1 {
            let call = call_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("every call goes out once the caller takes them");
            received.push(call);
        }
        let second = committed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the held turn is committed once there is room");
        assert_eq!(second.replies[0].0, RequestId(2));
        let mut expected = many;
        expected.push(Call::Reconcile(Vec::new()));
        assert!(received == expected, "calls out of order or lost");
        drop(turn_tx);
        journal
            .join()
            .expect("the journal thread ends")
            .expect("runs to the end");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_round_trip_and_the_last_value_wins() {
        let _serial = serial();
        let dir = temp_dir("round-trip");
        let (mut store, records) = open(&dir).expect("opens");
        assert!(records.is_empty());
        let a1 = record("task/a", Some(json!({"n": 1})));
        let b = record("task/b", Some(json!({"n": 2})));
        let a2 = record("task/a", None);
        store.commit(&[&a1, &b]).expect("commits");
        store.commit(&[&a2]).expect("commits");
        drop(store);
        let (store, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a1, b.clone(), a2]);
        assert_eq!(
            store.live.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["task/b"]
        );
        let mut store = store;
        store.compact().expect("compacts");
        drop(store);
        let (_, records) = open(&dir).expect("reopens after compaction");
        assert_eq!(records, vec![b]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Compaction copies each live frame from where it is: some from the
    /// old snapshot, some from the journal, after a reopen too.
    #[test]
    fn compaction_copies_live_records_from_snapshot_and_journal() {
        let _serial = serial();
        let dir = temp_dir("copies");
        let (mut store, _) = open(&dir).expect("opens");
        let a1 = record("a", Some(json!({"n": 1})));
        let b = record("b", Some(json!({"n": 2})));
        let c = record("c", Some(json!({"n": 3})));
        let a2 = record("a", Some(json!({"n": 4})));
        store.commit(&[&a1, &b]).expect("commits");
        store.compact().expect("compacts");
        store.commit(&[&c, &a2]).expect("commits");
        store.compact().expect("compacts again");
        drop(store);
        let (mut store, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a2.clone(), b.clone(), c.clone()]);
        let d = record("d", Some(json!({"n": 5})));
        let gone = record("b", None);
        store
            .commit(&[&d, &gone])
            .expect("commits after the reopen");
        store.compact().expect("compacts after the reopen");
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a2, c, d]);
        assert_eq!(
            fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok(),
            Some(0)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// Under sustained load (the journal thread's inbox never empty, every
    /// group full) compaction still happens: it starts after any group that
    /// passes the bound, not at an idle moment, so the journal and the
    /// sealed journal stay within it, and every record keeps its last value.
    #[test]
    fn the_journal_thread_compacts_while_turns_keep_arriving() {
        let _serial = serial();
        let dir = temp_dir("sustained");
        let (store, _) = open(&dir).expect("opens");
        let (turn_tx, turn_rx) = crossbeam_channel::bounded(16);
        let (call_tx, _call_rx) = crossbeam_channel::unbounded::<Call>();
        let (committed_tx, _committed_rx) = crossbeam_channel::unbounded();
        let journal = spawn_journal(store, turn_rx, call_tx, committed_tx);
        let padding = "x".repeat(1000);
        let size = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        let (mut largest, mut largest_sealed) = (0, 0);
        // About 12 MB of turns over 100 keys, sent as fast as the journal takes them.
        for n in 0..12_000 {
            let key = format!("task/{}", n % 100);
            let turn = Turn {
                records: vec![record(&key, Some(json!({"n": n, "pad": padding})))],
                calls: Vec::new(),
                replies: Vec::new(),
                notices: Vec::new(),
            };
            turn_tx.send(turn).expect("queued");
            largest = largest.max(size(JOURNAL));
            largest_sealed = largest_sealed.max(size(SEALED));
        }
        drop(turn_tx);
        journal
            .join()
            .expect("the journal thread ends")
            .expect("runs to the end");
        largest = largest.max(size(JOURNAL));
        // Bounded by COMPACT_MIN_BYTES plus one group (at most 16 queued turns
        // and the one in hand, about 1 KB each).
        for (name, bytes) in [(JOURNAL, largest), (SEALED, largest_sealed)] {
            assert!(
                bytes <= COMPACT_MIN_BYTES + 32 * 1024,
                "{name} grew to {bytes}"
            );
        }
        let (store, records) = open(&dir).expect("reopens");
        assert_eq!(store.live.len(), 100);
        assert!(records.len() < 12_000, "compacted: {}", records.len());
        let last = fold(&records);
        for k in 0..100 {
            let n = 12_000 - 100 + k;
            let value: Value = serde_json::from_str(&last[&format!("task/{k}")]).expect("JSON");
            assert_eq!(value["n"], json!(n), "task/{k}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// See: review of issue 10. Replay applied each whole frame of a commit
    /// as it read it, so a crash that tore the last frame of a commit left
    /// the first ones: half a turn, e.g. an idempotency key without its
    /// task. A commit now replays whole or not at all, cut anywhere in its
    /// last frame or right after any frame but the last.
    #[test]
    fn a_torn_commit_is_dropped_whole() {
        let _serial = serial();
        let dir = temp_dir("torn-commit");
        let kept = record("task/a", Some(json!({"n": 1})));
        let group = [
            record("idempotency/k", Some(json!({"id": "b"}))),
            record("service/s", Some(json!({"covered": ["S1"]}))),
            record("task/b", Some(json!({"n": 2}))),
        ];
        let (mut store, _) = open(&dir).expect("opens");
        store.commit(&[&kept]).expect("commits");
        store
            .commit(&group.iter().collect::<Vec<_>>())
            .expect("commits");
        drop(store);
        let whole = fs::read(dir.join(JOURNAL)).expect("journal");
        let first = frame(&kept).len();
        let frames: Vec<usize> = group.iter().map(|r| frame(r).len()).collect();
        // Cut right after the group's first and second frames, and inside its last.
        let cuts = [
            first + frames[0],
            first + frames[0] + frames[1],
            whole.len() - 3,
        ];
        for cut in cuts {
            fs::write(dir.join(JOURNAL), &whole[..cut]).expect("write");
            let (store, records) = open(&dir).expect("reopens past a torn commit");
            let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
            assert_eq!(keys, ["task/a"], "cut at {cut}");
            assert_eq!(store.live.len(), 1, "cut at {cut}");
            drop(store);
            assert_eq!(
                fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok(),
                Some(first as u64),
                "cut back to the last whole commit (cut at {cut})"
            );
        }
        // Whole, the commit replays with the record before it, and a
        // compaction writes its records as single ones.
        fs::write(dir.join(JOURNAL), &whole).expect("write");
        let (mut store, records) = open(&dir).expect("reopens");
        assert_eq!(records.len(), 4);
        store.compact().expect("compacts");
        drop(store);
        let (_, records) = open(&dir).expect("reopens from the snapshot");
        assert_eq!(records.len(), 4);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_the_files_bounded_while_one_key_is_rewritten() {
        let _serial = serial();
        let dir = temp_dir("bounded");
        let (mut store, _) = open(&dir).expect("opens");
        let padding = "x".repeat(1000);
        for n in 0..10_000 {
            let update = record("task/busy", Some(json!({"n": n, "pad": padding})));
            commit_as_the_journal_does(&mut store, &[&update]);
        }
        let size = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        // About 10 MB were written; the files hold one record plus at most one journal's worth.
        assert!(
            size(JOURNAL) <= COMPACT_MIN_BYTES + 2048,
            "journal {}",
            size(JOURNAL)
        );
        assert!(size(SNAPSHOT) < 2048, "snapshot {}", size(SNAPSHOT));
        drop(store);
        let (store, records) = open(&dir).expect("reopens");
        assert_eq!(
            records
                .last()
                .and_then(|r| r.value.as_deref())
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
                .map(|v| v["n"].clone()),
            Some(json!(9999))
        );
        assert_eq!(store.live.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_crash_at_any_byte_of_an_append_loses_only_that_record() {
        let _serial = serial();
        let dir = temp_dir("torn");
        let kept = record("framework", Some(json!({"id": "f-0001"})));
        let torn = record("task/t", Some(json!({"spec": "x".repeat(100)})));
        let whole: Vec<u8> = [frame(&kept), frame(&torn)].concat();
        let first_len = frame(&kept).len();
        for cut in first_len..whole.len() {
            fs::create_dir_all(&dir).expect("dir");
            fs::write(dir.join(JOURNAL), &whole[..cut]).expect("write");
            let (_, records) = open(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(records, vec![kept.clone()], "cut at {cut}");
            assert_eq!(
                fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok(),
                Some(first_len as u64),
                "torn tail truncated"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tail_of_zeros_is_a_write_that_never_reached_the_disk() {
        let _serial = serial();
        let dir = temp_dir("zeros");
        fs::create_dir_all(&dir).expect("dir");
        let kept = record("framework", Some(json!({"id": "f-0001"})));
        let mut data = frame(&kept);
        data.extend(std::iter::repeat_n(0u8, 4096));
        fs::write(dir.join(JOURNAL), &data).expect("write");
        let (_, records) = open(&dir).expect("zeros are torn, not damage");
        assert_eq!(records, vec![kept]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damage_before_the_end_stops_startup_with_file_and_offset() {
        let _serial = serial();
        let check = |name: &str, damage: &dyn Fn(&mut Vec<u8>), file: &str, expected: &str| {
            let dir = temp_dir(name);
            fs::create_dir_all(&dir).expect("dir");
            let mut data = [
                frame(&record("a", Some(json!(1)))),
                frame(&record("b", Some(json!(2)))),
            ]
            .concat();
            damage(&mut data);
            fs::write(dir.join(file), &data).expect("write");
            let error = open(&dir).err().unwrap_or_default();
            assert!(
                error.contains(&dir.join(file).display().to_string()) && error.contains(expected),
                "{name}: {error}"
            );
            let _ = fs::remove_dir_all(&dir);
        };
        check(
            "flipped",
            &|data| data[10] ^= 1,
            JOURNAL,
            "byte offset 0: checksum mismatch",
        );
        check(
            "huge-length",
            &|data| data[3] = 0xff,
            JOURNAL,
            "byte offset 0: record length",
        );
        check(
            "snapshot-cut",
            &|data| data.truncate(data.len() - 1),
            SNAPSHOT,
            "is damaged at byte offset",
        );
        let second = frame(&record("a", Some(json!(1)))).len();
        check(
            "not-json",
            &|data| {
                let payload = b"{not json}";
                let length = (payload.len() as u32).to_le_bytes();
                let mut bad = Vec::new();
                bad.extend_from_slice(&length);
                bad.extend_from_slice(&checksum(&length, payload).to_le_bytes());
                bad.extend_from_slice(payload);
                data.splice(0..0, bad);
            },
            JOURNAL,
            "byte offset 0: record is not JSON",
        );
        let _ = second;
    }

    /// See: issue 10. Compaction ran inside `commit`, so at 100k tasks
    /// every commit waited 150-250 ms while it wrote the snapshot. It now
    /// runs beside the commits; records written, rewritten and deleted
    /// while it runs (before its snapshot is in place and after) must keep
    /// their newest value, also through the next compaction, which copies
    /// each live record from where the store says it is.
    #[test]
    fn a_compaction_beside_the_commits_keeps_every_later_change() {
        let _serial = serial();
        let dir = temp_dir("beside");
        let (mut store, _) = open(&dir).expect("opens");
        let mut model = Vec::new();
        let mut commit = |store: &mut Store, records: Vec<Record>| {
            store
                .commit(&records.iter().collect::<Vec<_>>())
                .expect("commits");
            model.extend(records);
        };
        let set = |key: &str, n: u32| record(key, Some(json!({"n": n})));
        commit(
            &mut store,
            (0..20).map(|n| set(&format!("task/{n:02}"), n)).collect(),
        );
        // Half of them in the snapshot, the rest in the journal when it is sealed.
        store.compact().expect("compacts");
        commit(
            &mut store,
            (10..30)
                .map(|n| set(&format!("task/{n:02}"), 100 + n))
                .collect(),
        );
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("starts beside the commits");
        assert!(store.begin_compaction().is_none(), "one at a time");
        assert!(store.compact().is_err(), "none in place meanwhile");
        // While it runs: rewritten, deleted, new; from the snapshot and the sealed journal.
        commit(
            &mut store,
            vec![
                set("task/03", 203),
                set("task/15", 215),
                record("task/04", None),
            ],
        );
        commit(
            &mut store,
            vec![record("task/25", None), set("task/40", 240)],
        );
        let done = compaction.run();
        // After its snapshot is in place, before the store takes it in.
        commit(
            &mut store,
            vec![
                set("task/05", 305),
                record("task/16", None),
                set("task/41", 341),
            ],
        );
        store.finish_compaction(done);
        assert!(!dir.join(SEALED).exists(), "the sealed journal is folded");
        commit(&mut store, vec![set("task/26", 426)]);
        // The next compaction copies every record from where the store says.
        store.compact_at = 0;
        let next = store.begin_compaction().expect("starts again");
        store.finish_compaction(next.run());
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(fold(&records), fold(&model));
        assert_eq!(records.len(), fold(&model).len(), "all from the snapshot");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A crash at any step of a compaction beside the commits, and while
    /// sealing the journal, restarts with every committed record: the
    /// files it may leave are replayed snapshot, sealed journal, journal,
    /// and a start folds a sealed journal it finds.
    #[test]
    fn a_crash_at_any_step_of_a_compaction_loses_no_commit() {
        let _serial = serial();
        let dir = temp_dir("crash-steps");
        let (mut store, _) = open(&dir).expect("opens");
        let set = |key: &str, n: u32| record(key, Some(json!({"n": n})));
        let mut model: Vec<Record> = (0..8).map(|n| set(&format!("task/{n}"), n)).collect();
        store
            .commit(&model.iter().collect::<Vec<_>>())
            .expect("commits");
        store.compact().expect("compacts");
        let journal: Vec<Record> =
            vec![set("task/1", 11), record("task/2", None), set("task/9", 9)];
        store
            .commit(&journal.iter().collect::<Vec<_>>())
            .expect("commits");
        model.extend(journal);
        let before_seal = files(&dir);
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("starts");
        let later: Vec<Record> = vec![set("task/9", 19), record("task/1", None), set("task/3", 13)];
        store
            .commit(&later.iter().collect::<Vec<_>>())
            .expect("commits");
        model.extend(later);
        let sealed = files(&dir);
        assert!(sealed.contains_key(SEALED), "{:?}", sealed.keys());
        let done = compaction.run();
        let after = files(&dir);
        store.finish_compaction(done);
        drop(store);

        let new_snapshot = &after[SNAPSHOT];
        let with = |mut files: BTreeMap<String, Vec<u8>>, name: &str, bytes: &[u8]| {
            files.insert(name.to_string(), bytes.to_vec());
            files
        };
        let mut renamed_only = before_seal.clone();
        renamed_only.remove(JOURNAL);
        renamed_only.insert(SEALED.to_string(), before_seal[JOURNAL].clone());
        let tmp = format!("{SNAPSHOT}{TMP_SUFFIX}");
        // (what the crash left, the records it holds)
        let cases = [
            ("sealed-no-journal", renamed_only, fold(&model[..11])),
            ("sealed", sealed.clone(), fold(&model)),
            (
                "tmp-written",
                with(sealed.clone(), &tmp, new_snapshot),
                fold(&model),
            ),
            (
                "renamed",
                with(sealed, SNAPSHOT, new_snapshot),
                fold(&model),
            ),
            ("done", after, fold(&model)),
        ];
        for (name, left, expected) in cases {
            let crashed = crashed(&format!("crash-{name}"), &left);
            let (store, records) = open(&crashed).expect("opens after the crash");
            assert_eq!(fold(&records), expected, "crash: {name}");
            assert!(!crashed.join(SEALED).exists(), "crash: {name}: not folded");
            drop(store);
            let (_, records) = open(&crashed).expect("opens again");
            assert_eq!(fold(&records), expected, "crash: {name}, reopened");
            let _ = fs::remove_dir_all(&crashed);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// A compaction beside the commits that fails before its snapshot is
    /// in place leaves the sealed journal; the next one, in place, folds
    /// it with the journal.
    #[test]
    fn a_failed_compaction_beside_the_commits_is_done_in_place_next_time() {
        let _serial = serial();
        let dir = temp_dir("beside-failed");
        let (mut store, _) = open(&dir).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        let b = record("task/b", Some(json!({"n": 2})));
        let a2 = record("task/a", Some(json!({"n": 3})));
        store.commit(&[&a, &b]).expect("commits");
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("starts");
        block_snapshot_rename(&dir);
        store.finish_compaction(compaction.run());
        assert!(dir.join(SEALED).exists(), "kept for the next compaction");
        store.commit(&[&a2]).expect("commits after the failure");
        unblock_snapshot_rename(&dir);
        store.compact_at = 0;
        assert!(store.begin_compaction().is_none(), "done in place");
        assert!(!dir.join(SEALED).exists(), "folded");
        assert_eq!(
            fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok(),
            Some(0)
        );
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a2, b]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The compaction in place deletes a sealed journal before it empties
    /// the journal: with the journal empty, the sealed journal's older
    /// values would win over the new snapshot at the next start. When the
    /// delete fails, the journal stays as it is.
    #[test]
    fn a_compaction_in_place_empties_the_journal_only_once_the_sealed_one_is_gone() {
        let _serial = serial();
        let dir = temp_dir("in-place-order");
        let (mut store, _) = open(&dir).expect("opens");
        let a1 = record("task/a", Some(json!({"n": 1})));
        let a2 = record("task/a", Some(json!({"n": 2})));
        store.commit(&[&a1]).expect("commits");
        // A compaction beside the commits that fails before its rename
        // leaves the sealed journal (holding a1).
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("starts");
        block_snapshot_rename(&dir);
        store.finish_compaction(compaction.run());
        unblock_snapshot_rename(&dir);
        store.commit(&[&a2]).expect("commits");
        let journal_len = || fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok();
        let before = journal_len();
        store.fail_remove_sealed = true;
        assert!(store.compact().is_err());
        assert!(dir.join(SEALED).exists());
        assert_eq!(journal_len(), before, "the journal was emptied");
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(fold(&records), fold([&a2]));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A live record the compaction's walk does not find (which the seal
    /// rules out) would keep a place in a file that is gone: the store
    /// refuses commits rather than copy wrong bytes at the next compaction.
    /// Such a record still in the old snapshot looks like one moved to
    /// the new one by its file alone.
    #[test]
    fn a_live_record_the_compaction_missed_breaks_the_store() {
        let _serial = serial();
        let dir = temp_dir("missed");
        let (mut store, _) = open(&dir).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        let z = record("task/z", Some(json!({"n": 2})));
        store.commit(&[&a, &z]).expect("commits");
        store.compact().expect("compacts");
        store.commit(&[&a]).expect("commits");
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("starts");
        let mut done = compaction.run();
        // task/z, last in key order, in the old snapshot.
        assert_eq!(
            done.frames.pop().map(|at| at.source),
            Some(Source::Snapshot)
        );
        store.finish_compaction(done);
        let refused = store.commit(&[&a]).err().unwrap_or_default();
        assert!(
            refused.contains("1 live records were not in the compaction"),
            "{refused}"
        );
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Every compaction is counted for `/metrics`, by result, with its
    /// time: beside the commits and in place, failed ones too.
    #[test]
    fn compactions_are_counted_by_result() {
        let _serial = serial();
        let dir = temp_dir("counted");
        let (mut store, _) = open(&dir).expect("opens");
        let metrics = Arc::new(Metrics::default());
        store.set_metrics(Arc::clone(&metrics));
        let a = record("task/a", Some(json!({"n": 1})));
        // The rename fails: a failure beside the commits, then one in place.
        block_snapshot_rename(&dir);
        store.commit(&[&a]).expect("commits");
        store.compact_at = 0;
        store.compact_beside();
        store.wait_compaction();
        assert!(store.compact().is_err());
        unblock_snapshot_rename(&dir);
        // The sealed journal left is folded in place, then one runs beside.
        for _ in 0..2 {
            store.commit(&[&a]).expect("commits");
            store.compact_at = 0;
            store.compact_beside();
            store.wait_compaction();
        }
        assert!(!dir.join(SEALED).exists());
        assert_rendered(
            &metrics,
            &[
                "charmander_journal_compactions_total{result=\"ok\"} 2",
                "charmander_journal_compactions_total{result=\"failed\"} 2",
                "charmander_journal_compaction_seconds_count 4",
            ],
        );
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Each of `lines` is a line of what `metrics` renders.
    #[track_caller]
    fn assert_rendered(metrics: &Metrics, lines: &[&str]) {
        let text = metrics.render(None, &crate::metrics::Process::default());
        for line in lines {
            assert!(text.lines().any(|it| it == *line), "{line} in\n{text}");
        }
    }

    /// The fold of a sealed journal found at open ends before the store has
    /// metrics; it is counted once they are set.
    #[test]
    fn the_fold_at_open_is_counted_once_metrics_are_set() {
        let _serial = serial();
        let dir = temp_dir("fold-counted");
        let (mut store, _) = open(&dir).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        store.commit(&[&a]).expect("commits");
        store.compact_at = 0;
        let compaction = store.begin_compaction().expect("seals");
        drop(compaction);
        drop(store);
        let (mut store, records) = open(&dir).expect("reopens, folding the sealed journal");
        assert_eq!(records, vec![a]);
        let metrics = Arc::new(Metrics::default());
        store.set_metrics(Arc::clone(&metrics));
        assert_rendered(
            &metrics,
            &["charmander_journal_compactions_total{result=\"ok\"} 1"],
        );
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A compaction still running when the journal outgrows its bound again
    /// is waited for, and the next one seals the journal at once: the
    /// journal stays bounded however slow the compactor is.
    #[test]
    fn a_compaction_still_running_is_waited_for_before_the_next() {
        let _serial = serial();
        let dir = temp_dir("next-waits");
        let (mut store, _) = open(&dir).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        store.commit(&[&a]).expect("commits");
        store.compact_at = 0;
        store.compact_beside();
        assert!(store.answer_due, "runs on the compactor thread");
        // Past the bound the compaction under way will set.
        let long = "x".repeat(COMPACT_MIN_BYTES as usize);
        let b = record("task/b", Some(json!(long)));
        store.commit(&[&b]).expect("commits beside it");
        store.compact_beside();
        assert_eq!(store.journal_bytes, 0, "sealed again");
        store.wait_compaction();
        assert!(!store.answer_due);
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a, b]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// See: issue 9, B7. A compaction that failed on a full disk left its
    /// `state.snapshot.tmp`, holding the space the journal needed.
    #[test]
    fn a_failed_compaction_removes_its_temporary_file() {
        let _serial = serial();
        let dir = temp_dir("failed-compaction");
        let (mut store, _) = open_with_reserve(&dir, 4096).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        store.commit(&[&a]).expect("commits");
        block_snapshot_rename(&dir);
        let error = store.compact().err().unwrap_or_default();
        assert!(error.contains("cannot rename"), "{error}");
        assert!(
            !dir.join(format!("{SNAPSHOT}{TMP_SUFFIX}")).exists(),
            "the temporary snapshot was left behind"
        );
        // The journal still takes records.
        store
            .commit(&[&a])
            .expect("commits after a failed compaction");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A compaction whose fsync fails once it has emptied the journal kept
    /// the journal's old length as the place of the next append, so every
    /// later frame's place (and the next compaction) was wrong. Now the
    /// places follow the file, and since what the disk holds of the journal
    /// is unknown no commit follows; a restart reads every record.
    #[test]
    fn a_failed_sync_after_compaction_cut_the_journal_stops_commits() {
        let _serial = serial();
        let dir = temp_dir("failed-cut-sync");
        let (mut store, _) = open(&dir).expect("opens");
        let a = record("task/a", Some(json!({"n": 1})));
        let b = record("task/b", Some(json!({"n": 2})));
        store.commit(&[&a, &b]).expect("commits");
        store.fail_sync_after_cut = true;
        let error = store.compact().err().unwrap_or_default();
        assert!(error.contains("cannot sync the journal after"), "{error}");
        assert_eq!(store.journal_bytes, 0, "the journal was emptied");
        let c = record("task/c", Some(json!({"n": 3})));
        let refused = store.commit(&[&c]).err().unwrap_or_default();
        assert!(
            refused.contains("the state journal is unusable"),
            "{refused}"
        );
        drop(store);
        let (_, records) = open(&dir).expect("reopens");
        assert_eq!(records, vec![a, b]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn opening_removes_stale_temporaries_and_nothing_else() {
        let _serial = serial();
        let dir = temp_dir("stale-tmp");
        fs::create_dir_all(&dir).expect("dir");
        let kept = record("framework", Some(json!({"id": "f-0001"})));
        fs::write(dir.join(SNAPSHOT), frame(&kept)).expect("write");
        for name in ["state.snapshot.tmp", "state.reserve.tmp"] {
            fs::write(dir.join(name), vec![7u8; 8192]).expect("write");
        }
        fs::write(dir.join("notes.tmp"), b"not ours").expect("write");
        let (_, records) = open_with_reserve(&dir, 4096).expect("opens");
        assert_eq!(records, vec![kept]);
        assert!(!dir.join("state.snapshot.tmp").exists());
        assert!(!dir.join("state.reserve.tmp").exists());
        assert!(dir.join("notes.tmp").exists(), "only state.*.tmp is ours");
        assert_eq!(
            fs::metadata(dir.join(RESERVE)).map(|m| m.len()).ok(),
            Some(4096),
            "the reserve is written at open"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A tmpfs of `size` mounted on a fresh directory, unmounted on drop;
    /// None (the caller skips, saying why) where mounting is not allowed.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(name: &str, size: &str) -> Option<Tmpfs> {
            let dir = temp_dir(name);
            fs::create_dir_all(&dir).ok()?;
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .status()
                .is_ok_and(|status| status.success());
            if !mounted {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} (needs root)",
                    dir.display()
                );
                let _ = fs::remove_dir_all(&dir);
                return None;
            }
            Some(Tmpfs(dir))
        }

        /// Writes junk into `name` until the file system is full.
        fn fill(&self, name: &str) {
            let mut file = File::create(self.0.join(name)).expect("junk file");
            let chunk = vec![0x5au8; 64 * 1024];
            while file.write_all(&chunk).is_ok() {}
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// See: issue 9, B7. A full disk used to stop the process (exit 3) on
    /// the next append, and every restart did the same.
    #[test]
    fn a_full_disk_uses_the_reserve_then_recovers_once_space_is_freed() {
        let _serial = serial();
        let Some(disk) = Tmpfs::mount("full", "1m") else {
            return;
        };
        let (mut store, _) = open_with_reserve(&disk.0, 128 * 1024).expect("opens");
        let gate = store.gate();
        let padding = "x".repeat(1000);
        let task = |n: usize| record(&format!("task/{n}"), Some(json!({"pad": padding})));
        store.commit(&[&task(0)]).expect("commits");
        assert!(!gate.is_full());

        disk.fill("junk");
        // Accepted work still becomes durable: the reserve makes room.
        for n in 1..20 {
            store.commit(&[&task(n)]).expect("commits into the reserve");
        }
        assert!(gate.is_full(), "submits are refused while the disk is full");
        assert!(gate
            .refusal()
            .unwrap_or_default()
            .starts_with("state disk full: "));
        assert!(!disk.0.join(RESERVE).exists());
        let now = Instant::now();
        store.retry_reserve(now);
        assert!(gate.is_full(), "the reserve cannot fit yet");
        assert!(!disk.0.join(format!("{RESERVE}{TMP_SUFFIX}")).exists());
        assert!(store.reserve_retry_at() > Some(now + RESERVE_RETRY_MIN));

        fs::remove_file(disk.0.join("junk")).expect("free space");
        store.retry_reserve(Instant::now());
        assert!(!gate.is_full(), "space is back");
        assert_eq!(store.reserve_retry_at(), None);
        assert!(disk.0.join(RESERVE).exists());
        drop(store);
        let (_, records) = open_with_reserve(&disk.0, 128 * 1024).expect("reopens");
        assert_eq!(records, (0..20).map(task).collect::<Vec<_>>());
    }

    /// See: review of issue 10. With compaction beside the commits, the
    /// compactor's temporary snapshot took the space the next append
    /// needed: the reserve was released and submits refused (or, with the
    /// reserve gone already, the commit failed: exit 3), where the two
    /// taking turns fit. An append that finds the disk full while a
    /// compaction runs now waits for it, and its failure frees the space.
    #[test]
    fn an_append_waits_for_a_compaction_holding_the_space_before_the_reserve() {
        let _serial = serial();
        let Some(disk) = Tmpfs::mount("beside-full", "4m") else {
            return;
        };
        let (mut store, _) = open_with_reserve(&disk.0, 256 * 1024).expect("opens");
        let gate = store.gate();
        let padding = "x".repeat(1000);
        let task = |n: usize| record(&format!("task/{n:04}"), Some(json!({"pad": padding})));
        // A snapshot of 1.5 MB: more than the room left below.
        let tasks: Vec<Record> = (0..1500).map(task).collect();
        store
            .commit(&tasks.iter().collect::<Vec<_>>())
            .expect("commits");
        store.compact().expect("compacts");
        disk.fill("junk");
        let junk = OpenOptions::new()
            .write(true)
            .open(disk.0.join("junk"))
            .expect("junk");
        let len = junk.metadata().expect("size").len();
        junk.set_len(len - 512 * 1024)
            .expect("room for the appends");
        store.commit(&[&task(3)]).expect("commits");
        HOLD_FAILED_TEMPORARY.store(true, Ordering::SeqCst);
        store.compact_at = 0;
        store.compact_beside();
        // The compactor filled the disk and holds its temporary.
        let held = wait_until(|| HOLDING.load(Ordering::SeqCst));
        let committed = store.commit(&[&task(7)]);
        HOLD_FAILED_TEMPORARY.store(false, Ordering::SeqCst);
        assert!(held, "the compaction never filled the disk");
        committed.expect("commits once the compaction is done");
        assert!(
            !gate.is_full(),
            "the reserve was used for room the compactor held"
        );
        assert!(disk.0.join(RESERVE).exists());
        drop(store);
        let (_, records) = open_with_reserve(&disk.0, 256 * 1024).expect("reopens");
        assert_eq!(fold(&records), fold(tasks.iter().chain([&task(7)])));
    }

    /// Past the reserve, a commit fails (the journal thread stops, exit 3)
    /// and leaves no half record: after freeing space, the store opens with
    /// everything committed before.
    #[test]
    fn a_full_disk_past_its_reserve_fails_the_commit_and_damages_nothing() {
        let _serial = serial();
        let Some(disk) = Tmpfs::mount("past-reserve", "1m") else {
            return;
        };
        let (mut store, _) = open_with_reserve(&disk.0, 64 * 1024).expect("opens");
        let padding = "x".repeat(1000);
        let task = |n: usize| record(&format!("task/{n}"), Some(json!({"pad": padding})));
        disk.fill("junk");
        let mut committed = Vec::new();
        let mut error = String::new();
        for n in 0..1000 {
            match store.commit(&[&task(n)]) {
                Ok(()) => committed.push(task(n)),
                Err(e) => {
                    error = e;
                    break;
                }
            }
        }
        assert!(error.contains("the reserve is used up"), "{error}");
        assert!(!committed.is_empty(), "the reserve held some records");
        drop(store);
        fs::remove_file(disk.0.join("junk")).expect("free space");
        let (_, records) = open_with_reserve(&disk.0, 64 * 1024).expect("reopens");
        assert_eq!(records, committed);
    }

    /// On a disk already full, startup opens (full, submits refused) instead of failing.
    #[test]
    fn a_store_opens_on_a_full_disk() {
        let _serial = serial();
        let Some(disk) = Tmpfs::mount("open-full", "1m") else {
            return;
        };
        fs::write(
            disk.0.join(format!("{SNAPSHOT}{TMP_SUFFIX}")),
            vec![1u8; 256 * 1024],
        )
        .expect("stale temporary");
        disk.fill("junk");
        let (mut store, _) = open_with_reserve(&disk.0, 512 * 1024).expect("opens");
        assert!(store.gate().is_full(), "no room for the reserve");
        assert!(!disk.0.join(format!("{RESERVE}{TMP_SUFFIX}")).exists());
        // The removed temporary left room for accepted work.
        let a = record("task/a", Some(json!({"n": 1})));
        store.commit(&[&a]).expect("commits");
    }
}
